// qkdn-agent: hosts lightweight KMs with emulated QKD links (see --help).
#include <sys/resource.h>

#include <csignal>
#include <cstdio>
#include <iostream>
#include <thread>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>

#include "qkdn/agent/agent.hpp"
#include "qkdn/agent/options.hpp"

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
  raise_fd_limit();
  boost::asio::io_context io(static_cast<int>(cl.threads));
  std::unique_ptr<Agent> agent;
  try {
    agent = std::make_unique<Agent>(io, cl.config);
    agent->start();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "qkdn-agent: %s\n", e.what());
    return 1;
  }
  for (const auto& id : cl.config.km_ids) {
    std::cout << "kma " << id << " listening on " << agent->kma_endpoint(id) << "\n";
  }
  if (agent->admin_port() != 0) {
    std::cout << "admin listening on " << cl.config.admin_host << ":" << agent->admin_port()
              << "\n";
  }
  std::cout << "agent ready: " << cl.config.km_ids.size() << " KMs" << std::endl;

  boost::asio::signal_set signals(io, SIGINT, SIGTERM);
  signals.async_wait([&](const boost::system::error_code& ec, int sig) {
    if (ec) return;
    std::fprintf(stderr, "qkdn-agent: signal %d, shutting down\n", sig);
    agent->stop();
  });

  std::vector<std::thread> threads;
  for (unsigned i = 1; i < cl.threads; ++i) threads.emplace_back([&io] { io.run(); });
  io.run();
  for (auto& t : threads) t.join();
  return 0;
}
