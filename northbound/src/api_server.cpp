// The request pipeline: parse target -> route -> authenticate/authorize -> idempotency -> handler
// -> audit. Problems are rendered here, once.
#include "qkdn/northbound/api_server.hpp"

#include <algorithm>
#include <any>
#include <chrono>
#include <future>
#include <iostream>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/url/parse.hpp>

#include "api_internal.hpp"
#include "qkdn/controller/error.hpp"
#include "qkdn/net/tls.hpp"
#include "qkdn/service/leadership.hpp"
#include "qkdn/service/metrics.hpp"

namespace qkdn::northbound {

extern const char* const kOpenApiDocument;  // openapi_embed.cpp, generated at build time

// ---- RequestContext ---------------------------------------------------------------------------

void RequestContext::check_if_match(const std::optional<std::string>& current) const {
  auto it = req.headers.find("if-match");
  if (it == req.headers.end()) return;
  if (!if_match_ok(it->second, current)) {
    throw ApiError(412, "precondition-failed",
                   current
                       ? "If-Match " + it->second + " does not match the current ETag " + *current
                       : "If-Match given but the resource does not exist");
  }
}

// ---- Router -----------------------------------------------------------------------------------

void Router::add(std::string method, std::string path, bool write, bool open, Handler handler) {
  RouteEntry e;
  e.info = ApiRoute{std::move(method), std::move(path), write, open};
  const std::string& p = e.info.path;
  std::size_t pos = 1;
  while (pos <= p.size()) {
    auto slash = p.find('/', pos);
    if (slash == std::string::npos) slash = p.size();
    e.segments.push_back(p.substr(pos, slash - pos));
    pos = slash + 1;
  }
  e.handler = std::move(handler);
  routes_.push_back(std::move(e));
}

const RouteEntry& Router::match(std::string_view method, const std::vector<std::string>& segments,
                                std::map<std::string, std::string>& params) const {
  std::string allow;
  const RouteEntry* found = nullptr;
  std::map<std::string, std::string> found_params;
  for (const auto& r : routes_) {
    if (r.segments.size() != segments.size()) continue;
    std::map<std::string, std::string> p;
    bool ok = true;
    for (std::size_t i = 0; i < segments.size() && ok; ++i) {
      const auto& t = r.segments[i];
      if (t.size() > 2 && t.front() == '{' && t.back() == '}') {
        if (segments[i].empty()) ok = false;
        p[t.substr(1, t.size() - 2)] = segments[i];
      } else {
        ok = t == segments[i];
      }
    }
    if (!ok) continue;
    if (r.info.method == method) {
      if (found == nullptr) {
        found = &r;
        found_params = std::move(p);
      }
    } else {
      allow += (allow.empty() ? "" : ", ") + r.info.method;
    }
  }
  if (found != nullptr) {
    params = std::move(found_params);
    return *found;
  }
  if (!allow.empty()) {
    throw ApiError(405, "method-not-allowed", std::string(method) + " is not served here")
        .with_header("Allow", allow);
  }
  throw ApiError(404, "not-found", "no such resource");
}

std::vector<ApiRoute> Router::routes() const {
  std::vector<ApiRoute> out;
  out.reserve(routes_.size());
  for (const auto& r : routes_) out.push_back(r.info);
  return out;
}

// ---- pagination -------------------------------------------------------------------------------

PageParams page_params(Query& q, const ApiOptions& options) {
  PageParams p;
  p.limit = static_cast<std::size_t>(
      q.get_uint("limit", 1, options.max_page_limit).value_or(options.default_page_limit));
  if (auto c = q.get("cursor"); c && !c->empty()) p.after = decode_cursor(*c);
  return p;
}

json::object page_json(json::array items, const std::optional<std::string>& next_key) {
  json::object o;
  o["items"] = std::move(items);
  o["next_cursor"] = next_key ? json::value(encode_cursor(*next_key)) : json::value(nullptr);
  return o;
}

// ---- Api --------------------------------------------------------------------------------------

namespace {

/// Methods as metric labels: a closed set.
std::string_view method_label(std::string_view m) {
  for (std::string_view k : {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"}) {
    if (m == k) return k;
  }
  return "OTHER";
}

bool valid_idempotency_key(std::string_view k) {
  if (k.empty() || k.size() > 255) return false;
  for (char c : k) {
    if (c < 0x21 || c > 0x7E) return false;
  }
  return true;
}

ApiError standby_refusal(service::ControllerService& svc) {
  std::string leader;
  std::string holder;
  if (svc.options().leadership) {
    const auto st = svc.options().leadership->status();
    leader = st.leader_api_address;
    holder = st.leader_holder;
  }
  ApiError e(503, "not_leader",
             leader.empty() && holder.empty()
                 ? std::string("this controller is a standby and no leader is known yet; retry")
                 : "this controller is a standby; the leader is " + holder +
                       (leader.empty() ? std::string{} : " with its API at " + leader));
  e.with_header("Retry-After", "1");
  if (!leader.empty()) e.with_header("X-Qkdn-Leader", leader);
  return e;
}

HttpResponse error_response(const ApiError& e, std::string_view instance) {
  auto r = problem_response(e.status(), e.kind(), e.detail(), instance);
  for (const auto& h : e.headers()) r.headers.push_back(h);
  return r;
}

// The problem kind of an error: its name from the one table of qkdn/base/error.hpp, in the
// hyphenated style of problem types ("not_found" -> "not-found").
std::string kind_of(ErrorCode c) {
  std::string kind(error_name(c));
  std::replace(kind.begin(), kind.end(), '_', '-');
  return kind;
}

void add_open_routes(Router& r) {
  r.add("GET", "/api/v1/openapi.json", false, true,
        [](Api&, RequestContext& ctx) -> net::awaitable<HttpResponse> {
          ctx.query.finish();
          HttpResponse out;
          out.body = kOpenApiDocument;
          co_return out;
        });
  r.add("GET", "/metrics", false, true,
        [](Api& api, RequestContext& ctx) -> net::awaitable<HttpResponse> {
          ctx.query.finish();
          auto op = api.svc.metrics_text();
          HttpResponse out;
          out.body = co_await std::move(op);
          out.content_type = "text/plain; version=0.0.4; charset=utf-8";
          co_return out;
        });
}

}  // namespace

Api::Api(service::ControllerService& s, ApiOptions o)
    : svc(s),
      options(std::move(o)),
      idempotency(options.idempotency_entries, options.idempotency_ttl) {
  if (!options.tokens_file.empty()) {
    tokens = TokenTable::load(options.tokens_file);
    tokens_configured = true;
  }
  if (options.max_page_limit < 1 || options.default_page_limit < 1 ||
      options.default_page_limit > options.max_page_limit) {
    throw InvalidArgument("api: page limits must satisfy 1 <= default <= max");
  }
  if (options.idempotency_entries < 1) throw InvalidArgument("api: idempotency_entries >= 1");
  add_open_routes(router);
  add_network_routes(router);
  add_routing_routes(router);
  add_state_routes(router);
  add_ui_routes(router);
  add_interworking_routes(router);
}

void Api::audit(const RequestContext& ctx, const std::string& action, int status,
                const std::string& detail) {
  controller::AuditRecord rec;
  rec.at = std::chrono::system_clock::now();
  rec.actor = ctx.actor;
  rec.action = action;
  rec.resource = ctx.path;
  rec.outcome = std::to_string(status);
  rec.detail = detail;
  rec.remote = ctx.req.remote;
  svc.audit(std::move(rec));
}

void Api::invalidate_pages() {
  std::lock_guard lock(cache_mu);
  page_cache.clear();
  ++cache_generation;
}

net::awaitable<HttpResponse> Api::dispatch(RequestContext& ctx, const RouteEntry& route) {
  if (!route.info.write) {
    auto op = route.handler(*this, ctx);
    co_return co_await std::move(op);
  }
  // A write invalidates the cached list pages whether it succeeded or failed half-way (a failed
  // write changes nothing, and an extra rebuild costs one page).
  std::exception_ptr failure;
  HttpResponse response;
  try {
    auto op = route.handler(*this, ctx);
    response = co_await std::move(op);
  } catch (...) {
    failure = std::current_exception();
  }
  invalidate_pages();
  if (failure) std::rethrow_exception(failure);
  co_return response;
}

std::optional<ApiError> Api::authorize(RequestContext& ctx, const RouteEntry& route) const {
  if (route.info.open) return std::nullopt;
  if (options.insecure) {
    ctx.actor = "insecure";
    ctx.role = Role::kAdmin;
    return std::nullopt;
  }
  const bool write = route.info.write;
  const std::string auth = ctx.req.header("authorization");
  std::string token;
  if (auth.size() > 7 &&
      (auth.compare(0, 7, "Bearer ") == 0 || auth.compare(0, 7, "bearer ") == 0)) {
    token = auth.substr(7);
  }
  if (tokens_configured) {
    if (auth.empty()) {
      return ApiError(401, "unauthorized", "missing bearer token")
          .with_header("WWW-Authenticate", "Bearer realm=\"qkdn\"");
    }
    auto entry = tokens.find(token);
    if (!entry) {
      return ApiError(401, "unauthorized", "invalid bearer token")
          .with_header("WWW-Authenticate", "Bearer realm=\"qkdn\", error=\"invalid_token\"");
    }
    ctx.actor = entry->name;
    ctx.role = entry->role;
  } else if (write) {
    return ApiError(401, "unauthorized",
                    "writes need an admin token but no API tokens are configured (start "
                    "the controller with --api-tokens FILE)")
        .with_header("WWW-Authenticate", "Bearer realm=\"qkdn\"");
  }
  if (write && ctx.role != Role::kAdmin) {
    return ApiError(403, "forbidden",
                    "token '" + ctx.actor + "' has role viewer; writes need admin");
  }
  return std::nullopt;
}

qkdn::net::HttpAdmission Api::admit(const HttpRequest& head) {
  // Runs on the header alone: a refused request's body is never read, and only the routes that
  // take large documents get the large body limit.
  qkdn::net::HttpAdmission out;
  out.body_limit = std::min(options.max_small_body_bytes, options.max_body_bytes);
  RequestContext ctx;
  ctx.req = head;
  ctx.actor = "anonymous";
  const RouteEntry* route = nullptr;
  try {
    auto url = boost::urls::parse_origin_form(ctx.req.target);
    if (!url) return out;  // handle() answers 400
    std::vector<std::string> segments;
    for (auto s : url->segments()) segments.push_back(std::string(s));
    ctx.path = std::string(url->encoded_path());
    route = &router.match(ctx.req.method, segments, ctx.params);
  } catch (const std::exception&) {
    return out;  // 404 / 405: handle() answers them (with the small body limit)
  }
  if (auto refused = authorize(ctx, *route)) {
    const std::string action = route->info.method + " " + route->info.path;
    const int status = refused->status();
    audit(ctx, route->info.write ? action : "auth_failure " + action, status, refused->detail());
    out.refusal = error_response(*refused, ctx.path);
    return out;
  }
  if (route->info.method == "PUT" && route->info.path == "/api/v1/topology") {
    out.body_limit = options.max_body_bytes;
  }
  out.authenticated = options.insecure || (tokens_configured && !route->info.open);
  out.data = Admitted{ctx.actor, ctx.role};
  return out;
}

// GCC 12 reports -Wmismatched-new-delete at the end of this coroutine: a false positive about
// Asio's awaitable frame allocator (its operator new and delete are a matched pair).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif
net::awaitable<HttpResponse> Api::handle(HttpRequest req) {
  RequestContext ctx;
  ctx.req = std::move(req);
  ctx.actor = "anonymous";
  const RouteEntry* route = nullptr;
  std::string action;
  HttpResponse out;
  std::string idem_key;
  bool idem_reserved = false;
  bool replayed = false;
  std::optional<ApiError> failure;
  try {
    auto url = boost::urls::parse_origin_form(ctx.req.target);
    if (!url) bad_request("malformed request target");
    std::vector<std::string> segments;
    for (auto s : url->segments()) segments.push_back(std::string(s));
    ctx.path = std::string(url->encoded_path());
    ctx.query = Query::parse(url->encoded_query());
    route = &router.match(ctx.req.method, segments, ctx.params);
    action = route->info.method + " " + route->info.path;
    const bool write = route->info.write;

    // Authentication and authorization: normally done by admit() before the body was read.
    if (const auto* a = std::any_cast<Admitted>(&ctx.req.admission)) {
      ctx.actor = a->actor;
      ctx.role = a->role;
    } else if (auto refused = authorize(ctx, *route)) {
      throw *refused;
    }

    // High availability: a standby serves reads of the database's state and refuses writes,
    // naming the leader (docs/high-availability.md).
    if (write && svc.options().standby_since) throw standby_refusal(svc);

    if (write) {
      idem_key = ctx.req.header("idempotency-key");
      if (ctx.req.headers.count("idempotency-key") != 0) {
        if (!valid_idempotency_key(idem_key)) {
          bad_request("Idempotency-Key must be 1..255 visible ASCII characters");
        }
        idem_key = ctx.actor + "\n" + idem_key;
        const auto fp = sha256_hex(ctx.req.method + " " + ctx.req.target + "\n" + ctx.req.body);
        auto b = idempotency.begin(idem_key, fp);
        switch (b.outcome) {
          case IdempotencyStore::Outcome::kNew:
            idem_reserved = true;
            break;
          case IdempotencyStore::Outcome::kReplay:
            replayed = true;
            out = std::move(b.response);
            out.headers.emplace_back("Idempotent-Replayed", "true");
            break;
          case IdempotencyStore::Outcome::kInProgress:
            throw ApiError(409, "idempotency-in-progress",
                           "a request with this Idempotency-Key is still being processed");
          case IdempotencyStore::Outcome::kMismatch:
            throw ApiError(422, "idempotency-key-reused",
                           "this Idempotency-Key was used with a different request");
        }
      }
    }
    if (!replayed) {
      auto op = dispatch(ctx, *route);
      out = co_await std::move(op);
    }
  } catch (const ApiError& e) {
    failure = e;
  } catch (const Error& e) {
    const int status = error_http_status(e.code());
    failure =
        ApiError(status, kind_of(e.code()),
                 status >= 500 && e.code() == ErrorCode::kInternal ? std::string("internal error")
                                                                   : std::string(e.what()));
    if (e.code() == ErrorCode::kInternal) {
      svc.log(std::string("api: ") + ctx.req.method + " " + ctx.path + ": " + e.what());
    }
    if (e.code() == ErrorCode::kUnavailable) failure->with_header("Retry-After", "5");
  } catch (const std::exception& e) {
    svc.log(std::string("api: ") + ctx.req.method + " " + ctx.path + " failed: " + e.what());
    failure = ApiError(500, "internal", "internal error");
  }
  if (failure) out = error_response(*failure, ctx.path);
  if (const auto since = svc.options().standby_since) {
    const auto age = std::chrono::duration_cast<std::chrono::milliseconds>(
                         std::chrono::steady_clock::now() - *since)
                         .count();
    out.headers.emplace_back("X-Qkdn-Role", "standby");
    out.headers.emplace_back("X-Qkdn-State-Age", std::to_string(age));
  }

  if (idem_reserved) {
    if (out.status >= 500) {
      idempotency.abandon(idem_key);
    } else {
      idempotency.complete(idem_key, out);
    }
  }
  const bool auth_failure = out.status == 401 || out.status == 403;
  if (route != nullptr && (route->info.write || auth_failure)) {
    std::string detail = failure ? failure->detail() : std::string{};
    if (replayed) detail = "idempotent replay";
    audit(ctx, auth_failure && !route->info.write ? "auth_failure " + action : action, out.status,
          detail);
  }
  co_return out;
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

// ---- ApiServer --------------------------------------------------------------------------------

struct ApiServer::State {
  std::shared_ptr<Api> api;
  std::unique_ptr<net::ssl::context> tls;
  // The API's own io_context and threads (ApiOptions::threads): requests are parsed, answered
  // and routed here, not on the service's threads, so that they never queue behind Ck traffic.
  // What needs the core still hops to the core strand (ControllerService::on_core).
  net::io_context ioc;
  std::optional<net::executor_work_guard<net::io_context::executor_type>> work;
  std::vector<std::thread> threads;
  std::unique_ptr<qkdn::net::HttpServer> http;
  net::ip::tcp::endpoint endpoint;
};

ApiServer::ApiServer(service::ControllerService& service, ApiOptions options)
    : state_(std::make_shared<State>()) {
  state_->endpoint = qkdn::net::parse_endpoint(options.listen);
  if (options.tls_cert.empty() != options.tls_key.empty()) {
    throw InvalidArgument("--api-tls-cert and --api-tls-key must be given together");
  }
  if (!options.tls_cert.empty()) {
    qkdn::net::TlsSettings ts;
    ts.server = true;
    ts.tls13_only = false;   // operators' tools: TLS 1.2 or newer
    ts.verify_peer = false;  // clients authenticate with bearer tokens
    ts.cert_label = "--api-tls-cert";
    ts.key_label = "--api-tls-key";
    state_->tls = qkdn::net::make_tls_context({"", options.tls_cert, options.tls_key}, ts);
  }
  if (options.read_timeout.count() <= 0 || options.write_timeout.count() <= 0 ||
      options.idle_timeout.count() <= 0 || options.handshake_timeout.count() <= 0) {
    throw InvalidArgument("api: timeouts must be positive");
  }
  if (options.max_connections < 1 || options.max_unauthenticated < 1) {
    throw InvalidArgument("api: connection limits must be at least 1");
  }
  if (options.threads < 1 || options.threads > 64) {
    throw InvalidArgument("api: threads must be between 1 and 64");
  }
  state_->api = std::make_shared<Api>(service, std::move(options));
  if (state_->api->options.insecure) {
    service.log(
        "api: WARNING: --api-insecure: every API request is treated as admin without a token");
  } else if (!state_->api->tokens_configured) {
    service.log("api: no tokens file: reads are open to anyone, writes are refused (401)");
  }
}

ApiServer::~ApiServer() { stop(); }

void ApiServer::start() {
  if (state_->http) return;
  auto api = state_->api;
  const auto& o = api->options;
  qkdn::net::HttpServerOptions ho;
  ho.name = "api";
  ho.max_body_bytes = std::min(o.max_small_body_bytes, o.max_body_bytes);
  ho.max_header_bytes = o.max_header_bytes;
  ho.handshake_timeout = o.handshake_timeout;
  ho.read_timeout = o.read_timeout;
  ho.idle_timeout = o.idle_timeout;
  ho.write_timeout = o.write_timeout;
  ho.max_connections = o.max_connections;
  ho.max_unauthenticated = std::min(o.max_unauthenticated, o.max_connections);
  ho.server_header = "qkdn-controller";
  auto* svc = &api->svc;
  ho.log = [svc](std::string_view line) { svc->log(std::string(line)); };
  auto handler = [api](HttpRequest req) -> net::awaitable<HttpResponse> {
    auto op = api->handle(std::move(req));
    co_return co_await std::move(op);
  };
  auto admit = [api](const HttpRequest& head) { return api->admit(head); };
  auto* metrics = &api->svc.metrics();
  auto observer = [metrics](const std::string& method, int status, double seconds) {
    metrics->http_request(method_label(method), status, seconds);
  };
  state_->http = std::make_unique<qkdn::net::HttpServer>(state_->ioc, state_->endpoint, handler, ho,
                                                         state_->tls.get(), admit, observer);
  state_->http->start();
  state_->work.emplace(state_->ioc.get_executor());
  for (std::size_t i = 0; i < o.threads; ++i) {
    state_->threads.emplace_back([st = state_.get(), svc] {
      for (;;) {
        try {
          st->ioc.run();
          return;
        } catch (const std::exception& e) {
          svc->log(std::string("api: thread: ") + e.what());  // a handler threw: keep serving
        }
      }
    });
  }
}

std::uint16_t ApiServer::port() const { return state_->http ? state_->http->port() : 0; }

void ApiServer::stop() {
  if (!state_->http || state_->threads.empty()) return;
  state_->http->stop();  // closes the listener and every connection (posted to their strands)
  state_->work.reset();
  // The threads return once the closes ran and no request is in flight. A request still waiting
  // for a core that no longer runs would hold them: bounded, then the io_context is stopped.
  auto done = std::make_shared<std::promise<void>>();
  auto finished = done->get_future();
  std::thread waiter([st = state_.get(), done] {
    for (auto& t : st->threads) t.join();
    done->set_value();
  });
  if (finished.wait_for(std::chrono::seconds(5)) != std::future_status::ready) {
    state_->api->svc.log("api: requests still in flight after 5 s; stopping anyway");
    state_->ioc.stop();
  }
  waiter.join();
  state_->threads.clear();
}

std::vector<ApiRoute> ApiServer::routes() const { return state_->api->router.routes(); }

std::string_view ApiServer::openapi_document() { return kOpenApiDocument; }

}  // namespace qkdn::northbound
