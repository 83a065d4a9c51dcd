// The topology document (docs/topology.md) to and from JSON.
#pragma once

#include <string>
#include <string_view>

#include "qkdn/controller/topology.hpp"

namespace qkdn::southbound {

/// Parses a topology document. Unknown fields are rejected when `strict` (operator writes), and
/// ignored otherwise. Runs validate_topology. Throws InvalidArgument with the JSON path of the
/// first problem ("links[2].key_rate_bps: expected number").
controller::TopologyDoc parse_topology(std::string_view json, bool strict = false);
/// Reads and parses a topology file; throws InvalidArgument (unreadable file or bad content).
controller::TopologyDoc load_topology_file(const std::string& path, bool strict = false);
/// Serializes a topology document (pretty = indented for people).
std::string serialize_topology(const controller::TopologyDoc& doc, bool pretty = false);

}  // namespace qkdn::southbound
