// The generic half of the Ck payload codec (private to southbound): error paths, value rules,
// a typed JSON reader and a compact writer, and the field descriptors from which reading,
// checking and writing a message are derived. The per-message descriptor table is in
// ck_messages.cpp; the value predicates, the writer and the extension parser are in ck_values.cpp.
//
// A message type M is described by `Spec<M>::fields`, a tuple of entries, in wire order:
//   Field{"name", &M::member, Rule{}}  one JSON member; its JSON type and whether it is mandatory
//                                      follow from the member's C++ type (std::optional = optional)
//   ExtensionField{&M::extension}      the `extension` array of objects, kept as text
//   Check<M>{fn}                       a cross-field rule, run where it stands in the check order
//   a custom entry                     any type with read/check/emit/describe (0x4104 hop_keys)
// Decoding runs every entry's read (type errors, missing fields), then every entry's check (value
// rules), so that type errors win over value errors and value errors come in table order, and
// encoding runs the same checks before writing: what we send and what we accept cannot drift.
#pragma once

#include <array>
#include <boost/json.hpp>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <vector>

#include "qkdn/json/reader.hpp"
#include "qkdn/southbound/ck_frame.hpp"
#include "qkdn/southbound/ck_messages.hpp"

namespace qkdn::southbound::ck::detail {

namespace json = boost::json;

// ---- error paths -------------------------------------------------------------------------------

/// Names the offending field ("links[2].qber") without building strings on the success path.
struct Where {
  std::string_view outer;           ///< enclosing list field, or empty
  std::ptrdiff_t outer_index = -1;  ///< element of `outer`
  std::string_view field;
  std::ptrdiff_t index = -1;  ///< element of `field`, or -1

  [[nodiscard]] Where at(std::ptrdiff_t i) const { return Where{outer, outer_index, field, i}; }
  [[nodiscard]] std::string str() const;
};

/// A top-level field.
constexpr Where kw(std::string_view field) { return Where{{}, -1, field, -1}; }

/// Throws InvalidArgument "<path>: <what>"; decode_payload turns it into a bad_request value.
[[noreturn]] void reject(const Where& w, std::string_view what);

// ---- value predicates (ck_values.cpp) ----------------------------------------------------------

bool id_ok(std::string_view s) noexcept;
bool uuid_ok(std::string_view s) noexcept;
bool utf8_ok(std::string_view s) noexcept;
bool rfc3339_ok(std::string_view s) noexcept;
bool endpoint_ok(std::string_view s) noexcept;
bool one_of(std::string_view s, std::span<const std::string_view> set) noexcept;
/// "OK" or "NG: " followed by a non-empty reason.
inline bool response_string_ok(std::string_view s) noexcept {
  return s == "OK" || (s.size() > 4 && s.substr(0, 4) == "NG: ");
}

/// The error codes of clause 3.
inline constexpr std::array<std::string_view, 14> kErrorCodes = {errc::kBadRequest,
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
                                                                 errc::kInternal,
                                                                 errc::kBusy};

// ---- value rules -------------------------------------------------------------------------------
//
// A rule checks one value of a field (each element, for a list of strings) and rejects it naming
// the field. The JSON type was already checked by the read.

/// No rule beyond the JSON type.
struct Any {};
/// Clause 3 identifier: 1..128 of [A-Za-z0-9._:-].
struct Id {
  void operator()(const Where& w, const std::string& v) const {
    if (!id_ok(v)) reject(w, "invalid identifier (1..128 of [A-Za-z0-9._:-])");
  }
};
/// 8-4-4-4-12 hex digits.
struct Uuid {
  void operator()(const Where& w, const std::string& v) const {
    if (!uuid_ok(v)) reject(w, "invalid UUID");
  }
};
/// Free text: valid UTF-8 (always true after a JSON parse; matters on encode).
struct Text {
  void operator()(const Where& w, const std::string& v) const {
    if (!utf8_ok(v)) reject(w, "invalid UTF-8");
  }
};
/// String response: "OK" or "NG: <reason>", valid UTF-8.
struct ResponseText {
  void operator()(const Where& w, const std::string& v) const {
    if (!response_string_ok(v)) reject(w, "expected \"OK\" or \"NG: <reason>\"");
    Text{}(w, v);
  }
};
/// RFC 3339 date-time of at most 64 characters.
struct Timestamp {
  void operator()(const Where& w, const std::string& v) const {
    if (!rfc3339_ok(v)) reject(w, "invalid RFC 3339 timestamp");
  }
};
/// host:port.
struct Endpoint {
  void operator()(const Where& w, const std::string& v) const {
    if (!endpoint_ok(v)) reject(w, "expected host:port with port 1..65535");
  }
};
/// One of a fixed set of strings; `error` says which.
struct OneOf {
  std::span<const std::string_view> set;
  std::string_view error;
  void operator()(const Where& w, const std::string& v) const {
    if (!one_of(v, set)) reject(w, error);
  }
};
/// Integer response: 0 (OK) or 1 (NG).
struct IntResponse {
  void operator()(const Where& w, std::int64_t v) const {
    if (v != 0 && v != 1) reject(w, "expected 0 (OK) or 1 (NG)");
  }
};
/// Integer in [lo, hi].
struct Range {
  std::int64_t lo;
  std::int64_t hi;
  void operator()(const Where& w, std::int64_t v) const {
    if (v < lo || v > hi) {
      reject(w, "out of range [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
    }
  }
};
/// Finite number >= 0.
struct NonNegative {
  void operator()(const Where& w, double v) const {
    if (!std::isfinite(v) || v < 0) reject(w, "must be a finite number >= 0");
  }
};
/// Number in [0, 1] (qber).
struct Fraction {
  void operator()(const Where& w, double v) const {
    if (!(v >= 0 && v <= 1)) reject(w, "must be in [0, 1]");
  }
};
/// Finite number.
struct Finite {
  void operator()(const Where& w, double v) const {
    if (!std::isfinite(v)) reject(w, "must be finite");
  }
};
/// A list that must not be empty, each element checked by `each`.
template <class R>
struct NonEmpty {
  R each;
};

inline constexpr Range kCount{1, kMaxNumberOfKeys};
inline constexpr Range kKeySize{1, kMaxKeySizeBits};
inline constexpr Range kInterval{1, kMaxIntervalMs};
inline constexpr Range kNonNegativeInt{0, std::numeric_limits<std::int64_t>::max()};
inline constexpr Range kEpoch = kNonNegativeInt;

// ---- JSON reading ------------------------------------------------------------------------------

/// Limits of every JSON text of Ck (payloads and extensions), read by the shared strict reader.
inline constexpr qkdn::json::ParseLimits kCkJsonLimits{kMaxPayload, kMaxJsonDepth};

/// Parses an `extension` text: it must be an array of objects. Allocates from `sp`.
json::array parse_extension(const std::string& text, json::storage_ptr sp);

/// Typed, path-tracking reads from one JSON object (the payload, or an element of a list field).
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
  static std::uint32_t as_u32(const Where& w, const json::value& v) {
    const std::int64_t i = as_integer(w, v);
    if (i < 0 || i > std::numeric_limits<std::uint32_t>::max()) {
      reject(w, "out of range [0, 4294967295]");
    }
    return static_cast<std::uint32_t>(i);
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

  const json::array* opt_array(std::string_view key) const {
    const json::value* v = find(key);
    if (v == nullptr) return nullptr;
    return &as_array(where(key), *v);
  }
  /// Every element of the `extension` array `a` is an object.
  void check_objects(const json::array& a) const;
  /// `extension`: an array of objects, kept as compact JSON text.
  Extension extension() const;

 private:
  const json::object& o_;
  std::string_view outer_;
  std::ptrdiff_t outer_index_;
};

// ---- JSON writing ------------------------------------------------------------------------------

void append_quoted(std::string& out, std::string_view s);
void append_number(std::string& out, std::int64_t v);
void append_number(std::string& out, std::uint32_t v);
void append_number(std::string& out, double v);

/// Writes one compact JSON object: '{' on construction, '}' on destruction.
class ObjectWriter {
 public:
  explicit ObjectWriter(std::string& out) : out_(out) { out_ += '{'; }
  ObjectWriter(const ObjectWriter&) = delete;
  ObjectWriter& operator=(const ObjectWriter&) = delete;
  ~ObjectWriter() { out_ += '}'; }

  /// Writes `"k":` (after a comma unless first) and returns the buffer for the value.
  std::string& key(std::string_view k) {
    if (!first_) out_ += ',';
    first_ = false;
    out_ += '"';
    out_.append(k);
    out_ += "\":";
    return out_;
  }
  void str(std::string_view k, std::string_view v) { append_quoted(key(k), v); }
  void strs(std::string_view k, const std::vector<std::string>& v) {
    std::string& o = key(k);
    o += '[';
    for (std::size_t i = 0; i < v.size(); ++i) {
      if (i != 0) o += ',';
      append_quoted(o, v[i]);
    }
    o += ']';
  }
  /// `extension`, re-serialized compactly (the text was checked by validate()).
  void extension(const Extension& e);

 private:
  std::string& out_;
  bool first_ = true;
};

// ---- descriptors -------------------------------------------------------------------------------

/// The descriptor table of a message or list element type: `static constexpr auto fields`.
template <class M>
struct Spec;

/// Where the fields of an object sit: top level, or element `index` of the list field `outer`.
/// Error paths have one level of nesting, so a list element cannot hold a list of objects.
struct Scope {
  std::string_view outer;
  std::ptrdiff_t index = -1;
};

template <class T>
inline constexpr bool kIsOptional = false;
template <class T>
inline constexpr bool kIsOptional<std::optional<T>> = true;

template <class T>
struct Unwrap {
  using type = T;
};
template <class T>
struct Unwrap<std::optional<T>> {
  using type = T;
};

/// A list of objects: a vector of a type with its own Spec (anything but strings).
template <class T>
inline constexpr bool kIsObjectList = false;
template <class E>
inline constexpr bool kIsObjectList<std::vector<E>> = !std::is_same_v<E, std::string>;

template <class M>
void read_fields(const Reader& r, M& m);
template <class M>
void check_fields(const Scope& s, const M& m);
template <class M>
void emit_fields(std::string& out, const M& m);

/// The JSON type of a value of C++ type T (T without std::optional).
template <class T>
constexpr FieldType field_type() {
  if constexpr (std::is_same_v<T, std::string>) {
    return FieldType::kString;
  } else if constexpr (std::is_same_v<T, std::int64_t> || std::is_same_v<T, std::uint32_t>) {
    return FieldType::kInteger;
  } else if constexpr (std::is_same_v<T, double>) {
    return FieldType::kNumber;
  } else if constexpr (std::is_same_v<T, std::vector<std::string>>) {
    return FieldType::kStringArray;
  } else {
    static_assert(kIsObjectList<T>, "no JSON mapping for this member type");
    return FieldType::kObjectArray;
  }
}

/// Reads a present value of type T.
template <class T>
T read_value(const Where& w, const json::value& v) {
  if constexpr (std::is_same_v<T, std::string>) {
    return Reader::as_string(w, v);
  } else if constexpr (std::is_same_v<T, std::int64_t>) {
    return Reader::as_integer(w, v);
  } else if constexpr (std::is_same_v<T, std::uint32_t>) {
    return Reader::as_u32(w, v);
  } else if constexpr (std::is_same_v<T, double>) {
    return Reader::as_number(w, v);
  } else if constexpr (std::is_same_v<T, std::vector<std::string>>) {
    return Reader::as_strings(w, v);
  } else {
    const json::array& a = Reader::as_array(w, v);
    T out;
    out.reserve(a.size());
    for (std::size_t i = 0; i < a.size(); ++i) {
      const auto idx = static_cast<std::ptrdiff_t>(i);
      const Reader element(Reader::as_object(w.at(idx), a[i]), w.field, idx);
      read_fields(element, out.emplace_back());
    }
    return out;
  }
}

/// Applies rule `r` to a value (each element of a list of strings; the element fields of a list
/// of objects).
template <class T, class R>
void check_value(const Where& w, const T& v, const R& r) {
  if constexpr (kIsOptional<T>) {
    if (v) check_value(w, *v, r);
  } else if constexpr (kIsObjectList<T>) {
    static_assert(std::is_same_v<R, Any>, "list elements have their own Spec");
    for (std::size_t i = 0; i < v.size(); ++i) {
      check_fields(Scope{w.field, static_cast<std::ptrdiff_t>(i)}, v[i]);
    }
  } else if constexpr (std::is_same_v<T, std::vector<std::string>>) {
    if constexpr (requires { r.each; }) {
      if (v.empty()) reject(w, "must not be empty");
      check_value(w, v, r.each);
    } else if constexpr (!std::is_same_v<R, Any>) {
      for (std::size_t i = 0; i < v.size(); ++i) r(w.at(static_cast<std::ptrdiff_t>(i)), v[i]);
    }
  } else if constexpr (!std::is_same_v<R, Any>) {
    r(w, v);
  }
}

/// Writes a member (nothing for an absent optional).
template <class T>
void emit_value(ObjectWriter& w, std::string_view name, const T& v) {
  if constexpr (kIsOptional<T>) {
    if (v) emit_value(w, name, *v);
  } else if constexpr (std::is_same_v<T, std::string>) {
    w.str(name, v);
  } else if constexpr (std::is_same_v<T, std::vector<std::string>>) {
    w.strs(name, v);
  } else if constexpr (kIsObjectList<T>) {
    std::string& o = w.key(name);
    o += '[';
    for (std::size_t i = 0; i < v.size(); ++i) {
      if (i != 0) o += ',';
      emit_fields(o, v[i]);
    }
    o += ']';
  } else {
    append_number(w.key(name), v);
  }
}

/// One JSON member `name` held in `member`, with value rule `rule`.
template <class M, class T, class R = Any>
struct Field {
  std::string_view name;
  T M::*member;
  R rule{};

  constexpr Field(std::string_view n, T M::*m, R r = {}) : name(n), member(m), rule(r) {}

  void read(const Reader& r, M& m) const {
    if constexpr (kIsOptional<T>) {
      if (const json::value* v = r.find(name)) {
        m.*member = read_value<typename T::value_type>(r.where(name), *v);
      }
    } else {
      m.*member = read_value<T>(r.where(name), r.need(name));
    }
  }
  void check(const Scope& s, const M& m) const {
    check_value(Where{s.outer, s.index, name, -1}, m.*member, rule);
  }
  void emit(ObjectWriter& w, const M& m) const { emit_value(w, name, m.*member); }
  void describe(std::vector<FieldInfo>& out) const {
    out.push_back(FieldInfo{name, field_type<typename Unwrap<T>::type>(), !kIsOptional<T>});
  }
};

/// The `extension` member of Tables 1-13.
template <class M>
struct ExtensionField {
  Extension M::*member;

  void read(const Reader& r, M& m) const { m.*member = r.extension(); }
  void check(const Scope&, const M& m) const;
  void emit(ObjectWriter& w, const M& m) const { w.extension(m.*member); }
  void describe(std::vector<FieldInfo>& out) const {
    out.push_back(FieldInfo{"extension", FieldType::kExtension, false});
  }
};

template <class M>
ExtensionField(Extension M::*) -> ExtensionField<M>;

/// Validates an `extension` text (an array of objects).
void check_extension(const Extension& e);

template <class M>
void ExtensionField<M>::check(const Scope&, const M& m) const {
  check_extension(m.*member);
}

/// A rule over several fields of M, run at its place in the check order.
template <class M>
struct Check {
  void (*rule)(const M&);

  void read(const Reader&, M&) const {}
  void check(const Scope&, const M& m) const { rule(m); }
  void emit(ObjectWriter&, const M&) const {}
  void describe(std::vector<FieldInfo>&) const {}
};

template <class M>
Check(void (*)(const M&)) -> Check<M>;

// ---- generic message operations ----------------------------------------------------------------

template <class M>
void read_fields(const Reader& r, M& m) {
  std::apply([&](const auto&... f) { (f.read(r, m), ...); }, Spec<M>::fields);
}

template <class M>
void check_fields(const Scope& s, const M& m) {
  std::apply([&](const auto&... f) { (f.check(s, m), ...); }, Spec<M>::fields);
}

template <class M>
void emit_fields(std::string& out, const M& m) {
  ObjectWriter w(out);
  std::apply([&](const auto&... f) { (f.emit(w, m), ...); }, Spec<M>::fields);
}

template <class M>
std::vector<FieldInfo> describe_fields() {
  std::vector<FieldInfo> out;
  std::apply([&](const auto&... f) { (f.describe(out), ...); }, Spec<M>::fields);
  return out;
}

}  // namespace qkdn::southbound::ck::detail
