// Ck frame layer: big-endian header codec and an incremental, one-frame-bounded decoder.
#include "qkdn/southbound/ck_frame.hpp"

#include <algorithm>
#include <utility>

#include "qkdn/controller/error.hpp"
#include "qkdn/controller/key_limits.hpp"

namespace qkdn::southbound::ck {

// The relay size bounds of key_limits.hpp are computed from the same frame limit.
static_assert(kMaxPayload == static_cast<std::size_t>(limits::kMaxCkPayloadBytes));

namespace {

std::uint16_t load16(const std::uint8_t* p) noexcept {
  return static_cast<std::uint16_t>((p[0] << 8) | p[1]);
}

std::uint32_t load32(const std::uint8_t* p) noexcept {
  return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) |
         std::uint32_t{p[3]};
}

void store16(std::uint8_t* p, std::uint16_t v) noexcept {
  p[0] = static_cast<std::uint8_t>(v >> 8);
  p[1] = static_cast<std::uint8_t>(v);
}

void store32(std::uint8_t* p, std::uint32_t v) noexcept {
  p[0] = static_cast<std::uint8_t>(v >> 24);
  p[1] = static_cast<std::uint8_t>(v >> 16);
  p[2] = static_cast<std::uint8_t>(v >> 8);
  p[3] = static_cast<std::uint8_t>(v);
}

}  // namespace

FrameHeader decode_header(std::span<const std::uint8_t, kHeaderSize> bytes) noexcept {
  const std::uint8_t* p = bytes.data();
  FrameHeader h;
  h.version = load16(p);
  h.message_id = load32(p + 2);
  h.command = load16(p + 6);
  h.length = load16(p + 8);
  return h;
}

std::array<std::uint8_t, kHeaderSize> encode_header(const FrameHeader& h) noexcept {
  std::array<std::uint8_t, kHeaderSize> out{};
  store16(out.data(), h.version);
  store32(out.data() + 2, h.message_id);
  store16(out.data() + 6, h.command);
  store16(out.data() + 8, h.length);
  return out;
}

std::string encode_frame(const Frame& frame) {
  if (frame.payload.size() > kMaxPayload) {
    throw InvalidArgument("Ck frame payload of " + std::to_string(frame.payload.size()) +
                          " bytes exceeds " + std::to_string(kMaxPayload));
  }
  const auto header = encode_header(FrameHeader{kVersion, frame.message_id, frame.command,
                                                static_cast<std::uint16_t>(frame.payload.size())});
  std::string out;
  out.reserve(kHeaderSize + frame.payload.size());
  out.append(reinterpret_cast<const char*>(header.data()), header.size());
  out.append(frame.payload);
  return out;
}

std::size_t FrameDecoder::feed(std::string_view bytes) {
  std::size_t used = 0;
  if (!have_header_) {
    const std::size_t n = std::min(kHeaderSize - header_len_, bytes.size());
    std::copy_n(reinterpret_cast<const std::uint8_t*>(bytes.data()), n,
                header_bytes_.begin() + static_cast<std::ptrdiff_t>(header_len_));
    header_len_ += n;
    used = n;
    if (header_len_ < kHeaderSize) return used;
    header_ = decode_header(header_bytes_);
    have_header_ = true;
    buf_.clear();
    // Reserve exactly one payload's worth: the bound of clause 2 (64 KiB + 10 per connection).
    if (header_.version == kVersion) buf_.reserve(header_.length);
  }
  // A bad version leaves the stream undelimitable: consume nothing more.
  if (header_.version != kVersion) return used;
  const std::size_t want = header_.length - buf_.size();
  const std::size_t n = std::min(want, bytes.size() - used);
  buf_.append(bytes.data() + used, n);
  return used + n;
}

FrameDecoder::Status FrameDecoder::next(Frame& frame) {
  if (!have_header_) return Status::kNeedMore;
  if (header_.version != kVersion) return Status::kBadVersion;
  if (buf_.size() < header_.length) return Status::kNeedMore;
  frame.message_id = header_.message_id;
  frame.command = header_.command;
  // Swap rather than copy: the caller's old payload buffer becomes ours for the next frame.
  std::swap(frame.payload, buf_);
  buf_.clear();
  if (buf_.capacity() > kMaxPayload) std::string().swap(buf_);  // keep the one-frame bound
  have_header_ = false;
  header_len_ = 0;
  return Status::kFrame;
}

void FrameDecoder::reset() noexcept {
  buf_.clear();
  header_ = FrameHeader{};
  have_header_ = false;
  header_len_ = 0;
}

}  // namespace qkdn::southbound::ck
