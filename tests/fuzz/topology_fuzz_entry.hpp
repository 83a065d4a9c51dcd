// Fuzz entry for the topology document (southbound/src/topology_json.cpp, validated by
// controller/core/topology.cpp): the operator's PUT /api/v1/topology body and the --topology
// file. Parsing either throws a qkdn::Error or gives a document; a document that validates
// serializes and parses back to the same document.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "fuzz_check.hpp"
#include "qkdn/controller/error.hpp"
#include "qkdn/controller/topology.hpp"
#include "qkdn/southbound/topology_json.hpp"

namespace qkdn::fuzz {

inline bool same_doc(const controller::TopologyDoc& a, const controller::TopologyDoc& b) {
  return southbound::serialize_topology(a) == southbound::serialize_topology(b);
}

/// One input. Returns 1 when the document parsed and validated.
inline int topology_fuzz_one(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const bool strict = (data[0] & 1) != 0;
  const std::string_view text(reinterpret_cast<const char*>(data) + 1, size - 1);
  controller::TopologyDoc doc;
  try {
    doc = southbound::parse_topology(text, strict);
    controller::validate_topology(doc);
  } catch (const Error&) {
    return 0;
  }
  controller::TopologyDoc again;
  try {
    again = southbound::parse_topology(southbound::serialize_topology(doc), true);
    controller::validate_topology(again);
  } catch (const Error&) {
    violated("topology", "a valid document does not survive serialize and parse");
  }
  if (!same_doc(doc, again)) violated("topology", "round trip changed the document");
  return 1;
}

}  // namespace qkdn::fuzz
