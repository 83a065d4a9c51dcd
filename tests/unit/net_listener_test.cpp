// base/net listener guards: ConnectionGate (refuse or evict the oldest when full, release and
// eviction never double-count), AcceptBackoff (pauses grow, reset on success, logging is rate
// limited) and is_loopback.
#include <gtest/gtest.h>

#include <vector>

#include "qkdn/net/listener.hpp"

namespace qkdn::net {
namespace {

using std::chrono::milliseconds;

// A refusing gate admits `cap` tickets, refuses the next, and admits again once one is released.
TEST(ConnectionGate, RefusesBeyondTheCapUntilASlotIsReleased) {
  ConnectionGate g(2);
  auto a = g.try_enter();
  auto b = g.try_enter();
  auto c = g.try_enter();
  EXPECT_TRUE(a);
  EXPECT_TRUE(b);
  EXPECT_FALSE(c);
  EXPECT_EQ(g.count(), 2u);
  EXPECT_EQ(g.refused(), 1u);
  a.release();
  a.release();  // idempotent
  EXPECT_EQ(g.count(), 1u);
  auto d = g.try_enter();
  EXPECT_TRUE(d);
  EXPECT_EQ(g.count(), 2u);
}

// An evicting gate closes the oldest holder once it has waited `min_age`, and refuses the
// newcomer while every holder is younger; an evicted ticket's later release frees nobody else.
TEST(ConnectionGate, EvictsTheOldestHolderOnceOldEnough) {
  ConnectionGate g(2, ConnectionGate::WhenFull::kEvictOldest, milliseconds(100));
  const auto t0 = ConnectionGate::Clock::time_point{} + std::chrono::hours(1);
  std::vector<int> evicted;
  auto a = g.try_enter([&] { evicted.push_back(1); }, t0);
  auto b = g.try_enter([&] { evicted.push_back(2); }, t0 + milliseconds(10));
  auto young = g.try_enter([&] { evicted.push_back(9); }, t0 + milliseconds(50));
  EXPECT_FALSE(young);  // nobody has waited 100 ms yet: a storm of young ones is refused
  EXPECT_EQ(g.refused(), 1u);
  auto c = g.try_enter([&] { evicted.push_back(3); }, t0 + milliseconds(100));
  EXPECT_TRUE(c);
  EXPECT_EQ(evicted, std::vector<int>({1}));
  EXPECT_EQ(g.count(), 2u);
  EXPECT_EQ(g.evicted(), 1u);
  a.release();  // already evicted: nothing changes
  EXPECT_EQ(g.count(), 2u);
  b.release();  // b leaves on its own: the next newcomer evicts nobody
  auto d = g.try_enter([&] { evicted.push_back(4); }, t0 + milliseconds(120));
  EXPECT_EQ(evicted, std::vector<int>({1}));
  auto e = g.try_enter([&] { evicted.push_back(5); }, t0 + milliseconds(250));
  EXPECT_TRUE(e);
  EXPECT_EQ(evicted, std::vector<int>({1, 3}));
  EXPECT_EQ(g.count(), 2u);
}

// Moving a ticket moves its slot; destroying the gate first leaves tickets safe to release.
TEST(ConnectionGate, TicketsMoveAndOutliveTheGate) {
  ConnectionGate::Ticket kept;
  {
    ConnectionGate g(1);
    auto a = g.try_enter();
    kept = std::move(a);
    EXPECT_FALSE(a);  // NOLINT(bugprone-use-after-move): moved-from is empty by contract
    EXPECT_TRUE(kept);
    EXPECT_FALSE(g.try_enter());
  }
  kept.release();
  EXPECT_FALSE(kept);
}

// Failed accepts pause 5 ms, doubling to at most 1 s; a success resets; logs at most every 10 s.
TEST(AcceptBackoff, PausesGrowAndReset) {
  AcceptBackoff b;
  const auto emfile = boost::system::error_code(EMFILE, boost::system::system_category());
  const auto t0 = std::chrono::steady_clock::time_point{} + std::chrono::hours(1);
  auto p = b.on_error(emfile, t0);
  EXPECT_EQ(p.delay, milliseconds(5));
  EXPECT_TRUE(p.log);
  p = b.on_error(emfile, t0 + milliseconds(5));
  EXPECT_EQ(p.delay, milliseconds(10));
  EXPECT_FALSE(p.log);
  for (int i = 0; i < 20; ++i) p = b.on_error(emfile, t0 + milliseconds(100));
  EXPECT_EQ(p.delay, milliseconds(1000));
  p = b.on_error(emfile, t0 + std::chrono::seconds(11));
  EXPECT_TRUE(p.log);
  b.on_success();
  EXPECT_EQ(b.on_error(emfile, t0 + std::chrono::seconds(12)).delay, milliseconds(5));
}

// Loopback: 127/8, ::1 and v4-mapped 127/8; nothing else.
TEST(Listener, IsLoopback) {
  using boost::asio::ip::make_address;
  EXPECT_TRUE(is_loopback(make_address("127.0.0.1")));
  EXPECT_TRUE(is_loopback(make_address("127.9.8.7")));
  EXPECT_TRUE(is_loopback(make_address("::1")));
  EXPECT_TRUE(is_loopback(make_address("::ffff:127.0.0.1")));
  EXPECT_FALSE(is_loopback(make_address("0.0.0.0")));
  EXPECT_FALSE(is_loopback(make_address("10.0.0.1")));
  EXPECT_FALSE(is_loopback(make_address("::")));
  EXPECT_FALSE(is_loopback(make_address("::ffff:10.0.0.1")));
}

}  // namespace
}  // namespace qkdn::net
