#include "qkdn/controller/topology.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>

#include "qkdn/controller/error.hpp"

namespace qkdn::controller {
namespace {

TopologyDoc sample() {
  TopologyDoc d;
  d.name = "metro";
  d.kms = {{"KM1", "A"}, {"KM2", "B"}, {"KM3", "C"}};
  d.links = {{"L12", "KM1", "KM2", 50000, 12.5, 0.02},
             {"L23", "KM2", "KM3", 1000, 80, 0.03},
             {"L12b", "KM2", "KM1", 0, 0, 0}};
  d.applications = {{"SAE-A", "KM1"}, {"SAE-C", "KM3"}};
  return d;
}

// Expects validate_topology to throw InvalidArgument with exactly this message.
void expect_invalid(const TopologyDoc& d, const std::string& message) {
  try {
    validate_topology(d);
    ADD_FAILURE() << "no error, expected: " << message;
  } catch (const InvalidArgument& e) {
    EXPECT_EQ(std::string(e.what()), message);
  }
}

TopologyDoc with(const std::function<void(TopologyDoc&)>& edit) {
  TopologyDoc d = sample();
  edit(d);
  return d;
}

// A consistent document, parallel links and an empty document pass.
TEST(ValidateTopology, AcceptsValid) {
  EXPECT_NO_THROW(validate_topology(sample()));
  EXPECT_NO_THROW(validate_topology(TopologyDoc{}));
}

// KM IDs must be present, well-formed and unique.
TEST(ValidateTopology, KmIds) {
  expect_invalid(with([](TopologyDoc& d) { d.kms[1].km_id = ""; }), "kms[1].km_id: missing KM ID");
  expect_invalid(with([](TopologyDoc& d) { d.kms[2].km_id = "bad id"; }),
                 "kms[2].km_id: invalid KM ID 'bad id' (1..128 of [A-Za-z0-9._:-])");
  expect_invalid(with([](TopologyDoc& d) { d.kms[2].km_id = "KM1"; }),
                 "kms[2].km_id: duplicate KM ID 'KM1' (first at kms[0].km_id)");
}

// Site coordinates are optional, but come in pairs and in range.
TEST(ValidateTopology, KmCoordinates) {
  EXPECT_NO_THROW(validate_topology(with([](TopologyDoc& d) {
    d.kms[0].lat = -90;
    d.kms[0].lon = 180;
    d.kms[1].lat = 52.52;
    d.kms[1].lon = 13.39;
  })));
  expect_invalid(with([](TopologyDoc& d) { d.kms[1].lat = 50; }),
                 "kms[1].lon: missing (site coordinates need both lat and lon)");
  expect_invalid(with([](TopologyDoc& d) { d.kms[2].lon = 5; }),
                 "kms[2].lat: missing (site coordinates need both lat and lon)");
  expect_invalid(with([](TopologyDoc& d) {
                   d.kms[0].lat = 90.5;
                   d.kms[0].lon = 0;
                 }),
                 "kms[0].lat: must be in [-90, 90]");
  expect_invalid(with([](TopologyDoc& d) {
                   d.kms[0].lat = 0;
                   d.kms[0].lon = std::numeric_limits<double>::quiet_NaN();
                 }),
                 "kms[0].lon: must be in [-180, 180]");
}

// Link IDs must be present, well-formed and unique.
TEST(ValidateTopology, LinkIds) {
  expect_invalid(with([](TopologyDoc& d) { d.links[0].link_id = ""; }),
                 "links[0].link_id: missing link ID");
  expect_invalid(with([](TopologyDoc& d) { d.links[1].link_id = std::string(129, 'x'); }),
                 "links[1].link_id: invalid link ID '" + std::string(129, 'x') +
                     "' (1..128 of [A-Za-z0-9._:-])");
  expect_invalid(with([](TopologyDoc& d) { d.links[2].link_id = "L12"; }),
                 "links[2].link_id: duplicate link ID 'L12' (first at links[0].link_id)");
}

// Link ends must be two distinct known KMs.
TEST(ValidateTopology, LinkEnds) {
  expect_invalid(with([](TopologyDoc& d) { d.links[1].a = "KM9"; }),
                 "links[1].a: unknown KM 'KM9'");
  expect_invalid(with([](TopologyDoc& d) { d.links[2].b = "X"; }), "links[2].b: unknown KM 'X'");
  expect_invalid(with([](TopologyDoc& d) { d.links[0].b = "KM1"; }),
                 "links[0].b: link joins KM 'KM1' to itself");
}

// Rates and distances are finite and non-negative; QBER is in [0, 1].
TEST(ValidateTopology, LinkNumbers) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  expect_invalid(with([](TopologyDoc& d) { d.links[0].key_rate_bps = -1; }),
                 "links[0].key_rate_bps: must be a finite number >= 0");
  expect_invalid(with([&](TopologyDoc& d) { d.links[1].key_rate_bps = inf; }),
                 "links[1].key_rate_bps: must be a finite number >= 0");
  expect_invalid(with([&](TopologyDoc& d) { d.links[0].distance_km = nan; }),
                 "links[0].distance_km: must be a finite number >= 0");
  expect_invalid(with([](TopologyDoc& d) { d.links[0].distance_km = -0.5; }),
                 "links[0].distance_km: must be a finite number >= 0");
  expect_invalid(with([](TopologyDoc& d) { d.links[2].qber = 1.01; }),
                 "links[2].qber: must be in [0, 1]");
  expect_invalid(with([](TopologyDoc& d) { d.links[2].qber = -0.01; }),
                 "links[2].qber: must be in [0, 1]");
  expect_invalid(with([&](TopologyDoc& d) { d.links[2].qber = nan; }),
                 "links[2].qber: must be in [0, 1]");
  EXPECT_NO_THROW(validate_topology(with([](TopologyDoc& d) { d.links[2].qber = 1; })));
}

// Applications have valid unique SAE IDs on known KMs.
TEST(ValidateTopology, Applications) {
  expect_invalid(with([](TopologyDoc& d) { d.applications[0].sae_id = ""; }),
                 "applications[0].sae_id: missing SAE ID");
  expect_invalid(with([](TopologyDoc& d) { d.applications[0].sae_id = "SAE A"; }),
                 "applications[0].sae_id: invalid SAE ID 'SAE A' (1..128 of [A-Za-z0-9._:-])");
  expect_invalid(with([](TopologyDoc& d) { d.applications[1].sae_id = "SAE-A"; }),
                 "applications[1].sae_id: duplicate SAE ID 'SAE-A' (first at "
                 "applications[0].sae_id)");
  expect_invalid(with([](TopologyDoc& d) { d.applications[1].km_id = "KM7"; }),
                 "applications[1].km_id: unknown KM 'KM7'");
}

// The first offending element is the one reported (KMs, then links, then applications).
TEST(ValidateTopology, ReportsFirstError) {
  expect_invalid(with([](TopologyDoc& d) {
                   d.kms[0].km_id = "";
                   d.links[0].a = "nope";
                 }),
                 "kms[0].km_id: missing KM ID");
  expect_invalid(with([](TopologyDoc& d) {
                   d.links[1].qber = 2;
                   d.links[2].a = "nope";
                   d.applications[0].km_id = "nope";
                 }),
                 "links[1].qber: must be in [0, 1]");
}

}  // namespace
}  // namespace qkdn::controller
