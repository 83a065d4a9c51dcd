#include "ha_main.hpp"

#include <netdb.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "qkdn/base/log.hpp"
#include "qkdn/controller/error.hpp"
#include "qkdn/db/pg_store.hpp"
#include "qkdn/service/leadership.hpp"

namespace qkdn::ha {
namespace {

using Steady = std::chrono::steady_clock;

void say(base::LogLevel level, const std::string& line) { base::log(level, "ha", line); }

std::string host_of(const std::string& host_port) {
  return host_port.substr(0, host_port.rfind(':'));
}

std::string with_port(std::string host, std::uint16_t port) {
  if (host.find(':') != std::string::npos && host.front() != '[') host = "[" + host + "]";
  return host + ":" + std::to_string(port);
}

/// Holds HOST:PORT bound (SO_REUSEADDR, not listening) while one service replaces another, so
/// that no outgoing connection of this host takes the port as its ephemeral port in between
/// (seen once: the new leader's own database connection got the Ck port just released). The
/// new service's listener binds beside it (both have SO_REUSEADDR, neither listens yet).
class PortHold {
 public:
  PortHold(const std::string& host, std::uint16_t port) {
    if (port == 0) return;
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
    addrinfo* res = nullptr;
    if (::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &res) != 0) return;
    fd_ = ::socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    const int on = 1;
    if (fd_ >= 0 && (::setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on) != 0 ||
                     ::bind(fd_, res->ai_addr, res->ai_addrlen) != 0)) {
      ::close(fd_);
      fd_ = -1;
    }
    ::freeaddrinfo(res);
  }
  ~PortHold() {
    if (fd_ >= 0) ::close(fd_);
  }
  PortHold(const PortHold&) = delete;
  PortHold& operator=(const PortHold&) = delete;

 private:
  int fd_ = -1;
};

/// One service and its API, as leader (in a term) or standby.
struct Instance {
  std::shared_ptr<service::ControllerService> svc;
  std::unique_ptr<northbound::ApiServer> api;
  bool leader = false;
  std::int64_t epoch = 0;
};

class Runner {
 public:
  Runner(const service::ServiceOptions& options, const northbound::ApiOptions& api, std::string dsn,
         HaArgs ha)
      : options_(options), api_(api), dsn_(std::move(dsn)), ha_(std::move(ha)) {}

  int run(const sigset_t& signals,
          const std::function<void(std::uint16_t, std::uint16_t)>& on_bound) {
    service::LeadershipOptions lo;
    lo.dsn = dsn_;
    lo.holder = ha_.holder;
    lo.lease = ha_.lease;
    lo.on_elected = [this](std::int64_t epoch) { push({Kind::kElected, epoch}); };
    lo.on_lost = [this](std::int64_t epoch, std::string_view) {
      {
        // Stop commanding KMs now, before the lease can lapse for the others.
        std::lock_guard lock(active_mu_);
        if (active_leader_ && active_epoch_ == epoch) active_leader_->stand_down();
      }
      push({Kind::kLost, epoch});
    };
    leadership_ = std::make_shared<service::Leadership>(lo);

    std::thread sig([this, &signals] {
      int s = 0;
      sigwait(&signals, &s);
      say(base::LogLevel::kInfo, std::string(s == SIGINT ? "SIGINT" : "SIGTERM") + ", stopping");
      push({Kind::kStop, 0});
    });
    int status = 0;
    try {
      current_ = build(false, 0);
      on_bound(ck_port_, api_port_);
      leadership_->set_addresses(
          ha_.advertise_ck.empty() ? with_port(options_.listen_host, ck_port_) : ha_.advertise_ck,
          ha_.advertise_api.empty() ? with_port(host_of(api_.listen), api_port_)
                                    : ha_.advertise_api);
      leadership_->start();
      loop();
    } catch (const std::exception& e) {
      say(base::LogLevel::kError, e.what());
      status = 1;
      ::kill(::getpid(), SIGTERM);  // blocked everywhere: only ends the sigwait above
    }
    sig.join();
    // The leader drains its writes while it still holds the lease, then hands it over.
    teardown();
    leadership_->stop();
    return status;
  }

 private:
  enum class Kind { kElected, kLost, kStop };
  struct Event {
    Kind kind;
    std::int64_t epoch;
  };

  void push(Event e) {
    {
      std::lock_guard lock(mu_);
      events_.push_back(e);
    }
    cv_.notify_all();
  }

  void loop() {
    for (;;) {
      std::optional<Event> e;
      {
        std::unique_lock lock(mu_);
        const bool refresh = ha_.standby_refresh.count() > 0 && current_ && !current_->leader;
        if (refresh) {
          cv_.wait_for(lock, ha_.standby_refresh, [this] { return !events_.empty(); });
        } else {
          cv_.wait(lock, [this] { return !events_.empty(); });
        }
        if (!events_.empty()) {
          e = events_.front();
          events_.pop_front();
        }
      }
      if (!e) {  // a standby's periodic reload of the stored state
        teardown();
        current_ = build(false, 0);
        continue;
      }
      switch (e->kind) {
        case Kind::kStop:
          return;
        case Kind::kElected:
          if (current_ && current_->leader) break;
          teardown();
          try {
            current_ = build(true, e->epoch);
            say(base::LogLevel::kInfo, "leading in term " + std::to_string(e->epoch));
            controller::AlarmSpec alarm;
            alarm.type = controller::alarm_type::kControllerFailover;
            alarm.resource = "controller";
            alarm.severity = controller::Severity::kWarning;
            alarm.value = static_cast<double>(e->epoch);
            alarm.text = "this controller (" + leadership_->options().holder +
                         ") took the leadership over in term " + std::to_string(e->epoch);
            current_->svc->raise_alarm_soon(alarm);
          } catch (const std::exception& x) {
            say(base::LogLevel::kError,
                "the leader's service did not start: " + std::string(x.what()));
            teardown();
            leadership_->resign("start_failed");
            current_ = build(false, 0);
          }
          break;
        case Kind::kLost:
          if (!current_ || !current_->leader || current_->epoch != e->epoch) break;
          teardown();
          current_ = build(false, 0);
          say(base::LogLevel::kInfo, "standby after term " + std::to_string(e->epoch));
          break;
      }
    }
  }

  void teardown() {
    if (!current_) return;
    {
      std::lock_guard lock(active_mu_);
      active_leader_.reset();
    }
    // The ports stay held from the moment each listener closes until the next service listens.
    current_->api->stop();
    holds_.push_back(std::make_unique<PortHold>(host_of(api_.listen), api_port_));
    current_->svc->stop();
    holds_.push_back(std::make_unique<PortHold>(options_.listen_host, ck_port_));
    current_.reset();
  }

  /// The topology a standby shows: the stored one (the leader's), else --topology.
  controller::TopologyDoc stored_topology() {
    try {
      auto store = db::pg_store_factory(dsn_).open(controller::StoreRole::kStartup);
      auto stored = store->load();
      if (stored.topology) return *stored.topology;
    } catch (const std::exception& e) {
      say(base::LogLevel::kWarn, std::string("standby: cannot load the stored state: ") + e.what());
    }
    return options_.topology;
  }

  std::unique_ptr<Instance> build(bool leader, std::int64_t epoch) {
    auto inst = std::make_unique<Instance>();
    inst->leader = leader;
    inst->epoch = epoch;
    service::ServiceOptions o = options_;
    o.listen_port = ck_port_ != 0 ? ck_port_ : options_.listen_port;
    o.leadership = leadership_;
    northbound::ApiOptions a = api_;
    if (api_port_ != 0) a.listen = host_of(api_.listen) + ":" + std::to_string(api_port_);
    if (leader) {
      o.store = db::pg_store_factory(dsn_, leadership_->fence());
      o.epoch_override = epoch;
    } else {
      o.store = {};
      o.topology = stored_topology();
      o.topology_override = false;
      o.epoch_override = leadership_->status().epoch;
      o.standby_since = Steady::now();
      o.refuse_registration = [l = leadership_]() -> std::optional<std::string> {
        const auto st = l->status();
        if (st.leader_ck_address.empty()) return std::string("not_leader");
        return "not_leader: " + st.leader_ck_address;
      };
    }
    inst->svc = std::make_shared<service::ControllerService>(o);
    inst->svc->set_command_handler(service::make_key_supply_handler());
    inst->api = std::make_unique<northbound::ApiServer>(*inst->svc, a);
    inst->svc->start();
    inst->api->start();
    ck_port_ = inst->svc->port();
    api_port_ = inst->api->port();
    holds_.clear();
    if (leader) {
      std::lock_guard lock(active_mu_);
      active_leader_ = inst->svc;
      active_epoch_ = epoch;
      // The term may have ended while the service started: stop commanding at once.
      const auto st = leadership_->status();
      if (!st.leader || st.epoch != epoch) inst->svc->stand_down();
    }
    return inst;
  }

  service::ServiceOptions options_;
  northbound::ApiOptions api_;
  std::string dsn_;
  HaArgs ha_;
  std::shared_ptr<service::Leadership> leadership_;
  std::unique_ptr<Instance> current_;             ///< the loop's
  std::vector<std::unique_ptr<PortHold>> holds_;  ///< the loop's (see teardown)
  std::uint16_t ck_port_ = 0;
  std::uint16_t api_port_ = 0;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Event> events_;
  std::mutex active_mu_;
  std::shared_ptr<service::ControllerService> active_leader_;
  std::int64_t active_epoch_ = 0;
};

}  // namespace

int run_ha(const service::ServiceOptions& options, const northbound::ApiOptions& api,
           const std::string& store_dsn, const HaArgs& ha, const sigset_t& signals,
           const std::function<void(std::uint16_t ck, std::uint16_t api)>& on_bound) {
  Runner runner(options, api, store_dsn, ha);
  return runner.run(signals, on_bound);
}

}  // namespace qkdn::ha
