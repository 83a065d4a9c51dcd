// Ck server over plain TCP (--insecure-ck): every bad-input case of ck-protocol.md clause 2 and the
// registration gate, against the in-process controller service on 127.0.0.1:0.
#include <gtest/gtest.h>

#include <chrono>
#include <optional>
#include <random>
#include <thread>

#include "ck_test_support.hpp"

namespace qkdn::test {
namespace {

constexpr std::uint16_t kRegister = 0x14E1;
constexpr std::uint16_t kRegisterResponse = 0x41E2;
constexpr std::uint16_t kStatus = 0x14E3;
constexpr std::uint16_t kHeartbeat = 0x14E8;
constexpr std::uint16_t kHeartbeatResponse = 0x41E9;
constexpr std::uint16_t kError = 0x41EF;
constexpr auto kLinks1 = R"([{"link_id":"L12","peer_kma_id":"KM2"}])";
constexpr auto kLinks2 =
    R"([{"link_id":"L12","peer_kma_id":"KM1"},{"link_id":"L23","peer_kma_id":"KM3"}])";

service::ServiceOptions insecure(std::chrono::milliseconds read_timeout = 200ms,
                                 std::chrono::milliseconds heartbeat = 1000ms) {
  service::ServiceOptions o;
  o.insecure_ck = true;
  o.read_timeout = read_timeout;
  o.heartbeat_interval = heartbeat;
  return o;
}

void expect_error(const ck::Frame& f, std::string_view code, std::uint32_t about) {
  ASSERT_EQ(f.command, kError) << f.payload;
  EXPECT_EQ(f.message_id, about);
  const auto e = decode_as<ck::ErrorMessage>(f);
  EXPECT_EQ(e.error, code) << f.payload;
  ASSERT_TRUE(e.message_id.has_value());
  EXPECT_EQ(*e.message_id, about);
}

void expect_registered(const ck::Frame& f) {
  ASSERT_EQ(f.command, kRegisterResponse);
  EXPECT_EQ(decode_as<ck::RegisterResponse>(f).response, "OK") << f.payload;
}

class CkProtocol : public ::testing::Test {
 protected:
  void TearDown() override {
    // Whatever the test sent, no connection ever held more than one frame.
    EXPECT_LE(h.svc().counters().max_connection_buffer, ck::kHeaderSize + ck::kMaxPayload);
  }
  Harness h{insecure()};
};

// Register answers with the controller's identity, epoch, intervals and known peer endpoints.
TEST_F(CkProtocol, RegisterResponseCarriesControllerParameters) {
  RawClient km2(h.port());
  expect_registered(km2.do_register("KM2", kLinks2, 1));
  RawClient km1(h.port());
  const auto f = km1.do_register("KM1", kLinks1, 5);
  EXPECT_EQ(f.message_id, 5u);
  const auto r = decode_as<ck::RegisterResponse>(f);
  EXPECT_EQ(r.response, "OK");
  EXPECT_EQ(r.controller_id, "qkdn-controller");
  EXPECT_EQ(r.controller_epoch, h.svc().controller_epoch());
  EXPECT_GT(r.controller_epoch, 1'600'000'000'000);
  EXPECT_EQ(r.heartbeat_interval_ms, 1000);
  EXPECT_EQ(r.status_interval_ms, 1000);
  ASSERT_TRUE(r.peers.has_value());
  ASSERT_EQ(r.peers->size(), 1u);
  EXPECT_EQ((*r.peers)[0].kma_id, "KM2");
  EXPECT_EQ((*r.peers)[0].kma_endpoint, "127.0.0.1:71");
}

// A heartbeat is answered with 0x41E9 under the same MessageID.
TEST_F(CkProtocol, HeartbeatRoundTrip) {
  RawClient c(h.port());
  expect_registered(c.do_register("KM1"));
  for (std::uint32_t id = 2; id < 20; ++id) {
    const auto f = c.heartbeat("KM1", id);
    EXPECT_EQ(f.command, kHeartbeatResponse);
    EXPECT_EQ(f.message_id, id);
    EXPECT_EQ(f.payload, "{}");
  }
  EXPECT_GE(h.svc().counters().inbound.at("heartbeat"), 18u);
}

// A version other than 0x0001 gets Error unsupported_version, then the connection closes.
TEST_F(CkProtocol, WrongVersionGetsErrorThenClose) {
  RawClient c(h.port());
  c.send_raw(RawClient::frame(kRegister, 7, "{}", 0x0002));
  expect_error(c.expect_frame(), "unsupported_version", 7);
  EXPECT_TRUE(c.wait_closed());
}

// The first command must be Register: anything else gets Error not_registered and a close.
TEST_F(CkProtocol, CommandBeforeRegisterIsRefusedAndClosed) {
  RawClient c(h.port());
  c.send(kHeartbeat, 3, R"({"kma_id":"KM1"})");
  expect_error(c.expect_frame(), "not_registered", 3);
  EXPECT_TRUE(c.wait_closed());
  EXPECT_EQ(h.svc().counters().protocol_errors.at("not_registered"), 1u);
}

// An unknown code gets Error unknown_command and the connection stays usable.
TEST_F(CkProtocol, UnknownCommandKeepsConnection) {
  RawClient c(h.port());
  expect_registered(c.do_register("KM1"));
  c.send(0x14AA, 2, "{}");
  expect_error(c.expect_frame(), "unknown_command", 2);
  c.send(0x7777, 3, "{}");
  expect_error(c.expect_frame(), "unknown_command", 3);
  EXPECT_EQ(c.heartbeat("KM1", 4).command, kHeartbeatResponse);
}

// A controller -> KM code from a KM is a bad_request; the connection stays open.
TEST_F(CkProtocol, WrongDirectionIsBadRequest) {
  RawClient c(h.port());
  expect_registered(c.do_register("KM1"));
  c.send(kHeartbeatResponse, 2, "{}");
  expect_error(c.expect_frame(), "bad_request", 2);
  c.send(0x4104, 3, "{}");
  expect_error(c.expect_frame(), "bad_request", 3);
  EXPECT_EQ(c.heartbeat("KM1", 4).command, kHeartbeatResponse);
  EXPECT_EQ(h.svc().counters().protocol_errors.at("wrong_direction"), 2u);
}

// Payloads that are not one JSON object, lack a mandatory field or have a wrong type: Error
// bad_request (or the Register response NG), connection stays open.
TEST_F(CkProtocol, BadPayloadsKeepConnection) {
  RawClient c(h.port());
  // Register with a broken payload: NG, still open, a good Register then succeeds.
  c.send(kRegister, 1, "not json");
  auto f = c.expect_frame();
  ASSERT_EQ(f.command, kRegisterResponse);
  EXPECT_TRUE(decode_as<ck::RegisterResponse>(f).response.starts_with("NG: bad_request"));
  expect_registered(c.do_register("KM1", "[]", 2));

  const std::pair<std::uint16_t, std::string> cases[] = {
      {kHeartbeat, "[1,2,3]"},                      // not an object
      {kHeartbeat, "\"KM1\""},                      // a JSON string
      {kHeartbeat, ""},                             // empty
      {kHeartbeat, R"({"kma_id":"KM1")"},           // truncated
      {kHeartbeat, "{}"},                           // missing kma_id
      {kHeartbeat, R"({"kma_id":5})"},              // wrong type
      {kStatus, R"({"kma_id":"KM1","links":[]})"},  // missing timestamp
      {kStatus, R"({"kma_id":"KM1","timestamp":"2026-01-01T00:00:00Z","links":{}})"},
      {0x14E4, R"({"kma_id":"KM1","alarm":"qber_high","severity":3,"timestamp":"x"})"},
      {0x1401, R"({"source_kma_id":"KM1"})"},  // neither destination field
  };
  std::uint32_t id = 10;
  for (const auto& [code, payload] : cases) {
    c.send(code, id, payload);
    expect_error(c.expect_frame(), "bad_request", id);
    ++id;
  }
  EXPECT_EQ(c.heartbeat("KM1", id).command, kHeartbeatResponse);
}

// A frame whose Length promises more than arrives, then silence: closed after the read timeout.
TEST_F(CkProtocol, StallMidFrameClosesAfterReadTimeout) {
  RawClient c(h.port());
  expect_registered(c.do_register("KM1"));
  const auto full = RawClient::frame(kHeartbeat, 2, std::string(100, ' '));
  c.send_raw(std::string_view(full).substr(0, 30));  // header + 20 of 100 payload bytes
  const auto start = std::chrono::steady_clock::now();
  EXPECT_TRUE(c.wait_closed(10s));  // the 200 ms read timeout fires long before this bound
  EXPECT_GE(std::chrono::steady_clock::now() - start, 150ms);
  EXPECT_EQ(h.svc().counters().protocol_errors.at("read_timeout"), 1u);
}

// A stall inside the header counts too.
TEST_F(CkProtocol, StallInsideHeaderCloses) {
  RawClient c(h.port());
  c.send_raw(std::string("\x00\x01\x00", 3));
  EXPECT_TRUE(c.wait_closed(10s));
}

// 65,535 bytes of garbage in a well-delimited frame: bad_request, the connection stays open and
// the buffer stays within one frame.
TEST_F(CkProtocol, MaxSizeGarbagePayload) {
  RawClient c(h.port());
  expect_registered(c.do_register("KM1"));
  std::mt19937 rng(42);
  std::string junk(ck::kMaxPayload, '\0');
  for (auto& ch : junk) ch = static_cast<char>(rng() & 0xFF);
  c.send(kStatus, 2, junk);
  expect_error(c.expect_frame(), "bad_request", 2);
  c.send(0x14AB, 3, junk);
  expect_error(c.expect_frame(), "unknown_command", 3);
  EXPECT_EQ(c.heartbeat("KM1", 4).command, kHeartbeatResponse);
  const auto buf = h.svc().counters().max_connection_buffer;
  EXPECT_GE(buf, ck::kHeaderSize + ck::kMaxPayload);
  EXPECT_LE(buf, ck::kHeaderSize + ck::kMaxPayload);
}

// 65,535 bytes of raw garbage on the stream: the "header" has a bad version -> Error + close.
TEST_F(CkProtocol, RawGarbageStreamCloses) {
  RawClient c(h.port());
  std::mt19937 rng(7);
  std::string junk(ck::kMaxPayload, '\0');
  for (auto& ch : junk) ch = static_cast<char>(rng() & 0xFF);
  junk[0] = '\x7F';  // certainly not version 1
  c.send_raw(junk);
  ck::Frame f;
  ASSERT_EQ(c.read(f), ReadStatus::kFrame);
  EXPECT_EQ(decode_as<ck::ErrorMessage>(f).error, "unsupported_version");
  EXPECT_TRUE(c.wait_closed());
}

// Frames split byte by byte, and several frames in one segment, are delimited correctly.
TEST_F(CkProtocol, SplitAndCoalescedFrames) {
  RawClient c(h.port());
  const auto reg = RawClient::frame(
      kRegister, 1, R"({"km_id":"KM1","kma_endpoint":"127.0.0.1:7001","links":[]})");
  for (char b : reg) c.send_raw(std::string_view(&b, 1));
  expect_registered(c.expect_frame());

  std::string batch;
  for (std::uint32_t id = 2; id <= 6; ++id) {
    batch += RawClient::frame(kHeartbeat, id, R"({"kma_id":"KM1"})");
  }
  c.send_raw(batch);
  for (std::uint32_t id = 2; id <= 6; ++id) {
    const auto f = c.expect_frame();
    EXPECT_EQ(f.command, kHeartbeatResponse);
    EXPECT_EQ(f.message_id, id);
  }
  // A frame split across two writes at every offset.
  const auto hb = RawClient::frame(kHeartbeat, 9, R"({"kma_id":"KM1"})");
  for (std::size_t cut = 1; cut < hb.size(); ++cut) {
    c.send_raw(std::string_view(hb).substr(0, cut));
    c.send_raw(std::string_view(hb).substr(cut));
    EXPECT_EQ(c.expect_frame().message_id, 9u);
  }
}

// A second Register naming another KM is refused; the session keeps its first identity.
TEST_F(CkProtocol, SecondRegisterForAnotherKmIsRefused) {
  RawClient c(h.port());
  expect_registered(c.do_register("KM1"));
  const auto f = c.do_register("KM2", "[]", 2);
  ASSERT_EQ(f.command, kRegisterResponse);
  EXPECT_TRUE(decode_as<ck::RegisterResponse>(f).response.starts_with("NG:"));
  EXPECT_EQ(c.heartbeat("KM1", 3).command, kHeartbeatResponse);
  expect_error(c.heartbeat("KM2", 4), "bad_request", 4);
  const auto snap = h.svc().snapshot_state();
  EXPECT_TRUE(h.find_km(snap, "KM1")->connected);
  EXPECT_FALSE(h.find_km(snap, "KM2")->connected);
}

// A KM that the topology does not know gets NG: unknown_kma.
TEST_F(CkProtocol, UnknownKmaIsRefused) {
  RawClient c(h.port());
  const auto f = c.do_register("KM9");
  ASSERT_EQ(f.command, kRegisterResponse);
  EXPECT_TRUE(decode_as<ck::RegisterResponse>(f).response.starts_with("NG: unknown_kma"));
  EXPECT_TRUE(c.wait_closed());
}

// A KM that registers again on a new connection wins; the older connection is closed and the KM
// stays connected.
TEST_F(CkProtocol, NewerConnectionForSameKmWins) {
  RawClient old_conn(h.port());
  expect_registered(old_conn.do_register("KM1"));
  RawClient new_conn(h.port());
  expect_registered(new_conn.do_register("KM1"));
  EXPECT_TRUE(old_conn.wait_closed());
  EXPECT_EQ(new_conn.heartbeat("KM1", 2).command, kHeartbeatResponse);
  EXPECT_TRUE(h.find_km(h.svc().snapshot_state(), "KM1")->connected);
}

// Status reports update link state (both ends registered and reporting).
TEST_F(CkProtocol, StatusReportUpdatesLinkState) {
  RawClient km1(h.port());
  RawClient km2(h.port());
  expect_registered(km1.do_register("KM1", kLinks1));
  expect_registered(km2.do_register("KM2", kLinks2));
  km1.send(kStatus, 2,
           R"({"kma_id":"KM1","timestamp":"2026-01-01T00:00:00Z","links":[{"link_id":"L12",)"
           R"("peer_kma_id":"KM2","state":"up","stored_keys":40,"stored_key_bits":10240,)"
           R"("key_rate_bps":5000,"consumption_rate_bps":100,"qber":0.03}]})");
  EXPECT_EQ(km1.heartbeat("KM1", 3).command, kHeartbeatResponse);
  // Status reports are applied in one core pass per batch interval (not with the frame that
  // carried them): poll, bounded.
  auto l12_state = [&](controller::OperState want, std::uint64_t keys) {
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    for (;;) {
      auto snap = h.svc().snapshot_state();
      for (const auto& l : snap.links) {
        if (l.spec.link_id == "L12" && l.oper == want && l.stored_keys == keys)
          return std::optional<controller::Link>(l);
      }
      if (std::chrono::steady_clock::now() > until) return std::optional<controller::Link>();
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  };
  const auto up = l12_state(controller::OperState::kUp, 40);
  ASSERT_TRUE(up.has_value()) << "L12 not up within 5 s of the status report";
  const controller::Link* l12 = &*up;
  EXPECT_EQ(l12->oper, controller::OperState::kUp);
  EXPECT_EQ(l12->stored_keys, 40u);
  EXPECT_EQ(l12->stored_key_bits, 10240u);
  EXPECT_DOUBLE_EQ(l12->key_rate_bps, 5000);

  km1.send(kStatus, 4,
           R"({"kma_id":"KM1","timestamp":"2026-01-01T00:00:01Z","links":[{"link_id":"L12",)"
           R"("peer_kma_id":"KM2","state":"down","stored_keys":0,"stored_key_bits":0,)"
           R"("key_rate_bps":0,"consumption_rate_bps":0,"qber":0.03}]})");
  EXPECT_EQ(km1.heartbeat("KM1", 5).command, kHeartbeatResponse);
  EXPECT_TRUE(l12_state(controller::OperState::kDown, 0).has_value())
      << "L12 not down within 5 s of the status report";
  // A KM may report only its own links.
  km1.send(kStatus, 6,
           R"({"kma_id":"KM1","timestamp":"2026-01-01T00:00:01Z","links":[{"link_id":"L23",)"
           R"("peer_kma_id":"KM3","state":"up","stored_keys":0,"stored_key_bits":0,)"
           R"("key_rate_bps":0,"consumption_rate_bps":0,"qber":0.03}]})");
  expect_error(km1.expect_frame(), "bad_request", 6);
}

// An alarm reaches the network state and the alarm table.
TEST_F(CkProtocol, AlarmIsRecorded) {
  RawClient km1(h.port());
  expect_registered(km1.do_register("KM1", kLinks1));
  km1.send(0x14E4, 2,
           R"({"kma_id":"KM1","alarm":"qber_high","link_id":"L12","severity":"major",)"
           R"("value":0.2,"timestamp":"2026-01-01T00:00:00Z"})");
  EXPECT_EQ(km1.heartbeat("KM1", 3).command, kHeartbeatResponse);
  const auto snap = h.svc().snapshot_state();
  ASSERT_EQ(snap.alarms.size(), 1u);
  EXPECT_EQ(snap.alarms[0].type, "qber_high");
  EXPECT_EQ(snap.alarms[0].link_id, "L12");
}

// Routing and key supply are not implemented yet: said explicitly (Error no_route), never
// silently; unsolicited responses are bad requests. The connection stays open.
TEST_F(CkProtocol, UnimplementedCommandsAnswerExplicitly) {
  RawClient c(h.port());
  expect_registered(c.do_register("KM1"));
  c.send(0x1401, 2, R"({"destination_kma_id":"KM3"})");
  expect_error(c.expect_frame(), "no_route", 2);
  c.send(0x1403, 3, R"({"destination_kma_id":"KM3","number_of_keys":1})");
  expect_error(c.expect_frame(), "no_route", 3);
  c.send(0x1405, 4, R"({"response":"OK"})");
  expect_error(c.expect_frame(), "bad_request", 4);
  EXPECT_EQ(c.heartbeat("KM1", 5).command, kHeartbeatResponse);
}

// Error frames from a KM are counted and not answered.
TEST_F(CkProtocol, ErrorFromKmIsCountedNotAnswered) {
  RawClient c(h.port());
  expect_registered(c.do_register("KM1"));
  c.send(0x14EF, 2, R"({"error":"internal","message":"oops","message_id":1})");
  const auto f = c.heartbeat("KM1", 3);  // the next frame is the heartbeat's answer
  EXPECT_EQ(f.command, kHeartbeatResponse);
  EXPECT_EQ(f.message_id, 3u);
  EXPECT_EQ(h.svc().counters().km_errors_received, 1u);
}

// A KM that sends nothing for 3 heartbeat intervals is disconnected (connection closed, KM down).
TEST(CkLiveness, MissedHeartbeatsDisconnect) {
  Harness h(insecure(200ms, 100ms));
  RawClient c(h.port());
  expect_registered(c.do_register("KM1"));
  EXPECT_TRUE(h.find_km(h.svc().snapshot_state(), "KM1")->connected);
  EXPECT_TRUE(c.wait_closed(10s));
  EXPECT_TRUE(h.wait_event(controller::NetworkEvent::Kind::kKmDisconnected, "KM1", 10s));
  EXPECT_FALSE(h.find_km(h.svc().snapshot_state(), "KM1")->connected);
  EXPECT_EQ(h.svc().counters().protocol_errors.at("idle_timeout"), 1u);
}

// A stalled connection and a garbage-spewing one do not delay another KM's heartbeats.
TEST(CkIsolation, StalledAndGarbageConnectionsDoNotBlockOthers) {
  Harness h(insecure(30s));  // the stall stays open for the whole test
  RawClient stalled(h.port());
  expect_registered(stalled.do_register("KM2"));
  const auto partial = RawClient::frame(kHeartbeat, 2, std::string(5000, ' '));
  stalled.send_raw(std::string_view(partial).substr(0, 100));

  RawClient garbage(h.port());
  expect_registered(garbage.do_register("KM3"));
  std::string junk = RawClient::frame(kStatus, 2, std::string(ck::kMaxPayload, 'x'));

  RawClient good(h.port());
  expect_registered(good.do_register("KM1"));
  for (std::uint32_t id = 2; id < 200; ++id) {
    if (id % 20 == 0) garbage.send_raw(junk);  // answered with errors nobody reads for now
    const auto f = good.heartbeat("KM1", id);
    ASSERT_EQ(f.command, kHeartbeatResponse);
    ASSERT_EQ(f.message_id, id);
  }
  // The stalled connection is still open (its read timeout is 30 s) and still half a frame.
  ck::Frame f;
  EXPECT_EQ(stalled.read(f, 1ms), ReadStatus::kTimeout);
  EXPECT_LE(h.svc().counters().max_connection_buffer, ck::kHeaderSize + ck::kMaxPayload);
}

// stop() drains: open sessions are closed and their KMs marked disconnected.
TEST(CkShutdown, StopClosesSessions) {
  auto h = std::make_unique<Harness>(insecure());
  RawClient c(h->port());
  expect_registered(c.do_register("KM1"));
  h->svc().stop();
  EXPECT_TRUE(c.wait_closed());
  EXPECT_TRUE(h->wait_event(controller::NetworkEvent::Kind::kKmDisconnected, "KM1"));
  EXPECT_EQ(h->svc().counters().connections_active, 0);
}

}  // namespace
}  // namespace qkdn::test
