// The native protocol adapter: JSON in, JSON out, through a recording Sink (the
// ws::WebSocketConnection side), over a real chat core (ring + shared state, two worker Hubs on one
// io_context).
#include <gtest/gtest.h>

#include <boost/asio/io_context.hpp>
#include <boost/json.hpp>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "native/native.hpp"

namespace chat = steerchat::chat;
namespace native = steerchat::native;
namespace ring = steerchat::ring;
namespace ws = steerchat::ws;
namespace json = boost::json;
using namespace std::chrono_literals;

namespace {

struct RecordingSink : native::Sink {
    std::vector<ws::SharedFrame> frames;
    int closed = 0;
    std::uint16_t close_code = 0;
    void send(ws::SharedFrame f) override { frames.push_back(std::move(f)); }
    void close(std::uint16_t code, std::string_view) override {
        ++closed;
        close_code = code;
    }
    json::object at(std::size_t i) const {
        const ws::SharedFrame& f = frames.at(i);
        // An unmasked text frame: FIN + opcode 1.
        EXPECT_EQ(f.data()[0], 0x81);
        return json::parse(ws::as_string(f.payload())).as_object();
    }
    json::object last() const { return at(frames.size() - 1); }
};

struct Client {
    RecordingSink sink;
    native::Protocol protocol;
    explicit Client(native::Service& s) : protocol(s, sink) {}
    json::object send(const std::string& text) {
        const std::size_t before = sink.frames.size();
        protocol.on_text(text);
        EXPECT_EQ(sink.frames.size(), before + 1) << "one reply to " << text;
        return sink.last();
    }
    void send_quiet(const std::string& text) { protocol.on_text(text); }
};

class Native : public ::testing::Test {
  protected:
    ring::Region region = ring::Region::create(2, 1 << 20);
    chat::SharedState state = chat::SharedState::create({});
    boost::asio::io_context io;
    std::unique_ptr<chat::Hub> hub0 =
        std::make_unique<chat::Hub>(io.get_executor(), region, state, 0);
    std::unique_ptr<chat::Hub> hub1 =
        std::make_unique<chat::Hub>(io.get_executor(), region, state, 1);
    native::Service svc0{*hub0};
    native::Service svc1{*hub1};

    void pump(std::chrono::milliseconds d = 20ms) {
        io.restart();
        io.run_for(d);
    }
    template <class Pred>
    bool pump_until(Pred p) {
        for (int i = 0; i < 5000 && !p(); ++i)
            pump(1ms);
        return p();
    }
    std::unique_ptr<Client> login(native::Service& s, const std::string& name) {
        auto c = std::make_unique<Client>(s);
        const json::object w = c->send(R"({"type":"login","name":")" + name + "\"}");
        EXPECT_EQ(w.at("type"), "welcome") << json::serialize(w);
        return c;
    }

    struct Broadcast {
        std::vector<std::unique_ptr<Client>> members;  // empty if the message did not arrive
        std::uint64_t encodings = 0;                   // frames `svc` encoded for the message
    };
    // Four members of `room` log in through `svc` (worker 1); a sender on worker 0 says one
    // message, and every member receives it.
    Broadcast broadcast_to_four(native::Service& svc, const std::string& room) {
        Broadcast b;
        const std::string join = R"({"type":"join","room":")" + room + "\"}";
        for (int i = 0; i < 4; ++i) {
            b.members.push_back(login(svc, room + std::to_string(i)));
            b.members.back()->send(join);
        }
        auto s = login(svc0, room + "-sender");
        s->send(join);
        pump();  // the `online` of the sender reaches worker 1 first
        const auto before = svc.stats().encoded;
        s->send_quiet(R"({"type":"say","room":")" + room + R"(","text":"x"})");
        const bool all = pump_until([&] {
            for (auto& c : b.members)
                if (c->sink.last().at("type") != "message") return false;
            return true;
        });
        b.encodings = svc.stats().encoded - before;
        if (!all) b.members.clear();
        return b;
    }
};

void expect_error(const json::object& o, const char* code) {
    EXPECT_EQ(o.at("type"), "error") << json::serialize(o);
    EXPECT_EQ(o.at("code"), code) << json::serialize(o);
    EXPECT_TRUE(o.at("message").is_string());
}

TEST_F(Native, LoginWelcomeAndNameErrors) {
    Client a(svc0);
    json::object w = a.send(R"({"type":"login","name":"alice"})");
    EXPECT_EQ(w.at("type"), "welcome");
    EXPECT_EQ(w.at("name"), "alice");
    EXPECT_EQ(w.at("users"), json::array{"alice"});
    Client b(svc1);
    expect_error(b.send(R"({"type":"login","name":"alice"})"), "name_taken");
    expect_error(b.send(R"({"type":"login","name":""})"), "bad_name");
    expect_error(b.send(R"({"type":"login","name":"a\u0007b"})"), "bad_name");
    expect_error(b.send(R"({"type":"login","name":")" + std::string(33, 'x') + "\"}"), "bad_name");
    w = b.send(R"({"type":"login","name":"b\"ob","extra":1})");
    EXPECT_EQ(w.at("name"), "b\"ob");
    EXPECT_EQ(w.at("users").as_array().size(), 2u);
    expect_error(b.send(R"({"type":"login","name":"again"})"), "already_logged_in");
}

TEST_F(Native, BadRequestsKeepTheConnectionUsable) {
    Client a(svc0);
    expect_error(a.send("{not json"), "bad_request");
    expect_error(a.send("[1,2]"), "bad_request");
    expect_error(a.send(R"({"name":"x"})"), "bad_request");
    expect_error(a.send(R"({"type":7})"), "bad_request");
    expect_error(a.send(R"({"type":"dance"})"), "bad_request");
    expect_error(a.send(R"({"type":"login"})"), "bad_request");
    expect_error(a.send(R"({"type":"login","name":5})"), "bad_request");
    a.protocol.on_binary();
    expect_error(a.sink.last(), "bad_request");
    // Before login only login is accepted.
    expect_error(a.send(R"({"type":"join","room":"r"})"), "not_logged_in");
    expect_error(a.send(R"({"type":"say","room":"r","text":"x"})"), "not_logged_in");
    expect_error(a.send(R"({"type":"dm","to":"x","text":"x"})"), "not_logged_in");
    expect_error(a.send(R"({"type":"logout"})"), "not_logged_in");
    EXPECT_EQ(a.send(R"({"type":"login","name":"a"})").at("type"), "welcome");
    expect_error(a.send(R"({"type":"join"})"), "bad_request");
    expect_error(a.send(R"({"type":"say","room":"r"})"), "bad_request");
    expect_error(a.send(R"({"type":"dm","text":"x"})"), "bad_request");
    expect_error(a.send(R"({"type":"nope"})"), "bad_request");
    EXPECT_EQ(svc0.stats().errors, 16u);
}

TEST_F(Native, JoinSayLeaveAcrossWorkers) {
    auto a = login(svc0, "a");
    auto b = login(svc1, "b");
    auto c = login(svc0, "c");
    ASSERT_TRUE(pump_until([&] { return a->sink.frames.size() == 3; }));  // online b, c
    pump();
    a->sink.frames.clear();
    b->sink.frames.clear();
    c->sink.frames.clear();

    json::object j = a->send(R"({"type":"join","room":"lobby"})");
    EXPECT_EQ(j.at("type"), "joined");
    EXPECT_EQ(j.at("room"), "lobby");
    EXPECT_EQ(j.at("members"), json::array{"a"});
    EXPECT_EQ(j.at("history"), json::array{});
    expect_error(a->send(R"({"type":"join","room":""})"), "bad_room");
    EXPECT_EQ(b->send(R"({"type":"join","room":"lobby"})").at("members"), (json::array{"a", "b"}));
    EXPECT_EQ(c->send(R"({"type":"join","room":"lobby"})").at("type"), "joined");

    expect_error(a->send(R"({"type":"say","room":"elsewhere","text":"x"})"), "not_in_room");
    a->send_quiet(R"({"type":"say","room":"lobby","text":"hi \"all\"\n","cid":{"n":1}})");
    // joined, bad_room, member_joined c (same worker: at once; b's comes through the ring
    // later), not_in_room, own copy
    ASSERT_EQ(a->sink.frames.size(), 5u);
    EXPECT_EQ(a->sink.at(2),
              (json::object{{"type", "member_joined"}, {"room", "lobby"}, {"name", "c"}}));
    json::object own = a->sink.last();
    EXPECT_EQ(own.at("type"), "message");
    EXPECT_EQ(own.at("room"), "lobby");
    EXPECT_EQ(own.at("from"), "a");
    EXPECT_EQ(own.at("text"), "hi \"all\"\n");
    EXPECT_EQ(own.at("cid"), (json::object{{"n", 1}}));
    EXPECT_TRUE(own.at("id").is_number());
    EXPECT_GT(own.at("ts").to_number<std::int64_t>(), 1'600'000'000'000);

    ASSERT_TRUE(pump_until([&] { return b->sink.frames.size() == 3; }));
    pump();
    // b: joined, member_joined c, the message; c (the last to join): joined, the message.
    EXPECT_EQ(b->sink.at(1).at("type"), "member_joined");
    EXPECT_EQ(b->sink.at(1).at("name"), "c");
    ASSERT_EQ(c->sink.frames.size(), 2u);
    for (Client* r : {b.get(), c.get()}) {
        json::object m = r->sink.last();
        EXPECT_EQ(m.at("text"), "hi \"all\"\n");
        EXPECT_EQ(m.at("id"), own.at("id"));
        EXPECT_EQ(m.at("ts"), own.at("ts"));
        EXPECT_FALSE(m.contains("cid"));
    }

    // History on join, as message objects.
    auto d = login(svc1, "d");
    j = d->send(R"({"type":"join","room":"lobby"})");
    ASSERT_EQ(j.at("history").as_array().size(), 1u);
    const json::object h = j.at("history").as_array()[0].as_object();
    EXPECT_EQ(h.at("type"), "message");
    EXPECT_EQ(h.at("from"), "a");
    EXPECT_EQ(h.at("text"), "hi \"all\"\n");
    EXPECT_EQ(h.at("id"), own.at("id"));

    json::object l = b->send(R"({"type":"leave","room":"lobby"})");
    EXPECT_EQ(l.at("type"), "left");
    EXPECT_EQ(l.at("room"), "lobby");
    expect_error(b->send(R"({"type":"leave","room":"lobby"})"), "not_in_room");
    expect_error(b->send(R"({"type":"say","room":"lobby","text":"x","cid":"k"})"), "not_in_room");
    EXPECT_EQ(b->sink.last().at("cid"), "k");
    expect_error(
        a->send(R"({"type":"say","room":"lobby","text":")" + std::string(5000, 'x') + "\"}"),
        "too_long");
}

// Issue 9: {"cid":1e400} on a "say" to an unknown room killed the worker (the error reply
// re-parsed the cid's serialization, "1e99999", and threw). Every cid is answered now, and the
// session goes on.
TEST_F(Native, CidsThatCannotComeBackAreRefusedNotFatal) {
    auto a = login(svc0, "a");
    for (const char* cid : {"1e400", "-1e400", "[1e400]", "{\"x\":1e999}"}) {
        const std::string say =
            std::string(R"({"type":"say","room":"nosuchroom","text":"x","cid":)") + cid + "}";
        json::object e = a->send(say);
        expect_error(e, "bad_request");
        EXPECT_FALSE(e.contains("cid")) << cid;
    }
    expect_error(
        a->send(R"({"type":"say","room":"r","text":"x","cid":")" + std::string(300, 'c') + "\"}"),
        "bad_request");
    // Acceptable cids still come back on errors, unchanged.
    for (const char* cid : {"1e300", "18446744073709551615", "-9223372036854775808", "null",
                            "\"k\"", "[1,{\"n\":2.5}]"}) {
        json::object e = a->send(
            std::string(R"({"type":"say","room":"nosuchroom","text":"x","cid":)") + cid + "}");
        expect_error(e, "not_in_room");
        EXPECT_EQ(json::serialize(e.at("cid")), json::serialize(json::parse(cid))) << cid;
    }
    // The session is still usable.
    EXPECT_EQ(a->send(R"({"type":"join","room":"r"})").at("type"), "joined");
}

// Found by native_protocol_fuzz: a "say" before login was answered not_logged_in without its
// cid, unlike every other error to a say (the protocol: "+cid when the request had one").
TEST_F(Native, SayBeforeLoginGetsItsCidBack) {
    Client a(svc0);
    json::object e = a.send(R"({"type":"say","room":"r","text":"x","cid":"k"})");
    expect_error(e, "not_logged_in");
    EXPECT_EQ(e.at("cid"), "k");
    e = a.send(R"({"type":"say","room":"r","text":"x","cid":[1,{"n":2}]})");
    expect_error(e, "not_logged_in");
    EXPECT_EQ(e.at("cid"), (json::array{1, json::object{{"n", 2}}}));
    // No cid, none back; a cid that cannot come back is the error.
    EXPECT_FALSE(a.send(R"({"type":"say","room":"r","text":"x"})").contains("cid"));
    expect_error(a.send(R"({"type":"say","room":"r","text":"x","cid":1e400})"), "bad_request");
    // Other requests before login are unchanged.
    expect_error(a.send(R"({"type":"join","room":"r","cid":"k"})"), "not_logged_in");
    EXPECT_FALSE(a.sink.last().contains("cid"));
}

TEST_F(Native, OneEncodingPerEventPerWorker) {
    Broadcast b = broadcast_to_four(svc1, "r");
    ASSERT_EQ(b.members.size(), 4u);
    EXPECT_EQ(b.encodings, 1u);
    const ws::SharedFrame& f = b.members[0]->sink.frames.back();
    for (auto& c : b.members)
        EXPECT_EQ(c->sink.frames.back().data(), f.data()) << "same bytes";
    EXPECT_EQ(f.use_count(), 5u) << "four recipients' references and the cache's";
}

TEST_F(Native, BaselineWithoutEncodeOnceEncodesPerRecipient) {
    native::Service naive{*hub1, false};
    Broadcast b = broadcast_to_four(naive, "n");
    ASSERT_EQ(b.members.size(), 4u);
    EXPECT_EQ(b.encodings, 4u);
    const ws::SharedFrame& f = b.members[0]->sink.frames.back();
    for (std::size_t i = 1; i < b.members.size(); ++i) {
        const ws::SharedFrame& g = b.members[i]->sink.frames.back();
        EXPECT_NE(g.data(), f.data()) << "a separate encoding";
        EXPECT_EQ(std::string_view(reinterpret_cast<const char*>(g.data()), g.size()),
                  std::string_view(reinterpret_cast<const char*>(f.data()), f.size()));
    }
}

TEST_F(Native, DirectMessagesAndPresence) {
    auto a = login(svc0, "a");
    auto b = login(svc1, "b");
    ASSERT_TRUE(pump_until([&] { return a->sink.frames.size() == 2; }));
    json::object on = a->sink.last();
    EXPECT_EQ(on, (json::object{{"type", "online"}, {"name", "b"}}));

    a->send_quiet(R"({"type":"dm","to":"b","text":"psst"})");
    EXPECT_EQ(a->sink.frames.size(), 2u) << "no reply to the sender";
    ASSERT_TRUE(pump_until([&] { return b->sink.frames.size() == 2; }));
    json::object dm = b->sink.last();
    EXPECT_EQ(dm.at("type"), "dm");
    EXPECT_EQ(dm.at("from"), "a");
    EXPECT_EQ(dm.at("text"), "psst");
    EXPECT_TRUE(dm.at("id").is_number());
    EXPECT_TRUE(dm.at("ts").is_number());
    expect_error(a->send(R"({"type":"dm","to":"nobody","text":"x"})"), "no_such_user");

    b->send_quiet(R"({"type":"logout"})");
    EXPECT_EQ(b->sink.closed, 1);
    EXPECT_EQ(b->sink.close_code, 1000);
    ASSERT_TRUE(pump_until([&] { return a->sink.last().at("type") == "offline"; }));
    EXPECT_EQ(a->sink.last(), (json::object{{"type", "offline"}, {"name", "b"}}));
    // The name is free again.
    auto b2 = login(svc0, "b");
    EXPECT_EQ(a->sink.last(), (json::object{{"type", "online"}, {"name", "b"}}));
}

// {"type":"typing","room":R}: no answer; every other member of R on either worker gets
// {"type":"typing","room":R,"from":N}, nothing else; errors as for a say.
TEST_F(Native, TypingWireShape) {
    auto a = login(svc0, "a");
    auto b = login(svc1, "b");
    auto c = login(svc0, "c");
    auto d = login(svc1, "d");  // not in the room
    for (Client* u : {a.get(), b.get(), c.get()})
        EXPECT_EQ(u->send(R"({"type":"join","room":"lobby"})").at("type"), "joined");
    pump();
    for (Client* u : {a.get(), b.get(), c.get(), d.get()})
        u->sink.frames.clear();

    a->send_quiet(R"({"type":"typing","room":"lobby"})");
    EXPECT_TRUE(a->sink.frames.empty()) << "no answer, no echo";
    ASSERT_TRUE(pump_until([&] { return !b->sink.frames.empty(); }));
    pump();
    const json::object want{{"type", "typing"}, {"room", "lobby"}, {"from", "a"}};
    for (Client* r : {b.get(), c.get()}) {
        ASSERT_EQ(r->sink.frames.size(), 1u);
        EXPECT_EQ(r->sink.last(), want);
        EXPECT_EQ(ws::as_string(r->sink.frames[0].payload()),
                  R"({"type":"typing","room":"lobby","from":"a"})");
    }
    EXPECT_TRUE(a->sink.frames.empty());
    EXPECT_TRUE(d->sink.frames.empty());

    expect_error(d->send(R"({"type":"typing","room":"lobby"})"), "not_in_room");
    expect_error(d->send(R"({"type":"typing"})"), "bad_request");
    expect_error(d->send(R"({"type":"typing","room":7})"), "bad_request");
    Client anon(svc1);
    expect_error(anon.send(R"({"type":"typing","room":"lobby"})"), "not_logged_in");
    // Not in history.
    {
        const json::object j = d->send(R"({"type":"join","room":"lobby"})");
        EXPECT_EQ(j.at("history"), json::array{});
    }
}

// Room members: {"type":"member_joined"|"member_left","room":R,"name":N} to every other member
// of R on either worker who joined before; never to the mover or to non-members; a second join
// says nothing; a logout sends only "offline" (which means: left every room).
TEST_F(Native, MemberEventsWireShape) {
    auto a = login(svc0, "a");
    auto b = login(svc1, "b");
    auto c = login(svc0, "c");
    auto d = login(svc1, "d");  // not in the room until late
    EXPECT_EQ(a->send(R"({"type":"join","room":"lobby"})").at("members"), json::array{"a"});
    pump();
    for (Client* u : {a.get(), b.get(), c.get(), d.get()})
        u->sink.frames.clear();
    auto types = [](Client& u) {
        std::vector<std::string> t;
        for (std::size_t i = 0; i < u.sink.frames.size(); ++i)
            t.emplace_back(u.sink.at(i).at("type").as_string());
        return t;
    };

    EXPECT_EQ(b->send(R"({"type":"join","room":"lobby"})").at("members"), (json::array{"a", "b"}));
    ASSERT_TRUE(pump_until([&] { return !a->sink.frames.empty(); }));
    EXPECT_EQ(ws::as_string(a->sink.frames[0].payload()),
              R"({"type":"member_joined","room":"lobby","name":"b"})");
    EXPECT_EQ(b->send(R"({"type":"join","room":"lobby"})").at("type"), "joined");  // again
    EXPECT_EQ(c->send(R"({"type":"join","room":"lobby"})").at("members"),
              (json::array{"a", "b", "c"}));
    ASSERT_TRUE(pump_until([&] { return b->sink.frames.size() == 3; }));
    pump();
    EXPECT_EQ(a->sink.last(),
              (json::object{{"type", "member_joined"}, {"room", "lobby"}, {"name", "c"}}));
    EXPECT_EQ(b->sink.last(),
              (json::object{{"type", "member_joined"}, {"room", "lobby"}, {"name", "c"}}));
    EXPECT_EQ(types(*a), (std::vector<std::string>{"member_joined", "member_joined"}));
    EXPECT_EQ(types(*b), (std::vector<std::string>{"joined", "joined", "member_joined"}));
    EXPECT_EQ(types(*c), std::vector<std::string>{"joined"});
    EXPECT_TRUE(d->sink.frames.empty()) << "not a member";

    for (Client* u : {a.get(), b.get(), c.get(), d.get()})
        u->sink.frames.clear();
    EXPECT_EQ(b->send(R"({"type":"leave","room":"lobby"})").at("type"), "left");
    ASSERT_TRUE(pump_until([&] { return a->sink.frames.size() == 1; }));
    pump();
    const json::object left{{"type", "member_left"}, {"room", "lobby"}, {"name", "b"}};
    EXPECT_EQ(a->sink.last(), left);
    ASSERT_EQ(c->sink.frames.size(), 1u);
    EXPECT_EQ(c->sink.last(), left);
    EXPECT_EQ(types(*b), std::vector<std::string>{"left"});
    EXPECT_TRUE(d->sink.frames.empty());

    // A logout: "offline" only, to everyone (members derive that c left the room).
    for (Client* u : {a.get(), b.get(), c.get(), d.get()})
        u->sink.frames.clear();
    c->send_quiet(R"({"type":"logout"})");
    ASSERT_TRUE(pump_until([&] { return d->sink.frames.size() == 1; }));
    pump();
    for (Client* u : {a.get(), b.get(), d.get()})
        EXPECT_EQ(types(*u), std::vector<std::string>{"offline"});
    EXPECT_EQ(a->send(R"({"type":"join","room":"lobby"})").at("members"), json::array{"a"});
}

TEST_F(Native, RateLimitedThenClosed1008) {
    hub0->set_limits({.rate = 0.01, .burst = 3, .close_after = 2, .max_rooms = 100});
    auto a = login(svc0, "a");                  // 1 token
    a->send(R"({"type":"join","room":"r"})");   // 2
    a->send(R"({"type":"leave","room":"r"})");  // 3
    // Refused before it is even parsed: malformed JSON is counted too.
    expect_error(a->send("not json"), "rate_limited");
    EXPECT_EQ(a->sink.closed, 0);
    a->send_quiet(R"({"type":"join","room":"r"})");  // the second refusal in a row: closed
    EXPECT_EQ(a->sink.closed, 1);
    EXPECT_EQ(a->sink.close_code, 1008);
    EXPECT_EQ(hub0->stats().rate_closes, 1u);
}

TEST_F(Native, TooManyRooms) {
    hub0->set_limits({.rate = 0, .burst = 1, .close_after = 0, .max_rooms = 2});
    auto a = login(svc0, "a");
    a->send(R"({"type":"join","room":"r1"})");
    a->send(R"({"type":"join","room":"r2"})");
    expect_error(a->send(R"({"type":"join","room":"r3"})"), "too_many_rooms");
}

}  // namespace
