// The peer table (docs/cxi.md clause 4): what this controller knows of its peer controllers,
// and the policy and border view it shows them. Pure: no I/O, single-threaded by contract (the
// Cxi node keeps it on one strand), time passed in. Every message a peer sends is checked here
// against the local model: announced gateways must be the far ends of inter-QKDN links with that
// peer, link IDs must be inter-QKDN links with that peer, route requests may only name SAEs the
// policy lets that peer reach.
#pragma once

#include <chrono>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "qkdn/controller/topology.hpp"
#include "qkdn/interworking/cxi_messages.hpp"

namespace qkdn::interworking {

using SteadyTime = std::chrono::steady_clock::time_point;

/// Something the owner reports (alarm, log, metric).
struct PeerEvent {
  enum class Kind { kPeerUp, kPeerDown, kFaultReceived, kRefused };
  Kind kind;
  std::string qkdn_id;
  std::string detail;
};

/// A route to an SAE of another QKDN through one inter-QKDN link.
struct InterworkingRoute {
  std::string qkdn_id;        ///< the peer QKDN
  std::string link_id;        ///< the inter-QKDN link
  std::string local_gateway;  ///< our gateway KM
  std::string peer_gateway;   ///< the peer's gateway KM
  std::int64_t cost = 0;      ///< our side (hops to the gateway) + the peer's announced cost
};

/// Live state of one peer.
struct PeerState {
  bool up = false;
  SteadyTime last_heard{};
  std::int64_t heartbeat_ms = 0;  ///< the peer's announced period
  std::vector<ReachEntry> reachable;
  std::map<std::string, bool> peer_link_up;  ///< link_id -> the peer's view
  std::uint64_t sessions_opened = 0;
};

class PeerTable {
 public:
  /// `heartbeat`: our period. A peer not heard from for that long is down.
  PeerTable(controller::TopologyDoc local, std::chrono::milliseconds heartbeat);

  /// A new local topology (operator change). Peers no longer declared go down.
  std::vector<PeerEvent> set_local(controller::TopologyDoc local);
  [[nodiscard]] const controller::TopologyDoc& local() const { return local_; }
  [[nodiscard]] std::chrono::milliseconds heartbeat() const { return heartbeat_; }

  /// The declared peer whose certificate identity is `identity`, or null.
  [[nodiscard]] const controller::PeerSpec* peer_by_identity(const std::string& identity) const;
  [[nodiscard]] const controller::PeerSpec* peer(const std::string& qkdn_id) const;

  /// Checks a peer's hello against the certificate identity of its session; returns the
  /// reason to refuse, or nullopt (the peer is then up).
  std::optional<std::string> on_hello(const std::string& cert_identity, const Hello& hello,
                                      SteadyTime now, std::vector<PeerEvent>& events);
  /// Any valid message from an up peer.
  void on_heard(const std::string& qkdn_id, SteadyTime now);
  /// The session ended: the peer is down and its reachability and link views are dropped.
  void on_session_end(const std::string& qkdn_id, const std::string& reason,
                      std::vector<PeerEvent>& events);
  /// Peers not heard from within one heartbeat period go down (their routes become unusable).
  std::vector<PeerEvent> check_liveness(SteadyTime now);

  /// What we announce to `qkdn_id`: the SAEs its policy allows, behind each of our gateways
  /// with an inter-QKDN link to it, at the hop count from the SAE's KM to the gateway.
  [[nodiscard]] Reachability announce_for(const std::string& qkdn_id) const;
  /// Our view of the inter-QKDN links with `qkdn_id`.
  [[nodiscard]] LinkStatus link_status_for(const std::string& qkdn_id) const;
  /// Our side of an inter-QKDN link (gateway KM connected, link working).
  void set_local_link_state(const std::string& link_id, bool up);

  /// Stores a peer's reachability after checking every entry; throws BadCxiMessage (policy)
  /// naming the first entry whose gateway is not the far end of an inter-QKDN link with it.
  void accept_reachability(const std::string& qkdn_id, const Reachability& m);
  /// Stores a peer's link view; throws BadCxiMessage for a link that is not an inter-QKDN link
  /// with that peer.
  void accept_link_status(const std::string& qkdn_id, const LinkStatus& m);
  /// Our answer to a peer's route request: refused unless dst_sae is in the peer's policy, is
  /// ours, and link_id is an inter-QKDN link with that peer that both sides see up.
  [[nodiscard]] RouteAnswer answer(const std::string& qkdn_id, const RouteRequest& m) const;

  /// The cheapest usable route to `dst_sae` of another QKDN: through an up peer that announced
  /// it, over an inter-QKDN link both sides see up, not in `avoid_links`.
  [[nodiscard]] std::optional<InterworkingRoute> route_to(
      const std::string& dst_sae, const std::set<std::string>& avoid_links = {}) const;

  [[nodiscard]] const PeerState* state(const std::string& qkdn_id) const;
  /// Usable = both sides see the link up and the peer is up.
  [[nodiscard]] bool link_usable(const controller::InterQkdnLinkSpec& link) const;

 private:
  [[nodiscard]] std::optional<std::int64_t> hops(const std::string& from_km,
                                                 const std::string& to_km) const;
  [[nodiscard]] const controller::InterQkdnLinkSpec* inter_link(const std::string& link_id) const;

  controller::TopologyDoc local_;
  std::chrono::milliseconds heartbeat_;
  std::map<std::string, PeerState> peers_;
  std::map<std::string, bool> local_link_up_;
};

}  // namespace qkdn::interworking
