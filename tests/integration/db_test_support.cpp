#include "db_test_support.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <pqxx/pqxx>
#include <stdexcept>

namespace qkdn::db::test {
namespace {

struct ServerState {
  std::string base_dsn;
  std::string dir;  // empty when QKDN_TEST_PG_DSN names an external server
  int databases = 0;
};

ServerState& state() {
  static ServerState s;
  return s;
}

/// Runs a shell command and returns its standard output; throws when it fails.
std::string run_command(const std::string& command) {
  std::string out;
  FILE* pipe = ::popen(command.c_str(), "r");
  if (pipe == nullptr) throw std::runtime_error("popen failed: " + command);
  char buf[512];
  while (std::fgets(buf, sizeof buf, pipe) != nullptr) out += buf;
  const int rc = ::pclose(pipe);
  if (rc != 0) throw std::runtime_error("command failed (" + std::to_string(rc) + "): " + command);
  while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
  return out;
}

std::string script() { return QKDN_PG_PRIVATE_SCRIPT; }

/// The DSN of database `db` on the server of `dsn` (URI or key=value form).
std::string with_database(const std::string& dsn, const std::string& db) {
  const auto scheme = dsn.find("://");
  if (scheme == std::string::npos) return dsn + " dbname=" + db;
  const auto query = dsn.find('?', scheme);
  const auto slash = dsn.find('/', scheme + 3);
  const std::string tail = query == std::string::npos ? "" : dsn.substr(query);
  const auto host_end = slash != std::string::npos && (query == std::string::npos || slash < query)
                            ? slash
                            : (query == std::string::npos ? dsn.size() : query);
  return dsn.substr(0, host_end) + "/" + db + tail;
}

class PgEnvironment final : public ::testing::Environment {
 public:
  void SetUp() override {
    if (const char* dsn = std::getenv("QKDN_TEST_PG_DSN"); dsn != nullptr && *dsn != '\0') {
      state().base_dsn = dsn;
      return;
    }
    char tmpl[] = "/tmp/qkdn-integration-db-XXXXXX";
    if (::mkdtemp(tmpl) == nullptr) throw std::runtime_error("mkdtemp failed");
    // The server runs as user postgres, which must be able to reach DIR/pg.
    ::chmod(tmpl, 0711);
    state().dir = std::string{tmpl} + "/pg";
    state().base_dsn = run_command(script() + " start " + state().dir + " --fast");
  }
  void TearDown() override {
    if (state().dir.empty()) return;
    try {
      run_command(script() + " stop " + state().dir);
    } catch (const std::exception& e) {
      ADD_FAILURE() << e.what();
    }
    std::error_code ec;
    std::filesystem::remove_all(std::filesystem::path{state().dir}.parent_path(), ec);
  }
};

[[maybe_unused]] ::testing::Environment* const kEnvironment =
    ::testing::AddGlobalTestEnvironment(new PgEnvironment);

}  // namespace

const std::string& PgServer::base_dsn() { return state().base_dsn; }

std::string PgServer::fresh_database() {
  const std::string name =
      "qkdn_t" + std::to_string(::getpid()) + "_" + std::to_string(++state().databases);
  pqxx::connection c{base_dsn()};
  pqxx::nontransaction tx{c};
  tx.exec("DROP DATABASE IF EXISTS " + tx.quote_name(name));
  tx.exec("CREATE DATABASE " + tx.quote_name(name));
  return with_database(base_dsn(), name);
}

bool PgServer::private_server() { return !state().dir.empty(); }

void PgServer::stop() { run_command(script() + " stop " + state().dir); }

void PgServer::start() { run_command(script() + " start " + state().dir + " --fast"); }

std::string DbTest::sql(const std::string& statement) const {
  pqxx::connection c{dsn_};
  pqxx::work tx{c};
  const pqxx::result r = tx.exec(statement);
  tx.commit();
  if (r.empty() || r.columns() == 0 || r[0][0].is_null()) return "";
  return r[0][0].c_str();
}

void DbTest::terminate_other_backends() const {
  pqxx::connection admin{dsn_};
  pqxx::work tx{admin};
  tx.exec(
      "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
      " WHERE datname = current_database() AND pid <> pg_backend_pid()");
  tx.commit();
}

controller::TopologyDoc sample_topology() {
  controller::TopologyDoc doc;
  doc.name = "metro-test";
  doc.kms = {{"KM1", "Otemachi"}, {"KM2", "Koganei"}, {"KM3", "Hakusan"}, {"KM4", ""}};
  doc.links = {{"L12", "KM1", "KM2", 50000, 12.5, 0.02},
               {"L23", "KM2", "KM3", 25000.25, 7, 0.031},
               {"L34", "KM3", "KM4", 1e-3, 0, 0}};
  doc.applications = {{"SAE-A", "KM1"}, {"SAE-B", "KM3"}};
  return doc;
}

controller::LedgerEntry ledger_entry(const std::string& key_id, const std::string& relay_id,
                                     const std::string& state_name) {
  controller::LedgerEntry e;
  e.key_id = key_id;
  e.link_id = "L12";
  e.km_id = "KM1";
  e.peer_km_id = "KM2";
  e.relay_id = relay_id;
  e.state = state_name;
  if (state_name == "reserved" || state_name == "allocated") {
    e.lease_expires_at = SysTime{std::chrono::seconds{1'700'000'300}};
  }
  e.updated_at = SysTime{std::chrono::seconds{1'700'000'000}};
  return e;
}

}  // namespace qkdn::db::test
