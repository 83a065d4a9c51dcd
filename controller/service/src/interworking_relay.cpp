// Kxi-1 key relay through gateway KMs: see qkdn/service/interworking_relay.hpp and docs/cxi.md 5.6.
#include "qkdn/service/interworking_relay.hpp"

#include <algorithm>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <variant>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/steady_timer.hpp>

#include "qkdn/controller/clock.hpp"
#include "qkdn/interworking/cxi_node.hpp"
#include "qkdn/net/run_on.hpp"
#include "qkdn/service/metrics.hpp"

// GCC 12 reports -Wmismatched-new-delete at the end of coroutines inlined into co_spawn: a false
// positive about Asio's awaitable frame allocator (as in key_supply.cpp).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

namespace qkdn::service {

namespace iw = qkdn::interworking;

namespace {

using Clk = std::chrono::steady_clock;

/// How long the destination side keeps its keys for a relay without relay_end (the source's
/// 0x4104 waits at most kRelayWait after the setup answer).
constexpr auto kEndDeadline = std::chrono::seconds(30);
constexpr auto kRelayWait = std::chrono::seconds(15);
constexpr std::size_t kMaxRecords = 1024;
constexpr std::size_t kMaxDestinationRelays = 256;

std::int64_t unix_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

/// One hop this controller reserved on (its near end is one of our KMs).
struct Hop {
  std::string km;
  std::string next;
  std::string link;
  std::vector<std::string> key_ids;
};

struct DestinationRelay {
  std::string peer;
  std::vector<Hop> hops;
  bool cancelled = false;  ///< the peer went down while we were still reserving
  std::shared_ptr<net::steady_timer> deadline;
};

/// A KM's answer: the decoded message, or why there is none.
using Answer = std::variant<ck::Message, std::string>;

net::awaitable<Answer> ask(std::shared_ptr<southbound::CkChannel> ch, std::string km, ck::Message m,
                           std::chrono::milliseconds timeout) {
  if (!ch) co_return "KM " + km + " is not connected";
  std::optional<ck::Frame> frame;
  std::string failure;
  try {
    auto op = ch->request(std::move(m), timeout);
    frame = co_await std::move(op);
  } catch (const std::exception&) {
    failure = "KM " + km + ": " + std::string(ch->is_open() ? "timeout" : "disconnected");
  }
  if (!frame) co_return failure;
  auto decoded = ck::decode_payload(frame->command, frame->payload);
  if (auto* bad = std::get_if<ck::DecodeError>(&decoded)) {
    co_return "KM " + km + ": malformed answer: " + bad->message;
  }
  auto msg = std::get<ck::Message>(std::move(decoded));
  if (auto* e = std::get_if<ck::ErrorMessage>(&msg)) {
    co_return "KM " + km + ": " + e->error + ": " + e->message.value_or("");
  }
  co_return msg;
}

}  // namespace

class InterworkingRelays : public std::enable_shared_from_this<InterworkingRelays> {
 public:
  explicit InterworkingRelays(ControllerService& s) : svc(s) {}

  ControllerService& svc;
  std::shared_ptr<iw::CxiNode> node;
  std::map<std::string, DestinationRelay> destination;  ///< by relay ID (core strand)

  mutable std::mutex mu;
  std::deque<InterworkingRelayRecord> records;  ///< guarded by mu

  void record(const InterworkingRelayRecord& r) {
    std::lock_guard lock(mu);
    for (auto it = records.rbegin(); it != records.rend(); ++it) {
      if (it->relay_id == r.relay_id && it->role == r.role) {
        *it = r;
        return;
      }
    }
    records.push_back(r);
    while (records.size() > kMaxRecords) records.pop_front();
  }

  void finish(InterworkingRelayRecord& r, bool relayed, const std::string& reason) {
    r.state = relayed ? "relayed" : "failed";
    r.reason = reason.substr(0, 256);
    r.updated_ms = unix_ms();
    record(r);
    svc.metrics().interworking_relay(r.role, r.state);
    if (!relayed) {
      svc.log("interworking: relay " + r.relay_id + " (" + r.role + ", QKDN " + r.peer_qkdn_id +
              ") failed: " + r.reason);
    }
  }

  // ---- on our KMs (core strand) ----------------------------------------------------------

  /// Reserves then allocates `n` keys on every hop; on failure releases what it holds and
  /// returns why.
  net::awaitable<std::string> reserve_and_allocate(const std::string& relay_id,
                                                   const std::string& src_km,
                                                   const std::string& dst_km,
                                                   const std::string& dst_sae, std::int64_t n,
                                                   std::vector<Hop>& hops) {
    const auto timeout = std::chrono::milliseconds(5000);
    std::string why;
    for (auto& h : hops) {
      ck::KeyReservationRequest m;
      m.source_kma_id = src_km;
      m.destination_kma_id = dst_km;
      m.application_destination_id = dst_sae;
      m.number_of_keys = n;
      m.next_kma_id = h.next;
      m.link_id = h.link;
      m.key_relay_request_id = relay_id;
      m.controller_epoch = svc.controller_epoch();
      auto op = ask(svc.channel_of(h.km), h.km, ck::Message{std::move(m)}, timeout);
      auto a = co_await std::move(op);
      if (auto* f = std::get_if<std::string>(&a)) {
        why = *f;
        break;
      }
      const auto* r = std::get_if<ck::KeyReservationResponse>(&std::get<ck::Message>(a));
      if (r == nullptr || r->response != 0 || r->key_ids.size() != static_cast<std::size_t>(n)) {
        why = "insufficient_keys: reservation refused at " + h.km + " on " + h.link;
        break;
      }
      h.key_ids = r->key_ids;
    }
    if (why.empty()) {
      for (auto& h : hops) {
        ck::KeyAllocationRequest m;
        m.source_kma_id = src_km;
        m.destination_kma_id = dst_km;
        m.application_destination_id = dst_sae;
        m.next_kma_id = h.next;
        m.link_id = h.link;
        m.key_relay_request_id = relay_id;
        m.key_ids = h.key_ids;
        m.controller_epoch = svc.controller_epoch();
        auto op = ask(svc.channel_of(h.km), h.km, ck::Message{std::move(m)}, timeout);
        auto a = co_await std::move(op);
        if (auto* f = std::get_if<std::string>(&a)) {
          why = *f;
          break;
        }
        const auto* r = std::get_if<ck::KeyAllocationResponse>(&std::get<ck::Message>(a));
        if (r == nullptr || r->response != 0) {
          why = "insufficient_keys: allocation refused at " + h.km + " on " + h.link;
          break;
        }
      }
    }
    if (!why.empty()) {
      auto op = release(relay_id, hops);
      co_await std::move(op);
    }
    co_return why;
  }

  /// Returns the keys of every hop to its KM (keys already consumed by the relay are unknown
  /// to the KM by then: harmless).
  net::awaitable<void> release(const std::string& relay_id, std::vector<Hop>& hops) {
    for (auto& h : hops) {
      if (h.key_ids.empty()) continue;
      ck::KeyRelease m;
      m.key_relay_request_id = relay_id;
      m.next_kma_id = h.next;
      m.link_id = h.link;
      m.key_ids = std::move(h.key_ids);
      h.key_ids.clear();
      m.controller_epoch = svc.controller_epoch();
      auto op = ask(svc.channel_of(h.km), h.km, ck::Message{std::move(m)},
                    std::chrono::milliseconds(5000));
      auto a = co_await std::move(op);
      if (auto* f = std::get_if<std::string>(&a)) {
        svc.log("interworking: release for relay " + relay_id + " at " + h.km +
                " not confirmed: " + *f);
      }
    }
  }

  // ---- destination side: the peer's relay_setup -----------------------------------------

  net::awaitable<void> setup(std::string peer, iw::RelaySetup s,
                             std::function<void(iw::RelaySetupAnswer)> reply) {
    iw::RelaySetupAnswer no;
    no.relay_id = s.relay_id;
    InterworkingRelayRecord rec;
    rec.relay_id = s.relay_id;
    rec.role = "destination";
    rec.peer_qkdn_id = peer;
    rec.src_sae = s.src_sae;
    rec.dst_sae = s.dst_sae;
    rec.link_id = s.link_id;
    rec.number_of_keys = s.number_of_keys;
    rec.state = "setting_up";
    rec.created_ms = rec.updated_ms = unix_ms();
    if (destination.contains(s.relay_id)) {
      no.reason = "duplicate relay_id";
      reply(no);
      co_return;
    }
    if (destination.size() >= kMaxDestinationRelays) {
      no.reason = "busy: " + std::to_string(destination.size()) + " relays in progress";
      reply(no);
      co_return;
    }
    const auto& topo = svc.network();
    std::string ingress;
    for (const auto& l : topo.inter_qkdn_links()) {
      if (l.link_id == s.link_id && l.peer_qkdn_id == peer) ingress = l.km_id;
    }
    const auto dst_km = topo.km_for_sae(s.dst_sae);
    if (ingress.empty() || !dst_km) {  // PeerTable::answer checked both: the topology changed
      no.reason = "no route: link or SAE no longer here";
      reply(no);
      co_return;
    }
    rec.src_km = ingress;
    rec.dst_km = *dst_km;
    std::vector<Hop> hops;
    if (*dst_km != ingress) {
      auto route = svc.route_inside(ingress, *dst_km);
      if (!route) {
        no.reason = "no route from " + ingress + " to the KM of " + s.dst_sae;
        finish(rec, false, no.reason);
        reply(no);
        co_return;
      }
      for (std::size_t i = 0; i + 1 < route->kms.size(); ++i) {
        hops.push_back({route->kms[i], route->kms[i + 1], route->links[i], {}});
      }
    }
    record(rec);
    auto& d = destination[s.relay_id];
    d.peer = peer;
    auto op = reserve_and_allocate(s.relay_id, ingress, *dst_km, s.dst_sae, s.number_of_keys, hops);
    const std::string why = co_await std::move(op);
    auto it = destination.find(s.relay_id);
    const bool cancelled = it == destination.end() || it->second.cancelled;
    if (!why.empty() || cancelled) {
      if (why.empty()) {
        auto rel = release(s.relay_id, hops);
        co_await std::move(rel);
      }
      if (it != destination.end()) destination.erase(it);
      no.reason = why.empty() ? "peer went down" : why;
      finish(rec, false, no.reason);
      reply(no);
      co_return;
    }
    iw::RelaySetupAnswer yes;
    yes.relay_id = s.relay_id;
    yes.accepted = true;
    yes.dst_km = *dst_km;
    for (const auto& h : hops) yes.hops.push_back({h.km, h.next, h.link, h.key_ids});
    it->second.hops = std::move(hops);
    // Our keys wait for the peer's relay_end at most kEndDeadline.
    it->second.deadline = std::make_shared<net::steady_timer>(svc.core_executor(), kEndDeadline);
    rec.state = "relaying";
    rec.updated_ms = unix_ms();
    record(rec);
    it->second.deadline->async_wait(
        [self = shared_from_this(), id = s.relay_id](const boost::system::error_code& ec) {
          if (ec) return;
          self->end_destination(id, false, "no relay_end within 30 s", true);
        });
    reply(std::move(yes));
  }

  // Core strand: the destination side of a relay ends; failed releases our keys.
  void end_destination(const std::string& id, bool relayed, const std::string& reason,
                       bool expired = false) {
    auto it = destination.find(id);
    if (it == destination.end()) return;
    if (it->second.hops.empty() && it->second.deadline == nullptr) {
      it->second.cancelled = true;  // still reserving: setup() releases and ends it
      return;
    }
    if (it->second.deadline && !expired) it->second.deadline->cancel();
    auto hops = std::move(it->second.hops);
    destination.erase(it);
    InterworkingRelayRecord rec;
    {
      std::lock_guard lock(mu);
      for (auto r = records.rbegin(); r != records.rend(); ++r) {
        if (r->relay_id == id && r->role == "destination") {
          rec = *r;
          break;
        }
      }
    }
    if (rec.relay_id.empty()) rec.relay_id = id;
    if (rec.role.empty()) rec.role = "destination";
    finish(rec, relayed, reason);
    if (!relayed && !hops.empty()) {
      net::co_spawn(
          svc.core_executor(),
          [](std::shared_ptr<InterworkingRelays> self, std::string rid,
             std::vector<Hop> h) -> net::awaitable<void> {
            auto op = self->release(rid, h);
            co_await std::move(op);
          }(shared_from_this(), id, std::move(hops)),
          [](const std::exception_ptr&) {});
    }
  }

  // ---- source side: a session and a relay of our KM for a foreign SAE --------------------

  /// The route to a foreign SAE, and whether some declared peer is down (the SAE may be behind
  /// it: 503 rather than 400).
  net::awaitable<std::pair<std::optional<iw::InterworkingRoute>, std::string>> route_to(
      const std::string& dst_sae) {
    auto op = node->with_table([dst_sae](iw::PeerTable& t) {
      std::string down;  // the declared peers that are down, "'A', 'B'"
      for (const auto& p : t.local().peers) {
        const auto* st = t.state(p.qkdn_id);
        if (st == nullptr || !st->up) down += (down.empty() ? "'" : ", '") + p.qkdn_id + "'";
      }
      return std::make_pair(t.route_to(dst_sae), down);
    });
    co_return co_await std::move(op);
  }

  net::awaitable<void> session(CommandContext ctx, ck::SessionCreationRequest req) {
    ck::SessionCreationResponse r;
    r.session_id = make_uuid_v4(svc.core_refs().random);
    r.controller_epoch = svc.controller_epoch();
    r.destination_km_id = ctx.km_id;
    auto route_op = route_to(req.application_destination_id);
    auto [route, down] = co_await std::move(route_op);
    if (!route) {
      r.response = !down.empty()
                       ? "NG: no_route: SAE '" + req.application_destination_id +
                             "' is in no up peer QKDN (down: QKDN " + down + ")"
                       : "NG: unknown_application: SAE '" + req.application_destination_id +
                             "' is neither in this QKDN nor offered by a peer QKDN";
      ctx.channel->send(std::move(r), ctx.message_id);
      co_return;
    }
    iw::RouteRequest q;
    q.src_sae = req.application_source_id;
    q.dst_sae = req.application_destination_id;
    q.link_id = route->link_id;
    q.number_of_keys = std::clamp<std::int64_t>(req.number_of_keys.value_or(1), 1, 1024);
    auto ask_op = node->request_route(route->qkdn_id, q);
    auto answer = co_await std::move(ask_op);
    if (!answer) {
      r.response = "NG: no_route: peer QKDN '" + route->qkdn_id + "' did not answer (down?)";
    } else if (!answer->accepted) {
      r.response = "NG: no_route: peer QKDN '" + route->qkdn_id + "' refused: " + answer->reason;
    } else {
      r.response = "OK";
      r.destination_km_id = route->peer_gateway;
    }
    ctx.channel->send(std::move(r), ctx.message_id);
  }

  net::awaitable<void> relay(CommandContext ctx, ck::KeyRelayRequestNotification n) {
    InterworkingRelayRecord rec;
    rec.role = "source";
    rec.dst_sae = n.application_destination_id.value_or("");
    rec.src_km = ctx.km_id;
    rec.number_of_keys = n.number_of_keys.value_or(1);
    rec.created_ms = rec.updated_ms = unix_ms();
    rec.state = "setting_up";
    const auto refuse = [&](std::string_view code, const std::string& why) {
      ctx.channel->send(ck::ErrorMessage{std::string(code), why, ctx.message_id, false},
                        ctx.message_id);
    };
    const auto src_sae = ck::find_extension_string(n.extension, "application_source_id");
    const auto scheme = ck::find_extension_string(n.extension, "relay_scheme").value_or("otp");
    const std::int64_t keys = rec.number_of_keys;
    if (!src_sae || svc.network().km_for_sae(*src_sae) != ctx.km_id) {
      refuse(ck::errc::kBadRequest,
             "an interworking relay needs application_source_id naming an SAE of this KM");
      co_return;
    }
    if (scheme != "otp" || n.key_size.value_or(256) != 256 || keys < 1 ||
        keys > iw::kMaxRouteKeys) {
      refuse(ck::errc::kBadRequest,
             "an interworking relay carries 1..1024 keys of 256 bits, one-time pad only");
      co_return;
    }
    rec.src_sae = *src_sae;
    auto route_op = route_to(rec.dst_sae);
    auto [route, down] = co_await std::move(route_op);
    if (!route) {
      refuse(down.empty() ? ck::errc::kUnknownApplication : ck::errc::kNoRoute,
             "SAE '" + rec.dst_sae + "' is reachable through no up peer QKDN" +
                 (down.empty() ? std::string() : " (down: QKDN " + down + ")"));
      co_return;
    }
    rec.peer_qkdn_id = route->qkdn_id;
    rec.link_id = route->link_id;
    rec.relay_id = make_uuid_v4(svc.core_refs().random);
    std::vector<Hop> own;
    if (ctx.km_id != route->local_gateway) {
      auto inside = svc.route_inside(ctx.km_id, route->local_gateway);
      if (!inside) {
        refuse(ck::errc::kNoRoute,
               "no route from " + ctx.km_id + " to gateway " + route->local_gateway);
        co_return;
      }
      for (std::size_t i = 0; i + 1 < inside->kms.size(); ++i) {
        own.push_back({inside->kms[i], inside->kms[i + 1], inside->links[i], {}});
      }
    }
    own.push_back({route->local_gateway, route->peer_gateway, route->link_id, {}});
    record(rec);

    // 1. The peer decides on its side (and reserves there, by its own decision).
    iw::RelaySetup s{rec.relay_id, rec.src_sae, rec.dst_sae, rec.link_id, keys};
    auto setup_op = node->request_relay_setup(route->qkdn_id, s);
    auto answer = co_await std::move(setup_op);
    const auto fail_early = [&](std::string_view code, const std::string& why, bool tell_peer) {
      if (tell_peer) node->send_relay_end(rec.peer_qkdn_id, {rec.relay_id, false, why});
      finish(rec, false, why);
      refuse(code, why);
    };
    if (!answer) {
      fail_early(ck::errc::kNoRoute,
                 "peer QKDN '" + rec.peer_qkdn_id + "' did not answer the relay setup (down?)",
                 false);
      co_return;
    }
    if (!answer->accepted) {
      fail_early(ck::errc::kNoRoute,
                 "peer QKDN '" + rec.peer_qkdn_id + "' refused the relay: " + answer->reason,
                 false);
      co_return;
    }
    // 2. Validate what the peer sent: a chain from its ingress gateway to dst_km, n keys per
    // hop, distinct key IDs, none of its KMs one of ours.
    std::string bad;
    const auto& topo = svc.network();
    std::string at = route->peer_gateway;
    std::set<std::string> ids;
    for (const auto& h : answer->hops) {
      if (h.kma_id != at) bad = "hop from " + h.kma_id + " does not continue at " + at;
      if (h.key_ids.size() != static_cast<std::size_t>(keys)) bad = "wrong key count";
      for (const auto& k : h.key_ids) {
        if (!ids.insert(k).second) bad = "repeated key ID";
      }
      if (topo.find_km(h.kma_id) != nullptr || topo.find_km(h.next_kma_id) != nullptr) {
        bad = "names a KM of this QKDN";
      }
      at = h.next_kma_id;
      if (!bad.empty()) break;
    }
    if (bad.empty() && at != answer->dst_km) bad = "route does not end at dst_km";
    if (bad.empty() && topo.find_km(answer->dst_km) != nullptr) bad = "names a KM of this QKDN";
    if (!bad.empty()) {
      fail_early(ck::errc::kNoRoute,
                 "peer QKDN '" + rec.peer_qkdn_id + "' sent a bad relay setup: " + bad, true);
      co_return;
    }
    rec.dst_km = answer->dst_km;
    // 3. Our side, on our KMs only.
    auto res_op = reserve_and_allocate(rec.relay_id, ctx.km_id, rec.dst_km, rec.dst_sae, keys, own);
    const std::string why = co_await std::move(res_op);
    if (!why.empty()) {
      const bool insufficient = why.rfind("insufficient_keys", 0) == 0;
      fail_early(insufficient ? ck::errc::kInsufficientKeys : ck::errc::kNoRoute, why, true);
      co_return;
    }
    // 4. One 0x4104 to the source KM for the whole route.
    ck::KeyRelayRequest m;
    m.source_kma_id = ctx.km_id;
    m.destination_kma_id = rec.dst_km;
    for (std::size_t i = 1; i < own.size(); ++i) m.transit_kma_ids.push_back(own[i].km);
    for (const auto& h : answer->hops) m.transit_kma_ids.push_back(h.kma_id);
    m.key_relay_request_id = rec.relay_id;
    m.notification_message_id = ctx.message_id;
    for (const auto& h : own) m.hop_keys.push_back({h.km, h.next, h.link, h.key_ids});
    for (const auto& h : answer->hops) {
      m.hop_keys.push_back({h.kma_id, h.next_kma_id, h.link_id, h.key_ids});
    }
    m.controller_epoch = svc.controller_epoch();
    rec.state = "relaying";
    rec.updated_ms = unix_ms();
    record(rec);
    auto relay_op = ask(ctx.channel, ctx.km_id, ck::Message{std::move(m)},
                        std::chrono::duration_cast<std::chrono::milliseconds>(kRelayWait));
    auto result = co_await std::move(relay_op);
    bool ok = false;
    std::string reason;
    if (auto* f = std::get_if<std::string>(&result)) {
      reason = *f;
    } else if (const auto* r = std::get_if<ck::KeyRelayResponse>(&std::get<ck::Message>(result))) {
      ok = r->response == "OK";
      if (!ok) reason = r->response;
    } else {
      reason = "unexpected answer to the key relay request";
    }
    node->send_relay_end(rec.peer_qkdn_id, {rec.relay_id, ok, reason});
    if (!ok) {
      auto rel = release(rec.relay_id, own);
      co_await std::move(rel);
      node->forward_fault(rec.peer_qkdn_id, {rec.relay_id, rec.link_id, reason.substr(0, 256)});
    }
    finish(rec, ok, reason);
  }
};

namespace {

class InterworkingRelayHandler final : public CommandHandler {
 public:
  InterworkingRelayHandler(std::shared_ptr<CommandHandler> next,
                           std::shared_ptr<InterworkingRelays> relays)
      : next_(std::move(next)), relays_(std::move(relays)) {}

  [[nodiscard]] bool handles(std::uint16_t command) const override {
    return command == static_cast<std::uint16_t>(ck::Command::kSessionCreationRequest) ||
           command == static_cast<std::uint16_t>(ck::Command::kKeyRelayRequestNotification) ||
           (next_ && next_->handles(command));
  }

  net::awaitable<void> handle(ControllerService& service, CommandContext ctx,
                              ck::Message message) override {
    std::optional<std::string> dst_sae;
    if (const auto* s = std::get_if<ck::SessionCreationRequest>(&message)) {
      dst_sae = s->application_destination_id;
    } else if (const auto* n = std::get_if<ck::KeyRelayRequestNotification>(&message)) {
      dst_sae = n->application_destination_id;
    }
    bool foreign = false;
    if (dst_sae && relays_->node) {
      auto check = [](ControllerService* svc, std::string sae) -> net::awaitable<bool> {
        co_return !svc->network().km_for_sae(sae).has_value();
      }(&service, *dst_sae);
      auto hop = qkdn::net::run_on(service.core_executor(), std::move(check));
      foreign = co_await std::move(hop);
    }
    if (!foreign) {
      if (next_ && next_->handles(static_cast<std::uint16_t>(ck::command_of(message)))) {
        auto op = next_->handle(service, std::move(ctx), std::move(message));
        co_await std::move(op);
      }
      co_return;
    }
    // Spawned on the core strand: the exchange waits for the peer and for our KMs (never on
    // this session's strand).
    auto r = relays_;
    if (auto* s = std::get_if<ck::SessionCreationRequest>(&message)) {
      net::co_spawn(service.core_executor(), r->session(std::move(ctx), std::move(*s)),
                    [r](const std::exception_ptr& e) { log_failure(*r, e); });
    } else if (auto* n = std::get_if<ck::KeyRelayRequestNotification>(&message)) {
      net::co_spawn(service.core_executor(), r->relay(std::move(ctx), std::move(*n)),
                    [r](const std::exception_ptr& e) { log_failure(*r, e); });
    }
  }

 private:
  static void log_failure(InterworkingRelays& r, const std::exception_ptr& e) {
    if (!e) return;
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& x) {
      r.svc.log(std::string("interworking: relay exchange ended: ") + x.what());
    }
  }

  std::shared_ptr<CommandHandler> next_;
  std::shared_ptr<InterworkingRelays> relays_;
};

}  // namespace

std::shared_ptr<InterworkingRelays> make_interworking_relays(ControllerService& svc) {
  return std::make_shared<InterworkingRelays>(svc);
}

void attach_cxi(InterworkingRelays& relays, std::shared_ptr<iw::CxiNode> node) {
  relays.node = std::move(node);
}

void on_peer_relay_setup(const std::shared_ptr<InterworkingRelays>& relays,
                         const std::string& qkdn_id, const iw::RelaySetup& setup,
                         std::function<void(iw::RelaySetupAnswer)> reply) {
  net::co_spawn(relays->svc.core_executor(), relays->setup(qkdn_id, setup, std::move(reply)),
                [r = relays](const std::exception_ptr& e) {
                  if (e) r->svc.log("interworking: relay setup failed");
                });
}

void on_peer_relay_end(const std::shared_ptr<InterworkingRelays>& relays,
                       const std::string& qkdn_id, const iw::RelayEnd& end) {
  net::post(relays->svc.core_executor(), [r = relays, qkdn_id, end] {
    auto it = r->destination.find(end.relay_id);
    if (it == r->destination.end() || it->second.peer != qkdn_id) return;  // not theirs
    r->end_destination(end.relay_id, end.relayed, end.relayed ? "" : "source: " + end.reason);
  });
}

void on_peer_down(const std::shared_ptr<InterworkingRelays>& relays, const std::string& qkdn_id) {
  net::post(relays->svc.core_executor(), [r = relays, qkdn_id] {
    std::vector<std::string> ids;
    for (const auto& [id, d] : r->destination) {
      if (d.peer == qkdn_id) ids.push_back(id);
    }
    for (const auto& id : ids) {
      r->end_destination(id, false, "peer QKDN '" + qkdn_id + "' went down");
    }
  });
}

std::vector<InterworkingRelayRecord> interworking_relay_records(const InterworkingRelays& relays) {
  std::lock_guard lock(relays.mu);
  return {relays.records.begin(), relays.records.end()};
}

std::shared_ptr<CommandHandler> make_interworking_relay_handler(
    std::shared_ptr<CommandHandler> next, std::shared_ptr<InterworkingRelays> relays) {
  return std::make_shared<InterworkingRelayHandler>(std::move(next), std::move(relays));
}

}  // namespace qkdn::service

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
