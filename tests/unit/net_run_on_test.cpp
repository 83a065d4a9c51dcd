// qkdn::net::run_on (issue 12): a coroutine awaited on another strand runs to completion even
// when the awaiting coroutine is cancelled (no cancellation handler crosses executors, which in
// Boost 1.81 can call a freed handler), and results and exceptions come back to the caller.
#include <gtest/gtest.h>

#include <chrono>
#include <stdexcept>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "qkdn/net/run_on.hpp"

namespace qkdn::net {
namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;

// Waits on a timer of its own executor; true when the wait ran to its end (not aborted).
asio::awaitable<bool> timed_work(std::chrono::milliseconds d) {
  asio::steady_timer t(co_await asio::this_coro::executor, d);
  auto wait_op = t.async_wait(asio::as_tuple(asio::use_awaitable));
  auto [ec] = co_await std::move(wait_op);
  co_return !ec;
}

// Runs caller() on strand a while its cancellation signal is emitted after `after`; returns
// what the awaited work reported (true: it completed).
template <class Caller>
bool cancel_while_waiting(Caller caller, std::chrono::milliseconds after) {
  asio::io_context io;
  auto a = asio::make_strand(io);
  auto b = asio::make_strand(io);
  asio::cancellation_signal cancel;
  bool completed = false;
  bool done = false;
  asio::co_spawn(
      a, caller(b, completed),
      asio::bind_cancellation_slot(cancel.slot(), [&](std::exception_ptr) { done = true; }));
  asio::steady_timer trigger(a, after);
  trigger.async_wait(
      [&](boost::system::error_code) { cancel.emit(asio::cancellation_type::terminal); });
  io.run();
  EXPECT_TRUE(done);
  return completed;
}

// The caller's cancellation reaches a plainly co_spawned coroutine on another strand (the
// forwarding run_on avoids), but not one started with run_on: it runs to its end.
TEST(RunOn, DoesNotForwardTheCallersCancellation) {
  const auto plain = [](auto b, bool& completed) -> asio::awaitable<void> {
    auto work = timed_work(200ms);
    auto op = asio::co_spawn(b, std::move(work), asio::use_awaitable);
    completed = co_await std::move(op);
  };
  const auto hop = [](auto b, bool& completed) -> asio::awaitable<void> {
    auto work = timed_work(200ms);
    auto op = run_on(b, std::move(work));
    completed = co_await std::move(op);
  };
  EXPECT_FALSE(cancel_while_waiting(plain, 20ms)) << "co_spawn forwards the cancellation";
  EXPECT_TRUE(cancel_while_waiting(hop, 20ms)) << "run_on must not";
}

asio::awaitable<int> forty_two() { co_return 42; }
asio::awaitable<void> set_true(bool* flag) {
  *flag = true;
  co_return;
}
asio::awaitable<int> boom() {
  throw std::runtime_error("boom");
  co_return 0;
}

struct Outcome {
  int value = 0;
  bool void_done = false;
  bool threw = false;
};

asio::awaitable<void> caller(asio::strand<asio::io_context::executor_type> b, Outcome* out) {
  auto v = run_on(b, forty_two());
  out->value = co_await std::move(v);
  auto nothing = run_on(b, set_true(&out->void_done));
  co_await std::move(nothing);
  try {
    auto bad = run_on(b, boom());
    co_await std::move(bad);
  } catch (const std::runtime_error&) {
    out->threw = true;
  }
}

// Values, void and exceptions come back to the caller.
TEST(RunOn, ReturnsValuesAndRethrows) {
  asio::io_context io;
  auto a = asio::make_strand(io);
  auto b = asio::make_strand(io);
  Outcome out;
  bool finished = false;
  asio::co_spawn(a, caller(b, &out), [&](std::exception_ptr e) {
    EXPECT_FALSE(e);
    finished = true;
  });
  io.run();
  EXPECT_TRUE(finished);
  EXPECT_EQ(out.value, 42);
  EXPECT_TRUE(out.void_done);
  EXPECT_TRUE(out.threw);
}

}  // namespace
}  // namespace qkdn::net
