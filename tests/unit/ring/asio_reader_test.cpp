// AsioReader: records published by another process reach an Asio loop, across sleeps.
#include <gtest/gtest.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <functional>
#include <optional>
#include <thread>

#include "ring/asio_reader.hpp"
#include "ring/ring.hpp"
#include "ring_test_util.hpp"

namespace ring = steerchat::ring;
using namespace ring_test;
using namespace std::chrono_literals;

namespace {

TEST(RingAsio, DeliversBurstsFromAnotherProcessAndSleepsBetweenThem) {
    ring::Region region = ring::Region::create(2, 65536);
    ring::Reader reader(region, 1, {.spin = 20us});
    constexpr std::uint64_t kBursts = 20, kPerBurst = 100;

    const pid_t child = fork_child([&]() -> int {
        ring::Writer writer(region, 0);
        std::uint64_t k = 0;
        for (std::uint64_t b = 0; b < kBursts; ++b) {
            for (std::uint64_t i = 0; i < kPerBurst; ++i, ++k)
                writer.publish(1, make_payload(0, k, 8 + k % 64));
            std::this_thread::sleep_for(5ms);  // long enough for the consumer to go to sleep
        }
        return 0;
    });
    ASSERT_GT(child, 0);

    boost::asio::io_context io;
    std::uint64_t next = 0;
    std::uint64_t losses = 0;
    bool bad = false;
    // Another handler on the same loop keeps running while the ring is being read.
    int ticks = 0;
    boost::asio::steady_timer timer(io);
    std::function<void()> tick = [&] {
        timer.expires_after(1ms);
        timer.async_wait([&](const boost::system::error_code& ec) {
            if (ec) return;
            ++ticks;
            tick();
        });
    };
    tick();

    std::optional<ring::AsioReader<std::function<void(const ring::Record&)>,
                                   std::function<void(const ring::Loss&)>>>
        feed;
    feed.emplace(
        io.get_executor(), reader,
        [&](const ring::Record& r) {
            if (!payload_ok(r.payload, 0, next)) bad = true;
            if (++next == kBursts * kPerBurst) {
                feed->stop();
                timer.cancel();
            }
        },
        [&](const ring::Loss&) { ++losses; }, 32);
    feed->start();
    io.run_for(10s);

    EXPECT_EQ(wait_child(child), 0);
    EXPECT_FALSE(bad);
    EXPECT_EQ(next, kBursts * kPerBurst);
    EXPECT_EQ(losses, 0u);
    EXPECT_GT(ticks, 0);
    // The consumer slept between bursts and was woken through its eventfd.
    EXPECT_GE(region.consumer_stats(1).wakeups, 1u);
    EXPECT_FALSE(region.consumer_stats(1).sleeping);
}

TEST(RingAsio, StopBeforeRunDeliversNothing) {
    ring::Region region = ring::Region::create(2, 4096);
    ring::Reader reader(region, 1);
    ring::Writer writer(region, 0);
    boost::asio::io_context io;
    int calls = 0;
    auto on_record = [&](const ring::Record&) { ++calls; };
    auto on_loss = [&](const ring::Loss&) { ++calls; };
    {
        ring::AsioReader feed(io.get_executor(), reader, on_record, on_loss);
        feed.start();
        writer.publish(1, make_payload(0, 0, 16));
        feed.stop();
        io.run_for(50ms);
    }
    EXPECT_EQ(calls, 0);
    EXPECT_FALSE(region.consumer_stats(1).sleeping);
    EXPECT_EQ(drain(reader).records.size(), 1u);  // still there for the next consumer turn
}

}  // namespace
