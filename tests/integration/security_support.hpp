// Shared pieces of the security tests: a free port, the two-KM topology, and a real agent with
// TLS on Ck and KMA (certificates from security_pki.hpp) running on its own threads.
#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>

#include "qkdn/agent/agent.hpp"
#include "qkdn/controller/topology.hpp"
#include "security_pki.hpp"
#include "security_probe.hpp"

namespace qkdn::test {

/// A TCP port with nothing listening (bound, then closed).
inline std::uint16_t unused_port() {
  probe_asio::io_context io;
  probe_asio::ip::tcp::acceptor a(io, {probe_asio::ip::make_address("127.0.0.1"), 0});
  return a.local_endpoint().port();
}

/// KM1 - KM2 (L12) with SAE1 at KM1 and SAE2 at KM2.
inline controller::TopologyDoc matrix_topology() {
  controller::TopologyDoc doc;
  doc.name = "tls-matrix";
  doc.kms = {{"KM1", "a"}, {"KM2", "b"}};
  doc.links = {{"L12", "KM1", "KM2", 1000, 10, 0.02}};
  doc.applications = {{"SAE1", "KM1"}, {"SAE2", "KM2"}};
  return doc;
}

/// An agent hosting `km` with TLS on Ck and KMA (certificates in <pki>/km), run on 2 threads.
/// `topology` is the agent's own copy (a rogue agent may believe what it likes).
class RunningAgent {
 public:
  RunningAgent(const std::string& ca, const std::filesystem::path& pki_dir, std::string km,
               std::uint16_t ck_port, std::string controller_id = "ctl",
               const Issued* etsi = nullptr, controller::TopologyDoc topology = matrix_topology())
      : work_(io_.get_executor()) {
    agent::AgentConfig cfg;
    cfg.topology = std::move(topology);
    cfg.km_ids = {std::move(km)};
    cfg.controller_port = ck_port;
    cfg.controller_id = std::move(controller_id);
    cfg.tls_ca = ca;
    cfg.tls_cert_dir = (pki_dir / "km").string();
    cfg.reconnect_initial = std::chrono::milliseconds(100);
    cfg.reconnect_max = std::chrono::milliseconds(300);
    if (etsi != nullptr) {
      cfg.etsi_port = 0;
      cfg.etsi_cert = etsi->cert;
      cfg.etsi_key = etsi->key;
      cfg.etsi_ca = ca;
    }
    agent_ = std::make_unique<agent::Agent>(io_, std::move(cfg));
    agent_->start();
    for (int i = 0; i < 2; ++i) threads_.emplace_back([this] { io_.run(); });
  }
  ~RunningAgent() {
    agent_->stop();
    agent_->wait_stopped(std::chrono::seconds(10));
    work_.reset();
    io_.stop();
    for (auto& t : threads_) t.join();
  }
  agent::Agent& agent() { return *agent_; }

 private:
  probe_asio::io_context io_;
  probe_asio::executor_work_guard<probe_asio::io_context::executor_type> work_;
  std::unique_ptr<agent::Agent> agent_;
  std::vector<std::thread> threads_;
};

inline std::uint16_t port_of(const std::string& endpoint) {
  return static_cast<std::uint16_t>(std::stoi(endpoint.substr(endpoint.rfind(':') + 1)));
}

}  // namespace qkdn::test
