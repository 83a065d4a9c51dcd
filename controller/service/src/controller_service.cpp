// The service layer: io_context + threads, the core strand, the Ck server and its sessions.
//
// Threading: the core (Network, AlarmTable, the session registry) is touched only on core_;
// each Ck session runs on its CkChannel's strand and hops to core_ with qkdn::net::run_on (never
// a bare co_spawn(..., use_awaitable): see run_on.hpp) to apply a command, then resumes on its
// own strand to answer.
#include "qkdn/service/controller_service.hpp"

#include <algorithm>
#include <cstdio>
#include <future>
#include <mutex>
#include <set>
#include <thread>
#include <utility>
#include <variant>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/use_future.hpp>

#include "qkdn/controller/build_info.hpp"
#include "qkdn/controller/error.hpp"
#include "qkdn/net/run_on.hpp"
#include "qkdn/service/controller_facade.hpp"
#include "qkdn/service/leadership.hpp"
#include "service_impl.hpp"

namespace qkdn::service {
namespace {

using net::ip::tcp;

CoreResult failure(const std::exception& e) { return ck::error_of(e); }

}  // namespace

std::string hex_code(std::uint16_t code) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "0x%04X", static_cast<unsigned>(code));
  return buf;
}

std::string command_label(std::uint16_t code) {
  return ck::is_known_command(code) ? std::string(ck::command_name(code)) : hex_code(code);
}

std::string one_line(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  for (const char c : text) {
    const bool space = c == '\n' || c == '\r' || c == '\t' || c == ' ';
    if (space && (out.empty() || out.back() == ' ')) continue;
    out.push_back(space ? ' ' : c);
  }
  while (!out.empty() && out.back() == ' ') out.pop_back();
  return out;
}

ControllerService::Impl::Impl(ControllerService& s)
    : svc(s),
      registrations(std::make_shared<qkdn::net::AdmissionQueue>(
          std::max<std::size_t>(s.options_.max_pending_registrations, 1))),
      commands(std::make_shared<qkdn::net::AdmissionQueue>(
          std::max<std::size_t>(s.options_.max_pending_commands, 1))),
      api_requests(std::make_shared<qkdn::net::AdmissionQueue>(256)),
      core(net::make_strand(ioc)),
      metrics(std::make_unique<Metrics>(build_version(), build_revision())),
      random(s.options_.random ? s.options_.random : std::make_shared<OsRandom>()),
      engine(*s.clock_, *random),
      sessions(s.network_, *random, s.options_.session),
      ledger(*random, s.options_.ledger),
      relays(ledger, *random, s.options_.relay),
      tick_timer(core),
      writer_wake(core),
      probe_timer(core),
      status_timer(core) {
  make_drivers();
}

ControllerService::Impl::~Impl() = default;

// ---- Impl ----------------------------------------------------------------------------------

void ControllerService::Impl::count_protocol_error(std::string_view reason) {
  std::lock_guard lock(errors_mu);
  auto it = protocol_errors.find(reason);
  if (it == protocol_errors.end()) it = protocol_errors.emplace(std::string(reason), 0).first;
  ++it->second;
  metrics->ck_protocol_error(reason);
}

void ControllerService::Impl::emit(const std::vector<controller::NetworkEvent>& events) {
  if (!events.empty() && svc.options_.on_events) svc.options_.on_events(events);
}

// A root coroutine's completion: never a bare `detached` (STYLE.md): log and count.
std::function<void(std::exception_ptr)> ControllerService::Impl::completion(std::string what) {
  return [this, w = std::move(what)](const std::exception_ptr& e) {
    if (!e) return;
    ++counters.handler_failures;
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& x) {
      svc.log("ck: " + w + " ended by exception: " + x.what());
    } catch (...) {
      svc.log("ck: " + w + " ended by unknown exception");
    }
  };
}

void ControllerService::Impl::send_error(Session& s, std::string_view code, std::string message,
                                         std::optional<std::uint32_t> about) {
  count_protocol_error(code);
  svc.log("ck: " + s.channel->remote_endpoint() + (s.km_id.empty() ? "" : " (" + s.km_id + ")") +
          ": error " + std::string(code) + ": " + message);
  try {
    s.channel->send(ck::ErrorMessage{std::string(code), std::move(message), about, false}, about);
  } catch (const std::exception&) {
    // The text could not be encoded (e.g. not UTF-8): the code alone still tells the peer.
    s.channel->send(ck::ErrorMessage{std::string(code), std::nullopt, about, false}, about);
  }
}

void ControllerService::Impl::send_register_ng(Session& s, std::uint32_t id, std::string_view code,
                                               const std::string& why,
                                               std::optional<std::chrono::milliseconds> retry) {
  ck::RegisterResponse r;
  if (retry) {
    // Backpressure, not a protocol error: counted by reason, not logged one by one (a storm of
    // 2,000 KMs must not become a storm of log lines).
    r.retry_after_ms = std::clamp<std::int64_t>(retry->count(), 1, ck::kMaxIntervalMs);
  } else {
    count_protocol_error(code);
    svc.log("ck: " + s.channel->remote_endpoint() + ": register refused: " + std::string(code) +
            ": " + why);
  }
  r.response = "NG: " + std::string(code);
  r.controller_id = svc.options_.controller_id;
  r.controller_epoch = svc.epoch_;
  r.heartbeat_interval_ms = svc.options_.heartbeat_interval.count();
  r.status_interval_ms = svc.options_.status_interval.count();
  s.channel->send(r, id);
}

// ---- backpressure (issue 12) and per-KM limits (issue 13) ----

void ControllerService::Impl::count_refused(std::string_view reason) {
  {
    std::lock_guard lock(refused_mu);
    auto it = refusal_counts.find(reason);
    if (it == refusal_counts.end()) it = refusal_counts.emplace(std::string(reason), 0).first;
    ++it->second;
  }
  metrics->ck_refused(reason);
}

void ControllerService::Impl::send_busy(Session& s, std::uint16_t code, std::uint32_t about,
                                        const std::string& why,
                                        std::chrono::milliseconds retry_after) {
  const std::string text = why + "; retry after " +
                           std::to_string(std::max<std::int64_t>(retry_after.count(), 1)) + " ms";
  switch (static_cast<ck::Command>(code)) {
    case ck::Command::kErrorFromKm:
      return;  // never answer an Error with an Error
    case ck::Command::kSessionCreationRequest: {
      // 0x1406 has its own response: NG with a session_id that names nothing (ck-extensions.md).
      // Drawn here, on the session's strand: the core's Random is the core's alone.
      OsRandom rng;
      ck::SessionCreationResponse r;
      r.session_id = make_uuid_v4(rng);
      r.response = "NG: " + std::string(ck::errc::kBusy) + ": " + text;
      r.destination_km_id = s.km_id;
      r.controller_epoch = svc.epoch_;
      s.channel->send(std::move(r), about);
      return;
    }
    default:
      s.channel->send(ck::ErrorMessage{std::string(ck::errc::kBusy), text, about, false}, about);
  }
}

bool ControllerService::Impl::admit_frame(const std::shared_ptr<Session>& s,
                                          const ck::Frame& frame) {
  const auto now = std::chrono::steady_clock::now();
  switch (s->conn->admit_frame(now)) {
    case qkdn::net::FloodGuard::Verdict::kAdmit:
      return true;
    case qkdn::net::FloodGuard::Verdict::kRefuse:
      count_refused("rate");
      if (s->conn->frames_refused() == 1) {
        svc.log(base::LogLevel::kWarn, "ck: " + s->km_id + " is over its rate of " +
                                           std::to_string(svc.options_.max_frames_per_s) +
                                           " frames/s; refusing with busy");
      }
      send_busy(*s, frame.command, frame.message_id, "frame rate over the limit",
                s->conn->frame_retry_after(now));
      return false;
    case qkdn::net::FloodGuard::Verdict::kDisconnect:
      count_refused("flood");
      if (s->channel->is_open()) {
        svc.log(base::LogLevel::kWarn,
                "ck: " + s->km_id + " keeps flooding after busy refusals; disconnecting");
        s->channel->send(ck::ErrorMessage{std::string(ck::errc::kBusy),
                                          "frame rate over the limit after busy refusals; "
                                          "disconnecting",
                                          frame.message_id, false},
                         frame.message_id);
        s->channel->close_after_flush();
      }
      return false;
  }
  return false;
}

namespace {
// One command's places in the admission queues (its KM's and everyone's). The queues are held
// so that they outlive the tickets (members are destroyed in reverse order).
struct CommandTickets {
  std::shared_ptr<qkdn::net::AdmissionQueue> km_queue;
  std::shared_ptr<qkdn::net::AdmissionQueue> all_queue;
  qkdn::net::AdmissionQueue::Ticket km;
  qkdn::net::AdmissionQueue::Ticket all;
};
}  // namespace

std::shared_ptr<const void> ControllerService::Impl::admit_command(Session& s, std::uint16_t code,
                                                                   std::uint32_t message_id) {
  auto t = std::make_shared<CommandTickets>();
  t->km_queue = s.pending;
  t->all_queue = commands;
  if (t->km_queue) {
    t->km = t->km_queue->try_enter();
    if (!t->km) {
      count_refused("km_busy");
      send_busy(s, code, message_id, "too many commands of this KM in progress",
                commands->retry_after());
      return nullptr;
    }
  }
  t->all = commands->try_enter();
  if (!t->all) {
    count_refused("command_busy");
    send_busy(s, code, message_id, "controller busy", commands->retry_after());
    return nullptr;
  }
  return t;
}

namespace {
// Status reports and liveness touches wait for their shared core pass: the next time the core
// is free (everything that arrived meanwhile goes in the same pass). A fixed 50 ms window made
// relays right after a report route on pools older than it (e2e_etsi_client, e2e_psk_tls,
// e2e_rerouting_modes failed beside other tests); under load the reports still pile up and are
// applied together.
constexpr auto kStatusBatch = std::chrono::milliseconds{0};

std::vector<controller::LinkReport> link_reports(const ck::StatusReport& st) {
  std::vector<controller::LinkReport> reports;
  reports.reserve(st.links.size());
  for (const auto& l : st.links) {
    if (l.stored_keys < 0 || l.stored_key_bits < 0) {
      throw InvalidArgument("link '" + l.link_id + "': negative key counts");
    }
    reports.push_back({l.link_id, l.peer_kma_id, l.state == "up",
                       static_cast<std::uint64_t>(l.stored_keys),
                       static_cast<std::uint64_t>(l.stored_key_bits), l.key_rate_bps,
                       l.consumption_rate_bps, l.qber});
  }
  return reports;
}
}  // namespace

void ControllerService::Impl::queue_status(const std::shared_ptr<Session>& s,
                                           ck::StatusReport report, std::uint32_t message_id) {
  {
    std::lock_guard lock(s->status_mu);
    if (!s->status_waiting) statuses_waiting.fetch_add(1, std::memory_order_relaxed);
    s->status_waiting = std::move(report);  // a waiting one is replaced: latest wins
    s->status_message_id = message_id;
    if (s->in_batch) return;
    s->in_batch = true;
  }
  list_in_batch(s);
}

void ControllerService::Impl::list_in_batch(const std::shared_ptr<Session>& s) {
  {
    std::lock_guard lock(batch_mu);
    status_batch.push_back(s);
    if (status_batch_armed) return;
    status_batch_armed = true;
  }
  net::post(core, [this] {
    status_timer.expires_after(kStatusBatch);
    status_timer.async_wait([this](boost::system::error_code) { apply_status_batch(); });
  });
}

void ControllerService::Impl::apply_status_batch() {
  std::vector<std::shared_ptr<Session>> batch;
  {
    std::lock_guard lock(batch_mu);
    batch.swap(status_batch);
    status_batch_armed = false;
  }
  struct Item {
    std::shared_ptr<Session> s;
    std::optional<ck::StatusReport> report;
    std::uint32_t report_id = 0;
  };
  std::vector<Item> items;
  items.reserve(batch.size());
  for (auto& s : batch) {
    Item it{s, std::nullopt, 0};
    bool touched = false;
    {
      std::lock_guard lock(s->status_mu);
      it.report = std::move(s->status_waiting);
      it.report_id = s->status_message_id;
      s->status_waiting.reset();
      touched = std::exchange(s->touch_waiting, false);
      s->in_batch = false;
    }
    if (it.report) statuses_waiting.fetch_sub(1, std::memory_order_relaxed);
    // Only the KM's current session speaks for it (a superseded or closed one does not).
    auto r = registered.find(s->km_id);
    if (r == registered.end() || r->second.session_id != s->id) continue;
    if (it.report || touched) items.push_back(std::move(it));
  }
  if (items.empty() || stopping) return;
  ++status_passes;
  // One facade report for the whole batch: one engine hand-over, one snapshot refresh.
  std::vector<std::pair<std::size_t, Error>> failed;
  svc.facade().report([&](CoreChanges& c) {
    for (std::size_t i = 0; i < items.size(); ++i) {
      auto& it = items[i];
      try {
        if (!it.report) {
          c.touch_km(it.s->km_id);  // a status report refreshes last_seen itself
          continue;
        }
        if (it.report->kma_id != it.s->km_id) {
          failed.emplace_back(
              i, ck::error(ck::errc::kBadRequest,
                           "kma_id '" + it.report->kma_id + "' is not this connection's KM"));
          continue;
        }
        c.apply_status(it.s->km_id, link_reports(*it.report));
      } catch (const std::exception& e) {
        if (it.report) failed.emplace_back(i, ck::error_of(e));
        // A touch of a KM that vanished from the topology: its session is being closed.
      }
    }
  });
  for (const auto& [i, err] : failed) {
    auto& it = items[i];
    send_error(
        *it.s, error_ck_code(err),
        command_label(static_cast<std::uint16_t>(ck::Command::kStatusReport)) + ": " + err.what(),
        it.report_id);
  }
}

// ---- the Ck listener (southbound::FramedServer) ----

southbound::FramedServer::Hooks ControllerService::Impl::server_hooks() {
  southbound::FramedServer::Hooks h;
  h.serve = [this](std::shared_ptr<southbound::FramedServer::Connection> conn, tcp::socket socket) {
    return serve(std::move(conn), std::move(socket));
  };
  // Refused newcomers and evicted unregistered peers are counted, not logged one by one.
  h.refused = [this] { ++counters.connections_refused; };
  h.accepted = [this] {
    ++counters.connections_accepted;
    ++counters.connections_active;
  };
  h.deadline_passed = [this](const std::shared_ptr<southbound::FramedServer::Connection>&) {
    count_protocol_error("establish_timeout");
  };
  h.log = [this](const std::string& line) { svc.log(line); };
  h.spawn = [this](const net::any_io_executor& ex, net::awaitable<void> root, std::string what) {
    net::co_spawn(ex, std::move(root), completion(std::move(what)));
  };
  return h;
}

net::awaitable<void> ControllerService::Impl::serve(
    std::shared_ptr<southbound::FramedServer::Connection> conn, tcp::socket socket) {
  const auto& o = svc.options_;
  southbound::ChannelOptions copt;
  copt.handshake_timeout = o.handshake_timeout;
  // The registration deadline (register_timeout) is the server's (FramedServer).
  copt.peer_role = qkdn::net::PeerRole::kKm;
  copt.read_timeout = o.read_timeout;
  copt.idle_timeout = 3 * o.heartbeat_interval;
  copt.request_timeout = o.request_timeout;
  copt.controller_side = true;
  southbound::ChannelObserver obs;
  obs.on_message = [this](bool inbound, std::uint16_t code) {
    metrics->ck_message(inbound, ck::command_name(code));  // bounded label set
    const auto hi = code >> 8;
    if ((inbound && hi != 0x14) || (!inbound && hi != 0x41)) {
      ++counters.inbound_other;
      return;
    }
    (inbound ? counters.inbound : counters.outbound)[code & 0xFF].fetch_add(
        1, std::memory_order_relaxed);
  };
  obs.on_protocol_error = [this](std::string_view reason) { count_protocol_error(reason); };
  obs.on_buffer_grow = [this](std::size_t capacity) {
    auto cur = counters.max_connection_buffer.load();
    while (capacity > cur && !counters.max_connection_buffer.compare_exchange_weak(cur, capacity)) {
    }
  };
  auto channel =
      o.insecure_ck
          ? southbound::make_plain_channel(std::move(socket), copt, std::move(obs))
          : southbound::make_tls_channel(std::move(socket), *tls, true, copt, std::move(obs));
  auto s = std::make_shared<Session>();
  s->channel = channel;
  s->conn = conn;
  s->id = conn->id();
  conn->set_closer([weak = std::weak_ptr<southbound::CkChannel>(channel)] {
    if (auto c = weak.lock()) c->close();
  });
  // No log line per accepted connection (a flood of connections must not flood the log): the
  // registration is logged, and refused or timed-out peers are counted (protocol errors).
  // GCC 12 destroys by-value argument temporaries of a call inside a co_await expression twice:
  // every coroutine with non-trivial arguments is created in its own statement, then awaited.
  southbound::CkChannel::FrameHandler on_frame_fn =
      [this, s](const std::shared_ptr<southbound::CkChannel>&, ck::Frame frame) {
        return on_frame(s, std::move(frame));
      };
  auto run = s->channel->run(std::move(on_frame_fn));
  co_await std::move(run);
  auto ended = session_ended(s);
  auto hop = qkdn::net::run_on(core, std::move(ended));
  co_await std::move(hop);
}

net::awaitable<void> ControllerService::Impl::session_ended(std::shared_ptr<Session> s) {
  --counters.connections_active;
  std::string what = "ck: session " + std::to_string(s->id) + " closed";
  if (s->registered) {
    auto it = registered.find(s->km_id);
    if (it != registered.end() && it->second.session_id == s->id) {
      registered.erase(it);
      try {
        svc.facade().report([&](CoreChanges& c) { c.disconnect_km(s->km_id); });
      } catch (const std::exception& e) {
        svc.log("ck: disconnect " + s->km_id + ": " + e.what());
      }
      what += ", " + s->km_id + " disconnected";
    } else {
      what += " (" + s->km_id + " superseded by a newer connection)";
    }
  }
  if (s->registered) svc.log(what);  // unregistered peers are counted, not logged one by one
  co_return;
}

// ---- inbound frames (channel strand) ----

net::awaitable<void> ControllerService::Impl::on_frame(std::shared_ptr<Session> s,
                                                       ck::Frame frame) {
  const std::uint16_t code = frame.command;
  const bool known = ck::is_known_command(code);
  if (!s->registered && code != static_cast<std::uint16_t>(ck::Command::kRegister)) {
    send_error(*s, ck::errc::kNotRegistered,
               "the first command must be register (0x14E1), got " + command_label(code),
               frame.message_id);
    s->channel->close_after_flush();
    co_return;
  }
  if (!known) {
    send_error(*s, ck::errc::kUnknownCommand, "unknown command code " + hex_code(code),
               frame.message_id);
    co_return;
  }
  if (ck::direction_of(code) != ck::Direction::kKmToController) {
    // [project] A controller -> KM code (0x41xx) sent by a KM is a bad request: the code is
    // known, so not unknown_command; the connection stays open (ck-protocol.md clause 1).
    count_protocol_error("wrong_direction");
    send_error(*s, ck::errc::kBadRequest,
               command_label(code) + " (" + hex_code(code) + ") travels controller -> KM",
               frame.message_id);
    co_return;
  }
  // A registered KM's rate: frames over it are refused here and never reach the core.
  if (!admit_frame(s, frame)) co_return;
  touch(s);
  auto decoded = ck::decode_payload(code, frame.payload);
  if (auto* bad = std::get_if<ck::DecodeError>(&decoded)) {
    if (code == static_cast<std::uint16_t>(ck::Command::kRegister)) {
      send_register_ng(*s, frame.message_id, ck::errc::kBadRequest, bad->message);
    } else if (code == static_cast<std::uint16_t>(ck::Command::kErrorFromKm)) {
      // Never answer an Error with an Error: that could loop between two peers.
      count_protocol_error(ck::errc::kBadRequest);
      svc.log("ck: " + s->km_id + ": malformed error frame: " + bad->message);
    } else {
      send_error(*s, bad->code, command_label(code) + ": " + bad->message, frame.message_id);
    }
    co_return;
  }
  auto& message = std::get<ck::Message>(decoded);
  switch (static_cast<ck::Command>(code)) {
    case ck::Command::kRegister: {
      auto op = on_register(s, frame.message_id, std::get<ck::Register>(std::move(message)));
      co_await std::move(op);
      co_return;
    }
    case ck::Command::kHeartbeat: {
      const auto& hb = std::get<ck::Heartbeat>(message);
      if (hb.kma_id != s->km_id) {
        send_error(*s, ck::errc::kBadRequest,
                   "heartbeat kma_id '" + hb.kma_id + "' is not this connection's KM",
                   frame.message_id);
        co_return;
      }
      s->channel->send(ck::HeartbeatResponse{}, frame.message_id);
      co_return;
    }
    case ck::Command::kStatusReport:
      queue_status(s, std::get<ck::StatusReport>(std::move(message)), frame.message_id);
      co_return;
    case ck::Command::kAlarm:
    case ck::Command::kApplicationsUpdate: {
      auto admitted = admit_command(*s, code, frame.message_id);
      if (!admitted) co_return;
      auto op = core_apply(s->km_id, s->channel->remote_endpoint(), std::move(message),
                           std::move(admitted));
      auto hop = qkdn::net::run_on(core, std::move(op));
      auto r = co_await std::move(hop);
      if (r) {
        send_error(*s, error_ck_code(*r), command_label(code) + ": " + r->what(), frame.message_id);
      }
      co_return;
    }
    case ck::Command::kRelayInstructionResponse: {
      // 0x41E5 goes out with send(), so its answer arrives here: statistics of the relays the
      // instruction made (traffic_adaptive) and NG logging.
      net::post(core, [this, km = s->km_id,
                       r = std::get<ck::RelayInstructionResponse>(std::move(message))] {
        rerouting->on_instruction_response(km, r);
      });
      co_return;
    }
    case ck::Command::kErrorFromKm: {
      const auto& e = std::get<ck::ErrorMessage>(message);
      ++counters.km_errors_received;
      svc.log("ck: " + s->km_id + " reported error " + e.error +
              (e.message_id ? " about message " + std::to_string(*e.message_id) : "") +
              (e.message ? ": " + *e.message : ""));
      co_return;
    }
    default:
      break;
  }
  if (handler && handler->handles(code)) {
    auto admitted = admit_command(*s, code, frame.message_id);
    if (!admitted) co_return;
    auto op = handler->handle(
        svc,
        CommandContext{s->km_id, s->channel, frame.message_id, svc.epoch_, std::move(admitted)},
        std::move(message));
    co_await std::move(op);
    co_return;
  }
  switch (static_cast<ck::Command>(code)) {
    case ck::Command::kKeyRelayNextHopRequest:
    case ck::Command::kKeyRelayRequestNotification:
    case ck::Command::kSessionCreationRequest:
      // Explicit, never silent: routing and key supply plug in through CommandHandler.
      send_error(*s, ck::errc::kNoRoute,
                 command_label(code) + ": not implemented (no routing/key-supply handler)",
                 frame.message_id);
      break;
    default:
      count_protocol_error("unexpected_response");
      send_error(*s, ck::errc::kBadRequest,
                 command_label(code) + ": no pending command with MessageID " +
                     std::to_string(frame.message_id),
                 frame.message_id);
      break;
  }
}

// Refreshes the KM's last_seen at most once per heartbeat interval (not on every frame), and
// then in the status batch's shared core pass: heartbeats are answered here, on the session's
// strand, and never cost a core pass of their own (the channel's idle timeout is the liveness
// check of the session itself).
void ControllerService::Impl::touch(const std::shared_ptr<Session>& s) {
  if (!s->registered) return;
  const auto now = std::chrono::steady_clock::now();
  if (now - s->last_touch < svc.options_.heartbeat_interval) return;
  s->last_touch = now;
  {
    std::lock_guard lock(s->status_mu);
    s->touch_waiting = true;
    if (s->in_batch) return;
    s->in_batch = true;
  }
  list_in_batch(s);
}

net::awaitable<void> ControllerService::Impl::on_register(std::shared_ptr<Session> s,
                                                          std::uint32_t id, ck::Register reg) {
  using Outcome = southbound::FramedServer::Registration::Outcome;
  using Verdict = southbound::FramedServer::Verdict;
  // What is refused at once, on the session's strand.
  auto check = [this, s, &reg]() -> Verdict {
    if (s->registered && reg.km_id != s->km_id) {
      count_protocol_error("second_register");
      return Verdict::refuse(
          std::string(ck::errc::kBadRequest),
          "connection already registered as '" + s->km_id + "', not '" + reg.km_id + "'", false);
    }
    if (!svc.options_.insecure_ck) {
      const auto identity = s->channel->peer_identity();
      if (identity != reg.km_id) {
        count_protocol_error("identity_mismatch");
        return Verdict::refuse(
            std::string(ck::errc::kBadRequest),
            "certificate names '" + identity + "', register names '" + reg.km_id + "'");
      }
    }
    return Verdict::ok();
  };
  // The registration gate (FramedServer): one Register at a time; at most
  // max_pending_registrations wait for the core, the rest are told when to come back (the time
  // to serve the queue) instead of waiting behind it and timing out.
  auto attempt = [this, s, reg, id](southbound::FramedServer::Pending pending) {
    return register_on_core(s, reg, std::move(pending), id);
  };
  // High availability: a standby refuses, naming the leader (docs/ck-extensions.md).
  if (svc.options_.refuse_registration) {
    if (auto reason = svc.options_.refuse_registration()) {
      count_refused("not_leader");
      send_register_ng(*s, id, *reason, "standby", svc.options_.heartbeat_interval);
      s->channel->close_after_flush();
      co_return;
    }
  }
  auto gate = s->conn->register_peer(std::move(check), std::move(attempt));
  auto r = co_await std::move(gate);
  switch (r.outcome) {
    case Outcome::kInProgress:
      count_protocol_error("second_register");
      send_register_ng(*s, id, ck::errc::kBadRequest,
                       "a registration of this connection is already in progress");
      co_return;
    case Outcome::kBusy:
      count_refused("registration_busy");
      send_register_ng(*s, id, ck::errc::kBusy, "registrations queued", r.retry_after);
      s->channel->close_after_flush();
      co_return;
    case Outcome::kRefused:
      send_register_ng(*s, id, r.verdict.refusal, r.verdict.text);
      if (r.verdict.close) s->channel->close_after_flush();
      co_return;
    case Outcome::kRegistered:
      break;
  }
  const bool again = s->registered;
  s->registered = true;  // the server ended the deadline, freed the slot, armed the frame gate
  s->km_id = reg.km_id;
  s->last_touch = std::chrono::steady_clock::now();
  const auto& o = svc.options_;
  if (!s->pending) {
    s->pending =
        std::make_shared<qkdn::net::AdmissionQueue>(std::max<std::size_t>(o.max_pending_per_km, 1));
  }
  ++counters.registrations;
  // The OK went out from the core strand (core_register), ahead of any instruction.
  svc.log("ck: " + reg.km_id + (again ? " re-registered" : " registered") + " from " +
          s->channel->remote_endpoint() + " (session " + std::to_string(s->id) + ")");
  // Standing relay instructions follow the register response (the KM learns the epoch first).
  net::post(core, [this, km = reg.km_id] { rerouting->resend_instructions(km); });
}

net::awaitable<southbound::FramedServer::Verdict> ControllerService::Impl::register_on_core(
    std::shared_ptr<Session> s, ck::Register reg, southbound::FramedServer::Pending pending,
    std::uint32_t message_id) {
  auto op = core_register(std::move(s), std::move(reg), std::move(pending), message_id);
  auto hop = qkdn::net::run_on(core, std::move(op));
  auto r = co_await std::move(hop);
  if (r) {
    co_return southbound::FramedServer::Verdict::refuse(std::string(error_ck_code(*r)), r->what());
  }
  co_return southbound::FramedServer::Verdict::ok();
}

// ---- core strand ----

net::awaitable<CoreResult> ControllerService::Impl::core_register(
    std::shared_ptr<Session> s, ck::Register reg, southbound::FramedServer::Pending pending,
    std::uint32_t message_id) {
  pending.started();  // no longer waiting; the time from here on is the registration's service
  if (stopping) co_return ck::error(ck::errc::kInternal, "shutting down");
  // The KM gave up on this connection while the registration waited (closed it, or the
  // registration deadline did): registering it now would only be undone by session_ended.
  if (!s->channel->is_open()) {
    co_return ck::error(ck::errc::kInternal, "connection closed");
  }
  auto& net = svc.network_;
  if (net.find_km(reg.km_id) == nullptr) {
    co_return ck::error(ck::errc::kUnknownKma, "KM '" + reg.km_id + "' is not in the topology");
  }
  controller::Registration r;
  r.km_id = reg.km_id;
  r.kma_endpoint = reg.kma_endpoint;
  for (auto& l : reg.links) r.links.push_back({l.link_id, l.peer_kma_id});
  if (reg.applications) r.applications = *reg.applications;
  if (reg.software) r.software = *reg.software;
  std::vector<std::string> unknown_links;
  std::vector<controller::RefusedClaim> refused;
  try {
    svc.facade().report([&](CoreChanges& c) { c.register_km(r, &unknown_links, &refused); });
  } catch (const std::exception& e) {
    co_return failure(e);
  }
  // The registration stands (the KM serves its own SAEs); the foreign claims do not.
  refuse_claims(refused, "register", s->channel->remote_endpoint());
  for (const auto& l : unknown_links) {
    svc.log("ck: " + reg.km_id + " declares link '" + l + "' unknown to the topology");
  }
  auto [it, fresh] = registered.try_emplace(reg.km_id);
  if (!fresh && it->second.session_id != s->id) {
    // The newer connection wins (the KM restarted or reconnected before we noticed).
    svc.log("ck: " + reg.km_id + " registered again on session " + std::to_string(s->id) +
            ", closing its older session " + std::to_string(it->second.session_id));
    it->second.channel->close();
  }
  it->second = Registered{s->id, s->channel};

  std::vector<ck::PeerEndpoint> peers;
  std::set<std::string> seen;
  for (const auto& [link_id, link] : net.links()) {
    std::string peer;
    if (link.spec.a == reg.km_id)
      peer = link.spec.b;
    else if (link.spec.b == reg.km_id)
      peer = link.spec.a;
    else
      continue;
    const auto* km = net.find_km(peer);
    if (km == nullptr || km->kma_endpoint.empty() || !seen.insert(peer).second) continue;
    peers.push_back({peer, km->kma_endpoint});
  }
  // Sent here, on the core strand, before the batched engine run can send this KM a relay
  // instruction (0x41E5 must follow the register response: the KM learns the epoch first).
  ck::RegisterResponse resp;
  resp.response = "OK";
  resp.controller_id = svc.options_.controller_id;
  resp.controller_epoch = svc.epoch_;
  resp.heartbeat_interval_ms = svc.options_.heartbeat_interval.count();
  resp.status_interval_ms = svc.options_.status_interval.count();
  resp.peers = std::move(peers);
  resp.relay_routing = svc.options_.distributed_relay ? "distributed" : "centralized";
  s->channel->send(resp, message_id);
  // Releases that waited for this KM follow its register response (same connection, in order).
  key_supply->send_deferred_releases(reg.km_id);
  co_return std::nullopt;
}

void ControllerService::Impl::refuse_claims(const std::vector<controller::RefusedClaim>& refused,
                                            std::string_view via, const std::string& remote) {
  for (const auto& c : refused) {
    const std::string why = c.owner.empty() ? "the topology declares no KM for it"
                                            : "the topology serves it at KM " + c.owner;
    controller::AlarmSpec spec;
    spec.type = controller::alarm_type::kSaeClaimRefused;
    spec.resource = c.sae_id;
    spec.km_id = c.claimed_by;
    spec.severity = controller::Severity::kMajor;
    spec.text = "KM " + c.claimed_by + " claimed SAE " + c.sae_id + " (" + std::string(via) +
                "); refused: " + why;
    rerouting->raise_alarm(spec);
    controller::AuditRecord rec;
    rec.actor = c.claimed_by;
    rec.action = "ck " + std::string(via) + " sae_claim";
    rec.resource = c.sae_id;
    rec.outcome = "refused";
    rec.detail = why;
    rec.remote = remote;
    svc.audit(std::move(rec));
    svc.log(base::LogLevel::kWarn, "ck: " + spec.text);
  }
}

net::awaitable<CoreResult> ControllerService::Impl::core_apply(
    std::string km_id, std::string remote, ck::Message message,
    std::shared_ptr<const void> admitted) {
  const auto t0 = std::chrono::steady_clock::now();
  auto result = apply_km_message(km_id, remote, message);
  commands->served(
      std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0));
  admitted.reset();
  co_return result;
}

CoreResult ControllerService::Impl::apply_km_message(const std::string& km_id,
                                                     const std::string& remote,
                                                     ck::Message& message) {
  try {
    if (auto* st = std::get_if<ck::StatusReport>(&message)) {
      if (st->kma_id != km_id) {
        return ck::error(ck::errc::kBadRequest,
                         "kma_id '" + st->kma_id + "' is not this connection's KM");
      }
      const auto reports = link_reports(*st);
      svc.facade().report([&](CoreChanges& c) { c.apply_status(km_id, reports); });
    } else if (auto* al = std::get_if<ck::Alarm>(&message)) {
      if (al->kma_id != km_id) {
        return ck::error(ck::errc::kBadRequest,
                         "kma_id '" + al->kma_id + "' is not this connection's KM");
      }
      // The alarm table first, then the engine (the alarms it raises or clears come after): the
      // facade forwards the network events once the report is applied.
      svc.facade().report([&](CoreChanges& c) {
        c.apply_alarm(km_id, al->alarm, al->link_id.value_or(""), al->severity,
                      al->value.value_or(0.0));
        const std::string resource = al->link_id.value_or(km_id);
        if (al->severity == "cleared") {
          rerouting->clear_alarm(al->alarm, resource);
        } else if (al->alarm == "link_up") {
          rerouting->clear_alarm(controller::alarm_type::kLinkDown, resource);
        } else {
          controller::AlarmSpec spec;
          spec.type = al->alarm;
          spec.resource = resource;
          spec.km_id = km_id;
          spec.link_id = al->link_id.value_or("");
          spec.severity = controller::parse_severity(al->severity);
          spec.value = al->value.value_or(0.0);
          spec.text = al->text.value_or("");
          rerouting->raise_alarm(spec);
        }
        svc.log("ck: " + km_id + " alarm " + al->alarm + " " + al->severity +
                (al->link_id ? " on " + *al->link_id : ""));
      });
    } else if (auto* au = std::get_if<ck::ApplicationsUpdate>(&message)) {
      if (au->kma_id != km_id) {
        return ck::error(ck::errc::kBadRequest,
                         "kma_id '" + au->kma_id + "' is not this connection's KM");
      }
      const auto refused = svc.facade().report([&](CoreChanges& c) {
        return c.update_applications(km_id, au->attached.value_or(std::vector<std::string>{}),
                                     au->detached.value_or(std::vector<std::string>{}));
      });
      if (!refused.empty()) {
        refuse_claims(refused, "applications_update", remote);
        std::string names;
        for (const auto& c : refused) names += (names.empty() ? "" : ", ") + c.sae_id;
        return ck::error(ck::errc::kUnknownApplication,
                         "not served by this KM in the topology: " + names);
      }
    }
  } catch (const std::exception& e) {
    return failure(e);
  }
  return std::nullopt;
}

// ---- ControllerService ----------------------------------------------------------------------

namespace {
std::int64_t unix_ms(SysTime t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
}

void check_interval(std::chrono::milliseconds v, std::string_view name) {
  if (v.count() < 1 || v.count() > ck::kMaxIntervalMs) {
    throw InvalidArgument(std::string(name) + " must be between 1 and " +
                          std::to_string(ck::kMaxIntervalMs) + " ms");
  }
}
}  // namespace

ControllerService::ControllerService(ServiceOptions options)
    : options_(std::move(options)),
      clock_(std::make_shared<MonotonicWallClock>(
          options_.clock ? options_.clock : std::make_shared<SystemClock>())),
      network_(*clock_),
      alarms_(*clock_),
      impl_(std::make_unique<Impl>(*this)),
      facade_(std::make_unique<ControllerFacade>(*this)) {
  if (!is_valid_id(options_.controller_id)) {
    throw InvalidArgument("controller id '" + options_.controller_id +
                          "' must be 1..128 characters of [A-Za-z0-9._:-]");
  }
  if (options_.threads < 1 || options_.threads > 256) {
    throw InvalidArgument("threads must be between 1 and 256");
  }
  if (options_.store_threads < 1 || options_.store_threads > 64) {
    throw InvalidArgument("store threads must be between 1 and 64");
  }
  if (options_.route_alternatives < 1 || options_.route_alternatives > 16) {
    throw InvalidArgument("route alternatives must be between 1 and 16");
  }
  check_interval(options_.heartbeat_interval, "heartbeat interval");
  check_interval(options_.status_interval, "status interval");
  check_interval(options_.request_timeout, "request timeout");
  check_interval(options_.read_timeout, "read timeout");
  check_interval(options_.handshake_timeout, "handshake timeout");
  check_interval(options_.register_timeout, "register timeout");
  if (options_.max_unregistered < 1) throw InvalidArgument("max unregistered must be at least 1");
  impl_->unregistered = std::make_unique<qkdn::net::ConnectionGate>(
      options_.max_unregistered, qkdn::net::ConnectionGate::WhenFull::kEvictOldest,
      options_.unregistered_min_age);
  controller::validate_topology(options_.topology);
  if (options_.policy) controller::validate_policy(*options_.policy);
  if (!options_.insecure_ck) {
    if (options_.tls.ca_file.empty() || options_.tls.cert_file.empty() ||
        options_.tls.key_file.empty()) {
      throw InvalidArgument(
          "Ck uses mutual TLS: give --tls-ca, --tls-cert and --tls-key (or --insecure-ck)");
    }
    impl_->tls = southbound::make_tls_context(options_.tls, true);
  }
  // No io thread runs yet: the core may be touched from here.
  if (options_.epoch_override) {
    if (*options_.epoch_override < 0) throw InvalidArgument("controller epoch must be >= 0");
    epoch_ = *options_.epoch_override;
  }
  if (store_configured()) {
    impl_->open_store();  // takes the epoch from the store's sequence (unless overridden)
  } else {
    if (!options_.epoch_override) {
      epoch_ = options_.epoch_file.empty()
                   ? unix_ms(clock_->wall_now())
                   : next_epoch_from_file(options_.epoch_file, unix_ms(clock_->wall_now()));
    }
    network_.apply_topology(options_.topology);
    auto& rerouting = *impl_->rerouting;
    rerouting.apply(impl_->engine.on_snapshot(rerouting.fresh_snapshot()));
    if (options_.policy) rerouting.apply(impl_->engine.set_policy(*options_.policy));
  }
  log("ck: controller epoch " + std::to_string(epoch_) +
      (options_.epoch_override       ? " (leadership term)"
       : store_configured()          ? " (store sequence)"
       : options_.epoch_file.empty() ? " (wall clock)"
                                     : " (epoch file)"));
}

ControllerService::~ControllerService() { stop(); }

void ControllerService::set_command_handler(std::shared_ptr<CommandHandler> handler) {
  impl_->handler = std::move(handler);
}

net::ip::tcp::endpoint ControllerService::start() {
  if (impl_->started) throw Conflict("service already started");
  boost::system::error_code ec;
  auto address = net::ip::make_address(options_.listen_host, ec);
  if (ec) {
    tcp::resolver resolver(impl_->ioc);
    auto results = resolver.resolve(options_.listen_host, "", ec);
    if (ec || results.empty()) {
      throw InvalidArgument("cannot resolve Ck listen host '" + options_.listen_host + "'");
    }
    address = results.begin()->endpoint().address();
  }
  const tcp::endpoint want(address, options_.listen_port);
  const std::string where = options_.listen_host + ":" + std::to_string(options_.listen_port);
  southbound::FramedServerOptions so;
  so.name = "ck";
  so.unregistered = impl_->unregistered.get();
  so.registrations = impl_->registrations;
  so.registration_timeout = options_.register_timeout;
  so.max_held_registrations = options_.max_held_registrations;
  // A held KM sends nothing while it waits for its answer: the hold must end (busy, with a
  // retry hint) well before the channel's idle timeout (3 heartbeat periods) would close it.
  so.registration_hold = std::min(options_.register_timeout, 2 * options_.heartbeat_interval);
  so.frame_rate = southbound::FrameRate{options_.max_frames_per_s, options_.frame_burst,
                                        options_.max_refused_per_s};
  impl_->server = std::make_unique<southbound::FramedServer>(impl_->ioc.get_executor(),
                                                             std::move(so), impl_->server_hooks());
  auto bound = impl_->server->listen(want, ec);
  if (ec) throw InvalidArgument("cannot listen for Ck on " + where + ": " + ec.message());
  port_ = bound.port();

  impl_->work.emplace(impl_->ioc.get_executor());
  impl_->server->start();
  net::post(impl_->core, [this] { impl_->start_timers(); });
  if (impl_->pool) {
    impl_->writer_running = true;
    net::co_spawn(impl_->core, impl_->writer_loop(), impl_->completion("store writer"));
  }
  for (int i = 0; i < options_.threads; ++i) {
    impl_->threads.emplace_back([this] {
      for (;;) {
        try {
          impl_->ioc.run();
          return;
        } catch (const std::exception& e) {
          // A handler threw past its coroutine: log it and keep serving.
          log(std::string("service thread: ") + e.what());
        }
      }
    });
  }
  impl_->started = true;
  return bound;
}

void ControllerService::stand_down() {
  if (!impl_->started || impl_->stopped) return;
  // The server stops accepting and closes every Ck session at once; stop() later waits for the
  // same drain (FramedServer::stop runs once).
  net::post(impl_->core, [this] { impl_->stop_server(); });
}

std::shared_future<void> ControllerService::Impl::stop_server() {
  if (!server_stopped) {
    auto drained = std::make_shared<std::promise<void>>();
    server_stopped = drained->get_future().share();
    server->stop([drained] { drained->set_value(); });
  }
  return *server_stopped;
}

void ControllerService::raise_alarm_soon(controller::AlarmSpec spec) {
  net::post(impl_->core, [this, spec = std::move(spec)] { impl_->rerouting->raise_alarm(spec); });
}

void ControllerService::stop() {
  if (!impl_->started || impl_->stopped) return;
  impl_->stopped = true;
  // The server stops accepting, closes every session and reports once each has ended (its
  // session_ended ran on the core): the core refuses registrations from here on.
  auto stopped = std::make_shared<std::promise<std::shared_future<void>>>();
  auto stopping = stopped->get_future();
  net::post(impl_->core, [this, stopped] {
    impl_->stopping = true;
    stopped->set_value(impl_->stop_server());
  });
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  if (stopping.wait_until(deadline) != std::future_status::ready ||
      stopping.get().wait_until(deadline) != std::future_status::ready) {
    log("ck: sessions did not drain within 10 s; stopping anyway");
    impl_->ioc.stop();
  }
  // Then the timers, and the writer once every queued write is in the store (bounded).
  std::promise<void> written;
  auto writes_done = written.get_future();
  net::post(impl_->core, [this, &written] {
    impl_->stop_timers();
    impl_->writer_stop = true;
    if (!impl_->writer_running) {
      written.set_value();
      return;
    }
    impl_->writes_drained = &written;
    impl_->wake_writer();
  });
  if (writes_done.wait_for(std::chrono::seconds(15)) != std::future_status::ready) {
    log("store: queued writes did not drain within 15 s; stopping anyway");
    net::post(impl_->core, [this] { impl_->writes_drained = nullptr; });
    impl_->ioc.stop();
  }
  impl_->work.reset();
  for (auto& t : impl_->threads) t.join();
  impl_->threads.clear();
  impl_->close_store();
  log("ck: stopped");
}

std::shared_ptr<const void> ControllerService::admit_core_request() {
  struct Held {
    std::shared_ptr<qkdn::net::AdmissionQueue> q;
    qkdn::net::AdmissionQueue::Ticket t;
  };
  auto h = std::make_shared<Held>();
  h->q = impl_->api_requests;
  h->t = h->q->try_enter();
  if (!h->t) {
    impl_->count_refused("api_busy");
    throw Unavailable("controller busy: " + std::to_string(h->q->depth()) +
                      " requests wait for the core; retry later");
  }
  return h;
}

Core ControllerService::core_refs() {
  return Core{network_,      alarms_,       impl_->engine, impl_->sessions,
              impl_->ledger, impl_->relays, *clock_,       *impl_->random};
}

void ControllerService::after_network_events(const std::vector<controller::NetworkEvent>& events) {
  // PUT /thresholds announces itself as an admin change of every link: store the network-wide
  // thresholds then too (one idempotent single-row upsert, retried through an outage by the
  // writer), so that they survive a restart.
  const bool admin_changed =
      std::any_of(events.begin(), events.end(), [](const controller::NetworkEvent& e) {
        return e.kind == controller::NetworkEvent::Kind::kAdminChanged;
      });
  if (admin_changed && store_configured()) {
    WriteGroup g;
    g.ops.push_back({StoreWrite::Kind::kUpsert, "network thresholds",
                     [t = network_.thresholds()](controller::Store& s) { s.save_thresholds(t); }});
    impl_->submit_writes(std::move(g));
  }
  impl_->rerouting->network_changed(events);
}

void ControllerService::apply_rerouting_output(const controller::ReroutingOutput& output) {
  impl_->rerouting->apply(output);
}

Metrics& ControllerService::metrics() { return *impl_->metrics; }

net::io_context& ControllerService::io_context() { return impl_->ioc; }

void ControllerService::Impl::publish_snapshot(
    std::shared_ptr<const controller::TopologySnapshot> s) {
  std::lock_guard lock(published_mu);
  published = std::move(s);
}

std::shared_ptr<const controller::TopologySnapshot> ControllerService::published_snapshot() const {
  std::lock_guard lock(impl_->published_mu);
  return impl_->published;
}

std::uint64_t ControllerService::network_structure_version() const {
  return network_.structure_version();
}

net::awaitable<std::string> ControllerService::metrics_text() {
  auto op = on_core([this](Core& c) {
    GaugeInput in;
    in.network_text = render_network_gauges(c.network);
    in.sessions_active = c.sessions.active_count();
    for (std::size_t i = 0; i < controller::kSeverityCount; ++i) {
      in.alarms_active[i] = c.alarms.active_count(static_cast<controller::Severity>(i));
    }
    controller::AlarmFilter active;
    active.active_only = true;
    for (const auto& a : c.alarms.list(active)) ++in.alarms_active_by_type[a.type];
    in.ck_connections = impl_->counters.connections_active.load();
    in.store_up = store_up();
    in.admission_depth["registration"] = impl_->registrations->depth();
    in.admission_depth["status"] = impl_->statuses_waiting.load();
    in.admission_depth["command"] = impl_->commands->depth();
    return in;
  });
  auto gauges = co_await std::move(op);
  impl_->metrics->update_gauges(std::move(gauges));
  auto text = impl_->metrics->serialize();
  if (options_.leadership) {
    text += options_.leadership->metrics_text();
  } else {
    LeadershipStatus single;  // a single controller leads alone, in the epoch of this start
    single.leader = true;
    single.epoch = epoch_;
    text += Leadership::metrics_text(single);
  }
  co_return text;
}

StateSnapshot ControllerService::snapshot_state() {
  return net::co_spawn(impl_->core, async_snapshot_state(), net::use_future).get();
}

net::awaitable<StateSnapshot> ControllerService::async_snapshot_state() {
  auto op = [](ControllerService* self) -> net::awaitable<StateSnapshot> {
    StateSnapshot out;
    for (const auto& [id, km] : self->network_.kms()) out.kms.push_back(km);
    for (const auto& [id, link] : self->network_.links()) out.links.push_back(link);
    out.alarms = self->alarms_.list();
    out.sessions = self->impl_->registered.size();
    co_return out;
  }(this);
  auto hop = qkdn::net::run_on(impl_->core, std::move(op));
  co_return co_await std::move(hop);
}

CountersSnapshot ControllerService::counters() const {
  CountersSnapshot out;
  const auto& c = impl_->counters;
  for (std::size_t i = 0; i < CkCounters::kCodes; ++i) {
    if (auto n = c.inbound[i].load())
      out.inbound[command_label(static_cast<std::uint16_t>(0x1400 | i))] = n;
    if (auto n = c.outbound[i].load())
      out.outbound[command_label(static_cast<std::uint16_t>(0x4100 | i))] = n;
  }
  if (auto n = c.inbound_other.load()) out.inbound["other"] = n;
  {
    std::lock_guard lock(impl_->errors_mu);
    for (const auto& [k, v] : impl_->protocol_errors) out.protocol_errors[k] = v;
  }
  out.connections_accepted = c.connections_accepted.load();
  out.connections_refused = c.connections_refused.load();
  out.connections_active = c.connections_active.load();
  out.registrations = c.registrations.load();
  out.km_errors_received = c.km_errors_received.load();
  out.handler_failures = c.handler_failures.load();
  out.max_connection_buffer = c.max_connection_buffer.load();
  {
    std::lock_guard lock(impl_->refused_mu);
    for (const auto& [k, v] : impl_->refusal_counts) out.refused[k] = v;
  }
  out.pending_registrations = impl_->registrations->depth();
  if (impl_->server) {
    out.held_registrations = impl_->server->held();
    out.held_registrations_total = impl_->server->held_total();
  }
  out.pending_statuses = impl_->statuses_waiting.load();
  out.status_passes = impl_->status_passes.load();
  out.pending_commands = impl_->commands->depth();
  out.pending_high_water = impl_->registrations->high_water() + impl_->commands->high_water();
  return out;
}

net::any_io_executor ControllerService::core_executor() const { return impl_->core; }

std::shared_ptr<southbound::CkChannel> ControllerService::channel_of(
    const std::string& km_id) const {
  auto it = impl_->registered.find(km_id);
  return it == impl_->registered.end() ? nullptr : it->second.channel;
}

void ControllerService::log(std::string_view line) {
  // The level from a marker after the component: existing call sites say "api: WARNING: ...".
  auto level = base::LogLevel::kInfo;
  const auto message = base::split_component(line, "main").message;
  if (message.starts_with("WARNING: ")) level = base::LogLevel::kWarn;
  if (message.starts_with("ERROR: ")) level = base::LogLevel::kError;
  log(level, line);
}

void ControllerService::log(base::LogLevel level, std::string_view line) {
  if (options_.log) {
    std::lock_guard lock(impl_->log_mu);
    options_.log(line);
    return;
  }
  base::log_prefixed(level, line);  // serialized by the logger itself
}

}  // namespace qkdn::service
