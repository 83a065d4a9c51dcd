#include "qkdn/agent/options.hpp"

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <iterator>

#include <boost/asio/ip/address.hpp>

#include "kxi.hpp"
#include "qkdn/base/args.hpp"
#include "qkdn/controller/error.hpp"
#include "qkdn/net/listener.hpp"
#include "qkdn/southbound/topology_json.hpp"

namespace qkdn::agent {
namespace {

using base::parse_int;
using V = std::string_view;

// The first line of the file, without surrounding blanks; throws when empty or unreadable.
std::string read_token_file(const std::string& flag, const std::string& path) {
  std::ifstream in(path);
  if (!in) throw InvalidArgument(flag + " '" + path + "': cannot be read");
  std::string line;
  std::getline(in, line);
  const auto b = line.find_first_not_of(" \t\r");
  const auto e = line.find_last_not_of(" \t\r");
  if (b == std::string::npos) throw InvalidArgument(flag + " '" + path + "': no token");
  line = line.substr(b, e - b + 1);
  if (line.size() > 4096) throw InvalidArgument(flag + " '" + path + "': token over 4 KiB");
  return line;
}

// HOST:PORT with a host: the agent listens on and connects to named addresses only.
base::HostPort host_port(const char* flag, V text) {
  auto hp = base::parse_host_port(flag, text);
  if (hp.host.empty()) {
    throw InvalidArgument(std::string(flag) + ": expected HOST:PORT, got '" + std::string(text) +
                          "'");
  }
  return hp;
}

/// What the options set beside CommandLine, checked once every option is in.
struct Given {
  std::string topology_path;
  std::vector<std::string> kms;
  bool all = false;
  bool have_controller = false;
};

constexpr std::string_view kUsageHead =
    R"(Usage: qkdn-agent --topology FILE (--km ID ... | --all) --controller HOST:PORT
                  (--tls-ca FILE --tls-cert-dir DIR | --insecure-ck --insecure-kma) [options]

Hosts one or many lightweight key managers (KMs) with emulated QKD links. Each KM keeps its own
Ck connection to the controller and its own KMA-link listener.

)";

constexpr std::string_view kUsageTail = R"(
Prints "kma <km_id> listening on HOST:PORT" per KM, "admin listening on 127.0.0.1:PORT",
"etsi <km_id> listening on HOST:PORT" per KM and "agent ready: N KMs" on stdout. Logs go to
stderr in the format of --log-format; nothing logs key bits.

Examples:
  qkdn-agent --topology tests/data/topologies/tokyo-qkd.json --all \
             --controller 127.0.0.1:5600 --insecure-ck --insecure-kma --admin-listen 127.0.0.1:0
  qkdn-agent --topology net.json --km KM1 --km KM2 --controller ctl.example:5600 \
             --tls-ca ca.crt --tls-cert-dir certs/
  qkdn-agent --topology net.json --all --controller 127.0.0.1:5600 \
             --tls-ca pki/ca.pem --tls-cert-dir pki/km \
             --etsi-listen 127.0.0.1:8443 --etsi-cert pki/etsi.pem --etsi-key pki/etsi.key
  curl --cacert pki/ca.pem --cert pki/sae/SAE-A.pem --key pki/sae/SAE-A.key \
       'https://127.0.0.1:8443/api/v1/keys/SAE-B/enc_keys?number=2&size=256'
)";

/// The agent's options, declared once: parsing and --help agree.
base::ArgParser make_parser(CommandLine& cl, Given& g) {
  AgentConfig& cfg = cl.config;
  auto text = [](std::string& target) { return [&target](V v) { target = v; }; };
  base::ArgParser p("qkdn-agent");
  p.section("Key managers and links")
      .option("topology", "FILE",
              "topology document (JSON) naming KMs, links and applications (required)",
              text(g.topology_path))
      .option("km", "ID", "host this KM (repeatable)", [&g](V v) { g.kms.emplace_back(v); })
      .flag("all", "host every KM of the topology", [&g](bool on) { g.all = on; })
      .option("controller", "HOST:PORT[,HOST:PORT...]",
              "the controller's Ck listener (required); with several controllers (--ha) all of "
              "them, comma-separated or repeated: tried in turn, a standby's not_leader answer "
              "names the leader",
              [&cfg, &g](V v) {
                while (!v.empty()) {
                  const auto comma = v.find(',');
                  const auto one = v.substr(0, comma);
                  v = comma == V::npos ? V{} : v.substr(comma + 1);
                  const auto hp = host_port("--controller", one);
                  if (hp.port == 0) throw InvalidArgument("--controller: port must not be 0");
                  if (!g.have_controller) {
                    cfg.controller_host = hp.host;
                    cfg.controller_port = hp.port;
                  }
                  cfg.controllers.emplace_back(hp.host, hp.port);
                  g.have_controller = true;
                }
              })
      .option("controller-id", "ID",
              "the controller's ID (qkdn-controller): with TLS its certificate must carry the SAN "
              "URI urn:qkdn:controller:<ID>, any other is refused",
              text(cfg.controller_id))
      .option("tls-ca", "FILE", "CA bundle (PEM) verifying the controller and peer KMs",
              text(cfg.tls_ca))
      .option("tls-cert-dir", "DIR",
              "per-KM certificates <km_id>.crt (or .pem) and <km_id>.key, e.g. the km/ folder of "
              "scripts/dev-ca.sh (SAN URI urn:qkdn:km:<km_id>); Ck and KMA links use mutual TLS "
              "1.3 with them",
              text(cfg.tls_cert_dir))
      .flag("insecure-ck",
            "plain TCP on Ck without authentication (labs and tests only; the KMA links still "
            "need TLS or --insecure-kma)",
            [&cfg](bool on) { cfg.insecure_ck = on; })
      .flag(
          "insecure-kma",
          "plain TCP on KMA links without authentication: link secrets travel in clear and anyone "
          "reaching a KMA port can pose as a peer KM (labs and tests only; prints a WARNING); "
          "excludes --tls-cert-dir",
          [&cfg](bool on) { cfg.insecure_kma = on; })
      .option("kma-listen-host", "IP",
              "address of the KMA listeners, ports are automatic (127.0.0.1)",
              text(cfg.kma_listen_host))
      .option("admin-listen", "IP:PORT",
              "admin HTTP listener (port 0 = automatic; off when absent); a loopback address "
              "unless --admin-token-file is given",
              [&cfg](V v) {
                const auto hp = host_port("--admin-listen", v);
                cfg.admin_host = hp.host;
                cfg.admin_port = hp.port;
              })
      .option(
          "admin-token-file", "FILE",
          "the admin listener's bearer token (the file's first line): every admin request "
          "must send \"Authorization: Bearer <token>\"",
          [&cfg](V v) { cfg.admin_token = read_token_file("--admin-token-file", std::string(v)); })
      .option("admin-port-file", "FILE",
              "write the bound admin port to FILE (for scripts and tests)",
              text(cl.admin_port_file))
      .option("qber-threshold", "X", "qber_high alarm threshold (0.11)",
              [&cfg](V v) { cfg.qber_threshold = base::parse_double("--qber-threshold", v, 0, 1); })
      .option(
          "qber-hysteresis", "X", "the alarm clears below threshold minus this (0.01)",
          [&cfg](V v) { cfg.qber_hysteresis = base::parse_double("--qber-hysteresis", v, 0, 1); })
      .option("pool-floor-bits", "N", "key_pool_low alarm below N stored bits per link (0 = off)",
              [&cfg](V v) {
                cfg.pool_floor_bits = parse_int("--pool-floor-bits", v, 0, INT64_MAX / 2);
              })
      .option("pool-capacity-bytes", "N",
              "key store capacity per link end; generation pauses when full (262144)",
              [&cfg](V v) {
                cfg.pool_capacity_bytes = static_cast<std::size_t>(
                    parse_int("--pool-capacity-bytes", v, 32, std::int64_t{1} << 34));
              })
      .section(
          "ETSI GS QKD 014 v1.1.1 key delivery to SAEs (one listener serves the SAEs of every "
          "hosted KM)")
      .option("etsi-listen", "IP:PORT",
              "HTTPS listener with mutual TLS (port 0 = automatic; off when absent)",
              [&cfg](V v) {
                const auto hp = host_port("--etsi-listen", v);
                cfg.etsi_host = hp.host;
                cfg.etsi_port = hp.port;
              })
      .option("etsi-cert", "FILE",
              "server certificate chain (PEM), e.g. etsi.pem of scripts/dev-ca.sh",
              text(cfg.etsi_cert))
      .option("etsi-key", "FILE", "its private key (PEM)", text(cfg.etsi_key))
      .option("etsi-ca", "FILE",
              "CA bundle verifying SAE client certificates (default: --tls-ca); the SAE ID is the "
              "certificate's SAN URI urn:qkdn:sae:<id> (nothing else names an SAE); TLS 1.3 only, "
              "strongest key-exchange groups",
              text(cfg.etsi_ca))
      .flag("etsi-insecure",
            "plain HTTP, the SAE names itself in an X-SAE-ID header: anyone reaching the port can "
            "fetch any SAE's keys (labs only; listens on 127.0.0.1:0 unless --etsi-listen is "
            "given; prints a WARNING)",
            [&cfg](bool on) { cfg.etsi_insecure = on; })
      .option("etsi-port-file", "FILE", "write the bound ETSI port to FILE",
              text(cl.etsi_port_file))
      .option("outside-sae", "SAE=CERT",
              "an SAE outside every trusted node (repeatable; draft TR.QKDN-nq 7.3): its keys "
              "leave only wrapped to the public key of CERT (PEM X.509, EC P-256/P-384/P-521 or "
              "X25519/X448, checked at start) through enc_keys_wrapped / dec_keys_wrapped; the "
              "plain enc_keys / dec_keys refuse it (docs/hybrid.md)",
              [&cfg](V v) {
                const auto eq = v.find('=');
                if (eq == 0 || eq == std::string_view::npos || eq + 1 == v.size()) {
                  throw InvalidArgument("--outside-sae: expected SAE_ID=CERT_FILE, got '" +
                                        std::string(v) + "'");
                }
                const std::string sae(v.substr(0, eq));
                if (!cfg.outside_sae_certs.emplace(sae, std::string(v.substr(eq + 1))).second) {
                  throw InvalidArgument("--outside-sae " + sae + ": given twice");
                }
              })
      .option("outside-sae-ca", "FILE",
              "CA bundle every --outside-sae certificate must verify against (optional)",
              text(cfg.outside_sae_ca))
      .section("Interworking node: Kxi' key transfer to a partner KM of another QKDN (docs/kxi.md)")
      .option("iwn-config", "FILE",
              "IWN pairs {\"pairs\":[{km_id, partner_km_id, partner_qkdn_id, partner_ca, "
              "partner_endpoint, remote_saes, listen}]}: keys for remote_saes go to the partner "
              "over HTTPS ext_keys (ETSI GS QKD 020), a pair with listen receives",
              text(cl.iwn_config))
      .option("kma-peer", "KM=HOST:PORT",
              "the KMA endpoint of a gateway KM of another QKDN at the far end of one of this "
              "QKDN's inter-QKDN links (Kxi-1 relay, docs/cxi.md); may be repeated",
              [&cfg](V v) {
                const auto eq = v.find('=');
                if (eq == V::npos || eq == 0) {
                  throw InvalidArgument("--kma-peer: expected KM=HOST:PORT");
                }
                const auto hp = host_port("--kma-peer", v.substr(eq + 1));
                if (hp.port == 0) throw InvalidArgument("--kma-peer: port must not be 0");
                cfg.kma_peers[std::string(v.substr(0, eq))] =
                    hp.host + ":" + std::to_string(hp.port);
              })
      .option("kxi-port-file", "FILE", "write the bound Kxi' port (one receiving pair) to FILE",
              text(cl.kxi_port_file))
      .option("kxi-timeout-ms", "N", "one Kxi' transfer, connect to answer (5000)",
              [&cfg](V v) {
                cfg.kxi_timeout =
                    std::chrono::milliseconds(parse_int("--kxi-timeout-ms", v, 1, 60'000));
              })
      .option(
          "sae-key-size", "BITS", "key size when a request names none (256)",
          [&cfg](V v) { cfg.sae_default_key_size = parse_int("--sae-key-size", v, 8, 1 << 20); })
      .option(
          "sae-max-key-size", "BITS", "largest key a request may ask for, a multiple of 256 (8192)",
          [&cfg](V v) { cfg.sae_max_key_size = parse_int("--sae-max-key-size", v, 256, 1 << 20); })
      .option("sae-max-keys-per-request", "N", "max_key_per_request (128)",
              [&cfg](V v) {
                cfg.sae_max_key_per_request =
                    parse_int("--sae-max-keys-per-request", v, 1, 100'000);
              })
      .option("sae-key-ttl-s", "N", "keys not fetched by the slave SAE within N s are wiped (600)",
              [&cfg](V v) {
                cfg.supplied_key_ttl =
                    std::chrono::seconds(parse_int("--sae-key-ttl-s", v, 1, 86'400));
              })
      .option("sae-supply-timeout-ms", "N", "a relayed key request fails (503) after this (10000)",
              [&cfg](V v) {
                cfg.supply_timeout =
                    std::chrono::milliseconds(parse_int("--sae-supply-timeout-ms", v, 1, 600'000));
              })
      .option("sae-max-requests-per-s", "N",
              "ETSI 014 calls per second per SAE; more: 503 Retry-After (2000)",
              [&cfg](V v) {
                cfg.sae_max_requests_per_s =
                    static_cast<double>(parse_int("--sae-max-requests-per-s", v, 1, 10'000'000));
              })
      .option("sae-max-concurrent", "N", "ETSI 014 calls of one SAE in progress at once (64)",
              [&cfg](V v) {
                cfg.sae_max_concurrent =
                    static_cast<std::size_t>(parse_int("--sae-max-concurrent", v, 1, 1'000'000));
              })
      .option("sae-max-waiting-bytes", "N",
              "key bytes waiting for one SAE to fetch them beyond which an enc_keys between two "
              "SAEs of one KM is refused (16777216)",
              [&cfg](V v) {
                cfg.sae_max_waiting_bytes =
                    static_cast<std::size_t>(parse_int("--sae-max-waiting-bytes", v, 1, INT64_MAX));
              })
      .option("key-combination", "RULE",
              "key delivered to an SAE pair (repeatable): qkd (the QKD key, default) or hybrid "
              "(HKDF over the QKD key and an X25519 [+ ML-KEM-768] secret of the two end KMs), "
              "for every pair, or SAE1:SAE2=qkd|hybrid for one pair in both directions; both end "
              "KMs must agree (docs/hybrid.md)",
              [&cfg](V v) { cfg.key_combination.add_rule(v); })
      .option("relay-scheme", "RULE",
              "how relays asked for SAE keys protect them on each hop (repeatable): otp (one "
              "link key per relayed key, information-theoretic; default) or aes-256-gcm (one "
              "link key per hop, computationally secure), for every pair or "
              "SAE1:SAE2=otp|aes-256-gcm for one pair (docs/hybrid.md)",
              [&cfg](V v) { cfg.relay_scheme.add_rule(v); })
      .section("Other")
      .option("threads", "N", "io threads (2)",
              [&cl](V v) { cl.threads = static_cast<unsigned>(parse_int("--threads", v, 1, 256)); })
      .option("seed", "N",
              "deterministic relay key IDs and jitter (link secrets and keys always come from "
              "RAND_bytes)",
              [&cfg](V v) { cfg.seed = base::parse_uint("--seed", v, 0, UINT64_MAX); })
      .option("log-level", "LEVEL",
              "debug, info, warn or error (info; QKDN_AGENT_DEBUG=1 means debug)",
              [&cl](V v) {
                const auto level = base::parse_log_level(v);
                if (!level)
                  throw InvalidArgument("--log-level: expected debug, info, warn or error");
                cl.log_level = *level;
              })
      .option("log-format", "FORMAT",
              "text (RFC 3339 time, level, component, message) or json (one object per line: "
              "time, level, process, component, msg)",
              [&cl](V v) {
                const auto format = base::parse_log_format(v);
                if (!format) throw InvalidArgument("--log-format: expected text or json");
                cl.log_format = *format;
              });
  return p;
}

}  // namespace

std::string usage() {
  CommandLine cl;
  Given g;
  return std::string(kUsageHead) + make_parser(cl, g).help() + std::string(kUsageTail);
}

CommandLine parse_command_line(const std::vector<std::string>& args) {
  CommandLine cl;
  if (const char* debug = std::getenv("QKDN_AGENT_DEBUG"); debug != nullptr && *debug != '\0') {
    cl.log_level = base::LogLevel::kDebug;  // the older switch; --log-level overrides it
  }
  Given g;
  auto parser = make_parser(cl, g);
  switch (parser.parse(args)) {
    case base::ArgParser::Result::kHelp:
      cl.help = true;
      return cl;
    case base::ArgParser::Result::kVersion:
      cl.version = true;
      return cl;
    case base::ArgParser::Result::kRun:
      break;
  }
  AgentConfig& cfg = cl.config;
  if (g.topology_path.empty()) throw InvalidArgument("--topology FILE is required");
  if (!g.have_controller) throw InvalidArgument("--controller HOST:PORT is required");
  if (g.all == !g.kms.empty()) throw InvalidArgument("give either --km ID (repeatable) or --all");
  if (!cfg.insecure_ck && (cfg.tls_ca.empty() || cfg.tls_cert_dir.empty())) {
    throw InvalidArgument("Ck needs --tls-ca and --tls-cert-dir, or --insecure-ck");
  }
  if (cfg.tls_cert_dir.empty() != cfg.tls_ca.empty()) {
    throw InvalidArgument("--tls-ca and --tls-cert-dir go together");
  }
  if (cfg.tls_cert_dir.empty() && !cfg.insecure_kma) {
    throw InvalidArgument(
        "KMA links carry key material: give --tls-ca and --tls-cert-dir, or --insecure-kma "
        "(--insecure-ck does not imply it)");
  }
  if (!cfg.tls_cert_dir.empty() && cfg.insecure_kma) {
    throw InvalidArgument("--insecure-kma and --tls-cert-dir are mutually exclusive");
  }
  if (cfg.admin_token.empty() && cfg.admin_port) {
    boost::system::error_code ec;
    const auto addr = boost::asio::ip::make_address(cfg.admin_host, ec);
    if (ec) throw InvalidArgument("--admin-listen: not an IP address: " + cfg.admin_host);
    if (!qkdn::net::is_loopback(addr)) {
      throw InvalidArgument("--admin-listen " + cfg.admin_host +
                            ": a non-loopback address needs --admin-token-file FILE");
    }
  }
  if (cfg.etsi_insecure && !cfg.etsi_port) cfg.etsi_port = 0;
  if (cfg.etsi_port && !cfg.etsi_insecure) {
    if (cfg.etsi_cert.empty() || cfg.etsi_key.empty()) {
      throw InvalidArgument("--etsi-listen needs --etsi-cert and --etsi-key, or --etsi-insecure");
    }
    if (cfg.etsi_ca.empty()) cfg.etsi_ca = cfg.tls_ca;
    if (cfg.etsi_ca.empty()) throw InvalidArgument("--etsi-listen needs --etsi-ca or --tls-ca");
  }
  if (!cfg.etsi_port && !cfg.outside_sae_certs.empty()) {
    throw InvalidArgument("--outside-sae needs --etsi-listen or --etsi-insecure");
  }
  if (cfg.outside_sae_certs.empty() && !cfg.outside_sae_ca.empty()) {
    throw InvalidArgument("--outside-sae-ca needs --outside-sae");
  }
  if (!cfg.etsi_port && (!cfg.etsi_cert.empty() || !cfg.etsi_key.empty() || !cfg.etsi_ca.empty() ||
                         !cl.etsi_port_file.empty())) {
    throw InvalidArgument("--etsi-cert/--etsi-key/--etsi-ca/--etsi-port-file need --etsi-listen");
  }
  if (cfg.sae_max_key_size % 256 != 0) {
    throw InvalidArgument("--sae-max-key-size: expected a multiple of 256");
  }
  if (cfg.sae_default_key_size % 8 != 0 || cfg.sae_default_key_size > cfg.sae_max_key_size) {
    throw InvalidArgument("--sae-key-size: expected a multiple of 8 up to --sae-max-key-size");
  }
  if (!cl.admin_port_file.empty() && !cfg.admin_port) {
    throw InvalidArgument("--admin-port-file needs --admin-listen");
  }
  if (!cl.iwn_config.empty()) {
    std::ifstream in(cl.iwn_config);
    if (!in) throw InvalidArgument("--iwn-config '" + cl.iwn_config + "': cannot be read");
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    cfg.iwn_pairs = parse_iwn_config(text);
  }
  if (!cl.kxi_port_file.empty() &&
      std::count_if(cfg.iwn_pairs.begin(), cfg.iwn_pairs.end(),
                    [](const IwnPair& p) { return p.listen_port.has_value(); }) != 1) {
    throw InvalidArgument("--kxi-port-file needs exactly one IWN pair with listen");
  }
  cfg.topology = southbound::load_topology_file(g.topology_path);
  if (g.all) {
    for (const auto& km : cfg.topology.kms) cfg.km_ids.push_back(km.km_id);
  } else {
    cfg.km_ids = g.kms;
  }
  return cl;
}

}  // namespace qkdn::agent
