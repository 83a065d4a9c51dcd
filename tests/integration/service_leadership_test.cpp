// High availability (issue 17): qkdn::service::Leadership against the private PostgreSQL. Two
// controllers are two Leadership objects with their own connections; leases are short (600 ms)
// and every wait is a bounded poll of their status.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <thread>
#include <vector>

#include <pqxx/pqxx>

#include "db_test_support.hpp"
#include "qkdn/controller/error.hpp"
#include "qkdn/db/leader_lease.hpp"
#include "qkdn/service/leadership.hpp"

namespace qkdn::service {
namespace {

using namespace std::chrono_literals;

struct Events {
  std::mutex mu;
  std::vector<std::int64_t> elected;
  std::vector<std::pair<std::int64_t, std::string>> lost;
};

LeadershipOptions options_of(const std::string& dsn, const std::string& holder, Events& ev) {
  LeadershipOptions o;
  o.dsn = dsn;
  o.holder = holder;
  o.lease = 600ms;
  o.ck_address = holder + ":4164";
  o.api_address = holder + ":8080";
  o.on_elected = [&ev](std::int64_t e) {
    std::lock_guard lock(ev.mu);
    ev.elected.push_back(e);
  };
  o.on_lost = [&ev](std::int64_t e, std::string_view why) {
    std::lock_guard lock(ev.mu);
    ev.lost.emplace_back(e, std::string(why));
  };
  o.log = [](std::string_view) {};
  return o;
}

template <class F>
bool within(std::chrono::milliseconds bound, F&& f) {
  const auto deadline = std::chrono::steady_clock::now() + bound;
  while (!f()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(10ms);
  }
  return true;
}

class LeadershipTest : public db::test::DbTest {};

// One leads and keeps its term through many renewals; the other stands by, naming it; a clean
// stop hands over at once to a larger term; the fence follows the term.
TEST_F(LeadershipTest, OneLeaderRenewsAndHandsOverOnStop) {
  Events ea;
  Events eb;
  Leadership a(options_of(dsn_, "ctl-a", ea));
  a.start();
  ASSERT_TRUE(within(5s, [&] { return a.is_leader(); }));
  Leadership b(options_of(dsn_, "ctl-b", eb));
  b.start();
  ASSERT_TRUE(within(5s, [&] { return b.status().leader_holder == "ctl-a"; }));
  const auto term_a = a.status().epoch;
  EXPECT_EQ(a.fence()->epoch.load(), term_a);
  EXPECT_EQ(b.status().leader_ck_address, "ctl-a:4164");
  EXPECT_EQ(b.status().epoch, term_a);
  // Three leases of renewals: still one term, one election, B never leads.
  const auto until = std::chrono::steady_clock::now() + 1800ms;
  while (std::chrono::steady_clock::now() < until) {
    ASSERT_TRUE(a.is_leader());
    ASSERT_FALSE(b.is_leader());
    std::this_thread::sleep_for(20ms);
  }
  EXPECT_EQ(a.status().epoch, term_a);
  EXPECT_EQ(a.status().elections, 1u);
  EXPECT_GE(a.status().lease_age_ms, 0);
  EXPECT_LT(a.status().lease_age_ms, 600);

  const auto stopped = std::chrono::steady_clock::now();
  a.stop();
  EXPECT_FALSE(a.is_leader());
  EXPECT_EQ(a.fence()->epoch.load(), 0) << "a stopped leader's writes are refused";
  ASSERT_TRUE(within(2s, [&] { return b.is_leader(); }));
  // Released, not lapsed: B leads within a renewal period or so, well before 600 ms.
  EXPECT_LT(std::chrono::steady_clock::now() - stopped, 500ms);
  EXPECT_GT(b.status().epoch, term_a);
  EXPECT_EQ(b.fence()->epoch.load(), b.status().epoch);
  {
    std::lock_guard lock(ea.mu);
    ASSERT_EQ(ea.lost.size(), 1u);
    EXPECT_EQ(ea.lost[0].first, term_a);
    EXPECT_EQ(ea.lost[0].second, "stopped");
  }
  EXPECT_NE(b.metrics_text().find("qkdn_controller_leader 1"), std::string::npos);
  EXPECT_NE(b.metrics_text().find("qkdn_controller_failovers_total{reason=\"elected\"} 1"),
            std::string::npos);
  b.stop();
}

// A leader whose term was taken over (its lease lapsed while it could not renew) learns it: the
// fence drops to 0 and on_lost names the term. The lapse is forced by another holder taking the
// row after the lease expired, as a standby would after a partition.
TEST_F(LeadershipTest, TermTakenOverIsLost) {
  Events ea;
  Leadership a(options_of(dsn_, "ctl-a", ea));
  a.start();
  ASSERT_TRUE(within(5s, [&] { return a.is_leader(); }));
  const auto term_a = a.status().epoch;
  // Another controller takes the row by force (as if A's lease had lapsed).
  {
    pqxx::connection c(dsn_);
    pqxx::work tx(c);
    tx.exec(
        "UPDATE controller_leader SET holder = 'ctl-x', epoch = nextval('controller_epoch_seq'), "
        "lease_expires = clock_timestamp() + interval '10 seconds' WHERE id = 1");
    tx.commit();
  }
  ASSERT_TRUE(within(3s, [&] { return !a.is_leader(); }));
  EXPECT_EQ(a.fence()->epoch.load(), 0);
  EXPECT_TRUE(within(3s, [&] { return a.status().leader_holder == "ctl-x"; }));
  {
    std::lock_guard lock(ea.mu);
    ASSERT_EQ(ea.lost.size(), 1u);
    EXPECT_EQ(ea.lost[0].first, term_a);
    EXPECT_EQ(ea.lost[0].second, "lease_lost");
  }
  a.stop();
}

TEST(LeadershipOptionsTest, BadOptionsRefused) {
  LeadershipOptions o;
  o.holder = "x";
  EXPECT_THROW(Leadership{o}, InvalidArgument);  // no database
  o.dsn = "postgresql://nobody@127.0.0.1:1/none";
  o.lease = 100ms;
  EXPECT_THROW(Leadership{o}, InvalidArgument);  // lease too short
  o.lease = 3000ms;
  o.step_down_after = 4000ms;
  EXPECT_THROW(Leadership{o}, InvalidArgument);  // steps down after the lease lapsed
}

}  // namespace
}  // namespace qkdn::service
