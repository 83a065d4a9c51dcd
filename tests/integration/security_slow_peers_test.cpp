// Slow and flooding peers before authentication on the controller's Ck listener (issue 13):
// 500 connections that trickle TLS handshake bytes are each closed by the handshake deadline
// while a real agent registers in under 1 s; a peer that never registers is closed by the
// registration deadline however busy it keeps the connection; and once the pre-registration cap
// is reached, a newcomer closes the connection that has waited longest, so a KM still gets in.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <condition_variable>
#include <cstdio>
#include <mutex>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include "ck_test_support.hpp"
#include "qkdn/net/listener.hpp"
#include "security_support.hpp"

namespace qkdn::test {
namespace {

namespace asio = boost::asio;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;
constexpr auto kTuple = asio::as_tuple(asio::use_awaitable);

/// Peers that connect and then send one byte every `interval` until the server closes them:
/// the start of a TLS ClientHello record that promises 512 bytes, then zeros. Each records when
/// it connected and when the server closed it. Runs on its own thread.
class Tricklers {
 public:
  Tricklers(std::uint16_t port, int count, milliseconds interval)
      : work_(io_.get_executor()), peers_(static_cast<std::size_t>(count)) {
    for (std::size_t i = 0; i < peers_.size(); ++i) {
      asio::co_spawn(io_, run(port, i, interval), asio::detached);
    }
    thread_ = std::thread([this] { io_.run(); });
  }
  ~Tricklers() {
    work_.reset();
    io_.stop();
    thread_.join();
  }

  struct Peer {
    bool connected = false;
    bool closed = false;
    Clock::time_point opened{};
    Clock::time_point ended{};
  };

  /// Waits (bounded) until pred(peers) holds; returns it.
  bool wait(const std::function<bool(const std::vector<Peer>&)>& pred, milliseconds bound) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, bound, [&] { return pred(peers_); });
  }
  std::vector<Peer> peers() {
    std::lock_guard lock(mu_);
    return peers_;
  }
  static std::size_t connected(const std::vector<Peer>& p) {
    return static_cast<std::size_t>(
        std::count_if(p.begin(), p.end(), [](const Peer& x) { return x.connected; }));
  }
  static std::size_t closed(const std::vector<Peer>& p) {
    return static_cast<std::size_t>(
        std::count_if(p.begin(), p.end(), [](const Peer& x) { return x.closed; }));
  }

 private:
  asio::awaitable<void> run(std::uint16_t port, std::size_t i, milliseconds interval) {
    auto sock = std::make_shared<asio::ip::tcp::socket>(io_);
    auto connect_op = sock->async_connect({asio::ip::make_address("127.0.0.1"), port}, kTuple);
    auto [cec] = co_await std::move(connect_op);
    if (cec) co_return;
    update(i, [](Peer& p) {
      p.connected = true;
      p.opened = Clock::now();
    });
    // The reader notices the server's close at once (EOF or reset).
    asio::co_spawn(
        io_,
        [this, sock, i]() -> asio::awaitable<void> {
          std::array<char, 64> buf{};
          for (;;) {
            auto read_some_op = sock->async_read_some(asio::buffer(buf), kTuple);
            auto [ec, n] = co_await std::move(read_some_op);
            if (ec) break;
          }
          update(i, [](Peer& p) {
            p.closed = true;
            p.ended = Clock::now();
          });
        },
        asio::detached);
    static constexpr std::array<unsigned char, 11> kHello = {0x16, 0x03, 0x01, 0x02, 0x00, 0x01,
                                                             0x00, 0x01, 0xfc, 0x03, 0x03};
    asio::steady_timer timer(io_);
    for (std::size_t k = 0;; ++k) {
      const unsigned char byte = k < kHello.size() ? kHello[k] : 0;
      auto write_op = asio::async_write(*sock, asio::buffer(&byte, 1), kTuple);
      auto [wec, wn] = co_await std::move(write_op);
      if (wec) co_return;
      timer.expires_after(interval);
      auto wait_op = timer.async_wait(kTuple);
      co_await std::move(wait_op);
      if (done(i)) co_return;
    }
  }
  template <class F>
  void update(std::size_t i, F f) {
    std::lock_guard lock(mu_);
    f(peers_[i]);
    cv_.notify_all();
  }
  bool done(std::size_t i) {
    std::lock_guard lock(mu_);
    return peers_[i].closed;
  }

  asio::io_context io_;
  asio::executor_work_guard<asio::io_context::executor_type> work_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Peer> peers_;
  std::thread thread_;
};

class SlowPeers : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    pki_ = new TestPki();
    std::filesystem::create_directories(pki_->dir() / "km");
    ca_ = pki_->make_ca("slow");
    LeafSpec ctl;
    ctl.cn = "ctl";
    ctl.san_uris = {"urn:qkdn:controller:ctl"};
    ctl.client_auth = false;
    controller_ = pki_->issue(ca_, "controller", ctl);
    LeafSpec km;
    km.cn = "KM1";
    km.san_uris = {"urn:qkdn:km:KM1"};
    pki_->issue(ca_, "km/KM1", km);
  }
  static void TearDownTestSuite() { delete pki_; }

  static service::ServiceOptions tls_options() {
    service::ServiceOptions o;
    o.tls = controller_.files();
    o.controller_id = "ctl";
    o.topology = matrix_topology();
    return o;
  }

  /// Waits (bounded) until KM1 is registered; the time it took from `since`.
  static std::optional<milliseconds> wait_registered(Harness& h, Clock::time_point since,
                                                     milliseconds bound) {
    while (Clock::now() - since < bound) {
      auto snap = h.svc().snapshot_state();
      if (const auto* km = h.find_km(snap, "KM1"); km != nullptr && km->connected) {
        return std::chrono::duration_cast<milliseconds>(Clock::now() - since);
      }
      std::this_thread::sleep_for(milliseconds(5));
    }
    return std::nullopt;
  }

  static TestPki* pki_;
  static std::string ca_;
  static Issued controller_;
};
TestPki* SlowPeers::pki_ = nullptr;
std::string SlowPeers::ca_;
Issued SlowPeers::controller_;

// 500 peers trickle a TLS ClientHello one byte per 200 ms: a real agent still registers in
// under 1 s among them, and each trickler is closed by the 3 s handshake deadline (not before
// 2.5 s, not after 5 s), counted as a handshake timeout.
TEST_F(SlowPeers, TricklersAreClosedByDeadlinesWhileAnAgentRegisters) {
  ASSERT_GE(qkdn::net::raise_fd_limit(), 1500u) << "this test needs 1,500 descriptors";
  auto o = tls_options();
  o.max_unregistered = 1024;  // all 500 stay until their deadline (no eviction in this test)
  o.handshake_timeout = milliseconds(3000);
  o.register_timeout = milliseconds(4000);
  Harness h(std::move(o));
  constexpr int kPeers = 500;
  Tricklers t(h.port(), kPeers, milliseconds(200));
  ASSERT_TRUE(
      t.wait([](const auto& p) { return Tricklers::connected(p) == kPeers; }, milliseconds(20'000)))
      << Tricklers::connected(t.peers()) << " connected";

  const auto start = Clock::now();
  RunningAgent agent(ca_, pki_->dir(), "KM1", h.port());
  const auto took = wait_registered(h, start, milliseconds(10'000));
  const auto open_then = kPeers - Tricklers::closed(t.peers());
  ASSERT_TRUE(took.has_value()) << "the agent did not register within 10 s";
  EXPECT_LT(took->count(), 1000) << "registration took " << took->count() << " ms";
  EXPECT_GE(open_then, kPeers * 8 / 10) << "the flood was mostly gone before the agent came";
  std::printf("[ measure ] agent registered in %lld ms with %zu tricklers open\n",
              static_cast<long long>(took->count()), open_then);

  ASSERT_TRUE(
      t.wait([](const auto& p) { return Tricklers::closed(p) == kPeers; }, milliseconds(30'000)))
      << Tricklers::closed(t.peers()) << " of " << kPeers << " closed";
  milliseconds shortest{INT64_MAX};
  milliseconds longest{0};
  for (const auto& p : t.peers()) {
    const auto life = std::chrono::duration_cast<milliseconds>(p.ended - p.opened);
    shortest = std::min(shortest, life);
    longest = std::max(longest, life);
  }
  std::printf("[ measure ] trickler lifetimes %lld..%lld ms (handshake deadline 3000 ms)\n",
              static_cast<long long>(shortest.count()), static_cast<long long>(longest.count()));
  EXPECT_GE(shortest.count(), 2500);
  EXPECT_LE(longest.count(), 5000);
  EXPECT_GE(h.svc().counters().protocol_errors["tls_handshake_timeout"],
            static_cast<std::uint64_t>(kPeers));
  auto snap = h.svc().snapshot_state();
  EXPECT_TRUE(h.find_km(snap, "KM1")->connected) << "the agent lost its registration";
}

// A plain-TCP peer that keeps its connection busy with Register frames the controller refuses
// (NG, connection kept) is closed by the registration deadline all the same.
TEST_F(SlowPeers, UnregisteredPeerIsClosedByTheRegistrationDeadline) {
  service::ServiceOptions o;
  o.insecure_ck = true;
  o.register_timeout = milliseconds(1500);
  Harness h(std::move(o));
  RawClient c(h.port());
  const auto start = Clock::now();
  bool closed = false;
  while (Clock::now() - start < milliseconds(6000) && !closed) {
    try {
      c.send(0x14E1, 1, R"({"km_id":"KM1"})");  // no kma_endpoint: NG bad_request
    } catch (const std::exception&) {
      closed = true;
      break;
    }
    closed = c.wait_closed(milliseconds(300));
  }
  const auto took = std::chrono::duration_cast<milliseconds>(Clock::now() - start);
  EXPECT_TRUE(closed) << "still open after " << took.count() << " ms";
  EXPECT_GE(took.count(), 1200);
  EXPECT_LE(took.count(), 4000);
  EXPECT_GE(h.svc().counters().protocol_errors["establish_timeout"], 1u);
}

// With max_unregistered silent connections held, newcomers close the ones that have waited
// longest (over 1 s), long before the 20 s handshake deadline would, and a real agent registers
// in under 1 s.
TEST_F(SlowPeers, CapEvictsTheOldestUnregisteredConnection) {
  auto o = tls_options();
  o.max_unregistered = 8;
  o.handshake_timeout = milliseconds(20'000);
  o.register_timeout = milliseconds(30'000);
  Harness h(std::move(o));
  std::vector<std::unique_ptr<RawClient>> first;
  for (int i = 0; i < 8; ++i) first.push_back(std::make_unique<RawClient>(h.port()));
  // Newcomers keep arriving (one per 100 ms): each one either closes an old-enough waiting
  // connection or is closed itself; within a few seconds all of the first eight are gone.
  std::vector<std::unique_ptr<RawClient>> later;
  const auto start = Clock::now();
  std::vector<bool> gone(first.size(), false);
  auto all_closed = [&] {
    bool all = true;
    for (std::size_t i = 0; i < first.size(); ++i) {
      if (!gone[i]) gone[i] = first[i]->wait_closed(milliseconds(20));
      all = all && gone[i];
    }
    return all;
  };
  bool evicted = false;
  while (Clock::now() - start < milliseconds(8000) && !(evicted = all_closed())) {
    later.push_back(std::make_unique<RawClient>(h.port()));
    std::this_thread::sleep_for(milliseconds(100));
  }
  const auto took = std::chrono::duration_cast<milliseconds>(Clock::now() - start);
  EXPECT_TRUE(evicted) << "the first connections were not evicted within 8 s";
  EXPECT_LT(took.count(), 8000);
  // The cap is still full of silent connections; once they are old enough to be evicted (the
  // documented 1 s), the agent's connection takes the oldest one's slot.
  std::this_thread::sleep_for(milliseconds(1100));
  const auto agent_start = Clock::now();
  RunningAgent agent(ca_, pki_->dir(), "KM1", h.port());
  const auto reg = wait_registered(h, agent_start, milliseconds(10'000));
  ASSERT_TRUE(reg.has_value());
  EXPECT_LT(reg->count(), 1000) << "registration took " << reg->count() << " ms";
  EXPECT_GE(h.svc().counters().connections_refused, 8u);
}

}  // namespace
}  // namespace qkdn::test
