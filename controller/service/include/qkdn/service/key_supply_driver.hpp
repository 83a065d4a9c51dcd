// The key-supply driver (ck-protocol.md clauses 4 and 6): 0x1401 next hops, 0x1403 key relays
// (per hop 0x410A / 0x140B, 0x410C / 0x140D, then 0x4104 / 0x1405 to the source), late 0x1405,
// 0x1406 sessions (0x4108 / 0x1409, then 0x4107). It routes through the rerouting driver, changes
// the RelayTable only through the controller facade's report path (CoreChanges), which hands
// every RelayTable output back to carry_out(), and writes its ledger batches, relay records,
// sessions and accounting through the store writer (write-ahead: a 0x4104 goes out only once
// everything queued before it is stored). Core strand only; exchanges that wait for a KM run in
// coroutines spawned on the core strand.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>

#include "qkdn/controller/clock.hpp"
#include "qkdn/controller/network.hpp"
#include "qkdn/controller/relays.hpp"
#include "qkdn/controller/rerouting.hpp"
#include "qkdn/controller/sessions.hpp"
#include "qkdn/controller/store.hpp"
#include "qkdn/service/controller_service.hpp"
#include "qkdn/service/driver_ports.hpp"
#include "qkdn/service/metrics.hpp"
#include "qkdn/service/reroute_driver.hpp"

namespace qkdn::service {

class CoreChanges;

class KeySupplyDriver {
 public:
  struct Options {
    std::size_t route_alternatives = 3;  ///< ServiceOptions::route_alternatives
    std::size_t max_relays_per_km = 64;  ///< ServiceOptions::max_relays_per_km
  };
  /// Runs fn(changes) on the core strand through the controller facade's report path, which
  /// forwards the outputs of the changes (RelayTable outputs to carry_out()) itself.
  using Report = std::function<void(const std::function<void(CoreChanges&)>&)>;
  /// Everything the driver uses; every reference outlives the driver.
  struct Deps {
    const controller::Network& network;    ///< destinations, SAEs
    controller::ReroutingEngine& engine;   ///< routes and policies (outputs through rerouting)
    controller::SessionTable& sessions;    ///< 0x1406 sessions and their accounting
    const controller::RelayTable& relays;  ///< read only: changes go through `report`
    RerouteDriver& rerouting;              ///< event batches, snapshot, engine outputs
    const Clock& clock;                    ///< the controller's (injected) clock
    Random& random;                        ///< IDs of refused sessions
    Metrics& metrics;                      ///< relays, reservations, route computations
    const KmChannels& channels;            ///< 0x410A, 0x410C, 0x4104, 0x41EA, 0x4108
    StoreWriter& writer;                   ///< ledger, relay records, sessions, accounting
    const std::int64_t& epoch;             ///< controller_epoch of every command
    Options options;
    Report report;
    std::function<void(std::string_view)> log;
    /// qkdn_ck_protocol_errors_total{reason} (a refused bad_request).
    std::function<void(std::string_view)> protocol_error;
    /// qkdn_ck_refused_total{reason} (relays_per_km).
    std::function<void(std::string_view)> refused;
    /// The service is shutting down: new relays and sessions are refused.
    std::function<bool()> stopping;
    /// The completion of a root coroutine named `what` (logs and counts an exception).
    std::function<std::function<void(std::exception_ptr)>(std::string what)> completion;
  };
  /// Accounting buckets kept in memory when no store is configured.
  using AccountingBuckets =
      std::map<std::tuple<SysTime, std::string, std::string>, controller::AccountingRecord>;

  /// `core` is the core strand: the KM exchanges run there.
  KeySupplyDriver(net::any_io_executor core, Deps deps);
  KeySupplyDriver(const KeySupplyDriver&) = delete;
  KeySupplyDriver& operator=(const KeySupplyDriver&) = delete;

  /// 0x1401: answers 0x4102 with next hops (or Error) on ctx.channel.
  void on_next_hop(const CommandContext& ctx, const ck::KeyRelayNextHopRequest& req);
  /// 0x1403: starts a relay (or answers Error on ctx.channel).
  void on_relay_notification(const CommandContext& ctx, const ck::KeyRelayRequestNotification& n);
  /// A 0x1405 after its 0x4104 exchange timed out.
  void on_late_relay_response(const CommandContext& ctx, const ck::KeyRelayResponse& r);
  /// 0x1406: creates, stores and negotiates a session; answers 0x4107 once stored.
  void on_session_request(const CommandContext& ctx, const ck::SessionCreationRequest& req);
  /// Carries out a RelayTable output: metrics, finished relays (sessions, accounting, Error
  /// answers), then its ledger batches and records through the writer, then its Ck commands.
  /// The facade calls it for every report that changed the RelayTable.
  void carry_out(controller::RelayOutput out);
  /// Ends the sessions that expired at `now` (stored).
  void expire_sessions(SysTime now);
  /// Recounts the relays in progress per source KM from the table (max_relays_per_km).
  void recount_relays();
  /// 0x41EA to a hop's near KM (docs/ck-extensions.md "Key release"), at once, not waiting for
  /// the store: a release only gives keys back or destroys them. For a KM not connected (the
  /// restore's after a restart or a takeover, or a KM that dropped) they wait until it registers
  /// (send_deferred_releases), else it would hold those keys until its own leases ran out.
  void send_releases(std::vector<controller::ReleaseCommand> release);
  /// Sends the releases that waited for `km_id` (core strand, after its register response).
  void send_deferred_releases(const std::string& km_id);
  /// Accounting kept without a store (read by the API; core strand).
  [[nodiscard]] const AccountingBuckets& accounting() const { return accounting_mem_; }

 private:
  void relay_finished(const controller::Relay& r, WriteGroup& group);
  void send_relay_commands(std::vector<controller::ReserveCommand> reserve,
                           std::vector<controller::AllocateCommand> allocate,
                           std::vector<controller::RelayRequestCommand> requests);
  net::awaitable<void> reserve_hop(controller::ReserveCommand cmd);
  net::awaitable<void> allocate_hop(controller::AllocateCommand cmd);
  net::awaitable<void> request_relay(controller::RelayRequestCommand cmd);
  net::awaitable<void> release_hop(controller::ReleaseCommand cmd);
  net::awaitable<void> session_exchange(CommandContext ctx, controller::Session session);
  /// The destination KM named by a 0x1401/0x1403 (by KMA or application); empty with a Ck
  /// error code and message when there is none.
  std::string resolve_destination(const std::optional<std::string>& kma,
                                  const std::optional<std::string>& application,
                                  std::string& error_code, std::string& error_message) const;
  controller::RouteOptions route_options(const std::string& src, const std::string& dst,
                                         std::uint64_t demand_bits) const;
  void persist_session(const controller::Session& s, WriteGroup& group);
  [[nodiscard]] SysTime now() const { return d_.clock.now(); }

  net::any_io_executor core_;
  Deps d_;
  /// Key relays in progress by source KM (max_relays_per_km).
  std::map<std::string, std::size_t> relays_by_km_;
  /// (source KM, 0x1403 MessageID) of relays that serve a relay instruction: their keys are
  /// counted by the instruction's keys_relayed, not again when the relay finishes. Bounded.
  std::set<std::pair<std::string, std::uint32_t>> instruction_relays_;
  /// Without a store: the accounting buckets.
  AccountingBuckets accounting_mem_;
  /// Releases waiting for their KM's registration; at most kMaxDeferredReleases per KM (beyond,
  /// the oldest go: the KM's leases remain).
  std::map<std::string, std::vector<controller::ReleaseCommand>> deferred_releases_;
  static constexpr std::size_t kMaxDeferredReleases = 4096;
};

}  // namespace qkdn::service
