#include "qkdn/agent/options.hpp"

#include <charconv>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <set>

#include <boost/asio/ip/address.hpp>

#include "qkdn/controller/error.hpp"
#include "qkdn/net/listener.hpp"
#include "qkdn/southbound/topology_json.hpp"

namespace qkdn::agent {
namespace {

template <class T>
T parse_int(const std::string& flag, const std::string& text, T min, T max) {
  T v{};
  const auto* end = text.data() + text.size();
  auto [p, ec] = std::from_chars(text.data(), end, v);
  if (ec != std::errc{} || p != end || v < min || v > max) {
    throw InvalidArgument(flag + ": expected an integer in [" + std::to_string(min) + ", " +
                          std::to_string(max) + "], got '" + text + "'");
  }
  return v;
}

double parse_double(const std::string& flag, const std::string& text, double min, double max) {
  std::size_t used = 0;
  double v = 0;
  try {
    v = std::stod(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != text.size() || text.empty() || !std::isfinite(v) || v < min || v > max) {
    throw InvalidArgument(flag + ": expected a number in [" + std::to_string(min) + ", " +
                          std::to_string(max) + "], got '" + text + "'");
  }
  return v;
}

std::pair<std::string, std::uint16_t> parse_host_port(const std::string& flag,
                                                      const std::string& text) {
  const auto pos = text.rfind(':');
  if (pos == std::string::npos || pos == 0) {
    throw InvalidArgument(flag + ": expected HOST:PORT, got '" + text + "'");
  }
  std::string host = text.substr(0, pos);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  return {host, parse_int<std::uint16_t>(flag, text.substr(pos + 1), 0, 65535)};
}

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

}  // namespace

std::string usage() {
  return R"(Usage: qkdn-agent --topology FILE (--km ID ... | --all) --controller HOST:PORT
                  (--tls-ca FILE --tls-cert-dir DIR | --insecure-ck --insecure-kma) [options]

Hosts one or many lightweight key managers (KMs) with emulated QKD links. Each KM keeps its own
Ck connection to the controller and its own KMA-link listener.

  --topology FILE         topology document (JSON) naming KMs, links and applications (required)
  --km ID                 host this KM (repeatable)
  --all                   host every KM of the topology
  --controller HOST:PORT  the controller's Ck listener (required)
  --controller-id ID      the controller's ID (qkdn-controller): with TLS its certificate must
                          carry the SAN URI urn:qkdn:controller:<ID>, any other is refused
  --tls-ca FILE           CA bundle (PEM) verifying the controller and peer KMs
  --tls-cert-dir DIR      per-KM certificates <km_id>.crt (or .pem) and <km_id>.key, e.g.
                          the km/ folder of scripts/dev-ca.sh (SAN URI urn:qkdn:km:<km_id>);
                          Ck and KMA links use mutual TLS 1.3 with them
  --insecure-ck           plain TCP on Ck without authentication (labs and tests only; the
                          KMA links still need TLS or --insecure-kma)
  --insecure-kma          plain TCP on KMA links without authentication: link secrets travel in
                          clear and anyone reaching a KMA port can pose as a peer KM (labs
                          and tests only; prints a WARNING); excludes --tls-cert-dir
  --kma-listen-host IP    address of the KMA listeners, ports are automatic (127.0.0.1)
  --admin-listen IP:PORT  admin HTTP listener (port 0 = automatic; off when absent); a loopback
                          address unless --admin-token-file is given
  --admin-token-file FILE the admin listener's bearer token (the file's first line): every
                          admin request must send "Authorization: Bearer <token>"
  --qber-threshold X      qber_high alarm threshold (0.11)
  --qber-hysteresis X     the alarm clears below threshold minus this (0.01)
  --pool-floor-bits N     key_pool_low alarm below N stored bits per link (0 = off)
  --pool-capacity-bytes N key store capacity per link end; generation pauses when full (262144)
  --admin-port-file FILE  write the bound admin port to FILE (for scripts and tests)

ETSI GS QKD 014 v1.1.1 key delivery to SAEs (one listener serves the SAEs of every hosted KM):
  --etsi-listen IP:PORT   HTTPS listener with mutual TLS (port 0 = automatic; off when absent)
  --etsi-cert FILE        server certificate chain (PEM), e.g. etsi.pem of scripts/dev-ca.sh
  --etsi-key FILE         its private key (PEM)
  --etsi-ca FILE          CA bundle verifying SAE client certificates (default: --tls-ca); the
                          SAE ID is the certificate's SAN URI urn:qkdn:sae:<id> (nothing
                          else names an SAE); TLS 1.3 only, strongest key-exchange groups
  --etsi-insecure         plain HTTP, the SAE names itself in an X-SAE-ID header: anyone
                          reaching the port can fetch any SAE's keys (labs only; listens on
                          127.0.0.1:0 unless --etsi-listen is given; prints a WARNING)
  --etsi-port-file FILE   write the bound ETSI port to FILE
  --sae-key-size BITS     key size when a request names none (256)
  --sae-max-key-size BITS largest key a request may ask for, a multiple of 256 (8192)
  --sae-max-keys-per-request N  max_key_per_request (128)
  --sae-key-ttl-s N       keys not fetched by the slave SAE within N s are wiped (600)
  --sae-supply-timeout-ms N  a relayed key request fails (503) after this (10000)
  --sae-max-requests-per-s N  ETSI 014 calls per second per SAE; more: 503 Retry-After (2000)
  --sae-max-concurrent N  ETSI 014 calls of one SAE in progress at once (64)
  --sae-max-waiting-bytes N  key bytes waiting for one SAE to fetch them beyond which an
                          enc_keys between two SAEs of one KM is refused (16777216)
  --threads N             io threads (2)
  --seed N                deterministic relay key IDs and jitter (link secrets and keys always
                          come from RAND_bytes)
  --log-level LEVEL       debug, info, warn or error (info; QKDN_AGENT_DEBUG=1 means debug)
  --log-format FORMAT     text (RFC 3339 time, level, component, message) or json (one object
                          per line: time, level, process, component, msg)
  --version               print the version and exit
  --help                  this text

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
}

CommandLine parse_command_line(const std::vector<std::string>& args) {
  CommandLine cl;
  if (const char* debug = std::getenv("QKDN_AGENT_DEBUG"); debug != nullptr && *debug != '\0') {
    cl.log_level = base::LogLevel::kDebug;  // the older switch; --log-level overrides it
  }
  AgentConfig& cfg = cl.config;
  std::string topology_path;
  std::vector<std::string> kms;
  bool all = false;
  bool have_controller = false;
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string& flag = args[i];
    auto value = [&]() -> const std::string& {
      if (i + 1 >= args.size()) throw InvalidArgument(flag + ": missing value");
      return args[++i];
    };
    if (flag == "--help" || flag == "-h") {
      cl.help = true;
      return cl;
    } else if (flag == "--version") {
      cl.version = true;
      return cl;
    } else if (flag == "--log-level") {
      const auto level = base::parse_log_level(value());
      if (!level) throw InvalidArgument("--log-level: expected debug, info, warn or error");
      cl.log_level = *level;
    } else if (flag == "--log-format") {
      const auto format = base::parse_log_format(value());
      if (!format) throw InvalidArgument("--log-format: expected text or json");
      cl.log_format = *format;
    } else if (flag == "--topology") {
      topology_path = value();
    } else if (flag == "--km") {
      kms.push_back(value());
    } else if (flag == "--all") {
      all = true;
    } else if (flag == "--controller") {
      auto [h, p] = parse_host_port(flag, value());
      if (p == 0) throw InvalidArgument("--controller: port must not be 0");
      cfg.controller_host = h;
      cfg.controller_port = p;
      have_controller = true;
    } else if (flag == "--insecure-ck") {
      cfg.insecure_ck = true;
    } else if (flag == "--insecure-kma") {
      cfg.insecure_kma = true;
    } else if (flag == "--controller-id") {
      cfg.controller_id = value();
    } else if (flag == "--admin-token-file") {
      cfg.admin_token = read_token_file(flag, value());
    } else if (flag == "--tls-ca") {
      cfg.tls_ca = value();
    } else if (flag == "--tls-cert-dir") {
      cfg.tls_cert_dir = value();
    } else if (flag == "--kma-listen-host") {
      cfg.kma_listen_host = value();
    } else if (flag == "--admin-listen") {
      auto [h, p] = parse_host_port(flag, value());
      cfg.admin_host = h;
      cfg.admin_port = p;
    } else if (flag == "--qber-threshold") {
      cfg.qber_threshold = parse_double(flag, value(), 0, 1);
    } else if (flag == "--qber-hysteresis") {
      cfg.qber_hysteresis = parse_double(flag, value(), 0, 1);
    } else if (flag == "--pool-floor-bits") {
      cfg.pool_floor_bits = parse_int<std::int64_t>(flag, value(), 0, INT64_MAX / 2);
    } else if (flag == "--pool-capacity-bytes") {
      cfg.pool_capacity_bytes = parse_int<std::size_t>(flag, value(), 32, std::size_t{1} << 34);
    } else if (flag == "--admin-port-file") {
      cl.admin_port_file = value();
    } else if (flag == "--etsi-listen") {
      auto [h, p] = parse_host_port(flag, value());
      cfg.etsi_host = h;
      cfg.etsi_port = p;
    } else if (flag == "--etsi-insecure") {
      cfg.etsi_insecure = true;
    } else if (flag == "--etsi-cert") {
      cfg.etsi_cert = value();
    } else if (flag == "--etsi-key") {
      cfg.etsi_key = value();
    } else if (flag == "--etsi-ca") {
      cfg.etsi_ca = value();
    } else if (flag == "--etsi-port-file") {
      cl.etsi_port_file = value();
    } else if (flag == "--sae-key-size") {
      cfg.sae_default_key_size = parse_int<std::int64_t>(flag, value(), 8, 1 << 20);
    } else if (flag == "--sae-max-key-size") {
      cfg.sae_max_key_size = parse_int<std::int64_t>(flag, value(), 256, 1 << 20);
    } else if (flag == "--sae-max-keys-per-request") {
      cfg.sae_max_key_per_request = parse_int<std::int64_t>(flag, value(), 1, 100'000);
    } else if (flag == "--sae-key-ttl-s") {
      cfg.supplied_key_ttl =
          std::chrono::seconds(parse_int<std::int64_t>(flag, value(), 1, 86'400));
    } else if (flag == "--sae-supply-timeout-ms") {
      cfg.supply_timeout =
          std::chrono::milliseconds(parse_int<std::int64_t>(flag, value(), 1, 600'000));
    } else if (flag == "--sae-max-requests-per-s") {
      cfg.sae_max_requests_per_s =
          static_cast<double>(parse_int<std::int64_t>(flag, value(), 1, 10'000'000));
    } else if (flag == "--sae-max-concurrent") {
      cfg.sae_max_concurrent =
          static_cast<std::size_t>(parse_int<std::int64_t>(flag, value(), 1, 1'000'000));
    } else if (flag == "--sae-max-waiting-bytes") {
      cfg.sae_max_waiting_bytes =
          static_cast<std::size_t>(parse_int<std::int64_t>(flag, value(), 1, INT64_MAX));
    } else if (flag == "--threads") {
      cl.threads = parse_int<unsigned>(flag, value(), 1, 256);
    } else if (flag == "--seed") {
      cfg.seed = parse_int<std::uint64_t>(flag, value(), 0, UINT64_MAX);
    } else {
      throw InvalidArgument("unknown option '" + flag + "' (see --help)");
    }
  }
  if (topology_path.empty()) throw InvalidArgument("--topology FILE is required");
  if (!have_controller) throw InvalidArgument("--controller HOST:PORT is required");
  if (all == !kms.empty()) throw InvalidArgument("give either --km ID (repeatable) or --all");
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
  cfg.topology = southbound::load_topology_file(topology_path);
  if (all) {
    for (const auto& km : cfg.topology.kms) cfg.km_ids.push_back(km.km_id);
  } else {
    cfg.km_ids = kms;
  }
  return cl;
}

}  // namespace qkdn::agent
