// Kxi-1 key relay through gateway KMs (GWN) between two QKDNs (ITU-T Y.3818 9.1 1, docs/cxi.md
// 5.6). An SAE of this QKDN asks its KM (ETSI 014 enc_keys) for keys shared with an SAE of a peer
// QKDN:
//   0x1406 for a foreign SAE: the peer's route answer (Cxi route_request) decides; the session
//          is answered with the peer's ingress gateway as destination KM (no session record);
//   0x1403 for a foreign SAE: this controller routes to its gateway (peer reachability), asks the
//          peer to set up its side (Cxi relay_setup: the peer reserves and allocates on its own
//          KMs and answers with the hop key IDs), reserves and allocates on its own KMs (0x410A /
//          0x410C, including the hop over the inter-QKDN link, whose near end is our gateway),
//          then sends one 0x4104 to the source KM covering the whole route; the keys travel
//          one-time-pad encrypted hop by hop over the KMA links, the inter-QKDN one included.
//          The outcome (0x1405) goes to the peer as relay_end.
// The peer side (destination) answers relay_setup after its own decision and releases its keys
// when the relay fails, when no relay_end comes in time, or when the peer goes down. Key IDs
// travel; key material never reaches a controller.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "qkdn/service/controller_service.hpp"

namespace qkdn::interworking {
class CxiNode;
struct RelaySetup;
struct RelaySetupAnswer;
struct RelayEnd;
}  // namespace qkdn::interworking

namespace qkdn::service {

/// One interworking relay as the API shows it (GET /api/v1/interworking/relays).
struct InterworkingRelayRecord {
  std::string relay_id;
  std::string role;  ///< source (our SAE asked) | destination (the peer's SAE asked)
  std::string peer_qkdn_id;
  std::string src_sae;
  std::string dst_sae;
  std::string link_id;  ///< the inter-QKDN link crossed
  std::string src_km;   ///< source: the requesting KM; destination: our ingress gateway
  std::string dst_km;   ///< the KM of the destination SAE
  std::int64_t number_of_keys = 0;
  std::string state;  ///< setting_up | relaying | relayed | failed
  std::string reason;
  std::int64_t created_ms = 0;  ///< Unix ms
  std::int64_t updated_ms = 0;
};

class InterworkingRelays;

/// The relay state of this controller (core strand inside; records readable from any thread).
std::shared_ptr<InterworkingRelays> make_interworking_relays(ControllerService& svc);
/// Connects the Cxi node (before the service starts serving relays; may stay unset: then
/// foreign SAEs are simply unknown).
void attach_cxi(InterworkingRelays& relays, std::shared_ptr<interworking::CxiNode> node);
/// Cxi callbacks (any thread): a peer's relay_setup (answered through `reply`), relay_end, and
/// a peer gone down.
void on_peer_relay_setup(const std::shared_ptr<InterworkingRelays>& relays,
                         const std::string& qkdn_id, const interworking::RelaySetup& setup,
                         std::function<void(interworking::RelaySetupAnswer)> reply);
void on_peer_relay_end(const std::shared_ptr<InterworkingRelays>& relays,
                       const std::string& qkdn_id, const interworking::RelayEnd& end);
void on_peer_down(const std::shared_ptr<InterworkingRelays>& relays, const std::string& qkdn_id);
/// The records (newest last, at most 1024 kept), from any thread.
std::vector<InterworkingRelayRecord> interworking_relay_records(const InterworkingRelays& relays);

/// Handles 0x1406 and 0x1403 naming an SAE of another QKDN; every other command (and those
/// naming a local SAE) goes to `next`.
std::shared_ptr<CommandHandler> make_interworking_relay_handler(
    std::shared_ptr<CommandHandler> next, std::shared_ptr<InterworkingRelays> relays);

}  // namespace qkdn::service
