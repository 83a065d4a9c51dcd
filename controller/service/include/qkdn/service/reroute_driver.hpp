// The rerouting driver: network events (KM and link faults, QBER alarms, drained pools), fresh
// topology snapshots and the periodic tick go to the rerouting engine; its outputs become relay
// instructions (0x41E5 to the source KM, withdrawals as the ck-extensions.md convention), alarms
// (raised/cleared in the AlarmTable and stored) and reroute metrics. Core strand only.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/steady_timer.hpp>

#include "qkdn/controller/alarms.hpp"
#include "qkdn/controller/clock.hpp"
#include "qkdn/controller/network.hpp"
#include "qkdn/controller/rerouting.hpp"
#include "qkdn/controller/routing.hpp"
#include "qkdn/service/driver_ports.hpp"
#include "qkdn/service/metrics.hpp"
#include "qkdn/southbound/ck_messages.hpp"

namespace qkdn::service {

namespace net = boost::asio;
namespace ck = southbound::ck;

class RerouteDriver {
 public:
  /// Everything the driver uses; every reference outlives the driver.
  struct Deps {
    const controller::Network& network;   ///< read for snapshots and the topology check
    controller::ReroutingEngine& engine;  ///< the engine it drives
    controller::AlarmTable& alarms;       ///< raise/clear from the engine's outputs
    const Clock& clock;                   ///< the controller's (injected) clock
    Metrics& metrics;                     ///< reroutes, snapshot builds
    const KmChannels& channels;           ///< 0x41E5 goes to the source KM's channel
    StoreWriter& writer;                  ///< alarms are stored
    const std::int64_t& epoch;            ///< controller_epoch of every command
    std::function<void(std::string_view)> log;
    /// Observers of network events (ServiceOptions::on_events); may be empty.
    std::function<void(const std::vector<controller::NetworkEvent>&)> emit;
    /// Runs after the engine saw a batch of events (the service ends the relays and connections
    /// of KMs that went away); may be empty.
    std::function<void(const std::vector<controller::NetworkEvent>&)> after_events;
    /// Each fresh snapshot, for readers off the core strand (the API's route queries); may be
    /// empty.
    std::function<void(std::shared_ptr<const controller::TopologySnapshot>)> published;
    /// Runs before the batched events go to the engine: the service applies the status reports
    /// still waiting for their batch, so whatever routes sees every report received so far; may
    /// be empty.
    std::function<void()> before_flush;
  };

  /// `core` is the core strand: the coalescing timers run there.
  RerouteDriver(const net::any_io_executor& core, Deps deps);
  RerouteDriver(const RerouteDriver&) = delete;
  RerouteDriver& operator=(const RerouteDriver&) = delete;

  /// Everything that reacts to a Network mutation: observers, then the engine (after the
  /// batched events still waiting, in order).
  void network_changed(const std::vector<controller::NetworkEvent>& events);
  /// Events of registrations and status reports: observers at once, the engine in batches at
  /// most once per coalescing interval (no events: only pools moved, the snapshot refresh is
  /// coalesced).
  void network_changed_soon(std::vector<controller::NetworkEvent> events);
  /// Hands the batched events to the engine now (whatever routes on its snapshot calls this).
  void flush_deferred_events();
  /// Marks the engine's snapshot stale and arms the coalescing timer.
  void schedule_snapshot();
  /// Hands a fresh snapshot to the engine now if pools moved since the last one.
  void refresh_snapshot_if_dirty();
  /// True when the coalescing interval since the last snapshot build has passed.
  [[nodiscard]] bool snapshot_refresh_due() const;
  /// A fresh snapshot of the Network (after the mutation that made it necessary).
  std::shared_ptr<const controller::TopologySnapshot> fresh_snapshot();
  /// Carries out an engine output: withdrawals and instructions (0x41E5), alarms, reroute
  /// metrics and log lines.
  void apply(const controller::ReroutingOutput& out);
  /// The engine's periodic work (schedules, re-evaluations) at `now`.
  void tick(SysTime now);
  /// Sends the standing instructions of a KM that (re-)registered.
  void resend_instructions(const std::string& km_id);
  /// A KM's 0x14E5 answer: keys relayed for an instruction count in the engine's statistics.
  void on_instruction_response(const std::string& km_id, const ck::RelayInstructionResponse& r);
  void raise_alarm(const controller::AlarmSpec& spec);
  void clear_alarm(std::string_view type, std::string_view resource);
  /// Cancels the coalescing timers; nothing is armed afterwards.
  void stop();

 private:
  struct SentInstruction {
    std::string src;
    std::string dst;
  };
  void emit(const std::vector<controller::NetworkEvent>& events);
  void react_to_events(const std::vector<controller::NetworkEvent>& events);
  void send_instruction(const controller::RelayInstruction& inst, bool withdraw);
  /// When the next snapshot build is due: `floor` after the last one, or `factor` times its cost
  /// if that is longer.
  [[nodiscard]] SteadyTime next_build(std::chrono::milliseconds floor, int factor) const;
  [[nodiscard]] SysTime now() const { return d_.clock.now(); }

  Deps d_;
  net::steady_timer snapshot_timer_;
  net::steady_timer deferred_timer_;
  bool stopped_ = false;
  bool snapshot_dirty_ = false;  ///< status reports changed pools since the engine's snapshot
  bool snapshot_armed_ = false;
  SteadyTime last_snapshot_{};
  SteadyTime::duration last_snapshot_cost_{};  ///< how long the last snapshot build took
  std::vector<controller::NetworkEvent> deferred_events_;
  bool deferred_armed_ = false;
  bool flushing_ = false;  ///< in before_flush (its reports add events: no second flush)
  std::map<std::string, SentInstruction> sent_instructions_;  // by instruction_id, bounded
  std::deque<std::string> sent_order_;
};

}  // namespace qkdn::service
