#include "qkdn/northbound/http_server.hpp"

#include <algorithm>
#include <atomic>
#include <mutex>
#include <set>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/http/span_body.hpp>
#include <boost/beast/ssl.hpp>

#include "qkdn/base/log.hpp"
#include "qkdn/controller/error.hpp"

namespace qkdn::northbound {

namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;

namespace {

std::string problem_body(int status, std::string_view kind, std::string_view detail) {
  std::string title(reason_phrase(status));
  // Minimal escaping: details produced here contain no quotes or control characters.
  return std::string("{\"type\":\"urn:qkdn:problem:") + std::string(kind) + "\",\"title\":\"" +
         title + "\",\"status\":" + std::to_string(status) + ",\"detail\":\"" +
         std::string(detail) + "\"}";
}

template <class Body>
void fill_header(http::response<Body>& res, const HttpResponse& out, bool keep_alive) {
  res.version(11);
  res.result(static_cast<unsigned>(out.status));
  res.set(http::field::server, "qkdn-controller");
  if (!out.content_type.empty()) res.set(http::field::content_type, out.content_type);
  for (const auto& [k, v] : out.headers) res.set(k, v);
  res.keep_alive(keep_alive);
}

}  // namespace

struct HttpServer::State : std::enable_shared_from_this<HttpServer::State> {
  State(net::io_context& io_in, HttpHandler h, HttpServerOptions o, net::ssl::context* t,
        HttpObserver obs)
      : io(io_in),
        acceptor(net::make_strand(io_in)),
        handler(std::move(h)),
        options(o),
        tls(t),
        observer(std::move(obs)) {}

  net::io_context& io;
  tcp::acceptor acceptor;
  HttpHandler handler;
  HttpServerOptions options;
  net::ssl::context* tls;
  HttpObserver observer;
  std::atomic<bool> stopped{false};
  std::atomic<std::size_t> active{0};
  std::mutex mu;  // guards sockets (touched by accept loop, sessions and stop())
  std::set<tcp::socket*> sockets;

  net::awaitable<void> accept_loop();
  template <class Stream>
  net::awaitable<void> serve(Stream& stream, tcp::socket& raw, std::string remote);
  net::awaitable<void> session(tcp::socket socket);
};

template <class Stream>
net::awaitable<void> HttpServer::State::serve(Stream& stream, tcp::socket& raw,
                                              std::string remote) {
  beast::flat_buffer buffer;
  bool first = true;
  for (;;) {
    http::request_parser<http::string_body> parser;
    parser.header_limit(static_cast<std::uint32_t>(options.max_header_bytes));
    parser.body_limit(options.max_body_bytes);
    if (!first && buffer.size() == 0) {
      // Keep-alive: wait up to idle_timeout for the next request to start; once it has started
      // the whole request must arrive within read_timeout (slow clients are cut off).
      beast::get_lowest_layer(stream).expires_after(options.idle_timeout);
      auto [iec, in] =
          co_await stream.async_read_some(buffer.prepare(4096), net::as_tuple(net::use_awaitable));
      if (iec) break;
      buffer.commit(in);
    }
    first = false;
    beast::get_lowest_layer(stream).expires_after(options.read_timeout);
    auto [ec, n] =
        co_await http::async_read(stream, buffer, parser, net::as_tuple(net::use_awaitable));
    (void)n;
    if (ec == http::error::end_of_stream || ec == net::error::eof || ec == beast::error::timeout ||
        ec == net::error::operation_aborted || ec == net::error::connection_reset ||
        ec == net::ssl::error::stream_truncated) {
      break;
    }
    const auto started = std::chrono::steady_clock::now();
    HttpResponse out;
    bool close_after = false;
    std::string method = "OTHER";
    if (ec) {
      close_after = true;
      if (ec == http::error::body_limit) {
        out.status = 413;
        out.body = problem_body(413, "payload-too-large", "request body exceeds the limit");
      } else if (ec == http::error::header_limit) {
        out.status = 431;
        out.body = problem_body(431, "header-too-large", "request header exceeds the limit");
      } else {
        out.status = 400;
        out.body = problem_body(400, "malformed-request", "malformed HTTP request");
      }
      out.content_type = "application/problem+json";
    } else {
      auto& req = parser.get();
      HttpRequest in;
      method = std::string(req.method_string());
      in.method = method;
      in.target = std::string(req.target());
      for (const auto& f : req) {
        std::string name(f.name_string());
        for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        in.headers[name] = std::string(f.value());
      }
      in.body = std::move(req.body());
      in.remote = remote;
      close_after = !req.keep_alive();
      try {
        // Awaitable first, then co_await: GCC 12 mishandles by-value coroutine arguments
        // created in the co_await expression.
        auto op = handler(std::move(in));
        out = co_await std::move(op);
      } catch (const std::exception& e) {
        base::log(base::LogLevel::kError, "http", std::string("handler failed: ") + e.what());
        out = HttpResponse{};
        out.status = 500;
        out.content_type = "application/problem+json";
        out.body = problem_body(500, "internal", "internal error");
      }
    }
    boost::system::error_code wec;
    if (out.shared_body) {
      // A cached page: the response refers to the shared text, which `out` keeps alive until
      // the write completes, instead of copying tens of kilobytes per request.
      http::response<http::span_body<const char>> res;
      fill_header(res, out, !close_after);
      res.body() = {out.shared_body->data(), out.shared_body->size()};
      res.prepare_payload();
      beast::get_lowest_layer(stream).expires_after(options.write_timeout);
      auto [e, wn] = co_await http::async_write(stream, res, net::as_tuple(net::use_awaitable));
      (void)wn;
      wec = e;
    } else {
      http::response<http::string_body> res;
      fill_header(res, out, !close_after);
      res.body() = std::move(out.body);
      res.prepare_payload();
      beast::get_lowest_layer(stream).expires_after(options.write_timeout);
      auto [e, wn] = co_await http::async_write(stream, res, net::as_tuple(net::use_awaitable));
      (void)wn;
      wec = e;
    }
    if (observer) {
      observer(method, out.status,
               std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
    }
    if (wec) break;
    if (close_after && ec) {
      // The request was refused before its body was read (e.g. 413): stop sending, then read
      // and discard for a short bounded time so that closing does not reset the connection
      // before the client has read the answer.
      beast::error_code ignored;
      raw.shutdown(tcp::socket::shutdown_send, ignored);
      beast::get_lowest_layer(stream).expires_after(std::chrono::milliseconds(500));
      std::size_t drained = 0;
      const std::size_t cap = std::max<std::size_t>(2 * options.max_body_bytes, 1 << 20);
      while (drained < cap) {
        buffer.clear();
        auto [dec, dn] = co_await stream.async_read_some(buffer.prepare(16384),
                                                         net::as_tuple(net::use_awaitable));
        if (dec) break;
        drained += dn;
      }
      co_return;
    }
    if (close_after || stopped) break;
  }
  beast::error_code ignored;
  raw.shutdown(tcp::socket::shutdown_send, ignored);
}

net::awaitable<void> HttpServer::State::session(tcp::socket socket) {
  std::string remote;
  {
    beast::error_code ec;
    socket.set_option(tcp::no_delay(true), ec);  // request/response: latency over batching
    auto ep = socket.remote_endpoint(ec);
    if (!ec) remote = ep.address().to_string() + ":" + std::to_string(ep.port());
  }
  auto self = shared_from_this();
  if (tls == nullptr) {
    beast::tcp_stream stream(std::move(socket));
    tcp::socket* raw = &stream.socket();
    {
      std::lock_guard lock(mu);
      sockets.insert(raw);
    }
    try {
      co_await serve(stream, *raw, remote);
    } catch (const std::exception& e) {
      base::log(base::LogLevel::kInfo, "http",
                std::string("session ") + remote + " ended: " + e.what());
    }
    std::lock_guard lock(mu);
    sockets.erase(raw);
  } else {
    beast::ssl_stream<beast::tcp_stream> stream(beast::tcp_stream(std::move(socket)), *tls);
    tcp::socket* raw = &beast::get_lowest_layer(stream).socket();
    {
      std::lock_guard lock(mu);
      sockets.insert(raw);
    }
    try {
      beast::get_lowest_layer(stream).expires_after(options.read_timeout);
      auto [ec] = co_await stream.async_handshake(net::ssl::stream_base::server,
                                                  net::as_tuple(net::use_awaitable));
      if (!ec) co_await serve(stream, *raw, remote);
    } catch (const std::exception& e) {
      base::log(base::LogLevel::kInfo, "http",
                std::string("tls session ") + remote + " ended: " + e.what());
    }
    std::lock_guard lock(mu);
    sockets.erase(raw);
  }
  --active;
}

net::awaitable<void> HttpServer::State::accept_loop() {
  auto self = shared_from_this();
  while (!stopped) {
    auto [ec, socket] =
        co_await acceptor.async_accept(net::make_strand(io), net::as_tuple(net::use_awaitable));
    if (ec) {
      if (ec == net::error::operation_aborted || stopped) co_return;
      continue;  // e.g. EMFILE: keep accepting
    }
    if (active.load() >= options.max_connections) {
      beast::error_code ignored;
      socket.close(ignored);
      continue;
    }
    ++active;
    auto exec = socket.get_executor();
    net::co_spawn(exec, session(std::move(socket)), [](std::exception_ptr ep) {
      if (!ep) return;
      try {
        std::rethrow_exception(ep);
      } catch (const std::exception& e) {
        base::log(base::LogLevel::kWarn, "http", std::string("session failed: ") + e.what());
      }
    });
  }
}

HttpServer::HttpServer(net::io_context& io, const tcp::endpoint& endpoint, HttpHandler handler,
                       HttpServerOptions options, net::ssl::context* tls, HttpObserver observer)
    : state_(std::make_shared<State>(io, std::move(handler), options, tls, std::move(observer))) {
  beast::error_code ec;
  auto& a = state_->acceptor;
  a.open(endpoint.protocol(), ec);
  if (!ec) a.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) a.bind(endpoint, ec);
  if (!ec) a.listen(net::socket_base::max_listen_connections, ec);
  if (ec) {
    throw InvalidArgument("cannot listen on " + endpoint.address().to_string() + ":" +
                          std::to_string(endpoint.port()) + ": " + ec.message());
  }
}

HttpServer::~HttpServer() { stop(); }

void HttpServer::start() {
  net::co_spawn(state_->acceptor.get_executor(), state_->accept_loop(), [](std::exception_ptr ep) {
    if (!ep) return;
    try {
      std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      base::log(base::LogLevel::kError, "http", std::string("accept loop failed: ") + e.what());
    }
  });
}

void HttpServer::stop() {
  if (state_->stopped.exchange(true)) return;
  auto st = state_;
  net::post(st->acceptor.get_executor(), [st] {
    beast::error_code ignored;
    st->acceptor.close(ignored);
  });
  std::lock_guard lock(st->mu);
  for (auto* s : st->sockets) {
    // Closing from another thread is not safe on the socket itself; post to its executor.
    net::post(s->get_executor(), [s, st] {
      std::lock_guard inner(st->mu);
      if (st->sockets.count(s) != 0) {
        beast::error_code ignored;
        s->shutdown(tcp::socket::shutdown_both, ignored);
        s->close(ignored);
      }
    });
  }
}

std::uint16_t HttpServer::port() const {
  beast::error_code ec;
  auto ep = state_->acceptor.local_endpoint(ec);
  return ec ? 0 : ep.port();
}

tcp::endpoint parse_endpoint(const std::string& host_port) {
  auto colon = host_port.rfind(':');
  if (colon == std::string::npos || colon + 1 >= host_port.size()) {
    throw InvalidArgument("'" + host_port + "': expected HOST:PORT");
  }
  std::string host = host_port.substr(0, colon);
  std::string port_text = host_port.substr(colon + 1);
  unsigned long port = 0;
  try {
    std::size_t used = 0;
    port = std::stoul(port_text, &used);
    if (used != port_text.size() || port > 65535) throw std::out_of_range("port");
  } catch (const std::exception&) {
    throw InvalidArgument("'" + host_port + "': port must be 0..65535");
  }
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  if (host.empty() || host == "*") host = "0.0.0.0";
  if (host == "localhost") host = "127.0.0.1";
  beast::error_code ec;
  auto addr = net::ip::make_address(host, ec);
  if (ec) throw InvalidArgument("'" + host_port + "': host must be an IP address or localhost");
  return tcp::endpoint(addr, static_cast<std::uint16_t>(port));
}

std::string_view reason_phrase(int status) noexcept {
  return http::obsolete_reason(static_cast<http::status>(status));
}

}  // namespace qkdn::northbound
