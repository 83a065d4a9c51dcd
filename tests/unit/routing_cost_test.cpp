// Hop-cost rules, link exclusions and their explanations.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "qkdn/controller/clock.hpp"
#include "qkdn/controller/error.hpp"
#include "qkdn/controller/network.hpp"
#include "qkdn/controller/routing.hpp"
#include "routing_test_util.hpp"

namespace qkdn::controller {
namespace {

using testing::full_pools;
using testing::make_doc;

SnapshotLink base_link() {
  SnapshotLink l;
  l.link_id = "L";
  l.a = "A";
  l.b = "B";
  l.pool_bits = 10'000;
  l.key_rate_bps = 1'000;
  l.consumption_rate_bps = 0;
  l.pool_floor_bits = 256;
  l.qber_threshold = 0.11;
  return l;
}

// These tests pin the price P of hop_cost() (every factor of the formula); the headroom gate in
// front of it (issue 20) has its own tests in routing_trust_test.cpp.
RouteOptions key_aware(std::uint64_t demand = 0) {
  RouteOptions o;
  o.metric = RouteMetric::kKeyAware;
  o.demand_bits = demand;
  o.weights = KeyAwareWeights::ungated();
  return o;
}

// The key-aware cost is exactly the documented formula, depletion factor included.
TEST(HopCost, MatchesDocumentedFormula) {
  SnapshotLink l = base_link();
  l.consumption_rate_bps = 3'000;
  l.pool_reference_bits = 40'000;
  RouteOptions o = key_aware(1'024);
  o.weights = {2.0, 0.5, 3.0, 4.0, 256, 1.5, 0, 0};
  const double d = 1'024;
  const double a = 10'000 - 256;
  const double expected = (1 + 3.0 * d / (1'000.0 * 4.0)) * std::exp(1.5 * (1 - a / 40'000.0)) *
                          (1 + 2.0 * d / (a + d) + 0.5 * (3'000.0 - 1'000.0) / 1'000.0);
  EXPECT_DOUBLE_EQ(hop_cost(l, o), expected);
}

// A draining pool makes a hop dearer, with or without a depletion reference; an empty pool pays
// at least the full scarcity term.
TEST(HopCost, GrowsAsThePoolDrains) {
  for (double reference : {0.0, 1'000'000.0}) {
    SnapshotLink l = base_link();
    l.pool_reference_bits = reference;
    const RouteOptions o = key_aware();
    double previous = 0;
    for (std::uint64_t pool : {100'000'000ULL, 1'000'000ULL, 10'000ULL, 1'000ULL, 300ULL, 0ULL}) {
      l.pool_bits = pool;
      const double c = hop_cost(l, o);
      EXPECT_GT(c, previous) << "pool " << pool << ", reference " << reference;
      previous = c;
    }
    EXPECT_GE(previous, 1.0 + o.weights.alpha);  // empty pool: full scarcity term
  }
}

// A slower generator makes a hop dearer (regeneration term).
TEST(HopCost, GrowsAsGenerationFalls) {
  SnapshotLink l = base_link();
  const RouteOptions o = key_aware();
  double previous = 0;
  for (double rate : {1e6, 1e4, 1e2, 1.0, 0.0}) {
    l.key_rate_bps = rate;
    const double c = hop_cost(l, o);
    EXPECT_GE(c, previous) << "rate " << rate;
    previous = c;
  }
  l.key_rate_bps = 1e6;
  const double fast = hop_cost(l, o);
  l.key_rate_bps = 10;
  EXPECT_GT(hop_cost(l, o), fast + 1.0);
}

// Consumption only costs once it outruns generation, then grows linearly with the excess
// (scaled by the link's base factor 1 + gamma * D / (g * horizon)).
TEST(HopCost, ConsumptionAboveGenerationCosts) {
  SnapshotLink l = base_link();
  const RouteOptions o = key_aware();
  const double base = 1 + o.weights.gamma * 256.0 / (1'000.0 * o.weights.horizon_s);
  const double idle = hop_cost(l, o);
  l.consumption_rate_bps = 900;  // below the 1000 b/s generation
  EXPECT_DOUBLE_EQ(hop_cost(l, o), idle);
  l.consumption_rate_bps = 2'000;
  EXPECT_NEAR(hop_cost(l, o) - idle, base * o.weights.beta * 1.0, 1e-12);
  l.consumption_rate_bps = 3'000;
  EXPECT_NEAR(hop_cost(l, o) - idle, base * o.weights.beta * 2.0, 1e-12);
}

// A larger demand makes the same link dearer; costs never fall below 1.
TEST(HopCost, DemandScalesScarcityAndRegeneration) {
  SnapshotLink l = base_link();
  l.pool_reference_bits = 1'000'000;
  EXPECT_LT(hop_cost(l, key_aware(256)), hop_cost(l, key_aware(4'096)));
  RouteOptions zero = key_aware();
  zero.weights = {0, 0, 0, 1, 256, 0, 0, 0};
  EXPECT_DOUBLE_EQ(hop_cost(l, zero), 1.0);
}

// The depletion factor is exp(kappa * used share of the reference pool): 1 for a pool as full as
// the reference (or fuller, or with no reference), e^(kappa/2) at half, e^kappa when empty, and
// it grows strictly as the pool drains.
TEST(HopCost, DepletionIsExponentialInTheUsedShare) {
  SnapshotLink l = base_link();
  RouteOptions o = key_aware(256);
  o.weights.alpha = 0;  // isolate the depletion factor from scarcity
  o.weights.kappa = 4;
  const double base = 1 + o.weights.gamma * 256.0 / (1'000.0 * o.weights.horizon_s);
  l.pool_reference_bits = 0;  // unknown reference: no depletion term
  EXPECT_DOUBLE_EQ(hop_cost(l, o), base);
  l.pool_reference_bits = 100'000;
  l.pool_bits = 100'000 + 256;  // available == reference
  EXPECT_DOUBLE_EQ(hop_cost(l, o), base);
  l.pool_bits = 200'000;  // fuller than the reference
  EXPECT_DOUBLE_EQ(hop_cost(l, o), base);
  l.pool_bits = 50'000 + 256;
  EXPECT_NEAR(hop_cost(l, o), base * std::exp(2.0), 1e-9);
  l.pool_bits = 256;
  EXPECT_NEAR(hop_cost(l, o), base * std::exp(4.0), 1e-9);
  double previous = 0;
  for (std::uint64_t pool : {100'256ULL, 80'000ULL, 40'000ULL, 10'000ULL, 1'000ULL, 0ULL}) {
    l.pool_bits = pool;
    const double c = hop_cost(l, o);
    EXPECT_GT(c, previous) << "pool " << pool;
    previous = c;
  }
  o.weights.kappa = 0;  // the previous cost: depletion ignored
  EXPECT_DOUBLE_EQ(hop_cost(l, o), base);
  // The default exponent takes the factor precomputed with the snapshot terms; same value.
  o.weights.kappa = KeyAwareWeights{}.kappa;
  l.pool_bits = 50'000 + 256;
  EXPECT_NEAR(hop_cost(l, o), base * std::exp(0.5 * KeyAwareWeights{}.kappa), 1e-9);
}

// A snapshot stores its fullest available pool in every link, and with_key_state refreshes it.
TEST(Snapshot, PoolReferenceIsTheFullestPool) {
  auto doc = make_doc({"A", "B", "C"}, {{"AB", "A", "B"}, {"BC", "B", "C"}});
  LiveState live = full_pools();
  live.links["AB"].pool_bits = 30'256;
  live.links["BC"].pool_bits = 10'256;
  auto snap = TopologySnapshot::from_doc(doc, live);
  for (const auto& l : snap->links()) EXPECT_DOUBLE_EQ(l.pool_reference_bits, 30'000.0);
  std::vector<KeyState> state{{1'256, 10'000, 0}, {5'256, 10'000, 0}};
  auto next = snap->with_key_state(state);
  for (const auto& l : next->links()) EXPECT_DOUBLE_EQ(l.pool_reference_bits, 5'000.0);
  EXPECT_DOUBLE_EQ(next->link_terms()[0].depletion, 1.0 - 1'000.0 / 5'000.0);
  EXPECT_DOUBLE_EQ(next->link_terms()[1].depletion, 0.0);
}

// Key-aware routing leaves a half-used direct link for a full two-hop detour (the depletion
// price of e^(kappa/2) outweighs a second hop); with kappa 0 it stays direct, and when both are
// equally full it takes the direct link.
TEST(HopCost, DepletionMovesLoadToRicherRoutes) {
  auto doc = make_doc({"A", "B", "C"}, {{"AB", "A", "B"}, {"BC", "B", "C"}, {"AC", "A", "C"}});
  LiveState live = full_pools(1'000'256);
  auto route = [&](const RouteOptions& o) {
    auto snap = TopologySnapshot::from_doc(doc, live);
    auto routes = compute_routes(*snap, "A", "C", o);
    return routes.empty() ? std::vector<std::string>{} : routes.front().links;
  };
  RouteOptions o = key_aware(1'024);
  EXPECT_EQ(route(o), std::vector<std::string>{"AC"});
  live.links["AC"].pool_bits = 500'256;
  EXPECT_EQ(route(o), (std::vector<std::string>{"AB", "BC"}));
  o.weights.kappa = 0;
  EXPECT_EQ(route(o), std::vector<std::string>{"AC"});
}

// Hop count and widest-shortest give every usable hop cost 1.
TEST(HopCost, OtherMetricsCountHops) {
  SnapshotLink l = base_link();
  l.pool_bits = 0;
  RouteOptions o;
  o.metric = RouteMetric::kHopCount;
  EXPECT_EQ(hop_cost(l, o), 1.0);
  o.metric = RouteMetric::kWidestShortest;
  EXPECT_EQ(hop_cost(l, o), 1.0);
}

// Metric names round-trip; an unknown name is InvalidArgument.
TEST(RouteMetricNames, RoundTrip) {
  for (auto m : {RouteMetric::kKeyAware, RouteMetric::kWidestShortest, RouteMetric::kHopCount}) {
    EXPECT_EQ(parse_route_metric(to_string(m)), m);
  }
  EXPECT_THROW(parse_route_metric("fastest"), InvalidArgument);
}

RouteOptions hop_count() {
  RouteOptions o;
  o.metric = RouteMetric::kHopCount;
  return o;
}

// Triangle A-B-C plus a direct A-C link: when AC is excluded the route detours via B.
class Exclusion : public ::testing::Test {
 protected:
  TopologyDoc doc_ =
      make_doc({"A", "B", "C"}, {{"AB", "A", "B"}, {"BC", "B", "C"}, {"AC", "A", "C"}});
  LiveState live_ = full_pools();

  std::vector<std::string> route_links(const RouteOptions& o = {}) {
    auto snap = TopologySnapshot::from_doc(doc_, live_);
    auto routes = compute_routes(*snap, "A", "C", o);
    return routes.empty() ? std::vector<std::string>{} : routes.front().links;
  }
  LinkVerdict verdict(const std::string& id, const RouteOptions& o = {}) {
    auto snap = TopologySnapshot::from_doc(doc_, live_);
    for (auto& v : explain_links(*snap, o)) {
      if (v.link_id == id) return v;
    }
    ADD_FAILURE() << "no verdict for " << id;
    return {};
  }
  void expect_detour_because(ExclusionReason r, const RouteOptions& o = {}) {
    EXPECT_EQ(route_links(o), (std::vector<std::string>{"AB", "BC"}));
    const LinkVerdict v = verdict("AC", o);
    EXPECT_FALSE(v.usable);
    EXPECT_EQ(v.reasons, std::vector<ExclusionReason>{r});
    EXPECT_FALSE(v.detail.empty());
    EXPECT_TRUE(verdict("AB", o).usable);
  }
};

// All links healthy: the direct link wins and every verdict is usable with a cost.
TEST_F(Exclusion, HealthyNetworkUsesDirectLink) {
  EXPECT_EQ(route_links(), std::vector<std::string>{"AC"});
  const LinkVerdict v = verdict("AC");
  EXPECT_TRUE(v.usable);
  EXPECT_TRUE(v.reasons.empty());
  EXPECT_TRUE(v.detail.empty());
  EXPECT_GE(v.cost, 1.0);
}

// Operational down is excluded.
TEST_F(Exclusion, LinkDown) {
  live_.links["AC"] = live_.defaults;
  live_.links["AC"].oper = OperState::kDown;
  expect_detour_because(ExclusionReason::kLinkDown);
}

// A link in alarm is excluded.
TEST_F(Exclusion, Alarm) {
  live_.links["AC"] = live_.defaults;
  live_.links["AC"].oper = OperState::kAlarm;
  expect_detour_because(ExclusionReason::kAlarm);
}

// Admin disabled is excluded.
TEST_F(Exclusion, AdminDisabled) {
  live_.links["AC"] = live_.defaults;
  live_.links["AC"].admin = AdminState::kDisabled;
  expect_detour_because(ExclusionReason::kAdminDisabled);
}

// Maintenance is excluded.
TEST_F(Exclusion, Maintenance) {
  live_.links["AC"] = live_.defaults;
  live_.links["AC"].admin = AdminState::kMaintenance;
  expect_detour_because(ExclusionReason::kMaintenance);
}

// QBER above the network threshold is excluded, and the detail names both values.
TEST_F(Exclusion, QberAboveNetworkThreshold) {
  live_.links["AC"] = live_.defaults;
  live_.links["AC"].qber = 0.12;
  expect_detour_because(ExclusionReason::kQberHigh);
  EXPECT_EQ(verdict("AC").detail, "qber 0.120 > threshold 0.110");
}

// A per-link QBER threshold overrides the network one in both directions.
TEST_F(Exclusion, QberPerLinkOverride) {
  live_.links["AC"] = live_.defaults;
  live_.links["AC"].qber = 0.05;
  live_.links["AC"].qber_threshold = 0.04;
  expect_detour_because(ExclusionReason::kQberHigh);
  live_.links["AC"].qber = 0.12;
  live_.links["AC"].qber_threshold = 0.15;
  EXPECT_EQ(route_links(), std::vector<std::string>{"AC"});
}

// A pool below the network floor is excluded.
TEST_F(Exclusion, PoolBelowNetworkFloor) {
  live_.links["AC"] = live_.defaults;
  live_.links["AC"].pool_bits = 255;
  expect_detour_because(ExclusionReason::kPoolBelowFloor);
  live_.links["AC"].pool_bits = 256;  // at the floor is still usable (but dear for key-aware)
  EXPECT_TRUE(verdict("AC").usable);
  EXPECT_EQ(route_links(hop_count()), std::vector<std::string>{"AC"});
}

// A per-link pool floor overrides the network one.
TEST_F(Exclusion, PoolPerLinkFloor) {
  live_.links["AC"] = live_.defaults;
  live_.links["AC"].pool_floor_bits = 2'000'000;
  expect_detour_because(ExclusionReason::kPoolBelowFloor);
  live_.thresholds.pool_floor_bits = 5'000'000;  // would exclude everything...
  live_.links["AB"] = live_.defaults;
  live_.links["BC"] = live_.defaults;
  live_.links["AB"].pool_floor_bits = 0;  // ...but for the per-link overrides
  live_.links["BC"].pool_floor_bits = 0;
  EXPECT_EQ(route_links(), (std::vector<std::string>{"AB", "BC"}));
}

// A pool that cannot cover floor + demand is excluded for that demand only.
TEST_F(Exclusion, PoolBelowDemand) {
  live_.links["AC"] = live_.defaults;
  live_.links["AC"].pool_bits = 256 + 1'000;
  RouteOptions o = hop_count();
  o.demand_bits = 1'000;
  EXPECT_EQ(route_links(o), std::vector<std::string>{"AC"});
  o.demand_bits = 1'001;
  expect_detour_because(ExclusionReason::kPoolBelowDemand, o);
}

// A disconnected end KM excludes its links unless require_connected is lifted.
TEST_F(Exclusion, KmDisconnectedIsControllable) {
  doc_ = make_doc({"A", "B", "C", "D"},
                  {{"AB", "A", "B"}, {"BC", "B", "C"}, {"AD", "A", "D"}, {"DC", "D", "C"}});
  live_.links["BC"] = live_.defaults;
  live_.links["BC"].pool_bits = 1'000;  // makes A-D-C the key-aware choice when usable
  live_.disconnected_kms = {"D"};
  RouteOptions o;
  EXPECT_EQ(route_links(o), (std::vector<std::string>{"AB", "BC"}));
  const LinkVerdict v = verdict("AD", o);
  EXPECT_EQ(v.reasons, std::vector<ExclusionReason>{ExclusionReason::kKmDisconnected});
  EXPECT_EQ(v.detail, "KM 'D' not connected");
  o.require_connected = false;
  EXPECT_EQ(route_links(o), (std::vector<std::string>{"AD", "DC"}));
  EXPECT_TRUE(verdict("AD", o).usable);
}

// Several reasons are all reported, in enum order.
TEST_F(Exclusion, AllReasonsAreListed) {
  live_.links["AC"] = live_.defaults;
  live_.links["AC"].oper = OperState::kDown;
  live_.links["AC"].admin = AdminState::kMaintenance;
  live_.links["AC"].qber = 0.5;
  live_.links["AC"].pool_bits = 0;
  RouteOptions o;
  o.avoid_links = {"AC"};
  const LinkVerdict v = verdict("AC", o);
  EXPECT_EQ(v.reasons, (std::vector<ExclusionReason>{
                           ExclusionReason::kLinkDown, ExclusionReason::kMaintenance,
                           ExclusionReason::kQberHigh, ExclusionReason::kPoolBelowFloor,
                           ExclusionReason::kAvoidedLink}));
  EXPECT_EQ(std::count(v.detail.begin(), v.detail.end(), ';'), 4);
  EXPECT_EQ(to_string(ExclusionReason::kPoolBelowFloor), "pool_below_floor");
}

// explain_links rejects avoid entries that name nothing.
TEST_F(Exclusion, ExplainRejectsUnknownAvoidEntries) {
  auto snap = TopologySnapshot::from_doc(doc_, live_);
  RouteOptions o;
  o.avoid_kms = {"Z"};
  EXPECT_THROW(explain_links(*snap, o), NotFound);
  o.avoid_kms.clear();
  o.avoid_links = {"ZZ"};
  EXPECT_THROW(explain_links(*snap, o), NotFound);
}

// Live values for a link the document does not declare are rejected.
TEST(Snapshot, RejectsLiveValuesForUnknownLinks) {
  LiveState live;
  live.links["nope"] = {};
  EXPECT_THROW(TopologySnapshot::from_doc(make_doc({"A", "B"}, {{"AB", "A", "B"}}), live),
               NotFound);
}

// Snapshots number KMs and links in ID order and find them by ID.
TEST(Snapshot, StableOrderAndLookup) {
  auto snap = TopologySnapshot::from_doc(
      make_doc({"C", "A", "B"}, {{"L2", "C", "A"}, {"L1", "A", "B"}, {"L3", "A", "B"}}),
      full_pools());
  ASSERT_EQ(snap->kms().size(), 3U);
  EXPECT_EQ(snap->kms()[0].km_id, "A");
  EXPECT_EQ(snap->kms()[2].km_id, "C");
  EXPECT_EQ(snap->links()[0].link_id, "L1");
  EXPECT_EQ(snap->link_index("L3"), 2U);
  EXPECT_EQ(snap->km_index("B"), 1U);
  EXPECT_FALSE(snap->km_index("Z"));
  EXPECT_EQ(boost::num_edges(snap->graph()), 3U);
  ASSERT_EQ(snap->parallel_groups().size(), 1U);
  EXPECT_EQ(snap->parallel_groups()[0], (std::vector<std::size_t>{0, 2}));
}

// with_key_state replaces pools and rates in a copy and leaves the original untouched.
TEST(Snapshot, WithKeyStateCopies) {
  auto snap = TopologySnapshot::from_doc(make_doc({"A", "B"}, {{"AB", "A", "B"}}), full_pools(7));
  std::vector<KeyState> state{{500, 20.0, 3.0}};
  auto next = snap->with_key_state(state);
  EXPECT_EQ(next->links()[0].pool_bits, 500U);
  EXPECT_EQ(next->links()[0].key_rate_bps, 20.0);
  EXPECT_EQ(next->links()[0].consumption_rate_bps, 3.0);
  EXPECT_EQ(snap->links()[0].pool_bits, 7U);
  EXPECT_THROW(snap->with_key_state({}), InvalidArgument);
}

// A Network without agents yields links that are down with disconnected KMs; once both KMs
// register and report, the link carries the route with the reported pool.
TEST(Snapshot, FromNetworkFollowsLiveState) {
  ManualClock clock;
  Network net(clock);
  net.apply_topology(make_doc({"A", "B"}, {{"AB", "A", "B"}}));
  auto before = TopologySnapshot::from_network(net);
  auto verdicts = explain_links(*before);
  ASSERT_EQ(verdicts.size(), 1U);
  EXPECT_FALSE(verdicts[0].usable);
  EXPECT_NE(std::find(verdicts[0].reasons.begin(), verdicts[0].reasons.end(),
                      ExclusionReason::kKmDisconnected),
            verdicts[0].reasons.end());
  EXPECT_TRUE(compute_routes(*before, "A", "B").empty());

  for (const std::string km : {"A", "B"}) {
    Registration reg;
    reg.km_id = km;
    reg.kma_endpoint = "127.0.0.1:1";
    reg.links.push_back({"AB", km == "A" ? "B" : "A"});
    net.register_km(reg);
    LinkReport rep;
    rep.link_id = "AB";
    rep.peer_kma_id = km == "A" ? "B" : "A";
    rep.up = true;
    rep.stored_key_bits = 50'000;
    rep.key_rate_bps = 1'000;
    rep.qber = 0.02;
    net.apply_status(km, {rep});
  }
  auto after = TopologySnapshot::from_network(net);
  EXPECT_EQ(after->version(), net.version());
  auto routes = compute_routes(*after, "A", "B");
  ASSERT_EQ(routes.size(), 1U);
  EXPECT_EQ(routes[0].links, std::vector<std::string>{"AB"});
  EXPECT_EQ(routes[0].bottleneck_bits, 50'000U);
}

}  // namespace
}  // namespace qkdn::controller
