// The server side of the WebSocket opening handshake (RFC 6455 4.2), independent of the HTTP
// library: the caller extracts the request's method, version and headers (e.g. from a
// Boost.Beast request) and gets back either the Sec-WebSocket-Accept value or the status to
// answer with.
#pragma once

#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>

namespace steerchat::ws {

struct HandshakeRequest {
    std::string_view method;    // "GET"
    unsigned http_version = 0;  // 10 * major + minor, as Beast reports it: 11 for HTTP/1.1
    // Header values; a header that appears several times is passed comma-joined. Empty: absent.
    std::string_view upgrade;
    std::string_view connection;
    std::string_view key;      // Sec-WebSocket-Key
    std::string_view version;  // Sec-WebSocket-Version
    std::string_view host;
    std::optional<std::string_view> origin;  // nullopt: no Origin header
};

struct HandshakeAccept {
    std::string accept_key;  // the Sec-WebSocket-Accept value
};

struct HandshakeReject {
    unsigned status;  // 400, 403 or 426 (426: add "Sec-WebSocket-Version: 13" to the response)
    std::string_view reason;
};

using HandshakeResult = std::variant<HandshakeAccept, HandshakeReject>;

// Validates an upgrade request:
//  - method GET, HTTP/1.1 or later, a Host header               else 400
//  - Upgrade lists the token "websocket", Connection lists "Upgrade" (case-insensitive)  else 400
//  - Sec-WebSocket-Version is 13                                 else 426
//  - Sec-WebSocket-Key is base64 of exactly 16 bytes             else 400
//  - Origin: `allowed_origins` empty -> a request without Origin, or whose Origin's host[:port]
//    is the Host header (default ports 80/443 may be implicit on either side); "*" in the list
//    -> any origin; otherwise a request without Origin (non-browser clients: Origin is only a
//    browser's assertion) or with an Origin equal to an entry (case-insensitive, e.g.
//    "https://chat.example.com")                               else 403
HandshakeResult validate_handshake(const HandshakeRequest& req,
                                   std::span<const std::string> allowed_origins);

// base64(SHA-1(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11")).
std::string compute_accept_key(std::string_view key);

// Whether a comma-separated header value lists `token` (case-insensitive, spaces and tabs
// around elements ignored).
bool header_has_token(std::string_view value, std::string_view token) noexcept;

// Whether `key` is a valid Sec-WebSocket-Key: padded base64 decoding to exactly 16 bytes.
bool valid_client_key(std::string_view key) noexcept;

}  // namespace steerchat::ws
