// Idempotency-Key store of the northbound API: bounded, in memory, thread-safe. Private to
// qkdn_northbound.
#pragma once

#include <chrono>
#include <cstddef>
#include <list>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

#include "http_types.hpp"

namespace qkdn::northbound {

/// Responses stored under (actor, Idempotency-Key), with the fingerprint of the request that
/// made them. Oldest entries go first when full; entries expire after `ttl`.
class IdempotencyStore {
 public:
  IdempotencyStore(std::size_t capacity, std::chrono::milliseconds ttl)
      : capacity_(capacity), ttl_(ttl) {}

  enum class Outcome {
    kNew,         ///< the caller runs the request and then calls complete() or abandon()
    kReplay,      ///< `response` holds the stored response
    kInProgress,  ///< the same key is being processed now (409)
    kMismatch,    ///< the key was used for a different request (422)
  };
  struct Begin {
    Outcome outcome = Outcome::kNew;
    HttpResponse response;
  };

  /// Looks the key up and, when new, reserves it.
  Begin begin(const std::string& key, const std::string& fingerprint);
  /// Stores the response of a reserved key.
  void complete(const std::string& key, const HttpResponse& response);
  /// Forgets a reserved key (the request failed in a way that may be retried).
  void abandon(const std::string& key);
  [[nodiscard]] std::size_t size() const;

 private:
  struct Entry {
    std::string fingerprint;
    bool done = false;
    HttpResponse response;
    std::chrono::steady_clock::time_point at;
    std::list<std::string>::iterator order;
  };
  void evict(std::chrono::steady_clock::time_point now);

  std::size_t capacity_;
  std::chrono::milliseconds ttl_;
  mutable std::mutex mu_;  // guards the maps only; nothing slow runs under it
  std::unordered_map<std::string, Entry> entries_;
  std::list<std::string> order_;  // oldest first
};

}  // namespace qkdn::northbound
