// MemoryStore: the Store interface in memory with PgStore's rules (the same cases as
// integration_db's ledger and batch tests), so the service can be tested without PostgreSQL.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <stdexcept>
#include <string>
#include <vector>

#include "qkdn/controller/error.hpp"
#include "qkdn/controller/memory_store.hpp"

namespace qkdn::controller {
namespace {

LedgerEntry ledger_entry(const std::string& key_id, const std::string& relay_id,
                         const std::string& state) {
  LedgerEntry e;
  e.key_id = key_id;
  e.link_id = "L12";
  e.km_id = "KM1";
  e.peer_km_id = "KM2";
  e.relay_id = relay_id;
  e.state = state;
  if (state == "reserved" || state == "allocated") {
    e.lease_expires_at = SysTime{std::chrono::seconds{1'700'000'300}};
  }
  e.updated_at = SysTime{std::chrono::seconds{1'700'000'000}};
  return e;
}

const LedgerEntry* find(const std::vector<LedgerEntry>& ledger, const std::string& key_id) {
  const auto it = std::find_if(ledger.begin(), ledger.end(),
                               [&](const LedgerEntry& e) { return e.key_id == key_id; });
  return it == ledger.end() ? nullptr : &*it;
}

// reserved -> allocated -> consumed, and reserved -> released; final states lose their lease.
TEST(MemoryStore, LedgerLifecycle) {
  MemoryStore s;
  s.apply_ledger("b1",
                 {ledger_entry("k1", "r1", "reserved"), ledger_entry("k2", "r1", "reserved")});
  s.apply_ledger("b2", {ledger_entry("k1", "r1", "allocated")});
  s.apply_ledger("b3",
                 {ledger_entry("k1", "r1", "consumed"), ledger_entry("k2", "r1", "released")});
  const auto st = s.load();
  ASSERT_EQ(st.ledger.size(), 2u);
  EXPECT_EQ(find(st.ledger, "k1")->state, "consumed");
  EXPECT_FALSE(find(st.ledger, "k1")->lease_expires_at.has_value());
  EXPECT_EQ(find(st.ledger, "k2")->state, "released");
}

// A key of another relay or link, a final key, a forbidden transition: Conflict, and nothing of
// that batch applies (nor is its idempotency key recorded).
TEST(MemoryStore, LedgerConflictsApplyNothing) {
  MemoryStore s;
  s.apply_ledger("b1", {ledger_entry("k1", "r1", "reserved")});
  EXPECT_THROW(s.apply_ledger("b2", {ledger_entry("k9", "r2", "reserved"),
                                     ledger_entry("k1", "r2", "reserved")}),
               Conflict);
  EXPECT_EQ(s.load().ledger.size(), 1u);
  EXPECT_FALSE(s.ledger_batch_committed("b2"));
  EXPECT_THROW(s.apply_ledger("x1", {ledger_entry("k5", "r1", "consumed")}), Conflict);
  EXPECT_THROW(s.apply_ledger("x2", {ledger_entry("k1", "r1", "consumed")}), Conflict);
  auto moved = ledger_entry("k1", "r1", "allocated");
  moved.link_id = "L23";
  EXPECT_THROW(s.apply_ledger("x3", {moved}), Conflict);
  s.apply_ledger("b3", {ledger_entry("k1", "r1", "allocated")});
  s.apply_ledger("b4", {ledger_entry("k1", "r1", "consumed")});
  EXPECT_THROW(s.apply_ledger("x4", {ledger_entry("k1", "r1", "reserved")}), Conflict);
  EXPECT_THROW(s.apply_ledger("x5", {ledger_entry("k1", "r3", "reserved")}), Conflict);
  // One batch may move a key twice (reserved then allocated).
  s.apply_ledger("b5",
                 {ledger_entry("k7", "r1", "reserved"), ledger_entry("k7", "r1", "allocated")});
  EXPECT_EQ(find(s.load().ledger, "k7")->state, "allocated");
}

// The same idempotency key twice applies once (an in-doubt commit can be retried).
TEST(MemoryStore, LedgerBatchesAreIdempotent) {
  MemoryStore s;
  s.apply_ledger("b1", {ledger_entry("k1", "r1", "reserved")});
  s.apply_ledger("b2", {ledger_entry("k1", "r1", "allocated")});
  EXPECT_NO_THROW(s.apply_ledger("b1", {ledger_entry("k1", "r1", "reserved")}));
  EXPECT_EQ(s.load().ledger[0].state, "allocated");
  EXPECT_TRUE(s.ledger_batch_committed("b1"));
  EXPECT_THROW(s.apply_ledger("", {}), InvalidArgument);
}

// write_batch is all or nothing, even when the body swallows the failure; reads are refused
// inside it; writes after a failed one are refused.
TEST(MemoryStore, BatchesAreAllOrNothing) {
  MemoryStore s;
  EXPECT_TRUE(s.write_batch([](Store& b) {
    b.apply_ledger("b1", {ledger_entry("k1", "r1", "reserved")});
    AuditRecord a;
    a.action = "PUT /api/v1/topology";
    b.append_audit(a);
  }));
  EXPECT_EQ(s.load().ledger.size(), 1u);
  EXPECT_EQ(s.audit(0, 10).size(), 1u);
  bool later_write_refused = false;
  EXPECT_THROW(s.write_batch([&](Store& b) {
    b.apply_ledger("b2", {ledger_entry("k2", "r1", "reserved")});
    try {
      b.apply_ledger("b3", {ledger_entry("k1", "r9", "reserved")});  // Conflict
    } catch (const Conflict&) {
    }
    try {
      b.save_alarm(Alarm{});
    } catch (const Internal&) {
      later_write_refused = true;
    }
  }),
               Conflict);  // the batch's first failure, although the body swallowed it
  EXPECT_TRUE(later_write_refused);
  EXPECT_EQ(s.load().ledger.size(), 1u);
  EXPECT_FALSE(s.ledger_batch_committed("b2"));
  EXPECT_THROW(s.write_batch([](Store& b) { b.load(); }), Internal);
  EXPECT_THROW(s.write_batch([](Store&) { throw std::runtime_error("body"); }), std::runtime_error);
  EXPECT_EQ(s.load().ledger.size(), 1u);
  EXPECT_EQ(s.audit(0, 10).size(), 1u);
}

// Records round-trip; accounting adds per bucket; audit ids ascend; alarms give next_alarm_id.
TEST(MemoryStore, RecordsRoundTrip) {
  MemoryStore s;
  const SysTime t0{std::chrono::minutes{28'000'000}};
  AccountingRecord acc{t0, "SAE-A", "s1", 32, 1};
  s.add_accounting(acc);
  s.add_accounting(acc);
  s.add_accounting({t0 + std::chrono::minutes{1}, "SAE-B", "s2", 64, 2});
  auto rows = s.accounting(t0, t0 + std::chrono::minutes{2}, "");
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0].key_bytes, 64);
  EXPECT_EQ(rows[0].keys, 2);
  EXPECT_EQ(s.accounting(t0, t0 + std::chrono::minutes{2}, "SAE-B").size(), 1u);
  EXPECT_EQ(s.append_audit({}), 1);
  EXPECT_EQ(s.append_audit({}), 2);
  EXPECT_EQ(s.audit(1, 10).size(), 1u);
  Alarm a;
  a.id = 7;
  s.save_alarm(a);
  PolicyRecord p{"", "", "fixed_rate", {{"interval_s", 5}}};
  s.save_policy(p);
  s.save_policy({"KM1", "KM2", "manual", {}});
  s.delete_policy("KM1", "KM2");
  Thresholds bad;
  bad.qber = 0;
  EXPECT_THROW(s.save_thresholds(bad), InvalidArgument);
  const auto st = s.load();
  EXPECT_EQ(st.next_alarm_id, 8u);
  ASSERT_EQ(st.policies.size(), 1u);
  EXPECT_EQ(st.policies[0].mode, "fixed_rate");
  EXPECT_FALSE(st.thresholds.has_value());
}

// An unavailable store refuses every call with Unavailable, and says so in healthy().
TEST(MemoryStore, Outage) {
  MemoryStore s;
  s.set_available(false);
  EXPECT_FALSE(s.healthy());
  EXPECT_THROW(s.load(), Unavailable);
  EXPECT_THROW(s.save_relay({}), Unavailable);
  EXPECT_THROW(s.apply_ledger("b1", {ledger_entry("k1", "r1", "reserved")}), Unavailable);
  s.set_available(true);
  EXPECT_TRUE(s.healthy());
  EXPECT_NO_THROW(s.apply_ledger("b1", {ledger_entry("k1", "r1", "reserved")}));
}

}  // namespace
}  // namespace qkdn::controller
