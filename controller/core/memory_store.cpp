#include "qkdn/controller/memory_store.hpp"

#include <algorithm>
#include <exception>

#include "qkdn/controller/error.hpp"

namespace qkdn::controller {
namespace {

bool transition_allowed(const std::string& from, const std::string& to) {
  if (from == "reserved") return to == "reserved" || to == "allocated" || to == "released";
  if (from == "allocated") return to == "allocated" || to == "consumed" || to == "released";
  return false;  // consumed and released are final
}

bool lease_state(const std::string& state) { return state == "reserved" || state == "allocated"; }

}  // namespace

void MemoryStore::set_available(bool available) {
  std::lock_guard lock(mu_);
  available_ = available;
}

void MemoryStore::check_available() const {
  if (!available_) throw Unavailable("store: memory store made unavailable (test)");
}

void MemoryStore::check_not_in_batch(const char* what) const {
  if (batch_) throw Internal(std::string("store: ") + what + " inside write_batch");
}

void MemoryStore::write(const std::function<void(Data&)>& op) {
  std::lock_guard lock(mu_);
  check_available();
  if (!batch_) {
    // One write is its own transaction: apply it to a copy only when it can fail half-way.
    op(data_);
    return;
  }
  if (batch_failure_) throw Internal("store: write after a failed write in the same batch");
  try {
    op(*batch_);
  } catch (...) {
    batch_failure_ = std::current_exception();
    throw;
  }
}

StoredState MemoryStore::load() {
  std::lock_guard lock(mu_);
  check_available();
  check_not_in_batch("load");
  StoredState s;
  s.topology = data_.topology;
  s.thresholds = data_.thresholds;
  for (const auto& [id, rec] : data_.link_configs) s.link_configs.push_back(rec);
  for (const auto& [key, rec] : data_.policies) s.policies.push_back(rec);
  for (const auto& [id, rec] : data_.schedules) s.schedules.push_back(rec);
  std::sort(s.schedules.begin(), s.schedules.end(), [](const auto& a, const auto& b) {
    return std::tie(a.not_before, a.schedule_id) < std::tie(b.not_before, b.schedule_id);
  });
  for (const auto& [key, rec] : data_.pinned) s.pinned_routes.push_back(rec);
  for (const auto& [key, rec] : data_.sae_constraints) s.sae_constraints.push_back(rec);
  for (const auto& [id, rec] : data_.sessions) s.sessions.push_back(rec);
  std::sort(s.sessions.begin(), s.sessions.end(), [](const auto& a, const auto& b) {
    return std::tie(a.created_at, a.session_id) < std::tie(b.created_at, b.session_id);
  });
  for (const auto& [id, rec] : data_.relays) s.relays.push_back(rec);
  std::sort(s.relays.begin(), s.relays.end(), [](const auto& a, const auto& b) {
    return std::tie(a.created_at, a.relay_id) < std::tie(b.created_at, b.relay_id);
  });
  for (const auto& [id, e] : data_.ledger) s.ledger.push_back(e);
  for (const auto& [id, a] : data_.alarms) s.alarms.push_back(a);
  s.next_alarm_id = data_.alarms.empty() ? 1 : data_.alarms.rbegin()->first + 1;
  return s;
}

bool MemoryStore::healthy() {
  std::lock_guard lock(mu_);
  return available_;
}

std::int64_t MemoryStore::next_controller_epoch() {
  std::lock_guard lock(mu_);
  check_available();
  check_not_in_batch("next_controller_epoch");
  return ++data_.last_epoch;
}

void MemoryStore::save_topology(const TopologyDoc& doc) {
  write([&](Data& d) { d.topology = doc; });
}

void MemoryStore::save_link_config(const LinkConfigRecord& rec) {
  write([&](Data& d) { d.link_configs[rec.link_id] = rec; });
}

void MemoryStore::delete_link_config(const std::string& link_id) {
  write([&](Data& d) { d.link_configs.erase(link_id); });
}

void MemoryStore::save_thresholds(const Thresholds& t) {
  // The CHECK constraints of migration 0002.
  if (!(t.qber > 0 && t.qber <= 1)) throw InvalidArgument("store: qber threshold not in (0, 1]");
  if (!(t.qber_hysteresis >= 0 && t.qber_hysteresis < 1)) {
    throw InvalidArgument("store: qber hysteresis not in [0, 1)");
  }
  write([&](Data& d) { d.thresholds = t; });
}

void MemoryStore::save_policy(const PolicyRecord& rec) {
  write([&](Data& d) { d.policies[{rec.src_km, rec.dst_km}] = rec; });
}

void MemoryStore::delete_policy(const std::string& src_km, const std::string& dst_km) {
  write([&](Data& d) { d.policies.erase({src_km, dst_km}); });
}

void MemoryStore::save_schedule(const ScheduleRecord& rec) {
  write([&](Data& d) { d.schedules[rec.schedule_id] = rec; });
}

void MemoryStore::delete_schedule(const std::string& schedule_id) {
  write([&](Data& d) { d.schedules.erase(schedule_id); });
}

void MemoryStore::save_pinned_route(const PinnedRouteRecord& rec) {
  write([&](Data& d) { d.pinned[{rec.src_km, rec.dst_km}] = rec; });
}

void MemoryStore::delete_pinned_route(const std::string& src_km, const std::string& dst_km) {
  write([&](Data& d) { d.pinned.erase({src_km, dst_km}); });
}

void MemoryStore::save_sae_constraints(const SaeConstraintRecord& rec) {
  // The rules of migration 0006's CHECKs, as PgStore enforces them.
  if (rec.src_sae.empty() || rec.dst_sae.empty() || rec.src_sae == rec.dst_sae) {
    throw InvalidArgument("store: SAE constraints need two different SAE IDs");
  }
  if ((rec.max_intermediates && *rec.max_intermediates < 0) || rec.min_trust_level < 0 ||
      rec.min_trust_level > 100) {
    throw InvalidArgument("store: SAE constraints out of range");
  }
  write([&](Data& d) { d.sae_constraints[{rec.src_sae, rec.dst_sae}] = rec; });
}

void MemoryStore::delete_sae_constraints(const std::string& src_sae, const std::string& dst_sae) {
  write([&](Data& d) { d.sae_constraints.erase({src_sae, dst_sae}); });
}

void MemoryStore::save_session(const SessionRecord& rec) {
  write([&](Data& d) { d.sessions[rec.session_id] = rec; });
}

void MemoryStore::save_relay(const RelayRecord& rec) {
  write([&](Data& d) { d.relays[rec.relay_id] = rec; });
}

void MemoryStore::apply_ledger(const std::string& idempotency_key,
                               const std::vector<LedgerEntry>& entries) {
  if (idempotency_key.empty()) {
    throw InvalidArgument("store: apply_ledger: empty idempotency key");
  }
  write([&](Data& d) {
    if (d.ledger_batches.contains(idempotency_key)) return;
    // Checked and applied on a copy of the touched rows: a violation applies nothing.
    std::map<std::string, LedgerEntry> changed;
    for (const auto& e : entries) {
      if (lease_state(e.state) == false && e.lease_expires_at) {
        throw InvalidArgument("store: ledger key in state " + e.state + " with a lease");
      }
      const LedgerEntry* old = nullptr;
      if (auto c = changed.find(e.key_id); c != changed.end()) {
        old = &c->second;
      } else if (auto it = d.ledger.find(e.key_id); it != d.ledger.end()) {
        old = &it->second;
      }
      if (old == nullptr) {
        if (!lease_state(e.state)) {
          throw Conflict("ledger: a key that is unknown cannot enter state " + e.state);
        }
      } else {
        // Migration 0004: released before allocation -> reserved again, same hop, any relay.
        const bool again =
            old->state == "released" && e.state == "reserved" && !old->ever_allocated;
        if ((old->relay_id != e.relay_id && !again) || old->link_id != e.link_id ||
            old->km_id != e.km_id || old->peer_km_id != e.peer_km_id) {
          throw Conflict("ledger: key already belongs to relay " + old->relay_id + " on link " +
                         old->link_id);
        }
        if (!transition_allowed(old->state, e.state) && !again) {
          throw Conflict("ledger: key cannot go from " + old->state + " to " + e.state);
        }
      }
      // The store keeps ever_allocated itself, whatever the writer sent (as 0004's triggers).
      LedgerEntry row = e;
      row.ever_allocated = (old != nullptr && old->ever_allocated) || e.state == "allocated" ||
                           e.state == "consumed";
      changed[e.key_id] = std::move(row);
    }
    for (auto& [id, e] : changed) d.ledger[id] = std::move(e);
    d.ledger_batches.insert(idempotency_key);
  });
}

bool MemoryStore::ledger_batch_committed(const std::string& idempotency_key) {
  std::lock_guard lock(mu_);
  check_available();
  check_not_in_batch("ledger_batch_committed");
  return data_.ledger_batches.contains(idempotency_key);
}

void MemoryStore::save_alarm(const Alarm& alarm) {
  write([&](Data& d) { d.alarms[alarm.id] = alarm; });
}

void MemoryStore::add_accounting(const AccountingRecord& rec) {
  write([&](Data& d) {
    auto& row = d.accounting[{rec.bucket_start, rec.sae_id, rec.session_id}];
    if (row.sae_id.empty() && row.keys == 0 && row.key_bytes == 0) {
      row = rec;
    } else {
      row.key_bytes += rec.key_bytes;
      row.keys += rec.keys;
    }
  });
}

std::vector<AccountingRecord> MemoryStore::accounting(SysTime from, SysTime to,
                                                      const std::string& sae_id) {
  std::lock_guard lock(mu_);
  check_available();
  check_not_in_batch("accounting");
  std::vector<AccountingRecord> out;
  for (const auto& [key, rec] : data_.accounting) {  // ordered by bucket, SAE, session
    if (rec.bucket_start < from || rec.bucket_start >= to) continue;
    if (!sae_id.empty() && rec.sae_id != sae_id) continue;
    out.push_back(rec);
  }
  return out;
}

std::int64_t MemoryStore::append_audit(const AuditRecord& rec) {
  std::int64_t id = 0;
  write([&](Data& d) {
    id = d.next_audit_id++;
    d.audit.push_back(rec);
    d.audit.back().id = id;
  });
  return id;
}

std::vector<AuditRecord> MemoryStore::audit(std::int64_t after_id, std::size_t limit) {
  std::lock_guard lock(mu_);
  check_available();
  check_not_in_batch("audit");
  std::vector<AuditRecord> out;
  for (const auto& a : data_.audit) {
    if (out.size() >= limit) break;
    if (a.id > after_id) out.push_back(a);
  }
  return out;
}

bool MemoryStore::write_batch(const std::function<void(Store&)>& body) {
  std::lock_guard lock(mu_);
  check_available();
  check_not_in_batch("write_batch");
  batch_ = data_;
  batch_failure_ = nullptr;
  std::exception_ptr failure;
  try {
    body(*this);
  } catch (...) {
    failure = std::current_exception();
  }
  if (batch_failure_) failure = batch_failure_;  // even if body swallowed it
  if (failure) {
    batch_.reset();
    batch_failure_ = nullptr;
    std::rethrow_exception(failure);
  }
  data_ = std::move(*batch_);
  batch_.reset();
  return true;
}

namespace {

// One handle of a shared MemoryStore (what memory_store_factory hands out): forwards every call.
class SharedMemoryStore final : public Store {
 public:
  explicit SharedMemoryStore(std::shared_ptr<MemoryStore> store) : s_(std::move(store)) {}

  StoredState load() override { return s_->load(); }
  bool healthy() override { return s_->healthy(); }
  std::int64_t next_controller_epoch() override { return s_->next_controller_epoch(); }
  void save_topology(const TopologyDoc& d) override { s_->save_topology(d); }
  void save_link_config(const LinkConfigRecord& r) override { s_->save_link_config(r); }
  void delete_link_config(const std::string& id) override { s_->delete_link_config(id); }
  void save_thresholds(const Thresholds& t) override { s_->save_thresholds(t); }
  void save_policy(const PolicyRecord& r) override { s_->save_policy(r); }
  void delete_policy(const std::string& src, const std::string& dst) override {
    s_->delete_policy(src, dst);
  }
  void save_schedule(const ScheduleRecord& r) override { s_->save_schedule(r); }
  void delete_schedule(const std::string& id) override { s_->delete_schedule(id); }
  void save_pinned_route(const PinnedRouteRecord& r) override { s_->save_pinned_route(r); }
  void delete_pinned_route(const std::string& src, const std::string& dst) override {
    s_->delete_pinned_route(src, dst);
  }
  void save_sae_constraints(const SaeConstraintRecord& r) override { s_->save_sae_constraints(r); }
  void delete_sae_constraints(const std::string& src, const std::string& dst) override {
    s_->delete_sae_constraints(src, dst);
  }
  void save_session(const SessionRecord& r) override { s_->save_session(r); }
  void save_relay(const RelayRecord& r) override { s_->save_relay(r); }
  void apply_ledger(const std::string& key, const std::vector<LedgerEntry>& entries) override {
    s_->apply_ledger(key, entries);
  }
  bool ledger_batch_committed(const std::string& key) override {
    return s_->ledger_batch_committed(key);
  }
  void save_alarm(const Alarm& a) override { s_->save_alarm(a); }
  void add_accounting(const AccountingRecord& r) override { s_->add_accounting(r); }
  std::vector<AccountingRecord> accounting(SysTime from, SysTime to,
                                           const std::string& sae_id) override {
    return s_->accounting(from, to, sae_id);
  }
  std::int64_t append_audit(const AuditRecord& r) override { return s_->append_audit(r); }
  std::vector<AuditRecord> audit(std::int64_t after_id, std::size_t limit) override {
    return s_->audit(after_id, limit);
  }
  bool write_batch(const std::function<void(Store&)>& body) override {
    return s_->write_batch(body);
  }

 private:
  std::shared_ptr<MemoryStore> s_;
};

}  // namespace

StoreFactory memory_store_factory(std::shared_ptr<MemoryStore> store) {
  if (!store) throw InvalidArgument("memory_store_factory: no store");
  StoreFactory f;
  f.description = "an in-memory store";
  f.open = [store = std::move(store)](StoreRole) -> std::unique_ptr<Store> {
    return std::make_unique<SharedMemoryStore>(store);
  };
  return f;
}

}  // namespace qkdn::controller
