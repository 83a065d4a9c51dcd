// qkdn-controller: the controller daemon (Ck server, routing and key supply over the core,
// PostgreSQL store, northbound API).
#include <pthread.h>
#include <signal.h>

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <iostream>
#include <string>
#include <string_view>
#include <vector>

#include "qkdn/base/log.hpp"
#include "qkdn/controller/build_info.hpp"
#include "qkdn/controller/error.hpp"
#include "qkdn/db/pg_store.hpp"
#include "qkdn/net/listener.hpp"
#include "qkdn/northbound/api_server.hpp"
#include "qkdn/service/controller_service.hpp"
#include "qkdn/southbound/topology_json.hpp"

namespace {

constexpr std::string_view kUsage = R"(Usage: qkdn-controller --topology FILE [options]

The QKDN controller: accepts key managers (KMs) over Ck (ITU-T Q.4164, TLS 1.3 with mutual
authentication by default), routes and orchestrates key relay, keeps the live network state in
PostgreSQL (optional) and serves the northbound REST API and /metrics.

Network and Ck:
  --topology FILE              topology document (JSON, docs/topology.md); required unless
                               the store already holds one
  --topology-override          replace the stored topology with --topology (default: a stored
                               topology wins and --topology is ignored, with a log line)
  --ck-listen HOST:PORT        Ck listen address (default 0.0.0.0:4164, with --insecure-ck
                               127.0.0.1:4164; port 0 = any free port; ":PORT" keeps the
                               default host)
  --tls-ca FILE                CA bundle (PEM) that KM certificates must chain to
  --tls-cert FILE              controller certificate chain (PEM); its SAN URI
                               urn:qkdn:controller:<ID> is what agents pin (--controller-id)
  --tls-key FILE               controller private key (PEM)
  --insecure-ck                plain TCP on Ck, no authentication: anyone who reaches the port
                               can register as any KM (labs and tests only; binds 127.0.0.1
                               unless --ck-listen names a host; prints a WARNING)
  --controller-id ID           controller ID sent to KMs and named by the certificate
                               (default qkdn-controller)
  --ck-max-unregistered N      Ck connections waiting for their handshake and registration
                               (default 1024, lowered to fit the open-file limit); beyond it a
                               newcomer closes the one waiting longest (if over 1 s) or itself
  --ck-register-timeout-ms N   a Ck connection must register within N ms (default 10000)
  --ck-max-pending-registrations N
                               registrations waiting for the core (default 64); beyond it a
                               Register is answered "NG: busy" with retry_after_ms
  --ck-max-pending-commands N  KM commands waiting for or on the core, all KMs (default 4096),
                               and per KM (--ck-max-pending-per-km, default 64); beyond: busy
  --ck-max-relays-per-km N     key relays (0x1403) one KM may have in progress (default 256)
  --ck-max-frames-per-s N      frames/s (and burst) a registered KM may send (default 5000);
                               more are refused with Error busy, and a KM refused more than
                               --ck-max-refused-per-s times (default 1000) in a second is
                               disconnected
  --heartbeat-interval-ms N    KM heartbeat interval (default 1000); 3 missed = disconnected
  --status-interval-ms N       KM status report interval (default 1000); also the period of the
                               controller's tick (rerouting schedules, leases, session expiry)
  --request-timeout-ms N       controller -> KM command timeout (default 5000)
  --read-timeout-ms N          a started frame must complete within N ms (default 10000)
  --route-alternatives N       routes tried per key relay request / next hops answered (default 3)
  --threads N                  I/O threads (default 2)
  --port-file PATH             write the bound Ck port to PATH (for scripts and tests)
  --epoch-file PATH            without a store: keeps the last controller epoch so that it grows
                               across restarts even if the wall clock went back (without it and
                               without a store the epoch is the wall clock in ms at start;
                               docs/RELIABILITY.md)

Store (PostgreSQL; without it everything lives in memory and is lost at exit):
  --store-dsn DSN              libpq connection string or URI (or env QKDN_STORE_DSN); the schema
                               is migrated at start, an unreachable database fails start-up
  --store-threads N            database threads, one connection each (default 2)

Northbound API:
  --api-listen HOST:PORT       REST API and /metrics (default 127.0.0.1:8080; port 0 = any)
  --api-port-file PATH         write the bound API port to PATH
  --api-tokens FILE            bearer tokens, one "NAME ROLE SHA256-HEX" per line (viewer|admin);
                               without it reads are open and writes refused
  --api-tls-cert FILE          HTTPS certificate chain (PEM); needs --api-tls-key
  --api-tls-key FILE           HTTPS private key (PEM)
  --api-insecure               every API request is admin without a token (labs and tests only)
  --api-max-connections N      open API connections (default 4096; lowered to fit the
                               descriptor limit); at most 512 of them without a valid token

  --config FILE                read options from FILE: one "key = value" per line, keys are the
                               long option names without "--" ('-' or '_'), e.g.
                               "store_dsn = postgresql://qkdn@db/qkdn"; flags without a value
                               take true/false; '#' starts a comment. Precedence: command line,
                               then environment, then FILE.
  --log-level LEVEL            debug, info, warn or error (default info)
  --log-format FORMAT          text (default: RFC 3339 time, level, component, message) or json
                               (one object per line: time, level, process, component, msg)
  --version                    print the version and exit
  --help                       this text

Examples:
  scripts/dev-ca.sh --topology net.json pki/
  qkdn-controller --topology net.json --ck-listen 0.0.0.0:4164 \
      --tls-ca pki/ca.pem --tls-cert pki/controller.pem --tls-key pki/controller.key \
      --store-dsn postgresql://qkdn@127.0.0.1:5432/qkdn --api-listen 0.0.0.0:8080 \
      --api-tokens tokens.txt
  qkdn-controller --topology net.json --ck-listen 127.0.0.1:0 --insecure-ck --port-file ck.port \
      --api-listen 127.0.0.1:0 --api-port-file api.port
  QKDN_STORE_DSN=postgresql://qkdn@db/qkdn qkdn-controller --config /etc/qkdn/controller.conf

Once bound it logs "ck listening on HOST:PORT" and "api listening on HOST:PORT" on stderr. The
network view is at http://HOST:PORT/ui/ of the API (it asks for a token), metrics at /metrics.
At start it raises its open-file limit to the hard limit and keeps its connection caps below it.
SIGINT/SIGTERM stop it gracefully.
)";

struct Args {
  qkdn::base::LogConfig log{qkdn::base::LogLevel::kInfo, qkdn::base::LogFormat::kText,
                            "qkdn-controller"};
  qkdn::service::ServiceOptions options;
  bool ck_host_given = false;  ///< --ck-listen named a host (else the default depends on TLS)
  qkdn::northbound::ApiOptions api;
  std::string topology_file;
  std::string store_dsn;  ///< --store-dsn: main builds the service's store from it
  std::string port_file;
  std::string api_port_file;
};

std::int64_t parse_positive(std::string_view flag, std::string_view v) {
  std::int64_t n = 0;
  auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
  if (ec != std::errc() || p != v.data() + v.size() || n < 1) {
    throw qkdn::InvalidArgument(std::string(flag) + ": expected a positive integer, got '" +
                                std::string(v) + "'");
  }
  return n;
}

std::chrono::milliseconds parse_ms(std::string_view flag, std::string_view v) {
  return std::chrono::milliseconds(parse_positive(flag, v));
}

bool parse_bool(std::string_view flag, std::string_view v) {
  if (v == "true" || v == "1" || v == "yes" || v == "on") return true;
  if (v == "false" || v == "0" || v == "no" || v == "off") return false;
  throw qkdn::InvalidArgument(std::string(flag) + ": expected true or false, got '" +
                              std::string(v) + "'");
}

void parse_listen(std::string_view v, Args& a) {
  auto& o = a.options;
  const auto colon = v.rfind(':');
  if (colon == std::string_view::npos) {
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
  if (!host.empty()) {
    o.listen_host = host;
    a.ck_host_given = true;
  }
  o.listen_port = static_cast<std::uint16_t>(port);
}

// Options that take no value on the command line.
bool is_switch(std::string_view name) {
  return name == "insecure-ck" || name == "topology-override" || name == "api-insecure";
}

// Applies one option by its long name (without "--"). `value` is empty for switches given on
// the command line, which means true. Returns false for an unknown name.
bool apply_option(std::string_view name, std::string_view value, Args& a) {
  auto& o = a.options;
  const std::string flag = "--" + std::string(name);
  const auto on = [&] { return value.empty() || parse_bool(flag, value); };
  if (name == "topology")
    a.topology_file = value;
  else if (name == "topology-override")
    o.topology_override = on();
  else if (name == "ck-listen")
    parse_listen(value, a);
  else if (name == "tls-ca")
    o.tls.ca_file = value;
  else if (name == "tls-cert")
    o.tls.cert_file = value;
  else if (name == "tls-key")
    o.tls.key_file = value;
  else if (name == "insecure-ck")
    o.insecure_ck = on();
  else if (name == "controller-id")
    o.controller_id = value;
  else if (name == "heartbeat-interval-ms")
    o.heartbeat_interval = parse_ms(flag, value);
  else if (name == "status-interval-ms")
    o.status_interval = parse_ms(flag, value);
  else if (name == "request-timeout-ms")
    o.request_timeout = parse_ms(flag, value);
  else if (name == "read-timeout-ms")
    o.read_timeout = parse_ms(flag, value);
  else if (name == "ck-max-unregistered")
    o.max_unregistered = static_cast<std::size_t>(parse_positive(flag, value));
  else if (name == "ck-register-timeout-ms")
    o.register_timeout = parse_ms(flag, value);
  else if (name == "ck-max-pending-registrations")
    o.max_pending_registrations = static_cast<std::size_t>(parse_positive(flag, value));
  else if (name == "ck-max-pending-commands")
    o.max_pending_commands = static_cast<std::size_t>(parse_positive(flag, value));
  else if (name == "ck-max-pending-per-km")
    o.max_pending_per_km = static_cast<std::size_t>(parse_positive(flag, value));
  else if (name == "ck-max-relays-per-km")
    o.max_relays_per_km = static_cast<std::size_t>(parse_positive(flag, value));
  else if (name == "ck-max-frames-per-s") {
    o.max_frames_per_s = static_cast<double>(parse_positive(flag, value));
    o.frame_burst = o.max_frames_per_s;
  } else if (name == "ck-max-refused-per-s")
    o.max_refused_per_s = static_cast<std::uint32_t>(
        std::min<std::int64_t>(parse_positive(flag, value), 1'000'000'000));
  else if (name == "api-max-connections")
    a.api.max_connections = static_cast<std::size_t>(parse_positive(flag, value));
  else if (name == "route-alternatives")
    o.route_alternatives = static_cast<std::size_t>(parse_positive(flag, value));
  else if (name == "threads")
    o.threads = static_cast<int>(std::min<std::int64_t>(parse_positive(flag, value), 1000));
  else if (name == "port-file")
    a.port_file = value;
  else if (name == "store-dsn")
    a.store_dsn = value;
  else if (name == "epoch-file")
    o.epoch_file = value;
  else if (name == "store-threads")
    o.store_threads = static_cast<int>(std::min<std::int64_t>(parse_positive(flag, value), 1000));
  else if (name == "api-listen")
    a.api.listen = value;
  else if (name == "api-port-file")
    a.api_port_file = value;
  else if (name == "api-tokens")
    a.api.tokens_file = value;
  else if (name == "api-tls-cert")
    a.api.tls_cert = value;
  else if (name == "api-tls-key")
    a.api.tls_key = value;
  else if (name == "api-insecure")
    a.api.insecure = on();
  else if (name == "log-level") {
    const auto level = qkdn::base::parse_log_level(value);
    if (!level) throw qkdn::InvalidArgument(flag + ": expected debug, info, warn or error");
    a.log.level = *level;
  } else if (name == "log-format") {
    const auto format = qkdn::base::parse_log_format(value);
    if (!format) throw qkdn::InvalidArgument(flag + ": expected text or json");
    a.log.format = *format;
  } else
    return false;
  return true;
}

std::string trim(std::string_view s) {
  const auto b = s.find_first_not_of(" \t\r");
  if (b == std::string_view::npos) return {};
  const auto e = s.find_last_not_of(" \t\r");
  return std::string(s.substr(b, e - b + 1));
}

void read_config(const std::string& path, Args& a) {
  std::ifstream in(path);
  if (!in) throw qkdn::InvalidArgument("--config: cannot read '" + path + "'");
  std::string line;
  int number = 0;
  while (std::getline(in, line)) {
    ++number;
    const auto where = path + ":" + std::to_string(number);
    const auto text = trim(line.substr(0, line.find('#')));
    if (text.empty()) continue;
    const auto eq = text.find('=');
    std::string key = trim(text.substr(0, eq));
    const std::string value = eq == std::string::npos ? "true" : trim(text.substr(eq + 1));
    for (auto& c : key) {
      if (c == '_') c = '-';
    }
    if (key == "config" || key == "help" || key == "version") {
      throw qkdn::InvalidArgument(where + ": '" + key + "' is not allowed in a config file");
    }
    if (value.empty()) throw qkdn::InvalidArgument(where + ": '" + key + "' has no value");
    if (!apply_option(key, value, a)) {
      throw qkdn::InvalidArgument(where + ": unknown option '" + key + "'");
    }
  }
}

enum class Parsed { kRun, kHelp, kVersion };

Parsed parse_args(int argc, char** argv, Args& a) {
  std::vector<std::string_view> args(argv + 1, argv + argc);
  // The config file first (lowest precedence), then the environment, then the command line.
  for (std::size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--help" || args[i] == "-h") return Parsed::kHelp;
    if (args[i] == "--version") return Parsed::kVersion;
    if (args[i] == "--config") {
      if (i + 1 >= args.size()) throw qkdn::InvalidArgument("--config: missing value");
      read_config(std::string(args[i + 1]), a);
    }
  }
  if (const char* dsn = std::getenv("QKDN_STORE_DSN"); dsn != nullptr && *dsn != '\0') {
    a.store_dsn = dsn;
  }
  for (std::size_t i = 0; i < args.size(); ++i) {
    const auto flag = args[i];
    if (flag.substr(0, 2) != "--") {
      throw qkdn::InvalidArgument("unexpected argument '" + std::string(flag) + "' (see --help)");
    }
    const auto name = flag.substr(2);
    if (name == "config") {
      ++i;
      continue;
    }
    std::string_view value;
    if (!is_switch(name)) {
      if (i + 1 >= args.size()) throw qkdn::InvalidArgument(std::string(flag) + ": missing value");
      value = args[++i];
    }
    if (!apply_option(name, value, a)) {
      throw qkdn::InvalidArgument("unknown option '" + std::string(flag) + "' (see --help)");
    }
  }
  auto& o = a.options;
  if (a.topology_file.empty() && a.store_dsn.empty()) {
    throw qkdn::InvalidArgument("--topology FILE is required (or a --store-dsn that holds one)");
  }
  if (o.topology_override && a.topology_file.empty()) {
    throw qkdn::InvalidArgument("--topology-override needs --topology FILE");
  }
  if (o.insecure_ck &&
      (!o.tls.ca_file.empty() || !o.tls.cert_file.empty() || !o.tls.key_file.empty())) {
    throw qkdn::InvalidArgument("--insecure-ck and --tls-* are mutually exclusive");
  }
  // Plain TCP on Ck authenticates nobody: unless the operator named a host, only this machine
  // may reach it.
  if (o.insecure_ck && !a.ck_host_given) o.listen_host = "127.0.0.1";
  return Parsed::kRun;
}

// Each registered KM holds a Ck descriptor, each API client one, the store a few: keep the caps
// of unauthenticated and API connections inside the descriptor limit (raised to the hard one),
// so that accept never runs out of descriptors while registered KMs need them.
void fit_to_fd_limit(Args& a) {
  const std::size_t limit = qkdn::net::raise_fd_limit();
  auto& o = a.options;
  const std::size_t reserved = 64 + 2 * static_cast<std::size_t>(o.store_threads) +
                               static_cast<std::size_t>(o.threads) + o.topology.kms.size();
  const std::size_t room = limit > reserved ? limit - reserved : 0;
  auto& api = a.api.max_connections;
  auto& ck = o.max_unregistered;
  if (ck + api <= room) return;
  const std::size_t before_api = api;
  const std::size_t before_ck = ck;
  ck = std::max<std::size_t>(16, std::min(ck, room / 4));
  api = std::max<std::size_t>(16, room > ck ? room - ck : 0);
  a.api.max_unauthenticated = std::min(a.api.max_unauthenticated, api);
  qkdn::base::log(qkdn::base::LogLevel::kWarn, "main",
                  "open-file limit " + std::to_string(limit) + ": API connections capped at " +
                      std::to_string(api) + " (was " + std::to_string(before_api) +
                      "), unregistered Ck connections at " + std::to_string(ck) + " (was " +
                      std::to_string(before_ck) + ")");
}

void write_port_file(const std::string& path, std::uint16_t port, std::string_view flag) {
  // Written whole and renamed, so that a script polling for the file never reads half of it.
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << port << "\n";
    if (!out) throw qkdn::InvalidArgument(std::string(flag) + ": cannot write '" + path + "'");
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    throw qkdn::InvalidArgument(std::string(flag) + ": cannot write '" + path + "'");
  }
}

std::string host_text(const std::string& host) {
  return host.find(':') != std::string::npos ? "[" + host + "]" : host;
}

}  // namespace

int main(int argc, char** argv) {
  Args args;
  try {
    const auto parsed = parse_args(argc, argv, args);
    if (parsed == Parsed::kHelp) {
      std::cout << kUsage;
      return 0;
    }
    if (parsed == Parsed::kVersion) {
      std::cout << "qkdn-controller " << qkdn::build_version() << " (revision "
                << qkdn::build_revision() << ")\n";
      return 0;
    }
    qkdn::base::configure_logging(args.log);
    if (!args.topology_file.empty()) {
      args.options.topology = qkdn::southbound::load_topology_file(args.topology_file);
    }
    fit_to_fd_limit(args);
  } catch (const std::exception& e) {
    std::cerr << "qkdn-controller: " << e.what() << "\n";
    return 2;
  }
  if (args.options.insecure_ck) {
    qkdn::base::log(qkdn::base::LogLevel::kWarn, "main",
                    "WARNING: --insecure-ck: Ck is plain TCP without authentication; anyone who "
                    "reaches " +
                        host_text(args.options.listen_host) + ":" +
                        std::to_string(args.options.listen_port) +
                        " can register as any KM (labs and tests only)");
  }
  if (args.store_dsn.empty() && args.options.epoch_file.empty()) {
    qkdn::base::log(qkdn::base::LogLevel::kWarn, "main",
                    "WARNING: no --store-dsn and no --epoch-file: the controller epoch is the "
                    "wall clock at start; after a restart with the clock set back, agents refuse "
                    "this controller until they restart (docs/RELIABILITY.md)");
  }

  // Block the stop signals in every thread (the service threads inherit the mask); the main
  // thread takes them synchronously with sigwait.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  // The store is main's choice: the service opens what it is given.
  if (!args.store_dsn.empty()) args.options.store = qkdn::db::pg_store_factory(args.store_dsn);
  try {
    qkdn::service::ControllerService service(args.options);
    service.set_command_handler(qkdn::service::make_key_supply_handler());
    qkdn::northbound::ApiServer api(service, args.api);
    service.start();
    service.log("ck listening on " + host_text(args.options.listen_host) + ":" +
                std::to_string(service.port()) +
                (args.options.insecure_ck ? " (INSECURE plain TCP)" : " (TLS 1.3, mutual)"));
    api.start();
    service.log("api listening on " + args.api.listen.substr(0, args.api.listen.rfind(':')) + ":" +
                std::to_string(api.port()) + (args.api.tls_cert.empty() ? " (HTTP)" : " (HTTPS)"));
    if (!args.port_file.empty()) write_port_file(args.port_file, service.port(), "--port-file");
    if (!args.api_port_file.empty()) {
      write_port_file(args.api_port_file, api.port(), "--api-port-file");
    }
    int sig = 0;
    sigwait(&stop_signals, &sig);
    service.log(std::string("main: ") + (sig == SIGINT ? "SIGINT" : "SIGTERM") + ", stopping");
    api.stop();
    service.stop();
  } catch (const std::exception& e) {
    qkdn::base::log(qkdn::base::LogLevel::kError, "main", e.what());
    return 1;
  }
  return 0;
}
