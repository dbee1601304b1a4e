// Least privilege: workers run as an unprivileged user with no capabilities and no_new_privs
// (read from /proc/PID/status, also for a respawned worker), cannot reach the pinned maps or the
// run directory, and still serve HTTP and WebSocket; the master keeps what it needs. A master
// that is not root keeps its user for the workers but they still shed every capability.
#include <arpa/inet.h>
#include <fcntl.h>
#include <grp.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>

#include "harness.hpp"
#include "pinned.hpp"

using namespace steerchat;
using namespace steerchat::itest;
using namespace std::chrono_literals;

namespace {

constexpr const char* kNoCaps = "0000000000000000";

// The "Key:\tvalue" lines of /proc/PID/status.
std::map<std::string, std::string> proc_status(pid_t pid) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/status");
    std::map<std::string, std::string> out;
    std::string line;
    while (std::getline(in, line)) {
        auto colon = line.find(':');
        if (colon == std::string::npos) continue;
        auto v = line.substr(colon + 1);
        v.erase(0, v.find_first_not_of(" \t"));
        out[line.substr(0, colon)] = v;
    }
    return out;
}

std::vector<unsigned long> numbers(const std::string& s) {
    std::istringstream in(s);
    std::vector<unsigned long> v;
    unsigned long x;
    while (in >> x)
        v.push_back(x);
    return v;
}

std::uint64_t caps(const std::map<std::string, std::string>& st, const char* key) {
    return std::stoull(st.at(key), nullptr, 16);
}

// The user the workers should run as: steerchat if it exists, else nobody.
const passwd* expected_worker_user() {
    const passwd* pw = ::getpwnam("steerchat");
    return pw ? pw : ::getpwnam("nobody");
}

// Each worker's pid and a client address that reaches it.
std::map<int, std::pair<pid_t, std::string>> workers_of(const Server& srv, unsigned n) {
    std::map<int, std::pair<pid_t, std::string>> w;
    for (unsigned i = 0; i < 400 && w.size() < n; ++i) {
        auto h = healthz(client_ip(i), srv.port());
        if (h && !w.count(h->worker)) w[h->worker] = {h->pid, client_ip(i)};
    }
    return w;
}

// A WebSocket echo on /echo from `src`: handshake, one masked text frame, its echo back.
std::string ws_echo(const std::string& src, std::uint16_t port, const std::string& text) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return "socket failed";
    struct Closer {
        int fd;
        ~Closer() { ::close(fd); }
    } closer{fd};
    timeval tv{5, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    sockaddr_in local{}, dst{};
    local.sin_family = dst.sin_family = AF_INET;
    inet_pton(AF_INET, src.c_str(), &local.sin_addr);
    inet_pton(AF_INET, "127.0.0.1", &dst.sin_addr);
    dst.sin_port = htons(port);
    if (::bind(fd, reinterpret_cast<sockaddr*>(&local), sizeof local) != 0 ||
        ::connect(fd, reinterpret_cast<sockaddr*>(&dst), sizeof dst) != 0)
        return std::string("connect failed: ") + std::strerror(errno);
    const std::string req =
        "GET /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    if (::send(fd, req.data(), req.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(req.size()))
        return "send failed";
    std::string in;
    char buf[4096];
    while (in.find("\r\n\r\n") == std::string::npos) {
        ssize_t n = ::recv(fd, buf, sizeof buf, 0);
        if (n <= 0) return "handshake: connection closed: " + in;
        in.append(buf, static_cast<std::size_t>(n));
    }
    if (in.rfind("HTTP/1.1 101", 0) != 0) return "handshake refused: " + in;
    in.erase(0, in.find("\r\n\r\n") + 4);
    const unsigned char mask[4] = {0x12, 0x34, 0x56, 0x78};
    std::string frame{static_cast<char>(0x81), static_cast<char>(0x80 | text.size())};
    frame.append(reinterpret_cast<const char*>(mask), 4);
    for (std::size_t i = 0; i < text.size(); ++i)
        frame += static_cast<char>(text[i] ^ mask[i % 4]);
    if (::send(fd, frame.data(), frame.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(frame.size()))
        return "send failed";
    while (in.size() < 2 + text.size()) {
        ssize_t n = ::recv(fd, buf, sizeof buf, 0);
        if (n <= 0) return "echo: connection closed";
        in.append(buf, static_cast<std::size_t>(n));
    }
    if (static_cast<unsigned char>(in[0]) != 0x81 || static_cast<std::size_t>(in[1]) != text.size())
        return "unexpected frame header";
    return in.substr(2, text.size());
}

// In a child with the credentials of `worker` (its uid, gid and groups), tries to reach what
// must stay the master's. Returns a description of every access that succeeded (empty: none).
std::string accesses_as(pid_t worker, std::uint16_t port, pid_t master) {
    auto st = proc_status(worker);
    auto uids = numbers(st.at("Uid")), gids = numbers(st.at("Gid"));
    std::vector<gid_t> groups;
    for (auto g : numbers(st["Groups"]))
        groups.push_back(static_cast<gid_t>(g));
    int pipefd[2];
    if (::pipe(pipefd) != 0) return "pipe failed";
    pid_t pid = ::fork();
    if (pid == 0) {
        ::close(pipefd[0]);
        std::string got;
        if (::setgroups(groups.size(), groups.data()) != 0 ||
            ::setresgid(static_cast<gid_t>(gids[0]), static_cast<gid_t>(gids[0]),
                        static_cast<gid_t>(gids[0])) != 0 ||
            ::setresuid(static_cast<uid_t>(uids[0]), static_cast<uid_t>(uids[0]),
                        static_cast<uid_t>(uids[0])) != 0) {
            got = "could not become the worker's user";
        } else {
            const std::string dir = "/sys/fs/bpf/steerchat/" + std::to_string(port);
            auto try_open = [&](const std::string& path, int flags) {
                int fd = ::open(path.c_str(), flags | O_CLOEXEC);
                if (fd >= 0) {
                    got += "opened " + path + "; ";
                    ::close(fd);
                }
            };
            try_open(dir, O_RDONLY | O_DIRECTORY);
            try_open("/sys/fs/bpf/steerchat", O_RDONLY | O_DIRECTORY);
            try_open(dir + "/buckets", O_RDONLY);
            try_open("/run/steerchat", O_RDONLY | O_DIRECTORY);
            try_open("/run/steerchat/" + std::to_string(port) + ".lock", O_RDONLY);
            int m = bpf_obj_get(pin_path(port, "buckets").c_str());
            if (m >= 0) {
                got += "bpf_obj_get of the buckets map worked; ";
                ::close(m);
            }
            if (::kill(master, 0) == 0) got += "may signal the master; ";
        }
        [[maybe_unused]] auto n = ::write(pipefd[1], got.data(), got.size());
        ::_exit(0);
    }
    ::close(pipefd[1]);
    std::string out;
    char buf[512];
    ssize_t n;
    while ((n = ::read(pipefd[0], buf, sizeof buf)) > 0)
        out.append(buf, static_cast<std::size_t>(n));
    ::close(pipefd[0]);
    int status = 0;
    ::waitpid(pid, &status, 0);
    return out;
}

mode_t mode_of(const std::string& path) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) return 07777;
    return st.st_mode & 07777;
}

void expect_dropped(pid_t pid, uid_t uid, gid_t gid) {
    SCOPED_TRACE("worker pid " + std::to_string(pid));
    auto st = proc_status(pid);
    ASSERT_TRUE(st.count("Uid")) << "no /proc/" << pid << "/status";
    for (auto u : numbers(st["Uid"]))
        EXPECT_EQ(u, uid) << "Uid: " << st["Uid"];
    for (auto g : numbers(st["Gid"]))
        EXPECT_EQ(g, gid) << "Gid: " << st["Gid"];
    for (auto g : numbers(st["Groups"]))
        EXPECT_NE(g, 0u) << "Groups: " << st["Groups"];
    for (const char* k : {"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"})
        EXPECT_EQ(st[k], kNoCaps) << k;
    EXPECT_EQ(st["NoNewPrivs"], "1");
}

}  // namespace

TEST(Privileges, WorkersRunUnprivilegedAndStillServe) {
    const passwd* pw = expected_worker_user();
    ASSERT_NE(pw, nullptr) << "neither steerchat nor nobody exists";
    const uid_t uid = pw->pw_uid;
    const gid_t gid = pw->pw_gid;
    Server srv(18221, {"--workers", "2"});
    ASSERT_TRUE(srv.wait_ready(2)) << srv.log();
    EXPECT_NE(srv.log().find(std::string("workers run as user ") + pw->pw_name), std::string::npos)
        << srv.log();

    auto workers = workers_of(srv, 2);
    ASSERT_EQ(workers.size(), 2u);
    for (auto& [slot, w] : workers)
        expect_dropped(w.first, uid, gid);

    // The master keeps root and what it needs: BPF maps (CAP_BPF), its workers (CAP_KILL).
    auto master = proc_status(srv.pid());
    EXPECT_EQ(numbers(master["Uid"]).front(), 0u);
    const auto eff = caps(master, "CapEff");
    for (int cap : {5 /* KILL */, 39 /* BPF */})
        EXPECT_TRUE((eff >> cap) & 1) << "master lost capability " << cap << ": " << eff;

    // What stays the master's is private and out of the workers' reach.
    const std::string pins = "/sys/fs/bpf/steerchat/18221";
    EXPECT_EQ(mode_of(pins), 0700u) << pins;
    EXPECT_EQ(mode_of("/sys/fs/bpf/steerchat"), 0700u);
    EXPECT_EQ(mode_of(pins + "/buckets") & 077, 0u);
    EXPECT_EQ(mode_of("/run/steerchat"), 0700u);
    EXPECT_EQ(mode_of("/run/steerchat/18221.lock"), 0600u);
    for (auto& [slot, w] : workers)
        EXPECT_EQ(accesses_as(w.first, srv.port(), srv.pid()), "") << "worker " << slot;

    // Serving still works on every worker: HTTP and a WebSocket echo.
    for (auto& [slot, w] : workers) {
        auto h = healthz(w.second, srv.port());
        ASSERT_TRUE(h) << srv.log();
        EXPECT_EQ(h->worker, slot);
        EXPECT_EQ(ws_echo(w.second, srv.port(), "hello from " + w.second), "hello from " + w.second)
            << srv.log();
    }
    EXPECT_EQ(srv.log().find("fatal"), std::string::npos) << srv.log();
}

TEST(Privileges, RespawnedWorkerIsDroppedToo) {
    Server srv(18222, {"--workers", "2", "--user", "nobody", "--respawn-delay-ms", "50"});
    ASSERT_TRUE(srv.wait_ready(2)) << srv.log();
    const passwd* nobody = ::getpwnam("nobody");
    ASSERT_NE(nobody, nullptr);
    auto workers = workers_of(srv, 2);
    ASSERT_EQ(workers.size(), 2u);
    auto [old_pid, ip] = workers.at(1);
    ASSERT_EQ(::kill(old_pid, SIGKILL), 0);
    std::optional<Health> h;
    for (int i = 0; i < 100; ++i) {
        h = healthz(ip, srv.port(), 5s);
        if (h && h->pid != old_pid) break;
        std::this_thread::sleep_for(20ms);
    }
    ASSERT_TRUE(h && h->pid != old_pid) << "not respawned\n" << srv.log();
    EXPECT_EQ(h->worker, 1);
    expect_dropped(h->pid, nobody->pw_uid, nobody->pw_gid);
    EXPECT_EQ(ws_echo(ip, srv.port(), "after respawn"), "after respawn");
}

TEST(Privileges, NonRootMasterKeepsItsUserButWorkersShedCapabilities) {
    // A master started as nobody with one ambient capability (as a service manager might give
    // it): it cannot change user, says so, and its workers still end with no capability.
    char dir[] = "/tmp/steerchat-privs-XXXXXX";
    ASSERT_NE(::mkdtemp(dir), nullptr);
    ::chmod(dir, 0777);
    {
        Server srv(18223, {"--workers", "2", "--steering", "kernel", "--run-dir", dir},
                   {"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                    "--inh-caps=-all,+net_bind_service", "--ambient-caps=+net_bind_service", "--"});
        ASSERT_TRUE(srv.wait_ready(2)) << srv.log();
        EXPECT_NE(srv.log().find("lacks CAP_SETUID"), std::string::npos) << srv.log();
        auto master = proc_status(srv.pid());
        EXPECT_EQ(master["CapEff"], "0000000000000400") << "setpriv gave the master one capability";
        auto workers = workers_of(srv, 2);
        ASSERT_EQ(workers.size(), 2u);
        for (auto& [slot, w] : workers) {
            auto st = proc_status(w.first);
            EXPECT_EQ(numbers(st["Uid"]).front(), 65534u);
            for (const char* k : {"CapInh", "CapPrm", "CapEff", "CapAmb"})
                EXPECT_EQ(st[k], kNoCaps) << k;
            EXPECT_EQ(st["NoNewPrivs"], "1");
            EXPECT_EQ(ws_echo(w.second, srv.port(), "x"), "x");
        }
    }
    std::filesystem::remove_all(dir);
}

TEST(Privileges, SeccompConfinesWorkersThatStillServe) {
    Server srv(18224, {"--workers", "2", "--seccomp"});
    ASSERT_TRUE(srv.wait_ready(2)) << srv.log();
    auto workers = workers_of(srv, 2);
    ASSERT_EQ(workers.size(), 2u);
    for (auto& [slot, w] : workers) {
        auto st = proc_status(w.first);
        EXPECT_EQ(st["Seccomp"], "2") << "filter mode";
        EXPECT_EQ(st["NoNewPrivs"], "1");
        EXPECT_EQ(st["CapEff"], kNoCaps);
        EXPECT_EQ(ws_echo(w.second, srv.port(), "confined"), "confined");
        auto m = http_get(w.second, srv.port(), "/metrics");
        ASSERT_TRUE(m) << srv.log();
        EXPECT_EQ(m->rfind("HTTP/1.1 200", 0), 0u) << *m;
    }
    EXPECT_EQ(proc_status(srv.pid())["Seccomp"], "0") << "the master is not confined";
    EXPECT_EQ(srv.log().find("signal 31"), std::string::npos) << srv.log();
    // Still the same workers: none was killed by the filter.
    for (auto& [slot, w] : workers)
        EXPECT_TRUE(process_alive(w.first)) << srv.log();
}
