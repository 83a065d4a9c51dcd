// The shared strict JSON reader (qkdn/json/reader.hpp): limits, field paths, unknown fields,
// and that refusals go through the caller's Reject.
#include <gtest/gtest.h>

#include <cstdlib>
#include <functional>
#include <string>

#include <boost/json/monotonic_resource.hpp>
#include <boost/json/serialize.hpp>

#include "qkdn/base/error.hpp"
#include "qkdn/json/reader.hpp"

namespace {

using qkdn::InvalidArgument;
namespace qj = qkdn::json;

std::string refusal(const std::function<void()>& f) {
  try {
    f();
  } catch (const InvalidArgument& e) {
    return e.what();
  }
  return "(accepted)";
}

// Size, depth and syntax limits of parse(); the top-level type of parse_object().
TEST(JsonReader, ParseLimits) {
  qj::ParseLimits small;
  small.max_bytes = 8;
  EXPECT_EQ(refusal([&] { qj::parse("[1,2,3,4,5]", small); }), "JSON larger than 8 bytes");
  qj::ParseLimits shallow;
  shallow.max_depth = 3;
  EXPECT_NO_THROW(qj::parse("[[[1]]]", shallow));
  EXPECT_EQ(refusal([&] { qj::parse("[[[[1]]]]", shallow); }), "JSON nested deeper than 3");
  EXPECT_EQ(refusal([] { qj::parse("{\"a\":1,}"); }).rfind("malformed JSON: ", 0), 0u);
  EXPECT_EQ(refusal([] { qj::parse_object("[1]", "the body"); }), "the body must be a JSON object");
}

// Mandatory fields are required (never "" or 0), types and ranges are checked, paths named.
TEST(JsonReader, FieldsAreStrict) {
  const auto o = qj::parse_object(
      R"({"id":"K1","n":5,"big":-1,"ok":true,"ids":["a","b"],"sub":{"x":1}})", "message");
  qj::ObjectReader r(o, "relay");
  EXPECT_EQ(r.string("id", 8), "K1");
  EXPECT_EQ(r.integer("n", 1, 10), 5);
  EXPECT_TRUE(r.boolean("ok"));
  EXPECT_EQ(r.string_array("ids", 4).size(), 2u);
  EXPECT_EQ(refusal([&] { r.integer("big", 0, 10); }), "field 'relay.big': -1 is outside [0, 10]");
  EXPECT_EQ(refusal([&] { r.string("missing"); }), "field 'relay.missing' is required");
  EXPECT_EQ(refusal([&] { r.integer("absent", 0, 1); }), "field 'relay.absent' is required");
  EXPECT_EQ(refusal([&] { r.string("n"); }), "field 'relay.n': expected string");
  EXPECT_EQ(refusal([&] { r.string_array("ids", 1); }), "field 'relay.ids': more than 1 items");
  EXPECT_EQ(refusal([&] { r.string("id", 1); }), "field 'relay.id': expected 1 to 1 characters");
  EXPECT_EQ(refusal([&] { r.finish(); }), "unknown field 'relay.sub'");
  EXPECT_NE(r.opt_object("sub"), nullptr);
  EXPECT_NO_THROW(r.finish());
}

// Each caller keeps its own error kind: the Reject decides what is thrown.
struct Refused {
  std::string message;
};
void reject_as_refused(std::string message) { throw Refused{std::move(message)}; }

TEST(JsonReader, CallerChoosesTheError) {
  const auto o = qj::parse_object(R"({"a":"x"})", "m");
  qj::ObjectReader r(o, {}, reject_as_refused);
  try {
    r.opt_uint("a");
    FAIL() << "accepted a string as an integer";
  } catch (const Refused& e) {
    EXPECT_EQ(e.message, "field 'a': expected a non-negative integer");
  }
  try {
    qj::parse("nope", {}, reject_as_refused);
    FAIL() << "accepted malformed JSON";
  } catch (const Refused& e) {
    EXPECT_EQ(e.message.rfind("malformed JSON", 0), 0u);
  }
}

// Boost.JSON 1.81 rounds decimals beyond its exact fast path (found by fuzz_topology: a
// key_rate_bps of 51 digits did not survive serialize and parse). Every double must read back as
// itself from its shortest round-trip text, and a long literal as its correctly rounded value.
TEST(JsonReader, NumbersReadExactly) {
  const double samples[] = {1.0000555555555556e49,
                            0.1,
                            0.03,
                            1e23,
                            9007199254740993.0,
                            5e-324,
                            1.7976931348623157e308,
                            123456.789e-30,
                            2.2250738585072014e-308};
  for (double d : samples) {
    const std::string text = boost::json::serialize(boost::json::value(d));
    const auto v = qkdn::json::parse(text);
    ASSERT_TRUE(v.is_double()) << text;
    EXPECT_EQ(v.as_double(), d) << text;
  }
  // glibc's strtod rounds correctly: the oracle for long literals.
  const char* const literals[] = {"10000555555555555555555555555555555555555555555550",
                                  "0.30000000000000004", "7.0000000000000000000000001e-200",
                                  "18446744073709551616", "-123456789012345678901234567890.5"};
  for (const char* lit : literals) {
    const auto v = qkdn::json::parse(std::string("[") + lit + "]");
    EXPECT_EQ(v.as_array()[0].as_double(), std::strtod(lit, nullptr)) << lit;
  }
}

TEST(JsonReader, RefusesTrailingData) {
  EXPECT_THROW(qkdn::json::parse("{} {}"), qkdn::InvalidArgument);
  EXPECT_THROW(qkdn::json::parse("1 x"), qkdn::InvalidArgument);
  EXPECT_NO_THROW(qkdn::json::parse(" {} \n"));
}

// The storage overload puts the whole value in the caller's resource (the Ck codec's stack
// arena), with the same limits and the same exact numbers.
TEST(JsonReader, ParseIntoCallersStorage) {
  alignas(std::max_align_t) unsigned char arena[4096];
  boost::json::monotonic_resource mr(arena, sizeof arena);
  const auto v =
      qkdn::json::parse(R"({"a":[1,"two",{"c":1e23}],"b":"a string longer than the SSO"})", &mr);
  EXPECT_EQ(v.storage().get(), &mr);
  EXPECT_EQ(v.as_object().storage().get(), &mr);
  EXPECT_EQ(v.at("a").as_array()[2].at("c").as_double(), 1e23);
  EXPECT_EQ(v.at("b").as_string(), "a string longer than the SSO");
  qj::ParseLimits shallow;
  shallow.max_depth = 2;
  EXPECT_EQ(refusal([&] { qkdn::json::parse("[[[1]]]", &mr, shallow); }),
            "JSON nested deeper than 2");
  EXPECT_EQ(refusal([&] { qkdn::json::parse("{", &mr); }).rfind("malformed JSON: ", 0), 0u);
}

}  // namespace
