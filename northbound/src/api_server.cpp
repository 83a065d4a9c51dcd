// Placeholder of the northbound API server: binds and answers 503 until the handlers land.
#include "qkdn/northbound/api_server.hpp"

#include <utility>

#include "qkdn/controller/error.hpp"
#include "qkdn/northbound/http_server.hpp"
#include "qkdn/service/controller_service.hpp"

namespace qkdn::northbound {

struct ApiServer::State {
  State(service::ControllerService& s, ApiOptions o) : svc(s), options(std::move(o)) {}
  service::ControllerService& svc;
  ApiOptions options;
  std::unique_ptr<HttpServer> http;
};

ApiServer::ApiServer(service::ControllerService& service, ApiOptions options)
    : state_(std::make_shared<State>(service, std::move(options))) {
  (void)parse_endpoint(state_->options.listen);
}

ApiServer::~ApiServer() { stop(); }

void ApiServer::start() {
  auto handler = [](HttpRequest) -> net::awaitable<HttpResponse> {
    HttpResponse r;
    r.status = 503;
    r.content_type = "application/problem+json";
    r.body = R"({"type":"about:blank","title":"Service Unavailable","status":503})";
    co_return r;
  };
  state_->http = std::make_unique<HttpServer>(state_->svc.io_context(),
                                              parse_endpoint(state_->options.listen), handler);
  state_->http->start();
}

std::uint16_t ApiServer::port() const { return state_->http ? state_->http->port() : 0; }

void ApiServer::stop() {
  if (state_->http) state_->http->stop();
}

std::vector<ApiRoute> ApiServer::routes() const { return {}; }

std::string_view ApiServer::openapi_document() { return "{}"; }

}  // namespace qkdn::northbound
