// Keys wrapped to an SAE's certificate (key_wrap.hpp, docs/hybrid.md).
#include "qkdn/agent/key_wrap.hpp"

#include <array>
#include <cstring>
#include <memory>
#include <stdexcept>

#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <boost/json.hpp>

#include "qkdn/base/error.hpp"
#include "qkdn/net/tls.hpp"

namespace qkdn::agent::wrap {

namespace json = boost::json;

namespace {

struct PkeyFree {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
};
struct CtxFree {
  void operator()(EVP_PKEY_CTX* c) const { EVP_PKEY_CTX_free(c); }
};
struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};
struct BioFree {
  void operator()(BIO* b) const { BIO_free(b); }
};
struct StoreFree {
  void operator()(X509_STORE* s) const { X509_STORE_free(s); }
};
struct StoreCtxFree {
  void operator()(X509_STORE_CTX* c) const { X509_STORE_CTX_free(c); }
};
struct CipherCtxFree {
  void operator()(EVP_CIPHER_CTX* c) const { EVP_CIPHER_CTX_free(c); }
};
using Pkey = std::unique_ptr<EVP_PKEY, PkeyFree>;
using Ctx = std::unique_ptr<EVP_PKEY_CTX, CtxFree>;

[[noreturn]] void fail(const std::string& what) {
  ERR_clear_error();
  throw std::runtime_error(what);
}

std::string hex(std::span<const std::uint8_t> v) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(v.size() * 2);
  for (const std::uint8_t b : v) {
    out.push_back(kDigits[b >> 4]);
    out.push_back(kDigits[b & 15]);
  }
  return out;
}

std::array<std::uint8_t, SHA256_DIGEST_LENGTH> sha256(std::span<const std::uint8_t> v) {
  std::array<std::uint8_t, SHA256_DIGEST_LENGTH> md{};
  SHA256(v.data(), v.size(), md.data());
  return md;
}

std::string base64(std::span<const std::uint8_t> v) {
  std::string out(4 * ((v.size() + 2) / 3) + 1, '\0');
  const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), v.data(),
                                static_cast<int>(v.size()));
  out.resize(static_cast<std::size_t>(n));
  return out;
}

/// Strict base64 (RFC 4648, padded); nullopt-like empty + false on error.
bool unbase64(std::string_view in, std::vector<std::uint8_t>& out) {
  if (in.empty() || in.size() % 4 != 0) return false;
  for (const char c : in) {
    const bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                    c == '+' || c == '/' || c == '=';
    if (!ok) return false;
  }
  out.assign(in.size() / 4 * 3, 0);
  const int n = EVP_DecodeBlock(out.data(), reinterpret_cast<const unsigned char*>(in.data()),
                                static_cast<int>(in.size()));
  if (n < 0) return false;
  std::size_t pad = 0;
  if (in.ends_with("==")) {
    pad = 2;
  } else if (in.ends_with("=")) {
    pad = 1;
  }
  out.resize(static_cast<std::size_t>(n) - pad);
  return true;
}

std::vector<std::uint8_t> spki_of(EVP_PKEY* key) {
  unsigned char* der = nullptr;
  const int n = i2d_PUBKEY(key, &der);
  if (n <= 0) fail("key wrap: cannot encode a public key");
  std::vector<std::uint8_t> out(der, der + n);
  OPENSSL_free(der);
  return out;
}

Pkey pkey_of_spki(std::span<const std::uint8_t> spki) {
  const unsigned char* p = spki.data();
  Pkey k(d2i_PUBKEY(nullptr, &p, static_cast<long>(spki.size())));
  if (!k || p != spki.data() + spki.size()) {
    ERR_clear_error();
    return nullptr;
  }
  return k;
}

/// "P-256", "P-384", "P-521", "X25519", "X448", or "" for any other key.
std::string curve_of(EVP_PKEY* key) {
  switch (EVP_PKEY_get_base_id(key)) {
    case EVP_PKEY_X25519:
      return "X25519";
    case EVP_PKEY_X448:
      return "X448";
    case EVP_PKEY_EC: {
      std::array<char, 80> name{};
      std::size_t len = 0;
      if (EVP_PKEY_get_group_name(key, name.data(), name.size(), &len) != 1) return "";
      const std::string_view g(name.data(), len);
      if (g == "prime256v1" || g == "P-256") return "P-256";
      if (g == "secp384r1" || g == "P-384") return "P-384";
      if (g == "secp521r1" || g == "P-521") return "P-521";
      return "";
    }
    default:
      return "";
  }
}

std::string describe_key(EVP_PKEY* key) {
  if (EVP_PKEY_get_base_id(key) == EVP_PKEY_EC) {
    std::array<char, 80> name{};
    std::size_t len = 0;
    if (EVP_PKEY_get_group_name(key, name.data(), name.size(), &len) == 1) {
      return "EC on " + std::string(name.data(), len);
    }
  }
  const char* type = EVP_PKEY_get0_type_name(key);
  return type != nullptr ? type : "of an unknown type";
}

std::time_t time_of(const ASN1_TIME* t) {
  std::tm tm{};
  if (ASN1_TIME_to_tm(t, &tm) != 1) return 0;
  return timegm(&tm);
}

std::string rfc3339(std::time_t t) {
  std::tm tm{};
  gmtime_r(&t, &tm);
  std::array<char, 32> buf{};
  const std::size_t n = std::strftime(buf.data(), buf.size(), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return std::string(buf.data(), n);
}

/// Z = ECDH(own, peer) (the raw shared secret: the x-coordinate for the NIST curves).
secure::Bytes ecdh(EVP_PKEY* own, EVP_PKEY* peer) {
  Ctx ctx(EVP_PKEY_CTX_new_from_pkey(nullptr, own, nullptr));
  std::size_t n = 0;
  if (!ctx || EVP_PKEY_derive_init(ctx.get()) != 1 ||
      EVP_PKEY_derive_set_peer(ctx.get(), peer) != 1 ||
      EVP_PKEY_derive(ctx.get(), nullptr, &n) != 1 || n == 0) {
    fail("key wrap: ECDH failed (the keys are not on the same curve)");
  }
  secure::Bytes z(n);
  if (EVP_PKEY_derive(ctx.get(), z.data(), &n) != 1) fail("key wrap: ECDH failed");
  z.resize(n);
  bool zero = true;
  for (const std::uint8_t b : z) zero = zero && b == 0;
  if (zero) fail("key wrap: ECDH gave an all-zero secret (a low-order public key)");
  return z;
}

secure::Bytes aes_kwp(bool encrypt, std::span<const std::uint8_t> kek,
                      std::span<const std::uint8_t> in) {
  std::unique_ptr<EVP_CIPHER_CTX, CipherCtxFree> ctx(EVP_CIPHER_CTX_new());
  if (!ctx) fail("key wrap: out of memory");
  EVP_CIPHER_CTX_set_flags(ctx.get(), EVP_CIPHER_CTX_FLAG_WRAP_ALLOW);
  const int init =
      encrypt ? EVP_EncryptInit_ex(ctx.get(), EVP_aes_256_wrap_pad(), nullptr, kek.data(), nullptr)
              : EVP_DecryptInit_ex(ctx.get(), EVP_aes_256_wrap_pad(), nullptr, kek.data(), nullptr);
  if (init != 1) fail("key wrap: AES-256 key wrap unavailable");
  secure::Bytes out(in.size() + 16);
  int n = 0;
  const int ok =
      encrypt
          ? EVP_EncryptUpdate(ctx.get(), out.data(), &n, in.data(), static_cast<int>(in.size()))
          : EVP_DecryptUpdate(ctx.get(), out.data(), &n, in.data(), static_cast<int>(in.size()));
  if (ok != 1 || n <= 0) {
    ERR_clear_error();
    return {};
  }
  out.resize(static_cast<std::size_t>(n));
  return out;
}

const json::object* object_field(const json::object& o, std::string_view name) {
  const auto* v = o.if_contains(name);
  return v != nullptr && v->is_object() ? &v->as_object() : nullptr;
}

std::string string_field(const json::object& o, std::string_view name) {
  const auto* v = o.if_contains(name);
  if (v == nullptr || !v->is_string()) {
    throw InvalidArgument("wrapped keys: field \"" + std::string(name) +
                          "\" missing or not a string");
  }
  return std::string(v->as_string());
}

}  // namespace

Recipient load_recipient(const std::string& sae_id, const std::string& cert_file,
                         const std::string& ca_file, std::time_t now) {
  const std::string where = "--outside-sae " + sae_id + "=" + cert_file + ": ";
  std::unique_ptr<BIO, BioFree> bio(BIO_new_file(cert_file.c_str(), "r"));
  if (!bio) {
    ERR_clear_error();
    throw InvalidArgument(where + "cannot read the file");
  }
  std::unique_ptr<X509, X509Free> cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  ERR_clear_error();
  if (!cert) throw InvalidArgument(where + "not a PEM X.509 certificate");
  EVP_PKEY* pub = X509_get0_pubkey(cert.get());
  if (pub == nullptr) throw InvalidArgument(where + "the certificate's public key is unreadable");
  Recipient r;
  r.sae_id = sae_id;
  r.cert_file = cert_file;
  r.curve = curve_of(pub);
  if (r.curve.empty()) {
    throw InvalidArgument(where + "the certificate's key is " + describe_key(pub) +
                          "; keys can only be wrapped to an EC key (P-256, P-384, P-521, X25519 "
                          "or X448)");
  }
  r.not_before = time_of(X509_get0_notBefore(cert.get()));
  r.not_after = time_of(X509_get0_notAfter(cert.get()));
  std::array<char, 256> subject{};
  X509_NAME_oneline(X509_get_subject_name(cert.get()), subject.data(),
                    static_cast<int>(subject.size()));
  r.subject = subject.data();
  if (auto why = validity_error(r, now); !why.empty()) throw InvalidArgument(where + why);
  const std::string named = net::certificate_identity(cert.get(), net::PeerRole::kSae);
  if (!named.empty() && named != sae_id) {
    throw InvalidArgument(where + "the certificate is SAE " + named + "'s, not " + sae_id + "'s");
  }
  if (!ca_file.empty()) {
    std::unique_ptr<X509_STORE, StoreFree> store(X509_STORE_new());
    if (!store || X509_STORE_load_file(store.get(), ca_file.c_str()) != 1) {
      ERR_clear_error();
      throw InvalidArgument("--outside-sae-ca " + ca_file + ": cannot read the CA bundle");
    }
    std::unique_ptr<X509_STORE_CTX, StoreCtxFree> ctx(X509_STORE_CTX_new());
    if (!ctx || X509_STORE_CTX_init(ctx.get(), store.get(), cert.get(), nullptr) != 1) {
      fail("key wrap: cannot verify a certificate (out of memory)");
    }
    X509_VERIFY_PARAM_set_time(X509_STORE_CTX_get0_param(ctx.get()), now);
    if (X509_verify_cert(ctx.get()) != 1) {
      const int err = X509_STORE_CTX_get_error(ctx.get());
      ERR_clear_error();
      throw InvalidArgument(where + "does not verify against the CA " + ca_file + ": " +
                            X509_verify_cert_error_string(err));
    }
  }
  r.spki = spki_of(pub);
  std::array<unsigned char, EVP_MAX_MD_SIZE> md{};
  unsigned int md_len = 0;
  if (X509_digest(cert.get(), EVP_sha256(), md.data(), &md_len) != 1) {
    fail("key wrap: cannot hash a certificate");
  }
  r.cert_sha256 = hex(std::span<const std::uint8_t>(md.data(), md_len));
  return r;
}

std::string validity_error(const Recipient& r, std::time_t now) {
  if (now < r.not_before) return "the certificate is not valid before " + rfc3339(r.not_before);
  if (now > r.not_after) return "the certificate expired at " + rfc3339(r.not_after);
  return "";
}

secure::Bytes derive_kek(std::span<const std::uint8_t> z, std::string_view key_id,
                         std::string_view master_sae, std::string_view slave_sae,
                         std::span<const std::uint8_t> epk_spki,
                         std::span<const std::uint8_t> recipient_spki) {
  std::string info(kLabel);
  for (const std::string_view part : {kAlg, key_id, master_sae, slave_sae}) {
    info.push_back('\0');
    info += part;
  }
  info.push_back('\0');
  for (const auto& spki : {epk_spki, recipient_spki}) {
    const auto md = sha256(spki);
    info.append(reinterpret_cast<const char*>(md.data()), md.size());
  }
  std::unique_ptr<EVP_KDF, decltype(&EVP_KDF_free)> kdf(EVP_KDF_fetch(nullptr, "HKDF", nullptr),
                                                        &EVP_KDF_free);
  std::unique_ptr<EVP_KDF_CTX, decltype(&EVP_KDF_CTX_free)> ctx(
      kdf ? EVP_KDF_CTX_new(kdf.get()) : nullptr, &EVP_KDF_CTX_free);
  std::string digest = "SHA256";
  std::string salt(kLabel);
  secure::Bytes ikm(z.begin(), z.end());
  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, digest.data(), 0),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, ikm.data(), ikm.size()),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, salt.data(), salt.size()),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, info.data(), info.size()),
      OSSL_PARAM_construct_end()};
  secure::Bytes kek(32);
  if (!ctx || EVP_KDF_derive(ctx.get(), kek.data(), kek.size(), params) != 1) {
    fail("key wrap: HKDF-SHA256 failed");
  }
  return kek;
}

Wrapped wrap_keys(const Recipient& r, std::string_view master_sae, std::string_view slave_sae,
                  std::span<const PlainRef> keys) {
  Pkey peer = pkey_of_spki(r.spki);
  if (!peer) fail("key wrap: the recipient's public key is unreadable");
  Ctx gen(EVP_PKEY_CTX_new_from_pkey(nullptr, peer.get(), nullptr));
  EVP_PKEY* raw = nullptr;
  if (!gen || EVP_PKEY_keygen_init(gen.get()) != 1 || EVP_PKEY_generate(gen.get(), &raw) != 1) {
    fail("key wrap: cannot make an ephemeral key on " + r.curve);
  }
  Pkey eph(raw);  // OpenSSL wipes the private scalar when it frees the key
  Wrapped w;
  w.curve = r.curve;
  w.epk = spki_of(eph.get());
  const secure::Bytes z = ecdh(eph.get(), peer.get());
  w.keys.reserve(keys.size());
  for (const PlainRef& k : keys) {
    const secure::Bytes kek = derive_kek(z, k.key_id, master_sae, slave_sae, w.epk, r.spki);
    secure::Bytes out = aes_kwp(true, kek, k.bytes);
    if (out.empty()) fail("key wrap: AES-256 key wrap failed");
    w.keys.push_back(WrappedKey{std::string(k.key_id), {out.begin(), out.end()}});
  }
  return w;
}

std::string wrapped_json(const Recipient& r, std::string_view master_sae,
                         std::string_view slave_sae, const Wrapped& w) {
  json::array keys;
  keys.reserve(w.keys.size());
  for (const WrappedKey& k : w.keys) {
    keys.push_back(json::object{{"key_ID", k.key_id}, {"wrapped_key", base64(k.wrapped)}});
  }
  const auto recipient_key = sha256(r.spki);
  json::object wrapping{{"alg", kAlg},
                        {"curve", w.curve},
                        {"epk", base64(w.epk)},
                        {"master_SAE_ID", master_sae},
                        {"slave_SAE_ID", slave_sae},
                        {"recipient_SAE_ID", r.sae_id},
                        {"recipient_key_sha256", hex(recipient_key)},
                        {"certificate_sha256", r.cert_sha256}};
  return json::serialize(
      json::object{{"wrapping", std::move(wrapping)}, {"keys", std::move(keys)}});
}

std::vector<PlainKey> unwrap_json(std::string_view json_text, std::string_view private_key_pem) {
  boost::system::error_code ec;
  const json::value doc = json::parse(json_text, ec);
  if (ec || !doc.is_object()) throw InvalidArgument("wrapped keys: not a JSON object");
  const json::object* wrapping = object_field(doc.as_object(), "wrapping");
  if (wrapping == nullptr) {
    throw InvalidArgument(
        "wrapped keys: no \"wrapping\" object (is this a plain enc_keys answer?)");
  }
  const std::string alg = string_field(*wrapping, "alg");
  if (alg != kAlg) {
    throw InvalidArgument("wrapped keys: unknown alg \"" + alg + "\" (this tool does " +
                          std::string(kAlg) + ")");
  }
  const std::string master = string_field(*wrapping, "master_SAE_ID");
  const std::string slave = string_field(*wrapping, "slave_SAE_ID");
  std::vector<std::uint8_t> epk_spki;
  if (!unbase64(string_field(*wrapping, "epk"), epk_spki)) {
    throw InvalidArgument("wrapped keys: \"epk\" is not base64");
  }
  Pkey epk = pkey_of_spki(epk_spki);
  if (!epk) throw InvalidArgument("wrapped keys: \"epk\" is not a DER SubjectPublicKeyInfo");

  std::unique_ptr<BIO, BioFree> bio(
      BIO_new_mem_buf(private_key_pem.data(), static_cast<int>(private_key_pem.size())));
  Pkey priv(bio ? PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr) : nullptr);
  ERR_clear_error();
  if (!priv) throw InvalidArgument("private key: not an unencrypted PEM private key");
  const std::string own_curve = curve_of(priv.get());
  if (own_curve.empty()) {
    throw InvalidArgument("private key: the key is " + describe_key(priv.get()) +
                          "; wrapped keys need the EC key of the SAE's certificate");
  }
  const std::string epk_curve = curve_of(epk.get());
  if (epk_curve != own_curve) {
    throw InvalidArgument("private key: on " + own_curve + ", but the keys were wrapped on " +
                          (epk_curve.empty() ? std::string("another curve") : epk_curve) +
                          ": not the key they were wrapped to");
  }
  const std::vector<std::uint8_t> own_spki = spki_of(priv.get());
  const std::string own_hash = hex(sha256(own_spki));
  if (const auto* named = wrapping->if_contains("recipient_key_sha256");
      named != nullptr && named->is_string() && named->as_string() != own_hash) {
    throw InvalidArgument("private key: the keys were wrapped to the public key with SHA-256 " +
                          std::string(named->as_string()) + ", this private key's is " + own_hash);
  }
  const secure::Bytes z = ecdh(priv.get(), epk.get());

  const auto* keys = doc.as_object().if_contains("keys");
  if (keys == nullptr || !keys->is_array() || keys->as_array().empty()) {
    throw InvalidArgument("wrapped keys: \"keys\" missing or empty");
  }
  std::vector<PlainKey> out;
  out.reserve(keys->as_array().size());
  for (const json::value& v : keys->as_array()) {
    if (!v.is_object()) throw InvalidArgument("wrapped keys: a key is not an object");
    PlainKey p;
    p.key_id = string_field(v.as_object(), "key_ID");
    std::vector<std::uint8_t> wrapped;
    if (!unbase64(string_field(v.as_object(), "wrapped_key"), wrapped) || wrapped.size() < 16 ||
        wrapped.size() % 8 != 0) {
      throw InvalidArgument("wrapped keys: key " + p.key_id +
                            ": \"wrapped_key\" is not an RFC 5649 wrap in base64");
    }
    const secure::Bytes kek = derive_kek(z, p.key_id, master, slave, epk_spki, own_spki);
    p.bytes = aes_kwp(false, kek, wrapped);
    if (p.bytes.empty()) {
      throw InvalidArgument("wrapped keys: key " + p.key_id +
                            " does not unwrap (integrity check failed: wrong private key, or the "
                            "key ID, SAE IDs or wrap were altered)");
    }
    out.push_back(std::move(p));
  }
  return out;
}

}  // namespace qkdn::agent::wrap
