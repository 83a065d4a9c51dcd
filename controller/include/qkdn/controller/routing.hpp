// Key-aware routing over immutable topology snapshots (DESIGN.md section 3).
//
// A TopologySnapshot freezes what routing depends on (KMs, links, key pools, rates, QBER, states,
// thresholds) in a Boost.Graph undirected multigraph: two KMs may be joined by several links,
// each with its own key pool. Route queries are pure functions of a snapshot and RouteOptions:
// deterministic, no clock, no randomness, safe to run on any thread that holds the snapshot.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <boost/graph/adjacency_list.hpp>

#include "qkdn/controller/network.hpp"
#include "qkdn/controller/topology.hpp"

namespace qkdn::controller {

/// How a route is scored.
enum class RouteMetric {
  /// Sum of hop_cost(): a hop costs more as its pool drains, as its generation rate falls and as
  /// consumption outruns generation. Lowest total first.
  kKeyAware,
  /// Largest bottleneck pool (bits) first; among equally wide routes, fewest hops first.
  kWidestShortest,
  /// Fewest hops first (baseline); every hop costs its link's weight (1 unless the operator set
  /// one), so the lowest total weight first.
  kHopCount,
};

/// "key_aware" | "widest_shortest" | "hop_count".
std::string_view to_string(RouteMetric m) noexcept;
/// Parses the names of to_string(RouteMetric); throws InvalidArgument.
RouteMetric parse_route_metric(std::string_view s);

/// Why a link cannot carry a route. A link may have several reasons at once.
enum class ExclusionReason : std::uint32_t {
  kLinkDown = 1U << 0,         ///< operational state down
  kAlarm = 1U << 1,            ///< operational state alarm (e.g. qber_high active)
  kAdminDisabled = 1U << 2,    ///< admin state disabled
  kMaintenance = 1U << 3,      ///< admin state maintenance
  kQberHigh = 1U << 4,         ///< QBER above the link's threshold (override, else network)
  kPoolBelowFloor = 1U << 5,   ///< pool below the link's floor (override, else network)
  kKmDisconnected = 1U << 6,   ///< an end KM has no Ck connection (when require_connected)
  kAvoidedLink = 1U << 7,      ///< named in RouteOptions::avoid_links
  kAvoidedKm = 1U << 8,        ///< an end KM is named in RouteOptions::avoid_kms
  kPoolBelowDemand = 1U << 9,  ///< pool < floor + RouteOptions::demand_bits
};

/// Stable machine name: "link_down", "alarm", "admin_disabled", "maintenance", "qber_high",
/// "pool_below_floor", "km_disconnected", "avoided_link", "avoided_km", "pool_below_demand".
std::string_view to_string(ExclusionReason r) noexcept;

/// One link as frozen in a snapshot, with its effective thresholds.
struct SnapshotLink {
  std::string link_id;
  std::string a;
  std::string b;
  AdminState admin = AdminState::kEnabled;
  /// The link's own operational state as its agents report it; KM connectivity is kept apart
  /// (a_connected / b_connected) so that require_connected can be lifted for what-if queries.
  OperState oper = OperState::kUp;
  std::uint64_t pool_bits = 0;
  double key_rate_bps = 0;
  double consumption_rate_bps = 0;
  double qber = 0;
  double distance_km = 0;
  double weight = 1;                  ///< the operator's link weight (LinkSpec::weight)
  double qber_threshold = 0;          ///< effective: per-link override, else network
  std::uint64_t pool_floor_bits = 0;  ///< effective: per-link override, else network
  bool a_connected = true;
  bool b_connected = true;
  /// Set by the snapshot: the largest max(pool - floor, 0) over all its links, the reference
  /// against which the key-aware cost measures how depleted this pool is (the controller does not
  /// know the key stores' sizes; the fullest pool stands in for them). 0 = unknown: no depletion
  /// term.
  double pool_reference_bits = 0;
  /// Set by the snapshot: how busy the network is, the total consumption rate of its links over
  /// their total generation rate, capped to [0, 1] (0 when nothing is consumed). The key-aware
  /// cost's share term (KeyAwareWeights::headroom_share) applies only while it is above 0.
  double network_load = 0;
};

/// One KM as frozen in a snapshot.
struct SnapshotKm {
  std::string km_id;
  bool connected = true;
  std::optional<int> trust_level{};  ///< as declared (absent = unrated)
  std::vector<std::string> tags{};   ///< as declared
  /// The trust level constraints compare: trust_level, else kMinTrustLevel.
  [[nodiscard]] int trust() const { return trust_level.value_or(kMinTrustLevel); }
};

/// What a route may expose of the trusted nodes between its ends (issue 20). Every intermediate
/// KM of a relay holds the key in the clear; the two end KMs are the SAEs' own KMs and are not
/// constrained. Routes that cannot meet the constraints are refused (explain_no_route says why),
/// never relaxed.
struct TrustConstraints {
  /// Most intermediate (trusted relay) KMs a route may cross; nullopt = no limit, 0 = direct
  /// links only.
  std::optional<std::size_t> max_intermediates;
  /// Every intermediate KM must have at least this trust level (unrated KMs count as
  /// kMinTrustLevel, so any value above it excludes them).
  int min_trust_level = kMinTrustLevel;
  /// No intermediate KM may carry any of these tags.
  std::vector<std::string> avoid_tags;

  /// True when nothing is constrained.
  [[nodiscard]] bool empty() const {
    return !max_intermediates && min_trust_level <= kMinTrustLevel && avoid_tags.empty();
  }
  /// The stricter of each constraint of `a` and `b` (smaller maximum, higher minimum, union of
  /// the tags): a pair's constraints on top of its policy's.
  static TrustConstraints strictest(const TrustConstraints& a, const TrustConstraints& b);
  friend bool operator==(const TrustConstraints&, const TrustConstraints&) = default;
};

/// Checks constraints given by a person or a peer: min_trust_level in [0, 100], tags valid and
/// unique. Throws InvalidArgument naming the field.
void validate_trust_constraints(const TrustConstraints& c);
/// For people: "at most 2 intermediate KMs, trust >= 60, avoiding tags [jurisdiction:XX]", or
/// "none".
std::string describe(const TrustConstraints& c);

/// The query-independent parts of a link's exclusion test and key-aware cost, precomputed when a
/// snapshot is built so that a route query touches each link only briefly.
struct LinkTerms {
  std::uint32_t static_exclusions = 0;  ///< ExclusionReason bits that no RouteOptions change
  bool ends_connected = true;           ///< both end KMs have a Ck connection
  double weight = 1;                    ///< SnapshotLink::weight: the base cost of the hop
  double available_bits = 0;            ///< max(pool - floor, 0)
  double inv_gen = 1;                   ///< 1 / max(key_rate_bps, 1)
  double drain = 0;                     ///< max(0, consumption - generation) / generation
  double net_drain_bps = 0;             ///< max(0, consumption - generation)
  double reference_bits = 0;            ///< SnapshotLink::pool_reference_bits
  double network_load = 0;              ///< SnapshotLink::network_load
  /// 1 - available_bits / pool_reference_bits, in [0, 1]; 0 when the reference is unknown
  double depletion = 0;
  /// exp(KeyAwareWeights{}.kappa * depletion): the depletion factor at the default exponent, so
  /// that default queries need no exp() per link
  double default_depletion_factor = 1;
};

/// Live values of one link for TopologySnapshot::from_doc. Absent optionals take the nominal
/// value of the LinkSpec (rate, QBER) or the network threshold (overrides).
struct LinkLive {
  AdminState admin = AdminState::kEnabled;
  OperState oper = OperState::kUp;
  std::uint64_t pool_bits = 0;
  std::optional<double> key_rate_bps;
  double consumption_rate_bps = 0;
  std::optional<double> qber;
  std::optional<double> qber_threshold;
  std::optional<std::uint64_t> pool_floor_bits;
};

/// Live state to freeze together with a TopologyDoc (tests, benches, what-if queries).
struct LiveState {
  std::map<std::string, LinkLive> links;   ///< by link_id; unknown IDs throw NotFound
  LinkLive defaults;                       ///< for links absent from `links`
  std::set<std::string> disconnected_kms;  ///< every other KM counts as connected
  Thresholds thresholds;
};

/// Pool and consumption of one link, for TopologySnapshot::with_key_state.
struct KeyState {
  std::uint64_t pool_bits = 0;
  double key_rate_bps = 0;
  double consumption_rate_bps = 0;
};

/// An immutable routing graph. Build it once per topology/state change and share it as
/// std::shared_ptr<const TopologySnapshot>; readers never see it half-updated.
/// KMs are numbered in km_id order and links in link_id order; the graph's vertex and edge
/// indices follow these numberings, which makes every tie-break stable.
class TopologySnapshot {
 public:
  /// Undirected multigraph; vertex = KM index, edge_index = link index.
  using Graph =
      boost::adjacency_list<boost::vecS, boost::vecS, boost::undirectedS, boost::no_property,
                            boost::property<boost::edge_index_t, std::size_t>>;

  /// Freezes a live Network (controller strand). A link's oper is kAlarm while its qber_high
  /// alarm is active, else what its agents last reported; KM connectivity comes from kms().
  static std::shared_ptr<const TopologySnapshot> from_network(const Network& network);
  /// Freezes a topology document with the given live values. Throws InvalidArgument if the
  /// document is inconsistent (validate_topology) and NotFound for live values of unknown links.
  static std::shared_ptr<const TopologySnapshot> from_doc(const TopologyDoc& doc,
                                                          const LiveState& live = {});

  /// A copy whose pools, rates and consumption are replaced, one entry per link in links()
  /// order (simulations, frequent status reports). Throws InvalidArgument on a size mismatch.
  [[nodiscard]] std::shared_ptr<const TopologySnapshot> with_key_state(
      std::span<const KeyState> state) const;

  /// KMs in km_id order.
  [[nodiscard]] const std::vector<SnapshotKm>& kms() const { return kms_; }
  /// Links in link_id order; index i is edge_index i of graph().
  [[nodiscard]] const std::vector<SnapshotLink>& links() const { return links_; }
  /// Precomputed terms per link, in links() order.
  [[nodiscard]] const std::vector<LinkTerms>& link_terms() const { return terms_; }
  /// The Boost graph (read-only).
  [[nodiscard]] const Graph& graph() const { return graph_; }
  /// Index of a KM in kms(), or nullopt.
  [[nodiscard]] std::optional<std::size_t> km_index(const std::string& km_id) const;
  /// Index of a link in links(), or nullopt.
  [[nodiscard]] std::optional<std::size_t> link_index(const std::string& link_id) const;
  /// Network::version() when built from a Network, else 0.
  [[nodiscard]] std::uint64_t version() const { return version_; }
  /// Network::structure_version() when built from a Network, else 0.
  [[nodiscard]] std::uint64_t structure_version() const { return structure_version_; }
  /// Network thresholds in force when the snapshot was taken.
  [[nodiscard]] const Thresholds& thresholds() const { return thresholds_; }
  /// Parallel links: for every KM pair joined by two or more links, their indices in link_id
  /// order. Groups are ordered by their first link.
  [[nodiscard]] const std::vector<std::vector<std::size_t>>& parallel_groups() const {
    return parallel_groups_;
  }

 private:
  TopologySnapshot() = default;
  void build_graph();
  void compute_terms();

  std::vector<SnapshotKm> kms_;
  std::vector<SnapshotLink> links_;
  std::vector<LinkTerms> terms_;
  std::vector<std::vector<std::size_t>> parallel_groups_;
  Graph graph_;
  Thresholds thresholds_;
  std::uint64_t version_ = 0;
  std::uint64_t structure_version_ = 0;
};

/// Tuning of the key-aware hop cost (see hop_cost). Defaults were chosen with
/// bench_demand_replay (3 seeds, germany50, nobel-eu and cost266, and generated graphs); all
/// weights must be >= 0.
struct KeyAwareWeights {
  double alpha = 16.0;                        ///< weight of pool scarcity
  double beta = 1.0;                          ///< weight of consumption outrunning generation
  double gamma = 1.0;                         ///< weight of the time to regenerate the demand
  double horizon_s = 1.0;                     ///< time scale of the regeneration term, seconds
  std::uint64_t reference_demand_bits = 256;  ///< demand assumed when demand_bits is 0
  double kappa = 3.0;                         ///< exponent of the pool depletion factor
  /// The headroom gate: a hop whose available pool holds at least `headroom` times its expected
  /// demand costs exactly 1 (hop count); the scarcity terms come in only below that. 0 = no gate
  /// (every hop always priced: the cost before issue 20).
  double headroom = 4.0;
  /// Time over which a hop's net drain max(0, consumption - generation) counts towards its
  /// expected demand, seconds.
  double headroom_horizon_s = 300.0;
  /// The gate also stays open (priced) while the pool holds less than this share of the fullest
  /// pool of the network (SnapshotLink::pool_reference_bits), in [0, 1]: in a network whose pools
  /// barely regenerate, the stock is what there is to share.
  double headroom_share = 0.9;
  /// Below the gate H the price comes in as u^2 and is whole once the pool is down to this share
  /// of H (or to the demand, if that is higher), in [0, 1): the scarcity terms are fully back
  /// well before the pool runs dry. 0 = whole only at the demand (the first gated cost, which
  /// blocked more than the ungated one at twice the reference load on cost266).
  double full_price_share = 0.5;
  /// The cost without the headroom gate (bench comparisons, operators who want it).
  static KeyAwareWeights ungated() {
    KeyAwareWeights w;
    w.headroom = 0;
    return w;
  }
};

/// What a route query asks for.
struct RouteOptions {
  RouteMetric metric = RouteMetric::kKeyAware;
  std::size_t k = 1;                     ///< number of loopless routes wanted (>= 1)
  std::optional<std::size_t> max_hops;   ///< longest acceptable route, in hops
  std::vector<std::string> avoid_kms;    ///< KMs no route may cross (unknown IDs throw NotFound)
  std::vector<std::string> avoid_links;  ///< links no route may use (unknown IDs throw NotFound)
  /// Exclude links whose end KM has no Ck connection. Lift it for what-if queries on a topology
  /// without agents.
  bool require_connected = true;
  /// Key the caller will draw on every hop; links with pool < floor + demand_bits are excluded.
  std::uint64_t demand_bits = 0;
  KeyAwareWeights weights;
  /// Trust constraints on the intermediate KMs (invalid ones throw InvalidArgument).
  TrustConstraints trust;
};

/// A loopless route. kms.size() == links.size() + 1; links[i] joins kms[i] and kms[i+1] (the best
/// of the parallel links between them).
struct Route {
  std::vector<std::string> kms;
  std::vector<std::string> links;
  /// kKeyAware: sum of hop_cost; kHopCount: sum of the link weights (hops when every weight is
  /// 1); kWidestShortest: hops (routes are ordered by bottleneck_bits first).
  double cost = 0;
  std::uint64_t bottleneck_bits = 0;  ///< smallest pool on the route
};

/// Whether a link may carry routes under given options, and why not.
struct LinkVerdict {
  std::string link_id;
  std::string a;
  std::string b;
  bool usable = false;
  std::vector<ExclusionReason> reasons;  ///< empty when usable, in enum order otherwise
  std::string detail;  ///< for people, e.g. "qber 0.130 > threshold 0.110"; empty when usable
  double cost = 0;     ///< hop cost under options.metric when usable
};

/// The exclusion reasons of link `index` under `options`, as a bit set of ExclusionReason.
/// Does not validate the avoid lists. Throws std::out_of_range on a bad index.
std::uint32_t exclusion_mask(const TopologySnapshot& snapshot, std::size_t index,
                             const RouteOptions& options);

/// Every link in link_id order with its verdict (northbound "why was this link excluded").
/// Throws NotFound for unknown IDs in the avoid lists.
std::vector<LinkVerdict> explain_links(const TopologySnapshot& snapshot,
                                       const RouteOptions& options = {});

/// Cost of crossing `link` under `options.metric`, assuming the link is usable.
/// kWidestShortest: 1. kHopCount: w, the link's weight (1 unless the operator set one).
/// kKeyAware: w times the gated cost below (so with every pool plentiful it is exactly hop
/// count's, plus the tie-break). With D = demand_bits (reference_demand_bits when
/// 0), A = max(pool - floor, 0), g = max(key_rate, 1 b/s), c = consumption rate, and
/// R = link.pool_reference_bits (the fullest pool of the snapshot), the price
///   P = (1 + gamma * D / (g * horizon_s))              base: time to remake D, per horizon
///     * exp(kappa * (1 - A / max(R, A)))               depletion (1 when R is 0)
///     * (1 + alpha * D / (A + D)                       scarcity: grows as the pool nears D
///          + beta * max(0, c - g) / g)                 drain: key leaves faster than it is made
/// enters through the headroom gate. With E = D + max(0, c - g) * headroom_horizon_s (the
/// request plus what the hop loses net over the horizon) and
/// H = max(headroom * E, headroom_share * R) (well more than the expected demand, and not much
/// less than the fullest pool: in networks whose links barely regenerate, the stock is what
/// there is to share):
///   cost = 1 + t                                       when A >= H (plenty: hop count)
///   cost = 1 + u^2 * (P - 1) + t,  u = (H - A) / (H - D)   when A < H, u clamped to [0, 1]
/// where t = 1e-9 * min(P, 1e6) < 0.001 only breaks ties between equally short routes (and
/// parallel links) in favour of the richer, faster links; cost = P when headroom is 0 (no gate).
/// The whole of it is multiplied by w (the tie-break too, so it stays below 0.001 w).
/// While every pool on the candidate routes holds well more than its expected demand, routes are
/// exactly as short as hop count and spend no key on detours; as a pool nears its demand the full
/// price P returns and spreads load onto richer routes, which is what keeps requests from blocking.
/// Within P, the base prices a hop by how long its generator needs to replace what the request
/// takes; the depletion factor is the exponential (Awerbuch-Azar-Plotkin) price of the share of the
/// pool already used, measured against the fullest pool; the last factor rises sharply as the pool
/// nears the demand or is being overdrawn. Every factor is >= 1, so costs are >= 1 and Dijkstra/Yen
/// apply; the cost never falls as the pool drains, consumption grows or the demand grows.
double hop_cost(const SnapshotLink& link, const RouteOptions& options);

/// Up to options.k loopless routes from src to dst, best first (Yen's algorithm over
/// Boost.Graph Dijkstra). Between two KMs only the best parallel link is considered (lowest
/// cost, then fuller pool, then link_id). Ties between routes are broken by KM order, then
/// link order. Every route meets options.trust: no intermediate KM below min_trust_level or
/// carrying an avoided tag, at most max_intermediates of them (the hop limit is then the smaller
/// of max_hops and max_intermediates + 1). src == dst gives one zero-hop route. No route is an
/// empty vector (explain_no_route says why).
/// Throws NotFound for an unknown src, dst or avoid entry, InvalidArgument when k == 0, a
/// weight is negative or the trust constraints are invalid.
std::vector<Route> compute_routes(const TopologySnapshot& snapshot, const std::string& src,
                                  const std::string& dst, const RouteOptions& options = {});

/// Why compute_routes found no route.
struct NoRouteExplanation {
  /// "no_usable_path": no route even without the trust constraints (links down, drained,
  /// avoided, hop limit); "trust_constraints": routes exist but none meets options.trust.
  std::string code;
  /// For people, e.g. "no route from A to B meets the trust constraints (trust >= 60): every
  /// usable route crosses a KM that breaks them; the best one crosses X (trust 20)".
  std::string detail;
};

/// Explains an empty compute_routes answer (same arguments, same errors). Call it only when
/// compute_routes returned nothing; it recomputes without the trust constraints to tell the two
/// cases apart.
NoRouteExplanation explain_no_route(const TopologySnapshot& snapshot, const std::string& src,
                                    const std::string& dst, const RouteOptions& options = {});

/// Why a given route breaks `constraints` (nullopt when it meets them), e.g. "crosses KM 'X'
/// (trust 20 < 60)". KMs unknown to the snapshot count as unrated without tags.
std::optional<std::string> trust_violation(const TopologySnapshot& snapshot, const Route& route,
                                           const TrustConstraints& constraints);

/// The distinct first-hop KMs of the k best routes, in route order (Q.4164 0x1401/0x4102
/// distributed mode). Same errors as compute_routes; empty when there is no route or src == dst.
std::vector<std::string> next_hops(const TopologySnapshot& snapshot, const std::string& src,
                                   const std::string& dst, const RouteOptions& options = {});

}  // namespace qkdn::controller
