// The chat core in one process: real ring::Region and SharedState, several Hubs (worker slots)
// on one io_context, recording clients.
#include <gtest/gtest.h>

#include <algorithm>
#include <boost/asio/io_context.hpp>
#include <memory>
#include <string>
#include <vector>

#include "chat/chat.hpp"
#include "chat_test_util.hpp"

using namespace chat_test;
using namespace std::chrono_literals;
using chat::Error;
using chat::EventType;
namespace ring = steerchat::ring;

namespace {

class ChatHub : public ::testing::Test {
  protected:
    ring::Region region = ring::Region::create(3, 1 << 20);
    chat::SharedState state = chat::SharedState::create({});
    boost::asio::io_context io;
    std::vector<std::unique_ptr<chat::Hub>> hubs;

    void SetUp() override {
        for (unsigned i = 0; i < 3; ++i)
            hubs.push_back(std::make_unique<chat::Hub>(io.get_executor(), region, state, i));
    }
    void TearDown() override { hubs.clear(); }
    chat::Hub& hub(unsigned i) { return *hubs[i]; }
    std::unique_ptr<User> user(unsigned h, const std::string& name) {
        auto u = std::make_unique<User>(hub(h));
        EXPECT_EQ(u->session.login(name), Error::none) << name;
        return u;
    }
};

TEST_F(ChatHub, NamesAreUniqueAcrossWorkersAndValidated) {
    User a(hub(0)), b(hub(1)), c(hub(0));
    chat::Welcome w;
    EXPECT_EQ(a.session.login("alice", &w), Error::none);
    EXPECT_EQ(w.users, std::vector<std::string>{"alice"});
    EXPECT_EQ(a.session.login("alice2"), Error::already_logged_in);
    EXPECT_EQ(b.session.login("alice"), Error::name_taken);
    EXPECT_EQ(c.session.login("alice"), Error::name_taken);
    for (std::string bad : {std::string(), std::string(33, 'x'), std::string("a\nb"),
                            std::string("a\x7f"), std::string("\xff"), std::string("\xc2\x85"),
                            std::string("\xed\xa0\x80"), std::string("a\0b", 3)})
        EXPECT_EQ(b.session.login(bad), Error::bad_name) << bad;
    std::string e32;
    for (int i = 0; i < 32; ++i)
        e32 += "\xc3\xa9";  // 32 x U+00E9: 64 bytes, 32 code points
    EXPECT_EQ(b.session.login(e32), Error::none);
    EXPECT_EQ(c.session.login(e32 + "e"), Error::bad_name);
    EXPECT_EQ(c.session.login(std::string(32, 'x')), Error::none);
    // Logout frees the name for any worker.
    a.session.logout();
    EXPECT_FALSE(a.session.logged_in());
    User d(hub(2));
    EXPECT_EQ(d.session.login("alice"), Error::none);
}

TEST_F(ChatHub, BeforeLoginNothingButLogin) {
    User a(hub(0));
    EXPECT_EQ(a.session.join("r"), Error::not_logged_in);
    EXPECT_EQ(a.session.say("r", "x"), Error::not_logged_in);
    EXPECT_EQ(a.session.dm("b", "x"), Error::not_logged_in);
    EXPECT_EQ(a.session.leave("r"), Error::not_logged_in);
}

TEST_F(ChatHub, PresenceReachesEveryWorkerOnceAndWelcomeListsEveryone) {
    auto a = user(0, "a");
    auto b = user(1, "b");
    ASSERT_TRUE(pump_until(io, [&] { return a->client.count(EventType::online) == 1; }));
    chat::Welcome w;
    User c(hub(2));
    ASSERT_EQ(c.session.login("c", &w), Error::none);
    std::sort(w.users.begin(), w.users.end());
    EXPECT_EQ(w.users, (std::vector<std::string>{"a", "b", "c"}));
    ASSERT_TRUE(pump_until(io, [&] {
        return a->client.count(EventType::online) == 2 && b->client.count(EventType::online) == 1;
    }));
    pump_for(io, 20ms);
    EXPECT_EQ(a->client.of(EventType::online)[0].from, "b");
    EXPECT_EQ(a->client.of(EventType::online)[1].from, "c");
    EXPECT_EQ(b->client.of(EventType::online)[0].from, "c");
    EXPECT_TRUE(c.client.got.empty()) << "c learnt about a and b from welcome, not events";

    b->session.logout();
    ASSERT_TRUE(pump_until(io, [&] {
        return a->client.count(EventType::offline) == 1 && c.client.count(EventType::offline) == 1;
    }));
    EXPECT_EQ(c.client.of(EventType::offline)[0].from, "b");
    // A session that goes away (connection closed) logs out too.
    auto d = user(1, "d");
    ASSERT_TRUE(pump_until(io, [&] { return c.client.count(EventType::online) == 1; }));
    d.reset();
    ASSERT_TRUE(pump_until(io, [&] { return c.client.count(EventType::offline) == 2; }));
    pump_for(io, 20ms);
    EXPECT_EQ(a->client.count(EventType::online), 3u);
    EXPECT_EQ(a->client.count(EventType::offline), 2u);
    EXPECT_EQ(state.lookup("d"), 0u);
}

// Someone who comes and goes before a worker reads either record is seen by nobody there:
// never an offline without its online.
TEST_F(ChatHub, PresenceComesInPairs) {
    auto a = user(0, "a");
    // d comes and goes before worker 0 reads either record: a still sees both, in order.
    { auto d = user(1, "d"); }
    ASSERT_TRUE(pump_until(io, [&] { return a->client.count(EventType::offline) == 1; }));
    auto e = user(1, "e");
    ASSERT_TRUE(pump_until(io, [&] { return a->client.count(EventType::online) == 2; }));
    e.reset();
    ASSERT_TRUE(pump_until(io, [&] { return a->client.count(EventType::offline) == 2; }));
    ASSERT_EQ(a->client.got.size(), 4u);
    const std::pair<EventType, std::string> want[] = {{EventType::online, "d"},
                                                      {EventType::offline, "d"},
                                                      {EventType::online, "e"},
                                                      {EventType::offline, "e"}};
    for (std::size_t i = 0; i < 4; ++i) {
        EXPECT_EQ(a->client.got[i].type, want[i].first) << i;
        EXPECT_EQ(a->client.got[i].from, want[i].second) << i;
    }
    EXPECT_EQ(hub(0).stats().stale_presence, 0u);
}

// Presence records from different logs are not ordered: name X logs in on worker 2, out, and
// in again on worker 0 before the observer on worker 1 reads either log. Whatever order it reads
// them in, it must end with X online, seeing only the current login.
TEST_F(ChatHub, StalePresenceFromAnotherLogIsDropped) {
    auto obs = user(1, "obs");
    {
        auto x = user(2, "x");
        x->session.logout();
    }
    auto x2 = user(0, "x");
    ASSERT_TRUE(pump_until(io, [&] { return obs->client.count(EventType::online) >= 1; }));
    pump_for(io, 30ms);
    ASSERT_EQ(obs->client.got.size(), 1u);
    EXPECT_EQ(obs->client.got[0].type, EventType::online);
    EXPECT_EQ(obs->client.got[0].from, "x");
    EXPECT_EQ(hub(1).stats().stale_presence, 2u);
}

TEST_F(ChatHub, JoinLeaveMembersAndHistory) {
    auto a = user(0, "a");
    auto b = user(1, "b");
    chat::Joined j;
    EXPECT_EQ(a->session.join("", &j), Error::bad_room);
    EXPECT_EQ(a->session.join(std::string(65, 'r'), &j), Error::bad_room);
    ASSERT_EQ(a->session.join("lobby", &j), Error::none);
    EXPECT_EQ(j.members, std::vector<std::string>{"a"});
    EXPECT_TRUE(j.history.empty());
    for (int i = 0; i < 130; ++i)
        ASSERT_EQ(a->session.say("lobby", "m" + std::to_string(i)), Error::none);
    ASSERT_EQ(b->session.join("lobby", &j), Error::none);
    EXPECT_EQ(j.members, (std::vector<std::string>{"a", "b"}));
    ASSERT_EQ(j.history.size(), 100u);
    for (int k = 0; k < 100; ++k) {
        EXPECT_EQ(j.history[k].text, "m" + std::to_string(30 + k));
        EXPECT_EQ(j.history[k].from, "a");
        if (k) {
            EXPECT_GT(j.history[k].id, j.history[k - 1].id);
        }
    }
    // b joined after those messages: none of them arrives live (the ring still carries them).
    pump_for(io, 30ms);
    EXPECT_EQ(b->client.count(EventType::message), 0u);

    EXPECT_EQ(b->session.leave("nope"), Error::not_in_room);
    EXPECT_EQ(b->session.leave("lobby"), Error::none);
    EXPECT_EQ(state.members("lobby"), std::vector<std::string>{"a"});
    EXPECT_EQ(b->session.say("lobby", "x"), Error::not_in_room);
    ASSERT_EQ(a->session.say("lobby", "after"), Error::none);
    pump_for(io, 30ms);
    EXPECT_EQ(b->client.count(EventType::message), 0u);
    // Joining twice is harmless.
    ASSERT_EQ(a->session.join("lobby", &j), Error::none);
    EXPECT_EQ(j.members, std::vector<std::string>{"a"});
}

TEST_F(ChatHub, SayReachesEveryMemberOnEveryWorkerOnceWithCidOnlyForTheSender) {
    std::vector<std::unique_ptr<User>> members;
    for (unsigned i = 0; i < 6; ++i) {
        members.push_back(user(i % 3, "m" + std::to_string(i)));
        ASSERT_EQ(members.back()->session.join("r"), Error::none);
    }
    auto outsider = user(0, "out");
    chat::Said said;
    ASSERT_EQ(members[0]->session.say("r", "hello", "\"c-1\"", true, &said), Error::none);
    ASSERT_EQ(members[4]->session.say("r", "world"), Error::none);  // no cid
    ASSERT_TRUE(pump_until(io, [&] {
        return std::all_of(members.begin(), members.end(),
                           [](auto& u) { return u->client.count(EventType::message) == 2; });
    }));
    pump_for(io, 30ms);
    for (unsigned i = 0; i < 6; ++i) {
        const auto got = members[i]->client.of(EventType::message);
        ASSERT_EQ(got.size(), 2u) << i;
        const auto& hello = got[0].text == "hello" ? got[0] : got[1];
        const auto& world = got[0].text == "hello" ? got[1] : got[0];
        EXPECT_EQ(hello.text, "hello");
        EXPECT_EQ(hello.from, "m0");
        EXPECT_EQ(hello.room, "r");
        EXPECT_EQ(hello.id, said.id);
        EXPECT_EQ(hello.ts, said.ts);
        EXPECT_EQ(hello.has_cid, i == 0) << i;
        if (i == 0) {
            EXPECT_EQ(hello.cid, "\"c-1\"");
        }
        EXPECT_EQ(world.text, "world");
        EXPECT_FALSE(world.has_cid) << "m4 gave no cid";
    }
    EXPECT_EQ(outsider->client.count(EventType::message), 0u);
    // Encode-once: recipients on one worker share a serial; the sender's copy has its own.
    const auto h0 = members[3]->client.of(EventType::message);  // worker 0, not the sender
    const auto s0 = members[0]->client.of(EventType::message);
    const auto& a = h0[0].text == "hello" ? h0[0] : h0[1];
    const auto& b = s0[0].text == "hello" ? s0[0] : s0[1];
    EXPECT_NE(a.serial, b.serial);
    const auto h1 = members[1]->client.of(EventType::message);
    const auto h4 = members[4]->client.of(EventType::message);  // worker 1, m4 is the sender of
    const auto& x = h1[0].text == "hello" ? h1[0] : h1[1];      // "world" but not of "hello"
    const auto& y = h4[0].text == "hello" ? h4[0] : h4[1];
    EXPECT_EQ(x.serial, y.serial);
}

// Typing: to every other member on every worker, once, not to the typist or outsiders; not in
// history; only from a member.
TEST_F(ChatHub, TypingReachesTheOtherMembersOnEveryWorkerAndIsNotStored) {
    std::vector<std::unique_ptr<User>> members;
    for (unsigned i = 0; i < 6; ++i) {
        members.push_back(user(i % 3, "t" + std::to_string(i)));
        ASSERT_EQ(members.back()->session.join("r"), Error::none);
    }
    auto outsider = user(0, "out");  // logged in, on the typist's worker, not in the room
    ASSERT_EQ(outsider->session.join("other"), Error::none);
    const auto records_out = hub(0).stats().records_out;
    ASSERT_EQ(members[0]->session.typing("r"), Error::none);
    EXPECT_EQ(hub(0).stats().records_out, records_out + 1);  // for the other workers
    ASSERT_TRUE(pump_until(io, [&] {
        return std::all_of(members.begin() + 1, members.end(),
                           [](auto& u) { return u->client.count(EventType::typing) == 1; });
    }));
    pump_for(io, 30ms);
    for (unsigned i = 1; i < 6; ++i) {
        const auto got = members[i]->client.of(EventType::typing);
        ASSERT_EQ(got.size(), 1u) << i;
        EXPECT_EQ(got[0].room, "r");
        EXPECT_EQ(got[0].from, "t0");
        EXPECT_EQ(got[0].id, 0u);
        EXPECT_TRUE(got[0].text.empty());
    }
    EXPECT_EQ(members[0]->client.count(EventType::typing), 0u) << "not echoed to the typist";
    EXPECT_EQ(outsider->client.count(EventType::typing), 0u);
    // Encode once: the recipients on one worker share the serial.
    EXPECT_EQ(members[1]->client.of(EventType::typing)[0].serial,
              members[4]->client.of(EventType::typing)[0].serial);

    // Only members may type, as only members may say.
    EXPECT_EQ(outsider->session.typing("r"), Error::not_in_room);
    EXPECT_EQ(outsider->session.say("r", "x"), Error::not_in_room);
    User anon(hub(1));
    EXPECT_EQ(anon.session.typing("r"), Error::not_logged_in);
    pump_for(io, 30ms);
    for (unsigned i = 0; i < 6; ++i)
        EXPECT_EQ(members[i]->client.count(EventType::typing), i == 0 ? 0u : 1u) << i;

    // Not stored: a later joiner's history is empty and nothing is replayed to it.
    auto late = user(2, "late");
    chat::Joined j;
    ASSERT_EQ(late->session.join("r", &j), Error::none);
    EXPECT_TRUE(j.history.empty());
    EXPECT_TRUE(state.history("r").empty());
    pump_for(io, 30ms);
    EXPECT_EQ(late->client.count(EventType::typing), 0u);
    // It takes no host-wide id (no lock on the shared state).
    const std::uint64_t before = state.next_id();
    ASSERT_EQ(late->session.typing("r"), Error::none);
    EXPECT_EQ(state.next_id(), before + 1);
    EXPECT_EQ(hub(0).stats().typing_drops, 0u);
}

// Room members (joined / left): every other member on every worker who joined before gets
// each change once, never the mover; a member's list (its join snapshot plus the events, minus
// the names that went offline) ends equal to the registry's, even when joins on different
// workers interleave with the ring reads; logging out sends no `left`.
TEST_F(ChatHub, MemberEventsKeepEveryMembersListTrue) {
    std::vector<std::unique_ptr<User>> users;
    std::vector<std::vector<std::string>> lists(9);  // each user's view of room r's members
    std::vector<std::size_t> seen(9, 0);             // events already applied to it
    auto join = [&](unsigned i) {
        chat::Joined j;
        ASSERT_EQ(users[i]->session.join("r", &j), Error::none);
        lists[i] = j.members;
        seen[i] = users[i]->client.got.size();  // what came before is in the snapshot or older
    };
    auto apply = [&](unsigned i) {
        auto& got = users[i]->client.got;
        for (; seen[i] < got.size(); ++seen[i]) {
            const Got& g = got[seen[i]];
            auto& l = lists[i];
            if (g.type == EventType::joined && g.room == "r") {
                EXPECT_EQ(std::count(l.begin(), l.end(), g.from), 0) << i << " twice " << g.from;
                l.push_back(g.from);
            } else if (g.type == EventType::left || g.type == EventType::offline) {
                if (g.type == EventType::left) {
                    EXPECT_EQ(g.room, "r");
                }
                std::erase(l, g.from);
            }
        }
    };
    for (unsigned i = 0; i < 9; ++i)
        users.push_back(user(i % 3, "u" + std::to_string(i)));
    pump_for(io, 20ms);
    // Joins on the three workers without pumping between some: records cross snapshots.
    for (unsigned i = 0; i < 9; ++i) {
        join(i);
        if (i % 4 == 3) pump_for(io, 5ms);
    }
    ASSERT_EQ(users[4]->session.leave("r"), Error::none);
    ASSERT_EQ(users[4]->session.leave("r"), Error::not_in_room);  // nothing more announced
    ASSERT_EQ(users[5]->session.join("r"), Error::none);          // again: nothing announced
    users[7]->session.logout();                                   // offline only
    join(4);                                                      // back
    pump_for(io, 50ms);
    std::vector<std::string> truth = state.members("r");
    std::sort(truth.begin(), truth.end());
    ASSERT_EQ(truth.size(), 8u);
    for (unsigned i = 0; i < 9; ++i) {
        if (i == 7) continue;
        apply(i);
        std::vector<std::string> l = lists[i];
        std::sort(l.begin(), l.end());
        EXPECT_EQ(l, truth) << "u" << i;
        for (const Got& g : users[i]->client.got)
            if (g.type == EventType::joined || g.type == EventType::left) {
                EXPECT_NE(g.from, "u" + std::to_string(i)) << "not to the mover";
                EXPECT_GT(g.id, 0u);
            }
    }
    // Counts: u0 saw every later join once (u1..u8 and u4 again), u4's leave, and no left for u7.
    EXPECT_EQ(users[0]->client.count(EventType::joined), 9u);
    EXPECT_EQ(users[0]->client.count(EventType::left), 1u);
    EXPECT_EQ(users[8]->client.count(EventType::joined), 1u) << "u4's return only";
    // Encode once: the recipients of one record on one worker share its serial.
    const auto l0 = users[0]->client.of(EventType::left);
    const auto l3 = users[3]->client.of(EventType::left);
    ASSERT_EQ(l3.size(), 1u);
    EXPECT_EQ(l0[0].serial, l3[0].serial);
    EXPECT_EQ(l0[0].from, "u4");
    // Outsiders get nothing.
    auto out = user(1, "out");
    ASSERT_EQ(users[2]->session.leave("r"), Error::none);
    pump_for(io, 20ms);
    EXPECT_EQ(out->client.count(EventType::joined) + out->client.count(EventType::left), 0u);
}

TEST_F(ChatHub, PerSenderOrderAcrossWorkers) {
    auto a = user(0, "a");
    auto b = user(1, "b");
    auto c = user(2, "c");
    for (auto* u : {a.get(), b.get(), c.get()})
        ASSERT_EQ(u->session.join("r"), Error::none);
    for (int i = 0; i < 200; ++i) {
        ASSERT_EQ(a->session.say("r", "a" + std::to_string(i)), Error::none);
        ASSERT_EQ(b->session.say("r", "b" + std::to_string(i)), Error::none);
        if (i % 7 == 0) pump_for(io, 0ms);
    }
    ASSERT_TRUE(pump_until(io, [&] { return c->client.count(EventType::message) == 400; }));
    pump_for(io, 20ms);
    EXPECT_EQ(c->client.count(EventType::message), 400u);
    int next_a = 0, next_b = 0;
    for (const Got& g : c->client.of(EventType::message)) {
        if (g.from == "a")
            EXPECT_EQ(g.text, "a" + std::to_string(next_a++));
        else
            EXPECT_EQ(g.text, "b" + std::to_string(next_b++));
    }
    EXPECT_EQ(next_a, 200);
    EXPECT_EQ(next_b, 200);
}

// A message already in history when a user joins is not delivered again live, and one posted
// right after the join (the ring not yet read) is delivered exactly once.
TEST_F(ChatHub, JoinRacingARoomMessageGetsItExactlyOnce) {
    auto a = user(1, "a");
    auto b = user(0, "b");
    ASSERT_EQ(a->session.join("r"), Error::none);
    ASSERT_EQ(a->session.say("r", "before"), Error::none);  // in worker 1's log, unread
    chat::Joined j;
    ASSERT_EQ(b->session.join("r", &j), Error::none);
    ASSERT_EQ(j.history.size(), 1u);
    EXPECT_EQ(j.history[0].text, "before");
    ASSERT_EQ(a->session.say("r", "after"), Error::none);
    ASSERT_TRUE(pump_until(io, [&] { return b->client.count(EventType::message) == 1; }));
    pump_for(io, 30ms);
    ASSERT_EQ(b->client.count(EventType::message), 1u);
    EXPECT_EQ(b->client.of(EventType::message)[0].text, "after");
}

TEST_F(ChatHub, DirectMessagesFindTheirRecipientOnAnyWorker) {
    auto a = user(0, "a");
    auto b = user(2, "b");
    auto c = user(0, "c");
    ASSERT_EQ(a->session.dm("b", "to b"), Error::none);
    ASSERT_EQ(a->session.dm("c", "to c"), Error::none);  // same worker
    EXPECT_EQ(a->session.dm("ghost", "x"), Error::no_such_user);
    EXPECT_EQ(a->session.dm("", "x"), Error::no_such_user);
    ASSERT_TRUE(pump_until(io, [&] { return b->client.count(EventType::dm) == 1; }));
    pump_for(io, 20ms);
    ASSERT_EQ(b->client.count(EventType::dm), 1u);
    const Got g = b->client.of(EventType::dm)[0];
    EXPECT_EQ(g.from, "a");
    EXPECT_EQ(g.to, "b");
    EXPECT_EQ(g.text, "to b");
    EXPECT_GT(g.ts, 1'600'000'000'000);
    ASSERT_EQ(c->client.count(EventType::dm), 1u);
    EXPECT_EQ(c->client.of(EventType::dm)[0].text, "to c");
    EXPECT_EQ(a->client.count(EventType::dm), 0u);
}

TEST_F(ChatHub, TextLimit) {
    auto a = user(0, "a");
    auto b = user(1, "b");
    ASSERT_EQ(a->session.join("r"), Error::none);
    EXPECT_EQ(a->session.say("r", std::string(4097, 'x')), Error::too_long);
    EXPECT_EQ(a->session.say("r", std::string(4096, 'x')), Error::none);
    EXPECT_EQ(a->session.dm("b", std::string(4097, 'x')), Error::too_long);
    EXPECT_EQ(a->session.dm("b", std::string(4096, 'y')), Error::none);
    ASSERT_TRUE(pump_until(io, [&] { return b->client.count(EventType::dm) == 1; }));
    EXPECT_EQ(b->client.of(EventType::dm)[0].text, std::string(4096, 'y'));
}

// A client whose delivery ends another session (e.g. a connection closed on overflow) must not
// make the Hub touch the dead session.
TEST_F(ChatHub, SessionDestroyedDuringDeliveryIsSkipped) {
    struct Killer : chat::Client {
        std::unique_ptr<User>* victim = nullptr;
        int n = 0;
        void deliver(const chat::Event&) override {
            ++n;
            if (victim) victim->reset();
        }
    };
    auto a = user(0, "a");
    Killer k;
    chat::Participant ks(hub(0), k);
    ASSERT_EQ(ks.login("k"), Error::none);
    std::vector<std::unique_ptr<User>> others;
    for (int i = 0; i < 4; ++i) {
        others.push_back(user(0, "o" + std::to_string(i)));
        if (i == 3) {
            ASSERT_EQ(ks.join("r"), Error::none);
        }
        ASSERT_EQ(others.back()->session.join("r"), Error::none);
    }
    k.victim = &others[3];  // after k in the recipient list
    ASSERT_EQ(a->session.join("r"), Error::none);
    ASSERT_EQ(a->session.say("r", "boom"), Error::none);
    EXPECT_GE(k.n, 1) << "k got the message (and the victim's offline)";
    EXPECT_FALSE(others[3]);
    for (int i = 0; i < 3; ++i)
        EXPECT_EQ(others[i]->client.count(EventType::message), 1u);
    EXPECT_EQ(state.lookup("o3"), 0u);
}

}  // namespace
