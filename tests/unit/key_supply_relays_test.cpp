// Unit tests of the relay state machine (controller/core/relays.cpp): the exact command sequence
// of a relay, failures at every step, alternatives, timeouts, disconnects and restore.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <set>

#include "key_supply_test_util.hpp"
#include "qkdn/controller/error.hpp"
#include "qkdn/controller/relays.hpp"

namespace qkdn::controller::testing {
namespace {

using std::chrono::seconds;

class RelayTest : public ::testing::Test {
 protected:
  /// KM1-KM2-KM4-KM5 (3 hops), then KM1-KM3-KM5 (2 hops).
  RelayRequest request(std::int64_t keys = 2) {
    RelayRequest r;
    r.session_id = "s1";
    r.src_km = "KM1";
    r.dst_km = "KM5";
    r.number_of_keys = keys;
    r.routes = {route({"KM1", "KM2", "KM4", "KM5"}, {"L12", "L24", "L45"}),
                route({"KM1", "KM3", "KM5"}, {"L13", "L35"})};
    r.notification_message_id = 77;
    return r;
  }

  /// Answers every reservation of `out` with fresh keys, then every allocation; returns the
  /// output of the last answer (the 0x4104 when all went well).
  RelayOutput admit(const RelayOutput& started) {
    RelayOutput last;
    for (const auto& c : started.reserve) {
      last = table_.on_reserved(c.relay_id, c.hop,
                                fresh_keys(key_rng_, static_cast<std::size_t>(c.number_of_keys)),
                                clock_.now());
    }
    const std::vector<AllocateCommand> alloc = last.allocate;
    for (const auto& c : alloc) last = table_.on_allocated(c.relay_id, c.hop, clock_.now());
    return last;
  }

  /// Checks the per-link invariant: held + consumed + released == keys seen on the link.
  void expect_balanced() {
    for (const auto& [link, c] : ledger_.all_counters()) {
      EXPECT_EQ(c.total(), seen_by_link_[link]) << link;
    }
  }

  void track(const RelayOutput& out) {
    for (const auto& e : entries_of(out)) {
      if (e.state == "reserved") ++seen_by_link_[e.link_id];
    }
  }

  ManualClock clock_{kT0};
  SeededRandom rng_{99};
  SeededRandom key_rng_{5};
  ReservationLedger ledger_{rng_};
  RelayTable table_{ledger_, rng_};
  std::map<std::string, std::uint64_t> seen_by_link_;
};

// The happy path of a 3-hop relay: 0x410A to each hop's near KM, 0x410C with the reserved IDs,
// then one 0x4104 to the source with transit KMs and hop_keys, and 0x1405 OK consumes all keys.
TEST_F(RelayTest, HappyPathThreeHops) {
  const RelayOutput started = table_.start(request(), clock_.now());
  ASSERT_EQ(started.reserve.size(), 3u);
  ASSERT_EQ(started.records.size(), 1u);
  EXPECT_EQ(started.records[0].state, "requested");
  EXPECT_EQ(started.records[0].route_kms, (Strings{"KM1", "KM2", "KM4", "KM5"}));
  EXPECT_EQ(started.records[0].route_links, (Strings{"L12", "L24", "L45"}));
  EXPECT_EQ(started.records[0].session_id, "s1");
  const std::string id = started.reserve[0].relay_id;
  EXPECT_TRUE(is_uuid(id));
  const Strings near{"KM1", "KM2", "KM4"};
  const Strings far{"KM2", "KM4", "KM5"};
  const Strings links{"L12", "L24", "L45"};
  for (std::size_t i = 0; i < 3; ++i) {
    const ReserveCommand& c = started.reserve[i];
    EXPECT_EQ(c.relay_id, id);
    EXPECT_EQ(c.hop, i);
    EXPECT_EQ(c.km_id, near[i]);
    EXPECT_EQ(c.source_kma_id, "KM1");
    EXPECT_EQ(c.destination_kma_id, "KM5");
    EXPECT_EQ(c.next_kma_id, far[i]);
    EXPECT_EQ(c.link_id, links[i]);
    EXPECT_EQ(c.number_of_keys, 2);
  }
  EXPECT_TRUE(started.allocate.empty());

  // Answers may come in any order; allocation starts only when the last hop is reserved.
  std::vector<Strings> keys;
  keys.reserve(3);
  for (int i = 0; i < 3; ++i) keys.push_back(fresh_keys(key_rng_, 2));
  RelayOutput out = table_.on_reserved(id, 2, keys[2], clock_.now());
  EXPECT_TRUE(out.allocate.empty());
  ASSERT_EQ(out.ledger.size(), 1u);
  EXPECT_EQ(out.ledger[0].entries[0].km_id, "KM4");
  EXPECT_EQ(out.ledger[0].entries[0].peer_km_id, "KM5");
  EXPECT_EQ(out.ledger[0].entries[0].link_id, "L45");
  out = table_.on_reserved(id, 0, keys[0], clock_.now());
  EXPECT_TRUE(out.allocate.empty());
  out = table_.on_reserved(id, 1, keys[1], clock_.now());
  ASSERT_EQ(out.allocate.size(), 3u);
  ASSERT_EQ(out.records.size(), 1u);
  EXPECT_EQ(out.records[0].state, "reserved");
  for (std::size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(out.allocate[i].km_id, near[i]);
    EXPECT_EQ(out.allocate[i].next_kma_id, far[i]);
    EXPECT_EQ(out.allocate[i].link_id, links[i]);
    EXPECT_EQ(out.allocate[i].key_ids, keys[i]);
    EXPECT_EQ(out.allocate[i].source_kma_id, "KM1");
    EXPECT_EQ(out.allocate[i].destination_kma_id, "KM5");
  }

  clock_.advance(seconds{1});
  EXPECT_TRUE(table_.on_allocated(id, 0, clock_.now()).relay_requests.empty());
  EXPECT_TRUE(table_.on_allocated(id, 2, clock_.now()).relay_requests.empty());
  out = table_.on_allocated(id, 1, clock_.now());
  ASSERT_EQ(out.relay_requests.size(), 1u);
  const RelayRequestCommand& req = out.relay_requests[0];
  EXPECT_EQ(req.relay_id, id);
  EXPECT_EQ(req.km_id, "KM1");
  EXPECT_EQ(req.source_kma_id, "KM1");
  EXPECT_EQ(req.destination_kma_id, "KM5");
  EXPECT_EQ(req.transit_kma_ids, (Strings{"KM2", "KM4"}));
  EXPECT_EQ(req.notification_message_id, 77u);
  EXPECT_EQ(req.number_of_keys, 2);
  const std::vector<HopKeys> expected{{"KM1", "KM2", "L12", keys[0]},
                                      {"KM2", "KM4", "L24", keys[1]},
                                      {"KM4", "KM5", "L45", keys[2]}};
  EXPECT_EQ(req.hop_keys, expected);
  EXPECT_EQ(out.records.back().state, "relaying");
  EXPECT_EQ(table_.find(id)->state, RelayState::kRelaying);
  EXPECT_EQ(ledger_.counters("L24"), (LinkCounters{0, 2, 0, 0}));

  out = table_.on_relay_response(id, true, "", clock_.now());
  ASSERT_EQ(out.finished.size(), 1u);
  EXPECT_EQ(out.finished[0].state, RelayState::kRelayed);
  EXPECT_EQ(out.finished[0].session_id, "s1");
  EXPECT_EQ(out.records.back().state, "relayed");
  ASSERT_EQ(out.ledger.size(), 1u);
  EXPECT_EQ(out.ledger[0].entries.size(), 6u);
  for (const auto& e : out.ledger[0].entries) EXPECT_EQ(e.state, "consumed");
  for (const auto& l : links) EXPECT_EQ(ledger_.counters(l), (LinkCounters{0, 0, 2, 0}));
  EXPECT_TRUE(table_.open_relays().empty());

  // A second 0x1405 consumes nothing twice.
  out = table_.on_relay_response(id, true, "", clock_.now());
  EXPECT_TRUE(out.ledger.empty());
  EXPECT_EQ(out.ignored.size(), 1u);
  for (const auto& l : links) EXPECT_EQ(ledger_.counters(l).consumed, 2u);
}

// Hop 2 cannot be reserved: hop 1's keys are released, the attempt is voided, and the next
// route starts at once as a new relay; a late reservation for hop 3 of the void attempt is
// recorded and released.
TEST_F(RelayTest, ReservationFailureTriesNextRoute) {
  const RelayOutput started = table_.start(request(), clock_.now());
  const std::string first = started.reserve[0].relay_id;
  RelayOutput out = table_.on_reserved(first, 0, fresh_keys(key_rng_, 2), clock_.now());
  track(out);
  out = table_.on_reservation_failed(first, 1, "insufficient_keys", "pool empty", clock_.now());
  track(out);
  // Release of hop 1, then the void, then the next attempt.
  ASSERT_EQ(out.ledger.size(), 1u);
  EXPECT_EQ(out.ledger[0].entries.size(), 2u);
  for (const auto& e : out.ledger[0].entries) {
    EXPECT_EQ(e.state, "released");
    EXPECT_EQ(e.link_id, "L12");
  }
  ASSERT_EQ(out.finished.size(), 1u);
  const Relay& voided = out.finished[0];
  EXPECT_EQ(voided.state, RelayState::kVoided);
  EXPECT_EQ(voided.reason,
            "hop KM2->KM4 via L24: reservation failed: insufficient_keys: pool empty; retried as "
            "relay " +
                voided.next_relay_id);
  ASSERT_EQ(out.records.size(), 2u);
  EXPECT_EQ(out.records[0].state, "voided");
  EXPECT_EQ(out.records[1].state, "requested");
  EXPECT_EQ(out.records[1].route_kms, (Strings{"KM1", "KM3", "KM5"}));
  ASSERT_EQ(out.reserve.size(), 2u);
  RelayOutput second_attempt;
  second_attempt.reserve = out.reserve;
  const std::string second = out.reserve[0].relay_id;
  EXPECT_EQ(second, voided.next_relay_id);
  EXPECT_EQ(out.reserve[0].link_id, "L13");
  EXPECT_EQ(out.reserve[1].km_id, "KM3");
  const Relay* next = table_.find(second);
  EXPECT_EQ(next->attempt, 2u);
  EXPECT_EQ(next->previous_relay_id, first);
  EXPECT_EQ(next->notification_message_id, 77u);

  // Hop 3's late answer for the void attempt.
  const Strings late = fresh_keys(key_rng_, 2);
  out = table_.on_reserved(first, 2, late, clock_.now());
  track(out);
  ASSERT_EQ(out.ledger.size(), 2u);
  EXPECT_EQ(out.ledger[1].entries[0].state, "released");
  EXPECT_EQ(ledger_.state_of(late[0]), LedgerState::kReleased);
  EXPECT_EQ(out.ignored.size(), 1u);

  expect_balanced();
  // The second attempt goes through on KM1-KM3-KM5.
  out = admit(second_attempt);
  ASSERT_EQ(out.relay_requests.size(), 1u);
  EXPECT_EQ(out.relay_requests[0].relay_id, second);
  EXPECT_EQ(out.relay_requests[0].transit_kma_ids, Strings{"KM3"});
  EXPECT_EQ(out.relay_requests[0].notification_message_id, 77u);
  EXPECT_EQ(ledger_.counters("L12"), (LinkCounters{0, 0, 0, 2}));
  EXPECT_EQ(ledger_.counters("L45"), (LinkCounters{0, 0, 0, 2}));
  EXPECT_EQ(ledger_.counters("L13"), (LinkCounters{0, 2, 0, 0}));
}

// No alternative left: the relay fails with the hop's Ck error, keys released, and the service
// must answer the 0x1403 (no 0x4104 was sent).
TEST_F(RelayTest, ReservationFailureWithoutAlternative) {
  RelayRequest req = request();
  req.routes.resize(1);
  const RelayOutput started = table_.start(req, clock_.now());
  const std::string id = started.reserve[0].relay_id;
  table_.on_reserved(id, 0, fresh_keys(key_rng_, 2), clock_.now());
  table_.on_reserved(id, 2, fresh_keys(key_rng_, 2), clock_.now());
  const RelayOutput out = table_.on_reservation_failed(id, 1, "", "", clock_.now());
  ASSERT_EQ(out.finished.size(), 1u);
  EXPECT_EQ(out.finished[0].state, RelayState::kFailed);
  EXPECT_EQ(out.finished[0].ck_error, "insufficient_keys");
  EXPECT_FALSE(out.finished[0].request_sent);
  EXPECT_TRUE(out.reserve.empty());
  EXPECT_EQ(entries_of(out).size(), 4u);
  EXPECT_EQ(ledger_.live_count(), 0u);
  EXPECT_EQ(sum_counters(ledger_), (LinkCounters{0, 0, 0, 4}));
}

// A KM answering with the wrong number of keys, or with IDs the ledger can never take again,
// fails the hop. IDs released before allocation are not such IDs: the same hop may offer them
// again under a new relay (issue 12). This test used to assert that such a replay is refused
// (bad_request); that refusal was the poison of finding 1: the KM was never told of the
// release, offered the same IDs first once its lease lapsed, and every later attempt failed.
TEST_F(RelayTest, BadReservationAnswers) {
  RelayRequest req = request();
  req.routes.resize(1);
  std::string id = table_.start(req, clock_.now()).reserve[0].relay_id;
  const Strings short_answer = fresh_keys(key_rng_, 1);
  RelayOutput out = table_.on_reserved(id, 0, short_answer, clock_.now());
  ASSERT_EQ(out.finished.size(), 1u);
  EXPECT_EQ(out.finished[0].ck_error, "insufficient_keys");
  EXPECT_NE(out.finished[0].reason.find("reserved 1 of 2 keys"), std::string::npos);
  EXPECT_EQ(sum_counters(ledger_), (LinkCounters{0, 0, 0, 1}));
  // The KM holds the short reservation: released there at once.
  ASSERT_EQ(out.release.size(), 1u);
  EXPECT_EQ(out.release[0], (ReleaseCommand{id, "KM1", "KM2", "L12", short_answer, false}));

  // Released before allocation, replayed by the same hop under a new relay: accepted.
  const Strings used = fresh_keys(key_rng_, 2);
  id = table_.start(req, clock_.now()).reserve[0].relay_id;
  table_.on_reserved(id, 0, used, clock_.now());
  out = table_.cancel(id, "test", clock_.now());
  ASSERT_EQ(out.release.size(), 1u);
  EXPECT_EQ(out.release[0].key_ids, [&] {
    Strings sorted = used;  // a relay's keys are released in key order
    std::sort(sorted.begin(), sorted.end());
    return sorted;
  }());
  id = table_.start(req, clock_.now()).reserve[0].relay_id;
  out = table_.on_reserved(id, 0, used, clock_.now());  // replayed IDs
  EXPECT_TRUE(out.finished.empty());
  ASSERT_EQ(out.ledger.size(), 1u);
  EXPECT_EQ(out.ledger[0].entries[0].relay_id, id);
  EXPECT_EQ(ledger_.state_of(used[0]), LedgerState::kReserved);

  // Allocated, then released: the replay is refused (never allocated twice), and the KM is
  // told to discard those keys, which the ledger can never take again.
  for (std::size_t h = 1; h < 3; ++h) table_.on_reserved(id, h, fresh_keys(key_rng_, 2), kT0);
  table_.on_allocated(id, 0, kT0);
  table_.cancel(id, "test", kT0);
  EXPECT_TRUE(ledger_.retired(used[0]));
  id = table_.start(req, clock_.now()).reserve[0].relay_id;
  const Strings fresh = fresh_keys(key_rng_, 1);
  out = table_.on_reserved(id, 0, {used[0], fresh[0]}, clock_.now());
  ASSERT_EQ(out.finished.size(), 1u);
  EXPECT_EQ(out.finished[0].ck_error, "bad_request");
  EXPECT_NE(out.finished[0].reason.find("released after allocation"), std::string::npos);
  // Issue 13: a reason reaches the API, the database and info logs: it names no key ID.
  for (const auto& k : used) {
    EXPECT_EQ(out.finished[0].reason.find(k), std::string::npos) << out.finished[0].reason;
  }
  EXPECT_TRUE(out.ledger.empty());
  ASSERT_EQ(out.release.size(), 2u);
  EXPECT_EQ(out.release[0], (ReleaseCommand{id, "KM1", "KM2", "L12", {fresh[0]}, false}));
  EXPECT_EQ(out.release[1], (ReleaseCommand{id, "KM1", "KM2", "L12", {used[0]}, true}));
  EXPECT_EQ(ledger_.state_of(used[0]), LedgerState::kReleased);
}

// Every key the ledger releases is released at its hop's KM in the same output, one command
// per hop, before the next attempt's reservations: after an attempt failed (its KMs reserved
// keys), after a 0x1405 NG (allocated keys: the KM discards them), on lease expiry.
TEST_F(RelayTest, ReleasesReachTheKmsTheMomentTheLedgerReleases) {
  const RelayOutput started = table_.start(request(), clock_.now());
  const std::string id = started.reserve[0].relay_id;
  Strings k0 = fresh_keys(key_rng_, 2);
  Strings k1 = fresh_keys(key_rng_, 2);
  table_.on_reserved(id, 0, k0, clock_.now());
  table_.on_reserved(id, 1, k1, clock_.now());
  RelayOutput out = table_.on_reservation_failed(id, 2, "insufficient_keys", "", clock_.now());
  ASSERT_EQ(out.release.size(), 2u);
  std::sort(k0.begin(), k0.end());
  std::sort(k1.begin(), k1.end());
  const auto to = [&](const std::string& km) {
    const auto it = std::find_if(out.release.begin(), out.release.end(),
                                 [&](const ReleaseCommand& c) { return c.km_id == km; });
    return it == out.release.end() ? ReleaseCommand{} : *it;
  };
  EXPECT_EQ(to("KM1"), (ReleaseCommand{id, "KM1", "KM2", "L12", k0, false}));
  EXPECT_EQ(to("KM2"), (ReleaseCommand{id, "KM2", "KM4", "L24", k1, false}));
  ASSERT_EQ(out.reserve.size(), 2u);  // the next route, KM1-KM3-KM5

  // The second attempt is admitted and relayed; its 0x1405 NG releases every hop at its KM.
  const std::string second = out.reserve[0].relay_id;
  ASSERT_EQ(admit(out).relay_requests.size(), 1u);
  out = table_.on_relay_response(second, false, "NG: peer_unreachable", clock_.now());
  ASSERT_EQ(out.release.size(), 2u);
  EXPECT_EQ(to("KM1").next_kma_id, "KM3");
  EXPECT_EQ(to("KM1").link_id, "L13");
  EXPECT_EQ(to("KM3").next_kma_id, "KM5");
  EXPECT_EQ(to("KM3").link_id, "L35");
  for (const auto& c : out.release) {
    EXPECT_EQ(c.relay_id, second);
    EXPECT_EQ(c.key_ids.size(), 2u);
    EXPECT_FALSE(c.discard);  // the KM discards what it holds allocated, by its own state
  }

  // A relayed relay releases nothing; a lapsed lease releases at the KM.
  RelayRequest one = request();
  one.routes.resize(1);
  const RelayOutput s3 = table_.start(one, clock_.now());
  const Strings k3 = fresh_keys(key_rng_, 2);
  table_.on_reserved(s3.reserve[0].relay_id, 0, k3, clock_.now());
  clock_.advance(std::chrono::seconds{10});
  out = table_.expire(clock_.now());
  ASSERT_FALSE(out.release.empty());
  EXPECT_EQ(out.release[0].relay_id, s3.reserve[0].relay_id);
  EXPECT_EQ(out.release[0].km_id, "KM1");
  EXPECT_EQ(out.release[0].key_ids.size(), 2u);
}

// A late 0x140B (its attempt already gone) is recorded and released at once, at the KM too;
// one naming keys the ledger refuses is released there without recording.
TEST_F(RelayTest, LateReservationIsReleasedAtTheKm) {
  RelayRequest req = request();
  req.routes.resize(1);
  const RelayOutput started = table_.start(req, clock_.now());
  const std::string id = started.reserve[0].relay_id;
  table_.on_reservation_failed(id, 0, "insufficient_keys", "", clock_.now());
  const Strings late = fresh_keys(key_rng_, 2);
  RelayOutput out = table_.on_reserved(id, 1, late, clock_.now());
  ASSERT_EQ(out.release.size(), 1u);
  EXPECT_EQ(out.release[0].km_id, "KM2");
  EXPECT_EQ(out.release[0].key_ids.size(), 2u);
  EXPECT_FALSE(out.release[0].discard);
  // The same IDs once more for the gone attempt: now refused by the ledger? No: released before
  // allocation by this very hop, so they are recorded and released again.
  out = table_.on_reserved(id, 1, late, clock_.now());
  ASSERT_EQ(out.release.size(), 1u);
  EXPECT_FALSE(out.release[0].discard);
  EXPECT_EQ(ledger_.state_of(late[0]), LedgerState::kReleased);
}

// An allocation NG after all hops were reserved releases every hop and moves to the next route.
TEST_F(RelayTest, AllocationFailure) {
  const RelayOutput started = table_.start(request(), clock_.now());
  const std::string id = started.reserve[0].relay_id;
  for (std::size_t h = 0; h < 3; ++h) table_.on_reserved(id, h, fresh_keys(key_rng_, 2), kT0);
  table_.on_allocated(id, 0, kT0);
  const RelayOutput out = table_.on_allocation_failed(id, 2, "unknown_key", "gone", kT0);
  ASSERT_EQ(out.ledger.size(), 1u);
  EXPECT_EQ(out.ledger[0].entries.size(), 6u);
  EXPECT_EQ(out.finished[0].state, RelayState::kVoided);
  EXPECT_NE(out.finished[0].reason.find("hop KM4->KM5 via L45: allocation failed: unknown_key"),
            std::string::npos);
  EXPECT_EQ(out.reserve.size(), 2u);
  EXPECT_EQ(sum_counters(ledger_), (LinkCounters{0, 0, 0, 6}));
  // A late 0x140D for the void attempt changes nothing.
  EXPECT_EQ(table_.on_allocated(id, 1, kT0).ignored.size(), 1u);
  EXPECT_EQ(sum_counters(ledger_), (LinkCounters{0, 0, 0, 6}));
}

// 0x1405 NG releases every hop key and fails the relay; nothing is retried after the 0x4104.
TEST_F(RelayTest, RelayResponseNg) {
  const RelayOutput started = table_.start(request(), clock_.now());
  const std::string id = started.reserve[0].relay_id;
  ASSERT_EQ(admit(started).relay_requests.size(), 1u);
  const RelayOutput out = table_.on_relay_response(id, false, "NG: peer_unreachable", kT0);
  ASSERT_EQ(out.finished.size(), 1u);
  EXPECT_EQ(out.finished[0].state, RelayState::kFailed);
  EXPECT_TRUE(out.finished[0].request_sent);
  EXPECT_EQ(out.finished[0].reason, "key relay failed at the KMs: NG: peer_unreachable");
  EXPECT_TRUE(out.reserve.empty());
  EXPECT_EQ(entries_of(out).size(), 6u);
  EXPECT_EQ(sum_counters(ledger_), (LinkCounters{0, 0, 0, 6}));
  // A late OK cannot consume released keys.
  EXPECT_EQ(table_.on_relay_response(id, true, "", kT0).ignored.size(), 1u);
  EXPECT_EQ(sum_counters(ledger_).consumed, 0u);
}

// No 0x1405 within relaying_timeout: failed "timeout", keys released.
TEST_F(RelayTest, RelayingTimeout) {
  const RelayOutput started = table_.start(request(), clock_.now());
  const std::string id = started.reserve[0].relay_id;
  admit(started);
  EXPECT_EQ(table_.next_deadline(), kT0 + seconds{30});
  clock_.advance(seconds{29});
  EXPECT_TRUE(table_.expire(clock_.now()).empty());
  clock_.advance(seconds{1});
  const RelayOutput out = table_.expire(clock_.now());
  ASSERT_EQ(out.finished.size(), 1u);
  EXPECT_EQ(out.finished[0].relay_id, id);
  EXPECT_EQ(out.finished[0].state, RelayState::kFailed);
  EXPECT_EQ(out.finished[0].ck_error, "timeout");
  EXPECT_EQ(entries_of(out).size(), 6u);
  EXPECT_EQ(ledger_.live_count(), 0u);
  EXPECT_FALSE(table_.next_deadline().has_value());
}

// Reservations that do not complete within admission_timeout end the attempt: the next route is
// tried, and when it also stalls the relay fails with "timeout".
TEST_F(RelayTest, AdmissionTimeout) {
  const RelayOutput started = table_.start(request(), clock_.now());
  const std::string id = started.reserve[0].relay_id;
  table_.on_reserved(id, 0, fresh_keys(key_rng_, 2), clock_.now());
  clock_.advance(seconds{10});
  RelayOutput out = table_.expire(clock_.now());
  ASSERT_EQ(out.finished.size(), 1u);
  EXPECT_EQ(out.finished[0].state, RelayState::kVoided);
  EXPECT_EQ(out.reserve.size(), 2u);
  EXPECT_EQ(entries_of(out).size(), 2u);
  clock_.advance(seconds{10});
  out = table_.expire(clock_.now());
  ASSERT_EQ(out.finished.size(), 1u);
  EXPECT_EQ(out.finished[0].state, RelayState::kFailed);
  EXPECT_EQ(out.finished[0].ck_error, "timeout");
  EXPECT_EQ(out.finished[0].attempt, 2u);
}

// A reservation lease that lapses before allocation ends the attempt (reservation_expired).
TEST_F(RelayTest, LeaseLapse) {
  SeededRandom rng{3};
  ReservationLedger ledger{rng, {seconds{2}, seconds{60}}};
  RelayTable table{ledger, rng};
  RelayRequest req = request();
  req.routes.resize(1);
  const std::string id = table.start(req, kT0).reserve[0].relay_id;
  table.on_reserved(id, 0, fresh_keys(key_rng_, 2), kT0);
  EXPECT_EQ(table.next_deadline(), kT0 + seconds{2});
  const RelayOutput out = table.expire(kT0 + seconds{2});
  ASSERT_EQ(out.finished.size(), 1u);
  EXPECT_EQ(out.finished[0].ck_error, "reservation_expired");
  EXPECT_EQ(ledger.live_count(), 0u);
}

// A KM of the route disconnecting: relaying relays fail and release; relays still admitting move
// to an alternative that avoids the KM, or fail when none does.
TEST_F(RelayTest, KmDisconnect) {
  const RelayOutput a = table_.start(request(), clock_.now());
  const std::string relaying = a.reserve[0].relay_id;
  admit(a);
  const RelayOutput b = table_.start(request(), clock_.now());
  const std::string admitting = b.reserve[0].relay_id;
  table_.on_reserved(admitting, 0, fresh_keys(key_rng_, 2), clock_.now());
  RelayRequest via3 = request();
  via3.routes = {via3.routes[1]};
  const std::string untouched = table_.start(via3, clock_.now()).reserve[0].relay_id;

  const RelayOutput out = table_.on_km_disconnected("KM4", clock_.now());
  ASSERT_EQ(out.finished.size(), 2u);
  std::map<std::string, const Relay*> ended;
  for (const auto& r : out.finished) ended[r.relay_id] = &r;
  EXPECT_EQ(ended.at(relaying)->state, RelayState::kFailed);
  EXPECT_EQ(ended.at(relaying)->reason, "KM KM4 disconnected");
  EXPECT_EQ(ended.at(admitting)->state, RelayState::kVoided);
  EXPECT_EQ(out.reserve.size(), 2u);
  EXPECT_EQ(out.reserve[0].link_id, "L13");
  EXPECT_EQ(table_.find(untouched)->state, RelayState::kRequested);
  EXPECT_TRUE(ledger_.live_keys(relaying).empty());
  EXPECT_TRUE(ledger_.live_keys(admitting).empty());
  EXPECT_EQ(sum_counters(ledger_), (LinkCounters{0, 0, 0, 8}));

  // The source KM going away leaves no route at all.
  const RelayOutput gone = table_.on_km_disconnected("KM1", clock_.now());
  for (const auto& r : gone.finished) EXPECT_EQ(r.state, RelayState::kFailed);
  EXPECT_TRUE(gone.reserve.empty());
  EXPECT_TRUE(table_.open_relays().empty());
}

// next_route: caller-driven retry with recomputed routes, bounded by max_attempts; refused once
// relaying.
TEST_F(RelayTest, NextRouteAndCancel) {
  RelayRequest req = request();
  req.routes.resize(1);
  const std::string id = table_.start(req, clock_.now()).reserve[0].relay_id;
  table_.on_reserved(id, 0, fresh_keys(key_rng_, 2), clock_.now());
  RelayOutput out = table_.next_route(id, "operator reroute", clock_.now(),
                                      std::vector<Route>{request().routes[1]});
  EXPECT_EQ(out.finished[0].state, RelayState::kVoided);
  EXPECT_EQ(out.reserve.size(), 2u);
  const std::string second = out.reserve[0].relay_id;
  out = table_.next_route(second, "", clock_.now());
  EXPECT_EQ(out.finished[0].state, RelayState::kFailed);
  EXPECT_EQ(out.finished[0].ck_error, "no_route");
  EXPECT_THROW(table_.next_route(second, "", clock_.now()), Conflict);
  EXPECT_THROW(table_.next_route("nope", "", clock_.now()), NotFound);
  EXPECT_THROW(table_.next_route(table_.start(req, clock_.now()).reserve[0].relay_id, "",
                                 clock_.now(), std::vector<Route>{route({"KM2", "KM5"}, {"L25"})}),
               InvalidArgument);

  const RelayOutput s = table_.start(request(), clock_.now());
  admit(s);
  EXPECT_THROW(table_.next_route(s.reserve[0].relay_id, "", clock_.now()), Conflict);
  out = table_.cancel(s.reserve[0].relay_id, "operator", clock_.now());
  EXPECT_EQ(out.finished[0].state, RelayState::kVoided);
  EXPECT_EQ(entries_of(out).size(), 6u);
  EXPECT_THROW(table_.cancel(s.reserve[0].relay_id, "again", clock_.now()), Conflict);
}

// Malformed requests are refused before anything happens.
TEST_F(RelayTest, BadRequests) {
  auto bad = [&](auto edit) {
    RelayRequest r = request();
    edit(r);
    EXPECT_THROW(table_.start(r, clock_.now()), InvalidArgument);
  };
  bad([](RelayRequest& r) { r.routes.clear(); });
  bad([](RelayRequest& r) { r.dst_km = "KM1"; });
  bad([](RelayRequest& r) { r.number_of_keys = 0; });
  bad([](RelayRequest& r) { r.key_size_bits = 0; });
  bad([](RelayRequest& r) { r.routes[0].links.pop_back(); });
  bad([](RelayRequest& r) { r.routes[1] = route({"KM2", "KM5"}, {"L25"}); });
  bad([](RelayRequest& r) { r.routes[0].links[1].clear(); });
  bad([](RelayRequest& r) { r.routes[0] = route({"KM1", "KM2", "KM1", "KM5"}, {"a", "b", "c"}); });
  EXPECT_TRUE(table_.list().empty());
  SeededRandom rng{1};
  ReservationLedger short_alloc{rng, {seconds{10}, seconds{20}}};
  EXPECT_THROW(RelayTable(short_alloc, rng), InvalidArgument);
}

// Issue 13: the controller bounds keys per relay with the definition agents enforce
// (key_limits.hpp). Before, it accepted up to 100,000 keys per relay, which every agent then
// refused after routing and reserving; now a relay above the bound is refused up front, the
// bound itself is accepted, and no configuration can raise it.
TEST_F(RelayTest, KeysPerRelayBoundSharedWithAgents) {
  EXPECT_EQ(RelayConfig{}.max_number_of_keys, limits::kMaxKeysPerRelay);
  RelayRequest over = request(limits::kMaxKeysPerRelay + 1);
  EXPECT_THROW(table_.start(over, clock_.now()), InvalidArgument);
  EXPECT_TRUE(table_.list().empty());
  // The bound itself, over one hop (its hop key IDs fit one Ck frame there).
  RelayRequest one_hop = request(limits::kMaxKeysPerRelay);
  one_hop.dst_km = "KM2";
  one_hop.routes = {route({"KM1", "KM2"}, {"L12"})};
  const auto out = table_.start(one_hop, clock_.now());
  ASSERT_FALSE(out.reserve.empty());
  EXPECT_EQ(out.reserve[0].number_of_keys, limits::kMaxKeysPerRelay);
  SeededRandom rng{1};
  ReservationLedger ledger{rng};
  RelayConfig raised;
  raised.max_number_of_keys = 100'000;
  EXPECT_THROW(RelayTable(ledger, rng, raised), InvalidArgument);
}

// Every hop's key IDs travel in the one 0x4104 to the source KM, whose payload is at most 65,535
// bytes: 1,024 keys over three hops (about 120 kB) failed at the KMs after every hop had reserved
// (found by AgentSupply.InstructionLargerThanOneRelayCompletes). A route that cannot carry the
// relay is left out; a shorter alternative that can is used; none is a refusal naming the bound.
TEST_F(RelayTest, HopKeysMustFitOneCkFrame) {
  const auto three = route({"KM1", "KM2", "KM4", "KM5"}, {"L12", "L24", "L45"});
  const auto two = route({"KM1", "KM3", "KM5"}, {"L13", "L35"});
  const auto one = route({"KM1", "KM5"}, {"L15"});
  EXPECT_EQ(max_keys_for(one), limits::kMaxKeysPerRelay);
  const auto fit3 = max_keys_for(three);
  const auto fit2 = max_keys_for(two);
  EXPECT_GT(fit3, 400);
  EXPECT_LT(fit3, fit2);
  EXPECT_LT(fit2, limits::kMaxKeysPerRelay);
  // Exactly the bound fits (first route kept).
  auto out = table_.start(request(fit3), clock_.now());
  ASSERT_EQ(out.reserve.size(), 3u);
  // One more than the 3-hop bound: the 2-hop alternative carries it.
  out = table_.start(request(fit3 + 1), clock_.now());
  ASSERT_EQ(out.reserve.size(), 2u);
  EXPECT_EQ(out.reserve[0].link_id, "L13");
  // Beyond both: refused up front, nothing reserved, the reason names the bound.
  const auto before = table_.list().size();
  try {
    table_.start(request(fit2 + 1), clock_.now());
    ADD_FAILURE() << "accepted " << fit2 + 1 << " keys";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(
        std::string(e.what()).find("do not fit one Ck frame; at most " + std::to_string(fit2)),
        std::string::npos)
        << e.what();
  }
  EXPECT_EQ(table_.list().size(), before);
  // A one-hop alternative takes the full bound.
  RelayRequest big = request(limits::kMaxKeysPerRelay);
  big.routes.push_back(one);
  out = table_.start(big, clock_.now());
  ASSERT_EQ(out.reserve.size(), 1u);
  EXPECT_EQ(out.reserve[0].link_id, "L15");
}

// Answers for unknown relays or hops are ignored, not thrown.
TEST_F(RelayTest, UnknownAnswersIgnored) {
  EXPECT_EQ(table_.on_reserved("nope", 0, fresh_keys(key_rng_, 1), kT0).ignored.size(), 1u);
  EXPECT_EQ(table_.on_allocated("nope", 0, kT0).ignored.size(), 1u);
  EXPECT_EQ(table_.on_relay_response("nope", true, "", kT0).ignored.size(), 1u);
  const std::string id = table_.start(request(), kT0).reserve[0].relay_id;
  EXPECT_EQ(table_.on_reserved(id, 7, fresh_keys(key_rng_, 2), kT0).ignored.size(), 1u);
  EXPECT_EQ(table_.on_allocated(id, 0, kT0).ignored.size(), 1u);  // not allocating yet
  EXPECT_EQ(table_.on_relay_response(id, true, "", kT0).ignored.size(), 1u);
  EXPECT_EQ(ledger_.seen_count(), 0u);
}

// Records round-trip; a record's route rebuilds the hops.
TEST_F(RelayTest, RecordRoundTrip) {
  const RelayOutput s = table_.start(request(), kT0);
  const RelayRecord rec = s.records[0];
  const Relay back = relay_from_record(rec);
  EXPECT_EQ(back.relay_id, rec.relay_id);
  EXPECT_EQ(back.state, RelayState::kRequested);
  ASSERT_EQ(back.hops.size(), 3u);
  EXPECT_EQ(back.hops[1].km_id, "KM2");
  EXPECT_EQ(back.hops[1].next_km_id, "KM4");
  EXPECT_EQ(back.hops[1].link_id, "L24");
  const RelayRecord again = to_record(back);
  EXPECT_EQ(again.route_kms, rec.route_kms);
  EXPECT_EQ(again.number_of_keys, rec.number_of_keys);
  EXPECT_EQ(again.created_at, rec.created_at);
  RelayRecord bad = rec;
  bad.state = "lost";
  EXPECT_THROW(relay_from_record(bad), InvalidArgument);
  bad = rec;
  bad.route_links.pop_back();
  EXPECT_THROW(relay_from_record(bad), InvalidArgument);
}

// Restart: requested/reserved relays are voided and relaying ones failed ("controller restart"),
// their keys released; live keys of a relayed relay are consumed; orphan keys released; every
// key ID stays taken.
TEST_F(RelayTest, Restore) {
  // Build a store image by running a first table.
  std::vector<RelayRecord> records;
  std::map<std::string, LedgerEntry> ledger_rows;
  auto keep = [&](const RelayOutput& out) {
    for (const auto& r : out.records) {
      auto it = std::find_if(records.begin(), records.end(),
                             [&](const RelayRecord& x) { return x.relay_id == r.relay_id; });
      if (it == records.end()) {
        records.push_back(r);
      } else {
        *it = r;
      }
    }
    for (const auto& e : entries_of(out)) ledger_rows[e.key_id] = e;
  };
  RelayRequest one = request();
  one.routes.resize(1);
  const RelayOutput a = table_.start(one, kT0);  // relaying
  keep(a);
  const std::string relaying = a.reserve[0].relay_id;
  for (std::size_t h = 0; h < 3; ++h)
    keep(table_.on_reserved(relaying, h, fresh_keys(key_rng_, 2), kT0));
  for (std::size_t h = 0; h < 3; ++h) keep(table_.on_allocated(relaying, h, kT0));
  const RelayOutput b = table_.start(one, kT0);  // requested, one hop reserved
  keep(b);
  const std::string requested = b.reserve[0].relay_id;
  keep(table_.on_reserved(requested, 0, fresh_keys(key_rng_, 2), kT0));
  const RelayOutput c = table_.start(one, kT0);  // relayed, but its consume batch was lost
  keep(c);
  const std::string relayed = c.reserve[0].relay_id;
  for (std::size_t h = 0; h < 3; ++h)
    keep(table_.on_reserved(relayed, h, fresh_keys(key_rng_, 2), kT0));
  for (std::size_t h = 0; h < 3; ++h) keep(table_.on_allocated(relayed, h, kT0));
  // Its relay record says relayed, but the consume batch never reached the store.
  RelayOutput done = table_.on_relay_response(relayed, true, "", kT0);
  done.ledger.clear();
  keep(done);
  // An orphan reservation whose relay record was never written.
  const Strings orphan = fresh_keys(key_rng_, 1);
  LedgerEntry o;
  o.key_id = orphan[0];
  o.link_id = "L99";
  o.km_id = "KM8";
  o.peer_km_id = "KM9";
  o.relay_id = "ghost";
  o.state = "reserved";
  o.lease_expires_at = kT0 + seconds{10};
  o.updated_at = kT0;
  ledger_rows[o.key_id] = o;
  std::vector<LedgerEntry> rows;
  rows.reserve(ledger_rows.size());
  for (const auto& [k, e] : ledger_rows) rows.push_back(e);

  SeededRandom rng{8};
  ReservationLedger ledger{rng};
  RelayTable restored{ledger, rng};
  const SysTime now = kT0 + seconds{1};
  const RelayOutput out = restored.restore(records, rows, now);
  EXPECT_EQ(restored.find(relaying)->state, RelayState::kFailed);
  EXPECT_EQ(restored.find(relaying)->reason, "controller restart");
  EXPECT_EQ(restored.find(requested)->state, RelayState::kVoided);
  EXPECT_EQ(restored.find(requested)->reason, "controller restart");
  EXPECT_EQ(restored.find(relayed)->state, RelayState::kRelayed);
  EXPECT_EQ(out.finished.size(), 2u);
  EXPECT_EQ(out.records.size(), 2u);
  EXPECT_EQ(ledger.live_count(), 0u);
  EXPECT_EQ(ledger.state_of(orphan[0]), LedgerState::kReleased);
  LinkCounters total = sum_counters(ledger);
  EXPECT_EQ(total.consumed, 6u);  // the relayed relay's keys
  EXPECT_EQ(total.released, 6u + 2u + 1u);
  for (const auto& e : rows)
    EXPECT_THROW(ledger.reserve({"x", "a", "b", "l"}, {e.key_id}, now), Conflict);
  EXPECT_TRUE(restored.open_relays().empty());
  EXPECT_THROW(restored.restore(records, rows, now), Conflict);
}

}  // namespace
}  // namespace qkdn::controller::testing
