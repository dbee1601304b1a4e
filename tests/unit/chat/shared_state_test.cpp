// SharedState alone: registry, rooms, history bounds, eviction, table reuse.
#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "chat/shared_state.hpp"

namespace chat = steerchat::chat;
using Status = chat::SharedState::Status;

namespace {

TEST(SharedState, ClaimIsUniqueAndReleaseNeedsTheOwner) {
    auto s = chat::SharedState::create({.max_users = 8, .max_rooms = 4, .max_memberships = 16});
    std::uint64_t id1 = 0, id2 = 0;
    std::vector<std::string> users;
    EXPECT_EQ(s.claim("alice", 0, &id1, &users), Status::ok);
    EXPECT_EQ(users, std::vector<std::string>{"alice"});
    EXPECT_EQ(s.claim("alice", 1, &id2, nullptr), Status::taken);
    EXPECT_EQ(s.claim("bob", 1, &id2, &users), Status::ok);
    EXPECT_GT(id2, id1);
    std::sort(users.begin(), users.end());
    EXPECT_EQ(users, (std::vector<std::string>{"alice", "bob"}));
    EXPECT_EQ(s.release("alice", 1, id1), 0u) << "slot 1 does not own alice";
    EXPECT_EQ(s.release("alice", 0, id1 + 100), 0u) << "wrong login id";
    const std::uint64_t off = s.release("alice", 0, id1);
    EXPECT_GT(off, id2);
    EXPECT_EQ(s.lookup("alice"), 0u);
    unsigned slot = 9;
    EXPECT_EQ(s.lookup("bob", &slot), id2);
    EXPECT_EQ(slot, 1u);
    EXPECT_EQ(s.claim("alice", 1, &id1, nullptr), Status::ok);
}

TEST(SharedState, FullRegistrySaysSo) {
    auto s = chat::SharedState::create({.max_users = 3});
    std::uint64_t id;
    for (int i = 0; i < 3; ++i)
        ASSERT_EQ(s.claim("u" + std::to_string(i), 0, &id, nullptr), Status::ok);
    EXPECT_EQ(s.claim("u3", 0, &id, nullptr), Status::full);
    ASSERT_NE(s.release("u1", 0, s.lookup("u1")), 0u);
    EXPECT_EQ(s.claim("u3", 0, &id, nullptr), Status::ok);
}

// The open-addressing table with backward-shift deletion against a reference set, through many
// random claims and releases in a small table (lots of collisions and wrap-around).
TEST(SharedState, RegistryMatchesAReferenceUnderChurn) {
    auto s = chat::SharedState::create({.max_users = 40});
    std::set<std::string> ref;
    std::mt19937 rng(7);
    for (int step = 0; step < 20000; ++step) {
        const std::string name = "n" + std::to_string(rng() % 60);
        std::uint64_t id = 0;
        if (rng() % 2) {
            const Status st = s.claim(name, 0, &id, nullptr);
            if (ref.count(name))
                ASSERT_EQ(st, Status::taken);
            else if (ref.size() == 40)
                ASSERT_EQ(st, Status::full);
            else {
                ASSERT_EQ(st, Status::ok);
                ref.insert(name);
            }
        } else {
            const std::uint64_t login = s.lookup(name);
            ASSERT_EQ(login != 0, ref.count(name) == 1) << name;
            if (login) {
                ASSERT_NE(s.release(name, 0, login), 0u);
                ref.erase(name);
            }
        }
    }
    for (int i = 0; i < 60; ++i) {
        const std::string name = "n" + std::to_string(i);
        EXPECT_EQ(s.lookup(name) != 0, ref.count(name) == 1) << name;
    }
    EXPECT_EQ(s.stats().users, ref.size());
}

TEST(SharedState, MembersAndHistoryKeepTheLast100InOrder) {
    auto s = chat::SharedState::create({});
    std::uint64_t id;
    ASSERT_EQ(s.claim("a", 0, &id, nullptr), Status::ok);
    ASSERT_EQ(s.claim("b", 0, &id, nullptr), Status::ok);
    EXPECT_EQ(s.post("r", "a", "x", 1, &id), Status::not_member);
    std::uint64_t mark = 0;
    std::vector<std::string> members;
    std::vector<chat::StoredMessage> hist;
    ASSERT_EQ(s.join("r", "a", &mark, &members, &hist), Status::ok);
    ASSERT_EQ(s.join("r", "b", &mark, &members, &hist), Status::ok);
    EXPECT_EQ(members, (std::vector<std::string>{"a", "b"}));
    EXPECT_TRUE(hist.empty());
    std::vector<std::uint64_t> ids;
    for (int i = 0; i < 150; ++i) {
        ASSERT_EQ(s.post("r", i % 2 ? "a" : "b", "m" + std::to_string(i), 1000 + i, &id),
                  Status::ok);
        ids.push_back(id);
    }
    hist = s.history("r");
    ASSERT_EQ(hist.size(), 100u);
    for (int k = 0; k < 100; ++k) {
        EXPECT_EQ(hist[k].text, "m" + std::to_string(50 + k));
        EXPECT_EQ(hist[k].id, ids[50 + k]);
        EXPECT_EQ(hist[k].ts, 1050 + k);
        EXPECT_EQ(hist[k].from, (50 + k) % 2 ? "a" : "b");
    }
    EXPECT_EQ(s.leave("r", "a"), Status::ok);
    EXPECT_EQ(s.leave("r", "a"), Status::not_member);
    EXPECT_EQ(s.members("r"), std::vector<std::string>{"b"});
    EXPECT_EQ(s.post("r", "a", "late", 1, &id), Status::not_member);
}

TEST(SharedState, HistoryIsBoundedByBytesAndWrapsTheTextRing) {
    auto s = chat::SharedState::create({.history_bytes = 1000, .max_text = 300});
    std::uint64_t id;
    ASSERT_EQ(s.claim("a", 0, &id, nullptr), Status::ok);
    ASSERT_EQ(s.join("r", "a", nullptr, nullptr, nullptr), Status::ok);
    for (int i = 0; i < 40; ++i)
        ASSERT_EQ(s.post("r", "a", std::string(150 + i, static_cast<char>('a' + i % 26)), i, &id),
                  Status::ok);
    const auto hist = s.history("r");
    // The newest messages that fit in 1000 bytes: 189 + 188 + 187 + 186 + 185 = 935.
    ASSERT_EQ(hist.size(), 5u);
    for (int k = 0; k < 5; ++k) {
        const int i = 35 + k;
        EXPECT_EQ(hist[k].text, std::string(150 + i, static_cast<char>('a' + i % 26))) << k;
    }
}

TEST(SharedState, EvictSlotFreesItsNamesAndMemberships) {
    auto s = chat::SharedState::create({});
    std::uint64_t id;
    ASSERT_EQ(s.claim("a", 0, &id, nullptr), Status::ok);
    ASSERT_EQ(s.claim("b", 1, &id, nullptr), Status::ok);
    ASSERT_EQ(s.claim("c", 1, &id, nullptr), Status::ok);
    for (const char* n : {"a", "b", "c"})
        ASSERT_EQ(s.join("r", n, nullptr, nullptr, nullptr), Status::ok);
    const std::uint64_t before = s.stats().last_id;
    auto ev = s.evict_slot(1);
    ASSERT_EQ(ev.size(), 2u);
    std::sort(ev.begin(), ev.end(), [](auto& x, auto& y) { return x.name < y.name; });
    EXPECT_EQ(ev[0].name, "b");
    EXPECT_EQ(ev[1].name, "c");
    EXPECT_GT(ev[0].id, before);
    EXPECT_NE(ev[0].id, ev[1].id);
    EXPECT_EQ(s.members("r"), std::vector<std::string>{"a"});
    EXPECT_EQ(s.lookup("b"), 0u);
    EXPECT_EQ(s.claim("b", 2, &id, nullptr), Status::ok);
    EXPECT_TRUE(s.evict_slot(1).empty());
    EXPECT_EQ(s.stats().memberships, 1u);
}

TEST(SharedState, FullRoomTableReusesTheOldestEmptyRoom) {
    auto s = chat::SharedState::create({.max_rooms = 2});
    std::uint64_t id;
    ASSERT_EQ(s.claim("a", 0, &id, nullptr), Status::ok);
    ASSERT_EQ(s.join("r1", "a", nullptr, nullptr, nullptr), Status::ok);
    ASSERT_EQ(s.join("r2", "a", nullptr, nullptr, nullptr), Status::ok);
    EXPECT_EQ(s.join("r3", "a", nullptr, nullptr, nullptr), Status::full);
    ASSERT_EQ(s.post("r1", "a", "old", 1, &id), Status::ok);
    ASSERT_EQ(s.leave("r1", "a"), Status::ok);
    ASSERT_EQ(s.join("r3", "a", nullptr, nullptr, nullptr), Status::ok);
    EXPECT_TRUE(s.history("r1").empty());
    EXPECT_TRUE(s.history("r3").empty());
    EXPECT_EQ(s.members("r2"), std::vector<std::string>{"a"});
    EXPECT_EQ(s.stats().rooms, 2u);
}

TEST(SharedState, RejectsImpossibleOptions) {
    EXPECT_THROW(chat::SharedState::create({.max_users = 0}), std::invalid_argument);
    EXPECT_THROW(chat::SharedState::create({.history_bytes = 10, .max_text = 100}),
                 std::invalid_argument);
}

}  // namespace

namespace {

// Between hosts (--redis): ids carry the host in their low bits and a Lamport clock above.
TEST(SharedState, IdsOfHostsNeverCollideAndTheClockPassesRemoteIds) {
    auto a = chat::SharedState::create({.host_bits = 8, .host_id = 1});
    auto b = chat::SharedState::create({.host_bits = 8, .host_id = 2});
    const std::uint64_t a1 = a.next_id(), b1 = b.next_id();
    EXPECT_EQ(a1 & 0xff, 1u);
    EXPECT_EQ(b1 & 0xff, 2u);
    EXPECT_NE(a1, b1);
    // b applies a's messages: its clock moves past them, so its next id is larger.
    for (int i = 0; i < 10; ++i)
        a.next_id();
    const std::uint64_t a_late = a.next_id();
    b.observe(a_late);
    EXPECT_GT(b.next_id(), a_late);
    EXPECT_THROW(chat::SharedState::create({.host_bits = 8, .host_id = 256}),
                 std::invalid_argument);
}

// A remote message keeps its id in history, takes a local order id, and history comes back
// sorted by id on every host.
TEST(SharedState, RemoteMessagesKeepTheirIdsAndHistoryIsOrderedById) {
    auto s = chat::SharedState::create({.host_bits = 8, .host_id = 2});
    std::uint64_t login = 0, mark = 0, own = 0;
    ASSERT_EQ(s.claim("bob", 0, &login, nullptr), Status::ok);
    ASSERT_EQ(s.join("r", "bob", &mark, nullptr, nullptr), Status::ok);
    const std::uint64_t remote = (std::uint64_t{500} << 8) | 1;  // host 1, clock 500
    const std::uint64_t seq = s.post_remote("r", "amy", "from afar", 42, remote);
    EXPECT_GT(seq, remote) << "the local order id is past the remote id";
    EXPECT_GT(seq, mark) << "so a member who joined before gets it live";
    ASSERT_EQ(s.post("r", "bob", "mine", 43, &own), Status::ok);
    const std::uint64_t older = (std::uint64_t{400} << 8) | 3;  // arrives late, ordered first
    EXPECT_NE(s.post_remote("r", "cat", "older", 41, older), 0u);
    const auto h = s.history("r");
    ASSERT_EQ(h.size(), 3u);
    EXPECT_EQ(h[0].id, older);
    EXPECT_EQ(h[1].id, remote);
    EXPECT_EQ(h[1].from, "amy");
    EXPECT_EQ(h[2].id, own);
}

}  // namespace
