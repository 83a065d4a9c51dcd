#include "qkdn/controller/clock.hpp"

#include <sys/random.h>

#include <array>
#include <cerrno>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <utility>

#include "qkdn/controller/error.hpp"

namespace qkdn {

MonotonicWallClock::MonotonicWallClock(std::shared_ptr<const Clock> source)
    : source_(std::move(source)) {
  if (!source_) throw InvalidArgument("MonotonicWallClock: no source clock");
  wall_anchor_ = source_->now();
  steady_anchor_ = source_->steady_now();
}

SysTime MonotonicWallClock::now() const {
  return wall_anchor_ +
         std::chrono::duration_cast<SysTime::duration>(source_->steady_now() - steady_anchor_);
}

std::uint64_t SeededRandom::next_u64() {
  // splitmix64 (Steele, Lea, Flood 2014; public-domain reference by Vigna).
  state_ += 0x9e3779b97f4a7c15ULL;
  std::uint64_t z = state_;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

std::uint64_t OsRandom::next_u64() {
  std::array<unsigned char, sizeof(std::uint64_t)> buf{};
  std::size_t got = 0;
  while (got < buf.size()) {
    const ssize_t n = ::getrandom(buf.data() + got, buf.size() - got, 0);
    if (n < 0) {
      // EINTR can only interrupt a call that blocks before the pool is initialised; retry.
      if (errno == EINTR) continue;
      throw Internal(std::string("getrandom failed: ") + std::strerror(errno));
    }
    got += static_cast<std::size_t>(n);
  }
  std::uint64_t v = 0;
  std::memcpy(&v, buf.data(), sizeof v);
  return v;
}

std::string make_uuid_v4(Random& rng) {
  std::uint64_t hi = rng.next_u64();
  std::uint64_t lo = rng.next_u64();
  hi = (hi & 0xffffffffffff0fffULL) | 0x0000000000004000ULL;  // version 4
  lo = (lo & 0x3fffffffffffffffULL) | 0x8000000000000000ULL;  // variant 10xx (RFC 4122)
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(36);
  for (int i = 0; i < 32; ++i) {
    if (i == 8 || i == 12 || i == 16 || i == 20) out.push_back('-');
    const std::uint64_t word = i < 16 ? hi : lo;
    const int shift = 60 - 4 * (i % 16);
    out.push_back(kHex[(word >> shift) & 0xf]);
  }
  return out;
}

std::string format_rfc3339(SysTime t) {
  using namespace std::chrono;
  const auto ms = time_point_cast<milliseconds>(t);
  // floor, not truncation, so that instants before 1970 land on the right day and second.
  const auto day = floor<days>(ms);
  const year_month_day ymd{day};
  const hh_mm_ss<milliseconds> tod{ms - day};
  const int year = static_cast<int>(ymd.year());
  if (year < 0 || year > 9999) {
    throw InvalidArgument("timestamp outside the RFC 3339 year range 0000..9999");
  }
  std::array<char, 32> buf{};
  std::snprintf(buf.data(), buf.size(), "%04d-%02u-%02uT%02d:%02d:%02d.%03dZ", year,
                static_cast<unsigned>(ymd.month()), static_cast<unsigned>(ymd.day()),
                static_cast<int>(tod.hours().count()), static_cast<int>(tod.minutes().count()),
                static_cast<int>(tod.seconds().count()),
                static_cast<int>(tod.subseconds().count()));
  return std::string(buf.data());
}

namespace {

// A cursor over the timestamp text; every read is bounds-checked.
class Scanner {
 public:
  explicit Scanner(const std::string& text) : text_(text) {}

  // Reads exactly n decimal digits.
  int digits(std::size_t n, const char* what) {
    int v = 0;
    for (std::size_t i = 0; i < n; ++i) {
      if (pos_ >= text_.size() || !is_digit(text_[pos_])) fail(what);
      v = v * 10 + (text_[pos_++] - '0');
    }
    return v;
  }
  void expect(char c, const char* what) {
    if (pos_ >= text_.size() || text_[pos_] != c) fail(what);
    ++pos_;
  }
  [[nodiscard]] bool at_end() const { return pos_ >= text_.size(); }
  [[nodiscard]] char peek() const { return at_end() ? '\0' : text_[pos_]; }
  char take() { return at_end() ? '\0' : text_[pos_++]; }
  static bool is_digit(char c) { return c >= '0' && c <= '9'; }
  [[noreturn]] void fail(const char* what) const {
    throw InvalidArgument("invalid RFC 3339 timestamp '" + text_ + "': " + what);
  }

 private:
  const std::string& text_;
  std::size_t pos_ = 0;
};

}  // namespace

SysTime parse_rfc3339(const std::string& text) {
  using namespace std::chrono;
  // Longest sensible form: 4+1+2+1+2+1+2+1+2+1+2 + '.' + 9 digits + 6 offset = 35; allow some
  // slack for extra fraction digits but keep the work bounded.
  if (text.size() > 64) throw InvalidArgument("invalid RFC 3339 timestamp: too long");
  Scanner s(text);
  const int y = s.digits(4, "year");
  s.expect('-', "expected '-' after year");
  const int mo = s.digits(2, "month");
  s.expect('-', "expected '-' after month");
  const int d = s.digits(2, "day");
  const char sep = s.take();
  if (sep != 'T' && sep != 't' && sep != ' ') s.fail("expected 'T' between date and time");
  const int h = s.digits(2, "hour");
  s.expect(':', "expected ':' after hour");
  const int mi = s.digits(2, "minute");
  s.expect(':', "expected ':' after minute");
  const int sec = s.digits(2, "second");

  nanoseconds frac{0};
  if (s.peek() == '.') {
    s.take();
    if (!Scanner::is_digit(s.peek())) s.fail("empty fraction");
    std::int64_t scale = 100'000'000;
    while (Scanner::is_digit(s.peek())) {
      const int digit = s.take() - '0';
      // Digits beyond nanoseconds are accepted and truncated.
      frac += nanoseconds{digit * scale};
      scale /= 10;
    }
  }

  minutes offset{0};
  const char z = s.take();
  if (z == 'Z' || z == 'z') {
    // UTC
  } else if (z == '+' || z == '-') {
    const int oh = s.digits(2, "offset hour");
    s.expect(':', "expected ':' in offset");
    const int om = s.digits(2, "offset minute");
    if (oh > 23 || om > 59) s.fail("offset out of range");
    offset = hours{oh} + minutes{om};
    if (z == '-') offset = -offset;
  } else {
    s.fail("expected 'Z' or a numeric offset");
  }
  if (!s.at_end()) s.fail("trailing characters");

  const year_month_day ymd{year{y}, month{static_cast<unsigned>(mo)},
                           day{static_cast<unsigned>(d)}};
  if (!ymd.ok()) s.fail("no such date");
  // Second 60 is a leap second (RFC 3339 5.6); system_clock ignores leap seconds, so it is folded
  // into the next minute.
  if (h > 23 || mi > 59 || sec > 60) s.fail("time out of range");

  // In whole seconds first (years 0000..9999 fit easily): SysTime counts nanoseconds here, which
  // reach only from 1677 to 2262, and converting a later date overflowed (undefined behaviour;
  // found by fuzz_kma through a relay's "created", reachable from Ck timestamps too).
  const sys_seconds whole = sys_days{ymd} + hours{h} + minutes{mi} + seconds{sec} - offset;
  const auto limit = duration_cast<seconds>(SysTime::duration::max()) - seconds{1};
  if (whole.time_since_epoch() > limit || whole.time_since_epoch() < -limit) {
    s.fail("outside the representable range (years 1678 to 2261)");
  }
  return time_point_cast<SysTime::duration>(whole) + duration_cast<SysTime::duration>(frac);
}

bool is_valid_id(const std::string& s) noexcept {
  if (s.empty() || s.size() > 128) return false;
  for (const char c : s) {
    const bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == ':' || c == '-';
    if (!ok) return false;
  }
  return true;
}

bool is_uuid(const std::string& s) noexcept {
  if (s.size() != 36) return false;
  for (std::size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      if (c != '-') return false;
    } else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'))) {
      return false;
    }
  }
  return true;
}

}  // namespace qkdn
