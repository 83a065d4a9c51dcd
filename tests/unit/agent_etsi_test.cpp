// ETSI GS QKD 014 at the agent, pure parts: the spec's error texts for bad sizes (etsi_request)
// and key_IDs that name their SAE pair (sae_key_id): the same unit and pair give the same ID at
// both ends, another pair's ID is recognised as such from the ID alone, and a random UUID is not
// taken for anyone's.
#include <gtest/gtest.h>

#include <variant>

#include <boost/json/parse.hpp>

#include "etsi_request.hpp"
#include "sae_key_id.hpp"

namespace qkdn::agent {
namespace {

KeyId unit(std::uint8_t seed) {
  KeyId id{};
  for (std::size_t i = 0; i < id.size(); ++i)
    id[i] = static_cast<std::uint8_t>(std::size_t{seed} * 31 + i * 7);
  id[6] = static_cast<std::uint8_t>((id[6] & 0x0F) | 0x40);
  id[8] = static_cast<std::uint8_t>((id[8] & 0x3F) | 0x80);
  return id;
}

// A size that is not a multiple of 8 gets ETSI's text; one out of range the KME-rules text.
TEST(EtsiRequest, SizeTexts) {
  SaeLimits l;
  etsi::Query q{{"number", {"1"}}, {"size", {"1025"}}};
  auto r = etsi::enc_request_from_query(q, l);
  ASSERT_TRUE(std::holds_alternative<etsi::Error>(r));
  EXPECT_EQ(std::get<etsi::Error>(r).status, 400);
  EXPECT_EQ(std::get<etsi::Error>(r).message, "size shall be a multiple of 8");
  q["size"] = {"16384"};
  r = etsi::enc_request_from_query(q, l);
  ASSERT_TRUE(std::holds_alternative<etsi::Error>(r));
  EXPECT_EQ(std::get<etsi::Error>(r).message, "requested parameters do not adhere to KME rules");
  auto b = etsi::enc_request_from_body(R"({"number":2,"size":512})", l);
  ASSERT_TRUE(std::holds_alternative<etsi::KeyRequest>(b));
  EXPECT_EQ(std::get<etsi::KeyRequest>(b).number, 2);
}

// Both ends derive the same key_ID; it is a canonical version-4 UUID and names its pair.
TEST(SaeKeyId, SamePairSameId) {
  const auto id = etsi_key_id(unit(1), "SAE-A", "SAE-B");
  EXPECT_EQ(id, etsi_key_id(unit(1), "SAE-A", "SAE-B"));
  EXPECT_NE(id, etsi_key_id(unit(1), "SAE-A", "SAE-C"));
  EXPECT_NE(id, etsi_key_id(unit(2), "SAE-A", "SAE-B"));
  ASSERT_TRUE(parse_key_id(id).has_value());
  EXPECT_EQ(id[14], '4');
  const std::vector<std::string> saes = {"SAE-A", "SAE-B", "SAE-C"};
  EXPECT_EQ(classify_key_id(id, "SAE-A", "SAE-B", saes), KeyIdOwner::kThisPair);
}

// Another pair's key_ID is recognised from the ID alone: same master and another slave, another
// master; a random UUID (even of a valid form) is not anyone's.
TEST(SaeKeyId, OtherPairsAndStrangers) {
  const std::vector<std::string> saes = {"SAE-A", "SAE-B", "SAE-C", "SAE-D"};
  const auto ab = etsi_key_id(unit(3), "SAE-A", "SAE-B");
  EXPECT_EQ(classify_key_id(ab, "SAE-A", "SAE-C", saes), KeyIdOwner::kOtherPair);
  EXPECT_EQ(classify_key_id(ab, "SAE-D", "SAE-C", saes), KeyIdOwner::kOtherPair);
  EXPECT_EQ(classify_key_id(ab, "SAE-D", "SAE-B", saes), KeyIdOwner::kOtherPair);
  int strangers = 0;
  for (std::uint8_t s = 0; s < 200; ++s) {
    const auto random = key_id_to_string(unit(s));
    if (classify_key_id(random, "SAE-A", "SAE-B", saes) == KeyIdOwner::kUnknown) ++strangers;
  }
  EXPECT_EQ(strangers, 200);
  EXPECT_EQ(classify_key_id("not-a-uuid", "SAE-A", "SAE-B", saes), KeyIdOwner::kUnknown);
}

}  // namespace
}  // namespace qkdn::agent

namespace qkdn::agent::etsi {
namespace {

// Found by fuzz_etsi: an error that quotes what the client sent (here a decoded query parameter
// name with a byte that is not UTF-8) was serialized as is, giving an invalid JSON body. Every
// error body parses, with U+FFFD in place of the bad bytes.
TEST(EtsiRequest, ErrorBodyIsValidJsonWhateverTheInput) {
  auto q = parse_query("k%82y_ID=1&x%C3%28=2");
  ASSERT_TRUE(q.has_value());
  SaeLimits limits;
  const auto r = dec_request_from_query(*q, limits);
  ASSERT_TRUE(std::holds_alternative<Error>(r));
  const std::string body = error_json(std::get<Error>(r));
  boost::system::error_code ec;
  const auto v = boost::json::parse(body, ec);
  ASSERT_FALSE(ec) << body;
  Error e;
  e.message =
      std::string("bad \xff\xfe byte, overlong \xc0\xaf, surrogate \xed\xa0\x80, ok \xc3\xa9");
  e.details = {{"na\x80me", "te\xf5xt"}};
  const auto v2 = boost::json::parse(error_json(e), ec);
  ASSERT_FALSE(ec) << error_json(e);
  EXPECT_EQ(v2.as_object().at("message").as_string(),
            "bad \xEF\xBF\xBD\xEF\xBF\xBD byte, overlong \xEF\xBF\xBD\xEF\xBF\xBD, surrogate "
            "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD, ok \xc3\xa9");
}

// The wrapped resources (docs/hybrid.md, keys of an SAE outside every trusted node) are the
// plain operations marked wrapped; nothing else gains a wrapped form.
TEST(EtsiRoute, WrappedResources) {
  const auto enc = std::get<Route>(match("/api/v1/keys/SAE-B/enc_keys_wrapped"));
  EXPECT_EQ(enc.op, Op::kEncKeys);
  EXPECT_TRUE(enc.wrapped);
  EXPECT_EQ(enc.sae, "SAE-B");
  const auto dec = std::get<Route>(match("/api/v1/keys/SAE-A/dec_keys_wrapped"));
  EXPECT_EQ(dec.op, Op::kDecKeys);
  EXPECT_TRUE(dec.wrapped);
  EXPECT_FALSE(std::get<Route>(match("/api/v1/keys/SAE-B/enc_keys")).wrapped);
  EXPECT_FALSE(std::get<Route>(match("/api/v1/keys/SAE-A/dec_keys")).wrapped);
  EXPECT_EQ(std::get<Error>(match("/api/v1/keys/SAE-B/status_wrapped")).status, 404);
  EXPECT_EQ(std::get<Error>(match("/api/v1/keys/SAE-B/enc_keys_wrapped/x")).status, 404);
}

}  // namespace
}  // namespace qkdn::agent::etsi
