// Key rate share per peer QKDN: see qkdn/service/key_share.hpp.
#include "qkdn/service/key_share.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "qkdn/controller/error.hpp"

namespace qkdn::service {
namespace {

std::string bits_text(double bits) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.0f", std::floor(bits));
  return buf;
}

std::string share_text(double share) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", share);
  return buf;
}

}  // namespace

KeyShareLimiter::KeyShareLimiter(std::chrono::milliseconds window) : window_(window) {
  if (window_.count() <= 0) throw InvalidArgument("key share window must be positive");
}

double KeyShareLimiter::refilled(const Bucket& b, double budget, double rate,
                                 Clock::time_point now) const {
  const double dt = std::max(0.0, std::chrono::duration<double>(now - b.last).count());
  return std::min(budget, b.tokens + dt * rate);
}

double KeyShareLimiter::available(const std::string& peer_qkdn_id, double share,
                                  double capacity_bps, Clock::time_point now) const {
  const double rate = std::clamp(share, 0.0, 1.0) * std::max(0.0, capacity_bps);
  const double budget = rate * std::chrono::duration<double>(window_).count();
  auto it = buckets_.find(peer_qkdn_id);
  return it == buckets_.end() ? budget : refilled(it->second, budget, rate, now);
}

KeyShareLimiter::Verdict KeyShareLimiter::admit(const std::string& peer_qkdn_id, double share,
                                                double capacity_bps, std::int64_t bits,
                                                Clock::time_point now) {
  Verdict v;
  const double rate = std::clamp(share, 0.0, 1.0) * std::max(0.0, capacity_bps);
  const double window_s = std::chrono::duration<double>(window_).count();
  const double budget = rate * window_s;
  const std::string per_window = " bits per " + std::to_string(window_.count()) + " ms";
  if (rate <= 0) {
    v.reason = "the key rate share of " + peer_qkdn_id + " is " + share_text(share) + " of " +
               bits_text(capacity_bps) + " bit/s: no keys";
    return v;
  }
  const auto want = static_cast<double>(std::max<std::int64_t>(bits, 0));
  if (want > budget) {
    v.reason = "key rate share of " + peer_qkdn_id + " exceeded: " + bits_text(want) +
               " bits asked, its share (" + share_text(share) + " of " + bits_text(capacity_bps) +
               " bit/s) allows at most " + bits_text(budget) + per_window;
    return v;
  }
  auto it = buckets_.find(peer_qkdn_id);
  if (it == buckets_.end()) {
    if (buckets_.size() >= kMaxPeers) {
      buckets_.erase(std::min_element(buckets_.begin(), buckets_.end(), [](auto& a, auto& b) {
        return a.second.last < b.second.last;
      }));
    }
    it = buckets_.emplace(peer_qkdn_id, Bucket{budget, now}).first;
  }
  Bucket& b = it->second;
  const double have = refilled(b, budget, rate, now);
  b.tokens = have;
  b.last = std::max(b.last, now);
  if (have < want) {
    const double wait_s = (want - have) / rate;
    v.retry_after = std::chrono::milliseconds(static_cast<std::int64_t>(std::ceil(wait_s * 1000)));
    v.reason = "key rate share of " + peer_qkdn_id + " used up: " + bits_text(want) +
               " bits asked, " + bits_text(have) + " of " + bits_text(budget) + per_window +
               " left (share " + share_text(share) + " of " + bits_text(capacity_bps) +
               " bit/s); retry after " + std::to_string(v.retry_after.count()) + " ms";
    return v;
  }
  b.tokens = have - want;
  v.admitted = true;
  return v;
}

}  // namespace qkdn::service
