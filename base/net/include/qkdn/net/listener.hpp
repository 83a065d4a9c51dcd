// Guards shared by every accept loop of the project (HTTP servers, the controller's Ck listener,
// the agent's KMA listeners): a capped connection count, the pause after a failed accept, and
// the process's file-descriptor limit.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>

#include <boost/asio/ip/address.hpp>
#include <boost/system/error_code.hpp>

namespace qkdn::net {

/// True for 127.0.0.0/8, ::1 and IPv4-mapped loopback addresses.
bool is_loopback(const boost::asio::ip::address& address);

/// Raises the soft RLIMIT_NOFILE to the hard limit (a daemon's caps are sized against it) and
/// returns the soft limit now in force.
std::size_t raise_fd_limit();

/// A count of connections in one state (open, not yet authenticated...), capped. When full it
/// either refuses newcomers, or evicts the connection that has waited longest if that one has
/// waited at least `min_age` (else the newcomer is refused). With eviction, a flood of peers
/// that never authenticate cannot lock out a client that authenticates promptly unless it opens
/// `cap` connections per `min_age` (instead of per authentication deadline), while a storm of
/// genuine clients, all young, is refused at once rather than aborting handshakes about to
/// finish. Thread-safe; tickets may outlive the gate.
class ConnectionGate {
 public:
  enum class WhenFull { kRefuse, kEvictOldest };
  using Clock = std::chrono::steady_clock;
  /// `cap` = the most tickets out at once.
  explicit ConnectionGate(std::size_t cap, WhenFull policy = WhenFull::kRefuse,
                          std::chrono::milliseconds min_age = std::chrono::milliseconds{1000});

  struct State;
  struct Slot;
  /// One admitted connection; releasing (or destroying) it frees the slot. Movable only.
  class Ticket {
   public:
    Ticket() = default;
    Ticket(Ticket&& o) noexcept = default;
    Ticket& operator=(Ticket&& o) noexcept;
    Ticket(const Ticket&) = delete;
    Ticket& operator=(const Ticket&) = delete;
    ~Ticket() { release(); }
    /// Frees the slot now (idempotent; a no-op after eviction).
    void release();
    /// True while the ticket was admitted and not released.
    explicit operator bool() const { return slot_ != nullptr; }

   private:
    friend class ConnectionGate;
    std::shared_ptr<State> state_;
    std::shared_ptr<Slot> slot_;
  };

  /// A slot. When full: kRefuse returns an empty ticket (counted as refused); kEvictOldest
  /// takes the oldest holder's slot if it entered at least `min_age` before `now` and calls
  /// that holder's `evict` (on this thread, after the gate's lock is released; it must only
  /// start closing the connection, e.g. by posting), else refuses.
  Ticket try_enter(std::function<void()> evict = {}, Clock::time_point now = Clock::now());
  /// Tickets out now.
  [[nodiscard]] std::size_t count() const;
  /// Newcomers refused, and holders evicted, so far.
  [[nodiscard]] std::uint64_t refused() const;
  [[nodiscard]] std::uint64_t evicted() const;
  [[nodiscard]] std::size_t cap() const;

 private:
  std::shared_ptr<State> state_;
};

/// What an accept loop does after a failed accept.
struct AcceptPause {
  std::chrono::milliseconds delay{0};  ///< wait this long before accepting again
  bool log = false;                    ///< report this failure (rate-limited)
};

/// Pause policy of one accept loop: a failed accept (EMFILE, ENFILE, ENOBUFS and the like) waits
/// 5 ms, doubling per further failure up to 1 s, so that a loop out of descriptors neither spins
/// nor stays deaf for long once descriptors are free again; a successful accept resets it.
/// Failures are reported at most once every 10 s.
/// Not thread-safe: one per accept loop (which runs on one strand).
class AcceptBackoff {
 public:
  AcceptPause on_error(
      const boost::system::error_code& ec,
      std::chrono::steady_clock::time_point now = std::chrono::steady_clock::now());
  void on_success() { delay_ = std::chrono::milliseconds{0}; }

 private:
  std::chrono::milliseconds delay_{0};
  std::chrono::steady_clock::time_point last_log_{};
};

}  // namespace qkdn::net
