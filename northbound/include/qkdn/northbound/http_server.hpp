// A small HTTP/1.1 server on Boost.Beast with C++20 coroutines: one strand per connection,
// bounded header and body sizes, a deadline on every read and write, keep-alive, optional TLS.
// Include only from translation units that need Asio.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>

namespace qkdn::northbound {

namespace net = boost::asio;

/// A parsed request handed to the handler. Header names are lower-case.
struct HttpRequest {
  std::string method;  ///< "GET", "POST", ...
  std::string target;  ///< as received: path and query
  std::map<std::string, std::string> headers;
  std::string body;
  std::string remote;  ///< "ip:port"
  /// The header's value or "" when absent.
  [[nodiscard]] std::string header(const std::string& lower_name) const {
    auto it = headers.find(lower_name);
    return it == headers.end() ? std::string{} : it->second;
  }
};

/// A response produced by the handler.
struct HttpResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  /// When set, sent instead of `body` without a copy (cached pages shared by many responses).
  std::shared_ptr<const std::string> shared_body;
  std::vector<std::pair<std::string, std::string>> headers;
};

/// Handles one request; runs on the connection's strand. Exceptions become 500 problems.
using HttpHandler = std::function<net::awaitable<HttpResponse>(HttpRequest)>;

struct HttpServerOptions {
  std::size_t max_header_bytes = 16 * 1024;
  std::size_t max_body_bytes = 4 * 1024 * 1024;
  std::chrono::milliseconds read_timeout{10'000};  ///< a whole request must arrive within this
  std::chrono::milliseconds idle_timeout{60'000};  ///< keep-alive wait between requests
  std::chrono::milliseconds write_timeout{10'000};
  std::size_t max_connections = 10'000;
};

/// Called once per completed request (method, status, seconds) for metrics. May be empty.
using HttpObserver = std::function<void(const std::string& method, int status, double seconds)>;

/// Accepts connections on an endpoint and serves them with a handler.
class HttpServer {
 public:
  /// Binds and listens immediately (throws InvalidArgument when the address cannot be bound).
  /// `tls` may be null for plain HTTP; it must outlive the server.
  HttpServer(net::io_context& io, const net::ip::tcp::endpoint& endpoint, HttpHandler handler,
             HttpServerOptions options = {}, net::ssl::context* tls = nullptr,
             HttpObserver observer = {});
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  /// Starts accepting (on the io_context's threads).
  void start();
  /// Stops accepting and closes open connections; safe from any thread.
  void stop();
  /// The bound port (useful with port 0).
  [[nodiscard]] std::uint16_t port() const;

  struct State;

 private:
  std::shared_ptr<State> state_;
};

/// Splits "host:port" (IPv4, [IPv6] or name "localhost") into an endpoint; throws InvalidArgument.
net::ip::tcp::endpoint parse_endpoint(const std::string& host_port);

/// Standard reason phrase of a status code ("Not Found").
std::string_view reason_phrase(int status) noexcept;

}  // namespace qkdn::northbound
