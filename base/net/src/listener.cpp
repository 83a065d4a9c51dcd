// Listener guards: see qkdn/net/listener.hpp.
#include "qkdn/net/listener.hpp"

#include <sys/resource.h>

#include <algorithm>
#include <list>
#include <mutex>

namespace qkdn::net {

bool is_loopback(const boost::asio::ip::address& address) {
  if (address.is_v4()) return address.to_v4().is_loopback();
  const auto v6 = address.to_v6();
  if (v6.is_v4_mapped()) {
    return boost::asio::ip::make_address_v4(boost::asio::ip::v4_mapped, v6).is_loopback();
  }
  return v6.is_loopback();
}

std::size_t raise_fd_limit() {
  rlimit lim{};
  if (getrlimit(RLIMIT_NOFILE, &lim) != 0) return 1024;
  if (lim.rlim_cur < lim.rlim_max) {
    rlimit want = lim;
    want.rlim_cur = lim.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &want) == 0) lim = want;
  }
  if (lim.rlim_cur == RLIM_INFINITY) return static_cast<std::size_t>(1) << 20;
  return static_cast<std::size_t>(lim.rlim_cur);
}

struct ConnectionGate::Slot {
  std::list<std::shared_ptr<Slot>>::iterator it;
  Clock::time_point entered{};
  bool held = true;
  std::function<void()> evict;
};

struct ConnectionGate::State {
  State(std::size_t c, WhenFull p, std::chrono::milliseconds a) : cap(c), policy(p), min_age(a) {}
  const std::size_t cap;
  const WhenFull policy;
  const std::chrono::milliseconds min_age;
  mutable std::mutex mu;
  std::list<std::shared_ptr<Slot>> slots;  // oldest first
  std::uint64_t refused = 0;
  std::uint64_t evicted = 0;
};

ConnectionGate::Ticket& ConnectionGate::Ticket::operator=(Ticket&& o) noexcept {
  if (this != &o) {
    release();
    state_ = std::move(o.state_);
    slot_ = std::move(o.slot_);
  }
  return *this;
}

void ConnectionGate::Ticket::release() {
  if (!slot_) return;
  {
    std::lock_guard lock(state_->mu);
    if (slot_->held) {
      state_->slots.erase(slot_->it);
      slot_->held = false;
    }
    slot_->evict = nullptr;
  }
  slot_.reset();
  state_.reset();
}

ConnectionGate::ConnectionGate(std::size_t cap, WhenFull policy, std::chrono::milliseconds min_age)
    : state_(std::make_shared<State>(cap, policy, min_age)) {}

ConnectionGate::Ticket ConnectionGate::try_enter(std::function<void()> evict,
                                                 Clock::time_point now) {
  Ticket t;
  std::function<void()> victim;
  {
    std::lock_guard lock(state_->mu);
    if (state_->slots.size() >= state_->cap) {
      if (state_->policy == WhenFull::kRefuse || state_->slots.empty() ||
          now - state_->slots.front()->entered < state_->min_age) {
        ++state_->refused;
        return t;
      }
      auto oldest = state_->slots.front();
      state_->slots.pop_front();
      oldest->held = false;
      victim = std::move(oldest->evict);
      ++state_->evicted;
    }
    auto slot = std::make_shared<Slot>();
    slot->entered = now;
    slot->evict = std::move(evict);
    slot->it = state_->slots.insert(state_->slots.end(), slot);
    t.state_ = state_;
    t.slot_ = std::move(slot);
  }
  if (victim) victim();
  return t;
}

std::size_t ConnectionGate::count() const {
  std::lock_guard lock(state_->mu);
  return state_->slots.size();
}

std::uint64_t ConnectionGate::refused() const {
  std::lock_guard lock(state_->mu);
  return state_->refused;
}

std::uint64_t ConnectionGate::evicted() const {
  std::lock_guard lock(state_->mu);
  return state_->evicted;
}

std::size_t ConnectionGate::cap() const { return state_->cap; }

AcceptPause AcceptBackoff::on_error(const boost::system::error_code& /*ec*/,
                                    std::chrono::steady_clock::time_point now) {
  using std::chrono::milliseconds;
  // Every error pauses: the ones that exhaust the process (EMFILE, ENFILE, ENOBUFS, ENOMEM) come
  // back at once on the next accept, and an unknown persistent error must not spin either.
  const bool first = delay_.count() == 0;
  delay_ = first ? milliseconds{5} : std::min(delay_ * 2, milliseconds{1000});
  AcceptPause p;
  p.delay = delay_;
  if (last_log_ == std::chrono::steady_clock::time_point{} ||
      now - last_log_ >= std::chrono::seconds{10}) {
    p.log = true;
    last_log_ = now;
  }
  return p;
}

}  // namespace qkdn::net
