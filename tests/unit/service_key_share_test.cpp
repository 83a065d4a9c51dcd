// KeyShareLimiter (qkdn/service/key_share.hpp): a peer QKDN's key rate share, with an injected
// clock. Budget = share x capacity x window; refilled at share x capacity.
#include "qkdn/service/key_share.hpp"

#include <gtest/gtest.h>

#include "qkdn/controller/error.hpp"

namespace qkdn::service {
namespace {

using namespace std::chrono_literals;
using Clock = KeyShareLimiter::Clock;

const Clock::time_point t0{std::chrono::hours(1)};

TEST(KeyShare, WithinShareAdmittedBeyondRefusedWithTheNumbers) {
  KeyShareLimiter l(10s);
  // 0.005 of 200,000 bit/s = 1,000 bit/s: 10,000 bits per 10 s window.
  EXPECT_TRUE(l.admit("QKDN-A", 0.005, 200000, 2048, t0).admitted);
  EXPECT_TRUE(l.admit("QKDN-A", 0.005, 200000, 7680, t0).admitted);
  auto v = l.admit("QKDN-A", 0.005, 200000, 512, t0);  // 272 bits left
  EXPECT_FALSE(v.admitted);
  EXPECT_NE(v.reason.find("key rate share of QKDN-A used up"), std::string::npos) << v.reason;
  EXPECT_NE(v.reason.find("272 of 10000 bits per 10000 ms left"), std::string::npos) << v.reason;
  EXPECT_EQ(v.retry_after, 240ms);  // (512 - 272) bits at 1,000 bit/s
  // A refusal spends nothing: after exactly the retry time it passes.
  EXPECT_FALSE(l.admit("QKDN-A", 0.005, 200000, 512, t0 + 239ms).admitted);
  EXPECT_TRUE(l.admit("QKDN-A", 0.005, 200000, 512, t0 + 240ms).admitted);
}

TEST(KeyShare, OneRequestOverTheWindowBudgetIsRefusedOutright) {
  KeyShareLimiter l(10s);
  auto v = l.admit("QKDN-A", 0.005, 200000, 10240, t0);
  EXPECT_FALSE(v.admitted);
  EXPECT_NE(v.reason.find("key rate share of QKDN-A exceeded: 10240 bits asked"), std::string::npos)
      << v.reason;
  EXPECT_NE(v.reason.find("at most 10000 bits per 10000 ms"), std::string::npos) << v.reason;
  // ... even after any wait, and it did not spend the budget.
  EXPECT_FALSE(l.admit("QKDN-A", 0.005, 200000, 10240, t0 + 1h).admitted);
  EXPECT_TRUE(l.admit("QKDN-A", 0.005, 200000, 10000, t0 + 1h).admitted);
}

TEST(KeyShare, RefillIsCappedAtOneWindow) {
  KeyShareLimiter l(10s);
  EXPECT_TRUE(l.admit("P", 0.5, 1000, 5000, t0).admitted);  // 500 bit/s, 5,000 per window
  // A long idle period refills one window, not more.
  EXPECT_TRUE(l.admit("P", 0.5, 1000, 5000, t0 + 1h).admitted);
  EXPECT_FALSE(l.admit("P", 0.5, 1000, 1, t0 + 1h).admitted);
  EXPECT_DOUBLE_EQ(l.available("P", 0.5, 1000, t0 + 1h + 2s), 1000);
  // Over any window the peer never gets more than budget + share x window.
  std::int64_t got = 0;
  for (int ms = 0; ms <= 10'000; ms += 10) {
    if (l.admit("P", 0.5, 1000, 50, t0 + 2h + std::chrono::milliseconds(ms)).admitted) got += 50;
  }
  EXPECT_LE(got, 5000 + 5000);
  EXPECT_GE(got, 5000);
}

TEST(KeyShare, PeersHaveSeparateBudgetsAndZeroShareAdmitsNothing) {
  KeyShareLimiter l(1s);
  EXPECT_TRUE(l.admit("A", 1.0, 1000, 1000, t0).admitted);
  EXPECT_FALSE(l.admit("A", 1.0, 1000, 1, t0).admitted);
  EXPECT_TRUE(l.admit("B", 1.0, 1000, 1000, t0).admitted);
  auto z = l.admit("C", 0, 1000, 1, t0);
  EXPECT_FALSE(z.admitted);
  EXPECT_NE(z.reason.find("no keys"), std::string::npos) << z.reason;
  EXPECT_FALSE(l.admit("D", 0.5, 0, 1, t0).admitted);  // no capacity: nothing to share
  EXPECT_THROW(KeyShareLimiter(0ms), InvalidArgument);
}

TEST(KeyShare, TrackedPeersAreBounded) {
  KeyShareLimiter l(1s);
  for (std::size_t i = 0; i < KeyShareLimiter::kMaxPeers + 10; ++i) {
    EXPECT_TRUE(l.admit("P" + std::to_string(i), 1.0, 1000, 1000, t0 + std::chrono::milliseconds(i))
                    .admitted);
  }
  // The stalest peer was forgotten (a fresh budget); a recent one still has none left.
  EXPECT_TRUE(l.admit("P0", 1.0, 1000, 1000, t0 + 2000ms).admitted);
  EXPECT_FALSE(l.admit("P1033", 1.0, 1000, 1000, t0 + 1033ms).admitted);
}

}  // namespace
}  // namespace qkdn::service
