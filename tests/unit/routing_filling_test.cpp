// Issue 20 on a shipped topology: while germany50's key pools fill from empty (the demo's first
// minutes), the key-aware route keeps to the shortest path as long as its pools hold well more
// than the expected demand. The live state comes from a Network fed status reports under an
// injected clock, as the controller sees it.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "qkdn/controller/clock.hpp"
#include "qkdn/controller/network.hpp"
#include "qkdn/controller/routing.hpp"
#include "qkdn/controller/topology.hpp"
#include "qkdn/southbound/topology_json.hpp"
#include "rerouting_test_util.hpp"

namespace qkdn::controller {
namespace {

// A Network holding germany50 with every KM registered; report(t) has every KM report its links'
// pools as they stand t seconds after the agents started (each pool fills at its key rate up to
// the agents' default store of 256 KiB, nothing consumed yet).
class FillingGermany50 : public ::testing::Test {
 protected:
  void SetUp() override {
    doc_ = southbound::load_topology_file(std::string(QKDN_TOPOLOGY_DIR) + "/germany50.json");
    net_.apply_topology(doc_);
    testing::register_every_km(net_, doc_);
  }

  void report_after(std::chrono::seconds elapsed) {
    clock_.advance(elapsed - elapsed_);
    elapsed_ = elapsed;
    const auto t = static_cast<double>(elapsed.count());
    for (const auto& km : doc_.kms) {
      std::vector<LinkReport> reports;
      for (const auto& l : doc_.links) {
        if (l.a != km.km_id && l.b != km.km_id) continue;
        LinkReport r;
        r.link_id = l.link_id;
        r.peer_kma_id = l.a == km.km_id ? l.b : l.a;
        r.up = true;
        r.stored_key_bits =
            static_cast<std::uint64_t>(std::min(kStoreBits, std::floor(l.key_rate_bps * t)));
        r.stored_keys = r.stored_key_bits / 256;
        r.key_rate_bps = l.key_rate_bps;
        r.qber = l.qber;
        reports.push_back(r);
      }
      net_.apply_status(km.km_id, reports);
    }
  }

  std::vector<Route> route(RouteMetric metric) {
    RouteOptions o;
    o.metric = metric;
    return compute_routes(*TopologySnapshot::from_network(net_), "Aachen", "Dresden", o);
  }

  static constexpr double kStoreBits = 262'144.0 * 8;
  ManualClock clock_;
  Network net_{clock_};
  TopologyDoc doc_;
  std::chrono::seconds elapsed_{0};
};

// The demo's first route: before the gate depended on the demand alone, the pools of slower
// links were priced against the fullest pool while they filled, and Aachen -> Dresden took 11
// hops. Now it is as short as hop count's route at every moment from 10 s on (when the slowest
// link of the short route, 171 b/s, holds more than four times the 256-bit reference demand over
// its floor), while the fast links fill and after every pool is full.
TEST_F(FillingGermany50, FirstRouteIsTheShortestWhilePoolsFill) {
  for (const int s : {10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200}) {
    report_after(std::chrono::seconds{s});
    const auto shortest = route(RouteMetric::kHopCount);
    const auto key_aware = route(RouteMetric::kKeyAware);
    ASSERT_FALSE(shortest.empty()) << s << " s";
    ASSERT_FALSE(key_aware.empty()) << s << " s";
    std::string path;
    for (const auto& km : key_aware[0].kms) path += km + " ";
    EXPECT_EQ(key_aware[0].links.size(), shortest[0].links.size())
        << "after " << s << " s: " << path;
  }
}

}  // namespace
}  // namespace qkdn::controller
