// The network view (northbound/ui/): static HTML, JavaScript and CSS compiled into the binary,
// served without a token. The page holds no data; it reads the API with the user's bearer token
// (kept in the browser tab's session storage, sent in the Authorization header, never in a URL).
#include "api_internal.hpp"

namespace qkdn::northbound {

extern const char* const kUiIndexHtml;  // generated from northbound/ui/*.{html,js,css}
extern const char* const kUiAppJs;
extern const char* const kUiStyleCss;

namespace {

// Same-origin only: no inline script or style, no framing, nothing fetched from elsewhere.
constexpr const char* kContentSecurityPolicy =
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

Handler static_file(const char* const& text, const char* content_type) {
  return [&text, content_type](Api&, RequestContext& ctx) -> net::awaitable<HttpResponse> {
    ctx.query.finish();
    HttpResponse out;
    out.body = text;
    out.content_type = content_type;
    out.headers.emplace_back("Content-Security-Policy", kContentSecurityPolicy);
    out.headers.emplace_back("X-Content-Type-Options", "nosniff");
    out.headers.emplace_back("Referrer-Policy", "no-referrer");
    // Built into this binary: a new controller may serve a new page, so revalidate each load.
    out.headers.emplace_back("Cache-Control", "no-cache");
    co_return out;
  };
}

}  // namespace

void add_ui_routes(Router& r) {
  r.add("GET", "/ui", false, true, static_file(kUiIndexHtml, "text/html; charset=utf-8"));
  r.add("GET", "/ui/", false, true, static_file(kUiIndexHtml, "text/html; charset=utf-8"));
  r.add("GET", "/ui/app.js", false, true, static_file(kUiAppJs, "text/javascript; charset=utf-8"));
  r.add("GET", "/ui/style.css", false, true, static_file(kUiStyleCss, "text/css; charset=utf-8"));
}

}  // namespace qkdn::northbound
