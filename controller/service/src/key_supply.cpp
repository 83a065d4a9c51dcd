// Routing and key supply over Ck (ck-protocol.md clauses 4 and 6; Q.4164 7.2-7.6):
//   0x1401 -> 0x4102 next hops;
//   0x1403 -> per hop 0x410A / 0x140B, then 0x410C / 0x140D, then 0x4104 / 0x1405 to the source
//            (RelayTable drives the sequence; Error no_route / insufficient_keys / timeout when
//            no 0x4104 could be sent);
//   0x1406 -> 0x4108 / 0x1409 with the destination KM, then 0x4107 to the source.
//
// The handler runs on the Ck session's strand and only hops to the core strand; exchanges that
// wait for a KM's answer run in coroutines spawned there (a session must never await a request
// on its own channel). Write-ahead: a 0x4104 goes out only after every ledger batch and record
// queued before it is in the store, so a KM never uses a key the store does not know as
// allocated, and a session is acknowledged (0x4107) only once stored. 0x410A and 0x410C go out at
// once: they only set keys aside, and no KM uses a key until a 0x4104 names it.
//
// Key IDs travel through the controller; key material never does. Key IDs are never logged.
#include <algorithm>
#include <optional>
#include <variant>

#include <boost/asio/co_spawn.hpp>

#include "qkdn/controller/error.hpp"
#include "qkdn/service/controller_facade.hpp"
#include "qkdn/service/key_supply_driver.hpp"
#include "service_impl.hpp"

namespace qkdn::service {
namespace {

using controller::HopStage;
using controller::RelayState;
using Clk = std::chrono::steady_clock;

double seconds_since(Clk::time_point t0) {
  return std::chrono::duration<double>(Clk::now() - t0).count();
}

std::string valid_error_code(const std::string& code) {
  return ck::is_error_code(code) ? code : std::string(ck::errc::kInternal);
}

// The step of a ledger batch from its idempotency key "<relay_id>/<step>/<nonce>-<seq>".
std::string_view batch_step(const std::string& key) {
  const auto a = key.find('/');
  if (a == std::string::npos) return {};
  const auto b = key.find('/', a + 1);
  return std::string_view(key).substr(a + 1, b == std::string::npos ? b : b - a - 1);
}

// The ordered writer's op for a ledger batch: apply_ledger under its idempotency key.
void append_ledger_batch(const controller::LedgerBatch& batch, WriteGroup& g) {
  g.ops.push_back({StoreWrite::Kind::kLedger, "ledger batch " + batch.idempotency_key,
                   [key = batch.idempotency_key, entries = batch.entries](controller::Store& s) {
                     s.apply_ledger(key, entries);
                   },
                   batch.idempotency_key});
}

std::optional<std::string> non_empty(const std::string& s) {
  return s.empty() ? std::nullopt : std::optional<std::string>(s);
}

// Why a KM exchange produced no usable answer: decoded Error frame, or a channel failure.
struct Failure {
  std::string code;
  std::string message;
};

Failure error_frame(const ck::Frame& f) {
  auto r = ck::decode_payload(f.command, f.payload);
  if (auto* m = std::get_if<ck::Message>(&r)) {
    if (auto* e = std::get_if<ck::ErrorMessage>(m)) {
      return {e->error, e->message.value_or(e->error)};
    }
  }
  return {std::string(ck::errc::kBadRequest), "malformed Error frame"};
}

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"  // see the note above reserve_hop
#endif
// Sends a command to a KM and waits for the paired response: the decoded response, or why there is
// none (KM not connected, timeout or closed channel, an Error frame, an undecodable payload).
net::awaitable<std::variant<ck::Message, Failure>> ask_km(std::shared_ptr<southbound::CkChannel> ch,
                                                          std::string km_id, ck::Message command) {
  if (!ch) co_return Failure{std::string(ck::errc::kNoRoute), "KM " + km_id + " is not connected"};
  std::optional<ck::Frame> frame;
  std::optional<Failure> failure;
  try {
    auto op = ch->request(std::move(command));
    frame = co_await std::move(op);
  } catch (const std::exception& e) {
    failure = Failure{std::string(ch->is_open() ? ck::errc::kTimeout : ck::errc::kNoRoute),
                      one_line(e.what())};
  }
  if (failure) co_return *failure;
  if (frame->command == static_cast<std::uint16_t>(ck::Command::kErrorFromKm)) {
    co_return error_frame(*frame);
  }
  auto decoded = ck::decode_payload(frame->command, frame->payload);
  if (auto* bad = std::get_if<ck::DecodeError>(&decoded)) {
    co_return Failure{std::string(ck::errc::kBadRequest), bad->message};
  }
  co_return std::get<ck::Message>(std::move(decoded));
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

}  // namespace

std::string without_uuids(std::string text) {
  constexpr std::size_t kLen = 36;
  for (std::size_t i = 0; i + kLen <= text.size(); ++i) {
    if (is_uuid(text.substr(i, kLen))) {
      text.replace(i, kLen, "<uuid>");
      i += 5;
    }
  }
  return text;
}

std::string without_key_ids(std::string text) {
  static constexpr std::string_view kTag = "key ID ";
  for (auto pos = text.find(kTag); pos != std::string::npos; pos = text.find(kTag, pos)) {
    pos += kTag.size();
    auto end = text.find_first_of(" ,;)", pos);
    if (end == std::string::npos) end = text.size();
    text.replace(pos, end - pos, "<redacted>");
  }
  return text;
}

// ---- the handler --------------------------------------------------------------------------------

class KeySupplyHandler final : public CommandHandler {
 public:
  [[nodiscard]] bool handles(std::uint16_t command) const override {
    switch (static_cast<ck::Command>(command)) {
      case ck::Command::kKeyRelayNextHopRequest:
      case ck::Command::kKeyRelayRequestNotification:
      case ck::Command::kKeyRelayResponse:
      case ck::Command::kSessionCreationRequest:
      case ck::Command::kSessionCreationNotificationResponse:
        return true;
      default:
        return false;
    }
  }

  net::awaitable<void> handle(ControllerService& service, CommandContext ctx,
                              ck::Message message) override {
    auto& impl = *service.impl_;
    // Each step on the core strand is short and answers by itself; nothing here waits for a KM.
    // ctx holds the command's admission tickets (controller_service.cpp): released when this
    // step is done (or, for a session, when its exchange is).
    net::post(impl.core, [&impl, ctx = std::move(ctx), m = std::move(message)]() mutable {
      const auto t0 = Clk::now();
      try {
        if (auto* a = std::get_if<ck::KeyRelayNextHopRequest>(&m)) {
          impl.key_supply->on_next_hop(ctx, *a);
        } else if (auto* b = std::get_if<ck::KeyRelayRequestNotification>(&m)) {
          impl.key_supply->on_relay_notification(ctx, *b);
        } else if (auto* c = std::get_if<ck::KeyRelayResponse>(&m)) {
          impl.key_supply->on_late_relay_response(ctx, *c);
        } else if (auto* d = std::get_if<ck::SessionCreationRequest>(&m)) {
          impl.key_supply->on_session_request(ctx, *d);
        } else if (auto* e = std::get_if<ck::SessionCreationNotificationResponse>(&m)) {
          // The 0x4108 exchange waits with request(): this answer came after its timeout.
          impl.svc.log("key supply: late session answer from " + ctx.km_id + " for session " +
                       e->session_id + " ignored");
        }
      } catch (const std::exception& x) {
        ++impl.counters.handler_failures;
        impl.svc.log(std::string("key supply: ") +
                     command_label(static_cast<std::uint16_t>(ck::command_of(m))) + " from " +
                     ctx.km_id + ": " + x.what());
        ctx.channel->send(ck::ErrorMessage{std::string(ck::errc::kInternal), one_line(x.what()),
                                           ctx.message_id, false},
                          ctx.message_id);
      }
      impl.commands->served(std::chrono::duration_cast<std::chrono::microseconds>(Clk::now() - t0));
      ctx.admission.reset();
    });
    co_return;
  }
};

std::shared_ptr<CommandHandler> make_key_supply_handler() {
  return std::make_shared<KeySupplyHandler>();
}

// ---- the driver ---------------------------------------------------------------------------------

KeySupplyDriver::KeySupplyDriver(net::any_io_executor core, Deps deps)
    : core_(std::move(core)), d_(std::move(deps)) {}

void KeySupplyDriver::recount_relays() {
  relays_by_km_.clear();
  for (const auto& id : d_.relays.open_relays()) {
    if (const auto* r = d_.relays.find(id)) ++relays_by_km_[r->src_km];
  }
}

// ---- routing ------------------------------------------------------------------------------------

std::string KeySupplyDriver::resolve_destination(const std::optional<std::string>& kma,
                                                 const std::optional<std::string>& application,
                                                 std::string& error_code,
                                                 std::string& error_message) const {
  std::string dst;
  if (kma) {
    dst = *kma;
  } else if (application) {
    auto km = d_.network.km_for_sae(*application);
    if (!km) {
      error_code = ck::errc::kUnknownApplication;
      error_message = "application '" + *application + "' is not served by any KM";
      return {};
    }
    dst = *km;
  }
  if (d_.network.find_km(dst) == nullptr) {
    error_code = ck::errc::kUnknownKma;
    error_message = "destination KMA '" + dst + "' is not in the topology";
    return {};
  }
  return dst;
}

controller::RouteOptions KeySupplyDriver::route_options(const std::string& src,
                                                        const std::string& dst,
                                                        std::uint64_t demand_bits) const {
  const auto& policy = d_.engine.effective_policy(src, dst);
  const auto& p = policy.params;
  controller::RouteOptions o;
  o.trust = controller::trust_constraints(policy);
  o.metric = p.metric;
  o.k = d_.options.route_alternatives;
  if (p.max_hops > 0) o.max_hops = static_cast<std::size_t>(p.max_hops);
  o.demand_bits = std::max(static_cast<std::uint64_t>(p.demand_bits), demand_bits);
  return o;
}

void KeySupplyDriver::on_next_hop(const CommandContext& ctx,
                                  const ck::KeyRelayNextHopRequest& req) {
  d_.rerouting.flush_deferred_events();  // route on every KM and link event received so far
  std::string code;
  std::string message;
  const auto dst =
      resolve_destination(req.destination_kma_id, req.application_destination_id, code, message);
  if (dst.empty()) {
    ctx.channel->send(ck::ErrorMessage{code, message, ctx.message_id, false}, ctx.message_id);
    return;
  }
  const std::string& me = ctx.km_id;
  std::vector<std::string> hops;
  if (dst != me) {
    d_.rerouting.refresh_snapshot_if_dirty();
    const auto t0 = Clk::now();
    // The route's source asks: its standing route first (rerouting policy), then alternatives.
    // A transit KM asks (distributed mode): routes from it, never back through the source.
    const bool from_source = !req.source_kma_id || *req.source_kma_id == me;
    bool refused = false;
    // An SAE pair named by the source KM (application_source_id and application_destination_id)
    // brings that pair's trust constraints to the next hops, as for 0x1403.
    const auto named_src_sae = ck::find_extension_string(req.extension, "application_source_id");
    const std::string pair_src_km = req.source_kma_id.value_or(me);
    if (named_src_sae) {
      // As for 0x1403: the named SAE must be one of the relay's source KM.
      const auto km = d_.network.km_for_sae(*named_src_sae);
      if (!km || *km != pair_src_km) {
        d_.protocol_error(ck::errc::kBadRequest);
        ctx.channel->send(ck::ErrorMessage{std::string(ck::errc::kBadRequest),
                                           "application_source_id '" + *named_src_sae +
                                               "' is not an SAE of KM " + pair_src_km,
                                           ctx.message_id, false},
                          ctx.message_id);
        return;
      }
    }
    if (from_source && named_src_sae) {
      auto answer = d_.engine.route_for_saes(me, dst, *named_src_sae,
                                             req.application_destination_id.value_or(""));
      d_.rerouting.apply(answer.output);
      if (answer.route && answer.route->kms.size() > 1) {
        hops.push_back(answer.route->kms[1]);
      } else {
        refused = true;
      }
    } else if (from_source) {
      auto answer = d_.engine.route_for(me, dst);
      d_.rerouting.apply(answer.output);
      if (answer.route && answer.route->kms.size() > 1) {
        hops.push_back(answer.route->kms[1]);
      } else {
        refused = true;  // no route, or a broken pin without fallback
      }
    }
    if (!refused && d_.engine.snapshot()) {
      auto o = route_options(me, dst, 0);
      if (named_src_sae) {
        o.trust = d_.engine.trust_for(pair_src_km, dst, *named_src_sae,
                                      req.application_destination_id.value_or(""));
      }
      if (!from_source && d_.network.find_km(*req.source_kma_id) != nullptr &&
          *req.source_kma_id != dst) {
        o.avoid_kms.push_back(*req.source_kma_id);
      }
      // Distributed relay: the KMs the relay already passed (extension visited_kma_ids) are
      // avoided too, so the next hop never loops back (docs/ck-extensions.md "Next hop").
      for (auto& v : ck::find_extension_strings(req.extension, "visited_kma_ids")) {
        if (v != dst && v != me && d_.network.find_km(v) != nullptr) o.avoid_kms.push_back(v);
      }
      for (auto& h : controller::next_hops(*d_.engine.snapshot(), me, dst, o)) {
        if (std::find(hops.begin(), hops.end(), h) == hops.end()) hops.push_back(std::move(h));
      }
    }
    d_.metrics.route_computation(seconds_since(t0));
    if (hops.size() > d_.options.route_alternatives) hops.resize(d_.options.route_alternatives);
  }
  ck::KeyRelayNextHopResponse resp;
  resp.source_kma_id = req.source_kma_id;
  resp.destination_kma_id = dst;
  resp.next_kma_ids = std::move(hops);
  resp.controller_epoch = d_.epoch;
  ctx.channel->send(std::move(resp), ctx.message_id);
}

// ---- key relay ----------------------------------------------------------------------------------

void KeySupplyDriver::on_relay_notification(const CommandContext& ctx,
                                            const ck::KeyRelayRequestNotification& n) {
  d_.rerouting.flush_deferred_events();  // route on every KM and link event received so far
  const auto refuse = [&](std::string_view code, const std::string& why) {
    if (code == ck::errc::kBadRequest) d_.protocol_error(code);  // the rest: outcomes
    d_.log("key supply: 0x1403 from " + ctx.km_id + " refused: " + std::string(code) + ": " + why);
    ctx.channel->send(ck::ErrorMessage{std::string(code), why, ctx.message_id, false},
                      ctx.message_id);
  };
  const std::string& src = ctx.km_id;
  if (n.source_kma_id && *n.source_kma_id != src) {
    refuse(ck::errc::kBadRequest,
           "source_kma_id '" + *n.source_kma_id + "' is not this connection's KM");
    return;
  }
  std::string code;
  std::string message;
  const auto dst =
      resolve_destination(n.destination_kma_id, n.application_destination_id, code, message);
  if (dst.empty()) {
    refuse(code, message);
    return;
  }
  if (dst == src) {
    refuse(ck::errc::kBadRequest, "destination is the requesting KM itself");
    return;
  }
  if (d_.stopping()) {
    refuse(ck::errc::kInternal, "shutting down");
    return;
  }
  if (d_.writer.configured() && !d_.writer.up()) {
    // Nothing may be allocated that the ledger cannot record.
    refuse(ck::errc::kInternal, "store unavailable");
    return;
  }
  const std::int64_t keys = n.number_of_keys.value_or(1);
  const std::int64_t key_size = n.key_size.value_or(256);
  // The relay scheme the source KM uses on every hop (docs/ck-extensions.md "Relay scheme").
  const auto scheme = ck::find_extension_string(n.extension, "relay_scheme").value_or("otp");
  if (std::find(controller::kRelaySchemes.begin(), controller::kRelaySchemes.end(), scheme) ==
      controller::kRelaySchemes.end()) {
    refuse(ck::errc::kBadRequest, "relay_scheme '" + scheme + "': expected otp or aes-256-gcm");
    return;
  }
  if (keys > d_.relays.config().max_number_of_keys) {
    refuse(ck::errc::kBadRequest, "number_of_keys " + std::to_string(keys) + " exceeds " +
                                      std::to_string(d_.relays.config().max_number_of_keys));
    return;
  }
  if (auto it = relays_by_km_.find(src);
      it != relays_by_km_.end() && it->second >= d_.options.max_relays_per_km) {
    // Per-KM concurrency (issue 13): refused before any routing work; counted, not logged.
    d_.refused("relays_per_km");
    ctx.channel->send(
        ck::ErrorMessage{std::string(ck::errc::kBusy),
                         std::to_string(it->second) +
                             " key relays of this KM in progress; retry after " + "1000 ms",
                         ctx.message_id, false},
        ctx.message_id);
    return;
  }

  d_.rerouting.refresh_snapshot_if_dirty();
  const auto t0 = Clk::now();
  // The SAE pair (from the active session, and the destination application) may carry trust
  // constraints of its own on top of the policy's (issue 20).
  // The source KM names the requesting SAE (application_source_id in the extension,
  // docs/ck-extensions.md): that pair's constraints apply even when several SAE pairs share
  // the KM pair. Without it, the active session's pair (the older convention).
  const auto* session = d_.sessions.find_active(src, dst);
  const auto named_src_sae = ck::find_extension_string(n.extension, "application_source_id");
  if (named_src_sae) {
    const auto km = d_.network.km_for_sae(*named_src_sae);
    if (!km || *km != src) {
      refuse(ck::errc::kBadRequest,
             "application_source_id '" + *named_src_sae + "' is not an SAE of KM " + src);
      return;
    }
  }
  const std::string src_sae =
      named_src_sae ? *named_src_sae : (session != nullptr ? session->src_sae : std::string());
  const std::string dst_sae =
      n.application_destination_id.value_or(session != nullptr ? session->dst_sae : "");
  const std::string session_id = session != nullptr ? session->session_id : std::string();
  auto answer = d_.engine.route_for_saes(src, dst, src_sae, dst_sae);
  d_.rerouting.apply(answer.output);
  if (!answer.route || answer.route->links.empty()) {
    d_.metrics.route_computation(seconds_since(t0));
    if (answer.refusal && answer.refusal->code == "trust_constraints") d_.metrics.trust_refusal();
    refuse(ck::errc::kNoRoute,
           answer.refusal ? answer.refusal->detail : "no usable route from " + src + " to " + dst);
    return;
  }
  std::vector<controller::Route> routes{*answer.route};
  const bool pin_only =
      answer.pinned && d_.engine.effective_policy(src, dst).params.pinned_fallback == 0;
  if (!pin_only && d_.options.route_alternatives > 1) {
    const auto demand = static_cast<std::uint64_t>(keys) * static_cast<std::uint64_t>(key_size);
    auto o = route_options(src, dst, demand);
    o.trust = d_.engine.trust_for(src, dst, src_sae, dst_sae);
    for (auto& r : controller::compute_routes(*d_.engine.snapshot(), src, dst, o)) {
      if (routes.size() >= d_.options.route_alternatives) break;
      if (r.kms != routes.front().kms || r.links != routes.front().links) {
        routes.push_back(std::move(r));
      }
    }
  }
  d_.metrics.route_computation(seconds_since(t0));

  controller::RelayRequest req;
  const bool for_instruction = ck::find_extension_string(n.extension, "instruction_id").has_value();
  // Keys pre-positioned for an instruction are not yet delivered to any application.
  if (!session_id.empty() && !for_instruction) req.session_id = session_id;
  req.src_km = src;
  req.dst_km = dst;
  req.application_destination_id = n.application_destination_id.value_or("");
  req.number_of_keys = keys;
  req.key_size_bits = key_size;
  req.routes = std::move(routes);
  req.notification_message_id = ctx.message_id;
  req.relay_scheme = scheme;
  if (for_instruction) {
    if (instruction_relays_.size() >= 4096) instruction_relays_.clear();  // lost answers: bounded
    instruction_relays_.emplace(src, ctx.message_id);
  }
  try {
    // A bad request changes nothing (and nothing is forwarded). The count goes up before the
    // facade carries the start out, as before: a relay that fails at once counts itself down.
    d_.report([&](CoreChanges& c) {
      c.start_relay(req);
      ++relays_by_km_[src];
    });
  } catch (const InvalidArgument& e) {
    refuse(ck::errc::kBadRequest, e.what());
    return;
  }
}

void KeySupplyDriver::on_late_relay_response(const CommandContext& ctx,
                                             const ck::KeyRelayResponse& r) {
  // The 0x4104 exchange waits with request(); a 0x1405 arriving here came after its timeout (or
  // answers nothing we sent). The relay has failed meanwhile: RelayTable ignores it.
  if (!r.key_relay_request_id) {
    d_.protocol_error("unexpected_response");
    ctx.channel->send(ck::ErrorMessage{std::string(ck::errc::kBadRequest),
                                       "key_relay_response: no pending command with MessageID " +
                                           std::to_string(ctx.message_id),
                                       ctx.message_id, false},
                      ctx.message_id);
    return;
  }
  const auto* relay = d_.relays.find(*r.key_relay_request_id);
  if (relay == nullptr || relay->src_km != ctx.km_id) {
    d_.log("key supply: 0x1405 from " + ctx.km_id + " for unknown relay " +
           *r.key_relay_request_id + " ignored");
    return;
  }
  const bool ok = r.response == "OK";
  d_.report([&](CoreChanges& c) {
    c.relay_response(*r.key_relay_request_id, ok, ok ? std::string() : r.response.substr(4));
  });
}

void KeySupplyDriver::carry_out(controller::RelayOutput out) {
  WriteGroup g;
  for (const auto& b : out.ledger) {
    if (b.empty()) continue;
    const bool expiry = batch_step(b.idempotency_key) == "expire";
    std::map<std::string, std::uint64_t> by_state;
    for (const auto& e : b.entries)
      ++by_state[e.state == "released" && expiry ? "expired" : e.state];
    for (const auto& [state, n] : by_state) d_.metrics.key_reservation(state, n);
    append_ledger_batch(b, g);
  }
  for (auto& rec : out.records) {
    std::string what = "relay " + rec.relay_id;
    g.ops.push_back({StoreWrite::Kind::kUpsert, std::move(what),
                     [r = std::move(rec)](controller::Store& s) { s.save_relay(r); }});
  }
  for (const auto& r : out.finished) relay_finished(r, g);
  for (const auto& line : out.ignored) d_.log("key supply: ignored " + without_key_ids(line));
  // 0x410A and 0x410C only set keys aside at the KMs: they go out at once, their ledger writes
  // queued behind them. 0x4104 lets the KMs use keys: it waits until every write queued before
  // it (those reservations and allocations included) is stored.
  if (!out.relay_requests.empty()) {
    g.then = [this, requests = std::move(out.relay_requests)]() mutable {
      send_relay_commands({}, {}, std::move(requests));
    };
  }
  g.can_wait = !g.then;
  if (!g.ops.empty() || g.then) d_.writer.submit(std::move(g));
  // Releases first: the keys of a failed attempt go back to their KM before the next attempt's
  // 0x410A reaches it (one Ck connection keeps the order).
  if (!out.release.empty()) send_releases(std::move(out.release));
  if (!out.reserve.empty() || !out.allocate.empty())
    send_relay_commands(std::move(out.reserve), std::move(out.allocate), {});
}

void KeySupplyDriver::send_releases(std::vector<controller::ReleaseCommand> release) {
  for (auto& c : release) {
    if (!d_.channels.channel_of(c.km_id)) {
      // Not connected (a restart's or takeover's restore, or the KM dropped): it may still hold
      // the keys, so they go when it registers.
      auto& waiting = deferred_releases_[c.km_id];
      if (waiting.size() >= kMaxDeferredReleases) waiting.erase(waiting.begin());
      waiting.push_back(std::move(c));
      continue;
    }
    net::co_spawn(core_, release_hop(std::move(c)), d_.completion("key release"));
  }
}

void KeySupplyDriver::send_deferred_releases(const std::string& km_id) {
  auto node = deferred_releases_.extract(km_id);
  if (node.empty()) return;
  d_.log("key supply: " + std::to_string(node.mapped().size()) + " key release(s) for " + km_id +
         " sent now that it registered");
  send_releases(std::move(node.mapped()));
}

void KeySupplyDriver::relay_finished(const controller::Relay& r, WriteGroup& group) {
  const auto state = controller::to_string(r.state);
  d_.metrics.key_relay(state, std::chrono::duration<double>(r.updated_at - r.created_at).count());
  if (r.state == RelayState::kRelayed || r.state == RelayState::kFailed) {
    if (auto it = relays_by_km_.find(r.src_km); it != relays_by_km_.end() && it->second > 0) {
      if (--it->second == 0) relays_by_km_.erase(it);
    }
  }
  bool for_instruction = false;
  if (r.notification_message_id &&
      (r.state == RelayState::kRelayed || r.state == RelayState::kFailed)) {
    for_instruction = instruction_relays_.erase({r.src_km, *r.notification_message_id}) > 0;
  }
  if (r.state == RelayState::kRelayed) {
    d_.metrics.relay_scheme(r.relay_scheme);
    if (r.route.kms.size() >= 2) {
      d_.metrics.relay_intermediates(
          r.route.kms.size() - 2,
          static_cast<std::uint64_t>(std::max<std::int64_t>(r.number_of_keys, 0)));
    }
    try {
      if (!for_instruction)
        d_.engine.record_relay(r.src_km, r.dst_km, static_cast<std::uint64_t>(r.number_of_keys),
                               r.updated_at);
    } catch (const std::exception& e) {
      d_.log(std::string("rerouting: relay statistics not recorded: ") + e.what());
    }
    if (r.session_id.empty()) return;
    try {
      auto delivery = d_.sessions.add_delivered(r.session_id, r.number_of_keys,
                                                r.number_of_keys * r.key_size_bits / 8, now());
      persist_session(delivery.session, group);
      for (auto& a : delivery.accounting) {
        if (!d_.writer.configured()) {
          auto& slot = accounting_mem_[{a.bucket_start, a.sae_id, a.session_id}];
          if (slot.sae_id.empty())
            slot = a;
          else {
            slot.key_bytes += a.key_bytes;
            slot.keys += a.keys;
          }
          continue;
        }
        group.ops.push_back(
            {StoreWrite::Kind::kOnce, "accounting",
             [acc = std::move(a)](controller::Store& s) { s.add_accounting(acc); }});
      }
    } catch (const Error& e) {
      // The session ended meanwhile (expired, closed): the keys were delivered all the same.
      d_.log("key supply: session " + r.session_id + " not credited: " + e.what());
    }
    return;
  }
  if (r.state != RelayState::kFailed) return;  // voided: a next attempt carries on
  d_.log("key supply: relay " + r.relay_id + " " + r.src_km + "->" + r.dst_km +
         " failed: " + without_key_ids(r.reason));
  if (r.request_sent || !r.notification_message_id) return;
  // No 0x4104 went out: the 0x1403 is answered with Error (ck-protocol.md clause 4, Pairs).
  if (auto ch = d_.channels.channel_of(r.src_km)) {
    const auto code = valid_error_code(r.ck_error.empty() ? "no_route" : r.ck_error);
    if (code == ck::errc::kBadRequest) d_.protocol_error(code);  // the rest: outcomes
    ch->send(ck::ErrorMessage{code, one_line(r.reason), r.notification_message_id, false},
             r.notification_message_id);
  }
}

void KeySupplyDriver::send_relay_commands(std::vector<controller::ReserveCommand> reserve,
                                          std::vector<controller::AllocateCommand> allocate,
                                          std::vector<controller::RelayRequestCommand> requests) {
  // Only what is still wanted: the store may have delayed these while the relay moved on.
  const auto hop_at = [this](const std::string& id, std::size_t hop,
                             HopStage stage) -> const controller::Relay* {
    const auto* r = d_.relays.find(id);
    if (r == nullptr || controller::is_final(r->state) || hop >= r->hops.size() ||
        r->hops[hop].stage != stage) {
      return nullptr;
    }
    return r;
  };
  for (auto& c : reserve) {
    if (hop_at(c.relay_id, c.hop, HopStage::kReserving) == nullptr) continue;
    net::co_spawn(core_, reserve_hop(std::move(c)), d_.completion("key reservation"));
  }
  for (auto& c : allocate) {
    if (hop_at(c.relay_id, c.hop, HopStage::kAllocating) == nullptr) continue;
    net::co_spawn(core_, allocate_hop(std::move(c)), d_.completion("key allocation"));
  }
  for (auto& c : requests) {
    const auto* r = d_.relays.find(c.relay_id);
    if (r == nullptr || r->state != RelayState::kRelaying) continue;
    net::co_spawn(core_, request_relay(std::move(c)), d_.completion("key relay request"));
  }
}

// GCC 12 reports -Wmismatched-new-delete at the end of these coroutines once their frames are
// inlined into co_spawn: a false positive about Asio's awaitable frame allocator (operator new
// and operator delete are the frame's own matched pair).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

net::awaitable<void> KeySupplyDriver::reserve_hop(controller::ReserveCommand cmd) {
  ck::KeyReservationRequest m;
  m.source_kma_id = cmd.source_kma_id;
  m.destination_kma_id = cmd.destination_kma_id;
  m.application_destination_id = non_empty(cmd.application_destination_id);
  m.number_of_keys = cmd.number_of_keys;
  m.next_kma_id = cmd.next_kma_id;
  m.link_id = cmd.link_id;
  m.key_relay_request_id = cmd.relay_id;
  m.controller_epoch = d_.epoch;
  auto op = ask_km(d_.channels.channel_of(cmd.km_id), cmd.km_id, ck::Message{std::move(m)});
  auto answer = co_await std::move(op);
  std::optional<Failure> failure;
  if (auto* f = std::get_if<Failure>(&answer)) {
    failure = std::move(*f);
  } else {
    const auto& resp = std::get<ck::KeyReservationResponse>(std::get<ck::Message>(answer));
    if (resp.response == 0) {
      d_.report([&](CoreChanges& c) { c.relay_reserved(cmd.relay_id, cmd.hop, resp.key_ids); });
    } else {
      auto ext = ck::find_error_extension(resp.extension);
      failure = Failure{ext ? ext->error : std::string(ck::errc::kInsufficientKeys),
                        ext ? ext->message : std::string("reservation refused")};
    }
  }
  if (failure) {
    d_.metrics.key_reservation("refused");
    d_.report([&](CoreChanges& c) {
      c.relay_reservation_failed(cmd.relay_id, cmd.hop, failure->code,
                                 cmd.km_id + ": " + failure->message);
    });
  }
}

net::awaitable<void> KeySupplyDriver::allocate_hop(controller::AllocateCommand cmd) {
  ck::KeyAllocationRequest m;
  m.source_kma_id = cmd.source_kma_id;
  m.destination_kma_id = cmd.destination_kma_id;
  m.application_destination_id = non_empty(cmd.application_destination_id);
  m.next_kma_id = cmd.next_kma_id;
  m.link_id = cmd.link_id;
  m.key_relay_request_id = cmd.relay_id;
  m.key_ids = std::move(cmd.key_ids);
  m.controller_epoch = d_.epoch;
  auto op = ask_km(d_.channels.channel_of(cmd.km_id), cmd.km_id, ck::Message{std::move(m)});
  auto answer = co_await std::move(op);
  std::optional<Failure> failure;
  if (auto* f = std::get_if<Failure>(&answer)) {
    failure = std::move(*f);
  } else {
    const auto& resp = std::get<ck::KeyAllocationResponse>(std::get<ck::Message>(answer));
    if (resp.response == 0) {
      d_.report([&](CoreChanges& c) { c.relay_allocated(cmd.relay_id, cmd.hop); });
    } else {
      auto ext = ck::find_error_extension(resp.extension);
      failure = Failure{ext ? ext->error : std::string(ck::errc::kInsufficientKeys),
                        ext ? ext->message : std::string("allocation refused")};
    }
  }
  if (failure) {
    d_.metrics.key_reservation("refused");
    d_.report([&](CoreChanges& c) {
      c.relay_allocation_failed(cmd.relay_id, cmd.hop, failure->code,
                                cmd.km_id + ": " + failure->message);
    });
  }
}

net::awaitable<void> KeySupplyDriver::release_hop(controller::ReleaseCommand cmd) {
  ck::KeyRelease m;
  m.key_relay_request_id = cmd.relay_id;
  m.next_kma_id = cmd.next_kma_id;
  m.link_id = non_empty(cmd.link_id);
  m.key_ids = std::move(cmd.key_ids);
  if (cmd.discard) m.disposition = "discard";
  m.controller_epoch = d_.epoch;
  auto op = ask_km(d_.channels.channel_of(cmd.km_id), cmd.km_id, ck::Message{std::move(m)});
  auto answer = co_await std::move(op);
  std::string problem;
  if (auto* f = std::get_if<Failure>(&answer)) {
    problem = f->code + ": " + f->message;
  } else if (const auto* r = std::get_if<ck::KeyReleaseResponse>(&std::get<ck::Message>(answer))) {
    if (r->response != "OK") problem = r->response;
  }
  // The KM's own leases still release what it holds; nothing to retry.
  if (!problem.empty()) {
    d_.log("key supply: key release at " + cmd.km_id + " for relay " + cmd.relay_id +
           " not confirmed: " + without_key_ids(problem));
  }
}

net::awaitable<void> KeySupplyDriver::request_relay(controller::RelayRequestCommand cmd) {
  bool ok = false;
  std::string reason;
  std::optional<ck::Frame> frame;
  auto ch = d_.channels.channel_of(cmd.km_id);
  if (!ch) {
    reason = "KM " + cmd.km_id + " is not connected";
  } else {
    ck::KeyRelayRequest m;
    m.source_kma_id = cmd.source_kma_id;
    m.destination_kma_id = cmd.destination_kma_id;
    m.transit_kma_ids = cmd.transit_kma_ids;
    m.key_relay_request_id = cmd.relay_id;
    m.notification_message_id = cmd.notification_message_id;
    for (auto& h : cmd.hop_keys) {
      m.hop_keys.push_back({h.kma_id, h.next_kma_id, h.link_id, std::move(h.key_ids)});
    }
    m.controller_epoch = d_.epoch;
    try {
      auto op = ch->request(ck::Message{std::move(m)}, d_.relays.config().relaying_timeout);
      frame = co_await std::move(op);
    } catch (const std::exception& e) {
      reason = ch->is_open() ? "timeout" : "KM " + cmd.km_id + " disconnected";
      if (!ch->is_open() || std::string_view(e.what()).find("timeout") == std::string_view::npos) {
        reason += ": " + one_line(e.what());
      }
    }
  }
  if (frame) {
    if (frame->command == static_cast<std::uint16_t>(ck::Command::kErrorFromKm)) {
      const auto f = error_frame(*frame);
      reason = f.code + ": " + f.message;
    } else {
      auto decoded = ck::decode_payload(frame->command, frame->payload);
      if (auto* bad = std::get_if<ck::DecodeError>(&decoded)) {
        reason = "malformed key relay response: " + bad->message;
      } else {
        const auto& resp = std::get<ck::KeyRelayResponse>(std::get<ck::Message>(decoded));
        ok = resp.response == "OK";
        if (!ok) reason = resp.response.substr(4);
      }
    }
  }
  d_.report([&](CoreChanges& c) { c.relay_response(cmd.relay_id, ok, reason); });
}

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

// ---- sessions -----------------------------------------------------------------------------------

void KeySupplyDriver::persist_session(const controller::Session& s, WriteGroup& group) {
  group.ops.push_back(
      {StoreWrite::Kind::kUpsert, "session " + s.session_id,
       [rec = controller::to_record(s)](controller::Store& st) { st.save_session(rec); }});
}

void KeySupplyDriver::on_session_request(const CommandContext& ctx,
                                         const ck::SessionCreationRequest& req) {
  d_.rerouting.flush_deferred_events();  // route on every KM and link event received so far
  const auto answer_ng = [&](const std::string& code, const std::string& why,
                             const std::string& dst_km) {
    if (code == ck::errc::kBadRequest) d_.protocol_error(code);  // the rest: outcomes
    d_.log("key supply: session request from " + ctx.km_id + " refused: " + code + ": " + why);
    ck::SessionCreationResponse r;
    r.session_id = make_uuid_v4(d_.random);  // names nothing: no session was created
    r.response = "NG: " + code + ": " + one_line(why);
    r.destination_km_id = dst_km;
    r.controller_epoch = d_.epoch;
    ctx.channel->send(std::move(r), ctx.message_id);
  };
  if (d_.stopping()) {
    answer_ng(std::string(ck::errc::kInternal), "shutting down", ctx.km_id);
    return;
  }
  if (d_.writer.configured() && !d_.writer.up()) {
    answer_ng(std::string(ck::errc::kInternal), "store unavailable", ctx.km_id);
    return;
  }
  auto created = d_.sessions.create(
      {ctx.km_id, req.application_source_id, req.application_destination_id, req.number_of_keys},
      now());
  if (!created.session) {
    answer_ng(created.ck_error, created.message,
              d_.network.km_for_sae(req.application_destination_id).value_or(ctx.km_id));
    return;
  }
  WriteGroup g;
  persist_session(*created.session, g);
  g.then = [this, ctx = CommandContext(ctx), s = std::move(*created.session)]() mutable {
    net::co_spawn(core_, session_exchange(std::move(ctx), std::move(s)),
                  d_.completion("session creation"));
  };
  d_.writer.submit(std::move(g));
}

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"  // as for reserve_hop above
#endif

net::awaitable<void> KeySupplyDriver::session_exchange(CommandContext ctx,
                                                       controller::Session session) {
  std::optional<ck::Frame> frame;
  std::string reason;
  auto ch = d_.channels.channel_of(session.dst_km);
  if (!ch) {
    reason = "destination KM " + session.dst_km + " is not connected";
  } else {
    ck::SessionCreationNotification m;
    m.application_source_id = session.src_sae;
    m.application_destination_id = session.dst_sae;
    m.session_id = session.session_id;
    m.source_km_id = session.src_km;
    m.number_of_keys = session.keys_requested;
    m.controller_epoch = d_.epoch;
    try {
      auto op = ch->request(ck::Message{std::move(m)}, d_.sessions.config().pending_timeout);
      frame = co_await std::move(op);
    } catch (const std::exception&) {
      reason = ch->is_open() ? "timeout" : "destination KM " + session.dst_km + " disconnected";
    }
  }
  bool ok = false;
  if (frame) {
    if (frame->command == static_cast<std::uint16_t>(ck::Command::kErrorFromKm)) {
      const auto f = error_frame(*frame);
      reason = f.code + ": " + f.message;
      frame.reset();
    } else {
      auto decoded = ck::decode_payload(frame->command, frame->payload);
      if (auto* bad = std::get_if<ck::DecodeError>(&decoded)) {
        reason = "malformed session answer: " + bad->message;
        frame.reset();
      } else {
        const auto& resp =
            std::get<ck::SessionCreationNotificationResponse>(std::get<ck::Message>(decoded));
        if (resp.session_id != session.session_id) {
          reason = "answer names session " + resp.session_id;
          frame.reset();
        } else {
          ok = resp.response == "OK";
          if (!ok) reason = resp.response.substr(4);
        }
      }
    }
  }
  controller::Session result = session;
  try {
    result = frame ? d_.sessions.on_answer(session.session_id, session.dst_km, ok, reason, now())
                   : d_.sessions.fail(session.session_id, reason, now());
  } catch (const Error&) {
    // Expired or closed meanwhile: answer with what it is now.
    if (const auto* cur = d_.sessions.find(session.session_id)) result = *cur;
    if (reason.empty()) reason = result.reason.empty() ? "timeout" : result.reason;
  }
  ok = result.state == controller::SessionState::kActive;
  if (!ok && reason.empty()) reason = std::string(controller::to_string(result.state));
  WriteGroup g;
  persist_session(result, g);
  // Acknowledged only once stored.
  g.then = [this, ctx = std::move(ctx), result, ok, reason] {
    ck::SessionCreationResponse r;
    r.session_id = result.session_id;
    r.response = ok ? std::string("OK") : "NG: " + one_line(reason);
    r.destination_km_id = result.dst_km;
    r.controller_epoch = d_.epoch;
    try {
      ctx.channel->send(std::move(r), ctx.message_id);
    } catch (const std::exception& e) {
      d_.log(std::string("key supply: session answer not sent: ") + e.what());
    }
  };
  d_.writer.submit(std::move(g));
}

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

void KeySupplyDriver::expire_sessions(SysTime t) {
  auto ended = d_.sessions.expire(t);
  if (ended.empty()) return;
  WriteGroup g;
  for (const auto& s : ended) persist_session(s, g);
  d_.writer.submit(std::move(g));
}

}  // namespace qkdn::service
