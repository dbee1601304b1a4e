// Forked workers, as in the server: the master (the test) creates the ring and the shared state
// before fork; each child runs its own Hub on its own io_context. Children report through pipes
// and exit codes (never gtest assertions).
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/io_context.hpp>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "chat/chat.hpp"
#include "chat_test_util.hpp"
#include "support/child_process.hpp"
#include "support/pipe.hpp"

using namespace chat_test;
using namespace std::chrono_literals;
using chat::Error;
using chat::EventType;
namespace ring = steerchat::ring;

namespace {

using steerchat::test_support::Pipe;

// Receives from `pipe` while running the loop (a worker keeps reading the ring while it waits).
bool recv_pumping(const Pipe& pipe, boost::asio::io_context& io, std::uint64_t& v,
                  std::chrono::milliseconds timeout = 30s) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!pipe.ready(0)) {
        if (std::chrono::steady_clock::now() > deadline) return false;
        pump_for(io, 1ms);
    }
    return pipe.recv(v);
}

struct Channel {
    Pipe up, down;  // child -> parent, parent -> child
};

using steerchat::test_support::fork_child;
using steerchat::test_support::wait_child;

std::uint64_t fnv(std::uint64_t h, std::string_view s) {
    for (unsigned char c : s) {
        h ^= c;
        h *= 0x100000001b3ULL;
    }
    return h;
}

std::uint64_t history_hash(const std::vector<chat::HistoryItem>& h) {
    std::uint64_t x = 0xcbf29ce484222325ULL;
    for (const auto& m : h) {
        x = fnv(x, std::to_string(m.id));
        x = fnv(x, m.from);
        x = fnv(x, m.text);
        x = fnv(x, std::to_string(m.ts));
    }
    return x;
}

constexpr ring::WriterOptions kPatientWriter{.max_wait = 2s};

TEST(ChatProcesses, TwoProcessesRacingForNamesEachNameHasOneWinner) {
    constexpr unsigned kProcs = 3;
    constexpr int kNames = 300;
    auto state = chat::SharedState::create({});
    std::vector<std::unique_ptr<Channel>> ch;
    std::vector<pid_t> pids;
    for (unsigned i = 0; i < kProcs; ++i) {
        ch.push_back(std::make_unique<Channel>());
        Channel& c = *ch.back();
        pids.push_back(fork_child([&, i]() -> int {
            std::uint64_t go = 0;
            if (!c.down.recv(go)) return 7;
            std::uint64_t wins = 0;
            for (int k = 0; k < kNames; ++k) {
                std::uint64_t id = 0;
                const auto st = state.claim("name" + std::to_string(k), i, &id, nullptr);
                if (st == chat::SharedState::Status::ok)
                    ++wins;
                else if (st != chat::SharedState::Status::taken)
                    return 3;
            }
            c.up.send(wins);
            return 0;
        }));
        ASSERT_GT(pids.back(), 0);
    }
    for (auto& c : ch)
        c->down.send(1);
    std::uint64_t total = 0;
    for (unsigned i = 0; i < kProcs; ++i) {
        std::uint64_t wins = 0;
        ASSERT_TRUE(ch[i]->up.recv(wins)) << "child " << i;
        total += wins;
    }
    for (pid_t p : pids)
        EXPECT_EQ(wait_child(p), 0);
    EXPECT_EQ(total, static_cast<std::uint64_t>(kNames)) << "every name claimed exactly once";
    EXPECT_EQ(state.stats().users, static_cast<std::uint32_t>(kNames));
    for (int k = 0; k < kNames; ++k) {
        unsigned slot = 99;
        EXPECT_NE(state.lookup("name" + std::to_string(k), &slot), 0u);
        EXPECT_LT(slot, kProcs);
    }
}

// 3 workers x 3 users, everyone in one room, 50 messages each: every user receives all 450
// exactly once, in each sender's order, `cid` only on its own; a DM to a user on the next worker;
// history read through a fresh join is identical in every process.
TEST(ChatProcesses, RoomMessagesAndDmsAcrossWorkersExactlyOnceInOrder) {
    constexpr unsigned kProcs = 3, kUsers = 3, kMsgs = 50;
    ring::Region region = ring::Region::create(kProcs, 4 << 20);
    auto state = chat::SharedState::create({});
    std::vector<std::unique_ptr<Channel>> ch;
    std::vector<pid_t> pids;
    for (unsigned i = 0; i < kProcs; ++i) {
        ch.push_back(std::make_unique<Channel>());
        Channel& c = *ch.back();
        pids.push_back(fork_child([&, i]() -> int {
            boost::asio::io_context io;
            chat::Hub hub(io.get_executor(), region, state, i, kPatientWriter);
            std::vector<std::unique_ptr<User>> users;
            auto uname = [](unsigned p, unsigned u) {
                return "u" + std::to_string(p) + std::to_string(u);
            };
            for (unsigned j = 0; j < kUsers; ++j) {
                users.push_back(std::make_unique<User>(hub));
                if (users[j]->session.login(uname(i, j)) != Error::none) return 10;
                if (users[j]->session.join("lobby") != Error::none) return 11;
            }
            c.up.send(1);  // ready: every hub exists and every user is in the room
            std::uint64_t go = 0;
            if (!recv_pumping(c.down, io, go)) return 12;
            for (unsigned k = 0; k < kMsgs; ++k) {
                for (unsigned j = 0; j < kUsers; ++j) {
                    const std::string tag =
                        std::to_string(i) + ":" + std::to_string(j) + ":" + std::to_string(k);
                    if (users[j]->session.say("lobby", tag, "\"" + tag + "\"", true) != Error::none)
                        return 13;
                }
                if (k % 10 == 0) pump_for(io, 0ms);
            }
            for (unsigned j = 0; j < kUsers; ++j) {
                if (users[j]->session.dm(uname((i + 1) % kProcs, j), "dm " + uname(i, j)) !=
                    Error::none)
                    return 14;
            }
            if (users[0]->session.dm("ghost", "x") != Error::no_such_user) return 15;
            const std::size_t want = kProcs * kUsers * kMsgs;
            const bool all = pump_until(
                io,
                [&] {
                    for (auto& u : users)
                        if (u->client.count(EventType::message) < want ||
                            u->client.count(EventType::dm) < 1)
                            return false;
                    return true;
                },
                40s);
            if (!all) return 16;
            pump_for(io, 50ms);  // anything extra (a duplicate) would arrive now
            for (unsigned j = 0; j < kUsers; ++j) {
                const auto& cl = users[j]->client;
                if (cl.count(EventType::message) != want) return 17;
                std::map<std::string, unsigned> next;  // sender -> next k
                for (const Got& g : cl.of(EventType::message)) {
                    const auto p1 = g.text.find(':'), p2 = g.text.rfind(':');
                    const std::string sender = g.text.substr(0, p2);
                    const unsigned k = std::stoul(g.text.substr(p2 + 1));
                    if (k != next[sender]++) return 18;  // per-sender order, no gap, no dup
                    const unsigned sp = std::stoul(g.text.substr(0, p1));
                    const unsigned su = std::stoul(g.text.substr(p1 + 1, p2 - p1 - 1));
                    if (g.from != uname(sp, su)) return 19;
                    const bool mine = sp == i && su == j;
                    if (g.has_cid != mine) return 20;
                    if (mine && g.cid != "\"" + g.text + "\"") return 21;
                }
                if (next.size() != kProcs * kUsers) return 22;
                const auto dms = cl.of(EventType::dm);
                if (dms.size() != 1) return 23;
                const std::string from = uname((i + kProcs - 1) % kProcs, j);
                if (dms[0].from != from || dms[0].text != "dm " + from) return 24;
            }
            // Everyone has everything, so every message is in the shared history.
            User late(hub);
            if (late.session.login("late" + std::to_string(i)) != Error::none) return 25;
            chat::Joined joined;
            if (late.session.join("lobby", &joined) != Error::none) return 26;
            if (joined.history.size() != 100) return 27;
            c.up.send(history_hash(joined.history));
            std::uint64_t bye = 0;
            if (!recv_pumping(c.down, io, bye)) return 28;
            return 0;
        }));
        ASSERT_GT(pids.back(), 0);
    }
    std::uint64_t v = 0;
    for (unsigned i = 0; i < kProcs; ++i)
        ASSERT_TRUE(ch[i]->up.recv(v)) << "ready " << i;
    for (auto& c : ch)
        c->down.send(1);
    std::vector<std::uint64_t> hashes(kProcs);
    for (unsigned i = 0; i < kProcs; ++i) {
        if (!ch[i]->up.recv(hashes[i], 60000)) {
            ADD_FAILURE() << "child " << i << " reported nothing";
            break;
        }
    }
    const auto parent_history = state.history("lobby");
    for (auto& c : ch)
        c->down.send(1);
    for (unsigned i = 0; i < kProcs; ++i)
        EXPECT_EQ(wait_child(pids[i]), 0) << "child " << i;
    ASSERT_EQ(parent_history.size(), 100u);
    for (unsigned i = 0; i < kProcs; ++i)
        EXPECT_EQ(hashes[i], history_hash(parent_history)) << "history seen by child " << i;
    for (std::size_t k = 1; k < parent_history.size(); ++k)
        EXPECT_GT(parent_history[k].id, parent_history[k - 1].id);
}

// A worker is SIGKILLed: the master evicts its slot and announces its users offline; the other
// worker's clients see `offline` for each, and the names can be claimed again.
TEST(ChatProcesses, DeadWorkersUsersAreAnnouncedOfflineAndFreed) {
    ring::Region region = ring::Region::create(2, 1 << 20);
    auto state = chat::SharedState::create({});
    Channel c0, c1;
    const pid_t observer = fork_child([&]() -> int {
        boost::asio::io_context io;
        chat::Hub hub(io.get_executor(), region, state, 0, kPatientWriter);
        User obs(hub);
        if (obs.session.login("obs") != Error::none) return 10;
        c0.up.send(1);
        // Once it has seen them online it expects them offline (a client that never saw a
        // user online is not told it went offline).
        if (!pump_until(
                io, [&] { return obs.client.count(EventType::online) == 2; }, 30s))
            return 15;
        c0.up.send(2);
        const bool both = pump_until(
            io, [&] { return obs.client.count(EventType::offline) == 2; }, 30s);
        if (!both) return 11;
        pump_for(io, 20ms);
        if (obs.client.count(EventType::offline) != 2) return 12;
        std::vector<std::string> gone;
        for (const Got& g : obs.client.of(EventType::offline))
            gone.push_back(g.from);
        std::sort(gone.begin(), gone.end());
        if (gone != std::vector<std::string>{"k1", "k2"}) return 13;
        User again(hub);
        if (again.session.login("k1") != Error::none) return 14;
        return 0;
    });
    ASSERT_GT(observer, 0);
    std::uint64_t v = 0;
    ASSERT_TRUE(c0.up.recv(v));
    const pid_t victim = fork_child([&]() -> int {
        boost::asio::io_context io;
        chat::Hub hub(io.get_executor(), region, state, 1, kPatientWriter);
        User k1(hub), k2(hub);
        if (k1.session.login("k1") != Error::none || k2.session.login("k2") != Error::none)
            return 10;
        if (k1.session.join("room") != Error::none || k2.session.join("room") != Error::none)
            return 11;
        c1.up.send(1);
        for (;;)
            pump_for(io, 10ms);
    });
    ASSERT_GT(victim, 0);
    ASSERT_TRUE(c1.up.recv(v));
    ASSERT_TRUE(c0.up.recv(v)) << "the observer saw k1 and k2 online";
    ASSERT_EQ(::kill(victim, SIGKILL), 0);
    EXPECT_EQ(wait_child(victim), 128 + SIGKILL);

    // What the master does when it reaps a worker, before respawning the slot:
    region.set_alive(1, false);
    auto evicted = state.evict_slot(1);
    chat::announce_offline(region, 1, evicted);

    std::vector<std::string> names;
    for (const auto& e : evicted)
        names.push_back(e.name);
    std::sort(names.begin(), names.end());
    EXPECT_EQ(names, (std::vector<std::string>{"k1", "k2"}));
    EXPECT_TRUE(state.members("room").empty());
    EXPECT_EQ(wait_child(observer), 0) << "10+: see the observer's return codes";
}

}  // namespace
