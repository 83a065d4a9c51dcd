// The out-of-line half of ck_codec.hpp: error paths, the value predicates of the Ck codec
// (ck-protocol.md clause 3 and the codec decisions in ck_messages.hpp), the `extension` parser and
// the compact JSON writer. Shared by every message through the descriptors of ck_codec.hpp.
#include <array>
#include <charconv>
#include <string>

#include "ck_codec.hpp"
#include "qkdn/controller/error.hpp"
#include "qkdn/json/reader.hpp"

namespace qkdn::southbound::ck::detail {

// ---- error paths -------------------------------------------------------------------------------

std::string Where::str() const {
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

void reject(const Where& w, std::string_view what) {
  std::string m = w.str();
  m.append(": ").append(what);
  throw InvalidArgument(m);
}

// ---- value predicates --------------------------------------------------------------------------

namespace {

constexpr bool is_digit(char c) noexcept { return c >= '0' && c <= '9'; }
constexpr bool is_hex(char c) noexcept {
  return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}
constexpr bool is_alnum(char c) noexcept {
  return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

int two_digits(std::string_view s, std::size_t at) noexcept {
  if (at + 2 > s.size() || !is_digit(s[at]) || !is_digit(s[at + 1])) return -1;
  return (s[at] - '0') * 10 + (s[at + 1] - '0');
}

}  // namespace

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

bool one_of(std::string_view s, std::span<const std::string_view> set) noexcept {
  for (auto v : set) {
    if (v == s) return true;
  }
  return false;
}

// ---- JSON reading ------------------------------------------------------------------------------

namespace {
// The shared reader's refusal as the codec's: "extension: invalid JSON (malformed JSON: ...)".
// NOLINTNEXTLINE(performance-unnecessary-value-param): the Reject signature of qkdn::json
[[noreturn]] void refuse_extension(std::string message) {
  reject(kw("extension"), "invalid JSON (" + message + ")");
}
}  // namespace

json::array parse_extension(const std::string& text, json::storage_ptr sp) {
  json::value v = qkdn::json::parse(text, std::move(sp), kCkJsonLimits, refuse_extension);
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

void Reader::check_objects(const json::array& a) const {
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (!a[i].is_object()) {
      reject(where("extension").at(static_cast<std::ptrdiff_t>(i)), "expected object");
    }
  }
}

Extension Reader::extension() const {
  const json::array* a = opt_array("extension");
  if (a == nullptr) return std::nullopt;
  check_objects(*a);
  return json::serialize(*a);
}

// ---- JSON writing ------------------------------------------------------------------------------

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

namespace {

template <typename T>
void append_chars(std::string& out, T v) {
  char buf[32];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, r.ptr);
}

}  // namespace

void append_number(std::string& out, std::int64_t v) { append_chars(out, v); }
void append_number(std::string& out, std::uint32_t v) { append_chars(out, v); }
void append_number(std::string& out, double v) { append_chars(out, v); }

void ObjectWriter::extension(const Extension& e) {
  if (!e) return;
  unsigned char buf[2048];
  json::monotonic_resource mr(buf, sizeof buf);
  key("extension") += json::serialize(parse_extension(*e, &mr));
}

}  // namespace qkdn::southbound::ck::detail
