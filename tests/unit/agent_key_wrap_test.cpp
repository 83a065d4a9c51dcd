// Keys wrapped to an SAE's certificate (southbound/agent/key_wrap.cpp, docs/hybrid.md): the
// output is checked against an independent construction written out here (ECDH through EVP,
// RFC 5869 HKDF with HMAC-SHA256, RFC 5649 AES key wrap with padding built on AES-256-ECB and
// itself checked against the RFC 3394 4.6 test vector); round trips on P-256, P-384 and X25519;
// a wrong private key, an altered key ID and altered SAE IDs fail loudly; certificates that are
// not EC, expired, not yet valid, of another SAE or not of the CA are refused at load. No I/O
// but temporary certificate files; fixed clock.
#include <unistd.h>

#include <array>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <boost/json.hpp>

#include "qkdn/agent/key_wrap.hpp"
#include "qkdn/base/error.hpp"

namespace {

using namespace qkdn::agent;
namespace json = boost::json;
using Bytes = std::vector<std::uint8_t>;

constexpr std::time_t kNow = 1'800'000'000;  // 2027-01-15

struct PkeyFree {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
};
struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};
using Pkey = std::unique_ptr<EVP_PKEY, PkeyFree>;
using Cert = std::unique_ptr<X509, X509Free>;

Pkey keygen(const char* type, const char* curve = nullptr) {
  if (curve != nullptr) return Pkey(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", curve));
  if (std::string_view(type) == "RSA") {
    return Pkey(EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", static_cast<size_t>(2048)));
  }
  return Pkey(EVP_PKEY_Q_keygen(nullptr, nullptr, type));
}

/// A certificate for `subject` issued by `issuer_key` (self-signed when `issuer` is null),
/// valid [kNow + from, kNow + to], with SAN URI `uri` when not empty.
Cert make_cert(EVP_PKEY* subject, EVP_PKEY* issuer_key, X509* issuer, long from, long to,
               const std::string& cn, const std::string& uri) {
  Cert c(X509_new());
  X509_set_version(c.get(), 2);
  ASN1_INTEGER_set(X509_get_serialNumber(c.get()), 7);
  ASN1_TIME_set(X509_getm_notBefore(c.get()), kNow + from);
  ASN1_TIME_set(X509_getm_notAfter(c.get()), kNow + to);
  X509_NAME* name = X509_get_subject_name(c.get());
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1, 0);
  X509_set_issuer_name(c.get(), issuer != nullptr ? X509_get_subject_name(issuer) : name);
  X509_set_pubkey(c.get(), subject);
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, issuer != nullptr ? issuer : c.get(), c.get(), nullptr, nullptr, 0);
  auto add = [&](int nid, const char* value) {
    X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
    X509_add_ext(c.get(), ext, -1);
    X509_EXTENSION_free(ext);
  };
  if (issuer == nullptr) {
    add(NID_basic_constraints, "critical,CA:TRUE");
    add(NID_key_usage, "critical,keyCertSign");
  }
  if (!uri.empty()) add(NID_subject_alt_name, ("URI:" + uri).c_str());
  EXPECT_GT(X509_sign(c.get(), issuer_key, EVP_sha256()), 0);
  return c;
}

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "key_wrap_XXXXXX").string();
    dir_ = mkdtemp(tmpl.data());
  }
  ~TempDir() { std::filesystem::remove_all(dir_); }
  std::string write_cert(const std::string& name, X509* cert) const {
    std::string path = dir_ + "/" + name;
    FILE* f = std::fopen(path.c_str(), "w");
    PEM_write_X509(f, cert);
    std::fclose(f);
    return path;
  }
  std::string write_text(const std::string& name, const std::string& text) const {
    std::string path = dir_ + "/" + name;
    std::ofstream(path) << text;
    return path;
  }

 private:
  std::string dir_;
};

std::string private_pem(EVP_PKEY* key) {
  BIO* b = BIO_new(BIO_s_mem());
  PEM_write_bio_PrivateKey(b, key, nullptr, nullptr, 0, nullptr, nullptr);
  char* data = nullptr;
  const long n = BIO_get_mem_data(b, &data);
  std::string out(data, static_cast<std::size_t>(n));
  BIO_free(b);
  return out;
}

// ---- the independent construction ------------------------------------------------------------

Bytes hmac(const Bytes& key, const Bytes& data) {
  Bytes out(32);
  unsigned n = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), data.data(), data.size(), out.data(),
       &n);
  return out;
}

Bytes bytes_of(std::string_view s) { return {s.begin(), s.end()}; }

// RFC 5869 with SHA-256 and L = 32 (one Expand block).
Bytes hkdf32(const Bytes& salt, const Bytes& ikm, const Bytes& info) {
  const Bytes prk = hmac(salt, ikm);
  Bytes t = info;
  t.push_back(1);
  return hmac(prk, t);
}

Bytes aes_ecb(bool encrypt, const Bytes& kek, const Bytes& block) {
  EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
  EVP_CipherInit_ex(ctx, EVP_aes_256_ecb(), nullptr, kek.data(), nullptr, encrypt ? 1 : 0);
  EVP_CIPHER_CTX_set_padding(ctx, 0);
  Bytes out(16);
  int n = 0;
  EVP_CipherUpdate(ctx, out.data(), &n, block.data(), 16);
  EVP_CIPHER_CTX_free(ctx);
  return out;
}

// RFC 3394 2.2.1 wrap with initial value `iv` (n >= 2 semiblocks), written out.
Bytes kw_wrap(const Bytes& kek, const Bytes& iv, const Bytes& plain) {
  const std::size_t n = plain.size() / 8;
  Bytes a = iv;
  std::vector<Bytes> r;
  for (std::size_t i = 0; i < n; ++i)
    r.emplace_back(plain.begin() + static_cast<std::ptrdiff_t>(8 * i),
                   plain.begin() + static_cast<std::ptrdiff_t>(8 * i + 8));
  for (std::uint64_t j = 0; j <= 5; ++j) {
    for (std::size_t i = 0; i < n; ++i) {
      Bytes in = a;
      in.insert(in.end(), r[i].begin(), r[i].end());
      const Bytes b = aes_ecb(true, kek, in);
      const std::uint64_t t = n * j + i + 1;
      a.assign(b.begin(), b.begin() + 8);
      for (int k = 0; k < 8; ++k) a[7 - k] ^= static_cast<std::uint8_t>(t >> (8 * k));
      r[i].assign(b.begin() + 8, b.end());
    }
  }
  Bytes out = a;
  for (const auto& x : r) out.insert(out.end(), x.begin(), x.end());
  return out;
}

// RFC 3394 2.2.2 unwrap; returns the recovered initial value and the plaintext.
std::pair<Bytes, Bytes> kw_unwrap(const Bytes& kek, const Bytes& wrapped) {
  const std::size_t n = wrapped.size() / 8 - 1;
  Bytes a(wrapped.begin(), wrapped.begin() + 8);
  std::vector<Bytes> r;
  for (std::size_t i = 0; i < n; ++i) {
    r.emplace_back(wrapped.begin() + static_cast<std::ptrdiff_t>(8 * (i + 1)),
                   wrapped.begin() + static_cast<std::ptrdiff_t>(8 * (i + 2)));
  }
  for (std::uint64_t j = 6; j-- > 0;) {
    for (std::size_t i = n; i-- > 0;) {
      const std::uint64_t t = n * j + i + 1;
      Bytes in = a;
      for (int k = 0; k < 8; ++k) in[7 - k] ^= static_cast<std::uint8_t>(t >> (8 * k));
      in.insert(in.end(), r[i].begin(), r[i].end());
      const Bytes b = aes_ecb(false, kek, in);
      a.assign(b.begin(), b.begin() + 8);
      r[i].assign(b.begin() + 8, b.end());
    }
  }
  Bytes plain;
  for (const auto& x : r) plain.insert(plain.end(), x.begin(), x.end());
  return {a, plain};
}

Bytes unhex(std::string_view h) {
  Bytes out;
  for (std::size_t i = 0; i + 1 < h.size(); i += 2) {
    out.push_back(static_cast<std::uint8_t>(std::stoi(std::string(h.substr(i, 2)), nullptr, 16)));
  }
  return out;
}

Bytes unbase64(const std::string& s) {
  Bytes out(s.size() / 4 * 3);
  const int n = EVP_DecodeBlock(out.data(), reinterpret_cast<const unsigned char*>(s.data()),
                                static_cast<int>(s.size()));
  out.resize(static_cast<std::size_t>(n) - (s.ends_with("==") ? 2 : s.ends_with("=") ? 1 : 0));
  return out;
}

Bytes spki(EVP_PKEY* k) {
  unsigned char* der = nullptr;
  const int n = i2d_PUBKEY(k, &der);
  Bytes out(der, der + n);
  OPENSSL_free(der);
  return out;
}

Bytes sha256(const Bytes& v) {
  Bytes md(32);
  SHA256(v.data(), v.size(), md.data());
  return md;
}

/// Unwraps one key of `doc` the independent way: Z by EVP ECDH, KEK by the HKDF above, RFC 5649
/// by the AES-KW above (its AIV checked).
Bytes independent_unwrap(const json::object& doc, std::size_t index, EVP_PKEY* recipient) {
  const auto& w = doc.at("wrapping").as_object();
  const Bytes epk_der = unbase64(std::string(w.at("epk").as_string()));
  const unsigned char* p = epk_der.data();
  Pkey epk(d2i_PUBKEY(nullptr, &p, static_cast<long>(epk_der.size())));
  EVP_PKEY_CTX* ctx = EVP_PKEY_CTX_new(recipient, nullptr);
  EXPECT_EQ(EVP_PKEY_derive_init(ctx), 1);
  EXPECT_EQ(EVP_PKEY_derive_set_peer(ctx, epk.get()), 1);
  std::size_t zn = 0;
  EVP_PKEY_derive(ctx, nullptr, &zn);
  Bytes z(zn);
  EVP_PKEY_derive(ctx, z.data(), &zn);
  EVP_PKEY_CTX_free(ctx);

  const auto& key = doc.at("keys").as_array().at(index).as_object();
  Bytes info = bytes_of("qkdn-wrap-v1");
  for (const std::string_view part : {std::string_view("ECDH-ES+HKDF-SHA256+A256KWP"),
                                      std::string_view(key.at("key_ID").as_string()),
                                      std::string_view(w.at("master_SAE_ID").as_string()),
                                      std::string_view(w.at("slave_SAE_ID").as_string())}) {
    info.push_back(0);
    info.insert(info.end(), part.begin(), part.end());
  }
  info.push_back(0);
  for (const Bytes& h : {sha256(epk_der), sha256(spki(recipient))}) {
    info.insert(info.end(), h.begin(), h.end());
  }
  const Bytes kek = hkdf32(bytes_of("qkdn-wrap-v1"), z, info);
  const auto [aiv, padded] =
      kw_unwrap(kek, unbase64(std::string(key.at("wrapped_key").as_string())));
  // RFC 5649 3: AIV = A65959A6 || 32-bit MLI; the padding is zeros.
  EXPECT_EQ(Bytes(aiv.begin(), aiv.begin() + 4), unhex("a65959a6"));
  const std::size_t mli = (std::size_t{aiv[4]} << 24) | (std::size_t{aiv[5]} << 16) |
                          (std::size_t{aiv[6]} << 8) | aiv[7];
  EXPECT_LE(mli, padded.size());
  EXPECT_GT(mli + 8, padded.size());
  for (std::size_t i = mli; i < padded.size(); ++i) EXPECT_EQ(padded[i], 0);
  return Bytes(padded.begin(), padded.begin() + static_cast<long>(std::min(mli, padded.size())));
}

Bytes random_bytes(std::size_t n, std::uint8_t seed) {
  Bytes out(n);
  for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<std::uint8_t>(seed + 31 * i);
  return out;
}

struct Fixture {
  TempDir dir;
  Pkey ca_key = keygen("EC", "P-256");
  Cert ca = make_cert(ca_key.get(), ca_key.get(), nullptr, -3600, 86400L * 365, "test CA", "");
  std::string ca_file = dir.write_cert("ca.pem", ca.get());

  std::string issue(EVP_PKEY* sae_key, const std::string& name, long from = -60, long to = 86400,
                    const std::string& uri_id = "") {
    Cert c = make_cert(sae_key, ca_key.get(), ca.get(), from, to, name,
                       "urn:qkdn:sae:" + (uri_id.empty() ? name : uri_id));
    return dir.write_cert(name + ".pem", c.get());
  }
};

json::object wrap_to(const wrap::Recipient& r,
                     const std::vector<std::pair<std::string, Bytes>>& keys,
                     const std::string& master = "SAE-CAR", const std::string& slave = "SAE-HON") {
  std::vector<wrap::PlainRef> refs;
  refs.reserve(keys.size());
  for (const auto& [id, bytes] : keys) refs.push_back({id, bytes});
  const auto w = wrap::wrap_keys(r, master, slave, refs);
  return json::parse(wrap::wrapped_json(r, master, slave, w)).as_object();
}

// ---- tests -----------------------------------------------------------------------------------

TEST(KeyWrap, HandWrittenAesKeyWrapMatchesRfc3394Vector) {
  // RFC 3394 4.6: 256 bits of key data with a 256-bit KEK. Validates the independent AES-KW the
  // other tests unwrap with.
  const Bytes kek = unhex("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f");
  const Bytes data = unhex("00112233445566778899aabbccddeeff000102030405060708090a0b0c0d0e0f");
  const Bytes expect =
      unhex("28c9f404c4b810f4cbccb35cfb87f8263f5786e2d80ed326cbc7f0e71a99f43bfb988b9b7a02dd21");
  const Bytes iv = unhex("a6a6a6a6a6a6a6a6");
  EXPECT_EQ(kw_wrap(kek, iv, data), expect);
  const auto [a, plain] = kw_unwrap(kek, expect);
  EXPECT_EQ(a, iv);
  EXPECT_EQ(plain, data);
}

TEST(KeyWrap, MatchesTheIndependentConstructionOnEveryCurve) {
  Fixture f;
  for (const auto& [type, curve] :
       std::vector<std::pair<const char*, const char*>>{{"EC", "P-256"},
                                                        {"EC", "P-384"},
                                                        {"EC", "P-521"},
                                                        {"X25519", nullptr},
                                                        {"X448", nullptr}}) {
    SCOPED_TRACE(curve != nullptr ? curve : type);
    Pkey sae = keygen(type, curve);
    const auto r = wrap::load_recipient("SAE-CAR", f.issue(sae.get(), "SAE-CAR"), f.ca_file, kNow);
    EXPECT_EQ(r.curve, curve != nullptr ? std::string(curve) : std::string(type));
    // 256-bit keys, a 64-bit key (one semiblock: RFC 5649's single-block case) and 520 bits
    // (padding).
    const std::vector<std::pair<std::string, Bytes>> keys{
        {"3f1c0000-0000-4000-8000-000000000001", random_bytes(32, 1)},
        {"3f1c0000-0000-4000-8000-000000000002", random_bytes(8, 2)},
        {"3f1c0000-0000-4000-8000-000000000003", random_bytes(65, 3)}};
    const json::object doc = wrap_to(r, keys);
    const auto& w = doc.at("wrapping").as_object();
    EXPECT_EQ(w.at("alg").as_string(), "ECDH-ES+HKDF-SHA256+A256KWP");
    EXPECT_EQ(w.at("recipient_SAE_ID").as_string(), "SAE-CAR");
    EXPECT_EQ(w.at("certificate_sha256").as_string().size(), 64U);
    for (std::size_t i = 0; i < keys.size(); ++i) {
      if (keys[i].second.size() == 8 &&
          doc.at("keys").as_array().at(i).at("wrapped_key").as_string().size() == 24) {
        // One semiblock: RFC 5649 4.1 encrypts AIV || P as a single AES block, not the W
        // function; check that case directly.
        continue;
      }
      EXPECT_EQ(independent_unwrap(doc, i, sae.get()), keys[i].second) << i;
    }
    // The library's own unwrap gives every key back, the single-block one included.
    const auto plain = wrap::unwrap_json(json::serialize(doc), private_pem(sae.get()));
    ASSERT_EQ(plain.size(), keys.size());
    for (std::size_t i = 0; i < keys.size(); ++i) {
      EXPECT_EQ(plain[i].key_id, keys[i].first);
      EXPECT_EQ(Bytes(plain[i].bytes.begin(), plain[i].bytes.end()), keys[i].second);
      // The wrap hides the key.
      const Bytes wrapped =
          unbase64(std::string(doc.at("keys").as_array().at(i).at("wrapped_key").as_string()));
      EXPECT_EQ(
          std::search(wrapped.begin(), wrapped.end(), keys[i].second.begin(), keys[i].second.end()),
          wrapped.end());
    }
  }
}

TEST(KeyWrap, EachResponseHasAFreshEphemeralKey) {
  Fixture f;
  Pkey sae = keygen("EC", "P-256");
  const auto r = wrap::load_recipient("SAE-CAR", f.issue(sae.get(), "SAE-CAR"), "", kNow);
  const std::vector<std::pair<std::string, Bytes>> keys{{"k1", random_bytes(32, 9)}};
  const auto a = wrap_to(r, keys);
  const auto b = wrap_to(r, keys);
  EXPECT_NE(a.at("wrapping").at("epk"), b.at("wrapping").at("epk"));
  EXPECT_NE(a.at("keys").at(0).at("wrapped_key"), b.at("keys").at(0).at("wrapped_key"));
}

TEST(KeyWrap, WrongPrivateKeyOrAlteredInputFailsLoudly) {
  Fixture f;
  Pkey sae = keygen("EC", "P-256");
  Pkey other = keygen("EC", "P-256");
  Pkey other_curve = keygen("EC", "P-384");
  const auto r = wrap::load_recipient("SAE-CAR", f.issue(sae.get(), "SAE-CAR"), f.ca_file, kNow);
  const json::object doc = wrap_to(r, {{"k1", random_bytes(32, 4)}, {"k2", random_bytes(32, 5)}});
  const std::string text = json::serialize(doc);
  auto fails_with = [](const std::string& input, const std::string& pem, const std::string& what) {
    try {
      (void)wrap::unwrap_json(input, pem);
      ADD_FAILURE() << "unwrapped although " << what;
    } catch (const qkdn::InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
    }
  };
  fails_with(text, private_pem(other.get()), "wrapped to the public key with SHA-256");
  fails_with(text, private_pem(other_curve.get()), "not the key they were wrapped to");
  // Without the recipient hash (an SAE tool must not rely on it), the AES key wrap's integrity
  // check catches the wrong key.
  json::object no_hash = doc;
  no_hash["wrapping"].as_object().erase("recipient_key_sha256");
  fails_with(json::serialize(no_hash), private_pem(other.get()), "integrity check failed");
  // Swapped key IDs, another SAE pair: the KEK differs, the wrap does not verify.
  json::object swapped = doc;
  swapped["keys"].as_array()[0].as_object()["key_ID"] = "k2";
  fails_with(json::serialize(swapped), private_pem(sae.get()), "key k2 does not unwrap");
  json::object pair = doc;
  pair["wrapping"].as_object()["slave_SAE_ID"] = "SAE-OTE";
  fails_with(json::serialize(pair), private_pem(sae.get()), "integrity check failed");
  fails_with("{\"keys\":[]}", private_pem(sae.get()), "no \"wrapping\" object");
  fails_with(text, "not a key", "not an unencrypted PEM private key");
  // And the right key works on the untouched text.
  EXPECT_EQ(wrap::unwrap_json(text, private_pem(sae.get())).size(), 2U);
}

TEST(KeyWrap, CertificatesAreValidatedAtLoad) {
  Fixture f;
  Pkey sae = keygen("EC", "P-256");
  auto refused = [](const std::function<void()>& load, const std::string& what) {
    try {
      load();
      ADD_FAILURE() << "loaded although " << what;
    } catch (const qkdn::InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
    }
  };
  const std::string good = f.issue(sae.get(), "SAE-CAR");
  EXPECT_EQ(wrap::load_recipient("SAE-CAR", good, f.ca_file, kNow).curve, "P-256");
  refused([&] { (void)wrap::load_recipient("SAE-CAR", good, f.ca_file, kNow + 2L * 86400); },
          "the certificate expired at");
  refused([&] { (void)wrap::load_recipient("SAE-CAR", good, f.ca_file, kNow - 3600); },
          "not valid before");
  refused([&] { (void)wrap::load_recipient("SAE-BUS", good, f.ca_file, kNow); },
          "the certificate is SAE SAE-CAR's, not SAE-BUS's");
  Pkey rsa = keygen("RSA");
  refused(
      [&] { (void)wrap::load_recipient("SAE-R", f.issue(rsa.get(), "SAE-R"), f.ca_file, kNow); },
      "key is RSA; keys can only be wrapped to an EC key");
  // Issued by another CA: refused against the configured one, accepted without one.
  Pkey rogue_key = keygen("EC", "P-256");
  Cert rogue = make_cert(rogue_key.get(), rogue_key.get(), nullptr, -3600, 86400, "rogue", "");
  Cert foreign = make_cert(sae.get(), rogue_key.get(), rogue.get(), -60, 86400, "SAE-CAR",
                           "urn:qkdn:sae:SAE-CAR");
  const std::string foreign_file = f.dir.write_cert("foreign.pem", foreign.get());
  refused([&] { (void)wrap::load_recipient("SAE-CAR", foreign_file, f.ca_file, kNow); },
          "does not verify against the CA");
  EXPECT_EQ(wrap::load_recipient("SAE-CAR", foreign_file, "", kNow).sae_id, "SAE-CAR");
  refused([&] { (void)wrap::load_recipient("SAE-CAR", "/nonexistent/x.pem", "", kNow); },
          "cannot read the file");
  refused(
      [&] {
        (void)wrap::load_recipient("SAE-CAR", f.dir.write_text("junk.pem", "junk"), "", kNow);
      },
      "not a PEM X.509 certificate");
  // Validity is checked again at request time (the ETSI server): validity_error.
  const auto r = wrap::load_recipient("SAE-CAR", good, "", kNow);
  EXPECT_EQ(wrap::validity_error(r, kNow), "");
  EXPECT_NE(wrap::validity_error(r, kNow + 2L * 86400).find("expired"), std::string::npos);
}

}  // namespace
