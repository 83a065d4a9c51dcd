// Route search: best single path per metric on Boost.Graph Dijkstra (or a hop-layered dynamic
// programme when a hop limit applies), and Yen's k loopless shortest paths on top of it.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <boost/graph/dijkstra_shortest_paths_no_color_map.hpp>
#include <boost/property_map/property_map.hpp>

#include "qkdn/controller/error.hpp"
#include "qkdn/controller/routing.hpp"
#include "routing_terms.hpp"

namespace qkdn::controller {

namespace {

using Graph = TopologySnapshot::Graph;
using Vertex = boost::graph_traits<Graph>::vertex_descriptor;

constexpr double kInf = std::numeric_limits<double>::max();  // additive: unusable / unreached
constexpr double kNoWidth = -1.0;                            // widest: unusable / unreached
constexpr std::size_t kNone = std::numeric_limits<std::size_t>::max();
constexpr std::uint64_t kFullWidth = std::numeric_limits<std::uint64_t>::max();

struct Path {
  std::vector<std::size_t> kms;      // vertex indices, src first
  std::vector<std::size_t> links;    // edge indices, links[i] joins kms[i] and kms[i+1]
  double cost = 0;                   // additive cost; hops for widest
  std::uint64_t width = kFullWidth;  // bottleneck pool bits
};

// Records the edge (and so the parallel link) through which each vertex was last improved.
class EdgeRecorder : public boost::dijkstra_visitor<> {
 public:
  EdgeRecorder(std::size_t* pred_edge, std::size_t* pred_vertex)
      : pred_edge_(pred_edge), pred_vertex_(pred_vertex) {}
  void edge_relaxed(const Graph::edge_descriptor& e, const Graph& g) const {
    const auto v = boost::target(e, g);
    pred_edge_[v] = boost::get(boost::edge_index, g, e);
    pred_vertex_[v] = boost::source(e, g);
  }

 private:
  std::size_t* pred_edge_;
  std::size_t* pred_vertex_;
};

// Per-query state: which links are usable (after exclusions and keeping only the best of each
// parallel group), their additive weights and widths, and scratch buffers reused across the
// Dijkstra runs of one Yen search.
class Search {
 public:
  Search(const TopologySnapshot& snapshot, const RouteOptions& options, std::size_t src,
         std::size_t dst)
      : snap_(snapshot), graph_(snapshot.graph()), options_(options) {
    const auto& links = snap_.links();
    const auto& terms = snap_.link_terms();
    const std::size_t n_edges = links.size();
    weight_.assign(n_edges, kInf);
    if (widest()) width_.assign(n_edges, kNoWidth);
    // Avoid lists are rare: turn them into per-link flags once, only when present.
    std::vector<char> avoided;
    if (!options_.avoid_kms.empty() || !options_.avoid_links.empty()) {
      avoided.assign(n_edges, 0);
      for (std::size_t i = 0; i < n_edges; ++i) {
        avoided[i] = static_cast<char>(exclusion_mask(snap_, i, options_) != 0);
      }
    }
    const double demand = static_cast<double>(options_.demand_bits);
    const KeyAwareQuery cost_query(options_);
    const bool key_aware = options_.metric == RouteMetric::kKeyAware;
    for (std::size_t i = 0; i < n_edges; ++i) {
      // Same rule as exclusion_mask(), on the precomputed terms.
      const LinkTerms& t = terms[i];
      if (t.static_exclusions != 0 || (options_.require_connected && !t.ends_connected) ||
          t.available_bits < demand || (!avoided.empty() && avoided[i])) {
        continue;
      }
      weight_[i] = key_aware ? key_aware_cost(t, cost_query) : widest() ? 1.0 : t.weight;
      if (widest()) width_[i] = static_cast<double>(links[i].pool_bits);
    }
    // Intermediate KMs that break the trust constraints are cut out of the graph: none of their
    // links can carry a route (the two ends are exempt, and a direct src-dst link stays usable).
    if (options_.trust.min_trust_level > kMinTrustLevel || !options_.trust.avoid_tags.empty()) {
      const auto& kms = snap_.kms();
      for (std::size_t v = 0; v < kms.size(); ++v) {
        if (v == src || v == dst || trust_ok(kms[v], options_.trust)) continue;
        for (auto [it, end] = boost::out_edges(v, graph_); it != end; ++it) {
          const std::size_t e = boost::get(boost::edge_index, graph_, *it);
          weight_[e] = kInf;
          if (widest()) width_[e] = kNoWidth;
        }
      }
    }
    for (const auto& group : snap_.parallel_groups()) {
      std::size_t best = kNone;
      for (std::size_t e : group) {
        if (weight_[e] == kInf) continue;
        if (best == kNone || better_parallel(e, best)) best = e;
      }
      for (std::size_t e : group) {
        if (e != best) {
          weight_[e] = kInf;
          if (widest()) width_[e] = kNoWidth;
        }
      }
    }
    const std::size_t n = boost::num_vertices(graph_);
    dist_.resize(n);
    pred_edge_.resize(n);
    pred_vertex_.resize(n);
  }

  [[nodiscard]] bool widest() const { return options_.metric == RouteMetric::kWidestShortest; }
  [[nodiscard]] std::uint64_t pool(std::size_t e) const { return snap_.links()[e].pool_bits; }

  // Best path from `from` to `to` that avoids banned vertices/edges, has at most `budget` hops
  // and, for the widest metric, is scored after joining a root whose bottleneck is root_width.
  std::optional<Path> best_path(std::size_t from, std::size_t to,
                                const std::vector<char>* banned_vertex,
                                const std::vector<char>* banned_edge, std::size_t budget,
                                std::uint64_t root_width) {
    if (from == to) return Path{{from}, {}, 0, kFullWidth};
    if (budget == 0) return std::nullopt;
    const bool limited = budget < boost::num_vertices(graph_) - 1;
    if (!widest()) {
      const std::vector<double>& w = masked(weight_, kInf, banned_vertex, banned_edge);
      if (limited) return layered_additive(from, to, w, budget);
      return dijkstra_additive(from, to, w);
    }
    const std::vector<double>& wd = masked(width_, kNoWidth, banned_vertex, banned_edge);
    const double best_width =
        limited ? layered_widest(from, to, wd, budget) : dijkstra_widest(from, to, wd);
    if (best_width == kNoWidth) return std::nullopt;
    // Any spur at least as wide as min(best, root) gives the same route bottleneck; among those
    // take the fewest hops (shortest-hop search on the links that are wide enough).
    const double threshold = std::min(best_width, static_cast<double>(root_width));
    unit_.assign(wd.size(), kInf);
    for (std::size_t e = 0; e < wd.size(); ++e) {
      if (wd[e] != kNoWidth && wd[e] >= threshold) unit_[e] = 1.0;
    }
    return dijkstra_additive(from, to, unit_);
  }

  // Fills in cost and width of a complete path from its links.
  void score(Path& p) const {
    p.cost = 0;
    p.width = kFullWidth;
    for (std::size_t e : p.links) {
      p.cost += widest() ? 1.0 : weight_[e];
      p.width = std::min(p.width, snap_.links()[e].pool_bits);
    }
  }

  // Strict weak order of routes: metric first, then hops, then KM order, then link order.
  [[nodiscard]] bool better(const Path& x, const Path& y) const {
    if (widest() && x.width != y.width) return x.width > y.width;
    if (x.cost != y.cost) return x.cost < y.cost;
    if (x.links.size() != y.links.size()) return x.links.size() < y.links.size();
    if (x.kms != y.kms) return x.kms < y.kms;
    return x.links < y.links;
  }

 private:
  // Among parallel links: lower cost, then fuller pool, then lower link index (link_id order).
  [[nodiscard]] bool better_parallel(std::size_t x, std::size_t y) const {
    if (!widest() && weight_[x] != weight_[y]) return weight_[x] < weight_[y];
    const auto px = snap_.links()[x].pool_bits;
    const auto py = snap_.links()[y].pool_bits;
    if (px != py) return px > py;
    return x < y;
  }

  // `base` with banned links and the links of banned KMs set to `off`. Returns `base` itself when
  // nothing is banned so the common single-route query copies nothing.
  const std::vector<double>& masked(const std::vector<double>& base, double off,
                                    const std::vector<char>* banned_vertex,
                                    const std::vector<char>* banned_edge) {
    if (banned_vertex == nullptr && banned_edge == nullptr) return base;
    scratch_ = base;
    if (banned_edge != nullptr) {
      for (std::size_t e = 0; e < scratch_.size(); ++e) {
        if ((*banned_edge)[e]) scratch_[e] = off;
      }
    }
    if (banned_vertex != nullptr) {
      for (std::size_t v = 0; v < banned_vertex->size(); ++v) {
        if (!(*banned_vertex)[v]) continue;
        for (auto [it, end] = boost::out_edges(v, graph_); it != end; ++it) {
          scratch_[boost::get(boost::edge_index, graph_, *it)] = off;
        }
      }
    }
    return scratch_;
  }

  std::optional<Path> dijkstra_additive(std::size_t from, std::size_t to,
                                        const std::vector<double>& w) {
    std::fill(pred_edge_.begin(), pred_edge_.end(), kNone);
    auto index = boost::get(boost::vertex_index, graph_);
    auto weight_map =
        boost::make_iterator_property_map(w.begin(), boost::get(boost::edge_index, graph_));
    boost::dijkstra_shortest_paths_no_color_map(
        graph_, from,
        boost::predecessor_map(boost::make_iterator_property_map(pred_vertex_.begin(), index))
            .distance_map(boost::make_iterator_property_map(dist_.begin(), index))
            .weight_map(weight_map)
            .distance_compare(std::less<double>())
            .distance_combine(boost::closed_plus<double>(kInf))
            .distance_inf(kInf)
            .distance_zero(0.0)
            .visitor(EdgeRecorder(pred_edge_.data(), pred_vertex_.data())));
    if (dist_[to] == kInf) return std::nullopt;
    return trace(from, to);
  }

  // Max-min (bottleneck) Dijkstra: distance = widest bottleneck from `from`.
  double dijkstra_widest(std::size_t from, std::size_t to, const std::vector<double>& wd) {
    auto index = boost::get(boost::vertex_index, graph_);
    auto width_map =
        boost::make_iterator_property_map(wd.begin(), boost::get(boost::edge_index, graph_));
    boost::dijkstra_shortest_paths_no_color_map(
        graph_, from,
        boost::predecessor_map(boost::make_iterator_property_map(pred_vertex_.begin(), index))
            .distance_map(boost::make_iterator_property_map(dist_.begin(), index))
            .weight_map(width_map)
            .distance_compare(std::greater<double>())
            .distance_combine([](double a, double b) { return std::min(a, b); })
            .distance_inf(kNoWidth)
            .distance_zero(kInf));
    return dist_[to];
  }

  // Cheapest path with at most `budget` hops (Bellman-Ford by hop layers). With every hop
  // costing >= 1 the cheapest walk is a simple path.
  std::optional<Path> layered_additive(std::size_t from, std::size_t to,
                                       const std::vector<double>& w, std::size_t budget) {
    const std::size_t n = boost::num_vertices(graph_);
    struct Cell {
      double dist = kInf;
      std::size_t edge = kNone;
      std::size_t prev = kNone;
      std::size_t layer = kNone;
    };
    std::vector<std::vector<Cell>> layers(budget + 1, std::vector<Cell>(n));
    layers[0][from].dist = 0;
    for (std::size_t h = 1; h <= budget; ++h) {
      layers[h] = layers[h - 1];
      for (auto [it, end] = boost::edges(graph_); it != end; ++it) {
        const std::size_t e = boost::get(boost::edge_index, graph_, *it);
        if (w[e] == kInf) continue;
        const std::size_t u = boost::source(*it, graph_);
        const std::size_t v = boost::target(*it, graph_);
        for (auto [x, y] : {std::pair{u, v}, std::pair{v, u}}) {
          const Cell& cx = layers[h - 1][x];
          if (cx.dist == kInf) continue;
          const double d = cx.dist + w[e];
          if (d < layers[h][y].dist) layers[h][y] = Cell{d, e, x, h - 1};
        }
      }
    }
    if (layers[budget][to].dist == kInf) return std::nullopt;
    Path p;
    std::size_t v = to;
    std::size_t h = budget;
    while (v != from) {
      const Cell& c = layers[h][v];
      p.kms.push_back(v);
      p.links.push_back(c.edge);
      v = c.prev;
      h = c.layer;
    }
    p.kms.push_back(from);
    std::reverse(p.kms.begin(), p.kms.end());
    std::reverse(p.links.begin(), p.links.end());
    return p;
  }

  // Widest bottleneck over paths of at most `budget` hops (hop-layered max-min).
  double layered_widest(std::size_t from, std::size_t to, const std::vector<double>& wd,
                        std::size_t budget) {
    const std::size_t n = boost::num_vertices(graph_);
    std::vector<double> cur(n, kNoWidth);
    cur[from] = kInf;
    for (std::size_t h = 1; h <= budget; ++h) {
      std::vector<double> next = cur;
      for (auto [it, end] = boost::edges(graph_); it != end; ++it) {
        const std::size_t e = boost::get(boost::edge_index, graph_, *it);
        if (wd[e] == kNoWidth) continue;
        const std::size_t u = boost::source(*it, graph_);
        const std::size_t v = boost::target(*it, graph_);
        if (cur[u] != kNoWidth) next[v] = std::max(next[v], std::min(cur[u], wd[e]));
        if (cur[v] != kNoWidth) next[u] = std::max(next[u], std::min(cur[v], wd[e]));
      }
      cur = std::move(next);
    }
    return cur[to];
  }

  Path trace(std::size_t from, std::size_t to) const {
    Path p;
    for (std::size_t v = to; v != from; v = pred_vertex_[v]) {
      p.kms.push_back(v);
      p.links.push_back(pred_edge_[v]);
    }
    p.kms.push_back(from);
    std::reverse(p.kms.begin(), p.kms.end());
    std::reverse(p.links.begin(), p.links.end());
    return p;
  }

  const TopologySnapshot& snap_;
  const Graph& graph_;
  const RouteOptions& options_;
  std::vector<double> weight_;
  std::vector<double> width_;
  std::vector<double> scratch_;
  std::vector<double> unit_;
  std::vector<double> dist_;
  std::vector<std::size_t> pred_edge_;
  std::vector<std::size_t> pred_vertex_;
};

}  // namespace

bool trust_ok(const SnapshotKm& km, const TrustConstraints& c) {
  if (km.trust() < c.min_trust_level) return false;
  for (const auto& tag : c.avoid_tags) {
    if (std::find(km.tags.begin(), km.tags.end(), tag) != km.tags.end()) return false;
  }
  return true;
}

namespace {

std::size_t require_km(const TopologySnapshot& snapshot, const std::string& km_id,
                       const char* role) {
  auto i = snapshot.km_index(km_id);
  if (!i) throw NotFound(std::string(role) + ": unknown KM '" + km_id + "'");
  return *i;
}

void validate(const TopologySnapshot& snapshot, const RouteOptions& options) {
  if (options.k == 0) throw InvalidArgument("k must be at least 1");
  const auto& w = options.weights;
  if (!(w.alpha >= 0 && w.beta >= 0 && w.gamma >= 0 && w.kappa >= 0 && w.horizon_s > 0 &&
        w.headroom >= 0 && w.headroom_horizon_s >= 0 && w.headroom_share >= 0 &&
        w.headroom_share <= 1 && w.full_price_share >= 0 && w.full_price_share < 1)) {
    throw InvalidArgument("key-aware weights must be >= 0 and horizon_s > 0");
  }
  validate_trust_constraints(options.trust);
  for (const auto& km : options.avoid_kms) require_km(snapshot, km, "avoid_kms");
  for (const auto& id : options.avoid_links) {
    if (!snapshot.link_index(id)) throw NotFound("avoid_links: unknown link '" + id + "'");
  }
}

// Yen's algorithm. Each accepted path P_j spawns, for every spur node i, the best path that
// shares P_j's first i hops (the root), avoids the root's KMs, and leaves the spur node by none
// of the links that already-accepted paths with the same root take next.
std::vector<Path> yen(Search& search, std::size_t src, std::size_t dst, std::size_t k,
                      std::size_t budget, std::size_t n_vertices, std::size_t n_edges) {
  std::vector<Path> accepted;
  auto first = search.best_path(src, dst, nullptr, nullptr, budget, kFullWidth);
  if (!first) return accepted;
  search.score(*first);
  accepted.push_back(std::move(*first));
  std::vector<Path> candidates;
  std::vector<char> banned_vertex(n_vertices, 0);
  std::vector<char> banned_edge(n_edges, 0);
  while (accepted.size() < k) {
    const Path& last = accepted.back();
    for (std::size_t i = 0; i < last.links.size(); ++i) {
      const std::size_t spur = last.kms[i];
      std::fill(banned_vertex.begin(), banned_vertex.end(), 0);
      std::fill(banned_edge.begin(), banned_edge.end(), 0);
      for (std::size_t j = 0; j < i; ++j) banned_vertex[last.kms[j]] = 1;
      for (const Path& p : accepted) {
        if (p.links.size() > i &&
            std::equal(last.kms.begin(), last.kms.begin() + static_cast<std::ptrdiff_t>(i) + 1,
                       p.kms.begin())) {
          banned_edge[p.links[i]] = 1;
        }
      }
      std::uint64_t root_width = kFullWidth;
      for (std::size_t j = 0; j < i; ++j) {
        root_width = std::min(root_width, search.pool(last.links[j]));
      }
      auto spur_path = search.best_path(spur, dst, &banned_vertex, &banned_edge,
                                        budget == kNone ? kNone : budget - i, root_width);
      if (!spur_path) continue;
      Path total;
      total.kms.assign(last.kms.begin(), last.kms.begin() + static_cast<std::ptrdiff_t>(i));
      total.kms.insert(total.kms.end(), spur_path->kms.begin(), spur_path->kms.end());
      total.links.assign(last.links.begin(), last.links.begin() + static_cast<std::ptrdiff_t>(i));
      total.links.insert(total.links.end(), spur_path->links.begin(), spur_path->links.end());
      search.score(total);
      auto same = [&](const Path& p) { return p.kms == total.kms && p.links == total.links; };
      if (std::none_of(candidates.begin(), candidates.end(), same) &&
          std::none_of(accepted.begin(), accepted.end(), same)) {
        candidates.push_back(std::move(total));
      }
    }
    if (candidates.empty()) break;
    auto best = std::min_element(candidates.begin(), candidates.end(),
                                 [&](const Path& x, const Path& y) { return search.better(x, y); });
    accepted.push_back(std::move(*best));
    candidates.erase(best);
  }
  return accepted;
}

Route to_route(const TopologySnapshot& snapshot, const Path& p) {
  Route r;
  r.kms.reserve(p.kms.size());
  for (std::size_t v : p.kms) r.kms.push_back(snapshot.kms()[v].km_id);
  r.links.reserve(p.links.size());
  for (std::size_t e : p.links) r.links.push_back(snapshot.links()[e].link_id);
  r.cost = p.cost;
  r.bottleneck_bits = p.links.empty() ? 0 : p.width;
  return r;
}

}  // namespace

std::vector<Route> compute_routes(const TopologySnapshot& snapshot, const std::string& src,
                                  const std::string& dst, const RouteOptions& options) {
  const std::size_t s = require_km(snapshot, src, "src");
  const std::size_t d = require_km(snapshot, dst, "dst");
  validate(snapshot, options);
  std::vector<Route> out;
  if (s == d) {
    out.push_back(Route{{src}, {}, 0, 0});
    return out;
  }
  Search search(snapshot, options, s, d);
  std::size_t budget = options.max_hops.value_or(kNone);
  if (options.trust.max_intermediates) {
    budget = std::min(budget, *options.trust.max_intermediates + 1);
  }
  auto paths = yen(search, s, d, options.k, budget, snapshot.kms().size(), snapshot.links().size());
  out.reserve(paths.size());
  for (const Path& p : paths) out.push_back(to_route(snapshot, p));
  return out;
}

std::vector<std::string> next_hops(const TopologySnapshot& snapshot, const std::string& src,
                                   const std::string& dst, const RouteOptions& options) {
  std::vector<std::string> hops;
  for (const Route& r : compute_routes(snapshot, src, dst, options)) {
    if (r.kms.size() < 2) continue;
    if (std::find(hops.begin(), hops.end(), r.kms[1]) == hops.end()) hops.push_back(r.kms[1]);
  }
  return hops;
}

}  // namespace qkdn::controller
