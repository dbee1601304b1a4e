// The Engine.IO session (userspace/eio/session.*) through a real eio::Server on a real
// net::Worker, over the in-memory transport (tests/support/in_memory.hpp): the polling
// handshake, messages both ways, the upgrade to WebSocket, heartbeats, errors.
#include <gtest/gtest.h>

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <chrono>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "eio/server.hpp"
#include "net/worker.hpp"
#include "support/in_memory.hpp"

namespace eio = steerchat::eio;
namespace net = steerchat::net;
namespace test = steerchat::test;
using namespace std::chrono_literals;

namespace {

// Echoes every message and records what it saw.
struct Recorder {
    std::vector<std::string> messages;
    std::vector<std::string> closes;
};

struct Echo final : eio::SessionHandler {
    explicit Echo(Recorder& r) : rec(r) {}
    void on_message(eio::Session& s, std::string_view data, bool binary) override {
        rec.messages.emplace_back(data);
        s.send(data, binary);
    }
    void on_close(eio::Session&, std::string_view reason) override {
        rec.closes.emplace_back(reason);
    }
    Recorder& rec;
};

eio::Options default_options() {
    eio::Options o;
    o.path = "/engine.io/";
    return o;
}

class EioSession : public ::testing::Test {
  protected:
    explicit EioSession(eio::Options o = default_options())
        : server(worker, std::move(o),
                 [this](eio::Session&) { return std::make_unique<Echo>(rec); }) {}

    ~EioSession() override {
        worker.stop();
        test::pump(worker.io());
    }

    // A polling handshake: the sid.
    std::string handshake(test::Client& c) {
        const auto a = c.request("GET", "/engine.io/?EIO=4&transport=polling");
        if (!a || a->status != 200 || !a->body.starts_with('0')) return {};
        return std::string(boost::json::parse(a->body.substr(1)).at("sid").as_string());
    }

    Recorder rec;
    net::Worker worker{net::WorkerConfig{}};
    eio::Server server;
};

TEST_F(EioSession, PollingHandshakeAnswersTheOpenPacket) {
    test::Client c(worker);
    const auto a = c.request("GET", "/engine.io/?EIO=4&transport=polling");
    ASSERT_TRUE(a);
    EXPECT_EQ(a->status, 200);
    EXPECT_EQ(a->header("Content-Type"), "text/plain; charset=UTF-8");
    ASSERT_TRUE(a->body.starts_with('0')) << a->body;
    const auto open = boost::json::parse(a->body.substr(1)).as_object();
    // Exactly the reference's fields (the public suite checks there are no others).
    EXPECT_EQ(open.size(), 5u) << a->body;
    EXPECT_EQ(open.at("sid").as_string().size(), 20u);
    EXPECT_EQ(boost::json::serialize(open.at("upgrades")), R"(["websocket"])");
    EXPECT_EQ(open.at("pingInterval").as_int64(), 25000);
    EXPECT_EQ(open.at("pingTimeout").as_int64(), 20000);
    EXPECT_EQ(open.at("maxPayload").as_int64(), 1000000);
    EXPECT_EQ(server.size(), 1u);
    EXPECT_EQ(server.stats().opened, 1u);
}

TEST_F(EioSession, PollingMessagesGoBothWays) {
    test::Client c(worker);
    const std::string sid = handshake(c);
    ASSERT_FALSE(sid.empty());
    const std::string q = "/engine.io/?EIO=4&transport=polling&sid=" + sid;
    const auto post = c.request("POST", q,
                                "4hello\x1e"
                                "4world");
    ASSERT_TRUE(post);
    EXPECT_EQ(post->status, 200);
    EXPECT_EQ(post->body, "ok");
    EXPECT_EQ(rec.messages, (std::vector<std::string>{"hello", "world"}));
    // Both echoes, queued in one loop turn, come in one poll answer.
    const auto poll = c.request("GET", q);
    ASSERT_TRUE(poll);
    EXPECT_EQ(poll->body,
              "4hello\x1e"
              "4world");
    EXPECT_EQ(server.stats().messages_in, 2u);
    EXPECT_EQ(server.stats().messages_out, 2u);
}

TEST_F(EioSession, HeldPollIsAnsweredWhenAMessageIsQueued) {
    test::Client poller(worker);
    const std::string sid = handshake(poller);
    const std::string q = "/engine.io/?EIO=4&transport=polling&sid=" + sid;
    poller.send_request("GET", q);
    EXPECT_FALSE(poller.read_answer(20ms)) << "nothing queued: the poll is held";
    test::Client poster(worker);
    ASSERT_TRUE(poster.request("POST", q, "4ping me"));
    const auto poll = poller.read_answer();
    ASSERT_TRUE(poll);
    EXPECT_EQ(poll->body, "4ping me");
}

TEST_F(EioSession, UpgradeProbeAnswersThePendingPollWithNoop) {
    test::Client poller(worker);
    const std::string sid = handshake(poller);
    const std::string q = "/engine.io/?EIO=4&transport=polling&sid=" + sid;
    poller.send_request("GET", q);  // held during the probe, as the official client does

    test::Client ws(worker);
    ASSERT_TRUE(ws.upgrade("/engine.io/?EIO=4&transport=websocket&sid=" + sid));
    ws.send_text("2probe");
    const auto pong = ws.read_frame();
    ASSERT_TRUE(pong);
    EXPECT_EQ(pong->payload, "3probe");
    const auto noop = poller.read_answer();
    ASSERT_TRUE(noop);
    EXPECT_EQ(noop->body, "6");

    ws.send_text("5");
    EXPECT_EQ(server.stats().upgrades, 1u);
    ws.send_text("4over websocket");
    const auto echo = ws.read_frame();
    ASSERT_TRUE(echo);
    EXPECT_EQ(echo->opcode, 1);
    EXPECT_EQ(echo->payload, "4over websocket");

    // Upgraded: polling requests for the session are bad requests (code 3).
    const auto late = poller.request("GET", q);
    ASSERT_TRUE(late);
    EXPECT_EQ(late->status, 400);
    EXPECT_EQ(late->body, R"({"code":3,"message":"Bad request"})");
    // A second WebSocket for the session is accepted and closed at once.
    test::Client again(worker);
    ASSERT_TRUE(again.upgrade("/engine.io/?EIO=4&transport=websocket&sid=" + sid));
    const auto closed = again.read_frame();
    ASSERT_TRUE(closed);
    EXPECT_EQ(closed->opcode, 8);
    EXPECT_EQ(server.stats().websockets_refused, 1u);
}

TEST_F(EioSession, UpgradeWithoutAPendingPollSendsTheNoopOverWebSocket) {
    test::Client poller(worker);
    const std::string sid = handshake(poller);
    test::Client ws(worker);
    ASSERT_TRUE(ws.upgrade("/engine.io/?EIO=4&transport=websocket&sid=" + sid));
    ws.send_text("2probe");
    ASSERT_EQ(ws.read_frame()->payload, "3probe");
    // Queued while the probe waits for the upgrade packet: sent over the WebSocket after it.
    ASSERT_TRUE(
        poller.request("POST", "/engine.io/?EIO=4&transport=polling&sid=" + sid, "4queued"));
    ws.send_text("5");
    const auto noop = ws.read_frame();
    ASSERT_TRUE(noop);
    EXPECT_EQ(noop->payload, "6");
    const auto queued = ws.read_frame();
    ASSERT_TRUE(queued);
    EXPECT_EQ(queued->payload, "4queued");
}

TEST_F(EioSession, AFailedProbeLeavesTheSessionPolling) {
    test::Client poller(worker);
    const std::string sid = handshake(poller);
    const std::string q = "/engine.io/?EIO=4&transport=polling&sid=" + sid;
    test::Client ws(worker);
    ASSERT_TRUE(ws.upgrade("/engine.io/?EIO=4&transport=websocket&sid=" + sid));
    ws.send_text("4not a probe");
    const auto closed = ws.read_frame();
    ASSERT_TRUE(closed);
    EXPECT_EQ(closed->opcode, 8) << "the probe is dropped";
    EXPECT_EQ(server.stats().upgrades, 0u);
    EXPECT_TRUE(rec.messages.empty()) << "a probe's packets are not the session's";
    ASSERT_TRUE(poller.request("POST", q, "4still polling"));
    const auto poll = poller.request("GET", q);
    ASSERT_TRUE(poll);
    EXPECT_EQ(poll->body, "4still polling");
    // A new probe may try again.
    test::Client second(worker);
    ASSERT_TRUE(second.upgrade("/engine.io/?EIO=4&transport=websocket&sid=" + sid));
    second.send_text("2probe");
    ASSERT_EQ(second.read_frame()->payload, "3probe");
    second.send_text("5");
    EXPECT_EQ(server.stats().upgrades, 1u);
}

TEST_F(EioSession, UnknownSidIsRefusedWithCode1) {
    test::Client c(worker);
    const auto a = c.request("GET", "/engine.io/?EIO=4&transport=polling&sid=nosuchsession");
    ASSERT_TRUE(a);
    EXPECT_EQ(a->status, 400);
    EXPECT_EQ(a->header("Content-Type"), "application/json");
    EXPECT_EQ(a->body, R"({"code":1,"message":"Session ID unknown"})");
    const auto t = c.request("GET", "/engine.io/?EIO=4&transport=carrier-pigeon");
    ASSERT_TRUE(t);
    EXPECT_EQ(t->body, R"({"code":0,"message":"Transport unknown"})");
    const auto v = c.request("GET", "/engine.io/?EIO=5&transport=polling");
    ASSERT_TRUE(v);
    EXPECT_EQ(v->body, R"({"code":5,"message":"Unsupported protocol version"})");
    EXPECT_EQ(server.stats().errors, 3u);
}

TEST_F(EioSession, ClosePacketEndsTheSession) {
    test::Client c(worker);
    const std::string sid = handshake(c);
    const std::string q = "/engine.io/?EIO=4&transport=polling&sid=" + sid;
    ASSERT_TRUE(c.request("POST", q, "1"));
    EXPECT_EQ(rec.closes, (std::vector<std::string>{"transport close"}));
    EXPECT_EQ(server.size(), 0u);
    const auto a = c.request("GET", q);
    ASSERT_TRUE(a);
    EXPECT_EQ(a->body, R"({"code":1,"message":"Session ID unknown"})");
}

TEST_F(EioSession, ServerStopAnswersThePendingPollWithClose) {
    test::Client c(worker);
    const std::string sid = handshake(c);
    c.send_request("GET", "/engine.io/?EIO=4&transport=polling&sid=" + sid);
    test::pump(worker.io());
    server.close_all();
    const auto a = c.read_answer();
    ASSERT_TRUE(a);
    EXPECT_EQ(a->body, "1");
    EXPECT_EQ(rec.closes, (std::vector<std::string>{"server shutting down"}));
}

eio::Options short_heartbeat() {
    eio::Options o = default_options();
    // The pong deadline is generous, so that a loaded machine's late poll still finds the
    // session (what a late request gets is the subject of another test).
    o.ping_interval = 10ms;
    o.ping_timeout = 300ms;
    return o;
}

class EioHeartbeat : public EioSession {
  protected:
    EioHeartbeat() : EioSession(short_heartbeat()) {}
};

TEST_F(EioHeartbeat, AMissedPongClosesTheSession) {
    test::Client c(worker);
    const std::string sid = handshake(c);
    const std::string q = "/engine.io/?EIO=4&transport=polling&sid=" + sid;
    const auto ping = c.request("GET", q);  // held until the server pings
    ASSERT_TRUE(ping);
    EXPECT_EQ(ping->body, "2");
    // No pong: the session ends when the timeout passes.
    c.send_request("GET", q);
    const auto end = c.read_answer();
    ASSERT_TRUE(end);
    EXPECT_EQ(end->body, "1");
    EXPECT_EQ(rec.closes, (std::vector<std::string>{"ping timeout"}));
    EXPECT_EQ(server.stats().ping_timeouts, 1u);
    EXPECT_EQ(server.size(), 0u);
}

TEST_F(EioHeartbeat, APongKeepsTheSession) {
    test::Client c(worker);
    const std::string sid = handshake(c);
    const std::string q = "/engine.io/?EIO=4&transport=polling&sid=" + sid;
    for (int i = 0; i < 3; ++i) {
        const auto ping = c.request("GET", q);
        ASSERT_TRUE(ping);
        ASSERT_EQ(ping->body, "2");
        ASSERT_TRUE(c.request("POST", q, "3"));
    }
    EXPECT_TRUE(rec.closes.empty());
    EXPECT_EQ(server.size(), 1u);
}

eio::Options short_limits() {
    eio::Options o = default_options();
    o.first_poll_timeout = 30ms;
    o.upgrade_timeout = 30ms;
    o.max_buffered_bytes = 256;
    return o;
}

class EioLimits : public EioSession {
  protected:
    EioLimits() : EioSession(short_limits()) {}
};

TEST_F(EioLimits, NoPollAfterTheHandshakeClosesTheSession) {
    test::Client c(worker);
    ASSERT_FALSE(handshake(c).empty());
    EXPECT_TRUE(test::pump_until(worker.io(), [&] { return server.size() == 0; }));
    EXPECT_EQ(rec.closes, (std::vector<std::string>{"first poll timeout"}));
    EXPECT_EQ(server.stats().first_poll_timeouts, 1u);
}

TEST_F(EioLimits, TooMuchQueuedForAPollingClientClosesTheSession) {
    test::Client c(worker);
    const std::string sid = handshake(c);
    const std::string q = "/engine.io/?EIO=4&transport=polling&sid=" + sid;
    ASSERT_TRUE(c.request("POST", q, "4" + std::string(100, 'a')));
    EXPECT_TRUE(rec.closes.empty()) << "100 bytes (+64 bookkeeping) fit in 256";
    ASSERT_TRUE(c.request("POST", q, "4" + std::string(100, 'b')));
    EXPECT_EQ(rec.closes, (std::vector<std::string>{"buffer overflow"}));
    EXPECT_EQ(server.stats().queue_overflows, 1u);
    EXPECT_EQ(server.size(), 0u);
}

TEST_F(EioLimits, AProbeWithoutUpgradeInTimeIsDroppedAndPollingGoesOn) {
    test::Client poller(worker);
    const std::string sid = handshake(poller);
    const std::string q = "/engine.io/?EIO=4&transport=polling&sid=" + sid;
    test::Client ws(worker);
    ASSERT_TRUE(ws.upgrade("/engine.io/?EIO=4&transport=websocket&sid=" + sid));
    ws.send_text("2probe");
    ASSERT_EQ(ws.read_frame()->payload, "3probe");
    // No "5": the probe is closed when the upgrade deadline passes.
    const auto closed = ws.read_frame();
    ASSERT_TRUE(closed);
    EXPECT_EQ(closed->opcode, 8);
    EXPECT_EQ(server.stats().upgrades, 0u);
    ASSERT_TRUE(poller.request("POST", q, "4after"));
    const auto poll = poller.request("GET", q);
    ASSERT_TRUE(poll);
    EXPECT_EQ(poll->body, "4after");
}

}  // namespace
