// The service's drivers on their own, without PostgreSQL, sockets or a ControllerService: the
// key-supply driver (KeySupplyDriver) and the rerouting driver (RerouteDriver) over the real core
// (Network, ReroutingEngine, RelayTable, ledger), a writer into a MemoryStore, fake Ck channels
// that capture every command and answer as the test says, and a ManualClock. Relay results go
// through ControllerFacade::report_to, the facade's own forwarding.
#include <gtest/gtest.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/strand.hpp>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "qkdn/controller/alarms.hpp"
#include "qkdn/controller/error.hpp"
#include "qkdn/controller/ledger.hpp"
#include "qkdn/controller/memory_store.hpp"
#include "qkdn/controller/relays.hpp"
#include "qkdn/controller/sessions.hpp"
#include "qkdn/service/controller_facade.hpp"
#include "qkdn/service/key_supply_driver.hpp"
#include "qkdn/service/reroute_driver.hpp"
#include "rerouting_test_util.hpp"

namespace qkdn::service {
namespace {

using controller::testing::Lab;
using controller::testing::Strings;

// A Ck channel that records what the driver sends and answers requests with `answer` (no answer:
// the request fails as a timeout would).
class FakeChannel final : public southbound::CkChannel {
 public:
  using Answer = std::function<std::optional<ck::Message>(const ck::Message&)>;
  explicit FakeChannel(net::any_io_executor ex) : ex_(std::move(ex)) {}

  net::awaitable<void> run(FrameHandler) override { co_return; }
  net::awaitable<ck::Frame> request(ck::Message command) override {
    return request(std::move(command), std::chrono::milliseconds(10'000));
  }
  net::awaitable<ck::Frame> request(ck::Message command, std::chrono::milliseconds) override {
    requests.push_back(command);
    auto reply = answer ? answer(command) : std::nullopt;
    if (!reply) throw Unavailable("request timed out");
    ck::Frame f;
    f.command = static_cast<std::uint16_t>(ck::command_of(*reply));
    f.payload = ck::encode_payload(*reply);
    co_return f;
  }
  std::uint32_t send(ck::Message message, std::optional<std::uint32_t> reply_to) override {
    sent.push_back({std::move(message), reply_to});
    return reply_to.value_or(0);
  }
  void close() override { open_ = false; }
  void close_after_flush() override { open_ = false; }
  [[nodiscard]] std::string peer_identity() const override { return {}; }
  void mark_established() override {}
  [[nodiscard]] std::string remote_endpoint() const override { return "fake:0"; }
  [[nodiscard]] net::any_io_executor executor() const override { return ex_; }
  [[nodiscard]] bool is_open() const override { return open_; }

  /// The requests (commands that wait for an answer) of type M, in order.
  template <class M>
  std::vector<M> requests_of() const {
    std::vector<M> v;
    for (const auto& m : requests) {
      if (const auto* x = std::get_if<M>(&m)) v.push_back(*x);
    }
    return v;
  }
  /// The messages sent without waiting of type M, in order.
  template <class M>
  std::vector<M> sent_of() const {
    std::vector<M> v;
    for (const auto& [m, id] : sent) {
      if (const auto* x = std::get_if<M>(&m)) v.push_back(*x);
    }
    return v;
  }

  Answer answer;
  std::vector<ck::Message> requests;
  std::vector<std::pair<ck::Message, std::optional<std::uint32_t>>> sent;

 private:
  net::any_io_executor ex_;
  bool open_ = true;
};

class FakeChannels final : public KmChannels {
 public:
  [[nodiscard]] std::shared_ptr<southbound::CkChannel> channel_of(
      const std::string& km_id) const override {
    auto it = channels.find(km_id);
    return it == channels.end() ? nullptr : it->second;
  }
  std::map<std::string, std::shared_ptr<FakeChannel>> channels;
};

// The ordered writer without its threads: each group commits into the MemoryStore at once, in
// order, then its `then` runs (the write-ahead order the service's writer keeps).
class MemoryWriter final : public StoreWriter {
 public:
  explicit MemoryWriter(controller::MemoryStore& store) : store_(store) {}
  void submit(WriteGroup group) override {
    for (auto& w : group.ops) {
      w.op(store_);
      whats.push_back(w.what);
    }
    if (group.then) group.then();
  }
  [[nodiscard]] bool configured() const override { return true; }
  [[nodiscard]] bool up() const override { return true; }
  std::vector<std::string> whats;

 private:
  controller::MemoryStore& store_;
};

// Fresh key IDs (UUIDs) for a reservation answer.
Strings key_ids(Random& rng, std::int64_t n) {
  Strings v;
  for (std::int64_t i = 0; i < n; ++i) v.push_back(make_uuid_v4(rng));
  return v;
}

// The drivers over one lab network, wired as the service wires them (core_wiring.cpp).
class Rig {
 public:
  explicit Rig(Lab& lab)
      : lab_(lab),
        core_(net::make_strand(ioc_)),
        alarms(lab.clock),
        sessions(lab.net, lab.rng),
        ledger(lab.rng),
        relays(ledger, lab.rng),
        metrics("test", "test"),
        writer(store),
        rerouting(core_, RerouteDriver::Deps{lab.net,
                                             lab.engine,
                                             alarms,
                                             lab.clock,
                                             metrics,
                                             channels,
                                             writer,
                                             epoch_,
                                             [this](std::string_view l) { log.emplace_back(l); },
                                             {},
                                             {},
                                             {},
                                             {}}),
        key_supply(core_, KeySupplyDriver::Deps{
                              lab.net,
                              lab.engine,
                              sessions,
                              relays,
                              rerouting,
                              lab.clock,
                              lab.rng,
                              metrics,
                              channels,
                              writer,
                              epoch_,
                              KeySupplyDriver::Options{1, 64},
                              [this](const std::function<void(CoreChanges&)>& fn) { report(fn); },
                              [this](std::string_view l) { log.emplace_back(l); },
                              [](std::string_view) {},
                              [](std::string_view) {},
                              [] { return false; },
                              [](const std::string&) {
                                return [](const std::exception_ptr& e) {
                                  if (e) std::rethrow_exception(e);
                                };
                              },
                          }) {
    for (const auto& [id, km] : lab.net.kms()) {
      channels.channels[id] = std::make_shared<FakeChannel>(core_);
    }
  }

  /// A report through the facade's forwarding (what ControllerFacade::report does in the service).
  void report(const std::function<void(CoreChanges&)>& fn) {
    ControllerFacade::report_to(
        Core{lab_.net, alarms, lab_.engine, sessions, ledger, relays, lab_.clock, lab_.rng},
        CoreOutputs{rerouting, key_supply}, fn);
  }
  /// Runs the core strand until nothing is left (the coalescing timers included).
  void run() {
    ioc_.restart();
    ioc_.run_for(std::chrono::seconds(5));
  }
  FakeChannel& km(const std::string& id) { return *channels.channels.at(id); }
  /// Every KM answers 0x410A with fresh key IDs, 0x410C and 0x4104 with OK.
  void all_kms_answer_ok() {
    for (auto& [id, ch] : channels.channels) {
      ch->answer = [this](const ck::Message& m) -> std::optional<ck::Message> {
        if (const auto* r = std::get_if<ck::KeyReservationRequest>(&m)) {
          ck::KeyReservationResponse a;
          a.key_ids = key_ids(lab_.rng, r->number_of_keys.value_or(0));
          return a;
        }
        if (std::holds_alternative<ck::KeyAllocationRequest>(m)) {
          return ck::KeyAllocationResponse{};
        }
        if (const auto* r = std::get_if<ck::KeyRelayRequest>(&m)) {
          return ck::KeyRelayResponse{"OK", r->key_relay_request_id, {}};
        }
        if (const auto* r = std::get_if<ck::KeyRelease>(&m)) {
          return ck::KeyReleaseResponse{r->key_relay_request_id, "OK", {}, {}};
        }
        return std::nullopt;
      };
    }
  }
  /// The store's ledger state of each key ID.
  std::map<std::string, std::string> stored_ledger() {
    std::map<std::string, std::string> m;
    for (const auto& e : store.load().ledger) m[e.key_id] = e.state;
    return m;
  }
  /// The context of a command from `km` (its answers go to km's fake channel).
  CommandContext from(const std::string& km, std::uint32_t message_id) {
    return CommandContext{km, channels.channels.at(km), message_id, epoch_, nullptr};
  }

 private:
  Lab& lab_;
  net::io_context ioc_;
  net::any_io_executor core_;
  std::int64_t epoch_ = 7;

 public:
  controller::AlarmTable alarms;
  controller::SessionTable sessions;
  controller::ReservationLedger ledger;
  controller::RelayTable relays;
  Metrics metrics;
  controller::MemoryStore store;
  MemoryWriter writer;
  FakeChannels channels;
  std::vector<std::string> log;
  RerouteDriver rerouting;
  KeySupplyDriver key_supply;
};

Lab chain() { return Lab({"A", "B", "C"}, {{"AB", "A", "B", 10'000}, {"BC", "B", "C", 10'000}}); }

Lab diamond() {
  return Lab({"A", "B", "C", "D"}, {{"AB", "A", "B", 10'000},
                                    {"AC", "A", "C", 10'000},
                                    {"BD", "B", "D", 10'000},
                                    {"CD", "C", "D", 10'000}});
}

ck::KeyRelayRequestNotification relay_to(const std::string& dst, std::int64_t keys) {
  ck::KeyRelayRequestNotification n;
  n.destination_kma_id = dst;
  n.number_of_keys = keys;
  n.key_size = 256;
  return n;
}

double metric(const Metrics& m, const std::string& series) {
  const auto text = m.serialize();
  auto pos = text.find("\n" + series + " ");
  return pos == std::string::npos ? -1 : std::stod(text.substr(pos + series.size() + 2));
}

// A relay request reserves keys hop by hop (0x410A to each hop's near KM, naming its link and far
// KM), allocates them, stores every key in the ledger, and only then sends the 0x4104 naming the
// same keys; the 0x1405 OK leaves every key consumed in the store and the relay relayed.
TEST(KeySupplyDriver, RelayReservesHopByHopAndStoresTheLedgerBeforeTheRelayRequest) {
  Lab lab = chain();
  Rig rig(lab);
  rig.all_kms_answer_ok();
  // Write-ahead: what the store holds of each key when A gets the 0x4104 naming it.
  std::map<std::string, std::string> stored_at_request;
  auto ok = rig.km("A").answer;
  rig.km("A").answer = [&](const ck::Message& m) {
    if (const auto* r = std::get_if<ck::KeyRelayRequest>(&m)) {
      const auto ledger = rig.stored_ledger();
      for (const auto& hop : r->hop_keys) {
        for (const auto& k : hop.key_ids) {
          stored_at_request[k] = ledger.contains(k) ? ledger.at(k) : "<none>";
        }
      }
    }
    return ok(m);
  };
  rig.key_supply.on_relay_notification(rig.from("A", 11), relay_to("C", 2));
  rig.run();

  const auto a_res = rig.km("A").requests_of<ck::KeyReservationRequest>();
  const auto b_res = rig.km("B").requests_of<ck::KeyReservationRequest>();
  ASSERT_EQ(a_res.size(), 1U);
  ASSERT_EQ(b_res.size(), 1U);
  EXPECT_EQ(a_res[0].link_id, "AB");
  EXPECT_EQ(a_res[0].next_kma_id, "B");
  EXPECT_EQ(b_res[0].link_id, "BC");
  EXPECT_EQ(b_res[0].next_kma_id, "C");
  EXPECT_EQ(a_res[0].number_of_keys, 2);
  EXPECT_EQ(a_res[0].controller_epoch, 7);
  EXPECT_TRUE(rig.km("C").requests_of<ck::KeyReservationRequest>().empty());
  EXPECT_EQ(rig.km("A").requests_of<ck::KeyAllocationRequest>().size(), 1U);
  EXPECT_EQ(rig.km("B").requests_of<ck::KeyAllocationRequest>().size(), 1U);

  const auto relay = rig.km("A").requests_of<ck::KeyRelayRequest>();
  ASSERT_EQ(relay.size(), 1U);
  EXPECT_EQ(relay[0].transit_kma_ids, Strings{"B"});
  ASSERT_EQ(relay[0].hop_keys.size(), 2U);
  const auto ledger = rig.stored_ledger();
  EXPECT_EQ(ledger.size(), 4U);
  for (const auto& hop : relay[0].hop_keys) {
    EXPECT_EQ(hop.key_ids.size(), 2U);
    for (const auto& k : hop.key_ids) {
      ASSERT_TRUE(ledger.contains(k)) << "0x4104 names a key the store does not know";
      EXPECT_EQ(ledger.at(k), "consumed");
    }
  }
  ASSERT_EQ(stored_at_request.size(), 4U);
  for (const auto& [k, state] : stored_at_request) EXPECT_EQ(state, "allocated");
  ASSERT_EQ(rig.relays.list().size(), 1U);
  EXPECT_EQ(rig.relays.list()[0].state, controller::RelayState::kRelayed);
  EXPECT_EQ(rig.store.load().relays.at(0).state, "relayed");
  EXPECT_TRUE(rig.km("A").sent_of<ck::ErrorMessage>().empty());
}

// A hop that refuses its reservation ends the relay (no alternative route): the keys the other
// hop reserved go back to their KM (0x41EA naming exactly them), the ledger stores them released,
// no 0x4104 goes out, and the 0x1403 is answered with Error insufficient_keys.
TEST(KeySupplyDriver, FailedHopReleasesWhatWasReserved) {
  Lab lab = chain();
  Rig rig(lab);
  rig.all_kms_answer_ok();
  rig.km("B").answer = [](const ck::Message& m) -> std::optional<ck::Message> {
    if (std::holds_alternative<ck::KeyReservationRequest>(m)) {
      ck::KeyReservationResponse refused;
      refused.response = 1;
      return refused;
    }
    return std::nullopt;
  };
  rig.key_supply.on_relay_notification(rig.from("A", 12), relay_to("C", 3));
  rig.run();

  ASSERT_EQ(rig.km("A").requests_of<ck::KeyReservationRequest>().size(), 1U);
  const auto releases = rig.km("A").requests_of<ck::KeyRelease>();
  ASSERT_EQ(releases.size(), 1U);
  EXPECT_EQ(releases[0].link_id, "AB");
  ASSERT_EQ(releases[0].key_ids.size(), 3U);
  const auto ledger = rig.stored_ledger();
  for (const auto& k : releases[0].key_ids) {
    ASSERT_TRUE(ledger.contains(k));
    EXPECT_EQ(ledger.at(k), "released");
  }
  EXPECT_TRUE(rig.km("A").requests_of<ck::KeyRelayRequest>().empty());
  EXPECT_TRUE(rig.km("A").requests_of<ck::KeyAllocationRequest>().empty());
  const auto errors = rig.km("A").sent_of<ck::ErrorMessage>();
  ASSERT_EQ(errors.size(), 1U);
  EXPECT_EQ(errors[0].error, "insufficient_keys");
  EXPECT_EQ(rig.km("A").sent.back().second, std::optional<std::uint32_t>(12));
  EXPECT_EQ(rig.relays.list().at(0).state, controller::RelayState::kFailed);
}

// The instruction of fixed_rate mode for A->D, sent through the driver.
std::string standing_instruction(Lab& lab, Rig& rig) {
  rig.rerouting.apply(
      lab.engine.set_policy(controller::testing::policy(controller::RerouteMode::kFixedRate)));
  rig.rerouting.apply(lab.engine.route_for("A", "D").output);
  const auto first = rig.km("A").sent_of<ck::RelayInstruction>();
  EXPECT_EQ(first.size(), 1U);
  if (first.empty()) return {};
  EXPECT_EQ(first[0].transit_kma_ids, Strings{"B"});
  EXPECT_EQ(first[0].controller_epoch, 7);
  rig.km("A").sent.clear();
  return first[0].instruction_id;
}

// The instructions A received after the standing one: the withdrawal of `old_id` and one new
// instruction via C.
void expect_moved_to_c(Rig& rig, const std::string& old_id) {
  const auto sent = rig.km("A").sent_of<ck::RelayInstruction>();
  ASSERT_EQ(sent.size(), 2U);
  EXPECT_EQ(sent[0].instruction_id, old_id);
  EXPECT_NE(sent[0].extension.value_or("").find("withdraw"), std::string::npos);
  EXPECT_EQ(sent[0].not_before, sent[0].not_after);
  EXPECT_NE(sent[1].instruction_id, old_id);
  EXPECT_EQ(sent[1].transit_kma_ids, Strings{"C"});
}

// A QBER alarm a KM reports on a link of a route in use reaches the engine through the facade's
// batched report path: the instruction on that route is withdrawn and a new one sent on the other
// route, and the reroute is counted with reason qber.
TEST(RerouteDriver, QberAlarmOnALinkInUseSendsARerouteCommand) {
  Lab lab = diamond();
  Rig rig(lab);
  const auto old_id = standing_instruction(lab, rig);
  rig.report([](CoreChanges& c) { c.apply_alarm("B", "qber_high", "BD", "major", 0.2); });
  rig.run();  // the event batch waits for its coalescing timer
  expect_moved_to_c(rig, old_id);
  EXPECT_EQ(metric(rig.metrics, R"(qkdn_reroutes_total{reason="qber"})"), 1.0);
}

// A pool drained below its floor, reported in a status report, reroutes per mode: fixed_rate
// moves its instruction to the other route (reason pool_low); manual with a pin and no fallback
// sends no instruction and raises pinned_route_broken, stored through the writer.
TEST(RerouteDriver, DrainedPoolReroutesPerMode) {
  const controller::LinkReport drained{"BD", "D", true, 4000, 100, 10'000, 0, 0.02};
  {
    Lab lab = diamond();
    Rig rig(lab);
    const auto old_id = standing_instruction(lab, rig);
    rig.report([&](CoreChanges& c) { c.apply_status("B", {drained}); });
    rig.run();
    expect_moved_to_c(rig, old_id);
    EXPECT_EQ(metric(rig.metrics, R"(qkdn_reroutes_total{reason="pool_low"})"), 1.0);
  }
  {
    Lab lab = diamond();
    Rig rig(lab);
    rig.rerouting.apply(lab.engine.set_policy(
        controller::testing::policy(controller::RerouteMode::kManual, {{"pinned_fallback", 0}})));
    controller::PinnedRouteRecord pin;
    pin.src_km = "A";
    pin.dst_km = "D";
    pin.kms = {"A", "B", "D"};
    rig.rerouting.apply(lab.engine.pin_route(pin));
    rig.rerouting.apply(lab.engine.route_for("A", "D").output);
    rig.report([&](CoreChanges& c) { c.apply_status("B", {drained}); });
    rig.run();
    EXPECT_TRUE(rig.km("A").sent_of<ck::RelayInstruction>().empty());
    const auto* alarm = rig.alarms.find_active(controller::alarm_type::kPinnedRouteBroken, "A->D");
    ASSERT_NE(alarm, nullptr);
    const auto stored = rig.store.load().alarms;
    ASSERT_EQ(stored.size(), 1U);
    EXPECT_EQ(stored[0].id, alarm->id);
    EXPECT_EQ(metric(rig.metrics, R"(qkdn_reroutes_total{reason="pool_low"})"), 1.0);
  }
}

}  // namespace
}  // namespace qkdn::service
