#include "qkdn/controller/ledger.hpp"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <unordered_set>

#include "qkdn/controller/error.hpp"

namespace qkdn::controller {

namespace {

int hex_value(char c) noexcept {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return c - 'A' + 10;  // is_uuid admitted only hex digits
}

std::string hex64(std::uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

void check_hop(const HopRef& hop, const char* what) {
  if (hop.relay_id.empty() || hop.km_id.empty() || hop.peer_km_id.empty() || hop.link_id.empty()) {
    throw InvalidArgument(std::string("ledger: ") + what +
                          ": hop needs relay_id, km_id, peer_km_id and link_id");
  }
}

/// Empty list, malformed or repeated IDs: the caller's input is broken. A UUID is the same key
/// in either case, as the seen-set stores it.
std::optional<std::string> list_problem(const std::vector<std::string>& key_ids) {
  if (key_ids.empty()) return "no key IDs";
  std::unordered_set<std::string> distinct;
  distinct.reserve(key_ids.size());
  for (const auto& id : key_ids) {
    if (!is_valid_id(id)) return "malformed key ID '" + id.substr(0, 64) + "'";
    std::string norm = id;
    if (is_uuid(id)) {
      for (auto& c : norm) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    }
    if (!distinct.insert(std::move(norm)).second) return "key ID " + id + " is named twice";
  }
  return std::nullopt;
}

}  // namespace

std::string_view to_string(LedgerState s) noexcept {
  switch (s) {
    case LedgerState::kReserved:
      return "reserved";
    case LedgerState::kAllocated:
      return "allocated";
    case LedgerState::kConsumed:
      return "consumed";
    case LedgerState::kReleased:
      return "released";
  }
  return "released";
}

LedgerState parse_ledger_state(std::string_view s) {
  for (const LedgerState k : {LedgerState::kReserved, LedgerState::kAllocated,
                              LedgerState::kConsumed, LedgerState::kReleased}) {
    if (to_string(k) == s) return k;
  }
  throw InvalidArgument("unknown ledger key state '" + std::string(s) + "'");
}

std::size_t ReservationLedger::Uuid128Hash::operator()(const Uuid128& u) const noexcept {
  // The bits are random (UUIDv4): mixing the halves is enough.
  return static_cast<std::size_t>(u.hi ^ (u.lo * 0x9e3779b97f4a7c15ULL));
}

ReservationLedger::ReservationLedger(Random& random, LedgerConfig config) : config_(config) {
  if (config_.reservation_lease <= Millis{0} || config_.allocation_lease <= Millis{0}) {
    throw InvalidArgument("ledger: leases must be positive");
  }
  nonce_ = hex64(random.next_u64()).substr(0, 12);
}

LedgerBatch ReservationLedger::new_batch(const std::string& relay_id, std::string_view step) {
  LedgerBatch b;
  b.relay_id = relay_id;
  b.idempotency_key =
      relay_id + "/" + std::string(step) + "/" + nonce_ + "-" + std::to_string(++seq_);
  return b;
}

ReservationLedger::Uuid128 ReservationLedger::uuid_bits(const std::string& uuid) noexcept {
  Uuid128 u;
  int n = 0;
  for (const char c : uuid) {
    if (c == '-') continue;
    auto& half = n < 16 ? u.hi : u.lo;
    half = (half << 4) | static_cast<std::uint64_t>(hex_value(c));
    ++n;
  }
  return u;
}

const ReservationLedger::Seen* ReservationLedger::find_seen(const std::string& key_id) const {
  if (is_uuid(key_id)) {
    const auto it = seen_uuid_.find(uuid_bits(key_id));
    return it == seen_uuid_.end() ? nullptr : &it->second;
  }
  const auto it = seen_other_.find(key_id);
  return it == seen_other_.end() ? nullptr : &it->second;
}

std::optional<LedgerState> ReservationLedger::state_of(const std::string& key_id) const {
  const Seen* s = find_seen(key_id);
  if (s == nullptr) return std::nullopt;
  return s->state;
}

bool ReservationLedger::seen(const std::string& key_id) const {
  return find_seen(key_id) != nullptr;
}

namespace {
std::string site_key(const HopRef& hop) {
  return hop.km_id + "\n" + hop.peer_km_id + "\n" + hop.link_id;
}
}  // namespace

std::uint32_t ReservationLedger::site_of(const HopRef& hop) {
  std::string key = site_key(hop);
  const auto it = site_index_.find(key);
  if (it != site_index_.end()) return it->second;
  const auto index = static_cast<std::uint32_t>(sites_.size());
  sites_.push_back(key);
  site_index_.emplace(std::move(key), index);
  return index;
}

std::optional<std::uint32_t> ReservationLedger::find_site(const HopRef& hop) const {
  const auto it = site_index_.find(site_key(hop));
  if (it == site_index_.end()) return std::nullopt;
  return it->second;
}

bool ReservationLedger::can_reserve(const HopRef& hop, const std::string& key_id) const {
  const Seen* s = find_seen(key_id);
  if (s == nullptr) return true;
  // Released before allocation: the KM never used it. Same site only: a key belongs to the link
  // end that reserved it first (the KMs split a link's keys by parity).
  if (s->state != LedgerState::kReleased || s->ever_allocated) return false;
  const auto site = find_site(hop);
  return site && *site == s->site;
}

bool ReservationLedger::retired(const std::string& key_id) const {
  const Seen* s = find_seen(key_id);
  if (s == nullptr) return false;
  return s->state == LedgerState::kConsumed ||
         (s->state == LedgerState::kReleased && s->ever_allocated);
}

bool ReservationLedger::ever_allocated(const std::string& key_id) const {
  const Seen* s = find_seen(key_id);
  return s != nullptr && s->ever_allocated;
}

void ReservationLedger::remember(const std::string& key_id, LedgerState state, bool ever_allocated,
                                 std::uint32_t site) {
  const Seen seen{state, ever_allocated, site};
  if (is_uuid(key_id)) {
    seen_uuid_[uuid_bits(key_id)] = seen;
  } else {
    seen_other_[key_id] = seen;
  }
}

std::size_t ReservationLedger::seen_count() const noexcept {
  return seen_uuid_.size() + seen_other_.size();
}

void ReservationLedger::count(const std::string& link_id, std::optional<LedgerState> from,
                              LedgerState to) {
  LinkCounters& c = counters_[link_id];
  auto slot = [&c](LedgerState s) -> std::uint64_t& {
    switch (s) {
      case LedgerState::kReserved:
        return c.reserved;
      case LedgerState::kAllocated:
        return c.allocated;
      case LedgerState::kConsumed:
        return c.consumed;
      case LedgerState::kReleased:
        return c.released;
    }
    return c.released;
  };
  if (from) --slot(*from);
  ++slot(to);
}

LedgerEntry ReservationLedger::entry_of(const std::string& key_id, const LiveKey& key,
                                        LedgerState state, SysTime now) {
  LedgerEntry e;
  e.key_id = key_id;
  e.link_id = key.hop.link_id;
  e.km_id = key.hop.km_id;
  e.peer_km_id = key.hop.peer_km_id;
  e.relay_id = key.hop.relay_id;
  e.state = std::string(to_string(state));
  if (state == LedgerState::kReserved || state == LedgerState::kAllocated) {
    e.lease_expires_at = key.lease_expires_at;
  }
  e.updated_at = now;
  e.ever_allocated = key.ever_allocated;
  return e;
}

std::optional<std::string> ReservationLedger::reserve_problem(
    const HopRef& hop, const std::vector<std::string>& key_ids) const {
  if (hop.relay_id.empty() || hop.km_id.empty() || hop.peer_km_id.empty() || hop.link_id.empty()) {
    return "hop needs relay_id, km_id, peer_km_id and link_id";
  }
  if (auto p = list_problem(key_ids)) return p;
  for (const auto& id : key_ids) {
    if (can_reserve(hop, id)) continue;
    const Seen& s = *find_seen(id);
    std::string why(to_string(s.state));
    if (s.state == LedgerState::kReleased) {
      why = s.ever_allocated ? "released after allocation" : "released, reserved by another hop";
    } else if (const LiveKey* k = find_live(id); k != nullptr) {
      why.append(" by relay ").append(k->hop.relay_id);
    }
    std::string text = "key ID ";
    text.append(id).append(" was already seen (").append(why).append(")");
    return text;
  }
  return std::nullopt;
}

LedgerBatch ReservationLedger::reserve(const HopRef& hop, const std::vector<std::string>& key_ids,
                                       SysTime now) {
  check_hop(hop, "reserve");
  if (auto p = list_problem(key_ids)) throw InvalidArgument("ledger: reserve: " + *p);
  if (auto p = reserve_problem(hop, key_ids)) throw Conflict("ledger: reserve: " + *p);
  LedgerBatch batch = new_batch(hop.relay_id, "reserve");
  const SysTime lease = now + config_.reservation_lease;
  const std::uint32_t site = site_of(hop);
  for (const auto& id : key_ids) {
    // A key released before allocation comes back: it leaves the released count.
    const bool again = seen(id);
    LiveKey key{hop, LedgerState::kReserved, lease, now, false};
    batch.entries.push_back(entry_of(id, key, LedgerState::kReserved, now));
    live_.emplace(id, std::move(key));
    live_by_relay_[hop.relay_id].insert(id);
    leases_.emplace(lease, id);
    remember(id, LedgerState::kReserved, false, site);
    count(hop.link_id, again ? std::optional<LedgerState>(LedgerState::kReleased) : std::nullopt,
          LedgerState::kReserved);
  }
  return batch;
}

void ReservationLedger::check_live(const std::string& what, const std::string& relay_id,
                                   const HopRef* hop, const std::vector<std::string>& key_ids,
                                   std::initializer_list<LedgerState> from) const {
  if (auto p = list_problem(key_ids)) throw InvalidArgument("ledger: " + what + ": " + *p);
  for (const auto& id : key_ids) {
    std::string text = "ledger: ";
    text.append(what).append(": key ID ").append(id);
    const auto it = live_.find(id);
    if (it == live_.end()) {
      const auto s = state_of(id);
      if (!s)
        throw NotFound(std::string("ledger: ").append(what).append(": unknown key ID ").append(id));
      throw Conflict(text.append(" is ").append(to_string(*s)));
    }
    const LiveKey& k = it->second;
    if (k.hop.relay_id != relay_id) {
      throw Conflict(text.append(" belongs to relay ").append(k.hop.relay_id));
    }
    if (hop != nullptr && !(k.hop == *hop)) {
      throw Conflict(text.append(" belongs to hop ")
                         .append(k.hop.km_id)
                         .append("->")
                         .append(k.hop.peer_km_id)
                         .append(" via ")
                         .append(k.hop.link_id));
    }
    if (std::find(from.begin(), from.end(), k.state) == from.end()) {
      throw Conflict(text.append(" is ").append(to_string(k.state)));
    }
  }
}

void ReservationLedger::move(const std::string& key_id, LedgerState to, SysTime now,
                             LedgerBatch& batch) {
  auto it = live_.find(key_id);
  LiveKey& k = it->second;
  leases_.erase({k.lease_expires_at, key_id});
  count(k.hop.link_id, k.state, to);
  if (to == LedgerState::kAllocated) k.ever_allocated = true;
  remember(key_id, to, k.ever_allocated, site_of(k.hop));
  if (to == LedgerState::kAllocated) {
    k.state = to;
    k.lease_expires_at = now + config_.allocation_lease;
    k.updated_at = now;
    leases_.emplace(k.lease_expires_at, key_id);
    batch.entries.push_back(entry_of(key_id, k, to, now));
    return;
  }
  batch.entries.push_back(entry_of(key_id, k, to, now));
  auto r = live_by_relay_.find(k.hop.relay_id);
  r->second.erase(key_id);
  if (r->second.empty()) live_by_relay_.erase(r);
  live_.erase(it);
}

LedgerBatch ReservationLedger::allocate(const HopRef& hop, const std::vector<std::string>& key_ids,
                                        SysTime now) {
  check_hop(hop, "allocate");
  check_live("allocate", hop.relay_id, &hop, key_ids, {LedgerState::kReserved});
  LedgerBatch batch = new_batch(hop.relay_id, "allocate");
  for (const auto& id : key_ids) move(id, LedgerState::kAllocated, now, batch);
  return batch;
}

LedgerBatch ReservationLedger::consume(const std::string& relay_id,
                                       const std::vector<std::string>& key_ids, SysTime now) {
  check_live("consume", relay_id, nullptr, key_ids, {LedgerState::kAllocated});
  LedgerBatch batch = new_batch(relay_id, "consume");
  for (const auto& id : key_ids) move(id, LedgerState::kConsumed, now, batch);
  return batch;
}

LedgerBatch ReservationLedger::release(const std::string& relay_id,
                                       const std::vector<std::string>& key_ids, SysTime now) {
  check_live("release", relay_id, nullptr, key_ids,
             {LedgerState::kReserved, LedgerState::kAllocated});
  LedgerBatch batch = new_batch(relay_id, "release");
  for (const auto& id : key_ids) move(id, LedgerState::kReleased, now, batch);
  return batch;
}

LedgerBatch ReservationLedger::release_relay(const std::string& relay_id, SysTime now) {
  LedgerBatch batch = new_batch(relay_id, "release");
  for (const auto& id : live_keys(relay_id)) move(id, LedgerState::kReleased, now, batch);
  return batch;
}

LedgerBatch ReservationLedger::consume_relay(const std::string& relay_id, SysTime now) {
  const auto ids = live_keys(relay_id);
  for (const auto& id : ids) {
    if (live_.at(id).state != LedgerState::kAllocated) {
      std::string text = "ledger: consume: key ID ";
      text.append(id).append(" of relay ").append(relay_id).append(" is reserved, not allocated");
      throw Conflict(text);
    }
  }
  LedgerBatch batch = new_batch(relay_id, "consume");
  for (const auto& id : ids) move(id, LedgerState::kConsumed, now, batch);
  return batch;
}

std::vector<LedgerBatch> ReservationLedger::expire(SysTime now) {
  // Collect first: moving keys edits leases_.
  std::map<std::string, std::vector<std::string>> by_relay;
  for (auto it = leases_.begin(); it != leases_.end() && it->first <= now; ++it) {
    by_relay[live_.at(it->second).hop.relay_id].push_back(it->second);
  }
  std::vector<LedgerBatch> out;
  for (auto& [relay_id, ids] : by_relay) {
    std::sort(ids.begin(), ids.end());
    LedgerBatch batch = new_batch(relay_id, "expire");
    for (const auto& id : ids) move(id, LedgerState::kReleased, now, batch);
    out.push_back(std::move(batch));
  }
  return out;
}

std::vector<LedgerBatch> ReservationLedger::restore(const std::vector<LedgerEntry>& entries,
                                                    SysTime now) {
  if (seen_count() != 0) throw Conflict("ledger: restore into a ledger that is not empty");
  // Validate everything before changing anything.
  std::unordered_set<std::string_view> ids;
  ids.reserve(entries.size());
  for (const auto& e : entries) {
    if (!is_valid_id(e.key_id)) {
      throw InvalidArgument("ledger: restore: malformed key ID '" + e.key_id.substr(0, 64) + "'");
    }
    if (!ids.insert(e.key_id).second) {
      throw InvalidArgument("ledger: restore: key ID " + e.key_id + " appears twice");
    }
    const LedgerState s = parse_ledger_state(e.state);
    if ((s == LedgerState::kReserved || s == LedgerState::kAllocated) &&
        (e.relay_id.empty() || e.km_id.empty() || e.peer_km_id.empty() || e.link_id.empty())) {
      throw InvalidArgument("ledger: restore: live key ID " + e.key_id + " lacks its hop");
    }
  }
  std::map<std::string, std::vector<std::string>> stale;  // relay -> live keys to release
  for (const auto& e : entries) {
    const LedgerState s = parse_ledger_state(e.state);
    // A consumed or allocated key was allocated, whatever the row says.
    const bool allocated =
        e.ever_allocated || s == LedgerState::kAllocated || s == LedgerState::kConsumed;
    HopRef hop{e.relay_id, e.km_id, e.peer_km_id, e.link_id};
    remember(e.key_id, s, allocated, site_of(hop));
    count(e.link_id, std::nullopt, s);
    if (s == LedgerState::kConsumed || s == LedgerState::kReleased) continue;
    LiveKey key{std::move(hop), s, e.lease_expires_at.value_or(now), e.updated_at, allocated};
    leases_.emplace(key.lease_expires_at, e.key_id);
    live_by_relay_[e.relay_id].insert(e.key_id);
    if (key.lease_expires_at <= now) stale[e.relay_id].push_back(e.key_id);
    live_.emplace(e.key_id, std::move(key));
  }
  std::vector<LedgerBatch> out;
  for (auto& [relay_id, keys] : stale) {
    std::sort(keys.begin(), keys.end());
    LedgerBatch batch = new_batch(relay_id, "restore");
    for (const auto& id : keys) move(id, LedgerState::kReleased, now, batch);
    out.push_back(std::move(batch));
  }
  return out;
}

const LiveKey* ReservationLedger::find_live(const std::string& key_id) const {
  const auto it = live_.find(key_id);
  return it == live_.end() ? nullptr : &it->second;
}

std::vector<std::string> ReservationLedger::live_keys(const std::string& relay_id) const {
  const auto it = live_by_relay_.find(relay_id);
  if (it == live_by_relay_.end()) return {};
  return {it->second.begin(), it->second.end()};
}

std::vector<std::string> ReservationLedger::live_relays() const {
  std::vector<std::string> out;
  out.reserve(live_by_relay_.size());
  for (const auto& [id, keys] : live_by_relay_) out.push_back(id);
  return out;
}

LinkCounters ReservationLedger::counters(const std::string& link_id) const {
  const auto it = counters_.find(link_id);
  return it == counters_.end() ? LinkCounters{} : it->second;
}

std::optional<SysTime> ReservationLedger::next_expiry() const {
  if (leases_.empty()) return std::nullopt;
  return leases_.begin()->first;
}

}  // namespace qkdn::controller
