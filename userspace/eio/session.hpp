// One Engine.IO session as an explicit state machine, and the interface its transports see.
//
// States (State):
//
//   polling ──probe WebSocket open──> probing ──upgrade packet "5"──> websocket
//      ^                                 │                                │
//      └── probe failed, closed, timed out                                │
//   polling, probing, websocket ──────────────────────────────────────> closed
//     (close packet, transport error or close, heartbeat timeout, first-poll timeout, queue
//      limits, an invalid packet, an overlapping poll, Session::close, the server's stop)
//
// A session opened over WebSocket starts in `websocket`. In `probing` the probe WebSocket may
// have answered the client's "2probe" (probe_answered_): then polls are ended at once with a
// noop and queued packets wait for the upgrade, which sends them over the WebSocket.
//
// Every event is handled in one function: the polling transport's on_poll / on_post /
// on_upgrade_request (the server routes a session's HTTP requests there), the WebSocket
// transport's on_ws_open / on_ws_packet / on_ws_invalid / on_ws_close (ws_transport.hpp), the
// session's own timers (on_heartbeat, on_deadline), a poll aborted by the client
// (on_poll_aborted), and close() / end() for everything that ends it. State changes go through
// enter(), which checks them against the diagram above.
//
// Lifetime (docs/architecture.md, "Lifetimes"): a session is owned by shared_ptr: by its server's
// map while it is open, and by its own pending operations (timers, a posted flush). Transports
// and posted work hold weak_ptr. Ending a session never frees it inside the call: end() posts a
// last reference, so whatever is on the stack (the upper layer's handler) stays valid.
//
// Threading: the worker's event loop thread.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>

#include "eio/options.hpp"
#include "eio/packet.hpp"
#include "net/exchange.hpp"
#include "ws/connection.hpp"
#include "ws/frame.hpp"

namespace steerchat::eio {

class Server;
class Session;

// The upper layer of one session. Callbacks run on the event loop and may call Session methods.
struct SessionHandler {
    virtual ~SessionHandler() = default;
    // A message packet (text, or binary data).
    virtual void on_message(Session& session, std::string_view data, bool binary) = 0;
    // Exactly once, when the session ends. No send() after it.
    virtual void on_close(Session& /*session*/, std::string_view /*reason*/) {}
};

// What the transports of a session tell it, and all they can: the polling transport (the
// server, routing the session's HTTP requests) and the WebSocket transport (ws_transport.hpp).
// WebSocket events name their connection: events of a connection the session no longer uses
// (a dropped probe) are ignored.
class TransportEvents {
  public:
    // GET long poll.
    virtual void on_poll(const std::shared_ptr<net::Exchange>& ex) = 0;
    // POST of packets.
    virtual void on_post(const std::shared_ptr<net::Exchange>& ex) = 0;
    // GET transport=websocket with this session's sid: the upgrade's probe connection.
    virtual void on_upgrade_request(const std::shared_ptr<net::Exchange>& ex) = 0;
    // A WebSocket asking to be this session's probe has finished its handshake.
    virtual void on_ws_open(ws::WebSocketConnection& link) = 0;
    virtual void on_ws_packet(ws::WebSocketConnection& link, const Packet& p) = 0;
    // A WebSocket message that is not an Engine.IO packet.
    virtual void on_ws_invalid(ws::WebSocketConnection& link) = 0;
    virtual void on_ws_close(ws::WebSocketConnection& link) = 0;

  protected:
    ~TransportEvents() = default;
};

// What the sessions of one server share. Owned by the server; a session uses it only while it is
// not closed (the server closes or detaches every session before it goes).
struct SessionContext : std::enable_shared_from_this<SessionContext> {
    SessionContext(Server& server_, boost::asio::io_context& io_, const Options& options_,
                   Stats& stats_)
        : server(server_), io(io_), options(options_), stats(stats_) {}

    Server& server;  // for the upper layer (Session::server())
    boost::asio::io_context& io;
    const Options& options;
    Stats& stats;
    ws::ConnectionOptions ws_options;      // of the WebSocket transport
    std::vector<std::string> ws_origins;   // its Origin allowlist (empty: the worker's)
    std::function<void(Session&)> on_end;  // the server forgets the session

    // The polling sessions with packets queued, oldest queue first, and their bytes in all.
    std::list<std::weak_ptr<Session>> queued;
    std::size_t queued_total = 0;
    bool trim_posted = false;
    // Closes the sessions that waited longest until the total is under max_buffered_total.
    void trim_queues();

    // Notes about limits reach the log at most every 5 s (a flood must not flood the log).
    bool may_log();
    std::chrono::steady_clock::time_point last_log{};
};

class Session final : public std::enable_shared_from_this<Session>, public TransportEvents {
  public:
    enum class State : std::uint8_t { polling, probing, websocket, closed };

    // Use create().
    struct Private {};
    Session(Private, SessionContext& ctx, std::string id, int protocol, State initial,
            boost::asio::ip::tcp::endpoint remote, std::string query, std::string origin,
            std::shared_ptr<ws::WebSocketConnection> link);
    ~Session();
    Session(const Session&) = delete;
    Session& operator=(const Session&) = delete;

    // A new session in `initial` (polling, or websocket over `link`) with its open packet
    // queued. start() makes its upper layer.
    static std::shared_ptr<Session> create(SessionContext& ctx, std::string id, int protocol,
                                           State initial, boost::asio::ip::tcp::endpoint remote,
                                           std::string query, std::string origin,
                                           std::shared_ptr<ws::WebSocketConnection> link);
    // Makes the upper layer with `factory` (which may close the session at once) and starts the
    // heartbeat.
    void start(const std::function<std::unique_ptr<SessionHandler>(Session&)>& factory);

    const std::string& id() const noexcept { return id_; }
    int protocol() const noexcept { return protocol_; }  // 3 or 4
    State state() const noexcept { return state_; }
    Transport transport() const noexcept {
        return state_ == State::websocket ? Transport::websocket : Transport::polling;
    }
    bool is_open() const noexcept { return state_ != State::closed; }
    const boost::asio::ip::tcp::endpoint& remote() const noexcept { return remote_; }
    // The handshake request's query and Origin, for the upper layer's handshake object.
    const std::string& query() const noexcept { return query_; }
    const std::string& origin() const noexcept { return origin_; }
    SessionHandler* handler() noexcept { return handler_.get(); }
    Server& server() noexcept { return ctx_.server; }

    // Queues a message packet. Packets queued in one loop turn go out together (one HTTP answer,
    // or one gather write on the WebSocket).
    void send(std::string_view data, bool binary = false);
    // Encode once: `frame` must be the WebSocket text frame of "4" + data; it is shared by
    // every WebSocket session it is sent to.
    void send_shared(std::string_view data, const ws::SharedFrame& frame);
    // Closes the session (close packet to the client); on_close follows.
    void close(std::string_view reason = "forced close");

    // For the server.
    // The handshake's GET: answered with the open packet and whatever the upper layer queued.
    void answer_handshake(const std::shared_ptr<net::Exchange>& ex);
    // A request came after the heartbeat deadline, before the timer ran: the session ends
    // (ping timeout) and true is returned.
    bool expire_if_overdue();
    // The server is going away: the session is closed without callbacks (its upper layer is
    // destroyed), so that nothing pending reaches the server afterwards.
    void detach();

  private:
    // How a pending long poll is ended when the session ends.
    enum class PollEnd : std::uint8_t { close_packet, noop, none };
    struct Out {
        char type;
        bool binary;
        std::string data;
    };

    // TransportEvents.
    void on_poll(const std::shared_ptr<net::Exchange>& ex) override;
    void on_post(const std::shared_ptr<net::Exchange>& ex) override;
    void on_upgrade_request(const std::shared_ptr<net::Exchange>& ex) override;
    void on_ws_open(ws::WebSocketConnection& link) override;
    void on_ws_packet(ws::WebSocketConnection& link, const Packet& p) override;
    void on_ws_invalid(ws::WebSocketConnection& link) override;
    void on_ws_close(ws::WebSocketConnection& link) override;

    // The session's own events.
    void on_poll_aborted();
    void on_heartbeat();
    void on_heartbeat_timeout();
    void on_deadline();
    // A packet on the session's transport (a POST, or the upgraded WebSocket). False once the
    // session is closed.
    bool on_packet(const Packet& p);
    // A packet on the probe WebSocket.
    void on_probe_packet(const Packet& p);

    // The one place state_ changes.
    void enter(State next);
    void first_poll();  // the first poll or upgrade request came: no first-poll deadline
    void drop_probe(std::uint16_t code, std::string_view reason);  // probing -> polling
    void upgrade();                                                // probing -> websocket
    void end(std::string_view reason, PollEnd poll_end);           // any -> closed

    void queue(char type, std::string_view data, bool binary);
    void send_ws(char type, std::string_view data, bool binary);
    void schedule_flush();
    void answer_poll(std::string_view single_packet = {});
    void error(const std::shared_ptr<net::Exchange>& ex, int code);
    void arm_heartbeat();
    bool heartbeat_overdue() const;
    void arm_deadline(std::chrono::milliseconds after);
    // Empties out_ and its accounting (and leaves the context's list of queued sessions).
    void clear_out();

    SessionContext& ctx_;
    // What the open packet told the client, kept for the session's life (a reload changes the
    // server's options for new sessions only).
    std::chrono::milliseconds ping_interval_;
    std::chrono::milliseconds ping_timeout_;
    std::size_t max_payload_;
    std::string id_;
    int protocol_;
    State state_;
    boost::asio::ip::tcp::endpoint remote_;
    std::string query_;
    std::string origin_;
    std::unique_ptr<SessionHandler> handler_;
    std::vector<Out> out_;       // packets not yet handed to a transport
    std::size_t out_bytes_ = 0;  // their data + kQueuedOverhead each
    // Our place in ctx_.queued while out_bytes_ > 0.
    std::optional<std::list<std::weak_ptr<Session>>::iterator> queued_at_;
    std::shared_ptr<net::Exchange> poll_;  // the pending long poll
    // The WebSocket: the transport (websocket), the probe (probing), else none. Dropped when the
    // connection reports its close, or when the session drops it.
    std::shared_ptr<ws::WebSocketConnection> ws_;
    bool probe_answered_ = false;  // probing: "3probe" sent, waiting for the upgrade packet
    bool noop_sent_ = false;       // the pending poll was ended with a noop
    bool flush_posted_ = false;
    bool awaiting_pong_ = false;  // v4: ping sent
    bool polled_ = false;         // a long poll or an upgrade request came after the handshake
    boost::asio::steady_timer heartbeat_;
    // The first-poll deadline (polling), then the upgrade deadline (probing).
    boost::asio::steady_timer deadline_;
};

}  // namespace steerchat::eio
