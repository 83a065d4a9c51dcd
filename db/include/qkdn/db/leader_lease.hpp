// Leadership of one controller among several that share one PostgreSQL database (high
// availability; docs/high-availability.md). The lease is a row of the database (migration 0008),
// renewed within a deadline measured by the database's clock; each term takes a fencing epoch from
// controller_epoch_seq, which only grows. A controller that holds the lease writes through a
// PgStore fenced on its (holder, epoch) (PgStoreOptions::fence): once another controller has
// taken over, every write of the old leader fails, whether or not it has noticed yet; the
// takeover itself waits for the old leader's writes in flight (they hold the row FOR SHARE).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "qkdn/controller/clock.hpp"

namespace qkdn::db {

/// Who a controller is, for the lease and the fence of its writes.
struct Fence {
  std::string holder;                  ///< unique per controller process
  std::atomic<std::int64_t> epoch{0};  ///< the term being written in; 0: not leader (refused)
};

/// Settings of a LeaderLease.
struct LeaseOptions {
  std::string dsn;
  std::string holder;  ///< unique per process (e.g. host, pid and a random part)
  std::chrono::milliseconds lease{5000};
  std::string ck_address;   ///< where agents reach this controller (told to standbys' agents)
  std::string api_address;  ///< where operators reach its API
};

/// The lease row as it stands.
struct LeaderInfo {
  std::string holder;  ///< empty: nobody ever held it
  std::int64_t epoch = 0;
  bool live = false;               ///< the lease has not expired (database clock)
  std::int64_t expires_in_ms = 0;  ///< negative once expired
  std::string ck_address;
  std::string api_address;
};

/// The lease, on its own connection (so that renewals never queue behind store writes). Not
/// thread-safe: one thread (the controller's leadership timer) calls it.
class LeaderLease {
 public:
  /// Connects lazily. Throws InvalidArgument for an empty holder or a lease under 100 ms.
  explicit LeaderLease(LeaseOptions options);
  ~LeaderLease();
  LeaderLease(const LeaderLease&) = delete;
  LeaderLease& operator=(const LeaderLease&) = delete;

  /// Takes the lease if it is free or expired, or renews ours. Returns the epoch of our term
  /// (unchanged on a renewal; a new one from controller_epoch_seq when a term starts, also after
  /// our own lease lapsed), or nullopt while another controller's lease is live. Throws
  /// Unavailable when the database cannot be reached (then we are not leader either).
  std::optional<std::int64_t> acquire_or_renew();
  /// Gives the lease up at once if we hold it in `epoch` (a clean stop: a standby takes over
  /// without waiting for the lease to expire). Returns whether it was ours.
  bool release(std::int64_t epoch);
  /// The row as it stands.
  LeaderInfo leader();

 private:
  struct Conn;
  template <class F>
  auto run(const char* what, F&& fn);
  LeaseOptions options_;
  std::unique_ptr<Conn> conn_;
};

}  // namespace qkdn::db
