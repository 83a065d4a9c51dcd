#include "qkdn/controller/alarms.hpp"

#include <algorithm>
#include <cmath>

#include "qkdn/controller/error.hpp"

namespace qkdn::controller {

std::string_view to_string(Severity s) noexcept {
  switch (s) {
    case Severity::kCritical:
      return "critical";
    case Severity::kMajor:
      return "major";
    case Severity::kMinor:
      return "minor";
    case Severity::kWarning:
      return "warning";
  }
  return "major";
}

Severity parse_severity(std::string_view s) {
  if (s == "critical") return Severity::kCritical;
  if (s == "major") return Severity::kMajor;
  if (s == "minor") return Severity::kMinor;
  if (s == "warning") return Severity::kWarning;
  throw InvalidArgument("unknown severity '" + std::string(s) +
                        "' (critical, major, minor, warning)");
}

std::string_view to_string(AlarmState s) noexcept {
  return s == AlarmState::kActive ? "active" : "cleared";
}

bool hysteresis_alarm(bool active, double value, double threshold, double hysteresis) noexcept {
  if (!active) return value > threshold;
  return !(value < threshold * (1.0 - hysteresis));
}

namespace {

std::size_t index_of(Severity s) { return static_cast<std::size_t>(s); }

void check_hysteresis(double h) {
  if (!std::isfinite(h) || h < 0 || h >= 1) {
    throw InvalidArgument("alarm hysteresis must be in [0, 1)");
  }
}

}  // namespace

AlarmTable::AlarmTable(const Clock& clock, AlarmConfig config) : clock_(&clock), config_(config) {
  check_hysteresis(config_.hysteresis);
}

void AlarmTable::set_hysteresis(double h) {
  check_hysteresis(h);
  config_.hysteresis = h;
}

std::pair<const Alarm&, bool> AlarmTable::raise(const AlarmSpec& spec) {
  if (spec.type.empty() || spec.resource.empty()) {
    throw InvalidArgument("an alarm needs a type and a resource");
  }
  const SysTime now = clock_->now();
  if (const auto it = active_.find(KeyView{spec.type, spec.resource}); it != active_.end()) {
    Alarm& a = alarms_.at(it->second);
    --active_by_severity_[index_of(a.severity)];
    ++active_by_severity_[index_of(spec.severity)];
    a.severity = spec.severity;
    a.last_value = spec.value;
    if (!spec.text.empty()) a.text = spec.text;
    if (!spec.km_id.empty()) a.km_id = spec.km_id;
    if (!spec.link_id.empty()) a.link_id = spec.link_id;
    a.updated_at = now;
    ++a.count;
    return {a, false};
  }
  Alarm a;
  a.id = next_id_++;
  a.type = spec.type;
  a.resource = spec.resource;
  a.km_id = spec.km_id;
  a.link_id = spec.link_id;
  a.severity = spec.severity;
  a.raised_at = now;
  a.updated_at = now;
  a.last_value = spec.value;
  a.text = spec.text;
  const auto [it, inserted] = alarms_.emplace(a.id, std::move(a));
  active_.emplace(Key{spec.type, spec.resource}, it->first);
  ++active_by_severity_[index_of(it->second.severity)];
  return {it->second, inserted};
}

const Alarm* AlarmTable::clear(std::string_view type, std::string_view resource) {
  const auto it = active_.find(KeyView{type, resource});
  if (it == active_.end()) return nullptr;
  const std::uint64_t id = it->second;
  active_.erase(it);
  Alarm& a = alarms_.at(id);
  --active_by_severity_[index_of(a.severity)];
  a.state = AlarmState::kCleared;
  a.cleared_at = clock_->now();
  a.updated_at = *a.cleared_at;
  note_cleared(id);
  // The just-cleared alarm is the newest in history, so eviction never removes it unless the
  // history bound is zero.
  const auto found = alarms_.find(id);
  return found == alarms_.end() ? nullptr : &found->second;
}

void AlarmTable::note_cleared(std::uint64_t id) {
  cleared_order_.push_back(id);
  while (cleared_order_.size() > config_.max_cleared) {
    alarms_.erase(cleared_order_.front());
    cleared_order_.pop_front();
  }
}

const Alarm& AlarmTable::acknowledge(std::uint64_t id, const std::string& who) {
  const auto it = alarms_.find(id);
  if (it == alarms_.end()) throw NotFound("alarm " + std::to_string(id) + " not found");
  Alarm& a = it->second;
  if (!a.acknowledged) {
    a.acknowledged = true;
    a.acknowledged_by = who;
    a.acknowledged_at = clock_->now();
  }
  return a;
}

ThresholdChange AlarmTable::evaluate_threshold(const AlarmSpec& spec, double threshold) {
  const auto it = active_.find(KeyView{spec.type, spec.resource});
  const bool was_active = it != active_.end();
  const bool now_active = hysteresis_alarm(was_active, spec.value, threshold, config_.hysteresis);
  if (!was_active && now_active) {
    raise(spec);
    return ThresholdChange::kRaised;
  }
  if (was_active && !now_active) {
    clear(spec.type, spec.resource);
    return ThresholdChange::kCleared;
  }
  if (was_active) {
    Alarm& a = alarms_.at(it->second);
    a.last_value = spec.value;
    a.updated_at = clock_->now();
    return ThresholdChange::kUpdated;
  }
  return ThresholdChange::kNone;
}

const Alarm* AlarmTable::find(std::uint64_t id) const {
  const auto it = alarms_.find(id);
  return it == alarms_.end() ? nullptr : &it->second;
}

const Alarm* AlarmTable::find_active(std::string_view type, std::string_view resource) const {
  const auto it = active_.find(KeyView{type, resource});
  return it == active_.end() ? nullptr : &alarms_.at(it->second);
}

std::vector<Alarm> AlarmTable::list(const AlarmFilter& filter) const {
  std::vector<Alarm> out;
  const auto match = [&filter](const Alarm& a) {
    if (filter.active_only && a.state != AlarmState::kActive) return false;
    if (filter.severity && a.severity != *filter.severity) return false;
    if (filter.type && a.type != *filter.type) return false;
    if (filter.resource && a.resource != *filter.resource) return false;
    if (filter.km_id && a.km_id != *filter.km_id) return false;
    if (filter.link_id && a.link_id != *filter.link_id) return false;
    return true;
  };
  for (auto it = alarms_.upper_bound(filter.after_id); it != alarms_.end(); ++it) {
    if (!match(it->second)) continue;
    out.push_back(it->second);
    if (filter.limit != 0 && out.size() >= filter.limit) break;
  }
  return out;
}

std::size_t AlarmTable::active_count(Severity s) const noexcept {
  return active_by_severity_[index_of(s)];
}

std::size_t AlarmTable::active_count() const noexcept { return active_.size(); }

void AlarmTable::restore(const Alarm& alarm) {
  if (alarm.id == 0 || alarms_.contains(alarm.id)) {
    throw Conflict("alarm id " + std::to_string(alarm.id) + " already present or invalid");
  }
  if (alarm.state == AlarmState::kActive) {
    if (active_.contains(KeyView{alarm.type, alarm.resource})) {
      throw Conflict("a " + alarm.type + " alarm for '" + alarm.resource + "' is already active");
    }
    active_.emplace(Key{alarm.type, alarm.resource}, alarm.id);
    ++active_by_severity_[index_of(alarm.severity)];
    alarms_.emplace(alarm.id, alarm);
  } else {
    alarms_.emplace(alarm.id, alarm);
    note_cleared(alarm.id);
  }
  next_id_ = std::max(next_id_, alarm.id + 1);
}

}  // namespace qkdn::controller
