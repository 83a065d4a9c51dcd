// Live network state kept by the controller core: the declared topology plus what KMs report over
// Ck (registrations, status reports, alarms, disconnections). Single-threaded by contract: the
// service layer calls it from the controller strand only.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
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
  std::optional<double> lat;  ///< site coordinates from the topology document (both or neither)
  std::optional<double> lon;
  std::optional<int> trust_level;  ///< from the topology document (absent = unrated)
  std::vector<std::string> tags;   ///< from the topology document
  bool gateway = false;            ///< from the topology document (kms[].gateway)
  bool connected = false;
  std::string kma_endpoint;           ///< host:port of its KMA-link listener, from Register
  std::vector<std::string> attached;  ///< SAE IDs its KSA currently serves (from Register/0x14E7)
  std::string software;
  SysTime connected_at{};
  SysTime last_seen{};
};

/// A link with its declared attributes and its live key-pool state.
///
/// Operational state rule (Network keeps `oper` up to date on every mutation):
/// - the link is *connected* when both end KMs are connected over Ck and both ends' last word on
///   it is "up" (reported_up_a && reported_up_b). An end's word is set by its registration (a KM
///   that lists the link in Register says "up" until a status report or alarm says otherwise; a
///   KM that does not list it says "down"), then by each status report (state) and by
///   link_down / link_up alarms;
/// - oper = kDown when not connected; kAlarm when connected and qber_alarm; kUp otherwise.
/// Admin state does not change oper: routing excludes links that are not kEnabled by itself.
struct Link {
  LinkSpec spec;
  AdminState admin = AdminState::kEnabled;
  /// Operational state: kDown when an end reports it down, an end KM is disconnected, or an end
  /// has never declared it; kAlarm while qber_alarm is set; kUp otherwise (see the rule above).
  OperState oper = OperState::kDown;
  bool reported_up = false;    ///< both ends' last word is "up" (reported_up_a && reported_up_b)
  bool reported_up_a = false;  ///< last state declared or reported by KM spec.a
  bool reported_up_b = false;  ///< last state declared or reported by KM spec.b
  /// QBER is high: set by a report above the threshold or by a qber_high alarm; cleared by a
  /// report below threshold * (1 - qber_hysteresis) or by a "cleared" qber_high alarm.
  bool qber_alarm = false;
  /// Key pool is low: set by a report with stored_key_bits below the floor or by a key_pool_low
  /// alarm; cleared by a report at or above the floor or a "cleared" key_pool_low alarm. Not
  /// evaluated before the first report (a fresh link is not low).
  bool pool_low = false;
  std::uint64_t stored_keys = 0;
  std::uint64_t stored_key_bits = 0;
  double key_rate_bps = 0;               ///< measured generation rate (nominal until reported)
  double consumption_rate_bps = 0;       ///< measured consumption rate
  double qber = 0;                       ///< last reported QBER (nominal until reported)
  std::optional<double> qber_threshold;  ///< per-link override of Thresholds::qber
  std::optional<std::uint64_t>
      pool_floor_bits;    ///< per-link override of Thresholds::pool_floor_bits
  SysTime last_report{};  ///< time of the last status report about it (epoch = never)
};

/// Network-wide thresholds used for exclusion and alarms.
struct Thresholds {
  double qber = 0.11;                   ///< above this a link is excluded from routing
  std::uint64_t pool_floor_bits = 256;  ///< below this a link is excluded from routing
  /// A QBER alarm raised above `qber` clears only below qber * (1 - qber_hysteresis).
  double qber_hysteresis = 0.10;
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

/// A KM's claim to serve an SAE that the topology assigns to another KM or to none (0x14E1
/// `applications` or 0x14E7 `attached`). The topology (replaced only by an operator) is the one
/// authority on which KM serves an SAE, so such a claim is refused: the SAE keeps its declared KM.
struct RefusedClaim {
  std::string sae_id;
  std::string claimed_by;  ///< the KM that claimed it
  std::string owner;       ///< the KM the topology declares for it; empty if undeclared
  bool operator==(const RefusedClaim&) const = default;
};

/// A change the rerouting engine, alarms and metrics react to. Each kind reports a transition of
/// one flag, never a repeat: kKmConnected/kKmDisconnected (Km::connected; kKmConnected is also
/// emitted on a re-registration), kLinkUp/kLinkDown (the link's connectivity, i.e. oper leaving
/// or entering kDown; kUp <-> kAlarm is reported by kQberHigh/kQberNormal only),
/// kQberHigh/kQberNormal (Link::qber_alarm), kPoolLow/kPoolOk (Link::pool_low).
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

/// The live network. Mutators return the events they caused, in order. Per-call cost is
/// O(log n) per link or KM touched (status reports touch only the links they name; KM
/// (dis)connection touches only that KM's links); only apply_topology and topology() are O(n).
/// Threshold changes take effect at the next report of each link.
class Network {
 public:
  explicit Network(const Clock& clock) : clock_(&clock) {}

  /// Replaces the declared topology (all or nothing: validate_topology first). Live state of KMs
  /// and links that keep their IDs is preserved (a link whose ends changed starts afresh; the
  /// nominal rate/QBER of a link never reported follow the new spec). KMs that vanish are
  /// forgotten. Events: kTopologyReplaced, then kKmDisconnected for each vanished connected KM
  /// (the caller should close its Ck connection), then kLinkDown for vanished or changed links
  /// that were not down, then link transitions. Throws InvalidArgument.
  std::vector<NetworkEvent> apply_topology(const TopologyDoc& doc);
  /// The declared topology, in document order (with current nominal values).
  [[nodiscard]] TopologyDoc topology() const;

  /// A KM registered on a Ck connection. Throws NotFound if the KM is not in the topology.
  /// Marks it connected, records endpoint, software and the SAEs it serves among those the
  /// topology declares at it; a claim for any other SAE is not recorded and is appended to
  /// `refused` (the caller raises an alarm and audits it). The KM's word on each of its declared
  /// links becomes "up" if it lists the link, "down" otherwise. Links named in the registration
  /// that the topology does not know (or that do not join this KM and the named peer) are ignored
  /// and returned in `unknown_links` so the caller can log them. Events: kKmConnected, then link
  /// transitions in link_id order.
  std::vector<NetworkEvent> register_km(const Registration& reg,
                                        std::vector<std::string>* unknown_links = nullptr,
                                        std::vector<RefusedClaim>* refused = nullptr);
  /// The KM's Ck connection ended (or it missed its heartbeats). Its links go down for routing.
  /// Throws NotFound for an unknown KM; a KM already disconnected gives no events.
  std::vector<NetworkEvent> disconnect_km(const std::string& km_id);
  /// Any frame from the KM refreshes last_seen. Throws NotFound.
  void touch_km(const std::string& km_id);
  /// Applies a status report from `kma_id` (all or nothing). Links not touching kma_id, and
  /// negative/non-finite numbers or a QBER above 1, are rejected with InvalidArgument (a KM
  /// reports only its own links); unknown links are ignored; an unknown KMA throws NotFound.
  /// Events per link, on change only: kLinkUp/kLinkDown, kQberHigh/kQberNormal (value = QBER),
  /// kPoolLow/kPoolOk (value = stored bits).
  std::vector<NetworkEvent> apply_status(const std::string& kma_id,
                                         const std::vector<LinkReport>& links);
  /// Applies an alarm's effect on link state (qber_high, link_down, link_up, key_pool_low;
  /// severity "cleared" ends qber_high / key_pool_low, and a cleared link_down means up).
  /// relay_failure and peer_unreachable have no effect on state. Throws NotFound for an unknown
  /// KMA, InvalidArgument for an unknown alarm or severity, a missing link_id on a link alarm or a
  /// link not touching kma_id; an unknown link is ignored.
  std::vector<NetworkEvent> apply_alarm(const std::string& kma_id, const std::string& alarm,
                                        const std::string& link_id, const std::string& severity,
                                        double value);
  /// SAEs attached / detached at a KM (0x14E7). Only SAEs the topology declares at this KM are
  /// attached; every other claim is refused (returned, nothing recorded). Detaching marks the SAE
  /// as not currently served; it still maps to its declared KM. Throws NotFound for an unknown KM.
  [[nodiscard]] std::vector<RefusedClaim> update_applications(
      const std::string& km_id, const std::vector<std::string>& attached,
      const std::vector<std::string>& detached);
  /// Sets a link's admin state. Throws NotFound. Emits kAdminChanged when it changes.
  std::vector<NetworkEvent> set_admin(const std::string& link_id, AdminState admin);

  [[nodiscard]] const std::map<std::string, Km>& kms() const { return kms_; }
  [[nodiscard]] const std::map<std::string, Link>& links() const { return links_; }
  [[nodiscard]] const Km* find_km(const std::string& km_id) const;
  [[nodiscard]] const Link* find_link(const std::string& link_id) const;
  /// Mutable access for operator edits (thresholds, nominal values). Counts as a change: version()
  /// increases whenever a link is found.
  Link* find_link_mut(const std::string& link_id);
  /// SAE -> serving KM: the topology's declaration (never a KM's own claim).
  [[nodiscard]] std::optional<std::string> km_for_sae(const std::string& sae_id) const;
  [[nodiscard]] const std::map<std::string, std::string>& applications() const { return apps_; }
  /// Links joining two KMs (any order), in link_id order.
  [[nodiscard]] std::vector<const Link*> links_between(const std::string& a,
                                                       const std::string& b) const;

  Thresholds& thresholds() { return thresholds_; }
  [[nodiscard]] const Thresholds& thresholds() const { return thresholds_; }
  /// Increases whenever anything routing depends on changes (for snapshot caching).
  [[nodiscard]] std::uint64_t version() const { return version_ + figures_version_; }
  /// Increases on every change except a status report's figures (pool, rates, QBER value): the
  /// KMs, links, their states, alarms, admin and operator edits. A snapshot with the current
  /// structure_version() differs from the network only in those figures. Any thread may read it
  /// (the API compares it with a published snapshot's off the core strand).
  [[nodiscard]] std::uint64_t structure_version() const {
    return version_.load(std::memory_order_acquire);
  }
  [[nodiscard]] std::string name() const { return name_; }
  /// The interworking part of the topology (topology.hpp): QKDN ID, inter-QKDN links, peers.
  [[nodiscard]] const std::string& qkdn_id() const { return qkdn_id_; }
  [[nodiscard]] const std::vector<InterQkdnLinkSpec>& inter_qkdn_links() const {
    return inter_qkdn_links_;
  }
  [[nodiscard]] const std::vector<PeerSpec>& peers() const { return peers_; }

 private:
  void recompute_oper(Link& link, const std::string& km_id, std::vector<NetworkEvent>& events);
  void set_qber_alarm(Link& link, bool on, const std::string& km_id,
                      std::vector<NetworkEvent>& events);
  void set_pool_low(Link& link, bool on, double value, const std::string& km_id,
                    std::vector<NetworkEvent>& events);
  Km& km_or_throw(const std::string& km_id);
  Link* link_of_km(const std::string& kma_id, const std::string& link_id, std::string_view where);
  /// Records km.attached += sae if the topology declares sae at km; otherwise returns the refusal.
  std::optional<RefusedClaim> attach_app(Km& km, const std::string& km_id, const std::string& sae);

  const Clock* clock_;
  std::string name_;
  std::vector<std::string> km_order_;
  std::vector<std::string> link_order_;
  std::map<std::string, Km> kms_;
  std::map<std::string, Link> links_;
  std::vector<AppSpec> declared_apps_;
  std::string qkdn_id_;
  std::vector<InterQkdnLinkSpec> inter_qkdn_links_;
  std::vector<PeerSpec> peers_;
  std::map<std::string, std::string> apps_;                   // sae -> km, from the topology
  std::map<std::string, std::set<std::string>> links_by_km_;  // km -> its link IDs
  Thresholds thresholds_;
  std::atomic<std::uint64_t> version_{0};  ///< structure_version(); written on the core only
  std::uint64_t figures_version_ = 0;      ///< status-report figures only
};

}  // namespace qkdn::controller
