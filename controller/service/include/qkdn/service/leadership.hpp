// High availability (issue 17, docs/high-availability.md): which of several controllers sharing
// one PostgreSQL database leads. Leadership renews the lease row (db::LeaderLease) well within
// its duration on its own thread, and a watchdog thread steps down when no renewal succeeded for
// `step_down_after` (measured from the start of the last successful renewal, so before the lease
// can lapse by the database's clock): it zeroes the fence of the store's writes at once and
// calls on_lost, whose job is to stop commanding KMs (close the Ck sessions) right away.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>

namespace qkdn::db {
struct Fence;
class LeaderLease;
}  // namespace qkdn::db

namespace qkdn::service {

/// Settings of a Leadership. Validated by its constructor.
struct LeadershipOptions {
  std::string dsn;     ///< the shared database (libpq DSN; several hosts allowed)
  std::string holder;  ///< unique per process; empty: made from host, pid and a random part
  /// Lease duration (database clock). >= 300 ms.
  std::chrono::milliseconds lease{3000};
  /// Renewal period; 0: lease / 6.
  std::chrono::milliseconds renew_every{0};
  /// No successful renewal started within this: step down. 0: lease * 3 / 5. Must be shorter
  /// than the lease (the rest of it is the time to close the Ck sessions).
  std::chrono::milliseconds step_down_after{0};
  std::string ck_address;   ///< HOST:PORT agents reach this controller at (told by standbys)
  std::string api_address;  ///< HOST:PORT of its API (told by a standby's not_leader problem)
  /// Called on the leadership thread when a term starts (the fence carries `epoch` already).
  std::function<void(std::int64_t epoch)> on_elected;
  /// Called once per term when it ends (reason "lease_lost": another controller holds it,
  /// "renew_failed": the database did not answer in time, "stopped"); the fence is zero already.
  /// Must return quickly: it runs on the watchdog or leadership thread.
  std::function<void(std::int64_t epoch, std::string_view reason)> on_lost;
  std::function<void(std::string_view line)> log;  ///< empty: the process-wide logger
};

/// What a controller knows of the leadership, for health, metrics and redirects.
struct LeadershipStatus {
  bool leader = false;
  std::int64_t epoch = 0;  ///< our term when leader, else the leader's as last read
  std::string holder;      ///< this controller
  std::string leader_holder;
  std::string leader_ck_address;
  std::string leader_api_address;
  /// Since the last successful look at the lease row (a renewal or a read), ms; -1: never.
  std::int64_t lease_age_ms = -1;
  /// Terms this process ended, by reason; and terms it took over (elections).
  std::map<std::string, std::uint64_t> failovers;
  std::uint64_t elections = 0;
};

class Leadership {
 public:
  /// Throws InvalidArgument for bad options (one clear line).
  explicit Leadership(LeadershipOptions options);
  /// Stops (releasing the lease if held).
  ~Leadership();
  Leadership(const Leadership&) = delete;
  Leadership& operator=(const Leadership&) = delete;

  /// The addresses the lease row advertises while this controller leads (known once its
  /// listeners are bound). Before start().
  void set_addresses(std::string ck_address, std::string api_address);
  /// Starts the leadership and watchdog threads.
  void start();
  /// Ends our term now when we lead (e.g. the leader's service could not start): fence to 0,
  /// on_lost(reason), and no new term for one lease (the lease lapses for the others).
  void resign(const std::string& reason);
  /// Stops them; when leader, releases the lease at once so that a standby takes over without
  /// waiting for it to lapse (on_lost is called with "stopped"). Idempotent.
  void stop();
  /// The fence to give the leader's store (db::pg_store_factory(dsn, fence)).
  [[nodiscard]] std::shared_ptr<const db::Fence> fence() const;
  [[nodiscard]] LeadershipStatus status() const;
  [[nodiscard]] bool is_leader() const { return leader_.load(); }
  [[nodiscard]] const LeadershipOptions& options() const { return options_; }
  /// Prometheus text of qkdn_controller_leader, qkdn_controller_epoch and
  /// qkdn_controller_failovers_total{reason} (docs/metrics.md).
  [[nodiscard]] std::string metrics_text() const;
  /// The same families for a given status (a single controller: leader, its epoch, no changes).
  [[nodiscard]] static std::string metrics_text(const LeadershipStatus& status);

 private:
  void run();
  void watchdog();
  /// Ends the term `epoch` (if it is still ours): fence to 0, on_lost. Any thread.
  void lose(std::int64_t epoch, const std::string& reason);
  void say(const std::string& line) const;

  LeadershipOptions options_;
  std::shared_ptr<db::Fence> fence_;
  std::unique_ptr<db::LeaderLease> lease_;  ///< the leadership thread's alone
  std::atomic<bool> leader_{false};
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::int64_t epoch_ = 0;                            ///< our term while leader; mu_
  std::int64_t last_term_ = 0;                        ///< the last term we held (never reused); mu_
  std::chrono::steady_clock::time_point deadline_{};  ///< step down after; mu_
  std::chrono::steady_clock::time_point lost_at_{};   ///< mu_
  LeadershipStatus seen_;                             ///< leader fields as last read; mu_
  std::chrono::steady_clock::time_point seen_at_{};   ///< mu_
  std::thread thread_;
  std::thread watchdog_;
};

}  // namespace qkdn::service
