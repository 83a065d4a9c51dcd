// Group commit (Store::write_batch) on PostgreSQL: the writes of one batch commit together or not
// at all; a write that breaks a rule dooms its batch (later writes refused, nothing stored, the
// first failure thrown even when swallowed); a connection lost mid-batch stores nothing and the
// next call reconnects.
#include <gtest/gtest.h>

#include <pqxx/pqxx>
#include <stdexcept>

#include "db_test_support.hpp"
#include "qkdn/db/store_pool.hpp"

namespace qkdn::db::test {
namespace {

class DbBatchTest : public DbTest {
 protected:
  std::string ledger_rows() const { return sql("SELECT count(*) FROM ledger"); }
  std::string batches() const { return sql("SELECT count(*) FROM ledger_batches"); }
  std::string audit_rows() const { return sql("SELECT count(*) FROM audit"); }
  static controller::AuditRecord audit_record(const std::string& action) {
    return {0, SysTime{std::chrono::seconds{1'700'000'000}}, "admin", action, "", "200", "", ""};
  }
};

// Nothing of a batch is visible to others before it returns; everything is after.
TEST_F(DbBatchTest, WritesCommitTogether) {
  std::string seen_inside_ledger;
  std::string seen_inside_audit;
  const bool ran = store_->write_batch([&](controller::Store& s) {
    s.apply_ledger("b1", {ledger_entry("k1", "r1", "reserved")});
    s.apply_ledger("b2", {ledger_entry("k2", "r2", "reserved")});
    s.append_audit(audit_record("POST /x"));
    seen_inside_ledger = ledger_rows();
    seen_inside_audit = audit_rows();
  });
  EXPECT_TRUE(ran);
  EXPECT_EQ(seen_inside_ledger, "0");
  EXPECT_EQ(seen_inside_audit, "0");
  EXPECT_EQ(ledger_rows(), "2");
  EXPECT_EQ(audit_rows(), "1");
  EXPECT_TRUE(store_->ledger_batch_committed("b1"));
  EXPECT_TRUE(store_->ledger_batch_committed("b2"));
}

// Inside a batch PgStore sends the hot writes (sessions, relays, ledger, alarms, accounting) as
// SQL EXECUTE with quoted literals, all in one round trip: they must store exactly what the same
// writes store one at a time — awkward text, arrays, NULLs, doubles and booleans included.
TEST_F(DbBatchTest, PipelinedWritesStoreWhatSingleWritesStore) {
  const SysTime t0{std::chrono::seconds{1'700'000'000}};
  const std::string awkward = "it's \"odd\" \\ {a,b} NULL\nline 2 \u00e9\u6f22 ;--";
  const auto writes = [&](controller::Store& s) {
    s.save_session({"s'1", "SAE-A", "SAE-B", "KM1", "KM3", 8, 0, "active", t0, t0,
                    t0 + std::chrono::seconds{30}});
    s.save_session({"s2", awkward, "SAE-B", "KM1", "KM3", 1, 1, "closed", t0, t0, std::nullopt});
    controller::RelayRecord r;
    r.relay_id = "r1";
    r.session_id = "s'1";
    r.src_km = "KM1";
    r.dst_km = "KM3";
    r.route_kms = {"KM1", "K\"M,2}", "KM3"};
    r.route_links = {"L{12}", "L 23"};
    r.number_of_keys = 8;
    r.key_size_bits = 256;
    r.state = "failed";
    r.reason = awkward;
    r.created_at = t0;
    r.updated_at = t0 + std::chrono::microseconds{1};
    s.save_relay(r);
    s.apply_ledger("b'1",
                   {ledger_entry("k1", "r1", "reserved"), ledger_entry("k2", "r1", "reserved")});
    s.apply_ledger("b2", {});
    s.apply_ledger("b3", {ledger_entry("k3", "r1", "reserved"),
                          ledger_entry("k3", "r1", "allocated")});  // one key moved twice
    controller::Alarm a;
    a.id = 7;
    a.type = "qber_high";
    a.resource = "L'12";
    a.link_id = "L'12";
    a.severity = controller::Severity::kMinor;
    a.acknowledged = true;
    a.acknowledged_by = awkward;
    a.acknowledged_at = t0 + std::chrono::seconds{5};
    a.raised_at = t0;
    a.updated_at = t0;
    a.last_value = 0.1234567890123456789;
    a.text = awkward;
    a.count = 3;
    s.save_alarm(a);
    a.id = 8;
    a.resource = "L23";
    a.state = controller::AlarmState::kCleared;
    a.acknowledged = false;
    a.cleared_at = t0 + std::chrono::seconds{9};
    a.last_value = -1.5e-300;
    s.save_alarm(a);
    s.add_accounting({t0, "SAE-A", "s'1", 64, 2});
    s.add_accounting({t0, "SAE-A", "s'1", 32, 1});
  };
  writes(*store_);
  const auto other = PgServer::fresh_database();
  PgStore batched{PgStoreOptions{other}};
  ASSERT_TRUE(batched.write_batch(writes));
  const auto dump = [](const std::string& dsn, const std::string& table) {
    pqxx::connection c{dsn};
    pqxx::work tx{c};
    return tx
        .exec1("SELECT coalesce(string_agg(t::text, E'\\n' ORDER BY t::text), '') FROM " + table +
               " t")[0]
        .as<std::string>();
  };
  for (const char* table :
       {"sessions", "relays", "ledger", "alarms", "accounting",
        "(SELECT idempotency_key, entries FROM ledger_batches)"}) {  // not committed_at
    const auto single = dump(dsn_, table);
    EXPECT_FALSE(single.empty()) << table;
    EXPECT_EQ(dump(other, table), single) << table;
  }
  EXPECT_EQ(sql("SELECT keys FROM accounting"), "3");
}

// A write that breaks a ledger rule dooms its batch. PgStore sends the ledger write with the
// others (pipelined), so its Conflict surfaces at the next write that needs an answer (an audit
// append); the writes after that are refused; nothing is stored, before or after; and
// write_batch throws the Conflict even though body swallowed every error. One write at a time
// afterwards singles out the culprit.
TEST_F(DbBatchTest, RuleBreakingWriteDoomsTheBatch) {
  store_->apply_ledger("b0", {ledger_entry("k1", "r1", "reserved")});
  int conflicts = 0;
  int refused = 0;
  const auto conflicting = [](controller::Store& s) {
    s.apply_ledger("b2", {ledger_entry("k9", "r2", "reserved"),
                          ledger_entry("k1", "r2", "reserved")});  // k1 is r1's
  };
  const auto fine = [](controller::Store& s) {
    s.apply_ledger("b3", {ledger_entry("k2", "r3", "reserved")});
  };
  const auto count = [&](auto&& write) {
    try {
      write();
    } catch (const Conflict&) {
      ++conflicts;
    } catch (const Internal&) {
      ++refused;
    }
  };
  EXPECT_THROW(store_->write_batch([&](controller::Store& s) {
    s.apply_ledger("b1", {ledger_entry("k3", "r1", "reserved")});
    count([&] { conflicting(s); });
    count([&] { s.append_audit(audit_record("POST /z")); });
    count([&] { fine(s); });
  }),
               Conflict);
  EXPECT_EQ(conflicts, 1);
  EXPECT_EQ(refused, 1);
  EXPECT_FALSE(store_->ledger_batch_committed("b1"));
  EXPECT_FALSE(store_->ledger_batch_committed("b3"));
  EXPECT_EQ(ledger_rows(), "1");
  EXPECT_EQ(audit_rows(), "0");
  // Alone, the good writes commit and the bad one is refused again.
  store_->apply_ledger("b1", {ledger_entry("k3", "r1", "reserved")});
  EXPECT_THROW(conflicting(*store_), Conflict);
  fine(*store_);
  EXPECT_EQ(ledger_rows(), "3");
  EXPECT_EQ(sql("SELECT count(*) FROM ledger WHERE key_id = 'k9'"), "0");
  // A rule broken by the last write surfaces from write_batch itself.
  EXPECT_THROW(store_->write_batch([&](controller::Store& s) {
    s.apply_ledger("b4", {ledger_entry("k4", "r4", "reserved")});
    s.save_session({"s1", "SAE-A", "SAE-B", "KM1", "KM2", 1, 0, "zombie",
                    SysTime{std::chrono::seconds{1'700'000'000}},
                    SysTime{std::chrono::seconds{1'700'000'000}}, std::nullopt});
  }),
               InvalidArgument);
  EXPECT_EQ(sql("SELECT count(*) FROM sessions"), "0");
  EXPECT_FALSE(store_->ledger_batch_committed("b4"));
  EXPECT_TRUE(store_->write_batch(
      [&](controller::Store& s) { s.apply_ledger("b4", {ledger_entry("k4", "r4", "reserved")}); }));
  EXPECT_EQ(ledger_rows(), "4");
}

// A body that throws stores nothing, and the store is usable at once afterwards.
TEST_F(DbBatchTest, ThrowingBodyStoresNothing) {
  EXPECT_THROW(store_->write_batch([&](controller::Store& s) {
    s.apply_ledger("b1", {ledger_entry("k1", "r1", "reserved")});
    throw Unavailable("test: give up");
  }),
               Unavailable);
  EXPECT_THROW(store_->write_batch([&](controller::Store& s) {
    s.append_audit(audit_record("POST /y"));
    throw std::runtime_error("test: bug");
  }),
               Internal);
  EXPECT_EQ(ledger_rows(), "0");
  EXPECT_EQ(audit_rows(), "0");
  EXPECT_FALSE(store_->ledger_batch_committed("b1"));
  store_->apply_ledger("b1", {ledger_entry("k1", "r1", "reserved")});
  EXPECT_EQ(ledger_rows(), "1");
}

// The server kills the connection in the middle of a batch: the next write that talks to the
// server throws Unavailable, nothing of the batch is stored, and the next call reconnects.
TEST_F(DbBatchTest, ConnectionLostMidBatchStoresNothing) {
  bool second_threw = false;
  EXPECT_THROW(store_->write_batch([&](controller::Store& s) {
    s.apply_ledger("b1", {ledger_entry("k1", "r1", "reserved")});
    terminate_other_backends();
    try {
      s.append_audit(audit_record("POST /w"));  // needs an answer: sends what is pending
    } catch (const Unavailable&) {
      second_threw = true;
      throw;
    }
  }),
               Unavailable);
  EXPECT_TRUE(second_threw);
  EXPECT_EQ(ledger_rows(), "0");
  store_->write_batch(
      [](controller::Store& s) { s.apply_ledger("b1", {ledger_entry("k1", "r1", "reserved")}); });
  EXPECT_EQ(ledger_rows(), "1");
}

// Even when the body swallows the Unavailable of a lost connection, the batch does not commit.
TEST_F(DbBatchTest, SwallowedConnectionLossStillFailsTheBatch) {
  EXPECT_THROW(store_->write_batch([&](controller::Store& s) {
    s.apply_ledger("b1", {ledger_entry("k1", "r1", "reserved")});
    terminate_other_backends();
    for (const char* key : {"b2", "b3"}) {
      try {
        s.apply_ledger(key, {ledger_entry(std::string{"k"} + key, "r2", "reserved")});
      } catch (const Error&) {
        // b2: Unavailable (the connection is gone); b3: refused (Internal)
      }
    }
  }),
               Unavailable);
  EXPECT_EQ(ledger_rows(), "0");
  EXPECT_NO_THROW(store_->load());
}

// Batches do not nest; the outer one still commits what it wrote.
TEST_F(DbBatchTest, BatchesDoNotNest) {
  store_->write_batch([&](controller::Store& s) {
    s.apply_ledger("b1", {ledger_entry("k1", "r1", "reserved")});
    EXPECT_THROW(s.write_batch([](controller::Store&) {}), Internal);
  });
  EXPECT_EQ(ledger_rows(), "1");
}

// The pool's per-thread store forwards batches; a store without transactions declines them
// without running the body.
TEST_F(DbBatchTest, PoolForwardsAndPlainStoresDecline) {
  StorePool pool{[dsn = dsn_] { return std::make_unique<PgStore>(PgStoreOptions{dsn, false}); }};
  const bool ran = pool.submit([](controller::Store& s) {
                         return s.write_batch([](controller::Store& inner) {
                           inner.apply_ledger("b1", {ledger_entry("k1", "r1", "reserved")});
                           inner.apply_ledger("b2", {ledger_entry("k2", "r1", "reserved")});
                         });
                       })
                       .get();
  EXPECT_TRUE(ran);
  EXPECT_EQ(ledger_rows(), "2");

  ForwardingStore plain{*store_};
  bool body_ran = false;
  EXPECT_FALSE(plain.write_batch([&](controller::Store&) { body_ran = true; }));
  EXPECT_FALSE(body_ran);
}

}  // namespace
}  // namespace qkdn::db::test
