// Glue between the controller service and the Cxi node (docs/cxi.md): the node runs on the
// service's io_context; peer events become alarms (peer_unreachable, interworking relay
// faults) through the service; the local side of each inter-QKDN link follows its gateway KM's Ck
// connection; Cxi counters and peer states go to /metrics; the API reads peer snapshots.
// Lives with main: it is the daemon's composition, not a library.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "qkdn/controller/topology.hpp"
#include "qkdn/net/tls.hpp"
#include "qkdn/northbound/api_server.hpp"
#include "qkdn/service/controller_service.hpp"
#include "qkdn/service/interworking_relay.hpp"

namespace qkdn::interworking_wiring {

struct Options {
  std::string listen_host = "0.0.0.0";
  std::uint16_t listen_port = 4170;
  qkdn::net::TlsFiles tls;
  std::chrono::milliseconds heartbeat{1000};
  std::chrono::milliseconds summary_period{10000};  ///< Mxi summaries (docs/cxi.md 5.7)
  std::string controller_id;
};

class Wiring;

/// Creates the node for `doc` (its qkdn_id and peers), sets api.peer_state, and returns the
/// wiring; start() binds the Cxi listener. Throws InvalidArgument for bad options or TLS files.
/// `relays` (may be null) serves the Kxi-1 relays: the node's relay callbacks and peer-down
/// events reach it, and the API lists its records.
std::shared_ptr<Wiring> make(service::ControllerService& svc, const controller::TopologyDoc& doc,
                             const Options& options, northbound::ApiOptions& api,
                             const std::shared_ptr<service::InterworkingRelays>& relays = nullptr);
/// Binds the listener and starts the dialers and the state loop; returns the bound port.
std::uint16_t start(const std::shared_ptr<Wiring>& w);
void stop(Wiring& w);

}  // namespace qkdn::interworking_wiring
