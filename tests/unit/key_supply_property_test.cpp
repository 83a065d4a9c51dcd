// Randomized property test of the relay state machine and the ledger together: thousands of
// operations (starts, answers in any order, NGs, replayed and duplicate answers, replayed key IDs,
// timeouts, disconnects) with a fixed seed. After every step: no key ID is allocated or consumed
// twice, every ledger row is a legal transition of its key within one link and KM pair (and one
// relay, except a key released before allocation that its hop reserves again), every release
// reaches the hop's KM (a ReleaseCommand per released row), and the per-link counters equal a
// model rebuilt from the rows.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <set>

#include "key_supply_test_util.hpp"
#include "qkdn/controller/relays.hpp"
#include "qkdn/controller/routing.hpp"

namespace qkdn::controller::testing {
namespace {

using std::chrono::milliseconds;

struct KeyModel {
  std::string state;
  std::string relay_id;
  std::string link_id;
  std::string km_id;
  std::string peer_km_id;
  int allocations = 0;
  int consumptions = 0;
  int reservations = 0;
};

class Checker {
 public:
  void apply(const RelayOutput& out) {
    for (const auto& e : entries_of(out)) apply(e);
    // Every released row is released at its hop's KM in the same output.
    for (const auto& e : entries_of(out)) {
      if (e.state != "released") continue;
      const bool told = std::any_of(out.release.begin(), out.release.end(), [&](const auto& c) {
        return c.relay_id == e.relay_id && c.km_id == e.km_id && c.next_kma_id == e.peer_km_id &&
               c.link_id == e.link_id && !c.discard &&
               std::find(c.key_ids.begin(), c.key_ids.end(), e.key_id) != c.key_ids.end();
      });
      EXPECT_TRUE(told) << e.key_id << " released without telling " << e.km_id;
    }
    // A discard names only keys the ledger can never take again.
    for (const auto& c : out.release) {
      if (!c.discard) continue;
      for (const auto& k : c.key_ids) {
        const auto it = keys_.find(k);
        if (it == keys_.end()) continue;  // unknown to the ledger (malformed answers)
        EXPECT_TRUE(it->second.allocations > 0 || it->second.km_id != c.km_id ||
                    it->second.link_id != c.link_id)
            << k << " discarded although it could be reserved again";
      }
    }
    for (const auto& r : out.finished) {
      if (r.state != RelayState::kRelayed) continue;
      for (const auto& h : r.hops) {
        for (const auto& k : h.key_ids) EXPECT_EQ(keys_.at(k).state, "consumed") << k;
      }
    }
  }

  void expect_counters(const ReservationLedger& ledger) const {
    std::map<std::string, LinkCounters> model;
    std::size_t live = 0;
    for (const auto& [id, k] : keys_) {
      LinkCounters& c = model[k.link_id];
      if (k.state == "reserved") ++c.reserved;
      if (k.state == "allocated") ++c.allocated;
      if (k.state == "consumed") ++c.consumed;
      if (k.state == "released") ++c.released;
      if (k.state == "reserved" || k.state == "allocated") ++live;
    }
    EXPECT_EQ(ledger.all_counters(), model);
    EXPECT_EQ(ledger.live_count(), live);
    EXPECT_EQ(ledger.seen_count(), keys_.size());
  }

  [[nodiscard]] const std::map<std::string, KeyModel>& keys() const { return keys_; }

 private:
  void apply(const LedgerEntry& e) {
    auto it = keys_.find(e.key_id);
    if (it == keys_.end()) {
      ASSERT_EQ(e.state, "reserved") << e.key_id;
      ASSERT_TRUE(e.lease_expires_at.has_value());
      keys_[e.key_id] = {e.state, e.relay_id, e.link_id, e.km_id, e.peer_km_id, 0, 0, 1};
      return;
    }
    KeyModel& k = it->second;
    ASSERT_EQ(k.link_id, e.link_id) << e.key_id;
    ASSERT_EQ(k.km_id, e.km_id) << e.key_id;
    ASSERT_EQ(k.peer_km_id, e.peer_km_id) << e.key_id;
    // Released before any allocation: its hop may reserve it again, under any relay.
    const bool again = k.state == "released" && e.state == "reserved" && k.allocations == 0;
    if (!again) {
      ASSERT_EQ(k.relay_id, e.relay_id) << e.key_id;
    }
    const bool legal =
        again || (k.state == "reserved" && (e.state == "allocated" || e.state == "released")) ||
        (k.state == "allocated" && (e.state == "consumed" || e.state == "released"));
    ASSERT_TRUE(legal) << e.key_id << ": " << k.state << " -> " << e.state;
    ASSERT_EQ(e.lease_expires_at.has_value(), e.state == "allocated" || e.state == "reserved");
    ASSERT_EQ(e.ever_allocated, k.allocations > 0 || e.state == "allocated") << e.key_id;
    if (again) {
      ++k.reservations;
      k.relay_id = e.relay_id;
    }
    k.state = e.state;
    if (e.state == "allocated") {
      ASSERT_EQ(++k.allocations, 1) << e.key_id;
    }
    if (e.state == "consumed") {
      ASSERT_EQ(++k.consumptions, 1) << e.key_id;
    }
  }

  std::map<std::string, KeyModel> keys_;
};

/// Six KMs in a ring with two chords; parallel links K0-K1.
std::shared_ptr<const TopologySnapshot> lab_snapshot() {
  TopologyDoc doc;
  doc.name = "prop";
  for (int i = 0; i < 6; ++i) {
    const std::string km = "K" + std::to_string(i);
    doc.kms.push_back({km, km});
  }
  auto link = [&](const std::string& id, int a, int b) {
    doc.links.push_back({id, "K" + std::to_string(a), "K" + std::to_string(b), 1e4, 1, 0.01});
  };
  for (int i = 0; i < 6; ++i) link("R" + std::to_string(i), i, (i + 1) % 6);
  link("C03", 0, 3);
  link("C14", 1, 4);
  link("P01", 0, 1);
  LiveState live;
  live.defaults.pool_bits = 1'000'000;
  return TopologySnapshot::from_doc(doc, live);
}

std::size_t pick(Random& rng, std::size_t n) {
  return static_cast<std::size_t>(rng.next_u64() % n);
}

// Thousands of random operations never allocate or consume a key ID twice and keep the per-link
// counters equal to the ledger rows.
TEST(KeySupplyProperty, RandomOperations) {
  const auto snap = lab_snapshot();
  ManualClock clock{kT0};
  SeededRandom ids{1};
  SeededRandom keys{2};
  SeededRandom dice{20'241'122};
  ReservationLedger ledger{ids};
  RelayConfig cfg;
  cfg.max_finished = 200;
  RelayTable table{ledger, ids, cfg};
  Checker check;

  std::vector<ReserveCommand> reserves;
  std::vector<AllocateCommand> allocs;
  std::vector<RelayRequestCommand> requests;
  std::vector<ReserveCommand> answered_reserves;  // for duplicate answers
  Strings seen_keys;                              // for replayed key IDs
  std::size_t relayed = 0;

  auto take = [&](RelayOutput out) {
    check.apply(out);
    for (auto& c : out.reserve) reserves.push_back(std::move(c));
    for (auto& c : out.allocate) allocs.push_back(std::move(c));
    for (auto& c : out.relay_requests) requests.push_back(std::move(c));
    for (const auto& r : out.finished) relayed += r.state == RelayState::kRelayed ? 1 : 0;
    for (const auto& e : entries_of(out)) {
      if (e.state == "reserved") seen_keys.push_back(e.key_id);
    }
  };
  auto pop = [&](auto& v) {
    const std::size_t i = pick(dice, v.size());
    auto c = std::move(v[i]);
    v[i] = std::move(v.back());
    v.pop_back();
    return c;
  };

  constexpr int kSteps = 10'000;
  for (int step = 0; step < kSteps; ++step) {
    const std::size_t op = pick(dice, 100);
    if (op < 14) {
      RelayRequest req;
      const std::size_t a = pick(dice, 6);
      const std::size_t b = (a + 1 + pick(dice, 5)) % 6;
      req.src_km = "K" + std::to_string(a);
      req.dst_km = "K" + std::to_string(b);
      req.number_of_keys = static_cast<std::int64_t>(1 + pick(dice, 3));
      RouteOptions opts;
      opts.k = 3;
      opts.require_connected = false;
      req.routes = compute_routes(*snap, req.src_km, req.dst_km, opts);
      ASSERT_FALSE(req.routes.empty());
      take(table.start(req, clock.now()));
    } else if (op < 50 && !reserves.empty()) {
      const ReserveCommand c = pop(reserves);
      const std::size_t kind = pick(dice, 20);
      if (kind == 0) {
        take(table.on_reservation_failed(c.relay_id, c.hop, "insufficient_keys", "", clock.now()));
      } else {
        auto n = static_cast<std::size_t>(c.number_of_keys);
        if (kind == 1) n = n + 1;  // wrong count
        Strings k = fresh_keys(keys, n);
        if (kind == 2 && !seen_keys.empty()) k[0] = seen_keys[pick(dice, seen_keys.size())];
        take(table.on_reserved(c.relay_id, c.hop, k, clock.now()));
      }
      answered_reserves.push_back(c);
    } else if (op < 72 && !allocs.empty()) {
      const AllocateCommand c = pop(allocs);
      if (pick(dice, 15) == 0) {
        take(table.on_allocation_failed(c.relay_id, c.hop, "", "", clock.now()));
      } else {
        take(table.on_allocated(c.relay_id, c.hop, clock.now()));
        if (pick(dice, 10) == 0) take(table.on_allocated(c.relay_id, c.hop, clock.now()));
      }
    } else if (op < 86 && !requests.empty()) {
      const RelayRequestCommand c = pop(requests);
      const bool ok = pick(dice, 8) != 0;
      take(table.on_relay_response(c.relay_id, ok, ok ? "" : "NG: relay_failure", clock.now()));
      if (pick(dice, 10) == 0) take(table.on_relay_response(c.relay_id, true, "", clock.now()));
    } else if (op < 90 && !answered_reserves.empty()) {
      // A duplicate 0x140B for a hop answered before, with fresh or replayed keys.
      const ReserveCommand& c = answered_reserves[pick(dice, answered_reserves.size())];
      Strings k = fresh_keys(keys, static_cast<std::size_t>(c.number_of_keys));
      if (pick(dice, 2) == 0 && !seen_keys.empty()) k[0] = seen_keys[pick(dice, seen_keys.size())];
      take(table.on_reserved(c.relay_id, c.hop, k, clock.now()));
    } else if (op < 98) {
      clock.advance(milliseconds{static_cast<std::int64_t>(pick(dice, 4'000))});
      take(table.expire(clock.now()));
    } else {
      take(table.on_km_disconnected("K" + std::to_string(pick(dice, 6)), clock.now()));
    }
    if (::testing::Test::HasFatalFailure()) return;
    if (step % 50 == 0) check.expect_counters(ledger);
  }
  check.expect_counters(ledger);

  // Long after the last step every relay has ended and nothing is held.
  // (Each expiry may start the next alternative route, at most max_attempts in all.)
  for (std::size_t i = 0; i < cfg.max_attempts; ++i) {
    clock.advance(std::chrono::minutes{5});
    take(table.expire(clock.now()));
  }
  check.expect_counters(ledger);
  EXPECT_EQ(ledger.live_count(), 0u);
  EXPECT_TRUE(table.open_relays().empty());
  // The run exercised the interesting paths.
  EXPECT_GT(relayed, 50u);
  EXPECT_GT(check.keys().size(), 3'000u);
  std::size_t released = 0;
  std::size_t reserved_again = 0;
  for (const auto& [id, k] : check.keys()) {
    released += k.state == "released" ? 1 : 0;
    reserved_again += k.reservations > 1 ? 1 : 0;
  }
  EXPECT_GT(released, 500u);
  EXPECT_GT(reserved_again, 20u) << "replayed keys released before allocation come back";
}

}  // namespace
}  // namespace qkdn::controller::testing
