// Emulated QKD links: both ends hold identical keys (one agent, and two agents over the network),
// run-time control through the admin API, and the alarms it causes.
#include <gtest/gtest.h>
#include <boost/json.hpp>

#include "agent_test_support.hpp"

namespace qkdn::agent::test {
namespace {

namespace http = boost::beast::http;

// Stops the link and waits until both ends hold the same number of keys (in-flight batches
// acknowledged), then returns both digests.
std::pair<std::string, std::string> settle_and_digest(Agent& a, Agent& b, const std::string& link) {
  EXPECT_TRUE(a.control_link(link, LinkControl{std::nullopt, std::nullopt, false}));
  EXPECT_TRUE(eventually([&] {
    auto x = link_of(a, "KM1", link);
    auto y = link_of(b, "KM2", link);
    return x && y && !x->up && !y->up && x->stored_keys == y->stored_keys && x->stored_keys > 0;
  }));
  return {a.link_digest("KM1", link).value_or("a"), b.link_digest("KM2", link).value_or("b")};
}

// Two KMs hosted by one agent obtain identical key blocks (same IDs, same bytes).
TEST(AgentLinksTest, TwoKmsInOneAgentHoldIdenticalKeys) {
  IoThreads io;
  FakeController controller(io.io, 1);
  Agent agent(io.io, test_config(controller.port(), {"KM1", "KM2"}));
  agent.start();
  ASSERT_TRUE(eventually([&] {
    auto l = link_of(agent, "KM2", "L12");
    return l && l->stored_keys >= 50;
  }));
  const auto km1 = link_of(agent, "KM1", "L12");
  EXPECT_TRUE(km1->primary);
  EXPECT_FALSE(link_of(agent, "KM2", "L12")->primary);
  const auto [d1, d2] = settle_and_digest(agent, agent, "L12");
  EXPECT_EQ(d1, d2);
  EXPECT_EQ(d1.size(), 64u);
  agent.stop();
  controller.stop();
  io.join();
}

// Two agent instances (the cross-process path: endpoints from the controller's peers list)
// obtain identical keys; a link change made at one agent reaches the other end.
TEST(AgentLinksTest, TwoAgentsHoldIdenticalKeysAndShareControl) {
  IoThreads io;
  FakeController controller(io.io, 1);
  auto cfg1 = test_config(controller.port(), {"KM1"});
  auto cfg2 = test_config(controller.port(), {"KM2"});
  cfg2.seed = 43;
  Agent a1(io.io, cfg1);
  Agent a2(io.io, cfg2);
  a1.start();
  a2.start();
  ASSERT_TRUE(eventually([&] {
    auto x = link_of(a1, "KM1", "L12");
    auto y = link_of(a2, "KM2", "L12");
    return x && y && x->stored_keys >= 50 && y->stored_keys >= 50;
  }));
  // The "down" set at agent 1 reaches KM2 in agent 2 over the KMA link.
  const auto [d1, d2] = settle_and_digest(a1, a2, "L12");
  EXPECT_EQ(d1, d2);
  EXPECT_FALSE(link_of(a2, "KM2", "L12")->admin_up);
  // Back up: keys flow again, and both ends still agree afterwards.
  ASSERT_TRUE(a2.control_link("L12", LinkControl{std::nullopt, std::nullopt, true}));
  const auto before = link_of(a1, "KM1", "L12")->stored_keys;
  ASSERT_TRUE(eventually([&] { return link_of(a1, "KM1", "L12")->stored_keys > before + 20; }));
  const auto [e1, e2] = settle_and_digest(a1, a2, "L12");
  EXPECT_EQ(e1, e2);
  EXPECT_NE(e1, d1);
  a1.stop();
  a2.stop();
  controller.stop();
  io.join();
}

// After the secondary's agent restarts (empty store), the ends resynchronize: the primary drops
// what the secondary no longer has, and both agree again.
TEST(AgentLinksTest, ResynchronizesAfterPeerRestart) {
  IoThreads io;
  FakeController controller(io.io, 1);
  Agent a1(io.io, test_config(controller.port(), {"KM1"}));
  a1.start();
  auto a2 = std::make_unique<Agent>(io.io, test_config(controller.port(), {"KM2"}));
  a2->start();
  ASSERT_TRUE(eventually([&] { return link_of(*a2, "KM2", "L12")->stored_keys >= 30; }));
  a2->stop();
  ASSERT_TRUE(a2->wait_stopped(20s));
  ASSERT_TRUE(eventually([&] { return !link_of(a1, "KM1", "L12")->kma_connected; }));
  a2 = std::make_unique<Agent>(io.io, test_config(controller.port(), {"KM2"}));
  a2->start();
  ASSERT_TRUE(eventually([&] {
    auto x = link_of(a1, "KM1", "L12");
    return x->up && link_of(*a2, "KM2", "L12")->stored_keys >= 10;
  }));
  const auto [d1, d2] = settle_and_digest(a1, *a2, "L12");
  EXPECT_EQ(d1, d2);
  a1.stop();
  a2->stop();
  controller.stop();
  io.join();
}

// The admin API changes QBER, rate and up/down at run time; alarms reach the controller:
// qber_high major then cleared, link_down then link_up.
TEST(AgentLinksTest, AdminApiDrivesLinksAndAlarms) {
  IoThreads io;
  FakeController controller(io.io, 1);
  auto cfg = test_config(controller.port(), {"KM1", "KM2"});
  cfg.admin_port = 0;
  Agent agent(io.io, cfg);
  agent.start();
  const auto port = agent.admin_port();
  ASSERT_NE(port, 0);
  ASSERT_TRUE(eventually([&] {
    auto l = link_of(agent, "KM1", "L12");
    return l && l->up && controller.registrations("KM1") >= 1;
  }));

  auto [status, body] = http_request(port, http::verb::get, "/admin/state");
  ASSERT_EQ(status, 200);
  const auto state = boost::json::parse(body).as_object();
  ASSERT_EQ(state.at("kms").as_array().size(), 2u);
  EXPECT_EQ(state.at("kms").as_array()[0].at("km_id").as_string(), "KM1");

  std::tie(status, body) =
      http_request(port, http::verb::post, "/admin/links/L12", R"({"qber":0.2})");
  ASSERT_EQ(status, 200) << body;
  ASSERT_TRUE(controller.wait_for([](const auto& rs) {
    return has_alarm(rs, "KM1", "qber_high", "major") && has_alarm(rs, "KM2", "qber_high", "major");
  }));
  EXPECT_DOUBLE_EQ(link_of(agent, "KM2", "L12")->qber, 0.2);
  std::tie(status, body) =
      http_request(port, http::verb::post, "/admin/links/L12", R"({"qber":0.03})");
  ASSERT_EQ(status, 200);
  ASSERT_TRUE(controller.wait_for([](const auto& rs) {
    return has_alarm(rs, "KM1", "qber_high", "cleared") &&
           has_alarm(rs, "KM2", "qber_high", "cleared");
  }));

  std::tie(status, body) =
      http_request(port, http::verb::post, "/admin/links/L12", R"({"up":false})");
  ASSERT_EQ(status, 200);
  ASSERT_TRUE(controller.wait_for([](const auto& rs) {
    return has_alarm(rs, "KM1", "link_down", "major") && has_alarm(rs, "KM2", "link_down", "major");
  }));
  // A down link reports down and stops growing.
  ASSERT_TRUE(controller.wait_for([](const auto& rs) {
    for (auto it = rs.rbegin(); it != rs.rend(); ++it) {
      if (it->km_id != "KM1" || !it->message) continue;
      if (const auto* s = std::get_if<ck::StatusReport>(&*it->message)) {
        return s->links.at(0).state == "down";
      }
    }
    return false;
  }));
  const auto frozen = link_of(agent, "KM1", "L12")->stored_keys;
  std::tie(status, body) = http_request(port, http::verb::post, "/admin/links/L12",
                                        R"({"up":true,"key_rate_bps":65536})");
  ASSERT_EQ(status, 200);
  ASSERT_TRUE(controller.wait_for([](const auto& rs) {
    return has_alarm(rs, "KM1", "link_up", "cleared") && has_alarm(rs, "KM2", "link_up", "cleared");
  }));
  ASSERT_TRUE(eventually([&] {
    auto l = link_of(agent, "KM1", "L12");
    return l->key_rate_bps == 65536 && l->stored_keys > frozen + 256;
  }));

  // Bad requests are refused with a problem document.
  EXPECT_EQ(http_request(port, http::verb::post, "/admin/links/L12", R"({"qber":7})").first, 400);
  EXPECT_EQ(http_request(port, http::verb::post, "/admin/links/L12", "not json").first, 400);
  // A misspelt field is refused, not ignored with a 200 that changed nothing.
  EXPECT_EQ(http_request(port, http::verb::post, "/admin/links/L12", R"({"qbr":0.2})").first, 400);
  EXPECT_EQ(http_request(port, http::verb::post, "/admin/links/L12", R"({"up":"no"})").first, 400);
  EXPECT_EQ(http_request(port, http::verb::post, "/admin/links/L99", R"({"up":true})").first, 404);
  EXPECT_EQ(http_request(port, http::verb::get, "/admin/nothing").first, 404);

  // The disconnect hook drops the Ck connection; the KM registers again.
  EXPECT_EQ(http_request(port, http::verb::post, "/admin/kms/KM2/disconnect").first, 200);
  ASSERT_TRUE(eventually([&] { return controller.registrations("KM2") >= 2; }));

  agent.stop();
  controller.stop();
  io.join();
}

// A pool floor raises key_pool_low while the pool is small and clears it once refilled.
TEST(AgentLinksTest, KeyPoolLowRaisedAndCleared) {
  IoThreads io;
  FakeController controller(io.io, 1);
  auto cfg = test_config(controller.port(), {"KM1", "KM2"});
  cfg.pool_floor_bits = 16384;
  Agent agent(io.io, cfg);
  agent.start();
  ASSERT_TRUE(controller.wait_for(
      [](const auto& rs) { return has_alarm(rs, "KM1", "key_pool_low", "cleared"); }));
  EXPECT_TRUE(has_alarm(controller.received(), "KM1", "key_pool_low", "minor"));
  agent.stop();
  controller.stop();
  io.join();
}

}  // namespace
}  // namespace qkdn::agent::test
