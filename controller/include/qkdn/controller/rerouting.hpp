// Rerouting policy engine (Y.3803 8.2.5; DESIGN.md section 3, "Rerouting modes" and "Triggers").
//
// The engine decides, per KM pair (src -> dst, directional), which route key relay takes (its
// "standing" route) and which relay instructions (Ck 0x41E5) the KMs should hold. It reacts to
// network events (QBER alarm, link down, KM disconnect, pool low, operator changes), to relay
// statistics and to the passage of time (tick). It does no I/O: every mutating call returns a
// ReroutingOutput listing instructions to send and withdraw, alarms to raise and clear, and
// reroute events; the service layer applies them (Ck, AlarmTable, metrics, audit log).
//
// Single-threaded by contract: the service calls it from the controller strand only. Time comes
// from the injected Clock (and tick's argument), instruction IDs from the injected Random.
//
// Modes, per network or overridden per KM pair, switchable at run time:
// - manual: the operator's pinned route is used while usable (every hop has a usable link in the
//   snapshot). When it breaks the engine raises alarm pinned_route_broken (resource "src->dst")
//   and, with param pinned_fallback = 1 (default), falls back to a computed route; with
//   pinned_fallback = 0 it refuses (route_for answers no route). The alarm clears, and the pin is
//   taken again, as soon as the pin is usable. A manual pair without a pin uses computed routes.
//   Manual mode emits no relay instructions.
// - fixed_rate: standing per-interval instructions from link generation rates. Each fixed-rate
//   pair wants demand_keys keys per interval_s (0 = as many as its fair share allows); link l can
//   carry rate_share * key_rate_bps(l) (rate_share of the network-wide policy). Shares are
//   max-min fair (progressive filling): all pairs grow together, a pair stops when its demand is
//   met or a link on its route is full. Re-planned when a link's rate has moved by more than
//   replan_threshold (relative) from the rates of the current plan, when a fixed-rate pair's
//   route changes, and on policy changes. Fixed-rate pairs: every known pair (overridden,
//   pinned, scheduled, routed through route_for, or with relay statistics) whose effective mode
//   is fixed_rate.
// - traffic_adaptive: keys pre-positioned by recent relay statistics. Keys relayed per pair are
//   counted per interval_s (a grid aligned to the Unix epoch); at each closed interval the
//   demand estimate becomes alpha * count + (1 - alpha) * estimate (EWMA; intervals without
//   relays decay it). Statistics of a pair with no relay in the last window_s are forgotten.
//   Pairs whose estimate exceeds demand_floor get a per-interval instruction for
//   headroom * estimate keys, scaled down proportionally where links (rate_share * rate)
//   cannot carry all demands. An instruction is re-sent only when its route changes or its
//   number of keys moves by more than replan_threshold (relative).
// - scheduled: operator-defined windows (ScheduleRecord). At tick(now) with
//   now >= not_before - lead_s a one-shot instruction with not_before / not_after is emitted;
//   windows with not_after <= now are dropped. Schedules act only while the pair's effective
//   mode is scheduled.
// The fixed_rate and traffic_adaptive plans each use the link budget independently.
//
// Standing routes are sticky: a pair keeps its route while every link stays usable, so pairs not
// touched by a trigger are never rerouted. A change of an existing standing route is a reroute,
// counted by reason and reported as a RerouteEvent (including a change to "no route"; the first
// route of a pair is not a reroute). Returning to a repaired pinned route counts as "operator".
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "qkdn/controller/alarms.hpp"
#include "qkdn/controller/clock.hpp"
#include "qkdn/controller/key_limits.hpp"
#include "qkdn/controller/network.hpp"
#include "qkdn/controller/routing.hpp"
#include "qkdn/controller/store.hpp"

namespace qkdn::controller {

/// Rerouting methods of Y.3803 8.2.5 a)-d).
enum class RerouteMode { kManual, kFixedRate, kTrafficAdaptive, kScheduled };

/// "manual" | "fixed_rate" | "traffic_adaptive" | "scheduled".
std::string_view to_string(RerouteMode m) noexcept;
/// Parses the names of to_string(RerouteMode); throws InvalidArgument ("unknown rerouting mode").
RerouteMode parse_reroute_mode(std::string_view s);

/// Why a standing route changed (label `reason` of qkdn_reroutes_total).
enum class RerouteReason {
  kQber,          ///< "qber": QBER alarm on a link of the route
  kLinkDown,      ///< "link_down"
  kKmDisconnect,  ///< "km_disconnect": a KM of the route lost its Ck connection
  kPoolLow,       ///< "pool_low": a link's key pool fell below its floor (or the demand)
  kOperator,      ///< "operator": admin state, policy, pin, topology change; pin restored
  kRateChange,    ///< "rate_change": fixed-rate re-plan after link rates moved
  kSchedule,      ///< "schedule": a scheduled window started on a better route
};
inline constexpr std::size_t kRerouteReasonCount = 7;
/// Every reason, in enum order (to create metric series up front).
inline constexpr std::array<RerouteReason, kRerouteReasonCount> kAllRerouteReasons = {
    RerouteReason::kQber,     RerouteReason::kLinkDown, RerouteReason::kKmDisconnect,
    RerouteReason::kPoolLow,  RerouteReason::kOperator, RerouteReason::kRateChange,
    RerouteReason::kSchedule,
};
/// "qber" | "link_down" | "km_disconnect" | "pool_low" | "operator" | "rate_change" | "schedule".
std::string_view to_string(RerouteReason r) noexcept;

/// Parameters of a rerouting policy. Persisted as PolicyRecord::params under these names
/// (metric as a number: 0 key_aware, 1 widest_shortest, 2 hop_count). Every value must be finite.
struct ReroutingParams {
  RouteMetric metric = RouteMetric::kKeyAware;  ///< "metric": how routes are computed
  double interval_s = 60;         ///< planning interval of per-interval instructions, > 0
  double key_size_bits = 256;     ///< key size of instructions, integer >= 1
  double rate_share = 0.5;        ///< share of a link's rate relay plans may use, (0, 1]
  double replan_threshold = 0.2;  ///< relative change that triggers a re-plan, >= 0
  double demand_keys = 0;         ///< fixed_rate: wanted keys per interval, >= 0 (0 = fair share)
  double alpha = 0.3;             ///< traffic_adaptive: EWMA weight of the last interval, (0, 1]
  double window_s = 600;          ///< traffic_adaptive: statistics older than this are dropped, > 0
  double demand_floor = 1;        ///< traffic_adaptive: keys per interval below which nothing moves
  double headroom = 1;            ///< traffic_adaptive: instruction keys = headroom * EWMA, >= 0
  double lead_s = 0;              ///< scheduled: emit this long before not_before, >= 0
  double max_hops = 0;            ///< longest route in hops, integer >= 0 (0 = unlimited)
  double demand_bits = 0;         ///< key drawn per hop; links below floor + demand are excluded
  double pinned_fallback = 1;     ///< manual: 1 fall back to computed routes, 0 refuse
  /// Trust: most intermediate KMs a route may cross, integer >= -1 (-1 = unlimited, 0 = direct
  /// links only).
  double max_intermediates = -1;
  /// Trust: lowest trust level an intermediate KM may have, integer in [0, 100] (0 = any).
  double min_trust_level = 0;
};

/// A rerouting policy: mode, parameters and the tags its routes avoid.
struct ReroutingPolicy {
  RerouteMode mode = RerouteMode::kManual;
  ReroutingParams params;
  /// Trust: no intermediate KM of a route may carry one of these tags (unique, valid IDs).
  std::vector<std::string> avoid_tags;
};

/// The trust constraints a policy puts on its routes (max_intermediates, min_trust_level,
/// avoid_tags).
TrustConstraints trust_constraints(const ReroutingPolicy& policy);

/// Checks a policy; throws InvalidArgument naming the first bad parameter (e.g. "parameter
/// 'alpha' must be in (0, 1], got -1") or avoided tag.
void validate_policy(const ReroutingPolicy& policy);
/// The parameters as a name -> value map (PolicyRecord::params), every parameter included.
std::map<std::string, double> params_to_map(const ReroutingParams& params);
/// Parameters from a map: absent names keep their defaults. Throws InvalidArgument for an
/// unknown name or a bad value (naming it).
ReroutingParams params_from_map(const std::map<std::string, double>& values);
/// Policy <-> persistence record. src/dst empty = network-wide. from_record throws
/// InvalidArgument for an unknown mode, a bad parameter or only one of src/dst set.
PolicyRecord policy_to_record(const ReroutingPolicy& policy, const std::string& src,
                              const std::string& dst);
ReroutingPolicy policy_from_record(const PolicyRecord& record);

/// A relay instruction (Ck 0x41E5) for the KM at the start of its route.
struct RelayInstruction {
  std::string instruction_id;                  ///< UUIDv4 from the engine's Random
  RerouteMode mode = RerouteMode::kFixedRate;  ///< the plan that made it
  std::string schedule_id;                     ///< scheduled: the window it serves
  std::string source_km;                       ///< the KM it is sent to (route start)
  std::string destination_kma_id;              ///< route end
  std::vector<std::string> transit_kma_ids;    ///< in hop order, excluding both ends
  std::vector<std::string> links;              ///< the link of each hop (for the extension)
  std::uint64_t number_of_keys = 0;            ///< per interval (interval_s > 0) or in the window
  std::uint64_t key_size_bits = 256;
  /// fixed_rate / traffic_adaptive: the instruction repeats every interval_s (not a 0x41E5
  /// field: the service carries it in `extension`, e.g. {"interval_s": 60}). 0 = one shot.
  double interval_s = 0;
  std::optional<SysTime> not_before;  ///< scheduled mode
  std::optional<SysTime> not_after;   ///< scheduled mode
  SysTime issued_at{};
};

/// A change of a pair's standing route.
struct RerouteEvent {
  SysTime time{};
  std::string src;
  std::string dst;
  RerouteReason reason = RerouteReason::kOperator;
  std::optional<Route> old_route;
  std::optional<Route> new_route;  ///< nullopt: no usable route now
};

/// An alarm to clear on the AlarmTable.
struct AlarmClear {
  std::string type;
  std::string resource;
};

/// What one engine call asks the service to do, in order of occurrence within each list.
struct ReroutingOutput {
  std::vector<RelayInstruction> send;  ///< new instructions: send 0x41E5 to source_km
  /// Instructions no longer wanted (superseded by one in `send`, or dropped). Ck has no withdraw
  /// command: the service tells the KM by its own means (e.g. a 0x41E5 with the same route and
  /// number_of_keys 0 naming the old ID in `extension`) and forgets them.
  std::vector<RelayInstruction> withdraw;
  std::vector<std::string> expired;  ///< scheduled instructions past not_after (no action)
  std::vector<AlarmSpec> raise_alarms;
  std::vector<AlarmClear> clear_alarms;
  std::vector<RerouteEvent> reroutes;  ///< for qkdn_reroutes_total{reason} and the audit log

  [[nodiscard]] bool empty() const noexcept;
  /// Appends every list of `other`.
  void append(ReroutingOutput&& other);
};

/// Applies the alarm lists of `out` to `table` (raise, then clear).
void apply_alarms(const ReroutingOutput& out, AlarmTable& table);

/// Alarm resource of a pinned route: "src->dst".
std::string pinned_route_resource(const std::string& src, const std::string& dst);

/// Answer of route_for.
struct RouteAnswer {
  std::optional<Route> route;  ///< nullopt: no usable route (or a broken pin without fallback)
  bool pinned = false;         ///< the route is the operator's pin
  ReroutingOutput output;      ///< effects of the call (reroute, alarms, re-planned instructions)
  /// Why there is no route (set when route is nullopt): code "no_usable_path",
  /// "trust_constraints" or "pinned_route_broken", and a sentence for people.
  std::optional<NoRouteExplanation> refusal;
};

/// SaeConstraintRecord <-> TrustConstraints. from_record throws InvalidArgument for a negative
/// max_intermediates or invalid constraints.
TrustConstraints trust_from_record(const SaeConstraintRecord& rec);
SaeConstraintRecord trust_to_record(const std::string& src_sae, const std::string& dst_sae,
                                    const TrustConstraints& c, SysTime updated_at);

/// A pair's standing route (northbound listing).
struct StandingRoute {
  std::string src;
  std::string dst;
  RerouteMode mode = RerouteMode::kManual;  ///< effective mode
  bool pinned = false;
  std::optional<Route> route;
};

/// The engine's configuration as persistence records (export / import).
struct ReroutingConfig {
  std::vector<PolicyRecord> policies;  ///< the network-wide policy first, then overrides
  std::vector<ScheduleRecord> schedules;
  std::vector<PinnedRouteRecord> pinned_routes;
  std::vector<SaeConstraintRecord> sae_constraints{};
};

/// The rerouting policy engine. See the file comment for the modes and triggers.
class ReroutingEngine {
 public:
  /// `clock` and `random` must outlive the engine. The network-wide policy starts as manual with
  /// default parameters (no pins: computed routes, no instructions).
  ReroutingEngine(const Clock& clock, Random& random);

  // --- Network state -------------------------------------------------------------------------

  /// Takes a new snapshot after status reports (no events). Re-plans fixed_rate when a link rate
  /// moved beyond replan_threshold (reroutes with reason rate_change). Throws InvalidArgument on
  /// a null snapshot.
  ReroutingOutput on_snapshot(std::shared_ptr<const TopologySnapshot> snapshot);
  /// Reacts to network events; `snapshot` is the state after them. A trigger (kQberHigh,
  /// kLinkDown, kKmDisconnected, kPoolLow, kAdminChanged) recomputes only the pairs whose
  /// standing route uses the link / KM, avoiding it; kTopologyReplaced re-checks every pair.
  /// Restoring events (kLinkUp, kQberNormal, kPoolOk, kKmConnected, kAdminChanged) retake
  /// repaired pins. A pool_low link stays avoided until kPoolOk (snapshots need not show it).
  /// Then re-plans instructions of rerouted pairs. Throws InvalidArgument on a null snapshot.
  ReroutingOutput on_events(const std::vector<NetworkEvent>& events,
                            std::shared_ptr<const TopologySnapshot> snapshot);
  /// The snapshot in use (null before the first one).
  [[nodiscard]] const std::shared_ptr<const TopologySnapshot>& snapshot() const {
    return snapshot_;
  }

  // --- Relay path ------------------------------------------------------------------------------

  /// The route key relay from src to dst takes now, under the pair's effective mode: the pin if
  /// manual and usable, else the standing route while usable, else a newly computed one (which
  /// becomes the standing route; replacing an unusable one is a reroute whose reason comes from
  /// why it broke). Throws Unavailable before the first snapshot, NotFound for an unknown KM.
  RouteAnswer route_for(const std::string& src, const std::string& dst);
  /// route_for for a relay serving the SAE pair src_sae -> dst_sae (either may be empty when
  /// unknown). Without constraints for that SAE pair this is route_for. With them, the pair's
  /// standing route is used when it meets the policy's constraints made stricter by the SAE
  /// pair's, else the best route that does (which does not become the standing route); none is
  /// a refusal that says why. Same errors as route_for.
  RouteAnswer route_for_saes(const std::string& src, const std::string& dst,
                             const std::string& src_sae, const std::string& dst_sae);
  /// The trust constraints a relay from src to dst for the SAE pair must meet (policy, then the
  /// SAE pair's on top).
  [[nodiscard]] TrustConstraints trust_for(const std::string& src, const std::string& dst,
                                           const std::string& src_sae,
                                           const std::string& dst_sae) const;
  /// The standing route of a pair without re-evaluating it (nullopt if none).
  [[nodiscard]] std::optional<Route> standing_route(const std::string& src,
                                                    const std::string& dst) const;
  /// Every pair with state, in (src, dst) order.
  [[nodiscard]] std::vector<StandingRoute> standing_routes() const;
  /// The current relay instructions, by instruction_id.
  [[nodiscard]] std::vector<RelayInstruction> instructions() const;

  // --- Statistics and time ---------------------------------------------------------------------

  /// Counts `keys` relayed from src to dst at `time` (traffic_adaptive statistics; recorded in
  /// every mode). Throws InvalidArgument for an invalid KM ID or src == dst.
  void record_relay(const std::string& src, const std::string& dst, std::uint64_t keys,
                    SysTime time);
  /// Advances the engine to `now`: closes statistics intervals (EWMA) and re-plans
  /// traffic_adaptive, emits scheduled instructions whose window opens and drops expired windows.
  ReroutingOutput tick(SysTime now);
  /// The pair's EWMA demand estimate in keys per interval, as of the last closed interval.
  [[nodiscard]] double demand_estimate(const std::string& src, const std::string& dst) const;
  /// Reroutes counted for a reason since construction.
  [[nodiscard]] std::uint64_t reroute_count(RerouteReason reason) const noexcept;

  // --- Configuration (operator changes) --------------------------------------------------------

  /// Sets the network-wide policy and re-plans everything (reroutes: "operator").
  /// Throws InvalidArgument (validate_policy).
  ReroutingOutput set_policy(const ReroutingPolicy& policy);
  /// Overrides the policy of one pair (src -> dst) and re-plans. Throws InvalidArgument for bad
  /// IDs, src == dst or a bad policy.
  ReroutingOutput set_pair_policy(const std::string& src, const std::string& dst,
                                  const ReroutingPolicy& policy);
  /// Removes a pair override (no-op if none) and re-plans.
  ReroutingOutput clear_pair_policy(const std::string& src, const std::string& dst);
  [[nodiscard]] const ReroutingPolicy& policy() const noexcept { return policy_; }
  /// The pair's override, if any.
  [[nodiscard]] std::optional<ReroutingPolicy> pair_policy(const std::string& src,
                                                           const std::string& dst) const;
  /// The override if any, else the network-wide policy.
  [[nodiscard]] const ReroutingPolicy& effective_policy(const std::string& src,
                                                        const std::string& dst) const;

  /// Pins (or replaces) the route of record.src_km -> record.dst_km. kms runs src..dst without
  /// repeats; links is empty or one entry per hop, where "" means any link between the two KMs.
  /// Throws InvalidArgument for a malformed route, a KM unknown to the snapshot or a hop with no
  /// such link (the snapshot must be set: else Unavailable). Re-evaluates the pair ("operator").
  ReroutingOutput pin_route(PinnedRouteRecord record);
  /// Removes a pin (clearing its alarm) and re-evaluates the pair. Throws NotFound.
  ReroutingOutput unpin_route(const std::string& src, const std::string& dst);
  [[nodiscard]] std::vector<PinnedRouteRecord> pinned_routes() const;
  /// What pin_route checks, without pinning (the one validation of a pin: writes call it before
  /// they store the pin). Throws InvalidArgument naming what is wrong, Unavailable without a
  /// snapshot.
  void check_pin(const PinnedRouteRecord& record) const { check_pin_record(record, true); }

  /// Adds a scheduled window; returns its schedule_id (a new UUID when empty). Emission happens
  /// at tick. Throws InvalidArgument for not_after <= not_before, number_of_keys or
  /// key_size_bits < 1, bad or unknown KMs (unknown: checked when a snapshot is set), and
  /// Conflict for a duplicate schedule_id.
  std::string add_schedule(ScheduleRecord record);
  /// What add_schedule checks of the record itself and against the topology (when a snapshot is
  /// set), without adding it (the one validation of a schedule: writes call it before they store
  /// it). Throws InvalidArgument.
  void check_schedule(const ScheduleRecord& record) const {
    check_schedule_record(record, snapshot_ != nullptr);
  }
  /// Removes a window, withdrawing its instruction if emitted. Throws NotFound.
  ReroutingOutput remove_schedule(const std::string& schedule_id);
  [[nodiscard]] std::vector<ScheduleRecord> schedules() const;

  /// Sets (or replaces) the trust constraints of an SAE pair. Throws InvalidArgument for invalid
  /// SAE IDs, src_sae == dst_sae or invalid constraints. Takes effect at the next relay.
  void set_sae_constraints(const SaeConstraintRecord& record);
  /// Removes them. Throws NotFound.
  void clear_sae_constraints(const std::string& src_sae, const std::string& dst_sae);
  [[nodiscard]] std::optional<SaeConstraintRecord> sae_constraints(
      const std::string& src_sae, const std::string& dst_sae) const;
  /// Every SAE pair with constraints, in (src_sae, dst_sae) order.
  [[nodiscard]] std::vector<SaeConstraintRecord> all_sae_constraints() const;

  /// The configuration as persistence records.
  [[nodiscard]] ReroutingConfig export_config() const;
  /// Replaces the whole configuration (all or nothing) and re-plans. Records are checked as by
  /// the setters, except that pins and schedules are not checked against the topology (a stored
  /// pin that no longer fits simply counts as broken). Throws InvalidArgument / Conflict.
  ReroutingOutput import_config(const ReroutingConfig& config);

 private:
  using PairKey = std::pair<std::string, std::string>;

  struct PairState {
    std::optional<Route> standing;
    bool on_pin = false;      // standing route is the pin
    bool pin_broken = false;  // pinned_route_broken raised
  };
  struct TrafficStats {
    std::int64_t interval_index = 0;  // grid index of the open interval
    double interval_s = 0;            // grid width the index refers to
    double count = 0;                 // keys relayed in the open interval
    double ewma = 0;
    SysTime last_relay{};
    bool closed = false;  // an interval closed since the plan last looked
  };
  struct Schedule {
    ScheduleRecord record;
    bool emitted = false;
  };
  struct Avoid {
    std::set<std::string> links;
    std::set<std::string> kms;
  };
  struct Desired {
    std::optional<Route> route;
    bool on_pin = false;
    bool pin_applies = false;  // manual mode and a pin exists
    bool pin_ok = false;
    std::string pin_problem;  // why the pin is unusable
    std::string pin_link;     // first unusable pinned link
  };

  void set_snapshot(std::shared_ptr<const TopologySnapshot> snapshot);
  const TopologySnapshot& snap() const;
  RouteOptions options_for(const ReroutingPolicy& policy, const PairKey& pair,
                           const Avoid& avoid) const;
  bool link_usable(const std::string& link_id, const std::string& a, const std::string& b,
                   const RouteOptions& options) const;
  bool route_usable(const Route& route, const RouteOptions& options) const;
  RerouteReason broken_reason(const Route& route, const RouteOptions& options) const;
  std::optional<Route> compute_route(const PairKey& pair, const RouteOptions& options) const;
  Desired check_pin(const PinnedRouteRecord& pin, const PairState& state,
                    const RouteOptions& options) const;
  Desired desired_route(const PairKey& pair, const PairState& state, const Avoid& avoid,
                        bool sticky) const;
  // reason nullopt: derived from why the standing route broke (or "operator" for a pin retaken).
  bool settle(const PairKey& pair, Desired desired, std::optional<RerouteReason> reason,
              ReroutingOutput& out);
  bool evaluate(const PairKey& pair, const Avoid& avoid, bool sticky,
                std::optional<RerouteReason> reason, ReroutingOutput& out);
  void reevaluate_all(std::optional<RerouteReason> reason, bool sticky, ReroutingOutput& out);
  void replan(ReroutingOutput& out);
  void plan_fixed_rate(bool fresh_routes, ReroutingOutput& out);
  void plan_adaptive(ReroutingOutput& out);
  void plan_scheduled(SysTime now, ReroutingOutput& out);
  bool check_rate_drift() const;
  static void roll_stats(TrafficStats& stats, const ReroutingParams& params, SysTime now);
  std::set<PairKey> known_pairs() const;
  const std::optional<Route>& ensure_route(const PairKey& pair, ReroutingOutput& out);
  void put_slot(const std::string& slot, std::optional<RelayInstruction> desired, double tolerance,
                ReroutingOutput& out);
  RelayInstruction make_instruction(RerouteMode mode, const Route& route, std::uint64_t keys,
                                    std::uint64_t key_size_bits, double interval_s);
  void note_dirty(const PairKey& pair);
  void check_pin_record(const PinnedRouteRecord& pin, bool against_topology) const;
  void check_schedule_record(const ScheduleRecord& rec, bool against_topology) const;

  const Clock* clock_;
  Random* random_;
  SysTime now_{};
  std::shared_ptr<const TopologySnapshot> snapshot_;
  std::map<PairKey, std::vector<std::size_t>> links_by_km_pair_;  // sorted KM pair -> links

  ReroutingPolicy policy_;
  std::map<PairKey, ReroutingPolicy> overrides_;
  std::map<PairKey, PinnedRouteRecord> pins_;
  std::map<PairKey, SaeConstraintRecord> sae_constraints_;  // by (src_sae, dst_sae)
  std::map<std::string, Schedule> schedules_;
  std::map<PairKey, TrafficStats> stats_;
  std::map<PairKey, PairState> pairs_;
  std::set<std::string> pool_low_links_;

  std::map<std::string, RelayInstruction> instructions_;  // by instruction_id
  std::map<std::string, std::string> slots_;              // plan slot -> instruction_id
  std::map<std::string, double> plan_rates_;              // link rates of the fixed-rate plan
  bool fixed_dirty_ = false;
  bool adaptive_dirty_ = false;
  std::set<PairKey> dirty_pairs_;  // standing route changed since the last replan

  std::array<std::uint64_t, kRerouteReasonCount> counts_{};
};

}  // namespace qkdn::controller
