// Key rate share per peer QKDN (issue 16, Y.3818 "policy-based control function"; docs/cxi.md
// "Key rate share"): a peer controller's QKDN may use at most `share` of a key rate of this QKDN.
// Pure code with an injected clock: the caller passes the time of each request.
//
// Each peer has a budget of share x capacity_bps x window bits, spent by each admitted request
// and refilled continuously at share x capacity_bps (a token bucket whose depth is one window):
// over any window a peer never gets more than its share plus one window's budget, and a single
// request larger than the budget is refused outright.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <string>

namespace qkdn::service {

class KeyShareLimiter {
 public:
  using Clock = std::chrono::steady_clock;
  static constexpr std::chrono::milliseconds kDefaultWindow{10'000};
  /// Peers tracked at most (the topology holds at most 64); beyond, the stalest is forgotten.
  static constexpr std::size_t kMaxPeers = 1024;

  explicit KeyShareLimiter(std::chrono::milliseconds window = kDefaultWindow);

  struct Verdict {
    bool admitted = false;
    std::string reason;  ///< why not, with the numbers (empty when admitted)
    std::chrono::milliseconds retry_after{0};
  };

  /// Admits `bits` for `peer_qkdn_id` at `now` when its budget holds them (and spends them), else
  /// says why. `share` in [0, 1]; `capacity_bps` the key rate the share is taken of. A share or
  /// capacity of 0 admits nothing.
  Verdict admit(const std::string& peer_qkdn_id, double share, double capacity_bps,
                std::int64_t bits, Clock::time_point now);

  /// Bits `peer_qkdn_id` may still take at `now` (the full budget for an unknown peer).
  [[nodiscard]] double available(const std::string& peer_qkdn_id, double share, double capacity_bps,
                                 Clock::time_point now) const;

  [[nodiscard]] std::chrono::milliseconds window() const { return window_; }

 private:
  struct Bucket {
    double tokens = 0;
    Clock::time_point last{};
  };
  [[nodiscard]] double refilled(const Bucket& b, double budget, double rate,
                                Clock::time_point now) const;

  std::chrono::milliseconds window_;
  std::map<std::string, Bucket> buckets_;
};

}  // namespace qkdn::service
