// Per-link key store of an emulated KM: KMA-keys with the metadata of Y.3803 Table 1, item (2).
// Pure code, no I/O. Key bytes are wiped when a key is freed and never leave the store except
// through the KMA link to the peer KM (see kma_wire.hpp).
#pragma once

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <vector>

#include "qkdn/controller/clock.hpp"

namespace qkdn::agent {

/// Size of every emulated key: 256 bits.
inline constexpr std::size_t kKeyBytes = 32;
inline constexpr std::int64_t kKeyBits = 256;

/// A KMA-key ID: the 16 bytes of a random UUIDv4 (never derived from key bytes).
using KeyId = std::array<std::uint8_t, 16>;

/// Canonical lower-case UUID text of an ID.
std::string key_id_to_string(const KeyId& id);
/// Parses canonical UUID text; nullopt when malformed.
std::optional<KeyId> parse_key_id(const std::string& text);

/// Life-cycle state of a stored key: available, reserved (0x410A), allocated (0x410C).
enum class KeyState : std::uint8_t { kAvailable, kReserved, kAllocated };

/// One KMA-key. Y.3803 Table 1 (2): KMA-key ID (`id`), key length (kKeyBits), generation time
/// stamp (`created`). KMA ID, matching KMA ID and link are per store (KeyStore accessors).
/// The destructor wipes the key bytes (OPENSSL_cleanse); copies wipe their own bytes too.
struct KeyBlock {
  KeyId id{};
  SysTime created{};
  KeyState state = KeyState::kAvailable;
  std::chrono::steady_clock::time_point reserved_at{};  ///< when reserved (lease start)
  std::array<std::uint8_t, kKeyBytes> bytes{};

  KeyBlock() = default;
  KeyBlock(const KeyBlock&) = default;
  KeyBlock& operator=(const KeyBlock&) = default;
  ~KeyBlock();
};

/// The keys one KM shares with its peer over one link, oldest first. Single-threaded: owned by
/// the KM's strand. Capacity is advisory: the link's generator pauses while a store is full
/// (so both ends stay identical); push() itself never drops keys.
class KeyStore {
 public:
  /// `kma_id` stores the keys; `matching_kma_id` is the peer; capacity in bytes of key material.
  KeyStore(std::string link_id, std::string kma_id, std::string matching_kma_id,
           std::size_t capacity_bytes);

  [[nodiscard]] const std::string& link_id() const { return link_id_; }
  [[nodiscard]] const std::string& kma_id() const { return kma_id_; }
  [[nodiscard]] const std::string& matching_kma_id() const { return matching_kma_id_; }

  /// Number of stored keys and their bits.
  [[nodiscard]] std::size_t size() const { return keys_.size(); }
  [[nodiscard]] std::int64_t stored_bits() const {
    return static_cast<std::int64_t>(keys_.size()) * kKeyBits;
  }
  [[nodiscard]] std::int64_t capacity_bits() const { return capacity_bits_; }
  /// Bits ever added (monotonic; the rate meter's input).
  [[nodiscard]] std::int64_t added_bits_total() const { return added_bits_total_; }

  /// Appends a key (newest).
  void push(KeyBlock key);
  /// ID of the newest key, if any.
  [[nodiscard]] std::optional<KeyId> newest_id() const;
  /// Drops every key stored after `id`. Returns false (and changes nothing) when `id` is not
  /// stored.
  bool trim_after(const KeyId& id);
  /// Drops every key.
  void clear();
  /// Reserves `n` available keys, oldest first, among those whose ID's first byte has the
  /// parity `parity` (0 or 1: the two ends of a link reserve disjoint halves, so reservations
  /// made at both ends at once never collide). Empty (and nothing changed) when fewer exist.
  std::vector<KeyId> reserve(std::size_t n, int parity, std::chrono::steady_clock::time_point now);
  /// Reserved -> allocated for every ID. False (nothing changed) when an ID is not stored here
  /// or not reserved.
  bool allocate(const std::vector<KeyId>& ids);
  /// Removes and returns the keys with these IDs, in the given order. With `allocated_only`,
  /// every key must be allocated; otherwise every key must be available (the far end of a
  /// hop). nullopt (nothing changed) when an ID is missing, repeated or in another state.
  std::optional<std::vector<KeyBlock>> take(const std::vector<KeyId>& ids, bool allocated_only);
  /// Releases reservations older than `lease` (reserved -> available). Returns how many.
  std::size_t release_expired(std::chrono::steady_clock::time_point now,
                              std::chrono::milliseconds lease);
  /// Number of keys in a state.
  [[nodiscard]] std::size_t count(KeyState state) const;

  /// Hex SHA-256 over (id || bytes) of every stored key in order: lets tests compare both ends
  /// of a link without exposing key bytes.
  [[nodiscard]] std::string digest_hex() const;

 private:
  std::string link_id_;
  std::string kma_id_;
  std::string matching_kma_id_;
  std::int64_t capacity_bits_;
  std::int64_t added_bits_total_ = 0;
  std::deque<KeyBlock> keys_;
  std::size_t reserved_ = 0;  ///< keys in kReserved (lets release_expired skip the scan)
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
