// qkdn-agent: hosts lightweight KMs with emulated QKD links (see --help).
#include <algorithm>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>

#include "qkdn/agent/agent.hpp"
#include "qkdn/agent/options.hpp"
#include "qkdn/agent/secure_memory.hpp"
#include "qkdn/base/log.hpp"
#include "qkdn/controller/build_info.hpp"
#include "qkdn/net/listener.hpp"

namespace {

// Each hosted KM holds a Ck socket, a KMA listener and a socket per link end; the ETSI and KMA
// listeners' caps must fit in what is left, so that accept never runs out of descriptors.
void fit_to_fd_limit(qkdn::agent::AgentConfig& cfg, std::size_t limit) {
  std::size_t link_ends = 0;
  for (const auto& l : cfg.topology.links) {
    for (const auto& km : cfg.km_ids) link_ends += (l.a == km) + (l.b == km);
  }
  const std::size_t reserved = 64 + 2 * cfg.km_ids.size() + link_ends + (cfg.admin_port ? 64 : 0);
  const std::size_t room = limit > reserved ? limit - reserved : 0;
  const std::size_t etsi = cfg.etsi_port ? cfg.etsi_max_connections : 0;
  if (etsi + cfg.kma_max_pending <= room) return;
  cfg.kma_max_pending = std::max<std::size_t>(8, std::min(cfg.kma_max_pending, room / 4));
  if (cfg.etsi_port) {
    cfg.etsi_max_connections =
        std::max<std::size_t>(16, room > cfg.kma_max_pending ? room - cfg.kma_max_pending : 0);
    cfg.etsi_max_unauthenticated = std::min(cfg.etsi_max_unauthenticated, cfg.etsi_max_connections);
  }
  qkdn::base::log(qkdn::base::LogLevel::kWarn, "main",
                  "open-file limit " + std::to_string(limit) + ": ETSI connections capped at " +
                      std::to_string(cfg.etsi_max_connections) + ", pending KMA sessions at " +
                      std::to_string(cfg.kma_max_pending));
}

// Written whole and renamed, so that a script polling for the file never reads half of it.
void write_port_file(const std::string& path, std::uint16_t port, const std::string& flag) {
  if (path.empty()) return;
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << port << "\n";
    if (!out) throw std::runtime_error(flag + ": cannot write '" + tmp + "'");
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    throw std::runtime_error(flag + ": cannot rename '" + tmp + "' to '" + path + "'");
  }
}

}  // namespace

int main(int argc, char** argv) {
  using qkdn::agent::Agent;
  qkdn::agent::CommandLine cl;
  try {
    cl = qkdn::agent::parse_command_line(std::vector<std::string>(argv + 1, argv + argc));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "qkdn-agent: %s\n", e.what());
    return 2;
  }
  if (cl.help) {
    std::cout << qkdn::agent::usage();
    return 0;
  }
  if (cl.version) {
    std::cout << "qkdn-agent " << qkdn::build_version() << " (revision " << qkdn::build_revision()
              << ")\n"
              << qkdn::agent::hybrid::capabilities() << "\n";
    return 0;
  }
  qkdn::base::configure_logging({cl.log_level, cl.log_format, "qkdn-agent"});
  // This process holds key material: it never writes a core file and is not dumpable.
  if (const auto problem = qkdn::agent::secure::disable_core_dumps(); !problem.empty()) {
    qkdn::base::log(
        qkdn::base::LogLevel::kWarn, "main",
        "cannot turn core dumps off (" + problem + "); key material may reach a core file");
  }
  // Each hosted KM needs a Ck socket, a listener and one socket per link end, and the ETSI and
  // KMA listeners cap their connections below the limit: raise the soft descriptor limit to the
  // hard one so that a 1,000-KM agent fits.
  fit_to_fd_limit(cl.config, qkdn::net::raise_fd_limit());
  const auto& cfg = cl.config;
  using qkdn::base::LogLevel;
  if (cfg.insecure_ck) {
    qkdn::base::log(LogLevel::kWarn, "main",
                    "WARNING: --insecure-ck: Ck is plain TCP; the controller is not "
                    "authenticated (labs and tests only)");
  }
  if (cfg.insecure_kma) {
    qkdn::base::log(LogLevel::kWarn, "main",
                    "WARNING: --insecure-kma: KMA links are plain TCP; key material travels in "
                    "clear and peers are not authenticated (labs and tests only)");
  }
  if (cfg.etsi_port && cfg.etsi_insecure) {
    qkdn::base::log(LogLevel::kWarn, "main",
                    "WARNING: --etsi-insecure: ETSI 014 is plain HTTP and SAEs name themselves "
                    "(X-SAE-ID); anyone reaching " +
                        cfg.etsi_host + " can fetch any SAE's keys (labs only)");
  }
  boost::asio::io_context io(static_cast<int>(cl.threads));
  std::unique_ptr<Agent> agent;
  try {
    agent = std::make_unique<Agent>(io, cl.config);
    agent->start();
    write_port_file(cl.admin_port_file, agent->admin_port(), "--admin-port-file");
    write_port_file(cl.etsi_port_file, agent->etsi_port(), "--etsi-port-file");
    for (const auto& [km, port] : agent->kxi_ports()) {
      write_port_file(cl.kxi_port_file, port, "--kxi-port-file");
      std::cout << "kxi " << km << " listening on port " << port << "\n";
    }
  } catch (const std::exception& e) {
    qkdn::base::log(qkdn::base::LogLevel::kError, "main", e.what());
    return 1;
  }
  for (const auto& id : cl.config.km_ids) {
    std::cout << "kma " << id << " listening on " << agent->kma_endpoint(id) << "\n";
  }
  if (agent->admin_port() != 0) {
    std::cout << "admin listening on " << cl.config.admin_host << ":" << agent->admin_port()
              << "\n";
  }
  if (agent->etsi_port() != 0) {
    const std::string endpoint = cl.config.etsi_host + ":" + std::to_string(agent->etsi_port());
    for (const auto& id : cl.config.km_ids) {
      std::cout << "etsi " << id << " listening on " << endpoint << "\n";
    }
    std::cout << "etsi listening on " << endpoint
              << (cl.config.etsi_insecure ? " (insecure: plain HTTP, X-SAE-ID)" : " (mutual TLS)")
              << "\n";
  }
  std::cout << "agent ready: " << cl.config.km_ids.size() << " KMs" << std::endl;

  boost::asio::signal_set signals(io, SIGINT, SIGTERM);
  signals.async_wait([&](const boost::system::error_code& ec, int sig) {
    if (ec) return;
    qkdn::base::log(qkdn::base::LogLevel::kInfo, "main",
                    std::string(sig == SIGINT ? "SIGINT" : "SIGTERM") + ", shutting down");
    agent->stop();
  });

  std::vector<std::thread> threads;
  for (unsigned i = 1; i < cl.threads; ++i) threads.emplace_back([&io] { io.run(); });
  io.run();
  for (auto& t : threads) t.join();
  return 0;
}
