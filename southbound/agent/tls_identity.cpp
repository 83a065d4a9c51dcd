#include "tls_identity.hpp"

#include <array>
#include <memory>
#include <string_view>

#include <openssl/x509v3.h>

namespace qkdn::agent {

std::string peer_km_identity(SSL* ssl) {
  if (ssl == nullptr || SSL_get_verify_result(ssl) != X509_V_OK) return {};
  std::unique_ptr<X509, decltype(&X509_free)> cert(SSL_get1_peer_certificate(ssl), &X509_free);
  if (!cert) return {};
  constexpr std::string_view kPrefix = "urn:qkdn:km:";
  auto* names = static_cast<GENERAL_NAMES*>(
      X509_get_ext_d2i(cert.get(), NID_subject_alt_name, nullptr, nullptr));
  std::string id;
  if (names != nullptr) {
    for (int i = 0; i < sk_GENERAL_NAME_num(names) && id.empty(); ++i) {
      const GENERAL_NAME* n = sk_GENERAL_NAME_value(names, i);
      if (n->type != GEN_URI) continue;
      const auto* data = ASN1_STRING_get0_data(n->d.uniformResourceIdentifier);
      const std::string_view uri(
          reinterpret_cast<const char*>(data),
          static_cast<std::size_t>(ASN1_STRING_length(n->d.uniformResourceIdentifier)));
      if (uri.starts_with(kPrefix)) id = std::string(uri.substr(kPrefix.size()));
    }
    GENERAL_NAMES_free(names);
  }
  if (!id.empty()) return id;
  std::array<char, 256> cn{};
  const int len = X509_NAME_get_text_by_NID(X509_get_subject_name(cert.get()), NID_commonName,
                                            cn.data(), static_cast<int>(cn.size()));
  if (len <= 0) return {};
  return std::string(cn.data(), static_cast<std::size_t>(len));
}

}  // namespace qkdn::agent
