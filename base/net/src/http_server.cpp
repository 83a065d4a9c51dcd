// The one HTTP/1.1 server: see qkdn/net/http_server.hpp.
#include "qkdn/net/http_server.hpp"

#include <openssl/crypto.h>

#include <algorithm>
#include <atomic>
#include <limits>
#include <mutex>
#include <type_traits>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/http/span_body.hpp>
#include <boost/beast/ssl.hpp>

#include "qkdn/base/error.hpp"
#include "qkdn/base/log.hpp"
#include "qkdn/net/listener.hpp"

namespace qkdn::net {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

namespace {

constexpr auto kTuple = asio::as_tuple(asio::use_awaitable);
// After a refusal (413, 401 before the body...) the unread body is drained for this long, so
// that closing does not reset the connection before the client has read the answer.
constexpr auto kDrainTime = std::chrono::milliseconds(500);
constexpr std::size_t kDrainBytes = 1 << 20;
constexpr auto kTlsShutdownTime = std::chrono::seconds(1);

std::string json_text(std::string_view s) {
  std::string out = "\"";
  for (const char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      out += ' ';
    } else {
      out += c;
    }
  }
  return out + "\"";
}

HttpResponse default_error(int status, std::string_view detail) {
  HttpResponse r;
  r.status = status;
  r.content_type = "application/problem+json";
  std::string kind = status == 413   ? "payload-too-large"
                     : status == 431 ? "header-too-large"
                     : status >= 500 ? "internal"
                                     : "malformed-request";
  r.body = "{\"type\":\"urn:qkdn:problem:" + kind +
           "\",\"title\":" + json_text(reason_phrase(status)) +
           ",\"status\":" + std::to_string(status) + ",\"detail\":" + json_text(detail) + "}";
  return r;
}

// Ends of a read that need no answer: the peer left, a deadline passed, or we are stopping.
bool quiet_end(const beast::error_code& ec) {
  return ec == http::error::end_of_stream || ec == asio::error::eof ||
         ec == beast::error::timeout || ec == asio::error::operation_aborted ||
         ec == asio::error::connection_reset || ec == asio::ssl::error::stream_truncated ||
         ec.category() != http::make_error_code(http::error::bad_target).category();
}

template <class Body>
void fill_header(http::response<Body>& res, const HttpResponse& out, unsigned version,
                 bool keep_alive, const std::string& server) {
  res.version(version);
  res.result(static_cast<unsigned>(out.status));
  if (!server.empty()) res.set(http::field::server, server);
  if (!out.content_type.empty()) res.set(http::field::content_type, out.content_type);
  for (const auto& [k, v] : out.headers) res.set(k, v);
  res.keep_alive(keep_alive);
}

}  // namespace

/// One accepted connection: its stream and the slots it holds.
struct Connection {
  beast::tcp_stream& lowest() { return tls ? beast::get_lowest_layer(*tls) : *plain; }
  std::optional<beast::tcp_stream> plain;
  std::optional<beast::ssl_stream<beast::tcp_stream>> tls;
  ConnectionGate::Ticket open;             ///< counted in max_connections
  ConnectionGate::Ticket unauthenticated;  ///< released once authenticated
  std::string remote;
};

struct HttpServer::State : std::enable_shared_from_this<HttpServer::State> {
  State(asio::io_context& io_in, HttpHandler h, HttpServerOptions o, asio::ssl::context* t,
        HttpAdmit a, HttpObserver obs)
      : io(io_in),
        strand(asio::make_strand(io_in)),
        acceptor(strand),
        handler(std::move(h)),
        options(std::move(o)),
        tls(t),
        admit(std::move(a)),
        observer(std::move(obs)),
        open(options.max_connections),
        // At most half the connections may be unauthenticated, so that a flood of them evicts
        // its own oldest instead of filling max_connections and locking everyone out.
        unauthenticated(std::min(options.max_unauthenticated,
                                 std::max<std::size_t>(1, options.max_connections / 2)),
                        ConnectionGate::WhenFull::kEvictOldest, options.unauthenticated_min_age) {}

  asio::io_context& io;
  asio::strand<asio::io_context::executor_type> strand;
  tcp::acceptor acceptor;
  HttpHandler handler;
  HttpServerOptions options;
  asio::ssl::context* tls;
  HttpAdmit admit;
  HttpObserver observer;
  ConnectionGate open;
  ConnectionGate unauthenticated;
  std::atomic<bool> stopped{false};
  std::mutex mu;  // guards conns only (registration and closing)
  std::vector<std::weak_ptr<Connection>> conns;

  void log(const std::string& line) const {
    if (options.log) {
      options.log(options.name + ": " + line);
    } else {
      base::log_prefixed(base::LogLevel::kInfo, options.name + ": " + line);
    }
  }

  HttpResponse error(int status, std::string_view detail) const {
    return options.error_body ? options.error_body(status, detail) : default_error(status, detail);
  }

  void spawn(const asio::any_io_executor& ex, asio::awaitable<void> work, std::string what) {
    if (options.spawn) {
      options.spawn(ex, std::move(work), std::move(what));
      return;
    }
    asio::co_spawn(ex, std::move(work),
                   [self = shared_from_this(), w = std::move(what)](const std::exception_ptr& ep) {
                     if (!ep) return;
                     try {
                       std::rethrow_exception(ep);
                     } catch (const std::exception& e) {
                       self->log(w + " failed: " + e.what());
                     }
                   });
  }

  asio::awaitable<void> accept_loop();
  asio::awaitable<void> session(std::shared_ptr<Connection> conn);
  template <class Stream>
  asio::awaitable<void> serve(Stream& stream, Connection& conn);
  HttpResponse read_error(const beast::error_code& ec) const;
};

HttpResponse HttpServer::State::read_error(const beast::error_code& ec) const {
  if (ec == http::error::body_limit) return error(413, "request body exceeds the limit");
  if (ec == http::error::header_limit) return error(431, "request header exceeds the limit");
  return error(400, "malformed HTTP request");
}

template <class Stream>
asio::awaitable<void> HttpServer::State::serve(Stream& stream, Connection& conn) {
  beast::tcp_stream& low = conn.lowest();
  beast::flat_buffer buffer;
  bool first = true;
  while (!stopped) {
    http::request_parser<http::string_body> parser;
    parser.header_limit(static_cast<std::uint32_t>(options.max_header_bytes));
    // The body limit is set once the admission hook has seen the header (a Content-Length is
    // checked against it then); nothing of the body is buffered before that.
    parser.body_limit(std::numeric_limits<std::uint64_t>::max());
    if (!first && buffer.size() == 0) {
      // Keep-alive: wait up to idle_timeout for the next request to start; once it has started
      // the whole request must arrive within read_timeout (slow clients are cut off).
      low.expires_after(options.idle_timeout);
      auto read_some_op = stream.async_read_some(buffer.prepare(4096), kTuple);
      auto [iec, in] = co_await std::move(read_some_op);
      if (iec) break;
      buffer.commit(in);
    }
    first = false;
    low.expires_after(options.read_timeout);
    auto read_header_op = http::async_read_header(stream, buffer, parser, kTuple);
    auto [hec, hn] = co_await std::move(read_header_op);
    (void)hn;
    if (hec && quiet_end(hec)) break;
    const auto started = std::chrono::steady_clock::now();
    HttpResponse out;
    bool close_after = false;
    bool body_unread = false;  // answered before the body was read: drain, then close
    unsigned version = 11;
    std::string method = "OTHER";
    if (hec) {
      out = read_error(hec);
      close_after = body_unread = true;
    } else {
      const auto& head = parser.get();
      version = head.version();
      HttpRequest req;
      method = std::string(head.method_string());
      req.method = method;
      req.version = version;
      req.target = std::string(head.target());
      for (const auto& f : head) {
        std::string name(f.name_string());
        for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        req.headers[name] = std::string(f.value());
      }
      req.remote = conn.remote;
      if (options.client_role && tls != nullptr && conn.tls) {
        req.peer_identity = peer_identity(conn.tls->native_handle(), *options.client_role);
      }
      HttpAdmission admission;
      if (admit) {
        try {
          admission = admit(req);
        } catch (const std::exception& e) {
          log("admission of " + method + " failed: " + e.what());
          admission.refusal = error(500, "internal error");
        }
      }
      if (admission.refusal) {
        out = std::move(*admission.refusal);
        close_after = body_unread = true;
      } else {
        if (admission.authenticated) conn.unauthenticated.release();
        const std::uint64_t limit =
            admission.body_limit != 0 ? admission.body_limit : options.max_body_bytes;
        parser.body_limit(limit);
        const auto declared = parser.content_length();
        if (declared && *declared > limit) {
          out = read_error(http::error::body_limit);
          close_after = body_unread = true;
        } else if (beast::iequals(head[http::field::expect], "100-continue") && !parser.is_done()) {
          // Admitted: the client may send its body now (it waits for this with large bodies).
          http::response<http::empty_body> go{http::status::continue_, version};
          low.expires_after(options.write_timeout);
          auto write_op = http::async_write(stream, go, kTuple);
          auto [cec, cn] = co_await std::move(write_op);
          (void)cn;
          if (cec) break;
          low.expires_after(options.read_timeout);
        }
      }
      if (!body_unread) {
        auto read_op = http::async_read(stream, buffer, parser, kTuple);
        auto [bec, bn] = co_await std::move(read_op);
        (void)bn;
        if (bec && quiet_end(bec)) break;
        if (bec) {
          out = read_error(bec);
          close_after = body_unread = true;
        } else {
          req.body = std::move(parser.get().body());
          req.admission = std::move(admission.data);
          close_after = !parser.get().keep_alive();
          try {
            // Awaitable first, then co_await: GCC 12 mishandles by-value coroutine arguments
            // created in the co_await expression.
            auto op = handler(std::move(req));
            out = co_await std::move(op);
          } catch (const std::exception& e) {
            log("handler of " + method + " failed: " + e.what());
            out = error(500, "internal error");
          }
        }
      }
    }
    boost::system::error_code wec;
    if (out.shared_body) {
      // A cached page: the response refers to the shared text, which `out` keeps alive until
      // the write completes, instead of copying tens of kilobytes per request.
      http::response<http::span_body<const char>> res;
      fill_header(res, out, version, !close_after, options.server_header);
      res.body() = {out.shared_body->data(), out.shared_body->size()};
      res.prepare_payload();
      low.expires_after(options.write_timeout);
      auto write_op2 = http::async_write(stream, res, kTuple);
      auto [e, wn] = co_await std::move(write_op2);
      (void)wn;
      wec = e;
    } else {
      http::response<http::string_body> res;
      fill_header(res, out, version, !close_after, options.server_header);
      res.body() = std::move(out.body);
      res.prepare_payload();
      low.expires_after(options.write_timeout);
      auto write_op3 = http::async_write(stream, res, kTuple);
      auto [e, wn] = co_await std::move(write_op3);
      (void)wn;
      wec = e;
      if (out.secret) OPENSSL_cleanse(res.body().data(), res.body().size());
    }
    if (observer) {
      observer(method, out.status,
               std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
    }
    if (wec) break;
    if (body_unread) {
      // Stop sending, then read and discard for a short bounded time so that closing does not
      // reset the connection before the client has read the answer.
      beast::error_code ignored;
      low.socket().shutdown(tcp::socket::shutdown_send, ignored);
      low.expires_after(kDrainTime);
      std::size_t drained = 0;
      while (drained < kDrainBytes) {
        buffer.clear();
        auto read_some_op2 = stream.async_read_some(buffer.prepare(16384), kTuple);
        auto [dec, dn] = co_await std::move(read_some_op2);
        if (dec) break;
        drained += dn;
      }
      co_return;
    }
    if (close_after || stopped) break;
  }
  if constexpr (!std::is_same_v<Stream, beast::tcp_stream>) {
    if (low.socket().is_open() && !stopped) {
      low.expires_after(kTlsShutdownTime);
      auto shutdown_op = stream.async_shutdown(kTuple);
      auto [sec] = co_await std::move(shutdown_op);
      (void)sec;
    }
  }
  beast::error_code ignored;
  low.socket().shutdown(tcp::socket::shutdown_send, ignored);
}

asio::awaitable<void> HttpServer::State::session(std::shared_ptr<Connection> conn) {
  auto self = shared_from_this();
  try {
    if (conn->tls) {
      beast::tcp_stream& low = conn->lowest();
      low.expires_after(options.handshake_timeout);
      auto handshake_op = conn->tls->async_handshake(asio::ssl::stream_base::server, kTuple);
      auto [ec] = co_await std::move(handshake_op);
      if (!ec) {
        if (options.client_role &&
            !peer_identity(conn->tls->native_handle(), *options.client_role).empty()) {
          conn->unauthenticated.release();
        }
        auto serve_op = serve(*conn->tls, *conn);
        co_await std::move(serve_op);
      }
    } else {
      auto serve_op2 = serve(*conn->plain, *conn);
      co_await std::move(serve_op2);
    }
  } catch (const std::exception& e) {
    log("session " + conn->remote + " ended: " + e.what());
  }
  beast::error_code ignored;
  conn->lowest().socket().close(ignored);
}

asio::awaitable<void> HttpServer::State::accept_loop() {
  auto self = shared_from_this();
  AcceptBackoff backoff;
  asio::steady_timer pause(strand);
  while (!stopped) {
    auto accept_op = acceptor.async_accept(asio::make_strand(io), kTuple);
    auto [ec, socket] = co_await std::move(accept_op);
    if (ec) {
      if (ec == asio::error::operation_aborted || stopped || !acceptor.is_open()) co_return;
      // Out of descriptors and the like: pause instead of spinning.
      const AcceptPause p = backoff.on_error(ec);
      if (p.log) log("accept failed: " + ec.message() + " (pausing the listener)");
      pause.expires_after(p.delay);
      auto wait_op = pause.async_wait(kTuple);
      co_await std::move(wait_op);
      continue;
    }
    backoff.on_success();
    auto open_slot = open.try_enter();
    if (!open_slot) {
      // Over the connection cap: close at once (counted); open connections are not affected.
      beast::error_code ignored;
      socket.close(ignored);
      continue;
    }
    auto conn = std::make_shared<Connection>();
    {
      beast::error_code ignored;
      socket.set_option(tcp::no_delay(true), ignored);  // request/response: latency first
      auto ep = socket.remote_endpoint(ignored);
      if (!ignored) {
        conn->remote = (ep.address().is_v6() ? "[" + ep.address().to_string() + "]"
                                             : ep.address().to_string()) +
                       ":" + std::to_string(ep.port());
      }
    }
    conn->open = std::move(open_slot);
    if (tls != nullptr) {
      conn->tls.emplace(beast::tcp_stream(std::move(socket)), *tls);
    } else {
      conn->plain.emplace(std::move(socket));
    }
    {
      std::lock_guard lock(mu);
      std::erase_if(conns, [](const auto& w) { return w.expired(); });
      conns.push_back(conn);
    }
    // Unauthenticated connections (TLS handshakes included) are capped: a newcomer beyond the
    // cap closes the one that has waited longest.
    conn->unauthenticated = unauthenticated.try_enter([w = std::weak_ptr(conn)] {
      if (auto c = w.lock()) {
        asio::post(c->lowest().get_executor(), [c] {
          beast::error_code ignored;
          c->lowest().socket().shutdown(tcp::socket::shutdown_both, ignored);
          c->lowest().close();
        });
      }
    });
    if (!conn->unauthenticated) continue;  // all young: the newcomer goes (conn closes it)
    const auto ex = conn->lowest().get_executor();
    spawn(ex, session(conn), options.name + " connection");
  }
}

HttpServer::HttpServer(asio::io_context& io, const tcp::endpoint& endpoint, HttpHandler handler,
                       HttpServerOptions options, asio::ssl::context* tls, HttpAdmit admit,
                       HttpObserver observer)
    : state_(std::make_shared<State>(io, std::move(handler), std::move(options), tls,
                                     std::move(admit), std::move(observer))) {
  beast::error_code ec;
  auto& a = state_->acceptor;
  a.open(endpoint.protocol(), ec);
  if (!ec) a.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) a.bind(endpoint, ec);
  if (!ec) a.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    const auto host = endpoint.address().is_v6() ? "[" + endpoint.address().to_string() + "]"
                                                 : endpoint.address().to_string();
    throw InvalidArgument(state_->options.name + ": cannot listen on " + host + ":" +
                          std::to_string(endpoint.port()) + ": " + ec.message());
  }
}

HttpServer::~HttpServer() { stop(); }

void HttpServer::start() {
  state_->spawn(state_->strand, state_->accept_loop(), state_->options.name + " accept loop");
}

void HttpServer::stop() {
  if (state_->stopped.exchange(true)) return;
  auto st = state_;
  asio::post(st->strand, [st] {
    beast::error_code ignored;
    st->acceptor.close(ignored);
  });
  std::lock_guard lock(st->mu);
  for (auto& w : st->conns) {
    if (auto c = w.lock()) {
      // Closing from another thread is not safe on the socket itself; post to its executor.
      asio::post(c->lowest().get_executor(), [c] {
        beast::error_code ignored;
        c->lowest().socket().shutdown(tcp::socket::shutdown_both, ignored);
        c->lowest().close();
      });
    }
  }
}

std::uint16_t HttpServer::port() const {
  beast::error_code ec;
  auto ep = state_->acceptor.local_endpoint(ec);
  return ec ? 0 : ep.port();
}

std::size_t HttpServer::connections() const { return state_->open.count(); }

std::size_t HttpServer::unauthenticated() const { return state_->unauthenticated.count(); }

std::uint64_t HttpServer::refused() const {
  return state_->open.refused() + state_->unauthenticated.refused() +
         state_->unauthenticated.evicted();
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
  auto addr = asio::ip::make_address(host, ec);
  if (ec) throw InvalidArgument("'" + host_port + "': host must be an IP address or localhost");
  return tcp::endpoint(addr, static_cast<std::uint16_t>(port));
}

std::string_view reason_phrase(int status) noexcept {
  return http::obsolete_reason(static_cast<http::status>(status));
}

}  // namespace qkdn::net
