// The master's promises: a killed worker is respawned into its slot and the connections queued
// meanwhile are served by the new worker; a slot that keeps dying is drained and its clients
// move to the others; SIGTERM exits cleanly; one instance per port; no privilege, clear error.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <future>
#include <map>
#include <thread>

#include "harness.hpp"
#include "pinned.hpp"
#include "steer/jhash.hpp"
#include "steer/maglev.hpp"

using namespace steerchat;
using namespace steerchat::itest;
using namespace std::chrono_literals;

namespace {

constexpr std::uint32_t kLifecycleSeed = 0x5eed0001;

int lifecycle_slot(const std::string& ip, const std::vector<std::uint32_t>& table,
                  const std::vector<bool>& live) {
    return itest::expected_slot(ip, kLifecycleSeed, table, live);
}

// First client address (from index `from`) that lands on `slot`.
std::string ip_for_slot(int slot, const std::vector<std::uint32_t>& table, unsigned nslots,
                        unsigned from = 0) {
    for (unsigned i = from;; ++i)
        if (lifecycle_slot(client_ip(i), table, std::vector<bool>(nslots, true)) == slot)
            return client_ip(i);
}

bool wait_gone(pid_t pid, std::chrono::milliseconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
        if (!process_alive(pid)) return true;
        std::this_thread::sleep_for(2ms);
    }
    return false;
}

}  // namespace

TEST(Lifecycle, KilledWorkerIsRespawnedAndQueuedConnectionServed) {
    Server srv(18211, {"--workers", "4", "--seed", "0x5eed0001", "--respawn-delay-ms", "700"});
    ASSERT_TRUE(srv.wait_ready(4)) << srv.log();
    auto table = *pinned_buckets(srv.port());
    const std::string ip = ip_for_slot(2, table, 4);

    // Where 200 clients land before anything happens.
    std::map<std::string, int> before;
    for (unsigned i = 0; i < 200; ++i)
        before[client_ip(i)] = healthz(client_ip(i), srv.port())->worker;

    auto h = healthz(ip, srv.port());
    ASSERT_TRUE(h);
    ASSERT_EQ(h->worker, 2);
    const pid_t old_pid = h->pid;
    ASSERT_EQ(::kill(old_pid, SIGKILL), 0);
    ASSERT_TRUE(wait_gone(old_pid, 2s)) << "worker not reaped";

    // The worker is dead; its listener (held by the master) still queues the connection.
    const auto t0 = std::chrono::steady_clock::now();
    auto during = healthz(ip, srv.port(), 10s);
    const auto waited = std::chrono::steady_clock::now() - t0;
    ASSERT_TRUE(during) << "connection made while the worker was down was lost\n" << srv.log();
    EXPECT_EQ(during->worker, 2);
    EXPECT_NE(during->pid, old_pid);
    EXPECT_GE(waited, 300ms) << "answered before the respawn delay: was the worker really down?";
    EXPECT_NE(srv.log().find("worker 2 was killed by signal 9"), std::string::npos) << srv.log();

    for (auto& [cip, slot] : before) {
        auto now = healthz(cip, srv.port());
        ASSERT_TRUE(now) << cip;
        EXPECT_EQ(now->worker, slot) << cip << " moved after the respawn";
    }
}

TEST(Lifecycle, SlotThatKeepsDyingIsDrainedAndItsClientsMove) {
    Server srv(18212, {"--workers", "4", "--seed", "0x5eed0001", "--respawn-delay-ms", "20",
                       "--max-restarts", "3", "--restart-window", "60"});
    ASSERT_TRUE(srv.wait_ready(4)) << srv.log();
    auto table = *pinned_buckets(srv.port());
    const std::string ip = ip_for_slot(1, table, 4);

    std::map<std::string, int> before;
    for (unsigned i = 0; i < 300; ++i)
        before[client_ip(i)] = healthz(client_ip(i), srv.port())->worker;

    // Clients of slot 1 whose connections will be queued on its listener when it is drained.
    std::vector<std::string> queued_ips;
    for (unsigned i = 1000; queued_ips.size() < 5; ++i)
        if (lifecycle_slot(client_ip(i), table, std::vector<bool>(4, true)) == 1)
            queued_ips.push_back(client_ip(i));
    std::vector<std::future<std::optional<Health>>> queued;

    for (int death = 1; death <= 3; ++death) {
        auto h = healthz(ip, srv.port(), 10s);
        ASSERT_TRUE(h) << "death " << death << "\n" << srv.log();
        ASSERT_EQ(h->worker, 1);
        if (death == 3) {
            // Freeze the worker so connections pile up in its accept queue, then kill it: the
            // drain must migrate them to live workers instead of resetting them.
            ASSERT_EQ(::kill(h->pid, SIGSTOP), 0);
            for (auto& qip : queued_ips)
                queued.push_back(std::async(std::launch::async,
                                            [qip, &srv] { return healthz(qip, srv.port(), 10s); }));
            std::this_thread::sleep_for(300ms);  // the connections are established and queued
        }
        ASSERT_EQ(::kill(h->pid, SIGKILL), 0);
        ASSERT_TRUE(wait_gone(h->pid, 2s));
    }
    for (auto& f : queued) {
        auto h = f.get();
        ASSERT_TRUE(h) << "a connection queued on the drained listener was lost\n" << srv.log();
        EXPECT_NE(h->worker, 1);
    }
    EXPECT_GE(pinned_percpu_sum(srv.port(), "stats", STEER_STAT_MIGRATED), queued_ips.size());
    // Drained: slot 1 gone from the socket array and from the bucket table.
    std::vector<std::uint32_t> after_table;
    for (int tries = 0; tries < 200; ++tries) {
        after_table = *pinned_buckets(srv.port());
        if (std::find(after_table.begin(), after_table.end(), 1u) == after_table.end()) break;
        std::this_thread::sleep_for(10ms);
    }
    const std::vector<std::uint32_t> three{0, 2, 3};
    EXPECT_EQ(after_table, steer::maglev_table(three));
    auto live = pinned_live_slots(srv.port(), 4);
    EXPECT_FALSE(live[1]);
    EXPECT_NE(srv.log().find("draining slot 1"), std::string::npos) << srv.log();

    unsigned moved_others = 0, others = 0;
    for (auto& [cip, old_slot] : before) {
        auto h = healthz(cip, srv.port());
        ASSERT_TRUE(h) << cip << "\n" << srv.log();
        EXPECT_EQ(h->worker, lifecycle_slot(cip, after_table, live)) << cip;
        EXPECT_NE(h->worker, 1);
        if (old_slot != 1) {
            ++others;
            moved_others += h->worker != old_slot;
        }
    }
    EXPECT_LE(moved_others * 50, others) << "Maglev keeps other clients where they were (<2% move)";
}

TEST(Lifecycle, SigtermExitsZeroQuicklyAndRemovesPins) {
    Server srv(18213, {"--workers", "4"});
    ASSERT_TRUE(srv.wait_ready(4)) << srv.log();
    ASSERT_TRUE(std::filesystem::exists("/sys/fs/bpf/steerchat/18213/buckets"));
    std::vector<pid_t> workers;
    for (unsigned i = 0; i < 100 && workers.size() < 4; ++i) {
        auto h = healthz(client_ip(i), srv.port());
        if (h && std::find(workers.begin(), workers.end(), h->pid) == workers.end())
            workers.push_back(h->pid);
    }
    ASSERT_EQ(workers.size(), 4u);

    const auto t0 = std::chrono::steady_clock::now();
    srv.signal(SIGTERM);
    auto st = srv.wait_exit(5s);
    ASSERT_TRUE(st) << "did not exit within 5 s\n" << srv.log();
    EXPECT_TRUE(WIFEXITED(*st) && WEXITSTATUS(*st) == 0) << srv.log();
    EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s);
    EXPECT_FALSE(std::filesystem::exists("/sys/fs/bpf/steerchat/18213"));
    EXPECT_FALSE(std::filesystem::exists("/run/steerchat/18213.lock"));
    for (pid_t w : workers)
        EXPECT_FALSE(process_alive(w)) << "worker " << w << " left behind";
    EXPECT_FALSE(healthz(client_ip(0), 18213, 500ms)) << "still accepting after exit";
}

TEST(Lifecycle, SecondInstanceOnTheSamePortIsRefused) {
    Server first(18214, {"--workers", "2"});
    ASSERT_TRUE(first.wait_ready(2)) << first.log();
    Server second(18214, {"--workers", "2"});
    auto st = second.wait_exit(5s);
    ASSERT_TRUE(st) << "second instance kept running";
    EXPECT_TRUE(WIFEXITED(*st) && WEXITSTATUS(*st) != 0);
    EXPECT_NE(second.log().find("already serving port 18214"), std::string::npos) << second.log();
    EXPECT_NE(second.log().find(std::to_string(first.pid())), std::string::npos)
        << "names the running instance's pid:\n"
        << second.log();
    // The first one is unharmed: its pins and workers are still there.
    EXPECT_TRUE(std::filesystem::exists("/sys/fs/bpf/steerchat/18214/sockets"));
    EXPECT_TRUE(healthz(client_ip(1), 18214));
}

TEST(Lifecycle, WithoutPrivilegeBpfSteeringFailsWithTheFix) {
    // Drop to nobody (no capabilities) and run with a writable lock directory.
    char dir[] = "/tmp/steerchat-nopriv-XXXXXX";
    ASSERT_NE(::mkdtemp(dir), nullptr);
    ::chmod(dir, 0777);
    auto [rc, out] = run_command(std::string("setpriv --reuid=65534 --regid=65534 --clear-groups "
                                             "--inh-caps=-all ") +
                                 server_binary() + " --port 18215 --workers 2 --run-dir " + dir);
    std::filesystem::remove_all(dir);
    EXPECT_NE(rc, 0) << out;
    EXPECT_NE(out.find("CAP_BPF"), std::string::npos) << out;
    EXPECT_NE(out.find("--steering kernel"), std::string::npos) << out;
    EXPECT_EQ(out.find("terminate called"), std::string::npos) << "no crash:\n" << out;
    EXPECT_FALSE(std::filesystem::exists("/sys/fs/bpf/steerchat/18215"));
}

TEST(Lifecycle, BadOptionsExitWithUsage) {
    for (const char* args : {"--workers 0", "--steering magic", "--port 99999", "--frobnicate",
                             "foo bar --port 8080", "--user root"}) {
        auto [rc, out] = run_command(server_binary() + " " + args);
        EXPECT_EQ(rc, 2) << args << ": " << out;
        EXPECT_NE(out.find("steerchat --help"), std::string::npos) << args << ": " << out;
        EXPECT_EQ(out.find("terminate called"), std::string::npos) << args << ": " << out;
    }
}
