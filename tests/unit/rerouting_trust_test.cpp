// Issue 20: trust constraints through the rerouting engine: per policy (network-wide and per KM
// pair), per SAE pair, on pins and on standing routes when the topology changes.
#include <gtest/gtest.h>

#include <string>

#include "qkdn/controller/error.hpp"
#include "qkdn/controller/rerouting.hpp"
#include "rerouting_test_util.hpp"

namespace qkdn::controller {
namespace {

using testing::Lab;
using testing::policy;
using testing::Strings;

// S-X-D is the short route; S-Y-Z-D goes around X.
struct TrustLab : Lab {
  TrustLab()
      : Lab({"S", "X", "Y", "Z", "D"}, {{"SX", "S", "X", 1e5},
                                        {"XD", "X", "D", 1e5},
                                        {"SY", "S", "Y", 1e5},
                                        {"YZ", "Y", "Z", 1e5},
                                        {"ZD", "Z", "D", 1e5}}) {}
  /// Re-applies the topology with KM `km` at `level` (and tags), feeding the events.
  ReroutingOutput rate_km(const std::string& km, std::optional<int> level, Strings tags = {}) {
    TopologyDoc doc = net.topology();
    for (auto& k : doc.kms) {
      if (k.km_id == km) {
        k.trust_level = level;
        k.tags = tags;
      }
    }
    return feed(net.apply_topology(doc));
  }
  void rate_all(int level) {
    for (const char* km : {"S", "X", "Y", "Z", "D"}) rate_km(km, level);
  }
};

// The network-wide policy's minimum trust moves every computed route off a low-trust KM.
TEST(ReroutingTrust, PolicyMinimumTrustAvoidsLowTrustKm) {
  TrustLab lab;
  lab.rate_all(80);
  lab.rate_km("X", 20);
  EXPECT_EQ(lab.route("S", "D"), (Strings{"S", "X", "D"}));
  lab.engine.set_policy(policy(RerouteMode::kManual, {{"min_trust_level", 50}}));
  EXPECT_EQ(lab.route("S", "D"), (Strings{"S", "Y", "Z", "D"}));
}

// A standing route on a KM whose trust drops below the policy's minimum is rerouted.
TEST(ReroutingTrust, TrustDropReroutesStandingRoute) {
  TrustLab lab;
  lab.rate_all(80);
  lab.engine.set_policy(policy(RerouteMode::kManual, {{"min_trust_level", 50}}));
  EXPECT_EQ(lab.route("S", "D"), (Strings{"S", "X", "D"}));
  auto out = lab.rate_km("X", 10);
  auto events = testing::reroutes_of(out, "S", "D");
  ASSERT_EQ(events.size(), 1U);
  ASSERT_TRUE(events[0].new_route);
  EXPECT_EQ(events[0].new_route->kms, (Strings{"S", "Y", "Z", "D"}));
  EXPECT_EQ(lab.route("S", "D"), (Strings{"S", "Y", "Z", "D"}));
}

// A pair policy's avoided tag and max_intermediates apply to that pair only.
TEST(ReroutingTrust, PairPolicyConstraintsApplyToThePair) {
  TrustLab lab;
  lab.rate_km("X", std::nullopt, {"jurisdiction:XX"});
  ReroutingPolicy p = policy(RerouteMode::kManual);
  p.avoid_tags = {"jurisdiction:XX"};
  lab.engine.set_pair_policy("S", "D", p);
  EXPECT_EQ(lab.route("S", "D"), (Strings{"S", "Y", "Z", "D"}));
  EXPECT_EQ(lab.route("D", "S"), (Strings{"D", "X", "S"}));
  // At most one intermediate and no way around X: refused, and the answer says why.
  p.params.max_intermediates = 1;
  lab.engine.set_pair_policy("S", "D", p);
  auto answer = lab.engine.route_for("S", "D");
  EXPECT_FALSE(answer.route);
  ASSERT_TRUE(answer.refusal);
  EXPECT_EQ(answer.refusal->code, "trust_constraints");
  EXPECT_NE(answer.refusal->detail.find("tagged jurisdiction:XX"), std::string::npos)
      << answer.refusal->detail;
}

// A pin across a KM that breaks the policy's constraints is broken (alarm), never used.
TEST(ReroutingTrust, PinIsHeldToTheConstraints) {
  TrustLab lab;
  lab.rate_all(80);
  lab.rate_km("X", 20);
  lab.engine.pin_route({"S", "D", {"S", "X", "D"}, {}, {}});
  EXPECT_EQ(lab.route("S", "D"), (Strings{"S", "X", "D"}));
  auto out = lab.engine.set_policy(
      policy(RerouteMode::kManual, {{"min_trust_level", 50}, {"pinned_fallback", 0}}));
  ASSERT_EQ(out.raise_alarms.size(), 1U);
  EXPECT_EQ(out.raise_alarms[0].type, alarm_type::kPinnedRouteBroken);
  EXPECT_NE(out.raise_alarms[0].text.find("trust constraints"), std::string::npos)
      << out.raise_alarms[0].text;
  auto answer = lab.engine.route_for("S", "D");
  EXPECT_FALSE(answer.route);
  ASSERT_TRUE(answer.refusal);
  EXPECT_EQ(answer.refusal->code, "pinned_route_broken");
}

// SAE pair constraints come on top of the policy: the SAE pair's relays go around X while the
// KM pair's standing route (and other SAE pairs) keep the short route; no compliant route is a
// refusal naming the SAE pair.
TEST(ReroutingTrust, SaePairConstraintsOnTopOfThePolicy) {
  TrustLab lab;
  lab.rate_all(80);
  lab.rate_km("X", 30);
  SaeConstraintRecord rec;
  rec.src_sae = "SAE-S";
  rec.dst_sae = "SAE-D";
  rec.min_trust_level = 60;
  lab.engine.set_sae_constraints(rec);
  auto strict = lab.engine.route_for_saes("S", "D", "SAE-S", "SAE-D");
  ASSERT_TRUE(strict.route);
  EXPECT_EQ(strict.route->kms, (Strings{"S", "Y", "Z", "D"}));
  EXPECT_EQ(lab.engine.standing_route("S", "D")->kms, (Strings{"S", "X", "D"}));
  auto other = lab.engine.route_for_saes("S", "D", "SAE-S", "SAE-OTHER");
  ASSERT_TRUE(other.route);
  EXPECT_EQ(other.route->kms, (Strings{"S", "X", "D"}));
  EXPECT_EQ(lab.engine.trust_for("S", "D", "SAE-S", "SAE-D").min_trust_level, 60);

  rec.max_intermediates = 1;
  lab.engine.set_sae_constraints(rec);
  auto refused = lab.engine.route_for_saes("S", "D", "SAE-S", "SAE-D");
  EXPECT_FALSE(refused.route);
  ASSERT_TRUE(refused.refusal);
  EXPECT_EQ(refused.refusal->code, "trust_constraints");
  EXPECT_NE(refused.refusal->detail.find("SAE pair SAE-S -> SAE-D"), std::string::npos);

  lab.engine.clear_sae_constraints("SAE-S", "SAE-D");
  EXPECT_EQ(lab.engine.route_for_saes("S", "D", "SAE-S", "SAE-D").route->kms,
            (Strings{"S", "X", "D"}));
  EXPECT_THROW(lab.engine.clear_sae_constraints("SAE-S", "SAE-D"), NotFound);
}

// SAE constraints are checked, exported and imported with the rest of the configuration.
TEST(ReroutingTrust, SaeConstraintsValidateAndRoundTrip) {
  TrustLab lab;
  SaeConstraintRecord bad{"SAE-A", "SAE-A", std::nullopt, 0, {}, {}};
  EXPECT_THROW(lab.engine.set_sae_constraints(bad), InvalidArgument);
  bad.dst_sae = "SAE-B";
  bad.min_trust_level = 200;
  EXPECT_THROW(lab.engine.set_sae_constraints(bad), InvalidArgument);
  bad.min_trust_level = 10;
  bad.max_intermediates = -1;
  EXPECT_THROW(lab.engine.set_sae_constraints(bad), InvalidArgument);
  SaeConstraintRecord ok{"SAE-A", "SAE-B", 2, 40, {"site:colo"}, {}};
  lab.engine.set_sae_constraints(ok);
  ReroutingPolicy p = policy(RerouteMode::kManual, {{"min_trust_level", 30}});
  p.avoid_tags = {"operator:x"};
  lab.engine.set_policy(p);
  const auto cfg = lab.engine.export_config();
  ASSERT_EQ(cfg.sae_constraints.size(), 1U);
  EXPECT_EQ(cfg.policies.front().avoid_tags, (Strings{"operator:x"}));

  TrustLab other;
  other.engine.import_config(cfg);
  ASSERT_TRUE(other.engine.sae_constraints("SAE-A", "SAE-B"));
  EXPECT_EQ(other.engine.sae_constraints("SAE-A", "SAE-B")->avoid_tags, (Strings{"site:colo"}));
  EXPECT_EQ(other.engine.policy().avoid_tags, (Strings{"operator:x"}));
  EXPECT_EQ(other.engine.policy().params.min_trust_level, 30);
}

// Policy trust parameters are range-checked like every parameter.
TEST(ReroutingTrust, PolicyTrustParametersAreChecked) {
  EXPECT_THROW(params_from_map({{"min_trust_level", 101}}), InvalidArgument);
  EXPECT_THROW(params_from_map({{"min_trust_level", 2.5}}), InvalidArgument);
  EXPECT_THROW(params_from_map({{"max_intermediates", -2}}), InvalidArgument);
  EXPECT_EQ(params_from_map({{"max_intermediates", 0}}).max_intermediates, 0);
  ReroutingPolicy p;
  p.avoid_tags = {"ok", "not ok"};
  EXPECT_THROW(validate_policy(p), InvalidArgument);
  EXPECT_FALSE(trust_constraints(ReroutingPolicy{}).max_intermediates);
}

}  // namespace
}  // namespace qkdn::controller
