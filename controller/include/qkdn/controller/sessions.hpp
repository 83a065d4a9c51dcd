// Key-supply sessions (Q.4164 7.3/7.4; ck-protocol.md section 6 step 2; DESIGN.md section 3).
//
// Sequence the service drives (every call on the controller strand):
//   1. KM1 -> C 0x1406 {application_source_id, application_destination_id, number_of_keys?}:
//      create({requesting_km = KM1, ...}, now).
//      - result.session empty: answer 0x4107 {session_id "", response "NG: <ck_error>"}
//        (ck_error "unknown_application" or "bad_request"; message says which SAE and why).
//      - else the session is pending: send 0x4108 {application_source_id,
//      application_destination_id,
//        session_id, source_km_id = src_km, number_of_keys} to dst_km, and persist to_record().
//   2. KM5 -> C 0x1409 {session_id, response}: on_answer(session_id, KM5, ok, reason, now). The
//      session becomes active (OK) or failed (NG); answer KM1 with 0x4107 {session_id, response
//      "OK" | "NG: <reason>", destination_km_id}; persist.
//      If the 0x4108 cannot be sent or times out, call fail(session_id, "timeout", now) and
//      answer 0x4107 NG: timeout. expire(now) also fails sessions left pending beyond
//      SessionConfig::pending_timeout (same answer).
//   3. While active, each relay of the session that ends relayed is counted with
//      add_delivered(session_id, keys, bytes, now): it refreshes the idle TTL and returns
//      AccountingRecord deltas (one for the source SAE, one for the destination SAE, in the
//      minute bucket of `now`) for Store::add_accounting.
//   4. Sessions end by close() (an operator or the KM), by expire(now) (idle for idle_ttl or
//      older than max_lifetime -> expired; pending too long -> failed "timeout"), or by fail().
//      Finished sessions are kept (bounded by max_finished) for listing.
//
// Single-threaded by contract (controller strand). Pure: time comes as `now`; session IDs are
// UUIDv4 from the injected Random.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "qkdn/controller/clock.hpp"
#include "qkdn/controller/key_limits.hpp"
#include "qkdn/controller/network.hpp"
#include "qkdn/controller/store.hpp"

namespace qkdn::controller {

/// Life of a session: pending -> active | failed; active -> closed | expired.
/// pending -> closed | expired is possible too (close, or a lifetime shorter than the answer).
enum class SessionState { kPending, kActive, kClosed, kExpired, kFailed };

/// "pending" | "active" | "closed" | "expired" | "failed" (SessionRecord::state).
std::string_view to_string(SessionState s) noexcept;
/// Parses the names of to_string(SessionState); throws InvalidArgument.
SessionState parse_session_state(std::string_view s);
/// True for closed, expired and failed.
bool is_final(SessionState s) noexcept;

/// Session tuning. Durations must be positive.
struct SessionConfig {
  std::int64_t default_number_of_keys = 1;                       ///< when 0x1406 names none (>= 1)
  std::int64_t max_number_of_keys = limits::kMaxKeysPerSession;  ///< larger: bad_request
  Millis pending_timeout{5'000};                ///< 0x4108 .. 0x1409 (ck-protocol.md 5)
  Millis idle_ttl{std::chrono::minutes{10}};    ///< since the last activity (create, answer,
                                                ///< delivery)
  Millis max_lifetime{std::chrono::hours{24}};  ///< since creation
  std::size_t max_finished = 10'000;            ///< finished sessions kept in memory
};

/// One session.
struct Session {
  std::string session_id;  ///< UUIDv4
  std::string src_sae;
  std::string dst_sae;
  std::string src_km;
  std::string dst_km;
  std::int64_t keys_requested = 0;
  std::int64_t keys_delivered = 0;
  SessionState state = SessionState::kPending;
  std::string reason;  ///< why it failed / closed (not persisted)
  SysTime created_at{};
  SysTime updated_at{};
  /// When expire() ends it if nothing happens: min(last activity + idle_ttl, created_at +
  /// max_lifetime), or created_at + pending_timeout while pending. Empty once final.
  std::optional<SysTime> expires_at;
};

/// Session <-> persistence record (field for field; `reason` is not persisted).
SessionRecord to_record(const Session& s);
/// Throws InvalidArgument for an unknown state or an empty ID.
Session session_from_record(const SessionRecord& r);

/// A 0x1406 as the service decoded it.
struct SessionRequest {
  std::string requesting_km;  ///< the KM that sent 0x1406; empty = do not check
  std::string src_sae;        ///< application_source_id
  std::string dst_sae;        ///< application_destination_id
  std::optional<std::int64_t> number_of_keys;
};

/// Outcome of SessionTable::create.
struct SessionCreated {
  std::optional<Session> session;  ///< the new pending session; empty when refused
  std::string ck_error;            ///< when refused: "unknown_application" | "bad_request"
  std::string message;             ///< when refused: precise reason for logs and the NG text
};

/// Outcome of SessionTable::add_delivered.
struct SessionDelivery {
  Session session;                           ///< updated (persist it)
  std::vector<AccountingRecord> accounting;  ///< deltas: source SAE, then destination SAE
};

/// The session table. See the file comment for the sequence.
class SessionTable {
 public:
  /// `network` and `random` must outlive the table. Throws InvalidArgument for a bad config.
  SessionTable(const Network& network, Random& random, SessionConfig config = {});

  [[nodiscard]] const SessionConfig& config() const noexcept { return config_; }

  /// Creates a pending session for a 0x1406. SAEs are resolved with Network::km_for_sae: an
  /// unknown SAE, or a source SAE served by a KM other than requesting_km, is refused with
  /// "unknown_application"; a malformed SAE ID, src == dst or number_of_keys outside
  /// [1, max_number_of_keys] with "bad_request". Never throws for peer input.
  SessionCreated create(const SessionRequest& request, SysTime now);
  /// The destination KM's 0x1409: pending -> active (ok) or failed (reason). Throws NotFound for
  /// an unknown session, Conflict when from_km is not its destination KM or it is not pending.
  Session on_answer(const std::string& session_id, const std::string& from_km, bool ok,
                    const std::string& reason, SysTime now);
  /// Ends a pending or active session as failed (e.g. the 0x4108 could not be sent). Throws
  /// NotFound, or Conflict when already final.
  Session fail(const std::string& session_id, const std::string& reason, SysTime now);
  /// Closes a pending or active session. Throws NotFound, or Conflict when already final.
  Session close(const std::string& session_id, const std::string& reason, SysTime now);
  /// Counts keys delivered by a finished relay of an active session. Throws NotFound,
  /// Conflict when the session is not active, InvalidArgument for negative counts.
  SessionDelivery add_delivered(const std::string& session_id, std::int64_t keys,
                                std::int64_t bytes, SysTime now);
  /// Ends every session whose expires_at <= now: pending ones become failed ("timeout"), others
  /// expired. Returned in expiry order, then ID (persist each; answer 0x4107 NG: timeout for the
  /// ones that were pending).
  std::vector<Session> expire(SysTime now);

  /// Reloads sessions after a restart (table must be empty, else Conflict). Pending sessions
  /// become failed ("controller restart": their 0x4108 exchange died with the old process);
  /// active ones past expires_at become expired. Returns the sessions that changed (persist
  /// them). Throws InvalidArgument for a malformed record or a repeated ID.
  std::vector<Session> restore(const std::vector<SessionRecord>& records, SysTime now);

  /// The session, or nullptr.
  [[nodiscard]] const Session* find(const std::string& session_id) const;
  /// The newest active session from src_km to the KM serving dst (dst_km), or nullptr: links a
  /// 0x1403 that names no session to its session.
  [[nodiscard]] const Session* find_active(const std::string& src_km,
                                           const std::string& dst_km) const;
  /// Every session (open and kept finished), by ID.
  [[nodiscard]] std::vector<Session> list() const;
  /// Number of active sessions (gauge qkdn_sessions_active).
  [[nodiscard]] std::size_t active_count() const noexcept;
  /// The earliest expires_at among open sessions, for the service's timer.
  [[nodiscard]] std::optional<SysTime> next_expiry() const;

 private:
  Session& get(const std::string& session_id);
  void schedule(Session& s, SysTime last_activity);
  void finish(Session& s, SessionState state, const std::string& reason, SysTime now);

  const Network* network_;
  Random* random_;
  SessionConfig config_;
  std::map<std::string, Session> sessions_;
  std::set<std::pair<SysTime, std::string>> expiry_;  // (expires_at, id) of open sessions
  std::deque<std::string> finished_;  // finished IDs, oldest first (bounded history)
};

}  // namespace qkdn::controller
