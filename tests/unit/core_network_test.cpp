#include "qkdn/controller/network.hpp"

#include <gtest/gtest.h>

#include "qkdn/controller/error.hpp"

namespace qkdn::controller {
namespace {

using Kind = NetworkEvent::Kind;
using std::chrono::seconds;

TopologyDoc sample() {
  TopologyDoc d;
  d.name = "metro";
  d.kms = {{"KM1", "Otemachi"}, {"KM2", "Koganei"}, {"KM3", "Hakusan"}};
  d.links = {{"L12", "KM1", "KM2", 50000, 45, 0.02},
             {"L23", "KM2", "KM3", 10000, 80, 0.03},
             {"L12b", "KM2", "KM1", 300000, 45, 0.03},
             {"L13", "KM1", "KM3", 1000, 100, 0.04}};
  d.applications = {{"SAE-1", "KM1"}, {"SAE-3", "KM3"}};
  return d;
}

Registration reg(const std::string& km, std::vector<Registration::LinkRef> links,
                 std::vector<std::string> apps = {}) {
  Registration r;
  r.km_id = km;
  r.kma_endpoint = "127.0.0.1:" + std::to_string(7000 + km.back());
  r.links = std::move(links);
  r.applications = std::move(apps);
  r.software = "qkdn-agent/test";
  return r;
}

LinkReport report(const std::string& link, const std::string& peer, bool up,
                  std::uint64_t bits = 100000, double qber = 0.02) {
  LinkReport r;
  r.link_id = link;
  r.peer_kma_id = peer;
  r.up = up;
  r.stored_keys = bits / 256;
  r.stored_key_bits = bits;
  r.key_rate_bps = 40000;
  r.consumption_rate_bps = 1000;
  r.qber = qber;
  return r;
}

// Compact "kind:link" rendering of events, for exact order checks.
std::vector<std::string> describe(const std::vector<NetworkEvent>& events) {
  std::vector<std::string> out;
  for (const auto& e : events) {
    out.push_back(std::string(to_string(e.kind)) + ":" + (e.link_id.empty() ? e.km_id : e.link_id));
  }
  return out;
}

class NetworkTest : public ::testing::Test {
 protected:
  void SetUp() override { net_.apply_topology(sample()); }

  // Registers all three KMs, each listing every link it terminates; L12, L23, L12b, L13 go up.
  void connect_all() {
    net_.register_km(reg("KM1", {{"L12", "KM2"}, {"L12b", "KM2"}, {"L13", "KM3"}}, {"SAE-1"}));
    net_.register_km(reg("KM2", {{"L12", "KM1"}, {"L12b", "KM1"}, {"L23", "KM3"}}));
    net_.register_km(reg("KM3", {{"L23", "KM2"}, {"L13", "KM1"}}, {"SAE-3"}));
  }

  OperState oper(const std::string& link) const { return net_.find_link(link)->oper; }

  ManualClock clock_;
  Network net_{clock_};
};

// A topology builds disconnected KMs and down links with nominal values, and exports as given.
TEST_F(NetworkTest, ApplyTopologyBuildsInitialState) {
  Network n(clock_);
  EXPECT_EQ(describe(n.apply_topology(sample())), std::vector<std::string>{"topology_replaced:"});
  EXPECT_EQ(n.name(), "metro");
  ASSERT_EQ(n.kms().size(), 3U);
  EXPECT_FALSE(n.find_km("KM1")->connected);
  EXPECT_EQ(n.find_km("KM1")->site, "Otemachi");
  ASSERT_EQ(n.links().size(), 4U);
  const Link* l = n.find_link("L12b");
  ASSERT_NE(l, nullptr);
  EXPECT_EQ(l->oper, OperState::kDown);
  EXPECT_EQ(l->admin, AdminState::kEnabled);
  EXPECT_DOUBLE_EQ(l->key_rate_bps, 300000);
  EXPECT_DOUBLE_EQ(l->qber, 0.03);
  EXPECT_FALSE(l->pool_low);
  EXPECT_EQ(n.find_link("nope"), nullptr);
  EXPECT_EQ(n.find_km("nope"), nullptr);
  EXPECT_EQ(n.km_for_sae("SAE-3"), "KM3");
  EXPECT_EQ(n.km_for_sae("nope"), std::nullopt);
  EXPECT_GT(n.version(), 0U);

  const TopologyDoc out = n.topology();
  const TopologyDoc in = sample();
  EXPECT_EQ(out.name, in.name);
  ASSERT_EQ(out.kms.size(), in.kms.size());
  for (std::size_t i = 0; i < in.kms.size(); ++i) EXPECT_EQ(out.kms[i].km_id, in.kms[i].km_id);
  ASSERT_EQ(out.links.size(), in.links.size());
  for (std::size_t i = 0; i < in.links.size(); ++i) {
    EXPECT_EQ(out.links[i].link_id, in.links[i].link_id);  // document order, not map order
    EXPECT_EQ(out.links[i].a, in.links[i].a);
  }
  ASSERT_EQ(out.applications.size(), 2U);
  EXPECT_EQ(out.applications[1].sae_id, "SAE-3");
}

// An invalid document is rejected and the previous state stays.
TEST_F(NetworkTest, ApplyTopologyIsAllOrNothing) {
  TopologyDoc bad = sample();
  bad.name = "other";
  bad.links[3].b = "KM9";
  const auto v = net_.version();
  EXPECT_THROW(net_.apply_topology(bad), InvalidArgument);
  EXPECT_EQ(net_.name(), "metro");
  EXPECT_EQ(net_.links().size(), 4U);
  EXPECT_EQ(net_.version(), v);
}

// Registering a KM outside the topology is NotFound.
TEST_F(NetworkTest, RegisterUnknownKmThrows) {
  EXPECT_THROW(net_.register_km(reg("KM9", {})), NotFound);
}

// Registration connects the KM, records endpoint and SAEs, and reports unusable links.
TEST_F(NetworkTest, RegisterRecordsKmAndUnknownLinks) {
  clock_.advance(seconds{5});
  std::vector<std::string> unknown;
  const auto events = net_.register_km(
      reg("KM1", {{"L12", "KM2"}, {"LX", "KM2"}, {"L23", "KM3"}, {"L13", "KM2"}}, {"SAE-1"}),
      &unknown);
  EXPECT_EQ(describe(events), std::vector<std::string>{"km_connected:KM1"});
  EXPECT_EQ(unknown, (std::vector<std::string>{"LX", "L23", "L13"}));
  const Km* km = net_.find_km("KM1");
  EXPECT_TRUE(km->connected);
  EXPECT_EQ(km->kma_endpoint, "127.0.0.1:7049");
  EXPECT_EQ(km->software, "qkdn-agent/test");
  EXPECT_EQ(km->connected_at, clock_.now());
  EXPECT_EQ(km->last_seen, clock_.now());
  EXPECT_EQ(km->attached, std::vector<std::string>{"SAE-1"});
  EXPECT_EQ(net_.km_for_sae("SAE-1"), "KM1");
  // Only one end is connected: the link is not up yet.
  EXPECT_EQ(oper("L12"), OperState::kDown);
  EXPECT_TRUE(net_.find_link("L12")->reported_up_a);
}

// A link comes up when both KMs have registered and listed it; an unlisted link stays down.
TEST_F(NetworkTest, LinkUpWhenBothEndsRegisteredAndListed) {
  net_.register_km(reg("KM1", {{"L12", "KM2"}, {"L12b", "KM2"}}));
  const auto events = net_.register_km(reg("KM2", {{"L12", "KM1"}, {"L23", "KM3"}}));
  EXPECT_EQ(describe(events), (std::vector<std::string>{"km_connected:KM2", "link_up:L12"}));
  EXPECT_EQ(events[1].km_id, "KM2");
  EXPECT_EQ(oper("L12"), OperState::kUp);
  EXPECT_TRUE(net_.find_link("L12")->reported_up);
  EXPECT_EQ(oper("L12b"), OperState::kDown);  // KM2 did not list it
  EXPECT_EQ(oper("L23"), OperState::kDown);   // KM3 is not connected
}

// Status reports emit transitions only on change and bump the version on value changes only.
TEST_F(NetworkTest, StatusEmitsOnlyOnChange) {
  connect_all();
  clock_.advance(seconds{1});
  const auto v0 = net_.version();
  auto events = net_.apply_status("KM1", {report("L12", "KM2", true, 5000)});
  EXPECT_TRUE(events.empty());
  const Link* l = net_.find_link("L12");
  EXPECT_EQ(l->stored_key_bits, 5000U);
  EXPECT_EQ(l->stored_keys, 5000U / 256);
  EXPECT_DOUBLE_EQ(l->key_rate_bps, 40000);
  EXPECT_DOUBLE_EQ(l->consumption_rate_bps, 1000);
  EXPECT_EQ(l->last_report, clock_.now());
  EXPECT_EQ(net_.find_km("KM1")->last_seen, clock_.now());
  const auto v1 = net_.version();
  EXPECT_GT(v1, v0);
  // The same report again changes nothing routing depends on.
  events = net_.apply_status("KM1", {report("L12", "KM2", true, 5000)});
  EXPECT_TRUE(events.empty());
  EXPECT_EQ(net_.version(), v1);
  // The other end reporting the pool drained changes the version.
  net_.apply_status("KM2", {report("L12", "KM1", true, 4000)});
  EXPECT_GT(net_.version(), v1);
}

// A report above the QBER threshold puts the link in alarm; it clears only below the hysteresis.
TEST_F(NetworkTest, QberThresholdWithHysteresis) {
  connect_all();
  auto events = net_.apply_status("KM1", {report("L12", "KM2", true, 100000, 0.15)});
  ASSERT_EQ(describe(events), std::vector<std::string>{"qber_high:L12"});
  EXPECT_DOUBLE_EQ(events[0].value, 0.15);
  EXPECT_EQ(events[0].km_id, "KM1");
  EXPECT_EQ(oper("L12"), OperState::kAlarm);
  EXPECT_TRUE(net_.find_link("L12")->qber_alarm);
  // Repeated high reports: no repeat event.
  EXPECT_TRUE(net_.apply_status("KM2", {report("L12", "KM1", true, 100000, 0.2)}).empty());
  // 0.10 is below 0.11 but above 0.11 * 0.9: still in alarm.
  EXPECT_TRUE(net_.apply_status("KM1", {report("L12", "KM2", true, 100000, 0.10)}).empty());
  EXPECT_EQ(oper("L12"), OperState::kAlarm);
  events = net_.apply_status("KM1", {report("L12", "KM2", true, 100000, 0.09)});
  EXPECT_EQ(describe(events), std::vector<std::string>{"qber_normal:L12"});
  EXPECT_EQ(oper("L12"), OperState::kUp);
  // At exactly the threshold there is no alarm.
  EXPECT_TRUE(net_.apply_status("KM1", {report("L12", "KM2", true, 100000, 0.11)}).empty());
}

// The per-link QBER override and network hysteresis are honoured.
TEST_F(NetworkTest, QberPerLinkOverride) {
  connect_all();
  net_.find_link_mut("L23")->qber_threshold = 0.05;
  net_.thresholds().qber_hysteresis = 0;
  EXPECT_EQ(describe(net_.apply_status("KM2", {report("L23", "KM3", true, 100000, 0.06)})),
            std::vector<std::string>{"qber_high:L23"});
  EXPECT_EQ(describe(net_.apply_status("KM2", {report("L23", "KM3", true, 100000, 0.049)})),
            std::vector<std::string>{"qber_normal:L23"});
  // Other links keep the network threshold.
  EXPECT_TRUE(net_.apply_status("KM2", {report("L12", "KM1", true, 100000, 0.06)}).empty());
}

// A pool below the floor raises kPoolLow once, and kPoolOk when it refills.
TEST_F(NetworkTest, PoolFloor) {
  connect_all();
  auto events = net_.apply_status("KM1", {report("L12", "KM2", true, 100)});
  ASSERT_EQ(describe(events), std::vector<std::string>{"pool_low:L12"});
  EXPECT_DOUBLE_EQ(events[0].value, 100);
  EXPECT_TRUE(net_.find_link("L12")->pool_low);
  EXPECT_EQ(oper("L12"), OperState::kUp);  // a low pool does not change oper state
  EXPECT_TRUE(net_.apply_status("KM1", {report("L12", "KM2", true, 200)}).empty());
  events = net_.apply_status("KM1", {report("L12", "KM2", true, 256)});
  ASSERT_EQ(describe(events), std::vector<std::string>{"pool_ok:L12"});
  EXPECT_DOUBLE_EQ(events[0].value, 256);
  // Per-link floor override.
  net_.find_link_mut("L13")->pool_floor_bits = 10000;
  EXPECT_EQ(describe(net_.apply_status("KM1", {report("L13", "KM3", true, 9999)})),
            std::vector<std::string>{"pool_low:L13"});
}

// A report of "down" from either end takes the link down; "up" from it brings it back.
TEST_F(NetworkTest, ReportedDownAndUp) {
  connect_all();
  auto events = net_.apply_status("KM3", {report("L23", "KM2", false)});
  EXPECT_EQ(describe(events), std::vector<std::string>{"link_down:L23"});
  EXPECT_EQ(oper("L23"), OperState::kDown);
  EXPECT_FALSE(net_.find_link("L23")->reported_up);
  // The other end still says up: it stays down until the end that said down says up.
  EXPECT_TRUE(net_.apply_status("KM2", {report("L23", "KM3", true)}).empty());
  events = net_.apply_status("KM3", {report("L23", "KM2", true)});
  EXPECT_EQ(describe(events), std::vector<std::string>{"link_up:L23"});
  // Several changes in one report come out in report order, link state before thresholds.
  events = net_.apply_status(
      "KM1", {report("L13", "KM3", false, 10, 0.5), report("L12", "KM2", true, 10)});
  EXPECT_EQ(describe(events), (std::vector<std::string>{"link_down:L13", "qber_high:L13",
                                                        "pool_low:L13", "pool_low:L12"}));
  // A link in alarm that comes back from down comes back as kAlarm.
  events = net_.apply_status("KM1", {report("L13", "KM3", true, 10, 0.5)});
  EXPECT_EQ(describe(events), std::vector<std::string>{"link_up:L13"});
  EXPECT_EQ(oper("L13"), OperState::kAlarm);
}

// A status report is all or nothing: a foreign link or a bad number rejects it entirely.
TEST_F(NetworkTest, StatusValidation) {
  connect_all();
  net_.apply_status("KM3", {report("L23", "KM2", true, 7777)});
  EXPECT_THROW(
      net_.apply_status("KM3", {report("L23", "KM2", true, 1), report("L12", "KM1", true)}),
      InvalidArgument);
  EXPECT_EQ(net_.find_link("L23")->stored_key_bits, 7777U);
  EXPECT_THROW(net_.apply_status("KM9", {}), NotFound);
  LinkReport neg = report("L23", "KM2", true);
  neg.key_rate_bps = -1;
  EXPECT_THROW(net_.apply_status("KM3", {neg}), InvalidArgument);
  LinkReport q = report("L23", "KM2", true);
  q.qber = 1.5;
  EXPECT_THROW(net_.apply_status("KM3", {q}), InvalidArgument);
  // Unknown links are ignored.
  EXPECT_TRUE(net_.apply_status("KM3", {report("LZ", "KM2", false)}).empty());
}

// Disconnecting a KM takes all of its links down (once), and re-registering restores them.
TEST_F(NetworkTest, DisconnectTakesLinksDown) {
  connect_all();
  const auto v = net_.version();
  auto events = net_.disconnect_km("KM2");
  EXPECT_EQ(describe(events), (std::vector<std::string>{"km_disconnected:KM2", "link_down:L12",
                                                        "link_down:L12b", "link_down:L23"}));
  EXPECT_GT(net_.version(), v);
  EXPECT_FALSE(net_.find_km("KM2")->connected);
  EXPECT_EQ(oper("L12"), OperState::kDown);
  EXPECT_EQ(oper("L13"), OperState::kUp);  // not KM2's
  // Reports from the other end cannot bring a link up while KM2 is away.
  EXPECT_TRUE(net_.apply_status("KM1", {report("L12", "KM2", true)}).empty());
  EXPECT_EQ(oper("L12"), OperState::kDown);
  EXPECT_TRUE(net_.disconnect_km("KM2").empty());
  EXPECT_THROW(net_.disconnect_km("KM9"), NotFound);
  events = net_.register_km(reg("KM2", {{"L12", "KM1"}, {"L23", "KM3"}}));
  EXPECT_EQ(describe(events),
            (std::vector<std::string>{"km_connected:KM2", "link_up:L12", "link_up:L23"}));
  EXPECT_EQ(oper("L12b"), OperState::kDown);  // no longer listed by KM2
}

// Re-applying a topology keeps the live state of links and KMs that survive it.
TEST_F(NetworkTest, ApplyTopologyPreservesLiveState) {
  connect_all();
  net_.apply_status("KM1", {report("L12", "KM2", true, 4242, 0.05)});
  net_.set_admin("L12", AdminState::kMaintenance);

  TopologyDoc next = sample();
  next.kms.pop_back();                                   // KM3 goes, and with it L23 and L13
  next.links = {{"L12", "KM2", "KM1", 60000, 45, 0.02},  // same ends, flipped
                {"L12b", "KM1", "KM1x", 1, 1, 0},        // placeholder, fixed below
                {"L14", "KM1", "KM4", 1, 1, 0}};
  next.kms.push_back({"KM4", "Hongo"});
  next.links[1] = {"L12b", "KM1", "KM4", 1, 1, 0};  // same ID, different ends
  next.applications = {{"SAE-1", "KM1"}};
  const auto events = net_.apply_topology(next);
  EXPECT_EQ(describe(events),
            (std::vector<std::string>{"topology_replaced:", "km_disconnected:KM3", "link_down:L12b",
                                      "link_down:L13", "link_down:L23"}));
  const Link* l = net_.find_link("L12");
  ASSERT_NE(l, nullptr);
  EXPECT_EQ(l->oper, OperState::kUp);
  EXPECT_EQ(l->stored_key_bits, 4242U);
  EXPECT_DOUBLE_EQ(l->qber, 0.05);  // measured values survive
  EXPECT_EQ(l->admin, AdminState::kMaintenance);
  EXPECT_EQ(l->spec.a, "KM2");
  EXPECT_DOUBLE_EQ(l->spec.key_rate_bps, 60000);
  EXPECT_TRUE(net_.find_km("KM1")->connected);
  EXPECT_EQ(net_.find_km("KM3"), nullptr);
  EXPECT_EQ(net_.find_link("L23"), nullptr);
  EXPECT_EQ(oper("L12b"), OperState::kDown);
  EXPECT_EQ(net_.find_link("L12b")->stored_key_bits, 0U);
  EXPECT_EQ(net_.km_for_sae("SAE-3"), std::nullopt);
  EXPECT_EQ(net_.km_for_sae("SAE-1"), "KM1");
  EXPECT_EQ(net_.links_between("KM1", "KM2").size(), 1U);
  EXPECT_EQ(net_.links_between("KM1", "KM4").size(), 2U);
  // The flipped link still tracks each end's word correctly.
  EXPECT_EQ(describe(net_.apply_status("KM2", {report("L12", "KM1", false)})),
            std::vector<std::string>{"link_down:L12"});
  EXPECT_FALSE(net_.find_link("L12")->reported_up_a);
  EXPECT_TRUE(net_.find_link("L12")->reported_up_b);
}

// Ck alarms change link state: qber_high/cleared, link_down/link_up, key_pool_low.
TEST_F(NetworkTest, ApplyAlarmEffects) {
  connect_all();
  auto events = net_.apply_alarm("KM1", "qber_high", "L12", "major", 0.2);
  EXPECT_EQ(describe(events), std::vector<std::string>{"qber_high:L12"});
  EXPECT_DOUBLE_EQ(events[0].value, 0.2);
  EXPECT_EQ(oper("L12"), OperState::kAlarm);
  EXPECT_TRUE(net_.apply_alarm("KM2", "qber_high", "L12", "critical", 0.2).empty());
  EXPECT_EQ(describe(net_.apply_alarm("KM1", "qber_high", "L12", "cleared", 0)),
            std::vector<std::string>{"qber_normal:L12"});
  EXPECT_EQ(oper("L12"), OperState::kUp);

  EXPECT_EQ(describe(net_.apply_alarm("KM3", "link_down", "L23", "critical", 0)),
            std::vector<std::string>{"link_down:L23"});
  EXPECT_EQ(describe(net_.apply_alarm("KM3", "link_up", "L23", "minor", 0)),
            std::vector<std::string>{"link_up:L23"});
  net_.apply_alarm("KM3", "link_down", "L23", "critical", 0);
  EXPECT_EQ(describe(net_.apply_alarm("KM3", "link_down", "L23", "cleared", 0)),
            std::vector<std::string>{"link_up:L23"});

  EXPECT_EQ(describe(net_.apply_alarm("KM1", "key_pool_low", "L13", "minor", 12)),
            std::vector<std::string>{"pool_low:L13"});
  EXPECT_EQ(describe(net_.apply_alarm("KM1", "key_pool_low", "L13", "cleared", 0)),
            std::vector<std::string>{"pool_ok:L13"});

  EXPECT_TRUE(net_.apply_alarm("KM1", "relay_failure", "", "major", 0).empty());
  EXPECT_TRUE(net_.apply_alarm("KM1", "peer_unreachable", "L12", "major", 0).empty());
  EXPECT_TRUE(net_.apply_alarm("KM1", "link_down", "LZ", "major", 0).empty());
  EXPECT_THROW(net_.apply_alarm("KM1", "meltdown", "L12", "major", 0), InvalidArgument);
  EXPECT_THROW(net_.apply_alarm("KM1", "link_down", "L12", "awful", 0), InvalidArgument);
  EXPECT_THROW(net_.apply_alarm("KM1", "link_down", "", "major", 0), InvalidArgument);
  EXPECT_THROW(net_.apply_alarm("KM1", "link_down", "L23", "major", 0), InvalidArgument);
  EXPECT_THROW(net_.apply_alarm("KM9", "link_down", "L23", "major", 0), NotFound);
  EXPECT_EQ(oper("L23"), OperState::kUp);
}

// Admin changes emit one event, bump the version, and leave oper state alone.
TEST_F(NetworkTest, SetAdmin) {
  connect_all();
  const auto v = net_.version();
  EXPECT_EQ(describe(net_.set_admin("L12", AdminState::kDisabled)),
            std::vector<std::string>{"admin_changed:L12"});
  EXPECT_GT(net_.version(), v);
  EXPECT_EQ(net_.find_link("L12")->admin, AdminState::kDisabled);
  EXPECT_EQ(oper("L12"), OperState::kUp);
  EXPECT_TRUE(net_.set_admin("L12", AdminState::kDisabled).empty());
  EXPECT_THROW(net_.set_admin("LZ", AdminState::kEnabled), NotFound);
  EXPECT_EQ(parse_admin_state("maintenance"), AdminState::kMaintenance);
  EXPECT_EQ(to_string(AdminState::kDisabled), "disabled");
  EXPECT_THROW(parse_admin_state("off"), InvalidArgument);
}

// A KM attaches and detaches the SAEs the topology declares at it; the mapping stays the
// declaration throughout.
TEST_F(NetworkTest, Applications) {
  connect_all();
  EXPECT_TRUE(net_.update_applications("KM1", {"SAE-1"}, {}).empty());
  EXPECT_EQ(net_.km_for_sae("SAE-1"), "KM1");
  EXPECT_EQ(net_.find_km("KM1")->attached, (std::vector<std::string>{"SAE-1"}));
  EXPECT_TRUE(net_.update_applications("KM1", {}, {"SAE-1"}).empty());
  EXPECT_TRUE(net_.find_km("KM1")->attached.empty());
  EXPECT_EQ(net_.km_for_sae("SAE-1"), "KM1");  // detached: still its declared KM
  // Detaching at a KM that does not serve it changes nothing.
  EXPECT_TRUE(net_.update_applications("KM3", {}, {"SAE-1"}).empty());
  EXPECT_EQ(net_.km_for_sae("SAE-1"), "KM1");
  EXPECT_THROW((void)net_.update_applications("KM9", {}, {}), NotFound);
  EXPECT_EQ(net_.applications().size(), 2U);
}

// Issue 13 (SAE hijack): a KM naming another KM's SAE, or an SAE the topology does not declare,
// in Register or 0x14E7 is refused; the SAE keeps mapping to its declared KM. (Before the fix
// the last claim won: SAE-1 mapped to KM2.)
TEST_F(NetworkTest, ForeignSaeClaimRefused) {
  connect_all();
  std::vector<RefusedClaim> refused;
  net_.register_km(reg("KM2", {{"L12", "KM1"}}, {"SAE-1", "SAE-new"}), nullptr, &refused);
  EXPECT_EQ(refused, (std::vector<RefusedClaim>{{"SAE-1", "KM2", "KM1"}, {"SAE-new", "KM2", ""}}));
  EXPECT_EQ(net_.km_for_sae("SAE-1"), "KM1");
  EXPECT_EQ(net_.km_for_sae("SAE-new"), std::nullopt);
  EXPECT_TRUE(net_.find_km("KM2")->attached.empty());

  const auto again = net_.update_applications("KM3", {"SAE-3", "SAE-1"}, {});
  EXPECT_EQ(again, (std::vector<RefusedClaim>{{"SAE-1", "KM3", "KM1"}}));
  EXPECT_EQ(net_.km_for_sae("SAE-1"), "KM1");
  EXPECT_EQ(net_.find_km("KM3")->attached, (std::vector<std::string>{"SAE-3"}));

  // An operator moving SAE-3 to KM2 in the topology is the one way to change the owner: KM3's
  // attachment ends, and KM2 may now claim it.
  TopologyDoc moved = sample();
  moved.applications = {{"SAE-1", "KM1"}, {"SAE-3", "KM2"}};
  net_.apply_topology(moved);
  EXPECT_EQ(net_.km_for_sae("SAE-3"), "KM2");
  EXPECT_TRUE(net_.find_km("KM3")->attached.empty());
  EXPECT_TRUE(net_.update_applications("KM2", {"SAE-3"}, {}).empty());
  EXPECT_EQ(net_.find_km("KM2")->attached, (std::vector<std::string>{"SAE-3"}));
}

// links_between finds parallel links in either order, sorted by link_id.
TEST_F(NetworkTest, LinksBetween) {
  auto ls = net_.links_between("KM1", "KM2");
  ASSERT_EQ(ls.size(), 2U);
  EXPECT_EQ(ls[0]->spec.link_id, "L12");
  EXPECT_EQ(ls[1]->spec.link_id, "L12b");
  EXPECT_EQ(net_.links_between("KM2", "KM1").size(), 2U);
  ASSERT_EQ(net_.links_between("KM3", "KM2").size(), 1U);
  EXPECT_EQ(net_.links_between("KM3", "KM2")[0]->spec.link_id, "L23");
  EXPECT_TRUE(net_.links_between("KM1", "KM9").empty());
  EXPECT_TRUE(net_.links_between("KM1", "KM1").empty());
}

// touch_km refreshes last_seen without counting as a routing change.
TEST_F(NetworkTest, TouchKm) {
  connect_all();
  clock_.advance(seconds{30});
  const auto v = net_.version();
  net_.touch_km("KM3");
  EXPECT_EQ(net_.find_km("KM3")->last_seen, clock_.now());
  EXPECT_EQ(net_.version(), v);
  EXPECT_THROW(net_.touch_km("KM9"), NotFound);
}

// Event kinds have stable names (used in logs and reroute reasons).
TEST(NetworkNames, EventKinds) {
  EXPECT_EQ(to_string(Kind::kQberHigh), "qber_high");
  EXPECT_EQ(to_string(Kind::kPoolOk), "pool_ok");
  EXPECT_EQ(to_string(Kind::kTopologyReplaced), "topology_replaced");
  EXPECT_EQ(to_string(OperState::kAlarm), "alarm");
}

// A large ring handles a status report per KM with work proportional to the report only.
TEST(NetworkScale, ThousandKmRing) {
  ManualClock clock;
  Network net(clock);
  TopologyDoc d;
  const int n = 1000;
  for (int i = 0; i < n; ++i) d.kms.push_back({"K" + std::to_string(i), ""});
  for (int i = 0; i < n; ++i) {
    d.links.push_back({"R" + std::to_string(i), "K" + std::to_string(i),
                       "K" + std::to_string((i + 1) % n), 1000, 10, 0.02});
  }
  net.apply_topology(d);
  for (int i = 0; i < n; ++i) {
    const std::string k = "K" + std::to_string(i);
    const std::string prev = "R" + std::to_string((i + n - 1) % n);
    const std::string next = "R" + std::to_string(i);
    net.register_km(reg(k, {{prev, ""}, {next, ""}}));
  }
  int up = 0;
  for (const auto& [id, l] : net.links()) up += l.oper == OperState::kUp ? 1 : 0;
  EXPECT_EQ(up, n);
  for (int round = 0; round < 5; ++round) {
    for (int i = 0; i < n; ++i) {
      const std::string k = "K" + std::to_string(i);
      net.apply_status(k, {report("R" + std::to_string(i), "", true, 1000 + round)});
    }
  }
  EXPECT_EQ(net.find_link("R7")->stored_key_bits, 1004U);
  EXPECT_EQ(describe(net.disconnect_km("K5")),
            (std::vector<std::string>{"km_disconnected:K5", "link_down:R4", "link_down:R5"}));
}

}  // namespace
}  // namespace qkdn::controller
