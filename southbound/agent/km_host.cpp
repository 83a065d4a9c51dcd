// The per-KM machinery: Ck client with reconnect, KMA-link sessions, key generation, alarms.
#include "km_host.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <filesystem>

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/json.hpp>

#include "kma_messages.hpp"
#include "log.hpp"
#include "qkdn/base/args.hpp"
#include "qkdn/controller/build_info.hpp"
#include "qkdn/controller/error.hpp"
#include "qkdn/json/reader.hpp"
#include "qkdn/net/limits.hpp"
#include "qkdn/net/listener.hpp"
#include "qkdn/net/run_on.hpp"
#include "qkdn/net/tls.hpp"

namespace qkdn::agent {

namespace ck = southbound::ck;
namespace json = boost::json;
using namespace std::chrono_literals;
using namespace net::experimental::awaitable_operators;

namespace {

constexpr auto kIdleTimeout = 30s;   // a KMA session without any frame for this long dies
constexpr auto kFrameTimeout = 10s;  // a started frame / handshake step must complete
constexpr auto kPingInterval = 10s;
constexpr auto kConnectTimeout = 5s;
constexpr std::size_t kMaxPendingBatches = 8;
constexpr auto kTuple = net::as_tuple(net::use_awaitable);

std::uint64_t fnv1a(std::string_view s) {
  std::uint64_t h = 1469598103934665603ULL;
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ULL;
  }
  return h;
}

std::optional<std::pair<std::string, std::string>> split_host_port(const std::string& ep) {
  const auto pos = ep.rfind(':');
  if (pos == std::string::npos || pos == 0 || pos + 1 == ep.size()) return std::nullopt;
  std::string host = ep.substr(0, pos);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  return std::make_pair(host, ep.substr(pos + 1));
}

std::string json_frame(kma::Type type, const json::object& obj) {
  return kma::encode_frame(type, json::serialize(obj));
}

/// A Ck payload as an object through the shared strict reader (Ck limits), or nullopt.
std::optional<json::object> parse_object(std::string_view text) {
  try {
    return qkdn::json::parse_object(text, "the payload", {ck::kMaxPayload, ck::kMaxJsonDepth});
  } catch (const InvalidArgument&) {
    return std::nullopt;
  }
}

std::string describe(const std::exception_ptr& e) {
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& ex) {
    return ex.what();
  } catch (...) {
    return "unknown exception";
  }
}

}  // namespace

// ---- KmaSession ------------------------------------------------------------------------------

KmaSession::KmaSession(KmHost& host, tcp::socket socket, net::ssl::context* tls, bool dialer)
    : host_(host),
      plain_(host.strand()),
      dialer_(dialer),
      write_wake_(host.strand()),
      deadline_(host.strand()) {
  if (tls != nullptr) {
    tls_ = std::make_unique<net::ssl::stream<tcp::socket>>(std::move(socket), *tls);
  } else {
    plain_ = std::move(socket);
  }
  write_wake_.expires_at(SteadyTime::max());
  deadline_.expires_at(SteadyTime::max());
}

net::awaitable<void> KmaSession::handshake() {
  if (!tls_) co_return;
  deadline_.expires_after(kFrameTimeout);
  auto handshake_op = tls_->async_handshake(
      dialer_ ? net::ssl::stream_base::client : net::ssl::stream_base::server, net::use_awaitable);
  co_await std::move(handshake_op);
}

net::awaitable<void> KmaSession::read_exact(void* data, std::size_t size) {
  if (tls_) {
    auto read_op = net::async_read(*tls_, net::buffer(data, size), net::use_awaitable);
    co_await std::move(read_op);
  } else {
    auto read_op2 = net::async_read(plain_, net::buffer(data, size), net::use_awaitable);
    co_await std::move(read_op2);
  }
}

net::awaitable<std::pair<kma::Type, std::string>> KmaSession::read_frame(
    std::chrono::milliseconds timeout) {
  std::array<std::uint8_t, kma::kHeaderSize> head{};
  deadline_.expires_after(timeout);
  auto read_exact_op = read_exact(head.data(), head.size());
  co_await std::move(read_exact_op);
  const auto h = kma::decode_header(head.data());
  if (h.length > kma::kMaxPayload) throw InvalidArgument("KMA frame too large");
  std::string payload(h.length, '\0');
  deadline_.expires_after(kFrameTimeout);
  if (h.length > 0) {
    auto read_op = read_exact(payload.data(), payload.size());
    co_await std::move(read_op);
  }
  deadline_.expires_at(SteadyTime::max());
  co_return std::make_pair(static_cast<kma::Type>(h.type), std::move(payload));
}

void KmaSession::start_background() {
  host_.spawn(
      [](std::shared_ptr<KmaSession> self) -> net::awaitable<void> {
        auto writer_op = self->writer();
        co_await std::move(writer_op);
      }(shared_from_this()),
      "KMA writer");
  host_.spawn(
      [](std::shared_ptr<KmaSession> self) -> net::awaitable<void> {
        auto watchdog_op = self->watchdog();
        co_await std::move(watchdog_op);
      }(shared_from_this()),
      "KMA watchdog");
}

void KmaSession::send(std::string frame) {
  if (!open_) {
    OPENSSL_cleanse(frame.data(), frame.size());
    return;
  }
  queue_.push_back(std::move(frame));
  last_sent = std::chrono::steady_clock::now();
  write_wake_.cancel();
}

net::awaitable<void> KmaSession::writer() {
  while (open_) {
    if (queue_.empty()) {
      auto wait_op = write_wake_.async_wait(kTuple);
      co_await std::move(wait_op);
      continue;
    }
    std::string frame = std::move(queue_.front());
    queue_.pop_front();
    boost::system::error_code ec;
    if (tls_) {
      auto write_op = net::async_write(*tls_, net::buffer(frame), kTuple);
      std::tie(ec, std::ignore) = co_await std::move(write_op);
    } else {
      auto write_op2 = net::async_write(plain_, net::buffer(frame), kTuple);
      std::tie(ec, std::ignore) = co_await std::move(write_op2);
    }
    // Keys frames carry key bytes: wipe every written frame.
    OPENSSL_cleanse(frame.data(), frame.size());
    if (ec) {
      close();
      break;
    }
  }
  for (auto& f : queue_) OPENSSL_cleanse(f.data(), f.size());
  queue_.clear();
}

net::awaitable<void> KmaSession::watchdog() {
  while (open_) {
    auto wait_op = deadline_.async_wait(kTuple);
    co_await std::move(wait_op);
    if (open_ && deadline_.expiry() <= std::chrono::steady_clock::now()) {
      log_line(LogLevel::kWarn, "KMA session of " + host_.km_id() + ": read timeout");
      close();
    }
  }
}

void KmaSession::close() {
  if (!open_) return;
  open_ = false;
  boost::system::error_code ec;
  auto& sock = tls_ ? tls_->next_layer() : plain_;
  sock.shutdown(tcp::socket::shutdown_both, ec);
  sock.close(ec);
  write_wake_.cancel();
  deadline_.cancel();
}

std::string KmaSession::peer_identity() {
  if (!tls_) return {};
  return qkdn::net::peer_identity(tls_->native_handle(), qkdn::net::PeerRole::kKm);
}

// ---- LinkEnd ---------------------------------------------------------------------------------

LinkEnd::LinkEnd(std::string id, std::string peer, bool is_primary, KeyStore key_store, double rate,
                 double q, const net::any_io_executor& ex)
    : link_id(std::move(id)),
      peer_km(std::move(peer)),
      primary(is_primary),
      store(std::move(key_store)),
      key_rate_bps(rate),
      qber(q),
      dial_wake(ex) {
  dial_wake.expires_at(SteadyTime::max());
  if (primary) {
    // The primary chooses the link's secret (docs/key-supply.md "Emulated links"): fresh per
    // process, so a restarted primary never repeats a block under an old secret; the secondary
    // learns it from the Seed frame over the authenticated KMA session.
    secure::Bytes secret(kLinkSecretBytes);
    if (RAND_bytes(secret.data(), static_cast<int>(secret.size())) != 1) {
      throw Internal("RAND_bytes failed for the secret of link " + link_id);
    }
    store.rekey(secret.data(), {0, 0});
  }
}

// ---- KmHost: construction and lifecycle ------------------------------------------------------

KmHost::KmHost(AgentCore& core, std::string km_id)
    : core_(core),
      km_id_(std::move(km_id)),
      strand_(net::make_strand(core.io())),
      ck_timer_(strand_),
      beat_timer_(strand_),
      tick_timer_(strand_) {
  const auto& cfg = core_.config();
  if (cfg.seed) {
    rng_ = std::make_unique<SeededRandom>(*cfg.seed ^ fnv1a(km_id_));
  } else {
    rng_ = std::make_unique<OsRandom>();
  }
  for (const auto& l : cfg.topology.links) {
    if (l.a != km_id_ && l.b != km_id_) continue;
    const std::string& peer = l.a == km_id_ ? l.b : l.a;
    auto end = std::make_unique<LinkEnd>(l.link_id, peer, km_id_ < peer,
                                         KeyStore(l.link_id, km_id_, peer, cfg.pool_capacity_bytes),
                                         l.key_rate_bps, l.qber, strand_);
    link_by_id_[l.link_id] = end.get();
    links_.push_back(std::move(end));
  }
  // Inter-QKDN links of a gateway KM (Kxi-1 relay through GWNs, docs/cxi.md): emulated like
  // any link; the far end's endpoint comes from --kma-peer.
  for (const auto& l : cfg.topology.inter_qkdn_links) {
    if (l.km_id != km_id_) continue;
    auto end = std::make_unique<LinkEnd>(
        l.link_id, l.peer_km_id, km_id_ < l.peer_km_id,
        KeyStore(l.link_id, km_id_, l.peer_km_id, cfg.pool_capacity_bytes), l.key_rate_bps, 0.0,
        strand_);
    end->inter_qkdn = true;
    link_by_id_[l.link_id] = end.get();
    links_.push_back(std::move(end));
    if (auto it = cfg.kma_peers.find(l.peer_km_id); it != cfg.kma_peers.end()) {
      peers_[l.peer_km_id] = it->second;
    }
  }
  for (const auto& a : cfg.topology.applications) {
    if (a.km_id == km_id_) applications_.push_back(a.sae_id);
  }
  if (!cfg.tls_cert_dir.empty()) {
    // <km_id>.crt, or <km_id>.pem as scripts/dev-ca.sh writes it.
    const std::string base = cfg.tls_cert_dir + "/" + km_id_;
    const std::string cert = std::filesystem::exists(base + ".crt") ? base + ".crt" : base + ".pem";
    southbound::TlsFiles files{cfg.tls_ca, cert, base + ".key"};
    // KMA links carry key bytes: TLS 1.3, mutual, strongest groups; the peer's certificate must
    // name the expected peer KM (role KM: urn:qkdn:km:<id>), checked per session.
    qkdn::net::TlsSettings kma;
    kma.tls13_only = true;
    kma.verify_peer = true;
    kma.strongest_groups = true;
    kma.server = true;
    kma_server_tls_ = qkdn::net::make_tls_context(files, kma);
    kma.server = false;
    kma_client_tls_ = qkdn::net::make_tls_context(files, kma);
    if (!cfg.insecure_ck) ck_tls_ = southbound::make_tls_context(files, false);
  }
  southbound::FramedServerOptions so;
  so.name = "KM " + km_id_ + ": KMA";
  // Sessions that have not passed Hello yet are capped agent-wide (a peer that connects and waits
  // cannot pile up descriptors); the slot is held until Hello is answered.
  so.unregistered = &core_.kma_pending();
  // The TLS handshake and the Hello frame are bounded by kFrameTimeout each.
  so.registration_timeout = 2 * kFrameTimeout;
  so.connection_executor = [this] { return net::any_io_executor(strand_); };
  southbound::FramedServer::Hooks h;
  h.serve = [this](std::shared_ptr<southbound::FramedServer::Connection> conn, tcp::socket socket) {
    return inbound(std::move(conn), std::move(socket));
  };
  h.log = [](const std::string& line) { log_line(LogLevel::kWarn, line); };
  h.spawn = [this](const net::any_io_executor& ex, net::awaitable<void> work, std::string what) {
    core_.spawn(ex, std::move(work), std::move(what));
  };
  kma_server_ = std::make_unique<southbound::FramedServer>(core.io().get_executor(), std::move(so),
                                                           std::move(h));
}

KmHost::~KmHost() = default;

bool KmHost::stopping() const { return core_.stopping(); }

void KmHost::spawn(net::awaitable<void> work, std::string what) {
  core_.spawn(strand_, std::move(work), std::move(what));
}

void KmHost::bind_listener() {
  const auto& cfg = core_.config();
  boost::system::error_code ec;
  const auto addr = net::ip::make_address(cfg.kma_listen_host, ec);
  if (ec) throw InvalidArgument("--kma-listen-host: not an IP address: " + cfg.kma_listen_host);
  const auto bound = kma_server_->listen(tcp::endpoint(addr, 0), ec);
  if (ec)
    throw Unavailable("KM " + km_id_ + ": cannot listen on " + cfg.kma_listen_host + ": " +
                      ec.message());
  const std::string host = bound.address().is_v6() ? "[" + bound.address().to_string() + "]"
                                                   : bound.address().to_string();
  kma_endpoint_ = host + ":" + std::to_string(bound.port());
}

void KmHost::start() {
  spawn(ck_loop(), "Ck loop of " + km_id_);
  kma_server_->start();
  spawn(tick_loop(), "tick loop of " + km_id_);
  for (auto& l : links_) spawn(dial_loop(l.get()), "KMA dial loop of " + km_id_);
}

void KmHost::stop() {
  net::post(strand_, [this] { shutdown(); });
}

void KmHost::shutdown() {
  kma_server_->stop();
  if (channel_) channel_->close();
  ck_timer_.cancel();
  beat_timer_.cancel();
  tick_timer_.cancel();
  for (auto& l : links_) l->dial_wake.cancel();
  for (auto* t : connect_timers_) t->cancel();
  // Copy: close() may lead to detach() which edits sessions_ later, on this strand.
  auto sessions = sessions_;
  for (const auto& s : sessions) s->close();
  abort_sae_supply();
}

std::chrono::milliseconds KmHost::jitter(std::chrono::milliseconds base) {
  // "Equal jitter": half fixed, half random.
  const auto half = base.count() / 2;
  const auto r =
      half > 0 ? static_cast<std::int64_t>(rng_->next_u64() % static_cast<std::uint64_t>(half + 1))
               : 0;
  return std::chrono::milliseconds{half + r};
}

KeyId KmHost::new_key_id() {
  KeyId id{};
  const std::uint64_t a = rng_->next_u64();
  const std::uint64_t b = rng_->next_u64();
  for (int i = 0; i < 8; ++i) {
    id[static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(a >> (56 - 8 * i));
    id[8 + static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(b >> (56 - 8 * i));
  }
  id[6] = static_cast<std::uint8_t>((id[6] & 0x0F) | 0x40);  // version 4
  id[8] = static_cast<std::uint8_t>((id[8] & 0x3F) | 0x80);  // RFC 4122 variant
  return id;
}

// ---- Ck client -------------------------------------------------------------------------------

net::awaitable<void> KmHost::ck_loop() {
  const auto& cfg = core_.config();
  // Jittered exponential backoff (qkdn/net/limits.hpp), raised to the controller's hint when it
  // answered "NG: busy": a thousand KMs cut off together neither come back together nor sooner
  // than the controller can take them. One connection, one registration at a time: a new
  // connection is opened only once the previous one (and the registration on it) has ended.
  qkdn::net::ReconnectBackoff backoff(cfg.reconnect_initial, cfg.reconnect_max,
                                      [this] { return rng_->next_u64(); });
  // High availability: several controllers are tried in turn; a standby names the leader.
  std::vector<std::pair<std::string, std::uint16_t>> controllers = cfg.controllers;
  if (controllers.empty()) controllers.emplace_back(cfg.controller_host, cfg.controller_port);
  std::size_t failed_in_round = 0;
  while (!stopping()) {
    bool registered = false;
    retry_hint_.reset();
    if (redirect_) {
      controller_now_ = *redirect_;
      redirect_.reset();
    } else {
      controller_now_ = controllers[controller_next_ % controllers.size()];
    }
    try {
      auto ck_session_op = ck_session();
      registered = co_await std::move(ck_session_op);
    } catch (const std::exception& e) {
      if (!stopping()) log_line(LogLevel::kWarn, "KM " + km_id_ + ": Ck: " + e.what());
    }
    if (channel_) channel_->close();
    channel_.reset();
    // A 0x4104 answers a 0x1403 on the connection that carried it: the SAEs waiting for one
    // get their 503 now rather than at their supply timeout.
    fail_supply_notifications("controller connection lost");
    if (registered_) log_line(LogLevel::kInfo, "KM " + km_id_ + ": Ck connection lost");
    registered_ = false;
    if (stopping()) break;
    if (registered) backoff.reset();
    std::chrono::milliseconds delay{0};
    if (redirect_) {
      delay = std::chrono::milliseconds{10};  // a standby named the leader: go there now
    } else if (!registered && controllers.size() > 1) {
      // The next controller at once; after a whole round without success, back off, but never
      // beyond one heartbeat period (a standby that takes over is found within it).
      controller_next_ = (controller_next_ + 1) % controllers.size();
      if (++failed_in_round < controllers.size()) {
        delay = std::chrono::milliseconds{20};
      } else {
        failed_in_round = 0;
        delay = std::min(backoff.next(retry_hint_), heartbeat_interval_);
      }
    } else {
      failed_in_round = 0;
      delay = backoff.next(retry_hint_);
    }
    if (retry_hint_) {
      log_line(LogLevel::kDebug, "KM " + km_id_ + ": controller busy; registering again in " +
                                     std::to_string(delay.count()) + " ms");
    }
    ck_timer_.expires_after(delay);
    auto wait_op = ck_timer_.async_wait(kTuple);
    co_await std::move(wait_op);
  }
}

net::awaitable<bool> KmHost::ck_session() {
  const auto& cfg = core_.config();
  tcp::resolver resolver(strand_);
  auto resolve_op = resolver.async_resolve(
      controller_now_.first, std::to_string(controller_now_.second), net::use_awaitable);
  auto results = co_await std::move(resolve_op);
  if (stopping()) co_return false;
  tcp::socket socket(strand_);
  ck_timer_.expires_after(kConnectTimeout);
  // The connect completes with its error code (kTuple), never by exception: `||` waits for the
  // first operation that *succeeds*, so a refused connect (a controller restarting) would
  // otherwise wait out the whole kConnectTimeout before the next attempt.
  auto outcome =
      co_await (net::async_connect(socket, results, kTuple) || ck_timer_.async_wait(kTuple));
  if (stopping()) co_return false;
  if (outcome.index() != 0) throw Unavailable("connect to controller timed out");
  if (const auto& [ec, peer] = std::get<0>(outcome); ec) {
    throw Unavailable("connect to controller failed: " + ec.message());
  }
  socket.set_option(tcp::no_delay(true));
  southbound::ChannelOptions options;
  // Pin the controller: its certificate must name urn:qkdn:controller:<controller_id>; a KM's or
  // an SAE's certificate of the same CA is refused before anything is sent.
  options.peer_role = qkdn::net::PeerRole::kController;
  options.expected_peer = cfg.controller_id;
  std::shared_ptr<southbound::CkChannel> channel =
      ck_tls_ ? southbound::make_tls_channel(std::move(socket), *ck_tls_, false, options)
              : southbound::make_plain_channel(std::move(socket), options);
  channel_ = channel;
  const std::uint64_t before = registrations_;
  southbound::CkChannel::FrameHandler handler = [this](std::shared_ptr<southbound::CkChannel> ch,
                                                       ck::Frame frame) {
    return on_ck_frame_hop(std::move(ch), std::move(frame));
  };
  // run() is not raced with || : cancelling it trips an Asio 1.81 co_spawn cancellation
  // lifetime bug. It runs as its own coroutine; closing the channel ends it, we wait for that.
  auto run_state = std::make_shared<RunState>(strand_);
  spawn(
      [](std::shared_ptr<southbound::CkChannel> ch, southbound::CkChannel::FrameHandler h,
         std::shared_ptr<RunState> state, KmHost* self) -> net::awaitable<void> {
        try {
          auto op = ch->run(std::move(h));
          co_await std::move(op);
        } catch (const std::exception& e) {
          if (!self->stopping()) {
            log_line(LogLevel::kDebug, "KM " + self->km_id_ + ": Ck channel: " + e.what());
          }
        }
        state->finished = true;
        state->done.cancel();
        self->beat_timer_.cancel();
      }(channel, std::move(handler), run_state, this),
      "Ck channel of " + km_id_);
  try {
    auto beat_op = register_and_beat(channel);
    co_await std::move(beat_op);
  } catch (const std::exception& e) {
    // A busy refusal is expected under a registration storm: not a warning per KM.
    if (!stopping()) {
      log_line(retry_hint_ ? LogLevel::kDebug : LogLevel::kWarn,
               "KM " + km_id_ + ": Ck: " + e.what());
    }
  }
  channel->close();
  while (!run_state->finished) {
    auto wait_op = run_state->done.async_wait(kTuple);
    co_await std::move(wait_op);
  }
  co_return registrations_ > before;
}

net::awaitable<void> KmHost::register_and_beat(std::shared_ptr<southbound::CkChannel> channel) {
  try {
    // The request completes on the channel's strand: hop back to ours for our state.
    ck::Register reg;
    reg.km_id = km_id_;
    reg.kma_id = km_id_;
    reg.kma_endpoint = kma_endpoint_;
    for (const auto& l : links_) {
      if (!l->inter_qkdn) reg.links.push_back(ck::LinkRef{l->link_id, l->peer_km});
    }
    reg.applications = applications_;
    reg.software = std::string("qkdn-agent/") + build_version();
    ck::Message reg_message{std::move(reg)};
    // The registration may wait in the controller's admission queue: it gets longer than an
    // ordinary request (the controller answers, refuses busy, or closes the connection at its
    // registration deadline first), so that a slow registration is never abandoned and repeated
    // on a new connection while the first one may still complete.
    const auto sent_at = std::chrono::steady_clock::now();
    auto reg_op = channel->request(std::move(reg_message), core_.config().register_timeout);
    ck::Frame reply = co_await std::move(reg_op);
    auto post_op = net::post(strand_, net::use_awaitable);
    co_await std::move(post_op);
    if (reply.command == static_cast<std::uint16_t>(ck::Command::kErrorFromController)) {
      auto decoded = ck::decode_payload(reply.command, reply.payload);
      std::string why = "error";
      if (auto* m = std::get_if<ck::Message>(&decoded)) {
        if (auto* err = std::get_if<ck::ErrorMessage>(m))
          why = err->error + " " + err->message.value_or("");
      }
      throw Unavailable("registration refused: " + why);
    }
    auto decoded = ck::decode_payload(reply.command, reply.payload);
    if (auto* bad = std::get_if<ck::DecodeError>(&decoded)) {
      throw Unavailable("bad registration response: " + bad->message);
    }
    const auto* resp = std::get_if<ck::RegisterResponse>(&std::get<ck::Message>(decoded));
    if (resp == nullptr) throw Unavailable("unexpected reply to registration");
    if (resp->response != "OK") {
      if (resp->response.rfind("NG: busy", 0) == 0) {
        retry_hint_ = std::chrono::milliseconds{resp->retry_after_ms.value_or(1000)};
        ++busy_refusals_;
        throw Unavailable("registration refused: controller busy (retry after " +
                          std::to_string(retry_hint_->count()) + " ms)");
      }
      if (resp->response.rfind("NG: not_leader", 0) == 0) {
        // A standby (docs/ck-extensions.md): "NG: not_leader" or "NG: not_leader: HOST:PORT".
        const auto colon = resp->response.find(": ", 4);
        std::string leader;
        if (colon != std::string::npos) {
          leader = resp->response.substr(colon + 2);
          try {
            const auto hp = base::parse_host_port("not_leader", leader);
            if (hp.port != 0) redirect_.emplace(hp.host, hp.port);
          } catch (const std::exception&) {
            leader.clear();
          }
        }
        retry_hint_ = heartbeat_interval_;  // logged at debug, not as a warning
        throw Unavailable("controller " + controller_now_.first + ":" +
                          std::to_string(controller_now_.second) + " is a standby" +
                          (leader.empty() ? std::string("; no leader known yet")
                                          : "; the leader is at " + leader));
      }
      throw Unavailable("registration refused: " + resp->response);
    }

    if (resp->controller_epoch < controller_epoch_) {
      log_line(LogLevel::kWarn, "KM " + km_id_ + ": controller epoch went back from " +
                                    std::to_string(controller_epoch_) + " to " +
                                    std::to_string(resp->controller_epoch));
    }
    // Commands of the new epoch may have been handled already (they can follow the response
    // on the connection before this coroutine resumes): what was held before the Register went
    // out is the old epoch's.
    if (resp->controller_epoch > registered_epoch_) drop_holds_of_old_epoch(sent_at);
    registered_epoch_ = std::max(registered_epoch_, resp->controller_epoch);
    controller_epoch_ = std::max(controller_epoch_, resp->controller_epoch);
    heartbeat_interval_ =
        std::chrono::milliseconds{std::max<std::int64_t>(50, resp->heartbeat_interval_ms)};
    status_interval_ =
        std::chrono::milliseconds{std::max<std::int64_t>(50, resp->status_interval_ms)};
    if (resp->peers) {
      for (const auto& p : *resp->peers) peers_[p.kma_id] = p.kma_endpoint;
      for (auto& l : links_) {
        if (!l->session) l->dial_wake.cancel();
      }
    }
    const bool distributed = resp->relay_routing.value_or("centralized") == "distributed";
    if (distributed != distributed_relay_) {
      log_line(LogLevel::kInfo, "KM " + km_id_ + ": relay routing " +
                                    (distributed ? "distributed (Q.4164 7.1)" : "centralized"));
    }
    distributed_relay_ = distributed;
    registered_ = true;
    ++registrations_;
    log_line(LogLevel::kInfo, "KM " + km_id_ + " registered (controller " + resp->controller_id +
                                  ", epoch " + std::to_string(resp->controller_epoch) + ")");
    // Alarms raised while disconnected are re-raised; the status report follows at once.
    for (const auto& [key, alarm] : active_alarms_) channel->send(ck::Message{alarm});
    channel->send(ck::Message{build_status()});

    auto next_beat = std::chrono::steady_clock::now() + heartbeat_interval_;
    auto next_status = std::chrono::steady_clock::now() + status_interval_;
    while (!stopping() && channel->is_open()) {
      beat_timer_.expires_at(std::min(next_beat, next_status));
      auto wait_op = beat_timer_.async_wait(kTuple);
      co_await std::move(wait_op);
      if (stopping() || !channel->is_open()) break;
      const auto now = std::chrono::steady_clock::now();
      if (now >= next_status) {
        channel->send(ck::Message{build_status()});
        next_status = now + status_interval_;
      }
      if (now >= next_beat) {
        next_beat = now + heartbeat_interval_;
        // A heartbeat without answer means a dead controller: reconnect.
        ck::Message beat{ck::Heartbeat{km_id_}};
        auto beat_op = channel->request(std::move(beat));
        co_await std::move(beat_op);
        auto post_op2 = net::post(strand_, net::use_awaitable);
        co_await std::move(post_op2);
      }
    }
  } catch (...) {
    channel->close();
    throw;
  }
  channel->close();
}

net::awaitable<void> KmHost::on_ck_frame_hop(std::shared_ptr<southbound::CkChannel> channel,
                                             ck::Frame frame) {
  // Handling never waits, so it is posted to our strand instead of awaited there.
  core_.post(strand_,
             [this, ch = std::move(channel), f = std::move(frame)] { on_ck_frame(ch, f); });
  co_return;
}

void KmHost::send_ck_error(const std::shared_ptr<southbound::CkChannel>& channel,
                           std::string_view code, std::string message, std::uint32_t message_id) {
  ck::ErrorMessage err;
  err.error = std::string(code);
  err.message = std::move(message);
  err.message_id = message_id;
  err.from_km = true;
  channel->send(ck::Message{std::move(err)}, message_id);
}

void KmHost::on_ck_frame(const std::shared_ptr<southbound::CkChannel>& channel,
                         const ck::Frame& frame) {
  const std::uint16_t code = frame.command;
  const auto direction = ck::direction_of(code);
  if (!ck::is_known_command(code)) {
    send_ck_error(channel, ck::errc::kUnknownCommand, "unknown command code", frame.message_id);
    return;
  }
  if (direction != ck::Direction::kControllerToKm) {
    send_ck_error(channel, ck::errc::kBadRequest, "command code points the wrong way",
                  frame.message_id);
    return;
  }
  switch (static_cast<ck::Command>(code)) {
    case ck::Command::kKeyRelayNextHopResponse:
    case ck::Command::kSessionCreationResponse:
    case ck::Command::kRegisterResponse:
    case ck::Command::kHeartbeatResponse:
      // A response nobody waits for (late, after a timeout): nothing to do.
      return;
    case ck::Command::kErrorFromController: {
      auto decoded = ck::decode_payload(code, frame.payload);
      std::string text = "malformed";
      if (auto* m = std::get_if<ck::Message>(&decoded)) {
        if (auto* e = std::get_if<ck::ErrorMessage>(m)) {
          text = e->error + " " + e->message.value_or("");
          // An Error naming a 0x1403 an SAE request waits for fails that request.
          const auto about = e->message_id.value_or(frame.message_id);
          if (fail_supply_notification(about, e->error, e->message.value_or(""))) return;
          if (fail_instruction_notification(about, text)) return;
        }
      }
      log_line(LogLevel::kWarn, "KM " + km_id_ + ": controller error: " + text);
      return;
    }
    default:
      break;
  }
  // A controller command: fence deposed controllers by epoch first (ck-protocol.md clause 2).
  auto obj = parse_object(frame.payload);
  if (!obj) {
    send_ck_error(channel, ck::errc::kBadRequest, "payload is not a JSON object", frame.message_id);
    return;
  }
  const auto* epoch = obj->if_contains("controller_epoch");
  if (epoch == nullptr || !(epoch->is_int64() || epoch->is_uint64())) {
    send_ck_error(channel, ck::errc::kBadRequest, "controller_epoch: missing or not an integer",
                  frame.message_id);
    return;
  }
  const std::int64_t e =
      epoch->is_int64()
          ? epoch->as_int64()
          : static_cast<std::int64_t>(std::min<std::uint64_t>(epoch->as_uint64(), INT64_MAX));
  if (e < controller_epoch_) {
    send_ck_error(
        channel, ck::errc::kStaleEpoch,
        "controller_epoch " + std::to_string(e) + " < " + std::to_string(controller_epoch_),
        frame.message_id);
    return;
  }
  controller_epoch_ = e;
  auto decoded = ck::decode_payload(code, frame.payload);
  if (auto* bad = std::get_if<ck::DecodeError>(&decoded)) {
    send_ck_error(channel, bad->code, bad->message, frame.message_id);
    return;
  }
  on_key_supply(channel, std::move(std::get<ck::Message>(decoded)), frame.message_id);
}

ck::StatusReport KmHost::build_status() {
  ck::StatusReport report;
  report.kma_id = km_id_;
  report.timestamp = format_rfc3339(std::chrono::system_clock::now());
  for (const auto& l : links_) {
    if (l->inter_qkdn) continue;  // the other QKDN's controller knows its end
    ck::LinkStatus s;
    s.link_id = l->link_id;
    s.peer_kma_id = l->peer_km;
    s.state = l->up() ? "up" : "down";
    s.stored_keys = static_cast<std::int64_t>(l->store.size());
    s.stored_key_bits = l->store.stored_bits();
    s.key_rate_bps = l->meter.rate_per_second();
    s.consumption_rate_bps = l->consumption_meter.rate_per_second();
    s.qber = l->qber;
    report.links.push_back(std::move(s));
  }
  return report;
}

void KmHost::send_alarm(const LinkEnd& link, const std::string& alarm, const std::string& severity,
                        std::optional<double> value, std::string text) {
  if (link.inter_qkdn) {  // not a link of our controller's topology: logged only
    log_line(LogLevel::kInfo, "KM " + km_id_ + ": alarm " + alarm + " " + severity + " on " +
                                  link.link_id + " (inter-QKDN link)");
    return;
  }
  ck::Alarm a;
  a.kma_id = km_id_;
  a.alarm = alarm;
  a.link_id = link.link_id;
  a.severity = severity;
  a.value = value;
  a.text = std::move(text);
  a.timestamp = format_rfc3339(std::chrono::system_clock::now());
  const std::string key = link.link_id + "/" + alarm;
  if (severity == "cleared") {
    active_alarms_.erase(key);
    // link_up clears link_down.
    if (alarm == "link_up") active_alarms_.erase(link.link_id + "/link_down");
  } else {
    active_alarms_[key] = a;
  }
  log_line(LogLevel::kInfo,
           "KM " + km_id_ + ": alarm " + alarm + " " + severity + " on " + link.link_id);
  if (channel_ && registered_) channel_->send(ck::Message{std::move(a)});
}

// ---- KMA links -------------------------------------------------------------------------------

std::optional<std::string> KmHost::peer_endpoint(const std::string& peer_km) const {
  if (auto local = core_.local_endpoint(peer_km)) return local;
  if (auto it = peers_.find(peer_km); it != peers_.end()) return it->second;
  return std::nullopt;
}

namespace {
net::awaitable<southbound::FramedServer::Verdict> verdict_now(southbound::FramedServer::Verdict v) {
  co_return v;
}
}  // namespace

net::awaitable<void> KmHost::inbound(std::shared_ptr<southbound::FramedServer::Connection> conn,
                                     tcp::socket socket) {
  using Verdict = southbound::FramedServer::Verdict;
  boost::system::error_code ignored;
  socket.set_option(tcp::no_delay(true), ignored);
  auto session =
      std::make_shared<KmaSession>(*this, std::move(socket), kma_server_tls_.get(), false);
  sessions_.insert(session);
  session->start_background();
  conn->set_closer([this, weak = std::weak_ptr<KmaSession>(session)] {
    net::post(strand_, [weak] {
      if (auto s = weak.lock()) s->close();
    });
  });
  try {
    auto handshake_op = session->handshake();
    co_await std::move(handshake_op);
    auto read_frame_op = session->read_frame(kFrameTimeout);
    const auto [type, payload] = co_await std::move(read_frame_op);
    // Named copies: a lambda may not capture a structured binding (before C++20).
    const kma::Type first_type = type;
    const std::string& first_payload = payload;
    LinkEnd* link = nullptr;
    // Hello through the server's registration gate: what is wrong with it at once, then the
    // link (one session per link).
    auto check = [&]() -> Verdict {
      std::string problem;
      std::optional<kma::Hello> hello;
      if (first_type == kma::Type::kHello) {
        try {
          hello = kma::parse_hello(first_payload);
        } catch (const kma::BadMessage& e) {
          problem = std::string("malformed hello: ") + e.what();
        }
      } else {
        problem = "expected hello";
      }
      if (hello) {
        const std::string& from = hello->from_km;
        const std::string& to = hello->to_km;
        auto it = link_by_id_.find(hello->link_id);
        if (to != km_id_) {
          problem = "wrong KM";
        } else if (it == link_by_id_.end() || it->second->peer_km != from) {
          problem = "unknown link";
        } else if (session->tls() && session->peer_identity() != from) {
          problem = "certificate does not name " + from;
        } else {
          link = it->second;
        }
      }
      if (link == nullptr) {
        log_line(LogLevel::kWarn, "KM " + km_id_ + ": KMA session refused: " + problem);
        return Verdict::refuse("bad_request", problem);
      }
      return Verdict::ok();
    };
    auto attempt = [this, &link, session](southbound::FramedServer::Pending) {
      return verdict_now(attach(link, session)
                             ? Verdict::ok()
                             : Verdict::refuse("conflict", "link already connected"));
    };
    auto gate = conn->register_peer(std::move(check), std::move(attempt));
    auto r = co_await std::move(gate);
    if (r.outcome != southbound::FramedServer::Registration::Outcome::kRegistered) {
      // Only a refusal can happen here: no bound on pending Hellos, one read at a time.
      session->send(json_frame(kma::Type::kError,
                               {{"error", r.verdict.refusal}, {"message", r.verdict.text}}));
      session->close();
    } else {
      session->send(json_frame(kma::Type::kHelloOk, {}));
      begin_sync(*link);
      auto loop = session_loop(session);
      co_await std::move(loop);
    }
  } catch (const std::exception& e) {
    if (!stopping()) log_line(LogLevel::kDebug, "KM " + km_id_ + ": KMA inbound: " + e.what());
  }
  session->close();
  detach(session);
}

net::awaitable<void> KmHost::dial_loop(LinkEnd* link) {
  const auto& cfg = core_.config();
  auto backoff = cfg.reconnect_initial;
  if (!link->primary) {
    // The primary dials; the secondary dials only when the primary could not (it may not know
    // our endpoint when it registered before us).
    link->dial_wake.expires_after(cfg.secondary_dial_delay + jitter(cfg.reconnect_initial));
    auto wait_op = link->dial_wake.async_wait(kTuple);
    co_await std::move(wait_op);
  }
  while (!stopping()) {
    if (!link->session) {
      if (auto ep = peer_endpoint(link->peer_km)) {
        bool ok = false;
        try {
          auto op = dial(link, *ep);
          ok = co_await std::move(op);
        } catch (const std::exception& e) {
          if (!stopping()) {
            log_line(LogLevel::kDebug,
                     "KM " + km_id_ + ": dial " + link->link_id + " to " + *ep + ": " + e.what());
          }
        }
        if (stopping()) break;
        if (ok) {
          backoff = cfg.reconnect_initial;
        } else {
          link->dial_wake.expires_after(jitter(backoff));
          backoff = std::min(backoff * 2, cfg.reconnect_max);
          auto wait_op2 = link->dial_wake.async_wait(kTuple);
          co_await std::move(wait_op2);
          continue;
        }
      }
    }
    link->dial_wake.expires_after(1s);
    auto wait_op3 = link->dial_wake.async_wait(kTuple);
    co_await std::move(wait_op3);
  }
}

net::awaitable<bool> KmHost::dial(LinkEnd* link, std::string endpoint) {
  auto hp = split_host_port(endpoint);
  if (!hp) throw InvalidArgument("bad KMA endpoint " + endpoint);
  tcp::resolver resolver(strand_);
  auto resolve_op = resolver.async_resolve(hp->first, hp->second, net::use_awaitable);
  auto results = co_await std::move(resolve_op);
  // shutdown() cancels the connect deadline (a connect that never completes, e.g. to a peer that
  // vanished, would otherwise hold the KM's stop for the whole kConnectTimeout).
  if (stopping()) co_return false;
  tcp::socket socket(strand_);
  net::steady_timer timer(strand_);
  timer.expires_after(kConnectTimeout);
  connect_timers_.insert(&timer);
  // As in ck_session: a refused connect fails now, not after kConnectTimeout.
  auto outcome = co_await (net::async_connect(socket, results, kTuple) || timer.async_wait(kTuple));
  connect_timers_.erase(&timer);
  if (stopping()) co_return false;
  if (outcome.index() != 0) throw Unavailable("connect timed out");
  if (const auto& [ec, peer] = std::get<0>(outcome); ec) {
    throw Unavailable("connect failed: " + ec.message());
  }
  if (link->session) co_return true;
  boost::system::error_code ignored;
  socket.set_option(tcp::no_delay(true), ignored);
  auto session =
      std::make_shared<KmaSession>(*this, std::move(socket), kma_client_tls_.get(), true);
  sessions_.insert(session);
  session->start_background();
  bool attached = false;
  try {
    auto handshake_op = session->handshake();
    co_await std::move(handshake_op);
    if (session->tls() && session->peer_identity() != link->peer_km) {
      throw Unavailable("peer certificate does not name " + link->peer_km);
    }
    session->send(
        json_frame(kma::Type::kHello,
                   {{"from_km", km_id_}, {"to_km", link->peer_km}, {"link_id", link->link_id}}));
    auto read_frame_op = session->read_frame(kFrameTimeout);
    auto [type, payload] = co_await std::move(read_frame_op);
    if (type != kma::Type::kHelloOk) {
      std::string why = "unexpected answer to hello";
      if (type == kma::Type::kError) {
        try {
          why = kma::parse_error(payload).message;
        } catch (const kma::BadMessage& e) {
          why = std::string("malformed error: ") + e.what();
        }
      }
      throw Unavailable("peer refused: " + why);
    }
    attached = attach(link, session);
    if (attached) begin_sync(*link);
  } catch (...) {
    session->close();
    detach(session);
    throw;
  }
  if (!attached) {
    session->close();
    detach(session);
    co_return link->session != nullptr;
  }
  spawn(
      [](KmHost* self, std::shared_ptr<KmaSession> s) -> net::awaitable<void> {
        try {
          auto loop = self->session_loop(s);
          co_await std::move(loop);
        } catch (const std::exception& e) {
          if (!self->stopping()) {
            log_line(LogLevel::kDebug, "KM " + self->km_id_ + ": KMA session: " + e.what());
          }
        }
        s->close();
        self->detach(s);
      }(this, session),
      "KMA outbound session of " + km_id_);
  co_return true;
}

bool KmHost::attach(LinkEnd* link, const std::shared_ptr<KmaSession>& session) {
  if (stopping()) return false;
  // Both ends keep the connection dialed by the primary when two exist (simultaneous dials).
  const bool preferred = session->dialer() == link->primary;
  if (link->session && link->session != session) {
    const bool old_preferred = link->session->dialer() == link->primary;
    if (old_preferred && !preferred && link->session->is_open()) return false;
    auto old = link->session;
    old->close();
    detach(old);
  }
  session->link = link;
  link->session = session;
  link->synced = false;
  link->pending.clear();
  log_line(LogLevel::kInfo,
           "KM " + km_id_ + ": KMA link " + link->link_id + " connected to " + link->peer_km);
  return true;
}

void KmHost::begin_sync(LinkEnd& link) {
  if (!link.primary || !link.session) return;
  link.session->send(kma::encode_seed_frame(link.store));
}

void KmHost::detach(const std::shared_ptr<KmaSession>& session) {
  sessions_.erase(session);
  LinkEnd* link = session->link;
  if (link == nullptr || link->session != session) return;
  link->session.reset();
  link->synced = false;
  link->pending.clear();  // never stored here; the peer trims them at the next sync
  link->dial_wake.cancel();
  if (!stopping()) {
    log_line(LogLevel::kInfo, "KM " + km_id_ + ": KMA link " + link->link_id + " disconnected");
    distributed_link_lost(*link);
  }
}

net::awaitable<void> KmHost::session_loop(std::shared_ptr<KmaSession> session) {
  while (session->is_open() && !stopping()) {
    auto read_frame_op = session->read_frame(kIdleTimeout);
    auto [type, payload] = co_await std::move(read_frame_op);
    on_kma_frame(session, type, payload);
    OPENSSL_cleanse(payload.data(), payload.size());
  }
}

void KmHost::on_kma_frame(const std::shared_ptr<KmaSession>& session, kma::Type type,
                          std::string& payload) {
  LinkEnd* link = session->link;
  if (link == nullptr || link->session != session) {
    session->close();
    return;
  }
  auto fail = [&](const std::string& why) {
    log_line(LogLevel::kWarn, "KM " + km_id_ + ": KMA link " + link->link_id + ": " + why);
    session->close();
  };
  switch (type) {
    case kma::Type::kSeed: {
      if (link->primary) return fail("unexpected seed");
      auto seed = kma::decode_seed(payload);
      if (!seed) return fail("malformed seed");
      const auto before = static_cast<std::int64_t>(link->store.size());
      // Same secret and at least the primary's blocks: drop the batches it never stored.
      // Otherwise (our restart, or the primary's) start empty where the primary's pool ends:
      // the primary drops its pool on in_sync false, and no block is ever used twice.
      bool in_sync =
          link->store.has_secret(seed->secret.data()) && link->store.trim_to(seed->minted);
      if (!in_sync) link->store.rekey(seed->secret.data(), seed->minted);
      link->keys_discarded += before - static_cast<std::int64_t>(link->store.size());
      link->peer_capacity_bits = seed->capacity_bits;
      link->synced = true;
      session->send(
          json_frame(kma::Type::kSyncOk,
                     {{"in_sync", in_sync}, {"capacity_bits", link->store.capacity_bits()}}));
      flush_discards(*link);
      return;
    }
    case kma::Type::kSyncOk: {
      if (!link->primary) return fail("unexpected sync_ok");
      kma::SyncOk msg;
      try {
        msg = kma::parse_sync_ok(payload);
      } catch (const kma::BadMessage& e) {
        return fail(std::string("malformed sync_ok: ") + e.what());
      }
      if (!msg.in_sync) {
        link->keys_discarded += static_cast<std::int64_t>(link->store.size());
        link->store.clear();
      }
      link->peer_capacity_bits = msg.capacity_bits;
      link->synced = true;
      link->last_generation = std::chrono::steady_clock::now();
      link->credit.reset();
      flush_discards(*link);
      return;
    }
    case kma::Type::kMint: {
      if (link->primary || !link->synced) return fail("unexpected mint");
      auto body = kma::decode_mint(payload);
      if (!body) return fail("malformed mint frame");
      const auto before = link->store.added_bits_total();
      link->store.mint(body->n);
      link->keys_generated += (link->store.added_bits_total() - before) / kKeyBits;
      session->send(kma::encode_ack_frame(body->seq));
      return;
    }
    case kma::Type::kAck: {
      auto seq = kma::decode_ack(payload);
      if (!link->primary || !seq || link->pending.empty() || link->pending.front().seq != *seq) {
        return fail("unexpected ack");
      }
      const auto before = link->store.added_bits_total();
      link->store.mint(link->pending.front().n);  // as the secondary did
      link->keys_generated += (link->store.added_bits_total() - before) / kKeyBits;
      link->pending.pop_front();
      return;
    }
    case kma::Type::kControl: {
      kma::Control msg;
      try {
        msg = kma::parse_control(payload);
      } catch (const kma::BadMessage& e) {
        return fail(std::string("malformed control: ") + e.what());
      }
      LinkControl c;
      c.key_rate_bps = msg.key_rate_bps;
      c.qber = msg.qber;
      c.up = msg.up;
      apply_control_local(*link, c);
      return;
    }
    case kma::Type::kPing:
      return;
    case kma::Type::kRelay:
      if (!link->synced) return fail("relay before sync");
      on_relay_frame(*link, session, payload);
      return;
    case kma::Type::kSupply:
      if (!link->synced) return fail("unexpected supply");
      on_supply_frame(*link, session, payload);
      return;
    case kma::Type::kSupplyAck:
      on_supply_ack(payload);
      return;
    case kma::Type::kRelayAck:
      on_relay_ack(payload);
      return;
    case kma::Type::kClaim:
      if (!link->synced) return fail("unexpected claim");
      on_claim_frame(*link, session, payload);
      return;
    case kma::Type::kClaimAck:
      on_claim_ack(payload);
      return;
    case kma::Type::kDiscard:
      on_discard_frame(*link, payload);
      return;
    case kma::Type::kError: {
      try {
        return fail("peer error: " + kma::parse_error(payload).message);
      } catch (const kma::BadMessage& e) {
        return fail(std::string("malformed peer error: ") + e.what());
      }
    }
    default:
      return fail("unknown KMA frame type");
  }
}

void KmHost::apply_control_local(LinkEnd& link, const LinkControl& control) {
  if (control.key_rate_bps && std::isfinite(*control.key_rate_bps) && *control.key_rate_bps >= 0) {
    link.key_rate_bps = *control.key_rate_bps;
  }
  if (control.qber && std::isfinite(*control.qber) && *control.qber >= 0 && *control.qber <= 1) {
    link.qber = *control.qber;
  }
  if (control.up) link.admin_up = *control.up;
  evaluate_alarms(link);
}

// ---- generation and alarms -------------------------------------------------------------------

net::awaitable<void> KmHost::tick_loop() {
  const auto tick = core_.config().generation_tick;
  auto next = std::chrono::steady_clock::now();
  while (!stopping()) {
    next += tick;
    tick_timer_.expires_at(next);
    auto wait_op = tick_timer_.async_wait(kTuple);
    co_await std::move(wait_op);
    if (stopping()) break;
    const auto now = std::chrono::steady_clock::now();
    if (next < now - tick * 10) next = now;  // we fell far behind: do not burst
    expire_key_supply(now);
    for (auto& l : links_) {
      if (l->primary) generate(*l, now);
      l->meter.sample(now, l->store.added_bits_total());
      l->consumption_meter.sample(now, l->keys_consumed * kKeyBits);
      evaluate_alarms(*l);
      if (l->session && now - l->session->last_sent > kPingInterval) {
        l->session->send(kma::encode_frame(kma::Type::kPing, {}));
      }
    }
  }
}

void KmHost::generate(LinkEnd& link, SteadyTime now) {
  const double dt = std::chrono::duration<double>(now - link.last_generation).count();
  link.last_generation = now;
  if (!link.up() || link.key_rate_bps <= 0) {
    link.credit.reset();
    return;
  }
  link.credit.accrue(link.key_rate_bps, dt);
  // Each parity half of the store gets half of min(own, peer) capacity. New blocks go to the
  // half with more room, so one-way demand (only one end's half consumed) never fills the store
  // with the unused half and stalls generation; it pauses only while both are full. Blocks are
  // counted, not made: both ends derive their IDs and bytes when they are used (KeyStore).
  if (link.pending.size() >= kMaxPendingBatches) return;
  std::array<std::int64_t, 2> in_flight{};
  for (const auto& p : link.pending) {
    in_flight[0] += p.n[0];
    in_flight[1] += p.n[1];
  }
  const auto room = link.store.generation_room(link.peer_capacity_bits, in_flight);
  const std::int64_t n = link.credit.spend(room[0] + room[1], kma::kMaxMintPerFrame);
  if (n <= 0) return;
  LinkEnd::Pending batch{link.next_seq, split_by_room(n, room, link.next_seq)};
  ++link.next_seq;
  link.session->send(kma::encode_mint_frame(batch.seq, batch.n));
  link.pending.push_back(batch);
}

void KmHost::evaluate_alarms(LinkEnd& link) {
  const auto& cfg = core_.config();
  const bool up = link.up();
  if (up != link.last_up) {
    link.last_up = up;
    if (!up) {
      link.down_raised = true;
      send_alarm(link, "link_down", "major", std::nullopt,
                 link.admin_up ? "KMA link to " + link.peer_km + " lost" : "link set down");
    } else if (link.down_raised) {
      link.down_raised = false;
      send_alarm(link, "link_up", "cleared", std::nullopt, "link up");
    }
  }
  if (!link.qber_raised && link.qber > cfg.qber_threshold) {
    link.qber_raised = true;
    send_alarm(link, "qber_high", "major", link.qber, "QBER above threshold");
  } else if (link.qber_raised && link.qber < cfg.qber_threshold - cfg.qber_hysteresis) {
    link.qber_raised = false;
    send_alarm(link, "qber_high", "cleared", link.qber, "QBER back below threshold");
  }
  if (cfg.pool_floor_bits > 0) {
    const auto bits = link.store.stored_bits();
    if (!link.pool_low_raised && bits < cfg.pool_floor_bits) {
      link.pool_low_raised = true;
      send_alarm(link, "key_pool_low", "minor", static_cast<double>(bits), "key pool below floor");
    } else if (link.pool_low_raised &&
               bits >= cfg.pool_floor_bits +
                           std::max<std::int64_t>(kKeyBits, cfg.pool_floor_bits / 10)) {
      link.pool_low_raised = false;
      send_alarm(link, "key_pool_low", "cleared", static_cast<double>(bits), "key pool refilled");
    }
  }
}

// ---- strand-side queries ---------------------------------------------------------------------

net::awaitable<KmSnapshot> KmHost::snapshot() {
  KmSnapshot s;
  s.km_id = km_id_;
  s.kma_endpoint = kma_endpoint_;
  s.registered = registered_;
  s.controller_epoch = controller_epoch_;
  s.registrations = registrations_;
  s.busy_refusals = busy_refusals_;
  s.relay_routing = distributed_relay_ ? "distributed" : "centralized";
  s.supplied_keys = static_cast<std::int64_t>(supplied_.size());
  s.iwn = iwn_stats_;
  s.keys_by_mode = keys_by_mode_;
  s.keys_by_delivery = keys_by_delivery_;
  s.deliveries.assign(deliveries_.begin(), deliveries_.end());
  for (const auto& l : links_) {
    LinkSnapshot ls;
    ls.link_id = l->link_id;
    ls.peer_km_id = l->peer_km;
    ls.qkd_module_id = l->store.qkd_module_id();
    ls.matching_qkd_module_id = l->store.matching_qkd_module_id();
    ls.primary = l->primary;
    ls.up = l->up();
    ls.admin_up = l->admin_up;
    ls.kma_connected = l->session != nullptr;
    ls.stored_keys = static_cast<std::int64_t>(l->store.size());
    ls.stored_key_bits = l->store.stored_bits();
    ls.capacity_bits = l->store.capacity_bits();
    ls.key_rate_bps = l->key_rate_bps;
    ls.measured_key_rate_bps = l->meter.rate_per_second();
    ls.qber = l->qber;
    ls.consumption_rate_bps = l->consumption_meter.rate_per_second();
    ls.keys_generated = l->keys_generated;
    ls.keys_available = static_cast<std::int64_t>(l->store.count(KeyState::kAvailable));
    ls.keys_reserved = static_cast<std::int64_t>(l->store.count(KeyState::kReserved));
    ls.keys_allocated = static_cast<std::int64_t>(l->store.count(KeyState::kAllocated));
    ls.keys_consumed = l->keys_consumed;
    ls.keys_discarded = l->keys_discarded;
    s.links.push_back(std::move(ls));
  }
  co_return s;
}

net::awaitable<bool> KmHost::apply_control(std::string link_id, LinkControl control,
                                           bool propagate) {
  auto it = link_by_id_.find(link_id);
  if (it == link_by_id_.end()) co_return false;
  LinkEnd& link = *it->second;
  apply_control_local(link, control);
  if (propagate && link.session) {
    json::object msg;
    if (control.key_rate_bps) msg["key_rate_bps"] = *control.key_rate_bps;
    if (control.qber) msg["qber"] = *control.qber;
    if (control.up) msg["up"] = *control.up;
    link.session->send(json_frame(kma::Type::kControl, msg));
  }
  co_return true;
}

net::awaitable<std::optional<std::string>> KmHost::digest(std::string link_id) {
  if (link_id.starts_with("relay:")) {  // test hook: the e2e keys of a relay (source or dest)
    auto d = delivered_.find(link_id.substr(6));
    if (d == delivered_.end()) co_return std::nullopt;
    co_return digest_of(d->second.keys);
  }
  auto it = link_by_id_.find(link_id);
  if (it == link_by_id_.end()) co_return std::nullopt;
  co_return it->second->store.digest_hex();
}

net::awaitable<void> KmHost::disconnect() {
  if (channel_) channel_->close();
  co_return;
}

// ---- AgentCore -------------------------------------------------------------------------------

AgentCore::AgentCore(net::io_context& io, AgentConfig config)
    : io_(io), config_(std::move(config)), kma_pending_(config_.kma_max_pending) {
  for (const auto& id : config_.km_ids) {
    auto host = std::make_unique<KmHost>(*this, id);
    by_id_[id] = host.get();
    hosts_.push_back(std::move(host));
  }
  for (const auto& a : config_.topology.applications) {
    if (auto it = by_id_.find(a.km_id); it != by_id_.end()) by_sae_[a.sae_id] = it->second;
    sae_ids_.push_back(a.sae_id);
  }
  init_iwn();  // kxi_host.cpp
}

AgentCore::~AgentCore() = default;

void AgentCore::start() {
  if (started_) return;
  started_ = true;
  for (auto& h : hosts_) h->bind_listener();
  for (auto& h : hosts_) h->start();
}

void AgentCore::stop() {
  if (stopping_.exchange(true)) return;
  for (auto& h : hosts_) h->stop();
}

std::optional<std::string> AgentCore::local_endpoint(const std::string& km_id) const {
  auto it = by_id_.find(km_id);
  if (it == by_id_.end() || it->second->kma_endpoint().empty()) return std::nullopt;
  return it->second->kma_endpoint();
}

void AgentCore::spawn(const net::any_io_executor& ex, net::awaitable<void> work, std::string what) {
  {
    std::lock_guard lock(drain_mutex_);
    ++running_;
  }
  net::co_spawn(ex, std::move(work), [this, what = std::move(what)](const std::exception_ptr& e) {
    if (e) log_line(LogLevel::kError, what + " ended: " + describe(e));
    std::lock_guard lock(drain_mutex_);
    if (--running_ == 0) drained_.notify_all();
  });
}

void AgentCore::post(const net::any_io_executor& ex, std::function<void()> fn) {
  {
    std::lock_guard lock(drain_mutex_);
    ++running_;
  }
  net::post(ex, [this, fn = std::move(fn)] {
    try {
      fn();
    } catch (const std::exception& e) {
      log_line(LogLevel::kError, std::string("posted work failed: ") + e.what());
    }
    std::lock_guard lock(drain_mutex_);
    if (--running_ == 0) drained_.notify_all();
  });
}

bool AgentCore::wait_drained(std::chrono::milliseconds timeout) {
  std::unique_lock lock(drain_mutex_);
  return drained_.wait_for(lock, timeout, [this] { return running_ == 0; });
}

KmHost* AgentCore::find(const std::string& km_id) const {
  auto it = by_id_.find(km_id);
  return it == by_id_.end() ? nullptr : it->second;
}

net::awaitable<std::vector<KmSnapshot>> AgentCore::snapshot() {
  std::vector<KmSnapshot> out;
  out.reserve(hosts_.size());
  for (auto& h : hosts_) {
    auto op = h->snapshot();
    auto hop = qkdn::net::run_on(h->strand(), std::move(op));
    KmSnapshot snap = co_await std::move(hop);
    out.push_back(std::move(snap));
  }
  co_return out;
}

net::awaitable<bool> AgentCore::control_link(std::string link_id, LinkControl control) {
  std::vector<KmHost*> ends;
  for (const auto& l : config_.topology.links) {
    if (l.link_id != link_id) continue;
    for (const auto* km : {&l.a, &l.b}) {
      if (auto* h = find(*km)) ends.push_back(h);
    }
  }
  // Forward to the remote end only when this process hosts just one end.
  const bool propagate = ends.size() == 1;
  bool any = false;
  for (auto* h : ends) {
    auto op = h->apply_control(link_id, control, propagate);
    auto hop = qkdn::net::run_on(h->strand(), std::move(op));
    const bool applied = co_await std::move(hop);
    any = any || applied;
  }
  co_return any;
}

net::awaitable<bool> AgentCore::disconnect(std::string km_id) {
  auto* h = find(km_id);
  if (h == nullptr) co_return false;
  auto op = h->disconnect();
  auto hop = qkdn::net::run_on(h->strand(), std::move(op));
  co_await std::move(hop);
  co_return true;
}

net::awaitable<std::optional<std::string>> AgentCore::digest(std::string km_id,
                                                             std::string link_id) {
  auto* h = find(km_id);
  if (h == nullptr) co_return std::nullopt;
  auto op = h->digest(std::move(link_id));
  auto hop = qkdn::net::run_on(h->strand(), std::move(op));
  auto result = co_await std::move(hop);
  co_return result;
}

}  // namespace qkdn::agent
