// A small live network driven through the Network model, with a rerouting engine beside it.
#pragma once

#include <initializer_list>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "qkdn/controller/clock.hpp"
#include "qkdn/controller/network.hpp"
#include "qkdn/controller/rerouting.hpp"
#include "qkdn/controller/routing.hpp"
#include "qkdn/controller/topology.hpp"

namespace qkdn::controller::testing {

using Strings = std::vector<std::string>;

/// Registers every KM of `doc` with `net`, each with all its links (a placeholder KMA endpoint).
inline void register_every_km(Network& net, const TopologyDoc& doc) {
  for (const auto& km : doc.kms) {
    Registration reg;
    reg.km_id = km.km_id;
    reg.kma_endpoint = "127.0.0.1:1";
    for (const auto& l : doc.links) {
      if (l.a == km.km_id) reg.links.push_back({l.link_id, l.b});
      if (l.b == km.km_id) reg.links.push_back({l.link_id, l.a});
    }
    net.register_km(reg);
  }
}

/// KMs and links {id, a, b, key_rate_bps}; every KM registers with all its links, and every link
/// reports a full pool (1 Mbit), its rate and QBER 2 %. The engine has seen the first snapshot.
class Lab {
 public:
  Lab(std::initializer_list<std::string> kms,
      std::initializer_list<std::tuple<std::string, std::string, std::string, double>> links) {
    doc_.name = "lab";
    for (const auto& km : kms) doc_.kms.push_back({km, km});
    for (const auto& [id, a, b, rate] : links) doc_.links.push_back({id, a, b, rate, 10, 0.02});
    net.apply_topology(doc_);
    register_every_km(net, doc_);
    for (const auto& l : doc_.links) {
      reports_[l.link_id] = {l.link_id, l.b, true, 4000, 1'000'000, l.key_rate_bps, 0, 0.02};
      net.apply_status(l.a, {reports_[l.link_id]});
    }
    engine.on_snapshot(snapshot());
  }
  // Members point at each other (network and engine hold &clock): never copied or moved.
  Lab(const Lab&) = delete;
  Lab& operator=(const Lab&) = delete;

  std::shared_ptr<const TopologySnapshot> snapshot() const {
    return TopologySnapshot::from_network(net);
  }

  /// Gives the engine events the network has already applied, with a snapshot taken after them
  /// (never `on_events(net.mutate(), snapshot())`: argument evaluation order is unspecified).
  ReroutingOutput feed(const std::vector<NetworkEvent>& events) {
    return engine.on_events(events, snapshot());
  }

  /// Changes a link's report (as sent by its `a` end), feeds the events to the engine.
  template <class F>
  ReroutingOutput report(const std::string& link_id, F&& change) {
    LinkReport& r = reports_.at(link_id);
    change(r);
    const std::string a = net.find_link(link_id)->spec.a;
    return feed(net.apply_status(a, {r}));
  }
  ReroutingOutput qber(const std::string& link_id, double q) {
    return report(link_id, [q](LinkReport& r) { r.qber = q; });
  }
  ReroutingOutput link_up(const std::string& link_id, bool up) {
    return report(link_id, [up](LinkReport& r) { r.up = up; });
  }
  ReroutingOutput pool(const std::string& link_id, std::uint64_t bits) {
    return report(link_id, [bits](LinkReport& r) { r.stored_key_bits = bits; });
  }
  ReroutingOutput rate(const std::string& link_id, double bps) {
    return report(link_id, [bps](LinkReport& r) { r.key_rate_bps = bps; });
  }
  ReroutingOutput disconnect(const std::string& km) { return feed(net.disconnect_km(km)); }
  ReroutingOutput admin(const std::string& link_id, AdminState s) {
    return feed(net.set_admin(link_id, s));
  }

  /// The KMs of the current route of a pair ({} when none).
  Strings route(const std::string& src, const std::string& dst) {
    auto r = engine.route_for(src, dst).route;
    return r ? r->kms : Strings{};
  }

  ManualClock clock;
  SeededRandom rng{42};
  Network net{clock};
  ReroutingEngine engine{clock, rng};

 private:
  TopologyDoc doc_;
  std::map<std::string, LinkReport> reports_;
};

/// The reroute events of an output for one pair.
inline std::vector<RerouteEvent> reroutes_of(const ReroutingOutput& out, const std::string& src,
                                             const std::string& dst) {
  std::vector<RerouteEvent> v;
  for (const auto& e : out.reroutes) {
    if (e.src == src && e.dst == dst) v.push_back(e);
  }
  return v;
}

/// Instructions of a list for one source/destination.
inline std::vector<RelayInstruction> for_pair(const std::vector<RelayInstruction>& list,
                                              const std::string& src, const std::string& dst) {
  std::vector<RelayInstruction> v;
  for (const auto& i : list) {
    if (i.source_km == src && i.destination_kma_id == dst) v.push_back(i);
  }
  return v;
}

inline ReroutingPolicy policy(RerouteMode mode, std::map<std::string, double> params = {}) {
  ReroutingPolicy p;
  p.mode = mode;
  p.params = params_from_map(params);
  return p;
}

}  // namespace qkdn::controller::testing
