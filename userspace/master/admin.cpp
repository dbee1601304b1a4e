#include "master/admin.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <stdexcept>

#include <fmt/core.h>

#include "util/log.hpp"

namespace steerchat::master {

namespace {

std::string_view reason(int status) {
    switch (status) {
        case 200:
            return "OK";
        case 400:
            return "Bad Request";
        case 404:
            return "Not Found";
        case 405:
            return "Method Not Allowed";
        case 431:
            return "Request Header Fields Too Large";
        case 503:
            return "Service Unavailable";
        default:
            return "Error";
    }
}

}  // namespace

AdminServer::AdminServer(const std::string& address, std::uint16_t port, Handler handler)
    : handler_(std::move(handler)) {
    sockaddr_storage ss{};
    socklen_t len = 0;
    int family = AF_INET6;
    auto* s6 = reinterpret_cast<sockaddr_in6*>(&ss);
    auto* s4 = reinterpret_cast<sockaddr_in*>(&ss);
    if (::inet_pton(AF_INET6, address.c_str(), &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons(port);
        len = sizeof *s6;
    } else if (::inet_pton(AF_INET, address.c_str(), &s4->sin_addr) == 1) {
        family = AF_INET;
        s4->sin_family = AF_INET;
        s4->sin_port = htons(port);
        len = sizeof *s4;
    } else {
        throw std::runtime_error(
            fmt::format("--admin-bind '{}' is not an IPv4 or IPv6 address", address));
    }
    listener_.reset(::socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!listener_) throw std::runtime_error(fmt::format("socket(): {}", std::strerror(errno)));
    int one = 1;
    ::setsockopt(listener_.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::bind(listener_.get(), reinterpret_cast<sockaddr*>(&ss), len) != 0) {
        const int err = errno;
        throw std::runtime_error(fmt::format(
            "cannot listen on the admin port {} of {}: {}{}", port, address, std::strerror(err),
            err == EADDRINUSE ? "; choose another --admin-port" : ""));
    }
    if (::listen(listener_.get(), 64) != 0)
        throw std::runtime_error(fmt::format("listen(): {}", std::strerror(errno)));
}

std::size_t AdminServer::append(std::vector<pollfd>& fds) const {
    fds.push_back({listener_.get(), POLLIN, 0});
    for (const auto& c : conns_)
        fds.push_back({c.fd.get(), static_cast<short>(c.answering ? POLLOUT : POLLIN), 0});
    return 1 + conns_.size();
}

int AdminServer::timeout_ms() const {
    if (conns_.empty()) return -1;
    const auto first =
        std::min_element(conns_.begin(), conns_.end(), [](const auto& a, const auto& b) {
            return a.deadline < b.deadline;
        })->deadline;
    const auto ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(first - Clock::now()).count() + 1;
    return static_cast<int>(std::clamp<long>(ms, 0, kAdminTimeout.count()));
}

void AdminServer::process(std::span<const pollfd> fds) {
    if (fds.empty()) return;
    const std::size_t n = std::min(fds.size() - 1, conns_.size());
    std::vector<bool> done(conns_.size(), false);
    const auto now = Clock::now();
    for (std::size_t i = 0; i < n; ++i) {
        Connection& c = conns_[i];
        const short ev = fds[i + 1].revents;
        if (ev & (POLLERR | POLLHUP | POLLNVAL) && !(ev & POLLIN))
            done[i] = true;
        else if (ev & POLLIN)
            done[i] = !on_readable(c);
        else if (ev & POLLOUT)
            done[i] = !on_writable(c);
        if (!done[i] && now >= c.deadline) {  // too slow: closed
            done[i] = true;
            ++timed_out_;
        }
    }
    std::size_t k = 0;
    for (std::size_t i = 0; i < conns_.size(); ++i)
        if (!done[i]) conns_[k++] = std::move(conns_[i]);
    conns_.resize(k);
    if (fds[0].revents & POLLIN) accept_all();
}

void AdminServer::accept_all() {
    for (;;) {
        UniqueFd fd(::accept4(listener_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
        if (!fd) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            return;
        }
        if (conns_.size() >= kMaxAdminConnections) {  // closed: busy
            ++refused_;
            continue;
        }
        Connection c;
        c.fd = std::move(fd);
        c.deadline = Clock::now() + kAdminTimeout;
        conns_.push_back(std::move(c));
    }
}

bool AdminServer::on_readable(Connection& c) {
    char buf[2048];
    for (;;) {
        const ssize_t n = ::read(c.fd.get(), buf, sizeof buf);
        if (n < 0) return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
        if (n == 0) return false;
        c.in.append(buf, static_cast<std::size_t>(n));
        if (c.in.find("\r\n\r\n") != std::string::npos || c.in.find("\n\n") != std::string::npos)
            break;
        if (c.in.size() > kMaxAdminRequest) {
            answer(c, {431, "text/plain; charset=utf-8", "request head too large\n"});
            return on_writable(c);
        }
    }
    ++requests_;
    // "GET /path?query HTTP/1.1"
    const std::string line = c.in.substr(0, c.in.find_first_of("\r\n"));
    const auto sp1 = line.find(' ');
    const auto sp2 = sp1 == std::string::npos ? sp1 : line.find(' ', sp1 + 1);
    if (sp2 == std::string::npos) {
        answer(c, {400, "text/plain; charset=utf-8", "bad request line\n"});
        return on_writable(c);
    }
    const std::string method = line.substr(0, sp1);
    std::string target = line.substr(sp1 + 1, sp2 - sp1 - 1);
    target = target.substr(0, target.find('?'));
    if (method != "GET" && method != "HEAD") {
        answer(c, {405, "text/plain; charset=utf-8", "only GET\n"});
        return on_writable(c);
    }
    AdminReply reply;
    try {
        reply = handler_(target);
    } catch (const std::exception& e) {
        log::error("admin: {} {}: {}", method, target, e.what());
        reply = {503, "text/plain; charset=utf-8", "unavailable\n"};
    }
    if (method == "HEAD") {
        const std::size_t len = reply.body.size();
        answer(c, reply);
        // The head only: the Content-Length stays that of the body.
        c.out.resize(c.out.size() - len);
    } else {
        answer(c, reply);
    }
    return on_writable(c);
}

void AdminServer::answer(Connection& c, const AdminReply& reply) {
    c.answering = true;
    c.out = fmt::format(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: "
        "no-store\r\nConnection: close\r\n\r\n",
        reply.status, reason(reply.status), reply.content_type, reply.body.size());
    c.out += reply.body;
    c.deadline = Clock::now() + kAdminTimeout;
}

bool AdminServer::on_writable(Connection& c) {
    while (!c.out.empty()) {
        const ssize_t n = ::send(c.fd.get(), c.out.data(), c.out.size(), MSG_NOSIGNAL);
        if (n < 0) return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
        c.out.erase(0, static_cast<std::size_t>(n));
    }
    ::shutdown(c.fd.get(), SHUT_WR);
    return false;
}

}  // namespace steerchat::master
