// The accept side of a framed peer protocol, shared by the controller's Ck listener and the
// agent's KMA listener: one accept loop, one gate for connections that have not registered yet,
// one registration gate, one frame-rate gate, one registration deadline, one stop-and-drain.
//
// What a connection carries (Ck frames, KMA frames) is the owner's: the server hands each
// accepted socket to `Hooks::serve`, which wraps it in its transport (CkChannel, KmaSession),
// reads frames and calls back into the connection's gates:
//   - Connection::admit_frame()      a registered peer's frame against its rate (FloodGuard);
//   - Connection::register_peer()    a registration (Ck Register, KMA Hello): bounded pending
//                                    registrations (busy with a retry hint), one at a time per
//                                    connection, the owner's verdict (which may refuse with a
//                                    code, e.g. not_leader); admitted = deadline off, slot freed.
// Threading: the accept loop runs on its own strand; each connection's serve coroutine on the
// connection's executor (a new strand unless Options::connection_executor says otherwise).
// Include only from translation units that need Asio.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>

#include "qkdn/net/limits.hpp"
#include "qkdn/net/listener.hpp"

namespace qkdn::southbound {

namespace net = boost::asio;

/// Frame rate of a registered peer (FloodGuard): tokens per second, burst, and the refusals per
/// second after which the peer is disconnected.
struct FrameRate {
  double max_frames_per_s = 0;
  double burst = 0;
  std::uint32_t max_refused_per_s = 0;
};

struct FramedServerOptions {
  std::string name = "server";  ///< for log lines ("ck", "KMA accept")
  /// Connections accepted and not registered yet; each holds a slot until it registers. Not
  /// owned (may be shared by several servers, e.g. every KM host of one agent). Null: no cap.
  qkdn::net::ConnectionGate* unregistered = nullptr;
  /// Registrations waiting for the owner's verdict at once (the registration gate); a further
  /// one is answered busy with AdmissionQueue::retry_after. Null: no bound.
  std::shared_ptr<qkdn::net::AdmissionQueue> registrations;
  /// Floor of the busy retry hint.
  std::chrono::milliseconds registration_retry_floor{1000};
  /// Holding instead of refusing: a registration that finds `registrations` full waits for a
  /// place (first come, first served) instead of being answered busy at once, at most
  /// `max_held_registrations` at a time and each at most `registration_hold` (never past 90 % of
  /// its registration deadline, so that the answer reaches the peer before the deadline closes
  /// the connection). A held connection gives back its slot among the unregistered (it spoke
  /// the protocol; the hold has its own bound), so newcomers neither evict nor wait behind it.
  /// What is still waiting then, or finds the hold full, is answered busy as before. 0 = no
  /// hold.
  std::size_t max_held_registrations = 0;
  std::chrono::milliseconds registration_hold{0};
  /// From accept to registration; a connection still unregistered then is closed
  /// (Hooks::deadline_passed first). 0 = no deadline.
  std::chrono::milliseconds registration_timeout{0};
  /// The frame gate of registered peers; nullopt = every frame admitted.
  std::optional<FrameRate> frame_rate;
  /// Executor of a new connection's serve coroutine (and of its accepted socket). Empty: a new
  /// strand of the server's executor.
  std::function<net::any_io_executor()> connection_executor;
};

class FramedServer {
 public:
  /// What the owner's registration step decided: empty `refusal` = registered.
  struct Verdict {
    std::string refusal;  ///< the protocol's code: "unknown_kma", "not_leader", "bad_request"...
    std::string text;
    bool close = true;  ///< a refusal ends the connection (after the answer is sent)
    [[nodiscard]] bool registered() const { return refusal.empty(); }
    static Verdict ok() { return {}; }
    static Verdict refuse(std::string code, std::string why, bool close = true) {
      return {std::move(code), std::move(why), close};
    }
  };

  /// The outcome of Connection::register_peer.
  struct Registration {
    enum class Outcome {
      kRegistered,  ///< the owner's verdict was OK: the connection is registered
      kRefused,     ///< the owner refused (verdict.refusal says why)
      kBusy,        ///< too many registrations pending: tell the peer to retry after retry_after
      kInProgress,  ///< a registration of this connection is already on its way
    };
    Outcome outcome = Outcome::kRefused;
    Verdict verdict;
    std::chrono::milliseconds retry_after{0};
  };

  /// A registration admitted past the bound, handed to the owner's attempt. The owner calls
  /// started() when it begins the work (e.g. on its core strand): the registration stops
  /// counting as pending then, and the time from there to the attempt's end is reported to the
  /// queue (AdmissionQueue::served), from which the busy retry hint is computed.
  class Pending {
   public:
    Pending() = default;
    Pending(Pending&&) noexcept = default;
    Pending& operator=(Pending&&) noexcept = default;
    Pending(const Pending&) = delete;
    Pending& operator=(const Pending&) = delete;
    ~Pending();
    void started();

   private:
    friend class FramedServer;
    void release_place();
    std::shared_ptr<qkdn::net::AdmissionQueue> queue_;
    std::shared_ptr<void> server_;  // the server's state: a freed place goes to a held one
    qkdn::net::AdmissionQueue::Ticket ticket_;
    std::optional<std::chrono::steady_clock::time_point> t0_;
  };

  /// One accepted connection. Shared by the server (until serve returns) and the owner.
  class Connection : public std::enable_shared_from_this<Connection> {
   public:
    [[nodiscard]] std::uint64_t id() const { return id_; }
    /// The executor serve runs on.
    [[nodiscard]] const net::any_io_executor& executor() const { return executor_; }
    /// How to close the owner's transport (set by serve before it reads). Thread-safe.
    void set_closer(const std::function<void()>& close);
    /// Closes the connection through the closer (thread-safe, idempotent for the server; the
    /// closer itself must tolerate repeated calls).
    void close();
    [[nodiscard]] bool registered() const { return registered_.load(); }

    /// The registration gate. Call from the connection's serving strand. In order: a second
    /// registration while one is on its way is kInProgress; `check` (may be empty) refuses what
    /// the owner can tell at once (a certificate naming someone else); beyond the bound of
    /// pending registrations it is held for a place (FramedServerOptions::registration_hold),
    /// and kBusy when the hold is off, full or over; then `attempt` gets the Pending registration
    /// and returns the owner's verdict. On kRegistered the deadline ends and the slot among the
    /// unregistered is freed (the frame gate starts counting).
    net::awaitable<Registration> register_peer(
        std::function<Verdict()> check, std::function<net::awaitable<Verdict>(Pending)> attempt);

    /// The frame gate: a frame of a registered peer against its rate (always kAdmit without
    /// FramedServerOptions::frame_rate or before registration). Call from the serving strand.
    qkdn::net::FloodGuard::Verdict admit_frame(
        std::chrono::steady_clock::time_point now = std::chrono::steady_clock::now());
    /// Frames refused so far (0 without a frame gate), and when the peer may send again.
    [[nodiscard]] std::uint64_t frames_refused() const;
    [[nodiscard]] std::chrono::milliseconds frame_retry_after(
        std::chrono::steady_clock::time_point now = std::chrono::steady_clock::now()) const;

   private:
    friend class FramedServer;
    std::uint64_t id_ = 0;
    net::any_io_executor executor_;
    std::shared_ptr<void> server_;  // the server's state, kept alive by its connections
    std::mutex mu_;
    std::function<void()> closer_;
    bool close_requested_ = false;
    qkdn::net::ConnectionGate::Ticket slot_;
    std::unique_ptr<net::steady_timer> deadline_;
    std::atomic<bool> registered_{false};
    bool registering_ = false;
    std::chrono::steady_clock::time_point accepted_at_{};
    std::shared_ptr<void> held_;  // under mu_: the registration waiting for a place, if any
    std::optional<qkdn::net::FloodGuard> flood_;
    void registered_now();
  };

  struct Hooks {
    /// Serves one connection on conn->executor(); returns when the connection ended.
    std::function<net::awaitable<void>(std::shared_ptr<Connection>, net::ip::tcp::socket)> serve;
    /// A newcomer refused (gate full), or an unregistered connection evicted to make room.
    std::function<void()> refused;
    /// A connection accepted and admitted past the gate (before serve starts).
    std::function<void()> accepted;
    /// An unregistered connection passed its registration deadline (it is closed next).
    std::function<void(const std::shared_ptr<Connection>&)> deadline_passed;
    /// One log line (accept failures; rate-limited by AcceptBackoff).
    std::function<void(const std::string&)> log;
    /// Runs a root coroutine (the accept loop, each serve). Empty: co_spawn that logs an
    /// exception through `log`. The agent counts them for its drain.
    std::function<void(const net::any_io_executor&, net::awaitable<void>, std::string)> spawn;
  };

  /// `io`: the executor of the io_context the server runs on.
  FramedServer(net::any_io_executor io, FramedServerOptions options, Hooks hooks);
  ~FramedServer();
  FramedServer(const FramedServer&) = delete;
  FramedServer& operator=(const FramedServer&) = delete;

  /// Opens, binds and listens (reuse_address). Returns the bound endpoint (port 0 = a free
  /// port), or sets `ec` (the caller words the error: each process has its own).
  net::ip::tcp::endpoint listen(const net::ip::tcp::endpoint& at, boost::system::error_code& ec);
  /// Starts the accept loop (after listen).
  void start();
  /// Stops accepting and closes every connection; `drained` runs (on any thread) once the accept
  /// loop has ended and every serve has returned. Idempotent: a second call's `drained` is not
  /// called. Without start(), `drained` runs at once.
  void stop(std::function<void()> drained = {});

  /// Connections whose serve has not returned yet.
  [[nodiscard]] std::size_t active() const;
  /// Registrations held (waiting for a place among the pending ones) now, and in all.
  [[nodiscard]] std::size_t held() const;
  [[nodiscard]] std::uint64_t held_total() const;

  struct State;

 private:
  std::shared_ptr<State> state_;
};

}  // namespace qkdn::southbound
