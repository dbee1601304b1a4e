// net::ConnectionTracker: connection slots per client address and per worker, and the Lease that
// carries a slot through an HTTP session into the ws::WebSocketConnection it becomes.
#include "net/limits.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>

#include "ws/connection.hpp"
#include "ws/echo.hpp"

namespace steerchat::net {
namespace {

namespace asio = boost::asio;
using asio::ip::make_address;
using namespace std::chrono_literals;

Lease take(ConnectionTracker& t, const char* addr, Refusal expect = Refusal::none) {
    Refusal why = static_cast<Refusal>(0xff);  // acquire() must set it
    auto lease = t.acquire(make_address(addr), why);
    EXPECT_EQ(why, expect) << addr;
    EXPECT_EQ(static_cast<bool>(lease), expect == Refusal::none) << addr;
    return lease;
}

TEST(ConnectionTracker, RefusesAnAddressOverItsLimitOthersGoOn) {
    ConnectionTracker t({.per_address = 3, .per_worker = 100});
    std::vector<Lease> held;
    for (int i = 0; i < 3; ++i)
        held.push_back(take(t, "10.0.0.1"));
    take(t, "10.0.0.1", Refusal::per_address);
    take(t, "10.0.0.1", Refusal::per_address);
    auto other = take(t, "10.0.0.2");
    EXPECT_EQ(t.count(make_address("10.0.0.1")), 3u);
    EXPECT_EQ(t.count(make_address("10.0.0.2")), 1u);
    EXPECT_EQ(t.total(), 4u);
    EXPECT_EQ(t.addresses(), 2u);
    EXPECT_EQ(t.stats().refused_per_address, 2u);
    EXPECT_EQ(t.stats().refused_per_worker, 0u);
    // One closes: that address may connect once more.
    held.pop_back();
    EXPECT_EQ(t.count(make_address("10.0.0.1")), 2u);
    held.push_back(take(t, "10.0.0.1"));
    take(t, "10.0.0.1", Refusal::per_address);
}

TEST(ConnectionTracker, LoopbackIsNotExempt) {
    ConnectionTracker t({.per_address = 1, .per_worker = 100});
    auto a = take(t, "127.0.0.1");
    take(t, "127.0.0.1", Refusal::per_address);
    auto b = take(t, "::1");
    take(t, "::1", Refusal::per_address);
}

TEST(ConnectionTracker, Ipv4MappedIpv6IsTheIpv4Address) {
    ConnectionTracker t({.per_address = 2, .per_worker = 100});
    auto a = take(t, "192.0.2.7");
    auto b = take(t, "::ffff:192.0.2.7");
    take(t, "192.0.2.7", Refusal::per_address);
    take(t, "::ffff:192.0.2.7", Refusal::per_address);
    EXPECT_EQ(t.addresses(), 1u);
    EXPECT_EQ(t.count(make_address("::ffff:192.0.2.7")), 2u);
    EXPECT_EQ(ConnectionTracker::key_of(make_address("192.0.2.7"), false),
              ConnectionTracker::key_of(make_address("::ffff:192.0.2.7"), false));
    // Not the IPv4-compatible (deprecated) form, nor another address.
    EXPECT_NE(ConnectionTracker::key_of(make_address("192.0.2.7"), false),
              ConnectionTracker::key_of(make_address("::192.0.2.7"), false));
}

TEST(ConnectionTracker, PerWorkerLimitCountsEveryAddress) {
    ConnectionTracker t({.per_address = 0, .per_worker = 3});
    auto a = take(t, "10.0.0.1");
    auto b = take(t, "10.0.0.1");
    auto c = take(t, "2001:db8::1");
    take(t, "10.0.0.9", Refusal::per_worker);
    take(t, "10.0.0.1", Refusal::per_worker);
    EXPECT_EQ(t.stats().refused_per_worker, 2u);
    b.reset();
    auto d = take(t, "10.0.0.9");
}

TEST(ConnectionTracker, ZeroPerAddressMeansNoLimit) {
    ConnectionTracker t({.per_address = 0, .per_worker = 1000});
    std::vector<Lease> held;
    for (int i = 0; i < 500; ++i)
        held.push_back(take(t, "10.0.0.1"));
    EXPECT_EQ(t.count(make_address("10.0.0.1")), 500u);
}

TEST(ConnectionTracker, Ipv6ByPrefix64WhenAsked) {
    ConnectionTracker whole({.per_address = 1, .per_worker = 100});
    auto a = take(whole, "2001:db8:1:2::1");
    auto b = take(whole, "2001:db8:1:2::2");  // another address, another count
    ConnectionTracker by64({.per_address = 1, .per_worker = 100, .ipv6_prefix64 = true});
    auto c = take(by64, "2001:db8:1:2::1");
    take(by64, "2001:db8:1:2:ffff::2", Refusal::per_address);  // same /64
    auto d = take(by64, "2001:db8:1:3::1");                    // next /64
    // IPv4 (mapped) addresses are whole addresses still.
    auto e = take(by64, "10.0.0.1");
    auto f = take(by64, "10.0.0.2");
}

TEST(ConnectionTracker, LeaseReleasesOnceWhenMovedOrReset) {
    ConnectionTracker t({.per_address = 5, .per_worker = 100});
    Lease a = take(t, "10.0.0.1");
    Lease moved = std::move(a);
    EXPECT_FALSE(a);  // NOLINT(bugprone-use-after-move): moved-from is empty by contract
    EXPECT_EQ(t.total(), 1u);
    Lease b = take(t, "10.0.0.1");
    moved = std::move(b);  // releases the slot `moved` held, takes b's
    EXPECT_EQ(t.total(), 1u);
    moved.reset();
    moved.reset();
    EXPECT_EQ(t.total(), 0u);
    EXPECT_EQ(t.addresses(), 0u);  // an address without connections is forgotten
    {
        Lease scoped = take(t, "10.0.0.3");
        EXPECT_EQ(t.total(), 1u);
    }
    EXPECT_EQ(t.total(), 0u);
}

TEST(ConnectionTracker, ManyAddressesComeAndGo) {
    ConnectionTracker t({.per_address = 2, .per_worker = 100000});
    std::vector<Lease> held;
    for (int i = 0; i < 5000; ++i) {
        const auto addr = asio::ip::address_v4(0x0a000000u + static_cast<unsigned>(i));
        Refusal why{};
        held.push_back(t.acquire(addr, why));
        ASSERT_TRUE(held.back());
    }
    EXPECT_EQ(t.addresses(), 5000u);
    // Released in another order than taken: entries stay valid across rehashing and erasing.
    for (std::size_t i = 0; i < held.size(); i += 2)
        held[i].reset();
    EXPECT_EQ(t.addresses(), 2500u);
    held.clear();
    EXPECT_EQ(t.total(), 0u);
    EXPECT_EQ(t.addresses(), 0u);
}

TEST(ConnectionTracker, DefaultPerWorkerKeepsFilesFree) {
    EXPECT_EQ(default_max_conns_per_worker(20000), 19000u);     // 5 % kept
    EXPECT_EQ(default_max_conns_per_worker(1048576), 996148u);  // 5 %
    EXPECT_EQ(default_max_conns_per_worker(1024), 960u);        // at least 64 kept
    EXPECT_EQ(default_max_conns_per_worker(100), 36u);
    EXPECT_EQ(default_max_conns_per_worker(10), 1u);
}

// The slot moves into the WebSocket connection an HTTP session becomes, and is released when
// that connection finishes (its socket closed), not later.
TEST(ConnectionTracker, WebSocketConnectionHoldsItsSlotUntilItFinishes) {
    asio::io_context ioc;
    asio::ip::tcp::acceptor acceptor(ioc, {asio::ip::address_v4::loopback(), 0});
    asio::ip::tcp::socket client(ioc);
    client.connect(acceptor.local_endpoint());
    auto server = acceptor.accept();

    ConnectionTracker t({.per_address = 1, .per_worker = 10});
    ws::ConnectionRegistry hub;
    Lease slot = take(t, "127.0.0.1");
    auto conn = ws::WebSocketConnection::create(std::move(server), hub,
                                                std::make_unique<ws::EchoHandler>());
    conn->hold(std::move(slot));
    conn->start();
    ioc.run_for(20ms);
    EXPECT_EQ(t.count(make_address("127.0.0.1")), 1u);
    take(t, "127.0.0.1", Refusal::per_address);

    client.close();  // EOF: the connection finishes
    for (int i = 0; i < 100 && hub.size() > 0; ++i)
        ioc.run_for(10ms);
    EXPECT_EQ(hub.size(), 0u);
    EXPECT_EQ(t.total(), 0u);
    // `conn` still references the connection here: the slot went with the socket, not later.
    auto again = take(t, "127.0.0.1");
}

}  // namespace
}  // namespace steerchat::net

namespace steerchat::net {
namespace {

// (Not "a" + std::to_string(i): GCC 12 reports a false -Wrestrict for it.)
std::string numbered(const char* prefix, int i) {
    std::string s(prefix);
    s += std::to_string(i);
    return s;
}

// Per-address fairness: an address gets `per_turn` requests handled per turn of the loop, the
// rest wait in order; another address is not held up behind them.
TEST(FairShare, AnAddressGetsItsShareOfATurnOthersAreNotHeldUp) {
    asio::io_context ioc;
    FairShare fair(ioc.get_executor(), 4);
    const auto a = ConnectionTracker::key_of(make_address("10.0.0.1"), false);
    const auto b = ConnectionTracker::key_of(make_address("10.0.0.2"), false);
    std::vector<std::string> ran;
    // One turn: 10 requests from a are ready, then one from b.
    for (int i = 0; i < 10; ++i)
        fair.run(a, [&ran, i] { ran.push_back(numbered("a", i)); });
    fair.run(b, [&ran] { ran.push_back("b0"); });
    EXPECT_EQ(ran, (std::vector<std::string>{"a0", "a1", "a2", "a3", "b0"}));
    EXPECT_EQ(fair.waiting(), 6u);
    EXPECT_EQ(fair.deferred(), 6u);
    // The next turns: at most 4 of a's each, in order.
    ioc.run_one();  // the end of the first turn releases a4..a7
    EXPECT_EQ(fair.waiting(), 2u);
    ioc.poll();
    ioc.restart();
    ioc.poll();
    ioc.restart();
    ioc.poll();
    EXPECT_EQ(ran.size(), 11u);
    for (int i = 0; i < 10; ++i)
        EXPECT_EQ(ran[i < 4 ? i : i + 1], numbered("a", i));
    EXPECT_EQ(fair.waiting(), 0u);
}

TEST(FairShare, AQuietWorkerRunsEverythingAtOnce) {
    asio::io_context ioc;
    FairShare fair(ioc.get_executor(), 4);
    int ran = 0;
    for (int turn = 0; turn < 5; ++turn) {
        for (int i = 0; i < 4; ++i)
            fair.run(ConnectionTracker::key_of(make_address("10.0.0.1"), false), [&] { ++ran; });
        EXPECT_EQ(ran, 4 * (turn + 1));
        ioc.poll();  // the turn ends
        ioc.restart();
    }
    EXPECT_EQ(fair.deferred(), 0u);
}

}  // namespace
}  // namespace steerchat::net
