#include "listener.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

#include <fmt/core.h>

namespace steerchat::master {

UniqueFd make_listener(const std::string& bind, std::uint16_t port, int backlog) {
    sockaddr_storage ss{};
    socklen_t len = 0;
    int family = AF_INET6;
    auto* s6 = reinterpret_cast<sockaddr_in6*>(&ss);
    auto* s4 = reinterpret_cast<sockaddr_in*>(&ss);
    if (inet_pton(AF_INET6, bind.c_str(), &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons(port);
        len = sizeof *s6;
    } else if (inet_pton(AF_INET, bind.c_str(), &s4->sin_addr) == 1) {
        family = AF_INET;
        s4->sin_family = AF_INET;
        s4->sin_port = htons(port);
        len = sizeof *s4;
    } else {
        throw std::runtime_error(fmt::format("--bind '{}' is not an IPv4 or IPv6 address", bind));
    }

    UniqueFd fd(::socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!fd) throw std::runtime_error(fmt::format("socket(): {}", std::strerror(errno)));
    int one = 1, zero = 0;
    ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0)
        throw std::runtime_error(fmt::format("SO_REUSEPORT: {}", std::strerror(errno)));
    if (family == AF_INET6) ::setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
    ::setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);  // inherited by accepted
    if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&ss), len) != 0) {
        int err = errno;
        if (err == EADDRINUSE)
            throw std::runtime_error(fmt::format(
                "port {} on {} is already in use by another program; stop it (see `ss -ltnp "
                "'sport = :{}'`) or choose another port with --port",
                port, bind, port));
        if (err == EADDRNOTAVAIL)
            throw std::runtime_error(fmt::format(
                "cannot bind {}: the address is not configured on this host; use an address of "
                "this host or :: for all",
                bind));
        if (err == EACCES)
            throw std::runtime_error(fmt::format(
                "binding port {} needs CAP_NET_BIND_SERVICE (ports below 1024): run as root or "
                "use a port >= 1024",
                port));
        throw std::runtime_error(
            fmt::format("bind {} port {}: {}", bind, port, std::strerror(err)));
    }
    if (::listen(fd.get(), backlog) != 0)
        throw std::runtime_error(fmt::format("listen(): {}", std::strerror(errno)));
    return fd;
}

}  // namespace steerchat::master
