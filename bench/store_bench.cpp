// bench_store: PgStore recovery time (load() of a large network) and ledger write throughput,
// one batch per transaction and group-committed (Store::write_batch).
// Starts a private PostgreSQL with scripts/pg-private.sh (or uses QKDN_BENCH_PG_DSN), fills a
// fresh database with 10,000 KMs, 20,000 links and 100,000 ledger rows, then measures.
//
// Usage: bench_store [--fast] [--kms N] [--links N] [--ledger N] [--seconds S]
//   --fast  run the private server with fsync off (not representative of durable commits)
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <pqxx/pqxx>
#include <stdexcept>
#include <string>
#include <vector>

#include "qkdn/controller/clock.hpp"
#include "qkdn/db/pg_store.hpp"

namespace {

using Clock = std::chrono::steady_clock;
using qkdn::controller::LedgerEntry;

std::string run_command(const std::string& command) {
  std::string out;
  FILE* pipe = ::popen(command.c_str(), "r");
  if (pipe == nullptr) throw std::runtime_error("popen failed: " + command);
  char buf[512];
  while (std::fgets(buf, sizeof buf, pipe) != nullptr) out += buf;
  if (::pclose(pipe) != 0) throw std::runtime_error("command failed: " + command);
  while (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

std::string with_database(const std::string& dsn, const std::string& db) {
  const auto scheme = dsn.find("://");
  if (scheme == std::string::npos) return dsn + " dbname=" + db;
  const auto slash = dsn.find('/', scheme + 3);
  const auto query = dsn.find('?', scheme);
  const std::string tail = query == std::string::npos ? "" : dsn.substr(query);
  auto end = std::min(slash == std::string::npos ? dsn.size() : slash,
                      query == std::string::npos ? dsn.size() : query);
  return dsn.substr(0, end) + "/" + db + tail;
}

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

}  // namespace

int main(int argc, char** argv) {
  bool fast = false;
  long kms = 10000;
  long links = 20000;
  long ledger_rows = 100000;
  double seconds = 2.0;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) throw std::invalid_argument(a + " needs a value");
      return argv[++i];
    };
    if (a == "--fast") {
      fast = true;
    } else if (a == "--kms") {
      kms = std::stol(next());
    } else if (a == "--links") {
      links = std::stol(next());
    } else if (a == "--ledger") {
      ledger_rows = std::stol(next());
    } else if (a == "--seconds") {
      seconds = std::stod(next());
    } else {
      std::cerr << "usage: bench_store [--fast] [--kms N] [--links N] [--ledger N] [--seconds S]\n";
      return 2;
    }
  }
  std::string command;
  for (int i = 0; i < argc; ++i) command += (i ? " " : "") + std::string{argv[i]};
  std::cout << "command: " << command << "\n";

  std::string dir;
  int rc = 0;
  try {
    std::string base;
    if (const char* env = std::getenv("QKDN_BENCH_PG_DSN"); env != nullptr && *env != '\0') {
      base = env;
      std::cout << "server: QKDN_BENCH_PG_DSN\n";
    } else {
      char tmpl[] = "/tmp/qkdn-bench-store-XXXXXX";
      if (::mkdtemp(tmpl) == nullptr) throw std::runtime_error("mkdtemp failed");
      ::chmod(tmpl, 0711);
      dir = std::string{tmpl} + "/pg";
      base = run_command(std::string{QKDN_PG_PRIVATE_SCRIPT} + " start " + dir +
                         (fast ? " --fast" : ""));
      std::cout << "server: private PostgreSQL " << (fast ? "(fsync off)" : "(durable)") << " "
                << base << "\n";
    }
    const std::string db = "qkdn_bench_" + std::to_string(::getpid());
    {
      pqxx::connection admin{base};
      pqxx::nontransaction tx{admin};
      tx.exec("CREATE DATABASE " + tx.quote_name(db));
    }
    const std::string dsn = with_database(base, db);
    qkdn::db::PgStore store{qkdn::db::PgStoreOptions{dsn}};
    qkdn::SeededRandom rng{42};
    const qkdn::SysTime t0{std::chrono::seconds{1'700'000'000}};

    // --- fill ---
    auto fill0 = Clock::now();
    qkdn::controller::TopologyDoc doc;
    doc.name = "bench";
    for (long i = 0; i < kms; ++i) doc.kms.push_back({"KM" + std::to_string(i), "site"});
    for (long i = 0; i < links; ++i) {
      const long a = i % kms;
      long b = i < kms ? (a + 1) % kms : static_cast<long>(rng.next_u64() % kms);
      if (b == a) b = (a + 1) % kms;
      doc.links.push_back({"L" + std::to_string(i), "KM" + std::to_string(a),
                           "KM" + std::to_string(b), 50000, 10, 0.02});
    }
    for (long i = 0; i < kms / 10; ++i) {
      doc.applications.push_back({"SAE" + std::to_string(i), "KM" + std::to_string(i)});
    }
    store.save_topology(doc);
    const double topo_s = seconds_since(fill0);

    auto make_entry = [&](long n, const std::string& state) {
      LedgerEntry e;
      e.key_id = qkdn::make_uuid_v4(rng);
      const long link = n % links;
      e.link_id = "L" + std::to_string(link);
      e.km_id = doc.links[static_cast<std::size_t>(link)].a;
      e.peer_km_id = doc.links[static_cast<std::size_t>(link)].b;
      e.relay_id = "relay-" + std::to_string(n / 8);
      e.state = state;
      if (state == "reserved" || state == "allocated")
        e.lease_expires_at = t0 + std::chrono::minutes{5};
      e.updated_at = t0;
      return e;
    };
    auto ledger0 = Clock::now();
    long batch_no = 0;
    for (long done = 0; done < ledger_rows;) {
      std::vector<LedgerEntry> batch;
      for (int j = 0; j < 1000 && done < ledger_rows; ++j, ++done) {
        // Mostly final history, some live reservations: what a long-running network leaves.
        batch.push_back(make_entry(done, done % 10 == 0 ? "reserved" : "allocated"));
      }
      store.apply_ledger("fill-" + std::to_string(batch_no++), batch);
    }
    const double ledger_s = seconds_since(ledger0);
    for (int i = 0; i < 1000; ++i) {
      qkdn::controller::SessionRecord s;
      s.session_id = qkdn::make_uuid_v4(rng);
      s.src_sae = "SAE1";
      s.dst_sae = "SAE2";
      s.src_km = "KM1";
      s.dst_km = "KM2";
      s.state = i % 10 == 0 ? "active" : "closed";
      s.created_at = t0;
      s.updated_at = t0 + std::chrono::seconds{i};
      store.save_session(s);
    }
    std::cout << "fill: " << kms << " KMs, " << links << " links, " << doc.applications.size()
              << " applications in " << topo_s << " s; " << ledger_rows << " ledger rows in "
              << ledger_s << " s; 1000 sessions\n";

    // --- recovery: load() on a fresh store (connect + prepare + load), then warm ---
    std::vector<double> loads;
    std::size_t loaded_rows = 0;
    for (int i = 0; i < 5; ++i) {
      auto l0 = Clock::now();
      qkdn::db::PgStore fresh{qkdn::db::PgStoreOptions{dsn}};
      const auto st = fresh.load();
      loads.push_back(seconds_since(l0));
      loaded_rows = st.ledger.size();
      if (!st.topology || st.topology->kms.size() != static_cast<std::size_t>(kms) ||
          st.topology->links.size() != static_cast<std::size_t>(links)) {
        throw std::runtime_error("load() returned an incomplete topology");
      }
    }
    std::sort(loads.begin(), loads.end());
    std::cout << "load(): " << loaded_rows << " ledger rows + topology: median " << loads[2]
              << " s, min " << loads[0] << " s, max " << loads[4]
              << " s (new PgStore each time; goal < 3 s)\n";

    // --- ledger write throughput ---
    long key_counter = ledger_rows;
    for (const int size : {1, 16, 128}) {
      long batches = 0;
      long rows = 0;
      auto w0 = Clock::now();
      while (seconds_since(w0) < seconds) {
        std::vector<LedgerEntry> batch;
        batch.reserve(static_cast<std::size_t>(size));
        for (int j = 0; j < size; ++j) batch.push_back(make_entry(key_counter++, "reserved"));
        store.apply_ledger("w" + std::to_string(size) + "-" + std::to_string(batches), batch);
        ++batches;
        rows += size;
      }
      const double el = seconds_since(w0);
      std::cout << "apply_ledger batch=" << size << ": "
                << static_cast<long>(static_cast<double>(batches) / el) << " batches/s, "
                << static_cast<long>(static_cast<double>(rows) / el) << " rows/s (" << batches
                << " batches in " << el << " s)\n";
    }
    // --- the same 1-row batches, group-committed: `group` of them per write_batch (one
    // transaction, one round trip for the writes, one fsync), as the controller's writer does.
    for (const int group : {16, 64}) {
      long batches = 0;
      long commits = 0;
      auto w0 = Clock::now();
      while (seconds_since(w0) < seconds) {
        store.write_batch([&](qkdn::controller::Store& s) {
          for (int j = 0; j < group; ++j) {
            s.apply_ledger("g" + std::to_string(group) + "-" + std::to_string(batches++),
                           {make_entry(key_counter++, "reserved")});
          }
        });
        ++commits;
      }
      const double el = seconds_since(w0);
      std::cout << "apply_ledger batch=1, " << group
                << " per write_batch: " << static_cast<long>(static_cast<double>(batches) / el)
                << " batches/s (" << static_cast<long>(static_cast<double>(commits) / el)
                << " commits/s, " << batches << " batches in " << el << " s)\n";
    }
  } catch (const std::exception& e) {
    std::cerr << "bench_store: " << e.what() << "\n";
    rc = 1;
  }
  if (!dir.empty()) {
    try {
      run_command(std::string{QKDN_PG_PRIVATE_SCRIPT} + " stop " + dir);
    } catch (const std::exception& e) {
      std::cerr << "bench_store: " << e.what() << "\n";
    }
    std::error_code ec;
    std::filesystem::remove_all(std::filesystem::path{dir}.parent_path(), ec);
  }
  return rc;
}
