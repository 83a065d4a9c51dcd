// The shared accept side of Ck (controller) and KMA (agent): see framed_server.hpp.
#include "qkdn/southbound/framed_server.hpp"

#include <algorithm>
#include <deque>
#include <exception>
#include <tuple>
#include <utility>
#include <vector>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace qkdn::southbound {

namespace {
using tcp = net::ip::tcp;
constexpr auto kTuple = net::as_tuple(net::use_awaitable);

// A registration waiting for a place among the pending ones. The timer belongs to the
// connection's strand; others only post its cancel there. `granted`, `gone` and `ticket` are
// under State::mu.
struct Held {
  explicit Held(const net::any_io_executor& ex) : timer(ex) {}
  net::steady_timer timer;
  qkdn::net::AdmissionQueue::Ticket ticket;
  bool granted = false;
  bool gone = false;  // gave up (hold over, connection closed): skipped when a place frees
};

void wake(const std::shared_ptr<Held>& h) {
  auto ex = h->timer.get_executor();
  net::post(ex, [h] { h->timer.cancel(); });
}
}  // namespace

struct FramedServer::State : std::enable_shared_from_this<FramedServer::State> {
  State(net::any_io_executor ex, FramedServerOptions o, Hooks h)
      : io(std::move(ex)),
        accept_strand(net::make_strand(io)),
        acceptor(accept_strand),
        options(std::move(o)),
        hooks(std::move(h)) {}

  net::any_io_executor io;
  net::any_io_executor accept_strand;
  tcp::acceptor acceptor;
  FramedServerOptions options;
  Hooks hooks;
  std::atomic<std::uint64_t> next_id{1};

  mutable std::mutex mu;  // everything below
  std::map<std::uint64_t, std::weak_ptr<Connection>> live;
  std::deque<std::shared_ptr<Held>> held;  // first come, first served
  std::size_t held_waiting = 0;            // in `held` and not gone
  std::uint64_t held_total = 0;
  bool started = false;
  bool stop_called = false;
  bool accept_done = false;
  std::function<void()> drained;

  // Hands free places of the registration queue to held registrations, oldest first. Under mu.
  void grant_held_locked() {
    auto& q = *options.registrations;
    while (!held.empty()) {
      auto h = held.front();
      if (h->gone) {
        held.pop_front();
        continue;
      }
      if (q.depth() >= q.limit()) break;
      auto t = q.try_enter();
      if (!t) break;
      h->ticket = std::move(t);
      h->granted = true;
      --held_waiting;
      held.pop_front();
      wake(h);
    }
  }

  // A place of the registration queue given back (Pending): to the oldest held registration.
  void release_place(qkdn::net::AdmissionQueue::Ticket& ticket) {
    std::lock_guard lock(mu);
    ticket.release();
    grant_held_locked();
  }

  void log(const std::string& line) const {
    if (hooks.log) hooks.log(line);
  }

  void spawn(const net::any_io_executor& ex, net::awaitable<void> work, std::string what) {
    if (hooks.spawn) {
      hooks.spawn(ex, std::move(work), std::move(what));
      return;
    }
    net::co_spawn(ex, std::move(work),
                  [self = shared_from_this(), w = std::move(what)](const std::exception_ptr& e) {
                    if (!e) return;
                    try {
                      std::rethrow_exception(e);
                    } catch (const std::exception& x) {
                      self->log(self->options.name + ": " + w + " ended by exception: " + x.what());
                    } catch (...) {
                      self->log(self->options.name + ": " + w + " ended by unknown exception");
                    }
                  });
  }

  void maybe_drained() {
    std::function<void()> done;
    {
      std::lock_guard lock(mu);
      if (!stop_called || !accept_done || !live.empty() || !drained) return;
      done = std::exchange(drained, {});
    }
    done();
  }

  static net::awaitable<void> accept_loop(std::shared_ptr<State> self) {
    net::steady_timer pause(self->accept_strand);
    qkdn::net::AcceptBackoff backoff;
    while (self->acceptor.is_open()) {
      auto ex = self->options.connection_executor
                    ? self->options.connection_executor()
                    : net::any_io_executor(net::make_strand(self->io));
      auto accept_op = self->acceptor.async_accept(ex, kTuple);
      auto [ec, socket] = co_await std::move(accept_op);
      if (ec == net::error::operation_aborted || !self->acceptor.is_open()) break;
      if (ec) {
        // Out of descriptors and the like: pause (5 ms doubling to 1 s) instead of spinning.
        const auto p = backoff.on_error(ec);
        if (p.log) {
          self->log(self->options.name + ": accept failed: " + ec.message() +
                    " (pausing the listener)");
        }
        pause.expires_after(p.delay);
        auto wait_op = pause.async_wait(kTuple);
        co_await std::move(wait_op);
        continue;
      }
      backoff.on_success();
      self->start_connection(std::move(socket), ex);
    }
    {
      std::lock_guard lock(self->mu);
      self->accept_done = true;
    }
    self->maybe_drained();
  }

  void start_connection(tcp::socket socket, const net::any_io_executor& ex) {
    auto conn = std::make_shared<Connection>();
    conn->id_ = next_id.fetch_add(1);
    conn->executor_ = ex;
    conn->accepted_at_ = std::chrono::steady_clock::now();
    conn->server_ = shared_from_this();
    if (options.unregistered != nullptr) {
      // Pre-registration cap: the gate's policy decides between refusing the newcomer and
      // evicting the connection that has waited longest (it is closed through its closer).
      std::weak_ptr<Connection> weak = conn;
      auto slot = options.unregistered->try_enter([self = shared_from_this(), weak] {
        if (self->hooks.refused) self->hooks.refused();
        if (auto c = weak.lock()) c->close();
      });
      if (!slot) {
        if (hooks.refused) hooks.refused();
        boost::system::error_code ignored;
        socket.close(ignored);
        return;
      }
      conn->slot_ = std::move(slot);
    }
    if (hooks.accepted) hooks.accepted();
    bool stopping = false;
    {
      std::lock_guard lock(mu);
      live.emplace(conn->id_, conn);
      stopping = stop_called;
    }
    if (options.registration_timeout.count() > 0) {
      conn->deadline_ = std::make_unique<net::steady_timer>(ex);
      conn->deadline_->expires_after(options.registration_timeout);
      std::weak_ptr<Connection> weak = conn;
      conn->deadline_->async_wait([self = shared_from_this(), weak](boost::system::error_code e) {
        if (e) return;
        auto c = weak.lock();
        if (!c || c->registered()) return;
        if (self->hooks.deadline_passed) self->hooks.deadline_passed(c);
        c->close();
      });
    }
    auto serve = run(shared_from_this(), conn, std::move(socket));
    spawn(ex, std::move(serve), "session " + std::to_string(conn->id_));
    if (stopping) conn->close();
  }

  static net::awaitable<void> run(std::shared_ptr<State> self, std::shared_ptr<Connection> conn,
                                  tcp::socket socket) {
    try {
      auto op = self->hooks.serve(conn, std::move(socket));
      co_await std::move(op);
    } catch (...) {
      self->ended(*conn);
      throw;
    }
    self->ended(*conn);
  }

  void ended(Connection& conn) {
    if (conn.deadline_) conn.deadline_->cancel();  // on the connection's executor (serve's)
    {
      std::lock_guard lock(mu);
      live.erase(conn.id_);
    }
    maybe_drained();
  }
};

// ---- Pending ----------------------------------------------------------------------------------

FramedServer::Pending::~Pending() {
  if (queue_ && t0_) {
    queue_->served(std::chrono::duration_cast<std::chrono::microseconds>(
        std::chrono::steady_clock::now() - *t0_));
  }
  release_place();
}

void FramedServer::Pending::release_place() {
  if (!ticket_) return;
  if (server_) {
    static_cast<State*>(server_.get())->release_place(ticket_);
  } else {
    ticket_.release();
  }
}

void FramedServer::Pending::started() {
  release_place();  // no longer waiting: the place goes to the oldest held registration
  if (!t0_) t0_ = std::chrono::steady_clock::now();
}

// ---- Connection -------------------------------------------------------------------------------

void FramedServer::Connection::set_closer(const std::function<void()>& close) {
  bool now = false;
  {
    std::lock_guard lock(mu_);
    closer_ = close;
    now = close_requested_;
  }
  if (now && close) close();
}

void FramedServer::Connection::close() {
  std::function<void()> c;
  std::shared_ptr<void> held;
  {
    std::lock_guard lock(mu_);
    close_requested_ = true;
    c = closer_;
    held = held_;
  }
  if (held) wake(std::static_pointer_cast<Held>(held));  // a held registration gives up
  if (c) c();
}

void FramedServer::Connection::registered_now() {
  registered_ = true;
  slot_.release();  // frees a place among the unregistered (the gate is thread-safe)
  auto& state = *static_cast<State*>(server_.get());
  if (state.options.frame_rate && !flood_) {
    const auto& r = *state.options.frame_rate;
    flood_.emplace(r.max_frames_per_s, r.burst, r.max_refused_per_s);
  }
  if (deadline_) {
    // The timer belongs to the connection's executor, which need not be the caller's strand.
    net::post(executor_, [self = shared_from_this()] { self->deadline_->cancel(); });
  }
}

net::awaitable<FramedServer::Registration> FramedServer::Connection::register_peer(
    std::function<Verdict()> check, std::function<net::awaitable<Verdict>(Pending)> attempt) {
  Registration out;
  if (registering_) {
    out.outcome = Registration::Outcome::kInProgress;
    co_return out;
  }
  if (check) {
    auto v = check();
    if (!v.registered()) {
      out.outcome = Registration::Outcome::kRefused;
      out.verdict = std::move(v);
      co_return out;
    }
  }
  auto& state = *static_cast<State*>(server_.get());
  Pending pending;
  registering_ = true;  // from here: a second Register is kInProgress, also while held
  struct Done {
    bool& flag;
    ~Done() { flag = false; }
  } done{registering_};
  if (state.options.registrations) {
    pending.queue_ = state.options.registrations;
    pending.server_ = server_;
    const auto& o = state.options;
    // The hold's timer lives on the strand this coroutine runs on (the caller's serving strand).
    const net::any_io_executor here = co_await net::this_coro::executor;
    std::shared_ptr<Held> wait;
    {
      std::lock_guard lock(state.mu);
      // Newcomers queue behind those held already (fair), else take a free place at once.
      if (state.held_waiting == 0) pending.ticket_ = pending.queue_->try_enter();
      if (!pending.ticket_ && o.registration_hold.count() > 0 &&
          state.held_waiting < o.max_held_registrations && !state.stop_called) {
        wait = std::make_shared<Held>(here);
        state.held.push_back(wait);
        ++state.held_waiting;
        ++state.held_total;
      }
    }
    if (wait) {
      auto until = std::chrono::steady_clock::now() + o.registration_hold;
      if (o.registration_timeout.count() > 0) {
        until = std::min(until, accepted_at_ + o.registration_timeout * 9 / 10);
      }
      wait->timer.expires_at(until);
      bool closing = false;
      {
        std::lock_guard lock(mu_);
        held_ = wait;
        closing = close_requested_;
      }
      // Held: the slot among the unregistered goes to a newcomer (the hold has its own bound).
      slot_.release();
      if (!closing) {
        auto wait_op = wait->timer.async_wait(kTuple);
        co_await std::move(wait_op);
      }
      {
        std::lock_guard lock(mu_);
        held_.reset();
      }
      std::lock_guard lock(state.mu);
      if (wait->granted) {
        pending.ticket_ = std::move(wait->ticket);
      } else {
        wait->gone = true;
        --state.held_waiting;
      }
    }
    if (!pending.ticket_) {
      out.outcome = Registration::Outcome::kBusy;
      out.retry_after = pending.queue_->retry_after(o.registration_retry_floor);
      pending.queue_.reset();
      co_return out;
    }
  }
  auto op = attempt(std::move(pending));
  auto v = co_await std::move(op);
  if (!v.registered()) {
    out.outcome = Registration::Outcome::kRefused;
    out.verdict = std::move(v);
    co_return out;
  }
  registered_now();
  out.outcome = Registration::Outcome::kRegistered;
  co_return out;
}

qkdn::net::FloodGuard::Verdict FramedServer::Connection::admit_frame(
    std::chrono::steady_clock::time_point now) {
  if (!flood_) return qkdn::net::FloodGuard::Verdict::kAdmit;
  return flood_->on_frame(now);
}

std::uint64_t FramedServer::Connection::frames_refused() const {
  return flood_ ? flood_->refused() : 0;
}

std::chrono::milliseconds FramedServer::Connection::frame_retry_after(
    std::chrono::steady_clock::time_point now) const {
  return flood_ ? flood_->retry_after(now) : std::chrono::milliseconds{0};
}

// ---- FramedServer -----------------------------------------------------------------------------

FramedServer::FramedServer(net::any_io_executor io, FramedServerOptions options, Hooks hooks)
    : state_(std::make_shared<State>(std::move(io), std::move(options), std::move(hooks))) {}

FramedServer::~FramedServer() {
  // The loop and the sessions hold the state; stopping ends them (a no-op after stop()).
  stop();
}

tcp::endpoint FramedServer::listen(const tcp::endpoint& at, boost::system::error_code& ec) {
  auto& acc = state_->acceptor;
  acc.open(at.protocol(), ec);
  if (!ec) acc.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) acc.bind(at, ec);
  if (!ec) acc.listen(net::socket_base::max_listen_connections, ec);
  if (ec) {
    boost::system::error_code ignored;
    acc.close(ignored);
    return {};
  }
  return acc.local_endpoint(ec);
}

void FramedServer::start() {
  {
    std::lock_guard lock(state_->mu);
    if (state_->started || state_->stop_called) return;
    state_->started = true;
  }
  state_->spawn(state_->accept_strand, State::accept_loop(state_), "accept loop");
}

void FramedServer::stop(std::function<void()> drained) {
  std::vector<std::shared_ptr<Connection>> open;
  bool started = false;
  {
    std::lock_guard lock(state_->mu);
    if (state_->stop_called) return;
    state_->stop_called = true;
    state_->drained = std::move(drained);
    started = state_->started;
    if (!started) state_->accept_done = true;
    for (auto& [id, weak] : state_->live) {
      if (auto c = weak.lock()) open.push_back(std::move(c));
    }
  }
  if (started) {
    net::post(state_->accept_strand, [s = state_] {
      boost::system::error_code ignored;
      s->acceptor.close(ignored);
    });
  } else {
    boost::system::error_code ignored;
    state_->acceptor.close(ignored);
  }
  for (auto& c : open) c->close();
  state_->maybe_drained();
}

std::size_t FramedServer::active() const {
  std::lock_guard lock(state_->mu);
  return state_->live.size();
}

std::size_t FramedServer::held() const {
  std::lock_guard lock(state_->mu);
  return state_->held_waiting;
}

std::uint64_t FramedServer::held_total() const {
  std::lock_guard lock(state_->mu);
  return state_->held_total;
}

}  // namespace qkdn::southbound
