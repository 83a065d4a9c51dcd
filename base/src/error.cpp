#include "qkdn/base/error.hpp"

namespace qkdn {

int error_http_status(ErrorCode code) noexcept {
  switch (code) {
    case ErrorCode::kInvalidArgument:
      return 400;
    case ErrorCode::kNotFound:
      return 404;
    case ErrorCode::kConflict:
      return 409;
    case ErrorCode::kUnavailable:
      return 503;
    case ErrorCode::kInternal:
      return 500;
  }
  return 500;
}

std::string_view error_name(ErrorCode code) noexcept {
  switch (code) {
    case ErrorCode::kInvalidArgument:
      return "invalid_argument";
    case ErrorCode::kNotFound:
      return "not_found";
    case ErrorCode::kConflict:
      return "conflict";
    case ErrorCode::kUnavailable:
      return "unavailable";
    case ErrorCode::kInternal:
      return "internal";
  }
  return "internal";
}

std::string_view error_ck_code(ErrorCode code) noexcept {
  // Ck has no generic "not found" or "conflict": the entities a KM names are KMAs (register,
  // relay, reservation), so NotFound defaults to unknown_kma; callers that know better (an unknown
  // SAE or key) send the specific code themselves. A conflicting request is a bad request from
  // the KM's point of view, and "retry later" has no Ck code other than internal.
  switch (code) {
    case ErrorCode::kInvalidArgument:
    case ErrorCode::kConflict:
      return "bad_request";
    case ErrorCode::kNotFound:
      return "unknown_kma";
    case ErrorCode::kUnavailable:
    case ErrorCode::kInternal:
      return "internal";
  }
  return "internal";
}

std::string_view error_ck_code(const Error& e) noexcept {
  return e.wire_code().empty() ? error_ck_code(e.code()) : e.wire_code();
}

}  // namespace qkdn
