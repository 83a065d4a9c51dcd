// Yen's k shortest loopless paths against brute-force enumeration of every simple path on seeded
// random graphs, for every metric, with and without constraints.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "qkdn/controller/routing.hpp"

namespace qkdn::controller {
namespace {

struct Case {
  TopologyDoc doc;
  LiveState live;
};

// A random multigraph of 6..9 KMs: each pair joined with probability 0.45, sometimes by two
// parallel links; random pools (some below the floor), rates, consumption and a few down links.
Case random_case(std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  auto uniform = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  Case c;
  c.doc.name = "random";
  const int n = uniform(6, 9);
  for (int i = 0; i < n; ++i) {
    c.doc.kms.push_back({"K" + std::to_string(i), ""});
  }
  int link_no = 0;
  for (int i = 0; i < n; ++i) {
    for (int j = i + 1; j < n; ++j) {
      if (uniform(0, 99) >= 45) continue;
      const int copies = uniform(0, 9) == 0 ? 2 : 1;
      for (int p = 0; p < copies; ++p) {
        const std::string id = "L" + std::to_string(link_no++);
        const double rate = std::pow(10.0, uniform(0, 50) / 10.0);
        c.doc.links.push_back({id, c.doc.kms[i].km_id, c.doc.kms[j].km_id, rate, 10, 0.02});
        LinkLive live;
        live.pool_bits = static_cast<std::uint64_t>(uniform(0, 20)) * 1'000;
        live.consumption_rate_bps = uniform(0, 3) == 0 ? rate * uniform(0, 30) / 10.0 : 0;
        if (uniform(0, 19) == 0) live.oper = OperState::kDown;
        c.live.links[id] = live;
      }
    }
  }
  return c;
}

struct Scored {
  std::vector<std::size_t> kms;
  double cost = 0;
  std::uint64_t width = std::numeric_limits<std::uint64_t>::max();
  std::size_t hops = 0;
};

// Every simple path from src to dst over the usable links, each KM pair using its best parallel
// link (lowest cost, then fuller pool, then link order), scored like compute_routes.
std::vector<Scored> brute_force(const TopologySnapshot& snap, std::size_t src, std::size_t dst,
                                const RouteOptions& o) {
  const std::size_t n = snap.kms().size();
  constexpr std::size_t kNone = std::numeric_limits<std::size_t>::max();
  std::vector<std::vector<std::size_t>> best(n, std::vector<std::size_t>(n, kNone));
  for (std::size_t e = 0; e < snap.links().size(); ++e) {
    if (exclusion_mask(snap, e, o) != 0) continue;
    const auto& l = snap.links()[e];
    const std::size_t a = *snap.km_index(l.a);
    const std::size_t b = *snap.km_index(l.b);
    std::size_t& cur = best[a][b];
    if (cur != kNone) {
      const auto& c = snap.links()[cur];
      const double ce = hop_cost(c, o);
      const double le = hop_cost(l, o);
      const bool better = o.metric != RouteMetric::kWidestShortest && le != ce
                              ? le < ce
                              : l.pool_bits > c.pool_bits;
      if (!better) continue;
    }
    best[a][b] = best[b][a] = e;
  }
  std::vector<Scored> out;
  std::vector<std::size_t> stack{src};
  std::vector<char> on(n, 0);
  on[src] = 1;
  std::function<void(std::size_t, Scored)> dfs = [&](std::size_t v, Scored s) {
    if (v == dst) {
      s.kms = stack;
      out.push_back(s);
      return;
    }
    if (o.max_hops && s.hops == *o.max_hops) return;
    for (std::size_t u = 0; u < n; ++u) {
      const std::size_t e = best[v][u];
      if (e == kNone || on[u]) continue;
      Scored next = s;
      next.cost += hop_cost(snap.links()[e], o);
      next.width = std::min(next.width, snap.links()[e].pool_bits);
      ++next.hops;
      on[u] = 1;
      stack.push_back(u);
      dfs(u, next);
      stack.pop_back();
      on[u] = 0;
    }
  };
  dfs(src, Scored{});
  std::sort(out.begin(), out.end(), [&](const Scored& x, const Scored& y) {
    if (o.metric == RouteMetric::kWidestShortest) {
      if (x.width != y.width) return x.width > y.width;
      return x.hops < y.hops;
    }
    if (x.cost != y.cost) return x.cost < y.cost;
    return x.hops < y.hops;
  });
  return out;
}

// Checks that every route is a loopless walk over links that join its consecutive KMs, that its
// reported cost and bottleneck are right, and that no route repeats.
void check_route_shape(const TopologySnapshot& snap, const std::vector<Route>& routes,
                       const std::string& src, const std::string& dst, const RouteOptions& o) {
  std::set<std::vector<std::string>> seen;
  for (const auto& r : routes) {
    ASSERT_EQ(r.kms.size(), r.links.size() + 1);
    EXPECT_EQ(r.kms.front(), src);
    EXPECT_EQ(r.kms.back(), dst);
    EXPECT_EQ(std::set<std::string>(r.kms.begin(), r.kms.end()).size(), r.kms.size())
        << "route has a loop";
    EXPECT_TRUE(seen.insert(r.kms).second) << "route repeated";
    double cost = 0;
    std::uint64_t width = std::numeric_limits<std::uint64_t>::max();
    for (std::size_t i = 0; i < r.links.size(); ++i) {
      const auto& l = snap.links()[*snap.link_index(r.links[i])];
      const bool joins =
          (l.a == r.kms[i] && l.b == r.kms[i + 1]) || (l.b == r.kms[i] && l.a == r.kms[i + 1]);
      EXPECT_TRUE(joins) << r.links[i];
      cost += hop_cost(l, o);
      width = std::min(width, l.pool_bits);
    }
    EXPECT_NEAR(r.cost, cost, 1e-9 * std::max(1.0, cost));
    EXPECT_EQ(r.bottleneck_bits, width);
    if (o.max_hops) {
      EXPECT_LE(r.links.size(), *o.max_hops);
    }
  }
}

// Returns the number of routes compared.
std::size_t compare_with_brute_force(std::uint64_t seed, bool constrained) {
  std::size_t compared = 0;
  Case c = random_case(seed);
  auto snap = TopologySnapshot::from_doc(c.doc, c.live);
  const std::size_t n = snap->kms().size();
  std::mt19937_64 rng(seed ^ 0x9e3779b97f4a7c15ULL);
  const std::size_t s = rng() % n;
  std::size_t d = rng() % (n - 1);
  if (d >= s) ++d;
  const std::string src = snap->kms()[s].km_id;
  const std::string dst = snap->kms()[d].km_id;
  for (auto metric :
       {RouteMetric::kKeyAware, RouteMetric::kWidestShortest, RouteMetric::kHopCount}) {
    RouteOptions o;
    o.metric = metric;
    if (constrained) {
      o.max_hops = 2 + rng() % 3;
      std::size_t avoid = rng() % n;
      if (avoid != s && avoid != d) o.avoid_kms.push_back(snap->kms()[avoid].km_id);
      if (!snap->links().empty()) {
        o.avoid_links.push_back(snap->links()[rng() % snap->links().size()].link_id);
      }
      o.demand_bits = 1'000 * (rng() % 4);
    }
    const auto expected = brute_force(*snap, s, d, o);
    for (std::size_t k = 1; k <= 6; ++k) {
      o.k = k;
      SCOPED_TRACE("seed " + std::to_string(seed) + " metric " + std::string(to_string(metric)) +
                   " k " + std::to_string(k) + (constrained ? " constrained" : ""));
      const auto routes = compute_routes(*snap, src, dst, o);
      EXPECT_EQ(routes.size(), std::min(k, expected.size()));
      if (routes.size() != std::min(k, expected.size())) return compared;
      compared += routes.size();
      check_route_shape(*snap, routes, src, dst, o);
      for (std::size_t i = 0; i < routes.size(); ++i) {
        if (metric == RouteMetric::kWidestShortest) {
          EXPECT_EQ(routes[i].bottleneck_bits, expected[i].width) << "route " << i;
          EXPECT_EQ(routes[i].links.size(), expected[i].hops) << "route " << i;
        } else {
          EXPECT_NEAR(routes[i].cost, expected[i].cost, 1e-9 * expected[i].cost) << "route " << i;
        }
      }
    }
  }
  return compared;
}

// 200 random graphs, no constraints: Yen returns the k cheapest simple paths in order.
TEST(Yen, MatchesBruteForceOnRandomGraphs) {
  std::size_t compared = 0;
  for (std::uint64_t seed = 1; seed <= 200; ++seed) {
    compared += compare_with_brute_force(seed, false);
    if (::testing::Test::HasFailure()) return;
  }
  EXPECT_GT(compared, 8'000U);  // rich graphs: 9,666 routes compared
}

// 200 random graphs with max_hops, an avoided KM, an avoided link and a demand.
TEST(Yen, MatchesBruteForceUnderConstraints) {
  std::size_t compared = 0;
  for (std::uint64_t seed = 1001; seed <= 1200; ++seed) {
    compared += compare_with_brute_force(seed, true);
    if (::testing::Test::HasFailure()) return;
  }
  EXPECT_GT(compared, 3'500U);  // 4,324 compared
}

// The same query on the same snapshot always gives the same routes.
TEST(Yen, Deterministic) {
  Case c = random_case(77);
  auto snap = TopologySnapshot::from_doc(c.doc, c.live);
  RouteOptions o;
  o.k = 6;
  const auto first = compute_routes(*snap, "K0", "K5", o);
  for (int i = 0; i < 5; ++i) {
    const auto again = compute_routes(*snap, "K0", "K5", o);
    ASSERT_EQ(again.size(), first.size());
    for (std::size_t j = 0; j < first.size(); ++j) EXPECT_EQ(again[j].links, first[j].links);
  }
}

}  // namespace
}  // namespace qkdn::controller
