// qkdnctl: the operator command line over the northbound REST API (northbound/README.md).
//
// One file on purpose: the CLI is a thin client (Beast + Asio + Boost.JSON + OpenSSL, options
// through the shared qkdn::base::ArgParser) and one translation unit keeps the build cheap. It
// never links the controller libraries.

#include <openssl/ssl.h>

#include <algorithm>
#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/json.hpp>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <functional>
#include <iostream>
#include <iterator>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "qkdn/base/args.hpp"
#include "qkdn/base/error.hpp"
#include "qkdn/json/reader.hpp"

namespace {

namespace net = boost::asio;
namespace ssl = net::ssl;
namespace beast = boost::beast;
namespace http = beast::http;
namespace json = boost::json;
using tcp = net::ip::tcp;

constexpr const char* kVersion = "qkdnctl 0.1.0";
constexpr std::size_t kMaxPage = 1000;  // the server's max_page_limit
constexpr std::size_t kMaxResponseBytes = std::size_t{256} << 20;
/// Limits of the JSON the CLI reads (answers, topology files), read by the shared strict reader.
constexpr qkdn::json::ParseLimits kJsonLimits{kMaxResponseBytes, 64};

enum ExitCode : int {
  kOk = 0,
  kFailure = 1,
  kUsage = 2,
  kNotFound = 3,
  kAuth = 4,
  kConflict = 5,
  kUnavailable = 6,
};

/// Anything a command cannot do; carries the process exit code and one readable line.
class CliError : public std::runtime_error {
 public:
  CliError(int code, const std::string& what) : std::runtime_error(what), code_(code) {}
  int code() const { return code_; }

 private:
  int code_;
};

[[noreturn]] void usage_error(const std::string& message) { throw CliError(kUsage, message); }

// ---- help texts ---------------------------------------------------------------------------------

// The global options' part comes from their declaration (global_parser), between these parts.
constexpr const char* kMainHelp =
    R"(qkdnctl - operator CLI for the QKDN controller's northbound REST API

Usage: qkdnctl [global options] NOUN [VERB] [arguments] [options]

Commands:
  health                                 controller liveness, store and Ck listener state
  topology get | apply -f FILE           export / apply the whole topology document (-f - = stdin)
  km list | show ID | add ID [--site S] [--trust-level N] [--tags T,...] | set ID [...] | delete ID
  link list | show ID | add ID A B [...] | set ID [...] | delete ID
  app list                               applications (SAEs) and the KM serving each
  peer list | show QKDN_ID | links | delete QKDN_ID   peer controllers (interworking)
  route show SRC DST [--k N] [--metric M] [--min-trust N] [--max-intermediates N]
                     [--avoid-tag T,...] [--explain]
  pin list | set SRC DST KM... | delete SRC DST
  policy get | set MODE [--param k=v ...] [--avoid-tags T,...] [--pair SRC DST] | unset SRC DST
  constraint list | show SRC_SAE DST_SAE | set SRC_SAE DST_SAE [...] | delete SRC_SAE DST_SAE
  schedule list | add SRC DST --keys N --not-before T --not-after T | delete ID
  session list | show ID
  relay list | show ID
  alarm list [--active] | show ID | ack ID | clear ID
  accounting [--sae ID] [--from T] [--to T] [--group-by G]
  ledger                                 reservation ledger: live keys, leases, counts per link
  audit [--limit N]
  metrics                                Prometheus text, raw
  help [NOUN]                            this text, or a noun's help with examples

%GLOBAL_OPTIONS%

Exit codes:
  0  ok
  1  server-side or other error
  2  usage error (bad command line, or the server answered 400/422)
  3  not found (404)
  4  authentication or authorization (401/403, or no token)
  5  conflict or failed precondition (409/412)
  6  unavailable (503, connection refused, timeout)

Errors (RFC 9457 problem+json) are printed on stderr as one line: error 404: KM 'X' not found

Examples:
  export QKDN_API=https://ctl.example:8443 QKDN_TOKEN_FILE=~/.qkdn/admin.token
  export QKDN_CACERT=pki/ca.pem        # the CA of scripts/dev-ca.sh
  qkdnctl topology apply -f net.json
  qkdnctl link list
  qkdnctl route show KM1 KM5 --k 3 --explain
  qkdnctl --output json route show KM1 KM5 | jq '.items[0].kms'
  qkdnctl policy set traffic_adaptive
  qkdnctl alarm ack 17
)";

const std::map<std::string, std::string>& noun_help() {
  static const std::map<std::string, std::string> help{
      {"health", R"(qkdnctl health - controller liveness and readiness

Usage: qkdnctl health
Example:
  qkdnctl health
  qkdnctl -o json health | jq .status
)"},
      {"topology", R"(qkdnctl topology - the whole topology document (docs/topology.md)

Usage:
  qkdnctl topology get                 print the current document (JSON)
  qkdnctl topology apply -f FILE       replace the topology (PUT /api/v1/topology); -f - = stdin
Examples:
  qkdnctl topology get > backup.json
  qkdnctl topology apply -f tests/data/topologies/germany50.json
  generate-net | qkdnctl topology apply -f -
)"},
      {"km", R"(qkdnctl km - key managers

Usage:
  qkdnctl km list [--connected true|false]
  qkdnctl km show ID
  qkdnctl km add ID [--site SITE]
  qkdnctl km set ID --site SITE
  qkdnctl km delete ID
Examples:
  qkdnctl km list
  qkdnctl km add KM9 --site Shinagawa
)"},
      {"link", R"(qkdnctl link - QKD/KMA links, key pools, QBER and states

Usage:
  qkdnctl link list [--km ID] [--admin-state S] [--oper-state S]
  qkdnctl link show ID
  qkdnctl link add ID A B [--key-rate-bps R] [--distance-km D] [--qber Q] [--weight W]
  qkdnctl link set ID [--admin-state enabled|disabled|maintenance] [--qber-threshold X|default]
                      [--pool-floor-bits N|default] [--key-rate-bps R] [--distance-km D] [--qber Q]
                      [--weight W]
  qkdnctl link delete ID
Examples:
  qkdnctl link list --km KM1
  qkdnctl link set L12 --admin-state maintenance
  qkdnctl link set L12 --qber-threshold 0.08 --pool-floor-bits 65536
  qkdnctl link set L12 --weight 3      (routing weight: this link costs 3 hops; default 1)
  qkdnctl link set L12 --qber-threshold default
)"},
      {"peer", R"(qkdnctl peer - peer controllers (other QKDNs) and their Cxi state (docs/cxi.md)

Usage:
  qkdnctl peer list
  qkdnctl peer show QKDN_ID
  qkdnctl peer links [--peer QKDN_ID]   inter-QKDN links and their state
  qkdnctl peer delete QKDN_ID           (delete its inter-QKDN links first)
Peers are added with the topology document or POST /api/v1/peers.
Examples:
  qkdnctl peer list
  qkdnctl peer links --peer QKDN-B
)"},
      {"app", R"(qkdnctl app - applications (SAEs) and the KM serving each

Usage: qkdnctl app list [--km ID]
Example:
  qkdnctl app list
)"},
      {"route", R"(qkdnctl route - computed routes, best first (no side effect)

Usage:
  qkdnctl route show SRC DST [--k N] [--metric key_aware|widest_shortest|hop_count]
                             [--max-hops N] [--avoid-km ID,...] [--avoid-link ID,...] [--explain]
                             [--min-trust N] [--max-intermediates N] [--avoid-tag T,...]
  --explain also lists each route's links and the links routing excluded, and why.
  Trust constraints apply to the KMs between SRC and DST: each at least --min-trust (0..100;
  unrated KMs count as 0), none carrying an --avoid-tag, at most --max-intermediates of them.
  INTERMEDIATES shows each such KM with its trust level (? = unrated).
  Exits 3 when no route exists (the answer and the reason are still printed).
Examples:
  qkdnctl route show KM1 KM5
  qkdnctl route show KM1 KM5 --min-trust 60 --avoid-tag jurisdiction:XX
  qkdnctl route show KM1 KM5 --k 5 --metric hop_count --explain
  qkdnctl -o json route show KM1 KM5 | jq '.items[0].kms'
)"},
      {"pin", R"(qkdnctl pin - manually pinned routes (used by the manual rerouting mode)

Usage:
  qkdnctl pin list
  qkdnctl pin set SRC DST KM... [--links L1,L2,...]   SRC and DST may be omitted from KM...
  qkdnctl pin delete SRC DST
Examples:
  qkdnctl pin set KM1 KM5 KM2 KM4
  qkdnctl pin delete KM1 KM5
)"},
      {"policy",
       R"(qkdnctl policy - rerouting mode (manual, fixed_rate, traffic_adaptive, scheduled)

Usage:
  qkdnctl policy get
  qkdnctl policy set MODE [--param NAME=VALUE ...] [--avoid-tags T,...] [--pair SRC DST]
  qkdnctl policy unset SRC DST             remove a per-pair override
  Trust constraints of the policy's routes: --param min_trust_level=N (0..100),
  --param max_intermediates=N (-1 = unlimited) and --avoid-tags.
Examples:
  qkdnctl policy set traffic_adaptive
  qkdnctl policy set fixed_rate --param metric=hop_count
  qkdnctl policy set manual --pair KM1 KM5
  qkdnctl policy set manual --param min_trust_level=60 --avoid-tags jurisdiction:XX
)"},
      {"constraint",
       R"(qkdnctl constraint - trust constraints of an SAE pair (on top of the policy's)

Usage:
  qkdnctl constraint list
  qkdnctl constraint show SRC_SAE DST_SAE
  qkdnctl constraint set SRC_SAE DST_SAE [--max-intermediates N] [--min-trust N]
                                          [--avoid-tags T,...]
  qkdnctl constraint delete SRC_SAE DST_SAE
  Relays for the SAE pair's sessions take only routes whose intermediate KMs meet them; when
  none does, the relay is refused with the reason (never relaxed).
Examples:
  qkdnctl constraint set SAE-A SAE-B --min-trust 80 --max-intermediates 2
  qkdnctl constraint delete SAE-A SAE-B
)"},
      {"schedule", R"(qkdnctl schedule - scheduled relay windows

Usage:
  qkdnctl schedule list
  qkdnctl schedule add SRC DST --keys N --not-before T --not-after T [--key-size-bits B] [--id ID]
  qkdnctl schedule delete ID
  Times are RFC 3339, e.g. 2026-11-22T08:00:00Z.
Example:
  qkdnctl schedule add KM1 KM5 --keys 1000 --not-before 2026-11-22T08:00:00Z \
      --not-after 2026-11-22T09:00:00Z
)"},
      {"session", R"(qkdnctl session - key-supply sessions

Usage:
  qkdnctl session list [--state S] [--sae ID]
  qkdnctl session show ID
Example:
  qkdnctl session list --state active
)"},
      {"relay", R"(qkdnctl relay - key relays with state and route

Usage:
  qkdnctl relay list [--state S] [--session ID]
  qkdnctl relay show ID
Example:
  qkdnctl relay list --state failed
)"},
      {"alarm", R"(qkdnctl alarm - faults

Usage:
  qkdnctl alarm list [--active] [--severity S] [--link ID] [--km ID]
  qkdnctl alarm show ID
  qkdnctl alarm ack ID
  qkdnctl alarm clear ID
Examples:
  qkdnctl alarm list --active
  qkdnctl alarm ack 17
)"},
      {"ledger", R"(qkdnctl ledger - the key reservation ledger: live keys, the earliest lease, and
reserved / allocated / consumed / released key counts per link (never key IDs)

Usage: qkdnctl ledger
Example:
  qkdnctl ledger
  qkdnctl -o json ledger | jq .overdue_ms
)"},
      {"accounting", R"(qkdnctl accounting - key usage per application and session

Usage: qkdnctl accounting [--sae ID] [--from T] [--to T] [--group-by G]
Example:
  qkdnctl accounting --sae SAE-A --from 2026-11-22T00:00:00Z --to 2026-11-23T00:00:00Z
)"},
      {"audit", R"(qkdnctl audit - security and configuration audit trail

Usage: qkdnctl audit [--limit N]
Example:
  qkdnctl audit --limit 50
)"},
      {"metrics", R"(qkdnctl metrics - the controller's Prometheus metrics, raw text

Usage: qkdnctl metrics
Example:
  qkdnctl metrics | grep qkdn_link_key_pool_bytes
)"},
  };
  return help;
}

// ---- command line -------------------------------------------------------------------------------

/// A parsed command line: positional words and options (repeatable) in order of appearance.
struct Args {
  std::vector<std::string> words;
  std::multimap<std::string, std::string> options;
  std::map<std::string, std::pair<std::string, std::string>> pairs;  ///< two-value options

  /// The option's value; the last one when it was given more than once.
  std::optional<std::string> get(const std::string& name) const {
    auto [lo, hi] = options.equal_range(name);
    if (lo == hi) return std::nullopt;
    return std::prev(hi)->second;
  }
  bool has(const std::string& name) const { return options.count(name) != 0; }
};

/// An option of one command: its name ("--km"), how many values it takes (0: a switch; 2: a pair
/// such as --pair SRC DST), and another spelling ("-f") when it has one.
struct VerbOption {
  std::string name;
  int values = 1;
  const char* alias = nullptr;
};
using VerbOptions = std::vector<VerbOption>;

/// Parses a command's words and options with the shared parser (qkdn/base/args.hpp): every
/// occurrence of an option is kept under its long name, words in order.
Args parse_args(const std::vector<std::string>& argv, const VerbOptions& spec) {
  Args a;
  qkdn::base::ArgParser parser("qkdnctl");
  for (const auto& o : spec) {
    const std::string name = o.name.substr(2);
    if (o.values == 2) {
      parser.option_pair(name, "VALUE VALUE", "",
                         [&a, key = o.name](std::string_view x, std::string_view y) {
                           a.pairs[key] = {std::string(x), std::string(y)};
                         });
    } else if (o.values == 1) {
      parser.option(name, "VALUE", "",
                    [&a, key = o.name](std::string_view v) { a.options.emplace(key, v); });
    } else {
      parser.flag(name, "", [&a, key = o.name](bool on) {
        if (on) {
          a.options.emplace(key, "true");
        } else {
          a.options.erase(key);
        }
      });
    }
    if (o.alias != nullptr) parser.alias(o.alias, name);
  }
  parser.positionals([&a](std::string_view w) { a.words.emplace_back(w); });
  try {
    parser.parse(argv);
  } catch (const qkdn::InvalidArgument& e) {
    usage_error(e.what());
  }
  return a;
}

std::int64_t parse_int(const std::string& what, const std::string& s, std::int64_t lo,
                       std::int64_t hi) {
  try {
    std::size_t used = 0;
    long long v = std::stoll(s, &used);
    if (used == s.size() && v >= lo && v <= hi) return static_cast<std::int64_t>(v);
  } catch (const std::exception&) {
  }
  usage_error(what + " must be an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) +
              "], got '" + s + "'");
}

double parse_number(const std::string& what, const std::string& s) {
  try {
    std::size_t used = 0;
    double v = std::stod(s, &used);
    if (used == s.size()) return v;
  } catch (const std::exception&) {
  }
  usage_error(what + " must be a number, got '" + s + "'");
}

// ---- HTTP client --------------------------------------------------------------------------------

struct Endpoint {
  bool https = false;
  std::string host;
  std::string port;
  std::string prefix;  // path before /api/v1, without a trailing slash
};

Endpoint parse_endpoint(const std::string& url) {
  Endpoint e;
  std::string rest;
  if (url.rfind("http://", 0) == 0) {
    rest = url.substr(7);
  } else if (url.rfind("https://", 0) == 0) {
    e.https = true;
    rest = url.substr(8);
  } else {
    usage_error("--api must start with http:// or https://, got '" + url + "'");
  }
  const auto slash = rest.find('/');
  const std::string hostport = rest.substr(0, slash);
  if (slash != std::string::npos) e.prefix = rest.substr(slash);
  while (!e.prefix.empty() && e.prefix.back() == '/') e.prefix.pop_back();
  if (!hostport.empty() && hostport.front() == '[') {
    const auto close = hostport.find(']');
    if (close == std::string::npos) usage_error("bad IPv6 address in --api '" + url + "'");
    e.host = hostport.substr(1, close - 1);
    if (close + 1 < hostport.size() && hostport[close + 1] == ':') {
      e.port = hostport.substr(close + 2);
    }
  } else if (const auto colon = hostport.rfind(':'); colon != std::string::npos) {
    e.host = hostport.substr(0, colon);
    e.port = hostport.substr(colon + 1);
  } else {
    e.host = hostport;
  }
  if (e.host.empty()) usage_error("no host in --api '" + url + "'");
  if (e.port.empty()) e.port = e.https ? "443" : "80";
  return e;
}

struct Response {
  unsigned status = 0;
  std::string content_type;
  std::string body;
};

struct ClientOptions {
  Endpoint endpoint;
  std::string api_url;
  std::string token;
  std::chrono::milliseconds timeout{30000};
  std::string cacert;
  std::string if_match;
};

/// Sends one request over a fresh connection (the CLI makes few requests; no pooling needed).
/// Connection failures and timeouts throw CliError(kUnavailable).
class Client {
 public:
  explicit Client(ClientOptions options) : options_(std::move(options)) {}

  Response request(http::verb verb, const std::string& target, const std::string& body = {},
                   const std::string& content_type = "application/json") {
    http::request<http::string_body> req{verb, options_.endpoint.prefix + target, 11};
    req.set(http::field::host, options_.endpoint.host);
    req.set(http::field::user_agent, kVersion);
    req.set(http::field::accept, "application/json, application/problem+json, text/plain");
    if (!options_.token.empty()) req.set(http::field::authorization, "Bearer " + options_.token);
    if (!options_.if_match.empty() && verb != http::verb::get) {
      req.set(http::field::if_match, options_.if_match);
    }
    if (!body.empty() || verb == http::verb::put || verb == http::verb::post ||
        verb == http::verb::patch) {
      req.set(http::field::content_type, content_type);
      req.body() = body;
    }
    req.prepare_payload();

    net::io_context ioc;
    Response out;
    std::exception_ptr failure;
    std::optional<ssl::context> tls;
    if (options_.endpoint.https) {
      tls.emplace(ssl::context::tls_client);
      // Plaintext records (the bearer token, API answers) are wiped once consumed.
      SSL_CTX_set_options(tls->native_handle(), SSL_OP_CLEANSE_PLAINTEXT);
      tls->set_verify_mode(ssl::verify_peer);
      try {
        if (options_.cacert.empty()) {
          tls->set_default_verify_paths();
        } else {
          tls->load_verify_file(options_.cacert);
        }
      } catch (const boost::system::system_error& e) {
        throw CliError(kUsage, "cannot load CA file '" + options_.cacert + "': " + e.what());
      }
      net::co_spawn(ioc, round_trip_tls(ioc, *tls, req, out),
                    [&failure](std::exception_ptr e) { failure = std::move(e); });
    } else {
      net::co_spawn(ioc, round_trip_plain(ioc, req, out),
                    [&failure](std::exception_ptr e) { failure = std::move(e); });
    }
    ioc.run();
    if (failure) {
      try {
        std::rethrow_exception(failure);
      } catch (const boost::system::system_error& e) {
        throw_transport(e.code());
      }
    }
    return out;
  }

 private:
  [[noreturn]] void throw_transport(const boost::system::error_code& ec) const {
    const std::string where = "cannot reach " + options_.api_url + ": ";
    if (ec == beast::error::timeout) {
      throw CliError(kUnavailable, where + "timed out after " +
                                       std::to_string(options_.timeout.count() / 1000) + " s");
    }
    if (ec.category() == net::error::get_ssl_category() ||
        ec.category() == net::ssl::error::get_stream_category()) {
      throw CliError(kFailure, where + "TLS: " + ec.message());
    }
    throw CliError(kUnavailable, where + ec.message());
  }

  net::awaitable<void> connect(net::io_context& ioc, beast::tcp_stream& stream) {
    tcp::resolver resolver(ioc);
    stream.expires_after(options_.timeout);
    auto resolve_op =
        resolver.async_resolve(options_.endpoint.host, options_.endpoint.port, net::use_awaitable);
    auto results = co_await std::move(resolve_op);
    auto connect_op = stream.async_connect(results, net::use_awaitable);
    co_await std::move(connect_op);
  }

  template <class Stream>
  net::awaitable<void> exchange(Stream& stream, http::request<http::string_body>& req,
                                Response& out) {
    beast::get_lowest_layer(stream).expires_after(options_.timeout);
    auto write_op = http::async_write(stream, req, net::use_awaitable);
    co_await std::move(write_op);
    beast::flat_buffer buffer;
    http::response_parser<http::string_body> parser;
    parser.body_limit(kMaxResponseBytes);
    if (req.method() == http::verb::head) parser.skip(true);
    auto read_op = http::async_read(stream, buffer, parser, net::use_awaitable);
    co_await std::move(read_op);
    auto& res = parser.get();
    out.status = res.result_int();
    out.content_type = std::string(res[http::field::content_type]);
    out.body = std::move(res.body());
  }

  net::awaitable<void> round_trip_plain(net::io_context& ioc, http::request<http::string_body>& req,
                                        Response& out) {
    beast::tcp_stream stream(ioc);
    auto connect_op = connect(ioc, stream);
    co_await std::move(connect_op);
    auto exchange_op = exchange(stream, req, out);
    co_await std::move(exchange_op);
    boost::system::error_code ignored;
    stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
  }

  net::awaitable<void> round_trip_tls(net::io_context& ioc, ssl::context& ctx,
                                      http::request<http::string_body>& req, Response& out) {
    ssl::stream<beast::tcp_stream> stream(ioc, ctx);
    const std::string& host = options_.endpoint.host;
    boost::system::error_code addr_ec;
    net::ip::make_address(host, addr_ec);
    if (addr_ec && !SSL_set_tlsext_host_name(stream.native_handle(), host.c_str())) {
      throw boost::system::system_error(boost::system::error_code(
          static_cast<int>(::ERR_get_error()), net::error::get_ssl_category()));
    }
    stream.set_verify_callback(ssl::host_name_verification(host));
    auto connect_op = connect(ioc, beast::get_lowest_layer(stream));
    co_await std::move(connect_op);
    beast::get_lowest_layer(stream).expires_after(options_.timeout);
    auto handshake_op = stream.async_handshake(ssl::stream_base::client, net::use_awaitable);
    co_await std::move(handshake_op);
    auto exchange_op = exchange(stream, req, out);
    co_await std::move(exchange_op);
    // A TLS close_notify exchange is courtesy only; the answer is already complete.
    beast::get_lowest_layer(stream).close();
  }

  ClientOptions options_;
};

// ---- API layer ----------------------------------------------------------------------------------

int exit_code_for_status(unsigned status) {
  switch (status) {
    case 400:
    case 422:
      return kUsage;
    case 401:
    case 403:
      return kAuth;
    case 404:
      return kNotFound;
    case 409:
    case 412:
      return kConflict;
    case 503:
      return kUnavailable;
    default:
      return kFailure;
  }
}

/// Throws CliError with a one-line message for any non-2xx answer.
void check(const Response& r) {
  if (r.status >= 200 && r.status < 300) return;
  std::string text;
  try {
    // A problem document (RFC 9457): its detail, else its title; anything else shows the body.
    const auto problem = qkdn::json::parse_object(r.body, "the problem", kJsonLimits);
    qkdn::json::ObjectReader o(problem);
    text = o.opt_string("detail").value_or("");
    if (text.empty()) text = o.opt_string("title").value_or("");
  } catch (const qkdn::InvalidArgument&) {
    text.clear();
  }
  if (text.empty()) {
    text = r.body.substr(0, 200);
    while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
    if (text.empty())
      text = std::string(http::obsolete_reason(static_cast<http::status>(r.status)));
  }
  throw CliError(exit_code_for_status(r.status), "error " + std::to_string(r.status) + ": " + text);
}

std::string percent_encode(const std::string& s) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) != 0 || c == '-' || c == '_' || c == '.' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    }
  }
  return out;
}

using Query = std::vector<std::pair<std::string, std::string>>;

std::string with_query(const std::string& path, const Query& q) {
  std::string out = path;
  char sep = '?';
  for (const auto& [k, v] : q) {
    out += sep;
    out += percent_encode(k) + "=" + percent_encode(v);
    sep = '&';
  }
  return out;
}

/// What every command gets: the client, the output format and the --limit.
struct Context {
  Client& client;
  bool json_output = false;
  std::optional<std::size_t> limit;
  std::size_t page_size = kMaxPage;
};

json::value call(Context& ctx, http::verb verb, const std::string& target,
                 const std::optional<json::value>& body = std::nullopt) {
  auto r = ctx.client.request(verb, target, body ? json::serialize(*body) : std::string{});
  check(r);
  if (r.body.empty()) return nullptr;
  try {
    return qkdn::json::parse(r.body, kJsonLimits);
  } catch (const qkdn::InvalidArgument& e) {
    throw CliError(kFailure,
                   "the server answered " + target + " with invalid JSON (" + e.what() + ")");
  }
}

/// GET a list, following next_cursor until the end (or until ctx.limit items).
json::array fetch_all(Context& ctx, const std::string& path, const Query& query) {
  json::array all;
  std::string cursor;
  for (;;) {
    Query q = query;
    std::size_t want = ctx.page_size;
    if (ctx.limit) want = std::min(want, *ctx.limit - all.size());
    q.emplace_back("limit", std::to_string(want));
    if (!cursor.empty()) q.emplace_back("cursor", cursor);
    auto v = call(ctx, http::verb::get, with_query(path, q));
    if (!v.is_object()) throw CliError(kFailure, "the server answered " + path + " with no object");
    auto& o = v.as_object();
    if (auto* items = o.if_contains("items"); items && items->is_array()) {
      for (auto& item : items->as_array()) all.push_back(std::move(item));
    }
    if (ctx.limit && all.size() >= *ctx.limit) break;
    auto* next = o.if_contains("next_cursor");
    if (next == nullptr || !next->is_string() || next->as_string().empty()) break;
    cursor = std::string(next->as_string());
  }
  return all;
}

// ---- output -------------------------------------------------------------------------------------

void pretty(std::ostream& os, const json::value& v, int indent = 0) {
  const std::string pad(static_cast<std::size_t>(indent) * 2, ' ');
  const std::string inner(static_cast<std::size_t>(indent + 1) * 2, ' ');
  if (v.is_object()) {
    const auto& o = v.as_object();
    if (o.empty()) {
      os << "{}";
      return;
    }
    os << "{\n";
    bool first = true;
    for (const auto& kv : o) {
      if (!first) os << ",\n";
      first = false;
      os << inner << json::serialize(json::string(kv.key())) << ": ";
      pretty(os, kv.value(), indent + 1);
    }
    os << "\n" << pad << "}";
  } else if (v.is_array()) {
    const auto& a = v.as_array();
    if (a.empty()) {
      os << "[]";
      return;
    }
    bool scalars = std::all_of(
        a.begin(), a.end(), [](const json::value& e) { return !e.is_object() && !e.is_array(); });
    if (scalars) {
      os << json::serialize(v);
      return;
    }
    os << "[\n";
    bool first = true;
    for (const auto& e : a) {
      if (!first) os << ",\n";
      first = false;
      os << inner;
      pretty(os, e, indent + 1);
    }
    os << "\n" << pad << "]";
  } else {
    os << json::serialize(v);
  }
}

void print_json(const json::value& v) {
  pretty(std::cout, v);
  std::cout << "\n";
}

std::string fixed(double v, int decimals) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}

/// Bytes as B, KiB, MiB, GiB.
std::string human_bytes(double bytes) {
  static constexpr const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  std::size_t u = 0;
  while (bytes >= 1024.0 && u + 1 < std::size(kUnits)) {
    bytes /= 1024.0;
    ++u;
  }
  return u == 0 ? fixed(bytes, 0) + " B" : fixed(bytes, 1) + " " + kUnits[u];
}

/// Bits per second as bit/s, kbit/s, Mbit/s.
std::string human_rate(double bps) {
  static constexpr const char* kUnits[] = {"bit/s", "kbit/s", "Mbit/s", "Gbit/s"};
  std::size_t u = 0;
  while (bps >= 1000.0 && u + 1 < std::size(kUnits)) {
    bps /= 1000.0;
    ++u;
  }
  return (u == 0 ? fixed(bps, 0) : fixed(bps, 1)) + " " + kUnits[u];
}

const json::value* field(const json::object& o, std::string_view key) {
  auto* v = o.if_contains(key);
  return (v == nullptr || v->is_null()) ? nullptr : v;
}

std::optional<double> number(const json::object& o, std::string_view key) {
  auto* v = field(o, key);
  if (v == nullptr || !v->is_number()) return std::nullopt;
  return v->to_number<double>();
}

std::string text(const json::value& v) {
  if (v.is_string()) return std::string(v.as_string());
  if (v.is_bool()) return v.as_bool() ? "yes" : "no";
  if (v.is_null()) return "-";
  if (v.is_double()) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.6g", v.as_double());
    return buf;
  }
  if (v.is_array()) {
    std::string out;
    for (const auto& e : v.as_array()) out += (out.empty() ? "" : ",") + text(e);
    return out.empty() ? "-" : out;
  }
  return json::serialize(v);
}

std::string str(const json::object& o, std::string_view key) {
  auto* v = field(o, key);
  return v == nullptr ? "-" : text(*v);
}

std::string bits_as_bytes(const json::object& o, std::string_view key) {
  auto n = number(o, key);
  return n ? human_bytes(*n / 8.0) : "-";
}

std::string rate(const json::object& o, std::string_view key) {
  auto n = number(o, key);
  return n ? human_rate(*n) : "-";
}

std::string ratio(const json::object& o, std::string_view key, int decimals = 4) {
  auto n = number(o, key);
  return n ? fixed(*n, decimals) : "-";
}

std::string path_of(const json::object& o, std::string_view key) {
  auto* v = field(o, key);
  if (v == nullptr || !v->is_array()) return "-";
  std::string out;
  for (const auto& e : v->as_array()) out += (out.empty() ? "" : " > ") + text(e);
  return out.empty() ? "-" : out;
}

struct Column {
  std::string header;
  std::function<std::string(const json::object&)> cell;
  bool right = false;  // numbers align right
};

Column col(std::string header, std::string key) {
  return {std::move(header), [key = std::move(key)](const json::object& o) { return str(o, key); },
          false};
}

/// Natural order: numbers compare by value, everything else by text.
bool natural_less(const std::string& a, const std::string& b) {
  char* ea = nullptr;
  char* eb = nullptr;
  const long long na = std::strtoll(a.c_str(), &ea, 10);
  const long long nb = std::strtoll(b.c_str(), &eb, 10);
  if (!a.empty() && !b.empty() && *ea == '\0' && *eb == '\0') return na < nb;
  return a < b;
}

/// Aligned columns; rows sorted by the first column unless `sorted` is false.
void print_table(const json::array& items, const std::vector<Column>& columns, bool sorted = true) {
  std::vector<std::vector<std::string>> rows;
  for (const auto& item : items) {
    if (!item.is_object()) continue;
    std::vector<std::string> row;
    row.reserve(columns.size());
    for (const auto& c : columns) row.push_back(c.cell(item.as_object()));
    rows.push_back(std::move(row));
  }
  if (sorted) {
    std::stable_sort(rows.begin(), rows.end(),
                     [](const auto& x, const auto& y) { return natural_less(x[0], y[0]); });
  }
  std::vector<std::size_t> width;
  width.reserve(columns.size());
  for (const auto& c : columns) width.push_back(c.header.size());
  for (const auto& row : rows) {
    for (std::size_t i = 0; i < row.size(); ++i) width[i] = std::max(width[i], row[i].size());
  }
  auto emit = [&](const std::vector<std::string>& row) {
    std::string line;
    for (std::size_t i = 0; i < row.size(); ++i) {
      const std::string fill(width[i] - row[i].size(), ' ');
      const bool last = i + 1 == row.size();
      if (columns[i].right) {
        line += fill + row[i];
      } else {
        line += row[i] + (last ? "" : fill);
      }
      if (!last) line += "  ";
    }
    std::cout << line << "\n";
  };
  std::vector<std::string> header;
  header.reserve(columns.size());
  for (const auto& c : columns) header.push_back(c.header);
  emit(header);
  for (const auto& row : rows) emit(row);
  if (rows.empty()) std::cout << "(none)\n";
}

/// Flattens one object into key/value rows; nested objects become a.b keys.
void flatten(const json::object& o, const std::string& prefix,
             std::vector<std::pair<std::string, std::string>>& rows) {
  for (const auto& kv : o) {
    const std::string key = prefix + std::string(kv.key());
    if (kv.value().is_object()) {
      flatten(kv.value().as_object(), key + ".", rows);
    } else if (kv.value().is_array() && !kv.value().as_array().empty() &&
               kv.value().as_array().front().is_object()) {
      rows.emplace_back(
          key, std::to_string(kv.value().as_array().size()) + " item(s); see --output json");
    } else {
      rows.emplace_back(key, text(kv.value()));
    }
  }
}

/// Key/value view of one object, values aligned.
void print_object(const json::object& o) {
  std::vector<std::pair<std::string, std::string>> rows;
  flatten(o, {}, rows);
  std::size_t width = 0;
  for (const auto& r : rows) width = std::max(width, r.first.size());
  for (const auto& [key, value] : rows) {
    std::cout << key << std::string(width + 2 - key.size(), ' ') << value << "\n";
  }
}

void show(Context& ctx, const json::value& v) {
  if (ctx.json_output || !v.is_object()) {
    print_json(v);
  } else {
    print_object(v.as_object());
  }
}

void list(Context& ctx, const json::array& items, const std::vector<Column>& columns,
          bool sorted = true) {
  if (ctx.json_output) {
    print_json(items);
  } else {
    print_table(items, columns, sorted);
  }
}

void done(Context& ctx, const json::value& answer, const std::string& message) {
  if (ctx.json_output) {
    print_json(answer.is_null() ? json::value(json::object{{"ok", true}}) : answer);
  } else {
    std::cout << message << "\n";
  }
}

// ---- commands -----------------------------------------------------------------------------------

using Handler = std::function<int(Context&, const std::vector<std::string>&)>;

/// Parses a verb's arguments, checking positional count and options.
Args verb_args(const std::vector<std::string>& argv, const VerbOptions& spec, std::size_t min_words,
               std::size_t max_words, const std::string& synopsis) {
  Args a = parse_args(argv, spec);
  if (a.words.size() < min_words || a.words.size() > max_words) {
    usage_error("usage: " + synopsis);
  }
  return a;
}

const std::string kApi = "/api/v1";

std::string seg(const std::string& id) { return "/" + percent_encode(id); }

int cmd_health(Context& ctx, const std::vector<std::string>& argv) {
  verb_args(argv, {}, 0, 0, "qkdnctl health");
  auto v = call(ctx, http::verb::get, kApi + "/health");
  show(ctx, v);
  return kOk;
}

std::string read_input(const std::string& file) {
  std::ostringstream ss;
  if (file == "-") {
    ss << std::cin.rdbuf();
  } else {
    std::ifstream in(file, std::ios::binary);
    if (!in) usage_error("cannot read '" + file + "'");
    ss << in.rdbuf();
  }
  return ss.str();
}

int cmd_topology(Context& ctx, const std::vector<std::string>& argv) {
  const std::string syn = "qkdnctl topology get | apply -f FILE";
  Args a = verb_args(argv, {{"--file", 1, "-f"}}, 1, 1, syn);
  const std::string& verb = a.words[0];
  if (verb == "get") {
    print_json(call(ctx, http::verb::get, kApi + "/topology"));
    return kOk;
  }
  if (verb != "apply") usage_error("usage: " + syn);
  auto file = a.get("--file");
  if (!file) usage_error("topology apply needs -f FILE (or -f - for stdin)");
  const std::string body = read_input(*file);
  json::value doc;
  try {
    doc = qkdn::json::parse_object(body, "'" + *file + "'", kJsonLimits);
  } catch (const qkdn::InvalidArgument& e) {
    usage_error(e.what());
  }
  auto answer = call(ctx, http::verb::put, kApi + "/topology", doc);
  std::string summary = "topology applied";
  const auto& d = doc.as_object();
  auto count = [&d](const char* key) {
    auto* v = d.if_contains(key);
    return v != nullptr && v->is_array() ? v->as_array().size() : 0;
  };
  summary += ": " + std::to_string(count("kms")) + " KMs, " + std::to_string(count("links")) +
             " links, " + std::to_string(count("applications")) + " applications";
  done(ctx, answer, summary);
  return kOk;
}

const std::vector<Column>& km_columns() {
  static const std::vector<Column> c{
      col("KM", "km_id"),
      col("SITE", "site"),
      {"TRUST", [](const json::object& o) { return str(o, "trust_level"); }, true},
      col("TAGS", "tags"),
      col("CONNECTED", "connected"),
      col("KMA ENDPOINT", "kma_endpoint"),
      col("SAES", "attached"),
      col("LAST SEEN", "last_seen")};
  return c;
}

/// Comma-separated list -> JSON array of strings (empty items dropped; "" = empty list).
json::array string_list(const std::string& s) {
  json::array out;
  std::size_t pos = 0;
  while (pos <= s.size()) {
    const std::size_t comma = std::min(s.find(',', pos), s.size());
    if (comma > pos) out.emplace_back(s.substr(pos, comma - pos));
    pos = comma + 1;
  }
  return out;
}

/// --trust-level N|none and --tags T,... into a KM body.
void add_trust_fields(const Args& a, json::object& body) {
  if (auto t = a.get("--trust-level")) {
    if (*t == "none") {
      body["trust_level"] = nullptr;
    } else {
      body["trust_level"] = parse_int("--trust-level", *t, 0, 100);
    }
  }
  if (auto t = a.get("--tags")) body["tags"] = string_list(*t);
}

int cmd_km(Context& ctx, const std::vector<std::string>& argv) {
  if (argv.empty()) usage_error("usage: qkdnctl km list|show|add|set|delete ...");
  const std::string& verb = argv[0];
  const std::vector<std::string> rest(argv.begin() + 1, argv.end());
  if (verb == "list") {
    Args a = verb_args(rest, {{"--connected", 1}}, 0, 0, "qkdnctl km list [--connected B]");
    Query q;
    if (auto c = a.get("--connected")) q.emplace_back("connected", *c);
    list(ctx, fetch_all(ctx, kApi + "/kms", q), km_columns());
  } else if (verb == "show") {
    Args a = verb_args(rest, {}, 1, 1, "qkdnctl km show ID");
    show(ctx, call(ctx, http::verb::get, kApi + "/kms" + seg(a.words[0])));
  } else if (verb == "add") {
    Args a = verb_args(rest, {{"--site", 1}, {"--trust-level", 1}, {"--tags", 1}}, 1, 1,
                       "qkdnctl km add ID [--site SITE] [--trust-level N] [--tags T,...]");
    json::object body{{"km_id", a.words[0]}};
    if (auto s = a.get("--site")) body["site"] = *s;
    add_trust_fields(a, body);
    done(ctx, call(ctx, http::verb::post, kApi + "/kms", json::value(body)),
         "KM '" + a.words[0] + "' added");
  } else if (verb == "set") {
    Args a = verb_args(rest, {{"--site", 1}, {"--trust-level", 1}, {"--tags", 1}}, 1, 1,
                       "qkdnctl km set ID [--site SITE] [--trust-level N|none] [--tags T,...]");
    json::object body;
    if (auto s = a.get("--site")) body["site"] = *s;
    add_trust_fields(a, body);
    if (body.empty()) {
      usage_error("km set: nothing to change (give --site, --trust-level or --tags)");
    }
    done(ctx, call(ctx, http::verb::patch, kApi + "/kms" + seg(a.words[0]), json::value(body)),
         "KM '" + a.words[0] + "' updated");
  } else if (verb == "delete") {
    Args a = verb_args(rest, {}, 1, 1, "qkdnctl km delete ID");
    done(ctx, call(ctx, http::verb::delete_, kApi + "/kms" + seg(a.words[0])),
         "KM '" + a.words[0] + "' deleted");
  } else {
    usage_error("unknown verb 'km " + verb + "'; see qkdnctl km --help");
  }
  return kOk;
}

const std::vector<Column>& link_columns() {
  static const std::vector<Column> c{
      col("LINK", "link_id"),
      col("A", "a"),
      col("B", "b"),
      col("ADMIN", "admin_state"),
      col("OPER", "oper_state"),
      {"KEYS", [](const json::object& o) { return str(o, "stored_keys"); }, true},
      {"POOL", [](const json::object& o) { return bits_as_bytes(o, "stored_key_bits"); }, true},
      {"KEY RATE", [](const json::object& o) { return rate(o, "key_rate_bps"); }, true},
      {"USE RATE", [](const json::object& o) { return rate(o, "consumption_rate_bps"); }, true},
      {"QBER", [](const json::object& o) { return ratio(o, "qber"); }, true},
      {"DIST",
       [](const json::object& o) {
         auto d = number(o, "distance_km");
         return d ? fixed(*d, 1) + " km" : std::string("-");
       },
       true},
      {"WEIGHT",
       [](const json::object& o) {
         auto w = number(o, "weight");
         return w ? fixed(*w, *w == std::floor(*w) ? 0 : 3) : std::string("1");
       },
       true},
  };
  return c;
}

/// Adds link fields shared by `link add` and `link set` from the options to `body`.
void link_fields(const Args& a, json::object& body) {
  if (auto v = a.get("--key-rate-bps")) body["key_rate_bps"] = parse_number("--key-rate-bps", *v);
  if (auto v = a.get("--distance-km")) body["distance_km"] = parse_number("--distance-km", *v);
  if (auto v = a.get("--qber")) body["qber"] = parse_number("--qber", *v);
  if (auto v = a.get("--weight")) body["weight"] = parse_number("--weight", *v);
  if (auto v = a.get("--admin-state")) {
    if (*v != "enabled" && *v != "disabled" && *v != "maintenance") {
      usage_error("--admin-state must be enabled, disabled or maintenance, got '" + *v + "'");
    }
    body["admin_state"] = *v;
  }
  if (auto v = a.get("--qber-threshold")) {
    body["qber_threshold"] =
        *v == "default" ? json::value(nullptr) : json::value(parse_number("--qber-threshold", *v));
  }
  if (auto v = a.get("--pool-floor-bits")) {
    body["pool_floor_bits"] = *v == "default"
                                  ? json::value(nullptr)
                                  : json::value(parse_int("--pool-floor-bits", *v, 0, INT64_MAX));
  }
}

int cmd_link(Context& ctx, const std::vector<std::string>& argv) {
  if (argv.empty()) usage_error("usage: qkdnctl link list|show|add|set|delete ...");
  const std::string& verb = argv[0];
  const std::vector<std::string> rest(argv.begin() + 1, argv.end());
  const VerbOptions fields{{"--key-rate-bps", 1}, {"--distance-km", 1},    {"--qber", 1},
                           {"--admin-state", 1},  {"--qber-threshold", 1}, {"--pool-floor-bits", 1},
                           {"--weight", 1}};
  if (verb == "list") {
    Args a = verb_args(rest, {{"--km", 1}, {"--admin-state", 1}, {"--oper-state", 1}}, 0, 0,
                       "qkdnctl link list [--km ID] [--admin-state S] [--oper-state S]");
    Query q;
    if (auto v = a.get("--km")) q.emplace_back("km_id", *v);
    if (auto v = a.get("--admin-state")) q.emplace_back("admin_state", *v);
    if (auto v = a.get("--oper-state")) q.emplace_back("oper_state", *v);
    list(ctx, fetch_all(ctx, kApi + "/links", q), link_columns());
  } else if (verb == "show") {
    Args a = verb_args(rest, {}, 1, 1, "qkdnctl link show ID");
    show(ctx, call(ctx, http::verb::get, kApi + "/links" + seg(a.words[0])));
  } else if (verb == "add") {
    Args a = verb_args(rest, fields, 3, 3, "qkdnctl link add ID A B [options]");
    json::object body{{"link_id", a.words[0]}, {"a", a.words[1]}, {"b", a.words[2]}};
    link_fields(a, body);
    done(ctx, call(ctx, http::verb::post, kApi + "/links", json::value(body)),
         "link '" + a.words[0] + "' added");
  } else if (verb == "set") {
    Args a = verb_args(rest, fields, 1, 1, "qkdnctl link set ID [options]");
    json::object body;
    link_fields(a, body);
    if (body.empty()) usage_error("link set: nothing to change; see qkdnctl link --help");
    done(ctx, call(ctx, http::verb::patch, kApi + "/links" + seg(a.words[0]), json::value(body)),
         "link '" + a.words[0] + "' updated");
  } else if (verb == "delete") {
    Args a = verb_args(rest, {}, 1, 1, "qkdnctl link delete ID");
    done(ctx, call(ctx, http::verb::delete_, kApi + "/links" + seg(a.words[0])),
         "link '" + a.words[0] + "' deleted");
  } else {
    usage_error("unknown verb 'link " + verb + "'; see qkdnctl link --help");
  }
  return kOk;
}

std::string nested(const json::object& o, std::string_view outer, std::string_view inner) {
  const auto* v = field(o, outer);
  if (v == nullptr || !v->is_object()) return "-";
  return str(v->as_object(), inner);
}

int cmd_peer(Context& ctx, const std::vector<std::string>& argv) {
  if (argv.empty()) usage_error("usage: qkdnctl peer list|show|links|delete ...");
  const std::string& verb = argv[0];
  const std::vector<std::string> rest(argv.begin() + 1, argv.end());
  if (verb == "list") {
    verb_args(rest, {}, 0, 0, "qkdnctl peer list");
    list(ctx, fetch_all(ctx, kApi + "/peers", {}),
         {col("QKDN", "qkdn_id"),
          col("IDENTITY", "identity"),
          col("ENDPOINT", "endpoint"),
          {"STATE", [](const json::object& o) { return nested(o, "live", "state"); }, false},
          {"SHARE", [](const json::object& o) { return nested(o, "policy", "key_rate_share"); },
           true},
          {"REACHABLE SAES",
           [](const json::object& o) { return nested(o, "live", "reachable_saes"); }, true},
          {"LINKS",
           [](const json::object& o) {
             const auto* v = field(o, "inter_qkdn_links");
             if (v == nullptr || !v->is_array()) return std::string("-");
             std::string out;
             for (const auto& e : v->as_array()) out += (out.empty() ? "" : ",") + text(e);
             return out.empty() ? std::string("-") : out;
           },
           false}});
  } else if (verb == "show") {
    Args a = verb_args(rest, {}, 1, 1, "qkdnctl peer show QKDN_ID");
    show(ctx, call(ctx, http::verb::get, kApi + "/peers" + seg(a.words[0])));
  } else if (verb == "links") {
    Args a = verb_args(rest, {{"--peer", 1}}, 0, 0, "qkdnctl peer links [--peer QKDN_ID]");
    Query q;
    if (auto v = a.get("--peer")) q.emplace_back("peer_qkdn_id", *v);
    list(ctx, fetch_all(ctx, kApi + "/inter-qkdn-links", q),
         {col("LINK", "link_id"), col("GATEWAY KM", "km_id"), col("PEER QKDN", "peer_qkdn_id"),
          col("PEER KM", "peer_km_id"), col("KEY RATE", "key_rate_bps"), col("STATE", "state")});
  } else if (verb == "delete") {
    Args a = verb_args(rest, {}, 1, 1, "qkdnctl peer delete QKDN_ID");
    done(ctx, call(ctx, http::verb::delete_, kApi + "/peers" + seg(a.words[0])),
         "peer '" + a.words[0] + "' deleted");
  } else {
    usage_error("unknown verb 'peer " + verb + "'; see qkdnctl peer --help");
  }
  return kOk;
}

int cmd_app(Context& ctx, const std::vector<std::string>& argv) {
  Args a = verb_args(argv, {{"--km", 1}}, 1, 1, "qkdnctl app list [--km ID]");
  if (a.words[0] != "list") usage_error("usage: qkdnctl app list [--km ID]");
  Query q;
  if (auto v = a.get("--km")) q.emplace_back("km_id", *v);
  list(ctx, fetch_all(ctx, kApi + "/applications", q),
       {col("SAE", "sae_id"), col("KM", "km_id"), col("DECLARED KM", "declared_km_id"),
        col("ATTACHED", "attached"), col("KM CONNECTED", "km_connected")});
  return kOk;
}

/// "B(60) C(?)": a route's intermediate KMs with their trust levels (? = unrated).
std::string intermediates_text(const json::object& route) {
  auto* v = field(route, "intermediates");
  if (v == nullptr || !v->is_array() || v->as_array().empty()) return "-";
  std::string out;
  for (const auto& e : v->as_array()) {
    if (!e.is_object()) continue;
    const auto& k = e.as_object();
    const auto* t = field(k, "trust_level");
    out += (out.empty() ? "" : " ") + str(k, "km_id") + "(" +
           (t == nullptr || t->is_null() ? std::string("?") : text(*t)) + ")";
  }
  return out;
}

int cmd_route(Context& ctx, const std::vector<std::string>& argv) {
  const std::string syn =
      "qkdnctl route show SRC DST [--k N] [--metric M] [--max-hops N] [--avoid-km IDS] "
      "[--avoid-link IDS] [--explain]";
  Args a = verb_args(argv,
                     {{"--k", 1},
                      {"--metric", 1},
                      {"--max-hops", 1},
                      {"--avoid-km", 1},
                      {"--avoid-link", 1},
                      {"--min-trust", 1},
                      {"--max-intermediates", 1},
                      {"--avoid-tag", 1},
                      {"--explain", 0}},
                     3, 3, syn);
  if (a.words[0] != "show") usage_error("usage: " + syn);
  Query q{{"src", a.words[1]}, {"dst", a.words[2]}};
  if (auto v = a.get("--k")) q.emplace_back("k", std::to_string(parse_int("--k", *v, 1, 16)));
  if (auto v = a.get("--metric")) {
    if (*v != "key_aware" && *v != "widest_shortest" && *v != "hop_count") {
      usage_error("--metric must be key_aware, widest_shortest or hop_count, got '" + *v + "'");
    }
    q.emplace_back("metric", *v);
  }
  if (auto v = a.get("--max-hops")) {
    q.emplace_back("max_hops", std::to_string(parse_int("--max-hops", *v, 1, 1000000)));
  }
  if (auto v = a.get("--avoid-km")) q.emplace_back("avoid_kms", *v);
  if (auto v = a.get("--avoid-link")) q.emplace_back("avoid_links", *v);
  if (auto v = a.get("--min-trust")) {
    q.emplace_back("min_trust_level", std::to_string(parse_int("--min-trust", *v, 0, 100)));
  }
  if (auto v = a.get("--max-intermediates")) {
    q.emplace_back("max_intermediates",
                   std::to_string(parse_int("--max-intermediates", *v, 0, 1000)));
  }
  if (auto v = a.get("--avoid-tag")) q.emplace_back("avoid_tags", *v);
  auto answer = call(ctx, http::verb::get, with_query(kApi + "/routes", q));
  const auto& o = answer.as_object();
  const auto* found = o.if_contains("items");
  const bool none = found == nullptr || !found->is_array() || found->as_array().empty();
  if (ctx.json_output) {
    print_json(answer);
    return none ? kNotFound : kOk;
  }
  json::array routes;
  if (auto* items = o.if_contains("items"); items && items->is_array()) {
    std::size_t rank = 0;
    for (const auto& r : items->as_array()) {
      json::object row = r.as_object();
      row["rank"] = ++rank;
      routes.push_back(std::move(row));
    }
  }
  std::cout << "routes " << a.words[1] << " -> " << a.words[2] << " (metric " << str(o, "metric")
            << ")\n";
  print_table(routes,
              {{"#", [](const json::object& r) { return str(r, "rank"); }, true},
               {"HOPS", [](const json::object& r) { return str(r, "hops"); }, true},
               {"COST", [](const json::object& r) { return ratio(r, "cost", 3); }, true},
               {"BOTTLENECK",
                [](const json::object& r) { return bits_as_bytes(r, "bottleneck_bits"); }, true},
               {"KMS", [](const json::object& r) { return path_of(r, "kms"); }},
               {"INTERMEDIATES", [](const json::object& r) { return intermediates_text(r); }}});
  if (auto* refusal = o.if_contains("refusal"); refusal != nullptr && refusal->is_object()) {
    std::cout << "no route (" << str(refusal->as_object(), "code")
              << "): " << str(refusal->as_object(), "detail") << "\n";
  }
  if (a.has("--explain")) {
    std::cout << "\nlinks of each route:\n";
    print_table(routes, {{"#", [](const json::object& r) { return str(r, "rank"); }, true},
                         {"LINKS", [](const json::object& r) { return path_of(r, "links"); }}});
    std::cout << "\nexcluded links:\n";
    json::array excluded;
    if (auto* e = o.if_contains("excluded"); e && e->is_array()) excluded = e->as_array();
    print_table(excluded, {col("LINK", "link_id"), col("A", "a"), col("B", "b"),
                           col("REASONS", "reasons"), col("DETAIL", "detail")});
  }
  return routes.empty() ? kNotFound : kOk;
}

int cmd_pin(Context& ctx, const std::vector<std::string>& argv) {
  if (argv.empty()) usage_error("usage: qkdnctl pin list | set SRC DST KM... | delete SRC DST");
  const std::string& verb = argv[0];
  const std::vector<std::string> rest(argv.begin() + 1, argv.end());
  if (verb == "list") {
    verb_args(rest, {}, 0, 0, "qkdnctl pin list");
    list(ctx, fetch_all(ctx, kApi + "/routes/pinned", {}),
         {{"PAIR",
           [](const json::object& o) { return str(o, "src_km") + " -> " + str(o, "dst_km"); }},
          {"KMS", [](const json::object& o) { return path_of(o, "kms"); }},
          {"LINKS", [](const json::object& o) { return path_of(o, "links"); }},
          col("CREATED", "created_at")});
  } else if (verb == "set") {
    Args a = verb_args(rest, {{"--links", 1}}, 3, 10000,
                       "qkdnctl pin set SRC DST KM... [--links L1,L2,...]");
    const std::string& src = a.words[0];
    const std::string& dst = a.words[1];
    std::vector<std::string> kms(a.words.begin() + 2, a.words.end());
    if (kms.front() != src) kms.insert(kms.begin(), src);
    if (kms.back() != dst) kms.push_back(dst);
    json::array k;
    for (const auto& km : kms) k.emplace_back(km);
    json::object body{{"kms", std::move(k)}};
    if (auto v = a.get("--links")) {
      json::array l;
      std::stringstream ss(*v);
      std::string item;
      while (std::getline(ss, item, ',')) l.emplace_back(item);
      body["links"] = std::move(l);
    }
    done(ctx,
         call(ctx, http::verb::put, kApi + "/routes/pinned" + seg(src) + seg(dst),
              json::value(body)),
         "pinned " + src + " -> " + dst);
  } else if (verb == "delete") {
    Args a = verb_args(rest, {}, 2, 2, "qkdnctl pin delete SRC DST");
    done(
        ctx,
        call(ctx, http::verb::delete_, kApi + "/routes/pinned" + seg(a.words[0]) + seg(a.words[1])),
        "unpinned " + a.words[0] + " -> " + a.words[1]);
  } else {
    usage_error("unknown verb 'pin " + verb + "'; see qkdnctl pin --help");
  }
  return kOk;
}

std::string params_text(const json::object& o) {
  auto* p = field(o, "params");
  if (p == nullptr || !p->is_object() || p->as_object().empty()) return "-";
  std::string out;
  for (const auto& kv : p->as_object()) {
    out += (out.empty() ? "" : " ") + std::string(kv.key()) + "=" + text(kv.value());
  }
  return out;
}

int cmd_policy(Context& ctx, const std::vector<std::string>& argv) {
  if (argv.empty()) usage_error("usage: qkdnctl policy get | set MODE ... | unset SRC DST");
  const std::string& verb = argv[0];
  const std::vector<std::string> rest(argv.begin() + 1, argv.end());
  if (verb == "get") {
    verb_args(rest, {}, 0, 0, "qkdnctl policy get");
    auto v = call(ctx, http::verb::get, kApi + "/policy");
    if (ctx.json_output) {
      print_json(v);
      return kOk;
    }
    const auto& o = v.as_object();
    std::cout << "mode    " << str(o, "mode") << "\nparams  " << params_text(o) << "\navoid   "
              << str(o, "avoid_tags") << "\n";
    json::array overrides;
    if (auto* ov = o.if_contains("overrides"); ov && ov->is_array()) overrides = ov->as_array();
    std::cout << "\nper-pair overrides:\n";
    print_table(
        overrides,
        {{"PAIR",
          [](const json::object& r) { return str(r, "src_km") + " -> " + str(r, "dst_km"); }},
         col("MODE", "mode"),
         {"PARAMS", [](const json::object& r) { return params_text(r); }}});
  } else if (verb == "set") {
    Args a = verb_args(
        rest, {{"--param", 1}, {"--avoid-tags", 1}, {"--pair", 2}}, 1, 1,
        "qkdnctl policy set MODE [--param NAME=VALUE ...] [--avoid-tags T,...] [--pair SRC DST]");
    std::optional<std::pair<std::string, std::string>> pair;
    if (auto it = a.pairs.find("--pair"); it != a.pairs.end()) pair = it->second;
    const std::string& mode = a.words[0];
    if (mode != "manual" && mode != "fixed_rate" && mode != "traffic_adaptive" &&
        mode != "scheduled") {
      usage_error("MODE must be manual, fixed_rate, traffic_adaptive or scheduled, got '" + mode +
                  "'");
    }
    json::object params;
    auto [lo, hi] = a.options.equal_range("--param");
    for (auto it = lo; it != hi; ++it) {
      const auto eq = it->second.find('=');
      if (eq == std::string::npos || eq == 0) {
        usage_error("--param wants NAME=VALUE, got '" + it->second + "'");
      }
      const std::string name = it->second.substr(0, eq);
      const std::string value = it->second.substr(eq + 1);
      char* end = nullptr;
      const double d = std::strtod(value.c_str(), &end);
      if (!value.empty() && end != nullptr && *end == '\0') {
        params[name] = d;
      } else {
        params[name] = value;
      }
    }
    json::object body{{"mode", mode}};
    if (!params.empty()) body["params"] = std::move(params);
    if (auto t = a.get("--avoid-tags")) body["avoid_tags"] = string_list(*t);
    std::string target = kApi + "/policy";
    std::string what = "policy set to " + mode;
    if (pair) {
      target += "/pairs" + seg(pair->first) + seg(pair->second);
      what += " for " + pair->first + " -> " + pair->second;
    }
    done(ctx, call(ctx, http::verb::put, target, json::value(body)), what);
  } else if (verb == "unset") {
    Args a = verb_args(rest, {}, 2, 2, "qkdnctl policy unset SRC DST");
    done(ctx,
         call(ctx, http::verb::delete_, kApi + "/policy/pairs" + seg(a.words[0]) + seg(a.words[1])),
         "override removed for " + a.words[0] + " -> " + a.words[1]);
  } else {
    usage_error("unknown verb 'policy " + verb + "'; see qkdnctl policy --help");
  }
  return kOk;
}

int cmd_constraint(Context& ctx, const std::vector<std::string>& argv) {
  if (argv.empty()) {
    usage_error("usage: qkdnctl constraint list | show SRC DST | set SRC DST ... | delete SRC DST");
  }
  const std::string& verb = argv[0];
  const std::vector<std::string> rest(argv.begin() + 1, argv.end());
  if (verb == "list") {
    verb_args(rest, {}, 0, 0, "qkdnctl constraint list");
    list(ctx, fetch_all(ctx, kApi + "/constraints", {}),
         {col("SRC SAE", "src_sae"),
          col("DST SAE", "dst_sae"),
          {"MAX INTERMEDIATES", [](const json::object& o) { return str(o, "max_intermediates"); },
           true},
          {"MIN TRUST", [](const json::object& o) { return str(o, "min_trust_level"); }, true},
          col("AVOID TAGS", "avoid_tags"),
          col("UPDATED", "updated_at")});
  } else if (verb == "show") {
    Args a = verb_args(rest, {}, 2, 2, "qkdnctl constraint show SRC_SAE DST_SAE");
    show(ctx,
         call(ctx, http::verb::get, kApi + "/constraints" + seg(a.words[0]) + seg(a.words[1])));
  } else if (verb == "set") {
    Args a =
        verb_args(rest, {{"--max-intermediates", 1}, {"--min-trust", 1}, {"--avoid-tags", 1}}, 2, 2,
                  "qkdnctl constraint set SRC_SAE DST_SAE [--max-intermediates N] "
                  "[--min-trust N] [--avoid-tags T,...]");
    json::object body;
    if (auto v = a.get("--max-intermediates")) {
      body["max_intermediates"] = parse_int("--max-intermediates", *v, 0, 1000);
    }
    if (auto v = a.get("--min-trust"))
      body["min_trust_level"] = parse_int("--min-trust", *v, 0, 100);
    if (auto v = a.get("--avoid-tags")) body["avoid_tags"] = string_list(*v);
    done(ctx,
         call(ctx, http::verb::put, kApi + "/constraints" + seg(a.words[0]) + seg(a.words[1]),
              json::value(body)),
         "trust constraints set for " + a.words[0] + " -> " + a.words[1]);
  } else if (verb == "delete") {
    Args a = verb_args(rest, {}, 2, 2, "qkdnctl constraint delete SRC_SAE DST_SAE");
    done(ctx,
         call(ctx, http::verb::delete_, kApi + "/constraints" + seg(a.words[0]) + seg(a.words[1])),
         "trust constraints removed for " + a.words[0] + " -> " + a.words[1]);
  } else {
    usage_error("unknown verb 'constraint " + verb + "'; see qkdnctl constraint --help");
  }
  return kOk;
}

int cmd_schedule(Context& ctx, const std::vector<std::string>& argv) {
  if (argv.empty()) usage_error("usage: qkdnctl schedule list | add SRC DST ... | delete ID");
  const std::string& verb = argv[0];
  const std::vector<std::string> rest(argv.begin() + 1, argv.end());
  if (verb == "list") {
    verb_args(rest, {}, 0, 0, "qkdnctl schedule list");
    list(ctx, fetch_all(ctx, kApi + "/schedules", {}),
         {col("SCHEDULE", "schedule_id"),
          col("SRC", "src_km"),
          col("DST", "dst_km"),
          {"KEYS", [](const json::object& o) { return str(o, "number_of_keys"); }, true},
          {"KEY SIZE", [](const json::object& o) { return str(o, "key_size_bits"); }, true},
          col("NOT BEFORE", "not_before"),
          col("NOT AFTER", "not_after")});
  } else if (verb == "add") {
    const std::string syn =
        "qkdnctl schedule add SRC DST --keys N --not-before T --not-after T [--key-size-bits B] "
        "[--id ID]";
    Args a = verb_args(rest,
                       {{"--keys", 1},
                        {"--not-before", 1},
                        {"--not-after", 1},
                        {"--key-size-bits", 1},
                        {"--id", 1}},
                       2, 2, syn);
    auto keys = a.get("--keys");
    auto nb = a.get("--not-before");
    auto na = a.get("--not-after");
    if (!keys || !nb || !na) usage_error("usage: " + syn);
    json::object body{{"src_km", a.words[0]},
                      {"dst_km", a.words[1]},
                      {"number_of_keys", parse_int("--keys", *keys, 1, INT64_MAX)},
                      {"not_before", *nb},
                      {"not_after", *na}};
    if (auto v = a.get("--key-size-bits")) {
      body["key_size_bits"] = parse_int("--key-size-bits", *v, 1, INT64_MAX);
    }
    if (auto v = a.get("--id")) body["schedule_id"] = *v;
    auto answer = call(ctx, http::verb::post, kApi + "/schedules", json::value(body));
    std::string id;
    if (answer.is_object()) id = str(answer.as_object(), "schedule_id");
    done(ctx, answer, "schedule " + id + " added");
  } else if (verb == "delete") {
    Args a = verb_args(rest, {}, 1, 1, "qkdnctl schedule delete ID");
    done(ctx, call(ctx, http::verb::delete_, kApi + "/schedules" + seg(a.words[0])),
         "schedule " + a.words[0] + " deleted");
  } else {
    usage_error("unknown verb 'schedule " + verb + "'; see qkdnctl schedule --help");
  }
  return kOk;
}

int cmd_session(Context& ctx, const std::vector<std::string>& argv) {
  if (argv.empty()) usage_error("usage: qkdnctl session list | show ID");
  const std::string& verb = argv[0];
  const std::vector<std::string> rest(argv.begin() + 1, argv.end());
  if (verb == "list") {
    Args a = verb_args(rest, {{"--state", 1}, {"--sae", 1}}, 0, 0,
                       "qkdnctl session list [--state S] [--sae ID]");
    Query q;
    if (auto v = a.get("--state")) q.emplace_back("state", *v);
    if (auto v = a.get("--sae")) q.emplace_back("sae_id", *v);
    list(ctx, fetch_all(ctx, kApi + "/sessions", q),
         {col("SESSION", "session_id"),
          col("SRC SAE", "src_sae"),
          col("DST SAE", "dst_sae"),
          col("SRC KM", "src_km"),
          col("DST KM", "dst_km"),
          col("STATE", "state"),
          {"DELIVERED",
           [](const json::object& o) {
             return str(o, "keys_delivered") + "/" + str(o, "keys_requested");
           },
           true},
          col("CREATED", "created_at")});
  } else if (verb == "show") {
    Args a = verb_args(rest, {}, 1, 1, "qkdnctl session show ID");
    show(ctx, call(ctx, http::verb::get, kApi + "/sessions" + seg(a.words[0])));
  } else {
    usage_error("unknown verb 'session " + verb + "'; see qkdnctl session --help");
  }
  return kOk;
}

int cmd_relay(Context& ctx, const std::vector<std::string>& argv) {
  if (argv.empty()) usage_error("usage: qkdnctl relay list | show ID");
  const std::string& verb = argv[0];
  const std::vector<std::string> rest(argv.begin() + 1, argv.end());
  if (verb == "list") {
    Args a = verb_args(rest, {{"--state", 1}, {"--session", 1}}, 0, 0,
                       "qkdnctl relay list [--state S] [--session ID]");
    Query q;
    if (auto v = a.get("--state")) q.emplace_back("state", *v);
    if (auto v = a.get("--session")) q.emplace_back("session_id", *v);
    list(ctx, fetch_all(ctx, kApi + "/relays", q),
         {col("RELAY", "relay_id"),
          col("SESSION", "session_id"),
          col("SRC", "src_km"),
          col("DST", "dst_km"),
          {"KEYS", [](const json::object& o) { return str(o, "number_of_keys"); }, true},
          col("STATE", "state"),
          {"ROUTE",
           [](const json::object& o) {
             auto* r = field(o, "route");
             return r != nullptr && r->is_object() ? path_of(r->as_object(), "kms")
                                                   : std::string("-");
           }},
          {"INTERMEDIATES",
           [](const json::object& o) {
             auto* r = field(o, "route");
             return r != nullptr && r->is_object() ? intermediates_text(r->as_object())
                                                   : std::string("-");
           }},
          col("UPDATED", "updated_at")});
  } else if (verb == "show") {
    Args a = verb_args(rest, {}, 1, 1, "qkdnctl relay show ID");
    show(ctx, call(ctx, http::verb::get, kApi + "/relays" + seg(a.words[0])));
  } else {
    usage_error("unknown verb 'relay " + verb + "'; see qkdnctl relay --help");
  }
  return kOk;
}

int cmd_alarm(Context& ctx, const std::vector<std::string>& argv) {
  if (argv.empty()) usage_error("usage: qkdnctl alarm list | show ID | ack ID | clear ID");
  const std::string& verb = argv[0];
  const std::vector<std::string> rest(argv.begin() + 1, argv.end());
  if (verb == "list") {
    Args a = verb_args(
        rest, {{"--active", 0}, {"--severity", 1}, {"--link", 1}, {"--km", 1}, {"--type", 1}}, 0, 0,
        "qkdnctl alarm list [--active] [--severity S] [--link ID] [--km ID]");
    Query q;
    if (a.has("--active")) q.emplace_back("state", "active");
    if (auto v = a.get("--severity")) q.emplace_back("severity", *v);
    if (auto v = a.get("--link")) q.emplace_back("link_id", *v);
    if (auto v = a.get("--km")) q.emplace_back("km_id", *v);
    if (auto v = a.get("--type")) q.emplace_back("type", *v);
    list(ctx, fetch_all(ctx, kApi + "/alarms", q),
         {{"ID", [](const json::object& o) { return str(o, "id"); }, true},
          col("TYPE", "type"),
          col("SEVERITY", "severity"),
          col("STATE", "state"),
          col("ACK", "acknowledged"),
          col("RESOURCE", "resource"),
          {"COUNT", [](const json::object& o) { return str(o, "count"); }, true},
          col("RAISED", "raised_at"),
          col("TEXT", "text")});
  } else if (verb == "show") {
    Args a = verb_args(rest, {}, 1, 1, "qkdnctl alarm show ID");
    show(ctx, call(ctx, http::verb::get, kApi + "/alarms" + seg(a.words[0])));
  } else if (verb == "ack" || verb == "clear") {
    Args a = verb_args(rest, {}, 1, 1, "qkdnctl alarm " + verb + " ID");
    done(ctx,
         call(ctx, http::verb::post, kApi + "/alarms" + seg(a.words[0]) + "/" + verb,
              json::value(json::object{})),
         "alarm " + a.words[0] + (verb == "ack" ? " acknowledged" : " cleared"));
  } else {
    usage_error("unknown verb 'alarm " + verb + "'; see qkdnctl alarm --help");
  }
  return kOk;
}

int cmd_accounting(Context& ctx, const std::vector<std::string>& argv) {
  Args a = verb_args(argv, {{"--sae", 1}, {"--from", 1}, {"--to", 1}, {"--group-by", 1}}, 0, 0,
                     "qkdnctl accounting [--sae ID] [--from T] [--to T] [--group-by G]");
  Query q;
  if (auto v = a.get("--sae")) q.emplace_back("sae_id", *v);
  if (auto v = a.get("--from")) q.emplace_back("from", *v);
  if (auto v = a.get("--to")) q.emplace_back("to", *v);
  if (auto v = a.get("--group-by")) q.emplace_back("group_by", *v);
  list(ctx, fetch_all(ctx, kApi + "/accounting", q),
       {col("BUCKET", "bucket_start"),
        col("SAE", "sae_id"),
        col("SESSION", "session_id"),
        {"KEYS", [](const json::object& o) { return str(o, "keys"); }, true},
        {"KEY BYTES",
         [](const json::object& o) {
           auto n = number(o, "key_bytes");
           return n ? human_bytes(*n) : std::string("-");
         },
         true}});
  return kOk;
}

int cmd_ledger(Context& ctx, const std::vector<std::string>& argv) {
  verb_args(argv, {}, 0, 0, "qkdnctl ledger");
  auto v = call(ctx, http::verb::get, kApi + "/ledger");
  if (ctx.json_output || !v.is_object()) {
    print_json(v);
    return kOk;
  }
  auto o = v.as_object();
  json::array links;
  if (auto* l = o.if_contains("links"); l != nullptr && l->is_array()) links = l->as_array();
  o.erase("links");
  print_object(o);
  std::cout << "\n";
  auto count = [](const char* key) { return [key](const json::object& x) { return str(x, key); }; };
  print_table(links, {col("LINK", "link_id"),
                      {"RESERVED", count("reserved"), true},
                      {"ALLOCATED", count("allocated"), true},
                      {"CONSUMED", count("consumed"), true},
                      {"RELEASED", count("released"), true}});
  return kOk;
}

int cmd_audit(Context& ctx, const std::vector<std::string>& argv) {
  verb_args(argv, {}, 0, 0, "qkdnctl audit [--limit N]");
  list(ctx, fetch_all(ctx, kApi + "/audit", {}),
       {{"ID", [](const json::object& o) { return str(o, "id"); }, true},
        col("AT", "at"),
        col("ACTOR", "actor"),
        col("ACTION", "action"),
        col("RESOURCE", "resource"),
        col("OUTCOME", "outcome"),
        col("REMOTE", "remote"),
        col("DETAIL", "detail")});
  return kOk;
}

int cmd_metrics(Context& ctx, const std::vector<std::string>& argv) {
  verb_args(argv, {}, 0, 0, "qkdnctl metrics");
  auto r = ctx.client.request(http::verb::get, "/metrics");
  check(r);
  std::cout << r.body;
  return kOk;
}

const std::map<std::string, Handler>& commands() {
  static const std::map<std::string, Handler> c{
      {"health", cmd_health},
      {"topology", cmd_topology},
      {"km", cmd_km},
      {"link", cmd_link},
      {"peer", cmd_peer},
      {"app", cmd_app},
      {"route", cmd_route},
      {"pin", cmd_pin},
      {"policy", cmd_policy},
      {"constraint", cmd_constraint},
      {"schedule", cmd_schedule},
      {"session", cmd_session},
      {"relay", cmd_relay},
      {"alarm", cmd_alarm},
      {"accounting", cmd_accounting},
      {"ledger", cmd_ledger},
      {"audit", cmd_audit},
      {"metrics", cmd_metrics},
  };
  return c;
}

std::string trim(std::string s) {
  const auto ws = " \t\r\n";
  s.erase(0, s.find_first_not_of(ws));
  const auto last = s.find_last_not_of(ws);
  s.erase(last == std::string::npos ? 0 : last + 1);
  return s;
}

/// The token: --token-file, else QKDN_TOKEN, else the file named by QKDN_TOKEN_FILE; may be empty.
std::string load_token(const std::optional<std::string>& token_file) {
  auto from_file = [](const std::string& path) {
    std::ifstream in(path);
    if (!in) usage_error("cannot read token file '" + path + "'");
    std::ostringstream ss;
    ss << in.rdbuf();
    std::string t = trim(ss.str());
    if (t.find('\n') != std::string::npos) t = trim(t.substr(0, t.find('\n')));
    return t;
  };
  if (token_file) return from_file(*token_file);
  if (const char* t = std::getenv("QKDN_TOKEN"); t != nullptr && *t != '\0') return trim(t);
  if (const char* f = std::getenv("QKDN_TOKEN_FILE"); f != nullptr && *f != '\0') {
    return from_file(f);
  }
  return {};
}

/// The global options, accepted anywhere on the line.
struct Globals {
  std::optional<std::string> api;
  std::optional<std::string> token_file;
  std::string output = "table";
  std::optional<std::string> timeout;
  std::optional<std::string> cacert;
  std::optional<std::string> if_match;
  std::optional<std::string> limit;
  std::optional<std::string> page_size;
  bool help = false;
  bool version = false;
};

qkdn::base::ArgParser global_parser(Globals& g) {
  auto keep = [](std::optional<std::string>& target) {
    return [&target](std::string_view v) { target = std::string(v); };
  };
  qkdn::base::ArgParser p("qkdnctl");
  p.section("Global options (anywhere on the line)")
      .option("api", "URL", "API base URL (default: $QKDN_API, else http://127.0.0.1:8080)",
              keep(g.api))
      .option("token-file", "FILE",
              "read the bearer token from FILE (else $QKDN_TOKEN, else the file named by "
              "$QKDN_TOKEN_FILE); there is deliberately no --token flag",
              keep(g.token_file))
      .option("output", "FMT", "table (default, for people) or json (for scripts)",
              [&g](std::string_view v) { g.output = v; })
      .alias("-o", "output")
      .option("timeout", "SECONDS", "per-request deadline (default 30)", keep(g.timeout))
      .option("cacert", "FILE",
              "CA certificate(s) (PEM) to verify an https API (else $QKDN_CACERT, else the "
              "system store); the server name is checked too",
              keep(g.cacert))
      .alias("--ca", "cacert")
      .option("if-match", "ETAG",
              "write commands: only apply if the resource still has this ETag (else 5)",
              keep(g.if_match))
      .option("limit", "N",
              "list commands: stop after N items (default: follow next_cursor to the end)",
              keep(g.limit))
      .option("page-size", "N", "list commands: items per request, 1..1000 (default 1000)",
              keep(g.page_size))
      .flag("help", "help; `qkdnctl NOUN --help` shows a noun's verbs and examples",
            [&g](bool on) { g.help = on; })
      .alias("-h", "help")
      .flag("version", "print the version", [&g](bool on) { g.version = on; });
  return p;
}

/// The main help: commands, the global options from their declaration, exit codes, examples.
std::string main_help() {
  Globals g;
  std::string text = kMainHelp;
  const std::string mark = "%GLOBAL_OPTIONS%\n";
  text.replace(text.find(mark), mark.size(), global_parser(g).help());
  return text;
}

int run(int argc, char** argv) {
  std::vector<std::string> all(argv + 1, argv + argc);
  for (const auto& a : all) {
    if (a == "--") break;
    if (a == "--token" || a.starts_with("--token=")) {
      usage_error(
          "there is no --token flag (it would leak into shell history and ps); use "
          "--token-file FILE, QKDN_TOKEN or QKDN_TOKEN_FILE");
    }
  }
  // Global options are accepted anywhere: the global parser takes them and hands back the
  // command's own words and options, which the command parses with its own spec.
  Globals g;
  std::vector<std::string> rest;
  try {
    global_parser(g).parse_known(all, rest);
  } catch (const qkdn::InvalidArgument& e) {
    usage_error(e.what());
  }
  bool help = g.help;
  if (g.version) {
    std::cout << kVersion << "\n";
    return kOk;
  }
  if (!rest.empty() && rest[0] == "help") {
    help = true;
    rest.erase(rest.begin());
  }
  if (help) {
    if (!rest.empty()) {
      auto h = noun_help().find(rest[0]);
      if (h == noun_help().end()) usage_error("unknown command '" + rest[0] + "'");
      std::cout << h->second;
    } else {
      std::cout << main_help();
    }
    return kOk;
  }
  if (rest.empty()) {
    std::cerr << main_help();
    return kUsage;
  }
  auto cmd = commands().find(rest[0]);
  if (cmd == commands().end()) {
    usage_error("unknown command '" + rest[0] + "'; see qkdnctl --help");
  }

  const std::string& output = g.output;
  if (output != "table" && output != "json") {
    usage_error("--output must be table or json, got '" + output + "'");
  }
  ClientOptions options;
  options.api_url = g.api.value_or("");
  if (options.api_url.empty()) {
    const char* env = std::getenv("QKDN_API");
    options.api_url = (env != nullptr && *env != '\0') ? env : "http://127.0.0.1:8080";
  }
  options.endpoint = parse_endpoint(options.api_url);
  if (const auto& t = g.timeout) {
    const double seconds = parse_number("--timeout", *t);
    if (seconds <= 0 || seconds > 86400) usage_error("--timeout must be in (0, 86400] seconds");
    options.timeout = std::chrono::milliseconds(static_cast<std::int64_t>(seconds * 1000.0));
  }
  options.cacert = g.cacert.value_or("");
  if (options.cacert.empty()) {
    const char* env = std::getenv("QKDN_CACERT");
    if (env != nullptr) options.cacert = env;
  }
  options.if_match = g.if_match.value_or("");
  options.token = load_token(g.token_file);

  Client client(std::move(options));
  Context ctx{client, output == "json", std::nullopt};
  if (const auto& l = g.limit) {
    ctx.limit = static_cast<std::size_t>(parse_int("--limit", *l, 1, 100000000));
  }
  if (const auto& p = g.page_size) {
    ctx.page_size = static_cast<std::size_t>(
        parse_int("--page-size", *p, 1, static_cast<std::int64_t>(kMaxPage)));
  }
  const std::vector<std::string> args(rest.begin() + 1, rest.end());
  return cmd->second(ctx, args);
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const CliError& e) {
    std::cerr << "qkdnctl: " << e.what() << "\n";
    const std::string message = e.what();
    if (e.code() == kUsage && message.rfind("error ", 0) != 0 &&
        message.find("--help") == std::string::npos) {
      std::cerr << "(see qkdnctl --help)\n";
    }
    return e.code();
  } catch (const std::exception& e) {
    std::cerr << "qkdnctl: " << e.what() << "\n";
    return kFailure;
  }
}
