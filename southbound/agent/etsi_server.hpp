// Internal: the agent's ETSI GS QKD 014 v1.1.1 server on the shared HTTP server (base/net). One
// listener per agent process serves the SAEs of every hosted KM:
//   GET      /api/v1/keys/{slave_SAE_ID}/status
//   GET|POST /api/v1/keys/{slave_SAE_ID}/enc_keys     (query number, size | Key request JSON)
//   GET|POST /api/v1/keys/{master_SAE_ID}/dec_keys    (query key_ID | Key IDs JSON)
// HTTPS with mutual TLS, TLS 1.3 only, key exchange over the strongest groups OpenSSL offers
// (qkdn/net/tls.hpp): the calling SAE is the ID of its verified client certificate's SAN URI
// urn:qkdn:sae:<id> (no other role and no CN counts). In the explicit insecure lab mode the server
// speaks plain HTTP and the caller names itself in X-SAE-ID. The caller is checked on the request
// header, before the body is read: an SAE no hosted KM serves gets 401. Every error carries the
// ETSI Error object {"message":..,"details":[{..}]}. Parsing is in etsi_request.hpp; the KMs are
// reached only through SaeKeyService. Key bytes are base64-encoded straight into the response
// buffer, which is wiped once written; nothing logs them.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ssl/context.hpp>

#include "qkdn/agent/key_wrap.hpp"
#include "sae_keys.hpp"

namespace qkdn::net {
class HttpServer;
}

namespace qkdn::agent {

/// Listener settings (from AgentConfig).
struct EtsiServerOptions {
  std::string host = "127.0.0.1";
  std::uint16_t port = 0;                 ///< 0 = automatic
  bool insecure = false;                  ///< plain HTTP + X-SAE-ID (labs only)
  std::string cert_file;                  ///< server certificate chain (PEM), TLS only
  std::string key_file;                   ///< its private key (PEM)
  std::string ca_file;                    ///< CA bundle verifying SAE client certificates
  std::size_t max_connections = 1024;     ///< further connections are closed at once
  std::size_t max_unauthenticated = 256;  ///< of those, without an SAE identity yet
  std::chrono::milliseconds handshake_timeout{5'000};
  std::chrono::milliseconds read_timeout{10'000};  ///< a whole request
  std::chrono::milliseconds idle_timeout{30'000};  ///< keep-alive wait
  /// SAEs outside every trusted node: SAE ID -> certificate file (AgentConfig::outside_sae_certs),
  /// loaded and validated by the constructor; their keys leave only wrapped.
  std::map<std::string, std::string> outside_sae_certs;
  std::string outside_sae_ca;
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
  /// Starts accepting.
  void start();
  /// Thread-safe, idempotent.
  void stop();
  [[nodiscard]] std::uint16_t port() const { return port_; }
  [[nodiscard]] const std::string& host() const { return options_.host; }

 private:
  boost::asio::io_context& io_;
  SaeKeyService& service_;
  EtsiServerOptions options_;
  EtsiSpawn spawn_;
  std::uint16_t port_;
  std::unique_ptr<boost::asio::ssl::context> tls_;
  std::map<std::string, wrap::Recipient> outside_saes_;  ///< loaded from options_
  std::unique_ptr<qkdn::net::HttpServer> http_;
};

}  // namespace qkdn::agent
