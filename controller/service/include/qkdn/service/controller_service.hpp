// The controller's service layer: one io_context run by N threads, the core (Network, AlarmTable)
// on one strand, and the Ck server (one CkChannel and one session coroutine per KM connection).
// Sessions hop to the core strand to apply a command; nothing else touches domain state.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "qkdn/base/log.hpp"
#include "qkdn/controller/alarms.hpp"
#include "qkdn/controller/ledger.hpp"
#include "qkdn/controller/network.hpp"
#include "qkdn/controller/relays.hpp"
#include "qkdn/controller/rerouting.hpp"
#include "qkdn/controller/sessions.hpp"
#include "qkdn/controller/store.hpp"
#include "qkdn/controller/topology.hpp"
#include "qkdn/net/run_on.hpp"
#include "qkdn/southbound/ck_channel.hpp"

namespace qkdn::service {

namespace net = boost::asio;
namespace ck = southbound::ck;

class Leadership;

/// Everything the service needs to start. Validated by ControllerService's constructor.
struct ServiceOptions {
  std::string controller_id = "qkdn-controller";
  std::string listen_host = "0.0.0.0";
  std::uint16_t listen_port = 4164;  ///< 0 = any free port (see ControllerService::port)
  bool insecure_ck = false;          ///< plain TCP instead of mutual TLS (labs and tests only)
  southbound::TlsFiles tls;          ///< required unless insecure_ck
  std::chrono::milliseconds heartbeat_interval{1000};
  std::chrono::milliseconds status_interval{1000};
  std::chrono::milliseconds request_timeout{5000};
  std::chrono::milliseconds read_timeout{10000};
  /// Ck connections that have not registered yet (TLS handshakes included). A newcomer beyond
  /// it closes the one that has waited longest if that one has waited unregistered_min_age, else
  /// the newcomer is closed (pre-authentication exhaustion: a flood of slow peers cannot lock
  /// out a KM that registers promptly, and a storm of genuine KMs is not aborted half-way).
  std::size_t max_unregistered = 1024;
  std::chrono::milliseconds unregistered_min_age{1000};
  std::chrono::milliseconds handshake_timeout{5000};  ///< the TLS handshake
  /// A connection must register (handshake and a successful Register) within this, else it is
  /// closed: a peer trickling bytes cannot hold a slot longer.
  std::chrono::milliseconds register_timeout{10000};
  // ---- backpressure (issue 12) and per-KM limits (issue 13); docs/RELIABILITY.md ----
  /// Registrations admitted and waiting for the core strand. Beyond it a Register is answered
  /// "NG: busy" with retry_after_ms (the time to serve those queued) and the connection closed.
  std::size_t max_pending_registrations = 64;
  /// Beyond max_pending_registrations a Register is held (first come, first served) until a
  /// place frees instead of being answered busy at once: at most this many at a time, each at
  /// most 2 heartbeat periods (before the idle timeout of 3) and 90 % of register_timeout (then
  /// "NG: busy" as above). A held connection leaves the
  /// max_unregistered slots to newcomers. 0 = no hold (busy at once).
  std::size_t max_held_registrations = 4096;
  /// Commands (0x1401, 0x1403, 0x1406, alarms, application updates, late answers) admitted from
  /// all KMs and waiting for or running on the core strand. Beyond it: Error / NG busy.
  std::size_t max_pending_commands = 4096;
  /// Of those, from one KM. Beyond it that KM is answered busy (the others are not).
  std::size_t max_pending_per_km = 64;
  /// Key relays (0x1403) one KM may have in progress at once; beyond it: Error busy.
  std::size_t max_relays_per_km = 256;
  /// Frames per second (and burst) a registered KM may send, responses to the controller's own
  /// requests excepted. Frames over the rate are refused with Error busy (never reach the core);
  /// a KM refused more than max_refused_per_s times within a second is disconnected.
  double max_frames_per_s = 5000;
  double frame_burst = 5000;
  std::uint32_t max_refused_per_s = 1000;
  int threads = 2;
  controller::TopologyDoc topology;
  /// One line per event, without a trailing newline. Empty = write to stderr. Called from any
  /// thread (serialized by the service).
  std::function<void(std::string_view line)> log;
  /// Network events, called on the core strand after each mutation (tests, later rerouting).
  std::function<void(const std::vector<controller::NetworkEvent>&)> on_events;
  /// Where state is kept, chosen by `main` (db::pg_store_factory for --store-dsn; tests pass
  /// controller::memory_store_factory). Empty = no persistence (state lives in this process
  /// only; audit and accounting in bounded in-memory rings).
  controller::StoreFactory store;
  /// Database threads (each owns one store from `store`).
  int store_threads = 2;
  /// Wraps the store of each database thread (not the one used at start-up): instrumentation,
  /// or fault injection in tests. Null: each thread uses the factory's store directly.
  std::function<std::unique_ptr<controller::Store>(std::unique_ptr<controller::Store>)>
      store_decorator;
  /// With a store that already holds a topology, `topology` replaces it (else the stored one
  /// wins and `topology` is ignored, with a log line saying so).
  bool topology_override = false;
  /// Time and randomness of the core (leases, deadlines, session/relay/instruction IDs).
  /// Null: SystemClock and OsRandom (the daemon). Tests inject ManualClock / SeededRandom; the
  /// core calls them on its strand only. The core does not read this clock's wall time directly:
  /// it runs on a MonotonicWallClock over it (wall time at start + monotonic time since), so a
  /// wall-clock step moves no lease, deadline or timeout. The epoch (below) reads its wall time.
  std::shared_ptr<const Clock> clock;
  std::shared_ptr<Random> random;
  /// Key-supply tuning (relays.hpp, ledger.hpp, sessions.hpp).
  controller::LedgerConfig ledger;
  controller::RelayConfig relay;
  controller::SessionConfig session;
  /// Routes tried per 0x1403 (the standing route first, then alternatives), and next hops
  /// answered per 0x1401. >= 1.
  std::size_t route_alternatives = 3;
  /// Relay routing policy sent to every KM in its register response (0x41E2 relay_routing,
  /// docs/ck-extensions.md "Relay routing"): false = centralized (0x1403, the controller reserves
  /// every hop), true = distributed (Q.4164 7.1, each KM asks 0x1401 for its next hop).
  bool distributed_relay = false;
  /// Network-wide rerouting policy at start when the store holds none (default: manual).
  std::optional<controller::ReroutingPolicy> policy;
  /// Without a store: a file holding the last controller_epoch, so that the epoch grows across
  /// restarts even when the wall clock went back (each start writes max(last + 1, wall ms) to it,
  /// durably, before serving). Empty: the epoch is the wall clock in ms at start (a restart with
  /// the wall clock behind is fenced by agents that saw the earlier epoch). With a store the
  /// database sequence of migration 0005 gives the epoch and this is ignored.
  std::string epoch_file;
  // ---- high availability (issue 17, docs/high-availability.md) ----
  /// The controller epoch of this service, instead of the store's sequence or the epoch file:
  /// the leadership term (Leadership) of a controller among several, or the leader's term as
  /// last seen for a standby's service (which commands no KM).
  std::optional<std::int64_t> epoch_override;
  /// The leadership of this process (health, metrics); null: a single controller.
  std::shared_ptr<const Leadership> leadership;
  /// A standby: the refusal hook of registrations. When it returns a reason, every Register is
  /// answered "NG: <reason>" (e.g. "not_leader: 10.0.0.2:4164", docs/ck-extensions.md) and the
  /// connection closed after the answer. Null: registrations go on as usual.
  std::function<std::optional<std::string>()> refuse_registration;
  /// A standby's service: its state is the database's as of this time (API responses say how
  /// old, X-Qkdn-State-Age; writes are refused with 503 not_leader by the API).
  std::optional<std::chrono::steady_clock::time_point> standby_since;
};

class Metrics;

/// The next controller epoch without a store: max(the epoch in `path` + 1, floor) (floor: the
/// wall clock in ms), written back to `path` durably (temporary file, fsync, rename, fsync of the
/// directory) before it returns. A missing file counts as epoch 0. Throws InvalidArgument with
/// one clear line when the file cannot be read or written or does not hold one integer.
std::int64_t next_epoch_from_file(const std::string& path, std::int64_t floor);

/// The core objects. Touch them only on the core strand (ControllerService::on_core).
struct Core {
  controller::Network& network;
  controller::AlarmTable& alarms;
  controller::ReroutingEngine& rerouting;
  controller::SessionTable& sessions;
  controller::ReservationLedger& ledger;
  controller::RelayTable& relays;
  const Clock& clock;
  Random& random;
};

/// Counters of the Ck server, exported as metrics later (DESIGN.md section 7). Thread-safe.
struct CkCounters {
  static constexpr std::size_t kCodes = 256;  ///< indexed by the code's low byte
  /// Messages by direction; index = low byte of the command code (high byte gives direction).
  std::array<std::atomic<std::uint64_t>, kCodes> inbound{};
  std::array<std::atomic<std::uint64_t>, kCodes> outbound{};
  /// Inbound codes whose high byte is not 0x14 (wrong direction or unknown range).
  std::atomic<std::uint64_t> inbound_other{0};
  std::atomic<std::uint64_t> connections_accepted{0};
  /// Unregistered connections closed because max_unregistered were waiting (a newcomer, or the
  /// oldest waiting one to make room).
  std::atomic<std::uint64_t> connections_refused{0};
  std::atomic<std::int64_t> connections_active{0};
  std::atomic<std::uint64_t> registrations{0};
  std::atomic<std::uint64_t> km_errors_received{0};
  std::atomic<std::uint64_t> handler_failures{0};  ///< root coroutines that ended by exception
  /// Largest per-connection read buffer ever allocated, bytes (bound: 65545).
  std::atomic<std::uint64_t> max_connection_buffer{0};
};

/// A copy of the counters at one moment.
struct CountersSnapshot {
  std::map<std::string, std::uint64_t> inbound;          ///< command name (or 0xNNNN) -> count
  std::map<std::string, std::uint64_t> outbound;         ///< command name -> count
  std::map<std::string, std::uint64_t> protocol_errors;  ///< reason -> count
  std::uint64_t connections_accepted = 0;
  std::uint64_t connections_refused = 0;
  std::int64_t connections_active = 0;
  std::uint64_t registrations = 0;
  std::uint64_t km_errors_received = 0;
  std::uint64_t handler_failures = 0;
  std::uint64_t max_connection_buffer = 0;
  /// Backpressure: refusals by reason (see Metrics::ck_refused) and the admission queues now.
  std::map<std::string, std::uint64_t> refused;
  std::size_t pending_registrations = 0;
  std::size_t held_registrations = 0;          ///< Registers held for a place now
  std::uint64_t held_registrations_total = 0;  ///< Registers ever held
  /// Core passes that applied waiting status reports and liveness touches (all KMs' at once).
  std::uint64_t status_passes = 0;
  std::size_t pending_statuses = 0;
  std::size_t pending_commands = 0;
  std::size_t pending_high_water = 0;  ///< most registrations + commands ever waiting at once
};

/// A copy of the live state (for tests and health checks).
struct StateSnapshot {
  std::vector<controller::Km> kms;
  std::vector<controller::Link> links;
  std::vector<controller::Alarm> alarms;
  std::size_t sessions = 0;  ///< registered Ck sessions
};

/// One inbound command handed to a CommandHandler.
struct CommandContext {
  std::string km_id;                               ///< the registered KM that sent it
  std::shared_ptr<southbound::CkChannel> channel;  ///< reply with channel->send(msg, message_id)
  std::uint32_t message_id = 0;
  std::int64_t controller_epoch = 0;
  /// Backpressure tickets of this command (its place in the admission queues): released when
  /// the last copy of the context is dropped, i.e. once the core is done with the command.
  std::shared_ptr<const void> admission;
};

class ControllerService;
class ControllerFacade;

/// Routing and key supply (0x1401, 0x1403, 0x1406, unsolicited responses...) plug in here
/// (make_key_supply_handler() is the controller's own).
/// handle() runs on the session's strand; it may hop to the core strand with
/// ControllerService::core_executor() (qkdn::net::run_on). It must answer the command
/// itself (or decide not to), must not throw for bad input, and must not await a request() on
/// the same channel (the session reads its next frame only after handle() returns: spawn such
/// work instead).
class CommandHandler {
 public:
  virtual ~CommandHandler() = default;
  /// True when this handler serves `command`.
  [[nodiscard]] virtual bool handles(std::uint16_t command) const = 0;
  /// Handles a decoded, registered, right-direction command.
  virtual net::awaitable<void> handle(ControllerService& service, CommandContext ctx,
                                      ck::Message message) = 0;
};

/// The controller's routing and key-supply handler (ck-protocol.md clauses 4 and 6): 0x1401 next
/// hops, 0x1403 key relay (0x410A / 0x410C per hop, then 0x4104), late 0x1405, 0x1406 sessions
/// (0x4108 / 0x1409 / 0x4107) and late 0x1409. Install with set_command_handler() before
/// start(); the daemon always does. Stateless: every state lives in the service's core.
std::shared_ptr<CommandHandler> make_key_supply_handler();

/// The controller daemon's service. Construct, start(), ..., stop() (or destroy).
class ControllerService {
 public:
  /// Validates options, loads the topology into the core and the TLS files. Throws
  /// InvalidArgument with one clear line on bad configuration.
  explicit ControllerService(ServiceOptions options);
  /// Stops (drains) if still running.
  ~ControllerService();
  ControllerService(const ControllerService&) = delete;
  ControllerService& operator=(const ControllerService&) = delete;

  /// Installs the routing / key-supply handler; call before start(). Without one, those commands
  /// are answered with Error no_route "not implemented".
  void set_command_handler(std::shared_ptr<CommandHandler> handler);

  /// Binds the Ck listener, starts the threads and the accept loop. Returns the bound endpoint.
  /// Throws InvalidArgument when the address cannot be bound.
  net::ip::tcp::endpoint start();
  /// Bound Ck port (after start()).
  [[nodiscard]] std::uint16_t port() const { return port_; }
  /// Graceful stop: closes the listener and every Ck channel, waits for all session coroutines
  /// to finish (bounded), then stops the threads. Idempotent; call from a non-service thread.
  void stop();

  /// Stops commanding KMs at once (the leadership was lost): closes the Ck listener and every Ck
  /// session without waiting (stop() still drains and ends the threads). Any thread; returns
  /// without waiting for the closes.
  void stand_down();
  /// Raises `spec` on the core strand soon (stored, counted, logged like any alarm). Any thread.
  void raise_alarm_soon(controller::AlarmSpec spec);

  /// Copies of the live state, taken on the core strand. Blocks: call from a non-service thread.
  StateSnapshot snapshot_state();
  /// Same, from a coroutine on any executor.
  net::awaitable<StateSnapshot> async_snapshot_state();
  /// Counter values now.
  [[nodiscard]] CountersSnapshot counters() const;

  /// The core strand (Network and AlarmTable live there).
  [[nodiscard]] net::any_io_executor core_executor() const;
  /// The core. Touch only on the core strand.
  controller::Network& network() { return network_; }
  controller::AlarmTable& alarms() { return alarms_; }
  /// The channel of a registered KM, or nullptr. Core strand only.
  [[nodiscard]] std::shared_ptr<southbound::CkChannel> channel_of(const std::string& km_id) const;
  /// This controller start's epoch (ck-protocol.md clause 2): grows with every start; from the
  /// store's sequence, else the epoch file, else the wall clock in ms (ServiceOptions::epoch_file).
  [[nodiscard]] std::int64_t controller_epoch() const { return epoch_; }
  [[nodiscard]] const ServiceOptions& options() const { return options_; }
  /// Writes one log line: to ServiceOptions::log when set, else through the process-wide logger
  /// (qkdn/base/log.hpp) with the line's "component: " prefix ("ck: ", "store: ", "api: ") as
  /// its component, at level info (warn when the message starts with "WARNING: ", error with
  /// "ERROR: ").
  void log(std::string_view line);
  /// Writes one log line at `level` (same routing as log(line)).
  void log(base::LogLevel level, std::string_view line);

  // ---- integration API used by the northbound layer (all coroutine functions may be called
  // from any executor; they hop to the right place and back) ----

  /// Runs f(Core&) on the core strand and returns its result; exceptions propagate to the caller.
  /// Backpressure: at most 256 such calls wait for the core at once; beyond that it throws
  /// Unavailable "controller busy" (the API answers 503 with Retry-After).
  template <class F>
  net::awaitable<std::invoke_result_t<F, Core&>> on_core(F f) {
    using R = std::invoke_result_t<F, Core&>;
    auto admitted = admit_core_request();
    auto work = [](ControllerService* self, F fn) -> net::awaitable<R> {
      Core core = self->core_refs();
      co_return fn(core);
    }(this, std::move(f));
    auto op = qkdn::net::run_on(core_executor(), std::move(work));
    co_return co_await std::move(op);
  }
  /// The core objects. Core strand only.
  Core core_refs();
  /// A place among the on_core() calls waiting for the core (released with the pointer); throws
  /// Unavailable when 256 are waiting.
  std::shared_ptr<const void> admit_core_request();

  /// Operator writes (validate, store, apply, forward the core's outputs) go through the facade;
  /// it lives as long as the service.
  ControllerFacade& facade() { return *facade_; }
  /// Applies a rerouting-engine output: sends instructions (0x41E5), raises/clears alarms,
  /// counts reroutes by reason, logs reroute events. Core strand only. The facade calls it for
  /// operator writes; tests call it to stand in for the engine.
  void apply_rerouting_output(const controller::ReroutingOutput& output);

  /// The route the rerouting engine gives from `src` to `dst` inside this QKDN (standing route
  /// first; the snapshot refreshed, its output applied), or nullopt. Core strand only. The
  /// interworking relay (interworking_relay.hpp) routes its side of a Kxi-1 relay with it.
  std::optional<controller::Route> route_inside(const std::string& src, const std::string& dst);

  /// True when a store was configured (ServiceOptions::store).
  [[nodiscard]] bool store_configured() const;
  /// True while the last store operation (or health probe) succeeded; false without a store.
  /// While down, a probe runs every second and flips it back once PostgreSQL answers; new key
  /// relays (0x1403) and sessions (0x1406) are refused with Error / NG internal "store
  /// unavailable", and queued ledger writes wait (they are retried until they commit).
  [[nodiscard]] bool store_up() const;
  /// Runs op on a database thread. Throws Unavailable when no store is configured or it is down
  /// (the caller answers 503), Conflict / InvalidArgument from the store as is. `retry_safe`:
  /// the operation may be retried after a broken connection (reads, idempotent writes).
  net::awaitable<void> persist(std::function<void(controller::Store&)> op, bool retry_safe);
  /// Appends an audit record without waiting (queued to the store; failures are logged and
  /// counted, never thrown). Without a store, kept in a bounded in-memory ring.
  void audit(controller::AuditRecord record);
  /// Audit records after `after_id` (store if configured, else the in-memory ring).
  net::awaitable<std::vector<controller::AuditRecord>> audit_page(std::int64_t after_id,
                                                                  std::size_t limit);
  /// Accounting rows (store if configured, else in-memory buckets).
  net::awaitable<std::vector<controller::AccountingRecord>> accounting(SysTime from, SysTime to,
                                                                       std::string sae_id);
  /// The Prometheus metrics of this controller.
  Metrics& metrics();
  /// Refreshes the gauges from the live state (on the core strand) and returns the text
  /// exposition (what GET /metrics serves).
  net::awaitable<std::string> metrics_text();
  /// The io_context (for servers that share the service's threads, e.g. northbound).
  net::io_context& io_context();
  /// The routing snapshot the core built last (for the rerouting engine), published for readers
  /// off the core strand (any thread; null before the first). It is current for routing when its
  /// structure_version() equals network_structure_version(); only pools and rates may then be as
  /// old as the engine's own (refreshed within its coalescing interval).
  [[nodiscard]] std::shared_ptr<const controller::TopologySnapshot> published_snapshot() const;
  /// The Network's structure_version() now (any thread).
  [[nodiscard]] std::uint64_t network_structure_version() const;

 private:
  friend class KeySupplyHandler;
  friend class ControllerFacade;
  struct Impl;
  friend struct Impl;
  /// After a change of the Network (admin state, topology, thresholds), hands the resulting
  /// events to everything that reacts: rerouting engine (reroutes, instructions sent as 0x41E5),
  /// alarms, metrics, Ck connections of KMs that vanished. Core strand only; through the facade.
  void after_network_events(const std::vector<controller::NetworkEvent>& events);
  ServiceOptions options_;
  std::int64_t epoch_ = 0;
  std::shared_ptr<const MonotonicWallClock> clock_;
  controller::Network network_;
  controller::AlarmTable alarms_;
  std::unique_ptr<Impl> impl_;
  std::unique_ptr<ControllerFacade> facade_;  ///< destroyed before impl_ (it uses the service)
  std::uint16_t port_ = 0;
};

}  // namespace qkdn::service
