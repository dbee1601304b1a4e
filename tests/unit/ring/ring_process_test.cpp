// Multi-process tests: the region is created before fork() and inherited, as in the server.
#include <gtest/gtest.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <memory>
#include <vector>

#include "ring/ring.hpp"
#include "ring_test_util.hpp"

namespace ring = steerchat::ring;
using namespace ring_test;
using namespace std::chrono_literals;

namespace {

constexpr unsigned kProcs = 3;
constexpr std::uint64_t kPerWriter = 100'000;

std::size_t size_of_record(std::uint64_t k) {
    return 8 + (k * 37) % 193;
}

// Child body: write kPerWriter numbered records to our log while reading every other log;
// check order, bytes and a checksum per writer. Exit codes name the failure.
int exchange_child(ring::Region& region, unsigned me, const Pipe& report, const Pipe& go) {
    // A generous bound: this test is about exactly-once delivery, and on a shared 2-CPU box a
    // consumer can be descheduled for several ms.
    ring::Writer writer(region, me, {.max_wait = 5s});
    ring::Reader reader(region, me);
    // A Reader starts at the current end of every log: start writing only once all exist.
    report.send(kProcs);
    std::uint64_t v = 0;
    if (!go.recv(v)) return 7;
    std::array<std::uint64_t, kProcs> next{};
    std::array<std::uint64_t, kProcs> sum{};
    sum.fill(kFnvBasis);
    int failure = 0;
    auto on_record = [&](const ring::Record& r) {
        if (failure != 0) return;
        if (r.writer >= kProcs || r.writer == me) {
            failure = 2;
            return;
        }
        const std::uint64_t k = next[r.writer];
        if (r.type != k % 1000 || r.payload.size() != size_of_record(k)) {
            failure = 3;
            return;
        }
        if (!payload_ok(r.payload, r.writer, k)) {
            failure = 4;
            return;
        }
        sum[r.writer] = fnv1a(sum[r.writer], r.payload);
        ++next[r.writer];
    };
    auto on_loss = [&](const ring::Loss&) { failure = 5; };
    auto all_done = [&] {
        for (unsigned w = 0; w < kProcs; ++w)
            if (w != me && next[w] != kPerWriter) return false;
        return true;
    };
    for (std::uint64_t k = 0; k < kPerWriter; ++k) {
        std::span<std::byte> buf = writer.reserve(size_of_record(k));
        fill_payload(buf, me, k);
        writer.commit(static_cast<std::uint32_t>(k % 1000), buf.size());
        if (k % 16 == 0) reader.poll(on_record, on_loss, 256);
        if (failure != 0) return failure;
    }
    const auto deadline = std::chrono::steady_clock::now() + 20s;
    while (!all_done()) {
        if (reader.poll(on_record, on_loss) == 0) reader.wait(10ms);
        if (failure != 0) return failure;
        if (std::chrono::steady_clock::now() > deadline) return 6;
    }
    for (unsigned w = 0; w < kProcs; ++w)
        if (w != me) report.send(sum[w]);
    return 0;
}

TEST(RingProcesses, ThreeWritersEveryRecordExactlyOnceInOrder) {
    ring::Region region = ring::Region::create(kProcs, 64 * 1024);
    std::vector<std::unique_ptr<Pipe>> pipes, go;
    std::vector<pid_t> pids;
    for (unsigned i = 0; i < kProcs; ++i) {
        pipes.push_back(std::make_unique<Pipe>());
        go.push_back(std::make_unique<Pipe>());
        const Pipe& p = *pipes.back();
        const Pipe& g = *go.back();
        pids.push_back(
            fork_child([&region, i, &p, &g] { return exchange_child(region, i, p, g); }));
        ASSERT_GT(pids.back(), 0);
    }
    for (unsigned i = 0; i < kProcs; ++i) {
        std::uint64_t v = 0;
        EXPECT_TRUE(pipes[i]->recv(v));
        EXPECT_EQ(v, kProcs);
    }
    for (unsigned i = 0; i < kProcs; ++i)
        go[i]->send(1);
    for (unsigned i = 0; i < kProcs; ++i)
        EXPECT_EQ(wait_child(pids[i], 30s), 0) << "child " << i;

    // Expected checksum of each writer's whole stream, computed independently.
    std::array<std::uint64_t, kProcs> expected{};
    for (unsigned w = 0; w < kProcs; ++w) {
        std::uint64_t h = kFnvBasis;
        for (std::uint64_t k = 0; k < kPerWriter; ++k)
            h = fnv1a(h, make_payload(w, k, size_of_record(k)));
        expected[w] = h;
    }
    for (unsigned i = 0; i < kProcs; ++i) {
        for (unsigned w = 0; w < kProcs; ++w) {
            if (w == i) continue;
            std::uint64_t got = 0;
            ASSERT_TRUE(pipes[i]->recv(got, 1000)) << "reader " << i;
            EXPECT_EQ(got, expected[w]) << "reader " << i << " writer " << w;
        }
    }
    for (unsigned w = 0; w < kProcs; ++w)
        EXPECT_EQ(region.log_stats(w).records, kPerWriter);
    EXPECT_EQ(region.cut_loose_total(), 0u);
    for (unsigned i = 0; i < kProcs; ++i)
        EXPECT_EQ(region.consumer_stats(i).losses, 0u);
}

TEST(RingProcesses, ProducerKilledMidRecordLeavesReadersIntact) {
    ring::Region region = ring::Region::create(2, 4096);
    ring::Reader reader(region, 1);
    Pipe to_child, from_child;
    // 10 records of 8 + 304 bytes end at 3120; a reservation of 1000 bytes does not fit before
    // the end of the ring, so the child also writes a padding header, then fills the record's
    // place at offset 0..1008 with 0xEE, and dies there.
    const pid_t child = fork_child([&]() -> int {
        ring::Writer writer(region, 0);
        for (std::uint64_t k = 0; k < 10; ++k)
            writer.publish(1, make_payload(0, k, 304));
        from_child.send(1);
        std::uint64_t v;
        if (!to_child.recv(v)) return 2;
        std::span<std::byte> buf = writer.reserve(1000);
        std::memset(buf.data(), 0xEE, buf.size());
        from_child.send(2);
        ::pause();
        return 0;
    });
    ASSERT_GT(child, 0);
    std::uint64_t v = 0;
    ASSERT_TRUE(from_child.recv(v));
    // Read the records the reservation will overwrite (0..3, up to position 1248), not the rest.
    Drained d;
    reader.poll(
        [&](const ring::Record& r) {
            d.records.push_back({r.writer, r.type, {}});
        },
        [&](const ring::Loss& l) { d.losses.push_back(l); }, 4);
    ASSERT_EQ(d.records.size(), 4u);
    to_child.send(1);
    ASSERT_TRUE(from_child.recv(v));
    ASSERT_EQ(v, 2u);
    ::kill(child, SIGKILL);
    EXPECT_EQ(wait_child(child), 128 + SIGKILL);

    d = drain(reader);
    EXPECT_TRUE(d.losses.empty());
    ASSERT_EQ(d.records.size(), 6u);  // the committed ones, nothing of the dead reservation
    for (std::uint64_t k = 4; k < 10; ++k) {
        EXPECT_EQ(d.records[k - 4].payload.size(), 304u);
        EXPECT_TRUE(payload_ok(d.records[k - 4].payload, 0, k)) << k;
    }
    EXPECT_FALSE(reader.pending());
    EXPECT_EQ(region.log_stats(0).records, 10u);
    EXPECT_EQ(region.log_stats(0).write_position, 3120u);
    EXPECT_EQ(region.cut_loose_total(), 0u);

    // A respawned writer in the slot continues after the last committed record.
    const pid_t respawned = fork_child([&] {
        ring::Writer writer(region, 0);
        if (writer.position() != 3120) return 2;
        // Wraps past the dead writer's padding (3120 + 10 * 208 > 4096).
        for (std::uint64_t k = 10; k < 20; ++k)
            writer.publish(1, make_payload(0, k, 200));
        return 0;
    });
    ASSERT_GT(respawned, 0);
    EXPECT_EQ(wait_child(respawned), 0);
    d = drain(reader);
    EXPECT_TRUE(d.losses.empty());
    ASSERT_EQ(d.records.size(), 10u);
    for (std::uint64_t k = 10; k < 20; ++k)
        EXPECT_TRUE(payload_ok(d.records[k - 10].payload, 0, k)) << k;
    EXPECT_EQ(region.log_stats(0).records, 20u);
    EXPECT_EQ(region.log_stats(0).waits, 0u);
}

TEST(RingProcesses, StalledConsumerInAnotherProcessIsCutLooseThenResumes) {
    ring::Region region = ring::Region::create(2, 8192);
    Pipe to_child, from_child;
    const pid_t child = fork_child([&]() -> int {
        ring::Reader reader(region, 1);
        from_child.send(0);  // alive
        std::uint64_t got = 0;
        while (got < 5) {
            reader.poll([&](const ring::Record&) { ++got; }, [](const ring::Loss&) {}, 5 - got);
            if (got < 5) reader.wait(10ms);
        }
        from_child.send(got);  // then stall until told to resume
        std::uint64_t v;
        if (!to_child.recv(v, 10000)) return 2;
        Drained d = drain(reader);
        if (d.losses.size() != 1 || !d.records.empty() || d.order[0] != 1) return 3;
        from_child.send(d.losses[0].records);
        // Now new records arrive in order.
        std::uint64_t next = v;
        while (next < v + 10) {
            bool bad = false;
            reader.poll(
                [&](const ring::Record& r) {
                    if (!payload_ok(r.payload, 0, next)) bad = true;
                    ++next;
                },
                [&](const ring::Loss&) { bad = true; });
            if (bad) return 4;
            if (next < v + 10 && !reader.wait(5s)) return 5;
        }
        return 0;
    });
    ASSERT_GT(child, 0);
    std::uint64_t v = 0;
    ASSERT_TRUE(from_child.recv(v));
    ring::Writer writer(region, 0);  // default bound: 2 ms
    std::uint64_t sent = 0;
    for (; sent < 5; ++sent)
        writer.publish(1, make_payload(0, sent, 100));
    ASSERT_TRUE(from_child.recv(v));
    ASSERT_EQ(v, 5u);

    const auto t0 = std::chrono::steady_clock::now();
    while (writer.position() < 4 * region.capacity())
        writer.publish(1, make_payload(0, sent++, 100));
    const auto took = std::chrono::steady_clock::now() - t0;
    EXPECT_GE(took, 2ms);
    EXPECT_LT(took, 500ms);  // bounded: one wait of ~2 ms, then no more waiting
    EXPECT_EQ(region.cut_loose_total(), 1u);
    EXPECT_EQ(region.log_stats(0).waits, 1u);

    to_child.send(sent);
    ASSERT_TRUE(from_child.recv(v));
    EXPECT_EQ(v, sent - 5);  // the Loss names every skipped record
    for (int i = 0; i < 10; ++i)
        writer.publish(1, make_payload(0, sent++, 100));
    EXPECT_EQ(wait_child(child), 0);
    EXPECT_EQ(region.consumer_stats(1).losses, 1u);
    EXPECT_FALSE(region.alive(1));  // the child's Reader marked the slot dead on exit
}

TEST(RingProcesses, SleepingConsumerInAnotherProcessIsWokenByAPublish) {
    ring::Region region = ring::Region::create(2, 4096);
    Pipe from_child;
    const pid_t child = fork_child([&]() -> int {
        ring::Reader reader(region, 1);
        if (!reader.prepare_sleep()) return 2;
        from_child.send(1);
        pollfd p{reader.wake_fd(), POLLIN, 0};
        if (::poll(&p, 1, 5000) != 1) return 3;  // not woken
        reader.finish_sleep();
        Drained d = drain(reader);
        if (d.records.size() != 1 || !payload_ok(d.records[0].payload, 0, 9)) return 4;
        return 0;
    });
    ASSERT_GT(child, 0);
    std::uint64_t v = 0;
    ASSERT_TRUE(from_child.recv(v));
    EXPECT_TRUE(region.consumer_stats(1).sleeping);
    ring::Writer writer(region, 0);
    writer.publish(1, make_payload(0, 9, 64));
    EXPECT_EQ(wait_child(child), 0);
    EXPECT_EQ(region.consumer_stats(1).wakeups, 1u);
}

// Round trips between two spinning processes. Prints the hop latency; asserts only delivery
// (timing is never asserted). Bounded by rounds and by wall-clock time, and it yields the CPU
// after a long empty spin, so an oversubscribed machine makes it slow, never stuck.
TEST(RingProcesses, SpinningPingPong) {
    ring::Region region = ring::Region::create(2, 65536);
    constexpr std::uint64_t kRounds = 20000;
    constexpr std::uint32_t kPing = 1, kReady = 2, kStop = 3;
    auto spin_or_yield = [](unsigned& idle) {
        if (++idle % 4096 == 0) ::sched_yield();
    };
    // Both Readers exist before the first message, so no message predates its reader.
    ring::Reader parent_reader(region, 0);
    const pid_t child = fork_child([&]() -> int {
        ring::Reader reader(region, 1);
        ring::Writer writer(region, 1);
        writer.publish(kReady, {});
        std::uint64_t expect = 0;
        bool stop = false, bad = false;
        unsigned idle = 0;
        const auto deadline = std::chrono::steady_clock::now() + 20s;
        while (!stop && !bad) {
            const std::size_t n = reader.poll(
                [&](const ring::Record& r) {
                    if (r.type == kStop) {
                        stop = true;
                        return;
                    }
                    std::uint64_t k;
                    std::memcpy(&k, r.payload.data(), 8);
                    if (k != expect++) bad = true;
                    writer.publish(kPing, r.payload);
                },
                [&](const ring::Loss&) { bad = true; });
            if (n == 0) spin_or_yield(idle);
            if (std::chrono::steady_clock::now() > deadline) return 3;
        }
        return bad ? 2 : 0;
    });
    ASSERT_GT(child, 0);
    ring::Writer writer(region, 0);
    bool ready = false;
    const auto give_up = std::chrono::steady_clock::now() + 10s;
    while (!ready && std::chrono::steady_clock::now() < give_up) {
        parent_reader.poll([&](const ring::Record& r) { ready = r.type == kReady; },
                           [](const ring::Loss&) {});
        if (!ready) parent_reader.wait(100ms);
    }
    ASSERT_TRUE(ready);
    std::uint64_t done = 0;
    bool ok = true;
    const auto t0 = std::chrono::steady_clock::now();
    const auto budget = t0 + 2s;
    for (std::uint64_t k = 0; k < kRounds && ok && std::chrono::steady_clock::now() < budget; ++k) {
        writer.publish(kPing, std::as_bytes(std::span(&k, 1)));
        bool back = false;
        unsigned idle = 0;
        while (!back && ok) {
            const std::size_t n = parent_reader.poll(
                [&](const ring::Record& r) {
                    std::uint64_t got;
                    std::memcpy(&got, r.payload.data(), 8);
                    if (got != k) ok = false;
                    back = true;
                },
                [&](const ring::Loss&) { ok = false; });
            if (n == 0) spin_or_yield(idle);
            if (std::chrono::steady_clock::now() > give_up) ok = false;
        }
        if (back) ++done;
    }
    const auto took = std::chrono::steady_clock::now() - t0;
    writer.publish(kStop, {});
    EXPECT_TRUE(ok);
    EXPECT_EQ(wait_child(child), 0);
    EXPECT_GT(done, 0u);
    const double hop_us = std::chrono::duration<double, std::micro>(took).count() / (2.0 * done);
    std::printf("ring hop (one way, spinning): %.3f us average over %llu round trips\n", hop_us,
                static_cast<unsigned long long>(done));
}

}  // namespace
