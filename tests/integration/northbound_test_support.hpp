// Helpers for the northbound integration tests: the controller service and the API server
// in-process on 127.0.0.1:0 (insecure Ck, small inline topology), a tokens file in a temporary
// folder, and a blocking HTTP client (Beast) with a bounded wait on every request.
#pragma once

#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <future>
#include <map>
#include <memory>
#include <string>

#include <gtest/gtest.h>
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/json.hpp>

#include "ck_test_support.hpp"
#include "qkdn/northbound/api_server.hpp"
#include "qkdn/service/controller_service.hpp"

namespace qkdn::test {

namespace beast = boost::beast;
namespace http = beast::http;
namespace json = boost::json;

inline constexpr const char* kAdminToken = "admin-secret-token-0123456789";
inline constexpr const char* kViewerToken = "viewer-secret-token-0123456789";
// sha256 of the tokens above (`printf %s TOKEN | sha256sum`), computed in the fixture.

/// A temporary folder removed at destruction.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "qkdn-nb-XXXXXX").string();
    if (mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  [[nodiscard]] const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

/// One HTTP response.
struct Reply {
  int status = 0;
  std::map<std::string, std::string> headers;  ///< lower-case names
  std::string body;
  [[nodiscard]] json::value json() const { return json::parse(body); }
  [[nodiscard]] std::string header(const std::string& name) const {
    auto it = headers.find(name);
    return it == headers.end() ? std::string{} : it->second;
  }
};

/// Blocking client: one connection per request.
class HttpClient {
 public:
  explicit HttpClient(std::uint16_t port) : port_(port) {}

  Reply request(const std::string& method, const std::string& target,
                const std::string& token = kAdminToken, const std::string& body = {},
                std::map<std::string, std::string> headers = {}) {
    net::io_context ioc;
    beast::tcp_stream stream(ioc);
    stream.expires_after(std::chrono::seconds(10));
    stream.connect(net::ip::tcp::endpoint(net::ip::make_address("127.0.0.1"), port_));
    http::request<http::string_body> req(http::string_to_verb(method), target, 11);
    if (req.method() == http::verb::unknown) req.method_string(method);
    req.set(http::field::host, "127.0.0.1");
    if (!token.empty()) req.set(http::field::authorization, "Bearer " + token);
    if (!body.empty() && headers.count("Content-Type") == 0) {
      req.set(http::field::content_type, "application/json");
    }
    for (const auto& [k, v] : headers) req.set(k, v);
    req.body() = body;
    req.prepare_payload();
    http::write(stream, req);
    beast::flat_buffer buf;
    http::response_parser<http::string_body> parser;
    parser.body_limit(64 * 1024 * 1024);
    http::read(stream, buf, parser);
    auto& res = parser.get();
    Reply r;
    r.status = static_cast<int>(res.result_int());
    for (const auto& f : res) {
      std::string name(f.name_string());
      for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      r.headers[name] = std::string(f.value());
    }
    r.body = res.body();
    beast::error_code ec;
    stream.socket().shutdown(net::ip::tcp::socket::shutdown_both, ec);
    return r;
  }
  Reply get(const std::string& target, const std::string& token = kAdminToken) {
    return request("GET", target, token);
  }

 private:
  std::uint16_t port_;
};

/// Options of ApiHarness.
struct ApiConfig {
  bool tokens = true;  ///< write a tokens file (admin + viewer)
  bool insecure = false;
  std::chrono::milliseconds read_timeout{2000};
  std::size_t max_body_bytes = 64 * 1024;
  std::size_t max_small_body_bytes = 64 * 1024;
  std::size_t max_unauthenticated = 512;
  std::chrono::milliseconds list_cache_ttl{0};
  controller::TopologyDoc topology;
  controller::StoreFactory store;  ///< empty: no store
};

/// ControllerService + ApiServer in-process.
class ApiHarness {
 public:
  using Config = ApiConfig;

  ApiHarness() : ApiHarness(ApiConfig{}) {}
  explicit ApiHarness(ApiConfig cfg) {
    service::ServiceOptions o;
    o.insecure_ck = true;
    o.listen_host = "127.0.0.1";
    o.listen_port = 0;
    o.heartbeat_interval = std::chrono::seconds(30);
    o.read_timeout = std::chrono::seconds(5);
    o.topology = cfg.topology.kms.empty() ? line_topology() : cfg.topology;
    o.store = cfg.store;
    o.log = [](std::string_view) {};
    service_ = std::make_unique<service::ControllerService>(std::move(o));
    service_->start();
    northbound::ApiOptions a;
    a.listen = "127.0.0.1:0";
    a.read_timeout = cfg.read_timeout;
    a.max_body_bytes = cfg.max_body_bytes;
    a.max_small_body_bytes = cfg.max_small_body_bytes;
    a.max_unauthenticated = cfg.max_unauthenticated;
    a.list_cache_ttl = cfg.list_cache_ttl;
    a.insecure = cfg.insecure;
    if (cfg.tokens) {
      tokens_file_ = dir_.path() / "tokens";
      std::ofstream f(tokens_file_);
      f << "# test tokens\n"
        << "ops admin " << sha256(kAdminToken) << "\n"
        << "watcher viewer " << sha256(kViewerToken) << "\n";
      a.tokens_file = tokens_file_.string();
    }
    api_ = std::make_unique<northbound::ApiServer>(*service_, a);
    api_->start();
  }
  ~ApiHarness() {
    api_->stop();
    service_->stop();
  }

  service::ControllerService& svc() { return *service_; }
  northbound::ApiServer& api() { return *api_; }
  [[nodiscard]] std::uint16_t port() const { return api_->port(); }
  [[nodiscard]] std::uint16_t ck_port() const { return service_->port(); }
  HttpClient client() { return HttpClient(port()); }

  /// Runs f(Core&) on the core strand and waits for it.
  template <class F>
  auto on_core(F f) {
    using R = std::invoke_result_t<F, service::Core&>;
    std::packaged_task<R()> task([this, &f] {
      auto core = service_->core_refs();
      return f(core);
    });
    auto fut = task.get_future();
    net::post(service_->core_executor(), [&task] { task(); });
    return fut.get();
  }

  static std::string sha256(const std::string& s) {
    // Same algorithm as the server; independent implementation through the shell tool.
    std::string cmd = "printf %s '" + s + "' | sha256sum";
    std::string out;
    FILE* p = popen(cmd.c_str(), "r");
    char buf[128];
    while (p != nullptr && fgets(buf, sizeof buf, p) != nullptr) out += buf;
    if (p != nullptr) pclose(p);
    return out.substr(0, 64);
  }

 private:
  TempDir dir_;
  std::filesystem::path tokens_file_;
  std::unique_ptr<service::ControllerService> service_;
  std::unique_ptr<northbound::ApiServer> api_;
};

}  // namespace qkdn::test
