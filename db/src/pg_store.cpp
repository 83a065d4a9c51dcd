// PgStore: the Store on PostgreSQL through libpqxx 6.4. Every SQL statement is a named constant
// below, prepared once per connection; times cross the wire as microseconds since the epoch
// (qkdn_us_to_ts / qkdn_ts_to_us in 0001_initial.sql) and lists as array literals, so that a
// batch of rows is one statement (unnest) rather than one round trip per row.
#include "qkdn/db/pg_store.hpp"

#include <algorithm>
#include <chrono>
#include <limits>
#include <optional>
#include <pqxx/pqxx>
#include <string_view>
#include <unordered_set>
#include <utility>

#include "qkdn/controller/error.hpp"

namespace qkdn::db {
namespace {

using controller::AccountingRecord;
using controller::Alarm;
using controller::AuditRecord;
using controller::LedgerEntry;
using controller::LinkConfigRecord;
using controller::PinnedRouteRecord;
using controller::PolicyRecord;
using controller::RelayRecord;
using controller::SaeConstraintRecord;
using controller::ScheduleRecord;
using controller::SessionRecord;
using controller::StoredState;
using controller::TopologyDoc;

/// A prepared statement: its name on the connection and its text.
struct Statement {
  const char* name;
  const char* sql;
};

// --- migrations (plain statements, run before anything is prepared) -----------------------

/// Serialises the migrations of concurrent starters; the key is "qkdn" in ASCII (0x716b646e).
constexpr const char* kLockMigrations = "SELECT pg_advisory_xact_lock(1902863470)";
constexpr const char* kCreateSchemaVersion =
    "CREATE TABLE IF NOT EXISTS schema_version ("
    " version integer PRIMARY KEY,"
    " name text NOT NULL,"
    " applied_at timestamptz NOT NULL DEFAULT now())";
constexpr const char* kSelectSchemaVersions = "SELECT version FROM schema_version ORDER BY version";
constexpr const char* kSchemaVersionTableExists =
    "SELECT to_regclass('schema_version') IS NOT NULL";

// --- topology -----------------------------------------------------------------------------

constexpr Statement kUpsertTopologyName{
    "upsert_topology_name",
    "INSERT INTO topology_meta (id, name, qkdn_id, updated_at) VALUES (1, $1, $2, now())"
    " ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, qkdn_id = EXCLUDED.qkdn_id,"
    "   updated_at = now()"};
constexpr Statement kUpsertKms{
    "upsert_kms",
    "INSERT INTO kms (km_id, site, lat, lon, trust_level, tags, ord)"
    " SELECT t.km_id, t.site, t.lat, t.lon, t.trust, t.tags::text[], t.ord"
    " FROM unnest($1::text[], $2::text[], $3::float8[], $4::float8[], $5::int4[], $6::text[])"
    "   WITH ORDINALITY AS t(km_id, site, lat, lon, trust, tags, ord)"
    " ON CONFLICT (km_id) DO UPDATE SET site = EXCLUDED.site, lat = EXCLUDED.lat,"
    "   lon = EXCLUDED.lon, trust_level = EXCLUDED.trust_level, tags = EXCLUDED.tags,"
    "   ord = EXCLUDED.ord"};
constexpr Statement kUpsertLinks{
    "upsert_links",
    "INSERT INTO links (link_id, a, b, key_rate_bps, distance_km, qber, weight, ord)"
    " SELECT t.link_id, t.a, t.b, t.rate, t.dist, t.qber, t.weight, t.ord"
    " FROM unnest($1::text[], $2::text[], $3::text[], $4::float8[], $5::float8[], $6::float8[],"
    "   $7::float8[])"
    "   WITH ORDINALITY AS t(link_id, a, b, rate, dist, qber, weight, ord)"
    " ON CONFLICT (link_id) DO UPDATE SET a = EXCLUDED.a, b = EXCLUDED.b,"
    "   key_rate_bps = EXCLUDED.key_rate_bps, distance_km = EXCLUDED.distance_km,"
    "   qber = EXCLUDED.qber, weight = EXCLUDED.weight, ord = EXCLUDED.ord"};
constexpr Statement kUpsertApplications{
    "upsert_applications",
    "INSERT INTO applications (sae_id, km_id, ord)"
    " SELECT t.sae_id, t.km_id, t.ord FROM unnest($1::text[], $2::text[]) WITH ORDINALITY"
    "   AS t(sae_id, km_id, ord)"
    " ON CONFLICT (sae_id) DO UPDATE SET km_id = EXCLUDED.km_id, ord = EXCLUDED.ord"};
// Anti-joins against the new ID list (hash anti join, not `<> ALL`, which is quadratic).
constexpr Statement kDeleteOtherApplications{
    "delete_other_applications",
    "DELETE FROM applications x"
    " WHERE NOT EXISTS (SELECT 1 FROM unnest($1::text[]) AS n(id) WHERE n.id = x.sae_id)"};
constexpr Statement kDeleteOtherLinks{
    "delete_other_links",
    "DELETE FROM links x"
    " WHERE NOT EXISTS (SELECT 1 FROM unnest($1::text[]) AS n(id) WHERE n.id = x.link_id)"};
constexpr Statement kDeleteOtherKms{
    "delete_other_kms",
    "DELETE FROM kms x"
    " WHERE NOT EXISTS (SELECT 1 FROM unnest($1::text[]) AS n(id) WHERE n.id = x.km_id)"};

// Interworking (0009): peers and inter-QKDN links are few (bounded by the document rules) and
// replaced as a whole with the document.
constexpr Statement kDeleteInterQkdnLinks{"delete_inter_qkdn_links",
                                          "DELETE FROM inter_qkdn_links"};
constexpr Statement kDeletePeers{"delete_peers", "DELETE FROM peers"};
constexpr Statement kSetGateways{
    "set_gateways",
    "UPDATE kms SET gateway = EXISTS (SELECT 1 FROM unnest($1::text[]) AS n(id)"
    " WHERE n.id = kms.km_id)"};
constexpr Statement kInsertPeers{
    "insert_peers",
    "INSERT INTO peers (qkdn_id, endpoint, identity, reachable_saes, key_rate_share, ord)"
    " SELECT t.q, t.e, t.i, t.s::text[], t.r, t.ord"
    " FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::float8[])"
    "   WITH ORDINALITY AS t(q, e, i, s, r, ord)"};
constexpr Statement kInsertInterQkdnLinks{
    "insert_inter_qkdn_links",
    "INSERT INTO inter_qkdn_links (link_id, km_id, peer_qkdn_id, peer_km_id, key_rate_bps, ord)"
    " SELECT t.l, t.k, t.q, t.p, t.r, t.ord"
    " FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::float8[])"
    "   WITH ORDINALITY AS t(l, k, q, p, r, ord)"};

constexpr Statement kUpsertLinkConfig{
    "upsert_link_config",
    "INSERT INTO link_configs (link_id, admin_state, qber_threshold, pool_floor_bits)"
    " VALUES ($1, $2, $3, $4)"
    " ON CONFLICT (link_id) DO UPDATE SET admin_state = EXCLUDED.admin_state,"
    "   qber_threshold = EXCLUDED.qber_threshold, pool_floor_bits = EXCLUDED.pool_floor_bits"};
constexpr Statement kDeleteLinkConfig{"delete_link_config",
                                      "DELETE FROM link_configs WHERE link_id = $1"};
constexpr Statement kUpsertThresholds{
    "upsert_thresholds",
    "INSERT INTO thresholds (id, qber, pool_floor_bits, qber_hysteresis, updated_at)"
    " VALUES (1, $1, $2, $3, now())"
    " ON CONFLICT (id) DO UPDATE SET qber = EXCLUDED.qber,"
    "   pool_floor_bits = EXCLUDED.pool_floor_bits, qber_hysteresis = EXCLUDED.qber_hysteresis,"
    "   updated_at = now()"};

// --- policies, schedules, pinned routes ------------------------------------------------------

constexpr Statement kUpsertPolicy{
    "upsert_policy",
    "INSERT INTO policies (src_km, dst_km, mode, params, avoid_tags, updated_at)"
    " VALUES ($1, $2, $3, COALESCE((SELECT jsonb_object_agg(p.k, p.v)"
    "   FROM unnest($4::text[], $5::float8[]) AS p(k, v)), '{}'::jsonb), $6::text[], now())"
    " ON CONFLICT (src_km, dst_km) DO UPDATE SET mode = EXCLUDED.mode,"
    "   params = EXCLUDED.params, avoid_tags = EXCLUDED.avoid_tags, updated_at = now()"};
constexpr Statement kDeletePolicy{"delete_policy",
                                  "DELETE FROM policies WHERE src_km = $1 AND dst_km = $2"};
constexpr Statement kUpsertSaeConstraints{
    "upsert_sae_constraints",
    "INSERT INTO sae_constraints (src_sae, dst_sae, max_intermediates, min_trust_level,"
    "   avoid_tags, updated_at)"
    " VALUES ($1, $2, $3, $4, $5::text[], qkdn_us_to_ts($6))"
    " ON CONFLICT (src_sae, dst_sae) DO UPDATE SET"
    "   max_intermediates = EXCLUDED.max_intermediates,"
    "   min_trust_level = EXCLUDED.min_trust_level, avoid_tags = EXCLUDED.avoid_tags,"
    "   updated_at = EXCLUDED.updated_at"};
constexpr Statement kDeleteSaeConstraints{
    "delete_sae_constraints", "DELETE FROM sae_constraints WHERE src_sae = $1 AND dst_sae = $2"};
constexpr Statement kUpsertSchedule{
    "upsert_schedule",
    "INSERT INTO schedules (schedule_id, src_km, dst_km, number_of_keys, key_size_bits,"
    "   not_before, not_after, created_at)"
    " VALUES ($1, $2, $3, $4, $5, qkdn_us_to_ts($6), qkdn_us_to_ts($7), qkdn_us_to_ts($8))"
    " ON CONFLICT (schedule_id) DO UPDATE SET src_km = EXCLUDED.src_km,"
    "   dst_km = EXCLUDED.dst_km, number_of_keys = EXCLUDED.number_of_keys,"
    "   key_size_bits = EXCLUDED.key_size_bits, not_before = EXCLUDED.not_before,"
    "   not_after = EXCLUDED.not_after, created_at = EXCLUDED.created_at"};
constexpr Statement kDeleteSchedule{"delete_schedule",
                                    "DELETE FROM schedules WHERE schedule_id = $1"};
constexpr Statement kUpsertPinnedRoute{
    "upsert_pinned_route",
    "INSERT INTO pinned_routes (src_km, dst_km, kms, links, created_at)"
    " VALUES ($1, $2, $3::text[], $4::text[], qkdn_us_to_ts($5))"
    " ON CONFLICT (src_km, dst_km) DO UPDATE SET kms = EXCLUDED.kms, links = EXCLUDED.links,"
    "   created_at = EXCLUDED.created_at"};
constexpr Statement kDeletePinnedRoute{
    "delete_pinned_route", "DELETE FROM pinned_routes WHERE src_km = $1 AND dst_km = $2"};

// --- sessions, relays ----------------------------------------------------------------------

constexpr Statement kUpsertSession{
    "upsert_session",
    "INSERT INTO sessions (session_id, src_sae, dst_sae, src_km, dst_km, keys_requested,"
    "   keys_delivered, state, created_at, updated_at, expires_at)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, qkdn_us_to_ts($9), qkdn_us_to_ts($10),"
    "   qkdn_us_to_ts($11))"
    " ON CONFLICT (session_id) DO UPDATE SET src_sae = EXCLUDED.src_sae,"
    "   dst_sae = EXCLUDED.dst_sae, src_km = EXCLUDED.src_km, dst_km = EXCLUDED.dst_km,"
    "   keys_requested = EXCLUDED.keys_requested, keys_delivered = EXCLUDED.keys_delivered,"
    "   state = EXCLUDED.state, created_at = EXCLUDED.created_at,"
    "   updated_at = EXCLUDED.updated_at, expires_at = EXCLUDED.expires_at"};
constexpr Statement kUpsertRelay{
    "upsert_relay",
    "INSERT INTO relays (relay_id, session_id, src_km, dst_km, route_kms, route_links,"
    "   number_of_keys, key_size_bits, state, reason, created_at, updated_at)"
    " VALUES ($1, $2, $3, $4, $5::text[], $6::text[], $7, $8, $9, $10, qkdn_us_to_ts($11),"
    "   qkdn_us_to_ts($12))"
    " ON CONFLICT (relay_id) DO UPDATE SET session_id = EXCLUDED.session_id,"
    "   src_km = EXCLUDED.src_km, dst_km = EXCLUDED.dst_km, route_kms = EXCLUDED.route_kms,"
    "   route_links = EXCLUDED.route_links, number_of_keys = EXCLUDED.number_of_keys,"
    "   key_size_bits = EXCLUDED.key_size_bits, state = EXCLUDED.state,"
    "   reason = EXCLUDED.reason, created_at = EXCLUDED.created_at,"
    "   updated_at = EXCLUDED.updated_at"};

// --- ledger --------------------------------------------------------------------------------

// Claims the idempotency key; no row back means the batch committed before.
constexpr Statement kClaimLedgerBatch{
    "claim_ledger_batch",
    "INSERT INTO ledger_batches (idempotency_key, entries) VALUES ($1, $2)"
    " ON CONFLICT (idempotency_key) DO NOTHING RETURNING 1"};
constexpr Statement kLedgerBatchCommitted{
    "ledger_batch_committed", "SELECT 1 FROM ledger_batches WHERE idempotency_key = $1"};
// New keys are inserted, known keys updated; the triggers of 0001 and 0004 reject forbidden
// transitions and keys that change link or KM, or relay (except a key released before
// allocation that is reserved again) (SQLSTATE QK001); they also keep ever_allocated.
// The rows of a ledger batch from eight arrays ($1..$8), inserted or updated; QKDN_LEDGER_ON
// follows the FROM (a WHERE clause, or nothing).
#define QKDN_LEDGER_UPSERT(QKDN_LEDGER_ON)                                                  \
  "INSERT INTO ledger (key_id, link_id, km_id, peer_km_id, relay_id, state,"                \
  "   lease_expires_at, updated_at)"                                                        \
  " SELECT e.key_id, e.link_id, e.km_id, e.peer_km_id, e.relay_id, e.state,"                \
  "   CASE WHEN e.state IN ('reserved', 'allocated') THEN qkdn_us_to_ts(e.lease_us) END,"   \
  "   qkdn_us_to_ts(e.updated_us)"                                                          \
  " FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],"    \
  "   $7::int8[], $8::int8[])"                                                              \
  "   AS e(key_id, link_id, km_id, peer_km_id, relay_id, state, lease_us, "                 \
  "updated_us)" QKDN_LEDGER_ON                                                              \
  " ON CONFLICT (key_id) DO UPDATE SET link_id = EXCLUDED.link_id, km_id = EXCLUDED.km_id," \
  "   peer_km_id = EXCLUDED.peer_km_id, relay_id = EXCLUDED.relay_id,"                      \
  "   state = EXCLUDED.state, lease_expires_at = EXCLUDED.lease_expires_at,"                \
  "   updated_at = EXCLUDED.updated_at"
constexpr Statement kUpsertLedger{"upsert_ledger", QKDN_LEDGER_UPSERT("")};

// Both in one statement (one round trip, and one EXECUTE in a pipelined batch): the rows are
// written only if this call claimed the key. Only for a batch that moves each key once.
constexpr Statement kClaimAndUpsertLedger{
    "claim_and_upsert_ledger",
    "WITH claim AS (INSERT INTO ledger_batches (idempotency_key, entries) VALUES ($9, $10)"
    "   ON CONFLICT (idempotency_key) DO NOTHING RETURNING 1) " QKDN_LEDGER_UPSERT(
        " WHERE EXISTS (SELECT 1 FROM claim)")};
#undef QKDN_LEDGER_UPSERT

// --- alarms, accounting, audit ----------------------------------------------------------------

constexpr Statement kUpsertAlarm{
    "upsert_alarm",
    "INSERT INTO alarms (id, type, resource, km_id, link_id, severity, state, acknowledged,"
    "   acknowledged_by, acknowledged_at, raised_at, updated_at, cleared_at, last_value, text,"
    "   count)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, qkdn_us_to_ts($10), qkdn_us_to_ts($11),"
    "   qkdn_us_to_ts($12), qkdn_us_to_ts($13), $14, $15, $16)"
    " ON CONFLICT (id) DO UPDATE SET type = EXCLUDED.type, resource = EXCLUDED.resource,"
    "   km_id = EXCLUDED.km_id, link_id = EXCLUDED.link_id, severity = EXCLUDED.severity,"
    "   state = EXCLUDED.state, acknowledged = EXCLUDED.acknowledged,"
    "   acknowledged_by = EXCLUDED.acknowledged_by,"
    "   acknowledged_at = EXCLUDED.acknowledged_at, raised_at = EXCLUDED.raised_at,"
    "   updated_at = EXCLUDED.updated_at, cleared_at = EXCLUDED.cleared_at,"
    "   last_value = EXCLUDED.last_value, text = EXCLUDED.text, count = EXCLUDED.count"};
constexpr Statement kAddAccounting{
    "add_accounting",
    "INSERT INTO accounting (bucket_start, sae_id, session_id, key_bytes, keys)"
    " VALUES (qkdn_us_to_ts($1), $2, $3, $4, $5)"
    " ON CONFLICT (bucket_start, sae_id, session_id) DO UPDATE SET"
    "   key_bytes = accounting.key_bytes + EXCLUDED.key_bytes,"
    "   keys = accounting.keys + EXCLUDED.keys"};
constexpr Statement kSelectAccounting{
    "select_accounting",
    "SELECT qkdn_ts_to_us(bucket_start), sae_id, session_id, key_bytes, keys FROM accounting"
    " WHERE bucket_start >= qkdn_us_to_ts($1) AND bucket_start < qkdn_us_to_ts($2)"
    "   AND ($3 = '' OR sae_id = $3)"
    " ORDER BY bucket_start, sae_id, session_id"};
constexpr Statement kAppendAudit{
    "append_audit",
    "INSERT INTO audit (at, actor, action, resource, outcome, detail, remote)"
    " VALUES (qkdn_us_to_ts($1), $2, $3, $4, $5, $6, $7) RETURNING id"};
constexpr Statement kSelectAudit{
    "select_audit",
    "SELECT id, qkdn_ts_to_us(at), actor, action, resource, outcome, detail, remote FROM audit"
    " WHERE id > $1 ORDER BY id LIMIT $2"};

// --- load ------------------------------------------------------------------------------------

constexpr Statement kLoadTopologyName{"load_topology_name",
                                      "SELECT name, qkdn_id FROM topology_meta WHERE id = 1"};
constexpr Statement kLoadKms{
    "load_kms",
    "SELECT km_id, site, lat, lon, trust_level, tags, gateway FROM kms ORDER BY ord, km_id"};
constexpr Statement kLoadPeers{
    "load_peers",
    "SELECT qkdn_id, endpoint, identity, reachable_saes, key_rate_share FROM peers"
    " ORDER BY ord, qkdn_id"};
constexpr Statement kLoadInterQkdnLinks{
    "load_inter_qkdn_links",
    "SELECT link_id, km_id, peer_qkdn_id, peer_km_id, key_rate_bps FROM inter_qkdn_links"
    " ORDER BY ord, link_id"};
constexpr Statement kLoadLinks{
    "load_links",
    "SELECT link_id, a, b, key_rate_bps, distance_km, qber, weight FROM links"
    " ORDER BY ord, link_id"};
constexpr Statement kLoadApplications{
    "load_applications", "SELECT sae_id, km_id FROM applications ORDER BY ord, sae_id"};
constexpr Statement kLoadThresholds{
    "load_thresholds",
    "SELECT qber, pool_floor_bits, qber_hysteresis FROM thresholds WHERE id = 1"};
constexpr Statement kLoadLinkConfigs{
    "load_link_configs",
    "SELECT link_id, admin_state, qber_threshold, pool_floor_bits FROM link_configs"
    " ORDER BY link_id"};
constexpr Statement kLoadPolicies{
    "load_policies",
    "SELECT p.src_km, p.dst_km, p.mode, e.key, (e.value)::float8, p.avoid_tags FROM policies p"
    " LEFT JOIN LATERAL jsonb_each_text(p.params) AS e(key, value) ON true"
    " ORDER BY p.src_km, p.dst_km, e.key"};
constexpr Statement kLoadSaeConstraints{
    "load_sae_constraints",
    "SELECT src_sae, dst_sae, max_intermediates, min_trust_level, avoid_tags,"
    "   qkdn_ts_to_us(updated_at) FROM sae_constraints ORDER BY src_sae, dst_sae"};
constexpr Statement kLoadSchedules{
    "load_schedules",
    "SELECT schedule_id, src_km, dst_km, number_of_keys, key_size_bits,"
    "   qkdn_ts_to_us(not_before), qkdn_ts_to_us(not_after), qkdn_ts_to_us(created_at)"
    " FROM schedules ORDER BY not_before, schedule_id"};
constexpr Statement kLoadPinnedRoutes{
    "load_pinned_routes",
    "SELECT src_km, dst_km, kms, links, qkdn_ts_to_us(created_at) FROM pinned_routes"
    " ORDER BY src_km, dst_km"};
// Open sessions, then the $1 most recently updated finished ones.
constexpr Statement kLoadSessions{
    "load_sessions",
    "SELECT session_id, src_sae, dst_sae, src_km, dst_km, keys_requested, keys_delivered,"
    "   state, qkdn_ts_to_us(created_at), qkdn_ts_to_us(updated_at), qkdn_ts_to_us(expires_at)"
    " FROM ((SELECT * FROM sessions WHERE state IN ('pending', 'active'))"
    "   UNION ALL (SELECT * FROM sessions WHERE state NOT IN ('pending', 'active')"
    "     ORDER BY updated_at DESC LIMIT $1)) s"
    " ORDER BY created_at, session_id"};
constexpr Statement kLoadRelays{
    "load_relays",
    "SELECT relay_id, session_id, src_km, dst_km, route_kms, route_links, number_of_keys,"
    "   key_size_bits, state, reason, qkdn_ts_to_us(created_at), qkdn_ts_to_us(updated_at)"
    " FROM ((SELECT * FROM relays WHERE state IN ('requested', 'reserved', 'relaying'))"
    "   UNION ALL (SELECT * FROM relays WHERE state NOT IN ('requested', 'reserved', 'relaying')"
    "     ORDER BY updated_at DESC LIMIT $1)) r"
    " ORDER BY created_at, relay_id"};
// Every key ID ever seen: the core must never hand one out again.
constexpr Statement kLoadLedger{
    "load_ledger",
    "SELECT key_id, link_id, km_id, peer_km_id, relay_id, state,"
    "   qkdn_ts_to_us(lease_expires_at), qkdn_ts_to_us(updated_at), ever_allocated FROM ledger"};
constexpr Statement kLoadAlarms{
    "load_alarms",
    "SELECT id, type, resource, km_id, link_id, severity, state, acknowledged,"
    "   acknowledged_by, qkdn_ts_to_us(acknowledged_at), qkdn_ts_to_us(raised_at),"
    "   qkdn_ts_to_us(updated_at), qkdn_ts_to_us(cleared_at), last_value, text, count"
    " FROM ((SELECT * FROM alarms WHERE state = 'active')"
    "   UNION ALL (SELECT * FROM alarms WHERE state <> 'active' ORDER BY id DESC LIMIT $1)) a"
    " ORDER BY id"};
constexpr Statement kNextAlarmId{"next_alarm_id", "SELECT COALESCE(max(id), 0) + 1 FROM alarms"};

constexpr Statement kStatements[] = {
    kUpsertTopologyName,
    kUpsertKms,
    kUpsertLinks,
    kUpsertApplications,
    kDeleteOtherApplications,
    kDeleteOtherLinks,
    kDeleteOtherKms,
    kDeleteInterQkdnLinks,
    kDeletePeers,
    kSetGateways,
    kInsertPeers,
    kInsertInterQkdnLinks,
    kUpsertLinkConfig,
    kDeleteLinkConfig,
    kUpsertThresholds,
    kUpsertPolicy,
    kDeletePolicy,
    kUpsertSaeConstraints,
    kDeleteSaeConstraints,
    kUpsertSchedule,
    kDeleteSchedule,
    kUpsertPinnedRoute,
    kDeletePinnedRoute,
    kUpsertSession,
    kUpsertRelay,
    kClaimLedgerBatch,
    kLedgerBatchCommitted,
    kUpsertLedger,
    kClaimAndUpsertLedger,
    kUpsertAlarm,
    kAddAccounting,
    kSelectAccounting,
    kAppendAudit,
    kSelectAudit,
    kLoadTopologyName,
    kLoadKms,
    kLoadLinks,
    kLoadApplications,
    kLoadPeers,
    kLoadInterQkdnLinks,
    kLoadThresholds,
    kLoadLinkConfigs,
    kLoadPolicies,
    kLoadSaeConstraints,
    kLoadSchedules,
    kLoadPinnedRoutes,
    kLoadSessions,
    kLoadRelays,
    kLoadLedger,
    kLoadAlarms,
    kNextAlarmId,
};

using ReadOnlySnapshot = pqxx::transaction<pqxx::repeatable_read, pqxx::read_only>;

// --- value conversion ------------------------------------------------------------------------

std::int64_t to_us(SysTime t) {
  return std::chrono::duration_cast<std::chrono::microseconds>(t.time_since_epoch()).count();
}

SysTime from_us(std::int64_t us) {
  return SysTime{std::chrono::duration_cast<SysTime::duration>(std::chrono::microseconds{us})};
}

std::optional<std::int64_t> to_us(const std::optional<SysTime>& t) {
  if (!t) return std::nullopt;
  return to_us(*t);
}

std::string as_text(const pqxx::field& f) {
  return f.is_null() ? std::string{} : std::string{f.c_str(), f.size()};
}

std::int64_t as_int64(const pqxx::field& f) { return f.is_null() ? 0 : f.as<std::int64_t>(); }

SysTime as_time(const pqxx::field& f) { return from_us(as_int64(f)); }

// --- pipelined writes (inside write_batch) --------------------------------------------------

template <class T>
struct IsOptional : std::false_type {};
template <class T>
struct IsOptional<std::optional<T>> : std::true_type {};

/// Appends v as a quoted literal (the text exec_prepared would send for it, so the prepared
/// statement's parameter type parses it the same way), or NULL.
template <class T>
void append_literal(std::string& out, const pqxx::transaction_base& tx, const T& v) {
  if constexpr (std::is_same_v<T, std::nullptr_t>) {
    out += "NULL";
  } else if constexpr (IsOptional<T>::value) {
    if (v) {
      append_literal(out, tx, *v);
    } else {
      out += "NULL";
    }
  } else if constexpr (std::is_convertible_v<const T&, std::string_view>) {
    out += tx.quote(std::string{std::string_view{v}});
  } else {
    out += tx.quote(v);
  }
}

/// Runs a prepared write now, or (pending != nullptr: inside a batch) appends it to the batch's
/// statement text as SQL EXECUTE, sent with the others in one round trip. Only for statements
/// whose result is not needed.
template <class... Args>
void exec_write(pqxx::transaction_base& tx, std::string* pending, const Statement& st,
                const Args&... args) {
  if (pending == nullptr) {
    tx.exec_prepared(st.name, args...);
    return;
  }
  std::string& out = *pending;
  out += "EXECUTE ";
  out += st.name;
  char sep = '(';
  ((out += sep, append_literal(out, tx, args), sep = ','), ...);
  out += ");\n";
}

/// A batch sends its pending statements at the latest when they reach this size.
constexpr std::size_t kPendingFlushBytes = std::size_t{1} << 20;

std::optional<SysTime> opt_time(const pqxx::field& f) {
  if (f.is_null()) return std::nullopt;
  return from_us(f.as<std::int64_t>());
}

/// Appends s to a PostgreSQL array literal as a quoted element.
void append_element(std::string& out, std::string_view s) {
  out += '"';
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  out += '"';
}

/// Text-array literal: {"a","b"}. Quoting every element keeps "NULL" and commas literal.
template <class Range, class Get>
std::string text_array(const Range& items, Get get) {
  std::string out = "{";
  bool first = true;
  for (const auto& item : items) {
    if (!first) out += ',';
    first = false;
    append_element(out, get(item));
  }
  out += '}';
  return out;
}

std::string text_array(const std::vector<std::string>& v) {
  return text_array(v, [](const std::string& s) -> std::string_view { return s; });
}

/// float8-array literal; to_string keeps full precision, and "nan"/"inf" reach the server,
/// which rejects them where a CHECK or jsonb forbids them.
template <class Range, class Get>
std::string float_array(const Range& items, Get get) {
  std::string out = "{";
  bool first = true;
  for (const auto& item : items) {
    if (!first) out += ',';
    first = false;
    out += pqxx::to_string(static_cast<double>(get(item)));
  }
  out += '}';
  return out;
}

/// float8-array literal with NULL for an empty optional.
template <class Range, class Get>
std::string opt_float_array(const Range& items, Get get) {
  std::string out = "{";
  bool first = true;
  for (const auto& item : items) {
    if (!first) out += ',';
    first = false;
    const std::optional<double> v = get(item);
    out += v ? pqxx::to_string(*v) : std::string{"NULL"};
  }
  out += '}';
  return out;
}

/// int8-array literal with NULL for an empty optional.
template <class Range, class Get>
std::string int_array(const Range& items, Get get) {
  std::string out = "{";
  bool first = true;
  for (const auto& item : items) {
    if (!first) out += ',';
    first = false;
    const std::optional<std::int64_t> v = get(item);
    out += v ? std::to_string(*v) : std::string{"NULL"};
  }
  out += '}';
  return out;
}

/// Parses a one-dimensional text[] field.
std::vector<std::string> parse_text_array(const pqxx::field& f) {
  std::vector<std::string> out;
  if (f.is_null()) return out;
  pqxx::array_parser parser = f.as_array();
  for (;;) {
    auto [kind, value] = parser.get_next();
    if (kind == pqxx::array_parser::juncture::done) break;
    if (kind == pqxx::array_parser::juncture::string_value) out.push_back(std::move(value));
    if (kind == pqxx::array_parser::juncture::null_value) out.emplace_back();
  }
  return out;
}

bool starts_with(const std::string& s, std::string_view prefix) {
  return s.compare(0, prefix.size(), prefix) == 0;
}

}  // namespace

std::string with_connect_timeout(const std::string& dsn) {
  if (dsn.find("connect_timeout") != std::string::npos) return dsn;
  if (dsn.find("://") != std::string::npos) {
    return dsn + (dsn.find('?') == std::string::npos ? "?" : "&") + "connect_timeout=5";
  }
  return dsn + " connect_timeout=5";
}

// The fence of a leader's writes (leader_lease.hpp): the lease row still names this controller
// and term and has not expired. FOR SHARE holds the row until the write commits, so a takeover
// (an UPDATE of the row) waits for it, and every write after the takeover finds no row.
constexpr const char* kFenceCheck = R"(
SELECT 1 FROM controller_leader
WHERE id = 1 AND holder = $1 AND epoch = $2 AND lease_expires > clock_timestamp()
FOR SHARE)";

void PgStore::check_fence(pqxx::transaction_base& tx) {
  if (!options_.fence) return;
  const std::int64_t epoch = options_.fence->epoch.load();
  if (epoch == 0) throw Conflict("store: fenced: this controller is not the leader");
  if (tx.exec_params(kFenceCheck, options_.fence->holder, epoch).empty()) {
    throw Conflict("store: fenced: term " + std::to_string(epoch) +
                   " is no longer the leader's (another controller took over)");
  }
}

struct PgStore::Conn {
  explicit Conn(const std::string& dsn) : c(dsn) {}
  pqxx::connection c;
  bool prepared = false;
  bool on_server = false;  ///< every statement is prepared on the server (not only registered)
};

PgStore::Conn& PgStore::connection(bool prepare) {
  if (conn_) {
    // A connection the server closed while we were idle (restart, idle timeout) shows up here,
    // before any statement is sent on it, so replacing it cannot lose or repeat a write.
    // Twice: the first read may only pick up the server's goodbye message (57P01), the
    // second then sees the end of the stream.
    try {
      conn_->c.get_notifs();
      conn_->c.get_notifs();
    } catch (const std::exception&) {
      conn_.reset();
    }
    if (conn_ && !conn_->c.is_open()) conn_.reset();
  }
  if (!conn_) {
    conn_ = std::make_unique<Conn>(options_.dsn);
    if (options_.fence && options_.fence_idle_timeout.count() > 0) {
      // A leader cut off from the database in the middle of a write transaction holds the lease
      // row FOR SHARE, which would keep the takeover waiting for as long as the partition lasts:
      // the server ends such a session once it has waited that long for us.
      pqxx::nontransaction tx{conn_->c};
      tx.exec("SET idle_in_transaction_session_timeout = " +
              std::to_string(options_.fence_idle_timeout.count()));
    }
  }
  if (prepare && !conn_->prepared) {
    for (const Statement& s : kStatements) conn_->c.prepare(s.name, s.sql);
    conn_->prepared = true;
  }
  return *conn_;
}

/// Maps the exception being handled to a qkdn::Error and throws it. Drops the connection when
/// it is (or may be) unusable, so that the next call opens a new one.
[[noreturn]] void PgStore::fail(const char* what) {
  const std::string prefix = std::string{"store: "} + what + ": ";
  try {
    throw;
  } catch (const Error&) {
    throw;
  } catch (const pqxx::broken_connection& e) {
    drop_connection();
    throw Unavailable(prefix + "database connection lost: " + e.what());
  } catch (const pqxx::in_doubt_error& e) {
    drop_connection();
    throw Unavailable(prefix + "commit in doubt: " + e.what());
  } catch (const pqxx::sql_error& e) {
    const std::string& state = e.sqlstate();
    std::string message = e.what();
    while (!message.empty() && (message.back() == '\n' || message.back() == ' ')) {
      message.pop_back();
    }
    if (live() && !conn_->c.is_open()) drop_connection();
    // 08 connection exception, 57P0x shutdown / cannot connect now, 53 out of resources,
    // 40 serialization failure / deadlock: nothing committed; a retry may succeed.
    if (starts_with(state, "08") || starts_with(state, "57P")) {
      drop_connection();
      throw Unavailable(prefix + message);
    }
    if (starts_with(state, "53") || starts_with(state, "40")) throw Unavailable(prefix + message);
    if (state == "23505" || starts_with(state, "QK")) throw Conflict(prefix + message);
    // 23xxx other integrity (FK, check, not-null), 22xxx bad data, 21000 a key twice in one
    // statement (e.g. duplicate IDs in one topology document).
    if (starts_with(state, "23") || starts_with(state, "22") || state == "21000") {
      throw InvalidArgument(prefix + message);
    }
    if (state.empty() && live() && !conn_->c.is_open()) drop_connection();
    if (!live() || state.empty()) throw Unavailable(prefix + message);
    throw Internal(prefix + "[" + state + "] " + message);
  } catch (const pqxx::failure& e) {
    const bool lost = !live() || !conn_->c.is_open();
    drop_connection();
    if (lost) throw Unavailable(prefix + "database connection lost: " + e.what());
    throw Internal(prefix + e.what());
  } catch (const std::exception& e) {
    throw Internal(prefix + e.what());
  }
}

template <class F>
auto PgStore::run(const char* what, F&& fn, bool prepare) {
  try {
    return fn(connection(prepare).c);
  } catch (...) {
    fail(what);
  }
}

void PgStore::drop_connection() {
  // Inside write_batch the batch's transaction still refers to the connection: it goes when
  // the batch ends.
  if (batch_ != nullptr) {
    drop_after_batch_ = true;
  } else {
    conn_.reset();
  }
}

bool PgStore::live() const { return conn_ != nullptr && !drop_after_batch_; }

void PgStore::batch_fail(const char* what) {
  try {
    fail(what);
  } catch (...) {
    if (batch_failure_ == nullptr) batch_failure_ = std::current_exception();
    throw;
  }
}

void PgStore::flush_pending(pqxx::transaction_base& tx) {
  if (pending_.empty()) return;
  const std::string text = std::exchange(pending_, {});
  tx.exec(text);
}

std::string* PgStore::pending() { return batch_ != nullptr ? &pending_ : nullptr; }

template <class F>
auto PgStore::write(const char* what, F&& fn, bool pipelined) {
  if (batch_ != nullptr) {
    // One write of a batch, on the batch's transaction and without a savepoint of its own (each
    // would cost two more round trips). A pipelined write only appends its statements (see
    // exec_write), sent with the others later; any other first sends what is pending, to keep
    // the order. A failed write aborts the transaction: the writes after it are refused and
    // write_batch throws the first failure (a pipelined one's surfaces when it is sent).
    if (batch_failure_ != nullptr) {
      throw Internal(std::string{"store: "} + what +
                     ": refused: an earlier write of the batch failed");
    }
    if (!pipelined) {
      try {
        flush_pending(*batch_);
      } catch (...) {
        batch_fail("batched writes");
      }
    }
    try {
      if constexpr (std::is_void_v<std::invoke_result_t<F&, pqxx::transaction_base&>>) {
        fn(*batch_);
        if (pending_.size() >= kPendingFlushBytes) flush_pending(*batch_);
        return;
      } else {
        return fn(*batch_);
      }
    } catch (...) {
      batch_fail(what);
    }
  }
  return run(what, [&](pqxx::connection& c) {
    pqxx::work tx{c};
    check_fence(tx);
    using R = std::invoke_result_t<F&, pqxx::transaction_base&>;
    if constexpr (std::is_void_v<R>) {
      fn(tx);
      tx.commit();
    } else {
      R r = fn(tx);
      tx.commit();
      return r;
    }
  });
}

bool PgStore::write_batch(const std::function<void(controller::Store&)>& body) {
  if (batch_ != nullptr) throw Internal("store: write_batch: batches do not nest");
  drop_after_batch_ = false;
  batch_failure_ = nullptr;
  pending_.clear();
  std::exception_ptr failure;
  try {
    auto& conn = connection(true);
    auto& c = conn.c;
    if (!conn.on_server) {
      // libpqxx 6.4 prepares a statement on its first exec_prepared; pipelined writes name
      // theirs in SQL EXECUTE, so they must exist on the server first. (Not in connection():
      // a store may connect before the schema they refer to exists.)
      for (const Statement& st : kStatements) c.prepare_now(st.name);
      conn.on_server = true;
    }
    pqxx::work tx{c};
    check_fence(tx);
    batch_ = &tx;
    body(*this);
    failure = std::exchange(batch_failure_, nullptr);
    if (failure == nullptr) flush_pending(tx);  // else body swallowed a failed write
    batch_ = nullptr;
    if (failure == nullptr) tx.commit();
  } catch (...) {
    // The batch's transaction is gone (unwound) by now: the connection may be dropped.
    batch_ = nullptr;
    batch_failure_ = nullptr;
    pending_.clear();
    if (drop_after_batch_) conn_.reset();
    drop_after_batch_ = false;
    fail("write_batch");
  }
  if (drop_after_batch_) conn_.reset();
  drop_after_batch_ = false;
  if (failure != nullptr) std::rethrow_exception(failure);
  return true;
}

PgStore::PgStore(PgStoreOptions options) : options_(std::move(options)) {
  options_.dsn = with_connect_timeout(options_.dsn);
  if (options_.migrate) {
    migrate();
  } else {
    run("connect", [](pqxx::connection&) { return 0; });
  }
}

PgStore::~PgStore() = default;

// --- migrations ----------------------------------------------------------------------------

int PgStore::migrate() {
  return run(
      "migrate",
      [&](pqxx::connection& c) {
        const std::vector<Migration>& all = embedded_migrations();
        pqxx::work tx{c};
        tx.exec(kLockMigrations);
        tx.exec(kCreateSchemaVersion);
        std::unordered_set<int> applied;
        int newest = 0;
        for (const auto& row : tx.exec(kSelectSchemaVersions)) {
          const int v = row[0].as<int>();
          applied.insert(v);
          newest = std::max(newest, v);
        }
        const int known = all.empty() ? 0 : all.back().version;
        if (newest > known) {
          throw Internal("store: database schema version " + std::to_string(newest) +
                         " is newer than this binary knows (" + std::to_string(known) + ")");
        }
        int count = 0;
        for (const Migration& m : all) {
          if (applied.count(m.version) != 0) continue;
          tx.exec(m.sql);
          tx.exec("INSERT INTO schema_version (version, name) VALUES (" +
                  std::to_string(m.version) + ", " + tx.quote(m.name) + ")");
          ++count;
        }
        tx.commit();
        return count;
      },
      false);
}

std::vector<int> PgStore::schema_versions() {
  return run(
      "schema_versions",
      [&](pqxx::connection& c) {
        pqxx::read_transaction tx{c};
        std::vector<int> out;
        if (!tx.exec1(kSchemaVersionTableExists)[0].as<bool>()) return out;
        for (const auto& row : tx.exec(kSelectSchemaVersions)) out.push_back(row[0].as<int>());
        return out;
      },
      false);
}

// --- load ------------------------------------------------------------------------------------

StoredState PgStore::load() {
  return run("load", [&](pqxx::connection& c) {
    // One snapshot: everything reloaded is mutually consistent.
    ReadOnlySnapshot tx{c};
    StoredState st;
    const auto limit = static_cast<std::int64_t>(
        std::min<std::size_t>(options_.history_limit, std::numeric_limits<std::int32_t>::max()));

    const pqxx::result name = tx.exec_prepared(kLoadTopologyName.name);
    if (!name.empty()) {
      TopologyDoc doc;
      doc.name = as_text(name[0][0]);
      doc.qkdn_id = as_text(name[0][1]);
      const pqxx::result kms = tx.exec_prepared(kLoadKms.name);
      doc.kms.reserve(kms.size());
      for (const auto& r : kms) {
        controller::KmSpec k{as_text(r[0]), as_text(r[1])};
        if (!r[2].is_null() && !r[3].is_null()) {
          k.lat = r[2].as<double>();
          k.lon = r[3].as<double>();
        }
        if (!r[4].is_null()) k.trust_level = r[4].as<int>();
        k.tags = parse_text_array(r[5]);
        k.gateway = r[6].as<bool>();
        doc.kms.push_back(std::move(k));
      }
      const pqxx::result links = tx.exec_prepared(kLoadLinks.name);
      doc.links.reserve(links.size());
      for (const auto& r : links) {
        doc.links.push_back({as_text(r[0]), as_text(r[1]), as_text(r[2]), r[3].as<double>(),
                             r[4].as<double>(), r[5].as<double>(), r[6].as<double>()});
      }
      const pqxx::result apps = tx.exec_prepared(kLoadApplications.name);
      doc.applications.reserve(apps.size());
      for (const auto& r : apps) doc.applications.push_back({as_text(r[0]), as_text(r[1])});
      for (const auto& r : tx.exec_prepared(kLoadPeers.name)) {
        controller::PeerSpec p{as_text(r[0]), as_text(r[1]), as_text(r[2])};
        p.policy.reachable_saes = parse_text_array(r[3]);
        p.policy.key_rate_share = r[4].as<double>();
        doc.peers.push_back(std::move(p));
      }
      for (const auto& r : tx.exec_prepared(kLoadInterQkdnLinks.name)) {
        doc.inter_qkdn_links.push_back(
            {as_text(r[0]), as_text(r[1]), as_text(r[2]), as_text(r[3]), r[4].as<double>()});
      }
      st.topology = std::move(doc);
    }

    if (const pqxx::result t = tx.exec_prepared(kLoadThresholds.name); !t.empty()) {
      controller::Thresholds th;
      th.qber = t[0][0].as<double>();
      th.pool_floor_bits = t[0][1].as<std::uint64_t>();
      th.qber_hysteresis = t[0][2].as<double>();
      st.thresholds = th;
    }

    for (const auto& r : tx.exec_prepared(kLoadLinkConfigs.name)) {
      LinkConfigRecord rec;
      rec.link_id = as_text(r[0]);
      rec.admin_state = as_text(r[1]);
      if (!r[2].is_null()) rec.qber_threshold = r[2].as<double>();
      if (!r[3].is_null()) rec.pool_floor_bits = r[3].as<std::uint64_t>();
      st.link_configs.push_back(std::move(rec));
    }

    for (const auto& r : tx.exec_prepared(kLoadPolicies.name)) {
      const std::string src = as_text(r[0]);
      const std::string dst = as_text(r[1]);
      if (st.policies.empty() || st.policies.back().src_km != src ||
          st.policies.back().dst_km != dst) {
        st.policies.push_back({src, dst, as_text(r[2]), {}, parse_text_array(r[5])});
      }
      if (!r[3].is_null()) st.policies.back().params[as_text(r[3])] = r[4].as<double>();
    }

    for (const auto& r : tx.exec_prepared(kLoadSaeConstraints.name)) {
      SaeConstraintRecord rec;
      rec.src_sae = as_text(r[0]);
      rec.dst_sae = as_text(r[1]);
      if (!r[2].is_null()) rec.max_intermediates = as_int64(r[2]);
      rec.min_trust_level = as_int64(r[3]);
      rec.avoid_tags = parse_text_array(r[4]);
      rec.updated_at = as_time(r[5]);
      st.sae_constraints.push_back(std::move(rec));
    }

    for (const auto& r : tx.exec_prepared(kLoadSchedules.name)) {
      ScheduleRecord rec;
      rec.schedule_id = as_text(r[0]);
      rec.src_km = as_text(r[1]);
      rec.dst_km = as_text(r[2]);
      rec.number_of_keys = as_int64(r[3]);
      rec.key_size_bits = as_int64(r[4]);
      rec.not_before = as_time(r[5]);
      rec.not_after = as_time(r[6]);
      rec.created_at = as_time(r[7]);
      st.schedules.push_back(std::move(rec));
    }

    for (const auto& r : tx.exec_prepared(kLoadPinnedRoutes.name)) {
      PinnedRouteRecord rec;
      rec.src_km = as_text(r[0]);
      rec.dst_km = as_text(r[1]);
      rec.kms = parse_text_array(r[2]);
      rec.links = parse_text_array(r[3]);
      rec.created_at = as_time(r[4]);
      st.pinned_routes.push_back(std::move(rec));
    }

    for (const auto& r : tx.exec_prepared(kLoadSessions.name, limit)) {
      SessionRecord rec;
      rec.session_id = as_text(r[0]);
      rec.src_sae = as_text(r[1]);
      rec.dst_sae = as_text(r[2]);
      rec.src_km = as_text(r[3]);
      rec.dst_km = as_text(r[4]);
      rec.keys_requested = as_int64(r[5]);
      rec.keys_delivered = as_int64(r[6]);
      rec.state = as_text(r[7]);
      rec.created_at = as_time(r[8]);
      rec.updated_at = as_time(r[9]);
      rec.expires_at = opt_time(r[10]);
      st.sessions.push_back(std::move(rec));
    }

    for (const auto& r : tx.exec_prepared(kLoadRelays.name, limit)) {
      RelayRecord rec;
      rec.relay_id = as_text(r[0]);
      rec.session_id = as_text(r[1]);
      rec.src_km = as_text(r[2]);
      rec.dst_km = as_text(r[3]);
      rec.route_kms = parse_text_array(r[4]);
      rec.route_links = parse_text_array(r[5]);
      rec.number_of_keys = as_int64(r[6]);
      rec.key_size_bits = as_int64(r[7]);
      rec.state = as_text(r[8]);
      rec.reason = as_text(r[9]);
      rec.created_at = as_time(r[10]);
      rec.updated_at = as_time(r[11]);
      st.relays.push_back(std::move(rec));
    }

    const pqxx::result ledger = tx.exec_prepared(kLoadLedger.name);
    st.ledger.reserve(ledger.size());
    for (const auto& r : ledger) {
      LedgerEntry& e = st.ledger.emplace_back();
      e.key_id = as_text(r[0]);
      e.link_id = as_text(r[1]);
      e.km_id = as_text(r[2]);
      e.peer_km_id = as_text(r[3]);
      e.relay_id = as_text(r[4]);
      e.state = as_text(r[5]);
      e.lease_expires_at = opt_time(r[6]);
      e.updated_at = as_time(r[7]);
      e.ever_allocated = r[8].as<bool>();
    }

    for (const auto& r : tx.exec_prepared(kLoadAlarms.name, limit)) {
      Alarm a;
      a.id = r[0].as<std::uint64_t>();
      a.type = as_text(r[1]);
      a.resource = as_text(r[2]);
      a.km_id = as_text(r[3]);
      a.link_id = as_text(r[4]);
      a.severity = controller::parse_severity(as_text(r[5]));
      a.state = as_text(r[6]) == "cleared" ? controller::AlarmState::kCleared
                                           : controller::AlarmState::kActive;
      a.acknowledged = r[7].as<bool>();
      a.acknowledged_by = as_text(r[8]);
      a.acknowledged_at = as_time(r[9]);
      a.raised_at = as_time(r[10]);
      a.updated_at = as_time(r[11]);
      a.cleared_at = opt_time(r[12]);
      a.last_value = r[13].as<double>();
      a.text = as_text(r[14]);
      a.count = r[15].as<std::uint64_t>();
      st.alarms.push_back(std::move(a));
    }
    st.next_alarm_id = tx.exec_prepared1(kNextAlarmId.name)[0].as<std::uint64_t>();
    tx.commit();
    return st;
  });
}

bool PgStore::healthy() {
  try {
    return run("healthy", [](pqxx::connection& c) {
      pqxx::nontransaction tx{c};
      return tx.exec1("SELECT 1")[0].as<int>() == 1;
    });
  } catch (const Error&) {
    return false;
  }
}

std::int64_t PgStore::next_controller_epoch() {
  return run(
      "next_controller_epoch",
      [](pqxx::connection& c) {
        pqxx::nontransaction tx{c};
        return tx.exec1("SELECT nextval('controller_epoch_seq')")[0].as<std::int64_t>();
      },
      false);
}

// --- topology --------------------------------------------------------------------------------

void PgStore::save_topology(const TopologyDoc& doc) {
  write("save_topology", [&](pqxx::transaction_base& tx) {
    const auto km_ids =
        text_array(doc.kms, [](const auto& k) -> std::string_view { return k.km_id; });
    const auto link_ids =
        text_array(doc.links, [](const auto& l) -> std::string_view { return l.link_id; });
    const auto sae_ids =
        text_array(doc.applications, [](const auto& a) -> std::string_view { return a.sae_id; });
    tx.exec_prepared(kUpsertTopologyName.name, doc.name, doc.qkdn_id);
    // Upsert first, then delete what the document no longer has: rows that stay keep their
    // link configs (which cascade only when their link goes).
    tx.exec_prepared(kUpsertKms.name, km_ids,
                     text_array(doc.kms, [](const auto& k) -> std::string_view { return k.site; }),
                     opt_float_array(doc.kms, [](const auto& k) { return k.lat; }),
                     opt_float_array(doc.kms, [](const auto& k) { return k.lon; }),
                     int_array(doc.kms,
                               [](const auto& k) -> std::optional<std::int64_t> {
                                 if (!k.trust_level) return std::nullopt;
                                 return *k.trust_level;
                               }),
                     // Each KM's tags as one text[] literal, cast per row by the statement.
                     text_array(doc.kms, [](const auto& k) { return text_array(k.tags); }));
    tx.exec_prepared(kUpsertLinks.name, link_ids,
                     text_array(doc.links, [](const auto& l) -> std::string_view { return l.a; }),
                     text_array(doc.links, [](const auto& l) -> std::string_view { return l.b; }),
                     float_array(doc.links, [](const auto& l) { return l.key_rate_bps; }),
                     float_array(doc.links, [](const auto& l) { return l.distance_km; }),
                     float_array(doc.links, [](const auto& l) { return l.qber; }),
                     float_array(doc.links, [](const auto& l) { return l.weight; }));
    tx.exec_prepared(
        kUpsertApplications.name, sae_ids,
        text_array(doc.applications, [](const auto& a) -> std::string_view { return a.km_id; }));
    // Inter-QKDN links reference KMs and peers: replaced before KMs go.
    tx.exec_prepared(kDeleteInterQkdnLinks.name);
    tx.exec_prepared(kDeletePeers.name);
    tx.exec_prepared(kDeleteOtherApplications.name, sae_ids);
    tx.exec_prepared(kDeleteOtherLinks.name, link_ids);
    tx.exec_prepared(kDeleteOtherKms.name, km_ids);
    std::vector<std::string> gateways;
    for (const auto& k : doc.kms) {
      if (k.gateway) gateways.push_back(k.km_id);
    }
    tx.exec_prepared(kSetGateways.name, text_array(gateways));
    const auto& peers = doc.peers;
    tx.exec_prepared(
        kInsertPeers.name,
        text_array(peers, [](const auto& p) -> std::string_view { return p.qkdn_id; }),
        text_array(peers, [](const auto& p) -> std::string_view { return p.endpoint; }),
        text_array(peers, [](const auto& p) -> std::string_view { return p.identity; }),
        text_array(peers, [](const auto& p) { return text_array(p.policy.reachable_saes); }),
        float_array(peers, [](const auto& p) { return p.policy.key_rate_share; }));
    const auto& inter = doc.inter_qkdn_links;
    tx.exec_prepared(
        kInsertInterQkdnLinks.name,
        text_array(inter, [](const auto& l) -> std::string_view { return l.link_id; }),
        text_array(inter, [](const auto& l) -> std::string_view { return l.km_id; }),
        text_array(inter, [](const auto& l) -> std::string_view { return l.peer_qkdn_id; }),
        text_array(inter, [](const auto& l) -> std::string_view { return l.peer_km_id; }),
        float_array(inter, [](const auto& l) { return l.key_rate_bps; }));
  });
}

void PgStore::save_link_config(const LinkConfigRecord& rec) {
  write("save_link_config", [&](pqxx::transaction_base& tx) {
    std::optional<std::int64_t> floor;
    if (rec.pool_floor_bits) {
      if (*rec.pool_floor_bits >
          static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
        throw InvalidArgument("store: save_link_config: pool_floor_bits out of range");
      }
      floor = static_cast<std::int64_t>(*rec.pool_floor_bits);
    }
    tx.exec_prepared(kUpsertLinkConfig.name, rec.link_id, rec.admin_state, rec.qber_threshold,
                     floor);
  });
}

void PgStore::delete_link_config(const std::string& link_id) {
  write("delete_link_config",
        [&](pqxx::transaction_base& tx) { tx.exec_prepared(kDeleteLinkConfig.name, link_id); });
}

void PgStore::save_thresholds(const controller::Thresholds& t) {
  write("save_thresholds", [&](pqxx::transaction_base& tx) {
    if (t.pool_floor_bits > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
      throw InvalidArgument("store: save_thresholds: pool_floor_bits out of range");
    }
    tx.exec_prepared(kUpsertThresholds.name, t.qber, static_cast<std::int64_t>(t.pool_floor_bits),
                     t.qber_hysteresis);
  });
}

// --- policies, schedules, pinned routes ------------------------------------------------------

void PgStore::save_policy(const PolicyRecord& rec) {
  write("save_policy", [&](pqxx::transaction_base& tx) {
    tx.exec_prepared(
        kUpsertPolicy.name, rec.src_km, rec.dst_km, rec.mode,
        text_array(rec.params, [](const auto& kv) -> std::string_view { return kv.first; }),
        float_array(rec.params, [](const auto& kv) { return kv.second; }),
        text_array(rec.avoid_tags));
  });
}

void PgStore::save_sae_constraints(const SaeConstraintRecord& rec) {
  write("save_sae_constraints", [&](pqxx::transaction_base& tx) {
    tx.exec_prepared(kUpsertSaeConstraints.name, rec.src_sae, rec.dst_sae, rec.max_intermediates,
                     rec.min_trust_level, text_array(rec.avoid_tags), to_us(rec.updated_at));
  });
}

void PgStore::delete_sae_constraints(const std::string& src_sae, const std::string& dst_sae) {
  write("delete_sae_constraints", [&](pqxx::transaction_base& tx) {
    tx.exec_prepared(kDeleteSaeConstraints.name, src_sae, dst_sae);
  });
}

void PgStore::delete_policy(const std::string& src_km, const std::string& dst_km) {
  write("delete_policy",
        [&](pqxx::transaction_base& tx) { tx.exec_prepared(kDeletePolicy.name, src_km, dst_km); });
}

void PgStore::save_schedule(const ScheduleRecord& rec) {
  write("save_schedule", [&](pqxx::transaction_base& tx) {
    tx.exec_prepared(kUpsertSchedule.name, rec.schedule_id, rec.src_km, rec.dst_km,
                     rec.number_of_keys, rec.key_size_bits, to_us(rec.not_before),
                     to_us(rec.not_after), to_us(rec.created_at));
  });
}

void PgStore::delete_schedule(const std::string& schedule_id) {
  write("delete_schedule",
        [&](pqxx::transaction_base& tx) { tx.exec_prepared(kDeleteSchedule.name, schedule_id); });
}

void PgStore::save_pinned_route(const PinnedRouteRecord& rec) {
  write("save_pinned_route", [&](pqxx::transaction_base& tx) {
    tx.exec_prepared(kUpsertPinnedRoute.name, rec.src_km, rec.dst_km, text_array(rec.kms),
                     text_array(rec.links), to_us(rec.created_at));
  });
}

void PgStore::delete_pinned_route(const std::string& src_km, const std::string& dst_km) {
  write("delete_pinned_route", [&](pqxx::transaction_base& tx) {
    tx.exec_prepared(kDeletePinnedRoute.name, src_km, dst_km);
  });
}

// --- sessions, relays ------------------------------------------------------------------------

void PgStore::save_session(const SessionRecord& rec) {
  const auto upsert = [&](pqxx::transaction_base& tx) {
    exec_write(tx, pending(), kUpsertSession, rec.session_id, rec.src_sae, rec.dst_sae, rec.src_km,
               rec.dst_km, rec.keys_requested, rec.keys_delivered, rec.state, to_us(rec.created_at),
               to_us(rec.updated_at), to_us(rec.expires_at));
  };
  write("save_session", upsert, true);
}

void PgStore::save_relay(const RelayRecord& rec) {
  const auto upsert = [&](pqxx::transaction_base& tx) {
    exec_write(tx, pending(), kUpsertRelay, rec.relay_id, rec.session_id, rec.src_km, rec.dst_km,
               text_array(rec.route_kms), text_array(rec.route_links), rec.number_of_keys,
               rec.key_size_bits, rec.state, rec.reason, to_us(rec.created_at),
               to_us(rec.updated_at));
  };
  write("save_relay", upsert, true);
}

// --- ledger ----------------------------------------------------------------------------------

void PgStore::apply_ledger(const std::string& idempotency_key,
                           const std::vector<LedgerEntry>& entries) {
  if (idempotency_key.empty()) {
    throw InvalidArgument("store: apply_ledger: empty idempotency key");
  }
  if (entries.size() > static_cast<std::size_t>(std::numeric_limits<std::int32_t>::max())) {
    throw InvalidArgument("store: apply_ledger: batch too large");
  }
  // Runs of distinct key IDs: ON CONFLICT cannot touch a row twice in one statement, and a
  // batch may legitimately move one key twice (reserve, then allocate).
  std::vector<std::pair<std::size_t, std::size_t>> runs;
  for (std::size_t begin = 0; begin < entries.size();) {
    std::unordered_set<std::string_view> seen;
    std::size_t end = begin;
    while (end < entries.size() && seen.insert(entries[end].key_id).second) ++end;
    runs.emplace_back(begin, end);
    begin = end;
  }
  // The statement's eight array parameters for one run, then its own.
  const auto with_arrays = [&](std::pair<std::size_t, std::size_t> run, auto&& call) {
    // Plain names, not a structured binding: clang 14 (clang-tidy) cannot capture those.
    const std::size_t begin = run.first;
    const std::size_t end = run.second;
    const auto run_of = [&](auto get) {
      std::string out = "{";
      for (std::size_t i = begin; i < end; ++i) {
        if (i != begin) out += ',';
        append_element(out, get(entries[i]));
      }
      out += '}';
      return out;
    };
    std::string leases = "{";
    std::string updated = "{";
    for (std::size_t i = begin; i < end; ++i) {
      if (i != begin) {
        leases += ',';
        updated += ',';
      }
      const auto& lease = entries[i].lease_expires_at;
      leases += lease ? std::to_string(to_us(*lease)) : std::string{"NULL"};
      updated += std::to_string(to_us(entries[i].updated_at));
    }
    leases += '}';
    updated += '}';
    call(run_of([](const LedgerEntry& e) -> std::string_view { return e.key_id; }),
         run_of([](const LedgerEntry& e) -> std::string_view { return e.link_id; }),
         run_of([](const LedgerEntry& e) -> std::string_view { return e.km_id; }),
         run_of([](const LedgerEntry& e) -> std::string_view { return e.peer_km_id; }),
         run_of([](const LedgerEntry& e) -> std::string_view { return e.relay_id; }),
         run_of([](const LedgerEntry& e) -> std::string_view { return e.state; }), leases, updated);
  };
  const auto n = static_cast<std::int32_t>(entries.size());
  const auto apply = [&](pqxx::transaction_base& tx) {
    if (runs.size() <= 1) {
      // One statement claims the key and writes the rows (if it claimed it).
      const auto run = runs.empty() ? std::pair<std::size_t, std::size_t>{0, 0} : runs.front();
      with_arrays(run, [&](const auto&... arrays) {
        exec_write(tx, pending(), kClaimAndUpsertLedger, arrays..., idempotency_key, n);
      });
      return;
    }
    // Several statements that depend on the claim's answer: nothing may stay pending.
    flush_pending(tx);
    // Concurrent appliers of one key serialise on its primary key: the second waits for the
    // first to commit, then sees the row and does nothing.
    if (tx.exec_prepared(kClaimLedgerBatch.name, idempotency_key, n).empty()) return;
    for (const auto& run : runs) {
      with_arrays(run,
                  [&](const auto&... arrays) { tx.exec_prepared(kUpsertLedger.name, arrays...); });
    }
  };
  write("apply_ledger", apply, true);
}

bool PgStore::ledger_batch_committed(const std::string& idempotency_key) {
  return run("ledger_batch_committed", [&](pqxx::connection& c) {
    pqxx::read_transaction tx{c};
    return !tx.exec_prepared(kLedgerBatchCommitted.name, idempotency_key).empty();
  });
}

// --- alarms, accounting, audit ----------------------------------------------------------------

void PgStore::save_alarm(const Alarm& a) {
  if (a.id > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()) ||
      a.count > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
    throw InvalidArgument("store: save_alarm: id or count out of range");
  }
  // acknowledged_at is NULL unless acknowledged: passed as nullptr, not as an empty
  // std::optional (GCC 12 then warns maybe-uninitialized inside libpqxx's parameter packing).
  const auto upsert = [&](pqxx::transaction_base& tx, auto acked_at) {
    exec_write(tx, pending(), kUpsertAlarm, static_cast<std::int64_t>(a.id), a.type, a.resource,
               a.km_id, a.link_id, std::string{controller::to_string(a.severity)},
               std::string{controller::to_string(a.state)}, a.acknowledged, a.acknowledged_by,
               acked_at, to_us(a.raised_at), to_us(a.updated_at), to_us(a.cleared_at), a.last_value,
               a.text, static_cast<std::int64_t>(a.count));
  };
  const auto save = [&](pqxx::transaction_base& tx) {
    if (a.acknowledged) {
      upsert(tx, to_us(a.acknowledged_at));
    } else {
      upsert(tx, nullptr);
    }
  };
  write("save_alarm", save, true);
}

void PgStore::add_accounting(const AccountingRecord& rec) {
  const auto add = [&](pqxx::transaction_base& tx) {
    exec_write(tx, pending(), kAddAccounting, to_us(rec.bucket_start), rec.sae_id, rec.session_id,
               rec.key_bytes, rec.keys);
  };
  write("add_accounting", add, true);
}

std::vector<AccountingRecord> PgStore::accounting(SysTime from, SysTime to,
                                                  const std::string& sae_id) {
  return run("accounting", [&](pqxx::connection& c) {
    pqxx::read_transaction tx{c};
    std::vector<AccountingRecord> out;
    for (const auto& r : tx.exec_prepared(kSelectAccounting.name, to_us(from), to_us(to), sae_id)) {
      out.push_back({as_time(r[0]), as_text(r[1]), as_text(r[2]), as_int64(r[3]), as_int64(r[4])});
    }
    return out;
  });
}

std::int64_t PgStore::append_audit(const AuditRecord& rec) {
  return write("append_audit", [&](pqxx::transaction_base& tx) {
    const std::int64_t id =
        tx.exec_prepared1(kAppendAudit.name, to_us(rec.at), rec.actor, rec.action, rec.resource,
                          rec.outcome, rec.detail, rec.remote)[0]
            .as<std::int64_t>();
    return id;
  });
}

std::vector<AuditRecord> PgStore::audit(std::int64_t after_id, std::size_t limit) {
  return run("audit", [&](pqxx::connection& c) {
    pqxx::read_transaction tx{c};
    std::vector<AuditRecord> out;
    const auto lim = static_cast<std::int64_t>(std::min<std::size_t>(
        limit, static_cast<std::size_t>(std::numeric_limits<std::int64_t>::max())));
    for (const auto& r : tx.exec_prepared(kSelectAudit.name, after_id, lim)) {
      AuditRecord rec;
      rec.id = as_int64(r[0]);
      rec.at = as_time(r[1]);
      rec.actor = as_text(r[2]);
      rec.action = as_text(r[3]);
      rec.resource = as_text(r[4]);
      rec.outcome = as_text(r[5]);
      rec.detail = as_text(r[6]);
      rec.remote = as_text(r[7]);
      out.push_back(std::move(rec));
    }
    return out;
  });
}

std::string redact_dsn(const std::string& dsn) {
  std::string out = dsn;
  if (const auto scheme = out.find("://"); scheme != std::string::npos) {
    const auto at = out.find('@', scheme + 3);
    const auto colon = out.find(':', scheme + 3);
    if (at != std::string::npos && colon != std::string::npos && colon < at) {
      out.replace(colon + 1, at - colon - 1, "***");
    }
    return out;
  }
  if (auto p = out.find("password="); p != std::string::npos) {
    auto end = out.find(' ', p);
    out.replace(p + 9, (end == std::string::npos ? out.size() : end) - p - 9, "***");
  }
  return out;
}

controller::StoreFactory pg_store_factory(std::string dsn) {
  return pg_store_factory(std::move(dsn), nullptr);
}

controller::StoreFactory pg_store_factory(std::string dsn, std::shared_ptr<const Fence> fence) {
  controller::StoreFactory f;
  f.description = "PostgreSQL at " + redact_dsn(dsn) + (fence ? " (fenced)" : "");
  f.open = [dsn = std::move(dsn), fence = std::move(fence)](
               controller::StoreRole role) -> std::unique_ptr<controller::Store> {
    PgStoreOptions o;
    o.dsn = dsn;
    o.migrate = role == controller::StoreRole::kStartup;
    o.fence = fence;
    return std::make_unique<PgStore>(o);
  };
  return f;
}

}  // namespace qkdn::db
