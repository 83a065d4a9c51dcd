// Blocking TLS and TCP probes for the security tests: connect, handshake with a chosen client
// context, send bytes, read the answer, all under a deadline. Outcomes are facts about the wire
// (handshake failed, closed, bytes received), never log text.
#pragma once

#include <sys/socket.h>

#include <openssl/ssl.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/write.hpp>

#include "qkdn/net/tls.hpp"
#include "security_pki.hpp"

namespace qkdn::test {

namespace probe_asio = boost::asio;

/// How a client context is built for a probe.
struct ClientTls {
  std::optional<Issued> identity;  ///< our certificate (none: send no certificate)
  std::string ca;                  ///< CA bundle to verify the server with (empty: no check)
  bool tls12_only = false;         ///< offer TLS 1.2 and nothing newer
};

/// `groups`: the key-exchange groups offered (empty: OpenSSL's default).
inline std::unique_ptr<probe_asio::ssl::context> client_context(const ClientTls& c,
                                                                const std::string& groups = {}) {
  auto ctx = std::make_unique<probe_asio::ssl::context>(probe_asio::ssl::context::tls_client);
  SSL_CTX_set_min_proto_version(ctx->native_handle(), TLS1_2_VERSION);
  if (c.tls12_only) SSL_CTX_set_max_proto_version(ctx->native_handle(), TLS1_2_VERSION);
  if (!groups.empty() && SSL_CTX_set1_groups_list(ctx->native_handle(), groups.c_str()) != 1) {
    throw std::runtime_error("probe: bad groups " + groups);
  }
  if (c.identity) {
    ctx->use_certificate_chain_file(c.identity->cert);
    ctx->use_private_key_file(c.identity->key, probe_asio::ssl::context::pem);
  }
  if (!c.ca.empty()) {
    ctx->load_verify_file(c.ca);
    ctx->set_verify_mode(probe_asio::ssl::verify_peer);
  } else {
    ctx->set_verify_mode(probe_asio::ssl::verify_none);
  }
  return ctx;
}

/// What one probe saw.
struct ProbeResult {
  bool connected = false;
  bool handshake_ok = false;  ///< the client side of the handshake completed
  std::string received;       ///< bytes read after sending (up to `read_bytes`)
  bool closed = false;        ///< the read ended by EOF or error (alert, reset, timeout)
};

/// How many bytes the answer needs in total, given what arrived so far (SIZE_MAX: read to EOF).
using NeedFn = std::function<std::size_t(const std::string& got)>;

/// A Ck frame: 10-byte header, then its payload length (bytes 8..9).
inline std::size_t ck_frame_need(const std::string& got) {
  if (got.size() < 10) return 10;
  return 10 + ((static_cast<std::uint8_t>(got[8]) << 8) | static_cast<std::uint8_t>(got[9]));
}
/// A KMA frame: 6-byte header (type, 32-bit length), then the payload.
inline std::size_t kma_frame_need(const std::string& got) {
  if (got.size() < 6) return 6;
  std::size_t len = 0;
  for (int i = 2; i < 6; ++i) len = (len << 8) | static_cast<std::uint8_t>(got[i]);
  return 6 + std::min<std::size_t>(len, 1 << 20);
}
inline std::size_t to_eof(const std::string&) { return SIZE_MAX; }

/// Connects to 127.0.0.1:port, runs a TLS handshake with `tls` (or none when nullptr), sends
/// `send`, then reads until `need` is satisfied, the peer closed, or `timeout` passed.
inline ProbeResult probe(std::uint16_t port, probe_asio::ssl::context* tls, const std::string& send,
                         const NeedFn& need,
                         std::chrono::milliseconds timeout = std::chrono::seconds(5)) {
  ProbeResult r;
  probe_asio::io_context io;
  probe_asio::ip::tcp::socket sock(io);
  boost::system::error_code ec;
  sock.connect({probe_asio::ip::make_address("127.0.0.1"), port}, ec);
  if (ec) return r;
  r.connected = true;
  // Asio's blocking operations ignore SO_RCVTIMEO: a guard thread shuts the socket down when
  // the probe's time is up, which ends any read or handshake in progress.
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  const int fd = sock.native_handle();
  std::thread guard([&] {
    std::unique_lock lock(mu);
    if (!cv.wait_for(lock, timeout, [&] { return done; })) ::shutdown(fd, SHUT_RDWR);
  });
  struct Finish {
    std::mutex& mu;
    std::condition_variable& cv;
    bool& done;
    std::thread& guard;
    ~Finish() {
      {
        std::lock_guard lock(mu);
        done = true;
      }
      cv.notify_all();
      guard.join();
    }
  } finish{mu, cv, done, guard};
  auto read_answer = [&](auto& stream) {
    std::array<char, 4096> buf{};
    for (;;) {
      const std::size_t want = need(r.received);
      if (want <= r.received.size()) break;
      const std::size_t chunk = std::min(buf.size(), want - r.received.size());
      const auto n = stream.read_some(probe_asio::buffer(buf.data(), chunk), ec);
      r.received.append(buf.data(), n);
      if (ec) {
        r.closed = true;
        break;
      }
    }
  };
  if (tls == nullptr) {
    r.handshake_ok = true;
    probe_asio::write(sock, probe_asio::buffer(send), ec);
    if (ec) {
      r.closed = true;
      return r;
    }
    read_answer(sock);
    return r;
  }
  probe_asio::ssl::stream<probe_asio::ip::tcp::socket&> stream(sock, *tls);
  stream.handshake(probe_asio::ssl::stream_base::client, ec);
  if (ec) {
    r.closed = true;
    return r;
  }
  r.handshake_ok = true;
  probe_asio::write(stream, probe_asio::buffer(send), ec);
  if (ec) {
    r.closed = true;
    return r;
  }
  read_answer(stream);
  return r;
}

}  // namespace qkdn::test
