// The interworking model (issue 16): QKDN ID, gateway KMs, inter-QKDN links and peer
// controllers in the topology document; their validation, JSON, and the in-memory store.
#include <gtest/gtest.h>

#include <functional>
#include <limits>
#include <memory>
#include <string>

#include "qkdn/controller/clock.hpp"
#include "qkdn/controller/error.hpp"
#include "qkdn/controller/memory_store.hpp"
#include "qkdn/controller/network.hpp"
#include "qkdn/controller/topology.hpp"
#include "qkdn/southbound/topology_json.hpp"

namespace qkdn::controller {
namespace {

TopologyDoc sample() {
  TopologyDoc d;
  d.name = "qkdn-a";
  d.qkdn_id = "QKDN-A";
  d.kms = {{"KM1", "A"}, {"GW1", "B"}, {"GW2", "C"}};
  d.kms[1].gateway = true;
  d.kms[2].gateway = true;
  d.links = {{"L1", "KM1", "GW1", 1000, 1, 0}, {"L2", "KM1", "GW2", 1000, 1, 0}};
  d.applications = {{"SAE-A", "KM1"}, {"SAE-A2", "KM1"}};
  d.peers = {{"QKDN-B", "ctl-b.example:4170", "ctl-b", {{"SAE-A"}, 0.5}}};
  d.inter_qkdn_links = {{"X1", "GW1", "QKDN-B", "GWB1", 2000},
                        {"X2", "GW2", "QKDN-B", "GWB2", 2000}};
  return d;
}

void expect_invalid(const TopologyDoc& d, const std::string& message) {
  try {
    validate_topology(d);
    ADD_FAILURE() << "no error, expected: " << message;
  } catch (const InvalidArgument& e) {
    EXPECT_EQ(std::string(e.what()), message);
  }
}

TopologyDoc with(const std::function<void(TopologyDoc&)>& edit) {
  TopologyDoc d = sample();
  edit(d);
  return d;
}

TEST(InterworkingModel, SampleIsValid) { EXPECT_NO_THROW(validate_topology(sample())); }

TEST(InterworkingModel, DocumentWithoutInterworkingNeedsNoQkdnId) {
  auto d = with([](TopologyDoc& t) {
    t.qkdn_id.clear();
    t.peers.clear();
    t.inter_qkdn_links.clear();
  });
  EXPECT_NO_THROW(validate_topology(d));
}

TEST(InterworkingModel, RefusesBadDocuments) {
  expect_invalid(with([](TopologyDoc& t) { t.qkdn_id.clear(); }), "qkdn_id: missing QKDN ID");
  expect_invalid(with([](TopologyDoc& t) { t.qkdn_id = "bad id"; }),
                 "qkdn_id: invalid QKDN ID 'bad id' (1..128 of [A-Za-z0-9._:-])");
  expect_invalid(with([](TopologyDoc& t) { t.peers[0].qkdn_id = "QKDN-A"; }),
                 "peers[0].qkdn_id: 'QKDN-A' is this network's own QKDN ID");
  expect_invalid(with([](TopologyDoc& t) { t.peers.push_back(t.peers[0]); }),
                 "peers[1].qkdn_id: duplicate QKDN ID 'QKDN-B'");
  expect_invalid(with([](TopologyDoc& t) {
                   t.peers.push_back(t.peers[0]);
                   t.peers[1].qkdn_id = "QKDN-C";
                 }),
                 "peers[1].identity: controller identity 'ctl-b' already names another peer");
  expect_invalid(with([](TopologyDoc& t) { t.peers[0].identity.clear(); }),
                 "peers[0].identity: missing controller identity");
  expect_invalid(with([](TopologyDoc& t) { t.peers[0].endpoint = "ctl-b:0"; }),
                 "peers[0].endpoint: 'ctl-b:0' is not host:port (port 1..65535)");
  expect_invalid(with([](TopologyDoc& t) { t.peers[0].endpoint = "no-port"; }),
                 "peers[0].endpoint: 'no-port' is not host:port (port 1..65535)");
  expect_invalid(with([](TopologyDoc& t) { t.peers[0].policy.key_rate_share = 1.5; }),
                 "peers[0].policy.key_rate_share: must be in [0, 1]");
  expect_invalid(with([](TopologyDoc& t) {
                   t.peers[0].policy.key_rate_share = std::numeric_limits<double>::quiet_NaN();
                 }),
                 "peers[0].policy.key_rate_share: must be in [0, 1]");
  expect_invalid(with([](TopologyDoc& t) { t.peers[0].policy.reachable_saes = {"SAE-X"}; }),
                 "peers[0].policy.reachable_saes[0]: unknown SAE 'SAE-X' (not in applications)");
  expect_invalid(with([](TopologyDoc& t) {
                   t.peers[0].policy.reachable_saes = {"SAE-A", "SAE-A"};
                 }),
                 "peers[0].policy.reachable_saes[1]: duplicate SAE 'SAE-A'");
  expect_invalid(with([](TopologyDoc& t) { t.inter_qkdn_links[0].km_id = "KM1"; }),
                 "inter_qkdn_links[0].km_id: 'KM1' is not a gateway KM of this network "
                 "(kms[].gateway)");
  expect_invalid(with([](TopologyDoc& t) { t.inter_qkdn_links[0].peer_qkdn_id = "QKDN-Z"; }),
                 "inter_qkdn_links[0].peer_qkdn_id: unknown peer 'QKDN-Z' (not in peers)");
  expect_invalid(with([](TopologyDoc& t) { t.inter_qkdn_links[1].link_id = "L1"; }),
                 "inter_qkdn_links[1].link_id: duplicate link ID 'L1' (link IDs are unique "
                 "among links and inter-QKDN links)");
  expect_invalid(with([](TopologyDoc& t) { t.inter_qkdn_links[0].peer_km_id.clear(); }),
                 "inter_qkdn_links[0].peer_km_id: missing KM ID");
  expect_invalid(with([](TopologyDoc& t) { t.inter_qkdn_links[0].key_rate_bps = -1; }),
                 "inter_qkdn_links[0].key_rate_bps: must be a finite number >= 0");
}

TEST(InterworkingModel, ListsAreBounded) {
  auto d = sample();
  d.inter_qkdn_links.clear();
  for (std::size_t i = 0; i <= kMaxPeers; ++i) {
    d.peers.push_back({"P" + std::to_string(i), "", "c" + std::to_string(i), {}});
  }
  expect_invalid(d, "peers: at most 64 peers, got 66");
}

TEST(InterworkingModel, EndpointSyntax) {
  EXPECT_TRUE(is_valid_endpoint("ctl.example:4170"));
  EXPECT_TRUE(is_valid_endpoint("127.0.0.1:1"));
  EXPECT_TRUE(is_valid_endpoint("[::1]:65535"));
  EXPECT_FALSE(is_valid_endpoint(":4170"));
  EXPECT_FALSE(is_valid_endpoint("host:65536"));
  EXPECT_FALSE(is_valid_endpoint("host:12a"));
  EXPECT_FALSE(is_valid_endpoint("ho st:1"));
  EXPECT_FALSE(is_valid_endpoint("[::1:1"));
}

TEST(InterworkingModel, JsonRoundTrip) {
  const auto d = sample();
  const auto text = southbound::serialize_topology(d);
  const auto back = southbound::parse_topology(text, /*strict=*/true);
  EXPECT_EQ(back.qkdn_id, "QKDN-A");
  EXPECT_FALSE(back.kms[0].gateway);
  EXPECT_TRUE(back.kms[1].gateway);
  ASSERT_EQ(back.peers.size(), 1U);
  EXPECT_EQ(back.peers[0].endpoint, "ctl-b.example:4170");
  EXPECT_EQ(back.peers[0].identity, "ctl-b");
  EXPECT_EQ(back.peers[0].policy.reachable_saes, std::vector<std::string>{"SAE-A"});
  EXPECT_EQ(back.peers[0].policy.key_rate_share, 0.5);
  ASSERT_EQ(back.inter_qkdn_links.size(), 2U);
  EXPECT_EQ(back.inter_qkdn_links[1].peer_km_id, "GWB2");
  EXPECT_EQ(back.inter_qkdn_links[1].key_rate_bps, 2000);
  EXPECT_EQ(southbound::serialize_topology(back), text);
}

TEST(InterworkingModel, JsonOfAPlainNetworkHasNoInterworkingFields) {
  auto d = sample();
  d.qkdn_id.clear();
  d.peers.clear();
  d.inter_qkdn_links.clear();
  d.kms[1].gateway = d.kms[2].gateway = false;
  const auto text = southbound::serialize_topology(d);
  for (const char* field : {"qkdn_id", "peers", "inter_qkdn_links", "gateway"}) {
    EXPECT_EQ(text.find(field), std::string::npos) << field;
  }
}

TEST(InterworkingModel, JsonRefusesBadFields) {
  auto expect_refused = [](const std::string& text, const std::string& message) {
    try {
      (void)southbound::parse_topology(text, /*strict=*/true);
      ADD_FAILURE() << "accepted: " << text;
    } catch (const InvalidArgument& e) {
      EXPECT_EQ(std::string(e.what()), message);
    }
  };
  const std::string kms = R"("kms":[{"km_id":"G","gateway":true}])";
  expect_refused(R"({"kms":[{"km_id":"G","gateway":"yes"}]})", "kms[0].gateway: expected boolean");
  expect_refused(R"({"qkdn_id":"A",)" + kms + R"(,"peers":[{"qkdn_id":"B","identity":"b","x":1}]})",
                 "peers[0].x: unknown field");
  expect_refused(
      R"({"qkdn_id":"A",)" + kms +
          R"(,"peers":[{"qkdn_id":"B","identity":"b","policy":{"reachable_saes":"S"}}]})",
      "peers[0].policy.reachable_saes: expected array");
  expect_refused(R"({"qkdn_id":"A",)" + kms + R"(,"inter_qkdn_links":[{"link_id":"X"}]})",
                 "inter_qkdn_links[0].km_id: missing");
  std::string many = R"({"qkdn_id":"A",)" + kms + R"(,"peers":[)";
  for (int i = 0; i < 65; ++i) many += std::string(i ? "," : "") + "{}";
  expect_refused(many + "]}", "peers: at most 64 peers");
}

TEST(InterworkingModel, NetworkKeepsTheInterworkingPart) {
  ManualClock clock;
  Network n(clock);
  n.apply_topology(sample());
  EXPECT_EQ(n.qkdn_id(), "QKDN-A");
  EXPECT_TRUE(n.find_km("GW1")->gateway);
  EXPECT_FALSE(n.find_km("KM1")->gateway);
  const auto doc = n.topology();
  EXPECT_EQ(southbound::serialize_topology(doc), southbound::serialize_topology(sample()));
}

TEST(InterworkingModel, MemoryStoreKeepsTheInterworkingPart) {
  MemoryStore store;
  store.save_topology(sample());
  const auto st = store.load();
  ASSERT_TRUE(st.topology.has_value());
  EXPECT_EQ(southbound::serialize_topology(*st.topology), southbound::serialize_topology(sample()));
}

}  // namespace
}  // namespace qkdn::controller
