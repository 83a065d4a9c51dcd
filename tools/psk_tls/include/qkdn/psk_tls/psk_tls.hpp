// TLS 1.3 keyed by a QKD key (draft TR.QKDN-nq 7.1, 8.1.1: vertical integration): the key an SAE
// fetched through ETSI GS QKD 014 is the TLS external pre-shared key, its key_ID the PSK identity,
// so two applications authenticate each other and agree on traffic keys with no certificate and
// no public-key signature.
//
// Key exchange modes (RFC 8446 4.2.9):
//   kPskOnly  psk_ke: the traffic keys derive from the QKD key alone; no public-key cryptography
//             at all. Forward secrecy comes from using each QKD key once.
//   kPskDhe   psk_dhe_ke: the QKD key mixed with an ephemeral (EC)DH share over the strongest
//             groups this OpenSSL offers (qkdn::net::strongest_groups(): X448, P-521, P-384 on
//             OpenSSL 3.0; a hybrid post-quantum group first when OpenSSL provides one), so an
//             attacker must break both the key exchange and the QKD key.
// Both ends must use the same mode; a handshake that ends in the other mode is refused.
// The cipher suite is TLS_AES_256_GCM_SHA384 on both ends. OpenSSL writes to the socket with
// write(2): the process must ignore SIGPIPE (the tool's main does).
#pragma once

#include <string>
#include <string_view>

#include <openssl/ssl.h>

#include "qkdn/psk_tls/etsi014_client.hpp"

namespace qkdn::psk_tls {

enum class Kex { kPskOnly, kPskDhe };

/// "psk_ke" or "psk_dhe_ke".
std::string_view kex_name(Kex kex) noexcept;
/// Parses "psk_ke" or "psk_dhe_ke"; throws InvalidArgument otherwise.
Kex parse_kex(std::string_view text);

/// What a finished handshake used.
struct Handshake {
  std::string key_id;  ///< the PSK identity (the QKD key's key_ID)
  Kex kex = Kex::kPskOnly;
  std::string group;   ///< the (EC)DH group of psk_dhe_ke; empty for psk_ke
  std::string cipher;  ///< "TLS_AES_256_GCM_SHA384"
};

/// Gives the server the key of a PSK identity (fetching it from its KM with dec_keys); throws
/// to refuse the identity.
using KeyLookup = QkdKey (*)(void* context, std::string_view key_id);

/// A client or server context for one mode (TLS 1.3 only, no certificates). Throws Internal when
/// OpenSSL refuses the settings.
SSL_CTX* make_context(bool server, Kex kex);

/// Runs the client handshake on connected socket `fd` with `key` as the PSK. Returns the
/// connection (the caller frees it) or throws Unavailable with the reason.
SSL* client_handshake(SSL_CTX* ctx, int fd, const QkdKey& key, Kex kex, Handshake& out);

/// Runs the server handshake on accepted socket `fd`; `lookup(context, identity)` supplies the
/// key of the identity the client offers. Returns the connection or throws Unavailable.
SSL* server_handshake(SSL_CTX* ctx, int fd, Kex kex, KeyLookup lookup, void* context,
                      Handshake& out);

/// Writes `text` and a newline on `ssl`; reads one line (at most `max_bytes`) back.
void write_line(SSL* ssl, std::string_view text);
std::string read_line(SSL* ssl, std::size_t max_bytes);

}  // namespace qkdn::psk_tls
