// Prometheus metrics of the controller (docs/metrics.md), built once with prometheus-cpp and
// kept by reference. Counters and histograms are updated where events happen; gauges of links,
// KMs, sessions and alarms are refreshed from a state snapshot just before each scrape.
// Never a key ID or session ID as a label. Thread-safe.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "qkdn/controller/alarms.hpp"
#include "qkdn/controller/network.hpp"

namespace prometheus {
class Counter;
class Registry;
}  // namespace prometheus

namespace qkdn::service {

/// Values for the gauge families, taken on the core strand.
struct GaugeInput {
  /// The per-link and per-KM families, rendered by render_network_gauges.
  std::string network_text;
  std::size_t sessions_active = 0;
  std::array<std::size_t, controller::kSeverityCount> alarms_active{};  ///< by Severity index
  /// Active alarms by type (any string; types outside the project's list count as "other").
  std::map<std::string, std::size_t> alarms_active_by_type;
  std::int64_t ck_connections = 0;
  bool store_up = true;
  /// Depth of each admission queue (qkdn_ck_admission_depth{queue}): "registration", "status",
  /// "command".
  std::map<std::string, std::size_t> admission_depth;
};

/// The per-link and per-KM gauge families (qkdn_link_*, qkdn_km_connected of docs/metrics.md)
/// as exposition text, rendered straight from the network on the core strand: one pass per
/// family and no object per series, so a scrape of 20,000 links costs milliseconds there
/// (prometheus-cpp's registry made one object per series and copied every label per scrape).
[[nodiscard]] std::string render_network_gauges(const controller::Network& network);

class Metrics {
 public:
  /// Builds every family of docs/metrics.md and pre-creates the label sets of closed sets
  /// (reroute reasons, relay and reservation results, severities, every Ck command by direction,
  /// the common Ck protocol error reasons, GET 200) so dashboards see zeros rather than gaps.
  Metrics(std::string version, std::string revision);
  ~Metrics();
  Metrics(const Metrics&) = delete;
  Metrics& operator=(const Metrics&) = delete;

  /// qkdn_ck_messages_total{direction="in"|"out", command=<command_name>}.
  void ck_message(bool inbound, std::string_view command);
  /// qkdn_ck_protocol_errors_total{reason}.
  void ck_protocol_error(std::string_view reason);
  /// qkdn_ck_refused_total{reason}: Ck work refused by backpressure (docs/metrics.md lists the
  /// reasons: registration_busy, command_busy, km_busy, relays_per_km, rate, flood).
  void ck_refused(std::string_view reason);
  /// qkdn_key_relays_total{result} and, for result "relayed", qkdn_key_relay_duration_seconds.
  void key_relay(std::string_view result, double seconds);
  /// qkdn_key_relays_by_scheme_total{scheme}: a relay relayed with this scheme.
  void relay_scheme(std::string_view scheme);
  /// qkdn_route_computation_seconds.
  void route_computation(double seconds);
  /// qkdn_topology_snapshot_build_seconds: one build of the routing snapshot (O(network)).
  void snapshot_build(double seconds);
  /// qkdn_cxi_events_total{event} += n (docs/cxi.md: session_opened, session_refused,
  /// message_in, message_out, bad_message, route_request_answered, fault_received).
  void cxi_event(std::string_view event, std::uint64_t n = 1);
  /// qkdn_cxi_peers_up.
  void cxi_peers_up(std::size_t n);
  /// qkdn_interworking_relay_faults_total.
  void interworking_relay_fault();
  /// qkdn_key_relay_intermediate_kms: one observation per delivered key of a relayed relay, the
  /// number of intermediate (trusted relay) KMs its route crossed.
  void relay_intermediates(std::size_t intermediate_kms, std::uint64_t keys);
  /// qkdn_route_trust_refusals_total: relays refused because no route met the trust constraints.
  void trust_refusal();
  /// qkdn_interworking_transfers_total{role="sender"|"receiver", result="ok"|"failed"|"lost"}
  /// and, for "ok", qkdn_interworking_transfer_keys_total{role} += keys (docs/kxi.md).
  void iwn_transfer(std::string_view role, std::string_view result, std::uint64_t keys);
  /// qkdn_interworking_transfer_decisions_total{decision="accepted"|"refused"}.
  void iwn_transfer_decision(std::string_view decision);
  /// A Kxi-1 key relay through GWNs ended (docs/cxi.md 5.6): role source | destination, result
  /// relayed | failed.
  void interworking_relay(std::string_view role, std::string_view result);
  /// qkdn_interworking_last_legs_total{decision="accepted"|"refused"}: relays inside this QKDN
  /// of keys a Kxi' transfer brought for an SAE behind another KM (docs/kxi.md).
  void iwn_last_leg(std::string_view decision);
  /// qkdn_interworking_key_share_refusals_total{peer}: requests of a peer QKDN refused because
  /// they exceed its key rate share (docs/cxi.md "Key rate share").
  void key_share_refusal(std::string_view peer_qkdn_id);
  /// qkdn_reroutes_total{reason}.
  void reroute(std::string_view reason);
  /// qkdn_key_reservations_total{result} ("reserved", "allocated", "consumed", "released",
  /// "refused", "expired").
  void key_reservation(std::string_view result, std::uint64_t n = 1);
  /// qkdn_store_write_groups_total and qkdn_store_commits_total: write groups the store's write
  /// queue finished, and the transactions it committed for them (fewer with group commit).
  void store_writes(std::uint64_t groups, std::uint64_t commits);
  /// qkdn_store_write_failures_total: writes that failed for good (dropped or refused; logged).
  void store_write_failures(std::uint64_t n = 1);
  /// qkdn_http_requests_total{method, code} and qkdn_http_request_duration_seconds.
  void http_request(std::string_view method, int code, double seconds);
  /// Replaces the gauge values (links and KMs: the rendered text of the last scrape, so label
  /// sets that vanished are gone).
  void update_gauges(GaugeInput input);
  /// The text exposition format (prometheus-cpp TextSerializer). Families without any series
  /// yet (link and KM gauges before a topology) are still declared with HELP and TYPE.
  [[nodiscard]] std::string serialize() const;
  /// The registry (for tests).
  prometheus::Registry& registry();

 private:
  prometheus::Counter& ck_message_counter(bool inbound, std::string_view command);
  prometheus::Counter& http_counter(std::string_view method, int code);

  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace qkdn::service
