#include "http_session.hpp"

#include <sys/socket.h>

#include <cerrno>

#include <fmt/core.h>
#include <boost/asio/dispatch.hpp>
#include <boost/beast/core/bind_handler.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/write.hpp>

#include "net/router.hpp"
#include "net/worker.hpp"
#include "util/log.hpp"
#include "ws/handshake.hpp"

namespace beast = boost::beast;
namespace http = beast::http;

namespace steerchat::net {

namespace {

// All values of a header, comma-joined (a list header may be split over several lines).
std::string joined(const Request& req, http::field f) {
    std::string out;
    auto [first, last] = req.equal_range(f);
    for (auto it = first; it != last; ++it) {
        if (!out.empty()) out += ", ";
        out.append(it->value());
    }
    return out;
}

// A refused upgrade. 426 names what to upgrade to (RFC 9110 15.5.22) and the WebSocket version
// we speak (RFC 6455 4.4).
http::message_generator upgrade_refusal(http::status status, const Request& req, bool keep_alive,
                                        std::string_view reason) {
    auto res = make_response(status, req.version(), keep_alive, req.method() == http::verb::head,
                             std::string(reason) + "\n", "text/plain; charset=utf-8");
    if (status == http::status::upgrade_required) {
        res.set(http::field::upgrade, "websocket");
        res.set(http::field::connection, "Upgrade");
        res.set(http::field::sec_websocket_version, "13");
        res.keep_alive(keep_alive);  // adds "close" to the Connection tokens when closing
    }
    return res;
}

}  // namespace

HttpSession::HttpSession(tls::Stream&& stream, Worker& worker, Lease slot, const AddressKey& key,
                         const boost::asio::ip::tcp::endpoint& remote)
    : stream_(std::move(stream)),
      timer_(stream_.get_executor()),
      worker_(worker),
      slot_(std::move(slot)),
      key_(key),
      remote_(remote) {
    worker_.add(this);
    ++worker_.stats().active;
}

HttpSession::~HttpSession() {
    worker_.remove(this);
    --worker_.stats().active;
}

void HttpSession::start() {
    read();
}

namespace {
// The first read of a request: a header usually arrives in one segment.
constexpr std::size_t kFirstRead = 4096;
}  // namespace

void HttpSession::arm_deadline(Phase phase, std::chrono::milliseconds after) {
    phase_ = phase;
    const auto generation = ++timer_generation_;
    timer_.expires_after(after);
    timer_.async_wait([self = shared_from_this(), generation](const boost::system::error_code& ec) {
        if (ec || generation != self->timer_generation_) return;
        // Reading is cut short: the read completes with operation_aborted and looks here.
        self->timed_out_ = self->phase_;
        self->phase_ = Phase::none;
        boost::system::error_code e;
        self->stream_.socket().cancel(e);
    });
}

void HttpSession::disarm_deadline() {
    if (phase_ == Phase::none) return;
    phase_ = Phase::none;
    ++timer_generation_;
    timer_.cancel();
}

void HttpSession::read() {
    // A stopping worker closes a kept-alive connection before its next request; a fresh one
    // (accepted just before the stop: its client has sent, or is sending, a request) is served
    // (answered with Connection: close), so a graceful stop or an upgrade resets no client.
    if (worker_.stopping() && !first_request_) return close();
    const auto& cfg = worker_.config();
    parser_.emplace();
    parser_->header_limit(static_cast<std::uint32_t>(cfg.max_header_bytes));
    parser_->body_limit(cfg.max_body_bytes);
    timed_out_ = Phase::none;
    reading_ = true;
    // Bytes of a pipelined request are here already: the request has begun.
    if (buffer_.size() > 0) return read_header();
    arm_deadline(first_request_ ? Phase::first_byte : Phase::keepalive,
                 first_request_ ? cfg.first_byte_timeout : cfg.keepalive_timeout);
    stream_.async_read_some(
        buffer_.prepare(kFirstRead),
        beast::bind_front_handler(&HttpSession::on_first_bytes, shared_from_this()));
}

void HttpSession::on_first_bytes(beast::error_code ec, std::size_t n) {
    disarm_deadline();
    if (!ec) timed_out_ = Phase::none;  // the deadline fired after the read had completed
    if (!ec) {
        buffer_.commit(n);
        return read_header();
    }
    reading_ = false;
    if (timed_out_ != Phase::none)
        on_read_timeout(timed_out_);
    else
        close();  // EOF, reset, or a graceful stop
}

void HttpSession::read_header() {
    first_request_ = false;
    // From the first byte of the request, not renewed by each byte that follows.
    arm_deadline(Phase::header, worker_.config().header_timeout);
    http::async_read_header(stream_, buffer_, *parser_,
                            beast::bind_front_handler(&HttpSession::on_header, shared_from_this()));
}

void HttpSession::on_header(beast::error_code ec, std::size_t n) {
    disarm_deadline();
    if (!ec) timed_out_ = Phase::none;
    if (!ec && !parser_->is_done()) {
        arm_deadline(Phase::body, worker_.config().body_timeout);
        http::async_read(stream_, buffer_, *parser_,
                         beast::bind_front_handler(&HttpSession::on_read, shared_from_this()));
        return;
    }
    on_read(ec, n);
}

void HttpSession::on_read_timeout(Phase phase) {
    auto& stats = worker_.stats();
    switch (phase) {
        case Phase::first_byte:
            ++stats.first_byte_timeouts;
            return close();
        case Phase::keepalive:
            ++stats.idle_timeouts;
            return close();
        case Phase::header:
        case Phase::body:
            break;
        case Phase::none:
        case Phase::write:
            return close();
    }
    const bool header = phase == Phase::header;
    ++(header ? stats.header_timeouts : stats.body_timeouts);
    const auto limit = header ? worker_.config().header_timeout : worker_.config().body_timeout;
    arm_deadline(Phase::write, std::chrono::seconds(5));
    beast::async_write(
        stream_,
        error_response(http::status::request_timeout, 11, false,
                       fmt::format("request timeout: the request {} did not arrive within {} ms",
                                   header ? "header" : "body", limit.count())),
        beast::bind_front_handler(&HttpSession::on_write, shared_from_this(), false));
}

void HttpSession::on_read(beast::error_code ec, std::size_t) {
    disarm_deadline();
    if (!ec) timed_out_ = Phase::none;
    reading_ = false;
    if (timed_out_ != Phase::none) return on_read_timeout(timed_out_);
    if (ec == http::error::end_of_stream || ec == beast::error::timeout ||
        ec == boost::asio::error::operation_aborted)
        return close();
    if (ec) {
        // A malformed or oversized request: answer it, then close (the stream is out of sync).
        if (ec == http::error::partial_message) return close();
        ++worker_.stats().bad_requests;
        auto status = http::status::bad_request;
        if (ec == http::error::body_limit) status = http::status::payload_too_large;
        if (ec == http::error::header_limit) {
            status = http::status::request_header_fields_too_large;
            ++worker_.stats().header_too_large;
        }
        arm_deadline(Phase::write, std::chrono::seconds(5));
        beast::async_write(
            stream_,
            error_response(status, 11, false, fmt::format("bad request: {}", ec.message())),
            beast::bind_front_handler(&HttpSession::on_write, shared_from_this(), false));
        return;
    }
    handle_request();
}

void HttpSession::handle_request() {
    ++worker_.stats().requests;
    auto req = parser_->release();
    {
        const std::string_view target = req.target();
        const std::string_view path = target.substr(0, target.find('?'));
        if (const auto* handler = worker_.http_route(path))
            return dispatch(std::move(req), *handler);
        if (const auto* factory = worker_.websocket_route(path))
            return upgrade(std::move(req), *factory);
    }
    bool keep_alive = req.keep_alive() && !worker_.stopping();
    auto msg = route(std::move(req), worker_);
    keep_alive = keep_alive && msg.keep_alive();
    arm_write_deadline();
    beast::async_write(
        stream_, std::move(msg),
        beast::bind_front_handler(&HttpSession::on_write, shared_from_this(), keep_alive));
}

void HttpSession::on_write(bool keep_alive, beast::error_code ec, std::size_t) {
    disarm_deadline();
    if (ec || !keep_alive) return close();
    // The next request is read now, or once this client address has waited its turn
    // (FairShare): until then its bytes wait in the socket and cost this worker nothing.
    worker_.fair_share().run(key_, [self = shared_from_this()] { self->read(); });
}

void HttpSession::dispatch(Request&& req, const HttpHandler& handler) {
    auto ex = std::make_shared<Exchange>(weak_from_this(), std::move(req), remote_);
    exchange_ = ex;
    try {
        handler(ex);
    } catch (const std::exception& e) {
        // A bug the request found: it gets a 500 and its connection closes; the worker goes on.
        ++worker_.stats().handler_errors;
        log::debug("answering 500: handling {} {} failed: {}", ex->req_.method_string(),
                   ex->req_.target(), e.what());
        if (!ex->finished_) {
            auto res = make_response(http::status::internal_server_error, ex->req_.version(), false,
                                     false, "internal server error\n", "text/plain; charset=utf-8");
            ex->respond(std::move(res));
        }
        return;
    }
    if (ex->finished_ || exchange_ != ex) return;
    // Held for later (a long poll): no idle timeout, but notice the client leaving.
    watch_abort();
}

void HttpSession::watch_abort() {
    if (watching_) return;
    // TLS: a decrypted next request already waits in the stream: the client is still there.
    if (stream_.has_buffered_input()) {
        hold_ = shared_from_this();
        return;
    }
    watching_ = true;
    const auto generation = ++watch_generation_;
    stream_.socket().async_wait(
        boost::asio::ip::tcp::socket::wait_read,
        [self = shared_from_this(), generation](const boost::system::error_code& ec) {
            if (generation != self->watch_generation_) return;
            self->watching_ = false;
            if (!self->exchange_ || self->exchange_->finished_) return;
            if (ec == boost::asio::error::operation_aborted) return;
            if (!ec) {
                // Bytes of a pipelined next request: the client is still there; they wait in
                // the socket until the pending answer is written. (TLS: a close_notify means
                // gone; any other record, still there.)
                if (!self->stream_.peer_gone()) {
                    self->hold_ = self;  // nothing else holds the session until the answer
                    return;
                }
            }
            auto ex = std::move(self->exchange_);
            ex->finished_ = true;
            if (auto f = std::move(ex->on_abort_)) f();
            self->close();
        });
}

void HttpSession::end_exchange() {
    // Callers hold a reference: dropping hold_ does not destroy the session under them.
    exchange_.reset();
    hold_.reset();
    if (watching_) {
        ++watch_generation_;
        watching_ = false;
        boost::system::error_code ec;
        stream_.socket().cancel(ec);
    }
}

void HttpSession::answer(Response&& res) {
    const bool keep_alive = res.keep_alive() && !worker_.stopping();
    res.keep_alive(keep_alive);
    end_exchange();
    arm_write_deadline();
    beast::async_write(
        stream_, http::message_generator(std::move(res)),
        beast::bind_front_handler(&HttpSession::on_write, shared_from_this(), keep_alive));
}

void HttpSession::answer_upgrade(std::unique_ptr<ws::MessageHandler> handler,
                                 const ws::ConnectionOptions* options,
                                 const std::vector<std::string>* origins) {
    auto ex = exchange_;
    end_exchange();
    auto holder = std::make_shared<std::unique_ptr<ws::MessageHandler>>(std::move(handler));
    upgrade(
        std::move(ex->req_), [holder](const Request&) { return std::move(*holder); }, options,
        origins);
}

void Exchange::respond(Response res) {
    if (finished_) return;
    finished_ = true;
    on_abort_ = nullptr;
    if (auto s = session_.lock(); s && s->exchange_.get() == this) s->answer(std::move(res));
}

void Exchange::upgrade(std::unique_ptr<ws::MessageHandler> handler,
                       const ws::ConnectionOptions* options,
                       const std::vector<std::string>* origins) {
    if (finished_) return;
    finished_ = true;
    on_abort_ = nullptr;
    if (auto s = session_.lock(); s && s->exchange_.get() == this)
        s->answer_upgrade(std::move(handler), options, origins);
}

void HttpSession::upgrade(Request&& req, WebSocketFactory factory,
                          const ws::ConnectionOptions* options,
                          const std::vector<std::string>* origins) {
    arm_write_deadline();
    WorkerStats& stats = worker_.stats();
    auto refuse = [&](http::status status, bool keep_alive, std::string_view reason) {
        switch (status) {
            case http::status::bad_request:
                ++stats.ws_handshake_bad_request;
                break;
            case http::status::upgrade_required:
                ++(keep_alive ? stats.ws_handshake_no_upgrade : stats.ws_handshake_version);
                break;
            case http::status::service_unavailable:
                ++stats.ws_handshake_unavailable;
                break;
            default:
                ++stats.ws_handshake_forbidden;
                break;
        }
        keep_alive = keep_alive && req.keep_alive() && !worker_.stopping();
        beast::async_write(
            stream_, upgrade_refusal(status, req, keep_alive, reason),
            beast::bind_front_handler(&HttpSession::on_write, shared_from_this(), keep_alive));
    };
    const std::string upgrade = joined(req, http::field::upgrade);
    if (!ws::header_has_token(upgrade, "websocket"))
        return refuse(http::status::upgrade_required, true,
                      "this is a WebSocket endpoint: upgrade required");
    const std::string connection = joined(req, http::field::connection);
    ws::HandshakeRequest hs;
    hs.method = req.method_string();
    hs.http_version = req.version();
    hs.upgrade = upgrade;
    hs.connection = connection;
    hs.key = req[http::field::sec_websocket_key];
    hs.version = req[http::field::sec_websocket_version];
    hs.host = req[http::field::host];
    if (auto it = req.find(http::field::origin); it != req.end()) hs.origin = it->value();
    auto result = ws::validate_handshake(hs, origins ? *origins : worker_.config().allowed_origins);
    if (const auto* rej = std::get_if<ws::HandshakeReject>(&result))
        return refuse(static_cast<http::status>(rej->status), false, rej->reason);
    if (worker_.stopping())
        return refuse(http::status::service_unavailable, false, "server shutting down");
    upgrade_handler_ = factory(req);
    if (!upgrade_handler_)
        return refuse(http::status::forbidden, false, "WebSocket connection refused");
    if (options) upgrade_options_ = *options;

    auto& res = upgrade_response_.emplace(http::status::switching_protocols, req.version());
    res.set(http::field::server, "steerchat");
    res.set(http::field::upgrade, "websocket");
    res.set(http::field::connection, "Upgrade");
    res.set(http::field::sec_websocket_accept, std::get<ws::HandshakeAccept>(result).accept_key);
    http::async_write(stream_, res,
                      beast::bind_front_handler(&HttpSession::on_upgraded, shared_from_this()));
}

void HttpSession::on_upgraded(beast::error_code ec, std::size_t) {
    disarm_deadline();
    upgrade_response_.reset();
    if (ec) return close();
    ++worker_.stats().ws_handshake_accepted;
    // Bytes the client sent right after its request (frames it did not wait to send) are
    // already in our buffer: the connection parses them first.
    const auto rest = buffer_.data();
    auto conn = ws::WebSocketConnection::create(
        std::move(stream_), worker_.websocket_registry(), std::move(upgrade_handler_),
        upgrade_options_ ? *upgrade_options_ : worker_.config().websocket);
    // The connection keeps this client's slot until it finishes.
    conn->hold(std::move(slot_));
    conn->start(ws::ByteView(static_cast<const std::uint8_t*>(rest.data()), rest.size()));
    buffer_.consume(buffer_.size());
    // This session ends here: nothing holds it any more.
}

void HttpSession::stop() {
    // Only an idle connection (waiting for the next request) is cut; a busy one sees stopping()
    // after its response and closes then. (A pending asynchronous answer is its route's to give:
    // routes answer in their stop hook.)
    // A fresh connection is not idle: its request is on its way (it closes after the answer,
    // or at the first-byte deadline, or when the worker's drain time is over).
    if (reading_ && buffer_.size() == 0 && !first_request_) stream_.socket().cancel();
}

void HttpSession::close() {
    disarm_deadline();
    beast::error_code ec;
    stream_.shutdown_send(ec);  // TLS: close_notify first
    stream_.close(ec);
}

}  // namespace steerchat::net
