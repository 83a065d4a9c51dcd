// Per-request key quantities: the one definition both sides of Ck and of a KMA link enforce.
// The controller refuses a request above a bound before it routes or reserves anything; every
// agent refuses the same request (NG bad_request) when it reaches it. A bound that differs
// between the two ends turns into relays that always fail after routing (issue 13).
#pragma once

#include <cstdint>

namespace qkdn::limits {

/// Bits of one KMA key: the unit link pools, reservations, relays and pre-positioned pools count.
inline constexpr std::int64_t kKmaKeyBits = 256;

/// Most KMA keys one key relay may carry: 0x1403 / 0x410A number_of_keys, the key_ids of one hop
/// (0x410B, 0x410C, 0x4104 hop_keys) and the end-to-end key_ids of a KMA Relay frame. 1024 x 32
/// bytes keep one relay frame far below the KMA and Ck payload limits.
inline constexpr std::int64_t kMaxKeysPerRelay = 1024;

/// Most keys one key supply session may ask for (0x1406 / 0x4108 number_of_keys).
inline constexpr std::int64_t kMaxKeysPerSession = 1'000'000;

/// Most keys one relay instruction (0x41E5 number_of_keys) asks for per interval (or in its
/// window): each round is one relay, so it is bounded like a relay.
inline constexpr std::int64_t kMaxKeysPerInstruction = kMaxKeysPerRelay;

/// Most KMA keys one SAE key request may take on a KMA link without a relay (the key_ids of a
/// KMA Supply or Claim frame): 128 keys of 8192 bits, twice over. An agent refuses an ETSI request
/// that would need more (400), and a peer's frame naming more (NG bad_request).
inline constexpr std::int64_t kMaxKeysPerSupply = 8192;

/// SAE key sizes a KM files keys under (a relay's sae_key_bits, key_bits of KMA Supply and
/// Claim): a multiple of 8 in [kMinSaeKeyBits, kMaxSaeKeyBits]. The agent's --sae-key-size and
/// --sae-max-key-size stay within the same range.
inline constexpr std::int64_t kMinSaeKeyBits = 8;
inline constexpr std::int64_t kMaxSaeKeyBits = 1 << 20;

/// True when `bits` is a key size a KM may file SAE keys under.
constexpr bool valid_sae_key_bits(std::int64_t bits) noexcept {
  return bits >= kMinSaeKeyBits && bits <= kMaxSaeKeyBits && bits % 8 == 0;
}

/// KMA keys one SAE key of `bits` takes (bits must be valid_sae_key_bits).
constexpr std::int64_t kma_keys_per_sae_key(std::int64_t bits) noexcept {
  return (bits + kKmaKeyBits - 1) / kKmaKeyBits;
}

}  // namespace qkdn::limits
