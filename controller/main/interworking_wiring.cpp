// Glue between the controller service and the Cxi node (interworking_wiring.hpp).
#include "interworking_wiring.hpp"

#include <atomic>
#include <map>
#include <optional>
#include <string>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json.hpp>

#include "qkdn/base/log.hpp"
#include "qkdn/controller/alarms.hpp"
#include "qkdn/controller/rerouting.hpp"
#include "qkdn/interworking/cxi_node.hpp"
#include "qkdn/service/metrics.hpp"

namespace qkdn::interworking_wiring {

namespace asio = boost::asio;
using interworking::PeerEvent;

namespace {
// What of a topology the Cxi node depends on (QKDN ID, gateways, links, applications, peers and
// their policy, inter-QKDN links): a change of it is handed to the node.
std::string interworking_signature(const controller::TopologyDoc& d) {
  std::string s = d.qkdn_id;
  for (const auto& k : d.kms) {
    if (k.gateway) s += "|g:" + k.km_id;
  }
  for (const auto& l : d.links) s += "|l:" + l.a + "-" + l.b;
  for (const auto& a : d.applications) s += "|a:" + a.sae_id + "@" + a.km_id;
  for (const auto& p : d.peers) {
    s += "|p:" + p.qkdn_id + "," + p.endpoint + "," + p.identity + "," +
         std::to_string(p.policy.key_rate_share);
    for (const auto& sae : p.policy.reachable_saes) s += "," + sae;
  }
  for (const auto& l : d.inter_qkdn_links) {
    s += "|x:" + l.link_id + "," + l.km_id + "," + l.peer_qkdn_id + "," + l.peer_km_id;
  }
  return s;
}

// Completion of the root coroutines: an exception is logged, never lost.
void log_error(const std::exception_ptr& ex) {
  if (!ex) return;
  try {
    std::rethrow_exception(ex);
  } catch (const std::exception& x) {
    qkdn::base::log(qkdn::base::LogLevel::kWarn, "cxi", std::string("interworking: ") + x.what());
  }
}
}  // namespace

class Wiring {
 public:
  Wiring(service::ControllerService& svc, std::shared_ptr<interworking::CxiNode> node,
         std::chrono::milliseconds heartbeat)
      : svc_(svc), node_(std::move(node)), heartbeat_(heartbeat) {
    // The families are the service's (declared on /metrics from start, docs/metrics.md).
  }

  service::ControllerService& svc_;
  std::shared_ptr<interworking::CxiNode> node_;
  std::chrono::milliseconds heartbeat_;
  interworking::CxiCounters last_{};
  std::map<std::string, bool> link_up_;  ///< what the node was last told (state loop only)
  std::atomic<bool> stopped{false};

  // Node strand: a peer event as alarms in the core (persisted and counted by the service).
  void on_event(const PeerEvent& e) {
    controller::ReroutingOutput out;
    const std::string resource = "qkdn:" + e.qkdn_id;
    switch (e.kind) {
      case PeerEvent::Kind::kPeerDown:
        out.raise_alarms.push_back({std::string(controller::alarm_type::kPeerUnreachable), resource,
                                    "", "", controller::Severity::kMajor, 0,
                                    "peer controller of QKDN '" + e.qkdn_id +
                                        "' unreachable over Cxi: " + e.detail +
                                        "; interworking routes through it are unusable"});
        break;
      case PeerEvent::Kind::kPeerUp:
        out.clear_alarms.push_back(
            {std::string(controller::alarm_type::kPeerUnreachable), resource});
        break;
      case PeerEvent::Kind::kFaultReceived:
        svc_.metrics().interworking_relay_fault();
        out.raise_alarms.push_back(
            {std::string(controller::alarm_type::kRelayFailure), resource + ":relay", "", "",
             controller::Severity::kMinor, 0,
             "interworking relay failure forwarded by QKDN '" + e.qkdn_id + "': " + e.detail});
        break;
      case PeerEvent::Kind::kRefused:
        break;
    }
    qkdn::base::log(qkdn::base::LogLevel::kInfo, "cxi",
                    "peer " + e.qkdn_id + ": " +
                        (e.kind == PeerEvent::Kind::kPeerUp     ? "up"
                         : e.kind == PeerEvent::Kind::kPeerDown ? "down (" + e.detail + ")"
                                                                : e.detail));
    if (out.raise_alarms.empty() && out.clear_alarms.empty()) return;
    auto& svc = svc_;
    asio::co_spawn(
        svc.io_context(),
        [&svc, out = std::move(out)]() -> asio::awaitable<void> {
          auto op = svc.on_core([&svc, &out](service::Core&) { svc.apply_rerouting_output(out); });
          co_await std::move(op);
        },
        log_error);
  }

  void bump(const char* name, std::uint64_t now, std::uint64_t& last) {
    if (now > last) svc_.metrics().cxi_event(name, now - last);
    last = now;
  }

  // Every quarter heartbeat: the local side of each inter-QKDN link follows its gateway KM's Ck
  // connection; counters and the peers-up gauge follow the node.
  asio::awaitable<void> state_loop(std::shared_ptr<Wiring> self, controller::TopologyDoc doc) {
    asio::steady_timer timer(svc_.io_context());
    std::uint64_t seen_version = 0;
    std::string signature = interworking_signature(doc);
    while (!stopped) {
      // An operator change of the topology (PUT /api/v1/topology, /api/v1/peers, ...) reaches
      // the node within a tick; the link states follow the gateway KMs' Ck connections.
      std::optional<controller::TopologyDoc> changed;
      auto op = svc_.on_core([&](service::Core& c) {
        if (c.network.structure_version() != seen_version) {
          seen_version = c.network.structure_version();
          auto now = c.network.topology();
          if (!now.qkdn_id.empty()) {
            auto sig = interworking_signature(now);
            if (sig != signature) {
              signature = std::move(sig);
              doc = now;
              changed = std::move(now);
            }
          }
        }
        std::map<std::string, bool> up;
        for (const auto& l : doc.inter_qkdn_links) {
          const auto* km = c.network.find_km(l.km_id);
          up[l.link_id] = km != nullptr && km->connected;
        }
        return up;
      });
      const auto up = co_await std::move(op);
      if (changed) {
        qkdn::base::log(qkdn::base::LogLevel::kInfo, "cxi",
                        "topology changed: peers, policy or inter-QKDN links handed to Cxi");
        node_->set_local(std::move(*changed));
        link_up_.clear();  // new inter-QKDN links get their state on this tick
      }
      for (const auto& [id, state] : up) {
        auto it = link_up_.find(id);
        if (it == link_up_.end() || it->second != state) {
          link_up_[id] = state;
          node_->set_local_link_state(id, state);
        }
      }
      const auto c = node_->counters();
      bump("session_opened", c.sessions_opened, last_.sessions_opened);
      bump("session_refused", c.sessions_refused, last_.sessions_refused);
      bump("message_in", c.messages_in, last_.messages_in);
      bump("message_out", c.messages_out, last_.messages_out);
      bump("bad_message", c.bad_messages, last_.bad_messages);
      bump("route_request_answered", c.route_requests_answered, last_.route_requests_answered);
      bump("fault_received", c.faults_received, last_.faults_received);
      bump("summary_sent", c.summaries_sent, last_.summaries_sent);
      bump("summary_received", c.summaries_received, last_.summaries_received);
      bump("summary_refused", c.summaries_refused, last_.summaries_refused);
      std::size_t n = 0;
      for (const auto& p : doc.peers) {
        if (auto s = node_->snapshot(p.qkdn_id); s && s->up) ++n;
      }
      svc_.metrics().cxi_peers_up(n);
      timer.expires_after(heartbeat_ / 4);
      auto w = timer.async_wait(asio::as_tuple(asio::use_awaitable));
      co_await std::move(w);
    }
    static_cast<void>(self);  // keeps the wiring alive while the loop runs
  }

  controller::TopologyDoc doc_;
};

std::shared_ptr<Wiring> make(service::ControllerService& svc, const controller::TopologyDoc& doc,
                             const Options& options, northbound::ApiOptions& api,
                             const std::shared_ptr<service::InterworkingRelays>& relays) {
  interworking::CxiNodeOptions o;
  o.controller_id = options.controller_id;
  o.listen_host = options.listen_host;
  o.listen_port = options.listen_port;
  o.tls = options.tls;
  o.heartbeat = options.heartbeat;
  o.summary_period = options.summary_period;
  auto holder = std::make_shared<std::weak_ptr<Wiring>>();
  o.on_event = [holder, relays](const PeerEvent& e) {
    if (relays && e.kind == PeerEvent::Kind::kPeerDown) service::on_peer_down(relays, e.qkdn_id);
    if (auto w = holder->lock()) w->on_event(e);
  };
  if (relays) {
    o.on_relay_setup = [relays](const std::string& peer, const interworking::RelaySetup& s,
                                std::function<void(interworking::RelaySetupAnswer)> reply) {
      service::on_peer_relay_setup(relays, peer, s, std::move(reply));
    };
    o.on_relay_end = [relays](const std::string& peer, const interworking::RelayEnd& e) {
      service::on_peer_relay_end(relays, peer, e);
    };
  }
  auto node = interworking::CxiNode::create(svc.io_context().get_executor(), doc, o);
  if (relays) {
    service::attach_cxi(*relays, node);
    api.interworking_relays = [relays] { return service::interworking_relay_records(*relays); };
  }
  auto w = std::make_shared<Wiring>(svc, node, options.heartbeat);
  w->doc_ = doc;
  *holder = w;
  api.peer_state = [node](const std::string& qkdn_id) -> std::optional<northbound::PeerLiveState> {
    auto s = node->snapshot(qkdn_id);
    if (!s) return std::nullopt;
    northbound::PeerLiveState out;
    out.state = s->up ? "up" : "down";
    out.last_heard_ms = s->last_heard_ms;
    out.reachable_saes = s->reachable_saes;
    out.sessions_opened = s->sessions_opened;
    for (const auto& [id, usable] : s->links) {
      out.inter_qkdn_links.emplace_back(id, usable ? "up" : "down");
    }
    if (s->summary) {
      // The codec's own JSON of the message, without its "type".
      auto body = boost::json::parse(interworking::encode(*s->summary)).as_object();
      body.erase("type");
      out.summary_json = boost::json::serialize(body);
      out.summary_received_ms = s->summary_received_ms;
    }
    return out;
  };
  return w;
}

std::uint16_t start(const std::shared_ptr<Wiring>& w) {
  w->node_->start();
  asio::co_spawn(w->svc_.io_context(), w->state_loop(w, w->doc_), log_error);
  return w->node_->port();
}

void stop(Wiring& w) {
  w.stopped = true;
  w.node_->stop();
}

}  // namespace qkdn::interworking_wiring
