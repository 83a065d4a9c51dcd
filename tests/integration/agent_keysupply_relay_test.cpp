// Key supply at the agent, driven by a fake controller: reservation (0x410A), allocation
// (0x410C) and key relay (0x4104) over the chain KM1 -L12- KM2 -L23- KM3, where KM1 and KM2 live
// in one agent (L12 between two KMs of one process) and KM3 in a second agent (L23 across
// processes). The destination ends up with exactly the bytes the source generated.
#include <gtest/gtest.h>

#include "agent_test_support.hpp"

namespace qkdn::agent::test {
namespace {

constexpr std::int64_t kEpoch = 5;
const std::string kRelayId = "4a1c2e3f-5b6d-4e7f-8a9b-0c1d2e3f4a5b";
const std::string kRelayDigest = "relay:" + kRelayId;

class AgentKeySupplyRelayTest : public ::testing::Test {
 protected:
  void SetUp() override {
    controller_ = std::make_unique<FakeController>(io_.io, kEpoch);
    auto cfg1 = test_config(controller_->port(), {"KM1", "KM2"});
    auto cfg2 = test_config(controller_->port(), {"KM3"});
    cfg2.seed = 43;
    a1_ = std::make_unique<Agent>(io_.io, cfg1);
    a2_ = std::make_unique<Agent>(io_.io, cfg2);
    a1_->start();
    a2_->start();
  }
  void TearDown() override {
    a1_->stop();
    a2_->stop();
    controller_->stop();
    io_.join();
  }

  /// Waits for keys on both links, then stops generation and waits until both ends of each
  /// link hold the same number of keys (no batch in flight): counts are then exact.
  void fill_and_freeze() {
    ASSERT_TRUE(eventually([&] {
      auto x = link_of(*a1_, "KM2", "L12");
      auto y = link_of(*a2_, "KM3", "L23");
      return x && y && x->stored_keys >= 40 && y->stored_keys >= 40;
    }));
    ASSERT_TRUE(a1_->control_link("L12", LinkControl{std::nullopt, std::nullopt, false}));
    ASSERT_TRUE(a1_->control_link("L23", LinkControl{std::nullopt, std::nullopt, false}));
    ASSERT_TRUE(eventually([&] {
      auto a = link_of(*a1_, "KM1", "L12");
      auto b = link_of(*a1_, "KM2", "L12");
      auto c = link_of(*a1_, "KM2", "L23");
      auto d = link_of(*a2_, "KM3", "L23");
      return a && b && c && d && !d->admin_up && a->stored_keys == b->stored_keys &&
             c->stored_keys == d->stored_keys && a->kma_connected && c->kma_connected &&
             d->kma_connected;
    }));
  }

  std::int64_t stored(Agent& a, const std::string& km, const std::string& link) {
    return link_of(a, km, link).value_or(LinkSnapshot{}).stored_keys;
  }

  /// Sends a typed controller command to `km`; returns its MessageID.
  std::uint32_t send(const std::string& km, ck::Command code, const ck::Message& m) {
    return controller_->send_raw(km, static_cast<std::uint16_t>(code), ck::encode_payload(m));
  }

  /// The frame `km` sent with `code` in answer to `message_id` (bounded wait).
  std::optional<ck::Message> response(const std::string& km, ck::Command code,
                                      std::uint32_t message_id) {
    std::optional<ck::Message> found;
    controller_->wait_for([&](const std::vector<Received>& rs) {
      for (const auto& r : rs) {
        if (r.km_id == km && r.command == static_cast<std::uint16_t>(code) &&
            r.message_id == message_id && r.message) {
          found = r.message;
          return true;
        }
      }
      return false;
    });
    return found;
  }

  ck::KeyReservationResponse reserve(const std::string& km, const std::string& next, std::int64_t n,
                                     std::int64_t epoch = kEpoch) {
    ck::KeyReservationRequest r;
    r.source_kma_id = "KM1";
    r.destination_kma_id = "KM3";
    r.next_kma_id = next;
    r.number_of_keys = n;
    r.key_relay_request_id = kRelayId;
    r.controller_epoch = epoch;
    const auto id = send(km, ck::Command::kKeyReservationRequest, ck::Message{r});
    auto m = response(km, ck::Command::kKeyReservationResponse, id);
    EXPECT_TRUE(m);
    return m ? std::get<ck::KeyReservationResponse>(*m) : ck::KeyReservationResponse{};
  }

  ck::KeyAllocationResponse allocate(const std::string& km, const std::string& next,
                                     std::vector<std::string> ids) {
    ck::KeyAllocationRequest r;
    r.source_kma_id = "KM1";
    r.destination_kma_id = "KM3";
    r.next_kma_id = next;
    r.key_ids = std::move(ids);
    r.controller_epoch = kEpoch;
    const auto id = send(km, ck::Command::kKeyAllocationRequest, ck::Message{r});
    auto m = response(km, ck::Command::kKeyAllocationResponse, id);
    EXPECT_TRUE(m);
    return m ? std::get<ck::KeyAllocationResponse>(*m) : ck::KeyAllocationResponse{};
  }

  ck::KeyReleaseResponse release(const std::string& km, const std::string& next,
                                 const std::string& relay_id, std::vector<std::string> ids,
                                 bool discard = false) {
    ck::KeyRelease r;
    r.key_relay_request_id = relay_id;
    r.next_kma_id = next;
    r.key_ids = std::move(ids);
    if (discard) r.disposition = "discard";
    r.controller_epoch = kEpoch;
    const auto id = send(km, ck::Command::kKeyRelease, ck::Message{r});
    auto m = response(km, ck::Command::kKeyReleaseResponse, id);
    EXPECT_TRUE(m) << "no 0x14EB from " << km;
    return m ? std::get<ck::KeyReleaseResponse>(*m) : ck::KeyReleaseResponse{};
  }

  /// Reservation for a given relay (reserve() uses kRelayId).
  ck::KeyReservationResponse reserve_for(const std::string& relay_id, std::int64_t n) {
    ck::KeyReservationRequest r;
    r.source_kma_id = "KM1";
    r.destination_kma_id = "KM3";
    r.next_kma_id = "KM2";
    r.number_of_keys = n;
    r.key_relay_request_id = relay_id;
    r.controller_epoch = kEpoch;
    const auto id = send("KM1", ck::Command::kKeyReservationRequest, ck::Message{r});
    auto m = response("KM1", ck::Command::kKeyReservationResponse, id);
    EXPECT_TRUE(m);
    return m ? std::get<ck::KeyReservationResponse>(*m) : ck::KeyReservationResponse{};
  }

  void expect_accounting(Agent& a, const std::string& km, const std::string& link) {
    const auto l = link_of(a, km, link);
    ASSERT_TRUE(l);
    EXPECT_EQ(l->keys_generated, l->keys_available + l->keys_reserved + l->keys_allocated +
                                     l->keys_consumed + l->keys_discarded)
        << km << " " << link;
  }

  IoThreads io_;
  std::unique_ptr<FakeController> controller_;
  std::unique_ptr<Agent> a1_;
  std::unique_ptr<Agent> a2_;
};

// Reserve and allocate on both hops, relay: the destination holds the source's bytes, and every
// hop key is consumed at both ends of its hop.
TEST_F(AgentKeySupplyRelayTest, RelaysOneTimePadEncryptedKeyAcrossTwoAgents) {
  fill_and_freeze();
  constexpr std::int64_t kKeys = 4;
  const auto before12 = stored(*a1_, "KM1", "L12");
  const auto before23 = stored(*a2_, "KM3", "L23");

  const auto r1 = reserve("KM1", "KM2", kKeys);
  ASSERT_EQ(r1.response, 0);
  ASSERT_EQ(r1.key_ids.size(), static_cast<std::size_t>(kKeys));
  EXPECT_EQ(r1.link_id.value_or(""), "L12");
  const auto r2 = reserve("KM2", "KM3", kKeys);
  ASSERT_EQ(r2.response, 0);
  ASSERT_EQ(r2.key_ids.size(), static_cast<std::size_t>(kKeys));
  ASSERT_EQ(allocate("KM1", "KM2", r1.key_ids).response, 0);
  ASSERT_EQ(allocate("KM2", "KM3", r2.key_ids).response, 0);

  ck::KeyRelayRequest relay;
  relay.source_kma_id = "KM1";
  relay.destination_kma_id = "KM3";
  relay.transit_kma_ids = {"KM2"};
  relay.key_relay_request_id = kRelayId;
  relay.hop_keys = {{"KM1", "KM2", "L12", r1.key_ids}, {"KM2", "KM3", "L23", r2.key_ids}};
  relay.controller_epoch = kEpoch;
  const auto id = send("KM1", ck::Command::kKeyRelayRequest, ck::Message{relay});
  auto m = response("KM1", ck::Command::kKeyRelayResponse, id);
  ASSERT_TRUE(m);
  const auto& resp = std::get<ck::KeyRelayResponse>(*m);
  EXPECT_EQ(resp.response, "OK");
  EXPECT_EQ(resp.key_relay_request_id.value_or(""), kRelayId);

  const auto at_source = a1_->link_digest("KM1", kRelayDigest);
  const auto at_destination = a2_->link_digest("KM3", kRelayDigest);
  ASSERT_TRUE(at_source);
  ASSERT_TRUE(at_destination);
  EXPECT_EQ(*at_source, *at_destination);
  EXPECT_FALSE(a1_->link_digest("KM2", kRelayDigest));  // the transit KM keeps nothing

  // Hop keys consumed at both ends of both hops; the ends of each link still agree.
  EXPECT_EQ(stored(*a1_, "KM1", "L12"), before12 - kKeys);
  EXPECT_EQ(stored(*a1_, "KM2", "L12"), before12 - kKeys);
  EXPECT_EQ(stored(*a1_, "KM2", "L23"), before23 - kKeys);
  EXPECT_EQ(stored(*a2_, "KM3", "L23"), before23 - kKeys);
  EXPECT_EQ(a1_->link_digest("KM1", "L12"), a1_->link_digest("KM2", "L12"));
  EXPECT_EQ(a1_->link_digest("KM2", "L23"), a2_->link_digest("KM3", "L23"));

  // The same request again: the hop keys are gone, so the source refuses.
  const auto again = send("KM1", ck::Command::kKeyRelayRequest, ck::Message{relay});
  auto m2 = response("KM1", ck::Command::kKeyRelayResponse, again);
  ASSERT_TRUE(m2);
  EXPECT_EQ(std::get<ck::KeyRelayResponse>(*m2).response.rfind("NG: ", 0), 0u);
}

// Key release (0x41EA, issue 12): reserved keys of the named relay come back at once, oldest
// first, so the next reservation gets the same IDs; allocated ones, and with "discard" reserved
// ones too, are destroyed at both ends of the link (KMA Discard); keys held for another relay
// are left alone; an allocation for another relay is refused.
TEST_F(AgentKeySupplyRelayTest, ReleaseReturnsReservedKeysAndDiscardsAllocatedAtBothEnds) {
  fill_and_freeze();
  const std::string a = "11111111-2222-4333-8444-555555555555";
  const std::string b = "21111111-2222-4333-8444-555555555555";
  const std::string c = "31111111-2222-4333-8444-555555555555";
  const auto before = stored(*a1_, "KM1", "L12");

  // Released before allocation: back, and offered first again.
  const auto r1 = reserve_for(a, 4);
  ASSERT_EQ(r1.response, 0);
  EXPECT_EQ(link_of(*a1_, "KM1", "L12")->keys_reserved, 4);
  auto rel = release("KM1", "KM2", a, r1.key_ids);
  EXPECT_EQ(rel.response, "OK");
  EXPECT_EQ(rel.key_relay_request_id, a);
  EXPECT_EQ(rel.released.value_or(-1), 4);
  EXPECT_EQ(rel.discarded.value_or(-1), 0);
  EXPECT_EQ(link_of(*a1_, "KM1", "L12")->keys_reserved, 0);
  const auto r2 = reserve_for(b, 4);
  ASSERT_EQ(r2.response, 0);
  EXPECT_EQ(r2.key_ids, r1.key_ids) << "released keys come back in their place, oldest first";

  // A release or an allocation naming another relay leaves b's reservation alone.
  rel = release("KM1", "KM2", a, r2.key_ids);
  EXPECT_EQ(rel.released.value_or(-1), 0);
  EXPECT_EQ(rel.discarded.value_or(-1), 0);
  ck::KeyAllocationRequest wrong;
  wrong.source_kma_id = "KM1";
  wrong.destination_kma_id = "KM3";
  wrong.next_kma_id = "KM2";
  wrong.key_relay_request_id = c;
  wrong.key_ids = r2.key_ids;
  wrong.controller_epoch = kEpoch;
  const auto wid = send("KM1", ck::Command::kKeyAllocationRequest, ck::Message{wrong});
  auto wm = response("KM1", ck::Command::kKeyAllocationResponse, wid);
  ASSERT_TRUE(wm);
  EXPECT_EQ(std::get<ck::KeyAllocationResponse>(*wm).response, 1);
  EXPECT_EQ(link_of(*a1_, "KM1", "L12")->keys_reserved, 4);

  // Allocated, then released: discarded here and at the peer (KM2's copies of KM1's half).
  wrong.key_relay_request_id = b;
  const auto aid = send("KM1", ck::Command::kKeyAllocationRequest, ck::Message{wrong});
  auto am = response("KM1", ck::Command::kKeyAllocationResponse, aid);
  ASSERT_TRUE(am);
  ASSERT_EQ(std::get<ck::KeyAllocationResponse>(*am).response, 0);
  rel = release("KM1", "KM2", b, r2.key_ids);
  EXPECT_EQ(rel.released.value_or(-1), 0);
  EXPECT_EQ(rel.discarded.value_or(-1), 4);
  EXPECT_EQ(stored(*a1_, "KM1", "L12"), before - 4);
  EXPECT_TRUE(eventually([&] { return stored(*a1_, "KM2", "L12") == before - 4; }))
      << "the peer end must drop its copies too";
  EXPECT_EQ(a1_->link_digest("KM1", "L12"), a1_->link_digest("KM2", "L12"));

  // "discard": reserved keys are destroyed too (the controller can never take them).
  const auto r3 = reserve_for(c, 2);
  ASSERT_EQ(r3.response, 0);
  EXPECT_NE(r3.key_ids.front(), r1.key_ids.front());
  rel = release("KM1", "KM2", c, r3.key_ids, true);
  EXPECT_EQ(rel.discarded.value_or(-1), 2);
  EXPECT_TRUE(eventually([&] { return stored(*a1_, "KM2", "L12") == before - 6; }));
  EXPECT_EQ(stored(*a1_, "KM1", "L12"), before - 6);
  EXPECT_EQ(a1_->link_digest("KM1", "L12"), a1_->link_digest("KM2", "L12"));
  EXPECT_EQ(link_of(*a1_, "KM1", "L12")->keys_discarded, 6);
  EXPECT_EQ(link_of(*a1_, "KM2", "L12")->keys_discarded, 6);
  expect_accounting(*a1_, "KM1", "L12");
  expect_accounting(*a1_, "KM2", "L12");

  // No link to the named KM: NG.
  rel = release("KM1", "KM3", c, r3.key_ids);
  EXPECT_EQ(rel.response.rfind("NG: unknown_kma", 0), 0u) << rel.response;
}

// Reservation beyond the pool, allocation of unknown or foreign IDs, and a stale epoch are
// refused explicitly.
TEST_F(AgentKeySupplyRelayTest, RefusesInsufficientUnknownForeignAndStale) {
  fill_and_freeze();
  const auto big = reserve("KM1", "KM2", 1024);
  EXPECT_EQ(big.response, 1);
  EXPECT_TRUE(big.key_ids.empty());
  auto ext = ck::find_error_extension(big.extension);
  ASSERT_TRUE(ext);
  EXPECT_EQ(ext->error, "insufficient_keys");

  // An ID nobody reserved.
  auto unknown = allocate("KM1", "KM2", {"0b7f2c1e-8a7b-4c2d-9e1f-0a1b2c3d4e5f"});
  EXPECT_EQ(unknown.response, 1);
  ext = ck::find_error_extension(unknown.extension);
  ASSERT_TRUE(ext);
  EXPECT_EQ(ext->error, "unknown_key");

  // IDs reserved by KM2 on L23 are foreign to KM1's L12.
  const auto r2 = reserve("KM2", "KM3", 2);
  ASSERT_EQ(r2.response, 0);
  auto foreign = allocate("KM1", "KM2", r2.key_ids);
  EXPECT_EQ(foreign.response, 1);
  ext = ck::find_error_extension(foreign.extension);
  ASSERT_TRUE(ext);
  EXPECT_EQ(ext->error, "unknown_key");
  // Allocating twice: the second time the keys are no longer reserved.
  EXPECT_EQ(allocate("KM2", "KM3", r2.key_ids).response, 0);
  EXPECT_EQ(allocate("KM2", "KM3", r2.key_ids).response, 1);

  // An older epoch is fenced with Error stale_epoch.
  ck::KeyReservationRequest stale;
  stale.source_kma_id = "KM1";
  stale.destination_kma_id = "KM3";
  stale.next_kma_id = "KM2";
  stale.number_of_keys = 1;
  stale.controller_epoch = kEpoch - 1;
  const auto id = send("KM1", ck::Command::kKeyReservationRequest, ck::Message{stale});
  auto err = response("KM1", ck::Command::kErrorFromKm, id);
  ASSERT_TRUE(err);
  EXPECT_EQ(std::get<ck::ErrorMessage>(*err).error, "stale_epoch");

  // Session creation notification: remembered and answered OK.
  ck::SessionCreationNotification n;
  n.application_source_id = "SAE-A";
  n.application_destination_id = "SAE-C";
  n.session_id = "9e8d7c6b-5a4f-4e3d-8c2b-1a0f9e8d7c6b";
  n.source_km_id = "KM1";
  n.controller_epoch = kEpoch;
  const auto sid = send("KM3", ck::Command::kSessionCreationNotification, ck::Message{n});
  auto ok = response("KM3", ck::Command::kSessionCreationNotificationResponse, sid);
  ASSERT_TRUE(ok);
  EXPECT_EQ(std::get<ck::SessionCreationNotificationResponse>(*ok).response, "OK");
  EXPECT_EQ(std::get<ck::SessionCreationNotificationResponse>(*ok).session_id,
            "9e8d7c6b-5a4f-4e3d-8c2b-1a0f9e8d7c6b");
}

}  // namespace
}  // namespace qkdn::agent::test
