#include "worker.hpp"

#include <csignal>
#include <vector>

#include "net/http_session.hpp"
#include "util/log.hpp"
#include "ws/echo.hpp"

namespace asio = boost::asio;
using asio::ip::tcp;

namespace steerchat::net {

namespace {

// The protocol of an inherited listening socket (IPv4 or IPv6), read back from the kernel.
tcp protocol_of(int fd) {
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
    return ss.ss_family == AF_INET ? tcp::v4() : tcp::v6();
}

}  // namespace

Worker::Worker(WorkerConfig cfg)
    : cfg_(std::move(cfg)),
      ws_hub_(cfg_.websocket),
      acceptor_(ioc_),
      drain_timer_(ioc_) {
    if (cfg_.listen_fd >= 0) acceptor_.assign(protocol_of(cfg_.listen_fd), cfg_.listen_fd);
    ws_hub_.set_on_empty([this] { maybe_done(); });
    add_websocket_route("/echo",
                        [](const Request&) { return std::make_unique<ws::EchoHandler>(); });
}

void Worker::add_websocket_route(std::string path, WebSocketFactory factory) {
    ws_routes_.insert_or_assign(std::move(path), std::move(factory));
}

const WebSocketFactory* Worker::websocket_route(std::string_view path) const {
    auto it = ws_routes_.find(path);
    return it == ws_routes_.end() ? nullptr : &it->second;
}

void Worker::add_http_route(std::string path, HttpHandler handler) {
    while (path.size() > 1 && path.back() == '/')
        path.pop_back();
    http_routes_.insert_or_assign(std::move(path), std::move(handler));
}

const HttpHandler* Worker::http_route(std::string_view path) const {
    if (http_routes_.empty()) return nullptr;
    while (path.size() > 1 && path.back() == '/')
        path.remove_suffix(1);
    auto it = http_routes_.find(path);
    return it == http_routes_.end() ? nullptr : &it->second;
}

int Worker::run() {
    signals_.emplace(ioc_, SIGTERM, SIGINT);
    signals_->async_wait([this](const boost::system::error_code& ec, int sig) {
        if (ec) return;
        log::line("received signal {}; finishing in-flight requests", sig);
        stop();
    });
    if (acceptor_.is_open()) accept();
    log::line("serving (pid {})", ::getpid());
    ioc_.run();
    done_ = true;
    return 0;
}

void Worker::accept() {
    acceptor_.async_accept([this](boost::system::error_code ec, tcp::socket socket) {
        if (stopping_) return;
        if (ec) {
            ++stats_.accept_errors;
            // EMFILE/ENFILE and the like: a short pause instead of a busy loop.
            if (ec != asio::error::connection_aborted) {
                log::line("accept failed: {}; retrying in 50 ms", ec.message());
                drain_timer_.expires_after(std::chrono::milliseconds(50));
                drain_timer_.async_wait([this](const boost::system::error_code& e) {
                    if (!e) accept();
                });
                return;
            }
        } else {
            serve(std::move(socket));
        }
        accept();
    });
}

void Worker::serve(tcp::socket socket) {
    ++stats_.accepted;
    boost::system::error_code ec;
    socket.set_option(tcp::no_delay(true), ec);  // fails harmlessly on a non-TCP stream
    std::make_shared<HttpSession>(std::move(socket), *this)->start();
}

void Worker::stop() {
    if (stopping_) return;
    stopping_ = true;
    boost::system::error_code ec;
    acceptor_.close(ec);
    if (signals_) signals_->cancel(ec);
    for (auto& hook : stop_hooks_)
        hook();
    // Copy: stopping a session may destroy it, which edits the set.
    std::vector<HttpSession*> sessions(sessions_.begin(), sessions_.end());
    for (auto* s : sessions)
        s->stop();
    // WebSocket clients get a Close 1001; each connection waits (bounded) for the reply.
    if (ws_hub_.size() > 0)
        log::line("closing {} WebSocket connection(s) (1001 going away)", ws_hub_.size());
    ws_hub_.close_all(ws::close_code::going_away, "server shutting down");
    drain_timer_.cancel();
    drain_timer_.expires_after(cfg_.drain_timeout);
    drain_timer_.async_wait([this](const boost::system::error_code& e) {
        if (e) return;
        if (!sessions_.empty() || ws_hub_.size() > 0)
            log::line("{} connection(s) still busy after the drain timeout; closing them",
                      sessions_.size() + ws_hub_.size());
        ioc_.stop();
    });
    maybe_done();
}

void Worker::remove(HttpSession* s) {
    sessions_.erase(s);
    maybe_done();
}

void Worker::maybe_done() {
    // Drained before the timeout. (After the loop returned, teardown is under way: no stop.)
    if (stopping_ && !done_ && sessions_.empty() && ws_hub_.size() == 0) ioc_.stop();
}

}  // namespace steerchat::net
