// Unit tests of the agent's per-link KeyStore: parity halves, state rules, leases, resync trim,
// digests and generation room under one-way demand. Deterministic: fixed seeds, injected time.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <random>
#include <vector>

#include "qkdn/agent/key_store.hpp"

namespace qkdn::agent {
namespace {

using std::chrono::milliseconds;
using SteadyPoint = std::chrono::steady_clock::time_point;

constexpr std::size_t kCapacityBytes = 64 * 32;  // 64 keys: 32 per half

// Makes random keys (ID and bytes) from a fixed seed; `parity` forces the first ID byte's.
class KeyMaker {
 public:
  explicit KeyMaker(std::uint32_t seed) : rng_(seed) {}

  KeyBlock make(int parity) {
    KeyBlock k = make_random();
    k.id[0] = static_cast<std::uint8_t>((k.id[0] & 0xFE) | parity);
    return k;
  }

  KeyBlock make_random() {
    KeyBlock k;
    for (auto& b : k.id) b = static_cast<std::uint8_t>(rng_());
    for (auto& b : k.bytes) b = static_cast<std::uint8_t>(rng_());
    return k;
  }

 private:
  std::mt19937 rng_;
};

KeyStore make_store() { return KeyStore("L12", "KM1", "KM2", kCapacityBytes); }

// Pushes `n` keys of `parity` into both stores (same keys, same order); returns their IDs.
std::vector<KeyId> push_keys(KeyMaker& maker, int parity, std::size_t n, KeyStore& a,
                             KeyStore* b = nullptr) {
  std::vector<KeyId> ids;
  for (std::size_t i = 0; i < n; ++i) {
    KeyBlock k = maker.make(parity);
    ids.push_back(k.id);
    if (b != nullptr) {
      EXPECT_TRUE(b->push(k));
    }
    EXPECT_TRUE(a.push(std::move(k)));
  }
  return ids;
}

const SteadyPoint kT0{std::chrono::seconds{1000}};

// reserve() hands out the oldest available keys of the asked parity only.
TEST(KeyStore, ReservesOldestFirstByParity) {
  KeyMaker maker(1);
  auto store = make_store();
  std::vector<KeyId> even;
  std::vector<KeyId> odd;
  for (int i = 0; i < 6; ++i) {
    auto e = push_keys(maker, 0, 1, store);
    auto o = push_keys(maker, 1, 1, store);
    even.push_back(e[0]);
    odd.push_back(o[0]);
  }
  EXPECT_EQ(store.reserve(2, 0, kT0), (std::vector<KeyId>{even[0], even[1]}));
  EXPECT_EQ(store.reserve(3, 1, kT0), (std::vector<KeyId>{odd[0], odd[1], odd[2]}));
  EXPECT_EQ(store.reserve(1, 0, kT0), (std::vector<KeyId>{even[2]}));
  EXPECT_EQ(store.count(KeyState::kReserved), 6u);
  EXPECT_EQ(store.available_parity(0), 3u);
  EXPECT_EQ(store.available_parity(1), 3u);
  EXPECT_EQ(store.count_parity(0), 6u);
  EXPECT_EQ(store.count_parity(1), 6u);
}

// Asking for more keys than a half holds returns nothing and changes nothing.
TEST(KeyStore, ReserveTooManyChangesNothing) {
  KeyMaker maker(2);
  auto store = make_store();
  push_keys(maker, 0, 3, store);
  push_keys(maker, 1, 10, store);
  EXPECT_TRUE(store.reserve(4, 0, kT0).empty());
  EXPECT_TRUE(store.reserve(0, 0, kT0).empty());
  EXPECT_EQ(store.count(KeyState::kAvailable), 13u);
  EXPECT_EQ(store.count(KeyState::kReserved), 0u);
  EXPECT_EQ(store.available_parity(0), 3u);
}

// allocate() needs every ID stored, reserved and distinct; otherwise nothing changes.
TEST(KeyStore, AllocateStateRules) {
  KeyMaker maker(3);
  auto store = make_store();
  const auto ids = push_keys(maker, 0, 4, store);
  const auto reserved = store.reserve(2, 0, kT0);
  ASSERT_EQ(reserved.size(), 2u);
  const KeyId missing = maker.make(0).id;

  EXPECT_FALSE(store.allocate({reserved[0], missing}));
  EXPECT_FALSE(store.allocate({reserved[0], reserved[0]}));
  EXPECT_FALSE(store.allocate({reserved[0], ids[3]}));  // ids[3] is available
  EXPECT_EQ(store.count(KeyState::kReserved), 2u);
  EXPECT_EQ(store.count(KeyState::kAllocated), 0u);

  EXPECT_TRUE(store.allocate(reserved));
  EXPECT_EQ(store.count(KeyState::kReserved), 0u);
  EXPECT_EQ(store.count(KeyState::kAllocated), 2u);
  EXPECT_FALSE(store.allocate(reserved));  // already allocated
  EXPECT_EQ(store.count(KeyState::kAllocated), 2u);
}

// take() returns the keys in the asked order and removes them; a bad ID list changes nothing.
TEST(KeyStore, TakeStateRules) {
  KeyMaker maker(4);
  auto store = make_store();
  std::vector<KeyBlock> pushed;
  for (int i = 0; i < 4; ++i) pushed.push_back(maker.make(0));
  for (const auto& k : pushed) ASSERT_TRUE(store.push(k));
  const auto reserved = store.reserve(2, 0, kT0);
  ASSERT_TRUE(store.allocate(reserved));
  const KeyId missing = maker.make(1).id;

  EXPECT_FALSE(store.take({reserved[0], missing}, true));
  EXPECT_FALSE(store.take({reserved[0], reserved[0]}, true));
  EXPECT_FALSE(store.take({reserved[0], pushed[2].id}, true));   // available, not allocated
  EXPECT_FALSE(store.take({pushed[2].id, reserved[0]}, false));  // allocated, not available
  EXPECT_EQ(store.size(), 4u);

  auto got = store.take({reserved[1], reserved[0]}, true);
  ASSERT_TRUE(got);
  ASSERT_EQ(got->size(), 2u);
  EXPECT_EQ((*got)[0].id, pushed[1].id);
  EXPECT_EQ((*got)[0].bytes, pushed[1].bytes);
  EXPECT_EQ((*got)[1].id, pushed[0].id);
  EXPECT_EQ((*got)[1].bytes, pushed[0].bytes);
  EXPECT_EQ(store.size(), 2u);
  EXPECT_FALSE(store.take({reserved[0]}, true));  // already taken

  // The far end of a hop takes available keys by ID, wherever they sit.
  auto far = store.take({pushed[3].id}, false);
  ASSERT_TRUE(far);
  EXPECT_EQ((*far)[0].bytes, pushed[3].bytes);
  EXPECT_EQ(store.size(), 1u);
  EXPECT_EQ(store.count(KeyState::kAvailable), 1u);
  EXPECT_EQ(store.count(KeyState::kAllocated), 0u);
  EXPECT_EQ(store.count_parity(0), 1u);
}

// Expired reservations return to the pool in their original (oldest-first) position.
TEST(KeyStore, ReleaseExpiredWithInjectedTime) {
  KeyMaker maker(5);
  auto store = make_store();
  const auto ids = push_keys(maker, 0, 6, store);
  const auto first = store.reserve(2, 0, kT0);                       // ids 0, 1
  const auto second = store.reserve(2, 0, kT0 + milliseconds{500});  // ids 2, 3
  ASSERT_EQ(second, (std::vector<KeyId>{ids[2], ids[3]}));
  const milliseconds lease{1000};

  EXPECT_EQ(store.release_expired(kT0 + milliseconds{999}, lease), 0u);
  EXPECT_EQ(store.release_expired(kT0 + milliseconds{1000}, lease), 2u);
  EXPECT_EQ(store.count(KeyState::kReserved), 2u);
  EXPECT_FALSE(store.allocate(first));  // released: no longer reserved
  EXPECT_EQ(store.release_expired(kT0 + milliseconds{1499}, lease), 0u);
  EXPECT_EQ(store.release_expired(kT0 + milliseconds{1500}, lease), 2u);
  EXPECT_EQ(store.count(KeyState::kReserved), 0u);
  EXPECT_EQ(store.count(KeyState::kAvailable), 6u);
  // Oldest first again: the released keys come before the never-reserved ones.
  EXPECT_EQ(store.reserve(5, 0, kT0 + milliseconds{2000}),
            (std::vector<KeyId>{ids[0], ids[1], ids[2], ids[3], ids[4]}));
}

// Allocated keys never expire; only reserved ones do.
TEST(KeyStore, AllocatedKeysDoNotExpire) {
  KeyMaker maker(6);
  auto store = make_store();
  push_keys(maker, 1, 3, store);
  const auto ids = store.reserve(3, 1, kT0);
  ASSERT_TRUE(store.allocate(ids));
  EXPECT_EQ(store.release_expired(kT0 + std::chrono::hours{1}, milliseconds{1}), 0u);
  EXPECT_EQ(store.count(KeyState::kAllocated), 3u);
}

// Issue 12: a release gives back only the named holder's reservations, in their old place
// (offered first again); an allocation naming a holder takes only its reservations.
TEST(KeyStore, ReleaseReturnsTheHoldersReservationsInPlace) {
  KeyMaker maker(21);
  auto store = make_store();
  const auto all = push_keys(maker, 0, 6, store);
  const Holder a = holder_of("relay-a");
  const Holder b = holder_of("relay-b");
  EXPECT_NE(a, b);
  const auto ra = store.reserve(2, 0, kT0, a);
  const auto rb = store.reserve(2, 0, kT0, b);
  EXPECT_EQ(ra, (std::vector<KeyId>{all[0], all[1]}));
  EXPECT_FALSE(store.allocate(ra, b));  // not b's
  EXPECT_EQ(store.release(rb, a), 0u);  // not a's
  EXPECT_EQ(store.count(KeyState::kReserved), 4u);
  EXPECT_EQ(store.release({ra[0], ra[0], all[5]}, a), 1u);  // repeated and available: once
  EXPECT_EQ(store.release(ra, a), 1u);
  EXPECT_EQ(store.count(KeyState::kReserved), 2u);
  EXPECT_EQ(store.available_parity(0), 4u);
  // Back in their place: the next reservation takes them first.
  EXPECT_EQ(store.reserve(2, 0, kT0, b), ra);
  EXPECT_TRUE(store.allocate(rb, b));
  // A lapsed reservation forgets its holder.
  EXPECT_EQ(store.release_expired(kT0 + milliseconds{10}, milliseconds{10}), 2u);
  EXPECT_EQ(store.release(ra, b), 0u);
}

// Discards remove and wipe keys: held ones of a holder (allocated, or reserved too), available
// ones of one parity (the peer's half), and allocations older than a lease; the rest stays.
TEST(KeyStore, DiscardHeldAvailableAndExpiredAllocations) {
  KeyMaker maker(22);
  auto store = make_store();
  const auto even = push_keys(maker, 0, 4, store);
  const auto odd = push_keys(maker, 1, 4, store);
  const Holder h = holder_of("relay-h");
  const auto r = store.reserve(2, 0, kT0, h);
  ASSERT_TRUE(store.allocate({r[0]}, h));
  // Only the allocated one without reserved_too; another holder gets nothing.
  EXPECT_TRUE(store.discard(r, holder_of("other"), true).empty());
  EXPECT_EQ(store.discard(r, h, false), std::vector<KeyId>{r[0]});
  EXPECT_EQ(store.discard(r, h, true), std::vector<KeyId>{r[1]});
  EXPECT_EQ(store.size(), 6u);
  // The peer's half only, available only.
  const auto rodd = store.reserve(1, 1, kT0, h);
  EXPECT_EQ(store.discard_available({odd[0], odd[1], even[2]}, 1), std::vector<KeyId>{odd[1]});
  EXPECT_EQ(rodd, std::vector<KeyId>{odd[0]});
  EXPECT_EQ(store.size(), 5u);
  // Allocations lapse after their lease (counted from the reservation); reservations do not.
  const auto late = store.reserve(1, 0, kT0 + milliseconds{50}, h);
  ASSERT_TRUE(store.allocate(rodd, h));
  ASSERT_TRUE(store.allocate(late, h));
  EXPECT_TRUE(store.discard_expired_allocations(kT0 + milliseconds{99}, milliseconds{100}).empty());
  EXPECT_EQ(store.discard_expired_allocations(kT0 + milliseconds{100}, milliseconds{100}), rodd);
  EXPECT_EQ(store.discard_expired_allocations(kT0 + milliseconds{150}, milliseconds{100}), late);
  EXPECT_EQ(store.count(KeyState::kAllocated), 0u);
  EXPECT_EQ(store.size(), 3u);
  EXPECT_EQ(store.count(KeyState::kAvailable), 3u);
}

// newest_id / trim_after follow global insertion order across both parities.
TEST(KeyStore, TrimAfterAcrossParities) {
  KeyMaker maker(7);
  auto store = make_store();
  EXPECT_FALSE(store.newest_id());
  std::vector<KeyBlock> keys;
  std::vector<KeyId> order;
  for (int i = 0; i < 10; ++i) {
    keys.push_back(maker.make((i * 7 / 3) % 2));  // parities 0 0 0 1 1 1 0 0 0 1 (mixed)
    order.push_back(keys.back().id);
    ASSERT_TRUE(store.push(keys.back()));
  }
  EXPECT_EQ(store.newest_id(), order.back());
  store.reserve(1, 0, kT0);
  store.reserve(1, 1, kT0);

  const KeyId missing = maker.make(0).id;
  EXPECT_FALSE(store.trim_after(missing));
  EXPECT_EQ(store.size(), 10u);

  ASSERT_TRUE(store.trim_after(order[5]));
  EXPECT_EQ(store.size(), 6u);
  EXPECT_EQ(store.newest_id(), order[5]);
  EXPECT_EQ(store.count_parity(0) + store.count_parity(1), 6u);
  EXPECT_EQ(store.count(KeyState::kAvailable) + store.count(KeyState::kReserved), 6u);
  // Trimmed keys are gone from the index too: taking them fails, pushing them again works.
  EXPECT_FALSE(store.take({order[7]}, false));
  EXPECT_TRUE(store.push(keys[7]));
  EXPECT_EQ(store.newest_id(), order[7]);
  ASSERT_TRUE(store.trim_after(order[5]));
  EXPECT_EQ(store.size(), 6u);

  ASSERT_TRUE(store.trim_after(*store.newest_id()));  // keeping the newest drops nothing
  EXPECT_EQ(store.size(), 6u);
  store.clear();
  EXPECT_EQ(store.size(), 0u);
  EXPECT_FALSE(store.newest_id());
  EXPECT_EQ(store.count(KeyState::kReserved), 0u);
  EXPECT_EQ(store.available_parity(0) + store.available_parity(1), 0u);
}

// Two stores fed the same keys in the same order agree on the digest, also after the same
// takes; it differs once they hold different keys, and it equals digest_of in insertion order.
TEST(KeyStore, DigestEqualAtBothEnds) {
  KeyMaker maker(8);
  auto a = KeyStore("L12", "KM1", "KM2", kCapacityBytes);
  auto b = KeyStore("L12", "KM2", "KM1", kCapacityBytes / 2);
  std::vector<KeyBlock> all;
  for (int i = 0; i < 20; ++i) {
    KeyBlock k = maker.make_random();
    all.push_back(k);
    ASSERT_TRUE(a.push(k));
    ASSERT_TRUE(b.push(k));
  }
  EXPECT_EQ(a.digest_hex(), b.digest_hex());
  EXPECT_EQ(a.digest_hex(), digest_of(all));

  // a reserves and takes its parity-0 keys; b (the far end) takes the same IDs available.
  const auto ids = a.reserve(a.available_parity(0) / 2, 0, kT0);
  ASSERT_FALSE(ids.empty());
  ASSERT_TRUE(a.allocate(ids));
  ASSERT_TRUE(a.take(ids, true));
  EXPECT_NE(a.digest_hex(), b.digest_hex());
  ASSERT_TRUE(b.take(ids, false));
  EXPECT_EQ(a.digest_hex(), b.digest_hex());
}

// A duplicate ID is refused and changes nothing.
TEST(KeyStore, DuplicateIdRefused) {
  KeyMaker maker(9);
  auto store = make_store();
  KeyBlock k = maker.make(0);
  ASSERT_TRUE(store.push(k));
  const auto digest = store.digest_hex();
  KeyBlock again = maker.make(0);
  again.id = k.id;
  EXPECT_FALSE(store.push(again));
  EXPECT_EQ(store.size(), 1u);
  EXPECT_EQ(store.digest_hex(), digest);
  EXPECT_EQ(store.added_bits_total(), kKeyBits);
}

// Each half gets half of min(own, peer) capacity minus stored and in-flight keys.
TEST(KeyStore, CapacityPerHalf) {
  KeyMaker maker(10);
  auto store = make_store();
  EXPECT_EQ(store.capacity_bits(), 64 * kKeyBits);
  EXPECT_EQ(store.capacity_bits_per_half(), 32 * kKeyBits);
  EXPECT_EQ(store.generation_room(INT64_MAX, {0, 0}), (std::array<std::int64_t, 2>{32, 32}));
  EXPECT_EQ(store.generation_room(16 * kKeyBits, {0, 0}), (std::array<std::int64_t, 2>{8, 8}));
  push_keys(maker, 0, 10, store);
  push_keys(maker, 1, 30, store);
  EXPECT_EQ(store.generation_room(INT64_MAX, {5, 1}), (std::array<std::int64_t, 2>{17, 1}));
  EXPECT_EQ(store.generation_room(INT64_MAX, {0, 5}), (std::array<std::int64_t, 2>{22, 0}));
  EXPECT_EQ(store.generation_room(16 * kKeyBits, {0, 0}), (std::array<std::int64_t, 2>{0, 0}));
}

// assign_parity() picks the half with more room, changes only the low bit of byte 0, keeps the
// random bit on a tie and refuses when both halves are full.
TEST(KeyStore, AssignParity) {
  KeyMaker maker(11);
  KeyBlock k = maker.make(1);
  KeyId id = k.id;
  std::array<std::int64_t, 2> room{3, 1};
  ASSERT_TRUE(assign_parity(id, room));
  EXPECT_EQ(key_parity(id), 0);
  EXPECT_EQ(id[0] | 1, k.id[0] | 1);
  EXPECT_TRUE(std::equal(id.begin() + 1, id.end(), k.id.begin() + 1));
  EXPECT_EQ(room, (std::array<std::int64_t, 2>{2, 1}));

  room = {0, 2};
  id = maker.make(0).id;
  ASSERT_TRUE(assign_parity(id, room));
  EXPECT_EQ(key_parity(id), 1);

  room = {1, 1};
  id = maker.make(1).id;
  ASSERT_TRUE(assign_parity(id, room));
  EXPECT_EQ(key_parity(id), 1);  // tie: the random bit stays
  EXPECT_EQ(room, (std::array<std::int64_t, 2>{1, 0}));

  room = {0, 0};
  const KeyId before = id;
  EXPECT_FALSE(assign_parity(id, room));
  EXPECT_EQ(id, before);
}

// One-way demand: only the primary's half (parity 0) is consumed, round after round, with the
// generator rule of KmHost::generate (room per half, parity by assign_parity). The unused half
// fills up, but room for parity 0 never disappears and every request is served.
TEST(KeyStore, OneWayDemandKeepsGenerating) {
  KeyMaker maker(12);
  auto primary = make_store();
  auto secondary = make_store();
  constexpr std::size_t kPerRequest = 4;
  constexpr std::int64_t kPerTick = 6;  // generation outpaces demand: the store fills
  std::size_t served = 0;
  for (int round = 0; round < 500; ++round) {
    // Generation tick: as many keys as credit and room allow, parity chosen per key.
    auto room = primary.generation_room(secondary.capacity_bits(), {0, 0});
    const std::int64_t n = std::min(kPerTick, room[0] + room[1]);
    for (std::int64_t i = 0; i < n; ++i) {
      KeyBlock k = maker.make_random();
      ASSERT_TRUE(assign_parity(k.id, room));
      ASSERT_TRUE(secondary.push(k));  // the secondary stores exactly what the primary sends
      ASSERT_TRUE(primary.push(std::move(k)));
    }
    // Demand: one request served from parity 0 at the primary, taken at both ends.
    const auto ids = primary.reserve(kPerRequest, 0, kT0 + milliseconds{round});
    if (ids.empty()) {
      EXPECT_LT(round, 2) << "starved at round " << round;  // only while the pool first fills
      continue;
    }
    ASSERT_TRUE(primary.allocate(ids));
    ASSERT_TRUE(primary.take(ids, true));
    ASSERT_TRUE(secondary.take(ids, false));
    ++served;
    EXPECT_GT(primary.generation_room(secondary.capacity_bits(), {0, 0})[0], 0)
        << "round " << round;
  }
  EXPECT_GE(served, 498u);
  EXPECT_EQ(primary.count_parity(1) * static_cast<std::size_t>(kKeyBits),
            static_cast<std::size_t>(primary.capacity_bits_per_half()));  // the unused half full
  EXPECT_EQ(primary.digest_hex(), secondary.digest_hex());
}

}  // namespace
}  // namespace qkdn::agent
