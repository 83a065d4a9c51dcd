// Northbound API with a real PostgreSQL store (scripts/pg-private.sh, or QKDN_TEST_PG_DSN):
// operator writes persist and survive a controller restart, the audit trail comes from the
// store, and while the store is down writes answer 503 and change nothing.
#include "db_test_support.hpp"
#include "northbound_test_support.hpp"

namespace qkdn::test {
namespace {

using db::test::PgServer;
using namespace std::chrono_literals;

/// Service + API on a store, with admin/viewer tokens.
class StoredApi {
 public:
  explicit StoredApi(const std::string& dsn) {
    service::ServiceOptions o;
    o.insecure_ck = true;
    o.listen_host = "127.0.0.1";
    o.listen_port = 0;
    o.topology = line_topology();
    o.store = db::pg_store_factory(dsn);
    o.log = [](std::string_view) {};
    service_ = std::make_unique<service::ControllerService>(std::move(o));
    service_->start();
    northbound::ApiOptions a;
    a.listen = "127.0.0.1:0";
    a.list_cache_ttl = 0ms;
    a.tokens_file = (dir_.path() / "tokens").string();
    std::ofstream(a.tokens_file) << "ops admin " << ApiHarness::sha256(kAdminToken) << "\n";
    api_ = std::make_unique<northbound::ApiServer>(*service_, a);
    api_->start();
  }
  ~StoredApi() {
    api_->stop();
    service_->stop();
  }
  HttpClient client() { return HttpClient(api_->port()); }

 private:
  TempDir dir_;
  std::unique_ptr<service::ControllerService> service_;
  std::unique_ptr<northbound::ApiServer> api_;
};

json::object obj(const Reply& r) { return r.json().as_object(); }

// Writes through the API are in the store: a new controller on the same database serves them.
TEST(NorthboundStore, WritesSurviveRestart) {
  const auto dsn = PgServer::fresh_database();
  {
    StoredApi s(dsn);
    auto c = s.client();
    ASSERT_EQ(c.request("POST", "/api/v1/kms", kAdminToken, R"({"km_id":"KM4","site":"d"})").status,
              201);
    ASSERT_EQ(c.request("POST", "/api/v1/links", kAdminToken,
                        R"({"link_id":"L34","a":"KM3","b":"KM4","key_rate_bps":10})")
                  .status,
              201);
    auto p = c.request("PATCH", "/api/v1/links/L12", kAdminToken,
                       R"({"admin_state":"maintenance","pool_floor_bits":512})");
    ASSERT_EQ(p.status, 200) << p.body;
    ASSERT_EQ(c.request("PUT", "/api/v1/policy", kAdminToken,
                        R"({"mode":"fixed_rate","params":{"interval_s":30}})")
                  .status,
              200);
    ASSERT_EQ(c.request("PUT", "/api/v1/routes/pinned/KM1/KM3", kAdminToken,
                        R"({"kms":["KM1","KM2","KM3"]})")
                  .status,
              201);
    ASSERT_EQ(c.request("PUT", "/api/v1/thresholds", kAdminToken,
                        R"({"qber":0.07,"pool_floor_bits":1024,"qber_hysteresis":0.02})")
                  .status,
              200);
    ASSERT_EQ(
        c.request("POST", "/api/v1/schedules", kAdminToken,
                  R"({"schedule_id":"11111111-1111-4111-8111-111111111111",)"
                  R"("src_km":"KM1","dst_km":"KM3","number_of_keys":5,)"
                  R"("not_before":"2031-01-01T00:00:00Z","not_after":"2031-01-02T00:00:00Z"})")
            .status,
        201);
  }
  StoredApi again(dsn);
  auto c = again.client();
  EXPECT_EQ(c.get("/api/v1/kms/KM4").status, 200);
  EXPECT_EQ(c.get("/api/v1/links/L34").status, 200);
  auto l12 = obj(c.get("/api/v1/links/L12"));
  EXPECT_EQ(l12.at("admin_state").as_string(), "maintenance");
  EXPECT_EQ(l12.at("pool_floor_bits").as_int64(), 512);
  auto policy = obj(c.get("/api/v1/policy"));
  EXPECT_EQ(policy.at("mode").as_string(), "fixed_rate");
  EXPECT_DOUBLE_EQ(policy.at("params").as_object().at("interval_s").as_double(), 30);
  EXPECT_EQ(c.get("/api/v1/routes/pinned/KM1/KM3").status, 200);
  EXPECT_EQ(c.get("/api/v1/schedules/11111111-1111-4111-8111-111111111111").status, 200);
  auto thresholds = obj(c.get("/api/v1/thresholds"));
  EXPECT_DOUBLE_EQ(thresholds.at("qber").as_double(), 0.07);
  EXPECT_EQ(thresholds.at("pool_floor_bits").to_number<std::int64_t>(), 1024);
  EXPECT_DOUBLE_EQ(thresholds.at("qber_hysteresis").as_double(), 0.02);
  // The audit trail of the first run is in the store (its writer is asynchronous: bounded wait).
  std::size_t writes = 0;
  for (int i = 0; i < 50 && writes < 6; ++i) {
    writes = 0;
    const auto trail = c.get("/api/v1/audit?limit=1000").json();
    for (const auto& a : trail.as_object().at("items").as_array()) {
      if (a.as_object().at("actor").as_string() == "ops") ++writes;
    }
    if (writes < 6) std::this_thread::sleep_for(100ms);
  }
  EXPECT_GE(writes, 6U);
  auto health = obj(c.get("/api/v1/health", ""));
  EXPECT_TRUE(health.at("store").as_object().at("configured").as_bool());
  EXPECT_TRUE(health.at("store").as_object().at("up").as_bool());
}

// With the database stopped a write answers 503 (Retry-After) and is not applied; once it is
// back, writes succeed again.
TEST(NorthboundStore, StoreDownIs503AndNothingApplied) {
  if (!PgServer::private_server()) GTEST_SKIP() << "needs the private server";
  const auto dsn = PgServer::fresh_database();
  StoredApi s(dsn);
  auto c = s.client();
  PgServer::stop();
  auto r = c.request("POST", "/api/v1/kms", kAdminToken, R"({"km_id":"KM5"})");
  const auto before = c.get("/api/v1/thresholds").body;
  auto t = c.request("PUT", "/api/v1/thresholds", kAdminToken,
                     R"({"qber":0.05,"pool_floor_bits":2048,"qber_hysteresis":0.01})");
  const auto after = c.get("/api/v1/thresholds").body;
  PgServer::start();
  EXPECT_EQ(t.status, 503) << t.body;
  EXPECT_EQ(after, before);
  EXPECT_EQ(r.status, 503) << r.body;
  EXPECT_EQ(r.header("content-type"), "application/problem+json");
  EXPECT_FALSE(r.header("retry-after").empty());
  EXPECT_EQ(c.get("/api/v1/kms/KM5").status, 404);
  Reply ok;
  for (int i = 0; i < 100; ++i) {
    ok = c.request("POST", "/api/v1/kms", kAdminToken, R"({"km_id":"KM5"})");
    if (ok.status != 503) break;
    std::this_thread::sleep_for(100ms);
  }
  EXPECT_EQ(ok.status, 201) << ok.body;
}

}  // namespace
}  // namespace qkdn::test
