// SAE hijack (issue 13): a KM that names another KM's SAE in its Register applications (or in
// 0x14E7) must not become that SAE's KM. The controller refuses the claim, keeps the topology's
// owner, raises sae_claim_refused and writes an audit record. The controller service and the
// rogue agent are the real ones, on real sockets, with mutual TLS on Ck.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <future>
#include <set>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/use_future.hpp>

#include "ck_test_support.hpp"
#include "security_support.hpp"

namespace qkdn::test {
namespace {

namespace fs = std::filesystem;

LeafSpec km_leaf(const std::string& id, std::string uri) {
  LeafSpec s;
  s.cn = id;
  s.san_uris = {std::move(uri)};
  s.server_auth = true;
  s.client_auth = true;
  return s;
}

std::vector<controller::AuditRecord> audit_of(service::ControllerService& svc) {
  return net::co_spawn(svc.core_executor(), svc.audit_page(0, 100), net::use_future).get();
}

std::optional<std::string> owner_of(service::ControllerService& svc, const std::string& sae) {
  return net::co_spawn(
             svc.core_executor(),
             [&]() -> net::awaitable<std::optional<std::string>> {
               co_return svc.network().km_for_sae(sae);
             },
             net::use_future)
      .get();
}

/// Polls (bounded) until `pred(snapshot)` holds.
template <class Pred>
bool wait_snapshot(service::ControllerService& svc, Pred pred,
                   std::chrono::milliseconds bound = std::chrono::seconds(20)) {
  const auto deadline = std::chrono::steady_clock::now() + bound;
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred(svc.snapshot_state())) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

// A real agent for KM2 whose own topology moves SAE1 (KM1's) to KM2 registers over mutual TLS.
// The registration stands, but SAE1 still maps to KM1: KM2 is recorded as serving only SAE2, an
// alarm sae_claim_refused about SAE1 names KM2, and the audit trail has the refusal. Before the
// fix SAE1 mapped to KM2 (km_for_sae, and so every session and relay for SAE1).
TEST(SaeClaims, RogueAgentCannotTakeAnotherKmsSae) {
  TestPki pki;
  fs::create_directories(pki.dir() / "km");
  const std::string ca = pki.make_ca("ca");
  LeafSpec ctl = km_leaf("ctl", "urn:qkdn:controller:ctl");
  ctl.client_auth = false;
  const Issued controller = pki.issue(ca, "controller", ctl);
  pki.issue(ca, "km/KM2", km_leaf("KM2", "urn:qkdn:km:KM2"));

  service::ServiceOptions o;
  o.tls = controller.files();
  o.controller_id = "ctl";
  o.topology = matrix_topology();  // SAE1 at KM1, SAE2 at KM2
  Harness h(std::move(o));

  controller::TopologyDoc rogue = matrix_topology();
  rogue.applications = {{"SAE1", "KM2"}, {"SAE2", "KM2"}};
  RunningAgent agent(ca, pki.dir(), "KM2", h.port(), "ctl", nullptr, rogue);

  ASSERT_TRUE(wait_snapshot(h.svc(), [](const service::StateSnapshot& s) {
    for (const auto& k : s.kms) {
      if (k.km_id == "KM2" && k.connected) return true;
    }
    return false;
  })) << "the rogue KM2 never registered";

  const auto snap = h.svc().snapshot_state();
  for (const auto& k : snap.kms) {
    if (k.km_id == "KM2") {
      EXPECT_EQ(k.attached, std::vector<std::string>{"SAE2"});
    }
  }
  EXPECT_EQ(owner_of(h.svc(), "SAE1"), "KM1");
  EXPECT_EQ(owner_of(h.svc(), "SAE2"), "KM2");

  const controller::Alarm* alarm = nullptr;
  for (const auto& a : snap.alarms) {
    if (a.type == "sae_claim_refused") alarm = &a;
  }
  ASSERT_NE(alarm, nullptr) << "no sae_claim_refused alarm";
  EXPECT_EQ(alarm->resource, "SAE1");
  EXPECT_EQ(alarm->km_id, "KM2");
  EXPECT_EQ(alarm->state, controller::AlarmState::kActive);

  const auto audit = audit_of(h.svc());
  const auto rec = std::find_if(audit.begin(), audit.end(), [](const auto& r) {
    return r.actor == "KM2" && r.resource == "SAE1" && r.outcome == "refused";
  });
  ASSERT_NE(rec, audit.end()) << "no audit record of the refused claim";
  EXPECT_EQ(rec->action, "ck register sae_claim");
}

// Over Ck by hand: 0x14E7 attaching another KM's SAE (and an undeclared one) is answered with
// Error unknown_application; the owner is unchanged, an alarm per SAE and audit records follow;
// the KM's own SAE attaches in the same message and the connection stays up.
TEST(SaeClaims, ApplicationsUpdateForForeignSaeRefused) {
  service::ServiceOptions o;
  o.insecure_ck = true;
  Harness h(std::move(o));  // line topology: SAE1 at KM1, SAE2 at KM2, SAE3 at KM3
  RawClient km2(h.port());
  const auto reg = km2.do_register("KM2");
  ASSERT_EQ(reg.command, 0x41E2);
  km2.send(0x14E7, 2, R"({"kma_id":"KM2","attached":["SAE2","SAE1","SAE-X"]})");
  const auto f = km2.expect_frame();
  ASSERT_EQ(f.command, 0x41EF) << f.payload;
  const auto e = decode_as<ck::ErrorMessage>(f);
  EXPECT_EQ(e.error, "unknown_application");
  EXPECT_EQ(e.message_id, 2U);
  EXPECT_EQ(km2.heartbeat("KM2", 3).command, 0x41E9);

  EXPECT_EQ(owner_of(h.svc(), "SAE1"), "KM1");
  EXPECT_EQ(owner_of(h.svc(), "SAE-X"), std::nullopt);
  const auto snap = h.svc().snapshot_state();
  std::set<std::string> alarmed;
  for (const auto& a : snap.alarms) {
    if (a.type == "sae_claim_refused" && a.km_id == "KM2") alarmed.insert(a.resource);
  }
  EXPECT_EQ(alarmed, (std::set<std::string>{"SAE1", "SAE-X"}));
  for (const auto& k : snap.kms) {
    if (k.km_id == "KM2") {
      EXPECT_EQ(k.attached, std::vector<std::string>{"SAE2"});
    }
  }
  std::set<std::string> audited;
  for (const auto& r : audit_of(h.svc())) {
    if (r.actor == "KM2" && r.outcome == "refused") audited.insert(r.resource);
  }
  EXPECT_EQ(audited, (std::set<std::string>{"SAE1", "SAE-X"}));
}

}  // namespace
}  // namespace qkdn::test
