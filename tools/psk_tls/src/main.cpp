// qkdn-psk-tls: two applications talk over TLS 1.3 keyed by a QKD key (draft TR.QKDN-nq 7.1,
// 8.1.1; docs/hybrid.md). The client fetches a key shared with the server's SAE from its own KM
// (ETSI GS QKD 014 enc_keys) and offers its key_ID as the PSK identity; the server fetches the same
// key by that ID from its KM (dec_keys). Neither end has a certificate on this channel.
//
//   qkdn-psk-tls server --kme HOST:PORT --sae-id SAE_B --peer-sae SAE_A [--count 1] ...
//   qkdn-psk-tls client --kme HOST:PORT --sae-id SAE_A --peer-sae SAE_B --connect HOST:PORT
//                       --message TEXT ...
#include <openssl/ssl.h>

#include <cctype>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "qkdn/base/args.hpp"
#include "qkdn/base/error.hpp"
#include "qkdn/controller/build_info.hpp"
#include "qkdn/psk_tls/etsi014_client.hpp"
#include "qkdn/psk_tls/psk_tls.hpp"
#include "qkdn/psk_tls/socket.hpp"

namespace {

using qkdn::InvalidArgument;
namespace pt = qkdn::psk_tls;

constexpr std::size_t kMaxLine = std::size_t{64} << 10;

struct Options {
  std::string mode;  // "client" or "server"
  pt::Etsi014Endpoint kme;
  std::string peer_sae;
  pt::Kex kex = pt::Kex::kPskOnly;
  unsigned key_bits = 256;
  std::optional<qkdn::base::HostPort> connect;
  qkdn::base::HostPort listen{"127.0.0.1", 0};
  std::string port_file;
  std::string message;
  std::int64_t count = 0;
};

struct CtxFree {
  void operator()(SSL_CTX* c) const noexcept { SSL_CTX_free(c); }
};
struct SslFree {
  void operator()(SSL* s) const noexcept {
    SSL_shutdown(s);
    SSL_free(s);
  }
};

void print_handshake(const pt::Handshake& h) {
  std::cout << "handshake: key_ID=" << h.key_id << " kex=" << pt::kex_name(h.kex)
            << (h.group.empty() ? "" : " group=" + h.group) << " cipher=" << h.cipher << std::endl;
}

pt::QkdKey lookup_key(void* context, std::string_view key_id) {
  const auto* o = static_cast<const Options*>(context);
  return pt::get_dec_key(o->kme, o->peer_sae, key_id);
}

int run_client(const Options& o) {
  pt::QkdKey key = pt::get_enc_key(o.kme, o.peer_sae, o.key_bits);
  std::cerr << "qkdn-psk-tls: key " << key.key_id << " from " << o.kme.host << ":" << o.kme.port
            << std::endl;
  std::unique_ptr<SSL_CTX, CtxFree> ctx(pt::make_context(false, o.kex));
  pt::Socket sock = pt::connect_to(o.connect->host, o.connect->port, o.kme.timeout);
  pt::Handshake h;
  std::unique_ptr<SSL, SslFree> ssl(pt::client_handshake(ctx.get(), sock.fd(), key, o.kex, h));
  print_handshake(h);
  pt::write_line(ssl.get(), o.message);
  std::cout << "received: " << pt::read_line(ssl.get(), kMaxLine) << std::endl;
  return 0;
}

int run_server(const Options& o) {
  std::unique_ptr<SSL_CTX, CtxFree> ctx(pt::make_context(true, o.kex));
  const pt::Socket listener = pt::listen_on(o.listen.host, o.listen.port);
  const auto port = pt::local_port(listener);
  std::cerr << "qkdn-psk-tls: listening on " << o.listen.host << ":" << port << std::endl;
  if (!o.port_file.empty()) {
    const std::string tmp = o.port_file + ".tmp";
    std::ofstream(tmp) << port << "\n";
    if (std::rename(tmp.c_str(), o.port_file.c_str()) != 0) {
      throw InvalidArgument("--port-file '" + o.port_file + "': cannot write");
    }
  }
  int failures = 0;
  for (std::int64_t served = 0; o.count == 0 || served < o.count; ++served) {
    pt::Socket conn = pt::accept_one(listener, o.kme.timeout);
    try {
      pt::Handshake h;
      std::unique_ptr<SSL, SslFree> ssl(pt::server_handshake(
          ctx.get(), conn.fd(), o.kex, lookup_key, const_cast<Options*>(&o), h));
      print_handshake(h);
      const std::string line = pt::read_line(ssl.get(), kMaxLine);
      std::cout << "received: " << line << std::endl;
      pt::write_line(ssl.get(), o.message.empty() ? "echo: " + line : o.message);
    } catch (const qkdn::Error& e) {
      ++failures;
      std::cout << "refused: " << e.what() << std::endl;
    }
  }
  return failures == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  // A peer that closes while we write must give an error, not kill the process.
  std::signal(SIGPIPE, SIG_IGN);
  Options o;
  std::string ca;
  std::string cert;
  std::string key;
  qkdn::base::ArgParser args("qkdn-psk-tls");
  args.section("Key source (the SAE's own KM, ETSI GS QKD 014)")
      .option("kme", "HOST:PORT", "the KM's ETSI 014 listener (required)",
              [&](std::string_view v) {
                const auto hp = qkdn::base::parse_host_port("--kme", v);
                o.kme.host = hp.host;
                o.kme.port = hp.port;
              })
      .option("kme-ca", "FILE", "CA bundle that verifies the KM's ETSI server certificate",
              [&](std::string_view v) { ca = v; })
      .option("sae-cert", "FILE", "this SAE's client certificate (mutual TLS with the KM)",
              [&](std::string_view v) { cert = v; })
      .option("sae-key", "FILE", "this SAE's private key", [&](std::string_view v) { key = v; })
      .option("sae-id", "ID", "this SAE's ID (required; sent as X-SAE-ID without certificates)",
              [&](std::string_view v) { o.kme.sae_id = v; })
      .option("peer-sae", "ID", "the other application's SAE ID (required)",
              [&](std::string_view v) { o.peer_sae = v; })
      .option("key-bits", "N", "QKD key size in bits for the PSK (128..4096, default 256)",
              [&](std::string_view v) {
                o.key_bits =
                    static_cast<unsigned>(qkdn::base::parse_int("--key-bits", v, 128, 4096));
                if (o.key_bits % 8 != 0) throw InvalidArgument("--key-bits: a multiple of 8");
              })
      .section("TLS 1.3 with the QKD key as external PSK")
      .option("kex", "MODE",
              "psk_ke (QKD key only, default) or psk_dhe_ke (mixed with an (EC)DHE share); "
              "both ends must agree",
              [&](std::string_view v) { o.kex = pt::parse_kex(v); })
      .option("connect", "HOST:PORT", "client: the server to reach",
              [&](std::string_view v) { o.connect = qkdn::base::parse_host_port("--connect", v); })
      .option("listen", "HOST:PORT", "server: where to listen (default 127.0.0.1:0)",
              [&](std::string_view v) { o.listen = qkdn::base::parse_host_port("--listen", v); })
      .option("port-file", "FILE", "server: write the port listened on here",
              [&](std::string_view v) { o.port_file = v; })
      .option("message", "TEXT", "client: the line to send; server: the reply (default: echo)",
              [&](std::string_view v) { o.message = v; })
      .option(
          "count", "N", "server: connections to serve, then exit (default 0: forever)",
          [&](std::string_view v) { o.count = qkdn::base::parse_int("--count", v, 0, 1000000); })
      .option("timeout-ms", "MS", "bound on every connect, read and write (default 10000)",
              [&](std::string_view v) { o.kme.timeout = qkdn::base::parse_ms("--timeout-ms", v); })
      .positionals([&](std::string_view v) {
        if (!o.mode.empty()) throw InvalidArgument("unexpected argument '" + std::string(v) + "'");
        if (v != "client" && v != "server") {
          throw InvalidArgument("expected the mode 'client' or 'server', got '" + std::string(v) +
                                "'");
        }
        o.mode = v;
      });
  try {
    const auto parsed = args.parse(argc, argv);
    if (parsed == qkdn::base::ArgParser::Result::kHelp) {
      std::cout << "usage: qkdn-psk-tls client|server [options]\n\n"
                   "TLS 1.3 between two applications keyed by a QKD key from ETSI GS QKD 014.\n\n"
                << args.help();
      return 0;
    }
    if (parsed == qkdn::base::ArgParser::Result::kVersion) {
      std::cout << "qkdn-psk-tls " << qkdn::build_version() << " (revision "
                << qkdn::build_revision() << ", " << OpenSSL_version(OPENSSL_VERSION) << ")\n";
      return 0;
    }
    if (o.mode.empty()) throw InvalidArgument("expected the mode 'client' or 'server'");
    if (o.kme.host.empty() && o.kme.port == 0) throw InvalidArgument("--kme is required");
    if (o.kme.sae_id.empty()) throw InvalidArgument("--sae-id is required");
    if (o.peer_sae.empty()) throw InvalidArgument("--peer-sae is required");
    for (const std::string* id : {&o.kme.sae_id, &o.peer_sae}) {
      for (char c : *id) {
        if (std::isalnum(static_cast<unsigned char>(c)) == 0 && c != '-' && c != '_' && c != '.') {
          throw InvalidArgument("SAE ID '" + *id + "': letters, digits, '-', '_' and '.' only");
        }
      }
    }
    const int given = int{!ca.empty()} + int{!cert.empty()} + int{!key.empty()};
    if (given != 0 && given != 3) {
      throw InvalidArgument("--kme-ca, --sae-cert and --sae-key go together");
    }
    o.kme.ca_file = ca;
    o.kme.cert_file = cert;
    o.kme.key_file = key;
    if (o.mode == "client" && (!o.connect || o.message.empty())) {
      throw InvalidArgument("client: --connect and --message are required");
    }
  } catch (const InvalidArgument& e) {
    std::cerr << "qkdn-psk-tls: " << e.what() << " (see --help)\n";
    return 2;
  }
  try {
    return o.mode == "client" ? run_client(o) : run_server(o);
  } catch (const qkdn::Error& e) {
    std::cerr << "qkdn-psk-tls: " << e.what() << "\n";
    return 1;
  }
}
