// The store behind the service (DESIGN.md section 8), opened through the StoreFactory `main`
// passes (PostgreSQL, or MemoryStore in tests): start-up restore, the ordered writer, the health
// probe, persist() for the northbound layer, audit and accounting.
//
// The writer: every core-side change that must outlive a restart (ledger batches, relay and
// session records, alarms, accounting, audit) is queued as a WriteGroup on the core strand and
// written in queue order on a database thread. Ledger batches and upserts are retried until they
// commit (apply_ledger is idempotent under its key, upserts are idempotent), so an outage delays
// them but never loses one; one-shot writes (audit append, accounting add) are dropped and
// counted when the store fails under them. A group's `then` (the Ck commands that depend on it)
// runs only once the whole group is stored. Groups queued meanwhile commit together (group
// commit); groups that nothing waits for may linger (kLinger) to share a waited-for group's commit.
#include <boost/asio/co_spawn.hpp>

#include "qkdn/controller/error.hpp"
#include "service_impl.hpp"

namespace qkdn::service {
namespace {

constexpr auto kProbeWhileDown = std::chrono::seconds(1);
constexpr auto kProbeWhileUp = std::chrono::seconds(5);
constexpr auto kWriterPoll = std::chrono::milliseconds(100);
constexpr auto kGiveUpAtShutdown = std::chrono::seconds(5);
constexpr std::size_t kAuditRing = 10'000;

std::string topology_text(const controller::TopologyDoc& d) {
  return "'" + d.name + "' (" + std::to_string(d.kms.size()) + " KMs, " +
         std::to_string(d.links.size()) + " links)";
}

// Result of running the head group's remaining ops on a database thread.
struct Progress {
  std::size_t next = 0;               ///< first op not done
  std::vector<std::string> problems;  ///< ops that failed for good (logged, counted)
  std::size_t committed = 0;          ///< ops that committed (each its own transaction)
  std::optional<std::string> down;    ///< the store became unavailable at `next`
};

constexpr std::size_t kBatchGroups = 256;  ///< group commit: at most this many write groups
constexpr std::size_t kBatchOps = 2048;    ///< ... and about this many writes in one transaction
/// Group commit: how long groups that nothing waits for may wait for one that is waited for.
constexpr auto kLinger = std::chrono::milliseconds(5);

// One write outside a group commit, retried as its kind allows (see StoreWrite::Kind).
void write_one(controller::Store& store, const StoreWrite& w) {
  switch (w.kind) {
    case StoreWrite::Kind::kUpsert:
      db::with_retry(store, db::RetrySafety::kSafe, w.op);
      break;
    case StoreWrite::Kind::kLedger:
      db::keyed_write_with_retry(store, w.ledger_key, w.op, w.in_doubt);
      break;
    case StoreWrite::Kind::kOnce:
      w.op(store);
      break;
  }
}

// Why a write failed for good, for the log: ledger rows are named by key ID, never logged.
std::string failure_text(const StoreWrite& w, const std::exception& e) {
  auto why = one_line(e.what());
  if (w.kind == StoreWrite::Kind::kLedger) why = without_uuids(std::move(why));
  return w.what + ": " + why;
}

// Result of one group commit on a database thread.
struct BatchOutcome {
  enum class Kind {
    kCommitted,    ///< every write is stored
    kUnsupported,  ///< the store has no transactions: nothing was run
    kAborted,      ///< a write or the database failed before the commit: nothing is stored
    kInDoubt,      ///< the commit itself failed: all or nothing is stored
  };
  Kind kind = Kind::kAborted;
  std::string why;  ///< kAborted / kInDoubt
};

}  // namespace

// ---- start-up -----------------------------------------------------------------------------------

void ControllerService::Impl::open_store() {
  const auto& o = svc.options_;
  const auto& where = o.store.description;
  std::unique_ptr<controller::Store> store;
  controller::StoredState stored;
  try {
    store = o.store.open(controller::StoreRole::kStartup);
    if (!o.epoch_override) svc.epoch_ = store->next_controller_epoch();
    stored = store->load();
  } catch (const std::exception& e) {
    throw Unavailable("store: cannot use " + where + ": " + one_line(e.what()));
  }
  // The stored topology wins unless the operator asks to replace it.
  const bool given = !o.topology.kms.empty() || !o.topology.links.empty();
  controller::TopologyDoc topology = o.topology;
  bool save_topology = true;
  if (stored.topology && !o.topology_override) {
    topology = *stored.topology;
    save_topology = false;
    svc.log("topology: using the stored topology " + topology_text(topology) +
            (given ? "; --topology ignored (--topology-override replaces the stored one)" : ""));
  } else if (stored.topology) {
    svc.log("topology: --topology-override: " + topology_text(o.topology) +
            " replaces the stored " + topology_text(*stored.topology));
  } else {
    svc.log("topology: none stored; storing " + topology_text(o.topology));
  }
  try {
    controller::validate_topology(topology);
  } catch (const std::exception& e) {
    throw InvalidArgument(std::string("stored topology: ") + e.what());
  }
  svc.network_.apply_topology(topology);
  try {
    if (save_topology) store->save_topology(topology);
    restore_core(stored, *store);
  } catch (const Unavailable& e) {
    throw Unavailable("store: " + where + " failed during start-up: " + one_line(e.what()));
  }
  store.reset();
  store_is_up = true;
  db::StorePool::Options po;
  po.threads = static_cast<std::size_t>(o.store_threads);
  pool = std::make_unique<db::StorePool>(
      [open = o.store.open, decorate = o.store_decorator]() -> std::unique_ptr<controller::Store> {
        auto worker = open(controller::StoreRole::kWorker);
        return decorate ? decorate(std::move(worker)) : std::move(worker);
      },
      po);
  svc.log("store: " + where + " (" + std::to_string(po.threads) + " threads)");
}

void ControllerService::Impl::restore_core(const controller::StoredState& stored,
                                           controller::Store& store) {
  // Writes of the restore go straight to `store` (no io thread runs yet).
  struct Direct {
    Impl& impl;
    controller::Store* previous;
    Direct(Impl& i, controller::Store& s) : impl(i), previous(i.startup_store) {
      i.startup_store = &s;
    }
    ~Direct() { impl.startup_store = previous; }
  } direct(*this, store);

  const auto t = now();
  if (stored.thresholds) {
    try {
      svc.alarms_.set_hysteresis(stored.thresholds->qber_hysteresis);
      svc.network_.thresholds() = *stored.thresholds;
    } catch (const InvalidArgument& e) {
      svc.log(std::string("store: network thresholds ignored: ") + e.what());
    }
  }
  for (const auto& lc : stored.link_configs) {
    try {
      if (svc.network_.find_link(lc.link_id) == nullptr) {
        svc.log("store: link config of unknown link '" + lc.link_id + "' ignored");
        continue;
      }
      svc.network_.set_admin(lc.link_id, controller::parse_admin_state(lc.admin_state));
      auto* link = svc.network_.find_link_mut(lc.link_id);
      link->qber_threshold = lc.qber_threshold;
      link->pool_floor_bits = lc.pool_floor_bits;
    } catch (const InvalidArgument& e) {
      svc.log("store: link config of '" + lc.link_id + "' ignored: " + e.what());
    }
  }
  for (const auto& a : stored.alarms) {
    try {
      svc.alarms_.restore(a);
    } catch (const Error& e) {
      svc.log("store: alarm " + std::to_string(a.id) + " not restored: " + e.what());
    }
  }
  apply_rerouting(engine.on_snapshot(fresh_snapshot()));
  if (!stored.policies.empty() || !stored.schedules.empty() || !stored.pinned_routes.empty() ||
      !stored.sae_constraints.empty()) {
    controller::ReroutingConfig config{stored.policies, stored.schedules, stored.pinned_routes,
                                       stored.sae_constraints};
    try {
      apply_rerouting(engine.import_config(config));
    } catch (const Error& e) {
      throw InvalidArgument(std::string("stored rerouting configuration: ") + e.what());
    }
  }
  if (stored.policies.empty() && svc.options_.policy) {
    apply_rerouting(engine.set_policy(*svc.options_.policy));
    store.save_policy(controller::policy_to_record(*svc.options_.policy, "", ""));
  }

  // Relays first: they settle the ledger (in-flight attempts end, their keys are released,
  // expired leases go); then sessions (pending ones end: their exchange died with the process).
  auto out = relays.restore(stored.relays, stored.ledger, t);
  for (const auto& b : out.ledger) {
    if (!b.empty()) store.apply_ledger(b.idempotency_key, b.entries);
  }
  for (const auto& r : out.records) store.save_relay(r);
  // No KM is connected yet: their releases wait for each KM's registration.
  send_releases(std::move(out.release));
  const auto changed = sessions.restore(stored.sessions, t);
  for (const auto& s : changed) store.save_session(controller::to_record(s));
  svc.log("store: restored " + std::to_string(sessions.active_count()) + " active sessions (" +
          std::to_string(changed.size()) + " ended by the restart), " +
          std::to_string(stored.relays.size()) + " relays (" + std::to_string(out.finished.size()) +
          " ended by the restart), " + std::to_string(ledger.seen_count()) +
          " key IDs in the ledger, " + std::to_string(svc.alarms_.active_count()) +
          " active alarms");
}

// ---- the writer ---------------------------------------------------------------------------------

void ControllerService::Impl::ledger_write(const controller::LedgerBatch& batch, WriteGroup& g) {
  g.ops.push_back({StoreWrite::Kind::kLedger, "ledger batch " + batch.idempotency_key,
                   [key = batch.idempotency_key, entries = batch.entries](controller::Store& s) {
                     s.apply_ledger(key, entries);
                   },
                   batch.idempotency_key});
}

void ControllerService::Impl::submit_writes(WriteGroup group) {
  if (!svc.store_configured()) {
    if (group.then) group.then();
    return;
  }
  if (startup_store != nullptr) {
    std::uint64_t committed = 0;
    for (auto& w : group.ops) {
      try {
        write_one(*startup_store, w);
        ++committed;
      } catch (const Unavailable&) {
        throw;
      } catch (const std::exception& e) {
        write_failed(failure_text(w, e));
      }
    }
    metrics->store_writes(1, committed);
    if (group.then) group.then();
    return;
  }
  if (!writer_running) {
    write_failed(std::to_string(group.ops.size()) + " write(s) after shutdown dropped",
                 group.ops.size());
    return;
  }
  group.queued_at = std::chrono::steady_clock::now();
  const bool waited = !group.can_wait;
  waited_for += waited ? 1 : 0;
  writes.push_back(std::move(group));
  if (writes.size() == 1 || waited) wake_writer();
}

void ControllerService::Impl::wake_writer() { writer_wake.cancel(); }

net::awaitable<void> ControllerService::Impl::writer_loop() {
  for (;;) {
    if (writes.empty()) {
      if (writer_stop) break;
      writer_wake.expires_at(SteadyTime::max());
      auto wait_op = writer_wake.async_wait(kUseTuple);
      co_await std::move(wait_op);
      continue;
    }
    if (group_commit && unbatched == 0 && write_progress == 0 && store_is_up) {
      // Nothing queued is waited for: linger a little, so that these groups share the commit
      // of the next one that is (one relay's start, reservations and previous outcome commit
      // with the allocations that its 0x4104 waits for).
      const auto until = writes.front().queued_at + kLinger;
      if (waited_for == 0 && !writer_stop && writes.size() < kBatchGroups &&
          std::chrono::steady_clock::now() < until) {
        writer_wake.expires_at(until);
        auto wait_op2 = writer_wake.async_wait(kUseTuple);
        co_await std::move(wait_op2);
        continue;
      }
      auto commit_queued_groups_op = commit_queued_groups();
      co_await std::move(commit_queued_groups_op);
      continue;
    }
    // One write at a time (a store without transactions, or replaying a failed group commit).
    // Deque elements stay put while others are appended: the database thread reads the head's
    // ops in place; only this loop pops.
    const std::vector<StoreWrite>* ops = &writes.front().ops;
    const std::size_t from = write_progress;
    auto job = [ops, from](controller::Store& store) {
      Progress p;
      for (p.next = from; p.next < ops->size(); ++p.next) {
        const auto& w = (*ops)[p.next];
        try {
          write_one(store, w);
          ++p.committed;
        } catch (const Unavailable& e) {
          if (w.kind == StoreWrite::Kind::kOnce) {
            p.problems.push_back(w.what + " dropped: " + one_line(e.what()));
            ++p.next;
          }
          p.down = one_line(e.what());
          return p;
        } catch (const std::exception& e) {
          // Conflict / InvalidArgument: retrying cannot help. Logged and counted.
          p.problems.push_back(failure_text(w, e));
        }
      }
      return p;
    };
    Progress p;
    try {
      auto op = on_pool<Progress>(std::move(job));
      p = co_await std::move(op);
    } catch (const std::exception& e) {
      p.next = from;
      p.down = one_line(e.what());
    }
    write_progress = p.next;
    for (const auto& line : p.problems) write_failed(line);
    metrics->store_writes(0, p.committed);
    if (p.down) {
      auto wait_op = wait_for_store(*p.down);
      if (!co_await std::move(wait_op)) break;
      continue;
    }
    if (unbatched > 0) --unbatched;
    finish_front_groups(1);
  }
  writer_running = false;
  if (writes_drained != nullptr) {
    writes_drained->set_value();
    writes_drained = nullptr;
  }
}

net::awaitable<void> ControllerService::Impl::commit_queued_groups() {
  // Group commit: the groups queued now share one transaction (one fsync), so concurrent relays
  // wait for one commit together instead of for each other's. Their `then`s run after it, in
  // queue order.
  std::vector<const std::vector<StoreWrite>*> batch;
  std::size_t n_ops = 0;
  for (const auto& g : writes) {
    if (batch.size() == kBatchGroups || (n_ops > 0 && n_ops + g.ops.size() > kBatchOps)) break;
    batch.push_back(&g.ops);
    n_ops += g.ops.size();
  }
  auto job = [batch](controller::Store& store) {
    BatchOutcome out;
    bool body_done = false;
    try {
      const bool ran = store.write_batch([&](controller::Store& s) {
        for (const auto* ops : batch) {
          for (const auto& w : *ops) w.op(s);
        }
        body_done = true;
      });
      out.kind = ran ? BatchOutcome::Kind::kCommitted : BatchOutcome::Kind::kUnsupported;
    } catch (const std::exception& e) {
      out.kind = body_done ? BatchOutcome::Kind::kInDoubt : BatchOutcome::Kind::kAborted;
      out.why = one_line(e.what());
    }
    return out;
  };
  BatchOutcome out;
  try {
    auto op = on_pool<BatchOutcome>(std::move(job));
    out = co_await std::move(op);
  } catch (const std::exception& e) {
    out.kind = BatchOutcome::Kind::kAborted;
    out.why = one_line(e.what());
  }
  switch (out.kind) {
    case BatchOutcome::Kind::kCommitted:
      metrics->store_writes(0, 1);
      finish_front_groups(batch.size());
      break;
    case BatchOutcome::Kind::kUnsupported:
      group_commit = false;
      break;
    case BatchOutcome::Kind::kAborted:
      // Nothing is stored: the same groups go again one write at a time, which waits out an
      // outage as usual and logs and counts a write that breaks a rule, alone.
      unbatched = batch.size();
      break;
    case BatchOutcome::Kind::kInDoubt:
      // All or nothing is stored. Ledger batches resolve it by their key and upserts are
      // idempotent; a one-shot write cannot be told apart from its twin, so it is dropped (as a
      // one-shot write that fails alone is).
      for (std::size_t i = 0; i < batch.size(); ++i) {
        auto& ops = writes[i].ops;
        std::erase_if(ops, [&](StoreWrite& w) {
          if (w.kind == StoreWrite::Kind::kLedger) w.in_doubt = true;
          if (w.kind != StoreWrite::Kind::kOnce) return false;
          write_failed(w.what + " dropped: group commit in doubt: " + out.why);
          return true;
        });
      }
      unbatched = batch.size();
      break;
  }
}

net::awaitable<bool> ControllerService::Impl::wait_for_store(const std::string& why) {
  mark_store_down(why);
  const auto since = std::chrono::steady_clock::now();
  while (!store_is_up &&
         !(writer_stop && std::chrono::steady_clock::now() - since > kGiveUpAtShutdown)) {
    writer_wake.expires_after(kWriterPoll);
    auto wait_op = writer_wake.async_wait(kUseTuple);
    co_await std::move(wait_op);
  }
  if (store_is_up) co_return true;
  std::uint64_t lost = 0;
  for (const auto& g : writes) lost += g.ops.size();
  lost -= std::min<std::uint64_t>(lost, write_progress);
  write_failed("still unavailable at shutdown: " + std::to_string(writes.size()) +
                   " write group(s), " + std::to_string(lost) + " write(s) not stored",
               lost);
  writes.clear();
  waited_for = 0;
  write_progress = 0;
  unbatched = 0;
  co_return false;
}

void ControllerService::Impl::write_failed(const std::string& line, std::uint64_t n) {
  metrics->store_write_failures(n);
  svc.log("store: " + line);
}

void ControllerService::Impl::finish_front_groups(std::size_t n) {
  metrics->store_writes(std::min(n, writes.size()), 0);
  for (std::size_t i = 0; i < n && !writes.empty(); ++i) {
    auto then = std::move(writes.front().then);
    if (!writes.front().can_wait) --waited_for;
    writes.pop_front();
    write_progress = 0;
    if (!then) continue;
    try {
      then();
    } catch (const std::exception& e) {
      svc.log(std::string("store: after write: ") + e.what());
    }
  }
}

// ---- health -------------------------------------------------------------------------------------

void ControllerService::Impl::mark_store_down(const std::string& why) {
  if (store_is_up.exchange(false)) {
    svc.log("store: unavailable (" + why +
            "); new key relays are refused until it is back, queued writes wait");
  }
  arm_probe();
}

void ControllerService::Impl::arm_probe() {
  if (probing || timers_stopped || !pool) return;
  probing = true;
  probe_timer.expires_after(store_is_up ? std::chrono::milliseconds(kProbeWhileUp)
                                        : std::chrono::milliseconds(kProbeWhileDown));
  probe_timer.async_wait([this](boost::system::error_code ec) {
    if (ec || timers_stopped) {
      probing = false;
      return;
    }
    auto probe = [](Impl* self) -> net::awaitable<void> {
      bool ok = false;
      try {
        auto op = self->on_pool<bool>([](controller::Store& s) { return s.healthy(); });
        ok = co_await std::move(op);
      } catch (const std::exception&) {
        ok = false;
      }
      self->probing = false;
      if (ok && !self->store_is_up.exchange(true)) {
        self->svc.log("store: available again");
        self->wake_writer();
      } else if (!ok && self->store_is_up.exchange(false)) {
        self->svc.log("store: health probe failed; new key relays are refused until it is back");
      }
      self->arm_probe();
    };
    net::co_spawn(core, probe(this), completion("store probe"));
  });
}

void ControllerService::Impl::close_store() {
  if (pool) pool->shutdown();
  pool.reset();
}

// ---- public API ---------------------------------------------------------------------------------

bool ControllerService::store_configured() const { return static_cast<bool>(options_.store); }

bool ControllerService::store_up() const { return store_configured() && impl_->store_is_up; }

net::awaitable<void> ControllerService::persist(std::function<void(controller::Store&)> op,
                                                bool retry_safe) {
  if (!store_configured()) throw Unavailable("no store configured (start with --store-dsn)");
  if (!store_up() || !impl_->pool) throw Unavailable("store unavailable");
  try {
    auto job = [op = std::move(op), retry_safe](controller::Store& s) {
      db::with_retry(s, retry_safe ? db::RetrySafety::kSafe : db::RetrySafety::kNever, op);
    };
    auto run = impl_->on_pool<void>(std::move(job));
    co_await std::move(run);
  } catch (const Unavailable& e) {
    net::post(impl_->core, [this, why = one_line(e.what())] { impl_->mark_store_down(why); });
    throw;
  }
}

void ControllerService::audit(controller::AuditRecord record) {
  net::post(impl_->core, [this, r = std::move(record)]() mutable {
    if (r.at == SysTime{}) r.at = impl_->now();
    if (!store_configured()) {
      r.id = impl_->next_audit_id++;
      impl_->audit_ring.push_back(std::move(r));
      while (impl_->audit_ring.size() > kAuditRing) impl_->audit_ring.pop_front();
      return;
    }
    WriteGroup g;
    std::string what = "audit " + r.action;
    g.ops.push_back({StoreWrite::Kind::kOnce, std::move(what),
                     [rec = std::move(r)](controller::Store& s) { s.append_audit(rec); }});
    impl_->submit_writes(std::move(g));
  });
}

net::awaitable<std::vector<controller::AuditRecord>> ControllerService::audit_page(
    std::int64_t after_id, std::size_t limit) {
  if (!store_configured()) {
    auto op = on_core([this, after_id, limit](Core&) {
      std::vector<controller::AuditRecord> out;
      for (const auto& r : impl_->audit_ring) {
        if (r.id <= after_id) continue;
        if (out.size() >= limit) break;
        out.push_back(r);
      }
      return out;
    });
    co_return co_await std::move(op);
  }
  if (!store_up() || !impl_->pool) throw Unavailable("store unavailable");
  try {
    auto op = impl_->on_pool<std::vector<controller::AuditRecord>>(
        [after_id, limit](controller::Store& s) {
          return db::with_retry(s, db::RetrySafety::kSafe,
                                [&](controller::Store& st) { return st.audit(after_id, limit); });
        });
    co_return co_await std::move(op);
  } catch (const Unavailable& e) {
    net::post(impl_->core, [this, why = one_line(e.what())] { impl_->mark_store_down(why); });
    throw;
  }
}

net::awaitable<std::vector<controller::AccountingRecord>> ControllerService::accounting(
    SysTime from, SysTime to, std::string sae_id) {
  if (!store_configured()) {
    auto op = on_core([this, from, to, sae = std::move(sae_id)](Core&) {
      std::vector<controller::AccountingRecord> out;
      for (const auto& [key, rec] : impl_->accounting_mem) {
        if (rec.bucket_start < from || rec.bucket_start >= to) continue;
        if (!sae.empty() && rec.sae_id != sae) continue;
        out.push_back(rec);
      }
      return out;
    });
    co_return co_await std::move(op);
  }
  if (!store_up() || !impl_->pool) throw Unavailable("store unavailable");
  try {
    auto op = impl_->on_pool<std::vector<controller::AccountingRecord>>(
        [from, to, sae = std::move(sae_id)](controller::Store& s) {
          return db::with_retry(s, db::RetrySafety::kSafe, [&](controller::Store& st) {
            return st.accounting(from, to, sae);
          });
        });
    co_return co_await std::move(op);
  } catch (const Unavailable& e) {
    net::post(impl_->core, [this, why = one_line(e.what())] { impl_->mark_store_down(why); });
    throw;
  }
}

}  // namespace qkdn::service
