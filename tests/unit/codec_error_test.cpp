// The one error type on Ck: a Ck error code is carried by qkdn::Error (wire code) with its
// category from one table (ck::errc::category), and read back by error_ck_code(const Error&).
#include <stdexcept>
#include <string>

#include <gtest/gtest.h>

#include "qkdn/southbound/ck_messages.hpp"

namespace qkdn::southbound::ck {
namespace {

TEST(CkError, EveryCodeKeepsItsWireCodeAndCategory) {
  struct Row {
    std::string_view code;
    ErrorCode category;
    int http;
  };
  const Row rows[] = {
      {errc::kBadRequest, ErrorCode::kInvalidArgument, 400},
      {errc::kUnknownCommand, ErrorCode::kInvalidArgument, 400},
      {errc::kUnsupportedVersion, ErrorCode::kInvalidArgument, 400},
      {errc::kNotRegistered, ErrorCode::kConflict, 409},
      {errc::kUnknownKma, ErrorCode::kNotFound, 404},
      {errc::kUnknownApplication, ErrorCode::kNotFound, 404},
      {errc::kUnknownKey, ErrorCode::kNotFound, 404},
      {errc::kNoRoute, ErrorCode::kUnavailable, 503},
      {errc::kInsufficientKeys, ErrorCode::kUnavailable, 503},
      {errc::kTimeout, ErrorCode::kUnavailable, 503},
      {errc::kBusy, ErrorCode::kUnavailable, 503},
      {errc::kReservationExpired, ErrorCode::kConflict, 409},
      {errc::kStaleEpoch, ErrorCode::kConflict, 409},
      {errc::kInternal, ErrorCode::kInternal, 500},
  };
  for (const auto& r : rows) {
    const Error e = error(r.code, "why");
    EXPECT_EQ(error_ck_code(e), r.code);
    EXPECT_EQ(e.code(), r.category) << r.code;
    EXPECT_EQ(error_http_status(e.code()), r.http) << r.code;
    EXPECT_STREQ(e.what(), "why");
  }
  // A code outside clause 3 (a peer's extension) stays on the wire, categorised internal.
  const Error other = error("not_leader", "standby");
  EXPECT_EQ(error_ck_code(other), "not_leader");
  EXPECT_EQ(other.code(), ErrorCode::kInternal);
}

TEST(CkError, ErrorsWithoutAWireCodeUseTheirCategorysDefault) {
  EXPECT_EQ(error_ck_code(NotFound("KM 'X'")), "unknown_kma");
  EXPECT_EQ(error_ck_code(Conflict("duplicate")), "bad_request");
  EXPECT_EQ(error_ck_code(Unavailable("store")), "internal");
}

TEST(CkError, ExceptionsBecomeTheErrorAKmIsAnsweredWith) {
  const Error kept = error_of(InvalidArgument("link 'L': negative key counts"));
  EXPECT_EQ(error_ck_code(kept), "bad_request");
  EXPECT_STREQ(kept.what(), "link 'L': negative key counts");
  const Error finer = error_of(error(errc::kUnknownApplication, "SAE 'x'"));
  EXPECT_EQ(error_ck_code(finer), "unknown_application");
  const Error foreign = error_of(std::runtime_error("bad_alloc somewhere"));
  EXPECT_EQ(error_ck_code(foreign), "internal");
  EXPECT_EQ(foreign.code(), ErrorCode::kInternal);
}

}  // namespace
}  // namespace qkdn::southbound::ck
