#include "qkdn/db/store_pool.hpp"

#include <algorithm>

namespace qkdn::db {

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

void apply_ledger_with_retry(controller::Store& store, const std::string& idempotency_key,
                             const std::vector<controller::LedgerEntry>& entries,
                             const RetryPolicy& policy, const Sleeper& sleep) {
  bool in_doubt = false;
  for (int attempt = 1;; ++attempt) {
    try {
      // After a failed attempt the batch may have committed just before the connection broke:
      // ask first, so an in-doubt commit is resolved by a read, not by a second write.
      if (!in_doubt || !store.ledger_batch_committed(idempotency_key)) {
        store.apply_ledger(idempotency_key, entries);
      }
      return;
    } catch (const Unavailable&) {
      if (attempt >= policy.max_attempts) throw;
      in_doubt = true;
    }
    retry_wait(sleep, retry_backoff(policy, attempt));
  }
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
  std::unique_ptr<controller::Store> store;
  for (;;) {
    Job job;
    {
      std::unique_lock lock{mutex_};
      wake_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) break;  // stopping and drained
      job = std::move(queue_.front());
      queue_.pop_front();
    }
    if (!store) {
      try {
        store = factory_();
        if (!store) throw Internal("store: the store factory returned nothing");
      } catch (...) {
        job.fail(std::current_exception());
        continue;
      }
    }
    job.run(*store);
  }
}

}  // namespace qkdn::db
