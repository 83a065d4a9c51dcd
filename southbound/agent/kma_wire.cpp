#include "kma_wire.hpp"

#include <cstring>

#include "qkdn/controller/error.hpp"

namespace qkdn::agent::kma {
namespace {

constexpr std::size_t kKeyRecord = 16 + 8 + kKeyBytes;

void put_u16(std::string& out, std::uint16_t v) {
  out.push_back(static_cast<char>(v >> 8));
  out.push_back(static_cast<char>(v & 0xFF));
}
void put_u32(std::string& out, std::uint32_t v) {
  for (int s = 24; s >= 0; s -= 8) out.push_back(static_cast<char>((v >> s) & 0xFF));
}
void put_u64(std::string& out, std::uint64_t v) {
  for (int s = 56; s >= 0; s -= 8) out.push_back(static_cast<char>((v >> s) & 0xFF));
}
std::uint64_t get_be(const std::uint8_t* p, int n) {
  std::uint64_t v = 0;
  for (int i = 0; i < n; ++i) v = (v << 8) | p[i];
  return v;
}

}  // namespace

Header decode_header(const std::uint8_t* bytes) noexcept {
  return Header{static_cast<std::uint16_t>(get_be(bytes, 2)),
                static_cast<std::uint32_t>(get_be(bytes + 2, 4))};
}

std::string encode_frame(Type type, std::string_view payload) {
  if (payload.size() > kMaxPayload) throw InvalidArgument("KMA frame payload too large");
  std::string out;
  out.reserve(kHeaderSize + payload.size());
  put_u16(out, static_cast<std::uint16_t>(type));
  put_u32(out, static_cast<std::uint32_t>(payload.size()));
  out.append(payload);
  return out;
}

std::string encode_keys_frame(std::uint32_t seq, const std::vector<KeyBlock>& keys) {
  if (keys.size() > kMaxKeysPerBatch) throw InvalidArgument("too many keys in one KMA frame");
  std::string out;
  const std::size_t len = 8 + keys.size() * kKeyRecord;
  out.reserve(kHeaderSize + len);
  put_u16(out, static_cast<std::uint16_t>(Type::kKeys));
  put_u32(out, static_cast<std::uint32_t>(len));
  put_u32(out, seq);
  put_u32(out, static_cast<std::uint32_t>(keys.size()));
  for (const auto& k : keys) {
    out.append(reinterpret_cast<const char*>(k.id.data()), k.id.size());
    const auto ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(k.created.time_since_epoch());
    put_u64(out, static_cast<std::uint64_t>(ms.count()));
    out.append(reinterpret_cast<const char*>(k.bytes.data()), k.bytes.size());
  }
  return out;
}

std::optional<KeysBody> decode_keys(std::string_view payload) {
  if (payload.size() < 8) return std::nullopt;
  const auto* p = reinterpret_cast<const std::uint8_t*>(payload.data());
  KeysBody body;
  body.seq = static_cast<std::uint32_t>(get_be(p, 4));
  const auto count = static_cast<std::size_t>(get_be(p + 4, 4));
  if (count > kMaxKeysPerBatch || payload.size() != 8 + count * kKeyRecord) return std::nullopt;
  body.keys.resize(count);
  p += 8;
  for (auto& k : body.keys) {
    std::memcpy(k.id.data(), p, k.id.size());
    const auto ms = static_cast<std::int64_t>(get_be(p + 16, 8));
    k.created =
        SysTime{std::chrono::duration_cast<SysTime::duration>(std::chrono::milliseconds{ms})};
    std::memcpy(k.bytes.data(), p + 24, k.bytes.size());
    p += kKeyRecord;
  }
  return body;
}

std::string encode_ack_frame(std::uint32_t seq) {
  std::string payload;
  put_u32(payload, seq);
  return encode_frame(Type::kAck, payload);
}

std::optional<std::uint32_t> decode_ack(std::string_view payload) {
  if (payload.size() != 4) return std::nullopt;
  return static_cast<std::uint32_t>(
      get_be(reinterpret_cast<const std::uint8_t*>(payload.data()), 4));
}

}  // namespace qkdn::agent::kma
