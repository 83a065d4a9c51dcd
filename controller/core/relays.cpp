#include "qkdn/controller/relays.hpp"

#include <algorithm>
#include <utility>

#include "qkdn/controller/error.hpp"

namespace qkdn::controller {

namespace {

std::string hop_text(const RelayHop& h) {
  return "hop " + h.km_id + "->" + h.next_km_id + " via " + h.link_id;
}

/// `text` with every key ID of `ids` replaced by "<key ID>": a relay's reason reaches the API,
/// the database and info logs, and key IDs stay out of all three.
std::string without_key_ids(std::string text, const std::vector<std::string>& ids) {
  for (const auto& id : ids) {
    if (id.empty()) continue;
    for (auto pos = text.find(id); pos != std::string::npos; pos = text.find(id, pos)) {
      text.replace(pos, id.size(), "<key ID>");
    }
  }
  return text;
}

}  // namespace

std::int64_t max_keys_for(const Route& route) {
  std::int64_t names = 0;
  for (const auto& km : route.kms) names += static_cast<std::int64_t>(km.size());
  for (const auto& link : route.links) names += static_cast<std::int64_t>(link.size());
  return limits::max_keys_per_relay(static_cast<std::int64_t>(route.links.size()), names);
}

namespace {

std::vector<RelayHop> hops_of(const Route& route, std::int64_t number_of_keys) {
  std::vector<RelayHop> hops;
  for (std::size_t i = 0; i + 1 < route.kms.size(); ++i) {
    RelayHop h;
    h.km_id = route.kms[i];
    h.next_km_id = route.kms[i + 1];
    h.link_id = i < route.links.size() ? route.links[i] : std::string{};
    h.number_of_keys = number_of_keys;
    hops.push_back(std::move(h));
  }
  return hops;
}

/// Why `route` cannot carry a relay from src to dst, or nullopt.
std::optional<std::string> route_problem(const Route& route, const std::string& src,
                                         const std::string& dst) {
  if (route.kms.size() < 2) return "has no hop";
  if (route.links.size() + 1 != route.kms.size()) return "needs one link per hop";
  if (route.kms.front() != src || route.kms.back() != dst) {
    return "does not join " + src + " to " + dst;
  }
  for (const auto& km : route.kms) {
    if (km.empty()) return "names an empty KM";
  }
  for (const auto& l : route.links) {
    if (l.empty()) return "names an empty link";
  }
  for (std::size_t i = 0; i < route.kms.size(); ++i) {
    for (std::size_t j = i + 1; j < route.kms.size(); ++j) {
      if (route.kms[i] == route.kms[j]) return "visits " + route.kms[i] + " twice";
    }
  }
  return std::nullopt;
}

bool crosses(const Route& route, const std::string& km) {
  return std::find(route.kms.begin(), route.kms.end(), km) != route.kms.end();
}

HopRef hop_ref(const Relay& r, const RelayHop& h) {
  return {r.relay_id, h.km_id, h.next_km_id, h.link_id};
}

}  // namespace

std::string_view to_string(RelayState s) noexcept {
  switch (s) {
    case RelayState::kRequested:
      return "requested";
    case RelayState::kReserved:
      return "reserved";
    case RelayState::kRelaying:
      return "relaying";
    case RelayState::kRelayed:
      return "relayed";
    case RelayState::kFailed:
      return "failed";
    case RelayState::kVoided:
      return "voided";
  }
  return "failed";
}

RelayState parse_relay_state(std::string_view s) {
  for (const RelayState v : {RelayState::kRequested, RelayState::kReserved, RelayState::kRelaying,
                             RelayState::kRelayed, RelayState::kFailed, RelayState::kVoided}) {
    if (to_string(v) == s) return v;
  }
  throw InvalidArgument("unknown relay state '" + std::string(s) + "'");
}

bool is_final(RelayState s) noexcept {
  return s == RelayState::kRelayed || s == RelayState::kFailed || s == RelayState::kVoided;
}

std::string_view to_string(HopStage s) noexcept {
  switch (s) {
    case HopStage::kReserving:
      return "reserving";
    case HopStage::kReserved:
      return "reserved";
    case HopStage::kAllocating:
      return "allocating";
    case HopStage::kAllocated:
      return "allocated";
    case HopStage::kFailed:
      return "failed";
  }
  return "failed";
}

RelayRecord to_record(const Relay& r) {
  RelayRecord rec;
  rec.relay_id = r.relay_id;
  rec.session_id = r.session_id;
  rec.src_km = r.src_km;
  rec.dst_km = r.dst_km;
  rec.route_kms = r.route.kms;
  rec.route_links = r.route.links;
  rec.number_of_keys = r.number_of_keys;
  rec.key_size_bits = r.key_size_bits;
  rec.state = std::string(to_string(r.state));
  rec.reason = r.reason;
  rec.created_at = r.created_at;
  rec.updated_at = r.updated_at;
  return rec;
}

Relay relay_from_record(const RelayRecord& rec) {
  if (rec.relay_id.empty()) throw InvalidArgument("relay record without relay_id");
  if (!rec.route_kms.empty() && rec.route_links.size() + 1 != rec.route_kms.size()) {
    throw InvalidArgument("relay " + rec.relay_id + ": route needs one link per hop");
  }
  if (rec.number_of_keys < 0 || rec.key_size_bits < 1) {
    throw InvalidArgument("relay " + rec.relay_id + ": bad key counts");
  }
  Relay r;
  r.relay_id = rec.relay_id;
  r.session_id = rec.session_id;
  r.src_km = rec.src_km;
  r.dst_km = rec.dst_km;
  r.number_of_keys = rec.number_of_keys;
  r.key_size_bits = rec.key_size_bits;
  r.state = parse_relay_state(rec.state);
  r.reason = rec.reason;
  r.route.kms = rec.route_kms;
  r.route.links = rec.route_links;
  r.hops = hops_of(r.route, r.number_of_keys);
  r.created_at = rec.created_at;
  r.updated_at = rec.updated_at;
  return r;
}

bool RelayOutput::empty() const noexcept {
  return reserve.empty() && allocate.empty() && relay_requests.empty() && release.empty() &&
         ledger.empty() && records.empty() && finished.empty() && ignored.empty();
}

void RelayOutput::append(RelayOutput&& other) {
  auto move_all = [](auto& to, auto& from) {
    to.insert(to.end(), std::make_move_iterator(from.begin()), std::make_move_iterator(from.end()));
  };
  move_all(reserve, other.reserve);
  move_all(allocate, other.allocate);
  move_all(relay_requests, other.relay_requests);
  move_all(release, other.release);
  move_all(ledger, other.ledger);
  move_all(records, other.records);
  move_all(finished, other.finished);
  move_all(ignored, other.ignored);
}

RelayTable::RelayTable(ReservationLedger& ledger, Random& random, RelayConfig config)
    : ledger_(&ledger), random_(&random), config_(config) {
  if (config_.admission_timeout <= Millis{0} || config_.relaying_timeout <= Millis{0}) {
    throw InvalidArgument("relays: timeouts must be positive");
  }
  if (config_.max_attempts < 1 || config_.max_finished < 1 || config_.max_number_of_keys < 1 ||
      config_.max_number_of_keys > limits::kMaxKeysPerRelay) {
    throw InvalidArgument(
        "relays: max_attempts and max_finished must be >= 1, max_number_of_keys in [1, " +
        std::to_string(limits::kMaxKeysPerRelay) + "]");
  }
  if (ledger.config().allocation_lease < config_.admission_timeout + config_.relaying_timeout) {
    throw InvalidArgument(
        "relays: the ledger's allocation_lease must be at least admission_timeout + "
        "relaying_timeout");
  }
}

// --- plumbing --------------------------------------------------------------------------------

void RelayTable::record(Relay& r, SysTime now, RelayOutput& out) {
  r.updated_at = now;
  out.records.push_back(to_record(r));
}

void RelayTable::persist_batch(LedgerBatch&& batch, RelayOutput& out) {
  if (batch.empty()) return;
  // The KMs learn every release the moment the ledger makes it: one command per hop.
  const std::size_t first = out.release.size();
  for (const auto& e : batch.entries) {
    if (e.state != to_string(LedgerState::kReleased)) continue;
    auto it = std::find_if(out.release.begin() + static_cast<std::ptrdiff_t>(first),
                           out.release.end(), [&](const ReleaseCommand& c) {
                             return c.relay_id == e.relay_id && c.km_id == e.km_id &&
                                    c.next_kma_id == e.peer_km_id && c.link_id == e.link_id;
                           });
    if (it == out.release.end()) {
      out.release.push_back({e.relay_id, e.km_id, e.peer_km_id, e.link_id, {}, false});
      it = out.release.end() - 1;
    }
    it->key_ids.push_back(e.key_id);
  }
  out.ledger.push_back(std::move(batch));
}

void RelayTable::release_refused(const std::string& relay_id, const RelayHop& hop,
                                 const std::vector<std::string>& key_ids, RelayOutput& out) {
  const HopRef ref{relay_id, hop.km_id, hop.next_km_id, hop.link_id};
  ReleaseCommand back{relay_id, hop.km_id, hop.next_km_id, hop.link_id, {}, false};
  ReleaseCommand gone = back;
  gone.discard = true;
  std::set<std::string> named;
  for (const auto& id : key_ids) {
    if (!is_valid_id(id) || !named.insert(id).second) continue;
    // Unknown, re-reservable or held by another relay: the KM may offer it again later. Anything
    // else (consumed, released after allocation, first reserved by another hop) never again.
    const bool usable = ledger_->can_reserve(ref, id) || ledger_->find_live(id) != nullptr;
    (usable ? back : gone).key_ids.push_back(id);
  }
  if (!back.key_ids.empty()) out.release.push_back(std::move(back));
  if (!gone.key_ids.empty()) out.release.push_back(std::move(gone));
}

void RelayTable::finish(Relay& r, RelayState state, const std::string& reason,
                        const std::string& ck_error, SysTime now, RelayOutput& out) {
  r.state = state;
  r.reason = reason;
  r.ck_error = ck_error;
  r.deadline.reset();
  record(r, now, out);
  out.finished.push_back(r);
  open_.erase(r.relay_id);
  finished_.push_back(r.relay_id);
}

void RelayTable::prune() {
  while (finished_.size() > config_.max_finished) {
    // The oldest finished relay leaves memory (the store keeps it).
    relays_.erase(finished_.front());
    finished_.pop_front();
  }
}

std::string RelayTable::new_relay_id() {
  std::string id;
  do {
    id = make_uuid_v4(*random_);
  } while (relays_.contains(id));
  return id;
}

void RelayTable::launch(Relay relay, SysTime now, RelayOutput& out) {
  relay.state = RelayState::kRequested;
  relay.hops = hops_of(relay.route, relay.number_of_keys);
  relay.created_at = now;
  relay.deadline = now + config_.admission_timeout;
  for (std::size_t i = 0; i < relay.hops.size(); ++i) {
    const RelayHop& h = relay.hops[i];
    ReserveCommand c;
    c.relay_id = relay.relay_id;
    c.hop = i;
    c.km_id = h.km_id;
    c.source_kma_id = relay.src_km;
    c.destination_kma_id = relay.dst_km;
    c.next_kma_id = h.next_km_id;
    c.link_id = h.link_id;
    c.number_of_keys = h.number_of_keys;
    c.application_destination_id = relay.application_destination_id;
    out.reserve.push_back(std::move(c));
  }
  const std::string id = relay.relay_id;
  open_.insert(id);
  Relay& r = relays_.emplace(id, std::move(relay)).first->second;
  record(r, now, out);
}

Relay* RelayTable::open_relay(const std::string& relay_id, std::size_t hop, std::string_view what,
                              RelayOutput& out) {
  const auto it = relays_.find(relay_id);
  if (it == relays_.end()) {
    out.ignored.push_back(std::string(what) + " for unknown relay " + relay_id);
    return nullptr;
  }
  if (hop >= it->second.hops.size()) {
    out.ignored.push_back(std::string(what) + " for relay " + relay_id + " names hop " +
                          std::to_string(hop) + " of " + std::to_string(it->second.hops.size()));
    return nullptr;
  }
  return &it->second;
}

// --- start and admission ----------------------------------------------------------------------

RelayOutput RelayTable::start(const RelayRequest& request, SysTime now) {
  if (request.src_km.empty() || request.dst_km.empty() || request.src_km == request.dst_km) {
    throw InvalidArgument("relay: source and destination KM must be two different KMs");
  }
  if (request.number_of_keys < 1 || request.number_of_keys > config_.max_number_of_keys) {
    throw InvalidArgument("relay: number_of_keys " + std::to_string(request.number_of_keys) +
                          " is outside [1, " + std::to_string(config_.max_number_of_keys) + "]");
  }
  if (request.key_size_bits < 1) throw InvalidArgument("relay: key_size_bits must be >= 1");
  if (request.routes.empty()) throw InvalidArgument("relay: no route");
  for (std::size_t i = 0; i < request.routes.size(); ++i) {
    if (auto p = route_problem(request.routes[i], request.src_km, request.dst_km)) {
      throw InvalidArgument("relay: route " + std::to_string(i) + " " + *p);
    }
  }
  // Every hop's key IDs travel in one 0x4104: a route on which they would not fit one Ck frame
  // cannot carry this relay (it would fail at the KMs after reserving). Such routes are left out;
  // none left is a refusal that says how many keys would fit.
  std::vector<Route> routes;
  std::int64_t best_fit = 0;
  for (const auto& route : request.routes) {
    const std::int64_t fit = max_keys_for(route);
    best_fit = std::max(best_fit, fit);
    if (request.number_of_keys <= fit) routes.push_back(route);
  }
  if (routes.empty()) {
    throw InvalidArgument("relay: " + std::to_string(request.number_of_keys) + " keys over " +
                          std::to_string(request.routes.front().links.size()) +
                          " hops do not fit one Ck frame; at most " + std::to_string(best_fit) +
                          " keys per relay on the routes found");
  }
  Relay r;
  r.session_id = request.session_id;
  r.src_km = request.src_km;
  r.dst_km = request.dst_km;
  r.application_destination_id = request.application_destination_id;
  r.number_of_keys = request.number_of_keys;
  r.key_size_bits = request.key_size_bits;
  r.relay_scheme = request.relay_scheme;
  r.route = routes.front();
  const std::size_t alts = std::min(routes.size(), config_.max_attempts) - 1;
  r.alternatives.assign(routes.begin() + 1, routes.begin() + static_cast<std::ptrdiff_t>(1 + alts));
  r.notification_message_id = request.notification_message_id;
  r.relay_id = new_relay_id();
  RelayOutput out;
  launch(std::move(r), now, out);
  return out;
}

void RelayTable::late_reservation(const std::string& relay_id, const RelayHop& hop,
                                  const std::vector<std::string>& key_ids, SysTime now,
                                  RelayOutput& out) {
  const HopRef ref{relay_id, hop.km_id, hop.next_km_id, hop.link_id};
  if (auto p = ledger_->reserve_problem(ref, key_ids)) {
    out.ignored.push_back("late reservation for relay " + relay_id + " " + hop_text(hop) +
                          " not recorded: " + *p);
    release_refused(relay_id, hop, key_ids, out);
    return;
  }
  // The KM holds these keys for an attempt that is gone: remember the IDs and let them go.
  persist_batch(ledger_->reserve(ref, key_ids, now), out);
  persist_batch(ledger_->release(relay_id, key_ids, now), out);
  out.ignored.push_back("late reservation for relay " + relay_id + " " + hop_text(hop) +
                        ": keys recorded and released");
}

RelayOutput RelayTable::on_reserved(const std::string& relay_id, std::size_t hop,
                                    const std::vector<std::string>& key_ids, SysTime now) {
  RelayOutput out;
  Relay* r = open_relay(relay_id, hop, "0x140B", out);
  if (r == nullptr) return out;
  RelayHop& h = r->hops[hop];
  if (r->state != RelayState::kRequested || h.stage != HopStage::kReserving) {
    late_reservation(relay_id, h, key_ids, now, out);
    return out;
  }
  if (auto p = ledger_->reserve_problem(hop_ref(*r, h), key_ids)) {
    // Before hop_failed: the refused keys go back to the KM ahead of the next attempt's 0x410A.
    release_refused(relay_id, h, key_ids, out);
    hop_failed(*r, hop, "reservation", "bad_request",
               "unusable key IDs: " + without_key_ids(*p, key_ids), now, out);
    return out;
  }
  persist_batch(ledger_->reserve(hop_ref(*r, h), key_ids, now), out);
  h.key_ids = key_ids;
  if (std::cmp_not_equal(key_ids.size(), h.number_of_keys)) {
    hop_failed(*r, hop, "reservation", "insufficient_keys",
               "reserved " + std::to_string(key_ids.size()) + " of " +
                   std::to_string(h.number_of_keys) + " keys",
               now, out);
    return out;
  }
  h.stage = HopStage::kReserved;
  maybe_allocate(*r, now, out);
  return out;
}

void RelayTable::maybe_allocate(Relay& r, SysTime now, RelayOutput& out) {
  for (const auto& h : r.hops) {
    if (h.stage != HopStage::kReserved) return;
  }
  r.state = RelayState::kReserved;
  for (std::size_t i = 0; i < r.hops.size(); ++i) {
    RelayHop& h = r.hops[i];
    h.stage = HopStage::kAllocating;
    AllocateCommand c;
    c.relay_id = r.relay_id;
    c.hop = i;
    c.km_id = h.km_id;
    c.source_kma_id = r.src_km;
    c.destination_kma_id = r.dst_km;
    c.next_kma_id = h.next_km_id;
    c.link_id = h.link_id;
    c.key_ids = h.key_ids;
    c.application_destination_id = r.application_destination_id;
    out.allocate.push_back(std::move(c));
  }
  record(r, now, out);
}

RelayOutput RelayTable::on_reservation_failed(const std::string& relay_id, std::size_t hop,
                                              const std::string& ck_error,
                                              const std::string& message, SysTime now) {
  RelayOutput out;
  Relay* r = open_relay(relay_id, hop, "0x140B NG", out);
  if (r == nullptr) return out;
  if (r->state != RelayState::kRequested || r->hops[hop].stage != HopStage::kReserving) {
    out.ignored.push_back("0x140B NG for relay " + relay_id + " " + hop_text(r->hops[hop]) +
                          " that is not reserving");
    return out;
  }
  hop_failed(*r, hop, "reservation", ck_error.empty() ? "insufficient_keys" : ck_error, message,
             now, out);
  return out;
}

RelayOutput RelayTable::on_allocated(const std::string& relay_id, std::size_t hop, SysTime now) {
  RelayOutput out;
  Relay* r = open_relay(relay_id, hop, "0x140D", out);
  if (r == nullptr) return out;
  RelayHop& h = r->hops[hop];
  if (r->state != RelayState::kReserved || h.stage != HopStage::kAllocating) {
    out.ignored.push_back("0x140D for relay " + relay_id + " " + hop_text(h) +
                          " that is not allocating");
    return out;
  }
  // The keys must still be reserved by this hop (a lease may have lapsed in between).
  const HopRef ref = hop_ref(*r, h);
  for (const auto& id : h.key_ids) {
    const LiveKey* k = ledger_->find_live(id);
    if (k == nullptr || !(k->hop == ref) || k->state != LedgerState::kReserved) {
      hop_failed(*r, hop, "allocation", "reservation_expired",
                 "a key ID of the hop is no longer reserved", now, out);
      return out;
    }
  }
  persist_batch(ledger_->allocate(ref, h.key_ids, now), out);
  h.stage = HopStage::kAllocated;
  maybe_relay(*r, now, out);
  return out;
}

void RelayTable::maybe_relay(Relay& r, SysTime now, RelayOutput& out) {
  for (const auto& h : r.hops) {
    if (h.stage != HopStage::kAllocated) return;
  }
  r.state = RelayState::kRelaying;
  r.request_sent = true;
  r.deadline = now + config_.relaying_timeout;
  RelayRequestCommand c;
  c.relay_id = r.relay_id;
  c.km_id = r.src_km;
  c.source_kma_id = r.src_km;
  c.destination_kma_id = r.dst_km;
  c.transit_kma_ids.assign(r.route.kms.begin() + 1, r.route.kms.end() - 1);
  c.notification_message_id = r.notification_message_id;
  c.number_of_keys = r.number_of_keys;
  c.key_size_bits = r.key_size_bits;
  for (const auto& h : r.hops) c.hop_keys.push_back({h.km_id, h.next_km_id, h.link_id, h.key_ids});
  out.relay_requests.push_back(std::move(c));
  record(r, now, out);
}

RelayOutput RelayTable::on_allocation_failed(const std::string& relay_id, std::size_t hop,
                                             const std::string& ck_error,
                                             const std::string& message, SysTime now) {
  RelayOutput out;
  Relay* r = open_relay(relay_id, hop, "0x140D NG", out);
  if (r == nullptr) return out;
  if (r->state != RelayState::kReserved || r->hops[hop].stage != HopStage::kAllocating) {
    out.ignored.push_back("0x140D NG for relay " + relay_id + " " + hop_text(r->hops[hop]) +
                          " that is not allocating");
    return out;
  }
  hop_failed(*r, hop, "allocation", ck_error.empty() ? "insufficient_keys" : ck_error, message, now,
             out);
  return out;
}

void RelayTable::hop_failed(Relay& r, std::size_t hop, std::string_view step,
                            const std::string& ck_error, const std::string& message, SysTime now,
                            RelayOutput& out) {
  RelayHop& h = r.hops[hop];
  h.stage = HopStage::kFailed;
  std::string reason = hop_text(h) + ": " + std::string(step) + " failed: " + ck_error;
  if (!message.empty()) reason += ": " + message;
  attempt_failed(r, reason, ck_error, {}, now, out);
}

void RelayTable::attempt_failed(Relay& r, const std::string& reason, const std::string& ck_error,
                                const std::string& avoid_km, SysTime now, RelayOutput& out) {
  persist_batch(ledger_->release_relay(r.relay_id, now), out);
  std::vector<Route> left;
  for (auto& alt : r.alternatives) {
    if (avoid_km.empty() || !crosses(alt, avoid_km)) left.push_back(std::move(alt));
  }
  r.alternatives.clear();
  if (left.empty()) {
    finish(r, RelayState::kFailed, reason, ck_error, now, out);
    prune();
    return;
  }
  Relay next;
  next.session_id = r.session_id;
  next.src_km = r.src_km;
  next.dst_km = r.dst_km;
  next.application_destination_id = r.application_destination_id;
  next.number_of_keys = r.number_of_keys;
  next.key_size_bits = r.key_size_bits;
  next.relay_scheme = r.relay_scheme;
  next.route = std::move(left.front());
  next.alternatives.assign(std::make_move_iterator(left.begin() + 1),
                           std::make_move_iterator(left.end()));
  next.attempt = r.attempt + 1;
  next.previous_relay_id = r.relay_id;
  next.notification_message_id = r.notification_message_id;
  next.relay_id = new_relay_id();
  r.next_relay_id = next.relay_id;
  // The void is recorded before the new attempt, in causal order.
  finish(r, RelayState::kVoided, reason + "; retried as relay " + next.relay_id, ck_error, now,
         out);
  launch(std::move(next), now, out);
  prune();
}

// --- relaying and endings --------------------------------------------------------------------

RelayOutput RelayTable::on_relay_response(const std::string& relay_id, bool ok,
                                          const std::string& reason, SysTime now) {
  RelayOutput out;
  const auto it = relays_.find(relay_id);
  if (it == relays_.end()) {
    out.ignored.push_back("0x1405 for unknown relay " + relay_id);
    return out;
  }
  Relay& r = it->second;
  if (r.state != RelayState::kRelaying) {
    out.ignored.push_back("0x1405 " + std::string(ok ? "OK" : "NG") + " for relay " + relay_id +
                          " that is " + std::string(to_string(r.state)));
    return out;
  }
  if (ok) {
    persist_batch(ledger_->consume_relay(relay_id, now), out);
    finish(r, RelayState::kRelayed, {}, {}, now, out);
  } else {
    persist_batch(ledger_->release_relay(relay_id, now), out);
    finish(r, RelayState::kFailed,
           "key relay failed at the KMs: " + (reason.empty() ? std::string("NG") : reason),
           "internal", now, out);
  }
  prune();
  return out;
}

RelayOutput RelayTable::on_km_disconnected(const std::string& km_id, SysTime now) {
  RelayOutput out;
  // Copy: ending relays edits open_ (and may start new attempts, which avoid the KM).
  const std::vector<std::string> ids(open_.begin(), open_.end());
  for (const auto& id : ids) {
    const auto it = relays_.find(id);
    if (it == relays_.end() || is_final(it->second.state) || !crosses(it->second.route, km_id)) {
      continue;
    }
    Relay& r = it->second;
    const std::string reason = "KM " + km_id + " disconnected";
    if (r.state == RelayState::kRelaying) {
      persist_batch(ledger_->release_relay(id, now), out);
      finish(r, RelayState::kFailed, reason, "internal", now, out);
      prune();
    } else {
      attempt_failed(r, reason, "no_route", km_id, now, out);
    }
  }
  return out;
}

RelayOutput RelayTable::next_route(const std::string& relay_id, const std::string& reason,
                                   SysTime now, std::optional<std::vector<Route>> routes) {
  const auto it = relays_.find(relay_id);
  if (it == relays_.end()) throw NotFound("unknown relay " + relay_id);
  Relay& r = it->second;
  if (is_final(r.state) || r.state == RelayState::kRelaying) {
    throw Conflict("relay " + relay_id + " is " + std::string(to_string(r.state)) +
                   ": no next route");
  }
  if (routes) {
    for (std::size_t i = 0; i < routes->size(); ++i) {
      if (auto p = route_problem((*routes)[i], r.src_km, r.dst_km)) {
        throw InvalidArgument("relay: route " + std::to_string(i) + " " + *p);
      }
    }
    const std::size_t room =
        config_.max_attempts > r.attempt ? config_.max_attempts - r.attempt : std::size_t{0};
    if (routes->size() > room) routes->resize(room);
    r.alternatives = std::move(*routes);
  }
  RelayOutput out;
  attempt_failed(r, reason.empty() ? std::string("next route requested") : reason, "no_route", {},
                 now, out);
  return out;
}

RelayOutput RelayTable::cancel(const std::string& relay_id, const std::string& reason,
                               SysTime now) {
  const auto it = relays_.find(relay_id);
  if (it == relays_.end()) throw NotFound("unknown relay " + relay_id);
  Relay& r = it->second;
  if (is_final(r.state)) {
    throw Conflict("relay " + relay_id + " is already " + std::string(to_string(r.state)));
  }
  RelayOutput out;
  persist_batch(ledger_->release_relay(relay_id, now), out);
  finish(r, RelayState::kVoided, reason.empty() ? std::string("cancelled") : reason, "no_route",
         now, out);
  prune();
  return out;
}

RelayOutput RelayTable::expire(SysTime now) {
  RelayOutput out;
  std::vector<std::string> due;
  for (const auto& id : open_) {
    const Relay& r = relays_.at(id);
    if (r.deadline && *r.deadline <= now) due.push_back(id);
  }
  for (const auto& id : due) {
    const auto it = relays_.find(id);
    if (it == relays_.end() || is_final(it->second.state)) continue;
    Relay& r = it->second;
    if (r.state == RelayState::kRelaying) {
      persist_batch(ledger_->release_relay(id, now), out);
      finish(r, RelayState::kFailed, "timeout: no response to the key relay request", "timeout",
             now, out);
      prune();
    } else {
      attempt_failed(r, "timeout: hops not reserved and allocated in time", "timeout", {}, now,
                     out);
    }
  }
  for (auto& batch : ledger_->expire(now)) {
    const std::string relay_id = batch.relay_id;
    persist_batch(std::move(batch), out);
    const auto it = relays_.find(relay_id);
    if (it == relays_.end() || is_final(it->second.state)) continue;
    Relay& r = it->second;
    if (r.state == RelayState::kRelaying) {
      persist_batch(ledger_->release_relay(relay_id, now), out);
      finish(r, RelayState::kFailed, "reservation_expired: key lease lapsed while relaying",
             "reservation_expired", now, out);
      prune();
    } else {
      attempt_failed(r, "reservation_expired: key lease lapsed", "reservation_expired", {}, now,
                     out);
    }
  }
  return out;
}

// --- restart ---------------------------------------------------------------------------------

RelayOutput RelayTable::restore(const std::vector<RelayRecord>& relays,
                                const std::vector<LedgerEntry>& ledger, SysTime now) {
  if (!relays_.empty()) throw Conflict("relays: restore into a table that is not empty");
  std::vector<Relay> loaded;
  loaded.reserve(relays.size());
  std::set<std::string> ids;
  for (const auto& rec : relays) {
    loaded.push_back(relay_from_record(rec));
    if (!ids.insert(rec.relay_id).second) {
      throw InvalidArgument("relays: restore: relay " + rec.relay_id + " appears twice");
    }
  }
  RelayOutput out;
  for (auto& b : ledger_->restore(ledger, now)) persist_batch(std::move(b), out);

  std::stable_sort(loaded.begin(), loaded.end(),
                   [](const Relay& a, const Relay& b) { return a.updated_at < b.updated_at; });
  for (auto& loaded_relay : loaded) {
    const std::string id = loaded_relay.relay_id;
    Relay& r = relays_.emplace(id, std::move(loaded_relay)).first->second;
    if (is_final(r.state)) {
      finished_.push_back(id);
      continue;
    }
    // Nothing of the old process's Ck exchanges survives: end every open relay.
    open_.insert(id);
    persist_batch(ledger_->release_relay(id, now), out);
    if (r.state == RelayState::kRelaying) {
      r.request_sent = true;
      finish(r, RelayState::kFailed, "controller restart", "internal", now, out);
    } else {
      finish(r, RelayState::kVoided, "controller restart", "internal", now, out);
    }
  }
  // Keys still live belong to finished relays (their last ledger batch never committed) or to
  // relays the store does not know: relayed relays used them, anything else lets them go.
  for (const auto& relay_id : ledger_->live_relays()) {
    const auto it = relays_.find(relay_id);
    if (it != relays_.end() && it->second.state == RelayState::kRelayed) {
      std::vector<std::string> allocated;
      for (const auto& k : ledger_->live_keys(relay_id)) {
        if (ledger_->find_live(k)->state == LedgerState::kAllocated) allocated.push_back(k);
      }
      if (!allocated.empty()) persist_batch(ledger_->consume(relay_id, allocated, now), out);
    }
    persist_batch(ledger_->release_relay(relay_id, now), out);
  }
  prune();
  return out;
}

// --- queries ---------------------------------------------------------------------------------

const Relay* RelayTable::find(const std::string& relay_id) const {
  const auto it = relays_.find(relay_id);
  return it == relays_.end() ? nullptr : &it->second;
}

std::vector<Relay> RelayTable::list() const {
  std::vector<Relay> out;
  out.reserve(relays_.size());
  for (const auto& [id, r] : relays_) out.push_back(r);
  return out;
}

std::vector<std::string> RelayTable::open_relays() const { return {open_.begin(), open_.end()}; }

std::optional<SysTime> RelayTable::next_deadline() const {
  std::optional<SysTime> best = ledger_->next_expiry();
  for (const auto& id : open_) {
    const Relay& r = relays_.at(id);
    if (r.deadline && (!best || *r.deadline < *best)) best = r.deadline;
  }
  return best;
}

}  // namespace qkdn::controller
