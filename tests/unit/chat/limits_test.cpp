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

// Names per client address are counted host-wide in the shared state (any worker's Hub sees
// the same count): over the limit a login is too_many_names, counted; a logout frees a place;
// another address is not affected; a login without an address is not limited.
TEST_F(ChatLimits, NamesPerAddress) {
    hub.set_limits({.rate = 0, .burst = 1, .close_after = 0, .max_names_per_address = 2});
    const auto here = chat::address_key(boost::asio::ip::make_address("192.0.2.7"), false);
    const auto there = chat::address_key(boost::asio::ip::make_address("::ffff:192.0.2.8"), false);
    User a(hub), b(hub), c(hub), d(hub), e(hub);
    for (User* u : {&a, &b, &c})
        u->session.set_address(here);
    d.session.set_address(there);
    ASSERT_EQ(a.session.login("a1"), Error::none);
    ASSERT_EQ(b.session.login("a2"), Error::none);
    EXPECT_EQ(c.session.login("a3"), Error::too_many_names);
    EXPECT_EQ(hub.stats().names_limited, 1u);
    EXPECT_EQ(hub.stats().server_full, 0u);
    EXPECT_EQ(d.session.login("d1"), Error::none);  // another address
    EXPECT_EQ(e.session.login("e1"), Error::none);  // no address: no limit
    a.session.logout();
    EXPECT_EQ(c.session.login("a3"), Error::none);
    EXPECT_EQ(state.stats().addresses, 2u);
    EXPECT_EQ(chat::code_of(Error::too_many_names), "too_many_names");
    // IPv4 and its v4-mapped form are one address; --ipv6-prefix64 folds a /64.
    EXPECT_EQ(chat::address_key(boost::asio::ip::make_address("::ffff:192.0.2.7"), false), here);
    EXPECT_EQ(chat::address_key(boost::asio::ip::make_address("2001:db8::1"), true),
              chat::address_key(boost::asio::ip::make_address("2001:db8::2"), true));
    EXPECT_NE(chat::address_key(boost::asio::ip::make_address("2001:db8::1"), false),
              chat::address_key(boost::asio::ip::make_address("2001:db8::2"), false));
}

// server_full is the host's tables being full, and is counted.
TEST(ChatCapacity, ServerFullWhenTheHostsTableIsFullAndCounted) {
    ring::Region region = ring::Region::create(2, 1 << 20);
    chat::SharedState state = chat::SharedState::create({.max_users = 2, .max_rooms = 1});
    boost::asio::io_context io;
    chat::Hub hub{io.get_executor(), region, state, 0};
    User a(hub), b(hub), c(hub);
    ASSERT_EQ(a.session.login("a"), Error::none);
    ASSERT_EQ(b.session.login("b"), Error::none);
    EXPECT_EQ(c.session.login("c"), Error::server_full);
    ASSERT_EQ(a.session.join("r1"), Error::none);
    EXPECT_EQ(b.session.join("r2"), Error::server_full);  // the one room is in use
    EXPECT_EQ(hub.stats().server_full, 2u);
}

// The amplification: 4 KiB of control characters would be 24 KiB escaped. The text limit
// is on the escaped size, so the sender is held to what receivers get; and a join's history is
// cut to the newest messages that fit --chat-join-history-bytes.
TEST_F(ChatLimits, EscapingCannotMultiplyAMessageAndJoinHistoryIsBounded) {
    hub.set_limits({.rate = 0, .burst = 1, .close_after = 0, .max_join_history_bytes = 20000});
    User a(hub), b(hub);
    ASSERT_EQ(a.session.login("sender"), Error::none);
    ASSERT_EQ(a.session.join("r"), Error::none);
    const std::string controls(4096, '\x01');
    EXPECT_EQ(chat::json_escaped_size(controls), 6u * 4096);
    EXPECT_EQ(a.session.say("r", controls), Error::too_long);
    EXPECT_EQ(a.session.dm("sender", controls), Error::too_long);
    const std::string most(4096 / 6, '\x01');  // 682 * 6 = 4092 escaped bytes
    EXPECT_EQ(chat::json_escaped_size("a\"b\\\n\x1f"), 1u + 2 + 1 + 2 + 2 + 6);
    for (int i = 0; i < 100; ++i)
        ASSERT_EQ(a.session.say("r", most), Error::none) << i;
    ASSERT_EQ(b.session.login("late"), Error::none);
    chat::Joined j;
    ASSERT_EQ(b.session.join("r", &j), Error::none);
    // Each message: 4092 + 6 ("sender") + 64 framing = 4162 bytes: 4 fit in 20000.
    ASSERT_EQ(j.history.size(), 4u);
    std::size_t bytes = 0;
    for (const auto& m : j.history)
        bytes += chat::json_escaped_size(m.text);
    EXPECT_LE(bytes, 20000u);
    EXPECT_EQ(j.history.back().id, state.history("r").back().id) << "the newest are kept";
    EXPECT_EQ(hub.stats().history_trimmed, 1u);
    EXPECT_EQ(hub.stats().history_bytes, 4u * 4162);
    // 0: no limit (the room keeps what history_bytes holds).
    hub.set_limits({.rate = 0, .burst = 1, .close_after = 0, .max_join_history_bytes = 0});
    User c(hub);
    ASSERT_EQ(c.session.login("unbounded"), Error::none);
    ASSERT_EQ(c.session.join("r", &j), Error::none);
    EXPECT_EQ(j.history.size(), state.history("r").size());
    EXPECT_EQ(hub.stats().history_trimmed, 1u);
}

}  // namespace
