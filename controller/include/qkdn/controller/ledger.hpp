// The reservation ledger (Q.4164 7.5/7.6; ck-protocol.md section 6 step 4; DESIGN.md section 3).
//
// The controller never sees key bits: it tracks KMA-key IDs. Per hop of a relay (relay_id, near
// KM, far KM, link) the KM names the key IDs it reserved (0x140B); they then move
//
//   reserved --allocate--> allocated --consume--> consumed      (final)
//   allocated --release / lease expiry--> released              (final)
//   reserved --release / lease expiry--> released --reserve--> reserved  (same hop, new relay)
//
// A key ID is allocated at most once, ever: the ledger remembers every ID it has seen (final IDs
// compactly, 24 bytes for a canonical UUID) and whether it was ever allocated. A reservation
// naming a seen ID is refused, except an ID that was released without ever being allocated and
// is reserved again by the same hop (near KM, far KM, link) under another relay: the KM never
// used it (no 0x4104 can name a key before its allocation), and when the controller releases a
// reservation it tells the KM, which offers the key again (docs/ck-extensions.md "Key
// release"). These are exactly the transition rules the store enforces (db/migrations 0001 and
// 0004: ledger triggers).
//
// Every mutation returns a LedgerBatch: the LedgerEntry rows that changed, in order, with one
// idempotency key, for Store::apply_ledger. Persist batches in the order they were returned; a
// batch with no entries need not be persisted.
//
// Leases: a reservation holds its keys for LedgerConfig::reservation_lease; allocation renews the
// lease to allocation_lease. expire(now) releases every key whose lease has passed.
//
// Single-threaded by contract (controller strand). Pure: no clock is read, time comes as `now`;
// the only randomness (a nonce that makes idempotency keys unique across restarts) comes from the
// injected Random.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "qkdn/controller/clock.hpp"
#include "qkdn/controller/store.hpp"

namespace qkdn::controller {

/// State of one KMA-key in the ledger.
enum class LedgerState { kReserved, kAllocated, kConsumed, kReleased };

/// "reserved" | "allocated" | "consumed" | "released" (LedgerEntry::state).
std::string_view to_string(LedgerState s) noexcept;
/// Parses the names of to_string(LedgerState); throws InvalidArgument.
LedgerState parse_ledger_state(std::string_view s);

/// One hop of one relay: the near-end KM that reserved the keys, the far-end KM it shares them
/// with, and the link (KMA link) that produced them.
struct HopRef {
  std::string relay_id;
  std::string km_id;
  std::string peer_km_id;
  std::string link_id;

  friend bool operator==(const HopRef&, const HopRef&) = default;
};

/// Ledger tuning.
struct LedgerConfig {
  /// A reservation not allocated within this time is released (ck-protocol.md step 4: 10 s).
  Millis reservation_lease{10'000};
  /// Allocation renews the lease to this: it must cover the relay itself (0x4104 .. 0x1405).
  Millis allocation_lease{60'000};
};

/// Per-link key counts. reserved/allocated count keys held now; consumed/released are totals
/// (final states). total() is every key ID the ledger has seen on the link, so with the agent's
/// counts: generated = available + held() + consumed + released.
struct LinkCounters {
  std::uint64_t reserved = 0;
  std::uint64_t allocated = 0;
  std::uint64_t consumed = 0;
  std::uint64_t released = 0;

  [[nodiscard]] std::uint64_t held() const noexcept { return reserved + allocated; }
  [[nodiscard]] std::uint64_t total() const noexcept {
    return reserved + allocated + consumed + released;
  }
  friend bool operator==(const LinkCounters&, const LinkCounters&) = default;
};

/// Ledger changes for Store::apply_ledger, in order, under one idempotency key
/// ("<relay_id>/<step>/<nonce>-<seq>": unique per ledger instance and, through the random nonce,
/// across restarts). Retry an in-doubt batch with the same key.
struct LedgerBatch {
  std::string idempotency_key;
  std::string relay_id;
  std::vector<LedgerEntry> entries;

  [[nodiscard]] bool empty() const noexcept { return entries.empty(); }
};

/// A key the ledger holds now (reserved or allocated).
struct LiveKey {
  HopRef hop;
  LedgerState state = LedgerState::kReserved;
  SysTime lease_expires_at{};
  SysTime updated_at{};
  bool ever_allocated = false;  ///< allocated now or before (LedgerEntry::ever_allocated)
};

/// The reservation ledger. See the file comment for the state machine.
class ReservationLedger {
 public:
  /// `random` must outlive the ledger; it is read once here. Throws InvalidArgument for a
  /// non-positive lease.
  explicit ReservationLedger(Random& random, LedgerConfig config = {});

  [[nodiscard]] const LedgerConfig& config() const noexcept { return config_; }

  /// Why reserve(hop, key_ids) would be refused, or nullopt when it would succeed. The message is
  /// precise ("key ID k1 was already seen (consumed)"). Lets callers that handle peer input turn a
  /// refusal into a value without exceptions. A key released before allocation by the same hop
  /// (any relay) is no problem.
  [[nodiscard]] std::optional<std::string> reserve_problem(
      const HopRef& hop, const std::vector<std::string>& key_ids) const;
  /// Records key IDs the hop's near KM reserved (0x140B), leased until now + reservation_lease.
  /// All or nothing. Throws InvalidArgument (empty list, empty hop field, malformed or repeated
  /// ID) or Conflict (an ID seen before that can_reserve refuses).
  LedgerBatch reserve(const HopRef& hop, const std::vector<std::string>& key_ids, SysTime now);
  /// reserved -> allocated (0x140D OK), lease renewed to now + allocation_lease. Every ID must be
  /// reserved by exactly this hop. All or nothing. Throws InvalidArgument (empty list, repeated
  /// ID), NotFound (an ID never seen) or Conflict (another hop or relay, or not reserved).
  LedgerBatch allocate(const HopRef& hop, const std::vector<std::string>& key_ids, SysTime now);
  /// allocated -> consumed (0x1405 OK). Every ID must be allocated to relay_id. All or nothing.
  /// Throws as allocate.
  LedgerBatch consume(const std::string& relay_id, const std::vector<std::string>& key_ids,
                      SysTime now);
  /// reserved | allocated -> released. Every ID must be live in relay_id. All or nothing.
  /// Throws as allocate.
  LedgerBatch release(const std::string& relay_id, const std::vector<std::string>& key_ids,
                      SysTime now);
  /// Releases every live key of the relay (any hop), in key order. Empty batch when none.
  LedgerBatch release_relay(const std::string& relay_id, SysTime now);
  /// Consumes every live key of the relay. All or nothing: throws Conflict if one is still only
  /// reserved. Empty batch when the relay holds nothing.
  LedgerBatch consume_relay(const std::string& relay_id, SysTime now);
  /// Releases every key whose lease is at or before now: one batch per relay, relays in ID order.
  std::vector<LedgerBatch> expire(SysTime now);

  /// Loads the store's ledger after a restart (must be called on an empty ledger, else Conflict).
  /// Every key ID is remembered with LedgerEntry::ever_allocated (consumed and allocated rows
  /// count as allocated whatever the flag says); consumed/released rows are not live (a released
  /// row never allocated may be reserved again by its hop, see can_reserve); reserved/allocated
  /// rows whose lease has passed (or that have none) are released and returned as batches (one per
  /// relay); the others stay live ("in flight") for RelayTable::restore to settle. Throws
  /// InvalidArgument for a malformed row or a key ID that appears twice.
  std::vector<LedgerBatch> restore(const std::vector<LedgerEntry>& entries, SysTime now);

  /// True when the ledger has seen this key ID (any state).
  [[nodiscard]] bool seen(const std::string& key_id) const;
  /// True when `hop` may reserve this key ID now: never seen, or released without ever having
  /// been allocated and first reserved by the same near KM, far KM and link (any relay).
  [[nodiscard]] bool can_reserve(const HopRef& hop, const std::string& key_id) const;
  /// True when the key can never be reserved again by anyone: consumed, or released after it was
  /// allocated. A KM still holding such a key should discard it (docs/ck-extensions.md).
  [[nodiscard]] bool retired(const std::string& key_id) const;
  /// True when the key was ever allocated (false for an unknown key).
  [[nodiscard]] bool ever_allocated(const std::string& key_id) const;
  /// The state of a key ID, or nullopt when never seen.
  [[nodiscard]] std::optional<LedgerState> state_of(const std::string& key_id) const;
  /// The live (reserved/allocated) key, or nullptr.
  [[nodiscard]] const LiveKey* find_live(const std::string& key_id) const;
  /// The relay's live key IDs, in key order.
  [[nodiscard]] std::vector<std::string> live_keys(const std::string& relay_id) const;
  /// Relays holding live keys, in ID order.
  [[nodiscard]] std::vector<std::string> live_relays() const;
  /// Counts of one link (zeros for a link never seen).
  [[nodiscard]] LinkCounters counters(const std::string& link_id) const;
  /// Counts of every link seen, by link_id.
  [[nodiscard]] const std::map<std::string, LinkCounters>& all_counters() const noexcept {
    return counters_;
  }
  /// Number of key IDs ever seen.
  [[nodiscard]] std::size_t seen_count() const noexcept;
  /// Number of live keys.
  [[nodiscard]] std::size_t live_count() const noexcept { return live_.size(); }
  /// The earliest lease expiry, for the service's timer; nullopt when nothing is live.
  [[nodiscard]] std::optional<SysTime> next_expiry() const;

 private:
  struct Uuid128 {
    std::uint64_t hi = 0;
    std::uint64_t lo = 0;
    friend bool operator==(const Uuid128&, const Uuid128&) = default;
  };
  struct Uuid128Hash {
    std::size_t operator()(const Uuid128& u) const noexcept;
  };
  /// What the ledger remembers of every key ID: its state, whether it was ever allocated, and
  /// its site (the hop without the relay: near KM, far KM, link; an index into sites_).
  struct Seen {
    LedgerState state = LedgerState::kReserved;
    bool ever_allocated = false;
    std::uint32_t site = 0;
  };

  /// The 128 bits of a canonical UUID string (either case).
  static Uuid128 uuid_bits(const std::string& uuid) noexcept;
  LedgerBatch new_batch(const std::string& relay_id, std::string_view step);
  [[nodiscard]] const Seen* find_seen(const std::string& key_id) const;
  /// The site index of a hop (interned on first use).
  std::uint32_t site_of(const HopRef& hop);
  [[nodiscard]] std::optional<std::uint32_t> find_site(const HopRef& hop) const;
  void remember(const std::string& key_id, LedgerState state, bool ever_allocated,
                std::uint32_t site);
  void count(const std::string& link_id, std::optional<LedgerState> from, LedgerState to);
  /// Moves a live key to `to` (any legal target), updating indexes and counters; appends the row.
  void move(const std::string& key_id, LedgerState to, SysTime now, LedgerBatch& batch);
  /// Checks that every ID is live in relay_id (and on hop when given) in one of `from`.
  void check_live(const std::string& what, const std::string& relay_id, const HopRef* hop,
                  const std::vector<std::string>& key_ids,
                  std::initializer_list<LedgerState> from) const;
  static LedgerEntry entry_of(const std::string& key_id, const LiveKey& key, LedgerState state,
                              SysTime now);

  LedgerConfig config_;
  std::string nonce_;
  std::uint64_t seq_ = 0;
  // Every key ID ever seen with its state. Canonical UUIDs (the normal case) are kept as 128-bit
  // values, anything else as strings, so 100k+ IDs cost a few MB.
  std::unordered_map<Uuid128, Seen, Uuid128Hash> seen_uuid_;
  std::unordered_map<std::string, Seen> seen_other_;
  // Sites (near KM, far KM, link joined by '\n') by index, and the index of each.
  std::vector<std::string> sites_;
  std::unordered_map<std::string, std::uint32_t> site_index_;
  // Live keys with their hop, by ID; per-relay and per-lease indexes over them.
  std::unordered_map<std::string, LiveKey> live_;
  std::map<std::string, std::set<std::string>> live_by_relay_;
  std::set<std::pair<SysTime, std::string>> leases_;
  std::map<std::string, LinkCounters> counters_;
};

}  // namespace qkdn::controller
