// Injected time and randomness: the core never reads a real clock or a global RNG.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace qkdn {

using SysTime = std::chrono::system_clock::time_point;
using Millis = std::chrono::milliseconds;

/// Source of wall-clock time. Implementations must be safe to call from the thread that owns
/// the object that holds them; the core only calls it from its own strand.
class Clock {
 public:
  virtual ~Clock() = default;
  /// The current time.
  [[nodiscard]] virtual SysTime now() const = 0;
};

/// The real system clock.
class SystemClock final : public Clock {
 public:
  [[nodiscard]] SysTime now() const override { return std::chrono::system_clock::now(); }
};

/// A clock that moves only when told to (tests, simulations).
class ManualClock final : public Clock {
 public:
  explicit ManualClock(SysTime start = SysTime{std::chrono::seconds{1'700'000'000}})
      : now_(start) {}
  [[nodiscard]] SysTime now() const override { return now_; }
  /// Moves time forward by d.
  void advance(std::chrono::nanoseconds d) {
    now_ += std::chrono::duration_cast<SysTime::duration>(d);
  }
  /// Sets the time.
  void set(SysTime t) { now_ = t; }

 private:
  SysTime now_;
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
