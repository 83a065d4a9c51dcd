#include "qkdn/agent/key_store.hpp"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <iterator>

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

Holder holder_of(std::string_view key_relay_request_id) noexcept {
  std::uint64_t h = 0xcbf29ce484222325ULL;
  for (const char c : key_relay_request_id) {
    h ^= static_cast<unsigned char>(c);
    h *= 0x100000001b3ULL;
  }
  return h;
}

std::size_t KeyIdHash::operator()(const KeyId& id) const noexcept {
  std::uint64_t a = 0;
  std::uint64_t b = 0;
  std::memcpy(&a, id.data(), 8);
  std::memcpy(&b, id.data() + 8, 8);
  return static_cast<std::size_t>(a ^ (b * 0x9E3779B97F4A7C15ULL));
}

bool assign_parity(KeyId& id, std::array<std::int64_t, 2>& room) {
  if (room[0] <= 0 && room[1] <= 0) return false;
  int parity = key_parity(id);
  if (room[0] != room[1]) parity = room[0] > room[1] ? 0 : 1;
  id[0] = static_cast<std::uint8_t>((id[0] & 0xFE) | parity);
  --room[static_cast<std::size_t>(parity)];
  return true;
}

namespace {

// Incremental SHA-256 with hex output; the context is freed on every path.
class Sha256 {
 public:
  Sha256() : ctx_(EVP_MD_CTX_new()) {
    if (ctx_ == nullptr || EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr) != 1) {
      EVP_MD_CTX_free(ctx_);
      throw Internal("SHA-256 init failed");
    }
  }
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  ~Sha256() { EVP_MD_CTX_free(ctx_); }

  void add(const KeyBlock& k) {
    EVP_DigestUpdate(ctx_, k.id.data(), k.id.size());
    EVP_DigestUpdate(ctx_, k.bytes.data(), k.bytes.size());
  }

  std::string hex() {
    std::array<unsigned char, EVP_MAX_MD_SIZE> md{};
    unsigned int len = 0;
    EVP_DigestFinal_ex(ctx_, md.data(), &len);
    static constexpr char kHex[] = "0123456789abcdef";
    std::string out;
    for (unsigned int i = 0; i < len; ++i) {
      out.push_back(kHex[md[i] >> 4]);
      out.push_back(kHex[md[i] & 0x0F]);
    }
    return out;
  }

 private:
  EVP_MD_CTX* ctx_;
};

}  // namespace

KeyStore::KeyStore(std::string link_id, std::string kma_id, std::string matching_kma_id,
                   std::size_t capacity_bytes)
    : link_id_(std::move(link_id)),
      kma_id_(std::move(kma_id)),
      matching_kma_id_(std::move(matching_kma_id)),
      capacity_bits_(static_cast<std::int64_t>(capacity_bytes) * 8) {}

bool KeyStore::push(const KeyBlock& key) {
  if (index_.contains(key.id)) return false;  // the caller's `key` wipes itself
  const std::uint64_t seq = next_seq_++;
  // Sequence numbers only grow, so every insertion lands at the end (hinted: O(1)).
  auto it = keys_.emplace_hint(keys_.end(), seq, key);
  index_.emplace(it->second.id, it);
  const auto parity = static_cast<std::size_t>(key_parity(it->second.id));
  ++parity_count_[parity];
  switch (it->second.state) {
    case KeyState::kAvailable:
      available_[parity].emplace_hint(available_[parity].end(), seq, it);
      break;
    case KeyState::kReserved:
      reserved_.emplace(it->second.reserved_at, seq);
      break;
    case KeyState::kAllocated:
      allocated_.emplace(it->second.reserved_at, seq);
      break;
  }
  ++state_count_[static_cast<std::size_t>(it->second.state)];
  added_bits_total_ += kKeyBits;
  return true;
}

std::optional<KeyId> KeyStore::newest_id() const {
  if (keys_.empty()) return std::nullopt;
  return keys_.rbegin()->second.id;
}

void KeyStore::unlink(Keys::iterator it) {
  const KeyBlock& k = it->second;
  const auto parity = static_cast<std::size_t>(key_parity(k.id));
  switch (k.state) {
    case KeyState::kAvailable:
      available_[parity].erase(it->first);
      break;
    case KeyState::kReserved:
      reserved_.erase({k.reserved_at, it->first});
      break;
    case KeyState::kAllocated:
      allocated_.erase({k.reserved_at, it->first});
      break;
  }
  --state_count_[static_cast<std::size_t>(k.state)];
  --parity_count_[parity];
  index_.erase(k.id);
}

void KeyStore::erase(Keys::iterator it) {
  unlink(it);
  keys_.erase(it);  // the key's bytes are wiped by ~KeyBlock
}

bool KeyStore::trim_after(const KeyId& id) {
  auto found = index_.find(id);
  if (found == index_.end()) return false;
  const auto first = std::next(found->second);
  for (auto it = first; it != keys_.end(); ++it) unlink(it);
  keys_.erase(first, keys_.end());  // the erased keys are wiped
  return true;
}

void KeyStore::clear() {
  index_.clear();
  for (auto& a : available_) a.clear();
  reserved_.clear();
  allocated_.clear();
  state_count_ = {};
  parity_count_ = {};
  keys_.clear();
}

std::vector<KeyId> KeyStore::reserve(std::size_t n, int parity, SteadyPoint now, Holder holder) {
  std::vector<KeyId> out;
  auto& avail = available_[static_cast<std::size_t>(parity & 1)];
  if (n == 0 || avail.size() < n) return out;
  out.reserve(n);
  auto end = avail.begin();
  for (std::size_t i = 0; i < n; ++i, ++end) {
    KeyBlock& k = end->second->second;
    k.state = KeyState::kReserved;
    k.reserved_at = now;
    k.holder = holder;
    reserved_.emplace(now, end->first);
    out.push_back(k.id);
  }
  avail.erase(avail.begin(), end);
  state_count_[static_cast<std::size_t>(KeyState::kAvailable)] -= n;
  state_count_[static_cast<std::size_t>(KeyState::kReserved)] += n;
  return out;
}

std::optional<std::vector<KeyStore::Keys::iterator>> KeyStore::find_all(
    const std::vector<KeyId>& ids, KeyState want) {
  std::vector<Keys::iterator> found;
  found.reserve(ids.size());
  std::vector<std::uint64_t> seqs;
  seqs.reserve(ids.size());
  for (const auto& id : ids) {
    auto it = index_.find(id);
    if (it == index_.end() || it->second->second.state != want) return std::nullopt;
    found.push_back(it->second);
    seqs.push_back(it->second->first);
  }
  std::sort(seqs.begin(), seqs.end());
  if (std::adjacent_find(seqs.begin(), seqs.end()) != seqs.end()) return std::nullopt;
  return found;
}

bool KeyStore::allocate(const std::vector<KeyId>& ids, std::optional<Holder> holder) {
  auto found = find_all(ids, KeyState::kReserved);
  if (!found) return false;
  if (holder) {
    for (auto it : *found) {
      if (it->second.holder != *holder) return false;
    }
  }
  for (auto it : *found) {
    reserved_.erase({it->second.reserved_at, it->first});
    allocated_.emplace(it->second.reserved_at, it->first);
    it->second.state = KeyState::kAllocated;
  }
  state_count_[static_cast<std::size_t>(KeyState::kReserved)] -= found->size();
  state_count_[static_cast<std::size_t>(KeyState::kAllocated)] += found->size();
  return true;
}

std::optional<std::vector<KeyBlock>> KeyStore::take(const std::vector<KeyId>& ids,
                                                    bool allocated_only) {
  auto found = find_all(ids, allocated_only ? KeyState::kAllocated : KeyState::kAvailable);
  if (!found) return std::nullopt;
  std::vector<KeyBlock> out;
  out.reserve(found->size());
  for (auto it : *found) {
    unlink(it);
    auto node = keys_.extract(it);
    out.push_back(std::move(node.mapped()));  // the node's copy is wiped when it goes
  }
  return out;
}

std::size_t KeyStore::release(const std::vector<KeyId>& ids, Holder holder) {
  std::size_t n = 0;
  for (const auto& id : ids) {
    auto found = index_.find(id);
    if (found == index_.end()) continue;
    auto key = found->second;
    KeyBlock& k = key->second;
    if (k.state != KeyState::kReserved || k.holder != holder) continue;
    reserved_.erase({k.reserved_at, key->first});
    k.state = KeyState::kAvailable;
    k.holder = 0;
    available_[static_cast<std::size_t>(key_parity(k.id))].emplace(key->first, key);
    --state_count_[static_cast<std::size_t>(KeyState::kReserved)];
    ++state_count_[static_cast<std::size_t>(KeyState::kAvailable)];
    ++n;
  }
  return n;
}

std::vector<KeyId> KeyStore::discard(const std::vector<KeyId>& ids, Holder holder,
                                     bool reserved_too) {
  std::vector<KeyId> out;
  for (const auto& id : ids) {
    auto found = index_.find(id);
    if (found == index_.end()) continue;
    const KeyBlock& k = found->second->second;
    const bool held =
        k.state == KeyState::kAllocated || (reserved_too && k.state == KeyState::kReserved);
    if (!held || k.holder != holder) continue;
    out.push_back(id);
    erase(found->second);
  }
  return out;
}

std::vector<KeyId> KeyStore::discard_available(const std::vector<KeyId>& ids, int parity) {
  std::vector<KeyId> out;
  for (const auto& id : ids) {
    auto found = index_.find(id);
    if (found == index_.end()) continue;
    const KeyBlock& k = found->second->second;
    if (k.state != KeyState::kAvailable || key_parity(k.id) != (parity & 1)) continue;
    out.push_back(id);
    erase(found->second);
  }
  return out;
}

std::vector<KeyId> KeyStore::discard_expired_allocations(SteadyPoint now,
                                                         std::chrono::milliseconds lease) {
  std::vector<KeyId> out;
  while (!allocated_.empty() && now - allocated_.begin()->first >= lease) {
    auto key = keys_.find(allocated_.begin()->second);
    out.push_back(key->second.id);
    erase(key);  // also drops the allocated_ entry
  }
  return out;
}

std::size_t KeyStore::release_expired(SteadyPoint now, std::chrono::milliseconds lease) {
  // reserved_ is ordered by lease start, so the expired reservations are a prefix.
  std::size_t n = 0;
  auto it = reserved_.begin();
  for (; it != reserved_.end() && now - it->first >= lease; ++it, ++n) {
    auto key = keys_.find(it->second);
    key->second.state = KeyState::kAvailable;
    key->second.holder = 0;
    available_[static_cast<std::size_t>(key_parity(key->second.id))].emplace(it->second, key);
  }
  reserved_.erase(reserved_.begin(), it);
  state_count_[static_cast<std::size_t>(KeyState::kReserved)] -= n;
  state_count_[static_cast<std::size_t>(KeyState::kAvailable)] += n;
  return n;
}

std::array<std::int64_t, 2> KeyStore::generation_room(
    std::int64_t peer_capacity_bits, const std::array<std::int64_t, 2>& in_flight_keys) const {
  const std::int64_t half_keys = std::min(capacity_bits_, peer_capacity_bits) / 2 / kKeyBits;
  std::array<std::int64_t, 2> room{};
  for (std::size_t p = 0; p < 2; ++p) {
    room[p] = std::max<std::int64_t>(
        0, half_keys - static_cast<std::int64_t>(parity_count_[p]) - in_flight_keys[p]);
  }
  return room;
}

std::string KeyStore::digest_hex() const {
  Sha256 sha;
  for (const auto& [seq, k] : keys_) sha.add(k);
  return sha.hex();
}

std::string digest_of(const std::vector<KeyBlock>& keys) {
  Sha256 sha;
  for (const auto& k : keys) sha.add(k);
  return sha.hex();
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
