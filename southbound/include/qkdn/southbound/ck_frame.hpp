// Ck frame layer (ck-protocol.md clause 2): a 10-byte big-endian header and a JSON payload.
// Pure code, no I/O.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace qkdn::southbound::ck {

inline constexpr std::uint16_t kVersion = 0x0001;
inline constexpr std::size_t kHeaderSize = 10;
inline constexpr std::size_t kMaxPayload = 65535;

/// The fixed header of a frame.
struct FrameHeader {
  std::uint16_t version = kVersion;
  std::uint32_t message_id = 0;
  std::uint16_t command = 0;
  std::uint16_t length = 0;
};

/// A whole frame: header fields and the payload bytes (normally one JSON object).
struct Frame {
  std::uint32_t message_id = 0;
  std::uint16_t command = 0;
  std::string payload;
};

/// Decodes the 10 header bytes. Never fails: version checks are the caller's (see kVersion).
FrameHeader decode_header(std::span<const std::uint8_t, kHeaderSize> bytes) noexcept;
/// Encodes a header.
std::array<std::uint8_t, kHeaderSize> encode_header(const FrameHeader& h) noexcept;
/// Encodes a frame (header + payload) with version kVersion. Throws InvalidArgument if the
/// payload exceeds kMaxPayload bytes.
std::string encode_frame(const Frame& frame);

/// Incremental decoder for a byte stream (frames split anywhere, several in one segment).
/// Holds at most one frame's worth of bytes (kHeaderSize + kMaxPayload).
class FrameDecoder {
 public:
  /// Outcome of next().
  enum class Status {
    kFrame,       ///< `frame` holds a complete frame
    kNeedMore,    ///< no complete frame buffered yet
    kBadVersion,  ///< the header's version is not kVersion (header_ holds it); close after Error
  };
  /// Appends bytes; returns how many were consumed (it stops accepting once one frame is
  /// complete and not yet taken, or once a bad version was seen, so call next() and feed the
  /// rest again). Never throws except std::bad_alloc.
  std::size_t feed(std::string_view bytes);
  /// Takes the next complete frame if any. On kFrame the decoder swaps its buffer with
  /// frame.payload, so reusing one Frame object avoids an allocation per frame. kBadVersion is
  /// sticky until reset().
  Status next(Frame& frame);
  /// Header of the frame being assembled (valid once kHeaderSize bytes arrived).
  [[nodiscard]] const FrameHeader& header() const { return header_; }
  /// Bytes currently buffered (for the one-frame memory bound).
  [[nodiscard]] std::size_t buffered() const { return header_len_ + buf_.size(); }
  /// Drops whatever is buffered, including a bad-version state, and starts afresh.
  void reset() noexcept;

 private:
  std::string buf_;  ///< payload bytes of the frame being assembled
  FrameHeader header_;
  bool have_header_ = false;
  std::array<std::uint8_t, kHeaderSize> header_bytes_{};
  std::size_t header_len_ = 0;  ///< header bytes received so far (0..kHeaderSize)
};

}  // namespace qkdn::southbound::ck
