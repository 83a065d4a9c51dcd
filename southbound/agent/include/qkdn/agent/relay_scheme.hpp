// Relay schemes (docs/hybrid.md "Relay schemes", Y.3803 8.2.3): how a relay protects the
// end-to-end keys on each hop.
// - otp: one-time pad with as many link keys per hop as keys relayed (information-theoretic
//   confidentiality; HMAC-SHA256 integrity). The default.
// - aes-256-gcm: one link key per hop keys an AES-256-GCM encryption of all the relayed keys
//   (computationally secure: far less link key per relayed key, for when the links cannot
//   afford a one-time pad). HMAC-SHA256 integrity as for otp.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace qkdn::agent::relay {

enum class Scheme { kOtp, kAesGcm };

[[nodiscard]] std::string_view scheme_name(Scheme s);  ///< "otp" or "aes-256-gcm"
/// The security level the relay record shows: "information_theoretic" or "computational".
[[nodiscard]] std::string_view security_of(Scheme s);

/// Which scheme the relays of each SAE pair use (--relay-scheme), like hybrid::Policy.
struct Policy {
  Scheme default_scheme = Scheme::kOtp;
  std::map<std::pair<std::string, std::string>, Scheme> pairs;  ///< (lower, higher SAE ID)

  [[nodiscard]] Scheme of(const std::string& sae_a, const std::string& sae_b) const;
  /// "otp", "aes-256-gcm" (every pair) or "SAE1:SAE2=otp|aes-256-gcm"; throws InvalidArgument.
  void add_rule(std::string_view rule);
};

/// The 0x1403 extension member naming the scheme, and the one carrying the number of 256-bit
/// end-to-end keys an aes-256-gcm relay carries (number_of_keys is then the hop keys: 1).
inline constexpr std::string_view kSchemeField = "relay_scheme";
inline constexpr std::string_view kKeysField = "relayed_keys";

/// AES-256-GCM under HMAC-SHA256(hop_key, "qkdn-relay-gcm-v1") with a fresh random 96-bit nonce,
/// `aad` authenticated; `data` is encrypted in place. Throws std::runtime_error on failure.
void gcm_seal(const std::vector<std::uint8_t>& hop_key, const std::string& aad,
              std::vector<std::uint8_t>& data, std::array<std::uint8_t, 12>& nonce,
              std::array<std::uint8_t, 16>& tag);
/// The inverse; false (data unusable, wiped) when the tag does not verify.
[[nodiscard]] bool gcm_open(const std::vector<std::uint8_t>& hop_key, const std::string& aad,
                            std::vector<std::uint8_t>& data,
                            const std::array<std::uint8_t, 12>& nonce,
                            const std::array<std::uint8_t, 16>& tag);

}  // namespace qkdn::agent::relay
