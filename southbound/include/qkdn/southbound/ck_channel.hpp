// One Ck connection, used by both ends (controller sessions and KM agents): a bounded, timed
// frame reader; one writer queue; request/response correlation by MessageID with timeouts.
// Include only from translation units that need Asio.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>

#include "qkdn/net/tls.hpp"
#include "qkdn/southbound/ck_frame.hpp"
#include "qkdn/southbound/ck_messages.hpp"

namespace qkdn::southbound {

namespace net = boost::asio;

/// Limits and timers of one connection (ck-protocol.md clauses 2 and 5).
struct ChannelOptions {
  std::chrono::milliseconds handshake_timeout{10'000};  ///< the TLS handshake
  std::chrono::milliseconds read_timeout{10'000};       ///< a frame must complete within this
  std::chrono::milliseconds idle_timeout{0};  ///< 0 = none; else close when no frame arrives
  /// 0 = none; else the connection closes unless mark_established() is called within this time
  /// after run() started (the controller: handshake and registration of an unknown peer).
  std::chrono::milliseconds establish_timeout{0};
  std::chrono::milliseconds request_timeout{5'000};  ///< a request without response fails
  std::size_t max_queued_writes = 4096;              ///< beyond this the peer is too slow: close
  /// Which end this is, for the Error frames the channel sends itself (unsupported_version):
  /// 0x41EF on the controller, 0x14EF on a KM. make_tls_channel derives it from `server`.
  bool controller_side = true;
  /// TLS: the certificate role of the peer (qkdn/net/tls.hpp), from which peer_identity() is
  /// read. make_tls_channel derives it from `server` unless set: a server expects a KM, a client
  /// the controller.
  std::optional<qkdn::net::PeerRole> peer_role;
  /// TLS: when non-empty, the handshake fails (the channel closes before any frame is sent)
  /// unless the peer's identity in peer_role is exactly this (a KM pins its controller).
  std::string expected_peer;
};

/// Counters a channel reports to (metrics live elsewhere). Every member may be empty.
struct ChannelObserver {
  std::function<void(bool inbound, std::uint16_t command)> on_message;
  std::function<void(std::string_view reason)> on_protocol_error;
  /// Called on the channel's strand whenever the per-connection read buffer grows, with its new
  /// capacity in bytes (never above ck::kHeaderSize + ck::kMaxPayload).
  std::function<void(std::size_t capacity)> on_buffer_grow;
};

/// A Ck connection over plain TCP or TLS. All its work runs on its own strand. Created with
/// make_plain / make_tls; owned by shared_ptr (the read loop holds a reference while running).
class CkChannel : public std::enable_shared_from_this<CkChannel> {
 public:
  /// Called on the channel's strand for every inbound frame that is not a response to one of our
  /// own pending requests (i.e. a command, or a response nobody waits for). `frame.payload` is
  /// raw; the handler decodes it. Exceptions thrown by the handler close the channel.
  using FrameHandler = std::function<net::awaitable<void>(std::shared_ptr<CkChannel>, ck::Frame)>;

  virtual ~CkChannel() = default;

  /// Reads frames until EOF, error, timeout or close(); dispatches them. Frames with a wrong
  /// version get Error unsupported_version and close the channel. Returns when the channel ends.
  virtual net::awaitable<void> run(FrameHandler handler) = 0;

  /// Sends a command with a fresh MessageID and waits for the frame that carries the same
  /// MessageID and the paired response code (ck_messages.hpp response_of), or for an Error
  /// frame naming that MessageID. Throws qkdn::Unavailable on timeout or closed channel.
  virtual net::awaitable<ck::Frame> request(ck::Message command) = 0;
  /// Same with an explicit timeout.
  virtual net::awaitable<ck::Frame> request(ck::Message command,
                                            std::chrono::milliseconds timeout) = 0;

  /// Queues a message without waiting. `reply_to` = MessageID of the command it answers
  /// (responses and Error); otherwise a fresh MessageID is taken. Returns the MessageID used.
  /// Thread-safe: posts to the strand. Closes the channel if the write queue is full.
  virtual std::uint32_t send(ck::Message message, std::optional<std::uint32_t> reply_to = {}) = 0;

  /// Closes the connection (idempotent, thread-safe). Pending requests fail with Unavailable.
  virtual void close() = 0;
  /// Stops dispatching inbound frames, sends what is queued (bounded by the read timeout), then
  /// closes. Use after queueing a final Error. Idempotent, thread-safe.
  virtual void close_after_flush() = 0;

  /// Peer identity in ChannelOptions::peer_role from the verified TLS certificate (the `<id>` of
  /// its SAN URI urn:qkdn:<role>:<id>; see qkdn/net/tls.hpp). Empty for plain TCP.
  [[nodiscard]] virtual std::string peer_identity() const = 0;
  /// Ends the establish_timeout deadline (thread-safe, idempotent).
  virtual void mark_established() = 0;
  /// "ip:port" of the peer.
  [[nodiscard]] virtual std::string remote_endpoint() const = 0;
  /// The channel's strand executor.
  [[nodiscard]] virtual net::any_io_executor executor() const = 0;
  [[nodiscard]] virtual bool is_open() const = 0;
};

/// Wraps an accepted or connected plain TCP socket.
std::shared_ptr<CkChannel> make_plain_channel(net::ip::tcp::socket socket, ChannelOptions options,
                                              ChannelObserver observer = {});
/// Wraps a TCP socket in TLS; `server` selects the handshake role. The handshake runs inside
/// run() before the first read (and fails the channel on error).
std::shared_ptr<CkChannel> make_tls_channel(net::ip::tcp::socket socket, net::ssl::context& ctx,
                                            bool server, ChannelOptions options,
                                            ChannelObserver observer = {});

/// The PEM files of a Ck endpoint.
using TlsFiles = qkdn::net::TlsFiles;

/// A Ck context (ck-protocol.md clause 1): TLS 1.3 only, our certificate, and a peer
/// certificate required and verified against files.ca_file. Throws InvalidArgument naming the
/// file that cannot be loaded.
std::unique_ptr<net::ssl::context> make_tls_context(const TlsFiles& files, bool server);

}  // namespace qkdn::southbound
