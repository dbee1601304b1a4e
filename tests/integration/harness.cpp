#include "harness.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

#include <gtest/gtest.h>
#include <boost/json/parse.hpp>

namespace steerchat::itest {

using Clock = std::chrono::steady_clock;

bool enter_private_netns() {
    if (::unshare(CLONE_NEWNET) != 0) return false;
    int s = ::socket(AF_INET, SOCK_DGRAM, 0);
    if (s < 0) return false;
    ifreq ifr{};
    std::strncpy(ifr.ifr_name, "lo", IFNAMSIZ - 1);
    bool ok = ::ioctl(s, SIOCGIFFLAGS, &ifr) == 0;
    ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
    ok = ok && ::ioctl(s, SIOCSIFFLAGS, &ifr) == 0;
    ::close(s);
    return ok;
}

std::string server_binary() {
    return STEERCHAT_BINARY;
}
std::filesystem::path source_dir() {
    return STEERCHAT_SOURCE_DIR;
}

std::string client_ip(unsigned i) {
    ++i;  // skip .0
    return "127.1." + std::to_string((i >> 8) & 0xff) + "." + std::to_string(i & 0xff);
}

namespace {

bool wait_fd(int fd, short events, Clock::time_point deadline) {
    for (;;) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
        if (left.count() <= 0) return false;
        pollfd p{fd, events, 0};
        int n = ::poll(&p, 1, static_cast<int>(left.count()));
        if (n > 0) return true;
        if (n < 0 && errno != EINTR) return false;
    }
}

}  // namespace

std::optional<std::string> http_get(const std::string& src, std::uint16_t port,
                                    const std::string& path, std::chrono::milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    const bool v6 = src.find(':') != std::string::npos;
    int fd = ::socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return std::nullopt;
    struct Closer {
        int fd;
        ~Closer() { ::close(fd); }
    } closer{fd};
    int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_storage local{}, dst{};
    socklen_t len;
    if (v6) {
        auto* l6 = reinterpret_cast<sockaddr_in6*>(&local);
        auto* d6 = reinterpret_cast<sockaddr_in6*>(&dst);
        l6->sin6_family = d6->sin6_family = AF_INET6;
        if (inet_pton(AF_INET6, src.c_str(), &l6->sin6_addr) != 1) return std::nullopt;
        inet_pton(AF_INET6, kIpv6Server, &d6->sin6_addr);
        d6->sin6_port = htons(port);
        ::setsockopt(fd, SOL_IP, IP_FREEBIND, &one, sizeof one);  // any address of the prefix
        len = sizeof(sockaddr_in6);
    } else {
        auto* l4 = reinterpret_cast<sockaddr_in*>(&local);
        auto* d4 = reinterpret_cast<sockaddr_in*>(&dst);
        l4->sin_family = d4->sin_family = AF_INET;
        if (inet_pton(AF_INET, src.c_str(), &l4->sin_addr) != 1) return std::nullopt;
        inet_pton(AF_INET, "127.0.0.1", &d4->sin_addr);
        d4->sin_port = htons(port);
        len = sizeof(sockaddr_in);
    }
    if (::bind(fd, reinterpret_cast<sockaddr*>(&local), len) != 0) return std::nullopt;
    if (::connect(fd, reinterpret_cast<sockaddr*>(&dst), len) != 0 && errno != EINPROGRESS)
        return std::nullopt;
    if (!wait_fd(fd, POLLOUT, deadline)) return std::nullopt;
    int err = 0;
    socklen_t errlen = sizeof err;
    ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &errlen);
    if (err != 0) return std::nullopt;

    std::string req = "GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    std::size_t sent = 0;
    while (sent < req.size()) {
        ssize_t n = ::send(fd, req.data() + sent, req.size() - sent, MSG_NOSIGNAL);
        if (n > 0) {
            sent += static_cast<std::size_t>(n);
        } else if (errno != EAGAIN || !wait_fd(fd, POLLOUT, deadline)) {
            return std::nullopt;
        }
    }
    std::string resp;
    char buf[4096];
    for (;;) {
        ssize_t n = ::recv(fd, buf, sizeof buf, 0);
        if (n > 0) {
            resp.append(buf, static_cast<std::size_t>(n));
        } else if (n == 0) {
            break;
        } else if (errno != EAGAIN || !wait_fd(fd, POLLIN, deadline)) {
            return std::nullopt;
        }
    }
    return resp;
}

bool enable_ipv6_test_prefix() {
    return run_command("ip -6 route add local 2001:db8::/32 dev lo").first == 0;
}

std::optional<Health> healthz(const std::string& src, std::uint16_t port,
                              std::chrono::milliseconds timeout) {
    auto r = http_get(src, port, "/healthz", timeout);
    if (!r || r->rfind("HTTP/1.1 200", 0) != 0) return std::nullopt;
    auto body = r->find("\r\n\r\n");
    if (body == std::string::npos) return std::nullopt;
    try {
        auto v = boost::json::parse(r->substr(body + 4)).as_object();
        return Health{static_cast<int>(v.at("worker").to_number<int>()),
                      static_cast<pid_t>(v.at("pid").to_number<int>())};
    } catch (const std::exception&) {
        return std::nullopt;
    }
}

Server::Server(std::uint16_t port, std::vector<std::string> extra_args,
               std::vector<std::string> wrapper, bool port_flag)
    : port_(port) {
    log_path_ =
        std::filesystem::temp_directory_path() /
        ("steerchat-itest-" + std::to_string(::getpid()) + "-" + std::to_string(port) + ".log");
    std::vector<std::string> args = std::move(wrapper);
    args.push_back(server_binary());
    if (port_flag) args.insert(args.end(), {"--port", std::to_string(port)});
    args.insert(args.end(), extra_args.begin(), extra_args.end());
    pid_ = ::fork();
    if (pid_ == 0) {
        ::setpgid(0, 0);
        int fd = ::open(log_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        ::dup2(fd, STDERR_FILENO);
        ::dup2(fd, STDOUT_FILENO);
        std::vector<char*> argv;
        for (auto& a : args)
            argv.push_back(a.data());
        argv.push_back(nullptr);
        ::execvp(argv[0], argv.data());
        ::_exit(127);
    }
}

Server::~Server() {
    if (pid_ > 0 && !exited_) {
        ::kill(-pid_, SIGKILL);
        ::kill(pid_, SIGKILL);
        int st;
        ::waitpid(pid_, &st, 0);
        // The pins of a killed master stay; remove them so later runs start clean.
        std::error_code ec;
        std::filesystem::remove_all("/sys/fs/bpf/steerchat/" + std::to_string(port_), ec);
        std::filesystem::remove("/run/steerchat/" + std::to_string(port_) + ".lock", ec);
    }
    if (auto text = log(); has_sanitizer_report(text))
        ADD_FAILURE() << "steerchat (pid " << pid_ << ") wrote a sanitizer report:\n" << text;
    std::error_code ec;
    std::filesystem::remove(log_path_, ec);
}

bool has_sanitizer_report(const std::string& log) {
    for (const char* mark : {"ERROR: AddressSanitizer", "ERROR: LeakSanitizer", ": runtime error: ",
                             "SUMMARY: AddressSanitizer", "SUMMARY: UndefinedBehaviorSanitizer"})
        if (log.find(mark) != std::string::npos) return true;
    return false;
}

bool Server::wait_ready(unsigned workers, std::chrono::milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    std::vector<bool> seen(workers, false);
    unsigned nseen = 0, i = 0;
    while (Clock::now() < deadline) {
        if (wait_exit(std::chrono::milliseconds(0))) return false;
        auto h = healthz(client_ip(60000 + (i++ % 5000)), port_, std::chrono::milliseconds(500));
        if (!h) {
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
            continue;
        }
        if (h->worker >= 0 && static_cast<unsigned>(h->worker) < workers && !seen[h->worker]) {
            seen[h->worker] = true;
            if (++nseen == workers) return true;
        }
    }
    return false;
}

void Server::signal(int sig) {
    ::kill(pid_, sig);
}

std::optional<int> Server::wait_exit(std::chrono::milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    for (;;) {
        int st = 0;
        pid_t r = ::waitpid(pid_, &st, WNOHANG);
        if (r == pid_) {
            exited_ = true;
            return st;
        }
        if (Clock::now() >= deadline) return std::nullopt;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
}

std::string Server::log() const {
    std::ifstream in(log_path_);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

std::pair<int, std::string> run_command(const std::string& cmd) {
    std::string out;
    FILE* p = ::popen((cmd + " 2>&1").c_str(), "r");
    if (!p) return {-1, "popen failed"};
    char buf[4096];
    std::size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, p)) > 0)
        out.append(buf, n);
    int st = ::pclose(p);
    return {WIFEXITED(st) ? WEXITSTATUS(st) : -1, out};
}

bool process_alive(pid_t pid) {
    return ::kill(pid, 0) == 0 || errno != ESRCH;
}

}  // namespace steerchat::itest
