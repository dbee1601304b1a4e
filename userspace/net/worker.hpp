// A worker process: one single-threaded Asio event loop that accepts on its slot's listener and
// serves HTTP/1.1 (keep-alive). Later protocols (WebSocket, Socket.IO) are routed from here.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <unordered_set>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>

namespace steerchat::net {

struct WorkerConfig {
    unsigned slot = 0;
    unsigned nslots = 1;
    int listen_fd = -1;  // owned by the worker from now on
    std::vector<std::string> allowed_origins;
    std::size_t max_header_bytes = 16 * 1024;
    std::size_t max_body_bytes = 1024 * 1024;
    std::chrono::seconds idle_timeout{60};
    std::chrono::milliseconds drain_timeout{2000};  // graceful stop: in-flight requests finish
};

struct WorkerStats {
    std::uint64_t accepted = 0;
    std::uint64_t active = 0;
    std::uint64_t requests = 0;
    std::uint64_t bad_requests = 0;
    std::uint64_t accept_errors = 0;
};

class HttpSession;

class Worker {
  public:
    explicit Worker(WorkerConfig cfg);
    // Serves until SIGTERM/SIGINT, then drains; returns the process exit code.
    int run();
    void stop();

    const WorkerConfig& config() const { return cfg_; }
    WorkerStats& stats() { return stats_; }
    bool stopping() const { return stopping_; }
    boost::asio::io_context& io() { return ioc_; }

    void add(HttpSession* s) { sessions_.insert(s); }
    void remove(HttpSession* s);

  private:
    void accept();

    WorkerConfig cfg_;
    boost::asio::io_context ioc_{1};
    boost::asio::ip::tcp::acceptor acceptor_;
    boost::asio::signal_set signals_;
    boost::asio::steady_timer drain_timer_;
    WorkerStats stats_;
    std::unordered_set<HttpSession*> sessions_;
    bool stopping_ = false;
};

// Entry point of a forked worker process.
int run_worker(const WorkerConfig& cfg);

}  // namespace steerchat::net
