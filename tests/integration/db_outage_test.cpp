// Database outages: with PostgreSQL stopped the store throws Unavailable and reports unhealthy;
// once it is back the same PgStore reconnects by itself.
#include <gtest/gtest.h>

#include <chrono>
#include <future>
#include <pqxx/pqxx>
#include <thread>

#include "db_test_support.hpp"
#include "qkdn/db/store_pool.hpp"

namespace qkdn::db::test {
namespace {

using namespace std::chrono_literals;

/// Restarts the server if a test ends while it is stopped.
struct ServerGuard {
  bool stopped = false;
  void stop() {
    PgServer::stop();
    stopped = true;
  }
  void start() {
    PgServer::start();
    stopped = false;
  }
  ~ServerGuard() {
    if (stopped) PgServer::start();
  }
};

// Stopping PostgreSQL turns every call into Unavailable; after a restart the same store works
// again without being rebuilt, and the first call after the restart already succeeds.
TEST_F(DbTest, UnavailableWhileStoppedThenReconnects) {
  if (!PgServer::private_server())
    GTEST_SKIP() << "needs the private server (QKDN_TEST_PG_DSN set)";
  store_->apply_ledger("b1", {ledger_entry("k1", "r1", "reserved")});
  ServerGuard server;
  server.stop();
  EXPECT_FALSE(store_->healthy());
  EXPECT_THROW(store_->load(), Unavailable);
  EXPECT_THROW(store_->apply_ledger("b2", {ledger_entry("k2", "r1", "reserved")}), Unavailable);
  EXPECT_THROW(store_->ledger_batch_committed("b1"), Unavailable);
  EXPECT_THROW(store_->append_audit({0, {}, "a", "b", "", "", "", ""}), Unavailable);
  EXPECT_THROW(PgStore(PgStoreOptions{dsn_}), Unavailable);
  server.start();
  EXPECT_TRUE(store_->ledger_batch_committed("b1"));
  EXPECT_TRUE(store_->healthy());
  store_->apply_ledger("b2", {ledger_entry("k2", "r1", "reserved")});
  EXPECT_EQ(store_->load().ledger.size(), 2u);
}

// A restart while the store is idle is invisible: the dead connection is noticed before a
// statement is sent and replaced.
TEST_F(DbTest, IdleRestartIsTransparent) {
  if (!PgServer::private_server())
    GTEST_SKIP() << "needs the private server (QKDN_TEST_PG_DSN set)";
  EXPECT_TRUE(store_->healthy());
  {
    ServerGuard server;
    server.stop();
    server.start();
  }
  EXPECT_NO_THROW(store_->load());
}

// A connection killed by the server mid-session (pg_terminate_backend) is replaced on the next
// call.
TEST_F(DbTest, TerminatedBackendIsReplaced) {
  EXPECT_TRUE(store_->healthy());
  terminate_other_backends();
  std::this_thread::sleep_for(50ms);
  bool ok = false;
  for (int i = 0; i < 2 && !ok; ++i) {
    try {
      store_->apply_ledger("b1", {ledger_entry("k1", "r1", "reserved")});
      ok = true;
    } catch (const Unavailable&) {
    }
  }
  EXPECT_TRUE(ok);
  EXPECT_TRUE(store_->ledger_batch_committed("b1"));
}

// A safe operation submitted with retry rides out a short outage.
TEST_F(DbTest, PoolRetryRidesOutShortOutage) {
  if (!PgServer::private_server())
    GTEST_SKIP() << "needs the private server (QKDN_TEST_PG_DSN set)";
  StorePool::Options options;
  options.threads = 2;  // the unsafe job must not wait behind the retrying one
  options.retry = RetryPolicy{20, 50ms, 400ms};
  StorePool pool{[dsn = dsn_] { return std::make_unique<PgStore>(PgStoreOptions{dsn}); }, options};
  EXPECT_TRUE(pool.submit([](controller::Store& s) { return s.healthy(); }).get());
  ServerGuard server;
  server.stop();
  auto batch = pool.apply_ledger("b1", {ledger_entry("k1", "r1", "reserved")});
  auto unsafe = pool.submit_with_retry(RetrySafety::kNever, [](controller::Store& s) {
    return s.append_audit({0, {}, "a", "b", "", "", "", ""});
  });
  std::this_thread::sleep_for(300ms);
  server.start();
  EXPECT_NO_THROW(batch.get());
  EXPECT_THROW(unsafe.get(), Unavailable);
  EXPECT_TRUE(store_->ledger_batch_committed("b1"));
}

}  // namespace
}  // namespace qkdn::db::test
