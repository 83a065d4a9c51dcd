#include "qkdn/psk_tls/socket.hpp"

#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>

#include "qkdn/base/error.hpp"

namespace qkdn::psk_tls {
namespace {

void set_timeouts(int fd, std::chrono::milliseconds timeout) {
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(timeout.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((timeout.count() % 1000) * 1000);
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

struct AddrInfoFree {
  void operator()(addrinfo* a) const noexcept { ::freeaddrinfo(a); }
};

std::unique_ptr<addrinfo, AddrInfoFree> resolve(const std::string& host, std::uint16_t port,
                                                bool passive) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = passive ? AI_PASSIVE : 0;
  addrinfo* res = nullptr;
  const std::string service = std::to_string(port);
  const int rc =
      ::getaddrinfo(host.empty() ? nullptr : host.c_str(), service.c_str(), &hints, &res);
  if (rc != 0) throw Unavailable("cannot resolve '" + host + "': " + ::gai_strerror(rc));
  return std::unique_ptr<addrinfo, AddrInfoFree>(res);
}

}  // namespace

Socket& Socket::operator=(Socket&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = o.release();
  }
  return *this;
}

Socket::~Socket() {
  if (fd_ >= 0) ::close(fd_);
}

int Socket::release() noexcept {
  const int fd = fd_;
  fd_ = -1;
  return fd;
}

Socket connect_to(const std::string& host, std::uint16_t port, std::chrono::milliseconds timeout) {
  const auto addrs = resolve(host, port, false);
  std::string last = "no address";
  for (const addrinfo* a = addrs.get(); a != nullptr; a = a->ai_next) {
    Socket s(::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol));
    if (s.fd() < 0) {
      last = std::strerror(errno);
      continue;
    }
    set_timeouts(s.fd(), timeout);  // SO_SNDTIMEO bounds connect() too
    if (::connect(s.fd(), a->ai_addr, a->ai_addrlen) == 0) return s;
    last = std::strerror(errno);
  }
  throw Unavailable("cannot connect to " + host + ":" + std::to_string(port) + ": " + last);
}

Socket listen_on(const std::string& host, std::uint16_t port) {
  const auto addrs = resolve(host, port, true);
  std::string last = "no address";
  for (const addrinfo* a = addrs.get(); a != nullptr; a = a->ai_next) {
    Socket s(::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol));
    if (s.fd() < 0) {
      last = std::strerror(errno);
      continue;
    }
    const int one = 1;
    ::setsockopt(s.fd(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::bind(s.fd(), a->ai_addr, a->ai_addrlen) == 0 && ::listen(s.fd(), 16) == 0) return s;
    last = std::strerror(errno);
  }
  throw Unavailable("cannot listen on " + host + ":" + std::to_string(port) + ": " + last);
}

std::uint16_t local_port(const Socket& s) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (::getsockname(s.fd(), reinterpret_cast<sockaddr*>(&ss), &len) != 0) {
    throw Unavailable(std::string("getsockname: ") + std::strerror(errno));
  }
  if (ss.ss_family == AF_INET6) return ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port);
  return ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
}

Socket accept_one(const Socket& listener, std::chrono::milliseconds timeout) {
  for (;;) {
    const int fd = ::accept4(listener.fd(), nullptr, nullptr, SOCK_CLOEXEC);
    if (fd >= 0) {
      set_timeouts(fd, timeout);
      return Socket(fd);
    }
    if (errno != EINTR && errno != ECONNABORTED) {
      throw Unavailable(std::string("accept: ") + std::strerror(errno));
    }
  }
}

void send_all(int fd, std::string_view data) {
  while (!data.empty()) {
    const ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n <= 0) {
      if (n < 0 && errno == EINTR) continue;
      throw Unavailable(std::string("send: ") + std::strerror(errno));
    }
    data.remove_prefix(static_cast<std::size_t>(n));
  }
}

}  // namespace qkdn::psk_tls
