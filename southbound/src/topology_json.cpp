#include "qkdn/southbound/topology_json.hpp"

#include <cmath>
#include <fstream>
#include <initializer_list>
#include <sstream>

#include <boost/json.hpp>

#include "qkdn/controller/error.hpp"
#include "qkdn/json/reader.hpp"

namespace qkdn::southbound {
namespace json = boost::json;
using controller::TopologyDoc;

namespace {

// Reports unknown members of `obj` as errors when strict.
void check_members(const json::object& obj, std::initializer_list<std::string_view> known,
                   const std::string& path, bool strict) {
  if (!strict) return;
  for (const auto& kv : obj) {
    bool ok = false;
    for (auto k : known) ok = ok || kv.key() == k;
    if (!ok) {
      throw InvalidArgument(path + "." + std::string(kv.key()) + ": unknown field");
    }
  }
}

std::string get_string(const json::object& obj, std::string_view key, const std::string& path,
                       bool required) {
  const auto* v = obj.if_contains(key);
  if (v == nullptr) {
    if (required) throw InvalidArgument(path + "." + std::string(key) + ": missing");
    return {};
  }
  if (!v->is_string()) {
    throw InvalidArgument(path + "." + std::string(key) + ": expected string");
  }
  return std::string(v->get_string());
}

double get_number(const json::object& obj, std::string_view key, const std::string& path,
                  bool required, double fallback) {
  const auto* v = obj.if_contains(key);
  if (v == nullptr) {
    if (required) throw InvalidArgument(path + "." + std::string(key) + ": missing");
    return fallback;
  }
  if (!v->is_number()) {
    throw InvalidArgument(path + "." + std::string(key) + ": expected number");
  }
  double d = v->to_number<double>();
  if (!std::isfinite(d)) {
    throw InvalidArgument(path + "." + std::string(key) + ": not a finite number");
  }
  return d;
}

const json::array& get_array(const json::object& obj, std::string_view key, bool required) {
  static const json::array kEmpty;
  const auto* v = obj.if_contains(key);
  if (v == nullptr) {
    if (required) throw InvalidArgument(std::string(key) + ": missing");
    return kEmpty;
  }
  if (!v->is_array()) throw InvalidArgument(std::string(key) + ": expected array");
  return v->get_array();
}

const json::object& as_object(const json::value& v, const std::string& path) {
  if (!v.is_object()) throw InvalidArgument(path + ": expected object");
  return v.get_object();
}

// The reader's refusals ("malformed JSON: ...", "JSON larger than ...") name the document.
// The Reject signature takes the message by value.
[[noreturn]] void refuse_topology(
    std::string message) {  // NOLINT(performance-unnecessary-value-param)
  throw InvalidArgument("topology: " + message);
}

// A topology of 10,000 KMs and 30,000 links is about 6 MB; the bound leaves room for names.
constexpr qkdn::json::ParseLimits kTopologyLimits{std::size_t{64} << 20, 32};

std::vector<std::string> get_string_array(const json::object& obj, std::string_view key,
                                          const std::string& path, std::size_t max) {
  std::vector<std::string> out;
  const auto* v = obj.if_contains(key);
  if (v == nullptr) return out;
  const std::string where = path + "." + std::string(key);
  if (!v->is_array()) throw InvalidArgument(where + ": expected array");
  const auto& arr = v->get_array();
  if (arr.size() > max) {
    throw InvalidArgument(where + ": at most " + std::to_string(max) + " entries");
  }
  for (std::size_t i = 0; i < arr.size(); ++i) {
    if (!arr[i].is_string()) {
      throw InvalidArgument(where + "[" + std::to_string(i) + "]: expected string");
    }
    out.emplace_back(arr[i].get_string());
  }
  return out;
}

}  // namespace

controller::PeerSpec parse_peer(const json::object& o, const std::string& path, bool strict) {
  check_members(o, {"qkdn_id", "endpoint", "identity", "policy"}, path, strict);
  controller::PeerSpec p;
  p.qkdn_id = get_string(o, "qkdn_id", path, true);
  p.endpoint = get_string(o, "endpoint", path, false);
  p.identity = get_string(o, "identity", path, true);
  if (const auto* pol = o.if_contains("policy")) {
    const std::string ppath = path + ".policy";
    const auto& po = as_object(*pol, ppath);
    check_members(po, {"reachable_saes", "key_rate_share"}, ppath, strict);
    p.policy.reachable_saes =
        get_string_array(po, "reachable_saes", ppath, controller::kMaxReachableSaesPerPeer);
    p.policy.key_rate_share = get_number(po, "key_rate_share", ppath, false, 0);
  }
  return p;
}

json::object peer_to_json(const controller::PeerSpec& p) {
  json::array saes;
  for (const auto& s : p.policy.reachable_saes) saes.emplace_back(s);
  return json::object{{"qkdn_id", p.qkdn_id},
                      {"endpoint", p.endpoint},
                      {"identity", p.identity},
                      {"policy", json::object{{"reachable_saes", std::move(saes)},
                                              {"key_rate_share", p.policy.key_rate_share}}}};
}

json::object inter_qkdn_link_to_json(const controller::InterQkdnLinkSpec& l) {
  return json::object{{"link_id", l.link_id},
                      {"km_id", l.km_id},
                      {"peer_qkdn_id", l.peer_qkdn_id},
                      {"peer_km_id", l.peer_km_id},
                      {"key_rate_bps", l.key_rate_bps}};
}

controller::InterQkdnLinkSpec parse_inter_qkdn_link(const json::object& o, const std::string& path,
                                                    bool strict) {
  check_members(o, {"link_id", "km_id", "peer_qkdn_id", "peer_km_id", "key_rate_bps"}, path,
                strict);
  controller::InterQkdnLinkSpec l;
  l.link_id = get_string(o, "link_id", path, true);
  l.km_id = get_string(o, "km_id", path, true);
  l.peer_qkdn_id = get_string(o, "peer_qkdn_id", path, true);
  l.peer_km_id = get_string(o, "peer_km_id", path, true);
  l.key_rate_bps = get_number(o, "key_rate_bps", path, false, 0);
  return l;
}

// The interworking part (docs/topology.md "Interworking"): inter_qkdn_links and peers. Array
// sizes are bounded here already, before anything is copied.
static void parse_interworking(const json::object& obj, TopologyDoc& doc, bool strict) {
  const auto& links = get_array(obj, "inter_qkdn_links", false);
  if (links.size() > controller::kMaxInterQkdnLinks) {
    throw InvalidArgument("inter_qkdn_links: at most " +
                          std::to_string(controller::kMaxInterQkdnLinks) + " links");
  }
  for (std::size_t i = 0; i < links.size(); ++i) {
    const std::string path = "inter_qkdn_links[" + std::to_string(i) + "]";
    doc.inter_qkdn_links.push_back(parse_inter_qkdn_link(as_object(links[i], path), path, strict));
  }
  const auto& peers = get_array(obj, "peers", false);
  if (peers.size() > controller::kMaxPeers) {
    throw InvalidArgument("peers: at most " + std::to_string(controller::kMaxPeers) + " peers");
  }
  for (std::size_t i = 0; i < peers.size(); ++i) {
    const std::string path = "peers[" + std::to_string(i) + "]";
    doc.peers.push_back(parse_peer(as_object(peers[i], path), path, strict));
  }
}

TopologyDoc parse_topology(std::string_view text, bool strict) {
  // The shared reader: bounded, and exact for every number (a document survives write and read).
  const json::value root = qkdn::json::parse(text, kTopologyLimits, refuse_topology);
  const auto& obj = as_object(root, "topology");
  check_members(obj,
                {"name", "qkdn_id", "kms", "links", "applications", "inter_qkdn_links", "peers"},
                "topology", strict);

  TopologyDoc doc;
  doc.name = get_string(obj, "name", "topology", false);
  doc.qkdn_id = get_string(obj, "qkdn_id", "topology", false);
  const auto& kms = get_array(obj, "kms", true);
  for (std::size_t i = 0; i < kms.size(); ++i) {
    const std::string path = "kms[" + std::to_string(i) + "]";
    const auto& o = as_object(kms[i], path);
    check_members(o, {"km_id", "site", "lat", "lon", "trust_level", "tags", "gateway"}, path,
                  strict);
    controller::KmSpec k{get_string(o, "km_id", path, true), get_string(o, "site", path, false)};
    if (o.contains("lat")) k.lat = get_number(o, "lat", path, true, 0);
    if (o.contains("lon")) k.lon = get_number(o, "lon", path, true, 0);
    if (o.contains("trust_level")) {
      const double t = get_number(o, "trust_level", path, true, 0);
      if (std::floor(t) != t || t < controller::kMinTrustLevel || t > controller::kMaxTrustLevel) {
        throw InvalidArgument(path + ".trust_level: must be an integer in [0, 100]");
      }
      k.trust_level = static_cast<int>(t);
    }
    if (const auto* tags = o.if_contains("tags")) {
      if (!tags->is_array()) throw InvalidArgument(path + ".tags: expected array");
      for (std::size_t t = 0; t < tags->get_array().size(); ++t) {
        const auto& v = tags->get_array()[t];
        if (!v.is_string()) {
          throw InvalidArgument(path + ".tags[" + std::to_string(t) + "]: expected string");
        }
        k.tags.emplace_back(v.get_string());
      }
    }
    if (const auto* gw = o.if_contains("gateway")) {
      if (!gw->is_bool()) throw InvalidArgument(path + ".gateway: expected boolean");
      k.gateway = gw->get_bool();
    }
    doc.kms.push_back(std::move(k));
  }
  const auto& links = get_array(obj, "links", false);
  for (std::size_t i = 0; i < links.size(); ++i) {
    const std::string path = "links[" + std::to_string(i) + "]";
    const auto& o = as_object(links[i], path);
    check_members(o, {"link_id", "a", "b", "key_rate_bps", "distance_km", "qber", "weight"}, path,
                  strict);
    controller::LinkSpec l;
    l.link_id = get_string(o, "link_id", path, true);
    l.a = get_string(o, "a", path, true);
    l.b = get_string(o, "b", path, true);
    l.key_rate_bps = get_number(o, "key_rate_bps", path, true, 0);
    l.distance_km = get_number(o, "distance_km", path, false, 0);
    l.qber = get_number(o, "qber", path, false, 0);
    l.weight = get_number(o, "weight", path, false, 1);
    doc.links.push_back(std::move(l));
  }
  const auto& apps = get_array(obj, "applications", false);
  for (std::size_t i = 0; i < apps.size(); ++i) {
    const std::string path = "applications[" + std::to_string(i) + "]";
    const auto& o = as_object(apps[i], path);
    check_members(o, {"sae_id", "km_id"}, path, strict);
    doc.applications.push_back(
        {get_string(o, "sae_id", path, true), get_string(o, "km_id", path, true)});
  }
  parse_interworking(obj, doc, strict);
  controller::validate_topology(doc);
  return doc;
}

TopologyDoc load_topology_file(const std::string& path, bool strict) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InvalidArgument("cannot read topology file '" + path + "'");
  std::ostringstream ss;
  ss << in.rdbuf();
  try {
    return parse_topology(ss.str(), strict);
  } catch (const InvalidArgument& e) {
    throw InvalidArgument(path + ": " + e.what());
  }
}

namespace {
void pretty_print(std::ostream& os, const json::value& v, int indent) {
  const std::string pad(static_cast<std::size_t>(indent), ' ');
  if (v.is_object()) {
    const auto& o = v.get_object();
    if (o.empty()) {
      os << "{}";
      return;
    }
    os << "{\n";
    bool first = true;
    for (const auto& kv : o) {
      if (!first) os << ",\n";
      first = false;
      os << pad << "  " << json::serialize(json::string(kv.key())) << ": ";
      pretty_print(os, kv.value(), indent + 2);
    }
    os << "\n" << pad << "}";
  } else if (v.is_array()) {
    const auto& a = v.get_array();
    if (a.empty()) {
      os << "[]";
      return;
    }
    os << "[\n";
    for (std::size_t i = 0; i < a.size(); ++i) {
      if (i) os << ",\n";
      os << pad << "  ";
      pretty_print(os, a[i], indent + 2);
    }
    os << "\n" << pad << "]";
  } else {
    os << json::serialize(v);
  }
}
}  // namespace

std::string serialize_topology(const TopologyDoc& doc, bool pretty) {
  json::object root;
  root["name"] = doc.name;
  if (!doc.qkdn_id.empty()) root["qkdn_id"] = doc.qkdn_id;
  json::array kms;
  for (const auto& k : doc.kms) {
    json::object o{{"km_id", k.km_id}, {"site", k.site}};
    if (k.lat && k.lon) {
      o["lat"] = *k.lat;
      o["lon"] = *k.lon;
    }
    if (k.trust_level) o["trust_level"] = *k.trust_level;
    if (!k.tags.empty()) {
      json::array tags;
      for (const auto& t : k.tags) tags.emplace_back(t);
      o["tags"] = std::move(tags);
    }
    if (k.gateway) o["gateway"] = true;
    kms.push_back(std::move(o));
  }
  root["kms"] = std::move(kms);
  json::array links;
  for (const auto& l : doc.links) {
    json::object o{{"link_id", l.link_id},
                   {"a", l.a},
                   {"b", l.b},
                   {"key_rate_bps", l.key_rate_bps},
                   {"distance_km", l.distance_km},
                   {"qber", l.qber}};
    // The default weight is left out, so documents without weights read and write unchanged.
    if (l.weight != 1) o["weight"] = l.weight;
    links.push_back(std::move(o));
  }
  root["links"] = std::move(links);
  json::array apps;
  for (const auto& a : doc.applications) {
    apps.push_back(json::object{{"sae_id", a.sae_id}, {"km_id", a.km_id}});
  }
  root["applications"] = std::move(apps);
  // The interworking part is written only when there is one: other documents stay unchanged.
  if (!doc.inter_qkdn_links.empty()) {
    json::array inter;
    for (const auto& l : doc.inter_qkdn_links) inter.push_back(inter_qkdn_link_to_json(l));
    root["inter_qkdn_links"] = std::move(inter);
  }
  if (!doc.peers.empty()) {
    json::array peers;
    for (const auto& p : doc.peers) peers.push_back(peer_to_json(p));
    root["peers"] = std::move(peers);
  }
  if (!pretty) return json::serialize(root);
  std::ostringstream os;
  pretty_print(os, root, 0);
  os << "\n";
  return os.str();
}

}  // namespace qkdn::southbound
