// Reload's plan (master/reload.hpp): which settings a running server takes from a re-read
// configuration and which need a restart.
#include "master/reload.hpp"

#include <algorithm>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>

using namespace steerchat;
using namespace steerchat::master;

namespace {

bool live(const std::string& key) {
    for (const auto& k : reload_keys())
        if (k.key == key) return k.live;
    ADD_FAILURE() << key << " is not a reload key";
    return false;
}

}  // namespace

TEST(ReloadPlan, EverySettingIsClassified) {
    std::set<std::string> known;
    for (const auto& k : reload_keys())
        EXPECT_TRUE(known.insert(k.key).second) << k.key << " twice";
    const auto settings = setting_keys();
    ASSERT_FALSE(settings.empty());
    for (const auto& key : settings)
        EXPECT_TRUE(known.count(key))
            << "setting " << key << " is not in master/reload.cpp: live or restart?";
    EXPECT_EQ(known.size(), settings.size()) << "reload.cpp names a key that is no setting";
}

TEST(ReloadPlan, LiveAndRestartKeys) {
    for (const char* key : {"max-conns-per-ip",
                            "max-conns-per-worker",
                            "http-max-header-bytes",
                            "http-first-byte-timeout-ms",
                            "http-keepalive-timeout-ms",
                            "http-header-timeout-ms",
                            "http-body-timeout-ms",
                            "ws-max-message",
                            "ws-max-queued",
                            "ws-ping-interval-ms",
                            "ws-ping-timeout-ms",
                            "allow-origin",
                            "cors-origin",
                            "eio-ping-interval-ms",
                            "eio-ping-timeout-ms",
                            "eio-max-payload",
                            "eio-max-sessions-per-ip",
                            "eio-first-poll-timeout-ms",
                            "eio-max-queued",
                            "eio-max-queued-total",
                            "chat-rate",
                            "chat-burst",
                            "chat-rate-close-after",
                            "chat-max-rooms-per-user",
                            "chat-typing-rate",
                            "chat-typing-burst",
                            "log-level",
                            "log-format",
                            "respawn-delay-ms",
                            "max-restarts",
                            "restart-window",
                            "shutdown-timeout-ms"})
        EXPECT_TRUE(live(key)) << key;
    for (const char* key :
         {"port",          "bind",          "workers",        "max-workers", "steering",
          "seed",          "ipv6-prefix64", "backlog",        "ring-size",   "user",
          "group",         "seccomp",       "bpffs-dir",      "run-dir",     "socketio-path",
          "sio-namespace", "protocol-test", "no-cpu-pinning", "ws-no-cork",  "no-encode-once"})
        EXPECT_FALSE(live(key)) << key;
}

TEST(ReloadPlan, AppliesLiveChangesAndKeepsTheRest) {
    Options running;
    running.port = 8080;
    running.workers = 4;
    running.max_conns_per_ip = 256;
    running.pin_cpus = true;
    Options reread = running;
    reread.port = 9090;
    reread.workers = 8;
    reread.pin_cpus = false;
    reread.max_conns_per_ip = 10;
    reread.cors_origins = {"https://a.example", "https://b.example"};
    reread.log_level = log::Level::debug;
    reread.max_restarts = 9;

    const ReloadPlan plan = plan_reload(running, reread);
    EXPECT_EQ(plan.changed, (std::vector<std::string>{"max-restarts", "cors-origin",
                                                      "max-conns-per-ip", "log-level"}));
    ASSERT_EQ(plan.kept.size(), 3u);
    EXPECT_EQ(plan.kept[0].key, "port");
    EXPECT_EQ(plan.kept[0].running, "8080");
    EXPECT_EQ(plan.kept[0].wanted, "9090");
    EXPECT_EQ(plan.kept[1].key, "workers");
    EXPECT_EQ(plan.kept[2].key, "no-cpu-pinning");
    EXPECT_EQ(plan.kept[2].running, "false");  // shown as the switch: pinning is on
    EXPECT_EQ(plan.kept[2].wanted, "true");

    // The next options: the live values taken, the others as they run.
    EXPECT_EQ(plan.next.max_conns_per_ip, 10u);
    EXPECT_EQ(plan.next.cors_origins, reread.cors_origins);
    EXPECT_EQ(plan.next.log_level, log::Level::debug);
    EXPECT_EQ(plan.next.max_restarts, 9u);
    EXPECT_EQ(plan.next.port, 8080);
    EXPECT_EQ(plan.next.workers, 4u);
    EXPECT_TRUE(plan.next.pin_cpus);

    const ReloadPlan same = plan_reload(running, running);
    EXPECT_TRUE(same.changed.empty());
    EXPECT_TRUE(same.kept.empty());
}
