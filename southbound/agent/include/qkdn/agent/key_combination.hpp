// Key combination at the KM (ITU-T Y.3803 7.1 "key combination", draft TR.QKDN-nq 8.1.2): per SAE
// pair, the key delivered to both SAEs is either the QKD key itself (`qkd`) or
// HKDF-SHA256(QKD key || classical/post-quantum shared secret) bound to the key ID and the SAE
// pair (`hybrid`). The shared secret comes from an ephemeral X25519 exchange between the two end
// KMs (and ML-KEM-768 too when the OpenSSL in use has it), carried in the frames that deliver the
// QKD key (Supply, Relay, Claim and their answers). docs/hybrid.md states the construction.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <boost/json/object.hpp>
#include <boost/json/value.hpp>

#include "qkdn/agent/secure_memory.hpp"

namespace qkdn::agent::hybrid {

enum class Mode { kQkd, kHybrid };

[[nodiscard]] std::string_view mode_name(Mode mode);

/// Which mode each SAE pair gets at this agent's KMs (--key-combination).
struct Policy {
  Mode default_mode = Mode::kQkd;
  /// (lower SAE ID, higher SAE ID) -> mode: a pair's rule holds in both directions.
  std::map<std::pair<std::string, std::string>, Mode> pairs;

  [[nodiscard]] Mode of(const std::string& sae_a, const std::string& sae_b) const;
  /// Adds "qkd", "hybrid" (every pair) or "SAE1:SAE2=qkd|hybrid" (one pair); throws
  /// InvalidArgument naming the problem.
  void add_rule(std::string_view rule);
};

/// Whether ML-KEM-768 is used: the build found an OpenSSL with it (CMake check,
/// QKDN_HAVE_MLKEM) and the library in use can make ML-KEM-768 keys.
[[nodiscard]] bool mlkem_available();
/// One line for --version: the key-combination suites this build offers.
[[nodiscard]] std::string capabilities();

/// The secret both end KMs share after the exchange, and the hash of its transcript.
struct Shared {
  secure::Bytes secret;                       ///< X25519 output [|| ML-KEM-768 shared secret]
  std::array<std::uint8_t, 32> transcript{};  ///< SHA-256 over suite and every public value
  std::string suite;                          ///< "x25519" or "x25519+mlkem768"
};

/// The source KM's half: ephemeral keys made at construction (throws on an OpenSSL failure).
class Initiator {
 public:
  Initiator();
  ~Initiator();
  Initiator(const Initiator&) = delete;
  Initiator& operator=(const Initiator&) = delete;

  /// {"suite", "x25519": hex public key[, "mlkem768_ek": hex encapsulation key]}.
  [[nodiscard]] boost::json::object offer() const;
  /// The shared secret from the destination's answer; throws std::runtime_error when the answer
  /// is malformed or does not match the offer.
  [[nodiscard]] Shared finish(const boost::json::value& answer) const;

 private:
  struct Keys;
  std::unique_ptr<Keys> keys_;
};

/// The destination KM's half: answers an offer. Throws std::runtime_error when the offer is
/// malformed or asks for a suite this KM cannot do.
struct Response {
  boost::json::object answer;  ///< {"suite", "x25519": hex[, "mlkem768_ct": hex]}
  Shared shared;
};
[[nodiscard]] Response respond(const boost::json::value& offer);

/// The frame field that carries an offer or an answer.
inline constexpr std::string_view kFrameField = "key_combination";
/// The `key_combination` member of a KMA frame's JSON payload, serialized; "" when absent or
/// when the payload is not a JSON object.
[[nodiscard]] std::string exchange_of(std::string_view payload);

/// The string member `field` of a KMA frame's JSON payload; "" when absent or not a string.
[[nodiscard]] std::string string_of(std::string_view payload, std::string_view field);

/// The hybrid key of one ETSI key, in place: bytes = HKDF-SHA256(salt "qkdn-hybrid-v1",
/// IKM = bytes || shared.secret, info = "qkdn-hybrid-v1" 0 key_id 0 master 0 slave 0
/// transcript, L = bytes.size()).
void combine(secure::Bytes& bytes, const Shared& shared, const std::string& key_id,
             const std::string& master_sae, const std::string& slave_sae);

}  // namespace qkdn::agent::hybrid
