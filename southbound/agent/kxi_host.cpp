// Interworking node at a hosted KM (docs/kxi.md): a KM of one QKDN hands keys filed for an SAE
// of another QKDN to its IWN partner KM over Kxi' (kxi.hpp) before it acknowledges them, and a
// partner KM files the keys it receives for its own SAE (ETSI 014 dec_keys then returns them).
#include <algorithm>
#include <cstring>

#include <openssl/crypto.h>
#include <boost/asio/co_spawn.hpp>
#include <boost/json.hpp>

#include "km_host.hpp"
#include "kxi.hpp"
#include "log.hpp"
#include "qkdn/controller/error.hpp"
#include "qkdn/controller/key_limits.hpp"
#include "qkdn/net/run_on.hpp"
#include "sae_key_id.hpp"

namespace qkdn::agent {

namespace ck = southbound::ck;

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"  // GCC 12 false positive on coroutines
#endif

// ---- AgentCore ---------------------------------------------------------------------------------

void AgentCore::init_iwn() {
  for (const auto& p : config_.iwn_pairs) {
    if (!by_id_.contains(p.km_id)) {
      throw InvalidArgument("iwn config: KM " + p.km_id + " is not hosted by this agent");
    }
    IwnState s;
    s.pair = p;
    if (!p.remote_saes.empty()) s.client_tls = make_kxi_client_tls(p, config_.tls_cert_dir);
    // SAEs of the partner's QKDN appear in this QKDN's topology at the IWN KM (so that its
    // controller routes their keys there), but they are not served here: no ETSI 014 access.
    for (const auto& sae : p.remote_saes) by_sae_.erase(sae);
    iwn_.emplace(p.km_id, std::move(s));
  }
}

const AgentCore::IwnState* AgentCore::iwn(const std::string& km_id) const {
  auto it = iwn_.find(km_id);
  return it == iwn_.end() ? nullptr : &it->second;
}

net::awaitable<kxi::Answer> AgentCore::receive_transfer(std::string km_id, std::string partner_km,
                                                        kxi::TransferRequest request) {
  KmHost* h = find(km_id);
  if (h == nullptr) co_return kxi::Answer{503, "KM not hosted here", {{"km_id", km_id}}};
  auto op = h->kxi_receive(std::move(partner_km), std::move(request));
  auto hop = qkdn::net::run_on(h->strand(), std::move(op));
  auto answer = co_await std::move(hop);
  co_return answer;
}

// ---- KmHost: sending side ----------------------------------------------------------------------

bool KmHost::iwn_forward(const std::vector<KeyBlock>& units, const kma::SaeFiling& sae,
                         std::function<void(const std::string&, const std::string&)> answer) {
  const auto* state = core_.iwn(km_id_);
  if (state == nullptr || !state->client_tls) return false;
  const auto& remote = state->pair.remote_saes;
  if (std::find(remote.begin(), remote.end(), sae.slave_sae) == remote.end()) return false;

  // The ETSI keys exactly as the master SAE received them (same grouping, same key_IDs).
  kxi::TransferRequest req;
  req.initiator_sae = sae.master_sae;
  req.target_sae = sae.slave_sae;
  req.transfer_id = key_id_to_string(new_key_id());
  auto grouped = group_units(units, sae.key_bits, sae.master_sae, sae.slave_sae);
  // The KSA key check (docs/hybrid.md) over the keys as the target SAE gets them: the source KM
  // hands them to the master SAE only if its own value matches.
  const std::string key_check = ksa_key_check(grouped, sae.master_sae, sae.slave_sae);
  for (auto& k : grouped) {
    req.keys.push_back(kxi::Key{std::move(k.key_id), std::move(k.bytes), std::nullopt});
  }
  std::string body = kxi::encode_request(req);
  std::vector<std::string> ids;
  ids.reserve(req.keys.size());
  for (const auto& k : req.keys) ids.push_back(k.key_id);
  req.keys.clear();  // key memory: wiped now
  const std::string transfer_id = *req.transfer_id;
  const std::string path = kxi::path(sae.master_sae, sae.slave_sae);
  const IwnPair pair = state->pair;
  auto* tls = state->client_tls.get();
  const auto timeout = core_.config().kxi_timeout;
  const std::string& master = sae.master_sae;
  const std::string& slave = sae.slave_sae;
  const auto bits = sae.key_bits;
  ++iwn_stats_.sent_attempts;
  log_line(LogLevel::kInfo, "KM " + km_id_ + ": kxi transfer " + transfer_id + " of " +
                                std::to_string(ids.size()) + " keys (" + std::to_string(bits) +
                                " bits) for " + master + " -> " + slave + " to " +
                                pair.partner_km_id + " (" + pair.partner_qkdn_id + ")");
  ck::IwnTransferRequest ask;
  ask.transfer_id = transfer_id;
  ask.kma_id = km_id_;
  ask.partner_kma_id = pair.partner_km_id;
  ask.partner_qkdn_id = pair.partner_qkdn_id;
  ask.application_source_id = master;
  ask.application_destination_id = slave;
  ask.number_of_keys = static_cast<std::int64_t>(ids.size());
  ask.key_size = bits;
  ask.key_ids = ids;
  spawn(
      [](KmHost* self, net::ssl::context* ctx, IwnPair p, std::string target, std::string b,
         std::chrono::milliseconds t, ck::IwnTransferRequest q,
         std::function<void(const std::string&, const std::string&)> done,
         std::string check) -> net::awaitable<void> {
        // 1. The controller decides (Y.3818 9.2 1): the keys go only where it says.
        auto decision_op = self->iwn_decision(q, t);
        std::string refusal = co_await std::move(decision_op);
        if (!refusal.empty()) {
          OPENSSL_cleanse(b.data(), b.size());
          ++self->iwn_stats_.sent_failed;
          log_line(LogLevel::kWarn,
                   "KM " + self->km_id_ + ": kxi transfer " + q.transfer_id + ": " + refusal);
          done(refusal, {});
          co_return;
        }
        // 2. The transfer over Kxi' (the body is wiped by kxi_send).
        auto op = kxi_send(self->strand_, *ctx, p, std::move(target), std::move(b), t);
        const KxiOutcome out = co_await std::move(op);
        std::string response = "OK";
        if (out.delivered) {
          ++self->iwn_stats_.sent_ok;
          self->iwn_stats_.keys_sent += q.number_of_keys;
        } else {
          ++self->iwn_stats_.sent_failed;
          std::string why = out.message;
          for (const auto& [name, text] : out.details) {
            why += "; ";
            why += name;
            why += ": ";
            why += text;
          }
          response = "NG: peer_unreachable: kxi transfer to " + p.partner_km_id +
                     (out.status != 0 ? " answered " + std::to_string(out.status) : "") + ": " +
                     why;
        }
        log_line(out.delivered ? LogLevel::kInfo : LogLevel::kWarn,
                 "KM " + self->km_id_ + ": kxi transfer " + q.transfer_id + ": " + response);
        // 3. The metadata to the controller; this KM keeps no copy either way ("deleted").
        self->iwn_report(q, "sender", response, "deleted");
        done(response, out.delivered ? check : std::string{});
      }(this, tls, pair, path, std::move(body), timeout, std::move(ask), std::move(answer),
                            key_check),
      "kxi transfer");
  return true;
}

net::awaitable<std::string> KmHost::iwn_decision(ck::IwnTransferRequest request,
                                                 std::chrono::milliseconds timeout) {
  auto channel = channel_;
  if (!channel || !registered_) co_return "NG: controller unreachable: no decision on the transfer";
  const std::string transfer_id = request.transfer_id;
  const std::vector<std::string> ids = request.key_ids;
  std::optional<ck::Frame> frame;
  try {
    auto op = channel->request(ck::Message{std::move(request)}, timeout);
    frame = co_await std::move(op);
  } catch (const std::exception& e) {
    co_return std::string("NG: timeout: no transfer decision from the controller: ") + e.what();
  }
  auto decoded = ck::decode_payload(frame->command, frame->payload);
  auto* m = std::get_if<ck::Message>(&decoded);
  if (m == nullptr) co_return "NG: bad_request: malformed transfer decision";
  if (auto* e = std::get_if<ck::ErrorMessage>(m)) {
    co_return "NG: " + e->error + ": " + e->message.value_or("controller refused the transfer");
  }
  auto* d = std::get_if<ck::IwnTransferInstruction>(m);
  if (d == nullptr || d->transfer_id != transfer_id) {
    co_return "NG: bad_request: unexpected answer to the transfer request";
  }
  if (d->response != "OK") co_return d->response;
  const auto* state = core_.iwn(km_id_);
  if (state == nullptr ||
      d->partner_kma_id.value_or(state->pair.partner_km_id) != state->pair.partner_km_id) {
    co_return "NG: unknown_kma: the controller named another partner than this IWN's";
  }
  if (d->key_ids && *d->key_ids != ids) {
    co_return "NG: bad_request: the controller named other keys than those held";
  }
  co_return std::string();
}

void KmHost::iwn_report(const ck::IwnTransferRequest& what, const std::string& role,
                        const std::string& response, const std::string& disposition) {
  auto channel = channel_;
  if (!channel || !registered_) {
    log_line(LogLevel::kWarn, "KM " + km_id_ + ": kxi transfer " + what.transfer_id +
                                  ": controller unreachable, report not sent");
    return;
  }
  ck::IwnTransferReport r;
  r.transfer_id = what.transfer_id;
  r.kma_id = km_id_;
  r.role = role;
  r.partner_kma_id = what.partner_kma_id;
  r.partner_qkdn_id = what.partner_qkdn_id;
  r.application_source_id = what.application_source_id;
  r.application_destination_id = what.application_destination_id;
  r.number_of_keys = what.number_of_keys;
  r.key_size = what.key_size;
  r.key_ids = what.key_ids;
  r.response = response;
  r.disposition = disposition;
  channel->send(ck::Message{std::move(r)});
}

// ---- KmHost: receiving side --------------------------------------------------------------------

net::awaitable<kxi::Answer> KmHost::kxi_receive(std::string partner_km,
                                                kxi::TransferRequest request) {
  // The metadata this KM reports to its controller (Y.3818 9.2 1), never the key bytes.
  ck::IwnTransferRequest meta;
  meta.transfer_id = request.transfer_id.value_or(key_id_to_string(new_key_id()));
  meta.partner_kma_id = partner_km;
  if (const auto* st = core_.iwn(km_id_)) meta.partner_qkdn_id = st->pair.partner_qkdn_id;
  meta.application_source_id = request.initiator_sae;
  meta.application_destination_id = request.target_sae;
  meta.number_of_keys = static_cast<std::int64_t>(request.keys.size());
  meta.key_size =
      request.keys.empty() ? 0 : static_cast<std::int64_t>(request.keys[0].value.size()) * 8;
  for (const auto& k : request.keys) meta.key_ids.push_back(k.key_id);
  auto refuse = [&](int status, std::string message, std::string name, std::string text) {
    ++iwn_stats_.received_refused;
    iwn_report(meta, "receiver", "NG: " + message + ": " + text, "deleted");
    log_line(LogLevel::kWarn, "KM " + km_id_ + ": kxi transfer " +
                                  request.transfer_id.value_or("(no transfer_id)") + " from " +
                                  partner_km + " refused: " + message + ": " + text);
    return kxi::Answer{status, std::move(message), {{std::move(name), std::move(text)}}};
  };
  if (stopping()) co_return refuse(503, "KM shutting down", "km_id", km_id_);
  const auto* state = core_.iwn(km_id_);
  if (state == nullptr || !state->pair.listen_port || state->pair.partner_km_id != partner_km) {
    co_return refuse(401, "unauthorized", "certificate",
                     "KM " + partner_km + " is not the IWN partner of " + km_id_);
  }
  if (std::find(applications_.begin(), applications_.end(), request.initiator_sae) !=
      applications_.end()) {
    co_return refuse(400, "bad initiator SAE", "initiator_SAE_ID",
                     "SAE " + request.initiator_sae + " is served by KM " + km_id_ +
                         " itself, not in the partner's QKDN");
  }
  if (std::find(applications_.begin(), applications_.end(), request.target_sae) ==
      applications_.end()) {
    // Not served here: the last leg inside this QKDN, if the controller relays it.
    auto leg_op = iwn_last_leg(meta, request);
    auto refused = co_await std::move(leg_op);
    if (refused) {
      auto& d = refused->details;
      co_return refuse(refused->status, refused->message, d.empty() ? "target_SAE_ID" : d[0].first,
                       d.empty() ? std::string() : d[0].second);
    }
    ++iwn_stats_.received_ok;
    iwn_stats_.keys_received += static_cast<std::int64_t>(request.keys.size());
    iwn_report(meta, "receiver", "OK", "deleted");  // this KM keeps no copy: relayed on
    log_line(LogLevel::kInfo, "KM " + km_id_ + ": kxi transfer " + meta.transfer_id + " from " +
                                  partner_km + ": " + std::to_string(request.keys.size()) +
                                  " keys relayed on for " + request.initiator_sae + " -> " +
                                  request.target_sae);
    co_return kxi::Answer{
        200, "OK", {{"stored", std::to_string(request.keys.size())}, {"km_id", km_id_}}};
  }
  std::size_t bytes = 0;
  for (const auto& k : request.keys) {
    if (supplied_.contains(k.key_id)) {
      co_return refuse(409, "key already stored", "key_id",
                       "key " + k.key_id + " is already held here");
    }
    bytes += k.value.size();
  }
  const auto waiting =
      supplied_bytes_.contains(request.target_sae) ? supplied_bytes_[request.target_sae] : 0;
  if (waiting + bytes > core_.config().sae_max_waiting_bytes) {
    co_return refuse(503, "too many keys waiting", "target_SAE_ID",
                     "SAE " + request.target_sae + " has " + std::to_string(waiting) +
                         " bytes of keys not fetched yet (limit " +
                         std::to_string(core_.config().sae_max_waiting_bytes) + ")");
  }
  const auto expires = std::chrono::steady_clock::now() + core_.config().supplied_key_ttl;
  for (auto& k : request.keys) {
    SuppliedKey s;
    s.master_sae = request.initiator_sae;
    s.slave_sae = request.target_sae;
    s.bytes = std::move(k.value);
    s.expires = expires;
    supplied_expiry_.emplace_back(expires, k.key_id);
    supplied_bytes_[request.target_sae] += s.bytes.size();
    supplied_.emplace(k.key_id, std::move(s));
  }
  ++iwn_stats_.received_ok;
  iwn_stats_.keys_received += static_cast<std::int64_t>(request.keys.size());
  iwn_report(meta, "receiver", "OK", "stored");
  log_line(LogLevel::kInfo, "KM " + km_id_ + ": kxi transfer " +
                                request.transfer_id.value_or("(no transfer_id)") + " from " +
                                partner_km + ": stored " + std::to_string(request.keys.size()) +
                                " keys for " + request.initiator_sae + " -> " + request.target_sae);
  co_return kxi::Answer{
      200, "OK", {{"stored", std::to_string(request.keys.size())}, {"km_id", km_id_}}};
}

net::awaitable<std::optional<kxi::Answer>> KmHost::iwn_last_leg(
    const ck::IwnTransferRequest& meta, const kxi::TransferRequest& request) {
  auto no = [](int status, std::string message, std::string name, std::string text) {
    return std::optional<kxi::Answer>(
        kxi::Answer{status, std::move(message), {{std::move(name), std::move(text)}}});
  };
  const std::string& initiator = request.initiator_sae;
  const std::string& target = request.target_sae;
  const auto key_bytes = request.keys.front().value.size();  // the codec: >= 1 key, one size
  const auto key_bits = static_cast<std::int64_t>(key_bytes) * 8;
  const auto per = static_cast<std::size_t>((key_bits + kKeyBits - 1) / kKeyBits);
  const std::size_t units = per * request.keys.size();
  if (units > static_cast<std::size_t>(limits::kMaxKeysPerRelay)) {
    co_return no(413, "too many keys for the last leg", "keys",
                 std::to_string(units) + " units of 256 bits exceed one relay's " +
                     std::to_string(limits::kMaxKeysPerRelay) + " (SAE " + target +
                     " is behind another KM)");
  }
  // The relay carries 256-bit units; the destination KM files them as ETSI keys whose key_ID
  // it derives from the first unit's ID and the SAE pair (sae_key_id.hpp). The first unit of
  // each key therefore takes the key_ID's first 8 bytes, and the key_ID must be that pair's.
  auto w = std::make_shared<SupplyWait>(strand_);
  w->units.reserve(units);
  for (std::size_t i = 0; i < request.keys.size(); ++i) {
    const auto& k = request.keys[i];
    const auto id = parse_key_id(k.key_id);
    for (std::size_t j = 0; j < per; ++j) {
      KeyBlock b;
      b.id = new_key_id();
      if (j == 0 && id) std::memcpy(b.id.data(), id->data(), 8);
      const std::size_t off = j * kKeyBytes;
      std::memcpy(b.bytes.data(), k.value.data() + off, std::min(kKeyBytes, key_bytes - off));
      w->units.push_back(b);
      OPENSSL_cleanse(b.bytes.data(), b.bytes.size());
    }
    if (!id || etsi_key_id(w->units[i * per].id, initiator, target) != k.key_id) {
      std::string why = "SAE ";
      why += target;
      why += " is behind another KM: its key_IDs must name the SAE pair ";
      why += initiator;
      why += " -> ";
      why += target;
      why += " (docs/kxi.md, sae_key_id)";
      co_return no(400, "key_id not relayable", "keys[" + std::to_string(i) + "].key_id",
                   std::move(why));
    }
  }
  auto channel = channel_;
  if (!channel || !registered_) {
    co_return no(503, "controller unreachable", "target_SAE_ID",
                 "SAE " + target + " is behind another KM and KM " + km_id_ +
                     " has no controller to relay the keys");
  }
  w->master_sae = initiator;
  w->slave_sae = target;
  w->session_id = meta.transfer_id;
  w->key_bits = key_bits;
  ck::KeyRelayRequestNotification n;
  n.source_kma_id = km_id_;
  n.application_destination_id = target;
  n.number_of_keys = static_cast<std::int64_t>(units);
  n.key_size = kKeyBits;
  // The controller's decision (iwn_transfers.cpp): the peer QKDN's policy, its key rate share.
  boost::json::object ext{{"iwn_transfer_id", meta.transfer_id},
                          {"iwn_initiator_sae", initiator},
                          {"iwn_partner_kma_id", meta.partner_kma_id}};
  if (meta.partner_qkdn_id) ext["iwn_partner_qkdn_id"] = *meta.partner_qkdn_id;
  n.extension = boost::json::serialize(boost::json::array{std::move(ext)});
  // Within the sender's wait for this answer (--kxi-timeout-ms on both sides by default).
  const auto deadline = std::chrono::steady_clock::now() + core_.config().kxi_timeout * 3 / 4;
  const std::uint32_t mid = channel->send(ck::Message{std::move(n)});
  waits_by_notification_[mid] = w;
  auto wait = await_wait(w, deadline);
  co_await std::move(wait);
  waits_by_notification_.erase(mid);
  if (!w->relay_id.empty()) waits_by_relay_.erase(w->relay_id);
  if (!w->done) {
    co_return no(503, "timeout", "target_SAE_ID",
                 "the relay to SAE " + target + "'s KM did not finish in time");
  }
  if (w->response != "OK") {
    if (w->ng_status == 400) {
      co_return no(400, "unknown target SAE", "target_SAE_ID",
                   "SAE " + target + " is not served by KM " + km_id_ +
                       " and the controller relays no keys to it: " + w->response);
    }
    co_return no(503, "last leg failed", "target_SAE_ID",
                 "relay to SAE " + target + "'s KM: " + w->response);
  }
  // The destination's key check over the keys as SAE-B gets them (docs/hybrid.md): equal to
  // the keys received, or the transfer fails.
  std::vector<SaeKey> expect;
  expect.reserve(request.keys.size());
  for (const auto& k : request.keys) {
    SaeKey e;
    e.key_id = k.key_id;
    e.bytes = k.value;
    expect.push_back(std::move(e));
  }
  if (!w->key_check.empty() && w->key_check != ksa_key_check(expect, initiator, target)) {
    co_return no(503, "last leg failed", "target_SAE_ID",
                 "the key check of SAE " + target + "'s KM differs from the keys received");
  }
  co_return std::nullopt;
}

net::awaitable<IwnStats> KmHost::iwn_stats() { co_return iwn_stats_; }

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

}  // namespace qkdn::agent
