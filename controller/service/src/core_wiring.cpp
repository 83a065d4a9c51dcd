// The service's wiring of its drivers: the rerouting driver (reroute_driver.cpp) and the
// key-supply driver (key_supply.cpp) built with their dependencies, what happens after the engine
// saw KM events, and the periodic tick (engine, relays, sessions). Core strand only.
#include <algorithm>

#include "qkdn/controller/error.hpp"
#include "qkdn/service/controller_facade.hpp"
#include "service_impl.hpp"

namespace qkdn::service {
namespace {

constexpr auto kMinTick = std::chrono::milliseconds(10);

}  // namespace

void ControllerService::Impl::make_drivers() {
  rerouting = std::make_unique<RerouteDriver>(
      core, RerouteDriver::Deps{
                svc.network_,
                engine,
                svc.alarms_,
                *svc.clock_,
                *metrics,
                *this,
                *this,
                svc.epoch_,
                [this](std::string_view line) { svc.log(line); },
                [this](const std::vector<controller::NetworkEvent>& e) { emit(e); },
                [this](const std::vector<controller::NetworkEvent>& e) { after_events(e); },
                [this](std::shared_ptr<const controller::TopologySnapshot> s) {
                  publish_snapshot(std::move(s));
                },
                [this] { apply_status_batch(); },
            });
  KeySupplyDriver::Options o;
  o.route_alternatives = svc.options_.route_alternatives;
  o.max_relays_per_km = svc.options_.max_relays_per_km;
  key_supply = std::make_unique<KeySupplyDriver>(
      core, KeySupplyDriver::Deps{
                svc.network_,
                engine,
                sessions,
                relays,
                *rerouting,
                *svc.clock_,
                *random,
                *metrics,
                *this,
                *this,
                svc.epoch_,
                o,
                [this](const std::function<void(CoreChanges&)>& fn) { svc.facade().report(fn); },
                [this](std::string_view line) { svc.log(line); },
                [this](std::string_view reason) { count_protocol_error(reason); },
                [this](std::string_view reason) { count_refused(reason); },
                [this] { return stopping; },
                [this](std::string what) { return completion(std::move(what)); },
            });
}

void ControllerService::Impl::after_events(const std::vector<controller::NetworkEvent>& events) {
  for (const auto& e : events) {
    if (e.kind != controller::NetworkEvent::Kind::kKmDisconnected) continue;
    svc.facade().report([&](CoreChanges& c) { c.relays_km_disconnected(e.km_id); });
    if (svc.network_.find_km(e.km_id) != nullptr) continue;
    // The KM left the topology (replaced by an operator): its Ck connection goes too.
    if (auto it = registered.find(e.km_id); it != registered.end()) {
      svc.log("ck: " + e.km_id + " is no longer in the topology; closing its connection");
      it->second.channel->close();
      registered.erase(it);
    }
  }
}

std::optional<controller::Route> ControllerService::route_inside(const std::string& src,
                                                                 const std::string& dst) {
  impl_->rerouting->flush_deferred_events();
  impl_->rerouting->refresh_snapshot_if_dirty();
  auto answer = impl_->engine.route_for(src, dst);
  impl_->rerouting->apply(answer.output);
  if (!answer.route || answer.route->kms.size() < 2) return std::nullopt;
  return answer.route;
}

// ---- timers -------------------------------------------------------------------------------------

void ControllerService::Impl::start_timers() {
  timers_stopped = false;
  arm_tick();
  if (pool) arm_probe();
}

void ControllerService::Impl::arm_tick() {
  if (timers_stopped) return;
  const auto interval = svc.options_.status_interval;
  auto wait = interval;
  std::optional<SysTime> next = relays.next_deadline();
  if (auto s = sessions.next_expiry(); s && (!next || *s < *next)) next = s;
  if (next) {
    const auto due =
        std::chrono::duration_cast<std::chrono::milliseconds>(*next - now()) + Millis(1);
    wait = std::clamp<std::chrono::milliseconds>(due, kMinTick, interval);
  }
  tick_timer.expires_after(wait);
  tick_timer.async_wait([this](boost::system::error_code ec) {
    if (ec || timers_stopped) return;
    try {
      on_tick();
    } catch (const std::exception& e) {
      svc.log(std::string("tick: ") + e.what());
    }
    arm_tick();
  });
}

void ControllerService::Impl::on_tick() {
  const auto t = now();
  // Ticks come as often as every 10 ms while relays wait: the snapshot is refreshed here only when
  // its coalescing interval has passed (its timer does it otherwise).
  rerouting->flush_deferred_events();
  if (rerouting->snapshot_refresh_due()) rerouting->refresh_snapshot_if_dirty();
  rerouting->tick(t);
  svc.facade().report([](CoreChanges& c) { c.expire_relays(); });
  key_supply->expire_sessions(t);
  // The per-KM relay counts (max_relays_per_km) follow starts and finishes; once a tick they are
  // recounted from the table itself, so that an attempt ended by another path (an operator's
  // cancel) cannot leave a KM counted busy for good.
  key_supply->recount_relays();
}

void ControllerService::Impl::stop_timers() {
  timers_stopped = true;
  tick_timer.cancel();
  rerouting->stop();
  probe_timer.cancel();
}

}  // namespace qkdn::service
