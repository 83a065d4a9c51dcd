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

// A write that breaks a ledger rule throws inside the batch and dooms it: the writes after it are
// refused, nothing is stored (before or after), and write_batch throws that first failure even
// though body swallowed every error. One write at a time afterwards singles out the culprit.
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
  EXPECT_THROW(store_->write_batch([&](controller::Store& s) {
    s.apply_ledger("b1", {ledger_entry("k3", "r1", "reserved")});
    try {
      conflicting(s);
    } catch (const Conflict&) {
      ++conflicts;
    }
    try {
      fine(s);
    } catch (const Internal&) {
      ++refused;
    }
  }),
               Conflict);
  EXPECT_EQ(conflicts, 1);
  EXPECT_EQ(refused, 1);
  EXPECT_FALSE(store_->ledger_batch_committed("b1"));
  EXPECT_FALSE(store_->ledger_batch_committed("b3"));
  EXPECT_EQ(ledger_rows(), "1");
  // Alone, the good writes commit and the bad one is refused again.
  store_->apply_ledger("b1", {ledger_entry("k3", "r1", "reserved")});
  EXPECT_THROW(conflicting(*store_), Conflict);
  fine(*store_);
  EXPECT_EQ(ledger_rows(), "3");
  EXPECT_EQ(sql("SELECT count(*) FROM ledger WHERE key_id = 'k9'"), "0");
  // A body that lets the failure escape gets it as is.
  EXPECT_THROW(store_->write_batch([&](controller::Store& s) {
    s.save_session({"s1", "SAE-A", "SAE-B", "KM1", "KM2", 1, 0, "zombie",
                    SysTime{std::chrono::seconds{1'700'000'000}},
                    SysTime{std::chrono::seconds{1'700'000'000}}, std::nullopt});
  }),
               InvalidArgument);
  EXPECT_EQ(sql("SELECT count(*) FROM sessions"), "0");
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

// The server kills the connection in the middle of a batch: the next write throws Unavailable,
// nothing of the batch is stored, and the next call reconnects by itself.
TEST_F(DbBatchTest, ConnectionLostMidBatchStoresNothing) {
  bool second_threw = false;
  EXPECT_THROW(store_->write_batch([&](controller::Store& s) {
    s.apply_ledger("b1", {ledger_entry("k1", "r1", "reserved")});
    {
      pqxx::connection admin{dsn_};
      pqxx::work tx{admin};
      tx.exec(
          "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
          " WHERE datname = current_database() AND pid <> pg_backend_pid()");
      tx.commit();
    }
    try {
      s.apply_ledger("b2", {ledger_entry("k2", "r2", "reserved")});
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
    {
      pqxx::connection admin{dsn_};
      pqxx::work tx{admin};
      tx.exec(
          "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
          " WHERE datname = current_database() AND pid <> pg_backend_pid()");
      tx.commit();
    }
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
