// TLS 1.3 contexts and certificate identities for Ck (ck-protocol.md clause 1).
#include <fstream>
#include <memory>
#include <string>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "qkdn/controller/error.hpp"
#include "qkdn/southbound/ck_channel.hpp"

namespace qkdn::southbound {
namespace {

constexpr std::string_view kKmUriPrefix = "urn:qkdn:km:";

// The reason OpenSSL gives for the most recent failure, or the system error text.
std::string ssl_reason(const boost::system::error_code& ec) {
  unsigned long e = ERR_peek_last_error();
  ERR_clear_error();
  if (e != 0) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    return buf;
  }
  return ec.message();
}

void require_readable(const std::string& path, std::string_view what) {
  if (path.empty()) throw InvalidArgument(std::string(what) + ": no file given");
  std::ifstream in(path);
  if (!in) throw InvalidArgument(std::string(what) + " '" + path + "': cannot be read");
}

}  // namespace

std::string certificate_identity(X509* cert) {
  if (cert == nullptr) return {};
  auto* names =
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr));
  std::string id;
  if (names != nullptr) {
    for (int i = 0; i < sk_GENERAL_NAME_num(names) && id.empty(); ++i) {
      const GENERAL_NAME* n = sk_GENERAL_NAME_value(names, i);
      if (n->type != GEN_URI) continue;
      const auto* uri = n->d.uniformResourceIdentifier;
      std::string_view text(reinterpret_cast<const char*>(ASN1_STRING_get0_data(uri)),
                            static_cast<std::size_t>(ASN1_STRING_length(uri)));
      if (text.starts_with(kKmUriPrefix) && text.size() > kKmUriPrefix.size()) {
        id = std::string(text.substr(kKmUriPrefix.size()));
      }
    }
    GENERAL_NAMES_free(names);
  }
  if (!id.empty()) return id;
  X509_NAME* subject = X509_get_subject_name(cert);
  const int idx = X509_NAME_get_index_by_NID(subject, NID_commonName, -1);
  if (idx < 0) return {};
  ASN1_STRING* cn = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, idx));
  unsigned char* utf8 = nullptr;
  const int len = ASN1_STRING_to_UTF8(&utf8, cn);
  if (len < 0) return {};
  std::string out(reinterpret_cast<const char*>(utf8), static_cast<std::size_t>(len));
  OPENSSL_free(utf8);
  return out;
}

std::unique_ptr<net::ssl::context> make_tls_context(const TlsFiles& files, bool server) {
  require_readable(files.ca_file, "TLS CA file");
  require_readable(files.cert_file, "TLS certificate file");
  require_readable(files.key_file, "TLS key file");

  auto ctx = std::make_unique<net::ssl::context>(server ? net::ssl::context::tls_server
                                                        : net::ssl::context::tls_client);
  SSL_CTX* native = ctx->native_handle();
  if (SSL_CTX_set_min_proto_version(native, TLS1_3_VERSION) != 1 ||
      SSL_CTX_set_max_proto_version(native, TLS1_3_VERSION) != 1) {
    throw Internal("TLS: this OpenSSL cannot restrict connections to TLS 1.3");
  }
  ctx->set_options(net::ssl::context::default_workarounds | net::ssl::context::no_compression |
                   net::ssl::context::single_dh_use);

  boost::system::error_code ec;
  ctx->load_verify_file(files.ca_file, ec);
  if (ec) {
    throw InvalidArgument("TLS CA file '" + files.ca_file + "': " + ssl_reason(ec));
  }
  ctx->use_certificate_chain_file(files.cert_file, ec);
  if (ec) {
    throw InvalidArgument("TLS certificate file '" + files.cert_file + "': " + ssl_reason(ec));
  }
  ctx->use_private_key_file(files.key_file, net::ssl::context::pem, ec);
  if (ec) {
    throw InvalidArgument("TLS key file '" + files.key_file + "': " + ssl_reason(ec));
  }
  if (SSL_CTX_check_private_key(native) != 1) {
    ERR_clear_error();
    throw InvalidArgument("TLS key file '" + files.key_file + "' does not match certificate '" +
                          files.cert_file + "'");
  }
  // Mutual authentication: both ends present a certificate chained to the configured CA.
  ctx->set_verify_mode(net::ssl::verify_peer | net::ssl::verify_fail_if_no_peer_cert);
  return ctx;
}

}  // namespace qkdn::southbound
