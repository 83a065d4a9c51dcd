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

/// Largest Ck payload (ck-protocol.md clause 2: a 2-byte length). The codec (ck_frame.hpp's
/// kMaxPayload) asserts it is the same number.
inline constexpr std::int64_t kMaxCkPayloadBytes = 65535;

/// An upper bound of the bytes a 0x4104 takes for one relay: every hop's key IDs travel in it
/// (`hop_keys`, 39 bytes per quoted UUID with its comma, plus a hop's own fields), and the KM and
/// link names of the route (`name_bytes`: the sum of their lengths) appear at most three times
/// each, escaped at most six bytes per byte. So a relay's size is bounded by the frame, not by
/// kMaxKeysPerRelay alone: 1,024 keys fit one hop, about 540 three, about 160 ten.
constexpr std::int64_t relay_request_bytes(std::int64_t hops, std::int64_t name_bytes,
                                           std::int64_t keys) noexcept {
  return 1024 + 18 * name_bytes + hops * (96 + keys * 39);
}

/// Most keys one relay over `hops` hops (names of `name_bytes` in all) may carry: at most
/// kMaxKeysPerRelay, and few enough that its 0x4104 fits one Ck frame. 0 when none fits.
constexpr std::int64_t max_keys_per_relay(std::int64_t hops, std::int64_t name_bytes) noexcept {
  if (hops < 1) return 0;
  const std::int64_t room = kMaxCkPayloadBytes - relay_request_bytes(hops, name_bytes, 0);
  if (room < hops * 39) return 0;
  const std::int64_t fit = room / (hops * 39);
  return fit < kMaxKeysPerRelay ? fit : kMaxKeysPerRelay;
}

/// KMA keys one SAE key of `bits` takes (bits must be valid_sae_key_bits).
constexpr std::int64_t kma_keys_per_sae_key(std::int64_t bits) noexcept {
  return (bits + kKmaKeyBits - 1) / kKmaKeyBits;
}

}  // namespace qkdn::limits
