// libFuzzer target for the native JSON chat protocol (userspace/native) over a real chat core:
// a ring Region and a SharedState (small tables and texts, so "server_full" and "too_long" are
// reachable with short inputs) shared by two
// worker Hubs on one io_context, as in tests/unit/native/native_test.cpp. Four client sessions,
// 0 and 2 on worker 0, 1 and 3 on worker 1 (whose chat limits are tight: a burst of 6 requests,
// 2 rooms, closed after 3 refusals in a row, typing events in bursts of 2), each with a
// recording Sink in place of its WebSocket connection.
//
// Input layout: lines separated by '\n'. The first byte of a line is a command:
//   bits 0-1  the session (0-3)
//   bits 2-3  0 text message (the rest of the line), 1 binary message, 2 disconnect (the
//             session ends as when its connection drops, and a fresh one takes its place),
//             3 nothing (only pump)
// so "0{...}" .. "3{...}" send text to sessions 0-3, "4".."7" a binary frame, "8", "9", ":",
// ";" disconnect. After every line the io_context is pumped until idle, so records published
// into one worker's log reach the other worker's sessions.
//
// Invariants (a violation aborts, a crash for libFuzzer); besides no crash, no exception and
// no sanitizer report:
//   - every frame a session gets is an unmasked text frame holding a JSON object with a
//     string "type" the protocol defines; errors carry a known "code" and a string "message";
//   - one reply per request where the protocol says so: login, join, leave, say, who, a binary
//     frame and any malformed or unknown request get exactly one frame (say: the sender's own
//     copy of its message, or an error); dm gets at most one (an error, or the dm itself when
//     sent to oneself); typing gets nothing, or one error (never its own typing event back);
//     logout closes with 1000 and sends nothing, or gets one error; a request
//     over the rate limit gets one rate_limited error, or its connection is closed with 1008;
//   - a reply to a request of type T is T's answer or an error;
//   - a say's "cid" comes back on its answer (unchanged, floating-point aside);
//   - member_joined / member_left are {type, room, name} and never reach the requester as
//     (part of) the answer to its own join or leave (they go to the other members only);
//   - nothing is sent to a session after it was closed.
#include <boost/asio/io_context.hpp>
#include <boost/json.hpp>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "chat/chat.hpp"
#include "native/native.hpp"
#include "ring/ring.hpp"
#include "support/fuzz_check.hpp"
#include "ws/frame.hpp"

namespace {

namespace chat = steerchat::chat;
namespace native = steerchat::native;
namespace ring = steerchat::ring;
namespace ws = steerchat::ws;
namespace json = boost::json;

constexpr std::size_t kSessions = 4;

bool one_of(std::string_view s, std::initializer_list<std::string_view> set) {
    for (const auto x : set)
        if (s == x) return true;
    return false;
}

// The frame's JSON object, checked against the protocol's shapes.
json::object check_frame(const ws::SharedFrame& f) {
    FUZZ_CHECK(f.size() >= 2);
    FUZZ_CHECK(f.data()[0] == 0x81);        // FIN + text
    FUZZ_CHECK((f.data()[1] & 0x80) == 0);  // server frames are not masked
    json::error_code ec;
    json::value v = json::parse(ws::as_string(f.payload()), ec);
    if (ec)
        std::fprintf(stderr, "reply is not JSON: %.*s\n", int(f.payload().size()),
                     reinterpret_cast<const char*>(f.payload().data()));
    FUZZ_CHECK(!ec);
    FUZZ_CHECK(v.is_object());
    json::object& o = v.as_object();
    const json::value* type = o.if_contains("type");
    FUZZ_CHECK(type && type->is_string());
    const std::string_view t = type->get_string();
    FUZZ_CHECK(one_of(t, {"welcome", "joined", "left", "message", "dm", "online", "offline",
                          "typing", "member_joined", "member_left", "who", "error"}));
    if (t == "error") {
        const json::value* code = o.if_contains("code");
        FUZZ_CHECK(code && code->is_string());
        FUZZ_CHECK(one_of(code->get_string(),
                          {"bad_request", "not_logged_in", "already_logged_in", "bad_name",
                           "name_taken", "bad_room", "not_in_room", "no_such_user", "too_long",
                           "server_full", "rate_limited", "too_many_rooms"}));
        const json::value* message = o.if_contains("message");
        FUZZ_CHECK(message && message->is_string() && !message->get_string().empty());
    }
    if (t == "message" || t == "dm") {
        FUZZ_CHECK(o.contains("from") && o.at("from").is_string());
        FUZZ_CHECK(o.contains("text") && o.at("text").is_string());
        FUZZ_CHECK(o.contains("id") && o.at("id").is_number());
    }
    if (t == "member_joined" || t == "member_left") {
        FUZZ_CHECK(o.size() == 3);
        FUZZ_CHECK(o.contains("room") && o.at("room").is_string());
        FUZZ_CHECK(o.contains("name") && o.at("name").is_string());
    }
    if (t == "who") {  // a page of the online names
        FUZZ_CHECK(o.size() == 4);
        FUZZ_CHECK(o.contains("users") && o.at("users").is_array());
        for (const json::value& u : o.at("users").as_array())
            FUZZ_CHECK(u.is_string());
        FUZZ_CHECK(o.contains("count") && o.at("count").is_number());
        FUZZ_CHECK(o.contains("next") && (o.at("next").is_null() || o.at("next").is_number()));
    }
    if (t == "welcome") {  // partial (past presence_max_users): with the count
        FUZZ_CHECK(o.contains("users") && o.at("users").is_array());
        FUZZ_CHECK(o.contains("partial") == o.contains("count"));
    }
    if (t == "typing") {
        FUZZ_CHECK(o.size() == 3);
        FUZZ_CHECK(o.contains("room") && o.at("room").is_string());
        FUZZ_CHECK(o.contains("from") && o.at("from").is_string());
    }
    return std::move(o);
}

struct RecordingSink final : native::Sink {
    std::vector<ws::SharedFrame> frames;
    bool closed = false;
    void send(ws::SharedFrame f) override {
        FUZZ_CHECK(!closed);
        check_frame(f);
        frames.push_back(std::move(f));
    }
    void close(std::uint16_t code, std::string_view) override {
        FUZZ_CHECK(!closed);
        // logout, or a client that kept sending over its rate limit
        FUZZ_CHECK(code == ws::close_code::normal || code == ws::close_code::policy_violation);
        closed = true;
        close_code = code;
    }
    std::uint16_t close_code = 0;
};

struct Client {
    RecordingSink sink;
    native::Protocol protocol;
    explicit Client(native::Service& s) : protocol(s, sink) {}
    ~Client() { protocol.on_closed(); }
};

// What the request asks for, read independently of the server: its type if it is a JSON
// object with a string "type", else nullopt (a malformed request).
std::optional<std::string> request_type(std::string_view text) {
    json::error_code ec;
    json::value v = json::parse(text, ec);
    if (ec || !v.is_object()) return std::nullopt;
    const json::value* t = v.as_object().if_contains("type");
    if (!t || !t->is_string()) return std::nullopt;
    return std::string(t->get_string());
}

// The reply type a successful request of type `req` gets.
std::string_view success_of(std::string_view req) {
    if (req == "login") return "welcome";
    if (req == "join") return "joined";
    if (req == "leave") return "left";
    if (req == "say") return "message";
    if (req == "dm") return "dm";
    if (req == "who") return "who";
    return "";
}

class Cluster {
  public:
    Cluster() {
        for (std::size_t i = 0; i < kSessions; ++i)
            connect(i);
    }
    ~Cluster() {
        for (auto& c : clients_)
            c.reset();  // logouts, while the hubs are alive
        pump();
    }

    void text(std::size_t i, std::string_view payload) {
        Client& c = *clients_[i];
        const std::size_t before = c.sink.frames.size();
        c.protocol.on_text(payload);
        const std::size_t replies = c.sink.frames.size() - before;
        const auto type = request_type(payload);
        const bool known = type && one_of(*type, {"login", "join", "leave", "say", "dm", "typing",
                                                  "logout", "who"});
        if (refused(c, replies)) {
            // Over the rate limit: one rate_limited error, or the connection closes (1008).
        } else if (!known) {
            FUZZ_CHECK(replies == 1);
            expect_error(c.sink.frames.back(), "bad_request");
        } else if (*type == "logout") {
            // Closed (1000), or an error (not logged in).
            FUZZ_CHECK(replies == (c.sink.closed ? 0u : 1u));
            if (replies) expect_error(c.sink.frames.back(), "not_logged_in");
        } else if (*type == "dm") {
            FUZZ_CHECK(replies <= 1);
            if (replies) expect_reply(c.sink.frames.back(), *type);
        } else if (*type == "typing") {
            FUZZ_CHECK(replies <= 1);  // not echoed: an error or nothing
            if (replies) expect_reply(c.sink.frames.back(), *type);
        } else {
            FUZZ_CHECK(replies == 1);
            expect_reply(c.sink.frames.back(), *type);
            if (*type == "say") check_cid(payload, c.sink.frames.back());
        }
        if (!known || *type != "logout")
            FUZZ_CHECK(!c.sink.closed || c.sink.close_code == ws::close_code::policy_violation);
        after_request(i);
    }

    void binary(std::size_t i) {
        Client& c = *clients_[i];
        const std::size_t before = c.sink.frames.size();
        c.protocol.on_binary();
        const std::size_t replies = c.sink.frames.size() - before;
        if (!refused(c, replies)) {
            FUZZ_CHECK(replies == 1);
            expect_error(c.sink.frames.back(), "bad_request");
        }
        after_request(i);
    }

    void disconnect(std::size_t i) { connect(i); }

    // Runs the loop until nothing is ready (the ring readers spin briefly, then sleep).
    void pump() {
        int idle = 0;
        for (int turns = 0; turns < 100000 && idle < 2; ++turns) {
            io_.restart();
            idle = io_.poll() == 0 ? idle + 1 : 0;
        }
        for (auto& c : clients_)
            if (c) c->sink.frames.clear();  // checked on arrival; keep memory flat
    }

  private:
    void connect(std::size_t i) {
        clients_[i].reset();
        clients_[i] = std::make_unique<Client>(i % 2 == 0 ? svc0_ : svc1_);
    }

    // A session its server closed (logout) is gone: a new connection takes its place.
    void after_request(std::size_t i) {
        if (clients_[i]->sink.closed) connect(i);
    }

    // The request was refused by the rate limit: nothing else happened.
    static bool refused(const Client& c, std::size_t replies) {
        if (c.sink.closed && c.sink.close_code == ws::close_code::policy_violation) {
            FUZZ_CHECK(replies == 0);
            return true;
        }
        if (replies != 1) return false;
        const json::object o = check_frame(c.sink.frames.back());
        return o.at("type") == "error" && o.at("code") == "rate_limited";
    }

    static void expect_error(const ws::SharedFrame& f, std::string_view code) {
        const json::object o = check_frame(f);
        FUZZ_CHECK(o.at("type") == "error");
        FUZZ_CHECK(o.at("code").as_string() == code);
    }

    // A say's "cid" comes back on its answer (the sender's copy, or an error other than a
    // bad_request), equal to the request's when it holds no floating-point number (those may
    // move by an ULP through Boost.JSON's parser).
    static void check_cid(std::string_view request, const ws::SharedFrame& f) {
        const json::value req = json::parse(request);
        const json::value* cid = req.as_object().if_contains("cid");
        const json::object o = check_frame(f);
        const bool bad_request = o.at("type") == "error" && o.at("code") == "bad_request";
        if (!cid) {
            FUZZ_CHECK(!o.contains("cid"));
            return;
        }
        if (bad_request) return;  // the cid itself may be what was wrong
        FUZZ_CHECK(o.contains("cid"));
        if (!has_double(*cid)) FUZZ_CHECK(o.at("cid") == *cid);
    }

    static bool has_double(const json::value& v) {
        if (v.is_double()) return true;
        if (const auto* a = v.if_array())
            for (const auto& e : *a)
                if (has_double(e)) return true;
        if (const auto* obj = v.if_object())
            for (const auto& kv : *obj)
                if (has_double(kv.value())) return true;
        return false;
    }

    static void expect_reply(const ws::SharedFrame& f, std::string_view req) {
        const json::object o = check_frame(f);
        const std::string_view t = o.at("type").as_string();
        FUZZ_CHECK(t == "error" || t == success_of(req));
    }

    ring::Region region_ = ring::Region::create(2, std::size_t{1} << 16);
    chat::SharedState state_ = chat::SharedState::create(chat::SharedOptions{
        .max_users = 6,
        .max_rooms = 3,
        .max_memberships = 8,
        .history_len = 4,
        .history_bytes = 1024,
        .max_text = 256,  // "too_long" with short inputs
    });
    boost::asio::io_context io_{1};
    chat::Hub hub0_{io_.get_executor(), region_, state_, 0};
    chat::Hub hub1_{io_.get_executor(), region_, state_, 1};
    // Worker 1 has tight limits, so that rate_limited, the close of an abusive connection,
    // too_many_rooms, dropped typing and partial welcomes (presence past 2 users) are reachable.
    bool limits_set_ = [this] {
        hub1_.set_limits(chat::Limits{.rate = 1,
                                      .burst = 6,
                                      .close_after = 3,
                                      .max_rooms = 2,
                                      .typing_rate = 1,
                                      .typing_burst = 2,
                                      .presence_max_users = 2});
        return true;
    }();
    native::Service svc0_{hub0_};
    native::Service svc1_{hub1_, false};  // one worker without encode-once
    std::unique_ptr<Client> clients_[kSessions];
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view in(reinterpret_cast<const char*>(data), size);
    Cluster cluster;
    std::size_t start = 0;
    while (start < in.size()) {
        std::size_t end = in.find('\n', start);
        if (end == std::string_view::npos) end = in.size();
        const std::string_view line = in.substr(start, end - start);
        start = end + 1;
        if (line.empty()) continue;
        const auto cmd = static_cast<unsigned char>(line[0]);
        const std::size_t session = cmd & 3;
        switch ((cmd >> 2) & 3) {
            case 0:
                cluster.text(session, line.substr(1));
                break;
            case 1:
                cluster.binary(session);
                break;
            case 2:
                cluster.disconnect(session);
                break;
            default:
                break;
        }
        cluster.pump();
    }
    return 0;
}
