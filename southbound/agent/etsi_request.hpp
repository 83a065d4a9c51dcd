// Internal: parsing and validation of ETSI GS QKD 014 v1.1.1 requests, as pure functions of their
// text (path, query string, JSON body) and the KME's limits: no I/O, no Asio, so that each can be
// unit-tested and fuzzed alone. The HTTP side is etsi_server.cpp.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "sae_keys.hpp"

namespace qkdn::agent::etsi {

/// Longest SAE ID or key ID accepted.
inline constexpr std::size_t kMaxIdLength = 256;

/// An ETSI Error object to answer with: {"message": ..., "details": [{name: text}, ...]}.
struct Error {
  int status = 400;
  std::string message;
  std::vector<std::pair<std::string, std::string>> details;
};

/// The JSON text of an Error object.
std::string error_json(const Error& e);

/// Percent-decoding ('+' is a space in queries only); nullopt on a malformed escape.
std::optional<std::string> percent_decode(std::string_view in, bool query);

/// Query parameters by name, each with every value given (in order).
using Query = std::map<std::string, std::vector<std::string>>;
/// Parses "a=1&b=2" (percent-encoded); nullopt on a malformed escape.
std::optional<Query> parse_query(std::string_view query);

/// The three resources of ETSI GS QKD 014 (clause 5).
enum class Op { kStatus, kEncKeys, kDecKeys };

/// A matched path: the operation and the SAE ID it names (the slave SAE for status and
/// enc_keys, the master SAE for dec_keys).
struct Route {
  Op op = Op::kStatus;
  std::string sae;
  /// enc_keys_wrapped / dec_keys_wrapped (this project's extension, docs/hybrid.md): the same
  /// request, the keys answered wrapped to the caller's certificate (key_wrap.hpp).
  bool wrapped = false;
};
/// Matches /api/v1/keys/{SAE_ID}/status|enc_keys|dec_keys|enc_keys_wrapped|dec_keys_wrapped; a
/// 404 Error otherwise.
std::variant<Route, Error> match(std::string_view path);

/// A validated Get key request (number and size in bits).
struct KeyRequest {
  std::int64_t number = 1;
  std::int64_t size = 0;
};
/// enc_keys by GET: query `number` and `size` (each at most once; others are 400).
std::variant<KeyRequest, Error> enc_request_from_query(const Query& query, const SaeLimits& limits);
/// enc_keys by POST: a Key request JSON object (an empty body is {}).
std::variant<KeyRequest, Error> enc_request_from_body(std::string_view body,
                                                      const SaeLimits& limits);
/// dec_keys by GET: query `key_ID` (may repeat).
std::variant<std::vector<std::string>, Error> dec_request_from_query(const Query& query,
                                                                     const SaeLimits& limits);
/// dec_keys by POST: a Key IDs JSON object {"key_IDs":[{"key_ID":..}, ...]}.
std::variant<std::vector<std::string>, Error> dec_request_from_body(std::string_view body,
                                                                    const SaeLimits& limits);

}  // namespace qkdn::agent::etsi
