#include "ws/connection.hpp"

#include <exception>
#include <utility>

#include <boost/asio/post.hpp>
#include <boost/asio/write.hpp>

#include "util/log.hpp"

namespace asio = boost::asio;
using asio::ip::tcp;

namespace steerchat::ws {

namespace {

constexpr std::size_t kReadBufferSize = 64 * 1024;
// Reads per readiness notification before yielding to other connections.
constexpr int kReadsPerWakeup = 4;
// A connection keeps a message buffer up to this size between messages; a larger one is freed
// after its message, so one big message does not pin its memory on an idle connection.
constexpr std::size_t kKeepMessageBuffer = 64 * 1024;

// A view of the connection's iovec array as a ConstBufferSequence: copied into the write
// operation by value (two pointers) instead of copying a vector.
struct BufferSpan {
    const asio::const_buffer* first;
    const asio::const_buffer* last;
    const asio::const_buffer* begin() const noexcept { return first; }
    const asio::const_buffer* end() const noexcept { return last; }
};

bool is_data_frame(const SharedFrame& f) noexcept {
    return f.size() > 0 && (f.data()[0] & 0x08) == 0;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// ConnectionRegistry

ConnectionRegistry::ConnectionRegistry(ConnectionOptions options, metrics::Slot* metrics)
    : options_(options), stats_(metrics), read_buffer_(kReadBufferSize) {}

void ConnectionRegistry::add(WebSocketConnection* c) {
    live_.insert(c);
    ++stats_->open;
    ++stats_->opened;
}

void ConnectionRegistry::remove(WebSocketConnection* c) {
    if (live_.erase(c) == 0) return;
    --stats_->open;
    if (live_.empty() && on_empty_) on_empty_();
}

void ConnectionRegistry::close_all(std::uint16_t code, std::string_view reason) {
    closing_all_ = true;
    close_all_code_ = code;
    close_all_reason_ = std::string(reason);
    // Copy: closing may finish a connection, which edits the set.
    std::vector<WebSocketConnection*> all(live_.begin(), live_.end());
    for (auto* c : all)
        if (live_.contains(c)) c->close(code, reason);
}

// ---------------------------------------------------------------------------------------------
// WebSocketConnection

std::shared_ptr<WebSocketConnection> WebSocketConnection::create(
    tls::Stream stream, ConnectionRegistry& registry, std::unique_ptr<MessageHandler> handler) {
    return create(std::move(stream), registry, std::move(handler), registry.options());
}

std::shared_ptr<WebSocketConnection> WebSocketConnection::create(
    tls::Stream stream, ConnectionRegistry& registry, std::unique_ptr<MessageHandler> handler,
    const ConnectionOptions& options) {
    return std::make_shared<WebSocketConnection>(Private{}, std::move(stream), registry,
                                                 std::move(handler), options);
}

WebSocketConnection::WebSocketConnection(Private, tls::Stream stream, ConnectionRegistry& registry,
                                         std::unique_ptr<MessageHandler> handler,
                                         const ConnectionOptions& options)
    : stream_(std::move(stream)),
      timer_(stream_.get_executor()),
      registry_(registry),
      handler_(std::move(handler)),
      options_(options),
      parser_(ParserOptions{options.max_message_size}) {
    boost::system::error_code ec;
    remote_ = stream_.socket().remote_endpoint(ec);
    registry_.add(this);
}

WebSocketConnection::~WebSocketConnection() {
    // Normally finished already; if the event loop is torn down first, leave the registry quietly
    // (no on_close, no on_empty: the application may be gone).
    if (state_ != State::finished && registry_.live_.erase(this) != 0) --registry_.stats_->open;
}

void WebSocketConnection::start(ByteView initial) {
    if (started_) return;
    started_ = true;
    last_rx_ = Clock::now();
    boost::system::error_code ec;
    stream_.socket().non_blocking(true, ec);
    if (ec) {
        finish();
        return;
    }
    handler_->on_open(*this);
    if (registry_.closing_all()) close(registry_.close_all_code_, registry_.close_all_reason_);
    if (!initial.empty() && state_ != State::finished) {
        registry_.stats_->bytes_in += initial.size();
        process(initial);
    }
    if (state_ == State::finished) return;
    if (state_ == State::open) arm_timer(last_rx_ + options_.ping_interval);
    wait_readable();
}

// ---------------------------------------------------------------------------------------------
// Reading

void WebSocketConnection::wait_readable() {
    if (reading_ || state_ == State::finished) return;
    reading_ = true;
    // TLS: decrypted bytes may wait in the stream, which no readiness would announce.
    stream_.async_wait_readable([self = shared_from_this()](const boost::system::error_code& ec) {
        self->on_readable(ec);
    });
}

void WebSocketConnection::on_readable(const boost::system::error_code& ec) {
    reading_ = false;
    if (state_ == State::finished) return;
    if (ec) return finish();
    auto& buf = registry_.read_buffer_;
    for (int i = 0; i < kReadsPerWakeup; ++i) {
        boost::system::error_code rec;
        const std::size_t n = stream_.read_some(asio::buffer(buf), rec);
        if (rec == asio::error::would_block || rec == asio::error::try_again) break;
        if (rec) return finish();  // EOF or reset: on_close gets close_code_ (1006 if open)
        registry_.stats_->bytes_in += n;
        last_rx_ = Clock::now();
        ping_outstanding_ = false;
        if (state_ != State::draining) process(ByteView(buf.data(), n));
        if (state_ == State::finished) return;
        // Plain: the socket is most likely empty now. TLS reads a record at a time: go on until
        // it would block (then the socket is empty, and its next readiness will come).
        if (!stream_.is_tls() && n < buf.size()) break;
    }
    wait_readable();
}

void WebSocketConnection::process(ByteView data) {
    while (!data.empty()) {
        if (state_ != State::open && state_ != State::closing) return;
        if (parser_.closed() || parser_.failed()) return;  // nothing after a Close or an error
        Event ev;
        const std::size_t n = parser_.feed(data, ev);
        data = data.subspan(n);
        if (ev.kind != EventKind::none) handle_event(ev);
    }
    // After a large message, give its buffer back: an idle connection keeps no message memory.
    if (parser_.pending_message_size() == 0 && large_message_seen_) {
        parser_.shrink();
        large_message_seen_ = false;
    }
}

void WebSocketConnection::handle_event(const Event& ev) {
    switch (ev.kind) {
        case EventKind::none:
        case EventKind::pong:  // any input already counts as a sign of life
            return;
        case EventKind::message:
            if (state_ != State::open) return;  // we are closing: data is discarded
            ++registry_.stats_->messages_in;
            large_message_seen_ |= ev.payload.size() > kKeepMessageBuffer;
            try {
                handler_->on_message(*this, ev.opcode, ev.text());
            } catch (const std::exception& e) {
                // A bug the message found: this connection ends, the worker and everyone else
                // go on.
                ++registry_.stats_->handler_errors;
                log::debug("closing a WebSocket (1011): its message failed: {}", e.what());
                if (state_ == State::open) close(close_code::internal_error, "internal error");
            }
            return;
        case EventKind::ping:
            if (state_ == State::open) send(SharedFrame::make(Opcode::pong, ev.payload));
            return;
        case EventKind::close:
            close_code_ = ev.code;
            if (state_ == State::open) {
                // Echo the peer's code (1005: an empty Close), then close our side once written.
                start_closing(ev.code, {}, false);
            } else {
                peer_closed_ = true;
                maybe_shutdown();
            }
            return;
        case EventKind::error:
            ++registry_.stats_->protocol_errors;
            if (state_ == State::open) {
                start_closing(ev.code, ev.what, false);
            } else {
                peer_closed_ = true;  // our Close is already queued; stop waiting for theirs
                maybe_shutdown();
            }
            return;
    }
}

// ---------------------------------------------------------------------------------------------
// Closing

void WebSocketConnection::close(std::uint16_t code, std::string_view reason) {
    start_closing(code, reason, true);
}

void WebSocketConnection::start_closing(std::uint16_t code, std::string_view reason,
                                        bool wait_for_peer) {
    if (state_ != State::open) return;
    state_ = State::closing;
    close_code_ = code;
    if (!wait_for_peer) peer_closed_ = true;
    // The Close frame is the last frame of the connection; it bypasses the queue bound.
    close_queued_ = true;
    enqueue(SharedFrame::close(code, reason));
    arm_timer(Clock::now() + options_.close_timeout);
}

void WebSocketConnection::maybe_shutdown() {
    if (state_ != State::closing || !close_written_ || !peer_closed_) return;
    // Lingering close: send our FIN, then read (and discard) until the peer's FIN or the close
    // deadline, so unread client bytes do not turn our close into a reset.
    state_ = State::draining;
    boost::system::error_code ec;
    stream_.shutdown_send(ec);  // TLS: close_notify first
    if (ec) finish();
}

// ---------------------------------------------------------------------------------------------
// Writing

bool WebSocketConnection::send(SharedFrame frame) {
    if (state_ != State::open || !frame) return false;
    if (queued_bytes_ + frame.size() > options_.max_queued_bytes ||
        queued_frames() + 1 > options_.max_queued_frames) {
        ++registry_.stats_->queue_overflows;
        // Drop what the kernel has not been given yet; the Close goes right after the write in
        // flight (if any). A client that reads nothing is cut by the close timeout.
        queued_bytes_ -= pending_bytes_;
        pending_bytes_ = 0;
        pending_.clear();
        start_closing(close_code::policy_violation, "send queue overflow", false);
        return false;
    }
    if (is_data_frame(frame)) ++registry_.stats_->messages_out;
    return enqueue(std::move(frame));
}

bool WebSocketConnection::enqueue(SharedFrame&& frame) {
    pending_bytes_ += frame.size();
    queued_bytes_ += frame.size();
    pending_.push_back(std::move(frame));
    schedule_flush();
    return true;
}

void WebSocketConnection::schedule_flush() {
    if (flush_posted_ || writing_) return;  // a write in flight flushes again when it completes
    flush_posted_ = true;
    asio::post(stream_.get_executor(), [self = shared_from_this()] {
        self->flush_posted_ = false;
        self->flush();
    });
}

void WebSocketConnection::flush() {
    if (writing_ || pending_.empty()) return;
    if (state_ == State::finished || state_ == State::draining) return;
    if (options_.cork) {
        pending_.swap(inflight_);
        pending_bytes_ = 0;
    } else {
        pending_bytes_ -= pending_.front().size();
        inflight_.push_back(std::move(pending_.front()));
        pending_.erase(pending_.begin());
    }
    iov_.clear();
    for (const auto& f : inflight_)
        iov_.emplace_back(f.data(), f.size());
    writing_ = true;
    ++writes_;
    ++registry_.stats_->writes;
    // TLS: the stream coalesces the frames into records of 16 KiB (tls/stream.hpp).
    stream_.async_write_all(
        BufferSpan{iov_.data(), iov_.data() + iov_.size()},
        [self = shared_from_this()](const boost::system::error_code& ec, std::size_t n) {
            self->on_written(ec, n);
        });
}

void WebSocketConnection::on_written(const boost::system::error_code& ec, std::size_t n) {
    writing_ = false;
    std::size_t bytes = 0;
    std::uint64_t now = 0;  // one clock read per gather write, if it carried a delivery
    for (const auto& f : inflight_) {
        bytes += f.size();
        if (const std::uint64_t stamp = f.stamp(); stamp != 0 && !ec) {
            if (now == 0)
                now =
                    static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                                   Clock::now().time_since_epoch())
                                                   .count());
            registry_.stats_->delivery_latency.observe(now > stamp ? now - stamp : 0);
        }
    }
    inflight_.clear();  // keeps the capacity
    queued_bytes_ -= bytes;
    if (state_ == State::finished) return;
    if (ec) return finish();
    registry_.stats_->bytes_out += n;
    if (close_queued_ && pending_.empty()) {
        // The Close frame is always the last frame queued, so it was in this write.
        close_written_ = true;
        maybe_shutdown();
        return;
    }
    flush();
}

// ---------------------------------------------------------------------------------------------
// Timer: idle ping while open, close deadline while closing/draining.

void WebSocketConnection::arm_timer(Clock::time_point deadline) {
    timer_.expires_at(deadline);
    timer_.async_wait(
        [self = shared_from_this()](const boost::system::error_code& ec) { self->on_timer(ec); });
}

void WebSocketConnection::on_timer(const boost::system::error_code& ec) {
    if (ec || state_ == State::finished) return;
    const auto now = Clock::now();
    // A handler that completed just before the timer was re-armed: the new wait is pending.
    if (now < timer_.expiry()) return;
    if (state_ != State::open) return finish();  // close deadline
    if (ping_outstanding_) {
        ++registry_.stats_->ping_timeouts;
        close_code_ = close_code::abnormal;
        return finish();
    }
    if (now - last_rx_ >= options_.ping_interval) {
        ping_outstanding_ = true;
        parser_.shrink();  // silent for a while: hold no message buffer while idle
        send(SharedFrame::make(Opcode::ping, {}));
        if (state_ == State::open) arm_timer(now + options_.ping_timeout);
        return;
    }
    arm_timer(last_rx_ + options_.ping_interval);
}

void WebSocketConnection::finish() {
    if (state_ == State::finished) return;
    state_ = State::finished;
    boost::system::error_code ec;
    timer_.cancel();
    stream_.close(ec);  // cancels the pending wait and write
    queued_bytes_ -= pending_bytes_;
    pending_bytes_ = 0;
    pending_.clear();  // inflight_ stays until the write's handler runs
    parser_.shrink();
    lease_.reset();
    registry_.remove(this);
    {
        std::size_t i = 0;
        while (i < std::size(kCloseCodes) && kCloseCodes[i] != close_code_)
            ++i;
        ++registry_.stats_->closes[i];
    }
    handler_->on_close(*this, close_code_);
}

}  // namespace steerchat::ws
