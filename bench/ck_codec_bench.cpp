// Ck codec throughput (items_per_second = frames/s on one core): encode = validate + JSON +
// frame; decode = FrameDecoder + parse + validate into the typed message.
#include <benchmark/benchmark.h>

#include <string>
#include <variant>

#include "codec_samples.hpp"
#include "qkdn/southbound/ck_frame.hpp"
#include "qkdn/southbound/ck_messages.hpp"

namespace {

using namespace qkdn::southbound::ck;
namespace t = qkdn::southbound::ck::testing;

StatusReport status_report() {
  StatusReport m{"KM1", "2026-11-22T10:00:00.123Z", {}};
  for (int i = 0; i < 4; ++i) {
    const std::string n = std::to_string(i + 2);
    m.links.push_back(LinkStatus{"L1-" + n, "KM" + n, i == 3 ? "down" : "up", 1200 + i,
                                 (1200 + i) * 256, 15000.5 + i, 2000.25, 0.0125 + 0.001 * i});
  }
  return m;
}

KeyRelayRequest key_relay_request() {
  KeyRelayRequest m;
  m.source_kma_id = "KM1";
  m.destination_kma_id = "KM5";
  m.transit_kma_ids = {"KM2", "KM4"};
  m.key_relay_request_id = t::kUuid1;
  m.notification_message_id = 41;
  m.hop_keys = {{"KM1", "KM2", "L12", {t::kUuid2, t::kUuid3}},
                {"KM2", "KM4", "L24", {t::kUuid3, t::kUuid2}},
                {"KM4", "KM5", "L45", {t::kUuid2, t::kUuid3}}};
  m.controller_epoch = 7;
  return m;
}

Register register_msg() {
  return Register{"KM1",
                  "KM1",
                  "KSA1",
                  "km1.example.org:7001",
                  {{"L12", "KM2"}, {"L13", "KM3"}},
                  std::vector<std::string>{"SAE-A", "SAE-B"},
                  "qkdn-agent 0.1"};
}

Message message_for(int which) {
  switch (which) {
    case 0:
      return status_report();
    case 1:
      return key_relay_request();
    case 2:
      return Heartbeat{"KM1"};
    default:
      return register_msg();
  }
}

const char* label_for(int which) {
  switch (which) {
    case 0:
      return "status_report_4_links";
    case 1:
      return "key_relay_request_3_hops";
    case 2:
      return "heartbeat";
    default:
      return "register";
  }
}

// Encode: validate, JSON, 10-byte header.
void BM_Encode(benchmark::State& state) {
  const Message m = message_for(static_cast<int>(state.range(0)));
  const auto code = static_cast<std::uint16_t>(command_of(m));
  std::uint32_t id = 0;
  std::size_t bytes = 0;
  for (auto _ : state) {
    std::string f = encode_frame(Frame{++id, code, encode_payload(m)});
    bytes += f.size();
    benchmark::DoNotOptimize(f);
  }
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(static_cast<std::int64_t>(bytes));
  state.SetLabel(label_for(static_cast<int>(state.range(0))));
}

// Decode: stream of identical frames through one FrameDecoder, each payload decoded+validated.
void BM_Decode(benchmark::State& state) {
  const Message m = message_for(static_cast<int>(state.range(0)));
  const auto code = static_cast<std::uint16_t>(command_of(m));
  const std::string frame = encode_frame(Frame{1, code, encode_payload(m)});
  FrameDecoder d;
  Frame f;
  std::size_t bad = 0;
  for (auto _ : state) {
    d.feed(frame);
    d.next(f);
    DecodeResult r = decode_payload(f.command, f.payload);
    bad += std::holds_alternative<DecodeError>(r) ? 1 : 0;
    benchmark::DoNotOptimize(r);
  }
  if (bad != 0) state.SkipWithError("decode rejected a valid frame");
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * frame.size()));
  state.SetLabel(label_for(static_cast<int>(state.range(0))));
}

BENCHMARK(BM_Encode)->DenseRange(0, 3);
BENCHMARK(BM_Decode)->DenseRange(0, 3);

}  // namespace

BENCHMARK_MAIN();
