// The master's own HTTP listener for `steerchat balance --admin-port P`: under balance the
// application owns the main port, so the steering's /metrics (and a /healthz of the slots) are
// served by the master itself, from its poll loop, on a port of their own.
//
// Deliberately small: HTTP/1.x GET only, one request per connection (answered with
// "Connection: close"), the request head at most kMaxAdminRequest bytes and read within
// kAdminTimeout (as its answer must be taken), at most kMaxAdminConnections at once (more are
// closed at accept). Non-blocking throughout: nothing a client does can stall the master.
//
// Threading: the master's thread only.
#pragma once

#include <poll.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "util/unique_fd.hpp"

namespace steerchat::master {

inline constexpr std::size_t kMaxAdminRequest = 8192;
inline constexpr std::size_t kMaxAdminConnections = 16;
inline constexpr std::chrono::milliseconds kAdminTimeout{2000};

struct AdminReply {
    int status = 200;
    std::string content_type = "text/plain; charset=utf-8";
    std::string body;
};

class AdminServer {
  public:
    // `path` is the request target without its query string.
    using Handler = std::function<AdminReply(std::string_view path)>;

    // Binds address:port (a plain listener, no SO_REUSEPORT). Throws std::runtime_error naming
    // the fix.
    AdminServer(const std::string& address, std::uint16_t port, Handler handler);

    // Poll integration, as ControlServer: append() adds the listener and every connection;
    // process() takes exactly those entries back; timeout_ms() bounds the loop's sleep (-1: none).
    std::size_t append(std::vector<pollfd>& fds) const;
    void process(std::span<const pollfd> fds);
    int timeout_ms() const;

    std::uint64_t requests() const noexcept { return requests_; }
    // Connections closed at accept because kMaxAdminConnections were open, or closed for being
    // slower than kAdminTimeout.
    std::uint64_t refused() const noexcept { return refused_; }
    std::uint64_t timed_out() const noexcept { return timed_out_; }

  private:
    using Clock = std::chrono::steady_clock;
    struct Connection {
        UniqueFd fd;
        std::string in, out;
        bool answering = false;
        Clock::time_point deadline;
    };
    void accept_all();
    bool on_readable(Connection& c);  // false: finished (close it)
    bool on_writable(Connection& c);
    void answer(Connection& c, const AdminReply& reply);

    Handler handler_;
    UniqueFd listener_;
    std::vector<Connection> conns_;
    std::uint64_t requests_ = 0;
    std::uint64_t refused_ = 0;
    std::uint64_t timed_out_ = 0;
};

}  // namespace steerchat::master
