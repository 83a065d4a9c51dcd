// reason_phrase (http_server.hpp) in a translation unit of its own: the northbound fuzz target
// (tests/fuzz/fuzz.cmake) compiles it without the rest of the server.
#include <boost/beast/http/status.hpp>

#include "qkdn/net/http_server.hpp"

namespace qkdn::net {

std::string_view reason_phrase(int status) noexcept {
  namespace http = boost::beast::http;
  return http::obsolete_reason(static_cast<http::status>(status));
}

}  // namespace qkdn::net
