// Demand-replay simulation: how often does each routing metric block key requests?
//
// Simulated time, fixed seeds. Every link's pool fills at its key_rate_bps up to a capacity; SAE
// pairs (one SAE per KM) ask for n x 256-bit keys with Poisson arrivals; a request takes the best
// route (k = 1) whose every hop holds floor + demand bits, and consumes the demand on every hop;
// it is blocked when no such route exists. The router sees what a controller would: each link's
// pool, rate and an EWMA of its consumption (as agents report consumption_rate_bps). Each metric
// replays the same request sequence under the same rules.
//
// Two hop-count baselines: "plain hop count" (the baseline: every pair always uses its one
// fixed shortest path by hop count and is blocked when a hop of it lacks the demand) and
// "hop count with admission" (the shortest path among those whose every hop holds the demand, a
// much stronger baseline). --baseline picks the one that sets the reference load.
// Per seed, the offered load is searched (bisection on a log scale) until the baseline blocks
// about 10 % of requests; every metric is replayed at that load (and at half and double).
// A fluid cut bound gives the blocking that no routing can avoid at that load. The report is a
// markdown table, mean ± half the spread over the seeds (default 1,2,3). --compare adds rows for
// other key-aware depletion exponents (kappa = 0 is the previous cost).
//
// Every run also replays "key_aware_ungated", the key-aware cost without the headroom gate (the
// cost before issue 20), so that before and after are measured in the same run; every row gives
// blocking, key used per delivered key and mean hops. --topology random:N:M[:S] generates a
// connected graph at run time (N KMs at uniform random sites on a square, the minimum spanning
// tree plus M - N + 1 other pairs drawn by Waxman's rule, key rates from the same fibre-loss
// model as the shipped files; S seeds the graph, default 1), so that no figure rests on the
// shipped topologies alone.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "qkdn/controller/routing.hpp"
#include "qkdn/controller/topology.hpp"
#include "qkdn/southbound/topology_json.hpp"

namespace {

using qkdn::controller::KeyState;
using qkdn::controller::RouteMetric;
using qkdn::controller::RouteOptions;
using qkdn::controller::TopologySnapshot;

struct Config {
  std::vector<std::string> topologies{"germany50", "nobel-eu"};
  std::uint64_t seed = 1;
  std::size_t requests = 20'000;        // measured requests per run
  std::size_t warmup = 5'000;           // requests replayed before measuring
  double pool_capacity_bits = 250'000;  // per link key store
  double consumption_tau_s = 60;        // EWMA time constant of the consumption rate
  int max_keys = 16;                    // each request asks 1..max_keys keys of 256 bits
  double target_blocking = 0.10;
  bool only_1x = false;
  std::vector<std::uint64_t> seeds{1, 2, 3};
  int bisection_steps = 18;
  bool compare = false;        // also replay the candidate key-aware costs
  bool plain_baseline = true;  // reference: plain hop count (else hop count with admission)
  qkdn::controller::KeyAwareWeights weights;
};

struct Request {
  double gap = 0;  // exponential(1) inter-arrival, scaled by the load
  std::size_t src = 0;
  std::size_t dst = 0;
  std::uint64_t bits = 0;
};

struct Outcome {
  double blocking = 0;
  double consumed_per_delivered = 0;
  double mean_hops = 0;
  double endpoint_share = 0;  // share of blocked requests starved at their source or destination
};

struct Topology {
  std::string name;
  std::shared_ptr<const TopologySnapshot> snapshot;
  std::vector<std::string> app_kms;  // the KM serving each SAE
  std::vector<Request> requests;
  double base_rate = 0;  // requests/s at load factor 1
  // Plain hop count: the fixed shortest path (link indices) of every SAE pair, full pools.
  std::vector<std::vector<std::vector<std::size_t>>> fixed_paths;  // [src app][dst app]
};

// A seeded random topology: "random:N:M[:S]" (see the file comment). Throws on a bad name.
qkdn::controller::TopologyDoc random_topology(const std::string& name) {
  std::vector<std::uint64_t> parts;
  std::size_t pos = name.find(':');
  while (pos != std::string::npos) {
    const std::size_t next = name.find(':', pos + 1);
    parts.push_back(std::stoull(name.substr(pos + 1, next - pos - 1)));
    pos = next;
  }
  if (parts.size() < 2 || parts.size() > 3) throw std::invalid_argument("random:N:M[:S]");
  const std::size_t n = parts[0];
  const std::size_t m = parts[1];
  const std::uint64_t graph_seed = parts.size() == 3 ? parts[2] : 1;
  if (n < 3 || m < n - 1 || m > n * (n - 1) / 2) {
    throw std::invalid_argument(name + ": need N >= 3 and N - 1 <= M <= N (N - 1) / 2");
  }
  std::mt19937_64 rng(graph_seed);
  // Sites on a square whose side gives nearest neighbours ~70 km apart (as germany50's ~100 km
  // links): side = 140 km * sqrt(N).
  const double side = 140.0 * std::sqrt(static_cast<double>(n));
  std::uniform_real_distribution<double> coord(0, side);
  std::vector<std::pair<double, double>> sites(n);
  for (auto& p : sites) p = {coord(rng), coord(rng)};
  auto dist = [&](std::size_t a, std::size_t b) {
    return std::hypot(sites[a].first - sites[b].first, sites[a].second - sites[b].second);
  };
  std::vector<std::vector<char>> joined(n, std::vector<char>(n, 0));
  std::vector<std::pair<std::size_t, std::size_t>> edges;
  // Prim's minimum spanning tree: connected, and short links as real networks have.
  std::vector<char> in(n, 0);
  std::vector<double> best(n, 1e300);
  std::vector<std::size_t> from(n, 0);
  best[0] = 0;
  for (std::size_t round = 0; round < n; ++round) {
    std::size_t u = n;
    for (std::size_t v = 0; v < n; ++v) {
      if (!in[v] && (u == n || best[v] < best[u])) u = v;
    }
    in[u] = 1;
    if (round > 0) {
      edges.emplace_back(from[u], u);
      joined[from[u]][u] = joined[u][from[u]] = 1;
    }
    for (std::size_t v = 0; v < n; ++v) {
      if (!in[v] && dist(u, v) < best[v]) {
        best[v] = dist(u, v);
        from[v] = u;
      }
    }
  }
  // The other links by Waxman's rule: a pair is picked with weight exp(-d / (0.15 side)), so
  // most new links are short (and fast) but some cross the map, giving routes alternatives.
  std::vector<std::pair<std::size_t, std::size_t>> others;
  std::vector<double> weight;
  for (std::size_t a = 0; a < n; ++a) {
    for (std::size_t b = a + 1; b < n; ++b) {
      if (joined[a][b]) continue;
      others.emplace_back(a, b);
      weight.push_back(std::exp(-dist(a, b) / (0.15 * side)));
    }
  }
  while (edges.size() < m) {
    std::discrete_distribution<std::size_t> pick(weight.begin(), weight.end());
    const std::size_t i = pick(rng);
    edges.push_back(others[i]);
    weight[i] = 0;
  }
  qkdn::controller::TopologyDoc doc;
  doc.name = name;
  auto km = [](std::size_t i) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "R%03zu", i);
    return std::string(buf);
  };
  for (std::size_t i = 0; i < n; ++i) {
    doc.kms.push_back({km(i), "site " + std::to_string(i)});
    doc.applications.push_back({"SAE-" + km(i), km(i)});
  }
  for (std::size_t i = 0; i < edges.size(); ++i) {
    const auto [a, b] = edges[i];
    const double d = dist(a, b);
    char id[32];
    std::snprintf(id, sizeof id, "L%04zu", i);
    // Same fibre-loss model as tests/data/topologies: 1 Mb/s x 10^(-0.02 d), at least 1 b/s.
    doc.links.push_back(
        {id, km(a), km(b), std::max(1.0, std::floor(1e6 * std::pow(10.0, -0.02 * d))), d, 0.02});
  }
  qkdn::controller::validate_topology(doc);
  return doc;
}

Topology load(const std::string& name, const Config& cfg) {
  Topology t;
  t.name = name;
  auto doc = name.rfind("random:", 0) == 0
                 ? random_topology(name)
                 : qkdn::southbound::load_topology_file(std::string(QKDN_TOPOLOGY_DIR) + "/" +
                                                        name + ".json");
  t.snapshot = TopologySnapshot::from_doc(doc);
  for (const auto& app : doc.applications) t.app_kms.push_back(app.km_id);
  if (t.app_kms.size() < 2) {
    for (const auto& km : doc.kms) t.app_kms.push_back(km.km_id);
  }
  std::mt19937_64 rng(cfg.seed);
  std::exponential_distribution<double> gap(1.0);
  std::uniform_int_distribution<std::size_t> app(0, t.app_kms.size() - 1);
  std::uniform_int_distribution<int> keys(1, cfg.max_keys);
  double mean_bits = 0;
  for (std::size_t i = 0; i < cfg.warmup + cfg.requests; ++i) {
    Request r;
    r.gap = gap(rng);
    r.src = app(rng);
    do {
      r.dst = app(rng);
    } while (t.app_kms[r.dst] == t.app_kms[r.src]);
    r.bits = 256ULL * static_cast<std::uint64_t>(keys(rng));
    mean_bits += static_cast<double>(r.bits);
    t.requests.push_back(r);
  }
  mean_bits /= static_cast<double>(t.requests.size());
  // Load factor 1: offered key (bits x min hops) equals the total generation rate.
  double total_rate = 0;
  for (const auto& l : t.snapshot->links()) total_rate += l.key_rate_bps;
  RouteOptions hop;
  hop.metric = RouteMetric::kHopCount;
  hop.require_connected = false;
  qkdn::controller::LiveState live;
  live.defaults.pool_bits = 1ULL << 40;
  auto full = TopologySnapshot::from_doc(doc, live);
  double hops = 0;
  std::size_t n = 0;
  for (std::size_t i = 0; i < std::min<std::size_t>(t.requests.size(), 2'000); ++i) {
    auto r = qkdn::controller::compute_routes(*full, t.app_kms[t.requests[i].src],
                                              t.app_kms[t.requests[i].dst], hop);
    if (r.empty()) continue;
    hops += static_cast<double>(r[0].links.size());
    ++n;
  }
  const double mean_hops = n > 0 ? hops / static_cast<double>(n) : 1.0;
  t.base_rate = total_rate / (mean_bits * mean_hops);
  const std::size_t n_apps = t.app_kms.size();
  t.fixed_paths.assign(n_apps, std::vector<std::vector<std::size_t>>(n_apps));
  for (std::size_t a = 0; a < n_apps; ++a) {
    for (std::size_t b = 0; b < n_apps; ++b) {
      if (t.app_kms[a] == t.app_kms[b]) continue;
      auto r = qkdn::controller::compute_routes(*full, t.app_kms[a], t.app_kms[b], hop);
      if (r.empty()) continue;
      for (const auto& id : r[0].links) t.fixed_paths[a][b].push_back(*t.snapshot->link_index(id));
    }
  }
  return t;
}

// Replays the request sequence at `load` with `metric`; `fixed` = plain hop count (each pair's
// fixed shortest path or nothing).
Outcome replay(const Topology& t, RouteMetric metric, bool fixed, double load, const Config& cfg) {
  const auto& links = t.snapshot->links();
  const std::size_t n_links = links.size();
  std::vector<KeyState> state(n_links);
  std::vector<double> pool(n_links, cfg.pool_capacity_bits);  // start full
  std::vector<double> ewma_bits(n_links, 0);                  // decayed consumed bits
  RouteOptions o;
  o.metric = metric;
  o.require_connected = false;  // no agents in a simulation
  o.weights = cfg.weights;
  const double rate = load * t.base_rate;
  std::uint64_t blocked = 0;
  std::uint64_t endpoint_starved = 0;
  std::uint64_t measured = 0;
  double delivered_bits = 0;
  double consumed_bits = 0;
  double hop_sum = 0;
  for (std::size_t i = 0; i < t.requests.size(); ++i) {
    const Request& r = t.requests[i];
    const double dt = r.gap / rate;
    const double decay = std::exp(-dt / cfg.consumption_tau_s);
    for (std::size_t e = 0; e < n_links; ++e) {
      pool[e] = std::min(cfg.pool_capacity_bits, pool[e] + links[e].key_rate_bps * dt);
      ewma_bits[e] *= decay;
      state[e] = {static_cast<std::uint64_t>(pool[e]), links[e].key_rate_bps,
                  ewma_bits[e] / cfg.consumption_tau_s};
    }
    auto snap = t.snapshot->with_key_state(state);
    o.demand_bits = r.bits;
    std::vector<std::size_t> path;
    bool routed = false;
    if (fixed) {
      path = t.fixed_paths[r.src][r.dst];
      routed = !path.empty() && std::all_of(path.begin(), path.end(), [&](std::size_t e) {
        return snap->link_terms()[e].available_bits >= static_cast<double>(r.bits);
      });
    } else {
      auto routes = qkdn::controller::compute_routes(*snap, t.app_kms[r.src], t.app_kms[r.dst], o);
      if (!routes.empty()) {
        routed = true;
        for (const auto& id : routes[0].links) path.push_back(*t.snapshot->link_index(id));
      }
    }
    const bool measuring = i >= cfg.warmup;
    if (measuring) ++measured;
    if (!routed) {
      if (measuring) ++blocked;
      // Blocked at an endpoint: no link of the source or destination KM holds the demand, so no
      // routing could have served this request at this moment.
      auto starved = [&](const std::string& km) {
        for (std::size_t e = 0; e < n_links; ++e) {
          if ((links[e].a == km || links[e].b == km) &&
              snap->link_terms()[e].available_bits >= static_cast<double>(r.bits)) {
            return false;
          }
        }
        return true;
      };
      if (measuring && (starved(t.app_kms[r.src]) || starved(t.app_kms[r.dst]))) {
        ++endpoint_starved;
      }
      continue;
    }
    for (const std::size_t e : path) {
      pool[e] -= static_cast<double>(r.bits);
      ewma_bits[e] += static_cast<double>(r.bits);
    }
    if (measuring) {
      delivered_bits += static_cast<double>(r.bits);
      consumed_bits += static_cast<double>(r.bits) * static_cast<double>(path.size());
      hop_sum += static_cast<double>(path.size());
    }
  }
  Outcome out;
  out.blocking =
      static_cast<double>(blocked) / static_cast<double>(std::max<std::uint64_t>(measured, 1));
  out.endpoint_share =
      blocked > 0 ? static_cast<double>(endpoint_starved) / static_cast<double>(blocked) : 0;
  out.consumed_per_delivered = delivered_bits > 0 ? consumed_bits / delivered_bits : 0;
  const auto delivered = measured - blocked;
  out.mean_hops = delivered > 0 ? hop_sum / static_cast<double>(delivered) : 0;
  return out;
}

// Load factor at which the baseline (plain hop count, or hop count with admission) blocks
// cfg.target_blocking of requests.
double find_load(const Topology& t, const Config& cfg, Outcome& at) {
  double lo = -8;  // log10 of the load factor
  double hi = 4;
  double best = hi;
  double best_err = 1e9;
  for (int it = 0; it < cfg.bisection_steps; ++it) {
    const double mid = 0.5 * (lo + hi);
    const Outcome o =
        replay(t, RouteMetric::kHopCount, cfg.plain_baseline, std::pow(10.0, mid), cfg);
    const double err = std::abs(o.blocking - cfg.target_blocking);
    if (err < best_err) {
      best_err = err;
      best = mid;
      at = o;
    }
    if (o.blocking < cfg.target_blocking) {
      lo = mid;
    } else {
      hi = mid;
    }
  }
  return std::pow(10.0, best);
}

// ---- fluid cut bound ---------------------------------------------------------------------------

// Share of requests that must be refused to shed a share `x` of the offered bits when the largest
// requests are refused first (keys 1..max_keys, uniformly): the fewest refusals that can do it.
double fewest_refusals(double x, int max_keys) {
  const double total = 0.5 * max_keys * (max_keys + 1);
  double shed = 0;
  double refused = 0;
  for (int k = max_keys; k >= 1; --k) {
    const double share = k / total;
    if (shed + share >= x) return refused + (x - shed) / share / max_keys;
    shed += share;
    refused += 1.0 / max_keys;
  }
  return 1.0;
}

struct CutBound {
  double blocking = 0;           // lower bound on the blocking ratio of any routing
  std::vector<std::size_t> kms;  // the smaller side of the cut
  double capacity_bps = 0;       // generation rate of the links across it
};

// A fluid lower bound on the blocking of *any* routing at `rate` requests/s, in the long run or
// (window) over the measured window (T = requests / rate): for a KM set S, the requests with one
// end in S must cross the links leaving S, which can pass at most cap(S) * T bits, plus in the
// window what their pools hold when measuring starts (at most their capacity), so a share max(0, 1
// - passable / offered) of those requests' bits is refused; refusing the largest requests first
// turns that into the fewest refused requests. Heuristic search over S (single KMs, components of
// the links faster than a threshold, then single-KM moves while the bound grows); any S gives a
// valid bound, the search only looks for a tight one.
CutBound cut_bound(const Topology& t, double rate, const Config& cfg, bool window) {
  const auto& snap = *t.snapshot;
  const std::size_t n = snap.kms().size();
  std::vector<double> apps(n, 0);
  for (const auto& km : t.app_kms) apps[*snap.km_index(km)] += 1;
  const double n_apps = static_cast<double>(t.app_kms.size());
  std::vector<std::pair<std::size_t, std::size_t>> ends;
  for (const auto& l : snap.links()) ends.emplace_back(*snap.km_index(l.a), *snap.km_index(l.b));
  const double mean_bits = 256.0 * 0.5 * (cfg.max_keys + 1);
  auto bound = [&](const std::vector<char>& in) {
    // P(a request has exactly one end in S): src app uniform, dst app uniform among the apps of
    // other KMs (as load() draws them).
    double cross = 0;
    double apps_in = 0;
    for (std::size_t v = 0; v < n; ++v) apps_in += in[v] ? apps[v] : 0;
    for (std::size_t v = 0; v < n; ++v) {
      if (apps[v] == 0) continue;
      const double others = in[v] ? n_apps - apps_in : apps_in - apps[v];
      cross += (apps[v] / n_apps) * (others / (n_apps - apps[v]));
    }
    double cap = 0;
    double stock = 0;  // key the cut's pools can hold when measuring starts
    for (std::size_t e = 0; e < ends.size(); ++e) {
      if (in[ends[e].first] != in[ends[e].second]) {
        cap += snap.links()[e].key_rate_bps;
        stock += cfg.pool_capacity_bits;
      }
    }
    // Over the measured window of T seconds the cut can pass at most cap * T + stock bits; in
    // the long run (window false) only cap * T.
    const double window_s = static_cast<double>(cfg.requests) / rate;
    const double offered = rate * cross * mean_bits * window_s;
    const double passable = cap * window_s + (window ? stock : 0.0);
    if (offered <= passable || cross <= 0) return std::pair{0.0, cap};
    return std::pair{cross * fewest_refusals(1 - passable / offered, cfg.max_keys), cap};
  };
  std::vector<std::vector<char>> starts;
  for (std::size_t v = 0; v < n; ++v) {
    starts.emplace_back(n, 0);
    starts.back()[v] = 1;
  }
  std::vector<double> thresholds;
  for (const auto& l : snap.links()) thresholds.push_back(l.key_rate_bps);
  std::sort(thresholds.begin(), thresholds.end());
  thresholds.erase(std::unique(thresholds.begin(), thresholds.end()), thresholds.end());
  for (double thr : thresholds) {
    std::vector<std::size_t> comp(n, n);
    for (std::size_t root = 0; root < n; ++root) {
      if (comp[root] != n) continue;
      std::vector<std::size_t> stack{root};
      comp[root] = root;
      while (!stack.empty()) {
        const std::size_t u = stack.back();
        stack.pop_back();
        for (std::size_t e = 0; e < ends.size(); ++e) {
          if (snap.links()[e].key_rate_bps <= thr) continue;
          const auto [a, b] = ends[e];
          const std::size_t v = a == u ? b : b == u ? a : n;
          if (v != n && comp[v] == n) {
            comp[v] = root;
            stack.push_back(v);
          }
        }
      }
      std::vector<char> in(n, 0);
      std::size_t size = 0;
      for (std::size_t v = 0; v < n; ++v)
        size += (in[v] = static_cast<char>(comp[v] == root)) != 0 ? 1 : 0;
      if (size < n) starts.push_back(std::move(in));
    }
  }
  CutBound best;
  for (auto in : starts) {
    double cur = bound(in).first;
    for (bool improved = true; improved;) {
      improved = false;
      for (std::size_t v = 0; v < n; ++v) {
        in[v] = static_cast<char>(in[v] == 0);
        const double b = bound(in).first;
        const auto size = static_cast<std::size_t>(std::count(in.begin(), in.end(), 1));
        if (size > 0 && size < n && b > cur + 1e-12) {
          cur = b;
          improved = true;
        } else {
          in[v] = static_cast<char>(in[v] == 0);
        }
      }
    }
    if (cur > best.blocking) {
      best.blocking = cur;
      best.capacity_bps = bound(in).second;
      const auto size = static_cast<std::size_t>(std::count(in.begin(), in.end(), 1));
      best.kms.clear();
      for (std::size_t v = 0; v < n; ++v) {
        if ((in[v] != 0) == (2 * size <= n)) best.kms.push_back(v);
      }
    }
  }
  return best;
}

// ---- report ------------------------------------------------------------------------------------

struct Series {
  std::vector<double> values;
  void add(double v) { values.push_back(v); }
  [[nodiscard]] std::string text(double scale, int precision) const {
    if (values.empty()) return "-";
    double lo = values[0];
    double hi = values[0];
    double sum = 0;
    for (double v : values) {
      lo = std::min(lo, v);
      hi = std::max(hi, v);
      sum += v;
    }
    const double mean = sum / static_cast<double>(values.size());
    char buf[96];
    if (values.size() == 1) {
      std::snprintf(buf, sizeof buf, "%.*f", precision, scale * mean);
    } else {
      std::snprintf(buf, sizeof buf, "%.*f ± %.*f", precision, scale * mean, precision,
                    scale * 0.5 * (hi - lo));
    }
    return buf;
  }
  [[nodiscard]] double mean() const {
    double sum = 0;
    for (double v : values) sum += v;
    return values.empty() ? 0 : sum / static_cast<double>(values.size());
  }
};

struct Row {
  std::string topology;
  std::string scale;
  std::string metric;
  Series blocking;
  Series reduction;
  Series key_per_delivered;
  Series hops;
  Series endpoint;
};

struct Candidate {
  std::string name;
  RouteMetric metric;
  qkdn::controller::KeyAwareWeights weights;
  bool fixed = false;  // plain hop count
};

[[noreturn]] void usage(const char* argv0) {
  std::fprintf(stderr,
               "usage: %s [--quick] [--seeds N,N,...] [--requests N] [--topology NAME]...\n"
               "          [--compare] [--load-1x] [--capacity BITS] [--ewma-s S]\n"
               "          [--baseline plain|admission]\n"
               "          [--alpha X] [--beta X] [--gamma X] [--horizon S] [--kappa X]\n"
               "          [--headroom X] [--headroom-horizon S] [--headroom-share X]\n"
               "          [--full-price-share X]\n"
               "  --topology NAME: a file of tests/data/topologies (germany50, nobel-eu, cost266,\n"
               "    ...) or random:N:M[:S], a seeded graph of N KMs and M links made at run time\n",
               argv0);
  std::exit(2);
}

std::vector<std::uint64_t> parse_seeds(const std::string& s) {
  std::vector<std::uint64_t> out;
  std::size_t pos = 0;
  while (pos <= s.size()) {
    const std::size_t comma = std::min(s.find(',', pos), s.size());
    out.push_back(std::stoull(s.substr(pos, comma - pos)));
    pos = comma + 1;
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  Config cfg;
  bool topology_given = false;
  bool quick = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage(argv[0]);
      return argv[++i];
    };
    if (a == "--quick") {
      quick = true;
    } else if (a == "--seed" || a == "--seeds") {
      cfg.seeds = parse_seeds(value());
    } else if (a == "--requests") {
      cfg.requests = std::stoull(value());
      cfg.warmup = cfg.requests / 4;
    } else if (a == "--topology") {
      if (!topology_given) cfg.topologies.clear();
      topology_given = true;
      cfg.topologies.push_back(value());
    } else if (a == "--compare") {
      cfg.compare = true;
    } else if (a == "--capacity") {
      cfg.pool_capacity_bits = std::stod(value());
    } else if (a == "--ewma-s") {
      cfg.consumption_tau_s = std::stod(value());
    } else if (a == "--kappa") {
      cfg.weights.kappa = std::stod(value());
    } else if (a == "--alpha") {
      cfg.weights.alpha = std::stod(value());
    } else if (a == "--beta") {
      cfg.weights.beta = std::stod(value());
    } else if (a == "--gamma") {
      cfg.weights.gamma = std::stod(value());
    } else if (a == "--horizon") {
      cfg.weights.horizon_s = std::stod(value());
    } else if (a == "--headroom") {
      cfg.weights.headroom = std::stod(value());
    } else if (a == "--headroom-horizon") {
      cfg.weights.headroom_horizon_s = std::stod(value());
    } else if (a == "--headroom-share") {
      cfg.weights.headroom_share = std::stod(value());
    } else if (a == "--full-price-share") {
      cfg.weights.full_price_share = std::stod(value());
    } else if (a == "--baseline") {
      const std::string b = value();
      if (b != "plain" && b != "admission") usage(argv[0]);
      cfg.plain_baseline = b == "plain";
    } else if (a == "--load-1x") {
      cfg.only_1x = true;
    } else {
      usage(argv[0]);
    }
  }
  if (quick) {
    // CI smoke test: one seed, short runs, the 10 % load only.
    cfg.seeds.resize(1);
    cfg.requests = 3'000;
    cfg.warmup = 1'000;
    cfg.bisection_steps = 10;
    cfg.only_1x = true;
  }
  std::string cmd;
  for (int i = 0; i < argc; ++i) cmd += (i ? " " : "") + std::string(argv[i]);
  std::string seeds;
  for (auto s : cfg.seeds) seeds += (seeds.empty() ? "" : ",") + std::to_string(s);

  // The baseline comes first: the reduction column is relative to it.
  const std::string baseline_name = cfg.plain_baseline ? "hop_count_plain" : "hop_count";
  qkdn::controller::KeyAwareWeights ungated = cfg.weights;
  ungated.headroom = 0;
  std::vector<Candidate> candidates{
      {"hop_count_plain", RouteMetric::kHopCount, cfg.weights, true},
      {"hop_count", RouteMetric::kHopCount, cfg.weights, false},
      {"key_aware", RouteMetric::kKeyAware, cfg.weights, false},
      {"key_aware_ungated", RouteMetric::kKeyAware, ungated, false},
      {"widest_shortest", RouteMetric::kWidestShortest, cfg.weights, false}};
  if (!cfg.plain_baseline) std::swap(candidates[0], candidates[1]);
  if (cfg.compare) {
    // The candidate costs in the same run: the previous default (no depletion factor) and other
    // depletion exponents.
    for (double kappa : {0.0, 3.0, 6.0, 10.0}) {
      if (kappa == cfg.weights.kappa) continue;
      Candidate c{"key_aware kappa=" + std::to_string(static_cast<int>(kappa)),
                  RouteMetric::kKeyAware, cfg.weights};
      c.weights.kappa = kappa;
      candidates.push_back(std::move(c));
    }
  }
  std::vector<Row> rows;
  std::vector<std::string> notes;
  for (const auto& name : cfg.topologies) {
    std::vector<double> scales{0.5, 1.0, 2.0};
    if (cfg.only_1x) scales = {1.0};
    const std::size_t first_row = rows.size();
    for (double scale : scales) {
      for (const auto& c : candidates) {
        Row r;
        r.topology = name;
        char buf[16];
        std::snprintf(buf, sizeof buf, "%.1fx", scale);
        r.scale = buf;
        r.metric = c.name;
        rows.push_back(std::move(r));
      }
    }
    Series bound;
    Series window_bound;
    Series load_rps;
    std::string cut;
    std::size_t n_kms = 0;
    std::size_t n_links = 0;
    for (std::uint64_t seed : cfg.seeds) {
      Config run = cfg;
      run.seed = seed;
      const Topology t = load(name, run);
      n_kms = t.snapshot->kms().size();
      n_links = t.snapshot->links().size();
      Outcome hop_at;
      const double load10 = find_load(t, run, hop_at);
      load_rps.add(load10 * t.base_rate);
      const CutBound cb = cut_bound(t, load10 * t.base_rate, run, false);
      bound.add(cb.blocking);
      window_bound.add(cut_bound(t, load10 * t.base_rate, run, true).blocking);
      cut.clear();
      for (std::size_t v : cb.kms) cut += (cut.empty() ? "" : ", ") + t.snapshot->kms()[v].km_id;
      cut += " (" + std::to_string(static_cast<long long>(cb.capacity_bps)) + " b/s across)";
      std::size_t row = first_row;
      for (double scale : scales) {
        const double load = load10 * scale;
        double hop_blocking = 0;
        for (const auto& c : candidates) {
          Config with = run;
          with.weights = c.weights;
          const Outcome o = replay(t, c.metric, c.fixed, load, with);
          if (c.name == baseline_name) hop_blocking = o.blocking;
          Row& r = rows[row++];
          r.blocking.add(o.blocking);
          r.reduction.add(hop_blocking > 0 ? 1 - o.blocking / hop_blocking : 0);
          r.key_per_delivered.add(o.consumed_per_delivered);
          r.hops.add(o.mean_hops);
          r.endpoint.add(o.endpoint_share);
        }
      }
    }
    char buf[600];
    std::snprintf(buf, sizeof buf,
                  "%s: %zu KMs, %zu links; 1.0x = %s requests/s (%s blocks ~10 %%); "
                  "fluid cut bound at 1.0x, any routing: long run %s %% of requests, cut {%s}; "
                  "measured window, pools full at its start: %s %%",
                  name.c_str(), n_kms, n_links, load_rps.text(1, 4).c_str(), baseline_name.c_str(),
                  bound.text(100, 2).c_str(), cut.c_str(), window_bound.text(100, 2).c_str());
    notes.emplace_back(buf);
  }

  std::printf("## bench_demand_replay\n\n");
  std::printf("command: `%s`  \n", cmd.c_str());
  std::printf(
      "seeds %s; %zu measured requests after %zu warm-up per run; keys 1..%d x 256 bits; pool "
      "capacity %.0f bits, floor 256 bits, pools start full and fill at key_rate_bps; "
      "consumption seen by the router: EWMA, time constant %.0f s; values are mean ± half the "
      "spread over the seeds\n\n",
      seeds.c_str(), cfg.requests, cfg.warmup, cfg.max_keys, cfg.pool_capacity_bits,
      cfg.consumption_tau_s);
  std::printf(
      "key-aware weights: alpha %.3g, beta %.3g, gamma %.3g, horizon %.3g s, kappa %.3g, headroom "
      "%.3g over %.3g s, share %.3g, full price at %.3g of the gate (key_aware_ungated: the same "
      "without the headroom gate)\n\n",
      cfg.weights.alpha, cfg.weights.beta, cfg.weights.gamma, cfg.weights.horizon_s,
      cfg.weights.kappa, cfg.weights.headroom, cfg.weights.headroom_horizon_s,
      cfg.weights.headroom_share, cfg.weights.full_price_share);
  if (quick || cfg.requests < 20'000) {
    std::printf(
        "note: short run (smoke test): pools start full and the warm-up is short, so these "
        "figures reflect the transient, not the steady state of the full run\n\n");
  }
  for (const auto& n : notes) std::printf("- %s\n", n.c_str());
  std::printf(
      "\nbaseline: %s (%s)\n"
      "\n| topology | load | metric | blocking %% | vs baseline %% | key per delivered key | "
      "hops | blocked at endpoint %% |\n|---|---|---|---|---|---|---|---|\n",
      baseline_name.c_str(),
      cfg.plain_baseline
          ? "plain hop count: each pair's fixed shortest path, blocked when a hop lacks the demand"
          : "hop count with admission: the shortest path whose every hop holds the demand");
  for (const auto& r : rows) {
    std::printf("| %s | %s | %s | %s | %s | %s | %s | %s |\n", r.topology.c_str(), r.scale.c_str(),
                r.metric.c_str(), r.blocking.text(100, 2).c_str(),
                r.metric == baseline_name ? "-" : r.reduction.text(100, 1).c_str(),
                r.key_per_delivered.text(1, 3).c_str(), r.hops.text(1, 2).c_str(),
                r.endpoint.text(100, 1).c_str());
  }
  std::printf("\n");
  // Issue 20, judged on every run (the smoke test too, where it is only indicative): key-aware
  // blocks no more than the cost before the headroom gate (within 0.1 point of noise), and where
  // neither key-aware nor hop count with admission blocks (<= 0.1 %) it spends at most 5 % more
  // key per delivered key than hop count.
  bool thrifty_met = true;
  auto find_row = [&](const std::string& topo, const std::string& scale, const std::string& m) {
    for (const auto& r : rows) {
      if (r.topology == topo && r.scale == scale && r.metric == m) return &r;
    }
    return static_cast<const Row*>(nullptr);
  };
  for (const auto& r : rows) {
    if (r.metric != "key_aware") continue;
    const Row* before = find_row(r.topology, r.scale, "key_aware_ungated");
    const Row* hop = find_row(r.topology, r.scale, "hop_count");
    if (before == nullptr || hop == nullptr) continue;
    const bool no_worse = r.blocking.mean() <= before->blocking.mean() + 0.001;
    const bool neither_blocks = r.blocking.mean() <= 0.001 && hop->blocking.mean() <= 0.001;
    const double ratio =
        r.key_per_delivered.mean() / std::max(hop->key_per_delivered.mean(), 1e-12);
    const bool thrifty = !neither_blocks || ratio <= 1.05;
    thrifty_met = thrifty_met && no_worse && thrifty;
    std::printf(
        "issue 20 %s %s: key-aware blocks %.2f %% (ungated %.2f %%): %s; key per delivered key "
        "%.3f vs hop count %.3f (%+.1f %%)%s\n",
        r.topology.c_str(), r.scale.c_str(), 100 * r.blocking.mean(), 100 * before->blocking.mean(),
        no_worse ? "no worse" : "WORSE", r.key_per_delivered.mean(), hop->key_per_delivered.mean(),
        100 * (ratio - 1),
        neither_blocks
            ? (thrifty ? ", neither blocks: within 5 %" : ", neither blocks: NOT within 5 %")
            : "");
  }
  std::printf("issue 20 goal: %s\n\n", thrifty_met ? "met" : "NOT met");
  if (quick) {
    std::printf("smoke test: the goal is judged on the full run only\n");
    return 0;
  }
  bool goal_met = true;
  for (const auto& r : rows) {
    if (r.scale != "1.0x" || r.metric != "key_aware") continue;
    const bool met = r.reduction.mean() >= 0.25;
    goal_met = goal_met && met;
    std::printf(
        "goal %s: key-aware blocks %.1f %% fewer requests than %s at the load where it blocks "
        "~10 %% (mean over seeds; >= 25 %%): %s\n",
        r.topology.c_str(), 100 * r.reduction.mean(), baseline_name.c_str(),
        met ? "met" : "NOT met");
  }
  std::printf("overall goal: %s\n", goal_met ? "met" : "NOT met");
  return 0;
}
