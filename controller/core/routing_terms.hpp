// Private to controller/core: the key-aware cost arithmetic shared by hop_cost (routing.cpp) and
// the route search (yen.cpp), so both give bit-identical costs.
#pragma once

#include <algorithm>
#include <cstdint>

#include "qkdn/controller/routing.hpp"

namespace qkdn::controller {

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
  t.available_bits =
      l.pool_bits > l.pool_floor_bits ? static_cast<double>(l.pool_bits - l.pool_floor_bits) : 0.0;
  // A link that makes less than 1 b/s is treated as making 1 b/s so the terms stay finite.
  const double gen = std::max(l.key_rate_bps, 1.0);
  t.inv_gen = 1.0 / gen;
  t.drain = std::max(0.0, l.consumption_rate_bps - gen) / gen;
  return t;
}

/// The key-aware hop cost documented at hop_cost().
inline double key_aware_cost(const LinkTerms& t, double demand, const KeyAwareWeights& w) {
  const double scarcity = demand / (t.available_bits + demand);
  const double regen = demand * t.inv_gen / w.horizon_s;
  return (1.0 + w.gamma * regen) * (1.0 + w.alpha * scarcity + w.beta * t.drain);
}

}  // namespace qkdn::controller
