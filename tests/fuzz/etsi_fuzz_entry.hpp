// Fuzz entry for the ETSI GS QKD 014 request parser (southbound/agent/etsi_request.cpp). The
// input is "<target>\n<body>": the target goes through match() and parse_query(), the body through
// the POST readers, the query through the GET readers. Every outcome is a validated request
// within the KME's limits or an Error whose JSON parses; nothing throws.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <variant>

#include <boost/json/parse.hpp>

#include "etsi_request.hpp"
#include "fuzz_check.hpp"

namespace qkdn::fuzz {

inline agent::SaeLimits etsi_fuzz_limits() {
  agent::SaeLimits l;
  l.default_key_size = 256;
  l.min_key_size = 64;
  l.max_key_size = 8192;
  l.max_key_per_request = 128;
  return l;
}

inline void check_error(const agent::etsi::Error& e) {
  if (e.status < 400 || e.status > 599) violated("etsi", "error status");
  boost::system::error_code ec;
  (void)boost::json::parse(agent::etsi::error_json(e), ec);
  if (ec) violated("etsi", "error JSON does not parse");
}

inline int check_key_request(const std::variant<agent::etsi::KeyRequest, agent::etsi::Error>& r,
                             const agent::SaeLimits& l) {
  if (const auto* e = std::get_if<agent::etsi::Error>(&r)) {
    check_error(*e);
    return 0;
  }
  const auto& k = std::get<agent::etsi::KeyRequest>(r);
  if (k.number < 1 || k.number > l.max_key_per_request) violated("etsi", "number out of bounds");
  if (k.size < l.min_key_size || k.size > l.max_key_size || k.size % 8 != 0) {
    violated("etsi", "size out of bounds");
  }
  return 1;
}

inline int check_ids(const std::variant<std::vector<std::string>, agent::etsi::Error>& r) {
  if (const auto* e = std::get_if<agent::etsi::Error>(&r)) {
    check_error(*e);
    return 0;
  }
  const auto& ids = std::get<std::vector<std::string>>(r);
  if (ids.empty()) violated("etsi", "no key IDs accepted");
  for (const auto& id : ids) {
    if (id.empty() || id.size() > agent::etsi::kMaxIdLength) violated("etsi", "key ID length");
  }
  return 1;
}

/// One input. Returns how many readers accepted it.
inline int etsi_fuzz_one(const std::uint8_t* data, std::size_t size) {
  namespace etsi = agent::etsi;
  const std::string_view all(reinterpret_cast<const char*>(data), size);
  const auto nl = all.find('\n');
  const std::string_view target = all.substr(0, nl);
  const std::string_view body =
      nl == std::string_view::npos ? std::string_view{} : all.substr(nl + 1);
  const auto l = etsi_fuzz_limits();
  int accepted = 0;
  const auto q = target.find('?');
  const auto route = etsi::match(target.substr(0, q));
  if (const auto* e = std::get_if<etsi::Error>(&route)) check_error(*e);
  (void)etsi::percent_decode(target, false);
  if (q != std::string_view::npos) {
    if (auto query = etsi::parse_query(target.substr(q + 1))) {
      accepted += check_key_request(etsi::enc_request_from_query(*query, l), l);
      accepted += check_ids(etsi::dec_request_from_query(*query, l));
    }
  }
  accepted += check_key_request(etsi::enc_request_from_body(body, l), l);
  accepted += check_ids(etsi::dec_request_from_body(body, l));
  return accepted;
}

}  // namespace qkdn::fuzz
