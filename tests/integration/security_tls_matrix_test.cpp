// TLS matrix (issue 13): on Ck (both ends), KMA links and ETSI GS QKD 014, each of these is
// refused: no client certificate, a certificate of another CA, an expired one, one not yet
// valid, a certificate of the wrong role (a KM's as controller or SAE, an SAE's as KM, a
// controller's as KM), and TLS 1.2 where 1.3 is required. Every matrix also runs the right
// certificate as a positive control, so that a refusal for an unrelated reason cannot pass.
// Certificates come from security_pki.hpp (OpenSSL, in a temporary folder); the controller and
// the agents are the real ones, in-process, on real sockets.
#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <future>
#include <thread>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/json.hpp>

#include "ck_test_support.hpp"
#include "kma_wire.hpp"
#include "qkdn/agent/agent.hpp"
#include "security_support.hpp"

namespace qkdn::test {
namespace {

namespace fs = std::filesystem;
using std::chrono::seconds;

/// Every certificate of the matrix, issued once per test binary.
struct Certs {
  std::string ca, other_ca;
  Issued controller, controller_rogue_id, controller_other_ca, controller_expired,
      controller_future, km_as_controller;
  Issued km1, km2, km1_other_ca, km1_expired, km1_future, sae_as_km1, controller_as_km1,
      km1_cn_only;
  Issued sae1, sae1_other_ca, sae1_expired, sae1_future, km_as_sae1, etsi;
};

LeafSpec leaf(std::string cn, std::string uri, bool server, bool client,
              std::chrono::seconds from = seconds(-3600),
              std::chrono::seconds to = seconds(86400)) {
  LeafSpec s;
  s.cn = std::move(cn);
  s.san_uris = {std::move(uri)};
  s.server_auth = server;
  s.client_auth = client;
  s.not_before = from;
  s.not_after = to;
  return s;
}

constexpr seconds kDay{86400};

class TlsMatrix : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    pki_ = new TestPki();
    auto& p = *pki_;
    fs::create_directories(p.dir() / "km");
    auto& c = certs_;
    c.ca = p.make_ca("good");
    c.other_ca = p.make_ca("other");
    const std::string ctl = "urn:qkdn:controller:ctl";
    c.controller = p.issue(c.ca, "controller", leaf("ctl", ctl, true, false));
    c.controller_rogue_id =
        p.issue(c.ca, "controller-rogue", leaf("ctl", "urn:qkdn:controller:rogue", true, false));
    c.controller_other_ca = p.issue(c.other_ca, "controller-other", leaf("ctl", ctl, true, false));
    c.controller_expired =
        p.issue(c.ca, "controller-expired", leaf("ctl", ctl, true, false, -2 * kDay, -kDay));
    c.controller_future =
        p.issue(c.ca, "controller-future", leaf("ctl", ctl, true, false, kDay, 2 * kDay));
    c.km_as_controller =
        p.issue(c.ca, "km-as-controller", leaf("ctl", "urn:qkdn:km:ctl", true, true));
    const std::string km1 = "urn:qkdn:km:KM1";
    c.km1 = p.issue(c.ca, "km/KM1", leaf("KM1", km1, true, true));
    c.km2 = p.issue(c.ca, "km/KM2", leaf("KM2", "urn:qkdn:km:KM2", true, true));
    c.km1_other_ca = p.issue(c.other_ca, "km1-other", leaf("KM1", km1, true, true));
    c.km1_expired = p.issue(c.ca, "km1-expired", leaf("KM1", km1, true, true, -2 * kDay, -kDay));
    c.km1_future = p.issue(c.ca, "km1-future", leaf("KM1", km1, true, true, kDay, 2 * kDay));
    // Both key usages and CN KM1: only the SAN URI's role can refuse these.
    c.sae_as_km1 = p.issue(c.ca, "sae-as-km1", leaf("KM1", "urn:qkdn:sae:KM1", true, true));
    LeafSpec cn_only = leaf("KM1", "", true, true);
    cn_only.san_uris.clear();
    c.km1_cn_only = p.issue(c.ca, "km1-cn-only", cn_only);
    c.controller_as_km1 =
        p.issue(c.ca, "controller-as-km1", leaf("KM1", "urn:qkdn:controller:KM1", true, true));
    const std::string sae1 = "urn:qkdn:sae:SAE1";
    c.sae1 = p.issue(c.ca, "sae1", leaf("SAE1", sae1, false, true));
    c.sae1_other_ca = p.issue(c.other_ca, "sae1-other", leaf("SAE1", sae1, false, true));
    c.sae1_expired =
        p.issue(c.ca, "sae1-expired", leaf("SAE1", sae1, false, true, -2 * kDay, -kDay));
    c.sae1_future = p.issue(c.ca, "sae1-future", leaf("SAE1", sae1, false, true, kDay, 2 * kDay));
    c.km_as_sae1 = p.issue(c.ca, "km-as-sae1", leaf("SAE1", "urn:qkdn:km:SAE1", true, true));
    c.etsi = p.issue(c.ca, "etsi", leaf("etsi", "urn:qkdn:etsi:agent", true, false));
  }
  static void TearDownTestSuite() { delete pki_; }

  static TestPki* pki_;
  static Certs certs_;
};
TestPki* TlsMatrix::pki_ = nullptr;
Certs TlsMatrix::certs_;

/// One row of a matrix: a name and the client's TLS settings.
struct Row {
  std::string name;
  ClientTls tls;
};

// ---- Ck, controller side ------------------------------------------------------------------

/// True when the probe got a 0x41E2 answer whose response is "OK".
bool registered_ok(const ProbeResult& r) {
  if (r.received.size() < 10) return false;
  const auto code =
      (static_cast<std::uint8_t>(r.received[6]) << 8) | static_cast<std::uint8_t>(r.received[7]);
  return code == 0x41E2 &&
         boost::json::parse(r.received.substr(10)).as_object().at("response").as_string() == "OK";
}

// The controller's Ck listener registers KM1 only with KM1's own, valid KM certificate over TLS
// 1.3: no certificate, another CA, expired, not yet valid, an SAE certificate (whose CN says
// KM1), a controller certificate naming KM1, and TLS 1.2 are all refused.
TEST_F(TlsMatrix, CkListener) {
  const auto& c = certs_;
  service::ServiceOptions o;
  o.tls = c.controller.files();
  o.controller_id = "ctl";
  Harness h(std::move(o));
  const std::string reg =
      RawClient::frame(0x14E1, 1, R"({"km_id":"KM1","kma_endpoint":"127.0.0.1:7001","links":[]})");
  const std::vector<Row> refused = {
      {"no client certificate", {std::nullopt, c.ca, false}},
      {"another CA", {c.km1_other_ca, c.ca, false}},
      {"expired", {c.km1_expired, c.ca, false}},
      {"not yet valid", {c.km1_future, c.ca, false}},
      {"SAE certificate as KM", {c.sae_as_km1, c.ca, false}},
      {"controller certificate as KM", {c.controller_as_km1, c.ca, false}},
      {"TLS 1.2", {c.km1, c.ca, true}},
  };
  for (const auto& row : refused) {
    auto ctx = client_context(row.tls);
    const auto r = probe(h.port(), ctx.get(), reg, to_eof);
    EXPECT_TRUE(r.connected) << row.name;
    EXPECT_FALSE(registered_ok(r)) << row.name << ": registered";
    EXPECT_TRUE(r.closed) << row.name << ": connection left open";
  }
  auto snap = h.svc().snapshot_state();
  EXPECT_FALSE(h.find_km(snap, "KM1")->connected);
  // Positive controls: KM1's certificate registers KM1, and so does a third-party certificate
  // that names KM1 by its CN only (no role URI: ck-protocol.md clause 1).
  auto ctx = client_context({c.km1, c.ca, false});
  const auto ok = probe(h.port(), ctx.get(), reg, ck_frame_need);
  EXPECT_TRUE(registered_ok(ok)) << ok.received.size();
  auto cn_ctx = client_context({c.km1_cn_only, c.ca, false});
  const auto cn_ok = probe(h.port(), cn_ctx.get(), reg, ck_frame_need);
  EXPECT_TRUE(registered_ok(cn_ok)) << cn_ok.received.size();
}

// ---- Ck, KM side: the agent pins its controller -------------------------------------------

/// A TLS server posing as the controller: accepts, handshakes with its certificate, and records
/// whether a Ck frame header arrives. Runs on its own thread until destroyed.
class FakeTlsController {
 public:
  FakeTlsController(const Issued& server, bool tls12_only)
      : ctx_(probe_asio::ssl::context::tls_server),
        acceptor_(io_, {probe_asio::ip::make_address("127.0.0.1"), 0}) {
    SSL_CTX_set_min_proto_version(ctx_.native_handle(), TLS1_2_VERSION);
    if (tls12_only) SSL_CTX_set_max_proto_version(ctx_.native_handle(), TLS1_2_VERSION);
    ctx_.use_certificate_chain_file(server.cert);
    ctx_.use_private_key_file(server.key, probe_asio::ssl::context::pem);
    // The server accepts any client: a refusal can only come from the agent's own checks.
    ctx_.set_verify_mode(probe_asio::ssl::verify_none);
    port_ = acceptor_.local_endpoint().port();
    thread_ = std::thread([this] { run(); });
  }
  ~FakeTlsController() {
    stop_ = true;
    // A connection being served blocks in a read: end it (Asio ignores SO_RCVTIMEO).
    if (const int fd = serving_.load(); fd >= 0) ::shutdown(fd, SHUT_RDWR);
    // Wake the blocking accept with a connection of our own.
    boost::system::error_code ec;
    probe_asio::ip::tcp::socket s(io_);
    s.connect({probe_asio::ip::make_address("127.0.0.1"), port_}, ec);
    thread_.join();
  }
  [[nodiscard]] std::uint16_t port() const { return port_; }
  [[nodiscard]] int connections() const { return connections_.load(); }
  [[nodiscard]] int frames() const { return frames_.load(); }

 private:
  void run() {
    while (!stop_) {
      probe_asio::ip::tcp::socket sock(io_);
      boost::system::error_code ec;
      acceptor_.accept(sock, ec);
      if (ec || stop_) continue;
      ++connections_;
      serving_ = sock.native_handle();
      probe_asio::ssl::stream<probe_asio::ip::tcp::socket&> tls(sock, ctx_);
      tls.handshake(probe_asio::ssl::stream_base::server, ec);
      if (!ec) {
        // The agent either sends its Register frame or closes the connection.
        std::array<char, 10> head{};
        probe_asio::read(tls, probe_asio::buffer(head), ec);
        if (!ec) ++frames_;
      }
      serving_ = -1;
    }
  }

  probe_asio::io_context io_;
  probe_asio::ssl::context ctx_;
  probe_asio::ip::tcp::acceptor acceptor_;
  std::uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<int> connections_{0};
  std::atomic<int> frames_{0};
  std::atomic<int> serving_{-1};
  std::thread thread_;
};

// An agent sends nothing to a "controller" whose certificate is not the pinned controller's: a
// KM's certificate, a controller certificate with another ID, another CA's, an expired one, one
// not yet valid, and a TLS 1.2-only server; the right certificate gets the Register frame.
TEST_F(TlsMatrix, AgentPinsController) {
  const auto& c = certs_;
  struct ServerRow {
    std::string name;
    Issued cert;
    bool tls12_only;
  };
  const std::vector<ServerRow> refused = {
      {"KM certificate as controller", c.km_as_controller, false},
      {"controller with another ID", c.controller_rogue_id, false},
      {"another CA", c.controller_other_ca, false},
      {"expired", c.controller_expired, false},
      {"not yet valid", c.controller_future, false},
      {"TLS 1.2", c.controller, true},
  };
  for (const auto& row : refused) {
    FakeTlsController server(row.cert, row.tls12_only);
    RunningAgent agent(c.ca, pki_->dir(), "KM1", server.port());
    // At least three attempts (the agent retries every 100..300 ms): none sent a frame.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (server.connections() < 3 && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    EXPECT_GE(server.connections(), 3) << row.name;
    EXPECT_EQ(server.frames(), 0) << row.name << ": the agent sent a frame";
  }
  FakeTlsController server(c.controller, false);
  RunningAgent agent(c.ca, pki_->dir(), "KM1", server.port());
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (server.frames() < 1 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_GE(server.frames(), 1) << "positive control: the pinned controller got no frame";
}

// ---- KMA links --------------------------------------------------------------------------------

// KM2's KMA listener answers a Hello from KM1 only when it comes with KM1's own, valid KM
// certificate over TLS 1.3: no certificate, another CA, expired, not yet valid, an SAE or a
// controller certificate naming KM1, KM2's own certificate (not the expected peer) and TLS 1.2
// are refused.
TEST_F(TlsMatrix, KmaListener) {
  const auto& c = certs_;
  RunningAgent agent(c.ca, pki_->dir(), "KM2", unused_port());
  const auto port = port_of(agent.agent().kma_endpoint("KM2"));
  const std::string hello = agent::kma::encode_frame(
      agent::kma::Type::kHello, R"({"from_km":"KM1","to_km":"KM2","link_id":"L12"})");
  auto hello_ok = [](const ProbeResult& r) {
    return r.received.size() >= 6 && r.received[0] == 0 &&
           r.received[1] == static_cast<char>(agent::kma::Type::kHelloOk);
  };
  const std::vector<Row> refused = {
      {"no client certificate", {std::nullopt, c.ca, false}},
      {"another CA", {c.km1_other_ca, c.ca, false}},
      {"expired", {c.km1_expired, c.ca, false}},
      {"not yet valid", {c.km1_future, c.ca, false}},
      {"SAE certificate as KM", {c.sae_as_km1, c.ca, false}},
      {"controller certificate as KM", {c.controller_as_km1, c.ca, false}},
      {"another KM's certificate", {c.km2, c.ca, false}},
      {"TLS 1.2", {c.km1, c.ca, true}},
  };
  for (const auto& row : refused) {
    auto ctx = client_context(row.tls);
    const auto r = probe(port, ctx.get(), hello, kma_frame_need);
    EXPECT_TRUE(r.connected) << row.name;
    EXPECT_FALSE(hello_ok(r)) << row.name << ": HelloOk";
  }
  auto ctx = client_context({c.km1, c.ca, false});
  EXPECT_TRUE(hello_ok(probe(port, ctx.get(), hello, kma_frame_need))) << "positive control";
}

// ---- ETSI GS QKD 014 ----------------------------------------------------------------------

// The ETSI 014 listener serves SAE1 only with SAE1's own, valid SAE certificate over TLS 1.3: no
// certificate, another CA, expired, not yet valid, a KM certificate naming SAE1, TLS 1.2 and a
// client offering only key-exchange groups weaker than the strongest OpenSSL has (X25519, P-256:
// Ak protection, TR.QKDN-nq 8.1.1) are refused (handshake failure, or 401 for the wrong role).
TEST_F(TlsMatrix, EtsiListener) {
  const auto& c = certs_;
  RunningAgent agent(c.ca, pki_->dir(), "KM1", unused_port(), "ctl", &c.etsi);
  const auto port = agent.agent().etsi_port();
  ASSERT_NE(port, 0);
  const std::string get =
      "GET /api/v1/keys/SAE2/status HTTP/1.1\r\nHost: kme\r\nConnection: close\r\n\r\n";
  auto served = [](const ProbeResult& r) { return r.received.starts_with("HTTP/1.1 200"); };
  const std::vector<Row> refused = {
      {"no client certificate", {std::nullopt, c.ca, false}},
      {"another CA", {c.sae1_other_ca, c.ca, false}},
      {"expired", {c.sae1_expired, c.ca, false}},
      {"not yet valid", {c.sae1_future, c.ca, false}},
      {"KM certificate as SAE", {c.km_as_sae1, c.ca, false}},
      {"TLS 1.2", {c.sae1, c.ca, true}},
  };
  for (const auto& row : refused) {
    auto ctx = client_context(row.tls);
    const auto r = probe(port, ctx.get(), get, to_eof);
    EXPECT_TRUE(r.connected) << row.name;
    EXPECT_FALSE(served(r)) << row.name << ": " << r.received.substr(0, 40);
    if (r.handshake_ok && !r.received.empty()) {
      EXPECT_TRUE(r.received.starts_with("HTTP/1.1 401")) << row.name << ": " << r.received;
    }
  }
  auto weak = client_context({c.sae1, c.ca, false}, "X25519:P-256");
  const auto w = probe(port, weak.get(), get, to_eof);
  EXPECT_FALSE(w.handshake_ok) << "weak groups only";
  EXPECT_FALSE(served(w)) << "weak groups only";
  auto ctx = client_context({c.sae1, c.ca, false});
  const auto ok = probe(port, ctx.get(), get, to_eof);
  EXPECT_TRUE(served(ok)) << "positive control: " << ok.received.substr(0, 80);
}

}  // namespace
}  // namespace qkdn::test
