// What the service's drivers (key_supply_driver.hpp, reroute_driver.hpp) need from around them,
// as narrow interfaces: the store writer (ordered, write-ahead) and the KMs' Ck channels. The
// service implements both (ControllerService::Impl); unit tests pass a MemoryStore-backed writer
// and fake channels.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "qkdn/controller/clock.hpp"
#include "qkdn/controller/store.hpp"
#include "qkdn/southbound/ck_channel.hpp"

namespace qkdn::service {

/// One store write of the ordered writer.
struct StoreWrite {
  enum class Kind {
    kLedger,  ///< apply_ledger under its idempotency key: retried until it commits
    kUpsert,  ///< an upsert (save_*): idempotent, retried until it commits
    kOnce,    ///< not idempotent (audit append, accounting add): tried once, dropped on failure
  };
  StoreWrite(Kind k, std::string w, std::function<void(controller::Store&)> o, std::string key = {})
      : kind(k), what(std::move(w)), op(std::move(o)), ledger_key(std::move(key)) {}

  Kind kind = Kind::kUpsert;
  std::string what;                            ///< for logs (never a key ID)
  std::function<void(controller::Store&)> op;  ///< one attempt; the writer retries per kind
  std::string ledger_key;  ///< kLedger: the batch's idempotency key (in-doubt resolution)
  bool in_doubt = false;   ///< kLedger: a failed group commit may have stored it already
};

/// Writes that commit in order, then `then` runs on the core strand (write-ahead: Ck commands
/// that depend on the writes are sent from `then`).
struct WriteGroup {
  std::vector<StoreWrite> ops;
  std::function<void()> then;
  /// Nothing waits for this group (no `then`, no reader counting on it soon): the writer may hold
  /// it back a few milliseconds so that it shares the commit of a group that is waited for.
  bool can_wait = false;
  SteadyTime queued_at{};  ///< set by submit
};

/// The ordered store writer (persistence.cpp). Core strand only.
class StoreWriter {
 public:
  virtual ~StoreWriter() = default;
  /// Queues a group; its ops commit in order after every group queued before, then `then` runs
  /// on the core strand. Without a configured store `then` runs at once.
  virtual void submit(WriteGroup group) = 0;
  /// A store is configured (false: nothing is stored, the service keeps accounting in memory).
  [[nodiscard]] virtual bool configured() const = 0;
  /// The configured store answers (false while it is down: nothing may be allocated).
  [[nodiscard]] virtual bool up() const = 0;
};

/// The Ck channels of registered KMs. Core strand only.
class KmChannels {
 public:
  virtual ~KmChannels() = default;
  /// The channel of a registered KM, or null when it has no registered connection.
  [[nodiscard]] virtual std::shared_ptr<southbound::CkChannel> channel_of(
      const std::string& km_id) const = 0;
};

}  // namespace qkdn::service
