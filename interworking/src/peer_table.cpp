// The peer table (peer_table.hpp, docs/cxi.md clause 4).
#include "qkdn/interworking/peer_table.hpp"

#include <algorithm>
#include <deque>

namespace qkdn::interworking {

PeerTable::PeerTable(controller::TopologyDoc local, std::chrono::milliseconds heartbeat)
    : local_(std::move(local)), heartbeat_(heartbeat) {}

std::vector<PeerEvent> PeerTable::set_local(controller::TopologyDoc local) {
  local_ = std::move(local);
  std::vector<PeerEvent> events;
  for (auto it = peers_.begin(); it != peers_.end();) {
    if (peer(it->first) == nullptr) {
      if (it->second.up) {
        events.push_back({PeerEvent::Kind::kPeerDown, it->first, "no longer a declared peer"});
      }
      it = peers_.erase(it);
    } else {
      ++it;
    }
  }
  return events;
}

const controller::PeerSpec* PeerTable::peer_by_identity(const std::string& identity) const {
  for (const auto& p : local_.peers) {
    if (p.identity == identity) return &p;
  }
  return nullptr;
}

const controller::PeerSpec* PeerTable::peer(const std::string& qkdn_id) const {
  for (const auto& p : local_.peers) {
    if (p.qkdn_id == qkdn_id) return &p;
  }
  return nullptr;
}

const controller::InterQkdnLinkSpec* PeerTable::inter_link(const std::string& link_id) const {
  for (const auto& l : local_.inter_qkdn_links) {
    if (l.link_id == link_id) return &l;
  }
  return nullptr;
}

std::optional<std::string> PeerTable::on_hello(const std::string& cert_identity, const Hello& hello,
                                               SteadyTime now, std::vector<PeerEvent>& events) {
  if (hello.version != kCxiVersion) {
    return "unsupported Cxi version " + std::to_string(hello.version);
  }
  const auto* spec = peer_by_identity(cert_identity);
  if (spec == nullptr) return "certificate identity '" + cert_identity + "' is no declared peer";
  if (spec->qkdn_id != hello.qkdn_id) {
    return "certificate identity '" + cert_identity + "' belongs to QKDN '" + spec->qkdn_id +
           "', not '" + hello.qkdn_id + "'";
  }
  if (hello.controller_id != cert_identity) {
    return "hello names controller '" + hello.controller_id + "', the certificate '" +
           cert_identity + "'";
  }
  auto& st = peers_[spec->qkdn_id];
  if (st.up) return "QKDN '" + spec->qkdn_id + "' already has a Cxi session";
  st = PeerState{};
  st.up = true;
  st.last_heard = now;
  st.heartbeat_ms = hello.heartbeat_ms;
  ++st.sessions_opened;
  events.push_back({PeerEvent::Kind::kPeerUp, spec->qkdn_id, {}});
  return std::nullopt;
}

void PeerTable::on_heard(const std::string& qkdn_id, SteadyTime now) {
  auto it = peers_.find(qkdn_id);
  if (it != peers_.end() && it->second.up) it->second.last_heard = now;
}

void PeerTable::on_session_end(const std::string& qkdn_id, const std::string& reason,
                               std::vector<PeerEvent>& events) {
  auto it = peers_.find(qkdn_id);
  if (it == peers_.end() || !it->second.up) return;
  const auto opened = it->second.sessions_opened;
  it->second = PeerState{};
  it->second.sessions_opened = opened;
  events.push_back({PeerEvent::Kind::kPeerDown, qkdn_id, reason});
}

std::vector<PeerEvent> PeerTable::check_liveness(SteadyTime now) {
  std::vector<PeerEvent> events;
  for (auto& [id, st] : peers_) {
    if (st.up && now - st.last_heard >= heartbeat_) {
      on_session_end(id, "no message for one heartbeat period", events);
    }
  }
  return events;
}

std::optional<std::int64_t> PeerTable::hops(const std::string& from_km,
                                            const std::string& to_km) const {
  if (from_km == to_km) return 0;
  std::map<std::string, std::int64_t> dist{{from_km, 0}};
  std::deque<std::string> queue{from_km};
  while (!queue.empty()) {
    const std::string km = queue.front();
    queue.pop_front();
    for (const auto& l : local_.links) {
      const std::string* next = l.a == km ? &l.b : (l.b == km ? &l.a : nullptr);
      if (next == nullptr || dist.contains(*next)) continue;
      dist[*next] = dist[km] + 1;
      if (*next == to_km) return dist[*next];
      queue.push_back(*next);
    }
  }
  return std::nullopt;
}

Reachability PeerTable::announce_for(const std::string& qkdn_id) const {
  Reachability out;
  const auto* spec = peer(qkdn_id);
  if (spec == nullptr) return out;
  for (const auto& sae : spec->policy.reachable_saes) {
    const auto app = std::find_if(local_.applications.begin(), local_.applications.end(),
                                  [&](const controller::AppSpec& a) { return a.sae_id == sae; });
    if (app == local_.applications.end()) continue;
    std::set<std::string> gateways;
    for (const auto& l : local_.inter_qkdn_links) {
      if (l.peer_qkdn_id == qkdn_id) gateways.insert(l.km_id);
    }
    for (const auto& gw : gateways) {
      if (auto h = hops(app->km_id, gw)) {
        out.entries.push_back({sae, gw, std::min(*h, kMaxCost)});
        if (out.entries.size() == kMaxReachabilityEntries) return out;
      }
    }
  }
  return out;
}

LinkStatus PeerTable::link_status_for(const std::string& qkdn_id) const {
  LinkStatus out;
  for (const auto& l : local_.inter_qkdn_links) {
    if (l.peer_qkdn_id != qkdn_id) continue;
    const auto it = local_link_up_.find(l.link_id);
    out.links.push_back({l.link_id, it != local_link_up_.end() && it->second});
  }
  return out;
}

void PeerTable::set_local_link_state(const std::string& link_id, bool up) {
  local_link_up_[link_id] = up;
}

void PeerTable::accept_reachability(const std::string& qkdn_id, const Reachability& m) {
  auto it = peers_.find(qkdn_id);
  if (it == peers_.end() || !it->second.up) throw BadCxiMessage("reachability before hello");
  std::set<std::string> far_ends;
  for (const auto& l : local_.inter_qkdn_links) {
    if (l.peer_qkdn_id == qkdn_id) far_ends.insert(l.peer_km_id);
  }
  for (std::size_t i = 0; i < m.entries.size(); ++i) {
    if (!far_ends.contains(m.entries[i].gateway_km)) {
      throw BadCxiMessage("entries[" + std::to_string(i) + "].gateway_km: '" +
                          m.entries[i].gateway_km + "' ends no inter-QKDN link with this QKDN");
    }
  }
  it->second.reachable = m.entries;
}

void PeerTable::accept_link_status(const std::string& qkdn_id, const LinkStatus& m) {
  auto it = peers_.find(qkdn_id);
  if (it == peers_.end() || !it->second.up) throw BadCxiMessage("link_status before hello");
  std::map<std::string, bool> view;
  for (std::size_t i = 0; i < m.links.size(); ++i) {
    const auto* l = inter_link(m.links[i].link_id);
    if (l == nullptr || l->peer_qkdn_id != qkdn_id) {
      throw BadCxiMessage("links[" + std::to_string(i) + "].link_id: '" + m.links[i].link_id +
                          "' is no inter-QKDN link with this QKDN");
    }
    view[m.links[i].link_id] = m.links[i].up;
  }
  it->second.peer_link_up = std::move(view);
}

bool PeerTable::link_usable(const controller::InterQkdnLinkSpec& link) const {
  const auto p = peers_.find(link.peer_qkdn_id);
  if (p == peers_.end() || !p->second.up) return false;
  const auto mine = local_link_up_.find(link.link_id);
  const auto theirs = p->second.peer_link_up.find(link.link_id);
  return mine != local_link_up_.end() && mine->second && theirs != p->second.peer_link_up.end() &&
         theirs->second;
}

RouteAnswer PeerTable::answer(const std::string& qkdn_id, const RouteRequest& m) const {
  RouteAnswer a;
  a.request_id = m.request_id;
  const auto* spec = peer(qkdn_id);
  if (spec == nullptr) {
    a.reason = "not a declared peer";
    return a;
  }
  const auto& allowed = spec->policy.reachable_saes;
  if (std::find(allowed.begin(), allowed.end(), m.dst_sae) == allowed.end()) {
    a.reason = "policy: SAE '" + m.dst_sae + "' is not reachable for QKDN '" + qkdn_id + "'";
    return a;
  }
  const auto* l = inter_link(m.link_id);
  if (l == nullptr || l->peer_qkdn_id != qkdn_id) {
    a.reason = "link '" + m.link_id + "' is no inter-QKDN link with QKDN '" + qkdn_id + "'";
    return a;
  }
  if (!link_usable(*l)) {
    a.reason = "link '" + m.link_id + "' is not up on both sides";
    return a;
  }
  const auto app =
      std::find_if(local_.applications.begin(), local_.applications.end(),
                   [&](const controller::AppSpec& x) { return x.sae_id == m.dst_sae; });
  const auto h = app == local_.applications.end() ? std::nullopt : hops(l->km_id, app->km_id);
  if (!h) {
    a.reason = "SAE '" + m.dst_sae + "' cannot be reached from gateway '" + l->km_id + "'";
    return a;
  }
  a.accepted = true;
  a.link_id = l->link_id;
  a.ingress_km = l->km_id;
  a.cost = std::min(*h, kMaxCost);
  return a;
}

std::optional<InterworkingRoute> PeerTable::route_to(
    const std::string& dst_sae, const std::set<std::string>& avoid_links) const {
  std::optional<InterworkingRoute> best;
  for (const auto& l : local_.inter_qkdn_links) {
    if (avoid_links.contains(l.link_id) || !link_usable(l)) continue;
    const auto& st = peers_.at(l.peer_qkdn_id);
    for (const auto& e : st.reachable) {
      if (e.sae_id != dst_sae || e.gateway_km != l.peer_km_id) continue;
      const std::int64_t cost = 1 + e.cost;  // the inter-QKDN hop, then the peer's side
      if (!best || cost < best->cost || (cost == best->cost && l.link_id < best->link_id)) {
        best = InterworkingRoute{l.peer_qkdn_id, l.link_id, l.km_id, l.peer_km_id, cost};
      }
    }
  }
  return best;
}

const PeerState* PeerTable::state(const std::string& qkdn_id) const {
  const auto it = peers_.find(qkdn_id);
  return it == peers_.end() ? nullptr : &it->second;
}

}  // namespace qkdn::interworking
