// Validation of the interworking part of the topology document (topology.hpp: QKDN ID, gateway
// KMs, inter-QKDN links, peer controllers and their policies; docs/topology.md).
#include <cmath>
#include <set>
#include <string>
#include <string_view>
#include <unordered_set>

#include "qkdn/controller/clock.hpp"
#include "qkdn/controller/error.hpp"
#include "qkdn/controller/topology.hpp"

namespace qkdn::controller {

namespace {

std::string at(std::string_view array, std::size_t index, std::string_view field) {
  return std::string(array) + "[" + std::to_string(index) + "]." + std::string(field);
}

void check_valid_id(const std::string& id, const std::string& path, std::string_view what) {
  if (id.empty()) throw InvalidArgument(path + ": missing " + std::string(what));
  if (!is_valid_id(id)) {
    throw InvalidArgument(path + ": invalid " + std::string(what) + " '" + id +
                          "' (1..128 of [A-Za-z0-9._:-])");
  }
}

bool is_host_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '-' || c == '_';
}

}  // namespace

bool is_valid_endpoint(const std::string& endpoint) noexcept {
  const auto colon = endpoint.rfind(':');
  if (colon == std::string::npos || colon == 0 || endpoint.size() > 300) return false;
  const std::string_view host(endpoint.data(), colon);
  const std::string_view port(endpoint.data() + colon + 1, endpoint.size() - colon - 1);
  if (port.empty() || port.size() > 5) return false;
  unsigned value = 0;
  for (char c : port) {
    if (c < '0' || c > '9') return false;
    value = value * 10 + static_cast<unsigned>(c - '0');
  }
  if (value == 0 || value > 65535) return false;
  if (host.front() == '[') {
    if (host.size() < 3 || host.back() != ']') return false;
    for (char c : host.substr(1, host.size() - 2)) {
      if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F') ||
            c == ':' || c == '.')) {
        return false;
      }
    }
    return true;
  }
  for (char c : host) {
    if (!is_host_char(c)) return false;
  }
  return true;
}

void validate_interworking(const TopologyDoc& doc) {
  const bool interworking = !doc.peers.empty() || !doc.inter_qkdn_links.empty();
  if (!doc.qkdn_id.empty() || interworking) {
    check_valid_id(doc.qkdn_id, "qkdn_id", "QKDN ID");
  }
  if (doc.peers.size() > kMaxPeers) {
    throw InvalidArgument("peers: at most " + std::to_string(kMaxPeers) + " peers, got " +
                          std::to_string(doc.peers.size()));
  }
  if (doc.inter_qkdn_links.size() > kMaxInterQkdnLinks) {
    throw InvalidArgument("inter_qkdn_links: at most " + std::to_string(kMaxInterQkdnLinks) +
                          " links, got " + std::to_string(doc.inter_qkdn_links.size()));
  }
  std::set<std::string> saes;
  for (const AppSpec& a : doc.applications) saes.insert(a.sae_id);
  std::set<std::string> gateways;
  for (const KmSpec& k : doc.kms) {
    if (k.gateway) gateways.insert(k.km_id);
  }

  std::set<std::string> peers;
  std::set<std::string> identities;
  for (std::size_t i = 0; i < doc.peers.size(); ++i) {
    const PeerSpec& p = doc.peers[i];
    check_valid_id(p.qkdn_id, at("peers", i, "qkdn_id"), "QKDN ID");
    if (p.qkdn_id == doc.qkdn_id) {
      throw InvalidArgument(at("peers", i, "qkdn_id") + ": '" + p.qkdn_id +
                            "' is this network's own QKDN ID");
    }
    if (!peers.insert(p.qkdn_id).second) {
      throw InvalidArgument(at("peers", i, "qkdn_id") + ": duplicate QKDN ID '" + p.qkdn_id + "'");
    }
    check_valid_id(p.identity, at("peers", i, "identity"), "controller identity");
    if (!identities.insert(p.identity).second) {
      throw InvalidArgument(at("peers", i, "identity") + ": controller identity '" + p.identity +
                            "' already names another peer");
    }
    if (!p.endpoint.empty() && !is_valid_endpoint(p.endpoint)) {
      throw InvalidArgument(at("peers", i, "endpoint") + ": '" + p.endpoint +
                            "' is not host:port (port 1..65535)");
    }
    const PeerPolicy& pol = p.policy;
    if (!std::isfinite(pol.key_rate_share) || pol.key_rate_share < 0 || pol.key_rate_share > 1) {
      throw InvalidArgument(at("peers", i, "policy.key_rate_share") + ": must be in [0, 1]");
    }
    if (pol.reachable_saes.size() > kMaxReachableSaesPerPeer) {
      throw InvalidArgument(at("peers", i, "policy.reachable_saes") + ": at most " +
                            std::to_string(kMaxReachableSaesPerPeer) + " SAEs");
    }
    std::unordered_set<std::string> seen;
    for (std::size_t s = 0; s < pol.reachable_saes.size(); ++s) {
      const std::string& sae = pol.reachable_saes[s];
      std::string message = at("peers", i, "policy.reachable_saes[" + std::to_string(s) + "]");
      if (!saes.contains(sae)) {
        message += ": unknown SAE '";
        message += sae;
        message += "' (not in applications)";
        throw InvalidArgument(message);
      }
      if (!seen.insert(sae).second) {
        message += ": duplicate SAE '";
        message += sae;
        message += "'";
        throw InvalidArgument(message);
      }
    }
  }

  std::set<std::string> link_ids;
  for (const LinkSpec& l : doc.links) link_ids.insert(l.link_id);
  for (std::size_t i = 0; i < doc.inter_qkdn_links.size(); ++i) {
    const InterQkdnLinkSpec& l = doc.inter_qkdn_links[i];
    check_valid_id(l.link_id, at("inter_qkdn_links", i, "link_id"), "link ID");
    if (!link_ids.insert(l.link_id).second) {
      throw InvalidArgument(at("inter_qkdn_links", i, "link_id") + ": duplicate link ID '" +
                            l.link_id + "' (link IDs are unique among links and inter-QKDN links)");
    }
    check_valid_id(l.km_id, at("inter_qkdn_links", i, "km_id"), "KM ID");
    if (!gateways.contains(l.km_id)) {
      throw InvalidArgument(at("inter_qkdn_links", i, "km_id") + ": '" + l.km_id +
                            "' is not a gateway KM of this network (kms[].gateway)");
    }
    check_valid_id(l.peer_qkdn_id, at("inter_qkdn_links", i, "peer_qkdn_id"), "QKDN ID");
    if (!peers.contains(l.peer_qkdn_id)) {
      throw InvalidArgument(at("inter_qkdn_links", i, "peer_qkdn_id") + ": unknown peer '" +
                            l.peer_qkdn_id + "' (not in peers)");
    }
    check_valid_id(l.peer_km_id, at("inter_qkdn_links", i, "peer_km_id"), "KM ID");
    if (!std::isfinite(l.key_rate_bps) || l.key_rate_bps < 0) {
      throw InvalidArgument(at("inter_qkdn_links", i, "key_rate_bps") +
                            ": must be a finite number >= 0");
    }
  }
}

}  // namespace qkdn::controller
