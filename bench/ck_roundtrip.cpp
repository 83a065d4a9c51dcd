// bench_ck_roundtrip: Ck heartbeat round trips against the controller service (in-process by
// default, or a running controller with --connect). N connections, each registers one KM, then
// keeps W heartbeats outstanding for T seconds. Reports round trips/s and p50/p99 latency.
#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include "qkdn/service/controller_service.hpp"
#include "qkdn/southbound/ck_frame.hpp"
#include "qkdn/southbound/topology_json.hpp"

namespace {

namespace net = boost::asio;
namespace ck = qkdn::southbound::ck;
using net::ip::tcp;
using Clock = std::chrono::steady_clock;
constexpr auto kUseTuple = net::as_tuple(net::use_awaitable);

struct Config {
  int connections = 32;
  int window = 16;
  int seconds = 5;
  int service_threads = 1;
  int client_threads = 1;
  std::string connect;   // host:port of a running controller (--insecure-ck); empty = in-process
  std::string topology;  // with --connect: KM ids to register (else B0..B(N-1))
};

constexpr std::string_view kUsage = R"(Usage: bench_ck_roundtrip [options]
  --connections N      Ck connections, one KM each (default 32)
  --window W           heartbeats outstanding per connection (default 16)
  --seconds T          measuring time (default 5)
  --service-threads S  threads of the in-process controller service (default 1)
  --client-threads C   threads of the load driver (default 1)
  --connect HOST:PORT  drive a running qkdn-controller started with --insecure-ck instead
  --topology FILE      with --connect: register the KMs of this topology (first N)
Example: bench_ck_roundtrip --connections 32 --window 16 --seconds 5
)";

std::string frame(std::uint16_t command, std::uint32_t id, std::string_view payload) {
  ck::FrameHeader h;
  h.message_id = id;
  h.command = command;
  h.length = static_cast<std::uint16_t>(payload.size());
  auto head = ck::encode_header(h);
  std::string out(reinterpret_cast<const char*>(head.data()), head.size());
  out.append(payload);
  return out;
}

struct ConnStats {
  std::uint64_t round_trips = 0;
  std::uint64_t errors = 0;
  std::vector<std::uint32_t> latency_us;
};

// One KM connection: register, then keep `window` heartbeats in flight until `stop`.
net::awaitable<void> drive(tcp::endpoint ep, std::string km, int window,
                           std::shared_ptr<std::atomic<bool>> stop, ConnStats* stats) {
  auto ex = co_await net::this_coro::executor;
  tcp::socket s(ex);
  auto connect_op = s.async_connect(ep, net::use_awaitable);
  co_await std::move(connect_op);
  s.set_option(tcp::no_delay(true));
  const std::string reg =
      frame(0x14E1, 1, R"({"km_id":")" + km + R"(","kma_endpoint":"127.0.0.1:7000","links":[]})");
  auto write_op = net::async_write(s, net::buffer(reg), net::use_awaitable);
  co_await std::move(write_op);
  std::vector<std::uint8_t> buf(ck::kHeaderSize + ck::kMaxPayload);
  auto read_op = net::async_read(s, net::buffer(buf.data(), ck::kHeaderSize), net::use_awaitable);
  co_await std::move(read_op);
  auto h = ck::decode_header(std::span<const std::uint8_t, ck::kHeaderSize>(buf.data(), 10));
  auto read_op2 = net::async_read(s, net::buffer(buf.data(), h.length), net::use_awaitable);
  co_await std::move(read_op2);
  if (h.command != 0x41E2 ||
      std::string_view(reinterpret_cast<const char*>(buf.data()), h.length).find("\"OK\"") ==
          std::string_view::npos) {
    throw std::runtime_error("register " + km + " refused");
  }

  const std::string hb_payload = R"({"kma_id":")" + km + R"("})";
  std::vector<Clock::time_point> sent(static_cast<std::size_t>(window));
  std::uint32_t next_id = 2;
  std::string out;
  auto queue_heartbeat = [&] {
    sent[next_id % sent.size()] = Clock::now();
    out += frame(0x14E8, next_id, hb_payload);
    ++next_id;
  };
  for (int i = 0; i < window; ++i) queue_heartbeat();
  auto write_op2 = net::async_write(s, net::buffer(out), net::use_awaitable);
  co_await std::move(write_op2);
  int outstanding = window;
  std::size_t begin = 0, end = 0;
  while (outstanding > 0) {
    auto read_some_op =
        s.async_read_some(net::buffer(buf.data() + end, buf.size() - end), kUseTuple);
    auto [ec, n] = co_await std::move(read_some_op);
    if (ec) {
      ++stats->errors;
      co_return;
    }
    end += n;
    out.clear();
    const auto now = Clock::now();
    while (end - begin >= ck::kHeaderSize) {
      h = ck::decode_header(std::span<const std::uint8_t, ck::kHeaderSize>(buf.data() + begin, 10));
      if (end - begin < ck::kHeaderSize + h.length) break;
      begin += ck::kHeaderSize + h.length;
      --outstanding;
      if (h.command != 0x41E9) {
        ++stats->errors;
      } else {
        ++stats->round_trips;
        stats->latency_us.push_back(
            static_cast<std::uint32_t>(std::chrono::duration_cast<std::chrono::microseconds>(
                                           now - sent[h.message_id % sent.size()])
                                           .count()));
      }
      if (!stop->load(std::memory_order_relaxed)) {
        queue_heartbeat();
        ++outstanding;
      }
    }
    if (begin == end)
      begin = end = 0;
    else if (begin > buf.size() / 2) {
      std::copy(buf.begin() + static_cast<std::ptrdiff_t>(begin),
                buf.begin() + static_cast<std::ptrdiff_t>(end), buf.begin());
      end -= begin;
      begin = 0;
    }
    if (!out.empty()) {
      auto write_op3 = net::async_write(s, net::buffer(out), net::use_awaitable);
      co_await std::move(write_op3);
    }
  }
}

int to_int(std::string_view flag, std::string_view v) {
  int n = 0;
  auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
  if (ec != std::errc() || p != v.data() + v.size() || n < 1) {
    throw std::invalid_argument(std::string(flag) + ": expected a positive integer");
  }
  return n;
}

}  // namespace

int main(int argc, char** argv) {
  Config cfg;
  std::string cmdline = "bench_ck_roundtrip";
  try {
    for (int i = 1; i < argc; ++i) {
      const std::string_view f = argv[i];
      cmdline += " " + std::string(f);
      auto value = [&]() -> std::string_view {
        if (i + 1 >= argc) throw std::invalid_argument(std::string(f) + ": missing value");
        cmdline += " " + std::string(argv[i + 1]);
        return argv[++i];
      };
      if (f == "--help") {
        std::cout << kUsage;
        return 0;
      }
      if (f == "--connections")
        cfg.connections = to_int(f, value());
      else if (f == "--window")
        cfg.window = to_int(f, value());
      else if (f == "--seconds")
        cfg.seconds = to_int(f, value());
      else if (f == "--service-threads")
        cfg.service_threads = to_int(f, value());
      else if (f == "--client-threads")
        cfg.client_threads = to_int(f, value());
      else if (f == "--connect")
        cfg.connect = value();
      else if (f == "--topology")
        cfg.topology = value();
      else
        throw std::invalid_argument("unknown option " + std::string(f));
    }
  } catch (const std::exception& e) {
    std::cerr << "bench_ck_roundtrip: " << e.what() << "\n" << kUsage;
    return 2;
  }

  std::vector<std::string> kms;
  std::unique_ptr<qkdn::service::ControllerService> service;
  tcp::endpoint ep;
  try {
    if (cfg.connect.empty()) {
      qkdn::controller::TopologyDoc doc;
      doc.name = "bench";
      for (int i = 0; i < cfg.connections; ++i) {
        doc.kms.push_back({"B" + std::to_string(i), "bench"});
      }
      for (int i = 0; i + 1 < cfg.connections; ++i) {
        doc.links.push_back({"BL" + std::to_string(i), doc.kms[static_cast<std::size_t>(i)].km_id,
                             doc.kms[static_cast<std::size_t>(i) + 1].km_id, 1000, 10, 0.02});
      }
      for (const auto& k : doc.kms) kms.push_back(k.km_id);
      qkdn::service::ServiceOptions o;
      o.insecure_ck = true;
      o.listen_host = "127.0.0.1";
      o.listen_port = 0;
      o.threads = cfg.service_threads;
      o.topology = std::move(doc);
      o.heartbeat_interval = std::chrono::milliseconds(10'000);
      o.log = [](std::string_view) {};
      service = std::make_unique<qkdn::service::ControllerService>(std::move(o));
      ep = service->start();
      ep.address(net::ip::make_address("127.0.0.1"));
    } else {
      const auto colon = cfg.connect.rfind(':');
      ep = tcp::endpoint(net::ip::make_address(cfg.connect.substr(0, colon)),
                         static_cast<std::uint16_t>(std::stoi(cfg.connect.substr(colon + 1))));
      if (cfg.topology.empty()) throw std::invalid_argument("--connect needs --topology FILE");
      auto doc = qkdn::southbound::load_topology_file(cfg.topology);
      for (const auto& k : doc.kms) {
        if (static_cast<int>(kms.size()) < cfg.connections) kms.push_back(k.km_id);
      }
      cfg.connections = static_cast<int>(kms.size());
    }
  } catch (const std::exception& e) {
    std::cerr << "bench_ck_roundtrip: " << e.what() << "\n";
    return 2;
  }

  net::io_context ioc(cfg.client_threads);
  auto stop = std::make_shared<std::atomic<bool>>(false);
  std::vector<ConnStats> stats(static_cast<std::size_t>(cfg.connections));
  std::atomic<int> failures{0};
  for (int i = 0; i < cfg.connections; ++i) {
    net::co_spawn(ioc,
                  drive(ep, kms[static_cast<std::size_t>(i)], cfg.window, stop,
                        &stats[static_cast<std::size_t>(i)]),
                  [&failures](std::exception_ptr e) {
                    if (!e) return;
                    ++failures;
                    try {
                      std::rethrow_exception(e);
                    } catch (const std::exception& x) {
                      std::cerr << "bench_ck_roundtrip: connection failed: " << x.what() << "\n";
                    }
                  });
  }
  net::steady_timer timer(ioc, std::chrono::seconds(cfg.seconds));
  const auto start = Clock::now();
  Clock::time_point stopped_at;
  timer.async_wait([&](boost::system::error_code) {
    stopped_at = Clock::now();
    stop->store(true);
  });
  std::vector<std::thread> threads;
  for (int i = 0; i < cfg.client_threads; ++i) threads.emplace_back([&] { ioc.run(); });
  for (auto& t : threads) t.join();

  std::vector<std::uint32_t> all;
  std::uint64_t total = 0, errors = 0;
  for (auto& s : stats) {
    total += s.round_trips;
    errors += s.errors;
    all.insert(all.end(), s.latency_us.begin(), s.latency_us.end());
  }
  std::sort(all.begin(), all.end());
  auto pct = [&](double p) -> std::uint32_t {
    if (all.empty()) return 0;
    return all[std::min(all.size() - 1,
                        static_cast<std::size_t>(p * static_cast<double>(all.size())))];
  };
  const double secs = std::chrono::duration<double>(stopped_at - start).count();
  std::printf("%s\n", cmdline.c_str());
  std::printf(
      "connections=%d window=%d seconds=%d service_threads=%d client_threads=%d target=%s\n",
      cfg.connections, cfg.window, cfg.seconds, cfg.service_threads, cfg.client_threads,
      cfg.connect.empty() ? "in-process" : cfg.connect.c_str());
  std::printf("round_trips=%llu errors=%llu failed_connections=%d\n",
              static_cast<unsigned long long>(total), static_cast<unsigned long long>(errors),
              failures.load());
  std::printf("round_trips_per_second=%.0f p50_us=%u p99_us=%u max_us=%u\n",
              static_cast<double>(total) / secs, pct(0.50), pct(0.99),
              all.empty() ? 0 : all.back());
  if (service) service->stop();
  return failures.load() == 0 && errors == 0 ? 0 : 1;
}
