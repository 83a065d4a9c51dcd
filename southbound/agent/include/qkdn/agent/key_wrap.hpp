// Keys wrapped to an SAE's X.509 certificate (issue 19, draft TR.QKDN-nq 7.3 and 8.1.2: the
// originator in the KM layer; docs/hybrid.md "Keys for an SAE outside every trusted node").
//
// For an SAE outside every trusted node the KM hands out ETSI 014 keys only wrapped to the public
// key of that SAE's certificate, configured at the KM (--outside-sae SAE=CERT). Construction
// (alg "ECDH-ES+HKDF-SHA256+A256KWP"), per response:
//
//   (e, E)  an ephemeral key pair on the certificate key's curve (P-256, P-384, P-521, X25519,
//           X448); Z = ECDH(e, recipient public key), the raw shared secret
//   for each key K_i with key_ID_i:
//     KEK_i = HKDF-SHA256(salt = "qkdn-wrap-v1", IKM = Z,
//                         info = "qkdn-wrap-v1" 0x00 alg 0x00 key_ID_i 0x00 master_SAE 0x00
//                                slave_SAE 0x00 SHA-256(SPKI(E)) || SHA-256(SPKI(recipient)),
//                         L = 32)
//     W_i   = AES-256 key wrap with padding (RFC 5649) of K_i under KEK_i
//
// SPKI(x) is the DER SubjectPublicKeyInfo of x. The ephemeral private key and every derived
// secret live only for the call, in wiped key memory.
#pragma once

#include <cstdint>
#include <ctime>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "qkdn/agent/secure_memory.hpp"

namespace qkdn::agent::wrap {

inline constexpr std::string_view kAlg = "ECDH-ES+HKDF-SHA256+A256KWP";
inline constexpr std::string_view kLabel = "qkdn-wrap-v1";

/// The certificate of an SAE outside every trusted node, validated (see load_recipient).
struct Recipient {
  std::string sae_id;
  std::string cert_file;
  std::string curve;               ///< "P-256", "P-384", "P-521", "X25519" or "X448"
  std::vector<std::uint8_t> spki;  ///< the certificate's public key, DER SPKI
  std::string cert_sha256;         ///< hex SHA-256 of the certificate (DER)
  std::string subject;             ///< one line, for messages
  std::time_t not_before = 0;
  std::time_t not_after = 0;
};

/// Reads and validates the PEM certificate `cert_file` of `sae_id` at time `now`: an X.509
/// certificate whose key is EC on P-256/P-384/P-521 or X25519/X448, valid at `now`, naming
/// `sae_id` if it names an SAE at all (SAN URI urn:qkdn:sae:<id>), and, when `ca_file` is not
/// empty, verifying against that CA bundle. Throws InvalidArgument with one clear line otherwise.
Recipient load_recipient(const std::string& sae_id, const std::string& cert_file,
                         const std::string& ca_file, std::time_t now);

/// "" when `r` is valid at `now`, else why not (expired, not yet valid).
std::string validity_error(const Recipient& r, std::time_t now);

/// One key to wrap (borrowed).
struct PlainRef {
  std::string_view key_id;
  std::span<const std::uint8_t> bytes;
};

struct WrappedKey {
  std::string key_id;
  std::vector<std::uint8_t> wrapped;  ///< RFC 5649 output (8 bytes longer than the padded key)
};

struct Wrapped {
  std::string curve;
  std::vector<std::uint8_t> epk;  ///< the ephemeral public key, DER SPKI
  std::vector<WrappedKey> keys;
};

/// Wraps `keys` (ETSI keys between `master_sae` and `slave_sae`) to the public key `r.spki`.
/// Throws std::runtime_error when OpenSSL fails.
Wrapped wrap_keys(const Recipient& r, std::string_view master_sae, std::string_view slave_sae,
                  std::span<const PlainRef> keys);

/// The ETSI 014 extension's answer (docs/hybrid.md): {"wrapping": {...}, "keys": [{"key_ID",
/// "wrapped_key"}]}.
std::string wrapped_json(const Recipient& r, std::string_view master_sae,
                         std::string_view slave_sae, const Wrapped& w);

struct PlainKey {
  std::string key_id;
  secure::Bytes bytes;
};

/// Unwraps a wrapped_json text with the recipient's private key (PEM text, unencrypted).
/// Throws InvalidArgument with one clear line on malformed input, a private key that does not
/// match the key the keys were wrapped to, or a key whose wrap does not verify.
std::vector<PlainKey> unwrap_json(std::string_view json_text, std::string_view private_key_pem);

/// The KEK of one key (exposed for tests: an independent construction checks it).
secure::Bytes derive_kek(std::span<const std::uint8_t> z, std::string_view key_id,
                         std::string_view master_sae, std::string_view slave_sae,
                         std::span<const std::uint8_t> epk_spki,
                         std::span<const std::uint8_t> recipient_spki);

}  // namespace qkdn::agent::wrap
