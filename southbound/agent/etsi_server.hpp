// Internal: the agent's ETSI GS QKD 014 v1.1.1 server (HTTP/1.1 on Boost.Beast). One listener per
// agent process serves the SAEs of every hosted KM:
//   GET      /api/v1/keys/{slave_SAE_ID}/status
//   GET|POST /api/v1/keys/{slave_SAE_ID}/enc_keys     (query number, size | Key request JSON)
//   GET|POST /api/v1/keys/{master_SAE_ID}/dec_keys    (query key_ID | Key IDs JSON)
// HTTPS with mutual TLS (TLS 1.2 or newer): the calling SAE is the identity of its verified client
// certificate (SAN URI urn:qkdn:sae:<id> or urn:qkdn:km:<id>, else the subject CN). In the
// explicit insecure lab mode the server speaks plain HTTP and the caller names itself in X-SAE-ID.
// Every error carries the ETSI Error object {"message":..,"details":[{..}]}. The server parses and
// validates; the KMs are reached only through SaeKeyService. Key bytes are base64-encoded straight
// into the response buffer, which is wiped once written; nothing logs them.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/strand.hpp>

#include "sae_keys.hpp"

namespace qkdn::agent {

/// Listener settings (from AgentConfig).
struct EtsiServerOptions {
  std::string host = "127.0.0.1";
  std::uint16_t port = 0;              ///< 0 = automatic
  bool insecure = false;               ///< plain HTTP + X-SAE-ID (labs only)
  std::string cert_file;               ///< server certificate chain (PEM), TLS only
  std::string key_file;                ///< its private key (PEM)
  std::string ca_file;                 ///< CA bundle verifying SAE client certificates
  std::size_t max_connections = 1024;  ///< further connections are closed at once
};

/// Starts a root coroutine on an executor and accounts for it (AgentCore::spawn).
using EtsiSpawn = std::function<void(const boost::asio::any_io_executor&,
                                     boost::asio::awaitable<void>, std::string)>;

/// The ETSI 014 listener. Construct (loads the TLS files; throws InvalidArgument naming a bad
/// file), bind(), start(); stop() closes the listener and every open connection. `service` and
/// `io` must outlive the server and every coroutine it spawned.
class EtsiServer {
 public:
  EtsiServer(boost::asio::io_context& io, SaeKeyService& service, EtsiServerOptions options,
             EtsiSpawn spawn);
  ~EtsiServer();
  EtsiServer(const EtsiServer&) = delete;
  EtsiServer& operator=(const EtsiServer&) = delete;

  /// Binds and listens; throws InvalidArgument (bad address) or Unavailable (bind failed).
  /// Returns the bound port.
  std::uint16_t bind();
  /// Spawns the accept loop.
  void start();
  /// Thread-safe, idempotent.
  void stop();
  [[nodiscard]] std::uint16_t port() const { return port_; }
  [[nodiscard]] const std::string& host() const { return options_.host; }

  struct Connection;  // internal

 private:
  boost::asio::awaitable<void> accept_loop();
  boost::asio::awaitable<void> serve(std::shared_ptr<Connection> conn);

  boost::asio::io_context& io_;
  SaeKeyService& service_;
  EtsiServerOptions options_;
  EtsiSpawn spawn_;
  std::uint16_t port_;
  std::unique_ptr<boost::asio::ssl::context> tls_;
  boost::asio::strand<boost::asio::io_context::executor_type> strand_;
  boost::asio::ip::tcp::acceptor acceptor_;
  std::atomic<bool> stopping_{false};
  std::atomic<std::size_t> active_{0};
  std::mutex mutex_;  // guards connections_ only (registration and closing)
  std::vector<std::weak_ptr<Connection>> connections_;
};

}  // namespace qkdn::agent
