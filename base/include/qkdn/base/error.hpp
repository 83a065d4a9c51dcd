// The one error type of the project (in base/, so every library shares it). Error policy: a
// function that cannot do its job throws a qkdn::Error with a code. Expected outcomes (no route,
// empty pool) are values, not exceptions.
#pragma once

#include <stdexcept>
#include <string>
#include <string_view>

namespace qkdn {

/// Domain error codes. One table (error_http_status / error_ck_code) maps them to the northbound
/// and southbound wire.
enum class ErrorCode {
  kInvalidArgument,  ///< the caller's input is malformed or inconsistent
  kNotFound,         ///< a named entity does not exist
  kConflict,         ///< the request contradicts the current state (duplicate, precondition)
  kUnavailable,      ///< a dependency (store, KM, keys) cannot serve now; retry may succeed
  kInternal,         ///< a broken invariant inside the project
};

/// Base of every exception the project throws on purpose, and the one error value the service
/// hands around (std::optional<Error>: nullopt = done).
class Error : public std::runtime_error {
 public:
  Error(ErrorCode code, const std::string& message) : std::runtime_error(message), code_(code) {}
  /// With the southbound wire code the peer is to get when it is finer than the code's default
  /// (error_ck_code): "unknown_application", "busy", "not_leader", ... Ck builds these through
  /// qkdn::southbound::ck::error(), which derives `code` from the wire code (one table).
  Error(ErrorCode code, const std::string& message, std::string_view wire_code)
      : std::runtime_error(message), code_(code), wire_code_(wire_code) {}
  /// The category of the failure.
  [[nodiscard]] ErrorCode code() const noexcept { return code_; }
  /// The wire code given at construction, or empty.
  [[nodiscard]] std::string_view wire_code() const noexcept { return wire_code_; }

 private:
  ErrorCode code_;
  std::string wire_code_;
};

class InvalidArgument : public Error {
 public:
  explicit InvalidArgument(const std::string& m) : Error(ErrorCode::kInvalidArgument, m) {}
};
class NotFound : public Error {
 public:
  explicit NotFound(const std::string& m) : Error(ErrorCode::kNotFound, m) {}
};
class Conflict : public Error {
 public:
  explicit Conflict(const std::string& m) : Error(ErrorCode::kConflict, m) {}
};
class Unavailable : public Error {
 public:
  explicit Unavailable(const std::string& m) : Error(ErrorCode::kUnavailable, m) {}
};
class Internal : public Error {
 public:
  explicit Internal(const std::string& m) : Error(ErrorCode::kInternal, m) {}
};

/// HTTP status for a code (400, 404, 409, 503, 500).
int error_http_status(ErrorCode code) noexcept;
/// Short machine name of a code ("invalid_argument", "not_found", ...), used in problem types.
std::string_view error_name(ErrorCode code) noexcept;
/// The Ck error code of ck-protocol.md clause 3 that best carries this code: invalid_argument and
/// conflict -> "bad_request", not_found -> "unknown_kma" (callers that know the missing entity is
/// an application or a key send "unknown_application" / "unknown_key" themselves), unavailable and
/// internal -> "internal".
std::string_view error_ck_code(ErrorCode code) noexcept;
/// The Ck error code of an error: its wire code when it has one, else error_ck_code(code()).
std::string_view error_ck_code(const Error& e) noexcept;

}  // namespace qkdn
