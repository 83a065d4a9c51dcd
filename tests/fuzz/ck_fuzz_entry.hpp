// The Ck codec fuzz entry, shared by the libFuzzer target fuzz_ck and the deterministic corpus
// test unit_codec_fuzz_corpus. Feeds the bytes to a FrameDecoder (chunked by the first byte) and
// to decode_payload under every command code, and checks the codec's invariants; a violation
// aborts, which both harnesses report.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <variant>

#include "qkdn/southbound/ck_frame.hpp"
#include "qkdn/southbound/ck_messages.hpp"

namespace qkdn::southbound::ck::fuzz {

/// Every code of the command table, then one unknown code.
inline constexpr std::uint16_t kUnknownCode = 0x1400;
static_assert(find_command(kUnknownCode) == nullptr);
inline constexpr auto kFuzzCodes = [] {
  std::array<std::uint16_t, std::size(kCommands) + 1> out{};
  for (std::size_t i = 0; i < std::size(kCommands); ++i) {
    out[i] = static_cast<std::uint16_t>(kCommands[i].code);
  }
  out.back() = kUnknownCode;
  return out;
}();

[[noreturn]] inline void violated(const char* what, std::uint16_t code, std::string_view payload) {
  std::fprintf(stderr, "ck fuzz invariant violated: %s (command 0x%04X, payload %zu bytes)\n", what,
               code, payload.size());
  std::abort();
}

/// Decodes one payload and checks: the result is a message of that command or a bad_request /
/// unknown_command; an accepted message re-encodes without throwing and decodes back equal.
/// Returns 1 when the payload was accepted.
inline std::size_t check_payload(std::uint16_t code, std::string_view payload) {
  const DecodeResult r = decode_payload(code, payload);
  if (const auto* e = std::get_if<DecodeError>(&r)) {
    const bool known = is_known_command(code);
    if (known && e->code != errc::kBadRequest)
      violated("rejection is not bad_request", code, payload);
    if (!known && e->code != errc::kUnknownCommand) violated("not unknown_command", code, payload);
    if (e->message.empty()) violated("empty rejection message", code, payload);
    return 0;
  }
  const Message& m = std::get<Message>(r);
  if (static_cast<std::uint16_t>(command_of(m)) != code) violated("command_of", code, payload);
  std::string encoded;
  try {
    encoded = encode_payload(m);
  } catch (...) {
    violated("accepted message does not re-encode", code, payload);
  }
  const DecodeResult again = decode_payload(code, encoded);
  const auto* m2 = std::get_if<Message>(&again);
  if (m2 == nullptr) violated("re-encoded message is rejected", code, encoded);
  if (!(*m2 == m)) violated("re-encoded message decodes differently", code, encoded);
  return 1;
}

/// One fuzz input. Returns how many payloads were accepted (for corpus coverage checks).
inline std::size_t ck_fuzz_one(const std::uint8_t* data, std::size_t size) {
  const std::string_view all(reinterpret_cast<const char*>(data), size);
  std::size_t accepted = 0;
  // As a byte stream: the first byte picks the chunk size, the rest is the stream.
  if (size >= 1) {
    const std::size_t chunk = 1 + data[0] % 64;
    const std::string_view stream = all.substr(1);
    FrameDecoder d;
    Frame f;
    std::size_t pos = 0;
    while (pos < stream.size()) {
      const std::size_t n = d.feed(stream.substr(pos, std::min(chunk, stream.size() - pos)));
      pos += n;
      if (d.buffered() > kHeaderSize + kMaxPayload) violated("buffer bound", 0, stream);
      const auto st = d.next(f);
      if (st == FrameDecoder::Status::kBadVersion) break;
      if (st == FrameDecoder::Status::kFrame) {
        if (f.payload.size() > kMaxPayload) violated("frame too large", f.command, f.payload);
        accepted += check_payload(f.command, f.payload);
      } else if (n == 0) {
        violated("decoder stalled", 0, stream);
      }
    }
  }
  // As a payload of every command.
  for (std::uint16_t code : kFuzzCodes) accepted += check_payload(code, all);
  return accepted;
}

}  // namespace qkdn::southbound::ck::fuzz
