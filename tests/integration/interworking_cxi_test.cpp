// Cxi between two controllers (docs/cxi.md): peering over mutual TLS with each controller's
// identity bound to its certificate, reachability limited by policy, link status, route
// requests and answers, fault forwarding, and a peer that disappears (unusable within one
// heartbeat period, with an event). Two real Cxi nodes over TCP on 127.0.0.1, port 0.
#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <future>
#include <mutex>
#include <thread>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_future.hpp>

#include "qkdn/interworking/cxi_node.hpp"
#include "qkdn/interworking/peer_table.hpp"
#include "security_pki.hpp"

namespace qkdn::interworking {
namespace {

namespace asio = boost::asio;
using std::chrono::milliseconds;

// QKDN-A: SAE-A1 on KM-A1 -- GWA1 (X1 to GWB1) and -- GWA2 (X2 to GWB2).
controller::TopologyDoc doc_a() {
  controller::TopologyDoc d;
  d.qkdn_id = "QKDN-A";
  d.kms = {{"KMA1", ""}, {"GWA1", ""}, {"GWA2", ""}};
  d.kms[1].gateway = d.kms[2].gateway = true;
  d.links = {{"LA1", "KMA1", "GWA1", 1000, 0, 0}, {"LA2", "KMA1", "GWA2", 1000, 0, 0}};
  d.applications = {{"SAE-A1", "KMA1"}, {"SAE-A2", "KMA1"}};
  d.peers = {{"QKDN-B", "", "ctl-b", {{"SAE-A1"}, 0.5}}};
  d.inter_qkdn_links = {{"X1", "GWA1", "QKDN-B", "GWB1", 1000},
                        {"X2", "GWA2", "QKDN-B", "GWB2", 1000}};
  return d;
}

// QKDN-B: GWB1 -- KMB1 -- KMB2 (SAE-B1), GWB2 -- KMB2; SAE-B2 also on KMB2 but not allowed.
controller::TopologyDoc doc_b(const std::string& a_endpoint) {
  controller::TopologyDoc d;
  d.qkdn_id = "QKDN-B";
  d.kms = {{"GWB1", ""}, {"GWB2", ""}, {"KMB1", ""}, {"KMB2", ""}};
  d.kms[0].gateway = d.kms[1].gateway = true;
  d.links = {{"LB1", "GWB1", "KMB1", 1000, 0, 0},
             {"LB2", "KMB1", "KMB2", 1000, 0, 0},
             {"LB3", "GWB2", "KMB2", 1000, 0, 0}};
  d.applications = {{"SAE-B1", "KMB2"}, {"SAE-B2", "KMB2"}};
  d.peers = {{"QKDN-A", a_endpoint, "ctl-a", {{"SAE-B1"}, 0.25}}};
  d.inter_qkdn_links = {{"X1", "GWB1", "QKDN-A", "GWA1", 1000},
                        {"X2", "GWB2", "QKDN-A", "GWA2", 1000}};
  return d;
}

// Polls `pred` until it holds or `limit` passes.
bool eventually(const std::function<bool()>& pred, milliseconds limit = milliseconds{10'000}) {
  const auto end = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < end) {
    if (pred()) return true;
    std::this_thread::sleep_for(milliseconds{10});
  }
  return pred();
}

struct Events {
  std::mutex mu;
  std::vector<PeerEvent> all;
  void add(const PeerEvent& e) {
    std::lock_guard lock(mu);
    all.push_back(e);
  }
  std::size_t count(PeerEvent::Kind k) {
    std::lock_guard lock(mu);
    std::size_t n = 0;
    for (const auto& e : all) n += e.kind == k ? 1 : 0;
    return n;
  }
  std::string last_detail(PeerEvent::Kind k) {
    std::lock_guard lock(mu);
    for (auto it = all.rbegin(); it != all.rend(); ++it) {
      if (it->kind == k) return it->detail;
    }
    return {};
  }
};

class CxiPair : public ::testing::Test {
 protected:
  void SetUp() override {
    ca_ = pki_.make_ca("cxi");
    a_files_ = pki_.issue(ca_, "ctl-a", {"ctl-a", {"urn:qkdn:controller:ctl-a"}}).files();
    b_files_ = pki_.issue(ca_, "ctl-b", {"ctl-b", {"urn:qkdn:controller:ctl-b"}}).files();
    for (int i = 0; i < 2; ++i) threads_.emplace_back([this] { io_.run(); });
  }
  void TearDown() override {
    if (a_) a_->stop();
    if (b_) b_->stop();
    work_.reset();
    std::this_thread::sleep_for(milliseconds{100});
    io_.stop();
    for (auto& t : threads_) t.join();
  }

  std::shared_ptr<CxiNode> make(controller::TopologyDoc doc, const std::string& id,
                                const qkdn::net::TlsFiles& files, Events& events,
                                milliseconds heartbeat = milliseconds{300}) {
    CxiNodeOptions o;
    o.controller_id = id;
    o.tls = files;
    o.heartbeat = heartbeat;
    o.redial = milliseconds{50};
    o.request_timeout = milliseconds{2000};
    o.on_event = [&events](const PeerEvent& e) { events.add(e); };
    auto n = CxiNode::create(io_.get_executor(), std::move(doc), o);
    n->start();
    return n;
  }

  template <class F>
  auto table(const std::shared_ptr<CxiNode>& n, F f) {
    auto op = n->with_table(std::move(f));
    return asio::co_spawn(io_, std::move(op), asio::use_future).get();
  }

  bool up(const std::shared_ptr<CxiNode>& n, const std::string& peer) {
    return table(n, [peer](PeerTable& t) {
      const auto* s = t.state(peer);
      return s != nullptr && s->up;
    });
  }

  void start_both() {
    a_ = make(doc_a(), "ctl-a", a_files_, a_events_);
    b_ = make(doc_b("127.0.0.1:" + std::to_string(a_->port())), "ctl-b", b_files_, b_events_);
    ASSERT_TRUE(eventually([&] { return up(a_, "QKDN-B") && up(b_, "QKDN-A"); }));
    for (const char* l : {"X1", "X2"}) {
      a_->set_local_link_state(l, true);
      b_->set_local_link_state(l, true);
    }
    // Both sides see both inter-QKDN links up on both ends.
    auto all_usable = [this](const std::shared_ptr<CxiNode>& n) {
      return table(n, [](PeerTable& t) {
        bool all = true;
        for (const auto& l : t.local().inter_qkdn_links) all = all && t.link_usable(l);
        return all;
      });
    };
    ASSERT_TRUE(eventually([&] { return all_usable(a_) && all_usable(b_); }));
  }

  test::TestPki pki_;
  std::string ca_;
  qkdn::net::TlsFiles a_files_, b_files_;
  asio::io_context io_;
  asio::executor_work_guard<asio::io_context::executor_type> work_{io_.get_executor()};
  std::vector<std::thread> threads_;
  Events a_events_, b_events_;
  std::shared_ptr<CxiNode> a_, b_;
};

TEST_F(CxiPair, PeeringAndReachabilityWithinPolicy) {
  start_both();
  // A learns only SAE-B1 (B's policy for A), behind both of B's gateways, at B's hop counts.
  ASSERT_TRUE(eventually(
      [&] { return table(a_, [](PeerTable& t) { return t.route_to("SAE-B1").has_value(); }); }));
  const auto reach = table(a_, [](PeerTable& t) { return t.state("QKDN-B")->reachable; });
  ASSERT_EQ(reach.size(), 2U);
  EXPECT_EQ(reach[0], (ReachEntry{"SAE-B1", "GWB1", 2}));
  EXPECT_EQ(reach[1], (ReachEntry{"SAE-B1", "GWB2", 1}));
  EXPECT_FALSE(table(a_, [](PeerTable& t) { return t.route_to("SAE-B2").has_value(); }));
  // The cheapest route crosses X2 (B's side costs 1 there).
  const auto r = table(a_, [](PeerTable& t) { return t.route_to("SAE-B1"); });
  ASSERT_TRUE(r);
  EXPECT_EQ(r->link_id, "X2");
  EXPECT_EQ(r->peer_gateway, "GWB2");
  EXPECT_EQ(r->cost, 2);
  // B learns SAE-A1 only.
  ASSERT_TRUE(eventually(
      [&] { return table(b_, [](PeerTable& t) { return t.route_to("SAE-A1").has_value(); }); }));
  EXPECT_FALSE(table(b_, [](PeerTable& t) { return t.route_to("SAE-A2").has_value(); }));
  EXPECT_EQ(a_events_.count(PeerEvent::Kind::kPeerUp), 1U);
  EXPECT_EQ(b_events_.count(PeerEvent::Kind::kPeerUp), 1U);
  // What the API shows (published within a quarter heartbeat).
  ASSERT_TRUE(eventually([&] {
    const auto s = a_->snapshot("QKDN-B");
    return s && s->up && s->reachable_saes == 1 && s->links.size() == 2 && s->links[0].second &&
           s->links[1].second && s->last_heard_ms > 0;
  }));
  EXPECT_FALSE(a_->snapshot("QKDN-Z"));
}

TEST_F(CxiPair, RouteRequestAnsweredAndRefusedByPolicy) {
  start_both();
  ASSERT_TRUE(eventually(
      [&] { return table(a_, [](PeerTable& t) { return t.route_to("SAE-B1").has_value(); }); }));
  auto ask = [&](const std::string& dst, const std::string& link) {
    RouteRequest q{"", "SAE-A1", dst, link, 4, 256};
    auto op = a_->request_route("QKDN-B", q);
    return asio::co_spawn(io_, std::move(op), asio::use_future).get();
  };
  const auto ok = ask("SAE-B1", "X1");
  ASSERT_TRUE(ok);
  EXPECT_TRUE(ok->accepted) << ok->reason;
  EXPECT_EQ(ok->ingress_km, "GWB1");
  EXPECT_EQ(ok->cost, 2);
  const auto refused = ask("SAE-B2", "X1");
  ASSERT_TRUE(refused);
  EXPECT_FALSE(refused->accepted);
  EXPECT_EQ(refused->reason, "policy: SAE 'SAE-B2' is not reachable for QKDN 'QKDN-A'");
  // A link B sees down is refused, and A's route avoids it once B's status arrives.
  b_->set_local_link_state("X2", false);
  ASSERT_TRUE(eventually([&] {
    return table(a_, [](PeerTable& t) { return t.route_to("SAE-B1")->link_id == "X1"; });
  }));
  const auto down = ask("SAE-B1", "X2");
  ASSERT_TRUE(down);
  EXPECT_FALSE(down->accepted);
  EXPECT_EQ(down->reason, "link 'X2' is not up on both sides");
}

TEST_F(CxiPair, FaultIsForwarded) {
  start_both();
  a_->forward_fault("QKDN-B", {"relay-1", "X1", "hmac mismatch at GWA1"});
  ASSERT_TRUE(eventually([&] { return b_events_.count(PeerEvent::Kind::kFaultReceived) == 1; }));
  EXPECT_EQ(b_events_.last_detail(PeerEvent::Kind::kFaultReceived),
            "relay relay-1 on link X1: hmac mismatch at GWA1");
}

TEST_F(CxiPair, PeerThatDisappearsIsDownWithinOneHeartbeat) {
  start_both();
  ASSERT_TRUE(eventually(
      [&] { return table(a_, [](PeerTable& t) { return t.route_to("SAE-B1").has_value(); }); }));
  // B goes silent: its session ends (as a killed process's would, or a cut cable's later).
  b_->stop();
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(eventually([&] { return !up(a_, "QKDN-B"); }));
  // Heartbeat 300 ms; the bound allows for a loaded machine without hiding a missing check.
  EXPECT_LT(std::chrono::steady_clock::now() - t0, milliseconds{1500});
  EXPECT_FALSE(table(a_, [](PeerTable& t) { return t.route_to("SAE-B1").has_value(); }));
  EXPECT_EQ(a_events_.count(PeerEvent::Kind::kPeerDown), 1U);
}

TEST_F(CxiPair, WrongCertificateIdentityIsRefused) {
  // B presents a certificate for ctl-x, which A does not know as a peer.
  auto x_files = pki_.issue(ca_, "ctl-x", {"ctl-x", {"urn:qkdn:controller:ctl-x"}}).files();
  a_ = make(doc_a(), "ctl-a", a_files_, a_events_);
  b_ = make(doc_b("127.0.0.1:" + std::to_string(a_->port())), "ctl-b", x_files, b_events_);
  ASSERT_TRUE(eventually([&] { return a_->counters().sessions_refused >= 2; }));
  EXPECT_FALSE(up(a_, "QKDN-B"));
  EXPECT_FALSE(up(b_, "QKDN-A"));
  // A KM certificate of the same CA is no controller either.
  auto km_files = pki_.issue(ca_, "km", {"GWB1", {"urn:qkdn:km:GWB1"}}).files();
  Events e;
  auto k = make(doc_b("127.0.0.1:" + std::to_string(a_->port())), "ctl-b", km_files, e);
  const auto before = a_->counters().sessions_refused;
  ASSERT_TRUE(eventually([&] { return a_->counters().sessions_refused >= before + 2; }));
  EXPECT_FALSE(up(a_, "QKDN-B"));
  k->stop();
}

// ---- the peer table alone (injected time) ----------------------------------------------------

TEST(PeerTable, ReachabilityNamingAForeignGatewayIsRefused) {
  PeerTable t(doc_a(), milliseconds{1000});
  std::vector<PeerEvent> ev;
  const auto now = std::chrono::steady_clock::time_point{};
  ASSERT_FALSE(t.on_hello("ctl-b", {kCxiVersion, "QKDN-B", "ctl-b", 1000}, now, ev));
  try {
    t.accept_reachability("QKDN-B", {{{"SAE-B1", "KMB9", 1}}});
    ADD_FAILURE() << "accepted";
  } catch (const BadCxiMessage& e) {
    EXPECT_EQ(std::string(e.what()),
              "entries[0].gateway_km: 'KMB9' ends no inter-QKDN link with this QKDN");
  }
  try {
    t.accept_link_status("QKDN-B", {{{"LA1", true}}});
    ADD_FAILURE() << "accepted";
  } catch (const BadCxiMessage& e) {
    EXPECT_EQ(std::string(e.what()),
              "links[0].link_id: 'LA1' is no inter-QKDN link with this QKDN");
  }
}

TEST(PeerTable, HelloMustMatchTheCertificate) {
  PeerTable t(doc_a(), milliseconds{1000});
  std::vector<PeerEvent> ev;
  const auto now = std::chrono::steady_clock::time_point{};
  EXPECT_EQ(t.on_hello("ctl-b", {kCxiVersion, "QKDN-C", "ctl-b", 1000}, now, ev),
            "certificate identity 'ctl-b' belongs to QKDN 'QKDN-B', not 'QKDN-C'");
  EXPECT_EQ(t.on_hello("ctl-z", {kCxiVersion, "QKDN-B", "ctl-z", 1000}, now, ev),
            "certificate identity 'ctl-z' is no declared peer");
  EXPECT_EQ(t.on_hello("ctl-b", {2, "QKDN-B", "ctl-b", 1000}, now, ev),
            "unsupported Cxi version 2");
  EXPECT_TRUE(ev.empty());
}

TEST(PeerTable, SilentPeerGoesDownAfterOneHeartbeat) {
  PeerTable t(doc_a(), milliseconds{1000});
  std::vector<PeerEvent> ev;
  const auto t0 = std::chrono::steady_clock::time_point{} + std::chrono::hours{1};
  ASSERT_FALSE(t.on_hello("ctl-b", {kCxiVersion, "QKDN-B", "ctl-b", 1000}, t0, ev));
  t.set_local_link_state("X1", true);
  t.accept_link_status("QKDN-B", {{{"X1", true}}});
  t.accept_reachability("QKDN-B", {{{"SAE-B1", "GWB1", 3}}});
  ASSERT_TRUE(t.route_to("SAE-B1"));
  EXPECT_TRUE(t.check_liveness(t0 + milliseconds{999}).empty());
  const auto down = t.check_liveness(t0 + milliseconds{1000});
  ASSERT_EQ(down.size(), 1U);
  EXPECT_EQ(down[0].kind, PeerEvent::Kind::kPeerDown);
  EXPECT_FALSE(t.route_to("SAE-B1"));
}

TEST(CxiMessages, DecodeValidatesAndBounds) {
  auto refused = [](const std::string& body) {
    try {
      (void)decode(body);
      return std::string("accepted");
    } catch (const BadCxiMessage& e) {
      return std::string(e.what());
    }
  };
  EXPECT_EQ(refused(R"({"type":"nope"})"), "type: unknown message type 'nope'");
  EXPECT_EQ(refused(R"({"type":"heartbeat","seq":1,"x":2})"), "unknown field 'x'");
  EXPECT_NE(refused(R"({"type":"hello","version":1,"qkdn_id":"a b","controller_id":"c",)"
                    R"("heartbeat_ms":1000})"),
            "accepted");
  EXPECT_NE(refused(R"({"type":"route_request","request_id":"r","src_sae":"a","dst_sae":"b",)"
                    R"("link_id":"X","number_of_keys":100000,"key_size_bits":256})"),
            "accepted");
  std::string big = R"({"type":"reachability","entries":[)";
  for (std::size_t i = 0; i <= kMaxReachabilityEntries; ++i) {
    big += std::string(i ? "," : "") + R"({"sae_id":"S","gateway_km":"G","cost":1})";
  }
  EXPECT_EQ(refused(big + "]}"), "entries: at most 4096 entries");
  const unsigned char zero[4] = {0, 0, 0, 0};
  EXPECT_THROW(frame_length(zero), BadCxiMessage);
  const unsigned char huge[4] = {0, 0x20, 0, 1};  // 2 MiB + 1
  EXPECT_THROW(frame_length(huge), BadCxiMessage);
  // Round trip.
  const Message m = RouteAnswer{"r1", true, "X1", "GWB1", 2, ""};
  const auto back = decode(encode(m));
  EXPECT_EQ(std::get<RouteAnswer>(back).ingress_km, "GWB1");
}

// Kxi-1 relay messages (docs/cxi.md 5.6): a peer's answer names key IDs and KMs; everything is
// bounded and checked before the controller sees it.
TEST(CxiMessages, RelayMessagesRoundTripAndRefusals) {
  const std::string k1 = "0b6c2f1e-8a3d-4c5e-9f00-112233445566";
  const std::string k2 = "1b6c2f1e-8a3d-4c5e-9f00-112233445566";
  RelaySetupAnswer a;
  a.relay_id = "r1";
  a.accepted = true;
  a.dst_km = "KMB1";
  a.hops.push_back({"GWB1", "KMB1", "LB1", {k1, k2}});
  const auto back = std::get<RelaySetupAnswer>(decode(encode(Message{a})));
  ASSERT_EQ(back.hops.size(), 1u);
  EXPECT_EQ(back.hops[0].key_ids, (std::vector<std::string>{k1, k2}));
  EXPECT_EQ(back.dst_km, "KMB1");
  const auto setup =
      std::get<RelaySetup>(decode(encode(Message{RelaySetup{"r1", "SAE-A1", "SAE-B1", "X1", 4}})));
  EXPECT_EQ(setup.number_of_keys, 4);
  const auto end = std::get<RelayEnd>(decode(encode(Message{RelayEnd{"r1", false, "timeout"}})));
  EXPECT_FALSE(end.relayed);
  EXPECT_EQ(end.reason, "timeout");

  auto refused = [](const std::string& body) -> std::string {
    try {
      (void)decode(body);
      return "accepted";
    } catch (const BadCxiMessage& e) {
      return e.what();
    }
  };
  const std::string head = R"({"type":"relay_setup_answer","relay_id":"r1","accepted":true,)";
  EXPECT_EQ(refused(head + R"("dst_km":"K","hops":[{"kma_id":"G","next_kma_id":"K",)"
                           R"("link_id":"L","key_ids":["not-a-uuid"]}]})"),
            "hops[0].key_ids[0]: expected a UUID");
  EXPECT_EQ(refused(head + R"("dst_km":"K","hops":[{"kma_id":"G","next_kma_id":"K",)"
                           R"("link_id":"L","key_ids":[]}]})"),
            "hops[0].key_ids: at least one key ID");
  std::string many = head + R"("dst_km":"K","hops":[)";
  for (std::size_t i = 0; i <= kMaxRelayHops; ++i) {
    many += std::string(i ? "," : "") + R"({"kma_id":"G","next_kma_id":"K","link_id":"L",)" +
            R"("key_ids":[")" + k1 + R"("]})";
  }
  EXPECT_EQ(refused(many + "]}"), "hops: at most 16 entries");
  EXPECT_NE(refused(head + R"("hops":[]})"), "accepted");  // dst_km missing
  EXPECT_EQ(refused(R"({"type":"relay_end","relay_id":"r1","result":"maybe"})"),
            "result: must be relayed or failed");
  EXPECT_NE(refused(R"({"type":"relay_setup","relay_id":"r1","src_sae":"a","dst_sae":"b",)"
                    R"("link_id":"X","number_of_keys":0})"),
            "accepted");
  EXPECT_EQ(refused(R"({"type":"relay_setup","relay_id":"r1","src_sae":"a","dst_sae":"b",)"
                    R"("link_id":"X","number_of_keys":1,"km":"K"})"),
            "unknown field 'km'");
}

TEST(CxiMessages, SummaryRoundTripAndBounds) {
  auto refused = [](const std::string& body) {
    try {
      (void)decode(body);
      return std::string("accepted");
    } catch (const BadCxiMessage& e) {
      return std::string(e.what());
    }
  };
  Summary m;
  m.seq = 3;
  m.period_ms = 5000;
  m.performance = {1, 2, 7};
  m.accounting = {5, 2, 1};
  m.security = {4, 9, 0};
  EXPECT_EQ(std::get<Summary>(decode(encode(m))), m);
  EXPECT_EQ(type_name(Message{m}), "summary");
  const std::string perf = R"("performance":{"links_usable":1,"links_total":2,)"
                           R"("route_requests_answered":0},)";
  const std::string acct = R"("accounting":{"route_requests_accepted":0,)"
                           R"("route_requests_refused":0,"faults_sent":0},)";
  const std::string sec = R"("security":{"sessions_refused":0,"bad_messages":0,)"
                          R"("faults_received":0})";
  const std::string head = R"({"type":"summary","seq":1,"period_ms":1000,)";
  EXPECT_EQ(refused(head + perf + acct + sec + "}"), "accepted");
  // Every member mandatory, none unknown, counters and period bounded, usable <= total.
  EXPECT_EQ(refused(head + perf + acct.substr(0, acct.size() - 1) + "}"),
            "security: required object");
  EXPECT_NE(refused(head + perf + acct +
                    R"("security":{"sessions_refused":0,"bad_messages":0,)"
                    R"("faults_received":0,"extra":1}})"),
            "accepted");
  EXPECT_NE(refused(head + perf + acct +
                    R"("security":{"sessions_refused":-1,"bad_messages":0,)"
                    R"("faults_received":0}})"),
            "accepted");
  EXPECT_NE(refused(head + perf + acct +
                    R"("security":{"sessions_refused":9007199254740992,)"
                    R"("bad_messages":0,"faults_received":0}})"),
            "accepted");
  EXPECT_NE(refused(R"({"type":"summary","seq":1,"period_ms":999,)" + perf + acct + sec + "}"),
            "accepted");
  EXPECT_NE(refused(R"({"type":"summary","seq":0,"period_ms":1000,)" + perf + acct + sec + "}"),
            "accepted");
  EXPECT_EQ(refused(head +
                    R"("performance":{"links_usable":3,"links_total":2,)"
                    R"("route_requests_answered":0},)" +
                    acct + sec + "}"),
            "performance.links_usable: more than links_total");
  EXPECT_NE(refused(head + R"("performance":[],)" + acct + sec + "}"), "accepted");
}

}  // namespace
}  // namespace qkdn::interworking
