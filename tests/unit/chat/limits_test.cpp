// Chat limits: the token bucket (pure, on a fake clock) and the Hub's rules built on it (requests
// per connection and per name, refusals in a row, rooms per session).
#include <gtest/gtest.h>

#include <boost/asio/io_context.hpp>
#include <chrono>
#include <memory>
#include <string>

#include "chat/chat.hpp"
#include "chat/rate_limit.hpp"
#include "chat_test_util.hpp"

using namespace chat_test;
using namespace std::chrono_literals;
using chat::Error;
namespace ring = steerchat::ring;

namespace {

using Clock = chat::TokenBucket::Clock;

TEST(TokenBucket, AdmitsABurstThenTheRate) {
    const auto r = chat::RateLimit::per_second(10, 5);  // a token every 100 ms, 5 at once
    chat::TokenBucket b;
    const Clock::time_point t0 = Clock::now();
    EXPECT_TRUE(b.full(t0));
    for (int i = 0; i < 5; ++i)
        EXPECT_TRUE(b.try_take(r, t0)) << i;
    EXPECT_FALSE(b.try_take(r, t0));
    EXPECT_FALSE(b.try_take(r, t0 + 99ms));
    EXPECT_TRUE(b.try_take(r, t0 + 100ms));  // one token back
    EXPECT_FALSE(b.try_take(r, t0 + 150ms));
    // Idle long enough: full again, and never more than the burst.
    EXPECT_TRUE(b.full(t0 + 600ms));
    const auto t1 = t0 + 10s;
    int admitted = 0;
    while (b.try_take(r, t1))
        ++admitted;
    EXPECT_EQ(admitted, 5);
}

TEST(TokenBucket, SteadyRateOverTime) {
    const auto r = chat::RateLimit::per_second(50, 1);
    chat::TokenBucket b;
    const Clock::time_point t0 = Clock::now();
    int admitted = 0;
    // Offered 1000/s for 2 s: admitted ~ 50/s.
    for (int ms = 0; ms < 2000; ++ms)
        admitted += b.try_take(r, t0 + std::chrono::milliseconds(ms));
    EXPECT_GE(admitted, 99);
    EXPECT_LE(admitted, 101);
}

TEST(TokenBucket, ExtremeRatesDoNotOverflow) {
    const auto slow = chat::RateLimit::per_second(1e-300, 4'000'000'000u);
    EXPECT_FALSE(slow.unlimited());
    EXPECT_GT(slow.interval, 0s);
    EXPECT_LE(slow.tolerance, std::chrono::nanoseconds(static_cast<std::int64_t>(1e18)));
    chat::TokenBucket b;
    const auto t0 = Clock::now();
    EXPECT_TRUE(b.try_take(slow, t0));
    const auto fast = chat::RateLimit::per_second(1e300, 1);
    EXPECT_EQ(fast.interval, 1ns);
}

TEST(TokenBucket, ZeroRateIsUnlimited) {
    const auto r = chat::RateLimit::per_second(0, 10);
    EXPECT_TRUE(r.unlimited());
    chat::TokenBucket b;
    const auto t0 = Clock::now();
    for (int i = 0; i < 100000; ++i)
        ASSERT_TRUE(b.try_take(r, t0));
}

class ChatLimits : public ::testing::Test {
  protected:
    ring::Region region = ring::Region::create(2, 1 << 20);
    chat::SharedState state = chat::SharedState::create({});
    boost::asio::io_context io;
    chat::Hub hub{io.get_executor(), region, state, 0};
};

TEST_F(ChatLimits, RequestsPerConnectionThenClose) {
    // A slow rate: nothing refills during the test.
    hub.set_limits({.rate = 0.01, .burst = 4, .close_after = 3, .max_rooms = 100});
    User a(hub);
    for (int i = 0; i < 4; ++i)
        EXPECT_EQ(a.session.admit(), Error::none) << i;
    EXPECT_EQ(a.session.admit(), Error::rate_limited);
    EXPECT_FALSE(a.session.abusive());
    EXPECT_EQ(a.session.admit(), Error::rate_limited);
    EXPECT_EQ(a.session.admit(), Error::rate_limited);
    EXPECT_TRUE(a.session.abusive());
    EXPECT_EQ(hub.stats().rate_limited, 3u);
    EXPECT_EQ(hub.stats().rate_closes, 1u);
    // Another connection has its own bucket.
    User b(hub);
    EXPECT_EQ(b.session.admit(), Error::none);
    EXPECT_FALSE(b.session.abusive());
}

TEST_F(ChatLimits, TheNamesBucketOutlivesTheConnection) {
    hub.set_limits({.rate = 0.01, .burst = 3, .close_after = 0, .max_rooms = 100});
    {
        User a(hub);
        ASSERT_EQ(a.session.admit(), Error::none);  // the login request: connection only
        ASSERT_EQ(a.session.login("ann"), Error::none);
        EXPECT_EQ(a.session.admit(), Error::none);
        EXPECT_EQ(a.session.admit(), Error::none);
        EXPECT_EQ(a.session.admit(), Error::rate_limited);  // the connection's bucket is empty
        EXPECT_FALSE(a.session.abusive());                  // close_after 0: never
    }                                                       // disconnect: logout
    User b(hub);
    EXPECT_EQ(b.session.admit(), Error::none);
    ASSERT_EQ(b.session.login("ann"), Error::none);
    EXPECT_EQ(b.session.admit(), Error::none);          // ann's last token
    EXPECT_EQ(b.session.admit(), Error::rate_limited);  // ann's bucket, not b's
    User c(hub);
    ASSERT_EQ(c.session.login("bob"), Error::none);
    EXPECT_EQ(c.session.admit(), Error::none);
}

TEST_F(ChatLimits, UnlimitedWithRateZero) {
    hub.set_limits({.rate = 0, .burst = 1, .close_after = 1, .max_rooms = 100});
    User a(hub);
    for (int i = 0; i < 1000; ++i)
        ASSERT_EQ(a.session.admit(), Error::none);
}

// Typing over its own bucket is dropped silently (none), counted, and not delivered; messages
// and the request rate are not affected.
TEST_F(ChatLimits, TypingOverItsRateIsDroppedSilently) {
    hub.set_limits({.rate = 0,
                    .burst = 1,
                    .close_after = 0,
                    .max_rooms = 100,
                    .typing_rate = 0.01,  // nothing refills during the test
                    .typing_burst = 3});
    User a(hub), b(hub);
    ASSERT_EQ(a.session.login("typist"), Error::none);
    ASSERT_EQ(b.session.login("reader"), Error::none);
    ASSERT_EQ(a.session.join("r"), Error::none);
    ASSERT_EQ(b.session.join("r"), Error::none);
    for (int i = 0; i < 10; ++i)
        EXPECT_EQ(a.session.typing("r"), Error::none) << i;
    EXPECT_EQ(b.client.count(chat::EventType::typing), 3u);
    EXPECT_EQ(hub.stats().typing_drops, 7u);
    EXPECT_EQ(hub.stats().rate_limited, 0u);
    EXPECT_EQ(a.session.say("r", "still here"), Error::none);
    EXPECT_EQ(b.client.count(chat::EventType::message), 1u);
    // Per session: another typist has its own bucket.
    EXPECT_EQ(b.session.typing("r"), Error::none);
    EXPECT_EQ(a.client.count(chat::EventType::typing), 1u);
    EXPECT_EQ(hub.stats().typing_drops, 7u);
    // Rate 0: no limit.
    hub.set_limits({.rate = 0, .burst = 1, .close_after = 0, .max_rooms = 100, .typing_rate = 0});
    for (int i = 0; i < 100; ++i)
        ASSERT_EQ(a.session.typing("r"), Error::none);
    EXPECT_EQ(b.client.count(chat::EventType::typing), 103u);
    EXPECT_EQ(hub.stats().typing_drops, 7u);
}

TEST_F(ChatLimits, RoomsPerSession) {
    hub.set_limits({.rate = 0, .burst = 1, .close_after = 0, .max_rooms = 3});
    User a(hub);
    ASSERT_EQ(a.session.login("roomy"), Error::none);
    for (const char* r : {"r1", "r2", "r3"})
        EXPECT_EQ(a.session.join(r), Error::none) << r;
    EXPECT_EQ(a.session.join("r4"), Error::too_many_rooms);
    EXPECT_EQ(hub.stats().room_limited, 1u);
    EXPECT_EQ(a.session.join("r2"), Error::none);  // already in: not a new room
    EXPECT_EQ(a.session.leave("r2"), Error::none);
    EXPECT_EQ(a.session.join("r4"), Error::none);
    EXPECT_EQ(chat::code_of(Error::too_many_rooms), "too_many_rooms");
    EXPECT_EQ(chat::code_of(Error::rate_limited), "rate_limited");
}

}  // namespace
