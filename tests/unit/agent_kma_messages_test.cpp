// Strict KMA message reading (kma_messages.cpp): a well-formed message of each kind is read
// field by field; removing any required field, giving it the wrong type or an out-of-range value
// is refused with BadMessage naming the field. Key quantities follow key_limits.hpp.
#include <gtest/gtest.h>

#include <boost/json.hpp>

#include "kma_messages.hpp"
#include "qkdn/controller/key_limits.hpp"

namespace qkdn::agent::kma {
namespace {

namespace json = boost::json;

std::string kid(int i) {
  KeyId id{};
  id[0] = static_cast<std::uint8_t>(i & 0xFF);
  id[1] = static_cast<std::uint8_t>(i >> 8);
  id[6] = 0x40;
  id[8] = 0x80;
  return key_id_to_string(id);
}

json::array kids(int from, int n) {
  json::array a;
  for (int i = 0; i < n; ++i) a.emplace_back(kid(from + i));
  return a;
}

json::object good_relay(int n = 2) {
  return {{"key_relay_request_id", "KM1-4a1c2e3f-5b6d-4e7f-8a9b-0c1d2e3f4a5b"},
          {"source_kma_id", "KM1"},
          {"destination_kma_id", "KM3"},
          {"from", "KM1"},
          {"to", "KM2"},
          {"route", json::array{"KM1", "KM2", "KM3"}},
          {"hop_keys", json::array{json::object{{"kma_id", "KM1"},
                                                {"next_kma_id", "KM2"},
                                                {"link_id", "L12"},
                                                {"key_ids", kids(100, n)}},
                                   json::object{{"kma_id", "KM2"},
                                                {"next_kma_id", "KM3"},
                                                {"link_id", "L23"},
                                                {"key_ids", kids(200, n)}}}},
          {"key_ids", kids(0, n)},
          {"key_size", 256},
          {"created", "2026-12-07T10:00:00Z"},
          {"encryption", "otp-xor"},
          {"integrity", "hmac-sha256"},
          {"master_sae", "SAE-A"},
          {"slave_sae", "SAE-C"},
          {"session_id", "3f0c2b9e-7d4a-4c1e-9b8f-0a1b2c3d4e5f"},
          {"sae_key_bits", 512},
          {"ciphertext", std::string(static_cast<std::size_t>(n) * 64, 'a')},
          {"tag", std::string(64, '0')}};
}

json::object good_supply() {
  return {{"supply_id", "KM1-4a1c2e3f-5b6d-4e7f-8a9b-0c1d2e3f4a5b"},
          {"master_sae", "SAE-A"},
          {"slave_sae", "SAE-B"},
          {"session_id", "3f0c2b9e-7d4a-4c1e-9b8f-0a1b2c3d4e5f"},
          {"key_bits", 256},
          {"key_ids", kids(0, 3)}};
}

json::object good_claim() {
  return {{"claim_id", "KM1-4a1c2e3f-5b6d-4e7f-8a9b-0c1d2e3f4a5b"},
          {"source_kma_id", "KM1"},
          {"destination_kma_id", "KM3"},
          {"route", json::array{"KM1", "KM2", "KM3"}},
          {"master_sae", "SAE-A"},
          {"slave_sae", "SAE-C"},
          {"session_id", "3f0c2b9e-7d4a-4c1e-9b8f-0a1b2c3d4e5f"},
          {"key_bits", 1024},
          {"key_ids", kids(0, 8)},
          {"tag", std::string(64, 'f')}};
}

/// Every required field of `good`, removed one at a time, is refused by `parse` (with a message
/// naming it); `optional` lists fields whose absence is allowed.
template <class Parse>
void each_field_required(const json::object& good, Parse parse,
                         const std::vector<std::string>& optional = {}) {
  for (const auto& kv : good) {
    const std::string key(kv.key());
    if (std::find(optional.begin(), optional.end(), key) != optional.end()) continue;
    json::object o = good;
    o.erase(key);
    try {
      parse(json::serialize(o));
      ADD_FAILURE() << "accepted without '" << key << "'";
    } catch (const BadMessage& e) {
      EXPECT_NE(std::string(e.what()).find(key), std::string::npos) << e.what();
    }
  }
}

void refused(const json::object& o, const std::function<void(std::string_view)>& parse,
             const std::string& why) {
  EXPECT_THROW(parse(json::serialize(o)), BadMessage) << why;
}

// The relay a sending agent builds is read back in full.
TEST(KmaMessages, RelayReadsEveryField) {
  const Relay r = parse_relay(json::serialize(good_relay()));
  EXPECT_EQ(r.key_relay_request_id, "KM1-4a1c2e3f-5b6d-4e7f-8a9b-0c1d2e3f4a5b");
  EXPECT_EQ(r.route, (std::vector<std::string>{"KM1", "KM2", "KM3"}));
  ASSERT_EQ(r.hop_keys.size(), 2U);
  EXPECT_EQ(r.hop_keys[1].link_id, "L23");
  EXPECT_EQ(r.key_ids.size(), 2U);
  ASSERT_TRUE(r.sae.has_value());
  EXPECT_EQ(r.sae->key_bits, 512);
  EXPECT_EQ(r.ciphertext.size(), 64U);
  EXPECT_FALSE(r.preposition);
}

// A distributed relay (Q.4164 7.1, distributed_relay.cpp) carries the route so far: from the
// source to the KM this hop goes to, one hop key set per hop; each transit KM appends its hop.
TEST(KmaMessages, DistributedRelayCarriesTheRouteSoFar) {
  json::object o = good_relay();
  o["routing"] = "distributed";
  o["route"] = json::array{"KM1", "KM2"};
  o["hop_keys"].as_array().pop_back();
  const Relay r = parse_relay(json::serialize(o));
  EXPECT_TRUE(r.distributed);
  EXPECT_EQ(r.route, (std::vector<std::string>{"KM1", "KM2"}));
  ASSERT_EQ(r.hop_keys.size(), 1U);
  // The whole route at the last hop reads too.
  json::object last = good_relay();
  last["routing"] = "distributed";
  last["from"] = "KM2";
  last["to"] = "KM3";
  EXPECT_TRUE(parse_relay(json::serialize(last)).distributed);
  // Centralized (no routing, or "centralized"): the route must reach the destination.
  json::object partial = o;
  partial.erase("routing");
  refused(partial, parse_relay, "a centralized relay with a partial route");
  partial["routing"] = "centralized";
  refused(partial, parse_relay, "a centralized relay with a partial route");
  EXPECT_FALSE(parse_relay(json::serialize(good_relay())).distributed);
  // The route must end at `to`, never pass the destination, never repeat a KM.
  json::object wrong_end = o;
  wrong_end["route"] = json::array{"KM1", "KM4"};
  wrong_end["hop_keys"].as_array()[0].as_object()["next_kma_id"] = "KM4";
  refused(wrong_end, parse_relay, "route not ending at the hop's receiver");
  json::object past = o;
  past["to"] = "KM2";
  past["route"] = json::array{"KM1", "KM3", "KM2"};
  past["hop_keys"] = json::array{
      json::object{{"kma_id", "KM1"}, {"next_kma_id", "KM3"}, {"key_ids", kids(100, 2)}},
      json::object{{"kma_id", "KM3"}, {"next_kma_id", "KM2"}, {"key_ids", kids(200, 2)}}};
  refused(past, parse_relay, "a route that passed the destination");
  json::object bad = o;
  bad["routing"] = "flooding";
  refused(bad, parse_relay, "unknown routing");
}

// Missing fields are errors, never "" or 0. The SAE fields come together or not at all.
TEST(KmaMessages, RelayFieldsRequired) {
  each_field_required(good_relay(), parse_relay,
                      {"master_sae", "slave_sae", "session_id", "sae_key_bits"});
  json::object no_sae = good_relay();
  for (const char* k : {"master_sae", "slave_sae", "session_id", "sae_key_bits"}) no_sae.erase(k);
  EXPECT_FALSE(parse_relay(json::serialize(no_sae)).sae.has_value());
  for (const char* k : {"master_sae", "slave_sae", "session_id", "sae_key_bits"}) {
    json::object o = good_relay();
    o.erase(k);
    refused(o, parse_relay, std::string("SAE pair without ") + k);
  }
}

// sae_key_bits: negative, zero, not whole bytes, above the shared maximum, not an integer, or
// not making whole keys of the keys carried are refused (issue 13: a negative value zeroed heap
// memory before the buffer).
TEST(KmaMessages, RelaySaeKeyBitsBounded) {
  for (const json::value& bits :
       {json::value(-2048), json::value(0), json::value(4), json::value(255),
        json::value(limits::kMaxSaeKeyBits + 8), json::value(INT64_MAX),
        json::value(std::uint64_t{1} << 63), json::value(256.0), json::value("256")}) {
    json::object o = good_relay();
    o["sae_key_bits"] = bits;
    refused(o, parse_relay, "sae_key_bits " + json::serialize(bits));
  }
  json::object o = good_relay(3);  // 3 units cannot make keys of 512 bits (2 units each)
  refused(o, parse_relay, "partial key");
  o["sae_key_bits"] = 768;
  EXPECT_NO_THROW(parse_relay(json::serialize(o)));
}

// Key counts: 1..kMaxKeysPerRelay end-to-end keys, every hop carrying as many, no repeats; the
// ciphertext as long as the keys; hop_keys following the route.
TEST(KmaMessages, RelayShapeChecked) {
  json::object o = good_relay();
  o["key_ids"] = json::array{};
  refused(o, parse_relay, "no keys");
  o = good_relay();
  o["key_ids"] = kids(0, static_cast<int>(limits::kMaxKeysPerRelay) + 1);
  refused(o, parse_relay, "above the relay bound");
  o = good_relay();
  o["key_ids"] = json::array{kid(1), kid(1)};
  refused(o, parse_relay, "repeated key ID");
  o = good_relay();
  o["key_ids"] = json::array{kid(1), "not-a-uuid"};
  refused(o, parse_relay, "malformed key ID");
  o = good_relay();
  o["hop_keys"].as_array()[1].as_object()["key_ids"] = kids(200, 3);
  refused(o, parse_relay, "hop with another count");
  o = good_relay();
  o["hop_keys"].as_array()[1].as_object()["kma_id"] = "KM9";
  refused(o, parse_relay, "hop off the route");
  o = good_relay();
  o["hop_keys"].as_array().pop_back();
  refused(o, parse_relay, "hop missing");
  o = good_relay();
  o["ciphertext"] = std::string(62, 'a');
  refused(o, parse_relay, "short ciphertext");
  o = good_relay();
  o["ciphertext"] = std::string(128, 'A');
  refused(o, parse_relay, "upper-case hex");
  o = good_relay();
  o["tag"] = std::string(62, '0');
  refused(o, parse_relay, "short tag");
  o = good_relay();
  o["route"] = json::array{"KM2", "KM3"};
  refused(o, parse_relay, "route not from the source");
  o = good_relay();
  o["route"] = json::array{"KM1", "KM1", "KM3"};
  refused(o, parse_relay, "route repeats a KM");
  o = good_relay();
  o["key_size"] = 128;
  refused(o, parse_relay, "key_size not 256");
  o = good_relay();
  o["created"] = "yesterday";
  refused(o, parse_relay, "created not RFC 3339");
  o = good_relay();
  o["encryption"] = "none";
  refused(o, parse_relay, "encryption");
  o = good_relay();
  o["source_kma_id"] = "KM 1";
  refused(o, parse_relay, "malformed ID");
  o = good_relay();
  o["preposition"] = true;
  refused(o, parse_relay, "preposition with an SAE pair");
  EXPECT_THROW(parse_relay("[1,2]"), BadMessage);
  EXPECT_THROW(parse_relay("{"), BadMessage);
  EXPECT_THROW(parse_relay(std::string(40, '[') + std::string(40, ']')), BadMessage);
}

// Supply and Claim: the same SAE rules; at most kMaxKeysPerSupply units.
// Discard (the peer destroyed keys at its end): link and 1..kMaxDiscardIds key IDs, nothing
// else read as "" or empty.
TEST(KmaMessages, DiscardIsStrict) {
  const json::object good{{"link_id", "L12"}, {"key_ids", kids(0, 3)}};
  const Discard d = parse_discard(json::serialize(good));
  EXPECT_EQ(d.link_id, "L12");
  EXPECT_EQ(d.key_ids.size(), 3U);
  each_field_required(good, parse_discard);
  json::object bad = good;
  bad["key_ids"] = kids(0, static_cast<int>(kMaxDiscardIds) + 1);
  refused(bad, parse_discard, "above the discard bound");
  bad = good;
  bad["key_ids"] = json::array{};
  refused(bad, parse_discard, "no key");
  bad = good;
  bad["link_id"] = 12;
  refused(bad, parse_discard, "link_id not a string");
}

TEST(KmaMessages, SupplyAndClaim) {
  EXPECT_EQ(parse_supply(json::serialize(good_supply())).key_ids.size(), 3U);
  each_field_required(good_supply(), parse_supply);
  const Claim c = parse_claim(json::serialize(good_claim()));
  EXPECT_EQ(c.sae.key_bits, 1024);
  each_field_required(good_claim(), parse_claim);
  for (const std::int64_t bits :
       {std::int64_t{-8}, std::int64_t{0}, std::int64_t{12}, limits::kMaxSaeKeyBits + 8}) {
    json::object s = good_supply();
    s["key_bits"] = bits;
    refused(s, parse_supply, "supply key_bits " + std::to_string(bits));
    json::object k = good_claim();
    k["key_bits"] = bits;
    refused(k, parse_claim, "claim key_bits " + std::to_string(bits));
  }
  json::object s = good_supply();
  s["key_ids"] = kids(0, static_cast<int>(limits::kMaxKeysPerSupply) + 1);
  refused(s, parse_supply, "above the supply bound");
  json::object k = good_claim();
  k["key_ids"] = kids(0, 6);  // 1024-bit keys take 4 units each
  refused(k, parse_claim, "partial key");
  k = good_claim();
  k["route"] = json::array{"KM1", "KM3", "KM2"};
  refused(k, parse_claim, "route not to the destination");
}

// The small messages: Hello, Sync, SyncOk, Control, Error, and the three acks.
TEST(KmaMessages, LinkMessages) {
  const Hello h = parse_hello(R"({"from_km":"KM1","to_km":"KM2","link_id":"L12"})");
  EXPECT_EQ(h.link_id, "L12");
  EXPECT_THROW(parse_hello(R"({"from_km":"KM1","to_km":"KM2"})"), BadMessage);
  EXPECT_THROW(parse_hello(R"({"from_km":"KM1","to_km":"","link_id":"L12"})"), BadMessage);

  EXPECT_FALSE(parse_sync(R"({"last_key_id":"","capacity_bits":1024})").last_key_id);
  EXPECT_TRUE(parse_sync(R"({"last_key_id":")" + kid(3) + R"(","capacity_bits":0})").last_key_id);
  EXPECT_THROW(parse_sync(R"({"capacity_bits":1024})"), BadMessage);
  EXPECT_THROW(parse_sync(R"({"last_key_id":"x","capacity_bits":1024})"), BadMessage);
  // Today's reader converted any number to int64: 1e300 was undefined behaviour.
  EXPECT_THROW(parse_sync(R"({"last_key_id":"","capacity_bits":1e300})"), BadMessage);
  EXPECT_THROW(parse_sync(R"({"last_key_id":"","capacity_bits":-1})"), BadMessage);
  EXPECT_THROW(parse_sync_ok(R"({"capacity_bits":1})"), BadMessage);
  EXPECT_TRUE(parse_sync_ok(R"({"in_sync":true,"capacity_bits":1})").in_sync);

  const Control c = parse_control(R"({"qber":0.5,"up":false})");
  EXPECT_EQ(c.qber, 0.5);
  EXPECT_EQ(c.up, false);
  EXPECT_FALSE(c.key_rate_bps);
  EXPECT_THROW(parse_control(R"({"qber":1.5})"), BadMessage);
  EXPECT_THROW(parse_control(R"({"key_rate_bps":-1})"), BadMessage);
  EXPECT_THROW(parse_control(R"({"up":"no"})"), BadMessage);

  EXPECT_EQ(parse_error(R"({"error":"bad_request","message":"no"})").message, "no");
  EXPECT_THROW(parse_error(R"({"error":"bad_request"})"), BadMessage);

  EXPECT_EQ(parse_ack(R"({"claim_id":"c-1","response":"NG: x"})", "claim_id").response, "NG: x");
  EXPECT_THROW(parse_ack(R"({"claim_id":"c-1"})", "claim_id"), BadMessage);
  EXPECT_THROW(parse_ack(R"({"claim_id":"c-1","response":""})", "claim_id"), BadMessage);
  EXPECT_THROW(parse_ack(R"({"claim_id":"c 1","response":"OK"})", "claim_id"), BadMessage);
  EXPECT_THROW(parse_ack(R"({"response":"OK"})", "supply_id"), BadMessage);
  EXPECT_EQ(request_id_of(R"({"supply_id":"s-9","response":7})", "supply_id"), "s-9");
  EXPECT_EQ(request_id_of("garbage", "supply_id"), "");
}

}  // namespace
}  // namespace qkdn::agent::kma

namespace qkdn::agent::kma {
namespace {

// aes-256-gcm relays (relay_scheme.hpp): one hop key per hop whatever the keys carried, and a
// 12-byte nonce and 16-byte GCM tag; otp-xor keeps one hop key per relayed key.
json::object gcm_relay(int n = 4) {
  json::object o = good_relay(n);
  o["encryption"] = "aes-256-gcm";
  for (auto& h : o["hop_keys"].as_array()) h.as_object()["key_ids"] = kids(300, 1);
  o["hop_keys"].as_array()[1].as_object()["key_ids"] = kids(400, 1);
  o["nonce"] = std::string(24, 'b');
  o["gcm_tag"] = std::string(32, 'c');
  return o;
}

TEST(KmaMessages, GcmRelayTakesOneHopKeyPerHop) {
  const Relay r = parse_relay(json::serialize(gcm_relay()));
  EXPECT_TRUE(r.gcm);
  EXPECT_EQ(r.key_ids.size(), 4U);
  ASSERT_EQ(r.hop_keys.size(), 2U);
  EXPECT_EQ(r.hop_keys[0].key_ids.size(), 1U);
  EXPECT_EQ(r.nonce[0], 0xbb);
  EXPECT_EQ(r.gcm_tag[15], 0xcc);
  EXPECT_FALSE(parse_relay(json::serialize(good_relay())).gcm);
  auto parse = [](std::string_view p) { (void)parse_relay(p); };
  for (const char* field : {"nonce", "gcm_tag"}) {
    auto o = gcm_relay();
    o.erase(field);
    refused(o, parse, std::string("without ") + field);
    o = gcm_relay();
    o[field] = "abcd";
    refused(o, parse, std::string("short ") + field);
  }
  auto many = gcm_relay();  // a gcm relay with a hop key per relayed key is not one
  many["hop_keys"].as_array()[0].as_object()["key_ids"] = kids(300, 4);
  refused(many, parse, "gcm with 4 hop keys");
  auto otp_one = good_relay(4);  // an otp relay with one hop key per hop is not one either
  otp_one["hop_keys"].as_array()[0].as_object()["key_ids"] = kids(300, 1);
  refused(otp_one, parse, "otp with 1 hop key");
  auto other = gcm_relay();
  other["encryption"] = "aes-128-cbc";
  refused(other, parse, "unknown encryption");
}

}  // namespace
}  // namespace qkdn::agent::kma
