// Internal: Kxi' key transfer between the two KMs of an interworking node (ITU-T Y.3818 6.2,
// 9.2 1; draft Q.QKDNi_KM 7.1, 8.1, 8.2, Appendix I): the HTTPS `ext_keys` listener of a
// receiving KM (on the project's one HTTP server, base/net) and the sending KM's client. Both
// use mutual TLS 1.3 with the KMs' own certificates (urn:qkdn:km:<id>), each verified against the
// CA of the partner's QKDN (`partner_ca`) and pinned to the configured partner KM. The wire
// format is kxi_codec.hpp and docs/kxi.md.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ssl/context.hpp>

#include "kxi_codec.hpp"
#include "qkdn/agent/agent.hpp"

namespace qkdn::net {
class HttpServer;
}

namespace qkdn::agent {

/// Reads the --iwn-config document (docs/kxi.md "Configuration"): {"pairs":[{...}]}. Strict:
/// unknown fields, bad IDs, a pair without partner_ca, a KM in two pairs: InvalidArgument with
/// the path of the problem.
std::vector<IwnPair> parse_iwn_config(std::string_view text);

/// Where a receiving KM files the keys of a transfer (implemented by AgentCore: hops to the KM's
/// strand). `partner_km` is the verified client identity.
class KxiReceiver {
 public:
  virtual ~KxiReceiver() = default;
  virtual boost::asio::awaitable<kxi::Answer> receive_transfer(std::string km_id,
                                                               std::string partner_km,
                                                               kxi::TransferRequest request) = 0;
};

/// Starts a root coroutine on an executor and accounts for it (AgentCore::spawn).
using KxiSpawn = std::function<void(const boost::asio::any_io_executor&,
                                    boost::asio::awaitable<void>, std::string)>;

/// The Kxi' listener of one receiving KM of an IWN pair. Construct (loads the TLS files; throws
/// InvalidArgument naming a bad file), bind() (throws Unavailable), start(); stop() closes it.
class KxiServer {
 public:
  KxiServer(boost::asio::io_context& io, KxiReceiver& receiver, IwnPair pair,
            const std::string& tls_cert_dir, kxi::Limits limits, KxiSpawn spawn);
  ~KxiServer();
  KxiServer(const KxiServer&) = delete;
  KxiServer& operator=(const KxiServer&) = delete;

  std::uint16_t bind();
  void start();
  void stop();
  [[nodiscard]] std::uint16_t port() const { return port_; }
  [[nodiscard]] const IwnPair& pair() const { return pair_; }

 private:
  boost::asio::io_context& io_;
  KxiReceiver& receiver_;
  IwnPair pair_;
  kxi::Limits limits_;
  KxiSpawn spawn_;
  std::uint16_t port_ = 0;
  std::unique_ptr<boost::asio::ssl::context> tls_;
  std::unique_ptr<qkdn::net::HttpServer> http_;
};

/// TLS client context of a sending KM of a pair: its own certificate from `tls_cert_dir`, the
/// partner's QKDN CA. Throws InvalidArgument naming a bad file.
std::unique_ptr<boost::asio::ssl::context> make_kxi_client_tls(const IwnPair& pair,
                                                               const std::string& tls_cert_dir);

/// What a transfer attempt came to.
struct KxiOutcome {
  bool delivered = false;  ///< the partner answered 200: it stored every key
  int status = 0;          ///< HTTP status (0: no answer)
  std::string message;     ///< the partner's message_data.message, or what failed here
  std::vector<std::pair<std::string, std::string>> details;
};

/// Sends one key transfer message (`target`: the access URL path, `body`: kxi::encode_request)
/// to the partner of `pair` and reads its answer, all within `timeout` (connect, handshake,
/// request and answer). The partner's certificate must name pair.partner_km_id. Never throws
/// for network or peer failures (they are the outcome); `body`, which holds the keys, is wiped
/// before this returns.
boost::asio::awaitable<KxiOutcome> kxi_send(boost::asio::any_io_executor ex,
                                            boost::asio::ssl::context& tls, IwnPair pair,
                                            std::string target, std::string body,
                                            std::chrono::milliseconds timeout);

}  // namespace qkdn::agent
