#include "qkdn/controller/clock.hpp"

#include <gtest/gtest.h>

#include <set>

#include "qkdn/controller/error.hpp"

namespace qkdn {
namespace {

using std::chrono::hours;
using std::chrono::milliseconds;
using std::chrono::minutes;
using std::chrono::seconds;

// splitmix64 reproduces the reference sequence for seed 0 and is deterministic per seed.
TEST(SeededRandom, ReferenceSequenceAndDeterminism) {
  SeededRandom r0(0);
  EXPECT_EQ(r0.next_u64(), 0xe220a8397b1dcdafULL);
  EXPECT_EQ(r0.next_u64(), 0x6e789e6aa1b965f4ULL);
  EXPECT_EQ(r0.next_u64(), 0x06c45d188009454fULL);

  SeededRandom a(42);
  SeededRandom b(42);
  SeededRandom c(43);
  bool any_diff = false;
  for (int i = 0; i < 100; ++i) {
    const auto va = a.next_u64();
    EXPECT_EQ(va, b.next_u64());
    any_diff = any_diff || va != c.next_u64();
  }
  EXPECT_TRUE(any_diff);
}

// The OS source yields varying words (64 draws colliding would mean it is broken).
TEST(OsRandom, ProducesDistinctWords) {
  OsRandom r;
  std::set<std::uint64_t> seen;
  for (int i = 0; i < 64; ++i) seen.insert(r.next_u64());
  EXPECT_EQ(seen.size(), 64U);
}

// UUIDv4 strings are lower-case 8-4-4-4-12 with version 4 and variant 10xx, unique per draw.
TEST(Uuid, FormatVersionVariant) {
  SeededRandom rng(7);
  std::set<std::string> seen;
  for (int i = 0; i < 200; ++i) {
    const std::string u = make_uuid_v4(rng);
    ASSERT_EQ(u.size(), 36U);
    EXPECT_TRUE(is_uuid(u)) << u;
    EXPECT_EQ(u[14], '4') << u;
    EXPECT_NE(std::string("89ab").find(u[19]), std::string::npos) << u;
    for (const char ch : u) EXPECT_FALSE(ch >= 'A' && ch <= 'F') << u;
    seen.insert(u);
  }
  EXPECT_EQ(seen.size(), 200U);
  SeededRandom x(7);
  SeededRandom y(7);
  EXPECT_EQ(make_uuid_v4(x), make_uuid_v4(y));
}

// is_uuid accepts only the canonical 36-character hex layout.
TEST(Uuid, IsUuid) {
  EXPECT_TRUE(is_uuid("123e4567-e89b-42d3-a456-426614174000"));
  EXPECT_TRUE(is_uuid("123E4567-E89B-42D3-A456-426614174000"));
  EXPECT_FALSE(is_uuid(""));
  EXPECT_FALSE(is_uuid("123e4567e89b42d3a456426614174000"));
  EXPECT_FALSE(is_uuid("123e4567-e89b-42d3-a456-42661417400"));
  EXPECT_FALSE(is_uuid("123e4567-e89b-42d3-a456-4266141740000"));
  EXPECT_FALSE(is_uuid("g23e4567-e89b-42d3-a456-426614174000"));
  EXPECT_FALSE(is_uuid("123e4567-e89b-42d3-a456_426614174000"));
}

// Identifiers: 1..128 characters of [A-Za-z0-9._:-].
TEST(Ids, IsValidId) {
  EXPECT_TRUE(is_valid_id("KM1"));
  EXPECT_TRUE(is_valid_id("a.b_c:d-e"));
  EXPECT_TRUE(is_valid_id(std::string(128, 'x')));
  EXPECT_FALSE(is_valid_id(""));
  EXPECT_FALSE(is_valid_id(std::string(129, 'x')));
  EXPECT_FALSE(is_valid_id("KM 1"));
  EXPECT_FALSE(is_valid_id("KM/1"));
  EXPECT_FALSE(is_valid_id("KMé"));
}

// Formatting is UTC with exactly three fraction digits.
TEST(Rfc3339, Format) {
  EXPECT_EQ(format_rfc3339(SysTime{}), "1970-01-01T00:00:00.000Z");
  EXPECT_EQ(format_rfc3339(SysTime{seconds{1'700'000'000} + milliseconds{123}}),
            "2023-11-14T22:13:20.123Z");
  // Before the epoch the day and second are floored, not truncated.
  EXPECT_EQ(format_rfc3339(SysTime{milliseconds{-1}}), "1969-12-31T23:59:59.999Z");
  // Leap day.
  EXPECT_EQ(format_rfc3339(parse_rfc3339("2024-02-29T12:00:00Z")), "2024-02-29T12:00:00.000Z");
}

// format -> parse gives back the instant at millisecond precision, over many instants.
TEST(Rfc3339, RoundTrip) {
  SeededRandom rng(1);
  for (int i = 0; i < 1000; ++i) {
    // Instants between 1970 and about 2100.
    const auto ms = static_cast<std::int64_t>(rng.next_u64() % 4'102'444'800'000ULL);
    const SysTime t{milliseconds{ms}};
    const std::string s = format_rfc3339(t);
    EXPECT_EQ(parse_rfc3339(s), t) << s;
  }
}

// Found by fuzz_kma: a date the nanosecond clock cannot hold (after 2262-04-11 or before
// 1677-09-21) overflowed a signed 64-bit count (undefined behaviour) instead of being refused.
// Any Ck timestamp or relay "created" reaches this parser.
TEST(Rfc3339, OutOfRangeRefused) {
  for (const char* t : {"9999-12-31T23:59:59Z", "2262-04-12T00:00:00Z", "2600-01-01T00:00:00Z",
                        "1600-01-01T00:00:00Z", "0000-03-01T00:00:00Z"}) {
    EXPECT_THROW(parse_rfc3339(t), InvalidArgument) << t;
  }
  EXPECT_EQ(format_rfc3339(parse_rfc3339("2262-04-10T23:59:59.5Z")), "2262-04-10T23:59:59.500Z");
  EXPECT_NO_THROW(parse_rfc3339("1678-01-01T00:00:00+01:00"));
}

// Offsets, lower-case separators and fractions of any length are understood.
TEST(Rfc3339, ParseVariants) {
  const SysTime base = parse_rfc3339("2026-11-22T10:00:00Z");
  EXPECT_EQ(format_rfc3339(base), "2026-11-22T10:00:00.000Z");
  EXPECT_EQ(parse_rfc3339("2026-11-22T19:00:00+09:00"), base);
  EXPECT_EQ(parse_rfc3339("2026-11-22T05:30:00-04:30"), base);
  EXPECT_EQ(parse_rfc3339("2026-11-22t10:00:00z"), base);
  EXPECT_EQ(parse_rfc3339("2026-11-22 10:00:00Z"), base);
  EXPECT_EQ(parse_rfc3339("2026-11-22T10:00:00.5Z"), base + milliseconds{500});
  EXPECT_EQ(parse_rfc3339("2026-11-22T10:00:00.000000001Z"), base + std::chrono::nanoseconds{1});
  EXPECT_EQ(parse_rfc3339("2026-11-22T10:00:00.1234567899Z"),
            base + std::chrono::nanoseconds{123'456'789});
  // A leap second folds into the next minute.
  EXPECT_EQ(parse_rfc3339("2016-12-31T23:59:60Z"), parse_rfc3339("2017-01-01T00:00:00Z"));
}

// Malformed timestamps throw InvalidArgument.
TEST(Rfc3339, ParseRejects) {
  for (const char* bad :
       {"", "2026-11-22", "2026-11-22T10:00:00", "2026-11-22T10:00Z", "2026-13-01T00:00:00Z",
        "2026-02-30T00:00:00Z", "2026-11-22T24:00:00Z", "2026-11-22T10:60:00Z",
        "2026-11-22T10:00:61Z", "2026-11-22T10:00:00.Z", "2026-11-22T10:00:00+0900",
        "2026-11-22T10:00:00+24:00", "2026-11-22T10:00:00Zjunk", "26-11-22T10:00:00Z",
        "2026/11/22T10:00:00Z", "2026-11-22X10:00:00Z"}) {
    EXPECT_THROW(parse_rfc3339(bad), InvalidArgument) << bad;
  }
  EXPECT_THROW(parse_rfc3339(std::string(100, '1')), InvalidArgument);
}

// ManualClock moves only when told.
TEST(ManualClock, AdvanceAndSet) {
  ManualClock clock;
  const SysTime t0 = clock.now();
  EXPECT_EQ(clock.now(), t0);
  clock.advance(seconds{5});
  EXPECT_EQ(clock.now(), t0 + seconds{5});
  clock.set(SysTime{hours{1}});
  EXPECT_EQ(clock.now(), SysTime{minutes{60}});
}

// ManualClock: advance() is time passing (both readings move); set() is a wall-clock step (the
// monotonic reading stays).
TEST(ManualClock, SetStepsOnlyTheWallClock) {
  ManualClock clock;
  const SteadyTime s0 = clock.steady_now();
  clock.advance(seconds{5});
  EXPECT_EQ(clock.steady_now(), s0 + seconds{5});
  clock.set(clock.now() + hours{1});
  clock.set(clock.now() - hours{3});
  EXPECT_EQ(clock.steady_now(), s0 + seconds{5});
}

// The core's time line starts at the wall time and then follows only the monotonic reading:
// wall-clock steps either way do not move it; time passing does.
TEST(MonotonicWallClock, IgnoresWallStepsFollowsElapsedTime) {
  auto source = std::make_shared<ManualClock>();
  const SysTime t0 = source->now();
  MonotonicWallClock clock(source);
  EXPECT_EQ(clock.now(), t0);
  source->set(t0 + hours{1});
  EXPECT_EQ(clock.now(), t0);
  EXPECT_EQ(clock.wall_now(), t0 + hours{1});
  source->set(t0 - hours{1});
  source->advance(milliseconds{1500});
  EXPECT_EQ(clock.now(), t0 + milliseconds{1500});
  EXPECT_EQ(clock.steady_now(), source->steady_now());
  EXPECT_THROW(MonotonicWallClock(nullptr), InvalidArgument);
}

}  // namespace
}  // namespace qkdn
