// The agent's Ck client against a fake controller: registration, heartbeats, status reports,
// refusal of unknown and stale commands, reconnection.
#include <gtest/gtest.h>
#include <boost/json.hpp>

#include "agent_test_support.hpp"

namespace qkdn::agent::test {
namespace {

class AgentCkTest : public ::testing::Test {
 protected:
  void SetUp() override {
    controller_ = std::make_unique<FakeController>(io_.io, 5);
    agent_ = std::make_unique<Agent>(io_.io, test_config(controller_->port(), {"KM1", "KM2"}));
    agent_->start();
  }
  void TearDown() override {
    agent_->stop();
    controller_->stop();
    io_.join();
  }

  /// Frames of one command code from one KM.
  std::vector<Received> frames(const std::string& km, ck::Command code) {
    std::vector<Received> out;
    for (auto& r : controller_->received()) {
      if (r.km_id == km && r.command == static_cast<std::uint16_t>(code)) out.push_back(r);
    }
    return out;
  }

  /// Waits for an Error frame from `km` that refers to `message_id`; returns it.
  std::optional<ck::ErrorMessage> error_for(const std::string& km, std::uint32_t message_id) {
    std::optional<ck::ErrorMessage> found;
    controller_->wait_for([&](const std::vector<Received>& rs) {
      for (const auto& r : rs) {
        if (r.km_id != km || !r.message) continue;
        if (const auto* e = std::get_if<ck::ErrorMessage>(&*r.message);
            e != nullptr && e->message_id == message_id) {
          found = *e;
          return true;
        }
      }
      return false;
    });
    return found;
  }

  IoThreads io_;
  std::unique_ptr<FakeController> controller_;
  std::unique_ptr<Agent> agent_;
};

// Each hosted KM registers with its KMA endpoint, its links with peers, its SAEs and software.
TEST_F(AgentCkTest, RegistersWithTopologyFields) {
  ASSERT_TRUE(eventually([&] {
    return controller_->registrations("KM1") >= 1 && controller_->registrations("KM2") >= 1;
  }));
  const auto regs = frames("KM1", ck::Command::kRegister);
  ASSERT_FALSE(regs.empty());
  const auto& reg = std::get<ck::Register>(*regs.front().message);
  EXPECT_EQ(reg.km_id, "KM1");
  EXPECT_EQ(reg.kma_endpoint, agent_->kma_endpoint("KM1"));
  EXPECT_NE(reg.kma_endpoint.substr(reg.kma_endpoint.rfind(':') + 1), "0");
  ASSERT_EQ(reg.links.size(), 1u);
  EXPECT_EQ(reg.links[0].link_id, "L12");
  EXPECT_EQ(reg.links[0].peer_kma_id, "KM2");
  ASSERT_TRUE(reg.applications.has_value());
  EXPECT_EQ(*reg.applications, std::vector<std::string>{"SAE-A"});
  ASSERT_TRUE(reg.software.has_value());
  EXPECT_EQ(reg.software->rfind("qkdn-agent/", 0), 0u);

  const auto regs2 = frames("KM2", ck::Command::kRegister);
  ASSERT_FALSE(regs2.empty());
  EXPECT_EQ(std::get<ck::Register>(*regs2.front().message).links.size(), 2u);
}

// Heartbeats follow the interval of the registration response; status reports cover all links.
TEST_F(AgentCkTest, SendsHeartbeatsAndStatusReports) {
  ASSERT_TRUE(controller_->wait_for([&](const auto& rs) {
    int beats = 0;
    for (const auto& r : rs) {
      if (r.km_id == "KM2" && r.command == static_cast<std::uint16_t>(ck::Command::kHeartbeat)) {
        ++beats;
      }
    }
    return beats >= 3;
  }));
  ASSERT_TRUE(controller_->wait_for([&](const auto& rs) {
    for (const auto& r : rs) {
      if (r.km_id != "KM2" || !r.message) continue;
      const auto* s = std::get_if<ck::StatusReport>(&*r.message);
      if (s == nullptr || s->links.size() != 2) continue;
      for (const auto& l : s->links) {
        if (l.link_id == "L12" && l.state == "up" && l.stored_key_bits > 0) return true;
      }
    }
    return false;
  }));
  // L23's far end (KM3) is not running: reported down, empty.
  const auto reports = frames("KM2", ck::Command::kStatusReport);
  const auto& last = std::get<ck::StatusReport>(*reports.back().message);
  EXPECT_EQ(last.kma_id, "KM2");
  EXPECT_FALSE(last.timestamp.empty());
  for (const auto& l : last.links) {
    if (l.link_id == "L23") {
      EXPECT_EQ(l.state, "down");
      EXPECT_EQ(l.stored_keys, 0);
      EXPECT_EQ(l.peer_kma_id, "KM3");
    }
  }
}

// Pools grow at the configured rate, and the measured rate is reported.
TEST_F(AgentCkTest, StatusReportsPoolsGrowingAtConfiguredRate) {
  constexpr double kRate = 16384;
  auto l12 = [](const Received& r) -> std::optional<ck::LinkStatus> {
    if (!r.message) return std::nullopt;
    const auto* s = std::get_if<ck::StatusReport>(&*r.message);
    if (s == nullptr) return std::nullopt;
    for (const auto& l : s->links) {
      if (l.link_id == "L12") return l;
    }
    return std::nullopt;
  };
  // Wait for the link to have been up for a while (the meter's 5 s window fills).
  ASSERT_TRUE(controller_->wait_for(
      [&](const auto& rs) {
        for (const auto& r : rs) {
          if (r.km_id != "KM1") continue;
          auto l = l12(r);
          if (l && l->stored_key_bits >= static_cast<std::int64_t>(kRate * 6)) return true;
        }
        return false;
      },
      60s));
  const auto reports = frames("KM1", ck::Command::kStatusReport);
  // Compare the latest report with one at least 2 s older.
  const auto& newest = reports.back();
  const Received* older = nullptr;
  for (auto it = reports.rbegin(); it != reports.rend(); ++it) {
    if (newest.at - it->at >= 2s) {
      older = &*it;
      break;
    }
  }
  ASSERT_NE(older, nullptr);
  const double secs = std::chrono::duration<double>(newest.at - older->at).count();
  const double grown =
      static_cast<double>(l12(newest)->stored_key_bits - l12(*older)->stored_key_bits);
  EXPECT_NEAR(grown / secs, kRate, kRate * 0.3);
  EXPECT_NEAR(l12(newest)->key_rate_bps, kRate, kRate * 0.3);
  EXPECT_DOUBLE_EQ(l12(newest)->qber, 0.02);
  EXPECT_EQ(l12(newest)->stored_keys * 256, l12(newest)->stored_key_bits);
}

// Key-supply commands are answered with their responses (0x140B, 0x14E6 "OK" / "NG: ..."),
// unknown codes unknown_command, and a command from an older controller epoch stale_epoch;
// nothing is silently dropped.
TEST_F(AgentCkTest, RefusesUnknownUnimplementedAndStaleCommands) {
  ASSERT_TRUE(eventually([&] { return controller_->registrations("KM1") >= 1; }));
  ASSERT_TRUE(eventually([&] {
    for (const auto& k : agent_->snapshot()) {
      if (k.km_id == "KM1") return k.registered;
    }
    return false;
  }));
  const std::string reserve =
      R"({"source_kma_id":"KM1","destination_kma_id":"KM2","number_of_keys":1,"controller_epoch":5})";
  // A response to `message_id` with `code` from KM1.
  auto response_to = [&](std::uint32_t message_id, std::uint16_t code) {
    std::optional<Received> found;
    controller_->wait_for([&](const std::vector<Received>& rs) {
      for (const auto& r : rs) {
        if (r.km_id == "KM1" && r.command == code && r.message_id == message_id) {
          found = r;
          return true;
        }
      }
      return false;
    });
    return found;
  };
  auto id = controller_->send_raw("KM1", 0x410A, reserve);
  auto reserved = response_to(id, 0x140B);
  ASSERT_TRUE(reserved && reserved->message);
  std::optional<ck::ErrorMessage> err;

  id = controller_->send_raw("KM1", 0x41F7, R"({"controller_epoch":5})");
  err = error_for("KM1", id);
  ASSERT_TRUE(err);
  EXPECT_EQ(err->error, "unknown_command");

  id = controller_->send_raw(
      "KM1", 0x410A, R"({"source_kma_id":"KM1","destination_kma_id":"KM2","controller_epoch":4})");
  err = error_for("KM1", id);
  ASSERT_TRUE(err);
  EXPECT_EQ(err->error, "stale_epoch");

  // A newer epoch raises the fence: the old epoch is now stale too.
  id = controller_->send_raw(
      "KM1", 0x41E5,
      R"({"instruction_id":"7d5f0c1e-8a7b-4c2d-9e1f-0a1b2c3d4e5f","destination_kma_id":"KM2","transit_kma_ids":[],"number_of_keys":1,"controller_epoch":9})");
  auto instructed = response_to(id, 0x14E6);
  ASSERT_TRUE(instructed && instructed->message);
  EXPECT_EQ(std::get<ck::RelayInstructionResponse>(*instructed->message).response, "OK");
  // An instruction towards the KM itself is refused, under the same MessageID.
  id = controller_->send_raw(
      "KM1", 0x41E5,
      R"({"instruction_id":"8d5f0c1e-8a7b-4c2d-9e1f-0a1b2c3d4e5f","destination_kma_id":"KM1","transit_kma_ids":[],"number_of_keys":1,"controller_epoch":9})");
  instructed = response_to(id, 0x14E6);
  ASSERT_TRUE(instructed && instructed->message);
  EXPECT_EQ(std::get<ck::RelayInstructionResponse>(*instructed->message).response.rfind("NG: ", 0),
            0u);
  // Withdrawing (docs/ck-extensions.md) is answered OK.
  id = controller_->send_raw(
      "KM1", 0x41E5,
      R"({"instruction_id":"7d5f0c1e-8a7b-4c2d-9e1f-0a1b2c3d4e5f","destination_kma_id":"KM2","transit_kma_ids":[],"number_of_keys":1,"extension":[{"withdraw":true}],"controller_epoch":9})");
  instructed = response_to(id, 0x14E6);
  ASSERT_TRUE(instructed && instructed->message);
  EXPECT_EQ(std::get<ck::RelayInstructionResponse>(*instructed->message).response, "OK");
  // A withdraw that is not a boolean is refused, not ignored (which started the relays).
  id = controller_->send_raw(
      "KM1", 0x41E5,
      R"({"instruction_id":"9d5f0c1e-8a7b-4c2d-9e1f-0a1b2c3d4e5f","destination_kma_id":"KM2","transit_kma_ids":[],"number_of_keys":1,"extension":[{"withdraw":"yes"}],"controller_epoch":9})");
  instructed = response_to(id, 0x14E6);
  ASSERT_TRUE(instructed && instructed->message);
  EXPECT_EQ(std::get<ck::RelayInstructionResponse>(*instructed->message).response,
            "NG: bad_request: withdraw");
  id = controller_->send_raw("KM1", 0x410A, reserve);
  err = error_for("KM1", id);
  ASSERT_TRUE(err);
  EXPECT_EQ(err->error, "stale_epoch");

  // A command without an epoch is malformed.
  id = controller_->send_raw("KM1", 0x410C,
                             R"({"source_kma_id":"KM1","destination_kma_id":"KM2","key_ids":[]})");
  err = error_for("KM1", id);
  ASSERT_TRUE(err);
  EXPECT_EQ(err->error, "bad_request");
}

// When the controller drops the connection the KM reconnects and registers again; so it does
// after the admin disconnect hook.
TEST_F(AgentCkTest, ReconnectsAfterTheControllerDropsTheConnection) {
  ASSERT_TRUE(eventually([&] { return controller_->registrations("KM1") == 1; }));
  controller_->drop("KM1");
  ASSERT_TRUE(eventually([&] { return controller_->registrations("KM1") == 2; }));
  ASSERT_TRUE(agent_->disconnect("KM1"));
  ASSERT_TRUE(eventually([&] { return controller_->registrations("KM1") == 3; }));
  // The other KM kept its single connection.
  EXPECT_EQ(controller_->registrations("KM2"), 1);
  ASSERT_TRUE(eventually([&] {
    for (const auto& k : agent_->snapshot()) {
      if (k.km_id == "KM1") return k.registered && k.registrations == 3;
    }
    return false;
  }));
}

}  // namespace
}  // namespace qkdn::agent::test
