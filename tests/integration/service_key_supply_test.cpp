// Routing and key supply through the real Ck server: the service in-process on 127.0.0.1:0 with
// the key-supply handler, fake KMs over TCP answering reservations, allocations, relay requests
// and session notifications (ck-protocol.md clauses 4 and 6).
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include <algorithm>

#include "qkdn/controller/error.hpp"
#include "service_test_support.hpp"

namespace qkdn::test {
namespace {

using controller::LedgerState;
using controller::RelayState;

std::string metrics_text(ServiceHarness& h) { return h.svc().metrics().serialize(); }

double relays_total(ServiceHarness& h, const std::string& result) {
  return metric_value(metrics_text(h), R"(qkdn_key_relays_total{result=")" + result + R"("})");
}

// The relay's 0x4104 as the source KM received it (the first one after `skip`).
ck::KeyRelayRequest relay_request(FakeKm& km, std::size_t index = 0) {
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  while (std::chrono::steady_clock::now() < deadline) {
    auto all = km.received(0x4104);
    if (all.size() > index) return decode_as<ck::KeyRelayRequest>(all[index]);
    std::this_thread::sleep_for(5ms);
  }
  throw std::runtime_error(km.id() + ": no 0x4104 #" + std::to_string(index));
}

// 0x1401 answers the first hop of the standing route, by KMA and by application, with the
// controller epoch; an unknown application is an Error.
TEST(ServiceRouting, NextHopByKmaAndApplication) {
  const auto topo = chain_topology(4);
  ServiceHarness h(topo);
  auto kms = connect_all(topo, h.port());
  ASSERT_TRUE(h.wait_links_up());
  auto& km1 = *kms["KM1"];

  const auto id = km1.send(0x1401, R"({"destination_kma_id":"KM4"})");
  auto f = km1.answer_to(id);
  ASSERT_TRUE(f);
  ASSERT_EQ(f->command, 0x4102) << f->payload;
  auto r = decode_as<ck::KeyRelayNextHopResponse>(*f);
  ASSERT_FALSE(r.next_kma_ids.empty());
  EXPECT_EQ(r.next_kma_ids.front(), "KM2");
  EXPECT_EQ(r.destination_kma_id, "KM4");
  EXPECT_EQ(r.controller_epoch, h.svc().controller_epoch());

  const auto id2 = km1.send(0x1401, R"({"application_destination_id":"SAE3"})");
  f = km1.answer_to(id2);
  ASSERT_TRUE(f);
  r = decode_as<ck::KeyRelayNextHopResponse>(*f);
  EXPECT_EQ(r.destination_kma_id, "KM3");
  EXPECT_EQ(r.next_kma_ids, std::vector<std::string>{"KM2"});

  // A transit KM asking for the route's source: routes onwards, never back.
  auto& km2 = *kms["KM2"];
  const auto id3 = km2.send(0x1401, R"({"source_kma_id":"KM1","destination_kma_id":"KM4"})");
  f = km2.answer_to(id3);
  ASSERT_TRUE(f);
  EXPECT_EQ(decode_as<ck::KeyRelayNextHopResponse>(*f).next_kma_ids,
            std::vector<std::string>{"KM3"});

  const auto id4 = km1.send(0x1401, R"({"application_destination_id":"NOBODY"})");
  f = km1.answer_to(id4);
  ASSERT_TRUE(f);
  ASSERT_EQ(f->command, 0x41EF);
  EXPECT_EQ(decode_as<ck::ErrorMessage>(*f).error, "unknown_application");
  EXPECT_GT(metric_value(metrics_text(h), "qkdn_route_computation_seconds_count"), 0);
}

// 0x1401 naming the source SAE (application_source_id in the extension) gets next hops that meet
// that SAE pair's trust constraints (issue 20): KM1 -> KM4 is shorter through low-trust KM2; the
// constrained pair goes through KM3, another pair keeps the shortest, a pair no route can
// satisfy gets no next hop, and an SAE of another KM is refused.
TEST(ServiceRouting, NextHopMeetsTheNamedSaePairsConstraints) {
  auto topo = diamond_topology();
  topo.kms[1].trust_level = 10;  // KM2
  topo.kms[2].trust_level = 90;  // KM3
  for (auto& l : topo.links) {
    if (l.link_id == "L13" || l.link_id == "L34") l.weight = 2;  // the long way round
  }
  topo.applications = {{"SAE1a", "KM1"}, {"SAE1b", "KM1"}, {"SAE1c", "KM1"}, {"SAE4", "KM4"}};
  ServiceHarness h(topo);
  auto kms = connect_all(topo, h.port());
  ASSERT_TRUE(h.wait_links_up());
  h.core([](service::Core& c) {
    c.rerouting.set_sae_constraints({"SAE1a", "SAE4", std::nullopt, 50, {}, {}});
    c.rerouting.set_sae_constraints({"SAE1c", "SAE4", std::nullopt, 95, {}, {}});
    return 0;
  });
  auto& km1 = *kms["KM1"];
  auto next_hops = [&](const std::string& sae) {
    const auto id = km1.send(0x1401, R"({"application_destination_id":"SAE4","extension":)"
                                     R"([{"application_source_id":")" +
                                         sae + R"("}]})");
    auto f = km1.answer_to(id);
    if (!f) throw std::runtime_error("no answer to 0x1401");
    if (f->command != 0x4102) throw std::runtime_error("0x1401 answered " + f->payload);
    return decode_as<ck::KeyRelayNextHopResponse>(*f).next_kma_ids;
  };
  EXPECT_EQ(next_hops("SAE1a"), std::vector<std::string>{"KM3"});
  const auto open_pair = next_hops("SAE1b");
  ASSERT_FALSE(open_pair.empty());
  EXPECT_EQ(open_pair.front(), "KM2");
  EXPECT_TRUE(next_hops("SAE1c").empty());

  const auto id = km1.send(0x1401, R"({"application_destination_id":"SAE4","extension":)"
                                   R"([{"application_source_id":"SAE4"}]})");
  auto f = km1.answer_to(id);
  ASSERT_TRUE(f);
  ASSERT_EQ(f->command, 0x41EF) << f->payload;
  EXPECT_EQ(decode_as<ck::ErrorMessage>(*f).error, "bad_request");
}

// Distributed relay (Q.4164 7.1): the operator's relay routing policy reaches every KM in its
// register response, and a transit KM's 0x1401 naming the KMs the relay already visited gets
// next hops that avoid them (visited_kma_ids), so a hop-by-hop relay never loops back.
TEST(ServiceRouting, DistributedRelayPolicyAndVisitedKms) {
  const auto topo = diamond_topology();
  {
    ServiceHarness centralized(topo);
    FakeKm km1(centralized.port(), "KM1", links_of(topo, "KM1"));
    EXPECT_EQ(km1.relay_routing(), "centralized");
  }
  service::ServiceOptions o;
  o.distributed_relay = true;
  ServiceHarness h(topo, o);
  auto kms = connect_all(topo, h.port());
  ASSERT_TRUE(h.wait_links_up());
  for (const auto& [id, km] : kms) EXPECT_EQ(km->relay_routing(), "distributed") << id;
  auto& km4 = *kms["KM4"];
  auto next_hops = [&](const std::string& extension) {
    std::string body = R"({"source_kma_id":"KM2","destination_kma_id":"KM1")";
    if (!extension.empty()) body += R"(,"extension":)" + extension;
    const auto id = km4.send(0x1401, body + "}");
    auto f = km4.answer_to(id);
    if (!f) throw std::runtime_error("no answer to 0x1401");
    if (f->command != 0x4102) throw std::runtime_error("0x1401 answered " + f->payload);
    return decode_as<ck::KeyRelayNextHopResponse>(*f).next_kma_ids;
  };
  // The relay came KM2 -> KM4: never back through the source KM2, so through KM3.
  EXPECT_EQ(next_hops(""), std::vector<std::string>{"KM3"});
  // It also passed KM3 (KM2 -> KM3 -> KM4 in a longer relay): no next hop is left.
  EXPECT_TRUE(next_hops(R"([{"visited_kma_ids":["KM2","KM3","KM4"]}])").empty());
  // Unknown KMs in the list are ignored; the destination is never avoided.
  EXPECT_EQ(next_hops(R"([{"visited_kma_ids":["NOBODY","KM1"]}])"),
            std::vector<std::string>{"KM3"});
}

// No usable route (the far KM is not connected): an empty next_kma_ids, not an error.
TEST(ServiceRouting, NoRouteIsEmptyNextHops) {
  const auto topo = chain_topology(3);
  ServiceHarness h(topo);
  FakeKm km1(h.port(), "KM1", links_of(topo, "KM1"));
  const auto id = km1.send(0x1401, R"({"destination_kma_id":"KM3"})");
  auto f = km1.answer_to(id);
  ASSERT_TRUE(f);
  ASSERT_EQ(f->command, 0x4102) << f->payload;
  EXPECT_TRUE(decode_as<ck::KeyRelayNextHopResponse>(*f).next_kma_ids.empty());
}

// A full relay over a 3-hop route: 0x410A and 0x410C to each hop's near KM, then 0x4104 to the
// source with transit KMs and hop keys; its OK consumes every hop key and moves the metrics.
TEST(ServiceKeySupply, FullRelayOverThreeHops) {
  const auto topo = chain_topology(4);
  ServiceHarness h(topo);
  auto kms = connect_all(topo, h.port());
  ASSERT_TRUE(h.wait_links_up());
  auto& km1 = *kms["KM1"];

  const auto notification = km1.request_relay("KM4", 2);
  const auto req = relay_request(km1);
  EXPECT_EQ(req.destination_kma_id, "KM4");
  EXPECT_EQ(req.transit_kma_ids, (std::vector<std::string>{"KM2", "KM3"}));
  EXPECT_EQ(req.notification_message_id, notification);
  ASSERT_TRUE(req.key_relay_request_id);
  ASSERT_EQ(req.hop_keys.size(), 3u);
  EXPECT_EQ(req.hop_keys[0].kma_id, "KM1");
  EXPECT_EQ(req.hop_keys[0].next_kma_id, "KM2");
  EXPECT_EQ(req.hop_keys[2].kma_id, "KM3");
  EXPECT_EQ(req.hop_keys[2].next_kma_id, "KM4");
  EXPECT_EQ(req.controller_epoch, h.svc().controller_epoch());
  // Every hop's near KM reserved and allocated; the far end of the route was asked nothing.
  for (const char* km : {"KM1", "KM2", "KM3"}) {
    ASSERT_EQ(kms[km]->received(0x410A).size(), 1u) << km;
    const auto res = decode_as<ck::KeyReservationRequest>(kms[km]->received(0x410A)[0]);
    EXPECT_EQ(res.source_kma_id, "KM1");
    EXPECT_EQ(res.destination_kma_id, "KM4");
    EXPECT_EQ(res.number_of_keys, 2);
    EXPECT_TRUE(res.controller_epoch);
    ASSERT_TRUE(kms[km]->wait_for(0x410C)) << km;
  }
  EXPECT_TRUE(kms["KM4"]->received(0x410A).empty());
  std::vector<std::string> keys;
  for (const auto& hk : req.hop_keys) keys.insert(keys.end(), hk.key_ids.begin(), hk.key_ids.end());
  ASSERT_EQ(keys.size(), 6u);

  const auto relay_id = *req.key_relay_request_id;
  ASSERT_TRUE(h.wait_core([&](service::Core& c) {
    const auto* r = c.relays.find(relay_id);
    return r != nullptr && r->state == RelayState::kRelayed;
  })) << h.log_text();
  h.core([&](service::Core& c) {
    for (const auto& k : keys) EXPECT_EQ(c.ledger.state_of(k), LedgerState::kConsumed) << k;
    EXPECT_EQ(c.ledger.live_count(), 0u);
    return 0;
  });
  const auto text = metrics_text(h);
  EXPECT_EQ(relays_total(h, "relayed"), 1);
  EXPECT_EQ(metric_value(text, R"(qkdn_key_reservations_total{result="consumed"})"), 6);
  EXPECT_EQ(metric_value(text, R"(qkdn_key_reservations_total{result="reserved"})"), 6);
  EXPECT_EQ(metric_value(text, "qkdn_key_relay_duration_seconds_count"), 1);
  EXPECT_GT(
      metric_value(text, R"(qkdn_ck_messages_total{command="key_relay_request",direction="out"})"),
      0);
  // The 0x1403 got no Error: its answer is the 0x4104.
  EXPECT_FALSE(km1.answer_to(notification, 100ms));
}

// A hop that refuses its reservation voids the attempt: the next route is tried, and the keys
// the first attempt held are released.
TEST(ServiceKeySupply, RefusedReservationTriesNextRoute) {
  const auto topo = diamond_topology();
  ServiceHarness h(topo);
  auto kms = connect_all(topo, h.port());
  ASSERT_TRUE(h.wait_links_up());
  FakeKm::Behavior refuse;
  refuse.refuse_reservation = true;
  kms["KM2"]->set_behavior(refuse);

  kms["KM1"]->request_relay("KM4");
  const auto req = relay_request(*kms["KM1"]);
  EXPECT_EQ(req.transit_kma_ids, std::vector<std::string>{"KM3"});
  ASSERT_EQ(kms["KM2"]->received(0x410A).size(), 1u);  // the first route was tried
  EXPECT_TRUE(kms["KM2"]->received(0x410C).empty());
  ASSERT_TRUE(h.wait_core([](service::Core& c) {
    std::size_t relayed = 0;
    std::size_t voided = 0;
    for (const auto& r : c.relays.list()) {
      relayed += r.state == RelayState::kRelayed;
      voided += r.state == RelayState::kVoided;
    }
    return relayed == 1 && voided == 1 && c.ledger.live_count() == 0;
  })) << h.log_text();
  // The KM1 keys reserved for the voided attempt were released, never consumed.
  h.core([&](service::Core& c) {
    const auto first_keys = kms["KM1"]->reserved_keys();
    EXPECT_EQ(first_keys.size(), 2u);
    EXPECT_EQ(c.ledger.state_of(first_keys[0]), LedgerState::kReleased);
    EXPECT_EQ(c.ledger.state_of(first_keys[1]), LedgerState::kConsumed);
    return 0;
  });
  // ... and released at KM1 too (0x41EA, issue 12), under the voided attempt's relay ID.
  ASSERT_TRUE(kms["KM1"]->wait_for(0x41EA)) << h.log_text();
  const auto rel = decode_as<ck::KeyRelease>(kms["KM1"]->received(0x41EA)[0]);
  EXPECT_EQ(rel.key_ids, std::vector<std::string>{kms["KM1"]->reserved_keys()[0]});
  EXPECT_EQ(rel.next_kma_id, "KM2");
  EXPECT_FALSE(rel.disposition.has_value());
  EXPECT_EQ(rel.controller_epoch, h.svc().controller_epoch());
  EXPECT_NE(rel.key_relay_request_id, req.key_relay_request_id.value_or(""));
  EXPECT_EQ(relays_total(h, "voided"), 1);
  EXPECT_EQ(metric_value(metrics_text(h), R"(qkdn_key_reservations_total{result="refused"})"), 1);
}

// A KM of the route vanishing mid-relay (at allocation): the relay fails, every key is
// released, the 0x1403 gets an Error with its MessageID and nothing is ever relayed.
TEST(ServiceKeySupply, KmVanishingMidRelayFailsAndReleases) {
  const auto topo = chain_topology(3);
  ServiceHarness h(topo);
  auto kms = connect_all(topo, h.port());
  ASSERT_TRUE(h.wait_links_up());
  FakeKm::Behavior vanish;
  vanish.vanish_on_allocation = true;
  kms["KM2"]->set_behavior(vanish);

  const auto id = kms["KM1"]->request_relay("KM3", 3);
  auto f = kms["KM1"]->answer_to(id);
  ASSERT_TRUE(f) << h.log_text();
  ASSERT_EQ(f->command, 0x41EF) << f->payload;
  const auto e = decode_as<ck::ErrorMessage>(*f);
  EXPECT_EQ(e.message_id, id);
  EXPECT_TRUE(e.error == "no_route" || e.error == "timeout") << e.error;
  ASSERT_TRUE(h.wait_core([](service::Core& c) { return c.ledger.live_count() == 0; }));
  h.core([&](service::Core& c) {
    std::size_t failed = 0;
    for (const auto& r : c.relays.list()) {
      EXPECT_NE(r.state, RelayState::kRelayed);
      failed += r.state == RelayState::kFailed;
    }
    EXPECT_EQ(failed, 1u);
    for (const auto* km : {"KM1", "KM2"}) {
      for (const auto& k : kms[km]->reserved_keys()) {
        EXPECT_EQ(c.ledger.state_of(k), LedgerState::kReleased);
      }
    }
    return 0;
  });
  EXPECT_TRUE(kms["KM1"]->received(0x4104).empty());
  EXPECT_EQ(relays_total(h, "relayed"), 0);
  EXPECT_EQ(relays_total(h, "failed"), 1);
}

// A KM that answers 0x4104 with NG: the relay fails, its keys are released (never reused).
TEST(ServiceKeySupply, RelayNgReleasesKeys) {
  const auto topo = chain_topology(3);
  ServiceHarness h(topo);
  auto kms = connect_all(topo, h.port());
  ASSERT_TRUE(h.wait_links_up());
  FakeKm::Behavior ng;
  ng.relay_response = "NG: peer unreachable";
  kms["KM1"]->set_behavior(ng);
  kms["KM1"]->request_relay("KM3");
  const auto req = relay_request(*kms["KM1"]);
  ASSERT_TRUE(h.wait_core([&](service::Core& c) {
    const auto* r = c.relays.find(*req.key_relay_request_id);
    return r != nullptr && r->state == RelayState::kFailed && c.ledger.live_count() == 0;
  }));
  h.core([&](service::Core& c) {
    for (const auto& hk : req.hop_keys) {
      for (const auto& k : hk.key_ids) EXPECT_EQ(c.ledger.state_of(k), LedgerState::kReleased);
    }
    return 0;
  });
  // Each hop's near KM is told (0x41EA) to let go of its hop keys (issue 12): it discards those
  // it still holds allocated at both ends of the link.
  for (const auto& hk : req.hop_keys) {
    auto& km = *kms[hk.kma_id];
    ASSERT_TRUE(km.wait_for(0x41EA)) << hk.kma_id;
    const auto rel = decode_as<ck::KeyRelease>(km.received(0x41EA).back());
    EXPECT_EQ(rel.key_relay_request_id, *req.key_relay_request_id);
    EXPECT_EQ(rel.next_kma_id, hk.next_kma_id);
    EXPECT_EQ(rel.link_id.value_or(""), hk.link_id);
    auto named = rel.key_ids;
    auto expected = hk.key_ids;
    std::sort(named.begin(), named.end());
    std::sort(expected.begin(), expected.end());
    EXPECT_EQ(named, expected);
  }
}

// Without a store the epoch file makes the epoch grow across restarts although the (injected)
// wall clock went back an hour; a controller without one takes the wall clock, as before.
TEST(ServiceEpoch, EpochFileGrowsAcrossRestartsWithTheClockBehind) {
  const auto topo = chain_topology(2);
  const auto dir = std::filesystem::temp_directory_path() /
                   ("qkdn-epoch-" + std::to_string(::getpid()) + "-" +
                    std::to_string(std::chrono::steady_clock::now().time_since_epoch().count()));
  std::filesystem::create_directories(dir);
  const std::string file = (dir / "controller.epoch").string();
  auto clock = std::make_shared<ManualClock>(SysTime{std::chrono::hours{500'000}});
  const auto start = [&] {
    service::ServiceOptions o;
    o.clock = clock;
    o.epoch_file = file;
    ServiceHarness h(topo, o);
    FakeKm km(h.port(), "KM1", links_of(topo, "KM1"));
    EXPECT_EQ(km.epoch(), h.svc().controller_epoch());
    return h.svc().controller_epoch();
  };
  const std::int64_t e1 = start();
  EXPECT_EQ(e1, std::chrono::duration_cast<Millis>(std::chrono::hours{500'000}).count());
  clock->set(clock->now() - std::chrono::hours{1});
  const std::int64_t e2 = start();
  EXPECT_EQ(e2, e1 + 1);
  const std::int64_t e3 = start();
  EXPECT_EQ(e3, e1 + 2);
  clock->set(clock->now() + std::chrono::hours{2});  // the wall clock ahead again: it wins
  EXPECT_EQ(start(), e1 + std::chrono::duration_cast<Millis>(std::chrono::hours{1}).count());

  // A file that does not hold one integer stops the start with a clear error.
  { std::ofstream(file) << "not a number\n"; }
  service::ServiceOptions bad;
  bad.clock = clock;
  bad.epoch_file = file;
  bad.topology = topo;
  bad.insecure_ck = true;
  try {
    service::ControllerService svc(bad);
    ADD_FAILURE() << "a corrupt epoch file was accepted";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("does not hold one non-negative integer"),
              std::string::npos)
        << e.what();
  }
  std::filesystem::remove_all(dir);
}

// A wall-clock step (an hour forward, as an operator or NTP may set it) expires no lease and no
// relay deadline: they run on the monotonic reading. An hour back does not stretch them either:
// 31 s of monotonic time still ends the relay that waits for its 0x1405 (relaying timeout 30 s).
TEST(ServiceClock, WallClockStepExpiresNoLease) {
  const auto topo = chain_topology(3);
  auto clock = std::make_shared<ManualClock>();
  service::ServiceOptions o;
  o.clock = clock;
  ServiceHarness h(topo, o);
  auto kms = connect_all(topo, h.port());
  ASSERT_TRUE(h.wait_links_up());
  FakeKm::Behavior silent;
  silent.answer_relay = false;
  kms["KM1"]->set_behavior(silent);
  kms["KM1"]->request_relay("KM3", 2);
  const auto relay_id = *relay_request(*kms["KM1"]).key_relay_request_id;
  const auto relaying = [&](service::Core& c) {
    const auto* r = c.relays.find(relay_id);
    return r != nullptr && r->state == RelayState::kRelaying && c.ledger.live_count() == 4;
  };
  ASSERT_TRUE(h.wait_core(relaying)) << h.log_text();

  // The clock is touched on the core strand only (the core reads it there).
  const SysTime t0 = h.core([&](service::Core&) { return clock->now(); });
  h.core([&](service::Core&) {
    clock->set(t0 + std::chrono::hours{1});
    return 0;
  });
  // Ten ticks (status interval 100 ms) see the stepped wall clock: nothing may lapse.
  const auto hold_until = std::chrono::steady_clock::now() + 1s;
  while (std::chrono::steady_clock::now() < hold_until) {
    ASSERT_TRUE(h.core(relaying)) << "a wall-clock step expired the relay\n" << h.log_text();
    std::this_thread::sleep_for(20ms);
  }

  h.core([&](service::Core&) {
    clock->set(t0 - std::chrono::hours{1});
    clock->advance(31s);
    return 0;
  });
  ASSERT_TRUE(h.wait_core([&](service::Core& c) {
    const auto* r = c.relays.find(relay_id);
    return r != nullptr && r->state == RelayState::kFailed && c.ledger.live_count() == 0;
  })) << "31 s of monotonic time did not end the relay\n"
      << h.log_text();
}

// 0x1406: the destination KM is notified (0x4108), answers 0x1409 OK, and the source gets
// 0x4107 OK naming it; relays of the session count its keys and account them per SAE.
TEST(ServiceKeySupply, SessionCreationAndDelivery) {
  const auto topo = chain_topology(3);
  ServiceHarness h(topo);
  auto kms = connect_all(topo, h.port());
  ASSERT_TRUE(h.wait_links_up());
  auto& km1 = *kms["KM1"];

  const auto id = km1.send(
      0x1406,
      R"({"application_source_id":"SAE1","application_destination_id":"SAE3","number_of_keys":4})");
  auto f = km1.answer_to(id);
  ASSERT_TRUE(f) << h.log_text();
  ASSERT_EQ(f->command, 0x4107) << f->payload;
  const auto resp = decode_as<ck::SessionCreationResponse>(*f);
  EXPECT_EQ(resp.response, "OK");
  EXPECT_EQ(resp.destination_km_id, "KM3");
  EXPECT_EQ(resp.controller_epoch, h.svc().controller_epoch());
  auto note = kms["KM3"]->wait_for(0x4108);
  ASSERT_TRUE(note);
  const auto n = decode_as<ck::SessionCreationNotification>(*note);
  EXPECT_EQ(n.session_id, resp.session_id);
  EXPECT_EQ(n.source_km_id, "KM1");
  EXPECT_EQ(n.number_of_keys, 4);
  EXPECT_TRUE(n.controller_epoch);

  km1.request_relay("KM3", 4);
  const auto req = relay_request(km1);
  ASSERT_TRUE(h.wait_core([&](service::Core& c) {
    const auto* s = c.sessions.find(resp.session_id);
    return s != nullptr && s->keys_delivered == 4;
  })) << h.log_text();
  const auto rows = [&] {
    auto op = h.svc().accounting(SysTime{}, SysTime::max(), "SAE1");
    return net::co_spawn(h.svc().core_executor(), std::move(op), net::use_future).get();
  }();
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].keys, 4);
  EXPECT_EQ(rows[0].key_bytes, 4 * 256 / 8);
  EXPECT_EQ(rows[0].session_id, resp.session_id);

  // A relay that serves a relay instruction only pre-positions keys: no application holds them
  // yet, so the session is not credited (the instruction's keys_relayed reports count them).
  km1.send(0x1403, R"({"destination_kma_id":"KM3","number_of_keys":5,)"
                   R"("extension":[{"instruction_id":"i-1"}]})");
  const auto pre = relay_request(km1, 1);
  ASSERT_TRUE(h.wait_core([&](service::Core& c) {
    const auto* r = c.relays.find(*pre.key_relay_request_id);
    return r != nullptr && r->state == controller::RelayState::kRelayed;
  })) << h.log_text();
  EXPECT_TRUE(h.wait_core([&](service::Core& c) {
    const auto* r = c.relays.find(*pre.key_relay_request_id);
    const auto* s = c.sessions.find(resp.session_id);
    return r != nullptr && r->session_id.empty() && s != nullptr && s->keys_delivered == 4;
  }));

  // An unknown application is refused with NG, and nothing is notified.
  const auto id2 =
      km1.send(0x1406, R"({"application_source_id":"SAE1","application_destination_id":"NOBODY"})");
  f = km1.answer_to(id2);
  ASSERT_TRUE(f);
  ASSERT_EQ(f->command, 0x4107);
  EXPECT_EQ(decode_as<ck::SessionCreationResponse>(*f).response.rfind("NG: unknown_application", 0),
            0u);
}

// A QBER alarm on a link of a standing route reroutes it (qkdn_reroutes_total{reason="qber"})
// and the next 0x1403 avoids the link.
TEST(ServiceRerouting, QberAlarmReroutesStandingRoute) {
  const auto topo = diamond_topology();
  ServiceHarness h(topo);
  auto kms = connect_all(topo, h.port());
  ASSERT_TRUE(h.wait_links_up());
  auto& km1 = *kms["KM1"];
  const auto qber = [&] {
    return metric_value(metrics_text(h), R"(qkdn_reroutes_total{reason="qber"})");
  };
  const double before = qber();
  EXPECT_EQ(before, 0);

  km1.request_relay("KM4");
  EXPECT_EQ(relay_request(km1, 0).transit_kma_ids, std::vector<std::string>{"KM2"});
  km1.send(0x14E4, R"({"kma_id":"KM1","alarm":"qber_high","link_id":"L12","severity":"major",)"
                   R"("value":0.2,"timestamp":"2026-01-01T00:00:00Z"})");
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  while (qber() < before + 1 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_EQ(qber(), before + 1) << h.log_text();

  km1.request_relay("KM4");
  const auto second = relay_request(km1, 1);
  EXPECT_EQ(second.transit_kma_ids, std::vector<std::string>{"KM3"});
  for (const auto& hk : second.hop_keys) EXPECT_NE(hk.link_id, "L12");
}

// fixed_rate: the pair's standing instruction goes to its source KM as 0x41E5, with the
// controller epoch and the project extension; the KM's 0x14E6 is accepted.
TEST(ServiceRerouting, FixedRateSendsRelayInstructions) {
  const auto topo = chain_topology(3);
  service::ServiceOptions o;
  controller::ReroutingPolicy policy;
  policy.mode = controller::RerouteMode::kFixedRate;
  o.policy = policy;
  ServiceHarness h(topo, o);
  auto kms = connect_all(topo, h.port());
  ASSERT_TRUE(h.wait_links_up());
  // Routing a pair makes it known to the plan.
  kms["KM1"]->send(0x1401, R"({"destination_kma_id":"KM3"})");
  auto f = kms["KM1"]->wait_for(0x41E5);
  ASSERT_TRUE(f) << h.log_text();
  const auto inst = decode_as<ck::RelayInstruction>(*f);
  EXPECT_EQ(inst.destination_kma_id, "KM3");
  EXPECT_EQ(inst.transit_kma_ids, std::vector<std::string>{"KM2"});
  EXPECT_GE(inst.number_of_keys, 1);
  EXPECT_EQ(inst.controller_epoch, h.svc().controller_epoch());
  ASSERT_TRUE(inst.extension);
  EXPECT_NE(inst.extension->find("\"interval_s\""), std::string::npos);
  const auto instructions = h.core([](service::Core& c) { return c.rerouting.instructions(); });
  EXPECT_FALSE(instructions.empty());
  // The KM answered 0x14E6: no protocol error came of it.
  EXPECT_EQ(h.svc().counters().protocol_errors.count("unexpected_response"), 0u);
}

// A KM reconnecting gets its standing instructions again, after its register response.
TEST(ServiceRerouting, InstructionsResentOnRegistration) {
  const auto topo = chain_topology(3);
  service::ServiceOptions o;
  controller::ReroutingPolicy policy;
  policy.mode = controller::RerouteMode::kFixedRate;
  o.policy = policy;
  ServiceHarness h(topo, o);
  auto kms = connect_all(topo, h.port());
  ASSERT_TRUE(h.wait_links_up());
  kms["KM1"]->send(0x1401, R"({"destination_kma_id":"KM3"})");
  ASSERT_TRUE(kms["KM1"]->wait_for(0x41E5));
  kms["KM1"]->stop();
  ASSERT_TRUE(h.wait_core([](service::Core& c) { return !c.network.find_km("KM1")->connected; }));
  FakeKm again(h.port(), "KM1", links_of(topo, "KM1"));
  EXPECT_TRUE(again.wait_for(0x41E5)) << h.log_text();
}

}  // namespace
}  // namespace qkdn::test
