// base/net backpressure pieces (issues 12 and 13): TokenBucket (rate and burst), FloodGuard
// (refuse, then disconnect a peer that keeps flooding), AdmissionQueue (known depth, refusals,
// retry hint from depth and service time) and ReconnectBackoff (exponential, jittered, bounded,
// raised by a server's hint). Time points and randomness are injected: no sleeps.
#include <gtest/gtest.h>

#include <set>
#include <vector>

#include "qkdn/controller/clock.hpp"
#include "qkdn/controller/error.hpp"
#include "qkdn/net/limits.hpp"

namespace qkdn::net {
namespace {

using std::chrono::milliseconds;
const SteadyTime kT0{std::chrono::seconds{1000}};

// Random words from a fixed list (cycled): the test decides where in its range each jitter lands.
class ScriptedRandom {
 public:
  explicit ScriptedRandom(std::vector<std::uint64_t> words) : words_(std::move(words)) {}
  std::uint64_t next_u64() { return words_[i_++ % words_.size()]; }
  ReconnectBackoff::RandomWords words() {
    return [this] { return next_u64(); };
  }

 private:
  std::vector<std::uint64_t> words_;
  std::size_t i_ = 0;
};

// A full bucket gives `burst` tokens at once, then one per 1/rate seconds.
TEST(TokenBucket, BurstThenRate) {
  TokenBucket b(10.0, 3.0);
  EXPECT_TRUE(b.try_take(kT0));
  EXPECT_TRUE(b.try_take(kT0));
  EXPECT_TRUE(b.try_take(kT0));
  EXPECT_FALSE(b.try_take(kT0));
  EXPECT_EQ(b.time_to_token(kT0), milliseconds{101});  // 100 ms, rounded up
  EXPECT_FALSE(b.try_take(kT0 + milliseconds{50}));
  EXPECT_TRUE(b.try_take(kT0 + milliseconds{100}));
  EXPECT_FALSE(b.try_take(kT0 + milliseconds{100}));
  // A long pause saves up at most `burst`.
  const auto later = kT0 + std::chrono::seconds{60};
  int taken = 0;
  while (b.try_take(later)) ++taken;
  EXPECT_EQ(taken, 3);
}

// Nonsense limits are configuration errors, not silent unlimited buckets.
TEST(TokenBucket, RejectsBadLimits) {
  EXPECT_THROW(TokenBucket(0.0, 1.0), InvalidArgument);
  EXPECT_THROW(TokenBucket(1.0, 0.5), InvalidArgument);
}

// Over its rate a peer is refused; more than max_refused_per_s refusals within one second mean
// it ignores the refusals: disconnect. A peer that slows down is admitted again.
TEST(FloodGuard, RefusesThenDisconnectsAPersistentFlood) {
  FloodGuard g(100.0, 10.0, 5);
  int admitted = 0;
  for (int i = 0; i < 10; ++i) admitted += g.on_frame(kT0) == FloodGuard::Verdict::kAdmit;
  EXPECT_EQ(admitted, 10);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(g.on_frame(kT0), FloodGuard::Verdict::kRefuse);
  EXPECT_GE(g.retry_after(kT0), milliseconds{1});
  EXPECT_EQ(g.on_frame(kT0), FloodGuard::Verdict::kDisconnect);
  EXPECT_EQ(g.refused(), 6u);

  FloodGuard polite(100.0, 1.0, 5);
  // One frame per 10 ms is exactly the rate: never refused.
  for (int i = 0; i < 1000; ++i) {
    EXPECT_EQ(polite.on_frame(kT0 + milliseconds{10 * i}), FloodGuard::Verdict::kAdmit) << i;
  }
  // Refusals spread over seconds (under 5 per second) never disconnect.
  FloodGuard slow(1.0, 1.0, 5);
  for (int s = 0; s < 20; ++s) {
    const auto t = kT0 + std::chrono::seconds{s};
    EXPECT_EQ(slow.on_frame(t), FloodGuard::Verdict::kAdmit);
    for (int i = 0; i < 4; ++i) EXPECT_EQ(slow.on_frame(t), FloodGuard::Verdict::kRefuse);
  }
}

// The depth is known at every moment; beyond the limit callers are refused and counted; a
// released ticket makes room; moved tickets release once.
TEST(AdmissionQueue, BoundsTheDepthAndCountsRefusals) {
  AdmissionQueue q(2);
  auto a = q.try_enter();
  auto b = q.try_enter();
  auto c = q.try_enter();
  EXPECT_TRUE(a);
  EXPECT_TRUE(b);
  EXPECT_FALSE(c);
  EXPECT_EQ(q.depth(), 2u);
  EXPECT_EQ(q.refused(), 1u);
  EXPECT_EQ(q.high_water(), 2u);
  AdmissionQueue::Ticket moved = std::move(a);
  EXPECT_EQ(q.depth(), 2u);
  moved.release();
  moved.release();
  a.release();  // moved-from: nothing
  EXPECT_EQ(q.depth(), 1u);
  EXPECT_TRUE(q.try_enter());  // admitted, then released at once (temporary)
  EXPECT_EQ(q.depth(), 1u);
  EXPECT_THROW(AdmissionQueue(0), InvalidArgument);
}

// The retry hint is the time to serve what is queued: depth x measured service time, clamped.
TEST(AdmissionQueue, RetryHintGrowsWithDepthAndServiceTime) {
  AdmissionQueue q(1000);
  EXPECT_EQ(q.retry_after(), milliseconds{250});  // nothing measured: the floor
  q.served(std::chrono::microseconds{10'000});    // 10 ms per item
  std::vector<AdmissionQueue::Ticket> held;
  for (int i = 0; i < 99; ++i) held.push_back(q.try_enter());
  EXPECT_EQ(q.retry_after(), milliseconds{1000});  // (99 + 1) x 10 ms
  for (int i = 0; i < 900; ++i) held.push_back(q.try_enter());
  EXPECT_EQ(q.retry_after(milliseconds{250}, milliseconds{5000}), milliseconds{5000});
  held.clear();
  EXPECT_EQ(q.depth(), 0u);
  EXPECT_EQ(q.retry_after(), milliseconds{250});
}

// Delays double from `initial` to `max`, each drawn from [d/2, d]; reset starts over.
TEST(ReconnectBackoff, ExponentialWithEqualJitterAndACap) {
  ScriptedRandom low({0});  // always the bottom of the range: d/2
  ReconnectBackoff b(milliseconds{100}, milliseconds{1000}, low.words());
  std::vector<std::int64_t> got;
  for (int i = 0; i < 6; ++i) got.push_back(b.next().count());
  EXPECT_EQ(got, (std::vector<std::int64_t>{50, 100, 200, 400, 500, 500}));
  b.reset();
  EXPECT_EQ(b.next(), milliseconds{50});

  ScriptedRandom high({~0ull});  // % (range + 1): some point in the range, never above d
  ReconnectBackoff h(milliseconds{100}, milliseconds{1000}, high.words());
  for (int i = 0; i < 10; ++i) {
    const auto base = h.base();
    const auto d = h.next();
    EXPECT_GE(d, base / 2);
    EXPECT_LE(d, base);
  }
}

// A thousand clients refused together do not come back together: their delays spread over the
// whole jitter range (a real seeded generator, many draws).
TEST(ReconnectBackoff, JitterSpreadsClients) {
  SeededRandom r(42);
  std::set<std::int64_t> distinct;
  for (int i = 0; i < 1000; ++i) {
    ReconnectBackoff b(milliseconds{1000}, milliseconds{10'000}, [&r] { return r.next_u64(); });
    distinct.insert(b.next().count());
  }
  EXPECT_GT(distinct.size(), 300u);
  EXPECT_GE(*distinct.begin(), 500);
  EXPECT_LE(*distinct.rbegin(), 1000);
}

// A server's retry hint raises the delay to at least the hint, spread up to 1.5 x the hint.
TEST(ReconnectBackoff, HonoursTheServersHint) {
  ScriptedRandom low({0});
  ReconnectBackoff b(milliseconds{100}, milliseconds{1000}, low.words());
  EXPECT_EQ(b.next(milliseconds{3000}), milliseconds{3000});
  ScriptedRandom high({1000});  // 1000 % 1501 = 1000
  ReconnectBackoff c(milliseconds{100}, milliseconds{1000}, high.words());
  EXPECT_EQ(c.next(milliseconds{3000}), milliseconds{4000});
  // A hint below the backoff does not shorten it.
  ScriptedRandom zero({0});
  ReconnectBackoff d(milliseconds{4000}, milliseconds{8000}, zero.words());
  EXPECT_EQ(d.next(milliseconds{10}), milliseconds{2000});
}

}  // namespace
}  // namespace qkdn::net
