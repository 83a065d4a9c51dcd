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
};

/// An undirected QKD/KMA link between two KMs; each link has its own key pool.
struct LinkSpec {
  std::string link_id;
  std::string a;
  std::string b;
  double key_rate_bps = 0;  ///< nominal secret-key rate
  double distance_km = 0;
  double qber = 0;  ///< nominal quantum bit error ratio (0..1)
};

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
/// in range, links between two distinct known KMs,
/// non-negative finite rates and distances, QBER in [0, 1], applications on known KMs with unique
/// SAE IDs. Throws InvalidArgument naming the first offending element (e.g. "links[3].b: unknown
/// KM 'X'").
void validate_topology(const TopologyDoc& doc);

}  // namespace qkdn::controller
