// Demand-replay simulation: how often does each routing metric block key requests?
//
// Simulated time, fixed seed. Every link's pool fills at its key_rate_bps up to a capacity; SAE
// pairs (one SAE per KM) ask for n x 256-bit keys with Poisson arrivals; a request takes the best
// route (k = 1) whose every hop holds floor + demand bits, and consumes the demand on every hop;
// it is blocked when no such route exists. Each metric replays the same request sequence.
//
// The offered load is searched (bisection on a log scale) until hop-count routing blocks about
// 10 % of requests; the table reports every metric at that load (and at half and double), with
// the blocking reduction of key-aware routing relative to hop count.
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
};

Topology load(const std::string& name, const Config& cfg) {
  Topology t;
  t.name = name;
  auto doc =
      qkdn::southbound::load_topology_file(std::string(QKDN_TOPOLOGY_DIR) + "/" + name + ".json");
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
  return t;
}

// Replays the request sequence at `load` with `metric`.
Outcome replay(const Topology& t, RouteMetric metric, double load, const Config& cfg) {
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
    auto routes = qkdn::controller::compute_routes(*snap, t.app_kms[r.src], t.app_kms[r.dst], o);
    const bool measuring = i >= cfg.warmup;
    if (measuring) ++measured;
    if (routes.empty()) {
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
    for (const auto& id : routes[0].links) {
      const std::size_t e = *t.snapshot->link_index(id);
      pool[e] -= static_cast<double>(r.bits);
      ewma_bits[e] += static_cast<double>(r.bits);
    }
    if (measuring) {
      delivered_bits += static_cast<double>(r.bits);
      consumed_bits += static_cast<double>(r.bits) * static_cast<double>(routes[0].links.size());
      hop_sum += static_cast<double>(routes[0].links.size());
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

// Load factor at which hop-count routing blocks cfg.target_blocking of requests.
double find_load(const Topology& t, const Config& cfg, Outcome& at) {
  double lo = -8;  // log10 of the load factor
  double hi = 4;
  double best = hi;
  double best_err = 1e9;
  for (int it = 0; it < 18; ++it) {
    const double mid = 0.5 * (lo + hi);
    const Outcome o = replay(t, RouteMetric::kHopCount, std::pow(10.0, mid), cfg);
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

[[noreturn]] void usage(const char* argv0) {
  std::fprintf(stderr,
               "usage: %s [--quick] [--seed N] [--requests N] [--topology NAME]...\n"
               "          [--alpha X] [--beta X] [--gamma X] [--horizon S] [--capacity BITS]\n",
               argv0);
  std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  Config cfg;
  bool topology_given = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage(argv[0]);
      return argv[++i];
    };
    if (a == "--quick") {
      cfg.requests = 3'000;
      cfg.warmup = 1'000;
    } else if (a == "--seed") {
      cfg.seed = std::stoull(value());
    } else if (a == "--requests") {
      cfg.requests = std::stoull(value());
      cfg.warmup = cfg.requests / 4;
    } else if (a == "--topology") {
      if (!topology_given) cfg.topologies.clear();
      topology_given = true;
      cfg.topologies.push_back(value());
    } else if (a == "--alpha") {
      cfg.weights.alpha = std::stod(value());
    } else if (a == "--beta") {
      cfg.weights.beta = std::stod(value());
    } else if (a == "--gamma") {
      cfg.weights.gamma = std::stod(value());
    } else if (a == "--horizon") {
      cfg.weights.horizon_s = std::stod(value());
    } else if (a == "--capacity") {
      cfg.pool_capacity_bits = std::stod(value());
    } else {
      usage(argv[0]);
    }
  }
  std::string cmd;
  for (int i = 0; i < argc; ++i) cmd += (i ? " " : "") + std::string(argv[i]);
  std::printf("command: %s\n", cmd.c_str());
  std::printf(
      "seed %llu, %zu measured requests after %zu warm-up, keys 1..%d x 256 bits, pool capacity "
      "%.0f bits, floor 256 bits, consumption EWMA %.0f s\n",
      static_cast<unsigned long long>(cfg.seed), cfg.requests, cfg.warmup, cfg.max_keys,
      cfg.pool_capacity_bits, cfg.consumption_tau_s);
  if (cfg.requests < 20'000) {
    std::printf(
        "note: short run (smoke test): pools start full and the warm-up is short, so these "
        "figures reflect the transient, not the steady state of the full run\n");
  }
  std::printf("key-aware weights: alpha %.3g, beta %.3g, gamma %.3g, horizon %.3g s\n\n",
              cfg.weights.alpha, cfg.weights.beta, cfg.weights.gamma, cfg.weights.horizon_s);

  bool goal_met = true;
  for (const auto& name : cfg.topologies) {
    const Topology t = load(name, cfg);
    Outcome hop_at;
    const double load10 = find_load(t, cfg, hop_at);
    std::printf(
        "%s: %zu KMs, %zu links; hop count blocks %.1f %% at load factor %.4g (%.4g "
        "requests/s)\n",
        name.c_str(), t.snapshot->kms().size(), t.snapshot->links().size(), 100 * hop_at.blocking,
        load10, load10 * t.base_rate);
    std::printf("  %-8s %-16s %10s %12s %10s %10s %12s\n", "load", "metric", "blocking",
                "key/deliv.", "hops", "vs hop", "at endpoint");
    double key_aware_reduction = 0;
    for (double scale : {0.5, 1.0, 2.0}) {
      const double load = load10 * scale;
      const Outcome hop = replay(t, RouteMetric::kHopCount, load, cfg);
      for (auto m :
           {RouteMetric::kHopCount, RouteMetric::kKeyAware, RouteMetric::kWidestShortest}) {
        const Outcome o = m == RouteMetric::kHopCount ? hop : replay(t, m, load, cfg);
        const double reduction = hop.blocking > 0 ? 1 - o.blocking / hop.blocking : 0;
        std::printf("  %-8s %-16s %9.2f%% %12.3f %10.2f %9.1f%% %11.1f%%\n",
                    (std::to_string(scale).substr(0, 3) + "x").c_str(),
                    std::string(to_string(m)).c_str(), 100 * o.blocking, o.consumed_per_delivered,
                    o.mean_hops, 100 * reduction, 100 * o.endpoint_share);
        if (scale == 1.0 && m == RouteMetric::kKeyAware) key_aware_reduction = reduction;
      }
    }
    const bool met = key_aware_reduction >= 0.25;
    goal_met = goal_met && met;
    std::printf(
        "  -> %s: key-aware blocks %.1f %% fewer requests than hop count at the hop-count "
        "~10 %% load (goal >= 25 %%): %s\n",
        name.c_str(), 100 * key_aware_reduction, met ? "met" : "NOT met");
    std::printf("\n");
  }
  std::printf("overall goal: %s\n", goal_met ? "met" : "NOT met");
  return 0;
}
