// Unit tests of the Kxi' key transfer codec (kxi_codec.cpp: the Q.QKDNi_KM key transfer message
// as ETSI GS QKD 020 ext_keys) and of the IWN configuration (kxi.cpp). Pure functions of text.
#include <gtest/gtest.h>

#include <string>

#include <boost/json.hpp>

#include "kxi.hpp"
#include "kxi_codec.hpp"
#include "qkdn/controller/error.hpp"

namespace qkdn::agent {
namespace {

namespace json = boost::json;

constexpr const char* kId1 = "0a1b2c3d-0000-4000-8000-00000000000a";
constexpr const char* kId2 = "0a1b2c3d-0000-4000-8000-00000000000b";

kxi::Key key(const std::string& id, std::size_t bytes, std::uint8_t fill) {
  kxi::Key k;
  k.key_id = id;
  k.value.assign(bytes, fill);
  return k;
}

kxi::TransferRequest request() {
  kxi::TransferRequest r;
  r.initiator_sae = "SAE-A1";
  r.target_sae = "SAE-B1";
  r.keys.push_back(key(kId1, 32, 0x11));
  r.keys.push_back(key(kId2, 32, 0x22));
  r.transfer_id = "7f000000-0000-4000-8000-000000000001";
  return r;
}

const kxi::Answer& answer_of(const std::variant<kxi::TransferRequest, kxi::Answer>& v) {
  static const kxi::Answer kNone{0, "no error", {}};
  const auto* a = std::get_if<kxi::Answer>(&v);
  return a != nullptr ? *a : kNone;
}

std::variant<kxi::TransferRequest, kxi::Answer> parse(const std::string& body,
                                                      const kxi::Limits& limits = {}) {
  return kxi::parse_request("SAE-A1", "SAE-B1", body, limits);
}

// A request encodes to the ext_key_container of docs/kxi.md and reads back identically.
TEST(KxiCodec, RoundTrip) {
  const auto r = request();
  const std::string body = kxi::encode_request(r);
  const auto v = json::parse(body).as_object();
  ASSERT_EQ(v.at("keys").as_array().size(), 2u);
  EXPECT_EQ(v.at("keys").as_array()[0].as_object().at("key_id").as_string(), kId1);
  EXPECT_EQ(v.at("keys").as_array()[0].as_object().at("value").as_string(),
            "ERERERERERERERERERERERERERERERERERERERERERE=");
  EXPECT_EQ(v.at("extension_optional").as_array()[0].as_object().at("transfer_id").as_string(),
            *r.transfer_id);
  auto parsed = parse(body);
  ASSERT_TRUE(std::holds_alternative<kxi::TransferRequest>(parsed)) << answer_of(parsed).message;
  const auto& back = std::get<kxi::TransferRequest>(parsed);
  EXPECT_EQ(back.initiator_sae, "SAE-A1");
  EXPECT_EQ(back.target_sae, "SAE-B1");
  ASSERT_EQ(back.keys.size(), 2u);
  EXPECT_EQ(back.keys[1].key_id, kId2);
  EXPECT_EQ(back.keys[1].value, r.keys[1].value);
  EXPECT_EQ(back.transfer_id, r.transfer_id);
}

// Key extension objects and other extension_optional items pass through, bounded.
TEST(KxiCodec, ExtensionsKept) {
  auto r = request();
  r.keys[0].extension = R"({"note":"x"})";
  r.other_extensions.push_back(R"({"vendor":1})");
  auto parsed = parse(kxi::encode_request(r));
  ASSERT_TRUE(std::holds_alternative<kxi::TransferRequest>(parsed)) << answer_of(parsed).message;
  const auto& back = std::get<kxi::TransferRequest>(parsed);
  EXPECT_EQ(back.keys[0].extension, R"({"note":"x"})");
  EXPECT_FALSE(back.keys[1].extension);
  ASSERT_EQ(back.other_extensions.size(), 1u);
  EXPECT_EQ(back.other_extensions[0], R"({"vendor":1})");
}

// The access URL carries the SAE pair; anything else is 404 or 400.
TEST(KxiCodec, Path) {
  EXPECT_EQ(kxi::path("SAE-A1", "SAE-B1"), "/api/v1/keys/SAE-A1/SAE-B1/ext_keys");
  auto m = kxi::match("/api/v1/keys/SAE-A1/SAE-B1/ext_keys");
  ASSERT_TRUE((std::holds_alternative<std::pair<std::string, std::string>>(m)));
  EXPECT_EQ(std::get<0>(m).first, "SAE-A1");
  EXPECT_EQ(std::get<0>(m).second, "SAE-B1");
  EXPECT_EQ(std::get<kxi::Answer>(kxi::match("/api/v1/keys/SAE-B1/enc_keys")).status, 404);
  EXPECT_EQ(std::get<kxi::Answer>(kxi::match("/api/v1/keys/A/B/C/ext_keys")).status, 404);
  EXPECT_EQ(std::get<kxi::Answer>(kxi::match("/api/v1/keys//SAE-B1/ext_keys")).status, 400);
  EXPECT_EQ(std::get<kxi::Answer>(kxi::match("/api/v1/keys/SAE%20A/SAE-B1/ext_keys")).status, 400);
  EXPECT_EQ(std::get<kxi::Answer>(kxi::match("/api/v1/keys/SAE-B1/SAE-B1/ext_keys")).status, 400);
}

// Every malformed body is a 400 (413 for too many keys) naming the field, never a crash.
TEST(KxiCodec, StrictBodies) {
  const std::string v32 = "ERERERERERERERERERERERERERERERERERERERERERE=";
  auto body_with = [&](const std::string& keys, const std::string& extra = "") {
    return R"({"keys":)" + keys + extra + "}";
  };
  auto one = [&](const std::string& id, const std::string& value) {
    return R"([{"key_id":")" + id + R"(","value":")" + value + R"("}])";
  };
  struct Case {
    std::string body;
    int status;
    std::string field;
  };
  const std::vector<Case> cases = {
      {"", 400, "body"},
      {"[]", 400, "body"},
      {"{", 400, "body"},
      {R"({})", 400, "keys"},
      {R"({"keys":{}})", 400, "keys"},
      {R"({"keys":[]})", 400, "keys"},
      {R"({"keys":[1]})", 400, "keys[0]"},
      {body_with(one(kId1, v32), R"(,"other":1)"), 400, "other"},
      {body_with(R"([{"key_id":")" + std::string(kId1) + R"(","value":")" + v32 + R"(","x":1}])"),
       400, "keys[0].x"},
      {body_with(one("not-a-uuid", v32)), 400, "keys[0].key_id"},
      {body_with(one("0A1B2C3D-0000-4000-8000-00000000000A", v32)), 400, "keys[0].key_id"},
      {body_with(R"([{"value":")" + v32 + R"("}])"), 400, "keys[0].key_id"},
      {body_with(R"([{"key_id":")" + std::string(kId1) + R"("}])"), 400, "keys[0].value"},
      {body_with(R"([{"key_id":")" + std::string(kId1) + R"(","value":7}])"), 400, "keys[0].value"},
      {body_with(one(kId1, "ERER*ERE")), 400, "keys[0].value"},
      {body_with(one(kId1, "ERERERERERERERERERERERERERERERERERERERERERF=")), 400,
       "keys[0].value"},  // pad bits not zero: not canonical
      {body_with(one(kId1, "ERERERE")), 400, "keys[0].value"},
      {body_with(one(kId1, "AAAA")), 400, "keys[0].value"},  // 24 bits < 64
      {body_with(R"([{"key_id":")" + std::string(kId1) + R"(","value":")" + v32 +
                 R"("},{"key_id":")" + std::string(kId1) + R"(","value":")" + v32 + R"("}])"),
       400, "keys[1].key_id"},  // duplicate key ID
      {body_with(R"([{"key_id":")" + std::string(kId1) + R"(","value":")" + v32 +
                 R"("},{"key_id":")" + std::string(kId2) + R"(","value":"AAAAAAAAAAAA"}])"),
       400, "keys[1].value"},  // two sizes
      {body_with(R"([{"key_id":")" + std::string(kId1) + R"(","value":")" + v32 +
                 R"(","extension":[1]}])"),
       400, "keys[0].extension"},
      {body_with(one(kId1, v32), R"(,"extension_optional":{})"), 400, "extension_optional"},
      {body_with(one(kId1, v32), R"(,"extension_optional":[1])"), 400, "extension_optional"},
      {body_with(one(kId1, v32), R"(,"extension_optional":[{"transfer_id":"x"}])"), 400,
       "extension_optional"},
  };
  for (const auto& c : cases) {
    auto parsed = parse(c.body);
    ASSERT_TRUE(std::holds_alternative<kxi::Answer>(parsed)) << c.body;
    const auto& a = std::get<kxi::Answer>(parsed);
    EXPECT_EQ(a.status, c.status) << c.body;
    ASSERT_FALSE(a.details.empty()) << c.body;
    EXPECT_EQ(a.details[0].first, c.field) << c.body << " -> " << a.details[0].second;
  }
}

// Bounds: key count (413), key size against the KM's limits, extension sizes, body size.
TEST(KxiCodec, Bounds) {
  kxi::Limits limits;
  limits.max_keys = 2;
  limits.max_key_bits = 256;
  auto r = request();
  r.keys.push_back(key("0a1b2c3d-0000-4000-8000-00000000000c", 32, 0x33));
  EXPECT_EQ(answer_of(parse(kxi::encode_request(r), limits)).status, 413);
  r.keys.pop_back();
  EXPECT_TRUE(std::holds_alternative<kxi::TransferRequest>(parse(kxi::encode_request(r), limits)));
  r.keys[0].value.assign(40, 1);
  r.keys[1].value.assign(40, 1);
  EXPECT_EQ(answer_of(parse(kxi::encode_request(r), limits)).status, 400);  // 320 > 256 bits
  r = request();
  r.keys[0].extension = R"({"a":")" + std::string(kxi::kMaxExtensionBytes, 'x') + R"("})";
  EXPECT_EQ(answer_of(parse(kxi::encode_request(r))).status, 400);
  r = request();
  for (int i = 0; i < 17; ++i) r.other_extensions.push_back("{}");
  EXPECT_EQ(answer_of(parse(kxi::encode_request(r))).status, 400);
  EXPECT_EQ(answer_of(parse(std::string(kxi::kMaxBodyBytes + 1, ' '))).status, 413);
  // Deep nesting is refused without recursion trouble.
  EXPECT_EQ(answer_of(parse(std::string(10000, '[') + std::string(10000, ']'))).status, 400);
}

// The answer is message_data {message, details}; a malformed answer is reported, not trusted.
TEST(KxiCodec, Answer) {
  const std::string text =
      kxi::encode_answer(kxi::Answer{409, "key already stored", {{"key_id", kId1}}});
  EXPECT_EQ(text, R"({"message":"key already stored","details":[{"key_id":")" + std::string(kId1) +
                      R"("}]})");
  std::string why;
  auto a = kxi::parse_answer(409, text, why);
  ASSERT_TRUE(a) << why;
  EXPECT_EQ(a->status, 409);
  EXPECT_EQ(a->message, "key already stored");
  ASSERT_EQ(a->details.size(), 1u);
  EXPECT_EQ(a->details[0].second, kId1);
  EXPECT_FALSE(kxi::parse_answer(200, "[]", why));
  EXPECT_FALSE(kxi::parse_answer(200, R"({"message":1})", why));
  EXPECT_FALSE(kxi::parse_answer(200, R"({"message":"OK","details":{}})", why));
  EXPECT_FALSE(kxi::parse_answer(200, std::string(kxi::kMaxResponseBytes + 1, ' '), why));
}

// The IWN configuration is read strictly.
TEST(KxiConfig, Parse) {
  const auto pairs = parse_iwn_config(R"({"pairs":[
    {"km_id":"IWN-A","partner_km_id":"IWN-B","partner_qkdn_id":"QKDN-B","partner_ca":"b.pem",
     "partner_endpoint":"127.0.0.1:9000","remote_saes":["SAE-B1"]},
    {"km_id":"IWN-C","partner_km_id":"IWN-D","partner_qkdn_id":"QKDN-D","partner_ca":"d.pem",
     "listen":"127.0.0.1:0"}]})");
  ASSERT_EQ(pairs.size(), 2u);
  EXPECT_EQ(pairs[0].remote_saes, std::vector<std::string>{"SAE-B1"});
  EXPECT_FALSE(pairs[0].listen_port);
  EXPECT_EQ(pairs[1].listen_port, 0);
  const std::vector<std::string> bad = {
      "[]",
      R"({"pairs":[]})",
      R"({"pairs":[{"km_id":"A","partner_km_id":"B","partner_qkdn_id":"Q","partner_ca":"c",
         "listen":"127.0.0.1:0","typo":1}]})",
      R"({"pairs":[{"km_id":"A","partner_km_id":"B","partner_qkdn_id":"Q","listen":":0"}]})",
      R"({"pairs":[{"km_id":"A","partner_km_id":"A","partner_qkdn_id":"Q","partner_ca":"c",
         "listen":"127.0.0.1:0"}]})",
      R"({"pairs":[{"km_id":"A","partner_km_id":"B","partner_qkdn_id":"Q","partner_ca":"c"}]})",
      R"({"pairs":[{"km_id":"A","partner_km_id":"B","partner_qkdn_id":"Q","partner_ca":"c",
         "remote_saes":["S"]}]})",
      R"({"pairs":[{"km_id":"A","partner_km_id":"B","partner_qkdn_id":"Q","partner_ca":"c",
         "listen":"127.0.0.1:70000"}]})",
      R"({"pairs":[{"km_id":"A B","partner_km_id":"B","partner_qkdn_id":"Q","partner_ca":"c",
         "listen":"127.0.0.1:0"}]})",
  };
  for (const auto& text : bad) {
    EXPECT_THROW(parse_iwn_config(text), InvalidArgument) << text;
  }
}

}  // namespace
}  // namespace qkdn::agent
