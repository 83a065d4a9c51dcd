// The northbound management API (DESIGN.md section 4): REST resources over HTTP/1.1 (optional
// TLS), bearer-token authentication with roles viewer and admin, RFC 9457 problems, ETags,
// idempotency keys, cursor pagination, the OpenAPI document and /metrics.
//
// Authentication (see northbound/README.md), checked on the request header before the body is
// read:
// - with a tokens file, every route except GET /api/v1/health, GET /metrics and
//   GET /api/v1/openapi.json needs `Authorization: Bearer <token>`; viewer tokens may read,
//   admin tokens may also write;
// - without a tokens file (and without `insecure`), reads are open to anyone (role viewer, actor
//   "anonymous") and every write answers 401 with a problem saying that no tokens are configured;
// - `insecure` (--api-insecure, labs only) makes every request admin; a warning is logged.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "qkdn/service/interworking_relay.hpp"

namespace qkdn::service {
class ControllerService;
}  // namespace qkdn::service

namespace qkdn::northbound {

/// The live Cxi state of one peer controller (docs/cxi.md), for GET /api/v1/peers. Filled by the
/// interworking runtime; plain data so that the API does not depend on it.
struct PeerLiveState {
  std::string state = "down";       ///< down | connecting | up
  std::int64_t last_heard_ms = -1;  ///< Unix ms of the last message from the peer; -1 = never
  std::size_t reachable_saes = 0;   ///< SAEs the peer announces behind its gateways
  std::size_t sessions_opened = 0;
  std::vector<std::pair<std::string, std::string>> inter_qkdn_links;  ///< link_id -> up | down
  /// The last Mxi summary the peer sent (docs/cxi.md clause 5.8) as its JSON object text, and
  /// when it arrived (Unix ms); empty / -1 = none yet.
  std::string summary_json;
  std::int64_t summary_received_ms = -1;
};

/// Start-up options of the API. Validated by ApiServer's constructor.
struct ApiOptions {
  std::string listen = "127.0.0.1:8080";  ///< HOST:PORT (port 0 = any free port, see port())
  /// Tokens file: one token per line, `NAME ROLE SHA256-HEX` (role viewer | admin; the hash is
  /// the lower-case hex SHA-256 of the token text); blank lines and `#` comments are ignored.
  /// Make entries with scripts/make-token.sh. Empty = no tokens (see the file comment).
  std::string tokens_file;
  /// Every request is admin, without a token (labs and tests only; logged loudly).
  bool insecure = false;
  std::string tls_cert;  ///< PEM certificate chain; with tls_key enables HTTPS
  std::string tls_key;   ///< PEM private key
  /// Bodies of PUT /api/v1/topology (whole network documents); larger ones answer 413.
  std::size_t max_body_bytes = std::size_t{4} << 20;
  /// Bodies of every other route; larger ones answer 413 before they are read.
  std::size_t max_small_body_bytes = std::size_t{64} << 10;
  std::size_t max_header_bytes = std::size_t{16} << 10;  ///< larger headers answer 431
  std::chrono::milliseconds handshake_timeout{5'000};    ///< HTTPS: the TLS handshake
  std::chrono::milliseconds read_timeout{10'000};  ///< a whole request must arrive within this
  std::chrono::milliseconds idle_timeout{60'000};  ///< keep-alive wait between requests
  std::chrono::milliseconds write_timeout{10'000};
  /// Open connections; further ones are closed at once (qkdn-controller lowers it to fit the
  /// descriptor limit).
  std::size_t max_connections = 4096;
  /// Of those, connections that have not presented a valid token yet (TLS handshakes
  /// included); without a tokens file every connection counts here.
  std::size_t max_unauthenticated = 512;
  /// Threads of the API's own io_context (requests never wait behind the Ck traffic of the
  /// service's threads; what needs the core hops to its strand).
  std::size_t threads = 1;
  std::size_t default_page_limit = 100;  ///< lists without `limit`
  std::size_t max_page_limit = 1000;     ///< larger `limit` answers 400
  /// Idempotency-Key entries kept (least recently stored dropped first) and for how long.
  std::size_t idempotency_entries = 10'000;
  std::chrono::milliseconds idempotency_ttl{std::chrono::hours{24}};
  /// GET /api/v1/links and /api/v1/kms serve a serialized page (per query string) for this long
  /// before asking the core again, so readers see state at most this old (0 = no cache).
  std::chrono::milliseconds list_cache_ttl{25};
  /// The live Cxi state of a peer by QKDN ID (thread-safe; called from request handlers); empty
  /// or nullopt = no interworking runtime (peers show state "unknown").
  std::function<std::optional<PeerLiveState>(const std::string& qkdn_id)> peer_state;
  /// The Kxi-1 relays through GWNs this controller took part in (thread-safe; for GET
  /// /api/v1/interworking/relays); empty = no interworking runtime (an empty list).
  std::function<std::vector<service::InterworkingRelayRecord>()> interworking_relays;
};

/// One route of the router (method and path template, e.g. "/api/v1/kms/{km_id}").
struct ApiRoute {
  std::string method;
  std::string path;
  bool write = false;  ///< needs the admin role
  bool open = false;   ///< served without a token even when tokens are configured
};

/// The northbound API server. Runs on its own io_context and threads (ApiOptions::threads).
class ApiServer {
 public:
  /// Validates options, reads the tokens file and the TLS files. Throws InvalidArgument with one
  /// clear line on bad configuration (unreadable file, malformed token line, bad listen address,
  /// a TLS certificate without a key). `service` must outlive the server.
  ApiServer(service::ControllerService& service, ApiOptions options);
  /// Stops if still running.
  ~ApiServer();
  ApiServer(const ApiServer&) = delete;
  ApiServer& operator=(const ApiServer&) = delete;

  /// Binds, listens and starts accepting on the API's own threads. Throws InvalidArgument when
  /// the address cannot be bound. The service may be started before or after; requests that
  /// need the core are answered once the service's threads run.
  void start();
  /// The bound port (after start(); useful with port 0).
  [[nodiscard]] std::uint16_t port() const;
  /// Stops accepting, closes open connections and ends the API's threads (requests in flight
  /// get up to 5 s). Idempotent; call before the service's stop().
  void stop();

  /// Every route the router serves (for tests and the OpenAPI equality check).
  [[nodiscard]] std::vector<ApiRoute> routes() const;
  /// The OpenAPI 3 document served at /api/v1/openapi.json (embedded at build time).
  [[nodiscard]] static std::string_view openapi_document();

  struct State;

 private:
  std::shared_ptr<State> state_;
};

}  // namespace qkdn::northbound
