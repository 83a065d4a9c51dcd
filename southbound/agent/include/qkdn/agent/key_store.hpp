// Per-link key store of an emulated KM: KMA-keys with the metadata of Y.3803 Table 1, item (2),
// derived on demand from a secret the two ends of the link share (lazy emulation). Pure code, no
// I/O. The secret lives in key memory and never leaves the store except through the
// authenticated KMA link to the peer KM (see kma_wire.hpp); derived key bytes are wiped when
// the KeyBlock holding them is freed.
#pragma once

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <initializer_list>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include <openssl/types.h>

#include "qkdn/agent/secure_memory.hpp"
#include "qkdn/controller/clock.hpp"

namespace qkdn::agent {

/// Size of every emulated key: 256 bits.
inline constexpr std::size_t kKeyBytes = 32;
inline constexpr std::int64_t kKeyBits = 256;

/// A KMA-key ID: the 16 bytes of a UUIDv4 (never derived from key bytes; see KeyStore).
using KeyId = std::array<std::uint8_t, 16>;

/// Hash of a KeyId for unordered containers.
struct KeyIdHash {
  std::size_t operator()(const KeyId& id) const noexcept;
};

/// Parity of an ID's first byte (0 or 1): selects the half of a link's store the key belongs to.
inline int key_parity(const KeyId& id) { return id[0] & 1; }

/// Canonical lower-case UUID text of an ID.
std::string key_id_to_string(const KeyId& id);
/// Parses canonical UUID text; nullopt when malformed.
std::optional<KeyId> parse_key_id(const std::string& text);

/// Life-cycle state of a stored key: available, reserved (0x410A), allocated (0x410C).
enum class KeyState : std::uint8_t { kAvailable, kReserved, kAllocated };

/// Who holds a reserved or allocated key: a hash of the reservation's key_relay_request_id
/// (holder_of), so that a release or allocation for one relay never touches keys that lapsed and
/// were reserved again for another.
using Holder = std::uint64_t;
/// The holder of a key_relay_request_id (FNV-1a 64; "" for a reservation that named none).
Holder holder_of(std::string_view key_relay_request_id) noexcept;

/// One QKD key / KMA-key. Y.3803 Table 1 (1) and (2): key ID (`id`), key length (kKeyBits),
/// generation time stamp (KeyStore::take and reserve fill `created` and `created_after`: the
/// block was stored at this end in (created_after, created]; see KeyStore "mint log"). Link,
/// KMA ID, matching KMA ID and the emulated QKD module IDs are per store (KeyStore accessors).
/// The destructor wipes the key bytes (OPENSSL_cleanse); copies wipe their own bytes too.
struct KeyBlock {
  KeyId id{};
  SysTime created{};
  SysTime created_after{};
  KeyState state = KeyState::kAvailable;
  std::chrono::steady_clock::time_point reserved_at{};  ///< when reserved (lease start)
  Holder holder = 0;                                    ///< reserved / allocated: for whom
  std::array<std::uint8_t, kKeyBytes> bytes{};

  KeyBlock() = default;
  KeyBlock(const KeyBlock&) = default;
  KeyBlock& operator=(const KeyBlock&) = default;
  ~KeyBlock();
};

/// HMAC-SHA256 of the concatenation of `parts` under `key`, written to `out` (32 bytes). The MAC
/// algorithm is fetched from OpenSSL once per process (the one-shot HMAC() fetches it on every
/// call, a measurable share of a relay hop). Throws Internal on failure.
void hmac_sha256(std::span<const std::uint8_t> key,
                 std::initializer_list<std::span<const std::uint8_t>> parts, std::uint8_t* out);
/// SHA-256 fetched from OpenSSL once per process (for EVP_DigestInit_ex).
const EVP_MD* sha256_md();

/// Bytes of the secret both ends of an emulated link derive their keys from.
inline constexpr std::size_t kLinkSecretBytes = 32;

/// Emulated key material (docs/key-supply.md "Emulated links"): block `index` of half `parity`
/// of a link keyed by `secret` (kLinkSecretBytes) is HMAC-SHA256(secret, "qkdn-emu-key-v1" ||
/// parity || index as 8 bytes big-endian), written to `out` (kKeyBytes). Both ends of the link
/// compute the same bytes; without the secret they are unpredictable (HMAC as a PRF).
void derive_key_bytes(const std::uint8_t* secret, int parity, std::uint64_t index,
                      std::uint8_t* out);

/// The keys one KM shares with its peer over one **emulated** link, derived on demand (lazy
/// emulation; real QKD modules deliver keys through their own interface).
///
/// Each parity half is a sequence of key blocks numbered 0, 1, 2, ...: the primary end
/// reserves from half 0, the secondary from half 1, so reservations made at both ends at once
/// never collide. The pool of a half is the range [lo, hi) of block indices minus the blocks
/// consumed or discarded out of order; `mint` grows hi (the link's generator, at key_rate_bps up
/// to capacity), consumption from the front grows lo. A block's ID and bytes are computed from
/// the link secret and its index when needed: the ID is a version-4 UUID whose first 8 bytes are
/// a bijection of the index keyed by the secret (mul * index + add modulo 2^59, spread around
/// the parity bit — the low bit of byte 0 — and the version nibble) and whose last 8 bytes are a
/// tag of the secret and the half (with the RFC 4122 variant bits): IDs are unique per secret
/// and index, their first 8 bytes differ from key to key (the ETSI key_IDs of sae_key_id.hpp
/// take them), and any ID maps back to its block in O(1). Memory: O(1) per store plus one entry per
/// key reserved, allocated, released back below the reservation cursor, or consumed out of order;
/// nothing scans the pool. Single-threaded: owned by the KM's strand. Pure code, no I/O.
class KeyStore {
 public:
  /// `kma_id` stores the keys; `matching_kma_id` is the peer; capacity in bytes of key material.
  /// The store holds no key until rekey() gives it a secret.
  KeyStore(std::string link_id, std::string kma_id, std::string matching_kma_id,
           std::size_t capacity_bytes);
  KeyStore(const KeyStore&) = delete;
  KeyStore& operator=(const KeyStore&) = delete;
  KeyStore(KeyStore&&) = default;
  KeyStore& operator=(KeyStore&&) = default;
  ~KeyStore() = default;

  [[nodiscard]] const std::string& link_id() const { return link_id_; }
  [[nodiscard]] const std::string& kma_id() const { return kma_id_; }
  [[nodiscard]] const std::string& matching_kma_id() const { return matching_kma_id_; }

  /// Number of stored keys (any state, both halves) and their bits.
  [[nodiscard]] std::size_t size() const { return count_parity(0) + count_parity(1); }
  [[nodiscard]] std::int64_t stored_bits() const {
    return static_cast<std::int64_t>(size()) * kKeyBits;
  }
  [[nodiscard]] std::int64_t capacity_bits() const { return capacity_bits_; }
  /// Capacity of one parity half: capacity_bits() / 2.
  [[nodiscard]] std::int64_t capacity_bits_per_half() const { return capacity_bits_ / 2; }
  /// Bits ever added (monotonic; the rate meter's input).
  [[nodiscard]] std::int64_t added_bits_total() const { return added_bits_total_; }

  /// Keys the store from now on: every key goes (nothing is reserved or stored), and both halves
  /// start empty at block `start` (so blocks below it, used under an earlier epoch of the same
  /// secret, are never handed out again). `secret` must hold kLinkSecretBytes.
  void rekey(const std::uint8_t* secret, std::array<std::uint64_t, 2> start,
             SysTime now = std::chrono::system_clock::now());
  /// True when keyed with exactly this secret (kLinkSecretBytes).
  [[nodiscard]] bool has_secret(const std::uint8_t* secret) const;
  [[nodiscard]] bool keyed() const { return !secret_.empty(); }
  /// The secret (kLinkSecretBytes, key memory; empty before rekey). Sent only to the peer KM.
  [[nodiscard]] const secure::Bytes& secret() const { return secret_; }
  /// Appends `n[p]` new blocks to half p (the generator's mint), stored at `now`. Needs a secret.
  ///
  /// Mint log (Y.3803 Table 1 (1) generation time stamp, lazy emulation): per half the store
  /// keeps up to kMintLogEntries marks (one past the newest block, time) of the mints whose
  /// blocks are still stored; a block's time stamp is the interval (previous mark's time, its
  /// mark's time]. While there are fewer mints than marks the interval is exactly one mint
  /// (one generation tick); beyond that adjacent marks merge (the oldest pair first), so the
  /// interval widens but always holds the true time. Memory: O(1) per store.
  void mint(const std::array<std::int64_t, 2>& n, SysTime now = std::chrono::system_clock::now());
  static constexpr std::size_t kMintLogEntries = 16;
  /// The generation interval (after, at] of block `index` of half `parity` (see mint).
  [[nodiscard]] std::pair<SysTime, SysTime> generated(int parity, std::uint64_t index) const;
  /// The emulated QKD module of this link end and of the peer's (Y.3803 Table 1 (1) QKD module
  /// ID, matching QKD module ID): "qkdm:<link_id>:<km_id>".
  [[nodiscard]] std::string qkd_module_id() const { return "qkdm:" + link_id_ + ":" + kma_id_; }
  [[nodiscard]] std::string matching_qkd_module_id() const {
    return "qkdm:" + link_id_ + ":" + matching_kma_id_;
  }
  /// One past the newest block per half.
  [[nodiscard]] std::array<std::uint64_t, 2> minted() const { return {half_[0].hi, half_[1].hi}; }
  /// Drops the blocks at or above `hi` per half (batches minted here that the peer never
  /// stored). False (nothing changed) when a half has fewer than `hi` minted blocks.
  bool trim_to(const std::array<std::uint64_t, 2>& hi);
  /// Drops every key (the pool restarts empty after the newest block; IDs are never reused).
  void clear();

  /// Reserves `n` available keys, oldest first, of half `parity` (0 or 1) for `holder`. Empty
  /// (and nothing changed) when fewer exist.
  std::vector<KeyId> reserve(std::size_t n, int parity, std::chrono::steady_clock::time_point now,
                             Holder holder = 0);
  /// Reserved -> allocated for every ID (the lease keeps running from the reservation). False
  /// (nothing changed) when an ID is not stored here, not reserved (by `holder`, when given) or
  /// repeated.
  bool allocate(const std::vector<KeyId>& ids, std::optional<Holder> holder = std::nullopt);
  /// Reserved by `holder` -> available again, at its place in the oldest-first order (the
  /// controller released the reservation before allocation). Other IDs (unknown, another
  /// holder, another state) are left alone. Returns how many went back.
  std::size_t release(const std::vector<KeyId>& ids, Holder holder);
  /// Removes the keys held by `holder`: allocated ones, and reserved ones too with
  /// `reserved_too`. Other IDs are left alone. Returns the IDs removed, in the given order.
  std::vector<KeyId> discard(const std::vector<KeyId>& ids, Holder holder, bool reserved_too);
  /// Removes available keys of parity `parity` (0 or 1) among `ids` (the peer end discarded its
  /// copies). Other IDs are left alone. Returns the IDs removed.
  std::vector<KeyId> discard_available(const std::vector<KeyId>& ids, int parity);
  /// Removes allocated keys reserved longer than `lease` ago (never used: the relay they were
  /// allocated for is long over). Returns their IDs, oldest first.
  std::vector<KeyId> discard_expired_allocations(std::chrono::steady_clock::time_point now,
                                                 std::chrono::milliseconds lease);
  /// Removes the keys with these IDs and returns them (bytes derived now, wiped when the
  /// returned blocks go), in the given order. With `allocated_only`, every key must be
  /// allocated; otherwise every key must be available (the far end of a hop). nullopt (nothing
  /// changed) when an ID is missing, repeated or in another state. A removed key is never
  /// handed out again.
  std::optional<std::vector<KeyBlock>> take(const std::vector<KeyId>& ids, bool allocated_only);
  /// Releases reservations older than `lease` (reserved -> available). Returns how many.
  std::size_t release_expired(std::chrono::steady_clock::time_point now,
                              std::chrono::milliseconds lease);
  /// Number of keys in a state.
  [[nodiscard]] std::size_t count(KeyState state) const;
  /// Number of stored keys (any state) of a parity half (0 or 1).
  [[nodiscard]] std::size_t count_parity(int parity) const {
    const Half& h = half_[static_cast<std::size_t>(parity & 1)];
    return static_cast<std::size_t>(h.hi - h.lo) - h.gone.size();
  }
  /// Number of available keys of a parity half (what reserve() can hand out).
  [[nodiscard]] std::size_t available_parity(int parity) const {
    return count_parity(parity) - half_[static_cast<std::size_t>(parity & 1)].held;
  }
  /// Keys the generator may still add per parity half: half of min(own, peer) capacity minus
  /// the half's stored keys and `in_flight_keys` (minted, not yet stored). Never negative.
  [[nodiscard]] std::array<std::int64_t, 2> generation_room(
      std::int64_t peer_capacity_bits, const std::array<std::int64_t, 2>& in_flight_keys) const;
  /// Entries the store keeps beyond its fixed size (held, returned and out-of-order consumed
  /// blocks): 0 for an idle link whatever its pool holds.
  [[nodiscard]] std::size_t tracked_entries() const;

  /// The ID of block `index` of half `parity` (needs a secret).
  [[nodiscard]] KeyId id_of(int parity, std::uint64_t index) const;
  /// Hex SHA-256 over (id || bytes) of every stored key, half 0 then half 1, oldest first:
  /// lets tests compare both ends of a link without exposing key bytes.
  [[nodiscard]] std::string digest_hex() const;

 private:
  using SteadyPoint = std::chrono::steady_clock::time_point;
  /// A block: index << 1 | parity.
  using Slot = std::uint64_t;
  struct Held {
    KeyState state = KeyState::kReserved;
    SteadyPoint reserved_at{};
    Holder holder = 0;
  };
  struct Half {
    std::uint64_t lo = 0;          ///< blocks below are gone
    std::uint64_t hi = 0;          ///< one past the newest minted block
    std::uint64_t next = 0;        ///< reservation cursor: [lo, next) are gone, held or returned
    std::set<std::uint64_t> gone;  ///< consumed or discarded blocks in (lo, hi)
    std::set<std::uint64_t> returned;  ///< available blocks below next, oldest first
    std::size_t held = 0;              ///< reserved or allocated blocks of this half
    /// Mint log (see mint): marks (one past the newest block of a mint, time), oldest first;
    /// `since` is when the half started (rekey), the lower bound of the first interval.
    std::deque<std::pair<std::uint64_t, SysTime>> marks;
    SysTime since{};
  };

  /// The block an ID names, when it is one of this store's secret and stored (any state).
  [[nodiscard]] std::optional<Slot> locate(const KeyId& id) const;
  [[nodiscard]] bool is_stored(int parity, std::uint64_t index) const;
  /// Looks up every ID (all in state `want`, none repeated); nullopt otherwise.
  std::optional<std::vector<Slot>> find_all(const std::vector<KeyId>& ids, KeyState want) const;
  /// Marks a stored, non-held block gone (consumed or discarded).
  void remove_available(Slot slot);
  /// Marks a held block gone.
  void remove_held(Slot slot);
  void mark_gone(int parity, std::uint64_t index);
  void make_available(Slot slot);
  [[nodiscard]] KeyBlock block(Slot slot) const;

  std::string link_id_;
  std::string kma_id_;
  std::string matching_kma_id_;
  std::int64_t capacity_bits_;
  std::int64_t added_bits_total_ = 0;
  secure::Bytes secret_;  ///< key memory (wiped when freed)
  /// Per half: the ID of block i is spread(mul * i + add mod 2^59) || tag (see id_of).
  struct IdForm {
    std::uint64_t mul = 1;
    std::uint64_t inv = 1;
    std::uint64_t add = 0;
    std::array<std::uint8_t, 8> tag{};
  };
  std::array<IdForm, 2> ids_{};
  /// HMAC-SHA256 keyed with the secret, made on the first derivation (an idle link has none):
  /// each key then costs one re-initialisation and two SHA-256 blocks. OpenSSL wipes it when
  /// it is freed.
  struct MacFree {
    void operator()(EVP_MAC_CTX* c) const noexcept;
  };
  mutable std::unique_ptr<EVP_MAC_CTX, MacFree> mac_;
  /// Block `index` of half `parity` through mac_.
  void derive(int parity, std::uint64_t index, std::uint8_t* out) const;
  std::array<Half, 2> half_{};
  std::map<Slot, Held> held_;                         ///< reserved and allocated blocks
  std::set<std::pair<SteadyPoint, Slot>> reserved_;   ///< by lease start
  std::set<std::pair<SteadyPoint, Slot>> allocated_;  ///< by lease start
};

/// Splits `n` new blocks between the halves of a link store: the half with more room first
/// until both have as much, then evenly (an odd block to half `tie_break & 1`). Never more than
/// a half's room, never more than their sum in total.
std::array<std::int64_t, 2> split_by_room(std::int64_t n, const std::array<std::int64_t, 2>& room,
                                          std::uint32_t tie_break);

/// The emulated generator's budget in bits: it accrues at the link's key rate (capped at one
/// second's worth plus one key, so a stall never ends in a burst) and whole keys are spent from
/// it. Pure: the caller supplies the elapsed time.
class MintCredit {
 public:
  /// Adds `seconds` of generation at `rate_bps` (nothing for a negative rate or time).
  void accrue(double rate_bps, double seconds);
  /// Spends the whole keys the credit pays for, at most `room` and `max_keys`, and returns how
  /// many. With `room` <= 0 (the pool is full) the credit is dropped: generation pauses.
  std::int64_t spend(std::int64_t room, std::int64_t max_keys);
  void reset() { bits_ = 0; }
  [[nodiscard]] double bits() const { return bits_; }

 private:
  double bits_ = 0;
};

/// Hex SHA-256 over (id || bytes) of a sequence of keys (test hook for relayed keys).
std::string digest_of(const std::vector<KeyBlock>& keys);

/// Measures a rate from a monotonic counter sampled over a sliding window. Single-threaded.
class RateMeter {
 public:
  using TimePoint = std::chrono::steady_clock::time_point;
  explicit RateMeter(std::chrono::milliseconds window = std::chrono::milliseconds{5'000});
  /// Records the counter's value at `now` (call regularly, e.g. every generation tick).
  void sample(TimePoint now, std::int64_t total);
  /// Counter increase per second over the window (0 until two samples exist).
  [[nodiscard]] double rate_per_second() const;

 private:
  std::chrono::milliseconds window_;
  std::deque<std::pair<TimePoint, std::int64_t>> samples_;
};

}  // namespace qkdn::agent
