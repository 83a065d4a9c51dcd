#include "qkdn/net/limits.hpp"

#include <algorithm>
#include <utility>

#include "qkdn/base/error.hpp"

namespace qkdn::net {

using std::chrono::milliseconds;

// ---- TokenBucket --------------------------------------------------------------------------------

TokenBucket::TokenBucket(double rate_per_s, double burst)
    : rate_(rate_per_s), burst_(burst), tokens_(burst) {
  if (!(rate_per_s > 0) || !(burst >= 1)) {
    throw InvalidArgument("token bucket: rate must be > 0 and burst >= 1");
  }
}

void TokenBucket::refill(SteadyTime now) {
  if (!started_) {
    started_ = true;
    last_ = now;
    return;
  }
  if (now <= last_) return;
  const double dt = std::chrono::duration<double>(now - last_).count();
  tokens_ = std::min(burst_, tokens_ + dt * rate_);
  last_ = now;
}

bool TokenBucket::try_take(SteadyTime now) {
  refill(now);
  if (tokens_ < 1.0) return false;
  tokens_ -= 1.0;
  return true;
}

milliseconds TokenBucket::time_to_token(SteadyTime now) const {
  double tokens = tokens_;
  if (started_ && now > last_) {
    tokens = std::min(burst_, tokens + std::chrono::duration<double>(now - last_).count() * rate_);
  }
  if (tokens >= 1.0) return milliseconds{0};
  return milliseconds{static_cast<std::int64_t>((1.0 - tokens) / rate_ * 1000.0) + 1};
}

// ---- FloodGuard ---------------------------------------------------------------------------------

FloodGuard::FloodGuard(double rate_per_s, double burst, std::uint32_t max_refused_per_s)
    : bucket_(rate_per_s, burst), max_refused_per_s_(max_refused_per_s) {}

FloodGuard::Verdict FloodGuard::on_frame(SteadyTime now) {
  if (bucket_.try_take(now)) return Verdict::kAdmit;
  ++refused_;
  if (now - window_start_ >= std::chrono::seconds{1}) {
    window_start_ = now;
    refused_in_window_ = 0;
  }
  ++refused_in_window_;
  return refused_in_window_ > max_refused_per_s_ ? Verdict::kDisconnect : Verdict::kRefuse;
}

milliseconds FloodGuard::retry_after(SteadyTime now) const {
  return std::max(bucket_.time_to_token(now), milliseconds{1});
}

// ---- AdmissionQueue -----------------------------------------------------------------------------

AdmissionQueue::AdmissionQueue(std::size_t limit) : limit_(limit) {
  if (limit < 1) throw InvalidArgument("admission queue: limit must be at least 1");
}

AdmissionQueue::Ticket& AdmissionQueue::Ticket::operator=(Ticket&& o) noexcept {
  if (this != &o) {
    release();
    q_ = o.q_;
    o.q_ = nullptr;
  }
  return *this;
}

void AdmissionQueue::Ticket::release() {
  if (q_ == nullptr) return;
  q_->depth_.fetch_sub(1, std::memory_order_relaxed);
  q_ = nullptr;
}

AdmissionQueue::Ticket AdmissionQueue::try_enter() {
  auto cur = depth_.load(std::memory_order_relaxed);
  do {
    if (cur >= limit_) {
      refused_.fetch_add(1, std::memory_order_relaxed);
      return Ticket{};
    }
  } while (!depth_.compare_exchange_weak(cur, cur + 1, std::memory_order_relaxed));
  auto hw = high_water_.load(std::memory_order_relaxed);
  while (cur + 1 > hw && !high_water_.compare_exchange_weak(hw, cur + 1)) {
  }
  return Ticket{this};
}

void AdmissionQueue::served(std::chrono::microseconds took) {
  // Exponential moving average (1/8 of each new sample); racing updates lose a sample at worst.
  const auto old = service_us_.load(std::memory_order_relaxed);
  const auto sample = std::max<std::int64_t>(took.count(), 1);
  service_us_.store(old == 0 ? sample : old + (sample - old) / 8, std::memory_order_relaxed);
}

milliseconds AdmissionQueue::retry_after(milliseconds floor, milliseconds ceiling) const {
  const auto per_item = std::max<std::int64_t>(service_us_.load(std::memory_order_relaxed), 1);
  const auto drain_us = per_item * static_cast<std::int64_t>(depth() + 1);
  return std::clamp(milliseconds{drain_us / 1000}, floor, ceiling);
}

// ---- ReconnectBackoff ---------------------------------------------------------------------------

ReconnectBackoff::ReconnectBackoff(milliseconds initial, milliseconds max, RandomWords random)
    : initial_(initial), max_(std::max(max, initial)), base_(initial), random_(std::move(random)) {
  if (initial.count() < 1) {
    throw InvalidArgument("reconnect backoff: initial delay must be >= 1 ms");
  }
  if (!random_) throw InvalidArgument("reconnect backoff: no source of randomness");
}

milliseconds ReconnectBackoff::jittered(milliseconds d) {
  const auto half = d.count() / 2;
  const auto r =
      static_cast<std::int64_t>(random_() % static_cast<std::uint64_t>(d.count() - half + 1));
  return milliseconds{half + r};
}

milliseconds ReconnectBackoff::next(std::optional<milliseconds> hint) {
  auto d = jittered(base_);
  base_ = std::min(base_ * 2, max_);
  if (hint && hint->count() > 0) {
    // At least the hint, spread over [hint, 1.5 * hint]: clients refused together come back
    // spread out too.
    const auto spread =
        static_cast<std::int64_t>(random_() % static_cast<std::uint64_t>(hint->count() / 2 + 1));
    d = std::max(d, *hint + milliseconds{spread});
  }
  return d;
}

}  // namespace qkdn::net
