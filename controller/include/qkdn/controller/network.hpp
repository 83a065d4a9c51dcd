// Live network state kept by the controller core: the declared topology plus what KMs report over
// Ck (registrations, status reports, alarms, disconnections). Single-threaded by contract: the
// service layer calls it from the controller strand only.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "qkdn/controller/clock.hpp"
#include "qkdn/controller/topology.hpp"

namespace qkdn::controller {

enum class AdminState { kEnabled, kDisabled, kMaintenance };
enum class OperState { kUp, kDown, kAlarm };

std::string_view to_string(AdminState s) noexcept;
std::string_view to_string(OperState s) noexcept;
/// Parses "enabled" | "disabled" | "maintenance"; throws InvalidArgument.
AdminState parse_admin_state(std::string_view s);

/// A KM with its live Ck state.
struct Km {
  std::string km_id;
  std::string site;
  bool connected = false;
  std::string kma_endpoint;           ///< host:port of its KMA-link listener, from Register
  std::vector<std::string> attached;  ///< SAE IDs its KSA currently serves (from Register/0x14E7)
  std::string software;
  SysTime connected_at{};
  SysTime last_seen{};
};

/// A link with its declared attributes and its live key-pool state.
struct Link {
  LinkSpec spec;
  AdminState admin = AdminState::kEnabled;
  /// Operational state: kDown when the agent reports it down or an end KM is disconnected or has
  /// never reported it; kAlarm while a qber_high alarm is active; kUp otherwise.
  OperState oper = OperState::kDown;
  bool reported_up = false;  ///< last state the agents reported ("up")
  bool qber_alarm = false;   ///< a qber_high alarm is active for this link
  bool pool_low = false;     ///< a key_pool_low alarm is active for this link
  std::uint64_t stored_keys = 0;
  std::uint64_t stored_key_bits = 0;
  double key_rate_bps = 0;          ///< measured generation rate (nominal until reported)
  double consumption_rate_bps = 0;  ///< measured consumption rate
  double qber = 0;                  ///< last reported QBER (nominal until reported)
  std::optional<double> qber_threshold;     ///< per-link override of Thresholds::qber
  std::optional<std::uint64_t> pool_floor_bits;  ///< per-link override of Thresholds::pool_floor_bits
  SysTime last_report{};
};

/// Network-wide thresholds used for exclusion and alarms.
struct Thresholds {
  double qber = 0.11;                   ///< above this a link is excluded from routing
  std::uint64_t pool_floor_bits = 256;  ///< below this a link is excluded from routing
};

/// One link entry of a status report (0x14E3).
struct LinkReport {
  std::string link_id;
  std::string peer_kma_id;
  bool up = false;
  std::uint64_t stored_keys = 0;
  std::uint64_t stored_key_bits = 0;
  double key_rate_bps = 0;
  double consumption_rate_bps = 0;
  double qber = 0;
};

/// What a KM declares when it registers (0x14E1).
struct Registration {
  std::string km_id;
  std::string kma_endpoint;
  struct LinkRef {
    std::string link_id;
    std::string peer_kma_id;
  };
  std::vector<LinkRef> links;
  std::vector<std::string> applications;
  std::string software;
};

/// A change the rerouting engine, alarms and metrics react to.
struct NetworkEvent {
  enum class Kind {
    kKmConnected,
    kKmDisconnected,
    kLinkUp,
    kLinkDown,
    kQberHigh,
    kQberNormal,
    kPoolLow,
    kPoolOk,
    kAdminChanged,
    kTopologyReplaced,
  };
  Kind kind;
  std::string km_id;    ///< the KM concerned (KM events; the reporting KM for link events)
  std::string link_id;  ///< the link concerned (link events)
  double value = 0;     ///< QBER or pool bits where relevant
};

std::string_view to_string(NetworkEvent::Kind k) noexcept;

/// The live network. Mutators return the events they caused, in order.
class Network {
 public:
  explicit Network(const Clock& clock) : clock_(&clock) {}

  /// Replaces the declared topology (all or nothing: validate_topology first). Live state of KMs
  /// and links that keep their IDs is preserved; KMs that vanish are forgotten.
  std::vector<NetworkEvent> apply_topology(const TopologyDoc& doc);
  /// The declared topology, in document order (with current nominal values).
  [[nodiscard]] TopologyDoc topology() const;

  /// A KM registered on a Ck connection. Throws NotFound if the KM is not in the topology.
  /// Links named in the registration that the topology does not know are ignored and returned in
  /// `unknown_links` so the caller can log them.
  std::vector<NetworkEvent> register_km(const Registration& reg,
                                        std::vector<std::string>* unknown_links = nullptr);
  /// The KM's Ck connection ended (or it missed its heartbeats). Its links go down for routing.
  std::vector<NetworkEvent> disconnect_km(const std::string& km_id);
  /// Any frame from the KM refreshes last_seen.
  void touch_km(const std::string& km_id);
  /// Applies a status report from `kma_id`. Links not touching kma_id are rejected with
  /// InvalidArgument (a KM reports only its own links); unknown links are ignored.
  std::vector<NetworkEvent> apply_status(const std::string& kma_id,
                                         const std::vector<LinkReport>& links);
  /// Applies an alarm's effect on link state (qber_high, link_down, link_up, key_pool_low;
  /// severity "cleared" ends qber_high / key_pool_low).
  std::vector<NetworkEvent> apply_alarm(const std::string& kma_id, const std::string& alarm,
                                        const std::string& link_id, const std::string& severity,
                                        double value);
  /// SAEs attached / detached at a KM (0x14E7).
  void update_applications(const std::string& km_id, const std::vector<std::string>& attached,
                           const std::vector<std::string>& detached);
  /// Sets a link's admin state. Throws NotFound.
  std::vector<NetworkEvent> set_admin(const std::string& link_id, AdminState admin);

  [[nodiscard]] const std::map<std::string, Km>& kms() const { return kms_; }
  [[nodiscard]] const std::map<std::string, Link>& links() const { return links_; }
  [[nodiscard]] const Km* find_km(const std::string& km_id) const;
  [[nodiscard]] const Link* find_link(const std::string& link_id) const;
  Link* find_link_mut(const std::string& link_id);
  /// SAE -> serving KM, from the topology and from agents' registrations.
  [[nodiscard]] std::optional<std::string> km_for_sae(const std::string& sae_id) const;
  [[nodiscard]] const std::map<std::string, std::string>& applications() const { return apps_; }
  /// Links joining two KMs (any order), in link_id order.
  [[nodiscard]] std::vector<const Link*> links_between(const std::string& a,
                                                       const std::string& b) const;

  Thresholds& thresholds() { return thresholds_; }
  [[nodiscard]] const Thresholds& thresholds() const { return thresholds_; }
  /// Increases whenever anything routing depends on changes (for snapshot caching).
  [[nodiscard]] std::uint64_t version() const { return version_; }
  [[nodiscard]] std::string name() const { return name_; }

 private:
  void recompute_oper(Link& link, std::vector<NetworkEvent>& events);

  const Clock* clock_;
  std::string name_;
  std::vector<std::string> km_order_;
  std::vector<std::string> link_order_;
  std::map<std::string, Km> kms_;
  std::map<std::string, Link> links_;
  std::map<std::string, std::string> apps_;  // sae -> km
  std::vector<AppSpec> declared_apps_;
  Thresholds thresholds_;
  std::uint64_t version_ = 0;
};

}  // namespace qkdn::controller
