// The real ControllerService on an in-memory store (controller::MemoryStore through
// memory_store_factory), no PostgreSQL: topology load, registration over loopback Ck (port 0),
// a relay and a session through the ordered writer, a reroute on a link fault, restart recovery
// from the same store, and a store outage. Fake KMs speak real Ck (tests/integration helpers).
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "qkdn/controller/error.hpp"
#include "qkdn/controller/memory_store.hpp"
#include "service_test_support.hpp"

namespace qkdn::test {
namespace {

using controller::LedgerState;
using controller::MemoryStore;
using controller::RelayState;

// Polls `pred` (bounded); true once it held.
template <class P>
bool poll(P pred, std::chrono::milliseconds bound = 10s) {
  const auto deadline = std::chrono::steady_clock::now() + bound;
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(10ms);
  }
  return pred();
}

service::ServiceOptions on_store(const std::shared_ptr<MemoryStore>& store) {
  service::ServiceOptions o;
  o.store = controller::memory_store_factory(store);
  return o;
}

// The first 0x4104 numbered `index` the KM received (bounded wait).
ck::KeyRelayRequest relay_request(FakeKm& km, std::size_t index = 0) {
  EXPECT_TRUE(poll([&] { return km.received(0x4104).size() > index; }, 5s)) << km.id();
  const auto all = km.received(0x4104);
  if (all.size() <= index) throw std::runtime_error(km.id() + ": no 0x4104");
  return decode_as<ck::KeyRelayRequest>(all[index]);
}

// The stored ledger entry of `key_id`, or "" when the store has none.
std::string stored_state(MemoryStore& store, const std::string& key_id) {
  for (const auto& e : store.load().ledger) {
    if (e.key_id == key_id) return e.state;
  }
  return "";
}

// The service stores the topology it was given in the store main passed, takes its epoch from
// that store, and on the next start the stored topology wins over a different one given.
TEST(ServiceMemoryStore, TopologyAndEpochComeFromTheGivenStore) {
  auto store = std::make_shared<MemoryStore>();
  std::int64_t first_epoch = 0;
  {
    ServiceHarness h(chain_topology(3), on_store(store));
    EXPECT_TRUE(h.svc().store_configured());
    EXPECT_TRUE(h.svc().store_up());
    first_epoch = h.svc().controller_epoch();
    const auto stored = store->load().topology;
    ASSERT_TRUE(stored);
    EXPECT_EQ(stored->kms.size(), 3u);
  }
  {
    ServiceHarness h(chain_topology(2), on_store(store));
    EXPECT_GT(h.svc().controller_epoch(), first_epoch);
    EXPECT_EQ(h.core([](service::Core& c) { return c.network.kms().size(); }), 3u);
  }
  {
    auto o = on_store(store);
    o.topology_override = true;
    ServiceHarness h(chain_topology(2), std::move(o));
    EXPECT_EQ(h.core([](service::Core& c) { return c.network.kms().size(); }), 2u);
    EXPECT_EQ(store->load().topology->kms.size(), 2u);
  }
}

// A store that cannot be opened stops start-up with one clear error naming the store.
TEST(ServiceMemoryStore, UnavailableStoreStopsStartUp) {
  auto store = std::make_shared<MemoryStore>();
  store->set_available(false);
  auto o = on_store(store);
  o.insecure_ck = true;
  o.listen_port = 0;
  o.topology = chain_topology(2);
  o.log = [](std::string_view) {};
  try {
    service::ControllerService svc(std::move(o));
    FAIL() << "started on an unavailable store";
  } catch (const Unavailable& e) {
    EXPECT_NE(std::string(e.what()).find("in-memory store"), std::string::npos) << e.what();
  }
}

// A KM registers over real Ck on 127.0.0.1:0 and is told the store's epoch; a KM the topology
// does not know is refused.
TEST(ServiceMemoryStore, RegistrationOverLoopbackCk) {
  auto store = std::make_shared<MemoryStore>();
  const auto topo = chain_topology(2);
  ServiceHarness h(topo, on_store(store));
  FakeKm km1(h.port(), "KM1", links_of(topo, "KM1"));
  EXPECT_EQ(km1.epoch(), h.svc().controller_epoch());
  EXPECT_TRUE(poll([&] { return h.svc().snapshot_state().sessions == 1; }));
  EXPECT_THROW(FakeKm(h.port(), "KM9", {}), std::runtime_error);
  EXPECT_EQ(h.svc().snapshot_state().sessions, 1u);
}

// A relay over two hops: its ledger rows reach the store (consumed once relayed) and its relay
// record is stored as relayed; a session is stored and its keys accounted.
TEST(ServiceMemoryStore, RelayAndSessionAreStored) {
  auto store = std::make_shared<MemoryStore>();
  const auto topo = chain_topology(3);
  ServiceHarness h(topo, on_store(store));
  auto kms = connect_all(topo, h.port());
  ASSERT_TRUE(h.wait_links_up());
  auto& km1 = *kms["KM1"];

  const auto sid = km1.send(
      0x1406,
      R"({"application_source_id":"SAE1","application_destination_id":"SAE3","number_of_keys":2})");
  const auto answer = km1.answer_to(sid);
  ASSERT_TRUE(answer) << h.log_text();
  ASSERT_EQ(answer->command, 0x4107) << answer->payload;
  const auto session = decode_as<ck::SessionCreationResponse>(*answer);
  ASSERT_EQ(session.response, "OK");

  km1.request_relay("KM3", 2);
  const auto req = relay_request(km1);
  ASSERT_TRUE(req.key_relay_request_id);
  std::vector<std::string> keys;
  for (const auto& hk : req.hop_keys) keys.insert(keys.end(), hk.key_ids.begin(), hk.key_ids.end());
  ASSERT_EQ(keys.size(), 4u);
  ASSERT_TRUE(poll([&] {
    const auto stored = store->load();
    const bool relayed = std::any_of(stored.relays.begin(), stored.relays.end(), [&](auto& r) {
      return r.relay_id == *req.key_relay_request_id && r.state == "relayed";
    });
    return relayed && std::all_of(keys.begin(), keys.end(), [&](const auto& k) {
             return stored_state(*store, k) == "consumed";
           });
  })) << h.log_text();
  const auto stored = store->load();
  EXPECT_TRUE(std::any_of(stored.sessions.begin(), stored.sessions.end(),
                          [&](auto& s) { return s.session_id == session.session_id; }));
  ASSERT_TRUE(poll([&] { return !store->accounting(SysTime{}, SysTime::max(), "SAE1").empty(); }))
      << h.log_text();
  EXPECT_EQ(store->accounting(SysTime{}, SysTime::max(), "SAE1").at(0).keys, 2);
}

// A QBER alarm on a link of the standing route: the alarm is stored, the route is rerouted
// (qkdn_reroutes_total{reason="qber"}) and the next relay avoids the link.
TEST(ServiceMemoryStore, RerouteOnLinkFault) {
  auto store = std::make_shared<MemoryStore>();
  const auto topo = diamond_topology();
  ServiceHarness h(topo, on_store(store));
  auto kms = connect_all(topo, h.port());
  ASSERT_TRUE(h.wait_links_up());
  auto& km1 = *kms["KM1"];
  const auto reroutes = [&] {
    return metric_value(h.svc().metrics().serialize(), R"(qkdn_reroutes_total{reason="qber"})");
  };
  km1.request_relay("KM4");
  ASSERT_EQ(relay_request(km1, 0).transit_kma_ids, std::vector<std::string>{"KM2"});

  km1.send(0x14E4, R"({"kma_id":"KM1","alarm":"qber_high","link_id":"L12","severity":"major",)"
                   R"("value":0.2,"timestamp":"2026-01-01T00:00:00Z"})");
  EXPECT_TRUE(poll([&] { return reroutes() == 1; })) << h.log_text();
  EXPECT_TRUE(poll([&] {
    const auto alarms = store->load().alarms;
    return std::any_of(alarms.begin(), alarms.end(), [](const controller::Alarm& a) {
      return a.resource == "L12" && a.cleared_at == std::nullopt;
    });
  })) << h.log_text();

  km1.request_relay("KM4");
  const auto second = relay_request(km1, 1);
  EXPECT_EQ(second.transit_kma_ids, std::vector<std::string>{"KM3"});
  for (const auto& hk : second.hop_keys) EXPECT_NE(hk.link_id, "L12");
}

// A restart on the same store: the stored topology and session come back, and keys a relay held
// when the controller stopped are released (in the core and in the store), never reused.
TEST(ServiceMemoryStore, RestartRecoversFromTheSameStore) {
  auto store = std::make_shared<MemoryStore>();
  const auto topo = chain_topology(3);
  std::string session_id;
  std::vector<std::string> held;
  {
    ServiceHarness h(topo, on_store(store));
    auto kms = connect_all(topo, h.port());
    ASSERT_TRUE(h.wait_links_up());
    const auto sid = kms["KM1"]->send(
        0x1406,
        R"({"application_source_id":"SAE1","application_destination_id":"SAE3","number_of_keys":1})");
    const auto answer = kms["KM1"]->answer_to(sid);
    ASSERT_TRUE(answer);
    session_id = decode_as<ck::SessionCreationResponse>(*answer).session_id;
    ASSERT_FALSE(session_id.empty()) << answer->payload;

    FakeKm::Behavior hold;
    hold.hold_allocation = true;
    kms["KM2"]->set_behavior(hold);
    kms["KM1"]->request_relay("KM3", 2);
    ASSERT_TRUE(kms["KM2"]->wait_for(0x410C)) << h.log_text();
    for (const auto* km : {"KM1", "KM2"}) {
      const auto k = kms[km]->reserved_keys();
      held.insert(held.end(), k.begin(), k.end());
    }
    ASSERT_EQ(held.size(), 4u);
    ASSERT_TRUE(poll([&] {
      return std::all_of(held.begin(), held.end(),
                         [&](const auto& k) { return !stored_state(*store, k).empty(); });
    })) << h.log_text();
    for (auto& [id, km] : kms) km->stop();
  }

  ServiceHarness h(controller::TopologyDoc{}, on_store(store));
  EXPECT_EQ(h.core([](service::Core& c) { return c.network.kms().size(); }), 3u);
  h.core([&](service::Core& c) {
    const auto* s = c.sessions.find(session_id);
    EXPECT_NE(s, nullptr);
    for (const auto& k : held) EXPECT_EQ(c.ledger.state_of(k), LedgerState::kReleased) << k;
    EXPECT_EQ(c.ledger.live_count(), 0u);
    for (const auto& r : c.relays.list()) EXPECT_TRUE(controller::is_final(r.state));
    return 0;
  });
  for (const auto& k : held) EXPECT_EQ(stored_state(*store, k), "released") << k;
}

// The store fails under a relay: store_up turns false, a new relay is refused with an Error
// naming the store, and once the store answers again the held write commits and the first relay
// completes.
TEST(ServiceMemoryStore, StoreOutageRefusesRelaysUntilItIsBack) {
  auto store = std::make_shared<MemoryStore>();
  const auto topo = chain_topology(2);
  ServiceHarness h(topo, on_store(store));
  auto kms = connect_all(topo, h.port());
  ASSERT_TRUE(h.wait_links_up());
  auto& km1 = *kms["KM1"];

  store->set_available(false);
  km1.request_relay("KM2", 1);
  ASSERT_TRUE(poll([&] { return !h.svc().store_up(); })) << h.log_text();
  const auto refused = km1.request_relay("KM2", 1);
  const auto f = km1.answer_to(refused);
  ASSERT_TRUE(f) << h.log_text();
  ASSERT_EQ(f->command, 0x41EF) << f->payload;
  EXPECT_NE(f->payload.find("store unavailable"), std::string::npos) << f->payload;
  EXPECT_TRUE(km1.received(0x4104).empty());

  store->set_available(true);
  EXPECT_TRUE(poll([&] { return h.svc().store_up(); })) << h.log_text();
  const auto req = relay_request(km1);
  ASSERT_TRUE(req.key_relay_request_id);
  EXPECT_TRUE(h.wait_core([&](service::Core& c) {
    const auto* r = c.relays.find(*req.key_relay_request_id);
    return r != nullptr && r->state == RelayState::kRelayed;
  })) << h.log_text();
}

}  // namespace
}  // namespace qkdn::test
