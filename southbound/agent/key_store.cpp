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
      reserved_ = count(KeyState::kReserved);
      return true;
    }
  }
  return false;
}

void KeyStore::clear() {
  keys_.clear();
  reserved_ = 0;
}

std::vector<KeyId> KeyStore::reserve(std::size_t n, int parity,
                                     std::chrono::steady_clock::time_point now) {
  std::vector<KeyId> out;
  if (n == 0) return out;
  std::vector<KeyBlock*> picked;
  for (auto& k : keys_) {
    if (k.state == KeyState::kAvailable && (k.id[0] & 1) == parity) {
      picked.push_back(&k);
      if (picked.size() == n) break;
    }
  }
  if (picked.size() < n) return out;
  for (auto* k : picked) {
    k->state = KeyState::kReserved;
    k->reserved_at = now;
    out.push_back(k->id);
  }
  reserved_ += n;
  return out;
}

bool KeyStore::allocate(const std::vector<KeyId>& ids) {
  std::vector<KeyBlock*> found;
  for (const auto& id : ids) {
    auto it =
        std::find_if(keys_.begin(), keys_.end(), [&](const KeyBlock& k) { return k.id == id; });
    if (it == keys_.end() || it->state != KeyState::kReserved) return false;
    if (std::find(found.begin(), found.end(), &*it) != found.end()) return false;
    found.push_back(&*it);
  }
  for (auto* k : found) k->state = KeyState::kAllocated;
  reserved_ -= found.size();
  return true;
}

std::optional<std::vector<KeyBlock>> KeyStore::take(const std::vector<KeyId>& ids,
                                                    bool allocated_only) {
  const KeyState want = allocated_only ? KeyState::kAllocated : KeyState::kAvailable;
  std::vector<std::size_t> idx;
  for (const auto& id : ids) {
    auto it =
        std::find_if(keys_.begin(), keys_.end(), [&](const KeyBlock& k) { return k.id == id; });
    if (it == keys_.end() || it->state != want) return std::nullopt;
    const auto i = static_cast<std::size_t>(it - keys_.begin());
    if (std::find(idx.begin(), idx.end(), i) != idx.end()) return std::nullopt;
    idx.push_back(i);
  }
  std::vector<KeyBlock> out;
  out.reserve(idx.size());
  for (auto i : idx) out.push_back(keys_[i]);
  std::sort(idx.begin(), idx.end());
  for (auto it = idx.rbegin(); it != idx.rend(); ++it) {
    keys_.erase(keys_.begin() + static_cast<std::ptrdiff_t>(*it));  // the erased copy is wiped
  }
  return out;
}

std::size_t KeyStore::release_expired(std::chrono::steady_clock::time_point now,
                                      std::chrono::milliseconds lease) {
  if (reserved_ == 0) return 0;
  std::size_t n = 0;
  for (auto& k : keys_) {
    if (k.state == KeyState::kReserved && now - k.reserved_at >= lease) {
      k.state = KeyState::kAvailable;
      ++n;
    }
  }
  reserved_ -= n;
  return n;
}

std::size_t KeyStore::count(KeyState state) const {
  return static_cast<std::size_t>(std::count_if(
      keys_.begin(), keys_.end(), [&](const KeyBlock& k) { return k.state == state; }));
}

std::string KeyStore::digest_hex() const {
  return digest_of(std::vector<KeyBlock>(keys_.begin(), keys_.end()));
}

std::string digest_of(const std::vector<KeyBlock>& keys) {
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  if (ctx == nullptr) throw Internal("EVP_MD_CTX_new failed");
  EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr);
  for (const auto& k : keys) {
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
