// Private state of ControllerService, shared by the service's translation units:
//   controller_service.cpp  Ck sessions on the shared southbound::FramedServer (which owns the
//                           accept loop, the registration gate and deadline, the frame gate)
//   core_wiring.cpp         the drivers built with their dependencies; the periodic tick
//   reroute_driver.cpp      RerouteDriver: network events -> rerouting engine -> 0x41E5, alarms
//   key_supply.cpp          KeySupplyDriver: 0x1401 / 0x1403 / 0x1406, the relay and session
//                           exchanges (relay results through the facade's report path)
//   persistence.cpp         PostgreSQL: start-up restore, ordered writer, probe, audit, accounting
//
// Threading: everything below "core strand" is touched only on `core`. Ck sessions run on their
// channel's strand and hop to `core` to apply a command. Blocking store calls run on the
// StorePool's threads; their results come back to `core`.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/steady_timer.hpp>

#include "qkdn/controller/error.hpp"
#include "qkdn/controller/routing.hpp"
#include "qkdn/db/store_pool.hpp"
#include "qkdn/net/limits.hpp"
#include "qkdn/net/listener.hpp"
#include "qkdn/service/controller_service.hpp"
#include "qkdn/service/driver_ports.hpp"
#include "qkdn/service/key_supply_driver.hpp"
#include "qkdn/service/metrics.hpp"
#include "qkdn/service/reroute_driver.hpp"
#include "qkdn/southbound/framed_server.hpp"

namespace qkdn::service {

using SteadyTime = std::chrono::steady_clock::time_point;
inline constexpr auto kUseTuple = net::as_tuple(net::use_awaitable);

/// "0x1403".
std::string hex_code(std::uint16_t code);
/// Command name for known codes, else hex.
std::string command_label(std::uint16_t code);
/// One line: newlines of library messages (libpq) become spaces.
std::string one_line(const std::string& text);
/// `text` with every "key ID <id>" of core messages reduced to "key ID <redacted>": key IDs are
/// never logged.
std::string without_key_ids(std::string text);
/// `text` with every UUID replaced by "<uuid>" (database messages about ledger rows).
std::string without_uuids(std::string text);

/// Outcome of a step run on the core strand: nullopt = done; else the project's Error, whose Ck
/// code (clause 3) is error_ck_code(const Error&) (ck::error() sets a finer one).
using CoreResult = std::optional<Error>;

/// The service's private state. It is the drivers' store writer and the registry of KM channels
/// they send on (driver_ports.hpp).
struct ControllerService::Impl final : StoreWriter, KmChannels {
  // One Ck connection, owned by its session coroutine; fields touched on the channel's strand.
  struct Session {
    std::uint64_t id = 0;
    std::shared_ptr<southbound::CkChannel> channel;
    /// The server's side of the connection: the slot among max_unregistered, the registration
    /// gate (one Register at a time, bounded pending registrations), the frame-rate gate.
    std::shared_ptr<southbound::FramedServer::Connection> conn;
    std::string km_id;  ///< set once registered
    bool registered = false;
    SteadyTime last_touch{};
    /// This KM's commands admitted and not yet done on the core (max_pending_per_km).
    std::shared_ptr<qkdn::net::AdmissionQueue> pending;
    // Status reports are coalesced: at most one per KM waits for the core, and a newer report
    // replaces a waiting one (latest wins; reports are periodic snapshots). Liveness (last_seen)
    // waits the same way. Both are applied for every KM at once, in one core pass per
    // kStatusBatch (Impl::status_batch). Channel strand and core strand: under status_mu.
    std::mutex status_mu;
    std::optional<ck::StatusReport> status_waiting;
    std::uint32_t status_message_id = 0;  ///< of status_waiting (an Error names it)
    bool touch_waiting = false;           ///< a frame arrived: last_seen to refresh
    bool in_batch = false;                ///< listed in Impl::status_batch
  };
  struct Registered {
    std::uint64_t session_id = 0;
    std::shared_ptr<southbound::CkChannel> channel;
  };

  explicit Impl(ControllerService& s);
  ~Impl() override;

  ControllerService& svc;
  // Admission queues (declared before ioc: handlers the io_context destroys may hold tickets).
  std::shared_ptr<qkdn::net::AdmissionQueue> registrations;
  std::shared_ptr<qkdn::net::AdmissionQueue> commands;
  std::shared_ptr<qkdn::net::AdmissionQueue> api_requests;  ///< on_core() calls waiting
  std::atomic<std::size_t> statuses_waiting{0};
  // The snapshot fresh_snapshot() built last, for readers off the core (published_snapshot()).
  mutable std::mutex published_mu;
  std::shared_ptr<const controller::TopologySnapshot> published;  // under published_mu
  void publish_snapshot(std::shared_ptr<const controller::TopologySnapshot> s);
  // Sessions with a status report or a liveness touch waiting for the core: applied all at once
  // in one core pass (apply_status_batch), at most one pass per kStatusBatch, instead of one
  // core pass per report and per heartbeat period of every KM.
  std::mutex batch_mu;
  std::vector<std::shared_ptr<Session>> status_batch;  // under batch_mu
  bool status_batch_armed = false;                     // under batch_mu
  std::atomic<std::uint64_t> status_passes{0};         ///< core passes that applied a batch
  mutable std::mutex refused_mu;                       // metrics only
  std::map<std::string, std::uint64_t, std::less<>> refusal_counts;
  net::io_context ioc;
  std::optional<net::executor_work_guard<net::io_context::executor_type>> work;
  net::any_io_executor core;
  /// Ck connections not registered yet (ServiceOptions::max_unregistered).
  std::unique_ptr<qkdn::net::ConnectionGate> unregistered;
  /// The Ck listener (accept loop, gates, deadline, drain); made by start().
  std::unique_ptr<southbound::FramedServer> server;
  /// Stops the server once (stand_down or stop, whichever comes first); the drain. Core strand.
  std::shared_future<void> stop_server();
  std::optional<std::shared_future<void>> server_stopped;
  std::unique_ptr<net::ssl::context> tls;
  std::vector<std::thread> threads;
  std::shared_ptr<CommandHandler> handler;
  CkCounters counters;
  mutable std::mutex errors_mu;  // metrics only, never domain state
  std::map<std::string, std::uint64_t, std::less<>> protocol_errors;
  std::mutex log_mu;
  bool started = false;
  bool stopped = false;
  std::unique_ptr<Metrics> metrics;

  // ---- core strand ----
  std::shared_ptr<Random> random;
  controller::ReroutingEngine engine;
  controller::SessionTable sessions;
  controller::ReservationLedger ledger;
  controller::RelayTable relays;
  std::map<std::string, Registered> registered;
  bool stopping = false;
  // The drivers (reroute_driver.hpp, key_supply_driver.hpp), built by the constructor with
  // their dependencies (core_wiring.cpp).
  std::unique_ptr<RerouteDriver> rerouting;
  std::unique_ptr<KeySupplyDriver> key_supply;
  // The periodic tick (engine, relays, sessions).
  net::steady_timer tick_timer;
  bool timers_stopped = false;
  // Without a store: the audit ring (accounting: KeySupplyDriver::accounting()).
  std::deque<controller::AuditRecord> audit_ring;
  std::int64_t next_audit_id = 1;

  // ---- store (writer state on the core strand) ----
  std::unique_ptr<db::StorePool> pool;
  controller::Store* startup_store = nullptr;  ///< during open_store only: writes go here
  std::atomic<bool> store_is_up{false};
  std::deque<WriteGroup> writes;
  std::size_t waited_for = 0;      ///< groups in `writes` without can_wait
  std::size_t write_progress = 0;  ///< ops of writes.front() already done
  bool group_commit = true;        ///< the store takes write_batch (false once it said no)
  std::size_t unbatched = 0;  ///< front groups to write one op at a time (after a failed batch)
  bool writer_running = false;
  bool writer_stop = false;
  net::steady_timer writer_wake;
  net::steady_timer probe_timer;
  bool probing = false;
  std::promise<void>* writes_drained = nullptr;

  // ---- helpers (controller_service.cpp) ----
  void count_protocol_error(std::string_view reason);
  void emit(const std::vector<controller::NetworkEvent>& events);
  std::function<void(std::exception_ptr)> completion(std::string what);
  void send_error(Session& s, std::string_view code, std::string message,
                  std::optional<std::uint32_t> about);
  /// Register NG; with `retry` (busy) it carries retry_after_ms and is counted as a refusal,
  /// not as a protocol error.
  void send_register_ng(Session& s, std::uint32_t id, std::string_view code, const std::string& why,
                        std::optional<std::chrono::milliseconds> retry = std::nullopt);
  /// The FramedServer hooks of the Ck listener.
  southbound::FramedServer::Hooks server_hooks();
  /// Serves one accepted connection (FramedServer::Hooks::serve): the CkChannel and its session.
  net::awaitable<void> serve(std::shared_ptr<southbound::FramedServer::Connection> conn,
                             net::ip::tcp::socket socket);
  net::awaitable<void> session_ended(std::shared_ptr<Session> s);
  net::awaitable<void> on_frame(std::shared_ptr<Session> s, ck::Frame frame);
  void touch(const std::shared_ptr<Session>& s);
  net::awaitable<void> on_register(std::shared_ptr<Session> s, std::uint32_t id, ck::Register reg);
  /// The registration's verdict from the core (FramedServer::Connection::register_peer).
  net::awaitable<southbound::FramedServer::Verdict> register_on_core(
      std::shared_ptr<Session> s, ck::Register reg, southbound::FramedServer::Pending pending,
      std::uint32_t message_id);
  net::awaitable<CoreResult> core_register(std::shared_ptr<Session> s, ck::Register reg,
                                           southbound::FramedServer::Pending pending,
                                           std::uint32_t message_id);
  net::awaitable<CoreResult> core_apply(std::string km_id, std::string remote, ck::Message message,
                                        std::shared_ptr<const void> admitted);
  /// A status report, alarm or applications update of `km_id`, applied to the core.
  CoreResult apply_km_message(const std::string& km_id, const std::string& remote,
                              ck::Message& message);
  /// Counts a backpressure refusal (qkdn_ck_refused_total{reason}).
  void count_refused(std::string_view reason);
  /// Error busy naming `about`, with "retry after <N> ms" at the end of the message.
  void send_busy(Session& s, std::uint16_t code, std::uint32_t about, const std::string& why,
                 std::chrono::milliseconds retry_after);
  /// The frame-rate check of a registered KM: false when the frame was refused (answered).
  bool admit_frame(const std::shared_ptr<Session>& s, const ck::Frame& frame);
  /// A place for one of `s`'s commands in the admission queues, or null (answered busy).
  std::shared_ptr<const void> admit_command(Session& s, std::uint16_t code,
                                            std::uint32_t message_id);
  /// Queues a status report for the core (coalesced per KM, see Session::status_waiting).
  void queue_status(const std::shared_ptr<Session>& s, ck::StatusReport report,
                    std::uint32_t message_id);
  /// Lists `s` in the status batch (caller set its status_waiting or touch_waiting) and arms the
  /// batch's core pass if none is due.
  void list_in_batch(const std::shared_ptr<Session>& s);
  /// The batch's core pass: every waiting status report and touch, one facade report.
  void apply_status_batch();
  net::steady_timer status_timer;
  /// A KM claimed SAEs the topology serves elsewhere (or not at all): one alarm
  /// sae_claim_refused per SAE (resource = the SAE), an audit record each, a warning line.
  void refuse_claims(const std::vector<controller::RefusedClaim>& refused, std::string_view via,
                     const std::string& remote);
  [[nodiscard]] SysTime now() const { return svc.clock_->now(); }

  // ---- core wiring (core_wiring.cpp); core strand ----
  /// Builds the drivers (constructor).
  void make_drivers();
  /// After the engine saw events: the relays of KMs that went away end; a KM that left the
  /// topology loses its Ck connection.
  void after_events(const std::vector<controller::NetworkEvent>& events);
  // StoreWriter and KmChannels (the drivers' ports).
  void submit(WriteGroup group) override { submit_writes(std::move(group)); }
  [[nodiscard]] bool configured() const override { return svc.store_configured(); }
  [[nodiscard]] bool up() const override { return svc.store_up(); }
  [[nodiscard]] std::shared_ptr<southbound::CkChannel> channel_of(
      const std::string& km_id) const override {
    return svc.channel_of(km_id);
  }
  void start_timers();
  void arm_tick();
  void on_tick();
  void stop_timers();

  // ---- persistence (persistence.cpp) ----
  /// Start-up (constructor thread, before the io threads run): connects, migrates, loads and
  /// restores the core, persists what restore changed, starts the pool. Throws Unavailable /
  /// InvalidArgument with one clear line.
  void open_store();
  /// Core state from a StoredState (topology chosen by the caller).
  void restore_core(const controller::StoredState& stored, controller::Store& store);
  /// Queues a write group (core strand). Without a store, runs `then` at once.
  void submit_writes(WriteGroup group);
  net::awaitable<void> writer_loop();
  /// Writes the queued groups (up to a bound) in one transaction (Store::write_batch).
  net::awaitable<void> commit_queued_groups();
  /// Marks the store down and waits until it is back (true) or shutdown gave up (false: the
  /// queued groups are dropped and counted).
  net::awaitable<bool> wait_for_store(const std::string& why);
  /// Pops n stored groups and runs their `then`s in order.
  void finish_front_groups(std::size_t n);
  /// Logs a write (or n writes) that failed for good and counts it
  /// (qkdn_store_write_failures_total).
  void write_failed(const std::string& line, std::uint64_t n = 1);
  void wake_writer();
  /// The store failed: store_up false, probe every second until it answers.
  void mark_store_down(const std::string& why);
  void arm_probe();
  /// Runs fn(Store&) on a database thread and returns its result (rethrows its exception).
  template <class R, class F>
  net::awaitable<R> on_pool(F fn) {
    // GCC 12 double-destroys temporaries created inside a co_await expression: build the
    // initiation and the awaitable as named locals first, then await.
    auto init = [this, fn = std::move(fn)](auto resume) mutable {
      auto ex = net::get_associated_executor(resume, ioc.get_executor());
      auto h = std::make_shared<decltype(resume)>(std::move(resume));
      pool->submit(std::move(fn), [h, ex](std::future<R> f) mutable {
        net::post(ex, [h, f = std::move(f)]() mutable { (*h)(std::move(f)); });
      });
    };
    auto op = net::async_initiate<decltype(net::use_awaitable), void(std::future<R>)>(
        std::move(init), net::use_awaitable);
    auto future = co_await std::move(op);
    co_return future.get();
  }
  void close_store();
};

}  // namespace qkdn::service
