#include "qkdn/psk_tls/etsi014_client.hpp"

#include <netdb.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <cctype>
#include <memory>

#include "qkdn/base/error.hpp"
#include "qkdn/json/reader.hpp"
#include "qkdn/net/tls.hpp"
#include "qkdn/psk_tls/socket.hpp"

namespace qkdn::psk_tls {
namespace {

constexpr std::size_t kMaxReply = std::size_t{1} << 20;

std::string openssl_reason() {
  const unsigned long e = ERR_get_error();
  ERR_clear_error();
  if (e == 0) return "connection closed or timed out";
  char buf[256];
  ERR_error_string_n(e, buf, sizeof buf);
  return buf;
}

struct SslCtxFree {
  void operator()(SSL_CTX* c) const noexcept { SSL_CTX_free(c); }
};
struct SslFree {
  void operator()(SSL* s) const noexcept { SSL_free(s); }
};

// One request, "Connection: close", the whole reply read until the server closes (bounded).
std::string round_trip(const Etsi014Endpoint& kme, const std::string& request) {
  const bool tls = !kme.cert_file.empty();
  Socket sock = connect_to(kme.host, kme.port, kme.timeout);
  std::string reply;
  char buf[16384];
  if (!tls) {
    send_all(sock.fd(), request);
    for (;;) {
      const ssize_t n = ::recv(sock.fd(), buf, sizeof buf, 0);
      if (n < 0) throw Unavailable("ETSI 014: reading the reply: timed out or failed");
      if (n == 0) break;
      reply.append(buf, static_cast<std::size_t>(n));
      if (reply.size() > kMaxReply) throw InvalidArgument("ETSI 014: reply larger than 1 MiB");
    }
    return reply;
  }
  std::unique_ptr<SSL_CTX, SslCtxFree> ctx(SSL_CTX_new(TLS_client_method()));
  if (!ctx) throw Internal("TLS: " + openssl_reason());
  SSL_CTX_set_min_proto_version(ctx.get(), TLS1_3_VERSION);
  SSL_CTX_set_options(ctx.get(), SSL_OP_CLEANSE_PLAINTEXT);
  SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER, nullptr);
  if (SSL_CTX_load_verify_locations(ctx.get(), kme.ca_file.c_str(), nullptr) != 1) {
    throw InvalidArgument("--kme-ca '" + kme.ca_file + "': " + openssl_reason());
  }
  if (SSL_CTX_use_certificate_chain_file(ctx.get(), kme.cert_file.c_str()) != 1) {
    throw InvalidArgument("--sae-cert '" + kme.cert_file + "': " + openssl_reason());
  }
  if (SSL_CTX_use_PrivateKey_file(ctx.get(), kme.key_file.c_str(), SSL_FILETYPE_PEM) != 1 ||
      SSL_CTX_check_private_key(ctx.get()) != 1) {
    throw InvalidArgument("--sae-key '" + kme.key_file + "': " + openssl_reason());
  }
  std::unique_ptr<SSL, SslFree> ssl(SSL_new(ctx.get()));
  X509_VERIFY_PARAM* param = SSL_get0_param(ssl.get());
  in6_addr scratch{};
  const bool ip = ::inet_pton(AF_INET, kme.host.c_str(), &scratch) == 1 ||
                  ::inet_pton(AF_INET6, kme.host.c_str(), &scratch) == 1;
  if ((ip ? X509_VERIFY_PARAM_set1_ip_asc(param, kme.host.c_str())
          : X509_VERIFY_PARAM_set1_host(param, kme.host.c_str(), 0)) != 1) {
    throw InvalidArgument("--kme: cannot check the server's name " + kme.host);
  }
  if (!ip) SSL_set_tlsext_host_name(ssl.get(), kme.host.c_str());
  SSL_set_fd(ssl.get(), sock.fd());
  if (SSL_connect(ssl.get()) != 1) {
    throw Unavailable("ETSI 014: TLS handshake with " + kme.host + ": " + openssl_reason());
  }
  // Only an ETSI server certificate may serve keys (a KM's certificate chains to the same CA).
  if (net::peer_identity(ssl.get(), net::PeerRole::kEtsiServer).empty()) {
    throw Unavailable("ETSI 014: the server's certificate is not an ETSI server's");
  }
  std::size_t written = 0;
  if (SSL_write_ex(ssl.get(), request.data(), request.size(), &written) != 1 ||
      written != request.size()) {
    throw Unavailable("ETSI 014: sending the request: " + openssl_reason());
  }
  for (;;) {
    std::size_t n = 0;
    if (SSL_read_ex(ssl.get(), buf, sizeof buf, &n) != 1) {
      const int err = SSL_get_error(ssl.get(), 0);
      if (err == SSL_ERROR_ZERO_RETURN) break;
      // A server that closes without close_notify after a complete reply: the reply is judged by
      // its Content-Length below.
      if (err == SSL_ERROR_SYSCALL && !reply.empty()) break;
      throw Unavailable("ETSI 014: reading the reply: " + openssl_reason());
    }
    reply.append(buf, n);
    if (reply.size() > kMaxReply) throw InvalidArgument("ETSI 014: reply larger than 1 MiB");
  }
  OPENSSL_cleanse(buf, sizeof buf);
  return reply;
}

struct Reply {
  int status = 0;
  std::string body;
};

std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

Reply parse_reply(std::string raw) {
  const auto head_end = raw.find("\r\n\r\n");
  if (raw.compare(0, 9, "HTTP/1.1 ") != 0 || head_end == std::string::npos || raw.size() < 12) {
    throw Unavailable("ETSI 014: the reply is not HTTP/1.1");
  }
  Reply r;
  for (std::size_t i = 9; i < 12; ++i) {
    if (std::isdigit(static_cast<unsigned char>(raw[i])) == 0) {
      throw Unavailable("ETSI 014: the reply has no status code");
    }
    r.status = r.status * 10 + (raw[i] - '0');
  }
  const std::string head = lower(std::string_view(raw).substr(0, head_end));
  if (head.find("\r\ntransfer-encoding:") != std::string::npos) {
    throw Unavailable("ETSI 014: chunked replies are not read by this client");
  }
  r.body = raw.substr(head_end + 4);
  const auto cl = head.find("\r\ncontent-length:");
  if (cl != std::string::npos) {
    const std::size_t length = std::stoul(head.substr(cl + 17));
    if (r.body.size() < length) throw Unavailable("ETSI 014: the reply was cut short");
    r.body.resize(length);
  }
  OPENSSL_cleanse(raw.data(), raw.size());
  return r;
}

[[noreturn]] void refuse_reply(
    std::string message) {  // NOLINT(performance-unnecessary-value-param)
  throw InvalidArgument("ETSI 014 reply: " + message);
}

QkdKey one_key(const Etsi014Endpoint& kme, const std::string& target, unsigned size_bits) {
  std::string request = "GET " + target + " HTTP/1.1\r\nHost: " + kme.host + ":" +
                        std::to_string(kme.port) +
                        "\r\nAccept: application/json\r\nConnection: close\r\n";
  if (kme.cert_file.empty()) request += "X-SAE-ID: " + kme.sae_id + "\r\n";
  request += "\r\n";
  Reply r = parse_reply(round_trip(kme, request));
  struct Wipe {
    std::string& s;
    ~Wipe() { OPENSSL_cleanse(s.data(), s.size()); }
  } wipe{r.body};
  const auto body = json::parse_object(r.body, "the reply", {}, refuse_reply);
  if (r.status != 200) {
    const auto* m = body.if_contains("message");
    const std::string why = m != nullptr && m->is_string() ? std::string(m->as_string()) : "";
    const std::string text =
        "ETSI 014: the KM answered " + std::to_string(r.status) + (why.empty() ? "" : ": " + why);
    if (r.status == 503) throw Unavailable(text);
    throw InvalidArgument(text);
  }
  json::ObjectReader reader(body, {}, refuse_reply);
  const auto* keys = reader.opt_array("keys");
  if (keys == nullptr || keys->size() != 1 || !(*keys)[0].is_object()) {
    throw InvalidArgument("ETSI 014 reply: expected a Key container with one key");
  }
  json::ObjectReader key(keys->at(0).as_object(), "keys[0]", refuse_reply);
  QkdKey out;
  out.key_id = key.string("key_ID");
  const std::string b64 = key.string("key");
  if (!is_uuid(out.key_id)) throw InvalidArgument("ETSI 014 reply: key_ID is not a UUID");
  out.key.resize(b64.size() / 4 * 3 + 3);
  const int n = EVP_DecodeBlock(out.key.data(), reinterpret_cast<const unsigned char*>(b64.data()),
                                static_cast<int>(b64.size()));
  if (n < 0 || b64.size() % 4 != 0) throw InvalidArgument("ETSI 014 reply: key is not base64");
  std::size_t len = static_cast<std::size_t>(n);
  if (!b64.empty() && b64.back() == '=') --len;
  if (b64.size() >= 2 && b64[b64.size() - 2] == '=') --len;
  out.key.resize(len);
  if (size_bits != 0 && len * 8 != size_bits) {
    throw InvalidArgument("ETSI 014 reply: key of " + std::to_string(len * 8) + " bits, asked " +
                          std::to_string(size_bits));
  }
  return out;
}

}  // namespace

bool is_uuid(std::string_view t) noexcept {
  if (t.size() != 36) return false;
  for (std::size_t i = 0; i < t.size(); ++i) {
    const bool dash = i == 8 || i == 13 || i == 18 || i == 23;
    if (dash != (t[i] == '-')) return false;
    if (!dash && std::isxdigit(static_cast<unsigned char>(t[i])) == 0) return false;
  }
  return true;
}

QkdKey get_enc_key(const Etsi014Endpoint& kme, std::string_view slave_sae_id, unsigned size_bits) {
  return one_key(kme,
                 "/api/v1/keys/" + std::string(slave_sae_id) +
                     "/enc_keys?number=1&size=" + std::to_string(size_bits),
                 size_bits);
}

QkdKey get_dec_key(const Etsi014Endpoint& kme, std::string_view master_sae_id,
                   std::string_view key_id) {
  if (!is_uuid(key_id)) throw InvalidArgument("key_ID '" + std::string(key_id) + "' is not a UUID");
  return one_key(
      kme, "/api/v1/keys/" + std::string(master_sae_id) + "/dec_keys?key_ID=" + std::string(key_id),
      0);
}

}  // namespace qkdn::psk_tls
