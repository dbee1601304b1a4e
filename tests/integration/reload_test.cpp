// Reload (SIGHUP): the master re-reads its --config file; the live settings reach every worker
// (a lower --max-conns-per-ip is enforced on each), what needs a restart (port) is named in the
// log and kept, the connections open before the reload keep working, and a broken file leaves
// the running configuration as it was, with the file and line in the log.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "harness.hpp"

using namespace steerchat::itest;
using namespace std::chrono_literals;

namespace {

// A TCP connection from `src` to 127.0.0.1:port that stays open: HTTP keep-alive requests, or a
// WebSocket after upgrade (on /echo).
class Client {
  public:
    Client(const std::string& src, std::uint16_t port) {
        fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_in local{}, dst{};
        local.sin_family = dst.sin_family = AF_INET;
        inet_pton(AF_INET, src.c_str(), &local.sin_addr);
        inet_pton(AF_INET, "127.0.0.1", &dst.sin_addr);
        dst.sin_port = htons(port);
        timeval tv{3, 0};
        ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        ok_ = ::bind(fd_, reinterpret_cast<sockaddr*>(&local), sizeof local) == 0 &&
              ::connect(fd_, reinterpret_cast<sockaddr*>(&dst), sizeof dst) == 0;
    }
    ~Client() {
        if (fd_ >= 0) ::close(fd_);
    }
    Client(const Client&) = delete;
    Client& operator=(const Client&) = delete;

    // One keep-alive GET: the status line and body, or nullopt if the connection failed.
    std::optional<std::string> get(const std::string& path) {
        if (!send_all("GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")) return std::nullopt;
        auto head = read_until("\r\n\r\n");
        if (!head) return std::nullopt;
        std::size_t length = 0;
        if (auto at = head->find("Content-Length: "); at != std::string::npos)
            length = std::stoul(head->substr(at + 16));
        while (buffer_.size() < length)
            if (!fill()) return std::nullopt;
        std::string body = buffer_.substr(0, length);
        buffer_.erase(0, length);
        return head->substr(0, head->find("\r\n")) + "\n" + body;
    }
    // The WebSocket handshake on /echo: true on 101.
    bool upgrade() {
        if (!send_all("GET /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                      "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                      "Sec-WebSocket-Version: 13\r\n\r\n"))
            return false;
        auto head = read_until("\r\n\r\n");
        return head && head->starts_with("HTTP/1.1 101");
    }
    // A short text message to the echo route and its echo.
    std::optional<std::string> echo(const std::string& text) {
        std::string frame{'\x81', static_cast<char>(0x80 | text.size()), 0, 0, 0, 0};
        frame += text;  // masked with the key 0: the payload as is
        if (!send_all(frame)) return std::nullopt;
        while (buffer_.size() < 2 ||
               buffer_.size() < 2 + static_cast<std::size_t>(buffer_[1] & 0x7f))
            if (!fill()) return std::nullopt;
        const std::size_t n = static_cast<std::size_t>(buffer_[1] & 0x7f);
        std::string payload = buffer_.substr(2, n);
        buffer_.erase(0, 2 + n);
        return payload;
    }
    bool ok() const { return ok_; }

  private:
    bool send_all(const std::string& data) {
        return ok_ && ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL) ==
                          static_cast<ssize_t>(data.size());
    }
    bool fill() {
        char buf[4096];
        ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
        if (n <= 0) return false;
        buffer_.append(buf, static_cast<std::size_t>(n));
        return true;
    }
    std::optional<std::string> read_until(const std::string& end) {
        for (;;) {
            if (auto at = buffer_.find(end); at != std::string::npos) {
                std::string head = buffer_.substr(0, at + end.size());
                buffer_.erase(0, at + end.size());
                return head;
            }
            if (!fill()) return std::nullopt;
        }
    }

    int fd_ = -1;
    bool ok_ = false;
    std::string buffer_;
};

// A config file in the temporary directory, rewritten by the test.
class ConfigFile {
  public:
    explicit ConfigFile(const std::string& name)
        : path_(std::filesystem::temp_directory_path() /
                (name + "-" + std::to_string(::getpid()) + ".conf")) {}
    ~ConfigFile() { std::filesystem::remove(path_); }
    void write(const std::string& text) const { std::ofstream(path_) << text; }
    std::string path() const { return path_.string(); }

  private:
    std::filesystem::path path_;
};

std::size_t count_in_log(const std::string& text, const std::string& needle) {
    std::size_t n = 0;
    for (auto at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1))
        ++n;
    return n;
}

// Waits until the server's log holds `needle` at least `times` times.
bool wait_log(const Server& srv, const std::string& needle, std::size_t times = 1,
              std::chrono::milliseconds timeout = 5s) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
        if (count_in_log(srv.log(), needle) >= times) return true;
        std::this_thread::sleep_for(10ms);
    }
    return false;
}

// Client addresses (from index `from` on) that land on worker 0 and on worker 1, and one more of
// worker 0.
struct Addresses {
    std::array<std::string, 2> of;  // of[w]: a client of worker w
    std::string other0;             // another client of worker 0
};
std::optional<Addresses> addresses(std::uint16_t port, unsigned from) {
    Addresses a;
    for (unsigned i = from; i < from + 200; ++i) {
        auto h = healthz(client_ip(i), port);
        if (!h) return std::nullopt;
        if (h->worker == 1 && a.of[1].empty()) a.of[1] = client_ip(i);
        if (h->worker == 0) (a.of[0].empty() ? a.of[0] : a.other0) = client_ip(i);
        if (!a.of[1].empty() && !a.other0.empty()) return a;
    }
    return std::nullopt;
}

bool starts_with(const std::optional<std::string>& r, const std::string& prefix) {
    return r && r->starts_with(prefix);
}

}  // namespace

TEST(Reload, LiveLimitsReachEveryWorkerPortIsKeptConnectionsStay) {
    ConfigFile conf("steerchat-reload");
    // Under the seccomp allowlist: reading the config channel needs no more system calls.
    conf.write("port = 18340\nworkers = 2\nmax-conns-per-ip = 4\nseccomp = true\n");
    Server srv(18340, {"--config", conf.path()}, {}, false);
    ASSERT_TRUE(srv.wait_ready(2)) << srv.log();
    auto ips = addresses(18340, 100);
    ASSERT_TRUE(ips) << srv.log();

    // On each worker, from one address: a kept-alive HTTP connection and a WebSocket.
    std::vector<std::unique_ptr<Client>> http, ws;
    for (int w = 0; w < 2; ++w) {
        http.push_back(std::make_unique<Client>(ips->of[w], 18340));
        auto h = http.back()->get("/healthz");
        ASSERT_TRUE(starts_with(h, "HTTP/1.1 200")) << w << "\n" << srv.log();
        ASSERT_NE(h->find("\"worker\":" + std::to_string(w)), std::string::npos) << *h;
        ws.push_back(std::make_unique<Client>(ips->of[w], 18340));
        ASSERT_TRUE(ws.back()->upgrade()) << srv.log();
        ASSERT_EQ(ws.back()->echo("before"), "before");
        // Under the limit of 4: a third connection from the address is served.
        EXPECT_TRUE(starts_with(http_get(ips->of[w], 18340, "/healthz"), "HTTP/1.1 200"));
    }

    conf.write(
        "port = 18341\nworkers = 2\nmax-conns-per-ip = 2\nlog-level = debug\nseccomp = true\n");
    srv.signal(SIGHUP);
    ASSERT_TRUE(wait_log(srv, "applied the reloaded configuration (reload 1)", 2)) << srv.log();
    const std::string log = srv.log();
    EXPECT_NE(log.find("reload: port changed from 18340 to 18341: it cannot change while running; "
                       "kept 18340 until a restart"),
              std::string::npos)
        << log;
    EXPECT_NE(log.find("reloaded " + conf.path() +
                       ": changed max-conns-per-ip, log-level; kept (need a restart): port"),
              std::string::npos)
        << log;

    for (int w = 0; w < 2; ++w) {
        // The address holds 2 connections: at the new limit, a third is refused by its worker.
        auto third = http_get(ips->of[w], 18340, "/healthz");
        EXPECT_TRUE(starts_with(third, "HTTP/1.1 429"))
            << "worker " << w << ": " << third.value_or("(no answer)");
        // The connections from before the reload are open and served.
        auto again = http[static_cast<std::size_t>(w)]->get("/healthz");
        EXPECT_TRUE(starts_with(again, "HTTP/1.1 200")) << w;
        EXPECT_EQ(ws[static_cast<std::size_t>(w)]->echo("after"), "after") << w;
    }
    // Another address of worker 0 is not limited by the first one's connections.
    EXPECT_TRUE(starts_with(http_get(ips->other0, 18340, "/healthz"), "HTTP/1.1 200"));
    // The port was kept: nothing listens on the new one.
    EXPECT_FALSE(http_get(ips->other0, 18341, "/healthz", 500ms));
    // Counted on every worker.
    for (int w = 0; w < 2; ++w) {
        auto metrics = http[static_cast<std::size_t>(w)]->get("/metrics");
        ASSERT_TRUE(metrics);
        EXPECT_NE(metrics->find("steerchat_config_reloads_total{worker=\"" + std::to_string(w) +
                                "\",result=\"ok\"} 1"),
                  std::string::npos)
            << *metrics;
    }
}

TEST(Reload, BrokenFileKeepsTheRunningConfiguration) {
    ConfigFile conf("steerchat-reload-broken");
    conf.write("port = 18342\nworkers = 2\nmax-conns-per-ip = 1\n");
    Server srv(18342, {"--config", conf.path()}, {}, false);
    ASSERT_TRUE(srv.wait_ready(2)) << srv.log();
    auto ips = addresses(18342, 400);
    ASSERT_TRUE(ips) << srv.log();
    Client held(ips->of[1], 18342);
    ASSERT_TRUE(starts_with(held.get("/healthz"), "HTTP/1.1 200")) << srv.log();
    ASSERT_TRUE(starts_with(http_get(ips->of[1], 18342, "/healthz"), "HTTP/1.1 429"));

    // A bad value on line 3: the error names the file and line; nothing changes.
    conf.write("port = 18342\nworkers = 2\nmax-conns-per-ip = lots\n");
    srv.signal(SIGHUP);
    ASSERT_TRUE(wait_log(srv, "reload of " + conf.path() + " failed")) << srv.log();
    EXPECT_NE(srv.log().find(conf.path() + ":3: "), std::string::npos) << srv.log();
    // The file gone: named too.
    std::filesystem::remove(conf.path());
    srv.signal(SIGHUP);
    ASSERT_TRUE(wait_log(srv, "cannot read the config file " + conf.path())) << srv.log();

    EXPECT_TRUE(process_alive(srv.pid()));
    EXPECT_TRUE(starts_with(http_get(ips->of[1], 18342, "/healthz"), "HTTP/1.1 429"))
        << "the old limit (1) no longer holds after a failed reload";
    // The worker counts what the master sent after its log line: wait for it.
    std::optional<std::string> metrics;
    for (int i = 0; i < 100; ++i) {
        metrics = held.get("/metrics");
        if (!metrics || metrics->find("result=\"failed\"} 2") != std::string::npos) break;
        std::this_thread::sleep_for(20ms);
    }
    ASSERT_TRUE(metrics) << srv.log();
    EXPECT_NE(metrics->find("result=\"failed\"} 2"), std::string::npos) << *metrics;
    EXPECT_EQ(count_in_log(srv.log(), "applied the reloaded configuration"), 0u) << srv.log();

    // Fixed: the next reload applies.
    conf.write("port = 18342\nworkers = 2\nmax-conns-per-ip = 3\n");
    srv.signal(SIGHUP);
    ASSERT_TRUE(wait_log(srv, "applied the reloaded configuration (reload 1)", 2)) << srv.log();
    EXPECT_TRUE(starts_with(http_get(ips->of[1], 18342, "/healthz"), "HTTP/1.1 200"));
    EXPECT_TRUE(starts_with(held.get("/healthz"), "HTTP/1.1 200"));
}

// After a live resize (steerchat ctl workers N) the running pool is what a reload compares the
// file's `workers` with: the file catching up with the resize changes nothing; a file that
// differs from the pool is named, with the ctl command that would resize.
TEST(Reload, WorkersIsComparedWithTheResizedPool) {
    ConfigFile conf("steerchat-reload-resize");
    conf.write("port = 18344\nworkers = 2\nmax-workers = 4\n");
    Server srv(18344, {"--config", conf.path()}, {}, false);
    ASSERT_TRUE(srv.wait_ready(2)) << srv.log();
    auto [rc, out] = run_command(server_binary() + " ctl --port 18344 workers 3 2>&1");
    ASSERT_EQ(rc, 0) << out << srv.log();
    ASSERT_TRUE(srv.wait_ready(3)) << srv.log();

    conf.write("port = 18344\nworkers = 3\nmax-workers = 4\n");
    srv.signal(SIGHUP);
    ASSERT_TRUE(wait_log(srv, "reloaded " + conf.path() +
                                  ": changed nothing; kept (need a "
                                  "restart): nothing"))
        << srv.log();
    EXPECT_EQ(srv.log().find("reload: workers changed"), std::string::npos) << srv.log();

    conf.write("port = 18344\nworkers = 2\nmax-workers = 4\n");
    srv.signal(SIGHUP);
    ASSERT_TRUE(wait_log(srv, "kept (need a restart): workers")) << srv.log();
    EXPECT_NE(srv.log().find("reload: workers changed from 3 to 2: it cannot change while "
                             "running; kept 3 until a restart (or resize live: steerchat ctl "
                             "--port 18344 workers 2)"),
              std::string::npos)
        << srv.log();
    // Nothing was resized by the reload: three workers still answer.
    EXPECT_TRUE(srv.wait_ready(3, std::chrono::seconds(3))) << srv.log();
}

// `steerchat ctl --config FILE reload`: the same reload, answered synchronously (what changed,
// exit 0; why not, exit 1), with the port and run-dir read from the instance's config file.
TEST(Reload, CtlReloadAnswersWhatChanged) {
    ConfigFile conf("steerchat-reload-ctl");
    conf.write("port = 18345\nworkers = 2\nmax-conns-per-ip = 1\n");
    Server srv(18345, {"--config", conf.path()}, {}, false);
    ASSERT_TRUE(srv.wait_ready(2)) << srv.log();
    const std::string ctl = server_binary() + " ctl --config " + conf.path() + " reload";

    conf.write("port = 18345\nworkers = 2\nmax-conns-per-ip = 2\nbind = 127.0.0.1\n");
    auto [rc, out] = run_command(ctl);
    EXPECT_EQ(rc, 0) << out << srv.log();
    EXPECT_NE(out.find("reload: bind changed from :: to 127.0.0.1"), std::string::npos) << out;
    EXPECT_NE(out.find("reloaded " + conf.path() +
                       ": changed max-conns-per-ip; kept (need a restart): bind"),
              std::string::npos)
        << out;
    ASSERT_TRUE(wait_log(srv, "applied the reloaded configuration (reload 1)", 2)) << srv.log();
    const std::string ip = client_ip(700);
    Client held(ip, 18345);
    ASSERT_TRUE(starts_with(held.get("/healthz"), "HTTP/1.1 200")) << srv.log();
    EXPECT_TRUE(starts_with(http_get(ip, 18345, "/healthz"), "HTTP/1.1 200")) << "limit 2 applied";

    // A value the master refuses: exit 1, the reason with file:line on stderr.
    conf.write("port = 18345\nworkers = 2\nmax-conns-per-ip = 2\nchat-rate = -1\n");
    std::tie(rc, out) = run_command(ctl);
    EXPECT_EQ(rc, 1) << out;
    EXPECT_NE(out.find("reload of " + conf.path() + " failed"), std::string::npos) << out << "\n"
                                                                                   << srv.log();
    EXPECT_NE(out.find(conf.path() + ":4: --chat-rate -1 is out of range"), std::string::npos)
        << out;
    EXPECT_TRUE(process_alive(srv.pid()));
}
