// Internal: the KMA Relay / RelayAck frames of key_supply.cpp, for the distributed relay
// (distributed_relay.cpp), which builds the same frames hop by hop.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <boost/json/object.hpp>

#include "qkdn/agent/key_store.hpp"

namespace qkdn::agent {

/// A whole Relay frame for the hop from -> to: `plaintext` (the end-to-end units) encrypted
/// under `pad` (the hop keys' bytes, relay_pad) as the metadata's "encryption" says, with the
/// hop's HMAC tag. Both buffers are wiped.
std::string encode_relay_frame(boost::json::object meta, const std::string& from,
                               const std::string& to, std::vector<std::uint8_t> plaintext,
                               std::vector<std::uint8_t> pad);
/// A RelayAck frame {"key_relay_request_id", "response"}.
std::string encode_relay_ack(const std::string& request_id, const std::string& response);
/// The one-time pad of a hop: the hop keys' bytes in order.
std::vector<std::uint8_t> relay_pad(const std::vector<KeyBlock>& keys);

}  // namespace qkdn::agent
