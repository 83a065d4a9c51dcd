// qkdn-controller: the controller daemon (Ck server, routing and key supply over the core,
// PostgreSQL store, northbound API).
#include <pthread.h>
#include <signal.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <iostream>
#include <iterator>
#include <string>
#include <string_view>
#include <vector>

#include "ha_main.hpp"
#include "interworking_wiring.hpp"
#include "qkdn/base/args.hpp"
#include "qkdn/base/log.hpp"
#include "qkdn/controller/build_info.hpp"
#include "qkdn/controller/clock.hpp"
#include "qkdn/controller/error.hpp"
#include "qkdn/db/pg_store.hpp"
#include "qkdn/net/listener.hpp"
#include "qkdn/northbound/api_server.hpp"
#include "qkdn/service/controller_service.hpp"
#include "qkdn/service/interworking_relay.hpp"
#include "qkdn/service/iwn_transfers.hpp"
#include "qkdn/southbound/topology_json.hpp"

namespace {

constexpr std::string_view kUsageHead = R"(Usage: qkdn-controller --topology FILE [options]

The QKDN controller: accepts key managers (KMs) over Ck (ITU-T Q.4164, TLS 1.3 with mutual
authentication by default), routes and orchestrates key relay, keeps the live network state in
PostgreSQL (optional) and serves the northbound REST API and /metrics.

)";

constexpr std::string_view kUsageTail = R"(
Examples:
  scripts/dev-ca.sh --topology net.json pki/
  qkdn-controller --topology net.json --ck-listen 0.0.0.0:4164 \
      --tls-ca pki/ca.pem --tls-cert pki/controller.pem --tls-key pki/controller.key \
      --store-dsn postgresql://qkdn@127.0.0.1:5432/qkdn --api-listen 0.0.0.0:8080 \
      --api-tokens tokens.txt
  qkdn-controller --topology net.json --ck-listen 127.0.0.1:0 --insecure-ck --port-file ck.port \
      --api-listen 127.0.0.1:0 --api-port-file api.port
  QKDN_STORE_DSN=postgresql://qkdn@db/qkdn qkdn-controller --config /etc/qkdn/controller.conf

A config file holds one "key = value" per line with the long option names ('-' or '_'), e.g.
"store_dsn = postgresql://qkdn@db/qkdn"; a switch alone means true; '#' starts a comment.
Precedence: command line, then environment, then the file.

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
  std::string qkdn_id;  ///< --qkdn-id: this network's QKDN ID (docs/cxi.md)
  bool cxi = false;     ///< --cxi-listen given: interworking with peer controllers
  qkdn::interworking_wiring::Options cxi_options;
  std::string cxi_port_file;
  std::string store_dsn;  ///< --store-dsn: main builds the service's store from it
  std::string port_file;
  std::string api_port_file;
  qkdn::ha::HaArgs ha;
  std::string iwn_policy_file;  ///< --iwn-policy: interworking transfer policy (docs/kxi.md)
};

// Counts (connections, commands, threads) are positive and below this.
constexpr std::int64_t kMaxCount = 1'000'000'000;

/// The controller's options, declared once: parsing, --help and the config file agree.
qkdn::base::ArgParser make_parser(Args& a) {
  using qkdn::base::parse_int;
  using qkdn::base::parse_ms;
  using V = std::string_view;
  auto& o = a.options;
  auto count = [](std::size_t& target, const char* flag) {
    return [&target, flag](V v) {
      target = static_cast<std::size_t>(parse_int(flag, v, 1, kMaxCount));
    };
  };
  auto ms = [](std::chrono::milliseconds& target, const char* flag) {
    return [&target, flag](V v) { target = parse_ms(flag, v); };
  };
  auto text = [](std::string& target) { return [&target](V v) { target = v; }; };
  qkdn::base::ArgParser p("qkdn-controller");
  p.section("Network and Ck")
      .option("topology", "FILE",
              "topology document (JSON, docs/topology.md); required unless the store already "
              "holds one",
              text(a.topology_file))
      .flag("topology-override",
            "replace the stored topology with --topology (default: a stored topology wins and "
            "--topology is ignored, with a log line)",
            [&o](bool on) { o.topology_override = on; })
      .option("qkdn-id", "ID",
              "this network's QKDN ID for interworking (docs/cxi.md); a --topology document "
              "without qkdn_id takes it, one with a different qkdn_id is refused",
              text(a.qkdn_id))
      .option("cxi-listen", "HOST:PORT",
              "enables Cxi, the interworking protocol with the controllers of other QKDNs "
              "(docs/cxi.md), listening here (port 0 = any free port); mutual TLS with --tls-ca, "
              "--tls-cert (which then needs EKU clientAuth too) and --tls-key",
              [&a](V v) {
                const auto hp = qkdn::base::parse_host_port("--cxi-listen", v);
                if (!hp.host.empty()) a.cxi_options.listen_host = hp.host;
                a.cxi_options.listen_port = hp.port;
                a.cxi = true;
              })
      .option("cxi-port-file", "FILE",
              "write the bound Cxi port to FILE once listening (for --cxi-listen HOST:0)",
              text(a.cxi_port_file))
      .option("cxi-heartbeat-ms", "N",
              "Cxi heartbeat period (default 1000, 100..60000): a peer silent for one period is "
              "down, with an alarm, and routes through it are unusable",
              [&a](V v) {
                a.cxi_options.heartbeat =
                    std::chrono::milliseconds(parse_int("--cxi-heartbeat-ms", v, 100, 60'000));
              })
      .option("cxi-summary-ms", "N",
              "period of the Mxi summaries sent to each peer over Cxi (default 10000, "
              "1000..3600000; docs/cxi.md clause 5.8)",
              [&a](V v) {
                a.cxi_options.summary_period =
                    std::chrono::milliseconds(parse_int("--cxi-summary-ms", v, 1000, 3'600'000));
              })
      .option("ck-listen", "HOST:PORT",
              "Ck listen address (default 0.0.0.0:4164, with --insecure-ck 127.0.0.1:4164; port "
              "0 = any free port; \":PORT\" keeps the default host)",
              [&a](V v) {
                const auto hp = qkdn::base::parse_host_port("--ck-listen", v);
                if (!hp.host.empty()) {
                  a.options.listen_host = hp.host;
                  a.ck_host_given = true;
                }
                a.options.listen_port = hp.port;
              })
      .option("tls-ca", "FILE", "CA bundle (PEM) that KM certificates must chain to",
              text(o.tls.ca_file))
      .option("tls-cert", "FILE",
              "controller certificate chain (PEM); its SAN URI urn:qkdn:controller:<ID> is what "
              "agents pin (--controller-id)",
              text(o.tls.cert_file))
      .option("tls-key", "FILE", "controller private key (PEM)", text(o.tls.key_file))
      .flag("insecure-ck",
            "plain TCP on Ck, no authentication: anyone who reaches the port can register as any "
            "KM (labs and tests only; binds 127.0.0.1 unless --ck-listen names a host; prints a "
            "WARNING)",
            [&o](bool on) { o.insecure_ck = on; })
      .option("controller-id", "ID",
              "controller ID sent to KMs and named by the certificate (default qkdn-controller)",
              text(o.controller_id))
      .option("ck-max-unregistered", "N",
              "Ck connections waiting for their handshake and registration (default 1024, "
              "lowered to fit the open-file limit); beyond it a newcomer closes the one waiting "
              "longest (if over 1 s) or itself",
              count(o.max_unregistered, "--ck-max-unregistered"))
      .option("ck-register-timeout-ms", "N",
              "a Ck connection must register within N ms (default 10000)",
              ms(o.register_timeout, "--ck-register-timeout-ms"))
      .option("ck-max-pending-registrations", "N",
              "registrations waiting for the core (default 64); beyond it a Register is answered "
              "\"NG: busy\" with retry_after_ms",
              count(o.max_pending_registrations, "--ck-max-pending-registrations"))
      .option("ck-max-pending-commands", "N",
              "KM commands waiting for or on the core, all KMs (default 4096); beyond: busy",
              count(o.max_pending_commands, "--ck-max-pending-commands"))
      .option("ck-max-pending-per-km", "N",
              "KM commands waiting for or on the core, per KM (default 64); beyond: busy",
              count(o.max_pending_per_km, "--ck-max-pending-per-km"))
      .option("ck-max-relays-per-km", "N",
              "key relays (0x1403) one KM may have in progress (default 256)",
              count(o.max_relays_per_km, "--ck-max-relays-per-km"))
      .option("ck-max-frames-per-s", "N",
              "frames/s (and burst) a registered KM may send (default 5000); more are refused "
              "with Error busy",
              [&o](V v) {
                o.max_frames_per_s =
                    static_cast<double>(parse_int("--ck-max-frames-per-s", v, 1, kMaxCount));
                o.frame_burst = o.max_frames_per_s;
              })
      .option("ck-max-refused-per-s", "N",
              "a KM refused more than N times in a second is disconnected (default 1000)",
              [&o](V v) {
                o.max_refused_per_s = static_cast<std::uint32_t>(
                    parse_int("--ck-max-refused-per-s", v, 1, kMaxCount));
              })
      .option("heartbeat-interval-ms", "N",
              "KM heartbeat interval (default 1000); 3 missed = disconnected",
              ms(o.heartbeat_interval, "--heartbeat-interval-ms"))
      .option("status-interval-ms", "N",
              "KM status report interval (default 1000); also the period of the controller's "
              "tick (rerouting schedules, leases, session expiry)",
              ms(o.status_interval, "--status-interval-ms"))
      .option("request-timeout-ms", "N", "controller -> KM command timeout (default 5000)",
              ms(o.request_timeout, "--request-timeout-ms"))
      .option("read-timeout-ms", "N", "a started frame must complete within N ms (default 10000)",
              ms(o.read_timeout, "--read-timeout-ms"))
      .option("route-alternatives", "N",
              "routes tried per key relay request / next hops answered (default 3)",
              count(o.route_alternatives, "--route-alternatives"))
      .option("relay-routing", "MODE",
              "centralized (default: the controller reserves every hop of a key relay, 0x1403) "
              "or distributed (Q.4164 7.1: every KM of the route asks 0x1401 for its next hop and "
              "reserves its own hop keys); sent to the KMs when they register",
              [&o](V v) {
                const std::string mode(v);
                if (mode != "centralized" && mode != "distributed") {
                  throw qkdn::InvalidArgument(
                      "--relay-routing: expected centralized or distributed, got '" + mode + "'");
                }
                o.distributed_relay = mode == "distributed";
              })
      .option("threads", "N", "I/O threads (default 2)",
              [&o](V v) { o.threads = static_cast<int>(parse_int("--threads", v, 1, 1000)); })
      .option("port-file", "PATH", "write the bound Ck port to PATH (for scripts and tests)",
              text(a.port_file))
      .option("epoch-file", "PATH",
              "without a store: keeps the last controller epoch so that it grows across restarts "
              "even if the wall clock went back (without it and without a store the epoch is the "
              "wall clock in ms at start; docs/RELIABILITY.md)",
              text(o.epoch_file))
      .option("iwn-policy", "PATH",
              "interworking-node policy {\"pairs\":[{km_id, partner_km_id, partner_qkdn_id, "
              "allowed_saes, max_keys_per_transfer, max_keys_per_s, max_in_flight}]}: which Kxi' "
              "key transfers this controller allows its IWN KMs (docs/kxi.md)",
              text(a.iwn_policy_file))
      .section("Store (PostgreSQL; without it everything lives in memory and is lost at exit)")
      .option("store-dsn", "DSN",
              "libpq connection string or URI; the schema is migrated at start, an unreachable "
              "database fails start-up",
              text(a.store_dsn))
      .env("store-dsn", "QKDN_STORE_DSN")
      .option("store-threads", "N", "database threads, one connection each (default 2)",
              [&o](V v) {
                o.store_threads = static_cast<int>(parse_int("--store-threads", v, 1, 1000));
              })
      .section("High availability (docs/high-availability.md)")
      .flag("ha",
            "one of several controllers sharing --store-dsn: leads while it holds the lease in "
            "the database, else stands by (refuses KM registrations and API writes, naming the "
            "leader)",
            [&a](bool on) { a.ha.enabled = on; })
      .option("ha-lease-ms", "N",
              "leadership lease (default 3000; database clock): a standby takes over within "
              "about N ms of the leader's death; the leader stops commanding after 3N/5 ms "
              "without a renewal",
              ms(a.ha.lease, "--ha-lease-ms"))
      .option("ha-advertise-ck", "HOST:PORT",
              "the Ck address standbys send agents to while this controller leads (default: "
              "the Ck listen host and port)",
              text(a.ha.advertise_ck))
      .option("ha-advertise-api", "HOST:PORT",
              "the API address standbys name in their not_leader refusals (default: the API "
              "listen address)",
              text(a.ha.advertise_api))
      .option("ha-holder", "NAME",
              "this controller's name in the lease (default: host, pid and a random part)",
              text(a.ha.holder))
      .option("ha-standby-refresh-ms", "N",
              "a standby reloads the stored state every N ms (default 10000; 0 = never)",
              [&a](V v) {
                a.ha.standby_refresh = std::chrono::milliseconds{
                    parse_int("--ha-standby-refresh-ms", v, 0, 86'400'000)};
              })
      .section("Northbound API")
      .option("api-listen", "HOST:PORT",
              "REST API and /metrics (default 127.0.0.1:8080; port 0 = any)", text(a.api.listen))
      .option("api-port-file", "PATH", "write the bound API port to PATH", text(a.api_port_file))
      .option("api-tokens", "FILE",
              "bearer tokens, one \"NAME ROLE SHA256-HEX\" per line (viewer|admin); without it "
              "reads are open and writes refused",
              text(a.api.tokens_file))
      .option("api-tls-cert", "FILE", "HTTPS certificate chain (PEM); needs --api-tls-key",
              text(a.api.tls_cert))
      .option("api-tls-key", "FILE", "HTTPS private key (PEM)", text(a.api.tls_key))
      .flag("api-insecure", "every API request is admin without a token (labs and tests only)",
            [&a](bool on) { a.api.insecure = on; })
      .option("api-max-connections", "N",
              "open API connections (default 4096; lowered to fit the descriptor limit); at most "
              "512 of them without a valid token",
              count(a.api.max_connections, "--api-max-connections"))
      .section("Other")
      .option("log-level", "LEVEL", "debug, info, warn or error (default info)",
              [&a](V v) {
                const auto level = qkdn::base::parse_log_level(v);
                if (!level) {
                  throw qkdn::InvalidArgument("--log-level: expected debug, info, warn or error");
                }
                a.log.level = *level;
              })
      .option("log-format", "FORMAT",
              "text (default: RFC 3339 time, level, component, message) or json (one object per "
              "line: time, level, process, component, msg)",
              [&a](V v) {
                const auto format = qkdn::base::parse_log_format(v);
                if (!format) throw qkdn::InvalidArgument("--log-format: expected text or json");
                a.log.format = *format;
              })
      .config_file();
  return p;
}

// The rules between options, checked after every source was applied.
void check_args(Args& a) {
  auto& o = a.options;
  if (a.topology_file.empty() && a.store_dsn.empty()) {
    throw qkdn::InvalidArgument("--topology FILE is required (or a --store-dsn that holds one)");
  }
  if (a.ha.enabled && a.store_dsn.empty()) {
    throw qkdn::InvalidArgument("--ha needs --store-dsn (the database the controllers share)");
  }
  if (o.topology_override && a.topology_file.empty()) {
    throw qkdn::InvalidArgument("--topology-override needs --topology FILE");
  }
  if (o.insecure_ck &&
      (!o.tls.ca_file.empty() || !o.tls.cert_file.empty() || !o.tls.key_file.empty())) {
    throw qkdn::InvalidArgument("--insecure-ck and --tls-* are mutually exclusive");
  }
  if (!a.iwn_policy_file.empty() && a.ha.enabled) {
    throw qkdn::InvalidArgument(
        "--iwn-policy and --ha together are not supported yet (docs/high-availability.md)");
  }
  if (a.cxi && a.ha.enabled) {
    throw qkdn::InvalidArgument(
        "--cxi-listen and --ha together are not supported yet (docs/high-availability.md)");
  }
  if (a.cxi && (o.insecure_ck || o.tls.cert_file.empty())) {
    throw qkdn::InvalidArgument(
        "--cxi-listen needs --tls-ca, --tls-cert and --tls-key (Cxi is "
        "always mutual TLS)");
  }
  // Plain TCP on Ck authenticates nobody: unless the operator named a host, only this machine
  // may reach it.
  if (o.insecure_ck && !a.ck_host_given) o.listen_host = "127.0.0.1";
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

// --qkdn-id and the document's qkdn_id must agree; a document without one takes the option's.
void apply_qkdn_id(Args& a) {
  if (a.qkdn_id.empty()) return;
  auto& doc = a.options.topology;
  if (!qkdn::is_valid_id(a.qkdn_id)) {
    throw qkdn::InvalidArgument("--qkdn-id: invalid ID '" + a.qkdn_id +
                                "' (1..128 of [A-Za-z0-9._:-])");
  }
  if (doc.qkdn_id.empty()) {
    doc.qkdn_id = a.qkdn_id;
  } else if (doc.qkdn_id != a.qkdn_id) {
    throw qkdn::InvalidArgument("--qkdn-id '" + a.qkdn_id + "' differs from the qkdn_id '" +
                                doc.qkdn_id + "' of " + a.topology_file);
  }
}

std::string host_text(const std::string& host) {
  return host.find(':') != std::string::npos ? "[" + host + "]" : host;
}

}  // namespace

int main(int argc, char** argv) {
  Args args;
  try {
    auto parser = make_parser(args);
    const auto parsed = parser.parse(argc, argv);
    if (parsed == qkdn::base::ArgParser::Result::kHelp) {
      std::cout << kUsageHead << parser.help() << kUsageTail;
      return 0;
    }
    if (parsed == qkdn::base::ArgParser::Result::kVersion) {
      std::cout << "qkdn-controller " << qkdn::build_version() << " (revision "
                << qkdn::build_revision() << ")\n";
      return 0;
    }
    check_args(args);
    qkdn::base::configure_logging(args.log);
    if (!args.topology_file.empty()) {
      args.options.topology = qkdn::southbound::load_topology_file(args.topology_file);
      apply_qkdn_id(args);
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

  if (args.ha.enabled) {
    return qkdn::ha::run_ha(args.options, args.api, args.store_dsn, args.ha, stop_signals,
                            [&args](std::uint16_t ck, std::uint16_t api) {
                              qkdn::base::log(
                                  qkdn::base::LogLevel::kInfo, "main",
                                  "ck listening on " + host_text(args.options.listen_host) + ":" +
                                      std::to_string(ck) + "; api listening on " +
                                      args.api.listen.substr(0, args.api.listen.rfind(':')) + ":" +
                                      std::to_string(api));
                              if (!args.port_file.empty()) {
                                write_port_file(args.port_file, ck, "--port-file");
                              }
                              if (!args.api_port_file.empty()) {
                                write_port_file(args.api_port_file, api, "--api-port-file");
                              }
                            });
  }
  try {
    // The store is main's choice: the service opens what it is given.
    if (!args.store_dsn.empty()) args.options.store = qkdn::db::pg_store_factory(args.store_dsn);
    qkdn::service::ControllerService service(args.options);
    std::vector<qkdn::service::IwnPolicyPair> iwn_policy;
    if (!args.iwn_policy_file.empty()) {
      std::ifstream in(args.iwn_policy_file);
      if (!in)
        throw qkdn::InvalidArgument("--iwn-policy '" + args.iwn_policy_file + "': cannot be read");
      const std::string text((std::istreambuf_iterator<char>(in)),
                             std::istreambuf_iterator<char>());
      iwn_policy = qkdn::service::parse_iwn_policy(text);
    }
    // Kxi-1 relays through GWNs (docs/cxi.md 5.6) first: commands naming an SAE of another
    // QKDN; the rest goes on to the IWN transfers and the key supply.
    auto iw_relays = qkdn::service::make_interworking_relays(service);
    service.set_command_handler(qkdn::service::make_interworking_relay_handler(
        qkdn::service::make_iwn_transfer_handler(qkdn::service::make_key_supply_handler(),
                                                 std::move(iwn_policy)),
        iw_relays));
    std::shared_ptr<qkdn::interworking_wiring::Wiring> cxi;
    if (args.cxi) {
      args.cxi_options.tls = args.options.tls;
      args.cxi_options.controller_id = args.options.controller_id;
      cxi = qkdn::interworking_wiring::make(service, args.options.topology, args.cxi_options,
                                            args.api, iw_relays);
    }
    qkdn::northbound::ApiServer api(service, args.api);
    service.start();
    if (cxi) {
      const auto port = qkdn::interworking_wiring::start(cxi);
      service.log("cxi listening on " + host_text(args.cxi_options.listen_host) + ":" +
                  std::to_string(port) + " (TLS 1.3, mutual; QKDN " +
                  args.options.topology.qkdn_id + ")");
      if (!args.cxi_port_file.empty()) write_port_file(args.cxi_port_file, port, "--cxi-port-file");
    }
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
    if (cxi) qkdn::interworking_wiring::stop(*cxi);
    api.stop();
    service.stop();
  } catch (const std::exception& e) {
    qkdn::base::log(qkdn::base::LogLevel::kError, "main", e.what());
    return 1;
  }
  return 0;
}
