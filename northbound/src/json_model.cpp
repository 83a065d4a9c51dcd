#include "json_model.hpp"

#include <sstream>

#include "api_util.hpp"

namespace qkdn::northbound {

namespace {

json::array strings(const std::vector<std::string>& v) {
  json::array a;
  a.reserve(v.size());
  for (const auto& s : v) a.emplace_back(s);
  return a;
}

}  // namespace

json::object km_json(const controller::Km& km) {
  json::object o;
  o["km_id"] = km.km_id;
  o["site"] = km.site;
  o["lat"] = km.lat ? json::value(*km.lat) : json::value(nullptr);
  o["lon"] = km.lon ? json::value(*km.lon) : json::value(nullptr);
  o["trust_level"] = km.trust_level ? json::value(*km.trust_level) : json::value(nullptr);
  o["tags"] = strings(km.tags);
  o["connected"] = km.connected;
  o["kma_endpoint"] = km.kma_endpoint;
  o["attached"] = strings(km.attached);
  o["software"] = km.software;
  o["connected_at"] = time_json(km.connected_at);
  o["last_seen"] = time_json(km.last_seen);
  return o;
}

std::string km_config(const controller::Km& km) {
  std::ostringstream s;
  s.precision(17);
  s << km.km_id << '\n' << km.site;
  if (km.lat && km.lon) s << '\n' << *km.lat << '\n' << *km.lon;
  if (km.trust_level) s << "\ntrust " << *km.trust_level;
  for (const auto& t : km.tags) s << "\ntag " << t;
  return s.str();
}

json::object link_json(const controller::Link& l, const controller::Thresholds& t) {
  json::object o;
  o["link_id"] = l.spec.link_id;
  o["a"] = l.spec.a;
  o["b"] = l.spec.b;
  o["admin_state"] = controller::to_string(l.admin);
  o["oper_state"] = controller::to_string(l.oper);
  o["stored_keys"] = l.stored_keys;
  o["stored_key_bits"] = l.stored_key_bits;
  o["key_rate_bps"] = l.key_rate_bps;
  o["consumption_rate_bps"] = l.consumption_rate_bps;
  o["qber"] = l.qber;
  o["qber_threshold"] = l.qber_threshold ? json::value(*l.qber_threshold) : json::value(nullptr);
  o["pool_floor_bits"] = l.pool_floor_bits ? json::value(*l.pool_floor_bits) : json::value(nullptr);
  o["effective_qber_threshold"] = l.qber_threshold.value_or(t.qber);
  o["effective_pool_floor_bits"] = l.pool_floor_bits.value_or(t.pool_floor_bits);
  o["qber_alarm"] = l.qber_alarm;
  o["pool_low"] = l.pool_low;
  o["distance_km"] = l.spec.distance_km;
  o["weight"] = l.spec.weight;
  o["nominal_key_rate_bps"] = l.spec.key_rate_bps;
  o["nominal_qber"] = l.spec.qber;
  o["last_report"] = time_json(l.last_report);
  return o;
}

std::string link_config(const controller::Link& l) {
  std::ostringstream s;
  s.precision(17);
  s << l.spec.link_id << '\n'
    << l.spec.a << '\n'
    << l.spec.b << '\n'
    << l.spec.key_rate_bps << '\n'
    << l.spec.distance_km << '\n'
    << l.spec.qber << '\n'
    << l.spec.weight << '\n'
    << controller::to_string(l.admin) << '\n';
  if (l.qber_threshold) s << *l.qber_threshold;
  s << '\n';
  if (l.pool_floor_bits) s << *l.pool_floor_bits;
  return s.str();
}

json::object alarm_json(const controller::Alarm& a) {
  json::object o;
  o["id"] = a.id;
  o["type"] = a.type;
  o["resource"] = a.resource;
  o["km_id"] = a.km_id;
  o["link_id"] = a.link_id;
  o["severity"] = controller::to_string(a.severity);
  o["state"] = controller::to_string(a.state);
  o["acknowledged"] = a.acknowledged;
  o["acknowledged_by"] = a.acknowledged_by;
  o["acknowledged_at"] = a.acknowledged ? time_json(a.acknowledged_at) : json::value(nullptr);
  o["raised_at"] = time_json(a.raised_at);
  o["updated_at"] = time_json(a.updated_at);
  o["cleared_at"] = opt_time_json(a.cleared_at);
  o["value"] = a.last_value;
  o["text"] = a.text;
  o["count"] = a.count;
  return o;
}

json::object session_json(const controller::Session& s) {
  json::object o;
  o["session_id"] = s.session_id;
  o["src_sae"] = s.src_sae;
  o["dst_sae"] = s.dst_sae;
  o["src_km"] = s.src_km;
  o["dst_km"] = s.dst_km;
  o["keys_requested"] = s.keys_requested;
  o["keys_delivered"] = s.keys_delivered;
  o["state"] = controller::to_string(s.state);
  o["reason"] = s.reason;
  o["created_at"] = time_json(s.created_at);
  o["updated_at"] = time_json(s.updated_at);
  o["expires_at"] = opt_time_json(s.expires_at);
  return o;
}

json::object route_json(const controller::Route& r) {
  json::object o;
  o["kms"] = strings(r.kms);
  o["links"] = strings(r.links);
  o["cost"] = r.cost;
  o["hops"] = r.links.size();
  o["bottleneck_bits"] = r.bottleneck_bits;
  return o;
}

namespace {

json::object intermediate_json(const std::string& km_id, const std::optional<int>& trust,
                               const std::vector<std::string>& tags) {
  return json::object{{"km_id", km_id},
                      {"trust_level", trust ? json::value(*trust) : json::value(nullptr)},
                      {"tags", strings(tags)}};
}

// Adds intermediate_kms, intermediates and min_trust_level (the lowest effective trust among the
// intermediates; null for a route without any).
void add_intermediates(json::object& o, json::array items) {
  std::optional<std::int64_t> lowest;
  for (const auto& v : items) {
    const auto& t = v.as_object().at("trust_level");
    const std::int64_t level =
        t.is_null() ? controller::kMinTrustLevel : t.to_number<std::int64_t>();
    lowest = lowest ? std::min(*lowest, level) : level;
  }
  o["intermediate_kms"] = items.size();
  o["intermediates"] = std::move(items);
  o["min_trust_level"] = lowest ? json::value(*lowest) : json::value(nullptr);
}

}  // namespace

json::array intermediates_json(const std::vector<std::string>& kms, const controller::Network& n) {
  json::array out;
  for (std::size_t i = 1; i + 1 < kms.size(); ++i) {
    const auto* km = n.find_km(kms[i]);
    out.push_back(km != nullptr ? intermediate_json(kms[i], km->trust_level, km->tags)
                                : intermediate_json(kms[i], std::nullopt, {}));
  }
  return out;
}

json::object route_json(const controller::Route& r, const controller::TopologySnapshot& s) {
  json::object o = route_json(r);
  json::array items;
  for (std::size_t i = 1; i + 1 < r.kms.size(); ++i) {
    const auto idx = s.km_index(r.kms[i]);
    items.push_back(idx ? intermediate_json(r.kms[i], s.kms()[*idx].trust_level, s.kms()[*idx].tags)
                        : intermediate_json(r.kms[i], std::nullopt, {}));
  }
  add_intermediates(o, std::move(items));
  return o;
}

json::object relay_json(const controller::Relay& r, const controller::Network& n) {
  json::object o = relay_json(r);
  json::object route = o["route"].as_object();
  add_intermediates(route, intermediates_json(r.route.kms, n));
  o["route"] = std::move(route);
  return o;
}

json::object trust_json(const controller::TrustConstraints& c) {
  json::array tags;
  for (const auto& t : c.avoid_tags) tags.emplace_back(t);
  return json::object{{"max_intermediates", c.max_intermediates ? json::value(*c.max_intermediates)
                                                                : json::value(nullptr)},
                      {"min_trust_level", c.min_trust_level},
                      {"avoid_tags", std::move(tags)}};
}

json::object sae_constraints_json(const controller::SaeConstraintRecord& r) {
  json::object o = trust_json(controller::trust_from_record(r));
  o["src_sae"] = r.src_sae;
  o["dst_sae"] = r.dst_sae;
  o["updated_at"] = time_json(r.updated_at);
  return o;
}

json::object relay_json(const controller::Relay& r) {
  json::object o;
  o["relay_id"] = r.relay_id;
  o["session_id"] = r.session_id;
  o["src_km"] = r.src_km;
  o["dst_km"] = r.dst_km;
  o["number_of_keys"] = r.number_of_keys;
  o["key_size_bits"] = r.key_size_bits;
  o["relay_scheme"] = r.relay_scheme;
  o["relay_security"] = r.relay_scheme == "otp" ? "information_theoretic" : "computational";
  o["state"] = controller::to_string(r.state);
  o["reason"] = r.reason;
  o["route"] = route_json(r.route);
  json::array hops;
  for (const auto& h : r.hops) {
    // Key IDs stay out of the API: counts only.
    hops.push_back(json::object{{"km_id", h.km_id},
                                {"next_km_id", h.next_km_id},
                                {"link_id", h.link_id},
                                {"number_of_keys", h.number_of_keys},
                                {"stage", controller::to_string(h.stage)},
                                {"reserved_keys", h.key_ids.size()}});
  }
  o["hops"] = std::move(hops);
  o["attempt"] = r.attempt;
  o["previous_relay_id"] = r.previous_relay_id;
  o["next_relay_id"] = r.next_relay_id;
  o["created_at"] = time_json(r.created_at);
  o["updated_at"] = time_json(r.updated_at);
  o["deadline"] = opt_time_json(r.deadline);
  return o;
}

json::object schedule_json(const controller::ScheduleRecord& s) {
  json::object o;
  o["schedule_id"] = s.schedule_id;
  o["src_km"] = s.src_km;
  o["dst_km"] = s.dst_km;
  o["number_of_keys"] = s.number_of_keys;
  o["key_size_bits"] = s.key_size_bits;
  o["not_before"] = time_json(s.not_before);
  o["not_after"] = time_json(s.not_after);
  o["created_at"] = time_json(s.created_at);
  return o;
}

json::object pin_json(const controller::PinnedRouteRecord& p) {
  json::object o;
  o["src_km"] = p.src_km;
  o["dst_km"] = p.dst_km;
  o["kms"] = strings(p.kms);
  o["links"] = strings(p.links);
  o["created_at"] = time_json(p.created_at);
  return o;
}

json::object policy_json(const controller::ReroutingPolicy& p) {
  json::object params;
  for (const auto& [k, v] : controller::params_to_map(p.params)) params[k] = v;
  params["metric"] = controller::to_string(p.params.metric);
  json::array tags;
  for (const auto& t : p.avoid_tags) tags.emplace_back(t);
  return json::object{{"mode", controller::to_string(p.mode)},
                      {"params", std::move(params)},
                      {"avoid_tags", std::move(tags)}};
}

json::object thresholds_json(const controller::Thresholds& t) {
  return json::object{{"qber", t.qber},
                      {"pool_floor_bits", t.pool_floor_bits},
                      {"qber_hysteresis", t.qber_hysteresis}};
}

json::object audit_json(const controller::AuditRecord& a) {
  json::object o;
  o["id"] = a.id;
  o["at"] = time_json(a.at);
  o["actor"] = a.actor;
  o["action"] = a.action;
  o["resource"] = a.resource;
  o["outcome"] = a.outcome;
  o["detail"] = a.detail;
  o["remote"] = a.remote;
  return o;
}

json::object accounting_json(const controller::AccountingRecord& a) {
  json::object o;
  o["bucket_start"] = time_json(a.bucket_start);
  o["sae_id"] = a.sae_id;
  o["session_id"] = a.session_id;
  o["key_bytes"] = a.key_bytes;
  o["keys"] = a.keys;
  return o;
}

}  // namespace qkdn::northbound
