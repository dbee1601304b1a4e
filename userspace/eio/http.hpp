// The HTTP answers of Engine.IO's polling transport and its errors, shared by the server (which
// routes requests) and the sessions (which answer polls and POSTs).
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include <boost/beast/http/status.hpp>

#include "eio/options.hpp"
#include "net/router.hpp"

namespace steerchat::eio {

// The value of `key` in a query string (false when absent). No percent-decoding: every value
// Engine.IO reads (EIO, transport, sid, b64) is plain.
bool query_value(std::string_view query, std::string_view key, std::string_view& out);

// True if `origin` is in `list` or the list holds "*".
bool origin_listed(const std::vector<std::string>& list, std::string_view origin);

// An answer to `req` with no-store caching and, for a CORS origin in `options`, its headers.
net::Response answer(const Options& options, const net::Request& req,
                     boost::beast::http::status status, std::string body,
                     std::string_view content_type);

// The protocol's error answer: 400 (403 for code 4) with {"code":N,"message":M}: 0 Transport
// unknown, 1 Session ID unknown, 2 Bad handshake method, 3 Bad request, 4 Forbidden,
// 5 Unsupported protocol version.
net::Response error_answer(const Options& options, const net::Request& req, int code);

}  // namespace steerchat::eio
