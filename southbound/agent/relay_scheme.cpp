// Relay schemes (relay_scheme.hpp).
#include "qkdn/agent/relay_scheme.hpp"

#include <memory>
#include <stdexcept>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "qkdn/controller/error.hpp"

namespace qkdn::agent::relay {

namespace {

constexpr std::string_view kGcmLabel = "qkdn-relay-gcm-v1";

using CipherCtx = std::unique_ptr<EVP_CIPHER_CTX, decltype(&EVP_CIPHER_CTX_free)>;

std::array<std::uint8_t, 32> gcm_key(const std::vector<std::uint8_t>& hop_key) {
  std::array<std::uint8_t, 32> k{};
  unsigned n = 0;
  if (HMAC(EVP_sha256(), hop_key.data(), static_cast<int>(hop_key.size()),
           reinterpret_cast<const unsigned char*>(kGcmLabel.data()), kGcmLabel.size(), k.data(),
           &n) == nullptr) {
    throw std::runtime_error("relay: HMAC-SHA256 failed");
  }
  return k;
}

}  // namespace

std::string_view scheme_name(Scheme s) { return s == Scheme::kAesGcm ? "aes-256-gcm" : "otp"; }

std::string_view security_of(Scheme s) {
  return s == Scheme::kAesGcm ? "computational" : "information_theoretic";
}

Scheme Policy::of(const std::string& sae_a, const std::string& sae_b) const {
  auto key = sae_a < sae_b ? std::make_pair(sae_a, sae_b) : std::make_pair(sae_b, sae_a);
  auto it = pairs.find(key);
  return it == pairs.end() ? default_scheme : it->second;
}

void Policy::add_rule(std::string_view rule) {
  auto scheme_of = [&](std::string_view m) {
    if (m == "otp") return Scheme::kOtp;
    if (m == "aes-256-gcm") return Scheme::kAesGcm;
    throw InvalidArgument("--relay-scheme '" + std::string(rule) +
                          "': expected otp, aes-256-gcm or SAE1:SAE2=otp|aes-256-gcm");
  };
  const auto eq = rule.find('=');
  if (eq == std::string_view::npos) {
    default_scheme = scheme_of(rule);
    return;
  }
  const auto pair = rule.substr(0, eq);
  const auto colon = pair.find(':');
  if (colon == std::string_view::npos || colon == 0 || colon + 1 == pair.size() ||
      pair.find(':', colon + 1) != std::string_view::npos) {
    throw InvalidArgument("--relay-scheme '" + std::string(rule) +
                          "': expected SAE1:SAE2=otp|aes-256-gcm (SAE IDs without ':')");
  }
  std::string a(pair.substr(0, colon));
  std::string b(pair.substr(colon + 1));
  if (a == b) throw InvalidArgument("--relay-scheme '" + std::string(rule) + "': same SAE");
  if (b < a) std::swap(a, b);
  pairs[{a, b}] = scheme_of(rule.substr(eq + 1));
}

void gcm_seal(const std::vector<std::uint8_t>& hop_key, const std::string& aad,
              std::vector<std::uint8_t>& data, std::array<std::uint8_t, 12>& nonce,
              std::array<std::uint8_t, 16>& tag) {
  auto key = gcm_key(hop_key);
  CipherCtx ctx(EVP_CIPHER_CTX_new(), &EVP_CIPHER_CTX_free);
  int n = 0;
  const bool ok =
      ctx && RAND_bytes(nonce.data(), static_cast<int>(nonce.size())) == 1 &&
      EVP_EncryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, key.data(), nonce.data()) == 1 &&
      EVP_EncryptUpdate(ctx.get(), nullptr, &n, reinterpret_cast<const unsigned char*>(aad.data()),
                        static_cast<int>(aad.size())) == 1 &&
      EVP_EncryptUpdate(ctx.get(), data.data(), &n, data.data(), static_cast<int>(data.size())) ==
          1 &&
      EVP_EncryptFinal_ex(ctx.get(), data.data() + n, &n) == 1 &&
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_GET_TAG, static_cast<int>(tag.size()),
                          tag.data()) == 1;
  OPENSSL_cleanse(key.data(), key.size());
  if (!ok) {
    OPENSSL_cleanse(data.data(), data.size());
    throw std::runtime_error("relay: AES-256-GCM encryption failed");
  }
}

bool gcm_open(const std::vector<std::uint8_t>& hop_key, const std::string& aad,
              std::vector<std::uint8_t>& data, const std::array<std::uint8_t, 12>& nonce,
              const std::array<std::uint8_t, 16>& tag) {
  auto key = gcm_key(hop_key);
  auto expected = tag;
  CipherCtx ctx(EVP_CIPHER_CTX_new(), &EVP_CIPHER_CTX_free);
  int n = 0;
  const bool ok =
      ctx &&
      EVP_DecryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, key.data(), nonce.data()) == 1 &&
      EVP_DecryptUpdate(ctx.get(), nullptr, &n, reinterpret_cast<const unsigned char*>(aad.data()),
                        static_cast<int>(aad.size())) == 1 &&
      EVP_DecryptUpdate(ctx.get(), data.data(), &n, data.data(), static_cast<int>(data.size())) ==
          1 &&
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_TAG, static_cast<int>(expected.size()),
                          expected.data()) == 1 &&
      EVP_DecryptFinal_ex(ctx.get(), data.data() + n, &n) == 1;
  OPENSSL_cleanse(key.data(), key.size());
  if (!ok) OPENSSL_cleanse(data.data(), data.size());
  return ok;
}

}  // namespace qkdn::agent::relay
