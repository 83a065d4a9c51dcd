// Rerouting modes, reasons, policy parameters and their persistence form; engine output helpers.
#include <cmath>
#include <cstdio>
#include <string>
#include <utility>

#include "qkdn/controller/error.hpp"
#include "qkdn/controller/rerouting.hpp"

namespace qkdn::controller {

namespace {

// One table drives the map form, parsing and validation so the three cannot drift apart.
struct ParamSpec {
  const char* name;
  double ReroutingParams::*field;
  double min;
  bool min_open;  // value must be > min (else >= min)
  double max;     // inclusive; infinity = unbounded
  bool integer;
};

constexpr double kInf = HUGE_VAL;

constexpr ParamSpec kParams[] = {
    {"interval_s", &ReroutingParams::interval_s, 0, true, kInf, false},
    {"key_size_bits", &ReroutingParams::key_size_bits, 1, false, 1e9, true},
    {"rate_share", &ReroutingParams::rate_share, 0, true, 1, false},
    {"replan_threshold", &ReroutingParams::replan_threshold, 0, false, kInf, false},
    {"demand_keys", &ReroutingParams::demand_keys, 0, false, kInf, false},
    {"alpha", &ReroutingParams::alpha, 0, true, 1, false},
    {"window_s", &ReroutingParams::window_s, 0, true, kInf, false},
    {"demand_floor", &ReroutingParams::demand_floor, 0, false, kInf, false},
    {"headroom", &ReroutingParams::headroom, 0, false, kInf, false},
    {"lead_s", &ReroutingParams::lead_s, 0, false, kInf, false},
    {"max_hops", &ReroutingParams::max_hops, 0, false, 1e6, true},
    {"demand_bits", &ReroutingParams::demand_bits, 0, false, 1e15, true},
    {"pinned_fallback", &ReroutingParams::pinned_fallback, 0, false, 1, true},
    {"max_intermediates", &ReroutingParams::max_intermediates, -1, false, 1e6, true},
    {"min_trust_level", &ReroutingParams::min_trust_level, kMinTrustLevel, false, kMaxTrustLevel,
     true},
};

constexpr const char* kMetricParam = "metric";

std::string number(double v) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

void check_param(const ParamSpec& p, double v) {
  const bool ok = std::isfinite(v) && (p.min_open ? v > p.min : v >= p.min) && v <= p.max &&
                  (!p.integer || std::floor(v) == v);
  if (ok) return;
  std::string range = std::string(p.min_open ? "(" : "[") + number(p.min) + ", " +
                      (p.max == kInf ? std::string("inf)") : number(p.max) + "]");
  throw InvalidArgument("parameter '" + std::string(p.name) + "' must be " +
                        (p.integer ? "an integer " : "") + "in " + range + ", got " + number(v));
}

RouteMetric metric_from_code(double v) {
  if (v == 0) return RouteMetric::kKeyAware;
  if (v == 1) return RouteMetric::kWidestShortest;
  if (v == 2) return RouteMetric::kHopCount;
  throw InvalidArgument(
      "parameter 'metric' must be 0 (key_aware), 1 (widest_shortest) or 2 "
      "(hop_count), got " +
      number(v));
}

double metric_code(RouteMetric m) {
  switch (m) {
    case RouteMetric::kKeyAware:
      return 0;
    case RouteMetric::kWidestShortest:
      return 1;
    case RouteMetric::kHopCount:
      return 2;
  }
  return 0;
}

}  // namespace

std::string_view to_string(RerouteMode m) noexcept {
  switch (m) {
    case RerouteMode::kManual:
      return "manual";
    case RerouteMode::kFixedRate:
      return "fixed_rate";
    case RerouteMode::kTrafficAdaptive:
      return "traffic_adaptive";
    case RerouteMode::kScheduled:
      return "scheduled";
  }
  return "unknown";
}

RerouteMode parse_reroute_mode(std::string_view s) {
  for (auto m : {RerouteMode::kManual, RerouteMode::kFixedRate, RerouteMode::kTrafficAdaptive,
                 RerouteMode::kScheduled}) {
    if (s == to_string(m)) return m;
  }
  throw InvalidArgument("unknown rerouting mode '" + std::string(s) +
                        "' (expected manual, fixed_rate, traffic_adaptive or scheduled)");
}

std::string_view to_string(RerouteReason r) noexcept {
  switch (r) {
    case RerouteReason::kQber:
      return "qber";
    case RerouteReason::kLinkDown:
      return "link_down";
    case RerouteReason::kKmDisconnect:
      return "km_disconnect";
    case RerouteReason::kPoolLow:
      return "pool_low";
    case RerouteReason::kOperator:
      return "operator";
    case RerouteReason::kRateChange:
      return "rate_change";
    case RerouteReason::kSchedule:
      return "schedule";
  }
  return "unknown";
}

void validate_policy(const ReroutingPolicy& policy) {
  switch (policy.mode) {
    case RerouteMode::kManual:
    case RerouteMode::kFixedRate:
    case RerouteMode::kTrafficAdaptive:
    case RerouteMode::kScheduled:
      break;
    default:
      throw InvalidArgument("unknown rerouting mode");
  }
  switch (policy.params.metric) {
    case RouteMetric::kKeyAware:
    case RouteMetric::kWidestShortest:
    case RouteMetric::kHopCount:
      break;
    default:
      throw InvalidArgument("parameter 'metric' is not a known route metric");
  }
  for (const auto& p : kParams) check_param(p, policy.params.*p.field);
  validate_trust_constraints(trust_constraints(policy));
}

TrustConstraints trust_constraints(const ReroutingPolicy& policy) {
  TrustConstraints c;
  if (policy.params.max_intermediates >= 0) {
    c.max_intermediates = static_cast<std::size_t>(policy.params.max_intermediates);
  }
  c.min_trust_level = static_cast<int>(policy.params.min_trust_level);
  c.avoid_tags = policy.avoid_tags;
  return c;
}

std::map<std::string, double> params_to_map(const ReroutingParams& params) {
  std::map<std::string, double> out;
  out[kMetricParam] = metric_code(params.metric);
  for (const auto& p : kParams) out[p.name] = params.*p.field;
  return out;
}

ReroutingParams params_from_map(const std::map<std::string, double>& values) {
  ReroutingParams params;
  for (const auto& [name, value] : values) {
    if (name == kMetricParam) {
      params.metric = metric_from_code(value);
      continue;
    }
    const ParamSpec* spec = nullptr;
    for (const auto& p : kParams) {
      if (name == p.name) spec = &p;
    }
    if (spec == nullptr) throw InvalidArgument("unknown rerouting parameter '" + name + "'");
    check_param(*spec, value);
    params.*spec->field = value;
  }
  return params;
}

PolicyRecord policy_to_record(const ReroutingPolicy& policy, const std::string& src,
                              const std::string& dst) {
  PolicyRecord rec;
  rec.src_km = src;
  rec.dst_km = dst;
  rec.mode = std::string(to_string(policy.mode));
  rec.params = params_to_map(policy.params);
  rec.avoid_tags = policy.avoid_tags;
  return rec;
}

ReroutingPolicy policy_from_record(const PolicyRecord& record) {
  if (record.src_km.empty() != record.dst_km.empty()) {
    throw InvalidArgument("policy record: src_km and dst_km must both be set or both be empty");
  }
  ReroutingPolicy policy;
  policy.mode = parse_reroute_mode(record.mode);
  policy.params = params_from_map(record.params);
  policy.avoid_tags = record.avoid_tags;
  validate_trust_constraints(trust_constraints(policy));
  return policy;
}

TrustConstraints trust_from_record(const SaeConstraintRecord& rec) {
  TrustConstraints c;
  if (rec.max_intermediates) {
    if (*rec.max_intermediates < 0) {
      throw InvalidArgument("max_intermediates must be >= 0, got " +
                            std::to_string(*rec.max_intermediates));
    }
    c.max_intermediates = static_cast<std::size_t>(*rec.max_intermediates);
  }
  if (rec.min_trust_level < kMinTrustLevel || rec.min_trust_level > kMaxTrustLevel) {
    throw InvalidArgument("min_trust_level must be an integer in [0, 100], got " +
                          std::to_string(rec.min_trust_level));
  }
  c.min_trust_level = static_cast<int>(rec.min_trust_level);
  c.avoid_tags = rec.avoid_tags;
  validate_trust_constraints(c);
  return c;
}

SaeConstraintRecord trust_to_record(const std::string& src_sae, const std::string& dst_sae,
                                    const TrustConstraints& c, SysTime updated_at) {
  SaeConstraintRecord rec;
  rec.src_sae = src_sae;
  rec.dst_sae = dst_sae;
  if (c.max_intermediates) rec.max_intermediates = static_cast<std::int64_t>(*c.max_intermediates);
  rec.min_trust_level = c.min_trust_level;
  rec.avoid_tags = c.avoid_tags;
  rec.updated_at = updated_at;
  return rec;
}

bool ReroutingOutput::empty() const noexcept {
  return send.empty() && withdraw.empty() && expired.empty() && raise_alarms.empty() &&
         clear_alarms.empty() && reroutes.empty();
}

void ReroutingOutput::append(ReroutingOutput&& other) {
  auto move_all = [](auto& to, auto& from) {
    for (auto& x : from) to.push_back(std::move(x));
  };
  move_all(send, other.send);
  move_all(withdraw, other.withdraw);
  move_all(expired, other.expired);
  move_all(raise_alarms, other.raise_alarms);
  move_all(clear_alarms, other.clear_alarms);
  move_all(reroutes, other.reroutes);
}

void apply_alarms(const ReroutingOutput& out, AlarmTable& table) {
  for (const auto& spec : out.raise_alarms) table.raise(spec);
  for (const auto& c : out.clear_alarms) table.clear(c.type, c.resource);
}

std::string pinned_route_resource(const std::string& src, const std::string& dst) {
  return src + "->" + dst;
}

}  // namespace qkdn::controller
