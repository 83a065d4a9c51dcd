// Unit tests of key-supply sessions (controller/core/sessions.cpp): creation, the destination's
// answer, expiry, closing, delivery accounting and restore.
#include <gtest/gtest.h>

#include "key_supply_test_util.hpp"
#include "qkdn/controller/error.hpp"
#include "qkdn/controller/network.hpp"
#include "qkdn/controller/sessions.hpp"

namespace qkdn::controller::testing {
namespace {

using std::chrono::minutes;
using std::chrono::seconds;

class SessionTest : public ::testing::Test {
 protected:
  SessionTest() {
    TopologyDoc doc;
    doc.name = "sessions";
    doc.kms = {{"KM1", "a"}, {"KM2", "b"}, {"KM5", "c"}};
    doc.links = {{"L12", "KM1", "KM2", 1000, 1, 0.01}, {"L25", "KM2", "KM5", 1000, 1, 0.01}};
    doc.applications = {{"SAE-A", "KM1"}, {"SAE-B", "KM5"}, {"SAE-C", "KM2"}};
    net_.apply_topology(doc);
  }

  SessionRequest request(std::optional<std::int64_t> keys = std::nullopt) {
    return {"KM1", "SAE-A", "SAE-B", keys};
  }

  /// A session made active by the destination KM.
  Session active() {
    const auto made = table_.create(request(4), clock_.now());
    return table_.on_answer(made.session->session_id, "KM5", true, "", clock_.now());
  }

  ManualClock clock_{kT0};
  Network net_{clock_};
  SeededRandom rng_{2024};
  SessionTable table_{net_, rng_};
};

// 0x1406 for known SAEs: a pending session with a UUID, both KMs resolved, the default number of
// keys, and a pending deadline; the 0x1409 OK makes it active with an idle deadline.
TEST_F(SessionTest, CreateThenActivate) {
  const SessionCreated made = table_.create(request(), clock_.now());
  ASSERT_TRUE(made.session.has_value()) << made.message;
  const Session& s = *made.session;
  EXPECT_TRUE(is_uuid(s.session_id));
  EXPECT_EQ(s.src_km, "KM1");
  EXPECT_EQ(s.dst_km, "KM5");
  EXPECT_EQ(s.keys_requested, 1);
  EXPECT_EQ(s.state, SessionState::kPending);
  EXPECT_EQ(s.expires_at, kT0 + seconds{5});
  EXPECT_EQ(table_.find(s.session_id)->state, SessionState::kPending);

  clock_.advance(seconds{1});
  const Session a = table_.on_answer(s.session_id, "KM5", true, "", clock_.now());
  EXPECT_EQ(a.state, SessionState::kActive);
  EXPECT_EQ(a.updated_at, kT0 + seconds{1});
  EXPECT_EQ(a.expires_at, kT0 + seconds{1} + minutes{10});
  EXPECT_EQ(table_.active_count(), 1u);
  EXPECT_EQ(table_.find_active("KM1", "KM5")->session_id, s.session_id);
  EXPECT_EQ(table_.find_active("KM5", "KM1"), nullptr);
}

// Session IDs come from the injected Random: the same seed gives the same IDs.
TEST_F(SessionTest, DeterministicIds) {
  SeededRandom rng{2024};
  SessionTable twin{net_, rng};
  EXPECT_EQ(table_.create(request(), kT0).session->session_id,
            twin.create(request(), kT0).session->session_id);
}

// Unknown SAEs and a source SAE served by another KM are NG: unknown_application with a precise
// message; malformed requests are bad_request. Nothing is created.
TEST_F(SessionTest, RefusedRequests) {
  auto refused = [&](SessionRequest r, const std::string& code, const std::string& text) {
    const SessionCreated out = table_.create(r, clock_.now());
    EXPECT_FALSE(out.session.has_value());
    EXPECT_EQ(out.ck_error, code);
    EXPECT_NE(out.message.find(text), std::string::npos) << out.message;
  };
  refused({"KM1", "SAE-X", "SAE-B", {}}, "unknown_application",
          "source application SAE-X is not attached to any KM");
  refused({"KM1", "SAE-A", "SAE-Y", {}}, "unknown_application",
          "destination application SAE-Y is not attached to any KM");
  refused({"KM2", "SAE-A", "SAE-B", {}}, "unknown_application",
          "SAE-A is served by KM KM1, not by KM2");
  refused({"KM1", "SAE-A", "SAE-A", {}}, "bad_request", "the same");
  refused({"KM1", "SAE A", "SAE-B", {}}, "bad_request", "malformed application ID");
  refused({"KM1", "SAE-A", "SAE-B", 0}, "bad_request", "number_of_keys 0");
  refused({"KM1", "SAE-A", "SAE-B", 2'000'000}, "bad_request", "number_of_keys 2000000");
  EXPECT_TRUE(table_.list().empty());
}

// Issue 13 (SAE hijack): a KM's claim never makes an SAE resolve to it. KM2 claiming SAE-B
// (KM5's) does not redirect sessions for SAE-B, claiming SAE-A (KM1's) does not let KM2 open
// sessions as master SAE-A, and an undeclared SAE stays unknown. (This test used to assert that
// an undeclared SAE a KM claimed resolved to it: that was the hole.)
TEST_F(SessionTest, ClaimedApplicationsDoNotResolve) {
  EXPECT_EQ(net_.update_applications("KM2", {"SAE-NEW", "SAE-A", "SAE-B"}, {}).size(), 3U);
  EXPECT_EQ(table_.create({"KM2", "SAE-NEW", "SAE-B", 3}, clock_.now()).ck_error,
            "unknown_application");
  EXPECT_EQ(table_.create({"KM2", "SAE-A", "SAE-B", 3}, clock_.now()).ck_error,
            "unknown_application");
  const auto made = table_.create({"KM1", "SAE-A", "SAE-B", 3}, clock_.now());
  ASSERT_TRUE(made.session.has_value()) << made.message;
  EXPECT_EQ(made.session->dst_km, "KM5");
}

// 0x1409 NG fails the session; answers from the wrong KM, for unknown or settled sessions, are
// refused.
TEST_F(SessionTest, AnswerNgAndBadAnswers) {
  const auto made = table_.create(request(), clock_.now());
  const std::string id = made.session->session_id;
  EXPECT_THROW(table_.on_answer(id, "KM2", true, "", clock_.now()), Conflict);
  EXPECT_THROW(table_.on_answer("nope", "KM5", true, "", clock_.now()), NotFound);
  const Session failed =
      table_.on_answer(id, "KM5", false, "NG: application refused", clock_.now());
  EXPECT_EQ(failed.state, SessionState::kFailed);
  EXPECT_EQ(failed.reason, "NG: application refused");
  EXPECT_FALSE(failed.expires_at.has_value());
  EXPECT_THROW(table_.on_answer(id, "KM5", true, "", clock_.now()), Conflict);
  EXPECT_EQ(table_.active_count(), 0u);
}

// A pending session without an answer fails with "timeout" at its deadline; an active one
// expires after idle_ttl without activity, and delivery pushes the idle deadline.
TEST_F(SessionTest, ExpireTimeoutAndIdle) {
  const auto pending = table_.create(request(), clock_.now());
  const Session a = active();
  clock_.advance(seconds{5});
  const auto first = table_.expire(clock_.now());
  ASSERT_EQ(first.size(), 1u);
  EXPECT_EQ(first[0].session_id, pending.session->session_id);
  EXPECT_EQ(first[0].state, SessionState::kFailed);
  EXPECT_EQ(first[0].reason, "timeout");

  clock_.advance(minutes{5});
  table_.add_delivered(a.session_id, 1, 32, clock_.now());
  EXPECT_EQ(table_.next_expiry(), clock_.now() + minutes{10});
  clock_.advance(minutes{9});
  EXPECT_TRUE(table_.expire(clock_.now()).empty());
  clock_.advance(minutes{1});
  const auto second = table_.expire(clock_.now());
  ASSERT_EQ(second.size(), 1u);
  EXPECT_EQ(second[0].state, SessionState::kExpired);
  EXPECT_FALSE(table_.next_expiry().has_value());
}

// The lifetime caps a session however active it is; TTLs are configurable.
TEST_F(SessionTest, LifetimeCap) {
  SessionConfig cfg;
  cfg.idle_ttl = minutes{1};
  cfg.max_lifetime = minutes{3};
  cfg.default_number_of_keys = 8;
  SessionTable t{net_, rng_, cfg};
  const auto made = t.create(request(), clock_.now());
  EXPECT_EQ(made.session->keys_requested, 8);
  const std::string id = made.session->session_id;
  t.on_answer(id, "KM5", true, "", clock_.now());
  for (int i = 0; i < 5; ++i) {
    clock_.advance(seconds{50});
    const auto gone = t.expire(clock_.now());
    if (clock_.now() < kT0 + minutes{3}) {
      EXPECT_TRUE(gone.empty());
      t.add_delivered(id, 1, 32, clock_.now());
    } else {
      ASSERT_EQ(gone.size(), 1u);
      EXPECT_EQ(gone[0].state, SessionState::kExpired);
      break;
    }
  }
  EXPECT_EQ(t.find(id)->state, SessionState::kExpired);
  EXPECT_THROW(SessionTable(net_, rng_, SessionConfig{0}), InvalidArgument);
}

// close() ends open sessions and refuses settled ones; fail() likewise.
TEST_F(SessionTest, CloseAndFail) {
  const Session a = active();
  const Session closed = table_.close(a.session_id, "operator", clock_.now());
  EXPECT_EQ(closed.state, SessionState::kClosed);
  EXPECT_THROW(table_.close(a.session_id, "again", clock_.now()), Conflict);
  EXPECT_THROW(table_.close("nope", "", clock_.now()), NotFound);
  const auto p = table_.create(request(), clock_.now());
  EXPECT_EQ(table_.fail(p.session->session_id, "timeout", clock_.now()).state,
            SessionState::kFailed);
  EXPECT_THROW(table_.fail(p.session->session_id, "x", clock_.now()), Conflict);
}

// Delivery counts keys on the session and yields per-minute accounting deltas for both SAEs;
// only active sessions take deliveries.
TEST_F(SessionTest, DeliveryAccounting) {
  const Session a = active();
  clock_.advance(seconds{75});  // 1 min 15 s into the epoch minute grid
  const SessionDelivery d = table_.add_delivered(a.session_id, 4, 128, clock_.now());
  EXPECT_EQ(d.session.keys_delivered, 4);
  ASSERT_EQ(d.accounting.size(), 2u);
  EXPECT_EQ(d.accounting[0].sae_id, "SAE-A");
  EXPECT_EQ(d.accounting[1].sae_id, "SAE-B");
  for (const auto& rec : d.accounting) {
    EXPECT_EQ(rec.session_id, a.session_id);
    EXPECT_EQ(rec.keys, 4);
    EXPECT_EQ(rec.key_bytes, 128);
    EXPECT_EQ(rec.bucket_start, std::chrono::floor<minutes>(clock_.now()));
    EXPECT_EQ((rec.bucket_start.time_since_epoch() % minutes{1}).count(), 0);
  }
  EXPECT_EQ(table_.add_delivered(a.session_id, 2, 64, clock_.now()).session.keys_delivered, 6);
  EXPECT_THROW(table_.add_delivered(a.session_id, -1, 0, clock_.now()), InvalidArgument);
  const auto p = table_.create(request(), clock_.now());
  EXPECT_THROW(table_.add_delivered(p.session->session_id, 1, 32, clock_.now()), Conflict);
  EXPECT_THROW(table_.add_delivered("nope", 1, 32, clock_.now()), NotFound);
}

// Records round-trip field for field.
TEST_F(SessionTest, RecordRoundTrip) {
  Session a = active();
  table_.add_delivered(a.session_id, 3, 96, clock_.now());
  a = *table_.find(a.session_id);
  const SessionRecord r = to_record(a);
  EXPECT_EQ(r.state, "active");
  EXPECT_EQ(r.keys_delivered, 3);
  EXPECT_EQ(r.src_sae, "SAE-A");
  EXPECT_EQ(r.dst_km, "KM5");
  const Session back = session_from_record(r);
  EXPECT_EQ(to_record(back).session_id, r.session_id);
  EXPECT_EQ(back.expires_at, a.expires_at);
  EXPECT_EQ(back.created_at, a.created_at);
  SessionRecord bad = r;
  bad.state = "open";
  EXPECT_THROW(session_from_record(bad), InvalidArgument);
}

// Restore: pending sessions fail ("controller restart"), due active ones expire, the others keep
// their deadline; finished ones are listed.
TEST_F(SessionTest, Restore) {
  const auto pending = table_.create(request(), clock_.now());
  const Session fresh = active();
  const Session stale = active();
  std::vector<SessionRecord> records{to_record(*table_.find(pending.session->session_id)),
                                     to_record(fresh), to_record(stale)};
  records[2].expires_at = kT0 + seconds{1};
  const auto closed = table_.close(active().session_id, "done", clock_.now());
  records.push_back(to_record(closed));

  SeededRandom rng{1};
  SessionTable restored{net_, rng};
  const SysTime now = kT0 + seconds{30};
  const auto changed = restored.restore(records, now);
  ASSERT_EQ(changed.size(), 2u);
  EXPECT_EQ(restored.find(pending.session->session_id)->state, SessionState::kFailed);
  EXPECT_EQ(restored.find(pending.session->session_id)->reason, "controller restart");
  EXPECT_EQ(restored.find(stale.session_id)->state, SessionState::kExpired);
  EXPECT_EQ(restored.find(fresh.session_id)->state, SessionState::kActive);
  EXPECT_EQ(restored.find(fresh.session_id)->expires_at, fresh.expires_at);
  EXPECT_EQ(restored.find(closed.session_id)->state, SessionState::kClosed);
  EXPECT_EQ(restored.list().size(), 4u);
  EXPECT_EQ(restored.active_count(), 1u);
  EXPECT_THROW(restored.restore(records, now), Conflict);
}

// Finished sessions beyond max_finished leave memory, oldest first.
TEST_F(SessionTest, BoundedHistory) {
  SessionConfig cfg;
  cfg.max_finished = 3;
  SessionTable t{net_, rng_, cfg};
  std::vector<std::string> ids;
  for (int i = 0; i < 5; ++i) {
    const auto made = t.create(request(), clock_.now());
    ids.push_back(made.session->session_id);
    t.close(ids.back(), "", clock_.now());
  }
  EXPECT_EQ(t.list().size(), 3u);
  EXPECT_EQ(t.find(ids[0]), nullptr);
  EXPECT_NE(t.find(ids[4]), nullptr);
}

}  // namespace
}  // namespace qkdn::controller::testing
