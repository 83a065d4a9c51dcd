// libFuzzer target for the Ck codec (frame decoder and every message decoder).
#include <cstddef>
#include <cstdint>

#include "ck_fuzz_entry.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  qkdn::southbound::ck::fuzz::ck_fuzz_one(data, size);
  return 0;
}
