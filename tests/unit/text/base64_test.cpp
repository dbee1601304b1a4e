#include "text/base64.hpp"

#include <gtest/gtest.h>

#include <string>

namespace steerchat::text {
namespace {

TEST(Base64, Rfc4648Vectors) {
    EXPECT_EQ(base64_encode(""), "");
    EXPECT_EQ(base64_encode("f"), "Zg==");
    EXPECT_EQ(base64_encode("fo"), "Zm8=");
    EXPECT_EQ(base64_encode("foo"), "Zm9v");
    EXPECT_EQ(base64_encode("foob"), "Zm9vYg==");
    EXPECT_EQ(base64_encode("fooba"), "Zm9vYmE=");
    EXPECT_EQ(base64_encode("foobar"), "Zm9vYmFy");
    EXPECT_EQ(base64_decode("Zm9vYmE="), "fooba");
    EXPECT_EQ(base64_decode("Zg=="), "f");
    EXPECT_EQ(base64_decode(""), "");
}

TEST(Base64, AllByteValuesRoundTrip) {
    std::string all;
    for (int i = 0; i < 256; ++i)
        all += static_cast<char>(i);
    for (std::size_t n = 0; n <= all.size(); n += 37) {
        const std::string part = all.substr(0, n);
        const auto back = base64_decode(base64_encode(part));
        ASSERT_TRUE(back.has_value()) << n;
        EXPECT_EQ(*back, part) << n;
    }
    EXPECT_EQ(base64_encode("\xfb\xff"), "+/8=");
    EXPECT_EQ(base64_encode("\x01\x02\x03\x04"), "AQIDBA==");
}

TEST(Base64, AppendKeepsPrefix) {
    std::string out = "b";
    base64_append(out, "\x01\x02\x03");
    EXPECT_EQ(out, "bAQID");
}

TEST(Base64, RejectsMalformed) {
    EXPECT_FALSE(base64_decode("Zg"));        // no padding
    EXPECT_FALSE(base64_decode("Zg="));       // length not a multiple of 4
    EXPECT_FALSE(base64_decode("Zm9v!A=="));  // outside the alphabet
    EXPECT_FALSE(base64_decode("Zm-_"));      // URL-safe alphabet is not accepted
    EXPECT_FALSE(base64_decode("Z==="));      // too much padding
    EXPECT_FALSE(base64_decode("===="));      // only padding
    EXPECT_FALSE(base64_decode("Zg==Zm8="));  // padding in the middle
    EXPECT_FALSE(base64_decode("Z=g="));      // '=' between data characters
    EXPECT_FALSE(base64_decode("Zh=="));      // non-zero bits after the last byte
    EXPECT_FALSE(base64_decode("Zm9="));      // same with one '='
    EXPECT_FALSE(base64_decode("Zm9v\n"));    // whitespace
}

TEST(Base64, Alphabet) {
    int n = 0;
    for (int c = 0; c < 256; ++c)
        n += is_base64_char(static_cast<char>(c));
    EXPECT_EQ(n, 64);
    EXPECT_TRUE(is_base64_char('A') && is_base64_char('z') && is_base64_char('0') &&
                is_base64_char('+') && is_base64_char('/'));
    EXPECT_FALSE(is_base64_char('=') || is_base64_char('-') || is_base64_char('_') ||
                 is_base64_char(' '));
}

// The WebSocket handshake's accept key (RFC 6455 section 1.3): SHA-1's 20 bytes, encoded here.
TEST(Base64, WebSocketAcceptKeyExample) {
    const std::string digest =
        "\xb3\x7a\x4f\x2c\xc0\x62\x4f\x16\x90\xf6\x46\x06\xcf\x38\x59\x45\xb2\xbe\xc4\xea";
    EXPECT_EQ(base64_encode(digest), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

}  // namespace
}  // namespace steerchat::text
