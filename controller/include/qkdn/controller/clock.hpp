// Injected time and randomness: the core never reads a real clock or a global RNG.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

namespace qkdn {

using SysTime = std::chrono::system_clock::time_point;
using SteadyTime = std::chrono::steady_clock::time_point;
using Millis = std::chrono::milliseconds;

/// Source of time: a wall-clock reading (timestamps; it may step when the operator or NTP sets
/// the clock) and a monotonic reading beside it (durations; it never steps). Implementations must
/// be safe to call from the thread that owns the object that holds them; the core only calls it
/// from its own strand.
class Clock {
 public:
  virtual ~Clock() = default;
  /// The current time as the core uses it (see MonotonicWallClock for the daemon's).
  [[nodiscard]] virtual SysTime now() const = 0;
  /// A monotonic reading: never goes back and does not move when the wall clock is set.
  [[nodiscard]] virtual SteadyTime steady_now() const = 0;
};

/// The real system clock: now() is the wall clock, steady_now() std::chrono::steady_clock.
class SystemClock final : public Clock {
 public:
  [[nodiscard]] SysTime now() const override { return std::chrono::system_clock::now(); }
  [[nodiscard]] SteadyTime steady_now() const override { return std::chrono::steady_clock::now(); }
};

/// A clock that moves only when told to (tests, simulations).
class ManualClock final : public Clock {
 public:
  explicit ManualClock(SysTime start = SysTime{std::chrono::seconds{1'700'000'000}})
      : now_(start) {}
  [[nodiscard]] SysTime now() const override { return now_; }
  [[nodiscard]] SteadyTime steady_now() const override { return steady_; }
  /// Time passes: both readings move forward by d.
  void advance(std::chrono::nanoseconds d) {
    now_ += std::chrono::duration_cast<SysTime::duration>(d);
    steady_ += std::chrono::duration_cast<SteadyTime::duration>(d);
  }
  /// Sets the wall clock (a step, as `date -s` or NTP does); the monotonic reading stays.
  void set(SysTime t) { now_ = t; }

 private:
  SysTime now_;
  SteadyTime steady_{std::chrono::hours{1}};
};

/// The time line of the controller's core: now() is the source's wall time when this object was
/// made plus the source's monotonic time elapsed since. It never steps, so every lease, deadline
/// and timeout computed from it is immune to wall-clock steps; timestamps taken from it differ
/// from the wall clock by the sum of the steps since it was made (none when NTP only slews).
/// wall_now() is the source's wall clock itself. Thread safety as the source's.
class MonotonicWallClock final : public Clock {
 public:
  /// source: non-null; read once here (anchor) and on every call.
  explicit MonotonicWallClock(std::shared_ptr<const Clock> source);
  [[nodiscard]] SysTime now() const override;
  [[nodiscard]] SteadyTime steady_now() const override { return source_->steady_now(); }
  /// The source's wall clock now (it may have stepped since construction).
  [[nodiscard]] SysTime wall_now() const { return source_->now(); }

 private:
  std::shared_ptr<const Clock> source_;
  SysTime wall_anchor_;
  SteadyTime steady_anchor_;
};

/// Source of random 64-bit words (IDs, jitter). Not used for key material.
class Random {
 public:
  virtual ~Random() = default;
  /// The next 64 random bits.
  virtual std::uint64_t next_u64() = 0;
};

/// splitmix64: deterministic given its seed; fine for IDs in tests and simulations.
class SeededRandom final : public Random {
 public:
  explicit SeededRandom(std::uint64_t seed) : state_(seed) {}
  std::uint64_t next_u64() override;

 private:
  std::uint64_t state_;
};

/// Random words from the operating system (getrandom); used by the daemons.
class OsRandom final : public Random {
 public:
  std::uint64_t next_u64() override;
};

/// A random UUIDv4 string (lower-case, 36 characters) drawn from rng.
std::string make_uuid_v4(Random& rng);

/// RFC 3339 UTC timestamp with milliseconds ("2026-11-22T10:00:00.123Z").
std::string format_rfc3339(SysTime t);
/// Parses an RFC 3339 timestamp (Z or ±hh:mm offset, optional fraction); throws InvalidArgument.
SysTime parse_rfc3339(const std::string& text);

/// True when s is a valid identifier of ck-protocol.md clause 3: 1..128 of [A-Za-z0-9._:-].
bool is_valid_id(const std::string& s) noexcept;
/// True when s is a canonical UUID string (8-4-4-4-12 hex digits).
bool is_uuid(const std::string& s) noexcept;

}  // namespace qkdn
