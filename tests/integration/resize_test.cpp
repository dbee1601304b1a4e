// Live resize through the control socket (steerchat ctl --port P workers N): growing N -> N+1
// moves at most 1/(N+1) + 2 % of client addresses (measured over 10 000 of them, all to the new
// slot), shrinking moves only the removed slot's clients; a removed worker's WebSockets get
// close 1001, its users go offline and reconnect to a live worker; a drained slot comes back;
// ctl refuses whoever is not root with a clear error.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <thread>

#include "harness.hpp"
#include "pinned.hpp"
#include "util/unique_fd.hpp"

using namespace steerchat;
using namespace steerchat::itest;
using namespace std::chrono_literals;

namespace {

constexpr std::uint32_t kResizeSeed = 0x5eed0011;
constexpr unsigned kClients = 10000;

std::pair<int, std::string> ctl(std::uint16_t port, const std::string& args,
                                const std::string& wrapper = "") {
    return run_command(wrapper + server_binary() + " ctl --port " + std::to_string(port) + " " +
                       args);
}

// The worker /healthz answers for each of kClients addresses (-1: no answer), 8 at a time.
std::vector<int> record(std::uint16_t port) {
    std::vector<int> out(kClients, -1);
    std::atomic<unsigned> next{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 8; ++t)
        threads.emplace_back([&] {
            for (unsigned i; (i = next++) < kClients;)
                if (auto h = healthz(client_ip(i), port)) out[i] = h->worker;
        });
    for (auto& t : threads)
        t.join();
    return out;
}

unsigned unanswered(const std::vector<int>& v) {
    return static_cast<unsigned>(std::count(v.begin(), v.end(), -1));
}

// Movers from `before` to `after`; every one must have gone to `to` (growing) when to >= 0.
unsigned movers(const std::vector<int>& before, const std::vector<int>& after, int to,
                unsigned* elsewhere) {
    unsigned n = 0;
    *elsewhere = 0;
    for (unsigned i = 0; i < kClients; ++i)
        if (before[i] != after[i]) {
            ++n;
            if (to >= 0 && after[i] != to) ++*elsewhere;
        }
    return n;
}

// A minimal WebSocket client for the native chat protocol on /ws.
class WsClient {
  public:
    // Connects from `src` and completes the handshake; check ok().
    WsClient(const std::string& src, std::uint16_t port) {
        fd_.reset(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
        sockaddr_in local{}, dst{};
        local.sin_family = dst.sin_family = AF_INET;
        inet_pton(AF_INET, src.c_str(), &local.sin_addr);
        inet_pton(AF_INET, "127.0.0.1", &dst.sin_addr);
        dst.sin_port = htons(port);
        if (::bind(fd_.get(), reinterpret_cast<sockaddr*>(&local), sizeof local) != 0 ||
            ::connect(fd_.get(), reinterpret_cast<sockaddr*>(&dst), sizeof dst) != 0)
            return;
        const std::string req =
            "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: "
            "Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: "
            "13\r\n\r\n";
        if (::send(fd_.get(), req.data(), req.size(), MSG_NOSIGNAL) !=
            static_cast<ssize_t>(req.size()))
            return;
        while (in_.find("\r\n\r\n") == std::string::npos)
            if (!fill(5s)) return;
        ok_ = in_.rfind("HTTP/1.1 101", 0) == 0;
        in_.erase(0, in_.find("\r\n\r\n") + 4);
    }
    bool ok() const { return ok_; }

    bool send_text(const std::string& text) {
        const unsigned char mask[4] = {0x12, 0x34, 0x56, 0x78};
        std::string frame{static_cast<char>(0x81)};
        if (text.size() < 126) {
            frame += static_cast<char>(0x80 | text.size());
        } else {
            frame += static_cast<char>(0x80 | 126);
            frame += static_cast<char>(text.size() >> 8);
            frame += static_cast<char>(text.size() & 0xff);
        }
        frame.append(reinterpret_cast<const char*>(mask), 4);
        for (std::size_t i = 0; i < text.size(); ++i)
            frame += static_cast<char>(text[i] ^ mask[i % 4]);
        return ::send(fd_.get(), frame.data(), frame.size(), MSG_NOSIGNAL) ==
               static_cast<ssize_t>(frame.size());
    }

    struct Frame {
        int opcode = -1;  // -1: none (timeout or connection closed without a frame)
        std::string payload;
    };
    // The next frame from the server (unmasked), within `timeout`.
    Frame next(std::chrono::milliseconds timeout) {
        const auto deadline = std::chrono::steady_clock::now() + timeout;
        for (;;) {
            if (in_.size() >= 2) {
                std::size_t len = static_cast<unsigned char>(in_[1]) & 0x7f, at = 2;
                if (len == 126 && in_.size() >= 4) {
                    len = (static_cast<unsigned char>(in_[2]) << 8) |
                          static_cast<unsigned char>(in_[3]);
                    at = 4;
                }
                if (len < 127 && in_.size() >= at + len && (len != 126 || at == 4)) {
                    Frame f{static_cast<unsigned char>(in_[0]) & 0x0f, in_.substr(at, len)};
                    in_.erase(0, at + len);
                    return f;
                }
            }
            const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                deadline - std::chrono::steady_clock::now());
            if (left.count() <= 0 || !fill(left)) return {};
        }
    }
    // The next text frame containing `needle` (other frames are skipped); its payload or "".
    std::string wait_text(const std::string& needle, std::chrono::milliseconds timeout) {
        const auto deadline = std::chrono::steady_clock::now() + timeout;
        while (std::chrono::steady_clock::now() < deadline) {
            Frame f = next(std::chrono::duration_cast<std::chrono::milliseconds>(
                deadline - std::chrono::steady_clock::now()));
            if (f.opcode < 0 || f.opcode == 8) return "";
            if (f.opcode == 1 && f.payload.find(needle) != std::string::npos) return f.payload;
        }
        return "";
    }

  private:
    bool fill(std::chrono::milliseconds timeout) {
        pollfd p{fd_.get(), POLLIN, 0};
        if (::poll(&p, 1, static_cast<int>(timeout.count())) <= 0) return false;
        char buf[4096];
        const ssize_t n = ::recv(fd_.get(), buf, sizeof buf, 0);
        if (n <= 0) return false;
        in_.append(buf, static_cast<std::size_t>(n));
        return true;
    }

    UniqueFd fd_;
    std::string in_;
    bool ok_ = false;
};

// The index (from `from`) of a client address the steering sends to `slot` with the table now
// pinned.
unsigned index_on_slot(std::uint16_t port, int slot, unsigned nslots, unsigned from) {
    const auto table = *pinned_buckets(port);
    for (unsigned i = from;; ++i)
        if (expected_slot(client_ip(i), kResizeSeed, table, std::vector<bool>(nslots, true)) == slot)
            return i;
}
std::string ip_on_slot(std::uint16_t port, int slot, unsigned nslots, unsigned from) {
    return client_ip(index_on_slot(port, slot, nslots, from));
}

}  // namespace

TEST(Resize, GrowingMovesAboutOneInNPlusOneAndShrinkingRestoresTheTable) {
    Server srv(18401, {"--workers", "2", "--max-workers", "4", "--seed", std::to_string(kResizeSeed)});
    ASSERT_TRUE(srv.wait_ready(2)) << srv.log();
    const auto at2 = record(srv.port());
    ASSERT_EQ(unanswered(at2), 0u);

    // 2 -> 3: at most 1/3 + 2 % move, all of them to the new slot 2.
    auto [rc, out] = ctl(srv.port(), "workers 3");
    ASSERT_EQ(rc, 0) << out << srv.log();
    EXPECT_NE(out.find("workers 2 -> 3; started slot(s) 2;"), std::string::npos) << out;
    EXPECT_NE(out.find("buckets moved"), std::string::npos) << out;
    ASSERT_TRUE(srv.wait_ready(3)) << srv.log();
    EXPECT_EQ(pinned_config(srv.port())->nslots, 3u);
    const auto at3 = record(srv.port());
    ASSERT_EQ(unanswered(at3), 0u);
    unsigned elsewhere = 0;
    const unsigned moved3 = movers(at2, at3, 2, &elsewhere);
    std::printf("grow 2 -> 3: %u of %u client addresses moved (%.2f %%; bound %.2f %%)\n", moved3,
                kClients, 100.0 * moved3 / kClients, 100.0 * (1.0 / 3 + 0.02));
    EXPECT_LE(moved3, static_cast<unsigned>(kClients * (1.0 / 3 + 0.02)));
    EXPECT_GE(moved3, static_cast<unsigned>(kClients * (1.0 / 3 - 0.05))) << "the new slot serves";
    // Maglev fills its table greedily, so a few buckets change hands between the old slots too
    // (0.05 % here); the rest of the movers went to the new slot.
    EXPECT_LE(elsewhere, kClients / 100) << "growing moves clients to the new slot";

    // 3 -> 4: at most 1/4 + 2 %.
    std::tie(rc, out) = ctl(srv.port(), "workers 4");
    ASSERT_EQ(rc, 0) << out << srv.log();
    ASSERT_TRUE(srv.wait_ready(4)) << srv.log();
    const auto at4 = record(srv.port());
    ASSERT_EQ(unanswered(at4), 0u);
    const unsigned moved4 = movers(at3, at4, 3, &elsewhere);
    std::printf("grow 3 -> 4: %u of %u client addresses moved (%.2f %%; bound %.2f %%)\n", moved4,
                kClients, 100.0 * moved4 / kClients, 100.0 * (1.0 / 4 + 0.02));
    EXPECT_LE(moved4, static_cast<unsigned>(kClients * (1.0 / 4 + 0.02)));
    EXPECT_GE(moved4, static_cast<unsigned>(kClients * (1.0 / 4 - 0.05)));
    EXPECT_LE(elsewhere, kClients / 100);

    std::tie(rc, out) = ctl(srv.port(), "status");
    ASSERT_EQ(rc, 0) << out;
    for (int slot = 0; slot < 4; ++slot)
        EXPECT_NE(out.find(std::to_string(slot) + "     serving"), std::string::npos) << out;

    // 4 -> 3: the clients of slot 3 move (and < 1 % of the others: Maglev's greedy fill), and
    // every client is exactly where it was with 3 slots (the table depends on the live set only).
    std::tie(rc, out) = ctl(srv.port(), "workers 3");
    ASSERT_EQ(rc, 0) << out << srv.log();
    EXPECT_NE(out.find("removed slot(s) 3"), std::string::npos) << out;
    EXPECT_EQ(pinned_config(srv.port())->nslots, 3u);
    const auto back = record(srv.port());
    ASSERT_EQ(unanswered(back), 0u);
    unsigned others_moved = 0, removed_stayed = 0, not_as_before = 0;
    for (unsigned i = 0; i < kClients; ++i) {
        if (at4[i] != 3 && back[i] != at4[i]) ++others_moved;
        if (back[i] == 3) ++removed_stayed;
        if (back[i] != at3[i]) ++not_as_before;
    }
    std::printf("shrink 4 -> 3: %u clients of slot 3 moved; others moved: %u\n",
                static_cast<unsigned>(std::count(at4.begin(), at4.end(), 3)), others_moved);
    EXPECT_LE(others_moved, kClients / 100) << "shrinking moves the removed slot's clients";
    EXPECT_EQ(removed_stayed, 0u) << "nothing reaches the removed slot";
    EXPECT_EQ(not_as_before, 0u);
    const std::string log = srv.log();
    EXPECT_NE(log.find("resize: workers 2 -> 3"), std::string::npos) << log;
    EXPECT_NE(log.find("worker 3 (removed from the pool) exited with status 0"), std::string::npos)
        << log;
}

TEST(Resize, RemovedWorkersWebSocketsGetGoingAwayAndTheirUsersReconnectElsewhere) {
    Server srv(18402, {"--workers", "3", "--max-workers", "3", "--seed", std::to_string(kResizeSeed)});
    ASSERT_TRUE(srv.wait_ready(3)) << srv.log();
    const std::string alice_ip = ip_on_slot(srv.port(), 2, 3, 0);
    const std::string bob_ip = ip_on_slot(srv.port(), 0, 3, 0);
    ASSERT_EQ(healthz(alice_ip, srv.port())->worker, 2);

    WsClient bob(bob_ip, srv.port());
    ASSERT_TRUE(bob.ok());
    ASSERT_TRUE(bob.send_text(R"({"type":"login","name":"bob"})"));
    ASSERT_NE(bob.wait_text("welcome", 5s), "");
    WsClient alice(alice_ip, srv.port());
    ASSERT_TRUE(alice.ok());
    ASSERT_TRUE(alice.send_text(R"({"type":"login","name":"alice"})"));
    ASSERT_NE(alice.wait_text("welcome", 5s), "");
    ASSERT_NE(bob.wait_text(R"("online")", 5s).find("alice"), std::string::npos);

    auto [rc, out] = ctl(srv.port(), "workers 2");
    ASSERT_EQ(rc, 0) << out << srv.log();
    EXPECT_NE(out.find("removed slot(s) 2"), std::string::npos) << out;

    // Alice's worker closes her WebSocket with 1001 (going away) ...
    WsClient::Frame f;
    do {
        f = alice.next(5s);
    } while (f.opcode == 1);
    ASSERT_EQ(f.opcode, 8) << "no close frame";
    ASSERT_GE(f.payload.size(), 2u);
    EXPECT_EQ(
        (static_cast<unsigned char>(f.payload[0]) << 8) | static_cast<unsigned char>(f.payload[1]),
        1001);
    // ... she goes offline for everyone ...
    EXPECT_NE(bob.wait_text(R"("offline")", 5s).find("alice"), std::string::npos);
    // ... and reconnects from the same address to a live worker, under the same name.
    auto h = healthz(alice_ip, srv.port());
    ASSERT_TRUE(h);
    EXPECT_TRUE(h->worker == 0 || h->worker == 1) << h->worker;
    WsClient again(alice_ip, srv.port());
    ASSERT_TRUE(again.ok());
    ASSERT_TRUE(again.send_text(R"({"type":"login","name":"alice"})"));
    EXPECT_NE(again.wait_text("welcome", 5s), "") << srv.log();
}

// While slot 2 is removed, its clients keep connecting: the listener's queue migrates to their
// new workers and the worker finishes what it accepted, so no request fails.
TEST(Resize, ClientsOfARemovedSlotConnectingThroughoutAreAllServed) {
    Server srv(18406, {"--workers", "3", "--max-workers", "3", "--seed", std::to_string(kResizeSeed)});
    ASSERT_TRUE(srv.wait_ready(3)) << srv.log();
    std::vector<std::string> ips;
    for (unsigned i = 0; ips.size() < 8; ++i)
        ips.push_back(client_ip(i = index_on_slot(srv.port(), 2, 3, i)));
    std::atomic<bool> stop{false};
    std::atomic<unsigned> ok{0}, failed{0}, on2{0}, elsewhere{0};
    std::vector<std::thread> threads;
    for (const auto& ip : ips)
        threads.emplace_back([&, ip] {
            while (!stop) {
                auto h = healthz(ip, srv.port(), 5s);
                if (!h) {
                    ++failed;
                    continue;
                }
                ++ok;
                ++(h->worker == 2 ? on2 : elsewhere);
            }
        });
    std::this_thread::sleep_for(300ms);
    auto [rc, out] = ctl(srv.port(), "workers 2");
    std::this_thread::sleep_for(500ms);
    stop = true;
    for (auto& t : threads)
        t.join();
    ASSERT_EQ(rc, 0) << out;
    std::printf(
        "%u requests from 8 clients of slot 2 during its removal: %u on slot 2, %u on "
        "their new workers, %u failed\n",
        ok.load() + failed.load(), on2.load(), elsewhere.load(), failed.load());
    EXPECT_GT(on2, 0u);
    EXPECT_GT(elsewhere, 0u);
    EXPECT_EQ(failed, 0u) << srv.log();
}

TEST(Resize, DrainedSlotComesBack) {
    Server srv(18403, {"--workers", "2", "--max-workers", "2", "--max-restarts", "1", "--seed",
                       std::to_string(kResizeSeed)});
    ASSERT_TRUE(srv.wait_ready(2)) << srv.log();
    const std::string ip = ip_on_slot(srv.port(), 1, 2, 0);
    auto h = healthz(ip, srv.port());
    ASSERT_TRUE(h && h->worker == 1);
    ::kill(h->pid, SIGKILL);
    std::string out;
    for (int i = 0; i < 200 && out.find("drained") == std::string::npos; ++i) {
        std::this_thread::sleep_for(20ms);
        out = ctl(srv.port(), "status").second;
    }
    ASSERT_NE(out.find("1     drained"), std::string::npos) << out << srv.log();
    EXPECT_EQ(healthz(ip, srv.port())->worker, 0) << "its clients went to slot 0";

    int rc;
    std::tie(rc, out) = ctl(srv.port(), "workers 2");
    ASSERT_EQ(rc, 0) << out << srv.log();
    EXPECT_NE(out.find("workers 2 -> 2; started slot(s) 1;"), std::string::npos) << out;
    ASSERT_TRUE(srv.wait_ready(2)) << srv.log();
    h = healthz(ip, srv.port());
    ASSERT_TRUE(h);
    EXPECT_EQ(h->worker, 1) << "the slot's clients are back";
    std::tie(rc, out) = ctl(srv.port(), "workers 2");
    EXPECT_EQ(rc, 0);
    EXPECT_NE(out.find("nothing to change"), std::string::npos) << out;
}

TEST(Resize, CtlRefusesWhoIsNotRootAndSaysWhatToDo) {
    // A run directory others may enter, and a socket they may open: the master still refuses
    // them by their credentials (SO_PEERCRED).
    const auto dir =
        std::filesystem::temp_directory_path() / ("rz-ctl-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir);
    ::chmod(dir.c_str(), 0755);
    Server srv(18404, {"--workers", "1", "--max-workers", "2", "--run-dir", dir.string()});
    ASSERT_TRUE(srv.wait_ready(1)) << srv.log();
    const std::string sock = (dir / "18404.ctl").string();
    struct stat st {};
    ASSERT_EQ(::stat(sock.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0600u) << "the control socket is root's alone";
    const std::string nobody = "setpriv --reuid=65534 --regid=65534 --clear-groups ";
    const std::string rundir = "--run-dir " + dir.string() + " ";

    // The file's mode stops nobody ...
    auto [rc, out] = ctl(srv.port(), rundir + "status", nobody);
    EXPECT_EQ(rc, 1) << out;
    EXPECT_NE(out.find("permission denied"), std::string::npos) << out;
    EXPECT_NE(out.find("run steerchat ctl as root"), std::string::npos) << out;
    // ... and so does the master when the file would let them in.
    ::chmod(sock.c_str(), 0666);
    std::tie(rc, out) = ctl(srv.port(), rundir + "workers 2", nobody);
    EXPECT_EQ(rc, 1) << out;
    EXPECT_NE(out.find("permission denied"), std::string::npos) << out;
    EXPECT_NE(out.find("run steerchat ctl as root"), std::string::npos) << out;
    EXPECT_NE(srv.log().find("refusing a request from uid 65534"), std::string::npos) << srv.log();
    std::tie(rc, out) = ctl(srv.port(), rundir + "status");
    EXPECT_EQ(rc, 0) << out;
    // No row of slot 1 (a row starts with its slot number; a pid may end in 1 too).
    EXPECT_EQ(out.find("\n1 "), std::string::npos) << "nobody's workers 2 changed nothing\n" << out;

    // Wrong port, bad arguments: a clear error and a non-zero exit.
    std::tie(rc, out) = ctl(18405, rundir + "status");
    EXPECT_EQ(rc, 1);
    EXPECT_NE(out.find("no steerchat is running on port 18405"), std::string::npos) << out;
    std::tie(rc, out) = ctl(srv.port(), rundir + "workers 3");
    EXPECT_EQ(rc, 1);
    EXPECT_NE(out.find("1 to 2 workers (--max-workers 2"), std::string::npos) << out;
    std::tie(rc, out) = ctl(srv.port(), rundir + "workers many");
    EXPECT_EQ(rc, 1);
    EXPECT_NE(out.find("usage: workers N"), std::string::npos) << out;
    std::tie(rc, out) = ctl(srv.port(), rundir + "frobnicate");
    EXPECT_EQ(rc, 1);
    EXPECT_NE(out.find("unknown command 'frobnicate'"), std::string::npos) << out;
    std::tie(rc, out) = ctl(srv.port(), "");
    EXPECT_EQ(rc, 2) << out;

    srv.signal(SIGTERM);
    ASSERT_TRUE(srv.wait_exit(5s));
    EXPECT_FALSE(std::filesystem::exists(sock)) << "the socket file is removed at exit";
    std::filesystem::remove_all(dir);
}
