// Private to controller/core: the key-aware cost arithmetic shared by hop_cost (routing.cpp) and
// the route search (yen.cpp), so both give bit-identical costs.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "qkdn/controller/routing.hpp"

namespace qkdn::controller {

/// True when `km` may be an intermediate KM under `c` (trust level and tags; the count of
/// intermediates is the hop limit's business). Defined in yen.cpp.
bool trust_ok(const SnapshotKm& km, const TrustConstraints& c);

/// The demand a key-aware cost assumes: demand_bits, else the reference demand (>= 1 bit).
inline double effective_demand(const RouteOptions& o) {
  return static_cast<double>(o.demand_bits > 0
                                 ? o.demand_bits
                                 : std::max<std::uint64_t>(o.weights.reference_demand_bits, 1));
}

/// The query-independent terms of a link (static_exclusions left 0).
inline LinkTerms make_terms(const SnapshotLink& l) {
  LinkTerms t;
  t.ends_connected = l.a_connected && l.b_connected;
  // A weight the document validation would refuse (snapshots of hand-made links) counts as 1.
  t.weight = std::isfinite(l.weight) && l.weight > 0 ? l.weight : 1.0;
  t.available_bits =
      l.pool_bits > l.pool_floor_bits ? static_cast<double>(l.pool_bits - l.pool_floor_bits) : 0.0;
  // A link that makes less than 1 b/s is treated as making 1 b/s so the terms stay finite.
  const double gen = std::max(l.key_rate_bps, 1.0);
  t.inv_gen = 1.0 / gen;
  t.net_drain_bps = std::max(0.0, l.consumption_rate_bps - gen);
  t.reference_bits = l.pool_reference_bits;
  t.network_load = std::isfinite(l.network_load) ? std::clamp(l.network_load, 0.0, 1.0) : 0.0;
  t.drain = t.net_drain_bps / gen;
  if (l.pool_reference_bits > 0) {
    t.depletion = 1.0 - t.available_bits / std::max(l.pool_reference_bits, t.available_bits);
  }
  t.default_depletion_factor = std::exp(KeyAwareWeights{}.kappa * t.depletion);
  return t;
}

/// The per-query constants of the key-aware cost, computed once so that a route search spends
/// only a few multiplications and one division per link.
struct KeyAwareQuery {
  explicit KeyAwareQuery(const RouteOptions& o)
      : demand(effective_demand(o)),
        regen_scale(o.weights.gamma * demand / o.weights.horizon_s),
        alpha(o.weights.alpha),
        beta(o.weights.beta),
        kappa(o.weights.kappa),
        default_kappa(o.weights.kappa == KeyAwareWeights{}.kappa),
        headroom(o.weights.headroom),
        headroom_horizon_s(o.weights.headroom_horizon_s),
        headroom_share(o.weights.headroom_share),
        full_price_share(o.weights.full_price_share) {}
  double demand;
  double regen_scale;  ///< gamma * D / horizon_s
  double alpha;
  double beta;
  double kappa;
  bool default_kappa;  ///< LinkTerms::default_depletion_factor applies
  double headroom;     ///< 0 = no gate
  double headroom_horizon_s;
  double headroom_share;
  double full_price_share;
};

/// The price P of hop_cost() (no headroom gate).
inline double key_aware_price(const LinkTerms& t, const KeyAwareQuery& q) {
  const double scarcity = q.demand / (t.available_bits + q.demand);
  // exp(0) is 1 exactly, so a full pool (or kappa 0) leaves the other factors untouched.
  const double depletion = q.default_kappa   ? t.default_depletion_factor
                           : t.depletion > 0 ? std::exp(q.kappa * t.depletion)
                                             : 1.0;
  return (1.0 + q.regen_scale * t.inv_gen) * depletion *
         (1.0 + q.alpha * scarcity + q.beta * t.drain);
}

/// Weight of the price in the tie-break term of the gated cost (see hop_cost()).
inline constexpr double kTieBreak = 1e-9;
/// The price counted in the tie-break term is capped here, so that the term stays below 1e-3 per
/// hop and can never outweigh a hop.
inline constexpr double kTieBreakPriceCap = 1e6;

/// The key-aware hop cost documented at hop_cost() for a link of weight 1: the price behind the
/// headroom gate, plus the tie-break term.
inline double unit_key_aware_cost(const LinkTerms& t, const KeyAwareQuery& q) {
  if (q.headroom <= 0) return key_aware_price(t, q);
  const double price = key_aware_price(t, q);
  const double tie = kTieBreak * std::min(price, kTieBreakPriceCap);
  const double expected = q.demand + t.net_drain_bps * q.headroom_horizon_s;
  // The share term counts once the network consumes key at all: in an idle network (pools
  // filling after a start) only the demand gates. (Scaling it with the load weakened it in busy
  // networks whose links barely regenerate: more blocking on cost266 and nobel-eu at 2x.)
  const double busy = t.network_load > 0 ? 1.0 : 0.0;
  const double high = std::max(q.headroom * expected, q.headroom_share * busy * t.reference_bits);
  // Plenty of key for what this hop is expected to give: it costs what hop count says (plus the
  // tie-break that prefers the richer of equally short routes).
  if (t.available_bits >= high) return 1.0 + tie;
  // Below the gate the price comes in quadratically and is whole from `low` down: a pool at
  // full_price_share of the gate (or at the demand, if that is higher) costs P.
  const double low = std::max(q.demand, q.full_price_share * high);
  const double span = high - low;
  const double u = span > 0 ? std::clamp((high - t.available_bits) / span, 0.0, 1.0) : 1.0;
  return 1.0 + u * u * (price - 1.0) + tie;
}

/// The key-aware hop cost documented at hop_cost(): the operator's link weight times the unit
/// cost, so a plentiful hop costs exactly what hop count charges for it.
inline double key_aware_cost(const LinkTerms& t, const KeyAwareQuery& q) {
  return t.weight * unit_key_aware_cost(t, q);
}

}  // namespace qkdn::controller
