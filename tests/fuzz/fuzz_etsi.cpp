// libFuzzer target: see etsi_fuzz_entry.hpp.
#include <cstddef>
#include <cstdint>

#include "etsi_fuzz_entry.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  qkdn::fuzz::etsi_fuzz_one(data, size);
  return 0;
}
