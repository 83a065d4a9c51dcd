// Typed Ck messages (Q.4164 Tables 1-13 and the project extensions of ck-protocol.md clause 4),
// the command table, their JSON payload encoding and their validation. Pure code, no I/O.
// How to add a message: docs/howto-ck-message.md.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <variant>
#include <vector>

#include "qkdn/base/error.hpp"

namespace qkdn::southbound::ck {

/// Command codes of Q.4164 Table I.1 and the project extensions. Each has a row in kCommands.
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
  kKeyRelease = 0x41EA,
  kKeyReleaseResponse = 0x14EB,
  kErrorFromKm = 0x14EF,
  kIwnTransferRequest = 0x14F0,
  kIwnTransferInstruction = 0x41F1,
  kIwnTransferReport = 0x14F2,
  kErrorFromController = 0x41EF,
};

/// Who sends a command: the first two hex digits, "14" KM -> controller, "41" controller -> KM.
enum class Direction { kKmToController, kControllerToKm };

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
/// [project] The controller is overloaded or the KM is over its rate: retry later (the hint is
/// RegisterResponse::retry_after_ms, or "retry after <N> ms" at the end of the message).
inline constexpr std::string_view kBusy = "busy";

/// The one table from a Ck error code to the project's ErrorCode (bad_request ->
/// kInvalidArgument, unknown_* -> kNotFound, busy/no_route/insufficient_keys/timeout ->
/// kUnavailable, stale_epoch/reservation_expired -> kConflict, internal and codes not in the
/// table -> kInternal).
ErrorCode category(std::string_view code) noexcept;
}  // namespace errc

/// A qkdn::Error that carries the Ck error code `code` (Error::wire_code) and its category.
Error error(std::string_view code, const std::string& message);
/// An exception as the Error a KM is answered with: an Error as it is (its code by
/// error_ck_code(const Error&)), anything else as internal.
Error error_of(const std::exception& e);

/// `extension` of Tables 1-13: an array of objects, kept as its JSON text ("[...]") so that
/// unknown extensions round-trip. Absent when the field was absent.
using Extension = std::optional<std::string>;

/// One hop's allocated keys, carried in a 0x4104 extension object {"hop_keys": [...]}.
struct HopKeys {
  std::string kma_id;
  std::string next_kma_id;
  std::string link_id;
  std::vector<std::string> key_ids;
  bool operator==(const HopKeys&) const = default;
};

// ---- Q.4164 clause 8 -------------------------------------------------------------------------

/// 0x1401, Table 1. Exactly: destination_kma_id or application_destination_id (at least one).
struct KeyRelayNextHopRequest {
  std::optional<std::string> source_kma_id;
  std::optional<std::string> destination_kma_id;
  std::optional<std::string> application_destination_id;
  Extension extension;
  bool operator==(const KeyRelayNextHopRequest&) const = default;
};
/// 0x4102, Table 2.
struct KeyRelayNextHopResponse {
  std::optional<std::string> source_kma_id;
  std::optional<std::string> destination_kma_id;
  std::vector<std::string> next_kma_ids;  ///< best first; empty = no route
  Extension extension;
  std::optional<std::int64_t> controller_epoch;  ///< [project] clause 2; >= 0, omitted if absent
  bool operator==(const KeyRelayNextHopResponse&) const = default;
};
/// 0x1403, Table 3 (+ number_of_keys, key_size [project]).
struct KeyRelayRequestNotification {
  std::optional<std::string> source_kma_id;
  std::optional<std::string> destination_kma_id;
  std::optional<std::string> application_destination_id;
  std::optional<std::int64_t> number_of_keys;  ///< >= 1
  std::optional<std::int64_t> key_size;        ///< bits, >= 1
  Extension extension;
  bool operator==(const KeyRelayRequestNotification&) const = default;
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
  std::optional<std::int64_t> controller_epoch;  ///< [project] clause 2; >= 0, omitted if absent
  bool operator==(const KeyRelayRequest&) const = default;
};
/// 0x1405, Table 5.
struct KeyRelayResponse {
  std::string response;  ///< "OK" or "NG: <reason>"
  std::optional<std::string> key_relay_request_id;
  Extension extension;
  bool operator==(const KeyRelayResponse&) const = default;
};
/// 0x1406, Table 6.
struct SessionCreationRequest {
  std::string application_source_id;
  std::string application_destination_id;
  std::optional<std::int64_t> number_of_keys;
  Extension extension;
  bool operator==(const SessionCreationRequest&) const = default;
};
/// 0x4107, Table 7.
struct SessionCreationResponse {
  std::string session_id;
  std::string response;
  std::string destination_km_id;
  Extension extension;
  std::optional<std::int64_t> controller_epoch;  ///< [project] clause 2; >= 0, omitted if absent
  bool operator==(const SessionCreationResponse&) const = default;
};
/// 0x4108, Table 8.
struct SessionCreationNotification {
  std::string application_source_id;
  std::string application_destination_id;
  std::string session_id;
  std::string source_km_id;
  std::optional<std::int64_t> number_of_keys;
  Extension extension;
  std::optional<std::int64_t> controller_epoch;  ///< [project] clause 2; >= 0, omitted if absent
  bool operator==(const SessionCreationNotification&) const = default;
};
/// 0x1409, Table 9.
struct SessionCreationNotificationResponse {
  std::string session_id;
  std::string response;
  Extension extension;
  bool operator==(const SessionCreationNotificationResponse&) const = default;
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
  std::optional<std::int64_t> controller_epoch;  ///< [project] clause 2; >= 0, omitted if absent
  bool operator==(const KeyReservationRequest&) const = default;
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
  bool operator==(const KeyReservationResponse&) const = default;
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
  std::optional<std::int64_t> controller_epoch;  ///< [project] clause 2; >= 0, omitted if absent
  bool operator==(const KeyAllocationRequest&) const = default;
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
  bool operator==(const KeyAllocationResponse&) const = default;
};

// ---- project extensions ----------------------------------------------------------------------

struct LinkRef {
  std::string link_id;
  std::string peer_kma_id;
  bool operator==(const LinkRef&) const = default;
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
  bool operator==(const Register&) const = default;
};
struct PeerEndpoint {
  std::string kma_id;
  std::string kma_endpoint;
  bool operator==(const PeerEndpoint&) const = default;
};
/// 0x41E2.
struct RegisterResponse {
  std::string response;
  std::string controller_id;
  std::int64_t controller_epoch = 0;
  std::int64_t heartbeat_interval_ms = 0;
  std::int64_t status_interval_ms = 0;
  std::optional<std::vector<PeerEndpoint>> peers;
  /// [project] With "NG: busy": wait at least this long before registering again.
  std::optional<std::int64_t> retry_after_ms;
  /// [project] The network's relay routing policy (docs/ck-extensions.md "Relay routing"):
  /// "centralized" (0x1403, the controller reserves every hop) or "distributed" (Q.4164 7.1: each
  /// KM of the route asks 0x1401 for its next hop). Absent: centralized.
  std::optional<std::string> relay_routing;
  bool operator==(const RegisterResponse&) const = default;
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
  bool operator==(const LinkStatus&) const = default;
};
/// 0x14E3.
struct StatusReport {
  std::string kma_id;
  std::string timestamp;  ///< RFC 3339
  std::vector<LinkStatus> links;
  bool operator==(const StatusReport&) const = default;
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
  bool operator==(const Alarm&) const = default;
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
  std::optional<std::int64_t> controller_epoch;  ///< [project] clause 2; >= 0, omitted if absent
  bool operator==(const RelayInstruction&) const = default;
};
/// 0x14E6.
struct RelayInstructionResponse {
  std::string instruction_id;
  std::string response;
  std::optional<std::int64_t> keys_relayed;
  bool operator==(const RelayInstructionResponse&) const = default;
};
/// 0x14E7.
struct ApplicationsUpdate {
  std::string kma_id;
  std::optional<std::vector<std::string>> attached;
  std::optional<std::vector<std::string>> detached;
  bool operator==(const ApplicationsUpdate&) const = default;
};
/// 0x14E8.
struct Heartbeat {
  std::string kma_id;
  bool operator==(const Heartbeat&) const = default;
};
/// 0x41E9.
struct HeartbeatResponse {
  bool operator==(const HeartbeatResponse&) const = default;
};
/// 0x41EA [project] (docs/ck-extensions.md "Key release"): the controller's ledger released
/// these keys of one hop of key_relay_request_id (or refused to record them). The KM puts keys it
/// holds reserved for that relay back (available), discards keys it holds allocated for it at
/// both ends of the link, and with disposition "discard" discards every named key it holds for
/// it. Keys it does not hold for that relay are left alone.
struct KeyRelease {
  std::string key_relay_request_id;
  std::string next_kma_id;  ///< far end of the hop (the KM receiving this is its near end)
  std::optional<std::string> link_id;
  std::vector<std::string> key_ids;
  std::optional<std::string> disposition;  ///< "release" (default) | "discard"
  Extension extension;
  std::optional<std::int64_t> controller_epoch;  ///< [project] clause 2; >= 0, omitted if absent
  bool operator==(const KeyRelease&) const = default;
};
/// 0x14EB [project]: the answer to 0x41EA: how many named keys went back to available and how
/// many were discarded (the rest were not held for that relay).
struct KeyReleaseResponse {
  std::string key_relay_request_id;
  std::string response;  ///< "OK" | "NG: <reason>"
  std::optional<std::int64_t> released;
  std::optional<std::int64_t> discarded;
  bool operator==(const KeyReleaseResponse&) const = default;
};
/// 0x14F0 [project] (docs/ck-extensions.md "Interworking key transfer", Y.3818 9.2 1): an
/// interworking-node KM holds keys for an SAE of another QKDN and asks its controller whether
/// to transfer them to its IWN partner KM. Metadata only: key IDs, never key bytes.
struct IwnTransferRequest {
  std::string transfer_id;  ///< UUID chosen by the KM
  std::string kma_id;       ///< the asking KM (must be the connection's)
  std::string partner_kma_id;
  std::optional<std::string> partner_qkdn_id;
  std::string application_source_id;       ///< the SAE that asked for the keys (this QKDN)
  std::string application_destination_id;  ///< the SAE of the partner's QKDN
  std::int64_t number_of_keys = 0;
  std::int64_t key_size = 0;                        ///< bits per key
  std::vector<std::string> key_ids;                 ///< the ETSI key_IDs, number_of_keys of them
  std::optional<std::string> key_relay_request_id;  ///< the relay that brought them, if any
  Extension extension;
  bool operator==(const IwnTransferRequest&) const = default;
};
/// 0x41F1 [project]: the controller's decision on a 0x14F0 (same MessageID): "OK" with the
/// partner and the key IDs to transfer, or "NG: <code>: <text>" (the KM deletes the keys).
struct IwnTransferInstruction {
  std::string transfer_id;
  std::string response;  ///< "OK" | "NG: <reason>"
  std::optional<std::string> partner_kma_id;
  std::optional<std::vector<std::string>> key_ids;
  Extension extension;
  std::optional<std::int64_t> controller_epoch;  ///< [project] clause 2; >= 0, omitted if absent
  bool operator==(const IwnTransferInstruction&) const = default;
};
/// 0x14F2 [project]: a KM of an IWN reports a finished transfer (Y.3818 9.2 1: "metadata for
/// transfer key lifecycle management"): the sender after the partner's answer, the receiver
/// after storing or refusing. No response unless rejected (Error).
struct IwnTransferReport {
  std::string transfer_id;
  std::string kma_id;
  std::string role;  ///< "sender" | "receiver"
  std::string partner_kma_id;
  std::optional<std::string> partner_qkdn_id;
  std::string application_source_id;
  std::string application_destination_id;
  std::int64_t number_of_keys = 0;
  std::int64_t key_size = 0;
  std::optional<std::vector<std::string>> key_ids;
  std::string response;     ///< "OK" | "NG: <reason>"
  std::string disposition;  ///< "stored" | "deleted": what the KM did with its copy
  Extension extension;
  bool operator==(const IwnTransferReport&) const = default;
};
/// 0x14EF / 0x41EF. `from_km` selects the code on encode and is set from it on decode.
struct ErrorMessage {
  std::string error;
  std::optional<std::string> message;
  std::optional<std::uint32_t> message_id;
  bool from_km = false;
  bool operator==(const ErrorMessage&) const = default;
};

using Message =
    std::variant<KeyRelayNextHopRequest, KeyRelayNextHopResponse, KeyRelayRequestNotification,
                 KeyRelayRequest, KeyRelayResponse, SessionCreationRequest, SessionCreationResponse,
                 SessionCreationNotification, SessionCreationNotificationResponse,
                 KeyReservationRequest, KeyReservationResponse, KeyAllocationRequest,
                 KeyAllocationResponse, Register, RegisterResponse, StatusReport, Alarm,
                 RelayInstruction, RelayInstructionResponse, ApplicationsUpdate, Heartbeat,
                 HeartbeatResponse, KeyRelease, KeyReleaseResponse, ErrorMessage,
                 IwnTransferRequest, IwnTransferInstruction, IwnTransferReport>;

// ---- the command table -----------------------------------------------------------------------

/// One row of the command table: what the codec, the dispatch, logs and metrics know of a code.
struct CommandInfo {
  Command code;
  std::string_view name;            ///< stable name for logs and metric labels
  Direction direction;              ///< who sends it; agrees with the code's high byte
  std::optional<Command> response;  ///< the paired response (clause 4 "Pairs"), if any
  std::size_t variant_index;        ///< the Message alternative that carries the payload
};

namespace detail {
template <class T, class V>
struct IndexIn;
template <class T, class... Ts>
struct IndexIn<T, std::variant<Ts...>> {
  static constexpr std::size_t value = [] {
    constexpr bool kIs[] = {std::is_same_v<T, Ts>...};
    for (std::size_t i = 0; i < sizeof...(Ts); ++i) {
      if (kIs[i]) return i;
    }
    return sizeof...(Ts);
  }();
};
}  // namespace detail

/// The index of alternative T in Message.
template <class T>
inline constexpr std::size_t kMessageIndex = detail::IndexIn<T, Message>::value;

/// Every command of ck-protocol.md clause 4: the one list. Names, directions, response pairs,
/// decode dispatch, command_of, the metrics series and the fuzz codes derive from it;
/// static_asserts (ck_messages.cpp) and the codec tests check it against Message and the samples.
inline constexpr CommandInfo kCommands[] = {
    // Q.4164 Table I.1
    {Command::kKeyRelayNextHopRequest, "key_relay_next_hop_request", Direction::kKmToController,
     Command::kKeyRelayNextHopResponse, kMessageIndex<KeyRelayNextHopRequest>},
    {Command::kKeyRelayNextHopResponse, "key_relay_next_hop_response", Direction::kControllerToKm,
     std::nullopt, kMessageIndex<KeyRelayNextHopResponse>},
    {Command::kKeyRelayRequestNotification, "key_relay_request_notification",
     Direction::kKmToController, std::nullopt, kMessageIndex<KeyRelayRequestNotification>},
    {Command::kKeyRelayRequest, "key_relay_request", Direction::kControllerToKm,
     Command::kKeyRelayResponse, kMessageIndex<KeyRelayRequest>},
    {Command::kKeyRelayResponse, "key_relay_response", Direction::kKmToController, std::nullopt,
     kMessageIndex<KeyRelayResponse>},
    {Command::kSessionCreationRequest, "session_creation_request", Direction::kKmToController,
     Command::kSessionCreationResponse, kMessageIndex<SessionCreationRequest>},
    {Command::kSessionCreationResponse, "session_creation_response", Direction::kControllerToKm,
     std::nullopt, kMessageIndex<SessionCreationResponse>},
    {Command::kSessionCreationNotification, "session_creation_notification",
     Direction::kControllerToKm, Command::kSessionCreationNotificationResponse,
     kMessageIndex<SessionCreationNotification>},
    {Command::kSessionCreationNotificationResponse, "session_creation_notification_response",
     Direction::kKmToController, std::nullopt, kMessageIndex<SessionCreationNotificationResponse>},
    {Command::kKeyReservationRequest, "key_reservation_request", Direction::kControllerToKm,
     Command::kKeyReservationResponse, kMessageIndex<KeyReservationRequest>},
    {Command::kKeyReservationResponse, "key_reservation_response", Direction::kKmToController,
     std::nullopt, kMessageIndex<KeyReservationResponse>},
    {Command::kKeyAllocationRequest, "key_allocation_request", Direction::kControllerToKm,
     Command::kKeyAllocationResponse, kMessageIndex<KeyAllocationRequest>},
    {Command::kKeyAllocationResponse, "key_allocation_response", Direction::kKmToController,
     std::nullopt, kMessageIndex<KeyAllocationResponse>},
    // Project extensions
    {Command::kRegister, "register", Direction::kKmToController, Command::kRegisterResponse,
     kMessageIndex<Register>},
    {Command::kRegisterResponse, "register_response", Direction::kControllerToKm, std::nullopt,
     kMessageIndex<RegisterResponse>},
    {Command::kStatusReport, "status_report", Direction::kKmToController, std::nullopt,
     kMessageIndex<StatusReport>},
    {Command::kAlarm, "alarm", Direction::kKmToController, std::nullopt, kMessageIndex<Alarm>},
    {Command::kRelayInstruction, "relay_instruction", Direction::kControllerToKm,
     Command::kRelayInstructionResponse, kMessageIndex<RelayInstruction>},
    {Command::kRelayInstructionResponse, "relay_instruction_response", Direction::kKmToController,
     std::nullopt, kMessageIndex<RelayInstructionResponse>},
    {Command::kApplicationsUpdate, "applications_update", Direction::kKmToController, std::nullopt,
     kMessageIndex<ApplicationsUpdate>},
    {Command::kHeartbeat, "heartbeat", Direction::kKmToController, Command::kHeartbeatResponse,
     kMessageIndex<Heartbeat>},
    {Command::kHeartbeatResponse, "heartbeat_response", Direction::kControllerToKm, std::nullopt,
     kMessageIndex<HeartbeatResponse>},
    {Command::kKeyRelease, "key_release", Direction::kControllerToKm, Command::kKeyReleaseResponse,
     kMessageIndex<KeyRelease>},
    {Command::kKeyReleaseResponse, "key_release_response", Direction::kKmToController, std::nullopt,
     kMessageIndex<KeyReleaseResponse>},
    {Command::kIwnTransferRequest, "iwn_transfer_request", Direction::kKmToController,
     Command::kIwnTransferInstruction, kMessageIndex<IwnTransferRequest>},
    {Command::kIwnTransferInstruction, "iwn_transfer_instruction", Direction::kControllerToKm,
     std::nullopt, kMessageIndex<IwnTransferInstruction>},
    {Command::kIwnTransferReport, "iwn_transfer_report", Direction::kKmToController, std::nullopt,
     kMessageIndex<IwnTransferReport>},
    {Command::kErrorFromKm, "error", Direction::kKmToController, std::nullopt,
     kMessageIndex<ErrorMessage>},
    {Command::kErrorFromController, "error", Direction::kControllerToKm, std::nullopt,
     kMessageIndex<ErrorMessage>},
};

/// The row of `code` in kCommands; nullptr for a code not listed.
constexpr const CommandInfo* find_command(std::uint16_t code) noexcept {
  for (const CommandInfo& c : kCommands) {
    if (static_cast<std::uint16_t>(c.code) == code) return &c;
  }
  return nullptr;
}

/// True for a code listed in kCommands.
bool is_known_command(std::uint16_t code) noexcept;
/// Direction encoded in a code's high byte (0x14 / 0x41); nullopt for any other high byte.
std::optional<Direction> direction_of(std::uint16_t code) noexcept;
/// Short stable name ("register", "key_relay_request", ...) used in logs and metric labels;
/// "unknown" for other codes.
std::string_view command_name(std::uint16_t code) noexcept;
/// For a command that has a response (clause 4 "Pairs"), the response's code.
std::optional<Command> response_of(Command c) noexcept;
/// The command code of a message.
Command command_of(const Message& m) noexcept;

/// JSON type of a payload field.
enum class FieldType { kString, kInteger, kNumber, kStringArray, kObjectArray, kExtension };

/// One top-level field of a payload as the codec's field table declares it.
struct FieldInfo {
  std::string_view name;
  FieldType type;
  bool mandatory;
  bool operator==(const FieldInfo&) const = default;
};

/// The top-level fields of the payload of `code`, in wire order; empty for an unknown code.
/// For tests and documentation: the codec reads, checks and writes exactly these.
std::vector<FieldInfo> payload_fields(std::uint16_t code);

/// Why a payload was rejected: an error code of clause 3 and a human message naming the field.
struct DecodeError {
  std::string_view code;  ///< errc::kBadRequest or errc::kUnknownCommand
  std::string message;    ///< e.g. "key_ids[2]: expected string"
  bool operator==(const DecodeError&) const = default;
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

// ---- codec bounds and decisions [project] ----------------------------------------------------
//
// Decisions where ck-protocol.md leaves room, applied alike by decode_payload and validate:
// - A field that is present with JSON null has the wrong type (null is never "absent").
// - Integers must be JSON integers (1.0 is rejected); numbers (qber, rates, value) may be
//   integers or decimals and must be finite.
// - Duplicate member names: the last one wins (Boost.JSON behaviour).
// - UUIDs: 8-4-4-4-12 hex digits, either case. Identifiers: clause 3.
// - String `response`: exactly "OK", or "NG: " followed by a non-empty reason.
// - Integer `response`: 0 or 1 (an NG need not carry the error extension to be accepted).
// - key_ids of 0x410C and of each hop_keys entry must be non-empty; key_ids of 0x140B and
//   0x140D, transit_kma_ids and next_kma_ids may be empty. Arrays of a Register / Status report
//   may be empty.
// - 0x4102/0x4104 destination_kma_id is optional here (its condition depends on the request).
// - Register: kma_id, when present, must equal km_id (one KMA per KM).
// - kma_endpoint: host ":" port, host a DNS name, IPv4 address or "[IPv6]", port 1..65535.
// - Timestamps: RFC 3339 date-time ("T"/"t", "Z"/"z" or +-hh:mm, optional fraction), at most
//   64 characters (the bound of qkdn::parse_rfc3339).
// - Error `error`: one of the codes of clause 3. Alarm enums: clause 4.
// - 0x4104: the extension object that has a "hop_keys" member becomes `hop_keys` (at most one
//   such object); `extension` keeps the others (absent if none remain).
// - Free text (software, text, message, NG reasons) must be valid UTF-8 on encode.

/// Upper bound of number_of_keys (lower bound 1).
inline constexpr std::int64_t kMaxNumberOfKeys = 1'000'000;
/// Upper bound of key_size in bits (lower bound 1).
inline constexpr std::int64_t kMaxKeySizeBits = 1'048'576;
/// Upper bound of heartbeat_interval_ms / status_interval_ms (lower bound 1): one day.
inline constexpr std::int64_t kMaxIntervalMs = 86'400'000;
/// Deepest JSON nesting accepted in a payload (the payload object is depth 1).
inline constexpr std::size_t kMaxJsonDepth = 32;

/// The content of an NG extension object {"error": code, "message": text} (clause 3).
struct ExtensionError {
  std::string error;
  std::string message;
  bool operator==(const ExtensionError&) const = default;
};
/// Builds an `extension` value "[{"error":...,"message":...}]" for an integer NG response.
/// Throws InvalidArgument if code is not a clause 3 code or message is not valid UTF-8.
std::string make_error_extension(std::string_view code, std::string_view message);
/// The first extension object that has a string "error" member (message "" when absent or not
/// a string); nullopt when there is none or the text is not a JSON array. Never throws.
std::optional<ExtensionError> find_error_extension(const Extension& extension) noexcept;
/// The string member `name` of the first extension object that has one as a string; nullopt when
/// there is none or the text is not a JSON array. Never throws.
std::optional<std::string> find_extension_string(const Extension& extension,
                                                 std::string_view name) noexcept;
/// The string elements of the array member `name` of the first extension object that has one as
/// an array (non-strings skipped, at most 256); empty when there is none. Never throws.
std::vector<std::string> find_extension_strings(const Extension& extension,
                                                std::string_view name) noexcept;
/// An extension holding the one object {"<name>": "<value>"}.
std::string make_extension_string(std::string_view name, std::string_view value);
/// True for the error codes of clause 3.
bool is_error_code(std::string_view code) noexcept;

}  // namespace qkdn::southbound::ck
