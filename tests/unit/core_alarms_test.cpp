#include "qkdn/controller/alarms.hpp"

#include <gtest/gtest.h>

#include "qkdn/controller/error.hpp"

namespace qkdn::controller {
namespace {

using std::chrono::seconds;

AlarmSpec spec(std::string type, std::string resource, Severity sev = Severity::kMajor,
               double value = 0) {
  AlarmSpec s;
  s.type = std::move(type);
  s.resource = std::move(resource);
  s.link_id = s.resource;
  s.km_id = "KM1";
  s.severity = sev;
  s.value = value;
  s.text = "detail";
  return s;
}

class AlarmTableTest : public ::testing::Test {
 protected:
  ManualClock clock_;
  AlarmTable table_{clock_};
};

// A new (type, resource) gets the next sequential id and starts active, unacknowledged.
TEST_F(AlarmTableTest, RaiseCreatesSequentialAlarms) {
  const auto [a, created_a] = table_.raise(spec("qber_high", "L1", Severity::kMajor, 0.12));
  EXPECT_TRUE(created_a);
  EXPECT_EQ(a.id, 1U);
  EXPECT_EQ(a.state, AlarmState::kActive);
  EXPECT_FALSE(a.acknowledged);
  EXPECT_EQ(a.raised_at, clock_.now());
  EXPECT_FALSE(a.cleared_at.has_value());
  EXPECT_EQ(a.count, 1U);
  EXPECT_DOUBLE_EQ(a.last_value, 0.12);
  EXPECT_EQ(a.km_id, "KM1");
  EXPECT_EQ(a.link_id, "L1");
  const auto [b, created_b] = table_.raise(spec("link_down", "L1"));
  EXPECT_TRUE(created_b);
  EXPECT_EQ(b.id, 2U);
  EXPECT_EQ(table_.active_count(), 2U);
}

// Raising an active (type, resource) again updates it instead of creating a duplicate.
TEST_F(AlarmTableTest, RaiseIsIdempotentWhileActive) {
  const std::uint64_t id = table_.raise(spec("qber_high", "L1", Severity::kMinor, 0.12)).first.id;
  const SysTime first = clock_.now();
  clock_.advance(seconds{3});
  const auto [again, created] = table_.raise(spec("qber_high", "L1", Severity::kCritical, 0.2));
  EXPECT_FALSE(created);
  EXPECT_EQ(again.id, id);
  EXPECT_EQ(again.count, 2U);
  EXPECT_DOUBLE_EQ(again.last_value, 0.2);
  EXPECT_EQ(again.severity, Severity::kCritical);
  EXPECT_EQ(again.raised_at, first);
  EXPECT_EQ(again.updated_at, clock_.now());
  EXPECT_EQ(table_.size(), 1U);
  // Severity counters follow the update.
  EXPECT_EQ(table_.active_count(Severity::kMinor), 0U);
  EXPECT_EQ(table_.active_count(Severity::kCritical), 1U);
}

// Clearing ends the alarm; a later raise of the same key is a new alarm.
TEST_F(AlarmTableTest, ClearThenRaiseAgainIsNew) {
  const std::uint64_t id = table_.raise(spec("link_down", "L2")).first.id;
  clock_.advance(seconds{10});
  const Alarm* cleared = table_.clear("link_down", "L2");
  ASSERT_NE(cleared, nullptr);
  EXPECT_EQ(cleared->id, id);
  EXPECT_EQ(cleared->state, AlarmState::kCleared);
  ASSERT_TRUE(cleared->cleared_at.has_value());
  EXPECT_EQ(*cleared->cleared_at, clock_.now());
  EXPECT_EQ(table_.active_count(), 0U);
  EXPECT_EQ(table_.active_count(Severity::kMajor), 0U);
  EXPECT_EQ(table_.find_active("link_down", "L2"), nullptr);
  EXPECT_EQ(table_.clear("link_down", "L2"), nullptr);
  EXPECT_EQ(table_.clear("nope", "L2"), nullptr);

  const auto [fresh, created] = table_.raise(spec("link_down", "L2"));
  EXPECT_TRUE(created);
  EXPECT_NE(fresh.id, id);
  EXPECT_EQ(table_.size(), 2U);
}

// Acknowledgement records who and when, once; unknown ids throw NotFound.
TEST_F(AlarmTableTest, Acknowledge) {
  const std::uint64_t id = table_.raise(spec("key_pool_low", "L3")).first.id;
  clock_.advance(seconds{1});
  const SysTime ack_time = clock_.now();
  const Alarm& a = table_.acknowledge(id, "alice");
  EXPECT_TRUE(a.acknowledged);
  EXPECT_EQ(a.acknowledged_by, "alice");
  EXPECT_EQ(a.acknowledged_at, ack_time);
  clock_.advance(seconds{1});
  EXPECT_EQ(table_.acknowledge(id, "bob").acknowledged_by, "alice");
  // A re-raise keeps the acknowledgement; the alarm stays active.
  EXPECT_TRUE(table_.raise(spec("key_pool_low", "L3")).first.acknowledged);
  EXPECT_THROW(table_.acknowledge(999, "alice"), NotFound);
  // Cleared alarms can still be acknowledged.
  const std::uint64_t other = table_.raise(spec("link_down", "L3")).first.id;
  table_.clear("link_down", "L3");
  EXPECT_TRUE(table_.acknowledge(other, "carol").acknowledged);
}

// list filters by state, severity, type, resource and pages by id.
TEST_F(AlarmTableTest, ListFiltersAndPages) {
  table_.raise(spec("qber_high", "L1", Severity::kMajor));
  table_.raise(spec("link_down", "L2", Severity::kCritical));
  table_.raise(spec("key_pool_low", "L3", Severity::kMinor));
  table_.raise(spec("link_down", "L4", Severity::kCritical));
  table_.clear("link_down", "L2");

  EXPECT_EQ(table_.list().size(), 4U);
  AlarmFilter active;
  active.active_only = true;
  const auto act = table_.list(active);
  ASSERT_EQ(act.size(), 3U);
  EXPECT_EQ(act[0].id, 1U);
  EXPECT_EQ(act[1].id, 3U);
  EXPECT_EQ(act[2].id, 4U);

  AlarmFilter crit;
  crit.severity = Severity::kCritical;
  EXPECT_EQ(table_.list(crit).size(), 2U);
  crit.active_only = true;
  ASSERT_EQ(table_.list(crit).size(), 1U);
  EXPECT_EQ(table_.list(crit)[0].resource, "L4");

  AlarmFilter by_type;
  by_type.type = "link_down";
  EXPECT_EQ(table_.list(by_type).size(), 2U);
  AlarmFilter by_res;
  by_res.resource = "L3";
  EXPECT_EQ(table_.list(by_res).size(), 1U);

  AlarmFilter page;
  page.limit = 2;
  auto p1 = table_.list(page);
  ASSERT_EQ(p1.size(), 2U);
  page.after_id = p1.back().id;
  auto p2 = table_.list(page);
  ASSERT_EQ(p2.size(), 2U);
  EXPECT_EQ(p2[0].id, 3U);
  page.after_id = p2.back().id;
  EXPECT_TRUE(table_.list(page).empty());
}

// Active counts per severity track raise, clear and escalation.
TEST_F(AlarmTableTest, ActiveCountBySeverity) {
  table_.raise(spec("a", "r1", Severity::kCritical));
  table_.raise(spec("a", "r2", Severity::kCritical));
  table_.raise(spec("b", "r1", Severity::kWarning));
  EXPECT_EQ(table_.active_count(Severity::kCritical), 2U);
  EXPECT_EQ(table_.active_count(Severity::kWarning), 1U);
  EXPECT_EQ(table_.active_count(Severity::kMajor), 0U);
  table_.clear("a", "r1");
  EXPECT_EQ(table_.active_count(Severity::kCritical), 1U);
  EXPECT_EQ(table_.active_count(), 2U);
}

// QBER hysteresis: raise above the threshold, hold in the band, clear below 90 % of it.
TEST_F(AlarmTableTest, ThresholdHysteresis) {
  const double thr = 0.10;
  EXPECT_EQ(table_.evaluate_threshold(spec("qber_high", "L1", Severity::kMajor, 0.10), thr),
            ThresholdChange::kNone);  // at the threshold is not above it
  EXPECT_EQ(table_.evaluate_threshold(spec("qber_high", "L1", Severity::kMajor, 0.12), thr),
            ThresholdChange::kRaised);
  EXPECT_EQ(table_.evaluate_threshold(spec("qber_high", "L1", Severity::kMajor, 0.095), thr),
            ThresholdChange::kUpdated);  // inside the band: still active
  const Alarm* a = table_.find_active("qber_high", "L1");
  ASSERT_NE(a, nullptr);
  EXPECT_DOUBLE_EQ(a->last_value, 0.095);
  EXPECT_EQ(a->count, 1U);  // updates are not re-raises
  EXPECT_EQ(table_.evaluate_threshold(spec("qber_high", "L1", Severity::kMajor, 0.0901), thr),
            ThresholdChange::kUpdated);
  EXPECT_EQ(table_.evaluate_threshold(spec("qber_high", "L1", Severity::kMajor, 0.089), thr),
            ThresholdChange::kCleared);
  EXPECT_EQ(table_.find_active("qber_high", "L1"), nullptr);
  EXPECT_EQ(table_.evaluate_threshold(spec("qber_high", "L1", Severity::kMajor, 0.095), thr),
            ThresholdChange::kNone);  // inside the band but not active: stays normal
}

// Hysteresis is configurable and validated; the free helper applies the same rule.
TEST_F(AlarmTableTest, HysteresisConfigurable) {
  table_.set_hysteresis(0.5);
  EXPECT_DOUBLE_EQ(table_.hysteresis(), 0.5);
  table_.evaluate_threshold(spec("qber_high", "L1", Severity::kMajor, 0.2), 0.1);
  EXPECT_EQ(table_.evaluate_threshold(spec("qber_high", "L1", Severity::kMajor, 0.06), 0.1),
            ThresholdChange::kUpdated);
  EXPECT_EQ(table_.evaluate_threshold(spec("qber_high", "L1", Severity::kMajor, 0.049), 0.1),
            ThresholdChange::kCleared);
  EXPECT_THROW(table_.set_hysteresis(1.0), InvalidArgument);
  EXPECT_THROW(table_.set_hysteresis(-0.1), InvalidArgument);
  EXPECT_THROW(AlarmTable(clock_, AlarmConfig{2.0, 10}), InvalidArgument);

  EXPECT_FALSE(hysteresis_alarm(false, 0.11, 0.11, 0.1));
  EXPECT_TRUE(hysteresis_alarm(false, 0.111, 0.11, 0.1));
  EXPECT_TRUE(hysteresis_alarm(true, 0.1, 0.11, 0.1));
  EXPECT_FALSE(hysteresis_alarm(true, 0.098, 0.11, 0.1));
}

// Cleared history is bounded: the oldest cleared alarms are evicted first, active ones never.
TEST_F(AlarmTableTest, ClearedHistoryIsBounded) {
  AlarmTable small(clock_, AlarmConfig{0.1, 2});
  const std::uint64_t keep = small.raise(spec("x", "active")).first.id;
  for (int i = 0; i < 5; ++i) {
    const std::string r = "r" + std::to_string(i);
    small.raise(spec("x", r));
    small.clear("x", r);
  }
  EXPECT_EQ(small.size(), 3U);
  EXPECT_NE(small.find(keep), nullptr);
  EXPECT_EQ(small.find(2), nullptr);
  EXPECT_NE(small.find(6), nullptr);
  EXPECT_THROW(small.acknowledge(2, "x"), NotFound);
}

// Restored alarms keep their ids and later ids follow; duplicates are Conflict.
TEST_F(AlarmTableTest, Restore) {
  Alarm a;
  a.id = 41;
  a.type = "link_down";
  a.resource = "L1";
  a.severity = Severity::kCritical;
  table_.restore(a);
  Alarm c = a;
  c.id = 7;
  c.state = AlarmState::kCleared;
  table_.restore(c);
  EXPECT_EQ(table_.active_count(Severity::kCritical), 1U);
  EXPECT_FALSE(table_.raise(spec("link_down", "L1")).second);
  EXPECT_EQ(table_.raise(spec("qber_high", "L1")).first.id, 42U);
  EXPECT_THROW(table_.restore(a), Conflict);
  Alarm dup = a;
  dup.id = 100;
  EXPECT_THROW(table_.restore(dup), Conflict);
}

// Names and severities parse and print; "cleared" is not a severity; empty keys are rejected.
TEST_F(AlarmTableTest, SeverityNamesAndValidation) {
  for (const Severity s :
       {Severity::kCritical, Severity::kMajor, Severity::kMinor, Severity::kWarning}) {
    EXPECT_EQ(parse_severity(to_string(s)), s);
  }
  EXPECT_THROW(parse_severity("cleared"), InvalidArgument);
  EXPECT_EQ(to_string(AlarmState::kActive), "active");
  EXPECT_EQ(to_string(AlarmState::kCleared), "cleared");
  EXPECT_THROW(table_.raise(spec("", "L1")), InvalidArgument);
  EXPECT_THROW(table_.raise(spec("x", "")), InvalidArgument);
}

}  // namespace
}  // namespace qkdn::controller
