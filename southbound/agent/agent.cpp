#include "qkdn/agent/agent.hpp"

#include <future>
#include <set>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/use_future.hpp>

#include "admin_http.hpp"
#include "etsi_server.hpp"
#include "km_host.hpp"
#include "kxi.hpp"
#include "qkdn/controller/error.hpp"
#include "qkdn/net/listener.hpp"

namespace qkdn::agent {
namespace {

void validate(const AgentConfig& cfg) {
  if (cfg.km_ids.empty()) throw InvalidArgument("no KM to host");
  std::set<std::string> known;
  for (const auto& km : cfg.topology.kms) known.insert(km.km_id);
  std::set<std::string> seen;
  for (const auto& id : cfg.km_ids) {
    if (!known.contains(id)) throw InvalidArgument("--km " + id + ": not in the topology");
    if (!seen.insert(id).second) throw InvalidArgument("--km " + id + ": given twice");
  }
  if (cfg.controller_port == 0) throw InvalidArgument("controller port missing");
  if (cfg.admin_port && cfg.admin_token.empty()) {
    boost::system::error_code ec;
    const auto addr = boost::asio::ip::make_address(cfg.admin_host, ec);
    if (ec) throw InvalidArgument("--admin-listen: not an IP address: " + cfg.admin_host);
    if (!qkdn::net::is_loopback(addr)) {
      throw InvalidArgument("--admin-listen " + cfg.admin_host +
                            ": the admin listener binds a loopback address unless "
                            "--admin-token-file FILE is given");
    }
  }
  if (!cfg.insecure_ck && cfg.tls_cert_dir.empty()) {
    throw InvalidArgument("Ck needs TLS files or the insecure flag");
  }
  if (cfg.tls_cert_dir.empty() && !cfg.insecure_kma) {
    throw InvalidArgument(
        "KMA links carry key material: give --tls-ca and --tls-cert-dir, or --insecure-kma "
        "(plain TCP, labs only)");
  }
  if (!cfg.tls_cert_dir.empty() && cfg.insecure_kma) {
    throw InvalidArgument("--insecure-kma and --tls-cert-dir are mutually exclusive");
  }
  if (!cfg.insecure_ck && !is_valid_id(cfg.controller_id)) {
    throw InvalidArgument("--controller-id '" + cfg.controller_id +
                          "' must be 1..128 characters of [A-Za-z0-9._:-]");
  }
  if (cfg.etsi_port && !cfg.etsi_insecure &&
      (cfg.etsi_cert.empty() || cfg.etsi_key.empty() || cfg.etsi_ca.empty())) {
    throw InvalidArgument("the ETSI 014 listener needs a certificate, a key and a CA, or insecure");
  }
  if (cfg.etsi_max_connections < 1 || cfg.etsi_max_unauthenticated < 1 || cfg.kma_max_pending < 1) {
    throw InvalidArgument("connection limits must be at least 1");
  }
  if (cfg.sae_max_key_per_request < 1 || cfg.sae_max_key_size < 8 || cfg.sae_default_key_size < 8 ||
      cfg.sae_default_key_size % 8 != 0 || cfg.sae_default_key_size > cfg.sae_max_key_size) {
    throw InvalidArgument("SAE key limits out of range");
  }
  if (cfg.qber_threshold < 0 || cfg.qber_threshold > 1 || cfg.qber_hysteresis < 0) {
    throw InvalidArgument("qber threshold out of range");
  }
}

template <class T>
T run_blocking(net::io_context& io, net::awaitable<T> work) {
  return net::co_spawn(io, std::move(work), net::use_future).get();
}

}  // namespace

Agent::Agent(net::io_context& io, AgentConfig config) {
  validate(config);
  const auto admin_port = config.admin_port;
  const auto admin_host = config.admin_host;
  std::string admin_token = std::move(config.admin_token);
  config.admin_token.clear();
  core_ = std::make_unique<AgentCore>(io, std::move(config));
  if (admin_port) {
    admin_ = std::make_unique<AdminServer>(*core_, admin_host, *admin_port, std::move(admin_token));
  }
  const AgentConfig& cfg = core_->config();
  if (cfg.etsi_port) {
    EtsiServerOptions o;
    o.host = cfg.etsi_host;
    o.port = *cfg.etsi_port;
    o.insecure = cfg.etsi_insecure;
    o.cert_file = cfg.etsi_cert;
    o.key_file = cfg.etsi_key;
    o.ca_file = cfg.etsi_ca.empty() ? cfg.tls_ca : cfg.etsi_ca;
    o.max_connections = cfg.etsi_max_connections;
    o.max_unauthenticated = cfg.etsi_max_unauthenticated;
    for (const auto& [sae, cert] : cfg.outside_sae_certs) {
      if (!core_->serves(sae)) {
        throw InvalidArgument("--outside-sae " + sae +
                              ": no KM hosted here serves this SAE (topology applications)");
      }
    }
    o.outside_sae_certs = cfg.outside_sae_certs;
    o.outside_sae_ca = cfg.outside_sae_ca;
    AgentCore* core = core_.get();
    etsi_ = std::make_unique<EtsiServer>(
        io, *core_, std::move(o),
        [core](const net::any_io_executor& ex, net::awaitable<void> work, std::string what) {
          core->spawn(ex, std::move(work), std::move(what));
        });
  }
  for (const auto& pair : cfg.iwn_pairs) {  // Kxi' listeners of receiving IWN KMs (kxi.hpp)
    if (!pair.listen_port) continue;
    kxi::Limits limits;
    limits.max_key_bits = cfg.sae_max_key_size;
    AgentCore* core = core_.get();
    kxi_.push_back(std::make_unique<KxiServer>(
        io, *core_, pair, cfg.tls_cert_dir, limits,
        [core](const net::any_io_executor& ex, net::awaitable<void> work, std::string what) {
          core->spawn(ex, std::move(work), std::move(what));
        }));
  }
}

Agent::~Agent() = default;

void Agent::start() {
  core_->start();
  if (admin_) {
    admin_->bind();
    admin_->start();
  }
  if (etsi_) {
    etsi_->bind();
    etsi_->start();
  }
  for (auto& k : kxi_) {
    k->bind();
    k->start();
  }
}

void Agent::stop() {
  for (auto& k : kxi_) k->stop();
  if (etsi_) etsi_->stop();
  if (admin_) admin_->stop();
  core_->stop();
}

bool Agent::wait_stopped(std::chrono::milliseconds timeout) { return core_->wait_drained(timeout); }

std::uint16_t Agent::admin_port() const { return admin_ ? admin_->port() : 0; }

std::uint16_t Agent::etsi_port() const { return etsi_ ? etsi_->port() : 0; }

std::vector<std::pair<std::string, std::uint16_t>> Agent::kxi_ports() const {
  std::vector<std::pair<std::string, std::uint16_t>> out;
  for (const auto& k : kxi_) out.emplace_back(k->pair().km_id, k->port());
  return out;
}

std::string Agent::kma_endpoint(const std::string& km_id) const {
  return core_->local_endpoint(km_id).value_or("");
}

std::vector<KmSnapshot> Agent::snapshot() { return run_blocking(core_->io(), core_->snapshot()); }

std::optional<std::string> Agent::link_digest(const std::string& km_id,
                                              const std::string& link_id) {
  return run_blocking(core_->io(), core_->digest(km_id, link_id));
}

bool Agent::control_link(const std::string& link_id, const LinkControl& control) {
  return run_blocking(core_->io(), core_->control_link(link_id, control));
}

bool Agent::disconnect(const std::string& km_id) {
  return run_blocking(core_->io(), core_->disconnect(km_id));
}

}  // namespace qkdn::agent
