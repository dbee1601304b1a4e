// The Socket.IO server (userspace/sio/server.*) on a real Engine.IO server and net::Worker, over
// the in-memory transport (tests/support/in_memory.hpp): CONNECT, events with acks, binary
// events, DISCONNECT, over WebSocket and over polling.
#include <gtest/gtest.h>

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "net/worker.hpp"
#include "sio/server.hpp"
#include "support/in_memory.hpp"

namespace eio = steerchat::eio;
namespace json = boost::json;
namespace net = steerchat::net;
namespace sio = steerchat::sio;
namespace test = steerchat::test;

namespace {

struct Seen {
    std::vector<std::string> events;  // serialized argument arrays
    std::vector<std::vector<std::string>> attachments;
    std::vector<std::string> disconnects;
    std::vector<std::string> auths;
};

// "ack-me": acknowledged with its arguments; "bin": its attachments are sent back as
// "bin-back" with the same placeholders.
struct Recorder final : sio::EventHandler {
    explicit Recorder(Seen& s) : seen(s) {}
    void on_event(sio::Socket& socket, const json::array& args,
                  std::span<const std::string> attachments,
                  std::optional<std::uint64_t> ack) override {
        seen.events.push_back(json::serialize(args));
        seen.attachments.emplace_back(attachments.begin(), attachments.end());
        const auto& name = args[0].as_string();
        if (name == "ack-me" && ack) {
            socket.ack(*ack, json::array(args.begin() + 1, args.end()));
        } else if (name == "bin") {
            json::array back = args;
            back[0] = "bin-back";
            socket.emit(back, attachments);
        }
    }
    void on_disconnect(sio::Socket&, std::string_view reason) override {
        seen.disconnects.emplace_back(reason);
    }
    Seen& seen;
};

class SioServer : public ::testing::Test {
  protected:
    SioServer()
        : server(worker, eio::Options{}, sio::Options{},
                 {sio::Namespace{"/", [this](sio::Socket&, const json::object& auth) {
                                     seen.auths.push_back(json::serialize(auth));
                                     return std::make_unique<Recorder>(seen);
                                 }}}) {}
    ~SioServer() override {
        worker.stop();
        test::pump(worker.io());
    }

    // An Engine.IO 4 session over WebSocket, past its open packet.
    bool open_websocket(test::Client& c) {
        if (!c.upgrade("/socket.io/?EIO=4&transport=websocket")) return false;
        const auto open = c.read_frame();
        return open && open->payload.starts_with("0{");
    }

    // CONNECT to "/": the reply's payload.
    std::string connect(test::Client& c, std::string_view packet = "40") {
        c.send_text(packet);
        const auto reply = c.read_frame();
        return reply ? reply->payload : std::string();
    }

    Seen seen;
    net::Worker worker{net::WorkerConfig{}};
    sio::Server server;
};

TEST_F(SioServer, ConnectToTheMainNamespace) {
    test::Client c(worker);
    ASSERT_TRUE(open_websocket(c));
    const std::string reply = connect(c, R"(40{"token":"abc"})");
    ASSERT_TRUE(reply.starts_with("40{")) << reply;
    const auto payload = json::parse(reply.substr(2)).as_object();
    EXPECT_EQ(payload.size(), 1u) << "only the sid (the public suite checks)";
    EXPECT_EQ(payload.at("sid").as_string().size(), 20u);
    EXPECT_EQ(seen.auths, (std::vector<std::string>{R"({"token":"abc"})"}));
    EXPECT_EQ(server.stats().connects, 1u);
    EXPECT_EQ(server.stats().sockets, 1u);
}

TEST_F(SioServer, UnknownNamespaceGetsConnectError) {
    test::Client c(worker);
    ASSERT_TRUE(open_websocket(c));
    EXPECT_EQ(connect(c, "40/nope,"), R"(44/nope,{"message":"Invalid namespace"})");
    EXPECT_EQ(server.stats().connect_errors, 1u);
}

TEST_F(SioServer, AnEventWithAnAckIsAcknowledged) {
    test::Client c(worker);
    ASSERT_TRUE(open_websocket(c));
    ASSERT_TRUE(connect(c).starts_with("40{"));
    c.send_text(R"(4213["ack-me",1,{"two":2}])");
    const auto ack = c.read_frame();
    ASSERT_TRUE(ack);
    EXPECT_EQ(ack->payload, R"(4313[1,{"two":2}])");
    EXPECT_EQ(seen.events, (std::vector<std::string>{R"(["ack-me",1,{"two":2}])"}));
    EXPECT_EQ(server.stats().events_in, 1u);
}

TEST_F(SioServer, ABinaryEventGetsItsAttachments) {
    test::Client c(worker);
    ASSERT_TRUE(open_websocket(c));
    ASSERT_TRUE(connect(c).starts_with("40{"));
    c.send_text(R"(451-["bin",{"_placeholder":true,"num":0}])");
    EXPECT_TRUE(seen.events.empty()) << "the event waits for its attachment";
    c.send_binary(std::string("\x01\x02\x00\xff", 4));
    ASSERT_EQ(seen.events.size(), 1u);
    EXPECT_EQ(seen.attachments[0], (std::vector<std::string>{std::string("\x01\x02\x00\xff", 4)}));
    // Sent back: the BINARY_EVENT, then its attachment as a binary frame.
    const auto text = c.read_frame();
    ASSERT_TRUE(text);
    EXPECT_EQ(text->payload, R"(451-["bin-back",{"_placeholder":true,"num":0}])");
    const auto bin = c.read_frame();
    ASSERT_TRUE(bin);
    EXPECT_EQ(bin->opcode, 2);
    EXPECT_EQ(bin->payload, std::string("\x01\x02\x00\xff", 4));
}

TEST_F(SioServer, DisconnectLeavesTheNamespaceNotTheSession) {
    test::Client c(worker);
    ASSERT_TRUE(open_websocket(c));
    ASSERT_TRUE(connect(c).starts_with("40{"));
    c.send_text("41");
    test::pump(worker.io());
    EXPECT_EQ(seen.disconnects, (std::vector<std::string>{"client namespace disconnect"}));
    EXPECT_EQ(server.stats().sockets, 0u);
    EXPECT_EQ(server.engine().size(), 1u) << "the Engine.IO session stays open";
    // Events for a namespace the client left are ignored; it may connect again.
    c.send_text(R"(42["ack-me"])");
    EXPECT_TRUE(seen.events.empty());
    EXPECT_TRUE(connect(c).starts_with("40{"));
    // The session ending ends the namespace connection too.
    c.close();
    EXPECT_EQ(seen.disconnects,
              (std::vector<std::string>{"client namespace disconnect", "transport close"}));
    EXPECT_EQ(server.engine().size(), 0u);
}

TEST_F(SioServer, AnInvalidPacketClosesTheSession) {
    test::Client c(worker);
    ASSERT_TRUE(open_websocket(c));
    ASSERT_TRUE(connect(c).starts_with("40{"));
    c.send_text("42{not an array}");
    const auto close = c.read_frame();
    ASSERT_TRUE(close);
    EXPECT_EQ(close->payload, "1") << "Engine.IO close packet";
    EXPECT_EQ(server.stats().invalid_packets, 1u);
    EXPECT_EQ(seen.disconnects, (std::vector<std::string>{"parse error"}));
}

TEST_F(SioServer, WorksOverPollingToo) {
    test::Client c(worker);
    const auto open = c.request("GET", "/socket.io/?EIO=4&transport=polling");
    ASSERT_TRUE(open && open->body.starts_with("0{"));
    const std::string sid(json::parse(open->body.substr(1)).at("sid").as_string());
    const std::string q = "/socket.io/?EIO=4&transport=polling&sid=" + sid;
    ASSERT_TRUE(c.request("POST", q, "40"));
    const auto connected = c.request("GET", q);
    ASSERT_TRUE(connected);
    EXPECT_TRUE(connected->body.starts_with("40{\"sid\":")) << connected->body;
    ASSERT_TRUE(c.request("POST", q, R"(421["ack-me","x"])"));
    const auto ack = c.request("GET", q);
    ASSERT_TRUE(ack);
    EXPECT_EQ(ack->body, R"(431["x"])");
}

}  // namespace
