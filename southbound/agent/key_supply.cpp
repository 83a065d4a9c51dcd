// Key supply at a hosted KM: the controller's reservation (0x410A), allocation (0x410C), session
// notification (0x4108), key relay (0x4104) and relay instruction (0x41E5) commands, and the
// KMA-link Relay / RelayAck frames that carry an end-to-end key hop by hop (Y.3803 8.2.3).
// Everything here runs on the KM's strand. Key bytes never reach a log or the controller.
#include <algorithm>
#include <cstring>
#include <utility>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <boost/json.hpp>

#include "km_host.hpp"
#include "kma_messages.hpp"
#include "log.hpp"
#include "qkdn/base/error.hpp"
#include "qkdn/controller/key_limits.hpp"
#include "qkdn/json/reader.hpp"
#include "relay_frames.hpp"

namespace qkdn::agent {

namespace ck = southbound::ck;
namespace json = boost::json;
using namespace std::chrono_literals;

namespace {

/// A reservation not allocated within this lease is released (ck-protocol.md clause 6).
constexpr auto kReservationLease = 10s;
/// Keys allocated and still not used this long after their reservation are discarded at both
/// ends of the link: the controller's relay ended long ago (admission 10 s + relaying 30 s, its
/// allocation lease 60 s) and never told us (its 0x41EA was lost). A safety net only.
constexpr auto kAllocationLease = 90s;
/// Most key IDs waiting for a KMA session to tell the peer they were discarded (a peer that
/// never hears of some only keeps dead copies; it never uses them: they are our parity).
constexpr std::size_t kMaxPendingDiscards = 65536;
/// A source KM answers "NG: timeout" when the route has not answered within this time.
constexpr auto kRelayTimeout = 10s;
// A relay instruction's round that could not relay (refused, failed, pool full) tries again after
// this (or after its interval, when shorter).
constexpr auto kInstructionRetry = 1s;
/// Most keys one reservation or relay may involve: the definition the controller uses too.
constexpr std::int64_t kMaxKeysPerRelay = limits::kMaxKeysPerRelay;
constexpr std::string_view kMacLabel = "qkdn-relay-mac-v1";

std::string str_of(const json::object& o, std::string_view key) {
  const auto* v = o.if_contains(key);
  if (v == nullptr || !v->is_string()) return {};
  return std::string(v->as_string());
}

std::vector<std::string> strings_of(const json::object& o, std::string_view key) {
  std::vector<std::string> out;
  const auto* v = o.if_contains(key);
  if (v == nullptr || !v->is_array()) return out;
  for (const auto& e : v->as_array()) {
    if (e.is_string()) out.emplace_back(e.as_string());
  }
  return out;
}

std::int64_t int_of(const json::object& o, std::string_view key) {
  const auto* v = o.if_contains(key);
  if (v == nullptr) return 0;
  if (v->is_int64()) return v->as_int64();
  if (v->is_uint64())
    return static_cast<std::int64_t>(std::min<std::uint64_t>(v->as_uint64(), INT64_MAX));
  return 0;
}

json::array to_array(const std::vector<std::string>& v) {
  json::array a;
  for (const auto& s : v) a.emplace_back(s);
  return a;
}

std::optional<std::vector<KeyId>> parse_ids(const std::vector<std::string>& text) {
  std::vector<KeyId> out;
  for (const auto& t : text) {
    auto id = parse_key_id(t);
    if (!id) return std::nullopt;
    out.push_back(*id);
  }
  return out;
}

std::string to_hex(const std::uint8_t* data, std::size_t n) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(n * 2);
  for (std::size_t i = 0; i < n; ++i) {
    out.push_back(kHex[data[i] >> 4]);
    out.push_back(kHex[data[i] & 0x0F]);
  }
  return out;
}

/// The one-time pad of a hop: the hop keys' bytes in the order of their IDs.
std::vector<std::uint8_t> pad_of(const std::vector<KeyBlock>& keys) {
  std::vector<std::uint8_t> pad;
  pad.reserve(keys.size() * kKeyBytes);
  for (const auto& k : keys) pad.insert(pad.end(), k.bytes.begin(), k.bytes.end());
  return pad;
}

/// Integrity tag of one hop: HMAC-SHA256 over (associated data || ciphertext) under the MAC key
/// HMAC-SHA256(pad, "qkdn-relay-mac-v1"). The MAC key is derived from the same hop keys as the
/// pad (the controller reserves number_of_keys hop keys, exactly the pad): integrity is therefore
/// computational (SHA-256), confidentiality stays one-time pad. See README "Key supply".
std::array<std::uint8_t, 32> hop_tag(const std::vector<std::uint8_t>& pad, const std::string& aad,
                                     const std::vector<std::uint8_t>& ciphertext) {
  std::array<std::uint8_t, 32> mac_key{};
  hmac_sha256(pad, {{reinterpret_cast<const std::uint8_t*>(kMacLabel.data()), kMacLabel.size()}},
              mac_key.data());
  static constexpr std::uint8_t kSeparator = 0;
  std::array<std::uint8_t, 32> tag{};
  hmac_sha256(mac_key,
              {{reinterpret_cast<const std::uint8_t*>(aad.data()), aad.size()},
               {&kSeparator, 1},
               ciphertext},
              tag.data());
  OPENSSL_cleanse(mac_key.data(), mac_key.size());
  return tag;
}

/// Associated data bound into every hop tag: the relayed-key metadata and the hop.
std::string relay_aad(const json::object& meta, const std::string& from, const std::string& to) {
  std::string aad = str_of(meta, "key_relay_request_id") + "\n" + str_of(meta, "source_kma_id") +
                    "\n" + str_of(meta, "destination_kma_id") + "\n" + str_of(meta, "created") +
                    "\n" + str_of(meta, "encryption") + "\n" + from + "\n" + to;
  for (const auto& id : strings_of(meta, "key_ids")) aad += "\n" + id;
  // Relay instruction: the destination files the keys in its pre-positioned pool.
  if (meta.contains("preposition")) aad += "\npre";
  // Distributed relay (hop by hop, distributed_relay.cpp).
  if (str_of(meta, "routing") == "distributed") aad += "\ndistributed";
  // SAE key supply: the pair and the ETSI key size the destination files the keys under.
  if (meta.contains("slave_sae")) {
    aad += "\nsae\n" + str_of(meta, "master_sae") + "\n" + str_of(meta, "slave_sae") + "\n" +
           str_of(meta, "session_id") + "\n" + std::to_string(int_of(meta, "sae_key_bits"));
  }
  // Key combination `hybrid`: the source's key-exchange offer (docs/hybrid.md).
  if (const auto* x = meta.if_contains(hybrid::kFrameField)) aad += "\nkex\n" + json::serialize(*x);
  return aad;
}

/// XORs `data` with `pad` in place (same size).
void xor_into(std::vector<std::uint8_t>& data, const std::vector<std::uint8_t>& pad) {
  for (std::size_t i = 0; i < data.size(); ++i) data[i] ^= pad[i];
}

void wipe(std::vector<std::uint8_t>& v) {
  if (!v.empty()) OPENSSL_cleanse(v.data(), v.size());
}

/// A whole Relay frame: the metadata plus ciphertext and tag for the hop from -> to. The
/// metadata's "encryption" says how: otp-xor (pad as long as the keys) or aes-256-gcm (the pad
/// is one hop key; relay_scheme.hpp).
std::string relay_frame(json::object meta, const std::string& from, const std::string& to,
                        std::vector<std::uint8_t> plaintext, std::vector<std::uint8_t> pad) {
  const auto aad = relay_aad(meta, from, to);
  if (str_of(meta, "encryption") == relay::scheme_name(relay::Scheme::kAesGcm)) {
    std::array<std::uint8_t, 12> nonce{};
    std::array<std::uint8_t, 16> gcm_tag{};
    relay::gcm_seal(pad, aad, plaintext, nonce, gcm_tag);  // plaintext now holds the ciphertext
    meta["nonce"] = to_hex(nonce.data(), nonce.size());
    meta["gcm_tag"] = to_hex(gcm_tag.data(), gcm_tag.size());
  } else {
    xor_into(plaintext, pad);  // plaintext now holds the ciphertext
  }
  const auto tag = hop_tag(pad, aad, plaintext);
  wipe(pad);
  meta["from"] = from;
  meta["to"] = to;
  meta["ciphertext"] = to_hex(plaintext.data(), plaintext.size());
  meta["tag"] = to_hex(tag.data(), tag.size());
  return kma::encode_frame(kma::Type::kRelay, json::serialize(meta));
}

std::string relay_ack_frame(const std::string& request_id, const std::string& response,
                            const std::string& exchange = {}, const std::string& key_check = {}) {
  json::object o{{"key_relay_request_id", request_id}, {"response", response}};
  if (!key_check.empty()) o["key_check"] = key_check;
  if (!exchange.empty()) o[hybrid::kFrameField] = json::parse(exchange);
  return kma::encode_frame(kma::Type::kRelayAck, json::serialize(o));
}

}  // namespace

std::string encode_relay_frame(boost::json::object meta, const std::string& from,
                               const std::string& to, std::vector<std::uint8_t> plaintext,
                               std::vector<std::uint8_t> pad) {
  return relay_frame(std::move(meta), from, to, std::move(plaintext), std::move(pad));
}

std::string encode_relay_ack(const std::string& request_id, const std::string& response) {
  return relay_ack_frame(request_id, response);
}

std::vector<std::uint8_t> relay_pad(const std::vector<KeyBlock>& keys) { return pad_of(keys); }

LinkEnd* KmHost::hop_link(const std::string& peer, const std::optional<std::string>& link_id) {
  if (link_id && !link_id->empty()) {
    auto it = link_by_id_.find(*link_id);
    if (it == link_by_id_.end() || it->second->peer_km != peer) return nullptr;
    return it->second;
  }
  for (auto& l : links_) {
    if (l->peer_km == peer) return l.get();
  }
  return nullptr;
}

void KmHost::on_key_supply(const std::shared_ptr<southbound::CkChannel>& channel,
                           ck::Message message, std::uint32_t message_id) {
  if (auto* r = std::get_if<ck::KeyReservationRequest>(&message)) {
    on_reservation(channel, *r, message_id);
  } else if (auto* a = std::get_if<ck::KeyAllocationRequest>(&message)) {
    on_allocation(channel, *a, message_id);
  } else if (auto* k = std::get_if<ck::KeyRelayRequest>(&message)) {
    on_relay_request(channel, *k, message_id);
  } else if (auto* n = std::get_if<ck::SessionCreationNotification>(&message)) {
    // Nothing is kept per session here (the SAE request that needs it holds its session_id);
    // the count is checked against the bound the controller applies to 0x1406.
    ck::SessionCreationNotificationResponse resp;
    resp.session_id = n->session_id;
    const std::int64_t keys = n->number_of_keys.value_or(1);
    resp.response = keys >= 1 && keys <= limits::kMaxKeysPerSession
                        ? "OK"
                        : "NG: bad_request: number_of_keys must be 1.." +
                              std::to_string(limits::kMaxKeysPerSession);
    channel->send(ck::Message{std::move(resp)}, message_id);
  } else if (auto* i = std::get_if<ck::RelayInstruction>(&message)) {
    on_relay_instruction(channel, *i, message_id);
  } else if (auto* rel = std::get_if<ck::KeyRelease>(&message)) {
    on_key_release(channel, *rel, message_id);
  } else {
    send_ck_error(channel, ck::errc::kUnknownCommand, "command not handled by this KM", message_id);
  }
}

void KmHost::on_reservation(const std::shared_ptr<southbound::CkChannel>& channel,
                            const ck::KeyReservationRequest& r, std::uint32_t message_id) {
  ck::KeyReservationResponse resp;
  resp.source_kma_id = r.source_kma_id;
  resp.destination_kma_id = r.destination_kma_id;
  resp.application_destination_id = r.application_destination_id;
  resp.next_kma_id = r.next_kma_id;
  resp.link_id = r.link_id;
  resp.response = 1;
  auto ng = [&](std::string_view code, const std::string& text) {
    resp.extension = ck::make_error_extension(code, text);
    channel->send(ck::Message{std::move(resp)}, message_id);
  };
  const std::string peer = r.next_kma_id.value_or(r.destination_kma_id);
  LinkEnd* link = hop_link(peer, r.link_id);
  if (link == nullptr) return ng(ck::errc::kUnknownKma, "no link from " + km_id_ + " to " + peer);
  const std::int64_t n = r.number_of_keys.value_or(1);
  if (n < 1 || n > kMaxKeysPerRelay) {
    return ng(ck::errc::kBadRequest,
              "number_of_keys must be 1.." + std::to_string(kMaxKeysPerRelay));
  }
  // The primary end reserves keys with an even first ID byte, the secondary odd ones.
  auto ids = link->store.reserve(static_cast<std::size_t>(n), link->primary ? 0 : 1,
                                 std::chrono::steady_clock::now(),
                                 holder_of(r.key_relay_request_id.value_or("")));
  if (ids.empty()) {
    return ng(ck::errc::kInsufficientKeys,
              std::to_string(n) + " keys requested on " + link->link_id + ", fewer available");
  }
  for (const auto& id : ids) resp.key_ids.push_back(key_id_to_string(id));
  resp.link_id = link->link_id;
  resp.response = 0;
  channel->send(ck::Message{std::move(resp)}, message_id);
}

void KmHost::on_allocation(const std::shared_ptr<southbound::CkChannel>& channel,
                           const ck::KeyAllocationRequest& r, std::uint32_t message_id) {
  ck::KeyAllocationResponse resp;
  resp.source_kma_id = r.source_kma_id;
  resp.destination_kma_id = r.destination_kma_id;
  resp.application_destination_id = r.application_destination_id;
  resp.next_kma_id = r.next_kma_id;
  resp.link_id = r.link_id;
  resp.key_ids = r.key_ids;
  resp.response = 1;
  auto ng = [&](std::string_view code, const std::string& text) {
    resp.extension = ck::make_error_extension(code, text);
    channel->send(ck::Message{std::move(resp)}, message_id);
  };
  const std::string peer = r.next_kma_id.value_or(r.destination_kma_id);
  LinkEnd* link = hop_link(peer, r.link_id);
  if (link == nullptr) return ng(ck::errc::kUnknownKma, "no link from " + km_id_ + " to " + peer);
  if (r.key_ids.empty() || std::cmp_greater(r.key_ids.size(), kMaxKeysPerRelay)) {
    return ng(ck::errc::kBadRequest,
              "key_ids must name 1.." + std::to_string(kMaxKeysPerRelay) + " keys");
  }
  auto ids = parse_ids(r.key_ids);
  // Only keys reserved for this relay (when it names one): a lapsed reservation may be held by
  // another relay now.
  const auto holder = r.key_relay_request_id
                          ? std::optional<Holder>(holder_of(*r.key_relay_request_id))
                          : std::nullopt;
  if (!ids || ids->empty() || !link->store.allocate(*ids, holder)) {
    return ng(ck::errc::kUnknownKey,
              "key IDs not reserved here on " + link->link_id + " for this key_relay_request_id");
  }
  resp.link_id = link->link_id;
  resp.response = 0;
  channel->send(ck::Message{std::move(resp)}, message_id);
}

void KmHost::on_key_release(const std::shared_ptr<southbound::CkChannel>& channel,
                            const ck::KeyRelease& r, std::uint32_t message_id) {
  ck::KeyReleaseResponse resp;
  resp.key_relay_request_id = r.key_relay_request_id;
  LinkEnd* link = hop_link(r.next_kma_id, r.link_id);
  auto ids = parse_ids(r.key_ids);
  if (link == nullptr) {
    resp.response = "NG: unknown_kma: no link from " + km_id_ + " to " + r.next_kma_id;
  } else if (!ids) {
    resp.response = "NG: bad_request: malformed key ID";
  } else {
    // The ledger released these keys (docs/ck-extensions.md "Key release"). Reserved ones come
    // back, oldest first as before (the ledger accepts them again from this hop); allocated
    // ones, and with "discard" every one, are destroyed at both ends: a key that may have been
    // named in a 0x4104 is never offered twice.
    const Holder holder = holder_of(r.key_relay_request_id);
    const bool discard_all = r.disposition.value_or("release") == "discard";
    const auto gone = link->store.discard(*ids, holder, discard_all);
    const std::size_t back = discard_all ? 0 : link->store.release(*ids, holder);
    discard_at_both_ends(*link, gone);
    resp.response = "OK";
    resp.released = static_cast<std::int64_t>(back);
    resp.discarded = static_cast<std::int64_t>(gone.size());
  }
  if (resp.response != "OK") {
    log_line(LogLevel::kWarn, "KM " + km_id_ + ": key release for relay " + r.key_relay_request_id +
                                  ": " + resp.response);
  }
  channel->send(ck::Message{std::move(resp)}, message_id);
}

void KmHost::discard_at_both_ends(LinkEnd& link, const std::vector<KeyId>& ids) {
  if (ids.empty()) return;
  link.keys_discarded += static_cast<std::int64_t>(ids.size());
  for (const auto& id : ids) link.pending_discards.push_back(id);
  while (link.pending_discards.size() > kMaxPendingDiscards) link.pending_discards.pop_front();
  flush_discards(link);
}

void KmHost::flush_discards(LinkEnd& link) {
  if (link.pending_discards.empty() || !link.session || !link.synced) return;
  // One frame per kMaxDiscardIds IDs keeps each far below kma::kMaxPayload.
  while (!link.pending_discards.empty()) {
    json::array ids;
    while (!link.pending_discards.empty() && ids.size() < kma::kMaxDiscardIds) {
      ids.emplace_back(key_id_to_string(link.pending_discards.front()));
      link.pending_discards.pop_front();
    }
    json::object o{{"link_id", link.link_id}, {"key_ids", std::move(ids)}};
    link.session->send(kma::encode_frame(kma::Type::kDiscard, json::serialize(o)));
  }
}

void KmHost::on_discard_frame(LinkEnd& link, const std::string& payload) {
  kma::Discard msg;
  try {
    msg = kma::parse_discard(payload);
  } catch (const kma::BadMessage& e) {
    log_line(LogLevel::kWarn, "KM " + km_id_ + ": KMA link " + link.link_id +
                                  ": malformed discard frame ignored: " + e.what());
    return;
  }
  if (msg.link_id != link.link_id) {
    log_line(LogLevel::kWarn, "KM " + km_id_ + ": KMA link " + link.link_id +
                                  ": discard frame for link " + msg.link_id + " ignored");
    return;
  }
  // Only the peer's half: the peer reserves the other parity than ours.
  const auto gone = link.store.discard_available(msg.key_ids, link.primary ? 1 : 0);
  link.keys_discarded += static_cast<std::int64_t>(gone.size());
}

void KmHost::on_relay_request(const std::shared_ptr<southbound::CkChannel>& channel,
                              const ck::KeyRelayRequest& r, std::uint32_t message_id) {
  const std::string rid =
      r.key_relay_request_id.value_or(km_id_ + "-" + key_id_to_string(new_key_id()));
  auto ng = [&](const std::string& reason) {
    ck::KeyRelayResponse resp;
    resp.response = "NG: " + reason;
    resp.key_relay_request_id = rid;
    channel->send(ck::Message{std::move(resp)}, message_id);
  };
  if (!r.destination_kma_id || *r.destination_kma_id == km_id_)
    return ng("bad_request: destination");
  if (r.source_kma_id && *r.source_kma_id != km_id_) return ng("bad_request: not the source KM");
  if (source_relays_.contains(rid) || delivered_.contains(rid) || forwarded_relays_.contains(rid)) {
    return ng("bad_request: duplicate key_relay_request_id");
  }
  std::vector<std::string> route{km_id_};
  route.insert(route.end(), r.transit_kma_ids.begin(), r.transit_kma_ids.end());
  route.push_back(*r.destination_kma_id);
  if (r.hop_keys.size() != route.size() - 1)
    return ng("bad_request: hop_keys do not match the route");
  // An SAE request whose pair relays with aes-256-gcm asked for one hop key per hop and says
  // how many units it needs; otherwise one unit per hop key (one-time pad).
  std::shared_ptr<SupplyWait> sae_wait;
  if (r.notification_message_id) {
    if (auto w = waits_by_notification_.find(*r.notification_message_id);
        w != waits_by_notification_.end()) {
      sae_wait = w->second;
    }
  }
  const bool gcm = sae_wait && sae_wait->gcm_units > 0;
  const std::size_t per_hop = r.hop_keys.front().key_ids.size();
  const std::size_t n = gcm ? static_cast<std::size_t>(sae_wait->gcm_units) : per_hop;
  if (n == 0 || n > static_cast<std::size_t>(kMaxKeysPerRelay)) return ng("bad_request: key count");
  if (gcm && per_hop != 1) return ng("bad_request: an aes-256-gcm relay takes one key per hop");
  json::array hops;
  for (std::size_t i = 0; i < r.hop_keys.size(); ++i) {
    const auto& h = r.hop_keys[i];
    if (h.kma_id != route[i] || h.next_kma_id != route[i + 1] || h.key_ids.size() != per_hop) {
      return ng("bad_request: hop_keys do not match the route");
    }
    hops.push_back(json::object{{"kma_id", h.kma_id},
                                {"next_kma_id", h.next_kma_id},
                                {"link_id", h.link_id},
                                {"key_ids", to_array(h.key_ids)}});
  }
  const auto& first = r.hop_keys.front();
  LinkEnd* out = hop_link(route[1], std::optional<std::string>(first.link_id));
  if (out == nullptr) return ng("unknown_kma: no link to " + route[1]);
  if (!out->session || !out->synced) return ng("peer_unreachable: KMA link " + out->link_id);
  auto ids = parse_ids(first.key_ids);
  if (!ids) return ng("unknown_key: malformed hop key ID");
  auto hop_keys = out->store.take(*ids, true);
  if (!hop_keys) return ng("unknown_key: hop keys not allocated at " + km_id_);
  out->keys_consumed += static_cast<std::int64_t>(hop_keys->size());

  // The end-to-end keys: n x 256 bits from the CSPRNG, fresh random IDs.
  Delivered d;
  d.peer_km = *r.destination_kma_id;
  d.expires = std::chrono::steady_clock::now() + core_.config().supplied_key_ttl;
  d.keys.resize(n);
  std::vector<std::uint8_t> plain;
  plain.reserve(n * kKeyBytes);
  const auto created = std::chrono::system_clock::now();
  std::vector<std::string> e2e_ids;
  // The last leg of a Kxi' transfer (kxi_host.cpp) relays the keys received, not fresh ones.
  const bool received = sae_wait && !sae_wait->units.empty();
  if (received && sae_wait->units.size() != n) return ng("bad_request: key count");
  for (std::size_t i = 0; i < n; ++i) {
    auto& k = d.keys[i];
    if (received) {
      k = sae_wait->units[i];
    } else if (RAND_bytes(k.bytes.data(), static_cast<int>(k.bytes.size())) != 1) {
      return ng("internal: RAND_bytes failed");
    }
    if (!received) k.id = new_key_id();
    k.created = created;
    k.state = KeyState::kAllocated;
    plain.insert(plain.end(), k.bytes.begin(), k.bytes.end());
    e2e_ids.push_back(key_id_to_string(k.id));
  }
  json::object meta{{"key_relay_request_id", rid},
                    {"source_kma_id", km_id_},
                    {"destination_kma_id", *r.destination_kma_id},
                    {"route", to_array(route)},
                    {"hop_keys", std::move(hops)},
                    {"key_ids", to_array(e2e_ids)},
                    {"key_size", kKeyBits},
                    {"created", format_rfc3339(created)},
                    {"encryption", gcm ? "aes-256-gcm" : "otp-xor"},
                    {"integrity", "hmac-sha256"}};
  // A relay an SAE request asked for (0x1403 from sae_supply.cpp): the destination files the
  // keys for that SAE pair, and the request waits for this relay.
  if (r.notification_message_id) {
    if (auto w = waits_by_notification_.find(*r.notification_message_id);
        w != waits_by_notification_.end()) {
      meta["master_sae"] = w->second->master_sae;
      meta["slave_sae"] = w->second->slave_sae;
      meta["session_id"] = w->second->session_id;
      meta["sae_key_bits"] = w->second->key_bits;
      if (w->second->kex) meta[hybrid::kFrameField] = w->second->kex->offer();
      w->second->relay_id = rid;
      waits_by_relay_[rid] = w->second;
      waits_by_notification_.erase(w);
    }
  }
  // A relay a relay instruction asked for: both ends file the keys as pre-positioned.
  if (r.notification_message_id) {
    if (auto in = instruction_notifications_.find(*r.notification_message_id);
        in != instruction_notifications_.end()) {
      if (auto it = instructions_.find(in->second); it != instructions_.end()) {
        it->second.notification = 0;
        it->second.relay_id = rid;
      }
      meta["preposition"] = true;
      instruction_relays_[rid] = {in->second, route};
      instruction_notifications_.erase(in);
    }
  }
  std::string frame =
      relay_frame(std::move(meta), km_id_, route[1], std::move(plain), pad_of(*hop_keys));
  out->session->send(std::move(frame));
  delivered_[rid] = std::move(d);
  source_relays_[rid] =
      SourceRelay{channel, message_id, std::chrono::steady_clock::now() + kRelayTimeout};
  log_line(LogLevel::kInfo, "KM " + km_id_ + ": relay " + rid + " started to " + route.back() +
                                " (" + std::to_string(n) + " keys)");
}

void KmHost::on_relay_frame(LinkEnd& link, const std::shared_ptr<KmaSession>& session,
                            const std::string& payload) {
  const std::string rid = kma::request_id_of(payload, "key_relay_request_id");
  auto answer = [&](const std::string& response) {
    session->send(relay_ack_frame(rid, response));
    if (response != "OK") {
      log_line(LogLevel::kWarn, "KM " + km_id_ + ": relay " + rid + ": " + response);
    }
  };
  std::optional<kma::Relay> parsed;
  try {
    parsed = kma::parse_relay(payload);
  } catch (const kma::BadMessage& e) {
    return answer(std::string("NG: bad_request: malformed relay frame: ") + e.what());
  }
  kma::Relay& relay = *parsed;
  if (delivered_.contains(rid) || forwarded_relays_.contains(rid)) {
    return answer("NG: bad_request: duplicate key_relay_request_id");
  }
  const std::string from = link.peer_km;
  if (relay.from != from || relay.to != km_id_) {
    return answer("NG: bad_request: relay hop mismatch");
  }
  const std::string& destination = relay.destination_kma_id;
  // The inbound hop (from -> here) and, at a transit KM, the outbound hop (here -> next).
  const kma::HopRef* in_hop = nullptr;
  const kma::HopRef* out_hop = nullptr;
  for (const auto& h : relay.hop_keys) {
    if (h.kma_id == from && h.next_kma_id == km_id_)
      in_hop = &h;
    else if (h.kma_id == km_id_)
      out_hop = &h;
  }
  if (in_hop == nullptr) return answer("NG: bad_request: no hop keys for " + from + "->" + km_id_);
  if (!in_hop->link_id.empty() && in_hop->link_id != link.link_id) {
    return answer("NG: bad_request: hop link mismatch");
  }
  auto& ct = relay.ciphertext;  // parse_relay: exactly key_ids.size() * kKeyBytes
  auto in_keys = link.store.take(in_hop->key_ids, false);  // consumed (wiped) whatever follows
  if (!in_keys) return answer("NG: unknown_key: hop keys not held at " + km_id_);
  link.keys_consumed += static_cast<std::int64_t>(in_keys->size());
  auto pad = pad_of(*in_keys);
  const auto expect = hop_tag(pad, relay_aad(relay.meta, from, km_id_), ct);
  if (CRYPTO_memcmp(expect.data(), relay.tag.data(), 32) != 0) {
    wipe(pad);
    return answer("NG: integrity: relay tag mismatch");
  }
  auto plain = std::move(ct);
  if (relay.gcm) {
    if (!relay::gcm_open(pad, relay_aad(relay.meta, from, km_id_), plain, relay.nonce,
                         relay.gcm_tag)) {
      wipe(pad);
      return answer("NG: integrity: relay AES-256-GCM tag mismatch");
    }
  } else {
    xor_into(plain, pad);
  }
  wipe(pad);
  if (destination == km_id_) {
    const auto& ids = relay.key_ids;
    Delivered d;
    d.peer_km = relay.source_kma_id;
    d.keys.resize(ids.size());
    for (std::size_t i = 0; i < ids.size(); ++i) {
      d.keys[i].id = ids[i];
      d.keys[i].created = std::chrono::system_clock::now();
      d.keys[i].state = KeyState::kAllocated;
      std::memcpy(d.keys[i].bytes.data(), plain.data() + i * kKeyBytes, kKeyBytes);
    }
    wipe(plain);
    if (relay.preposition) {  // a relay instruction: the pool from the source
      auto& pool = prepositioned_[{relay.source_kma_id, km_id_}];
      if (pool.units.size() + d.keys.size() > prepositioned_cap()) {
        return answer("NG: insufficient_keys: pre-positioned pool full at " + km_id_);
      }
      const auto expires = std::chrono::steady_clock::now() + core_.config().supplied_key_ttl;
      for (auto& k : d.keys) pool.units.push_back(PoolUnit{k, expires});
      pool.route = relay.route;
      log_line(LogLevel::kInfo, "KM " + km_id_ + ": relay " + rid + " pre-positioned " +
                                    std::to_string(d.keys.size()) + " keys from " +
                                    relay.source_kma_id);
      return answer("OK");
    }
    if (relay.sae) {  // an SAE request: filed for the slave SAE (combined when hybrid)
      // An SAE of the IWN partner's QKDN: acknowledged once the partner stored them (kxi_host),
      // as QKD keys (no key combination across the interworking node).
      if (iwn_forward(d.keys, *relay.sae,
                      [session, rid](const std::string& r, const std::string& check) {
                        session->send(relay_ack_frame(rid, r, {}, check));
                      })) {
        return;
      }
      std::optional<hybrid::Shared> shared;
      std::string exchange;
      const auto* offer = relay.meta.if_contains(hybrid::kFrameField);
      const auto refusal = accept_combination(
          relay.sae->master_sae, relay.sae->slave_sae,
          offer == nullptr ? std::string{} : json::serialize(*offer), shared, exchange);
      if (!refusal.empty()) return answer(refusal);
      const auto filed = file_supplied(d.keys, relay.sae->key_bits, relay.sae->master_sae,
                                       relay.sae->slave_sae, shared ? &*shared : nullptr);
      auto rec = slave_delivery(*relay.sae, relay.source_kma_id, "relay", shared, d.keys.size(),
                                filed.first_key_id);
      rec.relay_routing = relay.distributed ? "distributed" : "centralized";
      rec.route = relay.route;
      rec.relay_scheme =
          relay::scheme_name(relay.gcm ? relay::Scheme::kAesGcm : relay::Scheme::kOtp);
      record_delivery(std::move(rec));
      log_line(LogLevel::kInfo, "KM " + km_id_ + ": relay " + rid + " delivered from " +
                                    relay.source_kma_id + " for SAE " + relay.sae->slave_sae);
      session->send(relay_ack_frame(rid, "OK", exchange, filed.key_check));
      return;
    }
    d.expires = std::chrono::steady_clock::now() + core_.config().supplied_key_ttl;
    delivered_[rid] = std::move(d);
    log_line(LogLevel::kInfo,
             "KM " + km_id_ + ": relay " + rid + " delivered from " + relay.source_kma_id);
    return answer("OK");
  }
  // Distributed relay (Q.4164 7.1): this KM asks for its next hop and takes its own hop keys.
  if (relay.distributed)
    return distributed_forward(link, session, std::move(relay), std::move(plain));
  // Transit: re-encrypt with the outbound hop keys allocated here.
  if (!out_hop) {
    wipe(plain);
    return answer("NG: bad_request: no outbound hop at " + km_id_);
  }
  LinkEnd* out = hop_link(out_hop->next_kma_id, std::optional<std::string>(out_hop->link_id));
  if (out == nullptr || !out->session || !out->synced) {
    wipe(plain);
    return answer("NG: peer_unreachable: " + km_id_ + "->" + out_hop->next_kma_id);
  }
  auto out_keys = out->store.take(out_hop->key_ids, true);  // same count: parse_relay
  if (!out_keys) {
    wipe(plain);
    return answer("NG: unknown_key: hop keys not allocated at " + km_id_);
  }
  out->keys_consumed += static_cast<std::int64_t>(out_keys->size());
  relay.meta.erase("ciphertext");
  relay.meta.erase("tag");
  relay.meta.erase("nonce");
  relay.meta.erase("gcm_tag");
  std::string frame = relay_frame(std::move(relay.meta), km_id_, out_hop->next_kma_id,
                                  std::move(plain), pad_of(*out_keys));
  out->session->send(std::move(frame));
  forwarded_relays_[rid] = {link.link_id, std::chrono::steady_clock::now() + 2 * kRelayTimeout};
}

void KmHost::on_relay_ack(const std::string& payload) {
  kma::Ack ack;
  try {
    ack = kma::parse_ack(payload, "key_relay_request_id");
  } catch (const kma::BadMessage& e) {
    // Addressed if it names a request: that relay fails rather than waiting for its timeout.
    ack.id = kma::request_id_of(payload, "key_relay_request_id");
    if (ack.id.empty()) {
      log_line(LogLevel::kWarn, "KM " + km_id_ + ": malformed relay answer: " + e.what());
      return;
    }
    ack.response = std::string("NG: bad_request: malformed relay answer: ") + e.what();
  }
  const std::string& rid = ack.id;
  const std::string& response = ack.response;
  if (auto f = forwarded_relays_.find(rid); f != forwarded_relays_.end()) {
    auto l = link_by_id_.find(f->second.first);
    if (l != link_by_id_.end() && l->second->session) {
      // Forwarded as it came (key exchange answer and key check included).
      l->second->session->send(kma::encode_frame(kma::Type::kRelayAck, payload));
    }
    forwarded_relays_.erase(f);
    distributed_out_.erase(rid);
    return;
  }
  if (auto w = waits_by_relay_.find(rid); w != waits_by_relay_.end()) {
    w->second->kex_answer = hybrid::exchange_of(payload);
    w->second->key_check = hybrid::string_of(payload, "key_check");
  }
  finish_source_relay(rid, response);
}

void KmHost::finish_source_relay(const std::string& request_id, const std::string& response) {
  auto it = source_relays_.find(request_id);
  if (it == source_relays_.end()) return;  // late (already timed out) or unknown
  distributed_out_.erase(request_id);
  ck::KeyRelayResponse resp;
  resp.response = response;
  resp.key_relay_request_id = request_id;
  if (it->second.channel) {  // send() on a closed channel is dropped
    it->second.channel->send(ck::Message{std::move(resp)}, it->second.message_id);
  }
  finish_sae_relay(request_id, response);              // an SAE request waiting takes the keys
  finish_instruction_relay(request_id, response);      // or the pre-positioned pool
  if (response != "OK") delivered_.erase(request_id);  // the destination has nothing
  log_line(response == "OK" ? LogLevel::kInfo : LogLevel::kWarn,
           "KM " + km_id_ + ": relay " + request_id + ": " + response);
  source_relays_.erase(it);
}

void KmHost::drop_holds_of_old_epoch(SteadyTime before) {
  // A new controller epoch (a restart or a takeover) ended every relay of the old one (its
  // restore voids or fails them), and the new controller commands this KM only once it is
  // registered: whatever this KM holds now was set aside by the old epoch. Reserved keys come
  // back, allocated ones are discarded at both ends (they may have been named in a 0x4104), as
  // when their leases lapse, only without waiting for that. Covers the keys the old controller
  // had set aside but never stored in its ledger (lost with it), which its successor cannot
  // release by name. Only keys reserved before `before` (the Register went out): later ones are
  // the new epoch's.
  std::size_t back = 0;
  std::size_t gone = 0;
  for (auto& l : links_) {
    back += l->store.release_expired(before, std::chrono::milliseconds{0});
    auto ids = l->store.discard_expired_allocations(before, std::chrono::milliseconds{0});
    gone += ids.size();
    discard_at_both_ends(*l, ids);
  }
  if (back + gone > 0) {
    log_line(LogLevel::kInfo, "KM " + km_id_ + ": new controller epoch: " + std::to_string(back) +
                                  " reserved key(s) back, " + std::to_string(gone) +
                                  " allocated key(s) discarded");
  }
}

void KmHost::expire_key_supply(SteadyTime now) {
  for (auto& l : links_) {
    l->store.release_expired(now, kReservationLease);
    discard_at_both_ends(*l, l->store.discard_expired_allocations(now, kAllocationLease));
  }
  std::vector<std::string> late;
  for (const auto& [rid, s] : source_relays_) {
    if (now >= s.deadline) late.push_back(rid);
  }
  for (const auto& rid : late) finish_source_relay(rid, "NG: timeout");
  // A transit KM forgets relays whose downstream never answered (the source timed out long ago).
  std::erase_if(forwarded_relays_, [&](const auto& f) { return now >= f.second.second; });
  std::erase_if(distributed_out_, [&](const auto& o) {
    return !source_relays_.contains(o.first) && !forwarded_relays_.contains(o.first);
  });
  // End-to-end keys nobody claimed (controller-initiated relays, late SAE relays) expire.
  std::erase_if(delivered_, [&](const auto& d) {
    return now >= d.second.expires && !source_relays_.contains(d.first);
  });
  std::erase_if(forwarded_claims_, [&](const auto& f) { return now >= f.second.second; });
  for (auto& [pair, pool] : prepositioned_) {
    std::erase_if(pool.units, [&](const PoolUnit& u) { return now >= u.expires; });
  }
  expire_sae_supply(now);
  run_instructions(now);
}

// ---- relay instructions (0x41E5) and pre-positioned pools ----------------------------------

namespace {

/// Associated data of a Claim: everything the destination acts on. The sender builds it from
/// what it sends, the destination from what parse_claim read (the same values).
std::string claim_aad(const std::string& claim_id, const std::string& source,
                      const std::string& destination, const std::string& master_sae,
                      const std::string& slave_sae, const std::string& session_id,
                      std::int64_t key_bits, const std::vector<KeyId>& ids) {
  std::string aad = "claim\n" + claim_id + "\n" + source + "\n" + destination + "\n" + master_sae +
                    "\n" + slave_sae + "\n" + session_id + "\n" + std::to_string(key_bits);
  for (const auto& id : ids) aad += "\n" + key_id_to_string(id);
  return aad;
}

std::string claim_aad(const kma::Claim& c) {
  return claim_aad(c.claim_id, c.source_kma_id, c.destination_kma_id, c.sae.master_sae,
                   c.sae.slave_sae, c.sae.session_id, c.sae.key_bits, c.key_ids);
}

std::string claim_ack_frame(const std::string& claim_id, const std::string& response,
                            const std::string& exchange = {}, const std::string& key_check = {}) {
  json::object o{{"claim_id", claim_id}, {"response", response}};
  if (!key_check.empty()) o["key_check"] = key_check;
  if (!exchange.empty()) o[hybrid::kFrameField] = json::parse(exchange);
  return kma::encode_frame(kma::Type::kClaimAck, json::serialize(o));
}

}  // namespace

std::size_t KmHost::prepositioned_cap() const {
  // A pre-positioned pool is bounded like one link pool.
  return std::max<std::size_t>(1, core_.config().pool_capacity_bytes / kKeyBytes);
}

void KmHost::on_relay_instruction(const std::shared_ptr<southbound::CkChannel>& channel,
                                  const ck::RelayInstruction& r, std::uint32_t message_id) {
  ck::RelayInstructionResponse resp;
  resp.instruction_id = r.instruction_id;
  auto answer = [&](std::string response) {
    if (response != "OK") {
      log_line(LogLevel::kWarn,
               "KM " + km_id_ + ": relay instruction " + r.instruction_id + ": " + response);
    }
    resp.response = std::move(response);
    channel->send(ck::Message{std::move(resp)}, message_id);
  };
  bool withdraw = false;
  double interval_s = 0;
  if (r.extension) {
    // The codec let only an array of objects through; each object the KM knows is read strictly
    // (a withdraw that is not a boolean is refused, not ignored). Other extension objects are
    // for other readers (docs/ck-extensions.md), so unknown fields are not refused here.
    std::string refused;
    try {
      const json::value ext = qkdn::json::parse(*r.extension, qkdn::json::ParseLimits{65535, 32});
      if (!ext.is_array()) return answer("NG: bad_request: extension");
      for (const auto& e : ext.as_array()) {
        if (!e.is_object()) return answer("NG: bad_request: extension");
        qkdn::json::ObjectReader o(e.as_object(), "extension");
        refused = "withdraw";
        withdraw = withdraw || o.opt_bool("withdraw").value_or(false);
        refused = "interval_s";
        if (const auto i = o.opt_number("interval_s")) {
          if (!(*i >= 0) || *i > 1e9) return answer("NG: bad_request: interval_s");
          interval_s = *i;
        }
      }
    } catch (const qkdn::InvalidArgument&) {
      return answer("NG: bad_request: " + (refused.empty() ? std::string("extension") : refused));
    }
  }
  if (r.instruction_id.empty()) return answer("NG: bad_request: instruction_id");
  if (withdraw) {  // docs/ck-extensions.md: stop; an in-flight relay still fills the pool
    if (auto it = instructions_.find(r.instruction_id); it != instructions_.end()) {
      instruction_notifications_.erase(it->second.notification);
      instructions_.erase(it);
    }
    log_line(LogLevel::kInfo,
             "KM " + km_id_ + ": relay instruction " + r.instruction_id + " withdrawn");
    return answer("OK");
  }
  const auto& kms = core_.config().topology.kms;
  const bool known = std::any_of(kms.begin(), kms.end(),
                                 [&](const auto& k) { return k.km_id == r.destination_kma_id; });
  if (r.destination_kma_id == km_id_ || !known) {
    return answer("NG: unknown_kma: destination " + r.destination_kma_id);
  }
  const std::int64_t key_bits = r.key_size.value_or(kKeyBits);
  if (r.number_of_keys < 1 || r.number_of_keys > limits::kMaxKeysPerInstruction) {
    return answer("NG: bad_request: number_of_keys must be 1.." +
                  std::to_string(limits::kMaxKeysPerInstruction));
  }
  if (key_bits < 1 || key_bits > limits::kMaxSaeKeyBits) {
    return answer("NG: bad_request: key_size must be 1.." + std::to_string(limits::kMaxSaeKeyBits));
  }
  Instruction ins;
  try {
    if (r.not_before) ins.not_before = parse_rfc3339(*r.not_before);
    if (r.not_after) ins.not_after = parse_rfc3339(*r.not_after);
  } catch (const std::exception&) {
    return answer("NG: bad_request: not_before / not_after");
  }
  ins.destination = r.destination_kma_id;
  {
    // A relay's hop key IDs must fit one 0x4104 (key_limits.hpp); the controller's route for the
    // instruction's relays is the one it names. Link names are not in the 0x41E5: counted as 64.
    std::int64_t names = static_cast<std::int64_t>(km_id_.size() + r.destination_kma_id.size());
    for (const auto& t : r.transit_kma_ids) names += static_cast<std::int64_t>(t.size());
    const auto hops = static_cast<std::int64_t>(r.transit_kma_ids.size()) + 1;
    ins.max_relay_units =
        std::max<std::int64_t>(1, limits::max_keys_per_relay(hops, names + 64 * hops));
  }
  ins.per_key = (key_bits + kKeyBits - 1) / kKeyBits;
  ins.units = r.number_of_keys * ins.per_key;
  if (ins.per_key > ins.max_relay_units) {
    return answer("NG: bad_request: a key of " + std::to_string(key_bits) + " bits needs " +
                  std::to_string(ins.per_key) + " units; one relay on this route carries " +
                  std::to_string(ins.max_relay_units));
  }
  // A round must fit the pre-positioned pool, or it could never complete: refused loudly here
  // rather than cut silently later.
  if (ins.units > static_cast<std::int64_t>(prepositioned_cap())) {
    return answer("NG: bad_request: " + std::to_string(ins.units) +
                  " units of 256 bits per round exceed the pre-positioned pool of " +
                  std::to_string(prepositioned_cap()));
  }
  ins.interval_s = interval_s;
  ins.message_id = message_id;
  ins.next_due = std::chrono::steady_clock::now();
  if (auto old = instructions_.find(r.instruction_id); old != instructions_.end()) {
    // Replaced: what is in flight still counts for this instruction.
    ins.notification = old->second.notification;
    ins.notification_deadline = old->second.notification_deadline;
    ins.relay_id = old->second.relay_id;
    ins.keys_relayed = old->second.keys_relayed;
  }
  instructions_[r.instruction_id] = std::move(ins);
  log_line(LogLevel::kInfo, "KM " + km_id_ + ": relay instruction " + r.instruction_id + " to " +
                                r.destination_kma_id);
  resp.keys_relayed = 0;
  answer("OK");
}

void KmHost::run_instructions(SteadyTime now) {
  if (instructions_.empty()) return;
  const auto wall = std::chrono::system_clock::now();
  auto channel = channel_;
  for (auto it = instructions_.begin(); it != instructions_.end();) {
    auto& ins = it->second;
    if (ins.not_after && wall > *ins.not_after) {  // the window is over
      if (!ins.complete && (ins.round_left > 0 || (ins.interval_s <= 0 && ins.keys_relayed == 0))) {
        // The window closed with the round unfinished: said, not dropped.
        report_instruction(it->first, ins,
                           "NG: window_closed: " + std::to_string(ins.keys_relayed) +
                               " keys relayed, the round lacked " +
                               std::to_string(ins.round_left > 0 ? ins.round_left : ins.units) +
                               " units",
                           0);
      }
      instruction_notifications_.erase(ins.notification);
      it = instructions_.erase(it);
      continue;
    }
    if (ins.notification != 0 && now >= ins.notification_deadline) {  // no 0x4104 came
      instruction_notifications_.erase(ins.notification);
      ins.notification = 0;
    }
    const bool in_flight = ins.notification != 0 || !ins.relay_id.empty();
    const bool waiting = ins.not_before && wall < *ins.not_before;
    if (ins.complete || in_flight || waiting || !channel || !registered_) {
      ++it;
      continue;
    }
    const auto interval = std::chrono::duration_cast<SteadyTime::duration>(
        std::chrono::duration<double>(ins.interval_s > 0 ? ins.interval_s : 1.0));
    if (ins.round_left == 0) {  // between rounds: the next starts at next_due
      if (now < ins.next_due) {
        ++it;
        continue;
      }
      ins.round_left = ins.units;
      ins.next_due = now + interval;
    } else if (now < ins.retry_at) {
      ++it;
      continue;
    } else if (ins.interval_s > 0 && now >= ins.next_due) {
      // The next round is due and this one is not done (the pool stayed full, or the links
      // were too slow): said, and the new round starts from its full size.
      log_line(LogLevel::kWarn, "KM " + km_id_ + ": relay instruction " + it->first +
                                    ": a round ended " + std::to_string(ins.round_left) +
                                    " units short");
      ins.round_left = ins.units;
      ins.next_due = now + interval;
    }
    const auto& pool = prepositioned_[{km_id_, ins.destination}];
    const auto room = static_cast<std::int64_t>(prepositioned_cap()) -
                      static_cast<std::int64_t>(pool.units.size());
    // Whole keys only: a key's units never straddle two relays (keys_relayed counts keys).
    std::int64_t n = std::min({ins.round_left, room, ins.max_relay_units});
    n -= n % std::max<std::int64_t>(1, ins.per_key);
    // A failed or refused relay, or a full pool, is tried again after this.
    ins.retry_at = now + std::min<SteadyTime::duration>(interval, kInstructionRetry);
    if (n < 1) {  // no room for a whole key: wait until SAEs take units from the pool
      ++it;
      continue;
    }
    ck::KeyRelayRequestNotification req;
    req.source_kma_id = km_id_;
    req.destination_kma_id = ins.destination;
    req.number_of_keys = n;
    req.key_size = kKeyBits;
    // Tells the controller this relay serves an instruction: its keys are counted once, by the
    // keys_relayed of the 0x14E6 that follows (docs/ck-extensions.md).
    req.extension = ck::make_extension_string("instruction_id", it->first);
    ins.notification = channel->send(ck::Message{std::move(req)});
    ins.notification_deadline = now + kRelayTimeout;
    instruction_notifications_[ins.notification] = it->first;
    ++it;
  }
}

void KmHost::report_instruction(const std::string& instruction_id, const Instruction& ins,
                                std::string response, std::int64_t keys) {
  if (response != "OK") {
    log_line(LogLevel::kWarn,
             "KM " + km_id_ + ": relay instruction " + instruction_id + ": " + response);
  }
  if (!channel_ || !registered_) return;
  ck::RelayInstructionResponse report;
  report.instruction_id = instruction_id;
  report.response = std::move(response);
  report.keys_relayed = keys;
  channel_->send(ck::Message{std::move(report)}, ins.message_id);
}

bool KmHost::fail_instruction_notification(std::uint32_t message_id, const std::string& reason) {
  auto in = instruction_notifications_.find(message_id);
  if (in == instruction_notifications_.end()) return false;
  if (auto it = instructions_.find(in->second); it != instructions_.end()) {
    it->second.notification = 0;  // retried at retry_at
  }
  log_line(LogLevel::kWarn,
           "KM " + km_id_ + ": relay instruction " + in->second + ": relay refused: " + reason);
  instruction_notifications_.erase(in);
  return true;
}

void KmHost::finish_instruction_relay(const std::string& request_id, const std::string& response) {
  auto ir = instruction_relays_.find(request_id);
  if (ir == instruction_relays_.end()) return;
  const auto [instruction_id, route] = std::move(ir->second);
  instruction_relays_.erase(ir);
  auto it = instructions_.find(instruction_id);
  if (it != instructions_.end() && it->second.relay_id == request_id) it->second.relay_id.clear();
  if (response != "OK") return;
  auto d = delivered_.find(request_id);
  if (d == delivered_.end()) return;
  auto& pool = prepositioned_[{km_id_, route.back()}];
  // Source units expire no later than the destination's (their clock started at relay start).
  const auto count = static_cast<std::int64_t>(d->second.keys.size());
  for (auto& k : d->second.keys) pool.units.push_back(PoolUnit{k, d->second.expires});
  pool.route = route;
  delivered_.erase(d);
  if (it == instructions_.end()) return;  // withdrawn meanwhile: the units stay usable
  auto& ins = it->second;
  const std::int64_t keys = count / std::max<std::int64_t>(1, ins.per_key);
  ins.keys_relayed += keys;
  const bool in_round = ins.round_left > 0;  // not a relay of an instruction since replaced
  ins.round_left = std::max<std::int64_t>(0, ins.round_left - count);
  ins.retry_at = SteadyTime{};  // the rest of the round at once
  if (in_round && ins.round_left == 0 && ins.interval_s <= 0) {
    ins.complete = true;  // once: done (kept, so its keys_relayed can still be read)
    log_line(LogLevel::kInfo, "KM " + km_id_ + ": relay instruction " + instruction_id +
                                  " complete: " + std::to_string(ins.keys_relayed) + " keys");
  }
  report_instruction(instruction_id, ins, "OK", keys);
}

bool KmHost::send_claim(const std::string& claim_id, const PrePool& pool,
                        const std::vector<KeyBlock>& units, const std::string& master_sae,
                        const std::string& slave_sae, const std::string& session_id,
                        std::int64_t key_bits, const std::string& exchange) {
  if (pool.route.size() < 2 || pool.route.front() != km_id_) return false;
  LinkEnd* out = hop_link(pool.route[1], std::nullopt);
  if (out == nullptr || !out->up()) return false;
  json::array ids;
  std::vector<KeyId> unit_ids;
  for (const auto& u : units) {
    ids.emplace_back(key_id_to_string(u.id));
    unit_ids.push_back(u.id);
  }
  json::object c{{"claim_id", claim_id},
                 {"source_kma_id", km_id_},
                 {"destination_kma_id", pool.route.back()},
                 {"route", to_array(pool.route)},
                 {"master_sae", master_sae},
                 {"slave_sae", slave_sae},
                 {"session_id", session_id},
                 {"key_bits", key_bits},
                 {"key_ids", std::move(ids)}};
  auto pad = pad_of(units);
  const auto tag = hop_tag(pad,
                           claim_aad(claim_id, km_id_, pool.route.back(), master_sae, slave_sae,
                                     session_id, key_bits, unit_ids),
                           {});
  wipe(pad);
  c["tag"] = to_hex(tag.data(), tag.size());
  if (!exchange.empty()) c[hybrid::kFrameField] = json::parse(exchange);
  out->session->send(kma::encode_frame(kma::Type::kClaim, json::serialize(c)));
  return true;
}

void KmHost::on_claim_frame(LinkEnd& link, const std::shared_ptr<KmaSession>& session,
                            const std::string& payload) {
  const std::string id = kma::request_id_of(payload, "claim_id");
  auto answer = [&](const std::string& response) {
    session->send(claim_ack_frame(id, response));
    if (response != "OK")
      log_line(LogLevel::kWarn, "KM " + km_id_ + ": claim " + id + ": " + response);
  };
  std::optional<kma::Claim> parsed;
  try {
    parsed = kma::parse_claim(payload);
  } catch (const kma::BadMessage& e) {
    return answer(std::string("NG: bad_request: malformed claim: ") + e.what());
  }
  const kma::Claim& c = *parsed;
  const auto& route = c.route;
  const auto at = std::find(route.begin(), route.end(), km_id_);
  if (at == route.end() || at == route.begin() || *(at - 1) != link.peer_km) {
    return answer("NG: bad_request: claim route");
  }
  if (forwarded_claims_.contains(id)) return answer("NG: bad_request: duplicate claim_id");
  if (at + 1 != route.end()) {  // transit: pass it on, remember where the answer goes
    LinkEnd* out = hop_link(*(at + 1), std::nullopt);
    if (out == nullptr || !out->up()) {
      return answer("NG: peer_unreachable: " + km_id_ + "->" + *(at + 1));
    }
    out->session->send(kma::encode_frame(kma::Type::kClaim, payload));
    forwarded_claims_[id] = {link.link_id, std::chrono::steady_clock::now() + 2 * kRelayTimeout};
    return;
  }
  // Destination: the units must all be in the pool from the source, and the tag must match.
  auto& pool = prepositioned_[{route.front(), km_id_}];
  std::vector<std::size_t> where;
  for (const auto& kid : c.key_ids) {  // parse_claim: no ID twice
    auto u = std::find_if(pool.units.begin(), pool.units.end(),
                          [&](const PoolUnit& p) { return p.key.id == kid; });
    if (u == pool.units.end()) return answer("NG: unknown_key: not pre-positioned at " + km_id_);
    where.push_back(static_cast<std::size_t>(u - pool.units.begin()));
  }
  std::vector<KeyBlock> units;
  units.reserve(where.size());
  for (auto i : where) units.push_back(pool.units[i].key);
  auto pad = pad_of(units);
  const auto expect = hop_tag(pad, claim_aad(c), {});
  wipe(pad);
  if (CRYPTO_memcmp(expect.data(), c.tag.data(), 32) != 0) {
    return answer("NG: integrity: claim tag mismatch");
  }
  std::erase_if(pool.units, [&](const PoolUnit& p) {
    return std::find(c.key_ids.begin(), c.key_ids.end(), p.key.id) != c.key_ids.end();
  });
  // Checked after the units left the pool: the source dropped them too, whatever the answer.
  std::optional<hybrid::Shared> shared;
  std::string exchange;
  const auto refusal = accept_combination(c.sae.master_sae, c.sae.slave_sae,
                                          hybrid::exchange_of(payload), shared, exchange);
  if (!refusal.empty()) return answer(refusal);
  const auto filed = file_supplied(units, c.sae.key_bits, c.sae.master_sae, c.sae.slave_sae,
                                   shared ? &*shared : nullptr);
  record_delivery(
      slave_delivery(c.sae, route.front(), "pool", shared, units.size(), filed.first_key_id));
  session->send(claim_ack_frame(id, "OK", exchange, filed.key_check));
}

void KmHost::on_claim_ack(const std::string& payload) {
  kma::Ack ack;
  try {
    ack = kma::parse_ack(payload, "claim_id");
  } catch (const kma::BadMessage& e) {
    ack.id = kma::request_id_of(payload, "claim_id");
    if (ack.id.empty()) {
      log_line(LogLevel::kWarn, "KM " + km_id_ + ": malformed claim answer: " + e.what());
      return;
    }
    ack.response = std::string("NG: bad_request: malformed claim answer: ") + e.what();
  }
  const std::string& id = ack.id;
  const std::string& response = ack.response;
  if (auto f = forwarded_claims_.find(id); f != forwarded_claims_.end()) {
    auto l = link_by_id_.find(f->second.first);
    if (l != link_by_id_.end() && l->second->session) {
      // Forwarded as it came (key exchange answer and key check included).
      l->second->session->send(kma::encode_frame(kma::Type::kClaimAck, payload));
    }
    forwarded_claims_.erase(f);
    return;
  }
  auto it = waits_by_relay_.find(id);
  if (it == waits_by_relay_.end()) return;
  auto w = it->second;
  waits_by_relay_.erase(it);
  w->kex_answer = hybrid::exchange_of(payload);
  w->key_check = hybrid::string_of(payload, "key_check");
  complete_wait(w, response, 503);
}

void KmHost::wipe_prepositioned() {
  prepositioned_.clear();  // KeyBlock wipes its bytes
  instructions_.clear();
  instruction_notifications_.clear();
  instruction_relays_.clear();
  forwarded_claims_.clear();
}

net::awaitable<std::size_t> KmHost::prepositioned_count(std::string source_km,
                                                        std::string dest_km) {
  auto it = prepositioned_.find({source_km, dest_km});
  co_return it == prepositioned_.end() ? 0 : it->second.units.size();
}

net::awaitable<std::int64_t> KmHost::instruction_keys_relayed(std::string instruction_id) {
  auto it = instructions_.find(instruction_id);
  co_return it == instructions_.end() ? -1 : it->second.keys_relayed;
}

}  // namespace qkdn::agent
