#include "qkdn/json/reader.hpp"

#include <cmath>
#include <limits>

#include <boost/json/parse.hpp>

#include "qkdn/base/error.hpp"

namespace qkdn::json {
namespace bj = boost::json;

// The Reject signature takes the message by value (callers build it once and hand it over).
void throw_invalid_argument(std::string message) {  // NOLINT(performance-unnecessary-value-param)
  throw InvalidArgument(message);
}

namespace {
[[noreturn]] void refuse(Reject reject, std::string message) {
  reject(std::move(message));
  // A Reject must throw; if one returns, this is a broken invariant of the caller.
  throw Internal("json reject function returned");
}
}  // namespace

bj::value parse(std::string_view text, const ParseLimits& limits, Reject reject) {
  if (text.size() > limits.max_bytes) {
    refuse(reject, "JSON larger than " + std::to_string(limits.max_bytes) + " bytes");
  }
  bj::parse_options options;
  options.max_depth = limits.max_depth;
  boost::system::error_code ec;
  bj::value v = bj::parse(text, ec, {}, options);
  if (ec == bj::error::too_deep) {
    refuse(reject, "JSON nested deeper than " + std::to_string(limits.max_depth));
  }
  if (ec) refuse(reject, "malformed JSON: " + ec.message());
  return v;
}

bj::object parse_object(std::string_view text, std::string_view what, const ParseLimits& limits,
                        Reject reject) {
  bj::value v = parse(text, limits, reject);
  if (!v.is_object()) refuse(reject, std::string(what) + " must be a JSON object");
  return std::move(v.as_object());
}

std::string ObjectReader::field(std::string_view key) const {
  return path_.empty() ? std::string(key) : path_ + "." + std::string(key);
}

void ObjectReader::fail(std::string message) const { refuse(reject_, std::move(message)); }

const bj::value* ObjectReader::get(std::string_view key) {
  seen_.emplace(key);
  return o_->if_contains(key);
}

bool ObjectReader::has(std::string_view key) { return get(key) != nullptr; }

std::optional<std::string> ObjectReader::opt_string(std::string_view key) {
  const auto* v = get(key);
  if (v == nullptr) return std::nullopt;
  if (!v->is_string()) fail("field '" + field(key) + "': expected string");
  return std::string(v->as_string());
}

std::string ObjectReader::string(std::string_view key) {
  auto s = opt_string(key);
  if (!s) fail("field '" + field(key) + "' is required");
  return *s;
}

std::string ObjectReader::string(std::string_view key, std::size_t max_size) {
  auto s = string(key);
  if (s.empty() || s.size() > max_size) {
    fail("field '" + field(key) + "': expected 1 to " + std::to_string(max_size) + " characters");
  }
  return s;
}

std::optional<double> ObjectReader::opt_number(std::string_view key) {
  bool null_seen = false;
  auto v = opt_number_or_null(key, null_seen);
  if (null_seen) fail("field '" + field(key) + "': expected number, got null");
  return v;
}

std::optional<double> ObjectReader::opt_number_or_null(std::string_view key, bool& null_seen) {
  null_seen = false;
  const auto* v = get(key);
  if (v == nullptr) return std::nullopt;
  if (v->is_null()) {
    null_seen = true;
    return std::nullopt;
  }
  double d = 0;
  if (v->is_double()) {
    d = v->as_double();
  } else if (v->is_int64()) {
    d = static_cast<double>(v->as_int64());
  } else if (v->is_uint64()) {
    d = static_cast<double>(v->as_uint64());
  } else {
    fail("field '" + field(key) + "': expected number");
  }
  if (!std::isfinite(d)) fail("field '" + field(key) + "': expected a finite number");
  return d;
}

std::optional<std::uint64_t> ObjectReader::opt_uint(std::string_view key) {
  bool null_seen = false;
  auto v = opt_uint_or_null(key, null_seen);
  if (null_seen) fail("field '" + field(key) + "': expected integer, got null");
  return v;
}

std::optional<std::uint64_t> ObjectReader::opt_uint_or_null(std::string_view key, bool& null_seen) {
  null_seen = false;
  const auto* v = get(key);
  if (v == nullptr) return std::nullopt;
  if (v->is_null()) {
    null_seen = true;
    return std::nullopt;
  }
  if (v->is_uint64()) return v->as_uint64();
  if (v->is_int64() && v->as_int64() >= 0) return static_cast<std::uint64_t>(v->as_int64());
  fail("field '" + field(key) + "': expected a non-negative integer");
}

std::optional<std::int64_t> ObjectReader::opt_int(std::string_view key) {
  const auto* v = get(key);
  if (v == nullptr) return std::nullopt;
  if (v->is_int64()) return v->as_int64();
  if (v->is_uint64() &&
      v->as_uint64() <= static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
    return static_cast<std::int64_t>(v->as_uint64());
  }
  fail("field '" + field(key) + "': expected integer");
}

std::int64_t ObjectReader::integer(std::string_view key, std::int64_t min, std::int64_t max) {
  const auto v = opt_int(key);
  if (!v) fail("field '" + field(key) + "' is required");
  if (*v < min || *v > max) {
    fail("field '" + field(key) + "': " + std::to_string(*v) + " is outside [" +
         std::to_string(min) + ", " + std::to_string(max) + "]");
  }
  return *v;
}

std::optional<bool> ObjectReader::opt_bool(std::string_view key) {
  const auto* v = get(key);
  if (v == nullptr) return std::nullopt;
  if (!v->is_bool()) fail("field '" + field(key) + "': expected true or false");
  return v->as_bool();
}

bool ObjectReader::boolean(std::string_view key) {
  const auto v = opt_bool(key);
  if (!v) fail("field '" + field(key) + "' is required");
  return *v;
}

std::optional<std::vector<std::string>> ObjectReader::opt_string_array(std::string_view key) {
  const auto* v = get(key);
  if (v == nullptr) return std::nullopt;
  if (!v->is_array()) fail("field '" + field(key) + "': expected array of strings");
  std::vector<std::string> out;
  out.reserve(v->as_array().size());
  for (std::size_t i = 0; i < v->as_array().size(); ++i) {
    const auto& e = v->as_array()[i];
    if (!e.is_string())
      fail("field '" + field(key) + "[" + std::to_string(i) + "]': expected string");
    out.emplace_back(e.as_string());
  }
  return out;
}

std::vector<std::string> ObjectReader::string_array(std::string_view key, std::size_t max_items) {
  const auto* v = o_->if_contains(key);
  if (v != nullptr && v->is_array() && v->as_array().size() > max_items) {
    seen_.emplace(key);
    fail("field '" + field(key) + "': more than " + std::to_string(max_items) + " items");
  }
  auto a = opt_string_array(key);
  if (!a) fail("field '" + field(key) + "' is required");
  return std::move(*a);
}

const bj::object* ObjectReader::opt_object(std::string_view key) {
  const auto* v = get(key);
  if (v == nullptr) return nullptr;
  if (!v->is_object()) fail("field '" + field(key) + "': expected object");
  return &v->as_object();
}

const bj::array* ObjectReader::opt_array(std::string_view key) {
  const auto* v = get(key);
  if (v == nullptr) return nullptr;
  if (!v->is_array()) fail("field '" + field(key) + "': expected array");
  return &v->as_array();
}

void ObjectReader::finish() const {
  for (const auto& kv : *o_) {
    if (!seen_.contains(kv.key())) fail("unknown field '" + field(kv.key()) + "'");
  }
}

}  // namespace qkdn::json
