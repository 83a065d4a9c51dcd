// Ck message codec, pinned byte for byte: the exact encoded bytes of every sample, the exact
// rejection messages (field paths into nested lists included), and which error wins when a
// payload or a message breaks several rules (type errors first, then the value rules in field
// order, cross-field rules at their place in the table). The field tests only ask that a message
// names the field and compare JSON values; these pin what a refactor of the codec must keep.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <variant>

#include "codec_samples.hpp"
#include "qkdn/controller/error.hpp"
#include "qkdn/controller/key_limits.hpp"
#include "qkdn/southbound/ck_frame.hpp"
#include "qkdn/southbound/ck_messages.hpp"

namespace qkdn::southbound::ck {
namespace {

using testing::kUuid1;
using testing::kUuid2;

std::string rejection_message(std::uint16_t command, std::string_view payload) {
  const DecodeResult r = decode_payload(command, payload);
  if (const auto* e = std::get_if<DecodeError>(&r)) {
    EXPECT_EQ(e->code, errc::kBadRequest) << payload;
    return e->message;
  }
  ADD_FAILURE() << "accepted: " << payload;
  return {};
}

std::string encode_error(const Message& m) {
  try {
    (void)encode_payload(m);
  } catch (const InvalidArgument& e) {
    return e.what();
  }
  ADD_FAILURE() << "encoded";
  return {};
}

// The samples are canonical: decoding and re-encoding gives the same bytes (member order, number
// format, escapes), not only the same JSON value.
TEST(CkExact, SamplesReEncodeByteForByte) {
  for (const auto& s : testing::all_samples()) {
    const DecodeResult r = decode_payload(s.command, s.json);
    ASSERT_TRUE(std::holds_alternative<Message>(r)) << s.json;
    EXPECT_EQ(encode_payload(std::get<Message>(r)), s.json);
  }
}

// Members are written in table order whatever order they arrived in; absent optionals are left
// out.
TEST(CkExact, EncodeOrderIsTableOrder) {
  const std::string in = R"({"controller_epoch":2,"key_ids":[")" + kUuid2 +
                         R"("],"link_id":"L1","destination_kma_id":"KM5","source_kma_id":"KM1"})";
  const DecodeResult r = decode_payload(0x410C, in);
  ASSERT_TRUE(std::holds_alternative<Message>(r));
  EXPECT_EQ(encode_payload(std::get<Message>(r)),
            R"({"source_kma_id":"KM1","destination_kma_id":"KM5","link_id":"L1","key_ids":[")" +
                kUuid2 + R"("],"controller_epoch":2})");
}

struct ExactCase {
  std::uint16_t command;
  std::string payload;
  std::string message;
};

// Exact rejection messages: "<path>: <what>", with [i] for list elements and a dot into the
// objects of links, peers and hop_keys.
TEST(CkExact, RejectionMessages) {
  const std::string reg = R"({"km_id":"KM1","kma_endpoint":"h:1",)";
  const std::string status = R"({"kma_id":"KM1","timestamp":"2026-01-01T00:00:00Z","links":[)";
  const std::string link =
      R"({"link_id":"L","peer_kma_id":"KM2","state":"up","stored_keys":1,"stored_key_bits":1,)"
      R"("key_rate_bps":1,"consumption_rate_bps":1,"qber":0})";
  const std::string hop = R"({"kma_id":"KM1","next_kma_id":"KM2","link_id":"L","key_ids":[")";
  const ExactCase cases[] = {
      {0x14E8, R"({})", "kma_id: missing mandatory field"},
      {0x14E8, R"({"kma_id":7})", "kma_id: expected string"},
      {0x14E8, R"({"kma_id":"a b"})", "kma_id: invalid identifier (1..128 of [A-Za-z0-9._:-])"},
      {0x14E1, reg + R"("links":{}})", "links: expected array"},
      {0x14E1, reg + R"("links":[{"link_id":"L","peer_kma_id":"K"},7]})",
       "links[1]: expected object"},
      {0x14E1, reg + R"("links":[{"link_id":"L","peer_kma_id":"K"},{"link_id":"L"}]})",
       "links[1].peer_kma_id: missing mandatory field"},
      {0x14E1,
       reg + R"("links":[{"link_id":"L","peer_kma_id":"K"},{"link_id":"L","peer_kma_id":"a b"}]})",
       "links[1].peer_kma_id: invalid identifier (1..128 of [A-Za-z0-9._:-])"},
      {0x14E1, reg + R"("links":[],"applications":["A",""]})",
       "applications[1]: invalid identifier (1..128 of [A-Za-z0-9._:-])"},
      {0x14E1, R"({"km_id":"KM1","kma_endpoint":"h:0","links":[]})",
       "kma_endpoint: expected host:port with port 1..65535"},
      {0x14E3, status + link + "," + R"({"link_id":"L"}]})",
       "links[1].peer_kma_id: missing mandatory field"},
      {0x41E2,
       R"({"response":"OK","controller_id":"c","controller_epoch":1,"heartbeat_interval_ms":1,)"
       R"("status_interval_ms":1,"peers":[{"kma_id":"K","kma_endpoint":"x"}]})",
       "peers[0].kma_endpoint: expected host:port with port 1..65535"},
      {0x41E2,
       R"({"response":"OK","controller_id":"c","controller_epoch":1,"heartbeat_interval_ms":0,)"
       R"("status_interval_ms":1})",
       "heartbeat_interval_ms: out of range [1, 86400000]"},
      {0x4104,
       R"({"transit_kma_ids":[],"extension":[{"hop_keys":[)" + hop + kUuid1 + R"(","x"]}]}]})",
       "hop_keys[0].key_ids[1]: invalid UUID"},
      {0x4104, R"({"transit_kma_ids":[],"extension":[{"hop_keys":[)" + hop + R"("]}]}]})",
       "hop_keys[0].key_ids[0]: invalid UUID"},
      {0x4104, R"({"transit_kma_ids":[],"extension":[{"hop_keys":[7]}]})",
       "hop_keys[0]: expected object"},
      {0x4104, R"({"transit_kma_ids":[],"extension":[{"hop_keys":{}}]})",
       "hop_keys: expected array"},
      {0x4104, R"({"transit_kma_ids":[],"extension":[{"hop_keys":[]},{"hop_keys":[]}]})",
       "extension: more than one hop_keys object"},
      {0x4104, R"({"transit_kma_ids":[],"notification_message_id":4294967296})",
       "notification_message_id: out of range [0, 4294967295]"},
      {0x4104, R"({"transit_kma_ids":[],"extension":[{},3]})", "extension[1]: expected object"},
      {0x410C, R"({"source_kma_id":"A","destination_kma_id":"B","key_ids":[]})",
       "key_ids: must not be empty"},
      {0x14E6,
       R"({"instruction_id":")" + kUuid1 +
           R"(","response":"OK","keys_relayed":9223372036854775808})",
       "keys_relayed: integer out of range"},
      {0x14E6, R"({"instruction_id":")" + kUuid1 + R"(","response":"NG:"})",
       "response: expected \"OK\" or \"NG: <reason>\""},
      {0x140B, R"({"key_ids":[],"response":2})", "response: expected 0 (OK) or 1 (NG)"},
      {0x1403, R"({"destination_kma_id":"K","key_size":0})", "key_size: out of range [1, 1048576]"},
      {0x14E4,
       R"({"kma_id":"K","alarm":"fire","severity":"major","timestamp":"2026-01-01T00:00:00Z"})",
       "alarm: unknown alarm"},
      {0x14E4,
       R"({"kma_id":"K","alarm":"link_up","severity":"x","timestamp":"2026-01-01T00:00:00Z"})",
       "severity: expected critical, major, minor or cleared"},
      {0x14E4,
       R"({"kma_id":"K","alarm":"link_up","severity":"minor","value":"1","timestamp":"2026-01-01T00:00:00Z"})",
       "value: expected number"},
      {0x14E4,
       R"({"kma_id":"K","alarm":"link_up","severity":"minor","timestamp":"2026-02-30T00:00:00Z"})",
       "timestamp: invalid RFC 3339 timestamp"},
      {0x14EF, R"({"error":"nope"})", "error: not an error code of clause 3"},
      {0x41EF, R"({"error":"timeout","message_id":-1})",
       "message_id: out of range [0, 4294967295]"},
      {0x14E7, R"({"kma_id":"K","detached":[1]})", "detached[0]: expected string"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.payload);
    EXPECT_EQ(rejection_message(c.command, c.payload), c.message);
  }
  // The status report prefix above is valid with a valid link.
  EXPECT_TRUE(std::holds_alternative<Message>(decode_payload(0x14E3, status + link + "]}")));
}

// Several broken rules in one payload: every type error (and missing field) wins over every
// value error; value errors are reported in table order; a cross-field rule sits at its place in
// the table (the either/or destination rule right after application_destination_id, the Register
// kma_id == km_id rule right after kma_id).
TEST(CkExact, WhichErrorWins) {
  const ExactCase cases[] = {
      {0x1406, R"({"application_source_id":"a b","application_destination_id":7})",
       "application_destination_id: expected string"},
      {0x1406, R"({"application_source_id":"a b"})",
       "application_destination_id: missing mandatory field"},
      {0x1406, R"({"application_source_id":"a b","application_destination_id":"c d"})",
       "application_source_id: invalid identifier (1..128 of [A-Za-z0-9._:-])"},
      {0x1406,
       R"({"application_source_id":"A","application_destination_id":"B","number_of_keys":0,"extension":7})",
       "extension: expected array"},
      {0x1403, R"({"number_of_keys":0})",
       "destination_kma_id: either destination_kma_id or application_destination_id is mandatory"},
      {0x1403, R"({"source_kma_id":"a b","number_of_keys":0})",
       "source_kma_id: invalid identifier (1..128 of [A-Za-z0-9._:-])"},
      {0x1401, R"({"extension":[]})",
       "destination_kma_id: either destination_kma_id or application_destination_id is mandatory"},
      {0x14E1, R"({"km_id":"KM1","kma_id":"KM2","ksa_id":"a b","kma_endpoint":"h","links":[]})",
       "kma_id: must equal km_id (one KMA per KM)"},
      {0x14E1, R"({"km_id":"KM1","kma_id":"a b","kma_endpoint":"h","links":[]})",
       "kma_id: invalid identifier (1..128 of [A-Za-z0-9._:-])"},
      {0x14E1, R"({"km_id":"KM1","kma_endpoint":"h","links":[{"link_id":"a b","peer_kma_id":7}]})",
       "links[0].peer_kma_id: expected string"},
      {0x14E1,
       R"({"km_id":"KM1","kma_endpoint":"h","links":[{"link_id":"L","peer_kma_id":"a b"}],"applications":7})",
       "applications: expected array"},
      {0x14E3,
       R"({"kma_id":"K","timestamp":"x","links":[{"link_id":"L","peer_kma_id":"P","state":"x",)"
       R"("stored_keys":-1,"stored_key_bits":-1,"key_rate_bps":-1,"consumption_rate_bps":-1,"qber":2}]})",
       "timestamp: invalid RFC 3339 timestamp"},
      {0x14E3,
       R"({"kma_id":"K","timestamp":"2026-01-01T00:00:00Z","links":[{"link_id":"L","peer_kma_id":"P",)"
       R"("state":"up","stored_keys":1,"stored_key_bits":-1,"key_rate_bps":-1,"consumption_rate_bps":-1,"qber":2},)"
       R"({"link_id":"L","peer_kma_id":"P","state":"x"}]})",
       "links[1].stored_keys: missing mandatory field"},
      {0x14E3,
       R"({"kma_id":"K","timestamp":"2026-01-01T00:00:00Z","links":[{"link_id":"L","peer_kma_id":"P",)"
       R"("state":"up","stored_keys":1,"stored_key_bits":-1,"key_rate_bps":-1,"consumption_rate_bps":-1,"qber":2}]})",
       "links[0].stored_key_bits: out of range [0, 9223372036854775807]"},
      {0x4104, R"({"source_kma_id":"a b","transit_kma_ids":[],"notification_message_id":-1})",
       "notification_message_id: out of range [0, 4294967295]"},
      {0x4104,
       R"({"transit_kma_ids":[],"extension":[{"hop_keys":[{"kma_id":"a b","next_kma_id":"K",)"
       R"("link_id":"L","key_ids":[]}]}],"controller_epoch":-1})",
       "hop_keys[0].kma_id: invalid identifier (1..128 of [A-Za-z0-9._:-])"},
      {0x4104,
       R"({"transit_kma_ids":[],"extension":[{"hop_keys":[{"kma_id":"K","next_kma_id":"K",)"
       R"("link_id":"L","key_ids":[]}]}],"controller_epoch":-1})",
       "hop_keys[0].key_ids: must not be empty"},
      {0x41EF, R"({"error":"nope","message_id":-1})", "message_id: out of range [0, 4294967295]"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.payload);
    EXPECT_EQ(rejection_message(c.command, c.payload), c.message);
  }
}

// encode_payload checks in the same order and names the field, also for what only a struct can
// hold (invalid UTF-8, non-finite numbers, an extension text that is not an array of objects).
TEST(CkExact, EncodeRefusalMessages) {
  KeyRelayNextHopRequest nh;
  nh.extension = "x";
  EXPECT_EQ(encode_error(nh),
            "destination_kma_id: either destination_kma_id or application_destination_id is "
            "mandatory");
  nh.destination_kma_id = "K";
  EXPECT_EQ(encode_error(nh).substr(0, 24), "extension: invalid JSON ");
  nh.extension = "{}";
  EXPECT_EQ(encode_error(nh), "extension: expected array of objects");
  nh.extension = "[{},1]";
  EXPECT_EQ(encode_error(nh), "extension[1]: expected object");

  EXPECT_EQ(encode_error(KeyRelayResponse{"NG: \xff", std::nullopt, std::nullopt}),
            "response: invalid UTF-8");
  EXPECT_EQ(encode_error(ErrorMessage{"timeout", std::string("\xc0"), std::nullopt, true}),
            "message: invalid UTF-8");
  EXPECT_EQ(encode_error(ErrorMessage{"nope", std::string("\xc0"), std::nullopt, true}),
            "error: not an error code of clause 3");

  Alarm a{"K", "link_up", {}, "minor", std::nan(""), std::string("\xff"), "x"};
  EXPECT_EQ(encode_error(a), "value: must be finite");
  a.value = 1;
  EXPECT_EQ(encode_error(a), "text: invalid UTF-8");
  a.text = std::nullopt;
  EXPECT_EQ(encode_error(a), "timestamp: invalid RFC 3339 timestamp");

  StatusReport sr{"K",
                  "2026-01-01T00:00:00Z",
                  {{"L", "P", "up", 0, 0, 0, 0, 0},
                   {"L", "P", "up", 0, 0, std::numeric_limits<double>::infinity(), -1, 0}}};
  EXPECT_EQ(encode_error(sr), "links[1].key_rate_bps: must be a finite number >= 0");
  sr.links[1].key_rate_bps = 0;
  EXPECT_EQ(encode_error(sr), "links[1].consumption_rate_bps: must be a finite number >= 0");
  sr.links[1].consumption_rate_bps = 0;
  sr.links[1].qber = std::nan("");
  EXPECT_EQ(encode_error(sr), "links[1].qber: must be in [0, 1]");
  sr.links[1].qber = 0;
  sr.links[1].state = "UP";
  EXPECT_EQ(encode_error(sr), "links[1].state: expected \"up\" or \"down\"");

  KeyRelayRequest kr;
  kr.hop_keys = {{"K", "K", "L", {kUuid1}}};
  kr.extension = R"([{"v":1},{"hop_keys":[]}])";
  kr.controller_epoch = -1;
  EXPECT_EQ(encode_error(kr), "extension[1]: a hop_keys object belongs in hop_keys");
  kr.hop_keys[0].link_id = "";
  EXPECT_EQ(encode_error(kr),
            "hop_keys[0].link_id: invalid identifier (1..128 of [A-Za-z0-9._:-])");

  RegisterResponse rr{
      "OK",         "c",         0, 1, 1, std::vector<PeerEndpoint>{{"K", "h:1"}, {"K", "h"}},
      std::nullopt, std::nullopt};
  EXPECT_EQ(encode_error(rr), "peers[1].kma_endpoint: expected host:port with port 1..65535");
  rr.status_interval_ms = 86'400'001;
  EXPECT_EQ(encode_error(rr), "status_interval_ms: out of range [1, 86400000]");
}

// Encoding keeps unknown extension objects in order and puts the hop_keys object first; a
// non-ASCII string is written as UTF-8 bytes, control characters as \u00XX.
TEST(CkExact, EncodedBytes) {
  KeyRelayRequest kr;
  kr.transit_kma_ids = {"KM2"};
  kr.notification_message_id = 4294967295u;
  kr.hop_keys = {{"KM1", "KM2", "L", {kUuid1}}};
  kr.extension = R"([ {"z" : 1.50}, {"a":[true,null]} ])";
  kr.controller_epoch = 0;
  EXPECT_EQ(encode_payload(kr),
            R"({"transit_kma_ids":["KM2"],"notification_message_id":4294967295,)"
            R"("extension":[{"hop_keys":[{"kma_id":"KM1","next_kma_id":"KM2","link_id":"L",)"
            R"("key_ids":[")" +
                kUuid1 + R"("]}]},{"z":1.5E0},{"a":[true,null]}],"controller_epoch":0})");
  const ErrorMessage e{"internal", std::string("\xe2\x82\xac \x01\x1f\x7f"), 0, false};
  EXPECT_EQ(encode_payload(e),
            "{\"error\":\"internal\",\"message\":\"\xe2\x82\xac \\u0001\\u001f\x7f\","
            "\"message_id\":0}");
  const StatusReport sr{"K", "2026-01-01T00:00:00Z", {{"L", "P", "down", 0, 9, 1e21, 0.1, 1}}};
  EXPECT_EQ(encode_payload(sr),
            R"({"kma_id":"K","timestamp":"2026-01-01T00:00:00Z","links":[{"link_id":"L",)"
            R"("peer_kma_id":"P","state":"down","stored_keys":0,"stored_key_bits":9,)"
            R"("key_rate_bps":1e+21,"consumption_rate_bps":0.1,"qber":1}]})");
}

}  // namespace
}  // namespace qkdn::southbound::ck

namespace qkdn::southbound::ck {
namespace {

// The relay bound of key_limits.hpp is an upper bound of the real 0x4104: with the most keys it
// allows, the encoded payload fits one frame, for short and long routes and long names; and it
// is not wasteful (twice the bound would not fit).
TEST(CodecRelayBound, MostKeysPerRelayFitOneFrame) {
  for (const std::size_t hops : {1u, 2u, 3u, 6u, 11u}) {
    for (const std::size_t name_len : {3u, 40u}) {
      std::vector<std::string> kms;
      std::vector<std::string> links;
      std::int64_t names = 0;
      for (std::size_t i = 0; i <= hops; ++i) {
        kms.push_back(std::string(name_len - 1, 'K') + std::to_string(i % 10));
        names += static_cast<std::int64_t>(kms.back().size());
      }
      for (std::size_t i = 0; i < hops; ++i) {
        links.push_back(std::string(name_len - 1, 'L') + std::to_string(i % 10));
        names += static_cast<std::int64_t>(links.back().size());
      }
      const auto fit = limits::max_keys_per_relay(static_cast<std::int64_t>(hops), names);
      ASSERT_GT(fit, 0) << hops;
      auto build = [&](std::int64_t keys) {
        KeyRelayRequest r;
        r.source_kma_id = kms.front();
        r.destination_kma_id = kms.back();
        r.transit_kma_ids.assign(kms.begin() + 1, kms.end() - 1);
        r.key_relay_request_id = kUuid1;
        r.notification_message_id = 4294967295u;
        r.controller_epoch = 9223372036854775807;
        for (std::size_t h = 0; h < hops; ++h) {
          HopKeys hk{kms[h], kms[h + 1], links[h], {}};
          hk.key_ids.assign(static_cast<std::size_t>(keys), kUuid2);
          r.hop_keys.push_back(std::move(hk));
        }
        return encode_payload(Message{std::move(r)}).size();
      };
      EXPECT_LE(build(fit), kMaxPayload) << hops << " hops, names of " << name_len;
      if (fit < limits::kMaxKeysPerRelay) {
        EXPECT_GT(build(2 * fit), kMaxPayload) << hops << " hops: the bound is too loose";
      }
    }
  }
}

}  // namespace
}  // namespace qkdn::southbound::ck
