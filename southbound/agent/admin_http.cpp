#include "admin_http.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/json.hpp>

#include "km_host.hpp"
#include "log.hpp"
#include "qkdn/controller/error.hpp"

namespace qkdn::agent {

namespace beast = boost::beast;
namespace http = beast::http;
namespace json = boost::json;
using namespace std::chrono_literals;

namespace {

constexpr std::size_t kBodyLimit = 64 * 1024;
constexpr auto kReadTimeout = 10s;
constexpr auto kTuple = net::as_tuple(net::use_awaitable);

json::object link_json(const LinkSnapshot& l) {
  return json::object{{"link_id", l.link_id},
                      {"peer_km_id", l.peer_km_id},
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

struct Reply {
  http::status status = http::status::ok;
  std::string body;
};

Reply problem(http::status status, const std::string& detail) {
  return Reply{status, json::serialize(
                           json::object{{"status", static_cast<int>(status)}, {"detail", detail}})};
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

net::awaitable<Reply> route(AgentCore& core, const http::request<http::string_body>& req) {
  const auto parts = split_path(req.target());
  if (parts.size() == 2 && parts[0] == "admin" && parts[1] == "state") {
    if (req.method() != http::verb::get)
      co_return problem(http::status::method_not_allowed, "GET only");
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
                                 {"links", std::move(links)}});
    }
    co_return Reply{http::status::ok, json::serialize(json::object{{"kms", std::move(kms)}})};
  }
  if (parts.size() == 3 && parts[0] == "admin" && parts[1] == "links") {
    if (req.method() != http::verb::post)
      co_return problem(http::status::method_not_allowed, "POST only");
    boost::system::error_code ec;
    json::value v = json::parse(req.body(), ec);
    if (ec || !v.is_object())
      co_return problem(http::status::bad_request, "body: expected a JSON object");
    const auto& o = v.as_object();
    LinkControl c;
    if (const auto* r = o.if_contains("key_rate_bps")) {
      if (!r->is_number() || r->to_number<double>() < 0) {
        co_return problem(http::status::bad_request, "key_rate_bps: expected a number >= 0");
      }
      c.key_rate_bps = r->to_number<double>();
    }
    if (const auto* q = o.if_contains("qber")) {
      if (!q->is_number() || q->to_number<double>() < 0 || q->to_number<double>() > 1) {
        co_return problem(http::status::bad_request, "qber: expected a number in [0, 1]");
      }
      c.qber = q->to_number<double>();
    }
    if (const auto* u = o.if_contains("up")) {
      if (!u->is_bool()) co_return problem(http::status::bad_request, "up: expected a boolean");
      c.up = u->as_bool();
    }
    const std::string link_id(parts[2]);
    auto op = core.control_link(link_id, c);
    const bool applied = co_await std::move(op);
    if (!applied) {
      co_return problem(http::status::not_found, "link " + link_id + " is not hosted here");
    }
    co_return Reply{http::status::ok,
                    json::serialize(json::object{{"link_id", link_id}, {"applied", true}})};
  }
  if (parts.size() == 4 && parts[0] == "admin" && parts[1] == "kms" && parts[3] == "disconnect") {
    if (req.method() != http::verb::post)
      co_return problem(http::status::method_not_allowed, "POST only");
    const std::string km_id(parts[2]);
    auto op = core.disconnect(km_id);
    const bool found = co_await std::move(op);
    if (!found) {
      co_return problem(http::status::not_found, "KM " + km_id + " is not hosted here");
    }
    co_return Reply{http::status::ok,
                    json::serialize(json::object{{"km_id", km_id}, {"disconnected", true}})};
  }
  co_return problem(http::status::not_found, "no such resource");
}

}  // namespace

struct AdminServer::Connection {
  explicit Connection(tcp::socket s) : stream(std::move(s)) {}
  beast::tcp_stream stream;
};

AdminServer::AdminServer(AgentCore& core, std::string host, std::uint16_t port)
    : core_(core),
      host_(std::move(host)),
      port_(port),
      strand_(net::make_strand(core.io())),
      acceptor_(strand_) {}

AdminServer::~AdminServer() = default;

std::uint16_t AdminServer::bind() {
  boost::system::error_code ec;
  const auto addr = net::ip::make_address(host_, ec);
  if (ec) throw InvalidArgument("--admin-listen: not an IP address: " + host_);
  tcp::endpoint ep(addr, port_);
  acceptor_.open(ep.protocol(), ec);
  if (!ec) acceptor_.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) acceptor_.bind(ep, ec);
  if (!ec) acceptor_.listen(net::socket_base::max_listen_connections, ec);
  if (ec) {
    throw Unavailable("admin: cannot listen on " + host_ + ":" + std::to_string(port_) + ": " +
                      ec.message());
  }
  port_ = acceptor_.local_endpoint().port();
  return port_;
}

void AdminServer::start() {
  core_.spawn(
      strand_,
      [](AdminServer* self) -> net::awaitable<void> {
        for (;;) {
          auto [ec, socket] =
              co_await self->acceptor_.async_accept(net::make_strand(self->core_.io()), kTuple);
          if (ec) {
            if (!self->acceptor_.is_open() || self->core_.stopping()) co_return;
            continue;
          }
          auto conn = std::make_shared<Connection>(std::move(socket));
          {
            std::lock_guard lock(self->mutex_);
            std::erase_if(self->connections_, [](const auto& w) { return w.expired(); });
            self->connections_.push_back(conn);
          }
          self->core_.spawn(
              conn->stream.get_executor(),
              [](AdminServer* srv, std::shared_ptr<Connection> c) -> net::awaitable<void> {
                beast::flat_buffer buffer;
                for (;;) {
                  http::request_parser<http::string_body> parser;
                  parser.body_limit(kBodyLimit);
                  parser.header_limit(8 * 1024);
                  c->stream.expires_after(kReadTimeout);
                  auto [rec, n] = co_await http::async_read(c->stream, buffer, parser, kTuple);
                  if (rec) break;
                  auto req = parser.release();
                  Reply reply;
                  try {
                    auto op = route(srv->core_, req);
                    reply = co_await std::move(op);
                  } catch (const std::exception& e) {
                    reply = problem(http::status::internal_server_error, e.what());
                  }
                  http::response<http::string_body> res{reply.status, req.version()};
                  res.set(http::field::content_type, reply.status == http::status::ok
                                                         ? "application/json"
                                                         : "application/problem+json");
                  res.keep_alive(req.keep_alive());
                  res.body() = std::move(reply.body);
                  res.prepare_payload();
                  c->stream.expires_after(kReadTimeout);
                  auto [wec, wn] = co_await http::async_write(c->stream, res, kTuple);
                  if (wec || !res.keep_alive()) break;
                }
                boost::system::error_code ignored;
                c->stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
                c->stream.close();
              }(self, conn),
              "admin connection");
        }
      }(this),
      "admin accept loop");
}

void AdminServer::stop() {
  net::post(strand_, [this] {
    boost::system::error_code ec;
    acceptor_.close(ec);
  });
  std::lock_guard lock(mutex_);
  for (auto& w : connections_) {
    if (auto c = w.lock()) {
      net::post(c->stream.get_executor(), [c] { c->stream.close(); });
    }
  }
}

}  // namespace qkdn::agent
