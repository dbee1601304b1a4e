// The shared metrics mapping: single-writer counters, a block per slot seen by every process that
// inherited the mapping, the master's reset of a dead worker's block, and the text exposition
// (one HELP/TYPE per family, every serving slot's samples).
#include "metrics/metrics.hpp"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>

using namespace steerchat;

namespace {

struct PartStats {
    metrics::Counter a;
    metrics::Counter b;
};

struct OtherStats {
    metrics::Counter x;
};

std::size_t count_of(const std::string& text, const std::string& what) {
    std::size_t n = 0;
    for (auto at = text.find(what); at != std::string::npos; at = text.find(what, at + 1))
        ++n;
    return n;
}

}  // namespace

TEST(MetricsCounter, CountsLikeTheIntegerItReplaces) {
    PartStats s{};
    EXPECT_EQ(s.a, 0u);
    ++s.a;
    s.a += 5;
    s.b = 7;
    --s.b;
    EXPECT_EQ(s.a, 6u);
    EXPECT_EQ(s.b.load(), 6u);
    const PartStats copy = s;
    ++s.a;
    EXPECT_EQ(copy.a, 6u);
    EXPECT_EQ(s.a, 7u);
}

TEST(MetricsSlot, WithoutARegionKeepsItsStatsPrivateAndSeesOnlyItself) {
    metrics::Slot slot(nullptr, 3);
    auto& s = slot.make<PartStats>();
    ++s.a;
    const auto peers = slot.peers(s);
    ASSERT_EQ(peers.size(), 1u);
    EXPECT_EQ(peers[0].first, 3u);
    EXPECT_EQ(peers[0].second, &s);
    metrics::Cell<OtherStats> owned(nullptr);
    ++owned->x;
    EXPECT_EQ(slot.peers(*owned).size(), 1u);
}

TEST(MetricsRegion, EveryProcessSeesEveryServingSlotsBlockAndTheMasterResetsADeadOne) {
    auto region = metrics::Region::create(3, "1.2.3", "abc");
    // The master marks slots 0 and 1 serving (slot 2 never had a worker).
    for (unsigned i : {0u, 1u})
        region.info(i).state = static_cast<std::uint64_t>(metrics::SlotState::serving);

    // Worker 1 in a child: places its stats in its block (same order as every worker).
    const pid_t child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
        metrics::Slot slot(&region, 1);
        auto& part = slot.make<PartStats>();
        auto& other = slot.make<OtherStats>();
        part.a = 11;
        part.b = 12;
        other.x = 13;
        ::_exit(0);
    }
    int status = 0;
    ASSERT_EQ(::waitpid(child, &status, 0), child);
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);

    // Worker 0 (here) finds worker 1's structs at the same offsets in its block.
    metrics::Slot slot(&region, 0);
    auto& part = slot.make<PartStats>();
    auto& other = slot.make<OtherStats>();
    part.a = 1;
    const auto peers = slot.peers(part);
    ASSERT_EQ(peers.size(), 2u);
    EXPECT_EQ(peers[0].first, 0u);
    EXPECT_EQ(peers[0].second->a, 1u);
    EXPECT_EQ(peers[1].first, 1u);
    EXPECT_EQ(peers[1].second->a, 11u);
    EXPECT_EQ(peers[1].second->b, 12u);
    EXPECT_EQ(slot.peers(other)[1].second->x, 13u);

    // Its worker died: the master stops showing it, then clears its block before the respawn.
    region.info(1).state = static_cast<std::uint64_t>(metrics::SlotState::respawning);
    EXPECT_EQ(slot.peers(part).size(), 1u);
    region.reset_block(1);
    region.info(1).state = static_cast<std::uint64_t>(metrics::SlotState::serving);
    EXPECT_EQ(slot.peers(part)[1].second->a, 0u);
    EXPECT_EQ(slot.peers(other)[1].second->x, 0u);
    EXPECT_EQ(part.a, 1u) << "another slot's reset leaves this one alone";
}

TEST(MetricsSlot, ABlockTooSmallForItsStatsIsAnError) {
    struct Huge {
        metrics::Counter c[metrics::kSlotBytes / 8 + 1];
    };
    metrics::Slot slot(nullptr, 0);
    EXPECT_THROW(slot.make<Huge>(), std::length_error);
}

TEST(MetricsText, AFamilyHasOneHelpAndEveryWorkersSamples) {
    auto region = metrics::Region::create(2, "1.2.3", "abc");
    for (unsigned i : {0u, 1u})
        region.info(i).state = static_cast<std::uint64_t>(metrics::SlotState::serving);
    metrics::Slot w0(&region, 0);
    auto& s0 = w0.make<PartStats>();
    // Worker 1's block as another process would write it (same offset).
    auto* s1 = reinterpret_cast<PartStats*>(region.block(1) +
                                            (reinterpret_cast<std::byte*>(&s0) - region.block(0)));
    s0.a = 3;
    s1->a = 4;
    s1->b = 9;

    std::string out;
    metrics::Text t(out);
    t.per_worker("x_total", "counter", "X.", w0.peers(s0), &PartStats::a);
    t.per_worker("y_total", "counter", "Y.", w0.peers(s0), "kind",
                 {{"a", &PartStats::a}, {"b", &PartStats::b}});
    EXPECT_EQ(count_of(out, "# HELP x_total"), 1u);
    EXPECT_EQ(count_of(out, "# TYPE x_total counter"), 1u);
    EXPECT_NE(out.find("x_total{worker=\"0\"} 3\n"), std::string::npos) << out;
    EXPECT_NE(out.find("x_total{worker=\"1\"} 4\n"), std::string::npos) << out;
    EXPECT_NE(out.find("y_total{worker=\"1\",kind=\"b\"} 9\n"), std::string::npos) << out;
    EXPECT_EQ(count_of(out, "# HELP y_total"), 1u);
}

TEST(MetricsText, TheLatencyHistogramIsCumulativeInSeconds) {
    metrics::LatencyHistogram h{};
    h.observe(40'000);         // 40 us: the first bucket
    h.observe(3'000'000);      // 3 ms
    h.observe(9'000'000'000);  // 9 s: +Inf only
    std::string out;
    metrics::Text(out).histogram("lat_seconds", "L.", {{0u, &h}});
    EXPECT_NE(out.find("# TYPE lat_seconds histogram"), std::string::npos);
    EXPECT_NE(out.find("lat_seconds_bucket{worker=\"0\",le=\"5e-05\"} 1\n"), std::string::npos)
        << out;
    EXPECT_NE(out.find("lat_seconds_bucket{worker=\"0\",le=\"0.005\"} 2\n"), std::string::npos)
        << out;
    EXPECT_NE(out.find("lat_seconds_bucket{worker=\"0\",le=\"2.5\"} 2\n"), std::string::npos);
    EXPECT_NE(out.find("lat_seconds_bucket{worker=\"0\",le=\"+Inf\"} 3\n"), std::string::npos);
    EXPECT_NE(out.find("lat_seconds_count{worker=\"0\"} 3\n"), std::string::npos);
    EXPECT_NE(out.find("lat_seconds_sum{worker=\"0\"} 9.00304\n"), std::string::npos) << out;
}

TEST(MetricsHost, BuildInfoStatesAndTheMastersFigures) {
    auto region = metrics::Region::create(2, "1.2.3", "abc");
    region.info(0).state = static_cast<std::uint64_t>(metrics::SlotState::serving);
    region.info(0).rss_bytes = 4096;
    region.info(1).state = static_cast<std::uint64_t>(metrics::SlotState::drained);
    region.info(1).restarts = 5;
    std::string out;
    metrics::append_host_metrics(out, region);
    EXPECT_NE(out.find("steerchat_build_info{version=\"1.2.3\",revision=\"abc\"} 1\n"),
              std::string::npos)
        << out;
    EXPECT_NE(out.find("steerchat_worker_state{worker=\"1\",state=\"drained\"} 1\n"),
              std::string::npos);
    EXPECT_NE(out.find("steerchat_worker_restarts_total{worker=\"1\"} 5\n"), std::string::npos);
    EXPECT_NE(out.find("steerchat_worker_resident_memory_bytes{worker=\"0\"} 4096\n"),
              std::string::npos);
    EXPECT_EQ(out.find("steerchat_worker_resident_memory_bytes{worker=\"1\"}"), std::string::npos)
        << "a drained slot has no worker figures";
    EXPECT_EQ(out.find("steerchat_steer_"), std::string::npos) << "no BPF steering: no BPF series";
}
