#include "api_util.hpp"

#include <openssl/evp.h>

#include <array>
#include <cmath>
#include <limits>

#include <boost/url/parse_query.hpp>

#include "qkdn/controller/error.hpp"

namespace qkdn::northbound {

void bad_request(std::string detail) { throw ApiError(400, "invalid-request", std::move(detail)); }
void bad_body(std::string detail) { throw ApiError(400, "invalid-body", std::move(detail)); }

HttpResponse problem_response(int status, std::string_view kind, std::string_view detail,
                              std::string_view instance) {
  json::object o;
  o["type"] = "urn:qkdn:problem:" + std::string(kind);
  o["title"] = reason_phrase(status);
  o["status"] = status;
  o["detail"] = detail;
  if (!instance.empty()) o["instance"] = instance;
  HttpResponse r;
  r.status = status;
  r.content_type = "application/problem+json";
  r.body = json::serialize(o);
  return r;
}

HttpResponse json_response(const json::value& v, int status) {
  HttpResponse r;
  r.status = status;
  r.body = json::serialize(v);
  return r;
}

json::object parse_body_object(const HttpRequest& req) {
  std::string ct = req.header("content-type");
  auto semi = ct.find(';');
  std::string media = ct.substr(0, semi);
  while (!media.empty() && media.back() == ' ') media.pop_back();
  for (auto& c : media) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (media != "application/json") {
    throw ApiError(415, "unsupported-media-type",
                   "request body must be application/json, got '" + ct + "'");
  }
  // The HTTP server bounds the body's size; the shared reader bounds its depth.
  qkdn::json::ParseLimits limits;
  limits.max_bytes = req.body.size();
  return qkdn::json::parse_object(req.body, "the body", limits, bad_body);
}

// ---- ObjectReader ---------------------------------------------------------------------------

std::string ObjectReader::id(std::string_view key) {
  auto s = string(key);
  if (!is_valid_id(s)) {
    bad_body("field '" + field(key) + "': '" + s +
             "' is not a valid ID (1..128 of [A-Za-z0-9._:-])");
  }
  return s;
}

std::optional<SysTime> ObjectReader::opt_time(std::string_view key) {
  auto s = opt_string(key);
  if (!s) return std::nullopt;
  try {
    return parse_rfc3339(*s);
  } catch (const Error& e) {
    bad_body("field '" + field(key) + "': " + e.what());
  }
}

// ---- Query ------------------------------------------------------------------------------------

Query Query::parse(std::string_view encoded_query) {
  Query q;
  auto r = boost::urls::parse_query(encoded_query);
  if (!r) bad_request("malformed query string");
  for (auto p : *r) {
    std::string key = p.key.decode();
    std::string value = p.has_value ? p.value.decode() : std::string{};
    if (key.empty()) continue;
    if (!q.values_.emplace(key, std::move(value)).second) {
      bad_request("query parameter '" + key + "' given more than once");
    }
  }
  return q;
}

std::optional<std::string> Query::get(std::string_view name) {
  seen_.emplace(name);
  auto it = values_.find(name);
  if (it == values_.end()) return std::nullopt;
  return it->second;
}

std::string Query::required(std::string_view name) {
  auto v = get(name);
  if (!v || v->empty()) bad_request("query parameter '" + std::string(name) + "' is required");
  return *v;
}

std::optional<std::uint64_t> Query::get_uint(std::string_view name, std::uint64_t min,
                                             std::uint64_t max) {
  auto v = get(name);
  if (!v) return std::nullopt;
  std::uint64_t n = 0;
  bool ok = !v->empty() && v->size() <= 19;
  for (char c : *v) {
    if (c < '0' || c > '9') {
      ok = false;
      break;
    }
    n = n * 10 + static_cast<std::uint64_t>(c - '0');
  }
  if (!ok || n < min || n > max) {
    bad_request("query parameter '" + std::string(name) + "' must be an integer in [" +
                std::to_string(min) + ", " + std::to_string(max) + "], got '" + *v + "'");
  }
  return n;
}

std::optional<bool> Query::get_bool(std::string_view name) {
  auto v = get(name);
  if (!v) return std::nullopt;
  if (*v == "true" || *v == "1") return true;
  if (*v == "false" || *v == "0") return false;
  bad_request("query parameter '" + std::string(name) + "' must be true or false, got '" + *v +
              "'");
}

void Query::finish() const {
  for (const auto& [k, v] : values_) {
    if (seen_.count(k) == 0) bad_request("unknown query parameter '" + k + "'");
  }
}

// ---- cursors and hashes -------------------------------------------------------------------------

namespace {
constexpr std::string_view kB64 =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
}

std::string encode_cursor(std::string_view key) {
  std::string out;
  std::uint32_t acc = 0;
  int bits = 0;
  for (unsigned char c : key) {
    acc = (acc << 8) | c;
    bits += 8;
    while (bits >= 6) {
      bits -= 6;
      out.push_back(kB64[(acc >> bits) & 0x3F]);
    }
  }
  if (bits > 0) out.push_back(kB64[(acc << (6 - bits)) & 0x3F]);
  return out;
}

std::string decode_cursor(std::string_view cursor) {
  if (cursor.empty() || cursor.size() > 1024) bad_request("malformed cursor");
  std::string out;
  std::uint32_t acc = 0;
  int bits = 0;
  for (char c : cursor) {
    auto pos = kB64.find(c);
    if (pos == std::string_view::npos) bad_request("malformed cursor");
    acc = (acc << 6) | static_cast<std::uint32_t>(pos);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((acc >> bits) & 0xFF));
    }
  }
  if (out.empty()) bad_request("malformed cursor");
  return out;
}

std::string padded(std::uint64_t n) {
  std::string s = std::to_string(n);
  return std::string(20 - s.size(), '0') + s;
}

std::string sha256_hex(std::string_view data) {
  std::array<unsigned char, EVP_MAX_MD_SIZE> md{};
  unsigned int len = 0;
  if (EVP_Digest(data.data(), data.size(), md.data(), &len, EVP_sha256(), nullptr) != 1) {
    throw Internal("sha256 failed");
  }
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(std::size_t{len} * 2);
  for (unsigned int i = 0; i < len; ++i) {
    out.push_back(kHex[md[i] >> 4]);
    out.push_back(kHex[md[i] & 0xF]);
  }
  return out;
}

std::string etag_of(std::string_view representation) {
  return "\"" + sha256_hex(representation).substr(0, 16) + "\"";
}

bool if_match_ok(std::string_view header, const std::optional<std::string>& current) {
  if (!current) return false;
  std::size_t pos = 0;
  while (pos < header.size()) {
    auto comma = header.find(',', pos);
    auto item = header.substr(pos, comma == std::string_view::npos ? header.npos : comma - pos);
    while (!item.empty() && item.front() == ' ') item.remove_prefix(1);
    while (!item.empty() && item.back() == ' ') item.remove_suffix(1);
    if (item == "*" || item == *current) return true;
    if (comma == std::string_view::npos) break;
    pos = comma + 1;
  }
  return false;
}

json::value time_json(SysTime t) {
  if (t == SysTime{}) return nullptr;
  return json::value(format_rfc3339(t));
}

json::value opt_time_json(const std::optional<SysTime>& t) {
  return t ? time_json(*t) : json::value(nullptr);
}

}  // namespace qkdn::northbound
