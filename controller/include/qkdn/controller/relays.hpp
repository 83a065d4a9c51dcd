// Key relay orchestration in a centralized QKDN (Q.4164 7.2, 7.5, 7.6; ck-protocol.md section 6
// steps 3-7; DESIGN.md section 3). Pure: no I/O. Every call returns a RelayOutput of values —
// Ck commands to send, ledger batches and relay records to persist, relays that ended — and the
// service layer carries them out. Single-threaded by contract (controller strand); time comes as
// `now`, relay IDs (key_relay_request_id, UUIDv4) from the injected Random.
//
// The exact sequence for one 0x1403 (source KM1, destination KM5, route KM1-KM2-KM4-KM5):
//
//   start({src KM1, dst KM5, number_of_keys N, routes = compute_routes(k) best first, ...})
//     relay R (attempt 1) is `requested`; output.reserve = one ReserveCommand per hop, in hop
//     order: send 0x410A to the hop's near KM (source_kma_id KM1, destination_kma_id KM5,
//     next_kma_id = far KM, link_id, number_of_keys N, key_relay_request_id R). All hops are
//     asked at once; a relay is admitted only when every hop is reserved.
//   0x140B OK from hop i     -> on_reserved(R, i, key_ids): the ledger records them `reserved`
//                               (lease: LedgerConfig::reservation_lease).
//   0x140B NG / timeout      -> on_reservation_failed(R, i, ck_error, message).
//   when every hop is reserved: R becomes `reserved`; output.allocate = one AllocateCommand per
//     hop, in hop order: send 0x410C (same fields, key_ids = the hop's reserved IDs).
//   0x140D OK from hop i     -> on_allocated(R, i): ledger `allocated` (allocation_lease).
//   0x140D NG / timeout      -> on_allocation_failed(R, i, ck_error, message).
//   when every hop is allocated: R becomes `relaying`; output.relay_requests holds the 0x4104 for
//     KM1: destination_kma_id KM5, transit_kma_ids [KM2, KM4], key_relay_request_id R,
//     notification_message_id, and extension {"hop_keys": [{kma_id, next_kma_id, link_id,
//     key_ids}, ...]} in hop order.
//   0x1405 from KM1          -> on_relay_response(R, ok, reason): OK consumes every hop key and R
//                               is `relayed`; NG releases them and R is `failed`.
//
// Failures before the 0x4104 (a hop not reserved or not allocated, the admission deadline, a
// lease that lapsed, a KM of the route disconnecting) release every key the attempt holds and,
// while alternative routes remain (at most RelayConfig::max_attempts attempts in all), `void` the
// attempt and start the next one as a NEW relay (new relay_id, attempt + 1, previous_relay_id)
// whose ReserveCommands are in the same output. With no alternative left the relay `fails`; the
// service then answers the 0x1403 with Error (Relay::ck_error, e.g. insufficient_keys, timeout,
// no_route) because no 0x4104 was sent. Failures after the 0x4104 (0x1405 NG, the relaying
// deadline, a KM of the route disconnecting) fail the relay and release its keys; nothing is
// retried (the KMs may have used part of the keys, which the ledger never hands out again).
//
// Answers that arrive late (for a voided or failed attempt, or twice) change nothing except: key
// IDs reserved for an attempt that is gone are recorded and released at once, so that the IDs
// are remembered and the per-link counters stay balanced. They are listed in `ignored`.
//
// Releases reach the KMs (docs/ck-extensions.md "Key release", 0x41EA): whenever the ledger
// releases keys of a hop, output.release holds a ReleaseCommand for the hop's near KM, so the KM
// offers keys it held only reserved again at once (the ledger accepts a key released before
// allocation when the same hop reserves it again) and discards keys it held allocated at both
// ends of the link. A 0x140B naming keys the ledger refuses fails the hop as before and also
// releases them at the KM: keys the ledger can never take again (consumed, or released after
// allocation) with `discard`, the others (unknown, or still held by another relay) to be offered
// again later. Without this the KM offered the refused keys first, again and again, once its own
// lease lapsed, and one overload poisoned key supply for good (issue 12).
//
// Timers: call expire(now) when next_deadline() passes. It fails/voids relays past their
// deadline and runs ReservationLedger::expire (lapsed leases end their attempt). Use this, not
// the ledger's expire, when the ledger belongs to a RelayTable.
//
// Persistence: write output.ledger batches (Store::apply_ledger, in order), then output.records
// (Store::save_relay, in order). restore() rebuilds the table after a restart: in-flight relays
// (requested, reserved) become `voided` "controller restart" and relaying ones `failed`
// "controller restart" (the KMs may have used their keys); their keys are released, as are
// orphan live keys; live keys of relays recorded as relayed are consumed.
#pragma once

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "qkdn/controller/clock.hpp"
#include "qkdn/controller/key_limits.hpp"
#include "qkdn/controller/ledger.hpp"
#include "qkdn/controller/routing.hpp"
#include "qkdn/controller/store.hpp"

namespace qkdn::controller {

/// requested -> reserved -> relaying -> relayed; any open state -> failed | voided.
enum class RelayState { kRequested, kReserved, kRelaying, kRelayed, kFailed, kVoided };

/// "requested" | "reserved" | "relaying" | "relayed" | "failed" | "voided" (RelayRecord::state).
std::string_view to_string(RelayState s) noexcept;
/// Parses the names of to_string(RelayState); throws InvalidArgument.
RelayState parse_relay_state(std::string_view s);
/// True for relayed, failed and voided.
bool is_final(RelayState s) noexcept;

/// Progress of one hop within an attempt.
enum class HopStage { kReserving, kReserved, kAllocating, kAllocated, kFailed };
std::string_view to_string(HopStage s) noexcept;

/// One hop of a relay: keys shared by km_id and next_km_id over link_id.
struct RelayHop {
  std::string km_id;       ///< near end: receives 0x410A / 0x410C
  std::string next_km_id;  ///< far end (next_kma_id)
  std::string link_id;
  std::int64_t number_of_keys = 0;
  HopStage stage = HopStage::kReserving;
  std::vector<std::string> key_ids;  ///< as the KM reserved them (empty until then)
};

/// One relay attempt along one route.
struct Relay {
  std::string relay_id;    ///< key_relay_request_id (UUIDv4)
  std::string session_id;  ///< may be empty
  std::string src_km;
  std::string dst_km;
  std::string application_destination_id;  ///< optional, echoed in 0x410A/0x410C
  std::int64_t number_of_keys = 0;         ///< keys per hop
  std::int64_t key_size_bits = 256;
  RelayState state = RelayState::kRequested;
  std::string reason;    ///< why it failed / was voided
  std::string ck_error;  ///< failed or voided: Ck error code for an unanswered 0x1403
  Route route;
  std::vector<RelayHop> hops;                            ///< one per route hop, in route order
  std::vector<Route> alternatives;                       ///< routes left to try, best first
  std::uint32_t attempt = 1;                             ///< 1 for the first route
  std::string previous_relay_id;                         ///< the attempt this one replaced
  std::string next_relay_id;                             ///< voided: the attempt that replaced it
  std::optional<std::uint32_t> notification_message_id;  ///< MessageID of the 0x1403
  bool request_sent = false;  ///< the 0x4104 went out (the 0x1403 is answered)
  SysTime created_at{};
  SysTime updated_at{};
  std::optional<SysTime> deadline;  ///< open relays: when expire() ends it
  /// How the KMs protect the keys on each hop (0x1403 extension "relay_scheme",
  /// docs/ck-extensions.md): "otp" (number_of_keys hop keys per hop = the keys relayed) or
  /// "aes-256-gcm" (one hop key per hop keys every relayed key; computationally secure).
  /// Not persisted: a relay read back from the store shows "otp".
  std::string relay_scheme = "otp";
};

/// The relay schemes a 0x1403 may name.
inline constexpr std::array<std::string_view, 2> kRelaySchemes{"otp", "aes-256-gcm"};

/// Relay <-> persistence record. from_record rebuilds hops from the route (no key IDs); throws
/// InvalidArgument for an unknown state, an empty ID or a route whose sizes disagree.
RelayRecord to_record(const Relay& r);
Relay relay_from_record(const RelayRecord& r);

/// Most keys one relay along `route` may carry: limits::max_keys_per_relay for its hops and the
/// lengths of its KM and link names (its 0x4104 must fit one Ck frame).
std::int64_t max_keys_for(const Route& route);

/// What a 0x1403 asks for, with the routes the service computed.
struct RelayRequest {
  std::string session_id;  ///< optional
  std::string src_km;
  std::string dst_km;
  std::string application_destination_id;  ///< optional
  std::int64_t number_of_keys = 1;
  std::int64_t key_size_bits = 256;
  std::vector<Route> routes;  ///< compute_routes(src, dst, k), best first; at least one
  std::optional<std::uint32_t> notification_message_id;
  std::string relay_scheme = "otp";  ///< one of kRelaySchemes
};

/// 0x410A for the hop's near KM.
struct ReserveCommand {
  std::string relay_id;  ///< key_relay_request_id
  std::size_t hop = 0;   ///< index in Relay::hops (correlate the 0x140B with it)
  std::string km_id;     ///< send to
  std::string source_kma_id;
  std::string destination_kma_id;
  std::string next_kma_id;
  std::string link_id;
  std::int64_t number_of_keys = 0;
  std::string application_destination_id;  ///< empty = omit
};

/// 0x410C for the hop's near KM.
struct AllocateCommand {
  std::string relay_id;
  std::size_t hop = 0;
  std::string km_id;  ///< send to
  std::string source_kma_id;
  std::string destination_kma_id;
  std::string next_kma_id;
  std::string link_id;
  std::vector<std::string> key_ids;
  std::string application_destination_id;  ///< empty = omit
};

/// 0x41EA (docs/ck-extensions.md "Key release") for a hop's near KM: the ledger released these
/// keys of relay_id, or refused to record them. The KM puts back (available) the keys it holds
/// reserved for relay_id, discards at both ends of the link those it holds allocated for it, and
/// with `discard` discards every named key it holds for relay_id.
struct ReleaseCommand {
  std::string relay_id;  ///< key_relay_request_id of the reservation
  std::string km_id;     ///< send to (the hop's near KM)
  std::string next_kma_id;
  std::string link_id;
  std::vector<std::string> key_ids;
  bool discard = false;  ///< the ledger can never take these keys again

  friend bool operator==(const ReleaseCommand&, const ReleaseCommand&) = default;
};

/// One element of the 0x4104 extension's "hop_keys".
struct HopKeys {
  std::string kma_id;
  std::string next_kma_id;
  std::string link_id;
  std::vector<std::string> key_ids;

  friend bool operator==(const HopKeys&, const HopKeys&) = default;
};

/// 0x4104 for the source KM.
struct RelayRequestCommand {
  std::string relay_id;  ///< key_relay_request_id
  std::string km_id;     ///< send to (= source_kma_id)
  std::string source_kma_id;
  std::string destination_kma_id;
  std::vector<std::string> transit_kma_ids;  ///< hop order, both ends excluded
  std::optional<std::uint32_t> notification_message_id;
  std::int64_t number_of_keys = 0;
  std::int64_t key_size_bits = 256;
  std::vector<HopKeys> hop_keys;  ///< extension {"hop_keys": [...]}, hop order
};

/// What one RelayTable call asks the service to do. Within each list, order matters.
struct RelayOutput {
  std::vector<ReserveCommand> reserve;              ///< send 0x410A
  std::vector<AllocateCommand> allocate;            ///< send 0x410C
  std::vector<RelayRequestCommand> relay_requests;  ///< send 0x4104
  std::vector<ReleaseCommand> release;              ///< send 0x41EA (at once)
  std::vector<LedgerBatch> ledger;                  ///< Store::apply_ledger (never empty ones)
  std::vector<RelayRecord> records;                 ///< Store::save_relay (upserts)
  /// Attempts that ended in this call (relayed, failed, voided), for metrics
  /// (qkdn_key_relays_total{result}, qkdn_key_relay_duration_seconds), session accounting
  /// (relayed with a session_id: SessionTable::add_delivered) and, for failed ones with
  /// !request_sent, the Error answer to the 0x1403.
  std::vector<Relay> finished;
  std::vector<std::string> ignored;  ///< stale or unknown answers, for the log

  [[nodiscard]] bool empty() const noexcept;
  /// Appends every list of `other`.
  void append(RelayOutput&& other);
};

/// Relay tuning. Durations must be positive.
struct RelayConfig {
  Millis admission_timeout{10'000};  ///< start of an attempt .. every hop allocated
  Millis relaying_timeout{30'000};   ///< 0x4104 .. 0x1405
  std::size_t max_attempts = 3;      ///< routes tried per 0x1403 (>= 1)
  /// Largest number_of_keys of one relay; at most limits::kMaxKeysPerRelay, which agents enforce.
  std::int64_t max_number_of_keys = limits::kMaxKeysPerRelay;
  std::size_t max_finished = 10'000;  ///< finished relays kept in memory (>= 1)
};

/// The relay table. See the file comment for the sequence.
class RelayTable {
 public:
  /// `ledger` and `random` must outlive the table. Throws InvalidArgument for a bad config or
  /// when the ledger's allocation_lease is shorter than admission_timeout + relaying_timeout (an
  /// allocated key must stay held until the 0x1405 is due).
  RelayTable(ReservationLedger& ledger, Random& random, RelayConfig config = {});

  [[nodiscard]] const RelayConfig& config() const noexcept { return config_; }

  /// Starts a relay on request.routes[0] (see the sequence). Throws InvalidArgument for a bad
  /// request: empty or equal ends, number_of_keys outside [1, max_number_of_keys], key_size_bits
  /// < 1, no route, or a route that does not join src to dst with one non-empty link per hop.
  RelayOutput start(const RelayRequest& request, SysTime now);
  /// 0x140B OK for hop `hop` of relay_id. Key IDs that are malformed, repeated or seen before
  /// fail the hop (bad_request); fewer or more than number_of_keys fail it (insufficient_keys).
  RelayOutput on_reserved(const std::string& relay_id, std::size_t hop,
                          const std::vector<std::string>& key_ids, SysTime now);
  /// 0x140B NG (or no answer) for a hop. ck_error defaults to "insufficient_keys" when empty.
  RelayOutput on_reservation_failed(const std::string& relay_id, std::size_t hop,
                                    const std::string& ck_error, const std::string& message,
                                    SysTime now);
  /// 0x140D OK for a hop.
  RelayOutput on_allocated(const std::string& relay_id, std::size_t hop, SysTime now);
  /// 0x140D NG (or no answer) for a hop. ck_error defaults to "insufficient_keys" when empty.
  RelayOutput on_allocation_failed(const std::string& relay_id, std::size_t hop,
                                   const std::string& ck_error, const std::string& message,
                                   SysTime now);
  /// 0x1405 for a relaying relay: ok -> relayed (keys consumed); else failed (keys released).
  RelayOutput on_relay_response(const std::string& relay_id, bool ok, const std::string& reason,
                                SysTime now);
  /// A KM lost its Ck connection: every open relay whose route crosses it ends (before the
  /// 0x4104 it moves on to the next alternative that avoids the KM; after it, it fails).
  RelayOutput on_km_disconnected(const std::string& km_id, SysTime now);
  /// Voids an open attempt that has not sent its 0x4104, releases its keys and starts the next
  /// route: `routes` when given (e.g. recomputed by the caller), else the remaining alternatives;
  /// with none the relay fails (ck_error no_route). Throws NotFound for an unknown relay,
  /// Conflict when it is final or relaying.
  RelayOutput next_route(const std::string& relay_id, const std::string& reason, SysTime now,
                         std::optional<std::vector<Route>> routes = std::nullopt);
  /// Voids an open relay (any open state) and releases its keys. Throws NotFound, or Conflict
  /// when already final.
  RelayOutput cancel(const std::string& relay_id, const std::string& reason, SysTime now);
  /// Ends relays past their deadline (admission: next route or failed "timeout"; relaying:
  /// failed "timeout") and releases lapsed leases (their attempt ends: reservation_expired).
  RelayOutput expire(SysTime now);

  /// Rebuilds the table and the ledger after a restart (both must be empty, else Conflict); see
  /// the file comment. Returns the ledger batches and relay records to persist and the relays
  /// that changed. Throws InvalidArgument for malformed records.
  RelayOutput restore(const std::vector<RelayRecord>& relays,
                      const std::vector<LedgerEntry>& ledger, SysTime now);

  /// The relay, or nullptr.
  [[nodiscard]] const Relay* find(const std::string& relay_id) const;
  /// Every relay kept (open and recent finished), by ID.
  [[nodiscard]] std::vector<Relay> list() const;
  /// IDs of open relays, in ID order.
  [[nodiscard]] std::vector<std::string> open_relays() const;
  /// The earliest relay deadline or ledger lease expiry, for the service's timer.
  [[nodiscard]] std::optional<SysTime> next_deadline() const;
  [[nodiscard]] const ReservationLedger& ledger() const noexcept { return *ledger_; }

 private:
  Relay* open_relay(const std::string& relay_id, std::size_t hop, std::string_view what,
                    RelayOutput& out);
  std::string new_relay_id();
  /// Registers a new attempt (relay_id set by the caller) and asks for its reservations.
  void launch(Relay relay, SysTime now, RelayOutput& out);
  void record(Relay& r, SysTime now, RelayOutput& out);
  /// Queues a non-empty batch and a ReleaseCommand per hop for the keys it released.
  void persist_batch(LedgerBatch&& batch, RelayOutput& out);
  /// Releases keys at the hop's KM that the ledger refused to record for relay_id.
  void release_refused(const std::string& relay_id, const RelayHop& hop,
                       const std::vector<std::string>& key_ids, RelayOutput& out);
  void finish(Relay& r, RelayState state, const std::string& reason, const std::string& ck_error,
              SysTime now, RelayOutput& out);
  /// The attempt cannot be admitted: release, then next route (skipping routes through
  /// avoid_km) or fail.
  void attempt_failed(Relay& r, const std::string& reason, const std::string& ck_error,
                      const std::string& avoid_km, SysTime now, RelayOutput& out);
  void hop_failed(Relay& r, std::size_t hop, std::string_view step, const std::string& ck_error,
                  const std::string& message, SysTime now, RelayOutput& out);
  void late_reservation(const std::string& relay_id, const RelayHop& hop,
                        const std::vector<std::string>& key_ids, SysTime now, RelayOutput& out);
  void maybe_allocate(Relay& r, SysTime now, RelayOutput& out);
  void maybe_relay(Relay& r, SysTime now, RelayOutput& out);
  void prune();

  ReservationLedger* ledger_;
  Random* random_;
  RelayConfig config_;
  std::map<std::string, Relay> relays_;
  std::set<std::string> open_;
  std::deque<std::string> finished_;  // finished IDs, oldest first (bounded history)
};

}  // namespace qkdn::controller
