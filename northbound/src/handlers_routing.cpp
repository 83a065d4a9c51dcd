// Route queries, pinned routes, rerouting policy and scheduled relay windows.
//
// Writes are ControllerFacade::write calls, as in handlers_network.cpp: validate on the core
// strand (against the topology, with the engine's own validators where they are public), store,
// then apply through typed CoreChanges (the facade forwards the engine's output).
#include <chrono>

#include "api_internal.hpp"
#include "json_model.hpp"
#include "qkdn/controller/error.hpp"
#include "qkdn/service/metrics.hpp"

namespace qkdn::northbound {

namespace {

using service::Core;
using service::CoreChanges;
using service::StoreOp;

std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  std::size_t pos = 0;
  while (pos <= s.size()) {
    auto comma = s.find(',', pos);
    if (comma == std::string::npos) comma = s.size();
    auto item = s.substr(pos, comma - pos);
    if (!item.empty()) out.push_back(item);
    pos = comma + 1;
  }
  return out;
}

void check_id_param(const std::string& name, const std::string& v) {
  if (!is_valid_id(v)) bad_request("'" + name + "' is not a valid ID: '" + v + "'");
}

/// The snapshot to route on (core strand): the engine's when only status figures (pools, rates)
/// moved since it was taken, since the service refreshes it within its coalescing interval after
/// every status report and a rebuild per query would cost O(network) on the core strand; a fresh
/// one when KMs, links, their states or the operator's settings changed.
std::shared_ptr<const controller::TopologySnapshot> current_snapshot(Core& c) {
  const auto& s = c.rerouting.snapshot();
  if (s && s->structure_version() == c.network.structure_version()) return s;
  return controller::TopologySnapshot::from_network(c.network);
}

// ---- route queries ------------------------------------------------------------------------------

/// Trust constraints of a route query: 400 naming the bad one. (Not inline in the coroutine: a
/// try block there trips GCC 12's -Wmismatched-new-delete on the coroutine frame.)
void check_trust_query(const controller::TrustConstraints& trust) {
  try {
    controller::validate_trust_constraints(trust);
  } catch (const InvalidArgument& e) {
    bad_request(std::string("query parameter ") + e.what());
  }
}

/// The options of a route query (400 for a bad parameter).
controller::RouteOptions route_query_options(Query& q) {
  controller::RouteOptions o;
  o.k = static_cast<std::size_t>(q.get_uint("k", 1, 16).value_or(3));
  if (auto m = q.get("metric")) {
    try {
      o.metric = controller::parse_route_metric(*m);
    } catch (const Error&) {
      bad_request("query parameter 'metric' must be key_aware, widest_shortest or hop_count");
    }
  }
  if (auto h = q.get_uint("max_hops", 1, 1000)) o.max_hops = static_cast<std::size_t>(*h);
  o.demand_bits = q.get_uint("demand_bits", 0, 1ULL << 40).value_or(0);
  o.require_connected = q.get_bool("require_connected").value_or(true);
  if (auto a = q.get("avoid_kms")) o.avoid_kms = split_list(*a);
  if (auto a = q.get("avoid_links")) o.avoid_links = split_list(*a);
  if (auto m = q.get_uint("max_intermediates", 0, 1000)) {
    o.trust.max_intermediates = static_cast<std::size_t>(*m);
  }
  o.trust.min_trust_level = static_cast<int>(
      q.get_uint("min_trust_level", controller::kMinTrustLevel, controller::kMaxTrustLevel)
          .value_or(controller::kMinTrustLevel));
  if (auto a = q.get("avoid_tags")) o.trust.avoid_tags = split_list(*a);
  q.finish();
  check_trust_query(o.trust);
  return o;
}

/// The answer to a route query on `snapshot` (any thread).
HttpResponse route_answer(Api& api, const controller::TopologySnapshot& snapshot,
                          const std::string& src, const std::string& dst,
                          const controller::RouteOptions& o) {
  const auto started = std::chrono::steady_clock::now();
  if (!snapshot.km_index(src)) throw NotFound("KM '" + src + "' not found");
  if (!snapshot.km_index(dst)) throw NotFound("KM '" + dst + "' not found");
  auto routes = controller::compute_routes(snapshot, src, dst, o);
  api.svc.metrics().route_computation(
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
  auto verdicts = controller::explain_links(snapshot, o);
  json::array items;
  for (const auto& r : routes) items.push_back(route_json(r, snapshot));
  json::array excluded;
  for (const auto& v : verdicts) {
    if (v.usable) continue;
    json::array reasons;
    for (auto reason : v.reasons) reasons.emplace_back(controller::to_string(reason));
    excluded.push_back(json::object{{"link_id", v.link_id},
                                    {"a", v.a},
                                    {"b", v.b},
                                    {"reasons", std::move(reasons)},
                                    {"detail", v.detail}});
  }
  json::object out{{"src", src},
                   {"dst", dst},
                   {"metric", controller::to_string(o.metric)},
                   {"trust", trust_json(o.trust)},
                   {"items", std::move(items)},
                   {"excluded", std::move(excluded)}};
  // No route: say why, and never answer with a route that breaks the constraints.
  if (routes.empty() && src != dst) {
    const auto why = controller::explain_no_route(snapshot, src, dst, o);
    out["refusal"] = json::object{{"code", why.code}, {"detail", why.detail}};
  }
  return json_response(out);
}

net::awaitable<HttpResponse> get_routes(Api& api, RequestContext& ctx) {
  auto& q = ctx.query;
  const auto src = q.required("src");
  const auto dst = q.required("dst");
  check_id_param("src", src);
  check_id_param("dst", dst);
  const controller::RouteOptions o = route_query_options(q);
  // The snapshot the core published, when the network's structure has not moved since: no hop
  // to the core strand, so a route query does not wait behind Ck traffic. Else the core's.
  auto snapshot = api.svc.published_snapshot();
  if (!snapshot || snapshot->structure_version() != api.svc.network_structure_version()) {
    auto op = api.svc.on_core([](Core& c) { return current_snapshot(c); });
    snapshot = co_await std::move(op);
  }
  // Route computation needs only the immutable snapshot: it runs here, off the core strand.
  co_return route_answer(api, *snapshot, src, dst, o);
}

// ---- pinned routes ------------------------------------------------------------------------------

std::string pin_key(const std::string& src, const std::string& dst) { return src + "\n" + dst; }

std::optional<controller::PinnedRouteRecord> find_pin(const controller::ReroutingEngine& engine,
                                                      const std::string& src,
                                                      const std::string& dst) {
  for (auto& p : engine.pinned_routes()) {
    if (p.src_km == src && p.dst_km == dst) return p;
  }
  return std::nullopt;
}

std::string pin_etag(const controller::PinnedRouteRecord& p) {
  auto j = pin_json(p);
  j.erase("created_at");
  return etag_of(json::serialize(j));
}

net::awaitable<HttpResponse> list_pins(Api& api, RequestContext& ctx) {
  auto page = page_params(ctx.query, api.options);
  ctx.query.finish();
  auto op = api.svc.on_core([&](Core& c) {
    std::map<std::string, controller::PinnedRouteRecord> all;
    for (auto& p : c.rerouting.pinned_routes()) all[pin_key(p.src_km, p.dst_km)] = p;
    return json_response(page_of_map(
        all, page, [](const auto&) { return true; }, [](const auto& p) { return pin_json(p); }));
  });
  co_return co_await std::move(op);
}

net::awaitable<HttpResponse> get_pin(Api& api, RequestContext& ctx) {
  ctx.query.finish();
  auto op = api.svc.on_core([&](Core& c) {
    auto p = find_pin(c.rerouting, ctx.param("src"), ctx.param("dst"));
    if (!p) {
      throw NotFound("no pinned route " + ctx.param("src") + " -> " + ctx.param("dst"));
    }
    return with_etag(json_response(pin_json(*p)), pin_etag(*p));
  });
  co_return co_await std::move(op);
}

/// The engine's own check of a pin or schedule (the one validation), as a 400 naming the fault.
/// (Not inline in the coroutines: a try block there trips GCC 12's -Wmismatched-new-delete.)
void check_pin(const controller::ReroutingEngine& engine, const controller::PinnedRouteRecord& p) {
  try {
    engine.check_pin(p);
  } catch (const InvalidArgument& e) {
    bad_body(e.what());
  }
}

void check_schedule(const controller::ReroutingEngine& engine,
                    const controller::ScheduleRecord& s) {
  try {
    engine.check_schedule(s);
  } catch (const InvalidArgument& e) {
    bad_body(e.what());
  }
}

net::awaitable<HttpResponse> put_pin(Api& api, RequestContext& ctx) {
  ctx.query.finish();
  controller::PinnedRouteRecord rec;
  rec.src_km = ctx.param("src");
  rec.dst_km = ctx.param("dst");
  check_id_param("src", rec.src_km);
  check_id_param("dst", rec.dst_km);
  if (rec.src_km == rec.dst_km) bad_request("source and destination KM must differ");
  auto body = parse_body_object(ctx.req);
  ObjectReader r(body);
  auto kms = r.opt_string_array("kms");
  if (!kms) bad_body("field 'kms' is required");
  rec.kms = *kms;
  rec.links = r.opt_string_array("links").value_or(std::vector<std::string>{});
  r.finish();
  auto op = api.svc.facade().write(
      [&](Core& c) {
        auto current = find_pin(c.rerouting, rec.src_km, rec.dst_km);
        ctx.check_if_match(current ? std::optional(pin_etag(*current)) : std::nullopt);
        if (!c.rerouting.snapshot()) throw Unavailable("the rerouting engine has no topology yet");
        check_pin(c.rerouting, rec);
        rec.created_at = c.clock.now();
        return current.has_value();
      },
      [&](bool) -> StoreOp { return [rec](controller::Store& s) { s.save_pinned_route(rec); }; },
      [&](CoreChanges& ch, bool existed) {
        ch.pin_route(rec);
        auto p = find_pin(ch.rerouting(), rec.src_km, rec.dst_km).value_or(rec);
        return with_etag(json_response(pin_json(p), existed ? 200 : 201), pin_etag(p));
      });
  co_return co_await std::move(op);
}

net::awaitable<HttpResponse> delete_pin(Api& api, RequestContext& ctx) {
  ctx.query.finish();
  const auto src = ctx.param("src");
  const auto dst = ctx.param("dst");
  auto op = api.svc.facade().write(
      [&](Core& c) {
        auto current = find_pin(c.rerouting, src, dst);
        if (!current) throw NotFound("no pinned route " + src + " -> " + dst);
        ctx.check_if_match(pin_etag(*current));
        return 0;
      },
      [&](int) -> StoreOp {
        return [src, dst](controller::Store& s) { s.delete_pinned_route(src, dst); };
      },
      [&](CoreChanges& ch, int) {
        ch.unpin_route(src, dst);
        return 0;
      });
  co_await std::move(op);
  co_return no_content();
}

// ---- policy -------------------------------------------------------------------------------------

controller::ReroutingPolicy read_policy(const json::object& body) {
  ObjectReader r(body);
  controller::ReroutingPolicy p;
  const auto mode = r.string("mode");
  try {
    p.mode = controller::parse_reroute_mode(mode);
  } catch (const Error&) {
    bad_body("field 'mode' must be manual, fixed_rate, traffic_adaptive or scheduled, got '" +
             mode + "'");
  }
  std::map<std::string, double> values;
  if (const auto* params = r.opt_object("params")) {
    for (const auto& kv : *params) {
      const std::string name(kv.key());
      const auto& v = kv.value();
      if (name == "metric" && v.is_string()) {
        try {
          values[name] =
              static_cast<double>(controller::parse_route_metric(std::string(v.as_string())));
        } catch (const Error&) {
          bad_body("field 'params.metric' must be key_aware, widest_shortest or hop_count");
        }
      } else if (v.is_number()) {
        values[name] = v.to_number<double>();
      } else {
        bad_body("field 'params." + name + "': expected number");
      }
    }
  }
  p.avoid_tags = r.opt_string_array("avoid_tags").value_or(std::vector<std::string>{});
  r.finish();
  try {
    p.params = controller::params_from_map(values);
    controller::validate_policy(p);
  } catch (const InvalidArgument& e) {
    bad_body(std::string("params: ") + e.what());
  }
  return p;
}

std::string policy_etag(const controller::ReroutingPolicy& p) {
  return etag_of(json::serialize(policy_json(p)));
}

net::awaitable<HttpResponse> get_policy(Api& api, RequestContext& ctx) {
  ctx.query.finish();
  auto op = api.svc.on_core([](Core& c) {
    auto j = policy_json(c.rerouting.policy());
    json::array overrides;
    for (const auto& rec : c.rerouting.export_config().policies) {
      if (rec.src_km.empty()) continue;
      auto o = policy_json(controller::policy_from_record(rec));
      o["src_km"] = rec.src_km;
      o["dst_km"] = rec.dst_km;
      overrides.push_back(std::move(o));
    }
    j["overrides"] = std::move(overrides);
    return with_etag(json_response(j), policy_etag(c.rerouting.policy()));
  });
  co_return co_await std::move(op);
}

net::awaitable<HttpResponse> put_policy(Api& api, RequestContext& ctx) {
  ctx.query.finish();
  auto policy = read_policy(parse_body_object(ctx.req));
  auto rec = controller::policy_to_record(policy, "", "");
  auto op = api.svc.facade().write(
      [&](Core& c) {
        ctx.check_if_match(policy_etag(c.rerouting.policy()));
        return 0;
      },
      [&](int) -> StoreOp { return [rec](controller::Store& s) { s.save_policy(rec); }; },
      [&](CoreChanges& ch, int) {
        ch.set_policy(policy);
        return with_etag(json_response(policy_json(ch.rerouting().policy())),
                         policy_etag(ch.rerouting().policy()));
      });
  co_return co_await std::move(op);
}

void check_pair(Core& c, const std::string& src, const std::string& dst) {
  check_id_param("src", src);
  check_id_param("dst", dst);
  if (src == dst) bad_request("source and destination KM must differ");
  for (const auto* id : {&src, &dst}) {
    if (c.network.find_km(*id) == nullptr) throw NotFound("KM '" + *id + "' not found");
  }
}

net::awaitable<HttpResponse> get_pair_policy(Api& api, RequestContext& ctx) {
  ctx.query.finish();
  auto op = api.svc.on_core([&](Core& c) {
    const auto& src = ctx.param("src");
    const auto& dst = ctx.param("dst");
    auto p = c.rerouting.pair_policy(src, dst);
    if (!p) throw NotFound("no policy override for " + src + " -> " + dst);
    auto j = policy_json(*p);
    j["src_km"] = src;
    j["dst_km"] = dst;
    return with_etag(json_response(j), policy_etag(*p));
  });
  co_return co_await std::move(op);
}

net::awaitable<HttpResponse> put_pair_policy(Api& api, RequestContext& ctx) {
  ctx.query.finish();
  const auto src = ctx.param("src");
  const auto dst = ctx.param("dst");
  auto policy = read_policy(parse_body_object(ctx.req));
  auto rec = controller::policy_to_record(policy, src, dst);
  auto op = api.svc.facade().write(
      [&](Core& c) {
        check_pair(c, src, dst);
        auto current = c.rerouting.pair_policy(src, dst);
        ctx.check_if_match(current ? std::optional(policy_etag(*current)) : std::nullopt);
        return current.has_value();
      },
      [&](bool) -> StoreOp { return [rec](controller::Store& s) { s.save_policy(rec); }; },
      [&](CoreChanges& ch, bool existed) {
        ch.set_pair_policy(src, dst, policy);
        auto j = policy_json(policy);
        j["src_km"] = src;
        j["dst_km"] = dst;
        return with_etag(json_response(j, existed ? 200 : 201), policy_etag(policy));
      });
  co_return co_await std::move(op);
}

net::awaitable<HttpResponse> delete_pair_policy(Api& api, RequestContext& ctx) {
  ctx.query.finish();
  const auto src = ctx.param("src");
  const auto dst = ctx.param("dst");
  auto op = api.svc.facade().write(
      [&](Core& c) {
        auto current = c.rerouting.pair_policy(src, dst);
        if (!current) throw NotFound("no policy override for " + src + " -> " + dst);
        ctx.check_if_match(policy_etag(*current));
        return 0;
      },
      [&](int) -> StoreOp {
        return [src, dst](controller::Store& s) { s.delete_policy(src, dst); };
      },
      [&](CoreChanges& ch, int) {
        ch.clear_pair_policy(src, dst);
        return 0;
      });
  co_await std::move(op);
  co_return no_content();
}

// ---- SAE pair trust constraints --------------------------------------------------------------

std::string sae_key(const std::string& src, const std::string& dst) { return src + "\n" + dst; }

std::string sae_etag(const controller::SaeConstraintRecord& r) {
  return etag_of(json::serialize(trust_json(controller::trust_from_record(r))));
}

net::awaitable<HttpResponse> list_sae_constraints(Api& api, RequestContext& ctx) {
  auto page = page_params(ctx.query, api.options);
  ctx.query.finish();
  auto op = api.svc.on_core([&](Core& c) {
    std::map<std::string, controller::SaeConstraintRecord> all;
    for (auto& r : c.rerouting.all_sae_constraints()) all[sae_key(r.src_sae, r.dst_sae)] = r;
    return json_response(page_of_map(
        all, page, [](const auto&) { return true; },
        [](const auto& r) { return sae_constraints_json(r); }));
  });
  co_return co_await std::move(op);
}

net::awaitable<HttpResponse> get_sae_constraints(Api& api, RequestContext& ctx) {
  ctx.query.finish();
  auto op = api.svc.on_core([&](Core& c) {
    auto r = c.rerouting.sae_constraints(ctx.param("src_sae"), ctx.param("dst_sae"));
    if (!r) {
      throw NotFound("no trust constraints for SAE pair " + ctx.param("src_sae") + " -> " +
                     ctx.param("dst_sae"));
    }
    return with_etag(json_response(sae_constraints_json(*r)), sae_etag(*r));
  });
  co_return co_await std::move(op);
}

net::awaitable<HttpResponse> put_sae_constraints(Api& api, RequestContext& ctx) {
  ctx.query.finish();
  controller::SaeConstraintRecord rec;
  rec.src_sae = ctx.param("src_sae");
  rec.dst_sae = ctx.param("dst_sae");
  check_id_param("src_sae", rec.src_sae);
  check_id_param("dst_sae", rec.dst_sae);
  if (rec.src_sae == rec.dst_sae) bad_request("source and destination SAE must differ");
  auto body = parse_body_object(ctx.req);
  ObjectReader r(body);
  bool null_seen = false;
  if (auto m = r.opt_uint_or_null("max_intermediates", null_seen)) {
    if (*m > 1000) bad_body("field 'max_intermediates' must be in [0, 1000] or null");
    rec.max_intermediates = static_cast<std::int64_t>(*m);
  }
  if (auto t = r.opt_int("min_trust_level")) rec.min_trust_level = *t;
  rec.avoid_tags = r.opt_string_array("avoid_tags").value_or(std::vector<std::string>{});
  r.finish();
  try {
    static_cast<void>(controller::trust_from_record(rec));
  } catch (const InvalidArgument& e) {
    bad_body(e.what());
  }
  auto op = api.svc.facade().write(
      [&](Core& c) {
        auto current = c.rerouting.sae_constraints(rec.src_sae, rec.dst_sae);
        ctx.check_if_match(current ? std::optional(sae_etag(*current)) : std::nullopt);
        rec.updated_at = c.clock.now();
        return current.has_value();
      },
      [&](bool) -> StoreOp { return [rec](controller::Store& s) { s.save_sae_constraints(rec); }; },
      [&](CoreChanges& ch, bool existed) {
        ch.set_sae_constraints(rec);
        return with_etag(json_response(sae_constraints_json(rec), existed ? 200 : 201),
                         sae_etag(rec));
      });
  co_return co_await std::move(op);
}

net::awaitable<HttpResponse> delete_sae_constraints(Api& api, RequestContext& ctx) {
  ctx.query.finish();
  const auto src = ctx.param("src_sae");
  const auto dst = ctx.param("dst_sae");
  auto op = api.svc.facade().write(
      [&](Core& c) {
        auto current = c.rerouting.sae_constraints(src, dst);
        if (!current) throw NotFound("no trust constraints for SAE pair " + src + " -> " + dst);
        ctx.check_if_match(sae_etag(*current));
        return 0;
      },
      [&](int) -> StoreOp {
        return [src, dst](controller::Store& s) { s.delete_sae_constraints(src, dst); };
      },
      [&](CoreChanges& ch, int) {
        ch.clear_sae_constraints(src, dst);
        return 0;
      });
  co_await std::move(op);
  co_return no_content();
}

// ---- schedules ----------------------------------------------------------------------------------

net::awaitable<HttpResponse> list_schedules(Api& api, RequestContext& ctx) {
  auto page = page_params(ctx.query, api.options);
  ctx.query.finish();
  auto op = api.svc.on_core([&](Core& c) {
    std::map<std::string, controller::ScheduleRecord> all;
    for (auto& s : c.rerouting.schedules()) all[s.schedule_id] = s;
    return json_response(page_of_map(
        all, page, [](const auto&) { return true; },
        [](const auto& s) { return schedule_json(s); }));
  });
  co_return co_await std::move(op);
}

std::optional<controller::ScheduleRecord> find_schedule(const controller::ReroutingEngine& engine,
                                                        const std::string& id) {
  for (auto& s : engine.schedules()) {
    if (s.schedule_id == id) return s;
  }
  return std::nullopt;
}

net::awaitable<HttpResponse> get_schedule(Api& api, RequestContext& ctx) {
  ctx.query.finish();
  auto op = api.svc.on_core([&](Core& c) {
    auto s = find_schedule(c.rerouting, ctx.param("schedule_id"));
    if (!s) throw NotFound("schedule '" + ctx.param("schedule_id") + "' not found");
    return json_response(schedule_json(*s));
  });
  co_return co_await std::move(op);
}

net::awaitable<HttpResponse> post_schedule(Api& api, RequestContext& ctx) {
  ctx.query.finish();
  auto body = parse_body_object(ctx.req);
  ObjectReader r(body);
  controller::ScheduleRecord rec;
  rec.schedule_id = r.opt_string("schedule_id").value_or("");
  rec.src_km = r.id("src_km");
  rec.dst_km = r.id("dst_km");
  auto keys = r.opt_int("number_of_keys");
  if (!keys) bad_body("field 'number_of_keys' is required");
  rec.number_of_keys = *keys;
  rec.key_size_bits = r.opt_int("key_size_bits").value_or(256);
  auto nb = r.opt_time("not_before");
  auto na = r.opt_time("not_after");
  r.finish();
  if (!nb || !na) bad_body("fields 'not_before' and 'not_after' are required");
  rec.not_before = *nb;
  rec.not_after = *na;
  if (!rec.schedule_id.empty() && !is_uuid(rec.schedule_id)) {
    bad_body("field 'schedule_id' must be a UUID");
  }
  auto op = api.svc.facade().write(
      [&](Core& c) {
        check_schedule(c.rerouting, rec);
        if (rec.schedule_id.empty()) {
          rec.schedule_id = make_uuid_v4(c.random);
        } else if (find_schedule(c.rerouting, rec.schedule_id)) {
          throw ApiError(409, "conflict", "schedule '" + rec.schedule_id + "' already exists");
        }
        rec.created_at = c.clock.now();
        return 0;
      },
      [&](int) -> StoreOp { return [rec](controller::Store& s) { s.save_schedule(rec); }; },
      [&](CoreChanges& ch, int) {
        ch.add_schedule(rec);
        return json_response(schedule_json(rec), 201);
      });
  auto out = co_await std::move(op);
  out.headers.emplace_back("Location", "/api/v1/schedules/" + rec.schedule_id);
  co_return out;
}

net::awaitable<HttpResponse> delete_schedule(Api& api, RequestContext& ctx) {
  ctx.query.finish();
  const auto id = ctx.param("schedule_id");
  auto op = api.svc.facade().write(
      [&](Core& c) {
        if (!find_schedule(c.rerouting, id)) throw NotFound("schedule '" + id + "' not found");
        return 0;
      },
      [&](int) -> StoreOp { return [id](controller::Store& s) { s.delete_schedule(id); }; },
      [&](CoreChanges& ch, int) {
        ch.remove_schedule(id);
        return 0;
      });
  co_await std::move(op);
  co_return no_content();
}

}  // namespace

void add_routing_routes(Router& r) {
  r.add("GET", "/api/v1/routes", false, false, get_routes);
  r.add("GET", "/api/v1/routes/pinned", false, false, list_pins);
  r.add("GET", "/api/v1/routes/pinned/{src}/{dst}", false, false, get_pin);
  r.add("PUT", "/api/v1/routes/pinned/{src}/{dst}", true, false, put_pin);
  r.add("DELETE", "/api/v1/routes/pinned/{src}/{dst}", true, false, delete_pin);
  r.add("GET", "/api/v1/policy", false, false, get_policy);
  r.add("PUT", "/api/v1/policy", true, false, put_policy);
  r.add("GET", "/api/v1/policy/pairs/{src}/{dst}", false, false, get_pair_policy);
  r.add("PUT", "/api/v1/policy/pairs/{src}/{dst}", true, false, put_pair_policy);
  r.add("DELETE", "/api/v1/policy/pairs/{src}/{dst}", true, false, delete_pair_policy);
  r.add("GET", "/api/v1/constraints", false, false, list_sae_constraints);
  r.add("GET", "/api/v1/constraints/{src_sae}/{dst_sae}", false, false, get_sae_constraints);
  r.add("PUT", "/api/v1/constraints/{src_sae}/{dst_sae}", true, false, put_sae_constraints);
  r.add("DELETE", "/api/v1/constraints/{src_sae}/{dst_sae}", true, false, delete_sae_constraints);
  r.add("GET", "/api/v1/schedules", false, false, list_schedules);
  r.add("POST", "/api/v1/schedules", true, false, post_schedule);
  r.add("GET", "/api/v1/schedules/{schedule_id}", false, false, get_schedule);
  r.add("DELETE", "/api/v1/schedules/{schedule_id}", true, false, delete_schedule);
}

}  // namespace qkdn::northbound
