// The project's one HTTP/1.1 server (Boost.Beast, C++20 coroutines), used by the northbound API,
// the agent's ETSI GS QKD 014 listener and the agent's admin listener.
//
// - One strand per connection; a deadline on the TLS handshake, on every request (header and
//   body together), on the keep-alive wait and on every write.
// - Pre-authentication limits: at most `max_connections` open connections (further ones are
//   closed at once) and, of those, at most `max_unauthenticated` that have not yet authenticated
//   (TLS handshakes in progress included): a newcomer beyond that closes the unauthenticated
//   connection that has waited longest (once it has waited a second), so a flood of silent
//   connections cannot lock out a client that authenticates promptly.
// - Authentication before the body: the admission hook sees each request's header and either
//   refuses it (the body is never read) or admits it with its own body limit (a small default
//   outside the routes that need large bodies).
// - A failed accept (EMFILE, ENFILE...) pauses the accept loop (AcceptBackoff) instead of
//   spinning.
// - Responses marked `secret` (key material) are wiped once written.
// Include only from translation units that need Asio.
#pragma once

#include <any>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>

#include "qkdn/net/listener.hpp"
#include "qkdn/net/tls.hpp"

namespace qkdn::net {

/// A request handed to the admission hook (without body) and to the handler (with body).
/// Header names are lower-case.
struct HttpRequest {
  std::string method;  ///< "GET", "POST", ...
  std::string target;  ///< as received: path and query
  unsigned version = 11;
  std::map<std::string, std::string> headers;
  std::string body;
  std::string remote;         ///< "ip:port"
  std::string peer_identity;  ///< TLS client identity in HttpServerOptions::client_role, or ""
  std::any admission;         ///< what the admission hook attached (HttpAdmission::data)
  /// The header's value or "" when absent.
  [[nodiscard]] std::string header(const std::string& lower_name) const {
    auto it = headers.find(lower_name);
    return it == headers.end() ? std::string{} : it->second;
  }
};

/// A response produced by the handler or the admission hook.
struct HttpResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  /// When set, sent instead of `body` without a copy (cached pages shared by many responses).
  std::shared_ptr<const std::string> shared_body;
  std::vector<std::pair<std::string, std::string>> headers;
  bool secret = false;  ///< `body` holds key material: wiped (OPENSSL_cleanse) once written
};

/// The admission hook's decision on a request whose header has arrived.
struct HttpAdmission {
  /// Answer with this at once: the body is never read and the connection closes afterwards.
  std::optional<HttpResponse> refusal;
  std::size_t body_limit = 0;  ///< this request's body limit; 0 = HttpServerOptions::max_body_bytes
  bool authenticated = false;  ///< the connection counts as authenticated from now on
  std::any data;               ///< handed to the handler as HttpRequest::admission
};

/// Decides on a request from its header (body empty). Runs on the connection's strand; must not
/// block. Empty: every request is admitted with the default body limit, and no connection ever
/// counts as authenticated.
using HttpAdmit = std::function<HttpAdmission(const HttpRequest& head)>;
/// Handles one admitted request; runs on the connection's strand. Exceptions become 500s.
using HttpHandler = std::function<boost::asio::awaitable<HttpResponse>(HttpRequest)>;
/// Called once per answered request (method, status, seconds) for metrics. May be empty.
using HttpObserver = std::function<void(const std::string& method, int status, double seconds)>;
/// Formats the answers the server produces itself (400, 413, 431, 500). Empty: RFC 9457
/// application/problem+json.
using HttpErrorFormatter = std::function<HttpResponse(int status, std::string_view detail)>;
/// Starts a root coroutine (the agent accounts for them to drain on stop). Empty: co_spawn with
/// a completion that logs exceptions.
using HttpSpawn = std::function<void(const boost::asio::any_io_executor&,
                                     boost::asio::awaitable<void>, std::string what)>;

/// Limits, timers and hooks of one listener.
struct HttpServerOptions {
  std::string name = "http";  ///< prefix of log lines ("api", "etsi", "admin")
  std::size_t max_header_bytes = std::size_t{16} << 10;  ///< larger headers answer 431
  std::size_t max_body_bytes = std::size_t{64} << 10;  ///< unless the admission hook says otherwise
  std::chrono::milliseconds handshake_timeout{5'000};  ///< TLS handshake
  std::chrono::milliseconds read_timeout{10'000};      ///< a whole request (header and body)
  std::chrono::milliseconds idle_timeout{60'000};      ///< keep-alive wait for the next request
  std::chrono::milliseconds write_timeout{10'000};
  std::size_t max_connections = 1024;  ///< open connections
  /// Of those, not yet authenticated (TLS handshakes too); at most max_connections / 2. Beyond
  /// it a newcomer closes the one that has waited longest if that one has waited
  /// unauthenticated_min_age, else the newcomer is closed.
  std::size_t max_unauthenticated = 256;
  std::chrono::milliseconds unauthenticated_min_age{1000};
  /// TLS with client certificates: the role whose ID HttpRequest::peer_identity carries. A
  /// connection whose verified certificate names an ID in this role is authenticated.
  std::optional<PeerRole> client_role;
  std::string server_header;                  ///< value of the Server header; empty = none
  std::function<void(std::string_view)> log;  ///< one line per call; empty = stderr
  HttpErrorFormatter error_body;
  HttpSpawn spawn;
};

/// Accepts connections on an endpoint and serves them. Thread-safe: start() and stop() may be
/// called from any thread; the server and its sessions run on the io_context's threads.
class HttpServer {
 public:
  /// Binds and listens at once (throws InvalidArgument naming the address when it cannot).
  /// `tls` may be null for plain HTTP; it must outlive the server.
  HttpServer(boost::asio::io_context& io, const boost::asio::ip::tcp::endpoint& endpoint,
             HttpHandler handler, HttpServerOptions options = {},
             boost::asio::ssl::context* tls = nullptr, HttpAdmit admit = {},
             HttpObserver observer = {});
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  /// Starts accepting.
  void start();
  /// Stops accepting and closes open connections (idempotent).
  void stop();
  /// The bound port (useful with port 0).
  [[nodiscard]] std::uint16_t port() const;
  /// Open connections, and of those not yet authenticated, now.
  [[nodiscard]] std::size_t connections() const;
  [[nodiscard]] std::size_t unauthenticated() const;
  /// Connections refused at accept (max_connections) or closed to make room for a newcomer
  /// (max_unauthenticated), so far.
  [[nodiscard]] std::uint64_t refused() const;

  struct State;

 private:
  std::shared_ptr<State> state_;
};

/// Splits "host:port" (IPv4, [IPv6], "*" = 0.0.0.0, or "localhost") into an endpoint; throws
/// InvalidArgument naming the text.
boost::asio::ip::tcp::endpoint parse_endpoint(const std::string& host_port);

/// Standard reason phrase of a status code ("Not Found").
std::string_view reason_phrase(int status) noexcept;

}  // namespace qkdn::net
