// Field-by-field conformance of the Ck payload codec against Q.4164 Tables 1-13 and the project
// extensions of ck-protocol.md clause 4: every field of every message, table-driven.
#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <cctype>
#include <string>
#include <variant>
#include <vector>

#include "codec_samples.hpp"
#include "qkdn/southbound/ck_messages.hpp"

namespace qkdn::southbound::ck {
namespace {

namespace json = boost::json;
using testing::all_samples;

// What a field holds; selects the wrong-type and invalid values to try.
enum class Kind {
  kId,
  kUuid,
  kResponse,     // "OK" | "NG: reason"
  kIntResponse,  // 0 | 1
  kCount,        // number_of_keys
  kKeySize,
  kEpoch,
  kNonNegInt,
  kU32,
  kInterval,
  kIdArray,
  kUuidArray,
  kUuidArrayNonEmpty,
  kObjArray,
  kExtension,
  kEndpoint,
  kTimestamp,
  kText,
  kNonNegNumber,
  kQber,
  kNumber,
  kState,
  kAlarm,
  kSeverity,
  kErrorCode,
  kDisposition,     // "release" | "discard" (0x41EA)
  kIwnRole,         // "sender" | "receiver" (0x14F2)
  kIwnDisposition,  // "stored" | "deleted" (0x14F2)
  kRelayRouting,    // "centralized" | "distributed" (0x41E2)
};

struct Field {
  std::string path;  // "links/0/qber"
  bool mandatory;
  Kind kind;
  std::string twin = {};  // a field that must hold the same value (Register km_id == kma_id)
};

// Q.4164 Tables 1-13 (+ [project] fields) and the project extension table, as JSON paths into
// the samples of codec_samples.hpp.
std::vector<Field> fields_of(std::uint16_t command) {
  using K = Kind;
  const Field ext{"extension", false, K::kExtension};
  const Field epoch{"controller_epoch", false, K::kEpoch};
  switch (command) {
    case 0x1401:  // Table 1; the either/or pair is tested separately
      return {{"source_kma_id", false, K::kId},
              {"destination_kma_id", false, K::kId},
              {"application_destination_id", false, K::kId},
              ext};
    case 0x4102:  // Table 2
      return {{"source_kma_id", false, K::kId},
              {"destination_kma_id", false, K::kId},
              {"next_kma_ids", true, K::kIdArray},
              {"next_kma_ids/1", false, K::kId},
              ext,
              epoch};
    case 0x1403:  // Table 3
      return {{"source_kma_id", false, K::kId},
              {"destination_kma_id", false, K::kId},
              {"application_destination_id", false, K::kId},
              {"number_of_keys", false, K::kCount},
              {"key_size", false, K::kKeySize},
              ext};
    case 0x4104:  // Table 4, hop keys in extension (clause 6 step 5)
      return {{"source_kma_id", false, K::kId},
              {"destination_kma_id", false, K::kId},
              {"transit_kma_ids", true, K::kIdArray},
              {"transit_kma_ids/0", false, K::kId},
              {"key_relay_request_id", false, K::kUuid},
              {"notification_message_id", false, K::kU32},
              {"extension", false, K::kExtension},
              {"extension/0/hop_keys", false, K::kObjArray},
              {"extension/0/hop_keys/0/kma_id", true, K::kId},
              {"extension/0/hop_keys/0/next_kma_id", true, K::kId},
              {"extension/0/hop_keys/0/link_id", true, K::kId},
              {"extension/0/hop_keys/0/key_ids", true, K::kUuidArrayNonEmpty},
              {"extension/0/hop_keys/0/key_ids/0", false, K::kUuid},
              epoch};
    case 0x1405:  // Table 5
      return {{"response", true, K::kResponse}, {"key_relay_request_id", false, K::kUuid}, ext};
    case 0x1406:  // Table 6
      return {{"application_source_id", true, K::kId},
              {"application_destination_id", true, K::kId},
              {"number_of_keys", false, K::kCount},
              ext};
    case 0x4107:  // Table 7
      return {{"session_id", true, K::kUuid},
              {"response", true, K::kResponse},
              {"destination_km_id", true, K::kId},
              ext,
              epoch};
    case 0x4108:  // Table 8
      return {{"application_source_id", true, K::kId},
              {"application_destination_id", true, K::kId},
              {"session_id", true, K::kUuid},
              {"source_km_id", true, K::kId},
              {"number_of_keys", false, K::kCount},
              ext,
              epoch};
    case 0x1409:  // Table 9
      return {{"session_id", true, K::kUuid}, {"response", true, K::kResponse}, ext};
    case 0x410A:  // Table 10
      return {{"source_kma_id", true, K::kId},
              {"destination_kma_id", true, K::kId},
              {"application_destination_id", false, K::kId},
              {"number_of_keys", false, K::kCount},
              {"next_kma_id", false, K::kId},
              {"link_id", false, K::kId},
              {"key_relay_request_id", false, K::kUuid},
              ext,
              epoch};
    case 0x140B:  // Table 11
      return {{"source_kma_id", false, K::kId},
              {"destination_kma_id", false, K::kId},
              {"application_destination_id", false, K::kId},
              {"next_kma_id", false, K::kId},
              {"link_id", false, K::kId},
              {"key_ids", true, K::kUuidArray},
              {"key_ids/0", false, K::kUuid},
              {"response", true, K::kIntResponse},
              ext};
    case 0x410C:  // Table 12
      return {{"source_kma_id", true, K::kId},
              {"destination_kma_id", true, K::kId},
              {"application_destination_id", false, K::kId},
              {"next_kma_id", false, K::kId},
              {"link_id", false, K::kId},
              {"key_relay_request_id", false, K::kUuid},
              {"key_ids", true, K::kUuidArrayNonEmpty},
              {"key_ids/1", false, K::kUuid},
              ext,
              epoch};
    case 0x140D:  // Table 13
      return {{"source_kma_id", false, K::kId},
              {"destination_kma_id", false, K::kId},
              {"application_destination_id", false, K::kId},
              {"next_kma_id", false, K::kId},
              {"link_id", false, K::kId},
              {"key_ids", false, K::kUuidArray},
              {"key_ids/0", false, K::kUuid},
              {"response", true, K::kIntResponse},
              ext};
    case 0x14E1:  // Register
      return {{"km_id", true, K::kId, "kma_id"},
              {"kma_id", false, K::kId, "km_id"},
              {"ksa_id", false, K::kId},
              {"kma_endpoint", true, K::kEndpoint},
              {"links", true, K::kObjArray},
              {"links/0/link_id", true, K::kId},
              {"links/0/peer_kma_id", true, K::kId},
              {"applications", false, K::kIdArray},
              {"applications/0", false, K::kId},
              {"software", false, K::kText}};
    case 0x41E2:  // Response to register
      return {
          {"response", true, K::kResponse},           {"controller_id", true, K::kId},
          {"controller_epoch", true, K::kEpoch},      {"heartbeat_interval_ms", true, K::kInterval},
          {"status_interval_ms", true, K::kInterval}, {"peers", false, K::kObjArray},
          {"peers/0/kma_id", true, K::kId},           {"peers/0/kma_endpoint", true, K::kEndpoint},
          {"retry_after_ms", false, K::kInterval},    {"relay_routing", false, K::kRelayRouting}};
    case 0x14E3:  // Status report
      return {{"kma_id", true, K::kId},
              {"timestamp", true, K::kTimestamp},
              {"links", true, K::kObjArray},
              {"links/0/link_id", true, K::kId},
              {"links/0/peer_kma_id", true, K::kId},
              {"links/0/state", true, K::kState},
              {"links/0/stored_keys", true, K::kNonNegInt},
              {"links/0/stored_key_bits", true, K::kNonNegInt},
              {"links/0/key_rate_bps", true, K::kNonNegNumber},
              {"links/0/consumption_rate_bps", true, K::kNonNegNumber},
              {"links/0/qber", true, K::kQber}};
    case 0x14E4:  // Alarm
      return {{"kma_id", true, K::kId},          {"alarm", true, K::kAlarm},
              {"link_id", false, K::kId},        {"severity", true, K::kSeverity},
              {"value", false, K::kNumber},      {"text", false, K::kText},
              {"timestamp", true, K::kTimestamp}};
    case 0x41E5:  // Relay instruction
      return {{"instruction_id", true, K::kUuid},
              {"destination_kma_id", true, K::kId},
              {"transit_kma_ids", true, K::kIdArray},
              {"transit_kma_ids/0", false, K::kId},
              {"number_of_keys", true, K::kCount},
              {"key_size", false, K::kKeySize},
              {"not_before", false, K::kTimestamp},
              {"not_after", false, K::kTimestamp},
              ext,
              epoch};
    case 0x14E6:  // Response to relay instruction
      return {{"instruction_id", true, K::kUuid},
              {"response", true, K::kResponse},
              {"keys_relayed", false, K::kNonNegInt}};
    case 0x41EA:  // Key release [project]
      return {{"key_relay_request_id", true, K::kUuid},
              {"next_kma_id", true, K::kId},
              {"link_id", false, K::kId},
              {"key_ids", true, K::kUuidArrayNonEmpty},
              {"key_ids/1", false, K::kUuid},
              {"disposition", false, K::kDisposition},
              ext,
              epoch};
    case 0x14EB:  // Response to key release [project]
      return {{"key_relay_request_id", true, K::kUuid},
              {"response", true, K::kResponse},
              {"released", false, K::kNonNegInt},
              {"discarded", false, K::kNonNegInt}};
    case 0x14F0:  // Interworking transfer request [project]
      return {
          {"transfer_id", true, K::kUuid},           {"kma_id", true, K::kId},
          {"partner_kma_id", true, K::kId},          {"partner_qkdn_id", false, K::kId},
          {"application_source_id", true, K::kId},   {"application_destination_id", true, K::kId},
          {"number_of_keys", true, K::kCount},       {"key_size", true, K::kKeySize},
          {"key_ids", true, K::kUuidArrayNonEmpty},  {"key_ids/1", false, K::kUuid},
          {"key_relay_request_id", false, K::kUuid}, ext};
    case 0x41F1:  // Interworking transfer instruction [project]
      return {{"transfer_id", true, K::kUuid},
              {"response", true, K::kResponse},
              {"partner_kma_id", false, K::kId},
              {"key_ids", false, K::kUuidArrayNonEmpty},
              {"key_ids/0", false, K::kUuid},
              ext,
              epoch};
    case 0x14F2:  // Interworking transfer report [project]
      return {{"transfer_id", true, K::kUuid},
              {"kma_id", true, K::kId},
              {"role", true, K::kIwnRole},
              {"partner_kma_id", true, K::kId},
              {"partner_qkdn_id", false, K::kId},
              {"application_source_id", true, K::kId},
              {"application_destination_id", true, K::kId},
              {"number_of_keys", true, K::kCount},
              {"key_size", true, K::kKeySize},
              {"key_ids", false, K::kUuidArrayNonEmpty},
              {"key_ids/0", false, K::kUuid},
              {"response", true, K::kResponse},
              {"disposition", true, K::kIwnDisposition},
              ext};
    case 0x14E7:  // Applications update
      return {{"kma_id", true, K::kId},
              {"attached", false, K::kIdArray},
              {"attached/0", false, K::kId},
              {"detached", false, K::kIdArray},
              {"detached/0", false, K::kId}};
    case 0x14E8:  // Heartbeat
      return {{"kma_id", true, K::kId}};
    case 0x41E9:  // Heartbeat response: no fields
      return {};
    case 0x14EF:
    case 0x41EF:  // Error
      return {{"error", true, K::kErrorCode},
              {"message", false, K::kText},
              {"message_id", false, K::kU32}};
    default:
      return {};
  }
}

bool is_string_kind(Kind k) {
  switch (k) {
    case Kind::kId:
    case Kind::kUuid:
    case Kind::kResponse:
    case Kind::kEndpoint:
    case Kind::kTimestamp:
    case Kind::kText:
    case Kind::kState:
    case Kind::kAlarm:
    case Kind::kSeverity:
    case Kind::kErrorCode:
    case Kind::kDisposition:
    case Kind::kIwnRole:
    case Kind::kIwnDisposition:
    case Kind::kRelayRouting:
      return true;
    default:
      return false;
  }
}

bool is_integer_kind(Kind k) {
  switch (k) {
    case Kind::kIntResponse:
    case Kind::kCount:
    case Kind::kKeySize:
    case Kind::kEpoch:
    case Kind::kNonNegInt:
    case Kind::kU32:
    case Kind::kInterval:
      return true;
    default:
      return false;
  }
}

// JSON values of the wrong type for a kind (null included: null is never "absent").
std::vector<std::string> wrong_types(Kind k) {
  if (is_string_kind(k)) return {"7", "null", "true", "[]", "{}"};
  if (is_integer_kind(k)) return {"\"1\"", "1.5", "1.0", "null", "true", "[]"};
  switch (k) {
    case Kind::kNonNegNumber:
    case Kind::kQber:
    case Kind::kNumber:
      return {"\"1\"", "null", "true", "{}"};
    case Kind::kExtension:
      return {"{}", "\"x\"", "null", "[1]", "[\"x\"]", "[{},[]]"};
    case Kind::kObjArray:
      return {"\"x\"", "{}", "null", "7", "[1]", "[\"x\"]"};
    default:  // arrays of strings
      return {"\"x\"", "{}", "null", "7", "[7]", "[null]"};
  }
}

// Values of the right JSON type that the rules of clause 3/4 (and the codec bounds) forbid.
std::vector<std::string> invalid_values(Kind k) {
  switch (k) {
    case Kind::kId:
      return {"\"\"",    "\"has space\"", "\"" + std::string(129, 'a') + "\"", "\"caf\xc3\xa9\"",
              "\"a/b\"", "\"a@b\""};
    case Kind::kUuid:
      return {"\"\"",
              "\"123\"",
              "\"0b5c1a52-7d0e-4c39-9a51-3f1f3b7f0a1\"",
              "\"0b5c1a52x7d0e-4c39-9a51-3f1f3b7f0a11\"",
              "\"gb5c1a52-7d0e-4c39-9a51-3f1f3b7f0a11\"",
              "\"0b5c1a52-7d0e-4c39-9a51-3f1f3b7f0a111\""};
    case Kind::kResponse:
      return {"\"\"", "\"ok\"", "\"NG\"", "\"NG:\"", "\"NG: \"", "\"NGX: x\"", "\"OK \""};
    case Kind::kIntResponse:
      return {"2", "-1"};
    case Kind::kCount:
      return {"0", "-1", "1000001"};
    case Kind::kKeySize:
      return {"0", "1048577"};
    case Kind::kEpoch:
    case Kind::kNonNegInt:
      return {"-1", "9223372036854775808"};
    case Kind::kU32:
      return {"-1", "4294967296"};
    case Kind::kInterval:
      return {"0", "86400001"};
    case Kind::kIdArray:
      return {"[\"bad id\"]", "[\"\"]"};
    case Kind::kUuidArray:
      return {"[\"x\"]"};
    case Kind::kUuidArrayNonEmpty:
      return {"[\"x\"]", "[]"};
    case Kind::kEndpoint:
      return {"\"host\"",  "\"host:\"",    "\"host:0\"",  "\"host:65536\"",
              "\":80\"",   "\"[::1:80\"",  "\"a b:80\"",  "\"host:8x\"",
              "\"[]:80\"", "\".host:80\"", "\"host:-1\"", "\"[zz]:80\""};
    case Kind::kTimestamp:
      return {"\"2026-13-01T00:00:00Z\"",
              "\"2026-02-29T00:00:00Z\"",
              "\"2026-11-22 10:00:00Z\"",
              "\"2026-11-22T24:00:00Z\"",
              "\"2026-11-22T10:00:00\"",
              "\"2026-11-22T10:00:00+1:00\"",
              "\"2026-11-22T10:00:00.Z\"",
              "\"yesterday\"",
              "\"2026-11-22T10:60:00Z\"",
              "\"2026-11-22T10:00:00Zjunk\"",
              "\"2026-11-22T10:00:00+24:00\"",
              "\"\"",
              "\"2026-11-22T10:00:00." + std::string(50, '0') + "Z\""};
    case Kind::kNonNegNumber:
      return {"-1", "-0.5", "1e999"};
    case Kind::kQber:
      return {"-0.1", "1.5", "1e999"};
    case Kind::kNumber:
      return {"1e999", "-1e999"};
    case Kind::kState:
      return {"\"UP\"", "\"unknown\"", "\"\""};
    case Kind::kAlarm:
      return {"\"fire\"", "\"\"", "\"QBER_HIGH\""};
    case Kind::kSeverity:
      return {"\"warning\"", "\"\""};
    case Kind::kErrorCode:
      return {"\"oops\"", "\"\"", "\"BAD_REQUEST\""};
    case Kind::kDisposition:
      return {"\"Release\"", "\"\"", "\"keep\""};
    case Kind::kIwnRole:
      return {"\"Sender\"", "\"\"", "\"relay\""};
    case Kind::kIwnDisposition:
      return {"\"Stored\"", "\"\"", "\"kept\""};
    case Kind::kRelayRouting:
      return {"\"Distributed\"", "\"\"", "\"flooding\""};
    default:
      return {};
  }
}

// Values that are at the edge of the rules but allowed.
std::vector<std::string> edge_values(Kind k) {
  switch (k) {
    case Kind::kId:
      return {"\"" + std::string(128, 'a') + "\"", "\"a.b_c:d-E9\"", "\"x\""};
    case Kind::kUuid:
      return {"\"0B5C1A52-7D0E-4C39-9A51-3F1F3B7F0A11\""};
    case Kind::kResponse:
      return {"\"OK\"", "\"NG: x\"", "\"NG: no route \\u00e9\""};
    case Kind::kIntResponse:
      return {"0", "1"};
    case Kind::kCount:
      return {"1", "1000000"};
    case Kind::kKeySize:
      return {"1", "1048576"};
    case Kind::kEpoch:
    case Kind::kNonNegInt:
      return {"0", "9223372036854775807"};
    case Kind::kU32:
      return {"0", "4294967295"};
    case Kind::kInterval:
      return {"1", "86400000"};
    case Kind::kIdArray:
    case Kind::kUuidArray:
      return {"[]"};
    case Kind::kEndpoint:
      return {"\"[::1]:7001\"", "\"10.0.0.1:1\"", "\"h:65535\"", "\"km-1.example.org:443\""};
    case Kind::kTimestamp:
      return {"\"2024-02-29T23:59:60Z\"", "\"2026-11-22t10:00:00z\"",
              "\"2026-11-22T10:00:00.123456789-05:30\""};
    case Kind::kNonNegNumber:
      return {"0", "0.0", "1e20"};
    case Kind::kQber:
      return {"0", "1", "0.5"};
    case Kind::kNumber:
      return {"-5", "0.25"};
    case Kind::kState:
      return {"\"down\""};
    case Kind::kAlarm:
      return {"\"link_down\"", "\"link_up\"", "\"key_pool_low\"", "\"relay_failure\"",
              "\"peer_unreachable\""};
    case Kind::kSeverity:
      return {"\"critical\"", "\"minor\"", "\"cleared\""};
    case Kind::kDisposition:
      return {"\"release\""};
    case Kind::kIwnRole:
      return {"\"receiver\""};
    case Kind::kIwnDisposition:
      return {"\"deleted\""};
    case Kind::kRelayRouting:
      return {"\"centralized\"", "\"distributed\""};
    case Kind::kErrorCode:
      return {"\"unknown_command\"", "\"unsupported_version\"",
              "\"unknown_kma\"",     "\"unknown_application\"",
              "\"no_route\"",        "\"insufficient_keys\"",
              "\"unknown_key\"",     "\"reservation_expired\"",
              "\"stale_epoch\"",     "\"timeout\"",
              "\"internal\""};
    case Kind::kText:
      return {"\"\"", "\"line\\nbreak \\\"quoted\\\" \\u0001 \xe2\x82\xac\""};
    case Kind::kExtension:
      return {"[]", "[{}]", "[{\"a\":[1,{\"b\":null}]},{\"c\":\"d\"}]"};
    default:
      return {};
  }
}

// ---- JSON path helpers ---------------------------------------------------------------------

std::vector<std::string> split(const std::string& path) {
  std::vector<std::string> parts;
  std::string cur;
  for (char c : path) {
    if (c == '/') {
      parts.push_back(cur);
      cur.clear();
    } else {
      cur += c;
    }
  }
  parts.push_back(cur);
  return parts;
}

bool is_index(const std::string& s) {
  return !s.empty() && std::isdigit(static_cast<unsigned char>(s[0])) != 0;
}

// The container holding the last path component.
json::value& parent_of(json::value& root, const std::vector<std::string>& parts) {
  json::value* v = &root;
  for (std::size_t i = 0; i + 1 < parts.size(); ++i) {
    if (is_index(parts[i])) {
      v = &v->as_array().at(std::stoul(parts[i]));
    } else {
      v = &v->as_object().at(parts[i]);
    }
  }
  return *v;
}

std::string with_erased(const std::string& doc, const std::string& path) {
  json::value root = json::parse(doc);
  const auto parts = split(path);
  json::value& p = parent_of(root, parts);
  if (is_index(parts.back())) {
    auto& a = p.as_array();
    a.erase(a.begin() + static_cast<std::ptrdiff_t>(std::stoul(parts.back())));
  } else {
    EXPECT_EQ(p.as_object().erase(parts.back()), 1u) << path;
  }
  return json::serialize(root);
}

std::string with_value(const std::string& doc, const std::string& path,
                       const std::string& value_json) {
  json::value root = json::parse(doc);
  const auto parts = split(path);
  json::value& p = parent_of(root, parts);
  if (is_index(parts.back())) {
    p.as_array().at(std::stoul(parts.back())) = json::parse(value_json);
  } else {
    p.as_object()[parts.back()] = json::parse(value_json);
  }
  // Serialize by hand for values Boost.JSON would print differently (1e999 -> "Infinity").
  if (value_json.find("e999") != std::string::npos) {
    std::string out = json::serialize(root);
    const std::string placeholder = json::serialize(json::parse(value_json));
    const auto at = out.find(placeholder);
    if (at != std::string::npos) out.replace(at, placeholder.size(), value_json);
    return out;
  }
  return json::serialize(root);
}

// The field name a rejection must mention: the last non-index path component.
std::string field_name(const std::string& path) {
  const auto parts = split(path);
  for (auto it = parts.rbegin(); it != parts.rend(); ++it) {
    if (!is_index(*it)) return *it;
  }
  return path;
}

// ---- cases -----------------------------------------------------------------------------------

enum class Expect { kAccept, kReject };

struct Case {
  std::string what;
  std::string payload;
  Expect expect;
};

// One parameter per field of each table: the test tries every variant of that field.
struct FieldParam {
  std::string name;
  std::uint16_t command;
  std::string sample;
  Field field;
};

void PrintTo(const FieldParam& p, std::ostream* os) { *os << p.name; }

std::string sanitize(std::string s) {
  for (char& c : s) {
    if (std::isalnum(static_cast<unsigned char>(c)) == 0) c = '_';
  }
  return s;
}

std::string hex(std::uint16_t c) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string s = "c";
  for (int shift = 12; shift >= 0; shift -= 4) s += kHex[(c >> shift) & 0xF];
  return s;
}

std::vector<FieldParam> all_fields() {
  std::vector<FieldParam> out;
  for (const auto& sample : all_samples()) {
    for (const Field& f : fields_of(sample.command)) {
      out.push_back({hex(sample.command) + "_" + sanitize(f.path), sample.command, sample.json, f});
    }
  }
  return out;
}

// Absent (mandatory: rejected; optional: accepted), every wrong type, every invalid value
// (rejected) and every edge value (accepted) of one field.
std::vector<Case> cases_for(const FieldParam& p) {
  const Field& f = p.field;
  std::vector<Case> cases;
  cases.push_back({f.mandatory ? "missing" : "absent", with_erased(p.sample, f.path),
                   f.mandatory ? Expect::kReject : Expect::kAccept});
  for (const auto& v : wrong_types(f.kind)) {
    cases.push_back({"wrong type " + v, with_value(p.sample, f.path, v), Expect::kReject});
  }
  for (const auto& v : invalid_values(f.kind)) {
    cases.push_back({"invalid " + v, with_value(p.sample, f.path, v), Expect::kReject});
  }
  for (const auto& v : edge_values(f.kind)) {
    std::string doc = with_value(p.sample, f.path, v);
    if (!f.twin.empty()) doc = with_value(doc, f.twin, v);
    cases.push_back({"edge " + v, doc, Expect::kAccept});
  }
  return cases;
}

// Accepted payloads decode to a message of that command that re-encodes to an equal message;
// rejected ones are bad_request naming the field.
void expect_case(std::uint16_t command, const Case& c, const std::string& field) {
  SCOPED_TRACE(c.what + " -> " + c.payload);
  const DecodeResult r = decode_payload(command, c.payload);
  if (c.expect == Expect::kAccept) {
    ASSERT_TRUE(std::holds_alternative<Message>(r)) << std::get<DecodeError>(r).message;
    const Message& m = std::get<Message>(r);
    EXPECT_EQ(static_cast<std::uint16_t>(command_of(m)), command);
    const DecodeResult again = decode_payload(command, encode_payload(m));
    ASSERT_TRUE(std::holds_alternative<Message>(again));
    EXPECT_EQ(std::get<Message>(again), m);
  } else {
    ASSERT_TRUE(std::holds_alternative<DecodeError>(r));
    const DecodeError& e = std::get<DecodeError>(r);
    EXPECT_EQ(e.code, errc::kBadRequest);
    EXPECT_NE(e.message.find(field), std::string::npos)
        << "message '" << e.message << "' should name " << field;
  }
}

class FieldCase : public ::testing::TestWithParam<FieldParam> {};

// Every field of Q.4164 Tables 1-13 and of the project extensions, variant by variant.
TEST_P(FieldCase, DecodesAsSpecified) {
  const FieldParam& p = GetParam();
  for (const Case& c : cases_for(p)) expect_case(p.command, c, field_name(p.field.path));
}

INSTANTIATE_TEST_SUITE_P(Tables, FieldCase, ::testing::ValuesIn(all_fields()),
                         [](const ::testing::TestParamInfo<FieldParam>& param_info) {
                           return param_info.param.name;
                         });

// The table above is complete: every sample member is listed as a field (so no field of the
// samples escapes the per-field checks).
TEST(FieldTable, CoversEverySampleMember) {
  for (const auto& sample : all_samples()) {
    const auto fields = fields_of(sample.command);
    const json::value doc = json::parse(sample.json);
    for (const auto& kv : doc.as_object()) {
      const std::string key(kv.key());
      bool listed = false;
      for (const auto& f : fields) listed = listed || f.path == key;
      EXPECT_TRUE(listed) << hex(sample.command) << " " << key;
    }
  }
}

// The JSON type a kind of field has on the wire.
FieldType json_type(Kind k) {
  if (is_string_kind(k)) return FieldType::kString;
  if (is_integer_kind(k)) return FieldType::kInteger;
  switch (k) {
    case Kind::kNonNegNumber:
    case Kind::kQber:
    case Kind::kNumber:
      return FieldType::kNumber;
    case Kind::kObjArray:
      return FieldType::kObjectArray;
    case Kind::kExtension:
      return FieldType::kExtension;
    default:
      return FieldType::kStringArray;
  }
}

// There is exactly one sample per command of the codec's table, and it decodes into the Message
// alternative the table names: a command added to the table without a sample fails here.
TEST(FieldTable, OneSamplePerCommand) {
  const auto samples = all_samples();
  EXPECT_EQ(samples.size(), std::size(kCommands));
  for (const CommandInfo& c : kCommands) {
    const auto code = static_cast<std::uint16_t>(c.code);
    SCOPED_TRACE(hex(code));
    int found = 0;
    for (const auto& s : samples) {
      if (s.command != code) continue;
      ++found;
      const DecodeResult r = decode_payload(code, s.json);
      ASSERT_TRUE(std::holds_alternative<Message>(r)) << std::get<DecodeError>(r).message;
      EXPECT_EQ(std::get<Message>(r).index(), c.variant_index);
    }
    EXPECT_EQ(found, 1);
  }
}

// The top-level rows of the table above (Q.4164's tables as read by the tests) agree with the
// codec's field table on names, order, JSON types and mandatory/optional, and every field is in
// the sample: a field added to the codec without a test row (or the other way round) fails here.
TEST(FieldTable, MatchesTheCodecFieldTable) {
  for (const auto& sample : all_samples()) {
    SCOPED_TRACE(hex(sample.command));
    const std::vector<Field> fields = fields_of(sample.command);
    std::vector<const Field*> top;
    for (const Field& f : fields) {
      if (f.path.find('/') == std::string::npos) top.push_back(&f);
    }
    const std::vector<FieldInfo> codec = payload_fields(sample.command);
    ASSERT_EQ(top.size(), codec.size());
    const json::value doc = json::parse(sample.json);
    for (std::size_t i = 0; i < codec.size(); ++i) {
      SCOPED_TRACE(codec[i].name);
      EXPECT_EQ(top[i]->path, codec[i].name);
      EXPECT_EQ(top[i]->mandatory, codec[i].mandatory);
      EXPECT_EQ(json_type(top[i]->kind), codec[i].type);
      EXPECT_TRUE(doc.as_object().contains(codec[i].name)) << "missing from the sample";
    }
  }
}

class SampleCase : public ::testing::TestWithParam<testing::Sample> {};

// Every sample decodes, and encode(decode(x)) is the same JSON value as x (no field lost, none
// added, types kept).
TEST_P(SampleCase, RoundTripsToSameJson) {
  const auto& s = GetParam();
  const DecodeResult r = decode_payload(s.command, s.json);
  ASSERT_TRUE(std::holds_alternative<Message>(r)) << std::get<DecodeError>(r).message;
  const Message& m = std::get<Message>(r);
  EXPECT_EQ(static_cast<std::uint16_t>(command_of(m)), s.command);
  const std::string encoded = encode_payload(m);
  EXPECT_EQ(json::parse(encoded), json::parse(s.json)) << encoded;
  const DecodeResult again = decode_payload(s.command, encoded);
  ASSERT_TRUE(std::holds_alternative<Message>(again));
  EXPECT_EQ(std::get<Message>(again), m);
}

// Unknown fields are ignored (forward compatibility), at top level, whatever their content.
TEST_P(SampleCase, UnknownFieldsIgnored) {
  const auto& s = GetParam();
  const std::string with_unknown =
      with_value(s.json, "x_future", R"({"deep":[1,2,{"n":null}],"e":1e999})");
  const DecodeResult a = decode_payload(s.command, s.json);
  const DecodeResult b = decode_payload(s.command, with_unknown);
  ASSERT_TRUE(std::holds_alternative<Message>(b)) << std::get<DecodeError>(b).message;
  EXPECT_EQ(std::get<Message>(a), std::get<Message>(b));
}

// Every sample sent under every other command: never crashes, and whatever is accepted is a
// message of that command; its own command accepts it.
TEST_P(SampleCase, CrossCommandDecodeIsConsistent) {
  const auto& s = GetParam();
  for (const auto& other : all_samples()) {
    const DecodeResult r = decode_payload(other.command, s.json);
    if (other.command == s.command) {
      EXPECT_TRUE(std::holds_alternative<Message>(r));
    }
    if (const auto* m = std::get_if<Message>(&r)) {
      EXPECT_EQ(static_cast<std::uint16_t>(command_of(*m)), other.command);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Samples, SampleCase, ::testing::ValuesIn(all_samples()),
                         [](const ::testing::TestParamInfo<testing::Sample>& param_info) {
                           return hex(param_info.param.command);
                         });

}  // namespace
}  // namespace qkdn::southbound::ck
