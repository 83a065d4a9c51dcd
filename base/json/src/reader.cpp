#include "qkdn/json/reader.hpp"

#include <charconv>
#include <cmath>
#include <limits>

#include <boost/json/basic_parser_impl.hpp>
#include <boost/json/value_stack.hpp>

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

namespace {

// Builds the value boost::json::parse would, except for floating-point numbers: Boost.JSON 1.81
// converts a decimal beyond the exact fast path (more than 2^53 in the mantissa, or a power of ten
// beyond 10^22) with a rounding error, so a number written with the shortest round-trip digits
// could read back as a neighbouring double and a document would not survive write and read. Each
// such number is converted again from its text with std::from_chars (correctly rounded).
class PreciseHandler {
 public:
  static constexpr std::size_t max_object_size = bj::object::max_size();
  static constexpr std::size_t max_array_size = bj::array::max_size();
  static constexpr std::size_t max_key_size = bj::string::max_size();
  static constexpr std::size_t max_string_size = bj::string::max_size();

  // The parser's working stack uses `temp` first (the caller's stack), then the heap.
  PreciseHandler(unsigned char* temp, std::size_t size) : st(bj::storage_ptr(), temp, size) {}

  bj::value_stack st;

  bool on_document_begin(boost::system::error_code& /*ec*/) { return true; }
  bool on_document_end(boost::system::error_code& /*ec*/) { return true; }
  bool on_object_begin(boost::system::error_code& /*ec*/) { return true; }
  bool on_object_end(std::size_t n, boost::system::error_code& /*ec*/) {
    st.push_object(n);
    return true;
  }
  bool on_array_begin(boost::system::error_code& /*ec*/) { return true; }
  bool on_array_end(std::size_t n, boost::system::error_code& /*ec*/) {
    st.push_array(n);
    return true;
  }
  bool on_key_part(bj::string_view s, std::size_t /*n*/, boost::system::error_code& /*ec*/) {
    st.push_chars(s);
    return true;
  }
  bool on_key(bj::string_view s, std::size_t /*n*/, boost::system::error_code& /*ec*/) {
    st.push_key(s);
    return true;
  }
  bool on_string_part(bj::string_view s, std::size_t /*n*/, boost::system::error_code& /*ec*/) {
    st.push_chars(s);
    return true;
  }
  bool on_string(bj::string_view s, std::size_t /*n*/, boost::system::error_code& /*ec*/) {
    st.push_string(s);
    return true;
  }
  bool on_number_part(bj::string_view s, boost::system::error_code& /*ec*/) {
    number_.append(s.data(), s.size());
    return true;
  }
  bool on_int64(std::int64_t i, bj::string_view /*s*/, boost::system::error_code& /*ec*/) {
    number_.clear();
    st.push_int64(i);
    return true;
  }
  bool on_uint64(std::uint64_t u, bj::string_view /*s*/, boost::system::error_code& /*ec*/) {
    number_.clear();
    st.push_uint64(u);
    return true;
  }
  bool on_double(double d, bj::string_view s, boost::system::error_code& /*ec*/) {
    number_.append(s.data(), s.size());
    double exact = 0;
    const char* first = number_.data();
    const char* last = first + number_.size();
    const auto [end, err] = std::from_chars(first, last, exact);
    // Out of range (beyond DBL_MAX or below the smallest subnormal): keep Boost's value (an
    // infinity or zero), which the readers refuse or accept as before.
    st.push_double(err == std::errc{} && end == last ? exact : d);
    number_.clear();
    return true;
  }
  bool on_bool(bool b, boost::system::error_code& /*ec*/) {
    st.push_bool(b);
    return true;
  }
  bool on_null(boost::system::error_code& /*ec*/) {
    st.push_null();
    return true;
  }
  bool on_comment_part(bj::string_view /*s*/, boost::system::error_code& /*ec*/) { return true; }
  bool on_comment(bj::string_view /*s*/, boost::system::error_code& /*ec*/) { return true; }

 private:
  std::string number_;  // the parts of a number split across buffers (and its last part)
};

}  // namespace

bj::value parse(std::string_view text, const ParseLimits& limits, Reject reject) {
  return parse(text, bj::storage_ptr(), limits, reject);
}

bj::value parse(std::string_view text, bj::storage_ptr sp, const ParseLimits& limits,
                Reject reject) {
  if (text.size() > limits.max_bytes) {
    refuse(reject, "JSON larger than " + std::to_string(limits.max_bytes) + " bytes");
  }
  bj::parse_options options;
  options.max_depth = limits.max_depth;
  alignas(std::max_align_t) unsigned char temp[BOOST_JSON_STACK_BUFFER_SIZE];
  bj::basic_parser<PreciseHandler> p(options, temp, sizeof temp);
  p.handler().st.reset(std::move(sp));
  boost::system::error_code ec;
  const std::size_t used = p.write_some(false, text.data(), text.size(), ec);
  if (!ec && used < text.size()) ec = bj::error::extra_data;
  if (ec == bj::error::too_deep) {
    refuse(reject, "JSON nested deeper than " + std::to_string(limits.max_depth));
  }
  if (ec) refuse(reject, "malformed JSON: " + ec.message());
  return p.handler().st.release();
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
