// libFuzzer target: see northbound_fuzz_entry.hpp.
#include <cstddef>
#include <cstdint>

#include "northbound_fuzz_entry.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  qkdn::fuzz::northbound_fuzz_one(data, size);
  return 0;
}
