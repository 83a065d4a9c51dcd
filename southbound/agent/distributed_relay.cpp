// Distributed key relay (ITU-T Q.4164 clause 7.1): the network's relay routing policy is
// "distributed" (controller --relay-routing distributed, sent in the register response). The
// source KM asks the controller for its next hop (0x1401), takes hop keys of its own parity on
// that link (reserved, allocated and consumed at once, on its strand: nothing stays reserved),
// and sends the usual KMA Relay frame with the route so far. Each transit KM decrypts, asks its
// own next hop (0x1401 with source_kma_id = the relay's source and the KMs already visited),
// takes its own hop keys and forwards. The destination files the keys as for a centralized
// relay; RelayAck travels back the same way. docs/key-supply.md "Distributed relay".
// Everything here runs on the KM's strand. Key bytes never reach a log or the controller.
#include <algorithm>
#include <memory>
#include <utility>

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <boost/json.hpp>

#include "km_host.hpp"
#include "kma_messages.hpp"
#include "log.hpp"
#include "qkdn/controller/key_limits.hpp"
#include "relay_frames.hpp"

namespace qkdn::agent {

namespace ck = southbound::ck;
namespace json = boost::json;
using namespace std::chrono_literals;

namespace {

/// As key_supply.cpp: a source answers "NG: timeout" when the route has not answered by then.
constexpr auto kRelayTimeout = 10s;
/// Most KMs a distributed relay may pass (the route field's bound).
constexpr std::size_t kMaxHops = kma::kMaxRouteKms - 1;

void wipe(std::vector<std::uint8_t>& v) {
  if (!v.empty()) OPENSSL_cleanse(v.data(), v.size());
}

json::array to_array(const std::vector<std::string>& v) {
  json::array a;
  for (const auto& s : v) a.emplace_back(s);
  return a;
}

json::object hop_ref(const std::string& from, const std::string& to, const LinkEnd& link,
                     const std::vector<KeyBlock>& keys) {
  json::array ids;
  for (const auto& k : keys) ids.emplace_back(key_id_to_string(k.id));
  return json::object{{"kma_id", from},
                      {"next_kma_id", to},
                      {"link_id", link.link_id},
                      {"key_ids", std::move(ids)}};
}

}  // namespace

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"  // GCC 12 false positive on coroutines
#endif

net::awaitable<std::pair<std::vector<std::string>, std::string>> KmHost::ask_next_hops(
    std::string source, std::string dst, std::string master_sae, std::string slave_sae,
    std::vector<std::string> visited) {
  using Out = std::pair<std::vector<std::string>, std::string>;
  auto channel = channel_;
  if (!channel || !registered_) co_return Out{{}, "controller_unreachable: no Ck connection"};
  ck::KeyRelayNextHopRequest req;
  if (source != km_id_) req.source_kma_id = source;
  req.destination_kma_id = dst;
  json::object ext{{"visited_kma_ids", to_array(visited)}};
  if (!slave_sae.empty()) {
    req.application_destination_id = slave_sae;
    ext["application_source_id"] = master_sae;  // the SAE pair's route constraints apply
  }
  req.extension = json::serialize(json::array{std::move(ext)});
  std::optional<ck::Frame> frame;
  try {
    auto op = channel->request(ck::Message{std::move(req)}, core_.config().supply_timeout);
    frame = co_await std::move(op);
  } catch (const std::exception& e) {
    co_return Out{{}, std::string("timeout: next hop query: ") + e.what()};
  }
  auto decoded = ck::decode_payload(frame->command, frame->payload);
  auto* m = std::get_if<ck::Message>(&decoded);
  if (m == nullptr) co_return Out{{}, "internal: malformed next hop answer"};
  if (auto* e = std::get_if<ck::ErrorMessage>(m)) {
    co_return Out{{}, e->error + ": " + e->message.value_or("next hop refused")};
  }
  auto* resp = std::get_if<ck::KeyRelayNextHopResponse>(m);
  if (resp == nullptr) co_return Out{{}, "internal: unexpected next hop answer"};
  if (resp->next_kma_ids.empty()) {
    co_return Out{{}, "no_route: the controller knows no next hop from " + km_id_ + " to " + dst};
  }
  co_return Out{resp->next_kma_ids, {}};
}

std::optional<KmHost::TakenHop> KmHost::take_distributed_hop(
    const std::vector<std::string>& candidates, const std::vector<std::string>& visited,
    std::size_t n, const std::string& rid, std::string& why) {
  std::string reasons;
  for (const auto& next : candidates) {
    if (std::find(visited.begin(), visited.end(), next) != visited.end()) {
      reasons += "; " + next + " already on the route";
      continue;
    }
    LinkEnd* link = hop_link(next, std::nullopt);
    if (link == nullptr) {
      reasons += "; no link to " + next;
      continue;
    }
    if (!link->up()) {
      reasons += "; KMA link " + link->link_id + " to " + next + " is down";
      continue;
    }
    // Reserved, allocated and taken at once, own parity (the controller's reservations at this
    // KM use the same store and parity, the peer's the other): never handed out twice, and
    // nothing stays reserved whatever happens next.
    const auto ids = link->store.reserve(n, link->primary ? 0 : 1, std::chrono::steady_clock::now(),
                                         holder_of(rid));
    if (ids.empty()) {
      reasons += "; fewer than " + std::to_string(n) + " keys on " + link->link_id;
      continue;
    }
    link->store.allocate(ids, holder_of(rid));
    auto keys = link->store.take(ids, true);
    if (!keys) {  // cannot happen on one strand; never leave the keys reserved
      link->store.release(ids, holder_of(rid));
      reasons += "; keys on " + link->link_id + " vanished";
      continue;
    }
    link->keys_consumed += static_cast<std::int64_t>(keys->size());
    return TakenHop{link, std::move(*keys)};
  }
  const bool keys_short = reasons.find("fewer than") != std::string::npos;
  why = std::string(keys_short ? "insufficient_keys" : "no_route") + ": no usable next hop at " +
        km_id_ + (reasons.empty() ? std::string{} : " (" + reasons.substr(2) + ")");
  return std::nullopt;
}

net::awaitable<std::string> KmHost::distributed_start(std::shared_ptr<SupplyWait> w,
                                                      std::string dst, std::int64_t units) {
  const std::string rid = km_id_ + "-" + key_id_to_string(new_key_id());
  const std::vector<std::string> visited{km_id_};
  auto ask = ask_next_hops(km_id_, dst, w->master_sae, w->slave_sae, visited);
  auto [candidates, refused] = co_await std::move(ask);
  if (!refused.empty()) co_return refused;
  if (w->done) co_return "timeout: the request ended while the next hop was asked";
  const bool gcm = w->gcm_units > 0;
  const auto n = static_cast<std::size_t>(units);
  std::string why;
  auto hop = take_distributed_hop(candidates, visited, gcm ? 1 : n, rid, why);
  if (!hop) co_return why;
  const std::string next = hop->link->peer_km;

  // The end-to-end keys: n x 256 bits from the CSPRNG, fresh random IDs.
  Delivered d;
  d.peer_km = dst;
  d.expires = std::chrono::steady_clock::now() + core_.config().supplied_key_ttl;
  d.keys.resize(n);
  std::vector<std::uint8_t> plain;
  plain.reserve(n * kKeyBytes);
  const auto created = std::chrono::system_clock::now();
  json::array e2e_ids;
  for (auto& k : d.keys) {
    if (RAND_bytes(k.bytes.data(), static_cast<int>(k.bytes.size())) != 1) {
      wipe(plain);
      co_return "internal: RAND_bytes failed";
    }
    k.id = new_key_id();
    k.created = created;
    k.state = KeyState::kAllocated;
    plain.insert(plain.end(), k.bytes.begin(), k.bytes.end());
    e2e_ids.emplace_back(key_id_to_string(k.id));
  }
  json::object meta{{"key_relay_request_id", rid},
                    {"source_kma_id", km_id_},
                    {"destination_kma_id", dst},
                    {"routing", "distributed"},
                    {"route", json::array{json::value(km_id_), json::value(next)}},
                    {"hop_keys", json::array{hop_ref(km_id_, next, *hop->link, hop->keys)}},
                    {"key_ids", std::move(e2e_ids)},
                    {"key_size", kKeyBits},
                    {"created", format_rfc3339(created)},
                    {"encryption", gcm ? "aes-256-gcm" : "otp-xor"},
                    {"integrity", "hmac-sha256"},
                    {"master_sae", w->master_sae},
                    {"slave_sae", w->slave_sae},
                    {"session_id", w->session_id},
                    {"sae_key_bits", w->key_bits}};
  if (w->kex) meta[hybrid::kFrameField] = w->kex->offer();
  std::string frame;
  try {
    frame =
        encode_relay_frame(std::move(meta), km_id_, next, std::move(plain), relay_pad(hop->keys));
  } catch (const std::exception& e) {
    co_return std::string("bad_request: relay frame: ") + e.what();
  }
  hop->link->session->send(std::move(frame));
  delivered_[rid] = std::move(d);
  source_relays_[rid] = SourceRelay{nullptr, 0, std::chrono::steady_clock::now() + kRelayTimeout};
  distributed_out_[rid] = hop->link->link_id;
  w->relay_id = rid;
  waits_by_relay_[rid] = w;
  log_line(LogLevel::kInfo, "KM " + km_id_ + ": distributed relay " + rid + " started to " + dst +
                                " via " + next + " (" + std::to_string(n) + " keys)");
  co_return std::string{};
}

void KmHost::distributed_forward(LinkEnd& in, const std::shared_ptr<KmaSession>& session,
                                 kma::Relay relay, std::vector<std::uint8_t> plain) {
  const std::string rid = relay.key_relay_request_id;
  // Taken now, so that a duplicate of this relay is refused while the next hop is asked; the
  // downstream RelayAck (or a failure here) goes back over `in`.
  forwarded_relays_[rid] = {in.link_id, std::chrono::steady_clock::now() + 2 * kRelayTimeout};
  auto shared_plain = std::make_shared<std::vector<std::uint8_t>>(std::move(plain));
  spawn(distributed_forward_run(in.link_id, session, std::move(relay), std::move(shared_plain)),
        "distributed relay " + rid);
}

net::awaitable<void> KmHost::distributed_forward_run(
    std::string in_link_id, std::shared_ptr<KmaSession> session, kma::Relay relay,
    std::shared_ptr<std::vector<std::uint8_t>> plain) {
  struct Wiper {
    std::vector<std::uint8_t>& v;
    ~Wiper() { wipe(v); }
  } wiper{*plain};
  const std::string rid = relay.key_relay_request_id;
  auto fail = [&](const std::string& reason) {
    forwarded_relays_.erase(rid);
    log_line(LogLevel::kWarn, "KM " + km_id_ + ": distributed relay " + rid + ": NG: " + reason);
    // Back over the inbound link's current session (the one the relay came on, if it is gone).
    auto in = link_by_id_.find(in_link_id);
    auto back = in != link_by_id_.end() && in->second->session ? in->second->session : session;
    back->send(encode_relay_ack(rid, "NG: " + reason));
  };
  if (relay.route.size() > kMaxHops) {
    fail("no_route: the relay passed " + std::to_string(relay.route.size()) + " KMs");
    co_return;
  }
  std::string master;
  std::string slave;
  if (relay.sae) {
    master = relay.sae->master_sae;
    slave = relay.sae->slave_sae;
  }
  auto ask =
      ask_next_hops(relay.source_kma_id, relay.destination_kma_id, master, slave, relay.route);
  auto [candidates, refused] = co_await std::move(ask);
  if (stopping()) co_return;
  if (!refused.empty()) {
    fail(refused);
    co_return;
  }
  if (!forwarded_relays_.contains(rid)) co_return;  // expired while asking: nobody waits
  const std::size_t per_hop = relay.gcm ? 1 : relay.key_ids.size();
  std::string why;
  auto hop = take_distributed_hop(candidates, relay.route, per_hop, rid, why);
  if (!hop) {
    fail(why);
    co_return;
  }
  const std::string next = hop->link->peer_km;
  auto& meta = relay.meta;
  meta.erase("ciphertext");
  meta.erase("tag");
  meta.erase("nonce");
  meta.erase("gcm_tag");
  meta["route"].as_array().emplace_back(next);
  meta["hop_keys"].as_array().emplace_back(hop_ref(km_id_, next, *hop->link, hop->keys));
  std::string frame;
  try {  // the route grows at every hop: a KMA frame holds at most kma::kMaxPayload
    frame =
        encode_relay_frame(std::move(meta), km_id_, next, std::move(*plain), relay_pad(hop->keys));
  } catch (const std::exception& e) {
    fail(std::string("bad_request: relay frame at ") + km_id_ + ": " + e.what());
    co_return;
  }
  hop->link->session->send(std::move(frame));
  distributed_out_[rid] = hop->link->link_id;
}

void KmHost::distributed_link_lost(LinkEnd& link) {
  std::vector<std::string> lost;
  for (const auto& [rid, out] : distributed_out_) {
    if (out == link.link_id) lost.push_back(rid);
  }
  for (const auto& rid : lost) {
    distributed_out_.erase(rid);
    const std::string reason = "NG: peer_unreachable: KMA link " + link.link_id + " to KM " +
                               link.peer_km + " lost while relay " + rid + " was in flight";
    if (source_relays_.contains(rid)) {
      finish_source_relay(rid, reason);
    } else if (auto f = forwarded_relays_.find(rid); f != forwarded_relays_.end()) {
      auto in = link_by_id_.find(f->second.first);
      if (in != link_by_id_.end() && in->second->session) {
        in->second->session->send(encode_relay_ack(rid, reason));
      }
      forwarded_relays_.erase(f);
      std::string line = "KM " + km_id_;
      line += ": distributed relay " + rid;
      line += ": " + reason;
      log_line(LogLevel::kWarn, line);
    }
  }
}

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

}  // namespace qkdn::agent
