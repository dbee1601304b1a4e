// SharedState alone: registry, rooms, history bounds, eviction, table reuse.
#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <chrono>
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

// Presence at scale (issue 16): a welcome lists at most max_listed names and says how many are
// online; `who` pages list every registered name once, also across releases and reuse.
TEST(SharedState, WelcomeListIsBoundedAndWhoPagesListEveryNameOnce) {
    auto s = chat::SharedState::create({.max_users = 64, .max_rooms = 4, .max_memberships = 16});
    std::set<std::string> online;
    std::vector<std::uint64_t> logins(40);
    for (int i = 0; i < 40; ++i) {
        std::vector<std::string> users;
        std::uint32_t count = 0;
        const std::string name = "u" + std::to_string(i);
        ASSERT_EQ(s.claim(name, 0, &logins[i], &users, nullptr, 0, 5, &count), Status::ok);
        online.insert(name);
        EXPECT_EQ(count, online.size());
        EXPECT_EQ(users.size(), std::min<std::size_t>(online.size(), 5));
    }
    for (int i = 0; i < 40; i += 3) {  // holes in the pool
        ASSERT_NE(s.release("u" + std::to_string(i), 0, logins[i]), 0u);
        online.erase("u" + std::to_string(i));
    }
    std::uint32_t count = 0;
    std::vector<std::string> users;
    ASSERT_EQ(s.claim("late", 0, nullptr, &users, nullptr, 0, 0, &count), Status::ok);
    online.insert("late");
    EXPECT_EQ(users.size(), online.size()) << "max_listed 0: all";
    for (const std::uint32_t limit : {1u, 4u, 7u, 1000u, 0u}) {
        std::vector<std::string> listed, page;
        std::uint64_t after = 0, next = 0;
        int pages = 0;
        do {
            EXPECT_EQ(s.who(after, limit, page, &next), online.size());
            if (limit != 0) {
                EXPECT_LE(page.size(), limit);
            }
            listed.insert(listed.end(), page.begin(), page.end());
            after = next;
            ASSERT_LT(++pages, 100);
        } while (next != 0);
        std::sort(listed.begin(), listed.end());
        EXPECT_EQ(listed, std::vector<std::string>(online.begin(), online.end())) << limit;
    }
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

TEST(SharedState, NamesPerAddressAreCountedUntilReleasedOrEvicted) {
    auto s = chat::SharedState::create({.max_users = 8});
    const chat::Address x{1}, y{2};
    std::uint64_t id = 0, id2 = 0;
    ASSERT_EQ(s.claim("a", 0, &id, nullptr, &x, 2), Status::ok);
    ASSERT_EQ(s.claim("b", 1, &id2, nullptr, &x, 2), Status::ok);
    EXPECT_EQ(s.claim("c", 0, &id, nullptr, &x, 2), Status::address_full);
    EXPECT_EQ(s.claim("c", 0, &id, nullptr, &x, 0), Status::ok) << "0: no limit";
    EXPECT_EQ(s.claim("d", 0, &id, nullptr, &y, 1), Status::ok);
    EXPECT_EQ(s.stats().addresses, 2u);
    EXPECT_EQ(s.evict_slot(0).size(), 3u);  // a, c, d
    EXPECT_EQ(s.stats().addresses, 1u);     // x: b still
    EXPECT_EQ(s.claim("e", 0, &id, nullptr, &x, 2), Status::ok);
    EXPECT_EQ(s.claim("f", 0, &id, nullptr, &x, 2), Status::address_full);
    ASSERT_NE(s.release("b", 1, id2), 0u);
    EXPECT_EQ(s.claim("f", 0, &id, nullptr, &x, 2), Status::ok);
}

// The default sizing: a host with the memory reaches a million users and 100,000 rooms, and the
// mapping stays within the budget.
TEST(SharedState, SizedForTheHostsMemory) {
    chat::SharedOptions base;
    base.history_bytes = 64 * 1024;
    const auto c = chat::shared_costs(base);
    const std::uint64_t budget = std::uint64_t{16} << 30;  // a quarter of a 64 GiB host
    const auto o = chat::sized_for(budget, base);
    EXPECT_GE(o.max_users, 1'000'000u);
    EXPECT_GE(o.max_rooms, 100'000u);
    EXPECT_EQ(o.max_memberships, o.max_users * chat::kMembershipsPerUser);
    EXPECT_LE(chat::shared_bytes(o), budget + (std::uint64_t{1} << 20));
    EXPECT_GE(chat::shared_bytes(o), budget / 2);
    EXPECT_LT(c.per_user, 256u);
    EXPECT_LT(c.per_room, 100u * 1024);
    const auto small = chat::sized_for(0, base);
    EXPECT_EQ(small.max_users, chat::kMinUsers);
    EXPECT_EQ(small.max_rooms, chat::kMinRooms);
}

// A million users and 100,000 rooms in one state: claims and lookups stay fast (the hash tables
// are sized to the pools), and an adopted state keeps the sizes.
TEST(SharedState, AMillionUsers) {
    auto s = chat::SharedState::create({.max_users = 1'000'000,
                                        .max_rooms = 100'000,
                                        .max_memberships = 1'000'000,
                                        .history_len = 4,
                                        .history_bytes = 4096});
    const auto t0 = std::chrono::steady_clock::now();
    std::uint64_t id = 0;
    for (int i = 0; i < 1'000'000; ++i)
        ASSERT_EQ(s.claim("user" + std::to_string(i), i % 8, &id, nullptr), Status::ok) << i;
    EXPECT_EQ(s.claim("one more", 0, &id, nullptr), Status::full);
    for (int i = 0; i < 100'000; ++i)
        ASSERT_EQ(s.join("room" + std::to_string(i), "user" + std::to_string(i * 10), nullptr,
                         nullptr, nullptr),
                  Status::ok);
    for (int i = 0; i < 1'000'000; i += 7)
        ASSERT_NE(s.lookup("user" + std::to_string(i)), 0u) << i;
    const auto took = std::chrono::steady_clock::now() - t0;
    EXPECT_LT(took, std::chrono::seconds(45));  // ~2 s in a Release build
    const auto st = s.stats();
    EXPECT_EQ(st.users, 1'000'000u);
    EXPECT_EQ(st.rooms, 100'000u);
    auto adopted = chat::SharedState::adopt(s.fd());
    EXPECT_EQ(adopted.options(), s.options());
    EXPECT_EQ(adopted.stats().users, 1'000'000u);
}

// A new master adopting a state reads its sizes from the header and checks them against the
// mapping: a header whose sizes do not describe it is refused, naming the mismatch.
TEST(SharedState, AdoptRefusesSizesThatDoNotDescribeTheMapping) {
    auto s = chat::SharedState::create({.max_users = 8, .max_rooms = 4});
    EXPECT_EQ(chat::SharedState::adopt(s.fd()).options().max_users, 8u);
    // The header: magic (8), layout version (4), generation (4), total size (8), then the sizes.
    const std::uint32_t bigger = 1u << 20;
    ASSERT_EQ(::pwrite(s.fd(), &bigger, sizeof bigger, 24), static_cast<ssize_t>(sizeof bigger));
    try {
        (void)chat::SharedState::adopt(s.fd());
        FAIL() << "adopted sizes that do not fit the mapping";
    } catch (const std::runtime_error& e) {
        EXPECT_NE(std::string(e.what()).find("do not describe"), std::string::npos) << e.what();
    }
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
    std::uint64_t seq = 0, own_seq = 0, older_seq = 0;
    const std::uint64_t order = s.post_remote("r", "amy", "from afar", 42, remote, &seq);
    EXPECT_GT(order, remote) << "the local order id is past the remote id";
    EXPECT_GT(order, mark) << "so a member who joined before gets it live";
    EXPECT_EQ(seq, 1u) << "it takes the room's next seq on this host, as post() does";
    ASSERT_EQ(s.post("r", "bob", "mine", 43, &own, &own_seq), Status::ok);
    EXPECT_EQ(own_seq, 2u);
    const std::uint64_t older = (std::uint64_t{400} << 8) | 3;  // arrives late, ordered first
    const std::uint64_t older_order = s.post_remote("r", "cat", "older", 41, older, &older_seq);
    EXPECT_GT(older_order, own);
    EXPECT_EQ(older_seq, 3u);
    const auto h = s.history("r");
    ASSERT_EQ(h.size(), 3u);
    EXPECT_EQ(h[0].id, older);
    EXPECT_EQ(h[0].seq, 3u);
    EXPECT_EQ(h[0].order, older_order);
    EXPECT_EQ(h[1].id, remote);
    EXPECT_EQ(h[1].from, "amy");
    EXPECT_EQ(h[1].seq, 1u);
    EXPECT_EQ(h[1].order, order);
    EXPECT_EQ(h[2].id, own);
    EXPECT_EQ(h[2].seq, 2u);
    EXPECT_EQ(h[2].order, own) << "a message of this host is ordered by its id";
    // After a seq (a worker's resend after a loss): by this host's seqs, whatever the ids.
    const auto after = s.history("r", 1);
    ASSERT_EQ(after.size(), 2u);
    EXPECT_EQ(after[0].id, older);
    EXPECT_EQ(after[1].id, own);
}

// The newest dropped id is the highest one dropped (remote messages arrive out of id order), so
// a join's `since` is complete only if every dropped message is at or before it.
TEST(SharedState, DroppedIdIsTheHighestDroppedBetweenHosts) {
    auto s = chat::SharedState::create({.history_len = 2, .host_bits = 8, .host_id = 2});
    std::uint64_t login = 0, mark = 0;
    ASSERT_EQ(s.claim("bob", 0, &login, nullptr), Status::ok);
    ASSERT_EQ(s.join("r", "bob", &mark, nullptr, nullptr), Status::ok);
    const std::uint64_t high = (std::uint64_t{900} << 8) | 1, low = (std::uint64_t{800} << 8) | 3;
    ASSERT_NE(s.post_remote("r", "amy", "high", 1, high), 0u);
    ASSERT_NE(s.post_remote("r", "cat", "low", 2, low), 0u);
    std::uint64_t id = 0;
    ASSERT_EQ(s.post("r", "bob", "a", 3, &id), Status::ok);
    ASSERT_EQ(s.post("r", "bob", "b", 4, &id), Status::ok);  // drops "high", then "low"
    chat::RoomMark rm;
    ASSERT_EQ(s.join("r", "bob", &mark, nullptr, nullptr, nullptr, &rm), Status::ok);
    EXPECT_EQ(rm.seq, 4u);
    EXPECT_EQ(rm.dropped_id, high);
}

}  // namespace
