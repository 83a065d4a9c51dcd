// PgStore against a real PostgreSQL: migrations, every Store operation round trip, and the
// mapping of constraint violations to domain errors.
#include <gtest/gtest.h>

#include <chrono>
#include <limits>
#include <thread>

#include "db_test_support.hpp"

namespace qkdn::db::test {
namespace {

using namespace std::chrono_literals;
using controller::Alarm;
using controller::AlarmState;
using controller::Severity;

const SysTime kT0{std::chrono::seconds{1'700'000'000}};

// A fresh database gets every embedded migration, recorded in schema_version; a second start is
// a no-op.
TEST_F(DbTest, MigratesEmptyDatabaseOnceAndRecordsVersions) {
  const auto& all = embedded_migrations();
  ASSERT_FALSE(all.empty());
  EXPECT_EQ(all.front().version, 1);
  EXPECT_EQ(all.front().name, "0001_initial");
  std::vector<int> expected;
  expected.reserve(all.size());
  for (const auto& m : all) expected.push_back(m.version);
  EXPECT_EQ(store_->schema_versions(), expected);
  EXPECT_EQ(store_->migrate(), 0);
  PgStore again{PgStoreOptions{dsn_}};
  EXPECT_EQ(again.schema_versions(), expected);
  EXPECT_EQ(sql("SELECT count(*) FROM schema_version"), std::to_string(all.size()));
  EXPECT_EQ(sql("SELECT name FROM schema_version WHERE version = 1"), "0001_initial");
  EXPECT_EQ(sql("SELECT name FROM schema_version WHERE version = 2"), "0002_thresholds");
  EXPECT_EQ(sql("SELECT name FROM schema_version WHERE version = 3"), "0003_km_coordinates");
  EXPECT_EQ(sql("SELECT name FROM schema_version WHERE version = 4"),
            "0004_ledger_release_before_allocation");
  EXPECT_EQ(sql("SELECT name FROM schema_version WHERE version = 5"), "0005_controller_epoch");
  EXPECT_EQ(sql("SELECT name FROM schema_version WHERE version = 7"), "0007_link_weight");
}

// The controller epoch (migration 0005) only grows: every call, from any connection, returns
// more than every call before it; it starts above the wall clock in ms at migration time (the
// epochs of controllers before the migration), and does not follow the wall clock after it.
TEST_F(DbTest, ControllerEpochSequenceOnlyGrows) {
  const auto wall_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                           std::chrono::system_clock::now().time_since_epoch())
                           .count();
  const std::int64_t first = store_->next_controller_epoch();
  EXPECT_GE(first, wall_ms - 60'000);
  PgStore other{PgStoreOptions{dsn_, false}};
  std::int64_t last = first;
  for (int i = 0; i < 5; ++i) {
    const std::int64_t a = other.next_controller_epoch();
    const std::int64_t b = store_->next_controller_epoch();
    EXPECT_GT(a, last);
    EXPECT_GT(b, a);
    last = b;
  }
  EXPECT_EQ(last, first + 10);
}

// Concurrent starters on an empty database serialise on the advisory lock: all succeed, once.
TEST(DbMigration, ConcurrentStartersApplyMigrationsOnce) {
  const std::string dsn = PgServer::fresh_database();
  std::vector<std::thread> threads;
  threads.reserve(4);
  std::atomic<int> applied{0};
  std::atomic<int> failures{0};
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&] {
      try {
        PgStore s{PgStoreOptions{dsn, false}};
        applied += s.migrate();
      } catch (const std::exception&) {
        ++failures;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(applied.load(), static_cast<int>(embedded_migrations().size()));
}

// With migrate = false nothing is created until migrate() is called.
TEST(DbMigration, NoMigrationWhenDisabled) {
  const std::string dsn = PgServer::fresh_database();
  PgStore s{PgStoreOptions{dsn, false}};
  EXPECT_TRUE(s.schema_versions().empty());
  EXPECT_TRUE(s.healthy());
  EXPECT_EQ(s.migrate(), static_cast<int>(embedded_migrations().size()));
  EXPECT_FALSE(s.schema_versions().empty());
}

// The store answers health checks; an empty database loads as an empty state.
TEST_F(DbTest, EmptyLoad) {
  EXPECT_TRUE(store_->healthy());
  const auto st = store_->load();
  EXPECT_FALSE(st.topology.has_value());
  EXPECT_TRUE(st.link_configs.empty());
  EXPECT_TRUE(st.ledger.empty());
  EXPECT_EQ(st.next_alarm_id, 1u);
}

void expect_same_topology(const controller::TopologyDoc& a, const controller::TopologyDoc& b) {
  EXPECT_EQ(a.name, b.name);
  ASSERT_EQ(a.kms.size(), b.kms.size());
  for (std::size_t i = 0; i < a.kms.size(); ++i) {
    EXPECT_EQ(a.kms[i].km_id, b.kms[i].km_id);
    EXPECT_EQ(a.kms[i].site, b.kms[i].site);
    EXPECT_EQ(a.kms[i].lat, b.kms[i].lat) << a.kms[i].km_id;
    EXPECT_EQ(a.kms[i].lon, b.kms[i].lon) << a.kms[i].km_id;
    EXPECT_EQ(a.kms[i].trust_level, b.kms[i].trust_level) << a.kms[i].km_id;
    EXPECT_EQ(a.kms[i].tags, b.kms[i].tags) << a.kms[i].km_id;
  }
  ASSERT_EQ(a.links.size(), b.links.size());
  for (std::size_t i = 0; i < a.links.size(); ++i) {
    EXPECT_EQ(a.links[i].link_id, b.links[i].link_id);
    EXPECT_EQ(a.links[i].a, b.links[i].a);
    EXPECT_EQ(a.links[i].b, b.links[i].b);
    EXPECT_DOUBLE_EQ(a.links[i].key_rate_bps, b.links[i].key_rate_bps);
    EXPECT_DOUBLE_EQ(a.links[i].distance_km, b.links[i].distance_km);
    EXPECT_DOUBLE_EQ(a.links[i].qber, b.links[i].qber);
    EXPECT_EQ(a.links[i].weight, b.links[i].weight) << a.links[i].link_id;
  }
  ASSERT_EQ(a.applications.size(), b.applications.size());
  for (std::size_t i = 0; i < a.applications.size(); ++i) {
    EXPECT_EQ(a.applications[i].sae_id, b.applications[i].sae_id);
    EXPECT_EQ(a.applications[i].km_id, b.applications[i].km_id);
  }
}

// A topology round-trips in document order; replacing it keeps the link configs of links that
// stay and drops those of links that go.
TEST_F(DbTest, TopologyRoundTripAndReplace) {
  auto doc = sample_topology();
  doc.kms[0].lat = 35.686123456789;  // site coordinates round-trip exactly; others stay absent
  doc.kms[0].lon = 139.766;
  store_->save_topology(doc);
  auto st = store_->load();
  ASSERT_TRUE(st.topology.has_value());
  expect_same_topology(*st.topology, doc);

  store_->save_link_config({"L12", "maintenance", 0.05, 1000});
  store_->save_link_config({"L34", "disabled", std::nullopt, std::nullopt});

  doc.name = "metro-test-2";
  doc.links.pop_back();  // L34 goes
  doc.kms.pop_back();    // KM4 goes
  doc.kms.insert(doc.kms.begin(), {"KM0", "new"});
  doc.links.push_back({"L01", "KM0", "KM1", 1, 2, 0.5});
  doc.applications[1].km_id = "KM0";
  store_->save_topology(doc);
  st = store_->load();
  ASSERT_TRUE(st.topology.has_value());
  expect_same_topology(*st.topology, doc);
  ASSERT_EQ(st.link_configs.size(), 1u);
  EXPECT_EQ(st.link_configs[0].link_id, "L12");
  EXPECT_EQ(st.link_configs[0].admin_state, "maintenance");
}

// The interworking part (migration 0009): QKDN ID, gateway KMs, peers with their policy, and
// inter-QKDN links survive a reload, and are replaced with the document (a removed peer and its
// links go; a KM that stops being a gateway is one no more).
TEST_F(DbTest, InterworkingRoundTripAndReplace) {
  EXPECT_EQ(sql("SELECT name FROM schema_version WHERE version = 9"), "0009_interworking");
  auto doc = sample_topology();
  doc.qkdn_id = "QKDN-A";
  doc.kms[0].gateway = true;
  doc.kms[1].gateway = true;
  doc.peers = {{"QKDN-B", "ctl-b.example:4170", "ctl-b", {{doc.applications[0].sae_id}, 0.5}},
               {"QKDN-C", "", "ctl-c", {{}, 0}}};
  doc.inter_qkdn_links = {{"X1", doc.kms[0].km_id, "QKDN-B", "GWB1", 2000},
                          {"X2", doc.kms[1].km_id, "QKDN-C", "GWC1", 0}};
  store_->save_topology(doc);
  auto st = store_->load();
  ASSERT_TRUE(st.topology.has_value());
  EXPECT_EQ(st.topology->qkdn_id, "QKDN-A");
  EXPECT_TRUE(st.topology->kms[0].gateway);
  EXPECT_TRUE(st.topology->kms[1].gateway);
  EXPECT_FALSE(st.topology->kms[2].gateway);
  ASSERT_EQ(st.topology->peers.size(), 2u);
  EXPECT_EQ(st.topology->peers[0].endpoint, "ctl-b.example:4170");
  EXPECT_EQ(st.topology->peers[0].identity, "ctl-b");
  EXPECT_EQ(st.topology->peers[0].policy.reachable_saes, doc.peers[0].policy.reachable_saes);
  EXPECT_EQ(st.topology->peers[0].policy.key_rate_share, 0.5);
  ASSERT_EQ(st.topology->inter_qkdn_links.size(), 2u);
  EXPECT_EQ(st.topology->inter_qkdn_links[0].peer_km_id, "GWB1");
  EXPECT_EQ(st.topology->inter_qkdn_links[0].key_rate_bps, 2000);

  doc.kms[1].gateway = false;
  doc.peers.pop_back();
  doc.inter_qkdn_links.pop_back();
  store_->save_topology(doc);
  st = store_->load();
  ASSERT_TRUE(st.topology.has_value());
  EXPECT_FALSE(st.topology->kms[1].gateway);
  ASSERT_EQ(st.topology->peers.size(), 1u);
  ASSERT_EQ(st.topology->inter_qkdn_links.size(), 1u);
  EXPECT_EQ(st.topology->inter_qkdn_links[0].link_id, "X1");
}

// An inconsistent document is refused as InvalidArgument and changes nothing.
TEST_F(DbTest, TopologyConstraintViolations) {
  store_->save_topology(sample_topology());
  auto bad = sample_topology();
  bad.links[0].b = "KM9";
  EXPECT_THROW(store_->save_topology(bad), InvalidArgument);
  bad = sample_topology();
  bad.kms.push_back(bad.kms[0]);
  EXPECT_THROW(store_->save_topology(bad), InvalidArgument);
  bad = sample_topology();
  bad.links[0].qber = 1.5;
  EXPECT_THROW(store_->save_topology(bad), InvalidArgument);
  bad = sample_topology();
  bad.links[0].b = bad.links[0].a;
  EXPECT_THROW(store_->save_topology(bad), InvalidArgument);
  bad = sample_topology();
  bad.applications[0].km_id = "nowhere";
  EXPECT_THROW(store_->save_topology(bad), InvalidArgument);
  const auto st = store_->load();
  ASSERT_TRUE(st.topology.has_value());
  expect_same_topology(*st.topology, sample_topology());
}

// Link configs: upsert, optional fields, delete; invalid admin state and unknown link refused.
TEST_F(DbTest, LinkConfigRoundTrip) {
  store_->save_topology(sample_topology());
  store_->save_link_config({"L12", "enabled", 0.07, 123456789012});
  store_->save_link_config({"L23", "disabled", std::nullopt, std::nullopt});
  store_->save_link_config({"L12", "maintenance", std::nullopt, 5});
  auto st = store_->load();
  ASSERT_EQ(st.link_configs.size(), 2u);
  EXPECT_EQ(st.link_configs[0].link_id, "L12");
  EXPECT_EQ(st.link_configs[0].admin_state, "maintenance");
  EXPECT_FALSE(st.link_configs[0].qber_threshold.has_value());
  EXPECT_EQ(st.link_configs[0].pool_floor_bits, 5u);
  EXPECT_EQ(st.link_configs[1].admin_state, "disabled");

  EXPECT_THROW(store_->save_link_config({"L12", "broken", std::nullopt, std::nullopt}),
               InvalidArgument);
  EXPECT_THROW(store_->save_link_config({"L99", "enabled", std::nullopt, std::nullopt}),
               InvalidArgument);
  EXPECT_THROW(store_->save_link_config({"L12", "enabled", 2.0, std::nullopt}), InvalidArgument);

  store_->delete_link_config("L12");
  store_->delete_link_config("L12");  // deleting what is gone is a no-op
  st = store_->load();
  ASSERT_EQ(st.link_configs.size(), 1u);
  EXPECT_EQ(st.link_configs[0].link_id, "L23");
}

// Network-wide thresholds: none stored loads as none; saving replaces the one row; values out of
// range are refused as InvalidArgument and change nothing.
TEST_F(DbTest, ThresholdsRoundTrip) {
  EXPECT_FALSE(store_->load().thresholds.has_value());
  controller::Thresholds t;
  t.qber = 0.07;
  t.pool_floor_bits = 4096;
  t.qber_hysteresis = 0.25;
  store_->save_thresholds(t);
  t.qber = 0.05;
  store_->save_thresholds(t);
  store_->save_thresholds(t);
  auto st = store_->load();
  ASSERT_TRUE(st.thresholds.has_value());
  EXPECT_DOUBLE_EQ(st.thresholds->qber, 0.05);
  EXPECT_EQ(st.thresholds->pool_floor_bits, 4096u);
  EXPECT_DOUBLE_EQ(st.thresholds->qber_hysteresis, 0.25);
  EXPECT_EQ(sql("SELECT count(*) FROM thresholds"), "1");

  auto bad = t;
  bad.qber = 1.5;
  EXPECT_THROW(store_->save_thresholds(bad), InvalidArgument);
  bad = t;
  bad.qber = 0;
  EXPECT_THROW(store_->save_thresholds(bad), InvalidArgument);
  bad = t;
  bad.qber_hysteresis = 1.0;
  EXPECT_THROW(store_->save_thresholds(bad), InvalidArgument);
  bad = t;
  bad.pool_floor_bits = std::numeric_limits<std::uint64_t>::max();
  EXPECT_THROW(store_->save_thresholds(bad), InvalidArgument);
  st = store_->load();
  ASSERT_TRUE(st.thresholds.has_value());
  EXPECT_DOUBLE_EQ(st.thresholds->qber, 0.05);
}

// Policies: network-wide and per pair, parameters kept exactly, upsert and delete.
TEST_F(DbTest, PolicyRoundTrip) {
  store_->save_policy({"", "", "fixed_rate", {{"interval_s", 10}, {"threshold", 0.125}}});
  store_->save_policy({"KM1", "KM3", "manual", {}});
  store_->save_policy({"KM1", "KM3", "scheduled", {{"lead_s", 1e-7}}});
  auto st = store_->load();
  ASSERT_EQ(st.policies.size(), 2u);
  EXPECT_EQ(st.policies[0].src_km, "");
  EXPECT_EQ(st.policies[0].mode, "fixed_rate");
  EXPECT_EQ(st.policies[0].params,
            (std::map<std::string, double>{{"interval_s", 10}, {"threshold", 0.125}}));
  EXPECT_EQ(st.policies[1].dst_km, "KM3");
  EXPECT_EQ(st.policies[1].mode, "scheduled");
  EXPECT_EQ(st.policies[1].params.at("lead_s"), 1e-7);

  EXPECT_THROW(store_->save_policy({"", "", "random", {}}), InvalidArgument);
  EXPECT_THROW(store_->save_policy({"KM1", "", "manual", {}}), InvalidArgument);

  store_->delete_policy("KM1", "KM3");
  st = store_->load();
  ASSERT_EQ(st.policies.size(), 1u);
  EXPECT_EQ(st.policies[0].mode, "fixed_rate");
}

// The operator's link weight (migration 0007) round-trips exactly, is replaced with the document,
// defaults to 1 for rows written without it, and the database refuses weights the model refuses.
TEST_F(DbTest, LinkWeightRoundTrip) {
  auto doc = sample_topology();
  doc.links[0].weight = 2.5;
  doc.links[1].weight = 1e-3;
  store_->save_topology(doc);
  auto st = store_->load();
  ASSERT_TRUE(st.topology.has_value());
  expect_same_topology(*st.topology, doc);
  doc.links[0].weight = 1;
  doc.links[1].weight = 1e6;
  store_->save_topology(doc);
  st = store_->load();
  expect_same_topology(*st.topology, doc);
  // A row written without a weight (as before the migration) weighs 1.
  sql("INSERT INTO links (link_id, a, b, key_rate_bps, ord) VALUES ('LX', '" + doc.kms[0].km_id +
      "', '" + doc.kms[1].km_id + "', 5, 99)");
  EXPECT_EQ(sql("SELECT weight FROM links WHERE link_id = 'LX'"), "1");
  for (double w : {0.0, -1.0, 2e6}) {
    auto bad = doc;
    bad.links[0].weight = w;
    EXPECT_THROW(store_->save_topology(bad), InvalidArgument) << w;
  }
  EXPECT_THROW(sql("UPDATE links SET weight = 0 WHERE link_id = 'LX'"), std::exception);
}

// Issue 20: KM trust levels and tags, a policy's avoided tags and SAE pair constraints
// round-trip; the database refuses what the model refuses (trust level out of range, negative
// max_intermediates); deleting SAE constraints removes them.
TEST_F(DbTest, TrustRoundTrip) {
  auto doc = sample_topology();
  doc.kms[0].trust_level = 0;
  doc.kms[0].tags = {"operator:acme", "jurisdiction:DE", "quote\"and,comma"};
  doc.kms[1].trust_level = 100;
  doc.kms[2].tags = {"site:colo"};  // tags without a level; kms[3] neither
  store_->save_topology(doc);
  auto st = store_->load();
  ASSERT_TRUE(st.topology.has_value());
  expect_same_topology(*st.topology, doc);
  EXPECT_EQ(st.topology->kms[0].tags.size(), 3u);
  EXPECT_FALSE(st.topology->kms[3].trust_level.has_value());

  // Replacing the document replaces trust too (an upsert must not keep the old values).
  doc.kms[0].trust_level.reset();
  doc.kms[0].tags.clear();
  doc.kms[1].trust_level = 42;
  store_->save_topology(doc);
  st = store_->load();
  expect_same_topology(*st.topology, doc);

  auto bad = doc;
  bad.kms[1].trust_level = 101;
  EXPECT_THROW(store_->save_topology(bad), InvalidArgument);

  controller::PolicyRecord p{"", "", "manual", {{"min_trust_level", 60}}, {"jurisdiction:XX"}};
  store_->save_policy(p);
  store_->save_policy({"KM1", "KM3", "manual", {{"max_intermediates", 1}}, {}});
  st = store_->load();
  ASSERT_EQ(st.policies.size(), 2u);
  EXPECT_EQ(st.policies[0].avoid_tags, (std::vector<std::string>{"jurisdiction:XX"}));
  EXPECT_EQ(st.policies[0].params.at("min_trust_level"), 60);
  EXPECT_TRUE(st.policies[1].avoid_tags.empty());

  controller::SaeConstraintRecord a{"SAE-A", "SAE-B", 2, 70, {"operator:x", "site:y"}, kT0};
  controller::SaeConstraintRecord b{"SAE-B", "SAE-A", std::nullopt, 0, {}, kT0};
  store_->save_sae_constraints(a);
  store_->save_sae_constraints(b);
  a.min_trust_level = 80;  // upsert
  store_->save_sae_constraints(a);
  st = store_->load();
  ASSERT_EQ(st.sae_constraints.size(), 2u);
  const auto& la = st.sae_constraints[0];
  EXPECT_EQ(la.src_sae, "SAE-A");
  EXPECT_EQ(la.max_intermediates, std::optional<std::int64_t>(2));
  EXPECT_EQ(la.min_trust_level, 80);
  EXPECT_EQ(la.avoid_tags, a.avoid_tags);
  EXPECT_EQ(la.updated_at, kT0);
  EXPECT_FALSE(st.sae_constraints[1].max_intermediates.has_value());
  EXPECT_TRUE(st.sae_constraints[1].avoid_tags.empty());

  controller::SaeConstraintRecord broken{"SAE-C", "SAE-D", -1, 0, {}, kT0};
  EXPECT_THROW(store_->save_sae_constraints(broken), InvalidArgument);
  broken = {"SAE-C", "SAE-C", std::nullopt, 0, {}, kT0};
  EXPECT_THROW(store_->save_sae_constraints(broken), InvalidArgument);

  store_->delete_sae_constraints("SAE-A", "SAE-B");
  store_->delete_sae_constraints("SAE-X", "SAE-Y");  // absent: a no-op
  st = store_->load();
  ASSERT_EQ(st.sae_constraints.size(), 1u);
  EXPECT_EQ(st.sae_constraints[0].src_sae, "SAE-B");
}

// Schedules round-trip with their times to the microsecond; a window ending before it starts is
// refused.
TEST_F(DbTest, ScheduleRoundTrip) {
  controller::ScheduleRecord s;
  s.schedule_id = "4f5c8a3e-0000-4000-8000-000000000001";
  s.src_km = "KM1";
  s.dst_km = "KM3";
  s.number_of_keys = 100;
  s.key_size_bits = 256;
  s.not_before = kT0 + 1234567us;
  s.not_after = kT0 + 1h;
  s.created_at = kT0 - 1s;
  store_->save_schedule(s);
  auto st = store_->load();
  ASSERT_EQ(st.schedules.size(), 1u);
  EXPECT_EQ(st.schedules[0].schedule_id, s.schedule_id);
  EXPECT_EQ(st.schedules[0].not_before, s.not_before);
  EXPECT_EQ(st.schedules[0].not_after, s.not_after);
  EXPECT_EQ(st.schedules[0].created_at, s.created_at);
  EXPECT_EQ(st.schedules[0].number_of_keys, 100);

  auto bad = s;
  bad.schedule_id = "other";
  bad.not_after = bad.not_before - 1s;
  EXPECT_THROW(store_->save_schedule(bad), InvalidArgument);

  store_->delete_schedule(s.schedule_id);
  EXPECT_TRUE(store_->load().schedules.empty());
}

// Pinned routes keep their KM and link lists, including awkward characters.
TEST_F(DbTest, PinnedRouteRoundTrip) {
  controller::PinnedRouteRecord r{"KM1", "KM3", {"KM1", "KM,2\"x", "KM3"}, {"L12", "L\\23"}, kT0};
  store_->save_pinned_route(r);
  store_->save_pinned_route({"KM3", "KM1", {"KM3", "KM1"}, {}, kT0});
  auto st = store_->load();
  ASSERT_EQ(st.pinned_routes.size(), 2u);
  EXPECT_EQ(st.pinned_routes[0].kms, r.kms);
  EXPECT_EQ(st.pinned_routes[0].links, r.links);
  EXPECT_EQ(st.pinned_routes[0].created_at, kT0);
  EXPECT_TRUE(st.pinned_routes[1].links.empty());
  EXPECT_THROW(store_->save_pinned_route({"KM1", "KM2", {"KM1"}, {}, kT0}), InvalidArgument);
  store_->delete_pinned_route("KM1", "KM3");
  st = store_->load();
  ASSERT_EQ(st.pinned_routes.size(), 1u);
  EXPECT_EQ(st.pinned_routes[0].src_km, "KM3");
}

controller::SessionRecord session(const std::string& id, const std::string& state, SysTime t) {
  controller::SessionRecord s;
  s.session_id = id;
  s.src_sae = "SAE-A";
  s.dst_sae = "SAE-B";
  s.src_km = "KM1";
  s.dst_km = "KM3";
  s.keys_requested = 10;
  s.keys_delivered = 3;
  s.state = state;
  s.created_at = t;
  s.updated_at = t + 1s;
  return s;
}

// Sessions upsert by ID; expires_at is optional; an unknown state is refused.
TEST_F(DbTest, SessionRoundTrip) {
  auto s = session("s1", "active", kT0);
  s.expires_at = kT0 + 30s;
  store_->save_session(s);
  store_->save_session(session("s2", "pending", kT0 + 1s));
  s.keys_delivered = 10;
  s.state = "closed";
  store_->save_session(s);
  auto st = store_->load();
  ASSERT_EQ(st.sessions.size(), 2u);
  EXPECT_EQ(st.sessions[0].session_id, "s1");
  EXPECT_EQ(st.sessions[0].state, "closed");
  EXPECT_EQ(st.sessions[0].keys_delivered, 10);
  EXPECT_EQ(st.sessions[0].expires_at, kT0 + 30s);
  EXPECT_EQ(st.sessions[0].updated_at, kT0 + 1s);
  EXPECT_FALSE(st.sessions[1].expires_at.has_value());
  EXPECT_THROW(store_->save_session(session("s3", "zombie", kT0)), InvalidArgument);
}

// load() keeps every open session and relay but only the most recent finished ones.
TEST(DbHistory, LoadBoundsFinishedHistory) {
  PgStoreOptions options{PgServer::fresh_database()};
  options.history_limit = 2;
  PgStore store{options};
  for (int i = 0; i < 5; ++i) {
    store.save_session(
        session("done" + std::to_string(i), "closed", kT0 + std::chrono::seconds{i}));
  }
  store.save_session(session("open", "active", kT0 - 1h));
  const auto st = store.load();
  ASSERT_EQ(st.sessions.size(), 3u);
  EXPECT_EQ(st.sessions[0].session_id, "open");
  EXPECT_EQ(st.sessions[1].session_id, "done3");
  EXPECT_EQ(st.sessions[2].session_id, "done4");
}

// Relays upsert by ID with their routes.
TEST_F(DbTest, RelayRoundTrip) {
  controller::RelayRecord r;
  r.relay_id = "r1";
  r.session_id = "s1";
  r.src_km = "KM1";
  r.dst_km = "KM3";
  r.route_kms = {"KM1", "KM2", "KM3"};
  r.route_links = {"L12", "L23"};
  r.number_of_keys = 4;
  r.key_size_bits = 512;
  r.state = "requested";
  r.created_at = kT0;
  r.updated_at = kT0;
  store_->save_relay(r);
  r.state = "failed";
  r.reason = "peer \"KM2\" unreachable, NULL";
  r.updated_at = kT0 + 2s;
  store_->save_relay(r);
  auto st = store_->load();
  ASSERT_EQ(st.relays.size(), 1u);
  EXPECT_EQ(st.relays[0].state, "failed");
  EXPECT_EQ(st.relays[0].reason, r.reason);
  EXPECT_EQ(st.relays[0].route_kms, r.route_kms);
  EXPECT_EQ(st.relays[0].route_links, r.route_links);
  EXPECT_EQ(st.relays[0].key_size_bits, 512);
  EXPECT_EQ(st.relays[0].updated_at, kT0 + 2s);
  r.relay_id = "r2";
  r.state = "lost";
  EXPECT_THROW(store_->save_relay(r), InvalidArgument);
}

Alarm alarm(std::uint64_t id, const std::string& resource, AlarmState state) {
  Alarm a;
  a.id = id;
  a.type = "qber_high";
  a.resource = resource;
  a.link_id = resource;
  a.severity = Severity::kMinor;
  a.state = state;
  a.raised_at = kT0;
  a.updated_at = kT0 + 1s;
  if (state == AlarmState::kCleared) a.cleared_at = kT0 + 2s;
  a.last_value = 0.125;
  a.text = "QBER above threshold";
  a.count = 3;
  return a;
}

// Alarms upsert by ID; one active alarm per (type, resource); next_alarm_id follows the largest.
TEST_F(DbTest, AlarmRoundTripAndUniqueActive) {
  auto a = alarm(7, "L12", AlarmState::kActive);
  store_->save_alarm(a);
  a.acknowledged = true;
  a.acknowledged_by = "ops";
  a.acknowledged_at = kT0 + 5s;
  store_->save_alarm(a);
  store_->save_alarm(alarm(3, "L23", AlarmState::kCleared));
  EXPECT_THROW(store_->save_alarm(alarm(8, "L12", AlarmState::kActive)), Conflict);
  store_->save_alarm(alarm(9, "L12", AlarmState::kCleared));

  const auto st = store_->load();
  ASSERT_EQ(st.alarms.size(), 3u);
  EXPECT_EQ(st.next_alarm_id, 10u);
  EXPECT_EQ(st.alarms[0].id, 3u);
  EXPECT_EQ(st.alarms[0].state, AlarmState::kCleared);
  EXPECT_EQ(st.alarms[0].cleared_at, kT0 + 2s);
  const Alarm& b = st.alarms[1];
  EXPECT_EQ(b.id, 7u);
  EXPECT_EQ(b.severity, Severity::kMinor);
  EXPECT_TRUE(b.acknowledged);
  EXPECT_EQ(b.acknowledged_by, "ops");
  EXPECT_EQ(b.acknowledged_at, kT0 + 5s);
  EXPECT_EQ(b.raised_at, kT0);
  EXPECT_EQ(b.updated_at, kT0 + 1s);
  EXPECT_FALSE(b.cleared_at.has_value());
  EXPECT_DOUBLE_EQ(b.last_value, 0.125);
  EXPECT_EQ(b.count, 3u);
  EXPECT_EQ(b.text, "QBER above threshold");
}

// Accounting adds into its bucket; queries are half-open, filterable, ordered.
TEST_F(DbTest, AccountingUpsertAdds) {
  const SysTime m0 = kT0;
  const SysTime m1 = kT0 + 1min;
  store_->add_accounting({m0, "SAE-B", "s1", 32, 1});
  store_->add_accounting({m0, "SAE-A", "s1", 64, 2});
  store_->add_accounting({m0, "SAE-A", "s1", 32, 1});
  store_->add_accounting({m1, "SAE-A", "s2", 100, 3});
  auto rows = store_->accounting(m0, m1 + 1min, "");
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[0].sae_id, "SAE-A");
  EXPECT_EQ(rows[0].key_bytes, 96);
  EXPECT_EQ(rows[0].keys, 3);
  EXPECT_EQ(rows[0].bucket_start, m0);
  EXPECT_EQ(rows[1].sae_id, "SAE-B");
  EXPECT_EQ(rows[2].bucket_start, m1);
  rows = store_->accounting(m0, m1, "SAE-A");
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].session_id, "s1");
  EXPECT_TRUE(store_->accounting(m1 + 1min, m1 + 2min, "").empty());
  EXPECT_THROW(store_->add_accounting({m0, "SAE-A", "s1", -1000, 0}), InvalidArgument);
}

// Audit is append-only: ids ascend, pages follow after_id, and UPDATE/DELETE are refused by
// the database itself.
TEST_F(DbTest, AuditAppendOnly) {
  std::vector<std::int64_t> ids;
  ids.reserve(5);
  for (int i = 0; i < 5; ++i) {
    ids.push_back(
        store_->append_audit({0, kT0 + std::chrono::seconds{i}, "admin", "PUT /api/v1/policy",
                              "policy", "200", "mode=" + std::to_string(i), "127.0.0.1:5555"}));
  }
  for (std::size_t i = 1; i < ids.size(); ++i) EXPECT_GT(ids[i], ids[i - 1]);
  auto page = store_->audit(0, 2);
  ASSERT_EQ(page.size(), 2u);
  EXPECT_EQ(page[0].id, ids[0]);
  EXPECT_EQ(page[0].actor, "admin");
  EXPECT_EQ(page[0].at, kT0);
  EXPECT_EQ(page[0].remote, "127.0.0.1:5555");
  page = store_->audit(page.back().id, 100);
  ASSERT_EQ(page.size(), 3u);
  EXPECT_EQ(page[2].detail, "mode=4");
  EXPECT_TRUE(store_->audit(ids.back(), 10).empty());
  EXPECT_TRUE(store_->audit(0, 0).empty());

  EXPECT_ANY_THROW(sql("UPDATE audit SET actor = 'mallory'"));
  EXPECT_ANY_THROW(sql("DELETE FROM audit"));
  EXPECT_ANY_THROW(sql("TRUNCATE audit"));
  EXPECT_EQ(sql("SELECT count(*) FROM audit WHERE actor = 'admin'"), "5");
}

// No table has a column that could hold key material.
TEST_F(DbTest, SchemaHasNoKeyMaterialColumns) {
  EXPECT_EQ(sql("SELECT count(*) FROM information_schema.columns WHERE table_schema = 'public'"
                " AND (data_type = 'bytea' OR column_name ~ '(key_bytes_value|key_material|"
                "secret|^key$|key_value)')"),
            "0");
}

// load() returns everything saved, in one consistent snapshot.
TEST_F(DbTest, LoadReturnsEverything) {
  store_->save_topology(sample_topology());
  store_->save_link_config({"L12", "disabled", std::nullopt, std::nullopt});
  store_->save_thresholds({0.09, 512, 0.1});
  store_->save_policy({"", "", "traffic_adaptive", {{"window_s", 60}}});
  store_->save_pinned_route({"KM1", "KM2", {"KM1", "KM2"}, {"L12"}, kT0});
  store_->save_session(session("s1", "active", kT0));
  controller::RelayRecord r;
  r.relay_id = "r1";
  r.src_km = "KM1";
  r.dst_km = "KM2";
  r.state = "relaying";
  store_->save_relay(r);
  store_->apply_ledger("b1", {ledger_entry("k1", "r1", "reserved")});
  store_->save_alarm(alarm(1, "L12", AlarmState::kActive));
  const auto st = store_->load();
  EXPECT_TRUE(st.topology.has_value());
  ASSERT_TRUE(st.thresholds.has_value());
  EXPECT_EQ(st.thresholds->pool_floor_bits, 512u);
  EXPECT_EQ(st.link_configs.size(), 1u);
  EXPECT_EQ(st.policies.size(), 1u);
  EXPECT_EQ(st.pinned_routes.size(), 1u);
  EXPECT_EQ(st.sessions.size(), 1u);
  EXPECT_EQ(st.relays.size(), 1u);
  EXPECT_EQ(st.ledger.size(), 1u);
  EXPECT_EQ(st.alarms.size(), 1u);
  EXPECT_EQ(st.next_alarm_id, 2u);
}

}  // namespace
}  // namespace qkdn::db::test
