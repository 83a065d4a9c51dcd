// FCAPS fault management: the table of alarms raised by the controller and by KMs. Single-threaded
// by contract: the service layer calls it from the controller strand only.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

#include "qkdn/controller/clock.hpp"

namespace qkdn::controller {

/// Alarm types the project raises (others are accepted as free-form strings).
namespace alarm_type {
inline constexpr std::string_view kQberHigh = "qber_high";
inline constexpr std::string_view kLinkDown = "link_down";
inline constexpr std::string_view kKeyPoolLow = "key_pool_low";
inline constexpr std::string_view kRelayFailure = "relay_failure";
inline constexpr std::string_view kPeerUnreachable = "peer_unreachable";
inline constexpr std::string_view kKmDisconnected = "km_disconnected";
inline constexpr std::string_view kPinnedRouteBroken = "pinned_route_broken";
/// A KM claimed an SAE the topology serves at another KM (or nowhere); resource = the SAE.
inline constexpr std::string_view kSaeClaimRefused = "sae_claim_refused";
/// High availability: this controller took the leadership over (resource "controller").
inline constexpr std::string_view kControllerFailover = "controller_failover";
}  // namespace alarm_type

/// Severity, most severe first (ITU-T X.733 perceived severity without "indeterminate").
enum class Severity { kCritical = 0, kMajor = 1, kMinor = 2, kWarning = 3 };
inline constexpr std::size_t kSeverityCount = 4;

std::string_view to_string(Severity s) noexcept;
/// Parses "critical" | "major" | "minor" | "warning"; throws InvalidArgument (also for the Ck
/// pseudo-severity "cleared", which callers map to AlarmTable::clear).
Severity parse_severity(std::string_view s);

enum class AlarmState { kActive, kCleared };
std::string_view to_string(AlarmState s) noexcept;

/// One alarm, active or cleared (cleared alarms are kept as history, up to a bound).
struct Alarm {
  std::uint64_t id = 0;  ///< sequential, starting at 1, never reused
  std::string type;      ///< e.g. "qber_high" (see alarm_type)
  std::string
      resource;         ///< the KM or link it is about; (type, resource) identifies it while active
  std::string km_id;    ///< KM concerned or reporting (may be empty)
  std::string link_id;  ///< link concerned (may be empty)
  Severity severity = Severity::kMajor;
  AlarmState state = AlarmState::kActive;
  bool acknowledged = false;
  std::string acknowledged_by;
  SysTime acknowledged_at{};
  SysTime raised_at{};
  SysTime updated_at{};  ///< last raise or value update
  std::optional<SysTime> cleared_at;
  double last_value = 0;    ///< last measured value (QBER, pool bits, ...)
  std::string text;         ///< human-readable detail
  std::uint64_t count = 1;  ///< times raised while active (1 = raised once)
};

/// What to raise.
struct AlarmSpec {
  std::string type;
  std::string resource;
  std::string km_id;
  std::string link_id;
  Severity severity = Severity::kMajor;
  double value = 0;
  std::string text;
};

/// Filter and page of AlarmTable::list. Results come in ascending id order.
struct AlarmFilter {
  bool active_only = false;
  std::optional<Severity> severity;
  std::optional<std::string> type;
  std::optional<std::string> resource;
  std::optional<std::string> km_id;
  std::optional<std::string> link_id;
  std::uint64_t after_id = 0;  ///< cursor: only alarms with id > after_id
  std::size_t limit = 0;       ///< 0 = no limit
};

/// Result of a threshold evaluation (AlarmTable::evaluate_threshold).
enum class ThresholdChange { kNone, kRaised, kUpdated, kCleared };

/// Two-level threshold: a value alarms above `threshold` and returns to normal only below
/// threshold * (1 - hysteresis), so a value hovering at the threshold does not flap. Between the
/// two levels the previous state holds. Returns the new state.
bool hysteresis_alarm(bool active, double value, double threshold, double hysteresis) noexcept;

/// Tunables of the table.
struct AlarmConfig {
  double hysteresis = 0.10;         ///< fraction of a threshold below which an alarm clears
  std::size_t max_cleared = 10000;  ///< cleared alarms kept as history; oldest go first
};

/// The alarm table. Raising is idempotent per (type, resource) while that alarm is active.
/// References and pointers it returns stay valid until the next mutating call.
class AlarmTable {
 public:
  /// `clock` must outlive the table. Throws InvalidArgument for a hysteresis outside [0, 1).
  explicit AlarmTable(const Clock& clock, AlarmConfig config = {});

  /// Raises an alarm. If one of the same (type, resource) is active, updates its severity, value,
  /// text and updated_at and increments its count (acknowledgement is kept); otherwise creates a
  /// new alarm with the next id. Returns the alarm and whether it is new. Throws InvalidArgument
  /// when type or resource is empty.
  std::pair<const Alarm&, bool> raise(const AlarmSpec& spec);
  /// Clears the active (type, resource) alarm. Returns it, or nullptr if none was active.
  const Alarm* clear(std::string_view type, std::string_view resource);
  /// Records who acknowledged an alarm (active or cleared); acknowledging again keeps the first
  /// acknowledgement. Throws NotFound for an unknown (or evicted) id.
  const Alarm& acknowledge(std::uint64_t id, const std::string& who);

  /// Evaluates a measured value against `threshold` with the table's hysteresis: raises
  /// (kRaised) above it, clears (kCleared) below threshold * (1 - hysteresis), and otherwise
  /// refreshes last_value of an active alarm (kUpdated, count unchanged) or does nothing.
  ThresholdChange evaluate_threshold(const AlarmSpec& spec, double threshold);

  /// The alarm with this id, or nullptr.
  [[nodiscard]] const Alarm* find(std::uint64_t id) const;
  /// The active alarm of this (type, resource), or nullptr.
  [[nodiscard]] const Alarm* find_active(std::string_view type, std::string_view resource) const;
  /// Alarms matching the filter, ascending id.
  [[nodiscard]] std::vector<Alarm> list(const AlarmFilter& filter = {}) const;
  /// Number of active alarms of a severity (O(1); for qkdn_alarms_active).
  [[nodiscard]] std::size_t active_count(Severity s) const noexcept;
  /// Number of active alarms.
  [[nodiscard]] std::size_t active_count() const noexcept;
  /// Number of alarms held (active and cleared history).
  [[nodiscard]] std::size_t size() const noexcept { return alarms_.size(); }

  /// Re-inserts an alarm loaded from the store after a restart, keeping its id; later ids follow
  /// the largest seen. Throws Conflict for a duplicate id or a second active (type, resource).
  void restore(const Alarm& alarm);

  /// Hysteresis fraction in [0, 1); set_hysteresis throws InvalidArgument outside it.
  [[nodiscard]] double hysteresis() const noexcept { return config_.hysteresis; }
  void set_hysteresis(double h);

 private:
  using Key = std::pair<std::string, std::string>;
  using KeyView = std::pair<std::string_view, std::string_view>;
  struct KeyLess {
    using is_transparent = void;
    template <class A, class B>
    bool operator()(const A& a, const B& b) const {
      return std::tie(a.first, a.second) < std::tie(b.first, b.second);
    }
  };
  void note_cleared(std::uint64_t id);

  const Clock* clock_;
  AlarmConfig config_;
  std::uint64_t next_id_ = 1;
  std::map<std::uint64_t, Alarm> alarms_;
  std::map<Key, std::uint64_t, KeyLess> active_;
  std::deque<std::uint64_t> cleared_order_;
  std::array<std::size_t, kSeverityCount> active_by_severity_{};
};

}  // namespace qkdn::controller
