// Network events -> rerouting engine -> relay instructions (0x41E5), alarms and metrics; the
// periodic tick (engine, relays, sessions) and the coalesced snapshot refresh. Core strand only.
#include <algorithm>
#include <charconv>
#include <cstdio>

#include "qkdn/controller/error.hpp"
#include "service_impl.hpp"

namespace qkdn::service {
namespace {

using controller::NetworkEvent;

// Status reports arrive from every KM every status interval: the engine gets a fresh snapshot of
// their pools at most this often (events refresh it sooner).
constexpr auto kSnapshotCoalesce = std::chrono::milliseconds(100);
// Events of registrations and status reports (KMs and links up and down) reach the engine in one
// batch at most this often: a registration storm of N KMs costs a bounded number of snapshot
// builds per second, not one per registration (each build is O(network)).
constexpr auto kEventCoalesce = std::chrono::milliseconds(50);
// The intervals grow with the cost of one snapshot build, so that building snapshots never takes
// more than about a tenth (pools) or a quarter (events) of the core strand on a large network.
constexpr int kSnapshotCostFactor = 10;
constexpr int kEventCostFactor = 4;
constexpr std::size_t kSentInstructionsKept = 10'000;
constexpr auto kMinTick = std::chrono::milliseconds(10);

std::string route_text(const std::optional<controller::Route>& r) {
  if (!r) return "none";
  std::string out;
  for (const auto& km : r->kms) {
    if (!out.empty()) out += ',';
    out += km;
  }
  return out;
}

std::string number_text(double v) {
  char buf[32];
  auto [p, ec] = std::to_chars(buf, buf + sizeof buf, v);
  return ec == std::errc() ? std::string(buf, p) : std::string("0");
}

}  // namespace

void ControllerService::Impl::network_changed(const std::vector<NetworkEvent>& events) {
  emit(events);
  if (deferred_events.empty()) {
    react_to_events(events);
    return;
  }
  // Events still waiting for their batch happened first: one engine run for all, in order.
  auto batch = std::exchange(deferred_events, {});
  batch.insert(batch.end(), events.begin(), events.end());
  react_to_events(batch);
}

void ControllerService::Impl::flush_deferred_events() {
  if (deferred_events.empty()) return;
  auto batch = std::exchange(deferred_events, {});
  react_to_events(batch);
}

SteadyTime ControllerService::Impl::next_build(std::chrono::milliseconds floor, int factor) const {
  const auto cost = std::chrono::duration_cast<std::chrono::milliseconds>(last_snapshot_cost);
  return last_snapshot + std::max(floor, cost * factor);
}

void ControllerService::Impl::network_changed_soon(std::vector<NetworkEvent> events) {
  if (events.empty()) {
    schedule_snapshot();  // pools only: the coalesced snapshot refresh
    return;
  }
  emit(events);  // observers see each mutation at once
  deferred_events.insert(deferred_events.end(), std::make_move_iterator(events.begin()),
                         std::make_move_iterator(events.end()));
  if (deferred_armed || timers_stopped) return;
  deferred_armed = true;
  deferred_timer.expires_at(next_build(kEventCoalesce, kEventCostFactor));
  deferred_timer.async_wait([this](boost::system::error_code ec) {
    deferred_armed = false;
    if (ec || timers_stopped) return;
    try {
      flush_deferred_events();
    } catch (const std::exception& e) {
      svc.log(std::string("rerouting: events not applied: ") + e.what());
    }
  });
}

void ControllerService::Impl::react_to_events(const std::vector<NetworkEvent>& events) {
  if (events.empty()) {
    // Only pools and rates moved (a status report): the engine's snapshot refresh is coalesced.
    schedule_snapshot();
    return;
  }
  try {
    apply_rerouting(engine.on_events(events, fresh_snapshot()));
  } catch (const std::exception& e) {
    svc.log(std::string("rerouting: events not applied: ") + e.what());
  }
  const auto t = now();
  for (const auto& e : events) {
    if (e.kind != NetworkEvent::Kind::kKmDisconnected) continue;
    apply_relay_output(relays.on_km_disconnected(e.km_id, t));
    if (svc.network_.find_km(e.km_id) != nullptr) continue;
    // The KM left the topology (replaced by an operator): its Ck connection goes too.
    if (auto it = registered.find(e.km_id); it != registered.end()) {
      svc.log("ck: " + e.km_id + " is no longer in the topology; closing its connection");
      it->second.channel->close();
      registered.erase(it);
    }
  }
}

std::shared_ptr<const controller::TopologySnapshot> ControllerService::Impl::fresh_snapshot() {
  snapshot_dirty = false;
  const auto t0 = std::chrono::steady_clock::now();
  auto s = controller::TopologySnapshot::from_network(svc.network_);
  last_snapshot = std::chrono::steady_clock::now();
  last_snapshot_cost = last_snapshot - t0;
  metrics->snapshot_build(std::chrono::duration<double>(last_snapshot_cost).count());
  publish_snapshot(s);  // route queries of the API read it off the core strand
  return s;
}

void ControllerService::Impl::schedule_snapshot() {
  const auto& current = engine.snapshot();
  if (current && current->version() == svc.network_.version()) return;
  snapshot_dirty = true;
  if (snapshot_armed || timers_stopped) return;
  snapshot_armed = true;
  snapshot_timer.expires_at(next_build(kSnapshotCoalesce, kSnapshotCostFactor));
  snapshot_timer.async_wait([this](boost::system::error_code ec) {
    snapshot_armed = false;
    if (ec || timers_stopped) return;
    refresh_snapshot_if_dirty();
  });
}

void ControllerService::Impl::refresh_snapshot_if_dirty() {
  if (!snapshot_dirty) return;
  try {
    apply_rerouting(engine.on_snapshot(fresh_snapshot()));
  } catch (const std::exception& e) {
    svc.log(std::string("rerouting: snapshot not applied: ") + e.what());
  }
}

void ControllerService::Impl::apply_rerouting(const controller::ReroutingOutput& out) {
  for (const auto& i : out.withdraw) send_instruction(i, true);
  for (const auto& i : out.send) send_instruction(i, false);
  for (const auto& spec : out.raise_alarms) raise_alarm(spec);
  for (const auto& c : out.clear_alarms) clear_alarm(c.type, c.resource);
  for (const auto& r : out.reroutes) {
    const auto reason = controller::to_string(r.reason);
    metrics->reroute(reason);
    svc.log("rerouting: " + r.src + "->" + r.dst + " (" + std::string(reason) +
            "): " + route_text(r.old_route) + " -> " + route_text(r.new_route));
  }
}

// Withdraw convention (docs/ck-extensions.md): Ck has no withdraw command, so a withdrawn
// instruction is re-sent under its own instruction_id with a window that is already over
// (not_before = not_after = now) and the extension object {"withdraw": true}. A KM that knows
// the extension drops the instruction; one that does not replaces it by an instruction whose
// window has passed, which relays nothing. number_of_keys stays >= 1 (the codec's bound).
void ControllerService::Impl::send_instruction(const controller::RelayInstruction& inst,
                                               bool withdraw) {
  if (!withdraw && inst.number_of_keys == 0) return;  // a plan slot with no share: nothing to do
  auto ch = svc.channel_of(inst.source_km);
  if (!ch) {
    // Kept by the engine; resend_instructions() sends it when the KM registers.
    return;
  }
  ck::RelayInstruction m;
  m.instruction_id = inst.instruction_id;
  m.destination_kma_id = inst.destination_kma_id;
  m.transit_kma_ids = inst.transit_kma_ids;
  // A plan may want more per interval than one relay carries; agents relay one round (one relay)
  // per interval and refuse more (key_limits.hpp): the wire carries at most that bound.
  m.number_of_keys = std::clamp<std::int64_t>(static_cast<std::int64_t>(inst.number_of_keys), 1,
                                              limits::kMaxKeysPerInstruction);
  m.key_size = std::clamp<std::int64_t>(static_cast<std::int64_t>(inst.key_size_bits), 1,
                                        ck::kMaxKeySizeBits);
  if (withdraw) {
    const auto t = format_rfc3339(now());
    m.not_before = t;
    m.not_after = t;
    m.extension = R"([{"withdraw":true}])";
  } else {
    if (inst.not_before) m.not_before = format_rfc3339(*inst.not_before);
    if (inst.not_after) m.not_after = format_rfc3339(*inst.not_after);
    std::string links;
    for (const auto& l : inst.links) links += (links.empty() ? "\"" : ",\"") + l + "\"";
    m.extension = R"([{"mode":")" + std::string(controller::to_string(inst.mode)) +
                  R"(","interval_s":)" + number_text(inst.interval_s) + R"(,"links":[)" + links +
                  "]}]";
  }
  m.controller_epoch = svc.epoch_;
  try {
    ch->send(std::move(m));
  } catch (const std::exception& e) {
    svc.log("rerouting: instruction " + inst.instruction_id + " not sent: " + e.what());
    return;
  }
  if (withdraw) {
    sent_instructions.erase(inst.instruction_id);
    return;
  }
  if (sent_instructions
          .try_emplace(inst.instruction_id,
                       SentInstruction{inst.source_km, inst.destination_kma_id})
          .second) {
    sent_order.push_back(inst.instruction_id);
    while (sent_order.size() > kSentInstructionsKept) {
      sent_instructions.erase(sent_order.front());
      sent_order.pop_front();
    }
  }
}

void ControllerService::Impl::resend_instructions(const std::string& km_id) {
  for (const auto& i : engine.instructions()) {
    if (i.source_km == km_id) send_instruction(i, false);
  }
}

void ControllerService::Impl::on_instruction_response(const std::string& km_id,
                                                      const ck::RelayInstructionResponse& r) {
  if (r.response != "OK") {
    svc.log("rerouting: " + km_id + " answered instruction " + r.instruction_id + " with " +
            r.response);
  }
  const auto it = sent_instructions.find(r.instruction_id);
  if (it == sent_instructions.end() || it->second.src != km_id) return;
  if (r.keys_relayed && *r.keys_relayed > 0) {
    try {
      engine.record_relay(it->second.src, it->second.dst,
                          static_cast<std::uint64_t>(*r.keys_relayed), now());
    } catch (const std::exception& e) {
      svc.log(std::string("rerouting: relay statistics not recorded: ") + e.what());
    }
  }
}

void ControllerService::Impl::raise_alarm(const controller::AlarmSpec& spec) {
  controller::Alarm copy = svc.alarms_.raise(spec).first;
  const std::string what = "alarm " + std::to_string(copy.id);
  WriteGroup g;
  g.ops.push_back({StoreWrite::Kind::kUpsert, what,
                   [a = std::move(copy)](controller::Store& s) { s.save_alarm(a); }});
  submit_writes(std::move(g));
}

void ControllerService::Impl::clear_alarm(std::string_view type, std::string_view resource) {
  const auto* cleared = svc.alarms_.clear(type, resource);
  if (cleared == nullptr) return;
  WriteGroup g;
  g.ops.push_back({StoreWrite::Kind::kUpsert, "alarm " + std::to_string(cleared->id),
                   [a = *cleared](controller::Store& s) { s.save_alarm(a); }});
  submit_writes(std::move(g));
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
  flush_deferred_events();
  if (std::chrono::steady_clock::now() >= next_build(kSnapshotCoalesce, kSnapshotCostFactor)) {
    refresh_snapshot_if_dirty();
  }
  apply_rerouting(engine.tick(t));
  apply_relay_output(relays.expire(t));
  expire_sessions(t);
  // The per-KM relay counts (max_relays_per_km) follow starts and finishes; once a tick they are
  // recounted from the table itself, so that an attempt ended by another path (an operator's
  // cancel) cannot leave a KM counted busy for good.
  relays_by_km.clear();
  for (const auto& id : relays.open_relays()) {
    if (const auto* r = relays.find(id)) ++relays_by_km[r->src_km];
  }
}

void ControllerService::Impl::stop_timers() {
  timers_stopped = true;
  tick_timer.cancel();
  snapshot_timer.cancel();
  deferred_timer.cancel();
  probe_timer.cancel();
}

}  // namespace qkdn::service
