// The network view's static files (/ui/): served without a token even when tokens are
// configured (they hold no data), with the right types and a same-origin-only policy; the page
// loads nothing from elsewhere.
#include <gtest/gtest.h>

#include <regex>
#include <string>

#include "northbound_test_support.hpp"

namespace qkdn::test {
namespace {

// Each file answers 200 without a token, with its content type, the CSP and nosniff headers.
TEST(NorthboundUi, StaticFilesServedWithoutTokenAndWithPolicy) {
  ApiHarness h;
  auto c = h.client();
  const struct {
    const char* path;
    const char* type;
    const char* marker;
  } files[] = {{"/ui", "text/html", "<svg id=\"map\""},
               {"/ui/", "text/html", "<svg id=\"map\""},
               {"/ui/app.js", "text/javascript", "qkdnView"},
               {"/ui/style.css", "text/css", ".link.qber"}};
  for (const auto& f : files) {
    auto r = c.get(f.path, "");
    ASSERT_EQ(r.status, 200) << f.path;
    EXPECT_TRUE(r.header("content-type").starts_with(f.type))
        << f.path << " " << r.header("content-type");
    EXPECT_NE(r.body.find(f.marker), std::string::npos) << f.path;
    const auto csp = r.header("content-security-policy");
    EXPECT_NE(csp.find("default-src 'none'"), std::string::npos) << f.path;
    EXPECT_NE(csp.find("script-src 'self'"), std::string::npos) << f.path;
    EXPECT_NE(csp.find("frame-ancestors 'none'"), std::string::npos) << f.path;
    EXPECT_EQ(r.header("x-content-type-options"), "nosniff") << f.path;
  }
  // The data behind the page still needs a token.
  EXPECT_EQ(c.get("/api/v1/links", "").status, 401);
}

// The page references only same-origin files: no scheme-qualified or protocol-relative URL in
// a src or href, so it works offline and with the CSP above.
TEST(NorthboundUi, PageLoadsNothingFromElsewhere) {
  ApiHarness h;
  auto c = h.client();
  const auto page = c.get("/ui/", "").body;
  const std::regex external(R"re((src|href)\s*=\s*"(https?:)?//)re", std::regex::icase);
  EXPECT_FALSE(std::regex_search(page, external));
  const std::regex inline_script(R"re(<script(?![^>]*\bsrc=))re", std::regex::icase);
  EXPECT_FALSE(std::regex_search(page, inline_script)) << "inline scripts break the CSP";
  auto js = c.get("/ui/app.js", "").body;
  const std::string svg_ns = "http://www.w3.org/2000/svg";  // a name, never fetched
  for (auto at = js.find(svg_ns); at != std::string::npos; at = js.find(svg_ns)) {
    js.erase(at, svg_ns.size());
  }
  EXPECT_EQ(js.find("innerHTML"), std::string::npos) << "API data must reach the page as text";
  EXPECT_EQ(js.find("http://"), std::string::npos);
  EXPECT_EQ(js.find("https://"), std::string::npos);
}

}  // namespace
}  // namespace qkdn::test
