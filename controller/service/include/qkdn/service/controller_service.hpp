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

#include "qkdn/controller/alarms.hpp"
#include "qkdn/controller/network.hpp"
#include "qkdn/controller/topology.hpp"
#include "qkdn/southbound/ck_channel.hpp"

namespace qkdn::service {

namespace net = boost::asio;
namespace ck = southbound::ck;

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
  int threads = 2;
  controller::TopologyDoc topology;
  /// One line per event, without a trailing newline. Empty = write to stderr. Called from any
  /// thread (serialized by the service).
  std::function<void(std::string_view line)> log;
  /// Network events, called on the core strand after each mutation (tests, later rerouting).
  std::function<void(const std::vector<controller::NetworkEvent>&)> on_events;
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
  std::int64_t connections_active = 0;
  std::uint64_t registrations = 0;
  std::uint64_t km_errors_received = 0;
  std::uint64_t handler_failures = 0;
  std::uint64_t max_connection_buffer = 0;
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
};

class ControllerService;

/// Routing and key supply (0x1401, 0x1403, 0x1406, unsolicited responses...) plug in here.
/// handle() runs on the session's strand; it may hop to the core strand with
/// ControllerService::core_executor() (co_spawn ... use_awaitable). It must answer the command
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
  /// This controller start's epoch (unix time in ms at construction).
  [[nodiscard]] std::int64_t controller_epoch() const { return epoch_; }
  [[nodiscard]] const ServiceOptions& options() const { return options_; }
  /// Writes one log line.
  void log(std::string_view line);

 private:
  struct Impl;
  friend struct Impl;
  ServiceOptions options_;
  std::int64_t epoch_;
  SystemClock clock_;
  controller::Network network_;
  controller::AlarmTable alarms_;
  std::unique_ptr<Impl> impl_;
  std::uint16_t port_ = 0;
};

}  // namespace qkdn::service
