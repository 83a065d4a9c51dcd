// The one way this project runs a coroutine on another executor (a strand) and awaits it.
//
// Why not `co_await co_spawn(ex, work, use_awaitable)`: with Boost 1.81's Asio that forwards the
// awaiting coroutine's cancellation into `work` through a co_spawn_cancellation_handler which,
// when `ex` is not the caller's executor, dispatches `signal->emit()` to `ex` holding a raw
// pointer to a signal that lives inside the caller's completion handler. If `work` completes (and
// the caller resumes and frees that handler) before the dispatched emit runs, the emit calls a
// freed handler: the controller's SIGSEGV in cancellation_signal::emit under a registration storm
// (issue 12; chriskohlhoff/asio issues 1332 and 1029, pull request 1331). The longer the target
// strand's backlog, the wider that window.
//
// run_on() never connects the caller's cancellation slot: `work` always runs to completion, so
// it must be bounded by its own deadlines (every hop in this project is: core steps never wait,
// Ck requests carry a timeout). Cancelling the caller then takes effect once it resumes.
#pragma once

#include <type_traits>
#include <utility>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace qkdn::net {

/// Runs `work` on `ex` and resumes the caller on its own executor with the result (or the
/// exception `work` threw). The caller's cancellation is not forwarded (see above). Any executor.
template <class T, class Executor>
boost::asio::awaitable<T> run_on(Executor ex, boost::asio::awaitable<T> work) {
  namespace asio = boost::asio;
  auto op =
      asio::co_spawn(std::move(ex), std::move(work),
                     asio::bind_cancellation_slot(asio::cancellation_slot(), asio::use_awaitable));
  if constexpr (std::is_void_v<T>) {
    co_await std::move(op);
  } else {
    co_return co_await std::move(op);
  }
}

}  // namespace qkdn::net
