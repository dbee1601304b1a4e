// The byte stream of one client connection: a connected TCP socket, plain or with TLS on it.
// The HTTP edge (Beast's parser and serializer) and WebSocket connections use it as an Asio
// AsyncReadStream/AsyncWriteStream; nothing above it knows whether TLS is there.
//
// TLS is OpenSSL bound to the socket's descriptor (no BIO pair, no second copy of the bytes),
// driven by readiness: an operation tries SSL_read/SSL_write/SSL_accept on the non-blocking
// socket, and on WANT_READ/WANT_WRITE waits for the socket to become readable/writable and
// tries again. A gather write is coalesced (up to kCoalesce bytes) into one SSL_write, so the
// frames a WebSocket connection flushes in one loop turn become as few TLS records as their
// size allows (one per 16 KiB of plaintext), not one record per frame.
//
// Threading: one event loop thread. Operations must not overlap on one direction (one read, one
// write at a time, as for any Asio stream).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <utility>

#include <boost/asio/async_result.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/compose.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/write.hpp>

using SSL = struct ssl_st;

namespace steerchat::tls {

class ServerContext;

class Stream {
  public:
    using tcp = boost::asio::ip::tcp;
    using executor_type = tcp::socket::executor_type;
    using error_code = boost::system::error_code;

    // Bytes of a gather write copied into one SSL_write (four full records).
    static constexpr std::size_t kCoalesce = 64 * 1024;

    // A plain stream (no TLS).
    Stream(tcp::socket
               socket) noexcept;  // NOLINT(google-explicit-constructor): a plain socket is a stream
    // A server-side TLS stream on `socket`, handshake not done yet (async_handshake). Makes the
    // socket non-blocking. Throws std::bad_alloc if OpenSSL cannot make the connection object.
    Stream(tcp::socket socket, const ServerContext& context);
    Stream(Stream&& other) noexcept;
    Stream& operator=(Stream&& other) noexcept;
    ~Stream();

    executor_type get_executor() noexcept { return socket_.get_executor(); }
    tcp::socket& socket() noexcept { return socket_; }
    const tcp::socket& socket() const noexcept { return socket_; }
    bool is_tls() const noexcept { return ssl_ != nullptr; }
    SSL* native_handle() const noexcept { return ssl_; }

    // Non-blocking: would_block when the socket has to become ready first (for reading, or for
    // writing: TLS may need to write while reading, read_wants_write()). EOF: asio::error::eof (a
    // TLS close_notify, or the peer's FIN). TLS errors are in Asio's ssl category (value: OpenSSL's
    // packed error).
    template <class MutableBuffers>
    std::size_t read_some(const MutableBuffers& buffers, error_code& ec) {
        const auto b = first_buffer(buffers);
        return read_some(b.data(), b.size(), ec);
    }
    template <class ConstBuffers>
    std::size_t write_some(const ConstBuffers& buffers, error_code& ec) {
        if (!ssl_) return socket_.write_some(buffers, ec);
        std::size_t n = 0;
        const void* data = coalesce(buffers, 0, n);
        return tls_write(data, n, ec);
    }
    // The last read that would block needs the socket writable (else readable).
    bool read_wants_write() const noexcept { return read_wants_write_; }
    // TLS: input already read from the socket and not yet consumed (decrypted plaintext, or
    // whole records read ahead), which no socket readiness will announce. False after a read
    // that would block (what is buffered then is an incomplete record).
    bool has_buffered_input() const noexcept;

    // Waits until read_some may make progress: at once (posted) if input is buffered, else for
    // the readiness the last attempt asked for.
    template <class Handler>
    void async_wait_readable(Handler&& handler) {
        if (has_buffered_input()) {
            boost::asio::post(socket_.get_executor(),
                              [h = std::forward<Handler>(handler)]() mutable { h(error_code{}); });
            return;
        }
        socket_.async_wait(read_wants_write_ ? tcp::socket::wait_write : tcp::socket::wait_read,
                           std::forward<Handler>(handler));
    }

    // Asio's AsyncReadStream / AsyncWriteStream (Beast's http::async_read and async_write,
    // asio::async_write). The handler never runs inside the initiating call.
    template <class MutableBuffers, class Token>
    auto async_read_some(const MutableBuffers& buffers, Token&& token) {
        if (!ssl_) return socket_.async_read_some(buffers, std::forward<Token>(token));
        return boost::asio::async_compose<Token, void(error_code, std::size_t)>(
            Op{this, [buffers](Stream& s, error_code& ec) { return s.read_some(buffers, ec); }},
            token, socket_);
    }
    template <class ConstBuffers, class Token>
    auto async_write_some(const ConstBuffers& buffers, Token&& token) {
        if (!ssl_) return socket_.async_write_some(buffers, std::forward<Token>(token));
        return boost::asio::async_compose<Token, void(error_code, std::size_t)>(
            Op{this, [buffers](Stream& s, error_code& ec) { return s.write_some(buffers, ec); }},
            token, socket_);
    }
    // Writes all of `buffers` (a gather list that must stay valid until the handler runs):
    // plain, asio::async_write on the socket (one writev per call, as many as the kernel
    // takes); TLS, kCoalesce bytes at a time into one SSL_write each, so a gather list of many
    // small frames becomes records of 16 KiB (asio::async_write would hand a stream only 16
    // buffers per call: a record per 16 frames). Completes with (error_code, bytes written).
    template <class ConstBuffers, class Token>
    auto async_write_all(const ConstBuffers& buffers, Token&& token) {
        if (!ssl_) return boost::asio::async_write(socket_, buffers, std::forward<Token>(token));
        const std::size_t total = boost::asio::buffer_size(buffers);
        return boost::asio::async_compose<Token, void(error_code, std::size_t)>(
            Op{this,
               [buffers, total, written = std::size_t{0}](Stream& s, error_code& ec) mutable {
                   while (written < total) {
                       std::size_t n = 0;
                       const void* data = s.coalesce(buffers, written, n);
                       written += s.tls_write(data, n, ec);
                       if (ec) return written;
                   }
                   return written;
               }},
            token, socket_);
    }

    // The server side of the TLS handshake (a plain stream completes at once). Completes with
    // (error_code, 0).
    template <class Token>
    auto async_handshake(Token&& token) {
        return boost::asio::async_compose<Token, void(error_code, std::size_t)>(
            Op{this,
               [](Stream& s, error_code& ec) {
                   s.handshake_step(ec);
                   return std::size_t{0};
               }},
            token, socket_);
    }

    // TLS: the handshake failed because the client spoke plain HTTP to the TLS port.
    static bool is_plaintext_http(const error_code& ec) noexcept;
    // TLS: after the handshake, whether the session was resumed, and the protocol version
    // ("TLSv1.3") and ALPN protocol chosen (empty if none).
    bool resumed() const noexcept;
    const char* version() const noexcept;

    // The client has closed its side (EOF, reset or a TLS close_notify); false while it may
    // still send (bytes pending, or nothing yet). Does not block; consumes nothing of the data.
    bool peer_gone();
    // Our side is done sending: a TLS close_notify (best effort, never blocks), then a TCP FIN.
    void shutdown_send(error_code& ec);
    void close(error_code& ec);

  private:
    void free_ssl() noexcept;  // SSL_free, the session kept resumable

    // Tries `attempt` now and after each readiness it asks for; completes through a post when
    // it finishes at once, so a handler never runs inside its initiating call.
    template <class Attempt>
    struct Op {
        Stream* s;
        Attempt attempt;
        bool waited = false;
        bool done = false;
        error_code result_ec{};
        std::size_t result_n = 0;

        template <class Self>
        void operator()(Self& self, error_code ec = {}) {
            if (done) return self.complete(result_ec, result_n);
            if (ec) return self.complete(ec, 0);
            error_code e;
            const std::size_t n = attempt(*s, e);
            if (e == boost::asio::error::would_block) {
                waited = true;
                s->socket_.async_wait(
                    s->last_want_write_ ? tcp::socket::wait_write : tcp::socket::wait_read,
                    std::move(self));
                return;
            }
            if (waited) return self.complete(e, n);
            done = true;
            result_ec = e;
            result_n = n;
            boost::asio::post(s->socket_.get_executor(), std::move(self));
        }
    };
    // For compilers without class template argument deduction of aggregates (clang before 17,
    // which builds the fuzzers).
    template <class Attempt>
    Op(Stream*, Attempt) -> Op<Attempt>;

    template <class Buffers>
    static boost::asio::mutable_buffer first_buffer(const Buffers& buffers) {
        for (auto it = boost::asio::buffer_sequence_begin(buffers);
             it != boost::asio::buffer_sequence_end(buffers); ++it) {
            boost::asio::mutable_buffer b(*it);
            if (b.size() > 0) return b;
        }
        return {};
    }
    // The bytes of `buffers` from byte `offset` on, as one piece of up to kCoalesce bytes: a
    // buffer's own memory if the piece lies within one buffer, else a copy in a per-thread
    // scratch buffer (rebuilt the same on a retry, which SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER
    // allows).
    template <class Buffers>
    const void* coalesce(const Buffers& buffers, std::size_t offset, std::size_t& n) {
        auto it = boost::asio::buffer_sequence_begin(buffers);
        const auto end = boost::asio::buffer_sequence_end(buffers);
        for (; it != end; ++it) {  // the buffer holding byte `offset`
            const std::size_t size = boost::asio::const_buffer(*it).size();
            if (offset < size) break;
            offset -= size;
        }
        n = 0;
        if (it == end) return nullptr;
        boost::asio::const_buffer first(*it);
        first += offset;
        auto next = it;
        ++next;
        if (first.size() >= kCoalesce || next == end) {
            n = std::min(first.size(), kCoalesce);
            return first.data();
        }
        auto* scratch = scratch_buffer();
        std::memcpy(scratch, first.data(), first.size());
        n = first.size();
        for (it = next; it != end && n < kCoalesce; ++it) {
            boost::asio::const_buffer b(*it);
            const std::size_t take = std::min(b.size(), kCoalesce - n);
            std::memcpy(scratch + n, b.data(), take);
            n += take;
        }
        return scratch;
    }
    static std::uint8_t* scratch_buffer();
    std::size_t read_some(void* data, std::size_t size, error_code& ec);
    std::size_t tls_write(const void* data, std::size_t size, error_code& ec);
    void handshake_step(error_code& ec);
    // Maps the result of an SSL_* call that failed (ret <= 0) to an error code.
    void fail(int ret, error_code& ec);

    tcp::socket socket_;
    SSL* ssl_ = nullptr;
    bool last_want_write_ = false;   // the last TLS call that would block wants writability
    bool read_wants_write_ = false;  // ... and the last read
    bool read_blocked_ = false;      // the last read would block
    bool shut_down_ = false;
};

}  // namespace steerchat::tls
