// Key supply to SAEs at a hosted KM (ETSI GS QKD 014 behind etsi_server.cpp): see sae_keys.hpp.
#include <algorithm>
#include <cstring>
#include <set>

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json.hpp>

#include "km_host.hpp"
#include "kma_messages.hpp"
#include "log.hpp"
#include "qkd_key_meta.hpp"
#include "qkdn/controller/error.hpp"
#include "qkdn/controller/key_limits.hpp"
#include "qkdn/net/run_on.hpp"
#include "sae_key_id.hpp"
#include "sae_keys.hpp"

namespace qkdn::agent {

SaeKey::~SaeKey() {
  if (!bytes.empty()) OPENSSL_cleanse(bytes.data(), bytes.size());
}

// ---- AgentCore: SaeKeyService ----------------------------------------------------------------

SaeLimits AgentCore::limits() const {
  SaeLimits l;
  l.default_key_size = config_.sae_default_key_size;
  l.min_key_size = 64;
  l.max_key_size = config_.sae_max_key_size;
  l.max_key_per_request = config_.sae_max_key_per_request;
  return l;
}

bool AgentCore::serves(const std::string& sae_id) const { return by_sae_.contains(sae_id); }

KmHost* AgentCore::host_of_sae(const std::string& sae_id) const {
  auto it = by_sae_.find(sae_id);
  return it == by_sae_.end() ? nullptr : it->second;
}

net::awaitable<SaeStatus> AgentCore::status(std::string master_sae, std::string slave_sae) {
  KmHost* h = host_of_sae(master_sae);
  if (h == nullptr) {
    SaeStatus s;
    s.status = 401;
    s.message = "SAE " + master_sae + " is not served here";
    co_return s;
  }
  auto op = h->sae_status(std::move(master_sae), std::move(slave_sae));
  auto hop = qkdn::net::run_on(h->strand(), std::move(op));
  auto result = co_await std::move(hop);
  co_return result;
}

net::awaitable<SaeResult> AgentCore::enc_keys(std::string master_sae, std::string slave_sae,
                                              std::int64_t number, std::int64_t size_bits) {
  KmHost* h = host_of_sae(master_sae);
  if (h == nullptr) {
    SaeResult r;
    r.status = 401;
    r.message = "SAE " + master_sae + " is not served here";
    co_return r;
  }
  auto op = h->sae_enc_keys(std::move(master_sae), std::move(slave_sae), number, size_bits);
  auto hop = qkdn::net::run_on(h->strand(), std::move(op));
  auto result = co_await std::move(hop);
  co_return result;
}

net::awaitable<SaeResult> AgentCore::dec_keys(std::string slave_sae, std::string master_sae,
                                              std::vector<std::string> key_ids) {
  KmHost* h = host_of_sae(slave_sae);
  if (h == nullptr) {
    SaeResult r;
    r.status = 401;
    r.message = "SAE " + slave_sae + " is not served here";
    co_return r;
  }
  auto op = h->sae_dec_keys(std::move(slave_sae), std::move(master_sae), std::move(key_ids));
  auto hop = qkdn::net::run_on(h->strand(), std::move(op));
  auto result = co_await std::move(hop);
  co_return result;
}

// ---- KmHost: SAE key supply ------------------------------------------------------------------

namespace {

namespace ck = southbound::ck;
namespace json = boost::json;
constexpr auto kTupleSae = net::as_tuple(net::use_awaitable);

SaeResult fail(int status, std::string message, std::vector<std::string> details = {}) {
  SaeResult r;
  r.status = status;
  r.message = std::move(message);
  r.details = std::move(details);
  return r;
}

// One ETSI call of an SAE in progress (KmHost::sae_admit); ended on the KM's strand, where the
// coroutine that holds it finishes.
struct SaeSlot {
  KmHost* host;
  std::string sae;
  SaeSlot(KmHost* h, std::string s) : host(h), sae(std::move(s)) {}
  SaeSlot(const SaeSlot&) = delete;
  SaeSlot& operator=(const SaeSlot&) = delete;
  ~SaeSlot() { host->end_sae_call(sae); }
};

std::int64_t units_per_key(std::int64_t key_bits) { return (key_bits + kKeyBits - 1) / kKeyBits; }

}  // namespace

/// The ETSI keys made of `units` (256 bits each, in order): ceil(bits/256) units per key,
/// truncated to bits/8 bytes; the key_ID is derived from the first unit's ID and the SAE pair
/// (sae_key_id.hpp). Both ends use this rule (and the IWN, kxi_host.cpp).
std::vector<SaeKey> group_units(const std::vector<KeyBlock>& units, std::int64_t key_bits,
                                const std::string& master_sae, const std::string& slave_sae) {
  // Callers pass a size read and checked where it entered (ETSI request, kma_messages.cpp);
  // a size outside the rule here is a broken invariant, not peer input.
  if (!limits::valid_sae_key_bits(key_bits)) {
    throw Internal("group_units: key size " + std::to_string(key_bits) + " bits");
  }
  std::vector<SaeKey> out;
  const auto per = static_cast<std::size_t>(std::max<std::int64_t>(1, units_per_key(key_bits)));
  const auto bytes = static_cast<std::size_t>(key_bits / 8);
  for (std::size_t i = 0; i + per <= units.size(); i += per) {
    SaeKey k;
    k.key_id = etsi_key_id(units[i].id, master_sae, slave_sae);
    k.bytes.resize(per * kKeyBytes);
    for (std::size_t j = 0; j < per; ++j) {
      std::memcpy(k.bytes.data() + j * kKeyBytes, units[i + j].bytes.data(), kKeyBytes);
    }
    OPENSSL_cleanse(k.bytes.data() + bytes, k.bytes.size() - bytes);
    k.bytes.resize(bytes);
    out.push_back(std::move(k));
  }
  return out;
}

namespace {

std::string suite_of_offer(const hybrid::Initiator& kex) {
  const auto offer = kex.offer();
  return std::string(offer.at("suite").as_string());
}

std::string supply_ack(const std::string& id, const std::string& response,
                       const std::string& exchange = {}, const std::string& key_check = {}) {
  json::object o{{"supply_id", id}, {"response", response}};
  if (!key_check.empty()) o["key_check"] = key_check;
  if (!exchange.empty()) o[hybrid::kFrameField] = json::parse(exchange);
  return kma::encode_frame(kma::Type::kSupplyAck, json::serialize(o));
}

}  // namespace

KmHost::SuppliedKey::~SuppliedKey() {
  if (!bytes.empty()) OPENSSL_cleanse(bytes.data(), bytes.size());
}

void KmHost::complete_wait(const std::shared_ptr<SupplyWait>& w, std::string response,
                           int ng_status) {
  if (!w || w->done) return;
  w->done = true;
  w->response = std::move(response);
  w->ng_status = ng_status;
  w->timer.cancel();
}

bool KmHost::fail_supply_notification(std::uint32_t message_id, const std::string& code,
                                      const std::string& message) {
  auto it = waits_by_notification_.find(message_id);
  if (it == waits_by_notification_.end()) return false;
  auto w = it->second;
  waits_by_notification_.erase(it);
  const int status = code == ck::errc::kUnknownApplication ? 400 : 503;
  complete_wait(w, "NG: " + code + ": " + message, status);
  return true;
}

void KmHost::fail_supply_notifications(const std::string& why) {
  auto by_notification = std::move(waits_by_notification_);
  waits_by_notification_.clear();
  for (auto& [id, w] : by_notification) complete_wait(w, "NG: " + why, 503);
}

void KmHost::finish_sae_relay(const std::string& request_id, const std::string& response) {
  auto it = waits_by_relay_.find(request_id);
  if (it == waits_by_relay_.end()) return;
  auto w = it->second;
  waits_by_relay_.erase(it);
  if (response == "OK") {
    auto d = delivered_.find(request_id);
    if (d == delivered_.end()) return complete_wait(w, "NG: internal: keys missing", 503);
    w->units = std::move(d->second.keys);
    delivered_.erase(d);
  }
  const int status = response.find(ck::errc::kUnknownApplication) != std::string::npos ? 400 : 503;
  complete_wait(w, response, status);
}

KmHost::Filed KmHost::file_supplied(const std::vector<KeyBlock>& units, std::int64_t key_bits,
                                    const std::string& master_sae, const std::string& slave_sae,
                                    const hybrid::Shared* shared) {
  const auto expires = std::chrono::steady_clock::now() + core_.config().supplied_key_ttl;
  auto keys = group_units(units, key_bits, master_sae, slave_sae);
  if (shared != nullptr) {
    for (auto& k : keys) hybrid::combine(k.bytes, *shared, k.key_id, master_sae, slave_sae);
  }
  Filed filed;
  filed.key_check = ksa_key_check(keys, master_sae, slave_sae);
  if (!keys.empty()) filed.first_key_id = keys.front().key_id;
  for (auto& k : keys) {
    SuppliedKey s;
    s.master_sae = master_sae;
    s.slave_sae = slave_sae;
    s.bytes = std::move(k.bytes);
    s.expires = expires;
    supplied_expiry_.emplace_back(expires, k.key_id);
    if (auto old = supplied_.find(k.key_id); old != supplied_.end()) forget_supplied(old);
    supplied_bytes_[slave_sae] += s.bytes.size();
    supplied_.emplace(k.key_id, std::move(s));
  }
  return filed;
}

void KmHost::forget_supplied(std::unordered_map<std::string, SuppliedKey>::iterator it) {
  if (auto b = supplied_bytes_.find(it->second.slave_sae); b != supplied_bytes_.end()) {
    b->second -= std::min(b->second, it->second.bytes.size());
    if (b->second == 0) supplied_bytes_.erase(b);
  }
  supplied_.erase(it);
}

std::optional<SaeResult> KmHost::sae_admit(const std::string& sae) {
  const auto& cfg = core_.config();
  auto it = sae_guards_.find(sae);
  if (it == sae_guards_.end()) {
    it = sae_guards_
             .emplace(sae, SaeGuard{qkdn::net::TokenBucket(cfg.sae_max_requests_per_s,
                                                           cfg.sae_max_requests_per_s),
                                    0})
             .first;
  }
  auto& g = it->second;
  const auto now = std::chrono::steady_clock::now();
  if (!g.bucket.try_take(now)) {
    auto r = fail(503, "rate limit",
                  {"SAE " + sae + " is over its rate of " +
                   std::to_string(static_cast<std::int64_t>(cfg.sae_max_requests_per_s)) +
                   " requests per second"});
    r.retry_after_s = 1;
    return r;
  }
  if (g.in_flight >= cfg.sae_max_concurrent) {
    auto r = fail(503, "too many requests in progress",
                  {"SAE " + sae + " has " + std::to_string(g.in_flight) + " requests in progress"});
    r.retry_after_s = 1;
    return r;
  }
  ++g.in_flight;
  return std::nullopt;
}

void KmHost::end_sae_call(const std::string& sae) {
  if (auto it = sae_guards_.find(sae); it != sae_guards_.end() && it->second.in_flight > 0) {
    --it->second.in_flight;
  }
}

void KmHost::on_supply_frame(LinkEnd& link, const std::shared_ptr<KmaSession>& session,
                             const std::string& payload) {
  const std::string id = kma::request_id_of(payload, "supply_id");
  auto answer = [&](const std::string& response) {
    session->send(supply_ack(id, response));
    if (response != "OK")
      log_line(LogLevel::kWarn, "KM " + km_id_ + ": supply " + id + ": " + response);
  };
  std::optional<kma::Supply> s;
  try {
    s = kma::parse_supply(payload);
  } catch (const kma::BadMessage& e) {
    return answer(std::string("NG: bad_request: malformed supply frame: ") + e.what());
  }
  std::optional<hybrid::Shared> shared;
  std::string exchange;
  const auto refusal = accept_combination(s->sae.master_sae, s->sae.slave_sae,
                                          hybrid::exchange_of(payload), shared, exchange);
  auto keys = link.store.take(s->key_ids, false);  // taken whatever follows: never used twice
  if (!keys) return answer("NG: unknown_key: link keys not available at " + km_id_);
  link.keys_consumed += static_cast<std::int64_t>(keys->size());
  if (!refusal.empty()) return answer(refusal);
  // An SAE of the IWN partner's QKDN: acknowledged once the partner stored the keys (kxi_host),
  // as QKD keys (no key combination across the interworking node).
  if (iwn_forward(*keys, s->sae, [session, id](const std::string& r, const std::string& check) {
        session->send(supply_ack(id, r, {}, check));
      })) {
    return;
  }
  const auto filed = file_supplied(*keys, s->sae.key_bits, s->sae.master_sae, s->sae.slave_sae,
                                   shared ? &*shared : nullptr);
  auto rec =
      slave_delivery(s->sae, link.peer_km, "adjacent", shared, keys->size(), filed.first_key_id);
  rec.qkd_keys = qkd_key_metadata(link.store, *keys);
  record_delivery(std::move(rec));
  session->send(supply_ack(id, "OK", exchange, filed.key_check));
}

void KmHost::on_supply_ack(const std::string& payload) {
  kma::Ack ack;
  try {
    ack = kma::parse_ack(payload, "supply_id");
  } catch (const kma::BadMessage& e) {
    ack.id = kma::request_id_of(payload, "supply_id");
    ack.response = std::string("NG: bad_request: malformed supply answer: ") + e.what();
  }
  auto it = waits_by_relay_.find(ack.id);
  if (it == waits_by_relay_.end()) return;
  auto w = it->second;
  waits_by_relay_.erase(it);
  w->kex_answer = hybrid::exchange_of(payload);
  w->key_check = hybrid::string_of(payload, "key_check");
  complete_wait(w, ack.response, 503);
}

net::awaitable<std::size_t> KmHost::supplied_key_count() { co_return supplied_.size(); }

void KmHost::abort_sae_supply() {
  auto by_notification = std::move(waits_by_notification_);
  auto by_relay = std::move(waits_by_relay_);
  for (auto& [id, w] : by_notification) complete_wait(w, "NG: KM shutting down", 503);
  for (auto& [id, w] : by_relay) complete_wait(w, "NG: KM shutting down", 503);
  supplied_.clear();
  supplied_bytes_.clear();
  supplied_expiry_.clear();
  sae_sessions_.clear();
  wipe_prepositioned();
}

void KmHost::expire_sae_supply(SteadyTime now) {
  while (!supplied_expiry_.empty() && now >= supplied_expiry_.front().first) {
    // Fetched keys are gone already; a key filed again under the same ID has a later expiry.
    auto it = supplied_.find(supplied_expiry_.front().second);
    if (it != supplied_.end() && now >= it->second.expires) forget_supplied(it);
    supplied_expiry_.pop_front();
  }
}

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"  // GCC 12 false positive on coroutines
#endif

net::awaitable<void> KmHost::await_wait(std::shared_ptr<SupplyWait> w, SteadyTime deadline) {
  if (w->done) co_return;
  w->timer.expires_at(deadline);
  auto wait_op = w->timer.async_wait(kTupleSae);
  co_await std::move(wait_op);
}

net::awaitable<std::optional<KmHost::SaeSession>> KmHost::sae_session(const std::string& master,
                                                                      const std::string& slave,
                                                                      bool renew,
                                                                      SaeResult& error) {
  const auto key = std::make_pair(master, slave);
  if (!renew) {
    if (auto it = sae_sessions_.find(key); it != sae_sessions_.end()) co_return it->second;
  }
  sae_sessions_.erase(key);
  auto channel = channel_;
  if (!channel || !registered_) {
    error = fail(503, "controller unreachable");
    co_return std::nullopt;
  }
  ck::SessionCreationRequest req;
  req.application_source_id = master;
  req.application_destination_id = slave;
  std::optional<ck::Frame> frame;
  try {
    auto op = channel->request(ck::Message{std::move(req)}, core_.config().supply_timeout);
    frame = co_await std::move(op);
  } catch (const std::exception& e) {
    error = fail(503, std::string("session creation failed: ") + e.what());
    co_return std::nullopt;
  }
  auto decoded = ck::decode_payload(frame->command, frame->payload);
  auto* m = std::get_if<ck::Message>(&decoded);
  if (m == nullptr) {
    error = fail(503, "malformed session answer");
    co_return std::nullopt;
  }
  if (auto* e = std::get_if<ck::ErrorMessage>(m)) {
    error = fail(e->error == ck::errc::kUnknownApplication ? 400 : 503,
                 e->error == ck::errc::kUnknownApplication ? "unknown SAE" : "session refused",
                 {e->error + ": " + e->message.value_or("")});
    co_return std::nullopt;
  }
  auto* resp = std::get_if<ck::SessionCreationResponse>(m);
  if (resp == nullptr) {
    error = fail(503, "unexpected session answer");
    co_return std::nullopt;
  }
  if (resp->response != "OK") {
    const bool unknown = resp->response.find(ck::errc::kUnknownApplication) != std::string::npos;
    error =
        fail(unknown ? 400 : 503, unknown ? "unknown SAE" : "session refused", {resp->response});
    co_return std::nullopt;
  }
  SaeSession s{resp->session_id, resp->destination_km_id};
  sae_sessions_[key] = s;
  co_return s;
}

net::awaitable<SaeResult> KmHost::sae_enc_keys(std::string master_sae, std::string slave_sae,
                                               std::int64_t number, std::int64_t size_bits) {
  const auto deadline = std::chrono::steady_clock::now() + core_.config().supply_timeout;
  if (stopping()) co_return fail(503, "KM shutting down");
  if (auto refused = sae_admit(master_sae)) co_return std::move(*refused);
  const SaeSlot slot{this, master_sae};
  if (number < 1 || number > limits::kMaxKeysPerSupply || !limits::valid_sae_key_bits(size_bits)) {
    co_return fail(400, "bad number or size");
  }
  const std::int64_t units = number * units_per_key(size_bits);
  if (units > limits::kMaxKeysPerSupply) {  // the bound a peer KM applies to Supply and Claim
    co_return fail(400, "too many keys for one request",
                   {"at most " + std::to_string(limits::kMaxKeysPerSupply) + " x 256 bits"});
  }
  SaeResult error;
  auto op = sae_session(master_sae, slave_sae, false, error);
  auto session = co_await std::move(op);
  if (!session) co_return error;
  const std::string dst = session->destination_km;

  auto w = std::make_shared<SupplyWait>(strand_);
  w->master_sae = master_sae;
  w->slave_sae = slave_sae;
  w->session_id = session->session_id;
  w->key_bits = size_bits;
  // Key combination (docs/hybrid.md): `hybrid` pairs exchange ephemeral keys with the
  // destination KM in the frames that deliver the units; a local pair has no network path.
  const bool hybrid_pair = dst != km_id_ && core_.config().key_combination.of(
                                                master_sae, slave_sae) == hybrid::Mode::kHybrid;
  auto new_kex = [&]() -> std::shared_ptr<hybrid::Initiator> {
    if (!hybrid_pair) return nullptr;
    return std::make_shared<hybrid::Initiator>();
  };
  // How a relay was routed (docs/key-supply.md "Distributed relay").
  std::string routing = "centralized";
  // The keys for the master SAE, combined when hybrid, and the delivery recorded.
  // Y.3803 Table 1 (1) of the link keys an adjacent delivery consumed (set before deliver).
  std::optional<DeliveryRecord::QkdKeys> qkd_keys;
  auto deliver = [&](const SupplyWait& done, const std::vector<KeyBlock>& delivered,
                     const std::string& path) -> SaeResult {
    SaeResult r;
    r.keys = group_units(delivered, size_bits, master_sae, slave_sae);
    std::string why;
    if (!finish_combination(done, r.keys, why)) {
      return fail(503, "key combination failed", {why});
    }
    // KSA key check (Y.3803 8.2.4): the destination's value over the keys it filed must be
    // ours before the master SAE gets them; a local pair has no second KSA.
    if (path != "local") {
      const auto mine = ksa_key_check(r.keys, master_sae, slave_sae);
      if (done.key_check.size() != mine.size() ||
          CRYPTO_memcmp(done.key_check.data(), mine.data(), mine.size()) != 0) {
        log_line(LogLevel::kWarn, "KM " + km_id_ + ": key check with KM " + dst + " failed for " +
                                      master_sae + "->" + slave_sae + " (" + path + ")");
        return fail(
            503, "key check failed",
            {done.key_check.empty() ? "KM " + dst + " answered without a key check value"
                                    : "the keys at KM " + dst + " do not match the keys here"});
      }
    }
    DeliveryRecord rec;
    rec.role = "master";
    rec.master_sae = master_sae;
    rec.slave_sae = slave_sae;
    rec.peer_km = dst;
    rec.path = path;
    rec.mode = done.kex ? "hybrid" : "qkd";
    rec.suite = done.kex ? suite_of_offer(*done.kex) : std::string{};
    rec.keys = static_cast<std::int64_t>(r.keys.size());
    rec.key_bits = size_bits;
    rec.first_key_id = r.keys.empty() ? std::string{} : r.keys.front().key_id;
    rec.key_check = path == "local" ? "none" : "verified";
    rec.qkd_keys = qkd_keys;
    if (path == "relay") {
      rec.relay_routing = routing;
      rec.relay_scheme =
          relay::scheme_name(done.gcm_units > 0 ? relay::Scheme::kAesGcm : relay::Scheme::kOtp);
    }
    record_delivery(std::move(rec));
    return r;
  };

  if (dst == km_id_) {  // both SAEs here: fresh random keys, filed for the slave too
    // Memory bound: keys wait here until the slave fetches them (or their TTL), so a master
    // calling in a loop could grow them without limit.
    const auto add = static_cast<std::size_t>(number) * static_cast<std::size_t>(size_bits / 8);
    const auto waiting = supplied_bytes_.contains(slave_sae) ? supplied_bytes_[slave_sae] : 0;
    if (waiting + add > core_.config().sae_max_waiting_bytes) {
      auto r = fail(503, "too many keys waiting",
                    {"SAE " + slave_sae + " has " + std::to_string(waiting) +
                     " bytes of keys not fetched yet (limit " +
                     std::to_string(core_.config().sae_max_waiting_bytes) + ")"});
      r.retry_after_s = 1;
      co_return r;
    }
    std::vector<KeyBlock> keys(static_cast<std::size_t>(units));
    const auto created = std::chrono::system_clock::now();
    for (auto& k : keys) {
      if (RAND_bytes(k.bytes.data(), static_cast<int>(k.bytes.size())) != 1) {
        co_return fail(503, "random generator failed");
      }
      k.id = new_key_id();
      k.created = created;
    }
    file_supplied(keys, size_bits, master_sae, slave_sae);
    co_return deliver(*w, keys, "local");
  }

  // Pre-positioned units (relay instructions) first: no relay, one Claim along the pool's route;
  // the SAE gets the keys once the destination filed them. Short pool or failed claim: go on.
  if (auto pool = prepositioned_.find({km_id_, dst});
      pool != prepositioned_.end() &&
      static_cast<std::int64_t>(pool->second.units.size()) >= units) {
    std::vector<KeyBlock> claimed;
    claimed.reserve(static_cast<std::size_t>(units));
    for (std::int64_t i = 0; i < units; ++i)
      claimed.push_back(pool->second.units[static_cast<std::size_t>(i)].key);
    const std::string claim_id = km_id_ + "-" + key_id_to_string(new_key_id());
    auto cw = std::make_shared<SupplyWait>(strand_);
    cw->master_sae = master_sae;
    cw->slave_sae = slave_sae;
    cw->kex = new_kex();
    if (send_claim(claim_id, pool->second, claimed, master_sae, slave_sae, session->session_id,
                   size_bits, cw->kex ? json::serialize(cw->kex->offer()) : std::string{})) {
      // Taken whatever the answer: a unit the destination may have filed is never reused.
      pool->second.units.erase(pool->second.units.begin(),
                               pool->second.units.begin() + static_cast<std::ptrdiff_t>(units));
      waits_by_relay_[claim_id] = cw;
      auto wait = await_wait(cw, deadline);
      co_await std::move(wait);
      waits_by_relay_.erase(claim_id);
      if (cw->done && cw->response == "OK") co_return deliver(*cw, claimed, "pool");
      log_line(LogLevel::kWarn, "KM " + km_id_ + ": claim " + claim_id + " to " + dst + ": " +
                                    (cw->done ? cw->response : std::string("timeout")));
      if (stopping() || std::chrono::steady_clock::now() >= deadline) {
        co_return fail(503, "timeout", {"claim to KM " + dst + " did not finish in time"});
      }
    }
  }

  LinkEnd* link = hop_link(dst, std::nullopt);
  if (link != nullptr && link->up()) {  // adjacent: this link's keys, taken at both ends
    auto ids = link->store.reserve(static_cast<std::size_t>(units), link->primary ? 0 : 1,
                                   std::chrono::steady_clock::now());
    if (ids.empty()) {
      co_return fail(503, "insufficient keys",
                     {std::to_string(units) + " keys of 256 bits needed on " + link->link_id});
    }
    link->store.allocate(ids);
    auto keys = link->store.take(ids, true);
    if (!keys) co_return fail(503, "internal: link keys vanished");
    link->keys_consumed += static_cast<std::int64_t>(keys->size());
    qkd_keys = qkd_key_metadata(link->store, *keys);
    const std::string supply_id = km_id_ + "-" + key_id_to_string(new_key_id());
    json::array id_text;
    for (const auto& k : *keys) id_text.emplace_back(key_id_to_string(k.id));
    json::object frame{{"supply_id", supply_id}, {"master_sae", master_sae},
                       {"slave_sae", slave_sae}, {"session_id", session->session_id},
                       {"key_bits", size_bits},  {"key_ids", std::move(id_text)}};
    w->kex = new_kex();
    if (w->kex) frame[hybrid::kFrameField] = w->kex->offer();
    w->units = std::move(*keys);
    waits_by_relay_[supply_id] = w;
    link->session->send(kma::encode_frame(kma::Type::kSupply, json::serialize(frame)));
    auto wait = await_wait(w, deadline);
    co_await std::move(wait);
    waits_by_relay_.erase(supply_id);
    if (!w->done) co_return fail(503, "timeout", {"no answer from KM " + dst});
    if (w->response != "OK") co_return fail(503, "supply failed", {w->response});
    co_return deliver(*w, w->units, "adjacent");
  }

  // Elsewhere: a key relay through the controller (0x1403 -> 0x4104 -> KMA relay).
  if (units > limits::kMaxKeysPerRelay) {
    co_return fail(400, "too many keys for one relay",
                   {"at most " + std::to_string(limits::kMaxKeysPerRelay) + " x 256 bits"});
  }
  if (distributed_relay_) {  // Q.4164 7.1: hop by hop, each KM asks 0x1401 (distributed_relay.cpp)
    routing = "distributed";
    if (core_.config().relay_scheme.of(master_sae, slave_sae) == relay::Scheme::kAesGcm) {
      w->gcm_units = units;
    }
    w->kex = new_kex();
    auto start = distributed_start(w, dst, units);
    const std::string refused = co_await std::move(start);
    if (!refused.empty()) {
      sae_sessions_.erase({master_sae, slave_sae});  // the next request asks for a new session
      const bool unknown = refused.rfind(ck::errc::kUnknownApplication, 0) == 0;
      co_return fail(unknown ? 400 : 503, unknown ? "unknown SAE" : "relay failed",
                     {"distributed relay to KM " + dst + ": NG: " + refused});
    }
    auto wait = await_wait(w, deadline);
    co_await std::move(wait);
    waits_by_relay_.erase(w->relay_id);
    if (!w->done) {
      co_return fail(503, "timeout",
                     {"distributed relay to KM " + dst + " did not finish in time"});
    }
    if (w->response != "OK") {
      sae_sessions_.erase({master_sae, slave_sae});
      co_return fail(503, "relay failed", {"distributed relay to KM " + dst + ": " + w->response});
    }
    co_return deliver(*w, w->units, "relay");
  }
  auto channel = channel_;
  if (!channel || !registered_) co_return fail(503, "controller unreachable");
  ck::KeyRelayRequestNotification n;
  n.source_kma_id = km_id_;
  n.destination_kma_id = dst;
  n.application_destination_id = slave_sae;
  n.number_of_keys = units;
  n.key_size = kKeyBits;
  // The SAE pair the relay serves: the controller applies its route constraints
  // (docs/ck-extensions.md "Key relay").
  json::object ext{{"application_source_id", master_sae}};
  if (core_.config().relay_scheme.of(master_sae, slave_sae) == relay::Scheme::kAesGcm) {
    // One hop key per hop keys an AES-256-GCM encryption of every unit (relay_scheme.hpp).
    n.number_of_keys = 1;
    ext[relay::kSchemeField] = relay::scheme_name(relay::Scheme::kAesGcm);
    ext[relay::kKeysField] = units;
    w->gcm_units = units;
  }
  n.extension = json::serialize(json::array{std::move(ext)});
  w->kex = new_kex();  // on_relay_request puts its offer in the relay metadata
  const std::uint32_t mid = channel->send(ck::Message{std::move(n)});
  waits_by_notification_[mid] = w;
  auto wait = await_wait(w, deadline);
  co_await std::move(wait);
  waits_by_notification_.erase(mid);
  if (!w->relay_id.empty()) waits_by_relay_.erase(w->relay_id);
  if (!w->done) co_return fail(503, "timeout", {"relay to KM " + dst + " did not finish in time"});
  if (w->response != "OK") {
    sae_sessions_.erase({master_sae, slave_sae});  // the next request asks for a new session
    co_return fail(w->ng_status, w->ng_status == 400 ? "unknown SAE" : "relay failed",
                   {w->response});
  }
  co_return deliver(*w, w->units, "relay");
}

net::awaitable<SaeResult> KmHost::sae_dec_keys(std::string slave_sae, std::string master_sae,
                                               std::vector<std::string> key_ids) {
  if (auto refused = sae_admit(slave_sae)) co_return std::move(*refused);
  const SaeSlot slot{this, slave_sae};
  // ETSI GS QKD 014 5.3: 401 for keys issued to another SAE pair (decided from the key_ID
  // itself, so also for keys this KM never held: sae_key_id.hpp), 400 "one or more keys
  // specified are not found on KME" for this pair's keys that are gone or never were. A 401
  // lists no key ID (no existence oracle); all or nothing.
  std::vector<std::string> unknown;
  std::vector<std::string> duplicate;
  bool foreign = false;
  std::set<std::string> seen;
  for (const auto& id : key_ids) {
    if (!seen.insert(id).second) {
      duplicate.push_back(id);
      continue;
    }
    auto it = supplied_.find(id);
    if (it != supplied_.end()) {
      if (it->second.slave_sae != slave_sae || it->second.master_sae != master_sae) foreign = true;
    } else if (classify_key_id(id, master_sae, slave_sae, core_.sae_ids()) ==
               KeyIdOwner::kOtherPair) {
      foreign = true;
    } else {
      unknown.push_back(id);
    }
  }
  if (key_ids.empty()) co_return fail(400, "no key IDs");
  if (foreign) {
    co_return fail(
        401, "unauthorized",
        {"one or more key IDs were not issued by SAE " + master_sae + " to SAE " + slave_sae});
  }
  if (!unknown.empty() || !duplicate.empty()) {
    std::vector<std::string> details;
    details.reserve(unknown.size() + duplicate.size());
    for (const auto& id : unknown) details.push_back("key_ID " + id + " not found");
    for (const auto& id : duplicate) details.push_back("duplicate key_ID " + id);
    co_return fail(400, "one or more keys specified are not found on KME", std::move(details));
  }
  SaeResult r;
  for (const auto& id : key_ids) {
    auto it = supplied_.find(id);
    SaeKey k;
    k.key_id = id;
    k.bytes = it->second.bytes;  // copied: forget_supplied counts (and the key wipes) the original
    r.keys.push_back(std::move(k));
    forget_supplied(it);
  }
  co_return r;
}

net::awaitable<SaeStatus> KmHost::sae_status(std::string master_sae, std::string slave_sae) {
  SaeStatus s;
  if (auto refused = sae_admit(master_sae)) {
    s.status = refused->status;
    s.message = refused->message;
    s.retry_after_s = refused->retry_after_s;
    co_return s;
  }
  const SaeSlot slot{this, master_sae};
  const auto& cfg = core_.config();
  s.source_kme_id = km_id_;
  s.key_size = cfg.sae_default_key_size;
  s.max_key_per_request = cfg.sae_max_key_per_request;
  s.max_key_size = cfg.sae_max_key_size;
  s.min_key_size = 64;
  s.max_key_count = cfg.sae_max_key_per_request;
  std::string dst;
  if (auto it = sae_sessions_.find({master_sae, slave_sae}); it != sae_sessions_.end()) {
    dst = it->second.destination_km;
  } else {
    for (const auto& a : cfg.topology.applications) {
      if (a.sae_id == slave_sae) dst = a.km_id;
    }
  }
  if (dst.empty()) {
    s.status = 400;
    s.message = "unknown SAE " + slave_sae;
    co_return s;
  }
  s.target_kme_id = dst;
  const std::int64_t per = units_per_key(s.key_size);
  if (LinkEnd* link = hop_link(dst, std::nullopt); link != nullptr && link->up()) {
    // This end supplies from its own parity half (KeyStore::reserve).
    s.stored_key_count =
        static_cast<std::int64_t>(link->store.available_parity(link->primary ? 0 : 1)) / per;
    s.max_key_count = link->store.capacity_bits_per_half() / kKeyBits / per;
  }
  // Pre-positioned keys for this KM pair (relay instructions) count too.
  if (auto pool = prepositioned_.find({km_id_, dst}); pool != prepositioned_.end()) {
    s.stored_key_count += static_cast<std::int64_t>(pool->second.units.size()) / per;
  }
  co_return s;
}

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

}  // namespace qkdn::agent
