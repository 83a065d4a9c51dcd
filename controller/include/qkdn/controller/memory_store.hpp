// MemoryStore: the Store interface kept in memory, with the same rules as PgStore (the ledger's
// transition rules and idempotency keys, all-or-nothing batches, Conflict and Unavailable), so
// that the service and its tests run without PostgreSQL. Nothing survives the process; a
// controller that must survive a restart uses PgStore.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "qkdn/controller/store.hpp"

namespace qkdn::controller {

/// An in-memory Store. Thread-safe (one mutex); every method is short and never blocks on I/O.
class MemoryStore final : public Store {
 public:
  MemoryStore() = default;

  /// While false every method throws Unavailable, as PgStore does while the database is down
  /// (for tests of the service's outage handling). True at construction.
  void set_available(bool available);

  StoredState load() override;
  bool healthy() override;
  /// 1, 2, 3, ... on this store (a restart of the service on the same MemoryStore sees a larger
  /// epoch than the start before it).
  std::int64_t next_controller_epoch() override;
  void save_topology(const TopologyDoc& doc) override;
  void save_link_config(const LinkConfigRecord& rec) override;
  void delete_link_config(const std::string& link_id) override;
  void save_thresholds(const Thresholds& t) override;
  void save_policy(const PolicyRecord& rec) override;
  void delete_policy(const std::string& src_km, const std::string& dst_km) override;
  void save_schedule(const ScheduleRecord& rec) override;
  void delete_schedule(const std::string& schedule_id) override;
  void save_pinned_route(const PinnedRouteRecord& rec) override;
  void delete_pinned_route(const std::string& src_km, const std::string& dst_km) override;
  void save_sae_constraints(const SaeConstraintRecord& rec) override;
  void delete_sae_constraints(const std::string& src_sae, const std::string& dst_sae) override;
  void save_session(const SessionRecord& rec) override;
  void save_relay(const RelayRecord& rec) override;
  /// The ledger rules of db/migrations (see LedgerEntry): a new key enters reserved or
  /// allocated; reserved -> reserved | allocated | released; allocated -> allocated | consumed |
  /// released; released -> reserved only if never allocated (0004: same link and KMs, any
  /// relay); otherwise consumed and released are final; a key stays with the link and KMs that
  /// first took it, and with its relay except on released -> reserved. ever_allocated is kept
  /// by the store. A violation throws Conflict and applies nothing of the batch.
  void apply_ledger(const std::string& idempotency_key,
                    const std::vector<LedgerEntry>& entries) override;
  bool ledger_batch_committed(const std::string& idempotency_key) override;
  void save_alarm(const Alarm& alarm) override;
  void add_accounting(const AccountingRecord& rec) override;
  std::vector<AccountingRecord> accounting(SysTime from, SysTime to,
                                           const std::string& sae_id) override;
  std::int64_t append_audit(const AuditRecord& rec) override;
  std::vector<AuditRecord> audit(std::int64_t after_id, std::size_t limit) override;
  /// All-or-nothing: body's writes apply together, or (when one throws) none does; the first
  /// failure is rethrown. Reads inside body throw Internal.
  bool write_batch(const std::function<void(Store&)>& body) override;

 private:
  struct Data {
    std::optional<TopologyDoc> topology;
    std::optional<Thresholds> thresholds;
    std::map<std::string, LinkConfigRecord> link_configs;
    std::map<std::pair<std::string, std::string>, PolicyRecord> policies;
    std::map<std::string, ScheduleRecord> schedules;
    std::map<std::pair<std::string, std::string>, PinnedRouteRecord> pinned;
    std::map<std::pair<std::string, std::string>, SaeConstraintRecord> sae_constraints;
    std::map<std::string, SessionRecord> sessions;
    std::map<std::string, RelayRecord> relays;
    std::map<std::string, LedgerEntry> ledger;
    std::set<std::string> ledger_batches;
    std::map<std::uint64_t, Alarm> alarms;
    std::map<std::tuple<SysTime, std::string, std::string>, AccountingRecord> accounting;
    std::vector<AuditRecord> audit;
    std::int64_t next_audit_id = 1;
    std::int64_t last_epoch = 0;
  };
  /// Runs `write` on the data under the lock (inside a batch: on the batch's copy).
  void write(const std::function<void(Data&)>& op);
  void check_available() const;
  void check_not_in_batch(const char* what) const;

  mutable std::recursive_mutex mu_;
  Data data_;
  bool available_ = true;
  // The batch in progress (on the thread holding mu_): its copy, and its first failure.
  std::optional<Data> batch_;
  std::exception_ptr batch_failure_;
};

/// A StoreFactory whose stores all act on `store` (every role, every database thread): the
/// service's state outlives the service as long as `store` does, so a test restarts the service
/// on the same state. `store` must not be null.
StoreFactory memory_store_factory(std::shared_ptr<MemoryStore> store);

}  // namespace qkdn::controller
