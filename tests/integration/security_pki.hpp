// Test PKI built with OpenSSL in a temporary folder: CAs and leaf certificates with chosen SAN
// URIs, extended key usages and validity windows (expired, not yet valid), written as PEM files.
// Used by the TLS matrix and slow-peer tests; independent of scripts/dev-ca.sh on purpose.
#pragma once

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "qkdn/net/tls.hpp"

namespace qkdn::test {

/// One issued certificate: the PEM files of a TLS endpoint.
struct Issued {
  std::string cert;
  std::string key;
  std::string ca;  ///< the CA bundle the holder verifies its peers with
  [[nodiscard]] qkdn::net::TlsFiles files() const { return {ca, cert, key}; }
};

/// What a leaf certificate says.
struct LeafSpec {
  std::string cn;
  std::vector<std::string> san_uris;  ///< e.g. "urn:qkdn:km:KM1"
  bool server_auth = true;
  bool client_auth = true;
  /// Validity relative to now.
  std::chrono::seconds not_before{-3600};
  std::chrono::seconds not_after{24 * 3600};
};

/// A CA that issues leaf certificates into a temporary folder (removed with the object).
class TestPki {
 public:
  TestPki() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "qkdn-pki-XXXXXX").string();
    if (::mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    dir_ = tmpl;
  }
  ~TestPki() {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  TestPki(const TestPki&) = delete;
  TestPki& operator=(const TestPki&) = delete;

  [[nodiscard]] const std::filesystem::path& dir() const { return dir_; }

  /// Creates a self-signed CA named `name` (files <name>-ca.pem / .key); returns its PEM path.
  std::string make_ca(const std::string& name) {
    auto key = new_key();
    X509Ptr cert(X509_new(), X509_free);
    X509_set_version(cert.get(), 2);
    set_serial(cert.get());
    X509_gmtime_adj(X509_getm_notBefore(cert.get()), -3600);
    X509_gmtime_adj(X509_getm_notAfter(cert.get()), 10L * 365 * 24 * 3600);
    X509_set_pubkey(cert.get(), key.get());
    set_cn(X509_get_subject_name(cert.get()), name);
    X509_set_issuer_name(cert.get(), X509_get_subject_name(cert.get()));
    add_ext(cert.get(), cert.get(), NID_basic_constraints, "critical,CA:TRUE");
    add_ext(cert.get(), cert.get(), NID_key_usage, "critical,keyCertSign,cRLSign");
    add_ext(cert.get(), cert.get(), NID_subject_key_identifier, "hash");
    sign(cert.get(), key.get());
    const auto base = (dir_ / (name + "-ca")).string();
    write(base, cert.get(), key.get());
    cas_[base + ".pem"] = Ca{std::move(cert), std::move(key)};
    return base + ".pem";
  }

  /// Issues a leaf certificate signed by the CA at `ca_pem` (from make_ca); files <file>.pem /
  /// .key. The returned Issued verifies peers with `verify_ca` (default: the issuing CA).
  Issued issue(const std::string& ca_pem, const std::string& file, const LeafSpec& spec,
               std::string verify_ca = {}) {
    auto& ca = cas_.at(ca_pem);
    auto key = new_key();
    X509Ptr cert(X509_new(), X509_free);
    X509_set_version(cert.get(), 2);
    set_serial(cert.get());
    X509_gmtime_adj(X509_getm_notBefore(cert.get()), static_cast<long>(spec.not_before.count()));
    X509_gmtime_adj(X509_getm_notAfter(cert.get()), static_cast<long>(spec.not_after.count()));
    X509_set_pubkey(cert.get(), key.get());
    set_cn(X509_get_subject_name(cert.get()), spec.cn);
    X509_set_issuer_name(cert.get(), X509_get_subject_name(ca.cert.get()));
    add_ext(ca.cert.get(), cert.get(), NID_basic_constraints, "CA:FALSE");
    add_ext(ca.cert.get(), cert.get(), NID_key_usage, "critical,digitalSignature");
    std::string eku;
    if (spec.server_auth) eku = "serverAuth";
    if (spec.client_auth) eku += std::string(eku.empty() ? "" : ",") + "clientAuth";
    if (!eku.empty()) add_ext(ca.cert.get(), cert.get(), NID_ext_key_usage, eku);
    std::string san;
    for (const auto& u : spec.san_uris) san += (san.empty() ? "URI:" : ",URI:") + u;
    if (!san.empty()) san += ",IP:127.0.0.1";
    if (!san.empty()) add_ext(ca.cert.get(), cert.get(), NID_subject_alt_name, san);
    sign(cert.get(), ca.key.get());
    const auto base = (dir_ / file).string();
    write(base, cert.get(), key.get());
    return Issued{base + ".pem", base + ".key", verify_ca.empty() ? ca_pem : verify_ca};
  }

 private:
  using X509Ptr = std::unique_ptr<X509, decltype(&X509_free)>;
  using KeyPtr = std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)>;
  struct Ca {
    Ca() : cert(nullptr, X509_free), key(nullptr, EVP_PKEY_free) {}
    Ca(X509Ptr c, KeyPtr k) : cert(std::move(c)), key(std::move(k)) {}
    X509Ptr cert;
    KeyPtr key;
  };

  static KeyPtr new_key() {
    KeyPtr k(EVP_EC_gen("P-256"), EVP_PKEY_free);
    if (!k) throw std::runtime_error("EC key generation failed");
    return k;
  }
  void set_serial(X509* cert) { ASN1_INTEGER_set(X509_get_serialNumber(cert), ++serial_); }
  static void set_cn(X509_NAME* name, const std::string& cn) {
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                               reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1, 0);
  }
  static void add_ext(X509* issuer, X509* cert, int nid, const std::string& value) {
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
    X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str());
    if (ext == nullptr) throw std::runtime_error("bad extension " + value);
    X509_add_ext(cert, ext, -1);
    X509_EXTENSION_free(ext);
  }
  static void sign(X509* cert, EVP_PKEY* key) {
    if (X509_sign(cert, key, EVP_sha256()) == 0) throw std::runtime_error("X509_sign failed");
  }
  static void write(const std::string& base, X509* cert, EVP_PKEY* key) {
    std::unique_ptr<FILE, decltype(&std::fclose)> c(std::fopen((base + ".pem").c_str(), "w"),
                                                    &std::fclose);
    std::unique_ptr<FILE, decltype(&std::fclose)> k(std::fopen((base + ".key").c_str(), "w"),
                                                    &std::fclose);
    if (!c || !k) throw std::runtime_error("cannot write " + base);
    PEM_write_X509(c.get(), cert);
    PEM_write_PrivateKey(k.get(), key, nullptr, nullptr, 0, nullptr, nullptr);
  }

  std::filesystem::path dir_;
  long serial_ = 1;
  std::map<std::string, Ca> cas_;
};

}  // namespace qkdn::test
