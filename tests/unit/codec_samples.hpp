// Valid Ck payloads, one per command code with every optional field present: the seeds of the
// codec unit tests, the fuzz corpus and the codec benchmark.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace qkdn::southbound::ck::testing {

inline const std::string kUuid1 = "0b5c1a52-7d0e-4c39-9a51-3f1f3b7f0a11";
inline const std::string kUuid2 = "6f1d1c3e-2a4b-4c5d-8e6f-7a8b9c0d1e2f";
inline const std::string kUuid3 = "a3bb189e-8bf9-3888-9912-ace4e6543002";

/// One command code and a payload that decodes.
struct Sample {
  std::uint16_t command;
  std::string json;
};

/// Every command of ck-protocol.md clause 4, all fields present (canonical compact JSON, so
/// re-encoding the decoded message gives the same JSON value).
inline std::vector<Sample> all_samples() {
  const std::string u1 = "\"" + kUuid1 + "\"";
  const std::string u2 = "\"" + kUuid2 + "\"";
  const std::string u3 = "\"" + kUuid3 + "\"";
  const std::string ext = R"("extension":[{"vendor":"acme","n":1}])";
  return {
      {0x1401,
       R"({"source_kma_id":"KM1","destination_kma_id":"KM5","application_destination_id":"SAE-B",)" +
           ext + "}"},
      {0x4102,
       R"({"source_kma_id":"KM1","destination_kma_id":"KM5","next_kma_ids":["KM2","KM3"],)" + ext +
           R"(,"controller_epoch":3})"},
      {0x1403,
       R"({"source_kma_id":"KM1","destination_kma_id":"KM5","application_destination_id":"SAE-B",)"
       R"("number_of_keys":4,"key_size":256,)" +
           ext + "}"},
      {0x4104,
       R"({"source_kma_id":"KM1","destination_kma_id":"KM5","transit_kma_ids":["KM2","KM4"],)"
       R"("key_relay_request_id":)" +
           u1 +
           R"(,"notification_message_id":17,"extension":[{"hop_keys":[{"kma_id":"KM1",)"
           R"("next_kma_id":"KM2","link_id":"L12","key_ids":[)" +
           u2 + "," + u3 + R"(]}]},{"vendor":"acme"}],"controller_epoch":3})"},
      {0x1405, R"({"response":"OK","key_relay_request_id":)" + u1 + "," + ext + "}"},
      {0x1406, R"({"application_source_id":"SAE-A","application_destination_id":"SAE-B",)"
               R"("number_of_keys":10,)" +
                   ext + "}"},
      {0x4107, R"({"session_id":)" + u1 + R"(,"response":"OK","destination_km_id":"KM5",)" + ext +
                   R"(,"controller_epoch":3})"},
      {0x4108, R"({"application_source_id":"SAE-A","application_destination_id":"SAE-B",)"
               R"("session_id":)" +
                   u1 + R"(,"source_km_id":"KM1","number_of_keys":10,)" + ext +
                   R"(,"controller_epoch":3})"},
      {0x1409, R"({"session_id":)" + u1 + R"(,"response":"NG: no such application",)" + ext + "}"},
      {0x410A,
       R"({"source_kma_id":"KM1","destination_kma_id":"KM5","application_destination_id":"SAE-B",)"
       R"("number_of_keys":4,"next_kma_id":"KM2","link_id":"L12","key_relay_request_id":)" +
           u1 + "," + ext + R"(,"controller_epoch":3})"},
      {0x140B,
       R"({"source_kma_id":"KM1","destination_kma_id":"KM5","application_destination_id":"SAE-B",)"
       R"("next_kma_id":"KM2","link_id":"L12","key_ids":[)" +
           u2 + "," + u3 + R"(],"response":0,)" + ext + "}"},
      {0x410C,
       R"({"source_kma_id":"KM1","destination_kma_id":"KM5","application_destination_id":"SAE-B",)"
       R"("next_kma_id":"KM2","link_id":"L12","key_relay_request_id":)" +
           u1 + R"(,"key_ids":[)" + u2 + "," + u3 + "]," + ext + R"(,"controller_epoch":3})"},
      {0x140D,
       R"({"source_kma_id":"KM1","destination_kma_id":"KM5","application_destination_id":"SAE-B",)"
       R"("next_kma_id":"KM2","link_id":"L12","key_ids":[)" +
           u2 + "," + u3 + R"(],"response":1,)" + ext + "}"},
      {0x14E1, R"({"km_id":"KM1","kma_id":"KM1","ksa_id":"KSA1","kma_endpoint":"km1.example:7001",)"
               R"("links":[{"link_id":"L12","peer_kma_id":"KM2"}],"applications":["SAE-A"],)"
               R"("software":"qkdn-agent 0.1"})"},
      {0x41E2, R"({"response":"OK","controller_id":"ctl-1","controller_epoch":3,)"
               R"("heartbeat_interval_ms":1000,"status_interval_ms":5000,)"
               R"("peers":[{"kma_id":"KM2","kma_endpoint":"10.0.0.2:7001"}],"retry_after_ms":1500,)"
               R"("relay_routing":"distributed"})"},
      {0x14E3,
       R"({"kma_id":"KM1","timestamp":"2026-11-22T10:00:00.123Z","links":[{"link_id":"L12",)"
       R"("peer_kma_id":"KM2","state":"up","stored_keys":100,"stored_key_bits":25600,)"
       R"("key_rate_bps":1500.5,"consumption_rate_bps":200,"qber":0.021}]})"},
      {0x14E4, R"({"kma_id":"KM1","alarm":"qber_high","link_id":"L12","severity":"major",)"
               R"("value":0.11,"text":"QBER above threshold","timestamp":"2026-11-22T10:00:00Z"})"},
      {0x41E5, R"({"instruction_id":)" + u1 +
                   R"(,"destination_kma_id":"KM5","transit_kma_ids":["KM2"],"number_of_keys":8,)"
                   R"("key_size":256,"not_before":"2026-11-22T10:00:00Z",)"
                   R"("not_after":"2026-11-22T10:05:00+01:00",)" +
                   ext + R"(,"controller_epoch":3})"},
      {0x14E6, R"({"instruction_id":)" + u1 + R"(,"response":"OK","keys_relayed":8})"},
      {0x14E7, R"({"kma_id":"KM1","attached":["SAE-A"],"detached":["SAE-C"]})"},
      {0x14E8, R"({"kma_id":"KM1"})"},
      {0x41E9, R"({})"},
      {0x41EA, R"({"key_relay_request_id":)" + u1 +
                   R"(,"next_kma_id":"KM2","link_id":"L12","key_ids":[)" + u2 + "," + u1 +
                   R"(],"disposition":"discard",)" + ext + R"(,"controller_epoch":3})"},
      {0x14EB,
       R"({"key_relay_request_id":)" + u1 + R"(,"response":"OK","released":1,"discarded":2})"},
      {0x14F0,
       R"({"transfer_id":)" + u1 +
           R"(,"kma_id":"IWN-A","partner_kma_id":"IWN-B",)"
           R"("partner_qkdn_id":"QKDN-B","application_source_id":"SAE-A",)"
           R"("application_destination_id":"SAE-B","number_of_keys":2,"key_size":256,"key_ids":[)" +
           u2 + "," + u3 + R"(],"key_relay_request_id":)" + u1 + "," + ext + "}"},
      {0x41F1, R"({"transfer_id":)" + u1 +
                   R"(,"response":"OK","partner_kma_id":"IWN-B",)"
                   R"("key_ids":[)" +
                   u2 + "," + u3 + "]," + ext + R"(,"controller_epoch":3})"},
      {0x14F2,
       R"({"transfer_id":)" + u1 +
           R"(,"kma_id":"IWN-A","role":"sender","partner_kma_id":"IWN-B",)"
           R"("partner_qkdn_id":"QKDN-B","application_source_id":"SAE-A",)"
           R"("application_destination_id":"SAE-B","number_of_keys":2,"key_size":256,"key_ids":[)" +
           u2 + "," + u3 + R"(],"response":"OK","disposition":"deleted",)" + ext + "}"},
      {0x14EF, R"({"error":"bad_request","message":"links: expected array","message_id":42})"},
      {0x41EF, R"({"error":"not_registered","message":"register first","message_id":1})"},
  };
}

}  // namespace qkdn::southbound::ck::testing
