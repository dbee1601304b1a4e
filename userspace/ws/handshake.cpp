#include "ws/handshake.hpp"

#include <openssl/evp.h>

#include <algorithm>
#include <stdexcept>

#include "text/base64.hpp"

namespace steerchat::ws {

namespace {

constexpr std::string_view kGuid = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

std::string_view trim(std::string_view s) noexcept {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t'))
        s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t'))
        s.remove_suffix(1);
    return s;
}

char lower(char c) noexcept {
    return (c >= 'A' && c <= 'Z') ? static_cast<char>(c + 32) : c;
}

bool iequals(std::string_view a, std::string_view b) noexcept {
    return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(),
                                              [](char x, char y) { return lower(x) == lower(y); });
}

// Splits "scheme://authority[/...]" into scheme and authority; nullopt if not of that form.
std::optional<std::pair<std::string_view, std::string_view>> split_origin(std::string_view origin) {
    const auto sep = origin.find("://");
    if (sep == std::string_view::npos || sep == 0) return std::nullopt;
    std::string_view scheme = origin.substr(0, sep);
    std::string_view authority = origin.substr(sep + 3);
    authority = authority.substr(0, authority.find('/'));
    if (authority.empty()) return std::nullopt;
    return std::pair{scheme, authority};
}

// "host[:port]" with the scheme's default port removed, so "example.com:443" for https equals
// "example.com".
std::string_view strip_default_port(std::string_view authority, std::string_view port) noexcept {
    if (authority.size() > port.size() + 1 && authority.ends_with(port) &&
        authority[authority.size() - port.size() - 1] == ':') {
        return authority.substr(0, authority.size() - port.size() - 1);
    }
    return authority;
}

bool origin_is_own_host(std::string_view origin, std::string_view host) {
    auto parts = split_origin(origin);
    if (!parts || host.empty()) return false;
    auto [scheme, authority] = *parts;
    std::string_view port;
    if (iequals(scheme, "http") || iequals(scheme, "ws"))
        port = "80";
    else if (iequals(scheme, "https") || iequals(scheme, "wss"))
        port = "443";
    if (iequals(authority, host)) return true;
    if (port.empty()) return false;
    return iequals(strip_default_port(authority, port), strip_default_port(host, port));
}

bool origin_allowed(const std::optional<std::string_view>& origin, std::string_view host,
                    std::span<const std::string> allowed) {
    if (!origin) return true;
    const std::string_view o = trim(*origin);
    if (allowed.empty()) return origin_is_own_host(o, host);
    for (const auto& entry : allowed) {
        if (entry == "*") return true;
        std::string_view e = entry;
        while (e.ends_with('/'))
            e.remove_suffix(1);
        if (iequals(o, e)) return true;
    }
    return false;
}

}  // namespace

bool header_has_token(std::string_view value, std::string_view token) noexcept {
    while (true) {
        const auto comma = value.find(',');
        if (iequals(trim(value.substr(0, comma)), token)) return true;
        if (comma == std::string_view::npos) return false;
        value.remove_prefix(comma + 1);
    }
}

bool valid_client_key(std::string_view key) noexcept {
    key = trim(key);
    // 16 bytes encode to 22 characters plus "==" (any 22 characters of the alphabet decode to 16
    // bytes; the last one's 4 unused bits are not checked, as RFC 6455 only asks for 16 bytes).
    return key.size() == 24 && key[22] == '=' && key[23] == '=' &&
           std::all_of(key.begin(), key.begin() + 22, text::is_base64_char);
}

std::string compute_accept_key(std::string_view key) {
    key = trim(key);
    std::string input;
    input.reserve(key.size() + kGuid.size());
    input.append(key).append(kGuid);
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int digest_len = 0;
    if (EVP_Digest(input.data(), input.size(), digest, &digest_len, EVP_sha1(), nullptr) != 1 ||
        digest_len != 20) {
        throw std::runtime_error("SHA-1 failed");
    }
    // 20 bytes -> 28 base64 characters.
    return text::base64_encode(std::string_view(reinterpret_cast<const char*>(digest),
                                                static_cast<std::size_t>(digest_len)));
}

HandshakeResult validate_handshake(const HandshakeRequest& req,
                                   std::span<const std::string> allowed_origins) {
    if (req.method != "GET") return HandshakeReject{400, "WebSocket upgrade requires GET"};
    if (req.http_version < 11) return HandshakeReject{400, "WebSocket upgrade requires HTTP/1.1"};
    if (trim(req.host).empty()) return HandshakeReject{400, "missing Host header"};
    if (!header_has_token(req.upgrade, "websocket"))
        return HandshakeReject{400, "Upgrade header must list websocket"};
    if (!header_has_token(req.connection, "upgrade"))
        return HandshakeReject{400, "Connection header must list Upgrade"};
    if (trim(req.version) != "13")
        return HandshakeReject{426, "unsupported Sec-WebSocket-Version (13 required)"};
    if (!valid_client_key(req.key)) return HandshakeReject{400, "invalid Sec-WebSocket-Key"};
    if (!origin_allowed(req.origin, trim(req.host), allowed_origins))
        return HandshakeReject{403, "origin not allowed"};
    return HandshakeAccept{compute_accept_key(req.key)};
}

}  // namespace steerchat::ws
