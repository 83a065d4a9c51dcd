// Ck message codec: cross-field rules, payload-level rejections, extension handling, encode-side
// validation and the command table helpers (ck-protocol.md clauses 2-4).
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <variant>

#include "codec_samples.hpp"
#include "qkdn/controller/error.hpp"
#include "qkdn/southbound/ck_messages.hpp"

namespace qkdn::southbound::ck {
namespace {

using testing::kUuid1;
using testing::kUuid2;
using testing::kUuid3;

template <typename T>
T decode_as(std::uint16_t command, std::string_view payload) {
  const DecodeResult r = decode_payload(command, payload);
  if (const auto* e = std::get_if<DecodeError>(&r)) {
    ADD_FAILURE() << "rejected: " << e->message << " payload " << payload;
    return T{};
  }
  const auto* t = std::get_if<T>(&std::get<Message>(r));
  if (t == nullptr) {
    ADD_FAILURE() << "wrong alternative";
    return T{};
  }
  return *t;
}

DecodeError rejection(std::uint16_t command, std::string_view payload) {
  const DecodeResult r = decode_payload(command, payload);
  if (const auto* e = std::get_if<DecodeError>(&r)) return *e;
  ADD_FAILURE() << "accepted: " << payload;
  return {};
}

// ---- either/or rule (Tables 1 and 3) ---------------------------------------------------------

// 0x1401 and 0x1403 need destination_kma_id or application_destination_id; either one suffices.
TEST(CkEitherOr, NeedsOneOfTheTwoDestinations) {
  for (const std::uint16_t code : std::initializer_list<std::uint16_t>{0x1401, 0x1403}) {
    const DecodeError e = rejection(code, R"({"source_kma_id":"KM1"})");
    EXPECT_EQ(e.code, errc::kBadRequest);
    EXPECT_NE(e.message.find("destination_kma_id"), std::string::npos);
    EXPECT_NE(e.message.find("application_destination_id"), std::string::npos);
    EXPECT_TRUE(
        std::holds_alternative<Message>(decode_payload(code, R"({"destination_kma_id":"KM5"})")));
    EXPECT_TRUE(std::holds_alternative<Message>(
        decode_payload(code, R"({"application_destination_id":"SAE-B"})")));
  }
  EXPECT_THROW(validate(KeyRelayNextHopRequest{}), InvalidArgument);
  EXPECT_THROW(encode_payload(KeyRelayRequestNotification{}), InvalidArgument);
}

// Minimal messages: only the mandatory fields.
TEST(CkMinimal, MandatoryFieldsAlone) {
  const auto m = decode_as<KeyRelayNextHopRequest>(0x1401, R"({"destination_kma_id":"KM5"})");
  EXPECT_FALSE(m.source_kma_id);
  EXPECT_FALSE(m.extension);
  const auto n = decode_as<KeyRelayRequest>(0x4104, R"({"transit_kma_ids":[]})");
  EXPECT_TRUE(n.transit_kma_ids.empty());
  EXPECT_TRUE(n.hop_keys.empty());
  EXPECT_FALSE(n.extension);
  EXPECT_EQ(encode_payload(n), R"({"transit_kma_ids":[]})");
  EXPECT_EQ(encode_payload(HeartbeatResponse{}), "{}");
}

// ---- Register -------------------------------------------------------------------------------

// One KMA per KM: a Register whose kma_id differs from km_id is refused; absent kma_id is fine.
TEST(CkRegister, KmaIdMustEqualKmId) {
  const std::string base = R"("kma_endpoint":"h:1","links":[])";
  const DecodeError e = rejection(0x14E1, R"({"km_id":"KM1","kma_id":"KM2",)" + base + "}");
  EXPECT_NE(e.message.find("kma_id"), std::string::npos);
  const auto r = decode_as<Register>(0x14E1, R"({"km_id":"KM1",)" + base + "}");
  EXPECT_EQ(r.km_id, "KM1");
  EXPECT_FALSE(r.kma_id);
  EXPECT_TRUE(r.links.empty());
}

// ---- 0x4104 hop keys in extension --------------------------------------------------------------

// hop_keys come out of the extension; other extension objects are preserved in order.
TEST(CkKeyRelayRequest, HopKeysSplitFromOtherExtensions) {
  const std::string payload =
      R"({"transit_kma_ids":["KM2"],"extension":[{"vendor":1},{"hop_keys":[{"kma_id":"KM1",)"
      R"("next_kma_id":"KM2","link_id":"L12","key_ids":[")" +
      kUuid2 + R"("]},{"kma_id":"KM2","next_kma_id":"KM5","link_id":"L25","key_ids":[")" + kUuid3 +
      R"("]}]},{"other":"x"}]})";
  const auto m = decode_as<KeyRelayRequest>(0x4104, payload);
  ASSERT_EQ(m.hop_keys.size(), 2u);
  EXPECT_EQ(m.hop_keys[0], (HopKeys{"KM1", "KM2", "L12", {kUuid2}}));
  EXPECT_EQ(m.hop_keys[1], (HopKeys{"KM2", "KM5", "L25", {kUuid3}}));
  EXPECT_EQ(m.extension, R"([{"vendor":1},{"other":"x"}])");
  // Encoding puts the hop_keys object first; decoding gives the same message back.
  const std::string out = encode_payload(m);
  EXPECT_NE(out.find(R"("extension":[{"hop_keys":[)"), std::string::npos) << out;
  EXPECT_EQ(decode_as<KeyRelayRequest>(0x4104, out), m);
}

// An extension that holds only hop_keys decodes to no `extension` at all.
TEST(CkKeyRelayRequest, OnlyHopKeysLeavesNoExtension) {
  KeyRelayRequest m;
  m.destination_kma_id = "KM5";
  m.transit_kma_ids = {"KM2", "KM4"};
  m.key_relay_request_id = kUuid1;
  m.notification_message_id = 4294967295u;
  m.hop_keys = {{"KM1", "KM2", "L12", {kUuid2, kUuid3}}};
  m.controller_epoch = 0;
  const auto back = decode_as<KeyRelayRequest>(0x4104, encode_payload(m));
  EXPECT_EQ(back, m);
  EXPECT_FALSE(back.extension);
}

// Two hop_keys objects are ambiguous; an extension given with a hop_keys object is refused on
// encode (it belongs in hop_keys); a hop entry needs at least one key.
TEST(CkKeyRelayRequest, HopKeysAmbiguityRejected) {
  const DecodeError e =
      rejection(0x4104, R"({"transit_kma_ids":[],"extension":[{"hop_keys":[]},{"hop_keys":[]}]})");
  EXPECT_NE(e.message.find("hop_keys"), std::string::npos);
  KeyRelayRequest m;
  m.extension = R"([{"hop_keys":[]}])";
  EXPECT_THROW(encode_payload(m), InvalidArgument);
  KeyRelayRequest empty_hop;
  empty_hop.hop_keys = {{"KM1", "KM2", "L12", {}}};
  EXPECT_THROW(encode_payload(empty_hop), InvalidArgument);
}

// ---- Error message direction ------------------------------------------------------------------

// from_km selects 0x14EF vs 0x41EF and is set from the code on decode.
TEST(CkError, FromKmSelectsCode) {
  ErrorMessage e{std::string(errc::kUnknownCommand), "0x9999", 7, true};
  EXPECT_EQ(command_of(e), Command::kErrorFromKm);
  e.from_km = false;
  EXPECT_EQ(command_of(e), Command::kErrorFromController);
  const std::string p = encode_payload(e);
  EXPECT_EQ(p, R"({"error":"unknown_command","message":"0x9999","message_id":7})");
  EXPECT_TRUE(decode_as<ErrorMessage>(0x14EF, p).from_km);
  EXPECT_FALSE(decode_as<ErrorMessage>(0x41EF, p).from_km);
}

// ---- payload-level rejections ------------------------------------------------------------------

// Anything but one JSON object is a bad_request, for every command; nothing throws.
TEST(CkPayload, NotOneObjectIsBadRequest) {
  const std::string_view bad[] = {"",
                                  " ",
                                  "[]",
                                  "null",
                                  "7",
                                  "\"x\"",
                                  "{} {}",
                                  "{}x",
                                  "{",
                                  "{\"kma_id\":\"KM1\"",
                                  "{\"kma_id\":\"KM1\",}",
                                  "{\"kma_id\":'KM1'}",
                                  "/*c*/{}",
                                  "{\"kma_id\":\"\xff\xfe\"}",
                                  "{\"kma_id\":\"\xc0\xaf\"}",
                                  "{\"kma_id\":\"\\ud800\"}",
                                  std::string_view("{\"kma_id\":\"K\0\"}", 15)};
  for (const auto& sample : testing::all_samples()) {
    for (std::string_view p : bad) {
      const DecodeError e = rejection(sample.command, p);
      EXPECT_EQ(e.code, errc::kBadRequest) << p;
      EXPECT_FALSE(e.message.empty());
    }
  }
}

// Nesting is bounded: kMaxJsonDepth levels pass, one more is refused without recursion trouble.
TEST(CkPayload, DepthIsBounded) {
  auto nested = [](std::size_t depth) {
    // The payload object is level 1, the extension array level 2, its object level 3.
    std::string inner = "1";
    for (std::size_t i = 3; i < depth; ++i) inner = "[" + inner + "]";
    return R"({"kma_id":"KM1","extension":[{"x":)" + inner + "}]}";
  };
  EXPECT_TRUE(std::holds_alternative<Message>(
      decode_payload(0x1401, R"({"destination_kma_id":"K",)" + nested(kMaxJsonDepth).substr(1))));
  EXPECT_EQ(
      rejection(0x1401, R"({"destination_kma_id":"K",)" + nested(kMaxJsonDepth + 1).substr(1)).code,
      errc::kBadRequest);
  const std::string deep = std::string(100000, '[') + std::string(100000, ']');
  EXPECT_EQ(rejection(0x14E8, deep).code, errc::kBadRequest);
}

// Huge and odd numbers never crash and never pass as integers.
TEST(CkPayload, HugeNumbers) {
  for (const char* n : {"1e999", "-1e999", "123456789012345678901234567890", "1e308", "-0", "0.0",
                        "9223372036854775808", "-9223372036854775809", "1E2"}) {
    const std::string p = R"({"kma_id":"KM1","timestamp":"2026-01-01T00:00:00Z","links":[],)"
                          R"("x":)" +
                          std::string(n) + "}";
    EXPECT_TRUE(std::holds_alternative<Message>(decode_payload(0x14E3, p))) << n;  // ignored
    const std::string q = R"({"instruction_id":")" + kUuid1 +
                          R"(","response":"OK","keys_relayed":)" + std::string(n) + "}";
    const DecodeResult r = decode_payload(0x14E6, q);
    const bool is_int = std::string(n) == "-0";
    EXPECT_EQ(std::holds_alternative<Message>(r), is_int) << n;
  }
}

// Duplicate member names: the last one wins (documented decision).
TEST(CkPayload, DuplicateKeysLastWins) {
  EXPECT_EQ(decode_as<Heartbeat>(0x14E8, R"({"kma_id":"bad id","kma_id":"KM2"})").kma_id, "KM2");
}

// An unknown command code is unknown_command, never bad_request, whatever the payload.
TEST(CkPayload, UnknownCommand) {
  for (const std::uint16_t code : std::initializer_list<std::uint16_t>{
           0x0000, 0x1400, 0x1402, 0x4101, 0x14E0, 0x41E1, 0x14FF, 0xFFFF}) {
    const DecodeError e = rejection(code, "{}");
    EXPECT_EQ(e.code, errc::kUnknownCommand) << code;
    EXPECT_EQ(rejection(code, "garbage").code, errc::kUnknownCommand);
  }
}

// ---- encode-side validation -------------------------------------------------------------------

// encode_payload refuses what decode_payload would refuse, with InvalidArgument.
TEST(CkEncode, RefusesInvalidMessages) {
  EXPECT_THROW(encode_payload(Heartbeat{"bad id"}), InvalidArgument);
  EXPECT_THROW(encode_payload(Heartbeat{}), InvalidArgument);
  Register reg{"KM1", "KM2", std::nullopt, "h:1", {}, std::nullopt, std::nullopt};
  EXPECT_THROW(encode_payload(reg), InvalidArgument);
  reg.kma_id = "KM1";
  EXPECT_NO_THROW(encode_payload(reg));
  reg.software = std::string("\xff");
  EXPECT_THROW(encode_payload(reg), InvalidArgument);
  StatusReport sr{"KM1", "2026-01-01T00:00:00Z", {{"L", "KM2", "up", 0, 0, 0, 0, 2.0}}};
  EXPECT_THROW(encode_payload(sr), InvalidArgument);
  sr.links[0].qber = std::nan("");
  EXPECT_THROW(encode_payload(sr), InvalidArgument);
  sr.links[0].qber = 0;
  sr.links[0].key_rate_bps = std::numeric_limits<double>::infinity();
  EXPECT_THROW(encode_payload(sr), InvalidArgument);
  SessionCreationRequest scr{"SAE-A", "SAE-B", std::nullopt, "not json"};
  EXPECT_THROW(encode_payload(scr), InvalidArgument);
  scr.extension = "[1]";
  EXPECT_THROW(encode_payload(scr), InvalidArgument);
  scr.extension = "{}";
  EXPECT_THROW(encode_payload(scr), InvalidArgument);
  scr.extension = R"([ {"a" : 1} ])";
  EXPECT_EQ(encode_payload(scr),
            R"({"application_source_id":"SAE-A","application_destination_id":"SAE-B",)"
            R"("extension":[{"a":1}]})");
  EXPECT_THROW(encode_payload(ErrorMessage{"nope", std::nullopt, std::nullopt, false}),
               InvalidArgument);
  EXPECT_THROW(encode_payload(KeyReservationResponse{{}, {}, {}, {}, {}, {"x"}, 0, {}}),
               InvalidArgument);
  EXPECT_THROW(encode_payload(KeyRelayResponse{"maybe", {}, {}}), InvalidArgument);
  Alarm a{"KM1", "qber_high",           {}, "major", std::numeric_limits<double>::quiet_NaN(),
          {},    "2026-01-01T00:00:00Z"};
  EXPECT_THROW(encode_payload(a), InvalidArgument);
  RegisterResponse rr{"OK", "ctl", -1, 1000, 1000, std::nullopt, std::nullopt, std::nullopt};
  EXPECT_THROW(encode_payload(rr), InvalidArgument);
}

// Free text is escaped so that any valid UTF-8 string survives the round trip.
TEST(CkEncode, EscapesText) {
  const std::string text = "quote\" backslash\\ nl\n tab\t ctl\x01\x1f del\x7f euro\xe2\x82\xac";
  Alarm a{"KM1", "link_down", "L1", "critical", -2.5, text, "2026-01-01T00:00:00+00:00"};
  const std::string p = encode_payload(a);
  EXPECT_NE(p.find(R"(\")"), std::string::npos);
  EXPECT_NE(p.find(R"(\u0001)"), std::string::npos);
  EXPECT_EQ(decode_as<Alarm>(0x14E4, p), a);
}

// Doubles keep their exact value through encode and decode.
TEST(CkEncode, NumbersRoundTripExactly) {
  for (double v : {0.0, 1.0, 0.1, 1.0 / 3.0, 1e-300, 1.7976931348623157e308, 12345678.875}) {
    StatusReport sr{"KM1", "2026-01-01T00:00:00Z", {{"L", "KM2", "down", 1, 256, v, v, 0.5}}};
    const auto back = decode_as<StatusReport>(0x14E3, encode_payload(sr));
    ASSERT_EQ(back.links.size(), 1u);
    EXPECT_EQ(back.links[0].key_rate_bps, v);
  }
}

// ---- NG extension helpers
// ------------------------------------------------------------------------

// A named string member of an extension object (instruction_id on a 0x1403) round-trips; other
// types, other names, non-arrays and absent extensions find nothing.
TEST(CkExtension, ExtensionStringRoundTrip) {
  const std::string ext = make_extension_string("instruction_id", "i-\"1\"");
  KeyRelayRequestNotification n;
  n.destination_kma_id = "KM5";
  n.extension = ext;
  const auto back = decode_as<KeyRelayRequestNotification>(0x1403, encode_payload(n));
  EXPECT_EQ(find_extension_string(back.extension, "instruction_id"), "i-\"1\"");
  EXPECT_FALSE(find_extension_string(back.extension, "other"));
  EXPECT_FALSE(find_extension_string(std::string(R"([{"instruction_id":7}])"), "instruction_id"));
  EXPECT_EQ(
      find_extension_string(std::string(R"([{"a":1},{"instruction_id":"x"}])"), "instruction_id"),
      "x");
  EXPECT_FALSE(find_extension_string(std::string("garbage"), "instruction_id"));
  EXPECT_FALSE(find_extension_string(std::nullopt, "instruction_id"));
}

// An integer NG carries {"error","message"} in extension (clause 3).
TEST(CkExtension, ErrorExtensionRoundTrip) {
  const std::string ext = make_error_extension(errc::kInsufficientKeys, "only 3 keys");
  EXPECT_EQ(ext, R"([{"error":"insufficient_keys","message":"only 3 keys"}])");
  KeyReservationResponse r{{}, {}, {}, {}, {}, {}, 1, ext};
  const auto back = decode_as<KeyReservationResponse>(0x140B, encode_payload(r));
  const auto found = find_error_extension(back.extension);
  ASSERT_TRUE(found);
  EXPECT_EQ(*found, (ExtensionError{"insufficient_keys", "only 3 keys"}));
  EXPECT_FALSE(find_error_extension(std::nullopt));
  EXPECT_FALSE(find_error_extension(std::string("[{\"x\":1}]")));
  EXPECT_FALSE(find_error_extension(std::string("garbage")));
  EXPECT_EQ(find_error_extension(std::string(R"([{"a":1},{"error":"timeout"}])"))->error,
            "timeout");
  EXPECT_THROW(make_error_extension("nope", ""), InvalidArgument);
  EXPECT_TRUE(is_error_code(errc::kStaleEpoch));
  EXPECT_FALSE(is_error_code("ok"));
}

// ---- command table -----------------------------------------------------------------------------

struct CommandRow {
  std::uint16_t code;
  std::string_view name;
  Direction direction;
  std::optional<std::uint16_t> response;
};

// Q.4164 Table I.1 plus the project extensions; "Pairs" of clause 4.
const CommandRow kCommandTable[] = {
    {0x1401, "key_relay_next_hop_request", Direction::kKmToController, 0x4102},
    {0x4102, "key_relay_next_hop_response", Direction::kControllerToKm, std::nullopt},
    {0x1403, "key_relay_request_notification", Direction::kKmToController, std::nullopt},
    {0x4104, "key_relay_request", Direction::kControllerToKm, 0x1405},
    {0x1405, "key_relay_response", Direction::kKmToController, std::nullopt},
    {0x1406, "session_creation_request", Direction::kKmToController, 0x4107},
    {0x4107, "session_creation_response", Direction::kControllerToKm, std::nullopt},
    {0x4108, "session_creation_notification", Direction::kControllerToKm, 0x1409},
    {0x1409, "session_creation_notification_response", Direction::kKmToController, std::nullopt},
    {0x410A, "key_reservation_request", Direction::kControllerToKm, 0x140B},
    {0x140B, "key_reservation_response", Direction::kKmToController, std::nullopt},
    {0x410C, "key_allocation_request", Direction::kControllerToKm, 0x140D},
    {0x140D, "key_allocation_response", Direction::kKmToController, std::nullopt},
    {0x14E1, "register", Direction::kKmToController, 0x41E2},
    {0x41E2, "register_response", Direction::kControllerToKm, std::nullopt},
    {0x14E3, "status_report", Direction::kKmToController, std::nullopt},
    {0x14E4, "alarm", Direction::kKmToController, std::nullopt},
    {0x41E5, "relay_instruction", Direction::kControllerToKm, 0x14E6},
    {0x14E6, "relay_instruction_response", Direction::kKmToController, std::nullopt},
    {0x14E7, "applications_update", Direction::kKmToController, std::nullopt},
    {0x14E8, "heartbeat", Direction::kKmToController, 0x41E9},
    {0x41E9, "heartbeat_response", Direction::kControllerToKm, std::nullopt},
    {0x41EA, "key_release", Direction::kControllerToKm, 0x14EB},
    {0x14EB, "key_release_response", Direction::kKmToController, std::nullopt},
    {0x14EF, "error", Direction::kKmToController, std::nullopt},
    {0x41EF, "error", Direction::kControllerToKm, std::nullopt},
    {0x14F0, "iwn_transfer_request", Direction::kKmToController, 0x41F1},
    {0x41F1, "iwn_transfer_instruction", Direction::kControllerToKm, std::nullopt},
    {0x14F2, "iwn_transfer_report", Direction::kKmToController, std::nullopt},
};

// Names, directions and response pairs for every known code.
TEST(CkCommands, TableMatchesClause4) {
  for (const auto& row : kCommandTable) {
    SCOPED_TRACE(row.name);
    EXPECT_TRUE(is_known_command(row.code));
    EXPECT_EQ(command_name(row.code), row.name);
    EXPECT_EQ(direction_of(row.code), row.direction);
    const auto resp = response_of(static_cast<Command>(row.code));
    EXPECT_EQ(resp.has_value(), row.response.has_value());
    if (resp && row.response) {
      EXPECT_EQ(static_cast<std::uint16_t>(*resp), *row.response);
      // A response travels the other way.
      EXPECT_NE(direction_of(*row.response), row.direction);
    }
  }
  int known = 0;
  for (std::uint32_t c = 0; c <= 0xFFFF; ++c) {
    const auto code = static_cast<std::uint16_t>(c);
    if (is_known_command(code)) {
      ++known;
    } else {
      EXPECT_EQ(command_name(code), "unknown");
    }
  }
  EXPECT_EQ(known, 29);
  EXPECT_FALSE(direction_of(0x1501));
  EXPECT_FALSE(direction_of(0x0014));
  EXPECT_EQ(direction_of(0x14FF), Direction::kKmToController);
}

// The codec's command table and the independent table above list the same commands with the
// same names, directions and pairs: a command added to one fails here until the other has it.
TEST(CkCommands, CodecTableMatchesTestTable) {
  EXPECT_EQ(std::size(kCommands), std::size(kCommandTable));
  for (const auto& row : kCommandTable) {
    SCOPED_TRACE(row.name);
    const CommandInfo* c = find_command(row.code);
    ASSERT_NE(c, nullptr);
    EXPECT_EQ(static_cast<std::uint16_t>(c->code), row.code);
    EXPECT_EQ(c->name, row.name);
    EXPECT_EQ(c->direction, row.direction);
    ASSERT_EQ(c->response.has_value(), row.response.has_value());
    if (c->response) {
      EXPECT_EQ(static_cast<std::uint16_t>(*c->response), *row.response);
    }
    EXPECT_LT(c->variant_index, std::variant_size_v<Message>);
  }
  EXPECT_EQ(find_command(0x1400), nullptr);
  for (std::uint32_t code = 0; code <= 0xFFFF; ++code) {
    const auto c = static_cast<std::uint16_t>(code);
    const CommandInfo* row = find_command(c);
    ASSERT_EQ(is_known_command(c), row != nullptr) << code;
    EXPECT_EQ(command_name(c), row != nullptr ? row->name : "unknown");
  }
  EXPECT_TRUE(payload_fields(0x1400).empty());
}

}  // namespace
}  // namespace qkdn::southbound::ck
