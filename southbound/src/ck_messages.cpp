// Ck message codec: the field table of every message (Q.4164 Tables 1-13 and the project
// extensions of ck-protocol.md clause 4), the few rules that are not one field's (the either/or
// destination, Register's kma_id, the 0x4104 hop_keys carried in `extension`), the helpers of the
// command table, and the decode/encode entry points. Reading, checking and writing each field are
// derived from its one line in the table (ck_codec.hpp); decoding is the type-checked read into
// the message struct followed by validate(), the same checks that encode_payload applies, so that
// what we send and what we accept cannot drift apart.
#include "qkdn/southbound/ck_messages.hpp"

#include <array>
#include <boost/json.hpp>
#include <new>
#include <type_traits>
#include <utility>

#include "ck_codec.hpp"
#include "qkdn/controller/error.hpp"
#include "qkdn/json/reader.hpp"

namespace qkdn::southbound::ck {

namespace detail {

// ---- the command table, checked against Message ------------------------------------------------

constexpr bool every_alternative_has_a_command() {
  for (std::size_t i = 0; i < std::variant_size_v<Message>; ++i) {
    bool found = false;
    for (const CommandInfo& c : kCommands) found = found || c.variant_index == i;
    if (!found) return false;
  }
  for (const CommandInfo& c : kCommands) {
    if (c.variant_index >= std::variant_size_v<Message>) return false;
  }
  return true;
}
constexpr bool codes_unique() {
  for (const CommandInfo& c : kCommands) {
    if (find_command(static_cast<std::uint16_t>(c.code)) != &c) return false;
  }
  return true;
}
constexpr bool directions_match_codes() {
  for (const CommandInfo& c : kCommands) {
    const auto high = static_cast<std::uint16_t>(c.code) >> 8;
    const Direction d = high == 0x14 ? Direction::kKmToController : Direction::kControllerToKm;
    if ((high != 0x14 && high != 0x41) || c.direction != d) return false;
  }
  return true;
}
// Without pointers: with -fsanitize=undefined GCC 12 no longer treats a pointer's comparison
// with nullptr as a constant expression (QKDN_ASAN builds failed on this static_assert).
constexpr bool responses_pair_up() {
  for (const CommandInfo& c : kCommands) {
    if (!c.response) continue;
    bool paired = false;
    for (const CommandInfo& r : kCommands) {
      if (r.code == *c.response) paired = r.direction != c.direction && !r.response;
    }
    if (!paired) return false;
  }
  return true;
}
constexpr bool names_match_alternatives() {
  for (const CommandInfo& a : kCommands) {
    for (const CommandInfo& b : kCommands) {
      if ((a.name == b.name) != (a.variant_index == b.variant_index)) return false;
    }
  }
  return true;
}

static_assert(every_alternative_has_a_command(),
              "kCommands: every Message alternative needs a row, every row a Message alternative");
static_assert(codes_unique(), "kCommands: a code is listed twice");
static_assert(directions_match_codes(),
              "kCommands: direction must match the code's high byte (0x14 KM->C, 0x41 C->KM)");
static_assert(responses_pair_up(),
              "kCommands: a response must be listed, travel the other way and have no response");
static_assert(names_match_alternatives(),
              "kCommands: one name per Message alternative (the two error codes share one)");

// The row of each code for the lookups at run time (decode, names; the controller names every
// frame it counts): index + 1 into kCommands, 0 for none, by direction byte and low byte.
constexpr auto kRowOf = [] {
  static_assert(std::size(kCommands) < 255);
  std::array<std::array<std::uint8_t, 256>, 2> out{};
  for (std::size_t i = 0; i < std::size(kCommands); ++i) {
    const auto code = static_cast<std::uint16_t>(kCommands[i].code);
    out[(code >> 8) == 0x14 ? 0 : 1][code & 0xFF] = static_cast<std::uint8_t>(i + 1);
  }
  return out;
}();

const CommandInfo* row_of(std::uint16_t code) noexcept {
  const unsigned high = code >> 8;
  if (high != 0x14 && high != 0x41) return nullptr;
  const std::uint8_t r = kRowOf[high == 0x14 ? 0 : 1][code & 0xFF];
  return r == 0 ? nullptr : &kCommands[r - 1];
}

// ---- value sets --------------------------------------------------------------------------------

inline constexpr std::array<std::string_view, 2> kLinkStates = {"up", "down"};
inline constexpr std::array<std::string_view, 6> kAlarms = {
    "qber_high", "link_down", "link_up", "key_pool_low", "relay_failure", "peer_unreachable"};
inline constexpr std::array<std::string_view, 4> kSeverities = {"critical", "major", "minor",
                                                                "cleared"};

inline constexpr OneOf kLinkState{kLinkStates, "expected \"up\" or \"down\""};
inline constexpr OneOf kAlarm{kAlarms, "unknown alarm"};
inline constexpr OneOf kSeverity{kSeverities, "expected critical, major, minor or cleared"};
inline constexpr OneOf kErrorCode{kErrorCodes, "not an error code of clause 3"};
inline constexpr std::array<std::string_view, 2> kDispositions = {"release", "discard"};
inline constexpr OneOf kDisposition{kDispositions, "expected \"release\" or \"discard\""};
inline constexpr std::array<std::string_view, 2> kIwnRoles = {"sender", "receiver"};
inline constexpr OneOf kIwnRole{kIwnRoles, "expected \"sender\" or \"receiver\""};
inline constexpr std::array<std::string_view, 2> kIwnDispositions = {"stored", "deleted"};
inline constexpr OneOf kIwnDisposition{kIwnDispositions, "expected \"stored\" or \"deleted\""};
inline constexpr std::array<std::string_view, 2> kRelayRoutings = {"centralized", "distributed"};
inline constexpr OneOf kRelayRouting{kRelayRoutings, "expected \"centralized\" or \"distributed\""};

// ---- rules over several fields -----------------------------------------------------------------

// Tables 1 and 3: destination_kma_id or application_destination_id, at least one.
template <class M>
void either_destination(const M& m) {
  if (!m.destination_kma_id && !m.application_destination_id) {
    reject(kw("destination_kma_id"),
           "either destination_kma_id or application_destination_id is mandatory");
  }
}

// One KMA per KM.
inline void kma_is_km(const Register& m) {
  if (m.kma_id && *m.kma_id != m.km_id) reject(kw("kma_id"), "must equal km_id (one KMA per KM)");
}

// ---- list elements -----------------------------------------------------------------------------

template <>
struct Spec<HopKeys> {
  using M = HopKeys;
  static constexpr auto fields = std::tuple{
      Field{"kma_id", &M::kma_id, Id{}},
      Field{"next_kma_id", &M::next_kma_id, Id{}},
      Field{"link_id", &M::link_id, Id{}},
      Field{"key_ids", &M::key_ids, NonEmpty<Uuid>{}},
  };
};

template <>
struct Spec<LinkRef> {
  using M = LinkRef;
  static constexpr auto fields = std::tuple{
      Field{"link_id", &M::link_id, Id{}},
      Field{"peer_kma_id", &M::peer_kma_id, Id{}},
  };
};

template <>
struct Spec<PeerEndpoint> {
  using M = PeerEndpoint;
  static constexpr auto fields = std::tuple{
      Field{"kma_id", &M::kma_id, Id{}},
      Field{"kma_endpoint", &M::kma_endpoint, Endpoint{}},
  };
};

template <>
struct Spec<LinkStatus> {
  using M = LinkStatus;
  static constexpr auto fields = std::tuple{
      Field{"link_id", &M::link_id, Id{}},
      Field{"peer_kma_id", &M::peer_kma_id, Id{}},
      Field{"state", &M::state, kLinkState},
      Field{"stored_keys", &M::stored_keys, kNonNegativeInt},
      Field{"stored_key_bits", &M::stored_key_bits, kNonNegativeInt},
      Field{"key_rate_bps", &M::key_rate_bps, NonNegative{}},
      Field{"consumption_rate_bps", &M::consumption_rate_bps, NonNegative{}},
      Field{"qber", &M::qber, Fraction{}},
  };
};

// ---- 0x4104: hop_keys inside extension ---------------------------------------------------------

// The extension object that has a "hop_keys" member becomes KeyRelayRequest::hop_keys (at most
// one such object); `extension` keeps the other objects, in order. On the wire the hop_keys object
// comes first.
struct HopKeysInExtension {
  void read(const Reader& r, KeyRelayRequest& m) const {
    const json::array* a = r.opt_array("extension");
    if (a == nullptr) return;
    r.check_objects(*a);
    const json::object* hop_obj = nullptr;
    for (const json::value& v : *a) {
      const json::object& o = v.get_object();
      if (o.contains("hop_keys")) {
        if (hop_obj != nullptr) reject(kw("extension"), "more than one hop_keys object");
        hop_obj = &o;
      }
    }
    if (hop_obj == nullptr) {
      m.extension = json::serialize(*a);
      return;
    }
    m.hop_keys = read_value<std::vector<HopKeys>>(kw("hop_keys"), hop_obj->at("hop_keys"));
    if (a->size() > 1) {
      std::string out = "[";
      bool first = true;
      for (const json::value& v : *a) {
        if (&v.get_object() == hop_obj) continue;
        if (!first) out += ',';
        first = false;
        out += json::serialize(v);
      }
      out += ']';
      m.extension = std::move(out);
    }
  }

  void check(const Scope&, const KeyRelayRequest& m) const {
    check_value(kw("hop_keys"), m.hop_keys, Any{});
    if (!m.extension) return;
    unsigned char buf[2048];
    json::monotonic_resource mr(buf, sizeof buf);
    const json::array arr = parse_extension(*m.extension, &mr);
    for (std::size_t i = 0; i < arr.size(); ++i) {
      if (arr[i].as_object().contains("hop_keys")) {
        reject(kw("extension").at(static_cast<std::ptrdiff_t>(i)),
               "a hop_keys object belongs in hop_keys");
      }
    }
  }

  void emit(ObjectWriter& w, const KeyRelayRequest& m) const {
    if (m.hop_keys.empty()) {
      w.extension(m.extension);
      return;
    }
    std::string& o = w.key("extension");
    o += "[{\"hop_keys\":[";
    for (std::size_t i = 0; i < m.hop_keys.size(); ++i) {
      if (i != 0) o += ',';
      emit_fields(o, m.hop_keys[i]);
    }
    o += "]}";
    if (m.extension) {
      unsigned char buf[2048];
      json::monotonic_resource mr(buf, sizeof buf);
      for (const json::value& v : parse_extension(*m.extension, &mr)) {
        o += ',';
        o += json::serialize(v);
      }
    }
    o += ']';
  }

  void describe(std::vector<FieldInfo>& out) const {
    out.push_back(FieldInfo{"extension", FieldType::kExtension, false});
  }
};

// ---- Q.4164 clause 8, Tables 1-13 --------------------------------------------------------------
//
// One line per field, in wire order: name, member, value rule. A std::optional member is an
// optional field, any other is mandatory.

template <>
struct Spec<KeyRelayNextHopRequest> {
  using M = KeyRelayNextHopRequest;
  static constexpr auto fields = std::tuple{
      Field{"source_kma_id", &M::source_kma_id, Id{}},
      Field{"destination_kma_id", &M::destination_kma_id, Id{}},
      Field{"application_destination_id", &M::application_destination_id, Id{}},
      Check{&either_destination<M>},
      ExtensionField{&M::extension},
  };
};

template <>
struct Spec<KeyRelayNextHopResponse> {
  using M = KeyRelayNextHopResponse;
  static constexpr auto fields = std::tuple{
      Field{"source_kma_id", &M::source_kma_id, Id{}},
      Field{"destination_kma_id", &M::destination_kma_id, Id{}},
      Field{"next_kma_ids", &M::next_kma_ids, Id{}},
      ExtensionField{&M::extension},
      Field{"controller_epoch", &M::controller_epoch, kEpoch},
  };
};

template <>
struct Spec<KeyRelayRequestNotification> {
  using M = KeyRelayRequestNotification;
  static constexpr auto fields = std::tuple{
      Field{"source_kma_id", &M::source_kma_id, Id{}},
      Field{"destination_kma_id", &M::destination_kma_id, Id{}},
      Field{"application_destination_id", &M::application_destination_id, Id{}},
      Check{&either_destination<M>},
      Field{"number_of_keys", &M::number_of_keys, kCount},
      Field{"key_size", &M::key_size, kKeySize},
      ExtensionField{&M::extension},
  };
};

template <>
struct Spec<KeyRelayRequest> {
  using M = KeyRelayRequest;
  static constexpr auto fields = std::tuple{
      Field{"source_kma_id", &M::source_kma_id, Id{}},
      Field{"destination_kma_id", &M::destination_kma_id, Id{}},
      Field{"transit_kma_ids", &M::transit_kma_ids, Id{}},
      Field{"key_relay_request_id", &M::key_relay_request_id, Uuid{}},
      Field{"notification_message_id", &M::notification_message_id},
      HopKeysInExtension{},
      Field{"controller_epoch", &M::controller_epoch, kEpoch},
  };
};

template <>
struct Spec<KeyRelayResponse> {
  using M = KeyRelayResponse;
  static constexpr auto fields = std::tuple{
      Field{"response", &M::response, ResponseText{}},
      Field{"key_relay_request_id", &M::key_relay_request_id, Uuid{}},
      ExtensionField{&M::extension},
  };
};

template <>
struct Spec<SessionCreationRequest> {
  using M = SessionCreationRequest;
  static constexpr auto fields = std::tuple{
      Field{"application_source_id", &M::application_source_id, Id{}},
      Field{"application_destination_id", &M::application_destination_id, Id{}},
      Field{"number_of_keys", &M::number_of_keys, kCount},
      ExtensionField{&M::extension},
  };
};

template <>
struct Spec<SessionCreationResponse> {
  using M = SessionCreationResponse;
  static constexpr auto fields = std::tuple{
      Field{"session_id", &M::session_id, Uuid{}},
      Field{"response", &M::response, ResponseText{}},
      Field{"destination_km_id", &M::destination_km_id, Id{}},
      ExtensionField{&M::extension},
      Field{"controller_epoch", &M::controller_epoch, kEpoch},
  };
};

template <>
struct Spec<SessionCreationNotification> {
  using M = SessionCreationNotification;
  static constexpr auto fields = std::tuple{
      Field{"application_source_id", &M::application_source_id, Id{}},
      Field{"application_destination_id", &M::application_destination_id, Id{}},
      Field{"session_id", &M::session_id, Uuid{}},
      Field{"source_km_id", &M::source_km_id, Id{}},
      Field{"number_of_keys", &M::number_of_keys, kCount},
      ExtensionField{&M::extension},
      Field{"controller_epoch", &M::controller_epoch, kEpoch},
  };
};

template <>
struct Spec<SessionCreationNotificationResponse> {
  using M = SessionCreationNotificationResponse;
  static constexpr auto fields = std::tuple{
      Field{"session_id", &M::session_id, Uuid{}},
      Field{"response", &M::response, ResponseText{}},
      ExtensionField{&M::extension},
  };
};

template <>
struct Spec<KeyReservationRequest> {
  using M = KeyReservationRequest;
  static constexpr auto fields = std::tuple{
      Field{"source_kma_id", &M::source_kma_id, Id{}},
      Field{"destination_kma_id", &M::destination_kma_id, Id{}},
      Field{"application_destination_id", &M::application_destination_id, Id{}},
      Field{"number_of_keys", &M::number_of_keys, kCount},
      Field{"next_kma_id", &M::next_kma_id, Id{}},
      Field{"link_id", &M::link_id, Id{}},
      Field{"key_relay_request_id", &M::key_relay_request_id, Uuid{}},
      ExtensionField{&M::extension},
      Field{"controller_epoch", &M::controller_epoch, kEpoch},
  };
};

template <>
struct Spec<KeyReservationResponse> {
  using M = KeyReservationResponse;
  static constexpr auto fields = std::tuple{
      Field{"source_kma_id", &M::source_kma_id, Id{}},
      Field{"destination_kma_id", &M::destination_kma_id, Id{}},
      Field{"application_destination_id", &M::application_destination_id, Id{}},
      Field{"next_kma_id", &M::next_kma_id, Id{}},
      Field{"link_id", &M::link_id, Id{}},
      Field{"key_ids", &M::key_ids, Uuid{}},
      Field{"response", &M::response, IntResponse{}},
      ExtensionField{&M::extension},
  };
};

template <>
struct Spec<KeyAllocationRequest> {
  using M = KeyAllocationRequest;
  static constexpr auto fields = std::tuple{
      Field{"source_kma_id", &M::source_kma_id, Id{}},
      Field{"destination_kma_id", &M::destination_kma_id, Id{}},
      Field{"application_destination_id", &M::application_destination_id, Id{}},
      Field{"next_kma_id", &M::next_kma_id, Id{}},
      Field{"link_id", &M::link_id, Id{}},
      Field{"key_relay_request_id", &M::key_relay_request_id, Uuid{}},
      Field{"key_ids", &M::key_ids, NonEmpty<Uuid>{}},
      ExtensionField{&M::extension},
      Field{"controller_epoch", &M::controller_epoch, kEpoch},
  };
};

template <>
struct Spec<KeyAllocationResponse> {
  using M = KeyAllocationResponse;
  static constexpr auto fields = std::tuple{
      Field{"source_kma_id", &M::source_kma_id, Id{}},
      Field{"destination_kma_id", &M::destination_kma_id, Id{}},
      Field{"application_destination_id", &M::application_destination_id, Id{}},
      Field{"next_kma_id", &M::next_kma_id, Id{}},
      Field{"link_id", &M::link_id, Id{}},
      Field{"key_ids", &M::key_ids, Uuid{}},
      Field{"response", &M::response, IntResponse{}},
      ExtensionField{&M::extension},
  };
};

// ---- project extensions ------------------------------------------------------------------------

template <>
struct Spec<Register> {
  using M = Register;
  static constexpr auto fields = std::tuple{
      Field{"km_id", &M::km_id, Id{}},
      Field{"kma_id", &M::kma_id, Id{}},
      Check{&kma_is_km},
      Field{"ksa_id", &M::ksa_id, Id{}},
      Field{"kma_endpoint", &M::kma_endpoint, Endpoint{}},
      Field{"links", &M::links},
      Field{"applications", &M::applications, Id{}},
      Field{"software", &M::software, Text{}},
  };
};

template <>
struct Spec<RegisterResponse> {
  using M = RegisterResponse;
  static constexpr auto fields = std::tuple{
      Field{"response", &M::response, ResponseText{}},
      Field{"controller_id", &M::controller_id, Id{}},
      Field{"controller_epoch", &M::controller_epoch, kEpoch},
      Field{"heartbeat_interval_ms", &M::heartbeat_interval_ms, kInterval},
      Field{"status_interval_ms", &M::status_interval_ms, kInterval},
      Field{"peers", &M::peers},
      Field{"retry_after_ms", &M::retry_after_ms, kInterval},
      Field{"relay_routing", &M::relay_routing, kRelayRouting},
  };
};

template <>
struct Spec<StatusReport> {
  using M = StatusReport;
  static constexpr auto fields = std::tuple{
      Field{"kma_id", &M::kma_id, Id{}},
      Field{"timestamp", &M::timestamp, Timestamp{}},
      Field{"links", &M::links},
  };
};

template <>
struct Spec<Alarm> {
  using M = Alarm;
  static constexpr auto fields = std::tuple{
      Field{"kma_id", &M::kma_id, Id{}},
      Field{"alarm", &M::alarm, kAlarm},
      Field{"link_id", &M::link_id, Id{}},
      Field{"severity", &M::severity, kSeverity},
      Field{"value", &M::value, Finite{}},
      Field{"text", &M::text, Text{}},
      Field{"timestamp", &M::timestamp, Timestamp{}},
  };
};

template <>
struct Spec<RelayInstruction> {
  using M = RelayInstruction;
  static constexpr auto fields = std::tuple{
      Field{"instruction_id", &M::instruction_id, Uuid{}},
      Field{"destination_kma_id", &M::destination_kma_id, Id{}},
      Field{"transit_kma_ids", &M::transit_kma_ids, Id{}},
      Field{"number_of_keys", &M::number_of_keys, kCount},
      Field{"key_size", &M::key_size, kKeySize},
      Field{"not_before", &M::not_before, Timestamp{}},
      Field{"not_after", &M::not_after, Timestamp{}},
      ExtensionField{&M::extension},
      Field{"controller_epoch", &M::controller_epoch, kEpoch},
  };
};

template <>
struct Spec<RelayInstructionResponse> {
  using M = RelayInstructionResponse;
  static constexpr auto fields = std::tuple{
      Field{"instruction_id", &M::instruction_id, Uuid{}},
      Field{"response", &M::response, ResponseText{}},
      Field{"keys_relayed", &M::keys_relayed, kNonNegativeInt},
  };
};

template <>
struct Spec<KeyRelease> {
  using M = KeyRelease;
  static constexpr auto fields = std::tuple{
      Field{"key_relay_request_id", &M::key_relay_request_id, Uuid{}},
      Field{"next_kma_id", &M::next_kma_id, Id{}},
      Field{"link_id", &M::link_id, Id{}},
      Field{"key_ids", &M::key_ids, NonEmpty<Uuid>{}},
      Field{"disposition", &M::disposition, kDisposition},
      ExtensionField{&M::extension},
      Field{"controller_epoch", &M::controller_epoch, kEpoch},
  };
};

template <>
struct Spec<KeyReleaseResponse> {
  using M = KeyReleaseResponse;
  static constexpr auto fields = std::tuple{
      Field{"key_relay_request_id", &M::key_relay_request_id, Uuid{}},
      Field{"response", &M::response, ResponseText{}},
      Field{"released", &M::released, kNonNegativeInt},
      Field{"discarded", &M::discarded, kNonNegativeInt},
  };
};

template <>
struct Spec<IwnTransferRequest> {
  using M = IwnTransferRequest;
  static constexpr auto fields = std::tuple{
      Field{"transfer_id", &M::transfer_id, Uuid{}},
      Field{"kma_id", &M::kma_id, Id{}},
      Field{"partner_kma_id", &M::partner_kma_id, Id{}},
      Field{"partner_qkdn_id", &M::partner_qkdn_id, Id{}},
      Field{"application_source_id", &M::application_source_id, Id{}},
      Field{"application_destination_id", &M::application_destination_id, Id{}},
      Field{"number_of_keys", &M::number_of_keys, kCount},
      Field{"key_size", &M::key_size, kKeySize},
      Field{"key_ids", &M::key_ids, NonEmpty<Uuid>{}},
      Field{"key_relay_request_id", &M::key_relay_request_id, Uuid{}},
      ExtensionField{&M::extension},
  };
};

template <>
struct Spec<IwnTransferInstruction> {
  using M = IwnTransferInstruction;
  static constexpr auto fields = std::tuple{
      Field{"transfer_id", &M::transfer_id, Uuid{}},
      Field{"response", &M::response, ResponseText{}},
      Field{"partner_kma_id", &M::partner_kma_id, Id{}},
      Field{"key_ids", &M::key_ids, NonEmpty<Uuid>{}},
      ExtensionField{&M::extension},
      Field{"controller_epoch", &M::controller_epoch, kEpoch},
  };
};

template <>
struct Spec<IwnTransferReport> {
  using M = IwnTransferReport;
  static constexpr auto fields = std::tuple{
      Field{"transfer_id", &M::transfer_id, Uuid{}},
      Field{"kma_id", &M::kma_id, Id{}},
      Field{"role", &M::role, kIwnRole},
      Field{"partner_kma_id", &M::partner_kma_id, Id{}},
      Field{"partner_qkdn_id", &M::partner_qkdn_id, Id{}},
      Field{"application_source_id", &M::application_source_id, Id{}},
      Field{"application_destination_id", &M::application_destination_id, Id{}},
      Field{"number_of_keys", &M::number_of_keys, kCount},
      Field{"key_size", &M::key_size, kKeySize},
      Field{"key_ids", &M::key_ids, NonEmpty<Uuid>{}},
      Field{"response", &M::response, ResponseText{}},
      Field{"disposition", &M::disposition, kIwnDisposition},
      ExtensionField{&M::extension},
  };
};

template <>
struct Spec<ApplicationsUpdate> {
  using M = ApplicationsUpdate;
  static constexpr auto fields = std::tuple{
      Field{"kma_id", &M::kma_id, Id{}},
      Field{"attached", &M::attached, Id{}},
      Field{"detached", &M::detached, Id{}},
  };
};

template <>
struct Spec<Heartbeat> {
  using M = Heartbeat;
  static constexpr auto fields = std::tuple{
      Field{"kma_id", &M::kma_id, Id{}},
  };
};

template <>
struct Spec<HeartbeatResponse> {
  static constexpr auto fields = std::tuple{};
};

// `from_km` is not a field: it selects the code (command_of) and is set from it on decode.
template <>
struct Spec<ErrorMessage> {
  using M = ErrorMessage;
  static constexpr auto fields = std::tuple{
      Field{"error", &M::error, kErrorCode},
      Field{"message", &M::message, Text{}},
      Field{"message_id", &M::message_id},
  };
};

// ---- dispatch by variant index -----------------------------------------------------------------

template <std::size_t I>
Message read_alternative(const Reader& r, std::uint16_t code) {
  Message out(std::in_place_index<I>);
  auto& m = std::get<I>(out);
  read_fields(r, m);
  if constexpr (std::is_same_v<std::decay_t<decltype(m)>, ErrorMessage>) {
    m.from_km = code == static_cast<std::uint16_t>(Command::kErrorFromKm);
  }
  return out;
}

template <std::size_t I>
std::vector<FieldInfo> describe_alternative() {
  return describe_fields<std::variant_alternative_t<I, Message>>();
}

using ReadFn = Message (*)(const Reader&, std::uint16_t);
using DescribeFn = std::vector<FieldInfo> (*)();

template <std::size_t... I>
constexpr std::array<ReadFn, sizeof...(I)> readers(std::index_sequence<I...>) {
  return {&read_alternative<I>...};
}
template <std::size_t... I>
constexpr std::array<DescribeFn, sizeof...(I)> describers(std::index_sequence<I...>) {
  return {&describe_alternative<I>...};
}

constexpr auto kAlternatives = std::make_index_sequence<std::variant_size_v<Message>>{};
constexpr auto kReaders = readers(kAlternatives);
constexpr auto kDescribers = describers(kAlternatives);

// The code of each alternative: its first row in kCommands (ErrorMessage: 0x14EF, but command_of
// picks by from_km).
constexpr auto kCodeOf = [] {
  std::array<Command, std::variant_size_v<Message>> out{};
  std::array<bool, std::variant_size_v<Message>> seen{};
  for (const CommandInfo& c : kCommands) {
    if (!seen[c.variant_index]) out[c.variant_index] = c.code;
    seen[c.variant_index] = true;
  }
  return out;
}();

std::string hex16(std::uint16_t v) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string s = "0x";
  for (int shift = 12; shift >= 0; shift -= 4) s += kHex[(v >> shift) & 0xF];
  return s;
}

}  // namespace detail

// ---- command table -----------------------------------------------------------------------------

bool is_known_command(std::uint16_t code) noexcept { return detail::row_of(code) != nullptr; }

std::optional<Direction> direction_of(std::uint16_t code) noexcept {
  // The high byte, for any code (kCommands agrees: static_assert in the header).
  switch (code >> 8) {
    case 0x14:
      return Direction::kKmToController;
    case 0x41:
      return Direction::kControllerToKm;
    default:
      return std::nullopt;
  }
}

std::string_view command_name(std::uint16_t code) noexcept {
  const CommandInfo* c = detail::row_of(code);
  return c != nullptr ? c->name : "unknown";
}

std::optional<Command> response_of(Command c) noexcept {
  const CommandInfo* info = detail::row_of(static_cast<std::uint16_t>(c));
  return info != nullptr ? info->response : std::nullopt;
}

Command command_of(const Message& m) noexcept {
  if (const auto* e = std::get_if<ErrorMessage>(&m)) {
    return e->from_km ? Command::kErrorFromKm : Command::kErrorFromController;
  }
  // A valueless variant (an exception during assignment) has no code; report it as an error.
  if (m.index() >= detail::kCodeOf.size()) return Command::kErrorFromController;
  return detail::kCodeOf[m.index()];
}

std::vector<FieldInfo> payload_fields(std::uint16_t code) {
  const CommandInfo* c = detail::row_of(code);
  if (c == nullptr) return {};
  return detail::kDescribers[c->variant_index]();
}

// ---- payload codec -----------------------------------------------------------------------------

namespace {
// NOLINTNEXTLINE(performance-unnecessary-value-param): the Reject signature of qkdn::json
[[noreturn]] void refuse_payload(std::string message) {
  throw InvalidArgument("payload: invalid JSON (" + message + ")");
}
}  // namespace

DecodeResult decode_payload(std::uint16_t command, std::string_view payload) noexcept {
  namespace json = boost::json;
  try {
    const CommandInfo* info = detail::row_of(command);
    if (info == nullptr) {
      return DecodeError{errc::kUnknownCommand, "unknown command code " + detail::hex16(command)};
    }
    // One arena per call: the DOM and the parser's stack live on this frame's stack for typical
    // payloads, so a decode costs no heap allocation beyond the strings of the result.
    alignas(std::max_align_t) unsigned char arena[8192];
    json::monotonic_resource mr(arena, sizeof arena);
    // The shared strict reader (limits, exact numbers); its refusal is a bad_request below.
    const json::value v = qkdn::json::parse(payload, &mr, detail::kCkJsonLimits, refuse_payload);
    const json::object* obj = v.if_object();
    if (obj == nullptr) return DecodeError{errc::kBadRequest, "payload: expected a JSON object"};
    Message m = detail::kReaders[info->variant_index](detail::Reader(*obj), command);
    validate(m);
    return DecodeResult{std::in_place_index<0>, std::move(m)};
  } catch (const InvalidArgument& e) {
    return DecodeError{errc::kBadRequest, e.what()};
  } catch (const std::exception& e) {
    try {
      return DecodeError{errc::kInternal, e.what()};
    } catch (...) {
      return DecodeError{errc::kInternal, {}};
    }
  } catch (...) {
    return DecodeError{errc::kInternal, {}};
  }
}

void validate(const Message& m) {
  std::visit([](const auto& msg) { detail::check_fields(detail::Scope{}, msg); }, m);
}

std::string encode_payload(const Message& m) {
  validate(m);
  std::string out;
  out.reserve(256);
  std::visit([&out](const auto& msg) { detail::emit_fields(out, msg); }, m);
  return out;
}

// ---- NG extension helpers ----------------------------------------------------------------------

bool is_error_code(std::string_view code) noexcept {
  return detail::one_of(code, detail::kErrorCodes);
}

std::string make_error_extension(std::string_view code, std::string_view message) {
  if (!is_error_code(code)) detail::reject(detail::kw("error"), "not an error code of clause 3");
  if (!detail::utf8_ok(message)) detail::reject(detail::kw("message"), "invalid UTF-8");
  std::string out = "[";
  {
    detail::ObjectWriter w(out);
    w.str("error", code);
    w.str("message", message);
  }
  out += ']';
  return out;
}

namespace {

namespace json = boost::json;

/// f(object) for each object of an extension array until f returns a value; nullopt when none
/// does or the text is not a JSON array. Never throws (allocation failure counts as not found).
template <class T, class F>
std::optional<T> first_extension_object(const Extension& extension, F f) noexcept {
  if (!extension) return std::nullopt;
  try {
    unsigned char buf[2048];
    json::monotonic_resource mr(buf, sizeof buf);
    const json::value v = qkdn::json::parse(*extension, &mr, detail::kCkJsonLimits);
    const json::array* a = v.if_array();
    if (a == nullptr) return std::nullopt;
    for (const json::value& e : *a) {
      const json::object* o = e.if_object();
      if (o == nullptr) continue;
      if (auto found = f(*o)) return found;
    }
  } catch (...) {
    // Not JSON (the reader refused it) or allocation failure: "not found" (a caller of
    // find_error_extension still sees response 1).
  }
  return std::nullopt;
}

}  // namespace

std::optional<std::string> find_extension_string(const Extension& extension,
                                                 std::string_view name) noexcept {
  return first_extension_object<std::string>(
      extension, [name](const json::object& o) -> std::optional<std::string> {
        const json::value* m = o.if_contains(name);
        if (m == nullptr || !m->is_string()) return std::nullopt;
        return std::string(m->get_string());
      });
}

std::vector<std::string> find_extension_strings(const Extension& extension,
                                                std::string_view name) noexcept {
  try {
    auto found = first_extension_object<std::vector<std::string>>(
        extension, [name](const json::object& o) -> std::optional<std::vector<std::string>> {
          const json::value* m = o.if_contains(name);
          if (m == nullptr || !m->is_array()) return std::nullopt;
          std::vector<std::string> out;
          for (const auto& e : m->get_array()) {
            if (out.size() >= 256) break;
            if (e.is_string()) out.emplace_back(e.get_string());
          }
          return out;
        });
    return found ? std::move(*found) : std::vector<std::string>{};
  } catch (...) {  // allocation failure: no strings
    return {};
  }
}

std::string make_extension_string(std::string_view name, std::string_view value) {
  json::array a;
  a.emplace_back(json::object{{name, value}});
  return json::serialize(a);
}

std::optional<ExtensionError> find_error_extension(const Extension& extension) noexcept {
  return first_extension_object<ExtensionError>(
      extension, [](const json::object& o) -> std::optional<ExtensionError> {
        const json::value* err = o.if_contains("error");
        if (err == nullptr || !err->is_string()) return std::nullopt;
        ExtensionError out;
        out.error = std::string(err->get_string());
        if (const json::value* msg = o.if_contains("message"); msg != nullptr && msg->is_string()) {
          out.message = std::string(msg->get_string());
        }
        return out;
      });
}

// ---- errors -----------------------------------------------------------------------------------

ErrorCode errc::category(std::string_view code) noexcept {
  struct Row {
    std::string_view code;
    ErrorCode category;
  };
  static constexpr Row kTable[] = {
      {kBadRequest, ErrorCode::kInvalidArgument},
      {kUnknownCommand, ErrorCode::kInvalidArgument},
      {kUnsupportedVersion, ErrorCode::kInvalidArgument},
      {kNotRegistered, ErrorCode::kConflict},
      {kUnknownKma, ErrorCode::kNotFound},
      {kUnknownApplication, ErrorCode::kNotFound},
      {kUnknownKey, ErrorCode::kNotFound},
      {kNoRoute, ErrorCode::kUnavailable},
      {kInsufficientKeys, ErrorCode::kUnavailable},
      {kTimeout, ErrorCode::kUnavailable},
      {kBusy, ErrorCode::kUnavailable},
      {kReservationExpired, ErrorCode::kConflict},
      {kStaleEpoch, ErrorCode::kConflict},
      {kInternal, ErrorCode::kInternal},
  };
  for (const auto& r : kTable) {
    if (r.code == code) return r.category;
  }
  return ErrorCode::kInternal;
}

Error error(std::string_view code, const std::string& message) {
  return Error(errc::category(code), message, code);
}

Error error_of(const std::exception& e) {
  if (const auto* qe = dynamic_cast<const Error*>(&e)) return *qe;
  return error(errc::kInternal, e.what());
}

}  // namespace qkdn::southbound::ck
