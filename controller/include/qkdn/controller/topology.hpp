// The topology document (docs/topology.md, docs/topology.schema.json) as plain data, and its
// validation.
#pragma once

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

/// The whole topology document.
struct TopologyDoc {
  std::string name;
  std::vector<KmSpec> kms;
  std::vector<LinkSpec> links;
  std::vector<AppSpec> applications;
};

/// Checks a document for consistency: valid and unique IDs, coordinates both given or neither and
/// in range, trust levels in [0, 100], tags valid and unique per KM, links between two distinct
/// known KMs, non-negative finite rates and distances, QBER in [0, 1], applications on known KMs
/// with unique SAE IDs. Throws InvalidArgument naming the first offending element (e.g.
/// "links[3].b: unknown KM 'X'").
void validate_topology(const TopologyDoc& doc);

}  // namespace qkdn::controller
