// The one strict JSON reader of the project, for every parser of outside input (REST bodies,
// topology documents, agent-to-agent messages): parsing with size and depth limits, and an
// ObjectReader whose accessors name the field in every refusal and whose finish() refuses fields
// nobody read. A missing mandatory field is an error, never "" or 0.
//
// Refusals go through a Reject function (default: throw qkdn::InvalidArgument(message)), so each
// caller keeps its own error kind (a 400 problem, a Ck error, an NG answer) with the same words.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include <boost/json/object.hpp>
#include <boost/json/storage_ptr.hpp>
#include <boost/json/value.hpp>

namespace qkdn::json {

/// Called with the complete message of a refusal; must not return (throw).
using Reject = void (*)(std::string message);

/// Throws qkdn::InvalidArgument(message).
[[noreturn]] void throw_invalid_argument(std::string message);

/// Limits of parse(): the text's size and the nesting depth.
struct ParseLimits {
  std::size_t max_bytes = std::size_t{4} << 20;
  std::size_t max_depth = 32;
};

/// Parses `text` as one JSON value (RFC 8259: no comments, no trailing commas, no duplicate
/// handling beyond Boost.JSON's last-wins). Refuses with "malformed JSON: ..." or "JSON larger
/// than N bytes" / "JSON nested deeper than N".
boost::json::value parse(std::string_view text, const ParseLimits& limits = {},
                         Reject reject = throw_invalid_argument);
/// parse() with the value's memory from `sp` (e.g. a boost::json::monotonic_resource on the
/// caller's stack, so that a hot path such as the Ck codec costs no heap allocation for the DOM).
/// The resource must outlive the value.
boost::json::value parse(std::string_view text, boost::json::storage_ptr sp,
                         const ParseLimits& limits = {}, Reject reject = throw_invalid_argument);
/// parse() of a JSON object; refuses any other top-level value with "<what> must be a JSON
/// object".
boost::json::object parse_object(std::string_view text, std::string_view what,
                                 const ParseLimits& limits = {},
                                 Reject reject = throw_invalid_argument);

/// Reads the fields of one JSON object strictly. Each accessor marks its field as read; finish()
/// refuses the first field nobody read ("unknown field 'x'"). Messages name fields with `path`
/// ("kms[3].km_id"). The object must outlive the reader.
class ObjectReader {
 public:
  explicit ObjectReader(const boost::json::object& o, std::string path = {},
                        Reject reject = throw_invalid_argument)
      : o_(&o), path_(std::move(path)), reject_(reject) {}

  /// True when `key` is present (marks it read).
  [[nodiscard]] bool has(std::string_view key);
  std::optional<std::string> opt_string(std::string_view key);
  /// A mandatory string ("field 'x' is required").
  std::string string(std::string_view key);
  /// A mandatory string of 1..max_size bytes.
  std::string string(std::string_view key, std::size_t max_size);
  std::optional<double> opt_number(std::string_view key);
  std::optional<std::uint64_t> opt_uint(std::string_view key);
  std::optional<std::int64_t> opt_int(std::string_view key);
  /// A mandatory integer in [min, max].
  std::int64_t integer(std::string_view key, std::int64_t min, std::int64_t max);
  std::optional<bool> opt_bool(std::string_view key);
  /// A mandatory boolean.
  bool boolean(std::string_view key);
  /// Present with null -> `null_seen` true and nullopt.
  std::optional<double> opt_number_or_null(std::string_view key, bool& null_seen);
  std::optional<std::uint64_t> opt_uint_or_null(std::string_view key, bool& null_seen);
  std::optional<std::vector<std::string>> opt_string_array(std::string_view key);
  /// A mandatory array of at most `max_items` strings.
  std::vector<std::string> string_array(std::string_view key, std::size_t max_items);
  const boost::json::object* opt_object(std::string_view key);
  const boost::json::array* opt_array(std::string_view key);
  /// Refuses the first field nobody read.
  void finish() const;
  /// "path.key" (or "key" at the top).
  [[nodiscard]] std::string field(std::string_view key) const;
  /// Refuses with `message` through this reader's Reject.
  [[noreturn]] void fail(std::string message) const;

 private:
  const boost::json::value* get(std::string_view key);
  const boost::json::object* o_;
  std::string path_;
  Reject reject_;
  std::set<std::string, std::less<>> seen_;
};

}  // namespace qkdn::json
