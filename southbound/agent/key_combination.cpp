// Key combination (key_combination.hpp, docs/hybrid.md "Key combination").
#include "qkdn/agent/key_combination.hpp"

#include <cstring>
#include <stdexcept>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/opensslv.h>
#include <boost/json.hpp>

#include "qkdn/controller/error.hpp"

namespace qkdn::agent::hybrid {

namespace json = boost::json;

namespace {

constexpr std::string_view kLabel = "qkdn-hybrid-v1";
constexpr std::string_view kSuiteX25519 = "x25519";
constexpr std::string_view kSuiteBoth = "x25519+mlkem768";
constexpr std::size_t kX25519Bytes = 32;
constexpr std::size_t kMaxKemBytes = 4096;  // ML-KEM-768: 1,184-byte key, 1,088-byte ciphertext

struct PkeyFree {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
};
struct CtxFree {
  void operator()(EVP_PKEY_CTX* c) const { EVP_PKEY_CTX_free(c); }
};
using Pkey = std::unique_ptr<EVP_PKEY, PkeyFree>;
using Ctx = std::unique_ptr<EVP_PKEY_CTX, CtxFree>;

[[noreturn]] void fail(const std::string& what) { throw std::runtime_error(what); }

std::string to_hex(const std::vector<std::uint8_t>& v) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string s;
  s.reserve(v.size() * 2);
  for (auto b : v) {
    s.push_back(kDigits[b >> 4]);
    s.push_back(kDigits[b & 15]);
  }
  return s;
}

int nibble(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

/// The hex string `field` of `o`, decoded; its size must be `size` (0: any up to kMaxKemBytes).
std::vector<std::uint8_t> hex_field(const json::object& o, std::string_view field,
                                    std::size_t size) {
  const auto* v = o.if_contains(field);
  if (v == nullptr || !v->is_string()) fail("key combination: missing " + std::string(field));
  const auto& s = v->as_string();
  if (s.size() % 2 != 0 || s.size() / 2 > kMaxKemBytes || (size != 0 && s.size() != 2 * size)) {
    fail("key combination: bad " + std::string(field));
  }
  std::vector<std::uint8_t> out(s.size() / 2);
  for (std::size_t i = 0; i < out.size(); ++i) {
    const int hi = nibble(s[2 * i]);
    const int lo = nibble(s[2 * i + 1]);
    if (hi < 0 || lo < 0) fail("key combination: bad " + std::string(field));
    out[i] = static_cast<std::uint8_t>(hi * 16 + lo);
  }
  return out;
}

const json::object& as_object(const json::value& v, std::string_view what) {
  if (!v.is_object()) fail("key combination: " + std::string(what) + " is not an object");
  return v.as_object();
}

std::string suite_of(const json::object& o) {
  const auto* v = o.if_contains("suite");
  if (v == nullptr || !v->is_string()) fail("key combination: missing suite");
  std::string s(v->as_string());
  if (s != kSuiteX25519 && s != kSuiteBoth) fail("key combination: unknown suite " + s);
  return s;
}

std::vector<std::uint8_t> raw_public(EVP_PKEY* key) {
  std::size_t n = 0;
  if (EVP_PKEY_get_raw_public_key(key, nullptr, &n) != 1) fail("key combination: public key");
  std::vector<std::uint8_t> out(n);
  if (EVP_PKEY_get_raw_public_key(key, out.data(), &n) != 1) fail("key combination: public key");
  out.resize(n);
  return out;
}

std::vector<std::uint8_t> encoded_public(EVP_PKEY* key) {
  std::size_t n = 0;
  if (EVP_PKEY_get_octet_string_param(key, OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, nullptr, 0, &n) !=
      1) {
    fail("key combination: ML-KEM encapsulation key");
  }
  std::vector<std::uint8_t> out(n);
  if (EVP_PKEY_get_octet_string_param(key, OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, out.data(),
                                      out.size(), &n) != 1) {
    fail("key combination: ML-KEM encapsulation key");
  }
  out.resize(n);
  return out;
}

/// X25519(own, peer) appended to `out`; an all-zero result (a low-order peer point) is refused.
void x25519(EVP_PKEY* own, const std::vector<std::uint8_t>& peer_public, secure::Bytes& out) {
  Pkey peer(EVP_PKEY_new_raw_public_key(EVP_PKEY_X25519, nullptr, peer_public.data(),
                                        peer_public.size()));
  if (!peer) fail("key combination: bad X25519 public key");
  Ctx ctx(EVP_PKEY_CTX_new(own, nullptr));
  std::size_t n = kX25519Bytes;
  secure::Bytes z(kX25519Bytes);
  if (!ctx || EVP_PKEY_derive_init(ctx.get()) != 1 ||
      EVP_PKEY_derive_set_peer(ctx.get(), peer.get()) != 1 ||
      EVP_PKEY_derive(ctx.get(), z.data(), &n) != 1 || n != kX25519Bytes) {
    fail("key combination: X25519 failed");
  }
  std::uint8_t any = 0;
  for (auto b : z) any |= b;
  if (any == 0) fail("key combination: X25519 gave the zero secret (low-order point)");
  out.insert(out.end(), z.begin(), z.end());
}

Pkey generate(const char* name) {
  Pkey key(EVP_PKEY_Q_keygen(nullptr, nullptr, name));
  if (!key) fail(std::string("key combination: cannot make a ") + name + " key");
  return key;
}

std::array<std::uint8_t, 32> transcript_hash(std::string_view suite,
                                             const std::vector<std::vector<std::uint8_t>>& parts) {
  std::array<std::uint8_t, 32> out{};
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> md(EVP_MD_CTX_new(), &EVP_MD_CTX_free);
  bool ok = md && EVP_DigestInit_ex(md.get(), EVP_sha256(), nullptr) == 1 &&
            EVP_DigestUpdate(md.get(), kLabel.data(), kLabel.size()) == 1 &&
            EVP_DigestUpdate(md.get(), suite.data(), suite.size()) == 1;
  for (const auto& p : parts) {
    const std::uint8_t len[4] = {
        static_cast<std::uint8_t>(p.size() >> 24), static_cast<std::uint8_t>(p.size() >> 16),
        static_cast<std::uint8_t>(p.size() >> 8), static_cast<std::uint8_t>(p.size())};
    ok = ok && EVP_DigestUpdate(md.get(), len, sizeof len) == 1 &&
         EVP_DigestUpdate(md.get(), p.data(), p.size()) == 1;
  }
  unsigned n = 0;
  if (!ok || EVP_DigestFinal_ex(md.get(), out.data(), &n) != 1) fail("key combination: SHA-256");
  return out;
}

}  // namespace

std::string_view mode_name(Mode mode) { return mode == Mode::kHybrid ? "hybrid" : "qkd"; }

Mode Policy::of(const std::string& sae_a, const std::string& sae_b) const {
  auto key = sae_a < sae_b ? std::make_pair(sae_a, sae_b) : std::make_pair(sae_b, sae_a);
  auto it = pairs.find(key);
  return it == pairs.end() ? default_mode : it->second;
}

void Policy::add_rule(std::string_view rule) {
  auto mode_of = [&](std::string_view m) {
    if (m == "qkd") return Mode::kQkd;
    if (m == "hybrid") return Mode::kHybrid;
    throw InvalidArgument("--key-combination '" + std::string(rule) +
                          "': expected qkd, hybrid or SAE1:SAE2=qkd|hybrid");
  };
  const auto eq = rule.find('=');
  if (eq == std::string_view::npos) {
    default_mode = mode_of(rule);
    return;
  }
  const auto pair = rule.substr(0, eq);
  const auto colon = pair.find(':');
  if (colon == std::string_view::npos || colon == 0 || colon + 1 == pair.size() ||
      pair.find(':', colon + 1) != std::string_view::npos) {
    throw InvalidArgument("--key-combination '" + std::string(rule) +
                          "': expected SAE1:SAE2=qkd|hybrid (SAE IDs without ':')");
  }
  std::string a(pair.substr(0, colon));
  std::string b(pair.substr(colon + 1));
  if (a == b) throw InvalidArgument("--key-combination '" + std::string(rule) + "': same SAE");
  if (b < a) std::swap(a, b);
  pairs[{a, b}] = mode_of(rule.substr(eq + 1));
}

bool mlkem_available() {
#if defined(QKDN_HAVE_MLKEM)
  static const bool available = [] {
    Ctx ctx(EVP_PKEY_CTX_new_from_name(nullptr, "ML-KEM-768", nullptr));
    return ctx != nullptr;
  }();
  return available;
#else
  return false;
#endif
}

std::string capabilities() {
  std::string s = "key combination: qkd, hybrid (X25519";
  s += mlkem_available() ? " + ML-KEM-768" : "; ML-KEM-768 not in this OpenSSL";
  s += std::string("), built with ") + OPENSSL_VERSION_TEXT + ", running " +
       OpenSSL_version(OPENSSL_VERSION);
  return s;
}

struct Initiator::Keys {
  Pkey x25519;
  Pkey mlkem;  ///< null without ML-KEM
  std::vector<std::uint8_t> x25519_public;
  std::vector<std::uint8_t> mlkem_public;
};

Initiator::Initiator() : keys_(std::make_unique<Keys>()) {
  keys_->x25519 = generate("X25519");
  keys_->x25519_public = raw_public(keys_->x25519.get());
  if (mlkem_available()) {
    keys_->mlkem = generate("ML-KEM-768");
    keys_->mlkem_public = encoded_public(keys_->mlkem.get());
  }
}

Initiator::~Initiator() = default;

json::object Initiator::offer() const {
  json::object o{{"suite", keys_->mlkem ? kSuiteBoth : kSuiteX25519},
                 {"x25519", to_hex(keys_->x25519_public)}};
  if (keys_->mlkem) o["mlkem768_ek"] = to_hex(keys_->mlkem_public);
  return o;
}

Shared Initiator::finish(const json::value& answer) const {
  const auto& a = as_object(answer, "answer");
  Shared s;
  s.suite = suite_of(a);
  if (s.suite != (keys_->mlkem ? kSuiteBoth : kSuiteX25519)) {
    fail("key combination: answer suite " + s.suite + " does not match the offer");
  }
  const auto peer = hex_field(a, "x25519", kX25519Bytes);
  x25519(keys_->x25519.get(), peer, s.secret);
  std::vector<std::vector<std::uint8_t>> parts{keys_->x25519_public, peer};
  if (keys_->mlkem) {
    const auto ct = hex_field(a, "mlkem768_ct", 0);
    Ctx ctx(EVP_PKEY_CTX_new_from_pkey(nullptr, keys_->mlkem.get(), nullptr));
    std::size_t n = 0;
    if (!ctx || EVP_PKEY_decapsulate_init(ctx.get(), nullptr) != 1 ||
        EVP_PKEY_decapsulate(ctx.get(), nullptr, &n, ct.data(), ct.size()) != 1) {
      fail("key combination: ML-KEM-768 decapsulation failed");
    }
    secure::Bytes k(n);
    if (EVP_PKEY_decapsulate(ctx.get(), k.data(), &n, ct.data(), ct.size()) != 1) {
      fail("key combination: ML-KEM-768 decapsulation failed");
    }
    s.secret.insert(s.secret.end(), k.begin(), k.begin() + static_cast<std::ptrdiff_t>(n));
    parts.push_back(keys_->mlkem_public);
    parts.push_back(ct);
  }
  s.transcript = transcript_hash(s.suite, parts);
  return s;
}

Response respond(const json::value& offer) {
  const auto& o = as_object(offer, "offer");
  Response r;
  r.shared.suite = suite_of(o);
  const bool kem = r.shared.suite == kSuiteBoth;
  if (kem && !mlkem_available()) {
    fail("key combination: ML-KEM-768 offered but not available at this KM");
  }
  const auto peer = hex_field(o, "x25519", kX25519Bytes);
  Pkey own = generate("X25519");
  const auto own_public = raw_public(own.get());
  x25519(own.get(), peer, r.shared.secret);
  r.answer = json::object{{"suite", r.shared.suite}, {"x25519", to_hex(own_public)}};
  std::vector<std::vector<std::uint8_t>> parts{peer, own_public};
  if (kem) {
    const auto ek = hex_field(o, "mlkem768_ek", 0);
    Pkey pk(EVP_PKEY_new_raw_public_key_ex(nullptr, "ML-KEM-768", nullptr, ek.data(), ek.size()));
    if (!pk) fail("key combination: bad ML-KEM-768 encapsulation key");
    Ctx ctx(EVP_PKEY_CTX_new_from_pkey(nullptr, pk.get(), nullptr));
    std::size_t ct_len = 0;
    std::size_t k_len = 0;
    if (!ctx || EVP_PKEY_encapsulate_init(ctx.get(), nullptr) != 1 ||
        EVP_PKEY_encapsulate(ctx.get(), nullptr, &ct_len, nullptr, &k_len) != 1) {
      fail("key combination: ML-KEM-768 encapsulation failed");
    }
    std::vector<std::uint8_t> ct(ct_len);
    secure::Bytes k(k_len);
    if (EVP_PKEY_encapsulate(ctx.get(), ct.data(), &ct_len, k.data(), &k_len) != 1) {
      fail("key combination: ML-KEM-768 encapsulation failed");
    }
    ct.resize(ct_len);
    r.shared.secret.insert(r.shared.secret.end(), k.begin(),
                           k.begin() + static_cast<std::ptrdiff_t>(k_len));
    r.answer["mlkem768_ct"] = to_hex(ct);
    parts.push_back(ek);
    parts.push_back(ct);
  }
  r.shared.transcript = transcript_hash(r.shared.suite, parts);
  return r;
}

std::string exchange_of(std::string_view payload) {
  boost::system::error_code ec;
  const auto v = json::parse(payload, ec);
  if (ec || !v.is_object()) return {};
  const auto* x = v.as_object().if_contains(kFrameField);
  return x == nullptr ? std::string{} : json::serialize(*x);
}

std::string string_of(std::string_view payload, std::string_view field) {
  boost::system::error_code ec;
  const auto v = json::parse(payload, ec);
  if (ec || !v.is_object()) return {};
  const auto* x = v.as_object().if_contains(field);
  return x == nullptr || !x->is_string() ? std::string{} : std::string(x->as_string());
}

void combine(secure::Bytes& bytes, const Shared& shared, const std::string& key_id,
             const std::string& master_sae, const std::string& slave_sae) {
  secure::Bytes ikm(bytes.begin(), bytes.end());
  ikm.insert(ikm.end(), shared.secret.begin(), shared.secret.end());
  std::string info(kLabel);
  for (const std::string* part : {&key_id, &master_sae, &slave_sae}) {
    info.push_back('\0');
    info += *part;
  }
  info.push_back('\0');
  info.append(reinterpret_cast<const char*>(shared.transcript.data()), shared.transcript.size());
  std::unique_ptr<EVP_KDF, decltype(&EVP_KDF_free)> kdf(EVP_KDF_fetch(nullptr, "HKDF", nullptr),
                                                        &EVP_KDF_free);
  std::unique_ptr<EVP_KDF_CTX, decltype(&EVP_KDF_CTX_free)> ctx(
      kdf ? EVP_KDF_CTX_new(kdf.get()) : nullptr, &EVP_KDF_CTX_free);
  std::string digest = "SHA256";
  std::string salt(kLabel);
  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, digest.data(), 0),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, ikm.data(), ikm.size()),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, salt.data(), salt.size()),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, info.data(), info.size()),
      OSSL_PARAM_construct_end()};
  secure::Bytes out(bytes.size());
  if (!ctx || EVP_KDF_derive(ctx.get(), out.data(), out.size(), params) != 1) {
    fail("key combination: HKDF-SHA256 failed");
  }
  bytes = std::move(out);  // the old buffer is wiped by the secure allocator
}

}  // namespace qkdn::agent::hybrid
