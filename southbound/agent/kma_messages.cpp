// Strict KMA message reading: see kma_messages.hpp.
#include "kma_messages.hpp"

#include <algorithm>
#include <cmath>
#include <set>

#include <boost/json/value.hpp>

#include "kma_wire.hpp"
#include "qkdn/controller/clock.hpp"
#include "qkdn/controller/error.hpp"
#include "qkdn/controller/key_limits.hpp"
#include "qkdn/json/reader.hpp"

namespace qkdn::agent::kma {

namespace json = boost::json;

namespace {

/// Largest link capacity a peer may announce (bits): 2^53, exact in a double.
constexpr std::int64_t kMaxCapacityBits = std::int64_t{1} << 53;
/// Largest key rate a peer may set (bit/s).
constexpr double kMaxKeyRateBps = 1e12;
/// Request IDs ("<km>-<uuid>" or a controller UUID): 1..256 characters of the ID alphabet.
constexpr std::size_t kMaxRequestIdBytes = 256;

[[noreturn]] void bad(std::string_view field, std::string_view rule) {
  throw BadMessage("field '" + std::string(field) + "' " + std::string(rule));
}

bool id_chars(std::string_view s) noexcept {
  for (const char c : s) {
    const bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == ':' || c == '-';
    if (!ok) return false;
  }
  return true;
}

// A Reject of the shared reader takes the message by value (qkdn/json/reader.hpp).
// NOLINTNEXTLINE(performance-unnecessary-value-param)
[[noreturn]] void refuse_payload(std::string message) { throw BadMessage(message); }

/// One payload as a JSON object through the shared strict reader (limits, exact numbers; its
/// refusals are BadMessage), with a small nesting bound (the deepest message is Relay: object /
/// hop_keys array / hop object / key_ids array = depth 4).
json::object object_of(std::string_view payload) {
  if (payload.size() > kMaxPayload) throw BadMessage("payload too large");
  return qkdn::json::parse_object(payload, "the payload", qkdn::json::ParseLimits{kMaxPayload, 8},
                                  refuse_payload);
}

const json::value& need(const json::object& o, std::string_view key) {
  const auto* v = o.if_contains(key);
  if (v == nullptr) bad(key, "is missing");
  return *v;
}

std::string text(const json::object& o, std::string_view key, std::size_t max = kMaxTextBytes) {
  const auto& v = need(o, key);
  if (!v.is_string()) bad(key, "must be a string");
  if (v.as_string().size() > max) bad(key, "is too long");
  return std::string(v.as_string());
}

/// A KM, link or SAE ID (ck-protocol.md clause 3).
std::string id(const json::object& o, std::string_view key) {
  std::string s = text(o, key, 128);
  if (!is_valid_id(s)) bad(key, "is not a valid ID");
  return s;
}

/// A request ID: like an ID, up to kMaxRequestIdBytes.
std::string request_id(const json::object& o, std::string_view key) {
  std::string s = text(o, key, kMaxRequestIdBytes);
  if (s.empty() || !id_chars(s)) bad(key, "is not a valid request ID");
  return s;
}

std::int64_t integer(const json::object& o, std::string_view key, std::int64_t lo,
                     std::int64_t hi) {
  const auto& v = need(o, key);
  std::int64_t n = 0;
  if (v.is_int64()) {
    n = v.as_int64();
  } else if (v.is_uint64()) {
    bad(key, "is out of range");
  } else {
    bad(key, "must be an integer");
  }
  if (n < lo || n > hi) {
    bad(key, "must be in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
  }
  return n;
}

std::optional<double> opt_number(const json::object& o, std::string_view key, double lo,
                                 double hi) {
  const auto* v = o.if_contains(key);
  if (v == nullptr) return std::nullopt;
  if (!v->is_number()) bad(key, "must be a number");
  const double d = v->to_number<double>();
  if (!std::isfinite(d) || d < lo || d > hi) bad(key, "is out of range");
  return d;
}

bool flag(const json::object& o, std::string_view key) {
  const auto& v = need(o, key);
  if (!v.is_bool()) bad(key, "must be a boolean");
  return v.as_bool();
}

const json::array& array(const json::object& o, std::string_view key, std::size_t lo,
                         std::size_t hi) {
  const auto& v = need(o, key);
  if (!v.is_array()) bad(key, "must be an array");
  const auto& a = v.as_array();
  if (a.size() < lo || a.size() > hi) {
    bad(key, "must hold " + std::to_string(lo) + ".." + std::to_string(hi) + " elements");
  }
  return a;
}

std::vector<std::string> ids(const json::object& o, std::string_view key, std::size_t lo,
                             std::size_t hi) {
  std::vector<std::string> out;
  for (const auto& e : array(o, key, lo, hi)) {
    if (!e.is_string() || !is_valid_id(std::string(e.as_string()))) {
      bad(key, "must hold valid IDs");
    }
    out.emplace_back(e.as_string());
  }
  return out;
}

/// Key IDs (UUID text), lo..hi of them, no duplicates.
std::vector<KeyId> key_ids(const json::object& o, std::string_view key, std::size_t lo,
                           std::size_t hi) {
  std::vector<KeyId> out;
  const auto& a = array(o, key, lo, hi);
  out.reserve(a.size());
  std::set<KeyId> seen;
  for (const auto& e : a) {
    auto kid = e.is_string() ? parse_key_id(std::string(e.as_string())) : std::nullopt;
    if (!kid) bad(key, "must hold key IDs (UUIDs)");
    if (!seen.insert(*kid).second) bad(key, "repeats a key ID");
    out.push_back(*kid);
  }
  return out;
}

std::vector<std::uint8_t> hex(const json::object& o, std::string_view key, std::size_t max_bytes) {
  const std::string s = text(o, key, 2 * max_bytes);
  if (s.size() % 2 != 0) bad(key, "must be hex with an even length");
  auto nib = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  std::vector<std::uint8_t> out(s.size() / 2);
  for (std::size_t i = 0; i < out.size(); ++i) {
    const int hi = nib(s[2 * i]);
    const int lo = nib(s[2 * i + 1]);
    if (hi < 0 || lo < 0) bad(key, "must be lower-case hex");
    out[i] = static_cast<std::uint8_t>(hi << 4 | lo);
  }
  return out;
}

std::array<std::uint8_t, 32> tag_of(const json::object& o) {
  const auto t = hex(o, "tag", 32);
  if (t.size() != 32) bad("tag", "must be 32 bytes");
  std::array<std::uint8_t, 32> out{};
  std::copy(t.begin(), t.end(), out.begin());
  return out;
}

/// "OK" or "NG: <reason>".
std::string response(const json::object& o) {
  std::string r = text(o, "response");
  if (r != "OK" && r.rfind("NG: ", 0) != 0) bad("response", "must be \"OK\" or \"NG: <reason>\"");
  return r;
}

SaeFiling sae_filing(const json::object& o, std::string_view bits_field) {
  SaeFiling f;
  f.master_sae = id(o, "master_sae");
  f.slave_sae = id(o, "slave_sae");
  f.session_id = request_id(o, "session_id");
  f.key_bits = integer(o, bits_field, limits::kMinSaeKeyBits, limits::kMaxSaeKeyBits);
  if (!limits::valid_sae_key_bits(f.key_bits)) bad(bits_field, "must be a multiple of 8");
  return f;
}

/// The keys must make whole SAE keys of `bits`.
void check_whole_keys(std::size_t units, std::int64_t bits, std::string_view key) {
  if (static_cast<std::int64_t>(units) % limits::kma_keys_per_sae_key(bits) != 0) {
    bad(key, "does not make whole keys of the given key size");
  }
}

/// A route: 2..kMaxRouteKms valid KM IDs, from `source` to `destination`, no KM twice.
std::vector<std::string> route_of(const json::object& o, const std::string& source,
                                  const std::string& destination) {
  auto r = ids(o, "route", 2, kMaxRouteKms);
  if (r.front() != source || r.back() != destination) {
    bad("route", "must run from source_kma_id to destination_kma_id");
  }
  if (std::set<std::string>(r.begin(), r.end()).size() != r.size()) bad("route", "repeats a KM");
  return r;
}

}  // namespace

Hello parse_hello(std::string_view payload) {
  const auto o = object_of(payload);
  return {id(o, "from_km"), id(o, "to_km"), id(o, "link_id")};
}

Sync parse_sync(std::string_view payload) {
  const auto o = object_of(payload);
  Sync s;
  const std::string last = text(o, "last_key_id", 64);
  if (!last.empty()) {
    s.last_key_id = parse_key_id(last);
    if (!s.last_key_id) bad("last_key_id", "must be \"\" or a key ID");
  }
  s.capacity_bits = integer(o, "capacity_bits", 0, kMaxCapacityBits);
  return s;
}

SyncOk parse_sync_ok(std::string_view payload) {
  const auto o = object_of(payload);
  return {flag(o, "in_sync"), integer(o, "capacity_bits", 0, kMaxCapacityBits)};
}

Control parse_control(std::string_view payload) {
  const auto o = object_of(payload);
  Control c;
  c.key_rate_bps = opt_number(o, "key_rate_bps", 0, kMaxKeyRateBps);
  c.qber = opt_number(o, "qber", 0, 1);
  if (o.contains("up")) c.up = flag(o, "up");
  return c;
}

PeerError parse_error(std::string_view payload) {
  const auto o = object_of(payload);
  return {text(o, "error", 64), text(o, "message")};
}

Ack parse_ack(std::string_view payload, std::string_view id_field) {
  const auto o = object_of(payload);
  return {request_id(o, id_field), response(o)};
}

Discard parse_discard(std::string_view payload) {
  const auto o = object_of(payload);
  return {id(o, "link_id"), key_ids(o, "key_ids", 1, kMaxDiscardIds)};
}

Relay parse_relay(std::string_view payload) {
  Relay r;
  r.meta = object_of(payload);
  const auto& o = r.meta;
  constexpr auto kMaxKeys = static_cast<std::size_t>(limits::kMaxKeysPerRelay);
  r.key_relay_request_id = request_id(o, "key_relay_request_id");
  r.source_kma_id = id(o, "source_kma_id");
  r.destination_kma_id = id(o, "destination_kma_id");
  r.from = id(o, "from");
  r.to = id(o, "to");
  if (o.contains("routing")) {
    const auto routing = text(o, "routing", 32);
    if (routing == "distributed") {
      r.distributed = true;
    } else if (routing != "centralized") {
      bad("routing", "must be \"centralized\" or \"distributed\"");
    }
  }
  // A distributed relay's route is the path so far: it ends at the KM this hop goes to.
  r.route = route_of(o, r.source_kma_id, r.distributed ? r.to : r.destination_kma_id);
  if (r.distributed && r.to != r.destination_kma_id &&
      std::find(r.route.begin(), r.route.end(), r.destination_kma_id) != r.route.end()) {
    bad("route", "passes the destination before its end");
  }
  r.key_ids = key_ids(o, "key_ids", 1, kMaxKeys);
  if (integer(o, "key_size", 0, limits::kMaxSaeKeyBits) != limits::kKmaKeyBits) {
    bad("key_size", "must be " + std::to_string(limits::kKmaKeyBits));
  }
  try {
    (void)parse_rfc3339(text(o, "created", 64));
  } catch (const Error&) {
    bad("created", "must be an RFC 3339 time");
  }
  // otp-xor: one hop key per relayed key; aes-256-gcm: one hop key per hop (relay_scheme.hpp).
  const auto encryption = text(o, "encryption", 64);
  if (encryption == "aes-256-gcm") {
    r.gcm = true;
  } else if (encryption != "otp-xor") {
    bad("encryption", "must be \"otp-xor\" or \"aes-256-gcm\"");
  }
  const std::size_t per_hop = r.gcm ? 1 : r.key_ids.size();
  if (text(o, "integrity", 64) != "hmac-sha256") bad("integrity", "must be \"hmac-sha256\"");
  const auto& hops = array(o, "hop_keys", r.route.size() - 1, r.route.size() - 1);
  for (std::size_t i = 0; i < hops.size(); ++i) {
    if (!hops[i].is_object()) bad("hop_keys", "must hold objects");
    const auto& h = hops[i].as_object();
    HopRef ref;
    ref.kma_id = id(h, "kma_id");
    ref.next_kma_id = id(h, "next_kma_id");
    ref.link_id = text(h, "link_id", 128);
    if (!ref.link_id.empty() && !is_valid_id(ref.link_id)) bad("link_id", "is not a valid ID");
    ref.key_ids = key_ids(h, "key_ids", per_hop, per_hop);
    if (ref.kma_id != r.route[i] || ref.next_kma_id != r.route[i + 1]) {
      bad("hop_keys", "do not follow the route");
    }
    r.hop_keys.push_back(std::move(ref));
  }
  if (o.contains("preposition")) r.preposition = flag(o, "preposition");
  if (o.contains("slave_sae") || o.contains("master_sae") || o.contains("sae_key_bits")) {
    r.sae = sae_filing(o, "sae_key_bits");
    check_whole_keys(r.key_ids.size(), r.sae->key_bits, "key_ids");
    if (r.preposition) bad("preposition", "and an SAE pair exclude each other");
  }
  r.ciphertext = hex(o, "ciphertext", kMaxKeys * kKeyBytes);
  if (r.ciphertext.size() != r.key_ids.size() * kKeyBytes) {
    bad("ciphertext", "must be as long as the keys it carries");
  }
  r.tag = tag_of(o);
  if (r.gcm) {
    const auto nonce = hex(o, "nonce", r.nonce.size());
    const auto gcm_tag = hex(o, "gcm_tag", r.gcm_tag.size());
    if (nonce.size() != r.nonce.size()) bad("nonce", "must be 12 bytes");
    if (gcm_tag.size() != r.gcm_tag.size()) bad("gcm_tag", "must be 16 bytes");
    std::copy(nonce.begin(), nonce.end(), r.nonce.begin());
    std::copy(gcm_tag.begin(), gcm_tag.end(), r.gcm_tag.begin());
  }
  return r;
}

Supply parse_supply(std::string_view payload) {
  const auto o = object_of(payload);
  Supply s;
  s.supply_id = request_id(o, "supply_id");
  s.sae = sae_filing(o, "key_bits");
  s.key_ids = key_ids(o, "key_ids", 1, static_cast<std::size_t>(limits::kMaxKeysPerSupply));
  check_whole_keys(s.key_ids.size(), s.sae.key_bits, "key_ids");
  return s;
}

Claim parse_claim(std::string_view payload) {
  const auto o = object_of(payload);
  Claim c;
  c.claim_id = request_id(o, "claim_id");
  c.source_kma_id = id(o, "source_kma_id");
  c.destination_kma_id = id(o, "destination_kma_id");
  c.route = route_of(o, c.source_kma_id, c.destination_kma_id);
  c.sae = sae_filing(o, "key_bits");
  c.key_ids = key_ids(o, "key_ids", 1, static_cast<std::size_t>(limits::kMaxKeysPerSupply));
  check_whole_keys(c.key_ids.size(), c.sae.key_bits, "key_ids");
  c.tag = tag_of(o);
  return c;
}

std::string request_id_of(std::string_view payload, std::string_view id_field) noexcept {
  try {
    return request_id(object_of(payload), id_field);
  } catch (...) {
    return {};
  }
}

}  // namespace qkdn::agent::kma
