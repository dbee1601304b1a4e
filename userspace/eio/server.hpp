// Engine.IO server (protocol v4, and v3 for socket.io-client 2.x) on an asynchronous HTTP route
// of a worker: sessions, the HTTP long-polling and WebSocket transports, the upgrade from one to
// the other, heartbeats, the error answers and CORS. Upper layers (Socket.IO, the protocol-test
// echo) see a Socket per session and get its messages through a SocketHandler.
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
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <boost/asio/ip/tcp.hpp>

#include "eio/packet.hpp"
#include "net/exchange.hpp"
#include "ws/connection.hpp"
#include "ws/frame.hpp"

namespace steerchat::net {
class Worker;
}

namespace steerchat::eio {

struct Options {
    std::string path = "/socket.io/";
    std::chrono::milliseconds ping_interval{25'000};
    std::chrono::milliseconds ping_timeout{20'000};
    std::size_t max_payload = 1'000'000;  // bytes of one POST body or WebSocket message
    bool allow_eio3 = true;               // Engine.IO v3 clients (socket.io-client 2.x)
    bool allow_upgrades = true;
    // Origins answered with CORS headers ("*": any). Empty: no CORS headers at all.
    std::vector<std::string> cors_origins;
    // Origins allowed to open sessions at all (the worker's --allow-origin): a request with
    // another Origin (and not a CORS origin) gets 403 code 4. Empty: any.
    std::vector<std::string> allowed_origins;
    std::chrono::milliseconds upgrade_timeout{10'000};  // probe -> upgrade packet
    // Packets queued for a polling client that does not poll (bytes, counting kQueuedOverhead
    // per packet): over this, the session closes.
    std::size_t max_buffered_bytes = std::size_t{4} << 20;
    // The same summed over the worker's polling sessions: over it, the sessions that have waited
    // longest for a poll with packets queued are closed until the sum is under it again.
    std::size_t max_buffered_total = std::size_t{64} << 20;
    // Sessions from one client address (IPv4, or the /64 of IPv6); over: 429. 0: no limit.
    std::size_t max_sessions_per_ip = 1000;
    // Handshake -> first long poll or upgrade request of a polling session. 0: no deadline.
    std::chrono::milliseconds first_poll_timeout{5'000};
};

// Bookkeeping bytes counted per queued packet besides its data (the queue entry, the string's
// heap block): what a packet costs the worker, not what it costs the client.
inline constexpr std::size_t kQueuedOverhead = 64;

enum class Transport : std::uint8_t { polling, websocket };

struct Stats {
    std::uint64_t sessions = 0;         // gauge
    std::uint64_t opened = 0;           // sessions opened
    std::uint64_t upgrades = 0;         // polling -> websocket
    std::uint64_t polls = 0;            // GET long polls answered
    std::uint64_t posts = 0;            // POST bodies accepted
    std::uint64_t errors = 0;           // requests answered with an Engine.IO error
    std::uint64_t ping_timeouts = 0;    // sessions closed for a missed heartbeat
    std::uint64_t invalid_packets = 0;  // sessions closed for a malformed packet
    std::uint64_t messages_in = 0;
    std::uint64_t messages_out = 0;
    std::uint64_t queued_bytes = 0;         // gauge: bytes queued for polling clients
    std::uint64_t refused_sessions = 0;     // handshakes over max_sessions_per_ip
    std::uint64_t first_poll_timeouts = 0;  // sessions closed: no poll or upgrade in time
    std::uint64_t queue_overflows = 0;      // sessions closed: over max_buffered_bytes
    std::uint64_t queue_evictions = 0;      // sessions closed: worker over max_buffered_total
    std::uint64_t websockets_refused = 0;   // WebSockets for an upgraded session: closed at once
};

class Server;
class Socket;

// 20 URL-safe base64 characters of 15 bytes from getrandom(): session and socket ids.
std::string random_id();

// The upper layer of one session. Callbacks run on the event loop and may call Socket methods.
struct SocketHandler {
    virtual ~SocketHandler() = default;
    // A message packet (text, or binary data).
    virtual void on_message(Socket& socket, std::string_view data, bool binary) = 0;
    // Exactly once, when the session ends. No send() after it.
    virtual void on_close(Socket& /*socket*/, std::string_view /*reason*/) {}
};

// One Engine.IO session.
class Socket {
  public:
    const std::string& id() const noexcept { return id_; }
    int protocol() const noexcept { return protocol_; }  // 3 or 4
    Transport transport() const noexcept { return transport_; }
    bool is_open() const noexcept { return state_ == State::open; }
    const boost::asio::ip::tcp::endpoint& remote() const noexcept { return remote_; }
    // The handshake request's headers and query, for the upper layer's handshake object.
    const std::string& query() const noexcept { return query_; }
    const std::string& origin() const noexcept { return origin_; }

    // Queues a message packet. Packets queued in one loop turn go out together (one HTTP answer,
    // or one gather write on the WebSocket).
    void send(std::string_view data, bool binary = false);
    // Encode once: `frame` must be the WebSocket text frame of "4" + data; it is shared by
    // every WebSocket session it is sent to.
    void send_shared(std::string_view data, const ws::SharedFrame& frame);
    // Closes the session (close packet to the client); on_close follows.
    void close(std::string_view reason = "forced close");

    SocketHandler* handler() noexcept { return handler_.get(); }
    Server& server() noexcept { return server_; }

  private:
    friend class Server;
    friend class WsTransport;
    enum class State : std::uint8_t { open, closed };
    struct Out {
        char type;
        bool binary;
        std::string data;
    };

    Socket(Server& server, std::string id, int protocol, Transport transport,
           boost::asio::ip::tcp::endpoint remote);

    void start(std::unique_ptr<SocketHandler> handler);
    void queue(char type, std::string_view data, bool binary);
    void schedule_flush();
    void flush();
    void flush_ws();
    void on_packets_from(Transport via, const std::vector<Packet>& packets);
    bool on_packet(Transport via, const Packet& p);
    void on_poll(const std::shared_ptr<net::Exchange>& ex);
    void on_post(const std::shared_ptr<net::Exchange>& ex);
    void answer_poll(std::string_view single_packet = {});
    void arm_heartbeat();
    void on_heartbeat(const boost::system::error_code& ec);
    // The client missed its heartbeat deadline (the timer may not have run yet).
    bool heartbeat_overdue() const;
    // How a pending long poll is ended when the session ends.
    enum class PollEnd : std::uint8_t { close_packet, noop, none };
    void end(std::string_view reason, PollEnd poll_end);
    void send_ws(char type, std::string_view data, bool binary);
    // Empties out_ and its accounting (and leaves the server's list of queued sessions).
    void clear_out();

    Server& server_;
    std::string id_;
    int protocol_;
    Transport transport_;
    State state_ = State::open;
    boost::asio::ip::tcp::endpoint remote_;
    std::string query_;
    std::string origin_;
    std::unique_ptr<SocketHandler> handler_;
    std::vector<Out> out_;       // packets not yet handed to a transport
    std::size_t out_bytes_ = 0;  // their data + kQueuedOverhead each
    // In the server's list of polling sessions with packets queued, oldest queue first.
    Socket* queued_prev_ = nullptr;
    Socket* queued_next_ = nullptr;
    std::shared_ptr<net::Exchange> poll_;          // the pending long poll
    std::shared_ptr<ws::WebSocketConnection> ws_;  // the WebSocket transport (or the upgrade probe)
    bool upgrading_ = false;                       // probe answered; waiting for the upgrade packet
    bool noop_sent_ = false;                       // the pending poll was ended with a noop
    bool flush_posted_ = false;
    bool awaiting_pong_ = false;  // v4: ping sent
    bool polled_ = false;         // a long poll or an upgrade request came after the handshake
    boost::asio::steady_timer heartbeat_;
    // The first-poll deadline, then (once polled_) the deadline of an upgrade probe.
    boost::asio::steady_timer deadline_;
    // false once the session has ended: posted handlers and callbacks check it.
    std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

class Server {
  public:
    using Factory = std::function<std::unique_ptr<SocketHandler>(Socket&)>;

    // Registers the route `options.path` on the worker and a stop hook that closes every session.
    Server(net::Worker& worker, Options options, Factory factory);
    ~Server();
    Server(const Server&) = delete;
    Server& operator=(const Server&) = delete;

    const Options& options() const noexcept { return options_; }
    const Stats& stats() const noexcept { return stats_; }
    Stats& stats() noexcept { return stats_; }
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
    friend class Socket;
    friend class WsTransport;

    void handle(const std::shared_ptr<net::Exchange>& ex);
    void handshake(const std::shared_ptr<net::Exchange>& ex, int protocol, Transport transport);
    // Creates a session, queues its open packet and starts its handler; nullptr if the handler
    // closed it at once.
    Socket* open_session(int protocol, Transport transport,
                         const boost::asio::ip::tcp::endpoint& remote, std::string query,
                         std::string origin, std::shared_ptr<ws::WebSocketConnection> conn);
    void upgrade(const std::shared_ptr<net::Exchange>& ex, Socket& s);
    void error(const std::shared_ptr<net::Exchange>& ex, int code);
    net::Response response(const net::Request& req, boost::beast::http::status status,
                           std::string body, std::string_view content_type) const;
    std::string new_id();
    void erase(Socket& s);
    bool over_session_limit(const std::shared_ptr<net::Exchange>& ex);
    // The polling sessions with packets queued, oldest first (intrusive list in Socket).
    void link_queued(Socket& s) noexcept;
    void unlink_queued(Socket& s) noexcept;
    // Closes the sessions that waited longest until the total is under max_buffered_total.
    void trim_queues();
    // Notes about limits reach the log at most every 5 s (a flood must not flood the log).
    bool may_log();

    net::Worker& worker_;
    Options options_;
    Factory factory_;
    Stats stats_;
    ws::ConnectionOptions ws_options_;
    std::vector<std::string> ws_origins_;  // --allow-origin and the CORS origins
    std::unordered_map<std::string, std::unique_ptr<Socket>> sessions_;
    std::vector<std::unique_ptr<Socket>> graveyard_;  // ended sessions, freed next loop turn
    std::unordered_map<AddrKey, std::size_t, AddrHash> per_ip_;  // open sessions per address
    Socket* queued_head_ = nullptr;
    Socket* queued_tail_ = nullptr;
    std::size_t queued_total_ = 0;  // out_bytes_ of every session
    bool trim_posted_ = false;
    std::chrono::steady_clock::time_point last_log_{};
    bool reap_posted_ = false;
    bool stopping_ = false;
};

}  // namespace steerchat::eio
