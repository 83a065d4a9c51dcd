// ETSI GS QKD 014 request parsing: see etsi_request.hpp.
#include "etsi_request.hpp"

#include <algorithm>
#include <charconv>
#include <set>

#include <boost/json.hpp>

#include "qkdn/base/error.hpp"
#include "qkdn/json/reader.hpp"

namespace qkdn::agent::etsi {

namespace json = boost::json;

namespace {

constexpr std::string_view kPrefix = "/api/v1/keys/";

Error bad_request(const std::string& message, const std::string& name, const std::string& text) {
  return Error{400, message, {{name, text}}};
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/// A strict decimal integer (optional '-'), nullopt when not one or out of int64 range.
std::optional<std::int64_t> parse_integer(std::string_view text) {
  std::int64_t v = 0;
  if (text.empty() || text.front() == '+') return std::nullopt;
  const auto* end = text.data() + text.size();
  auto [p, ec] = std::from_chars(text.data(), end, v);
  if (ec != std::errc{} || p != end) return std::nullopt;
  return v;
}

/// An integer JSON value (int64 or uint64 that fits), nullopt for anything else.
std::optional<std::int64_t> json_integer(const json::value& v) {
  if (v.is_int64()) return v.as_int64();
  if (v.is_uint64() && v.as_uint64() <= static_cast<std::uint64_t>(INT64_MAX)) {
    return static_cast<std::int64_t>(v.as_uint64());
  }
  return std::nullopt;
}

/// Parses a request body as a JSON object through the shared strict reader (limits, exact
/// numbers); an empty body is {}.
std::optional<json::object> parse_body(std::string_view body, std::string& why) {
  if (body.find_first_not_of(" \t\r\n") == std::string::npos) return json::object{};
  try {
    return qkdn::json::parse_object(body, "the body");
  } catch (const InvalidArgument& e) {
    why = e.what();
    return std::nullopt;
  }
}

std::optional<Error> check_number_size(const KeyRequest& r, const SaeLimits& l) {
  if (r.number < 1 || r.number > l.max_key_per_request) {
    return bad_request("requested parameters do not adhere to KME rules", "number_unsupported",
                       "number " + std::to_string(r.number) + " is not in [1, " +
                           std::to_string(l.max_key_per_request) + "] (max_key_per_request)");
  }
  if (r.size % 8 != 0) {
    return bad_request("size shall be a multiple of 8", "size_unsupported",
                       "size " + std::to_string(r.size) + " is not a multiple of 8");
  }
  if (r.size < l.min_key_size || r.size > l.max_key_size) {
    return bad_request("requested parameters do not adhere to KME rules", "size_unsupported",
                       "size " + std::to_string(r.size) + " is not in [" +
                           std::to_string(l.min_key_size) + ", " + std::to_string(l.max_key_size) +
                           "] bits");
  }
  return std::nullopt;
}

/// `key` must be absent or an array of objects (extension_mandatory, extension_optional).
bool array_of_objects(const json::value& v) {
  if (!v.is_array()) return false;
  return std::all_of(v.as_array().begin(), v.as_array().end(),
                     [](const json::value& e) { return e.is_object(); });
}

bool valid_key_id(const std::string& id) {
  return !id.empty() && id.size() <= kMaxIdLength && std::none_of(id.begin(), id.end(), [](char c) {
    return static_cast<unsigned char>(c) < 0x20;
  });
}

std::variant<std::vector<std::string>, Error> check_key_ids(std::vector<std::string> ids,
                                                            const SaeLimits& l) {
  if (ids.empty()) return bad_request("bad request format", "key_IDs", "no key_ID given");
  if (static_cast<std::int64_t>(ids.size()) > l.max_key_per_request) {
    return bad_request("requested parameters do not adhere to KME rules", "key_IDs",
                       std::to_string(ids.size()) + " key IDs exceed max_key_per_request " +
                           std::to_string(l.max_key_per_request));
  }
  std::set<std::string_view> seen;
  for (const auto& id : ids) {
    if (!valid_key_id(id)) return bad_request("bad request format", "key_ID", "malformed key_ID");
    if (!seen.insert(id).second) {
      return bad_request("bad request format", "key_ID", "key_ID " + id + " given twice");
    }
  }
  return ids;
}

}  // namespace

/// Percent-decoding ('+' is a space in queries only); nullopt on a malformed escape.
std::optional<std::string> percent_decode(std::string_view in, bool query) {
  std::string out;
  out.reserve(in.size());
  for (std::size_t i = 0; i < in.size(); ++i) {
    const char c = in[i];
    if (c == '%') {
      if (i + 2 >= in.size()) return std::nullopt;
      const int hi = hex_value(in[i + 1]);
      const int lo = hex_value(in[i + 2]);
      if (hi < 0 || lo < 0) return std::nullopt;
      out += static_cast<char>(hi * 16 + lo);
      i += 2;
    } else if (c == '+' && query) {
      out += ' ';
    } else {
      out += c;
    }
  }
  return out;
}

std::optional<Query> parse_query(std::string_view q) {
  Query out;
  while (!q.empty()) {
    const auto amp = q.find('&');
    const std::string_view item = q.substr(0, amp);
    q = amp == std::string_view::npos ? std::string_view{} : q.substr(amp + 1);
    if (item.empty()) continue;
    const auto eq = item.find('=');
    auto name = percent_decode(item.substr(0, eq), true);
    auto value = percent_decode(
        eq == std::string_view::npos ? std::string_view{} : item.substr(eq + 1), true);
    if (!name || !value) return std::nullopt;
    out[*name].push_back(std::move(*value));
  }
  return out;
}

std::variant<KeyRequest, Error> enc_request_from_query(const Query& q, const SaeLimits& l) {
  KeyRequest r;
  r.size = l.default_key_size;
  for (const auto& [name, values] : q) {
    if (name != "number" && name != "size") {
      return bad_request("bad request format", "query", "unknown parameter '" + name + "'");
    }
    if (values.size() != 1) {
      return bad_request("bad request format", name, "given more than once");
    }
    const auto v = parse_integer(values.front());
    if (!v) {
      return bad_request("bad request format", name,
                         "expected an integer, got '" + values.front().substr(0, 64) + "'");
    }
    (name == "number" ? r.number : r.size) = *v;
  }
  if (auto bad = check_number_size(r, l)) return std::move(*bad);
  return r;
}

std::variant<KeyRequest, Error> enc_request_from_body(std::string_view body, const SaeLimits& l) {
  std::string why;
  auto obj = parse_body(body, why);
  if (!obj) return bad_request("bad request format", "body", why);
  KeyRequest r;
  r.size = l.default_key_size;
  for (const char* name : {"number", "size"}) {
    if (const auto* v = obj->if_contains(name)) {
      const auto n = json_integer(*v);
      if (!n) return bad_request("bad request format", name, "expected an integer");
      (std::string_view(name) == "number" ? r.number : r.size) = *n;
    }
  }
  if (const auto* v = obj->if_contains("additional_slave_SAE_IDs")) {
    if (!v->is_array() || !std::all_of(v->as_array().begin(), v->as_array().end(),
                                       [](const json::value& e) { return e.is_string(); })) {
      return bad_request("bad request format", "additional_slave_SAE_IDs",
                         "expected an array of SAE IDs");
    }
    if (!v->as_array().empty()) {
      return bad_request("requested parameters do not adhere to KME rules",
                         "additional_slave_SAE_IDs",
                         "key multicast is not supported (max_SAE_ID_count is 0)");
    }
  }
  if (const auto* v = obj->if_contains("extension_mandatory")) {
    if (!array_of_objects(*v)) {
      return bad_request("bad request format", "extension_mandatory",
                         "expected an array of objects");
    }
    if (!v->as_array().empty()) {
      json::array names;
      for (const auto& e : v->as_array()) {
        for (const auto& kv : e.as_object()) names.push_back(json::string(kv.key()));
      }
      return bad_request("not all extension_mandatory parameters are supported",
                         "extension_mandatory_unsupported", json::serialize(names));
    }
  }
  if (const auto* v = obj->if_contains("extension_optional")) {
    if (!array_of_objects(*v)) {
      return bad_request("bad request format", "extension_optional",
                         "expected an array of objects");
    }
  }
  if (auto bad = check_number_size(r, l)) return std::move(*bad);
  return r;
}

std::variant<std::vector<std::string>, Error> dec_request_from_query(const Query& q,
                                                                     const SaeLimits& l) {
  std::vector<std::string> ids;
  for (const auto& [name, values] : q) {
    if (name != "key_ID") {
      return bad_request("bad request format", "query", "unknown parameter '" + name + "'");
    }
    ids = values;
  }
  return check_key_ids(std::move(ids), l);
}

std::variant<std::vector<std::string>, Error> dec_request_from_body(std::string_view body,
                                                                    const SaeLimits& l) {
  std::string why;
  auto obj = parse_body(body, why);
  if (!obj) return bad_request("bad request format", "body", why);
  const auto* list = obj->if_contains("key_IDs");
  if (list == nullptr || !list->is_array()) {
    return bad_request("bad request format", "key_IDs", "expected an array of {\"key_ID\": ...}");
  }
  std::vector<std::string> ids;
  for (const auto& e : list->as_array()) {
    const json::value* id = e.is_object() ? e.as_object().if_contains("key_ID") : nullptr;
    if (id == nullptr || !id->is_string()) {
      return bad_request("bad request format", "key_IDs",
                         "every entry must be an object with a string key_ID");
    }
    ids.emplace_back(id->as_string());
  }
  return check_key_ids(std::move(ids), l);
}

std::variant<Route, Error> match(std::string_view path) {
  auto not_found = [] {
    return Error{404,
                 "no such resource",
                 {{"path",
                   "expected /api/v1/keys/{SAE_ID}/"
                   "status|enc_keys|dec_keys|enc_keys_wrapped|dec_keys_wrapped"}}};
  };
  if (!path.starts_with(kPrefix)) return not_found();
  path.remove_prefix(kPrefix.size());
  const auto slash = path.find('/');
  if (slash == std::string_view::npos || slash == 0) return not_found();
  const std::string_view what = path.substr(slash + 1);
  Route r{};
  if (what == "status") {
    r.op = Op::kStatus;
  } else if (what == "enc_keys") {
    r.op = Op::kEncKeys;
  } else if (what == "dec_keys") {
    r.op = Op::kDecKeys;
  } else if (what == "enc_keys_wrapped") {
    r.op = Op::kEncKeys;
    r.wrapped = true;
  } else if (what == "dec_keys_wrapped") {
    r.op = Op::kDecKeys;
    r.wrapped = true;
  } else {
    return not_found();
  }
  auto sae = percent_decode(path.substr(0, slash), false);
  if (!sae || sae->empty() || sae->size() > kMaxIdLength) return not_found();
  r.sae = std::move(*sae);
  return r;
}

namespace {

/// `text` as valid UTF-8: each byte that does not start a well-formed sequence (RFC 3629: no
/// overlong forms, no surrogates, at most U+10FFFF) becomes U+FFFD. Error texts quote what the
/// client sent (a decoded query parameter may hold any byte), and Boost.JSON serializes strings
/// as they are: without this an error body could be invalid JSON (found by fuzz_etsi).
std::string valid_utf8(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  const auto* p = reinterpret_cast<const unsigned char*>(text.data());
  const std::size_t n = text.size();
  std::size_t i = 0;
  while (i < n) {
    const unsigned c = p[i];
    std::size_t len = 0;
    unsigned lo = 0x80;
    unsigned hi = 0xBF;
    if (c < 0x80) {
      len = 1;
    } else if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      if (c == 0xE0) lo = 0xA0;
      if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;
    }
    bool ok = len > 0 && i + len <= n;
    for (std::size_t k = 1; ok && k < len; ++k) {
      const unsigned b = p[i + k];
      ok = k == 1 ? (b >= lo && b <= hi) : (b >= 0x80 && b <= 0xBF);
    }
    if (ok) {
      out.append(text.substr(i, len));
      i += len;
    } else {
      out += "\xEF\xBF\xBD";
      ++i;
    }
  }
  return out;
}

}  // namespace

std::string error_json(const Error& e) {
  json::array d;
  for (const auto& [name, text] : e.details) {
    d.push_back(json::object{{valid_utf8(name), valid_utf8(text)}});
  }
  return json::serialize(
      json::object{{"message", valid_utf8(e.message)}, {"details", std::move(d)}});
}

}  // namespace qkdn::agent::etsi
