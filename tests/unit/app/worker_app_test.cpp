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

class InProcessWorker : public ::testing::Test {
  protected:
    ring::Region region = ring::Region::create(1, 1 << 16);
    chat::SharedState state = chat::SharedState::create({});
    app::WorkerContext ctx = [] {
        app::WorkerContext c;
        c.listen_fd = -1;
        return c;
    }();
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
    const int fd = connect();
    const std::string up = exchange(fd,
                                    "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                                    "Connection: Upgrade\r\n"
                                    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                                    "Sec-WebSocket-Version: 13\r\n\r\n");
    EXPECT_EQ(up.rfind("HTTP/1.1 101 Switching Protocols\r\n", 0), 0u) << up;
    // A masked text frame (mask key 0).
    const std::string login = R"({"type":"login","name":"pat"})";
    std::string frame{'\x81', static_cast<char>(0x80 | login.size()), 0, 0, 0, 0};
    frame += login;
    const std::string welcome = exchange(fd, frame);
    EXPECT_NE(welcome.find(R"("type":"welcome","name":"pat")"), std::string::npos) << welcome;
    EXPECT_EQ(application.hub().local_sessions(), 1u);
    ::close(fd);
    pump();
    EXPECT_EQ(application.hub().local_sessions(), 0u) << "the name is freed with the connection";
    EXPECT_EQ(worker.websocket_hub().size(), 0u);
}

}  // namespace
