// Internal: the agent's admin HTTP/1.1 listener (tests and demos). Plain HTTP on loopback:
//   GET  /admin/state                     hosted KMs, Ck state, links with pools, rates and key
//                                         accounting (keys_generated = keys_available +
//                                         keys_reserved + keys_allocated + keys_consumed +
//                                         keys_discarded)
//   POST /admin/links/{link_id}           {"key_rate_bps":N,"qber":X,"up":bool} (any subset)
//   POST /admin/kms/{km_id}/disconnect    drops the KM's Ck connection (it reconnects)
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/strand.hpp>

namespace qkdn::agent {

class AgentCore;

/// Admin listener. bind() then start(); stop() closes the listener and open connections.
class AdminServer {
 public:
  AdminServer(AgentCore& core, std::string host, std::uint16_t port);
  ~AdminServer();
  /// Binds and listens; throws Unavailable. Returns the bound port.
  std::uint16_t bind();
  void start();
  /// Thread-safe, idempotent.
  void stop();
  [[nodiscard]] std::uint16_t port() const { return port_; }

 private:
  struct Connection;
  AgentCore& core_;
  std::string host_;
  std::uint16_t port_;
  boost::asio::strand<boost::asio::io_context::executor_type> strand_;
  boost::asio::ip::tcp::acceptor acceptor_;
  std::mutex mutex_;  // guards connections_ only (registration and closing)
  std::vector<std::weak_ptr<Connection>> connections_;
};

}  // namespace qkdn::agent
