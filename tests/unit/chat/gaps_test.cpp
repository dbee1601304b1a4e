// Gaps made visible and filled: per-room sequence numbers, the Hub's record of delivered seqs
// (SeqWindow), a worker cut loose from another's log (a real ring too small to hold what the
// other published while this one did not read) telling its sessions and resending from history,
// and join with `since` (a reconnect gets only what it missed).
#include <gtest/gtest.h>

#include <algorithm>
#include <boost/asio/io_context.hpp>
#include <memory>
#include <string>
#include <vector>

#include "chat/chat.hpp"
#include "chat/record.hpp"
#include "chat/seq_window.hpp"
#include "chat_test_util.hpp"

using namespace chat_test;
using namespace std::chrono_literals;
using chat::Error;
using chat::EventType;
using chat::SeqWindow;
namespace ring = steerchat::ring;

namespace {

TEST(ChatSeqWindow, InOrderOutOfOrderAndRepeats) {
    SeqWindow w(10);
    EXPECT_TRUE(w.has(10));
    EXPECT_FALSE(w.has(11));
    EXPECT_FALSE(w.add(7));  // before the window: already accounted for
    EXPECT_TRUE(w.add(11));
    EXPECT_EQ(w.floor(), 11u);
    EXPECT_TRUE(w.add(13));  // 12 is still on its way (another log)
    EXPECT_TRUE(w.add(14));
    EXPECT_EQ(w.floor(), 11u);
    EXPECT_EQ(w.ahead(), 2u);
    EXPECT_EQ(w.missing(12, 14), 1u);
    EXPECT_EQ(w.missing(12, 20), 7u);
    EXPECT_EQ(w.missing(5, 11), 0u);
    EXPECT_FALSE(w.add(13));  // a repeat
    EXPECT_TRUE(w.add(12));
    EXPECT_EQ(w.floor(), 14u);
    EXPECT_EQ(w.ahead(), 0u);
    EXPECT_TRUE(w.add(20));
    w.settle(18);  // 15..18 accounted for (resent or announced)
    EXPECT_EQ(w.floor(), 18u);
    EXPECT_TRUE(w.add(19));
    EXPECT_EQ(w.floor(), 20u);  // 20 was ahead: absorbed
    w.settle(3);                // never backwards
    EXPECT_EQ(w.floor(), 20u);
}

TEST(ChatSeqWindow, AHoleThatNeverFillsIsGivenUpBounded) {
    SeqWindow w;
    for (std::uint64_t s = 2; s <= SeqWindow::kMaxAhead + 2; ++s)
        ASSERT_TRUE(w.add(s));
    EXPECT_LE(w.ahead(), SeqWindow::kMaxAhead);
    EXPECT_EQ(w.floor(), SeqWindow::kMaxAhead + 2);  // seq 1 given up, the rest absorbed
}

class ChatGaps : public ::testing::Test {
  protected:
    static chat::SharedOptions options(std::uint32_t history_len) {
        chat::SharedOptions o;
        o.history_len = history_len;
        return o;
    }
    // The smallest ring that carries a 4 KiB message: a few of them fill a log.
    ring::Region region = ring::Region::create(2, 32768);
    chat::SharedState state = chat::SharedState::create(options(100));
    // Each hub on its own loop: hub 1 reads only while its loop is pumped.
    boost::asio::io_context io0, io1;
    std::unique_ptr<chat::Hub> hub0, hub1;

    void SetUp() override {
        hub0 = std::make_unique<chat::Hub>(io0.get_executor(), region, state, 0);
        hub1 = std::make_unique<chat::Hub>(io1.get_executor(), region, state, 1);
    }
    void TearDown() override {
        hub0.reset();
        hub1.reset();
    }
    std::unique_ptr<User> user(chat::Hub& h, const std::string& name) {
        auto u = std::make_unique<User>(h);
        EXPECT_EQ(u->session.login(name), Error::none) << name;
        return u;
    }
    static std::vector<std::string> texts(const FakeClient& c) {
        std::vector<std::string> v;
        for (const Got& g : c.of(EventType::message))
            v.push_back(g.text);
        return v;
    }
    static std::string big(int i) { return std::to_string(i) + "|" + std::string(4000, 'x'); }
};

TEST_F(ChatGaps, MessagesCarryTheRoomsSequenceNumbers) {
    auto a = user(*hub0, "a");
    auto b = user(*hub1, "b");
    chat::Joined j;
    ASSERT_EQ(a->session.join("r", &j), Error::none);
    EXPECT_EQ(j.seq, 0u);
    ASSERT_EQ(a->session.join("other", &j), Error::none);
    ASSERT_EQ(a->session.say("other", "o1"), Error::none);
    chat::Said said;
    for (int i = 1; i <= 3; ++i) {
        ASSERT_EQ(a->session.say("r", "m" + std::to_string(i), {}, false, &said), Error::none);
        EXPECT_EQ(said.seq, static_cast<std::uint64_t>(i));  // per room: "other" has its own
    }
    ASSERT_EQ(b->session.join("r", &j), Error::none);
    EXPECT_EQ(j.seq, 3u);
    ASSERT_EQ(j.history.size(), 3u);
    for (std::uint64_t k = 0; k < 3; ++k)
        EXPECT_EQ(j.history[k].seq, k + 1);
    ASSERT_EQ(a->session.say("r", "m4"), Error::none);
    ASSERT_TRUE(pump_until(io1, [&] { return b->client.count(EventType::message) == 1; }));
    EXPECT_EQ(b->client.of(EventType::message)[0].seq, 4u);  // through the ring
    EXPECT_EQ(a->client.of(EventType::message).back().seq, 4u);
    EXPECT_TRUE(b->client.gaps.empty());
}

TEST_F(ChatGaps, JoinSinceGivesOnlyWhatWasMissedAndSaysWhetherHistoryReachesBack) {
    auto a = user(*hub0, "a");
    ASSERT_EQ(a->session.join("r"), Error::none);
    std::vector<chat::Said> said(5);
    for (int i = 0; i < 5; ++i)
        ASSERT_EQ(a->session.say("r", "m" + std::to_string(i), {}, false, &said[i]), Error::none);
    auto b = user(*hub1, "b");
    chat::Joined j;
    ASSERT_EQ(b->session.join("r", &j, said[1].id), Error::none);
    ASSERT_EQ(j.history.size(), 3u);
    EXPECT_EQ(j.history[0].text, "m2");
    EXPECT_EQ(j.history[2].text, "m4");
    EXPECT_TRUE(j.complete);
    EXPECT_EQ(j.seq, 5u);
    ASSERT_EQ(b->session.leave("r"), Error::none);
    ASSERT_EQ(b->session.join("r", &j, said[4].id), Error::none);  // saw everything
    EXPECT_TRUE(j.history.empty());
    EXPECT_TRUE(j.complete);
    ASSERT_EQ(b->session.leave("r"), Error::none);
    // An id from before a restart (never given by this state): everything, not complete.
    ASSERT_EQ(b->session.join("r", &j, said[4].id + 1000), Error::none);
    EXPECT_EQ(j.history.size(), 5u);
    EXPECT_FALSE(j.complete);
}

TEST(ChatGapsHistory, JoinSinceOlderThanTheHistoryIsIncomplete) {
    ring::Region region = ring::Region::create(2, 1 << 16);
    chat::SharedOptions o;
    o.history_len = 3;
    chat::SharedState state = chat::SharedState::create(o);
    boost::asio::io_context io;
    chat::Hub hub(io.get_executor(), region, state, 0);
    User a(hub);
    ASSERT_EQ(a.session.login("a"), Error::none);
    ASSERT_EQ(a.session.join("r"), Error::none);
    std::vector<chat::Said> said(6);
    for (int i = 0; i < 6; ++i)
        ASSERT_EQ(a.session.say("r", "m" + std::to_string(i), {}, false, &said[i]), Error::none);
    User b(hub);
    ASSERT_EQ(b.session.login("b"), Error::none);
    chat::Joined j;
    ASSERT_EQ(b.session.join("r", &j, said[1].id), Error::none);  // m2 is gone
    EXPECT_FALSE(j.complete);
    ASSERT_EQ(j.history.size(), 3u);
    EXPECT_EQ(j.history[0].seq, 4u);
    ASSERT_EQ(b.session.leave("r"), Error::none);
    ASSERT_EQ(b.session.join("r", &j, said[2].id), Error::none);  // m3.. all kept
    EXPECT_TRUE(j.complete);
    EXPECT_EQ(j.history.size(), 3u);
}

// Hub 1 does not read while hub 0 publishes more than its log holds: hub 0 cuts it loose. Its
// session is told (with the room, what is resent) and gets every message exactly once, in seq
// order; later messages arrive live once.
TEST_F(ChatGaps, ACutLooseWorkerTellsItsSessionsAndResendsFromHistory) {
    auto a = user(*hub0, "a");
    auto b = user(*hub1, "b");
    auto c = user(*hub1, "c");  // in no room: told all the same (DMs, presence)
    ASSERT_EQ(a->session.join("r"), Error::none);
    ASSERT_EQ(b->session.join("r"), Error::none);
    ASSERT_EQ(a->session.say("r", big(0)), Error::none);
    ASSERT_TRUE(pump_until(io1, [&] { return b->client.count(EventType::message) == 1; }));
    const std::uint64_t seen = b->client.of(EventType::message)[0].id;
    for (int i = 1; i <= 20; ++i)  // ~80 KB into a 32 KB log: hub 1 is cut loose
        ASSERT_EQ(a->session.say("r", big(i)), Error::none);
    EXPECT_GT(region.cut_loose_total(), 0u);
    ASSERT_TRUE(pump_until(io1, [&] { return !b->client.gaps.empty(); }));
    pump_for(io1, 30ms);
    ASSERT_EQ(b->client.gaps.size(), 1u);
    const chat::Gap& g = b->client.gaps[0];
    EXPECT_EQ(g.writer, 0u);
    EXPECT_EQ(g.last_id, seen);
    EXPECT_GT(g.records, 0u);
    ASSERT_EQ(g.rooms.size(), 1u);
    EXPECT_EQ(g.rooms[0].room, "r");
    EXPECT_EQ(g.rooms[0].seq, 21u);
    EXPECT_EQ(g.rooms[0].missed, 0u);
    EXPECT_GT(g.rooms[0].resent, 0u);
    ASSERT_EQ(c->client.gaps.size(), 1u);
    EXPECT_TRUE(c->client.gaps[0].rooms.empty());
    ASSERT_EQ(a->session.say("r", big(21)), Error::none);
    ASSERT_TRUE(pump_until(io1, [&] { return b->client.count(EventType::message) == 22; }));
    pump_for(io1, 30ms);
    const auto got = b->client.of(EventType::message);
    ASSERT_EQ(got.size(), 22u);
    for (std::size_t k = 0; k < got.size(); ++k) {
        EXPECT_EQ(got[k].seq, k + 1);
        EXPECT_EQ(got[k].text, big(static_cast<int>(k)));
    }
    EXPECT_EQ(hub1->stats().gap_notices, 2u);
    EXPECT_EQ(hub1->stats().resent, g.rooms[0].resent);
    EXPECT_TRUE(a->client.gaps.empty());
}

// The history holds only the newest 5: the rest is announced as missed, by seq range.
TEST(ChatGapsHistory, WhatTheHistoryNoLongerHoldsIsAnnouncedAsMissed) {
    ring::Region region = ring::Region::create(2, 32768);
    chat::SharedOptions o;
    o.history_len = 5;
    chat::SharedState state = chat::SharedState::create(o);
    boost::asio::io_context io0, io1;
    chat::Hub hub0(io0.get_executor(), region, state, 0);
    chat::Hub hub1(io1.get_executor(), region, state, 1);
    User a(hub0), b(hub1);
    ASSERT_EQ(a.session.login("a"), Error::none);
    ASSERT_EQ(b.session.login("b"), Error::none);
    ASSERT_EQ(a.session.join("r"), Error::none);
    ASSERT_EQ(b.session.join("r"), Error::none);
    const std::string text(4000, 'y');
    for (int i = 0; i < 20; ++i)
        ASSERT_EQ(a.session.say("r", text), Error::none);
    ASSERT_TRUE(pump_until(io1, [&] { return !b.client.gaps.empty(); }));
    pump_for(io1, 30ms);
    const chat::RoomGap& r = b.client.gaps.at(0).rooms.at(0);
    const auto got = b.client.of(EventType::message);
    // Whatever hub 1 read before the cut, plus the resent, plus the missed: all 20, once.
    EXPECT_EQ(got.size() + r.missed, 20u);
    EXPECT_EQ(r.resent, 5u);
    EXPECT_EQ(r.missed_to, 15u);
    EXPECT_EQ(r.missed_to - r.missed_from + 1, r.missed);
    EXPECT_EQ(hub1.stats().missed, r.missed);
    for (std::size_t k = 1; k < got.size(); ++k)
        EXPECT_GT(got[k].seq, got[k - 1].seq);
    EXPECT_EQ(got.back().seq, 20u);
}

// Between hosts (--redis): the bridge writes remote messages into its own log with this host's
// room seq and local order (SharedState::post_remote). A worker cut loose resends them from
// history like local ones, to the members who joined before they arrived, although their own
// ids (another host's, its clock behind ours) are lower than those members' join marks.
TEST(ChatGapsHistory, RemoteMessagesAreResentByTheirLocalOrder) {
    ring::Region region = ring::Region::create(3, 32768);  // log 2: the bridge's
    chat::SharedOptions o;
    o.host_bits = 8;
    o.host_id = 2;
    chat::SharedState state = chat::SharedState::create(o);
    state.observe((std::uint64_t{1000} << 8) | 1);  // our clock is ahead of host 1's
    boost::asio::io_context io0, io1;
    chat::Hub hub0(io0.get_executor(), region, state, 0);
    chat::Hub hub1(io1.get_executor(), region, state, 1);
    User b(hub1);
    ASSERT_EQ(b.session.login("b"), Error::none);
    ASSERT_EQ(b.session.join("r"), Error::none);
    ring::Writer bridge(region, 2);
    std::vector<std::byte> rec;
    const std::string text(4000, 'z');
    std::vector<std::uint64_t> ids;
    for (int i = 0; i < 20; ++i) {
        chat::Event ev;
        ev.type = EventType::message;
        ev.id = (std::uint64_t(i + 1) << 8) | 1;  // host 1's ids: below b's join mark
        ev.ts = i;
        ev.room = "r";
        ev.from = "amy";
        ev.text = text;
        ev.order = state.post_remote("r", "amy", text, i, ev.id, &ev.seq);
        ASSERT_NE(ev.order, 0u);
        ASSERT_EQ(ev.seq, static_cast<std::uint64_t>(i + 1));
        ids.push_back(ev.id);
        bridge.publish(chat::record::encode(ev, rec), rec);
    }
    EXPECT_GT(region.cut_loose_total(), 0u);
    ASSERT_TRUE(pump_until(io1, [&] { return !b.client.gaps.empty(); }));
    pump_for(io1, 30ms);
    const chat::RoomGap& r = b.client.gaps.at(0).rooms.at(0);
    EXPECT_EQ(r.missed, 0u);
    EXPECT_GT(r.resent, 0u);
    const auto got = b.client.of(EventType::message);
    ASSERT_EQ(got.size(), 20u) << "every remote message once: live, then resent";
    for (std::size_t k = 0; k < got.size(); ++k) {
        EXPECT_EQ(got[k].seq, k + 1);
        EXPECT_EQ(got[k].id, ids[k]);
    }
    EXPECT_EQ(hub1.stats().resent, r.resent);
}

// Between hosts a message of another host can arrive after the one a client saw last, with a
// lower id (its host's clock was behind): a join with `since` on the host holding both returns
// it (and everything with a higher id), never what arrived before `since`.
TEST(ChatGapsHistory, JoinSinceBetweenHostsKeepsWhatArrivedAfterIt) {
    ring::Region region = ring::Region::create(2, 1 << 16);
    chat::SharedOptions o;
    o.host_bits = 8;
    o.host_id = 2;
    chat::SharedState state = chat::SharedState::create(o);
    state.observe((std::uint64_t{1000} << 8) | 1);
    boost::asio::io_context io;
    chat::Hub hub(io.get_executor(), region, state, 0);
    User a(hub);
    ASSERT_EQ(a.session.login("a"), Error::none);
    ASSERT_EQ(a.session.join("r"), Error::none);
    const std::uint64_t early = (std::uint64_t{3} << 8) | 1;
    ASSERT_NE(state.post_remote("r", "amy", "early", 1, early), 0u);  // seq 1
    chat::Said mine;
    ASSERT_EQ(a.session.say("r", "mine", {}, false, &mine), Error::none);  // seq 2
    const std::uint64_t late = (std::uint64_t{5} << 8) | 1;                // after "mine", lower id
    ASSERT_NE(state.post_remote("r", "amy", "late", 2, late), 0u);         // seq 3
    const std::uint64_t later = (std::uint64_t{5000} << 8) | 3;
    ASSERT_NE(state.post_remote("r", "cat", "later", 3, later), 0u);  // seq 4
    User b(hub);
    ASSERT_EQ(b.session.login("b"), Error::none);
    chat::Joined j;
    ASSERT_EQ(b.session.join("r", &j, mine.id), Error::none);
    std::vector<std::string> got;
    for (const auto& m : j.history)
        got.push_back(m.text);
    EXPECT_EQ(got, (std::vector<std::string>{"late", "later"}));  // history in id order
    EXPECT_TRUE(j.complete);
    ASSERT_EQ(b.session.leave("r"), Error::none);
    ASSERT_EQ(b.session.join("r", &j, later), Error::none);
    EXPECT_TRUE(j.history.empty());
    EXPECT_TRUE(j.complete);
}

}  // namespace
