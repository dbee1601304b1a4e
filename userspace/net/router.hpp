// Routes a parsed HTTP request to its handler: /healthz (and the host view /healthz?all),
// /metrics (every worker's, from the shared metrics mapping), and 404 for the rest.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>

#include <boost/beast/http/message_generator.hpp>
#include <boost/beast/http/string_body.hpp>

namespace steerchat::net {

class Worker;

using Request = boost::beast::http::request<boost::beast::http::string_body>;
using Response = boost::beast::http::response<boost::beast::http::string_body>;

// A complete response carrying `body` (for a HEAD request only its Content-Length), with the
// Server header every steerchat response has.
Response make_response(boost::beast::http::status status, unsigned version, bool keep_alive,
                       bool head, std::string body, std::string_view content_type);

boost::beast::http::message_generator route(Request&& req, Worker& worker);

// A small error response with a plain-text reason (also used for parse failures).
boost::beast::http::message_generator error_response(boost::beast::http::status status,
                                                     unsigned version, bool keep_alive,
                                                     std::string_view reason);

}  // namespace steerchat::net
