// One HTTP/1.1 connection: reads requests with Beast's parser (size limits, idle timeout),
// routes them, writes responses, keeps the connection alive while the client wants it. A valid
// upgrade to a WebSocket route ends the session: after the 101 its socket and any bytes read past
// the request go to a ws::Connection.
#pragma once

#include <memory>
#include <optional>

#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>

#include "net/exchange.hpp"
#include "net/router.hpp"
#include "net/worker.hpp"
#include "ws/connection.hpp"

namespace steerchat::net {

class Worker;

class HttpSession : public std::enable_shared_from_this<HttpSession> {
  public:
    HttpSession(boost::asio::ip::tcp::socket&& socket, Worker& worker);
    ~HttpSession();
    void start();
    // Graceful stop: an idle connection closes now, a busy one after its current response.
    void stop();

  private:
    void read();
    void on_read(boost::beast::error_code ec, std::size_t);
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
    void answer_upgrade(std::unique_ptr<ws::Handler> handler, const ws::ConnectionOptions* options,
                        const std::vector<std::string>* origins);
    // While an answer is pending: wait for readability; EOF or an error means the client left.
    void watch_abort();
    void end_exchange();

    boost::beast::tcp_stream stream_;
    boost::beast::flat_buffer buffer_;
    std::optional<boost::beast::http::request_parser<boost::beast::http::string_body>> parser_;
    Worker& worker_;
    bool reading_ = false;
    // Kept alive while the 101 is written.
    std::optional<boost::beast::http::response<boost::beast::http::empty_body>> upgrade_response_;
    std::unique_ptr<ws::Handler> upgrade_handler_;
    std::optional<ws::ConnectionOptions> upgrade_options_;
    std::shared_ptr<Exchange> exchange_;  // the pending asynchronous answer
    std::shared_ptr<HttpSession> hold_;   // keeps a pending exchange's session alive
    bool watching_ = false;
    std::uint64_t watch_generation_ = 0;
};

}  // namespace steerchat::net
