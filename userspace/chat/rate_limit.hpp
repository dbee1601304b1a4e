// A token bucket for request rates (chat messages per connection and per user).
//
// Kept as one time point (the "generic cell rate algorithm" form of a token bucket): `next_` is
// when the bucket would be full again if nothing else were taken. A request is admitted while
// the bucket holds at least one token, i.e. while next_ - now <= (burst - 1) * interval; taking
// a token moves next_ one interval later. The bucket is full when next_ <= now. No floating
// point, no allocation, 8 bytes per bucket.
//
// Threading: none (one event loop owns each bucket).
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>

namespace steerchat::chat {

// `rate` tokens per second, at most `burst` stored (and so at most `burst` requests at once).
struct RateLimit {
    using Clock = std::chrono::steady_clock;
    Clock::duration interval{};   // one token; zero: no limit
    Clock::duration tolerance{};  // (burst - 1) * interval

    // rate <= 0 (or burst 0): no limit.
    static RateLimit per_second(double rate, std::uint32_t burst) noexcept {
        RateLimit r;
        if (!(rate > 0) || burst == 0) return r;
        // Both kept under 1e18 ns (31 years), so time points never overflow.
        constexpr double kMax = 1e18;
        const double ns = std::clamp(1e9 / rate, 1.0, kMax);
        r.interval = std::chrono::duration_cast<Clock::duration>(
            std::chrono::nanoseconds(static_cast<std::int64_t>(ns)));
        r.tolerance = std::chrono::duration_cast<Clock::duration>(std::chrono::nanoseconds(
            static_cast<std::int64_t>(std::min(ns * (burst - 1.0), kMax))));
        return r;
    }
    bool unlimited() const noexcept { return interval == Clock::duration::zero(); }
};

class TokenBucket {
  public:
    using Clock = RateLimit::Clock;

    // Whether a token is available at `now` (without taking it).
    bool ready(const RateLimit& r, Clock::time_point now) const noexcept {
        return r.unlimited() || next_ - now <= r.tolerance;
    }
    // Takes one token (call after ready() said yes).
    void take(const RateLimit& r, Clock::time_point now) noexcept {
        next_ = std::max(next_, now) + r.interval;
    }
    // ready() then take(); false (nothing taken) when empty.
    bool try_take(const RateLimit& r, Clock::time_point now) noexcept {
        if (!ready(r, now)) return false;
        take(r, now);
        return true;
    }
    // Holds `burst` tokens again (forgetting it loses nothing).
    bool full(Clock::time_point now) const noexcept { return next_ <= now; }

  private:
    Clock::time_point next_{};
};

}  // namespace steerchat::chat
