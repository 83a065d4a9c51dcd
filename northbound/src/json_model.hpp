// JSON representations of the core's types for the northbound API. Private to qkdn_northbound.
#pragma once

#include <string>

#include <boost/json.hpp>

#include "qkdn/controller/alarms.hpp"
#include "qkdn/controller/network.hpp"
#include "qkdn/controller/relays.hpp"
#include "qkdn/controller/rerouting.hpp"
#include "qkdn/controller/routing.hpp"
#include "qkdn/controller/sessions.hpp"
#include "qkdn/controller/store.hpp"

namespace qkdn::northbound {

namespace json = boost::json;

json::object km_json(const controller::Km& km);
/// ETag source of a KM: its writable configuration.
std::string km_config(const controller::Km& km);
json::object link_json(const controller::Link& link, const controller::Thresholds& t);
/// ETag source of a link: its declared attributes, admin state and threshold overrides (not the
/// live counters, so that status reports do not defeat If-Match).
std::string link_config(const controller::Link& link);
json::object alarm_json(const controller::Alarm& a);
json::object session_json(const controller::Session& s);
json::object relay_json(const controller::Relay& r);
/// relay_json with "intermediates": the route's intermediate KMs and their trust as the network
/// declares them now.
json::object relay_json(const controller::Relay& r, const controller::Network& n);
json::object route_json(const controller::Route& r);
/// route_json with "intermediate_kms" (count), "intermediates" ([{km_id, trust_level, tags}],
/// trust_level null when unrated) and "min_trust_level" (the lowest trust among them, unrated
/// counting as 0; null when there is none), from the snapshot the route was computed on.
json::object route_json(const controller::Route& r, const controller::TopologySnapshot& s);
/// [{km_id, trust_level, tags}] of the KMs between the two ends of `kms`, as the network declares
/// them now (unknown KMs: unrated, no tags).
json::array intermediates_json(const std::vector<std::string>& kms, const controller::Network& n);
/// {"max_intermediates": n|null, "min_trust_level": n, "avoid_tags": [...]}.
json::object trust_json(const controller::TrustConstraints& c);
json::object sae_constraints_json(const controller::SaeConstraintRecord& r);
json::object schedule_json(const controller::ScheduleRecord& s);
json::object pin_json(const controller::PinnedRouteRecord& p);
/// {"mode": ..., "params": {...}} with metric as its name.
json::object policy_json(const controller::ReroutingPolicy& p);
json::object thresholds_json(const controller::Thresholds& t);
json::object audit_json(const controller::AuditRecord& a);
json::object accounting_json(const controller::AccountingRecord& a);

}  // namespace qkdn::northbound
