// steerchat-bench: one client WebSocket (RFC 6455) over Asio, the base of every scenario's
// client. It binds its own source address, sends the upgrade, checks the 101 and its
// Sec-WebSocket-Accept, parses the server's frames (answering pings, reassembling fragments) and
// writes masked frames. Subclasses see the opening, each text message and the end.
//
// The hot path does not allocate: one read buffer per connection and two swapped write buffers
// whose capacity is reused. A client object can be opened again after it closed (connect reuses
// a few objects for many connections): every completion handler carries the generation of the
// connection it was started for and is ignored once that connection is gone.
//
// With --tls every connection is TLS (wss://): the client's TCP socket lives in a fresh
// asio::ssl::stream per connection (shared with its completion handlers, so that a dropped
// connection's pending operations finish on the stream they started on), the handshake comes
// before the upgrade, and with --resume the client offers the session of its previous connection.
//
// Threading: a client belongs to the io thread that runs its ClientEnv's io_context.
#pragma once

#include <openssl/ssl.h>

#include <array>
#include <atomic>
#include <boost/asio/ssl.hpp>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "bench_common.hpp"
#include "ws/frame.hpp"

namespace steerchat::bench {

// The client side of TLS, one for the whole run (SSL_CTX is shared by the io threads and
// survives the idle scenario's fork).
struct TlsClient {
    // ca_file empty: no verification of the server's certificate; else it must chain to that CA
    // and name `host` (an IP address or a DNS name). ALPN http/1.1, TLS 1.2 and 1.3.
    TlsClient(const std::string& ca_file, const std::string& host, bool resume);
    asio::ssl::context ctx;
    std::string host;
    bool verify;
    bool resume;  // offer the session of the client object's previous connection
};
// Set once in main before any ClientEnv exists (nullptr: plain TCP).
void set_client_tls(std::unique_ptr<TlsClient> tls);
TlsClient* client_tls() noexcept;

// What the clients of one io thread share.
struct ClientEnv {
    ClientEnv(asio::io_context& io, const tcp::endpoint& target, std::string_view path,
              std::size_t rbuf_size, std::uint64_t seed);

    std::uint64_t next_random() noexcept {  // xorshift64
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        return rng;
    }

    asio::io_context& io;
    tcp::endpoint target;
    std::string request_head;  // the upgrade request up to "Sec-WebSocket-Key: "
    std::size_t rbuf_size;     // initial read buffer per connection
    std::uint64_t rng;
    TlsClient* tls;  // client_tls() at construction
};

class WsClient {
  public:
    enum class Phase : std::uint8_t { idle, connecting, upgrading, open, closing, closed };

    explicit WsClient(ClientEnv& env) : env_(env), sock_(env.io) {}
    virtual ~WsClient() = default;
    WsClient(const WsClient&) = delete;
    WsClient& operator=(const WsClient&) = delete;

    // Starts a new connection (the client must be idle or closed). `source_v4` (host order) is
    // bound with IP_BIND_ADDRESS_NO_PORT, so the port is chosen per source address at connect
    // time; it is ignored for an IPv6 target.
    void open(std::uint32_t source_v4);
    // Queues one masked frame and starts writing if no write is in flight.
    void send(ws::Opcode op, ws::ByteView payload);
    void send_text(std::string_view s) { send(ws::Opcode::text, ws::as_bytes(s)); }
    // Bytes queued behind the write in flight.
    std::size_t queued() const noexcept { return wq_.size(); }
    // Sends a Close (1000) and waits for the server's Close (or EOF); then on_closed(). A client
    // that is not open yet is dropped instead (no callback).
    void close();
    // Ends the connection at once, no callback. rst: SO_LINGER 0, so the kernel sends a RST and
    // keeps no TIME_WAIT; otherwise a normal close() of the socket (FIN).
    void drop(bool rst);

    Phase phase() const noexcept { return phase_; }
    bool is_open() const noexcept { return phase_ == Phase::open; }
    std::int64_t opened_at() const noexcept { return opened_at_; }  // now_ns() in open()
    // TLS: the server resumed the session this connection offered (valid once open).
    bool tls_resumed() const noexcept { return tls_resumed_; }

  protected:
    // The 101 arrived and checked out. May send, close, drop or even open again.
    virtual void on_open(std::int64_t now) = 0;
    // A text message. Returns false if it ended the connection (fail/drop/open).
    virtual bool on_text(std::string_view payload, std::int64_t now) = 0;
    // The connection failed (connect, upgrade, a protocol error, the server closed or reset it)
    // while connecting, upgrading or open. `was`: the phase it failed in.
    virtual void on_failed(std::string_view what, Phase was) = 0;
    // A close() completed (or the connection ended while closing).
    virtual void on_closed() {}

    // Ends the connection and reports on_failed() (or on_closed() while closing).
    void fail(std::string_view what);

    ClientEnv& env_;

  private:
    using TlsStream = asio::ssl::stream<tcp::socket>;
    struct SessionFree {
        void operator()(SSL_SESSION* s) const noexcept { SSL_SESSION_free(s); }
    };

    tcp::socket& sock() noexcept { return tls_ ? tls_->next_layer() : sock_; }
    template <class Buffers, class Handler>
    void read_some(const Buffers& b, Handler&& h);
    template <class Buffers, class Handler>
    void write_all(const Buffers& b, Handler&& h);
    void on_connected(const error_code& ec);
    void on_secured(const error_code& ec);
    void send_upgrade();
    void read_upgrade();
    bool check_upgrade(std::string_view head);
    void read_frames();
    bool parse_frames(std::int64_t now);  // false when the connection ended meanwhile
    void flush();
    void finish();  // closes the socket, bumps the generation

    tcp::socket sock_;                // plain connections
    std::shared_ptr<TlsStream> tls_;  // TLS: this connection's stream (owns its socket)
    std::unique_ptr<SSL_SESSION, SessionFree> session_;  // --resume: offered on the next open()
    bool tls_resumed_ = false;
    Phase phase_ = Phase::idle;
    std::uint32_t gen_ = 0;
    std::int64_t opened_at_ = 0;
    std::array<char, 24> key_{};  // Sec-WebSocket-Key: base64 of 16 bytes

    std::vector<std::uint8_t> rbuf_;
    std::size_t rlen_ = 0;
    std::vector<std::uint8_t> fragments_;  // a fragmented message (rare)
    ws::Opcode frag_op_ = ws::Opcode::text;
    bool in_fragments_ = false;

    std::vector<std::uint8_t> wq_;    // frames queued while a write is in flight
    std::vector<std::uint8_t> wfly_;  // the write in flight
    bool writing_ = false;
};

// A client of broadcast, echo or idle: client `id` binds 127.1.0.1 + id, holds one connection for
// the run and counts once in `closed` when it ends (closed, failed or dropped).
class SessionClient : public WsClient {
  public:
    SessionClient(ClientEnv& env, std::uint32_t id, std::atomic<std::uint64_t>& closed)
        : WsClient(env), id_(id), closed_(closed) {}
    void start() { open(kClientSourceBase + id_); }
    // The end of the run: a Close handshake if open (and `handshake`), else drops the connection.
    void begin_close(bool handshake = true);

  protected:
    void on_closed() override { ended(); }
    // Counts the client in `closed` (once).
    void ended();

    const std::uint32_t id_;

  private:
    std::atomic<std::uint64_t>& closed_;
    bool ended_ = false;
};

}  // namespace steerchat::bench
