// The service with a real private PostgreSQL (db_test_support.cpp starts it once per run, or
// QKDN_TEST_PG_DSN names one): restart recovery of the real qkdn-controller binary after
// kill -9, and store outages under key-relay load.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <pqxx/pqxx>
#include <set>

#include "db_test_support.hpp"
#include "qkdn/controller/error.hpp"
#include "service_test_support.hpp"

namespace qkdn::test {
namespace {

using controller::LedgerState;
using controller::RelayState;
using db::test::PgServer;

/// A temporary folder removed at the end of the test.
struct TempDir {
  TempDir() {
    char tmpl[] = "/tmp/qkdn-service-XXXXXX";
    if (::mkdtemp(tmpl) == nullptr) throw std::runtime_error("mkdtemp failed");
    path = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  std::string path;
};

/// The real qkdn-controller as a child process (stderr to a file).
class ControllerProcess {
 public:
  ControllerProcess(std::vector<std::string> args, const std::string& log_file) {
    pid_ = ::fork();
    if (pid_ < 0) throw std::runtime_error("fork failed");
    if (pid_ == 0) {
      const int fd = ::open(log_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      if (fd >= 0) {
        ::dup2(fd, 2);
        ::dup2(fd, 1);
      }
      std::vector<char*> argv;
      std::string bin = QKDN_CONTROLLER_BIN;
      argv.push_back(bin.data());
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv(bin.c_str(), argv.data());
      std::_Exit(127);
    }
  }
  ~ControllerProcess() { kill9(); }
  /// As hard as it gets: no graceful stop, nothing flushed.
  void kill9() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
  }
  [[nodiscard]] bool running() const { return pid_ > 0 && ::waitpid(pid_, nullptr, WNOHANG) == 0; }

 private:
  pid_t pid_ = -1;
};

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

/// Waits (bounded) for a port file written by the controller.
std::uint16_t wait_port(const std::string& path, const std::string& log) {
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  while (std::chrono::steady_clock::now() < deadline) {
    const auto text = read_file(path);
    if (!text.empty() && text.back() == '\n') return static_cast<std::uint16_t>(std::stoi(text));
    std::this_thread::sleep_for(20ms);
  }
  throw std::runtime_error("controller did not write " + path + ":\n" + read_file(log));
}

std::string topology_json(const controller::TopologyDoc& doc) {
  std::string kms;
  for (const auto& k : doc.kms) {
    kms += (kms.empty() ? "" : ",") + std::string(R"({"km_id":")") + k.km_id + R"("})";
  }
  std::string links;
  for (const auto& l : doc.links) {
    links += (links.empty() ? "" : ",") + std::string(R"({"link_id":")") + l.link_id +
             R"(","a":")" + l.a + R"(","b":")" + l.b + R"(","key_rate_bps":1000})";
  }
  std::string apps;
  for (const auto& a : doc.applications) {
    apps += (apps.empty() ? "" : ",") + std::string(R"({"sae_id":")") + a.sae_id +
            R"(","km_id":")" + a.km_id + R"("})";
  }
  return R"({"name":")" + doc.name + R"(","kms":[)" + kms + R"(],"links":[)" + links +
         R"(],"applications":[)" + apps + "]}";
}

/// key_id -> state of every ledger row in the database.
std::map<std::string, std::string> ledger_rows(const std::string& dsn) {
  pqxx::connection c{dsn};
  pqxx::work tx{c};
  std::map<std::string, std::string> out;
  for (const auto& row : tx.exec("SELECT key_id::text, state::text FROM ledger")) {
    out[row[0].c_str()] = row[1].c_str();
  }
  return out;
}

/// Waits (bounded) until a 0x1401 from `km` to `dst` has a next hop (links up and reported).
bool wait_routable(FakeKm& km, const std::string& dst) {
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (std::chrono::steady_clock::now() < deadline) {
    const auto id = km.send(0x1401, R"({"destination_kma_id":")" + dst + R"("})");
    auto f = km.answer_to(id);
    if (f && f->command == 0x4102 &&
        !decode_as<ck::KeyRelayNextHopResponse>(*f).next_kma_ids.empty()) {
      return true;
    }
    std::this_thread::sleep_for(50ms);
  }
  return false;
}

/// Restarts PostgreSQL if a test ends while it is stopped.
struct ServerGuard {
  bool stopped = false;
  void stop() {
    PgServer::stop();
    stopped = true;
  }
  void start() {
    PgServer::start();
    stopped = false;
  }
  ~ServerGuard() {
    if (stopped) PgServer::start();
  }
};

// kill -9 of the real daemon with an active session and reservations in flight; a new controller
// on the same database gets the session back, releases the in-flight keys, and never lets a key
// ID be reserved again.
TEST(ServiceStore, RestartRecoveryAfterKill9) {
  const auto dsn = PgServer::fresh_database();
  TempDir dir;
  const auto topo = chain_topology(3);
  const auto topo_file = dir.path + "/net.json";
  std::ofstream(topo_file) << topology_json(topo);
  const auto log = dir.path + "/controller.log";

  std::string session_id;
  std::vector<std::string> held;  // keys reserved by the relay in flight at the kill
  {
    ControllerProcess ctl(
        {"--topology", topo_file, "--store-dsn", dsn, "--insecure-ck", "--ck-listen", "127.0.0.1:0",
         "--port-file", dir.path + "/ck.port", "--api-listen", "127.0.0.1:0",
         "--heartbeat-interval-ms", "10000", "--status-interval-ms", "100"},
        log);
    const auto port = wait_port(dir.path + "/ck.port", log);
    auto kms = connect_all(topo, port);
    ASSERT_TRUE(wait_routable(*kms["KM1"], "KM3")) << read_file(log);

    const auto id = kms["KM1"]->send(
        0x1406, R"({"application_source_id":"SAE1","application_destination_id":"SAE3"})");
    auto f = kms["KM1"]->answer_to(id);
    ASSERT_TRUE(f) << read_file(log);
    const auto resp = decode_as<ck::SessionCreationResponse>(*f);
    ASSERT_EQ(resp.response, "OK");
    session_id = resp.session_id;

    FakeKm::Behavior hold;
    hold.hold_allocation = true;
    kms["KM1"]->set_behavior(hold);
    kms["KM2"]->set_behavior(hold);
    kms["KM1"]->request_relay("KM3", 2);
    // The 0x410C goes out only once the reservations are in the store (write-ahead).
    ASSERT_TRUE(kms["KM1"]->wait_for(0x410C)) << read_file(log);
    ASSERT_TRUE(kms["KM2"]->wait_for(0x410C)) << read_file(log);
    for (const auto* km : {"KM1", "KM2"}) {
      for (const auto& k : kms[km]->reserved_keys()) held.push_back(k);
    }
    ASSERT_EQ(held.size(), 4u);
    ctl.kill9();
  }

  ServiceHarness h(controller::TopologyDoc{}, [&] {
    service::ServiceOptions o;
    o.store_dsn = dsn;
    return o;
  }());
  // The stored topology came back with everything else.
  EXPECT_EQ(h.core([](service::Core& c) { return c.network.kms().size(); }), 3u);
  h.core([&](service::Core& c) {
    const auto* s = c.sessions.find(session_id);
    EXPECT_NE(s, nullptr);
    if (s != nullptr) {
      EXPECT_EQ(s->state, controller::SessionState::kActive);
    }
    for (const auto& k : held) EXPECT_EQ(c.ledger.state_of(k), LedgerState::kReleased) << k;
    EXPECT_EQ(c.ledger.live_count(), 0u);
    for (const auto& r : c.relays.list()) EXPECT_TRUE(controller::is_final(r.state));
    return 0;
  });
  const auto rows = ledger_rows(dsn);
  for (const auto& k : held) {
    ASSERT_EQ(rows.count(k), 1u) << k;
    EXPECT_EQ(rows.at(k), "released") << k;
  }

  // A KM naming a key ID the ledger has seen: refused, the relay fails, the key stays released.
  auto kms = connect_all(topo, h.port());
  ASSERT_TRUE(h.wait_links_up());
  FakeKm::Behavior reuse;
  reuse.next_key_ids = {held[0]};
  kms["KM1"]->set_behavior(reuse);
  const auto id = kms["KM1"]->request_relay("KM3");
  auto f = kms["KM1"]->answer_to(id);
  ASSERT_TRUE(f) << h.log_text();
  ASSERT_EQ(f->command, 0x41EF) << f->payload;
  EXPECT_TRUE(kms["KM1"]->received(0x4104).empty());
  EXPECT_EQ(h.core([&](service::Core& c) { return c.ledger.state_of(held[0]); }),
            LedgerState::kReleased);

  // Fresh keys work, and the restored session is credited.
  kms["KM1"]->set_behavior({});
  kms["KM1"]->request_relay("KM3", 2);
  ASSERT_TRUE(kms["KM1"]->wait_for(0x4104)) << h.log_text();
  EXPECT_TRUE(h.wait_core([&](service::Core& c) {
    const auto* s = c.sessions.find(session_id);
    return s != nullptr && s->keys_delivered == 2;
  })) << h.log_text();
}

// PostgreSQL stops under key-relay load: store_up turns false, persist() throws Unavailable, new
// relays are refused with Error internal, the service keeps serving Ck; once PostgreSQL is back
// store_up is true within 5 s and every acknowledged ledger write is in the database.
TEST(ServiceStore, OutageUnderLoad) {
  if (!PgServer::private_server()) {
    GTEST_SKIP() << "needs the private server (QKDN_TEST_PG_DSN set)";
  }
  const auto dsn = PgServer::fresh_database();
  const auto topo = chain_topology(3);
  service::ServiceOptions o;
  o.store_dsn = dsn;
  ServiceHarness h(topo, o);
  ASSERT_TRUE(h.svc().store_up());
  auto kms = connect_all(topo, h.port());
  ASSERT_TRUE(h.wait_links_up());
  auto& km1 = *kms["KM1"];

  std::atomic<bool> loading{true};
  std::thread load([&] {
    while (loading) {
      km1.request_relay("KM3");
      std::this_thread::sleep_for(10ms);
    }
  });
  struct Join {
    std::atomic<bool>& flag;
    std::thread& t;
    ~Join() {
      flag = false;
      if (t.joinable()) t.join();
    }
  } join{loading, load};
  ASSERT_TRUE(h.wait_core([](service::Core& c) {
    std::size_t relayed = 0;
    for (const auto& r : c.relays.list()) relayed += r.state == RelayState::kRelayed;
    return relayed >= 5;
  })) << h.log_text();

  ServerGuard server;
  server.stop();
  const auto down_deadline = std::chrono::steady_clock::now() + 20s;
  while (h.svc().store_up() && std::chrono::steady_clock::now() < down_deadline) {
    std::this_thread::sleep_for(20ms);
  }
  ASSERT_FALSE(h.svc().store_up()) << h.log_text();
  {
    auto op = h.svc().persist(
        [](controller::Store& s) {
          s.save_policy({"", "", "manual", {}});
        },
        true);
    auto fut = net::co_spawn(h.svc().core_executor(), std::move(op), net::use_future);
    EXPECT_THROW(fut.get(), Unavailable);
  }
  // Alive: routing answers, and new relays are refused explicitly.
  const auto hop = km1.send(0x1401, R"({"destination_kma_id":"KM3"})");
  auto f = km1.answer_to(hop);
  ASSERT_TRUE(f);
  EXPECT_EQ(f->command, 0x4102);
  const auto refused = km1.request_relay("KM3");
  f = km1.answer_to(refused);
  ASSERT_TRUE(f);
  ASSERT_EQ(f->command, 0x41EF) << f->payload;
  EXPECT_EQ(decode_as<ck::ErrorMessage>(*f).error, "internal");
  EXPECT_NE(f->payload.find("store unavailable"), std::string::npos) << f->payload;

  loading = false;
  load.join();
  server.start();
  const auto t0 = std::chrono::steady_clock::now();
  while (!h.svc().store_up() && std::chrono::steady_clock::now() - t0 < 10s) {
    std::this_thread::sleep_for(20ms);
  }
  ASSERT_TRUE(h.svc().store_up());
  EXPECT_LE(std::chrono::steady_clock::now() - t0, 5s);

  // Every relay acknowledged as relayed: its hop keys are consumed in the database once the
  // queued writes drain; every key handed to a KM in a 0x4104 is in the database.
  std::set<std::string> relayed;
  h.core([&](service::Core& c) {
    for (const auto& r : c.relays.list()) {
      if (r.state == RelayState::kRelayed) relayed.insert(r.relay_id);
    }
    return 0;
  });
  ASSERT_FALSE(relayed.empty());
  std::map<std::string, std::string> handed;  // key -> relay
  for (const auto& frame : km1.received(0x4104)) {
    const auto req = decode_as<ck::KeyRelayRequest>(frame);
    for (const auto& hk : req.hop_keys) {
      for (const auto& k : hk.key_ids) handed[k] = *req.key_relay_request_id;
    }
  }
  std::map<std::string, std::string> rows;
  const auto drain_deadline = std::chrono::steady_clock::now() + 20s;
  bool complete = false;
  while (!complete && std::chrono::steady_clock::now() < drain_deadline) {
    rows = ledger_rows(dsn);
    complete = true;
    for (const auto& [k, relay] : handed) {
      const auto it = rows.find(k);
      if (it == rows.end() || (relayed.count(relay) != 0 && it->second != "consumed")) {
        complete = false;
        break;
      }
    }
    if (!complete) std::this_thread::sleep_for(50ms);
  }
  EXPECT_TRUE(complete) << h.log_text();
  // And the store takes writes again.
  auto op = h.svc().persist(
      [](controller::Store& s) {
        s.save_policy({"", "", "manual", {}});
      },
      true);
  EXPECT_NO_THROW(net::co_spawn(h.svc().core_executor(), std::move(op), net::use_future).get());
}

}  // namespace
}  // namespace qkdn::test
