// Interworking key transfer decisions and records: see qkdn/service/iwn_transfers.hpp.
#include "qkdn/service/iwn_transfers.hpp"

#include <algorithm>
#include <chrono>
#include <map>
#include <set>

#include <boost/json.hpp>

#include "qkdn/controller/error.hpp"
#include "qkdn/net/run_on.hpp"
#include "qkdn/service/key_share.hpp"
#include "qkdn/service/metrics.hpp"

namespace qkdn::service {

namespace json = boost::json;

namespace {

bool valid_id(std::string_view id) {
  if (id.empty() || id.size() > 128) return false;
  return std::all_of(id.begin(), id.end(), [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == ':' || c == '-';
  });
}

std::string id_of(const json::object& o, std::string_view name, const std::string& where) {
  const auto* v = o.if_contains(name);
  if (v == nullptr || !v->is_string() || !valid_id(v->get_string())) {
    throw InvalidArgument(where + "." + std::string(name) + ": expected an ID");
  }
  return std::string(v->get_string());
}

/// A decision waiting for its sender's report.
struct Pending {
  std::string km_id;
  std::int64_t keys = 0;
  std::chrono::steady_clock::time_point decided;
};

/// How long a decided transfer may stay unreported before it counts as lost (the KM's own
/// transfer times out after --kxi-timeout-ms, 5 s by default).
constexpr auto kReportDeadline = std::chrono::seconds(60);
constexpr std::size_t kMaxPending = 4096;

/// Everything the handler keeps; touched only on the core strand.
struct State {
  std::map<std::string, IwnPolicyPair> policy;  ///< by IWN KM
  std::map<std::string, Pending> pending;       ///< by transfer_id
  std::map<std::string, double> credit;         ///< keys a KM may still transfer now
  std::map<std::string, std::chrono::steady_clock::time_point> refilled;
  std::map<std::string, std::size_t> in_flight;  ///< by IWN KM
  KeyShareLimiter shares;                        ///< last legs, per peer QKDN
};

/// Why a last leg (a 0x1403 naming an interworking transfer) is refused: Ck error code and text.
struct Refusal {
  std::string_view code;
  std::string text;
};

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"  // GCC 12 false positive on coroutines
#endif
class IwnTransferHandler final : public CommandHandler {
 public:
  IwnTransferHandler(std::shared_ptr<CommandHandler> next, std::vector<IwnPolicyPair> policy)
      : next_(std::move(next)), state_(std::make_shared<State>()) {
    for (auto& p : policy) state_->policy.emplace(p.km_id, std::move(p));
  }

  [[nodiscard]] bool handles(std::uint16_t command) const override {
    return command == static_cast<std::uint16_t>(ck::Command::kIwnTransferRequest) ||
           command == static_cast<std::uint16_t>(ck::Command::kIwnTransferReport) ||
           (next_ && next_->handles(command));
  }

  net::awaitable<void> handle(ControllerService& service, CommandContext ctx,
                              ck::Message message) override {
    if (auto* req = std::get_if<ck::IwnTransferRequest>(&message)) {
      auto work = [](ControllerService* svc, std::shared_ptr<State> st, std::string km,
                     ck::IwnTransferRequest r) -> net::awaitable<ck::IwnTransferInstruction> {
        co_return decide(*svc, *st, km, r);
      }(&service, state_, ctx.km_id, std::move(*req));
      auto hop = qkdn::net::run_on(service.core_executor(), std::move(work));
      ck::IwnTransferInstruction answer = co_await std::move(hop);
      answer.controller_epoch = ctx.controller_epoch;
      ctx.channel->send(ck::Message{std::move(answer)}, ctx.message_id);
      co_return;
    }
    if (auto* n = std::get_if<ck::KeyRelayRequestNotification>(&message);
        n != nullptr && ck::find_extension_string(n->extension, "iwn_transfer_id")) {
      // The last leg of a Kxi' transfer received by an IWN KM of this QKDN (docs/kxi.md): this
      // controller decides by its peer policy and the peer's key rate share, then the ordinary
      // key relay (next_) reserves and relays as for any 0x1403.
      auto work = [](ControllerService* svc, std::shared_ptr<State> st, std::string km,
                     ck::KeyRelayRequestNotification r) -> net::awaitable<std::optional<Refusal>> {
        co_return decide_last_leg(*svc, *st, km, r);
      }(&service, state_, ctx.km_id, *n);
      auto hop = qkdn::net::run_on(service.core_executor(), std::move(work));
      std::optional<Refusal> refused = co_await std::move(hop);
      if (refused) {
        ctx.channel->send(
            ck::ErrorMessage{std::string(refused->code), refused->text, ctx.message_id, false},
            ctx.message_id);
        co_return;
      }
    } else if (auto* rep = std::get_if<ck::IwnTransferReport>(&message)) {
      if (rep->kma_id != ctx.km_id) {
        ck::ErrorMessage e;
        e.error = std::string(ck::errc::kBadRequest);
        e.message = "iwn_transfer_report: kma_id '" + rep->kma_id + "' is not this connection's KM";
        e.message_id = ctx.message_id;
        e.from_km = false;
        ctx.channel->send(ck::Message{std::move(e)}, ctx.message_id);
        co_return;
      }
      auto work = [](ControllerService* svc, std::shared_ptr<State> st,
                     ck::IwnTransferReport r) -> net::awaitable<void> {
        record(*svc, *st, r);
        co_return;
      }(&service, state_, std::move(*rep));
      auto hop = qkdn::net::run_on(service.core_executor(), std::move(work));
      co_await std::move(hop);
      co_return;
    }
    auto op = next_->handle(service, std::move(ctx), std::move(message));
    co_await std::move(op);
  }

 private:
  static void forget_lost(ControllerService& svc, State& st) {
    const auto now = std::chrono::steady_clock::now();
    for (auto it = st.pending.begin(); it != st.pending.end();) {
      if (now - it->second.decided < kReportDeadline) {
        ++it;
        continue;
      }
      svc.log(base::LogLevel::kWarn, "iwn: transfer " + it->first + " of " + it->second.km_id +
                                         " decided but never reported: counted lost");
      svc.metrics().iwn_transfer("sender", "lost", 0);
      if (auto& n = st.in_flight[it->second.km_id]; n > 0) --n;
      it = st.pending.erase(it);
    }
  }

  static std::optional<Refusal> decide_last_leg(ControllerService& svc, State& st,
                                                const std::string& km,
                                                const ck::KeyRelayRequestNotification& n) {
    const std::string tid = ck::find_extension_string(n.extension, "iwn_transfer_id").value_or("");
    const auto partner = ck::find_extension_string(n.extension, "iwn_partner_qkdn_id");
    const auto initiator = ck::find_extension_string(n.extension, "iwn_initiator_sae");
    const std::string target = n.application_destination_id.value_or("");
    auto refuse = [&](std::string_view code, std::string text) {
      svc.metrics().iwn_last_leg("refused");
      svc.log(base::LogLevel::kWarn, "iwn: last leg of transfer " + tid + " at " + km + " to " +
                                         target + " refused: " + text);
      return std::optional<Refusal>(Refusal{code, std::move(text)});
    };
    if (!valid_id(tid) || !partner || !valid_id(*partner) || !initiator || !valid_id(*initiator) ||
        !valid_id(target)) {
      return refuse(ck::errc::kBadRequest,
                    "a last leg names iwn_transfer_id, iwn_partner_qkdn_id, iwn_initiator_sae and "
                    "application_destination_id (IDs)");
    }
    const auto& net = svc.network();
    if (net.km_for_sae(*initiator)) {
      return refuse(ck::errc::kBadRequest,
                    "SAE " + *initiator + " is an application of this QKDN, not of " + *partner);
    }
    const auto& peers = net.peers();
    const auto peer = std::find_if(peers.begin(), peers.end(),
                                   [&](const auto& p) { return p.qkdn_id == *partner; });
    if (peer == peers.end()) {
      return refuse(ck::errc::kUnknownApplication,
                    *partner + " is no peer of this QKDN: none of its keys go further than " + km);
    }
    const auto& allowed = peer->policy.reachable_saes;
    if (std::find(allowed.begin(), allowed.end(), target) == allowed.end()) {
      return refuse(ck::errc::kUnknownApplication,
                    "SAE " + target + " may not be reached from " + *partner + " (peer policy)");
    }
    const auto target_km = net.km_for_sae(target);
    if (!target_km || *target_km == km) {
      return refuse(ck::errc::kUnknownApplication,
                    "SAE " + target + " is not declared behind another KM than " + km);
    }
    if (n.destination_kma_id && *n.destination_kma_id != *target_km) {
      return refuse(ck::errc::kBadRequest, "destination_kma_id is not SAE " + target + "'s KM");
    }
    // The share is of the key rate the last legs draw from: the QKD links of the IWN KM.
    double capacity = 0;
    for (const auto& [id, link] : net.links()) {
      if (link.spec.a == km || link.spec.b == km) capacity += link.spec.key_rate_bps;
    }
    const std::int64_t bits = n.number_of_keys.value_or(1) * n.key_size.value_or(256);
    auto verdict = st.shares.admit(*partner, peer->policy.key_rate_share, capacity, bits,
                                   std::chrono::steady_clock::now());
    if (!verdict.admitted) {
      svc.metrics().key_share_refusal(*partner);
      return refuse(ck::errc::kInsufficientKeys, verdict.reason);
    }
    svc.metrics().iwn_last_leg("accepted");
    svc.log("iwn: last leg of transfer " + tid + " from " + *partner + ": " + std::to_string(bits) +
            " bits for " + *initiator + " -> " + target + " from " + km + " to " + *target_km +
            " accepted");
    return std::nullopt;
  }

  static ck::IwnTransferInstruction decide(ControllerService& svc, State& st, const std::string& km,
                                           const ck::IwnTransferRequest& r) {
    forget_lost(svc, st);
    ck::IwnTransferInstruction out;
    out.transfer_id = r.transfer_id;
    auto refuse = [&](std::string_view code, const std::string& text) {
      out.response = "NG: " + std::string(code) + ": " + text;
      svc.metrics().iwn_transfer_decision("refused");
      svc.log(base::LogLevel::kWarn, "iwn: transfer " + r.transfer_id + " of " + km + " (" +
                                         r.application_source_id + " -> " +
                                         r.application_destination_id + ") refused: " + text);
      return out;
    };
    if (r.kma_id != km) return refuse(ck::errc::kBadRequest, "kma_id is not the asking KM");
    auto p = st.policy.find(km);
    if (p == st.policy.end()) {
      return refuse(ck::errc::kUnknownKma, "KM " + km + " is no interworking KM of this QKDN");
    }
    const IwnPolicyPair& pol = p->second;
    if (r.partner_kma_id != pol.partner_km_id) {
      return refuse(ck::errc::kUnknownKma,
                    "KM " + r.partner_kma_id + " is not the IWN partner of " + km);
    }
    const auto& allowed = pol.allowed_saes;
    if (std::find(allowed.begin(), allowed.end(), r.application_destination_id) == allowed.end()) {
      return refuse(ck::errc::kUnknownApplication,
                    "SAE " + r.application_destination_id + " may not be reached through " + km +
                        " (policy of the IWN to " + pol.partner_qkdn_id + ")");
    }
    const auto& net = svc.network();
    const auto src_km = net.km_for_sae(r.application_source_id);
    if (!src_km || *src_km == km) {
      return refuse(ck::errc::kUnknownApplication,
                    "SAE " + r.application_source_id + " is no application of this QKDN");
    }
    if (net.km_for_sae(r.application_destination_id) != km) {
      return refuse(ck::errc::kUnknownApplication,
                    "SAE " + r.application_destination_id + " is not declared at " + km);
    }
    const std::set<std::string> unique(r.key_ids.begin(), r.key_ids.end());
    if (static_cast<std::int64_t>(r.key_ids.size()) != r.number_of_keys ||
        unique.size() != r.key_ids.size()) {
      return refuse(ck::errc::kBadRequest, "key_ids must name number_of_keys distinct keys");
    }
    if (st.pending.contains(r.transfer_id)) {
      return refuse(ck::errc::kBadRequest, "transfer_id " + r.transfer_id + " already decided");
    }
    if (r.number_of_keys > pol.max_keys_per_transfer) {
      return refuse(ck::errc::kInsufficientKeys,
                    std::to_string(r.number_of_keys) + " keys exceed the IWN's " +
                        std::to_string(pol.max_keys_per_transfer) + " per transfer");
    }
    if (st.in_flight[km] >= pol.max_in_flight || st.pending.size() >= kMaxPending) {
      return refuse(ck::errc::kBusy,
                    std::to_string(st.in_flight[km]) + " transfers of " + km + " in progress");
    }
    const auto now = std::chrono::steady_clock::now();
    if (pol.max_keys_per_s > 0) {
      const double burst =
          std::max(pol.max_keys_per_s, static_cast<double>(pol.max_keys_per_transfer));
      auto [c, fresh] = st.credit.try_emplace(km, burst);
      auto& last = st.refilled[km];
      if (!fresh) {
        const double dt = std::chrono::duration<double>(now - last).count();
        c->second = std::min(burst, c->second + dt * pol.max_keys_per_s);
      }
      last = now;
      if (c->second < static_cast<double>(r.number_of_keys)) {
        return refuse(ck::errc::kInsufficientKeys, "the IWN's key rate share (" +
                                                       std::to_string(pol.max_keys_per_s) +
                                                       " keys/s) is used up");
      }
      c->second -= static_cast<double>(r.number_of_keys);
    }
    st.pending.emplace(r.transfer_id, Pending{km, r.number_of_keys, now});
    ++st.in_flight[km];
    out.response = "OK";
    out.partner_kma_id = pol.partner_km_id;
    out.key_ids = r.key_ids;
    svc.metrics().iwn_transfer_decision("accepted");
    svc.log("iwn: transfer " + r.transfer_id + " of " + km + " to " + pol.partner_km_id + " (" +
            pol.partner_qkdn_id + "): " + std::to_string(r.number_of_keys) + " keys for " +
            r.application_source_id + " -> " + r.application_destination_id + " accepted");
    return out;
  }

  static void record(ControllerService& svc, State& st, const ck::IwnTransferReport& r) {
    bool decided_here = false;
    if (r.role == "sender") {
      if (auto it = st.pending.find(r.transfer_id);
          it != st.pending.end() && it->second.km_id == r.kma_id) {
        decided_here = true;
        if (auto& n = st.in_flight[r.kma_id]; n > 0) --n;
        st.pending.erase(it);
      } else {
        svc.log(base::LogLevel::kWarn, "iwn: " + r.kma_id + " reported transfer " + r.transfer_id +
                                           " that this controller did not decide");
      }
    }
    const bool ok = r.response == "OK";
    svc.metrics().iwn_transfer(r.role, ok ? "ok" : "failed",
                               static_cast<std::uint64_t>(r.number_of_keys));
    controller::AuditRecord a;
    a.at = std::chrono::system_clock::now();
    a.actor = r.kma_id;
    a.action = "iwn_transfer";
    a.resource = r.transfer_id;
    a.outcome = ok ? "OK" : "NG";
    a.detail = "role=" + r.role + " partner=" + r.partner_kma_id +
               (r.partner_qkdn_id ? " (" + *r.partner_qkdn_id + ")" : std::string()) +
               " saes=" + r.application_source_id + "->" + r.application_destination_id +
               " keys=" + std::to_string(r.number_of_keys) + "x" + std::to_string(r.key_size) +
               " disposition=" + r.disposition + (decided_here ? " decided" : "") +
               (ok ? std::string() : " response=" + r.response);
    svc.log((ok ? "iwn: " : "WARNING: iwn: ") + std::string("transfer ") + r.transfer_id + " " +
            a.detail);
    svc.audit(std::move(a));
  }

  std::shared_ptr<CommandHandler> next_;
  std::shared_ptr<State> state_;
};
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

}  // namespace

std::vector<IwnPolicyPair> parse_iwn_policy(std::string_view text) {
  boost::system::error_code ec;
  json::value root = json::parse(text, ec);
  if (ec) throw InvalidArgument("iwn policy: not JSON: " + ec.message());
  if (!root.is_object() || root.get_object().size() != 1 || !root.get_object().contains("pairs") ||
      !root.get_object().at("pairs").is_array()) {
    throw InvalidArgument("iwn policy: expected {\"pairs\":[...]}");
  }
  static const std::set<std::string, std::less<>> kFields = {
      "km_id",          "partner_km_id", "partner_qkdn_id", "allowed_saes", "max_keys_per_transfer",
      "max_keys_per_s", "max_in_flight"};
  std::vector<IwnPolicyPair> out;
  std::set<std::string> kms;
  const auto& arr = root.get_object().at("pairs").get_array();
  for (std::size_t i = 0; i < arr.size(); ++i) {
    const std::string where = "iwn policy: pairs[" + std::to_string(i) + "]";
    if (!arr[i].is_object()) throw InvalidArgument(where + ": expected an object");
    const auto& o = arr[i].get_object();
    for (const auto& [name, v] : o) {
      if (!kFields.contains(name)) {
        throw InvalidArgument(where + ": unknown field " + std::string(name));
      }
    }
    IwnPolicyPair p;
    p.km_id = id_of(o, "km_id", where);
    p.partner_km_id = id_of(o, "partner_km_id", where);
    p.partner_qkdn_id = id_of(o, "partner_qkdn_id", where);
    const auto* saes = o.if_contains("allowed_saes");
    if (saes == nullptr || !saes->is_array()) {
      throw InvalidArgument(where + ".allowed_saes: expected an array of SAE IDs");
    }
    for (const auto& s : saes->get_array()) {
      if (!s.is_string() || !valid_id(s.get_string())) {
        throw InvalidArgument(where + ".allowed_saes: expected SAE IDs");
      }
      p.allowed_saes.emplace_back(s.get_string());
    }
    if (const auto* v = o.if_contains("max_keys_per_transfer")) {
      if (!v->is_int64() || v->get_int64() < 1 || v->get_int64() > 1024) {
        throw InvalidArgument(where + ".max_keys_per_transfer: expected 1..1024");
      }
      p.max_keys_per_transfer = v->get_int64();
    }
    if (const auto* v = o.if_contains("max_keys_per_s")) {
      if (!v->is_number() || v->to_number<double>() < 0) {
        throw InvalidArgument(where + ".max_keys_per_s: expected a number >= 0");
      }
      p.max_keys_per_s = v->to_number<double>();
    }
    if (const auto* v = o.if_contains("max_in_flight")) {
      if (!v->is_int64() || v->get_int64() < 1 || v->get_int64() > 1024) {
        throw InvalidArgument(where + ".max_in_flight: expected 1..1024");
      }
      p.max_in_flight = static_cast<std::size_t>(v->get_int64());
    }
    if (!kms.insert(p.km_id).second) throw InvalidArgument(where + ": KM " + p.km_id + " twice");
    out.push_back(std::move(p));
  }
  return out;
}

std::shared_ptr<CommandHandler> make_iwn_transfer_handler(std::shared_ptr<CommandHandler> next,
                                                          std::vector<IwnPolicyPair> policy) {
  return std::make_shared<IwnTransferHandler>(std::move(next), std::move(policy));
}

}  // namespace qkdn::service
