#include "qkdn/controller/topology.hpp"

#include <cmath>
#include <string_view>
#include <unordered_map>

#include "qkdn/controller/clock.hpp"
#include "qkdn/controller/error.hpp"

namespace qkdn::controller {

namespace {

std::string at(std::string_view array, std::size_t index, std::string_view field) {
  return std::string(array) + "[" + std::to_string(index) + "]." + std::string(field);
}

// Rejects an ID that is malformed or already used in the same array; remembers it otherwise.
void check_id(std::unordered_map<std::string, std::size_t>& seen, const std::string& id,
              std::string_view array, std::size_t index, std::string_view field,
              std::string_view what) {
  const std::string path = at(array, index, field);
  if (id.empty()) throw InvalidArgument(path + ": missing " + std::string(what));
  if (!is_valid_id(id)) {
    throw InvalidArgument(path + ": invalid " + std::string(what) + " '" + id +
                          "' (1..128 of [A-Za-z0-9._:-])");
  }
  const auto [it, inserted] = seen.emplace(id, index);
  if (!inserted) {
    throw InvalidArgument(path + ": duplicate " + std::string(what) + " '" + id + "' (first at " +
                          at(array, it->second, field) + ")");
  }
}

void check_non_negative(double v, std::size_t index, std::string_view field) {
  if (!std::isfinite(v) || v < 0) {
    throw InvalidArgument(at("links", index, field) + ": must be a finite number >= 0");
  }
}

}  // namespace

void validate_topology(const TopologyDoc& doc) {
  std::unordered_map<std::string, std::size_t> kms;
  kms.reserve(doc.kms.size());
  for (std::size_t i = 0; i < doc.kms.size(); ++i) {
    const KmSpec& k = doc.kms[i];
    check_id(kms, k.km_id, "kms", i, "km_id", "KM ID");
    if (k.lat.has_value() != k.lon.has_value()) {
      throw InvalidArgument(at("kms", i, k.lat ? "lon" : "lat") +
                            ": missing (site coordinates need both lat and lon)");
    }
    if (k.lat && (!std::isfinite(*k.lat) || *k.lat < -90 || *k.lat > 90)) {
      throw InvalidArgument(at("kms", i, "lat") + ": must be in [-90, 90]");
    }
    if (k.lon && (!std::isfinite(*k.lon) || *k.lon < -180 || *k.lon > 180)) {
      throw InvalidArgument(at("kms", i, "lon") + ": must be in [-180, 180]");
    }
    if (k.trust_level && (*k.trust_level < kMinTrustLevel || *k.trust_level > kMaxTrustLevel)) {
      throw InvalidArgument(at("kms", i, "trust_level") + ": must be an integer in [" +
                            std::to_string(kMinTrustLevel) + ", " + std::to_string(kMaxTrustLevel) +
                            "], got " + std::to_string(*k.trust_level));
    }
    for (std::size_t t = 0; t < k.tags.size(); ++t) {
      const std::string path = at("kms", i, "tags[" + std::to_string(t) + "]");
      if (!is_valid_id(k.tags[t])) {
        throw InvalidArgument(path + ": invalid tag '" + k.tags[t] +
                              "' (1..128 of [A-Za-z0-9._:-])");
      }
      for (std::size_t u = 0; u < t; ++u) {
        if (k.tags[u] == k.tags[t]) {
          throw InvalidArgument(path + ": duplicate tag '" + k.tags[t] + "'");
        }
      }
    }
  }

  std::unordered_map<std::string, std::size_t> links;
  links.reserve(doc.links.size());
  for (std::size_t i = 0; i < doc.links.size(); ++i) {
    const LinkSpec& l = doc.links[i];
    check_id(links, l.link_id, "links", i, "link_id", "link ID");
    if (!kms.contains(l.a))
      throw InvalidArgument(at("links", i, "a") + ": unknown KM '" + l.a + "'");
    if (!kms.contains(l.b))
      throw InvalidArgument(at("links", i, "b") + ": unknown KM '" + l.b + "'");
    if (l.a == l.b) {
      throw InvalidArgument(at("links", i, "b") + ": link joins KM '" + l.a + "' to itself");
    }
    check_non_negative(l.key_rate_bps, i, "key_rate_bps");
    check_non_negative(l.distance_km, i, "distance_km");
    if (!std::isfinite(l.qber) || l.qber < 0 || l.qber > 1) {
      throw InvalidArgument(at("links", i, "qber") + ": must be in [0, 1]");
    }
    if (!std::isfinite(l.weight) || l.weight <= 0 || l.weight > kMaxLinkWeight) {
      throw InvalidArgument(at("links", i, "weight") + ": must be a finite number > 0 and <= 1e6");
    }
  }

  std::unordered_map<std::string, std::size_t> saes;
  saes.reserve(doc.applications.size());
  for (std::size_t i = 0; i < doc.applications.size(); ++i) {
    const AppSpec& a = doc.applications[i];
    check_id(saes, a.sae_id, "applications", i, "sae_id", "SAE ID");
    if (!kms.contains(a.km_id)) {
      throw InvalidArgument(at("applications", i, "km_id") + ": unknown KM '" + a.km_id + "'");
    }
  }
  validate_interworking(doc);
}

}  // namespace qkdn::controller
