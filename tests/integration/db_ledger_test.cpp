// The reservation ledger in PostgreSQL: state transitions enforced by the database, a key ID
// taken once ever, idempotent batches.
#include <gtest/gtest.h>

#include <algorithm>

#include "db_test_support.hpp"

namespace qkdn::db::test {
namespace {

using controller::LedgerEntry;

const LedgerEntry* find(const std::vector<LedgerEntry>& ledger, const std::string& key_id) {
  const auto it = std::find_if(ledger.begin(), ledger.end(),
                               [&](const LedgerEntry& e) { return e.key_id == key_id; });
  return it == ledger.end() ? nullptr : &*it;
}

// A key goes reserved → allocated → consumed; the lease disappears once it is final.
TEST_F(DbTest, LedgerLifecycle) {
  store_->apply_ledger(
      "b1", {ledger_entry("k1", "r1", "reserved"), ledger_entry("k2", "r1", "reserved")});
  store_->apply_ledger("b2", {ledger_entry("k1", "r1", "allocated")});
  store_->apply_ledger(
      "b3", {ledger_entry("k1", "r1", "consumed"), ledger_entry("k2", "r1", "released")});
  const auto st = store_->load();
  ASSERT_EQ(st.ledger.size(), 2u);
  const LedgerEntry* k1 = find(st.ledger, "k1");
  ASSERT_NE(k1, nullptr);
  EXPECT_EQ(k1->state, "consumed");
  EXPECT_EQ(k1->relay_id, "r1");
  EXPECT_EQ(k1->link_id, "L12");
  EXPECT_EQ(k1->km_id, "KM1");
  EXPECT_EQ(k1->peer_km_id, "KM2");
  EXPECT_FALSE(k1->lease_expires_at.has_value());
  EXPECT_EQ(k1->updated_at, SysTime{std::chrono::seconds{1'700'000'000}});
  EXPECT_EQ(find(st.ledger, "k2")->state, "released");
}

// A reserved key keeps its lease; reserving it again in the same relay renews the lease.
TEST_F(DbTest, LedgerLeaseRenewal) {
  store_->apply_ledger("b1", {ledger_entry("k1", "r1", "reserved")});
  auto renewed = ledger_entry("k1", "r1", "reserved");
  renewed.lease_expires_at = *renewed.lease_expires_at + std::chrono::seconds{60};
  store_->apply_ledger("b2", {renewed});
  const auto st = store_->load();
  ASSERT_EQ(st.ledger.size(), 1u);
  EXPECT_EQ(st.ledger[0].lease_expires_at, renewed.lease_expires_at);
}

// A key ID already in the ledger for another relay is a Conflict, and nothing of that batch is
// applied (nor its idempotency key recorded).
TEST_F(DbTest, LedgerDuplicateKeyIdIsConflict) {
  store_->apply_ledger("b1", {ledger_entry("k1", "r1", "reserved")});
  EXPECT_THROW(store_->apply_ledger("b2", {ledger_entry("k9", "r2", "reserved"),
                                           ledger_entry("k1", "r2", "reserved")}),
               Conflict);
  const auto st = store_->load();
  ASSERT_EQ(st.ledger.size(), 1u);
  EXPECT_EQ(st.ledger[0].relay_id, "r1");
  EXPECT_FALSE(store_->ledger_batch_committed("b2"));
  // A consumed key can never come back, in any relay.
  store_->apply_ledger("b3", {ledger_entry("k1", "r1", "allocated")});
  store_->apply_ledger("b4", {ledger_entry("k1", "r1", "consumed")});
  EXPECT_THROW(store_->apply_ledger("b5", {ledger_entry("k1", "r1", "reserved")}), Conflict);
  EXPECT_THROW(store_->apply_ledger("b6", {ledger_entry("k1", "r3", "reserved")}), Conflict);
}

// Forbidden transitions are Conflicts: unknown key straight to consumed/released, reserved →
// consumed, released → allocated, a key moving to another link.
TEST_F(DbTest, LedgerBadTransitionsAreConflicts) {
  EXPECT_THROW(store_->apply_ledger("x1", {ledger_entry("k1", "r1", "consumed")}), Conflict);
  EXPECT_THROW(store_->apply_ledger("x2", {ledger_entry("k1", "r1", "released")}), Conflict);
  store_->apply_ledger("b1", {ledger_entry("k1", "r1", "reserved")});
  EXPECT_THROW(store_->apply_ledger("x3", {ledger_entry("k1", "r1", "consumed")}), Conflict);
  auto moved = ledger_entry("k1", "r1", "allocated");
  moved.link_id = "L23";
  EXPECT_THROW(store_->apply_ledger("x4", {moved}), Conflict);
  store_->apply_ledger("b2", {ledger_entry("k1", "r1", "released")});
  EXPECT_THROW(store_->apply_ledger("x5", {ledger_entry("k1", "r1", "allocated")}), Conflict);
  EXPECT_THROW(store_->apply_ledger("x6", {ledger_entry("k5", "r1", "bogus")}), InvalidArgument);
  EXPECT_THROW(store_->apply_ledger("", {ledger_entry("k2", "r1", "reserved")}), InvalidArgument);
  const auto st = store_->load();
  ASSERT_EQ(st.ledger.size(), 1u);
  EXPECT_EQ(st.ledger[0].state, "released");
}

// Issue 12 (migration 0004): a key released before allocation may be reserved again by its hop
// (same link and KMs) under another relay; the database itself keeps ever_allocated, so a key
// that was allocated never comes back, whatever a writer sends; another hop never takes it; a
// key moves to another relay only from released.
TEST_F(DbTest, LedgerKeyReleasedBeforeAllocationIsReservedAgainByItsHop) {
  store_->apply_ledger(
      "b1", {ledger_entry("k1", "r1", "reserved"), ledger_entry("k2", "r1", "reserved")});
  store_->apply_ledger(
      "b2", {ledger_entry("k1", "r1", "released"), ledger_entry("k2", "r1", "allocated")});
  store_->apply_ledger("b3", {ledger_entry("k2", "r1", "released")});
  auto st = store_->load();
  EXPECT_FALSE(find(st.ledger, "k1")->ever_allocated);
  EXPECT_TRUE(find(st.ledger, "k2")->ever_allocated);

  // k1 comes back under r2; k2 never, in no relay.
  store_->apply_ledger("b4", {ledger_entry("k1", "r2", "reserved")});
  EXPECT_THROW(store_->apply_ledger("x1", {ledger_entry("k2", "r2", "reserved")}), Conflict);
  EXPECT_THROW(store_->apply_ledger("x2", {ledger_entry("k2", "r1", "reserved")}), Conflict);
  st = store_->load();
  EXPECT_EQ(find(st.ledger, "k1")->relay_id, "r2");
  EXPECT_EQ(find(st.ledger, "k1")->state, "reserved");
  EXPECT_TRUE(find(st.ledger, "k1")->lease_expires_at.has_value());
  EXPECT_FALSE(find(st.ledger, "k1")->ever_allocated);
  EXPECT_EQ(find(st.ledger, "k2")->state, "released");

  // A live key does not change relay; a released one does not change hop.
  EXPECT_THROW(store_->apply_ledger("x3", {ledger_entry("k1", "r3", "reserved")}), Conflict);
  store_->apply_ledger("b5", {ledger_entry("k1", "r2", "released")});
  auto other_km = ledger_entry("k1", "r3", "reserved");
  other_km.km_id = "KM2";
  other_km.peer_km_id = "KM1";
  EXPECT_THROW(store_->apply_ledger("x4", {other_km}), Conflict);
  auto other_link = ledger_entry("k1", "r3", "reserved");
  other_link.link_id = "L23";
  EXPECT_THROW(store_->apply_ledger("x5", {other_link}), Conflict);
  // Nor to any state but reserved.
  EXPECT_THROW(store_->apply_ledger("x6", {ledger_entry("k1", "r3", "allocated")}), Conflict);

  // Reserved again, allocated, released: final for good.
  store_->apply_ledger("b6", {ledger_entry("k1", "r3", "reserved")});
  store_->apply_ledger("b7", {ledger_entry("k1", "r3", "allocated")});
  store_->apply_ledger("b8", {ledger_entry("k1", "r3", "released")});
  EXPECT_THROW(store_->apply_ledger("x7", {ledger_entry("k1", "r4", "reserved")}), Conflict);
  EXPECT_FALSE(store_->ledger_batch_committed("x7"));

  // The flag cannot be cleared, not even with raw SQL: a released key refuses any update, and
  // a live one keeps the flag it has.
  EXPECT_ANY_THROW(sql("UPDATE ledger SET ever_allocated = false WHERE key_id = 'k2'"));
  EXPECT_EQ(sql("SELECT ever_allocated FROM ledger WHERE key_id = 'k2'"), "t");
  EXPECT_THROW(store_->apply_ledger("x8", {ledger_entry("k2", "r4", "reserved")}), Conflict);
  // A key inserted straight as allocated carries the flag.
  store_->apply_ledger("b9", {ledger_entry("k3", "r5", "allocated")});
  EXPECT_EQ(sql("SELECT ever_allocated FROM ledger WHERE key_id = 'k3'"), "t");
  sql("UPDATE ledger SET ever_allocated = false WHERE key_id = 'k3'");
  EXPECT_EQ(sql("SELECT ever_allocated FROM ledger WHERE key_id = 'k3'"), "t");
  st = store_->load();
  EXPECT_TRUE(find(st.ledger, "k1")->ever_allocated);
  EXPECT_TRUE(find(st.ledger, "k3")->ever_allocated);
}

// Applying a batch twice under one idempotency key applies it once: the second call is a no-op
// even if its entries would now be invalid.
TEST_F(DbTest, LedgerBatchesAreIdempotent) {
  EXPECT_FALSE(store_->ledger_batch_committed("b1"));
  const std::vector<LedgerEntry> batch{ledger_entry("k1", "r1", "reserved"),
                                       ledger_entry("k2", "r1", "reserved")};
  store_->apply_ledger("b1", batch);
  EXPECT_TRUE(store_->ledger_batch_committed("b1"));
  store_->apply_ledger("b1", batch);
  store_->apply_ledger("b1", {ledger_entry("k1", "r9", "consumed")});
  const auto st = store_->load();
  ASSERT_EQ(st.ledger.size(), 2u);
  EXPECT_EQ(find(st.ledger, "k1")->state, "reserved");
  EXPECT_EQ(sql("SELECT entries FROM ledger_batches WHERE idempotency_key = 'b1'"), "2");
  // An empty batch still records its key.
  store_->apply_ledger("empty", {});
  EXPECT_TRUE(store_->ledger_batch_committed("empty"));
}

// One batch may move the same key twice (reserve then allocate): applied in order.
TEST_F(DbTest, LedgerBatchMayMoveOneKeyTwice) {
  store_->apply_ledger(
      "b1", {ledger_entry("k1", "r1", "reserved"), ledger_entry("k2", "r1", "reserved"),
             ledger_entry("k1", "r1", "allocated"), ledger_entry("k1", "r1", "consumed")});
  const auto st = store_->load();
  ASSERT_EQ(st.ledger.size(), 2u);
  EXPECT_EQ(find(st.ledger, "k1")->state, "consumed");
  EXPECT_EQ(find(st.ledger, "k2")->state, "reserved");
}

// Ledger rows cannot be deleted, even with raw SQL: a key ID exists once, ever.
TEST_F(DbTest, LedgerRowsCannotBeDeleted) {
  store_->apply_ledger("b1", {ledger_entry("k1", "r1", "reserved")});
  EXPECT_ANY_THROW(sql("DELETE FROM ledger"));
  EXPECT_ANY_THROW(sql("TRUNCATE ledger"));
  EXPECT_EQ(sql("SELECT count(*) FROM ledger"), "1");
}

// Large batches (one statement per batch) keep every entry.
TEST_F(DbTest, LedgerLargeBatch) {
  std::vector<LedgerEntry> batch;
  for (int i = 0; i < 1000; ++i) {
    batch.push_back(ledger_entry("key-" + std::to_string(i), "r1", "reserved"));
  }
  store_->apply_ledger("big", batch);
  EXPECT_EQ(store_->load().ledger.size(), 1000u);
}

}  // namespace
}  // namespace qkdn::db::test
