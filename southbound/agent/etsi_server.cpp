// ETSI GS QKD 014 v1.1.1 server of the agent (HTTPS with mutual TLS): see etsi_server.hpp,
// etsi_request.hpp and sae_keys.hpp.
#include "etsi_server.hpp"

#include <any>
#include <ctime>
#include <map>
#include <optional>
#include <span>
#include <string_view>
#include <utility>
#include <variant>

#include <openssl/evp.h>
#include <boost/json.hpp>

#include "etsi_request.hpp"
#include "log.hpp"
#include "qkdn/agent/key_wrap.hpp"
#include "qkdn/controller/error.hpp"
#include "qkdn/net/http_server.hpp"

namespace qkdn::agent {

namespace asio = boost::asio;
namespace json = boost::json;
using qkdn::net::HttpAdmission;
using qkdn::net::HttpRequest;
using qkdn::net::HttpResponse;

namespace {

constexpr std::size_t kBodyLimit = std::size_t{64} * 1024;
constexpr std::size_t kHeaderLimit = std::size_t{8} * 1024;

// ---- replies ------------------------------------------------------------------------------------

HttpResponse reply(const etsi::Error& e) {
  HttpResponse r;
  r.status = e.status;
  r.body = etsi::error_json(e);
  r.headers.emplace_back("Cache-Control", "no-store");
  return r;
}

/// An error reported by the SAE key service (400, 401, 503; anything else becomes 503).
HttpResponse service_error(int status, const std::string& message,
                           const std::vector<std::string>& details, std::int64_t retry_after_s) {
  const int s = status == 400 || status == 401 || status == 503 ? status : 503;
  etsi::Error e{s, message.empty() ? std::string(qkdn::net::reason_phrase(s)) : message, {}};
  for (const auto& text : details) e.details.emplace_back("detail", text);
  auto r = reply(e);
  if (s == 503 && retry_after_s > 0)
    r.headers.emplace_back("Retry-After", std::to_string(retry_after_s));
  return r;
}

/// Key container {"keys":[{"key_ID":..,"key":<base64>}]} built in one buffer sized up front, so
/// that no reallocation leaves a stray copy of key material behind; wiped once written.
HttpResponse key_container(const std::vector<SaeKey>& keys) {
  std::vector<std::string> ids;
  ids.reserve(keys.size());
  std::size_t total = 16;
  for (const auto& k : keys) {
    ids.push_back(json::serialize(json::string(k.key_id)));
    total += ids.back().size() + 4 * ((k.bytes.size() + 2) / 3) + 32;
  }
  HttpResponse r;
  r.secret = true;
  r.headers.emplace_back("Cache-Control", "no-store");
  std::string& out = r.body;
  out.reserve(total + 1);
  out += "{\"keys\":[";
  for (std::size_t i = 0; i < keys.size(); ++i) {
    if (i > 0) out += ',';
    out += "{\"key_ID\":";
    out += ids[i];
    out += ",\"key\":\"";
    const std::size_t pos = out.size();
    const std::size_t b64 = 4 * ((keys[i].bytes.size() + 2) / 3);
    out.resize(pos + b64 + 1);  // EVP_EncodeBlock writes a terminating NUL
    EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data() + pos), keys[i].bytes.data(),
                    static_cast<int>(keys[i].bytes.size()));
    out.resize(pos + b64);
    out += "\"}";
  }
  out += "]}";
  return r;
}

using Recipients = std::map<std::string, wrap::Recipient>;

/// The keys wrapped to `recipient`'s certificate (key_wrap.hpp); the plain keys are wiped by
/// SaeKey's destructor.
HttpResponse wrapped_container(const wrap::Recipient& recipient, const std::string& master,
                               const std::string& slave, const std::vector<SaeKey>& keys) {
  std::vector<wrap::PlainRef> refs;
  refs.reserve(keys.size());
  for (const auto& k : keys) refs.push_back(wrap::PlainRef{k.key_id, k.bytes});
  HttpResponse r;
  try {
    const wrap::Wrapped w = wrap::wrap_keys(recipient, master, slave, refs);
    r.body = wrap::wrapped_json(recipient, master, slave, w);
  } catch (const std::exception& e) {
    log_line(LogLevel::kError, std::string("etsi: ") + e.what());
    return reply(etsi::Error{503, "internal error of the KME", {{"wrap", e.what()}}});
  }
  r.headers.emplace_back("Cache-Control", "no-store");
  return r;
}

/// Refuses a request before any key is taken: the plain resources for an SAE outside every
/// trusted node, the wrapped ones for an SAE without a certificate here or with one not valid now.
std::optional<HttpResponse> wrap_refusal(const Recipients& outside, const std::string& sae,
                                         const etsi::Route& route) {
  const auto it = outside.find(sae);
  if (!route.wrapped) {
    if (it == outside.end()) return std::nullopt;
    const std::string wrapped_name =
        route.op == etsi::Op::kEncKeys ? "enc_keys_wrapped" : "dec_keys_wrapped";
    return reply(etsi::Error{400,
                             "keys of this SAE are delivered only wrapped",
                             {{"SAE_ID", "SAE " + sae +
                                             " is outside every trusted node at this KME: ask "
                                             "for " +
                                             wrapped_name + " (docs/hybrid.md)"}}});
  }
  if (it == outside.end()) {
    return reply(etsi::Error{
        400,
        "no certificate to wrap keys to",
        {{"SAE_ID", "SAE " + sae +
                        " has no certificate configured at this KME (--outside-sae); use "
                        "enc_keys / dec_keys"}}});
  }
  if (auto why = wrap::validity_error(it->second, std::time(nullptr)); !why.empty()) {
    return reply(etsi::Error{503,
                             "the SAE's certificate is not usable",
                             {{"certificate", it->second.cert_file + ": " + why}}});
  }
  return std::nullopt;
}

/// The calling SAE, as admitted (HttpRequest::admission).
struct Caller {
  std::string sae;
};

/// Identifies the caller on the request header: its certificate's SAE identity, or X-SAE-ID in
/// the insecure lab mode. An SAE that no hosted KM serves is refused before the body is read.
HttpAdmission admit(const SaeKeyService& service, bool insecure, const HttpRequest& head) {
  HttpAdmission a;
  a.body_limit = kBodyLimit;
  std::string sae = insecure ? head.header("x-sae-id") : head.peer_identity;
  if (sae.empty()) {
    a.refusal = reply(etsi::Error{
        401,
        "SAE not identified",
        {insecure
             ? std::pair<std::string, std::string>{"X-SAE-ID", "header missing (insecure mode)"}
             : std::pair<std::string, std::string>{"certificate",
                                                   "the client certificate names no SAE (SAN URI "
                                                   "urn:qkdn:sae:<id>)"}}});
    return a;
  }
  if (sae.size() > etsi::kMaxIdLength || !service.serves(sae)) {
    a.refusal = reply(etsi::Error{
        401,
        "unauthorized",
        {{"SAE_ID", "SAE " + sae.substr(0, etsi::kMaxIdLength) + " is not served by this KME"}}});
    return a;
  }
  a.authenticated = true;
  a.data = Caller{std::move(sae)};
  return a;
}

asio::awaitable<HttpResponse> handle(SaeKeyService& service, const Recipients& outside,
                                     HttpRequest req) {
  const std::string sae = std::any_cast<const Caller&>(req.admission).sae;
  const std::string_view target = req.target;
  const auto qpos = target.find('?');
  const std::string_view path = target.substr(0, qpos);
  auto matched = etsi::match(path);
  if (auto* e = std::get_if<etsi::Error>(&matched)) co_return reply(*e);
  const etsi::Route route = std::get<etsi::Route>(std::move(matched));

  const bool get = req.method == "GET";
  const bool post = req.method == "POST";
  if (route.op == etsi::Op::kStatus ? !get : !(get || post)) {
    HttpResponse r = reply(etsi::Error{405, "method not allowed", {{"method", req.method}}});
    r.headers.emplace_back("Allow", route.op == etsi::Op::kStatus ? "GET" : "GET, POST");
    co_return r;
  }
  // ETSI 014 keys are shared between two SAEs; a key "shared" with oneself is a caller error.
  if (route.sae == sae) {
    co_return reply(etsi::Error{400,
                                "bad request format",
                                {{"SAE_ID", "the SAE in the path must differ from the caller"}}});
  }

  const SaeLimits limits = service.limits();
  std::optional<etsi::Query> query = etsi::Query{};
  if (qpos != std::string_view::npos) query = etsi::parse_query(target.substr(qpos + 1));
  if (!query) {
    co_return reply(
        etsi::Error{400, "bad request format", {{"query", "malformed percent-encoding"}}});
  }

  if (route.op != etsi::Op::kStatus) {
    if (auto refusal = wrap_refusal(outside, sae, route)) co_return std::move(*refusal);
  }

  switch (route.op) {
    case etsi::Op::kStatus: {
      auto op = service.status(sae, route.sae);
      const SaeStatus st = co_await std::move(op);
      if (st.status != 200) co_return service_error(st.status, st.message, {}, st.retry_after_s);
      json::object o{{"source_KME_ID", st.source_kme_id},
                     {"target_KME_ID", st.target_kme_id},
                     {"master_SAE_ID", sae},
                     {"slave_SAE_ID", route.sae},
                     {"key_size", st.key_size},
                     {"stored_key_count", st.stored_key_count},
                     {"max_key_count", st.max_key_count},
                     {"max_key_per_request", st.max_key_per_request},
                     {"max_key_size", st.max_key_size},
                     {"min_key_size", st.min_key_size},
                     {"max_SAE_ID_count", 0}};
      HttpResponse r;
      r.body = json::serialize(o);
      r.headers.emplace_back("Cache-Control", "no-store");
      co_return r;
    }
    case etsi::Op::kEncKeys: {
      auto parsed = get ? etsi::enc_request_from_query(*query, limits)
                        : etsi::enc_request_from_body(req.body, limits);
      if (auto* e = std::get_if<etsi::Error>(&parsed)) co_return reply(*e);
      const etsi::KeyRequest kr = std::get<etsi::KeyRequest>(parsed);
      auto op = service.enc_keys(sae, route.sae, kr.number, kr.size);
      SaeResult res = co_await std::move(op);
      if (res.status != 200) {
        co_return service_error(res.status, res.message, res.details, res.retry_after_s);
      }
      if (route.wrapped) co_return wrapped_container(outside.at(sae), sae, route.sae, res.keys);
      co_return key_container(res.keys);
    }
    case etsi::Op::kDecKeys: {
      auto parsed = get ? etsi::dec_request_from_query(*query, limits)
                        : etsi::dec_request_from_body(req.body, limits);
      if (auto* e = std::get_if<etsi::Error>(&parsed)) co_return reply(*e);
      auto op =
          service.dec_keys(sae, route.sae, std::get<std::vector<std::string>>(std::move(parsed)));
      SaeResult res = co_await std::move(op);
      if (res.status != 200) {
        co_return service_error(res.status, res.message, res.details, res.retry_after_s);
      }
      if (route.wrapped) co_return wrapped_container(outside.at(sae), route.sae, sae, res.keys);
      co_return key_container(res.keys);
    }
  }
  co_return reply(etsi::Error{503, "internal error of the KME", {}});
}

}  // namespace

EtsiServer::EtsiServer(asio::io_context& io, SaeKeyService& service, EtsiServerOptions options,
                       EtsiSpawn spawn)
    : io_(io),
      service_(service),
      options_(std::move(options)),
      spawn_(std::move(spawn)),
      port_(options_.port) {
  if (!options_.insecure) {
    qkdn::net::TlsSettings s;
    s.server = true;
    s.tls13_only = true;
    s.verify_peer = true;  // mutual TLS: an SAE without a certificate of the CA fails
    s.strongest_groups = true;
    s.ca_label = "--etsi-ca";
    s.cert_label = "--etsi-cert";
    s.key_label = "--etsi-key";
    tls_ =
        qkdn::net::make_tls_context({options_.ca_file, options_.cert_file, options_.key_file}, s);
  }
  for (const auto& [sae, cert] : options_.outside_sae_certs) {
    outside_saes_.emplace(
        sae, wrap::load_recipient(sae, cert, options_.outside_sae_ca, std::time(nullptr)));
  }
}

EtsiServer::~EtsiServer() = default;

std::uint16_t EtsiServer::bind() {
  boost::system::error_code ec;
  const auto addr = asio::ip::make_address(options_.host, ec);
  if (ec) throw InvalidArgument("--etsi-listen: not an IP address: " + options_.host);
  qkdn::net::HttpServerOptions o;
  o.name = "etsi";
  o.max_header_bytes = kHeaderLimit;
  o.max_body_bytes = kBodyLimit;
  o.handshake_timeout = options_.handshake_timeout;
  o.read_timeout = options_.read_timeout;
  o.idle_timeout = options_.idle_timeout;
  o.max_connections = options_.max_connections;
  o.max_unauthenticated = std::min(options_.max_unauthenticated, options_.max_connections);
  if (!options_.insecure) o.client_role = qkdn::net::PeerRole::kSae;
  o.log = [](std::string_view line) { log_line(LogLevel::kWarn, std::string(line)); };
  o.error_body = [](int status, std::string_view detail) {
    return reply(etsi::Error{
        status, std::string(qkdn::net::reason_phrase(status)), {{"http", std::string(detail)}}});
  };
  o.spawn = spawn_;
  SaeKeyService* service = &service_;
  const Recipients* outside = &outside_saes_;
  const bool insecure = options_.insecure;
  auto admission = [service, insecure](const HttpRequest& head) {
    return admit(*service, insecure, head);
  };
  auto handler = [service, outside](HttpRequest req) -> asio::awaitable<HttpResponse> {
    auto op = handle(*service, *outside, std::move(req));
    co_return co_await std::move(op);
  };
  // Method, path (never the query: it carries key IDs) and status, at debug level only.
  auto observer = [](const std::string& method, int status, double) {
    log_line(LogLevel::kDebug, "etsi: " + method + " -> " + std::to_string(status));
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

void EtsiServer::start() {
  if (http_) http_->start();
}

void EtsiServer::stop() {
  if (http_) http_->stop();
}

}  // namespace qkdn::agent
