// Strict reading of the JSON messages a peer KM sends over a KMA link (format: kma_wire.hpp).
// A peer is authenticated but not trusted with the receiver's memory: every field is checked
// for presence, type and range before anything acts on it. A missing field is an error, never
// "" or 0; numbers outside their range, malformed IDs and oversized arrays are errors; the key
// quantities are bounded by qkdn/controller/key_limits.hpp, the definition the controller uses.
// Pure: no I/O, no Asio (the KMA fuzz target links this file alone with key_store.cpp).
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <boost/json/object.hpp>

#include "qkdn/agent/key_store.hpp"

namespace qkdn::agent::kma {

/// A KMA message that breaks the format; what() names the field and the rule.
class BadMessage : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Longest route (KMs, both ends included) a relay or claim may name.
inline constexpr std::size_t kMaxRouteKms = 256;
/// Longest free text (an NG reason, an error message) accepted from a peer.
inline constexpr std::size_t kMaxTextBytes = 1024;

struct Hello {
  std::string from_km;
  std::string to_km;
  std::string link_id;
};

struct Sync {
  std::optional<KeyId> last_key_id;  ///< "" on the wire: the primary holds no key
  std::int64_t capacity_bits = 0;
};

struct SyncOk {
  bool in_sync = false;
  std::int64_t capacity_bits = 0;
};

/// Admin changes relayed from the peer: any subset, at least one.
struct Control {
  std::optional<double> key_rate_bps;  ///< finite, >= 0
  std::optional<double> qber;          ///< in [0, 1]
  std::optional<bool> up;
};

struct PeerError {
  std::string error;
  std::string message;
};

/// RelayAck, SupplyAck and ClaimAck: the request's ID and "OK" or "NG: <reason>".
struct Ack {
  std::string id;
  std::string response;
};

/// One hop's keys in a Relay frame.
struct HopRef {
  std::string kma_id;
  std::string next_kma_id;
  std::string link_id;  ///< may be empty (the link is then found by peer)
  std::vector<KeyId> key_ids;
};

/// The SAE pair and ETSI key size keys are filed under (Relay for an SAE, Supply, Claim).
struct SaeFiling {
  std::string master_sae;
  std::string slave_sae;
  std::string session_id;
  std::int64_t key_bits = 0;  ///< limits::valid_sae_key_bits
};

struct Relay {
  boost::json::object meta;  ///< the whole validated object (a transit KM forwards it)
  std::string key_relay_request_id;
  std::string source_kma_id;
  std::string destination_kma_id;
  std::string from;
  std::string to;
  /// Centralized: source .. destination. Distributed ("routing": "distributed", Q.4164 7.1):
  /// the route so far, source .. `to`; each transit KM appends its next hop.
  std::vector<std::string> route;
  bool distributed = false;
  std::vector<HopRef> hop_keys;
  std::vector<KeyId> key_ids;  ///< end to end; as many as every hop carries
  bool preposition = false;
  std::optional<SaeFiling> sae;
  std::vector<std::uint8_t> ciphertext;  ///< exactly key_ids.size() * kKeyBytes
  std::array<std::uint8_t, 32> tag{};
  /// encryption "aes-256-gcm" (relay_scheme.hpp): one hop key per hop, nonce and GCM tag.
  bool gcm = false;
  std::array<std::uint8_t, 12> nonce{};
  std::array<std::uint8_t, 16> gcm_tag{};
};

struct Supply {
  std::string supply_id;
  SaeFiling sae;
  std::vector<KeyId> key_ids;  ///< a whole number of SAE keys of sae.key_bits
};

struct Claim {
  std::string claim_id;
  std::string source_kma_id;
  std::string destination_kma_id;
  std::vector<std::string> route;  ///< source .. destination
  SaeFiling sae;
  std::vector<KeyId> key_ids;  ///< a whole number of SAE keys of sae.key_bits
  std::array<std::uint8_t, 32> tag{};
};

/// Keys the peer destroyed at its end of the link (docs/ck-extensions.md "Key release"): at most
/// kMaxDiscardIds per frame.
inline constexpr std::size_t kMaxDiscardIds = 1024;
struct Discard {
  std::string link_id;
  std::vector<KeyId> key_ids;
};

// Each parser reads one payload and throws BadMessage for anything but a well-formed message.
Hello parse_hello(std::string_view payload);
Sync parse_sync(std::string_view payload);
SyncOk parse_sync_ok(std::string_view payload);
Control parse_control(std::string_view payload);
PeerError parse_error(std::string_view payload);
/// `id_field`: "key_relay_request_id", "supply_id" or "claim_id".
Ack parse_ack(std::string_view payload, std::string_view id_field);
Relay parse_relay(std::string_view payload);
Supply parse_supply(std::string_view payload);
Claim parse_claim(std::string_view payload);
Discard parse_discard(std::string_view payload);

/// The request ID of a payload, if it has a readable one (to address an NG answer to a message
/// that failed to parse). Never throws.
std::string request_id_of(std::string_view payload, std::string_view id_field) noexcept;

}  // namespace qkdn::agent::kma
