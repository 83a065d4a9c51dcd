// The Cxi node (cxi_node.hpp, docs/cxi.md clauses 1, 5 and 6).
#include "qkdn/interworking/cxi_node.hpp"

#include <array>
#include <atomic>
#include <deque>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/experimental/channel.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include "qkdn/base/log.hpp"
#include "qkdn/controller/error.hpp"
#include "qkdn/net/run_on.hpp"

namespace qkdn::interworking {

namespace asio = boost::asio;
using asio::ip::tcp;
using namespace asio::experimental::awaitable_operators;
using Strand = asio::strand<asio::any_io_executor>;
using Stream = asio::ssl::stream<tcp::socket>;
constexpr auto kTuple = asio::as_tuple(asio::use_awaitable);

namespace {

void log_info(const std::string& m) { qkdn::base::log(qkdn::base::LogLevel::kInfo, "cxi", m); }
void log_warn(const std::string& m) { qkdn::base::log(qkdn::base::LogLevel::kWarn, "cxi", m); }

// Sleeps on the current executor (false when cancelled).
asio::awaitable<bool> sleep_for(std::chrono::milliseconds d) {
  asio::steady_timer t(co_await asio::this_coro::executor, d);
  auto op = t.async_wait(kTuple);
  auto [ec] = co_await std::move(op);
  co_return !ec;
}

}  // namespace

// One Cxi session (a strand of its own).
struct Session : std::enable_shared_from_this<Session> {
  Session(Stream s, Strand st) : stream(std::move(s)), strand(std::move(st)), wake(strand) {
    wake.expires_at(asio::steady_timer::time_point::max());
  }
  Stream stream;
  Strand strand;
  asio::steady_timer wake;  ///< wakes the writer (cancelled when the queue gains a frame)
  std::deque<std::string> queue;
  bool closed = false;
  std::string qkdn_id;  ///< set once hello was accepted

  // Session strand only.
  void push(std::string frame_bytes) {
    if (closed) return;
    if (queue.size() >= 256) {  // a peer that does not read: end the session
      close();
      return;
    }
    queue.push_back(std::move(frame_bytes));
    wake.cancel();
  }
  void close() {
    if (closed) return;
    closed = true;
    boost::system::error_code ec;
    stream.lowest_layer().shutdown(tcp::socket::shutdown_both, ec);
    stream.lowest_layer().close(ec);
    wake.cancel();
  }
  // From any thread.
  void post_push(std::string bytes) {
    asio::post(strand, [self = shared_from_this(), b = std::move(bytes)]() mutable {
      self->push(std::move(b));
    });
  }
  void post_close() {
    asio::post(strand, [self = shared_from_this()] { self->close(); });
  }
};

struct CxiNode::Impl {
  Impl(const asio::any_io_executor& ex, controller::TopologyDoc local, CxiNodeOptions o)
      : executor(ex),
        strand(asio::make_strand(ex)),
        options(std::move(o)),
        table(std::move(local), options.heartbeat),
        acceptor(strand) {}

  asio::any_io_executor executor;
  Strand strand;  ///< the node's strand: table, sessions, pending requests
  CxiNodeOptions options;
  PeerTable table;
  tcp::acceptor acceptor;
  std::unique_ptr<asio::ssl::context> server_ctx;
  std::unique_ptr<asio::ssl::context> client_ctx;
  std::map<std::string, std::shared_ptr<Session>> sessions;  ///< by QKDN ID (node strand)
  std::set<std::string> dialing;                             ///< QKDN IDs (node strand)
  struct Pending {
    std::string qkdn_id;
    std::shared_ptr<asio::steady_timer> done;  ///< cancelled when the answer arrives
    std::optional<RouteAnswer> answer;
  };
  std::map<std::string, std::shared_ptr<Pending>> pending;  ///< by request ID (node strand)
  struct PendingSetup {
    std::string qkdn_id;
    std::shared_ptr<asio::steady_timer> done;  ///< cancelled when the answer arrives
    std::optional<RelaySetupAnswer> answer;
  };
  std::map<std::string, std::shared_ptr<PendingSetup>> pending_setup;  ///< by relay ID
  std::uint64_t next_request = 1;
  bool stopped = false;
  /// Mxi (node strand): what this node counts per peer, and the last summary of each peer.
  struct PeerCounts {
    std::int64_t answered = 0, accepted = 0, refused = 0, faults_sent = 0, faults_received = 0;
    std::int64_t summary_seq = 0;  ///< of the summaries we send in the current session
    std::chrono::steady_clock::time_point next_summary{};
  };
  std::map<std::string, PeerCounts> counts;  ///< by declared peer QKDN ID
  struct Received {
    Summary summary;
    std::int64_t wall_ms = 0;
    std::chrono::steady_clock::time_point at{};
    std::int64_t session = 0;  ///< sessions_opened of the peer when received
  };
  std::map<std::string, Received> summaries;  ///< by declared peer QKDN ID

  std::atomic<std::shared_ptr<const std::map<std::string, PeerSnapshot>>> published{
      std::make_shared<const std::map<std::string, PeerSnapshot>>()};

  // Node strand: publishes what the API shows.
  void publish() {
    auto out = std::make_shared<std::map<std::string, PeerSnapshot>>();
    const auto steady_now = std::chrono::steady_clock::now();
    const auto wall_now = std::chrono::system_clock::now();
    for (const auto& p : table.local().peers) {
      PeerSnapshot snap;
      if (const auto* st = table.state(p.qkdn_id)) {
        snap.up = st->up;
        snap.sessions_opened = st->sessions_opened;
        if (st->up) {
          const auto heard = wall_now - (steady_now - st->last_heard);
          snap.last_heard_ms =
              std::chrono::duration_cast<std::chrono::milliseconds>(heard.time_since_epoch())
                  .count();
        }
        std::set<std::string> saes;
        for (const auto& e : st->reachable) saes.insert(e.sae_id);
        snap.reachable_saes = saes.size();
      }
      if (auto r = summaries.find(p.qkdn_id); r != summaries.end()) {
        snap.summary = r->second.summary;
        snap.summary_received_ms = r->second.wall_ms;
      }
      for (const auto& l : table.local().inter_qkdn_links) {
        if (l.peer_qkdn_id == p.qkdn_id) snap.links.emplace_back(l.link_id, table.link_usable(l));
      }
      (*out)[p.qkdn_id] = std::move(snap);
    }
    published.store(std::move(out));
  }

  std::atomic<std::uint64_t> sessions_opened{0}, sessions_refused{0}, messages_in{0},
      messages_out{0}, bad_messages{0}, answered{0}, faults{0}, summaries_sent{0},
      summaries_received{0}, summaries_refused{0};

  // Node strand: the Mxi summary for one peer (what this node counted of its dealings with it).
  Summary summary_for(const std::string& qkdn_id) {
    auto& c = counts[qkdn_id];
    Summary m;
    m.seq = ++c.summary_seq;
    m.period_ms = options.summary_period.count();
    for (const auto& l : table.local().inter_qkdn_links) {
      if (l.peer_qkdn_id != qkdn_id) continue;
      ++m.performance.links_total;
      if (table.link_usable(l)) ++m.performance.links_usable;
    }
    m.performance.route_requests_answered = c.answered;
    m.accounting.route_requests_accepted = c.accepted;
    m.accounting.route_requests_refused = c.refused;
    m.accounting.faults_sent = c.faults_sent;
    const auto cap = [](std::uint64_t v) {
      return static_cast<std::int64_t>(std::min<std::uint64_t>(v, kMaxSummaryCounter));
    };
    m.security.sessions_refused = cap(sessions_refused.load());
    m.security.bad_messages = cap(bad_messages.load());
    m.security.faults_received = c.faults_received;
    return m;
  }

  // Node strand: a summary from `qkdn_id` (valid by the codec). Kept unless it comes sooner than
  // half the period it declares after the previous one, or does not advance seq in a session.
  void on_summary(const std::string& qkdn_id, const Summary& m, std::int64_t session) {
    const auto now = std::chrono::steady_clock::now();
    if (auto it = summaries.find(qkdn_id); it != summaries.end()) {
      const auto& prev = it->second;
      const bool same_session = prev.session == session;
      if ((same_session && m.seq <= prev.summary.seq) ||
          (same_session && now - prev.at < std::chrono::milliseconds(m.period_ms / 2))) {
        ++summaries_refused;
        return;
      }
    }
    ++summaries_received;
    const auto wall = std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
    summaries[qkdn_id] = Received{m, wall, now, session};
    publish();
  }

  // Node strand: sends each peer that is up its summary when the period is over.
  // (`only`: at once to that peer, its session just opened.)
  void send_summaries(const std::string& only = {}) {
    const auto now = std::chrono::steady_clock::now();
    for (const auto& [id, session] : sessions) {
      if (!only.empty() && id != only) continue;
      auto& c = counts[id];
      if (only.empty() && now < c.next_summary) continue;
      c.next_summary = now + options.summary_period;
      send(id, summary_for(id));
      ++summaries_sent;
    }
  }

  void emit(const std::vector<PeerEvent>& events) {
    for (const auto& e : events) {
      if (e.kind == PeerEvent::Kind::kPeerDown) {
        if (auto it = sessions.find(e.qkdn_id); it != sessions.end()) {
          it->second->post_close();
          sessions.erase(it);
        }
        for (auto& [id, p] : pending) {
          if (p->qkdn_id == e.qkdn_id) p->done->cancel();
        }
        for (auto& [id, p] : pending_setup) {
          if (p->qkdn_id == e.qkdn_id) p->done->cancel();
        }
      }
      if (options.on_event) options.on_event(e);
    }
    if (!events.empty()) publish();
  }

  void send(const std::string& qkdn_id, const Message& m) {
    auto it = sessions.find(qkdn_id);
    if (it == sessions.end()) return;
    ++messages_out;
    it->second->post_push(frame(m));
  }
};

// ---- session coroutines ---------------------------------------------------------------------

namespace {

// Reads one frame within `timeout`; nullopt on timeout, EOF or error. Throws BadCxiMessage for
// a bad length or body.
asio::awaitable<std::optional<Message>> read_message(Session& s,
                                                     std::chrono::milliseconds timeout) {
  asio::steady_timer timer(s.strand, timeout);
  std::array<unsigned char, 4> header{};
  auto read_header = asio::async_read(s.stream, asio::buffer(header), kTuple);
  auto expire = timer.async_wait(kTuple);
  auto first = co_await (std::move(read_header) || std::move(expire));
  if (first.index() == 1) co_return std::nullopt;
  if (std::get<0>(std::get<0>(first))) co_return std::nullopt;
  const std::size_t n = frame_length(header.data());
  std::string body(n, '\0');
  auto read_body = asio::async_read(s.stream, asio::buffer(body), kTuple);
  auto expire2 = timer.async_wait(kTuple);
  auto second = co_await (std::move(read_body) || std::move(expire2));
  if (second.index() == 1) co_return std::nullopt;
  if (std::get<0>(std::get<0>(second))) co_return std::nullopt;
  co_return decode(body);
}

asio::awaitable<void> writer(std::shared_ptr<Session> s) {
  while (!s->closed) {
    if (s->queue.empty()) {
      s->wake.expires_at(asio::steady_timer::time_point::max());
      auto op = s->wake.async_wait(kTuple);
      co_await std::move(op);
      continue;
    }
    std::string bytes = std::move(s->queue.front());
    s->queue.pop_front();
    auto op = asio::async_write(s->stream, asio::buffer(bytes), kTuple);
    auto [ec, n] = co_await std::move(op);
    if (ec) {
      s->close();
      co_return;
    }
  }
}

asio::awaitable<void> heartbeats(std::shared_ptr<Session> s, std::chrono::milliseconds period,
                                 std::atomic<std::uint64_t>& messages_out) {
  std::int64_t seq = 0;
  while (!s->closed) {
    ++messages_out;
    s->push(frame(Heartbeat{++seq}));
    auto op = sleep_for(period);
    if (!co_await std::move(op)) co_return;
  }
}

}  // namespace

CxiNode::CxiNode(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
CxiNode::~CxiNode() = default;

std::shared_ptr<CxiNode> CxiNode::create(const asio::any_io_executor& ex,
                                         controller::TopologyDoc local, CxiNodeOptions options) {
  if (options.heartbeat < std::chrono::milliseconds{100} ||
      options.heartbeat > std::chrono::milliseconds{60'000}) {
    throw InvalidArgument("Cxi heartbeat must be within 100..60000 ms");
  }
  if (local.qkdn_id.empty()) throw InvalidArgument("Cxi needs this network's QKDN ID");
  qkdn::net::TlsSettings server;
  server.server = true;
  server.cert_label = "--cxi-cert";
  server.key_label = "--cxi-key";
  server.ca_label = "--cxi-ca";
  qkdn::net::TlsSettings client = server;
  client.server = false;
  if (options.summary_period < std::chrono::milliseconds(kMinSummaryPeriodMs) ||
      options.summary_period > std::chrono::milliseconds(kMaxSummaryPeriodMs)) {
    throw InvalidArgument("Cxi summary period must be " + std::to_string(kMinSummaryPeriodMs) +
                          ".." + std::to_string(kMaxSummaryPeriodMs) + " ms");
  }
  auto impl = std::make_unique<Impl>(ex, std::move(local), std::move(options));
  impl->server_ctx = qkdn::net::make_tls_context(impl->options.tls, server);
  impl->client_ctx = qkdn::net::make_tls_context(impl->options.tls, client);
  return std::shared_ptr<CxiNode>(new CxiNode(std::move(impl)));
}

CxiCounters CxiNode::counters() const {
  const Impl& i = *impl_;
  CxiCounters c;
  c.sessions_opened = i.sessions_opened.load();
  c.sessions_refused = i.sessions_refused.load();
  c.messages_in = i.messages_in.load();
  c.messages_out = i.messages_out.load();
  c.bad_messages = i.bad_messages.load();
  c.route_requests_answered = i.answered.load();
  c.faults_received = i.faults.load();
  c.summaries_sent = i.summaries_sent.load();
  c.summaries_received = i.summaries_received.load();
  c.summaries_refused = i.summaries_refused.load();
  return c;
}

std::optional<PeerSnapshot> CxiNode::snapshot(const std::string& qkdn_id) const {
  const auto all = impl_->published.load();
  const auto it = all->find(qkdn_id);
  if (it == all->end()) return std::nullopt;
  return it->second;
}

asio::awaitable<void> CxiNode::run_on_strand(std::function<void(PeerTable&)> f) {
  auto self = shared_from_this();
  auto work = [](std::shared_ptr<CxiNode> n,
                 std::function<void(PeerTable&)> g) -> asio::awaitable<void> {
    g(n->impl_->table);
    co_return;
  };
  auto op = qkdn::net::run_on(impl_->strand, work(self, std::move(f)));
  co_await std::move(op);
}

namespace {

// The whole life of one session: handshake, hello, then reader || writer || heartbeats.
asio::awaitable<void> run_session(std::shared_ptr<CxiNode> node, CxiNode::Impl& impl,
                                  std::shared_ptr<Session> s, bool client,
                                  std::string expected_qkdn) {
  const auto& o = impl.options;
  // 1. TLS with a deadline; the peer's identity is the controller ID its certificate carries.
  {
    asio::steady_timer timer(s->strand, o.handshake_timeout);
    auto hs = s->stream.async_handshake(
        client ? asio::ssl::stream_base::client : asio::ssl::stream_base::server, kTuple);
    auto expire = timer.async_wait(kTuple);
    auto r = co_await (std::move(hs) || std::move(expire));
    if (r.index() == 1 || std::get<0>(std::get<0>(r))) {
      ++impl.sessions_refused;
      s->close();
      co_return;
    }
  }
  const std::string identity =
      qkdn::net::peer_identity(s->stream.native_handle(), qkdn::net::PeerRole::kController);
  // 2. Hello: the dialling side sends first; the accepting side answers with its own only once
  // it accepted the caller's, so a refused caller never sees the session up (docs/cxi.md 5.1).
  const Hello ours{kCxiVersion, impl.table.local().qkdn_id, o.controller_id,
                   static_cast<std::int64_t>(o.heartbeat.count())};
  auto send_hello = [](Session& ss, Hello h) -> asio::awaitable<bool> {
    auto bytes = frame(h);
    auto w = asio::async_write(ss.stream, asio::buffer(bytes), kTuple);
    auto [ec, n] = co_await std::move(w);
    co_return !ec;
  };
  if (client) {
    auto op = send_hello(*s, ours);
    if (!co_await std::move(op)) {
      s->close();
      co_return;
    }
  }
  std::optional<Message> first;
  try {
    auto op = read_message(*s, o.handshake_timeout);
    first = co_await std::move(op);
  } catch (const BadCxiMessage& e) {
    ++impl.bad_messages;
    log_warn("Cxi session from '" + identity + "': " + e.what());
  }
  const Hello* hello = first ? std::get_if<Hello>(&*first) : nullptr;
  if (hello == nullptr) {
    ++impl.sessions_refused;
    s->close();
    co_return;
  }
  const Hello theirs = *hello;
  std::vector<PeerEvent> events;
  auto accept_op = node->with_table([&](PeerTable& t) {
    if (impl.stopped) return std::optional<std::string>("shutting down");
    if (!expected_qkdn.empty() && expected_qkdn != theirs.qkdn_id) {
      return std::optional<std::string>("dialled QKDN '" + expected_qkdn + "', the peer says '" +
                                        theirs.qkdn_id + "'");
    }
    auto r = t.on_hello(identity, theirs, std::chrono::steady_clock::now(), events);
    if (!r) {
      impl.sessions[theirs.qkdn_id] = s;
      impl.emit(events);
      impl.send(theirs.qkdn_id, t.announce_for(theirs.qkdn_id));
      impl.send(theirs.qkdn_id, t.link_status_for(theirs.qkdn_id));
      impl.counts[theirs.qkdn_id].summary_seq = 0;  // seq starts again in each session
      impl.send_summaries(theirs.qkdn_id);
    }
    return r;
  });
  const auto refusal = co_await std::move(accept_op);
  if (refusal) {
    ++impl.sessions_refused;
    log_warn("Cxi session refused: " + *refusal);
    auto bytes = frame(ErrorMsg{"identity", *refusal});
    auto w = asio::async_write(s->stream, asio::buffer(bytes), kTuple);
    co_await std::move(w);
    s->close();
    co_return;
  }
  s->qkdn_id = theirs.qkdn_id;
  const std::int64_t peer_heartbeat = theirs.heartbeat_ms;
  if (!client) {
    // Written before the writer starts: the hello precedes the queued announcements.
    auto op = send_hello(*s, ours);
    if (!co_await std::move(op)) s->close();
  }
  ++impl.sessions_opened;
  log_info("Cxi session up with QKDN '" + s->qkdn_id + "' (controller '" + identity + "')");

  // 3. Reader: every read within one heartbeat period; heartbeats every third of the shorter
  // period of the two sides.
  const auto period = std::min(o.heartbeat, std::chrono::milliseconds{peer_heartbeat});
  auto reader = [](std::shared_ptr<CxiNode> n, CxiNode::Impl& im,
                   std::shared_ptr<Session> ss) -> asio::awaitable<void> {
    std::string why = "connection closed";
    while (!ss->closed) {
      std::optional<Message> m;
      try {
        auto op = read_message(*ss, im.options.heartbeat);
        m = co_await std::move(op);
      } catch (const BadCxiMessage& e) {
        ++im.bad_messages;
        why = std::string("bad message: ") + e.what();
        ss->push(frame(ErrorMsg{"bad_message", why.substr(0, kMaxReasonLength)}));
        break;
      }
      if (!m) {
        why = "no message for one heartbeat period";
        break;
      }
      ++im.messages_in;
      if (const auto* err = std::get_if<ErrorMsg>(&*m)) {
        why = "peer error " + err->code + ": " + err->reason;
        break;
      }
      if (std::holds_alternative<Hello>(*m)) {
        why = "hello inside a session";
        ss->push(frame(ErrorMsg{"bad_message", why}));
        break;
      }
      const std::string peer = ss->qkdn_id;
      std::optional<std::string> violation;
      auto op = n->with_table([&, msg = std::move(*m)](PeerTable& t) {
        t.on_heard(peer, std::chrono::steady_clock::now());
        try {
          if (const auto* r = std::get_if<Reachability>(&msg)) {
            t.accept_reachability(peer, *r);
          } else if (const auto* l = std::get_if<LinkStatus>(&msg)) {
            t.accept_link_status(peer, *l);
          } else if (const auto* q = std::get_if<RouteRequest>(&msg)) {
            ++im.answered;
            auto answer = t.answer(peer, *q);
            auto& c = im.counts[peer];
            ++c.answered;
            ++(answer.accepted ? c.accepted : c.refused);
            im.send(peer, answer);
          } else if (const auto* a = std::get_if<RouteAnswer>(&msg)) {
            auto it = im.pending.find(a->request_id);
            if (it != im.pending.end() && it->second->qkdn_id == peer) {
              it->second->answer = *a;
              it->second->done->cancel();
            }
          } else if (const auto* rs = std::get_if<RelaySetup>(&msg)) {
            // The route part is PeerTable::answer's (policy, link, SAE ours); the controller
            // then decides on its own KMs.
            const RouteRequest as_route{rs->relay_id, rs->src_sae,        rs->dst_sae,
                                        rs->link_id,  rs->number_of_keys, 256};
            auto verdict = t.answer(peer, as_route);
            if (!verdict.accepted || !im.options.on_relay_setup) {
              RelaySetupAnswer no;
              no.relay_id = rs->relay_id;
              no.reason = verdict.accepted ? "relays not supported" : verdict.reason;
              im.send(peer, no);
            } else {
              im.options.on_relay_setup(
                  peer, *rs, [self = n, imp = &im, peer](RelaySetupAnswer ans) {
                    asio::post(imp->strand,
                               [self, imp, peer, ans = std::move(ans)] { imp->send(peer, ans); });
                  });
            }
          } else if (const auto* sa = std::get_if<RelaySetupAnswer>(&msg)) {
            auto it = im.pending_setup.find(sa->relay_id);
            if (it != im.pending_setup.end() && it->second->qkdn_id == peer) {
              it->second->answer = *sa;
              it->second->done->cancel();
            }
          } else if (const auto* re = std::get_if<RelayEnd>(&msg)) {
            if (im.options.on_relay_end) im.options.on_relay_end(peer, *re);
          } else if (const auto* sm = std::get_if<Summary>(&msg)) {
            const auto* st = t.state(peer);
            im.on_summary(peer, *sm,
                          st != nullptr ? static_cast<std::int64_t>(st->sessions_opened) : 0);
          } else if (const auto* f = std::get_if<Fault>(&msg)) {
            ++im.faults;
            ++im.counts[peer].faults_received;
            im.emit({{PeerEvent::Kind::kFaultReceived, peer,
                      "relay " + f->relay_id + " on link " + f->link_id + ": " + f->reason}});
          }
        } catch (const BadCxiMessage& e) {
          violation = e.what();
        }
      });
      co_await std::move(op);
      if (violation) {
        ++im.bad_messages;
        why = "policy: " + *violation;
        ss->push(frame(ErrorMsg{"policy", why.substr(0, kMaxReasonLength)}));
        break;
      }
    }
    // Let the writer flush a final error briefly, then end.
    auto op = sleep_for(std::chrono::milliseconds{50});
    co_await std::move(op);
    ss->close();
    const std::string peer = ss->qkdn_id;
    auto end = n->with_table([&](PeerTable& t) {
      auto it = im.sessions.find(peer);
      if (it == im.sessions.end() || it->second != ss) return;
      std::vector<PeerEvent> ev;
      t.on_session_end(peer, why, ev);
      im.emit(ev);
    });
    co_await std::move(end);
  };
  auto r = reader(node, impl, s);
  auto w = writer(s);
  auto h = heartbeats(s, period / 3, impl.messages_out);
  co_await (std::move(r) && std::move(w) && std::move(h));
}

void spawn_session(const std::shared_ptr<CxiNode>& node, CxiNode::Impl& impl,
                   std::shared_ptr<Session> s, bool client, std::string expected) {
  auto strand = s->strand;
  asio::co_spawn(strand, run_session(node, impl, std::move(s), client, std::move(expected)),
                 [](const std::exception_ptr& e) {
                   if (!e) return;
                   try {
                     std::rethrow_exception(e);
                   } catch (const std::exception& x) {
                     log_warn(std::string("Cxi session ended by an error: ") + x.what());
                   }
                 });
}

asio::awaitable<void> accept_loop(std::shared_ptr<CxiNode> node, CxiNode::Impl& impl) {
  while (!impl.stopped) {
    Strand st = asio::make_strand(impl.executor);
    auto op = impl.acceptor.async_accept(st, kTuple);
    auto [ec, socket] = co_await std::move(op);
    if (impl.stopped) co_return;
    if (ec) {
      auto p = sleep_for(std::chrono::milliseconds{100});
      co_await std::move(p);
      continue;
    }
    auto s = std::make_shared<Session>(Stream(std::move(socket), *impl.server_ctx), st);
    spawn_session(node, impl, std::move(s), false, {});
  }
}

asio::awaitable<void> dial_loop(std::shared_ptr<CxiNode> node, CxiNode::Impl& impl,
                                std::string qkdn_id) {
  while (!impl.stopped) {
    // The peer's current endpoint, unless a session is up (dialled or accepted).
    std::string endpoint;
    bool up = false;
    {
      auto op = node->with_table([&](PeerTable& t) {
        const auto* p = t.peer(qkdn_id);
        if (p != nullptr) endpoint = p->endpoint;
        up = impl.sessions.contains(qkdn_id);
        return p != nullptr;
      });
      if (!co_await std::move(op)) break;  // no longer a peer
    }
    if (!up && !endpoint.empty()) {
      const auto colon = endpoint.rfind(':');
      std::string host = endpoint.substr(0, colon);
      if (host.size() > 1 && host.front() == '[') host = host.substr(1, host.size() - 2);
      Strand st = asio::make_strand(impl.executor);
      tcp::resolver resolver(st);
      auto rop = resolver.async_resolve(host, endpoint.substr(colon + 1), kTuple);
      auto [rec, results] = co_await std::move(rop);
      if (!rec) {
        tcp::socket socket(st);
        asio::steady_timer timer(st, impl.options.handshake_timeout);
        auto cop = asio::async_connect(socket, results, kTuple);
        auto tw = timer.async_wait(kTuple);
        auto r = co_await (std::move(cop) || std::move(tw));
        if (r.index() == 0 && !std::get<0>(std::get<0>(r))) {
          auto s = std::make_shared<Session>(Stream(std::move(socket), *impl.client_ctx), st);
          // Runs to its end on its own strand; the next dial waits for it.
          auto done = asio::co_spawn(st, run_session(node, impl, s, true, qkdn_id),
                                     asio::as_tuple(asio::use_awaitable));
          co_await std::move(done);
        }
      }
    }
    auto p = sleep_for(impl.options.redial);
    if (!co_await std::move(p)) co_return;
  }
  auto op = node->with_table([&](PeerTable&) { impl.dialing.erase(qkdn_id); });
  co_await std::move(op);
}

asio::awaitable<void> liveness_loop(std::shared_ptr<CxiNode> node, CxiNode::Impl& impl) {
  const auto tick = std::max(std::chrono::milliseconds{10}, impl.options.heartbeat / 4);
  while (!impl.stopped) {
    auto p = sleep_for(tick);
    if (!co_await std::move(p)) co_return;
    auto op = node->with_table([&](PeerTable& t) {
      impl.emit(t.check_liveness(std::chrono::steady_clock::now()));
      impl.send_summaries();
      impl.publish();  // what the API shows is at most one tick old
    });
    co_await std::move(op);
  }
}

void log_root_error(const std::exception_ptr& e) {
  if (!e) return;
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& x) {
    log_warn(std::string("Cxi loop ended by an error: ") + x.what());
  }
}

// Starts a dialer for every declared peer that has none (node strand).
void start_dialers(const std::shared_ptr<CxiNode>& node, CxiNode::Impl& impl) {
  for (const auto& p : impl.table.local().peers) {
    if (p.endpoint.empty() || impl.dialing.contains(p.qkdn_id)) continue;
    impl.dialing.insert(p.qkdn_id);
    asio::co_spawn(impl.strand, dial_loop(node, impl, p.qkdn_id), log_root_error);
  }
}

}  // namespace

void CxiNode::start() {
  auto& i = *impl_;
  if (i.options.listen) {
    const auto addr = asio::ip::make_address(i.options.listen_host);
    tcp::endpoint ep(addr, i.options.listen_port);
    i.acceptor.open(ep.protocol());
    i.acceptor.set_option(tcp::acceptor::reuse_address(true));
    i.acceptor.bind(ep);
    i.acceptor.listen();
    port_ = i.acceptor.local_endpoint().port();
    asio::co_spawn(i.strand, accept_loop(shared_from_this(), i), log_root_error);
  }
  asio::post(i.strand, [self = shared_from_this()] { start_dialers(self, *self->impl_); });
  asio::co_spawn(i.strand, liveness_loop(shared_from_this(), i), log_root_error);
}

void CxiNode::stop() {
  asio::post(impl_->strand, [self = shared_from_this()] {
    auto& i = *self->impl_;
    i.stopped = true;
    boost::system::error_code ec;
    i.acceptor.close(ec);
    for (auto& [id, s] : i.sessions) s->post_close();
    i.sessions.clear();
    for (auto& [id, p] : i.pending) p->done->cancel();
    for (auto& [id, p] : i.pending_setup) p->done->cancel();
  });
}

asio::awaitable<std::optional<RouteAnswer>> CxiNode::request_route(std::string qkdn_id,
                                                                   RouteRequest request) {
  auto& i = *impl_;
  auto pending = std::make_shared<Impl::Pending>();
  pending->qkdn_id = qkdn_id;
  pending->done = std::make_shared<asio::steady_timer>(i.strand, i.options.request_timeout);
  bool sent = false;
  {
    auto op = with_table([&](PeerTable&) {
      if (!i.sessions.contains(qkdn_id)) return false;
      if (request.request_id.empty()) {
        request.request_id = i.table.local().qkdn_id + "-" + std::to_string(i.next_request++);
      }
      i.pending[request.request_id] = pending;
      i.send(qkdn_id, request);
      return true;
    });
    sent = co_await std::move(op);
  }
  if (!sent) co_return std::nullopt;
  // Waits on the node strand until the answer cancels the timer or the timeout fires.
  auto wait = [](std::shared_ptr<Impl::Pending> p) -> asio::awaitable<void> {
    auto op = p->done->async_wait(kTuple);
    co_await std::move(op);
  };
  auto hop = qkdn::net::run_on(i.strand, wait(pending));
  co_await std::move(hop);
  std::optional<RouteAnswer> out;
  auto op = with_table([&](PeerTable&) {
    i.pending.erase(request.request_id);
    out = pending->answer;
  });
  co_await std::move(op);
  co_return out;
}

asio::awaitable<std::optional<RelaySetupAnswer>> CxiNode::request_relay_setup(std::string qkdn_id,
                                                                              RelaySetup setup) {
  auto& i = *impl_;
  auto pending = std::make_shared<Impl::PendingSetup>();
  pending->qkdn_id = qkdn_id;
  pending->done = std::make_shared<asio::steady_timer>(i.strand, i.options.request_timeout);
  const std::string relay_id = setup.relay_id;
  bool sent = false;
  {
    auto op = with_table([&](PeerTable&) {
      if (!i.sessions.contains(qkdn_id) || i.pending_setup.contains(relay_id)) return false;
      i.pending_setup[relay_id] = pending;
      i.send(qkdn_id, setup);
      return true;
    });
    sent = co_await std::move(op);
  }
  if (!sent) co_return std::nullopt;
  auto wait = [](std::shared_ptr<Impl::PendingSetup> p) -> asio::awaitable<void> {
    auto op = p->done->async_wait(kTuple);
    co_await std::move(op);
  };
  auto hop = qkdn::net::run_on(i.strand, wait(pending));
  co_await std::move(hop);
  std::optional<RelaySetupAnswer> out;
  auto op = with_table([&](PeerTable&) {
    i.pending_setup.erase(relay_id);
    out = pending->answer;
  });
  co_await std::move(op);
  co_return out;
}

void CxiNode::send_relay_end(const std::string& qkdn_id, RelayEnd end) {
  asio::post(impl_->strand, [self = shared_from_this(), qkdn_id, e = std::move(end)] {
    self->impl_->send(qkdn_id, e);
  });
}

void CxiNode::forward_fault(const std::string& qkdn_id, Fault fault) {
  asio::post(impl_->strand, [self = shared_from_this(), qkdn_id, f = std::move(fault)] {
    if (self->impl_->sessions.contains(qkdn_id)) ++self->impl_->counts[qkdn_id].faults_sent;
    self->impl_->send(qkdn_id, f);
  });
}

void CxiNode::set_local_link_state(const std::string& link_id, bool up) {
  asio::post(impl_->strand, [self = shared_from_this(), link_id, up] {
    auto& i = *self->impl_;
    i.table.set_local_link_state(link_id, up);
    for (const auto& l : i.table.local().inter_qkdn_links) {
      if (l.link_id == link_id) i.send(l.peer_qkdn_id, i.table.link_status_for(l.peer_qkdn_id));
    }
  });
}

void CxiNode::set_local(controller::TopologyDoc local) {
  asio::post(impl_->strand, [self = shared_from_this(), doc = std::move(local)]() mutable {
    auto& i = *self->impl_;
    i.emit(i.table.set_local(std::move(doc)));
    for (const auto& [id, s] : i.sessions) {
      i.send(id, i.table.announce_for(id));
      i.send(id, i.table.link_status_for(id));
    }
    start_dialers(self, i);
  });
}

}  // namespace qkdn::interworking
