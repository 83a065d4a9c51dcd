// Kxi' key transfer listener and client of an interworking node: see kxi.hpp and docs/kxi.md.
#include "kxi.hpp"

#include <any>
#include <filesystem>
#include <set>
#include <utility>

#include <openssl/crypto.h>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/http/span_body.hpp>
#include <boost/json.hpp>

#include "log.hpp"
#include "qkdn/controller/error.hpp"
#include "qkdn/net/http_server.hpp"
#include "qkdn/net/tls.hpp"

namespace qkdn::agent {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace json = boost::json;
using qkdn::net::HttpAdmission;
using qkdn::net::HttpRequest;
using qkdn::net::HttpResponse;
using namespace asio::experimental::awaitable_operators;

namespace {

constexpr std::size_t kHeaderLimit = std::size_t{8} * 1024;
constexpr auto kTuple = asio::as_tuple(asio::use_awaitable);

// ---- configuration --------------------------------------------------------------------------

std::string string_field(const json::object& o, std::string_view name, const std::string& where,
                         bool required) {
  const auto* v = o.if_contains(name);
  if (v == nullptr) {
    if (required) throw InvalidArgument(where + "." + std::string(name) + ": missing");
    return {};
  }
  if (!v->is_string() || v->get_string().empty()) {
    throw InvalidArgument(where + "." + std::string(name) + ": expected a non-empty string");
  }
  return std::string(v->get_string());
}

std::string id_field(const json::object& o, std::string_view name, const std::string& where,
                     bool required) {
  auto s = string_field(o, name, where, required);
  if (!s.empty() && !kxi::valid_id(s)) {
    throw InvalidArgument(where + "." + std::string(name) + ": '" + s +
                          "' is not an ID (1..128 of A-Z a-z 0-9 . _ : -)");
  }
  return s;
}

/// "host:port" with a numeric port in [min_port, 65535].
std::pair<std::string, std::uint16_t> host_port(const std::string& text, const std::string& where,
                                                int min_port) {
  const auto colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == text.size()) {
    throw InvalidArgument(where + ": expected host:port, got '" + text + "'");
  }
  int port = 0;
  for (char c : text.substr(colon + 1)) {
    if (c < '0' || c > '9' || port > 65535) {
      std::string why = where;
      why += ": bad port in '";
      why += text;
      why += "'";
      throw InvalidArgument(why);
    }
    port = port * 10 + (c - '0');
  }
  if (port < min_port || port > 65535) {
    throw InvalidArgument(where + ": port out of range in '" + text + "'");
  }
  return {text.substr(0, colon), static_cast<std::uint16_t>(port)};
}

// ---- server ---------------------------------------------------------------------------------

HttpResponse reply(const kxi::Answer& a) {
  HttpResponse r;
  r.status = a.status;
  r.body = kxi::encode_answer(a);
  r.headers.emplace_back("Cache-Control", "no-store");
  return r;
}

struct Caller {
  std::string km;
};

qkdn::net::TlsSettings tls_settings(bool server) {
  qkdn::net::TlsSettings s;
  s.server = server;
  s.tls13_only = true;
  s.verify_peer = true;
  s.strongest_groups = true;
  s.ca_label = "iwn partner_ca";
  s.cert_label = "KM certificate";
  s.key_label = "KM key";
  return s;
}

qkdn::net::TlsFiles km_files(const IwnPair& pair, const std::string& dir) {
  const std::string base = dir + "/" + pair.km_id;
  const std::string cert = std::filesystem::exists(base + ".crt") ? base + ".crt" : base + ".pem";
  return {pair.partner_ca, cert, base + ".key"};
}

void wipe(std::string& s) {
  if (!s.empty()) OPENSSL_cleanse(s.data(), s.size());
  s.clear();
}

}  // namespace

std::vector<IwnPair> parse_iwn_config(std::string_view text) {
  boost::system::error_code ec;
  json::value root = json::parse(text, ec);
  if (ec) throw InvalidArgument("iwn config: not JSON: " + ec.message());
  if (!root.is_object()) throw InvalidArgument("iwn config: expected an object");
  for (const auto& [name, v] : root.get_object()) {
    if (name != "pairs") throw InvalidArgument("iwn config: unknown field " + std::string(name));
  }
  const auto* pairs = root.get_object().if_contains("pairs");
  if (pairs == nullptr || !pairs->is_array() || pairs->get_array().empty()) {
    throw InvalidArgument("iwn config: pairs: expected a non-empty array");
  }
  static const std::set<std::string, std::less<>> kFields = {
      "km_id",       "partner_km_id", "partner_qkdn_id", "partner_ca", "partner_endpoint",
      "remote_saes", "listen"};
  std::vector<IwnPair> out;
  std::set<std::string> kms;
  std::set<std::string> remote;
  for (std::size_t i = 0; i < pairs->get_array().size(); ++i) {
    const std::string where = "iwn config: pairs[" + std::to_string(i) + "]";
    const auto& v = pairs->get_array()[i];
    if (!v.is_object()) throw InvalidArgument(where + ": expected an object");
    const auto& o = v.get_object();
    for (const auto& [name, value] : o) {
      if (!kFields.contains(name)) {
        throw InvalidArgument(where + ": unknown field " + std::string(name));
      }
    }
    IwnPair p;
    p.km_id = id_field(o, "km_id", where, true);
    p.partner_km_id = id_field(o, "partner_km_id", where, true);
    p.partner_qkdn_id = id_field(o, "partner_qkdn_id", where, true);
    p.partner_ca = string_field(o, "partner_ca", where, true);
    p.partner_endpoint = string_field(o, "partner_endpoint", where, false);
    if (!p.partner_endpoint.empty()) host_port(p.partner_endpoint, where + ".partner_endpoint", 1);
    if (const auto* l = o.if_contains("listen")) {
      if (!l->is_string()) throw InvalidArgument(where + ".listen: expected host:port");
      auto [host, port] = host_port(std::string(l->get_string()), where + ".listen", 0);
      p.listen_host = host;
      p.listen_port = port;
    }
    if (const auto* r = o.if_contains("remote_saes")) {
      if (!r->is_array()) throw InvalidArgument(where + ".remote_saes: expected an array");
      for (const auto& s : r->get_array()) {
        if (!s.is_string() || !kxi::valid_id(s.get_string())) {
          throw InvalidArgument(where + ".remote_saes: expected SAE IDs");
        }
        if (!remote.insert(std::string(s.get_string())).second) {
          throw InvalidArgument(where + ".remote_saes: SAE " + std::string(s.get_string()) +
                                " named twice");
        }
        p.remote_saes.emplace_back(s.get_string());
      }
    }
    if (p.km_id == p.partner_km_id) throw InvalidArgument(where + ": a KM cannot be its partner");
    if (!p.remote_saes.empty() && p.partner_endpoint.empty()) {
      throw InvalidArgument(where + ": remote_saes need partner_endpoint");
    }
    if (p.remote_saes.empty() && !p.listen_port) {
      throw InvalidArgument(where + ": neither sends (remote_saes) nor receives (listen)");
    }
    if (!kms.insert(p.km_id).second) {
      throw InvalidArgument(where + ": KM " + p.km_id + " is in two pairs");
    }
    out.push_back(std::move(p));
  }
  return out;
}

// ---- KxiServer ----------------------------------------------------------------------------------

KxiServer::KxiServer(asio::io_context& io, KxiReceiver& receiver, IwnPair pair,
                     const std::string& tls_cert_dir, kxi::Limits limits, KxiSpawn spawn)
    : io_(io),
      receiver_(receiver),
      pair_(std::move(pair)),
      limits_(limits),
      spawn_(std::move(spawn)),
      port_(pair_.listen_port.value_or(0)) {
  if (tls_cert_dir.empty()) {
    throw InvalidArgument("iwn pair of " + pair_.km_id +
                          ": Kxi' carries keys and needs --tls-cert-dir (mutual TLS)");
  }
  tls_ = qkdn::net::make_tls_context(km_files(pair_, tls_cert_dir), tls_settings(true));
}

KxiServer::~KxiServer() = default;

std::uint16_t KxiServer::bind() {
  boost::system::error_code ec;
  const auto addr = asio::ip::make_address(pair_.listen_host, ec);
  if (ec) throw InvalidArgument("iwn listen: not an IP address: " + pair_.listen_host);
  qkdn::net::HttpServerOptions o;
  o.name = "kxi";
  o.max_header_bytes = kHeaderLimit;
  o.max_body_bytes = kxi::kMaxBodyBytes;
  o.max_connections = 64;
  o.max_unauthenticated = 16;
  o.client_role = qkdn::net::PeerRole::kKm;
  o.log = [](std::string_view line) { log_line(LogLevel::kWarn, std::string(line)); };
  o.error_body = [](int status, std::string_view detail) {
    return reply(kxi::Answer{
        status, std::string(qkdn::net::reason_phrase(status)), {{"http", std::string(detail)}}});
  };
  o.spawn = spawn_;
  const std::string partner = pair_.partner_km_id;
  // The caller is the partner KM or nobody: checked on the header, before the body is read.
  auto admission = [partner](const HttpRequest& head) {
    HttpAdmission a;
    a.body_limit = kxi::kMaxBodyBytes;
    if (head.peer_identity != partner) {
      a.refusal = reply(kxi::Answer{
          401,
          "unauthorized",
          {{"certificate", head.peer_identity.empty()
                               ? std::string("the client certificate names no KM")
                               : "KM " + head.peer_identity + " is not this KM's IWN partner"}}});
      return a;
    }
    a.authenticated = true;
    a.data = Caller{head.peer_identity};
    return a;
  };
  KxiReceiver* receiver = &receiver_;
  const std::string km = pair_.km_id;
  const kxi::Limits limits = limits_;
  auto handler = [receiver, km, limits](HttpRequest req) -> asio::awaitable<HttpResponse> {
    const std::string caller = std::any_cast<const Caller&>(req.admission).km;
    const std::string_view target = req.target;
    if (target.find('?') != std::string_view::npos) {
      wipe(req.body);
      co_return reply(kxi::Answer{400, "bad request format", {{"query", "not allowed"}}});
    }
    auto matched = kxi::match(target);
    if (auto* a = std::get_if<kxi::Answer>(&matched)) {
      wipe(req.body);
      co_return reply(*a);
    }
    if (req.method != "POST") {
      wipe(req.body);
      HttpResponse r = reply(kxi::Answer{405, "method not allowed", {{"method", req.method}}});
      r.headers.emplace_back("Allow", "POST");
      co_return r;
    }
    auto [initiator, target_sae] = std::get<std::pair<std::string, std::string>>(matched);
    auto parsed = kxi::parse_request(initiator, target_sae, req.body, limits);
    wipe(req.body);  // the base64 key text
    if (auto* a = std::get_if<kxi::Answer>(&parsed)) co_return reply(*a);
    auto op =
        receiver->receive_transfer(km, caller, std::get<kxi::TransferRequest>(std::move(parsed)));
    const kxi::Answer answer = co_await std::move(op);
    co_return reply(answer);
  };
  auto observer = [](const std::string& method, int status, double) {
    log_line(LogLevel::kDebug, "kxi: " + method + " -> " + std::to_string(status));
  };
  try {
    http_ =
        std::make_unique<qkdn::net::HttpServer>(io_, asio::ip::tcp::endpoint(addr, port_), handler,
                                                std::move(o), tls_.get(), admission, observer);
  } catch (const InvalidArgument& e) {
    throw Unavailable(e.what());
  }
  port_ = http_->port();
  return port_;
}

void KxiServer::start() {
  if (http_) http_->start();
}

void KxiServer::stop() {
  if (http_) http_->stop();
}

// ---- client ---------------------------------------------------------------------------------

std::unique_ptr<asio::ssl::context> make_kxi_client_tls(const IwnPair& pair,
                                                        const std::string& tls_cert_dir) {
  if (tls_cert_dir.empty()) {
    throw InvalidArgument("iwn pair of " + pair.km_id +
                          ": Kxi' carries keys and needs --tls-cert-dir (mutual TLS)");
  }
  return qkdn::net::make_tls_context(km_files(pair, tls_cert_dir), tls_settings(false));
}

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"  // GCC 12 false positive on coroutines
#endif

namespace {

/// One HTTPS exchange; throws on any failure (kxi_send turns it into the outcome).
asio::awaitable<KxiOutcome> exchange(asio::any_io_executor ex, asio::ssl::context& tls,
                                     IwnPair pair, std::string target, const std::string& body) {
  auto [host, port] = host_port(pair.partner_endpoint, "partner_endpoint", 1);
  asio::ip::tcp::resolver resolver(ex);
  auto resolve_op = resolver.async_resolve(host, std::to_string(port), asio::use_awaitable);
  auto results = co_await std::move(resolve_op);
  asio::ssl::stream<asio::ip::tcp::socket> stream(ex, tls);
  auto connect_op = asio::async_connect(stream.next_layer(), results, asio::use_awaitable);
  co_await std::move(connect_op);
  auto handshake_op = stream.async_handshake(asio::ssl::stream_base::client, asio::use_awaitable);
  co_await std::move(handshake_op);
  const std::string peer =
      qkdn::net::peer_identity(stream.native_handle(), qkdn::net::PeerRole::kKm);
  if (peer != pair.partner_km_id) {
    throw Unavailable("partner certificate names KM '" + peer + "', not " + pair.partner_km_id);
  }
  // The body (key material) is sent from the caller's buffer, never copied: the caller wipes it
  // whatever happens here.
  http::request<http::span_body<const char>> req{http::verb::post, target, 11};
  req.set(http::field::host, pair.partner_endpoint);
  req.set(http::field::content_type, "application/json");
  req.set(http::field::accept, "application/json");
  req.body() = boost::span<const char>(body.data(), body.size());
  req.prepare_payload();
  auto write_op = http::async_write(stream, req, asio::use_awaitable);
  co_await std::move(write_op);
  beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.header_limit(kHeaderLimit);
  parser.body_limit(kxi::kMaxResponseBytes);
  auto read_op = http::async_read(stream, buffer, parser, asio::use_awaitable);
  co_await std::move(read_op);
  const auto& res = parser.get();
  KxiOutcome out;
  out.status = static_cast<int>(res.result_int());
  std::string why;
  auto answer = kxi::parse_answer(out.status, res.body(), why);
  if (!answer) {
    out.message = "malformed answer (HTTP " + std::to_string(out.status) + "): " + why;
  } else {
    out.message = answer->message;
    out.details = answer->details;
  }
  out.delivered = out.status == 200 && answer.has_value();
  boost::system::error_code ignored;
  stream.next_layer().shutdown(asio::ip::tcp::socket::shutdown_both, ignored);
  co_return out;
}

}  // namespace

asio::awaitable<KxiOutcome> kxi_send(asio::any_io_executor ex, asio::ssl::context& tls,
                                     IwnPair pair, std::string target, std::string body,
                                     std::chrono::milliseconds timeout) {
  KxiOutcome out;
  const std::string partner = pair.partner_km_id;
  try {
    asio::steady_timer timer(ex);
    timer.expires_after(timeout);
    auto work = exchange(ex, tls, std::move(pair), std::move(target), body);
    auto wait = timer.async_wait(kTuple);
    auto result = co_await (std::move(work) || std::move(wait));
    if (result.index() == 1) {
      out.message = "timeout: no answer from " + partner + " within " +
                    std::to_string(timeout.count()) + " ms";
    } else {
      out = std::get<0>(std::move(result));
    }
  } catch (const std::exception& e) {
    out = KxiOutcome{};
    out.message = std::string("partner unreachable: ") + e.what();
  }
  wipe(body);
  co_return out;
}

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

}  // namespace qkdn::agent
