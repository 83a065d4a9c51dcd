#include "qkdn/service/metrics.hpp"

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

#include "qkdn/controller/rerouting.hpp"

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

constexpr std::string_view kRelayResults[] = {"relayed", "failed", "voided"};
constexpr std::string_view kReservationResults[] = {"reserved", "allocated", "consumed",
                                                    "released", "refused",   "expired"};

}  // namespace

struct Metrics::State {
  State()
      : registry(std::make_shared<pm::Registry>()),
        link_pool_bytes(pm::BuildGauge()
                            .Name("qkdn_link_key_pool_bytes")
                            .Help("Secret key stored for the link, bytes")
                            .Register(*registry)),
        link_stored_keys(pm::BuildGauge()
                             .Name("qkdn_link_stored_keys")
                             .Help("Keys stored for the link")
                             .Register(*registry)),
        link_rate(pm::BuildGauge()
                      .Name("qkdn_link_secret_key_rate_bytes_per_second")
                      .Help("Measured secret key generation rate of the link, bytes per second")
                      .Register(*registry)),
        link_consumption(pm::BuildGauge()
                             .Name("qkdn_link_key_consumption_bytes_per_second")
                             .Help("Measured key consumption of the link, bytes per second")
                             .Register(*registry)),
        link_qber(pm::BuildGauge()
                      .Name("qkdn_link_qber_ratio")
                      .Help("Last reported quantum bit error ratio of the link")
                      .Register(*registry)),
        link_up(pm::BuildGauge()
                    .Name("qkdn_link_up")
                    .Help("1 when the link is operationally up, else 0")
                    .Register(*registry)),
        km_connected(pm::BuildGauge()
                         .Name("qkdn_km_connected")
                         .Help("1 when the KM holds a registered Ck connection, else 0")
                         .Register(*registry)),
        sessions_active(pm::BuildGauge()
                            .Name("qkdn_sessions_active")
                            .Help("Key-supply sessions that are active")
                            .Register(*registry)
                            .Add({})),
        relays(pm::BuildCounter()
                   .Name("qkdn_key_relays_total")
                   .Help("Key relays finished, by result")
                   .Register(*registry)),
        relay_duration(pm::BuildHistogram()
                           .Name("qkdn_key_relay_duration_seconds")
                           .Help("Time from key relay request to its successful end")
                           .Register(*registry)
                           .Add({}, kRelayBuckets)),
        route_duration(pm::BuildHistogram()
                           .Name("qkdn_route_computation_seconds")
                           .Help("Time to compute a route")
                           .Register(*registry)
                           .Add({}, kRouteBuckets)),
        reroutes(pm::BuildCounter()
                     .Name("qkdn_reroutes_total")
                     .Help("Standing routes changed, by reason")
                     .Register(*registry)),
        alarms_active(pm::BuildGauge()
                          .Name("qkdn_alarms_active")
                          .Help("Active alarms by severity")
                          .Register(*registry)),
        reservations(pm::BuildCounter()
                         .Name("qkdn_key_reservations_total")
                         .Help("Key reservation ledger transitions, by result")
                         .Register(*registry)),
        ck_messages(pm::BuildCounter()
                        .Name("qkdn_ck_messages_total")
                        .Help("Ck messages by direction and command")
                        .Register(*registry)),
        ck_errors(pm::BuildCounter()
                      .Name("qkdn_ck_protocol_errors_total")
                      .Help("Ck protocol errors by reason")
                      .Register(*registry)),
        ck_connections(pm::BuildGauge()
                           .Name("qkdn_ck_connections")
                           .Help("Open Ck connections")
                           .Register(*registry)
                           .Add({})),
        http_requests(pm::BuildCounter()
                          .Name("qkdn_http_requests_total")
                          .Help("Northbound HTTP requests by method and status code")
                          .Register(*registry)),
        http_duration(pm::BuildHistogram()
                          .Name("qkdn_http_request_duration_seconds")
                          .Help("Northbound HTTP request duration")
                          .Register(*registry)
                          .Add({}, kHttpBuckets)),
        store_up(pm::BuildGauge()
                     .Name("qkdn_store_up")
                     .Help("1 when the PostgreSQL store answers (or no store is configured)")
                     .Register(*registry)
                     .Add({})),
        build_info(pm::BuildGauge()
                       .Name("qkdn_build_info")
                       .Help("Build of this controller (always 1)")
                       .Register(*registry)) {}

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

  std::shared_ptr<pm::Registry> registry;
  pm::Family<pm::Gauge>& link_pool_bytes;
  pm::Family<pm::Gauge>& link_stored_keys;
  pm::Family<pm::Gauge>& link_rate;
  pm::Family<pm::Gauge>& link_consumption;
  pm::Family<pm::Gauge>& link_qber;
  pm::Family<pm::Gauge>& link_up;
  pm::Family<pm::Gauge>& km_connected;
  pm::Gauge& sessions_active;
  pm::Family<pm::Counter>& relays;
  pm::Histogram& relay_duration;
  pm::Histogram& route_duration;
  pm::Family<pm::Counter>& reroutes;
  pm::Family<pm::Gauge>& alarms_active;
  pm::Family<pm::Counter>& reservations;
  pm::Family<pm::Counter>& ck_messages;
  pm::Family<pm::Counter>& ck_errors;
  pm::Gauge& ck_connections;
  pm::Family<pm::Counter>& http_requests;
  pm::Histogram& http_duration;
  pm::Gauge& store_up;
  pm::Family<pm::Gauge>& build_info;

  std::mutex mu;  // guards the caches below (never held across anything slow)
  std::map<std::string, pm::Counter*, std::less<>> relay_by_result;
  std::map<std::string, pm::Counter*, std::less<>> reroute_by_reason;
  std::map<std::string, pm::Counter*, std::less<>> reservation_by_result;
  std::map<std::string, pm::Counter*, std::less<>> ck_in;
  std::map<std::string, pm::Counter*, std::less<>> ck_out;
  std::map<std::string, pm::Counter*, std::less<>> ck_error_by_reason;
  std::map<std::string, pm::Counter*, std::less<>> http_by_method_code;
  std::array<pm::Gauge*, controller::kSeverityCount> alarm_gauges{};

  // Per-link and per-KM gauges, keyed by link / KM ID, so vanished ones can be removed.
  struct LinkGauges {
    std::string a, b;
    pm::Gauge* pool = nullptr;
    pm::Gauge* keys = nullptr;
    pm::Gauge* rate = nullptr;
    pm::Gauge* consumption = nullptr;
    pm::Gauge* qber = nullptr;
    pm::Gauge* up = nullptr;
  };
  std::map<std::string, LinkGauges> links;
  std::map<std::string, pm::Gauge*> kms;
};

Metrics::Metrics(std::string version, std::string revision) : state_(std::make_unique<State>()) {
  auto& s = *state_;
  s.build_info.Add({{"version", std::move(version)}, {"revision", std::move(revision)}}).Set(1);
  for (auto reason : controller::kAllRerouteReasons) {
    s.labelled(s.reroutes, s.reroute_by_reason, "reason", controller::to_string(reason));
  }
  for (auto r : kRelayResults) s.labelled(s.relays, s.relay_by_result, "result", r);
  for (auto r : kReservationResults) {
    s.labelled(s.reservations, s.reservation_by_result, "result", r);
  }
  for (std::size_t i = 0; i < controller::kSeverityCount; ++i) {
    s.alarm_gauges[i] = &s.alarms_active.Add(
        {{"severity", std::string(controller::to_string(static_cast<controller::Severity>(i)))}});
  }
  s.store_up.Set(1);
}

Metrics::~Metrics() = default;

void Metrics::ck_message(bool inbound, std::string_view command) {
  auto& s = *state_;
  auto& cache = inbound ? s.ck_in : s.ck_out;
  pm::Counter* c = nullptr;
  {
    std::lock_guard lock(s.mu);
    auto it = cache.find(command);
    if (it == cache.end()) {
      auto& added = s.ck_messages.Add(
          {{"direction", inbound ? "in" : "out"}, {"command", std::string(command)}});
      it = cache.emplace(std::string(command), &added).first;
    }
    c = it->second;
  }
  c->Increment();
}

void Metrics::ck_protocol_error(std::string_view reason) {
  state_->labelled(state_->ck_errors, state_->ck_error_by_reason, "reason", reason).Increment();
}

void Metrics::key_relay(std::string_view result, double seconds) {
  state_->labelled(state_->relays, state_->relay_by_result, "result", result).Increment();
  if (result == "relayed") state_->relay_duration.Observe(seconds);
}

void Metrics::route_computation(double seconds) { state_->route_duration.Observe(seconds); }

void Metrics::reroute(std::string_view reason) {
  state_->labelled(state_->reroutes, state_->reroute_by_reason, "reason", reason).Increment();
}

void Metrics::key_reservation(std::string_view result, std::uint64_t n) {
  state_->labelled(state_->reservations, state_->reservation_by_result, "result", result)
      .Increment(static_cast<double>(n));
}

void Metrics::http_request(std::string_view method, int code, double seconds) {
  auto& s = *state_;
  std::string key = std::string(method) + " " + std::to_string(code);
  pm::Counter* c = nullptr;
  {
    std::lock_guard lock(s.mu);
    auto it = s.http_by_method_code.find(key);
    if (it == s.http_by_method_code.end()) {
      auto& added =
          s.http_requests.Add({{"method", std::string(method)}, {"code", std::to_string(code)}});
      it = s.http_by_method_code.emplace(key, &added).first;
    }
    c = it->second;
  }
  c->Increment();
  s.http_duration.Observe(seconds);
}

void Metrics::update_gauges(const GaugeInput& in) {
  auto& s = *state_;
  std::lock_guard lock(s.mu);
  auto remove_link_gauges = [&s](const State::LinkGauges& g) {
    s.link_pool_bytes.Remove(g.pool);
    s.link_stored_keys.Remove(g.keys);
    s.link_rate.Remove(g.rate);
    s.link_consumption.Remove(g.consumption);
    s.link_qber.Remove(g.qber);
    s.link_up.Remove(g.up);
  };
  // Links: add new label sets, update all, remove those that vanished (or changed ends).
  std::map<std::string, bool> seen;
  for (const auto& link : in.links) {
    const auto& id = link.spec.link_id;
    seen[id] = true;
    auto it = s.links.find(id);
    if (it != s.links.end() && (it->second.a != link.spec.a || it->second.b != link.spec.b)) {
      auto& g = it->second;
      remove_link_gauges(g);
      s.links.erase(it);
      it = s.links.end();
    }
    if (it == s.links.end()) {
      const pm::Labels labels{{"link", id}, {"a", link.spec.a}, {"b", link.spec.b}};
      State::LinkGauges g;
      g.a = link.spec.a;
      g.b = link.spec.b;
      g.pool = &s.link_pool_bytes.Add(labels);
      g.keys = &s.link_stored_keys.Add(labels);
      g.rate = &s.link_rate.Add(labels);
      g.consumption = &s.link_consumption.Add(labels);
      g.qber = &s.link_qber.Add(labels);
      g.up = &s.link_up.Add(labels);
      it = s.links.emplace(id, g).first;
    }
    auto& g = it->second;
    g.pool->Set(static_cast<double>(link.stored_key_bits) / 8.0);
    g.keys->Set(static_cast<double>(link.stored_keys));
    g.rate->Set(link.key_rate_bps / 8.0);
    g.consumption->Set(link.consumption_rate_bps / 8.0);
    g.qber->Set(link.qber);
    g.up->Set(link.oper == controller::OperState::kUp ? 1 : 0);
  }
  for (auto it = s.links.begin(); it != s.links.end();) {
    if (seen.count(it->first) != 0) {
      ++it;
      continue;
    }
    auto& g = it->second;
    remove_link_gauges(g);
    it = s.links.erase(it);
  }
  std::map<std::string, bool> seen_kms;
  for (const auto& km : in.kms) {
    seen_kms[km.km_id] = true;
    auto it = s.kms.find(km.km_id);
    if (it == s.kms.end()) {
      it = s.kms.emplace(km.km_id, &s.km_connected.Add({{"km", km.km_id}})).first;
    }
    it->second->Set(km.connected ? 1 : 0);
  }
  for (auto it = s.kms.begin(); it != s.kms.end();) {
    if (seen_kms.count(it->first) != 0) {
      ++it;
      continue;
    }
    s.km_connected.Remove(it->second);
    it = s.kms.erase(it);
  }
  s.sessions_active.Set(static_cast<double>(in.sessions_active));
  for (std::size_t i = 0; i < controller::kSeverityCount; ++i) {
    s.alarm_gauges[i]->Set(static_cast<double>(in.alarms_active[i]));
  }
  s.ck_connections.Set(static_cast<double>(in.ck_connections));
  s.store_up.Set(in.store_up ? 1 : 0);
}

std::string Metrics::serialize() const {
  auto families = state_->registry->Collect();
  std::ostringstream out;
  pm::TextSerializer{}.Serialize(out, families);
  return out.str();
}

prometheus::Registry& Metrics::registry() { return *state_->registry; }

}  // namespace qkdn::service
