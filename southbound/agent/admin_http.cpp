// The agent's admin listener: see admin_http.hpp.
#include "admin_http.hpp"

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include <array>

#include <boost/json.hpp>

#include "km_host.hpp"
#include "log.hpp"
#include "qkdn/controller/error.hpp"
#include "qkdn/json/reader.hpp"
#include "qkdn/net/http_server.hpp"

namespace qkdn::agent {

namespace asio = boost::asio;
namespace json = boost::json;
using qkdn::net::HttpAdmission;
using qkdn::net::HttpRequest;
using qkdn::net::HttpResponse;
using namespace std::chrono_literals;

namespace {

constexpr std::size_t kBodyLimit = std::size_t{64} << 10;

std::string sha256(std::string_view text) {
  std::array<unsigned char, SHA256_DIGEST_LENGTH> d{};
  SHA256(reinterpret_cast<const unsigned char*>(text.data()), text.size(), d.data());
  return std::string(reinterpret_cast<const char*>(d.data()), d.size());
}

json::object link_json(const LinkSnapshot& l) {
  return json::object{{"link_id", l.link_id},
                      {"peer_km_id", l.peer_km_id},
                      {"qkd_module_id", l.qkd_module_id},
                      {"matching_qkd_module_id", l.matching_qkd_module_id},
                      {"primary", l.primary},
                      {"state", l.up ? "up" : "down"},
                      {"admin_up", l.admin_up},
                      {"kma_connected", l.kma_connected},
                      {"stored_keys", l.stored_keys},
                      {"stored_key_bits", l.stored_key_bits},
                      {"capacity_bits", l.capacity_bits},
                      {"key_rate_bps", l.key_rate_bps},
                      {"measured_key_rate_bps", l.measured_key_rate_bps},
                      {"qber", l.qber},
                      {"consumption_rate_bps", l.consumption_rate_bps},
                      // Key accounting (keys of 256 bits): generated = available + reserved +
                      // allocated + consumed + discarded.
                      {"keys_generated", l.keys_generated},
                      {"keys_available", l.keys_available},
                      {"keys_reserved", l.keys_reserved},
                      {"keys_allocated", l.keys_allocated},
                      {"keys_consumed", l.keys_consumed},
                      {"keys_discarded", l.keys_discarded}};
}

HttpResponse ok(const json::object& o) {
  HttpResponse r;
  r.body = json::serialize(o);
  return r;
}

HttpResponse problem(int status, std::string_view detail) {
  HttpResponse r;
  r.status = status;
  r.content_type = "application/problem+json";
  r.body = json::serialize(json::object{{"status", status}, {"detail", detail}});
  return r;
}

/// Reads a link control body ({"key_rate_bps", "qber", "up"}, each optional; nothing else)
/// through the shared strict reader; the refusal's text, or nullopt when `c` was filled.
std::optional<std::string> read_link_control(std::string_view body, LinkControl& c) {
  try {
    const json::object o = qkdn::json::parse_object(body, "body", {std::size_t{64} << 10, 4});
    qkdn::json::ObjectReader r(o);
    c.key_rate_bps = r.opt_number("key_rate_bps");
    if (c.key_rate_bps && !(*c.key_rate_bps >= 0)) return "key_rate_bps: expected a number >= 0";
    c.qber = r.opt_number("qber");
    if (c.qber && !(*c.qber >= 0 && *c.qber <= 1)) return "qber: expected a number in [0, 1]";
    c.up = r.opt_bool("up");
    r.finish();
  } catch (const InvalidArgument& e) {
    return std::string(e.what());
  }
  return std::nullopt;
}

std::vector<std::string_view> split_path(std::string_view target) {
  if (auto q = target.find('?'); q != std::string_view::npos) target = target.substr(0, q);
  std::vector<std::string_view> parts;
  while (!target.empty()) {
    if (target.front() == '/') {
      target.remove_prefix(1);
      continue;
    }
    const auto end = target.find('/');
    parts.push_back(target.substr(0, end));
    if (end == std::string_view::npos) break;
    target.remove_prefix(end);
  }
  return parts;
}

// SAE key deliveries of a KM: keys per key-combination mode and the latest records.
json::object deliveries_json(const KmSnapshot& km) {
  json::object by_mode{{"qkd", 0}, {"hybrid", 0}};
  for (const auto& [mode, n] : km.keys_by_mode) by_mode[mode] = n;
  json::object by_delivery{{"plain", 0}, {"wrapped", 0}};
  for (const auto& [how, n] : km.keys_by_delivery) by_delivery[how] = n;
  json::array recent;
  for (const auto& d : km.deliveries) {
    json::object o{{"time", d.time},
                   {"role", d.role},
                   {"master_sae", d.master_sae},
                   {"slave_sae", d.slave_sae},
                   {"peer_km", d.peer_km},
                   {"path", d.path},
                   {"mode", d.mode},
                   {"keys", d.keys},
                   {"key_bits", d.key_bits},
                   {"first_key_id", d.first_key_id}};
    if (!d.suite.empty()) o["suite"] = d.suite;
    o["key_check"] = d.key_check;
    o["wrapped"] = d.wrapped;
    if (d.qkd_keys) {
      const auto& q = *d.qkd_keys;
      o["qkd_keys"] = json::object{{"link_id", q.link_id},
                                   {"qkd_module_id", q.module_id},
                                   {"matching_qkd_module_id", q.matching_module_id},
                                   {"keys", q.keys},
                                   {"key_bits", q.key_bits},
                                   {"first_key_id", q.first_key_id},
                                   {"generated_after", q.generated_after},
                                   {"generated_at", q.generated_at},
                                   {"hash", q.hash}};
    }
    if (!d.relay_routing.empty()) o["relay_routing"] = d.relay_routing;
    if (!d.route.empty()) {
      json::array route;
      for (const auto& hop : d.route) route.emplace_back(hop);
      o["route"] = std::move(route);
    }
    if (!d.relay_scheme.empty()) {
      o["relay_scheme"] = d.relay_scheme;
      o["relay_security"] = d.relay_scheme == "otp" ? "information_theoretic" : "computational";
    }
    recent.push_back(std::move(o));
  }
  return json::object{{"keys_by_mode", std::move(by_mode)},
                      {"keys_by_delivery", std::move(by_delivery)},
                      {"recent", std::move(recent)}};
}

asio::awaitable<HttpResponse> route(AgentCore& core, const HttpRequest& req) {
  const auto parts = split_path(req.target);
  if (parts.size() == 2 && parts[0] == "admin" && parts[1] == "state") {
    if (req.method != "GET") co_return problem(405, "GET only");
    json::array kms;
    auto snapshot_op = core.snapshot();
    const std::vector<KmSnapshot> snapshot = co_await std::move(snapshot_op);
    for (const auto& km : snapshot) {
      json::array links;
      for (const auto& l : km.links) links.push_back(link_json(l));
      kms.push_back(json::object{{"km_id", km.km_id},
                                 {"kma_endpoint", km.kma_endpoint},
                                 {"registered", km.registered},
                                 {"controller_epoch", km.controller_epoch},
                                 {"registrations", km.registrations},
                                 {"busy_refusals", km.busy_refusals},
                                 {"relay_routing", km.relay_routing},
                                 {"links", std::move(links)},
                                 {"supplied_keys", km.supplied_keys},
                                 {"iwn", json::object{{"sent_attempts", km.iwn.sent_attempts},
                                                      {"sent_ok", km.iwn.sent_ok},
                                                      {"sent_failed", km.iwn.sent_failed},
                                                      {"keys_sent", km.iwn.keys_sent},
                                                      {"received_ok", km.iwn.received_ok},
                                                      {"received_refused", km.iwn.received_refused},
                                                      {"keys_received", km.iwn.keys_received}}},
                                 {"key_deliveries", deliveries_json(km)}});
    }
    co_return ok(json::object{{"kms", std::move(kms)}});
  }
  if (parts.size() == 3 && parts[0] == "admin" && parts[1] == "links") {
    if (req.method != "POST") co_return problem(405, "POST only");
    LinkControl c;
    if (auto refusal = read_link_control(req.body, c)) co_return problem(400, *refusal);
    const std::string link_id(parts[2]);
    auto op = core.control_link(link_id, c);
    const bool applied = co_await std::move(op);
    if (!applied) {
      co_return problem(404, "link " + link_id + " is not hosted here");
    }
    co_return ok(json::object{{"link_id", link_id}, {"applied", true}});
  }
  if (parts.size() == 4 && parts[0] == "admin" && parts[1] == "kms" && parts[3] == "disconnect") {
    if (req.method != "POST") co_return problem(405, "POST only");
    const std::string km_id(parts[2]);
    auto op = core.disconnect(km_id);
    const bool found = co_await std::move(op);
    if (!found) {
      co_return problem(404, "KM " + km_id + " is not hosted here");
    }
    co_return ok(json::object{{"km_id", km_id}, {"disconnected", true}});
  }
  co_return problem(404, "no such resource");
}

}  // namespace

AdminServer::AdminServer(AgentCore& core, std::string host, std::uint16_t port, std::string token)
    : core_(core),
      host_(std::move(host)),
      port_(port),
      token_digest_(token.empty() ? std::string{} : sha256(token)) {
  OPENSSL_cleanse(token.data(), token.size());
}

AdminServer::~AdminServer() = default;

std::uint16_t AdminServer::bind() {
  boost::system::error_code ec;
  const auto addr = asio::ip::make_address(host_, ec);
  if (ec) throw InvalidArgument("--admin-listen: not an IP address: " + host_);
  qkdn::net::HttpServerOptions o;
  o.name = "admin";
  o.max_body_bytes = kBodyLimit;
  o.max_header_bytes = std::size_t{8} << 10;
  o.read_timeout = 10s;
  o.idle_timeout = 30s;
  o.max_connections = 64;
  o.max_unauthenticated = 32;
  o.log = [](std::string_view line) { log_line(LogLevel::kWarn, std::string(line)); };
  o.error_body = [](int status, std::string_view detail) { return problem(status, detail); };
  AgentCore* core = &core_;
  o.spawn = [core](const asio::any_io_executor& ex, asio::awaitable<void> work, std::string what) {
    core->spawn(ex, std::move(work), std::move(what));
  };
  const std::string digest = token_digest_;
  auto admission = [digest](const HttpRequest& head) {
    HttpAdmission a;
    if (digest.empty()) {  // loopback only (checked at start): the local host is trusted
      a.authenticated = true;
      return a;
    }
    const std::string auth = head.header("authorization");
    const bool bearer = auth.size() > 7 &&
                        (auth.compare(0, 7, "Bearer ") == 0 || auth.compare(0, 7, "bearer ") == 0);
    // Compared as digests of equal length, in constant time.
    const std::string presented = sha256(bearer ? std::string_view(auth).substr(7) : "");
    if (!bearer || CRYPTO_memcmp(presented.data(), digest.data(), digest.size()) != 0) {
      HttpResponse r = problem(401, bearer ? "invalid bearer token" : "missing bearer token");
      r.headers.emplace_back("WWW-Authenticate", "Bearer realm=\"qkdn-agent\"");
      a.refusal = std::move(r);
      return a;
    }
    a.authenticated = true;
    return a;
  };
  auto handler = [core](HttpRequest req) -> asio::awaitable<HttpResponse> {
    auto op = route(*core, req);
    co_return co_await std::move(op);
  };
  try {
    http_ =
        std::make_unique<qkdn::net::HttpServer>(core_.io(), asio::ip::tcp::endpoint(addr, port_),
                                                handler, std::move(o), nullptr, admission);
  } catch (const InvalidArgument& e) {
    throw Unavailable(e.what());
  }
  port_ = http_->port();
  return port_;
}

void AdminServer::start() {
  if (http_) http_->start();
}

void AdminServer::stop() {
  if (http_) http_->stop();
}

}  // namespace qkdn::agent
