#include "master/takeover.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <sstream>
#include <stdexcept>

#include <fmt/core.h>

namespace steerchat::master {

namespace {

using Clock = std::chrono::steady_clock;

// SCM_RIGHTS carries at most SCM_MAX_FD (253) descriptors per message: listeners (at most
// STEER_MAX_SLOTS, 128), the maps, the lock and the state fit in one.
constexpr std::size_t kMaxFds = 253;
constexpr std::size_t kMaxText = 64 * 1024;

[[noreturn]] void fail(const std::string& what) {
    throw std::runtime_error(fmt::format("hand-over: {}", what));
}

[[noreturn]] void fail_errno(const char* what) {
    fail(fmt::format("{}: {}", what, std::strerror(errno)));
}

// Waits until `fd` is readable or the deadline passes (then throws).
void wait_readable(int fd, Clock::time_point deadline, const char* what) {
    for (;;) {
        const auto left =
            std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
        if (left <= 0) fail(fmt::format("no {} from the other master in time", what));
        pollfd p{fd, POLLIN, 0};
        const int n = ::poll(&p, 1, static_cast<int>(left));
        if (n > 0) return;
        if (n < 0 && errno != EINTR) fail_errno("poll");
    }
}

void write_all(int fd, const char* data, std::size_t size) {
    while (size > 0) {
        const ssize_t n = ::send(fd, data, size, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                pollfd p{fd, POLLOUT, 0};
                ::poll(&p, 1, 1000);
                continue;
            }
            fail_errno("send");
        }
        data += n;
        size -= static_cast<std::size_t>(n);
    }
}

void read_all(int fd, char* data, std::size_t size, Clock::time_point deadline) {
    while (size > 0) {
        wait_readable(fd, deadline, "state");
        const ssize_t n = ::recv(fd, data, size, MSG_DONTWAIT);
        if (n == 0) fail("the other master closed the connection");
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) continue;
            fail_errno("recv");
        }
        data += n;
        size -= static_cast<std::size_t>(n);
    }
}

}  // namespace

namespace {
std::vector<steer::NamedFd> named(const std::vector<std::pair<std::string, UniqueFd>>& maps) {
    std::vector<steer::NamedFd> out;
    for (const auto& [name, fd] : maps)
        out.push_back({name, fd.get()});
    return out;
}
}  // namespace

std::vector<steer::NamedFd> HandoverIn::map_fds() const {
    return named(maps);
}
std::vector<steer::NamedFd> HandoverIn::tls_map_fds() const {
    return named(tls_maps);
}

void send_state(int fd, const HandoverOut& s) {
    // Version 1's message exactly when there is no TLS port beside: an older binary takes it.
    const unsigned proto = s.tls_port != 0 ? 2 : 1;
    std::string text =
        fmt::format("steerchat-handover {}\npid {}\nport {}\nslots {}\npool {}\nchat-layout {}\n",
                    proto, s.pid, s.port, s.nslots, s.pool, s.chat_layout);
    std::vector<int> fds;
    fds.push_back(s.lock_fd);
    text += "fd lock\n";
    fds.push_back(s.chat_fd);
    text += "fd chat\n";
    for (const auto& [slot, lfd] : s.listeners) {
        fds.push_back(lfd);
        text += fmt::format("fd listener {}\n", slot);
    }
    for (const auto& m : s.maps) {
        fds.push_back(m.fd);
        text += fmt::format("fd map {}\n", m.name);
    }
    if (s.tls_port != 0) {
        text += fmt::format("tls-port {}\n", s.tls_port);
        fds.push_back(s.tls_lock_fd);
        text += "fd tls-lock\n";
        for (const auto& [slot, lfd] : s.tls_listeners) {
            fds.push_back(lfd);
            text += fmt::format("fd tls-listener {}\n", slot);
        }
        for (const auto& m : s.tls_maps) {
            fds.push_back(m.fd);
            text += fmt::format("fd tls-map {}\n", m.name);
        }
    }
    if (fds.size() > kMaxFds)
        fail(fmt::format("{} descriptors to pass, at most {}", fds.size(), kMaxFds));
    for (int f : fds)
        if (f < 0) fail("a descriptor to pass is not open");

    // One message: a 4-byte length, the text; the descriptors ride on its first byte.
    const auto len = static_cast<std::uint32_t>(text.size());
    std::string msg(reinterpret_cast<const char*>(&len), sizeof len);
    msg += text;
    std::vector<char> control(CMSG_SPACE(sizeof(int) * fds.size()));
    iovec iov{msg.data(), msg.size()};
    msghdr mh{};
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    mh.msg_control = control.data();
    mh.msg_controllen = control.size();
    cmsghdr* c = CMSG_FIRSTHDR(&mh);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
    ssize_t n;
    do {
        n = ::sendmsg(fd, &mh, MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    if (n < 0) fail_errno("sendmsg");
    // The rest (a large text on a full socket buffer) without descriptors.
    const auto sent = static_cast<std::size_t>(n);
    if (sent < msg.size()) write_all(fd, msg.data() + sent, msg.size() - sent);
}

HandoverIn receive_state(int fd, std::chrono::milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    wait_readable(fd, deadline, "state");
    std::uint32_t len = 0;
    std::vector<char> control(CMSG_SPACE(sizeof(int) * kMaxFds));
    iovec iov{&len, sizeof len};
    msghdr mh{};
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    mh.msg_control = control.data();
    mh.msg_controllen = control.size();
    ssize_t n;
    do {
        n = ::recvmsg(fd, &mh, MSG_CMSG_CLOEXEC | MSG_WAITALL);
    } while (n < 0 && errno == EINTR);
    if (n < 0) fail_errno("recvmsg");
    if (n == 0) fail("the other master closed the connection before sending its state");

    // Own every received descriptor first, so that nothing leaks whatever fails below.
    std::vector<UniqueFd> fds;
    for (cmsghdr* c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c))
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
            const std::size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            for (std::size_t i = 0; i < count; ++i) {
                int f;
                std::memcpy(&f, CMSG_DATA(c) + i * sizeof(int), sizeof f);
                fds.emplace_back(f);
            }
        }
    if (mh.msg_flags & MSG_CTRUNC) fail("the descriptors were cut short (MSG_CTRUNC)");
    if (static_cast<std::size_t>(n) < sizeof len)
        read_all(fd, reinterpret_cast<char*>(&len) + n, sizeof len - static_cast<std::size_t>(n),
                 deadline);
    if (std::memcmp(&len, "erro", 4) == 0) {
        // The master refused (a control socket's "error\n<reason>"): show its reason.
        std::string text(reinterpret_cast<const char*>(&len), sizeof len);
        char buf[512];
        for (ssize_t r; text.size() < 4096 && (r = ::recv(fd, buf, sizeof buf, 0)) > 0;)
            text.append(buf, static_cast<std::size_t>(r));
        const auto nl = text.find('\n');
        std::string why = nl == std::string::npos ? text : text.substr(nl + 1);
        while (!why.empty() && why.back() == '\n')
            why.pop_back();
        fail(fmt::format("the running master refused: {}", why));
    }
    if (len == 0 || len > kMaxText) fail(fmt::format("a state of {} bytes is not one", len));
    std::string text(len, '\0');
    read_all(fd, text.data(), text.size(), deadline);

    HandoverIn in;
    std::istringstream lines(text);
    std::string line;
    std::size_t next_fd = 0;
    bool header = false;
    while (std::getline(lines, line)) {
        std::istringstream words(line);
        std::string key;
        words >> key;
        if (key == "steerchat-handover") {
            unsigned proto = 0;
            words >> proto;
            if (proto == 0 || proto > kHandoverProtocol)
                fail(fmt::format(
                    "the running master speaks hand-over protocol {}, this binary {}: stop the "
                    "old server and start the new one instead of an upgrade in place",
                    proto, kHandoverProtocol));
            in.protocol = proto;
            header = true;
        } else if (key == "pid") {
            words >> in.pid;
        } else if (key == "port") {
            words >> in.port;
        } else if (key == "slots") {
            words >> in.nslots;
        } else if (key == "pool") {
            words >> in.pool;
        } else if (key == "chat-layout") {
            words >> in.chat_layout;
        } else if (key == "tls-port") {
            words >> in.tls_port;
        } else if (key == "fd") {
            if (next_fd >= fds.size())
                fail(fmt::format("the state names more descriptors than the {} received",
                                 fds.size()));
            UniqueFd f = std::move(fds[next_fd++]);
            std::string kind;
            words >> kind;
            if (kind == "lock") {
                in.lock = std::move(f);
            } else if (kind == "chat") {
                in.chat = std::move(f);
            } else if (kind == "listener") {
                unsigned slot = ~0u;
                words >> slot;
                if (slot >= in.nslots) fail(fmt::format("listener of slot {} out of range", slot));
                in.listeners.emplace_back(slot, std::move(f));
            } else if (kind == "map" || kind == "tls-map") {
                std::string name;
                words >> name;
                (kind == "map" ? in.maps : in.tls_maps).emplace_back(std::move(name), std::move(f));
            } else if (kind == "tls-lock") {
                in.tls_lock = std::move(f);
            } else if (kind == "tls-listener") {
                unsigned slot = ~0u;
                words >> slot;
                if (slot >= in.nslots)
                    fail(fmt::format("TLS listener of slot {} out of range", slot));
                in.tls_listeners.emplace_back(slot, std::move(f));
            } else {
                fail(fmt::format("unknown descriptor kind '{}'", kind));
            }
        }
        // Unknown keys are left for newer binaries.
    }
    if (!header) fail("the other side is not a steerchat master (no hand-over header)");
    if (in.pool == 0 || in.pool > in.nslots)
        fail(fmt::format("a pool of {} of {} slots is not one", in.pool, in.nslots));
    if (!in.lock || !in.chat || in.listeners.empty())
        fail("the state lacks the lock, the chat state or the listeners");
    if (in.tls_port != 0 && (!in.tls_lock || in.tls_listeners.size() != in.listeners.size()))
        fail(fmt::format("the state lacks --tls-port {}'s lock or listeners", in.tls_port));
    return in;
}

void send_line(int fd, const std::string& line) {
    std::string msg = line;
    msg += '\n';
    write_all(fd, msg.data(), msg.size());
}

std::string receive_line(int fd, std::chrono::milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    std::string line;
    for (;;) {
        wait_readable(fd, deadline, "answer");
        char ch;
        const ssize_t n = ::recv(fd, &ch, 1, MSG_DONTWAIT);
        if (n == 0) fail("the other master closed the connection");
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) continue;
            fail_errno("recv");
        }
        if (ch == '\n') return line;
        if (line.size() >= 4096) fail("an answer line is too long");
        line += ch;
    }
}

}  // namespace steerchat::master
