// Key combination (southbound/agent/key_combination.cpp, docs/hybrid.md): the two end KMs get the
// same secret from an offer and its answer, the delivered key is exactly
// HKDF-SHA256(salt, QKD key || secret, info) computed here independently with HMAC-SHA256
// (RFC 5869), it differs from the QKD key, and it changes with the key ID, the SAE pair and the
// secret. Malformed or mismatched exchanges are refused. No I/O.
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <boost/json.hpp>

#include "qkdn/agent/key_combination.hpp"
#include "qkdn/base/error.hpp"

namespace {

using namespace qkdn::agent;
namespace json = boost::json;

std::vector<std::uint8_t> hmac(const std::vector<std::uint8_t>& key,
                               const std::vector<std::uint8_t>& data) {
  std::vector<std::uint8_t> out(32);
  unsigned n = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), data.data(), data.size(), out.data(),
       &n);
  return out;
}

std::vector<std::uint8_t> bytes_of(std::string_view s) { return {s.begin(), s.end()}; }

// RFC 5869 with SHA-256, written out: Extract then Expand.
std::vector<std::uint8_t> hkdf(const std::vector<std::uint8_t>& salt,
                               const std::vector<std::uint8_t>& ikm,
                               const std::vector<std::uint8_t>& info, std::size_t length) {
  const auto prk = hmac(salt, ikm);
  std::vector<std::uint8_t> out;
  std::vector<std::uint8_t> t;
  for (std::uint8_t i = 1; out.size() < length; ++i) {
    std::vector<std::uint8_t> block = t;
    block.insert(block.end(), info.begin(), info.end());
    block.push_back(i);
    t = hmac(prk, block);
    out.insert(out.end(), t.begin(), t.end());
  }
  out.resize(length);
  return out;
}

secure::Bytes qkd_key(std::size_t n, std::uint8_t seed) {
  secure::Bytes k(n);
  for (std::size_t i = 0; i < n; ++i) k[i] = static_cast<std::uint8_t>(seed + 7 * i);
  return k;
}

struct Pair {
  hybrid::Shared source;
  hybrid::Shared destination;
};

Pair exchange() {
  hybrid::Initiator a;
  const auto r = hybrid::respond(a.offer());
  return {a.finish(r.answer), r.shared};
}

TEST(KeyCombination, BothEndsShareTheSecretAndTranscript) {
  const auto p = exchange();
  EXPECT_EQ(p.source.suite, hybrid::mlkem_available() ? "x25519+mlkem768" : "x25519");
  EXPECT_EQ(p.source.suite, p.destination.suite);
  ASSERT_EQ(p.source.secret.size(), hybrid::mlkem_available() ? 64U : 32U);
  EXPECT_EQ(p.source.secret, p.destination.secret);
  EXPECT_EQ(p.source.transcript, p.destination.transcript);
  // Fresh ephemeral keys every time.
  const auto q = exchange();
  EXPECT_NE(p.source.secret, q.source.secret);
  EXPECT_NE(p.source.transcript, q.source.transcript);
}

TEST(KeyCombination, DeliveredKeyIsHkdfOverQkdKeyAndSecret) {
  const auto p = exchange();
  for (std::size_t size : {8U, 32U, 64U, 96U}) {
    const auto raw = qkd_key(size, 3);
    auto at_source = raw;
    auto at_destination = raw;
    hybrid::combine(at_source, p.source, "key-1", "SAE-A", "SAE-B");
    hybrid::combine(at_destination, p.destination, "key-1", "SAE-A", "SAE-B");
    EXPECT_EQ(at_source, at_destination) << size;
    EXPECT_NE(at_source, raw) << "the hybrid key must differ from the QKD key";
    ASSERT_EQ(at_source.size(), size);

    std::vector<std::uint8_t> ikm(raw.begin(), raw.end());
    ikm.insert(ikm.end(), p.source.secret.begin(), p.source.secret.end());
    std::vector<std::uint8_t> info = bytes_of("qkdn-hybrid-v1");
    for (std::string_view part : {"key-1", "SAE-A", "SAE-B"}) {
      info.push_back(0);
      info.insert(info.end(), part.begin(), part.end());
    }
    info.push_back(0);
    info.insert(info.end(), p.source.transcript.begin(), p.source.transcript.end());
    const auto expect = hkdf(bytes_of("qkdn-hybrid-v1"), ikm, info, size);
    EXPECT_EQ(std::vector<std::uint8_t>(at_source.begin(), at_source.end()), expect) << size;
  }
}

TEST(KeyCombination, ContextAndBothInputsChangeTheKey) {
  const auto p = exchange();
  const auto q = exchange();
  const auto raw = qkd_key(32, 9);
  auto combined = [&](const hybrid::Shared& s, secure::Bytes k, const std::string& id,
                      const std::string& master, const std::string& slave) {
    hybrid::combine(k, s, id, master, slave);
    return k;
  };
  const auto base = combined(p.source, raw, "key-1", "SAE-A", "SAE-B");
  EXPECT_NE(base, combined(p.source, raw, "key-2", "SAE-A", "SAE-B"));  // key ID
  EXPECT_NE(base, combined(p.source, raw, "key-1", "SAE-B", "SAE-A"));  // direction
  EXPECT_NE(base, combined(p.source, raw, "key-1", "SAE-A", "SAE-C"));  // pair
  EXPECT_NE(base, combined(q.source, raw, "key-1", "SAE-A", "SAE-B"));  // classical secret
  EXPECT_NE(base, combined(p.source, qkd_key(32, 10), "key-1", "SAE-A", "SAE-B"));  // QKD key
}

TEST(KeyCombination, BadExchangesAreRefused) {
  hybrid::Initiator a;
  auto offer = a.offer();
  // Malformed offers.
  EXPECT_THROW((void)hybrid::respond(json::value("x")), std::runtime_error);
  auto no_key = offer;
  no_key.erase("x25519");
  EXPECT_THROW((void)hybrid::respond(no_key), std::runtime_error);
  auto short_key = offer;
  short_key["x25519"] = "abcd";
  EXPECT_THROW((void)hybrid::respond(short_key), std::runtime_error);
  auto bad_suite = offer;
  bad_suite["suite"] = "rsa";
  EXPECT_THROW((void)hybrid::respond(bad_suite), std::runtime_error);
  // A low-order point gives the zero secret: refused, not used.
  auto zero = offer;
  zero["x25519"] = std::string(64, '0');
  EXPECT_THROW((void)hybrid::respond(zero), std::runtime_error);
  // Answers: missing, of another suite, malformed.
  EXPECT_THROW((void)a.finish(json::object{}), std::runtime_error);
  auto answer = hybrid::respond(offer).answer;
  auto other_suite = answer;
  other_suite["suite"] = hybrid::mlkem_available() ? "x25519" : "x25519+mlkem768";
  EXPECT_THROW((void)a.finish(other_suite), std::runtime_error);
  auto not_hex = answer;
  not_hex["x25519"] = std::string(64, 'z');
  EXPECT_THROW((void)a.finish(not_hex), std::runtime_error);
  // A substituted answer (another responder) gives another secret: the keys would not match.
  const auto genuine = a.finish(answer);
  const auto other = a.finish(hybrid::respond(offer).answer);
  EXPECT_NE(genuine.secret, other.secret);
}

TEST(KeyCombination, ExchangeOfReadsTheFrameField) {
  EXPECT_EQ(hybrid::exchange_of(R"({"supply_id":"s","response":"OK"})"), "");
  EXPECT_EQ(hybrid::exchange_of("not json"), "");
  EXPECT_EQ(hybrid::exchange_of(R"({"key_combination":{"suite":"x25519"}})"),
            R"({"suite":"x25519"})");
}

TEST(KeyCombinationPolicy, RulesPerPairInBothDirections) {
  hybrid::Policy p;
  EXPECT_EQ(p.of("A", "B"), hybrid::Mode::kQkd);
  p.add_rule("B:A=hybrid");
  EXPECT_EQ(p.of("A", "B"), hybrid::Mode::kHybrid);
  EXPECT_EQ(p.of("B", "A"), hybrid::Mode::kHybrid);
  EXPECT_EQ(p.of("A", "C"), hybrid::Mode::kQkd);
  p.add_rule("hybrid");
  p.add_rule("A:C=qkd");
  EXPECT_EQ(p.of("C", "A"), hybrid::Mode::kQkd);
  EXPECT_EQ(p.of("C", "D"), hybrid::Mode::kHybrid);
  for (const char* bad : {"", "pqc", "A:B", "A:B=", "A=hybrid", ":B=qkd", "A:=qkd", "A:A=qkd",
                          "A:B:C=qkd", "A:B=otp"}) {
    EXPECT_THROW(p.add_rule(bad), qkdn::InvalidArgument) << bad;
  }
}

TEST(KeyCombination, CapabilitiesNameTheSuites) {
  const auto c = hybrid::capabilities();
  EXPECT_NE(c.find("X25519"), std::string::npos) << c;
  EXPECT_NE(c.find("ML-KEM-768"), std::string::npos) << c;
  EXPECT_NE(c.find(hybrid::mlkem_available() ? "+ ML-KEM-768" : "not in this OpenSSL"),
            std::string::npos)
      << c;
}

}  // namespace
