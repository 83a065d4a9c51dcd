#include "qkdn/controller/sessions.hpp"

#include <algorithm>
#include <set>

#include "qkdn/controller/error.hpp"

namespace qkdn::controller {

namespace {

SessionCreated refuse(std::string ck_error, std::string message) {
  SessionCreated out;
  out.ck_error = std::move(ck_error);
  out.message = std::move(message);
  return out;
}

SysTime minute_of(SysTime t) { return std::chrono::floor<std::chrono::minutes>(t); }

}  // namespace

std::string_view to_string(SessionState s) noexcept {
  switch (s) {
    case SessionState::kPending:
      return "pending";
    case SessionState::kActive:
      return "active";
    case SessionState::kClosed:
      return "closed";
    case SessionState::kExpired:
      return "expired";
    case SessionState::kFailed:
      return "failed";
  }
  return "failed";
}

SessionState parse_session_state(std::string_view s) {
  for (const SessionState v : {SessionState::kPending, SessionState::kActive, SessionState::kClosed,
                               SessionState::kExpired, SessionState::kFailed}) {
    if (to_string(v) == s) return v;
  }
  throw InvalidArgument("unknown session state '" + std::string(s) + "'");
}

bool is_final(SessionState s) noexcept {
  return s == SessionState::kClosed || s == SessionState::kExpired || s == SessionState::kFailed;
}

SessionRecord to_record(const Session& s) {
  SessionRecord r;
  r.session_id = s.session_id;
  r.src_sae = s.src_sae;
  r.dst_sae = s.dst_sae;
  r.src_km = s.src_km;
  r.dst_km = s.dst_km;
  r.keys_requested = s.keys_requested;
  r.keys_delivered = s.keys_delivered;
  r.state = std::string(to_string(s.state));
  r.created_at = s.created_at;
  r.updated_at = s.updated_at;
  r.expires_at = s.expires_at;
  return r;
}

Session session_from_record(const SessionRecord& r) {
  if (r.session_id.empty()) throw InvalidArgument("session record without session_id");
  if (r.keys_requested < 0 || r.keys_delivered < 0) {
    throw InvalidArgument("session " + r.session_id + ": negative key counts");
  }
  Session s;
  s.session_id = r.session_id;
  s.src_sae = r.src_sae;
  s.dst_sae = r.dst_sae;
  s.src_km = r.src_km;
  s.dst_km = r.dst_km;
  s.keys_requested = r.keys_requested;
  s.keys_delivered = r.keys_delivered;
  s.state = parse_session_state(r.state);
  s.created_at = r.created_at;
  s.updated_at = r.updated_at;
  s.expires_at = r.expires_at;
  return s;
}

SessionTable::SessionTable(const Network& network, Random& random, SessionConfig config)
    : network_(&network), random_(&random), config_(config) {
  if (config_.default_number_of_keys < 1 ||
      config_.max_number_of_keys < config_.default_number_of_keys ||
      config_.max_number_of_keys > limits::kMaxKeysPerSession) {
    throw InvalidArgument("sessions: need 1 <= default_number_of_keys <= max_number_of_keys");
  }
  if (config_.pending_timeout <= Millis{0} || config_.idle_ttl <= Millis{0} ||
      config_.max_lifetime <= Millis{0}) {
    throw InvalidArgument("sessions: timeouts must be positive");
  }
  if (config_.max_finished < 1) throw InvalidArgument("sessions: max_finished must be >= 1");
}

Session& SessionTable::get(const std::string& session_id) {
  const auto it = sessions_.find(session_id);
  if (it == sessions_.end()) throw NotFound("unknown session " + session_id);
  return it->second;
}

void SessionTable::schedule(Session& s, SysTime last_activity) {
  if (s.expires_at) expiry_.erase({*s.expires_at, s.session_id});
  if (is_final(s.state)) {
    s.expires_at.reset();
    return;
  }
  SysTime at = s.created_at + config_.max_lifetime;
  if (s.state == SessionState::kPending) {
    at = std::min(at, s.created_at + config_.pending_timeout);
  } else {
    at = std::min(at, last_activity + config_.idle_ttl);
  }
  s.expires_at = at;
  expiry_.emplace(at, s.session_id);
}

void SessionTable::finish(Session& s, SessionState state, const std::string& reason, SysTime now) {
  s.state = state;
  s.reason = reason;
  s.updated_at = now;
  schedule(s, now);
  finished_.push_back(s.session_id);
  while (finished_.size() > config_.max_finished) {
    // The oldest finished session leaves memory (the store keeps it).
    sessions_.erase(finished_.front());
    finished_.pop_front();
  }
}

SessionCreated SessionTable::create(const SessionRequest& request, SysTime now) {
  for (const auto* sae : {&request.src_sae, &request.dst_sae}) {
    if (!is_valid_id(*sae)) {
      return refuse("bad_request", "malformed application ID '" + sae->substr(0, 64) + "'");
    }
  }
  if (request.src_sae == request.dst_sae) {
    return refuse("bad_request",
                  "source and destination application are the same (" + request.src_sae + ")");
  }
  const std::int64_t keys = request.number_of_keys.value_or(config_.default_number_of_keys);
  if (keys < 1 || keys > config_.max_number_of_keys) {
    return refuse("bad_request", "number_of_keys " + std::to_string(keys) + " is outside [1, " +
                                     std::to_string(config_.max_number_of_keys) + "]");
  }
  const auto src_km = network_->km_for_sae(request.src_sae);
  if (!src_km) {
    return refuse("unknown_application",
                  "source application " + request.src_sae + " is not attached to any KM");
  }
  if (!request.requesting_km.empty() && *src_km != request.requesting_km) {
    return refuse("unknown_application", "source application " + request.src_sae +
                                             " is served by KM " + *src_km + ", not by " +
                                             request.requesting_km);
  }
  const auto dst_km = network_->km_for_sae(request.dst_sae);
  if (!dst_km) {
    return refuse("unknown_application",
                  "destination application " + request.dst_sae + " is not attached to any KM");
  }
  Session s;
  do {
    s.session_id = make_uuid_v4(*random_);
  } while (sessions_.contains(s.session_id));
  s.src_sae = request.src_sae;
  s.dst_sae = request.dst_sae;
  s.src_km = *src_km;
  s.dst_km = *dst_km;
  s.keys_requested = keys;
  s.state = SessionState::kPending;
  s.created_at = now;
  s.updated_at = now;
  schedule(s, now);
  SessionCreated out;
  out.session = s;
  sessions_.emplace(s.session_id, std::move(s));
  return out;
}

Session SessionTable::on_answer(const std::string& session_id, const std::string& from_km, bool ok,
                                const std::string& reason, SysTime now) {
  Session& s = get(session_id);
  if (from_km != s.dst_km) {
    throw Conflict("session " + session_id + " was notified to KM " + s.dst_km + ", not " +
                   from_km);
  }
  if (s.state != SessionState::kPending) {
    throw Conflict("session " + session_id + " is " + std::string(to_string(s.state)) +
                   ", not pending");
  }
  if (ok) {
    s.state = SessionState::kActive;
    s.updated_at = now;
    schedule(s, now);
    return s;
  }
  finish(s, SessionState::kFailed, reason.empty() ? "refused by destination KM" : reason, now);
  return sessions_.at(session_id);
}

Session SessionTable::fail(const std::string& session_id, const std::string& reason, SysTime now) {
  Session& s = get(session_id);
  if (is_final(s.state)) {
    throw Conflict("session " + session_id + " is already " + std::string(to_string(s.state)));
  }
  finish(s, SessionState::kFailed, reason, now);
  // finish() may have pruned history, but never the session it just finished (it is newest).
  return sessions_.at(session_id);
}

Session SessionTable::close(const std::string& session_id, const std::string& reason, SysTime now) {
  Session& s = get(session_id);
  if (is_final(s.state)) {
    throw Conflict("session " + session_id + " is already " + std::string(to_string(s.state)));
  }
  finish(s, SessionState::kClosed, reason, now);
  return sessions_.at(session_id);
}

SessionDelivery SessionTable::add_delivered(const std::string& session_id, std::int64_t keys,
                                            std::int64_t bytes, SysTime now) {
  if (keys < 0 || bytes < 0) {
    throw InvalidArgument("session " + session_id + ": negative delivery counts");
  }
  Session& s = get(session_id);
  if (s.state != SessionState::kActive) {
    throw Conflict("session " + session_id + " is " + std::string(to_string(s.state)) +
                   ", not active");
  }
  s.keys_delivered += keys;
  s.updated_at = now;
  schedule(s, now);
  SessionDelivery out;
  out.session = s;
  for (const auto* sae : {&s.src_sae, &s.dst_sae}) {
    AccountingRecord a;
    a.bucket_start = minute_of(now);
    a.sae_id = *sae;
    a.session_id = s.session_id;
    a.key_bytes = bytes;
    a.keys = keys;
    out.accounting.push_back(std::move(a));
  }
  return out;
}

std::vector<Session> SessionTable::expire(SysTime now) {
  std::vector<std::string> due;
  for (auto it = expiry_.begin(); it != expiry_.end() && it->first <= now; ++it) {
    due.push_back(it->second);
  }
  std::vector<Session> out;
  out.reserve(due.size());
  for (const auto& id : due) {
    Session& s = sessions_.at(id);
    if (s.state == SessionState::kPending) {
      finish(s, SessionState::kFailed, "timeout", now);
    } else {
      finish(s, SessionState::kExpired, "idle or lifetime TTL reached", now);
    }
    out.push_back(sessions_.at(id));
  }
  return out;
}

std::vector<Session> SessionTable::restore(const std::vector<SessionRecord>& records, SysTime now) {
  if (!sessions_.empty()) throw Conflict("sessions: restore into a table that is not empty");
  std::vector<Session> loaded;
  loaded.reserve(records.size());
  std::set<std::string> ids;
  for (const auto& r : records) {
    loaded.push_back(session_from_record(r));
    if (!ids.insert(r.session_id).second) {
      throw InvalidArgument("sessions: restore: session " + r.session_id + " appears twice");
    }
  }
  // Finished ones first (oldest first) so that the history bound keeps the newest.
  std::stable_sort(loaded.begin(), loaded.end(),
                   [](const Session& a, const Session& b) { return a.updated_at < b.updated_at; });
  std::vector<Session> changed;
  for (auto& s : loaded) {
    const std::string id = s.session_id;
    const bool open = !is_final(s.state);
    const std::optional<SysTime> due = s.expires_at;
    s.expires_at.reset();
    auto& slot = sessions_.emplace(id, std::move(s)).first->second;
    if (!open) {
      finished_.push_back(id);
      continue;
    }
    if (slot.state == SessionState::kPending) {
      finish(slot, SessionState::kFailed, "controller restart", now);
      changed.push_back(sessions_.at(id));
      continue;
    }
    if (due && *due <= now) {
      finish(slot, SessionState::kExpired, "idle or lifetime TTL reached", now);
      changed.push_back(sessions_.at(id));
      continue;
    }
    // Active and not due: keep its persisted deadline (its last activity is not stored).
    slot.expires_at = due.value_or(slot.created_at + config_.max_lifetime);
    expiry_.emplace(*slot.expires_at, id);
  }
  while (finished_.size() > config_.max_finished) {
    sessions_.erase(finished_.front());
    finished_.pop_front();
  }
  return changed;
}

const Session* SessionTable::find(const std::string& session_id) const {
  const auto it = sessions_.find(session_id);
  return it == sessions_.end() ? nullptr : &it->second;
}

const Session* SessionTable::find_active(const std::string& src_km,
                                         const std::string& dst_km) const {
  const Session* best = nullptr;
  for (const auto& [when, id] : expiry_) {
    const Session& s = sessions_.at(id);
    if (s.state == SessionState::kActive && s.src_km == src_km && s.dst_km == dst_km &&
        (best == nullptr || s.created_at > best->created_at)) {
      best = &s;
    }
  }
  return best;
}

std::vector<Session> SessionTable::list() const {
  std::vector<Session> out;
  out.reserve(sessions_.size());
  for (const auto& [id, s] : sessions_) out.push_back(s);
  return out;
}

std::size_t SessionTable::active_count() const noexcept {
  std::size_t n = 0;
  for (const auto& [when, id] : expiry_) {
    const auto it = sessions_.find(id);
    if (it != sessions_.end() && it->second.state == SessionState::kActive) ++n;
  }
  return n;
}

std::optional<SysTime> SessionTable::next_expiry() const {
  if (expiry_.empty()) return std::nullopt;
  return expiry_.begin()->first;
}

}  // namespace qkdn::controller
