// The shared HTTP server's request and response types (qkdn/net/http_server.hpp) under the names
// the northbound sources use. Private to qkdn_northbound.
#pragma once

#include "qkdn/net/http_server.hpp"

namespace qkdn::northbound {

namespace net = boost::asio;
using HttpRequest = qkdn::net::HttpRequest;
using HttpResponse = qkdn::net::HttpResponse;
using qkdn::net::reason_phrase;

}  // namespace qkdn::northbound
