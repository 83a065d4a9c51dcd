// Rerouting triggers: each trigger reroutes only the pairs whose standing route it touches, and
// every reroute is counted and reported with its reason.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "qkdn/controller/error.hpp"
#include "qkdn/controller/rerouting.hpp"
#include "rerouting_test_util.hpp"

namespace qkdn::controller {
namespace {

using testing::Lab;
using testing::reroutes_of;
using testing::Strings;

// A diamond A-B-D / A-C-D plus a separate pair E-F; equal links, so A->D prefers A-B-D (KM
// order breaks the tie).
Lab diamond() {
  return Lab({"A", "B", "C", "D", "E", "F"}, {{"AB", "A", "B", 10'000},
                                              {"AC", "A", "C", 10'000},
                                              {"BD", "B", "D", 10'000},
                                              {"CD", "C", "D", 10'000},
                                              {"EF", "E", "F", 10'000}});
}

// Establishes the standing routes used by the tests below.
void establish(Lab& lab) {
  ASSERT_EQ(lab.route("A", "D"), (Strings{"A", "B", "D"}));
  ASSERT_EQ(lab.route("E", "F"), (Strings{"E", "F"}));
  ASSERT_EQ(lab.route("A", "C"), (Strings{"A", "C"}));
}

std::uint64_t total_reroutes(const ReroutingEngine& e) {
  std::uint64_t n = 0;
  for (auto r : kAllRerouteReasons) n += e.reroute_count(r);
  return n;
}

// A first route is not a reroute, and asking again returns the same standing route.
TEST(Triggers, StandingRouteIsStable) {
  Lab lab = diamond();
  auto first = lab.engine.route_for("A", "D");
  ASSERT_TRUE(first.route);
  EXPECT_TRUE(first.output.reroutes.empty());
  EXPECT_FALSE(first.pinned);
  for (int i = 0; i < 3; ++i) {
    auto again = lab.engine.route_for("A", "D");
    EXPECT_EQ(again.route->kms, first.route->kms);
    EXPECT_TRUE(again.output.empty());
  }
  EXPECT_EQ(lab.engine.standing_route("A", "D")->links, (Strings{"AB", "BD"}));
  EXPECT_EQ(total_reroutes(lab.engine), 0U);
}

// QBER high on a link of the standing route: the pair moves off it, reason "qber"; pairs that do
// not use the link keep their routes.
TEST(Triggers, QberHighReroutesOnlyAffectedPairs) {
  Lab lab = diamond();
  establish(lab);
  auto out = lab.qber("AB", 0.2);
  ASSERT_EQ(out.reroutes.size(), 1U);
  const RerouteEvent& e = out.reroutes[0];
  EXPECT_EQ(e.src, "A");
  EXPECT_EQ(e.dst, "D");
  EXPECT_EQ(e.reason, RerouteReason::kQber);
  EXPECT_EQ(e.old_route->kms, (Strings{"A", "B", "D"}));
  EXPECT_EQ(e.new_route->kms, (Strings{"A", "C", "D"}));
  EXPECT_EQ(e.time, lab.clock.now());
  EXPECT_EQ(lab.engine.reroute_count(RerouteReason::kQber), 1U);
  EXPECT_EQ(total_reroutes(lab.engine), 1U);
  EXPECT_EQ(lab.route("A", "D"), (Strings{"A", "C", "D"}));
  EXPECT_EQ(lab.route("E", "F"), (Strings{"E", "F"}));
  EXPECT_EQ(lab.route("A", "C"), (Strings{"A", "C"}));
}

// When the QBER returns to normal the rerouted pair stays where it is (no flapping).
TEST(Triggers, RecoveryDoesNotFlapBack) {
  Lab lab = diamond();
  establish(lab);
  lab.qber("AB", 0.2);
  auto out = lab.qber("AB", 0.01);
  EXPECT_TRUE(out.reroutes.empty());
  EXPECT_EQ(lab.route("A", "D"), (Strings{"A", "C", "D"}));
}

// Link down on the route: reason "link_down"; a pair on another link is untouched.
TEST(Triggers, LinkDown) {
  Lab lab = diamond();
  establish(lab);
  auto out = lab.link_up("BD", false);
  ASSERT_EQ(out.reroutes.size(), 1U);
  EXPECT_EQ(out.reroutes[0].reason, RerouteReason::kLinkDown);
  EXPECT_EQ(out.reroutes[0].new_route->kms, (Strings{"A", "C", "D"}));
  EXPECT_EQ(lab.engine.reroute_count(RerouteReason::kLinkDown), 1U);
  EXPECT_TRUE(reroutes_of(out, "A", "C").empty());
}

// A transit KM disconnects: reason "km_disconnect"; the separate pair is untouched.
TEST(Triggers, KmDisconnect) {
  Lab lab = diamond();
  establish(lab);
  auto out = lab.disconnect("B");
  ASSERT_EQ(out.reroutes.size(), 1U);
  EXPECT_EQ(out.reroutes[0].reason, RerouteReason::kKmDisconnect);
  EXPECT_EQ(out.reroutes[0].new_route->kms, (Strings{"A", "C", "D"}));
  EXPECT_EQ(lab.engine.reroute_count(RerouteReason::kKmDisconnect), 1U);
}

// The destination disconnects: the pair is left without a route (a reroute to "none"); when the
// KM registers again the pair gets a route back, which is not another reroute.
TEST(Triggers, EndpointDisconnectLeavesNoRouteUntilBack) {
  Lab lab = diamond();
  establish(lab);
  auto out = lab.disconnect("D");
  auto ad = reroutes_of(out, "A", "D");
  ASSERT_EQ(ad.size(), 1U);
  EXPECT_FALSE(ad[0].new_route);
  EXPECT_TRUE(lab.route("A", "D").empty());
  Registration reg{"D", "127.0.0.1:1", {{"BD", "B"}, {"CD", "C"}}, {}, ""};
  auto back = lab.feed(lab.net.register_km(reg));
  EXPECT_TRUE(back.reroutes.empty());
  EXPECT_EQ(lab.engine.standing_route("A", "D")->kms.size(), 3U);
}

// Pool below the floor on the route: reason "pool_low".
TEST(Triggers, PoolLowFromReport) {
  Lab lab = diamond();
  establish(lab);
  auto out = lab.pool("AB", 100);
  ASSERT_EQ(out.reroutes.size(), 1U);
  EXPECT_EQ(out.reroutes[0].reason, RerouteReason::kPoolLow);
  EXPECT_EQ(lab.route("A", "D"), (Strings{"A", "C", "D"}));
}

// A key_pool_low alarm leaves the pool figures unchanged, yet the link stays avoided until the
// alarm clears.
TEST(Triggers, PoolLowFromAlarmIsAvoidedUntilCleared) {
  Lab lab = diamond();
  establish(lab);
  auto out = lab.feed(lab.net.apply_alarm("A", "key_pool_low", "AB", "major", 10));
  ASSERT_EQ(out.reroutes.size(), 1U);
  EXPECT_EQ(out.reroutes[0].reason, RerouteReason::kPoolLow);
  // A new pair through A-B is not routed over AB while the alarm lasts.
  EXPECT_EQ(lab.route("A", "B"), (Strings{"A", "C", "D", "B"}));
  lab.feed(lab.net.apply_alarm("A", "key_pool_low", "AB", "cleared", 0));
  EXPECT_EQ(lab.route("B", "A"), (Strings{"B", "A"}));
}

// The operator disables a link of the route: reason "operator"; re-enabling moves nothing back.
TEST(Triggers, OperatorAdminDisable) {
  Lab lab = diamond();
  establish(lab);
  auto out = lab.admin("AB", AdminState::kDisabled);
  ASSERT_EQ(out.reroutes.size(), 1U);
  EXPECT_EQ(out.reroutes[0].reason, RerouteReason::kOperator);
  EXPECT_EQ(lab.engine.reroute_count(RerouteReason::kOperator), 1U);
  EXPECT_TRUE(lab.admin("AB", AdminState::kEnabled).reroutes.empty());
  EXPECT_EQ(lab.route("A", "D"), (Strings{"A", "C", "D"}));
}

// A trigger on a link no standing route uses reroutes nothing.
TEST(Triggers, UnrelatedLinkReroutesNothing) {
  Lab lab = diamond();
  establish(lab);
  auto out = lab.link_up("CD", false);
  EXPECT_TRUE(out.reroutes.empty());
  EXPECT_EQ(total_reroutes(lab.engine), 0U);
}

// When the snapshot shows a broken route without an event (events lost), route_for reroutes and
// names the reason from why the route is excluded.
TEST(Triggers, RouteForDerivesReasonWithoutEvents) {
  Lab lab = diamond();
  establish(lab);
  LinkReport r{"AB", "B", true, 4000, 1'000'000, 10'000, 0, 0.3};
  lab.net.apply_status("A", {r});  // events deliberately not given to the engine
  EXPECT_TRUE(lab.engine.on_snapshot(lab.snapshot()).reroutes.empty());
  auto answer = lab.engine.route_for("A", "D");
  ASSERT_EQ(answer.output.reroutes.size(), 1U);
  EXPECT_EQ(answer.output.reroutes[0].reason, RerouteReason::kQber);
  EXPECT_EQ(answer.route->kms, (Strings{"A", "C", "D"}));
}

// Replacing the topology so that a route's link vanishes reroutes it as an operator change.
TEST(Triggers, TopologyReplacedCountsAsOperator) {
  Lab lab = diamond();
  establish(lab);
  TopologyDoc doc = lab.net.topology();
  std::erase_if(doc.links, [](const LinkSpec& l) { return l.link_id == "BD"; });
  auto out = lab.feed(lab.net.apply_topology(doc));
  auto ad = reroutes_of(out, "A", "D");
  ASSERT_EQ(ad.size(), 1U);
  EXPECT_EQ(ad[0].reason, RerouteReason::kOperator);
  EXPECT_EQ(ad[0].new_route->kms, (Strings{"A", "C", "D"}));
  EXPECT_TRUE(reroutes_of(out, "E", "F").empty());
}

// route_for needs a snapshot and known KMs.
TEST(Triggers, RouteForErrors) {
  ManualClock clock;
  SeededRandom rng(1);
  ReroutingEngine engine(clock, rng);
  EXPECT_THROW(engine.route_for("A", "B"), Unavailable);
  Lab lab = diamond();
  EXPECT_THROW(lab.engine.route_for("A", "Z"), NotFound);
  EXPECT_THROW(lab.engine.on_snapshot(nullptr), InvalidArgument);
}

}  // namespace
}  // namespace qkdn::controller
