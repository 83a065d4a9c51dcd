// qkdn-agent: a process that hosts one or many lightweight KMs (KMA + emulated QKD links + Ck
// client). Every KM keeps its own Ck connection to the controller and its own KMA-link listener;
// all of them share one io_context (no thread per KM).
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "qkdn/agent/key_combination.hpp"
#include "qkdn/agent/relay_scheme.hpp"
#include "qkdn/controller/topology.hpp"

namespace boost::asio {
class io_context;
}

namespace qkdn::agent {

/// One KM of an interworking node (IWN) and its partner KM in another QKDN, joined by Kxi' (no
/// QKD link between them): docs/kxi.md. A pair with `partner_endpoint` sends keys whose slave
/// SAE is one of `remote_saes`; a pair with `listen_port` receives keys for its KM's SAEs.
struct IwnPair {
  std::string km_id;                      ///< the hosted KM
  std::string partner_km_id;              ///< the partner KM (its certificate's urn:qkdn:km:<id>)
  std::string partner_qkdn_id;            ///< the partner's QKDN (metadata, logs)
  std::string partner_ca;                 ///< CA (PEM) verifying the partner's certificate
  std::string partner_endpoint;           ///< "host:port" of the partner's Kxi' listener
  std::vector<std::string> remote_saes;   ///< SAEs reached through the partner
  std::string listen_host = "127.0.0.1";  ///< this KM's Kxi' listener
  std::optional<std::uint16_t> listen_port;  ///< nullopt = does not receive; 0 = automatic
};

/// Everything the agent needs to run; filled by parse_options (options.hpp) or by tests.
struct AgentConfig {
  controller::TopologyDoc topology;
  std::vector<std::string> km_ids;  ///< hosted KMs (every entry must exist in `topology`)

  std::string controller_host = "127.0.0.1";
  std::uint16_t controller_port = 0;
  /// High availability: every controller's Ck address, tried in turn (the first is
  /// controller_host:controller_port). Empty: that one only. A standby's "NG: not_leader:
  /// HOST:PORT" sends the KM to the leader it names (docs/ck-extensions.md).
  std::vector<std::pair<std::string, std::uint16_t>> controllers;
  bool insecure_ck = false;  ///< plain TCP on Ck; else TLS 1.3 with the files below
  /// The controller's ID: with TLS on Ck its certificate must carry the SAN URI
  /// urn:qkdn:controller:<controller_id> (any other certificate of the CA is refused).
  std::string controller_id = "qkdn-controller";
  std::string tls_ca;        ///< CA bundle (PEM) for Ck and KMA links
  std::string tls_cert_dir;  ///< holds <km_id>.crt / <km_id>.key; KMA links use TLS when set
  /// KMA links in plain TCP, unauthenticated, carrying key bytes in clear (labs only). Without
  /// it an agent without tls_cert_dir refuses to start: insecure_ck does not imply it.
  bool insecure_kma = false;

  std::string kma_listen_host = "127.0.0.1";  ///< KMA listeners bind here on automatic ports
  std::optional<std::uint16_t> admin_port;    ///< admin HTTP; nullopt = none
  std::string admin_host = "127.0.0.1";       ///< must be loopback unless admin_token is set
  /// Bearer token every admin request must present (--admin-token-file); empty = none, and then
  /// the admin listener may only bind a loopback address.
  std::string admin_token;

  double qber_threshold = 0.11;  ///< qber_high raised above, cleared below minus hysteresis
  double qber_hysteresis = 0.01;
  std::int64_t pool_floor_bits = 0;  ///< key_pool_low below this (0 = never)
  /// Key store capacity per link end (256 KiB of key, about 0.5 MiB of memory); generation
  /// pauses while full. Memory of a 1,000-KM agent stays near 1 GB at this default.
  std::size_t pool_capacity_bytes = 256u << 10;
  std::optional<std::uint64_t> seed;  ///< deterministic key IDs and jitter (tests)

  std::chrono::milliseconds reconnect_initial{250};  ///< Ck and KMA reconnect backoff
  std::chrono::milliseconds reconnect_max{10'000};
  /// How long a Register waits for its answer (longer than the controller's registration
  /// deadline, 10 s by default, so the controller answers or closes first).
  std::chrono::milliseconds register_timeout{15'000};
  std::chrono::milliseconds generation_tick{100};         ///< key generation and alarm evaluation
  std::chrono::milliseconds secondary_dial_delay{1'500};  ///< secondary dials only after this

  // ETSI GS QKD 014 (etsi_server.cpp): one listener per agent process serves the SAEs of every
  // hosted KM; the calling SAE (client certificate, or X-SAE-ID in insecure mode) selects the KM.
  std::optional<std::uint16_t> etsi_port;  ///< nullopt = no ETSI listener; 0 = automatic port
  std::string etsi_host = "127.0.0.1";
  bool etsi_insecure = false;  ///< plain HTTP, the SAE names itself in X-SAE-ID (labs only)
  std::string etsi_cert;       ///< HTTPS server certificate chain (PEM)
  std::string etsi_key;        ///< its private key (PEM)
  std::string etsi_ca;         ///< CA verifying SAE client certificates (default: tls_ca)
  std::size_t etsi_max_connections = 1024;     ///< open ETSI connections; more are closed
  std::size_t etsi_max_unauthenticated = 256;  ///< of those, without an SAE identity yet
  /// SAEs outside every trusted node (--outside-sae SAE=CERT, draft TR.QKDN-nq 7.3): their keys
  /// leave this agent only wrapped to the public key of that certificate (enc_keys_wrapped /
  /// dec_keys_wrapped; key_wrap.hpp, docs/hybrid.md). SAE ID -> PEM certificate file.
  std::map<std::string, std::string> outside_sae_certs;
  std::string outside_sae_ca;  ///< CA bundle the certificates above must verify against (optional)
  /// Inbound KMA sessions (all hosted KMs together) that have not passed Hello yet; more are
  /// closed at accept.
  std::size_t kma_max_pending = 256;

  // SAE key supply (sae_supply.cpp).
  std::int64_t sae_default_key_size = 256;  ///< bits, when a request names no size
  std::int64_t sae_max_key_size = 8192;     ///< bits
  std::int64_t sae_max_key_per_request = 128;
  std::chrono::seconds supplied_key_ttl{600};        ///< keys not fetched within this are wiped
  std::chrono::milliseconds supply_timeout{10'000};  ///< session + relay must finish within this
  // Per-SAE limits (issue 13): an SAE over them is answered 503 with Retry-After.
  double sae_max_requests_per_s = 2000;  ///< ETSI 014 calls per second (and burst) per SAE
  std::size_t sae_max_concurrent = 64;   ///< calls of one SAE in progress at once
  /// Bytes of keys filed for one SAE and not fetched yet (dec_keys) that an enc_keys between
  /// two SAEs of the same KM may add to; beyond it that call is refused (memory bound).
  std::size_t sae_max_waiting_bytes = 16u << 20;

  // Interworking node (kxi.hpp, docs/kxi.md): Kxi' key transfer to / from a partner KM.
  std::vector<IwnPair> iwn_pairs;
  std::chrono::milliseconds kxi_timeout{5'000};  ///< one transfer, connect to answer
  /// Gateway KMs (GWN, docs/cxi.md "Kxi-1 key relay"): the KMA endpoints of KMs of another
  /// QKDN at the far end of this QKDN's inter-QKDN links (--kma-peer KM=HOST:PORT). That KM
  /// registers with the other QKDN's controller, so ours cannot name it.
  std::map<std::string, std::string> kma_peers;
  /// Key combination per SAE pair (--key-combination; key_combination.hpp, docs/hybrid.md).
  hybrid::Policy key_combination;
  /// Relay scheme per SAE pair for the relays an SAE request asks for (--relay-scheme).
  relay::Policy relay_scheme;
};

/// Run-time changes of an emulated link (any subset).
struct LinkControl {
  std::optional<double> key_rate_bps;
  std::optional<double> qber;
  std::optional<bool> up;
};

/// One link end as seen by a hosted KM.
struct LinkSnapshot {
  std::string link_id;
  std::string peer_km_id;
  std::string qkd_module_id;           ///< emulated QKD module of this end (Y.3803 Table 1 (1))
  std::string matching_qkd_module_id;  ///< of the peer end
  bool primary = false;                ///< this end generates and sends the keys
  bool up = false;                     ///< admin up, KMA session established and synchronized
  bool admin_up = true;
  bool kma_connected = false;
  std::int64_t stored_keys = 0;
  std::int64_t stored_key_bits = 0;
  std::int64_t capacity_bits = 0;
  double key_rate_bps = 0;           ///< configured emulation rate
  double measured_key_rate_bps = 0;  ///< bits stored per second over the last seconds
  double qber = 0;
  double consumption_rate_bps = 0;  ///< bits consumed (relay hops, SAE supply) per second
  // Key accounting of this end, in keys (256 bits each). Invariant:
  // keys_generated == keys_available + keys_reserved + keys_allocated + keys_consumed
  //                   + keys_discarded.
  std::int64_t keys_generated = 0;  ///< ever stored at this end
  std::int64_t keys_available = 0;
  std::int64_t keys_reserved = 0;
  std::int64_t keys_allocated = 0;
  std::int64_t keys_consumed = 0;   ///< taken for relay hops and SAE supply
  std::int64_t keys_discarded = 0;  ///< dropped by resynchronisation (trim / clear)
};

/// Kxi' transfers of one hosted KM (docs/kxi.md): counts only, never key material.
struct IwnStats {
  std::int64_t sent_attempts = 0;     ///< transfers started to the IWN partner
  std::int64_t sent_ok = 0;           ///< of which the partner stored
  std::int64_t sent_failed = 0;       ///< of which failed (refused, unreachable, timeout)
  std::int64_t keys_sent = 0;         ///< keys of the transfers the partner stored
  std::int64_t received_ok = 0;       ///< transfers from the partner stored here
  std::int64_t received_refused = 0;  ///< transfers from the partner refused here
  std::int64_t keys_received = 0;     ///< keys of the transfers stored here
};

/// One hosted KM.
/// One SAE key delivery at a KM (both ends record it): what was delivered and how, never key
/// bytes.
struct DeliveryRecord {
  std::string time;  ///< RFC 3339
  std::string role;  ///< "master" (enc_keys answered here) or "slave" (keys filed for dec_keys)
  std::string master_sae;
  std::string slave_sae;
  std::string peer_km;  ///< the other end KM (this KM for a local pair)
  std::string path;     ///< "local", "adjacent", "relay" or "pool"
  std::string mode;     ///< key combination: "qkd" or "hybrid"
  std::string suite;    ///< hybrid: "x25519" or "x25519+mlkem768"; empty otherwise
  std::int64_t keys = 0;
  std::int64_t key_bits = 0;
  std::string first_key_id;
  std::string relay_scheme;  ///< path "relay": "otp" or "aes-256-gcm"; empty otherwise
  /// path "relay": "centralized" (0x1403) or "distributed" (hop by hop, 0x1401); empty otherwise.
  std::string relay_routing;
  /// The relay's route, source .. destination, as the destination saw it (slave records).
  std::vector<std::string> route;
  /// KSA key check between the two end KMs: "verified" (master: the destination's value
  /// matched), "sent" (slave: the value went with the answer), "none" (local pair).
  std::string key_check;
  /// The SAE this record delivers to (the master's, or the slave's) is outside every trusted
  /// node (--outside-sae): its keys leave only wrapped to its certificate (docs/hybrid.md).
  bool wrapped = false;
  /// Y.3803 Table 1 (1) of the QKD keys this delivery consumed at this KM: for path "adjacent"
  /// only (there the link's QKD keys are the delivered keys' material; a relay's or pool's
  /// end-to-end keys are random keys of the source KM, not QKD keys). Unset otherwise.
  struct QkdKeys {
    std::string link_id;
    std::string module_id;           ///< emulated QKD module of this link end (KeyStore)
    std::string matching_module_id;  ///< the peer end's
    std::int64_t keys = 0;           ///< QKD keys consumed
    std::int64_t key_bits = 0;       ///< each (kKeyBits)
    std::string first_key_id;        ///< QKD-key ID of the first (all went in the Supply frame)
    std::string generated_after;     ///< RFC 3339: every one was stored at this end in
    std::string generated_at;        ///< (generated_after, generated_at] (KeyStore mint log)
    std::string hash;                ///< hex SHA-256("qkdn-qkd-key-hash-v1" || keys in order)
  };
  std::optional<QkdKeys> qkd_keys;
};

struct KmSnapshot {
  std::string km_id;
  std::string kma_endpoint;
  bool registered = false;            ///< Ck connected and registered
  std::int64_t controller_epoch = 0;  ///< highest epoch seen
  std::uint64_t registrations = 0;    ///< successful registrations so far
  std::uint64_t busy_refusals = 0;    ///< registrations refused with "NG: busy"
  /// Relay routing policy from the controller: "centralized" or "distributed".
  std::string relay_routing = "centralized";
  std::vector<LinkSnapshot> links;
  std::int64_t supplied_keys = 0;  ///< ETSI keys filed here for SAEs, not fetched yet
  IwnStats iwn;                    ///< Kxi' transfers (interworking node)
  std::map<std::string, std::int64_t> keys_by_mode;  ///< SAE keys delivered per combination mode
  /// SAE keys delivered "plain" or "wrapped" (to an SAE outside every trusted node).
  std::map<std::string, std::int64_t> keys_by_delivery;
  std::vector<DeliveryRecord> deliveries;  ///< the latest (at most 64), oldest first
};

class AgentCore;
class AdminServer;
class EtsiServer;
class KxiServer;

/// The agent. Construct, start(), run the io_context on some threads, stop(), join the threads,
/// destroy. The blocking helpers below must not be called from the io_context's threads.
class Agent {
 public:
  /// Validates the configuration (throws InvalidArgument with one clear line).
  Agent(boost::asio::io_context& io, AgentConfig config);
  ~Agent();
  Agent(const Agent&) = delete;
  Agent& operator=(const Agent&) = delete;

  /// Binds every KMA listener, the admin and the ETSI 014 listeners (throws Unavailable when a
  /// bind fails) and starts the per-KM work. Call once, before or while the io_context runs.
  void start();
  /// Graceful shutdown (thread-safe, idempotent): closes connections and listeners, cancels
  /// timers; the io_context then runs out of work.
  void stop();
  /// After stop(): waits until every coroutine of this agent has ended (the io_context must be
  /// running); false on timeout. Destroy the agent only after this or after the io threads end.
  bool wait_stopped(std::chrono::milliseconds timeout);

  /// Bound admin port (0 when disabled).
  [[nodiscard]] std::uint16_t admin_port() const;
  /// Bound ETSI GS QKD 014 port (0 when disabled).
  [[nodiscard]] std::uint16_t etsi_port() const;
  /// Bound Kxi' ports by receiving KM (docs/kxi.md).
  [[nodiscard]] std::vector<std::pair<std::string, std::uint16_t>> kxi_ports() const;
  /// "host:port" of a hosted KM's KMA listener; empty if not hosted.
  [[nodiscard]] std::string kma_endpoint(const std::string& km_id) const;

  /// State of every hosted KM (blocking).
  std::vector<KmSnapshot> snapshot();
  /// SHA-256 (hex) of the keys a hosted KM stores for a link (test hook; blocking). With
  /// link_id "relay:<key_relay_request_id>": of the end-to-end keys the KM holds for that relay.
  std::optional<std::string> link_digest(const std::string& km_id, const std::string& link_id);
  /// Applies a change to every hosted end of a link and forwards it to a remote peer end over
  /// the KMA link (blocking). False when no end of the link is hosted here.
  bool control_link(const std::string& link_id, const LinkControl& control);
  /// Drops a KM's Ck connection (it reconnects with backoff). False when not hosted.
  bool disconnect(const std::string& km_id);

 private:
  std::unique_ptr<AgentCore> core_;
  std::unique_ptr<AdminServer> admin_;
  std::unique_ptr<EtsiServer> etsi_;
  std::vector<std::unique_ptr<KxiServer>> kxi_;
};

}  // namespace qkdn::agent
