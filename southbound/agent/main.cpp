// qkdn-agent: hosts lightweight KMs with emulated QKD links (see --help).
#include <sys/resource.h>

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
#include "qkdn/base/log.hpp"
#include "qkdn/controller/build_info.hpp"

namespace {

// Each hosted KM needs a Ck socket, a listener and one socket per link end: raise the soft
// descriptor limit to the hard one so that a 1,000-KM agent fits.
void raise_fd_limit() {
  rlimit lim{};
  if (getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < lim.rlim_max) {
    lim.rlim_cur = lim.rlim_max;
    setrlimit(RLIMIT_NOFILE, &lim);
  }
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
              << ")\n";
    return 0;
  }
  qkdn::base::configure_logging({cl.log_level, cl.log_format, "qkdn-agent"});
  raise_fd_limit();
  boost::asio::io_context io(static_cast<int>(cl.threads));
  std::unique_ptr<Agent> agent;
  try {
    agent = std::make_unique<Agent>(io, cl.config);
    agent->start();
    write_port_file(cl.admin_port_file, agent->admin_port(), "--admin-port-file");
    write_port_file(cl.etsi_port_file, agent->etsi_port(), "--etsi-port-file");
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
