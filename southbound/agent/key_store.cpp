#include "qkdn/agent/key_store.hpp"

#include <algorithm>
#include <cstdio>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "qkdn/controller/error.hpp"

namespace qkdn::agent {

std::string key_id_to_string(const KeyId& id) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(36);
  for (std::size_t i = 0; i < id.size(); ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) out.push_back('-');
    out.push_back(kHex[id[i] >> 4]);
    out.push_back(kHex[id[i] & 0x0F]);
  }
  return out;
}

std::optional<KeyId> parse_key_id(const std::string& text) {
  if (!is_uuid(text)) return std::nullopt;
  KeyId id{};
  std::size_t n = 0;
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  int hi = -1;
  for (char c : text) {
    if (c == '-') continue;
    const int v = nibble(c);
    if (v < 0 || n >= id.size()) return std::nullopt;
    if (hi < 0) {
      hi = v;
    } else {
      id[n++] = static_cast<std::uint8_t>((hi << 4) | v);
      hi = -1;
    }
  }
  if (n != id.size()) return std::nullopt;
  return id;
}

KeyBlock::~KeyBlock() { OPENSSL_cleanse(bytes.data(), bytes.size()); }

KeyStore::KeyStore(std::string link_id, std::string kma_id, std::string matching_kma_id,
                   std::size_t capacity_bytes)
    : link_id_(std::move(link_id)),
      kma_id_(std::move(kma_id)),
      matching_kma_id_(std::move(matching_kma_id)),
      capacity_bits_(static_cast<std::int64_t>(capacity_bytes) * 8) {}

void KeyStore::push(KeyBlock key) {
  keys_.push_back(std::move(key));
  added_bits_total_ += kKeyBits;
}

std::optional<KeyId> KeyStore::newest_id() const {
  if (keys_.empty()) return std::nullopt;
  return keys_.back().id;
}

bool KeyStore::trim_after(const KeyId& id) {
  // The key to keep is normally at or near the back: search from there.
  for (auto it = keys_.rbegin(); it != keys_.rend(); ++it) {
    if (it->id == id) {
      keys_.erase(it.base(), keys_.end());
      return true;
    }
  }
  return false;
}

void KeyStore::clear() { keys_.clear(); }

std::string KeyStore::digest_hex() const {
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  if (ctx == nullptr) throw Internal("EVP_MD_CTX_new failed");
  EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr);
  for (const auto& k : keys_) {
    EVP_DigestUpdate(ctx, k.id.data(), k.id.size());
    EVP_DigestUpdate(ctx, k.bytes.data(), k.bytes.size());
  }
  std::array<unsigned char, EVP_MAX_MD_SIZE> md{};
  unsigned int len = 0;
  EVP_DigestFinal_ex(ctx, md.data(), &len);
  EVP_MD_CTX_free(ctx);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned int i = 0; i < len; ++i) {
    out.push_back(kHex[md[i] >> 4]);
    out.push_back(kHex[md[i] & 0x0F]);
  }
  return out;
}

RateMeter::RateMeter(std::chrono::milliseconds window) : window_(window) {}

void RateMeter::sample(TimePoint now, std::int64_t total) {
  samples_.emplace_back(now, total);
  // Keep one sample at or before the window start as the base.
  while (samples_.size() > 2 && samples_[1].first <= now - window_) samples_.pop_front();
}

double RateMeter::rate_per_second() const {
  if (samples_.size() < 2) return 0.0;
  const auto& [t0, v0] = samples_.front();
  const auto& [t1, v1] = samples_.back();
  const double secs = std::chrono::duration<double>(t1 - t0).count();
  if (secs <= 0) return 0.0;
  return static_cast<double>(v1 - v0) / secs;
}

}  // namespace qkdn::agent
