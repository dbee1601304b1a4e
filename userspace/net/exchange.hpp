// One request of an asynchronous HTTP route (Worker::add_http_route): the route may answer it at
// once, later (an Engine.IO long poll is held until there is something to send), or turn the
// connection into a WebSocket. The HTTP connection reads no further request until then.
//
// While an answer is pending the connection is watched: if the client closes it, the on_abort
// callback runs once and the exchange is over (respond() then does nothing).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <boost/asio/ip/tcp.hpp>

#include "net/router.hpp"
#include "ws/connection.hpp"

namespace steerchat::net {

class HttpSession;

class Exchange {
  public:
    Exchange(std::weak_ptr<HttpSession> session, Request req, boost::asio::ip::tcp::endpoint remote)
        : session_(std::move(session)), req_(std::move(req)), remote_(remote) {}
    Exchange(const Exchange&) = delete;
    Exchange& operator=(const Exchange&) = delete;

    const Request& request() const noexcept { return req_; }
    const boost::asio::ip::tcp::endpoint& remote() const noexcept { return remote_; }
    // respond() or upgrade() was called, or the client went away.
    bool finished() const noexcept { return finished_; }

    // Writes the response; the connection then reads its next request if both sides keep it
    // alive.
    void respond(Response res);
    // Validates the WebSocket handshake of the request and answers 101, after which the
    // connection is a ws::WebSocketConnection driven by `handler` (with `options`, else the
    // worker's). A bad handshake gets its 400/403/426 answer and `handler` is destroyed unopened.
    // `origins`, if given, replaces the worker's Origin allowlist for this upgrade.
    void upgrade(std::unique_ptr<ws::MessageHandler> handler,
                 const ws::ConnectionOptions* options = nullptr,
                 const std::vector<std::string>* origins = nullptr);
    // Runs once if the client closes the connection while the answer is pending.
    void on_abort(std::function<void()> f) { on_abort_ = std::move(f); }

  private:
    friend class HttpSession;
    std::weak_ptr<HttpSession> session_;
    Request req_;
    boost::asio::ip::tcp::endpoint remote_;
    std::function<void()> on_abort_;
    bool finished_ = false;
};

}  // namespace steerchat::net
