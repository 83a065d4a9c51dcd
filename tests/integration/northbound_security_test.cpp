// Northbound API: route table and OpenAPI document, authentication and authorization, audit of
// auth failures, request limits (oversize bodies, slow clients), ETags, idempotency keys,
// pagination, problem documents and /metrics (promtool when installed).
#include <poll.h>
#include <sys/socket.h>

#include <array>
#include <cstdio>
#include <optional>
#include <set>
#include <thread>

#include "northbound_test_support.hpp"
#include "qkdn/service/metrics.hpp"

namespace qkdn::test {
namespace {

using namespace std::chrono_literals;

/// A concrete target for a route template.
std::string concrete(const std::string& path) {
  static const std::map<std::string, std::string> kValues = {
      {"{km_id}", "KM1"},
      {"{link_id}", "L12"},
      {"{src}", "KM1"},
      {"{dst}", "KM3"},
      {"{alarm_id}", "1"},
      {"{schedule_id}", "00000000-0000-4000-8000-000000000000"},
      {"{session_id}", "00000000-0000-4000-8000-000000000001"},
      {"{relay_id}", "00000000-0000-4000-8000-000000000002"},
      {"{src_sae}", "SAE-1"},
      {"{dst_sae}", "SAE-3"},
      {"{qkdn_id}", "QKDN-B"}};
  std::string out = path;
  for (const auto& [k, v] : kValues) {
    for (auto pos = out.find(k); pos != std::string::npos; pos = out.find(k)) {
      out.replace(pos, k.size(), v);
    }
  }
  if (out == "/api/v1/routes") out += "?src=KM1&dst=KM3";
  return out;
}

void expect_problem(const Reply& r, int status) {
  EXPECT_EQ(r.status, status) << r.body;
  EXPECT_EQ(r.header("content-type"), "application/problem+json") << r.body;
  auto j = r.json().as_object();
  EXPECT_EQ(j.at("status").as_int64(), status);
  EXPECT_TRUE(j.at("type").as_string().starts_with("urn:qkdn:problem:"));
  EXPECT_FALSE(j.at("title").as_string().empty());
}

/// Every metric of DESIGN.md section 7.
constexpr const char* kDesignMetrics[] = {"qkdn_link_key_pool_bytes",
                                          "qkdn_link_stored_keys",
                                          "qkdn_link_secret_key_rate_bytes_per_second",
                                          "qkdn_link_key_consumption_bytes_per_second",
                                          "qkdn_link_qber_ratio",
                                          "qkdn_link_up",
                                          "qkdn_km_connected",
                                          "qkdn_sessions_active",
                                          "qkdn_key_relays_total",
                                          "qkdn_key_relay_duration_seconds",
                                          "qkdn_route_computation_seconds",
                                          "qkdn_reroutes_total",
                                          "qkdn_alarms_active",
                                          "qkdn_key_reservations_total",
                                          "qkdn_ck_messages_total",
                                          "qkdn_ck_protocol_errors_total",
                                          "qkdn_ck_connections",
                                          "qkdn_http_requests_total",
                                          "qkdn_http_request_duration_seconds",
                                          "qkdn_store_up",
                                          "qkdn_build_info"};

/// True when `text` holds a sample of `name` (a line starting with the name, or the name of a
/// histogram's _count series), not only its HELP and TYPE.
bool has_sample(const std::string& text, const std::string& name) {
  for (const auto& n : {name, name + "_count"}) {
    for (auto pos = text.find(n); pos != std::string::npos; pos = text.find(n, pos + 1)) {
      const bool line_start = pos == 0 || text[pos - 1] == '\n';
      const char next = pos + n.size() < text.size() ? text[pos + n.size()] : '\0';
      if (line_start && (next == '{' || next == ' ')) return true;
    }
  }
  return false;
}

/// Runs `promtool check metrics` on `text`: "" when it passes, else its output. Skips the
/// calling test when promtool is not installed.
std::optional<std::string> promtool_problems(const std::string& text) {
  if (std::system("command -v promtool >/dev/null 2>&1") != 0) return std::nullopt;
  TempDir dir;
  const auto file = dir.path() / "metrics.txt";
  std::ofstream(file) << text;
  const auto cmd = "promtool check metrics < " + file.string() + " > " +
                   (dir.path() / "out.txt").string() + " 2>&1";
  const int rc = std::system(cmd.c_str());
  std::ifstream out(dir.path() / "out.txt");
  std::string lint((std::istreambuf_iterator<char>(out)), std::istreambuf_iterator<char>());
  return rc == 0 ? std::string{} : "exit " + std::to_string(rc) + ": " + lint;
}

class NorthboundSecurity : public ::testing::Test {
 protected:
  ApiHarness h;
  HttpClient c = h.client();
};

// The OpenAPI document describes exactly the routes the router serves, and it is served.
TEST_F(NorthboundSecurity, OpenApiMatchesRouter) {
  auto doc = json::parse(northbound::ApiServer::openapi_document()).as_object();
  EXPECT_TRUE(doc.at("openapi").as_string().starts_with("3."));
  std::set<std::string> documented;
  for (const auto& p : doc.at("paths").as_object()) {
    for (const auto& m : p.value().as_object()) {
      std::string method(m.key());
      for (auto& ch : method) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
      documented.insert(method + " " + std::string(p.key()));
    }
  }
  std::set<std::string> served;
  for (const auto& r : h.api().routes()) served.insert(r.method + " " + r.path);
  for (const auto& s : served) EXPECT_EQ(documented.count(s), 1U) << "undocumented route " << s;
  for (const auto& d : documented) EXPECT_EQ(served.count(d), 1U) << "documented, not served " << d;
  auto r = c.get("/api/v1/openapi.json", "");
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(r.body, northbound::ApiServer::openapi_document());
}

// Without a token, or with a bad one, every protected route answers 401 with a JSON problem and
// WWW-Authenticate; open routes answer without a token; each failure is audited.
TEST_F(NorthboundSecurity, MissingOrBadTokenIs401AndAudited) {
  std::size_t failures = 0;
  for (const auto& route : h.api().routes()) {
    const auto target = concrete(route.path);
    const std::string body = route.write ? "{}" : "";
    auto none = c.request(route.method, target, "", body);
    if (route.open) {
      EXPECT_NE(none.status, 401) << route.path;
      continue;
    }
    expect_problem(none, 401);
    EXPECT_TRUE(none.header("www-authenticate").starts_with("Bearer")) << route.path;
    auto bad = c.request(route.method, target, "not-a-token", body);
    expect_problem(bad, 401);
    EXPECT_NE(bad.header("www-authenticate").find("invalid_token"), std::string::npos);
    failures += 2;
  }
  const auto audit_doc = c.get("/api/v1/audit?limit=1000").json();
  const auto& audit = audit_doc.as_object();
  std::size_t audited = 0;
  for (const auto& a : audit.at("items").as_array()) {
    if (a.as_object().at("outcome").as_string() == "401") ++audited;
  }
  EXPECT_EQ(audited, failures);
}

// A viewer may read everything but is refused (403, audited) on every mutating route; admin
// passes authorization on the same routes.
TEST_F(NorthboundSecurity, ViewerRefusedOnEveryWrite) {
  std::size_t writes = 0;
  for (const auto& route : h.api().routes()) {
    const auto target = concrete(route.path);
    if (route.write) {
      auto r = c.request(route.method, target, kViewerToken, "{}");
      expect_problem(r, 403);
      ++writes;
    } else {
      auto r = c.request(route.method, target, kViewerToken);
      EXPECT_TRUE(r.status == 200 || r.status == 404) << route.path << " " << r.status << r.body;
    }
  }
  EXPECT_GE(writes, 17U);
  std::size_t audited = 0;
  const auto trail = c.get("/api/v1/audit?limit=1000").json();
  for (const auto& a : trail.as_object().at("items").as_array()) {
    const auto& o = a.as_object();
    if (o.at("outcome").as_string() == "403") {
      ++audited;
      EXPECT_EQ(o.at("actor").as_string(), "watcher");
      EXPECT_FALSE(o.at("at").is_null());
    }
  }
  EXPECT_EQ(audited, writes);
}

// Unknown paths are 404 and wrong methods 405 with Allow, both as problems.
TEST_F(NorthboundSecurity, UnknownPathAndMethod) {
  expect_problem(c.get("/api/v1/nothing"), 404);
  auto r = c.request("DELETE", "/api/v1/topology");
  expect_problem(r, 405);
  EXPECT_NE(r.header("allow").find("PUT"), std::string::npos);
  expect_problem(c.get("/api/v1/kms?bogus=1"), 400);
  expect_problem(c.get("/api/v1/kms?limit=0"), 400);
  expect_problem(c.get("/api/v1/kms?limit=abc"), 400);
  expect_problem(c.get("/api/v1/kms?cursor=!!"), 400);
}

// A body larger than the limit is refused with 413 before it is read.
TEST_F(NorthboundSecurity, OversizeBodyIs413) {
  std::string big(200 * 1024, ' ');
  big = "{\"name\":\"x\"" + big + "}";
  auto r = c.request("PUT", "/api/v1/topology", kAdminToken, big);
  expect_problem(r, 413);
  // Nothing changed.
  EXPECT_EQ(c.get("/api/v1/topology").json().as_object().at("name").as_string(), "ck-test");
}

/// True when the peer of `fd` closed the connection, waiting at most `bound` (poll + recv on the
/// descriptor: Asio's blocking reads ignore SO_RCVTIMEO). Bytes that arrive are appended to `got`.
bool closed_within(int fd, std::chrono::milliseconds bound, std::string* got = nullptr) {
  const auto deadline = std::chrono::steady_clock::now() + bound;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    pollfd pfd{fd, POLLIN, 0};
    const int r = ::poll(&pfd, 1, static_cast<int>(std::max<std::int64_t>(0, left.count())));
    if (r <= 0) return false;
    std::array<char, 4096> buf{};
    const auto n = ::recv(fd, buf.data(), buf.size(), MSG_DONTWAIT);
    if (n == 0) return true;
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) continue;
      return true;
    }
    if (got != nullptr) got->append(buf.data(), static_cast<std::size_t>(n));
  }
}

/// Sends raw bytes on a fresh connection and reads until EOF or `bound`.
std::string raw_exchange(std::uint16_t port, const std::string& bytes,
                         std::chrono::milliseconds bound = 5s) {
  net::io_context ioc;
  net::ip::tcp::socket s(ioc);
  s.connect(net::ip::tcp::endpoint(net::ip::make_address("127.0.0.1"), port));
  net::write(s, net::buffer(bytes));
  std::string out;
  closed_within(s.native_handle(), bound, &out);
  return out;
}

// The bearer token is checked on the request header: a PUT /api/v1/topology announcing a 1 MB
// body gets its 401 (no token) or 403 (viewer) at once, although no byte of the body was sent,
// and the failure is audited.
TEST_F(NorthboundSecurity, TokenIsCheckedBeforeTheBody) {
  const std::string head =
      "PUT /api/v1/topology HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
      "Content-Length: 1000000\r\n";
  const auto started = std::chrono::steady_clock::now();
  const auto anonymous = raw_exchange(h.port(), head + "\r\n", 1500ms);
  EXPECT_TRUE(anonymous.starts_with("HTTP/1.1 401")) << anonymous.substr(0, 60);
  const auto viewer =
      raw_exchange(h.port(), head + "Authorization: Bearer " + kViewerToken + "\r\n\r\n", 1500ms);
  EXPECT_TRUE(viewer.starts_with("HTTP/1.1 403")) << viewer.substr(0, 60);
  EXPECT_LT(std::chrono::steady_clock::now() - started, 1500ms);
  std::size_t audited = 0;
  const auto audit_doc = c.get("/api/v1/audit?limit=1000").json();
  for (const auto& a : audit_doc.as_object().at("items").as_array()) {
    const auto& o = a.as_object();
    if (o.at("action").as_string() == "PUT /api/v1/topology" &&
        (o.at("outcome").as_string() == "401" || o.at("outcome").as_string() == "403")) {
      ++audited;
    }
  }
  EXPECT_EQ(audited, 2u);
}

// Only PUT /api/v1/topology may send a large body: with a 4 MiB document limit, a 200 KiB body
// to another route is refused with 413 (before it is read), while the topology route reads it.
TEST(NorthboundLimits, SmallBodyLimitOutsideTheTopologyRoute) {
  ApiHarness::Config cfg;
  cfg.max_body_bytes = 4 * 1024 * 1024;
  ApiHarness h(cfg);
  auto c = h.client();
  std::string big(200 * 1024, ' ');
  auto km = c.request("POST", "/api/v1/kms", kAdminToken, "{\"km_id\":\"KM9\"" + big + "}");
  expect_problem(km, 413);
  auto topo = c.request("PUT", "/api/v1/topology", kAdminToken, "{\"name\":7" + big + "}");
  EXPECT_NE(topo.status, 413) << topo.body;
  EXPECT_EQ(topo.status, 400) << topo.body;
}

// Connections without a valid token are capped: with 4 silent connections held, newcomers close
// the ones that have waited longest (over 1 s), long before the 20 s read deadline, and a client
// with a token is still served.
TEST(NorthboundLimits, UnauthenticatedConnectionsAreCapped) {
  ApiHarness::Config cfg;
  cfg.max_unauthenticated = 4;
  cfg.read_timeout = 20'000ms;
  ApiHarness h(cfg);
  net::io_context ioc;
  auto connect = [&] {
    auto s = std::make_unique<net::ip::tcp::socket>(ioc);
    s->connect(net::ip::tcp::endpoint(net::ip::make_address("127.0.0.1"), h.port()));
    return s;
  };
  std::vector<std::unique_ptr<net::ip::tcp::socket>> idle;
  for (int i = 0; i < 4; ++i) idle.push_back(connect());
  const auto started = std::chrono::steady_clock::now();
  std::vector<std::unique_ptr<net::ip::tcp::socket>> later;
  bool closed = false;
  while (std::chrono::steady_clock::now() - started < 8s) {
    closed = closed_within(idle.front()->native_handle(), 100ms);
    if (closed) break;
    later.push_back(connect());
  }
  EXPECT_TRUE(closed) << "the oldest silent connection was not evicted";
  EXPECT_LT(std::chrono::steady_clock::now() - started, 8s);
  // The cap is full of silent connections; once they are old enough to be evicted (the
  // documented 1 s), a client with a token takes the oldest one's slot.
  std::this_thread::sleep_for(1100ms);
  EXPECT_EQ(h.client().get("/api/v1/kms").status, 200);
}

// A client that sends a request too slowly is cut off by the read deadline.
TEST(NorthboundLimits, SlowClientIsCutOff) {
  ApiHarness::Config cfg;
  cfg.read_timeout = 300ms;
  ApiHarness h(cfg);
  net::io_context ioc;
  net::ip::tcp::socket s(ioc);
  s.connect(net::ip::tcp::endpoint(net::ip::make_address("127.0.0.1"), h.port()));
  const auto start = std::chrono::steady_clock::now();
  net::write(s, net::buffer(std::string("GET /api/v1/health HTTP/1.1\r\nHost: x\r\n")));
  timeval tv{5, 0};
  setsockopt(s.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  std::array<char, 256> buf{};
  boost::system::error_code ec;
  std::size_t got = 0;
  for (;;) {
    const auto n = s.read_some(net::buffer(buf), ec);
    got += n;
    if (ec) break;
  }
  const auto took = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(ec, net::error::eof) << ec.message();
  EXPECT_EQ(got, 0U);
  EXPECT_GE(took, 250ms);
  EXPECT_LT(took, 3s);
  // The server is still serving.
  EXPECT_EQ(h.client().get("/api/v1/health", "").status, 200);
}

// PUT and PATCH honour If-Match: a stale ETag is 412 and changes nothing; the current one works.
TEST_F(NorthboundSecurity, IfMatchMismatchIs412) {
  auto link = c.get("/api/v1/links/L12");
  ASSERT_EQ(link.status, 200);
  const auto etag = link.header("etag");
  ASSERT_FALSE(etag.empty());
  auto stale = c.request("PATCH", "/api/v1/links/L12", kAdminToken,
                         R"({"admin_state":"maintenance"})", {{"If-Match", "\"0000\""}});
  expect_problem(stale, 412);
  EXPECT_EQ(c.get("/api/v1/links/L12").json().as_object().at("admin_state").as_string(), "enabled");
  auto ok = c.request("PATCH", "/api/v1/links/L12", kAdminToken, R"({"admin_state":"maintenance"})",
                      {{"If-Match", etag}});
  ASSERT_EQ(ok.status, 200) << ok.body;
  EXPECT_NE(ok.header("etag"), etag);
  // The old ETag is now stale.
  auto again = c.request("PATCH", "/api/v1/links/L12", kAdminToken, R"({"admin_state":"enabled"})",
                         {{"If-Match", etag}});
  expect_problem(again, 412);

  auto topo = c.get("/api/v1/topology");
  auto doc = topo.body;
  expect_problem(
      c.request("PUT", "/api/v1/topology", kAdminToken, doc, {{"If-Match", "\"stale\""}}), 412);
  auto put =
      c.request("PUT", "/api/v1/topology", kAdminToken, doc, {{"If-Match", topo.header("etag")}});
  EXPECT_EQ(put.status, 200) << put.body;
  auto policy = c.get("/api/v1/policy");
  expect_problem(c.request("PUT", "/api/v1/policy", kAdminToken, R"({"mode":"manual"})",
                           {{"If-Match", "\"x\""}}),
                 412);
  EXPECT_EQ(c.request("PUT", "/api/v1/policy", kAdminToken, R"({"mode":"manual"})",
                      {{"If-Match", policy.header("etag")}})
                .status,
            200);
}

// Idempotency-Key: a replay returns the stored response without applying twice; the same key
// with another body is 422.
TEST_F(NorthboundSecurity, IdempotencyKeyReplay) {
  const std::string body = R"({"km_id":"KM9","site":"lab"})";
  auto first = c.request("POST", "/api/v1/kms", kAdminToken, body, {{"Idempotency-Key", "k-1"}});
  ASSERT_EQ(first.status, 201) << first.body;
  auto replay = c.request("POST", "/api/v1/kms", kAdminToken, body, {{"Idempotency-Key", "k-1"}});
  EXPECT_EQ(replay.status, 201);
  EXPECT_EQ(replay.body, first.body);
  EXPECT_EQ(replay.header("idempotent-replayed"), "true");
  // Without the key the same POST is a conflict: the first one was applied once.
  expect_problem(c.request("POST", "/api/v1/kms", kAdminToken, body), 409);
  auto other = c.request("POST", "/api/v1/kms", kAdminToken, R"({"km_id":"KM8"})",
                         {{"Idempotency-Key", "k-1"}});
  expect_problem(other, 422);
  EXPECT_EQ(c.get("/api/v1/kms/KM8").status, 404);
  expect_problem(c.request("POST", "/api/v1/kms", kAdminToken, body,
                           {{"Idempotency-Key", std::string(300, 'k')}}),
                 400);
}

// Cursor pagination walks every item exactly once.
TEST_F(NorthboundSecurity, PaginationAcrossPages) {
  for (int i = 0; i < 7; ++i) {
    auto r = c.request("POST", "/api/v1/kms", kAdminToken,
                       R"({"km_id":"P)" + std::to_string(i) + R"("})");
    ASSERT_EQ(r.status, 201) << r.body;
  }
  std::vector<std::string> ids;
  std::string cursor;
  int pages = 0;
  for (;;) {
    auto page = c.get("/api/v1/kms?limit=3" + (cursor.empty() ? "" : "&cursor=" + cursor));
    ASSERT_EQ(page.status, 200) << page.body;
    auto o = page.json().as_object();
    ++pages;
    for (const auto& k : o.at("items").as_array()) {
      ids.emplace_back(k.as_object().at("km_id").as_string());
    }
    if (o.at("next_cursor").is_null()) break;
    cursor = std::string(o.at("next_cursor").as_string());
    ASSERT_LT(pages, 10);
  }
  EXPECT_EQ(pages, 4);  // 10 KMs by 3
  EXPECT_EQ(ids.size(), 10U);
  EXPECT_TRUE(std::is_sorted(ids.begin(), ids.end()));
  EXPECT_EQ(std::set<std::string>(ids.begin(), ids.end()).size(), ids.size());
}

// Bad bodies: malformed JSON, wrong types, unknown fields, wrong Content-Type.
TEST_F(NorthboundSecurity, BadBodiesArePreciseProblems) {
  auto r = c.request("POST", "/api/v1/kms", kAdminToken, R"({"km_id": )");
  expect_problem(r, 400);
  EXPECT_NE(r.json().as_object().at("detail").as_string().find("malformed JSON"),
            std::string::npos);
  r = c.request("POST", "/api/v1/kms", kAdminToken, R"({"km_id": 5})");
  expect_problem(r, 400);
  EXPECT_NE(r.body.find("km_id"), std::string::npos);
  r = c.request("POST", "/api/v1/kms", kAdminToken, R"({"km_id":"KM7","colour":"red"})");
  expect_problem(r, 400);
  EXPECT_NE(r.body.find("colour"), std::string::npos);
  r = c.request("POST", "/api/v1/kms", kAdminToken, R"(["KM7"])");
  expect_problem(r, 400);
  r = c.request("POST", "/api/v1/kms", kAdminToken, R"({"km_id":"KM7"})",
                {{"Content-Type", "text/plain"}});
  expect_problem(r, 415);
  r = c.request("PATCH", "/api/v1/links/L12", kAdminToken, R"({"qber_threshold":"high"})");
  expect_problem(r, 400);
  r = c.request("PATCH", "/api/v1/links/L12", kAdminToken, R"({"a":"KM3"})");
  expect_problem(r, 400);
  r = c.request("PATCH", "/api/v1/links/NOPE", kAdminToken, R"({"admin_state":"disabled"})");
  expect_problem(r, 404);
  EXPECT_EQ(c.get("/api/v1/kms/KM7").status, 404);
}

// Without a tokens file reads are open and writes answer 401 saying no tokens are configured.
TEST(NorthboundModes, NoTokensFileIsReadOnly) {
  ApiHarness::Config cfg;
  cfg.tokens = false;
  ApiHarness h(cfg);
  auto c = h.client();
  EXPECT_EQ(c.get("/api/v1/kms", "").status, 200);
  auto w = c.request("POST", "/api/v1/kms", "", R"({"km_id":"KM9"})");
  expect_problem(w, 401);
  EXPECT_NE(w.body.find("no API tokens are configured"), std::string::npos);
}

// --api-insecure: every request is admin.
TEST(NorthboundModes, InsecureAllowsWrites) {
  ApiHarness::Config cfg;
  cfg.tokens = false;
  cfg.insecure = true;
  ApiHarness h(cfg);
  auto c = h.client();
  EXPECT_EQ(c.request("POST", "/api/v1/kms", "", R"({"km_id":"KM9"})").status, 201);
  auto audit = c.get("/api/v1/audit", "").json().as_object().at("items").as_array();
  ASSERT_FALSE(audit.empty());
  EXPECT_EQ(audit.back().as_object().at("actor").as_string(), "insecure");
}

// /metrics serves every family of DESIGN.md section 7, counts API requests, and passes
// `promtool check metrics` when promtool is installed.
TEST_F(NorthboundSecurity, MetricsExposition) {
  EXPECT_EQ(c.get("/api/v1/kms").status, 200);
  // Ck traffic and one protocol error, so that those families have series.
  RawClient km(h.ck_port());
  ASSERT_EQ(km.do_register("KM1").command, 0x41E2);
  km.send(0x14E3, 2, "not json");
  ck::Frame answer;
  (void)km.read(answer, 2s);
  auto r = c.get("/metrics", "");
  ASSERT_EQ(r.status, 200);
  EXPECT_TRUE(r.header("content-type").starts_with("text/plain"));
  for (const char* name : kDesignMetrics) {
    EXPECT_NE(r.body.find(std::string("# TYPE ") + name + " "), std::string::npos) << name;
  }
  EXPECT_NE(r.body.find(R"(qkdn_http_requests_total{code="200",method="GET"})"), std::string::npos);
  const auto lint = promtool_problems(r.body);
  if (!lint) GTEST_SKIP() << "promtool not installed (Debian package prometheus): check skipped";
  EXPECT_EQ(*lint, "");
}

// The KM and link lists carry a strong ETag of the page; If-None-Match with it answers 304
// without a body until the page changes, then 200 with the new page and a new ETag.
TEST_F(NorthboundSecurity, ListEtagAndIfNoneMatch) {
  for (const char* list : {"/api/v1/links", "/api/v1/kms"}) {
    auto first = c.get(list);
    ASSERT_EQ(first.status, 200) << list;
    const auto etag = first.header("etag");
    ASSERT_TRUE(etag.size() > 2 && etag.front() == '"' && etag.back() == '"') << etag;
    EXPECT_EQ(c.get(list).header("etag"), etag) << "same page, same ETag";
    auto again = c.request("GET", list, kAdminToken, "", {{"If-None-Match", etag}});
    EXPECT_EQ(again.status, 304) << list;
    EXPECT_TRUE(again.body.empty());
    EXPECT_EQ(again.header("etag"), etag);
    EXPECT_EQ(c.request("GET", list, kAdminToken, "", {{"If-None-Match", "\"other\""}}).status,
              200);
  }
  const auto etag = c.get("/api/v1/links").header("etag");
  ASSERT_EQ(
      c.request("PATCH", "/api/v1/links/L23", kAdminToken, R"({"admin_state":"disabled"})").status,
      200);
  auto changed = c.request("GET", "/api/v1/links", kAdminToken, "", {{"If-None-Match", etag}});
  EXPECT_EQ(changed.status, 200);
  EXPECT_NE(changed.header("etag"), etag);
  EXPECT_NE(changed.body.find("disabled"), std::string::npos);
}

// A fresh controller, scraped before anything else happened (no KM connected, no API request
// yet): every metric of DESIGN.md section 7 is there with at least one series, Ck counters per
// command and direction and the usual protocol error reasons at zero, and promtool passes.
TEST_F(NorthboundSecurity, FreshControllerExportsEveryMetric) {
  auto r = c.get("/metrics", "");
  ASSERT_EQ(r.status, 200);
  for (const char* name : kDesignMetrics) {
    EXPECT_NE(r.body.find(std::string("# TYPE ") + name + " "), std::string::npos) << name;
    EXPECT_TRUE(has_sample(r.body, name)) << name << " has no series";
  }
  for (const char* series :
       {R"(qkdn_ck_messages_total{command="register",direction="in"} 0)",
        R"(qkdn_ck_messages_total{command="register_response",direction="out"} 0)",
        R"(qkdn_ck_messages_total{command="error",direction="in"} 0)",
        R"(qkdn_ck_messages_total{command="error",direction="out"} 0)",
        R"(qkdn_ck_protocol_errors_total{reason="bad_request"} 0)",
        R"(qkdn_http_requests_total{code="200",method="GET"} 0)",
        R"(qkdn_km_connected{km="KM1"} 0)"}) {
    EXPECT_NE(r.body.find(series), std::string::npos) << series;
  }
  const auto lint = promtool_problems(r.body);
  if (!lint) GTEST_SKIP() << "promtool not installed (Debian package prometheus): check skipped";
  EXPECT_EQ(*lint, "");
}

// Without any topology the link and KM families have no series, yet they are still declared
// (HELP and TYPE) so that every name is on /metrics, and the exposition stays valid.
TEST(NorthboundMetrics, EmptyFamiliesAreDeclared) {
  service::Metrics m("test", "0");
  const auto text = m.serialize();
  for (const char* name : kDesignMetrics) {
    EXPECT_NE(text.find(std::string("# TYPE ") + name + " "), std::string::npos) << name;
  }
  EXPECT_FALSE(has_sample(text, "qkdn_link_up"));
  const auto lint = promtool_problems(text);
  if (!lint) GTEST_SKIP() << "promtool not installed (Debian package prometheus): check skipped";
  EXPECT_EQ(*lint, "");
}

}  // namespace
}  // namespace qkdn::test
