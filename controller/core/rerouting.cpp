// The rerouting policy engine: standing routes, triggers, and the relay plans of the four modes.
#include "qkdn/controller/rerouting.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <utility>

#include "qkdn/controller/error.hpp"

namespace qkdn::controller {

namespace {

using PairKey = std::pair<std::string, std::string>;

constexpr double kInfinity = std::numeric_limits<double>::infinity();
constexpr std::string_view kFixedSlot = "fixed_rate|";
constexpr std::string_view kAdaptiveSlot = "traffic_adaptive|";
constexpr std::string_view kScheduleSlot = "scheduled|";

bool same_route(const std::optional<Route>& a, const std::optional<Route>& b) {
  if (a.has_value() != b.has_value()) return false;
  return !a || (a->kms == b->kms && a->links == b->links);
}

std::string route_text(const std::vector<std::string>& kms) {
  std::string s;
  for (const auto& km : kms) s += (s.empty() ? "" : "-") + km;
  return s;
}

PairKey sorted_pair(const std::string& a, const std::string& b) {
  return a < b ? PairKey{a, b} : PairKey{b, a};
}

std::string pair_slot(std::string_view prefix, const PairKey& pair) {
  return std::string(prefix) + pair.first + "|" + pair.second;
}

std::string mask_text(std::uint32_t mask) {
  std::string s;
  for (std::uint32_t b = 1; b != 0 && b <= mask; b <<= 1U) {
    if ((mask & b) == 0) continue;
    if (!s.empty()) s += ", ";
    s += to_string(static_cast<ExclusionReason>(b));
  }
  return s;
}

bool has(std::uint32_t mask, ExclusionReason r) {
  return (mask & static_cast<std::uint32_t>(r)) != 0;
}

double seconds_since_epoch(SysTime t) {
  return std::chrono::duration<double>(t.time_since_epoch()).count();
}

// Max-min fair shares (progressive filling). paths[i] are the link indices pair i crosses,
// want[i] its demand (infinity = unbounded), cap the capacity of each link, all in one unit.
// Every round raises all unfrozen pairs by the largest equal step that neither exceeds a link
// nor a demand, then freezes the pairs that met their demand or cross a full link; at least one
// pair freezes per round, so there are at most n rounds.
std::vector<double> progressive_fill(const std::vector<std::vector<std::size_t>>& paths,
                                     const std::vector<double>& want, std::vector<double> cap) {
  const std::size_t n = paths.size();
  std::vector<double> alloc(n, 0.0);
  std::vector<bool> active(n, false);
  std::vector<double> eps(cap.size());
  for (std::size_t l = 0; l < cap.size(); ++l) eps[l] = 1e-9 * std::max(cap[l], 1.0);
  for (std::size_t i = 0; i < n; ++i) active[i] = !paths[i].empty() && want[i] > 0;
  for (std::size_t round = 0; round <= n; ++round) {
    std::vector<std::size_t> users(cap.size(), 0);
    bool any = false;
    for (std::size_t i = 0; i < n; ++i) {
      if (!active[i]) continue;
      any = true;
      for (auto l : paths[i]) ++users[l];
    }
    if (!any) break;
    double step = kInfinity;
    for (std::size_t l = 0; l < cap.size(); ++l) {
      if (users[l] > 0)
        step = std::min(step, std::max(cap[l], 0.0) / static_cast<double>(users[l]));
    }
    for (std::size_t i = 0; i < n; ++i) {
      if (active[i]) step = std::min(step, want[i] - alloc[i]);
    }
    if (!std::isfinite(step)) break;
    for (std::size_t i = 0; i < n; ++i) {
      if (!active[i]) continue;
      alloc[i] += step;
      for (auto l : paths[i]) cap[l] -= step;
    }
    for (std::size_t i = 0; i < n; ++i) {
      if (!active[i]) continue;
      bool frozen = alloc[i] >= want[i] * (1 - 1e-12);
      for (auto l : paths[i]) frozen = frozen || cap[l] <= eps[l];
      if (frozen) active[i] = false;
    }
  }
  return alloc;
}

std::uint64_t whole_keys(double keys) {
  if (!(keys > 0)) return 0;
  return static_cast<std::uint64_t>(std::floor(keys + 1e-9));
}

bool same_instruction(const RelayInstruction& a, const RelayInstruction& b, double tolerance) {
  if (a.mode != b.mode || a.schedule_id != b.schedule_id || a.source_km != b.source_km ||
      a.destination_kma_id != b.destination_kma_id || a.transit_kma_ids != b.transit_kma_ids ||
      a.links != b.links || a.key_size_bits != b.key_size_bits || a.interval_s != b.interval_s ||
      a.not_before != b.not_before || a.not_after != b.not_after) {
    return false;
  }
  const double old_keys = static_cast<double>(a.number_of_keys);
  const double new_keys = static_cast<double>(b.number_of_keys);
  if (tolerance <= 0) return old_keys == new_keys;
  return std::abs(new_keys - old_keys) <= tolerance * std::max(old_keys, 1.0);
}

}  // namespace

ReroutingEngine::ReroutingEngine(const Clock& clock, Random& random)
    : clock_(&clock), random_(&random), now_(clock.now()) {}

// --- Snapshot and route evaluation ---------------------------------------------------------------

void ReroutingEngine::set_snapshot(std::shared_ptr<const TopologySnapshot> snapshot) {
  if (!snapshot) throw InvalidArgument("rerouting: null topology snapshot");
  snapshot_ = std::move(snapshot);
  links_by_km_pair_.clear();
  const auto& links = snapshot_->links();
  for (std::size_t i = 0; i < links.size(); ++i) {
    links_by_km_pair_[sorted_pair(links[i].a, links[i].b)].push_back(i);
  }
  std::erase_if(pool_low_links_,
                [this](const std::string& id) { return !snapshot_->link_index(id); });
}

const TopologySnapshot& ReroutingEngine::snap() const {
  if (!snapshot_) throw Unavailable("rerouting: no topology snapshot yet");
  return *snapshot_;
}

RouteOptions ReroutingEngine::options_for(const ReroutingPolicy& policy, const PairKey& pair,
                                          const Avoid& avoid) const {
  const TopologySnapshot& s = snap();
  RouteOptions o;
  o.metric = policy.params.metric;
  o.k = 1;
  if (policy.params.max_hops > 0) o.max_hops = static_cast<std::size_t>(policy.params.max_hops);
  o.demand_bits = static_cast<std::uint64_t>(policy.params.demand_bits);
  o.require_connected = true;
  o.trust = trust_constraints(policy);
  // Pool-low links are avoided explicitly: a key_pool_low alarm need not show in the snapshot's
  // pool figures. Unknown IDs are skipped because compute_routes rejects them.
  std::set<std::string> links = pool_low_links_;
  links.insert(avoid.links.begin(), avoid.links.end());
  for (const auto& id : links) {
    if (s.link_index(id)) o.avoid_links.push_back(id);
  }
  for (const auto& km : avoid.kms) {
    if (km != pair.first && km != pair.second && s.km_index(km)) o.avoid_kms.push_back(km);
  }
  return o;
}

bool ReroutingEngine::link_usable(const std::string& link_id, const std::string& a,
                                  const std::string& b, const RouteOptions& options) const {
  const TopologySnapshot& s = snap();
  auto idx = s.link_index(link_id);
  if (!idx) return false;
  const SnapshotLink& l = s.links()[*idx];
  if (!((l.a == a && l.b == b) || (l.a == b && l.b == a))) return false;
  return exclusion_mask(s, *idx, options) == 0;
}

bool ReroutingEngine::route_usable(const Route& route, const RouteOptions& options) const {
  if (route.kms.size() != route.links.size() + 1) return false;
  for (const auto& km : route.kms) {
    if (!snap().km_index(km)) return false;
  }
  for (std::size_t i = 0; i < route.links.size(); ++i) {
    if (!link_usable(route.links[i], route.kms[i], route.kms[i + 1], options)) return false;
  }
  // Trust levels and tags come with the topology: a replaced document can break a standing route.
  return !trust_violation(snap(), route, options.trust);
}

RerouteReason ReroutingEngine::broken_reason(const Route& route,
                                             const RouteOptions& options) const {
  const TopologySnapshot& s = snap();
  for (std::size_t i = 0; i < route.links.size() && i + 1 < route.kms.size(); ++i) {
    auto idx = s.link_index(route.links[i]);
    if (!idx) return RerouteReason::kOperator;
    const std::uint32_t m = exclusion_mask(s, *idx, options);
    if (m == 0) continue;
    if (has(m, ExclusionReason::kKmDisconnected) || has(m, ExclusionReason::kAvoidedKm)) {
      return RerouteReason::kKmDisconnect;
    }
    if (has(m, ExclusionReason::kLinkDown)) return RerouteReason::kLinkDown;
    if (has(m, ExclusionReason::kAlarm) || has(m, ExclusionReason::kQberHigh)) {
      return RerouteReason::kQber;
    }
    if (has(m, ExclusionReason::kPoolBelowFloor) || has(m, ExclusionReason::kPoolBelowDemand) ||
        pool_low_links_.contains(route.links[i])) {
      return RerouteReason::kPoolLow;
    }
    return RerouteReason::kOperator;
  }
  return RerouteReason::kOperator;
}

std::optional<Route> ReroutingEngine::compute_route(const PairKey& pair,
                                                    const RouteOptions& options) const {
  const TopologySnapshot& s = snap();
  if (!s.km_index(pair.first) || !s.km_index(pair.second)) return std::nullopt;
  auto routes = compute_routes(s, pair.first, pair.second, options);
  if (routes.empty()) return std::nullopt;
  return std::move(routes.front());
}

ReroutingEngine::Desired ReroutingEngine::check_pin(const PinnedRouteRecord& pin,
                                                    const PairState& state,
                                                    const RouteOptions& options) const {
  const TopologySnapshot& s = snap();
  Desired d;
  d.pin_applies = true;
  Route r;
  r.kms = pin.kms;
  r.bottleneck_bits = pin.kms.size() > 1 ? std::numeric_limits<std::uint64_t>::max() : 0;
  const bool standing_on_pin = state.on_pin && state.standing && state.standing->kms == pin.kms;
  for (std::size_t i = 0; i + 1 < pin.kms.size(); ++i) {
    const std::string& a = pin.kms[i];
    const std::string& b = pin.kms[i + 1];
    const std::string named = i < pin.links.size() ? pin.links[i] : std::string();
    std::vector<std::size_t> candidates;
    if (!named.empty()) {
      if (auto idx = s.link_index(named)) candidates.push_back(*idx);
    } else if (auto it = links_by_km_pair_.find(sorted_pair(a, b)); it != links_by_km_pair_.end()) {
      candidates = it->second;
    }
    std::optional<std::size_t> best;
    // Keep the link the standing pinned route already uses while it is usable (no flapping
    // between parallel links).
    if (standing_on_pin && link_usable(state.standing->links[i], a, b, options)) {
      best = s.link_index(state.standing->links[i]);
    }
    std::uint32_t first_mask = 0;
    for (auto idx : candidates) {
      const SnapshotLink& l = s.links()[idx];
      if (!((l.a == a && l.b == b) || (l.a == b && l.b == a))) continue;
      const std::uint32_t m = exclusion_mask(s, idx, options);
      if (m != 0) {
        if (first_mask == 0) first_mask = m;
        continue;
      }
      if (best) {
        const SnapshotLink& cur = s.links()[*best];
        const double c_new = hop_cost(l, options);
        const double c_cur = hop_cost(cur, options);
        if (c_new > c_cur || (c_new == c_cur && l.pool_bits <= cur.pool_bits)) continue;
        if (standing_on_pin && cur.link_id == state.standing->links[i]) continue;
      }
      best = idx;
    }
    if (!best) {
      d.pin_link =
          named.empty() && !candidates.empty() ? s.links()[candidates.front()].link_id : named;
      d.pin_problem = "hop " + a + "-" + b + ": ";
      if (!s.km_index(a) || !s.km_index(b)) {
        d.pin_problem += "KM not in the topology";
      } else if (candidates.empty()) {
        d.pin_problem += named.empty() ? "no link" : "link '" + named + "' not in the topology";
      } else if (first_mask != 0) {
        d.pin_problem += "link '" + d.pin_link + "' excluded (" + mask_text(first_mask) + ")";
      } else {
        d.pin_problem += "link '" + named + "' does not join the two KMs";
      }
      return d;
    }
    const SnapshotLink& l = s.links()[*best];
    r.links.push_back(l.link_id);
    r.cost += hop_cost(l, options);
    r.bottleneck_bits = std::min(r.bottleneck_bits, l.pool_bits);
  }
  // A pin is held to the policy's trust constraints like any route: never relaxed for it.
  if (auto why = trust_violation(s, r, options.trust)) {
    d.pin_link = r.links.empty() ? std::string() : r.links.front();
    d.pin_problem = "breaks the trust constraints: " + *why;
    return d;
  }
  d.pin_ok = true;
  d.on_pin = true;
  d.route = std::move(r);
  return d;
}

ReroutingEngine::Desired ReroutingEngine::desired_route(const PairKey& pair, const PairState& state,
                                                        const Avoid& avoid, bool sticky) const {
  const ReroutingPolicy& policy = effective_policy(pair.first, pair.second);
  const RouteOptions options = options_for(policy, pair, avoid);
  Desired d;
  if (policy.mode == RerouteMode::kManual) {
    if (auto pin = pins_.find(pair); pin != pins_.end()) {
      d = check_pin(pin->second, state, options);
      if (d.pin_ok || policy.params.pinned_fallback == 0) return d;
    }
  }
  if (sticky && state.standing && !state.on_pin && route_usable(*state.standing, options)) {
    d.route = state.standing;
  } else {
    d.route = compute_route(pair, options);
  }
  return d;
}

bool ReroutingEngine::settle(const PairKey& pair, Desired desired,
                             std::optional<RerouteReason> reason, ReroutingOutput& out) {
  PairState& st = pairs_[pair];
  const std::string resource = pinned_route_resource(pair.first, pair.second);
  if (desired.pin_applies && !desired.pin_ok && !st.pin_broken) {
    AlarmSpec spec;
    spec.type = std::string(alarm_type::kPinnedRouteBroken);
    spec.resource = resource;
    spec.km_id = pair.first;
    spec.link_id = desired.pin_link;
    spec.severity = Severity::kMajor;
    const auto& pin = pins_.at(pair);
    spec.text =
        "pinned route " + route_text(pin.kms) + " unusable: " + desired.pin_problem +
        (desired.route ? "; using computed route " + route_text(desired.route->kms) : "; no route");
    out.raise_alarms.push_back(std::move(spec));
    st.pin_broken = true;
  } else if (st.pin_broken && (!desired.pin_applies || desired.pin_ok)) {
    out.clear_alarms.push_back({std::string(alarm_type::kPinnedRouteBroken), resource});
    st.pin_broken = false;
  }
  const bool changed = !same_route(st.standing, desired.route);
  if (changed) {
    if (st.standing) {
      RerouteReason why = RerouteReason::kOperator;
      if (reason) {
        why = *reason;
      } else if (!(desired.on_pin && !st.on_pin)) {
        // Not told why (relay path, planning): the standing route broke, ask the snapshot how.
        why = broken_reason(*st.standing,
                            options_for(effective_policy(pair.first, pair.second), pair, {}));
      }
      ++counts_[static_cast<std::size_t>(why)];
      out.reroutes.push_back({now_, pair.first, pair.second, why, st.standing, desired.route});
    }
    st.standing = std::move(desired.route);
    note_dirty(pair);
  }
  st.on_pin = desired.on_pin;
  return changed;
}

bool ReroutingEngine::evaluate(const PairKey& pair, const Avoid& avoid, bool sticky,
                               std::optional<RerouteReason> reason, ReroutingOutput& out) {
  return settle(pair, desired_route(pair, pairs_[pair], avoid, sticky), reason, out);
}

void ReroutingEngine::reevaluate_all(std::optional<RerouteReason> reason, bool sticky,
                                     ReroutingOutput& out) {
  for (const auto& pair : known_pairs()) evaluate(pair, {}, sticky, reason, out);
}

void ReroutingEngine::note_dirty(const PairKey& pair) { dirty_pairs_.insert(pair); }

std::set<ReroutingEngine::PairKey> ReroutingEngine::known_pairs() const {
  std::set<PairKey> out;
  for (const auto& [k, v] : pairs_) out.insert(k);
  for (const auto& [k, v] : overrides_) out.insert(k);
  for (const auto& [k, v] : pins_) out.insert(k);
  for (const auto& [k, v] : stats_) out.insert(k);
  for (const auto& [id, s] : schedules_) out.insert({s.record.src_km, s.record.dst_km});
  return out;
}

const std::optional<Route>& ReroutingEngine::ensure_route(const PairKey& pair,
                                                          ReroutingOutput& out) {
  evaluate(pair, {}, true, std::nullopt, out);
  return pairs_[pair].standing;
}

// --- Events ------------------------------------------------------------------------------------

ReroutingOutput ReroutingEngine::on_snapshot(std::shared_ptr<const TopologySnapshot> snapshot) {
  now_ = clock_->now();
  const bool first = !snapshot_;
  set_snapshot(std::move(snapshot));
  ReroutingOutput out;
  if (first) {
    reevaluate_all(RerouteReason::kOperator, true, out);
    fixed_dirty_ = adaptive_dirty_ = true;
  } else if (check_rate_drift()) {
    plan_fixed_rate(true, out);
  }
  replan(out);
  return out;
}

ReroutingOutput ReroutingEngine::on_events(const std::vector<NetworkEvent>& events,
                                           std::shared_ptr<const TopologySnapshot> snapshot) {
  using Kind = NetworkEvent::Kind;
  now_ = clock_->now();
  const bool first = !snapshot_;
  set_snapshot(std::move(snapshot));
  ReroutingOutput out;

  // What each link / KM ends the batch as: a trigger keeps it avoided for this re-evaluation
  // (the snapshot may lag, e.g. a pool-low alarm leaves the pool figures unchanged).
  std::map<std::string, bool> link_tripped;
  std::map<std::string, bool> km_tripped;
  bool topology = false;
  bool restoring = false;
  for (const auto& e : events) {
    switch (e.kind) {
      case Kind::kQberHigh:
      case Kind::kLinkDown:
        link_tripped[e.link_id] = true;
        break;
      case Kind::kPoolLow:
        link_tripped[e.link_id] = true;
        pool_low_links_.insert(e.link_id);
        break;
      case Kind::kPoolOk:
        pool_low_links_.erase(e.link_id);
        link_tripped[e.link_id] = false;
        restoring = true;
        break;
      case Kind::kQberNormal:
      case Kind::kLinkUp:
        link_tripped[e.link_id] = false;
        restoring = true;
        break;
      case Kind::kAdminChanged:  // the snapshot carries the admin state itself
        restoring = true;
        break;
      case Kind::kKmDisconnected:
        km_tripped[e.km_id] = true;
        break;
      case Kind::kKmConnected:
        km_tripped[e.km_id] = false;
        restoring = true;
        break;
      case Kind::kTopologyReplaced:
        topology = true;
        break;
    }
  }
  Avoid avoid;
  for (const auto& [id, on] : link_tripped) {
    if (on) avoid.links.insert(id);
  }
  for (const auto& [id, on] : km_tripped) {
    if (on) avoid.kms.insert(id);
  }

  // Only pairs whose standing route crosses the link or KM are recomputed; the first event of
  // the batch that hits the route names the reason.
  std::vector<std::pair<PairKey, RerouteReason>> hit;
  for (const auto& [pair, st] : pairs_) {
    if (!st.standing) continue;
    const Route& r = *st.standing;
    for (const auto& e : events) {
      std::optional<RerouteReason> reason;
      const bool on_link = std::find(r.links.begin(), r.links.end(), e.link_id) != r.links.end();
      switch (e.kind) {
        case Kind::kQberHigh:
          if (on_link) reason = RerouteReason::kQber;
          break;
        case Kind::kLinkDown:
          if (on_link) reason = RerouteReason::kLinkDown;
          break;
        case Kind::kPoolLow:
          if (on_link) reason = RerouteReason::kPoolLow;
          break;
        case Kind::kAdminChanged:
          if (on_link) reason = RerouteReason::kOperator;
          break;
        case Kind::kKmDisconnected:
          if (std::find(r.kms.begin(), r.kms.end(), e.km_id) != r.kms.end()) {
            reason = RerouteReason::kKmDisconnect;
          }
          break;
        default:
          break;
      }
      if (reason) {
        // Links that vanish with a new topology are the operator's doing.
        hit.emplace_back(pair, topology ? RerouteReason::kOperator : *reason);
        break;
      }
    }
  }
  for (const auto& [pair, reason] : hit) evaluate(pair, avoid, true, reason, out);

  if (topology || first) reevaluate_all(RerouteReason::kOperator, true, out);
  if (restoring) {
    // Retake repaired pins; give pairs left without a route another chance.
    for (const auto& pair : known_pairs()) {
      const PairState& st = pairs_[pair];
      if (pins_.contains(pair) ? !st.on_pin : !st.standing) {
        evaluate(pair, avoid, true, std::nullopt, out);
      }
    }
  }
  if (!first && check_rate_drift()) plan_fixed_rate(true, out);
  replan(out);
  return out;
}

// --- Relay path ----------------------------------------------------------------------------------

RouteAnswer ReroutingEngine::route_for(const std::string& src, const std::string& dst) {
  const TopologySnapshot& s = snap();
  if (!s.km_index(src)) throw NotFound("unknown KM '" + src + "'");
  if (!s.km_index(dst)) throw NotFound("unknown KM '" + dst + "'");
  now_ = clock_->now();
  RouteAnswer answer;
  const PairKey pair{src, dst};
  const bool is_new = !pairs_.contains(pair);
  evaluate(pair, {}, true, std::nullopt, answer.output);
  // A new pair joins the fixed-rate plan (if that is its mode).
  if (is_new) note_dirty(pair);
  replan(answer.output);
  const PairState& st = pairs_.at(pair);
  answer.route = st.standing;
  answer.pinned = st.on_pin;
  if (!answer.route) {
    const ReroutingPolicy& policy = effective_policy(src, dst);
    if (policy.mode == RerouteMode::kManual && pins_.contains(pair) &&
        policy.params.pinned_fallback == 0) {
      answer.refusal = NoRouteExplanation{"pinned_route_broken",
                                          "the pinned route " + src + " -> " + dst +
                                              " is unusable and the policy allows no fallback"};
    } else {
      answer.refusal = explain_no_route(s, src, dst, options_for(policy, pair, {}));
    }
  }
  return answer;
}

TrustConstraints ReroutingEngine::trust_for(const std::string& src, const std::string& dst,
                                            const std::string& src_sae,
                                            const std::string& dst_sae) const {
  TrustConstraints c = trust_constraints(effective_policy(src, dst));
  if (auto it = sae_constraints_.find({src_sae, dst_sae}); it != sae_constraints_.end()) {
    c = TrustConstraints::strictest(c, trust_from_record(it->second));
  }
  return c;
}

RouteAnswer ReroutingEngine::route_for_saes(const std::string& src, const std::string& dst,
                                            const std::string& src_sae,
                                            const std::string& dst_sae) {
  auto it = sae_constraints_.find({src_sae, dst_sae});
  if (it == sae_constraints_.end()) return route_for(src, dst);
  RouteAnswer answer = route_for(src, dst);
  const TrustConstraints trust = trust_for(src, dst, src_sae, dst_sae);
  if (answer.route && !trust_violation(snap(), *answer.route, trust)) return answer;
  if (!answer.route && answer.refusal && answer.refusal->code != "trust_constraints" &&
      answer.refusal->code != "no_usable_path") {
    return answer;  // a broken pin without fallback stays a refusal
  }
  // The SAE pair asks for more than the KM pair's standing route gives: its own route, computed
  // under the stricter constraints, never the standing one relaxed.
  RouteOptions o = options_for(effective_policy(src, dst), {src, dst}, {});
  o.trust = trust;
  answer.pinned = false;
  answer.route.reset();
  answer.refusal.reset();
  auto routes = compute_routes(snap(), src, dst, o);
  if (routes.empty()) {
    answer.refusal = explain_no_route(snap(), src, dst, o);
    answer.refusal->detail += " (SAE pair " + src_sae + " -> " + dst_sae + ")";
  } else {
    answer.route = std::move(routes.front());
  }
  return answer;
}

void ReroutingEngine::set_sae_constraints(const SaeConstraintRecord& record) {
  for (const auto* id : {&record.src_sae, &record.dst_sae}) {
    if (!is_valid_id(*id)) throw InvalidArgument("invalid SAE ID '" + *id + "'");
  }
  if (record.src_sae == record.dst_sae) {
    throw InvalidArgument("SAE constraints: source and destination SAE must differ");
  }
  static_cast<void>(trust_from_record(record));  // validates
  sae_constraints_[{record.src_sae, record.dst_sae}] = record;
}

void ReroutingEngine::clear_sae_constraints(const std::string& src_sae,
                                            const std::string& dst_sae) {
  if (sae_constraints_.erase({src_sae, dst_sae}) == 0) {
    throw NotFound("no trust constraints for SAE pair " + src_sae + " -> " + dst_sae);
  }
}

std::optional<SaeConstraintRecord> ReroutingEngine::sae_constraints(
    const std::string& src_sae, const std::string& dst_sae) const {
  auto it = sae_constraints_.find({src_sae, dst_sae});
  if (it == sae_constraints_.end()) return std::nullopt;
  return it->second;
}

std::vector<SaeConstraintRecord> ReroutingEngine::all_sae_constraints() const {
  std::vector<SaeConstraintRecord> out;
  out.reserve(sae_constraints_.size());
  for (const auto& [pair, rec] : sae_constraints_) out.push_back(rec);
  return out;
}

std::optional<Route> ReroutingEngine::standing_route(const std::string& src,
                                                     const std::string& dst) const {
  auto it = pairs_.find({src, dst});
  if (it == pairs_.end()) return std::nullopt;
  return it->second.standing;
}

std::vector<StandingRoute> ReroutingEngine::standing_routes() const {
  std::vector<StandingRoute> out;
  for (const auto& [pair, st] : pairs_) {
    out.push_back({pair.first, pair.second, effective_policy(pair.first, pair.second).mode,
                   st.on_pin, st.standing});
  }
  return out;
}

std::vector<RelayInstruction> ReroutingEngine::instructions() const {
  std::vector<RelayInstruction> out;
  out.reserve(instructions_.size());
  for (const auto& [id, ins] : instructions_) out.push_back(ins);
  return out;
}

// --- Planning ------------------------------------------------------------------------------------

RelayInstruction ReroutingEngine::make_instruction(RerouteMode mode, const Route& route,
                                                   std::uint64_t keys, std::uint64_t key_size_bits,
                                                   double interval_s) {
  RelayInstruction ins;
  ins.mode = mode;
  ins.source_km = route.kms.front();
  ins.destination_kma_id = route.kms.back();
  ins.transit_kma_ids.assign(route.kms.begin() + 1, route.kms.end() - 1);
  ins.links = route.links;
  ins.number_of_keys = keys;  // the plan; the 0x41E5 carries at most kMaxKeysPerInstruction
  ins.key_size_bits = key_size_bits;
  ins.interval_s = interval_s;
  return ins;
}

void ReroutingEngine::put_slot(const std::string& slot, std::optional<RelayInstruction> desired,
                               double tolerance, ReroutingOutput& out) {
  if (auto it = slots_.find(slot); it != slots_.end()) {
    auto ins = instructions_.find(it->second);
    if (desired && same_instruction(ins->second, *desired, tolerance)) return;
    out.withdraw.push_back(ins->second);
    instructions_.erase(ins);
    slots_.erase(it);
  }
  if (!desired) return;
  desired->instruction_id = make_uuid_v4(*random_);
  desired->issued_at = now_;
  slots_[slot] = desired->instruction_id;
  instructions_[desired->instruction_id] = *desired;
  out.send.push_back(std::move(*desired));
}

void ReroutingEngine::replan(ReroutingOutput& out) {
  if (!snapshot_) return;
  for (const auto& pair : dirty_pairs_) {
    switch (effective_policy(pair.first, pair.second).mode) {
      case RerouteMode::kFixedRate:
        fixed_dirty_ = true;
        break;
      case RerouteMode::kTrafficAdaptive:
        adaptive_dirty_ = true;
        break;
      default:
        break;
    }
  }
  if (fixed_dirty_) plan_fixed_rate(false, out);
  if (adaptive_dirty_) plan_adaptive(out);
  plan_scheduled(now_, out);
  dirty_pairs_.clear();
  fixed_dirty_ = adaptive_dirty_ = false;
}

bool ReroutingEngine::check_rate_drift() const {
  if (plan_rates_.empty()) return false;
  double threshold = kInfinity;
  for (const auto& pair : known_pairs()) {
    const ReroutingPolicy& p = effective_policy(pair.first, pair.second);
    if (p.mode == RerouteMode::kFixedRate) {
      threshold = std::min(threshold, p.params.replan_threshold);
    }
  }
  if (!std::isfinite(threshold)) return false;
  for (const auto& l : snap().links()) {
    auto it = plan_rates_.find(l.link_id);
    if (it == plan_rates_.end()) continue;
    const double rel = std::abs(l.key_rate_bps - it->second) / std::max(it->second, 1.0);
    if (rel > threshold) return true;
  }
  return false;
}

void ReroutingEngine::plan_fixed_rate(bool fresh_routes, ReroutingOutput& out) {
  const TopologySnapshot& s = snap();
  std::vector<PairKey> pairs;
  for (const auto& pair : known_pairs()) {
    if (effective_policy(pair.first, pair.second).mode == RerouteMode::kFixedRate) {
      pairs.push_back(pair);
    }
  }
  // Rates moved: the route each pair would take under the key-aware metric may have changed.
  if (fresh_routes) {
    for (const auto& pair : pairs) evaluate(pair, {}, false, RerouteReason::kRateChange, out);
  }
  std::vector<std::vector<std::size_t>> paths;
  std::vector<double> want_bps;
  std::vector<PairKey> planned;
  for (const auto& pair : pairs) {
    const std::optional<Route>& route = ensure_route(pair, out);
    if (!route || route->links.empty()) continue;
    const ReroutingParams& p = effective_policy(pair.first, pair.second).params;
    std::vector<std::size_t> path;
    for (const auto& id : route->links) path.push_back(*s.link_index(id));
    paths.push_back(std::move(path));
    want_bps.push_back(p.demand_keys > 0 ? p.demand_keys * p.key_size_bits / p.interval_s
                                         : kInfinity);
    planned.push_back(pair);
  }
  std::vector<double> cap(s.links().size());
  for (std::size_t l = 0; l < cap.size(); ++l) {
    cap[l] = policy_.params.rate_share * std::max(s.links()[l].key_rate_bps, 0.0);
  }
  const std::vector<double> alloc = progressive_fill(paths, want_bps, std::move(cap));

  std::map<std::string, std::optional<RelayInstruction>> desired;
  for (const auto& [slot, id] : slots_) {
    if (slot.starts_with(kFixedSlot)) desired[slot] = std::nullopt;
  }
  for (std::size_t i = 0; i < planned.size(); ++i) {
    const ReroutingParams& p = effective_policy(planned[i].first, planned[i].second).params;
    const std::uint64_t keys = whole_keys(alloc[i] * p.interval_s / p.key_size_bits);
    if (keys == 0) continue;
    desired[pair_slot(kFixedSlot, planned[i])] =
        make_instruction(RerouteMode::kFixedRate, *pairs_.at(planned[i]).standing, keys,
                         static_cast<std::uint64_t>(p.key_size_bits), p.interval_s);
  }
  for (auto& [slot, ins] : desired) put_slot(slot, std::move(ins), 0, out);
  plan_rates_.clear();
  for (const auto& l : s.links()) plan_rates_[l.link_id] = l.key_rate_bps;
}

void ReroutingEngine::plan_adaptive(ReroutingOutput& out) {
  const TopologySnapshot& s = snap();
  struct Want {
    PairKey pair;
    std::vector<std::size_t> path;
    double keys = 0;
    double bps = 0;
  };
  std::vector<Want> wants;
  for (const auto& [pair, stats] : stats_) {
    const ReroutingPolicy& p = effective_policy(pair.first, pair.second);
    if (p.mode != RerouteMode::kTrafficAdaptive || !(stats.ewma > p.params.demand_floor)) continue;
    wants.push_back({pair, {}, stats.ewma * p.params.headroom, 0});
  }
  std::vector<double> load(s.links().size(), 0.0);
  std::erase_if(wants, [&](Want& w) {
    const std::optional<Route>& route = ensure_route(w.pair, out);
    if (!route || route->links.empty() || !(w.keys > 0)) return true;
    const ReroutingParams& p = effective_policy(w.pair.first, w.pair.second).params;
    w.bps = w.keys * p.key_size_bits / p.interval_s;
    for (const auto& id : route->links) {
      w.path.push_back(*s.link_index(id));
      load[w.path.back()] += w.bps;
    }
    return false;
  });

  std::map<std::string, std::optional<RelayInstruction>> desired;
  std::map<std::string, double> tolerance;
  for (const auto& [slot, id] : slots_) {
    if (slot.starts_with(kAdaptiveSlot)) desired[slot] = std::nullopt;
  }
  for (const auto& w : wants) {
    // Proportional share: where demands exceed a link's budget, every pair on it is scaled by
    // the same factor, so each keeps its proportion of the demand.
    double scale = 1.0;
    for (auto l : w.path) {
      const double cap = policy_.params.rate_share * std::max(s.links()[l].key_rate_bps, 0.0);
      if (load[l] > cap) scale = std::min(scale, cap / load[l]);
    }
    const std::uint64_t keys =
        scale < 1.0 ? whole_keys(w.keys * scale) : static_cast<std::uint64_t>(std::llround(w.keys));
    if (keys == 0) continue;
    const ReroutingParams& p = effective_policy(w.pair.first, w.pair.second).params;
    const std::string slot = pair_slot(kAdaptiveSlot, w.pair);
    desired[slot] =
        make_instruction(RerouteMode::kTrafficAdaptive, *pairs_.at(w.pair).standing, keys,
                         static_cast<std::uint64_t>(p.key_size_bits), p.interval_s);
    tolerance[slot] = p.replan_threshold;
  }
  for (auto& [slot, ins] : desired) put_slot(slot, std::move(ins), tolerance[slot], out);
}

void ReroutingEngine::plan_scheduled(SysTime now, ReroutingOutput& out) {
  // Instructions of schedules that no longer exist (removed by an import).
  std::vector<std::string> orphans;
  for (const auto& [slot, id] : slots_) {
    if (slot.starts_with(kScheduleSlot) &&
        !schedules_.contains(slot.substr(kScheduleSlot.size()))) {
      orphans.push_back(slot);
    }
  }
  for (const auto& slot : orphans) put_slot(slot, std::nullopt, 0, out);

  for (auto it = schedules_.begin(); it != schedules_.end();) {
    Schedule& sch = it->second;
    const ScheduleRecord& rec = sch.record;
    const std::string slot = std::string(kScheduleSlot) + rec.schedule_id;
    if (rec.not_after <= now) {
      if (auto s = slots_.find(slot); s != slots_.end()) {
        out.expired.push_back(s->second);
        instructions_.erase(s->second);
        slots_.erase(s);
      }
      it = schedules_.erase(it);
      continue;
    }
    ++it;
    const PairKey pair{rec.src_km, rec.dst_km};
    const ReroutingPolicy& policy = effective_policy(pair.first, pair.second);
    if (policy.mode != RerouteMode::kScheduled || !snapshot_) {
      if (sch.emitted) put_slot(slot, std::nullopt, 0, out);
      sch.emitted = false;
      continue;
    }
    const auto lead = std::chrono::duration_cast<SysTime::duration>(
        std::chrono::duration<double>(policy.params.lead_s));
    if (!sch.emitted) {
      if (now < rec.not_before - lead) continue;
      // The window opens: plan it on the route that is best now.
      evaluate(pair, {}, false, RerouteReason::kSchedule, out);
    }
    const std::optional<Route>& route = ensure_route(pair, out);
    if (!route || route->links.empty()) {
      // No route now: withdraw and try again at the next tick while the window lasts.
      if (sch.emitted) put_slot(slot, std::nullopt, 0, out);
      sch.emitted = false;
      continue;
    }
    RelayInstruction ins = make_instruction(RerouteMode::kScheduled, *route,
                                            static_cast<std::uint64_t>(rec.number_of_keys),
                                            static_cast<std::uint64_t>(rec.key_size_bits), 0);
    ins.schedule_id = rec.schedule_id;
    ins.not_before = rec.not_before;
    ins.not_after = rec.not_after;
    put_slot(slot, std::move(ins), 0, out);
    sch.emitted = true;
  }
}

// --- Statistics and time -------------------------------------------------------------------------

void ReroutingEngine::roll_stats(TrafficStats& stats, const ReroutingParams& params, SysTime now) {
  const auto index =
      static_cast<std::int64_t>(std::floor(seconds_since_epoch(now) / params.interval_s));
  if (stats.interval_s != params.interval_s) {
    // The interval changed: restart the grid here, keeping the estimate.
    stats.interval_s = params.interval_s;
    stats.interval_index = index;
    return;
  }
  if (index <= stats.interval_index) return;
  const double keep = 1.0 - params.alpha;
  stats.ewma = params.alpha * stats.count + keep * stats.ewma;
  // Every further elapsed interval had no relay: the estimate decays geometrically.
  stats.ewma *= std::pow(keep, static_cast<double>(index - stats.interval_index - 1));
  stats.count = 0;
  stats.interval_index = index;
  stats.closed = true;
}

void ReroutingEngine::record_relay(const std::string& src, const std::string& dst,
                                   std::uint64_t keys, SysTime time) {
  if (!is_valid_id(src) || !is_valid_id(dst)) {
    throw InvalidArgument("record_relay: invalid KM ID");
  }
  if (src == dst) throw InvalidArgument("record_relay: source and destination are the same KM");
  const ReroutingParams& p = effective_policy(src, dst).params;
  auto [it, inserted] = stats_.try_emplace({src, dst});
  TrafficStats& stats = it->second;
  if (inserted) {
    stats.interval_s = p.interval_s;
    stats.interval_index =
        static_cast<std::int64_t>(std::floor(seconds_since_epoch(time) / p.interval_s));
  } else {
    roll_stats(stats, p, time);
  }
  // A relay reported late (time inside an interval already closed) counts in the open one.
  stats.count += static_cast<double>(keys);
  stats.last_relay = std::max(stats.last_relay, time);
  if (stats.closed) {
    stats.closed = false;
    adaptive_dirty_ = true;
  }
}

ReroutingOutput ReroutingEngine::tick(SysTime now) {
  now_ = now;
  ReroutingOutput out;
  for (auto it = stats_.begin(); it != stats_.end();) {
    const ReroutingParams& p = effective_policy(it->first.first, it->first.second).params;
    TrafficStats& stats = it->second;
    roll_stats(stats, p, now);
    if (stats.closed) {
      stats.closed = false;
      adaptive_dirty_ = true;
    }
    const auto window =
        std::chrono::duration_cast<SysTime::duration>(std::chrono::duration<double>(p.window_s));
    if (now - stats.last_relay > window) {
      it = stats_.erase(it);
      adaptive_dirty_ = true;
    } else {
      ++it;
    }
  }
  replan(out);
  return out;
}

double ReroutingEngine::demand_estimate(const std::string& src, const std::string& dst) const {
  auto it = stats_.find({src, dst});
  return it == stats_.end() ? 0.0 : it->second.ewma;
}

std::uint64_t ReroutingEngine::reroute_count(RerouteReason reason) const noexcept {
  const auto i = static_cast<std::size_t>(reason);
  return i < counts_.size() ? counts_[i] : 0;
}

// --- Configuration -------------------------------------------------------------------------------

namespace {

// Whether switching from `a` to `b` can change which route a pair should take.
bool routing_differs(const ReroutingPolicy& a, const ReroutingPolicy& b) {
  return a.params.metric != b.params.metric || a.params.max_hops != b.params.max_hops ||
         a.params.demand_bits != b.params.demand_bits ||
         a.params.pinned_fallback != b.params.pinned_fallback ||
         (a.mode == RerouteMode::kManual) != (b.mode == RerouteMode::kManual);
}

void check_pair_ids(const std::string& src, const std::string& dst, std::string_view what) {
  if (!is_valid_id(src)) throw InvalidArgument(std::string(what) + ": invalid src KM ID");
  if (!is_valid_id(dst)) throw InvalidArgument(std::string(what) + ": invalid dst KM ID");
  if (src == dst) throw InvalidArgument(std::string(what) + ": src and dst are the same KM");
}

}  // namespace

ReroutingOutput ReroutingEngine::set_policy(const ReroutingPolicy& policy) {
  validate_policy(policy);
  now_ = clock_->now();
  std::map<PairKey, ReroutingPolicy> before;
  for (const auto& pair : known_pairs()) before[pair] = effective_policy(pair.first, pair.second);
  policy_ = policy;
  ReroutingOutput out;
  if (!snapshot_) return out;
  for (const auto& [pair, old] : before) {
    evaluate(pair, {}, !routing_differs(old, effective_policy(pair.first, pair.second)),
             RerouteReason::kOperator, out);
  }
  fixed_dirty_ = adaptive_dirty_ = true;
  replan(out);
  return out;
}

ReroutingOutput ReroutingEngine::set_pair_policy(const std::string& src, const std::string& dst,
                                                 const ReroutingPolicy& policy) {
  check_pair_ids(src, dst, "pair policy");
  validate_policy(policy);
  now_ = clock_->now();
  const ReroutingPolicy old = effective_policy(src, dst);
  overrides_[{src, dst}] = policy;
  ReroutingOutput out;
  if (!snapshot_) return out;
  evaluate({src, dst}, {}, !routing_differs(old, policy), RerouteReason::kOperator, out);
  fixed_dirty_ = adaptive_dirty_ = true;
  replan(out);
  return out;
}

ReroutingOutput ReroutingEngine::clear_pair_policy(const std::string& src, const std::string& dst) {
  ReroutingOutput out;
  auto it = overrides_.find({src, dst});
  if (it == overrides_.end()) return out;
  now_ = clock_->now();
  const ReroutingPolicy old = it->second;
  overrides_.erase(it);
  if (!snapshot_) return out;
  evaluate({src, dst}, {}, !routing_differs(old, policy_), RerouteReason::kOperator, out);
  fixed_dirty_ = adaptive_dirty_ = true;
  replan(out);
  return out;
}

std::optional<ReroutingPolicy> ReroutingEngine::pair_policy(const std::string& src,
                                                            const std::string& dst) const {
  auto it = overrides_.find({src, dst});
  if (it == overrides_.end()) return std::nullopt;
  return it->second;
}

const ReroutingPolicy& ReroutingEngine::effective_policy(const std::string& src,
                                                         const std::string& dst) const {
  auto it = overrides_.find({src, dst});
  return it == overrides_.end() ? policy_ : it->second;
}

void ReroutingEngine::check_pin_record(const PinnedRouteRecord& pin, bool against_topology) const {
  check_pair_ids(pin.src_km, pin.dst_km, "pinned route");
  if (pin.kms.size() < 2) {
    throw InvalidArgument("pinned route: kms must list at least the source and destination KM");
  }
  if (pin.kms.front() != pin.src_km || pin.kms.back() != pin.dst_km) {
    throw InvalidArgument("pinned route: kms must start at src_km and end at dst_km");
  }
  std::set<std::string> seen;
  for (std::size_t i = 0; i < pin.kms.size(); ++i) {
    if (!is_valid_id(pin.kms[i])) {
      throw InvalidArgument("pinned route: kms[" + std::to_string(i) + "] is not a valid KM ID");
    }
    if (!seen.insert(pin.kms[i]).second) {
      throw InvalidArgument("pinned route: KM '" + pin.kms[i] + "' appears twice");
    }
  }
  const std::size_t hops = pin.kms.size() - 1;
  if (!pin.links.empty() && pin.links.size() != hops) {
    throw InvalidArgument("pinned route: links must be empty or have one entry per hop (" +
                          std::to_string(hops) + ")");
  }
  for (std::size_t i = 0; i < pin.links.size(); ++i) {
    if (!pin.links[i].empty() && !is_valid_id(pin.links[i])) {
      throw InvalidArgument("pinned route: links[" + std::to_string(i) +
                            "] is not a valid link ID");
    }
  }
  if (!against_topology) return;
  const TopologySnapshot& s = snap();
  for (const auto& km : pin.kms) {
    if (!s.km_index(km)) throw InvalidArgument("pinned route: unknown KM '" + km + "'");
  }
  for (std::size_t i = 0; i < hops; ++i) {
    const std::string& a = pin.kms[i];
    const std::string& b = pin.kms[i + 1];
    const std::string named = i < pin.links.size() ? pin.links[i] : std::string();
    if (named.empty()) {
      if (!links_by_km_pair_.contains(sorted_pair(a, b))) {
        throw InvalidArgument("pinned route: no link between '" + a + "' and '" + b + "'");
      }
      continue;
    }
    auto idx = s.link_index(named);
    if (!idx) throw InvalidArgument("pinned route: unknown link '" + named + "'");
    const SnapshotLink& l = s.links()[*idx];
    if (!((l.a == a && l.b == b) || (l.a == b && l.b == a))) {
      throw InvalidArgument("pinned route: link '" + named + "' does not join '" + a + "' and '" +
                            b + "'");
    }
  }
}

ReroutingOutput ReroutingEngine::pin_route(PinnedRouteRecord record) {
  check_pin_record(record, true);
  now_ = clock_->now();
  if (record.created_at == SysTime{}) record.created_at = now_;
  const PairKey pair{record.src_km, record.dst_km};
  pins_[pair] = std::move(record);
  ReroutingOutput out;
  evaluate(pair, {}, false, RerouteReason::kOperator, out);
  replan(out);
  return out;
}

ReroutingOutput ReroutingEngine::unpin_route(const std::string& src, const std::string& dst) {
  auto it = pins_.find({src, dst});
  if (it == pins_.end()) throw NotFound("no pinned route for " + src + " -> " + dst);
  now_ = clock_->now();
  pins_.erase(it);
  ReroutingOutput out;
  if (!snapshot_) return out;
  evaluate({src, dst}, {}, false, RerouteReason::kOperator, out);
  replan(out);
  return out;
}

std::vector<PinnedRouteRecord> ReroutingEngine::pinned_routes() const {
  std::vector<PinnedRouteRecord> out;
  for (const auto& [pair, pin] : pins_) out.push_back(pin);
  return out;
}

void ReroutingEngine::check_schedule_record(const ScheduleRecord& rec,
                                            bool against_topology) const {
  check_pair_ids(rec.src_km, rec.dst_km, "schedule");
  if (!rec.schedule_id.empty() && !is_valid_id(rec.schedule_id)) {
    throw InvalidArgument("schedule: invalid schedule_id");
  }
  if (rec.not_after <= rec.not_before) {
    throw InvalidArgument("schedule: not_after must be later than not_before");
  }
  if (rec.number_of_keys < 1 || rec.number_of_keys > limits::kMaxKeysPerInstruction) {
    throw InvalidArgument("schedule: number_of_keys must be in [1, " +
                          std::to_string(limits::kMaxKeysPerInstruction) + "]");
  }
  if (rec.key_size_bits < 1) throw InvalidArgument("schedule: key_size_bits must be >= 1");
  if (!against_topology) return;
  for (const auto* km : {&rec.src_km, &rec.dst_km}) {
    if (!snap().km_index(*km)) throw InvalidArgument("schedule: unknown KM '" + *km + "'");
  }
}

std::string ReroutingEngine::add_schedule(ScheduleRecord record) {
  check_schedule_record(record, snapshot_ != nullptr);
  if (record.schedule_id.empty()) record.schedule_id = make_uuid_v4(*random_);
  if (schedules_.contains(record.schedule_id)) {
    throw Conflict("schedule '" + record.schedule_id + "' already exists");
  }
  if (record.created_at == SysTime{}) record.created_at = clock_->now();
  std::string id = record.schedule_id;
  schedules_[id] = Schedule{std::move(record), false};
  return id;
}

ReroutingOutput ReroutingEngine::remove_schedule(const std::string& schedule_id) {
  auto it = schedules_.find(schedule_id);
  if (it == schedules_.end()) throw NotFound("no schedule '" + schedule_id + "'");
  now_ = clock_->now();
  schedules_.erase(it);
  ReroutingOutput out;
  put_slot(std::string(kScheduleSlot) + schedule_id, std::nullopt, 0, out);
  return out;
}

std::vector<ScheduleRecord> ReroutingEngine::schedules() const {
  std::vector<ScheduleRecord> out;
  for (const auto& [id, s] : schedules_) out.push_back(s.record);
  return out;
}

ReroutingConfig ReroutingEngine::export_config() const {
  ReroutingConfig cfg;
  cfg.policies.push_back(policy_to_record(policy_, "", ""));
  for (const auto& [pair, p] : overrides_) {
    cfg.policies.push_back(policy_to_record(p, pair.first, pair.second));
  }
  cfg.schedules = schedules();
  cfg.pinned_routes = pinned_routes();
  cfg.sae_constraints = all_sae_constraints();
  return cfg;
}

ReroutingOutput ReroutingEngine::import_config(const ReroutingConfig& config) {
  // Parse and check everything before changing anything (all or nothing).
  ReroutingPolicy network;
  bool network_seen = false;
  std::map<PairKey, ReroutingPolicy> overrides;
  for (const auto& rec : config.policies) {
    ReroutingPolicy p = policy_from_record(rec);
    validate_policy(p);
    if (rec.src_km.empty()) {
      if (network_seen) throw InvalidArgument("import: two network-wide policies");
      network_seen = true;
      network = p;
      continue;
    }
    check_pair_ids(rec.src_km, rec.dst_km, "pair policy");
    if (!overrides.emplace(PairKey{rec.src_km, rec.dst_km}, p).second) {
      throw Conflict("import: two policies for " + rec.src_km + " -> " + rec.dst_km);
    }
  }
  std::map<PairKey, PinnedRouteRecord> pins;
  for (const auto& rec : config.pinned_routes) {
    check_pin_record(rec, false);
    if (!pins.emplace(PairKey{rec.src_km, rec.dst_km}, rec).second) {
      throw Conflict("import: two pinned routes for " + rec.src_km + " -> " + rec.dst_km);
    }
  }
  std::map<std::string, Schedule> schedules;
  for (const auto& rec : config.schedules) {
    check_schedule_record(rec, false);
    if (rec.schedule_id.empty()) throw InvalidArgument("import: schedule without schedule_id");
    if (!schedules.emplace(rec.schedule_id, Schedule{rec, false}).second) {
      throw Conflict("import: schedule '" + rec.schedule_id + "' appears twice");
    }
  }

  std::map<PairKey, SaeConstraintRecord> sae_constraints;
  for (const auto& rec : config.sae_constraints) {
    if (rec.src_sae.empty() || rec.dst_sae.empty() || rec.src_sae == rec.dst_sae) {
      throw InvalidArgument("import: SAE constraints need two different SAE IDs");
    }
    static_cast<void>(trust_from_record(rec));
    if (!sae_constraints.emplace(PairKey{rec.src_sae, rec.dst_sae}, rec).second) {
      throw Conflict("import: two SAE constraints for " + rec.src_sae + " -> " + rec.dst_sae);
    }
  }

  now_ = clock_->now();
  policy_ = network;
  sae_constraints_ = std::move(sae_constraints);
  overrides_ = std::move(overrides);
  pins_ = std::move(pins);
  schedules_ = std::move(schedules);
  ReroutingOutput out;
  if (!snapshot_) return out;
  reevaluate_all(RerouteReason::kOperator, false, out);
  fixed_dirty_ = adaptive_dirty_ = true;
  replan(out);
  return out;
}

}  // namespace qkdn::controller
