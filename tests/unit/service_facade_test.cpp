// The controller facade (controller_facade.hpp) without PostgreSQL: operator writes through
// ControllerFacade::write on the real service with a MemoryStore, directly and through the REST
// API (ApiServer on 127.0.0.1:0). The facade stores before it applies, forwards the core's
// outputs itself, and changes nothing when planning or storing fails.
#include <gtest/gtest.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/use_future.hpp>

#include "northbound_test_support.hpp"
#include "qkdn/controller/error.hpp"
#include "qkdn/controller/memory_store.hpp"
#include "qkdn/service/controller_facade.hpp"

namespace qkdn::test {
namespace {

using controller::MemoryStore;
using service::Core;
using service::CoreChanges;
using service::StoreOp;

// Polls `pred` (bounded); true once it held.
template <class P>
bool poll_until(P pred, std::chrono::milliseconds bound = std::chrono::seconds(10)) {
  const auto deadline = std::chrono::steady_clock::now() + bound;
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return pred();
}

// The API on a MemoryStore the test keeps.
struct StoredApi {
  StoredApi()
      : h([this] {
          ApiConfig cfg;
          cfg.store = controller::memory_store_factory(store);
          return cfg;
        }()) {}
  std::shared_ptr<MemoryStore> store = std::make_shared<MemoryStore>();
  ApiHarness h;
};

// Runs a facade write from the test thread and waits for it.
template <class Plan, class Store, class Apply>
auto write(service::ControllerService& svc, Plan plan, Store store, Apply apply) {
  auto op = svc.facade().write(std::move(plan), std::move(store), std::move(apply));
  return net::co_spawn(svc.core_executor(), std::move(op), net::use_future).get();
}

// A topology change through the facade is stored first, applied, and its network events reach
// the rerouting engine (the facade forwards them: the engine's snapshot is the new network).
TEST(ServiceFacade, WriteStoresAppliesAndForwards) {
  StoredApi a;
  auto& svc = a.h.svc();
  const auto km_count = write(
      svc,
      [](Core& c) {
        auto doc = c.network.topology();
        doc.kms.push_back({"KM9", "far"});
        controller::validate_topology(doc);
        return doc;
      },
      [](const controller::TopologyDoc& doc) -> StoreOp {
        return [doc](controller::Store& s) { s.save_topology(doc); };
      },
      [](CoreChanges& ch, const controller::TopologyDoc& doc) {
        ch.apply_topology(doc);
        return ch.network().kms().size();
      });
  EXPECT_EQ(km_count, 4u);
  EXPECT_EQ(a.store->load().topology->kms.size(), 4u);
  a.h.on_core([](Core& c) {
    const auto& snapshot = c.rerouting.snapshot();
    EXPECT_TRUE(snapshot);
    if (snapshot) {
      EXPECT_EQ(snapshot->version(), c.network.version());
      EXPECT_TRUE(snapshot->km_index("KM9"));
    }
    return 0;
  });
}

// A plan that refuses changes nothing and stores nothing; a store that fails refuses the write
// (Unavailable) and the core is unchanged.
TEST(ServiceFacade, RefusedOrUnstoredWriteChangesNothing) {
  StoredApi a;
  auto& svc = a.h.svc();
  const auto stored_before = a.store->load().topology->kms.size();
  bool applied = false;
  const auto add_km = [](Core& c) {
    auto doc = c.network.topology();
    doc.kms.push_back({"KM9", "far"});
    return doc;
  };
  const auto store_doc = [](const controller::TopologyDoc& doc) -> StoreOp {
    return [doc](controller::Store& s) { s.save_topology(doc); };
  };
  const auto apply = [&](CoreChanges& ch, const controller::TopologyDoc& doc) {
    applied = true;
    ch.apply_topology(doc);
    return 0;
  };
  EXPECT_THROW(write(
                   svc, [](Core&) -> controller::TopologyDoc { throw Conflict("refused by plan"); },
                   store_doc, apply),
               Conflict);
  a.store->set_available(false);
  EXPECT_THROW(write(svc, add_km, store_doc, apply), Unavailable);
  a.store->set_available(true);
  EXPECT_FALSE(applied);
  EXPECT_EQ(a.h.on_core([](Core& c) { return c.network.kms().size(); }), 3u);
  EXPECT_EQ(a.store->load().topology->kms.size(), stored_before);
}

// REST: disabling a link is stored, and the facade forwards the admin event (the engine's
// snapshot sees the link disabled; the network thresholds are stored with it).
TEST(ServiceFacade, RestLinkWriteIsForwarded) {
  StoredApi a;
  auto http = a.h.client();
  const auto r =
      http.request("PATCH", "/api/v1/links/L12", kAdminToken, R"({"admin_state":"disabled"})");
  ASSERT_EQ(r.status, 200) << r.body;
  const auto stored = a.store->load();
  ASSERT_EQ(stored.link_configs.size(), 1u);
  EXPECT_EQ(stored.link_configs[0].admin_state, "disabled");
  a.h.on_core([](Core& c) {
    const auto& snapshot = c.rerouting.snapshot();
    EXPECT_TRUE(snapshot);
    if (snapshot) {
      EXPECT_EQ(snapshot->version(), c.network.version());
    }
    return 0;
  });
  EXPECT_TRUE(poll_until([&] { return a.store->load().thresholds.has_value(); }));
}

// REST while the store is down: 503, nothing applied.
TEST(ServiceFacade, RestWriteWithTheStoreDownIs503) {
  StoredApi a;
  auto http = a.h.client();
  a.store->set_available(false);
  const auto r =
      http.request("PATCH", "/api/v1/links/L12", kAdminToken, R"({"admin_state":"disabled"})");
  EXPECT_EQ(r.status, 503) << r.body;
  a.store->set_available(true);
  EXPECT_EQ(a.h.on_core([](Core& c) { return c.network.find_link("L12")->admin; }),
            controller::AdminState::kEnabled);
}

// A schedule the rerouting engine refuses (more keys than one instruction may carry) is refused
// before it is stored: validated once, by the engine's own check, in the write's plan. (Before,
// the handler's copy of the checks let it through to the store and the engine refused it only
// when applying: the store kept a schedule the controller did not have.)
TEST(ServiceFacade, ScheduleRefusedBeforeItIsStored) {
  StoredApi a;
  auto http = a.h.client();
  const auto r =
      http.request("POST", "/api/v1/schedules", kAdminToken,
                   R"({"src_km":"KM1","dst_km":"KM3","number_of_keys":5000,)"
                   R"("not_before":"2030-01-01T00:00:00Z","not_after":"2030-01-01T01:00:00Z"})");
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_TRUE(a.store->load().schedules.empty());
  EXPECT_EQ(a.h.on_core([](Core& c) { return c.rerouting.schedules().size(); }), 0u);
}

}  // namespace
}  // namespace qkdn::test
