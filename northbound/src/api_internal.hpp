// The northbound API's request pipeline and route table, shared by the handler files. Private to
// qkdn_northbound.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/json.hpp>

#include "api_util.hpp"
#include "auth.hpp"
#include "http_types.hpp"
#include "idempotency.hpp"
#include "qkdn/northbound/api_server.hpp"
#include "qkdn/service/controller_facade.hpp"
#include "qkdn/service/controller_service.hpp"

namespace qkdn::northbound {

class Api;

/// One request on its way through the pipeline.
struct RequestContext {
  HttpRequest req;
  std::string path;                           ///< decoded path
  std::map<std::string, std::string> params;  ///< path parameters by name
  Query query;
  std::string actor;  ///< token name, "anonymous" or "insecure"
  Role role = Role::kViewer;

  /// A path parameter (the route guarantees it exists).
  [[nodiscard]] const std::string& param(const std::string& name) const { return params.at(name); }
  /// Checks If-Match against the resource's current ETag (nullopt: it does not exist); 412 on
  /// mismatch. No header: always passes.
  void check_if_match(const std::optional<std::string>& current) const;
};

using Handler = std::function<net::awaitable<HttpResponse>(Api&, RequestContext&)>;

/// Who admit() authenticated, handed to handle() with the request (HttpRequest::admission).
struct Admitted {
  std::string actor;
  Role role = Role::kViewer;
};

/// One entry of the route table.
struct RouteEntry {
  ApiRoute info;
  std::vector<std::string> segments;  ///< "{name}" marks a parameter
  Handler handler;
};

/// Path-template router. Matching is exact on literal segments; a parameter matches one
/// non-empty segment.
class Router {
 public:
  void add(std::string method, std::string path, bool write, bool open, Handler handler);
  /// The route for (method, segments), filling params. Throws ApiError 404 (no path) or 405
  /// (path exists, not the method; with Allow).
  const RouteEntry& match(std::string_view method, const std::vector<std::string>& segments,
                          std::map<std::string, std::string>& params) const;
  [[nodiscard]] std::vector<ApiRoute> routes() const;

 private:
  std::vector<RouteEntry> routes_;
};

/// A cached serialized list page.
struct CachedPage {
  std::chrono::steady_clock::time_point at{};
  std::shared_ptr<const std::string> body;
  std::string etag;         ///< strong ETag of `body` (computed once per rebuild)
  bool refreshing = false;  ///< one request is rebuilding it; others serve `body` meanwhile
};

/// The API: options, tokens, route table, caches. Shared by the HTTP handler and handlers.
class Api : public std::enable_shared_from_this<Api> {
 public:
  Api(service::ControllerService& svc, ApiOptions options);

  /// Decides on a request from its header (the HttpServer's admission hook): authentication
  /// and authorization (401/403, audited, before any of the body is read) and the body limit of
  /// its route (max_body_bytes for PUT /api/v1/topology, max_small_body_bytes elsewhere).
  qkdn::net::HttpAdmission admit(const HttpRequest& head);
  /// Serves one admitted request (the HttpServer's handler).
  net::awaitable<HttpResponse> handle(HttpRequest req);
  /// Authenticates the request's bearer token for `route` and fills ctx.actor / ctx.role;
  /// the 401/403 to answer when refused.
  std::optional<ApiError> authorize(RequestContext& ctx, const RouteEntry& route) const;

  service::ControllerService& svc;
  ApiOptions options;
  TokenTable tokens;
  bool tokens_configured = false;
  Router router;
  IdempotencyStore idempotency;

  /// Page cache of hot lists (kms, links): key -> page.
  std::mutex cache_mu;  // guards page_cache and cache_generation
  std::map<std::string, CachedPage> page_cache;
  /// Bumped (and the cache emptied) when an API write ends, so a client reads its own writes:
  /// a page built before the write is neither served nor stored afterwards.
  std::uint64_t cache_generation = 0;
  void invalidate_pages();

  /// Records an audit event (actor, "METHOD /template", path, status, detail).
  void audit(const RequestContext& ctx, const std::string& action, int status,
             const std::string& detail);

 private:
  net::awaitable<HttpResponse> dispatch(RequestContext& ctx, const RouteEntry& route);
};

/// Registers the handlers of each area.
void add_network_routes(Router& r);       // topology, KMs, links, thresholds, applications
void add_routing_routes(Router& r);       // routes, pinned routes, policy, schedules
void add_state_routes(Router& r);         // health, sessions, relays, alarms, accounting, audit
void add_ui_routes(Router& r);            // the network view's static files (/ui/)
void add_interworking_routes(Router& r);  // peers, inter-QKDN links (docs/cxi.md)

/// Pagination parameters from `limit` and `cursor`.
struct PageParams {
  std::size_t limit = 100;
  std::optional<std::string> after;  ///< decoded cursor key
};
PageParams page_params(Query& q, const ApiOptions& options);
/// {"items": items, "next_cursor": key or null}.
json::object page_json(json::array items, const std::optional<std::string>& next_key);

/// Pages through a map ordered by its key (the cursor key), keeping items that pass `keep`.
template <class Map, class Filter, class ToJson>
json::object page_of_map(const Map& m, const PageParams& p, Filter keep, ToJson to_json) {
  json::array items;
  std::optional<std::string> next;
  auto it = p.after ? m.upper_bound(*p.after) : m.begin();
  std::string last;
  for (; it != m.end(); ++it) {
    if (!keep(it->second)) continue;
    if (items.size() == p.limit) {
      next = last;
      break;
    }
    items.push_back(to_json(it->second));
    last = it->first;
  }
  return page_json(std::move(items), next);
}

/// Adds an ETag header.
inline HttpResponse with_etag(HttpResponse r, const std::string& etag) {
  r.headers.emplace_back("ETag", etag);
  return r;
}

/// 204 without a body.
inline HttpResponse no_content() {
  HttpResponse out;
  out.status = 204;
  out.content_type.clear();
  return out;
}

}  // namespace qkdn::northbound
