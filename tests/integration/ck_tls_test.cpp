// Ck over mutual TLS 1.3: certificates from scripts/dev-ca.sh in a temporary folder; the KM side
// is a CkChannel in the client role (so both roles of the channel are exercised).
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <future>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/use_future.hpp>

#include "ck_test_support.hpp"
#include "qkdn/controller/error.hpp"

namespace qkdn::test {
namespace {

namespace fs = std::filesystem;

class Pki {
 public:
  Pki() {
    std::string tmpl = (fs::temp_directory_path() / "qkdn-ck-tls-XXXXXX").string();
    dir_ = ::mkdtemp(tmpl.data());
    const std::string cmd = std::string(QKDN_SOURCE_DIR) + "/scripts/dev-ca.sh --km KM1 --km KM2 " +
                            dir_.string() + " >/dev/null";
    if (std::system(cmd.c_str()) != 0) throw std::runtime_error("dev-ca.sh failed: " + cmd);
  }
  ~Pki() {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  southbound::TlsFiles controller() const {
    return {(dir_ / "ca.pem").string(), (dir_ / "controller.pem").string(),
            (dir_ / "controller.key").string()};
  }
  southbound::TlsFiles km(const std::string& id) const {
    return {(dir_ / "ca.pem").string(), (dir_ / "km" / (id + ".pem")).string(),
            (dir_ / "km" / (id + ".key")).string()};
  }
  const fs::path& dir() const { return dir_; }

 private:
  fs::path dir_;
};

/// A KM in the TLS client role, driven from the test thread.
class TlsKm {
 public:
  TlsKm(std::uint16_t port, const southbound::TlsFiles& files)
      : ctx_(southbound::make_tls_context(files, false)), work_(ioc_.get_executor()) {
    net::ip::tcp::socket s(ioc_);
    s.connect({net::ip::make_address("127.0.0.1"), port});
    southbound::ChannelOptions o;
    o.request_timeout = 5s;
    channel_ = southbound::make_tls_channel(std::move(s), *ctx_, false, o);
    ended_ = net::co_spawn(ioc_,
                           channel_->run([](std::shared_ptr<southbound::CkChannel>,
                                            ck::Frame) -> net::awaitable<void> { co_return; }),
                           net::use_future);
    thread_ = std::thread([this] { ioc_.run(); });
  }
  ~TlsKm() {
    channel_->close();
    ended_.wait_for(5s);
    work_.reset();
    ioc_.stop();
    thread_.join();
  }
  ck::Frame request(ck::Message m) {
    return net::co_spawn(ioc_, channel_->request(std::move(m)), net::use_future).get();
  }
  bool wait_ended(std::chrono::milliseconds bound = 5s) {
    return ended_.wait_for(bound) == std::future_status::ready;
  }
  southbound::CkChannel& channel() { return *channel_; }

 private:
  net::io_context ioc_;
  std::unique_ptr<net::ssl::context> ctx_;
  net::executor_work_guard<net::io_context::executor_type> work_;
  std::shared_ptr<southbound::CkChannel> channel_;
  std::future<void> ended_;
  std::thread thread_;
};

ck::Register registration(const std::string& km) {
  ck::Register r;
  r.km_id = km;
  r.kma_endpoint = "127.0.0.1:7001";
  return r;
}

class CkTls : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { pki_ = new Pki(); }
  static void TearDownTestSuite() { delete pki_; }
  static Pki* pki_;
};
Pki* CkTls::pki_ = nullptr;

// TLS happy path: KM1's certificate registers KM1, heartbeats flow; the peer identity is KM1.
TEST_F(CkTls, RegisterAndHeartbeat) {
  service::ServiceOptions o;
  o.tls = pki_->controller();
  Harness h(std::move(o));
  TlsKm km(h.port(), pki_->km("KM1"));
  const auto f = km.request(registration("KM1"));
  ASSERT_EQ(f.command, 0x41E2);
  EXPECT_EQ(decode_as<ck::RegisterResponse>(f).response, "OK");
  for (int i = 0; i < 10; ++i) {
    EXPECT_EQ(km.request(ck::Heartbeat{"KM1"}).command, 0x41E9);
  }
  EXPECT_EQ(km.channel().peer_identity(), "qkdn-controller");
  EXPECT_TRUE(h.find_km(h.svc().snapshot_state(), "KM1")->connected);
}

// A certificate naming KM2 cannot register KM1: NG, then the connection is closed.
TEST_F(CkTls, CertificateForAnotherKmIsRefused) {
  service::ServiceOptions o;
  o.tls = pki_->controller();
  Harness h(std::move(o));
  TlsKm km(h.port(), pki_->km("KM2"));
  const auto f = km.request(registration("KM1"));
  ASSERT_EQ(f.command, 0x41E2);
  EXPECT_TRUE(decode_as<ck::RegisterResponse>(f).response.starts_with("NG:"));
  EXPECT_TRUE(km.wait_ended());
  EXPECT_FALSE(h.find_km(h.svc().snapshot_state(), "KM1")->connected);
  EXPECT_EQ(h.svc().counters().protocol_errors.at("identity_mismatch"), 1u);
}

// A plain-TCP client on the TLS listener fails the handshake and is closed.
TEST_F(CkTls, PlainClientOnTlsListenerIsClosed) {
  service::ServiceOptions o;
  o.tls = pki_->controller();
  Harness h(std::move(o));
  RawClient c(h.port());
  c.send(0x14E1, 1, R"({"km_id":"KM1","kma_endpoint":"127.0.0.1:7001","links":[]})");
  EXPECT_TRUE(c.wait_closed());
}

// Missing or unreadable TLS files fail start-up with a clear message naming the file.
TEST_F(CkTls, BadTlsFilesFailClearly) {
  service::ServiceOptions o;
  o.tls = pki_->controller();
  o.tls.key_file = (pki_->dir() / "missing.key").string();
  try {
    service::ControllerService s(o);
    FAIL() << "expected InvalidArgument";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("missing.key"), std::string::npos) << e.what();
  }
  o.tls = pki_->controller();
  o.tls.key_file = pki_->km("KM1").key_file;  // does not match controller.pem
  EXPECT_THROW(service::ControllerService{o}, InvalidArgument);
}

}  // namespace
}  // namespace qkdn::test
