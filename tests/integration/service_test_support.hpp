// Helpers of the service integration tests: the controller service in-process on 127.0.0.1:0
// with the key-supply handler, and fake KMs that speak real Ck over TCP and answer the
// controller's commands (0x410A, 0x410C, 0x4104, 0x4108, 0x41E5, 0x41EA) by a configurable
// behaviour.
#pragma once

#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/use_future.hpp>

#include "ck_test_support.hpp"
#include "qkdn/service/metrics.hpp"

namespace qkdn::test {

/// A link of a fake KM: its ID and the KM at the other end.
struct FakeLink {
  std::string link_id;
  std::string peer;
};

/// A KM's side of Ck, scripted: registers, reports its links' pools, then answers the
/// controller's commands on a reader thread while the test sends its own commands.
class FakeKm {
 public:
  /// How the KM answers. Change it only while no exchange with the KM is in flight.
  struct Behavior {
    bool refuse_reservation = false;    ///< 0x140B response 1 (insufficient_keys)
    bool hold_allocation = false;       ///< never answer 0x410C
    bool vanish_on_allocation = false;  ///< close the connection when 0x410C arrives
    bool answer_relay = true;           ///< answer 0x4104 with 0x1405 `relay_response`
    std::string relay_response = "OK";
    bool answer_session = true;  ///< answer 0x4108 with 0x1409 OK
    /// Key IDs to name in the next 0x140B answers (taken in order), before random ones.
    std::deque<std::string> next_key_ids;
  };

  FakeKm(std::uint16_t port, std::string km_id, std::vector<FakeLink> links,
         std::uint64_t pool_bits = 1'000'000)
      : km_(std::move(km_id)),
        links_(std::move(links)),
        pool_bits_(pool_bits),
        rng_(std::hash<std::string>{}(km_) ^ next_seed()),
        client_(port) {
    std::string links_json = "[";
    for (const auto& l : links_) {
      if (links_json.size() > 1) links_json += ",";
      links_json += R"({"link_id":")" + l.link_id + R"(","peer_kma_id":")" + l.peer + R"("})";
    }
    links_json += "]";
    const auto f = client_.do_register(km_, links_json, next_id_++);
    if (f.command != 0x41E2) throw std::runtime_error("register: unexpected " + f.payload);
    const auto r = decode_as<ck::RegisterResponse>(f);
    if (r.response != "OK") throw std::runtime_error("register refused: " + f.payload);
    epoch_ = r.controller_epoch;
    relay_routing_ = r.relay_routing.value_or("");
    reader_ = std::thread([this] { read_loop(); });
    report();
  }
  ~FakeKm() { stop(); }
  FakeKm(const FakeKm&) = delete;
  FakeKm& operator=(const FakeKm&) = delete;

  const std::string& id() const { return km_; }
  std::int64_t epoch() const { return epoch_; }
  /// relay_routing of the register response ("" when absent).
  const std::string& relay_routing() const { return relay_routing_; }

  /// Sends a status report (0x14E3) with every link up and `pool_bits` stored.
  void report(double qber = 0.01) {
    std::string links = "[";
    for (const auto& l : links_) {
      if (links.size() > 1) links += ",";
      links += R"({"link_id":")" + l.link_id + R"(","peer_kma_id":")" + l.peer +
               R"(","state":"up","stored_keys":)" + std::to_string(pool_bits_ / 256) +
               R"(,"stored_key_bits":)" + std::to_string(pool_bits_) +
               R"(,"key_rate_bps":1000,"consumption_rate_bps":0,"qber":)" + std::to_string(qber) +
               "}";
    }
    links += "]";
    send(0x14E3,
         R"({"kma_id":")" + km_ + R"(","timestamp":"2026-01-01T00:00:00Z","links":)" + links + "}");
  }

  /// Sends a command with a fresh MessageID; returns it.
  std::uint32_t send(std::uint16_t code, const std::string& payload) {
    std::lock_guard lock(write_mu_);
    const auto id = next_id_++;
    client_.send(code, id, payload);
    return id;
  }

  /// 0x1403 to `dst` for `keys` keys; returns its MessageID.
  std::uint32_t request_relay(const std::string& dst, int keys = 1) {
    return send(0x1403, R"({"destination_kma_id":")" + dst + R"(","number_of_keys":)" +
                            std::to_string(keys) + "}");
  }

  /// Waits (bounded) for a frame with `code` received after `after` frames were seen that
  /// matches `pred`; returns it. Frames are kept: wait with an index to skip earlier ones.
  std::optional<ck::Frame> wait_for(std::uint16_t code,
                                    const std::function<bool(const ck::Frame&)>& pred = {},
                                    std::chrono::milliseconds bound = 5s) {
    std::unique_lock lock(mu_);
    std::optional<ck::Frame> found;
    cv_.wait_for(lock, bound, [&] {
      for (const auto& f : inbox_) {
        if (f.command == code && (!pred || pred(f))) {
          found = f;
          return true;
        }
      }
      return false;
    });
    return found;
  }

  /// The answer to one of our commands: the first frame with that MessageID and `code`
  /// (or an Error about it).
  std::optional<ck::Frame> answer_to(std::uint32_t id, std::chrono::milliseconds bound = 5s) {
    std::unique_lock lock(mu_);
    std::optional<ck::Frame> found;
    cv_.wait_for(lock, bound, [&] {
      for (const auto& f : inbox_) {
        if (f.message_id == id && (f.command >> 8) == 0x41 && f.command != 0x41E5 &&
            f.command != 0x410A && f.command != 0x410C && f.command != 0x4104 &&
            f.command != 0x4108 && f.command != 0x41EA) {
          found = f;
          return true;
        }
      }
      return false;
    });
    return found;
  }

  /// Every frame with `code` received so far.
  std::vector<ck::Frame> received(std::uint16_t code) {
    std::lock_guard lock(mu_);
    std::vector<ck::Frame> out;
    for (const auto& f : inbox_) {
      if (f.command == code) out.push_back(f);
    }
    return out;
  }

  /// Key IDs this KM named in its 0x140B answers.
  std::vector<std::string> reserved_keys() {
    std::lock_guard lock(mu_);
    return reserved_;
  }

  void set_behavior(Behavior b) {
    std::lock_guard lock(mu_);
    behavior_ = std::move(b);
  }

  /// Closes the connection as a crashed KM would (no goodbye).
  void vanish() {
    ::shutdown(client_.socket().native_handle(), SHUT_RDWR);
    closed_ = true;
  }
  bool closed() const { return closed_; }

  void stop() {
    if (stopping_.exchange(true)) return;
    vanish();
    if (reader_.joinable()) reader_.join();
  }

 private:
  // Fixed seeds (reproducible runs), distinct per instance: a KM that reconnects names new keys.
  static std::uint64_t next_seed() {
    static std::atomic<std::uint64_t> n{0x5eed};
    return n++;
  }

  std::string uuid() {
    std::uniform_int_distribution<int> hex(0, 15);
    static constexpr char kHex[] = "0123456789abcdef";
    std::string s = "xxxxxxxx-xxxx-4xxx-8xxx-xxxxxxxxxxxx";
    for (auto& c : s) {
      if (c == 'x') c = kHex[hex(rng_)];
    }
    return s;
  }

  void reply(std::uint16_t code, std::uint32_t id, const std::string& payload) {
    std::lock_guard lock(write_mu_);
    try {
      client_.send(code, id, payload);
    } catch (const std::exception&) {
      // The connection is gone; the test notices through its waits.
    }
  }

  // Answers one controller command according to the behaviour (reader thread).
  void answer(const ck::Frame& f) {
    Behavior b;
    {
      std::lock_guard lock(mu_);
      b = behavior_;
    }
    switch (f.command) {
      case 0x410A: {
        const auto m = decode_as<ck::KeyReservationRequest>(f);
        if (b.refuse_reservation) {
          reply(0x140B, f.message_id,
                R"({"key_ids":[],"response":1,"extension":[{"error":"insufficient_keys",)"
                R"("message":"pool empty"}]})");
          return;
        }
        std::string ids;
        std::vector<std::string> named;
        for (std::int64_t i = 0; i < m.number_of_keys.value_or(1); ++i) {
          std::string k;
          {
            std::lock_guard lock(mu_);
            if (!behavior_.next_key_ids.empty()) {
              k = behavior_.next_key_ids.front();
              behavior_.next_key_ids.pop_front();
            }
          }
          if (k.empty()) k = uuid();
          named.push_back(k);
          ids += (ids.empty() ? "\"" : ",\"") + k + "\"";
        }
        {
          std::lock_guard lock(mu_);
          reserved_.insert(reserved_.end(), named.begin(), named.end());
        }
        reply(0x140B, f.message_id,
              R"({"next_kma_id":")" + m.next_kma_id.value_or("") + R"(","key_ids":[)" + ids +
                  R"(],"response":0})");
        return;
      }
      case 0x410C:
        if (b.vanish_on_allocation) {
          vanish();
          return;
        }
        if (b.hold_allocation) return;
        reply(0x140D, f.message_id, R"({"response":0})");
        return;
      case 0x4104: {
        if (!b.answer_relay) return;
        const auto m = decode_as<ck::KeyRelayRequest>(f);
        reply(0x1405, f.message_id,
              R"({"response":")" + b.relay_response + R"(","key_relay_request_id":")" +
                  m.key_relay_request_id.value_or("") + R"("})");
        return;
      }
      case 0x4108: {
        if (!b.answer_session) return;
        const auto m = decode_as<ck::SessionCreationNotification>(f);
        reply(0x1409, f.message_id, R"({"session_id":")" + m.session_id + R"(","response":"OK"})");
        return;
      }
      case 0x41EA: {  // key release: a conforming KM answers with what it did
        const auto m = decode_as<ck::KeyRelease>(f);
        reply(0x14EB, f.message_id,
              R"({"key_relay_request_id":")" + m.key_relay_request_id +
                  R"(","response":"OK","released":0,"discarded":0})");
        return;
      }
      case 0x41E5: {
        const auto m = decode_as<ck::RelayInstruction>(f);
        reply(0x14E6, f.message_id,
              R"({"instruction_id":")" + m.instruction_id + R"(","response":"OK"})");
        return;
      }
      default:
        return;
    }
  }

  void read_loop() {
    while (!stopping_) {
      ck::Frame f;
      const auto st = client_.read(f, 200ms);
      if (st == ReadStatus::kClosed) {
        closed_ = true;
        cv_.notify_all();
        return;
      }
      if (st != ReadStatus::kFrame) continue;
      // Answered before it is visible in the inbox: a test that saw a command received knows
      // the behaviour in force has been applied to it (no race with set_behavior).
      try {
        answer(f);
      } catch (const std::exception&) {
        // A frame the test did not expect: kept in the inbox, unanswered.
      }
      {
        std::lock_guard lock(mu_);
        inbox_.push_back(f);
      }
      cv_.notify_all();
    }
  }

  std::string km_;
  std::vector<FakeLink> links_;
  std::uint64_t pool_bits_;
  std::mt19937_64 rng_;
  RawClient client_;
  std::int64_t epoch_ = 0;
  std::string relay_routing_;
  std::uint32_t next_id_ = 1;
  std::mutex write_mu_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<ck::Frame> inbox_;
  std::vector<std::string> reserved_;
  Behavior behavior_;
  std::atomic<bool> stopping_{false};
  std::atomic<bool> closed_{false};
  std::thread reader_;
};

/// The service in-process with the key-supply handler, fast timers, silent log.
class ServiceHarness {
 public:
  explicit ServiceHarness(controller::TopologyDoc topology, service::ServiceOptions o = {}) {
    o.listen_host = "127.0.0.1";
    o.listen_port = 0;
    o.insecure_ck = true;
    o.topology = std::move(topology);
    o.heartbeat_interval = 10s;  // fake KMs send no heartbeats
    o.status_interval = 100ms;
    o.request_timeout = 2s;
    if (!o.log) {
      o.log = [this](std::string_view line) {
        std::lock_guard lock(log_mu_);
        log_.emplace_back(line);
      };
    }
    service_ = std::make_unique<service::ControllerService>(std::move(o));
    service_->set_command_handler(service::make_key_supply_handler());
    service_->start();
  }
  ~ServiceHarness() { service_->stop(); }

  service::ControllerService& svc() { return *service_; }
  std::uint16_t port() const { return service_->port(); }

  /// Runs f(Core&) on the core strand and returns its result (blocks).
  template <class F>
  auto core(F f) {
    auto op = service_->on_core(std::move(f));
    return net::co_spawn(service_->core_executor(), std::move(op), net::use_future).get();
  }

  /// Waits (bounded) until every link is up with a reported pool.
  bool wait_links_up(std::chrono::milliseconds bound = 5s) {
    const auto deadline = std::chrono::steady_clock::now() + bound;
    while (std::chrono::steady_clock::now() < deadline) {
      const bool ok = core([](service::Core& c) {
        for (const auto& [id, l] : c.network.links()) {
          if (l.oper != controller::OperState::kUp || l.stored_key_bits == 0) return false;
        }
        return true;
      });
      if (ok) return true;
      std::this_thread::sleep_for(10ms);
    }
    return false;
  }

  /// Polls `pred` on the core strand until it holds (bounded).
  template <class P>
  bool wait_core(P pred, std::chrono::milliseconds bound = 5s) {
    const auto deadline = std::chrono::steady_clock::now() + bound;
    while (std::chrono::steady_clock::now() < deadline) {
      if (core(pred)) return true;
      std::this_thread::sleep_for(10ms);
    }
    return false;
  }

  /// Log lines so far (for failure messages only; tests assert on behaviour).
  std::string log_text() {
    std::lock_guard lock(log_mu_);
    std::string out;
    for (const auto& l : log_) out += l + "\n";
    return out;
  }

 private:
  std::mutex log_mu_;
  std::vector<std::string> log_;
  std::unique_ptr<service::ControllerService> service_;
};

/// The value of one sample line of a Prometheus text exposition ("name{labels} value"), or -1.
inline double metric_value(const std::string& text, const std::string& series) {
  std::size_t pos = 0;
  while ((pos = text.find(series + " ", pos)) != std::string::npos) {
    if (pos == 0 || text[pos - 1] == '\n') {
      return std::stod(text.substr(pos + series.size() + 1));
    }
    pos += series.size();
  }
  return -1;
}

/// KM1 - KM2 - ... - KMn in a line (links L12, L23, ...), SAE<i> at KM<i>.
inline controller::TopologyDoc chain_topology(int n) {
  controller::TopologyDoc doc;
  doc.name = "chain";
  for (int i = 1; i <= n; ++i) {
    const auto km = "KM" + std::to_string(i);
    doc.kms.push_back({km, "site" + std::to_string(i)});
    doc.applications.push_back({"SAE" + std::to_string(i), km});
    if (i > 1) {
      doc.links.push_back({"L" + std::to_string(i - 1) + std::to_string(i),
                           "KM" + std::to_string(i - 1), km, 1000, 10, 0.01});
    }
  }
  return doc;
}

/// KM1 -> KM4 two ways: KM1-KM2-KM4 (L12, L24) and KM1-KM3-KM4 (L13, L34).
inline controller::TopologyDoc diamond_topology() {
  controller::TopologyDoc doc;
  doc.name = "diamond";
  doc.kms = {{"KM1", "a"}, {"KM2", "b"}, {"KM3", "c"}, {"KM4", "d"}};
  doc.links = {{"L12", "KM1", "KM2", 1000, 10, 0.01},
               {"L13", "KM1", "KM3", 1000, 10, 0.01},
               {"L24", "KM2", "KM4", 1000, 10, 0.01},
               {"L34", "KM3", "KM4", 1000, 10, 0.01}};
  doc.applications = {{"SAE1", "KM1"}, {"SAE4", "KM4"}};
  return doc;
}

/// The links of KM `km` in `doc`, as FakeLinks.
inline std::vector<FakeLink> links_of(const controller::TopologyDoc& doc, const std::string& km) {
  std::vector<FakeLink> out;
  for (const auto& l : doc.links) {
    if (l.a == km) out.push_back({l.link_id, l.b});
    if (l.b == km) out.push_back({l.link_id, l.a});
  }
  return out;
}

/// One fake KM per KM of the topology (in document order), all reporting full pools.
inline std::map<std::string, std::unique_ptr<FakeKm>> connect_all(
    const controller::TopologyDoc& doc, std::uint16_t port) {
  std::map<std::string, std::unique_ptr<FakeKm>> out;
  for (const auto& km : doc.kms) {
    out[km.km_id] = std::make_unique<FakeKm>(port, km.km_id, links_of(doc, km.km_id));
  }
  return out;
}

}  // namespace qkdn::test
