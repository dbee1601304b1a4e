#include "http_session.hpp"

#include <fmt/core.h>
#include <boost/asio/dispatch.hpp>
#include <boost/beast/core/bind_handler.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/write.hpp>

#include "net/router.hpp"
#include "net/worker.hpp"

namespace beast = boost::beast;
namespace http = beast::http;

namespace steerchat::net {

HttpSession::HttpSession(boost::asio::ip::tcp::socket&& socket, Worker& worker)
    : stream_(std::move(socket)), worker_(worker) {
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

void HttpSession::read() {
    if (worker_.stopping()) return close();
    parser_.emplace();
    parser_->header_limit(static_cast<std::uint32_t>(worker_.config().max_header_bytes));
    parser_->body_limit(worker_.config().max_body_bytes);
    stream_.expires_after(worker_.config().idle_timeout);
    reading_ = true;
    http::async_read(stream_, buffer_, *parser_,
                     beast::bind_front_handler(&HttpSession::on_read, shared_from_this()));
}

void HttpSession::on_read(beast::error_code ec, std::size_t) {
    reading_ = false;
    if (ec == http::error::end_of_stream || ec == beast::error::timeout ||
        ec == boost::asio::error::operation_aborted)
        return close();
    if (ec) {
        // A malformed or oversized request: answer it, then close (the stream is out of sync).
        ++worker_.stats().bad_requests;
        auto status = (ec == http::error::header_limit || ec == http::error::body_limit)
                          ? http::status::payload_too_large
                          : http::status::bad_request;
        if (ec == http::error::header_limit) status = http::status::request_header_fields_too_large;
        if (ec == http::error::partial_message) return close();
        stream_.expires_after(std::chrono::seconds(5));
        beast::async_write(
            stream_,
            error_response(status, 11, false, fmt::format("bad request: {}", ec.message())),
            beast::bind_front_handler(&HttpSession::on_write, shared_from_this(), false));
        return;
    }
    ++worker_.stats().requests;
    auto req = parser_->release();
    bool keep_alive = req.keep_alive() && !worker_.stopping();
    auto msg = route(std::move(req), worker_);
    keep_alive = keep_alive && msg.keep_alive();
    stream_.expires_after(std::chrono::seconds(30));
    beast::async_write(
        stream_, std::move(msg),
        beast::bind_front_handler(&HttpSession::on_write, shared_from_this(), keep_alive));
}

void HttpSession::on_write(bool keep_alive, beast::error_code ec, std::size_t) {
    if (ec || !keep_alive) return close();
    read();
}

void HttpSession::stop() {
    // Only an idle connection (waiting for the next request) is cut; a busy one sees stopping()
    // after its response and closes then.
    if (reading_ && buffer_.size() == 0) stream_.socket().cancel();
}

void HttpSession::close() {
    beast::error_code ec;
    stream_.socket().shutdown(boost::asio::ip::tcp::socket::shutdown_send, ec);
    stream_.socket().close(ec);
}

}  // namespace steerchat::net
