// ws::WebSocketConnection over real loopback sockets: the server side runs on an io_context driven
// by the test, the client is a plain socket that writes masked frames and parses the server's
// frames.
#include "ws/connection.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>

#include "ws/echo.hpp"

namespace steerchat::ws {
namespace {

namespace asio = boost::asio;
using asio::ip::tcp;
using namespace std::chrono_literals;

constexpr MaskKey kClientKey{0x12, 0x34, 0x56, 0x78};

// (Not "m" + std::to_string(i): GCC 12 reports a false -Wrestrict for it.)
std::string numbered(std::string_view prefix, int i) {
    std::string s(prefix);
    s += std::to_string(i);
    return s;
}

struct Record {
    int opened = 0;
    std::vector<std::pair<Opcode, std::string>> messages;
    std::vector<std::uint16_t> closes;
};

// Records everything; echoes messages when asked to.
class RecordingHandler final : public MessageHandler {
  public:
    RecordingHandler(Record& r, bool echo) : r_(r), echo_(echo) {}
    void on_open(WebSocketConnection&) override { ++r_.opened; }
    void on_message(WebSocketConnection& c, Opcode op, std::string_view payload) override {
        r_.messages.emplace_back(op, std::string(payload));
        if (echo_) c.send(SharedFrame::make(op, as_bytes(payload)));
    }
    void on_close(WebSocketConnection& c, std::uint16_t code) override {
        r_.closes.push_back(code);
        EXPECT_FALSE(c.send_text("too late"));
    }

  private:
    Record& r_;
    bool echo_;
};

struct ServerFrame {
    bool fin = false;
    Opcode op = Opcode::continuation;
    std::string payload;
    std::uint16_t close_code() const {
        return payload.size() >= 2
                   ? static_cast<std::uint16_t>((static_cast<std::uint8_t>(payload[0]) << 8) |
                                                static_cast<std::uint8_t>(payload[1]))
                   : close_code::no_status;
    }
};

class ConnectionTest : public ::testing::Test {
  protected:
    void SetUp() override {
        tcp::acceptor acceptor(ioc_, tcp::endpoint(asio::ip::address_v4::loopback(), 0));
        client_.connect(acceptor.local_endpoint());
        server_socket_.emplace(acceptor.accept());
        client_.non_blocking(true);
        client_.set_option(tcp::no_delay(true));
    }

    std::shared_ptr<WebSocketConnection> open(ConnectionOptions opts = {}, bool echo = true,
                                              ByteView initial = {}) {
        registry_.options() = opts;
        conn_ = WebSocketConnection::create(std::move(*server_socket_), registry_,
                                            std::make_unique<RecordingHandler>(rec_, echo));
        conn_->start(initial);
        return conn_;
    }

    void pump(std::chrono::milliseconds d = 2ms) {
        if (ioc_.stopped()) ioc_.restart();
        ioc_.run_for(d);
    }

    // Moves whatever the server sent into `in_`; returns false on EOF.
    bool client_read() {
        char buf[65536];
        while (true) {
            boost::system::error_code ec;
            const std::size_t n = client_.read_some(asio::buffer(buf), ec);
            if (ec == asio::error::would_block) return true;
            if (ec) {
                eof_ = true;
                return false;
            }
            in_.append(buf, n);
        }
    }

    std::optional<ServerFrame> parse_one() {
        if (in_.size() < 2) return std::nullopt;
        const auto* p = reinterpret_cast<const std::uint8_t*>(in_.data());
        EXPECT_EQ(p[0] & 0x70, 0) << "server frame with RSV bits";
        EXPECT_EQ(p[1] & 0x80, 0) << "server frame masked";
        std::size_t len = p[1] & 0x7F, pos = 2;
        if (len == 126) {
            if (in_.size() < 4) return std::nullopt;
            len = (std::size_t{p[2]} << 8) | p[3];
            pos = 4;
        } else if (len == 127) {
            if (in_.size() < 10) return std::nullopt;
            len = 0;
            for (int i = 0; i < 8; ++i)
                len = (len << 8) | p[2 + i];
            pos = 10;
        }
        if (in_.size() < pos + len) return std::nullopt;
        ServerFrame f;
        f.fin = (p[0] & 0x80) != 0;
        f.op = static_cast<Opcode>(p[0] & 0x0F);
        f.payload = in_.substr(pos, len);
        in_.erase(0, pos + len);
        return f;
    }

    // Pumps the server and reads until `n` frames arrived (or the deadline).
    std::vector<ServerFrame> frames(std::size_t n, std::chrono::milliseconds deadline = 3000ms) {
        std::vector<ServerFrame> out;
        const auto end = std::chrono::steady_clock::now() + deadline;
        while (out.size() < n && std::chrono::steady_clock::now() < end) {
            pump();
            client_read();
            while (auto f = parse_one())
                out.push_back(std::move(*f));
            if (eof_) break;
        }
        return out;
    }

    ServerFrame frame() {
        auto f = frames(1);
        EXPECT_EQ(f.size(), 1u) << "no frame from the server";
        return f.empty() ? ServerFrame{} : f.front();
    }

    // Pumps until the server closed its sending side.
    bool wait_eof(std::chrono::milliseconds deadline = 3000ms) {
        const auto end = std::chrono::steady_clock::now() + deadline;
        while (!eof_ && std::chrono::steady_clock::now() < end) {
            pump();
            client_read();
        }
        return eof_;
    }

    bool wait_finished(std::chrono::milliseconds deadline = 3000ms) {
        const auto end = std::chrono::steady_clock::now() + deadline;
        while (conn_->state() != WebSocketConnection::State::finished &&
               std::chrono::steady_clock::now() < end)
            pump();
        return conn_->state() == WebSocketConnection::State::finished;
    }

    void send_raw(const std::vector<std::uint8_t>& bytes) {
        client_.non_blocking(false);
        asio::write(client_, asio::buffer(bytes));
        client_.non_blocking(true);
        client_.set_option(tcp::no_delay(true));
    }
    void send_frame(Opcode op, std::string_view payload, bool fin = true) {
        send_raw(encode_client_frame(op, as_bytes(payload), kClientKey, fin));
    }
    void send_close(std::uint16_t code, std::string_view reason = {}) {
        std::uint8_t buf[kMaxControlPayload];
        const std::size_t n = close_payload(buf, code, reason);
        send_raw(encode_client_frame(Opcode::close, ByteView(buf, n), kClientKey));
    }

    // The registry and the record outlive the io_context (whose teardown may destroy connections).
    Record rec_;
    ConnectionRegistry registry_;
    asio::io_context ioc_{1};
    tcp::socket client_{ioc_};
    std::optional<tcp::socket> server_socket_;
    std::shared_ptr<WebSocketConnection> conn_;
    std::string in_;
    bool eof_ = false;
};

TEST_F(ConnectionTest, EchoesMessagesAndCountsThem) {
    open();
    EXPECT_EQ(rec_.opened, 1);
    EXPECT_EQ(registry_.size(), 1u);
    EXPECT_EQ(registry_.stats().open, 1u);
    send_frame(Opcode::text, "hello");
    send_frame(Opcode::binary, std::string(70000, 'x'));
    auto f = frames(2);
    ASSERT_EQ(f.size(), 2u);
    EXPECT_EQ(f[0].op, Opcode::text);
    EXPECT_EQ(f[0].payload, "hello");
    EXPECT_EQ(f[1].op, Opcode::binary);
    EXPECT_EQ(f[1].payload, std::string(70000, 'x'));
    EXPECT_EQ(registry_.stats().messages_in, 2u);
    EXPECT_EQ(registry_.stats().messages_out, 2u);
}

TEST_F(ConnectionTest, SmallMessagesKeepTheBufferALargeOneGivesItBack) {
    open();
    send_frame(Opcode::text, "small");
    ASSERT_EQ(frames(1).size(), 1u);
    const std::size_t small = conn_->message_buffer_bytes();
    EXPECT_GT(small, 0u) << "a small buffer is kept for the next message";
    EXPECT_LE(small, 64u * 1024);
    send_frame(Opcode::binary, std::string(300000, 'x'));
    auto f = frames(1);
    ASSERT_EQ(f.size(), 1u);
    EXPECT_EQ(f[0].payload.size(), 300000u);
    EXPECT_EQ(conn_->message_buffer_bytes(), 0u) << "the large buffer is freed after its message";
    send_frame(Opcode::text, "again");
    ASSERT_EQ(frames(1).size(), 1u);
}

TEST_F(ConnectionTest, SendsOfOneLoopTurnGoOutInOneWrite) {
    open();
    auto shared = SharedFrame::text("broadcast");
    for (int i = 0; i < 50; ++i)
        ASSERT_TRUE(conn_->send(i % 2 ? shared : SharedFrame::text(numbered("m", i))));
    EXPECT_EQ(conn_->queued_frames(), 50u);
    EXPECT_EQ(conn_->writes(), 0u) << "the flush is posted, not run inside send()";
    auto f = frames(50);
    ASSERT_EQ(f.size(), 50u);
    EXPECT_EQ(f[0].payload, "m0");
    EXPECT_EQ(f[1].payload, "broadcast");
    EXPECT_EQ(f[48].payload, "m48");
    EXPECT_EQ(conn_->writes(), 1u);
    EXPECT_EQ(registry_.stats().writes, 1u);
    EXPECT_EQ(conn_->queued_bytes(), 0u);
    EXPECT_EQ(shared.use_count(), 1u) << "written frames are released";
}

TEST_F(ConnectionTest, UncorkedBaselineWritesEveryFrameSeparatelyInOrder) {
    ConnectionOptions opts;
    opts.cork = false;
    open(opts);
    for (int i = 0; i < 20; ++i)
        ASSERT_TRUE(conn_->send(SharedFrame::text(numbered("m", i))));
    auto f = frames(20);
    ASSERT_EQ(f.size(), 20u);
    for (int i = 0; i < 20; ++i)
        EXPECT_EQ(f[i].payload, numbered("m", i));
    EXPECT_EQ(conn_->writes(), 20u);
    EXPECT_EQ(conn_->queued_bytes(), 0u);
}

TEST_F(ConnectionTest, FramesQueuedDuringAWriteGoInTheNextOne) {
    ConnectionOptions opts;
    opts.max_queued_bytes = std::size_t{256} << 20;
    open(opts);
    // Far more than the loopback socket buffers hold while the client does not read.
    const std::string big(std::size_t{48} << 20, 'b');
    ASSERT_TRUE(conn_->send(SharedFrame::binary(as_bytes(big))));
    pump(20ms);
    ASSERT_TRUE(conn_->write_in_flight());
    EXPECT_EQ(conn_->writes(), 1u);
    for (int i = 0; i < 5; ++i) {
        ASSERT_TRUE(conn_->send_text(numbered("after", i)));
        pump(1ms);
    }
    EXPECT_EQ(conn_->writes(), 1u) << "nothing is written beside a write in flight";
    auto f = frames(6, 10000ms);
    ASSERT_EQ(f.size(), 6u);
    EXPECT_EQ(f[0].payload.size(), big.size());
    EXPECT_EQ(f[5].payload, "after4");
    EXPECT_EQ(conn_->writes(), 2u);
}

TEST_F(ConnectionTest, QueueOverflowClosesWith1008AndCounts) {
    ConnectionOptions opts;
    opts.max_queued_bytes = 8 * 1024;
    open(opts);
    const std::string kb(1000, 'k');
    int accepted = 0;
    for (int i = 0; i < 20; ++i)
        accepted += conn_->send_text(kb) ? 1 : 0;
    EXPECT_EQ(accepted, 8);
    EXPECT_EQ(registry_.stats().queue_overflows, 1u);
    EXPECT_EQ(conn_->state(), WebSocketConnection::State::closing);
    // The unwritten frames were dropped: the client gets the Close only.
    auto f = frame();
    EXPECT_EQ(f.op, Opcode::close);
    EXPECT_EQ(f.close_code(), close_code::policy_violation);
    EXPECT_EQ(f.payload.substr(2), "send queue overflow");
    EXPECT_TRUE(wait_eof()) << "the server does not wait for the slow client's Close";
    client_.close();
    ASSERT_TRUE(wait_finished());
    ASSERT_EQ(rec_.closes.size(), 1u);
    EXPECT_EQ(rec_.closes[0], close_code::policy_violation);
    EXPECT_EQ(registry_.size(), 0u);
    EXPECT_EQ(registry_.stats().open, 0u);
}

TEST_F(ConnectionTest, ClientCloseIsEchoedThenTheServerClosesTcp) {
    open();
    send_close(close_code::normal, "bye");
    auto f = frame();
    EXPECT_EQ(f.op, Opcode::close);
    EXPECT_EQ(f.close_code(), close_code::normal);
    EXPECT_TRUE(wait_eof());
    client_.shutdown(tcp::socket::shutdown_send);
    ASSERT_TRUE(wait_finished());
    EXPECT_EQ(rec_.closes, std::vector<std::uint16_t>{close_code::normal});
}

TEST_F(ConnectionTest, EmptyClientCloseGetsAnEmptyClose) {
    open();
    send_raw(encode_client_frame(Opcode::close, {}, kClientKey));
    auto f = frame();
    EXPECT_EQ(f.op, Opcode::close);
    EXPECT_TRUE(f.payload.empty());
    EXPECT_TRUE(wait_eof());
    client_.close();
    ASSERT_TRUE(wait_finished());
    EXPECT_EQ(rec_.closes, std::vector<std::uint16_t>{close_code::no_status});
}

TEST_F(ConnectionTest, DataAfterTheClientsCloseIsIgnored) {
    open();
    std::vector<std::uint8_t> bytes;
    std::uint8_t buf[kMaxControlPayload];
    encode_client_frame(bytes, Opcode::close, ByteView(buf, close_payload(buf, 1000, "")), kClientKey);
    encode_client_frame(bytes, Opcode::text, as_bytes("ignored"), kClientKey);
    send_raw(bytes);
    auto f = frames(2, 500ms);
    ASSERT_EQ(f.size(), 1u);
    EXPECT_EQ(f[0].op, Opcode::close);
    EXPECT_TRUE(rec_.messages.empty());
}

TEST_F(ConnectionTest, ServerCloseWaitsForThePeersClose) {
    open();
    conn_->close(4000, "done");
    EXPECT_FALSE(conn_->send_text("after close"));
    auto f = frame();
    EXPECT_EQ(f.op, Opcode::close);
    EXPECT_EQ(f.close_code(), 4000);
    EXPECT_EQ(f.payload.substr(2), "done");
    pump(20ms);
    EXPECT_EQ(conn_->state(), WebSocketConnection::State::closing)
        << "waiting for the peer's Close";
    send_close(4000);
    EXPECT_TRUE(wait_eof());
    client_.close();
    ASSERT_TRUE(wait_finished());
    EXPECT_EQ(rec_.closes, std::vector<std::uint16_t>{4000});
}

TEST_F(ConnectionTest, ServerCloseGivesUpAfterTheCloseTimeout) {
    ConnectionOptions opts;
    opts.close_timeout = 150ms;
    open(opts);
    conn_->close(close_code::going_away, "bye");
    const auto t0 = std::chrono::steady_clock::now();
    EXPECT_EQ(frame().close_code(), close_code::going_away);
    EXPECT_TRUE(wait_eof());  // the client never answers
    EXPECT_GE(std::chrono::steady_clock::now() - t0, 100ms);
    ASSERT_TRUE(wait_finished());
    EXPECT_EQ(rec_.closes, std::vector<std::uint16_t>{close_code::going_away});
}

TEST_F(ConnectionTest, PingIsAnsweredWithTheSamePayload) {
    open();
    send_frame(Opcode::ping, "are you there?");
    auto f = frame();
    EXPECT_EQ(f.op, Opcode::pong);
    EXPECT_EQ(f.payload, "are you there?");
    // An unsolicited pong is ignored.
    send_frame(Opcode::pong, "x");
    send_frame(Opcode::text, "still here");
    f = frame();
    EXPECT_EQ(f.op, Opcode::text);
    EXPECT_EQ(f.payload, "still here");
}

TEST_F(ConnectionTest, PingBetweenFragmentsIsAnsweredFirst) {
    open();
    send_frame(Opcode::text, "frag", false);
    send_frame(Opcode::ping, "p");
    send_frame(Opcode::continuation, "ment");
    auto f = frames(2);
    ASSERT_EQ(f.size(), 2u);
    EXPECT_EQ(f[0].op, Opcode::pong);
    EXPECT_EQ(f[1].payload, "fragment");
}

TEST_F(ConnectionTest, IdleConnectionIsPingedThenDropped) {
    ConnectionOptions opts;
    opts.ping_interval = 100ms;
    opts.ping_timeout = 100ms;
    open(opts);
    const auto t0 = std::chrono::steady_clock::now();
    auto f = frame();
    EXPECT_EQ(f.op, Opcode::ping);
    EXPECT_GE(std::chrono::steady_clock::now() - t0, 90ms);
    EXPECT_TRUE(wait_eof()) << "no pong: the connection is dropped";
    ASSERT_TRUE(wait_finished());
    EXPECT_EQ(registry_.stats().ping_timeouts, 1u);
    EXPECT_EQ(rec_.closes, std::vector<std::uint16_t>{close_code::abnormal});
}

TEST_F(ConnectionTest, AnsweredPingKeepsTheConnection) {
    ConnectionOptions opts;
    opts.ping_interval = 60ms;
    opts.ping_timeout = 60ms;
    open(opts);
    for (int i = 0; i < 4; ++i) {
        auto f = frame();
        ASSERT_EQ(f.op, Opcode::ping);
        send_frame(Opcode::pong, f.payload);
    }
    EXPECT_TRUE(conn_->is_open());
    EXPECT_EQ(registry_.stats().ping_timeouts, 0u);
}

TEST_F(ConnectionTest, ProtocolErrorClosesWith1002WithoutWaiting) {
    ConnectionOptions opts;
    opts.close_timeout = 200ms;
    open(opts);
    send_raw(encode_frame(Opcode::text, as_bytes("unmasked")));
    auto f = frame();
    EXPECT_EQ(f.op, Opcode::close);
    EXPECT_EQ(f.close_code(), close_code::protocol_error);
    EXPECT_TRUE(wait_eof());
    ASSERT_TRUE(wait_finished());  // the client never closes: the close timeout ends it
    EXPECT_EQ(registry_.stats().protocol_errors, 1u);
    EXPECT_EQ(rec_.closes, std::vector<std::uint16_t>{close_code::protocol_error});
}

TEST_F(ConnectionTest, TooBigMessageCloses1009) {
    ConnectionOptions opts;
    opts.max_message_size = 100;
    open(opts);
    send_frame(Opcode::text, std::string(101, 'a'));
    EXPECT_EQ(frame().close_code(), close_code::message_too_big);
}

TEST_F(ConnectionTest, InvalidUtf8InAFragmentCloses1007) {
    open();
    send_frame(Opcode::text, "ok", false);
    send_frame(Opcode::continuation, "\xC0\xAF", false);
    EXPECT_EQ(frame().close_code(), close_code::invalid_payload);
}

TEST_F(ConnectionTest, BytesReadBeforeTheUpgradeAreParsedFirst) {
    auto early = encode_client_frame(Opcode::text, as_bytes("early"), kClientKey);
    auto half = encode_client_frame(Opcode::text, as_bytes("split"), kClientKey);
    early.insert(early.end(), half.begin(), half.begin() + 4);
    open({}, true, ByteView(early));
    send_raw(std::vector<std::uint8_t>(half.begin() + 4, half.end()));
    auto f = frames(2);
    ASSERT_EQ(f.size(), 2u);
    EXPECT_EQ(f[0].payload, "early");
    EXPECT_EQ(f[1].payload, "split");
}

TEST_F(ConnectionTest, PeerDropIsReportedAs1006) {
    open();
    client_.close();
    ASSERT_TRUE(wait_finished());
    EXPECT_EQ(rec_.closes, std::vector<std::uint16_t>{close_code::abnormal});
    EXPECT_EQ(registry_.size(), 0u);
}

TEST_F(ConnectionTest, HubCloseAllSends1001AndReportsEmpty) {
    int empties = 0;
    registry_.set_on_empty([&] { ++empties; });
    open();
    registry_.close_all(close_code::going_away, "server shutting down");
    EXPECT_TRUE(registry_.closing_all());
    auto f = frame();
    EXPECT_EQ(f.close_code(), close_code::going_away);
    EXPECT_EQ(f.payload.substr(2), "server shutting down");
    send_close(close_code::going_away);
    EXPECT_TRUE(wait_eof());
    client_.close();
    ASSERT_TRUE(wait_finished());
    EXPECT_EQ(empties, 1);
}

TEST(EchoHandler, EchoesOpcodeAndPayload) {
    ConnectionRegistry registry;
    asio::io_context ioc;
    tcp::acceptor acceptor(ioc, tcp::endpoint(asio::ip::address_v4::loopback(), 0));
    tcp::socket client(ioc);
    client.connect(acceptor.local_endpoint());
    auto conn =
        WebSocketConnection::create(acceptor.accept(), registry, std::make_unique<EchoHandler>());
    conn->start();
    asio::write(client,
                asio::buffer(encode_client_frame(Opcode::binary, as_bytes("\x01\x02"), kClientKey)));
    ioc.run_for(50ms);
    std::uint8_t buf[8] = {};
    const std::size_t n = client.read_some(asio::buffer(buf));
    ASSERT_EQ(n, 4u);
    EXPECT_EQ(buf[0], 0x82);
    EXPECT_EQ(buf[1], 2);
    EXPECT_EQ(buf[2], 1);
    EXPECT_EQ(buf[3], 2);
}

}  // namespace
}  // namespace steerchat::ws
