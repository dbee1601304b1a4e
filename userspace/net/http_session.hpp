// One HTTP/1.1 connection: reads requests with Beast's parser (size limits), routes them, writes
// responses, keeps the connection alive while the client wants it. A valid upgrade to a WebSocket
// route ends the session: after the 101 its socket, any bytes read past the request and the
// connection's slot (its Lease in the worker's ConnectionTracker) go to a ws::WebSocketConnection.
//
// Reading a request has deadlines per phase, each absolute (not renewed by every byte): connect
// (or the previous response) to the first byte, first-byte/keep-alive timeout: close silently;
// first byte to the end of the header: 408; end of the header to the end of the body: 408.
#pragma once

#include <chrono>
#include <memory>
#include <optional>

#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>

#include "net/exchange.hpp"
#include "net/router.hpp"
#include "net/worker.hpp"
#include "tls/stream.hpp"
#include "util/lease.hpp"
#include "ws/connection.hpp"

namespace steerchat::net {

class Worker;

class HttpSession : public std::enable_shared_from_this<HttpSession> {
  public:
    // `slot`: the connection's place in the worker's ConnectionTracker, held until it closes.
    // `key`: the client address as counted (limits.hpp), for FairShare. `remote`: the peer's
    // address as the worker read it at accept (one getpeername per connection, not per request).
    // `stream`: plain, or TLS with its handshake done.
    HttpSession(tls::Stream&& stream, Worker& worker, Lease slot = {}, const AddressKey& key = {},
                const boost::asio::ip::tcp::endpoint& remote = {});
    ~HttpSession();
    void start();
    // Graceful stop: an idle connection closes now, a busy one after its current response.
    void stop();

  private:
    // What the request deadline (timer_) is timing.
    enum class Phase : std::uint8_t { none, first_byte, keepalive, header, body, write };

    void read();
    void on_first_bytes(boost::beast::error_code ec, std::size_t n);
    void read_header();
    void on_header(boost::beast::error_code ec, std::size_t);
    void on_read(boost::beast::error_code ec, std::size_t);
    void handle_request();  // a complete request, its address's turn come
    void arm_deadline(Phase phase, std::chrono::milliseconds after);
    // A response (or 101) being written: the connection is cut if it takes longer than this.
    void arm_write_deadline() { arm_deadline(Phase::write, std::chrono::seconds(30)); }
    void disarm_deadline();
    // The deadline passed while reading: 408 if part of a request came, else close.
    void on_read_timeout(Phase phase);
    void on_write(bool keep_alive, boost::beast::error_code ec, std::size_t);
    void close();
    // The request targets a WebSocket route: 101 and hand-over, or 400/403/426.
    void upgrade(Request&& req, WebSocketFactory factory,
                 const ws::ConnectionOptions* options = nullptr,
                 const std::vector<std::string>* origins = nullptr);
    void on_upgraded(boost::beast::error_code ec, std::size_t);

    // Asynchronous routes (exchange.hpp).
    friend class Exchange;
    void dispatch(Request&& req, const HttpHandler& handler);
    void answer(Response&& res);
    void answer_upgrade(std::unique_ptr<ws::MessageHandler> handler,
                        const ws::ConnectionOptions* options,
                        const std::vector<std::string>* origins);
    // While an answer is pending: wait for readability; EOF or an error means the client left.
    void watch_abort();
    void end_exchange();

    tls::Stream stream_;
    boost::asio::steady_timer timer_;  // the phase deadline of reading or writing
    Phase phase_ = Phase::none;        // what timer_ times
    Phase timed_out_ = Phase::none;    // the phase whose deadline cancelled the read
    std::uint64_t timer_generation_ = 0;
    bool first_request_ = true;
    boost::beast::flat_buffer buffer_;
    std::optional<boost::beast::http::request_parser<boost::beast::http::string_body>> parser_;
    Worker& worker_;
    Lease slot_;  // this connection's place in the worker's ConnectionTracker
    AddressKey key_;
    boost::asio::ip::tcp::endpoint remote_;
    bool reading_ = false;
    // Kept alive while the 101 is written.
    std::optional<boost::beast::http::response<boost::beast::http::empty_body>> upgrade_response_;
    std::unique_ptr<ws::MessageHandler> upgrade_handler_;
    std::optional<ws::ConnectionOptions> upgrade_options_;
    std::shared_ptr<Exchange> exchange_;  // the pending asynchronous answer
    std::shared_ptr<HttpSession> hold_;   // keeps a pending exchange's session alive
    bool watching_ = false;
    std::uint64_t watch_generation_ = 0;
};

}  // namespace steerchat::net
