// StorePool and the retry helpers: jobs run on database threads with their own PgStore, results
// and errors come back, and only safe operations are retried.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <set>
#include <thread>

#include "db_test_support.hpp"
#include "qkdn/db/store_pool.hpp"

namespace qkdn::db::test {
namespace {

using namespace std::chrono_literals;

/// Fails chosen calls with Unavailable: `read_failures` load/ledger_batch_committed/audit calls,
/// `write_failures` appends, and apply_ledger either before (nothing done) or after (the commit
/// happened, the answer was lost) forwarding.
class FlakyStore final : public ForwardingStore {
 public:
  using ForwardingStore::ForwardingStore;
  int read_failures = 0;
  int apply_failures_before = 0;
  int apply_failures_after = 0;
  std::atomic<int> reads{0};
  std::atomic<int> appends{0};
  std::atomic<int> applies{0};
  std::atomic<int> committed_checks{0};

  std::vector<controller::AuditRecord> audit(std::int64_t after, std::size_t limit) override {
    ++reads;
    if (read_failures > 0) {
      --read_failures;
      throw Unavailable("injected read failure");
    }
    return inner_.audit(after, limit);
  }
  std::int64_t append_audit(const controller::AuditRecord&) override {
    ++appends;
    throw Unavailable("injected write failure");
  }
  void apply_ledger(const std::string& key,
                    const std::vector<controller::LedgerEntry>& entries) override {
    ++applies;
    if (apply_failures_before > 0) {
      --apply_failures_before;
      throw Unavailable("injected failure before commit");
    }
    inner_.apply_ledger(key, entries);
    if (apply_failures_after > 0) {
      --apply_failures_after;
      throw Unavailable("injected failure after commit");
    }
  }
  bool ledger_batch_committed(const std::string& key) override {
    ++committed_checks;
    return inner_.ledger_batch_committed(key);
  }
};

struct SleepLog {
  std::mutex mutex;
  std::vector<std::chrono::milliseconds> waits;
  Sleeper sleeper() {
    return [this](std::chrono::milliseconds d) {
      std::lock_guard lock{mutex};
      waits.push_back(d);
    };
  }
};

// Backoff doubles from the initial wait and stops at the cap.
TEST(DbRetry, BackoffIsBoundedExponential) {
  const RetryPolicy p{6, 10ms, 50ms};
  EXPECT_EQ(retry_backoff(p, 1), 10ms);
  EXPECT_EQ(retry_backoff(p, 2), 20ms);
  EXPECT_EQ(retry_backoff(p, 3), 40ms);
  EXPECT_EQ(retry_backoff(p, 4), 50ms);
  EXPECT_EQ(retry_backoff(p, 40), 50ms);
}

// A safe read that fails twice is retried and succeeds, after two waits.
TEST_F(DbTest, SafeReadIsRetried) {
  store_->append_audit({0, {}, "a", "b", "", "", "", ""});
  FlakyStore flaky{*store_};
  flaky.read_failures = 2;
  SleepLog log;
  const auto rows = with_retry(
      flaky, RetrySafety::kSafe, [](controller::Store& s) { return s.audit(0, 10); },
      RetryPolicy{5, 10ms, 100ms}, log.sleeper());
  EXPECT_EQ(rows.size(), 1u);
  EXPECT_EQ(flaky.reads.load(), 3);
  EXPECT_EQ(log.waits, (std::vector<std::chrono::milliseconds>{10ms, 20ms}));
}

// Retries stop after max_attempts and the last Unavailable surfaces.
TEST_F(DbTest, RetriesAreBounded) {
  FlakyStore flaky{*store_};
  flaky.read_failures = 100;
  SleepLog log;
  EXPECT_THROW(with_retry(
                   flaky, RetrySafety::kSafe, [](controller::Store& s) { return s.audit(0, 10); },
                   RetryPolicy{3, 1ms, 1ms}, log.sleeper()),
               Unavailable);
  EXPECT_EQ(flaky.reads.load(), 3);
  EXPECT_EQ(log.waits.size(), 2u);
}

// A non-idempotent write is never retried: Unavailable surfaces after one attempt.
TEST_F(DbTest, UnsafeWriteIsNotRetried) {
  FlakyStore flaky{*store_};
  SleepLog log;
  EXPECT_THROW(with_retry(
                   flaky, RetrySafety::kNever,
                   [](controller::Store& s) {
                     return s.append_audit({0, {}, "a", "b", "", "", "", ""});
                   },
                   RetryPolicy{5, 1ms, 1ms}, log.sleeper()),
               Unavailable);
  EXPECT_EQ(flaky.appends.load(), 1);
  EXPECT_TRUE(log.waits.empty());
}

// Errors other than Unavailable are not retried, even for safe operations.
TEST_F(DbTest, ConflictIsNotRetried) {
  store_->apply_ledger("b1", {ledger_entry("k1", "r1", "reserved")});
  FlakyStore flaky{*store_};
  EXPECT_THROW(apply_ledger_with_retry(flaky, "b2", {ledger_entry("k1", "r2", "reserved")},
                                       RetryPolicy{5, 1ms, 1ms}, [](auto) {}),
               Conflict);
  EXPECT_EQ(flaky.applies.load(), 1);
}

// An in-doubt ledger commit (committed, answer lost) is resolved by reading
// ledger_batch_committed: the batch is not applied a second time.
TEST_F(DbTest, InDoubtLedgerCommitResolvedByRead) {
  FlakyStore flaky{*store_};
  flaky.apply_failures_after = 1;
  apply_ledger_with_retry(flaky, "b1", {ledger_entry("k1", "r1", "reserved")},
                          RetryPolicy{5, 1ms, 1ms}, [](auto) {});
  EXPECT_EQ(flaky.applies.load(), 1);
  EXPECT_EQ(flaky.committed_checks.load(), 1);
  EXPECT_EQ(store_->load().ledger.size(), 1u);
}

// A ledger batch that failed before committing is applied again.
TEST_F(DbTest, FailedLedgerBatchIsReapplied) {
  FlakyStore flaky{*store_};
  flaky.apply_failures_before = 2;
  apply_ledger_with_retry(flaky, "b1", {ledger_entry("k1", "r1", "reserved")},
                          RetryPolicy{5, 1ms, 1ms}, [](auto) {});
  EXPECT_EQ(flaky.applies.load(), 3);
  EXPECT_TRUE(store_->ledger_batch_committed("b1"));
}

// Jobs run on the pool's threads, each with its own store; results and errors come back through
// futures and callbacks.
TEST(DbPool, RunsJobsOnOwnThreadsAndDeliversResults) {
  const std::string dsn = PgServer::fresh_database();
  PgStore(PgStoreOptions{dsn}).migrate();
  std::atomic<int> created{0};
  StorePool::Options options;
  options.threads = 2;
  StorePool pool{[&] {
                   ++created;
                   return std::make_unique<PgStore>(PgStoreOptions{dsn});
                 },
                 options};
  EXPECT_EQ(pool.size(), 2u);

  std::mutex mutex;
  std::set<std::thread::id> threads;
  std::vector<std::future<std::int64_t>> ids;
  for (int i = 0; i < 20; ++i) {
    ids.push_back(pool.submit([&](controller::Store& s) {
      {
        std::lock_guard lock{mutex};
        threads.insert(std::this_thread::get_id());
      }
      return s.append_audit({0, {}, "actor", "action", "", "", "", ""});
    }));
  }
  std::set<std::int64_t> distinct;
  for (auto& f : ids) distinct.insert(f.get());
  EXPECT_EQ(distinct.size(), 20u);
  EXPECT_EQ(threads.count(std::this_thread::get_id()), 0u);
  EXPECT_LE(created.load(), 2);

  auto conflict = pool.apply_ledger("b1", {ledger_entry("k1", "r1", "reserved")});
  conflict.get();
  auto again = pool.apply_ledger("b2", {ledger_entry("k1", "r2", "reserved")});
  EXPECT_THROW(again.get(), Conflict);

  std::promise<std::size_t> got;
  pool.submit([](controller::Store& s) { return s.audit(0, 100).size(); },
              [&](std::future<std::size_t> f) { got.set_value(f.get()); });
  EXPECT_EQ(got.get_future().get(), 20u);

  auto healthy =
      pool.submit_with_retry(RetrySafety::kSafe, [](controller::Store& s) { return s.healthy(); });
  EXPECT_TRUE(healthy.get());
}

// A store the factory cannot make fails that call with the factory's error; the next call tries
// again. After shutdown, jobs fail with Unavailable (through the callback too).
TEST(DbPool, FactoryFailureAndShutdown) {
  const std::string dsn = PgServer::fresh_database();
  std::atomic<int> calls{0};
  StorePool::Options options;
  options.threads = 1;
  StorePool pool{[&]() -> std::unique_ptr<controller::Store> {
                   if (++calls == 1) throw Unavailable("database not up yet");
                   return std::make_unique<PgStore>(PgStoreOptions{dsn});
                 },
                 options};
  auto first = pool.submit([](controller::Store& s) { return s.load().next_alarm_id; });
  EXPECT_THROW(first.get(), Unavailable);
  auto second = pool.submit([](controller::Store& s) { return s.healthy(); });
  EXPECT_TRUE(second.get());

  // Queued jobs still run during shutdown.
  auto slow = pool.submit([](controller::Store& s) {
    std::this_thread::sleep_for(50ms);
    return s.load().next_alarm_id;
  });
  auto queued = pool.submit([](controller::Store& s) { return s.healthy(); });
  pool.shutdown();
  EXPECT_EQ(slow.get(), 1u);
  EXPECT_TRUE(queued.get());
  auto late = pool.submit([](controller::Store& s) { return s.healthy(); });
  EXPECT_THROW(late.get(), Unavailable);
  bool failed = false;
  pool.submit([](controller::Store&) {},
              [&](std::future<void> f) {
                try {
                  f.get();
                } catch (const Unavailable&) {
                  failed = true;
                }
              });
  EXPECT_TRUE(failed);
}

}  // namespace
}  // namespace qkdn::db::test
