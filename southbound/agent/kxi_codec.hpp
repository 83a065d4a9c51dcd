// Internal: the Kxi' key transfer message of draft ITU-T Q.QKDNi_KM (clauses 8.1, 8.2) as the
// HTTPS `ext_keys` method of ETSI GS QKD 020 (Appendix I): pure functions of the request's path
// and body, no I/O, so that each can be unit-tested and fuzzed alone. The HTTP side is
// kxi_server.cpp / kxi_client.cpp; the wire format is docs/kxi.md.
//
//   POST /api/v1/keys/{initiator_SAE_ID}/{target_SAE_ID}/ext_keys
//   body (ext_key_container): {"keys":[{"key_id":<UUID>,"value":<base64>,"extension":{..}}],
//                              "extension_optional":[{..}]}
//   answer (message_data):    {"message":<text>,"details":[{..}]}
//
// Key bytes are decoded into key memory (secure::Bytes); the JSON tree that holds their base64
// text while parsing lives in a key-memory buffer wiped when the parse ends.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "qkdn/agent/secure_memory.hpp"

namespace qkdn::agent::kxi {

/// Keys in one transfer at most (one relay's worth: limits::kMaxKeysPerRelay).
inline constexpr std::size_t kMaxKeys = 1024;
/// A request body at most (1,024 keys of 8,192 bits in base64 plus their IDs fit).
inline constexpr std::size_t kMaxBodyBytes = std::size_t{2} << 20;
/// A key's `extension` object and the whole `extension_optional` array, serialized, at most.
inline constexpr std::size_t kMaxExtensionBytes = 4096;
/// Items of `extension_optional` at most.
inline constexpr std::size_t kMaxExtensionItems = 16;
/// An answer body at most (the sender reads no more).
inline constexpr std::size_t kMaxResponseBytes = std::size_t{16} * 1024;

/// What the receiving KM accepts (key sizes in bits, a multiple of 8).
struct Limits {
  std::int64_t min_key_bits = 64;
  std::int64_t max_key_bits = 8192;
  std::size_t max_keys = kMaxKeys;
};

/// One key of the transfer (Q.QKDNi_KM Table 1 "Key", "Key ID", "Key extension").
struct Key {
  std::string key_id;                    ///< canonical lower-case UUID text
  secure::Bytes value;                   ///< the key bytes (base64 on the wire)
  std::optional<std::string> extension;  ///< the serialized JSON object, when given
};

/// The key transfer message (Q.QKDNi_KM 8.1, Table I.1).
struct TransferRequest {
  std::string initiator_sae;  ///< Application source ID: {initiator_SAE_ID} of the URL
  std::string target_sae;     ///< Application destination ID: {target_SAE_ID} of the URL
  std::vector<Key> keys;      ///< at least one; all of one size
  /// [project] `extension_optional` item {"transfer_id": <UUID>}: the sender's transfer ID,
  /// which both KMs report to their controllers.
  std::optional<std::string> transfer_id;
  /// The other `extension_optional` items, serialized (kept for logs of their names only).
  std::vector<std::string> other_extensions;
};

/// An answer of the receiving KM: HTTP status and message_data (Q.QKDNi_KM 8.2, Table I.2).
struct Answer {
  int status = 200;
  std::string message;  ///< "Response": "OK" on success, else what went wrong
  std::vector<std::pair<std::string, std::string>> details;  ///< "Extension": {name: text} items
};

/// True for 1..128 characters of [A-Za-z0-9._:-] (ck-protocol.md clause 3 IDs: SAE and KM IDs).
bool valid_id(std::string_view id) noexcept;
/// True for a canonical UUID text (8-4-4-4-12 hex digits, lower case).
bool valid_uuid(std::string_view id) noexcept;

/// The access URL path of a transfer.
std::string path(std::string_view initiator_sae, std::string_view target_sae);
/// Matches the path of a transfer: (initiator, target), or a 404/400 Answer.
std::variant<std::pair<std::string, std::string>, Answer> match(std::string_view path);

/// The JSON body (ext_key_container) of a request. Holds key material: the caller wipes it
/// (the returned string is reserved up front so that no reallocation leaves a copy).
std::string encode_request(const TransferRequest& request);
/// Reads a body strictly: an object with exactly `keys` (1..limits.max_keys objects, each with
/// exactly key_id, value and optionally extension) and optionally extension_optional (an array
/// of at most kMaxExtensionItems objects); every key_id a UUID and no key_id twice; every value
/// canonical base64 of one size for all keys, a multiple of 8 bits inside the limits. Anything
/// else is a 400 Answer naming the first problem (413 for too many keys). Never throws except
/// std::bad_alloc.
std::variant<TransferRequest, Answer> parse_request(std::string initiator_sae,
                                                    std::string target_sae, std::string_view body,
                                                    const Limits& limits);

/// The JSON body (message_data) of an answer.
std::string encode_answer(const Answer& answer);
/// Reads an answer body strictly: an object with a string `message` and optionally `details`
/// (an array of objects whose values are strings). nullopt with `why` set otherwise.
std::optional<Answer> parse_answer(int status, std::string_view body, std::string& why);

}  // namespace qkdn::agent::kxi
