// The rerouting driver (reroute_driver.hpp): network events -> rerouting engine -> relay
// instructions (0x41E5), alarms and metrics; the coalesced event batches and snapshot refresh.
// Core strand only.
#include "qkdn/service/reroute_driver.hpp"

#include <algorithm>
#include <charconv>
#include <cstdio>

#include "qkdn/controller/error.hpp"
#include "qkdn/controller/key_limits.hpp"

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

RerouteDriver::RerouteDriver(const net::any_io_executor& core, Deps deps)
    : d_(std::move(deps)), snapshot_timer_(core), deferred_timer_(core) {}

void RerouteDriver::emit(const std::vector<NetworkEvent>& events) {
  if (!events.empty() && d_.emit) d_.emit(events);
}

void RerouteDriver::network_changed(const std::vector<NetworkEvent>& events) {
  emit(events);
  if (deferred_events_.empty()) {
    react_to_events(events);
    return;
  }
  // Events still waiting for their batch happened first: one engine run for all, in order.
  auto batch = std::exchange(deferred_events_, {});
  batch.insert(batch.end(), events.begin(), events.end());
  react_to_events(batch);
}

void RerouteDriver::flush_deferred_events() {
  if (d_.before_flush && !flushing_) {
    flushing_ = true;
    try {
      d_.before_flush();
    } catch (...) {
      flushing_ = false;
      throw;
    }
    flushing_ = false;
  }
  if (deferred_events_.empty()) return;
  auto batch = std::exchange(deferred_events_, {});
  react_to_events(batch);
}

SteadyTime RerouteDriver::next_build(std::chrono::milliseconds floor, int factor) const {
  const auto cost = std::chrono::duration_cast<std::chrono::milliseconds>(last_snapshot_cost_);
  return last_snapshot_ + std::max(floor, cost * factor);
}

void RerouteDriver::network_changed_soon(std::vector<NetworkEvent> events) {
  if (events.empty()) {
    schedule_snapshot();  // pools only: the coalesced snapshot refresh
    return;
  }
  emit(events);  // observers see each mutation at once
  deferred_events_.insert(deferred_events_.end(), std::make_move_iterator(events.begin()),
                          std::make_move_iterator(events.end()));
  if (deferred_armed_ || stopped_) return;
  deferred_armed_ = true;
  deferred_timer_.expires_at(next_build(kEventCoalesce, kEventCostFactor));
  deferred_timer_.async_wait([this](boost::system::error_code ec) {
    deferred_armed_ = false;
    if (ec || stopped_) return;
    try {
      flush_deferred_events();
    } catch (const std::exception& e) {
      d_.log(std::string("rerouting: events not applied: ") + e.what());
    }
  });
}

void RerouteDriver::react_to_events(const std::vector<NetworkEvent>& events) {
  if (events.empty()) {
    // Only pools and rates moved (a status report): the engine's snapshot refresh is coalesced.
    schedule_snapshot();
    return;
  }
  try {
    apply(d_.engine.on_events(events, fresh_snapshot()));
  } catch (const std::exception& e) {
    d_.log(std::string("rerouting: events not applied: ") + e.what());
  }
  if (d_.after_events) d_.after_events(events);
}

std::shared_ptr<const controller::TopologySnapshot> RerouteDriver::fresh_snapshot() {
  snapshot_dirty_ = false;
  const auto t0 = std::chrono::steady_clock::now();
  auto s = controller::TopologySnapshot::from_network(d_.network);
  last_snapshot_ = std::chrono::steady_clock::now();
  last_snapshot_cost_ = last_snapshot_ - t0;
  d_.metrics.snapshot_build(std::chrono::duration<double>(last_snapshot_cost_).count());
  if (d_.published) d_.published(s);  // route queries of the API read it off the core strand
  return s;
}

void RerouteDriver::schedule_snapshot() {
  const auto& current = d_.engine.snapshot();
  if (current && current->version() == d_.network.version()) return;
  snapshot_dirty_ = true;
  if (snapshot_armed_ || stopped_) return;
  snapshot_armed_ = true;
  snapshot_timer_.expires_at(next_build(kSnapshotCoalesce, kSnapshotCostFactor));
  snapshot_timer_.async_wait([this](boost::system::error_code ec) {
    snapshot_armed_ = false;
    if (ec || stopped_) return;
    refresh_snapshot_if_dirty();
  });
}

void RerouteDriver::refresh_snapshot_if_dirty() {
  if (!snapshot_dirty_) return;
  try {
    apply(d_.engine.on_snapshot(fresh_snapshot()));
  } catch (const std::exception& e) {
    d_.log(std::string("rerouting: snapshot not applied: ") + e.what());
  }
}

bool RerouteDriver::snapshot_refresh_due() const {
  return std::chrono::steady_clock::now() >= next_build(kSnapshotCoalesce, kSnapshotCostFactor);
}

void RerouteDriver::tick(SysTime t) { apply(d_.engine.tick(t)); }

void RerouteDriver::stop() {
  stopped_ = true;
  snapshot_timer_.cancel();
  deferred_timer_.cancel();
}

void RerouteDriver::apply(const controller::ReroutingOutput& out) {
  for (const auto& i : out.withdraw) send_instruction(i, true);
  for (const auto& i : out.send) send_instruction(i, false);
  for (const auto& spec : out.raise_alarms) raise_alarm(spec);
  for (const auto& c : out.clear_alarms) clear_alarm(c.type, c.resource);
  for (const auto& r : out.reroutes) {
    const auto reason = controller::to_string(r.reason);
    d_.metrics.reroute(reason);
    d_.log("rerouting: " + r.src + "->" + r.dst + " (" + std::string(reason) +
           "): " + route_text(r.old_route) + " -> " + route_text(r.new_route));
  }
}

// Withdraw convention (docs/ck-extensions.md): Ck has no withdraw command, so a withdrawn
// instruction is re-sent under its own instruction_id with a window that is already over
// (not_before = not_after = now) and the extension object {"withdraw": true}. A KM that knows
// the extension drops the instruction; one that does not replaces it by an instruction whose
// window has passed, which relays nothing. number_of_keys stays >= 1 (the codec's bound).
void RerouteDriver::send_instruction(const controller::RelayInstruction& inst, bool withdraw) {
  if (!withdraw && inst.number_of_keys == 0) return;  // a plan slot with no share: nothing to do
  auto ch = d_.channels.channel_of(inst.source_km);
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
  m.controller_epoch = d_.epoch;
  try {
    ch->send(std::move(m));
  } catch (const std::exception& e) {
    d_.log("rerouting: instruction " + inst.instruction_id + " not sent: " + e.what());
    return;
  }
  if (withdraw) {
    sent_instructions_.erase(inst.instruction_id);
    return;
  }
  if (sent_instructions_
          .try_emplace(inst.instruction_id,
                       SentInstruction{inst.source_km, inst.destination_kma_id})
          .second) {
    sent_order_.push_back(inst.instruction_id);
    while (sent_order_.size() > kSentInstructionsKept) {
      sent_instructions_.erase(sent_order_.front());
      sent_order_.pop_front();
    }
  }
}

void RerouteDriver::resend_instructions(const std::string& km_id) {
  for (const auto& i : d_.engine.instructions()) {
    if (i.source_km == km_id) send_instruction(i, false);
  }
}

void RerouteDriver::on_instruction_response(const std::string& km_id,
                                            const ck::RelayInstructionResponse& r) {
  if (r.response != "OK") {
    d_.log("rerouting: " + km_id + " answered instruction " + r.instruction_id + " with " +
           r.response);
  }
  const auto it = sent_instructions_.find(r.instruction_id);
  if (it == sent_instructions_.end() || it->second.src != km_id) return;
  if (r.keys_relayed && *r.keys_relayed > 0) {
    try {
      d_.engine.record_relay(it->second.src, it->second.dst,
                             static_cast<std::uint64_t>(*r.keys_relayed), now());
    } catch (const std::exception& e) {
      d_.log(std::string("rerouting: relay statistics not recorded: ") + e.what());
    }
  }
}

void RerouteDriver::raise_alarm(const controller::AlarmSpec& spec) {
  controller::Alarm copy = d_.alarms.raise(spec).first;
  const std::string what = "alarm " + std::to_string(copy.id);
  WriteGroup g;
  g.ops.push_back({StoreWrite::Kind::kUpsert, what,
                   [a = std::move(copy)](controller::Store& s) { s.save_alarm(a); }});
  d_.writer.submit(std::move(g));
}

void RerouteDriver::clear_alarm(std::string_view type, std::string_view resource) {
  const auto* cleared = d_.alarms.clear(type, resource);
  if (cleared == nullptr) return;
  WriteGroup g;
  g.ops.push_back({StoreWrite::Kind::kUpsert, "alarm " + std::to_string(cleared->id),
                   [a = *cleared](controller::Store& s) { s.save_alarm(a); }});
  d_.writer.submit(std::move(g));
}

}  // namespace qkdn::service
