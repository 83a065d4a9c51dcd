// Internal: the agent's admin HTTP/1.1 listener (tests, demos, operators) on the shared HTTP
// server (base/net). Plain HTTP:
//   GET  /admin/state                     hosted KMs, Ck state, links with pools, rates and key
//                                         accounting (keys_generated = keys_available +
//                                         keys_reserved + keys_allocated + keys_consumed +
//                                         keys_discarded)
//   POST /admin/links/{link_id}           {"key_rate_bps":N,"qber":X,"up":bool} (any subset)
//   POST /admin/kms/{km_id}/disconnect    drops the KM's Ck connection (it reconnects)
// Access: with a token (--admin-token-file) every request needs `Authorization: Bearer <token>`
// (401 otherwise, checked on the header before the body is read); without one the listener must
// be on a loopback address (Agent refuses any other at start).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

namespace qkdn::net {
class HttpServer;
}

namespace qkdn::agent {

class AgentCore;

/// Admin listener. bind() then start(); stop() closes the listener and open connections.
class AdminServer {
 public:
  /// `token` empty = no authentication (loopback only: the caller checks the address).
  AdminServer(AgentCore& core, std::string host, std::uint16_t port, std::string token);
  ~AdminServer();
  AdminServer(const AdminServer&) = delete;
  AdminServer& operator=(const AdminServer&) = delete;
  /// Binds and listens; throws InvalidArgument (bad address) or Unavailable (bind failed).
  /// Returns the bound port.
  std::uint16_t bind();
  void start();
  /// Thread-safe, idempotent.
  void stop();
  [[nodiscard]] std::uint16_t port() const { return port_; }

 private:
  AgentCore& core_;
  std::string host_;
  std::uint16_t port_;
  std::string token_digest_;  ///< SHA-256 of the token; empty = none
  std::unique_ptr<qkdn::net::HttpServer> http_;
};

}  // namespace qkdn::agent
