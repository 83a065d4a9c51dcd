// Topology, KMs, links, network thresholds and applications.
//
// Every write is one ControllerFacade::write (controller_facade.hpp): (1) on the core strand,
// read the current state, check If-Match and build the complete new configuration, validating it
// (nothing is changed); (2) store it (when a store is configured; a failure answers 503 and
// nothing is applied); (3) on the core strand, apply it through typed CoreChanges, whose outputs
// the facade forwards itself. Step 3 cannot fail for input reasons because step 1 validated the
// same configuration, and writes are serialized, so what was validated is what gets applied.
#include <algorithm>
#include <chrono>
#include <cmath>

#include "api_internal.hpp"
#include "json_model.hpp"
#include "qkdn/controller/error.hpp"
#include "qkdn/southbound/topology_json.hpp"

namespace qkdn::northbound {

namespace {

using service::Core;
using service::CoreChanges;
using service::StoreOp;

std::string topology_text(const controller::Network& n) {
  return southbound::serialize_topology(n.topology());
}

/// The store operation of a topology change.
StoreOp store_topology(const controller::TopologyDoc& doc) {
  return [doc](controller::Store& s) { s.save_topology(doc); };
}

/// Serves a list page from the short-lived cache, or builds it on the core strand. One request
/// at a time rebuilds an expired page; concurrent ones serve the previous page meanwhile, so a
/// burst of readers costs the core strand one rebuild per TTL rather than one per request.
/// The page is shared by the responses (no copy) and carries a strong ETag; a matching
/// If-None-Match answers 304 without a body, so pollers of unchanged state transfer nothing.
net::awaitable<HttpResponse> cached_page(Api& api, const RequestContext& ctx, std::string key,
                                         std::function<std::string(Core&)> build) {
  const auto now = std::chrono::steady_clock::now();
  const bool caching = api.options.list_cache_ttl.count() > 0;
  std::shared_ptr<const std::string> body;
  std::string etag;
  std::uint64_t generation = 0;
  if (caching) {
    std::lock_guard lock(api.cache_mu);
    generation = api.cache_generation;
    if (api.page_cache.size() >= 256 && api.page_cache.count(key) == 0) api.page_cache.clear();
    auto& entry = api.page_cache[key];
    if (entry.body && (now - entry.at < api.options.list_cache_ttl || entry.refreshing)) {
      body = entry.body;
      etag = entry.etag;
    } else {
      entry.refreshing = true;
    }
  }
  if (!body) {
    std::string text;
    try {
      auto op = api.svc.on_core(std::move(build));
      text = co_await std::move(op);
    } catch (...) {
      if (caching) {
        std::lock_guard lock(api.cache_mu);
        if (auto it = api.page_cache.find(key); it != api.page_cache.end()) {
          it->second.refreshing = false;
        }
      }
      throw;
    }
    etag = etag_of(text);
    body = std::make_shared<const std::string>(std::move(text));
    if (caching) {
      std::lock_guard lock(api.cache_mu);
      // Built before a write ended: serve it to this reader (it asked before), store nothing.
      if (api.cache_generation == generation) {
        api.page_cache[key] = CachedPage{std::chrono::steady_clock::now(), body, etag, false};
      }
    }
  }
  HttpResponse out;
  out.headers.emplace_back("ETag", etag);
  if (auto it = ctx.req.headers.find("if-none-match");
      it != ctx.req.headers.end() && if_match_ok(it->second, etag)) {
    out.status = 304;
    out.content_type.clear();
    co_return out;
  }
  out.shared_body = std::move(body);
  co_return out;
}

std::string query_key(std::string_view name, const RequestContext& ctx) {
  auto q = ctx.req.target.find('?');
  return std::string(name) + (q == std::string::npos ? "" : ctx.req.target.substr(q));
}

// ---- topology -----------------------------------------------------------------------------------

net::awaitable<HttpResponse> get_topology(Api& api, RequestContext& ctx) {
  ctx.query.finish();
  auto op = api.svc.on_core([](Core& c) { return topology_text(c.network); });
  auto text = co_await std::move(op);
  HttpResponse out;
  out.headers.emplace_back("ETag", etag_of(text));
  out.body = std::move(text);
  co_return out;
}

net::awaitable<HttpResponse> put_topology(Api& api, RequestContext& ctx) {
  ctx.query.finish();
  (void)parse_body_object(ctx.req);  // Content-Type, well-formed JSON object
  auto doc = southbound::parse_topology(ctx.req.body, /*strict=*/true);
  auto op = api.svc.facade().write(
      [&](Core& c) {
        ctx.check_if_match(etag_of(topology_text(c.network)));
        return doc;
      },
      store_topology,
      [](CoreChanges& ch, const controller::TopologyDoc& d) {
        ch.apply_topology(d);
        return topology_text(ch.network());
      });
  auto text = co_await std::move(op);
  HttpResponse out;
  out.headers.emplace_back("ETag", etag_of(text));
  out.body = std::move(text);
  co_return out;
}

// ---- KMs ----------------------------------------------------------------------------------------

net::awaitable<HttpResponse> list_kms(Api& api, RequestContext& ctx) {
  auto page = page_params(ctx.query, api.options);
  auto connected = ctx.query.get_bool("connected");
  ctx.query.finish();
  auto op = cached_page(api, ctx, query_key("kms", ctx), [page, connected](Core& c) {
    return json::serialize(page_of_map(
        c.network.kms(), page,
        [&](const controller::Km& k) { return !connected || k.connected == *connected; },
        [](const controller::Km& k) { return km_json(k); }));
  });
  co_return co_await std::move(op);
}

net::awaitable<HttpResponse> get_km(Api& api, RequestContext& ctx) {
  ctx.query.finish();
  const auto& id = ctx.param("km_id");
  auto op = api.svc.on_core([&](Core& c) {
    const auto* km = c.network.find_km(id);
    if (km == nullptr) throw NotFound("KM '" + id + "' not found");
    return with_etag(json_response(km_json(*km)), etag_of(km_config(*km)));
  });
  co_return co_await std::move(op);
}

/// A trust level from a request body: an integer in [0, 100], else 400.
int trust_level_field(std::int64_t v) {
  if (v < controller::kMinTrustLevel || v > controller::kMaxTrustLevel) {
    bad_body("field 'trust_level' must be an integer in [0, 100], got " + std::to_string(v));
  }
  return static_cast<int>(v);
}

net::awaitable<HttpResponse> post_km(Api& api, RequestContext& ctx) {
  ctx.query.finish();
  auto body = parse_body_object(ctx.req);
  ObjectReader r(body);
  controller::KmSpec spec{r.id("km_id"), r.opt_string("site").value_or("")};
  spec.lat = r.opt_number("lat");
  spec.lon = r.opt_number("lon");
  if (auto t = r.opt_int("trust_level")) spec.trust_level = trust_level_field(*t);
  spec.tags = r.opt_string_array("tags").value_or(std::vector<std::string>{});
  r.finish();
  auto op = api.svc.facade().write(
      [&](Core& c) {
        if (c.network.find_km(spec.km_id) != nullptr) {
          throw ApiError(409, "conflict", "KM '" + spec.km_id + "' already exists");
        }
        auto doc = c.network.topology();
        doc.kms.push_back(spec);
        controller::validate_topology(doc);
        return doc;
      },
      store_topology,
      [&](CoreChanges& ch, const controller::TopologyDoc& doc) {
        ch.apply_topology(doc);
        const auto* km = ch.network().find_km(spec.km_id);
        return with_etag(json_response(km_json(*km), 201), etag_of(km_config(*km)));
      });
  auto out = co_await std::move(op);
  out.headers.emplace_back("Location", "/api/v1/kms/" + spec.km_id);
  co_return out;
}

net::awaitable<HttpResponse> patch_km(Api& api, RequestContext& ctx) {
  ctx.query.finish();
  const auto id = ctx.param("km_id");
  auto body = parse_body_object(ctx.req);
  ObjectReader r(body);
  if (r.has("km_id")) bad_body("field 'km_id' cannot be changed");
  auto site = r.opt_string("site");
  auto lat = r.opt_number("lat");
  auto lon = r.opt_number("lon");
  bool trust_null = false;
  auto trust = r.opt_number_or_null("trust_level", trust_null);
  auto tags = r.opt_string_array("tags");
  const bool changes = site || lat || lon || trust || trust_null || tags;
  r.finish();
  std::optional<int> trust_level;
  if (trust) {
    if (std::floor(*trust) != *trust) bad_body("field 'trust_level' must be an integer");
    trust_level = trust_level_field(static_cast<std::int64_t>(*trust));
  }
  auto op = api.svc.facade().write(
      [&](Core& c) {
        const auto* km = c.network.find_km(id);
        if (km == nullptr) throw NotFound("KM '" + id + "' not found");
        ctx.check_if_match(etag_of(km_config(*km)));
        auto doc = c.network.topology();
        for (auto& k : doc.kms) {
          if (k.km_id != id) continue;
          if (site) k.site = *site;
          if (lat) k.lat = lat;
          if (lon) k.lon = lon;
          if (trust_level) k.trust_level = trust_level;
          if (trust_null) k.trust_level.reset();
          if (tags) k.tags = *tags;
        }
        controller::validate_topology(doc);
        return doc;
      },
      [&](const controller::TopologyDoc& doc) { return changes ? store_topology(doc) : StoreOp{}; },
      [&](CoreChanges& ch, const controller::TopologyDoc& doc) {
        if (changes) ch.apply_topology(doc);
        const auto* km = ch.network().find_km(id);
        return with_etag(json_response(km_json(*km)), etag_of(km_config(*km)));
      });
  co_return co_await std::move(op);
}

net::awaitable<HttpResponse> delete_km(Api& api, RequestContext& ctx) {
  ctx.query.finish();
  const auto id = ctx.param("km_id");
  auto op = api.svc.facade().write(
      [&](Core& c) {
        const auto* km = c.network.find_km(id);
        if (km == nullptr) throw NotFound("KM '" + id + "' not found");
        ctx.check_if_match(etag_of(km_config(*km)));
        auto doc = c.network.topology();
        for (const auto& l : doc.links) {
          if (l.a == id || l.b == id) {
            throw ApiError(409, "conflict",
                           "KM '" + id + "' still has link '" + l.link_id + "': delete it first");
          }
        }
        for (const auto& a : doc.applications) {
          if (a.km_id == id) {
            throw ApiError(409, "conflict",
                           "KM '" + id + "' still serves application '" + a.sae_id +
                               "' in the topology: remove it first (PUT /api/v1/topology)");
          }
        }
        std::erase_if(doc.kms, [&](const controller::KmSpec& k) { return k.km_id == id; });
        controller::validate_topology(doc);
        return doc;
      },
      store_topology,
      [](CoreChanges& ch, const controller::TopologyDoc& doc) {
        ch.apply_topology(doc);
        return 0;
      });
  co_await std::move(op);
  co_return no_content();
}

// ---- links --------------------------------------------------------------------------------------

net::awaitable<HttpResponse> list_links(Api& api, RequestContext& ctx) {
  auto page = page_params(ctx.query, api.options);
  auto oper = ctx.query.get("oper_state");
  auto admin = ctx.query.get("admin_state");
  auto km = ctx.query.get("km_id");
  ctx.query.finish();
  if (oper && *oper != "up" && *oper != "down" && *oper != "alarm") {
    bad_request("query parameter 'oper_state' must be up, down or alarm");
  }
  std::optional<controller::AdminState> admin_state;
  if (admin) {
    try {
      admin_state = controller::parse_admin_state(*admin);
    } catch (const Error&) {
      bad_request("query parameter 'admin_state' must be enabled, disabled or maintenance");
    }
  }
  auto op = cached_page(api, ctx, query_key("links", ctx), [page, oper, admin_state, km](Core& c) {
    const auto& t = c.network.thresholds();
    return json::serialize(page_of_map(
        c.network.links(), page,
        [&](const controller::Link& l) {
          return (!oper || controller::to_string(l.oper) == *oper) &&
                 (!admin_state || l.admin == *admin_state) &&
                 (!km || l.spec.a == *km || l.spec.b == *km);
        },
        [&](const controller::Link& l) { return link_json(l, t); }));
  });
  co_return co_await std::move(op);
}

net::awaitable<HttpResponse> get_link(Api& api, RequestContext& ctx) {
  ctx.query.finish();
  const auto& id = ctx.param("link_id");
  auto op = api.svc.on_core([&](Core& c) {
    const auto* l = c.network.find_link(id);
    if (l == nullptr) throw NotFound("link '" + id + "' not found");
    return with_etag(json_response(link_json(*l, c.network.thresholds())),
                     etag_of(link_config(*l)));
  });
  co_return co_await std::move(op);
}

/// The writable configuration of a link beyond its spec, read from a body.
struct LinkConfigEdit {
  std::optional<controller::AdminState> admin;
  bool qber_threshold_set = false;
  std::optional<double> qber_threshold;
  bool pool_floor_set = false;
  std::optional<std::uint64_t> pool_floor_bits;
  [[nodiscard]] bool any() const { return admin || qber_threshold_set || pool_floor_set; }
};

LinkConfigEdit read_link_config(ObjectReader& r) {
  LinkConfigEdit e;
  if (auto s = r.opt_string("admin_state")) {
    try {
      e.admin = controller::parse_admin_state(*s);
    } catch (const Error&) {
      bad_body("field 'admin_state' must be enabled, disabled or maintenance, got '" + *s + "'");
    }
  }
  bool null_seen = false;
  e.qber_threshold = r.opt_number_or_null("qber_threshold", null_seen);
  e.qber_threshold_set = e.qber_threshold.has_value() || null_seen;
  if (e.qber_threshold && (*e.qber_threshold <= 0 || *e.qber_threshold > 1)) {
    bad_body("field 'qber_threshold' must be in (0, 1]");
  }
  e.pool_floor_bits = r.opt_uint_or_null("pool_floor_bits", null_seen);
  e.pool_floor_set = e.pool_floor_bits.has_value() || null_seen;
  return e;
}

controller::LinkConfigRecord config_record(const controller::Link& l, const LinkConfigEdit& e) {
  controller::LinkConfigRecord rec;
  rec.link_id = l.spec.link_id;
  rec.admin_state = controller::to_string(e.admin.value_or(l.admin));
  rec.qber_threshold = e.qber_threshold_set ? e.qber_threshold : l.qber_threshold;
  rec.pool_floor_bits = e.pool_floor_set ? e.pool_floor_bits : l.pool_floor_bits;
  return rec;
}

/// The edit as a typed core change.
CoreChanges::LinkConfig link_change(const LinkConfigEdit& e) {
  CoreChanges::LinkConfig c;
  c.admin = e.admin;
  if (e.qber_threshold_set) c.qber_threshold = e.qber_threshold;
  if (e.pool_floor_set) c.pool_floor_bits = e.pool_floor_bits;
  return c;
}

net::awaitable<HttpResponse> post_link(Api& api, RequestContext& ctx) {
  ctx.query.finish();
  auto body = parse_body_object(ctx.req);
  ObjectReader r(body);
  controller::LinkSpec spec;
  spec.link_id = r.id("link_id");
  spec.a = r.id("a");
  spec.b = r.id("b");
  spec.key_rate_bps = r.opt_number("key_rate_bps").value_or(0);
  spec.distance_km = r.opt_number("distance_km").value_or(0);
  spec.qber = r.opt_number("qber").value_or(0);
  spec.weight = r.opt_number("weight").value_or(1);
  auto edit = read_link_config(r);
  r.finish();
  controller::LinkConfigRecord rec;
  rec.link_id = spec.link_id;
  rec.admin_state = controller::to_string(edit.admin.value_or(controller::AdminState::kEnabled));
  rec.qber_threshold = edit.qber_threshold;
  rec.pool_floor_bits = edit.pool_floor_bits;
  auto op = api.svc.facade().write(
      [&](Core& c) {
        if (c.network.find_link(spec.link_id) != nullptr) {
          throw ApiError(409, "conflict", "link '" + spec.link_id + "' already exists");
        }
        for (const auto& end : {spec.a, spec.b}) {
          if (c.network.find_km(end) == nullptr) {
            throw ApiError(400, "invalid-body", "link end '" + end + "' is not a known KM");
          }
        }
        auto doc = c.network.topology();
        doc.links.push_back(spec);
        controller::validate_topology(doc);
        return doc;
      },
      [&](const controller::TopologyDoc& doc) -> StoreOp {
        return [doc, rec, any = edit.any()](controller::Store& s) {
          s.save_topology(doc);
          if (any) s.save_link_config(rec);
        };
      },
      [&](CoreChanges& ch, const controller::TopologyDoc& doc) {
        ch.apply_topology(doc);
        ch.configure_link(spec.link_id, link_change(edit));
        const auto* l = ch.network().find_link(spec.link_id);
        return with_etag(json_response(link_json(*l, ch.network().thresholds()), 201),
                         etag_of(link_config(*l)));
      });
  auto out = co_await std::move(op);
  out.headers.emplace_back("Location", "/api/v1/links/" + spec.link_id);
  co_return out;
}

net::awaitable<HttpResponse> patch_link(Api& api, RequestContext& ctx) {
  ctx.query.finish();
  const auto id = ctx.param("link_id");
  auto body = parse_body_object(ctx.req);
  ObjectReader r(body);
  for (const char* ro : {"link_id", "a", "b"}) {
    if (r.has(ro)) {
      bad_body(std::string("field '") + ro +
               "' cannot be changed (delete the link and create it again)");
    }
  }
  auto rate = r.opt_number("key_rate_bps");
  auto distance = r.opt_number("distance_km");
  auto qber = r.opt_number("qber");
  auto weight = r.opt_number("weight");
  auto edit = read_link_config(r);
  r.finish();
  const bool spec_change = rate || distance || qber || weight;
  struct Plan {
    controller::TopologyDoc doc;
    controller::LinkConfigRecord rec;
  };
  auto op = api.svc.facade().write(
      [&](Core& c) {
        const auto* l = c.network.find_link(id);
        if (l == nullptr) throw NotFound("link '" + id + "' not found");
        ctx.check_if_match(etag_of(link_config(*l)));
        Plan p;
        p.doc = c.network.topology();
        for (auto& s : p.doc.links) {
          if (s.link_id != id) continue;
          if (rate) s.key_rate_bps = *rate;
          if (distance) s.distance_km = *distance;
          if (qber) s.qber = *qber;
          if (weight) s.weight = *weight;
        }
        controller::validate_topology(p.doc);
        p.rec = config_record(*l, edit);
        return p;
      },
      [&](const Plan& plan) -> StoreOp {
        return [plan, spec_change, any = edit.any()](controller::Store& s) {
          if (spec_change) s.save_topology(plan.doc);
          if (any) s.save_link_config(plan.rec);
        };
      },
      [&](CoreChanges& ch, const Plan& plan) {
        if (spec_change) ch.apply_topology(plan.doc);
        ch.configure_link(id, link_change(edit));
        const auto* l = ch.network().find_link(id);
        return with_etag(json_response(link_json(*l, ch.network().thresholds())),
                         etag_of(link_config(*l)));
      });
  co_return co_await std::move(op);
}

net::awaitable<HttpResponse> delete_link(Api& api, RequestContext& ctx) {
  ctx.query.finish();
  const auto id = ctx.param("link_id");
  auto op = api.svc.facade().write(
      [&](Core& c) {
        const auto* l = c.network.find_link(id);
        if (l == nullptr) throw NotFound("link '" + id + "' not found");
        ctx.check_if_match(etag_of(link_config(*l)));
        auto doc = c.network.topology();
        std::erase_if(doc.links, [&](const controller::LinkSpec& s) { return s.link_id == id; });
        controller::validate_topology(doc);
        return doc;
      },
      [&](const controller::TopologyDoc& doc) -> StoreOp {
        return [doc, id](controller::Store& s) {
          s.save_topology(doc);
          s.delete_link_config(id);
        };
      },
      [](CoreChanges& ch, const controller::TopologyDoc& doc) {
        ch.apply_topology(doc);
        return 0;
      });
  co_await std::move(op);
  co_return no_content();
}

// ---- thresholds ---------------------------------------------------------------------------------

net::awaitable<HttpResponse> get_thresholds(Api& api, RequestContext& ctx) {
  ctx.query.finish();
  auto op = api.svc.on_core([](Core& c) {
    auto j = thresholds_json(c.network.thresholds());
    return with_etag(json_response(j), etag_of(json::serialize(j)));
  });
  co_return co_await std::move(op);
}

net::awaitable<HttpResponse> put_thresholds(Api& api, RequestContext& ctx) {
  ctx.query.finish();
  auto body = parse_body_object(ctx.req);
  ObjectReader r(body);
  controller::Thresholds t;
  auto qber = r.opt_number("qber");
  auto floor = r.opt_uint("pool_floor_bits");
  auto hysteresis = r.opt_number("qber_hysteresis");
  r.finish();
  if (!qber || !floor || !hysteresis) {
    bad_body("fields 'qber', 'pool_floor_bits' and 'qber_hysteresis' are required");
  }
  if (*qber <= 0 || *qber > 1) bad_body("field 'qber' must be in (0, 1]");
  if (*hysteresis < 0 || *hysteresis >= 1) bad_body("field 'qber_hysteresis' must be in [0, 1)");
  t.qber = *qber;
  t.pool_floor_bits = *floor;
  t.qber_hysteresis = *hysteresis;
  // Stored before they take effect: a store outage answers 503 and changes nothing.
  auto op = api.svc.facade().write(
      [&](Core& c) {
        ctx.check_if_match(etag_of(json::serialize(thresholds_json(c.network.thresholds()))));
        return t;
      },
      [](const controller::Thresholds& th) -> StoreOp {
        return [th](controller::Store& s) { s.save_thresholds(th); };
      },
      [](CoreChanges& ch, const controller::Thresholds& th) {
        ch.set_thresholds(th);
        auto j = thresholds_json(ch.network().thresholds());
        return with_etag(json_response(j), etag_of(json::serialize(j)));
      });
  co_return co_await std::move(op);
}

// ---- applications -------------------------------------------------------------------------------

net::awaitable<HttpResponse> list_applications(Api& api, RequestContext& ctx) {
  auto page = page_params(ctx.query, api.options);
  auto km = ctx.query.get("km_id");
  ctx.query.finish();
  auto op = api.svc.on_core([&](Core& c) {
    std::map<std::string, std::string> declared;
    for (const auto& a : c.network.topology().applications) declared[a.sae_id] = a.km_id;
    std::map<std::string, json::object> all;
    for (const auto& [sae, serving] : c.network.applications()) {
      if (km && serving != *km) continue;
      const auto* k = c.network.find_km(serving);
      bool attached = false;
      if (k != nullptr) {
        attached = std::find(k->attached.begin(), k->attached.end(), sae) != k->attached.end();
      }
      auto d = declared.find(sae);
      all[sae] = json::object{
          {"sae_id", sae},
          {"km_id", serving},
          {"declared_km_id", d == declared.end() ? json::value(nullptr) : json::value(d->second)},
          {"attached", attached},
          {"km_connected", k != nullptr && k->connected}};
    }
    return json_response(page_of_map(
        all, page, [](const json::object&) { return true; },
        [](const json::object& o) { return o; }));
  });
  co_return co_await std::move(op);
}

}  // namespace

void add_network_routes(Router& r) {
  r.add("GET", "/api/v1/topology", false, false, get_topology);
  r.add("PUT", "/api/v1/topology", true, false, put_topology);
  r.add("GET", "/api/v1/kms", false, false, list_kms);
  r.add("POST", "/api/v1/kms", true, false, post_km);
  r.add("GET", "/api/v1/kms/{km_id}", false, false, get_km);
  r.add("PATCH", "/api/v1/kms/{km_id}", true, false, patch_km);
  r.add("DELETE", "/api/v1/kms/{km_id}", true, false, delete_km);
  r.add("GET", "/api/v1/links", false, false, list_links);
  r.add("POST", "/api/v1/links", true, false, post_link);
  r.add("GET", "/api/v1/links/{link_id}", false, false, get_link);
  r.add("PATCH", "/api/v1/links/{link_id}", true, false, patch_link);
  r.add("DELETE", "/api/v1/links/{link_id}", true, false, delete_link);
  r.add("GET", "/api/v1/thresholds", false, false, get_thresholds);
  r.add("PUT", "/api/v1/thresholds", true, false, put_thresholds);
  r.add("GET", "/api/v1/applications", false, false, list_applications);
}

}  // namespace qkdn::northbound
