// The worker application composed in process (no fork, no listener): a net::Worker with
// listen_fd -1, an app::WorkerApp on it, connections handed over with Worker::serve over
// socketpairs (the seam worker_http_fuzz uses).
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/ip/tcp.hpp>
#include <chrono>
#include <string>
#include <string_view>
#include <thread>

#include "app/worker_app.hpp"
#include "chat/chat.hpp"
#include "chat/shared_state.hpp"
#include "net/worker.hpp"
#include "ring/ring.hpp"

namespace app = steerchat::app;
namespace chat = steerchat::chat;
namespace net = steerchat::net;
namespace ring = steerchat::ring;

namespace {

app::WorkerContext in_process(bool protocol_test) {
    app::WorkerContext c;
    c.listen_fd = -1;  // no listener: connections come through Worker::serve
    c.app.protocol_test = protocol_test;
    return c;
}

class InProcessWorker : public ::testing::Test {
  protected:
    explicit InProcessWorker(bool protocol_test = false) : ctx(in_process(protocol_test)) {}

    ring::Region region = ring::Region::create(1, 1 << 16);
    chat::SharedState state = chat::SharedState::create({});
    app::WorkerContext ctx;
    net::Worker worker{app::worker_config(ctx)};
    app::WorkerApp application{worker, region, state, ctx.app};

    ~InProcessWorker() override {
        worker.stop();
        pump();
    }

    // A client connection: our end of a socketpair whose other end the worker serves.
    int connect() {
        int sv[2];
        EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
        boost::asio::ip::tcp::socket s(worker.io());
        s.assign(boost::asio::ip::tcp::v4(), sv[1]);
        worker.serve(std::move(s));
        return sv[0];
    }

    void pump() {
        for (int idle = 0, i = 0; idle < 2 && i < 10000; ++i) {
            worker.io().restart();
            idle = worker.io().poll() == 0 ? idle + 1 : 0;
        }
    }

    // The WebSocket upgrade of `target` on a new connection; returns the client's fd.
    int websocket(std::string_view target) {
        const int fd = connect();
        const std::string up = exchange(fd, std::string("GET ") + std::string(target) +
                                                " HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                                                "Connection: Upgrade\r\n"
                                                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                                                "Sec-WebSocket-Version: 13\r\n\r\n");
        EXPECT_EQ(up.rfind("HTTP/1.1 101 Switching Protocols\r\n", 0), 0u) << up;
        return fd;
    }

    // A masked client text frame (mask key 0).
    static std::string text_frame(std::string_view payload) {
        std::string frame{'\x81', static_cast<char>(0x80 | payload.size()), 0, 0, 0, 0};
        return frame += payload;
    }

    // Sends `request` and returns what the worker answered by the time the loop is idle.
    std::string exchange(int fd, std::string_view request) {
        EXPECT_EQ(::send(fd, request.data(), request.size(), MSG_NOSIGNAL),
                  static_cast<ssize_t>(request.size()));
        pump();
        std::string out;
        char buf[4096];
        for (ssize_t n; (n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT)) > 0;)
            out.append(buf, static_cast<std::size_t>(n));
        return out;
    }
};

TEST_F(InProcessWorker, ServesHttpRoutesOverASocketpair) {
    const int fd = connect();
    const std::string health = exchange(fd, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    EXPECT_EQ(health.rfind("HTTP/1.1 200 OK\r\n", 0), 0u) << health;
    const std::string metrics = exchange(fd, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    EXPECT_NE(metrics.find("steerchat_chat_sessions"), std::string::npos) << "the app's metrics";
    EXPECT_NE(metrics.find("steerchat_sio_"), std::string::npos) << "Socket.IO's metrics";
    const std::string open =
        exchange(fd, "GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\n\r\n");
    EXPECT_NE(open.find("0{\"sid\":\""), std::string::npos) << open;
    EXPECT_EQ(worker.stats().accepted, 1u);
    ::close(fd);
    pump();
    EXPECT_EQ(worker.stats().active, 0u);
}

TEST_F(InProcessWorker, NativeChatLogsInOverWebSocket) {
    const int fd = websocket("/ws");
    const std::string welcome = exchange(fd, text_frame(R"({"type":"login","name":"pat"})"));
    EXPECT_NE(welcome.find(R"("type":"welcome","name":"pat")"), std::string::npos) << welcome;
    EXPECT_EQ(application.hub().local_sessions(), 1u);
    // The adapters' counters, one metric per counter labelled by protocol.
    const int http = connect();
    const std::string metrics = exchange(http, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    EXPECT_NE(metrics.find("steerchat_chat_requests_total{worker=\"0\",protocol=\"native\"} 1\n"),
              std::string::npos)
        << metrics;
    EXPECT_NE(metrics.find("steerchat_chat_requests_total{worker=\"0\",protocol=\"socketio\"} 0\n"),
              std::string::npos)
        << metrics;
    EXPECT_NE(metrics.find("# TYPE steerchat_chat_encodings_total counter\n"), std::string::npos);
    EXPECT_NE(metrics.find("# TYPE steerchat_chat_shared_sends_total counter\n"),
              std::string::npos);
    EXPECT_NE(metrics.find("# TYPE steerchat_chat_errors_total counter\n"), std::string::npos);
    ::close(http);
    ::close(fd);
    pump();
    EXPECT_EQ(application.hub().local_sessions(), 0u) << "the name is freed with the connection";
    EXPECT_EQ(worker.websocket_registry().size(), 0u);
}

class ProtocolTestWorker : public InProcessWorker {
  protected:
    ProtocolTestWorker() : InProcessWorker(true) {}
};

// Found by worker_http_fuzz: in --protocol-test mode a Socket.IO socket sends "auth" 20 ms after
// its CONNECT from a timer. When that timer had expired and the client's disconnect was handled
// first in the same loop turn, the queued timer handler emitted on the freed socket
// (heap-use-after-free, a worker crash; AddressSanitizer reports it on the old code).
TEST_F(ProtocolTestWorker, AuthTimerAfterTheSocketIsGoneDoesNothing) {
    const int fd = websocket("/socket.io/?EIO=4&transport=websocket");
    const std::string connected = exchange(fd, text_frame("40"));
    EXPECT_NE(connected.find("40{\"sid\":\""), std::string::npos) << connected;
    // The timer expires while the loop is not running; then the client leaves. The next loop
    // turn sees both: the disconnect first (sockets are handled before timers), then the timer.
    std::this_thread::sleep_for(std::chrono::milliseconds(40));
    ::close(fd);
    pump();
    EXPECT_EQ(worker.websocket_registry().size(), 0u);
    // The worker still serves.
    const int again = websocket("/socket.io/?EIO=4&transport=websocket");
    EXPECT_NE(exchange(again, text_frame("40")).find("40{\"sid\":\""), std::string::npos);
    std::this_thread::sleep_for(std::chrono::milliseconds(40));
    pump();
    std::string auth;
    char buf[4096];
    for (ssize_t n; (n = ::recv(again, buf, sizeof buf, MSG_DONTWAIT)) > 0;)
        auth.append(buf, static_cast<std::size_t>(n));
    EXPECT_NE(auth.find("42[\"auth\",{}]"), std::string::npos) << "a live socket gets its auth";
    ::close(again);
    pump();
}

// A reload's update (apply_update, what the worker does with its master's ConfigUpdate): the
// limits reach the edge, the WebSocket options, Engine.IO (a session opened after it is told
// the new heartbeat; one opened before keeps its own) and the chat; the log level changes.
TEST_F(InProcessWorker, ApplyUpdateReachesEveryPart) {
    const int before = connect();
    const std::string open_before =
        exchange(before, "GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\n\r\n");
    EXPECT_NE(open_before.find("\"pingInterval\":25000"), std::string::npos) << open_before;

    app::WorkerOptions o;
    o.max_conns_per_ip = 7;
    o.max_conns_per_worker = 99;
    o.http_header_timeout_ms = 1234;
    o.http_keepalive_timeout_ms = 4321;
    o.ws_max_message = 4096;
    o.allowed_origins = {"https://chat.example"};
    o.eio_ping_interval_ms = 777;
    o.eio_max_sessions_per_ip = 3;
    o.chat_rate = 3;
    o.chat_burst = 4;
    o.chat_max_rooms = 9;
    o.log_level = steerchat::log::Level::warn;
    app::apply_update(worker, application, o, 1);
    EXPECT_FALSE(steerchat::log::enabled(steerchat::log::Level::info));
    steerchat::log::configure(steerchat::log::Level::info, steerchat::log::Format::text);

    EXPECT_EQ(worker.connections().limits().per_address, 7u);
    EXPECT_EQ(worker.connections().limits().per_worker, 99u);
    EXPECT_EQ(worker.config().header_timeout, std::chrono::milliseconds(1234));
    EXPECT_EQ(worker.config().keepalive_timeout, std::chrono::milliseconds(4321));
    EXPECT_EQ(worker.config().websocket.max_message_size, 4096u);
    EXPECT_EQ(worker.websocket_registry().options().max_message_size, 4096u);
    EXPECT_EQ(worker.config().allowed_origins, o.allowed_origins);
    EXPECT_EQ(application.hub().limits().rate, 3);
    EXPECT_EQ(application.hub().limits().burst, 4u);
    EXPECT_EQ(application.hub().limits().max_rooms, 9u);

    const int after = connect();
    const std::string open_after =
        exchange(after, "GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\n\r\n");
    EXPECT_NE(open_after.find("\"pingInterval\":777"), std::string::npos) << open_after;
    // The connection from before the update is still served.
    const std::string health = exchange(before, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    EXPECT_EQ(health.rfind("HTTP/1.1 200 OK\r\n", 0), 0u) << health;
    ::close(before);
    ::close(after);
    pump();
}

}  // namespace
