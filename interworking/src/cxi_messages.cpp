// Cxi messages (docs/cxi.md clauses 2 and 3): JSON through the shared strict reader, frames.
#include "qkdn/interworking/cxi_messages.hpp"

#include <boost/json.hpp>

#include "qkdn/controller/clock.hpp"
#include "qkdn/json/reader.hpp"

namespace qkdn::interworking {
namespace json = boost::json;

namespace {

[[noreturn]] void reject(std::string message) {  // NOLINT(performance-unnecessary-value-param)
  throw BadCxiMessage(std::move(message));
}

constexpr qkdn::json::ParseLimits kLimits{kMaxFrameBody, 8};

using Reader = qkdn::json::ObjectReader;

std::string id(Reader& r, std::string_view key) {
  auto v = r.string(key, 128);
  if (!qkdn::is_valid_id(v)) {
    reject(r.field(key) + ": invalid ID (1..128 of [A-Za-z0-9._:-])");
  }
  return v;
}

std::string reason(Reader& r, std::string_view key) {
  return r.opt_string(key).value_or("").substr(0, kMaxReasonLength);
}

const json::array& array(Reader& r, std::string_view key, std::size_t max) {
  const auto* a = r.opt_array(key);
  if (a == nullptr) reject(r.field(key) + ": required array");
  if (a->size() > max) reject(r.field(key) + ": at most " + std::to_string(max) + " entries");
  return *a;
}

const json::object& object_at(const json::array& a, std::size_t i, const std::string& path) {
  if (!a[i].is_object()) reject(path + "[" + std::to_string(i) + "]: expected object");
  return a[i].get_object();
}

Message decode_object(const json::object& o) {
  Reader r(o, {}, reject);
  const std::string type = r.string("type", 32);
  if (type == "hello") {
    Hello h;
    h.version = static_cast<int>(r.integer("version", 1, 1000));
    h.qkdn_id = id(r, "qkdn_id");
    h.controller_id = id(r, "controller_id");
    h.heartbeat_ms = r.integer("heartbeat_ms", 100, 60'000);
    r.finish();
    return h;
  }
  if (type == "heartbeat") {
    Heartbeat h;
    h.seq = r.integer("seq", 0, std::numeric_limits<std::int64_t>::max());
    r.finish();
    return h;
  }
  if (type == "reachability") {
    Reachability m;
    const auto& a = array(r, "entries", kMaxReachabilityEntries);
    m.entries.reserve(a.size());
    for (std::size_t i = 0; i < a.size(); ++i) {
      Reader e(object_at(a, i, "entries"), "entries[" + std::to_string(i) + "]", reject);
      ReachEntry x;
      x.sae_id = id(e, "sae_id");
      x.gateway_km = id(e, "gateway_km");
      x.cost = e.integer("cost", 0, kMaxCost);
      e.finish();
      m.entries.push_back(std::move(x));
    }
    r.finish();
    return m;
  }
  if (type == "link_status") {
    LinkStatus m;
    const auto& a = array(r, "links", kMaxLinkStatusEntries);
    m.links.reserve(a.size());
    for (std::size_t i = 0; i < a.size(); ++i) {
      Reader e(object_at(a, i, "links"), "links[" + std::to_string(i) + "]", reject);
      LinkState x;
      x.link_id = id(e, "link_id");
      const auto state = e.string("state", 8);
      if (state != "up" && state != "down") reject(e.field("state") + ": must be up or down");
      x.up = state == "up";
      e.finish();
      m.links.push_back(std::move(x));
    }
    r.finish();
    return m;
  }
  if (type == "route_request") {
    RouteRequest m;
    m.request_id = id(r, "request_id");
    m.src_sae = id(r, "src_sae");
    m.dst_sae = id(r, "dst_sae");
    m.link_id = id(r, "link_id");
    m.number_of_keys = r.integer("number_of_keys", 1, kMaxRouteKeys);
    m.key_size_bits = r.integer("key_size_bits", 64, 8192);
    if (m.key_size_bits % 8 != 0) reject("key_size_bits: must be a multiple of 8");
    r.finish();
    return m;
  }
  if (type == "route_answer") {
    RouteAnswer m;
    m.request_id = id(r, "request_id");
    m.accepted = r.boolean("accepted");
    if (m.accepted) {
      m.link_id = id(r, "link_id");
      m.ingress_km = id(r, "ingress_km");
      m.cost = r.integer("cost", 0, kMaxCost);
    } else {
      m.reason = reason(r, "reason");
    }
    r.finish();
    return m;
  }
  if (type == "fault") {
    Fault m;
    m.relay_id = id(r, "relay_id");
    m.link_id = id(r, "link_id");
    m.reason = reason(r, "reason");
    r.finish();
    return m;
  }
  if (type == "relay_setup") {
    RelaySetup m;
    m.relay_id = id(r, "relay_id");
    m.src_sae = id(r, "src_sae");
    m.dst_sae = id(r, "dst_sae");
    m.link_id = id(r, "link_id");
    m.number_of_keys = r.integer("number_of_keys", 1, kMaxRouteKeys);
    r.finish();
    return m;
  }
  if (type == "relay_setup_answer") {
    RelaySetupAnswer m;
    m.relay_id = id(r, "relay_id");
    m.accepted = r.boolean("accepted");
    if (m.accepted) {
      m.dst_km = id(r, "dst_km");
      const auto& a = array(r, "hops", kMaxRelayHops);
      m.hops.reserve(a.size());
      for (std::size_t i = 0; i < a.size(); ++i) {
        const std::string path = "hops[" + std::to_string(i) + "]";
        Reader e(object_at(a, i, "hops"), path, reject);
        RelayHop h;
        h.kma_id = id(e, "kma_id");
        h.next_kma_id = id(e, "next_kma_id");
        h.link_id = id(e, "link_id");
        const auto& k = array(e, "key_ids", static_cast<std::size_t>(kMaxRouteKeys));
        if (k.empty()) reject(path + ".key_ids: at least one key ID");
        h.key_ids.reserve(k.size());
        for (std::size_t j = 0; j < k.size(); ++j) {
          if (!k[j].is_string() || !qkdn::is_uuid(std::string(k[j].get_string()))) {
            reject(path + ".key_ids[" + std::to_string(j) + "]: expected a UUID");
          }
          h.key_ids.emplace_back(k[j].get_string());
        }
        e.finish();
        m.hops.push_back(std::move(h));
      }
    } else {
      m.reason = reason(r, "reason");
    }
    r.finish();
    return m;
  }
  if (type == "relay_end") {
    RelayEnd m;
    m.relay_id = id(r, "relay_id");
    const auto result = r.string("result", 16);
    if (result != "relayed" && result != "failed") {
      reject(r.field("result") + ": must be relayed or failed");
    }
    m.relayed = result == "relayed";
    m.reason = reason(r, "reason");
    r.finish();
    return m;
  }
  if (type == "error") {
    ErrorMsg m;
    m.code = r.string("code", 32);
    m.reason = reason(r, "reason");
    r.finish();
    return m;
  }
  if (type == "summary") {
    Summary m;
    m.seq = r.integer("seq", 1, kMaxSummaryCounter);
    m.period_ms = r.integer("period_ms", kMinSummaryPeriodMs, kMaxSummaryPeriodMs);
    auto part = [&](std::string_view name) {
      const auto* v = r.opt_object(name);
      if (v == nullptr) reject(r.field(name) + ": required object");
      return Reader(*v, std::string(name), reject);
    };
    auto count = [](Reader& x, std::string_view name) {
      return x.integer(name, 0, kMaxSummaryCounter);
    };
    Reader p = part("performance");
    m.performance.links_usable = count(p, "links_usable");
    m.performance.links_total = count(p, "links_total");
    m.performance.route_requests_answered = count(p, "route_requests_answered");
    p.finish();
    if (m.performance.links_usable > m.performance.links_total) {
      reject("performance.links_usable: more than links_total");
    }
    Reader a = part("accounting");
    m.accounting.route_requests_accepted = count(a, "route_requests_accepted");
    m.accounting.route_requests_refused = count(a, "route_requests_refused");
    m.accounting.faults_sent = count(a, "faults_sent");
    a.finish();
    Reader s = part("security");
    m.security.sessions_refused = count(s, "sessions_refused");
    m.security.bad_messages = count(s, "bad_messages");
    m.security.faults_received = count(s, "faults_received");
    s.finish();
    r.finish();
    return m;
  }
  reject("type: unknown message type '" + type.substr(0, 32) + "'");
}

struct Encoder {
  json::object operator()(const Hello& m) const {
    return {{"type", "hello"},
            {"version", m.version},
            {"qkdn_id", m.qkdn_id},
            {"controller_id", m.controller_id},
            {"heartbeat_ms", m.heartbeat_ms}};
  }
  json::object operator()(const Heartbeat& m) const {
    return {{"type", "heartbeat"}, {"seq", m.seq}};
  }
  json::object operator()(const Reachability& m) const {
    json::array a;
    a.reserve(m.entries.size());
    for (const auto& e : m.entries) {
      a.push_back(
          json::object{{"sae_id", e.sae_id}, {"gateway_km", e.gateway_km}, {"cost", e.cost}});
    }
    return {{"type", "reachability"}, {"entries", std::move(a)}};
  }
  json::object operator()(const LinkStatus& m) const {
    json::array a;
    a.reserve(m.links.size());
    for (const auto& l : m.links) {
      a.push_back(json::object{{"link_id", l.link_id}, {"state", l.up ? "up" : "down"}});
    }
    return {{"type", "link_status"}, {"links", std::move(a)}};
  }
  json::object operator()(const RouteRequest& m) const {
    return {{"type", "route_request"},
            {"request_id", m.request_id},
            {"src_sae", m.src_sae},
            {"dst_sae", m.dst_sae},
            {"link_id", m.link_id},
            {"number_of_keys", m.number_of_keys},
            {"key_size_bits", m.key_size_bits}};
  }
  json::object operator()(const RouteAnswer& m) const {
    json::object o{
        {"type", "route_answer"}, {"request_id", m.request_id}, {"accepted", m.accepted}};
    if (m.accepted) {
      o["link_id"] = m.link_id;
      o["ingress_km"] = m.ingress_km;
      o["cost"] = m.cost;
    } else {
      o["reason"] = m.reason;
    }
    return o;
  }
  json::object operator()(const Fault& m) const {
    return {
        {"type", "fault"}, {"relay_id", m.relay_id}, {"link_id", m.link_id}, {"reason", m.reason}};
  }
  json::object operator()(const ErrorMsg& m) const {
    return {{"type", "error"}, {"code", m.code}, {"reason", m.reason}};
  }
  json::object operator()(const RelaySetup& m) const {
    return {{"type", "relay_setup"}, {"relay_id", m.relay_id},
            {"src_sae", m.src_sae},  {"dst_sae", m.dst_sae},
            {"link_id", m.link_id},  {"number_of_keys", m.number_of_keys}};
  }
  json::object operator()(const RelaySetupAnswer& m) const {
    json::object o{
        {"type", "relay_setup_answer"}, {"relay_id", m.relay_id}, {"accepted", m.accepted}};
    if (m.accepted) {
      o["dst_km"] = m.dst_km;
      json::array hops;
      hops.reserve(m.hops.size());
      for (const auto& h : m.hops) {
        json::array ids;
        ids.reserve(h.key_ids.size());
        for (const auto& k : h.key_ids) ids.emplace_back(k);
        hops.push_back(json::object{{"kma_id", h.kma_id},
                                    {"next_kma_id", h.next_kma_id},
                                    {"link_id", h.link_id},
                                    {"key_ids", std::move(ids)}});
      }
      o["hops"] = std::move(hops);
    } else {
      o["reason"] = m.reason;
    }
    return o;
  }
  json::object operator()(const RelayEnd& m) const {
    return {{"type", "relay_end"},
            {"relay_id", m.relay_id},
            {"result", m.relayed ? "relayed" : "failed"},
            {"reason", m.reason}};
  }
  json::object operator()(const Summary& m) const {
    return {{"type", "summary"},
            {"seq", m.seq},
            {"period_ms", m.period_ms},
            {"performance",
             json::object{{"links_usable", m.performance.links_usable},
                          {"links_total", m.performance.links_total},
                          {"route_requests_answered", m.performance.route_requests_answered}}},
            {"accounting",
             json::object{{"route_requests_accepted", m.accounting.route_requests_accepted},
                          {"route_requests_refused", m.accounting.route_requests_refused},
                          {"faults_sent", m.accounting.faults_sent}}},
            {"security", json::object{{"sessions_refused", m.security.sessions_refused},
                                      {"bad_messages", m.security.bad_messages},
                                      {"faults_received", m.security.faults_received}}}};
  }
};

}  // namespace

std::string_view type_name(const Message& m) {
  static constexpr std::string_view kNames[] = {
      "hello", "heartbeat", "reachability", "link_status",        "route_request", "route_answer",
      "fault", "error",     "relay_setup",  "relay_setup_answer", "relay_end",     "summary"};
  return kNames[m.index()];
}

std::string encode(const Message& m) { return json::serialize(std::visit(Encoder{}, m)); }

Message decode(std::string_view body) {
  const auto o = qkdn::json::parse_object(body, "a Cxi message", kLimits, reject);
  return decode_object(o);
}

std::string frame(const Message& m) {
  const std::string body = encode(m);
  if (body.size() > kMaxFrameBody) throw BadCxiMessage("message larger than the frame limit");
  std::string out(4, '\0');
  const auto n = static_cast<std::uint32_t>(body.size());
  out[0] = static_cast<char>((n >> 24) & 0xff);
  out[1] = static_cast<char>((n >> 16) & 0xff);
  out[2] = static_cast<char>((n >> 8) & 0xff);
  out[3] = static_cast<char>(n & 0xff);
  return out + body;
}

std::size_t frame_length(const unsigned char header[4]) {
  const std::size_t n = (std::size_t{header[0]} << 24) | (std::size_t{header[1]} << 16) |
                        (std::size_t{header[2]} << 8) | std::size_t{header[3]};
  if (n == 0 || n > kMaxFrameBody) {
    throw BadCxiMessage("frame length " + std::to_string(n) + " outside 1.." +
                        std::to_string(kMaxFrameBody));
  }
  return n;
}

}  // namespace qkdn::interworking
