// The topology document (docs/topology.md) to and from JSON.
#pragma once

#include <string>
#include <string_view>

#include <boost/json/object.hpp>

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

/// One peer controller / inter-QKDN link of the document, read from and written to JSON (the
/// REST API's POST bodies and GET entries). Parsing checks field types (and unknown fields when
/// `strict`) and the bounds of lists, not the document-wide rules: validate_interworking does
/// those once the element is in a document. Errors are InvalidArgument prefixed with `path`.
controller::PeerSpec parse_peer(const boost::json::object& obj, const std::string& path,
                                bool strict);
boost::json::object peer_to_json(const controller::PeerSpec& peer);
controller::InterQkdnLinkSpec parse_inter_qkdn_link(const boost::json::object& obj,
                                                    const std::string& path, bool strict);
boost::json::object inter_qkdn_link_to_json(const controller::InterQkdnLinkSpec& link);

}  // namespace qkdn::southbound
