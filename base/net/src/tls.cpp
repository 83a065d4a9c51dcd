// TLS contexts and certificate role identities: see qkdn/net/tls.hpp.
#include "qkdn/net/tls.hpp"

#include <array>
#include <fstream>
#include <optional>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "qkdn/base/error.hpp"

namespace qkdn::net {
namespace {

namespace ssl = boost::asio::ssl;
constexpr std::string_view kQkdnUri = "urn:qkdn:";

// The reason OpenSSL gives for the most recent failure, else the system error text.
std::string ssl_reason(const boost::system::error_code& ec) {
  const unsigned long e = ERR_peek_last_error();
  ERR_clear_error();
  if (e != 0) {
    std::array<char, 256> buf{};
    ERR_error_string_n(e, buf.data(), buf.size());
    return buf.data();
  }
  return ec.message();
}

void require_readable(const std::string& path, const std::string& label) {
  if (path.empty()) throw InvalidArgument(label + ": no file given");
  std::ifstream in(path);
  if (!in) throw InvalidArgument(label + " '" + path + "': cannot be read");
}

std::string subject_cn(X509* cert) {
  X509_NAME* subject = X509_get_subject_name(cert);
  const int idx = X509_NAME_get_index_by_NID(subject, NID_commonName, -1);
  if (idx < 0) return {};
  unsigned char* utf8 = nullptr;
  const int len =
      ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, idx)));
  if (len < 0) return {};
  std::string out(reinterpret_cast<const char*>(utf8), static_cast<std::size_t>(len));
  OPENSSL_free(utf8);
  return out;
}

}  // namespace

std::string_view role_uri_prefix(PeerRole role) noexcept {
  switch (role) {
    case PeerRole::kController:
      return "urn:qkdn:controller:";
    case PeerRole::kKm:
      return "urn:qkdn:km:";
    case PeerRole::kSae:
      return "urn:qkdn:sae:";
    case PeerRole::kEtsiServer:
      return "urn:qkdn:etsi:";
  }
  return "urn:qkdn:?:";
}

std::string_view role_name(PeerRole role) noexcept {
  switch (role) {
    case PeerRole::kController:
      return "controller";
    case PeerRole::kKm:
      return "KM";
    case PeerRole::kSae:
      return "SAE";
    case PeerRole::kEtsiServer:
      return "ETSI server";
  }
  return "?";
}

std::string certificate_identity(X509* cert, PeerRole role) {
  if (cert == nullptr) return {};
  const std::string_view prefix = role_uri_prefix(role);
  std::optional<std::string> id;
  bool ambiguous = false;
  bool any_role_uri = false;  // a urn:qkdn: URI of any role
  if (auto* names = static_cast<GENERAL_NAMES*>(
          X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr))) {
    for (int i = 0; i < sk_GENERAL_NAME_num(names); ++i) {
      const GENERAL_NAME* n = sk_GENERAL_NAME_value(names, i);
      if (n->type != GEN_URI) continue;
      const auto* uri = n->d.uniformResourceIdentifier;
      const std::string_view text(reinterpret_cast<const char*>(ASN1_STRING_get0_data(uri)),
                                  static_cast<std::size_t>(ASN1_STRING_length(uri)));
      if (text.starts_with(kQkdnUri)) any_role_uri = true;
      if (!text.starts_with(prefix) || text.size() == prefix.size()) continue;
      std::string value(text.substr(prefix.size()));
      if (id && *id != value) ambiguous = true;
      id = std::move(value);
    }
    GENERAL_NAMES_free(names);
  }
  if (ambiguous) return {};
  if (id) return *id;
  // A certificate that names a role by URI is that role only. One without any role URI may
  // still name a KM by its CN (ck-protocol.md clause 1: third-party KM certificates).
  if (role == PeerRole::kKm && !any_role_uri) return subject_cn(cert);
  return {};
}

std::string peer_identity(SSL* ssl, PeerRole role) {
  if (ssl == nullptr || SSL_get_verify_result(ssl) != X509_V_OK) return {};
  std::unique_ptr<X509, decltype(&X509_free)> cert(SSL_get1_peer_certificate(ssl), &X509_free);
  return certificate_identity(cert.get(), role);
}

std::unique_ptr<ssl::context> make_tls_context(const TlsFiles& files, const TlsSettings& s) {
  if (s.verify_peer) require_readable(files.ca_file, s.ca_label);
  require_readable(files.cert_file, s.cert_label);
  require_readable(files.key_file, s.key_label);

  auto ctx = std::make_unique<ssl::context>(s.server ? ssl::context::tls_server
                                                     : ssl::context::tls_client);
  SSL_CTX* native = ctx->native_handle();
  if (SSL_CTX_set_min_proto_version(native, s.tls13_only ? TLS1_3_VERSION : TLS1_2_VERSION) != 1 ||
      (s.tls13_only && SSL_CTX_set_max_proto_version(native, TLS1_3_VERSION) != 1)) {
    throw Internal("TLS: this OpenSSL cannot restrict the protocol versions");
  }
  ctx->set_options(ssl::context::default_workarounds | ssl::context::no_compression |
                   ssl::context::single_dh_use);
  // Plaintext records (Keys frames, ETSI key containers, tokens) are wiped once consumed.
  SSL_CTX_set_options(native, SSL_OP_CLEANSE_PLAINTEXT | SSL_OP_NO_RENEGOTIATION);
  if (s.strongest_groups && SSL_CTX_set1_groups_list(native, strongest_groups().c_str()) != 1) {
    ERR_clear_error();
    throw Internal("TLS: cannot select the key-exchange groups " + strongest_groups());
  }

  boost::system::error_code ec;
  if (s.verify_peer) {
    ctx->load_verify_file(files.ca_file, ec);
    if (ec) throw InvalidArgument(s.ca_label + " '" + files.ca_file + "': " + ssl_reason(ec));
  }
  ctx->use_certificate_chain_file(files.cert_file, ec);
  if (ec) throw InvalidArgument(s.cert_label + " '" + files.cert_file + "': " + ssl_reason(ec));
  ctx->use_private_key_file(files.key_file, ssl::context::pem, ec);
  if (ec) throw InvalidArgument(s.key_label + " '" + files.key_file + "': " + ssl_reason(ec));
  if (SSL_CTX_check_private_key(native) != 1) {
    ERR_clear_error();
    throw InvalidArgument(s.key_label + " '" + files.key_file + "' does not match " + s.cert_label +
                          " '" + files.cert_file + "'");
  }
  if (s.verify_peer) {
    // Mutual authentication: the peer presents a certificate chained to the configured CA.
    ctx->set_verify_mode(ssl::verify_peer | ssl::verify_fail_if_no_peer_cert);
  } else {
    ctx->set_verify_mode(ssl::verify_none);
  }
  return ctx;
}

const std::string& strongest_groups() {
  static const std::string groups = [] {
    // Strongest first. Names this OpenSSL does not know are left out (each is tried alone on a
    // scratch context): the post-quantum hybrids exist from OpenSSL 3.5 on.
    static constexpr std::array<const char*, 5> kCandidates = {
        "SecP384r1MLKEM1024", "X25519MLKEM768", "X448", "P-521", "P-384"};
    std::string out;
    std::unique_ptr<SSL_CTX, decltype(&SSL_CTX_free)> scratch(SSL_CTX_new(TLS_method()),
                                                              &SSL_CTX_free);
    for (const char* g : kCandidates) {
      if (scratch && SSL_CTX_set1_groups_list(scratch.get(), g) == 1) {
        if (!out.empty()) out += ':';
        out += g;
      }
    }
    ERR_clear_error();
    return out.empty() ? std::string("P-384") : out;
  }();
  return groups;
}

}  // namespace qkdn::net
