// The leadership loop of a controller among several sharing one database (leadership.hpp).
//
// Timing (lease L, defaults L = 3 s): a renewal starts every L/6; the watchdog steps down when no
// renewal that *started* less than 3L/5 ago succeeded. A renewal that started at t0 set the
// lease's expiry to (database time at its UPDATE) + L >= t0 + L, so stepping down at t0 + 3L/5
// leaves at least 2L/5 (1.2 s by default) to close the Ck sessions before any other controller
// can take the lease, with clocks that run at the same rate (their offsets do not matter: the
// expiry is the database's). Writes are fenced in the database whatever the timing.
#include "qkdn/service/leadership.hpp"

#include <unistd.h>

#include <cstdio>
#include <random>

#include "qkdn/base/log.hpp"
#include "qkdn/controller/error.hpp"
#include "qkdn/db/leader_lease.hpp"

namespace qkdn::service {
namespace {

using Steady = std::chrono::steady_clock;

std::string default_holder() {
  char host[256] = {};
  if (::gethostname(host, sizeof host - 1) != 0) host[0] = '\0';
  std::random_device rd;
  char tail[20];
  std::snprintf(tail, sizeof tail, "%08x", rd());
  return std::string(host[0] != '\0' ? host : "host") + ":" + std::to_string(::getpid()) + ":" +
         tail;
}

constexpr const char* kReasons[] = {"elected", "lease_lost", "renew_failed", "start_failed",
                                    "stopped"};

}  // namespace

Leadership::Leadership(LeadershipOptions options)
    : options_(std::move(options)), fence_(std::make_shared<db::Fence>()) {
  if (options_.dsn.empty()) throw InvalidArgument("--ha needs --store-dsn (the shared database)");
  if (options_.lease < std::chrono::milliseconds{300}) {
    throw InvalidArgument("--ha-lease-ms: a lease of at least 300 ms");
  }
  if (options_.renew_every.count() == 0) options_.renew_every = options_.lease / 6;
  if (options_.step_down_after.count() == 0) options_.step_down_after = options_.lease * 3 / 5;
  if (options_.renew_every.count() < 10 || options_.renew_every >= options_.step_down_after) {
    throw InvalidArgument("leadership: the renewal period must be under the step-down time");
  }
  if (options_.step_down_after >= options_.lease) {
    throw InvalidArgument("leadership: step down before the lease lapses");
  }
  if (options_.holder.empty()) options_.holder = default_holder();
  fence_->holder = options_.holder;
  seen_.holder = options_.holder;
}

void Leadership::set_addresses(std::string ck_address, std::string api_address) {
  options_.ck_address = std::move(ck_address);
  options_.api_address = std::move(api_address);
}

void Leadership::resign(const std::string& reason) {
  std::int64_t term = 0;
  {
    std::lock_guard lock(mu_);
    term = leader_.load() ? epoch_ : 0;
  }
  if (term != 0) lose(term, reason);
}

Leadership::~Leadership() { stop(); }

void Leadership::say(const std::string& line) const {
  if (options_.log) {
    options_.log(line);
  } else {
    base::log_prefixed(
        line.find("WARNING") != std::string::npos ? base::LogLevel::kWarn : base::LogLevel::kInfo,
        line);
  }
}

void Leadership::start() {
  if (thread_.joinable()) return;
  db::LeaseOptions lo;
  lo.dsn = options_.dsn;
  lo.holder = options_.holder;
  lo.lease = options_.lease;
  lo.ck_address = options_.ck_address;
  lo.api_address = options_.api_address;
  lease_ = std::make_unique<db::LeaderLease>(lo);
  thread_ = std::thread([this] { run(); });
  watchdog_ = std::thread([this] { watchdog(); });
}

void Leadership::stop() {
  {
    std::lock_guard lock(mu_);
    if (stopping_ && !thread_.joinable()) return;
    stopping_ = true;
  }
  cv_.notify_all();
  if (watchdog_.joinable()) watchdog_.join();
  if (thread_.joinable()) thread_.join();
}

std::shared_ptr<const db::Fence> Leadership::fence() const { return fence_; }

LeadershipStatus Leadership::status() const {
  std::lock_guard lock(mu_);
  LeadershipStatus s = seen_;
  s.leader = leader_.load();
  s.holder = options_.holder;
  if (s.leader) s.epoch = epoch_;
  if (seen_at_ != Steady::time_point{}) {
    s.lease_age_ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(Steady::now() - seen_at_).count();
  }
  return s;
}

std::string Leadership::metrics_text() const { return metrics_text(status()); }

std::string Leadership::metrics_text(const LeadershipStatus& s) {
  std::string out;
  out += "# HELP qkdn_controller_leader 1 while this controller leads (holds the lease with ";
  out += "--ha; always without), else 0\n";
  out += "# TYPE qkdn_controller_leader gauge\n";
  out += "qkdn_controller_leader " + std::string(s.leader ? "1" : "0") + "\n";
  out += "# HELP qkdn_controller_epoch The leadership term (controller_epoch) this controller ";
  out += "commands in, or the leader's as last seen\n";
  out += "# TYPE qkdn_controller_epoch gauge\n";
  out += "qkdn_controller_epoch " + std::to_string(s.epoch) + "\n";
  out += "# HELP qkdn_controller_failovers_total Leadership changes of this controller by reason ";
  out += "(elected: it took the lease; lease_lost, renew_failed, start_failed, stopped: its ";
  out += "term ended)\n";
  out += "# TYPE qkdn_controller_failovers_total counter\n";
  for (const char* r : kReasons) {
    std::uint64_t n = 0;
    if (std::string_view(r) == "elected") {
      n = s.elections;
    } else if (auto it = s.failovers.find(r); it != s.failovers.end()) {
      n = it->second;
    }
    out += "qkdn_controller_failovers_total{reason=\"" + std::string(r) + "\"} " +
           std::to_string(n) + "\n";
  }
  return out;
}

void Leadership::lose(std::int64_t epoch, const std::string& reason) {
  {
    std::lock_guard lock(mu_);
    if (!leader_.load() || epoch_ != epoch) return;
    fence_->epoch.store(0);  // every write from now on is refused, before anything else
    leader_.store(false);
    lost_at_ = Steady::now();
    ++seen_.failovers[reason];
    seen_.leader_holder.clear();
  }
  say("ha: WARNING: leadership of term " + std::to_string(epoch) + " lost (" + reason +
      "); standing down");
  if (options_.on_lost) options_.on_lost(epoch, reason);
}

void Leadership::watchdog() {
  std::unique_lock lock(mu_);
  while (!stopping_) {
    cv_.wait_for(lock, std::chrono::milliseconds{10});
    if (stopping_ || !leader_.load() || Steady::now() < deadline_) continue;
    const auto term = epoch_;
    lock.unlock();
    lose(term, "renew_failed");
    lock.lock();
  }
}

void Leadership::run() {
  std::string last_problem;
  for (;;) {
    const auto t0 = Steady::now();
    bool leader = false;
    std::int64_t term = 0;
    std::int64_t last_term = 0;
    bool cooling = false;
    {
      std::lock_guard lock(mu_);
      if (stopping_) break;
      leader = leader_.load();
      term = epoch_;
      last_term = last_term_;
      // After losing a term, stay standby for one lease: the other controllers get the lease.
      cooling = !leader && lost_at_ != Steady::time_point{} && t0 < lost_at_ + options_.lease;
    }
    try {
      std::optional<std::int64_t> got;
      if (!cooling) got = lease_->acquire_or_renew();
      const auto done = Steady::now();
      if (got && leader && *got == term) {
        std::lock_guard lock(mu_);
        if (leader_.load() && epoch_ == term) {
          deadline_ = t0 + options_.step_down_after;
          seen_at_ = done;
        }
      } else if (got && *got <= last_term) {
        // A renewal of a term we already ended (it reached the database late): hand it back.
        lease_->release(*got);
      } else if (got) {
        if (leader) lose(term, "lease_lost");  // our own lease had lapsed: a new term
        {
          std::lock_guard lock(mu_);
          fence_->epoch.store(*got);
          epoch_ = *got;
          last_term_ = *got;
          deadline_ = t0 + options_.step_down_after;
          leader_.store(true);
          ++seen_.elections;
          seen_.epoch = *got;
          seen_.leader_holder = options_.holder;
          seen_.leader_ck_address = options_.ck_address;
          seen_.leader_api_address = options_.api_address;
          seen_at_ = done;
        }
        say("ha: leader in term " + std::to_string(*got));
        if (options_.on_elected) options_.on_elected(*got);
      } else {
        if (leader) lose(term, "lease_lost");
        const auto info = lease_->leader();
        std::lock_guard lock(mu_);
        seen_.epoch = info.epoch;
        seen_.leader_holder = info.live ? info.holder : "";
        seen_.leader_ck_address = info.live ? info.ck_address : "";
        seen_.leader_api_address = info.live ? info.api_address : "";
        seen_at_ = Steady::now();
      }
      last_problem.clear();
    } catch (const std::exception& e) {
      // The watchdog decides when a leader gives up; a standby just tries again.
      if (last_problem != e.what()) say(std::string("ha: WARNING: ") + e.what());
      last_problem = e.what();
    }
    std::unique_lock lock(mu_);
    cv_.wait_until(lock, t0 + options_.renew_every, [this] { return stopping_; });
  }
  std::int64_t term = 0;
  {
    std::lock_guard lock(mu_);
    term = leader_.load() ? epoch_ : 0;
  }
  if (term != 0) {
    lose(term, "stopped");
    try {
      lease_->release(term);
      say("ha: lease of term " + std::to_string(term) + " released");
    } catch (const std::exception& e) {
      say(std::string("ha: WARNING: lease not released (it lapses by itself): ") + e.what());
    }
  }
}

}  // namespace qkdn::service
