// The controller facade (controller_facade.hpp): one pipeline for operator writes, typed core
// changes, and the forwarding of the core's outputs in one place.
#include "qkdn/service/controller_facade.hpp"

#include <boost/asio/experimental/concurrent_channel.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "qkdn/controller/error.hpp"
#include "qkdn/service/key_supply_driver.hpp"
#include "qkdn/service/reroute_driver.hpp"
#include "service_impl.hpp"

namespace qkdn::service {

using controller::NetworkEvent;

// ---- CoreChanges --------------------------------------------------------------------------------

void CoreChanges::apply_topology(const controller::TopologyDoc& doc) {
  auto events = core_.network.apply_topology(doc);
  events_.insert(events_.end(), events.begin(), events.end());
  network_changed_ = true;
}

void CoreChanges::configure_link(const std::string& link_id, const LinkConfig& config) {
  if (!config.any()) return;
  bool admin_event = false;
  if (config.admin) {
    auto ev = core_.network.set_admin(link_id, *config.admin);
    admin_event = !ev.empty();
    events_.insert(events_.end(), ev.begin(), ev.end());
  }
  if (config.qber_threshold || config.pool_floor_bits) {
    auto* l = core_.network.find_link_mut(link_id);
    if (l == nullptr) throw NotFound("link '" + link_id + "' not found");
    if (config.qber_threshold) l->qber_threshold = *config.qber_threshold;
    if (config.pool_floor_bits) l->pool_floor_bits = *config.pool_floor_bits;
    // Thresholds change what routing excludes: re-evaluate the link's pairs as an operator
    // action (the snapshot carries the new thresholds).
    if (!admin_event) events_.push_back({NetworkEvent::Kind::kAdminChanged, {}, link_id, 0});
  }
}

void CoreChanges::set_thresholds(const controller::Thresholds& thresholds) {
  core_.network.thresholds() = thresholds;
  core_.alarms.set_hysteresis(thresholds.qber_hysteresis);
  for (const auto& [id, l] : core_.network.links()) {
    events_.push_back({NetworkEvent::Kind::kAdminChanged, {}, id, 0});
  }
}

void CoreChanges::pin_route(controller::PinnedRouteRecord record) {
  rerouting_.append(core_.rerouting.pin_route(std::move(record)));
  rerouting_changed_ = true;
}

void CoreChanges::unpin_route(const std::string& src, const std::string& dst) {
  rerouting_.append(core_.rerouting.unpin_route(src, dst));
  rerouting_changed_ = true;
}

void CoreChanges::set_policy(const controller::ReroutingPolicy& policy) {
  rerouting_.append(core_.rerouting.set_policy(policy));
  rerouting_changed_ = true;
}

void CoreChanges::set_pair_policy(const std::string& src, const std::string& dst,
                                  const controller::ReroutingPolicy& policy) {
  rerouting_.append(core_.rerouting.set_pair_policy(src, dst, policy));
  rerouting_changed_ = true;
}

void CoreChanges::clear_pair_policy(const std::string& src, const std::string& dst) {
  rerouting_.append(core_.rerouting.clear_pair_policy(src, dst));
  rerouting_changed_ = true;
}

std::string CoreChanges::add_schedule(controller::ScheduleRecord record) {
  // Emission happens at the engine's tick: nothing to forward now.
  return core_.rerouting.add_schedule(std::move(record));
}

void CoreChanges::remove_schedule(const std::string& schedule_id) {
  rerouting_.append(core_.rerouting.remove_schedule(schedule_id));
  rerouting_changed_ = true;
}

void CoreChanges::set_sae_constraints(const controller::SaeConstraintRecord& record) {
  core_.rerouting.set_sae_constraints(record);  // takes effect at the next relay
}

void CoreChanges::clear_sae_constraints(const std::string& src_sae, const std::string& dst_sae) {
  core_.rerouting.clear_sae_constraints(src_sae, dst_sae);
}

const controller::Alarm& CoreChanges::acknowledge_alarm(std::uint64_t id,
                                                        const std::string& actor) {
  return core_.alarms.acknowledge(id, actor);
}

const controller::Alarm* CoreChanges::clear_alarm(const std::string& type,
                                                  const std::string& resource) {
  return core_.alarms.clear(type, resource);
}

void CoreChanges::register_km(const controller::Registration& registration,
                              std::vector<std::string>* unknown_links,
                              std::vector<controller::RefusedClaim>* refused) {
  auto events = core_.network.register_km(registration, unknown_links, refused);
  batched_.insert(batched_.end(), events.begin(), events.end());
  batched_called_ = true;
}

void CoreChanges::apply_status(const std::string& km_id,
                               const std::vector<controller::LinkReport>& links) {
  auto events = core_.network.apply_status(km_id, links);
  batched_.insert(batched_.end(), events.begin(), events.end());
  batched_called_ = true;
}

void CoreChanges::apply_alarm(const std::string& km_id, const std::string& alarm,
                              const std::string& link_id, const std::string& severity,
                              double value) {
  // Batched like registrations (docs/RELIABILITY.md): forwarded even without events.
  auto events = core_.network.apply_alarm(km_id, alarm, link_id, severity, value);
  batched_.insert(batched_.end(), events.begin(), events.end());
  batched_called_ = true;
}

std::vector<controller::RefusedClaim> CoreChanges::update_applications(
    const std::string& km_id, const std::vector<std::string>& attached,
    const std::vector<std::string>& detached) {
  return core_.network.update_applications(km_id, attached, detached);
}

void CoreChanges::disconnect_km(const std::string& km_id) {
  // Batched like registrations: a storm of disconnects (an agent process with thousands of KMs
  // going away) must not cost one snapshot build each.
  auto events = core_.network.disconnect_km(km_id);
  batched_.insert(batched_.end(), events.begin(), events.end());
  batched_called_ = true;
}

void CoreChanges::touch_km(const std::string& km_id) { core_.network.touch_km(km_id); }

void CoreChanges::start_relay(const controller::RelayRequest& request) {
  relay_.append(core_.relays.start(request, core_.clock.now()));
}

void CoreChanges::relay_reserved(const std::string& relay_id, std::size_t hop,
                                 const std::vector<std::string>& key_ids) {
  relay_.append(core_.relays.on_reserved(relay_id, hop, key_ids, core_.clock.now()));
}

void CoreChanges::relay_reservation_failed(const std::string& relay_id, std::size_t hop,
                                           const std::string& ck_error,
                                           const std::string& message) {
  relay_.append(
      core_.relays.on_reservation_failed(relay_id, hop, ck_error, message, core_.clock.now()));
}

void CoreChanges::relay_allocated(const std::string& relay_id, std::size_t hop) {
  relay_.append(core_.relays.on_allocated(relay_id, hop, core_.clock.now()));
}

void CoreChanges::relay_allocation_failed(const std::string& relay_id, std::size_t hop,
                                          const std::string& ck_error, const std::string& message) {
  relay_.append(
      core_.relays.on_allocation_failed(relay_id, hop, ck_error, message, core_.clock.now()));
}

void CoreChanges::relay_response(const std::string& relay_id, bool ok, const std::string& reason) {
  relay_.append(core_.relays.on_relay_response(relay_id, ok, reason, core_.clock.now()));
}

void CoreChanges::relays_km_disconnected(const std::string& km_id) {
  relay_.append(core_.relays.on_km_disconnected(km_id, core_.clock.now()));
}

void CoreChanges::expire_relays() { relay_.append(core_.relays.expire(core_.clock.now())); }

// ---- ControllerFacade ---------------------------------------------------------------------------

// A buffered channel of capacity one is a semaphore: the send completes once the slot is free.
struct ControllerFacade::Lock {
  explicit Lock(const net::any_io_executor& ex) : ch(ex, 1) {}
  net::experimental::concurrent_channel<void(boost::system::error_code)> ch;
};

class ControllerFacade::Turn {
 public:
  explicit Turn(Lock& lock) : lock_(lock) {}
  Turn(const Turn&) = delete;
  Turn& operator=(const Turn&) = delete;
  ~Turn() {
    lock_.ch.try_receive([](boost::system::error_code) {});
  }

 private:
  Lock& lock_;
};

ControllerFacade::ControllerFacade(ControllerService& service)
    : service_(service), lock_(std::make_unique<Lock>(service.io_context().get_executor())) {}

ControllerFacade::~ControllerFacade() = default;

net::awaitable<std::shared_ptr<ControllerFacade::Turn>> ControllerFacade::acquire() {
  auto send_op = lock_->ch.async_send(boost::system::error_code{}, net::use_awaitable);
  co_await std::move(send_op);
  co_return std::make_shared<Turn>(*lock_);
}

net::awaitable<void> ControllerFacade::persist(StoreOp op) {
  if (!service_.store_configured()) co_return;
  auto aw = service_.persist(std::move(op), /*retry_safe=*/true);
  co_await std::move(aw);
}

CoreOutputs ControllerFacade::outputs() {
  return {*service_.impl_->rerouting, *service_.impl_->key_supply};
}

void ControllerFacade::forward_report(CoreChanges& changes, const CoreOutputs& outputs) {
  if (!changes.batched_.empty() || changes.batched_called_) {
    outputs.rerouting.network_changed_soon(std::move(changes.batched_));
  }
  if (changes.network_changed_ || !changes.events_.empty()) {
    outputs.rerouting.network_changed(changes.events_);
  }
  if (!changes.relay_.empty()) outputs.key_supply.carry_out(std::move(changes.relay_));
}

void ControllerFacade::forward(CoreChanges& changes) {
  if (changes.network_changed_ || !changes.events_.empty()) {
    service_.after_network_events(changes.events_);
  }
  if (changes.rerouting_changed_) service_.apply_rerouting_output(changes.rerouting_);
}

}  // namespace qkdn::service
