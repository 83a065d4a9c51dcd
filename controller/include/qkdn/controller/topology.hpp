// The topology document (docs/topology.md, docs/topology.schema.json) as plain data, and its
// validation.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <vector>

namespace qkdn::controller {

/// A key manager as declared by the operator.
struct KmSpec {
  std::string km_id;
  std::string site;
  std::optional<double> lat{};  ///< site latitude, WGS 84 degrees in [-90, 90] (with lon, or none)
  std::optional<double> lon{};  ///< site longitude, WGS 84 degrees in [-180, 180]
  /// How far the operator trusts this KM as a relay node, an integer in [kMinTrustLevel,
  /// kMaxTrustLevel]; absent = unrated, which counts as kMinTrustLevel for route constraints.
  std::optional<int> trust_level{};
  /// Operator labels used by route constraints (avoid_tags), e.g. "operator:acme",
  /// "site:colocation", "jurisdiction:DE": unique, each 1..128 of [A-Za-z0-9._:-].
  std::vector<std::string> tags{};
  /// A gateway KM (Y.3818 GWN): it may end inter-QKDN links towards KMs of other QKDNs.
  bool gateway = false;
};

inline constexpr int kMinTrustLevel = 0;
inline constexpr int kMaxTrustLevel = 100;
/// The trust level route constraints use for a KM: trust_level, else kMinTrustLevel.
inline int effective_trust(const KmSpec& km) { return km.trust_level.value_or(kMinTrustLevel); }

/// An undirected QKD/KMA link between two KMs; each link has its own key pool.
struct LinkSpec {
  std::string link_id;
  std::string a;
  std::string b;
  double key_rate_bps = 0;  ///< nominal secret-key rate
  double distance_km = 0;
  double qber = 0;  ///< nominal quantum bit error ratio (0..1)
  /// The operator's routing weight: what crossing this link costs hop count, and the base of the
  /// key-aware cost (see hop_cost). Finite, in (0, kMaxLinkWeight]; 1 = one hop.
  double weight = 1;
};

/// The largest link weight a document may declare (costs stay far from overflow and precision
/// loss over any route).
inline constexpr double kMaxLinkWeight = 1e6;

/// A secure application entity (SAE) and the KM whose KSA serves it.
struct AppSpec {
  std::string sae_id;
  std::string km_id;
};

/// An inter-QKDN link (Y.3818 Kxi-1 with its quantum link): a local gateway KM and a KM of
/// another QKDN, named (peer_qkdn_id, peer_km_id). Its key pool is the local gateway's.
struct InterQkdnLinkSpec {
  std::string link_id;  ///< unique among links and inter-QKDN links; both QKDNs use the same ID
  std::string km_id;    ///< the local gateway KM (kms[].gateway)
  std::string peer_qkdn_id;
  std::string peer_km_id;
  double key_rate_bps = 0;
};

/// What a peer controller may use of this QKDN (Y.3818 "policy-based control function").
struct PeerPolicy {
  /// Local SAEs the peer may reach (Cxi reachability announces only these, and route requests
  /// for any other SAE are refused). Empty: none.
  std::vector<std::string> reachable_saes{};
  /// The share of each inter-QKDN link's key rate the peer's relays may use, in [0, 1].
  double key_rate_share = 0;
};

/// A peer controller: the controller of another QKDN, reached over Cxi (docs/cxi.md).
struct PeerSpec {
  std::string qkdn_id;   ///< the peer's QKDN ID
  std::string endpoint;  ///< host:port of its Cxi listener; empty = it dials us
  /// The controller ID its certificate must carry (urn:qkdn:controller:<identity>).
  std::string identity;
  PeerPolicy policy{};
};

/// Bounds of the interworking part of a document.
inline constexpr std::size_t kMaxPeers = 64;
inline constexpr std::size_t kMaxInterQkdnLinks = 1024;
inline constexpr std::size_t kMaxReachableSaesPerPeer = 4096;

/// The whole topology document.
struct TopologyDoc {
  std::string name;
  std::vector<KmSpec> kms;
  std::vector<LinkSpec> links;
  std::vector<AppSpec> applications;
  /// This network's QKDN ID (Y.3818); empty = not part of any interworking. Required when the
  /// document names peers or inter-QKDN links.
  std::string qkdn_id{};
  std::vector<InterQkdnLinkSpec> inter_qkdn_links{};
  std::vector<PeerSpec> peers{};
};

/// Checks a document for consistency: valid and unique IDs, coordinates both given or neither and
/// in range, trust levels in [0, 100], tags valid and unique per KM, links between two distinct
/// known KMs, non-negative finite rates and distances, QBER in [0, 1], applications on known KMs
/// with unique SAE IDs; the interworking part (validate_interworking). Throws InvalidArgument
/// naming the first offending element (e.g. "links[3].b: unknown KM 'X'").
void validate_topology(const TopologyDoc& doc);

/// The interworking part of a document: a valid QKDN ID when peers or inter-QKDN links exist;
/// peers with unique valid QKDN IDs other than ours, valid identities, endpoints host:port (or
/// empty), reachable SAEs that are applications of the document, unique, key_rate_share in
/// [0, 1]; inter-QKDN links with IDs unique among all links, on a gateway KM, towards a declared
/// peer, non-negative finite rates; every list within its kMax bound.
void validate_interworking(const TopologyDoc& doc);

/// "host:port" with a non-empty host (name, IPv4, or [IPv6]) and a port in 1..65535.
bool is_valid_endpoint(const std::string& endpoint) noexcept;

}  // namespace qkdn::controller
