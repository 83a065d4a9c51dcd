// Unit tests of the reservation ledger (controller/core/ledger.cpp): transitions, leases, key IDs
// taken once ever, counters, batches and restore.
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <set>

#include "key_supply_test_util.hpp"
#include "qkdn/controller/error.hpp"
#include "qkdn/controller/ledger.hpp"

namespace qkdn::controller::testing {
namespace {

class LedgerTest : public ::testing::Test {
 protected:
  ManualClock clock_{kT0};
  SeededRandom rng_{42};
  SeededRandom key_rng_{7};
  ReservationLedger ledger_{rng_};
  HopRef h12_{"r1", "KM1", "KM2", "L12"};
  HopRef h23_{"r1", "KM2", "KM3", "L23"};
};

// reserved -> allocated -> consumed, each step one batch with the exact rows and leases.
TEST_F(LedgerTest, HappyPathRowsAndLeases) {
  const Strings keys = fresh_keys(key_rng_, 2);
  const LedgerBatch b1 = ledger_.reserve(h12_, keys, clock_.now());
  ASSERT_EQ(b1.entries.size(), 2u);
  EXPECT_EQ(b1.relay_id, "r1");
  EXPECT_EQ(b1.idempotency_key.rfind("r1/reserve/", 0), 0u);
  EXPECT_EQ(b1.entries[0].key_id, keys[0]);
  EXPECT_EQ(b1.entries[0].state, "reserved");
  EXPECT_EQ(b1.entries[0].link_id, "L12");
  EXPECT_EQ(b1.entries[0].km_id, "KM1");
  EXPECT_EQ(b1.entries[0].peer_km_id, "KM2");
  EXPECT_EQ(b1.entries[0].lease_expires_at, kT0 + std::chrono::seconds{10});
  EXPECT_EQ(b1.entries[0].updated_at, kT0);

  clock_.advance(std::chrono::seconds{1});
  const LedgerBatch b2 = ledger_.allocate(h12_, keys, clock_.now());
  EXPECT_EQ(b2.entries[1].state, "allocated");
  EXPECT_EQ(b2.entries[1].lease_expires_at, kT0 + std::chrono::seconds{61});
  EXPECT_NE(b2.idempotency_key, b1.idempotency_key);

  const LedgerBatch b3 = ledger_.consume("r1", keys, clock_.now());
  EXPECT_EQ(b3.entries[0].state, "consumed");
  EXPECT_FALSE(b3.entries[0].lease_expires_at.has_value());
  EXPECT_EQ(ledger_.state_of(keys[0]), LedgerState::kConsumed);
  EXPECT_EQ(ledger_.live_count(), 0u);
  EXPECT_EQ(ledger_.counters("L12"), (LinkCounters{0, 0, 2, 0}));
}

// Every illegal transition is refused with the right error and changes nothing.
TEST_F(LedgerTest, IllegalTransitionsAreRefused) {
  const Strings keys = fresh_keys(key_rng_, 3);
  const Strings unknown = fresh_keys(key_rng_, 1);
  const SysTime now = clock_.now();
  // Unknown keys: never seen.
  EXPECT_THROW(ledger_.allocate(h12_, unknown, now), NotFound);
  EXPECT_THROW(ledger_.consume("r1", unknown, now), NotFound);
  EXPECT_THROW(ledger_.release("r1", unknown, now), NotFound);

  ledger_.reserve(h12_, {keys[0], keys[1]}, now);
  // reserved -> consumed skips allocation.
  EXPECT_THROW(ledger_.consume("r1", {keys[0]}, now), Conflict);
  // Allocation by another hop or another relay.
  EXPECT_THROW(ledger_.allocate(h23_, {keys[0]}, now), Conflict);
  EXPECT_THROW(ledger_.allocate({"r2", "KM1", "KM2", "L12"}, {keys[0]}, now), Conflict);
  EXPECT_THROW(ledger_.release("r2", {keys[0]}, now), Conflict);
  // All or nothing: one bad ID spoils the batch.
  EXPECT_THROW(ledger_.allocate(h12_, {keys[0], keys[2]}, now), NotFound);
  EXPECT_EQ(ledger_.state_of(keys[0]), LedgerState::kReserved);

  ledger_.allocate(h12_, {keys[0]}, now);
  // allocated -> allocated is not an allocation.
  EXPECT_THROW(ledger_.allocate(h12_, {keys[0]}, now), Conflict);
  ledger_.consume("r1", {keys[0]}, now);
  // Final states are final.
  EXPECT_THROW(ledger_.release("r1", {keys[0]}, now), Conflict);
  EXPECT_THROW(ledger_.consume("r1", {keys[0]}, now), Conflict);
  ledger_.release("r1", {keys[1]}, now);
  EXPECT_THROW(ledger_.allocate(h12_, {keys[1]}, now), Conflict);
  EXPECT_THROW(ledger_.release("r1", {keys[1]}, now), Conflict);

  // Malformed input.
  EXPECT_THROW(ledger_.reserve(h12_, {}, now), InvalidArgument);
  EXPECT_THROW(ledger_.reserve(h12_, {keys[2], keys[2]}, now), InvalidArgument);
  EXPECT_THROW(ledger_.reserve(h12_, {"bad key"}, now), InvalidArgument);
  EXPECT_THROW(ledger_.reserve({"r1", "KM1", "", "L12"}, {keys[2]}, now), InvalidArgument);
  EXPECT_EQ(ledger_.counters("L12"), (LinkCounters{0, 0, 1, 1}));
}

// A key ID is never taken twice: not while live, not after consume, not after release, not in
// another relay or link, and not after a lease expiry.
TEST_F(LedgerTest, DuplicateKeyIdRefusedForever) {
  const Strings keys = fresh_keys(key_rng_, 4);
  const SysTime now = clock_.now();
  ledger_.reserve(h12_, {keys[0]}, now);
  EXPECT_THROW(ledger_.reserve(h12_, {keys[0]}, now), Conflict);
  EXPECT_THROW(ledger_.reserve({"r9", "KM5", "KM6", "L56"}, {keys[0]}, now), Conflict);
  ledger_.allocate(h12_, {keys[0]}, now);
  ledger_.consume("r1", {keys[0]}, now);
  EXPECT_THROW(ledger_.reserve({"r9", "KM5", "KM6", "L56"}, {keys[0]}, now), Conflict);

  // Released (or lapsed) before allocation: only its own hop may reserve it again (issue 12;
  // ReleasedBeforeAllocationComesBackToItsHopOnly).
  ledger_.reserve(h12_, {keys[1]}, now);
  ledger_.release("r1", {keys[1]}, now);
  EXPECT_THROW(ledger_.reserve({"r9", "KM5", "KM6", "L56"}, {keys[1]}, now), Conflict);

  ledger_.reserve(h12_, {keys[2]}, now);
  ledger_.expire(now + std::chrono::seconds{10});
  EXPECT_THROW(ledger_.reserve(h23_, {keys[2]}, now), Conflict);
  // Upper-case spelling of a seen UUID is the same key.
  std::string upper = keys[1];
  for (auto& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  EXPECT_THROW(ledger_.reserve(h23_, {upper}, now), Conflict);
  std::string upper3 = keys[3];
  for (auto& c : upper3) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  EXPECT_THROW(ledger_.reserve(h23_, {keys[3], upper3}, now), InvalidArgument);
  // The refusal names the key and its state; a fresh key beside a seen one is not taken.
  try {
    ledger_.reserve(h23_, {keys[3], keys[0]}, now);
    FAIL();
  } catch (const Conflict& e) {
    EXPECT_NE(std::string(e.what()).find(keys[0] + " was already seen (consumed)"),
              std::string::npos);
  }
  EXPECT_FALSE(ledger_.seen(keys[3]));
  EXPECT_EQ(ledger_.reserve_problem(h23_, {keys[3]}), std::nullopt);
  // Non-UUID IDs are remembered too.
  ledger_.reserve(h23_, {"key-a"}, now);
  ledger_.allocate(h23_, {"key-a"}, now);
  ledger_.release("r1", {"key-a"}, now);
  EXPECT_THROW(ledger_.reserve(h23_, {"key-a"}, now), Conflict);
  EXPECT_EQ(ledger_.seen_count(), 4u);
}

// A reservation not allocated within its lease is released by expire(); allocation renews the
// lease, so an allocated key survives the reservation lease.
TEST_F(LedgerTest, LeaseExpiry) {
  const Strings a = fresh_keys(key_rng_, 2);
  const Strings b = fresh_keys(key_rng_, 1);
  ledger_.reserve(h12_, a, clock_.now());
  ledger_.reserve({"r2", "KM2", "KM3", "L23"}, b, clock_.now());
  ledger_.allocate(h12_, {a[0]}, clock_.now() + std::chrono::seconds{5});
  EXPECT_EQ(ledger_.next_expiry(), kT0 + std::chrono::seconds{10});

  clock_.advance(std::chrono::milliseconds{9'999});
  EXPECT_TRUE(ledger_.expire(clock_.now()).empty());
  clock_.advance(std::chrono::milliseconds{1});
  const auto batches = ledger_.expire(clock_.now());
  ASSERT_EQ(batches.size(), 2u);  // one per relay, in relay order
  EXPECT_EQ(batches[0].relay_id, "r1");
  ASSERT_EQ(batches[0].entries.size(), 1u);
  EXPECT_EQ(batches[0].entries[0].key_id, a[1]);
  EXPECT_EQ(batches[0].entries[0].state, "released");
  EXPECT_EQ(batches[1].relay_id, "r2");
  EXPECT_EQ(ledger_.state_of(a[0]), LedgerState::kAllocated);
  EXPECT_EQ(ledger_.next_expiry(), kT0 + std::chrono::seconds{65});

  clock_.advance(std::chrono::seconds{55});
  ASSERT_EQ(ledger_.expire(clock_.now()).size(), 1u);
  EXPECT_EQ(ledger_.state_of(a[0]), LedgerState::kReleased);
  EXPECT_FALSE(ledger_.next_expiry().has_value());
  EXPECT_EQ(ledger_.counters("L12"), (LinkCounters{0, 0, 0, 2}));
}

// Configured leases are used; non-positive leases are refused.
TEST_F(LedgerTest, ConfigurableLease) {
  SeededRandom rng{1};
  ReservationLedger short_lease{rng, {std::chrono::milliseconds{500}, std::chrono::seconds{2}}};
  const auto b = short_lease.reserve(h12_, fresh_keys(key_rng_, 1), kT0);
  EXPECT_EQ(b.entries[0].lease_expires_at, kT0 + std::chrono::milliseconds{500});
  EXPECT_EQ(short_lease.expire(kT0 + std::chrono::milliseconds{500}).size(), 1u);
  EXPECT_THROW(ReservationLedger(rng, {Millis{0}, Millis{1}}), InvalidArgument);
}

// release_relay and consume_relay act on every live key of one relay, across hops, and leave
// other relays alone; consume_relay refuses while a key is only reserved.
TEST_F(LedgerTest, BulkOperations) {
  const Strings k1 = fresh_keys(key_rng_, 2);
  const Strings k2 = fresh_keys(key_rng_, 2);
  const Strings other = fresh_keys(key_rng_, 1);
  const SysTime now = clock_.now();
  ledger_.reserve(h12_, k1, now);
  ledger_.reserve(h23_, k2, now);
  ledger_.reserve({"r2", "KM1", "KM2", "L12"}, other, now);
  ledger_.allocate(h12_, k1, now);
  EXPECT_THROW(ledger_.consume_relay("r1", now), Conflict);
  EXPECT_EQ(ledger_.state_of(k1[0]), LedgerState::kAllocated);

  const LedgerBatch rel = ledger_.release_relay("r1", now);
  EXPECT_EQ(rel.entries.size(), 4u);
  EXPECT_TRUE(ledger_.live_keys("r1").empty());
  EXPECT_EQ(ledger_.live_keys("r2"), other);
  EXPECT_TRUE(ledger_.release_relay("r1", now).empty());
  EXPECT_TRUE(ledger_.consume_relay("r1", now).empty());

  ledger_.allocate({"r2", "KM1", "KM2", "L12"}, other, now);
  EXPECT_EQ(ledger_.consume_relay("r2", now).entries.size(), 1u);
  EXPECT_EQ(ledger_.counters("L12"), (LinkCounters{0, 0, 1, 2}));
  EXPECT_EQ(ledger_.counters("L23"), (LinkCounters{0, 0, 0, 2}));
  EXPECT_EQ(ledger_.live_relays(), Strings{});
}

// Per-link counters always add up to the number of key IDs seen on the link.
TEST_F(LedgerTest, CountersBalance) {
  std::size_t seen12 = 0;
  const SysTime now = clock_.now();
  for (int i = 0; i < 20; ++i) {
    const std::string relay = "r" + std::to_string(i);
    const HopRef hop{relay, "KM1", "KM2", "L12"};
    const Strings keys = fresh_keys(key_rng_, 3);
    ledger_.reserve(hop, keys, now);
    seen12 += 3;
    if (i % 3 == 0) ledger_.release_relay(relay, now);
    if (i % 3 == 1) {
      ledger_.allocate(hop, keys, now);
      ledger_.consume("r" + std::to_string(i), {keys[0]}, now);
    }
    EXPECT_EQ(ledger_.counters("L12").total(), seen12);
  }
  const LinkCounters c = ledger_.counters("L12");
  EXPECT_EQ(c.released, 21u);
  EXPECT_EQ(c.consumed, 7u);
  EXPECT_EQ(c.allocated, 14u);
  EXPECT_EQ(c.reserved, 18u);
  EXPECT_EQ(c.held(), ledger_.live_count());
  EXPECT_EQ(ledger_.counters("nope"), LinkCounters{});
}

// Restore remembers every ID, counts every row, releases live rows whose lease passed (one
// batch per relay) and keeps the others in flight.
TEST_F(LedgerTest, RestoreReleasesLapsedLeases) {
  const Strings keys = fresh_keys(key_rng_, 5);
  auto row = [&](const std::string& id, const std::string& relay, const std::string& state,
                 std::optional<SysTime> lease) {
    LedgerEntry e;
    e.key_id = id;
    e.link_id = "L12";
    e.km_id = "KM1";
    e.peer_km_id = "KM2";
    e.relay_id = relay;
    e.state = state;
    e.lease_expires_at = lease;
    e.updated_at = kT0 - std::chrono::seconds{30};
    return e;
  };
  std::vector<LedgerEntry> rows{
      row(keys[0], "r1", "consumed", std::nullopt),
      row(keys[1], "r1", "released", std::nullopt),
      row(keys[2], "r2", "reserved", kT0 - std::chrono::seconds{1}),
      row(keys[3], "r2", "allocated", kT0 + std::chrono::seconds{20}),
      row(keys[4], "r3", "allocated", kT0),
  };
  rows[1].ever_allocated = true;  // released after allocation (migration 0004's flag)
  const auto batches = ledger_.restore(rows, kT0);
  ASSERT_EQ(batches.size(), 2u);
  EXPECT_EQ(batches[0].relay_id, "r2");
  ASSERT_EQ(batches[0].entries.size(), 1u);
  EXPECT_EQ(batches[0].entries[0].key_id, keys[2]);
  EXPECT_EQ(batches[0].entries[0].state, "released");
  EXPECT_EQ(batches[1].relay_id, "r3");
  EXPECT_EQ(ledger_.state_of(keys[3]), LedgerState::kAllocated);
  EXPECT_EQ(ledger_.live_keys("r2"), Strings{keys[3]});
  EXPECT_EQ(ledger_.counters("L12"), (LinkCounters{0, 1, 1, 3}));
  // Consumed, allocated, or released after allocation: never again. keys[2] was released by
  // the restore while only reserved: its hop may take it again (issue 12).
  for (const auto& k : {keys[0], keys[1], keys[3], keys[4]}) {
    EXPECT_THROW(ledger_.reserve(h12_, {k}, kT0), Conflict) << k;
  }
  EXPECT_TRUE(ledger_.retired(keys[1]));
  EXPECT_TRUE(ledger_.can_reserve(h12_, keys[2]));
  EXPECT_FALSE(ledger_.can_reserve(h23_, keys[2]));
  // The surviving key can finish its life.
  ledger_.consume("r2", {keys[3]}, kT0);
  EXPECT_THROW(ledger_.restore(rows, kT0), Conflict);
}

// Issue 12: a key released before allocation (released by a failed attempt, or its lease
// lapsed) may be reserved again by the same hop (near KM, far KM, link) under another relay; it
// then leaves the released count. Once allocated it never comes back, whatever happens.
TEST_F(LedgerTest, ReleasedBeforeAllocationComesBackToItsHopOnly) {
  const Strings keys = fresh_keys(key_rng_, 3);
  const SysTime now = clock_.now();
  ledger_.reserve(h12_, keys, now);
  ledger_.release_relay("r1", now);
  EXPECT_EQ(ledger_.counters("L12"), (LinkCounters{0, 0, 0, 3}));
  EXPECT_FALSE(ledger_.retired(keys[0]));
  EXPECT_FALSE(ledger_.ever_allocated(keys[0]));

  // Another hop (other link, other direction, other KMs) may not take it.
  for (const HopRef& other : {HopRef{"r2", "KM2", "KM1", "L12"}, HopRef{"r2", "KM1", "KM2", "L99"},
                              HopRef{"r2", "KM2", "KM3", "L23"}}) {
    EXPECT_FALSE(ledger_.can_reserve(other, keys[0]));
    const auto p = ledger_.reserve_problem(other, {keys[0]});
    ASSERT_TRUE(p);
    EXPECT_NE(p->find("released, reserved by another hop"), std::string::npos) << *p;
    EXPECT_THROW(ledger_.reserve(other, {keys[0]}, now), Conflict);
  }

  // The same hop under a new relay: reserved again, a normal row of relay r2.
  const HopRef again{"r2", "KM1", "KM2", "L12"};
  EXPECT_TRUE(ledger_.can_reserve(again, keys[0]));
  EXPECT_EQ(ledger_.reserve_problem(again, keys), std::nullopt);
  clock_.advance(std::chrono::seconds{1});
  const LedgerBatch b = ledger_.reserve(again, keys, clock_.now());
  ASSERT_EQ(b.entries.size(), 3u);
  EXPECT_EQ(b.entries[0].state, "reserved");
  EXPECT_EQ(b.entries[0].relay_id, "r2");
  EXPECT_FALSE(b.entries[0].ever_allocated);
  EXPECT_EQ(b.entries[0].lease_expires_at, kT0 + std::chrono::seconds{11});
  EXPECT_EQ(ledger_.counters("L12"), (LinkCounters{3, 0, 0, 0}));
  EXPECT_EQ(ledger_.live_keys("r2"), [&] {
    Strings s = keys;
    std::sort(s.begin(), s.end());
    return s;
  }());
  EXPECT_EQ(ledger_.seen_count(), 3u);
  // While r2 holds them, nobody else may (not even r1's hop, which is the same hop).
  EXPECT_THROW(ledger_.reserve(h12_, {keys[0]}, clock_.now()), Conflict);

  // Allocated once: released again, it is retired for good; consumed likewise.
  const LedgerBatch a = ledger_.allocate(again, {keys[0], keys[1]}, clock_.now());
  EXPECT_TRUE(a.entries[0].ever_allocated);
  const LedgerBatch r = ledger_.release("r2", {keys[0]}, clock_.now());
  EXPECT_TRUE(r.entries[0].ever_allocated);
  ledger_.consume("r2", {keys[1]}, clock_.now());
  ledger_.release("r2", {keys[2]}, clock_.now());
  EXPECT_TRUE(ledger_.retired(keys[0]));
  EXPECT_TRUE(ledger_.retired(keys[1]));
  EXPECT_FALSE(ledger_.retired(keys[2]));
  const HopRef third{"r3", "KM1", "KM2", "L12"};
  EXPECT_FALSE(ledger_.can_reserve(third, keys[0]));
  EXPECT_FALSE(ledger_.can_reserve(third, keys[1]));
  const auto p = ledger_.reserve_problem(third, {keys[0]});
  ASSERT_TRUE(p);
  EXPECT_NE(p->find("released after allocation"), std::string::npos) << *p;
  EXPECT_THROW(ledger_.reserve(third, {keys[0]}, clock_.now()), Conflict);
  EXPECT_THROW(ledger_.reserve(third, {keys[1]}, clock_.now()), Conflict);
  // keys[2] went round twice without allocation: still welcome at its hop.
  ledger_.reserve(third, {keys[2]}, clock_.now());
  EXPECT_EQ(ledger_.counters("L12"), (LinkCounters{1, 0, 1, 1}));
}

// A lapsed reservation (lease expiry) is released before allocation: its hop may take it again.
TEST_F(LedgerTest, LapsedReservationComesBack) {
  const Strings keys = fresh_keys(key_rng_, 1);
  ledger_.reserve(h12_, keys, clock_.now());
  clock_.advance(std::chrono::seconds{10});
  ASSERT_EQ(ledger_.expire(clock_.now()).size(), 1u);
  ledger_.reserve({"r7", "KM1", "KM2", "L12"}, keys, clock_.now());
  EXPECT_EQ(ledger_.state_of(keys[0]), LedgerState::kReserved);
  // An allocated key whose lease lapses is retired.
  ledger_.allocate({"r7", "KM1", "KM2", "L12"}, keys, clock_.now());
  clock_.advance(std::chrono::seconds{60});
  ASSERT_EQ(ledger_.expire(clock_.now()).size(), 1u);
  EXPECT_TRUE(ledger_.retired(keys[0]));
  EXPECT_THROW(ledger_.reserve({"r8", "KM1", "KM2", "L12"}, keys, clock_.now()), Conflict);
}

// Restore keeps ever_allocated: released rows never allocated come back to their hop, rows
// released after allocation (the flag, or legacy rows migrated with it set) never.
TEST_F(LedgerTest, RestoreKeepsEverAllocated) {
  const Strings keys = fresh_keys(key_rng_, 2);
  std::vector<LedgerEntry> rows(2);
  for (std::size_t i = 0; i < 2; ++i) {
    rows[i].key_id = keys[i];
    rows[i].link_id = "L12";
    rows[i].km_id = "KM1";
    rows[i].peer_km_id = "KM2";
    rows[i].relay_id = "r1";
    rows[i].state = "released";
    rows[i].updated_at = kT0;
  }
  rows[1].ever_allocated = true;
  EXPECT_TRUE(ledger_.restore(rows, kT0).empty());
  const HopRef hop{"r5", "KM1", "KM2", "L12"};
  EXPECT_TRUE(ledger_.can_reserve(hop, keys[0]));
  EXPECT_FALSE(ledger_.can_reserve(hop, keys[1]));
  ledger_.reserve(hop, {keys[0]}, kT0);
  EXPECT_THROW(ledger_.reserve(hop, {keys[1]}, kT0), Conflict);
  EXPECT_EQ(ledger_.counters("L12"), (LinkCounters{1, 0, 0, 1}));
}

// Restore refuses malformed rows without taking anything.
TEST_F(LedgerTest, RestoreRefusesMalformedRows) {
  LedgerEntry e;
  e.key_id = "k1";
  e.link_id = "L12";
  e.km_id = "KM1";
  e.peer_km_id = "KM2";
  e.relay_id = "r1";
  e.state = "consumed";
  EXPECT_THROW(ledger_.restore({e, e}, kT0), InvalidArgument);
  LedgerEntry bogus = e;
  bogus.state = "bogus";
  EXPECT_THROW(ledger_.restore({bogus}, kT0), InvalidArgument);
  LedgerEntry hopless = e;
  hopless.state = "reserved";
  hopless.km_id.clear();
  EXPECT_THROW(ledger_.restore({hopless}, kT0), InvalidArgument);
  EXPECT_EQ(ledger_.seen_count(), 0u);
}

// Idempotency keys are distinct for every batch of a ledger and between two ledgers (restarts).
TEST_F(LedgerTest, IdempotencyKeysAreUnique) {
  SeededRandom other_rng{43};
  ReservationLedger other{other_rng};
  std::set<std::string> keys_seen;
  for (int i = 0; i < 50; ++i) {
    const HopRef hop{"r1", "KM1", "KM2", "L12"};
    const auto k = fresh_keys(key_rng_, 1);
    EXPECT_TRUE(keys_seen.insert(ledger_.reserve(hop, k, kT0).idempotency_key).second);
    EXPECT_TRUE(keys_seen.insert(ledger_.release_relay("r1", kT0).idempotency_key).second);
    const auto k2 = fresh_keys(key_rng_, 1);
    EXPECT_TRUE(keys_seen.insert(other.reserve(hop, k2, kT0).idempotency_key).second);
  }
}

// 100k key IDs stay cheap to remember and to check.
TEST_F(LedgerTest, HundredThousandKeys) {
  const SysTime now = clock_.now();
  Strings last;
  for (int i = 0; i < 1'000; ++i) {
    const std::string relay = "r" + std::to_string(i);
    const HopRef hop{relay, "KM1", "KM2", "L12"};
    last = fresh_keys(key_rng_, 100);
    ledger_.reserve(hop, last, now);
    ledger_.allocate(hop, last, now);
    ledger_.consume_relay(relay, now);
  }
  EXPECT_EQ(ledger_.seen_count(), 100'000u);
  EXPECT_EQ(ledger_.live_count(), 0u);
  EXPECT_EQ(ledger_.counters("L12").consumed, 100'000u);
  EXPECT_THROW(ledger_.reserve(h12_, {last[99]}, now), Conflict);
}

// State names round-trip and unknown ones are refused.
TEST(LedgerStateNames, RoundTrip) {
  for (const auto s : {LedgerState::kReserved, LedgerState::kAllocated, LedgerState::kConsumed,
                       LedgerState::kReleased}) {
    EXPECT_EQ(parse_ledger_state(to_string(s)), s);
  }
  EXPECT_THROW(parse_ledger_state("taken"), InvalidArgument);
}

}  // namespace
}  // namespace qkdn::controller::testing
