// Unit tests of the agent's per-link KeyStore (lazy emulation): both ends derive the same keys
// from the link secret, parity halves, state rules, leases, resync trim, digests, generation
// room and credit, memory per idle link. Deterministic: fixed secrets, injected time.
#include <gtest/gtest.h>

#include <cctype>
#include <chrono>
#include <cstdint>
#include <set>
#include <vector>

#include "qkdn/agent/key_store.hpp"
#include "qkdn/agent/secure_memory.hpp"

namespace qkdn::agent {
namespace {

using std::chrono::milliseconds;
using SteadyPoint = std::chrono::steady_clock::time_point;

constexpr std::size_t kCapacityBytes = std::size_t{64} * 32;  // 64 keys: 32 per half

/// A fixed secret: bytes seed, seed + 1, ...
std::array<std::uint8_t, kLinkSecretBytes> secret_of(std::uint8_t seed) {
  std::array<std::uint8_t, kLinkSecretBytes> s{};
  for (std::size_t i = 0; i < s.size(); ++i) s[i] = static_cast<std::uint8_t>(seed + i);
  return s;
}

KeyStore make_store(std::uint8_t seed = 1, std::size_t capacity = kCapacityBytes) {
  KeyStore s("L12", "KM1", "KM2", capacity);
  s.rekey(secret_of(seed).data(), {0, 0});
  return s;
}

// Mints `n` blocks of `parity` in `a` (and `b`, the other end); returns their IDs.
std::vector<KeyId> push_keys(int parity, std::size_t n, KeyStore& a, KeyStore* b = nullptr) {
  std::vector<KeyId> ids;
  const auto first = a.minted()[static_cast<std::size_t>(parity)];
  std::array<std::int64_t, 2> add{};
  add[static_cast<std::size_t>(parity)] = static_cast<std::int64_t>(n);
  a.mint(add);
  if (b != nullptr) b->mint(add);
  for (std::size_t i = 0; i < n; ++i) ids.push_back(a.id_of(parity, first + i));
  return ids;
}

const SteadyPoint kT0{std::chrono::seconds{1000}};

// Both ends keyed with the same secret derive the same IDs and bytes for every block, and the
// bytes are HMAC-SHA256(secret, label || parity || index) as documented; another secret gives
// other IDs and bytes, and IDs are version-4 UUIDs whose low bit of byte 0 is the parity.
TEST(KeyStore, BothEndsDeriveTheSameKeys) {
  auto a = make_store(7);
  KeyStore b("L12", "KM2", "KM1", kCapacityBytes / 2);
  b.rekey(secret_of(7).data(), {0, 0});
  a.mint({20, 20});
  b.mint({20, 20});
  std::vector<KeyId> ids;
  for (std::uint64_t i = 0; i < 20; ++i) {
    for (int p = 0; p < 2; ++p) {
      const KeyId id = a.id_of(p, i);
      EXPECT_EQ(id, b.id_of(p, i));
      EXPECT_EQ(key_parity(id), p);
      EXPECT_EQ(id[6] >> 4, 4);
      EXPECT_EQ(id[8] & 0xC0, 0x80);
      ids.push_back(id);
    }
  }
  EXPECT_EQ(std::set<KeyId>(ids.begin(), ids.end()).size(), ids.size());  // all distinct
  // Their first 8 bytes differ too (ETSI key_IDs of adjacent supplies are made from them).
  std::set<std::vector<std::uint8_t>> prefixes;
  for (const auto& id : ids) prefixes.emplace(id.begin(), id.begin() + 8);
  EXPECT_EQ(prefixes.size(), ids.size());
  EXPECT_EQ(a.digest_hex(), b.digest_hex());

  // a reserves and takes its half; b (the far end) takes the same IDs: identical bytes.
  const auto r = a.reserve(5, 0, kT0);
  ASSERT_TRUE(a.allocate(r));
  auto at_a = a.take(r, true);
  auto at_b = b.take(r, false);
  ASSERT_TRUE(at_a && at_b);
  for (std::size_t i = 0; i < r.size(); ++i) {
    EXPECT_EQ((*at_a)[i].id, r[i]);
    EXPECT_EQ((*at_a)[i].bytes, (*at_b)[i].bytes);
    std::array<std::uint8_t, kKeyBytes> expect{};
    derive_key_bytes(secret_of(7).data(), 0, i, expect.data());
    EXPECT_EQ((*at_a)[i].bytes, expect);
  }
  EXPECT_NE((*at_a)[0].bytes, (*at_a)[1].bytes);
  EXPECT_EQ(a.digest_hex(), b.digest_hex());

  auto other = make_store(8);
  other.mint({20, 20});
  EXPECT_NE(other.id_of(0, 0), a.id_of(0, 0));
  EXPECT_FALSE(other.take({a.id_of(0, 10)}, false));  // not one of its IDs
  EXPECT_NE(other.digest_hex(), a.digest_hex());
}

// A key taken (at either end) or discarded is never handed out again: not by reserve(), not by
// a second take, not after leases lapse, trims or a rekey at the same counts.
TEST(KeyStore, ConsumedKeyIsNeverHandedOutAgain) {
  auto a = make_store();
  auto b = make_store();
  push_keys(0, 30, a, &b);
  std::set<KeyId> used;
  for (int round = 0; round < 6; ++round) {
    const auto r = a.reserve(4, 0, kT0 + milliseconds{round});
    ASSERT_EQ(r.size(), 4u);
    ASSERT_TRUE(a.allocate(r));
    ASSERT_TRUE(a.take(r, true));
    ASSERT_TRUE(b.take(r, false));
    for (const auto& id : r) EXPECT_TRUE(used.insert(id).second) << "handed out twice";
    EXPECT_FALSE(a.take(r, true));
    EXPECT_FALSE(b.take(r, false));
  }
  // The far end takes out of order (a relay of the other end's reservation), then the owner's
  // reservations skip what is gone.
  const KeyId skip = a.id_of(0, 26);
  ASSERT_TRUE(a.take({skip}, false));
  used.insert(skip);
  const auto rest = a.reserve(a.available_parity(0), 0, kT0);
  EXPECT_EQ(rest.size(), 5u);
  for (const auto& id : rest) EXPECT_FALSE(used.contains(id));
  EXPECT_EQ(a.release_expired(kT0 + std::chrono::hours{1}, milliseconds{1}), 5u);
  const auto again = a.reserve(5, 0, kT0);
  EXPECT_EQ(again, rest);  // lapsed reservations come back, consumed keys do not
  // Resync: same counts, nothing comes back; a rekey starting at the counts starts empty.
  ASSERT_TRUE(a.trim_to(a.minted()));
  EXPECT_EQ(a.count_parity(0), 5u);
  a.rekey(secret_of(1).data(), a.minted());
  EXPECT_EQ(a.size(), 0u);
  for (const auto& id : used) EXPECT_FALSE(a.take({id}, false));
  push_keys(0, 3, a);
  for (const auto& id : a.reserve(3, 0, kT0)) EXPECT_FALSE(used.contains(id));
}

// reserve() hands out the oldest available keys of the asked parity only.
TEST(KeyStore, ReservesOldestFirstByParity) {
  auto store = make_store();
  std::vector<KeyId> even;
  std::vector<KeyId> odd;
  for (int i = 0; i < 6; ++i) {
    even.push_back(push_keys(0, 1, store)[0]);
    odd.push_back(push_keys(1, 1, store)[0]);
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
  auto store = make_store();
  push_keys(0, 3, store);
  push_keys(1, 10, store);
  EXPECT_TRUE(store.reserve(4, 0, kT0).empty());
  EXPECT_TRUE(store.reserve(0, 0, kT0).empty());
  EXPECT_EQ(store.count(KeyState::kAvailable), 13u);
  EXPECT_EQ(store.count(KeyState::kReserved), 0u);
  EXPECT_EQ(store.available_parity(0), 3u);
}

// A store without a secret holds nothing and mints nothing.
TEST(KeyStore, UnkeyedStoreIsEmpty) {
  KeyStore s("L12", "KM2", "KM1", kCapacityBytes);
  EXPECT_FALSE(s.keyed());
  EXPECT_EQ(s.size(), 0u);
  EXPECT_TRUE(s.reserve(1, 0, kT0).empty());
  EXPECT_FALSE(s.take({make_store().id_of(0, 0)}, false));
  EXPECT_ANY_THROW(s.mint({1, 1}));
}

// allocate() needs every ID stored, reserved and distinct; otherwise nothing changes.
TEST(KeyStore, AllocateStateRules) {
  auto store = make_store();
  const auto ids = push_keys(0, 4, store);
  const auto reserved = store.reserve(2, 0, kT0);
  ASSERT_EQ(reserved.size(), 2u);
  const KeyId missing = store.id_of(0, 4);  // not minted yet

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
  auto store = make_store();
  auto twin = make_store();
  const auto ids = push_keys(0, 4, store, &twin);
  const auto reserved = store.reserve(2, 0, kT0);
  ASSERT_TRUE(store.allocate(reserved));
  const KeyId missing = store.id_of(1, 0);

  EXPECT_FALSE(store.take({reserved[0], missing}, true));
  EXPECT_FALSE(store.take({reserved[0], reserved[0]}, true));
  EXPECT_FALSE(store.take({reserved[0], ids[2]}, true));   // available, not allocated
  EXPECT_FALSE(store.take({ids[2], reserved[0]}, false));  // allocated, not available
  EXPECT_EQ(store.size(), 4u);

  auto got = store.take({reserved[1], reserved[0]}, true);
  auto expect = twin.take({ids[1], ids[0]}, false);
  ASSERT_TRUE(got && expect);
  ASSERT_EQ(got->size(), 2u);
  EXPECT_EQ((*got)[0].id, ids[1]);
  EXPECT_EQ((*got)[0].bytes, (*expect)[0].bytes);
  EXPECT_EQ((*got)[1].id, ids[0]);
  EXPECT_EQ((*got)[1].bytes, (*expect)[1].bytes);
  EXPECT_EQ(store.size(), 2u);
  EXPECT_FALSE(store.take({reserved[0]}, true));  // already taken

  // The far end of a hop takes available keys by ID, wherever they sit.
  auto far = store.take({ids[3]}, false);
  ASSERT_TRUE(far);
  EXPECT_EQ((*far)[0].id, ids[3]);
  EXPECT_EQ(store.size(), 1u);
  EXPECT_EQ(store.count(KeyState::kAvailable), 1u);
  EXPECT_EQ(store.count(KeyState::kAllocated), 0u);
  EXPECT_EQ(store.count_parity(0), 1u);
  EXPECT_EQ(store.reserve(1, 0, kT0), std::vector<KeyId>{ids[2]});
}

// Expired reservations return to the pool in their original (oldest-first) position.
TEST(KeyStore, ReleaseExpiredWithInjectedTime) {
  auto store = make_store();
  const auto ids = push_keys(0, 6, store);
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
  auto store = make_store();
  push_keys(1, 3, store);
  const auto ids = store.reserve(3, 1, kT0);
  ASSERT_TRUE(store.allocate(ids));
  EXPECT_EQ(store.release_expired(kT0 + std::chrono::hours{1}, milliseconds{1}), 0u);
  EXPECT_EQ(store.count(KeyState::kAllocated), 3u);
}

// Issue 12: a release gives back only the named holder's reservations, in their old place
// (offered first again); an allocation naming a holder takes only its reservations.
TEST(KeyStore, ReleaseReturnsTheHoldersReservationsInPlace) {
  auto store = make_store();
  const auto all = push_keys(0, 6, store);
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

// Discards remove keys: held ones of a holder (allocated, or reserved too), available ones of
// one parity (the peer's half), and allocations older than a lease; the rest stays.
TEST(KeyStore, DiscardHeldAvailableAndExpiredAllocations) {
  auto store = make_store();
  const auto even = push_keys(0, 4, store);
  const auto odd = push_keys(1, 4, store);
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

// trim_to() drops the blocks minted at or above the given counts (held ones too), refuses
// counts above what the store holds; clear() drops every key and never reuses an ID.
TEST(KeyStore, TrimToAndClear) {
  auto store = make_store();
  push_keys(0, 6, store);
  push_keys(1, 4, store);
  const auto r0 = store.reserve(6, 0, kT0);
  ASSERT_TRUE(store.allocate({r0[5]}));
  EXPECT_FALSE(store.trim_to({7, 4}));
  EXPECT_EQ(store.size(), 10u);
  ASSERT_TRUE(store.trim_to({4, 3}));
  EXPECT_EQ(store.size(), 7u);
  EXPECT_EQ(store.minted(), (std::array<std::uint64_t, 2>{4, 3}));
  EXPECT_EQ(store.count(KeyState::kReserved), 4u);
  EXPECT_EQ(store.count(KeyState::kAllocated), 0u);
  EXPECT_FALSE(store.take({r0[5]}, false));
  // Minting again makes the trimmed blocks anew (the peer never stored them: never used).
  push_keys(0, 2, store);
  EXPECT_EQ(store.available_parity(0), 2u);
  EXPECT_EQ(store.reserve(2, 0, kT0), (std::vector<KeyId>{r0[4], r0[5]}));
  store.clear();
  EXPECT_EQ(store.size(), 0u);
  EXPECT_EQ(store.count(KeyState::kReserved), 0u);
  EXPECT_EQ(store.available_parity(0) + store.available_parity(1), 0u);
  push_keys(0, 1, store);
  EXPECT_EQ(store.reserve(1, 0, kT0), std::vector<KeyId>{store.id_of(0, 6)});
}

// Each half gets half of min(own, peer) capacity minus stored and in-flight keys.
TEST(KeyStore, CapacityPerHalf) {
  auto store = make_store();
  EXPECT_EQ(store.capacity_bits(), 64 * kKeyBits);
  EXPECT_EQ(store.capacity_bits_per_half(), 32 * kKeyBits);
  EXPECT_EQ(store.generation_room(INT64_MAX, {0, 0}), (std::array<std::int64_t, 2>{32, 32}));
  EXPECT_EQ(store.generation_room(16 * kKeyBits, {0, 0}), (std::array<std::int64_t, 2>{8, 8}));
  push_keys(0, 10, store);
  push_keys(1, 30, store);
  EXPECT_EQ(store.generation_room(INT64_MAX, {5, 1}), (std::array<std::int64_t, 2>{17, 1}));
  EXPECT_EQ(store.generation_room(INT64_MAX, {0, 5}), (std::array<std::int64_t, 2>{22, 0}));
  EXPECT_EQ(store.generation_room(16 * kKeyBits, {0, 0}), (std::array<std::int64_t, 2>{0, 0}));
}

// split_by_room() fills the half with more room first, then evenly; never beyond the room.
TEST(KeyStore, SplitByRoom) {
  using A = std::array<std::int64_t, 2>;
  EXPECT_EQ(split_by_room(5, {10, 2}, 0), (A{5, 0}));
  EXPECT_EQ(split_by_room(10, {10, 2}, 0), (A{9, 1}));
  EXPECT_EQ(split_by_room(11, {10, 2}, 0), (A{10, 1}));
  EXPECT_EQ(split_by_room(11, {10, 2}, 1), (A{9, 2}));
  EXPECT_EQ(split_by_room(4, {3, 3}, 1), (A{2, 2}));
  EXPECT_EQ(split_by_room(3, {3, 3}, 1), (A{1, 2}));
  EXPECT_EQ(split_by_room(100, {3, 4}, 0), (A{3, 4}));
  EXPECT_EQ(split_by_room(7, {0, 0}, 0), (A{0, 0}));
  EXPECT_EQ(split_by_room(-1, {5, 5}, 0), (A{0, 0}));
}

// The pool grows at the key rate (injected elapsed time) up to its capacity, then pauses
// without banking credit; a stall never ends in a burst beyond one second's worth.
TEST(KeyStore, PoolGrowsAtRateUpToCapacity) {
  auto store = make_store(3, std::size_t{256} * 32);  // 128 keys per half
  MintCredit credit;
  const double rate = 10 * kKeyBits;  // 10 keys/s
  std::int64_t minted = 0;
  std::uint32_t seq = 0;
  auto tick = [&](double seconds) {
    credit.accrue(rate, seconds);
    const auto room = store.generation_room(INT64_MAX, {0, 0});
    const auto n = credit.spend(room[0] + room[1], 1 << 24);
    store.mint(split_by_room(n, room, seq++));
    minted += n;
  };
  for (int i = 0; i < 10; ++i) tick(0.1);  // one second in 100 ms ticks
  EXPECT_NEAR(static_cast<double>(minted), 10, 1);
  for (int i = 0; i < 90; ++i) tick(0.1);  // ten seconds
  EXPECT_NEAR(static_cast<double>(store.size()), 100, 1);
  EXPECT_EQ(store.added_bits_total(), static_cast<std::int64_t>(store.size()) * kKeyBits);
  tick(60);  // a one-minute stall: at most one second's worth (plus a key) comes at once
  EXPECT_LE(store.size(), 112u);
  for (int i = 0; i < 400; ++i) tick(0.1);
  EXPECT_EQ(store.size(), 256u);  // full: both halves at capacity
  EXPECT_EQ(store.count_parity(0), 128u);
  tick(0.1);
  EXPECT_EQ(store.size(), 256u);
  EXPECT_LT(credit.bits(), kKeyBits);  // no credit banked while full
  // Consumption frees room: generation resumes at the rate, not in a burst.
  const auto r = store.reserve(50, 0, kT0);
  ASSERT_TRUE(store.allocate(r));
  ASSERT_TRUE(store.take(r, true));
  tick(1.0);
  EXPECT_NEAR(static_cast<double>(store.size()), 216, 1);
  EXPECT_EQ(store.count_parity(1), 128u);  // the new keys went to the half with room
}

// One-way demand: only the primary's half (parity 0) is consumed, round after round, with the
// generator rule of KmHost::generate (room per half, split_by_room). The unused half fills up,
// but room for parity 0 never disappears and every request is served.
TEST(KeyStore, OneWayDemandKeepsGenerating) {
  auto primary = make_store(12);
  auto secondary = make_store(12);
  constexpr std::size_t kPerRequest = 4;
  constexpr std::int64_t kPerTick = 6;  // generation outpaces demand: the store fills
  std::size_t served = 0;
  for (int round = 0; round < 500; ++round) {
    const auto room = primary.generation_room(secondary.capacity_bits(), {0, 0});
    const auto add = split_by_room(std::min(kPerTick, room[0] + room[1]), room,
                                   static_cast<std::uint32_t>(round));
    secondary.mint(add);  // the secondary stores exactly what the primary mints
    primary.mint(add);
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

// Memory per idle link is O(1): a pool of a trillion keys tracks no entry and takes no key
// memory beyond the secret; consumption in order keeps it so; only keys held or consumed out of
// order are tracked, and they are forgotten once consumption catches up.
TEST(KeyStore, IdleLinkMemoryIsConstant) {
  const auto before = secure::arena_stats().bytes_in_use;
  auto store = make_store(5, std::size_t{1} << 40);
  const auto keyed = secure::arena_stats().bytes_in_use;
  EXPECT_LE(keyed - before, 64u);  // the secret
  store.mint({std::int64_t{1} << 39, std::int64_t{1} << 39});
  EXPECT_EQ(store.size(), std::size_t{1} << 40);
  EXPECT_EQ(store.tracked_entries(), 0u);
  EXPECT_EQ(secure::arena_stats().bytes_in_use, keyed);
  for (int i = 0; i < 1000; ++i) {
    const auto r = store.reserve(8, i % 2, kT0);
    ASSERT_TRUE(store.allocate(r));
    ASSERT_TRUE(store.take(r, true));
  }
  EXPECT_EQ(store.tracked_entries(), 0u);
  const auto r = store.reserve(8, 0, kT0);
  EXPECT_EQ(store.tracked_entries(), 8u);  // held
  ASSERT_TRUE(store.take({store.id_of(1, 4000 + 5)}, false));
  EXPECT_EQ(store.tracked_entries(), 9u);  // consumed out of order
  ASSERT_TRUE(store.allocate(r));
  ASSERT_TRUE(store.take(r, true));
  ASSERT_TRUE(store.take({store.id_of(1, 4000), store.id_of(1, 4001), store.id_of(1, 4002),
                          store.id_of(1, 4003), store.id_of(1, 4004)},
                         false));
  EXPECT_EQ(store.tracked_entries(), 0u);
  EXPECT_EQ(secure::arena_stats().bytes_in_use, keyed);
}

}  // namespace
}  // namespace qkdn::agent

namespace qkdn::agent {
namespace {

// parse_key_id() reads canonical UUID text in either case, in one pass, and refuses the rest.
TEST(KeyId, ParseRoundTripAndRejects) {
  auto store = make_store(9);
  const KeyId id = store.id_of(1, 12345);
  EXPECT_EQ(parse_key_id(key_id_to_string(id)), id);
  std::string upper = key_id_to_string(id);
  for (auto& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  EXPECT_EQ(parse_key_id(upper), id);
  EXPECT_FALSE(parse_key_id(""));
  EXPECT_FALSE(parse_key_id("00000000-0000-4000-8000-00000000000"));    // short
  EXPECT_FALSE(parse_key_id("00000000-0000-4000-8000-0000000000000"));  // long
  EXPECT_FALSE(parse_key_id("00000000-0000-4000-8000x000000000000"));   // no dash
  EXPECT_FALSE(parse_key_id("0000000-00000-4000-8000-000000000000"));   // dash moved
  EXPECT_FALSE(parse_key_id("00000000-0000-4000-8000-00000000000g"));   // not hex
  EXPECT_TRUE(parse_key_id("00000000-0000-4000-8000-000000000000"));
}

// Y.3803 Table 1 (1) generation time stamp under lazy emulation: the mint log gives each block
// the interval (after, at] of the mint that stored it, exactly while the log holds every mint
// still stored, widened (never wrong) once marks merge; taken blocks carry it; a cut mint keeps
// its time for the blocks below the cut, and blocks minted again above it get the new time.
TEST(KeyStore, MintLogGivesEachBlockItsGenerationInterval) {
  using std::chrono::seconds;
  const SysTime t0{seconds{1'800'000'000}};
  KeyStore s("L12", "KM1", "KM2", kCapacityBytes);
  s.rekey(secret_of(3).data(), {0, 0}, t0);
  EXPECT_EQ(s.qkd_module_id(), "qkdm:L12:KM1");
  EXPECT_EQ(s.matching_qkd_module_id(), "qkdm:L12:KM2");
  s.mint({2, 0}, t0 + seconds{1});
  s.mint({3, 1}, t0 + seconds{2});
  EXPECT_EQ(s.generated(0, 0), std::make_pair(t0, t0 + seconds{1}));
  EXPECT_EQ(s.generated(0, 1), std::make_pair(t0, t0 + seconds{1}));
  EXPECT_EQ(s.generated(0, 4), std::make_pair(t0 + seconds{1}, t0 + seconds{2}));
  EXPECT_EQ(s.generated(1, 0), std::make_pair(t0, t0 + seconds{2}));
  const auto taken = s.take({s.id_of(0, 3)}, false);
  ASSERT_TRUE(taken);
  EXPECT_EQ((*taken)[0].created_after, t0 + seconds{1});
  EXPECT_EQ((*taken)[0].created, t0 + seconds{2});

  // Many more mints than marks: every block's interval holds its true time; the newest
  // (kMintLogEntries - 1) mints are exact.
  KeyStore m("L12", "KM1", "KM2", std::size_t{4096} * 32);
  m.rekey(secret_of(4).data(), {0, 0}, t0);
  constexpr int kMints = 40;
  for (int i = 1; i <= kMints; ++i) m.mint({1, 0}, t0 + seconds{i});
  for (int i = 1; i <= kMints; ++i) {
    const auto [after, at] = m.generated(0, static_cast<std::uint64_t>(i - 1));
    EXPECT_LT(after, t0 + seconds{i}) << i;
    EXPECT_GE(at, t0 + seconds{i}) << i;
    if (i > kMints - static_cast<int>(KeyStore::kMintLogEntries) + 1) {
      EXPECT_EQ(after, t0 + seconds{i - 1}) << i;
      EXPECT_EQ(at, t0 + seconds{i}) << i;
    }
  }
  // Consumed from the front: the next mint drops the marks of blocks no longer stored, and the
  // oldest stored block's lower bound moves up to the last dropped mark.
  std::vector<KeyId> front;
  front.reserve(30);
  for (int i = 0; i < 30; ++i) front.push_back(m.id_of(0, static_cast<std::uint64_t>(i)));
  ASSERT_TRUE(m.take(front, false));
  m.mint({1, 0}, t0 + seconds{kMints + 1});
  EXPECT_EQ(m.generated(0, 30), std::make_pair(t0 + seconds{30}, t0 + seconds{31}));

  // trim_to: the mint cut in the middle keeps its time below the cut; blocks minted again
  // above it get the new mint's time.
  KeyStore c("L12", "KM1", "KM2", kCapacityBytes);
  c.rekey(secret_of(5).data(), {0, 0}, t0);
  c.mint({4, 0}, t0 + seconds{1});
  ASSERT_TRUE(c.trim_to({2, 0}));
  c.mint({2, 0}, t0 + seconds{5});
  EXPECT_EQ(c.generated(0, 1), std::make_pair(t0, t0 + seconds{1}));
  EXPECT_EQ(c.generated(0, 2), std::make_pair(t0 + seconds{1}, t0 + seconds{5}));
}

}  // namespace
}  // namespace qkdn::agent
