// Issue 20: the headroom-gated key-aware cost, and trust constraints on the intermediate KMs
// (Boost.Graph routing in controller/core).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "qkdn/controller/error.hpp"
#include "qkdn/controller/routing.hpp"
#include "qkdn/controller/topology.hpp"
#include "routing_test_util.hpp"

namespace qkdn::controller {
namespace {

using testing::full_pools;
using testing::make_doc;

SnapshotLink link_with(std::uint64_t pool_bits, double rate = 1'000, double consumption = 0) {
  SnapshotLink l;
  l.link_id = "L";
  l.a = "A";
  l.b = "B";
  l.pool_bits = pool_bits;
  l.key_rate_bps = rate;
  l.consumption_rate_bps = consumption;
  l.pool_floor_bits = 256;
  l.qber_threshold = 0.11;
  l.pool_reference_bits = 1'000'000;
  return l;
}

// The demand-based gate alone (headroom_share 0): these links' pools are far below the reference
// pool of 1 Mbit, which the share term would price on its own (tested separately).
KeyAwareWeights demand_gate() {
  KeyAwareWeights w;
  w.headroom_share = 0;
  return w;
}

RouteOptions key_aware(std::uint64_t demand, KeyAwareWeights w = demand_gate()) {
  RouteOptions o;
  o.metric = RouteMetric::kKeyAware;
  o.demand_bits = demand;
  o.weights = w;
  return o;
}

// ---- the headroom gate ----------------------------------------------------------------------

// A hop whose pool holds at least headroom x expected demand costs 1, as in hop count, plus a
// tie-break below 0.001, whatever its rate or its depletion against the fullest pool (the
// ungated price is far above 1).
TEST(HeadroomGate, PlentifulHopCostsExactlyOne) {
  for (double rate : {1.0, 100.0, 1e5}) {
    for (std::uint64_t demand : {256ULL, 4'096ULL}) {
      // 4 x demand (no drain) plus the floor: just at the gate.
      const std::uint64_t pool = 256 + 4 * demand;
      SnapshotLink l = link_with(pool, rate);
      const double c = hop_cost(l, key_aware(demand));
      EXPECT_GE(c, 1.0) << rate << " " << demand;
      EXPECT_LT(c, 1.001) << rate << " " << demand;
      EXPECT_GT(hop_cost(l, key_aware(demand, KeyAwareWeights::ungated())), 1.5)
          << rate << " " << demand;
    }
  }
}

// At the demand itself (the last usable pool) the gate is fully open: the cost is the price P.
TEST(HeadroomGate, AtTheDemandTheFullPriceApplies) {
  SnapshotLink l = link_with(256 + 1'024);
  const double price = hop_cost(l, key_aware(1'024, KeyAwareWeights::ungated()));
  EXPECT_DOUBLE_EQ(hop_cost(l, key_aware(1'024)), price + 1e-9 * price);
}

// Below the gate the cost is 1 + u^2 (P - 1), u = (H - A) / (H - L) clamped to [0, 1], with
// L = max(D, full_price_share H): the whole price is back once the pool is down to half the gate
// (default share 0.5), and the cost never falls as the pool drains.
TEST(HeadroomGate, RisesQuadraticallyBelowTheGate) {
  const double d = 1'000;
  const double h = 4 * d;
  const double low = 0.5 * h;
  double previous = 0;
  for (double a = 4'000; a >= 1'000; a -= 250) {
    SnapshotLink l = link_with(static_cast<std::uint64_t>(256 + a));
    const double price = hop_cost(l, key_aware(1'000, KeyAwareWeights::ungated()));
    const double u = std::min(1.0, (h - a) / (h - low));
    const double c = hop_cost(l, key_aware(1'000));
    EXPECT_NEAR(c, 1 + u * u * (price - 1) + 1e-9 * price, 1e-12) << "available " << a;
    EXPECT_GE(c, previous) << "available " << a;
    previous = c;
  }
}

// The first gated cost brought the price back only at the demand itself: a pool at half the gate
// cost 1 + 4 (P - 1) / 9 here (a quarter of the price where the gate is far above the demand),
// and on cost266 at twice the reference load the key-aware cost
// blocked more than the ungated one (bench_demand_replay). From half the gate down the cost is
// the ungated price; full_price_share 0 restores the old ramp.
TEST(HeadroomGate, FullPriceFromHalfTheGateDown) {
  for (double a : {2'000.0, 1'500.0, 1'000.0}) {
    SnapshotLink l = link_with(static_cast<std::uint64_t>(256 + a));
    const double price = hop_cost(l, key_aware(1'000, KeyAwareWeights::ungated()));
    EXPECT_DOUBLE_EQ(hop_cost(l, key_aware(1'000)), price + 1e-9 * price) << "available " << a;
  }
  SnapshotLink half = link_with(256 + 2'000);
  KeyAwareWeights old_ramp = demand_gate();
  old_ramp.full_price_share = 0;
  const double price = hop_cost(half, key_aware(1'000, KeyAwareWeights::ungated()));
  EXPECT_NEAR(hop_cost(half, key_aware(1'000, old_ramp)), 1 + 4 * (price - 1) / 9 + 1e-9 * price,
              1e-12);
}

// Net drain counts towards the expected demand: the same pool is plentiful for an idle link and
// priced for one losing key faster than it makes it.
TEST(HeadroomGate, NetDrainRaisesTheExpectedDemand) {
  SnapshotLink idle = link_with(256 + 100'000, 1'000, 500);
  EXPECT_LT(hop_cost(idle, key_aware(1'024)), 1.001);
  SnapshotLink draining = link_with(256 + 100'000, 1'000, 1'200);  // 200 b/s x 300 s = 60 kbit
  EXPECT_GT(hop_cost(draining, key_aware(1'024)), 1.01);
}

// A ladder: the direct route S-X-D (2 hops) and a detour S-Y-Z-D (3 hops).
TopologyDoc ladder() {
  return make_doc(
      {"S", "X", "Y", "Z", "D"},
      {{"SX", "S", "X"}, {"XD", "X", "D"}, {"SY", "S", "Y"}, {"YZ", "Y", "Z"}, {"ZD", "Z", "D"}});
}

// Before the gate, a short route over slow links lost to a longer one over fast links although
// every pool was full (one more hop, one more trusted node, one more key spent); with the gate
// (default weights) every pool holds plenty and the short one wins.
TEST(HeadroomGate, NoDetourWhilePoolsHoldPlenty) {
  LiveState live = full_pools(1'000'000);
  for (const char* l : {"SX", "XD"}) {
    live.links[l].pool_bits = 1'000'000;
    live.links[l].key_rate_bps = 100;
  }
  auto snap = TopologySnapshot::from_doc(ladder(), live);
  RouteOptions o = key_aware(2'048, KeyAwareWeights{});
  o.require_connected = false;
  auto gated = compute_routes(*snap, "S", "D", o);
  ASSERT_EQ(gated.size(), 1U);
  EXPECT_EQ(gated[0].kms, (std::vector<std::string>{"S", "X", "D"}));
  EXPECT_NEAR(gated[0].cost, 2.0, 0.002);
  o.weights = KeyAwareWeights::ungated();
  auto before = compute_routes(*snap, "S", "D", o);
  ASSERT_EQ(before.size(), 1U);
  EXPECT_EQ(before[0].kms, (std::vector<std::string>{"S", "Y", "Z", "D"}));
}

// The share term: in a busy network (consumption at least its generation) a pool below
// headroom_share of the fullest pool is priced even when it holds far more than its demand
// (networks whose links barely regenerate share a stock); at or above that share it costs 1.
TEST(HeadroomGate, ShareOfTheFullestPoolOpensTheGate) {
  KeyAwareWeights w;                             // headroom_share 0.9
  SnapshotLink full = link_with(256 + 950'000);  // reference 1 Mbit
  full.network_load = 1;
  EXPECT_LT(hop_cost(full, key_aware(256, w)), 1.001);
  SnapshotLink half = link_with(256 + 500'000);
  half.network_load = 1;
  EXPECT_GT(hop_cost(half, key_aware(256, w)), 1.1);
  EXPECT_LT(hop_cost(half, key_aware(256)), 1.001);  // the demand gate alone: plenty
}

// The share term counts once the network consumes any key: while nothing is consumed (pools
// filling after a start) a pool far below the fullest one but far above its demand costs 1.
// (Before, the share term applied in an idle network too, and germany50's first route while
// pools filled took 11 hops instead of 6.)
TEST(HeadroomGate, ShareTermOnlyOnceKeyIsConsumed) {
  KeyAwareWeights w;  // headroom_share 0.9
  SnapshotLink half = link_with(256 + 500'000);
  half.network_load = 0;
  EXPECT_LT(hop_cost(half, key_aware(256, w)), 1.001);
  half.network_load = 1e-6;
  EXPECT_GT(hop_cost(half, key_aware(256, w)), 1.1);
  half.network_load = 1;
  EXPECT_GT(hop_cost(half, key_aware(256, w)), 1.1);
}

// The snapshot measures the load: total consumption over total generation, capped to 1.
TEST(HeadroomGate, SnapshotMeasuresTheNetworkLoad) {
  LiveState live = full_pools(1'000'000);
  auto idle = TopologySnapshot::from_doc(ladder(), live);
  EXPECT_EQ(idle->links()[0].network_load, 0.0);
  live.links["SX"].consumption_rate_bps = 10'000;  // 5 links x 10 kb/s generated
  auto busy = TopologySnapshot::from_doc(ladder(), live);
  for (const auto& l : busy->links()) EXPECT_DOUBLE_EQ(l.network_load, 0.2);
  live.links["XD"].consumption_rate_bps = 90'000;
  auto over = TopologySnapshot::from_doc(ladder(), live);
  EXPECT_DOUBLE_EQ(over->links()[0].network_load, 1.0);
}

// The detour comes back as soon as it pays: a hop of the short route near its demand.
TEST(HeadroomGate, DetourWhenAHopNearsItsDemand) {
  LiveState live = full_pools(1'000'000);
  live.links["XD"].pool_bits = 256 + 2'048 + 512;  // barely more than the demand
  auto snap = TopologySnapshot::from_doc(ladder(), live);
  RouteOptions o = key_aware(2'048);
  o.require_connected = false;
  auto r = compute_routes(*snap, "S", "D", o);
  ASSERT_EQ(r.size(), 1U);
  EXPECT_EQ(r[0].kms, (std::vector<std::string>{"S", "Y", "Z", "D"}));
}

// A negative headroom is refused like any negative weight.
TEST(HeadroomGate, NegativeHeadroomIsInvalid) {
  auto snap = TopologySnapshot::from_doc(ladder(), full_pools());
  RouteOptions o = key_aware(0);
  o.require_connected = false;
  o.weights.headroom = -1;
  EXPECT_THROW(compute_routes(*snap, "S", "D", o), InvalidArgument);
}

// ---- trust constraints ---------------------------------------------------------------------

// The ladder with trust: X (the short route's relay) is rated 20 and tagged; Y, Z rated 80.
TopologyDoc trusted_ladder() {
  TopologyDoc doc = ladder();
  for (auto& km : doc.kms) {
    if (km.km_id == "X") {
      km.trust_level = 20;
      km.tags = {"operator:other", "jurisdiction:XX"};
    } else if (km.km_id == "Y" || km.km_id == "Z") {
      km.trust_level = 80;
      km.tags = {"operator:us"};
    }
  }
  return doc;
}

RouteOptions hops_only() {
  RouteOptions o;
  o.metric = RouteMetric::kHopCount;
  o.require_connected = false;
  return o;
}

std::vector<std::string> kms_of(const std::vector<Route>& routes, std::size_t i = 0) {
  return routes.size() > i ? routes[i].kms : std::vector<std::string>{};
}

// Without constraints the short route crosses X; with a minimum trust it goes around X.
TEST(TrustConstraints, MinimumTrustRoutesAroundALowTrustKm) {
  auto snap = TopologySnapshot::from_doc(trusted_ladder(), full_pools());
  RouteOptions o = hops_only();
  EXPECT_EQ(kms_of(compute_routes(*snap, "S", "D", o)), (std::vector<std::string>{"S", "X", "D"}));
  o.trust.min_trust_level = 50;
  EXPECT_EQ(kms_of(compute_routes(*snap, "S", "D", o)),
            (std::vector<std::string>{"S", "Y", "Z", "D"}));
  o.trust.min_trust_level = 81;
  EXPECT_TRUE(compute_routes(*snap, "S", "D", o).empty());
}

// An avoided tag excludes every KM carrying it, in every metric.
TEST(TrustConstraints, AvoidedTagsRouteAround) {
  auto snap = TopologySnapshot::from_doc(trusted_ladder(), full_pools());
  for (auto metric :
       {RouteMetric::kHopCount, RouteMetric::kKeyAware, RouteMetric::kWidestShortest}) {
    RouteOptions o = hops_only();
    o.metric = metric;
    o.trust.avoid_tags = {"jurisdiction:XX"};
    EXPECT_EQ(kms_of(compute_routes(*snap, "S", "D", o)),
              (std::vector<std::string>{"S", "Y", "Z", "D"}))
        << to_string(metric);
    o.trust.avoid_tags = {"operator:us", "jurisdiction:XX"};
    EXPECT_TRUE(compute_routes(*snap, "S", "D", o).empty()) << to_string(metric);
  }
}

// The two end KMs are the SAEs' own: they are never excluded for their trust or tags.
TEST(TrustConstraints, EndKmsAreExempt) {
  auto snap = TopologySnapshot::from_doc(trusted_ladder(), full_pools());
  RouteOptions o = hops_only();
  o.trust.min_trust_level = 50;
  o.trust.avoid_tags = {"jurisdiction:XX"};
  EXPECT_EQ(kms_of(compute_routes(*snap, "X", "D", o)), (std::vector<std::string>{"X", "D"}));
  EXPECT_EQ(kms_of(compute_routes(*snap, "S", "X", o)), (std::vector<std::string>{"S", "X"}));
}

// An unrated KM counts as trust 0: any minimum above 0 excludes it.
TEST(TrustConstraints, UnratedKmsCountAsZero) {
  TopologyDoc doc = trusted_ladder();
  for (auto& km : doc.kms) {
    if (km.km_id == "Y") km.trust_level.reset();
  }
  auto snap = TopologySnapshot::from_doc(doc, full_pools());
  RouteOptions o = hops_only();
  o.trust.min_trust_level = 21;  // X (20) is out; Y (unrated) is out too
  EXPECT_TRUE(compute_routes(*snap, "S", "D", o).empty());
  o.trust.min_trust_level = 0;
  EXPECT_FALSE(compute_routes(*snap, "S", "D", o).empty());
  doc.kms[2].trust_level = 21;  // Y rated: the detour opens
  snap = TopologySnapshot::from_doc(doc, full_pools());
  o.trust.min_trust_level = 21;
  EXPECT_EQ(kms_of(compute_routes(*snap, "S", "D", o)),
            (std::vector<std::string>{"S", "Y", "Z", "D"}));
}

// At most N intermediate KMs: the detour (2 intermediates) is refused when only 1 is allowed,
// even when the short route is excluded by trust; max_hops and max_intermediates both bind.
TEST(TrustConstraints, MaxIntermediatesLimitsExposure) {
  auto snap = TopologySnapshot::from_doc(trusted_ladder(), full_pools());
  RouteOptions o = hops_only();
  o.trust.max_intermediates = 1;
  EXPECT_EQ(kms_of(compute_routes(*snap, "S", "D", o)), (std::vector<std::string>{"S", "X", "D"}));
  o.trust.min_trust_level = 50;
  EXPECT_TRUE(compute_routes(*snap, "S", "D", o).empty());
  o.trust.max_intermediates = 2;
  EXPECT_EQ(kms_of(compute_routes(*snap, "S", "D", o)),
            (std::vector<std::string>{"S", "Y", "Z", "D"}));
  o.max_hops = 2;  // the stricter of the two limits applies
  EXPECT_TRUE(compute_routes(*snap, "S", "D", o).empty());
  o.max_hops.reset();
  o.trust = {};
  o.trust.max_intermediates = 0;  // direct links only
  EXPECT_TRUE(compute_routes(*snap, "S", "D", o).empty());
  EXPECT_EQ(kms_of(compute_routes(*snap, "S", "X", o)), (std::vector<std::string>{"S", "X"}));
}

// Never relaxed: every one of k alternatives meets the constraints (Yen's spurs included).
TEST(TrustConstraints, EveryAlternativeMeetsTheConstraints) {
  // A 4 x 4 grid; the middle KMs are untrusted.
  TopologyDoc doc;
  doc.name = "grid";
  auto id = [](int r, int c) { return "G" + std::to_string(r) + std::to_string(c); };
  for (int r = 0; r < 4; ++r) {
    for (int c = 0; c < 4; ++c) {
      KmSpec km{id(r, c), ""};
      const bool middle = r > 0 && r < 3 && c > 0 && c < 3;
      km.trust_level = middle ? 10 : 90;
      doc.kms.push_back(km);
      if (c + 1 < 4) doc.links.push_back({id(r, c) + "h", id(r, c), id(r, c + 1), 1e4, 10, 0.02});
      if (r + 1 < 4) doc.links.push_back({id(r, c) + "v", id(r, c), id(r + 1, c), 1e4, 10, 0.02});
    }
  }
  auto snap = TopologySnapshot::from_doc(doc, full_pools());
  RouteOptions o = hops_only();
  o.k = 8;
  o.trust.min_trust_level = 50;
  auto routes = compute_routes(*snap, "G00", "G33", o);
  ASSERT_EQ(routes.size(), 2U);  // only the two border routes remain
  for (const auto& r : routes) {
    EXPECT_FALSE(trust_violation(*snap, r, o.trust)) << r.kms.size();
  }
  o.trust = {};
  EXPECT_EQ(compute_routes(*snap, "G00", "G33", o).size(), 8U);
}

// A refusal says whether trust or the network is to blame, and names the offending KM.
TEST(TrustConstraints, ExplainNoRouteNamesTheReason) {
  auto snap = TopologySnapshot::from_doc(trusted_ladder(), full_pools());
  RouteOptions o = hops_only();
  o.trust.min_trust_level = 90;
  ASSERT_TRUE(compute_routes(*snap, "S", "D", o).empty());
  auto why = explain_no_route(*snap, "S", "D", o);
  EXPECT_EQ(why.code, "trust_constraints");
  EXPECT_NE(why.detail.find("trust >= 90"), std::string::npos) << why.detail;
  EXPECT_NE(why.detail.find("'X' (trust 20 < 90)"), std::string::npos) << why.detail;

  LiveState down = full_pools();
  for (const char* l : {"XD", "ZD"}) down.links[l].oper = OperState::kDown;
  auto cut = TopologySnapshot::from_doc(trusted_ladder(), down);
  why = explain_no_route(*cut, "S", "D", o);
  EXPECT_EQ(why.code, "no_usable_path");
  EXPECT_NE(why.detail.find("even without the trust constraints"), std::string::npos);
}

// trust_violation lists every reason of a route that breaks the constraints.
TEST(TrustConstraints, TrustViolationDescribesEachKm) {
  auto snap = TopologySnapshot::from_doc(trusted_ladder(), full_pools());
  Route r{{"S", "Y", "Z", "D"}, {"SY", "YZ", "ZD"}, 3, 0};
  TrustConstraints c;
  EXPECT_FALSE(trust_violation(*snap, r, c));
  c.max_intermediates = 1;
  c.avoid_tags = {"operator:us"};
  auto why = trust_violation(*snap, r, c);
  ASSERT_TRUE(why);
  EXPECT_NE(why->find("2 intermediate KMs (at most 1)"), std::string::npos) << *why;
  EXPECT_NE(why->find("'Y' (tagged operator:us)"), std::string::npos) << *why;
  EXPECT_NE(why->find("'Z' (tagged operator:us)"), std::string::npos) << *why;
}

// Invalid constraints are refused, naming the field.
TEST(TrustConstraints, InvalidConstraintsAreRefused) {
  auto snap = TopologySnapshot::from_doc(trusted_ladder(), full_pools());
  RouteOptions o = hops_only();
  o.trust.min_trust_level = 101;
  EXPECT_THROW(compute_routes(*snap, "S", "D", o), InvalidArgument);
  o.trust.min_trust_level = -1;
  EXPECT_THROW(compute_routes(*snap, "S", "D", o), InvalidArgument);
  o.trust.min_trust_level = 0;
  o.trust.avoid_tags = {"bad tag"};
  EXPECT_THROW(compute_routes(*snap, "S", "D", o), InvalidArgument);
  o.trust.avoid_tags = {"a", "a"};
  try {
    validate_trust_constraints(o.trust);
    ADD_FAILURE() << "duplicate tag accepted";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("avoid_tags[1]: duplicate tag 'a'"), std::string::npos);
  }
}

// The stricter of two sets of constraints (a pair's on top of its policy's).
TEST(TrustConstraints, StrictestTakesTheStricterOfEach) {
  TrustConstraints a;
  a.max_intermediates = 3;
  a.min_trust_level = 40;
  a.avoid_tags = {"x"};
  TrustConstraints b;
  b.min_trust_level = 70;
  b.avoid_tags = {"y", "x"};
  auto c = TrustConstraints::strictest(a, b);
  EXPECT_EQ(c.max_intermediates, std::optional<std::size_t>(3));
  EXPECT_EQ(c.min_trust_level, 70);
  EXPECT_EQ(c.avoid_tags, (std::vector<std::string>{"x", "y"}));
  b.max_intermediates = 1;
  EXPECT_EQ(TrustConstraints::strictest(a, b).max_intermediates, std::optional<std::size_t>(1));
  EXPECT_TRUE(TrustConstraints{}.empty());
  EXPECT_FALSE(c.empty());
  EXPECT_EQ(describe(c), "at most 3 intermediate KMs, trust >= 70, avoiding tags [x, y]");
}

// The topology document checks trust levels and tags, naming the element.
TEST(TrustModel, TopologyValidatesTrustAndTags) {
  auto expect_invalid = [](const TopologyDoc& doc, const std::string& what) {
    try {
      validate_topology(doc);
      ADD_FAILURE() << "accepted: " << what;
    } catch (const InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
    }
  };
  TopologyDoc doc = trusted_ladder();
  EXPECT_NO_THROW(validate_topology(doc));
  doc.kms[1].trust_level = 101;
  expect_invalid(doc, "kms[1].trust_level: must be an integer in [0, 100], got 101");
  doc.kms[1].trust_level = -5;
  expect_invalid(doc, "kms[1].trust_level");
  doc = trusted_ladder();
  doc.kms[1].tags = {"ok", "not ok"};
  expect_invalid(doc, "kms[1].tags[1]: invalid tag 'not ok'");
  doc.kms[1].tags = {"a", "a"};
  expect_invalid(doc, "kms[1].tags[1]: duplicate tag 'a'");
}

}  // namespace
}  // namespace qkdn::controller
