// Typed Ck messages (Q.4164 Tables 1-13 and the project extensions of ck-protocol.md clause 4),
// their JSON payload encoding and their validation. Pure code, no I/O.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace qkdn::southbound::ck {

/// Command codes of Q.4164 Table I.1 and the project extensions.
enum class Command : std::uint16_t {
  kKeyRelayNextHopRequest = 0x1401,
  kKeyRelayNextHopResponse = 0x4102,
  kKeyRelayRequestNotification = 0x1403,
  kKeyRelayRequest = 0x4104,
  kKeyRelayResponse = 0x1405,
  kSessionCreationRequest = 0x1406,
  kSessionCreationResponse = 0x4107,
  kSessionCreationNotification = 0x4108,
  kSessionCreationNotificationResponse = 0x1409,
  kKeyReservationRequest = 0x410A,
  kKeyReservationResponse = 0x140B,
  kKeyAllocationRequest = 0x410C,
  kKeyAllocationResponse = 0x140D,
  kRegister = 0x14E1,
  kRegisterResponse = 0x41E2,
  kStatusReport = 0x14E3,
  kAlarm = 0x14E4,
  kRelayInstruction = 0x41E5,
  kRelayInstructionResponse = 0x14E6,
  kApplicationsUpdate = 0x14E7,
  kHeartbeat = 0x14E8,
  kHeartbeatResponse = 0x41E9,
  kErrorFromKm = 0x14EF,
  kErrorFromController = 0x41EF,
};

/// Who sends a command: the first two hex digits, "14" KM -> controller, "41" controller -> KM.
enum class Direction { kKmToController, kControllerToKm };

/// True for a code listed in clause 4.
bool is_known_command(std::uint16_t code) noexcept;
/// Direction encoded in a code's high byte (0x14 / 0x41); nullopt for any other high byte.
std::optional<Direction> direction_of(std::uint16_t code) noexcept;
/// Short stable name ("register", "key_relay_request", ...) used in logs and metric labels;
/// "unknown" for other codes.
std::string_view command_name(std::uint16_t code) noexcept;
/// For a command that has a response (clause 4 "Pairs"), the response's code.
std::optional<Command> response_of(Command c) noexcept;

/// Error codes of clause 3.
namespace errc {
inline constexpr std::string_view kBadRequest = "bad_request";
inline constexpr std::string_view kUnknownCommand = "unknown_command";
inline constexpr std::string_view kUnsupportedVersion = "unsupported_version";
inline constexpr std::string_view kNotRegistered = "not_registered";
inline constexpr std::string_view kUnknownKma = "unknown_kma";
inline constexpr std::string_view kUnknownApplication = "unknown_application";
inline constexpr std::string_view kNoRoute = "no_route";
inline constexpr std::string_view kInsufficientKeys = "insufficient_keys";
inline constexpr std::string_view kUnknownKey = "unknown_key";
inline constexpr std::string_view kReservationExpired = "reservation_expired";
inline constexpr std::string_view kStaleEpoch = "stale_epoch";
inline constexpr std::string_view kTimeout = "timeout";
inline constexpr std::string_view kInternal = "internal";
}  // namespace errc

/// `extension` of Tables 1-13: an array of objects, kept as its JSON text ("[...]") so that
/// unknown extensions round-trip. Absent when the field was absent.
using Extension = std::optional<std::string>;

/// One hop's allocated keys, carried in a 0x4104 extension object {"hop_keys": [...]}.
struct HopKeys {
  std::string kma_id;
  std::string next_kma_id;
  std::string link_id;
  std::vector<std::string> key_ids;
};

// ---- Q.4164 clause 8 -------------------------------------------------------------------------

/// 0x1401, Table 1. Exactly: destination_kma_id or application_destination_id (at least one).
struct KeyRelayNextHopRequest {
  std::optional<std::string> source_kma_id;
  std::optional<std::string> destination_kma_id;
  std::optional<std::string> application_destination_id;
  Extension extension;
};
/// 0x4102, Table 2.
struct KeyRelayNextHopResponse {
  std::optional<std::string> source_kma_id;
  std::optional<std::string> destination_kma_id;
  std::vector<std::string> next_kma_ids;  ///< best first; empty = no route
  Extension extension;
};
/// 0x1403, Table 3 (+ number_of_keys, key_size [project]).
struct KeyRelayRequestNotification {
  std::optional<std::string> source_kma_id;
  std::optional<std::string> destination_kma_id;
  std::optional<std::string> application_destination_id;
  std::optional<std::int64_t> number_of_keys;  ///< >= 1
  std::optional<std::int64_t> key_size;        ///< bits, >= 1
  Extension extension;
};
/// 0x4104, Table 4. `hop_keys` is encoded into / decoded from `extension`.
struct KeyRelayRequest {
  std::optional<std::string> source_kma_id;
  std::optional<std::string> destination_kma_id;
  std::vector<std::string> transit_kma_ids;
  std::optional<std::string> key_relay_request_id;
  std::optional<std::uint32_t> notification_message_id;
  std::vector<HopKeys> hop_keys;  ///< from/to the {"hop_keys": [...]} extension object
  Extension extension;            ///< other extension objects (hop_keys excluded)
};
/// 0x1405, Table 5.
struct KeyRelayResponse {
  std::string response;  ///< "OK" or "NG: <reason>"
  std::optional<std::string> key_relay_request_id;
  Extension extension;
};
/// 0x1406, Table 6.
struct SessionCreationRequest {
  std::string application_source_id;
  std::string application_destination_id;
  std::optional<std::int64_t> number_of_keys;
  Extension extension;
};
/// 0x4107, Table 7.
struct SessionCreationResponse {
  std::string session_id;
  std::string response;
  std::string destination_km_id;
  Extension extension;
};
/// 0x4108, Table 8.
struct SessionCreationNotification {
  std::string application_source_id;
  std::string application_destination_id;
  std::string session_id;
  std::string source_km_id;
  std::optional<std::int64_t> number_of_keys;
  Extension extension;
};
/// 0x1409, Table 9.
struct SessionCreationNotificationResponse {
  std::string session_id;
  std::string response;
  Extension extension;
};
/// 0x410A, Table 10 (+ number_of_keys, next_kma_id, link_id, key_relay_request_id [project]).
struct KeyReservationRequest {
  std::string source_kma_id;
  std::string destination_kma_id;
  std::optional<std::string> application_destination_id;
  std::optional<std::int64_t> number_of_keys;
  std::optional<std::string> next_kma_id;
  std::optional<std::string> link_id;
  std::optional<std::string> key_relay_request_id;
  Extension extension;
};
/// 0x140B, Table 11. response: 0 OK, 1 NG.
struct KeyReservationResponse {
  std::optional<std::string> source_kma_id;
  std::optional<std::string> destination_kma_id;
  std::optional<std::string> application_destination_id;
  std::optional<std::string> next_kma_id;
  std::optional<std::string> link_id;
  std::vector<std::string> key_ids;
  std::int64_t response = 0;
  Extension extension;
};
/// 0x410C, Table 12.
struct KeyAllocationRequest {
  std::string source_kma_id;
  std::string destination_kma_id;
  std::optional<std::string> application_destination_id;
  std::optional<std::string> next_kma_id;
  std::optional<std::string> link_id;
  std::optional<std::string> key_relay_request_id;
  std::vector<std::string> key_ids;
  Extension extension;
};
/// 0x140D, Table 13.
struct KeyAllocationResponse {
  std::optional<std::string> source_kma_id;
  std::optional<std::string> destination_kma_id;
  std::optional<std::string> application_destination_id;
  std::optional<std::string> next_kma_id;
  std::optional<std::string> link_id;
  std::optional<std::vector<std::string>> key_ids;
  std::int64_t response = 0;
  Extension extension;
};

// ---- project extensions ----------------------------------------------------------------------

struct LinkRef {
  std::string link_id;
  std::string peer_kma_id;
};
/// 0x14E1.
struct Register {
  std::string km_id;
  std::optional<std::string> kma_id;
  std::optional<std::string> ksa_id;
  std::string kma_endpoint;  ///< host:port
  std::vector<LinkRef> links;
  std::optional<std::vector<std::string>> applications;
  std::optional<std::string> software;
};
struct PeerEndpoint {
  std::string kma_id;
  std::string kma_endpoint;
};
/// 0x41E2.
struct RegisterResponse {
  std::string response;
  std::string controller_id;
  std::int64_t controller_epoch = 0;
  std::int64_t heartbeat_interval_ms = 0;
  std::int64_t status_interval_ms = 0;
  std::optional<std::vector<PeerEndpoint>> peers;
};
struct LinkStatus {
  std::string link_id;
  std::string peer_kma_id;
  std::string state;  ///< "up" | "down"
  std::int64_t stored_keys = 0;
  std::int64_t stored_key_bits = 0;
  double key_rate_bps = 0;
  double consumption_rate_bps = 0;
  double qber = 0;
};
/// 0x14E3.
struct StatusReport {
  std::string kma_id;
  std::string timestamp;  ///< RFC 3339
  std::vector<LinkStatus> links;
};
/// 0x14E4. alarm in {qber_high, link_down, link_up, key_pool_low, relay_failure,
/// peer_unreachable}; severity in {critical, major, minor, cleared}.
struct Alarm {
  std::string kma_id;
  std::string alarm;
  std::optional<std::string> link_id;
  std::string severity;
  std::optional<double> value;
  std::optional<std::string> text;
  std::string timestamp;
};
/// 0x41E5.
struct RelayInstruction {
  std::string instruction_id;
  std::string destination_kma_id;
  std::vector<std::string> transit_kma_ids;
  std::int64_t number_of_keys = 0;
  std::optional<std::int64_t> key_size;
  std::optional<std::string> not_before;
  std::optional<std::string> not_after;
  Extension extension;
};
/// 0x14E6.
struct RelayInstructionResponse {
  std::string instruction_id;
  std::string response;
  std::optional<std::int64_t> keys_relayed;
};
/// 0x14E7.
struct ApplicationsUpdate {
  std::string kma_id;
  std::optional<std::vector<std::string>> attached;
  std::optional<std::vector<std::string>> detached;
};
/// 0x14E8.
struct Heartbeat {
  std::string kma_id;
};
/// 0x41E9.
struct HeartbeatResponse {};
/// 0x14EF / 0x41EF. `from_km` selects the code on encode and is set from it on decode.
struct ErrorMessage {
  std::string error;
  std::optional<std::string> message;
  std::optional<std::uint32_t> message_id;
  bool from_km = false;
};

using Message =
    std::variant<KeyRelayNextHopRequest, KeyRelayNextHopResponse, KeyRelayRequestNotification,
                 KeyRelayRequest, KeyRelayResponse, SessionCreationRequest,
                 SessionCreationResponse, SessionCreationNotification,
                 SessionCreationNotificationResponse, KeyReservationRequest,
                 KeyReservationResponse, KeyAllocationRequest, KeyAllocationResponse, Register,
                 RegisterResponse, StatusReport, Alarm, RelayInstruction,
                 RelayInstructionResponse, ApplicationsUpdate, Heartbeat, HeartbeatResponse,
                 ErrorMessage>;

/// The command code of a message.
Command command_of(const Message& m) noexcept;

/// Why a payload was rejected: an error code of clause 3 and a human message naming the field.
struct DecodeError {
  std::string_view code;  ///< errc::kBadRequest or errc::kUnknownCommand
  std::string message;    ///< e.g. "key_ids[2]: expected string"
};

/// Result of decode_payload: the message or why it was rejected.
using DecodeResult = std::variant<Message, DecodeError>;

/// Parses and validates a payload for `command`: one JSON object, mandatory fields present,
/// every known field of the right type, identifiers valid (clause 3), numbers in range, the
/// "either destination_kma_id or application_destination_id" rule. Unknown fields are ignored.
/// Never throws for any input.
DecodeResult decode_payload(std::uint16_t command, std::string_view payload) noexcept;

/// Encodes a message's payload as a compact JSON object. Optional fields that are absent are
/// omitted. Throws InvalidArgument if the message violates its own table (so that we never send
/// what we would reject).
std::string encode_payload(const Message& m);

/// Validates a message against its table without encoding; throws InvalidArgument.
void validate(const Message& m);

}  // namespace qkdn::southbound::ck
