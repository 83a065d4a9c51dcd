#include "qkdn/db/leader_lease.hpp"

#include <algorithm>

#include <pqxx/pqxx>

#include "qkdn/controller/error.hpp"
#include "qkdn/db/pg_store.hpp"

namespace qkdn::db {
namespace {

// One statement, so that two controllers racing for an expired lease cannot both win: the row
// lock of the UPDATE serialises them and the second sees the first's fresh lease. A term starts
// (nextval) when the row is not ours or our own lease has lapsed (writes in between were fenced).
constexpr const char* kAcquire = R"(
UPDATE controller_leader SET
  epoch = CASE WHEN holder = $1 AND lease_expires > clock_timestamp() THEN epoch
               ELSE nextval('controller_epoch_seq') END,
  holder = $1,
  lease_expires = clock_timestamp() + $2 * interval '1 millisecond',
  renewed_at = clock_timestamp(),
  ck_address = $3,
  api_address = $4
WHERE id = 1 AND (holder IS NULL OR holder = $1 OR lease_expires <= clock_timestamp())
RETURNING epoch)";

constexpr const char* kRelease = R"(
UPDATE controller_leader SET lease_expires = '-infinity'
WHERE id = 1 AND holder = $1 AND epoch = $2)";

constexpr const char* kLeader = R"(
SELECT coalesce(holder, ''), epoch, lease_expires > clock_timestamp(),
       CASE WHEN lease_expires = '-infinity' THEN -1
            ELSE floor(extract(epoch FROM lease_expires - clock_timestamp()) * 1000)::bigint END,
       ck_address, api_address
FROM controller_leader WHERE id = 1)";

}  // namespace

struct LeaderLease::Conn {
  Conn(const std::string& dsn, std::chrono::milliseconds lease) : c(dsn) {
    // A renewal never waits long for the row (a partitioned leader's write holding it FOR
    // SHARE): it fails and is tried again with fresh times. The server ends this session when we
    // stall inside a transaction, so that our row lock cannot hold up a takeover either.
    const auto bound = std::max<std::int64_t>(100, lease.count() / 3);
    pqxx::nontransaction tx{c};
    tx.exec("SET lock_timeout = " + std::to_string(bound));
    tx.exec("SET idle_in_transaction_session_timeout = " + std::to_string(bound));
  }
  pqxx::connection c;
};

LeaderLease::LeaderLease(LeaseOptions options) : options_(std::move(options)) {
  if (options_.holder.empty()) throw InvalidArgument("leader lease: empty holder");
  if (options_.lease < std::chrono::milliseconds{100}) {
    throw InvalidArgument("leader lease: a lease of at least 100 ms");
  }
  options_.dsn = with_connect_timeout(options_.dsn);
}

LeaderLease::~LeaderLease() = default;

template <class F>
auto LeaderLease::run(const char* what, F&& fn) {
  try {
    if (!conn_ || !conn_->c.is_open()) conn_ = std::make_unique<Conn>(options_.dsn, options_.lease);
    return fn(conn_->c);
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    conn_.reset();  // a new connection next time
    throw Unavailable(std::string("leader lease: ") + what + ": " + e.what());
  }
}

std::optional<std::int64_t> LeaderLease::acquire_or_renew() {
  return run("acquire", [&](pqxx::connection& c) -> std::optional<std::int64_t> {
    pqxx::work tx{c};
    const pqxx::result r =
        tx.exec_params(kAcquire, options_.holder, static_cast<std::int64_t>(options_.lease.count()),
                       options_.ck_address, options_.api_address);
    tx.commit();
    if (r.empty()) return std::nullopt;
    return r[0][0].as<std::int64_t>();
  });
}

bool LeaderLease::release(std::int64_t epoch) {
  return run("release", [&](pqxx::connection& c) {
    pqxx::work tx{c};
    const pqxx::result r = tx.exec_params(kRelease, options_.holder, epoch);
    tx.commit();
    return r.affected_rows() == 1;
  });
}

LeaderInfo LeaderLease::leader() {
  return run("leader", [&](pqxx::connection& c) {
    pqxx::read_transaction tx{c};
    const pqxx::result r = tx.exec(kLeader);
    LeaderInfo info;
    if (r.empty()) throw Internal("leader lease: no controller_leader row (migration 0008)");
    info.holder = r[0][0].as<std::string>();
    info.epoch = r[0][1].as<std::int64_t>();
    info.live = r[0][2].as<bool>();
    info.expires_in_ms = r[0][3].as<std::int64_t>();
    info.ck_address = r[0][4].as<std::string>();
    info.api_address = r[0][5].as<std::string>();
    return info;
  });
}

}  // namespace qkdn::db
