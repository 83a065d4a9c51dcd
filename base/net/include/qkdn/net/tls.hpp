// TLS contexts and certificate identities shared by every TLS endpoint of the project: Ck
// (controller and KMs), KMA links between KMs, the agent's ETSI GS QKD 014 listener and the
// northbound API. Include only from translation units that need Asio and OpenSSL.
//
// Certificate roles. Each role has its own SAN URI scheme, so that a certificate issued for one
// role cannot pass as another (scripts/dev-ca.sh issues them):
//   controller  urn:qkdn:controller:<id>   EKU serverAuth
//   KM          urn:qkdn:km:<id>           EKU serverAuth, clientAuth (Ck client, KMA both ways)
//   SAE         urn:qkdn:sae:<id>          EKU clientAuth
//   ETSI server urn:qkdn:etsi:<name>       EKU serverAuth
// OpenSSL's default purpose check refuses a peer whose EKU lacks the direction it is used in
// (a client-only certificate as a server and the reverse). A certificate that carries a role URI
// (any urn:qkdn: SAN URI) is that role only: its CN is ignored. The subject CN names a KM only in
// a certificate without any role URI (ck-protocol.md clause 1 allows third-party KM certificates
// named by CN); no other role falls back to the CN.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include <openssl/ssl.h>
#include <boost/asio/ssl/context.hpp>

namespace qkdn::net {

/// The role a certificate is issued for (see the file comment).
enum class PeerRole { kController, kKm, kSae, kEtsiServer };

/// "urn:qkdn:controller:", "urn:qkdn:km:", "urn:qkdn:sae:" or "urn:qkdn:etsi:".
std::string_view role_uri_prefix(PeerRole role) noexcept;
/// "controller", "KM", "SAE" or "ETSI server" (for messages).
std::string_view role_name(PeerRole role) noexcept;

/// The ID a certificate names for `role`: the <id> of its SAN URI urn:qkdn:<role>:<id>; for
/// kKm, the subject CN when the certificate carries no urn:qkdn: URI at all. Empty when there is
/// none, or when the certificate names two different IDs for the role. Does not take ownership.
std::string certificate_identity(X509* cert, PeerRole role);

/// The identity (as above) of the verified peer of a finished handshake; empty when the peer
/// sent no certificate or its verification failed.
std::string peer_identity(SSL* ssl, PeerRole role);

/// PEM files of one endpoint.
struct TlsFiles {
  std::string ca_file;    ///< CA bundle verifying the peer (may be empty without verify_peer)
  std::string cert_file;  ///< our certificate chain
  std::string key_file;   ///< our private key
};

/// How make_tls_context configures a context.
struct TlsSettings {
  bool server = false;
  bool tls13_only = true;         ///< false: TLS 1.2 or newer
  bool verify_peer = true;        ///< require a peer certificate chained to ca_file (mutual TLS)
  bool strongest_groups = false;  ///< key exchange only over strongest_groups()
  /// Names of the three files in error messages (e.g. "--etsi-cert").
  std::string ca_label = "TLS CA file";
  std::string cert_label = "TLS certificate file";
  std::string key_label = "TLS key file";
};

/// A context with our certificate and key loaded. Every context sets SSL_OP_CLEANSE_PLAINTEXT
/// (OpenSSL wipes its plaintext record buffers once they are consumed: key bytes travel on KMA
/// links and ETSI responses) and refuses compression. Throws InvalidArgument naming the file (by
/// its label) that is missing, unreadable, malformed, or a key that does not match its
/// certificate.
std::unique_ptr<boost::asio::ssl::context> make_tls_context(const TlsFiles& files,
                                                            const TlsSettings& settings);

/// The key-exchange groups `strongest_groups` selects, strongest first, as an OpenSSL group list:
/// the hybrid post-quantum groups this OpenSSL offers (3.5 and later), then X448, P-521 and
/// P-384. Computed once by asking the linked OpenSSL.
const std::string& strongest_groups();

}  // namespace qkdn::net
