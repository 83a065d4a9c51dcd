// Health, sessions, relays, alarms, accounting and the audit trail.
#include <chrono>

#include "api_internal.hpp"
#include "json_model.hpp"
#include "qkdn/controller/build_info.hpp"
#include "qkdn/controller/error.hpp"
#include "qkdn/service/leadership.hpp"

namespace qkdn::northbound {

namespace {

using service::Core;
using service::CoreChanges;
using service::StoreOp;

std::uint64_t parse_numeric_id(const std::string& name, const std::string& v) {
  std::uint64_t n = 0;
  if (v.empty() || v.size() > 19) bad_request("'" + name + "' must be a positive integer");
  for (char c : v) {
    if (c < '0' || c > '9') bad_request("'" + name + "' must be a positive integer");
    n = n * 10 + static_cast<std::uint64_t>(c - '0');
  }
  if (n == 0) bad_request("'" + name + "' must be a positive integer");
  return n;
}

// ---- health -------------------------------------------------------------------------------------

net::awaitable<HttpResponse> get_health(Api& api, RequestContext& ctx) {
  ctx.query.finish();
  auto op = api.svc.on_core([](Core& c) {
    std::size_t kms_up = 0;
    std::size_t links_up = 0;
    for (const auto& [id, k] : c.network.kms()) kms_up += k.connected ? 1 : 0;
    for (const auto& [id, l] : c.network.links()) {
      links_up += l.oper == controller::OperState::kUp ? 1 : 0;
    }
    return json::object{
        {"kms", json::object{{"total", c.network.kms().size()}, {"connected", kms_up}}},
        {"links", json::object{{"total", c.network.links().size()}, {"up", links_up}}},
        {"alarms_active", c.alarms.active_count()}};
  });
  auto core = co_await std::move(op);
  const bool configured = api.svc.store_configured();
  const bool store_ok = !configured || api.svc.store_up();
  const auto counters = api.svc.counters();
  json::object o;
  o["status"] = store_ok ? "ok" : "degraded";
  o["version"] = build_version();
  o["store"] = json::object{{"configured", configured}, {"up", configured && api.svc.store_up()}};
  o["ck"] = json::object{{"listening", api.svc.port() != 0},
                         {"port", api.svc.port()},
                         {"connections", counters.connections_active}};
  for (auto& kv : core) o[kv.key()] = kv.value();
  // High availability (docs/high-availability.md): role, term, leader, lease age.
  json::object ha;
  if (const auto& leadership = api.svc.options().leadership) {
    const auto st = leadership->status();
    // "leader" only from the leader's own service: a standby's service that just won the lease
    // is about to be replaced by the leader's (it does not serve as leader yet).
    ha["role"] = st.leader && !api.svc.options().standby_since ? "leader" : "standby";
    ha["epoch"] = st.epoch;
    ha["holder"] = st.holder;
    ha["leader"] = json::object{{"holder", st.leader_holder},
                                {"ck_address", st.leader_ck_address},
                                {"api_address", st.leader_api_address}};
    ha["lease_age_ms"] = st.lease_age_ms;
  } else {
    ha["role"] = "single";
    ha["epoch"] = api.svc.controller_epoch();
  }
  if (const auto since = api.svc.options().standby_since) {
    ha["state_age_ms"] = std::chrono::duration_cast<std::chrono::milliseconds>(
                             std::chrono::steady_clock::now() - *since)
                             .count();
  }
  o["ha"] = std::move(ha);
  co_return json_response(o, store_ok ? 200 : 503);
}

// ---- sessions and relays ------------------------------------------------------------------------

net::awaitable<HttpResponse> list_sessions(Api& api, RequestContext& ctx) {
  auto page = page_params(ctx.query, api.options);
  auto state = ctx.query.get("state");
  auto sae = ctx.query.get("sae_id");
  ctx.query.finish();
  if (state) {
    try {
      (void)controller::parse_session_state(*state);
    } catch (const Error&) {
      bad_request("query parameter 'state' must be pending, active, closed, expired or failed");
    }
  }
  auto op = api.svc.on_core([&](Core& c) {
    std::map<std::string, controller::Session> all;
    for (auto& s : c.sessions.list()) all.emplace(s.session_id, std::move(s));
    return json_response(page_of_map(
        all, page,
        [&](const controller::Session& s) {
          return (!state || controller::to_string(s.state) == *state) &&
                 (!sae || s.src_sae == *sae || s.dst_sae == *sae);
        },
        [](const controller::Session& s) { return session_json(s); }));
  });
  co_return co_await std::move(op);
}

net::awaitable<HttpResponse> get_session(Api& api, RequestContext& ctx) {
  ctx.query.finish();
  auto op = api.svc.on_core([&](Core& c) {
    const auto* s = c.sessions.find(ctx.param("session_id"));
    if (s == nullptr) throw NotFound("session '" + ctx.param("session_id") + "' not found");
    return json_response(session_json(*s));
  });
  co_return co_await std::move(op);
}

net::awaitable<HttpResponse> list_relays(Api& api, RequestContext& ctx) {
  auto page = page_params(ctx.query, api.options);
  auto state = ctx.query.get("state");
  auto session = ctx.query.get("session_id");
  ctx.query.finish();
  if (state) {
    try {
      (void)controller::parse_relay_state(*state);
    } catch (const Error&) {
      bad_request(
          "query parameter 'state' must be requested, reserved, relaying, relayed, failed or "
          "voided");
    }
  }
  auto op = api.svc.on_core([&](Core& c) {
    std::map<std::string, controller::Relay> all;
    for (auto& r : c.relays.list()) all.emplace(r.relay_id, std::move(r));
    return json_response(page_of_map(
        all, page,
        [&](const controller::Relay& r) {
          return (!state || controller::to_string(r.state) == *state) &&
                 (!session || r.session_id == *session);
        },
        [&c](const controller::Relay& r) { return relay_json(r, c.network); }));
  });
  co_return co_await std::move(op);
}

net::awaitable<HttpResponse> get_relay(Api& api, RequestContext& ctx) {
  ctx.query.finish();
  auto op = api.svc.on_core([&](Core& c) {
    const auto* r = c.relays.find(ctx.param("relay_id"));
    if (r == nullptr) throw NotFound("relay '" + ctx.param("relay_id") + "' not found");
    return json_response(relay_json(*r, c.network));
  });
  co_return co_await std::move(op);
}

// ---- reservation ledger
// --------------------------------------------------------------------------

/// The reservation ledger at a glance: live keys, the earliest lease expiry (a lease that has
/// passed shows as overdue until the ledger's timer releases it), and per-link counts. Key IDs
/// are not listed: they are the ledger's, not an operator's, business.
net::awaitable<HttpResponse> get_ledger(Api& api, RequestContext& ctx) {
  ctx.query.finish();
  auto op = api.svc.on_core([](Core& c) {
    const auto& ledger = c.relays.ledger();
    const auto now = c.clock.now();
    json::object o;
    o["now"] = time_json(now);
    o["seen_keys"] = ledger.seen_count();
    o["live_keys"] = ledger.live_count();
    const auto next = ledger.next_expiry();
    o["next_lease_expiry"] = next ? time_json(*next) : json::value(nullptr);
    o["overdue_ms"] =
        next && *next < now
            ? std::chrono::duration_cast<std::chrono::milliseconds>(now - *next).count()
            : std::int64_t{0};
    o["reservation_lease_ms"] = ledger.config().reservation_lease.count();
    o["allocation_lease_ms"] = ledger.config().allocation_lease.count();
    json::array links;
    for (const auto& [id, n] : ledger.all_counters()) {
      links.push_back(json::object{{"link_id", id},
                                   {"reserved", n.reserved},
                                   {"allocated", n.allocated},
                                   {"consumed", n.consumed},
                                   {"released", n.released}});
    }
    o["links"] = std::move(links);
    return json_response(o);
  });
  co_return co_await std::move(op);
}

// ---- alarms -------------------------------------------------------------------------------------

net::awaitable<HttpResponse> list_alarms(Api& api, RequestContext& ctx) {
  auto page = page_params(ctx.query, api.options);
  controller::AlarmFilter f;
  auto state = ctx.query.get("state").value_or("all");
  if (state != "active" && state != "cleared" && state != "all") {
    bad_request("query parameter 'state' must be active, cleared or all");
  }
  f.active_only = state == "active";
  if (auto s = ctx.query.get("severity")) {
    try {
      f.severity = controller::parse_severity(*s);
    } catch (const Error&) {
      bad_request("query parameter 'severity' must be critical, major, minor or warning");
    }
  }
  f.type = ctx.query.get("type");
  f.resource = ctx.query.get("resource");
  f.km_id = ctx.query.get("km_id");
  f.link_id = ctx.query.get("link_id");
  ctx.query.finish();
  if (page.after) f.after_id = parse_numeric_id("cursor", *page.after);
  auto op = api.svc.on_core([&](Core& c) {
    const bool cleared_only = state == "cleared";
    // The table filters and limits itself except for "cleared only".
    f.limit = cleared_only ? 0 : page.limit + 1;
    auto alarms = c.alarms.list(f);
    json::array items;
    std::optional<std::string> next;
    for (const auto& a : alarms) {
      if (cleared_only && a.state != controller::AlarmState::kCleared) continue;
      if (items.size() == page.limit) {
        next = std::to_string(items.back().as_object().at("id").as_uint64());
        break;
      }
      items.push_back(alarm_json(a));
    }
    return json_response(page_json(std::move(items), next));
  });
  co_return co_await std::move(op);
}

net::awaitable<HttpResponse> get_alarm(Api& api, RequestContext& ctx) {
  ctx.query.finish();
  const auto id = parse_numeric_id("alarm_id", ctx.param("alarm_id"));
  auto op = api.svc.on_core([&](Core& c) {
    const auto* a = c.alarms.find(id);
    if (a == nullptr) throw NotFound("alarm " + std::to_string(id) + " not found");
    return json_response(alarm_json(*a));
  });
  co_return co_await std::move(op);
}

/// Alarm actions take no parameters: an empty body or an empty JSON object.
void check_empty_body(const HttpRequest& req) {
  if (req.body.empty()) return;
  auto body = parse_body_object(req);
  ObjectReader(body).finish();
}

net::awaitable<HttpResponse> ack_alarm(Api& api, RequestContext& ctx) {
  ctx.query.finish();
  const auto id = parse_numeric_id("alarm_id", ctx.param("alarm_id"));
  check_empty_body(ctx.req);
  auto op = api.svc.facade().write(
      [&](Core& c) {
        const auto* a = c.alarms.find(id);
        if (a == nullptr) throw NotFound("alarm " + std::to_string(id) + " not found");
        controller::Alarm copy = *a;
        if (!copy.acknowledged) {
          copy.acknowledged = true;
          copy.acknowledged_by = ctx.actor;
          copy.acknowledged_at = c.clock.now();
        }
        return copy;
      },
      [](const controller::Alarm& copy) -> StoreOp {
        return [copy](controller::Store& s) { s.save_alarm(copy); };
      },
      [&](CoreChanges& ch, const controller::Alarm&) {
        return json_response(alarm_json(ch.acknowledge_alarm(id, ctx.actor)));
      });
  co_return co_await std::move(op);
}

net::awaitable<HttpResponse> clear_alarm(Api& api, RequestContext& ctx) {
  ctx.query.finish();
  const auto id = parse_numeric_id("alarm_id", ctx.param("alarm_id"));
  check_empty_body(ctx.req);
  auto op = api.svc.facade().write(
      [&](Core& c) {
        const auto* a = c.alarms.find(id);
        if (a == nullptr) throw NotFound("alarm " + std::to_string(id) + " not found");
        if (a->state != controller::AlarmState::kActive) {
          throw ApiError(409, "conflict", "alarm " + std::to_string(id) + " is already cleared");
        }
        controller::Alarm copy = *a;
        copy.state = controller::AlarmState::kCleared;
        copy.cleared_at = c.clock.now();
        return copy;
      },
      [](const controller::Alarm& copy) -> StoreOp {
        return [copy](controller::Store& s) { s.save_alarm(copy); };
      },
      [](CoreChanges& ch, const controller::Alarm& copy) {
        const auto* a = ch.clear_alarm(copy.type, copy.resource);
        return json_response(alarm_json(a != nullptr ? *a : copy));
      });
  co_return co_await std::move(op);
}

// ---- accounting and audit -----------------------------------------------------------------------

SysTime query_time(Query& q, std::string_view name, SysTime fallback) {
  auto v = q.get(name);
  if (!v) return fallback;
  try {
    return parse_rfc3339(*v);
  } catch (const Error& e) {
    bad_request("query parameter '" + std::string(name) + "': " + e.what());
  }
}

net::awaitable<HttpResponse> get_accounting(Api& api, RequestContext& ctx) {
  auto& q = ctx.query;
  auto page = page_params(q, api.options);
  const auto now = std::chrono::system_clock::now();
  const SysTime from = query_time(q, "from", now - std::chrono::hours(24));
  const SysTime to = query_time(q, "to", now + std::chrono::minutes(1));
  auto sae = q.get("sae_id").value_or("");
  auto group = q.get("group_by").value_or("none");
  q.finish();
  if (to <= from) bad_request("'to' must be later than 'from'");
  if (!sae.empty() && !is_valid_id(sae)) bad_request("'sae_id' is not a valid ID");
  if (group != "none" && group != "sae_id" && group != "session_id") {
    bad_request("query parameter 'group_by' must be none, sae_id or session_id");
  }
  auto op = api.svc.accounting(from, to, sae);
  auto rows = co_await std::move(op);
  // Keys sort like (bucket, sae, session), so the cursor resumes after the last row served.
  std::map<std::string, controller::AccountingRecord> keyed;
  for (auto& r : rows) {
    std::string key;
    if (group == "sae_id") {
      key = r.sae_id;
      r.session_id.clear();
      r.bucket_start = SysTime{};
    } else if (group == "session_id") {
      key = r.sae_id + "\n" + r.session_id;
      r.bucket_start = SysTime{};
    } else {
      const auto ms =
          std::chrono::duration_cast<std::chrono::milliseconds>(r.bucket_start.time_since_epoch())
              .count();
      key = padded(static_cast<std::uint64_t>(std::max<std::int64_t>(ms, 0))) + "\n" + r.sae_id +
            "\n" + r.session_id;
    }
    auto [it, fresh] = keyed.emplace(key, r);
    if (!fresh) {
      it->second.key_bytes += r.key_bytes;
      it->second.keys += r.keys;
    }
  }
  // Per session: the intermediate KMs its relayed keys crossed, with their trust (issue 20), from
  // the relays the controller still holds.
  std::map<std::string, json::array> exposure;
  if (group == "session_id") {
    auto ex = api.svc.on_core([](Core& c) {
      std::map<std::string, std::map<std::string, std::int64_t>> keys_by_km;
      for (const auto& r : c.relays.list()) {
        if (r.session_id.empty() || r.state != controller::RelayState::kRelayed) continue;
        auto& kms = keys_by_km[r.session_id];
        for (std::size_t i = 1; i + 1 < r.route.kms.size(); ++i) {
          kms[r.route.kms[i]] += r.number_of_keys;
        }
      }
      std::map<std::string, json::array> out;
      for (const auto& [session, kms] : keys_by_km) {
        json::array items;
        for (const auto& [km, keys] : kms) {
          std::vector<std::string> one{"", km, ""};
          auto item = intermediates_json(one, c.network).at(0).as_object();
          item["keys"] = keys;
          items.push_back(std::move(item));
        }
        out[session] = std::move(items);
      }
      return out;
    });
    exposure = co_await std::move(ex);
  }
  auto out = page_of_map(
      keyed, page, [](const auto&) { return true; },
      [&](const controller::AccountingRecord& r) {
        auto j = accounting_json(r);
        if (group == "session_id") {
          auto it = exposure.find(r.session_id);
          j["intermediates"] = it == exposure.end() ? json::array{} : it->second;
        }
        return j;
      });
  out["from"] = format_rfc3339(from);
  out["to"] = format_rfc3339(to);
  out["group_by"] = group;
  co_return json_response(out);
}

net::awaitable<HttpResponse> get_audit(Api& api, RequestContext& ctx) {
  auto page = page_params(ctx.query, api.options);
  ctx.query.finish();
  std::int64_t after = 0;
  if (page.after) after = static_cast<std::int64_t>(parse_numeric_id("cursor", *page.after));
  auto op = api.svc.audit_page(after, page.limit + 1);
  auto records = co_await std::move(op);
  json::array items;
  std::optional<std::string> next;
  for (const auto& r : records) {
    if (items.size() == page.limit) {
      next = std::to_string(items.back().as_object().at("id").as_int64());
      break;
    }
    items.push_back(audit_json(r));
  }
  co_return json_response(page_json(std::move(items), next));
}

}  // namespace

void add_state_routes(Router& r) {
  r.add("GET", "/api/v1/health", false, true, get_health);
  r.add("GET", "/api/v1/sessions", false, false, list_sessions);
  r.add("GET", "/api/v1/sessions/{session_id}", false, false, get_session);
  r.add("GET", "/api/v1/relays", false, false, list_relays);
  r.add("GET", "/api/v1/relays/{relay_id}", false, false, get_relay);
  r.add("GET", "/api/v1/ledger", false, false, get_ledger);
  r.add("GET", "/api/v1/alarms", false, false, list_alarms);
  r.add("GET", "/api/v1/alarms/{alarm_id}", false, false, get_alarm);
  r.add("POST", "/api/v1/alarms/{alarm_id}/ack", true, false, ack_alarm);
  r.add("POST", "/api/v1/alarms/{alarm_id}/clear", true, false, clear_alarm);
  r.add("GET", "/api/v1/accounting", false, false, get_accounting);
  r.add("GET", "/api/v1/audit", false, false, get_audit);
}

}  // namespace qkdn::northbound
