// qkdn-controller --ha: one of several controllers sharing one PostgreSQL database
// (docs/high-availability.md). Runs a standby service (refuses registrations and API writes,
// naming the leader) until the Leadership wins the lease, then the leader's service (fenced store,
// the term as controller_epoch), and back to standby when the lease is lost.
#pragma once

#include <signal.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>

#include "qkdn/northbound/api_server.hpp"
#include "qkdn/service/controller_service.hpp"

namespace qkdn::ha {

/// The --ha-* options.
struct HaArgs {
  bool enabled = false;
  std::chrono::milliseconds lease{3000};
  std::string holder;         ///< empty: host, pid and a random part
  std::string advertise_ck;   ///< empty: the Ck listen host and bound port
  std::string advertise_api;  ///< empty: the API listen host and bound port
  /// A standby reloads the stored state this often (0: only when it becomes standby).
  std::chrono::milliseconds standby_refresh{10000};
};

/// Runs until SIGINT/SIGTERM (in `signals`, blocked in every thread). `on_bound(ck, api)` is
/// called once the listeners are first bound (port files). Returns the exit status.
int run_ha(const service::ServiceOptions& options, const northbound::ApiOptions& api,
           const std::string& store_dsn, const HaArgs& ha, const sigset_t& signals,
           const std::function<void(std::uint16_t ck, std::uint16_t api)>& on_bound);

}  // namespace qkdn::ha
