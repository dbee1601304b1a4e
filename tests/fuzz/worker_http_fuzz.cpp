// libFuzzer target for a whole worker: a real net::Worker composed by the app part (native chat
// at /ws, Socket.IO at /socket.io/ with the namespaces "/" and "/admin" or the protocol-test
// servers, /healthz, /metrics, /echo) over a real chat core, fed raw client bytes over an
// in-memory transport: each client connection is a connected AF_UNIX socketpair whose server end
// the worker serves as an accepted connection (Worker::serve). No listener, no fork, no TCP.
//
// Input layout:
//   byte 0    flags: bit 0 protocol-test mode, bit 1 CORS for any origin, bit 2 no Engine.IO
//             v3, bit 3 an Origin allowlist (https://ok.example), bit 4 short timers (a few ms:
//             heartbeats, upgrade and connect timeouts, WebSocket pings and close handshake)
//   then chunks, each a command byte and its data, separated by the marker "\xfe\xfd" (so the
//   first chunk's command is byte 1):
//     command bits 0-1  the connection (0-3; opened on first use)
//     command bits 2-3  0 write the data; 1 write it, then shut down the client's sending side;
//                       2 close the connection (the data is ignored); 3 write it a byte at a
//                       time, running the loop between bytes (at most 64 bytes that way)
//     command bit 4     with short timers (flags bit 4): then run the loop for 4 ms of real
//                       time, so timers fire (at most 8 times per input)
//   "$SID" in data is replaced by the last Engine.IO session id the server handed out (read
//   from its answers), so polls, posts and upgrades of a session can be expressed.
// After every chunk the worker's loop runs until idle and the client reads what it was sent.
// At the end every client closes, the loop runs until the connections are gone, the worker
// stops gracefully (stop hooks, drain) and everything is destroyed.
//
// Failures (besides a crash, a sanitizer report or a leak): an exception that reached the
// worker's safety nets (a request answered 500, a WebSocket closed 1011); a first answer on a
// connection that is not an HTTP response; connections still open after every client left; an
// fd more after an input than before.
#include <dirent.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/ip/tcp.hpp>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>

#include "app/worker_app.hpp"
#include "chat/shared_state.hpp"
#include "net/worker.hpp"
#include "ring/ring.hpp"
#include "support/fuzz_check.hpp"

namespace {

namespace app = steerchat::app;
namespace chat = steerchat::chat;
namespace net = steerchat::net;
namespace ring = steerchat::ring;

constexpr std::string_view kMarker = "\xfe\xfd";
constexpr std::size_t kConnections = 4;
constexpr std::size_t kMaxKept = 1 << 16;  // answer bytes kept per connection (sid search)

// WORKER_HTTP_FUZZ_VERBOSE=1: print what the server answered on each connection (to check
// what a seed reaches).
bool verbose() {
    static const bool v = std::getenv("WORKER_HTTP_FUZZ_VERBOSE") != nullptr;
    return v;
}

int open_fds() {
    int n = 0;
    if (DIR* d = ::opendir("/proc/self/fd")) {
        while (const dirent* e = ::readdir(d))
            if (e->d_name[0] != '.') ++n;
        ::closedir(d);
    }
    return n - 1;  // the directory's own fd
}

struct Client {
    int fd = -1;  // the client's end of the socketpair
    bool write_shut = false;
    std::string answer;  // what the server sent (the first kMaxKept bytes)
    std::size_t received = 0;
};

class Harness {
  public:
    explicit Harness(std::uint8_t flags) {
        app::WorkerContext ctx;
        ctx.slot = 0;
        ctx.nslots = 1;
        ctx.listen_fd = -1;
        ctx.ring = &region_;
        ctx.chat = &state_;
        // Small limits, so that inputs of a few KiB reach them.
        ctx.net.max_header_bytes = 2048;
        ctx.net.websocket.max_message_size = 4096;
        ctx.net.websocket.max_queued_bytes = 64 * 1024;
        ctx.app.engine.max_payload = 4096;
        ctx.app.sio_namespaces = {"/admin"};
        ctx.app.protocol_test = flags & 1;
        if (flags & 2) ctx.app.engine.cors_origins = {"*"};
        ctx.app.engine.allow_eio3 = !(flags & 4);
        if (flags & 8) {
            ctx.net.allowed_origins = {"https://ok.example"};
            ctx.app.engine.allowed_origins = ctx.net.allowed_origins;
        }
        if (flags & 16) {
            short_timers_ = true;
            using std::chrono::milliseconds;
            ctx.app.engine.ping_interval = milliseconds(2);
            ctx.app.engine.ping_timeout = milliseconds(3);
            ctx.app.engine.upgrade_timeout = milliseconds(5);
            ctx.app.socketio.connect_timeout = milliseconds(5);
            ctx.net.websocket.ping_interval = milliseconds(3);
            ctx.net.websocket.ping_timeout = milliseconds(3);
            ctx.net.websocket.close_timeout = milliseconds(5);
        }
        worker_ = std::make_unique<net::Worker>(app::worker_config(ctx));
        app_ = std::make_unique<app::WorkerApp>(*worker_, region_, state_, ctx.app);
    }

    ~Harness() {
        for (auto& c : clients_)
            close(c);
        // Every connection notices its client left (a connection waiting behind a held long
        // poll notices when the poll is answered: at the latest on the graceful stop below).
        pump_until([&] { return connections() == 0; });
        // Graceful stop, as on SIGTERM: Engine.IO sessions close, the loop drains.
        worker_->stop();
        pump_until([&] { return connections() == 0; });
        if (connections() != 0)
            std::fprintf(stderr, "%llu HTTP and %zu WebSocket connection(s) left open\n",
                         static_cast<unsigned long long>(worker_->stats().active),
                         worker_->websocket_registry().size());
        FUZZ_CHECK(connections() == 0);
        FUZZ_CHECK(worker_->stats().handler_errors == 0);
        FUZZ_CHECK(worker_->websocket_registry().stats().handler_errors == 0);
        app_.reset();
        worker_.reset();
    }

    void chunk(std::uint8_t cmd, std::string_view data) {
        Client& c = clients_[cmd & 3];
        const unsigned action = (cmd >> 2) & 3;
        if (action == 2) {
            close(c);
            pump();
            return;
        }
        if (c.fd < 0) open(c);
        const std::string bytes = with_sid(data);
        if (action == 3) {
            for (std::size_t i = 0; i < bytes.size() && i < 64; ++i) {
                write(c, std::string_view(bytes).substr(i, 1));
                pump();
                read(c);
            }
        } else {
            write(c, bytes);
        }
        if (action == 1 && !c.write_shut) {
            ::shutdown(c.fd, SHUT_WR);
            c.write_shut = true;
        }
        pump();
        if ((cmd & 16) && short_timers_ && waits_ < 8) {
            ++waits_;
            auto& io = worker_->io();
            io.restart();
            io.run_for(std::chrono::milliseconds(4));
            pump();
        }
        read(c);
    }

  private:
    void open(Client& c) {
        int sv[2];
        FUZZ_CHECK(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == 0);
        c = Client{};
        c.fd = sv[0];
        boost::asio::ip::tcp::socket server(worker_->io());
        boost::system::error_code ec;
        server.assign(boost::asio::ip::tcp::v4(), sv[1], ec);
        FUZZ_CHECK(!ec);
        worker_->serve(std::move(server));
    }

    void close(Client& c) {
        if (c.fd < 0) return;
        read(c);
        if (verbose()) {
            std::fprintf(stderr, "--- connection %zu answered %zu byte(s):\n", &c - clients_,
                         c.received);
            for (const char ch : std::string_view(c.answer).substr(0, 4096)) {
                const auto u = static_cast<unsigned char>(ch);
                if (u == '\n' || (u >= 0x20 && u < 0x7f))
                    std::fputc(u, stderr);
                else if (u != '\r')
                    std::fprintf(stderr, "\\x%02x", u);
            }
            std::fputc('\n', stderr);
        }
        ::close(c.fd);
        c.fd = -1;
    }

    // Writes all of `bytes`, running the loop whenever the socket buffer is full.
    void write(Client& c, std::string_view bytes) {
        if (c.write_shut) return;
        for (int stalls = 0; !bytes.empty() && stalls < 1000;) {
            const ssize_t n = ::send(c.fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
            if (n > 0) {
                bytes.remove_prefix(static_cast<std::size_t>(n));
                continue;
            }
            if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) return;  // server closed
            ++stalls;
            pump();
            read(c);
        }
    }

    void read(Client& c) {
        if (c.fd < 0) return;
        char buf[16384];
        for (;;) {
            const ssize_t n = ::recv(c.fd, buf, sizeof buf, MSG_DONTWAIT);
            if (n <= 0) break;
            const std::string_view got(buf, static_cast<std::size_t>(n));
            if (c.received == 0) {
                // The first answer on a connection is an HTTP response.
                if (got.size() >= 7) FUZZ_CHECK(got.substr(0, 7) == "HTTP/1.");
            }
            c.received += got.size();
            if (c.answer.size() < kMaxKept)
                c.answer.append(got.substr(0, kMaxKept - c.answer.size()));
            learn_sid(c.answer);
        }
    }

    // An Engine.IO open packet: {"sid":"...","upgrades":[...],"pingInterval":...}.
    void learn_sid(std::string_view answer) {
        constexpr std::string_view key = "{\"sid\":\"";
        for (std::size_t at = answer.find(key); at != std::string_view::npos;
             at = answer.find(key, at + 1)) {
            const std::size_t start = at + key.size();
            const std::size_t end = answer.find('"', start);
            if (end == std::string_view::npos) return;
            const std::size_t close = answer.find('}', end);
            if (answer.substr(end, close - end).find("\"pingInterval\"") == std::string_view::npos)
                continue;
            sid_ = answer.substr(start, end - start);
        }
    }

    std::string with_sid(std::string_view data) const {
        std::string out;
        for (std::size_t at = 0;;) {
            const std::size_t p = data.find("$SID", at);
            out.append(data.substr(at, p - at));
            if (p == std::string_view::npos) break;
            out.append(sid_);
            at = p + 4;
        }
        return out;
    }

    std::size_t connections() {
        return worker_->stats().active + worker_->websocket_registry().size();
    }

    // Runs the loop until nothing is ready.
    void pump() {
        auto& io = worker_->io();
        int idle = 0;
        for (int turns = 0; turns < 100000 && idle < 2; ++turns) {
            io.restart();
            idle = io.poll() == 0 ? idle + 1 : 0;
        }
    }

    template <class Done>
    void pump_until(Done done) {
        for (int i = 0; i < 100 && !done(); ++i)
            pump();
    }

    ring::Region region_ = ring::Region::create(1, std::size_t{1} << 16);
    chat::SharedState state_ = chat::SharedState::create(chat::SharedOptions{
        .max_users = 8,
        .max_rooms = 4,
        .max_memberships = 16,
        .history_len = 4,
        .history_bytes = 8192,
        .max_text = 4096,
    });
    std::unique_ptr<net::Worker> worker_;
    std::unique_ptr<app::WorkerApp> app_;
    Client clients_[kConnections];
    std::string sid_;
    bool short_timers_ = false;
    int waits_ = 0;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 2) return 0;
    const int fds_before = open_fds();
    {
        const std::string_view in(reinterpret_cast<const char*>(data) + 1, size - 1);
        Harness h(data[0]);
        for (std::size_t start = 0; start < in.size();) {
            std::size_t end = in.find(kMarker, start);
            if (end == std::string_view::npos) end = in.size();
            const std::string_view chunk = in.substr(start, end - start);
            if (!chunk.empty()) h.chunk(static_cast<std::uint8_t>(chunk[0]), chunk.substr(1));
            start = end + kMarker.size();
        }
    }
    const int fds_after = open_fds();
    if (fds_after != fds_before)
        std::fprintf(stderr, "open fds: %d before the input, %d after\n", fds_before, fds_after);
    FUZZ_CHECK(fds_after == fds_before);
    return 0;
}
