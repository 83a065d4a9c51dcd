// Identity of a TLS peer on a KMA link (the same rule as CkChannel::peer_identity).
#pragma once

#include <string>

#include <openssl/ssl.h>

namespace qkdn::agent {

/// The `<id>` of a SAN URI `urn:qkdn:km:<id>` of the verified peer certificate, else its subject
/// CN; empty when there is no verified peer certificate.
std::string peer_km_identity(SSL* ssl);

}  // namespace qkdn::agent
