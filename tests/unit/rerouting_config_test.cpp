// Rerouting configuration: mode and parameter validation, pinned route and schedule checks, and
// export / import as persistence records.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "qkdn/controller/error.hpp"
#include "qkdn/controller/rerouting.hpp"
#include "rerouting_test_util.hpp"

namespace qkdn::controller {
namespace {

using std::chrono::seconds;
using testing::Lab;
using testing::policy;
using testing::Strings;

Lab diamond() {
  return Lab({"A", "B", "C", "D"}, {{"AB", "A", "B", 10'000},
                                    {"AC", "A", "C", 10'000},
                                    {"BD", "B", "D", 10'000},
                                    {"CD", "C", "D", 10'000}});
}

// Expects InvalidArgument whose message contains `needle`.
template <class F>
void expect_invalid(F&& f, const std::string& needle) {
  try {
    f();
    ADD_FAILURE() << "no exception; expected one naming '" << needle << "'";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

// Mode names round-trip; an unknown mode is rejected.
TEST(Config, ModeNames) {
  for (auto m : {RerouteMode::kManual, RerouteMode::kFixedRate, RerouteMode::kTrafficAdaptive,
                 RerouteMode::kScheduled}) {
    EXPECT_EQ(parse_reroute_mode(to_string(m)), m);
  }
  expect_invalid([] { parse_reroute_mode("adaptive"); }, "adaptive");
  PolicyRecord rec{"", "", "bogus", {}};
  expect_invalid([&] { policy_from_record(rec); }, "bogus");
}

// Reason labels are the metric's.
TEST(Config, ReasonNames) {
  Strings names;
  for (auto r : kAllRerouteReasons) names.emplace_back(to_string(r));
  EXPECT_EQ(names, (Strings{"qber", "link_down", "km_disconnect", "pool_low", "operator",
                            "rate_change", "schedule"}));
}

// Negative, NaN, out-of-range and unknown parameters are rejected, naming the parameter.
TEST(Config, BadParametersNameTheParameter) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  expect_invalid([] { params_from_map({{"alpha", -1}}); }, "'alpha'");
  expect_invalid([&] { params_from_map({{"window_s", nan}}); }, "'window_s'");
  expect_invalid([] { params_from_map({{"replan_threshold", -0.1}}); }, "'replan_threshold'");
  expect_invalid([] { params_from_map({{"rate_share", 1.5}}); }, "'rate_share'");
  expect_invalid([] { params_from_map({{"interval_s", 0}}); }, "'interval_s'");
  expect_invalid([] { params_from_map({{"max_hops", 2.5}}); }, "'max_hops'");
  expect_invalid([] { params_from_map({{"metric", 7}}); }, "'metric'");
  expect_invalid([] { params_from_map({{"speed", 1}}); }, "'speed'");

  ManualClock clock;
  SeededRandom rng(1);
  ReroutingEngine engine(clock, rng);
  ReroutingPolicy p;
  p.params.demand_keys = -5;
  expect_invalid([&] { engine.set_policy(p); }, "'demand_keys'");
  p.params.demand_keys = 0;
  p.params.headroom = std::numeric_limits<double>::infinity();
  expect_invalid([&] { engine.set_pair_policy("A", "B", p); }, "'headroom'");
  expect_invalid([&] { engine.set_pair_policy("A", "A", ReroutingPolicy{}); }, "same KM");
  EXPECT_EQ(engine.policy().mode, RerouteMode::kManual);  // unchanged
}

// Pinned routes must be well formed and fit the topology.
TEST(Config, PinnedRouteValidation) {
  Lab lab = diamond();
  auto pin = [](Strings kms, Strings links = {}) {
    return PinnedRouteRecord{kms.front(), kms.back(), kms, links, {}};
  };
  expect_invalid([&] { lab.engine.pin_route(pin({"A", "X", "D"})); }, "unknown KM 'X'");
  expect_invalid([&] { lab.engine.pin_route(pin({"A", "D"})); }, "no link between 'A' and 'D'");
  expect_invalid(
      [&] {
        lab.engine.pin_route(pin({"A", "B", "D"}, {"AB", "CD"}));
      },
      "link 'CD' does not join");
  expect_invalid(
      [&] {
        lab.engine.pin_route(pin({"A", "B", "D"}, {"AB", "ZZ"}));
      },
      "unknown link 'ZZ'");
  expect_invalid([&] { lab.engine.pin_route(pin({"A", "B", "D"}, {"AB"})); }, "one entry per hop");
  expect_invalid([&] { lab.engine.pin_route(pin({"A", "B", "A", "C"})); }, "appears twice");
  expect_invalid([&] { lab.engine.pin_route({"A", "D", {"A", "B"}, {}, {}}); }, "end at dst_km");
  EXPECT_TRUE(lab.engine.pinned_routes().empty());
  lab.engine.pin_route(pin({"A", "B", "D"}, {"AB", ""}));
  EXPECT_EQ(lab.engine.pinned_routes().size(), 1U);
}

// Schedules need a window with not_after > not_before and at least one key.
TEST(Config, ScheduleValidation) {
  Lab lab = diamond();
  const SysTime t = lab.clock.now();
  expect_invalid([&] { lab.engine.add_schedule({"", "A", "D", 5, 256, t, t, {}}); }, "not_after");
  expect_invalid(
      [&] {
        lab.engine.add_schedule({"", "A", "D", 5, 256, t + seconds(2), t + seconds(1), {}});
      },
      "not_after");
  expect_invalid(
      [&] {
        lab.engine.add_schedule({"", "A", "D", 0, 256, t, t + seconds(1), {}});
      },
      "number_of_keys");
  // Issue 13: one round of an instruction is one relay at the source KM; a schedule asking for
  // more keys than one relay carries (key_limits.hpp, which agents enforce) is refused here.
  expect_invalid(
      [&] {
        lab.engine.add_schedule(
            {"", "A", "D", limits::kMaxKeysPerInstruction + 1, 256, t, t + seconds(1), {}});
      },
      "number_of_keys");
  expect_invalid(
      [&] {
        lab.engine.add_schedule({"", "A", "Q", 1, 256, t, t + seconds(1), {}});
      },
      "unknown KM 'Q'");
  auto id = lab.engine.add_schedule({"s1", "A", "D", 1, 256, t, t + seconds(1), {}});
  EXPECT_EQ(id, "s1");
  EXPECT_THROW(lab.engine.add_schedule({"s1", "A", "D", 1, 256, t, t + seconds(1), {}}), Conflict);
}

// The configuration exported as records imports into a fresh engine unchanged, and the imported
// pin and override take effect there.
TEST(Config, ExportImportRoundTrip) {
  Lab lab = diamond();
  const SysTime t = lab.clock.now();
  lab.engine.set_policy(policy(RerouteMode::kFixedRate, {{"replan_threshold", 0.3}}));
  lab.engine.set_pair_policy("A", "D", policy(RerouteMode::kManual, {{"metric", 2}}));
  lab.engine.pin_route({"A", "D", {"A", "C", "D"}, {"AC", "CD"}, {}});
  lab.engine.add_schedule({"s1", "B", "C", 10, 256, t + seconds(5), t + seconds(50), {}});
  const ReroutingConfig cfg = lab.engine.export_config();
  ASSERT_EQ(cfg.policies.size(), 2U);
  EXPECT_TRUE(cfg.policies[0].src_km.empty());
  EXPECT_EQ(cfg.policies[0].mode, "fixed_rate");
  EXPECT_EQ(cfg.policies[0].params.at("replan_threshold"), 0.3);
  EXPECT_EQ(cfg.policies[1].src_km, "A");
  EXPECT_EQ(cfg.policies[1].params.at("metric"), 2);
  ASSERT_EQ(cfg.pinned_routes.size(), 1U);
  EXPECT_EQ(cfg.pinned_routes[0].created_at, t);
  ASSERT_EQ(cfg.schedules.size(), 1U);

  Lab other = diamond();
  other.engine.import_config(cfg);
  const ReroutingConfig again = other.engine.export_config();
  ASSERT_EQ(again.policies.size(), 2U);
  for (std::size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(again.policies[i].src_km, cfg.policies[i].src_km);
    EXPECT_EQ(again.policies[i].mode, cfg.policies[i].mode);
    EXPECT_EQ(again.policies[i].params, cfg.policies[i].params);
  }
  EXPECT_EQ(again.pinned_routes[0].kms, cfg.pinned_routes[0].kms);
  EXPECT_EQ(again.pinned_routes[0].links, cfg.pinned_routes[0].links);
  EXPECT_EQ(again.schedules[0].schedule_id, "s1");
  EXPECT_EQ(again.schedules[0].not_after, t + seconds(50));
  EXPECT_EQ(other.engine.effective_policy("A", "D").params.metric, RouteMetric::kHopCount);
  EXPECT_TRUE(other.engine.route_for("A", "D").pinned);
}

// An import with one bad record changes nothing.
TEST(Config, ImportIsAllOrNothing) {
  Lab lab = diamond();
  ReroutingConfig cfg;
  cfg.policies.push_back({"", "", "traffic_adaptive", {}});
  cfg.pinned_routes.push_back({"A", "D", {"A", "B", "D"}, {}, {}});
  cfg.schedules.push_back({"s", "A", "D", 1, 256, lab.clock.now(), lab.clock.now(), {}});
  expect_invalid([&] { lab.engine.import_config(cfg); }, "not_after");
  EXPECT_EQ(lab.engine.policy().mode, RerouteMode::kManual);
  EXPECT_TRUE(lab.engine.pinned_routes().empty());
  cfg.schedules.clear();
  cfg.policies.push_back({"A", "", "manual", {}});
  expect_invalid([&] { lab.engine.import_config(cfg); }, "both");
  cfg.policies.pop_back();
  lab.engine.import_config(cfg);
  EXPECT_EQ(lab.engine.policy().mode, RerouteMode::kTrafficAdaptive);
}

// The parameter map lists every parameter and reads back the same values.
TEST(Config, ParamMapRoundTrip) {
  ReroutingParams p;
  p.metric = RouteMetric::kWidestShortest;
  p.alpha = 0.7;
  p.lead_s = 12;
  auto m = params_to_map(p);
  EXPECT_EQ(m.size(), 16U);  // 14 + the trust parameters max_intermediates, min_trust_level
  auto back = params_from_map(m);
  EXPECT_EQ(back.metric, RouteMetric::kWidestShortest);
  EXPECT_EQ(back.alpha, 0.7);
  EXPECT_EQ(back.lead_s, 12);
  EXPECT_EQ(params_to_map(back), m);
}

}  // namespace
}  // namespace qkdn::controller
