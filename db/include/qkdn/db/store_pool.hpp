// The database thread pool: blocking Store calls run here, never on the controller strand
// (STYLE.md, Async). Each thread owns its own Store (one PostgreSQL connection per thread). Free
// of Asio: results come back as std::future or through a completion callback, which the service
// layer adapts to its executor.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <exception>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "qkdn/controller/error.hpp"
#include "qkdn/controller/store.hpp"

namespace qkdn::db {

/// Whether an operation may run again after it failed with Unavailable.
enum class RetrySafety {
  kNever,  ///< a non-idempotent write (audit append, upsert racing others): Unavailable surfaces
  kSafe,   ///< a read, or a write that is idempotent (same effect when applied twice)
};

/// Bounded exponential backoff: initial_backoff, doubling, capped at max_backoff, for at most
/// max_attempts attempts in all (the first included).
struct RetryPolicy {
  int max_attempts = 5;
  std::chrono::milliseconds initial_backoff{20};
  std::chrono::milliseconds max_backoff{1000};
};

/// Waits between attempts; empty = std::this_thread::sleep_for. Tests inject a recorder.
using Sleeper = std::function<void(std::chrono::milliseconds)>;

/// The wait before attempt `attempt + 1` (attempt counts from 1).
std::chrono::milliseconds retry_backoff(const RetryPolicy& policy, int attempt) noexcept;

/// Waits `d` with `sleep`, or sleeps the calling thread when `sleep` is empty.
void retry_wait(const Sleeper& sleep, std::chrono::milliseconds d);

/// Runs fn(store) and returns its result. When safety is kSafe and fn throws Unavailable, waits
/// (retry_backoff) and runs it again, up to policy.max_attempts; then rethrows the last
/// Unavailable. Other errors (Conflict, InvalidArgument, ...) and every error of a kNever
/// operation surface at once. Blocks the calling thread (a database thread) while it waits.
template <class F>
auto with_retry(controller::Store& store, RetrySafety safety, F&& fn,
                const RetryPolicy& policy = {}, const Sleeper& sleep = {}) {
  for (int attempt = 1;; ++attempt) {
    try {
      return fn(store);
    } catch (const Unavailable&) {
      if (safety != RetrySafety::kSafe || attempt >= policy.max_attempts) throw;
    }
    retry_wait(sleep, retry_backoff(policy, attempt));
  }
}

/// store.apply_ledger with retries that cannot apply a batch twice: after Unavailable (the
/// commit may or may not have happened), waits, asks ledger_batch_committed(key) and applies
/// again only if the batch did not commit (apply_ledger is idempotent anyway; the check makes
/// the in-doubt resolution explicit and cheap). Conflict and InvalidArgument surface at once;
/// Unavailable after policy.max_attempts.
void apply_ledger_with_retry(controller::Store& store, const std::string& idempotency_key,
                             const std::vector<controller::LedgerEntry>& entries,
                             const RetryPolicy& policy = {}, const Sleeper& sleep = {});

/// The same for any write that is idempotent under `idempotency_key` as a ledger batch is:
/// `write(store)` runs again after Unavailable only if ledger_batch_committed(key) says it did
/// not commit. With `in_doubt`, that question is asked before the first attempt too (the write
/// may have committed in an earlier, failed group commit).
void keyed_write_with_retry(controller::Store& store, const std::string& idempotency_key,
                            const std::function<void(controller::Store&)>& write,
                            bool in_doubt = false, const RetryPolicy& policy = {},
                            const Sleeper& sleep = {});

/// A small pool of database threads. Each thread creates its own Store with the factory on first
/// use (and again after the factory failed), uses it only from that thread, and destroys it
/// there. Jobs receive a per-thread Store that forwards to it. Jobs run in submission order per
/// queue, concurrently across threads: callers that need ordering between two writes must wait for
/// the first.
class StorePool {
 public:
  /// Makes the Store of one thread, on that thread, when a job first calls it. May throw (e.g.
  /// Unavailable while the database is down): the Store call that needed it throws that
  /// exception (so with_retry retries it like any failure of that call), and the next call
  /// tries the factory again.
  using Factory = std::function<std::unique_ptr<controller::Store>()>;

  struct Options {
    std::size_t threads = 2;
    std::size_t max_queue = 10000;  ///< jobs waiting; beyond it submit fails with Unavailable
    RetryPolicy retry;              ///< used by submit_with_retry and apply_ledger
    Sleeper sleep;                  ///< empty = real sleeping
  };

  /// Starts options.threads threads (at least 1). The factory is called on the pool threads.
  explicit StorePool(Factory factory, Options options);
  explicit StorePool(Factory factory) : StorePool(std::move(factory), Options{}) {}
  /// shutdown().
  ~StorePool();
  StorePool(const StorePool&) = delete;
  StorePool& operator=(const StorePool&) = delete;

  /// Stops accepting jobs, runs every job already queued, and joins the threads. Idempotent.
  /// Must not be called from a pool thread.
  void shutdown();

  /// Runs fn(Store&) on a pool thread. The future holds its result or its exception (a
  /// qkdn::Error; Unavailable also when the pool is stopped or its queue full).
  template <class F>
  auto submit(F fn) -> std::future<std::invoke_result_t<F&, controller::Store&>> {
    using R = std::invoke_result_t<F&, controller::Store&>;
    auto promise = std::make_shared<std::promise<R>>();
    auto future = promise->get_future();
    auto call = std::make_shared<F>(std::move(fn));
    enqueue(Job{[promise, call](controller::Store& store) { fulfil(*promise, *call, store); },
                [promise](std::exception_ptr e) { promise->set_exception(std::move(e)); }});
    return future;
  }

  /// Runs fn(Store&) on a pool thread, then calls done(std::future<R>) there with a ready
  /// future (get() returns the result or rethrows). `done` must not throw and should only hand
  /// the future over (e.g. post it to an executor): it runs on the database thread.
  template <class F, class Done>
  void submit(F fn, Done done) {
    using R = std::invoke_result_t<F&, controller::Store&>;
    auto call = std::make_shared<F>(std::move(fn));
    auto finish = std::make_shared<Done>(std::move(done));
    enqueue(Job{[call, finish](controller::Store& store) {
                  std::promise<R> promise;
                  fulfil(promise, *call, store);
                  (*finish)(promise.get_future());
                },
                [finish](std::exception_ptr e) {
                  std::promise<R> promise;
                  promise.set_exception(std::move(e));
                  (*finish)(promise.get_future());
                }});
  }

  /// submit() of with_retry(store, safety, fn) with the pool's retry policy.
  template <class F>
  auto submit_with_retry(RetrySafety safety, F fn) {
    return submit([this, safety, fn = std::move(fn)](controller::Store& store) mutable {
      return with_retry(store, safety, fn, options_.retry, options_.sleep);
    });
  }

  /// apply_ledger_with_retry on a pool thread (copies the entries).
  std::future<void> apply_ledger(std::string idempotency_key,
                                 std::vector<controller::LedgerEntry> entries);

  /// Number of threads.
  [[nodiscard]] std::size_t size() const noexcept { return threads_.size(); }
  /// Jobs waiting for a thread now.
  [[nodiscard]] std::size_t queued() const;

 private:
  struct Job {
    std::function<void(controller::Store&)> run;
    std::function<void(std::exception_ptr)> fail;
  };

  template <class R, class F>
  static void fulfil(std::promise<R>& promise, F& fn, controller::Store& store) {
    try {
      if constexpr (std::is_void_v<R>) {
        fn(store);
        promise.set_value();
      } else {
        promise.set_value(fn(store));
      }
    } catch (...) {
      promise.set_exception(std::current_exception());
    }
  }

  void enqueue(Job job);
  void work();

  Factory factory_;
  Options options_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<Job> queue_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace qkdn::db
