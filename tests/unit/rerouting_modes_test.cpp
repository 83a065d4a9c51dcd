// Rerouting modes of Y.3803 8.2.5: manual pins, fixed-rate shares, traffic-adaptive EWMA,
// scheduled windows; per-pair overrides and switching modes at run time.
#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <vector>

#include "qkdn/controller/alarms.hpp"
#include "qkdn/controller/error.hpp"
#include "qkdn/controller/rerouting.hpp"
#include "rerouting_test_util.hpp"

namespace qkdn::controller {
namespace {

using std::chrono::seconds;
using testing::for_pair;
using testing::Lab;
using testing::policy;
using testing::reroutes_of;
using testing::Strings;

Lab diamond() {
  return Lab({"A", "B", "C", "D", "E", "F"}, {{"AB", "A", "B", 10'000},
                                              {"AC", "A", "C", 10'000},
                                              {"BD", "B", "D", 10'000},
                                              {"CD", "C", "D", 10'000},
                                              {"EF", "E", "F", 10'000}});
}

Lab line() { return Lab({"A", "B", "C"}, {{"AB", "A", "B", 10'000}, {"BC", "B", "C", 10'000}}); }

PinnedRouteRecord pin(Strings kms, Strings links = {}) {
  PinnedRouteRecord p;
  p.src_km = kms.front();
  p.dst_km = kms.back();
  p.kms = std::move(kms);
  p.links = std::move(links);
  return p;
}

// --- manual ------------------------------------------------------------------------------------

// The pin is used while usable; when it breaks the pair falls back to a computed route and
// pinned_route_broken is raised; when it is repaired the pin is retaken and the alarm cleared.
TEST(Manual, PinFallbackAlarmAndRepair) {
  Lab lab = diamond();
  AlarmTable alarms(lab.clock);
  auto pinned = lab.engine.pin_route(pin({"A", "C", "D"}));
  EXPECT_TRUE(pinned.reroutes.empty());
  auto answer = lab.engine.route_for("A", "D");
  EXPECT_EQ(answer.route->kms, (Strings{"A", "C", "D"}));
  EXPECT_TRUE(answer.pinned);

  auto broken = lab.qber("CD", 0.2);
  ASSERT_EQ(broken.raise_alarms.size(), 1U);
  EXPECT_EQ(broken.raise_alarms[0].type, alarm_type::kPinnedRouteBroken);
  EXPECT_EQ(broken.raise_alarms[0].resource, "A->D");
  EXPECT_EQ(broken.raise_alarms[0].link_id, "CD");
  ASSERT_EQ(broken.reroutes.size(), 1U);
  EXPECT_EQ(broken.reroutes[0].reason, RerouteReason::kQber);
  apply_alarms(broken, alarms);
  EXPECT_NE(alarms.find_active(alarm_type::kPinnedRouteBroken, "A->D"), nullptr);
  answer = lab.engine.route_for("A", "D");
  EXPECT_EQ(answer.route->kms, (Strings{"A", "B", "D"}));
  EXPECT_FALSE(answer.pinned);
  EXPECT_TRUE(answer.output.raise_alarms.empty());  // raised once, not on every call

  auto repaired = lab.qber("CD", 0.01);
  ASSERT_EQ(repaired.clear_alarms.size(), 1U);
  ASSERT_EQ(repaired.reroutes.size(), 1U);
  EXPECT_EQ(repaired.reroutes[0].reason, RerouteReason::kOperator);
  EXPECT_EQ(repaired.reroutes[0].new_route->kms, (Strings{"A", "C", "D"}));
  apply_alarms(repaired, alarms);
  EXPECT_EQ(alarms.find_active(alarm_type::kPinnedRouteBroken, "A->D"), nullptr);
  EXPECT_TRUE(lab.engine.route_for("A", "D").pinned);
}

// With pinned_fallback = 0 a broken pin means no route at all.
TEST(Manual, RefuseWithoutFallback) {
  Lab lab = diamond();
  lab.engine.set_policy(policy(RerouteMode::kManual, {{"pinned_fallback", 0}}));
  lab.engine.pin_route(pin({"A", "C", "D"}));
  auto out = lab.link_up("CD", false);
  EXPECT_EQ(out.raise_alarms.size(), 1U);
  auto answer = lab.engine.route_for("A", "D");
  EXPECT_FALSE(answer.route);
}

// A pinned hop without a link name may use any link between the two KMs; a named link is
// binding.
TEST(Manual, PinnedHopAnyLinkOrNamedLink) {
  Lab lab({"A", "B"}, {{"P1", "A", "B", 10'000}, {"P2", "A", "B", 10'000}});
  lab.engine.pin_route(pin({"A", "B"}, {""}));
  EXPECT_EQ(lab.engine.route_for("A", "B").route->links, Strings{"P1"});
  auto out = lab.link_up("P1", false);
  EXPECT_TRUE(out.raise_alarms.empty());
  ASSERT_EQ(out.reroutes.size(), 1U);
  EXPECT_EQ(out.reroutes[0].reason, RerouteReason::kLinkDown);
  auto answer = lab.engine.route_for("A", "B");
  EXPECT_EQ(answer.route->links, Strings{"P2"});
  EXPECT_TRUE(answer.pinned);

  lab.engine.pin_route(pin({"B", "A"}, {"P1"}));
  auto refused = lab.engine.route_for("B", "A");
  EXPECT_EQ(refused.route->links, Strings{"P2"});  // fallback
  EXPECT_FALSE(refused.pinned);
  EXPECT_EQ(lab.engine.export_config().pinned_routes.size(), 2U);
}

// Unpinning clears a pending alarm.
TEST(Manual, UnpinClearsAlarm) {
  Lab lab = diamond();
  lab.engine.pin_route(pin({"A", "C", "D"}));
  lab.engine.route_for("A", "D");
  EXPECT_EQ(lab.link_up("AC", false).raise_alarms.size(), 1U);
  auto out = lab.engine.unpin_route("A", "D");
  ASSERT_EQ(out.clear_alarms.size(), 1U);
  EXPECT_EQ(out.clear_alarms[0].resource, "A->D");
  EXPECT_THROW(lab.engine.unpin_route("A", "D"), NotFound);
}

// Manual mode moves no keys on its own.
TEST(Manual, NoInstructions) {
  Lab lab = diamond();
  lab.engine.route_for("A", "D");
  EXPECT_TRUE(lab.engine.instructions().empty());
}

// --- fixed_rate --------------------------------------------------------------------------------

// Pairs sharing a link get max-min fair shares of rate_share * rate: a pair with a small demand
// gets it, the other takes what is left on the shared link.
TEST(FixedRate, SharesBottleneckLinks) {
  Lab lab = line();
  lab.engine.set_policy(policy(RerouteMode::kFixedRate, {{"interval_s", 60}}));
  auto out = lab.engine.route_for("A", "C").output;
  ASSERT_EQ(out.send.size(), 1U);
  // Alone: 0.5 * 10000 b/s * 60 s / 256 bits = 1171.875 keys.
  EXPECT_EQ(out.send[0].number_of_keys, 1171U);
  EXPECT_EQ(out.send[0].source_km, "A");
  EXPECT_EQ(out.send[0].destination_kma_id, "C");
  EXPECT_EQ(out.send[0].transit_kma_ids, Strings{"B"});
  EXPECT_EQ(out.send[0].key_size_bits, 256U);
  EXPECT_EQ(out.send[0].interval_s, 60);
  EXPECT_EQ(out.send[0].instruction_id.size(), 36U);

  out =
      lab.engine.set_pair_policy("A", "B", policy(RerouteMode::kFixedRate, {{"demand_keys", 100}}));
  // A->B wants 100 keys (426.7 b/s) of AB's 5000 b/s; A->C gets the remaining 4573.3 b/s.
  ASSERT_EQ(for_pair(lab.engine.instructions(), "A", "B").size(), 1U);
  EXPECT_EQ(for_pair(lab.engine.instructions(), "A", "B")[0].number_of_keys, 100U);
  ASSERT_EQ(for_pair(lab.engine.instructions(), "A", "C").size(), 1U);
  EXPECT_EQ(for_pair(lab.engine.instructions(), "A", "C")[0].number_of_keys, 1071U);
  EXPECT_EQ(for_pair(out.withdraw, "A", "C").size(), 1U);  // the 1171-key plan
}

// Three pairs on two links share each link equally.
TEST(FixedRate, EqualSharesOnSharedLinks) {
  Lab lab = line();
  lab.engine.set_policy(policy(RerouteMode::kFixedRate, {{"interval_s", 60}}));
  lab.engine.route_for("A", "C");
  lab.engine.route_for("A", "B");
  lab.engine.route_for("B", "C");
  auto list = lab.engine.instructions();
  ASSERT_EQ(list.size(), 3U);
  for (const auto& i : list)
    EXPECT_EQ(i.number_of_keys, 585U) << i.source_km << i.destination_kma_id;
}

// A rate change within replan_threshold leaves the plan alone; beyond it the plan is redone and
// only instructions that change are re-sent.
TEST(FixedRate, ReplansOnlyBeyondThreshold) {
  Lab lab = line();
  lab.engine.set_policy(policy(RerouteMode::kFixedRate, {{"interval_s", 60}}));
  lab.engine.route_for("A", "C");
  lab.engine.set_pair_policy("A", "B", policy(RerouteMode::kFixedRate, {{"demand_keys", 100}}));
  const auto before = lab.engine.instructions();

  auto small = lab.rate("AB", 11'000);  // +10 %
  EXPECT_TRUE(small.send.empty());
  EXPECT_TRUE(small.withdraw.empty());
  auto small2 = lab.rate("BC", 9'000);  // -10 %
  EXPECT_TRUE(small2.send.empty());

  auto big = lab.rate("AB", 13'000);  // +30 % from the planned 10000
  // A->C is now bound by BC at 9000 * 0.5 = 4500 b/s: 1054.7 keys; A->B unchanged.
  ASSERT_EQ(big.send.size(), 1U);
  EXPECT_EQ(big.send[0].destination_kma_id, "C");
  EXPECT_EQ(big.send[0].number_of_keys, 1054U);
  ASSERT_EQ(big.withdraw.size(), 1U);
  EXPECT_EQ(big.withdraw[0].number_of_keys, 1071U);
  EXPECT_EQ(lab.engine.instructions().size(), 2U);
  EXPECT_EQ(before.size(), 2U);
}

// A trigger on a planned route re-plans it along the new route.
TEST(FixedRate, TriggerReplansInstruction) {
  Lab lab = diamond();
  lab.engine.set_policy(policy(RerouteMode::kFixedRate));
  auto first = lab.engine.route_for("A", "D").output;
  ASSERT_EQ(first.send.size(), 1U);
  EXPECT_EQ(first.send[0].transit_kma_ids, Strings{"B"});
  auto out = lab.qber("BD", 0.2);
  ASSERT_EQ(out.withdraw.size(), 1U);
  EXPECT_EQ(out.withdraw[0].instruction_id, first.send[0].instruction_id);
  ASSERT_EQ(out.send.size(), 1U);
  EXPECT_EQ(out.send[0].transit_kma_ids, Strings{"C"});
  EXPECT_NE(out.send[0].instruction_id, first.send[0].instruction_id);
  EXPECT_EQ(lab.engine.reroute_count(RerouteReason::kQber), 1U);
}

// --- traffic_adaptive --------------------------------------------------------------------------

// Instructions follow the EWMA of keys relayed per interval, decay without traffic, stop below
// the floor, and the statistics are forgotten after window_s.
TEST(TrafficAdaptive, FollowsEwmaAndDecays) {
  Lab lab = line();
  const SysTime t0 = lab.clock.now();  // 1'700'000'000 s: on the 10 s grid
  lab.engine.set_policy(policy(RerouteMode::kTrafficAdaptive,
                               {{"interval_s", 10}, {"alpha", 0.5}, {"window_s", 100}}));
  lab.engine.record_relay("A", "C", 20, t0 + seconds(1));
  lab.engine.record_relay("A", "C", 20, t0 + seconds(2));
  EXPECT_TRUE(lab.engine.tick(t0 + seconds(5)).send.empty());

  auto out = lab.engine.tick(t0 + seconds(10));
  EXPECT_DOUBLE_EQ(lab.engine.demand_estimate("A", "C"), 20);  // 0.5 * 40
  ASSERT_EQ(out.send.size(), 1U);
  EXPECT_EQ(out.send[0].number_of_keys, 20U);
  EXPECT_EQ(out.send[0].transit_kma_ids, Strings{"B"});
  EXPECT_EQ(out.send[0].interval_s, 10);
  EXPECT_EQ(out.send[0].mode, RerouteMode::kTrafficAdaptive);

  lab.engine.record_relay("A", "C", 40, t0 + seconds(11));
  out = lab.engine.tick(t0 + seconds(20));  // 0.5 * 40 + 0.5 * 20
  EXPECT_DOUBLE_EQ(lab.engine.demand_estimate("A", "C"), 30);
  ASSERT_EQ(out.send.size(), 1U);
  EXPECT_EQ(out.send[0].number_of_keys, 30U);
  EXPECT_EQ(out.withdraw.size(), 1U);

  EXPECT_EQ(lab.engine.tick(t0 + seconds(30)).send.at(0).number_of_keys, 15U);
  EXPECT_EQ(lab.engine.tick(t0 + seconds(40)).send.at(0).number_of_keys, 8U);  // 7.5
  EXPECT_TRUE(lab.engine.tick(t0 + seconds(45)).empty());
  out = lab.engine.tick(t0 + seconds(60));  // two empty intervals: 7.5 / 4
  EXPECT_DOUBLE_EQ(lab.engine.demand_estimate("A", "C"), 1.875);
  EXPECT_EQ(out.send.at(0).number_of_keys, 2U);

  out = lab.engine.tick(t0 + seconds(80));  // 0.47 < demand_floor 1
  EXPECT_TRUE(out.send.empty());
  EXPECT_EQ(out.withdraw.size(), 1U);
  EXPECT_TRUE(lab.engine.instructions().empty());
  lab.engine.tick(t0 + seconds(120));  // last relay at +11 s, window 100 s
  EXPECT_EQ(lab.engine.demand_estimate("A", "C"), 0);
}

// Small changes of the estimate (within replan_threshold) do not re-send the instruction.
TEST(TrafficAdaptive, SmallChangesAreNotResent) {
  Lab lab = line();
  const SysTime t0 = lab.clock.now();
  lab.engine.set_policy(policy(RerouteMode::kTrafficAdaptive, {{"interval_s", 10}, {"alpha", 1}}));
  lab.engine.record_relay("A", "C", 100, t0 + seconds(1));
  EXPECT_EQ(lab.engine.tick(t0 + seconds(10)).send.size(), 1U);
  lab.engine.record_relay("A", "C", 110, t0 + seconds(11));
  EXPECT_TRUE(lab.engine.tick(t0 + seconds(20)).empty());
  EXPECT_EQ(lab.engine.instructions().at(0).number_of_keys, 100U);
}

// Where demands exceed a link's budget they are scaled down in proportion.
TEST(TrafficAdaptive, ProportionalWhenLinksAreShort) {
  Lab lab = line();
  const SysTime t0 = lab.clock.now();
  lab.engine.set_policy(policy(RerouteMode::kTrafficAdaptive, {{"interval_s", 10}, {"alpha", 1}}));
  lab.engine.record_relay("A", "B", 300'000, t0 + seconds(1));
  lab.engine.record_relay("A", "C", 100'000, t0 + seconds(1));
  lab.engine.tick(t0 + seconds(10));
  auto ab = for_pair(lab.engine.instructions(), "A", "B");
  auto ac = for_pair(lab.engine.instructions(), "A", "C");
  ASSERT_EQ(ab.size(), 1U);
  ASSERT_EQ(ac.size(), 1U);
  // AB carries 50000 bits per 10 s interval: 195.3 keys of 256 bits, split 3:1.
  EXPECT_EQ(ab[0].number_of_keys, 146U);
  EXPECT_EQ(ac[0].number_of_keys, 48U);
}

// --- scheduled ---------------------------------------------------------------------------------

// At the window's start the instruction is emitted with its not_before / not_after; at the end
// it expires; a window missed entirely is dropped without emission.
TEST(Scheduled, EmitsAtWindowStartAndExpires) {
  Lab lab = line();
  const SysTime t0 = lab.clock.now();
  lab.engine.set_policy(policy(RerouteMode::kScheduled));
  ScheduleRecord rec{"", "A", "C", 50, 128, t0 + seconds(100), t0 + seconds(200), {}};
  const std::string id = lab.engine.add_schedule(rec);
  EXPECT_EQ(id.size(), 36U);
  EXPECT_TRUE(lab.engine.tick(t0 + seconds(50)).empty());
  auto out = lab.engine.tick(t0 + seconds(100));
  ASSERT_EQ(out.send.size(), 1U);
  const RelayInstruction ins = out.send[0];
  EXPECT_EQ(ins.schedule_id, id);
  EXPECT_EQ(ins.number_of_keys, 50U);
  EXPECT_EQ(ins.key_size_bits, 128U);
  EXPECT_EQ(ins.not_before, t0 + seconds(100));
  EXPECT_EQ(ins.not_after, t0 + seconds(200));
  EXPECT_EQ(ins.interval_s, 0);
  EXPECT_EQ(ins.transit_kma_ids, Strings{"B"});
  EXPECT_TRUE(lab.engine.tick(t0 + seconds(150)).empty());
  out = lab.engine.tick(t0 + seconds(200));
  EXPECT_EQ(out.expired, Strings{ins.instruction_id});
  EXPECT_TRUE(lab.engine.instructions().empty());
  EXPECT_TRUE(lab.engine.schedules().empty());

  lab.engine.add_schedule({"", "A", "C", 5, 256, t0 + seconds(210), t0 + seconds(220), {}});
  out = lab.engine.tick(t0 + seconds(300));
  EXPECT_TRUE(out.send.empty());
  EXPECT_TRUE(lab.engine.schedules().empty());
}

// lead_s emits ahead of the window.
TEST(Scheduled, LeadTime) {
  Lab lab = line();
  const SysTime t0 = lab.clock.now();
  lab.engine.set_policy(policy(RerouteMode::kScheduled, {{"lead_s", 30}}));
  lab.engine.add_schedule({"", "A", "C", 5, 256, t0 + seconds(100), t0 + seconds(200), {}});
  EXPECT_TRUE(lab.engine.tick(t0 + seconds(69)).send.empty());
  EXPECT_EQ(lab.engine.tick(t0 + seconds(70)).send.size(), 1U);
}

// A window that opens on a better route than the standing one reroutes with reason "schedule".
TEST(Scheduled, WindowStartReroutesToBestRoute) {
  Lab lab = diamond();
  const SysTime t0 = lab.clock.now();
  lab.engine.set_policy(policy(RerouteMode::kScheduled));
  ASSERT_EQ(lab.route("A", "D"), (Strings{"A", "B", "D"}));
  EXPECT_TRUE(lab.pool("AB", 2'000).reroutes.empty());  // above the floor: still usable
  EXPECT_EQ(lab.route("A", "D"), (Strings{"A", "B", "D"}));
  lab.engine.add_schedule({"", "A", "D", 5, 256, t0 + seconds(10), t0 + seconds(20), {}});
  auto out = lab.engine.tick(t0 + seconds(10));
  ASSERT_EQ(out.reroutes.size(), 1U);
  EXPECT_EQ(out.reroutes[0].reason, RerouteReason::kSchedule);
  ASSERT_EQ(out.send.size(), 1U);
  EXPECT_EQ(out.send[0].transit_kma_ids, Strings{"C"});
  EXPECT_EQ(lab.engine.reroute_count(RerouteReason::kSchedule), 1U);
}

// Removing an emitted window withdraws its instruction.
TEST(Scheduled, RemoveWithdraws) {
  Lab lab = line();
  const SysTime t0 = lab.clock.now();
  lab.engine.set_policy(policy(RerouteMode::kScheduled));
  auto id = lab.engine.add_schedule({"", "A", "C", 5, 256, t0, t0 + seconds(20), {}});
  ASSERT_EQ(lab.engine.tick(t0).send.size(), 1U);
  EXPECT_EQ(lab.engine.remove_schedule(id).withdraw.size(), 1U);
  EXPECT_THROW(lab.engine.remove_schedule(id), NotFound);
}

// --- overrides and switching -------------------------------------------------------------------

// A pair's override beats the network-wide mode: a manual pair keeps its pin and gets no
// fixed-rate instruction while the others do; a pin is ignored outside manual mode.
TEST(Overrides, PairOverrideBeatsNetwork) {
  Lab lab = diamond();
  lab.engine.set_policy(policy(RerouteMode::kFixedRate));
  lab.engine.set_pair_policy("A", "D", policy(RerouteMode::kManual));
  lab.engine.pin_route(pin({"A", "C", "D"}));
  lab.engine.pin_route(pin({"B", "A", "C"}));
  auto ad = lab.engine.route_for("A", "D");
  EXPECT_TRUE(ad.pinned);
  EXPECT_EQ(ad.route->kms, (Strings{"A", "C", "D"}));
  EXPECT_EQ(lab.engine.effective_policy("A", "D").mode, RerouteMode::kManual);
  EXPECT_EQ(lab.engine.effective_policy("E", "F").mode, RerouteMode::kFixedRate);
  lab.engine.route_for("E", "F");
  EXPECT_TRUE(for_pair(lab.engine.instructions(), "A", "D").empty());
  EXPECT_EQ(for_pair(lab.engine.instructions(), "E", "F").size(), 1U);
  EXPECT_FALSE(lab.engine.route_for("B", "C").pinned);

  // Clearing the override hands the pair to the network-wide fixed_rate plan.
  auto out = lab.engine.clear_pair_policy("A", "D");
  EXPECT_EQ(for_pair(lab.engine.instructions(), "A", "D").size(), 1U);
  EXPECT_FALSE(lab.engine.route_for("A", "D").pinned);
  EXPECT_FALSE(out.send.empty());
}

// Switching the network-wide mode at run time withdraws the old plan and makes the new one.
TEST(Overrides, SwitchingModesAtRunTime) {
  Lab lab = line();
  const SysTime t0 = lab.clock.now();  // 1'700'000'000 s; the 60 s grid closes at +40 s
  lab.engine.set_policy(policy(RerouteMode::kFixedRate));
  lab.engine.route_for("A", "C");
  ASSERT_EQ(lab.engine.instructions().size(), 1U);

  auto out = lab.engine.set_policy(policy(RerouteMode::kManual));
  EXPECT_EQ(out.withdraw.size(), 1U);
  EXPECT_TRUE(lab.engine.instructions().empty());

  lab.engine.record_relay("A", "C", 50, t0 + seconds(1));
  EXPECT_TRUE(lab.engine.tick(t0 + seconds(40)).send.empty());  // manual: statistics only
  EXPECT_DOUBLE_EQ(lab.engine.demand_estimate("A", "C"), 15);   // 0.3 * 50
  out = lab.engine.set_policy(policy(RerouteMode::kTrafficAdaptive));
  ASSERT_EQ(out.send.size(), 1U);
  EXPECT_EQ(out.send[0].number_of_keys, 15U);
  EXPECT_TRUE(out.reroutes.empty());  // routing did not change

  out = lab.engine.set_policy(policy(RerouteMode::kScheduled));
  EXPECT_EQ(out.withdraw.size(), 1U);
  EXPECT_TRUE(lab.engine.instructions().empty());
}

// A metric change re-plans routes and counts as an operator reroute.
TEST(Overrides, MetricChangeReroutesAsOperator) {
  Lab lab({"A", "B", "C"},
          {{"AC", "A", "C", 100}, {"AB", "A", "B", 100'000}, {"BC", "B", "C", 100'000}});
  // Key-aware detours around the slow link once its pool nears the demand (with a full pool the
  // direct link is as good as hop count says: issue 20's headroom gate).
  lab.pool("AC", 600);
  ASSERT_EQ(lab.route("A", "C"), (Strings{"A", "B", "C"}));
  auto out = lab.engine.set_pair_policy(
      "A", "C", policy(RerouteMode::kManual, {{"metric", 2}}));  // hop_count
  ASSERT_EQ(reroutes_of(out, "A", "C").size(), 1U);
  EXPECT_EQ(out.reroutes[0].reason, RerouteReason::kOperator);
  EXPECT_EQ(lab.route("A", "C"), (Strings{"A", "C"}));
}

}  // namespace
}  // namespace qkdn::controller
