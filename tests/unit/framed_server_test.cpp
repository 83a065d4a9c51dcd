// southbound::FramedServer over real TCP on 127.0.0.1:0, with a line protocol standing in for
// Ck and KMA ("REG <name>" registers; any other line is a frame). Every wait is bounded.
#include "qkdn/southbound/framed_server.hpp"

#include <atomic>
#include <chrono>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/streambuf.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

namespace {

namespace net = boost::asio;
using net::ip::tcp;
using qkdn::southbound::FramedServer;
using qkdn::southbound::FramedServerOptions;
using namespace std::chrono_literals;
constexpr auto kTuple = net::as_tuple(net::use_awaitable);

// Polls `done` until it holds or `limit` passes.
template <class F>
bool eventually(F done, std::chrono::milliseconds limit = 5s) {
  const auto end = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < end) {
    if (done()) return true;
    std::this_thread::sleep_for(5ms);
  }
  return done();
}

// A client whose every read is bounded (a lost answer fails the test, never hangs it).
class Client {
 public:
  Client(net::io_context& io, const tcp::endpoint& at) : io_(io), socket_(io) {
    socket_.connect(at);
  }
  void send(const std::string& line) { net::write(socket_, net::buffer(line + "\n")); }
  // The next line, or "<eof>" when the server closed, or "<timeout>" after 3 s.
  std::string line() {
    std::optional<boost::system::error_code> result;
    std::size_t n = 0;
    net::async_read_until(socket_, buf_, '\n', [&](boost::system::error_code ec, std::size_t k) {
      result = ec;
      n = k;
    });
    io_.restart();
    io_.run_for(3s);
    if (!result) {
      socket_.cancel();
      io_.restart();
      io_.run_for(1s);
      return "<timeout>";
    }
    if (*result) return "<eof>";
    std::string out(static_cast<const char*>(buf_.data().data()), n - 1);
    buf_.consume(n);
    return out;
  }

 private:
  net::io_context& io_;
  tcp::socket socket_;
  net::streambuf buf_;
};

class FramedServerTest : public ::testing::Test {
 protected:
  void TearDown() override {
    if (server) server->stop();
    server.reset();
    work.reset();
    for (auto& t : threads) t.join();
  }

  // Starts the server; `opt` as given, hooks counting into the fixture.
  void start(FramedServerOptions opt) {
    FramedServer::Hooks h;
    h.serve = [this](std::shared_ptr<FramedServer::Connection> c, tcp::socket s) {
      return serve(std::move(c), std::move(s));
    };
    h.refused = [this] { ++refused; };
    h.accepted = [this] { ++accepted; };
    h.deadline_passed = [this](const std::shared_ptr<FramedServer::Connection>&) { ++deadlines; };
    h.log = [](const std::string& line) { ADD_FAILURE() << "server log: " << line; };
    server = std::make_unique<FramedServer>(io.get_executor(), std::move(opt), std::move(h));
    boost::system::error_code ec;
    endpoint = server->listen(tcp::endpoint(net::ip::make_address("127.0.0.1"), 0), ec);
    ASSERT_FALSE(ec) << ec.message();
    ASSERT_NE(endpoint.port(), 0);
    server->start();
    for (int i = 0; i < 2; ++i) threads.emplace_back([this] { io.run(); });
  }

  // The owner's registration: held until `release` (pending until then), then refused for
  // names starting with "standby" (the HA hook: NG not_leader), else registered.
  net::awaitable<FramedServer::Verdict> attempt(std::string name, FramedServer::Pending p) {
    ++attempts;
    net::steady_timer t(co_await net::this_coro::executor);
    while (!release.load()) {
      t.expires_after(2ms);
      auto op = t.async_wait(kTuple);
      co_await std::move(op);
    }
    p.started();
    if (name.starts_with("standby")) {
      co_return FramedServer::Verdict::refuse("not_leader", "this controller is a standby");
    }
    co_return FramedServer::Verdict::ok();
  }

  net::awaitable<void> serve(std::shared_ptr<FramedServer::Connection> conn, tcp::socket socket) {
    auto sock = std::make_shared<tcp::socket>(std::move(socket));
    conn->set_closer([sock, ex = conn->executor()] {
      net::post(ex, [sock] {
        boost::system::error_code ec;
        sock->shutdown(tcp::socket::shutdown_both, ec);
        sock->close(ec);
      });
    });
    net::streambuf buf;
    for (;;) {
      auto read = net::async_read_until(*sock, buf, '\n', kTuple);
      auto [ec, n] = co_await std::move(read);
      if (ec) break;
      std::string line(static_cast<const char*>(buf.data().data()), n - 1);
      buf.consume(n);
      std::string answer;
      if (line.starts_with("REG ")) {
        auto name = line.substr(4);
        auto gate = conn->register_peer(
            [name]() {
              return name == "liar" ? FramedServer::Verdict::refuse("bad_request", "identity")
                                    : FramedServer::Verdict::ok();
            },
            [this, name](FramedServer::Pending p) { return attempt(name, std::move(p)); });
        auto r = co_await std::move(gate);
        using O = FramedServer::Registration::Outcome;
        switch (r.outcome) {
          case O::kRegistered:
            answer = "OK";
            break;
          case O::kBusy:
            answer = "BUSY " + std::to_string(r.retry_after.count());
            break;
          case O::kInProgress:
            answer = "INPROGRESS";
            break;
          case O::kRefused:
            answer = "NG " + r.verdict.refusal;
            break;
        }
      } else if (!conn->registered()) {
        answer = "NOTREG";
      } else {
        switch (conn->admit_frame()) {
          case qkdn::net::FloodGuard::Verdict::kAdmit:
            answer = "ECHO " + line;
            break;
          case qkdn::net::FloodGuard::Verdict::kRefuse:
            answer = "SLOW";
            break;
          case qkdn::net::FloodGuard::Verdict::kDisconnect:
            answer = "BYE";
            break;
        }
      }
      answer += '\n';  // the buffer must live until the write completes
      auto write = net::async_write(*sock, net::buffer(answer), kTuple);
      co_await std::move(write);
    }
  }

  net::io_context io;
  std::optional<net::executor_work_guard<net::io_context::executor_type>> work{io.get_executor()};
  std::vector<std::thread> threads;
  std::unique_ptr<FramedServer> server;
  tcp::endpoint endpoint;
  std::atomic<bool> release{true};
  std::atomic<int> attempts{0}, refused{0}, accepted{0}, deadlines{0};
  net::io_context client_io;
};

TEST_F(FramedServerTest, RegistersAndServesFrames) {
  start({});
  Client c(client_io, endpoint);
  c.send("hello");
  EXPECT_EQ(c.line(), "NOTREG");
  c.send("REG km1");
  EXPECT_EQ(c.line(), "OK");
  c.send("hello");
  EXPECT_EQ(c.line(), "ECHO hello");
  EXPECT_EQ(accepted.load(), 1);
}

TEST_F(FramedServerTest, PendingRegistrationsBeyondTheBoundAreAnsweredBusy) {
  FramedServerOptions o;
  o.registrations = std::make_shared<qkdn::net::AdmissionQueue>(1);
  o.registration_retry_floor = 250ms;
  start(o);
  release = false;
  Client a(client_io, endpoint);
  a.send("REG km-a");
  ASSERT_TRUE(eventually([&] { return attempts.load() == 1; }));  // a waits for its verdict
  Client b(client_io, endpoint);
  b.send("REG km-b");
  const auto busy = b.line();
  ASSERT_TRUE(busy.starts_with("BUSY ")) << busy;
  EXPECT_GE(std::stoi(busy.substr(5)), 250);  // the retry hint has the floor
  EXPECT_EQ(attempts.load(), 1);              // b never reached the owner
  release = true;
  EXPECT_EQ(a.line(), "OK");
  b.send("REG km-b");  // the place is free again
  EXPECT_EQ(b.line(), "OK");
  EXPECT_EQ(o.registrations->depth(), 0u);
}

// With the hold on, a registration that finds the queue full waits for a place instead of being
// answered busy, and gets it as soon as the one ahead starts (no reconnect, no retry).
TEST_F(FramedServerTest, RegistrationsBeyondTheBoundAreHeldForAPlace) {
  FramedServerOptions o;
  o.registrations = std::make_shared<qkdn::net::AdmissionQueue>(1);
  o.max_held_registrations = 4;
  o.registration_hold = 5s;
  start(o);
  release = false;
  Client a(client_io, endpoint);
  a.send("REG km-a");
  ASSERT_TRUE(eventually([&] { return attempts.load() == 1; }));  // a waits for its verdict
  Client b(client_io, endpoint);
  b.send("REG km-b");
  ASSERT_TRUE(eventually([&] { return server->held() == 1; }));  // b is held, not refused
  EXPECT_EQ(attempts.load(), 1);                                 // and not at the owner yet
  release = true;
  EXPECT_EQ(a.line(), "OK");
  EXPECT_EQ(b.line(), "OK");  // on the same connection, without a busy answer
  EXPECT_EQ(attempts.load(), 2);
  EXPECT_EQ(server->held(), 0u);
  EXPECT_EQ(server->held_total(), 1u);
  EXPECT_EQ(o.registrations->depth(), 0u);
}

// The hold is bounded in number (beyond it: busy at once) and in time (then: busy).
TEST_F(FramedServerTest, TheHoldIsBoundedInNumberAndTime) {
  FramedServerOptions o;
  o.registrations = std::make_shared<qkdn::net::AdmissionQueue>(1);
  o.registration_retry_floor = 250ms;
  o.max_held_registrations = 1;
  o.registration_hold = 300ms;
  start(o);
  release = false;
  Client a(client_io, endpoint);
  a.send("REG km-a");
  ASSERT_TRUE(eventually([&] { return attempts.load() == 1; }));
  Client b(client_io, endpoint);
  b.send("REG km-b");
  ASSERT_TRUE(eventually([&] { return server->held() == 1; }));
  Client c(client_io, endpoint);
  c.send("REG km-c");
  const auto full = c.line();  // the hold is full: busy at once
  ASSERT_TRUE(full.starts_with("BUSY ")) << full;
  const auto late = b.line();  // held 300 ms without a place: busy
  ASSERT_TRUE(late.starts_with("BUSY ")) << late;
  EXPECT_GE(std::stoi(late.substr(5)), 250);
  EXPECT_EQ(server->held(), 0u);
  release = true;
  EXPECT_EQ(a.line(), "OK");
  EXPECT_EQ(attempts.load(), 1);  // neither b nor c reached the owner
}

// Held registrations get places in their order of arrival, before a newcomer that finds a place
// just freed (first come, first served).
TEST_F(FramedServerTest, HeldRegistrationsAreServedFirstComeFirstServed) {
  FramedServerOptions o;
  o.registrations = std::make_shared<qkdn::net::AdmissionQueue>(1);
  o.max_held_registrations = 8;
  o.registration_hold = 5s;
  start(o);
  release = false;
  Client a(client_io, endpoint);
  a.send("REG km-a");
  ASSERT_TRUE(eventually([&] { return attempts.load() == 1; }));
  Client b(client_io, endpoint);
  b.send("REG km-b");
  ASSERT_TRUE(eventually([&] { return server->held() == 1; }));
  Client c(client_io, endpoint);
  c.send("REG km-c");
  ASSERT_TRUE(eventually([&] { return server->held() == 2; }));
  release = true;
  EXPECT_EQ(a.line(), "OK");
  EXPECT_EQ(b.line(), "OK");
  EXPECT_EQ(c.line(), "OK");
  EXPECT_EQ(attempts.load(), 3);
  EXPECT_EQ(server->held_total(), 2u);
}

TEST_F(FramedServerTest, OwnerRefusalsAreHandedBackWithTheirCode) {
  start({});
  Client c(client_io, endpoint);
  c.send("REG standby-km");
  EXPECT_EQ(c.line(), "NG not_leader");
  c.send("REG liar");  // refused by the at-once check, before the owner's attempt
  EXPECT_EQ(c.line(), "NG bad_request");
  EXPECT_EQ(attempts.load(), 1);
  c.send("hello");
  EXPECT_EQ(c.line(), "NOTREG");
}

TEST_F(FramedServerTest, DeadlineClosesASilentPeerAndFreesItsSlot) {
  qkdn::net::ConnectionGate gate(4);
  FramedServerOptions o;
  o.unregistered = &gate;
  o.registration_timeout = 200ms;
  start(o);
  Client silent(client_io, endpoint);
  Client registered(client_io, endpoint);
  registered.send("REG km1");
  EXPECT_EQ(registered.line(), "OK");
  EXPECT_EQ(silent.line(), "<eof>");  // closed by the deadline (3 s receive timeout otherwise)
  EXPECT_EQ(deadlines.load(), 1);
  EXPECT_TRUE(eventually([&] { return gate.count() == 0; }));
  EXPECT_TRUE(eventually([&] { return server->active() == 1; }));
  registered.send("still here");  // registered in time: the deadline does not apply
  EXPECT_EQ(registered.line(), "ECHO still here");
}

TEST_F(FramedServerTest, UnregisteredConnectionsBeyondTheGateAreRefused) {
  qkdn::net::ConnectionGate gate(1);
  FramedServerOptions o;
  o.unregistered = &gate;
  start(o);
  Client first(client_io, endpoint);
  ASSERT_TRUE(eventually([&] { return gate.count() == 1; }));
  Client second(client_io, endpoint);
  EXPECT_EQ(second.line(), "<eof>");
  EXPECT_EQ(refused.load(), 1);
  first.send("REG km1");  // registering frees the slot
  EXPECT_EQ(first.line(), "OK");
  EXPECT_EQ(gate.count(), 0u);
  Client third(client_io, endpoint);
  third.send("REG km2");
  EXPECT_EQ(third.line(), "OK");
}

TEST_F(FramedServerTest, FrameGateRefusesARegisteredPeerOverItsRate) {
  FramedServerOptions o;
  o.frame_rate = qkdn::southbound::FrameRate{0.001, 2, 1};
  start(o);
  Client c(client_io, endpoint);
  c.send("REG km1");
  EXPECT_EQ(c.line(), "OK");
  c.send("1");
  EXPECT_EQ(c.line(), "ECHO 1");
  c.send("2");
  EXPECT_EQ(c.line(), "ECHO 2");
  c.send("3");
  EXPECT_EQ(c.line(), "SLOW");  // over the burst
  c.send("4");
  EXPECT_EQ(c.line(), "BYE");  // refused again within the second: disconnect
}

TEST_F(FramedServerTest, StopClosesEveryConnectionAndReportsDrained) {
  start({});
  Client idle(client_io, endpoint);
  Client reg(client_io, endpoint);
  reg.send("REG km1");
  EXPECT_EQ(reg.line(), "OK");
  ASSERT_TRUE(eventually([&] { return server->active() == 2; }));
  std::promise<void> drained;
  auto done = drained.get_future();
  server->stop([&drained] { drained.set_value(); });
  ASSERT_EQ(done.wait_for(5s), std::future_status::ready);
  EXPECT_EQ(server->active(), 0u);
  EXPECT_EQ(idle.line(), "<eof>");
  EXPECT_EQ(reg.line(), "<eof>");
  // No longer accepting.
  tcp::socket late(client_io);
  boost::system::error_code ec;
  late.connect(endpoint, ec);
  EXPECT_TRUE(ec) << "a connection was accepted after stop";
}

TEST_F(FramedServerTest, StopWithoutStartDrainsAtOnce) {
  FramedServer s(io.get_executor(), {}, {});
  bool drained = false;
  s.stop([&drained] { drained = true; });
  EXPECT_TRUE(drained);
}

}  // namespace
