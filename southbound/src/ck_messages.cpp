// Ck message codec: JSON payloads of Q.4164 Tables 1-13 and the project extensions
// (ck-protocol.md clause 4). Decoding is two steps: a type-checked read of the JSON object into
// the message struct, then validate(), the same value rules that encode_payload applies, so that
// what we send and what we accept cannot drift apart.
#include "qkdn/southbound/ck_messages.hpp"

#include <array>
#include <boost/json.hpp>
#include <charconv>
#include <cmath>
#include <limits>
#include <new>
#include <type_traits>
#include <utility>

#include "qkdn/controller/error.hpp"

namespace qkdn::southbound::ck {

namespace json = boost::json;

namespace {

// ---- error paths -------------------------------------------------------------------------------

// Names the offending field ("links[2].qber") without building strings on the success path.
struct Where {
  std::string_view outer;           // enclosing array field, or empty
  std::ptrdiff_t outer_index = -1;  // element of `outer`
  std::string_view field;
  std::ptrdiff_t index = -1;  // element of `field`, or -1

  [[nodiscard]] Where at(std::ptrdiff_t i) const { return Where{outer, outer_index, field, i}; }
  [[nodiscard]] std::string str() const {
    std::string s;
    if (!outer.empty()) {
      s.append(outer);
      if (outer_index >= 0) s.append("[").append(std::to_string(outer_index)).append("]");
      s.append(".");
    }
    s.append(field);
    if (index >= 0) s.append("[").append(std::to_string(index)).append("]");
    return s;
  }
};

[[noreturn]] void reject(const Where& w, std::string_view what) {
  std::string m = w.str();
  m.append(": ").append(what);
  throw InvalidArgument(m);
}

// ---- value rules -------------------------------------------------------------------------------

constexpr bool is_digit(char c) noexcept { return c >= '0' && c <= '9'; }
constexpr bool is_hex(char c) noexcept {
  return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}
constexpr bool is_alnum(char c) noexcept {
  return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

// Clause 3: 1..128 characters of [A-Za-z0-9._:-].
bool id_ok(std::string_view s) noexcept {
  if (s.empty() || s.size() > 128) return false;
  for (char c : s) {
    if (!is_alnum(c) && c != '.' && c != '_' && c != ':' && c != '-') return false;
  }
  return true;
}

// 8-4-4-4-12 hex digits, either case.
bool uuid_ok(std::string_view s) noexcept {
  if (s.size() != 36) return false;
  for (std::size_t i = 0; i < s.size(); ++i) {
    const bool dash = i == 8 || i == 13 || i == 18 || i == 23;
    if (dash ? s[i] != '-' : !is_hex(s[i])) return false;
  }
  return true;
}

bool utf8_ok(std::string_view s) noexcept {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const auto* end = p + s.size();
  while (p < end) {
    const unsigned c = *p;
    if (c < 0x80) {
      ++p;
      continue;
    }
    std::size_t n = 0;
    unsigned lo = 0x80;
    unsigned hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
      n = 1;
    } else if (c >= 0xE0 && c <= 0xEF) {
      n = 2;
      if (c == 0xE0) lo = 0xA0;
      if (c == 0xED) hi = 0x9F;  // no UTF-16 surrogates
    } else if (c >= 0xF0 && c <= 0xF4) {
      n = 3;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;
    } else {
      return false;
    }
    if (static_cast<std::size_t>(end - p) <= n) return false;
    if (p[1] < lo || p[1] > hi) return false;
    for (std::size_t i = 2; i <= n; ++i) {
      if (p[i] < 0x80 || p[i] > 0xBF) return false;
    }
    p += n + 1;
  }
  return true;
}

int two_digits(std::string_view s, std::size_t at) noexcept {
  if (at + 2 > s.size() || !is_digit(s[at]) || !is_digit(s[at + 1])) return -1;
  return (s[at] - '0') * 10 + (s[at + 1] - '0');
}

// RFC 3339 section 5.6 date-time, with calendar checks (leap years; second 60 allowed). At most
// 64 characters, the bound of qkdn::parse_rfc3339, so that whatever we accept the core can parse.
bool rfc3339_ok(std::string_view s) noexcept {
  if (s.size() < 20 || s.size() > 64) return false;
  for (std::size_t i = 0; i < 4; ++i) {
    if (!is_digit(s[i])) return false;
  }
  const int year = (s[0] - '0') * 1000 + (s[1] - '0') * 100 + (s[2] - '0') * 10 + (s[3] - '0');
  if (s[4] != '-' || s[7] != '-' || s[13] != ':' || s[16] != ':') return false;
  if (s[10] != 'T' && s[10] != 't') return false;
  const int month = two_digits(s, 5);
  const int day = two_digits(s, 8);
  const int hour = two_digits(s, 11);
  const int minute = two_digits(s, 14);
  const int second = two_digits(s, 17);
  if (month < 1 || month > 12 || day < 1 || hour < 0 || hour > 23 || minute < 0 || minute > 59 ||
      second < 0 || second > 60) {
    return false;
  }
  static constexpr std::array<int, 12> kDays = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  const bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
  const int days = kDays[static_cast<std::size_t>(month - 1)] + (month == 2 && leap ? 1 : 0);
  if (day > days) return false;
  std::size_t i = 19;
  if (s[i] == '.') {
    ++i;
    const std::size_t start = i;
    while (i < s.size() && is_digit(s[i])) ++i;
    if (i == start) return false;
  }
  if (i >= s.size()) return false;
  if (s[i] == 'Z' || s[i] == 'z') return i + 1 == s.size();
  if (s[i] != '+' && s[i] != '-') return false;
  if (i + 6 != s.size() || s[i + 3] != ':') return false;
  const int oh = two_digits(s, i + 1);
  const int om = two_digits(s, i + 4);
  return oh >= 0 && oh <= 23 && om >= 0 && om <= 59;
}

// host ":" port; host a DNS name / IPv4 address or "[" IPv6 "]"; port 1..65535.
bool endpoint_ok(std::string_view s) noexcept {
  const auto colon = s.rfind(':');
  if (colon == std::string_view::npos) return false;
  const std::string_view host = s.substr(0, colon);
  const std::string_view port = s.substr(colon + 1);
  if (port.empty() || port.size() > 5) return false;
  unsigned value = 0;
  for (char c : port) {
    if (!is_digit(c)) return false;
    value = value * 10 + static_cast<unsigned>(c - '0');
  }
  if (value < 1 || value > 65535) return false;
  if (host.empty()) return false;
  if (host.front() == '[') {
    if (host.size() < 4 || host.size() > 47 || host.back() != ']') return false;
    bool has_colon = false;
    for (char c : host.substr(1, host.size() - 2)) {
      if (c == ':') has_colon = true;
      if (!is_hex(c) && c != ':' && c != '.') return false;
    }
    return has_colon;
  }
  if (host.size() > 253 || host.front() == '.' || host.front() == '-' || host.back() == '.') {
    return false;
  }
  for (char c : host) {
    if (!is_alnum(c) && c != '.' && c != '-' && c != '_') return false;
  }
  return true;
}

bool response_string_ok(std::string_view s) noexcept {
  return s == "OK" || (s.size() > 4 && s.substr(0, 4) == "NG: ");
}

constexpr std::array<std::string_view, 13> kErrorCodes = {errc::kBadRequest,
                                                          errc::kUnknownCommand,
                                                          errc::kUnsupportedVersion,
                                                          errc::kNotRegistered,
                                                          errc::kUnknownKma,
                                                          errc::kUnknownApplication,
                                                          errc::kNoRoute,
                                                          errc::kInsufficientKeys,
                                                          errc::kUnknownKey,
                                                          errc::kReservationExpired,
                                                          errc::kStaleEpoch,
                                                          errc::kTimeout,
                                                          errc::kInternal};
constexpr std::array<std::string_view, 6> kAlarms = {
    "qber_high", "link_down", "link_up", "key_pool_low", "relay_failure", "peer_unreachable"};
constexpr std::array<std::string_view, 4> kSeverities = {"critical", "major", "minor", "cleared"};

template <std::size_t N>
bool one_of(std::string_view s, const std::array<std::string_view, N>& set) noexcept {
  for (auto v : set) {
    if (v == s) return true;
  }
  return false;
}

// ---- struct-level checks (shared by decode and encode) -----------------------------------------

void check_id(const Where& w, const std::string& v) {
  if (!id_ok(v)) reject(w, "invalid identifier (1..128 of [A-Za-z0-9._:-])");
}
void check_id(const Where& w, const std::optional<std::string>& v) {
  if (v) check_id(w, *v);
}
void check_uuid(const Where& w, const std::string& v) {
  if (!uuid_ok(v)) reject(w, "invalid UUID");
}
void check_uuid(const Where& w, const std::optional<std::string>& v) {
  if (v) check_uuid(w, *v);
}
void check_ids(const Where& w, const std::vector<std::string>& v) {
  for (std::size_t i = 0; i < v.size(); ++i) check_id(w.at(static_cast<std::ptrdiff_t>(i)), v[i]);
}
void check_ids(const Where& w, const std::optional<std::vector<std::string>>& v) {
  if (v) check_ids(w, *v);
}
void check_uuids(const Where& w, const std::vector<std::string>& v, bool non_empty) {
  if (non_empty && v.empty()) reject(w, "must not be empty");
  for (std::size_t i = 0; i < v.size(); ++i) {
    check_uuid(w.at(static_cast<std::ptrdiff_t>(i)), v[i]);
  }
}
void check_text(const Where& w, const std::string& v) {
  if (!utf8_ok(v)) reject(w, "invalid UTF-8");
}
void check_text(const Where& w, const std::optional<std::string>& v) {
  if (v) check_text(w, *v);
}
void check_response(const Where& w, const std::string& v) {
  if (!response_string_ok(v)) reject(w, "expected \"OK\" or \"NG: <reason>\"");
  check_text(w, v);
}
void check_int_response(const Where& w, std::int64_t v) {
  if (v != 0 && v != 1) reject(w, "expected 0 (OK) or 1 (NG)");
}
void check_range(const Where& w, std::int64_t v, std::int64_t lo, std::int64_t hi) {
  if (v < lo || v > hi) {
    reject(w, "out of range [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
  }
}
void check_range(const Where& w, const std::optional<std::int64_t>& v, std::int64_t lo,
                 std::int64_t hi) {
  if (v) check_range(w, *v, lo, hi);
}
void check_number_of_keys(const std::optional<std::int64_t>& v) {
  check_range(Where{{}, -1, "number_of_keys", -1}, v, 1, kMaxNumberOfKeys);
}
void check_key_size(const std::optional<std::int64_t>& v) {
  check_range(Where{{}, -1, "key_size", -1}, v, 1, kMaxKeySizeBits);
}
void check_epoch(const std::optional<std::int64_t>& v) {
  check_range(Where{{}, -1, "controller_epoch", -1}, v, 0,
              std::numeric_limits<std::int64_t>::max());
}
void check_non_negative(const Where& w, double v) {
  if (!std::isfinite(v) || v < 0) reject(w, "must be a finite number >= 0");
}
void check_timestamp(const Where& w, const std::string& v) {
  if (!rfc3339_ok(v)) reject(w, "invalid RFC 3339 timestamp");
}
void check_timestamp(const Where& w, const std::optional<std::string>& v) {
  if (v) check_timestamp(w, *v);
}
void check_endpoint(const Where& w, const std::string& v) {
  if (!endpoint_ok(v)) reject(w, "expected host:port with port 1..65535");
}
void check_either_destination(const std::optional<std::string>& dst,
                              const std::optional<std::string>& app) {
  if (!dst && !app) {
    reject(Where{{}, -1, "destination_kma_id", -1},
           "either destination_kma_id or application_destination_id is mandatory");
  }
}

constexpr Where kw(std::string_view field) { return Where{{}, -1, field, -1}; }

json::parse_options parse_opts() noexcept {
  json::parse_options o;
  o.max_depth = kMaxJsonDepth;
  return o;
}

// Parses an `extension` text into `mr`; it must be an array of objects.
json::array parse_extension(const std::string& text, json::storage_ptr sp) {
  json::error_code ec;
  json::value v = json::parse(text, ec, std::move(sp), parse_opts());
  if (ec) reject(kw("extension"), "invalid JSON (" + ec.message() + ")");
  auto* arr = v.if_array();
  if (arr == nullptr) reject(kw("extension"), "expected array of objects");
  for (std::size_t i = 0; i < arr->size(); ++i) {
    if (!(*arr)[i].is_object()) {
      reject(kw("extension").at(static_cast<std::ptrdiff_t>(i)), "expected object");
    }
  }
  return std::move(*arr);
}

void check_extension(const Extension& e) {
  if (!e) return;
  unsigned char buf[2048];
  json::monotonic_resource mr(buf, sizeof buf);
  (void)parse_extension(*e, &mr);
}

void check(const KeyRelayNextHopRequest& m) {
  check_id(kw("source_kma_id"), m.source_kma_id);
  check_id(kw("destination_kma_id"), m.destination_kma_id);
  check_id(kw("application_destination_id"), m.application_destination_id);
  check_either_destination(m.destination_kma_id, m.application_destination_id);
  check_extension(m.extension);
}
void check(const KeyRelayNextHopResponse& m) {
  check_id(kw("source_kma_id"), m.source_kma_id);
  check_id(kw("destination_kma_id"), m.destination_kma_id);
  check_ids(kw("next_kma_ids"), m.next_kma_ids);
  check_extension(m.extension);
  check_epoch(m.controller_epoch);
}
void check(const KeyRelayRequestNotification& m) {
  check_id(kw("source_kma_id"), m.source_kma_id);
  check_id(kw("destination_kma_id"), m.destination_kma_id);
  check_id(kw("application_destination_id"), m.application_destination_id);
  check_either_destination(m.destination_kma_id, m.application_destination_id);
  check_number_of_keys(m.number_of_keys);
  check_key_size(m.key_size);
  check_extension(m.extension);
}
void check(const KeyRelayRequest& m) {
  check_id(kw("source_kma_id"), m.source_kma_id);
  check_id(kw("destination_kma_id"), m.destination_kma_id);
  check_ids(kw("transit_kma_ids"), m.transit_kma_ids);
  check_uuid(kw("key_relay_request_id"), m.key_relay_request_id);
  for (std::size_t i = 0; i < m.hop_keys.size(); ++i) {
    const auto idx = static_cast<std::ptrdiff_t>(i);
    const HopKeys& h = m.hop_keys[i];
    check_id(Where{"hop_keys", idx, "kma_id", -1}, h.kma_id);
    check_id(Where{"hop_keys", idx, "next_kma_id", -1}, h.next_kma_id);
    check_id(Where{"hop_keys", idx, "link_id", -1}, h.link_id);
    check_uuids(Where{"hop_keys", idx, "key_ids", -1}, h.key_ids, true);
  }
  if (m.extension) {
    unsigned char buf[2048];
    json::monotonic_resource mr(buf, sizeof buf);
    const json::array arr = parse_extension(*m.extension, &mr);
    for (std::size_t i = 0; i < arr.size(); ++i) {
      if (arr[i].as_object().contains("hop_keys")) {
        reject(kw("extension").at(static_cast<std::ptrdiff_t>(i)),
               "a hop_keys object belongs in hop_keys");
      }
    }
  }
  check_epoch(m.controller_epoch);
}
void check(const KeyRelayResponse& m) {
  check_response(kw("response"), m.response);
  check_uuid(kw("key_relay_request_id"), m.key_relay_request_id);
  check_extension(m.extension);
}
void check(const SessionCreationRequest& m) {
  check_id(kw("application_source_id"), m.application_source_id);
  check_id(kw("application_destination_id"), m.application_destination_id);
  check_number_of_keys(m.number_of_keys);
  check_extension(m.extension);
}
void check(const SessionCreationResponse& m) {
  check_uuid(kw("session_id"), m.session_id);
  check_response(kw("response"), m.response);
  check_id(kw("destination_km_id"), m.destination_km_id);
  check_extension(m.extension);
  check_epoch(m.controller_epoch);
}
void check(const SessionCreationNotification& m) {
  check_id(kw("application_source_id"), m.application_source_id);
  check_id(kw("application_destination_id"), m.application_destination_id);
  check_uuid(kw("session_id"), m.session_id);
  check_id(kw("source_km_id"), m.source_km_id);
  check_number_of_keys(m.number_of_keys);
  check_extension(m.extension);
  check_epoch(m.controller_epoch);
}
void check(const SessionCreationNotificationResponse& m) {
  check_uuid(kw("session_id"), m.session_id);
  check_response(kw("response"), m.response);
  check_extension(m.extension);
}
void check(const KeyReservationRequest& m) {
  check_id(kw("source_kma_id"), m.source_kma_id);
  check_id(kw("destination_kma_id"), m.destination_kma_id);
  check_id(kw("application_destination_id"), m.application_destination_id);
  check_number_of_keys(m.number_of_keys);
  check_id(kw("next_kma_id"), m.next_kma_id);
  check_id(kw("link_id"), m.link_id);
  check_uuid(kw("key_relay_request_id"), m.key_relay_request_id);
  check_extension(m.extension);
  check_epoch(m.controller_epoch);
}
void check(const KeyReservationResponse& m) {
  check_id(kw("source_kma_id"), m.source_kma_id);
  check_id(kw("destination_kma_id"), m.destination_kma_id);
  check_id(kw("application_destination_id"), m.application_destination_id);
  check_id(kw("next_kma_id"), m.next_kma_id);
  check_id(kw("link_id"), m.link_id);
  check_uuids(kw("key_ids"), m.key_ids, false);
  check_int_response(kw("response"), m.response);
  check_extension(m.extension);
}
void check(const KeyAllocationRequest& m) {
  check_id(kw("source_kma_id"), m.source_kma_id);
  check_id(kw("destination_kma_id"), m.destination_kma_id);
  check_id(kw("application_destination_id"), m.application_destination_id);
  check_id(kw("next_kma_id"), m.next_kma_id);
  check_id(kw("link_id"), m.link_id);
  check_uuid(kw("key_relay_request_id"), m.key_relay_request_id);
  check_uuids(kw("key_ids"), m.key_ids, true);
  check_extension(m.extension);
  check_epoch(m.controller_epoch);
}
void check(const KeyAllocationResponse& m) {
  check_id(kw("source_kma_id"), m.source_kma_id);
  check_id(kw("destination_kma_id"), m.destination_kma_id);
  check_id(kw("application_destination_id"), m.application_destination_id);
  check_id(kw("next_kma_id"), m.next_kma_id);
  check_id(kw("link_id"), m.link_id);
  if (m.key_ids) check_uuids(kw("key_ids"), *m.key_ids, false);
  check_int_response(kw("response"), m.response);
  check_extension(m.extension);
}
void check(const Register& m) {
  check_id(kw("km_id"), m.km_id);
  check_id(kw("kma_id"), m.kma_id);
  if (m.kma_id && *m.kma_id != m.km_id) reject(kw("kma_id"), "must equal km_id (one KMA per KM)");
  check_id(kw("ksa_id"), m.ksa_id);
  check_endpoint(kw("kma_endpoint"), m.kma_endpoint);
  for (std::size_t i = 0; i < m.links.size(); ++i) {
    const auto idx = static_cast<std::ptrdiff_t>(i);
    check_id(Where{"links", idx, "link_id", -1}, m.links[i].link_id);
    check_id(Where{"links", idx, "peer_kma_id", -1}, m.links[i].peer_kma_id);
  }
  check_ids(kw("applications"), m.applications);
  check_text(kw("software"), m.software);
}
void check(const RegisterResponse& m) {
  check_response(kw("response"), m.response);
  check_id(kw("controller_id"), m.controller_id);
  check_epoch(m.controller_epoch);
  check_range(kw("heartbeat_interval_ms"), m.heartbeat_interval_ms, 1, kMaxIntervalMs);
  check_range(kw("status_interval_ms"), m.status_interval_ms, 1, kMaxIntervalMs);
  if (m.peers) {
    for (std::size_t i = 0; i < m.peers->size(); ++i) {
      const auto idx = static_cast<std::ptrdiff_t>(i);
      check_id(Where{"peers", idx, "kma_id", -1}, (*m.peers)[i].kma_id);
      check_endpoint(Where{"peers", idx, "kma_endpoint", -1}, (*m.peers)[i].kma_endpoint);
    }
  }
}
void check(const StatusReport& m) {
  check_id(kw("kma_id"), m.kma_id);
  check_timestamp(kw("timestamp"), m.timestamp);
  for (std::size_t i = 0; i < m.links.size(); ++i) {
    const auto idx = static_cast<std::ptrdiff_t>(i);
    const LinkStatus& l = m.links[i];
    check_id(Where{"links", idx, "link_id", -1}, l.link_id);
    check_id(Where{"links", idx, "peer_kma_id", -1}, l.peer_kma_id);
    if (l.state != "up" && l.state != "down") {
      reject(Where{"links", idx, "state", -1}, "expected \"up\" or \"down\"");
    }
    check_range(Where{"links", idx, "stored_keys", -1}, l.stored_keys, 0,
                std::numeric_limits<std::int64_t>::max());
    check_range(Where{"links", idx, "stored_key_bits", -1}, l.stored_key_bits, 0,
                std::numeric_limits<std::int64_t>::max());
    check_non_negative(Where{"links", idx, "key_rate_bps", -1}, l.key_rate_bps);
    check_non_negative(Where{"links", idx, "consumption_rate_bps", -1}, l.consumption_rate_bps);
    if (!(l.qber >= 0 && l.qber <= 1)) reject(Where{"links", idx, "qber", -1}, "must be in [0, 1]");
  }
}
void check(const Alarm& m) {
  check_id(kw("kma_id"), m.kma_id);
  if (!one_of(m.alarm, kAlarms)) reject(kw("alarm"), "unknown alarm");
  check_id(kw("link_id"), m.link_id);
  if (!one_of(m.severity, kSeverities)) {
    reject(kw("severity"), "expected critical, major, minor or cleared");
  }
  if (m.value && !std::isfinite(*m.value)) reject(kw("value"), "must be finite");
  check_text(kw("text"), m.text);
  check_timestamp(kw("timestamp"), m.timestamp);
}
void check(const RelayInstruction& m) {
  check_uuid(kw("instruction_id"), m.instruction_id);
  check_id(kw("destination_kma_id"), m.destination_kma_id);
  check_ids(kw("transit_kma_ids"), m.transit_kma_ids);
  check_range(kw("number_of_keys"), m.number_of_keys, 1, kMaxNumberOfKeys);
  check_key_size(m.key_size);
  check_timestamp(kw("not_before"), m.not_before);
  check_timestamp(kw("not_after"), m.not_after);
  check_extension(m.extension);
  check_epoch(m.controller_epoch);
}
void check(const RelayInstructionResponse& m) {
  check_uuid(kw("instruction_id"), m.instruction_id);
  check_response(kw("response"), m.response);
  check_range(kw("keys_relayed"), m.keys_relayed, 0, std::numeric_limits<std::int64_t>::max());
}
void check(const ApplicationsUpdate& m) {
  check_id(kw("kma_id"), m.kma_id);
  check_ids(kw("attached"), m.attached);
  check_ids(kw("detached"), m.detached);
}
void check(const Heartbeat& m) { check_id(kw("kma_id"), m.kma_id); }
void check(const HeartbeatResponse&) {}
void check(const ErrorMessage& m) {
  if (!one_of(m.error, kErrorCodes)) reject(kw("error"), "not an error code of clause 3");
  check_text(kw("message"), m.message);
}

// ---- decoding: typed reads from a JSON object --------------------------------------------------

class Reader {
 public:
  explicit Reader(const json::object& o, std::string_view outer = {},
                  std::ptrdiff_t outer_index = -1)
      : o_(o), outer_(outer), outer_index_(outer_index) {}

  [[nodiscard]] Where where(std::string_view key) const {
    return Where{outer_, outer_index_, key, -1};
  }
  [[nodiscard]] const json::value* find(std::string_view key) const { return o_.if_contains(key); }
  const json::value& need(std::string_view key) const {
    const json::value* v = find(key);
    if (v == nullptr) reject(where(key), "missing mandatory field");
    return *v;
  }

  static std::string as_string(const Where& w, const json::value& v) {
    const json::string* s = v.if_string();
    if (s == nullptr) reject(w, "expected string");
    return std::string(s->data(), s->size());
  }
  static std::int64_t as_integer(const Where& w, const json::value& v) {
    if (const std::int64_t* i = v.if_int64()) return *i;
    if (v.is_uint64()) reject(w, "integer out of range");
    reject(w, "expected integer");
  }
  static double as_number(const Where& w, const json::value& v) {
    double d = 0;
    if (const std::int64_t* i = v.if_int64()) {
      d = static_cast<double>(*i);
    } else if (const std::uint64_t* u = v.if_uint64()) {
      d = static_cast<double>(*u);
    } else if (const double* x = v.if_double()) {
      d = *x;
    } else {
      reject(w, "expected number");
    }
    if (!std::isfinite(d)) reject(w, "must be finite");
    return d;
  }
  static const json::array& as_array(const Where& w, const json::value& v) {
    const json::array* a = v.if_array();
    if (a == nullptr) reject(w, "expected array");
    return *a;
  }
  static const json::object& as_object(const Where& w, const json::value& v) {
    const json::object* o = v.if_object();
    if (o == nullptr) reject(w, "expected object");
    return *o;
  }
  static std::vector<std::string> as_strings(const Where& w, const json::value& v) {
    const json::array& a = as_array(w, v);
    std::vector<std::string> out;
    out.reserve(a.size());
    for (std::size_t i = 0; i < a.size(); ++i) {
      out.push_back(as_string(w.at(static_cast<std::ptrdiff_t>(i)), a[i]));
    }
    return out;
  }

  std::string str(std::string_view key) const { return as_string(where(key), need(key)); }
  std::optional<std::string> opt_str(std::string_view key) const {
    const json::value* v = find(key);
    if (v == nullptr) return std::nullopt;
    return as_string(where(key), *v);
  }
  std::int64_t integer(std::string_view key) const { return as_integer(where(key), need(key)); }
  std::optional<std::int64_t> opt_integer(std::string_view key) const {
    const json::value* v = find(key);
    if (v == nullptr) return std::nullopt;
    return as_integer(where(key), *v);
  }
  std::optional<std::uint32_t> opt_u32(std::string_view key) const {
    const json::value* v = find(key);
    if (v == nullptr) return std::nullopt;
    const std::int64_t i = as_integer(where(key), *v);
    if (i < 0 || i > std::numeric_limits<std::uint32_t>::max()) {
      reject(where(key), "out of range [0, 4294967295]");
    }
    return static_cast<std::uint32_t>(i);
  }
  double number(std::string_view key) const { return as_number(where(key), need(key)); }
  std::optional<double> opt_number(std::string_view key) const {
    const json::value* v = find(key);
    if (v == nullptr) return std::nullopt;
    return as_number(where(key), *v);
  }
  std::vector<std::string> strs(std::string_view key) const {
    return as_strings(where(key), need(key));
  }
  std::optional<std::vector<std::string>> opt_strs(std::string_view key) const {
    const json::value* v = find(key);
    if (v == nullptr) return std::nullopt;
    return as_strings(where(key), *v);
  }
  const json::array& array(std::string_view key) const { return as_array(where(key), need(key)); }
  const json::array* opt_array(std::string_view key) const {
    const json::value* v = find(key);
    if (v == nullptr) return nullptr;
    return &as_array(where(key), *v);
  }
  // `extension`: an array of objects, kept as compact JSON text.
  Extension extension() const {
    const json::array* a = opt_array("extension");
    if (a == nullptr) return std::nullopt;
    check_objects(*a);
    return json::serialize(*a);
  }
  void check_objects(const json::array& a) const {
    for (std::size_t i = 0; i < a.size(); ++i) {
      if (!a[i].is_object()) {
        reject(where("extension").at(static_cast<std::ptrdiff_t>(i)), "expected object");
      }
    }
  }

 private:
  const json::object& o_;
  std::string_view outer_;
  std::ptrdiff_t outer_index_;
};

// 0x4104: split the hop_keys object out of the extension array.
void read_relay_extension(const Reader& r, KeyRelayRequest& m) {
  const json::array* a = r.opt_array("extension");
  if (a == nullptr) return;
  r.check_objects(*a);
  const json::object* hop_obj = nullptr;
  for (const json::value& v : *a) {
    const json::object& o = v.get_object();
    if (o.contains("hop_keys")) {
      if (hop_obj != nullptr) reject(kw("extension"), "more than one hop_keys object");
      hop_obj = &o;
    }
  }
  if (hop_obj == nullptr) {
    m.extension = json::serialize(*a);
    return;
  }
  const Where hw = kw("hop_keys");
  const json::array& hops = Reader::as_array(hw, hop_obj->at("hop_keys"));
  m.hop_keys.reserve(hops.size());
  for (std::size_t i = 0; i < hops.size(); ++i) {
    const auto idx = static_cast<std::ptrdiff_t>(i);
    const Reader h(Reader::as_object(hw.at(idx), hops[i]), "hop_keys", idx);
    m.hop_keys.push_back(
        HopKeys{h.str("kma_id"), h.str("next_kma_id"), h.str("link_id"), h.strs("key_ids")});
  }
  if (a->size() > 1) {
    std::string out = "[";
    bool first = true;
    for (const json::value& v : *a) {
      if (&v.get_object() == hop_obj) continue;
      if (!first) out += ',';
      first = false;
      out += json::serialize(v);
    }
    out += ']';
    m.extension = std::move(out);
  }
}

Message read_message(Command c, const Reader& r) {
  switch (c) {
    case Command::kKeyRelayNextHopRequest:
      return KeyRelayNextHopRequest{r.opt_str("source_kma_id"), r.opt_str("destination_kma_id"),
                                    r.opt_str("application_destination_id"), r.extension()};
    case Command::kKeyRelayNextHopResponse:
      return KeyRelayNextHopResponse{r.opt_str("source_kma_id"), r.opt_str("destination_kma_id"),
                                     r.strs("next_kma_ids"), r.extension(),
                                     r.opt_integer("controller_epoch")};
    case Command::kKeyRelayRequestNotification:
      return KeyRelayRequestNotification{r.opt_str("source_kma_id"),
                                         r.opt_str("destination_kma_id"),
                                         r.opt_str("application_destination_id"),
                                         r.opt_integer("number_of_keys"),
                                         r.opt_integer("key_size"),
                                         r.extension()};
    case Command::kKeyRelayRequest: {
      KeyRelayRequest m;
      m.source_kma_id = r.opt_str("source_kma_id");
      m.destination_kma_id = r.opt_str("destination_kma_id");
      m.transit_kma_ids = r.strs("transit_kma_ids");
      m.key_relay_request_id = r.opt_str("key_relay_request_id");
      m.notification_message_id = r.opt_u32("notification_message_id");
      read_relay_extension(r, m);
      m.controller_epoch = r.opt_integer("controller_epoch");
      return m;
    }
    case Command::kKeyRelayResponse:
      return KeyRelayResponse{r.str("response"), r.opt_str("key_relay_request_id"), r.extension()};
    case Command::kSessionCreationRequest:
      return SessionCreationRequest{r.str("application_source_id"),
                                    r.str("application_destination_id"),
                                    r.opt_integer("number_of_keys"), r.extension()};
    case Command::kSessionCreationResponse:
      return SessionCreationResponse{r.str("session_id"), r.str("response"),
                                     r.str("destination_km_id"), r.extension(),
                                     r.opt_integer("controller_epoch")};
    case Command::kSessionCreationNotification:
      return SessionCreationNotification{r.str("application_source_id"),
                                         r.str("application_destination_id"),
                                         r.str("session_id"),
                                         r.str("source_km_id"),
                                         r.opt_integer("number_of_keys"),
                                         r.extension(),
                                         r.opt_integer("controller_epoch")};
    case Command::kSessionCreationNotificationResponse:
      return SessionCreationNotificationResponse{r.str("session_id"), r.str("response"),
                                                 r.extension()};
    case Command::kKeyReservationRequest:
      return KeyReservationRequest{r.str("source_kma_id"),
                                   r.str("destination_kma_id"),
                                   r.opt_str("application_destination_id"),
                                   r.opt_integer("number_of_keys"),
                                   r.opt_str("next_kma_id"),
                                   r.opt_str("link_id"),
                                   r.opt_str("key_relay_request_id"),
                                   r.extension(),
                                   r.opt_integer("controller_epoch")};
    case Command::kKeyReservationResponse:
      return KeyReservationResponse{r.opt_str("source_kma_id"),
                                    r.opt_str("destination_kma_id"),
                                    r.opt_str("application_destination_id"),
                                    r.opt_str("next_kma_id"),
                                    r.opt_str("link_id"),
                                    r.strs("key_ids"),
                                    r.integer("response"),
                                    r.extension()};
    case Command::kKeyAllocationRequest:
      return KeyAllocationRequest{r.str("source_kma_id"),
                                  r.str("destination_kma_id"),
                                  r.opt_str("application_destination_id"),
                                  r.opt_str("next_kma_id"),
                                  r.opt_str("link_id"),
                                  r.opt_str("key_relay_request_id"),
                                  r.strs("key_ids"),
                                  r.extension(),
                                  r.opt_integer("controller_epoch")};
    case Command::kKeyAllocationResponse:
      return KeyAllocationResponse{r.opt_str("source_kma_id"),
                                   r.opt_str("destination_kma_id"),
                                   r.opt_str("application_destination_id"),
                                   r.opt_str("next_kma_id"),
                                   r.opt_str("link_id"),
                                   r.opt_strs("key_ids"),
                                   r.integer("response"),
                                   r.extension()};
    case Command::kRegister: {
      Register m;
      m.km_id = r.str("km_id");
      m.kma_id = r.opt_str("kma_id");
      m.ksa_id = r.opt_str("ksa_id");
      m.kma_endpoint = r.str("kma_endpoint");
      const Where lw = kw("links");
      const json::array& links = r.array("links");
      m.links.reserve(links.size());
      for (std::size_t i = 0; i < links.size(); ++i) {
        const auto idx = static_cast<std::ptrdiff_t>(i);
        const Reader l(Reader::as_object(lw.at(idx), links[i]), "links", idx);
        m.links.push_back(LinkRef{l.str("link_id"), l.str("peer_kma_id")});
      }
      m.applications = r.opt_strs("applications");
      m.software = r.opt_str("software");
      return m;
    }
    case Command::kRegisterResponse: {
      RegisterResponse m;
      m.response = r.str("response");
      m.controller_id = r.str("controller_id");
      m.controller_epoch = r.integer("controller_epoch");
      m.heartbeat_interval_ms = r.integer("heartbeat_interval_ms");
      m.status_interval_ms = r.integer("status_interval_ms");
      if (const json::array* peers = r.opt_array("peers")) {
        const Where pw = kw("peers");
        m.peers.emplace();
        m.peers->reserve(peers->size());
        for (std::size_t i = 0; i < peers->size(); ++i) {
          const auto idx = static_cast<std::ptrdiff_t>(i);
          const Reader p(Reader::as_object(pw.at(idx), (*peers)[i]), "peers", idx);
          m.peers->push_back(PeerEndpoint{p.str("kma_id"), p.str("kma_endpoint")});
        }
      }
      return m;
    }
    case Command::kStatusReport: {
      StatusReport m;
      m.kma_id = r.str("kma_id");
      m.timestamp = r.str("timestamp");
      const Where lw = kw("links");
      const json::array& links = r.array("links");
      m.links.reserve(links.size());
      for (std::size_t i = 0; i < links.size(); ++i) {
        const auto idx = static_cast<std::ptrdiff_t>(i);
        const Reader l(Reader::as_object(lw.at(idx), links[i]), "links", idx);
        m.links.push_back(LinkStatus{l.str("link_id"), l.str("peer_kma_id"), l.str("state"),
                                     l.integer("stored_keys"), l.integer("stored_key_bits"),
                                     l.number("key_rate_bps"), l.number("consumption_rate_bps"),
                                     l.number("qber")});
      }
      return m;
    }
    case Command::kAlarm:
      return Alarm{r.str("kma_id"),   r.str("alarm"),        r.opt_str("link_id"),
                   r.str("severity"), r.opt_number("value"), r.opt_str("text"),
                   r.str("timestamp")};
    case Command::kRelayInstruction:
      return RelayInstruction{r.str("instruction_id"),          r.str("destination_kma_id"),
                              r.strs("transit_kma_ids"),        r.integer("number_of_keys"),
                              r.opt_integer("key_size"),        r.opt_str("not_before"),
                              r.opt_str("not_after"),           r.extension(),
                              r.opt_integer("controller_epoch")};
    case Command::kRelayInstructionResponse:
      return RelayInstructionResponse{r.str("instruction_id"), r.str("response"),
                                      r.opt_integer("keys_relayed")};
    case Command::kApplicationsUpdate:
      return ApplicationsUpdate{r.str("kma_id"), r.opt_strs("attached"), r.opt_strs("detached")};
    case Command::kHeartbeat:
      return Heartbeat{r.str("kma_id")};
    case Command::kHeartbeatResponse:
      return HeartbeatResponse{};
    case Command::kErrorFromKm:
    case Command::kErrorFromController:
      return ErrorMessage{r.str("error"), r.opt_str("message"), r.opt_u32("message_id"),
                          c == Command::kErrorFromKm};
  }
  reject(kw("command"), "unknown command");  // unreachable: callers check is_known_command
}

// ---- encoding ----------------------------------------------------------------------------------

void append_quoted(std::string& out, std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  out += '"';
  std::size_t run = 0;  // start of the pending run of bytes that need no escaping
  for (std::size_t i = 0; i < s.size(); ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c != '"' && c != '\\') continue;
    out.append(s.data() + run, i - run);
    run = i + 1;
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      default:
        out += "\\u00";
        out += kHex[c >> 4];
        out += kHex[c & 0xF];
    }
  }
  out.append(s.data() + run, s.size() - run);
  out += '"';
}

template <typename T>
void append_number(std::string& out, T v) {
  char buf[32];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, r.ptr);
}

class ObjectWriter {
 public:
  explicit ObjectWriter(std::string& out) : out_(out) { out_ += '{'; }
  ObjectWriter(const ObjectWriter&) = delete;
  ObjectWriter& operator=(const ObjectWriter&) = delete;
  ~ObjectWriter() { out_ += '}'; }

  std::string& key(std::string_view k) {
    if (!first_) out_ += ',';
    first_ = false;
    out_ += '"';
    out_.append(k);
    out_ += "\":";
    return out_;
  }
  void str(std::string_view k, std::string_view v) { append_quoted(key(k), v); }
  void str(std::string_view k, const std::string& v) { append_quoted(key(k), v); }
  void str(std::string_view k, const std::optional<std::string>& v) {
    if (v) str(k, *v);
  }
  void integer(std::string_view k, std::int64_t v) { append_number(key(k), v); }
  void integer(std::string_view k, const std::optional<std::int64_t>& v) {
    if (v) integer(k, *v);
  }
  void u32(std::string_view k, const std::optional<std::uint32_t>& v) {
    if (v) append_number(key(k), *v);
  }
  void number(std::string_view k, double v) { append_number(key(k), v); }
  void number(std::string_view k, const std::optional<double>& v) {
    if (v) number(k, *v);
  }
  void strs(std::string_view k, const std::vector<std::string>& v) {
    std::string& o = key(k);
    o += '[';
    for (std::size_t i = 0; i < v.size(); ++i) {
      if (i != 0) o += ',';
      append_quoted(o, v[i]);
    }
    o += ']';
  }
  void strs(std::string_view k, const std::optional<std::vector<std::string>>& v) {
    if (v) strs(k, *v);
  }
  // Re-serialized compactly; the text was checked by validate().
  void extension(const Extension& e) {
    if (!e) return;
    unsigned char buf[2048];
    json::monotonic_resource mr(buf, sizeof buf);
    key("extension") += json::serialize(parse_extension(*e, &mr));
  }

 private:
  std::string& out_;
  bool first_ = true;
};

void emit(std::string& out, const KeyRelayNextHopRequest& m) {
  ObjectWriter w(out);
  w.str("source_kma_id", m.source_kma_id);
  w.str("destination_kma_id", m.destination_kma_id);
  w.str("application_destination_id", m.application_destination_id);
  w.extension(m.extension);
}
void emit(std::string& out, const KeyRelayNextHopResponse& m) {
  ObjectWriter w(out);
  w.str("source_kma_id", m.source_kma_id);
  w.str("destination_kma_id", m.destination_kma_id);
  w.strs("next_kma_ids", m.next_kma_ids);
  w.extension(m.extension);
  w.integer("controller_epoch", m.controller_epoch);
}
void emit(std::string& out, const KeyRelayRequestNotification& m) {
  ObjectWriter w(out);
  w.str("source_kma_id", m.source_kma_id);
  w.str("destination_kma_id", m.destination_kma_id);
  w.str("application_destination_id", m.application_destination_id);
  w.integer("number_of_keys", m.number_of_keys);
  w.integer("key_size", m.key_size);
  w.extension(m.extension);
}
void emit(std::string& out, const KeyRelayRequest& m) {
  ObjectWriter w(out);
  w.str("source_kma_id", m.source_kma_id);
  w.str("destination_kma_id", m.destination_kma_id);
  w.strs("transit_kma_ids", m.transit_kma_ids);
  w.str("key_relay_request_id", m.key_relay_request_id);
  w.u32("notification_message_id", m.notification_message_id);
  if (!m.hop_keys.empty()) {
    std::string& o = w.key("extension");
    o += "[{\"hop_keys\":[";
    for (std::size_t i = 0; i < m.hop_keys.size(); ++i) {
      if (i != 0) o += ',';
      ObjectWriter h(o);
      h.str("kma_id", m.hop_keys[i].kma_id);
      h.str("next_kma_id", m.hop_keys[i].next_kma_id);
      h.str("link_id", m.hop_keys[i].link_id);
      h.strs("key_ids", m.hop_keys[i].key_ids);
    }
    o += "]}";
    if (m.extension) {
      unsigned char buf[2048];
      json::monotonic_resource mr(buf, sizeof buf);
      for (const json::value& v : parse_extension(*m.extension, &mr)) {
        o += ',';
        o += json::serialize(v);
      }
    }
    o += ']';
  } else {
    w.extension(m.extension);
  }
  w.integer("controller_epoch", m.controller_epoch);
}
void emit(std::string& out, const KeyRelayResponse& m) {
  ObjectWriter w(out);
  w.str("response", m.response);
  w.str("key_relay_request_id", m.key_relay_request_id);
  w.extension(m.extension);
}
void emit(std::string& out, const SessionCreationRequest& m) {
  ObjectWriter w(out);
  w.str("application_source_id", m.application_source_id);
  w.str("application_destination_id", m.application_destination_id);
  w.integer("number_of_keys", m.number_of_keys);
  w.extension(m.extension);
}
void emit(std::string& out, const SessionCreationResponse& m) {
  ObjectWriter w(out);
  w.str("session_id", m.session_id);
  w.str("response", m.response);
  w.str("destination_km_id", m.destination_km_id);
  w.extension(m.extension);
  w.integer("controller_epoch", m.controller_epoch);
}
void emit(std::string& out, const SessionCreationNotification& m) {
  ObjectWriter w(out);
  w.str("application_source_id", m.application_source_id);
  w.str("application_destination_id", m.application_destination_id);
  w.str("session_id", m.session_id);
  w.str("source_km_id", m.source_km_id);
  w.integer("number_of_keys", m.number_of_keys);
  w.extension(m.extension);
  w.integer("controller_epoch", m.controller_epoch);
}
void emit(std::string& out, const SessionCreationNotificationResponse& m) {
  ObjectWriter w(out);
  w.str("session_id", m.session_id);
  w.str("response", m.response);
  w.extension(m.extension);
}
void emit(std::string& out, const KeyReservationRequest& m) {
  ObjectWriter w(out);
  w.str("source_kma_id", m.source_kma_id);
  w.str("destination_kma_id", m.destination_kma_id);
  w.str("application_destination_id", m.application_destination_id);
  w.integer("number_of_keys", m.number_of_keys);
  w.str("next_kma_id", m.next_kma_id);
  w.str("link_id", m.link_id);
  w.str("key_relay_request_id", m.key_relay_request_id);
  w.extension(m.extension);
  w.integer("controller_epoch", m.controller_epoch);
}
void emit(std::string& out, const KeyReservationResponse& m) {
  ObjectWriter w(out);
  w.str("source_kma_id", m.source_kma_id);
  w.str("destination_kma_id", m.destination_kma_id);
  w.str("application_destination_id", m.application_destination_id);
  w.str("next_kma_id", m.next_kma_id);
  w.str("link_id", m.link_id);
  w.strs("key_ids", m.key_ids);
  w.integer("response", m.response);
  w.extension(m.extension);
}
void emit(std::string& out, const KeyAllocationRequest& m) {
  ObjectWriter w(out);
  w.str("source_kma_id", m.source_kma_id);
  w.str("destination_kma_id", m.destination_kma_id);
  w.str("application_destination_id", m.application_destination_id);
  w.str("next_kma_id", m.next_kma_id);
  w.str("link_id", m.link_id);
  w.str("key_relay_request_id", m.key_relay_request_id);
  w.strs("key_ids", m.key_ids);
  w.extension(m.extension);
  w.integer("controller_epoch", m.controller_epoch);
}
void emit(std::string& out, const KeyAllocationResponse& m) {
  ObjectWriter w(out);
  w.str("source_kma_id", m.source_kma_id);
  w.str("destination_kma_id", m.destination_kma_id);
  w.str("application_destination_id", m.application_destination_id);
  w.str("next_kma_id", m.next_kma_id);
  w.str("link_id", m.link_id);
  w.strs("key_ids", m.key_ids);
  w.integer("response", m.response);
  w.extension(m.extension);
}
void emit(std::string& out, const Register& m) {
  ObjectWriter w(out);
  w.str("km_id", m.km_id);
  w.str("kma_id", m.kma_id);
  w.str("ksa_id", m.ksa_id);
  w.str("kma_endpoint", m.kma_endpoint);
  std::string& o = w.key("links");
  o += '[';
  for (std::size_t i = 0; i < m.links.size(); ++i) {
    if (i != 0) o += ',';
    ObjectWriter l(o);
    l.str("link_id", m.links[i].link_id);
    l.str("peer_kma_id", m.links[i].peer_kma_id);
  }
  o += ']';
  w.strs("applications", m.applications);
  w.str("software", m.software);
}
void emit(std::string& out, const RegisterResponse& m) {
  ObjectWriter w(out);
  w.str("response", m.response);
  w.str("controller_id", m.controller_id);
  w.integer("controller_epoch", m.controller_epoch);
  w.integer("heartbeat_interval_ms", m.heartbeat_interval_ms);
  w.integer("status_interval_ms", m.status_interval_ms);
  if (m.peers) {
    std::string& o = w.key("peers");
    o += '[';
    for (std::size_t i = 0; i < m.peers->size(); ++i) {
      if (i != 0) o += ',';
      ObjectWriter p(o);
      p.str("kma_id", (*m.peers)[i].kma_id);
      p.str("kma_endpoint", (*m.peers)[i].kma_endpoint);
    }
    o += ']';
  }
}
void emit(std::string& out, const StatusReport& m) {
  ObjectWriter w(out);
  w.str("kma_id", m.kma_id);
  w.str("timestamp", m.timestamp);
  std::string& o = w.key("links");
  o += '[';
  for (std::size_t i = 0; i < m.links.size(); ++i) {
    if (i != 0) o += ',';
    const LinkStatus& l = m.links[i];
    ObjectWriter lw(o);
    lw.str("link_id", l.link_id);
    lw.str("peer_kma_id", l.peer_kma_id);
    lw.str("state", l.state);
    lw.integer("stored_keys", l.stored_keys);
    lw.integer("stored_key_bits", l.stored_key_bits);
    lw.number("key_rate_bps", l.key_rate_bps);
    lw.number("consumption_rate_bps", l.consumption_rate_bps);
    lw.number("qber", l.qber);
  }
  o += ']';
}
void emit(std::string& out, const Alarm& m) {
  ObjectWriter w(out);
  w.str("kma_id", m.kma_id);
  w.str("alarm", m.alarm);
  w.str("link_id", m.link_id);
  w.str("severity", m.severity);
  w.number("value", m.value);
  w.str("text", m.text);
  w.str("timestamp", m.timestamp);
}
void emit(std::string& out, const RelayInstruction& m) {
  ObjectWriter w(out);
  w.str("instruction_id", m.instruction_id);
  w.str("destination_kma_id", m.destination_kma_id);
  w.strs("transit_kma_ids", m.transit_kma_ids);
  w.integer("number_of_keys", m.number_of_keys);
  w.integer("key_size", m.key_size);
  w.str("not_before", m.not_before);
  w.str("not_after", m.not_after);
  w.extension(m.extension);
  w.integer("controller_epoch", m.controller_epoch);
}
void emit(std::string& out, const RelayInstructionResponse& m) {
  ObjectWriter w(out);
  w.str("instruction_id", m.instruction_id);
  w.str("response", m.response);
  w.integer("keys_relayed", m.keys_relayed);
}
void emit(std::string& out, const ApplicationsUpdate& m) {
  ObjectWriter w(out);
  w.str("kma_id", m.kma_id);
  w.strs("attached", m.attached);
  w.strs("detached", m.detached);
}
void emit(std::string& out, const Heartbeat& m) {
  ObjectWriter w(out);
  w.str("kma_id", m.kma_id);
}
void emit(std::string& out, const HeartbeatResponse&) { ObjectWriter w(out); }
void emit(std::string& out, const ErrorMessage& m) {
  ObjectWriter w(out);
  w.str("error", m.error);
  w.str("message", m.message);
  w.u32("message_id", m.message_id);
}

std::string hex16(std::uint16_t v) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string s = "0x";
  for (int shift = 12; shift >= 0; shift -= 4) s += kHex[(v >> shift) & 0xF];
  return s;
}

}  // namespace

// ---- command table -----------------------------------------------------------------------------

bool is_known_command(std::uint16_t code) noexcept { return command_name(code) != "unknown"; }

std::optional<Direction> direction_of(std::uint16_t code) noexcept {
  switch (code >> 8) {
    case 0x14:
      return Direction::kKmToController;
    case 0x41:
      return Direction::kControllerToKm;
    default:
      return std::nullopt;
  }
}

std::string_view command_name(std::uint16_t code) noexcept {
  switch (static_cast<Command>(code)) {
    case Command::kKeyRelayNextHopRequest:
      return "key_relay_next_hop_request";
    case Command::kKeyRelayNextHopResponse:
      return "key_relay_next_hop_response";
    case Command::kKeyRelayRequestNotification:
      return "key_relay_request_notification";
    case Command::kKeyRelayRequest:
      return "key_relay_request";
    case Command::kKeyRelayResponse:
      return "key_relay_response";
    case Command::kSessionCreationRequest:
      return "session_creation_request";
    case Command::kSessionCreationResponse:
      return "session_creation_response";
    case Command::kSessionCreationNotification:
      return "session_creation_notification";
    case Command::kSessionCreationNotificationResponse:
      return "session_creation_notification_response";
    case Command::kKeyReservationRequest:
      return "key_reservation_request";
    case Command::kKeyReservationResponse:
      return "key_reservation_response";
    case Command::kKeyAllocationRequest:
      return "key_allocation_request";
    case Command::kKeyAllocationResponse:
      return "key_allocation_response";
    case Command::kRegister:
      return "register";
    case Command::kRegisterResponse:
      return "register_response";
    case Command::kStatusReport:
      return "status_report";
    case Command::kAlarm:
      return "alarm";
    case Command::kRelayInstruction:
      return "relay_instruction";
    case Command::kRelayInstructionResponse:
      return "relay_instruction_response";
    case Command::kApplicationsUpdate:
      return "applications_update";
    case Command::kHeartbeat:
      return "heartbeat";
    case Command::kHeartbeatResponse:
      return "heartbeat_response";
    case Command::kErrorFromKm:
    case Command::kErrorFromController:
      return "error";
  }
  return "unknown";
}

std::optional<Command> response_of(Command c) noexcept {
  switch (c) {
    case Command::kKeyRelayNextHopRequest:
      return Command::kKeyRelayNextHopResponse;
    case Command::kSessionCreationRequest:
      return Command::kSessionCreationResponse;
    case Command::kSessionCreationNotification:
      return Command::kSessionCreationNotificationResponse;
    case Command::kKeyReservationRequest:
      return Command::kKeyReservationResponse;
    case Command::kKeyAllocationRequest:
      return Command::kKeyAllocationResponse;
    case Command::kKeyRelayRequest:
      return Command::kKeyRelayResponse;
    case Command::kRegister:
      return Command::kRegisterResponse;
    case Command::kRelayInstruction:
      return Command::kRelayInstructionResponse;
    case Command::kHeartbeat:
      return Command::kHeartbeatResponse;
    default:
      return std::nullopt;
  }
}

Command command_of(const Message& m) noexcept {
  static constexpr std::array<Command, std::variant_size_v<Message>> kCodes = {
      Command::kKeyRelayNextHopRequest,
      Command::kKeyRelayNextHopResponse,
      Command::kKeyRelayRequestNotification,
      Command::kKeyRelayRequest,
      Command::kKeyRelayResponse,
      Command::kSessionCreationRequest,
      Command::kSessionCreationResponse,
      Command::kSessionCreationNotification,
      Command::kSessionCreationNotificationResponse,
      Command::kKeyReservationRequest,
      Command::kKeyReservationResponse,
      Command::kKeyAllocationRequest,
      Command::kKeyAllocationResponse,
      Command::kRegister,
      Command::kRegisterResponse,
      Command::kStatusReport,
      Command::kAlarm,
      Command::kRelayInstruction,
      Command::kRelayInstructionResponse,
      Command::kApplicationsUpdate,
      Command::kHeartbeat,
      Command::kHeartbeatResponse,
      Command::kErrorFromController,  // ErrorMessage; from_km picks 0x14EF below
  };
  if (const auto* e = std::get_if<ErrorMessage>(&m)) {
    return e->from_km ? Command::kErrorFromKm : Command::kErrorFromController;
  }
  // A valueless variant (an exception during assignment) has no code; report it as an error.
  if (m.index() >= kCodes.size()) return Command::kErrorFromController;
  return kCodes[m.index()];
}

// ---- payload codec -----------------------------------------------------------------------------

DecodeResult decode_payload(std::uint16_t command, std::string_view payload) noexcept {
  try {
    if (!is_known_command(command)) {
      return DecodeError{errc::kUnknownCommand, "unknown command code " + hex16(command)};
    }
    // One arena per call: the DOM and the parser's stack live on this frame's stack for typical
    // payloads, so a decode costs no heap allocation beyond the strings of the result.
    alignas(std::max_align_t) unsigned char arena[8192];
    json::monotonic_resource mr(arena, sizeof arena);
    unsigned char temp[BOOST_JSON_STACK_BUFFER_SIZE];
    json::parser p(json::storage_ptr(), parse_opts(), temp, sizeof temp);
    p.reset(&mr);
    json::error_code ec;
    p.write(payload.data(), payload.size(), ec);
    if (ec) {
      return DecodeError{errc::kBadRequest, "payload: invalid JSON (" + ec.message() + ")"};
    }
    const json::value v = p.release();
    const json::object* obj = v.if_object();
    if (obj == nullptr) return DecodeError{errc::kBadRequest, "payload: expected a JSON object"};
    Message m = read_message(static_cast<Command>(command), Reader(*obj));
    validate(m);
    return DecodeResult{std::in_place_index<0>, std::move(m)};
  } catch (const InvalidArgument& e) {
    return DecodeError{errc::kBadRequest, e.what()};
  } catch (const std::exception& e) {
    try {
      return DecodeError{errc::kInternal, e.what()};
    } catch (...) {
      return DecodeError{errc::kInternal, {}};
    }
  } catch (...) {
    return DecodeError{errc::kInternal, {}};
  }
}

void validate(const Message& m) {
  std::visit([](const auto& msg) { check(msg); }, m);
}

std::string encode_payload(const Message& m) {
  validate(m);
  std::string out;
  out.reserve(256);
  std::visit([&out](const auto& msg) { emit(out, msg); }, m);
  return out;
}

// ---- NG extension helpers ----------------------------------------------------------------------

bool is_error_code(std::string_view code) noexcept { return one_of(code, kErrorCodes); }

std::string make_error_extension(std::string_view code, std::string_view message) {
  if (!is_error_code(code)) reject(kw("error"), "not an error code of clause 3");
  if (!utf8_ok(message)) reject(kw("message"), "invalid UTF-8");
  std::string out = "[";
  {
    ObjectWriter w(out);
    w.str("error", code);
    w.str("message", message);
  }
  out += ']';
  return out;
}

namespace {

/// f(object) for each object of an extension array until f returns a value; nullopt when none
/// does or the text is not a JSON array. Never throws (allocation failure counts as not found).
template <class T, class F>
std::optional<T> first_extension_object(const Extension& extension, F f) noexcept {
  if (!extension) return std::nullopt;
  try {
    unsigned char buf[2048];
    json::monotonic_resource mr(buf, sizeof buf);
    json::error_code ec;
    const json::value v = json::parse(*extension, ec, &mr, parse_opts());
    const json::array* a = ec ? nullptr : v.if_array();
    if (a == nullptr) return std::nullopt;
    for (const json::value& e : *a) {
      const json::object* o = e.if_object();
      if (o == nullptr) continue;
      if (auto found = f(*o)) return found;
    }
  } catch (...) {
    // Allocation failure: "not found" (a caller of find_error_extension still sees response 1).
  }
  return std::nullopt;
}

}  // namespace

std::optional<std::string> find_extension_string(const Extension& extension,
                                                 std::string_view name) noexcept {
  return first_extension_object<std::string>(
      extension, [name](const json::object& o) -> std::optional<std::string> {
        const json::value* m = o.if_contains(name);
        if (m == nullptr || !m->is_string()) return std::nullopt;
        return std::string(m->get_string());
      });
}

std::string make_extension_string(std::string_view name, std::string_view value) {
  json::array a;
  a.emplace_back(json::object{{name, value}});
  return json::serialize(a);
}

std::optional<ExtensionError> find_error_extension(const Extension& extension) noexcept {
  return first_extension_object<ExtensionError>(
      extension, [](const json::object& o) -> std::optional<ExtensionError> {
        const json::value* err = o.if_contains("error");
        if (err == nullptr || !err->is_string()) return std::nullopt;
        ExtensionError out;
        out.error = std::string(err->get_string());
        if (const json::value* msg = o.if_contains("message"); msg != nullptr && msg->is_string()) {
          out.message = std::string(msg->get_string());
        }
        return out;
      });
}

}  // namespace qkdn::southbound::ck
