// Shared fixtures of the integration_db tests: a private PostgreSQL for the whole run (a gtest
// Environment), a fresh database per test, and a Store wrapper that injects failures.
#pragma once

#include <gtest/gtest.h>

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "qkdn/controller/error.hpp"
#include "qkdn/controller/store.hpp"
#include "qkdn/db/pg_store.hpp"

namespace qkdn::db::test {

/// The server of this run: started by the environment (scripts/pg-private.sh), or the one named
/// by QKDN_TEST_PG_DSN.
class PgServer {
 public:
  /// DSN of the maintenance database.
  static const std::string& base_dsn();
  /// Creates a new, empty database and returns its DSN.
  static std::string fresh_database();
  /// True when this run started the server itself (so tests may stop and start it).
  static bool private_server();
  /// Stops / starts the private server (same port and data).
  static void stop();
  static void start();
};

/// A fresh database with the schema applied, for one test.
class DbTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dsn_ = PgServer::fresh_database();
    store_ = std::make_unique<PgStore>(PgStoreOptions{dsn_});
  }
  /// Runs SQL outside the store (checks of what is really stored); returns the first column of
  /// the first row, or "" when there is none.
  std::string sql(const std::string& statement) const;
  /// Has the server kill every other connection to this test's database (pg_terminate_backend):
  /// the store's connection breaks under it.
  void terminate_other_backends() const;

  std::string dsn_;
  std::unique_ptr<PgStore> store_;
};

/// Forwards every call to `inner`; subclasses override what they want to break.
class ForwardingStore : public controller::Store {
 public:
  explicit ForwardingStore(controller::Store& inner) : inner_(inner) {}
  controller::StoredState load() override { return inner_.load(); }
  bool healthy() override { return inner_.healthy(); }
  std::int64_t next_controller_epoch() override { return inner_.next_controller_epoch(); }
  void save_topology(const controller::TopologyDoc& d) override { inner_.save_topology(d); }
  void save_link_config(const controller::LinkConfigRecord& r) override {
    inner_.save_link_config(r);
  }
  void delete_link_config(const std::string& id) override { inner_.delete_link_config(id); }
  void save_thresholds(const controller::Thresholds& t) override { inner_.save_thresholds(t); }
  void save_policy(const controller::PolicyRecord& r) override { inner_.save_policy(r); }
  void delete_policy(const std::string& s, const std::string& d) override {
    inner_.delete_policy(s, d);
  }
  void save_schedule(const controller::ScheduleRecord& r) override { inner_.save_schedule(r); }
  void delete_schedule(const std::string& id) override { inner_.delete_schedule(id); }
  void save_pinned_route(const controller::PinnedRouteRecord& r) override {
    inner_.save_pinned_route(r);
  }
  void delete_pinned_route(const std::string& s, const std::string& d) override {
    inner_.delete_pinned_route(s, d);
  }
  void save_sae_constraints(const controller::SaeConstraintRecord& r) override {
    inner_.save_sae_constraints(r);
  }
  void delete_sae_constraints(const std::string& s, const std::string& d) override {
    inner_.delete_sae_constraints(s, d);
  }
  void save_session(const controller::SessionRecord& r) override { inner_.save_session(r); }
  void save_relay(const controller::RelayRecord& r) override { inner_.save_relay(r); }
  void apply_ledger(const std::string& key,
                    const std::vector<controller::LedgerEntry>& entries) override {
    inner_.apply_ledger(key, entries);
  }
  bool ledger_batch_committed(const std::string& key) override {
    return inner_.ledger_batch_committed(key);
  }
  void save_alarm(const controller::Alarm& a) override { inner_.save_alarm(a); }
  void add_accounting(const controller::AccountingRecord& r) override { inner_.add_accounting(r); }
  std::vector<controller::AccountingRecord> accounting(SysTime from, SysTime to,
                                                       const std::string& sae) override {
    return inner_.accounting(from, to, sae);
  }
  std::int64_t append_audit(const controller::AuditRecord& r) override {
    return inner_.append_audit(r);
  }
  std::vector<controller::AuditRecord> audit(std::int64_t after, std::size_t limit) override {
    return inner_.audit(after, limit);
  }

 protected:
  controller::Store& inner_;
};

/// A small valid topology: KM1-KM2-KM3 (+ KM4 on L34), two applications.
controller::TopologyDoc sample_topology();

/// A ledger entry in `state` for key `key_id` of relay `relay_id` on link L12.
controller::LedgerEntry ledger_entry(const std::string& key_id, const std::string& relay_id,
                                     const std::string& state);

}  // namespace qkdn::db::test
