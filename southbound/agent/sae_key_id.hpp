// Internal: ETSI GS QKD 014 key_IDs that name the SAE pair they were issued to. Pure code.
//
// A key_ID is a UUID (version 4, RFC 4122 variant) made of
//   bytes 0..7   the first 8 bytes of the key's first 256-bit unit ID (random; both KMs of the
//                pair hold that unit, so both derive the same key_ID),
//   bytes 8..11  the first 4 bytes of SHA-256("qkdn-etsi-master" || bytes 0..7 || master SAE),
//                with the variant bits set,
//   bytes 12..15 the first 4 bytes of SHA-256("qkdn-etsi-slave" || bytes 0..7 || slave SAE).
// Any KME can therefore tell, from the key_ID alone, whether a dec_keys caller asks for keys that
// were issued to another SAE pair (401), even when those keys live in another agent process,
// without keeping any state: a random UUID almost never names a pair of known SAEs. The tags
// are not secret and grant nothing: keys are released only to the pair stored with them.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "qkdn/agent/key_store.hpp"

namespace qkdn::agent {

/// The key_ID of the key whose first unit is `first_unit`, issued by `master_sae` to
/// `slave_sae` (canonical lower-case UUID text).
std::string etsi_key_id(const KeyId& first_unit, std::string_view master_sae,
                        std::string_view slave_sae);

/// Whom a key_ID names.
enum class KeyIdOwner {
  kThisPair,   ///< issued by `master_sae` to `slave_sae`
  kOtherPair,  ///< issued by one of `known_saes` to someone else (or by someone else)
  kUnknown,    ///< not a key_ID of this scheme for any known SAE (e.g. a random UUID)
};

/// Classifies `key_id` for a dec_keys call by `slave_sae` naming `master_sae`. `known_saes` are
/// the SAEs of the network (the topology's applications); the cost is one hash per known SAE
/// for a key_ID that does not name this pair.
KeyIdOwner classify_key_id(const std::string& key_id, std::string_view master_sae,
                           std::string_view slave_sae, const std::vector<std::string>& known_saes);

}  // namespace qkdn::agent
