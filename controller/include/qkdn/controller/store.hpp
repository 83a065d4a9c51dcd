// The core's persistence interface (DESIGN.md section 8). The core owns this interface; db/
// implements it with PostgreSQL (PgStore) and tests may use MemoryStore. Records are plain data:
// IDs, counts, states and times — never key material.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "qkdn/controller/alarms.hpp"
#include "qkdn/controller/clock.hpp"
#include "qkdn/controller/network.hpp"
#include "qkdn/controller/topology.hpp"

namespace qkdn::controller {

/// Operator configuration of one link beyond the topology document.
struct LinkConfigRecord {
  std::string link_id;
  std::string admin_state = "enabled";  ///< enabled | disabled | maintenance
  std::optional<double> qber_threshold;
  std::optional<std::uint64_t> pool_floor_bits;
};

/// A rerouting policy: network-wide (src and dst empty) or an override for one KM pair.
struct PolicyRecord {
  std::string src_km;  ///< empty = network-wide
  std::string dst_km;
  std::string mode;                       ///< manual | fixed_rate | traffic_adaptive | scheduled
  std::map<std::string, double> params;   ///< mode parameters (e.g. "interval_s", "threshold")
  std::vector<std::string> avoid_tags{};  ///< trust: tags no intermediate KM of a route may carry
};

/// Trust constraints of one SAE pair (directional: relays for sessions from src_sae to dst_sae),
/// applied on top of the constraints of the KM pair's policy.
struct SaeConstraintRecord {
  std::string src_sae;
  std::string dst_sae;
  std::optional<std::int64_t> max_intermediates;  ///< none = no limit
  std::int64_t min_trust_level = 0;               ///< 0 = any
  std::vector<std::string> avoid_tags;
  SysTime updated_at{};
};

/// A scheduled relay window (scheduled mode).
struct ScheduleRecord {
  std::string schedule_id;  ///< UUID
  std::string src_km;
  std::string dst_km;
  std::int64_t number_of_keys = 0;
  std::int64_t key_size_bits = 256;
  SysTime not_before{};
  SysTime not_after{};
  SysTime created_at{};
};

/// An operator-pinned route (manual mode).
struct PinnedRouteRecord {
  std::string src_km;
  std::string dst_km;
  std::vector<std::string> kms;    ///< src ... dst
  std::vector<std::string> links;  ///< one per hop; may be empty = any link between the KMs
  SysTime created_at{};
};

/// A key-supply session (Q.4164 7.3/7.4).
struct SessionRecord {
  std::string session_id;  ///< UUID
  std::string src_sae;
  std::string dst_sae;
  std::string src_km;
  std::string dst_km;
  std::int64_t keys_requested = 0;
  std::int64_t keys_delivered = 0;
  std::string state;  ///< pending | active | closed | expired | failed
  SysTime created_at{};
  SysTime updated_at{};
  std::optional<SysTime> expires_at;
};

/// A key relay along a route (Q.4164 7.2, 7.5, 7.6).
struct RelayRecord {
  std::string relay_id;    ///< key_relay_request_id (UUID)
  std::string session_id;  ///< may be empty (instruction-driven relays)
  std::string src_km;
  std::string dst_km;
  std::vector<std::string> route_kms;
  std::vector<std::string> route_links;
  std::int64_t number_of_keys = 0;
  std::int64_t key_size_bits = 256;
  std::string state;   ///< requested | reserved | relaying | relayed | failed | voided
  std::string reason;  ///< failure / void reason
  SysTime created_at{};
  SysTime updated_at{};
};

/// One KMA-key in the reservation ledger (Q.4164 7.5/7.6). A key ID appears at most once, ever.
struct LedgerEntry {
  std::string key_id;  ///< UUID named by the KM
  std::string link_id;
  std::string km_id;       ///< near-end KM of the hop that reserved it
  std::string peer_km_id;  ///< far-end KM of the hop
  std::string relay_id;
  std::string state;                        ///< reserved | allocated | consumed | released
  std::optional<SysTime> lease_expires_at;  ///< set while reserved/allocated
  SysTime updated_at{};
  /// True once the key was allocated (it then stays true). A released key that was never
  /// allocated may be reserved again by the same hop (near KM, far KM, link) under a new relay;
  /// one that was allocated never comes back (db/migrations/0004).
  bool ever_allocated = false;
};

/// Key bytes delivered, per application and session, per time bucket.
struct AccountingRecord {
  SysTime bucket_start{};  ///< start of the bucket (buckets are whole minutes)
  std::string sae_id;
  std::string session_id;
  std::int64_t key_bytes = 0;
  std::int64_t keys = 0;
};

/// One audit event: every operator write and every authentication failure. Append-only.
struct AuditRecord {
  std::int64_t id = 0;  ///< assigned by the store
  SysTime at{};
  std::string actor;   ///< token name, "anonymous", or a KM/SAE ID
  std::string action;  ///< e.g. "PUT /api/v1/topology", "auth_failure"
  std::string resource;
  std::string outcome;  ///< e.g. "200", "401"
  std::string detail;
  std::string remote;  ///< peer address
};

/// Everything the controller reloads on start.
struct StoredState {
  std::optional<TopologyDoc> topology;
  std::optional<Thresholds> thresholds;  ///< network-wide; none saved = built-in defaults
  std::vector<LinkConfigRecord> link_configs;
  std::vector<PolicyRecord> policies;
  std::vector<ScheduleRecord> schedules;
  std::vector<PinnedRouteRecord> pinned_routes;
  std::vector<SaeConstraintRecord> sae_constraints{};
  std::vector<SessionRecord> sessions;
  std::vector<RelayRecord> relays;
  std::vector<LedgerEntry> ledger;  ///< entries not yet consumed/released, plus all key IDs seen
  std::vector<Alarm> alarms;        ///< active alarms and recent history
  std::uint64_t next_alarm_id = 1;
};

/// Persistence. Every method is synchronous and may block: the service layer calls it from the
/// store's own thread pool, never from the controller strand. A method that cannot complete
/// throws Unavailable (database unreachable; the write may or may not have committed unless the
/// method says it is idempotent), Conflict (a constraint was violated), or InvalidArgument.
class Store {
 public:
  virtual ~Store() = default;

  /// Loads everything the controller needs after a restart.
  virtual StoredState load() = 0;
  /// True when the database answers a trivial query now.
  virtual bool healthy() = 0;
  /// The next controller epoch (ck-protocol.md clause 2): every call returns a larger value than
  /// any call before it on the same stored state (PgStore: a database sequence; MemoryStore: a
  /// counter), whatever the wall clock says.
  virtual std::int64_t next_controller_epoch() = 0;

  /// Replaces the stored topology (one transaction).
  virtual void save_topology(const TopologyDoc& doc) = 0;
  virtual void save_link_config(const LinkConfigRecord& rec) = 0;
  virtual void delete_link_config(const std::string& link_id) = 0;
  /// Replaces the network-wide thresholds (QBER threshold, pool floor, QBER hysteresis).
  /// Idempotent. Out-of-range values throw InvalidArgument.
  virtual void save_thresholds(const Thresholds& t) = 0;

  /// Upserts the policy of its scope.
  virtual void save_policy(const PolicyRecord& rec) = 0;
  virtual void delete_policy(const std::string& src_km, const std::string& dst_km) = 0;
  virtual void save_schedule(const ScheduleRecord& rec) = 0;
  virtual void delete_schedule(const std::string& schedule_id) = 0;
  virtual void save_pinned_route(const PinnedRouteRecord& rec) = 0;
  virtual void delete_pinned_route(const std::string& src_km, const std::string& dst_km) = 0;
  /// Upserts / removes the trust constraints of an SAE pair (removing an absent pair is a no-op).
  virtual void save_sae_constraints(const SaeConstraintRecord& rec) = 0;
  virtual void delete_sae_constraints(const std::string& src_sae, const std::string& dst_sae) = 0;

  /// Upserts a session / relay by ID.
  virtual void save_session(const SessionRecord& rec) = 0;
  virtual void save_relay(const RelayRecord& rec) = 0;

  /// Applies ledger changes in one transaction. Idempotent under `idempotency_key`: applying the
  /// same key twice is a no-op the second time, so an in-doubt commit can be retried. A new
  /// key_id that already exists in the ledger in another relay throws Conflict (a key ID is never
  /// allocated twice).
  virtual void apply_ledger(const std::string& idempotency_key,
                            const std::vector<LedgerEntry>& entries) = 0;
  /// True when a ledger batch with this key has committed.
  virtual bool ledger_batch_committed(const std::string& idempotency_key) = 0;

  virtual void save_alarm(const Alarm& alarm) = 0;
  /// Adds to the bucket (key_bytes and keys are added to what is stored).
  virtual void add_accounting(const AccountingRecord& rec) = 0;
  /// Accounting rows in [from, to), optionally for one SAE, ordered by bucket then SAE.
  virtual std::vector<AccountingRecord> accounting(SysTime from, SysTime to,
                                                   const std::string& sae_id) = 0;
  /// Appends an audit record; returns its id.
  virtual std::int64_t append_audit(const AuditRecord& rec) = 0;
  /// Audit records with id > after_id, ascending, at most `limit`.
  virtual std::vector<AuditRecord> audit(std::int64_t after_id, std::size_t limit) = 0;

  /// Group commit: runs body(store) with every write it makes in one transaction, and returns
  /// true once that transaction committed. A write that fails inside body dooms the batch: its
  /// error is thrown there, or (a store may send writes together) at a later write or by
  /// write_batch; writes after it are refused (Internal); nothing commits; and write_batch
  /// throws the first failure even if body swallowed it (the caller may then write one call at
  /// a time to single out the culprit). Unavailable from the commit itself (after body
  /// returned) leaves the whole batch in doubt. Reads are not allowed inside body. A store
  /// without transactions returns false at once without running body (the default): the
  /// caller then writes one call at a time.
  virtual bool write_batch(const std::function<void(Store&)>& body) {
    static_cast<void>(body);
    return false;
  }
};

/// Which store a StoreFactory is asked for.
enum class StoreRole {
  kStartup,  ///< the one store of start-up: may apply schema migrations, loads, takes the epoch
  kWorker,   ///< the store of one database thread (one connection each)
};

/// How the service reaches its store. `main` chooses it (db::pg_store_factory for PostgreSQL);
/// tests pass memory_store_factory (memory_store.hpp). Empty (no `open`): no persistence.
struct StoreFactory {
  /// Names the store in log lines and errors, without secrets ("PostgreSQL at
  /// postgresql://qkdn:***@db/qkdn").
  std::string description;
  /// Opens one store for `role`; called on the thread that will use it (the service's
  /// constructor for kStartup, each database thread for kWorker). Throws Unavailable when the
  /// store cannot be reached.
  std::function<std::unique_ptr<Store>(StoreRole role)> open;

  explicit operator bool() const noexcept { return static_cast<bool>(open); }
};

}  // namespace qkdn::controller
