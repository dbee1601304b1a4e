#include "ws/handshake.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace steerchat::ws {
namespace {

HandshakeRequest good() {
    HandshakeRequest r;
    r.method = "GET";
    r.http_version = 11;
    r.upgrade = "websocket";
    r.connection = "Upgrade";
    r.key = "dGhlIHNhbXBsZSBub25jZQ==";
    r.version = "13";
    r.host = "chat.example.com:8080";
    return r;
}

const std::vector<std::string> kNoList;

unsigned status(const HandshakeResult& r) {
    if (const auto* rej = std::get_if<HandshakeReject>(&r)) return rej->status;
    return 101;
}

TEST(Handshake, RfcExampleAcceptKey) {
    EXPECT_EQ(compute_accept_key("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    const auto r = validate_handshake(good(), kNoList);
    ASSERT_TRUE(std::holds_alternative<HandshakeAccept>(r));
    EXPECT_EQ(std::get<HandshakeAccept>(r).accept_key, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

TEST(Handshake, AcceptKeyForAnotherKey) {
    // Computed independently: echo -n
    // "x3JJHMbDL1EzLkh9GBhXDw==258EAFA5-E914-47DA-95CA-C5AB0DC85B11" | openssl sha1 -binary |
    // base64
    EXPECT_EQ(compute_accept_key("x3JJHMbDL1EzLkh9GBhXDw=="), "HSmrc0sMlYUkAGmm5OPpG2HaGWk=");
}

TEST(Handshake, MethodAndVersion) {
    auto r = good();
    r.method = "POST";
    EXPECT_EQ(status(validate_handshake(r, kNoList)), 400u);
    r.method = "get";  // methods are case-sensitive
    EXPECT_EQ(status(validate_handshake(r, kNoList)), 400u);
    r = good();
    r.http_version = 10;
    EXPECT_EQ(status(validate_handshake(r, kNoList)), 400u);
    r = good();
    r.host = "";
    EXPECT_EQ(status(validate_handshake(r, kNoList)), 400u);
}

TEST(Handshake, UpgradeAndConnectionTokens) {
    for (std::string_view up :
         {"websocket", "WebSocket", "WEBSOCKET", "foo, websocket", " websocket ,h2c"}) {
        auto r = good();
        r.upgrade = up;
        EXPECT_EQ(status(validate_handshake(r, kNoList)), 101u) << up;
    }
    for (std::string_view up : {"", "h2c", "websockets", "web socket", "websocket/13x"}) {
        auto r = good();
        r.upgrade = up;
        EXPECT_EQ(status(validate_handshake(r, kNoList)), 400u) << up;
    }
    for (std::string_view c :
         {"Upgrade", "upgrade", "keep-alive, Upgrade", "Upgrade,keep-alive", "  UPGRADE\t"}) {
        auto r = good();
        r.connection = c;
        EXPECT_EQ(status(validate_handshake(r, kNoList)), 101u) << c;
    }
    for (std::string_view c : {"", "keep-alive", "close", "Upgrades", "keep-alive Upgrade"}) {
        auto r = good();
        r.connection = c;
        EXPECT_EQ(status(validate_handshake(r, kNoList)), 400u) << c;
    }
}

TEST(Handshake, HeaderHasToken) {
    EXPECT_TRUE(header_has_token("a, b ,c", "b"));
    EXPECT_TRUE(header_has_token("a,,c", "c"));
    EXPECT_FALSE(header_has_token("a,,c", "b"));
    EXPECT_FALSE(header_has_token("", "a"));
    EXPECT_FALSE(header_has_token("ab", "a"));
}

TEST(Handshake, WebSocketVersion) {
    for (std::string_view v : {"", "8", "12", "14", "13, 8", "1 3"}) {
        auto r = good();
        r.version = v;
        const auto res = validate_handshake(r, kNoList);
        EXPECT_EQ(status(res), 426u) << v;
    }
    auto r = good();
    r.version = " 13 ";
    EXPECT_EQ(status(validate_handshake(r, kNoList)), 101u);
}

TEST(Handshake, KeyMustBeBase64Of16Bytes) {
    for (std::string_view k : {"dGhlIHNhbXBsZSBub25jZQ==", "AAAAAAAAAAAAAAAAAAAAAA==",
                               "/////////////////////w==", " dGhlIHNhbXBsZSBub25jZQ== "}) {
        EXPECT_TRUE(valid_client_key(k)) << k;
        auto r = good();
        r.key = k;
        EXPECT_EQ(status(validate_handshake(r, kNoList)), 101u) << k;
    }
    for (std::string_view k : {
             "",
             "dGhlIHNhbXBsZSBub25jZQ",        // no padding
             "dGhlIHNhbXBsZSBub25jZQ=",       // short padding
             "AAAAAAAAAAAAAAAAAAAA",          // 15 bytes
             "AAAAAAAAAAAAAAAAAAAAAAA=",      // 17 bytes
             "AAAAAAAAAAAAAAAAAAAAAAAA",      // 18 bytes
             "dGhlIHNhbXBsZSBub25jZQ==AAAA",  // 19 bytes
             "dGhlIHNhbXBsZSBub25jZ!==",      // bad character
             "dGhlIHNhbXBs ZSBub25jZQ=",      // space inside
             "dGhlIHNhbXBsZSBub25j=Q==",      // padding inside
         }) {
        EXPECT_FALSE(valid_client_key(k)) << k;
        auto r = good();
        r.key = k;
        EXPECT_EQ(status(validate_handshake(r, kNoList)), 400u) << k;
    }
}

TEST(Handshake, OriginWithEmptyAllowlistMeansOwnHost) {
    auto r = good();  // Host: chat.example.com:8080
    r.origin = std::nullopt;
    EXPECT_EQ(status(validate_handshake(r, kNoList)), 101u);
    for (std::string_view o : {"http://chat.example.com:8080", "https://Chat.Example.com:8080",
                               "http://chat.example.com:8080/"}) {
        r.origin = o;
        EXPECT_EQ(status(validate_handshake(r, kNoList)), 101u) << o;
    }
    for (std::string_view o :
         {"http://evil.example:8080", "http://chat.example.com", "http://chat.example.com:8081",
          "null", "", "chat.example.com:8080", "http://chat.example.com:8080.evil"}) {
        r.origin = o;
        EXPECT_EQ(status(validate_handshake(r, kNoList)), 403u) << o;
    }
    // Default ports may be implicit on either side.
    r.host = "chat.example.com";
    r.origin = "https://chat.example.com";
    EXPECT_EQ(status(validate_handshake(r, kNoList)), 101u);
    r.origin = "https://chat.example.com:443";
    EXPECT_EQ(status(validate_handshake(r, kNoList)), 101u);
    r.host = "chat.example.com:80";
    r.origin = "http://chat.example.com";
    EXPECT_EQ(status(validate_handshake(r, kNoList)), 101u);
    r.origin = "https://chat.example.com";  // 443 is not port 80
    EXPECT_EQ(status(validate_handshake(r, kNoList)), 403u);
}

TEST(Handshake, OriginAllowlist) {
    const std::vector<std::string> list = {"https://a.example", "http://b.example:8080/"};
    auto r = good();
    for (std::string_view o : {"https://a.example", "HTTPS://A.EXAMPLE", "http://b.example:8080"}) {
        r.origin = o;
        EXPECT_EQ(status(validate_handshake(r, list)), 101u) << o;
    }
    for (std::string_view o : {"http://a.example", "https://a.example:444", "https://c.example",
                               "http://chat.example.com:8080", "null"}) {
        r.origin = o;
        EXPECT_EQ(status(validate_handshake(r, list)), 403u) << o;
    }
    r.origin = std::nullopt;
    EXPECT_EQ(status(validate_handshake(r, list)), 101u);

    const std::vector<std::string> any = {"*"};
    r.origin = "https://anything.example";
    EXPECT_EQ(status(validate_handshake(r, any)), 101u);
    r.origin = "null";
    EXPECT_EQ(status(validate_handshake(r, any)), 101u);
}

TEST(Handshake, RejectionOrder) {
    // A request with a bad version and a bad key reports the version (426), so the client can
    // retry with version 13; a bad key with a bad origin reports 400.
    auto r = good();
    r.version = "8";
    r.key = "nope";
    EXPECT_EQ(status(validate_handshake(r, kNoList)), 426u);
    r = good();
    r.key = "nope";
    r.origin = "http://evil.example";
    EXPECT_EQ(status(validate_handshake(r, kNoList)), 400u);
    const auto rej = std::get<HandshakeReject>(validate_handshake(r, kNoList));
    EXPECT_FALSE(rej.reason.empty());
}

}  // namespace
}  // namespace steerchat::ws
