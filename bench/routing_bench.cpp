// Route computation latency on real topologies: key-aware single route and Yen k=4, against a
// plain boost::dijkstra_shortest_paths on the same graph in the same run. Each benchmark times
// every query and reports p50/p99/mean in microseconds as counters; a summary at the end gives
// the key-aware / plain-Dijkstra ratios (goal: single key-aware route <= 2x plain Dijkstra).
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <boost/graph/dijkstra_shortest_paths.hpp>

#include "qkdn/controller/clock.hpp"
#include "qkdn/controller/network.hpp"
#include "qkdn/controller/routing.hpp"
#include "qkdn/southbound/topology_json.hpp"

namespace {

using qkdn::controller::RouteMetric;
using qkdn::controller::RouteOptions;
using qkdn::controller::TopologySnapshot;

constexpr std::size_t kPairs = 1024;
constexpr std::uint64_t kSeed = 20261122;

struct Fixture {
  std::shared_ptr<const TopologySnapshot> snapshot;
  std::vector<std::pair<std::string, std::string>> pairs;  // seeded random src/dst
  std::vector<double> static_weight;                       // distance_km, for plain Dijkstra
};

// Loads a topology and freezes it with seeded random live pools (1 kbit..10 Mbit, some below
// the floor), consumption up to twice the generation rate on a fifth of the links.
const Fixture& fixture(const std::string& name) {
  static std::map<std::string, Fixture> cache;
  auto it = cache.find(name);
  if (it != cache.end()) return it->second;
  auto doc =
      qkdn::southbound::load_topology_file(std::string(QKDN_TOPOLOGY_DIR) + "/" + name + ".json");
  std::mt19937_64 rng(kSeed);
  qkdn::controller::LiveState live;
  for (const auto& l : doc.links) {
    auto& v = live.links[l.link_id];
    v.pool_bits = static_cast<std::uint64_t>(
        std::pow(10.0, std::uniform_real_distribution<double>(2.0, 7.0)(rng)));
    if (rng() % 5 == 0) {
      v.consumption_rate_bps = l.key_rate_bps * std::uniform_real_distribution<>(0, 2)(rng);
    }
  }
  Fixture f;
  f.snapshot = TopologySnapshot::from_doc(doc, live);
  const auto& kms = f.snapshot->kms();
  while (f.pairs.size() < kPairs) {
    const auto s = rng() % kms.size();
    const auto d = rng() % kms.size();
    if (s != d) f.pairs.emplace_back(kms[s].km_id, kms[d].km_id);
  }
  for (const auto& l : f.snapshot->links()) f.static_weight.push_back(l.distance_km + 1.0);
  return cache.emplace(name, std::move(f)).first->second;
}

struct Stats {
  double p50_us = 0;
  double p99_us = 0;
  double mean_us = 0;
};

std::map<std::string, Stats>& results() {
  static std::map<std::string, Stats> r;
  return r;
}

// Times one query per iteration and publishes the latency distribution.
template <typename Query>
void run_timed(benchmark::State& state, const std::string& key, Query&& query) {
  std::vector<double> samples;
  samples.reserve(1 << 16);
  std::size_t i = 0;
  for (auto _ : state) {
    const auto t0 = std::chrono::steady_clock::now();
    query(i++ % kPairs);
    const auto t1 = std::chrono::steady_clock::now();
    samples.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
  }
  std::sort(samples.begin(), samples.end());
  Stats s;
  if (!samples.empty()) {
    s.p50_us = samples[samples.size() / 2];
    s.p99_us = samples[std::min(samples.size() - 1, samples.size() * 99 / 100)];
    double sum = 0;
    for (double x : samples) sum += x;
    s.mean_us = sum / static_cast<double>(samples.size());
  }
  state.counters["p50_us"] = s.p50_us;
  state.counters["p99_us"] = s.p99_us;
  state.counters["mean_us"] = s.mean_us;
  results()[key] = s;
}

void bm_route(benchmark::State& state, const std::string& topo, RouteMetric metric, std::size_t k) {
  const Fixture& f = fixture(topo);
  RouteOptions o;
  o.metric = metric;
  o.k = k;
  std::size_t found = 0;
  run_timed(state, topo + "/" + std::string(to_string(metric)) + "/k" + std::to_string(k),
            [&](std::size_t i) {
              auto routes = qkdn::controller::compute_routes(*f.snapshot, f.pairs[i].first,
                                                             f.pairs[i].second, o);
              found += routes.size();
              benchmark::DoNotOptimize(routes);
            });
  state.counters["routes_per_query"] =
      static_cast<double>(found) /
      static_cast<double>(std::max<std::int64_t>(state.iterations(), 1));
}

// The baseline: stock boost::dijkstra_shortest_paths with static weights, vectors allocated per
// query as a typical caller would, and the path to dst read back.
void bm_plain_dijkstra(benchmark::State& state, const std::string& topo) {
  const Fixture& f = fixture(topo);
  const auto& g = f.snapshot->graph();
  const auto n = boost::num_vertices(g);
  std::vector<std::size_t> s_index(kPairs);
  std::vector<std::size_t> d_index(kPairs);
  for (std::size_t i = 0; i < kPairs; ++i) {
    s_index[i] = *f.snapshot->km_index(f.pairs[i].first);
    d_index[i] = *f.snapshot->km_index(f.pairs[i].second);
  }
  run_timed(state, topo + "/plain_dijkstra/k1", [&](std::size_t i) {
    std::vector<std::size_t> pred(n);
    std::vector<double> dist(n);
    auto index = boost::get(boost::vertex_index, g);
    boost::dijkstra_shortest_paths(
        g, s_index[i],
        boost::predecessor_map(boost::make_iterator_property_map(pred.begin(), index))
            .distance_map(boost::make_iterator_property_map(dist.begin(), index))
            .weight_map(boost::make_iterator_property_map(f.static_weight.begin(),
                                                          boost::get(boost::edge_index, g))));
    std::vector<std::size_t> path;
    for (std::size_t v = d_index[i]; v != s_index[i] && pred[v] != v; v = pred[v]) {
      path.push_back(v);
    }
    benchmark::DoNotOptimize(path);
  });
}

// A generated metro network (bench/controller_scale.sh's shape): a ring of `kms` KMs plus chords
// to KMs 2..12 places on, `links` links in all, seeded.
qkdn::controller::TopologyDoc generated_network(std::size_t kms, std::size_t links) {
  qkdn::controller::TopologyDoc doc;
  doc.name = "generated";
  char id[32];
  for (std::size_t i = 0; i < kms; ++i) {
    std::snprintf(id, sizeof id, "KM%05zu", i);
    doc.kms.push_back({});
    doc.kms.back().km_id = id;
  }
  std::mt19937_64 rng(kSeed);
  std::set<std::pair<std::size_t, std::size_t>> seen;
  auto add = [&](std::size_t a, std::size_t b) {
    const auto key = std::minmax(a, b);
    if (a == b || !seen.insert(key).second) return;
    qkdn::controller::LinkSpec l;
    l.a = doc.kms[key.first].km_id;
    l.b = doc.kms[key.second].km_id;
    l.link_id = "L-" + l.a + "-" + l.b;
    l.key_rate_bps = 1e5;
    l.distance_km = 20;
    doc.links.push_back(std::move(l));
  };
  for (std::size_t i = 0; i < kms; ++i) add(i, (i + 1) % kms);
  while (doc.links.size() < links) {
    const auto i = rng() % kms;
    add(i, (i + 2 + rng() % 11) % kms);
  }
  return doc;
}

// Building the routing snapshot of a whole network: what the controller pays, coalesced, after
// KM and link events and pool changes (issue 15: 10,000 KMs, 20,000 links).
void bm_snapshot_build(benchmark::State& state) {
  const auto kms = static_cast<std::size_t>(state.range(0));
  const auto doc = generated_network(kms, 2 * kms);
  const qkdn::SystemClock clock;
  qkdn::controller::Network network(clock);
  network.apply_topology(doc);
  for (auto _ : state) {
    auto s = TopologySnapshot::from_network(network);
    benchmark::DoNotOptimize(s);
  }
  state.counters["links"] = static_cast<double>(doc.links.size());
}

void register_all() {
  benchmark::RegisterBenchmark("snapshot_build/generated", bm_snapshot_build)
      ->Arg(1000)
      ->Arg(10000)
      ->Unit(benchmark::kMillisecond);
  for (const std::string topo : {"germany50", "cogentco", "kdl"}) {
    benchmark::RegisterBenchmark(("plain_dijkstra/" + topo).c_str(), bm_plain_dijkstra, topo);
    benchmark::RegisterBenchmark(("key_aware_k1/" + topo).c_str(), bm_route, topo,
                                 RouteMetric::kKeyAware, std::size_t{1});
    benchmark::RegisterBenchmark(("key_aware_k4/" + topo).c_str(), bm_route, topo,
                                 RouteMetric::kKeyAware, std::size_t{4});
    benchmark::RegisterBenchmark(("hop_count_k1/" + topo).c_str(), bm_route, topo,
                                 RouteMetric::kHopCount, std::size_t{1});
    benchmark::RegisterBenchmark(("widest_shortest_k1/" + topo).c_str(), bm_route, topo,
                                 RouteMetric::kWidestShortest, std::size_t{1});
  }
}

void print_summary() {
  std::printf("\nRoute computation latency, microseconds (seeded src/dst pairs, seed %llu)\n",
              static_cast<unsigned long long>(kSeed));
  std::printf("%-10s %-22s %9s %9s %9s %14s %14s\n", "topology", "query", "p50", "p99", "mean",
              "p50/dijkstra", "mean/dijkstra");
  for (const std::string topo : {"germany50", "cogentco", "kdl"}) {
    auto base = results().find(topo + "/plain_dijkstra/k1");
    if (base == results().end()) continue;
    for (const auto& [key, s] : results()) {
      if (key.rfind(topo + "/", 0) != 0) continue;
      std::printf("%-10s %-22s %9.2f %9.2f %9.2f %14.2f %14.2f\n", topo.c_str(),
                  key.substr(topo.size() + 1).c_str(), s.p50_us, s.p99_us, s.mean_us,
                  s.p50_us / base->second.p50_us, s.mean_us / base->second.mean_us);
    }
  }
  bool ok = true;
  for (const std::string topo : {"germany50", "cogentco", "kdl"}) {
    auto base = results().find(topo + "/plain_dijkstra/k1");
    auto ka = results().find(topo + "/key_aware/k1");
    if (base == results().end() || ka == results().end()) continue;
    const double ratio = ka->second.p50_us / base->second.p50_us;
    std::printf("goal %s: key-aware single route p50 = %.2fx plain Dijkstra (<= 2x): %s\n",
                topo.c_str(), ratio, ratio <= 2.0 ? "met" : "NOT met");
    ok = ok && ratio <= 2.0;
  }
  std::printf("overall: %s\n", ok ? "met" : "NOT met");
}

}  // namespace

int main(int argc, char** argv) {
  register_all();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  print_summary();
  return 0;
}
