// High availability (issue 17): the leadership lease of migration 0008 and the fence of a
// leader's writes, against the private PostgreSQL. Two controllers are two LeaderLease objects
// with their own connections; leases are short (300 ms) and every wait is a bounded poll.
#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "db_test_support.hpp"
#include "qkdn/db/leader_lease.hpp"

namespace qkdn::db::test {
namespace {

using namespace std::chrono_literals;

LeaseOptions lease_of(const std::string& dsn, const std::string& holder) {
  LeaseOptions o;
  o.dsn = dsn;
  o.holder = holder;
  o.lease = 300ms;
  o.ck_address = holder + ":5000";
  o.api_address = holder + ":8080";
  return o;
}

/// Polls acquire_or_renew until it gives a term (bounded).
std::optional<std::int64_t> acquire_within(LeaderLease& l, std::chrono::milliseconds bound) {
  const auto deadline = std::chrono::steady_clock::now() + bound;
  for (;;) {
    if (auto e = l.acquire_or_renew()) return e;
    if (std::chrono::steady_clock::now() >= deadline) return std::nullopt;
    std::this_thread::sleep_for(20ms);
  }
}

controller::Thresholds thresholds(double qber) {
  controller::Thresholds t;
  t.qber = qber;
  return t;
}

class LeaseTest : public DbTest {};

// One leader at a time; renewals keep the term; the other takes over only once the lease lapsed,
// in a new, larger term; the old leader then cannot renew.
TEST_F(LeaseTest, OneLeaderAndTermsThatOnlyGrow) {
  LeaderLease a(lease_of(dsn_, "ctl-a"));
  LeaderLease b(lease_of(dsn_, "ctl-b"));
  const auto ea = a.acquire_or_renew();
  ASSERT_TRUE(ea.has_value());
  EXPECT_GT(*ea, 0);
  EXPECT_FALSE(b.acquire_or_renew().has_value()) << "two leaders";
  EXPECT_EQ(a.acquire_or_renew(), ea) << "a renewal keeps the term";
  auto info = b.leader();
  EXPECT_EQ(info.holder, "ctl-a");
  EXPECT_EQ(info.epoch, *ea);
  EXPECT_TRUE(info.live);
  EXPECT_EQ(info.ck_address, "ctl-a:5000");
  // a stops renewing: b takes over after the lease lapses, never before.
  const auto eb = acquire_within(b, 3s);
  ASSERT_TRUE(eb.has_value());
  EXPECT_GT(*eb, *ea);
  EXPECT_FALSE(a.acquire_or_renew().has_value()) << "the old leader renewed after a takeover";
  EXPECT_EQ(a.leader().holder, "ctl-b");
}

// A clean stop hands over at once; only the holder of the term may release it.
TEST_F(LeaseTest, ReleaseHandsOverAtOnce) {
  LeaderLease a(lease_of(dsn_, "ctl-a"));
  LeaderLease b(lease_of(dsn_, "ctl-b"));
  const auto ea = a.acquire_or_renew();
  ASSERT_TRUE(ea.has_value());
  EXPECT_FALSE(b.release(*ea)) << "b released a's lease";
  EXPECT_FALSE(a.release(*ea + 1)) << "a released a term that is not its own";
  EXPECT_TRUE(a.release(*ea));
  const auto eb = b.acquire_or_renew();  // no wait for the lease to lapse
  ASSERT_TRUE(eb.has_value());
  EXPECT_GT(*eb, *ea);
}

// Writes are fenced on the term: the leader's store writes; after a takeover the old leader's
// store is refused (single writes and batches), the new leader's writes; a store that is not
// leader (epoch 0) never writes.
TEST_F(LeaseTest, WritesOfAnOldLeaderAreFenced) {
  LeaderLease a(lease_of(dsn_, "ctl-a"));
  LeaderLease b(lease_of(dsn_, "ctl-b"));
  auto fence_a = std::make_shared<Fence>();
  fence_a->holder = "ctl-a";
  auto fence_b = std::make_shared<Fence>();
  fence_b->holder = "ctl-b";
  PgStoreOptions oa{dsn_};
  oa.fence = fence_a;
  PgStoreOptions ob{dsn_};
  ob.fence = fence_b;
  PgStore store_a(oa);
  PgStore store_b(ob);

  EXPECT_THROW(store_a.save_thresholds(thresholds(0.05)), Conflict) << "not leader yet";
  const auto ea = a.acquire_or_renew();
  ASSERT_TRUE(ea.has_value());
  fence_a->epoch = *ea;
  store_a.save_thresholds(thresholds(0.06));
  EXPECT_EQ(sql("SELECT qber FROM thresholds"), "0.06");

  const auto eb = acquire_within(b, 3s);  // a did not renew: b takes over
  ASSERT_TRUE(eb.has_value());
  fence_b->epoch = *eb;
  // a has not noticed: its writes are refused all the same.
  try {
    store_a.save_thresholds(thresholds(0.07));
    ADD_FAILURE() << "the old leader wrote";
  } catch (const Conflict& e) {
    EXPECT_NE(std::string(e.what()).find("fenced"), std::string::npos) << e.what();
  }
  EXPECT_THROW(
      store_a.write_batch([](controller::Store& s) { s.save_thresholds(thresholds(0.08)); }),
      Conflict);
  EXPECT_EQ(sql("SELECT qber FROM thresholds"), "0.06");
  // b renews first, as its leadership loop would: on a loaded machine a's refused writes above
  // can outlast the 300 ms lease (then b's write was refused: 2 runs in 3 at a load average of
  // 17). a never renews, so b holds the lease in eb or, had it lapsed, a newer term.
  const auto renewed = b.acquire_or_renew();
  ASSERT_TRUE(renewed.has_value());
  EXPECT_GE(*renewed, *eb);
  fence_b->epoch = *renewed;
  store_b.save_thresholds(thresholds(0.09));
  store_b.write_batch([](controller::Store& s) { s.save_thresholds(thresholds(0.1)); });
  EXPECT_EQ(sql("SELECT qber FROM thresholds"), "0.1");
  // A store without a fence (one controller) is not affected by the lease.
  store_->save_thresholds(thresholds(0.11));
  EXPECT_EQ(sql("SELECT qber FROM thresholds"), "0.11");
}

TEST_F(LeaseTest, BadOptionsRefused) {
  EXPECT_THROW(LeaderLease(lease_of(dsn_, "")), InvalidArgument);
  auto o = lease_of(dsn_, "x");
  o.lease = 10ms;
  EXPECT_THROW(LeaderLease{o}, InvalidArgument);
}

}  // namespace
}  // namespace qkdn::db::test
