// qkdn-controller: the controller daemon (Ck server over the core; northbound comes later).
#include <pthread.h>
#include <signal.h>

#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <string>
#include <string_view>
#include <vector>

#include "qkdn/controller/error.hpp"
#include "qkdn/service/controller_service.hpp"
#include "qkdn/southbound/topology_json.hpp"

namespace {

constexpr std::string_view kUsage = R"(Usage: qkdn-controller --topology FILE [options]

The QKDN controller: accepts key managers (KMs) over Ck (ITU-T Q.4164, TLS 1.3 with mutual
authentication by default) and keeps the live network state.

Options:
  --topology FILE              topology document (JSON, DESIGN.md section 5); required
  --ck-listen HOST:PORT        Ck listen address (default 0.0.0.0:4164; port 0 = any free port)
  --tls-ca FILE                CA bundle (PEM) that KM certificates must chain to
  --tls-cert FILE              controller certificate chain (PEM)
  --tls-key FILE               controller private key (PEM)
  --insecure-ck                plain TCP on Ck, no authentication (labs and tests only)
  --controller-id ID           controller ID sent to KMs (default qkdn-controller)
  --heartbeat-interval-ms N    KM heartbeat interval (default 1000); 3 missed = disconnected
  --status-interval-ms N       KM status report interval (default 1000)
  --request-timeout-ms N       controller -> KM command timeout (default 5000)
  --read-timeout-ms N          a started frame must complete within N ms (default 10000)
  --threads N                  I/O threads (default 2)
  --port-file PATH             write the bound Ck port to PATH (for scripts and tests)
  --help                       this text

Examples:
  scripts/dev-ca.sh --topology net.json pki/
  qkdn-controller --topology net.json --ck-listen 0.0.0.0:4164 \
      --tls-ca pki/ca.pem --tls-cert pki/controller.pem --tls-key pki/controller.key
  qkdn-controller --topology net.json --ck-listen 127.0.0.1:0 --insecure-ck --port-file ck.port

Once bound it prints "ck listening on HOST:PORT" on stderr. SIGINT/SIGTERM stop it gracefully.
)";

struct Args {
  qkdn::service::ServiceOptions options;
  std::string topology_file;
  std::string port_file;
};

std::chrono::milliseconds parse_ms(std::string_view flag, std::string_view v) {
  std::int64_t n = 0;
  auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
  if (ec != std::errc() || p != v.data() + v.size() || n < 1) {
    throw qkdn::InvalidArgument(std::string(flag) + ": expected a positive integer, got '" +
                                std::string(v) + "'");
  }
  return std::chrono::milliseconds(n);
}

void parse_listen(std::string_view v, qkdn::service::ServiceOptions& o) {
  const auto colon = v.rfind(':');
  if (colon == std::string_view::npos || colon == 0) {
    throw qkdn::InvalidArgument("--ck-listen: expected HOST:PORT, got '" + std::string(v) + "'");
  }
  std::string host(v.substr(0, colon));
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  const auto port_text = v.substr(colon + 1);
  unsigned port = 0;
  auto [p, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (ec != std::errc() || p != port_text.data() + port_text.size() || port > 65535) {
    throw qkdn::InvalidArgument("--ck-listen: bad port '" + std::string(port_text) + "'");
  }
  o.listen_host = host;
  o.listen_port = static_cast<std::uint16_t>(port);
}

// Returns false when --help was asked for.
bool parse_args(int argc, char** argv, Args& a) {
  std::vector<std::string_view> args(argv + 1, argv + argc);
  auto& o = a.options;
  for (std::size_t i = 0; i < args.size(); ++i) {
    const auto flag = args[i];
    auto value = [&]() -> std::string_view {
      if (i + 1 >= args.size()) {
        throw qkdn::InvalidArgument(std::string(flag) + ": missing value");
      }
      return args[++i];
    };
    if (flag == "--help" || flag == "-h") return false;
    if (flag == "--topology")
      a.topology_file = value();
    else if (flag == "--ck-listen")
      parse_listen(value(), o);
    else if (flag == "--tls-ca")
      o.tls.ca_file = value();
    else if (flag == "--tls-cert")
      o.tls.cert_file = value();
    else if (flag == "--tls-key")
      o.tls.key_file = value();
    else if (flag == "--insecure-ck")
      o.insecure_ck = true;
    else if (flag == "--controller-id")
      o.controller_id = value();
    else if (flag == "--heartbeat-interval-ms")
      o.heartbeat_interval = parse_ms(flag, value());
    else if (flag == "--status-interval-ms")
      o.status_interval = parse_ms(flag, value());
    else if (flag == "--request-timeout-ms")
      o.request_timeout = parse_ms(flag, value());
    else if (flag == "--read-timeout-ms")
      o.read_timeout = parse_ms(flag, value());
    else if (flag == "--threads")
      o.threads = static_cast<int>(parse_ms(flag, value()).count());
    else if (flag == "--port-file")
      a.port_file = value();
    else
      throw qkdn::InvalidArgument("unknown option '" + std::string(flag) + "' (see --help)");
  }
  if (a.topology_file.empty()) throw qkdn::InvalidArgument("--topology FILE is required");
  if (o.insecure_ck &&
      (!o.tls.ca_file.empty() || !o.tls.cert_file.empty() || !o.tls.key_file.empty())) {
    throw qkdn::InvalidArgument("--insecure-ck and --tls-* are mutually exclusive");
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  Args args;
  try {
    if (!parse_args(argc, argv, args)) {
      std::cout << kUsage;
      return 0;
    }
    args.options.topology = qkdn::southbound::load_topology_file(args.topology_file);
  } catch (const std::exception& e) {
    std::cerr << "qkdn-controller: " << e.what() << "\n";
    return 2;
  }

  // Block the stop signals in every thread (the service threads inherit the mask); the main
  // thread takes them synchronously with sigwait.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  try {
    qkdn::service::ControllerService service(args.options);
    service.start();
    const auto host = args.options.listen_host;
    service.log("ck listening on " +
                (host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":" +
                std::to_string(service.port()) +
                (args.options.insecure_ck ? " (INSECURE plain TCP)" : " (TLS 1.3, mutual)"));
    if (!args.port_file.empty()) {
      std::ofstream out(args.port_file, std::ios::trunc);
      out << service.port() << "\n";
      if (!out) throw qkdn::InvalidArgument("--port-file: cannot write '" + args.port_file + "'");
    }
    int sig = 0;
    sigwait(&stop_signals, &sig);
    service.log(std::string("qkdn-controller: ") + (sig == SIGINT ? "SIGINT" : "SIGTERM") +
                ", stopping");
    service.stop();
  } catch (const std::exception& e) {
    std::cerr << "qkdn-controller: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
