// Backpressure and per-KM limits of the Ck server (issue 12 "backpressure instead of collapse",
// issue 13 "authenticated floods"), over real sockets against the in-process service:
//   - a registered KM sending 10,000 frames/s is refused with Error busy and then disconnected,
//     while another KM's requests keep being answered promptly;
//   - registrations beyond the admission queue are answered "NG: busy" with retry_after_ms and
//     closed instead of waiting behind the core, and the admitted one completes;
//   - status reports waiting for a busy core are coalesced per KM (the latest wins).
// The assertions read the wire (raw frames), so they hold for any controller build.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <future>
#include <memory>
#include <thread>
#include <vector>

#include <boost/asio/post.hpp>

#include "ck_test_support.hpp"

namespace qkdn::test {
namespace {

constexpr std::uint16_t kNextHopRequest = 0x1401;
constexpr std::uint16_t kNextHopResponse = 0x4102;
constexpr std::uint16_t kErrorFromController = 0x41EF;
constexpr std::uint16_t kRegisterResponse = 0x41E2;
constexpr std::uint16_t kStatusReport = 0x14E3;

service::ServiceOptions insecure() {
  service::ServiceOptions o;
  o.insecure_ck = true;
  return o;
}

const std::string kNextHopToKm3 = R"({"destination_kma_id":"KM3"})";
const std::string kNextHopToKm1 = R"({"destination_kma_id":"KM1"})";

// Blocks the core strand until release() (or destruction): commands pile up in front of it, as
// they do behind a slow core in a storm.
class CoreBlock {
 public:
  explicit CoreBlock(service::ControllerService& svc) {
    auto entered = std::make_shared<std::promise<void>>();
    auto started = entered->get_future();
    net::post(svc.core_executor(), [entered, gate = gate_.get_future().share()] {
      entered->set_value();
      gate.wait();
    });
    started.wait();
  }
  ~CoreBlock() { release(); }
  void release() {
    if (!released_) gate_.set_value();
    released_ = true;
  }

 private:
  std::promise<void> gate_;
  bool released_ = false;
};

std::string status_payload(const std::string& km, int stored_keys) {
  return R"({"kma_id":")" + km +
         R"(","timestamp":"2026-12-07T10:00:00Z","links":[{"link_id":"L12",)" +
         R"("peer_kma_id":")" + (km == "KM1" ? "KM2" : "KM1") + R"(","state":"up","stored_keys":)" +
         std::to_string(stored_keys) + R"(,"stored_key_bits":)" +
         std::to_string(stored_keys * 256) +
         R"(,"key_rate_bps":1000,"consumption_rate_bps":0,"qber":0.02}]})";
}

// A KM that floods 10,000 frames/s is refused busy and, as it keeps on, disconnected; another
// KM's next-hop requests are all answered within 500 ms meanwhile.
TEST(CkBackpressure, FloodingKmIsThrottledWhileAnotherKeepsWorking) {
  auto o = insecure();
  // No heartbeats in this test: an idle timeout (3 intervals) must not pass for a disconnect.
  o.heartbeat_interval = 60s;
  Harness h(std::move(o), service::make_key_supply_handler());
  RawClient flood(h.port());
  ASSERT_EQ(flood.do_register("KM1", R"([{"link_id":"L12","peer_kma_id":"KM2"}])").command,
            kRegisterResponse);
  RawClient calm(h.port());
  ASSERT_EQ(calm.do_register("KM3", R"([{"link_id":"L23","peer_kma_id":"KM2"}])").command,
            kRegisterResponse);

  // The flooding KM's answers are read on their own thread (a peer that does not read would be
  // cut off by its full write queue instead, which proves less).
  std::atomic<int> answers{0};
  std::atomic<int> busy{0};
  std::atomic<bool> closed{false};
  std::atomic<bool> stop{false};
  std::thread reader([&] {
    while (!stop) {
      ck::Frame f;
      const auto st = flood.read(f, 100ms);
      if (st == ReadStatus::kClosed) {
        closed = true;
        return;
      }
      if (st != ReadStatus::kFrame) continue;
      if (f.command == kNextHopResponse) ++answers;
      if (f.command == kErrorFromController &&
          f.payload.find(R"("error":"busy")") != std::string::npos) {
        ++busy;
      }
    }
  });

  // 10,000 frames/s for up to 3 s: 100 frames every 10 ms, one write each.
  std::atomic<bool> flood_done{false};
  std::thread flooder([&] {
    std::string batch;
    std::uint32_t id = 100;
    const auto t0 = std::chrono::steady_clock::now();
    for (int tick = 0; tick < 300 && !closed; ++tick) {
      batch.clear();
      for (int i = 0; i < 100; ++i) batch += RawClient::frame(kNextHopRequest, id++, kNextHopToKm3);
      try {
        flood.send_raw(batch);
      } catch (const std::exception&) {
        break;  // the controller closed the connection
      }
      std::this_thread::sleep_until(t0 + (tick + 1) * 10ms);  // pacing the load, not a wait
    }
    flood_done = true;
  });

  // Meanwhile the other KM asks for next hops, one at a time, and times each answer.
  std::vector<std::chrono::milliseconds> rtts;
  std::uint32_t id = 10;
  std::string calm_failure;
  while (!flood_done && calm_failure.empty()) {
    const auto t0 = std::chrono::steady_clock::now();
    calm.send(kNextHopRequest, ++id, kNextHopToKm1);
    ck::Frame f;
    if (calm.read(f, 5s) != ReadStatus::kFrame) {
      calm_failure = "no answer within 5 s";
    } else if (f.command != kNextHopResponse || f.message_id != id) {
      calm_failure = "unexpected answer " + std::to_string(f.command) + ": " + f.payload;
    }
    rtts.push_back(std::chrono::duration_cast<std::chrono::milliseconds>(
        std::chrono::steady_clock::now() - t0));
    std::this_thread::sleep_for(20ms);  // pacing the calm KM's own load
  }
  closed = closed || !calm_failure.empty();  // ends the flooder early on failure
  flooder.join();
  // The disconnect (if any) reaches the reader within a bounded time.
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  while (!closed && busy == 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(10ms);
  }
  stop = true;
  reader.join();
  ASSERT_TRUE(calm_failure.empty()) << "the other KM: " << calm_failure;
  ASSERT_FALSE(rtts.empty());
  const auto worst = *std::max_element(rtts.begin(), rtts.end());
  std::printf(
      "flooding KM: %d answers, %d busy refusals, %s; other KM: %zu requests, worst %lld ms\n",
      answers.load(), busy.load(), closed ? "disconnected" : "still connected", rtts.size(),
      static_cast<long long>(worst.count()));

  EXPECT_TRUE(busy > 0 || closed) << "a KM sending 10,000 frames/s was neither refused busy nor "
                                     "disconnected ("
                                  << answers << " answers)";
  EXPECT_TRUE(closed) << "a KM that keeps flooding after busy refusals is disconnected";
  EXPECT_LT(worst, 500ms) << "the other KM waited " << worst.count() << " ms for an answer";
  // And after the flood it is still served.
  calm.send(kNextHopRequest, 9999, kNextHopToKm1);
  EXPECT_EQ(calm.expect_frame().command, kNextHopResponse);
}

// With the core busy, one registration waits in the admission queue (limit 1 here) and one is
// held for a place (max_held_registrations 1); the next is answered at once "NG: busy" with
// retry_after_ms and closed, instead of queueing behind the core until the KM times out and
// registers again on a new connection. (Before the hold, the second was the busy one.)
TEST(CkBackpressure, RegistrationsBeyondTheQueueAndTheHoldAreToldToComeBack) {
  auto o = insecure();
  o.max_pending_registrations = 1;
  o.max_held_registrations = 1;
  Harness h(std::move(o));
  RawClient first(h.port());
  RawClient held(h.port());
  RawClient third(h.port());
  {
    CoreBlock block(h.svc());
    first.send(0x14E1, 1, R"({"km_id":"KM1","kma_endpoint":"127.0.0.1:7001","links":[]})");
    // Bounded wait until the first registration holds the queue's one place.
    auto deadline = std::chrono::steady_clock::now() + 5s;
    while (h.svc().counters().pending_registrations < 1 &&
           std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(5ms);
    }
    ASSERT_EQ(h.svc().counters().pending_registrations, 1u);
    held.send(0x14E1, 1, R"({"km_id":"KM2","kma_endpoint":"127.0.0.1:7002","links":[]})");
    deadline = std::chrono::steady_clock::now() + 5s;
    while (h.svc().counters().held_registrations < 1 &&
           std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(5ms);
    }
    ASSERT_EQ(h.svc().counters().held_registrations, 1u);
    third.send(0x14E1, 1, R"({"km_id":"KM3","kma_endpoint":"127.0.0.1:7003","links":[]})");
    ck::Frame ng = third.expect_frame(2s);  // answered while the core is still blocked
    ASSERT_EQ(ng.command, kRegisterResponse);
    EXPECT_NE(ng.payload.find(R"("response":"NG: busy")"), std::string::npos) << ng.payload;
    const auto r = decode_as<ck::RegisterResponse>(ng);
    ASSERT_TRUE(r.retry_after_ms.has_value()) << ng.payload;
    EXPECT_GE(*r.retry_after_ms, 1000);
    EXPECT_TRUE(third.wait_closed(2s));
  }
  for (auto* c : {&first, &held}) {
    ck::Frame ok = c->expect_frame();
    ASSERT_EQ(ok.command, kRegisterResponse);
    EXPECT_NE(ok.payload.find(R"("response":"OK")"), std::string::npos) << ok.payload;
  }
  // The counter is bumped on the core strand after the OK is sent: poll it (bounded).
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  while (h.svc().counters().registrations < 2 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(5ms);
  }
  const auto c = h.svc().counters();
  EXPECT_EQ(c.refused.at("registration_busy"), 1u);
  EXPECT_EQ(c.registrations, 2u);
  EXPECT_EQ(c.held_registrations, 0u);
}

// A storm: 40 KMs register at once while the core is blocked and the admission queue holds 2.
// Every one is held for a place and registered once the core runs again: no "NG: busy", no
// reconnect (each answer arrives on the connection that asked).
TEST(CkBackpressure, ARegistrationStormIsHeldNotRefused) {
  auto o = insecure();
  o.max_pending_registrations = 2;
  constexpr int kStorm = 40;
  // A network of kStorm KMs (no links: registration alone is measured).
  o.topology.name = "storm";
  for (int i = 0; i < kStorm; ++i) {
    const auto km = "S" + std::to_string(i);
    o.topology.kms.push_back({km, km});
  }
  Harness h(std::move(o));
  std::vector<std::unique_ptr<RawClient>> kms;
  for (int i = 0; i < kStorm; ++i) kms.push_back(std::make_unique<RawClient>(h.port()));
  {
    CoreBlock block(h.svc());
    for (int i = 0; i < kStorm; ++i) {
      kms[i]->send(0x14E1, 1,
                   R"({"km_id":"S)" + std::to_string(i) +
                       R"(","kma_endpoint":"127.0.0.1:7001","links":[]})");
    }
    const auto deadline = std::chrono::steady_clock::now() + 5s;
    while (h.svc().counters().held_registrations < kStorm - 2 &&
           std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(5ms);
    }
    const auto c = h.svc().counters();
    EXPECT_EQ(c.pending_registrations, 2u);
    EXPECT_EQ(c.held_registrations, static_cast<std::size_t>(kStorm - 2));
    EXPECT_EQ(c.refused.count("registration_busy") ? c.refused.at("registration_busy") : 0, 0u);
  }
  int answered = 0;
  for (auto& km : kms) {
    ck::Frame f = km->expect_frame(5s);
    ASSERT_EQ(f.command, kRegisterResponse);
    EXPECT_NE(f.payload.find(R"("response":"OK")"), std::string::npos) << f.payload;
    ++answered;
  }
  EXPECT_EQ(answered, kStorm);
  auto deadline = std::chrono::steady_clock::now() + 5s;
  while (h.svc().counters().registrations < kStorm && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(5ms);
  }
  const auto c = h.svc().counters();
  EXPECT_EQ(c.registrations, static_cast<std::uint64_t>(kStorm));
  EXPECT_EQ(c.refused.count("registration_busy") ? c.refused.at("registration_busy") : 0, 0u);
  EXPECT_EQ(c.held_registrations, 0u);
  EXPECT_EQ(c.held_registrations_total, static_cast<std::uint64_t>(kStorm - 2));
}

// Status reports that wait for a busy core are coalesced: one per KM waits, the latest wins.
TEST(CkBackpressure, StatusReportsWaitingForTheCoreAreCoalesced) {
  Harness h(insecure());
  RawClient km1(h.port());
  ASSERT_EQ(km1.do_register("KM1", R"([{"link_id":"L12","peer_kma_id":"KM2"}])").command,
            kRegisterResponse);
  const auto before = h.svc().counters().inbound["status_report"];
  {
    CoreBlock block(h.svc());
    for (int i = 1; i <= 50; ++i) km1.send(kStatusReport, 100 + i, status_payload("KM1", i));
    const auto deadline = std::chrono::steady_clock::now() + 5s;
    while (h.svc().counters().inbound["status_report"] < before + 50 &&
           std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(5ms);
    }
    const auto c = h.svc().counters();
    ASSERT_EQ(c.inbound.at("status_report"), before + 50);
    EXPECT_EQ(c.pending_statuses, 1u) << "50 reports of one KM wait as one";
  }
  // The one applied is the latest: KM1's end of L12 reports 50 keys.
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  std::uint64_t keys = 0;
  while (std::chrono::steady_clock::now() < deadline) {
    for (const auto& l : h.svc().snapshot_state().links) {
      if (l.spec.link_id == "L12") keys = l.stored_keys;
    }
    if (keys == 50) break;
    std::this_thread::sleep_for(5ms);
  }
  EXPECT_EQ(keys, 50u);
  EXPECT_EQ(h.svc().counters().pending_statuses, 0u);
}

// Status reports of many KMs reach the core together: they are applied in one core pass (one
// facade report, one snapshot refresh), not one pass per report.
TEST(CkBackpressure, StatusReportsOfSeveralKmsAreAppliedInOneCorePass) {
  auto o = insecure();
  o.heartbeat_interval = 60s;  // no liveness touch of its own during the test
  Harness h(std::move(o));
  RawClient km1(h.port());
  RawClient km2(h.port());
  ASSERT_EQ(km1.do_register("KM1", R"([{"link_id":"L12","peer_kma_id":"KM2"}])").command,
            kRegisterResponse);
  ASSERT_EQ(km2.do_register("KM2", R"([{"link_id":"L12","peer_kma_id":"KM1"}])").command,
            kRegisterResponse);
  const auto c0 = h.svc().counters();
  {
    CoreBlock block(h.svc());
    km1.send(kStatusReport, 201, status_payload("KM1", 7));
    km2.send(kStatusReport, 202, status_payload("KM2", 9));
    const auto deadline = std::chrono::steady_clock::now() + 5s;
    while (h.svc().counters().pending_statuses < 2 && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(5ms);
    }
    ASSERT_EQ(h.svc().counters().pending_statuses, 2u);
  }
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  while (h.svc().counters().pending_statuses > 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(5ms);
  }
  const auto c1 = h.svc().counters();
  EXPECT_EQ(c1.pending_statuses, 0u);
  EXPECT_EQ(c1.status_passes - c0.status_passes, 1u) << "two KMs' reports, one core pass";
  // Both were applied: each end of L12 reported its keys.
  bool seen = false;
  for (const auto& l : h.svc().snapshot_state().links) {
    if (l.spec.link_id == "L12") {
      seen = true;
      EXPECT_GT(l.stored_keys, 0u);
    }
  }
  EXPECT_TRUE(seen);
}

}  // namespace
}  // namespace qkdn::test
