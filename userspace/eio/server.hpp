// Engine.IO server (protocol v4, and v3 for socket.io-client 2.x) on an asynchronous HTTP route
// of a worker: sessions, the HTTP long-polling and WebSocket transports, the upgrade from one to
// the other, heartbeats, the error answers and CORS. Upper layers (Socket.IO, the protocol-test
// echo) see a Session (session.hpp: the session's state machine) and get its messages through a
// SessionHandler. The server validates and routes requests: a handshake opens a session, every
// other request goes to its session's TransportEvents.
//
// Sessions live in one worker: kernel steering sends every request of a client IP to the same
// worker, so the HTTP requests and the WebSocket of one session meet here without any sharing.
//
//   GET  ?EIO=4&transport=polling               handshake: open packet, a new session
//   GET  ?EIO=4&transport=polling&sid=S         long poll: held until packets are queued
//   POST ?EIO=4&transport=polling&sid=S         packets from the client; answered "ok"
//   GET  ?EIO=4&transport=websocket[&sid=S]     a WebSocket session, or the upgrade of S
//
// Errors are 400 (403 for code 4) with {"code":N,"message":M}: 0 Transport unknown, 1 Session ID
// unknown, 2 Bad handshake method, 3 Bad request, 4 Forbidden, 5 Unsupported protocol version.
//
// Limits (Options; docs/reliability.md):
// * Sessions per client address (IPv4, or the /64 of IPv6) on this worker: a handshake over
//   max_sessions_per_ip is answered 429 with {"code":4,"message":...}. Node's engine.io has no
//   such limit; its hook for one (allowRequest) can refuse a handshake only as error 4
//   "Forbidden" (403): we keep that body and code and say 429 so that operators and proxies see a
//   quota, not a permission. The official clients treat any failed handshake alike (connect_error,
//   then reconnection with backoff).
// * Handshake -> the first long poll or WebSocket upgrade request of a polling session
//   (first_poll_timeout; the official clients poll at once): the session is closed.
// * Bytes queued for a polling client between its polls: over max_buffered_bytes the session
//   is closed (as a WebSocket over --ws-max-queued); over max_buffered_total for the whole
//   worker, the sessions whose queues have waited longest for a poll are closed.
// A WebSocket request for a session that is already on WebSocket or moving to it is accepted
// and closed at once (no status code), as Node's engine.io does, not answered 400.
//
// Threading: the worker's event loop thread.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>

#include <boost/asio/ip/tcp.hpp>

#include "eio/options.hpp"
#include "eio/session.hpp"
#include "net/exchange.hpp"

namespace steerchat::net {
class Worker;
}

namespace steerchat::eio {

class Server {
  public:
    using Factory = std::function<std::unique_ptr<SessionHandler>(Session&)>;

    // Registers the route `options.path` on the worker and a stop hook that closes every session.
    Server(net::Worker& worker, Options options, Factory factory);
    // Detaches the sessions still open (their upper layers are destroyed, without on_close).
    ~Server();
    Server(const Server&) = delete;
    Server& operator=(const Server&) = delete;

    const Options& options() const noexcept { return options_; }
    // A reload: takes `options` but its path and allow_upgrades (the route stays). Heartbeat
    // and max payload apply to sessions opened from now on (a session keeps what its open
    // packet told the client); the session limit per address, the first-poll deadline and the
    // origins to new handshakes and upgrades; the queue limits to every session at its next
    // queued packet. The WebSocket options come again from the worker's (Worker::update_limits
    // first).
    void update_options(const Options& options);
    const Stats& stats() const noexcept { return *stats_; }
    Stats& stats() noexcept { return *stats_; }
    std::size_t size() const noexcept { return sessions_.size(); }
    net::Worker& worker() noexcept { return worker_; }

    // Closes every session (graceful stop).
    void close_all();
    // Appends the Prometheus metrics of this server (prefix e.g. "steerchat_eio").
    void append_metrics(std::string& out) const;

    // A client address as counted by max_sessions_per_ip: IPv4 (also when v4-mapped), or the
    // /64 prefix of an IPv6 address.
    struct AddrKey {
        std::array<std::uint8_t, 17> bytes{};
        bool operator==(const AddrKey&) const = default;
    };
    struct AddrHash {
        std::size_t operator()(const AddrKey& k) const noexcept;
    };
    static AddrKey addr_key(const boost::asio::ip::tcp::endpoint& remote);

  private:
    // The WebSocket transport's options and origins, from the worker's and options_.
    void derive_ws_options();
    void handle(const std::shared_ptr<net::Exchange>& ex);
    void handshake(const std::shared_ptr<net::Exchange>& ex, int protocol, Transport transport);
    // Creates a session, queues its open packet and starts its upper layer (which may close it
    // at once).
    std::shared_ptr<Session> open_session(Session::State initial, int protocol,
                                          const boost::asio::ip::tcp::endpoint& remote,
                                          std::string query, std::string origin,
                                          std::shared_ptr<ws::WebSocketConnection> link);
    void error(const std::shared_ptr<net::Exchange>& ex, int code);
    std::string new_id();
    // An ended session leaves the map (SessionContext::on_end).
    void forget(Session& s);
    bool over_session_limit(const std::shared_ptr<net::Exchange>& ex);

    net::Worker& worker_;
    Options options_;
    Factory factory_;
    metrics::Cell<Stats> stats_;  // in the worker's slot block
    // What the sessions share (a shared_ptr: posted work holds it by weak_ptr).
    std::shared_ptr<SessionContext> ctx_;
    std::unordered_map<std::string, std::shared_ptr<Session>> sessions_;
    std::unordered_map<AddrKey, std::size_t, AddrHash> per_ip_;  // open sessions per address
    bool stopping_ = false;
};

}  // namespace steerchat::eio
