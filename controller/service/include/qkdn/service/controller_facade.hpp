// The controller facade: the one way an operator write (the northbound write handlers) and a
// KM's report over Ck (registration, status, alarm, applications, disconnect) change the core. One
// write at a time: plan on the core strand (read, validate, nothing changes), store (when a store
// is configured), apply on the core strand through CoreChanges, whose typed changes keep the core's
// outputs; the facade forwards those outputs (network events to the rerouting engine, alarms and
// metrics; rerouting outputs as 0x41E5 and alarms) itself, so no caller can forget to.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>

#include "qkdn/controller/alarms.hpp"
#include "qkdn/controller/network.hpp"
#include "qkdn/controller/rerouting.hpp"
#include "qkdn/controller/store.hpp"
#include "qkdn/service/controller_service.hpp"

namespace qkdn::service {

class RerouteDriver;
class KeySupplyDriver;

/// A store operation of a write (runs on a database thread); empty: nothing to store.
using StoreOp = std::function<void(controller::Store&)>;

/// The changes one write may make to the core, each typed (core strand only, inside
/// ControllerFacade::write). Every change keeps the core's outputs; the facade forwards them
/// once the write's apply step returns. Reads go through the const accessors: the core cannot
/// be changed behind the facade's back from here.
class CoreChanges {
 public:
  explicit CoreChanges(Core& core) : core_(core) {}
  CoreChanges(const CoreChanges&) = delete;
  CoreChanges& operator=(const CoreChanges&) = delete;

  [[nodiscard]] const controller::Network& network() const { return core_.network; }
  [[nodiscard]] const controller::AlarmTable& alarms() const { return core_.alarms; }
  [[nodiscard]] const controller::ReroutingEngine& rerouting() const { return core_.rerouting; }
  [[nodiscard]] const Clock& clock() const { return core_.clock; }

  /// Replaces the topology (Network::apply_topology); validated by the write's plan.
  void apply_topology(const controller::TopologyDoc& doc);
  /// A link's admin state and threshold overrides. nullopt: unchanged; an engaged empty
  /// optional clears the override (the network-wide threshold applies again).
  struct LinkConfig {
    std::optional<controller::AdminState> admin;
    std::optional<std::optional<double>> qber_threshold;
    std::optional<std::optional<std::uint64_t>> pool_floor_bits;
    [[nodiscard]] bool any() const { return admin || qber_threshold || pool_floor_bits; }
  };
  /// Applies `config` to `link_id` (which must exist). Threshold changes re-evaluate the link's
  /// pairs as an operator action.
  void configure_link(const std::string& link_id, const LinkConfig& config);
  /// Network-wide thresholds and QBER hysteresis; every link is re-evaluated.
  void set_thresholds(const controller::Thresholds& thresholds);

  /// ReroutingEngine configuration (rerouting.hpp); each throws as the engine does.
  void pin_route(controller::PinnedRouteRecord record);
  void unpin_route(const std::string& src, const std::string& dst);
  void set_policy(const controller::ReroutingPolicy& policy);
  void set_pair_policy(const std::string& src, const std::string& dst,
                       const controller::ReroutingPolicy& policy);
  void clear_pair_policy(const std::string& src, const std::string& dst);
  /// Returns the schedule's ID.
  std::string add_schedule(controller::ScheduleRecord record);
  void remove_schedule(const std::string& schedule_id);
  void set_sae_constraints(const controller::SaeConstraintRecord& record);
  void clear_sae_constraints(const std::string& src_sae, const std::string& dst_sae);

  /// AlarmTable::acknowledge / clear.
  const controller::Alarm& acknowledge_alarm(std::uint64_t id, const std::string& actor);
  const controller::Alarm* clear_alarm(const std::string& type, const std::string& resource);

  // ---- what KMs report over Ck (ControllerFacade::report); Network's contracts ----
  /// Network::register_km. Its events are forwarded batched (see ControllerFacade::report).
  void register_km(const controller::Registration& registration,
                   std::vector<std::string>* unknown_links,
                   std::vector<controller::RefusedClaim>* refused);
  /// Network::apply_status. Batched like a registration.
  void apply_status(const std::string& km_id, const std::vector<controller::LinkReport>& links);
  /// Network::apply_alarm.
  void apply_alarm(const std::string& km_id, const std::string& alarm, const std::string& link_id,
                   const std::string& severity, double value);
  /// Network::update_applications: the refused claims.
  std::vector<controller::RefusedClaim> update_applications(
      const std::string& km_id, const std::vector<std::string>& attached,
      const std::vector<std::string>& detached);
  /// Network::disconnect_km (the KM's Ck session ended).
  void disconnect_km(const std::string& km_id);
  /// Network::touch_km (last_seen; no events).
  void touch_km(const std::string& km_id);

  // ---- relay results (RelayTable's contracts, at the clock's now) ----
  // Each keeps the table's output (Ck commands, ledger batches, records, finished relays); the
  // facade hands it to the key-supply driver (KeySupplyDriver::carry_out), so no relay step can
  // leave its output undone.
  /// RelayTable::start (throws InvalidArgument for a bad request; nothing changed then).
  void start_relay(const controller::RelayRequest& request);
  void relay_reserved(const std::string& relay_id, std::size_t hop,
                      const std::vector<std::string>& key_ids);
  void relay_reservation_failed(const std::string& relay_id, std::size_t hop,
                                const std::string& ck_error, const std::string& message);
  void relay_allocated(const std::string& relay_id, std::size_t hop);
  void relay_allocation_failed(const std::string& relay_id, std::size_t hop,
                               const std::string& ck_error, const std::string& message);
  void relay_response(const std::string& relay_id, bool ok, const std::string& reason);
  /// RelayTable::on_km_disconnected.
  void relays_km_disconnected(const std::string& km_id);
  /// RelayTable::expire.
  void expire_relays();

 private:
  friend class ControllerFacade;
  Core& core_;
  std::vector<controller::NetworkEvent> events_;
  /// Registrations and status reports: events go to observers at once and to the rerouting
  /// engine once per core pass (a storm of 2,000 registrations costs one engine run).
  std::vector<controller::NetworkEvent> batched_;
  bool batched_called_ = false;   ///< a report without events still refreshes the pools
  bool network_changed_ = false;  ///< the topology was applied (forwarded even without events)
  controller::ReroutingOutput rerouting_;
  bool rerouting_changed_ = false;
  controller::RelayOutput relay_;
};

/// Where the outputs of a KM report go (ControllerFacade::report_to): the rerouting driver takes
/// the network events (batched or at once), the key-supply driver the RelayTable outputs.
struct CoreOutputs {
  RerouteDriver& rerouting;
  KeySupplyDriver& key_supply;
};

/// Operator writes (northbound) through one pipeline. Owned by the ControllerService
/// (ControllerService::facade()); coroutine functions may be called from any executor.
class ControllerFacade {
 public:
  /// `service` outlives the facade (the service owns it).
  explicit ControllerFacade(ControllerService& service);
  ~ControllerFacade();
  ControllerFacade(const ControllerFacade&) = delete;
  ControllerFacade& operator=(const ControllerFacade&) = delete;

  /// One write, serialized with every other write (so what plan validated is what apply
  /// changes):
  ///  1. plan(Core&) on the core strand: reads, checks preconditions (If-Match), validates and
  ///     returns the plan; throws to refuse (nothing changed). It must not change the core.
  ///  2. store(const Plan&) names what to store; it runs on a database thread when a store is
  ///     configured (Unavailable: the write is refused, nothing changed) and is skipped without
  ///     one.
  ///  3. apply(CoreChanges&, Plan&) on the core strand makes the changes and returns the
  ///     result; it cannot fail for input reasons (plan validated the same input).
  ///  4. The facade forwards the outputs of those changes, then returns apply's result.
  template <class PlanFn, class StoreFn, class ApplyFn>
  auto write(PlanFn plan, StoreFn store, ApplyFn apply) -> net::awaitable<
      std::invoke_result_t<ApplyFn, CoreChanges&, std::invoke_result_t<PlanFn, Core&>&>> {
    using Plan = std::invoke_result_t<PlanFn, Core&>;
    auto turn_op = acquire();
    auto turn = co_await std::move(turn_op);
    auto plan_op = service_.on_core(std::move(plan));
    Plan p = co_await std::move(plan_op);
    StoreOp op = store(std::as_const(p));
    if (op) {
      auto persist_op = persist(std::move(op));
      co_await std::move(persist_op);
    }
    auto apply_op = service_.on_core([this, &p, apply = std::move(apply)](Core& c) mutable {
      CoreChanges changes(c);
      auto result = apply(changes, p);
      forward(changes);
      return result;
    });
    co_return co_await std::move(apply_op);
  }

  /// A KM's report over Ck (called on the core strand by the Ck session handlers): fn(changes)
  /// makes the changes and returns its result; the facade then forwards the outputs, as for a
  /// write. No write turn and no store step: reports are applied in the order they reach the
  /// core, and what of them must be stored goes through the service's writer.
  template <class Fn>
  auto report(Fn fn) -> std::invoke_result_t<Fn, CoreChanges&> {
    return report_to(service_.core_refs(), outputs(), std::move(fn));
  }

  /// report() on given core objects and drivers (core strand of those objects): what the
  /// service's report does, for the drivers' unit tests. When fn throws, nothing is forwarded.
  template <class Fn>
  static auto report_to(Core core, const CoreOutputs& outputs, Fn fn)
      -> std::invoke_result_t<Fn, CoreChanges&> {
    CoreChanges changes(core);
    if constexpr (std::is_void_v<std::invoke_result_t<Fn, CoreChanges&>>) {
      fn(changes);
      forward_report(changes, outputs);
    } else {
      auto result = fn(changes);
      forward_report(changes, outputs);
      return result;
    }
  }

 private:
  class Turn;
  /// Waits for this write's turn (one write at a time); the turn ends with the returned object.
  net::awaitable<std::shared_ptr<Turn>> acquire();
  /// Stores with retries (a no-op without a configured store).
  net::awaitable<void> persist(StoreOp op);
  /// Hands the outputs kept by `changes` to the service (core strand).
  void forward(CoreChanges& changes);
  /// forward() for a report: the batched events through the rerouting driver's per-pass batch,
  /// the other events at once, then the RelayTable outputs through the key-supply driver.
  static void forward_report(CoreChanges& changes, const CoreOutputs& outputs);
  /// The service's drivers.
  [[nodiscard]] CoreOutputs outputs();

  struct Lock;
  ControllerService& service_;
  std::unique_ptr<Lock> lock_;
};

}  // namespace qkdn::service
