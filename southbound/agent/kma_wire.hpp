// KMA-link wire format between two agents' KMAs (project-internal, not part of Ck).
//
// Frame: type (2 bytes) | length (4 bytes) | payload, big-endian. Payloads are one JSON object,
// except Seed, Mint and Ack which are binary. Links are emulated lazily (KeyStore): no key byte
// crosses the link, both ends derive the keys from a secret the primary sends in Seed. A
// session goes:
//   dialer -> Hello {"from_km","to_km","link_id"};  acceptor -> HelloOk {} or Error and close
//   primary -> Seed (secret 32 bytes | minted half 0, half 1 | capacity_bits: u64 each)
//   secondary -> SyncOk {"in_sync": bool, "capacity_bits"}   (same secret and at least as many
//             blocks: trimmed to the primary's; otherwise the secondary starts empty at the
//             primary's counts under the secret and answers in_sync false, the primary drops
//             its pool too: blocks are never used twice)
//   primary -> Mint (seq u32 | new blocks of half 0 u32 | of half 1 u32);  secondary stores,
//             -> Ack (seq);  primary stores on Ack
//   either -> Control {"key_rate_bps","qber","up"} (admin changes, any subset), Ping {}
//   either -> Relay {relayed key metadata, "ciphertext": hex, "tag": hex} (key relay, Y.3803
//             8.2.3: one hop of an end-to-end key, one-time-pad encrypted with hop keys; see
//             southbound/agent/README.md "Key supply"); the receiver answers RelayAck
//             {"key_relay_request_id","response": "OK"|"NG: <reason>"} once the rest of the
//             route has answered (transit KMs forward the downstream RelayAck upstream)
//   either -> Supply {"supply_id","master_sae","slave_sae","session_id","key_bits","key_ids"}
//             (SAE key supply between adjacent KMs: the sender took these available link keys
//             from its store; the receiver takes the same IDs from its store, files them for
//             slave_sae, and answers SupplyAck {"supply_id","response": "OK"|"NG: <reason>"})
//   either -> Claim {"claim_id","source_kma_id","destination_kma_id","route","master_sae",
//             "slave_sae","session_id","key_bits","key_ids","tag"} (pre-positioned units of
//             the pool source -> destination become ETSI keys for an SAE pair; travels the
//             route hop by hop, transit KMs forward it; tag = HMAC under a key derived from the
//             claimed units); the destination answers ClaimAck {"claim_id","response"}, which
//             transit KMs forward back (docs/key-supply.md "Relay instructions")
//   either -> Discard {"link_id","key_ids"} (the sender discarded these keys of its own half:
//             the controller released them after allocation, or their allocation lapsed; the
//             receiver removes its available copies of the sender's parity; no answer)
// The primary of a link is the end with the lexicographically smaller KM ID.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "qkdn/agent/key_store.hpp"

namespace qkdn::agent::kma {

enum class Type : std::uint16_t {
  kHello = 1,
  kHelloOk = 2,
  kSync = 3,  ///< retired (eager emulation); answered as an unexpected frame
  kSyncOk = 4,
  kKeys = 5,  ///< retired (eager emulation: key bytes over the link)
  kAck = 6,
  kControl = 7,
  kError = 8,
  kPing = 9,
  kRelay = 10,
  kRelayAck = 11,
  kSupply = 12,
  kSupplyAck = 13,
  kClaim = 14,
  kClaimAck = 15,
  kDiscard = 16,
  kSeed = 17,
  kMint = 18,
};

inline constexpr std::size_t kHeaderSize = 6;
/// Largest accepted payload; a bigger length closes the session.
inline constexpr std::uint32_t kMaxPayload = 1u << 20;

struct Header {
  std::uint16_t type = 0;
  std::uint32_t length = 0;
};

/// Decodes the 6 header bytes.
Header decode_header(const std::uint8_t* bytes) noexcept;
/// A whole frame. Throws InvalidArgument when the payload exceeds kMaxPayload.
std::string encode_frame(Type type, std::string_view payload);

/// Largest block index a Seed may announce (block indices stay below 2^59, see KeyStore).
inline constexpr std::uint64_t kMaxMintIndex = std::uint64_t{1} << 59;
/// Most blocks per half one Mint frame may add.
inline constexpr std::int64_t kMaxMintPerFrame = std::int64_t{1} << 24;

/// A decoded Seed payload: the link secret and where both halves' pools end.
struct Seed {
  secure::Bytes secret;  ///< kLinkSecretBytes of key memory
  std::array<std::uint64_t, 2> minted{};
  std::int64_t capacity_bits = 0;
};
/// A whole Seed frame of the store's secret, minted blocks and capacity (contains the secret:
/// the writer wipes it after writing, as every frame). Throws InvalidArgument without a secret.
std::string encode_seed_frame(const KeyStore& store);
/// Parses a Seed payload; nullopt when malformed or out of range.
std::optional<Seed> decode_seed(std::string_view payload);
/// A decoded Mint payload: a batch of new blocks per half.
struct Mint {
  std::uint32_t seq = 0;
  std::array<std::int64_t, 2> n{};
};
/// A whole Mint frame. Throws InvalidArgument for counts outside [0, kMaxMintPerFrame].
std::string encode_mint_frame(std::uint32_t seq, const std::array<std::int64_t, 2>& n);
/// Parses a Mint payload; nullopt when malformed or out of range.
std::optional<Mint> decode_mint(std::string_view payload);
/// A whole Ack frame.
std::string encode_ack_frame(std::uint32_t seq);
/// Parses an Ack payload.
std::optional<std::uint32_t> decode_ack(std::string_view payload);

}  // namespace qkdn::agent::kma
