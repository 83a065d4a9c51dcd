// Internal: Y.3803 Table 1 (1) QKD-key metadata of the link keys an SAE delivery consumed
// (DeliveryRecord::QkdKeys; docs/hybrid.md "Y.3803 Table 1 key metadata").
#pragma once

#include <vector>

#include "qkdn/agent/agent.hpp"
#include "qkdn/agent/key_store.hpp"

namespace qkdn::agent {

/// The metadata of `keys`, taken from `store` (in the order they were taken): link, module IDs,
/// count, length, first ID, generation interval (the union of the keys' intervals) and the hash
/// SHA-256("qkdn-qkd-key-hash-v1" || key bytes in order), in hex. No key bytes.
DeliveryRecord::QkdKeys qkd_key_metadata(const KeyStore& store, const std::vector<KeyBlock>& keys);

}  // namespace qkdn::agent
