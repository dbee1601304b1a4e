// Real BPF steering with real sockets: every client IP reaches exactly one worker, the one the
// C++ jhash + Maglev prediction names.
#include <arpa/inet.h>
#include <bpf/libbpf.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <regex>
#include <set>

#include "harness.hpp"
#include "pinned.hpp"
#include "steer/jhash.hpp"
#include "steer/maglev.hpp"
#include "steer/steering.hpp"

using namespace steerchat;
using namespace steerchat::itest;

namespace {

constexpr std::uint32_t kSeed = 0x1234abcd;

}  // namespace

TEST(Steering, EveryClientIpSticksToThePredictedWorker) {
    constexpr unsigned kWorkers = 4, kIps = 1000, kConnsPerIp = 3;
    Server srv(18201, {"--workers", "4", "--seed", "0x1234abcd"});
    ASSERT_TRUE(srv.wait_ready(kWorkers)) << srv.log();

    auto cfg = pinned_config(srv.port());
    ASSERT_TRUE(cfg);
    EXPECT_EQ(cfg->seed, kSeed);
    EXPECT_EQ(cfg->nslots, kWorkers);
    auto table = pinned_buckets(srv.port());
    ASSERT_TRUE(table);
    const std::vector<std::uint32_t> all{0, 1, 2, 3};
    EXPECT_EQ(*table, steer::maglev_table(all)) << "pinned buckets are the Maglev table";
    auto live = pinned_live_slots(srv.port(), kWorkers);
    ASSERT_EQ(std::count(live.begin(), live.end(), true), 4);
    // The pin directory holds every map and the program of the object, nothing else.
    std::set<std::string> pinned, expected;
    for (const auto& e : std::filesystem::directory_iterator(pin_path(srv.port(), "")))
        pinned.insert(e.path().filename().string());
    for (const auto& name : steer::pinned_names())
        expected.insert(name);
    EXPECT_EQ(pinned, expected);

    const auto selected_before = pinned_percpu_sum(srv.port(), "stats", STEER_STAT_SELECTED);
    std::map<int, std::set<pid_t>> pids_of_slot;
    std::vector<unsigned> load(kWorkers, 0);
    unsigned mismatches = 0, failures = 0;
    for (unsigned i = 0; i < kIps; ++i) {
        const std::string ip = client_ip(i);
        std::set<int> slots;
        for (unsigned c = 0; c < kConnsPerIp; ++c) {
            auto h = healthz(ip, srv.port());
            if (!h) {
                ++failures;
                continue;
            }
            slots.insert(h->worker);
            pids_of_slot[h->worker].insert(h->pid);
        }
        ASSERT_EQ(slots.size(), 1u) << ip << " reached " << slots.size() << " workers";
        const int got = *slots.begin();
        ASSERT_GE(got, 0);
        ASSERT_LT(got, static_cast<int>(kWorkers));
        ++load[got];
        if (got != expected_slot(ip, kSeed, *table, live)) ++mismatches;
    }
    EXPECT_EQ(failures, 0u);
    EXPECT_EQ(mismatches, 0u) << "the kernel chose differently from the C++ prediction";

    const double mean = static_cast<double>(kIps) / kWorkers;
    for (unsigned w = 0; w < kWorkers; ++w) {
        EXPECT_GT(load[w], 0u) << "worker " << w << " unused";
        EXPECT_LE(load[w] / mean, 1.25) << "worker " << w << " has " << load[w] << " IPs";
        EXPECT_EQ(pids_of_slot[w].size(), 1u) << "one process per slot";
    }
    // Every connection was counted as a direct selection by the program.
    const auto selected = pinned_percpu_sum(srv.port(), "stats", STEER_STAT_SELECTED);
    EXPECT_GE(selected - selected_before, kIps * kConnsPerIp);
    EXPECT_EQ(pinned_percpu_sum(srv.port(), "stats", STEER_STAT_FALLBACK), 0u);
    EXPECT_EQ(pinned_percpu_sum(srv.port(), "stats", STEER_STAT_FAILED), 0u);
}

TEST(Steering, Ipv6ClientsStickByAddressOrByPrefix) {
    ASSERT_TRUE(enable_ipv6_test_prefix());
    const std::vector<std::uint32_t> all{0, 1, 2, 3};
    const auto table = steer::maglev_table(all);
    const bool live[4] = {true, true, true, true};
    auto predict = [&](const std::string& ip, bool prefix64) {
        in6_addr a{};
        inet_pton(AF_INET6, ip.c_str(), &a);
        return steer::predict_slot(steer::hash_client(a, kSeed, prefix64), table, live);
    };
    auto v6 = [](unsigned net, unsigned host) {
        return "2001:db8:" + std::to_string(net / 100 + 1) + ":" + std::to_string(net % 100) +
               "::" + std::to_string(host + 1);
    };
    {
        // Whole-address hashing: hosts of one /64 spread over the workers.
        Server srv(18204, {"--workers", "4", "--seed", "0x1234abcd"});
        ASSERT_TRUE(srv.wait_ready(4)) << srv.log();
        std::set<int> used;
        for (unsigned i = 0; i < 200; ++i) {
            const std::string ip = v6(i % 10, i);
            auto a = healthz(ip, srv.port()), b = healthz(ip, srv.port());
            ASSERT_TRUE(a && b) << ip;
            EXPECT_EQ(a->worker, b->worker) << ip;
            EXPECT_EQ(a->worker, predict(ip, false)) << ip;
            used.insert(a->worker);
        }
        EXPECT_EQ(used.size(), 4u);
        EXPECT_GE(pinned_percpu_sum(srv.port(), "stats", STEER_STAT_IPV6), 400u);
    }
    {
        // --ipv6-prefix64: every host of a /64 reaches the worker of its prefix.
        Server srv(18205, {"--workers", "4", "--seed", "0x1234abcd", "--ipv6-prefix64"});
        ASSERT_TRUE(srv.wait_ready(4)) << srv.log();
        std::set<int> used;
        for (unsigned net = 0; net < 40; ++net) {
            std::set<int> slots;
            for (unsigned host = 0; host < 5; ++host) {
                auto h = healthz(v6(net, host * 97), srv.port());
                ASSERT_TRUE(h) << v6(net, host);
                slots.insert(h->worker);
            }
            ASSERT_EQ(slots.size(), 1u) << "prefix " << v6(net, 0) << " split over workers";
            EXPECT_EQ(*slots.begin(), predict(v6(net, 0), true));
            used.insert(*slots.begin());
        }
        EXPECT_EQ(used.size(), 4u);
    }
}

TEST(Steering, KernelModeIsNotSticky) {
    // The baseline the BPF program fixes: plain SO_REUSEPORT spreads one IP's connections.
    Server srv(18202, {"--workers", "4", "--steering", "kernel"});
    ASSERT_TRUE(srv.wait_ready(4)) << srv.log();
    unsigned spread = 0;
    for (unsigned i = 0; i < 50; ++i) {
        std::set<int> slots;
        for (int c = 0; c < 6; ++c)
            if (auto h = healthz(client_ip(i), srv.port())) slots.insert(h->worker);
        spread += slots.size() > 1;
    }
    EXPECT_GT(spread, 25u) << "most IPs should reach several workers without BPF steering";
    EXPECT_FALSE(std::filesystem::exists("/sys/fs/bpf/steerchat/18202"));
}

TEST(Steering, InspectDescribesEverySlotAndWorker) {
    Server srv(18203, {"--workers", "4", "--seed", "0x1234abcd"});
    ASSERT_TRUE(srv.wait_ready(4)) << srv.log();
    std::map<int, pid_t> pid_of;
    for (unsigned i = 0; i < 200 && pid_of.size() < 4; ++i)
        if (auto h = healthz(client_ip(i), srv.port())) pid_of[h->worker] = h->pid;
    ASSERT_EQ(pid_of.size(), 4u);

    auto [rc, out] = run_command((source_dir() / "scripts/inspect").string() + " 18203");
    ASSERT_EQ(rc, 0) << out;
    // One table row per slot: "<slot>  yes  <cookie>  <worker pid> ..."
    for (auto [slot, pid] : pid_of) {
        const std::regex row("\\n\\s*" + std::to_string(slot) + "\\s+yes\\s+0x[0-9a-f]+\\s+" +
                             std::to_string(pid) + "\\b");
        EXPECT_TRUE(std::regex_search(out, row))
            << "no row for slot " << slot << " with worker pid " << pid << ":\n"
            << out;
    }
    EXPECT_NE(out.find("0x1234abcd"), std::string::npos) << "seed shown:\n" << out;

    auto [rc2, out2] = run_command((source_dir() / "scripts/inspect").string() + " 18299");
    EXPECT_NE(rc2, 0) << "no instance on 18299:\n" << out2;
    EXPECT_NE(out2.find("18299"), std::string::npos) << out2;
}
