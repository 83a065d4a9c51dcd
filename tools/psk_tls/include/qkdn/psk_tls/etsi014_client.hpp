// A minimal ETSI GS QKD 014 v1.1.1 client for an SAE: one key from `enc_keys` (the master SAE) or
// the same key by its ID from `dec_keys` (the slave SAE), over HTTPS with the SAE's certificate
// (mutual TLS, the server checked as an ETSI server of the project's CA: tls.hpp's roles), or over
// plain HTTP with X-SAE-ID against an agent in its insecure lab mode. Blocking, with a timeout on
// every connect, read and write; the reply is bounded. Key bytes live in wiped memory.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "qkdn/agent/secure_memory.hpp"

namespace qkdn::psk_tls {

/// Key bytes in memory that is wiped when freed (the agent's secure allocator).
using SecretBytes = std::vector<std::uint8_t, agent::secure::SecureAllocator<std::uint8_t>>;

/// Where and how to reach the SAE's KM (its ETSI 014 listener).
struct Etsi014Endpoint {
  std::string host;
  std::uint16_t port = 0;
  /// Mutual TLS with these PEM files; all three empty means plain HTTP with X-SAE-ID.
  std::string ca_file;
  std::string cert_file;
  std::string key_file;
  /// The SAE's own ID (sent as X-SAE-ID in the insecure mode; for messages otherwise).
  std::string sae_id;
  std::chrono::milliseconds timeout{10000};
};

/// One key of a Key container (ETSI 014 6.3).
struct QkdKey {
  std::string key_id;
  SecretBytes key;
};

/// GET /api/v1/keys/{slave_sae_id}/enc_keys?number=1&size={size_bits}: a new key shared with
/// the slave SAE. Throws qkdn::Unavailable (network, TLS, 503) or qkdn::InvalidArgument (any
/// other refusal, or a reply that is not a Key container of one key of that size), with the KM's
/// message.
QkdKey get_enc_key(const Etsi014Endpoint& kme, std::string_view slave_sae_id, unsigned size_bits);

/// GET /api/v1/keys/{master_sae_id}/dec_keys?key_ID={key_id}: the key the master SAE was given.
/// `key_id` must be a UUID. Errors as get_enc_key.
QkdKey get_dec_key(const Etsi014Endpoint& kme, std::string_view master_sae_id,
                   std::string_view key_id);

/// True when `text` is a UUID in its canonical 8-4-4-4-12 hexadecimal form (ETSI 014 key_ID).
bool is_uuid(std::string_view text) noexcept;

}  // namespace qkdn::psk_tls
