// Backpressure pieces shared by the controller (Ck sessions, the core's admission) and the agent
// (reconnects, ETSI 014 callers): a token bucket, a bounded admission count with a retry hint, a
// flood guard that decides when a peer over its rate is cut off, and the reconnect backoff. Pure:
// time points and randomness are passed in, so unit tests drive them without sleeping.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>

namespace qkdn::net {

using SteadyTime = std::chrono::steady_clock::time_point;

/// `rate` tokens per second, at most `burst` saved up; starts full. Not thread-safe: one owner
/// (a session's strand, a host's strand).
class TokenBucket {
 public:
  /// rate > 0, burst >= 1.
  TokenBucket(double rate_per_s, double burst);
  /// Takes one token at `now`: false (and nothing taken) when none is left.
  bool try_take(SteadyTime now);
  /// Time until one token is available at `now` (0 when one is).
  [[nodiscard]] std::chrono::milliseconds time_to_token(SteadyTime now) const;

 private:
  void refill(SteadyTime now);
  double rate_;
  double burst_;
  double tokens_;
  SteadyTime last_{};
  bool started_ = false;
};

/// A peer's frames against its rate: each is admitted (a token) or refused; a peer refused more
/// than `max_refused_per_s` times within one second keeps flooding after being told to slow
/// down, and is to be disconnected. Not thread-safe (one session).
class FloodGuard {
 public:
  enum class Verdict { kAdmit, kRefuse, kDisconnect };
  FloodGuard(double rate_per_s, double burst, std::uint32_t max_refused_per_s);
  Verdict on_frame(SteadyTime now);
  /// When the refused peer may send again.
  [[nodiscard]] std::chrono::milliseconds retry_after(SteadyTime now) const;
  [[nodiscard]] std::uint64_t refused() const { return refused_; }

 private:
  TokenBucket bucket_;
  std::uint32_t max_refused_per_s_;
  SteadyTime window_start_{};
  std::uint32_t refused_in_window_ = 0;
  std::uint64_t refused_ = 0;
};

/// Work admitted into a queue of known depth (e.g. commands waiting for the controller's core
/// strand): at most `limit` at once; beyond it a caller is refused with a retry hint that grows
/// with the depth and the measured service time. Thread-safe (admission and release may happen
/// on different threads).
class AdmissionQueue {
 public:
  explicit AdmissionQueue(std::size_t limit);
  /// One admitted item; releasing (or destroying) it lowers the depth. Movable only.
  class Ticket {
   public:
    Ticket() = default;
    Ticket(Ticket&& o) noexcept : q_(o.q_) { o.q_ = nullptr; }
    Ticket& operator=(Ticket&& o) noexcept;
    Ticket(const Ticket&) = delete;
    Ticket& operator=(const Ticket&) = delete;
    ~Ticket() { release(); }
    void release();
    explicit operator bool() const { return q_ != nullptr; }

   private:
    friend class AdmissionQueue;
    explicit Ticket(AdmissionQueue* q) : q_(q) {}
    AdmissionQueue* q_ = nullptr;
  };
  /// An item, or an empty ticket (counted as refused) when `limit` are out. The queue must
  /// outlive its tickets.
  Ticket try_enter();
  /// Reports how long one item took to serve (feeds the retry hint; any thread).
  void served(std::chrono::microseconds took);
  /// How long a refused caller should wait: the time to serve the current depth (at least
  /// `floor`, at most `ceiling`).
  [[nodiscard]] std::chrono::milliseconds retry_after(
      std::chrono::milliseconds floor = std::chrono::milliseconds{250},
      std::chrono::milliseconds ceiling = std::chrono::milliseconds{30'000}) const;
  [[nodiscard]] std::size_t depth() const { return depth_.load(std::memory_order_relaxed); }
  [[nodiscard]] std::size_t limit() const { return limit_; }
  [[nodiscard]] std::uint64_t refused() const { return refused_.load(std::memory_order_relaxed); }
  [[nodiscard]] std::size_t high_water() const {
    return high_water_.load(std::memory_order_relaxed);
  }

 private:
  std::size_t limit_;
  std::atomic<std::size_t> depth_{0};
  std::atomic<std::size_t> high_water_{0};
  std::atomic<std::uint64_t> refused_{0};
  std::atomic<std::int64_t> service_us_{0};  ///< moving average of the service time
};

/// Reconnect delays of one client (the agent's Ck connection): exponential from `initial` up to
/// `max`, each delay drawn uniformly from [d/2, d] ("equal jitter") so that a thousand clients
/// cut off at once do not come back at once; a server's retry hint raises the delay to at least
/// the hint (plus the same jitter). Not thread-safe (one owner); randomness is injected: `random`
/// returns uniformly random 64-bit words (e.g. a qkdn::Random's next_u64).
class ReconnectBackoff {
 public:
  using RandomWords = std::function<std::uint64_t()>;
  ReconnectBackoff(std::chrono::milliseconds initial, std::chrono::milliseconds max,
                   RandomWords random);
  /// The delay before the next attempt; doubles the base for the one after.
  std::chrono::milliseconds next(std::optional<std::chrono::milliseconds> hint = std::nullopt);
  /// A session succeeded: the next failure starts again from `initial`.
  void reset() { base_ = initial_; }
  [[nodiscard]] std::chrono::milliseconds base() const { return base_; }

 private:
  std::chrono::milliseconds jittered(std::chrono::milliseconds d);
  std::chrono::milliseconds initial_;
  std::chrono::milliseconds max_;
  std::chrono::milliseconds base_;
  RandomWords random_;
};

}  // namespace qkdn::net
