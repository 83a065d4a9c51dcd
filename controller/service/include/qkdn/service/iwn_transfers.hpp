// Interworking key transfer through an IWN (Y.3818 9.2 1, docs/kxi.md and docs/ck-extensions.md
// "Interworking key transfer"): the controller decides on the transfers its IWN KMs ask for
// (0x14F0 -> 0x41F1) and records the transfers its KMs report (0x14F2): metrics and audit
// records (action "iwn_transfer", stored with the audit trail when a store is configured). Only
// metadata reaches the controller: key IDs, counts, SAE and KM IDs, never key bytes.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "qkdn/service/controller_service.hpp"

namespace qkdn::service {

/// The controller's policy for one of its IWN KMs ("policy-based control function").
struct IwnPolicyPair {
  std::string km_id;          ///< the IWN KM of this QKDN
  std::string partner_km_id;  ///< its partner KM in the other QKDN
  std::string partner_qkdn_id;
  std::vector<std::string> allowed_saes;  ///< SAEs of the partner QKDN keys may go to
  std::int64_t max_keys_per_transfer = 1024;
  double max_keys_per_s = 0;       ///< key rate share of the IWN; 0 = unbounded
  std::size_t max_in_flight = 16;  ///< transfers decided and not yet reported
};

/// Reads the --iwn-policy document {"pairs":[{km_id, partner_km_id, partner_qkdn_id,
/// allowed_saes, max_keys_per_transfer?, max_keys_per_s?, max_in_flight?}]} strictly; throws
/// InvalidArgument naming the path of the first problem.
std::vector<IwnPolicyPair> parse_iwn_policy(std::string_view text);

/// Handles 0x14F0 and 0x14F2 and hands every other command to `next` (the key-supply handler,
/// may be null). Its state lives on the service's core strand.
std::shared_ptr<CommandHandler> make_iwn_transfer_handler(std::shared_ptr<CommandHandler> next,
                                                          std::vector<IwnPolicyPair> policy);

}  // namespace qkdn::service
