// Interworking between QKDNs (issue 16, docs/cxi.md, docs/topology.md "Interworking"): peer
// controllers and inter-QKDN links. Both are parts of the topology document, so every write is
// one ControllerFacade::write that builds the new document, validates it whole
// (validate_topology) and stores and applies it as a topology change.
#include <algorithm>
#include <chrono>
#include <map>

#include "api_internal.hpp"
#include "qkdn/controller/error.hpp"
#include "qkdn/service/interworking_relay.hpp"
#include "qkdn/southbound/topology_json.hpp"

namespace qkdn::northbound {

namespace {

using service::Core;
using service::CoreChanges;
using service::StoreOp;

StoreOp store_topology(const controller::TopologyDoc& doc) {
  return [doc](controller::Store& s) { s.save_topology(doc); };
}

json::object live_json(const Api& api, const std::string& qkdn_id) {
  std::optional<PeerLiveState> live;
  if (api.options.peer_state) live = api.options.peer_state(qkdn_id);
  if (!live) return json::object{{"state", "unknown"}};
  json::object links;
  for (const auto& [id, st] : live->inter_qkdn_links) links[id] = st;
  // The last Mxi summary of the peer with its age (docs/cxi.md clause 5.8), null when none.
  json::value summary = nullptr;
  if (!live->summary_json.empty() && live->summary_received_ms >= 0) {
    boost::system::error_code ec;
    auto v = json::parse(live->summary_json, ec);
    if (!ec && v.is_object()) {
      const auto now = std::chrono::duration_cast<std::chrono::milliseconds>(
                           std::chrono::system_clock::now().time_since_epoch())
                           .count();
      v.as_object()["received_ms"] = live->summary_received_ms;
      v.as_object()["age_ms"] = std::max<std::int64_t>(0, now - live->summary_received_ms);
      summary = std::move(v);
    }
  }
  return json::object{{"state", live->state},
                      {"last_heard_ms", live->last_heard_ms < 0 ? json::value(nullptr)
                                                                : json::value(live->last_heard_ms)},
                      {"reachable_saes", live->reachable_saes},
                      {"sessions_opened", live->sessions_opened},
                      {"inter_qkdn_links", std::move(links)},
                      {"summary", std::move(summary)}};
}

json::object peer_json(const Api& api, const controller::PeerSpec& p,
                       const std::vector<controller::InterQkdnLinkSpec>& links) {
  auto o = southbound::peer_to_json(p);
  json::array ids;
  for (const auto& l : links) {
    if (l.peer_qkdn_id == p.qkdn_id) ids.emplace_back(l.link_id);
  }
  o["inter_qkdn_links"] = std::move(ids);
  o["live"] = live_json(api, p.qkdn_id);
  return o;
}

const controller::PeerSpec* find_peer(const controller::Network& n, const std::string& id) {
  for (const auto& p : n.peers()) {
    if (p.qkdn_id == id) return &p;
  }
  return nullptr;
}

const controller::InterQkdnLinkSpec* find_inter_link(const controller::Network& n,
                                                     const std::string& id) {
  for (const auto& l : n.inter_qkdn_links()) {
    if (l.link_id == id) return &l;
  }
  return nullptr;
}

// ---- peers --------------------------------------------------------------------------------------

net::awaitable<HttpResponse> list_peers(Api& api, RequestContext& ctx) {
  auto page = page_params(ctx.query, api.options);
  ctx.query.finish();
  auto op = api.svc.on_core([&](Core& c) {
    std::map<std::string, json::object> all;
    for (const auto& p : c.network.peers()) {
      all[p.qkdn_id] = peer_json(api, p, c.network.inter_qkdn_links());
    }
    auto out = page_of_map(
        all, page, [](const json::object&) { return true; },
        [](const json::object& o) { return o; });
    out["qkdn_id"] = c.network.qkdn_id();
    return json_response(out);
  });
  co_return co_await std::move(op);
}

net::awaitable<HttpResponse> get_peer(Api& api, RequestContext& ctx) {
  ctx.query.finish();
  const auto id = ctx.param("qkdn_id");
  auto op = api.svc.on_core([&](Core& c) {
    const auto* p = find_peer(c.network, id);
    if (p == nullptr) throw NotFound("peer '" + id + "' not found");
    return json_response(peer_json(api, *p, c.network.inter_qkdn_links()));
  });
  co_return co_await std::move(op);
}

net::awaitable<HttpResponse> post_peer(Api& api, RequestContext& ctx) {
  ctx.query.finish();
  auto body = parse_body_object(ctx.req);
  controller::PeerSpec spec;
  try {
    spec = southbound::parse_peer(body, "body", /*strict=*/true);
  } catch (const InvalidArgument& e) {
    bad_body(e.what());
  }
  auto op = api.svc.facade().write(
      [&](Core& c) {
        if (find_peer(c.network, spec.qkdn_id) != nullptr) {
          throw ApiError(409, "conflict", "peer '" + spec.qkdn_id + "' already exists");
        }
        auto doc = c.network.topology();
        doc.peers.push_back(spec);
        try {
          controller::validate_topology(doc);
        } catch (const InvalidArgument& e) {
          bad_body(e.what());
        }
        return doc;
      },
      [&](const controller::TopologyDoc& doc) { return store_topology(doc); },
      [&](CoreChanges& ch, const controller::TopologyDoc& doc) {
        ch.apply_topology(doc);
        const auto* p = find_peer(ch.network(), spec.qkdn_id);
        return json_response(peer_json(api, *p, ch.network().inter_qkdn_links()), 201);
      });
  auto out = co_await std::move(op);
  out.headers.emplace_back("Location", "/api/v1/peers/" + spec.qkdn_id);
  co_return out;
}

net::awaitable<HttpResponse> delete_peer(Api& api, RequestContext& ctx) {
  ctx.query.finish();
  const auto id = ctx.param("qkdn_id");
  auto op = api.svc.facade().write(
      [&](Core& c) {
        if (find_peer(c.network, id) == nullptr) throw NotFound("peer '" + id + "' not found");
        for (const auto& l : c.network.inter_qkdn_links()) {
          if (l.peer_qkdn_id == id) {
            throw ApiError(409, "conflict",
                           "peer '" + id + "' still has inter-QKDN link '" + l.link_id +
                               "' (delete its links first)");
          }
        }
        auto doc = c.network.topology();
        std::erase_if(doc.peers, [&](const controller::PeerSpec& p) { return p.qkdn_id == id; });
        controller::validate_topology(doc);
        return doc;
      },
      [&](const controller::TopologyDoc& doc) { return store_topology(doc); },
      [](CoreChanges& ch, const controller::TopologyDoc& doc) {
        ch.apply_topology(doc);
        return 0;
      });
  co_await std::move(op);
  co_return no_content();
}

// ---- inter-QKDN links ---------------------------------------------------------------------------

json::object inter_link_json(const Api& api, const controller::InterQkdnLinkSpec& l) {
  auto o = southbound::inter_qkdn_link_to_json(l);
  std::string state = "unknown";
  if (api.options.peer_state) {
    if (auto live = api.options.peer_state(l.peer_qkdn_id)) {
      state = "down";
      for (const auto& [id, st] : live->inter_qkdn_links) {
        if (id == l.link_id) state = st;
      }
    }
  }
  o["state"] = state;
  return o;
}

net::awaitable<HttpResponse> list_inter_links(Api& api, RequestContext& ctx) {
  auto page = page_params(ctx.query, api.options);
  auto peer = ctx.query.get("peer_qkdn_id");
  ctx.query.finish();
  auto op = api.svc.on_core([&](Core& c) {
    std::map<std::string, json::object> all;
    for (const auto& l : c.network.inter_qkdn_links()) {
      if (peer && l.peer_qkdn_id != *peer) continue;
      all[l.link_id] = inter_link_json(api, l);
    }
    return json_response(page_of_map(
        all, page, [](const json::object&) { return true; },
        [](const json::object& o) { return o; }));
  });
  co_return co_await std::move(op);
}

net::awaitable<HttpResponse> get_inter_link(Api& api, RequestContext& ctx) {
  ctx.query.finish();
  const auto id = ctx.param("link_id");
  auto op = api.svc.on_core([&](Core& c) {
    const auto* l = find_inter_link(c.network, id);
    if (l == nullptr) throw NotFound("inter-QKDN link '" + id + "' not found");
    return json_response(inter_link_json(api, *l));
  });
  co_return co_await std::move(op);
}

net::awaitable<HttpResponse> post_inter_link(Api& api, RequestContext& ctx) {
  ctx.query.finish();
  auto body = parse_body_object(ctx.req);
  controller::InterQkdnLinkSpec spec;
  try {
    spec = southbound::parse_inter_qkdn_link(body, "body", /*strict=*/true);
  } catch (const InvalidArgument& e) {
    bad_body(e.what());
  }
  auto op = api.svc.facade().write(
      [&](Core& c) {
        if (find_inter_link(c.network, spec.link_id) != nullptr ||
            c.network.find_link(spec.link_id) != nullptr) {
          throw ApiError(409, "conflict", "link '" + spec.link_id + "' already exists");
        }
        auto doc = c.network.topology();
        doc.inter_qkdn_links.push_back(spec);
        try {
          controller::validate_topology(doc);
        } catch (const InvalidArgument& e) {
          bad_body(e.what());
        }
        return doc;
      },
      [&](const controller::TopologyDoc& doc) { return store_topology(doc); },
      [&](CoreChanges& ch, const controller::TopologyDoc& doc) {
        ch.apply_topology(doc);
        return json_response(inter_link_json(api, spec), 201);
      });
  auto out = co_await std::move(op);
  out.headers.emplace_back("Location", "/api/v1/inter-qkdn-links/" + spec.link_id);
  co_return out;
}

net::awaitable<HttpResponse> delete_inter_link(Api& api, RequestContext& ctx) {
  ctx.query.finish();
  const auto id = ctx.param("link_id");
  auto op = api.svc.facade().write(
      [&](Core& c) {
        if (find_inter_link(c.network, id) == nullptr) {
          throw NotFound("inter-QKDN link '" + id + "' not found");
        }
        auto doc = c.network.topology();
        std::erase_if(doc.inter_qkdn_links,
                      [&](const controller::InterQkdnLinkSpec& l) { return l.link_id == id; });
        controller::validate_topology(doc);
        return doc;
      },
      [&](const controller::TopologyDoc& doc) { return store_topology(doc); },
      [](CoreChanges& ch, const controller::TopologyDoc& doc) {
        ch.apply_topology(doc);
        return 0;
      });
  co_await std::move(op);
  co_return no_content();
}

json::object relay_json(const service::InterworkingRelayRecord& r) {
  return json::object{
      {"relay_id", r.relay_id},    {"role", r.role},       {"peer_qkdn_id", r.peer_qkdn_id},
      {"src_sae", r.src_sae},      {"dst_sae", r.dst_sae}, {"link_id", r.link_id},
      {"src_km", r.src_km},        {"dst_km", r.dst_km},   {"number_of_keys", r.number_of_keys},
      {"state", r.state},          {"reason", r.reason},   {"created_ms", r.created_ms},
      {"updated_ms", r.updated_ms}};
}

// GET /api/v1/interworking/relays: the Kxi-1 relays (newest 1024), filters role, state,
// peer_qkdn_id; paged by "<relay_id>/<role>".
net::awaitable<HttpResponse> list_iw_relays(Api& api, RequestContext& ctx) {
  auto page = page_params(ctx.query, api.options);
  auto role = ctx.query.get("role");
  auto state = ctx.query.get("state");
  auto peer = ctx.query.get("peer_qkdn_id");
  ctx.query.finish();
  std::map<std::string, json::object> all;
  if (api.options.interworking_relays) {
    for (const auto& r : api.options.interworking_relays()) {
      if ((role && r.role != *role) || (state && r.state != *state) ||
          (peer && r.peer_qkdn_id != *peer)) {
        continue;
      }
      all[r.relay_id + "/" + r.role] = relay_json(r);
    }
  }
  co_return json_response(page_of_map(
      all, page, [](const json::object&) { return true; },
      [](const json::object& o) { return o; }));
}

}  // namespace

void add_interworking_routes(Router& r) {
  r.add("GET", "/api/v1/interworking/relays", false, false, list_iw_relays);
  r.add("GET", "/api/v1/peers", false, false, list_peers);
  r.add("POST", "/api/v1/peers", true, false, post_peer);
  r.add("GET", "/api/v1/peers/{qkdn_id}", false, false, get_peer);
  r.add("DELETE", "/api/v1/peers/{qkdn_id}", true, false, delete_peer);
  r.add("GET", "/api/v1/inter-qkdn-links", false, false, list_inter_links);
  r.add("POST", "/api/v1/inter-qkdn-links", true, false, post_inter_link);
  r.add("GET", "/api/v1/inter-qkdn-links/{link_id}", false, false, get_inter_link);
  r.add("DELETE", "/api/v1/inter-qkdn-links/{link_id}", true, false, delete_inter_link);
}

}  // namespace qkdn::northbound
