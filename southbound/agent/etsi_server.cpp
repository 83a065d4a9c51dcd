// ETSI GS QKD 014 v1.1.1 server of the agent (HTTPS with mutual TLS): see etsi_server.hpp and
// sae_keys.hpp.
#include "etsi_server.hpp"

#include <algorithm>
#include <array>
#include <charconv>
#include <map>
#include <optional>
#include <set>
#include <string_view>
#include <utility>
#include <variant>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/json.hpp>

#include "log.hpp"
#include "qkdn/controller/error.hpp"

namespace qkdn::agent {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace json = boost::json;
using tcp = net::ip::tcp;
using namespace std::chrono_literals;

namespace {

constexpr std::size_t kBodyLimit = 64 * 1024;
constexpr std::size_t kHeaderLimit = 8 * 1024;
constexpr std::size_t kMaxIdLength = 256;  // SAE IDs and key IDs
constexpr auto kHandshakeTimeout = 10s;
constexpr auto kReadTimeout = 30s;  // idle keep-alive connections end after this
constexpr auto kWriteTimeout = 10s;
constexpr auto kShutdownTimeout = 2s;
constexpr auto kTuple = net::as_tuple(net::use_awaitable);
constexpr std::string_view kPrefix = "/api/v1/keys/";

// ---- identities ---------------------------------------------------------------------------------

/// The SAE named by a verified client certificate: the first SAN URI urn:qkdn:sae:<id> or
/// urn:qkdn:km:<id>, else the subject CN; empty when there is none.
std::string sae_identity(SSL* ssl) {
  if (ssl == nullptr || SSL_get_verify_result(ssl) != X509_V_OK) return {};
  std::unique_ptr<X509, decltype(&X509_free)> cert(SSL_get1_peer_certificate(ssl), &X509_free);
  if (!cert) return {};
  std::string id;
  auto* names = static_cast<GENERAL_NAMES*>(
      X509_get_ext_d2i(cert.get(), NID_subject_alt_name, nullptr, nullptr));
  if (names != nullptr) {
    for (int i = 0; i < sk_GENERAL_NAME_num(names) && id.empty(); ++i) {
      const GENERAL_NAME* n = sk_GENERAL_NAME_value(names, i);
      if (n->type != GEN_URI) continue;
      const std::string_view uri(
          reinterpret_cast<const char*>(ASN1_STRING_get0_data(n->d.uniformResourceIdentifier)),
          static_cast<std::size_t>(ASN1_STRING_length(n->d.uniformResourceIdentifier)));
      for (std::string_view prefix : {"urn:qkdn:sae:", "urn:qkdn:km:"}) {
        if (uri.starts_with(prefix) && uri.size() > prefix.size()) {
          id = std::string(uri.substr(prefix.size()));
          break;
        }
      }
    }
    GENERAL_NAMES_free(names);
  }
  if (!id.empty()) return id;
  X509_NAME* subject = X509_get_subject_name(cert.get());
  const int idx = X509_NAME_get_index_by_NID(subject, NID_commonName, -1);
  if (idx < 0) return {};
  unsigned char* utf8 = nullptr;
  const int len =
      ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, idx)));
  if (len < 0) return {};
  std::string out(reinterpret_cast<const char*>(utf8), static_cast<std::size_t>(len));
  OPENSSL_free(utf8);
  return out;
}

std::string ssl_reason() {
  const unsigned long e = ERR_peek_last_error();
  ERR_clear_error();
  if (e == 0) return "unknown error";
  std::array<char, 256> buf{};
  ERR_error_string_n(e, buf.data(), buf.size());
  return buf.data();
}

std::unique_ptr<net::ssl::context> make_server_tls(const EtsiServerOptions& o) {
  auto ctx = std::make_unique<net::ssl::context>(net::ssl::context::tls_server);
  SSL_CTX* native = ctx->native_handle();
  if (SSL_CTX_set_min_proto_version(native, TLS1_2_VERSION) != 1) {
    throw Internal("ETSI TLS: cannot require TLS 1.2 or newer");
  }
  ctx->set_options(net::ssl::context::default_workarounds | net::ssl::context::no_compression |
                   net::ssl::context::single_dh_use);
  auto load = [&](const std::string& flag, const std::string& path, auto&& fn) {
    if (path.empty()) throw InvalidArgument(flag + ": no file given (or use --etsi-insecure)");
    boost::system::error_code ec;
    fn(path, ec);
    if (ec) throw InvalidArgument(flag + " '" + path + "': " + ssl_reason());
  };
  load("--etsi-ca", o.ca_file,
       [&](const std::string& p, boost::system::error_code& ec) { ctx->load_verify_file(p, ec); });
  load("--etsi-cert", o.cert_file, [&](const std::string& p, boost::system::error_code& ec) {
    ctx->use_certificate_chain_file(p, ec);
  });
  load("--etsi-key", o.key_file, [&](const std::string& p, boost::system::error_code& ec) {
    ctx->use_private_key_file(p, net::ssl::context::pem, ec);
  });
  if (SSL_CTX_check_private_key(native) != 1) {
    ERR_clear_error();
    throw InvalidArgument("--etsi-key '" + o.key_file + "' does not match --etsi-cert '" +
                          o.cert_file + "'");
  }
  // Mutual TLS: an SAE without a certificate chained to the CA fails the handshake.
  ctx->set_verify_mode(net::ssl::verify_peer | net::ssl::verify_fail_if_no_peer_cert);
  return ctx;
}

// ---- replies
// --------------------------------------------------------------------------------------

struct Reply {
  http::status status = http::status::ok;
  std::string body;
  std::string allow;    ///< Allow header of a 405
  bool secret = false;  ///< body holds key bytes: wiped after it is written
};

using Details = std::vector<std::pair<std::string, std::string>>;

/// The ETSI Error object: {"message": ..., "details": [{name: text}, ...]}.
Reply error(http::status status, const std::string& message, const Details& details = {}) {
  json::array d;
  for (const auto& [name, text] : details) d.push_back(json::object{{name, text}});
  return Reply{status,
               json::serialize(json::object{{"message", message}, {"details", std::move(d)}}),
               {},
               false};
}

Reply bad_request(const std::string& message, const std::string& name, const std::string& text) {
  return error(http::status::bad_request, message, {{name, text}});
}

/// An error reported by the SAE key service (400, 401, 503; anything else becomes 503).
Reply service_error(int status, const std::string& message,
                    const std::vector<std::string>& details) {
  http::status s = http::status::service_unavailable;
  if (status == 400 || status == 401 || status == 503) s = static_cast<http::status>(status);
  Details d;
  for (const auto& text : details) d.emplace_back("detail", text);
  return error(s, message.empty() ? std::string(http::obsolete_reason(s)) : message, d);
}

/// Key container {"keys":[{"key_ID":..,"key":<base64>}]} built in one buffer sized up front, so
/// that no reallocation leaves a stray copy of key material behind.
Reply key_container(const std::vector<SaeKey>& keys) {
  std::vector<std::string> ids;
  ids.reserve(keys.size());
  std::size_t total = 16;
  for (const auto& k : keys) {
    ids.push_back(json::serialize(json::string(k.key_id)));
    total += ids.back().size() + 4 * ((k.bytes.size() + 2) / 3) + 32;
  }
  Reply r;
  r.secret = true;
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

// ---- request parsing ----------------------------------------------------------------------------

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/// Percent-decoding ('+' is a space in queries only); nullopt on a malformed escape.
std::optional<std::string> percent_decode(std::string_view in, bool query) {
  std::string out;
  out.reserve(in.size());
  for (std::size_t i = 0; i < in.size(); ++i) {
    const char c = in[i];
    if (c == '%') {
      if (i + 2 >= in.size()) return std::nullopt;
      const int hi = hex_value(in[i + 1]);
      const int lo = hex_value(in[i + 2]);
      if (hi < 0 || lo < 0) return std::nullopt;
      out += static_cast<char>(hi * 16 + lo);
      i += 2;
    } else if (c == '+' && query) {
      out += ' ';
    } else {
      out += c;
    }
  }
  return out;
}

using Query = std::map<std::string, std::vector<std::string>>;

std::optional<Query> parse_query(std::string_view q) {
  Query out;
  while (!q.empty()) {
    const auto amp = q.find('&');
    const std::string_view item = q.substr(0, amp);
    q = amp == std::string_view::npos ? std::string_view{} : q.substr(amp + 1);
    if (item.empty()) continue;
    const auto eq = item.find('=');
    auto name = percent_decode(item.substr(0, eq), true);
    auto value = percent_decode(
        eq == std::string_view::npos ? std::string_view{} : item.substr(eq + 1), true);
    if (!name || !value) return std::nullopt;
    out[*name].push_back(std::move(*value));
  }
  return out;
}

/// A strict decimal integer (optional '-'), nullopt when not one or out of int64 range.
std::optional<std::int64_t> parse_integer(std::string_view text) {
  std::int64_t v = 0;
  if (text.empty() || text.front() == '+') return std::nullopt;
  const auto* end = text.data() + text.size();
  auto [p, ec] = std::from_chars(text.data(), end, v);
  if (ec != std::errc{} || p != end) return std::nullopt;
  return v;
}

/// An integer JSON value (int64 or uint64 that fits), nullopt for anything else.
std::optional<std::int64_t> json_integer(const json::value& v) {
  if (v.is_int64()) return v.as_int64();
  if (v.is_uint64() && v.as_uint64() <= static_cast<std::uint64_t>(INT64_MAX)) {
    return static_cast<std::int64_t>(v.as_uint64());
  }
  return std::nullopt;
}

/// Parses a request body as a JSON object; an empty body is {}.
std::optional<json::object> parse_body(const std::string& body, std::string& why) {
  if (body.find_first_not_of(" \t\r\n") == std::string::npos) return json::object{};
  boost::system::error_code ec;
  json::value v = json::parse(body, ec);
  if (ec) {
    why = "malformed JSON: " + ec.message();
    return std::nullopt;
  }
  if (!v.is_object()) {
    why = "expected a JSON object";
    return std::nullopt;
  }
  return std::move(v.as_object());
}

/// Validated enc_keys parameters, or the 400 reply.
struct KeyRequest {
  std::int64_t number = 1;
  std::int64_t size = 0;
};

std::optional<Reply> check_number_size(const KeyRequest& r, const SaeLimits& l) {
  if (r.number < 1 || r.number > l.max_key_per_request) {
    return bad_request("requested parameters do not adhere to KME rules", "number_unsupported",
                       "number " + std::to_string(r.number) + " is not in [1, " +
                           std::to_string(l.max_key_per_request) + "] (max_key_per_request)");
  }
  if (r.size < l.min_key_size || r.size > l.max_key_size || r.size % 8 != 0) {
    return bad_request("requested parameters do not adhere to KME rules", "size_unsupported",
                       "size " + std::to_string(r.size) + " is not a multiple of 8 in [" +
                           std::to_string(l.min_key_size) + ", " + std::to_string(l.max_key_size) +
                           "] bits");
  }
  return std::nullopt;
}

std::variant<KeyRequest, Reply> enc_request_from_query(const Query& q, const SaeLimits& l) {
  KeyRequest r;
  r.size = l.default_key_size;
  for (const auto& [name, values] : q) {
    if (name != "number" && name != "size") {
      return bad_request("bad request format", "query", "unknown parameter '" + name + "'");
    }
    if (values.size() != 1) {
      return bad_request("bad request format", name, "given more than once");
    }
    const auto v = parse_integer(values.front());
    if (!v) {
      return bad_request("bad request format", name,
                         "expected an integer, got '" + values.front().substr(0, 64) + "'");
    }
    (name == "number" ? r.number : r.size) = *v;
  }
  if (auto bad = check_number_size(r, l)) return std::move(*bad);
  return r;
}

/// `key` must be absent or an array of objects (extension_mandatory, extension_optional).
bool array_of_objects(const json::value& v) {
  if (!v.is_array()) return false;
  return std::all_of(v.as_array().begin(), v.as_array().end(),
                     [](const json::value& e) { return e.is_object(); });
}

std::variant<KeyRequest, Reply> enc_request_from_body(const std::string& body, const SaeLimits& l) {
  std::string why;
  auto obj = parse_body(body, why);
  if (!obj) return bad_request("bad request format", "body", why);
  KeyRequest r;
  r.size = l.default_key_size;
  for (const char* name : {"number", "size"}) {
    if (const auto* v = obj->if_contains(name)) {
      const auto n = json_integer(*v);
      if (!n) return bad_request("bad request format", name, "expected an integer");
      (std::string_view(name) == "number" ? r.number : r.size) = *n;
    }
  }
  if (const auto* v = obj->if_contains("additional_slave_SAE_IDs")) {
    if (!v->is_array() || !std::all_of(v->as_array().begin(), v->as_array().end(),
                                       [](const json::value& e) { return e.is_string(); })) {
      return bad_request("bad request format", "additional_slave_SAE_IDs",
                         "expected an array of SAE IDs");
    }
    if (!v->as_array().empty()) {
      return bad_request("requested parameters do not adhere to KME rules",
                         "additional_slave_SAE_IDs",
                         "key multicast is not supported (max_SAE_ID_count is 0)");
    }
  }
  if (const auto* v = obj->if_contains("extension_mandatory")) {
    if (!array_of_objects(*v)) {
      return bad_request("bad request format", "extension_mandatory",
                         "expected an array of objects");
    }
    if (!v->as_array().empty()) {
      json::array names;
      for (const auto& e : v->as_array()) {
        for (const auto& kv : e.as_object()) names.push_back(json::string(kv.key()));
      }
      return bad_request("not all extension_mandatory parameters are supported",
                         "extension_mandatory_unsupported", json::serialize(names));
    }
  }
  if (const auto* v = obj->if_contains("extension_optional")) {
    if (!array_of_objects(*v)) {
      return bad_request("bad request format", "extension_optional",
                         "expected an array of objects");
    }
  }
  if (auto bad = check_number_size(r, l)) return std::move(*bad);
  return r;
}

bool valid_key_id(const std::string& id) {
  return !id.empty() && id.size() <= kMaxIdLength && std::none_of(id.begin(), id.end(), [](char c) {
    return static_cast<unsigned char>(c) < 0x20;
  });
}

std::variant<std::vector<std::string>, Reply> check_key_ids(std::vector<std::string> ids,
                                                            const SaeLimits& l) {
  if (ids.empty()) return bad_request("bad request format", "key_IDs", "no key_ID given");
  if (static_cast<std::int64_t>(ids.size()) > l.max_key_per_request) {
    return bad_request("requested parameters do not adhere to KME rules", "key_IDs",
                       std::to_string(ids.size()) + " key IDs exceed max_key_per_request " +
                           std::to_string(l.max_key_per_request));
  }
  std::set<std::string_view> seen;
  for (const auto& id : ids) {
    if (!valid_key_id(id)) return bad_request("bad request format", "key_ID", "malformed key_ID");
    if (!seen.insert(id).second) {
      return bad_request("bad request format", "key_ID", "key_ID " + id + " given twice");
    }
  }
  return ids;
}

std::variant<std::vector<std::string>, Reply> dec_request_from_query(const Query& q,
                                                                     const SaeLimits& l) {
  std::vector<std::string> ids;
  for (const auto& [name, values] : q) {
    if (name != "key_ID") {
      return bad_request("bad request format", "query", "unknown parameter '" + name + "'");
    }
    ids = values;
  }
  return check_key_ids(std::move(ids), l);
}

std::variant<std::vector<std::string>, Reply> dec_request_from_body(const std::string& body,
                                                                    const SaeLimits& l) {
  std::string why;
  auto obj = parse_body(body, why);
  if (!obj) return bad_request("bad request format", "body", why);
  const auto* list = obj->if_contains("key_IDs");
  if (list == nullptr || !list->is_array()) {
    return bad_request("bad request format", "key_IDs", "expected an array of {\"key_ID\": ...}");
  }
  std::vector<std::string> ids;
  for (const auto& e : list->as_array()) {
    const json::value* id = e.is_object() ? e.as_object().if_contains("key_ID") : nullptr;
    if (id == nullptr || !id->is_string()) {
      return bad_request("bad request format", "key_IDs",
                         "every entry must be an object with a string key_ID");
    }
    ids.emplace_back(id->as_string());
  }
  return check_key_ids(std::move(ids), l);
}

// ---- routing ------------------------------------------------------------------------------------

enum class Op { kStatus, kEncKeys, kDecKeys };

struct Route {
  Op op;
  std::string sae;  ///< the SAE named in the path (slave for status/enc_keys, master for dec_keys)
};

/// Parses the path; a Reply (404) when it names no resource of this server.
std::variant<Route, Reply> match(std::string_view path) {
  auto not_found = [] {
    return error(http::status::not_found, "no such resource",
                 {{"path", "expected /api/v1/keys/{SAE_ID}/status|enc_keys|dec_keys"}});
  };
  if (!path.starts_with(kPrefix)) return not_found();
  path.remove_prefix(kPrefix.size());
  const auto slash = path.find('/');
  if (slash == std::string_view::npos || slash == 0) return not_found();
  const std::string_view what = path.substr(slash + 1);
  Route r{};
  if (what == "status") {
    r.op = Op::kStatus;
  } else if (what == "enc_keys") {
    r.op = Op::kEncKeys;
  } else if (what == "dec_keys") {
    r.op = Op::kDecKeys;
  } else {
    return not_found();
  }
  auto sae = percent_decode(path.substr(0, slash), false);
  if (!sae || sae->empty() || sae->size() > kMaxIdLength) return not_found();
  r.sae = std::move(*sae);
  return r;
}

struct Caller {
  bool insecure = false;
  std::string tls_identity;  ///< verified client certificate identity (TLS)
};

net::awaitable<Reply> handle(SaeKeyService& service, Caller caller,
                             const http::request<http::string_body>& req) {
  const std::string_view target(req.target().data(), req.target().size());
  const auto qpos = target.find('?');
  const std::string_view path = target.substr(0, qpos);
  auto matched = match(path);
  if (auto* r = std::get_if<Reply>(&matched)) co_return std::move(*r);
  const Route route = std::get<Route>(std::move(matched));

  const bool get = req.method() == http::verb::get;
  const bool post = req.method() == http::verb::post;
  if (route.op == Op::kStatus ? !get : !(get || post)) {
    Reply r = error(http::status::method_not_allowed, "method not allowed",
                    {{"method", std::string(req.method_string())}});
    r.allow = route.op == Op::kStatus ? "GET" : "GET, POST";
    co_return r;
  }

  // The calling SAE: its certificate, or X-SAE-ID in the insecure lab mode.
  std::string sae = caller.tls_identity;
  if (caller.insecure) {
    const auto h = req.find("X-SAE-ID");
    if (h != req.end()) sae = std::string(h->value());
    if (sae.empty()) {
      co_return error(http::status::unauthorized, "SAE not identified",
                      {{"X-SAE-ID", "header missing (insecure mode)"}});
    }
  }
  if (sae.empty()) {
    co_return error(http::status::unauthorized, "SAE not identified",
                    {{"certificate", "the client certificate names no SAE"}});
  }
  if (sae.size() > kMaxIdLength || !service.serves(sae)) {
    co_return error(
        http::status::unauthorized, "unauthorized",
        {{"SAE_ID", "SAE " + sae.substr(0, kMaxIdLength) + " is not served by this KME"}});
  }
  // ETSI 014 keys are shared between two SAEs; a key "shared" with oneself is a caller error.
  if (route.sae == sae) {
    co_return bad_request("bad request format", "SAE_ID",
                          "the SAE in the path must differ from the calling SAE");
  }

  const SaeLimits limits = service.limits();
  std::optional<Query> query = Query{};
  if (qpos != std::string_view::npos) query = parse_query(target.substr(qpos + 1));
  if (!query) co_return bad_request("bad request format", "query", "malformed percent-encoding");

  switch (route.op) {
    case Op::kStatus: {
      auto op = service.status(sae, route.sae);
      const SaeStatus st = co_await std::move(op);
      if (st.status != 200) co_return service_error(st.status, st.message, {});
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
      co_return Reply{http::status::ok, json::serialize(o), {}, false};
    }
    case Op::kEncKeys: {
      auto parsed =
          get ? enc_request_from_query(*query, limits) : enc_request_from_body(req.body(), limits);
      if (auto* r = std::get_if<Reply>(&parsed)) co_return std::move(*r);
      const KeyRequest kr = std::get<KeyRequest>(parsed);
      auto op = service.enc_keys(sae, route.sae, kr.number, kr.size);
      SaeResult res = co_await std::move(op);
      if (res.status != 200) co_return service_error(res.status, res.message, res.details);
      co_return key_container(res.keys);
    }
    case Op::kDecKeys: {
      auto parsed =
          get ? dec_request_from_query(*query, limits) : dec_request_from_body(req.body(), limits);
      if (auto* r = std::get_if<Reply>(&parsed)) co_return std::move(*r);
      auto op =
          service.dec_keys(sae, route.sae, std::get<std::vector<std::string>>(std::move(parsed)));
      SaeResult res = co_await std::move(op);
      if (res.status != 200) co_return service_error(res.status, res.message, res.details);
      co_return key_container(res.keys);
    }
  }
  co_return error(http::status::internal_server_error, "unreachable");
}

template <class Stream>
net::awaitable<void> http_loop(SaeKeyService& service, Stream& stream, beast::tcp_stream& low,
                               Caller caller, const std::atomic<bool>& stopping) {
  beast::flat_buffer buffer;
  while (!stopping.load()) {
    http::request_parser<http::string_body> parser;
    parser.body_limit(kBodyLimit);
    parser.header_limit(kHeaderLimit);
    low.expires_after(kReadTimeout);
    auto [rec, rn] = co_await http::async_read(stream, buffer, parser, kTuple);
    Reply reply;
    unsigned version = 11;
    bool keep_alive = true;
    http::request<http::string_body> req;
    if (rec == http::error::body_limit || rec == http::error::header_limit) {
      reply = error(http::status::payload_too_large, "request too large",
                    {{"limit", std::to_string(kBodyLimit) + " bytes of body"}});
      keep_alive = false;
    } else if (rec == http::error::end_of_stream || rec == net::error::eof ||
               rec == beast::error::timeout || rec == net::error::operation_aborted ||
               rec == net::ssl::error::stream_truncated) {
      break;
    } else if (rec) {
      // A malformed request gets a 400; a transport error has nobody to answer.
      if (rec.category() != http::make_error_code(http::error::bad_target).category()) break;
      reply = error(http::status::bad_request, "bad request format", {{"http", rec.message()}});
      keep_alive = false;
    } else {
      req = parser.release();
      version = req.version();
      keep_alive = req.keep_alive();
      try {
        auto op = handle(service, caller, req);
        reply = co_await std::move(op);
      } catch (const std::exception& e) {
        log_line(LogLevel::kError, std::string("etsi: request failed: ") + e.what());
        reply = error(http::status::service_unavailable, "internal error of the KME");
      }
      log_line(LogLevel::kDebug, "etsi: " + std::string(req.method_string()) + " " +
                                     std::string(req.target()) + " -> " +
                                     std::to_string(static_cast<int>(reply.status)));
    }
    http::response<http::string_body> res{reply.status, version};
    res.set(http::field::content_type, "application/json");
    res.set(http::field::cache_control, "no-store");
    if (!reply.allow.empty()) res.set(http::field::allow, reply.allow);
    res.keep_alive(keep_alive);
    res.body() = std::move(reply.body);
    res.prepare_payload();
    low.expires_after(kWriteTimeout);
    auto [wec, wn] = co_await http::async_write(stream, res, kTuple);
    if (reply.secret) OPENSSL_cleanse(res.body().data(), res.body().size());
    if (wec || !keep_alive) break;
  }
}

}  // namespace

// ---- the server ---------------------------------------------------------------------------------

struct EtsiServer::Connection {
  explicit Connection(tcp::socket s) : plain(std::move(s)) {}
  Connection(tcp::socket s, net::ssl::context& ctx) { tls.emplace(std::move(s), ctx); }
  beast::tcp_stream& lowest() { return tls ? beast::get_lowest_layer(*tls) : *plain; }
  std::optional<beast::tcp_stream> plain;
  std::optional<beast::ssl_stream<beast::tcp_stream>> tls;
};

EtsiServer::EtsiServer(net::io_context& io, SaeKeyService& service, EtsiServerOptions options,
                       EtsiSpawn spawn)
    : io_(io),
      service_(service),
      options_(std::move(options)),
      spawn_(std::move(spawn)),
      port_(options_.port),
      strand_(net::make_strand(io)),
      acceptor_(strand_) {
  if (!options_.insecure) tls_ = make_server_tls(options_);
}

EtsiServer::~EtsiServer() = default;

std::uint16_t EtsiServer::bind() {
  boost::system::error_code ec;
  const auto addr = net::ip::make_address(options_.host, ec);
  if (ec) throw InvalidArgument("--etsi-listen: not an IP address: " + options_.host);
  tcp::endpoint ep(addr, port_);
  acceptor_.open(ep.protocol(), ec);
  if (!ec) acceptor_.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) acceptor_.bind(ep, ec);
  if (!ec) acceptor_.listen(net::socket_base::max_listen_connections, ec);
  if (ec) {
    throw Unavailable("etsi: cannot listen on " + options_.host + ":" + std::to_string(port_) +
                      ": " + ec.message());
  }
  port_ = acceptor_.local_endpoint().port();
  return port_;
}

void EtsiServer::start() { spawn_(strand_, accept_loop(), "ETSI 014 accept loop"); }

net::awaitable<void> EtsiServer::accept_loop() {
  for (;;) {
    auto [ec, socket] = co_await acceptor_.async_accept(net::make_strand(io_), kTuple);
    if (ec) {
      if (!acceptor_.is_open() || stopping_.load()) co_return;
      continue;
    }
    if (active_.load() >= options_.max_connections) {
      log_line(LogLevel::kWarn, "etsi: connection limit reached, closing a new connection");
      boost::system::error_code ignored;
      socket.close(ignored);
      continue;
    }
    {
      boost::system::error_code ignored;  // request/response: latency over batching
      socket.set_option(tcp::no_delay(true), ignored);
    }
    ++active_;
    auto conn = tls_ ? std::make_shared<Connection>(std::move(socket), *tls_)
                     : std::make_shared<Connection>(std::move(socket));
    {
      std::lock_guard lock(mutex_);
      std::erase_if(connections_, [](const auto& w) { return w.expired(); });
      connections_.push_back(conn);
    }
    const auto ex = conn->lowest().get_executor();
    spawn_(ex, serve(conn), "ETSI 014 connection");
  }
}

net::awaitable<void> EtsiServer::serve(std::shared_ptr<Connection> conn) {
  struct Release {
    std::atomic<std::size_t>& n;
    ~Release() { --n; }
  } release{active_};
  beast::tcp_stream& low = conn->lowest();
  if (conn->tls) {
    low.expires_after(kHandshakeTimeout);
    auto [hec] = co_await conn->tls->async_handshake(net::ssl::stream_base::server, kTuple);
    if (hec) {
      log_line(LogLevel::kDebug, "etsi: TLS handshake failed: " + hec.message());
      low.close();
      co_return;
    }
    Caller caller{false, sae_identity(conn->tls->native_handle())};
    auto loop = http_loop(service_, *conn->tls, low, std::move(caller), stopping_);
    co_await std::move(loop);
    if (low.socket().is_open()) {
      low.expires_after(kShutdownTimeout);
      auto [sec] = co_await conn->tls->async_shutdown(kTuple);
      (void)sec;
    }
  } else {
    Caller caller{true, {}};
    auto loop = http_loop(service_, low, low, std::move(caller), stopping_);
    co_await std::move(loop);
  }
  boost::system::error_code ignored;
  low.socket().shutdown(tcp::socket::shutdown_both, ignored);
  low.close();
}

void EtsiServer::stop() {
  if (stopping_.exchange(true)) return;
  net::post(strand_, [this] {
    boost::system::error_code ec;
    acceptor_.close(ec);
  });
  std::lock_guard lock(mutex_);
  for (auto& w : connections_) {
    if (auto c = w.lock()) {
      net::post(c->lowest().get_executor(), [c] { c->lowest().close(); });
    }
  }
}

}  // namespace qkdn::agent
