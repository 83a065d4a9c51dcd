// Helpers for the Ck integration tests: an in-process controller service on 127.0.0.1:0 and a
// raw TCP client that sends hand-built frames and reads with an upper bound (never a sleep).
#pragma once

#include <poll.h>
#include <sys/socket.h>

#include <chrono>
#include <condition_variable>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>

#include "qkdn/service/controller_service.hpp"
#include "qkdn/southbound/ck_frame.hpp"
#include "qkdn/southbound/ck_messages.hpp"

namespace qkdn::test {

namespace net = boost::asio;
namespace ck = southbound::ck;
using namespace std::chrono_literals;

/// KM1 - KM2 - KM3 in a line (links L12, L23), one SAE per KM.
inline controller::TopologyDoc line_topology() {
  controller::TopologyDoc doc;
  doc.name = "ck-test";
  doc.kms = {{"KM1", "a"}, {"KM2", "b"}, {"KM3", "c"}};
  doc.links = {{"L12", "KM1", "KM2", 1000, 10, 0.02}, {"L23", "KM2", "KM3", 1000, 10, 0.02}};
  doc.applications = {{"SAE1", "KM1"}, {"SAE2", "KM2"}, {"SAE3", "KM3"}};
  return doc;
}

/// The controller service running in-process, with its network events collected.
class Harness {
 public:
  /// `handler`: routing and key supply (make_key_supply_handler()), or none.
  explicit Harness(service::ServiceOptions o = {},
                   std::shared_ptr<service::CommandHandler> handler = nullptr) {
    o.listen_host = "127.0.0.1";
    o.listen_port = 0;
    if (o.topology.kms.empty()) o.topology = line_topology();
    o.log = [](std::string_view) {};
    o.on_events = [this](const std::vector<controller::NetworkEvent>& ev) {
      std::lock_guard lock(mu_);
      events_.insert(events_.end(), ev.begin(), ev.end());
      cv_.notify_all();
    };
    service_ = std::make_unique<service::ControllerService>(std::move(o));
    if (handler) service_->set_command_handler(std::move(handler));
    service_->start();
  }
  ~Harness() { service_->stop(); }

  service::ControllerService& svc() { return *service_; }
  [[nodiscard]] std::uint16_t port() const { return service_->port(); }

  /// Waits (bounded) until an event of `kind` about `km` was seen.
  bool wait_event(controller::NetworkEvent::Kind kind, const std::string& km,
                  std::chrono::milliseconds bound = 5s) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, bound, [&] {
      for (const auto& e : events_) {
        if (e.kind == kind && e.km_id == km) return true;
      }
      return false;
    });
  }

  const controller::Km* find_km(const service::StateSnapshot& s, const std::string& id) {
    for (const auto& k : s.kms) {
      if (k.km_id == id) return &k;
    }
    return nullptr;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<controller::NetworkEvent> events_;
  std::unique_ptr<service::ControllerService> service_;
};

/// What a bounded read produced.
enum class ReadStatus { kFrame, kClosed, kTimeout };

/// A KM's side of a Ck connection, by hand: raw bytes out, frames in.
class RawClient {
 public:
  explicit RawClient(std::uint16_t port) : socket_(ioc_) {
    socket_.connect({net::ip::make_address("127.0.0.1"), port});
    socket_.set_option(net::ip::tcp::no_delay(true));
  }

  /// Sends bytes as they are (one write).
  void send_raw(std::string_view bytes) { net::write(socket_, net::buffer(bytes)); }

  /// Encodes a frame with any version, code and payload (no validation).
  static std::string frame(std::uint16_t command, std::uint32_t id, std::string_view payload,
                           std::uint16_t version = ck::kVersion) {
    ck::FrameHeader h;
    h.version = version;
    h.message_id = id;
    h.command = command;
    h.length = static_cast<std::uint16_t>(payload.size());
    auto head = ck::encode_header(h);
    std::string out(reinterpret_cast<const char*>(head.data()), head.size());
    out.append(payload);
    return out;
  }

  void send(std::uint16_t command, std::uint32_t id, std::string_view payload) {
    send_raw(frame(command, id, payload));
  }

  /// Reads one frame, waiting at most `bound` for it.
  ReadStatus read(ck::Frame& out, std::chrono::milliseconds bound = 5s) {
    std::uint8_t head[ck::kHeaderSize];
    const auto deadline = std::chrono::steady_clock::now() + bound;
    if (auto st = read_exact(head, sizeof head, deadline); st != ReadStatus::kFrame) return st;
    const auto h = ck::decode_header(std::span<const std::uint8_t, ck::kHeaderSize>(head, 10));
    std::string payload(h.length, '\0');
    if (h.length > 0) {
      if (auto st = read_exact(reinterpret_cast<std::uint8_t*>(payload.data()), h.length, deadline);
          st != ReadStatus::kFrame) {
        return st;
      }
    }
    out = ck::Frame{h.message_id, h.command, std::move(payload)};
    return ReadStatus::kFrame;
  }

  /// Reads one frame or fails the calling test.
  ck::Frame expect_frame(std::chrono::milliseconds bound = 5s) {
    ck::Frame f;
    const auto st = read(f, bound);
    if (st != ReadStatus::kFrame) {
      throw std::runtime_error(st == ReadStatus::kClosed ? "connection closed" : "read timeout");
    }
    return f;
  }

  /// True when the peer closed the connection within `bound` (frames before EOF are skipped).
  bool wait_closed(std::chrono::milliseconds bound = 5s) {
    ck::Frame f;
    const auto deadline = std::chrono::steady_clock::now() + bound;
    for (;;) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return false;
      const auto st = read(f, left);
      if (st == ReadStatus::kClosed) return true;
      if (st == ReadStatus::kTimeout) return false;
    }
  }

  /// Registers `km` with the given links and returns the response frame.
  ck::Frame do_register(const std::string& km, const std::string& links_json = "[]",
                        std::uint32_t id = 1) {
    send(0x14E1, id,
         R"({"km_id":")" + km + R"(","kma_endpoint":"127.0.0.1:7)" + std::to_string(id) +
             R"(","links":)" + links_json + "}");
    return expect_frame();
  }

  /// Heartbeat round trip; returns the response frame.
  ck::Frame heartbeat(const std::string& km, std::uint32_t id) {
    send(0x14E8, id, R"({"kma_id":")" + km + R"("})");
    return expect_frame();
  }

  net::ip::tcp::socket& socket() { return socket_; }

 private:
  ReadStatus read_exact(std::uint8_t* p, std::size_t n,
                        std::chrono::steady_clock::time_point deadline) {
    const int fd = socket_.native_handle();
    while (n > 0) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return ReadStatus::kTimeout;
      pollfd pfd{fd, POLLIN, 0};
      const int r = ::poll(&pfd, 1, static_cast<int>(left.count()));
      if (r == 0) return ReadStatus::kTimeout;
      if (r < 0) continue;
      const auto got = ::recv(fd, p, n, 0);
      if (got == 0) return ReadStatus::kClosed;
      if (got < 0) {
        if (errno == EINTR || errno == EAGAIN) continue;
        return ReadStatus::kClosed;
      }
      p += got;
      n -= static_cast<std::size_t>(got);
    }
    return ReadStatus::kFrame;
  }

  net::io_context ioc_;
  net::ip::tcp::socket socket_;
};

/// Decodes a payload the test expects to be valid for `code`.
template <class T>
T decode_as(const ck::Frame& f) {
  auto r = ck::decode_payload(f.command, f.payload);
  if (auto* e = std::get_if<ck::DecodeError>(&r)) {
    throw std::runtime_error("cannot decode " + f.payload + ": " + e->message);
  }
  return std::get<T>(std::get<ck::Message>(r));
}

}  // namespace qkdn::test
