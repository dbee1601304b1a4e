// The Socket.IO chat adapter: client events in; events, acks and shared encodings out, through a
// recording Sink (the sio::Socket side), over a real chat core (ring + shared state, two worker
// Hubs on one io_context), as tests/unit/native does for the native protocol.
#include <gtest/gtest.h>

#include <boost/asio/io_context.hpp>
#include <boost/json.hpp>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "socketio_chat/socketio_chat.hpp"

namespace chat = steerchat::chat;
namespace sio = steerchat::sio;
namespace socketio_chat = steerchat::socketio_chat;
namespace ring = steerchat::ring;
namespace json = boost::json;
using namespace std::chrono_literals;

namespace {

struct RecordingSink : socketio_chat::Sink {
    std::string ns = "/";
    std::vector<json::array> emits;                           // EVENTs emitted one by one
    std::vector<std::pair<std::uint64_t, json::array>> acks;  // ACKs
    std::vector<sio::Encoded> sent;                           // shared encodings (copies share)
    int disconnects = 0;

    const std::string& nsp() const override { return ns; }
    void emit(const json::array& args) override { emits.push_back(args); }
    void ack(std::uint64_t id, const json::array& args) override { acks.emplace_back(id, args); }
    void send(const sio::Encoded& e) override { sent.push_back(e); }
    void disconnect_later() override { ++disconnects; }

    // The i-th shared encoding as the client decodes it: an EVENT of this namespace.
    json::array event(std::size_t i) const {
        const sio::Encoded& e = sent.at(i);
        EXPECT_EQ(ws_text(e), "4" + e.text) << "the frame is the Engine.IO message of the text";
        std::optional<sio::Packet> p = sio::decode(e.text);
        EXPECT_TRUE(p) << e.text;
        if (!p) return {};
        EXPECT_EQ(p->type, sio::Type::event) << e.text;
        EXPECT_EQ(p->nsp, ns) << e.text;
        EXPECT_TRUE(p->data && p->data->is_array()) << e.text;
        return p->data && p->data->is_array() ? p->data->as_array() : json::array{};
    }
    json::array last_event() const { return event(sent.size() - 1); }
    static std::string ws_text(const sio::Encoded& e) {
        const auto p = e.frame.payload();
        return {reinterpret_cast<const char*>(p.data()), p.size()};
    }
};

struct Client {
    RecordingSink sink;
    socketio_chat::Protocol protocol;
    std::uint64_t next_ack = 1;
    explicit Client(socketio_chat::Service& s, std::string nsp = "/") : protocol(s, sink) {
        sink.ns = std::move(nsp);
    }
    // An event without an ack callback.
    void event(json::array args) { protocol.on_event(args, std::nullopt); }
    // An event with an ack callback: returns the ack's one argument (exactly one ack expected).
    json::object request(json::array args) {
        const std::uint64_t id = next_ack++;
        const std::size_t before = sink.acks.size();
        protocol.on_event(args, id);
        EXPECT_EQ(sink.acks.size(), before + 1) << "one ack to " << json::serialize(args);
        if (sink.acks.size() != before + 1) return {};
        EXPECT_EQ(sink.acks.back().first, id);
        EXPECT_EQ(sink.acks.back().second.size(), 1u);
        return sink.acks.back().second.at(0).as_object();
    }
};

void expect_error(const json::object& ack, const char* code) {
    EXPECT_EQ(ack.at("ok"), false) << json::serialize(ack);
    EXPECT_EQ(ack.at("error"), code) << json::serialize(ack);
    EXPECT_TRUE(ack.at("message").is_string());
}

class SocketIoChat : public ::testing::Test {
  protected:
    ring::Region region = ring::Region::create(2, 1 << 20);
    chat::SharedState state = chat::SharedState::create({});
    boost::asio::io_context io;
    std::unique_ptr<chat::Hub> hub0 =
        std::make_unique<chat::Hub>(io.get_executor(), region, state, 0);
    std::unique_ptr<chat::Hub> hub1 =
        std::make_unique<chat::Hub>(io.get_executor(), region, state, 1);
    socketio_chat::Service svc0{*hub0};
    socketio_chat::Service svc1{*hub1};

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
    std::unique_ptr<Client> login(socketio_chat::Service& s, const std::string& name,
                                  std::string nsp = "/") {
        auto c = std::make_unique<Client>(s, std::move(nsp));
        const json::object ok = c->request({"createsession", {{"email", name}}});
        EXPECT_EQ(ok, (json::object{{"ok", true}, {"name", name}}));
        return c;
    }
    // Whether the last shared event of `c` is `name`.
    static bool got(const Client& c, std::string_view name) {
        return !c.sink.sent.empty() && c.sink.last_event().at(0) == json::value(name);
    }
};

TEST_F(SocketIoChat, CreateSessionAndNameTaken) {
    Client a(svc0);
    a.event({"createsession", {{"email", "alice"}, {"clientIP", "10.0.0.1"}}});
    ASSERT_EQ(a.sink.emits.size(), 1u);
    EXPECT_EQ(a.sink.emits[0], (json::array{"accessgranted", json::array{"alice"}}));
    EXPECT_TRUE(a.sink.acks.empty()) << "no ack callback, no ack";

    // Taken on another worker: usernametaken (with the client's address), and the ack if any.
    Client b(svc1);
    b.event({"createsession", {{"email", "alice"}, {"clientIP", "10.0.0.2"}}});
    ASSERT_EQ(b.sink.emits.size(), 1u);
    EXPECT_EQ(
        b.sink.emits[0],
        (json::array{"usernametaken",
                     {{"err", "Username is taken: choose another one"}, {"address", "10.0.0.2"}}}));
    expect_error(b.request({"createsession", {{"email", "alice"}}}), "name_taken");
    EXPECT_EQ(b.sink.emits.back().at(1).at("address"), "alice") << "no clientIP: the name";
    EXPECT_EQ(svc1.stats().errors, 3u) << "two usernametaken, one of them also acked";

    const json::object ok = b.request({"createsession", {{"email", "bob"}}});
    EXPECT_EQ(ok, (json::object{{"ok", true}, {"name", "bob"}}));
    EXPECT_EQ(b.sink.emits.back(), (json::array{"accessgranted", json::array{"alice", "bob"}}));
    expect_error(b.request({"createsession", {{"email", "again"}}}), "already_logged_in");
    // alice hears of bob (across workers).
    ASSERT_TRUE(pump_until([&] { return got(a, "newClientOnline"); }));
    EXPECT_EQ(a.sink.last_event(), (json::array{"newClientOnline", {{"email", "bob"}}}));
}

TEST_F(SocketIoChat, JoinWithHistorySayAndLeave) {
    auto a = login(svc0, "a");
    json::object j = a->request({"join", "lobby"});  // the room as a plain string
    EXPECT_EQ(j, (json::object{{"ok", true},
                               {"room", "lobby"},
                               {"members", json::array{"a"}},
                               {"history", json::array{}},
                               {"seq", 0}}));
    const json::object said =
        a->request({"say", {{"room", "lobby"}, {"text", "hi"}, {"cid", "k"}}});
    EXPECT_EQ(said.at("ok"), true);
    ASSERT_TRUE(said.at("id").is_number());
    // The sender's own copy, with its cid.
    ASSERT_FALSE(a->sink.sent.empty());
    json::array own = a->sink.last_event();
    EXPECT_EQ(own.at(0), "message");
    EXPECT_EQ(own.at(1), (json::object{{"room", "lobby"},
                                       {"from", "a"},
                                       {"text", "hi"},
                                       {"id", said.at("id")},
                                       {"seq", 1},
                                       {"ts", said.at("ts")},
                                       {"cid", "k"}}));
    EXPECT_EQ(said.at("seq"), 1);

    // A join on the other worker gets the message as history.
    auto b = login(svc1, "b");
    j = b->request({"join", {{"room", "lobby"}}});
    EXPECT_EQ(j.at("members"), (json::array{"a", "b"}));
    EXPECT_EQ(j.at("history"), (json::array{json::object{{"id", said.at("id")},
                                                         {"seq", 1},
                                                         {"ts", said.at("ts")},
                                                         {"from", "a"},
                                                         {"text", "hi"}}}));

    EXPECT_EQ(b->request({"leave", {{"room", "lobby"}}}),
              (json::object{{"ok", true}, {"room", "lobby"}}));
    expect_error(b->request({"leave", "lobby"}), "not_in_room");
    expect_error(b->request({"say", {{"room", "lobby"}, {"text", "x"}}}), "not_in_room");
    expect_error(a->request({"join", {{"room", ""}}}), "bad_room");
}

// A room message reaches several recipients of one worker from ONE encoding: the same bytes,
// shared by reference count, counted once in encoded and once per other recipient in
// shared_sends.
TEST_F(SocketIoChat, RoomMessageEncodedOnceForEveryRecipient) {
    std::vector<std::unique_ptr<Client>> members;
    for (int i = 0; i < 4; ++i) {
        members.push_back(login(svc1, "m" + std::to_string(i)));
        members.back()->request({"join", "r"});
    }
    auto sender = login(svc0, "sender");
    sender->request({"join", "r"});
    // The sender's `online` and join reach worker 1 first.
    ASSERT_TRUE(pump_until([&] {
        return got(*members[0], "memberJoined") &&
               members[0]->sink.last_event().at(1).at("name") == "sender";
    }));
    const chat::AdapterStats before = svc1.stats();
    sender->request({"say", {{"room", "r"}, {"text", "to all"}}});
    ASSERT_TRUE(pump_until([&] {
        for (auto& c : members)
            if (!got(*c, "message")) return false;
        return true;
    }));
    EXPECT_EQ(svc1.stats().encoded - before.encoded, 1u);
    EXPECT_EQ(svc1.stats().shared_sends - before.shared_sends, 3u);
    const sio::Encoded& first = members[0]->sink.sent.back();
    for (auto& c : members) {
        const sio::Encoded& e = c->sink.sent.back();
        EXPECT_EQ(e.frame.data(), first.frame.data()) << "the same frame bytes";
        EXPECT_EQ(c->sink.last_event().at(1).at("text"), "to all");
        EXPECT_FALSE(c->sink.last_event().at(1).as_object().contains("cid"));
    }
    // Four recipients' copies and the cache's own.
    EXPECT_EQ(first.frame.use_count(), 5u);
}

TEST_F(SocketIoChat, WithoutEncodeOnceEveryRecipientIsEncoded) {
    socketio_chat::Service naive{*hub1, false};
    std::vector<std::unique_ptr<Client>> members;
    for (int i = 0; i < 3; ++i) {
        members.push_back(login(naive, "n" + std::to_string(i)));
        members.back()->request({"join", "r"});
    }
    const std::uint64_t before = naive.stats().encoded;
    members[0]->request({"say", {{"room", "r"}, {"text", "x"}}});
    for (auto& c : members)
        ASSERT_TRUE(got(*c, "message"));
    EXPECT_EQ(naive.stats().encoded - before, 3u);
    EXPECT_EQ(naive.stats().shared_sends, 0u);
    EXPECT_NE(members[1]->sink.sent.back().frame.data(), members[2]->sink.sent.back().frame.data());
}

// One event reaches the members of two namespaces: one encoding per namespace.
TEST_F(SocketIoChat, OneEncodingPerNamespace) {
    auto a = login(svc0, "a", "/");
    auto b = login(svc0, "b", "/admin");
    auto c = login(svc0, "c", "/admin");
    for (Client* x : {a.get(), b.get(), c.get()})
        x->request({"join", "r"});
    const chat::AdapterStats before = svc0.stats();
    a->request({"say", {{"room", "r"}, {"text", "x"}}});
    ASSERT_TRUE(got(*b, "message"));
    ASSERT_TRUE(got(*c, "message"));
    EXPECT_EQ(b->sink.sent.back().frame.data(), c->sink.sent.back().frame.data());
    EXPECT_EQ(b->sink.sent.back().text.rfind("2/admin,[", 0), 0u) << b->sink.sent.back().text;
    // The sender's copy (its own serial) and the two /admin recipients' one encoding.
    EXPECT_EQ(svc0.stats().encoded - before.encoded, 2u);
    EXPECT_EQ(svc0.stats().shared_sends - before.shared_sends, 1u);
}

TEST_F(SocketIoChat, DirectMessages) {
    auto a = login(svc0, "a");
    auto b = login(svc1, "b");
    const json::object ok = a->request({"newMessage", {{"to", "b"}, {"message", "psst"}}});
    EXPECT_EQ(ok.at("ok"), true);
    EXPECT_TRUE(ok.at("id").is_number());
    EXPECT_TRUE(ok.at("ts").is_number());
    ASSERT_TRUE(pump_until([&] { return got(*b, "newMessage"); }));
    EXPECT_EQ(b->sink.last_event(), (json::array{"newMessage", {{"from", "a"}, {"text", "psst"}}}));

    // To nobody: clientNotFound, and the ack when there is one.
    a->event({"newMessage", {{"to", "nobody"}, {"message", "x"}}});
    EXPECT_EQ(a->sink.emits.back(), (json::array{"clientNotFound", "nobody"}));
    expect_error(a->request({"newMessage", {{"to", "nobody"}, {"message", "x"}}}), "no_such_user");
}

TEST_F(SocketIoChat, DisconnectAndLogoutAnnounceOffline) {
    auto a = login(svc0, "a");
    auto b = login(svc1, "b");
    auto c = login(svc0, "c");
    ASSERT_TRUE(pump_until([&] { return a->sink.sent.size() == 2; }));  // online b, c

    // The connection ends: the name is freed, everyone hears clientOffline.
    b->protocol.on_disconnect();
    ASSERT_TRUE(pump_until([&] { return got(*a, "clientOffline"); }));
    EXPECT_EQ(a->sink.last_event(), (json::array{"clientOffline", "b"}));
    EXPECT_EQ(login(svc0, "b")->sink.emits.back().at(0), "accessgranted") << "b is free";

    // logout: loggedOut (no arguments) and the ack; the others hear clientOffline.
    EXPECT_EQ(c->request({"logout"}), (json::object{{"ok", true}}));
    EXPECT_EQ(c->sink.emits.back(), json::array{"loggedOut"});
    EXPECT_EQ(a->sink.last_event(), (json::array{"clientOffline", "c"}));
    expect_error(c->request({"logout"}), "not_logged_in");
}

// typing room | {room}: the ack {ok, room} only; every other member of the room on either worker
// gets typing {room, from}; the typist gets nothing, a non-member not_in_room.
TEST_F(SocketIoChat, TypingReachesTheOtherMembersOnly) {
    auto a = login(svc0, "a");
    auto b = login(svc1, "b");
    auto c = login(svc0, "c");
    auto outsider = login(svc0, "o");
    for (Client* x : {a.get(), b.get(), c.get()})
        x->request({"join", "lobby"});
    // online b, c, o; memberJoined b, c
    ASSERT_TRUE(pump_until([&] { return a->sink.sent.size() == 5; }));
    pump();
    const std::size_t a_sent = a->sink.sent.size();
    const std::size_t o_sent = outsider->sink.sent.size();

    EXPECT_EQ(a->request({"typing", "lobby"}), (json::object{{"ok", true}, {"room", "lobby"}}));
    const json::array want{"typing", {{"room", "lobby"}, {"from", "a"}}};
    EXPECT_EQ(c->sink.last_event(), want) << "a member on the same worker";
    ASSERT_TRUE(pump_until([&] { return got(*b, "typing"); }));
    EXPECT_EQ(b->sink.last_event(), want) << "a member on the other worker";
    pump();
    EXPECT_EQ(a->sink.sent.size(), a_sent) << "not echoed to the typist";
    EXPECT_EQ(outsider->sink.sent.size(), o_sent) << "not to a non-member";

    expect_error(outsider->request({"typing", {{"room", "lobby"}}}), "not_in_room");
    expect_error(outsider->request({"typing", 7}), "bad_request");
}

// memberJoined / memberLeft {room, name}: to every other member of the room on either worker
// who joined before; not to the mover, not to non-members; a logout sends clientOffline only.
TEST_F(SocketIoChat, MemberEventsReachTheOtherMembersOnly) {
    auto a = login(svc0, "a");
    auto b = login(svc1, "b");
    auto c = login(svc0, "c");
    auto outsider = login(svc1, "o");
    a->request({"join", "lobby"});
    ASSERT_TRUE(pump_until([&] { return a->sink.sent.size() == 3; }));  // online b, c, o
    pump();
    const std::size_t o_sent = outsider->sink.sent.size();
    auto count = [](const Client& x, std::string_view name) {
        std::size_t n = 0;
        for (std::size_t i = 0; i < x.sink.sent.size(); ++i)
            if (x.sink.event(i).at(0) == json::value(name)) ++n;
        return n;
    };

    EXPECT_EQ(b->request({"join", "lobby"}).at("members"), (json::array{"a", "b"}));
    const json::array b_joined{"memberJoined", {{"room", "lobby"}, {"name", "b"}}};
    ASSERT_TRUE(pump_until([&] { return got(*a, "memberJoined"); }));
    EXPECT_EQ(a->sink.last_event(), b_joined) << "a member on the other worker";
    c->request({"join", {{"room", "lobby"}}});
    const json::array c_joined{"memberJoined", {{"room", "lobby"}, {"name", "c"}}};
    EXPECT_EQ(a->sink.last_event(), c_joined) << "a member on the same worker";
    ASSERT_TRUE(pump_until([&] { return b->sink.last_event() == c_joined; }));
    pump();
    EXPECT_EQ(count(*c, "memberJoined"), 0u) << "c's member list came with its join";

    EXPECT_EQ(c->request({"leave", "lobby"}), (json::object{{"ok", true}, {"room", "lobby"}}));
    const json::array c_left{"memberLeft", {{"room", "lobby"}, {"name", "c"}}};
    EXPECT_EQ(a->sink.last_event(), c_left);
    ASSERT_TRUE(pump_until([&] { return b->sink.last_event() == c_left; }));
    EXPECT_EQ(count(*c, "memberLeft"), 0u);
    pump();
    EXPECT_EQ(outsider->sink.sent.size(), o_sent) << "not to a non-member";

    EXPECT_EQ(b->request({"logout"}), (json::object{{"ok", true}}));
    EXPECT_EQ(b->sink.emits.back(), json::array{"loggedOut"});
    ASSERT_TRUE(pump_until([&] { return got(*a, "clientOffline"); }));
    pump();
    EXPECT_EQ(a->sink.last_event(), (json::array{"clientOffline", "b"}));
    EXPECT_EQ(count(*a, "memberLeft"), 1u) << "c's leave only: offline implies leaving every room";
    EXPECT_EQ(count(*a, "memberJoined"), 2u);
}

TEST_F(SocketIoChat, BadInputIsAnsweredWithTheErrorEvent) {
    Client a(svc0);
    // Without an ack callback: chaterror {event, error, message}.
    a.event({"dance"});
    ASSERT_EQ(a.sink.emits.size(), 1u);
    json::array e = a.sink.emits.back();
    EXPECT_EQ(e.at(0), "chaterror");
    EXPECT_EQ(e.at(1).at("event"), "dance");
    EXPECT_EQ(e.at(1).at("error"), "bad_request");
    EXPECT_TRUE(e.at(1).at("message").is_string());
    a.event({7, "x"});
    EXPECT_EQ(a.sink.emits.back().at(1).at("event"), "?");
    EXPECT_EQ(a.sink.emits.back().at(1).at("error"), "bad_request");
    a.event({"createsession", "not an object"});
    EXPECT_EQ(a.sink.emits.back().at(1),
              (json::object{{"event", "createsession"},
                            {"error", "bad_request"},
                            {"message", "malformed request: {email} expected"}}));
    a.event({"join", {{"room", "r"}}});
    EXPECT_EQ(a.sink.emits.back().at(1).at("error"), "not_logged_in");
    EXPECT_TRUE(a.sink.acks.empty());

    // With one: the ack {ok:false, error, message}, and no chaterror.
    const std::size_t emitted = a.sink.emits.size();
    expect_error(a.request({"dance"}), "bad_request");
    expect_error(a.request({"join", {{"room", "r"}}}), "not_logged_in");
    expect_error(a.request({"createsession", {{"email", 5}}}), "bad_request");
    expect_error(a.request({"createsession", {{"email", ""}}}), "bad_name");
    EXPECT_EQ(a.request({"createsession", {{"email", "a"}}}).at("ok"), true);
    expect_error(a.request({"join", 5}), "bad_request");
    expect_error(a.request({"say", {{"room", "r"}}}), "bad_request");
    expect_error(a.request({"newMessage", {{"to", "x"}}}), "bad_request");
    expect_error(a.request({"say", {{"room", "r"}, {"text", std::string(5000, 'x')}}}), "too_long");
    EXPECT_EQ(a.sink.emits.size(), emitted + 1) << "only the accessgranted";
    EXPECT_EQ(svc0.stats().errors, 12u);
    EXPECT_EQ(svc0.stats().requests, 13u);
    // Still usable.
    EXPECT_EQ(a.request({"join", "r"}).at("ok"), true);
}

TEST_F(SocketIoChat, RateLimitedThenDisconnected) {
    hub0->set_limits({.rate = 0.01, .burst = 3, .close_after = 2, .max_rooms = 100});
    auto a = login(svc0, "a");   // 1 token
    a->request({"join", "r"});   // 2
    a->request({"leave", "r"});  // 3
    expect_error(a->request({"join", "r"}), "rate_limited");
    EXPECT_EQ(a->sink.disconnects, 0);
    // The second refusal in a row: the namespace connection is ended (after this call), and
    // nothing more is answered.
    const std::size_t acks = a->sink.acks.size();
    a->protocol.on_event({"join", "r"}, 99);
    EXPECT_EQ(a->sink.disconnects, 1);
    a->protocol.on_event({"join", "r"}, 100);
    EXPECT_EQ(a->sink.acks.size(), acks);
    EXPECT_EQ(a->sink.disconnects, 1);
    EXPECT_EQ(hub0->stats().rate_closes, 1u);
}

}  // namespace
