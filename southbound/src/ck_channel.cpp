// CkChannel over plain TCP or TLS (ck-protocol.md clauses 1, 2 and 5).
//
// Shape (Beast advanced server): everything runs on one strand per connection; one reader that
// holds at most one frame in a fixed-capacity buffer; one writer that drains a queue; one
// watchdog that enforces every deadline (handshake, mid-frame stall, idle peer, stalled write).
// The watchdog is a single timer per connection that re-arms itself lazily instead of a timer
// per read: a read costs no timer operation, which keeps the hot path at one syscall per batch.
#include <algorithm>
#include <atomic>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include "qkdn/controller/error.hpp"
#include "qkdn/net/run_on.hpp"
#include "qkdn/southbound/ck_channel.hpp"

namespace qkdn::southbound {
namespace {

using namespace net::experimental::awaitable_operators;
using Strand = net::strand<net::any_io_executor>;
using SteadyTime = std::chrono::steady_clock::time_point;
using net::ip::tcp;

constexpr std::size_t kMaxFrame = ck::kHeaderSize + ck::kMaxPayload;
// Small frames (the common case) are read in batches of up to this many bytes.
constexpr std::size_t kInitialBuffer = 4096;
constexpr auto kUseTuple = net::as_tuple(net::use_awaitable);

std::string endpoint_text(const tcp::socket& s) {
  boost::system::error_code ec;
  auto ep = s.remote_endpoint(ec);
  if (ec) return "?";
  auto addr = ep.address().to_string();
  if (ep.address().is_v6()) addr = "[" + addr + "]";
  return addr + ":" + std::to_string(ep.port());
}

// Re-creates the socket on a new strand so that every handler of this connection is serialized.
tcp::socket rebind_to_strand(tcp::socket socket, const Strand& strand) {
  boost::system::error_code ec;
  const auto ep = socket.local_endpoint(ec);
  const auto protocol = ec ? tcp::v4() : ep.protocol();
  const auto fd = socket.release();
  tcp::socket out(strand, protocol, fd);
  out.set_option(tcp::no_delay(true), ec);  // Ck is request/response: latency over batching
  return out;
}

template <class Stream>
class ChannelImpl final : public CkChannel {
  static constexpr bool kTls = !std::is_same_v<Stream, tcp::socket>;

 public:
  ChannelImpl(Strand strand, Stream stream, bool server, ChannelOptions options,
              ChannelObserver observer)
      : strand_(std::move(strand)),
        stream_(std::move(stream)),
        server_(server),
        options_(options),
        observer_(std::move(observer)),
        watchdog_(strand_),
        writer_wake_(strand_) {
    remote_ = endpoint_text(lowest());
  }

  net::awaitable<void> run(FrameHandler handler) override {
    auto self = std::static_pointer_cast<ChannelImpl>(shared_from_this());
    // GCC 12 destroys by-value argument temporaries of a call inside a co_await expression twice
    // (PR 99576-like): coroutines with non-trivial arguments are created in their own statement.
    auto op = run_on_strand(self, std::move(handler));
    auto hop = qkdn::net::run_on(strand_, std::move(op));
    co_await std::move(hop);
  }

  net::awaitable<ck::Frame> request(ck::Message command) override {
    return request(std::move(command), options_.request_timeout);
  }

  net::awaitable<ck::Frame> request(ck::Message command,
                                    std::chrono::milliseconds timeout) override {
    auto self = std::static_pointer_cast<ChannelImpl>(shared_from_this());
    auto op = do_request(self, std::move(command), timeout);
    auto hop = qkdn::net::run_on(strand_, std::move(op));
    co_return co_await std::move(hop);
  }

  std::uint32_t send(ck::Message message, std::optional<std::uint32_t> reply_to) override {
    const auto code = static_cast<std::uint16_t>(ck::command_of(message));
    const std::uint32_t id = reply_to ? *reply_to : next_message_id();
    std::string bytes = ck::encode_frame({id, code, ck::encode_payload(message)});
    net::dispatch(strand_, [self = shared_from_this(), b = std::move(bytes), code]() mutable {
      static_cast<ChannelImpl&>(*self).enqueue(std::move(b), code);
    });
    return id;
  }

  void close() override {
    net::dispatch(strand_,
                  [self = shared_from_this()] { static_cast<ChannelImpl&>(*self).close_now(); });
  }

  void close_after_flush() override {
    net::dispatch(strand_, [self = shared_from_this()] {
      auto& me = static_cast<ChannelImpl&>(*self);
      if (me.closed_ || me.draining_) return;
      me.draining_ = true;
      me.drain_start_ = std::chrono::steady_clock::now();
      me.wake_writer();
      me.watchdog_.cancel();  // re-evaluate deadlines: the drain is bounded too
    });
  }

  [[nodiscard]] std::string peer_identity() const override { return peer_identity_; }
  void mark_established() override {
    net::dispatch(strand_, [self = shared_from_this()] {
      static_cast<ChannelImpl&>(*self).established_ = true;
    });
  }
  [[nodiscard]] std::string remote_endpoint() const override { return remote_; }
  [[nodiscard]] net::any_io_executor executor() const override { return strand_; }
  [[nodiscard]] bool is_open() const override { return open_.load(); }

 private:
  struct Pending {
    explicit Pending(const Strand& s) : timer(s) {}
    std::uint16_t expect = 0;
    net::steady_timer timer;
    std::optional<ck::Frame> frame;
  };

  tcp::socket& lowest() {
    if constexpr (kTls) {
      return stream_.next_layer();
    } else {
      return stream_;
    }
  }

  std::uint32_t next_message_id() {
    // Skips 0 on wrap-around: MessageIDs start at 1 (clause 2).
    std::uint32_t id = next_id_.fetch_add(1);
    while (id == 0) id = next_id_.fetch_add(1);
    return id;
  }

  void protocol_error(std::string_view reason) {
    if (observer_.on_protocol_error) observer_.on_protocol_error(reason);
  }

  // ---- lifecycle ----------------------------------------------------------------------------

  static net::awaitable<void> run_on_strand(std::shared_ptr<ChannelImpl> self,
                                            FrameHandler handler) {
    if (self->running_) throw Internal("CkChannel::run called twice");
    self->running_ = true;
    self->run_start_ = std::chrono::steady_clock::now();
    last_activity(*self);
    // The watchdog never finishes on its own while the channel is open; `||` cancels it once the
    // reader and the writer are both done, and waits for it to unwind.
    auto session = self->session(std::move(handler));
    auto watchdog = self->watchdog();
    co_await (std::move(session) || std::move(watchdog));
    self->close_now();
  }

  static void last_activity(ChannelImpl& me) { me.last_frame_ = std::chrono::steady_clock::now(); }

  net::awaitable<void> session(FrameHandler handler) {
    if constexpr (kTls) {
      handshaking_ = true;
      handshake_start_ = std::chrono::steady_clock::now();
      watchdog_.cancel();
      auto handshake_op = stream_.async_handshake(
          server_ ? net::ssl::stream_base::server : net::ssl::stream_base::client, kUseTuple);
      auto [ec] = co_await std::move(handshake_op);
      handshaking_ = false;
      if (ec) {
        protocol_error("tls_handshake");
        close_now();
        co_return;
      }
      const auto role = options_.peer_role.value_or(server_ ? qkdn::net::PeerRole::kKm
                                                            : qkdn::net::PeerRole::kController);
      peer_identity_ = qkdn::net::peer_identity(stream_.native_handle(), role);
      if (!options_.expected_peer.empty() && peer_identity_ != options_.expected_peer) {
        // A KM pins its controller: any other certificate of the CA (a KM's, an SAE's) is not
        // the controller, whatever it chains to.
        protocol_error("peer_identity");
        close_now();
        co_return;
      }
      last_activity(*this);
    }
    auto read_loop = reader(std::move(handler));
    auto write_loop = writer();
    co_await (std::move(read_loop) && std::move(write_loop));
  }

  void close_now() {
    if (closed_) return;
    closed_ = true;
    open_ = false;
    boost::system::error_code ignored;
    lowest().shutdown(tcp::socket::shutdown_both, ignored);
    lowest().close(ignored);
    watchdog_.cancel();
    wake_writer();
    for (auto& [id, p] : pending_) p->timer.cancel();
  }

  // ---- watchdog -----------------------------------------------------------------------------

  // The earliest deadline currently in force, and why.
  std::pair<SteadyTime, std::string_view> deadline() const {
    SteadyTime d = SteadyTime::max();
    std::string_view why;
    auto consider = [&](SteadyTime t, std::string_view w) {
      if (t < d) {
        d = t;
        why = w;
      }
    };
    if (handshaking_) {
      consider(handshake_start_ + options_.handshake_timeout, "tls_handshake_timeout");
    }
    if (options_.establish_timeout.count() > 0 && !established_) {
      consider(run_start_ + options_.establish_timeout, "establish_timeout");
    }
    if (in_handler_) {
      // the reader is busy, not the peer
    } else if (end_ > begin_) {
      consider(frame_start_ + options_.read_timeout, "read_timeout");
    } else if (options_.idle_timeout.count() > 0 && !handshaking_) {
      consider(last_frame_ + options_.idle_timeout, "idle_timeout");
    }
    if (writing_) consider(write_start_ + options_.read_timeout, "write_timeout");
    if (draining_) consider(drain_start_ + options_.read_timeout, "write_timeout");
    return {d, why};
  }

  net::awaitable<void> watchdog() {
    // Between checks the timer never sleeps longer than the shortest timeout, so any deadline set
    // later (always at least that far in the future) is never overshot.
    auto period = std::min(options_.read_timeout, options_.handshake_timeout);
    if (options_.idle_timeout.count() > 0) period = std::min(period, options_.idle_timeout);
    if (options_.establish_timeout.count() > 0) {
      period = std::min(period, options_.establish_timeout);
    }
    while (!closed_) {
      const auto now = std::chrono::steady_clock::now();
      const auto [d, why] = deadline();
      if (d <= now) {
        protocol_error(why);
        close_now();
        co_return;
      }
      watchdog_.expires_at(std::min(d, now + period));
      auto wait_op = watchdog_.async_wait(kUseTuple);
      co_await std::move(wait_op);
    }
  }

  // ---- reader -------------------------------------------------------------------------------

  // Ensures `need` bytes of the current frame are buffered; false when the stream ended.
  net::awaitable<bool> fill(std::size_t need) {
    while (end_ - begin_ < need) {
      if (capacity_ - begin_ < need || end_ == capacity_) {
        if (begin_ > 0) {
          std::memmove(buf_.get(), buf_.get() + begin_, end_ - begin_);
          end_ -= begin_;
          begin_ = 0;
        }
        if (capacity_ < need || capacity_ == end_) grow(std::max(need, kInitialBuffer));
      }
      const bool frame_started = end_ > begin_;
      auto read_some_op =
          stream_.async_read_some(net::buffer(buf_.get() + end_, capacity_ - end_), kUseTuple);
      auto [ec, n] = co_await std::move(read_some_op);
      if (ec || closed_) co_return false;
      if (!frame_started) frame_start_ = std::chrono::steady_clock::now();
      end_ += n;
    }
    co_return true;
  }

  void grow(std::size_t want) {
    want = std::min(want, kMaxFrame);
    if (want <= capacity_) return;
    auto bigger = std::make_unique<std::uint8_t[]>(want);
    if (end_ > begin_) std::memcpy(bigger.get(), buf_.get() + begin_, end_ - begin_);
    end_ -= begin_;
    begin_ = 0;
    buf_ = std::move(bigger);
    capacity_ = want;
    if (observer_.on_buffer_grow) observer_.on_buffer_grow(capacity_);
  }

  net::awaitable<void> reader(FrameHandler handler) {
    auto self = shared_from_this();
    while (!closed_ && !draining_) {
      auto header_op = fill(ck::kHeaderSize);
      if (!co_await std::move(header_op)) break;
      const auto header = ck::decode_header(
          std::span<const std::uint8_t, ck::kHeaderSize>(buf_.get() + begin_, ck::kHeaderSize));
      if (header.version != ck::kVersion) {
        protocol_error("unsupported_version");
        send(ck::ErrorMessage{std::string(ck::errc::kUnsupportedVersion),
                              "version " + std::to_string(header.version) + " is not supported",
                              header.message_id, !options_.controller_side},
             header.message_id);
        close_after_flush();
        break;
      }
      auto payload_op = fill(ck::kHeaderSize + header.length);
      if (!co_await std::move(payload_op)) break;
      ck::Frame frame{
          header.message_id, header.command,
          std::string(reinterpret_cast<const char*>(buf_.get() + begin_ + ck::kHeaderSize),
                      header.length)};
      begin_ += ck::kHeaderSize + header.length;
      if (begin_ == end_)
        begin_ = end_ = 0;
      else
        frame_start_ = std::chrono::steady_clock::now();  // next frame already began
      last_activity(*this);
      if (observer_.on_message) observer_.on_message(true, frame.command);

      if (auto it = pending_.find(frame.message_id);
          it != pending_.end() &&
          (frame.command == it->second->expect ||
           frame.command == static_cast<std::uint16_t>(ck::Command::kErrorFromKm) ||
           frame.command == static_cast<std::uint16_t>(ck::Command::kErrorFromController))) {
        it->second->frame = std::move(frame);
        it->second->timer.cancel();
        continue;
      }
      if (draining_) break;
      // While the handler runs, frames already buffered are not "stalled": their clock restarts
      // when reading resumes.
      in_handler_ = true;
      try {
        auto op = handler(self, std::move(frame));
        co_await std::move(op);
      } catch (const std::exception&) {
        in_handler_ = false;
        protocol_error("handler_exception");
        close_now();
        break;
      }
      in_handler_ = false;
      frame_start_ = last_frame_ = std::chrono::steady_clock::now();
    }
    if (!draining_) close_now();
  }

  // ---- writer -------------------------------------------------------------------------------

  void enqueue(std::string bytes, std::uint16_t code) {
    if (closed_) return;
    if (queued_ >= options_.max_queued_writes) {
      protocol_error("write_queue_full");
      close_now();
      return;
    }
    out_queue_ += bytes;
    ++queued_;
    if (observer_.on_message) observer_.on_message(false, code);
    wake_writer();
  }

  void wake_writer() {
    if (writer_waiting_) writer_wake_.cancel();
  }

  net::awaitable<void> writer() {
    std::string out;
    while (!closed_) {
      if (out_queue_.empty()) {
        if (draining_) {
          // Everything queued before the drain request is on the wire: half-close so the peer
          // reads it all, then close.
          boost::system::error_code ignored;
          lowest().shutdown(tcp::socket::shutdown_send, ignored);
          close_now();
          break;
        }
        writer_waiting_ = true;
        writer_wake_.expires_at(SteadyTime::max());
        auto wait_op = writer_wake_.async_wait(kUseTuple);
        co_await std::move(wait_op);
        writer_waiting_ = false;
        continue;
      }
      out.clear();
      std::swap(out, out_queue_);
      queued_ = 0;
      writing_ = true;
      write_start_ = std::chrono::steady_clock::now();
      auto write_op = net::async_write(stream_, net::buffer(out), kUseTuple);
      auto [ec, n] = co_await std::move(write_op);
      writing_ = false;
      if (ec) {
        close_now();
        break;
      }
    }
  }

  // ---- requests -----------------------------------------------------------------------------

  static net::awaitable<ck::Frame> do_request(std::shared_ptr<ChannelImpl> self,
                                              ck::Message command,
                                              std::chrono::milliseconds timeout) {
    const auto code = ck::command_of(command);
    const auto expect = ck::response_of(code);
    if (!expect) {
      throw InvalidArgument("command 0x" + std::to_string(static_cast<int>(code)) +
                            " has no response to wait for");
    }
    if (self->closed_) throw Unavailable("Ck channel to " + self->remote_ + " is closed");
    std::string payload = ck::encode_payload(command);
    const std::uint32_t id = self->next_message_id();
    Pending pending(self->strand_);
    pending.expect = static_cast<std::uint16_t>(*expect);
    pending.timer.expires_after(timeout);
    self->pending_[id] = &pending;
    self->enqueue(ck::encode_frame({id, static_cast<std::uint16_t>(code), std::move(payload)}),
                  static_cast<std::uint16_t>(code));
    auto wait_op = pending.timer.async_wait(kUseTuple);
    co_await std::move(wait_op);
    self->pending_.erase(id);
    if (pending.frame) co_return std::move(*pending.frame);
    if (self->closed_) throw Unavailable("Ck channel to " + self->remote_ + " closed");
    throw Unavailable(std::string(ck::command_name(static_cast<std::uint16_t>(code))) + " to " +
                      self->remote_ + ": timeout");
  }

  Strand strand_;
  Stream stream_;
  bool server_;
  ChannelOptions options_;
  ChannelObserver observer_;
  std::string remote_;
  std::string peer_identity_;
  std::atomic<std::uint32_t> next_id_{1};
  std::atomic<bool> open_{true};

  // Everything below is touched on the strand only.
  bool running_ = false;
  bool closed_ = false;
  bool draining_ = false;
  bool handshaking_ = false;
  bool writing_ = false;
  bool in_handler_ = false;
  bool writer_waiting_ = false;
  bool established_ = false;
  SteadyTime run_start_{};
  SteadyTime handshake_start_{};
  SteadyTime frame_start_{};
  SteadyTime last_frame_{};
  SteadyTime write_start_{};
  SteadyTime drain_start_{};
  net::steady_timer watchdog_;
  net::steady_timer writer_wake_;

  std::unique_ptr<std::uint8_t[]> buf_;
  std::size_t capacity_ = 0;
  std::size_t begin_ = 0;
  std::size_t end_ = 0;

  std::string out_queue_;
  std::size_t queued_ = 0;
  std::map<std::uint32_t, Pending*> pending_;
};

}  // namespace

std::unique_ptr<net::ssl::context> make_tls_context(const TlsFiles& files, bool server) {
  qkdn::net::TlsSettings s;
  s.server = server;
  s.tls13_only = true;
  s.verify_peer = true;
  return qkdn::net::make_tls_context(files, s);
}

std::shared_ptr<CkChannel> make_plain_channel(net::ip::tcp::socket socket, ChannelOptions options,
                                              ChannelObserver observer) {
  Strand strand = net::make_strand(socket.get_executor());
  auto s = rebind_to_strand(std::move(socket), strand);
  return std::make_shared<ChannelImpl<tcp::socket>>(std::move(strand), std::move(s), true, options,
                                                    std::move(observer));
}

std::shared_ptr<CkChannel> make_tls_channel(net::ip::tcp::socket socket, net::ssl::context& ctx,
                                            bool server, ChannelOptions options,
                                            ChannelObserver observer) {
  options.controller_side = server;
  Strand strand = net::make_strand(socket.get_executor());
  net::ssl::stream<tcp::socket> stream(rebind_to_strand(std::move(socket), strand), ctx);
  return std::make_shared<ChannelImpl<net::ssl::stream<tcp::socket>>>(
      std::move(strand), std::move(stream), server, options, std::move(observer));
}

}  // namespace qkdn::southbound
