// The Cxi node (docs/cxi.md): this controller's end of Cxi. A TLS listener for peers that dial
// in, a dialer for each declared peer with an endpoint, and one session per peer: a coroutine
// on its own strand, mutual TLS with the peer's identity bound to its certificate, every read
// bounded (kMaxFrameBody) and timed (one heartbeat period), one writer. The peer table lives on
// the node's strand; sessions hop there to read or change it.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>

#include "qkdn/controller/topology.hpp"
#include "qkdn/interworking/cxi_messages.hpp"
#include "qkdn/interworking/peer_table.hpp"
#include "qkdn/net/tls.hpp"

namespace qkdn::interworking {

struct CxiNodeOptions {
  std::string controller_id;  ///< ours, as our certificate names it
  std::string listen_host = "127.0.0.1";
  std::uint16_t listen_port = 0;  ///< 0 = any free port (see port())
  bool listen = true;
  qkdn::net::TlsFiles tls;  ///< CA, our controller certificate (serverAuth and clientAuth), key
  std::chrono::milliseconds heartbeat{1000};
  std::chrono::milliseconds handshake_timeout{5000};  ///< TLS handshake and hello
  std::chrono::milliseconds redial{500};              ///< between dial attempts
  std::chrono::milliseconds request_timeout{5000};    ///< a route request's answer
  /// Mxi summary to each peer that is up (docs/cxi.md clause 5.8), kMin..kMaxSummaryPeriodMs.
  std::chrono::milliseconds summary_period{10000};
  /// Called on the node's strand for every peer event (alarms, logs, metrics).
  std::function<void(const PeerEvent&)> on_event;
  /// A peer's relay_setup that passed the route checks of PeerTable::answer (policy, link up on
  /// both sides, SAE ours), on the node's strand: the controller decides, reserves on its own
  /// KMs and calls `reply` exactly once (from any thread). Unset: every setup is refused.
  std::function<void(const std::string& qkdn_id, const RelaySetup& setup,
                     std::function<void(RelaySetupAnswer)> reply)>
      on_relay_setup;
  /// A peer's relay_end, on the node's strand.
  std::function<void(const std::string& qkdn_id, const RelayEnd& end)> on_relay_end;
};

/// Counters for metrics (read from any thread).
struct CxiCounters {
  std::uint64_t sessions_opened = 0;
  std::uint64_t sessions_refused = 0;
  std::uint64_t messages_in = 0;
  std::uint64_t messages_out = 0;
  std::uint64_t bad_messages = 0;
  std::uint64_t route_requests_answered = 0;
  std::uint64_t faults_received = 0;
  std::uint64_t summaries_sent = 0;
  std::uint64_t summaries_received = 0;
  std::uint64_t summaries_refused = 0;  ///< too frequent or seq not increasing (ignored)
};

/// What the API shows of one peer (published by the node, read from any thread).
struct PeerSnapshot {
  bool up = false;
  std::int64_t last_heard_ms = -1;  ///< Unix ms of the last message; -1 = never in this session
  std::size_t reachable_saes = 0;   ///< distinct SAEs the peer announces
  std::uint64_t sessions_opened = 0;
  std::vector<std::pair<std::string, bool>> links;  ///< inter-QKDN link -> usable (both sides up)
  /// The last Mxi summary the peer sent (kept across its sessions) and when (Unix ms).
  std::optional<Summary> summary;
  std::int64_t summary_received_ms = -1;
};

class CxiNode : public std::enable_shared_from_this<CxiNode> {
 public:
  static std::shared_ptr<CxiNode> create(const boost::asio::any_io_executor& ex,
                                         controller::TopologyDoc local, CxiNodeOptions options);
  ~CxiNode();
  CxiNode(const CxiNode&) = delete;
  CxiNode& operator=(const CxiNode&) = delete;

  /// Binds the listener (throws InvalidArgument / system_error) and starts the dialers and the
  /// liveness check.
  void start();
  /// Closes the listener and every session; the dialers stop.
  void stop();
  /// The bound listener port.
  [[nodiscard]] std::uint16_t port() const { return port_; }

  /// Runs f(PeerTable&) on the node's strand and returns its result.
  template <class F>
  auto with_table(F f) -> boost::asio::awaitable<decltype(f(std::declval<PeerTable&>()))>;

  /// Asks `qkdn_id` for its side of an interworking route; nullopt when the peer is not up or
  /// does not answer within request_timeout.
  boost::asio::awaitable<std::optional<RouteAnswer>> request_route(std::string qkdn_id,
                                                                   RouteRequest request);
  /// Asks `qkdn_id` to set up its side of a Kxi-1 relay (docs/cxi.md 5.6); nullopt when the
  /// peer is not up, goes down meanwhile or does not answer within request_timeout.
  boost::asio::awaitable<std::optional<RelaySetupAnswer>> request_relay_setup(std::string qkdn_id,
                                                                              RelaySetup setup);
  /// Tells `qkdn_id` how a relay ended (dropped when it is not up).
  void send_relay_end(const std::string& qkdn_id, RelayEnd end);
  /// Forwards an interworking relay failure to `qkdn_id` (dropped when it is not up).
  void forward_fault(const std::string& qkdn_id, Fault fault);
  /// Our side of an inter-QKDN link changed: stored and sent to the peer.
  void set_local_link_state(const std::string& link_id, bool up);
  /// A new local topology (peers, policy, links); reachability is announced again.
  void set_local(controller::TopologyDoc local);

  [[nodiscard]] CxiCounters counters() const;
  /// The last published state of a declared peer (at most a quarter heartbeat old), or nullopt.
  [[nodiscard]] std::optional<PeerSnapshot> snapshot(const std::string& qkdn_id) const;

  struct Impl;

 private:
  explicit CxiNode(std::unique_ptr<Impl> impl);
  boost::asio::awaitable<void> run_on_strand(std::function<void(PeerTable&)> f);
  std::unique_ptr<Impl> impl_;
  std::uint16_t port_ = 0;
};

template <class F>
auto CxiNode::with_table(F f) -> boost::asio::awaitable<decltype(f(std::declval<PeerTable&>()))> {
  using R = decltype(f(std::declval<PeerTable&>()));
  if constexpr (std::is_void_v<R>) {
    auto op = run_on_strand([f = std::move(f)](PeerTable& t) mutable { f(t); });
    co_await std::move(op);
  } else {
    std::optional<R> out;
    auto op = run_on_strand([&out, f = std::move(f)](PeerTable& t) mutable { out.emplace(f(t)); });
    co_await std::move(op);
    co_return std::move(*out);
  }
}

}  // namespace qkdn::interworking
