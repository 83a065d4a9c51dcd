#include "qkdn/agent/key_store.hpp"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <iterator>
#include <optional>
#include <tuple>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#include "qkdn/controller/error.hpp"

namespace qkdn::agent {

namespace {
/// Block indices stay below 2^59: the ID's first 8 bytes hold a bijection of the index in the 59
/// bits left beside the parity bit and the UUID version nibble.
constexpr std::uint64_t kMaxIndex = std::uint64_t{1} << 59;
constexpr std::uint64_t kIndexMask = kMaxIndex - 1;

/// The 64-bit ID prefix (big-endian) of a 59-bit value: its bits around bit 56 (the parity:
/// low bit of byte 0) and bits 12..15 (the version nibble, high half of byte 6).
std::uint64_t spread(std::uint64_t v, int parity) {
  return (v & 0xFFF) | (((v >> 12) & ((std::uint64_t{1} << 40) - 1)) << 16) |
         (((v >> 52) & 0x7F) << 57) | (static_cast<std::uint64_t>(parity & 1) << 56) |
         (std::uint64_t{0x4} << 12);
}
std::uint64_t gather(std::uint64_t prefix) {
  return (prefix & 0xFFF) | (((prefix >> 16) & ((std::uint64_t{1} << 40) - 1)) << 12) |
         (((prefix >> 57) & 0x7F) << 52);
}
/// Inverse of an odd number modulo 2^64 (Newton's iteration doubles the correct bits).
std::uint64_t inverse_odd(std::uint64_t a) {
  std::uint64_t x = a;  // correct to 3 bits
  for (int i = 0; i < 5; ++i) x *= 2 - a * x;
  return x;
}
}  // namespace

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
  // One pass (the relay path parses every key ID of every frame): canonical 8-4-4-4-12 hex,
  // either case, as is_uuid() accepts.
  if (text.size() != 36) return std::nullopt;
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  KeyId id{};
  std::size_t n = 0;
  for (std::size_t i = 0; i < 36;) {
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      if (text[i] != '-') return std::nullopt;
      ++i;
      continue;
    }
    const int hi = nibble(text[i]);
    const int lo = nibble(text[i + 1]);
    if (hi < 0 || lo < 0) return std::nullopt;
    id[n++] = static_cast<std::uint8_t>((hi << 4) | lo);
    i += 2;
  }
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

namespace {

// Incremental SHA-256 with hex output; the context is freed on every path.
class Sha256 {
 public:
  Sha256() : ctx_(EVP_MD_CTX_new()) {
    if (ctx_ == nullptr || EVP_DigestInit_ex(ctx_, sha256_md(), nullptr) != 1) {
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

namespace {

EVP_MAC* hmac_algorithm() {
  static EVP_MAC* const mac = [] {
    EVP_MAC* m = EVP_MAC_fetch(nullptr, "HMAC", nullptr);
    if (m == nullptr) throw Internal("OpenSSL has no HMAC");
    return m;
  }();
  return mac;
}

const OSSL_PARAM* sha256_params() {
  static char digest[] = "SHA256";
  static const OSSL_PARAM params[] = {
      OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0), OSSL_PARAM_END};
  return params;
}

/// The label || parity || index (8 bytes big-endian) message of a block.
constexpr std::string_view kKeyLabel = "qkdn-emu-key-v1";
std::array<std::uint8_t, kKeyLabel.size() + 9> key_message(int parity, std::uint64_t index) {
  std::array<std::uint8_t, kKeyLabel.size() + 9> msg{};
  std::memcpy(msg.data(), kKeyLabel.data(), kKeyLabel.size());
  msg[kKeyLabel.size()] = static_cast<std::uint8_t>(parity & 1);
  for (std::size_t i = 0; i < 8; ++i) {
    msg[kKeyLabel.size() + 1 + i] = static_cast<std::uint8_t>(index >> (56 - 8 * i));
  }
  return msg;
}

}  // namespace

const EVP_MD* sha256_md() {
  static EVP_MD* const md = [] {
    EVP_MD* m = EVP_MD_fetch(nullptr, "SHA256", nullptr);
    if (m == nullptr) throw Internal("OpenSSL has no SHA-256");
    return m;
  }();
  return md;
}

void hmac_sha256(std::span<const std::uint8_t> key,
                 std::initializer_list<std::span<const std::uint8_t>> parts, std::uint8_t* out) {
  std::unique_ptr<EVP_MAC_CTX, decltype(&EVP_MAC_CTX_free)> ctx(EVP_MAC_CTX_new(hmac_algorithm()),
                                                                &EVP_MAC_CTX_free);
  std::size_t len = 0;
  bool ok = ctx != nullptr && EVP_MAC_init(ctx.get(), key.data(), key.size(), sha256_params()) == 1;
  for (const auto& part : parts) {
    ok = ok && EVP_MAC_update(ctx.get(), part.data(), part.size()) == 1;
  }
  ok = ok && EVP_MAC_final(ctx.get(), out, &len, kKeyBytes) == 1 && len == kKeyBytes;
  if (!ok) throw Internal("HMAC-SHA256 failed");
}

void derive_key_bytes(const std::uint8_t* secret, int parity, std::uint64_t index,
                      std::uint8_t* out) {
  const auto msg = key_message(parity, index);
  hmac_sha256({secret, kLinkSecretBytes}, {msg}, out);
}

void KeyStore::MacFree::operator()(EVP_MAC_CTX* c) const noexcept { EVP_MAC_CTX_free(c); }

void KeyStore::derive(int parity, std::uint64_t index, std::uint8_t* out) const {
  bool ok = true;
  if (!mac_) {
    mac_.reset(EVP_MAC_CTX_new(hmac_algorithm()));
    ok = mac_ != nullptr &&
         EVP_MAC_init(mac_.get(), secret_.data(), secret_.size(), sha256_params()) == 1;
  } else {
    ok = EVP_MAC_init(mac_.get(), nullptr, 0, nullptr) == 1;  // same key, fresh message
  }
  const auto msg = key_message(parity, index);
  std::size_t len = 0;
  ok = ok && EVP_MAC_update(mac_.get(), msg.data(), msg.size()) == 1 &&
       EVP_MAC_final(mac_.get(), out, &len, kKeyBytes) == 1 && len == kKeyBytes;
  if (!ok) {
    mac_.reset();
    throw Internal("HMAC-SHA256 failed");
  }
}

KeyStore::KeyStore(std::string link_id, std::string kma_id, std::string matching_kma_id,
                   std::size_t capacity_bytes)
    : link_id_(std::move(link_id)),
      kma_id_(std::move(kma_id)),
      matching_kma_id_(std::move(matching_kma_id)),
      capacity_bits_(static_cast<std::int64_t>(capacity_bytes) * 8) {}

void KeyStore::rekey(const std::uint8_t* secret, std::array<std::uint64_t, 2> start, SysTime now) {
  mac_.reset();
  secret_.assign(secret, secret + kLinkSecretBytes);
  static constexpr std::string_view kLabel = "qkdn-emu-id-v1";
  for (std::size_t p = 0; p < 2; ++p) {
    std::array<std::uint8_t, kLabel.size() + 1> msg{};
    std::memcpy(msg.data(), kLabel.data(), kLabel.size());
    msg[kLabel.size()] = static_cast<std::uint8_t>(p);
    std::array<std::uint8_t, 32> md{};
    hmac_sha256(secret_, {msg}, md.data());
    // ID = spread(mul * index + add mod 2^59) || tag: a bijection of the index (unique IDs,
    // O(1) back to the block) that looks random across links, then a tag of the secret.
    std::uint64_t mul = 0;
    std::uint64_t add = 0;
    for (std::size_t i = 0; i < 8; ++i) {
      mul = (mul << 8) | md[8 + i];
      add = (add << 8) | md[16 + i];
    }
    ids_[p].mul = (mul | 1) & kIndexMask;
    ids_[p].inv = inverse_odd(ids_[p].mul) & kIndexMask;
    ids_[p].add = add & kIndexMask;
    std::memcpy(ids_[p].tag.data(), md.data(), 8);
    ids_[p].tag[0] = static_cast<std::uint8_t>((ids_[p].tag[0] & 0x3F) | 0x80);  // RFC 4122 variant
    half_[p] = Half{};
    half_[p].lo = half_[p].hi = half_[p].next = std::min(start[p], kMaxIndex);
    half_[p].since = now;
  }
  held_.clear();
  reserved_.clear();
  allocated_.clear();
}

bool KeyStore::has_secret(const std::uint8_t* secret) const {
  return secret_.size() == kLinkSecretBytes &&
         CRYPTO_memcmp(secret_.data(), secret, kLinkSecretBytes) == 0;
}

void KeyStore::mint(const std::array<std::int64_t, 2>& n, SysTime now) {
  if (!keyed()) throw Internal("mint before the link has a secret");
  for (std::size_t p = 0; p < 2; ++p) {
    if (n[p] <= 0) continue;
    Half& h = half_[p];
    const auto add = std::min(static_cast<std::uint64_t>(n[p]), kMaxIndex - h.hi);  // never wraps
    if (add == 0) continue;
    h.hi += add;
    added_bits_total_ += static_cast<std::int64_t>(add) * kKeyBits;
    // Mint log: marks of blocks no longer stored go (their time becomes the next interval's
    // lower bound), then this mint's mark; over the limit the two oldest intervals merge.
    while (!h.marks.empty() && h.marks.front().first <= h.lo) {
      h.since = h.marks.front().second;
      h.marks.pop_front();
    }
    h.marks.emplace_back(h.hi, std::max(now, h.marks.empty() ? h.since : h.marks.back().second));
    if (h.marks.size() > kMintLogEntries) h.marks.pop_front();  // its blocks join the next mark
  }
}

std::pair<SysTime, SysTime> KeyStore::generated(int parity, std::uint64_t index) const {
  const Half& h = half_[static_cast<std::size_t>(parity & 1)];
  SysTime after = h.since;
  for (const auto& [end, at] : h.marks) {
    if (index < end) return {after, at};
    after = at;
  }
  return {after, after};  // not minted (callers ask only for stored blocks)
}

bool KeyStore::trim_to(const std::array<std::uint64_t, 2>& hi) {
  if (hi[0] > half_[0].hi || hi[1] > half_[1].hi) return false;
  for (std::size_t p = 0; p < 2; ++p) {
    Half& h = half_[p];
    if (hi[p] >= h.hi) continue;
    // Held blocks at or above the cut go (with their lease entries).
    for (auto it = held_.lower_bound((hi[p] << 1) | p); it != held_.end();) {
      if ((it->first & 1) != p) {
        ++it;
        continue;
      }
      auto& set = it->second.state == KeyState::kReserved ? reserved_ : allocated_;
      set.erase({it->second.reserved_at, it->first});
      --h.held;
      it = held_.erase(it);
    }
    h.gone.erase(h.gone.lower_bound(hi[p]), h.gone.end());
    h.returned.erase(h.returned.lower_bound(hi[p]), h.returned.end());
    h.hi = std::max(hi[p], h.lo);
    // Mint log: marks past the cut go; a mint cut in the middle keeps its time for the rest.
    std::optional<SysTime> cut;
    while (!h.marks.empty() && h.marks.back().first > h.hi) {
      cut = h.marks.back().second;
      h.marks.pop_back();
    }
    if (cut && (h.marks.empty() ? h.lo < h.hi : h.marks.back().first < h.hi)) {
      h.marks.emplace_back(h.hi, *cut);
    }
    if (h.lo > h.hi) h.lo = h.hi;
    h.next = std::min(h.next, h.hi);
  }
  return true;
}

void KeyStore::clear() {
  for (std::size_t p = 0; p < 2; ++p) {
    Half& h = half_[p];
    const auto hi = h.hi;
    const auto since = h.marks.empty() ? h.since : h.marks.back().second;
    h = Half{};
    h.lo = h.hi = h.next = hi;
    h.since = since;
  }
  held_.clear();
  reserved_.clear();
  allocated_.clear();
}

KeyId KeyStore::id_of(int parity, std::uint64_t index) const {
  KeyId id{};
  const auto& f = ids_[static_cast<std::size_t>(parity & 1)];
  const std::uint64_t prefix = spread((f.mul * index + f.add) & kIndexMask, parity);
  for (std::size_t i = 0; i < 8; ++i) id[i] = static_cast<std::uint8_t>(prefix >> (56 - 8 * i));
  std::memcpy(id.data() + 8, f.tag.data(), 8);
  return id;
}

std::optional<KeyStore::Slot> KeyStore::locate(const KeyId& id) const {
  if (!keyed()) return std::nullopt;
  const auto p = static_cast<std::size_t>(key_parity(id));
  const auto& f = ids_[p];
  if (std::memcmp(id.data() + 8, f.tag.data(), 8) != 0 || (id[6] >> 4) != 4) return std::nullopt;
  std::uint64_t prefix = 0;
  for (std::size_t i = 0; i < 8; ++i) prefix = (prefix << 8) | id[i];
  const std::uint64_t index = ((gather(prefix) - f.add) * f.inv) & kIndexMask;
  if (!is_stored(static_cast<int>(p), index)) return std::nullopt;
  return (index << 1) | p;
}

bool KeyStore::is_stored(int parity, std::uint64_t index) const {
  const Half& h = half_[static_cast<std::size_t>(parity & 1)];
  return index >= h.lo && index < h.hi && !h.gone.contains(index);
}

KeyBlock KeyStore::block(Slot slot) const {
  KeyBlock k;
  const int p = static_cast<int>(slot & 1);
  k.id = id_of(p, slot >> 1);
  std::tie(k.created_after, k.created) = generated(p, slot >> 1);
  derive(p, slot >> 1, k.bytes.data());
  return k;
}

std::size_t KeyStore::count(KeyState state) const {
  std::size_t held = 0;
  switch (state) {
    case KeyState::kAvailable:
      return available_parity(0) + available_parity(1);
    case KeyState::kReserved:
      held = reserved_.size();
      break;
    case KeyState::kAllocated:
      held = allocated_.size();
      break;
  }
  return held;
}

std::size_t KeyStore::tracked_entries() const {
  return held_.size() + half_[0].gone.size() + half_[1].gone.size() + half_[0].returned.size() +
         half_[1].returned.size();
}

void KeyStore::mark_gone(int parity, std::uint64_t index) {
  Half& h = half_[static_cast<std::size_t>(parity & 1)];
  if (index == h.lo) {
    ++h.lo;
    // Consumption from the front: the blocks consumed out of order behind it follow.
    while (!h.gone.empty() && *h.gone.begin() == h.lo) {
      h.gone.erase(h.gone.begin());
      ++h.lo;
    }
  } else {
    h.gone.insert(index);
  }
  h.next = std::max(h.next, h.lo);
}

void KeyStore::remove_available(Slot slot) {
  const int p = static_cast<int>(slot & 1);
  const std::uint64_t index = slot >> 1;
  Half& h = half_[static_cast<std::size_t>(p)];
  if (index < h.next) h.returned.erase(index);
  mark_gone(p, index);
}

void KeyStore::remove_held(Slot slot) {
  auto it = held_.find(slot);
  auto& set = it->second.state == KeyState::kReserved ? reserved_ : allocated_;
  set.erase({it->second.reserved_at, slot});
  held_.erase(it);
  const int p = static_cast<int>(slot & 1);
  --half_[static_cast<std::size_t>(p)].held;
  mark_gone(p, slot >> 1);
}

void KeyStore::make_available(Slot slot) {
  // Only reserved blocks come back, and they lie below the cursor (reserve() moved it past).
  half_[slot & 1].returned.insert(slot >> 1);
}

std::vector<KeyId> KeyStore::reserve(std::size_t n, int parity, SteadyPoint now, Holder holder) {
  std::vector<KeyId> out;
  const auto p = static_cast<std::size_t>(parity & 1);
  if (n == 0 || available_parity(parity) < n) return out;
  Half& h = half_[p];
  out.reserve(n);
  for (std::size_t i = 0; i < n; ++i) {
    std::uint64_t index = 0;
    if (!h.returned.empty()) {  // blocks released back are older than any fresh one
      index = *h.returned.begin();
      h.returned.erase(h.returned.begin());
    } else {
      while (h.gone.contains(h.next)) ++h.next;  // taken at the far end of a hop out of order
      index = h.next++;
    }
    const Slot slot = (index << 1) | p;
    held_.emplace(slot, Held{KeyState::kReserved, now, holder});
    reserved_.emplace(now, slot);
    ++h.held;
    out.push_back(id_of(parity, index));
  }
  return out;
}

std::optional<std::vector<KeyStore::Slot>> KeyStore::find_all(const std::vector<KeyId>& ids,
                                                              KeyState want) const {
  std::vector<Slot> found;
  found.reserve(ids.size());
  for (const auto& id : ids) {
    auto slot = locate(id);
    if (!slot) return std::nullopt;
    auto held = held_.find(*slot);
    const KeyState state = held == held_.end() ? KeyState::kAvailable : held->second.state;
    if (state != want) return std::nullopt;
    found.push_back(*slot);
  }
  std::vector<Slot> sorted = found;
  std::sort(sorted.begin(), sorted.end());
  if (std::adjacent_find(sorted.begin(), sorted.end()) != sorted.end()) return std::nullopt;
  return found;
}

bool KeyStore::allocate(const std::vector<KeyId>& ids, std::optional<Holder> holder) {
  auto found = find_all(ids, KeyState::kReserved);
  if (!found) return false;
  if (holder) {
    for (const Slot s : *found) {
      if (held_.at(s).holder != *holder) return false;
    }
  }
  for (const Slot s : *found) {
    Held& h = held_.at(s);
    reserved_.erase({h.reserved_at, s});
    allocated_.emplace(h.reserved_at, s);
    h.state = KeyState::kAllocated;
  }
  return true;
}

std::optional<std::vector<KeyBlock>> KeyStore::take(const std::vector<KeyId>& ids,
                                                    bool allocated_only) {
  auto found = find_all(ids, allocated_only ? KeyState::kAllocated : KeyState::kAvailable);
  if (!found) return std::nullopt;
  std::vector<KeyBlock> out;
  out.reserve(found->size());
  for (const Slot s : *found) out.push_back(block(s));  // derive first: nothing changes on throw
  for (const Slot s : *found) {
    if (allocated_only) {
      remove_held(s);
    } else {
      remove_available(s);
    }
  }
  return out;
}

std::size_t KeyStore::release(const std::vector<KeyId>& ids, Holder holder) {
  std::size_t n = 0;
  for (const auto& id : ids) {
    auto slot = locate(id);
    if (!slot) continue;
    auto it = held_.find(*slot);
    if (it == held_.end() || it->second.state != KeyState::kReserved ||
        it->second.holder != holder) {
      continue;
    }
    reserved_.erase({it->second.reserved_at, *slot});
    held_.erase(it);
    --half_[*slot & 1].held;
    make_available(*slot);
    ++n;
  }
  return n;
}

std::vector<KeyId> KeyStore::discard(const std::vector<KeyId>& ids, Holder holder,
                                     bool reserved_too) {
  std::vector<KeyId> out;
  for (const auto& id : ids) {
    auto slot = locate(id);
    if (!slot) continue;
    auto it = held_.find(*slot);
    if (it == held_.end()) continue;
    const bool held = it->second.state == KeyState::kAllocated ||
                      (reserved_too && it->second.state == KeyState::kReserved);
    if (!held || it->second.holder != holder) continue;
    out.push_back(id);
    remove_held(*slot);
  }
  return out;
}

std::vector<KeyId> KeyStore::discard_available(const std::vector<KeyId>& ids, int parity) {
  std::vector<KeyId> out;
  for (const auto& id : ids) {
    auto slot = locate(id);
    if (!slot || static_cast<int>(*slot & 1) != (parity & 1) || held_.contains(*slot)) continue;
    out.push_back(id);
    remove_available(*slot);
  }
  return out;
}

std::vector<KeyId> KeyStore::discard_expired_allocations(SteadyPoint now,
                                                         std::chrono::milliseconds lease) {
  std::vector<KeyId> out;
  while (!allocated_.empty() && now - allocated_.begin()->first >= lease) {
    const Slot s = allocated_.begin()->second;
    out.push_back(id_of(static_cast<int>(s & 1), s >> 1));
    remove_held(s);  // also drops the allocated_ entry
  }
  return out;
}

std::size_t KeyStore::release_expired(SteadyPoint now, std::chrono::milliseconds lease) {
  // reserved_ is ordered by lease start, so the expired reservations are a prefix.
  std::size_t n = 0;
  while (!reserved_.empty() && now - reserved_.begin()->first >= lease) {
    const Slot s = reserved_.begin()->second;
    reserved_.erase(reserved_.begin());
    held_.erase(s);
    --half_[s & 1].held;
    make_available(s);
    ++n;
  }
  return n;
}

std::array<std::int64_t, 2> KeyStore::generation_room(
    std::int64_t peer_capacity_bits, const std::array<std::int64_t, 2>& in_flight_keys) const {
  const std::int64_t half_keys = std::min(capacity_bits_, peer_capacity_bits) / 2 / kKeyBits;
  std::array<std::int64_t, 2> room{};
  for (std::size_t p = 0; p < 2; ++p) {
    room[p] = std::max<std::int64_t>(
        0, half_keys - static_cast<std::int64_t>(count_parity(static_cast<int>(p))) -
               in_flight_keys[p]);
  }
  return room;
}

std::string KeyStore::digest_hex() const {
  Sha256 sha;
  for (std::size_t p = 0; p < 2; ++p) {
    for (std::uint64_t i = half_[p].lo; i < half_[p].hi; ++i) {
      if (half_[p].gone.contains(i)) continue;
      sha.add(block((i << 1) | p));
    }
  }
  return sha.hex();
}

std::array<std::int64_t, 2> split_by_room(std::int64_t n, const std::array<std::int64_t, 2>& room,
                                          std::uint32_t tie_break) {
  std::array<std::int64_t, 2> r{std::max<std::int64_t>(0, room[0]),
                                std::max<std::int64_t>(0, room[1])};
  std::array<std::int64_t, 2> out{};
  n = std::max<std::int64_t>(0, std::min(n, r[0] + r[1]));
  // First level the halves' room, then share what is left evenly (an odd one alternates).
  const std::size_t more = r[0] >= r[1] ? 0 : 1;
  const std::int64_t level = std::min(n, r[more] - r[1 - more]);
  out[more] = level;
  const std::int64_t rest = n - level;
  out[0] += rest / 2;
  out[1] += rest / 2;
  if (rest % 2 != 0) ++out[tie_break & 1];
  return out;
}

void MintCredit::accrue(double rate_bps, double seconds) {
  if (!(rate_bps > 0) || !(seconds > 0)) return;
  bits_ = std::min(bits_ + rate_bps * seconds, rate_bps + static_cast<double>(kKeyBits));
}

std::int64_t MintCredit::spend(std::int64_t room, std::int64_t max_keys) {
  if (room <= 0) {
    bits_ = 0;
    return 0;
  }
  const auto by_credit = static_cast<std::int64_t>(bits_ / static_cast<double>(kKeyBits));
  const std::int64_t n = std::max<std::int64_t>(0, std::min({by_credit, room, max_keys}));
  bits_ -= static_cast<double>(n * kKeyBits);
  return n;
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
