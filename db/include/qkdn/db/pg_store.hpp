// PostgreSQL implementation of the core's Store (DESIGN.md section 8), on libpqxx. The libpqxx
// headers stay private to db/: callers see only this class and qkdn errors.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "qkdn/controller/store.hpp"
#include "qkdn/db/leader_lease.hpp"

namespace pqxx {
class dbtransaction;
class transaction_base;
}  // namespace pqxx

namespace qkdn::db {

/// One embedded schema migration (db/migrations/NNNN_name.sql, compiled into the binary).
struct Migration {
  int version = 0;   ///< NNNN
  std::string name;  ///< file name without .sql, e.g. "0001_initial"
  std::string sql;
};

/// The migrations compiled into this binary, ascending version.
const std::vector<Migration>& embedded_migrations();

/// Settings of a PgStore.
struct PgStoreOptions {
  /// libpq connection string or URI, e.g. "postgresql://postgres@127.0.0.1:5432/qkdn".
  std::string dsn;
  /// Apply pending migrations when the store is constructed.
  bool migrate = true;
  /// load() returns every open session/relay and every active alarm, plus at most this many of
  /// the most recently updated finished sessions, finished relays and cleared alarms.
  std::size_t history_limit = 10000;
  /// High availability: every write transaction first checks that this controller still holds
  /// the lease in fence->epoch (leader_lease.hpp) and fails with Conflict ("store: fenced: ...")
  /// when it does not. Null: a single controller, no check.
  std::shared_ptr<const Fence> fence{};
  /// With a fence: the server ends a session of this store that stays idle inside a transaction
  /// for this long (idle_in_transaction_session_timeout), so that a leader partitioned from the
  /// database mid-write (holding the lease row FOR SHARE) cannot hold a takeover up. 0: never.
  std::chrono::milliseconds fence_idle_timeout{1000};
};

/// `dsn` with connect_timeout=5 unless it names one (a URI or key=value string).
std::string with_connect_timeout(const std::string& dsn);

/// Store on one PostgreSQL connection. Not thread-safe: a PgStore (and its connection) belongs to
/// the one thread that calls it; StorePool gives each database thread its own.
///
/// Errors: database unreachable or the connection lost → Unavailable (the next call reconnects
/// by itself; a connection found dead before a statement was sent is replaced transparently);
/// unique or ledger-rule violations → Conflict; check, not-null, foreign-key and bad-data
/// violations → InvalidArgument. Every write is one transaction.
class PgStore final : public controller::Store {
 public:
  /// Connects and, if options.migrate, applies pending migrations (migrate()). Throws
  /// Unavailable when the database cannot be reached, Internal when the database holds a newer
  /// schema than this binary knows.
  explicit PgStore(PgStoreOptions options);
  ~PgStore() override;
  PgStore(const PgStore&) = delete;
  PgStore& operator=(const PgStore&) = delete;

  /// Applies the embedded migrations the database lacks, all in one transaction serialised
  /// across processes by an advisory lock, recording each in schema_version. Returns how many
  /// were applied (0 when up to date). Throws as the constructor.
  int migrate();
  /// The versions recorded in schema_version, ascending.
  std::vector<int> schema_versions();

  controller::StoredState load() override;
  bool healthy() override;
  /// The next controller epoch (ck-protocol.md clause 2): nextval of the sequence of migration
  /// 0005. Every call returns a larger value than any call before it, in any process, whatever
  /// the wall clock says. Throws as the constructor.
  std::int64_t next_controller_epoch() override;

  void save_topology(const controller::TopologyDoc& doc) override;
  void save_link_config(const controller::LinkConfigRecord& rec) override;
  void delete_link_config(const std::string& link_id) override;
  void save_thresholds(const controller::Thresholds& t) override;

  void save_policy(const controller::PolicyRecord& rec) override;
  void delete_policy(const std::string& src_km, const std::string& dst_km) override;
  void save_schedule(const controller::ScheduleRecord& rec) override;
  void delete_schedule(const std::string& schedule_id) override;
  void save_pinned_route(const controller::PinnedRouteRecord& rec) override;
  void save_sae_constraints(const controller::SaeConstraintRecord& rec) override;
  void delete_sae_constraints(const std::string& src_sae, const std::string& dst_sae) override;
  void delete_pinned_route(const std::string& src_km, const std::string& dst_km) override;

  void save_session(const controller::SessionRecord& rec) override;
  void save_relay(const controller::RelayRecord& rec) override;

  /// Rules (enforced by the database): a new key_id enters as reserved or allocated; reserved →
  /// reserved (lease renewal) | allocated | released; allocated → allocated | consumed |
  /// released; consumed and released are final; a key stays with its relay, link and KMs. Any
  /// breach throws Conflict and nothing of the batch is applied.
  void apply_ledger(const std::string& idempotency_key,
                    const std::vector<controller::LedgerEntry>& entries) override;
  bool ledger_batch_committed(const std::string& idempotency_key) override;

  void save_alarm(const controller::Alarm& alarm) override;
  void add_accounting(const controller::AccountingRecord& rec) override;
  std::vector<controller::AccountingRecord> accounting(SysTime from, SysTime to,
                                                       const std::string& sae_id) override;
  std::int64_t append_audit(const controller::AuditRecord& rec) override;
  std::vector<controller::AuditRecord> audit(std::int64_t after_id, std::size_t limit) override;

  /// One transaction for every write of body (see Store).
  bool write_batch(const std::function<void(controller::Store&)>& body) override;

 private:
  struct Conn;
  /// Runs fn(connection) and maps whatever it throws to a qkdn::Error (see fail()).
  template <class F>
  auto run(const char* what, F&& fn, bool prepare = true);
  /// The live connection, opened (and its statements prepared) on demand.
  Conn& connection(bool prepare);
  /// Rethrows the exception being handled as a qkdn::Error; drops a dead connection.
  [[noreturn]] void fail(const char* what);
  /// Runs fn(transaction) as one write: its own transaction, or on the transaction of the current
  /// write_batch. `pipelined`: fn only appends statements through pending() (exec_write in
  /// pg_store.cpp), or sends what is pending before it needs an answer. Errors as run().
  template <class F>
  auto write(const char* what, F&& fn, bool pipelined = false);
  /// The open batch's statement text not yet sent (nullptr outside a batch).
  std::string* pending();
  /// Throws Conflict when options_.fence is set and no longer holds (see PgStoreOptions).
  void check_fence(pqxx::transaction_base& tx);
  /// Sends the pending statements on tx in one round trip.
  void flush_pending(pqxx::transaction_base& tx);
  /// fail(what), remembering the error as the batch's first failure.
  [[noreturn]] void batch_fail(const char* what);
  /// Forgets the connection (at once, or when the current batch ends).
  void drop_connection();
  /// A connection that is not being dropped.
  bool live() const;

  PgStoreOptions options_;
  std::unique_ptr<Conn> conn_;
  pqxx::dbtransaction* batch_ = nullptr;  ///< the open write_batch transaction
  bool drop_after_batch_ = false;
  std::exception_ptr batch_failure_;  ///< the first write of the open batch that failed
  std::string pending_;               ///< the open batch's pipelined statements, not yet sent
};

/// `dsn` with its password replaced by "***" (for log lines and errors).
std::string redact_dsn(const std::string& dsn);

/// The StoreFactory of a PostgreSQL database (what `main` passes to the service for
/// --store-dsn): the start-up store applies pending migrations, the workers' stores do not.
/// Connects only when the factory is called.
controller::StoreFactory pg_store_factory(std::string dsn);
/// The same, with every write fenced on `fence` (high availability: PgStoreOptions::fence).
controller::StoreFactory pg_store_factory(std::string dsn, std::shared_ptr<const Fence> fence);

}  // namespace qkdn::db
