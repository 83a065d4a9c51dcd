#include "qkdn/controller/network.hpp"

#include <algorithm>
#include <cmath>
#include <utility>

#include "qkdn/controller/alarms.hpp"
#include "qkdn/controller/error.hpp"

namespace qkdn::controller {

std::string_view to_string(AdminState s) noexcept {
  switch (s) {
    case AdminState::kEnabled:
      return "enabled";
    case AdminState::kDisabled:
      return "disabled";
    case AdminState::kMaintenance:
      return "maintenance";
  }
  return "enabled";
}

std::string_view to_string(OperState s) noexcept {
  switch (s) {
    case OperState::kUp:
      return "up";
    case OperState::kDown:
      return "down";
    case OperState::kAlarm:
      return "alarm";
  }
  return "down";
}

AdminState parse_admin_state(std::string_view s) {
  if (s == "enabled") return AdminState::kEnabled;
  if (s == "disabled") return AdminState::kDisabled;
  if (s == "maintenance") return AdminState::kMaintenance;
  throw InvalidArgument("unknown admin state '" + std::string(s) +
                        "' (enabled, disabled, maintenance)");
}

std::string_view to_string(NetworkEvent::Kind k) noexcept {
  using K = NetworkEvent::Kind;
  switch (k) {
    case K::kKmConnected:
      return "km_connected";
    case K::kKmDisconnected:
      return "km_disconnected";
    case K::kLinkUp:
      return "link_up";
    case K::kLinkDown:
      return "link_down";
    case K::kQberHigh:
      return "qber_high";
    case K::kQberNormal:
      return "qber_normal";
    case K::kPoolLow:
      return "pool_low";
    case K::kPoolOk:
      return "pool_ok";
    case K::kAdminChanged:
      return "admin_changed";
    case K::kTopologyReplaced:
      return "topology_replaced";
  }
  return "unknown";
}

namespace {

using Kind = NetworkEvent::Kind;

Link fresh_link(const LinkSpec& spec) {
  Link l;
  l.spec = spec;
  l.key_rate_bps = spec.key_rate_bps;
  l.qber = spec.qber;
  return l;
}

bool same_ends(const LinkSpec& x, const LinkSpec& y) {
  return (x.a == y.a && x.b == y.b) || (x.a == y.b && x.b == y.a);
}

const std::string& other_end(const Link& l, const std::string& km_id) {
  return l.spec.a == km_id ? l.spec.b : l.spec.a;
}

bool touches(const Link& l, const std::string& km_id) {
  return l.spec.a == km_id || l.spec.b == km_id;
}

// Sets the reported state of km_id's end of the link.
void set_end_up(Link& l, const std::string& km_id, bool up) {
  if (l.spec.a == km_id) l.reported_up_a = up;
  if (l.spec.b == km_id) l.reported_up_b = up;
  l.reported_up = l.reported_up_a && l.reported_up_b;
}

}  // namespace

// --- topology ------------------------------------------------------------------------------

std::vector<NetworkEvent> Network::apply_topology(const TopologyDoc& doc) {
  validate_topology(doc);
  std::vector<NetworkEvent> events;
  events.push_back({Kind::kTopologyReplaced, {}, {}, 0});

  std::map<std::string, Km> kms;
  std::vector<std::string> km_order;
  km_order.reserve(doc.kms.size());
  for (const KmSpec& spec : doc.kms) {
    Km km;
    if (auto node = kms_.extract(spec.km_id)) {
      km = std::move(node.mapped());
    } else {
      km.km_id = spec.km_id;
    }
    km.site = spec.site;
    km.lat = spec.lat;
    km.lon = spec.lon;
    km.trust_level = spec.trust_level;
    km.tags = spec.tags;
    km.gateway = spec.gateway;
    kms.emplace(spec.km_id, std::move(km));
    km_order.push_back(spec.km_id);
  }
  // Whatever is left in kms_ has vanished from the topology.
  for (const auto& [id, km] : kms_) {
    if (km.connected) events.push_back({Kind::kKmDisconnected, id, {}, 0});
  }
  kms_ = std::move(kms);
  km_order_ = std::move(km_order);

  std::map<std::string, Link> links;
  std::vector<std::string> link_order;
  link_order.reserve(doc.links.size());
  for (const LinkSpec& spec : doc.links) {
    Link link = fresh_link(spec);
    if (auto node = links_.extract(spec.link_id)) {
      Link& old = node.mapped();
      if (same_ends(old.spec, spec)) {
        const bool swapped = old.spec.a != spec.a;
        const bool never_reported = old.last_report == SysTime{};
        link = std::move(old);
        if (swapped) std::swap(link.reported_up_a, link.reported_up_b);
        if (never_reported) {
          link.key_rate_bps = spec.key_rate_bps;
          link.qber = spec.qber;
        }
        link.spec = spec;
      } else if (old.oper != OperState::kDown) {
        // Same ID, different ends: a different link as far as live state goes.
        events.push_back({Kind::kLinkDown, {}, spec.link_id, 0});
      }
    }
    links.emplace(spec.link_id, std::move(link));
    link_order.push_back(spec.link_id);
  }
  for (const auto& [id, link] : links_) {
    if (link.oper != OperState::kDown) events.push_back({Kind::kLinkDown, {}, id, 0});
  }
  links_ = std::move(links);
  link_order_ = std::move(link_order);

  links_by_km_.clear();
  for (auto& [id, link] : links_) {
    links_by_km_[link.spec.a].insert(id);
    links_by_km_[link.spec.b].insert(id);
  }
  // A surviving link may have lost a connected end (the KM itself survived but, e.g., was
  // re-declared); recompute everything once.
  for (auto& [id, link] : links_) recompute_oper(link, {}, events);

  name_ = doc.name;
  declared_apps_ = doc.applications;
  qkdn_id_ = doc.qkdn_id;
  inter_qkdn_links_ = doc.inter_qkdn_links;
  peers_ = doc.peers;
  apps_.clear();
  for (const AppSpec& app : declared_apps_) apps_[app.sae_id] = app.km_id;
  // Only the declaration maps an SAE to a KM: an attachment the new topology moved elsewhere ends.
  for (auto& [id, km] : kms_) {
    std::erase_if(km.attached, [&, &kid = id](const std::string& sae) {
      const auto it = apps_.find(sae);
      return it == apps_.end() || it->second != kid;
    });
  }
  ++version_;
  return events;
}

TopologyDoc Network::topology() const {
  TopologyDoc doc;
  doc.name = name_;
  doc.kms.reserve(km_order_.size());
  for (const std::string& id : km_order_) {
    const Km& km = kms_.at(id);
    doc.kms.push_back({id, km.site, km.lat, km.lon, km.trust_level, km.tags, km.gateway});
  }
  doc.links.reserve(link_order_.size());
  for (const std::string& id : link_order_) doc.links.push_back(links_.at(id).spec);
  doc.applications = declared_apps_;
  doc.qkdn_id = qkdn_id_;
  doc.inter_qkdn_links = inter_qkdn_links_;
  doc.peers = peers_;
  return doc;
}

// --- KMs ---------------------------------------------------------------------------------

Km& Network::km_or_throw(const std::string& km_id) {
  const auto it = kms_.find(km_id);
  if (it == kms_.end()) throw NotFound("KM '" + km_id + "' is not in the topology");
  return it->second;
}

std::vector<NetworkEvent> Network::register_km(const Registration& reg,
                                               std::vector<std::string>* unknown_links,
                                               std::vector<RefusedClaim>* refused) {
  Km& km = km_or_throw(reg.km_id);
  std::set<std::string> listed;
  for (const Registration::LinkRef& ref : reg.links) {
    const auto it = links_.find(ref.link_id);
    const bool ok =
        it != links_.end() && touches(it->second, reg.km_id) &&
        (ref.peer_kma_id.empty() || other_end(it->second, reg.km_id) == ref.peer_kma_id);
    if (ok) {
      listed.insert(ref.link_id);
    } else if (unknown_links != nullptr) {
      unknown_links->push_back(ref.link_id);
    }
  }

  const SysTime now = clock_->now();
  km.connected = true;
  km.kma_endpoint = reg.kma_endpoint;
  km.software = reg.software;
  km.connected_at = now;
  km.last_seen = now;
  km.attached.clear();
  for (const std::string& sae : reg.applications) {
    auto no = attach_app(km, reg.km_id, sae);
    if (no && refused != nullptr) refused->push_back(std::move(*no));
  }

  std::vector<NetworkEvent> events;
  events.push_back({Kind::kKmConnected, reg.km_id, {}, 0});
  if (const auto adj = links_by_km_.find(reg.km_id); adj != links_by_km_.end()) {
    for (const std::string& link_id : adj->second) {
      Link& link = links_.at(link_id);
      set_end_up(link, reg.km_id, listed.contains(link_id));
      recompute_oper(link, reg.km_id, events);
    }
  }
  ++version_;
  return events;
}

std::vector<NetworkEvent> Network::disconnect_km(const std::string& km_id) {
  Km& km = km_or_throw(km_id);
  std::vector<NetworkEvent> events;
  if (!km.connected) return events;
  km.connected = false;
  events.push_back({Kind::kKmDisconnected, km_id, {}, 0});
  if (const auto adj = links_by_km_.find(km_id); adj != links_by_km_.end()) {
    for (const std::string& link_id : adj->second)
      recompute_oper(links_.at(link_id), km_id, events);
  }
  ++version_;
  return events;
}

void Network::touch_km(const std::string& km_id) { km_or_throw(km_id).last_seen = clock_->now(); }

std::optional<RefusedClaim> Network::attach_app(Km& km, const std::string& km_id,
                                                const std::string& sae) {
  const auto it = apps_.find(sae);
  if (it == apps_.end() || it->second != km_id) {
    return RefusedClaim{sae, km_id, it == apps_.end() ? std::string{} : it->second};
  }
  if (std::find(km.attached.begin(), km.attached.end(), sae) == km.attached.end()) {
    km.attached.push_back(sae);
  }
  return std::nullopt;
}

std::vector<RefusedClaim> Network::update_applications(const std::string& km_id,
                                                       const std::vector<std::string>& attached,
                                                       const std::vector<std::string>& detached) {
  Km& km = km_or_throw(km_id);
  std::vector<RefusedClaim> refused;
  for (const std::string& sae : detached) std::erase(km.attached, sae);
  for (const std::string& sae : attached) {
    if (auto no = attach_app(km, km_id, sae)) refused.push_back(std::move(*no));
  }
  ++version_;
  return refused;
}

// --- links -------------------------------------------------------------------------------

Link* Network::link_of_km(const std::string& kma_id, const std::string& link_id,
                          std::string_view where) {
  const auto it = links_.find(link_id);
  if (it == links_.end()) return nullptr;
  if (!touches(it->second, kma_id)) {
    throw InvalidArgument(std::string(where) + ": link '" + link_id + "' does not touch KMA '" +
                          kma_id + "'");
  }
  return &it->second;
}

void Network::recompute_oper(Link& link, const std::string& km_id,
                             std::vector<NetworkEvent>& events) {
  link.reported_up = link.reported_up_a && link.reported_up_b;
  const bool connected =
      link.reported_up && kms_.at(link.spec.a).connected && kms_.at(link.spec.b).connected;
  OperState oper = OperState::kDown;
  if (connected) oper = link.qber_alarm ? OperState::kAlarm : OperState::kUp;
  if (oper == link.oper) return;
  const bool was_connected = link.oper != OperState::kDown;
  link.oper = oper;
  ++version_;
  if (was_connected != connected) {
    events.push_back({connected ? Kind::kLinkUp : Kind::kLinkDown, km_id, link.spec.link_id, 0});
  }
}

void Network::set_qber_alarm(Link& link, bool on, const std::string& km_id,
                             std::vector<NetworkEvent>& events) {
  if (link.qber_alarm == on) return;
  link.qber_alarm = on;
  ++version_;
  events.push_back({on ? Kind::kQberHigh : Kind::kQberNormal, km_id, link.spec.link_id, link.qber});
}

void Network::set_pool_low(Link& link, bool on, double value, const std::string& km_id,
                           std::vector<NetworkEvent>& events) {
  if (link.pool_low == on) return;
  link.pool_low = on;
  ++version_;
  events.push_back({on ? Kind::kPoolLow : Kind::kPoolOk, km_id, link.spec.link_id, value});
}

std::vector<NetworkEvent> Network::apply_status(const std::string& kma_id,
                                                const std::vector<LinkReport>& reports) {
  Km& km = km_or_throw(kma_id);
  // Validate everything first so that a bad entry leaves no partial update behind.
  std::vector<Link*> targets(reports.size(), nullptr);
  for (std::size_t i = 0; i < reports.size(); ++i) {
    const LinkReport& r = reports[i];
    const std::string where = "links[" + std::to_string(i) + "]";
    const auto bad = [](double v) { return !std::isfinite(v) || v < 0; };
    if (bad(r.key_rate_bps) || bad(r.consumption_rate_bps)) {
      throw InvalidArgument(where + ": rates must be finite numbers >= 0");
    }
    if (bad(r.qber) || r.qber > 1) throw InvalidArgument(where + ".qber: must be in [0, 1]");
    targets[i] = link_of_km(kma_id, r.link_id, where);
  }

  const SysTime now = clock_->now();
  km.last_seen = now;
  std::vector<NetworkEvent> events;
  std::vector<NetworkEvent> threshold_events;
  for (std::size_t i = 0; i < reports.size(); ++i) {
    Link* link = targets[i];
    if (link == nullptr) continue;
    const LinkReport& r = reports[i];
    const bool changed =
        link->stored_keys != r.stored_keys || link->stored_key_bits != r.stored_key_bits ||
        link->key_rate_bps != r.key_rate_bps ||
        link->consumption_rate_bps != r.consumption_rate_bps || link->qber != r.qber;
    if (changed) ++figures_version_;
    link->stored_keys = r.stored_keys;
    link->stored_key_bits = r.stored_key_bits;
    link->key_rate_bps = r.key_rate_bps;
    link->consumption_rate_bps = r.consumption_rate_bps;
    link->qber = r.qber;
    link->last_report = now;

    const double qber_limit = link->qber_threshold.value_or(thresholds_.qber);
    set_qber_alarm(
        *link, hysteresis_alarm(link->qber_alarm, r.qber, qber_limit, thresholds_.qber_hysteresis),
        kma_id, threshold_events);
    const std::uint64_t floor = link->pool_floor_bits.value_or(thresholds_.pool_floor_bits);
    set_pool_low(*link, r.stored_key_bits < floor, static_cast<double>(r.stored_key_bits), kma_id,
                 threshold_events);
    set_end_up(*link, kma_id, r.up);
    recompute_oper(*link, kma_id, events);
    events.insert(events.end(), threshold_events.begin(), threshold_events.end());
    threshold_events.clear();
  }
  return events;
}

std::vector<NetworkEvent> Network::apply_alarm(const std::string& kma_id, const std::string& alarm,
                                               const std::string& link_id,
                                               const std::string& severity, double value) {
  Km& km = km_or_throw(kma_id);
  const bool cleared = severity == "cleared";
  if (!cleared) parse_severity(severity);  // validates: critical, major, minor, warning
  const bool link_alarm =
      alarm == "qber_high" || alarm == "link_down" || alarm == "link_up" || alarm == "key_pool_low";
  if (!link_alarm && alarm != "relay_failure" && alarm != "peer_unreachable") {
    throw InvalidArgument("unknown alarm '" + alarm + "'");
  }
  km.last_seen = clock_->now();
  std::vector<NetworkEvent> events;
  if (!link_alarm) return events;
  if (link_id.empty()) throw InvalidArgument("alarm '" + alarm + "' needs a link_id");
  Link* link = link_of_km(kma_id, link_id, "link_id");
  if (link == nullptr) return events;

  std::vector<NetworkEvent> threshold_events;
  if (alarm == "qber_high") {
    if (!cleared && std::isfinite(value) && value > 0 && value <= 1 && link->qber != value) {
      link->qber = value;
      ++version_;
    }
    set_qber_alarm(*link, !cleared, kma_id, threshold_events);
  } else if (alarm == "key_pool_low") {
    set_pool_low(*link, !cleared, value, kma_id, threshold_events);
  } else {
    set_end_up(*link, kma_id, alarm == "link_up" || cleared);
  }
  recompute_oper(*link, kma_id, events);
  events.insert(events.end(), threshold_events.begin(), threshold_events.end());
  return events;
}

std::vector<NetworkEvent> Network::set_admin(const std::string& link_id, AdminState admin) {
  const auto it = links_.find(link_id);
  if (it == links_.end()) throw NotFound("link '" + link_id + "' not found");
  std::vector<NetworkEvent> events;
  if (it->second.admin == admin) return events;
  it->second.admin = admin;
  ++version_;
  events.push_back({Kind::kAdminChanged, {}, link_id, 0});
  return events;
}

// --- queries -----------------------------------------------------------------------------

const Km* Network::find_km(const std::string& km_id) const {
  const auto it = kms_.find(km_id);
  return it == kms_.end() ? nullptr : &it->second;
}

const Link* Network::find_link(const std::string& link_id) const {
  const auto it = links_.find(link_id);
  return it == links_.end() ? nullptr : &it->second;
}

Link* Network::find_link_mut(const std::string& link_id) {
  const auto it = links_.find(link_id);
  if (it == links_.end()) return nullptr;
  ++version_;
  return &it->second;
}

std::optional<std::string> Network::km_for_sae(const std::string& sae_id) const {
  const auto it = apps_.find(sae_id);
  if (it == apps_.end()) return std::nullopt;
  return it->second;
}

std::vector<const Link*> Network::links_between(const std::string& a, const std::string& b) const {
  std::vector<const Link*> out;
  const auto ia = links_by_km_.find(a);
  const auto ib = links_by_km_.find(b);
  if (ia == links_by_km_.end() || ib == links_by_km_.end() || a == b) return out;
  // Walk the smaller adjacency set; both are sorted by link_id.
  const auto& [from, adj] = ia->second.size() <= ib->second.size() ? *ia : *ib;
  for (const std::string& id : adj) {
    const Link& l = links_.at(id);
    if (other_end(l, from) == (from == a ? b : a)) out.push_back(&l);
  }
  return out;
}

}  // namespace qkdn::controller
