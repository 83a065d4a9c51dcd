#include "kma_wire.hpp"

#include <cstring>

#include "qkdn/controller/error.hpp"

namespace qkdn::agent::kma {
namespace {

constexpr std::size_t kSeedSize = kLinkSecretBytes + std::size_t{3} * 8;

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

std::string encode_seed_frame(const KeyStore& store) {
  if (!store.keyed()) throw InvalidArgument("seed of a link without a secret");
  std::string out;
  out.reserve(kHeaderSize + kSeedSize);
  put_u16(out, static_cast<std::uint16_t>(Type::kSeed));
  put_u32(out, static_cast<std::uint32_t>(kSeedSize));
  out.append(reinterpret_cast<const char*>(store.secret().data()), kLinkSecretBytes);
  const auto minted = store.minted();
  put_u64(out, minted[0]);
  put_u64(out, minted[1]);
  put_u64(out, static_cast<std::uint64_t>(store.capacity_bits()));
  return out;
}

std::optional<Seed> decode_seed(std::string_view payload) {
  if (payload.size() != kSeedSize) return std::nullopt;
  const auto* p = reinterpret_cast<const std::uint8_t*>(payload.data());
  Seed seed;
  seed.secret.assign(p, p + kLinkSecretBytes);
  p += kLinkSecretBytes;
  seed.minted = {get_be(p, 8), get_be(p + 8, 8)};
  const std::uint64_t capacity = get_be(p + 16, 8);
  if (seed.minted[0] >= kMaxMintIndex || seed.minted[1] >= kMaxMintIndex ||
      capacity > static_cast<std::uint64_t>(INT64_MAX)) {
    return std::nullopt;
  }
  seed.capacity_bits = static_cast<std::int64_t>(capacity);
  return seed;
}

std::string encode_mint_frame(std::uint32_t seq, const std::array<std::int64_t, 2>& n) {
  if (n[0] < 0 || n[1] < 0 || n[0] > kMaxMintPerFrame || n[1] > kMaxMintPerFrame) {
    throw InvalidArgument("mint count out of range");
  }
  std::string payload;
  put_u32(payload, seq);
  put_u32(payload, static_cast<std::uint32_t>(n[0]));
  put_u32(payload, static_cast<std::uint32_t>(n[1]));
  return encode_frame(Type::kMint, payload);
}

std::optional<Mint> decode_mint(std::string_view payload) {
  if (payload.size() != 12) return std::nullopt;
  const auto* p = reinterpret_cast<const std::uint8_t*>(payload.data());
  Mint m;
  m.seq = static_cast<std::uint32_t>(get_be(p, 4));
  m.n = {static_cast<std::int64_t>(get_be(p + 4, 4)), static_cast<std::int64_t>(get_be(p + 8, 4))};
  if (m.n[0] > kMaxMintPerFrame || m.n[1] > kMaxMintPerFrame) return std::nullopt;
  return m;
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
