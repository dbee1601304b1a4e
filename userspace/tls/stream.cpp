#include "tls/stream.hpp"

#include <sys/socket.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include <cerrno>
#include <new>
#include <vector>

#include <boost/asio/ssl/error.hpp>

#include "tls/context.hpp"

namespace asio = boost::asio;

namespace steerchat::tls {

Stream::Stream(tcp::socket socket) noexcept : socket_(std::move(socket)) {}

Stream::Stream(tcp::socket socket, const ServerContext& context) : socket_(std::move(socket)) {
    error_code ec;
    socket_.non_blocking(true, ec);
    ssl_ = SSL_new(context.native());
    if (!ssl_) throw std::bad_alloc();
    // A client's FIN without close_notify is an ordinary EOF (browsers often do that; HTTP/1.1
    // and WebSocket frame their own messages, so a truncation cannot go unnoticed).
    SSL_set_options(ssl_, SSL_OP_IGNORE_UNEXPECTED_EOF);
    SSL_set_fd(ssl_, socket_.native_handle());
    SSL_set_accept_state(ssl_);
}

Stream::Stream(Stream&& other) noexcept
    : socket_(std::move(other.socket_)),
      ssl_(std::exchange(other.ssl_, nullptr)),
      last_want_write_(other.last_want_write_),
      read_wants_write_(other.read_wants_write_),
      read_blocked_(other.read_blocked_),
      shut_down_(other.shut_down_) {}

Stream& Stream::operator=(Stream&& other) noexcept {
    if (this != &other) {
        free_ssl();
        socket_ = std::move(other.socket_);
        ssl_ = std::exchange(other.ssl_, nullptr);
        last_want_write_ = other.last_want_write_;
        read_wants_write_ = other.read_wants_write_;
        read_blocked_ = other.read_blocked_;
        shut_down_ = other.shut_down_;
    }
    return *this;
}

Stream::~Stream() {
    free_ssl();
}

void Stream::free_ssl() noexcept {
    if (!ssl_) return;
    // A connection that ends without close_notify (the client reset it, closed its socket, or
    // timed out) keeps its session resumable: OpenSSL would otherwise drop it from the worker's
    // session cache in SSL_free, and the client's next handshake would be a full one. TLS 1.1 and
    // later allow resuming after such an end (RFC 4346 7.2.1; nginx does the same).
    SSL_set_shutdown(ssl_, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
    SSL_free(ssl_);
    ssl_ = nullptr;
}

std::uint8_t* Stream::scratch_buffer() {
    // One per thread (a worker has one): a write's bytes live here only during the call.
    thread_local std::vector<std::uint8_t> scratch(kCoalesce);
    return scratch.data();
}

bool Stream::has_buffered_input() const noexcept {
    return ssl_ && !read_blocked_ && SSL_has_pending(ssl_) == 1;
}

void Stream::fail(int ret, error_code& ec) {
    const int err = SSL_get_error(ssl_, ret);
    switch (err) {
        case SSL_ERROR_WANT_READ:
            last_want_write_ = false;
            ec = asio::error::would_block;
            return;
        case SSL_ERROR_WANT_WRITE:
            last_want_write_ = true;
            ec = asio::error::would_block;
            return;
        case SSL_ERROR_ZERO_RETURN:
            ec = asio::error::eof;
            return;
        case SSL_ERROR_SYSCALL:
            if (const unsigned long e = ERR_get_error())
                ec = error_code(static_cast<int>(e), asio::error::get_ssl_category());
            else if (errno != 0)
                ec = error_code(errno, boost::system::system_category());
            else
                ec = asio::error::eof;
            ERR_clear_error();
            return;
        default: {
            const unsigned long e = ERR_get_error();
            ec = e ? error_code(static_cast<int>(e), asio::error::get_ssl_category())
                   : error_code(asio::error::fault);
            ERR_clear_error();
            return;
        }
    }
}

std::size_t Stream::read_some(void* data, std::size_t size, error_code& ec) {
    ec = {};
    if (!ssl_) return socket_.read_some(asio::buffer(data, size), ec);
    if (size == 0) return 0;
    ERR_clear_error();
    errno = 0;
    std::size_t n = 0;
    const int ret = SSL_read_ex(ssl_, data, size, &n);
    read_blocked_ = false;
    if (ret == 1) return n;
    fail(ret, ec);
    read_wants_write_ = last_want_write_;
    read_blocked_ = ec == asio::error::would_block;
    return 0;
}

std::size_t Stream::tls_write(const void* data, std::size_t size, error_code& ec) {
    ec = {};
    // Partial-write mode: each SSL_write_ex writes one record (at most 16 KiB of plaintext)
    // with one send(); loop over the records of this piece until done or the socket is full.
    std::size_t total = 0;
    while (total < size) {
        ERR_clear_error();
        errno = 0;
        std::size_t n = 0;
        const int ret =
            SSL_write_ex(ssl_, static_cast<const std::uint8_t*>(data) + total, size - total, &n);
        if (ret != 1) {
            fail(ret, ec);
            // Bytes already written count: the caller's next attempt starts after them (a
            // record interrupted by WANT_WRITE is retried with the same bytes, as it must be).
            if (total > 0 && ec == asio::error::would_block) ec = {};
            return total;
        }
        total += n;
    }
    return total;
}

void Stream::handshake_step(error_code& ec) {
    ec = {};
    if (!ssl_) return;
    ERR_clear_error();
    errno = 0;
    const int ret = SSL_do_handshake(ssl_);
    if (ret == 1) return;
    fail(ret, ec);
}

bool Stream::is_plaintext_http(const error_code& ec) noexcept {
    if (ec.category() != asio::error::get_ssl_category()) return false;
    const auto reason = ERR_GET_REASON(static_cast<unsigned long>(ec.value()));
    return reason == SSL_R_HTTP_REQUEST || reason == SSL_R_HTTPS_PROXY_REQUEST;
}

bool Stream::resumed() const noexcept {
    return ssl_ && SSL_session_reused(ssl_) == 1;
}

const char* Stream::version() const noexcept {
    return ssl_ ? SSL_get_version(ssl_) : "";
}

bool Stream::peer_gone() {
    if (!ssl_) {
        char c;
        const auto n = ::recv(socket_.native_handle(), &c, 1, MSG_PEEK | MSG_DONTWAIT);
        return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
    }
    if (SSL_pending(ssl_) > 0) return false;
    ERR_clear_error();
    errno = 0;
    char c;
    std::size_t n = 0;
    const int ret = SSL_peek_ex(ssl_, &c, 1, &n);
    if (ret == 1) return false;
    error_code ec;
    fail(ret, ec);
    return ec != asio::error::would_block;
}

void Stream::shutdown_send(error_code& ec) {
    ec = {};
    if (ssl_ && !shut_down_ && SSL_is_init_finished(ssl_)) {
        shut_down_ = true;
        ERR_clear_error();
        (void)SSL_shutdown(ssl_);  // queues and tries to send close_notify; never waits
        ERR_clear_error();
    }
    socket_.shutdown(tcp::socket::shutdown_send, ec);
}

void Stream::close(error_code& ec) {
    socket_.close(ec);
}

}  // namespace steerchat::tls
