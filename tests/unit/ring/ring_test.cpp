// Single-process tests of the ring: format, ordering, wrap-around, limits, cut-loose, wake-ups.
#include <gtest/gtest.h>
#include <poll.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <random>
#include <string>
#include <thread>

#include "ring/ring.hpp"
#include "ring_test_util.hpp"

namespace ring = steerchat::ring;
using namespace ring_test;
using namespace std::chrono_literals;

namespace {

std::uint64_t rec_bytes(std::size_t payload) {
    return (8 + payload + 7) / 8 * 8;
}

bool eventfd_readable(int fd) {
    pollfd p{fd, POLLIN, 0};
    return ::poll(&p, 1, 0) == 1;
}

TEST(RingRegion, GeometryAndFds) {
    ring::Region r = ring::Region::create(3, 5000);
    EXPECT_EQ(r.workers(), 3u);
    EXPECT_EQ(r.capacity(), 8192u);  // rounded up to a power of two
    EXPECT_EQ(r.max_payload(), 8192u / 4 - 8);
    EXPECT_GE(r.fd(), 0);
    EXPECT_NE(r.wake_fd(0), r.wake_fd(1));
    EXPECT_NE(r.wake_fd(1), r.wake_fd(2));
    EXPECT_THROW((void)r.wake_fd(3), std::out_of_range);
    EXPECT_EQ(r.cut_loose_total(), 0u);
    EXPECT_EQ(r.log_stats(2).write_position, 0u);
    EXPECT_FALSE(r.alive(1));
    EXPECT_THROW(ring::Region::create(0, 4096), std::invalid_argument);

    ring::Region moved = std::move(r);
    EXPECT_EQ(moved.workers(), 3u);
    EXPECT_EQ(r.fd(), -1);  // NOLINT(bugprone-use-after-move): moved-from state is defined
}

TEST(Ring, PublishConsumeExactBytes) {
    ring::Region region = ring::Region::create(2, 4096);
    ring::Reader reader(region, 1);
    ring::Writer writer(region, 0);
    EXPECT_TRUE(region.alive(1));
    EXPECT_FALSE(reader.pending());

    const std::string hello = "hello, world";
    writer.publish(7, std::as_bytes(std::span(hello)));
    writer.publish(8, {});
    const auto big = make_payload(0, 42, 1000);
    writer.publish(9, big);
    EXPECT_TRUE(reader.pending());

    Drained d = drain(reader);
    ASSERT_EQ(d.records.size(), 3u);
    EXPECT_TRUE(d.losses.empty());
    EXPECT_EQ(d.records[0].writer, 0u);
    EXPECT_EQ(d.records[0].type, 7u);
    EXPECT_EQ(std::string(reinterpret_cast<const char*>(d.records[0].payload.data()),
                          d.records[0].payload.size()),
              hello);
    EXPECT_EQ(d.records[1].type, 8u);
    EXPECT_TRUE(d.records[1].payload.empty());
    EXPECT_EQ(d.records[2].type, 9u);
    EXPECT_EQ(d.records[2].payload, big);

    EXPECT_FALSE(reader.pending());
    EXPECT_EQ(reader.poll([](const ring::Record&) {}, [](const ring::Loss&) {}), 0u);

    const ring::LogStats s = region.log_stats(0);
    EXPECT_EQ(s.records, 3u);
    EXPECT_EQ(s.write_position, rec_bytes(hello.size()) + rec_bytes(0) + rec_bytes(1000));
    EXPECT_EQ(writer.position(), s.write_position);
}

TEST(Ring, ReaderSkipsItsOwnLogAndKeepsPerWriterOrder) {
    ring::Region region = ring::Region::create(3, 16384);
    ring::Reader reader(region, 2);
    ring::Writer w0(region, 0), w1(region, 1), w2(region, 2);
    for (std::uint64_t k = 0; k < 200; ++k) {
        w0.publish(1, make_payload(0, k, 8 + k % 50));
        if (k % 3 == 0) w1.publish(2, make_payload(1, k / 3, 8 + k % 7));
        w2.publish(3, make_payload(2, k, 16));  // own log: never delivered to reader 2
    }
    Drained d = drain(reader);
    EXPECT_TRUE(d.losses.empty());
    std::uint64_t next[3] = {0, 0, 0};
    for (const Got& g : d.records) {
        ASSERT_LT(g.writer, 2u);
        EXPECT_EQ(g.type, g.writer + 1);
        ASSERT_TRUE(payload_ok(g.payload, g.writer, next[g.writer])) << "writer " << g.writer;
        ++next[g.writer];
    }
    EXPECT_EQ(next[0], 200u);
    EXPECT_EQ(next[1], 67u);
}

TEST(Ring, WrapAroundManyTimesWithVaryingSizes) {
    ring::Region region = ring::Region::create(2, 4096);
    ring::Reader reader(region, 1);
    ring::Writer writer(region, 0, {.max_wait = 1s});
    const std::size_t maxp = region.max_payload();
    std::mt19937_64 rng(12345);
    std::uint64_t sent = 0, received = 0;
    std::size_t max_seen = 0;
    while (writer.position() < 300 * region.capacity()) {
        // A batch never exceeds what fits while the reader is behind by the whole batch.
        std::uint64_t batch = 0;
        while (batch < region.capacity() / 4) {
            std::size_t size = rng() % (maxp + 1);
            if (rng() % 16 == 0) size = maxp;
            if (rng() % 16 == 0) size = rng() % 9;
            max_seen = std::max(max_seen, size);
            writer.publish(static_cast<std::uint32_t>(size % 1000), make_payload(0, sent, size));
            batch += rec_bytes(size);
            ++sent;
        }
        reader.poll(
            [&](const ring::Record& r) {
                ASSERT_EQ(r.writer, 0u);
                ASSERT_EQ(r.type, r.payload.size() % 1000);
                ASSERT_TRUE(payload_ok(r.payload, 0, received)) << "record " << received;
                ++received;
            },
            [&](const ring::Loss&) { FAIL() << "unexpected loss"; });
        ASSERT_EQ(received, sent);
    }
    EXPECT_EQ(max_seen, maxp);
    EXPECT_EQ(region.log_stats(0).waits, 0u);
    EXPECT_EQ(region.cut_loose_total(), 0u);
    EXPECT_EQ(region.log_stats(0).records, sent);
}

TEST(Ring, MaxRecordSizeAndMisuseRejected) {
    ring::Region region = ring::Region::create(2, 4096);
    ring::Reader reader(region, 1);
    ring::Writer writer(region, 0);
    const std::size_t maxp = region.max_payload();
    EXPECT_EQ(maxp, 4096u / 4 - 8);

    try {
        (void)writer.reserve(maxp + 1);
        FAIL() << "reserve beyond the maximum must throw";
    } catch (const std::length_error& e) {
        EXPECT_NE(std::string(e.what()).find("exceeds the maximum"), std::string::npos);
    }
    EXPECT_THROW(writer.publish(1, make_payload(0, 0, maxp + 1)), std::length_error);
    EXPECT_THROW(writer.commit(1, 0), std::logic_error);  // nothing reserved
    (void)writer.reserve(16);
    EXPECT_THROW(writer.commit(1, 17), std::length_error);
    EXPECT_THROW(writer.commit(ring::kFirstReservedType, 8), std::invalid_argument);
    EXPECT_THROW(writer.publish(0xFFFFFFFFu, {}), std::invalid_argument);
    EXPECT_EQ(region.log_stats(0).records, 0u);
    EXPECT_FALSE(reader.pending());

    writer.publish(5, make_payload(0, 0, maxp));
    Drained d = drain(reader);
    ASSERT_EQ(d.records.size(), 1u);
    EXPECT_EQ(d.records[0].payload.size(), maxp);
    EXPECT_TRUE(payload_ok(d.records[0].payload, 0, 0));
}

TEST(Ring, ReserveCommitEncodesInPlaceAndMayShrink) {
    ring::Region region = ring::Region::create(2, 4096);
    ring::Reader reader(region, 1);
    ring::Writer writer(region, 0);
    std::span<std::byte> buf = writer.reserve(500);
    ASSERT_EQ(buf.size(), 500u);
    fill_payload(buf.first(20), 0, 77);
    writer.commit(3, 20);
    EXPECT_EQ(writer.position(), rec_bytes(20));

    // An abandoned reservation is invisible; the next reservation replaces it.
    std::span<std::byte> junk = writer.reserve(100);
    std::memset(junk.data(), 0xAB, junk.size());
    EXPECT_EQ(writer.position(), rec_bytes(20));
    writer.publish(4, make_payload(0, 78, 30));

    Drained d = drain(reader);
    ASSERT_EQ(d.records.size(), 2u);
    EXPECT_EQ(d.records[0].type, 3u);
    EXPECT_TRUE(payload_ok(d.records[0].payload, 0, 77));
    EXPECT_EQ(d.records[0].payload.size(), 20u);
    EXPECT_EQ(d.records[1].type, 4u);
    EXPECT_TRUE(payload_ok(d.records[1].payload, 0, 78));
}

TEST(Ring, NewWriterInSlotContinuesTheLog) {
    ring::Region region = ring::Region::create(2, 4096);
    ring::Reader reader(region, 1);
    {
        ring::Writer first(region, 0);
        for (std::uint64_t k = 0; k < 5; ++k)
            first.publish(1, make_payload(0, k, 40));
        (void)first.reserve(64);  // dies with a reservation
    }
    ring::Writer second(region, 0);
    for (std::uint64_t k = 5; k < 10; ++k)
        second.publish(1, make_payload(0, k, 40));
    Drained d = drain(reader);
    ASSERT_EQ(d.records.size(), 10u);
    for (std::uint64_t k = 0; k < 10; ++k)
        EXPECT_TRUE(payload_ok(d.records[k].payload, 0, k));
    EXPECT_EQ(region.log_stats(0).records, 10u);
}

TEST(Ring, DeadConsumerIsNotWaitedForAndRestartsAtTheEnd) {
    ring::Region region = ring::Region::create(2, 4096);
    ring::Writer writer(region, 0, {.max_wait = 2s});
    {
        ring::Reader reader(region, 1);
        writer.publish(1, make_payload(0, 0, 100));
    }  // the Reader's destructor marks slot 1 dead
    EXPECT_FALSE(region.alive(1));
    const auto t0 = std::chrono::steady_clock::now();
    std::uint64_t k = 1;
    while (writer.position() < 5 * region.capacity())
        writer.publish(1, make_payload(0, k++, 200));
    EXPECT_LT(std::chrono::steady_clock::now() - t0, 1s);  // far below max_wait: no waiting
    EXPECT_EQ(region.log_stats(0).waits, 0u);
    EXPECT_EQ(region.cut_loose_total(), 0u);

    ring::Reader respawned(region, 1);  // starts at the log's current end
    EXPECT_FALSE(respawned.pending());
    writer.publish(1, make_payload(0, k, 100));
    Drained d = drain(respawned);
    ASSERT_EQ(d.records.size(), 1u);
    EXPECT_TRUE(d.losses.empty());
    EXPECT_TRUE(payload_ok(d.records[0].payload, 0, k));
}

TEST(Ring, StalledConsumerIsCutLooseAndReportsTheLoss) {
    ring::Region region = ring::Region::create(3, 4096);
    ring::Reader stalled(region, 1);
    ring::Reader keeping_up(region, 2);
    const auto bound = 2ms;
    ring::Writer writer(region, 0, {.max_wait = bound});

    std::uint64_t sent = 0, fast_received = 0, stalled_received = 0;
    auto fast_poll = [&] {
        keeping_up.poll(
            [&](const ring::Record& r) {
                ASSERT_TRUE(payload_ok(r.payload, 0, fast_received));
                ++fast_received;
            },
            [&](const ring::Loss&) { FAIL() << "the keeping-up consumer must lose nothing"; });
    };
    // The stalled consumer reads a few records, then stops.
    for (; sent < 3; ++sent)
        writer.publish(1, make_payload(0, sent, 100));
    stalled.poll([&](const ring::Record&) { ++stalled_received; },
                 [&](const ring::Loss&) { FAIL(); });
    ASSERT_EQ(stalled_received, 3u);
    fast_poll();

    std::chrono::nanoseconds longest{0};
    const auto t0 = std::chrono::steady_clock::now();
    while (writer.position() < 3 * region.capacity()) {
        const auto a = std::chrono::steady_clock::now();
        writer.publish(1, make_payload(0, sent++, 100));
        longest = std::max(longest, std::chrono::steady_clock::now() - a);
        fast_poll();
    }
    const auto total = std::chrono::steady_clock::now() - t0;
    // Waited once for about the bound, never much longer.
    EXPECT_GE(longest, bound);
    EXPECT_LT(total, bound + 500ms);
    EXPECT_EQ(region.cut_loose_total(), 1u);
    EXPECT_EQ(region.log_stats(0).cuts, 1u);
    EXPECT_EQ(region.log_stats(0).waits, 1u);
    EXPECT_EQ(fast_received, sent);

    // Resuming: first a Loss (never a stale or torn record), then new records only.
    const std::uint64_t pos_before = writer.position();
    Drained d = drain(stalled);
    ASSERT_EQ(d.losses.size(), 1u);
    EXPECT_TRUE(d.records.empty());
    EXPECT_EQ(d.losses[0].writer, 0u);
    EXPECT_EQ(d.losses[0].records, sent - 3);
    EXPECT_EQ(d.losses[0].bytes, pos_before - 3 * rec_bytes(100));
    const ring::ConsumerStats cs = region.consumer_stats(1);
    EXPECT_EQ(cs.losses, 1u);
    EXPECT_EQ(cs.lost_records, sent - 3);

    for (int i = 0; i < 5; ++i)
        writer.publish(1, make_payload(0, sent++, 100));
    d = drain(stalled);
    EXPECT_TRUE(d.losses.empty());
    ASSERT_EQ(d.records.size(), 5u);
    for (int i = 0; i < 5; ++i)
        EXPECT_TRUE(payload_ok(d.records[i].payload, 0, sent - 5 + i));
    // It is waited for again: no new cut while it keeps up.
    fast_poll();
    EXPECT_EQ(region.cut_loose_total(), 1u);
}

TEST(Ring, NoEventfdWriteForAConsumerThatIsNotSleeping) {
    ring::Region region = ring::Region::create(2, 65536);
    ring::Reader reader(region, 1);
    ring::Writer writer(region, 0);
    for (std::uint64_t k = 0; k < 100; ++k)
        writer.publish(1, make_payload(0, k, 24));
    std::uint64_t v = 0;
    EXPECT_EQ(::read(region.wake_fd(1), &v, sizeof v), -1);
    EXPECT_EQ(errno, EAGAIN);
    EXPECT_EQ(region.consumer_stats(1).wakeups, 0u);
    EXPECT_EQ(drain(reader).records.size(), 100u);
}

TEST(Ring, SleepingConsumerGetsExactlyOneEventfdWrite) {
    ring::Region region = ring::Region::create(2, 65536);
    ring::Reader reader(region, 1);
    ring::Writer writer(region, 0);
    ASSERT_TRUE(reader.prepare_sleep());
    EXPECT_TRUE(region.consumer_stats(1).sleeping);
    EXPECT_FALSE(eventfd_readable(reader.wake_fd()));
    writer.publish(1, make_payload(0, 0, 24));
    EXPECT_TRUE(eventfd_readable(reader.wake_fd()));
    writer.publish(1, make_payload(0, 1, 24));
    EXPECT_EQ(region.consumer_stats(1).wakeups, 1u);  // the first publish cleared the flag
    reader.finish_sleep();
    EXPECT_FALSE(eventfd_readable(reader.wake_fd()));
    EXPECT_FALSE(region.consumer_stats(1).sleeping);
    EXPECT_EQ(drain(reader).records.size(), 2u);

    // With data pending, prepare_sleep refuses.
    writer.publish(1, make_payload(0, 2, 24));
    EXPECT_FALSE(reader.prepare_sleep());
    EXPECT_FALSE(region.consumer_stats(1).sleeping);
    EXPECT_TRUE(reader.wait(1s));
}

TEST(Ring, WaitTimesOutWhenNothingArrives) {
    ring::Region region = ring::Region::create(2, 4096);
    ring::Reader reader(region, 1);
    const auto t0 = std::chrono::steady_clock::now();
    EXPECT_FALSE(reader.wait(20ms));
    EXPECT_GE(std::chrono::steady_clock::now() - t0, 20ms);
    EXPECT_FALSE(region.consumer_stats(1).sleeping);
}

// Writer and Reader in two threads of one process (lets ThreadSanitizer check the
// release/acquire pairing of positions, cursors and the sleep protocol).
TEST(Ring, WriterAndReaderThreads) {
    ring::Region region = ring::Region::create(2, 8192);
    ring::Reader reader(region, 1, {.spin = 5us});
    constexpr std::uint64_t kCount = 50'000;
    std::thread producer([&] {
        ring::Writer writer(region, 0, {.max_wait = 5s});
        for (std::uint64_t k = 0; k < kCount; ++k) {
            writer.publish(1, make_payload(0, k, 8 + k % 120));
            if (k % 5000 == 0) std::this_thread::sleep_for(1ms);  // let the reader sleep
        }
    });
    std::uint64_t next = 0;
    bool bad = false;
    const auto deadline = std::chrono::steady_clock::now() + 20s;
    while (next < kCount && std::chrono::steady_clock::now() < deadline) {
        const std::size_t n = reader.poll(
            [&](const ring::Record& r) {
                if (!payload_ok(r.payload, 0, next) || r.payload.size() != 8 + next % 120)
                    bad = true;
                ++next;
            },
            [&](const ring::Loss&) { bad = true; });
        if (n == 0) reader.wait(100ms);
    }
    producer.join();
    EXPECT_FALSE(bad);
    EXPECT_EQ(next, kCount);
    EXPECT_EQ(region.cut_loose_total(), 0u);
}

TEST(Ring, RegionMayBeMovedUnderItsWritersAndReaders) {
    ring::Region region = ring::Region::create(1, 4096);  // replaced below; outlives all
    ring::Region first = ring::Region::create(2, 4096);
    ring::Reader reader(first, 1);
    ring::Writer writer(first, 0);
    region = std::move(first);
    ASSERT_TRUE(reader.prepare_sleep());
    writer.publish(1, make_payload(0, 0, 10));
    EXPECT_TRUE(eventfd_readable(region.wake_fd(1)));
    reader.finish_sleep();
    Drained d = drain(reader);
    ASSERT_EQ(d.records.size(), 1u);
    EXPECT_EQ(region.consumer_stats(1).wakeups, 1u);
}

TEST(Ring, ReaderMoveKeepsItsPosition) {
    ring::Region region = ring::Region::create(2, 4096);
    ring::Writer writer(region, 0);
    ring::Reader a(region, 1);
    writer.publish(1, make_payload(0, 0, 10));
    ASSERT_EQ(drain(a).records.size(), 1u);
    ring::Reader b = std::move(a);
    EXPECT_TRUE(region.alive(1));
    writer.publish(1, make_payload(0, 1, 10));
    Drained d = drain(b);
    ASSERT_EQ(d.records.size(), 1u);
    EXPECT_TRUE(payload_ok(d.records[0].payload, 0, 1));
}

}  // namespace
