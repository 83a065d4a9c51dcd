// Topology snapshots, link exclusion and hop costs. Route search lives in yen.cpp.
#include "qkdn/controller/routing.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <stdexcept>
#include <utility>

#include "qkdn/controller/clock.hpp"
#include "qkdn/controller/error.hpp"
#include "routing_terms.hpp"

namespace qkdn::controller {

namespace {

constexpr ExclusionReason kAllReasons[] = {
    ExclusionReason::kLinkDown,       ExclusionReason::kAlarm,
    ExclusionReason::kAdminDisabled,  ExclusionReason::kMaintenance,
    ExclusionReason::kQberHigh,       ExclusionReason::kPoolBelowFloor,
    ExclusionReason::kKmDisconnected, ExclusionReason::kAvoidedLink,
    ExclusionReason::kAvoidedKm,      ExclusionReason::kPoolBelowDemand,
};

constexpr std::uint32_t bit(ExclusionReason r) { return static_cast<std::uint32_t>(r); }

std::string format(const char* fmt, double a, double b) {
  char buf[96];
  std::snprintf(buf, sizeof buf, fmt, a, b);
  return buf;
}

std::string describe(const SnapshotLink& l, ExclusionReason r, const RouteOptions& options) {
  switch (r) {
    case ExclusionReason::kLinkDown:
      return "link is down";
    case ExclusionReason::kAlarm:
      return "link is in alarm";
    case ExclusionReason::kAdminDisabled:
      return "link is administratively disabled";
    case ExclusionReason::kMaintenance:
      return "link is in maintenance";
    case ExclusionReason::kQberHigh:
      return format("qber %.3f > threshold %.3f", l.qber, l.qber_threshold);
    case ExclusionReason::kPoolBelowFloor:
      return format("pool %.0f bits < floor %.0f bits", static_cast<double>(l.pool_bits),
                    static_cast<double>(l.pool_floor_bits));
    case ExclusionReason::kKmDisconnected: {
      std::string s = "KM ";
      if (!l.a_connected) s += "'" + l.a + "'";
      if (!l.a_connected && !l.b_connected) s += " and ";
      if (!l.b_connected) s += "'" + l.b + "'";
      return s + " not connected";
    }
    case ExclusionReason::kAvoidedLink:
      return "link avoided by request";
    case ExclusionReason::kAvoidedKm:
      return "end KM avoided by request";
    case ExclusionReason::kPoolBelowDemand:
      return format(
          "pool %.0f bits < floor + demand %.0f bits", static_cast<double>(l.pool_bits),
          static_cast<double>(l.pool_floor_bits) + static_cast<double>(options.demand_bits));
  }
  return {};
}

// Reasons that do not depend on the query.
std::uint32_t static_mask(const SnapshotLink& l) {
  std::uint32_t m = 0;
  if (l.oper == OperState::kDown) m |= bit(ExclusionReason::kLinkDown);
  if (l.oper == OperState::kAlarm) m |= bit(ExclusionReason::kAlarm);
  if (l.admin == AdminState::kDisabled) m |= bit(ExclusionReason::kAdminDisabled);
  if (l.admin == AdminState::kMaintenance) m |= bit(ExclusionReason::kMaintenance);
  if (l.qber > l.qber_threshold) m |= bit(ExclusionReason::kQberHigh);
  if (l.pool_bits < l.pool_floor_bits) m |= bit(ExclusionReason::kPoolBelowFloor);
  return m;
}

}  // namespace

std::string_view to_string(RouteMetric m) noexcept {
  switch (m) {
    case RouteMetric::kKeyAware:
      return "key_aware";
    case RouteMetric::kWidestShortest:
      return "widest_shortest";
    case RouteMetric::kHopCount:
      return "hop_count";
  }
  return "unknown";
}

RouteMetric parse_route_metric(std::string_view s) {
  for (auto m : {RouteMetric::kKeyAware, RouteMetric::kWidestShortest, RouteMetric::kHopCount}) {
    if (to_string(m) == s) return m;
  }
  throw InvalidArgument("unknown route metric '" + std::string(s) +
                        "' (expected key_aware, widest_shortest or hop_count)");
}

std::string_view to_string(ExclusionReason r) noexcept {
  switch (r) {
    case ExclusionReason::kLinkDown:
      return "link_down";
    case ExclusionReason::kAlarm:
      return "alarm";
    case ExclusionReason::kAdminDisabled:
      return "admin_disabled";
    case ExclusionReason::kMaintenance:
      return "maintenance";
    case ExclusionReason::kQberHigh:
      return "qber_high";
    case ExclusionReason::kPoolBelowFloor:
      return "pool_below_floor";
    case ExclusionReason::kKmDisconnected:
      return "km_disconnected";
    case ExclusionReason::kAvoidedLink:
      return "avoided_link";
    case ExclusionReason::kAvoidedKm:
      return "avoided_km";
    case ExclusionReason::kPoolBelowDemand:
      return "pool_below_demand";
  }
  return "unknown";
}

// ---- snapshots ---------------------------------------------------------------------------------

void TopologySnapshot::build_graph() {
  std::sort(kms_.begin(), kms_.end(),
            [](const SnapshotKm& x, const SnapshotKm& y) { return x.km_id < y.km_id; });
  std::sort(links_.begin(), links_.end(),
            [](const SnapshotLink& x, const SnapshotLink& y) { return x.link_id < y.link_id; });
  // KMs and links are found by binary search over these sorted vectors (km_index, link_index):
  // no map node and no string copy per element, so a snapshot of 20,000 links builds in
  // milliseconds.
  graph_ = Graph(kms_.size());
  std::vector<std::pair<std::pair<std::size_t, std::size_t>, std::size_t>> by_pair;
  by_pair.reserve(links_.size());
  for (std::size_t i = 0; i < links_.size(); ++i) {
    auto& l = links_[i];
    const auto a = km_index(l.a);
    const auto b = km_index(l.b);
    if (!a || !b) throw Internal("snapshot link '" + l.link_id + "' joins an unknown KM");
    l.a_connected = kms_[*a].connected;
    l.b_connected = kms_[*b].connected;
    boost::add_edge(*a, *b, i, graph_);
    by_pair.push_back({std::minmax(*a, *b), i});
  }
  // Parallel links: groups of links joining the same pair of KMs, each in link order.
  std::sort(by_pair.begin(), by_pair.end());
  parallel_groups_.clear();
  for (std::size_t i = 0; i < by_pair.size();) {
    std::size_t j = i + 1;
    while (j < by_pair.size() && by_pair[j].first == by_pair[i].first) ++j;
    if (j - i > 1) {
      std::vector<std::size_t> group;
      for (std::size_t k = i; k < j; ++k) group.push_back(by_pair[k].second);
      parallel_groups_.push_back(std::move(group));
    }
    i = j;
  }
  std::sort(parallel_groups_.begin(), parallel_groups_.end());
  compute_terms();
}

void TopologySnapshot::compute_terms() {
  // The depletion reference is snapshot-wide, so it is stored in every link before the terms are
  // made: hop_cost(link) and the route search then see the same number.
  double reference = 0;
  double consumed_bps = 0;
  double generated_bps = 0;
  for (const auto& l : links_) {
    if (l.pool_bits > l.pool_floor_bits) {
      reference = std::max(reference, static_cast<double>(l.pool_bits - l.pool_floor_bits));
    }
    if (std::isfinite(l.consumption_rate_bps))
      consumed_bps += std::max(0.0, l.consumption_rate_bps);
    if (std::isfinite(l.key_rate_bps)) generated_bps += std::max(0.0, l.key_rate_bps);
  }
  // How busy the network is: consumption over generation, in [0, 1].
  const double load = consumed_bps <= 0    ? 0.0
                      : generated_bps <= 0 ? 1.0
                                           : std::min(1.0, consumed_bps / generated_bps);
  terms_.resize(links_.size());
  for (std::size_t i = 0; i < links_.size(); ++i) {
    links_[i].pool_reference_bits = reference;
    links_[i].network_load = load;
    terms_[i] = make_terms(links_[i]);
    terms_[i].static_exclusions = static_mask(links_[i]);
  }
}

std::shared_ptr<const TopologySnapshot> TopologySnapshot::from_network(const Network& network) {
  std::shared_ptr<TopologySnapshot> s(new TopologySnapshot());
  s->thresholds_ = network.thresholds();
  s->version_ = network.version();
  s->structure_version_ = network.structure_version();
  for (const auto& [id, km] : network.kms()) {
    s->kms_.push_back({id, km.connected, km.trust_level, km.tags});
  }
  for (const auto& [id, link] : network.links()) {
    SnapshotLink l;
    l.link_id = id;
    l.a = link.spec.a;
    l.b = link.spec.b;
    l.admin = link.admin;
    // KM connectivity is kept apart from the link's own state (see SnapshotLink::oper).
    if (link.qber_alarm || link.oper == OperState::kAlarm) {
      l.oper = OperState::kAlarm;
    } else {
      l.oper = link.reported_up ? OperState::kUp : OperState::kDown;
    }
    l.pool_bits = link.stored_key_bits;
    l.key_rate_bps = link.key_rate_bps;
    l.consumption_rate_bps = link.consumption_rate_bps;
    l.qber = link.qber;
    l.distance_km = link.spec.distance_km;
    l.weight = link.spec.weight;
    l.qber_threshold = link.qber_threshold.value_or(s->thresholds_.qber);
    l.pool_floor_bits = link.pool_floor_bits.value_or(s->thresholds_.pool_floor_bits);
    s->links_.push_back(std::move(l));
  }
  s->build_graph();
  return s;
}

std::shared_ptr<const TopologySnapshot> TopologySnapshot::from_doc(const TopologyDoc& doc,
                                                                   const LiveState& live) {
  validate_topology(doc);
  std::shared_ptr<TopologySnapshot> s(new TopologySnapshot());
  s->thresholds_ = live.thresholds;
  for (const auto& km : doc.kms) {
    s->kms_.push_back(
        {km.km_id, !live.disconnected_kms.contains(km.km_id), km.trust_level, km.tags});
  }
  std::set<std::string> seen;
  for (const auto& spec : doc.links) {
    auto it = live.links.find(spec.link_id);
    const LinkLive& v = it == live.links.end() ? live.defaults : it->second;
    if (it != live.links.end()) seen.insert(spec.link_id);
    SnapshotLink l;
    l.link_id = spec.link_id;
    l.a = spec.a;
    l.b = spec.b;
    l.admin = v.admin;
    l.oper = v.oper;
    l.pool_bits = v.pool_bits;
    l.key_rate_bps = v.key_rate_bps.value_or(spec.key_rate_bps);
    l.consumption_rate_bps = v.consumption_rate_bps;
    l.qber = v.qber.value_or(spec.qber);
    l.distance_km = spec.distance_km;
    l.weight = spec.weight;
    l.qber_threshold = v.qber_threshold.value_or(live.thresholds.qber);
    l.pool_floor_bits = v.pool_floor_bits.value_or(live.thresholds.pool_floor_bits);
    s->links_.push_back(std::move(l));
  }
  for (const auto& [id, v] : live.links) {
    if (!seen.contains(id)) throw NotFound("live values for unknown link '" + id + "'");
  }
  s->build_graph();
  return s;
}

std::shared_ptr<const TopologySnapshot> TopologySnapshot::with_key_state(
    std::span<const KeyState> state) const {
  if (state.size() != links_.size()) {
    throw InvalidArgument("with_key_state: " + std::to_string(state.size()) + " entries for " +
                          std::to_string(links_.size()) + " links");
  }
  std::shared_ptr<TopologySnapshot> s(new TopologySnapshot(*this));
  for (std::size_t i = 0; i < state.size(); ++i) {
    s->links_[i].pool_bits = state[i].pool_bits;
    s->links_[i].key_rate_bps = state[i].key_rate_bps;
    s->links_[i].consumption_rate_bps = state[i].consumption_rate_bps;
  }
  s->compute_terms();
  return s;
}

std::optional<std::size_t> TopologySnapshot::km_index(const std::string& km_id) const {
  const auto it =
      std::lower_bound(kms_.begin(), kms_.end(), km_id,
                       [](const SnapshotKm& k, const std::string& id) { return k.km_id < id; });
  if (it == kms_.end() || it->km_id != km_id) return std::nullopt;
  return static_cast<std::size_t>(it - kms_.begin());
}

std::optional<std::size_t> TopologySnapshot::link_index(const std::string& link_id) const {
  const auto it =
      std::lower_bound(links_.begin(), links_.end(), link_id,
                       [](const SnapshotLink& l, const std::string& id) { return l.link_id < id; });
  if (it == links_.end() || it->link_id != link_id) return std::nullopt;
  return static_cast<std::size_t>(it - links_.begin());
}

// ---- exclusion and cost ------------------------------------------------------------------------

std::uint32_t exclusion_mask(const TopologySnapshot& snapshot, std::size_t index,
                             const RouteOptions& options) {
  const SnapshotLink& l = snapshot.links().at(index);
  std::uint32_t m = static_mask(l);
  if (options.require_connected && (!l.a_connected || !l.b_connected)) {
    m |= bit(ExclusionReason::kKmDisconnected);
  }
  if (std::find(options.avoid_links.begin(), options.avoid_links.end(), l.link_id) !=
      options.avoid_links.end()) {
    m |= bit(ExclusionReason::kAvoidedLink);
  }
  for (const auto& km : options.avoid_kms) {
    if (km == l.a || km == l.b) m |= bit(ExclusionReason::kAvoidedKm);
  }
  if (options.demand_bits > 0 && l.pool_bits >= l.pool_floor_bits &&
      l.pool_bits - l.pool_floor_bits < options.demand_bits) {
    m |= bit(ExclusionReason::kPoolBelowDemand);
  }
  return m;
}

std::vector<LinkVerdict> explain_links(const TopologySnapshot& snapshot,
                                       const RouteOptions& options) {
  for (const auto& km : options.avoid_kms) {
    if (!snapshot.km_index(km)) throw NotFound("unknown KM '" + km + "' in avoid_kms");
  }
  for (const auto& id : options.avoid_links) {
    if (!snapshot.link_index(id)) throw NotFound("unknown link '" + id + "' in avoid_links");
  }
  std::vector<LinkVerdict> out;
  out.reserve(snapshot.links().size());
  for (std::size_t i = 0; i < snapshot.links().size(); ++i) {
    const SnapshotLink& l = snapshot.links()[i];
    LinkVerdict v;
    v.link_id = l.link_id;
    v.a = l.a;
    v.b = l.b;
    const std::uint32_t m = exclusion_mask(snapshot, i, options);
    v.usable = m == 0;
    for (auto r : kAllReasons) {
      if ((m & bit(r)) == 0) continue;
      v.reasons.push_back(r);
      if (!v.detail.empty()) v.detail += "; ";
      v.detail += describe(l, r, options);
    }
    if (v.usable) v.cost = hop_cost(l, options);
    out.push_back(std::move(v));
  }
  return out;
}

// ---- trust --------------------------------------------------------------------------------------

TrustConstraints TrustConstraints::strictest(const TrustConstraints& a, const TrustConstraints& b) {
  TrustConstraints c;
  c.max_intermediates = a.max_intermediates;
  if (b.max_intermediates &&
      (!c.max_intermediates || *b.max_intermediates < *c.max_intermediates)) {
    c.max_intermediates = b.max_intermediates;
  }
  c.min_trust_level = std::max(a.min_trust_level, b.min_trust_level);
  c.avoid_tags = a.avoid_tags;
  for (const auto& t : b.avoid_tags) {
    if (std::find(c.avoid_tags.begin(), c.avoid_tags.end(), t) == c.avoid_tags.end()) {
      c.avoid_tags.push_back(t);
    }
  }
  return c;
}

void validate_trust_constraints(const TrustConstraints& c) {
  if (c.min_trust_level < kMinTrustLevel || c.min_trust_level > kMaxTrustLevel) {
    throw InvalidArgument("min_trust_level must be an integer in [" +
                          std::to_string(kMinTrustLevel) + ", " + std::to_string(kMaxTrustLevel) +
                          "], got " + std::to_string(c.min_trust_level));
  }
  for (std::size_t i = 0; i < c.avoid_tags.size(); ++i) {
    if (!is_valid_id(c.avoid_tags[i])) {
      throw InvalidArgument("avoid_tags[" + std::to_string(i) + "]: invalid tag '" +
                            c.avoid_tags[i] + "' (1..128 of [A-Za-z0-9._:-])");
    }
    for (std::size_t j = 0; j < i; ++j) {
      if (c.avoid_tags[j] == c.avoid_tags[i]) {
        throw InvalidArgument("avoid_tags[" + std::to_string(i) + "]: duplicate tag '" +
                              c.avoid_tags[i] + "'");
      }
    }
  }
}

std::string describe(const TrustConstraints& c) {
  std::string s;
  auto add = [&s](const std::string& part) { s += (s.empty() ? "" : ", ") + part; };
  if (c.max_intermediates) {
    add("at most " + std::to_string(*c.max_intermediates) + " intermediate KM" +
        (*c.max_intermediates == 1 ? "" : "s"));
  }
  if (c.min_trust_level > kMinTrustLevel) add("trust >= " + std::to_string(c.min_trust_level));
  if (!c.avoid_tags.empty()) {
    std::string tags;
    for (const auto& t : c.avoid_tags) tags += (tags.empty() ? "" : ", ") + t;
    add("avoiding tags [" + tags + "]");
  }
  return s.empty() ? "none" : s;
}

namespace {

// Why one intermediate KM breaks the trust level or tag constraints ("" when it does not).
std::string km_violation(const SnapshotKm& km, const TrustConstraints& c) {
  std::string why;
  if (km.trust() < c.min_trust_level) {
    why = km.trust_level ? "trust " + std::to_string(*km.trust_level) + " < " +
                               std::to_string(c.min_trust_level)
                         : "unrated, needs trust >= " + std::to_string(c.min_trust_level);
  }
  for (const auto& tag : c.avoid_tags) {
    if (std::find(km.tags.begin(), km.tags.end(), tag) != km.tags.end()) {
      why += (why.empty() ? "" : ", ") + std::string("tagged ") + tag;
    }
  }
  return why;
}

}  // namespace

std::optional<std::string> trust_violation(const TopologySnapshot& snapshot, const Route& route,
                                           const TrustConstraints& constraints) {
  if (route.kms.size() <= 2) return std::nullopt;
  const std::size_t intermediates = route.kms.size() - 2;
  std::string why;
  if (constraints.max_intermediates && intermediates > *constraints.max_intermediates) {
    why = "crosses " + std::to_string(intermediates) + " intermediate KMs (at most " +
          std::to_string(*constraints.max_intermediates) + ")";
  }
  for (std::size_t i = 1; i + 1 < route.kms.size(); ++i) {
    SnapshotKm unknown{route.kms[i], false, std::nullopt, {}};
    const auto idx = snapshot.km_index(route.kms[i]);
    const std::string v = km_violation(idx ? snapshot.kms()[*idx] : unknown, constraints);
    if (v.empty()) continue;
    why += (why.empty() ? "crosses " : "; crosses ") + std::string("KM '") + route.kms[i] + "' (" +
           v + ")";
  }
  if (why.empty()) return std::nullopt;
  return why;
}

NoRouteExplanation explain_no_route(const TopologySnapshot& snapshot, const std::string& src,
                                    const std::string& dst, const RouteOptions& options) {
  const std::string pair = "from " + src + " to " + dst;
  if (options.trust.empty()) {
    return {"no_usable_path", "no usable route " + pair};
  }
  RouteOptions relaxed = options;
  relaxed.trust = {};
  relaxed.k = 1;
  const auto without = compute_routes(snapshot, src, dst, relaxed);
  if (without.empty()) {
    return {"no_usable_path", "no usable route " + pair + ", even without the trust constraints"};
  }
  std::string detail = "no route " + pair + " meets the trust constraints (" +
                       describe(options.trust) + "); the best route without them (" +
                       std::to_string(without.front().links.size()) + " hops) ";
  detail += trust_violation(snapshot, without.front(), options.trust).value_or("breaks them");
  return {"trust_constraints", detail};
}

double hop_cost(const SnapshotLink& link, const RouteOptions& options) {
  if (options.metric == RouteMetric::kWidestShortest) return 1.0;
  if (options.metric == RouteMetric::kHopCount) return make_terms(link).weight;
  return key_aware_cost(make_terms(link), KeyAwareQuery(options));
}

}  // namespace qkdn::controller
