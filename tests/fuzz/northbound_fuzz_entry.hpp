// Fuzz entry for the northbound API's reading of untrusted request parts
// (northbound/src/api_util.cpp): the query string (Query, cursors), If-Match, and JSON bodies
// (parse_body_object, then ObjectReader's accessors over the fields the handlers read). The
// topology document a PUT /api/v1/topology carries has its own target (fuzz_topology). Every
// outcome is a value or an ApiError with a 4xx status; anything else is a finding.
// Input: "<query>\n<content-type>\n<body>".
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "api_util.hpp"
#include "fuzz_check.hpp"
#include "qkdn/controller/error.hpp"

namespace qkdn::fuzz {

/// Field names the northbound handlers read from bodies (handlers_*.cpp).
inline constexpr std::string_view kBodyFields[] = {"km_id",
                                                   "site",
                                                   "lat",
                                                   "lon",
                                                   "link_id",
                                                   "a",
                                                   "b",
                                                   "key_rate_bps",
                                                   "distance_km",
                                                   "qber",
                                                   "admin_state",
                                                   "qber_threshold",
                                                   "pool_floor_bits",
                                                   "mode",
                                                   "params",
                                                   "src_km",
                                                   "dst_km",
                                                   "number_of_keys",
                                                   "key_size_bits",
                                                   "not_before",
                                                   "not_after",
                                                   "interval_s",
                                                   "route",
                                                   "links",
                                                   "kms",
                                                   "schedule_id",
                                                   "metric",
                                                   "k",
                                                   "comment",
                                                   "applications"};

template <class F>
bool api_call(F f) {
  try {
    f();
    return true;
  } catch (const northbound::ApiError& e) {
    if (e.status() < 400 || e.status() > 499) violated("northbound", "ApiError not 4xx");
    return false;
  } catch (const Error&) {  // a qkdn::Error: the API maps it to a problem response
    return false;
  }
}

/// One input. Returns 1 when the body was a JSON object the API would read.
inline int northbound_fuzz_one(const std::uint8_t* data, std::size_t size) {
  namespace nb = northbound;
  const std::string_view all(reinterpret_cast<const char*>(data), size);
  const auto nl1 = all.find('\n');
  const std::string_view query = all.substr(0, nl1);
  std::string_view rest = nl1 == std::string_view::npos ? std::string_view{} : all.substr(nl1 + 1);
  const auto nl2 = rest.find('\n');
  const std::string_view content_type = rest.substr(0, nl2);
  const std::string_view body =
      nl2 == std::string_view::npos ? std::string_view{} : rest.substr(nl2 + 1);

  api_call([&] {
    auto q = nb::Query::parse(query);
    (void)q.get("km_id");
    (void)q.get_uint("limit", 1, 1000);
    (void)q.get_bool("active");
    if (auto c = q.get("cursor")) (void)nb::decode_cursor(*c);
    q.finish();
  });
  (void)nb::if_match_ok(query, std::string("\"abc\""));

  nb::HttpRequest req;
  req.method = "POST";
  req.target = "/api/v1/x";
  req.headers["content-type"] = std::string(content_type);
  req.body = std::string(body);
  boost::json::object obj;
  if (!api_call([&] { obj = nb::parse_body_object(req); })) return 0;
  // Every accessor kind over every field name, each on a fresh reader, then one strict pass.
  for (const auto key : kBodyFields) {
    api_call([&] { nb::ObjectReader(obj).opt_string(key); });
    api_call([&] { nb::ObjectReader(obj).id(key); });
    api_call([&] { nb::ObjectReader(obj).opt_number(key); });
    api_call([&] { nb::ObjectReader(obj).opt_uint(key); });
    api_call([&] { nb::ObjectReader(obj).opt_int(key); });
    api_call([&] {
      bool null_seen = false;
      nb::ObjectReader(obj).opt_number_or_null(key, null_seen);
      nb::ObjectReader(obj).opt_uint_or_null(key, null_seen);
    });
    api_call([&] { nb::ObjectReader(obj).opt_string_array(key); });
    api_call([&] { nb::ObjectReader(obj).opt_time(key); });
    api_call([&] {
      nb::ObjectReader r(obj);
      if (const auto* inner = r.opt_object(key)) {
        nb::ObjectReader in(*inner, std::string(key));
        (void)in.opt_number("value");
        in.finish();
      }
    });
  }
  api_call([&] {
    nb::ObjectReader r(obj);
    (void)r.opt_string("site");
    (void)r.opt_number("lat");
    r.finish();
  });
  return 1;
}

}  // namespace qkdn::fuzz
