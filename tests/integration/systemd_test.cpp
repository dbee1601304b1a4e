// steerchat under systemd, without systemd: the sd_notify protocol seen from a Unix datagram
// socket the test listens on (NOTIFY_SOCKET), and the master run with exactly the capability
// bounding set of packaging/steerchat.service.in.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "harness.hpp"

using namespace steerchat::itest;
using namespace std::chrono_literals;

namespace {

// A bound AF_UNIX datagram socket, as systemd's notify socket; receives with the sender's pid.
class NotifySocket {
  public:
    NotifySocket() {
        path_ = std::filesystem::temp_directory_path() /
                ("steerchat-notify-" + std::to_string(::getpid()) + ".sock");
        std::filesystem::remove(path_);
        fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        sockaddr_un a{};
        a.sun_family = AF_UNIX;
        std::strncpy(a.sun_path, path_.c_str(), sizeof a.sun_path - 1);
        ok_ = fd_ >= 0 && ::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
        int on = 1;
        ok_ = ok_ && ::setsockopt(fd_, SOL_SOCKET, SO_PASSCRED, &on, sizeof on) == 0;
    }
    ~NotifySocket() {
        if (fd_ >= 0) ::close(fd_);
        std::filesystem::remove(path_);
    }
    bool ok() const { return ok_; }
    std::string path() const { return path_.string(); }

    struct Message {
        std::string text;
        pid_t pid = -1;
    };
    // The next message within `timeout`.
    std::optional<Message> receive(std::chrono::milliseconds timeout) {
        timeval tv{static_cast<time_t>(timeout.count() / 1000),
                   static_cast<suseconds_t>((timeout.count() % 1000) * 1000)};
        ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        char buf[4096];
        alignas(cmsghdr) char control[CMSG_SPACE(sizeof(ucred))];
        iovec iov{buf, sizeof buf};
        msghdr msg{};
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control;
        msg.msg_controllen = sizeof control;
        ssize_t n = ::recvmsg(fd_, &msg, 0);
        if (n < 0) return std::nullopt;
        Message m{std::string(buf, static_cast<std::size_t>(n))};
        for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c))
            if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_CREDENTIALS) {
                ucred cred;
                std::memcpy(&cred, CMSG_DATA(c), sizeof cred);
                m.pid = cred.pid;
            }
        return m;
    }
    // Messages until one holds `line` (as a whole line), or nullopt after `timeout`. Every
    // message received on the way is appended to `seen`.
    std::optional<Message> wait_for(const std::string& line, std::chrono::milliseconds timeout,
                                    std::vector<Message>& seen) {
        const auto deadline = std::chrono::steady_clock::now() + timeout;
        while (std::chrono::steady_clock::now() < deadline) {
            auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                deadline - std::chrono::steady_clock::now());
            auto m = receive(std::max(left, 1ms));
            if (!m) continue;
            seen.push_back(*m);
            std::istringstream lines(m->text);
            for (std::string l; std::getline(lines, l);)
                if (l == line) return m;
        }
        return std::nullopt;
    }

  private:
    std::filesystem::path path_;
    int fd_ = -1;
    bool ok_ = false;
};

std::size_t count(const std::string& text, const std::string& needle) {
    std::size_t n = 0;
    for (auto at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1))
        ++n;
    return n;
}

std::string all_text(const std::vector<NotifySocket::Message>& seen) {
    std::string s;
    for (const auto& m : seen)
        s += m.text + "\n---\n";
    return s;
}

// The unit's CapabilityBoundingSet= as setpriv's --bounding-set ("-all,+bpf,+setuid,...").
std::string unit_bounding_set() {
    std::ifstream unit(source_dir() / "packaging" / "steerchat.service.in");
    std::string line, caps;
    while (std::getline(unit, line))
        if (line.rfind("CapabilityBoundingSet=", 0) == 0) caps = line.substr(22);
    std::string bounding = "-all";
    std::istringstream words(caps);
    for (std::string cap; words >> cap;) {
        std::string name = cap.rfind("CAP_", 0) == 0 ? cap.substr(4) : cap;
        for (auto& c : name)
            c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        bounding += ",+" + name;
    }
    return bounding;
}

}  // namespace

// READY=1 comes from the master (NotifyAccess=main) once every worker accepts: at that moment
// every worker has logged "serving", which it does after starting its accept loop and before
// it reports to the master; right after READY=1 every slot answers. STOPPING=1 on SIGTERM.
TEST(Systemd, ReadyOnlyOnceEveryWorkerAcceptsAndStoppingOnSigterm) {
    constexpr unsigned kWorkers = 4;
    NotifySocket notify;
    ASSERT_TRUE(notify.ok()) << std::strerror(errno);
    Server srv(18310, {"--workers", std::to_string(kWorkers)},
               {"env", "NOTIFY_SOCKET=" + notify.path()});
    std::vector<NotifySocket::Message> seen;
    auto ready = notify.wait_for("READY=1", 20s, seen);
    ASSERT_TRUE(ready) << "no READY=1; received:\n" << all_text(seen) << srv.log();
    const std::string log_at_ready = srv.log();
    EXPECT_EQ(ready->pid, srv.pid()) << "READY=1 must come from the master (NotifyAccess=main)";
    EXPECT_EQ(count(log_at_ready, ": serving (pid "), kWorkers)
        << "READY=1 before every worker accepted:\n"
        << log_at_ready;
    // No READY=1 twice, and STATUS= says what serves.
    for (std::size_t i = 0; i + 1 < seen.size(); ++i)
        EXPECT_EQ(seen[i].text.find("READY=1"), std::string::npos) << all_text(seen);
    // Every slot answers at once (a client address per slot, over the hash space).
    ASSERT_TRUE(srv.wait_ready(kWorkers, 3s)) << srv.log();
    auto status = notify.wait_for(
        "STATUS=serving port 18310: 4 of 4 worker(s) accept, 0 slot(s) drained", 5s, seen);
    // (The status line may have come with READY=1 or before wait_for looked.)
    bool status_seen = status.has_value();
    for (const auto& m : seen)
        status_seen |=
            m.text.find("STATUS=serving port 18310: 4 of 4 worker(s) accept") != std::string::npos;
    EXPECT_TRUE(status_seen) << all_text(seen);

    srv.signal(SIGTERM);
    auto stopping = notify.wait_for("STOPPING=1", 10s, seen);
    ASSERT_TRUE(stopping) << all_text(seen) << srv.log();
    EXPECT_EQ(stopping->pid, srv.pid());
    auto st = srv.wait_exit(10s);
    ASSERT_TRUE(st) << srv.log();
    EXPECT_TRUE(WIFEXITED(*st) && WEXITSTATUS(*st) == 0) << srv.log();
}

// A reload (SIGHUP) is RELOADING=1 with MONOTONIC_USEC (what systemd >= 253 matches a reload
// with; 252 ignores the field), then READY=1 once every worker has been handed the options; a
// failed reload too (the service keeps running on its old configuration).
TEST(Systemd, ReloadIsReloadingThenReady) {
    NotifySocket notify;
    ASSERT_TRUE(notify.ok()) << std::strerror(errno);
    Server srv(18343, {"--workers", "2"}, {"env", "NOTIFY_SOCKET=" + notify.path()});
    std::vector<NotifySocket::Message> seen;
    ASSERT_TRUE(notify.wait_for("READY=1", 20s, seen)) << all_text(seen) << srv.log();
    seen.clear();
    timespec before{};
    ::clock_gettime(CLOCK_MONOTONIC, &before);
    srv.signal(SIGHUP);
    auto reloading = notify.wait_for("RELOADING=1", 5s, seen);
    ASSERT_TRUE(reloading) << all_text(seen) << srv.log();
    EXPECT_EQ(reloading->pid, srv.pid());
    const auto at = reloading->text.find("MONOTONIC_USEC=");
    ASSERT_NE(at, std::string::npos) << reloading->text;
    const auto usec = std::stoull(reloading->text.substr(at + 15));
    const auto before_usec = static_cast<unsigned long long>(before.tv_sec) * 1000000ULL +
                             static_cast<unsigned long long>(before.tv_nsec) / 1000ULL;
    EXPECT_GE(usec, before_usec);
    EXPECT_LT(usec, before_usec + 5000000ULL);
    ASSERT_TRUE(notify.wait_for("READY=1", 5s, seen)) << all_text(seen) << srv.log();
    EXPECT_NE(srv.log().find("reloaded the command line (no --config file): changed nothing"),
              std::string::npos)
        << srv.log();
}

// A worker that dies leaves READY as it was (the service stays up) and STATUS= says so.
TEST(Systemd, StatusReportsARespawn) {
    NotifySocket notify;
    ASSERT_TRUE(notify.ok()) << std::strerror(errno);
    Server srv(18311, {"--workers", "2"}, {"env", "NOTIFY_SOCKET=" + notify.path()});
    std::vector<NotifySocket::Message> seen;
    ASSERT_TRUE(notify.wait_for("READY=1", 20s, seen)) << all_text(seen) << srv.log();
    ASSERT_TRUE(srv.wait_ready(2, 5s)) << srv.log();
    auto h = healthz(client_ip(1), 18311);
    ASSERT_TRUE(h) << srv.log();
    ::kill(h->pid, SIGKILL);
    std::optional<NotifySocket::Message> respawning;
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    while (!respawning && std::chrono::steady_clock::now() < deadline) {
        auto m = notify.receive(1s);
        if (m && m->text.find("was killed by signal 9 (Killed), respawning") != std::string::npos)
            respawning = m;
        if (m) seen.push_back(*m);
    }
    EXPECT_TRUE(respawning) << all_text(seen) << srv.log();
    // ... and it comes back to "2 of 2".
    bool back = false;
    while (!back && std::chrono::steady_clock::now() < deadline) {
        auto m = notify.receive(1s);
        if (m) seen.push_back(*m);
        back = m && m->text.find("2 of 2 worker(s) accept") != std::string::npos;
    }
    EXPECT_TRUE(back) << all_text(seen) << srv.log();
    for (const auto& m : seen)
        EXPECT_EQ(m.text.find("READY=1\n"), std::string::npos) << "READY=1 once only";
}

// The unit's CapabilityBoundingSet is enough: with exactly it (as systemd starts the master:
// root, that bounding set), BPF steering loads, workers drop to another user, a killed worker is
// respawned, and SIGTERM stops the workers (signalling another user's process: CAP_KILL).
TEST(Systemd, UnitCapabilitiesAreEnough) {
    const std::string bounding = unit_bounding_set();
    ASSERT_NE(bounding, "-all");
    Server srv(18312, {"--workers", "2"},
               {"setpriv", "--bounding-set", bounding, "--inh-caps", "-all", "--"});
    ASSERT_TRUE(srv.wait_ready(2, 20s)) << "with bounding set " << bounding << "\n" << srv.log();
    EXPECT_NE(srv.log().find("steering bpf"), std::string::npos) << srv.log();
    EXPECT_NE(srv.log().find("workers run as user "), std::string::npos) << srv.log();
    auto h = healthz(client_ip(3), 18312);
    ASSERT_TRUE(h) << srv.log();
    ::kill(h->pid, SIGKILL);
    bool respawned = false;
    for (int i = 0; i < 100 && !respawned; ++i) {
        auto again = healthz(client_ip(3), 18312, 1s);
        respawned = again && again->pid != h->pid;
        if (!respawned) std::this_thread::sleep_for(50ms);
    }
    EXPECT_TRUE(respawned) << srv.log();
    srv.signal(SIGTERM);
    auto st = srv.wait_exit(10s);
    ASSERT_TRUE(st) << "did not stop with bounding set " << bounding << "\n" << srv.log();
    EXPECT_TRUE(WIFEXITED(*st) && WEXITSTATUS(*st) == 0) << srv.log();
    EXPECT_EQ(srv.log().find("did not stop in time"), std::string::npos) << srv.log();
}

// With the unit's capabilities a worker still dies with its master: the parent-death signal is
// sent with the dying master's credentials, and signalling a worker of another user takes
// CAP_KILL (without it the workers of a SIGKILLed master serve on, orphaned).
TEST(Systemd, UnitCapabilitiesLetWorkersDieWithTheirMaster) {
    const std::string bounding = unit_bounding_set();
    Server srv(18313, {"--workers", "2", "--shutdown-timeout-ms", "1000"},
               {"setpriv", "--bounding-set", bounding, "--inh-caps", "-all", "--"});
    ASSERT_TRUE(srv.wait_ready(2, 20s)) << srv.log();
    std::vector<pid_t> workers;
    for (unsigned i = 0; i < 200 && workers.size() < 2; ++i)
        if (auto h = healthz(client_ip(i), 18313))
            if (std::find(workers.begin(), workers.end(), h->pid) == workers.end())
                workers.push_back(h->pid);
    ASSERT_EQ(workers.size(), 2u) << srv.log();
    srv.signal(SIGKILL);
    ASSERT_TRUE(srv.wait_exit(5s));
    const auto deadline = std::chrono::steady_clock::now() + 15s;
    auto alive = [&] {
        return std::any_of(workers.begin(), workers.end(),
                           [](pid_t p) { return process_alive(p); });
    };
    while (alive() && std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(50ms);
    EXPECT_FALSE(alive()) << "workers outlived their master with bounding set " << bounding << "\n"
                          << srv.log();
    for (pid_t p : workers)
        ::kill(p, SIGKILL);
    // A killed master leaves its pins and lock (the next start removes them); remove them now.
    std::error_code ec;
    std::filesystem::remove_all("/sys/fs/bpf/steerchat/18313", ec);
    std::filesystem::remove("/run/steerchat/18313.lock", ec);
}

// `steerchat ctl upgrade` under systemd: the old master (the main process) hands the service
// over with MAINPID=<new master>, then the new master (main from then on) says READY=1; the old
// master exits 0 and the new one keeps serving, holding the lock.
TEST(Systemd, UpgradeMovesTheMainPidToTheNewMaster) {
    NotifySocket notify;
    ASSERT_TRUE(notify.ok()) << std::strerror(errno);
    Server srv(18320, {"--workers", "2"}, {"env", "NOTIFY_SOCKET=" + notify.path()});
    std::vector<NotifySocket::Message> seen;
    ASSERT_TRUE(notify.wait_for("READY=1", 20s, seen)) << all_text(seen) << srv.log();
    ASSERT_TRUE(srv.wait_ready(2, 5s)) << srv.log();

    auto [code, out] = run_command(server_binary() + " ctl --port 18320 upgrade 2>&1");
    ASSERT_EQ(code, 0) << out << srv.log();
    const auto at = out.find("upgraded: pid ");
    ASSERT_NE(at, std::string::npos) << out;
    const pid_t new_pid = std::atoi(out.c_str() + at + 14);
    ASSERT_GT(new_pid, 0) << out;

    const std::string mainpid = "MAINPID=" + std::to_string(new_pid);
    auto handed = notify.wait_for(mainpid, 10s, seen);
    ASSERT_TRUE(handed) << all_text(seen) << srv.log();
    EXPECT_EQ(handed->pid, srv.pid()) << "MAINPID= must come from the old main process";
    auto ready = notify.wait_for("READY=1", 10s, seen);
    ASSERT_TRUE(ready) << all_text(seen) << srv.log();
    EXPECT_EQ(ready->pid, new_pid) << "READY=1 after the upgrade comes from the new master";

    auto st = srv.wait_exit(10s);
    ASSERT_TRUE(st) << srv.log();
    EXPECT_TRUE(WIFEXITED(*st) && WEXITSTATUS(*st) == 0) << srv.log();
    EXPECT_TRUE(process_alive(new_pid));
    std::ifstream lock("/run/steerchat/18320.lock");
    pid_t holder = 0;
    lock >> holder;
    EXPECT_EQ(holder, new_pid);
    auto h = healthz(client_ip(1), 18320);
    ASSERT_TRUE(h) << srv.log();
    std::ifstream stat("/proc/" + std::to_string(h->pid) + "/stat");
    std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
    std::istringstream rest(text.substr(text.rfind(')') + 2));
    std::string state;
    pid_t ppid = 0;
    rest >> state >> ppid;
    EXPECT_EQ(ppid, new_pid) << "a worker of the new master answers";

    ::kill(new_pid, SIGTERM);
    auto stopping = notify.wait_for("STOPPING=1", 10s, seen);
    ASSERT_TRUE(stopping) << all_text(seen) << srv.log();
    EXPECT_EQ(stopping->pid, new_pid);
    for (int i = 0; i < 100 && process_alive(new_pid); ++i)
        std::this_thread::sleep_for(100ms);
    EXPECT_FALSE(process_alive(new_pid)) << srv.log();
}
