// The operator's link weight (topology document links[].weight): validated, read and written by
// the document reader, and the base of the hop-count and key-aware costs.
#include <gtest/gtest.h>

#include <limits>
#include <string>
#include <vector>

#include "qkdn/controller/error.hpp"
#include "qkdn/controller/routing.hpp"
#include "qkdn/controller/topology.hpp"
#include "qkdn/southbound/topology_json.hpp"
#include "routing_test_util.hpp"

namespace qkdn::controller {
namespace {

using testing::full_pools;
using testing::make_doc;

// A ladder: the direct route S-X-D (2 hops) and a detour S-Y-Z-D (3 hops).
TopologyDoc ladder() {
  return make_doc(
      {"S", "X", "Y", "Z", "D"},
      {{"SX", "S", "X"}, {"XD", "X", "D"}, {"SY", "S", "Y"}, {"YZ", "Y", "Z"}, {"ZD", "Z", "D"}});
}

RouteOptions options(RouteMetric m) {
  RouteOptions o;
  o.metric = m;
  o.require_connected = false;
  return o;
}

// ---- validation and the document ---------------------------------------------------------

TEST(LinkWeight, DefaultsToOne) {
  EXPECT_EQ(LinkSpec{}.weight, 1.0);
  const auto doc = southbound::parse_topology(
      R"({"kms":[{"km_id":"A"},{"km_id":"B"}],"links":[{"link_id":"L","a":"A","b":"B",)"
      R"("key_rate_bps":10}]})");
  EXPECT_EQ(doc.links[0].weight, 1.0);
}

TEST(LinkWeight, ValidatedFinitePositiveBounded) {
  for (double bad : {0.0, -1.0, 1e6 * 1.000001, std::numeric_limits<double>::infinity(),
                     std::numeric_limits<double>::quiet_NaN()}) {
    TopologyDoc doc = ladder();
    doc.links[1].weight = bad;
    try {
      validate_topology(doc);
      ADD_FAILURE() << "weight " << bad << " accepted";
    } catch (const InvalidArgument& e) {
      EXPECT_STREQ(e.what(), "links[1].weight: must be a finite number > 0 and <= 1e6") << bad;
    }
  }
  for (double good : {1e-6, 0.5, 1.0, 42.0, 1e6}) {
    TopologyDoc doc = ladder();
    doc.links[1].weight = good;
    EXPECT_NO_THROW(validate_topology(doc)) << good;
  }
}

// The reader takes a weight, refuses a bad one with the field's path, and the writer leaves the
// default out (documents without weights read and write unchanged) and keeps any other exactly.
TEST(LinkWeight, DocumentReadsAndWritesIt) {
  const std::string text =
      R"({"kms":[{"km_id":"A"},{"km_id":"B"}],"links":[{"link_id":"L","a":"A","b":"B",)"
      R"("key_rate_bps":10,"weight":2.75},{"link_id":"M","a":"A","b":"B","key_rate_bps":10}]})";
  const auto doc = southbound::parse_topology(text, true);
  EXPECT_EQ(doc.links[0].weight, 2.75);
  EXPECT_EQ(doc.links[1].weight, 1.0);
  const std::string out = southbound::serialize_topology(doc);
  EXPECT_NE(out.find(R"("weight":2.75)"), std::string::npos) << out;
  EXPECT_EQ(out.find("weight", out.find(R"("link_id":"M")")), std::string::npos) << out;
  EXPECT_EQ(southbound::parse_topology(out, true).links[0].weight, 2.75);
  for (const char* bad :
       {R"("weight":0)", R"("weight":-3)", R"("weight":"2")", R"("weight":2e6)"}) {
    const std::string doc_text =
        R"({"kms":[{"km_id":"A"},{"km_id":"B"}],"links":[{"link_id":"L","a":"A","b":"B",)"
        R"("key_rate_bps":10,)" +
        std::string(bad) + "}]}";
    try {
      southbound::parse_topology(doc_text);
      ADD_FAILURE() << bad << " accepted";
    } catch (const InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find("links[0].weight"), std::string::npos) << e.what();
    }
  }
}

// ---- costs and routes ----------------------------------------------------------------------

TEST(LinkWeight, IsTheBaseOfEveryAdditiveCost) {
  LiveState live = full_pools(1'000'000);
  TopologyDoc doc = ladder();
  doc.links[0].weight = 2.5;  // SX
  auto snap = TopologySnapshot::from_doc(doc, live);
  const SnapshotLink& sx = snap->links()[*snap->link_index("SX")];
  EXPECT_EQ(sx.weight, 2.5);
  EXPECT_EQ(hop_cost(sx, options(RouteMetric::kHopCount)), 2.5);
  EXPECT_EQ(hop_cost(sx, options(RouteMetric::kWidestShortest)), 1.0);
  // Plenty of key: the key-aware cost is the weight (and a tie-break below 0.001 x weight).
  RouteOptions ka = options(RouteMetric::kKeyAware);
  ka.demand_bits = 1'024;
  const double c = hop_cost(sx, ka);
  EXPECT_GE(c, 2.5);
  EXPECT_LT(c, 2.5 * 1.001);
  // Scarce key: weight times the unit key-aware cost.
  live.links["SX"].pool_bits = 256 + 2'048;
  live.links["SY"].pool_bits = 256 + 2'048;
  auto scarce = TopologySnapshot::from_doc(doc, live);
  const double weighted = hop_cost(scarce->links()[*scarce->link_index("SX")], ka);
  const double unit = hop_cost(scarce->links()[*scarce->link_index("SY")], ka);
  EXPECT_GT(unit, 1.5);
  EXPECT_DOUBLE_EQ(weighted, 2.5 * unit);
}

// A heavy link on the short route: hop count and key-aware (pools full) both take the route of
// least weight, and the route's cost is its weight; weight 1 everywhere is plain hop count.
TEST(LinkWeight, RoutesTakeTheLeastWeight) {
  TopologyDoc doc = ladder();
  auto plain = TopologySnapshot::from_doc(doc, full_pools());
  EXPECT_EQ(compute_routes(*plain, "S", "D", options(RouteMetric::kHopCount))[0].kms,
            (std::vector<std::string>{"S", "X", "D"}));
  doc.links[1].weight = 2.5;  // XD: S-X-D weighs 3.5, S-Y-Z-D 3
  auto weighted = TopologySnapshot::from_doc(doc, full_pools());
  for (auto m : {RouteMetric::kHopCount, RouteMetric::kKeyAware}) {
    auto r = compute_routes(*weighted, "S", "D", options(m));
    ASSERT_EQ(r.size(), 1U) << to_string(m);
    EXPECT_EQ(r[0].kms, (std::vector<std::string>{"S", "Y", "Z", "D"})) << to_string(m);
    EXPECT_NEAR(r[0].cost, 3.0, 0.003) << to_string(m);
  }
  // Widest-shortest orders by bottleneck, then hops: weights do not apply.
  auto w = compute_routes(*weighted, "S", "D", options(RouteMetric::kWidestShortest));
  EXPECT_EQ(w[0].kms, (std::vector<std::string>{"S", "X", "D"}));
}

// Between parallel links the lighter one carries the route.
TEST(LinkWeight, LighterParallelLinkWins) {
  TopologyDoc doc = make_doc({"A", "B"}, {{"L1", "A", "B"}, {"L2", "A", "B"}});
  doc.links[0].weight = 2;
  auto snap = TopologySnapshot::from_doc(doc, full_pools());
  for (auto m : {RouteMetric::kHopCount, RouteMetric::kKeyAware}) {
    auto r = compute_routes(*snap, "A", "B", options(m));
    ASSERT_EQ(r.size(), 1U);
    EXPECT_EQ(r[0].links, std::vector<std::string>{"L2"}) << to_string(m);
  }
}

}  // namespace
}  // namespace qkdn::controller
