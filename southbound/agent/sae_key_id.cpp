// Pair-naming ETSI key_IDs: see sae_key_id.hpp.
#include "sae_key_id.hpp"

#include <openssl/evp.h>

#include <array>
#include <cstring>
#include <memory>

namespace qkdn::agent {
namespace {

using Prefix = std::array<std::uint8_t, 8>;

std::array<std::uint8_t, 4> tag(std::string_view domain, const Prefix& prefix,
                                std::string_view sae) {
  std::array<unsigned char, EVP_MAX_MD_SIZE> md{};
  unsigned int len = 0;
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), &EVP_MD_CTX_free);
  EVP_DigestInit_ex(ctx.get(), sha256_md(), nullptr);  // fetched once
  EVP_DigestUpdate(ctx.get(), domain.data(), domain.size());
  EVP_DigestUpdate(ctx.get(), prefix.data(), prefix.size());
  EVP_DigestUpdate(ctx.get(), sae.data(), sae.size());
  EVP_DigestFinal_ex(ctx.get(), md.data(), &len);
  return {md[0], md[1], md[2], md[3]};
}

std::array<std::uint8_t, 4> master_tag(const Prefix& p, std::string_view sae) {
  auto t = tag("qkdn-etsi-master", p, sae);
  t[0] = static_cast<std::uint8_t>((t[0] & 0x3F) | 0x80);  // RFC 4122 variant
  return t;
}

std::array<std::uint8_t, 4> slave_tag(const Prefix& p, std::string_view sae) {
  return tag("qkdn-etsi-slave", p, sae);
}

bool equal(const std::array<std::uint8_t, 4>& t, const KeyId& id, std::size_t at) {
  return std::memcmp(t.data(), id.data() + at, t.size()) == 0;
}

}  // namespace

std::string etsi_key_id(const KeyId& first_unit, std::string_view master_sae,
                        std::string_view slave_sae) {
  KeyId id{};
  Prefix p{};
  std::memcpy(p.data(), first_unit.data(), p.size());
  p[6] = static_cast<std::uint8_t>((p[6] & 0x0F) | 0x40);  // version 4
  std::memcpy(id.data(), p.data(), p.size());
  const auto m = master_tag(p, master_sae);
  const auto s = slave_tag(p, slave_sae);
  std::memcpy(id.data() + 8, m.data(), m.size());
  std::memcpy(id.data() + 12, s.data(), s.size());
  return key_id_to_string(id);
}

KeyIdOwner classify_key_id(const std::string& key_id, std::string_view master_sae,
                           std::string_view slave_sae, const std::vector<std::string>& known_saes) {
  const auto id = parse_key_id(key_id);
  if (!id) return KeyIdOwner::kUnknown;
  Prefix p{};
  std::memcpy(p.data(), id->data(), p.size());
  const bool master_ok = equal(master_tag(p, master_sae), *id, 8);
  if (master_ok && equal(slave_tag(p, slave_sae), *id, 12)) return KeyIdOwner::kThisPair;
  // Issued by this master to another slave, or by another known SAE: another pair's key.
  if (master_ok) return KeyIdOwner::kOtherPair;
  for (const auto& sae : known_saes) {
    if (sae != master_sae && equal(master_tag(p, sae), *id, 8)) return KeyIdOwner::kOtherPair;
  }
  return KeyIdOwner::kUnknown;
}

}  // namespace qkdn::agent
