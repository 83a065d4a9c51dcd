#include "idempotency.hpp"

namespace qkdn::northbound {

IdempotencyStore::Begin IdempotencyStore::begin(const std::string& key,
                                                const std::string& fingerprint) {
  const auto now = std::chrono::steady_clock::now();
  std::lock_guard lock(mu_);
  evict(now);
  Begin b;
  auto it = entries_.find(key);
  if (it != entries_.end()) {
    if (it->second.fingerprint != fingerprint) {
      b.outcome = Outcome::kMismatch;
    } else if (!it->second.done) {
      b.outcome = Outcome::kInProgress;
    } else {
      b.outcome = Outcome::kReplay;
      b.response = it->second.response;
    }
    return b;
  }
  while (entries_.size() >= capacity_ && !order_.empty()) {
    entries_.erase(order_.front());
    order_.pop_front();
  }
  order_.push_back(key);
  Entry e;
  e.fingerprint = fingerprint;
  e.at = now;
  e.order = std::prev(order_.end());
  entries_.emplace(key, std::move(e));
  return b;
}

void IdempotencyStore::complete(const std::string& key, const HttpResponse& response) {
  std::lock_guard lock(mu_);
  auto it = entries_.find(key);
  if (it == entries_.end()) return;
  it->second.done = true;
  it->second.response = response;
  it->second.at = std::chrono::steady_clock::now();
}

void IdempotencyStore::abandon(const std::string& key) {
  std::lock_guard lock(mu_);
  auto it = entries_.find(key);
  if (it == entries_.end()) return;
  order_.erase(it->second.order);
  entries_.erase(it);
}

std::size_t IdempotencyStore::size() const {
  std::lock_guard lock(mu_);
  return entries_.size();
}

void IdempotencyStore::evict(std::chrono::steady_clock::time_point now) {
  // Entries are stored in order of reservation; completion time is at most ttl later, so
  // checking the front suffices to bound the memory held by expired entries.
  while (!order_.empty()) {
    auto it = entries_.find(order_.front());
    if (it == entries_.end() || !it->second.done || now - it->second.at < ttl_) break;
    entries_.erase(it);
    order_.pop_front();
  }
}

}  // namespace qkdn::northbound
