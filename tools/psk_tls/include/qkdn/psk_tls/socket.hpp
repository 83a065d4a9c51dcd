// Blocking TCP sockets with a timeout on every connect, read and write (SO_SNDTIMEO and
// SO_RCVTIMEO), for the qkdn-psk-tls tool.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

namespace qkdn::psk_tls {

/// An owned file descriptor.
class Socket {
 public:
  Socket() = default;
  explicit Socket(int fd) noexcept : fd_(fd) {}
  Socket(Socket&& o) noexcept : fd_(o.release()) {}
  Socket& operator=(Socket&& o) noexcept;
  Socket(const Socket&) = delete;
  Socket& operator=(const Socket&) = delete;
  ~Socket();
  [[nodiscard]] int fd() const noexcept { return fd_; }
  int release() noexcept;

 private:
  int fd_ = -1;
};

/// Connects to host:port (any address getaddrinfo gives, in order). Throws Unavailable.
Socket connect_to(const std::string& host, std::uint16_t port, std::chrono::milliseconds timeout);
/// Listens on host:port (port 0: any free port). Throws Unavailable.
Socket listen_on(const std::string& host, std::uint16_t port);
/// The local port of a bound socket.
std::uint16_t local_port(const Socket& s);
/// Accepts one connection and sets its timeouts. Throws Unavailable.
Socket accept_one(const Socket& listener, std::chrono::milliseconds timeout);
/// Writes all of `data`. Throws Unavailable.
void send_all(int fd, std::string_view data);

}  // namespace qkdn::psk_tls
