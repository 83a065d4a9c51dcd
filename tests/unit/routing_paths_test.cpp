// Route choice per metric, parallel links, constraints, next hops and errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "qkdn/controller/error.hpp"
#include "qkdn/controller/routing.hpp"
#include "routing_test_util.hpp"

namespace qkdn::controller {
namespace {

using testing::full_pools;
using testing::make_doc;

using Strings = std::vector<std::string>;

RouteOptions with_metric(RouteMetric m, std::size_t k = 1) {
  RouteOptions o;
  o.metric = m;
  o.k = k;
  return o;
}

// Of three parallel links the one with the fullest pool carries the hop, for every metric.
TEST(Paths, ParallelLinksChooseTheFullerPool) {
  auto doc = make_doc({"A", "B"}, {{"P1", "A", "B"}, {"P2", "A", "B"}, {"P3", "A", "B"}});
  LiveState live = full_pools();
  live.links["P1"].pool_bits = 10'000;
  live.links["P2"].pool_bits = 900'000;
  live.links["P3"].pool_bits = 50'000;
  auto snap = TopologySnapshot::from_doc(doc, live);
  for (auto m : {RouteMetric::kKeyAware, RouteMetric::kWidestShortest, RouteMetric::kHopCount}) {
    auto routes = compute_routes(*snap, "A", "B", with_metric(m, 3));
    ASSERT_EQ(routes.size(), 1U) << to_string(m);  // parallel links are one KM hop, not 3 routes
    EXPECT_EQ(routes[0].kms, (Strings{"A", "B"}));
    EXPECT_EQ(routes[0].links, Strings{"P2"}) << to_string(m);
    EXPECT_EQ(routes[0].bottleneck_bits, 900'000U);
  }
}

// Key-aware picks the cheaper of parallel links even when the fuller one generates too slowly.
// (Both pools within the headroom share of the fullest: the gated costs tie and the tie-break on
// the price decides; issue 20.)
TEST(Paths, ParallelLinksKeyAwareWeighsRates) {
  auto doc = make_doc({"A", "B"}, {{"P1", "A", "B"}, {"P2", "A", "B"}});
  LiveState live = full_pools();
  live.links["P1"].pool_bits = 28'000;
  live.links["P1"].key_rate_bps = 100'000;
  live.links["P2"].pool_bits = 30'000;
  live.links["P2"].key_rate_bps = 5;
  auto snap = TopologySnapshot::from_doc(doc, live);
  EXPECT_EQ(compute_routes(*snap, "A", "B")[0].links, Strings{"P1"});
  EXPECT_EQ(compute_routes(*snap, "A", "B", with_metric(RouteMetric::kHopCount))[0].links,
            Strings{"P2"});
}

// Equal parallel links tie-break on link_id.
TEST(Paths, ParallelTieBreaksOnLinkId) {
  auto doc = make_doc({"A", "B"}, {{"Q2", "A", "B"}, {"Q1", "A", "B"}});
  auto snap = TopologySnapshot::from_doc(doc, full_pools());
  EXPECT_EQ(compute_routes(*snap, "A", "B")[0].links, Strings{"Q1"});
}

// Diamond A-{B,C}-D plus a 3-hop detour A-E-F-D: pools decide between the two-hop branches.
class Diamond : public ::testing::Test {
 protected:
  TopologyDoc doc_ = make_doc({"A", "B", "C", "D", "E", "F"}, {{"AB", "A", "B"},
                                                               {"BD", "B", "D"},
                                                               {"AC", "A", "C"},
                                                               {"CD", "C", "D"},
                                                               {"AE", "A", "E"},
                                                               {"EF", "E", "F"},
                                                               {"FD", "F", "D"}});
  LiveState live_ = full_pools(5'000'000);
  void set_pool(const std::string& id, std::uint64_t bits) {
    live_.links[id] = live_.defaults;
    live_.links[id].pool_bits = bits;
  }
  std::vector<Route> routes(const RouteOptions& o) {
    return compute_routes(*TopologySnapshot::from_doc(doc_, live_), "A", "D", o);
  }
};

// Hop count ignores pools: the two 2-hop routes come first (either order), then the 3-hop one.
TEST_F(Diamond, HopCountIsTheBaseline) {
  set_pool("AB", 300);
  set_pool("BD", 300);
  auto r = routes(with_metric(RouteMetric::kHopCount, 3));
  ASSERT_EQ(r.size(), 3U);
  EXPECT_EQ(r[0].cost, 2.0);
  EXPECT_EQ(r[1].cost, 2.0);
  EXPECT_NE(r[0].kms, r[1].kms);
  EXPECT_EQ(r[2].kms, (Strings{"A", "E", "F", "D"}));
  EXPECT_EQ(r[2].cost, 3.0);
}

// Ties are resolved by ID order, not by declaration order: a document listing KMs and links in
// another order gives identical routes.
TEST_F(Diamond, TiesDoNotDependOnDeclarationOrder) {
  TopologyDoc reversed = doc_;
  std::reverse(reversed.kms.begin(), reversed.kms.end());
  std::reverse(reversed.links.begin(), reversed.links.end());
  for (auto m : {RouteMetric::kKeyAware, RouteMetric::kWidestShortest, RouteMetric::kHopCount}) {
    auto x = compute_routes(*TopologySnapshot::from_doc(doc_, live_), "A", "D", with_metric(m, 3));
    auto y =
        compute_routes(*TopologySnapshot::from_doc(reversed, live_), "A", "D", with_metric(m, 3));
    ASSERT_EQ(x.size(), y.size());
    for (std::size_t i = 0; i < x.size(); ++i) {
      EXPECT_EQ(x[i].links, y[i].links) << to_string(m) << " route " << i;
      EXPECT_EQ(x[i].cost, y[i].cost);
    }
  }
}

// Key-aware steers away from the drained branch to the equally short full one.
TEST_F(Diamond, KeyAwareAvoidsTheDrainedBranch) {
  set_pool("AB", 300);
  auto r = routes(with_metric(RouteMetric::kKeyAware, 2));
  ASSERT_EQ(r.size(), 2U);
  EXPECT_EQ(r[0].kms, (Strings{"A", "C", "D"}));
  EXPECT_LT(r[0].cost, r[1].cost);
}

// Key-aware takes a longer route when both short branches are nearly empty.
TEST_F(Diamond, KeyAwareDetoursAroundScarcity) {
  set_pool("AB", 300);
  set_pool("CD", 300);
  auto r = routes(with_metric(RouteMetric::kKeyAware));
  ASSERT_EQ(r.size(), 1U);
  EXPECT_EQ(r[0].kms, (Strings{"A", "E", "F", "D"}));
  EXPECT_EQ(r[0].links, (Strings{"AE", "EF", "FD"}));
}

// Key-aware avoids a hop whose consumption outruns its generation.
TEST_F(Diamond, KeyAwareAvoidsOverdrawnLinks) {
  live_.links["BD"] = live_.defaults;
  live_.links["BD"].consumption_rate_bps = 50'000;  // 5x its 10 kb/s generation
  EXPECT_EQ(routes(with_metric(RouteMetric::kKeyAware))[0].kms, (Strings{"A", "C", "D"}));
}

// Key-aware avoids a slow generator even with a full pool.
TEST_F(Diamond, KeyAwareAvoidsSlowGenerators) {
  live_.links["AB"] = live_.defaults;
  live_.links["AB"].key_rate_bps = 2;
  EXPECT_EQ(routes(with_metric(RouteMetric::kKeyAware))[0].kms, (Strings{"A", "C", "D"}));
}

// Widest-shortest prefers the wide path even when it is longer, and tie-breaks on hops.
TEST_F(Diamond, WidestShortestPrefersTheWidePath) {
  set_pool("AB", 1'000'000);
  set_pool("CD", 2'000'000);
  set_pool("AE", 4'000'000);
  set_pool("EF", 4'000'000);
  set_pool("FD", 4'000'000);
  auto r = routes(with_metric(RouteMetric::kWidestShortest, 3));
  ASSERT_EQ(r.size(), 3U);
  EXPECT_EQ(r[0].kms, (Strings{"A", "E", "F", "D"}));
  EXPECT_EQ(r[0].bottleneck_bits, 4'000'000U);
  EXPECT_EQ(r[0].cost, 3.0);
  EXPECT_EQ(r[1].kms, (Strings{"A", "C", "D"}));
  EXPECT_EQ(r[1].bottleneck_bits, 2'000'000U);
  EXPECT_EQ(r[2].bottleneck_bits, 1'000'000U);
  set_pool("EF", 2'000'000);  // now A-C-D and A-E-F-D are equally wide: fewer hops wins
  r = routes(with_metric(RouteMetric::kWidestShortest));
  EXPECT_EQ(r[0].kms, (Strings{"A", "C", "D"}));
}

// max_hops drops routes that are too long, even the cheapest one.
TEST_F(Diamond, MaxHops) {
  set_pool("AB", 300);
  set_pool("CD", 300);
  RouteOptions o = with_metric(RouteMetric::kKeyAware, 5);
  o.max_hops = 2;
  auto r = routes(o);
  ASSERT_EQ(r.size(), 2U);
  for (const auto& route : r) EXPECT_EQ(route.links.size(), 2U);
  o.max_hops = 1;
  EXPECT_TRUE(routes(o).empty());
  o.metric = RouteMetric::kWidestShortest;
  o.max_hops = 2;
  r = routes(o);
  ASSERT_EQ(r.size(), 2U);
  EXPECT_EQ(r[0].links.size(), 2U);
}

// avoid_kms keeps every route off the named KMs.
TEST_F(Diamond, AvoidKm) {
  RouteOptions o = with_metric(RouteMetric::kHopCount, 5);
  o.avoid_kms = {"B", "F"};
  auto r = routes(o);
  ASSERT_EQ(r.size(), 1U);
  EXPECT_EQ(r[0].kms, (Strings{"A", "C", "D"}));
  o.avoid_kms = {"D"};
  EXPECT_TRUE(routes(o).empty());
}

// avoid_links keeps every route off the named links.
TEST_F(Diamond, AvoidLink) {
  RouteOptions o = with_metric(RouteMetric::kHopCount, 5);
  o.avoid_links = {"BD", "EF"};
  auto r = routes(o);
  ASSERT_EQ(r.size(), 1U);
  EXPECT_EQ(r[0].links, (Strings{"AC", "CD"}));
}

// k larger than the number of loopless routes returns them all, each once, best first.
TEST_F(Diamond, KBeyondAvailableRoutes) {
  auto r = routes(with_metric(RouteMetric::kKeyAware, 10));
  ASSERT_EQ(r.size(), 3U);
  EXPECT_LE(r[0].cost, r[1].cost);
  EXPECT_LE(r[1].cost, r[2].cost);
}

// next_hops lists the distinct first hops of the k best routes in route order.
TEST_F(Diamond, NextHops) {
  set_pool("AB", 300);
  auto snap = TopologySnapshot::from_doc(doc_, live_);
  EXPECT_EQ(next_hops(*snap, "A", "D", with_metric(RouteMetric::kKeyAware, 3)),
            (Strings{"C", "E", "B"}));
  EXPECT_EQ(next_hops(*snap, "A", "D", with_metric(RouteMetric::kKeyAware, 1)), Strings{"C"});
  EXPECT_TRUE(next_hops(*snap, "A", "A").empty());
}

// Unknown KMs throw NotFound; k = 0 is InvalidArgument; src == dst is one zero-hop route.
TEST(Paths, Errors) {
  auto snap = TopologySnapshot::from_doc(make_doc({"A", "B"}, {{"AB", "A", "B"}}), full_pools());
  EXPECT_THROW(compute_routes(*snap, "A", "X"), NotFound);
  EXPECT_THROW(compute_routes(*snap, "X", "A"), NotFound);
  EXPECT_THROW(next_hops(*snap, "X", "A"), NotFound);
  RouteOptions o;
  o.avoid_kms = {"nope"};
  EXPECT_THROW(compute_routes(*snap, "A", "B", o), NotFound);
  o = {};
  o.avoid_links = {"nope"};
  EXPECT_THROW(compute_routes(*snap, "A", "B", o), NotFound);
  o = {};
  o.k = 0;
  EXPECT_THROW(compute_routes(*snap, "A", "B", o), InvalidArgument);
  o = {};
  o.weights.alpha = -1;
  EXPECT_THROW(compute_routes(*snap, "A", "B", o), InvalidArgument);
  auto self = compute_routes(*snap, "A", "A");
  ASSERT_EQ(self.size(), 1U);
  EXPECT_EQ(self[0].kms, Strings{"A"});
  EXPECT_TRUE(self[0].links.empty());
  EXPECT_EQ(self[0].cost, 0.0);
}

// No usable path is an empty result, not an error.
TEST(Paths, NoRouteIsEmpty) {
  auto doc = make_doc({"A", "B", "C"}, {{"AB", "A", "B"}});
  auto snap = TopologySnapshot::from_doc(doc, full_pools());
  EXPECT_TRUE(compute_routes(*snap, "A", "C").empty());
  EXPECT_TRUE(next_hops(*snap, "A", "C").empty());
}

}  // namespace
}  // namespace qkdn::controller
