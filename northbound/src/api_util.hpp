// Building blocks of the northbound API: problems (RFC 9457), strict JSON body reading, query
// parameters, cursors, hashes. Private to qkdn_northbound.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <boost/json.hpp>

#include "http_types.hpp"
#include "qkdn/controller/clock.hpp"
#include "qkdn/json/reader.hpp"

namespace qkdn::northbound {

namespace json = boost::json;

/// A request that ends in an HTTP problem (4xx/5xx). Thrown by handlers and the pipeline; the
/// dispatcher renders it as application/problem+json.
class ApiError : public std::exception {
 public:
  /// `kind` is the problem type's last segment ("invalid-body", "not-found"...).
  ApiError(int status, std::string kind, std::string detail)
      : status_(status), kind_(std::move(kind)), detail_(std::move(detail)) {}
  [[nodiscard]] const char* what() const noexcept override { return detail_.c_str(); }
  [[nodiscard]] int status() const noexcept { return status_; }
  [[nodiscard]] const std::string& kind() const noexcept { return kind_; }
  [[nodiscard]] const std::string& detail() const noexcept { return detail_; }
  /// Extra response headers (e.g. WWW-Authenticate, Allow).
  ApiError& with_header(std::string name, std::string value) {
    headers_.emplace_back(std::move(name), std::move(value));
    return *this;
  }
  [[nodiscard]] const std::vector<std::pair<std::string, std::string>>& headers() const noexcept {
    return headers_;
  }

 private:
  int status_;
  std::string kind_;
  std::string detail_;
  std::vector<std::pair<std::string, std::string>> headers_;
};

/// 400 with kind "invalid-request" (bad parameters) or "invalid-body".
[[noreturn]] void bad_request(std::string detail);
[[noreturn]] void bad_body(std::string detail);

/// The problem document of RFC 9457: type "urn:qkdn:problem:<kind>", title, status, detail,
/// instance.
HttpResponse problem_response(int status, std::string_view kind, std::string_view detail,
                              std::string_view instance);

/// A 200 (or `status`) JSON response.
HttpResponse json_response(const json::value& v, int status = 200);

/// Parses a request body as a JSON object (400 for malformed JSON, wrong top-level type, or a
/// wrong Content-Type: 415).
json::object parse_body_object(const HttpRequest& req);

/// The shared strict reader (qkdn/json/reader.hpp) with refusals as 400 "invalid-body" problems,
/// plus the API's own field kinds.
class ObjectReader : public qkdn::json::ObjectReader {
 public:
  explicit ObjectReader(const json::object& o, std::string path = {})
      : qkdn::json::ObjectReader(o, std::move(path), bad_body) {}
  /// A valid identifier (ck-protocol.md clause 3).
  std::string id(std::string_view key);
  /// RFC 3339 time.
  std::optional<SysTime> opt_time(std::string_view key);
};

/// Decoded query parameters with strict access (400 for repeated or unknown parameters).
class Query {
 public:
  /// Parses the query part of a target; duplicate names are a 400.
  static Query parse(std::string_view encoded_query);
  std::optional<std::string> get(std::string_view name);
  std::string required(std::string_view name);
  std::optional<std::uint64_t> get_uint(std::string_view name, std::uint64_t min,
                                        std::uint64_t max);
  std::optional<bool> get_bool(std::string_view name);
  /// Throws 400 for any parameter not read.
  void finish() const;

 private:
  std::map<std::string, std::string, std::less<>> values_;
  std::set<std::string, std::less<>> seen_;
};

/// Opaque pagination cursor: base64url of a key. decode throws 400 for a malformed cursor.
std::string encode_cursor(std::string_view key);
std::string decode_cursor(std::string_view cursor);
/// 20-digit zero-padded decimal (sorts like the number).
std::string padded(std::uint64_t n);

/// Lower-case hex SHA-256.
std::string sha256_hex(std::string_view data);
/// A strong ETag ("\"<16 hex>\"") of a representation.
std::string etag_of(std::string_view representation);
/// True when an If-Match header value admits the current ETag (nullopt = no such resource).
bool if_match_ok(std::string_view header, const std::optional<std::string>& current);

/// RFC 3339 time or null.
json::value time_json(SysTime t);
json::value opt_time_json(const std::optional<SysTime>& t);

}  // namespace qkdn::northbound
