#include "qkdn/controller/error.hpp"

#include <gtest/gtest.h>

namespace qkdn {
namespace {

// Every error code maps to its HTTP status, its name and a Ck code of ck-protocol.md clause 3.
TEST(Error, CodesMapToWire) {
  EXPECT_EQ(error_http_status(ErrorCode::kInvalidArgument), 400);
  EXPECT_EQ(error_http_status(ErrorCode::kNotFound), 404);
  EXPECT_EQ(error_http_status(ErrorCode::kConflict), 409);
  EXPECT_EQ(error_http_status(ErrorCode::kUnavailable), 503);
  EXPECT_EQ(error_http_status(ErrorCode::kInternal), 500);
  EXPECT_EQ(error_name(ErrorCode::kInvalidArgument), "invalid_argument");
  EXPECT_EQ(error_name(ErrorCode::kNotFound), "not_found");
  EXPECT_EQ(error_name(ErrorCode::kConflict), "conflict");
  EXPECT_EQ(error_name(ErrorCode::kUnavailable), "unavailable");
  EXPECT_EQ(error_name(ErrorCode::kInternal), "internal");
  EXPECT_EQ(error_ck_code(ErrorCode::kInvalidArgument), "bad_request");
  EXPECT_EQ(error_ck_code(ErrorCode::kNotFound), "unknown_kma");
  EXPECT_EQ(error_ck_code(ErrorCode::kInternal), "internal");
}

// Subclasses carry their code and message and are catchable as qkdn::Error.
TEST(Error, SubclassesCarryCode) {
  try {
    throw NotFound("KM 'X' not found");
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kNotFound);
    EXPECT_STREQ(e.what(), "KM 'X' not found");
  }
  EXPECT_EQ(Conflict("c").code(), ErrorCode::kConflict);
  EXPECT_EQ(Unavailable("u").code(), ErrorCode::kUnavailable);
  EXPECT_EQ(Internal("i").code(), ErrorCode::kInternal);
  EXPECT_EQ(InvalidArgument("a").code(), ErrorCode::kInvalidArgument);
}

}  // namespace
}  // namespace qkdn
