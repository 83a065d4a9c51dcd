// Northbound API resources over real HTTP against an in-process controller: topology import and
// export (all or nothing), KMs and links with live Ck state, thresholds, applications, route
// queries with exclusions, pinned routes, policy, schedules, alarms (list, ack, clear), sessions,
// relays, accounting, audit and health.
#include <chrono>
#include <thread>

#include "northbound_test_support.hpp"

namespace qkdn::test {
namespace {

using namespace std::chrono_literals;

constexpr const char* kLinks1 = R"([{"link_id":"L12","peer_kma_id":"KM2"}])";
constexpr const char* kLinks2 =
    R"([{"link_id":"L12","peer_kma_id":"KM1"},{"link_id":"L23","peer_kma_id":"KM3"}])";
constexpr const char* kLinks3 = R"([{"link_id":"L23","peer_kma_id":"KM2"}])";

json::object obj(const Reply& r) { return r.json().as_object(); }
json::array items(const Reply& r) { return r.json().as_object().at("items").as_array(); }

class NorthboundApi : public ::testing::Test {
 protected:
  ApiHarness h;
  HttpClient c = h.client();
};

// The topology round-trips; a bad document (link to a missing KM, duplicate IDs, unknown field,
// wrong type, malformed JSON) is refused with 400 and leaves the old one intact.
TEST_F(NorthboundApi, TopologyPutIsAllOrNothing) {
  auto before = c.get("/api/v1/topology");
  ASSERT_EQ(before.status, 200);
  EXPECT_EQ(obj(before).at("kms").as_array().size(), 3U);
  for (
      const char* bad : {
          R"({"name":"x","kms":[{"km_id":"A"}],"links":[{"link_id":"L","a":"A","b":"MISSING"}]})",
          R"({"name":"x","kms":[{"km_id":"A"},{"km_id":"A"}],"links":[]})",
          R"({"name":"x","kms":[{"km_id":"A","colour":1}],"links":[]})",
          R"({"name":"x","kms":[{"km_id":"A"},{"km_id":"B"}],"links":[{"link_id":"L","a":"A","b":"B","key_rate_bps":"fast"}]})",
          R"({"name":"x","kms":[)",
      }) {
    auto r = c.request("PUT", "/api/v1/topology", kAdminToken, bad);
    EXPECT_EQ(r.status, 400) << bad << " -> " << r.body;
    EXPECT_EQ(r.header("content-type"), "application/problem+json");
  }
  EXPECT_EQ(c.get("/api/v1/topology").body, before.body);

  const std::string next =
      R"({"name":"ring","kms":[{"km_id":"KM1","site":"a"},{"km_id":"KM2","site":"b"},)"
      R"({"km_id":"KM4","site":"d"}],"links":[{"link_id":"L12","a":"KM1","b":"KM2",)"
      R"("key_rate_bps":1000,"distance_km":10,"qber":0.02},{"link_id":"L24","a":"KM2","b":"KM4",)"
      R"("key_rate_bps":500,"distance_km":20,"qber":0.01}],"applications":[{"sae_id":"S1",)"
      R"("km_id":"KM1"}]})";
  auto put = c.request("PUT", "/api/v1/topology", kAdminToken, next);
  ASSERT_EQ(put.status, 200) << put.body;
  EXPECT_FALSE(put.header("etag").empty());
  auto kms = items(c.get("/api/v1/kms"));
  ASSERT_EQ(kms.size(), 3U);
  EXPECT_EQ(kms[2].as_object().at("km_id").as_string(), "KM4");
  EXPECT_EQ(c.get("/api/v1/links/L23").status, 404);
  EXPECT_EQ(obj(c.get("/api/v1/topology")).at("name").as_string(), "ring");
}

// KMs: create, read (with live Ck state), patch, delete; conflicts and unknown IDs are precise.
TEST_F(NorthboundApi, KmLifecycleAndLiveState) {
  RawClient km1(h.ck_port());
  ASSERT_EQ(km1.do_register("KM1", kLinks1).command, 0x41E2);
  auto list = items(c.get("/api/v1/kms"));
  ASSERT_EQ(list.size(), 3U);
  auto k1 = list[0].as_object();
  EXPECT_EQ(k1.at("km_id").as_string(), "KM1");
  EXPECT_TRUE(k1.at("connected").as_bool());
  EXPECT_FALSE(k1.at("kma_endpoint").as_string().empty());
  EXPECT_FALSE(k1.at("last_seen").is_null());
  EXPECT_FALSE(list[1].as_object().at("connected").as_bool());
  EXPECT_EQ(items(c.get("/api/v1/kms?connected=true")).size(), 1U);

  auto created = c.request("POST", "/api/v1/kms", kAdminToken, R"({"km_id":"KM4","site":"x"})");
  ASSERT_EQ(created.status, 201) << created.body;
  EXPECT_EQ(created.header("location"), "/api/v1/kms/KM4");
  auto patched = c.request("PATCH", "/api/v1/kms/KM4", kAdminToken, R"({"site":"y"})");
  ASSERT_EQ(patched.status, 200) << patched.body;
  EXPECT_EQ(obj(patched).at("site").as_string(), "y");
  EXPECT_EQ(c.request("PATCH", "/api/v1/kms/KM4", kAdminToken, R"({"km_id":"Z"})").status, 400);
  EXPECT_EQ(c.request("POST", "/api/v1/kms", kAdminToken, R"({"km_id":"KM4"})").status, 409);
  EXPECT_EQ(c.request("POST", "/api/v1/kms", kAdminToken, R"({"km_id":"bad id!"})").status, 400);
  // KM2 still has links: deleting it is a conflict and changes nothing.
  EXPECT_EQ(c.request("DELETE", "/api/v1/kms/KM2").status, 409);
  EXPECT_EQ(c.get("/api/v1/kms/KM2").status, 200);
  EXPECT_EQ(c.request("DELETE", "/api/v1/kms/KM4").status, 204);
  EXPECT_EQ(c.get("/api/v1/kms/KM4").status, 404);
  EXPECT_EQ(c.request("DELETE", "/api/v1/kms/KM4").status, 404);
}

// Links: live pool state from status reports, admin state and threshold overrides, nominal
// values, creation (a missing end KM is refused) and deletion.
TEST_F(NorthboundApi, LinkLifecycleAndLiveState) {
  RawClient km1(h.ck_port());
  RawClient km2(h.ck_port());
  ASSERT_EQ(km1.do_register("KM1", kLinks1).command, 0x41E2);
  ASSERT_EQ(km2.do_register("KM2", kLinks2).command, 0x41E2);
  km1.send(0x14E3, 2,
           R"({"kma_id":"KM1","timestamp":"2026-01-01T00:00:00Z","links":[{"link_id":"L12",)"
           R"("peer_kma_id":"KM2","state":"up","stored_keys":40,"stored_key_bits":10240,)"
           R"("key_rate_bps":5000,"consumption_rate_bps":100,"qber":0.03}]})");
  ASSERT_EQ(km1.heartbeat("KM1", 3).command, 0x41E9);
  // Status reports are applied in one core pass per batch interval: poll, bounded.
  auto l = obj(c.get("/api/v1/links/L12"));
  for (const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(5);
       l.at("stored_keys").as_int64() != 40 && std::chrono::steady_clock::now() < until;) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    l = obj(c.get("/api/v1/links/L12"));
  }
  EXPECT_EQ(l.at("oper_state").as_string(), "up");
  EXPECT_EQ(l.at("stored_key_bits").as_int64(), 10240);
  EXPECT_EQ(l.at("stored_keys").as_int64(), 40);
  EXPECT_DOUBLE_EQ(l.at("key_rate_bps").as_double(), 5000);
  EXPECT_DOUBLE_EQ(l.at("nominal_key_rate_bps").as_double(), 1000);
  EXPECT_TRUE(l.at("qber_threshold").is_null());
  auto list = items(c.get("/api/v1/links?oper_state=up"));
  ASSERT_EQ(list.size(), 1U);
  EXPECT_EQ(list[0].as_object().at("link_id").as_string(), "L12");
  EXPECT_EQ(c.get("/api/v1/links?oper_state=sideways").status, 400);

  auto p = c.request("PATCH", "/api/v1/links/L12", kAdminToken,
                     R"({"admin_state":"disabled","qber_threshold":0.05,"pool_floor_bits":512,)"
                     R"("distance_km":11})");
  ASSERT_EQ(p.status, 200) << p.body;
  auto pl = obj(p);
  EXPECT_EQ(pl.at("admin_state").as_string(), "disabled");
  EXPECT_DOUBLE_EQ(pl.at("qber_threshold").as_double(), 0.05);
  EXPECT_EQ(pl.at("pool_floor_bits").as_int64(), 512);
  EXPECT_DOUBLE_EQ(pl.at("distance_km").as_double(), 11);
  EXPECT_EQ(pl.at("stored_key_bits").as_int64(), 10240);  // live state kept
  auto cleared = obj(c.request("PATCH", "/api/v1/links/L12", kAdminToken,
                               R"({"qber_threshold":null,"admin_state":"enabled"})"));
  EXPECT_TRUE(cleared.at("qber_threshold").is_null());
  EXPECT_EQ(cleared.at("pool_floor_bits").as_int64(), 512);

  EXPECT_EQ(
      c.request("POST", "/api/v1/links", kAdminToken, R"({"link_id":"L13","a":"KM1","b":"KM9"})")
          .status,
      400);
  EXPECT_EQ(
      c.request("POST", "/api/v1/links", kAdminToken, R"({"link_id":"L12","a":"KM1","b":"KM3"})")
          .status,
      409);
  auto created = c.request("POST", "/api/v1/links", kAdminToken,
                           R"({"link_id":"L13","a":"KM1","b":"KM3","key_rate_bps":100,)"
                           R"("admin_state":"maintenance","weight":4})");
  ASSERT_EQ(created.status, 201) << created.body;
  EXPECT_EQ(obj(created).at("admin_state").as_string(), "maintenance");
  EXPECT_DOUBLE_EQ(obj(created).at("weight").as_double(), 4);
  EXPECT_EQ(c.request("DELETE", "/api/v1/links/L13").status, 204);
  EXPECT_EQ(c.get("/api/v1/links/L13").status, 404);
}

// Network thresholds: read, replace, validate.
TEST_F(NorthboundApi, Thresholds) {
  auto t = obj(c.get("/api/v1/thresholds"));
  EXPECT_DOUBLE_EQ(t.at("qber").as_double(), 0.11);
  auto put = c.request("PUT", "/api/v1/thresholds", kAdminToken,
                       R"({"qber":0.08,"pool_floor_bits":1024,"qber_hysteresis":0.2})");
  ASSERT_EQ(put.status, 200) << put.body;
  EXPECT_EQ(obj(c.get("/api/v1/links/L12")).at("effective_pool_floor_bits").as_int64(), 1024);
  EXPECT_EQ(c.request("PUT", "/api/v1/thresholds", kAdminToken,
                      R"({"qber":2,"pool_floor_bits":1,"qber_hysteresis":0.2})")
                .status,
            400);
  EXPECT_EQ(c.request("PUT", "/api/v1/thresholds", kAdminToken, R"({"qber":0.1})").status, 400);
}

// Applications: declared SAEs with the KM serving each.
TEST_F(NorthboundApi, Applications) {
  auto apps = items(c.get("/api/v1/applications"));
  ASSERT_EQ(apps.size(), 3U);
  EXPECT_EQ(apps[0].as_object().at("sae_id").as_string(), "SAE1");
  EXPECT_EQ(apps[0].as_object().at("km_id").as_string(), "KM1");
  EXPECT_EQ(items(c.get("/api/v1/applications?km_id=KM2")).size(), 1U);
}

// Route queries: k best with costs; excluded links with reasons; validation of parameters.
TEST_F(NorthboundApi, RouteQueries) {
  // Without agents every link is down and its KMs disconnected: all excluded, with reasons.
  auto none = obj(c.get("/api/v1/routes?src=KM1&dst=KM3"));
  EXPECT_TRUE(none.at("items").as_array().empty());
  ASSERT_EQ(none.at("excluded").as_array().size(), 2U);
  auto reasons = none.at("excluded").as_array()[0].as_object().at("reasons").as_array();
  EXPECT_NE(std::find(reasons.begin(), reasons.end(), json::value("km_disconnected")),
            reasons.end());
  EXPECT_NE(std::find(reasons.begin(), reasons.end(), json::value("link_down")), reasons.end());

  RawClient km1(h.ck_port());
  RawClient km2(h.ck_port());
  RawClient km3(h.ck_port());
  ASSERT_EQ(km1.do_register("KM1", kLinks1).command, 0x41E2);
  ASSERT_EQ(km2.do_register("KM2", kLinks2).command, 0x41E2);
  ASSERT_EQ(km3.do_register("KM3", kLinks3).command, 0x41E2);
  // Pools are empty until agents report: the routes exist only once the floor is lowered.
  auto empty = obj(c.get("/api/v1/routes?src=KM1&dst=KM3"));
  EXPECT_TRUE(empty.at("items").as_array().empty());
  EXPECT_EQ(empty.at("excluded").as_array()[0].as_object().at("reasons").as_array()[0],
            "pool_below_floor");
  ASSERT_EQ(c.request("PUT", "/api/v1/thresholds", kAdminToken,
                      R"({"qber":0.11,"pool_floor_bits":0,"qber_hysteresis":0.1})")
                .status,
            200);
  auto r = c.get("/api/v1/routes?src=KM1&dst=KM3&k=2&metric=hop_count");
  ASSERT_EQ(r.status, 200) << r.body;
  auto o = obj(r);
  EXPECT_EQ(o.at("metric").as_string(), "hop_count");
  auto routes = o.at("items").as_array();
  ASSERT_EQ(routes.size(), 1U) << r.body;
  auto r0 = routes[0].as_object();
  EXPECT_EQ(r0.at("kms").as_array().size(), 3U);
  EXPECT_EQ(r0.at("links").as_array()[0].as_string(), "L12");
  EXPECT_EQ(r0.at("hops").as_int64(), 2);
  EXPECT_DOUBLE_EQ(r0.at("cost").as_double(), 2);
  EXPECT_TRUE(o.at("excluded").as_array().empty());

  // A disabled link says so, and the route is gone.
  ASSERT_EQ(
      c.request("PATCH", "/api/v1/links/L23", kAdminToken, R"({"admin_state":"disabled"})").status,
      200);
  auto off = obj(c.get("/api/v1/routes?src=KM1&dst=KM3"));
  EXPECT_TRUE(off.at("items").as_array().empty());
  auto ex = off.at("excluded").as_array();
  ASSERT_EQ(ex.size(), 1U);
  EXPECT_EQ(ex[0].as_object().at("link_id").as_string(), "L23");
  EXPECT_EQ(ex[0].as_object().at("reasons").as_array()[0].as_string(), "admin_disabled");
  // avoid_links is honoured too.
  ASSERT_EQ(
      c.request("PATCH", "/api/v1/links/L23", kAdminToken, R"({"admin_state":"enabled"})").status,
      200);
  auto avoided = obj(c.get("/api/v1/routes?src=KM1&dst=KM3&avoid_links=L12"));
  EXPECT_TRUE(avoided.at("items").as_array().empty());

  // The operator's link weight: shown on the link (1 by default), set with PATCH (validated), the
  // cost of the link in hop-count routes; refused values change nothing.
  EXPECT_DOUBLE_EQ(obj(c.get("/api/v1/links/L12")).at("weight").as_double(), 1);
  for (const char* bad :
       {R"({"weight":0})", R"({"weight":-1})", R"({"weight":1e7})", R"({"weight":"2"})"}) {
    auto refused = c.request("PATCH", "/api/v1/links/L12", kAdminToken, bad);
    EXPECT_EQ(refused.status, 400) << bad << " -> " << refused.body;
  }
  auto heavy = c.request("PATCH", "/api/v1/links/L12", kAdminToken, R"({"weight":2.5})");
  ASSERT_EQ(heavy.status, 200) << heavy.body;
  EXPECT_DOUBLE_EQ(obj(heavy).at("weight").as_double(), 2.5);
  auto weighted = obj(c.get("/api/v1/routes?src=KM1&dst=KM3&metric=hop_count"));
  ASSERT_EQ(weighted.at("items").as_array().size(), 1U);
  EXPECT_DOUBLE_EQ(weighted.at("items").as_array()[0].as_object().at("cost").as_double(), 3.5);
  EXPECT_EQ(weighted.at("items").as_array()[0].as_object().at("hops").as_int64(), 2);
  auto topo = obj(c.get("/api/v1/topology"));
  EXPECT_DOUBLE_EQ(topo.at("links").as_array()[0].as_object().at("weight").as_double(), 2.5);

  EXPECT_EQ(c.get("/api/v1/routes?src=KM1").status, 400);
  EXPECT_EQ(c.get("/api/v1/routes?src=KM1&dst=KM3&k=0").status, 400);
  EXPECT_EQ(c.get("/api/v1/routes?src=KM1&dst=KM3&metric=shortest").status, 400);
  EXPECT_EQ(c.get("/api/v1/routes?src=KM1&dst=NOPE").status, 404);
  EXPECT_EQ(c.get("/api/v1/routes?src=KM1&dst=KM3&avoid_links=NOPE").status, 404);
}

// Issue 20: trust levels and tags on KMs (PATCH, validated), route queries with trust constraints
// (intermediates and their trust in the answer; a refusal with the reason when none complies),
// a policy's avoided tags and SAE pair constraints (put, get, list, delete, validation).
TEST_F(NorthboundApi, TrustModelAndConstraints) {
  auto patched = c.request("PATCH", "/api/v1/kms/KM2", kAdminToken,
                           R"({"trust_level":30,"tags":["operator:x","site:colo"]})");
  ASSERT_EQ(patched.status, 200) << patched.body;
  auto km2 = obj(c.get("/api/v1/kms/KM2"));
  EXPECT_EQ(km2.at("trust_level").as_int64(), 30);
  EXPECT_EQ(km2.at("tags").as_array().size(), 2U);
  EXPECT_TRUE(obj(c.get("/api/v1/kms/KM1")).at("trust_level").is_null());
  EXPECT_EQ(c.request("PATCH", "/api/v1/kms/KM2", kAdminToken, R"({"trust_level":101})").status,
            400);
  EXPECT_EQ(c.request("PATCH", "/api/v1/kms/KM2", kAdminToken, R"({"trust_level":2.5})").status,
            400);
  EXPECT_EQ(c.request("PATCH", "/api/v1/kms/KM2", kAdminToken, R"({"tags":["bad tag"]})").status,
            400);
  EXPECT_EQ(c.request("PATCH", "/api/v1/kms/KM2", kAdminToken, R"({"tags":["a","a"]})").status,
            400);
  EXPECT_EQ(obj(c.get("/api/v1/kms/KM2")).at("trust_level").as_int64(), 30);  // unchanged
  auto topo = obj(c.get("/api/v1/topology"));
  EXPECT_EQ(topo.at("kms").as_array()[1].as_object().at("trust_level").as_int64(), 30);

  RawClient km1(h.ck_port());
  RawClient km2c(h.ck_port());
  RawClient km3(h.ck_port());
  ASSERT_EQ(km1.do_register("KM1", kLinks1).command, 0x41E2);
  ASSERT_EQ(km2c.do_register("KM2", kLinks2).command, 0x41E2);
  ASSERT_EQ(km3.do_register("KM3", kLinks3).command, 0x41E2);
  ASSERT_EQ(c.request("PUT", "/api/v1/thresholds", kAdminToken,
                      R"({"qber":0.11,"pool_floor_bits":0,"qber_hysteresis":0.1})")
                .status,
            200);
  auto ok = obj(c.get("/api/v1/routes?src=KM1&dst=KM3&min_trust_level=20"));
  ASSERT_EQ(ok.at("items").as_array().size(), 1U);
  auto r0 = ok.at("items").as_array()[0].as_object();
  EXPECT_EQ(r0.at("intermediate_kms").as_int64(), 1);
  EXPECT_EQ(r0.at("min_trust_level").as_int64(), 30);
  EXPECT_EQ(r0.at("intermediates").as_array()[0].as_object().at("km_id").as_string(), "KM2");
  EXPECT_FALSE(ok.contains("refusal"));
  auto refused = obj(c.get("/api/v1/routes?src=KM1&dst=KM3&min_trust_level=50"));
  EXPECT_TRUE(refused.at("items").as_array().empty());
  auto why = refused.at("refusal").as_object();
  EXPECT_EQ(why.at("code").as_string(), "trust_constraints");
  EXPECT_NE(std::string(why.at("detail").as_string()).find("'KM2' (trust 30 < 50)"),
            std::string::npos)
      << why.at("detail");
  auto tagged = obj(c.get("/api/v1/routes?src=KM1&dst=KM3&avoid_tags=site:colo"));
  EXPECT_EQ(tagged.at("refusal").as_object().at("code").as_string(), "trust_constraints");
  auto hops = obj(c.get("/api/v1/routes?src=KM1&dst=KM3&max_intermediates=0"));
  EXPECT_NE(std::string(hops.at("refusal").as_object().at("detail").as_string())
                .find("1 intermediate KMs (at most 0)"),
            std::string::npos);
  EXPECT_EQ(c.get("/api/v1/routes?src=KM1&dst=KM3&min_trust_level=101").status, 400);
  EXPECT_EQ(c.get("/api/v1/routes?src=KM1&dst=KM3&avoid_tags=bad%20tag").status, 400);

  // A policy's avoided tags.
  auto pol = c.request("PUT", "/api/v1/policy", kAdminToken,
                       R"({"mode":"manual","avoid_tags":["operator:x"],)"
                       R"("params":{"min_trust_level":10,"max_intermediates":3}})");
  ASSERT_EQ(pol.status, 200) << pol.body;
  auto pv = obj(c.get("/api/v1/policy"));
  EXPECT_EQ(pv.at("avoid_tags").as_array()[0].as_string(), "operator:x");
  EXPECT_DOUBLE_EQ(pv.at("params").as_object().at("min_trust_level").as_double(), 10);
  EXPECT_EQ(c.request("PUT", "/api/v1/policy", kAdminToken,
                      R"({"mode":"manual","avoid_tags":["no good"]})")
                .status,
            400);
  EXPECT_EQ(c.request("PUT", "/api/v1/policy", kAdminToken,
                      R"({"mode":"manual","params":{"min_trust_level":500}})")
                .status,
            400);

  // SAE pair constraints.
  EXPECT_TRUE(items(c.get("/api/v1/constraints")).empty());
  auto put = c.request("PUT", "/api/v1/constraints/SAE-1/SAE-3", kAdminToken,
                       R"({"min_trust_level":50,"max_intermediates":1,"avoid_tags":["x"]})");
  ASSERT_EQ(put.status, 201) << put.body;
  auto got = c.get("/api/v1/constraints/SAE-1/SAE-3");
  ASSERT_EQ(got.status, 200);
  EXPECT_EQ(got.header("etag"), put.header("etag"));
  auto g = obj(got);
  EXPECT_EQ(g.at("min_trust_level").as_int64(), 50);
  EXPECT_EQ(g.at("max_intermediates").as_int64(), 1);
  EXPECT_EQ(g.at("avoid_tags").as_array()[0].as_string(), "x");
  EXPECT_EQ(items(c.get("/api/v1/constraints")).size(), 1U);
  auto again = c.request("PUT", "/api/v1/constraints/SAE-1/SAE-3", kAdminToken,
                         R"({"min_trust_level":60,"max_intermediates":null})",
                         {{"If-Match", got.header("etag")}});
  EXPECT_EQ(again.status, 200) << again.body;
  EXPECT_TRUE(obj(c.get("/api/v1/constraints/SAE-1/SAE-3")).at("max_intermediates").is_null());
  EXPECT_EQ(c.request("PUT", "/api/v1/constraints/SAE-1/SAE-3", kAdminToken,
                      R"({"min_trust_level":60})", {{"If-Match", got.header("etag")}})
                .status,
            412);
  EXPECT_EQ(
      c.request("PUT", "/api/v1/constraints/SAE-1/SAE-3", kAdminToken, R"({"min_trust_level":101})")
          .status,
      400);
  EXPECT_EQ(
      c.request("PUT", "/api/v1/constraints/SAE-1/SAE-3", kAdminToken, R"({"colour":1})").status,
      400);
  EXPECT_EQ(c.request("PUT", "/api/v1/constraints/SAE-1/SAE-1", kAdminToken, "{}").status, 400);
  EXPECT_EQ(c.request("PUT", "/api/v1/constraints/SAE-1/SAE-3", kViewerToken, "{}").status, 403);
  EXPECT_EQ(c.request("DELETE", "/api/v1/constraints/SAE-1/SAE-3").status, 204);
  EXPECT_EQ(c.get("/api/v1/constraints/SAE-1/SAE-3").status, 404);
  EXPECT_EQ(c.request("DELETE", "/api/v1/constraints/SAE-1/SAE-3").status, 404);
}

// Pinned routes: put (validated against the topology), get with ETag, list, delete.
TEST_F(NorthboundApi, PinnedRoutes) {
  EXPECT_EQ(
      c.request("PUT", "/api/v1/routes/pinned/KM1/KM3", kAdminToken, R"({"kms":["KM1","KM3"]})")
          .status,
      400);  // no link joins KM1 and KM3
  EXPECT_EQ(c.request("PUT", "/api/v1/routes/pinned/KM1/KM3", kAdminToken,
                      R"({"kms":["KM1","KM2","KM3"],"links":["L23","L12"]})")
                .status,
            400);
  auto put = c.request("PUT", "/api/v1/routes/pinned/KM1/KM3", kAdminToken,
                       R"({"kms":["KM1","KM2","KM3"],"links":["L12",""]})");
  ASSERT_EQ(put.status, 201) << put.body;
  auto get = c.get("/api/v1/routes/pinned/KM1/KM3");
  ASSERT_EQ(get.status, 200);
  EXPECT_EQ(get.header("etag"), put.header("etag"));
  EXPECT_EQ(items(c.get("/api/v1/routes/pinned")).size(), 1U);
  auto replace = c.request("PUT", "/api/v1/routes/pinned/KM1/KM3", kAdminToken,
                           R"({"kms":["KM1","KM2","KM3"]})", {{"If-Match", get.header("etag")}});
  EXPECT_EQ(replace.status, 200) << replace.body;
  EXPECT_EQ(c.request("DELETE", "/api/v1/routes/pinned/KM1/KM3").status, 204);
  EXPECT_EQ(c.get("/api/v1/routes/pinned/KM1/KM3").status, 404);
  EXPECT_EQ(c.request("DELETE", "/api/v1/routes/pinned/KM1/KM3").status, 404);
}

// Policy: network-wide mode and parameters, per-pair overrides, validation.
TEST_F(NorthboundApi, Policy) {
  auto p = obj(c.get("/api/v1/policy"));
  EXPECT_EQ(p.at("mode").as_string(), "manual");
  auto put = c.request("PUT", "/api/v1/policy", kAdminToken,
                       R"({"mode":"fixed_rate","params":{"interval_s":30,"metric":"hop_count"}})");
  ASSERT_EQ(put.status, 200) << put.body;
  auto after = obj(c.get("/api/v1/policy"));
  EXPECT_EQ(after.at("mode").as_string(), "fixed_rate");
  EXPECT_DOUBLE_EQ(after.at("params").as_object().at("interval_s").as_double(), 30);
  EXPECT_EQ(after.at("params").as_object().at("metric").as_string(), "hop_count");
  EXPECT_EQ(c.request("PUT", "/api/v1/policy", kAdminToken, R"({"mode":"sometimes"})").status, 400);
  EXPECT_EQ(
      c.request("PUT", "/api/v1/policy", kAdminToken, R"({"mode":"manual","params":{"alpha":-1}})")
          .status,
      400);
  EXPECT_EQ(c.request("PUT", "/api/v1/policy", kAdminToken,
                      R"({"mode":"manual","params":{"nonsense":1}})")
                .status,
            400);
  EXPECT_EQ(obj(c.get("/api/v1/policy")).at("mode").as_string(), "fixed_rate");

  auto pair =
      c.request("PUT", "/api/v1/policy/pairs/KM1/KM3", kAdminToken, R"({"mode":"scheduled"})");
  ASSERT_EQ(pair.status, 201) << pair.body;
  EXPECT_EQ(obj(c.get("/api/v1/policy/pairs/KM1/KM3")).at("mode").as_string(), "scheduled");
  EXPECT_EQ(obj(c.get("/api/v1/policy")).at("overrides").as_array().size(), 1U);
  EXPECT_EQ(
      c.request("PUT", "/api/v1/policy/pairs/KM1/NOPE", kAdminToken, R"({"mode":"scheduled"})")
          .status,
      404);
  EXPECT_EQ(c.request("DELETE", "/api/v1/policy/pairs/KM1/KM3").status, 204);
  EXPECT_EQ(c.get("/api/v1/policy/pairs/KM1/KM3").status, 404);
}

// Schedules: create (validated), list, get, delete.
TEST_F(NorthboundApi, Schedules) {
  const std::string ok =
      R"({"src_km":"KM1","dst_km":"KM3","number_of_keys":10,)"
      R"("not_before":"2030-01-01T00:00:00Z","not_after":"2030-01-01T01:00:00Z"})";
  auto created = c.request("POST", "/api/v1/schedules", kAdminToken, ok);
  ASSERT_EQ(created.status, 201) << created.body;
  const std::string id(obj(created).at("schedule_id").as_string());
  EXPECT_EQ(created.header("location"), "/api/v1/schedules/" + id);
  EXPECT_EQ(items(c.get("/api/v1/schedules")).size(), 1U);
  EXPECT_EQ(c.get("/api/v1/schedules/" + id).status, 200);
  EXPECT_EQ(c.request("POST", "/api/v1/schedules", kAdminToken,
                      R"({"src_km":"KM1","dst_km":"KM3","number_of_keys":10,)"
                      R"("not_before":"2030-01-01T01:00:00Z","not_after":"2030-01-01T00:00:00Z"})")
                .status,
            400);
  EXPECT_EQ(c.request("POST", "/api/v1/schedules", kAdminToken,
                      R"({"src_km":"KM1","dst_km":"KM9","number_of_keys":10,)"
                      R"("not_before":"2030-01-01T00:00:00Z","not_after":"2030-01-01T01:00:00Z"})")
                .status,
            400);
  EXPECT_EQ(c.request("POST", "/api/v1/schedules", kAdminToken,
                      R"({"src_km":"KM1","dst_km":"KM3","number_of_keys":10,)"
                      R"("not_before":"yesterday","not_after":"2030-01-01T00:00:00Z"})")
                .status,
            400);
  EXPECT_EQ(c.request("DELETE", "/api/v1/schedules/" + id).status, 204);
  EXPECT_EQ(c.get("/api/v1/schedules/" + id).status, 404);
}

// Alarms raised in the core are listed, acknowledged (who and when) and cleared.
TEST_F(NorthboundApi, AlarmsListAckClear) {
  const auto id = h.on_core([](service::Core& core) {
    controller::AlarmSpec s;
    s.type = "qber_high";
    s.resource = "L12";
    s.link_id = "L12";
    s.severity = controller::Severity::kMajor;
    s.value = 0.2;
    return core.alarms.raise(s).first.id;
  });
  h.on_core([](service::Core& core) {
    controller::AlarmSpec s;
    s.type = "link_down";
    s.resource = "L23";
    s.severity = controller::Severity::kCritical;
    core.alarms.raise(s);
    return 0;
  });
  auto list = items(c.get("/api/v1/alarms?state=active"));
  ASSERT_EQ(list.size(), 2U);
  EXPECT_EQ(items(c.get("/api/v1/alarms?severity=critical")).size(), 1U);
  EXPECT_EQ(c.get("/api/v1/alarms?severity=loud").status, 400);
  auto page1 = obj(c.get("/api/v1/alarms?limit=1"));
  ASSERT_FALSE(page1.at("next_cursor").is_null());
  auto page2 = obj(
      c.get("/api/v1/alarms?limit=1&cursor=" + std::string(page1.at("next_cursor").as_string())));
  EXPECT_EQ(page2.at("items").as_array().size(), 1U);
  EXPECT_TRUE(page2.at("next_cursor").is_null());

  const auto path = "/api/v1/alarms/" + std::to_string(id);
  auto ack = c.request("POST", path + "/ack");
  ASSERT_EQ(ack.status, 200) << ack.body;
  EXPECT_TRUE(obj(ack).at("acknowledged").as_bool());
  EXPECT_EQ(obj(ack).at("acknowledged_by").as_string(), "ops");
  auto cleared = c.request("POST", path + "/clear", kAdminToken, "{}");
  ASSERT_EQ(cleared.status, 200) << cleared.body;
  EXPECT_EQ(obj(cleared).at("state").as_string(), "cleared");
  EXPECT_EQ(c.request("POST", path + "/clear").status, 409);
  EXPECT_EQ(c.request("POST", path + "/ack", kAdminToken, R"({"note":"x"})").status, 400);
  EXPECT_EQ(c.request("POST", "/api/v1/alarms/999/ack").status, 404);
  EXPECT_EQ(c.request("POST", "/api/v1/alarms/abc/ack").status, 400);
  EXPECT_EQ(items(c.get("/api/v1/alarms?state=cleared")).size(), 1U);
  EXPECT_EQ(items(c.get("/api/v1/alarms?state=active")).size(), 1U);
}

// Sessions, relays and accounting list (empty here) with their filters validated; unknown IDs
// are 404.
TEST_F(NorthboundApi, SessionsRelaysAccounting) {
  EXPECT_TRUE(items(c.get("/api/v1/sessions")).empty());
  EXPECT_EQ(c.get("/api/v1/sessions?state=bogus").status, 400);
  EXPECT_EQ(c.get("/api/v1/sessions/00000000-0000-4000-8000-000000000000").status, 404);
  EXPECT_TRUE(items(c.get("/api/v1/relays?state=relayed")).empty());
  EXPECT_EQ(c.get("/api/v1/relays/x").status, 404);
  auto acc = c.get("/api/v1/accounting?group_by=sae_id");
  ASSERT_EQ(acc.status, 200) << acc.body;
  EXPECT_TRUE(items(acc).empty());
  EXPECT_EQ(c.get("/api/v1/accounting?from=never").status, 400);
  EXPECT_EQ(c.get("/api/v1/accounting?from=2030-01-01T00:00:00Z&to=2029-01-01T00:00:00Z").status,
            400);
  // The ledger summary: nothing live, leases from the ledger's configuration, viewers may read.
  auto led = c.get("/api/v1/ledger", kViewerToken);
  ASSERT_EQ(led.status, 200) << led.body;
  const auto l = led.json().as_object();
  EXPECT_EQ(l.at("live_keys").to_number<std::int64_t>(), 0);
  EXPECT_TRUE(l.at("next_lease_expiry").is_null());
  EXPECT_EQ(l.at("overdue_ms").to_number<std::int64_t>(), 0);
  EXPECT_EQ(l.at("reservation_lease_ms").to_number<std::int64_t>(), 10'000);
  EXPECT_TRUE(l.at("links").as_array().empty());
  EXPECT_EQ(c.get("/api/v1/ledger?x=1").status, 400);
}

// Every write is audited with who, what, when and the outcome, and the trail pages.
TEST_F(NorthboundApi, AuditTrail) {
  ASSERT_EQ(c.request("POST", "/api/v1/kms", kAdminToken, R"({"km_id":"KM7"})").status, 201);
  ASSERT_EQ(c.request("POST", "/api/v1/kms", kAdminToken, R"({"km_id":7})").status, 400);
  auto trail = items(c.get("/api/v1/audit"));
  ASSERT_GE(trail.size(), 2U);
  auto ok = trail[trail.size() - 2].as_object();
  EXPECT_EQ(ok.at("actor").as_string(), "ops");
  EXPECT_EQ(ok.at("action").as_string(), "POST /api/v1/kms");
  EXPECT_EQ(ok.at("outcome").as_string(), "201");
  EXPECT_FALSE(ok.at("at").is_null());
  EXPECT_FALSE(ok.at("remote").as_string().empty());
  EXPECT_EQ(trail.back().as_object().at("outcome").as_string(), "400");
  auto first = obj(c.get("/api/v1/audit?limit=1"));
  ASSERT_FALSE(first.at("next_cursor").is_null());
  auto second = items(
      c.get("/api/v1/audit?limit=1&cursor=" + std::string(first.at("next_cursor").as_string())));
  ASSERT_EQ(second.size(), 1U);
  EXPECT_GT(second[0].as_object().at("id").as_int64(),
            first.at("items").as_array()[0].as_object().at("id").as_int64());
}

// Health is open and reports the store and the Ck listener.
TEST_F(NorthboundApi, Health) {
  auto r = c.get("/api/v1/health", "");
  ASSERT_EQ(r.status, 200) << r.body;
  auto o = obj(r);
  EXPECT_EQ(o.at("status").as_string(), "ok");
  EXPECT_FALSE(o.at("store").as_object().at("configured").as_bool());
  EXPECT_TRUE(o.at("ck").as_object().at("listening").as_bool());
  EXPECT_EQ(o.at("kms").as_object().at("total").as_int64(), 3);
}

// The short-lived list cache serves a consistent page and expires; an API write empties it, so
// a client always reads its own writes.
TEST(NorthboundCache, LinkListCacheExpiresAndApiWritesInvalidate) {
  ApiHarness::Config cfg;
  cfg.list_cache_ttl = 200ms;
  ApiHarness h(cfg);
  auto c = h.client();
  auto first = c.get("/api/v1/links");
  // A change that does not come through the API (as agents' status reports) is seen once the
  // page expires.
  h.on_core([](service::Core& core) {
    core.network.thresholds().qber = 0.05;
    return 0;
  });
  EXPECT_EQ(c.get("/api/v1/links").body, first.body);  // cached
  std::this_thread::sleep_for(250ms);
  auto second = c.get("/api/v1/links");
  EXPECT_NE(second.body, first.body);
  // An API write is visible to the next read at once.
  ASSERT_EQ(
      c.request("PATCH", "/api/v1/links/L12", kAdminToken, R"({"admin_state":"disabled"})").status,
      200);
  auto third = c.get("/api/v1/links");
  EXPECT_NE(third.body, second.body);
  EXPECT_NE(third.body.find(R"("admin_state":"disabled")"), std::string::npos);
  ASSERT_EQ(c.request("POST", "/api/v1/kms", kAdminToken, R"({"km_id":"KM9"})").status, 201);
  EXPECT_NE(c.get("/api/v1/kms").body.find(R"("km_id":"KM9")"), std::string::npos);
}

}  // namespace
}  // namespace qkdn::test
