// Internal: the contract between the agent's ETSI GS QKD 014 server (etsi_server.cpp) and the
// hosted KMs that supply keys to SAEs (sae_supply.cpp). The server parses and validates HTTP;
// the KMs decide where keys come from (local, an adjacent link, a relay through the controller).
// Key bytes live only in SaeKey, wiped when freed.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <boost/asio/awaitable.hpp>

#include "qkdn/agent/secure_memory.hpp"

namespace qkdn::agent {

/// One key as ETSI GS QKD 014 hands it out: `key_ID` (UUID text) and the raw key bytes (the
/// server base64-encodes them). The bytes live in key memory (secure_memory.hpp): wiped on every
/// free path, including a move-assignment over an existing key.
struct SaeKey {
  std::string key_id;
  secure::Bytes bytes;

  SaeKey() = default;
  SaeKey(const SaeKey&) = default;
  SaeKey(SaeKey&&) noexcept = default;
  SaeKey& operator=(const SaeKey&) = default;
  SaeKey& operator=(SaeKey&&) noexcept = default;
  ~SaeKey();
};

/// Outcome of a request. `status` is the HTTP status the server sends: 200, 400 (bad request:
/// unknown or foreign key IDs, unknown slave SAE, bad number/size), 401 (the SAE is not served
/// here or is not the SAE the keys were issued to), 503 (no keys now: pools exhausted, no route,
/// controller unreachable, timeout). `message` goes into the ETSI Error object; `details` are
/// extra strings for its "details" array (may be empty).
struct SaeResult {
  int status = 200;
  std::string message;
  std::vector<std::string> details;
  std::vector<SaeKey> keys;        ///< status 200 only
  std::int64_t retry_after_s = 0;  ///< > 0 with a 503 of a per-SAE limit: the Retry-After header
};

/// ETSI 014 Status object fields the server cannot know by itself.
struct SaeStatus {
  int status = 200;  ///< 200, or 400/401/503 with `message`
  std::string message;
  std::int64_t retry_after_s = 0;  ///< > 0 with a 503 of a per-SAE limit: the Retry-After header
  std::string source_kme_id;       ///< KM serving the master SAE
  std::string target_kme_id;       ///< KM serving the slave SAE
  std::int64_t key_size = 256;
  std::int64_t stored_key_count = 0;  ///< keys ready for this pair without a relay
  std::int64_t max_key_count = 0;
  std::int64_t max_key_per_request = 0;
  std::int64_t max_key_size = 0;
  std::int64_t min_key_size = 0;
};

/// Limits every KM of the agent applies (the server validates against them first).
struct SaeLimits {
  std::int64_t default_key_size = 256;  ///< bits, when a request names no size
  std::int64_t min_key_size = 64;       ///< bits
  std::int64_t max_key_size = 8192;     ///< bits, a multiple of 256
  std::int64_t max_key_per_request = 128;
};

/// Implemented by the agent core: routes each call to the KM that serves the calling SAE.
/// Every coroutine may be awaited from any executor; it hops to the KM's strand itself.
class SaeKeyService {
 public:
  virtual ~SaeKeyService() = default;
  [[nodiscard]] virtual SaeLimits limits() const = 0;
  /// True when a KM hosted here serves `sae_id` (else the server answers 401).
  [[nodiscard]] virtual bool serves(const std::string& sae_id) const = 0;
  /// GET /api/v1/keys/{slave}/status, called by `master`.
  virtual boost::asio::awaitable<SaeStatus> status(std::string master_sae,
                                                   std::string slave_sae) = 0;
  /// enc_keys: `number` keys of `size_bits` each (already validated against limits()), for
  /// `master_sae` (the caller) to share with `slave_sae`. Keys are handed out once.
  virtual boost::asio::awaitable<SaeResult> enc_keys(std::string master_sae, std::string slave_sae,
                                                     std::int64_t number,
                                                     std::int64_t size_bits) = 0;
  /// dec_keys: the keys with these IDs that `master_sae` obtained for `slave_sae` (the caller).
  /// All or nothing; each key is handed out once.
  virtual boost::asio::awaitable<SaeResult> dec_keys(std::string slave_sae, std::string master_sae,
                                                     std::vector<std::string> key_ids) = 0;
};

}  // namespace qkdn::agent
