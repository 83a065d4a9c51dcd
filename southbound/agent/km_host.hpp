// Internal: the agent's per-KM machinery on Asio. Each KmHost owns a strand; every member of a
// KmHost, its LinkEnds and its KmaSessions is touched only on that strand.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>

#include "kma_messages.hpp"
#include "kma_wire.hpp"
#include "kxi.hpp"
#include "qkdn/agent/agent.hpp"
#include "qkdn/agent/key_combination.hpp"
#include "qkdn/agent/key_store.hpp"
#include "qkdn/controller/clock.hpp"
#include "qkdn/controller/key_limits.hpp"
#include "qkdn/net/limits.hpp"
#include "qkdn/net/listener.hpp"
#include "qkdn/southbound/ck_channel.hpp"
#include "qkdn/southbound/ck_messages.hpp"
#include "qkdn/southbound/framed_server.hpp"
#include "sae_keys.hpp"

namespace qkdn::agent {

namespace net = boost::asio;
using tcp = net::ip::tcp;
using Strand = net::strand<net::io_context::executor_type>;
using SteadyTime = std::chrono::steady_clock::time_point;

class AgentCore;
class KmHost;
struct LinkEnd;

/// One KMA-link connection (plain TCP or TLS). Lives on its host's strand.
class KmaSession : public std::enable_shared_from_this<KmaSession> {
 public:
  KmaSession(KmHost& host, tcp::socket socket, net::ssl::context* tls, bool dialer);

  /// TLS handshake when TLS is on (server role for accepted sessions); no-op otherwise.
  net::awaitable<void> handshake();
  /// Reads one frame within `timeout`; throws on EOF, error, timeout or an oversized length.
  net::awaitable<std::pair<kma::Type, std::string>> read_frame(std::chrono::milliseconds timeout);
  /// Starts the writer and the deadline watchdog.
  void start_background();
  /// Queues a frame (one outstanding write per socket); wiped after it is written.
  void send(std::string frame);
  /// Closes the socket and wakes the background coroutines (idempotent).
  void close();
  [[nodiscard]] bool is_open() const { return open_; }
  /// Verified peer KM identity (TLS), empty for plain TCP.
  [[nodiscard]] std::string peer_identity();
  [[nodiscard]] bool dialer() const { return dialer_; }
  [[nodiscard]] bool tls() const { return tls_ != nullptr; }

  LinkEnd* link = nullptr;  ///< set once attached
  SteadyTime last_sent{};

 private:
  net::awaitable<void> read_exact(void* data, std::size_t size);
  net::awaitable<void> writer();
  net::awaitable<void> watchdog();

  KmHost& host_;
  tcp::socket plain_;
  std::unique_ptr<net::ssl::stream<tcp::socket>> tls_;
  bool dialer_;
  bool open_ = true;
  std::deque<std::string> queue_;
  net::steady_timer write_wake_;
  net::steady_timer deadline_;
};

/// One end of an emulated QKD link at a hosted KM.
struct LinkEnd {
  LinkEnd(std::string id, std::string peer, bool is_primary, KeyStore key_store, double rate,
          double q, const net::any_io_executor& ex);

  std::string link_id;
  std::string peer_km;
  bool primary;
  KeyStore store;
  double key_rate_bps;
  double qber;
  bool admin_up = true;
  /// An inter-QKDN link (GWN, topology inter_qkdn_links): its peer registers with another
  /// QKDN's controller, so this end is not reported to ours (registration, status, alarms).
  bool inter_qkdn = false;

  std::shared_ptr<KmaSession> session;  ///< the active KMA session
  bool synced = false;
  std::int64_t peer_capacity_bits = INT64_MAX;

  // Generator (primary only): credit in bits, Mint batches sent but not yet acknowledged.
  MintCredit credit;
  SteadyTime last_generation{};
  std::uint32_t next_seq = 1;
  struct Pending {
    std::uint32_t seq;
    std::array<std::int64_t, 2> n;  ///< blocks minted per half, stored on the Ack
  };
  std::deque<Pending> pending;

  RateMeter meter;
  // Accounting in keys: generated == available + reserved + allocated + consumed + discarded.
  std::int64_t keys_generated = 0;  ///< stored (secondary: on Keys; primary: on Ack)
  std::int64_t keys_consumed = 0;   ///< taken for a relay hop or an SAE supply
  std::int64_t keys_discarded = 0;  ///< dropped by a resync, a release or the peer's discard
  /// IDs discarded here (our parity) that the peer has not been told of yet (KMA Discard).
  std::deque<KeyId> pending_discards;
  RateMeter consumption_meter;  ///< samples keys_consumed * kKeyBits
  // Alarm state.
  bool down_raised = false;
  bool qber_raised = false;
  bool pool_low_raised = false;
  bool last_up = false;

  net::steady_timer dial_wake;

  [[nodiscard]] bool up() const { return admin_up && session && synced; }
};

/// One hosted KM: Ck client, KMA listener, link ends, timers.
class KmHost {
 public:
  KmHost(AgentCore& core, std::string km_id);
  ~KmHost();

  /// Binds the KMA listener (called before start, from the constructing thread).
  void bind_listener();
  /// Spawns the Ck loop, the accept loop, the dial loops and the tick loop on the strand.
  void start();
  /// Posts a graceful shutdown to the strand.
  void stop();

  [[nodiscard]] const std::string& km_id() const { return km_id_; }
  [[nodiscard]] const std::string& kma_endpoint() const { return kma_endpoint_; }
  [[nodiscard]] Strand& strand() { return strand_; }

  // Coroutines that must run on the strand (call through qkdn::net::run_on(strand(), ...)).
  net::awaitable<KmSnapshot> snapshot();
  net::awaitable<bool> apply_control(std::string link_id, LinkControl control, bool propagate);
  net::awaitable<std::optional<std::string>> digest(std::string link_id);
  net::awaitable<void> disconnect();

  // SAE key supply (sae_supply.cpp): run on the strand; AgentCore routes the SAE calls here.
  net::awaitable<SaeResult> sae_enc_keys(std::string master_sae, std::string slave_sae,
                                         std::int64_t number, std::int64_t size_bits);
  net::awaitable<SaeResult> sae_dec_keys(std::string slave_sae, std::string master_sae,
                                         std::vector<std::string> key_ids);
  net::awaitable<SaeStatus> sae_status(std::string master_sae, std::string slave_sae);
  /// Test hook: ETSI keys filed here for SAEs and not fetched yet.
  net::awaitable<std::size_t> supplied_key_count();
  /// Test hook: units in the pre-positioned pool of (source KM, destination KM) held here.
  net::awaitable<std::size_t> prepositioned_count(std::string source_km, std::string dest_km);
  /// Test hook: keys_relayed reported so far for a relay instruction (-1: unknown instruction).
  net::awaitable<std::int64_t> instruction_keys_relayed(std::string instruction_id);

  // Interworking node (kxi_host.cpp, docs/kxi.md): run on the strand.
  /// Files the keys of a Kxi' transfer from the IWN partner for this KM's target SAE, or says
  /// why not (the HTTP status and message_data of the answer).
  net::awaitable<kxi::Answer> kxi_receive(std::string partner_km, kxi::TransferRequest request);
  net::awaitable<IwnStats> iwn_stats();

 private:
  friend class KmaSession;

  bool stopping() const;
  void shutdown();
  void spawn(net::awaitable<void> work, std::string what);

  // Ck side.
  net::awaitable<void> ck_loop();
  net::awaitable<bool> ck_session();
  net::awaitable<void> register_and_beat(std::shared_ptr<southbound::CkChannel> channel);
  net::awaitable<void> on_ck_frame_hop(std::shared_ptr<southbound::CkChannel> channel,
                                       southbound::ck::Frame frame);
  void on_ck_frame(const std::shared_ptr<southbound::CkChannel>& channel,
                   const southbound::ck::Frame& frame);
  struct RunState {
    explicit RunState(const Strand& s) : done(s) { done.expires_at(SteadyTime::max()); }
    bool finished = false;
    net::steady_timer done;
  };
  void send_ck_error(const std::shared_ptr<southbound::CkChannel>& channel, std::string_view code,
                     std::string message, std::uint32_t message_id);
  southbound::ck::StatusReport build_status();
  void send_alarm(const LinkEnd& link, const std::string& alarm, const std::string& severity,
                  std::optional<double> value, std::string text);

  // KMA side.
  /// Serves an accepted KMA connection (FramedServer::Hooks::serve): Hello through the
  /// server's registration gate, then the session.
  net::awaitable<void> inbound(std::shared_ptr<southbound::FramedServer::Connection> conn,
                               tcp::socket socket);
  net::awaitable<void> dial_loop(LinkEnd* link);
  net::awaitable<bool> dial(LinkEnd* link, std::string endpoint);
  net::awaitable<void> session_loop(std::shared_ptr<KmaSession> session);
  bool attach(LinkEnd* link, const std::shared_ptr<KmaSession>& session);
  void detach(const std::shared_ptr<KmaSession>& session);
  void begin_sync(LinkEnd& link);
  void on_kma_frame(const std::shared_ptr<KmaSession>& session, kma::Type type,
                    std::string& payload);
  void apply_control_local(LinkEnd& link, const LinkControl& control);
  std::optional<std::string> peer_endpoint(const std::string& peer_km) const;

  // Key supply (key_supply.cpp): 0x410A/0x410C/0x4108/0x4104/0x41E5 and the KMA relay frames.
  void on_key_supply(const std::shared_ptr<southbound::CkChannel>& channel,
                     southbound::ck::Message message, std::uint32_t message_id);
  void on_reservation(const std::shared_ptr<southbound::CkChannel>& channel,
                      const southbound::ck::KeyReservationRequest& r, std::uint32_t message_id);
  void on_allocation(const std::shared_ptr<southbound::CkChannel>& channel,
                     const southbound::ck::KeyAllocationRequest& r, std::uint32_t message_id);
  void on_relay_request(const std::shared_ptr<southbound::CkChannel>& channel,
                        const southbound::ck::KeyRelayRequest& r, std::uint32_t message_id);
  void on_relay_frame(LinkEnd& link, const std::shared_ptr<KmaSession>& session,
                      const std::string& payload);
  void on_relay_ack(const std::string& payload);
  /// 0x41EA: reserved keys of the relay back to available, allocated ones discarded.
  void on_key_release(const std::shared_ptr<southbound::CkChannel>& channel,
                      const southbound::ck::KeyRelease& r, std::uint32_t message_id);
  /// Counts keys this end discarded and tells the peer (KMA Discard) now or once synced.
  void discard_at_both_ends(LinkEnd& link, const std::vector<KeyId>& ids);
  /// Sends the link's pending discards when its session is up and synchronised.
  void flush_discards(LinkEnd& link);
  /// KMA Discard from the peer: its copies of these keys are gone, ours go too.
  void on_discard_frame(LinkEnd& link, const std::string& payload);
  void finish_source_relay(const std::string& request_id, const std::string& response);
  /// Keys arriving for an SAE of the IWN partner's QKDN (kxi_host.cpp): when `sae.slave_sae` is
  /// one of this KM's IWN remote SAEs, transfers them to the partner over Kxi' and calls
  /// `answer` ("OK" or "NG: ...") once the partner stored them or the transfer failed; the keys
  /// are never filed here. False (nothing done) for any other SAE.
  /// `answer(response, key_check)`: key_check is the KSA key check value over the keys the
  /// partner stored (docs/hybrid.md), empty unless it stored them.
  bool iwn_forward(const std::vector<KeyBlock>& units, const kma::SaeFiling& sae,
                   std::function<void(const std::string&, const std::string&)> answer);
  /// Asks the controller whether to transfer (0x14F0 -> 0x41F1): "" when it said OK for exactly
  /// these keys and this IWN's partner, else the "NG: ..." reason.
  net::awaitable<std::string> iwn_decision(southbound::ck::IwnTransferRequest request,
                                           std::chrono::milliseconds timeout);
  /// Reports a finished transfer to the controller (0x14F2): metadata only.
  void iwn_report(const southbound::ck::IwnTransferRequest& what, const std::string& role,
                  const std::string& response, const std::string& disposition);
  /// The last leg inside this QKDN (docs/kxi.md): keys of a Kxi' transfer for an SAE another
  /// KM of this QKDN serves go on by a key relay the controller decides and reserves (0x1403
  /// naming the transfer -> 0x4104 -> KMA relay of exactly these keys). An empty answer when the
  /// destination KM filed them for the target SAE, else the refusal to send back.
  net::awaitable<std::optional<kxi::Answer>> iwn_last_leg(
      const southbound::ck::IwnTransferRequest& meta, const kxi::TransferRequest& request);
  void expire_key_supply(SteadyTime now);
  /// On registering in a higher controller epoch than the last registration's: every key held
  /// for a relay since before `before` goes (the old epoch's relays are over).
  void drop_holds_of_old_epoch(SteadyTime before);

  // Distributed relay (distributed_relay.cpp, Q.4164 7.1, docs/key-supply.md): each KM of the
  // route asks the controller for its next hop (0x1401) and takes its own hop keys.
  struct SupplyWait;
  /// Source: asks the next hop and sends the first hop of a relay of `units` for the SAE request
  /// `w` (which then waits in waits_by_relay_ like a centralized relay). "" when sent, else the
  /// reason ("<code>: <text>").
  net::awaitable<std::string> distributed_start(std::shared_ptr<SupplyWait> w, std::string dst,
                                                std::int64_t units);
  /// Transit: the relay arrived over `in` and was decrypted into `plain`; asks the next hop and
  /// forwards, or answers NG back over `session`. Takes ownership of `plain` (wiped).
  void distributed_forward(LinkEnd& in, const std::shared_ptr<KmaSession>& session,
                           kma::Relay relay, std::vector<std::uint8_t> plain);
  net::awaitable<void> distributed_forward_run(std::string in_link_id,
                                               std::shared_ptr<KmaSession> session,
                                               kma::Relay relay,
                                               std::shared_ptr<std::vector<std::uint8_t>> plain);
  /// 0x1401: candidate next hops from this KM toward `dst` for the relay from `source`, or the
  /// reason why none ("<code>: <text>") in the second member.
  net::awaitable<std::pair<std::vector<std::string>, std::string>> ask_next_hops(
      std::string source, std::string dst, std::string master_sae, std::string slave_sae,
      std::vector<std::string> visited);
  /// One hop of a distributed relay: the first candidate (not in `visited`) whose link is up and
  /// holds `n` keys of this end's parity; those keys reserved, allocated and taken at once for
  /// relay `rid`. nullopt with `why` when none.
  struct TakenHop {
    LinkEnd* link = nullptr;
    std::vector<KeyBlock> keys;
  };
  std::optional<TakenHop> take_distributed_hop(const std::vector<std::string>& candidates,
                                               const std::vector<std::string>& visited,
                                               std::size_t n, const std::string& rid,
                                               std::string& why);
  /// A KMA session of `link` is gone: every distributed relay sent over it and not answered
  /// fails now (source: the SAE gets 503; transit: NG back toward the source).
  void distributed_link_lost(LinkEnd& link);
  bool distributed_relay_ = false;  ///< the controller's policy (0x41E2 relay_routing)
  /// relay id -> outbound link id of a distributed relay sent from here and not answered yet.
  std::map<std::string, std::string> distributed_out_;
  /// The link end to `peer` (`link_id` when given and non-empty); nullptr when none.
  LinkEnd* hop_link(const std::string& peer, const std::optional<std::string>& link_id);

  struct SourceRelay {
    std::shared_ptr<southbound::CkChannel> channel;
    std::uint32_t message_id = 0;
    SteadyTime deadline{};
  };
  struct Delivered {
    std::string peer_km;                     ///< the other end of the end-to-end key
    std::vector<KeyBlock> keys;              ///< end-to-end keys (wiped when erased)
    SteadyTime expires = SteadyTime::max();  ///< wiped then when nobody claimed them
  };
  std::map<std::string, SourceRelay> source_relays_;  ///< request id -> waiting 0x1405
  /// request id -> (inbound link id, deadline): where a downstream RelayAck goes back to.
  std::map<std::string, std::pair<std::string, SteadyTime>> forwarded_relays_;
  std::map<std::string, Delivered> delivered_;  ///< request id -> e2e keys

  // SAE key supply (sae_supply.cpp).
  /// One request of an SAE waiting for the network (a relay or an adjacent supply).
  struct SupplyWait {
    explicit SupplyWait(const Strand& s) : timer(s) { timer.expires_at(SteadyTime::max()); }
    bool done = false;
    std::string response;  ///< "OK" or "NG: <reason>"
    int ng_status = 503;   ///< HTTP status when not OK
    std::string relay_id;  ///< key_relay_request_id once the 0x4104 arrived
    std::string master_sae, slave_sae, session_id;
    std::int64_t key_bits = 256;
    std::vector<KeyBlock> units;  ///< the end-to-end units (wiped when freed)
    net::steady_timer timer;
    /// Key combination `hybrid`: this end's ephemeral keys, and the destination's answer
    /// (serialized JSON) from the SupplyAck / RelayAck / ClaimAck.
    std::shared_ptr<hybrid::Initiator> kex;
    std::string kex_answer;
    /// Relay scheme aes-256-gcm: the 256-bit units the relay carries (its 0x1403 asked for one
    /// hop key per hop); 0 for otp.
    std::int64_t gcm_units = 0;
    /// The destination KSA's key check value from its answer (ksa_key_check), "" when none.
    std::string key_check;
  };
  /// A key filed for an SAE at this KM, until dec_keys fetches it or it expires. Its bytes are
  /// key memory: an entry overwritten in supplied_ frees (and so wipes) the old buffer.
  struct SuppliedKey {
    std::string master_sae;
    std::string slave_sae;
    secure::Bytes bytes;
    SteadyTime expires{};
    SuppliedKey() = default;
    SuppliedKey(const SuppliedKey&) = delete;
    SuppliedKey& operator=(const SuppliedKey&) = delete;
    SuppliedKey(SuppliedKey&&) noexcept = default;
    SuppliedKey& operator=(SuppliedKey&&) noexcept = default;
    ~SuppliedKey();
  };
  struct SaeSession {
    std::string session_id;
    std::string destination_km;
  };
  /// Completes a waiting request (wakes its coroutine). Unknown IDs are ignored.
  void complete_wait(const std::shared_ptr<SupplyWait>& w, std::string response, int ng_status);
  /// Ends every enc_keys that waits for the controller's 0x4104 to its 0x1403 (503 with `why`):
  /// the Ck connection that would carry it is gone. Strand only.
  void fail_supply_notifications(const std::string& why);
  /// An Error from the controller for the 0x1403 with this MessageID: true when one waited.
  bool fail_supply_notification(std::uint32_t message_id, const std::string& code,
                                const std::string& message);
  /// A relay this KM started finished: true when an SAE request waited for it.
  void finish_sae_relay(const std::string& request_id, const std::string& response);
  /// Files end-to-end units for an SAE pair, grouped into ETSI keys of `key_bits`.
  /// What file_supplied filed: the first key_ID and the key check value over the keys.
  struct Filed {
    std::string first_key_id;
    std::string key_check;
  };
  /// With `shared` (key combination `hybrid`) each ETSI key is combined (hybrid::combine).
  Filed file_supplied(const std::vector<KeyBlock>& units, std::int64_t key_bits,
                      const std::string& master_sae, const std::string& slave_sae,
                      const hybrid::Shared* shared = nullptr);
  // Key combination (sae_combination.cpp, docs/hybrid.md).
  /// Destination of an SAE delivery: checks the frame's offer (`offer_json`, "" when none)
  /// against this KM's policy for the pair and answers it. Returns "" (with `shared` set and
  /// `answer_json` the answer when hybrid) or the NG reason.
  std::string accept_combination(const std::string& master_sae, const std::string& slave_sae,
                                 const std::string& offer_json,
                                 std::optional<hybrid::Shared>& shared, std::string& answer_json);
  /// Source: combines `keys` with the destination's answer when the request was hybrid; false
  /// (with `why`) when the answer is missing or wrong.
  bool finish_combination(const SupplyWait& w, std::vector<SaeKey>& keys, std::string& why);
  /// The KSA key check (Y.3803 8.2.4, docs/hybrid.md "KSA key check"): hex of
  /// HMAC-SHA256(key = the ETSI keys' bytes concatenated, "qkdn-ksa-check-v1" 0 master 0 slave
  /// (0 key_ID)...). The destination sends it with its answer; the source hands the keys to its
  /// SAE only when its own value matches.
  static std::string ksa_key_check(const std::vector<SaeKey>& keys, const std::string& master_sae,
                                   const std::string& slave_sae);
  /// Counts and records one delivery (delivery records and per-mode counters of /admin/state).
  void record_delivery(DeliveryRecord record);
  /// The record of keys filed here for a slave SAE (`units` of 256 bits).
  static DeliveryRecord slave_delivery(const kma::SaeFiling& sae, const std::string& peer_km,
                                       std::string path,
                                       const std::optional<hybrid::Shared>& shared,
                                       std::size_t units, std::string first_key_id);
  void on_supply_frame(LinkEnd& link, const std::shared_ptr<KmaSession>& session,
                       const std::string& payload);
  void on_supply_ack(const std::string& payload);
  void expire_sae_supply(SteadyTime now);
  /// Shutdown: fails every waiting SAE request (503) and wipes the keys filed for SAEs.
  void abort_sae_supply();
  net::awaitable<std::optional<SaeSession>> sae_session(const std::string& master,
                                                        const std::string& slave, bool renew,
                                                        SaeResult& error);
  net::awaitable<void> await_wait(std::shared_ptr<SupplyWait> w, SteadyTime deadline);

  // Relay instructions (0x41E5) and pre-positioned pools (key_supply.cpp, docs/key-supply.md).
  struct Instruction {
    std::string destination;
    std::int64_t units = 0;    ///< units (256 bits) per round
    std::int64_t per_key = 1;  ///< units per key of the instruction's key_size
    double interval_s = 0;     ///< 0: once inside the window
    std::optional<SysTime> not_before;
    std::optional<SysTime> not_after;
    SteadyTime next_due{};
    std::uint32_t message_id = 0;    ///< of the 0x41E5; later 0x14E6 reports carry it
    std::uint32_t notification = 0;  ///< the 0x1403 in flight (0: none)
    SteadyTime notification_deadline{};
    std::string relay_id;  ///< the relay in flight
    std::int64_t keys_relayed = 0;
    /// Units still to relay in the current round (0: between rounds). A round larger than one
    /// relay (kMaxKeysPerRelay units) or than the pool's free room takes several relays.
    std::int64_t round_left = 0;
    SteadyTime retry_at{};  ///< the next relay of a round in progress, not before
    /// Units one relay of this instruction may carry: its route's hop key IDs fit one Ck frame
    /// (limits::max_keys_per_relay).
    std::int64_t max_relay_units = limits::kMaxKeysPerRelay;
    bool complete = false;  ///< a one-shot instruction whose round is done
  };
  struct PoolUnit {
    KeyBlock key;
    SteadyTime expires{};
  };
  /// Units shared by two KMs for the source's SAE requests, and the route a Claim takes.
  struct PrePool {
    std::deque<PoolUnit> units;
    std::vector<std::string> route;  ///< source .. destination (the last filling relay's)
  };
  void on_relay_instruction(const std::shared_ptr<southbound::CkChannel>& channel,
                            const southbound::ck::RelayInstruction& r, std::uint32_t message_id);
  void run_instructions(SteadyTime now);
  /// Sends a 0x14E6 for `ins` (keys relayed since the last report, and the response).
  void report_instruction(const std::string& instruction_id, const Instruction& ins,
                          std::string response, std::int64_t keys);
  void finish_instruction_relay(const std::string& request_id, const std::string& response);
  /// An Error for an instruction's 0x1403: true when one was in flight.
  bool fail_instruction_notification(std::uint32_t message_id, const std::string& reason);
  [[nodiscard]] std::size_t prepositioned_cap() const;
  /// Sends a Claim for `units` of the pool (km_id_ -> dst) along its route; false when the first
  /// hop is not up (nothing sent).
  bool send_claim(const std::string& claim_id, const PrePool& pool,
                  const std::vector<KeyBlock>& units, const std::string& master_sae,
                  const std::string& slave_sae, const std::string& session_id,
                  std::int64_t key_bits, const std::string& exchange);
  void on_claim_frame(LinkEnd& link, const std::shared_ptr<KmaSession>& session,
                      const std::string& payload);
  void on_claim_ack(const std::string& payload);
  void wipe_prepositioned();

  std::map<std::string, Instruction> instructions_;                 ///< by instruction_id
  std::map<std::uint32_t, std::string> instruction_notifications_;  ///< 0x1403 id -> instruction
  /// relay id -> (instruction id, route) of an instruction's relay in flight.
  std::map<std::string, std::pair<std::string, std::vector<std::string>>> instruction_relays_;
  std::map<std::pair<std::string, std::string>, PrePool> prepositioned_;  ///< (source, dest)
  /// claim id -> (inbound link id, deadline): where a downstream ClaimAck goes back to.
  std::map<std::string, std::pair<std::string, SteadyTime>> forwarded_claims_;

  std::map<std::uint32_t, std::shared_ptr<SupplyWait>> waits_by_notification_;  ///< 0x1403 id
  std::map<std::string, std::shared_ptr<SupplyWait>> waits_by_relay_;  ///< relay id / supply id
  /// ETSI key_ID -> key for an SAE (hashed: it can hold hundreds of thousands of keys).
  std::unordered_map<std::string, SuppliedKey> supplied_;
  /// (expires, key_ID) in filing order; expiry times never decrease (one TTL), so expiry pops
  /// from the front instead of scanning supplied_ (which can hold hundreds of thousands).
  std::deque<std::pair<SteadyTime, std::string>> supplied_expiry_;
  std::map<std::pair<std::string, std::string>, SaeSession> sae_sessions_;  ///< (master, slave)
  /// Keys delivered (filed or handed to an SAE) per key-combination mode, and the latest
  /// delivery records (bounded), for /admin/state.
  std::map<std::string, std::int64_t> keys_by_mode_;
  std::map<std::string, std::int64_t> keys_by_delivery_;  ///< "plain" or "wrapped"
  std::deque<DeliveryRecord> deliveries_;
  /// Per-SAE limits (AgentConfig::sae_max_*), by calling SAE (only SAEs this KM serves).
  struct SaeGuard {
    qkdn::net::TokenBucket bucket;
    std::size_t in_flight = 0;
  };
  std::map<std::string, SaeGuard> sae_guards_;
  /// Bytes of supplied_ keys per slave SAE (sae_max_waiting_bytes).
  std::map<std::string, std::size_t> supplied_bytes_;
  /// Admits one ETSI call of `sae` (counted in flight until sae_done), or returns why not
  /// (status 503, retry_after_s set).
  std::optional<SaeResult> sae_admit(const std::string& sae);

 public:
  /// Ends a call admitted by sae_admit (strand only).
  void end_sae_call(const std::string& sae);

 private:
  /// Erases a supplied key and its bytes from supplied_bytes_.
  void forget_supplied(std::unordered_map<std::string, SuppliedKey>::iterator it);

  // Generation and alarms.
  net::awaitable<void> tick_loop();
  void generate(LinkEnd& link, SteadyTime now);
  void evaluate_alarms(LinkEnd& link);
  KeyId new_key_id();
  std::chrono::milliseconds jitter(std::chrono::milliseconds base);

  AgentCore& core_;
  std::string km_id_;
  Strand strand_;
  std::unique_ptr<Random> rng_;
  std::vector<std::unique_ptr<LinkEnd>> links_;
  std::map<std::string, LinkEnd*> link_by_id_;
  std::vector<std::string> applications_;

  /// The KMA listener (southbound::FramedServer, the same accept side as the controller's Ck):
  /// accept loop, the agent-wide cap of sessions without Hello, the Hello deadline, drain.
  std::unique_ptr<southbound::FramedServer> kma_server_;
  std::string kma_endpoint_;
  std::unique_ptr<net::ssl::context> kma_server_tls_;
  std::unique_ptr<net::ssl::context> kma_client_tls_;
  std::unique_ptr<net::ssl::context> ck_tls_;
  std::set<std::shared_ptr<KmaSession>> sessions_;
  /// Connect deadlines of dials in progress (shutdown cancels them; strand only).
  std::set<net::steady_timer*> connect_timers_;

  std::shared_ptr<southbound::CkChannel> channel_;
  bool registered_ = false;
  std::int64_t controller_epoch_ = 0;
  std::int64_t registered_epoch_ = 0;  ///< controller_epoch of the last registration
  std::uint64_t registrations_ = 0;
  std::uint64_t busy_refusals_ = 0;  ///< registrations the controller refused "NG: busy"
  /// The controller's retry_after_ms of the last "NG: busy" (ck_loop waits at least that).
  std::optional<std::chrono::milliseconds> retry_hint_;
  /// High availability: the controller this KM connects to now, the next of the configured list
  /// to try, and the leader a standby named ("NG: not_leader: HOST:PORT"), tried next.
  std::pair<std::string, std::uint16_t> controller_now_;
  std::size_t controller_next_ = 0;
  std::optional<std::pair<std::string, std::uint16_t>> redirect_;
  std::chrono::milliseconds heartbeat_interval_{1'000};
  std::chrono::milliseconds status_interval_{1'000};
  std::map<std::string, std::string> peers_;  ///< kma_id -> endpoint, from the controller
  std::map<std::string, southbound::ck::Alarm> active_alarms_;  ///< "<link>/<alarm>"

  net::steady_timer ck_timer_;
  net::steady_timer beat_timer_;
  net::steady_timer tick_timer_;
  IwnStats iwn_stats_;  ///< Kxi' transfers of this KM (kxi_host.cpp)
};

/// The ETSI keys made of `units` (256 bits each, in order), as handed to SAEs: ceil(bits/256)
/// units per key, truncated to bits/8 bytes, key_IDs derived from the SAE pair (sae_supply.cpp).
std::vector<SaeKey> group_units(const std::vector<KeyBlock>& units, std::int64_t key_bits,
                                const std::string& master_sae, const std::string& slave_sae);

/// Everything shared by the hosted KMs. Immutable after start() except through the strands.
class AgentCore : public SaeKeyService, public KxiReceiver {
 public:
  AgentCore(net::io_context& io, AgentConfig config);
  ~AgentCore() override;

  void start();
  void stop();
  [[nodiscard]] bool stopping() const { return stopping_.load(); }
  [[nodiscard]] const AgentConfig& config() const { return config_; }
  [[nodiscard]] net::io_context& io() { return io_; }
  /// KMA endpoint of a KM hosted in this process.
  [[nodiscard]] std::optional<std::string> local_endpoint(const std::string& km_id) const;
  [[nodiscard]] KmHost* find(const std::string& km_id) const;

  /// Spawns a root coroutine: its exception is logged (never silently dropped) and it counts
  /// as running until it ends (see wait_drained).
  void spawn(const net::any_io_executor& ex, net::awaitable<void> work, std::string what);
  /// Posts a function (counted like a root coroutine; exceptions are logged).
  void post(const net::any_io_executor& ex, std::function<void()> fn);
  /// Waits until every root coroutine has ended; false on timeout. Not from an io thread.
  bool wait_drained(std::chrono::milliseconds timeout);

  // Callable from any executor.
  net::awaitable<std::vector<KmSnapshot>> snapshot();
  net::awaitable<bool> control_link(std::string link_id, LinkControl control);
  net::awaitable<bool> disconnect(std::string km_id);
  net::awaitable<std::optional<std::string>> digest(std::string km_id, std::string link_id);

  // SaeKeyService (sae_supply.cpp): routed to the hosted KM serving the calling SAE.
  [[nodiscard]] SaeLimits limits() const override;
  [[nodiscard]] bool serves(const std::string& sae_id) const override;
  /// The hosted KM serving `sae_id`; nullptr when none.
  [[nodiscard]] KmHost* host_of_sae(const std::string& sae_id) const;
  /// Every SAE of the topology (hosted here or not), for key_ID classification.
  [[nodiscard]] const std::vector<std::string>& sae_ids() const { return sae_ids_; }
  /// Inbound KMA sessions of every hosted KM before their Hello is answered (thread-safe).
  [[nodiscard]] qkdn::net::ConnectionGate& kma_pending() { return kma_pending_; }
  net::awaitable<SaeStatus> status(std::string master_sae, std::string slave_sae) override;
  net::awaitable<SaeResult> enc_keys(std::string master_sae, std::string slave_sae,
                                     std::int64_t number, std::int64_t size_bits) override;
  net::awaitable<SaeResult> dec_keys(std::string slave_sae, std::string master_sae,
                                     std::vector<std::string> key_ids) override;

  // Interworking node (kxi_host.cpp).
  struct IwnState {
    IwnPair pair;
    std::unique_ptr<net::ssl::context> client_tls;  ///< set when the pair sends
  };
  /// The IWN pair of a hosted KM; nullptr when it has none.
  [[nodiscard]] const IwnState* iwn(const std::string& km_id) const;
  /// KxiReceiver: routed to the hosted KM's strand.
  net::awaitable<kxi::Answer> receive_transfer(std::string km_id, std::string partner_km,
                                               kxi::TransferRequest request) override;

 private:
  /// Builds iwn_ from config_.iwn_pairs (throws InvalidArgument) and withdraws the pairs'
  /// remote SAEs from by_sae_ (they are not served here).
  void init_iwn();
  std::map<std::string, IwnState> iwn_;
  net::io_context& io_;
  AgentConfig config_;
  std::vector<std::unique_ptr<KmHost>> hosts_;
  std::unordered_map<std::string, KmHost*> by_id_;
  std::unordered_map<std::string, KmHost*> by_sae_;  ///< SAE ID -> hosted KM serving it
  std::vector<std::string> sae_ids_;                 ///< every SAE of the topology
  qkdn::net::ConnectionGate kma_pending_;
  std::atomic<bool> stopping_{false};
  bool started_ = false;
  std::mutex drain_mutex_;  // guards running_ for the condition variable only
  std::condition_variable drained_;
  std::int64_t running_ = 0;
};

}  // namespace qkdn::agent
