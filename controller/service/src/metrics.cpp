#include "qkdn/service/metrics.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <map>
#include <mutex>
#include <sstream>
#include <utility>

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

#include "qkdn/controller/relays.hpp"
#include "qkdn/controller/rerouting.hpp"
#include "qkdn/southbound/ck_messages.hpp"

namespace qkdn::service {

namespace pm = prometheus;

namespace {

// Buckets in seconds: relays take milliseconds to seconds; route computations micro- to
// milliseconds; HTTP requests sub-millisecond to seconds.
const pm::Histogram::BucketBoundaries kRelayBuckets{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                                    0.25,  0.5,    1,     2.5,  5,     10};
const pm::Histogram::BucketBoundaries kRouteBuckets{1e-5,  2.5e-5, 5e-5,  1e-4, 2.5e-4, 5e-4,
                                                    0.001, 0.0025, 0.005, 0.01, 0.025,  0.1};
const pm::Histogram::BucketBoundaries kHttpBuckets{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                                                   0.01,   0.025,   0.05,   0.1,   0.5,    1};

// Intermediate KMs of a relay route: 0 (a direct link) to a handful; long detours show in +Inf.
const pm::Histogram::BucketBoundaries kIntermediateBuckets{0, 1, 2, 3, 4, 5, 6, 8, 10, 15};

constexpr std::string_view kRelayResults[] = {"relayed", "failed", "voided"};
constexpr std::string_view kReservationResults[] = {"reserved", "allocated", "consumed",
                                                    "released", "refused",   "expired"};

namespace ck = southbound::ck;

// The alarm types of qkdn_alarms_active_by_type: a closed list, so that a KM inventing types
// cannot grow the label set ("other" counts those).
constexpr std::string_view kAlarmTypes[] = {
    controller::alarm_type::kQberHigh,           controller::alarm_type::kLinkDown,
    controller::alarm_type::kKeyPoolLow,         controller::alarm_type::kRelayFailure,
    controller::alarm_type::kPeerUnreachable,    controller::alarm_type::kKmDisconnected,
    controller::alarm_type::kPinnedRouteBroken,  controller::alarm_type::kSaeClaimRefused,
    controller::alarm_type::kControllerFailover, "other"};

// The protocol error reasons a controller counts most often (framing, codec and session rules);
// others appear on first use.
constexpr std::string_view kCkErrorReasons[] = {
    ck::errc::kBadRequest,    ck::errc::kUnknownCommand, ck::errc::kUnsupportedVersion,
    ck::errc::kNotRegistered, "wrong_direction",         "unexpected_response",
    "second_register",        "identity_mismatch",       "tls_handshake"};
// Backpressure refusals (controller_service.cpp; docs/metrics.md).
constexpr std::string_view kCkRefusedReasons[] = {
    "registration_busy", "command_busy", "km_busy", "relays_per_km", "rate", "flood", "api_busy"};
constexpr std::string_view kAdmissionQueues[] = {"registration", "status", "command"};

// Exposition text of one sample: name{labels} value.
void append_label(std::string& out, std::string_view name, std::string_view value, bool first) {
  if (!first) out += ',';
  out += name;
  out += "=\"";
  for (const char c : value) {
    if (c == '\\' || c == '"') {
      out += '\\';
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  out += '"';
}

void append_value(std::string& out, double v) {
  if (std::isnan(v)) {
    out += "NaN";
  } else if (std::isinf(v)) {
    out += v > 0 ? "+Inf" : "-Inf";
  } else {
    char buf[32];
    const auto r = std::to_chars(buf, buf + sizeof buf, v);
    out.append(buf, r.ptr);
  }
  out += '\n';
}

void append_family_head(std::string& out, std::string_view name, std::string_view help) {
  out += "# HELP ";
  out += name;
  out += ' ';
  out += help;
  out += "\n# TYPE ";
  out += name;
  out += " gauge\n";
}

}  // namespace

namespace {

std::string render_gauges(const std::map<std::string, controller::Link>& links,
                          const std::map<std::string, controller::Km>& kms,
                          const controller::Thresholds& th) {
  using controller::Link;
  struct Family {
    std::string_view name, help;
    double (*value)(const Link&, const controller::Thresholds&);
  };
  static constexpr Family kLinkFamilies[] = {
      {"qkdn_link_key_pool_bytes", "Secret key stored for the link, bytes",
       [](const Link& l, const controller::Thresholds&) {
         return static_cast<double>(l.stored_key_bits) / 8.0;
       }},
      {"qkdn_link_stored_keys", "Keys stored for the link",
       [](const Link& l, const controller::Thresholds&) {
         return static_cast<double>(l.stored_keys);
       }},
      {"qkdn_link_secret_key_rate_bytes_per_second",
       "Measured secret key generation rate of the link, bytes per second",
       [](const Link& l, const controller::Thresholds&) { return l.key_rate_bps / 8.0; }},
      {"qkdn_link_key_consumption_bytes_per_second",
       "Measured key consumption of the link, bytes per second",
       [](const Link& l, const controller::Thresholds&) { return l.consumption_rate_bps / 8.0; }},
      {"qkdn_link_qber_ratio", "Last reported quantum bit error ratio of the link",
       [](const Link& l, const controller::Thresholds&) { return l.qber; }},
      {"qkdn_link_qber_threshold_ratio",
       "QBER above which the link alarms and leaves routing (its own, else the network's)",
       [](const Link& l, const controller::Thresholds& t) {
         return l.qber_threshold.value_or(t.qber);
       }},
      {"qkdn_link_key_pool_floor_bytes",
       "Key pool below which the link is low and leaves routing (its own, else the network's)",
       [](const Link& l, const controller::Thresholds& t) {
         return static_cast<double>(l.pool_floor_bits.value_or(t.pool_floor_bits)) / 8.0;
       }},
      {"qkdn_link_up", "1 when the link is operationally up, else 0",
       [](const Link& l, const controller::Thresholds&) {
         return l.oper == controller::OperState::kUp ? 1.0 : 0.0;
       }},
  };
  std::string out;
  // About 100 bytes per link and family, 50 per KM: one allocation for the whole text.
  out.reserve(links.size() * std::size(kLinkFamilies) * 100 + kms.size() * 50 + 4096);
  for (const auto& f : kLinkFamilies) {
    append_family_head(out, f.name, f.help);
    for (const auto& [id, link] : links) {
      out += f.name;
      out += '{';
      append_label(out, "a", link.spec.a, true);
      append_label(out, "b", link.spec.b, false);
      append_label(out, "link", id, false);
      out += "} ";
      append_value(out, f.value(link, th));
    }
  }
  append_family_head(out, "qkdn_km_connected",
                     "1 when the KM holds a registered Ck connection, else 0");
  for (const auto& [id, km] : kms) {
    out += "qkdn_km_connected{";
    append_label(out, "km", id, true);
    out += "} ";
    append_value(out, km.connected ? 1.0 : 0.0);
  }
  return out;
}

}  // namespace

std::string render_network_gauges(const controller::Network& network) {
  return render_gauges(network.links(), network.kms(), network.thresholds());
}

struct Metrics::State {
  // Registers a family and remembers its name, help and type, so that serialize() can still
  // declare it (HELP and TYPE) while it has no series, e.g. link gauges before any topology.
  pm::Family<pm::Gauge>& gauge(std::string_view name, std::string_view help) {
    declared.push_back({std::string(name), std::string(help), "gauge"});
    return pm::BuildGauge().Name(std::string(name)).Help(std::string(help)).Register(*registry);
  }
  pm::Family<pm::Counter>& counter(std::string_view name, std::string_view help) {
    declared.push_back({std::string(name), std::string(help), "counter"});
    return pm::BuildCounter().Name(std::string(name)).Help(std::string(help)).Register(*registry);
  }
  pm::Family<pm::Histogram>& histogram(std::string_view name, std::string_view help) {
    declared.push_back({std::string(name), std::string(help), "histogram"});
    return pm::BuildHistogram().Name(std::string(name)).Help(std::string(help)).Register(*registry);
  }

  struct Declared {
    std::string name, help, type;
  };
  std::shared_ptr<pm::Registry> registry = std::make_shared<pm::Registry>();
  std::vector<Declared> declared;  // written only by the constructor

  pm::Gauge& sessions_active =
      gauge("qkdn_sessions_active", "Key-supply sessions that are active").Add({});
  pm::Family<pm::Counter>& relays =
      counter("qkdn_key_relays_total", "Key relays finished, by result");
  pm::Family<pm::Counter>& relays_by_scheme =
      counter("qkdn_key_relays_by_scheme_total",
              "Key relays relayed, by relay scheme (otp: information-theoretic; aes-256-gcm: "
              "computational)");
  pm::Histogram& relay_duration = histogram("qkdn_key_relay_duration_seconds",
                                            "Time from key relay request to its successful end")
                                      .Add({}, kRelayBuckets);
  pm::Histogram& route_duration =
      histogram("qkdn_route_computation_seconds", "Time to compute a route").Add({}, kRouteBuckets);
  pm::Family<pm::Counter>& cxi_events =
      counter("qkdn_cxi_events_total",
              "Cxi sessions and messages between this controller and its peer controllers, by "
              "event (docs/cxi.md)");
  pm::Gauge& cxi_peers_up =
      gauge("qkdn_cxi_peers_up", "Peer controllers with a Cxi session up").Add({});
  pm::Counter& interworking_relay_faults =
      counter("qkdn_interworking_relay_faults_total",
              "Interworking relay failures forwarded by peer controllers")
          .Add({});
  std::map<std::string, pm::Counter*, std::less<>> cxi_event_counters = [this] {
    std::map<std::string, pm::Counter*, std::less<>> m;
    for (const char* e : {"session_opened", "session_refused", "message_in", "message_out",
                          "bad_message", "route_request_answered", "fault_received", "summary_sent",
                          "summary_received", "summary_refused"}) {
      m[e] = &cxi_events.Add({{"event", e}});
    }
    return m;
  }();
  pm::Histogram& snapshot_duration =
      histogram("qkdn_topology_snapshot_build_seconds",
                "Time to build the routing snapshot of the whole network (coalesced: at most a "
                "few per second)")
          .Add({}, kHttpBuckets);
  pm::Histogram& relay_intermediates =
      histogram("qkdn_key_relay_intermediate_kms",
                "Intermediate (trusted relay) KMs crossed, one observation per delivered key")
          .Add({}, kIntermediateBuckets);
  pm::Counter& trust_refusals =
      counter("qkdn_route_trust_refusals_total",
              "Key relays refused because no route met the trust constraints")
          .Add({});
  pm::Family<pm::Counter>& iwn_transfers =
      counter("qkdn_interworking_transfers_total",
              "Key transfers through an interworking node (Kxi') reported by this QKDN's KMs, "
              "by role and result");
  pm::Family<pm::Counter>& iwn_transfer_keys =
      counter("qkdn_interworking_transfer_keys_total",
              "Keys of interworking transfers that the partner stored, by role");
  pm::Family<pm::Counter>& iw_relays =
      counter("qkdn_interworking_relays_total",
              "Kxi-1 key relays through gateway KMs (GWN) that ended, by this QKDN's role and "
              "result");
  pm::Family<pm::Counter>& iwn_decisions =
      counter("qkdn_interworking_transfer_decisions_total",
              "Interworking transfer requests this controller decided, by decision");
  pm::Family<pm::Counter>& iwn_last_legs =
      counter("qkdn_interworking_last_legs_total",
              "Relays inside this QKDN of keys an interworking transfer brought for an SAE behind "
              "another KM, by decision");
  pm::Family<pm::Counter>& key_share_refusals =
      counter("qkdn_interworking_key_share_refusals_total",
              "Requests of a peer QKDN refused because they exceed its key rate share, by peer");
  pm::Family<pm::Counter>& reroutes =
      counter("qkdn_reroutes_total", "Standing routes changed, by reason");
  pm::Family<pm::Gauge>& alarms_active = gauge("qkdn_alarms_active", "Active alarms by severity");
  pm::Family<pm::Gauge>& alarms_by_type =
      gauge("qkdn_alarms_active_by_type", "Active alarms by type (unknown types count as other)");
  pm::Family<pm::Counter>& reservations =
      counter("qkdn_key_reservations_total", "Key reservation ledger transitions, by result");
  pm::Family<pm::Counter>& ck_messages =
      counter("qkdn_ck_messages_total", "Ck messages by direction and command");
  pm::Family<pm::Counter>& ck_errors =
      counter("qkdn_ck_protocol_errors_total", "Ck protocol errors by reason");
  pm::Gauge& ck_connections = gauge("qkdn_ck_connections", "Open Ck connections").Add({});
  pm::Family<pm::Counter>& ck_refused =
      counter("qkdn_ck_refused_total", "Ck work refused by backpressure (busy, rate), by reason");
  pm::Family<pm::Gauge>& ck_admission =
      gauge("qkdn_ck_admission_depth", "Ck work admitted and waiting for the core, by queue");
  pm::Family<pm::Counter>& http_requests =
      counter("qkdn_http_requests_total", "Northbound HTTP requests by method and status code");
  pm::Histogram& http_duration =
      histogram("qkdn_http_request_duration_seconds", "Northbound HTTP request duration")
          .Add({}, kHttpBuckets);
  pm::Gauge& store_up =
      gauge("qkdn_store_up", "1 when the PostgreSQL store answers (or no store is configured)")
          .Add({});
  pm::Counter& store_groups =
      counter("qkdn_store_write_groups_total",
              "Write groups (one controller step each) the store's write queue finished")
          .Add({});
  pm::Counter& store_commits =
      counter("qkdn_store_commits_total",
              "Transactions the store's write queue committed (group commit: several groups each)")
          .Add({});
  pm::Counter& store_failures =
      counter("qkdn_store_write_failures_total",
              "Store writes that failed for good: dropped or refused by a rule (each is logged)")
          .Add({});
  pm::Family<pm::Gauge>& build_info =
      gauge("qkdn_build_info", "Build of this controller (always 1)");

  // A counter of `family` with one label, created on first use and cached.
  pm::Counter& labelled(pm::Family<pm::Counter>& family,
                        std::map<std::string, pm::Counter*, std::less<>>& cache,
                        const std::string& label, std::string_view value) {
    std::lock_guard lock(mu);
    auto it = cache.find(value);
    if (it == cache.end()) {
      it = cache.emplace(std::string(value), &family.Add({{label, std::string(value)}})).first;
    }
    return *it->second;
  }

  std::mutex mu;  // guards the caches below (never held across anything slow)
  std::map<std::string, pm::Counter*, std::less<>> relay_by_result;
  std::map<std::string, pm::Counter*, std::less<>> relay_by_scheme;
  std::map<std::string, pm::Counter*, std::less<>> reroute_by_reason;
  std::map<std::string, pm::Counter*, std::less<>> reservation_by_result;
  std::map<std::string, pm::Counter*, std::less<>> ck_in;
  std::map<std::string, pm::Counter*, std::less<>> ck_out;
  std::map<std::string, pm::Counter*, std::less<>> ck_error_by_reason;
  std::map<std::string, pm::Counter*, std::less<>> ck_refused_by_reason;
  std::map<std::string, pm::Gauge*, std::less<>> admission_gauges;
  std::map<std::string, pm::Counter*, std::less<>> http_by_method_code;
  std::array<pm::Gauge*, controller::kSeverityCount> alarm_gauges{};
  std::map<std::string, pm::Gauge*, std::less<>> alarm_type_gauges;  // every kAlarmTypes entry

  // Per-link and per-KM gauges, keyed by link / KM ID, so vanished ones can be removed.
  /// Per-link and per-KM gauge families, rendered on the core strand (render_network_gauges);
  /// declared (HELP and TYPE, no series) until the first scrape.
  std::string network_text = render_gauges({}, {}, controller::Thresholds{});
};

Metrics::Metrics(std::string version, std::string revision) : state_(std::make_unique<State>()) {
  auto& s = *state_;
  s.build_info.Add({{"version", std::move(version)}, {"revision", std::move(revision)}}).Set(1);
  for (auto reason : controller::kAllRerouteReasons) {
    s.labelled(s.reroutes, s.reroute_by_reason, "reason", controller::to_string(reason));
  }
  for (auto r : kRelayResults) s.labelled(s.relays, s.relay_by_result, "result", r);
  for (auto r : controller::kRelaySchemes) {
    s.labelled(s.relays_by_scheme, s.relay_by_scheme, "scheme", r);
  }
  for (auto r : kReservationResults) {
    s.labelled(s.reservations, s.reservation_by_result, "result", r);
  }
  for (std::size_t i = 0; i < controller::kSeverityCount; ++i) {
    s.alarm_gauges[i] = &s.alarms_active.Add(
        {{"severity", std::string(controller::to_string(static_cast<controller::Severity>(i)))}});
  }
  for (auto type : kAlarmTypes) {
    s.alarm_type_gauges.emplace(std::string(type),
                                &s.alarms_by_type.Add({{"type", std::string(type)}}));
  }
  // Every Ck command of the codec's table, pre-created at zero so that rate() and dashboards
  // have series from the start.
  for (const ck::CommandInfo& c : ck::kCommands) {
    ck_message_counter(c.direction == ck::Direction::kKmToController, c.name);
  }
  for (auto r : kCkErrorReasons) s.labelled(s.ck_errors, s.ck_error_by_reason, "reason", r);
  for (auto r : kCkRefusedReasons) s.labelled(s.ck_refused, s.ck_refused_by_reason, "reason", r);
  for (std::string_view role : {"sender", "receiver"}) {
    for (std::string_view result : {"ok", "failed", "lost"}) {
      s.iwn_transfers.Add({{"role", std::string(role)}, {"result", std::string(result)}});
    }
    s.iwn_transfer_keys.Add({{"role", std::string(role)}});
  }
  for (std::string_view d : {"accepted", "refused"}) {
    s.iwn_decisions.Add({{"decision", std::string(d)}});
    s.iwn_last_legs.Add({{"decision", std::string(d)}});
  }
  for (std::string_view role : {"source", "destination"}) {
    for (std::string_view result : {"relayed", "failed"}) {
      s.iw_relays.Add({{"role", std::string(role)}, {"result", std::string(result)}});
    }
  }
  for (auto q : kAdmissionQueues) {
    s.admission_gauges.emplace(std::string(q), &s.ck_admission.Add({{"queue", std::string(q)}}));
  }
  // The first scrape is itself counted only after it is answered: a zero series until then.
  http_counter("GET", 200);
  s.store_up.Set(1);
}

Metrics::~Metrics() = default;

prometheus::Counter& Metrics::ck_message_counter(bool inbound, std::string_view command) {
  auto& s = *state_;
  auto& cache = inbound ? s.ck_in : s.ck_out;
  std::lock_guard lock(s.mu);
  auto it = cache.find(command);
  if (it == cache.end()) {
    auto& added = s.ck_messages.Add(
        {{"direction", inbound ? "in" : "out"}, {"command", std::string(command)}});
    it = cache.emplace(std::string(command), &added).first;
  }
  return *it->second;
}

void Metrics::ck_message(bool inbound, std::string_view command) {
  ck_message_counter(inbound, command).Increment();
}

void Metrics::ck_protocol_error(std::string_view reason) {
  state_->labelled(state_->ck_errors, state_->ck_error_by_reason, "reason", reason).Increment();
}

void Metrics::ck_refused(std::string_view reason) {
  state_->labelled(state_->ck_refused, state_->ck_refused_by_reason, "reason", reason).Increment();
}

void Metrics::relay_intermediates(std::size_t intermediate_kms, std::uint64_t keys) {
  if (keys == 0) return;
  // One observation per key, in one step: `keys` in the first bucket that holds the count.
  std::vector<double> increments(kIntermediateBuckets.size() + 1, 0.0);
  const auto v = static_cast<double>(intermediate_kms);
  std::size_t b = 0;
  while (b < kIntermediateBuckets.size() && v > kIntermediateBuckets[b]) ++b;
  increments[b] = static_cast<double>(keys);
  state_->relay_intermediates.ObserveMultiple(increments, v * static_cast<double>(keys));
}

void Metrics::trust_refusal() { state_->trust_refusals.Increment(); }

void Metrics::iwn_transfer(std::string_view role, std::string_view result, std::uint64_t keys) {
  state_->iwn_transfers.Add({{"role", std::string(role)}, {"result", std::string(result)}})
      .Increment();
  if (result == "ok") {
    state_->iwn_transfer_keys.Add({{"role", std::string(role)}})
        .Increment(static_cast<double>(keys));
  }
}

void Metrics::interworking_relay(std::string_view role, std::string_view result) {
  state_->iw_relays.Add({{"role", std::string(role)}, {"result", std::string(result)}}).Increment();
}

void Metrics::iwn_transfer_decision(std::string_view decision) {
  state_->iwn_decisions.Add({{"decision", std::string(decision)}}).Increment();
}

void Metrics::iwn_last_leg(std::string_view decision) {
  state_->iwn_last_legs.Add({{"decision", std::string(decision)}}).Increment();
}

void Metrics::key_share_refusal(std::string_view peer_qkdn_id) {
  state_->key_share_refusals.Add({{"peer", std::string(peer_qkdn_id)}}).Increment();
}

void Metrics::key_relay(std::string_view result, double seconds) {
  state_->labelled(state_->relays, state_->relay_by_result, "result", result).Increment();
  if (result == "relayed") state_->relay_duration.Observe(seconds);
}

void Metrics::relay_scheme(std::string_view scheme) {
  state_->labelled(state_->relays_by_scheme, state_->relay_by_scheme, "scheme", scheme).Increment();
}

void Metrics::route_computation(double seconds) { state_->route_duration.Observe(seconds); }

void Metrics::snapshot_build(double seconds) { state_->snapshot_duration.Observe(seconds); }

void Metrics::cxi_event(std::string_view event, std::uint64_t n) {
  auto& s = *state_;
  if (auto it = s.cxi_event_counters.find(event); it != s.cxi_event_counters.end()) {
    it->second->Increment(static_cast<double>(n));
  }
}

void Metrics::cxi_peers_up(std::size_t n) { state_->cxi_peers_up.Set(static_cast<double>(n)); }

void Metrics::interworking_relay_fault() { state_->interworking_relay_faults.Increment(); }

void Metrics::reroute(std::string_view reason) {
  state_->labelled(state_->reroutes, state_->reroute_by_reason, "reason", reason).Increment();
}

void Metrics::key_reservation(std::string_view result, std::uint64_t n) {
  state_->labelled(state_->reservations, state_->reservation_by_result, "result", result)
      .Increment(static_cast<double>(n));
}

void Metrics::store_writes(std::uint64_t groups, std::uint64_t commits) {
  state_->store_groups.Increment(static_cast<double>(groups));
  state_->store_commits.Increment(static_cast<double>(commits));
}

void Metrics::store_write_failures(std::uint64_t n) {
  state_->store_failures.Increment(static_cast<double>(n));
}

prometheus::Counter& Metrics::http_counter(std::string_view method, int code) {
  auto& s = *state_;
  std::string key = std::string(method) + " " + std::to_string(code);
  std::lock_guard lock(s.mu);
  auto it = s.http_by_method_code.find(key);
  if (it == s.http_by_method_code.end()) {
    auto& added =
        s.http_requests.Add({{"method", std::string(method)}, {"code", std::to_string(code)}});
    it = s.http_by_method_code.emplace(std::move(key), &added).first;
  }
  return *it->second;
}

void Metrics::http_request(std::string_view method, int code, double seconds) {
  http_counter(method, code).Increment();
  state_->http_duration.Observe(seconds);
}

void Metrics::update_gauges(GaugeInput in) {
  auto& s = *state_;
  std::lock_guard lock(s.mu);
  s.network_text = std::move(in.network_text);
  s.sessions_active.Set(static_cast<double>(in.sessions_active));
  for (std::size_t i = 0; i < controller::kSeverityCount; ++i) {
    s.alarm_gauges[i]->Set(static_cast<double>(in.alarms_active[i]));
  }
  for (auto& [type, gauge] : s.alarm_type_gauges) gauge->Set(0);
  for (const auto& [type, n] : in.alarms_active_by_type) {
    auto it = s.alarm_type_gauges.find(type);
    if (it == s.alarm_type_gauges.end()) it = s.alarm_type_gauges.find("other");
    it->second->Increment(static_cast<double>(n));
  }
  s.ck_connections.Set(static_cast<double>(in.ck_connections));
  s.store_up.Set(in.store_up ? 1 : 0);
  for (const auto& [queue, depth] : in.admission_depth) {
    if (auto it = s.admission_gauges.find(queue); it != s.admission_gauges.end()) {
      it->second->Set(static_cast<double>(depth));
    }
  }
}

std::string Metrics::serialize() const {
  auto families = state_->registry->Collect();
  std::ostringstream out;
  pm::TextSerializer{}.Serialize(out, families);
  // prometheus-cpp leaves out families without series; declare them anyway so that every name
  // of docs/metrics.md is on /metrics from start (valid exposition: HELP and TYPE only).
  for (const auto& d : state_->declared) {
    const bool present = std::any_of(families.begin(), families.end(),
                                     [&d](const pm::MetricFamily& f) { return f.name == d.name; });
    if (!present) {
      out << "# HELP " << d.name << ' ' << d.help << "\n# TYPE " << d.name << ' ' << d.type << '\n';
    }
  }
  std::string text = std::move(out).str();
  std::lock_guard lock(state_->mu);
  text += state_->network_text;
  return text;
}

prometheus::Registry& Metrics::registry() { return *state_->registry; }

}  // namespace qkdn::service
