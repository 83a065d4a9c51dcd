// Per-link key store of an emulated KM: KMA-keys with the metadata of Y.3803 Table 1, item (2).
// Pure code, no I/O. Key bytes are wiped when a key is freed and never leave the store except
// through the KMA link to the peer KM (see kma_wire.hpp).
#pragma once

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "qkdn/agent/secure_memory.hpp"
#include "qkdn/controller/clock.hpp"

namespace qkdn::agent {

/// Size of every emulated key: 256 bits.
inline constexpr std::size_t kKeyBytes = 32;
inline constexpr std::int64_t kKeyBits = 256;

/// A KMA-key ID: the 16 bytes of a random UUIDv4 (never derived from key bytes).
using KeyId = std::array<std::uint8_t, 16>;

/// Hash of a KeyId for unordered containers (IDs are random, so folding the bytes suffices).
struct KeyIdHash {
  std::size_t operator()(const KeyId& id) const noexcept;
};

/// Parity of an ID's first byte (0 or 1): selects the half of a link's store the key belongs to.
inline int key_parity(const KeyId& id) { return id[0] & 1; }

/// Generator side (primary end): gives `id` the parity of the half with more room in `room`
/// (keys per parity; a tie keeps the ID's random bit) by setting or clearing the low bit of its
/// first byte only, and takes one key from that half's room. False (nothing changed) when both
/// halves are full.
bool assign_parity(KeyId& id, std::array<std::int64_t, 2>& room);

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

/// One KMA-key. Y.3803 Table 1 (2): KMA-key ID (`id`), key length (kKeyBits), generation time
/// stamp (`created`). KMA ID, matching KMA ID and link are per store (KeyStore accessors).
/// The destructor wipes the key bytes (OPENSSL_cleanse); copies wipe their own bytes too.
struct KeyBlock {
  KeyId id{};
  SysTime created{};
  KeyState state = KeyState::kAvailable;
  std::chrono::steady_clock::time_point reserved_at{};  ///< when reserved (lease start)
  Holder holder = 0;                                    ///< reserved / allocated: for whom
  std::array<std::uint8_t, kKeyBytes> bytes{};

  KeyBlock() = default;
  KeyBlock(const KeyBlock&) = default;
  KeyBlock& operator=(const KeyBlock&) = default;
  ~KeyBlock();
};

/// The keys one KM shares with its peer over one link. Keys are kept in global insertion order
/// (the order both ends push them) and split by ID parity into two halves: the primary end
/// reserves even first ID bytes, the secondary odd ones. Single-threaded: owned by the KM's
/// strand. Capacity is advisory and per half (capacity_bits() / 2 each): the link's generator
/// gives every new key the parity of a half with room and pauses only while both are full (so
/// both ends stay identical); push() itself never drops keys except duplicates. Every operation
/// costs O(keys involved * log(stored keys)); nothing scans the pool.
class KeyStore {
 public:
  /// `kma_id` stores the keys; `matching_kma_id` is the peer; capacity in bytes of key material.
  KeyStore(std::string link_id, std::string kma_id, std::string matching_kma_id,
           std::size_t capacity_bytes);
  /// Movable, not copyable (the index holds iterators into the key map; moving keeps them).
  KeyStore(const KeyStore&) = delete;
  KeyStore& operator=(const KeyStore&) = delete;
  KeyStore(KeyStore&&) = default;
  KeyStore& operator=(KeyStore&&) = default;
  ~KeyStore() = default;

  [[nodiscard]] const std::string& link_id() const { return link_id_; }
  [[nodiscard]] const std::string& kma_id() const { return kma_id_; }
  [[nodiscard]] const std::string& matching_kma_id() const { return matching_kma_id_; }

  /// Number of stored keys and their bits.
  [[nodiscard]] std::size_t size() const { return keys_.size(); }
  [[nodiscard]] std::int64_t stored_bits() const {
    return static_cast<std::int64_t>(keys_.size()) * kKeyBits;
  }
  [[nodiscard]] std::int64_t capacity_bits() const { return capacity_bits_; }
  /// Capacity of one parity half: capacity_bits() / 2.
  [[nodiscard]] std::int64_t capacity_bits_per_half() const { return capacity_bits_ / 2; }
  /// Bits ever added (monotonic; the rate meter's input).
  [[nodiscard]] std::int64_t added_bits_total() const { return added_bits_total_; }

  /// Appends a key (newest). False (key dropped and wiped, nothing else changed) when its ID is
  /// already stored; both ends push the same sequence, so they drop the same keys.
  bool push(const KeyBlock& key);
  /// ID of the newest key, if any.
  [[nodiscard]] std::optional<KeyId> newest_id() const;
  /// Drops every key stored after `id` (global insertion order, both parities). Returns false
  /// (and changes nothing) when `id` is not stored.
  bool trim_after(const KeyId& id);
  /// Drops every key.
  void clear();
  /// Reserves `n` available keys, oldest first, among those whose ID's first byte has the
  /// parity `parity` (0 or 1: the two ends of a link reserve disjoint halves, so reservations
  /// made at both ends at once never collide), for `holder`. Empty (and nothing changed) when
  /// fewer exist.
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
  /// Removes and wipes the keys held by `holder`: allocated ones, and reserved ones too with
  /// `reserved_too`. Other IDs are left alone. Returns the IDs removed, in the given order.
  std::vector<KeyId> discard(const std::vector<KeyId>& ids, Holder holder, bool reserved_too);
  /// Removes and wipes available keys of parity `parity` (0 or 1) among `ids` (the peer end
  /// discarded its copies). Other IDs are left alone. Returns the IDs removed.
  std::vector<KeyId> discard_available(const std::vector<KeyId>& ids, int parity);
  /// Removes and wipes allocated keys reserved longer than `lease` ago (never used: the relay
  /// they were allocated for is long over). Returns their IDs, oldest first.
  std::vector<KeyId> discard_expired_allocations(std::chrono::steady_clock::time_point now,
                                                 std::chrono::milliseconds lease);
  /// Removes and returns the keys with these IDs, in the given order. With `allocated_only`,
  /// every key must be allocated; otherwise every key must be available (the far end of a
  /// hop). nullopt (nothing changed) when an ID is missing, repeated or in another state.
  std::optional<std::vector<KeyBlock>> take(const std::vector<KeyId>& ids, bool allocated_only);
  /// Releases reservations older than `lease` (reserved -> available). Returns how many.
  std::size_t release_expired(std::chrono::steady_clock::time_point now,
                              std::chrono::milliseconds lease);
  /// Number of keys in a state.
  [[nodiscard]] std::size_t count(KeyState state) const {
    return state_count_[static_cast<std::size_t>(state)];
  }
  /// Number of stored keys (any state) of a parity half (0 or 1).
  [[nodiscard]] std::size_t count_parity(int parity) const {
    return parity_count_[static_cast<std::size_t>(parity & 1)];
  }
  /// Number of available keys of a parity half (what reserve() can hand out).
  [[nodiscard]] std::size_t available_parity(int parity) const {
    return available_[static_cast<std::size_t>(parity & 1)].size();
  }
  /// Keys the generator may still add per parity half: half of min(own, peer) capacity minus
  /// the half's stored keys and `in_flight_keys` (sent, not yet stored). Never negative.
  [[nodiscard]] std::array<std::int64_t, 2> generation_room(
      std::int64_t peer_capacity_bits, const std::array<std::int64_t, 2>& in_flight_keys) const;

  /// Hex SHA-256 over (id || bytes) of every stored key in global insertion order: lets tests
  /// compare both ends of a link without exposing key bytes.
  [[nodiscard]] std::string digest_hex() const;

 private:
  /// By insertion sequence number; the nodes (and so the key bytes) live in key memory.
  using Keys = std::map<std::uint64_t, KeyBlock, std::less<>,
                        secure::SecureAllocator<std::pair<const std::uint64_t, KeyBlock>>>;
  using SteadyPoint = std::chrono::steady_clock::time_point;

  /// Looks up every ID in `ids` (all in state `want`, none repeated); nullopt otherwise.
  std::optional<std::vector<Keys::iterator>> find_all(const std::vector<KeyId>& ids, KeyState want);
  /// Removes a key from the index, the state sets and the counters (not from keys_).
  void unlink(Keys::iterator it);
  /// Removes a key entirely (wiped).
  void erase(Keys::iterator it);

  std::string link_id_;
  std::string kma_id_;
  std::string matching_kma_id_;
  std::int64_t capacity_bits_;
  std::int64_t added_bits_total_ = 0;
  std::uint64_t next_seq_ = 0;
  Keys keys_;  ///< global insertion order: digest, newest_id, trim_after
  std::unordered_map<KeyId, Keys::iterator, KeyIdHash> index_;
  std::array<std::map<std::uint64_t, Keys::iterator>, 2> available_;  ///< per parity, oldest first
  std::set<std::pair<SteadyPoint, std::uint64_t>> reserved_;          ///< by lease start
  std::set<std::pair<SteadyPoint, std::uint64_t>> allocated_;         ///< by lease start
  std::array<std::size_t, 3> state_count_{};
  std::array<std::size_t, 2> parity_count_{};
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
