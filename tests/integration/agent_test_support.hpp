// Test support for the agent integration tests: a minimal fake controller speaking Ck over plain
// TCP (hand-built frames through the codec), an io_context fixture and a tiny HTTP client.
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/json.hpp>

#include "qkdn/agent/agent.hpp"
#include "qkdn/southbound/ck_frame.hpp"
#include "qkdn/southbound/ck_messages.hpp"

namespace qkdn::agent::test {

namespace net = boost::asio;
namespace ck = southbound::ck;
using tcp = net::ip::tcp;
using namespace std::chrono_literals;

/// One frame the fake controller received.
struct Received {
  std::string km_id;  ///< from the connection's registration ("" before)
  std::uint32_t message_id = 0;
  std::uint16_t command = 0;
  std::string payload;
  std::chrono::steady_clock::time_point at;
  std::optional<ck::Message> message;  ///< decoded, when valid
};

/// A fake Ck controller: answers Register (with peers = every other registered KM) and
/// Heartbeat, records everything, and lets tests push commands or drop connections.
class FakeController {
 public:
  FakeController(net::io_context& io, std::int64_t epoch, std::int64_t heartbeat_ms = 100,
                 std::int64_t status_ms = 200)
      : io_(io),
        strand_(net::make_strand(io)),
        acceptor_(strand_, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0)),
        epoch_(epoch),
        heartbeat_ms_(heartbeat_ms),
        status_ms_(status_ms) {
    port_ = acceptor_.local_endpoint().port();
    accept();
  }

  [[nodiscard]] std::uint16_t port() const { return port_; }

  /// Closes the listener and every connection.
  void stop() {
    net::post(strand_, [this] {
      boost::system::error_code ec;
      acceptor_.close(ec);
    });
    std::lock_guard lock(mutex_);
    for (auto& [id, c] : conns_) close_conn(c);
    for (auto& c : anonymous_) close_conn(c);
  }

  /// Waits (bounded) until pred(received frames) holds.
  bool wait_for(const std::function<bool(const std::vector<Received>&)>& pred,
                std::chrono::milliseconds timeout = 30s) {
    std::unique_lock lock(mutex_);
    return cv_.wait_for(lock, timeout, [&] { return pred(received_); });
  }

  std::vector<Received> received() {
    std::lock_guard lock(mutex_);
    return received_;
  }

  /// Sends a controller command with a raw JSON payload; returns its MessageID.
  std::uint32_t send_raw(const std::string& km_id, std::uint16_t code, std::string payload) {
    std::lock_guard lock(mutex_);
    auto it = conns_.find(km_id);
    if (it == conns_.end()) return 0;
    const std::uint32_t id = ++it->second->next_id;
    write(it->second, ck::encode_frame(ck::Frame{id, code, std::move(payload)}));
    return id;
  }

  /// Closes the connection of a KM.
  void drop(const std::string& km_id) {
    std::lock_guard lock(mutex_);
    if (auto it = conns_.find(km_id); it != conns_.end()) close_conn(it->second);
  }

  /// Number of successful registrations of a KM.
  int registrations(const std::string& km_id) {
    std::lock_guard lock(mutex_);
    return registrations_[km_id];
  }

 private:
  struct Conn {
    explicit Conn(tcp::socket s) : socket(std::move(s)) {}
    tcp::socket socket;
    std::deque<std::string> out;
    bool writing = false;
    std::uint32_t next_id = 0;
    std::string km_id;
  };

  void close_conn(const std::shared_ptr<Conn>& c) {
    net::post(c->socket.get_executor(), [c] {
      boost::system::error_code ec;
      c->socket.shutdown(tcp::socket::shutdown_both, ec);
      c->socket.close(ec);
    });
  }

  void write(const std::shared_ptr<Conn>& c, std::string frame) {
    net::post(c->socket.get_executor(), [this, c, f = std::move(frame)]() mutable {
      c->out.push_back(std::move(f));
      if (!c->writing) write_next(c);
    });
  }

  void write_next(const std::shared_ptr<Conn>& c) {
    if (c->out.empty()) {
      c->writing = false;
      return;
    }
    c->writing = true;
    net::async_write(c->socket, net::buffer(c->out.front()),
                     [this, c](boost::system::error_code ec, std::size_t) {
                       c->out.pop_front();
                       if (ec) {
                         c->writing = false;
                         return;
                       }
                       write_next(c);
                     });
  }

  void accept() {
    acceptor_.async_accept(
        net::make_strand(io_), [this](boost::system::error_code ec, tcp::socket s) {
          if (ec) return;
          auto c = std::make_shared<Conn>(std::move(s));
          {
            std::lock_guard lock(mutex_);
            anonymous_.push_back(c);
          }
          read(c, std::make_shared<ck::FrameDecoder>(), std::make_shared<std::array<char, 4096>>());
          accept();
        });
  }

  void read(std::shared_ptr<Conn> c, std::shared_ptr<ck::FrameDecoder> dec,
            std::shared_ptr<std::array<char, 4096>> buf) {
    c->socket.async_read_some(net::buffer(*buf),
                              [this, c, dec, buf](boost::system::error_code ec, std::size_t n) {
                                if (ec) return;
                                std::string_view data(buf->data(), n);
                                while (!data.empty()) {
                                  const auto used = dec->feed(data);
                                  data.remove_prefix(used);
                                  ck::Frame f;
                                  while (dec->next(f) == ck::FrameDecoder::Status::kFrame)
                                    on_frame(c, std::move(f));
                                  if (used == 0 && dec->next(f) != ck::FrameDecoder::Status::kFrame)
                                    break;
                                }
                                read(c, dec, buf);
                              });
  }

  void on_frame(const std::shared_ptr<Conn>& c, ck::Frame f) {
    Received r;
    r.message_id = f.message_id;
    r.command = f.command;
    r.payload = f.payload;
    r.at = std::chrono::steady_clock::now();
    auto decoded = ck::decode_payload(f.command, f.payload);
    if (auto* m = std::get_if<ck::Message>(&decoded)) r.message = *m;
    std::lock_guard lock(mutex_);
    if (f.command == static_cast<std::uint16_t>(ck::Command::kRegister) && r.message) {
      const auto& reg = std::get<ck::Register>(*r.message);
      c->km_id = reg.km_id;
      conns_[reg.km_id] = c;
      endpoints_[reg.km_id] = reg.kma_endpoint;
      ++registrations_[reg.km_id];
      ck::RegisterResponse resp;
      resp.response = "OK";
      resp.controller_id = "fake";
      resp.controller_epoch = epoch_;
      resp.heartbeat_interval_ms = heartbeat_ms_;
      resp.status_interval_ms = status_ms_;
      std::vector<ck::PeerEndpoint> peers;
      for (const auto& [id, ep] : endpoints_) {
        if (id != reg.km_id) peers.push_back(ck::PeerEndpoint{id, ep});
      }
      resp.peers = std::move(peers);
      write(c, ck::encode_frame(ck::Frame{
                   f.message_id, static_cast<std::uint16_t>(ck::Command::kRegisterResponse),
                   ck::encode_payload(ck::Message{resp})}));
    } else if (f.command == static_cast<std::uint16_t>(ck::Command::kHeartbeat)) {
      write(c,
            ck::encode_frame(ck::Frame{
                f.message_id, static_cast<std::uint16_t>(ck::Command::kHeartbeatResponse), "{}"}));
    }
    r.km_id = c->km_id;
    received_.push_back(std::move(r));
    cv_.notify_all();
  }

  net::io_context& io_;
  net::strand<net::io_context::executor_type> strand_;
  tcp::acceptor acceptor_;
  std::uint16_t port_ = 0;
  std::int64_t epoch_;
  std::int64_t heartbeat_ms_;
  std::int64_t status_ms_;
  std::mutex mutex_;
  std::condition_variable cv_;
  std::vector<Received> received_;
  std::map<std::string, std::shared_ptr<Conn>> conns_;
  std::vector<std::shared_ptr<Conn>> anonymous_;
  std::map<std::string, std::string> endpoints_;
  std::map<std::string, int> registrations_;
};

/// Three KMs in a line, KM1 -L12- KM2 -L23- KM3, one SAE at each end.
inline controller::TopologyDoc line_topology() {
  controller::TopologyDoc doc;
  doc.name = "line";
  doc.kms = {{"KM1", "a"}, {"KM2", "b"}, {"KM3", "c"}};
  doc.links = {{"L12", "KM1", "KM2", 16384, 10, 0.02}, {"L23", "KM2", "KM3", 4096, 20, 0.03}};
  doc.applications = {{"SAE-A", "KM1"}, {"SAE-C", "KM3"}};
  return doc;
}

/// A config for tests: fast timers, plain Ck, fixed seed.
inline AgentConfig test_config(std::uint16_t controller_port, std::vector<std::string> kms) {
  AgentConfig cfg;
  cfg.topology = line_topology();
  cfg.km_ids = std::move(kms);
  cfg.controller_port = controller_port;
  cfg.insecure_ck = true;
  cfg.insecure_kma = true;
  cfg.seed = 42;
  cfg.reconnect_initial = 100ms;
  cfg.reconnect_max = 1'000ms;
  cfg.generation_tick = 50ms;
  cfg.secondary_dial_delay = 300ms;
  return cfg;
}

/// io_context run by two threads; joins (bounded) on destruction.
class IoThreads {
 public:
  IoThreads() {
    for (int i = 0; i < 2; ++i) threads_.emplace_back([this] { io.run(); });
  }
  /// Waits for the io_context to run out of work (everything stopped); fails the test if it
  /// does not drain within the bound.
  void join() {
    guard.reset();
    if (threads_.empty()) return;
    auto done = std::async(std::launch::async, [this] {
      for (auto& t : threads_) t.join();
    });
    if (done.wait_for(20s) != std::future_status::ready) {
      ADD_FAILURE() << "io_context did not drain after stop";
      io.stop();
      done.wait();
    }
    threads_.clear();
  }
  ~IoThreads() {
    if (!threads_.empty()) {
      io.stop();
      for (auto& t : threads_) t.join();
    }
  }
  net::io_context io;
  // Keeps run() alive until the test has started its listeners.
  net::executor_work_guard<net::io_context::executor_type> guard{io.get_executor()};

 private:
  std::vector<std::thread> threads_;
};

/// Polls `pred` every 20 ms until it holds or `timeout` passes.
inline bool eventually(const std::function<bool()>& pred, std::chrono::milliseconds timeout = 30s) {
  const auto end = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < end) {
    if (pred()) return true;
    std::this_thread::sleep_for(20ms);
  }
  return pred();
}

/// The snapshot of one link end.
inline std::optional<LinkSnapshot> link_of(Agent& agent, const std::string& km,
                                           const std::string& link) {
  for (const auto& k : agent.snapshot()) {
    if (k.km_id != km) continue;
    for (const auto& l : k.links) {
      if (l.link_id == link) return l;
    }
  }
  return std::nullopt;
}

/// A blocking HTTP/1.1 request to 127.0.0.1:port; returns status and body.
inline std::pair<int, std::string> http_request(std::uint16_t port, boost::beast::http::verb verb,
                                                const std::string& target,
                                                const std::string& body = {}) {
  namespace http = boost::beast::http;
  net::io_context io;
  tcp::socket socket(io);
  socket.connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), port));
  http::request<http::string_body> req{verb, target, 11};
  req.set(http::field::host, "127.0.0.1");
  if (!body.empty()) req.set(http::field::content_type, "application/json");
  req.body() = body;
  req.prepare_payload();
  http::write(socket, req);
  boost::beast::flat_buffer buffer;
  http::response<http::string_body> res;
  http::read(socket, buffer, res);
  return {static_cast<int>(res.result_int()), res.body()};
}

/// Alarms received for a KM.
inline std::vector<ck::Alarm> alarms_of(const std::vector<Received>& rs, const std::string& km) {
  std::vector<ck::Alarm> out;
  for (const auto& r : rs) {
    if (!r.message) continue;
    if (const auto* a = std::get_if<ck::Alarm>(&*r.message); a != nullptr && a->kma_id == km) {
      out.push_back(*a);
    }
  }
  return out;
}

inline bool has_alarm(const std::vector<Received>& rs, const std::string& km,
                      const std::string& alarm, const std::string& severity) {
  for (const auto& a : alarms_of(rs, km)) {
    if (a.alarm == alarm && a.severity == severity) return true;
  }
  return false;
}

}  // namespace qkdn::agent::test
