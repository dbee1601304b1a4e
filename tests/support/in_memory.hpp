// A client of a whole net::Worker over the in-memory transport: each client is one end of a
// connected AF_UNIX socketpair whose other end the worker serves as an accepted connection
// (Worker::serve). It speaks HTTP/1.1 (requests, answers by Content-Length) and the client side
// of WebSocket (masked frames out, frames in). No listener, no network, no node.
//
// Everything runs on the test's thread: the client pumps the worker's loop while it waits.
#pragma once

#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "net/worker.hpp"

namespace steerchat::test {

// Runs the loop until nothing is ready (timers that have not expired wait).
inline void pump(boost::asio::io_context& io) {
    for (int idle = 0, i = 0; idle < 2 && i < 100000; ++i) {
        io.restart();
        idle = io.poll() == 0 ? idle + 1 : 0;
    }
}

// Runs the loop, waiting for timers too, until `pred()` or `timeout` of real time has passed.
template <class Pred>
bool pump_until(boost::asio::io_context& io, Pred pred,
                std::chrono::milliseconds timeout = std::chrono::milliseconds(3000)) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
        pump(io);
        if (pred()) return true;
        if (std::chrono::steady_clock::now() >= deadline) return false;
        io.restart();
        io.run_one_for(std::chrono::milliseconds(1));
    }
}

struct HttpAnswer {
    int status = 0;
    std::string head;  // status line and headers
    std::string body;
    std::string header(std::string_view name) const {
        // Case-sensitive on the name as the server writes it (Beast: canonical case).
        const std::string key = "\r\n" + std::string(name) + ": ";
        const auto at = head.find(key);
        if (at == std::string::npos) return {};
        const auto start = at + key.size();
        return head.substr(start, head.find("\r\n", start) - start);
    }
};

struct WsFrame {
    std::uint8_t opcode = 0;  // 1 text, 2 binary, 8 close, 9 ping, 10 pong
    std::string payload;
};

class Client {
  public:
    explicit Client(net::Worker& worker) : io_(worker.io()) {
        int sv[2];
        if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0) return;
        fd_ = sv[0];
        boost::asio::ip::tcp::socket server(io_);
        boost::system::error_code ec;
        server.assign(boost::asio::ip::tcp::v4(), sv[1], ec);
        worker.serve(std::move(server));
    }
    ~Client() { close(); }
    Client(const Client&) = delete;
    Client& operator=(const Client&) = delete;

    void close() {
        if (fd_ >= 0) ::close(fd_);
        fd_ = -1;
        pump(io_);
    }
    bool peer_closed() {
        fill();
        return eof_;
    }

    void send(std::string_view bytes) {
        while (!bytes.empty() && fd_ >= 0) {
            const ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
            if (n > 0) {
                bytes.remove_prefix(static_cast<std::size_t>(n));
                continue;
            }
            if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) return;
            pump(io_);
        }
        pump(io_);
    }

    // Writes a request (Host, and Content-Length when there is a body).
    void send_request(std::string_view method, std::string_view target, std::string_view body = {},
                      std::string_view extra_headers = {}) {
        std::string r =
            std::string(method) + " " + std::string(target) + " HTTP/1.1\r\nHost: x\r\n";
        r += extra_headers;
        if (!body.empty() || method == "POST")
            r += "Content-Length: " + std::to_string(body.size()) + "\r\n";
        r += "\r\n";
        r += body;
        send(r);
    }

    // The next answer, waiting up to `timeout` (a held long poll is answered later).
    std::optional<HttpAnswer> read_answer(
        std::chrono::milliseconds timeout = std::chrono::milliseconds(3000)) {
        std::optional<HttpAnswer> a;
        pump_until(
            io_, [&] { return (a = take_answer()).has_value() || peer_closed(); }, timeout);
        return a;
    }

    std::optional<HttpAnswer> request(std::string_view method, std::string_view target,
                                      std::string_view body = {},
                                      std::string_view extra_headers = {}) {
        send_request(method, target, body, extra_headers);
        return read_answer();
    }

    // The WebSocket handshake for `target`: true on 101.
    bool upgrade(std::string_view target) {
        send_request("GET", target, {},
                     "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     "Sec-WebSocket-Version: 13\r\n");
        bool done = false;
        pump_until(io_, [&] {
            fill();
            const auto end = in_.find("\r\n\r\n");
            if (end == std::string::npos) return peer_closed();
            done = in_.starts_with("HTTP/1.1 101 ");
            in_.erase(0, end + 4);
            return true;
        });
        return done;
    }

    // A masked client frame (mask key 0: the payload goes as it is).
    void send_frame(std::uint8_t opcode, std::string_view payload) {
        std::string f;
        f += static_cast<char>(0x80 | opcode);
        if (payload.size() < 126) {
            f += static_cast<char>(0x80 | payload.size());
        } else {
            f += static_cast<char>(0x80 | 126);
            f += static_cast<char>(payload.size() >> 8);
            f += static_cast<char>(payload.size() & 0xff);
        }
        f.append(4, '\0');
        f += payload;
        send(f);
    }
    void send_text(std::string_view payload) { send_frame(1, payload); }
    void send_binary(std::string_view payload) { send_frame(2, payload); }

    // The next frame from the server, waiting up to `timeout`.
    std::optional<WsFrame> read_frame(
        std::chrono::milliseconds timeout = std::chrono::milliseconds(3000)) {
        std::optional<WsFrame> f;
        pump_until(
            io_, [&] { return (f = take_frame()).has_value() || peer_closed(); }, timeout);
        return f;
    }

  private:
    void fill() {
        if (fd_ < 0) return;
        char buf[16384];
        for (;;) {
            const ssize_t n = ::recv(fd_, buf, sizeof buf, MSG_DONTWAIT);
            if (n > 0) {
                in_.append(buf, static_cast<std::size_t>(n));
                continue;
            }
            if (n == 0) eof_ = true;
            return;
        }
    }

    std::optional<HttpAnswer> take_answer() {
        fill();
        const auto end = in_.find("\r\n\r\n");
        if (end == std::string::npos) return std::nullopt;
        HttpAnswer a;
        a.head = in_.substr(0, end + 2);
        const std::string length = a.header("Content-Length");
        const std::size_t n = length.empty() ? 0 : std::stoul(length);
        if (in_.size() < end + 4 + n) return std::nullopt;
        a.status = std::stoi(in_.substr(9, 3));
        a.body = in_.substr(end + 4, n);
        in_.erase(0, end + 4 + n);
        return a;
    }

    std::optional<WsFrame> take_frame() {
        fill();
        if (in_.size() < 2) return std::nullopt;
        const auto b = [&](std::size_t i) { return static_cast<std::uint8_t>(in_[i]); };
        std::size_t len = b(1) & 0x7f;
        std::size_t at = 2;
        if (len == 126) {
            if (in_.size() < 4) return std::nullopt;
            len = (std::size_t{b(2)} << 8) | b(3);
            at = 4;
        } else if (len == 127) {
            if (in_.size() < 10) return std::nullopt;
            len = 0;
            for (std::size_t i = 2; i < 10; ++i)
                len = (len << 8) | b(i);
            at = 10;
        }
        if (in_.size() < at + len) return std::nullopt;
        WsFrame f{static_cast<std::uint8_t>(b(0) & 0x0f), in_.substr(at, len)};
        in_.erase(0, at + len);
        return f;
    }

    boost::asio::io_context& io_;
    int fd_ = -1;
    std::string in_;
    bool eof_ = false;
};

}  // namespace steerchat::test
