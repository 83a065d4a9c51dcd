// Cxi messages between the controllers of two QKDNs (docs/cxi.md): plain data, their JSON and
// the frame around it. Everything a peer sends is validated here (types, ranges, list bounds);
// the peer table checks it against the local model and policy.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace qkdn::interworking {

inline constexpr int kCxiVersion = 1;
/// The largest frame body (docs/cxi.md clause 2): room for a full reachability list of
/// longest IDs.
inline constexpr std::size_t kMaxFrameBody = std::size_t{2} << 20;
inline constexpr std::size_t kMaxReachabilityEntries = 4096;
inline constexpr std::size_t kMaxLinkStatusEntries = 1024;
inline constexpr std::size_t kMaxReasonLength = 256;
inline constexpr std::int64_t kMaxRouteKeys = 1024;
inline constexpr std::int64_t kMaxCost = 1'000'000;
/// Hops of one QKDN's side of a Kxi-1 relay (relay_setup_answer).
inline constexpr std::size_t kMaxRelayHops = 16;

struct Hello {
  int version = kCxiVersion;
  std::string qkdn_id;
  std::string controller_id;
  std::int64_t heartbeat_ms = 1000;  ///< the sender's heartbeat period, 100..60000
};

struct Heartbeat {
  std::int64_t seq = 0;
};

/// An SAE reachable behind one of the sender's gateway KMs, at an abstract cost.
struct ReachEntry {
  std::string sae_id;
  std::string gateway_km;  ///< the sender's gateway KM (the receiver's peer_km_id)
  std::int64_t cost = 0;   ///< 0..kMaxCost, the sender's own measure of its side of the route
  bool operator==(const ReachEntry&) const = default;
};
/// The whole reachability the sender offers the receiver (replaces the previous one).
struct Reachability {
  std::vector<ReachEntry> entries;
};

struct LinkState {
  std::string link_id;  ///< an inter-QKDN link between the two QKDNs
  bool up = false;
};
/// The sender's view of the inter-QKDN links between the two QKDNs (replaces the previous one).
struct LinkStatus {
  std::vector<LinkState> links;
};

struct RouteRequest {
  std::string request_id;
  std::string src_sae;  ///< in the sender's QKDN
  std::string dst_sae;  ///< in the receiver's QKDN
  std::string link_id;  ///< the inter-QKDN link the sender proposes to cross
  std::int64_t number_of_keys = 1;
  std::int64_t key_size_bits = 256;
};

struct RouteAnswer {
  std::string request_id;
  bool accepted = false;
  std::string link_id;     ///< the link the answer agrees to (accepted)
  std::string ingress_km;  ///< the receiver's gateway KM at the far end of link_id (accepted)
  std::int64_t cost = 0;   ///< the receiver's side of the route (accepted)
  std::string reason;      ///< why not (refused)
};

/// An interworking relay failure forwarded to the peer (Y.3818 9.1 3).
struct Fault {
  std::string relay_id;
  std::string link_id;
  std::string reason;
};

/// Kxi-1 key relay through GWNs (Y.3818 9.1 1, docs/cxi.md 5.6): the source QKDN asks the
/// destination QKDN to set aside its side of a relay entering over `link_id`. The receiver
/// decides (policy, its own routing) and reserves and allocates on its own KMs only.
struct RelaySetup {
  std::string relay_id;
  std::string src_sae;              ///< in the sender's QKDN
  std::string dst_sae;              ///< in the receiver's QKDN
  std::string link_id;              ///< the inter-QKDN link the keys cross
  std::int64_t number_of_keys = 1;  ///< 256-bit units, 1..kMaxRouteKeys
};

/// One hop of the receiver's side of a relay: the keys it allocated on the link from `kma_id`
/// to `next_kma_id` (key IDs only, never key bytes).
struct RelayHop {
  std::string kma_id;
  std::string next_kma_id;
  std::string link_id;
  std::vector<std::string> key_ids;  ///< UUIDs, exactly number_of_keys
};

struct RelaySetupAnswer {
  std::string relay_id;
  bool accepted = false;
  std::string dst_km;          ///< the KM of dst_sae (accepted)
  std::vector<RelayHop> hops;  ///< from the ingress gateway to dst_km, may be empty (accepted)
  std::string reason;          ///< why not (refused)
};

/// The source QKDN's word on how a relay ended; the receiver releases its keys when failed.
struct RelayEnd {
  std::string relay_id;
  bool relayed = false;
  std::string reason;
};

/// Mxi (Y.3818 7.1): the periodic performance, accounting and security summary of the sender's
/// dealings with the receiver (docs/cxi.md clause 5.8). Every counter counts since the
/// sender's start, 0..kMaxSummaryCounter.
inline constexpr std::int64_t kMaxSummaryCounter = (std::int64_t{1} << 53) - 1;
inline constexpr std::int64_t kMinSummaryPeriodMs = 1000;
inline constexpr std::int64_t kMaxSummaryPeriodMs = 3'600'000;
struct Summary {
  std::int64_t seq = 0;            ///< 1, 2, ... per session of the sender
  std::int64_t period_ms = 10000;  ///< the sender's period, kMin..kMaxSummaryPeriodMs
  struct Performance {
    std::int64_t links_usable = 0;  ///< inter-QKDN links with the receiver both sides see up
    std::int64_t links_total = 0;   ///< inter-QKDN links with the receiver
    std::int64_t route_requests_answered = 0;  ///< the receiver's route requests answered
    bool operator==(const Performance&) const = default;
  } performance;
  struct Accounting {
    std::int64_t route_requests_accepted = 0;  ///< of the receiver's, accepted
    std::int64_t route_requests_refused = 0;   ///< of the receiver's, refused
    std::int64_t faults_sent = 0;              ///< faults forwarded to the receiver
    bool operator==(const Accounting&) const = default;
  } accounting;
  struct Security {
    std::int64_t sessions_refused = 0;  ///< Cxi sessions the sender refused (any caller)
    std::int64_t bad_messages = 0;      ///< malformed or refused Cxi messages (any peer)
    std::int64_t faults_received = 0;   ///< faults the receiver forwarded to the sender
    bool operator==(const Security&) const = default;
  } security;
  bool operator==(const Summary&) const = default;
};

/// Sent before closing a session on a protocol or policy violation.
struct ErrorMsg {
  std::string code;  ///< bad_message | identity | version | policy | internal
  std::string reason;
};

using Message = std::variant<Hello, Heartbeat, Reachability, LinkStatus, RouteRequest, RouteAnswer,
                             Fault, ErrorMsg, RelaySetup, RelaySetupAnswer, RelayEnd, Summary>;

/// The message's "type" member ("hello", "heartbeat", ...).
std::string_view type_name(const Message& m);

/// JSON text of a message (the frame body).
std::string encode(const Message& m);
/// Parses and validates a frame body; throws BadCxiMessage with the reason.
Message decode(std::string_view body);

/// A 4-byte big-endian length followed by the body.
std::string frame(const Message& m);
/// The body length announced by a frame header; throws BadCxiMessage when 0 or above
/// kMaxFrameBody.
std::size_t frame_length(const unsigned char header[4]);

class BadCxiMessage : public std::exception {
 public:
  explicit BadCxiMessage(std::string reason) : reason_(std::move(reason)) {}
  [[nodiscard]] const char* what() const noexcept override { return reason_.c_str(); }

 private:
  std::string reason_;
};

}  // namespace qkdn::interworking
