// Ck frame layer (ck-protocol.md clause 2): big-endian header, encode_frame bounds and the
// incremental FrameDecoder.
#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "qkdn/controller/error.hpp"
#include "qkdn/southbound/ck_frame.hpp"

namespace qkdn::southbound::ck {
namespace {

std::string bytes(std::initializer_list<int> b) {
  std::string s;
  for (int v : b) s += static_cast<char>(static_cast<unsigned char>(v));
  return s;
}

// Header fields are unsigned big-endian at fixed offsets: version 0-1, id 2-5, code 6-7, len 8-9.
TEST(CkHeader, EncodesBigEndianByteExact) {
  const auto h = encode_header(FrameHeader{0x0001, 0x01020304, 0x14E1, 0xABCD});
  const std::array<std::uint8_t, 10> want = {0x00, 0x01, 0x01, 0x02, 0x03,
                                             0x04, 0x14, 0xE1, 0xAB, 0xCD};
  EXPECT_EQ(h, want);
  const auto max = encode_header(FrameHeader{0xFFFF, 0xFFFFFFFF, 0xFFFF, 0xFFFF});
  for (auto b : max) EXPECT_EQ(b, 0xFF);
}

// Decoding the same bytes gives the fields back, including the high bit of each.
TEST(CkHeader, DecodesBigEndian) {
  const std::array<std::uint8_t, 10> in = {0x80, 0x02, 0xDE, 0xAD, 0xBE,
                                           0xEF, 0x41, 0x0A, 0x00, 0x07};
  const FrameHeader h = decode_header(in);
  EXPECT_EQ(h.version, 0x8002);
  EXPECT_EQ(h.message_id, 0xDEADBEEFu);
  EXPECT_EQ(h.command, 0x410A);
  EXPECT_EQ(h.length, 7);
  const FrameHeader r = decode_header(encode_header(h));
  EXPECT_EQ(r.version, h.version);
  EXPECT_EQ(r.message_id, h.message_id);
  EXPECT_EQ(r.command, h.command);
  EXPECT_EQ(r.length, h.length);
}

// encode_frame writes version 1, the fields and the payload verbatim.
TEST(CkFrame, EncodeFrameExact) {
  const std::string f = encode_frame(Frame{1, 0x14E8, R"({"kma_id":"KM1"})"});
  EXPECT_EQ(f, bytes({0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x14, 0xE8, 0x00, 0x10}) +
                   R"({"kma_id":"KM1"})");
  EXPECT_EQ(encode_frame(Frame{0x01000000, 0x41E9, ""}),
            bytes({0x00, 0x01, 0x01, 0x00, 0x00, 0x00, 0x41, 0xE9, 0x00, 0x00}));
}

// The largest payload fits; one more byte is InvalidArgument.
TEST(CkFrame, EncodeFrameRejectsOversizePayload) {
  const std::string f = encode_frame(Frame{2, 0x14E3, std::string(kMaxPayload, 'x')});
  EXPECT_EQ(f.size(), kHeaderSize + kMaxPayload);
  EXPECT_EQ(static_cast<unsigned char>(f[8]), 0xFF);
  EXPECT_EQ(static_cast<unsigned char>(f[9]), 0xFF);
  EXPECT_THROW(encode_frame(Frame{2, 0x14E3, std::string(kMaxPayload + 1, 'x')}), InvalidArgument);
}

// Feeds everything, draining frames as they complete.
std::vector<Frame> drain(FrameDecoder& d, std::string_view stream, std::size_t chunk) {
  std::vector<Frame> out;
  std::size_t pos = 0;
  while (pos < stream.size()) {
    const std::string_view piece = stream.substr(pos, std::min(chunk, stream.size() - pos));
    std::size_t used = 0;
    while (used < piece.size()) {
      const std::size_t n = d.feed(piece.substr(used));
      used += n;
      EXPECT_LE(d.buffered(), kHeaderSize + kMaxPayload);
      Frame f;
      const auto st = d.next(f);
      if (st == FrameDecoder::Status::kFrame) {
        out.push_back(std::move(f));
      } else if (st == FrameDecoder::Status::kBadVersion) {
        return out;
      } else {
        EXPECT_GT(n, 0u) << "decoder stalled";
        if (n == 0) return out;
      }
    }
    pos += piece.size();
  }
  return out;
}

std::string three_frames() {
  return encode_frame(Frame{1, 0x14E1, R"({"km_id":"KM1"})"}) + encode_frame(Frame{2, 0x14E8, ""}) +
         encode_frame(Frame{3, 0x14E3, std::string(1000, 'p')});
}

// Frames split anywhere (byte by byte, odd chunk sizes) and several per segment all come out
// intact and in order.
TEST(CkFrameDecoder, SplitAndCoalescedFrames) {
  const std::string stream = three_frames();
  for (std::size_t chunk : {std::size_t{1}, std::size_t{3}, std::size_t{10}, std::size_t{11},
                            std::size_t{4096}, stream.size()}) {
    SCOPED_TRACE(chunk);
    FrameDecoder d;
    const auto frames = drain(d, stream, chunk);
    ASSERT_EQ(frames.size(), 3u);
    EXPECT_EQ(frames[0].message_id, 1u);
    EXPECT_EQ(frames[0].command, 0x14E1);
    EXPECT_EQ(frames[0].payload, R"({"km_id":"KM1"})");
    EXPECT_EQ(frames[1].message_id, 2u);
    EXPECT_TRUE(frames[1].payload.empty());
    EXPECT_EQ(frames[2].payload, std::string(1000, 'p'));
    EXPECT_EQ(d.buffered(), 0u);
  }
}

// Fed byte by byte, the decoder reports kNeedMore until the last byte and exposes the header
// once it is complete.
TEST(CkFrameDecoder, ByteByByteStates) {
  const std::string f = encode_frame(Frame{9, 0x1406, "{}"});
  FrameDecoder d;
  Frame out;
  for (std::size_t i = 0; i + 1 < f.size(); ++i) {
    ASSERT_EQ(d.feed(f.substr(i, 1)), 1u);
    EXPECT_EQ(d.next(out), FrameDecoder::Status::kNeedMore);
    EXPECT_EQ(d.buffered(), i + 1);
  }
  EXPECT_EQ(d.header().command, 0x1406);
  EXPECT_EQ(d.header().length, 2);
  ASSERT_EQ(d.feed(f.substr(f.size() - 1)), 1u);
  // A complete frame not yet taken stops further input.
  EXPECT_EQ(d.feed("more"), 0u);
  ASSERT_EQ(d.next(out), FrameDecoder::Status::kFrame);
  EXPECT_EQ(out.payload, "{}");
  EXPECT_EQ(d.next(out), FrameDecoder::Status::kNeedMore);
}

// A 65,535-byte maximum frame is accepted and stays within the one-frame bound.
TEST(CkFrameDecoder, MaximumFrame) {
  const std::string f = encode_frame(Frame{5, 0x14E3, std::string(kMaxPayload, 'z')});
  FrameDecoder d;
  const auto frames = drain(d, f, 1500);
  ASSERT_EQ(frames.size(), 1u);
  EXPECT_EQ(frames[0].payload.size(), kMaxPayload);
}

// A wrong version stops the decoder (sticky) until reset; nothing past the header is consumed.
TEST(CkFrameDecoder, WrongVersion) {
  std::string f = encode_frame(Frame{1, 0x14E8, R"({"kma_id":"KM1"})"});
  f[1] = 0x02;
  FrameDecoder d;
  EXPECT_EQ(d.feed(f), kHeaderSize);
  Frame out;
  EXPECT_EQ(d.next(out), FrameDecoder::Status::kBadVersion);
  EXPECT_EQ(d.header().version, 0x0002);
  EXPECT_EQ(d.header().message_id, 1u);
  EXPECT_EQ(d.feed("x"), 0u);
  EXPECT_EQ(d.next(out), FrameDecoder::Status::kBadVersion);
  d.reset();
  EXPECT_EQ(d.buffered(), 0u);
  const std::string good = encode_frame(Frame{2, 0x14E8, "{}"});
  EXPECT_EQ(d.feed(good), good.size());
  EXPECT_EQ(d.next(out), FrameDecoder::Status::kFrame);
  EXPECT_EQ(out.message_id, 2u);
}

// 65,535 bytes of garbage never crash the decoder and never buffer beyond one frame: it either
// reports a bad version or waits for a frame of the advertised length.
TEST(CkFrameDecoder, Garbage) {
  std::mt19937 rng(1234);
  for (int round = 0; round < 50; ++round) {
    std::string junk(kMaxPayload, '\0');
    for (char& c : junk) c = static_cast<char>(rng() & 0xFF);
    if (round % 2 == 0) {  // half of the rounds with a valid version so that payloads flow
      junk[0] = 0x00;
      junk[1] = 0x01;
    }
    FrameDecoder d;
    std::size_t frames = 0;
    std::size_t pos = 0;
    Frame out;
    while (pos < junk.size()) {
      const std::size_t n = d.feed(std::string_view(junk).substr(pos, 1 + rng() % 3000));
      pos += n;
      EXPECT_LE(d.buffered(), kHeaderSize + kMaxPayload);
      const auto st = d.next(out);
      if (st == FrameDecoder::Status::kBadVersion) break;
      if (st == FrameDecoder::Status::kFrame) ++frames;
      if (n == 0 && st != FrameDecoder::Status::kFrame) break;
    }
    if (round % 2 == 1 && (junk[0] != 0 || junk[1] != 1)) {
      EXPECT_EQ(frames, 0u);
    }
  }
}

// Reusing one Frame object recycles its buffer (no allocation per frame in steady state).
TEST(CkFrameDecoder, ReusedFrameKeepsWorking) {
  FrameDecoder d;
  Frame out;
  for (std::uint32_t i = 1; i <= 100; ++i) {
    const std::string f = encode_frame(Frame{i, 0x14E8, std::string(i, 'a')});
    ASSERT_EQ(d.feed(f), f.size());
    ASSERT_EQ(d.next(out), FrameDecoder::Status::kFrame);
    EXPECT_EQ(out.message_id, i);
    EXPECT_EQ(out.payload, std::string(i, 'a'));
  }
}

}  // namespace
}  // namespace qkdn::southbound::ck
