#include "qkdn/db/store_pool.hpp"

#include <algorithm>

namespace qkdn::db {

namespace {

/// The Store of one pool thread, made by the factory on first use. A factory failure (e.g.
/// Unavailable while the database is down) is thrown from the call that needed the store, so
/// that with_retry treats it like any other failure of that call; the next call tries again.
class LazyStore final : public controller::Store {
 public:
  explicit LazyStore(const StorePool::Factory& factory) : factory_(factory) {}

  controller::StoredState load() override { return get().load(); }
  bool healthy() override {
    try {
      return get().healthy();
    } catch (const Error&) {
      return false;
    }
  }
  std::int64_t next_controller_epoch() override { return get().next_controller_epoch(); }
  void save_topology(const controller::TopologyDoc& d) override { get().save_topology(d); }
  void save_link_config(const controller::LinkConfigRecord& r) override {
    get().save_link_config(r);
  }
  void delete_link_config(const std::string& id) override { get().delete_link_config(id); }
  void save_thresholds(const controller::Thresholds& t) override { get().save_thresholds(t); }
  void save_policy(const controller::PolicyRecord& r) override { get().save_policy(r); }
  void delete_policy(const std::string& s, const std::string& d) override {
    get().delete_policy(s, d);
  }
  void save_schedule(const controller::ScheduleRecord& r) override { get().save_schedule(r); }
  void delete_schedule(const std::string& id) override { get().delete_schedule(id); }
  void save_pinned_route(const controller::PinnedRouteRecord& r) override {
    get().save_pinned_route(r);
  }
  void delete_pinned_route(const std::string& s, const std::string& d) override {
    get().delete_pinned_route(s, d);
  }
  void save_sae_constraints(const controller::SaeConstraintRecord& r) override {
    get().save_sae_constraints(r);
  }
  void delete_sae_constraints(const std::string& s, const std::string& d) override {
    get().delete_sae_constraints(s, d);
  }
  void save_session(const controller::SessionRecord& r) override { get().save_session(r); }
  void save_relay(const controller::RelayRecord& r) override { get().save_relay(r); }
  void apply_ledger(const std::string& key,
                    const std::vector<controller::LedgerEntry>& entries) override {
    get().apply_ledger(key, entries);
  }
  bool ledger_batch_committed(const std::string& key) override {
    return get().ledger_batch_committed(key);
  }
  void save_alarm(const controller::Alarm& a) override { get().save_alarm(a); }
  void add_accounting(const controller::AccountingRecord& r) override { get().add_accounting(r); }
  std::vector<controller::AccountingRecord> accounting(SysTime from, SysTime to,
                                                       const std::string& sae) override {
    return get().accounting(from, to, sae);
  }
  std::int64_t append_audit(const controller::AuditRecord& r) override {
    return get().append_audit(r);
  }
  std::vector<controller::AuditRecord> audit(std::int64_t after, std::size_t limit) override {
    return get().audit(after, limit);
  }
  bool write_batch(const std::function<void(controller::Store&)>& body) override {
    return get().write_batch(body);
  }

 private:
  controller::Store& get() {
    if (!store_) {
      store_ = factory_();
      if (!store_) throw Internal("store: the store factory returned nothing");
    }
    return *store_;
  }

  const StorePool::Factory& factory_;
  std::unique_ptr<controller::Store> store_;
};

}  // namespace

std::chrono::milliseconds retry_backoff(const RetryPolicy& policy, int attempt) noexcept {
  auto d = std::max(policy.initial_backoff, std::chrono::milliseconds{0});
  for (int i = 1; i < attempt && d < policy.max_backoff; ++i) d *= 2;
  return std::min(d, policy.max_backoff);
}

void retry_wait(const Sleeper& sleep, std::chrono::milliseconds d) {
  if (sleep) {
    sleep(d);
  } else {
    std::this_thread::sleep_for(d);
  }
}

void keyed_write_with_retry(controller::Store& store, const std::string& idempotency_key,
                            const std::function<void(controller::Store&)>& write, bool in_doubt,
                            const RetryPolicy& policy, const Sleeper& sleep) {
  for (int attempt = 1;; ++attempt) {
    try {
      // After a failed attempt the batch may have committed just before the connection broke:
      // ask first, so an in-doubt commit is resolved by a read, not by a second write.
      if (!in_doubt || !store.ledger_batch_committed(idempotency_key)) write(store);
      return;
    } catch (const Unavailable&) {
      if (attempt >= policy.max_attempts) throw;
      in_doubt = true;
    }
    retry_wait(sleep, retry_backoff(policy, attempt));
  }
}

void apply_ledger_with_retry(controller::Store& store, const std::string& idempotency_key,
                             const std::vector<controller::LedgerEntry>& entries,
                             const RetryPolicy& policy, const Sleeper& sleep) {
  keyed_write_with_retry(
      store, idempotency_key,
      [&](controller::Store& s) { s.apply_ledger(idempotency_key, entries); }, false, policy,
      sleep);
}

StorePool::StorePool(Factory factory, Options options)
    : factory_(std::move(factory)), options_(std::move(options)) {
  const std::size_t n = std::max<std::size_t>(options_.threads, 1);
  threads_.reserve(n);
  for (std::size_t i = 0; i < n; ++i) threads_.emplace_back([this] { work(); });
}

StorePool::~StorePool() { shutdown(); }

void StorePool::shutdown() {
  {
    std::lock_guard lock{mutex_};
    stopping_ = true;
  }
  wake_.notify_all();
  for (auto& t : threads_) {
    if (t.joinable()) t.join();
  }
}

std::size_t StorePool::queued() const {
  std::lock_guard lock{mutex_};
  return queue_.size();
}

std::future<void> StorePool::apply_ledger(std::string idempotency_key,
                                          std::vector<controller::LedgerEntry> entries) {
  return submit([this, key = std::move(idempotency_key),
                 batch = std::move(entries)](controller::Store& store) {
    apply_ledger_with_retry(store, key, batch, options_.retry, options_.sleep);
  });
}

void StorePool::enqueue(Job job) {
  const char* refused = nullptr;
  {
    std::lock_guard lock{mutex_};
    if (stopping_) {
      refused = "store: the database pool is stopped";
    } else if (queue_.size() >= options_.max_queue) {
      refused = "store: the database queue is full";
    } else {
      queue_.push_back(std::move(job));
    }
  }
  if (refused != nullptr) {
    // Delivered outside the lock: the failure path may run a caller's callback.
    job.fail(std::make_exception_ptr(Unavailable(refused)));
    return;
  }
  wake_.notify_one();
}

void StorePool::work() {
  LazyStore store{factory_};
  for (;;) {
    Job job;
    {
      std::unique_lock lock{mutex_};
      wake_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) break;  // stopping and drained
      job = std::move(queue_.front());
      queue_.pop_front();
    }
    job.run(store);
  }
}

}  // namespace qkdn::db
