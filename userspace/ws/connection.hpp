// A server-side WebSocket connection after the HTTP upgrade: reads and parses client frames
// (FrameParser), answers pings, runs the close handshake and the idle ping, and writes a bounded
// queue of encode-once SharedFrames with one gather write per loop turn ("corking").
//
// Every connection of a worker belongs to that worker's ConnectionRegistry: the options, the
// counters shown on /metrics, the set of live connections (closed with 1001 on graceful stop) and
// the read buffer, which is shared: a connection waits for readability and then reads into the
// registry's buffer, whose bytes the parser consumes (copying message payloads into its own buffer)
// before the handler returns, so an idle connection holds no read buffer at all.
//
// Threading: one event loop thread, like the rest of a worker.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include <boost/asio/buffer.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>

#include "metrics/metrics.hpp"
#include "tls/stream.hpp"
#include "util/lease.hpp"
#include "ws/frame.hpp"

namespace steerchat::ws {

class WebSocketConnection;

// The application side of a connection. Its lifetime is the connection's. Callbacks run on the
// event loop; they may call send()/close() on the connection.
struct MessageHandler {
    virtual ~MessageHandler() = default;
    // After the upgrade, before any message.
    virtual void on_open(WebSocketConnection&) {}
    // A complete data message (text is valid UTF-8). `payload` is valid during the call only.
    virtual void on_message(WebSocketConnection& conn, Opcode opcode, std::string_view payload) = 0;
    // Exactly once, when the connection is gone: the peer's close code (1005: its Close frame
    // had no code), else the code we sent (protocol error, overflow, server close), else 1006
    // (dropped: EOF, I/O error, ping timeout). No send() after this.
    virtual void on_close(WebSocketConnection&, std::uint16_t /*code*/) {}
};

struct ConnectionOptions {
    std::size_t max_message_size = kDefaultMaxMessageSize;  // larger: close 1009
    std::size_t max_queued_bytes = std::size_t{4} << 20;    // unwritten bytes; over: close 1008
    std::size_t max_queued_frames = 16384;                  // unwritten frames; over: close 1008
    std::chrono::milliseconds ping_interval{30'000};        // silence before we ping
    std::chrono::milliseconds ping_timeout{20'000};         // silence after the ping: drop
    std::chrono::milliseconds close_timeout{2'000};         // close handshake / lingering close
    // false: every frame gets its own write (one send() per frame), the baseline that corking is
    // measured against in BENCHMARKS.md. Never worth it in production.
    bool cork = true;
};

// Per-worker counters (Prometheus: steerchat_ws_*).
// In the worker's slot block (metrics/metrics.hpp), when it has one.
struct Stats {
    metrics::Counter open;             // gauge: connections not yet finished
    metrics::Counter opened;           // connections upgraded
    metrics::Counter messages_in;      // complete data messages received
    metrics::Counter messages_out;     // data frames queued (text, binary, continuation)
    metrics::Counter bytes_in;         // bytes read from sockets
    metrics::Counter bytes_out;        // bytes written to sockets
    metrics::Counter writes;           // gather writes issued
    metrics::Counter queue_overflows;  // closed 1008: send queue over its bound
    metrics::Counter protocol_errors;  // closed 1002/1007/1009 by the parser
    metrics::Counter ping_timeouts;    // dropped: no answer to the idle ping
    metrics::Counter handler_errors;   // closed 1011: the application failed on a message
    // Finished connections by close code (on_close's code): kCloseCodes, then any other.
    metrics::Counter closes[8];
    // Delivered frames (SharedFrame::stamp set): event accepted -> frame written to the socket.
    metrics::LatencyHistogram delivery_latency;
};

// The close codes counted one by one in Stats::closes (the last entry counts every other code).
inline constexpr std::uint16_t kCloseCodes[] = {1000, 1001, 1002, 1005, 1006, 1008, 1011};

// A worker's WebSocket state. Must outlive its connections' handlers (the worker declares it
// before its io_context).
class ConnectionRegistry {
  public:
    // `metrics`: the worker's slot block for the stats (nullptr: kept here).
    explicit ConnectionRegistry(ConnectionOptions options = {}, metrics::Slot* metrics = nullptr);
    ConnectionRegistry(const ConnectionRegistry&) = delete;
    ConnectionRegistry& operator=(const ConnectionRegistry&) = delete;

    const ConnectionOptions& options() const noexcept { return options_; }
    ConnectionOptions& options() noexcept { return options_; }
    Stats& stats() noexcept { return *stats_; }
    const Stats& stats() const noexcept { return *stats_; }
    // Connections not yet finished.
    std::size_t size() const noexcept { return live_.size(); }

    // Graceful stop: every live connection starts the close handshake with `code` (1001), and so
    // does every connection started from now on. `on_empty` runs whenever the last live
    // connection finishes.
    void close_all(std::uint16_t code, std::string_view reason);
    bool closing_all() const noexcept { return closing_all_; }
    void set_on_empty(std::function<void()> f) { on_empty_ = std::move(f); }

  private:
    friend class WebSocketConnection;
    void add(WebSocketConnection* c);
    void remove(WebSocketConnection* c);

    ConnectionOptions options_;
    metrics::Cell<Stats> stats_;
    std::unordered_set<WebSocketConnection*> live_;
    std::vector<std::uint8_t> read_buffer_;
    std::function<void()> on_empty_;
    bool closing_all_ = false;
    std::uint16_t close_all_code_ = close_code::going_away;
    std::string close_all_reason_;
};

class WebSocketConnection : public std::enable_shared_from_this<WebSocketConnection> {
  public:
    enum class State : std::uint8_t {
        open,      // messages flow
        closing,   // our Close frame is queued; waiting for it to be written and/or the peer's
        draining,  // our Close is written and our side shut down: read until EOF (bounded)
        finished,  // socket closed, on_close delivered
    };

    // The stream must be connected, its TLS handshake (if any) done (TCP_NODELAY is the
    // caller's business). Options default to the registry's.
    static std::shared_ptr<WebSocketConnection> create(tls::Stream stream,
                                                       ConnectionRegistry& registry,
                                                       std::unique_ptr<MessageHandler> handler);
    static std::shared_ptr<WebSocketConnection> create(tls::Stream stream,
                                                       ConnectionRegistry& registry,
                                                       std::unique_ptr<MessageHandler> handler,
                                                       const ConnectionOptions& options);
    ~WebSocketConnection();
    WebSocketConnection(const WebSocketConnection&) = delete;
    WebSocketConnection& operator=(const WebSocketConnection&) = delete;

    // Calls on_open, parses `initial` (bytes the HTTP layer read past the upgrade request) and
    // starts reading.
    void start(ByteView initial = {});

    // Queues an encoded frame (the same SharedFrame may be queued on any number of connections).
    // The first send of a loop turn posts one flush; everything queued by then goes out in one
    // gather write. Returns false if the frame was not queued: the connection is closing, or the
    // queue went over its bound (the connection is then closed with 1008).
    bool send(SharedFrame frame);
    bool send_text(std::string_view text) { return send(SharedFrame::text(text)); }
    bool send_binary(ByteView data) { return send(SharedFrame::binary(data)); }

    // Starts the close handshake: queues a Close frame, waits (close_timeout) for the peer's.
    void close(std::uint16_t code = close_code::normal, std::string_view reason = {});

    // Holds `lease` (e.g. the HTTP edge's per-address connection slot) until the connection
    // finishes: released when its socket is closed, not when the last reference goes.
    void hold(Lease lease) noexcept { lease_ = std::move(lease); }

    State state() const noexcept { return state_; }
    bool is_open() const noexcept { return state_ == State::open; }
    MessageHandler& handler() noexcept { return *handler_; }
    const boost::asio::ip::tcp::endpoint& remote_endpoint() const noexcept { return remote_; }
    // Bytes and frames queued or being written.
    std::size_t queued_bytes() const noexcept { return queued_bytes_; }
    // Bytes the parser holds for reassembling messages.
    std::size_t message_buffer_bytes() const noexcept { return parser_.message_capacity(); }
    std::size_t queued_frames() const noexcept { return pending_.size() + inflight_.size(); }
    bool write_in_flight() const noexcept { return writing_; }
    // Gather writes issued by this connection (for tests of the corking).
    std::uint64_t writes() const noexcept { return writes_; }

  private:
    struct Private {};

  public:
    // Use create().
    WebSocketConnection(Private, tls::Stream stream, ConnectionRegistry& registry,
                        std::unique_ptr<MessageHandler> handler, const ConnectionOptions& options);

  private:
    using Clock = std::chrono::steady_clock;

    void wait_readable();
    void on_readable(const boost::system::error_code& ec);
    void process(ByteView data);
    void handle_event(const Event& ev);
    void start_closing(std::uint16_t code, std::string_view reason, bool wait_for_peer);
    bool enqueue(SharedFrame&& frame);
    void schedule_flush();
    void flush();
    void on_written(const boost::system::error_code& ec, std::size_t n);
    void maybe_shutdown();
    void arm_timer(Clock::time_point deadline);
    void on_timer(const boost::system::error_code& ec);
    void finish();

    tls::Stream stream_;
    boost::asio::steady_timer timer_;
    boost::asio::ip::tcp::endpoint remote_;
    ConnectionRegistry& registry_;
    std::unique_ptr<MessageHandler> handler_;
    ConnectionOptions options_;
    FrameParser parser_;
    State state_ = State::open;

    // Write queue: `pending_` fills while `inflight_` is being written; they swap on flush. Both
    // keep their capacity, as does `iov_`, so steady state allocates nothing per message.
    std::vector<SharedFrame> pending_;
    std::vector<SharedFrame> inflight_;
    std::vector<boost::asio::const_buffer> iov_;
    std::size_t queued_bytes_ = 0;
    std::size_t pending_bytes_ = 0;
    bool flush_posted_ = false;
    bool writing_ = false;
    std::uint64_t writes_ = 0;

    // Close handshake.
    bool close_queued_ = false;   // our Close frame is in the queue (it is the last frame)
    bool close_written_ = false;  // ... and has been written
    bool peer_closed_ = false;    // the peer's Close arrived, or we do not wait for it
    std::uint16_t close_code_ = close_code::abnormal;  // reported to on_close

    // Idle ping.
    Clock::time_point last_rx_;
    bool ping_outstanding_ = false;
    bool reading_ = false;
    bool large_message_seen_ = false;  // free the parser's buffer once the message is handled
    bool started_ = false;
    Lease lease_;
};

}  // namespace steerchat::ws
