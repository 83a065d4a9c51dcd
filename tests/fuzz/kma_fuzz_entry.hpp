// Fuzz entry for the agent's KMA-link messages (southbound/agent/kma_messages.cpp, kma_wire.cpp):
// everything a peer KM sends. The first byte picks the reader, the rest is the payload. A reader
// either returns a message that keeps its documented bounds or throws BadMessage; anything else
// (another exception, a crash, a bound broken) is a finding.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "fuzz_check.hpp"
#include "kma_messages.hpp"
#include "kma_wire.hpp"
#include "qkdn/controller/key_limits.hpp"

namespace qkdn::fuzz {

inline void check_sae(const agent::kma::SaeFiling& f, std::size_t units) {
  if (!limits::valid_sae_key_bits(f.key_bits)) violated("kma", "SAE key size out of bounds");
  if (units % static_cast<std::size_t>(limits::kma_keys_per_sae_key(f.key_bits)) != 0) {
    violated("kma", "keys do not make whole SAE keys");
  }
}

/// One input. Returns 1 when the payload was accepted.
inline int kma_fuzz_one(const std::uint8_t* data, std::size_t size) {
  namespace kma = agent::kma;
  if (size == 0) return 0;
  const std::string_view payload(reinterpret_cast<const char*>(data) + 1, size - 1);
  try {
    switch (data[0] % 12) {
      case 0:
        (void)kma::parse_hello(payload);
        break;
      case 1:
        if (kma::parse_sync(payload).capacity_bits < 0) violated("kma", "negative capacity");
        break;
      case 2:
        if (kma::parse_sync_ok(payload).capacity_bits < 0) violated("kma", "negative capacity");
        break;
      case 3: {
        const auto c = kma::parse_control(payload);
        if (c.qber && (*c.qber < 0 || *c.qber > 1)) violated("kma", "qber out of range");
        if (c.key_rate_bps && !(*c.key_rate_bps >= 0)) violated("kma", "negative rate");
        break;
      }
      case 4:
        (void)kma::parse_error(payload);
        break;
      case 5:
      case 6:
      case 7: {
        static constexpr std::string_view kIds[] = {"key_relay_request_id", "supply_id",
                                                    "claim_id"};
        const auto a = kma::parse_ack(payload, kIds[data[0] % 12 - 5]);
        if (a.id.empty() || (a.response != "OK" && a.response.rfind("NG: ", 0) != 0)) {
          violated("kma", "ack fields");
        }
        break;
      }
      case 8: {
        const auto r = kma::parse_relay(payload);
        const std::size_t n = r.key_ids.size();
        if (n == 0 || n > static_cast<std::size_t>(limits::kMaxKeysPerRelay)) {
          violated("kma", "relay key count");
        }
        if (r.ciphertext.size() != n * agent::kKeyBytes) violated("kma", "ciphertext size");
        if (r.hop_keys.size() + 1 != r.route.size()) violated("kma", "hops and route");
        for (const auto& h : r.hop_keys) {
          if (h.key_ids.size() != n) violated("kma", "hop key count");
        }
        if (r.sae) check_sae(*r.sae, n);
        break;
      }
      case 9: {
        const auto s = kma::parse_supply(payload);
        if (s.key_ids.empty() ||
            s.key_ids.size() > static_cast<std::size_t>(limits::kMaxKeysPerSupply)) {
          violated("kma", "supply key count");
        }
        check_sae(s.sae, s.key_ids.size());
        break;
      }
      case 10: {
        const auto c = kma::parse_claim(payload);
        if (c.route.size() < 2 || c.route.front() != c.source_kma_id ||
            c.route.back() != c.destination_kma_id) {
          violated("kma", "claim route");
        }
        check_sae(c.sae, c.key_ids.size());
        break;
      }
      default: {  // the binary frames: a header, Seed, Mint and Ack payloads
        if (payload.size() >= kma::kHeaderSize) {
          (void)kma::decode_header(reinterpret_cast<const std::uint8_t*>(payload.data()));
        }
        if (auto mint = kma::decode_mint(payload)) {
          if (mint->n[0] < 0 || mint->n[1] < 0 || mint->n[0] > kma::kMaxMintPerFrame ||
              mint->n[1] > kma::kMaxMintPerFrame) {
            violated("kma", "mint bound");
          }
        }
        if (auto seed = kma::decode_seed(payload)) {
          if (seed->secret.size() != agent::kLinkSecretBytes || seed->capacity_bits < 0 ||
              seed->minted[0] >= kma::kMaxMintIndex || seed->minted[1] >= kma::kMaxMintIndex) {
            violated("kma", "seed bound");
          }
        }
        (void)kma::decode_ack(payload);
        (void)kma::request_id_of(payload, "claim_id");
        return 0;
      }
    }
    return 1;
  } catch (const kma::BadMessage&) {
    return 0;
  }
}

}  // namespace qkdn::fuzz
