#include "eio/packet.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace steerchat::eio {
namespace {

using namespace std::string_literals;

const std::string kEuro = "\xe2\x82\xac";       // U+20AC, 3 bytes, 1 UTF-16 unit
const std::string kEAcute = "\xc3\xa9";         // U+00E9, 2 bytes, 1 unit
const std::string kEmoji = "\xf0\x9f\x98\x80";  // U+1F600, 4 bytes, 2 units (a surrogate pair)

std::vector<Packet> sample_packets() {
    return {text_packet(PacketType::open, R"({"sid":"abc"})"),
            text_packet(PacketType::close),
            text_packet(PacketType::ping, "probe"),
            text_packet(PacketType::pong),
            text_packet(PacketType::message, "hello " + kEuro + kEmoji + kEAcute),
            text_packet(PacketType::upgrade),
            text_packet(PacketType::noop),
            binary_message("\x00\x01\xff\x1e:"s),
            binary_message("")};
}

// --- packets -------------------------------------------------------------------------------

TEST(EioTextPacket, DecodesEveryType) {
    const char* types = "0123456";
    for (int i = 0; i < 7; ++i) {
        const auto p = decode_text_packet(std::string(1, types[i]) + "x");
        ASSERT_TRUE(p) << i;
        EXPECT_EQ(static_cast<char>(p->type), types[i]);
        EXPECT_FALSE(p->binary);
        EXPECT_EQ(p->data, "x");
    }
    EXPECT_EQ(decode_text_packet("2probe"), text_packet(PacketType::ping, "probe"));
    EXPECT_EQ(decode_text_packet("3"), text_packet(PacketType::pong));
    EXPECT_EQ(decode_text_packet("4hello", 3), text_packet(PacketType::message, "hello"));
}

TEST(EioTextPacket, RejectsEmptyAndUnknownType) {
    EXPECT_FALSE(decode_text_packet(""));
    EXPECT_FALSE(decode_text_packet("7"));
    EXPECT_FALSE(decode_text_packet("9hello"));
    EXPECT_FALSE(decode_text_packet("xhello"));
    EXPECT_FALSE(decode_text_packet(" 4hello"));
    EXPECT_FALSE(decode_text_packet("", 3));
    EXPECT_FALSE(decode_text_packet("7", 3));
}

TEST(EioTextPacket, V4Base64BinaryMessage) {
    EXPECT_EQ(decode_text_packet("bAQIDBA=="), binary_message("\x01\x02\x03\x04"));
    EXPECT_EQ(decode_text_packet("b"), binary_message(""));
    EXPECT_FALSE(decode_text_packet("bAQIDBA"));  // bad base64
    EXPECT_FALSE(decode_text_packet("b!!!!"));
    EXPECT_EQ(encode_text_packet(binary_message("\x01\x02\x03\x04")), "bAQIDBA==");
}

TEST(EioTextPacket, V3Base64BinaryPacketCarriesType) {
    EXPECT_EQ(decode_text_packet("b4AQID", 3), binary_message("\x01\x02\x03"));
    const auto ping = decode_text_packet("b2AQID", 3);
    ASSERT_TRUE(ping);
    EXPECT_EQ(ping->type, PacketType::ping);
    EXPECT_TRUE(ping->binary);
    EXPECT_EQ(decode_text_packet("b4", 3), binary_message(""));
    EXPECT_FALSE(decode_text_packet("b", 3));          // no type
    EXPECT_FALSE(decode_text_packet("b7AQID", 3));     // unknown type
    EXPECT_FALSE(decode_text_packet("bAQIDBA==", 3));  // v4 form is not v3
    EXPECT_FALSE(decode_text_packet("b4AQI", 3));      // bad base64
    EXPECT_EQ(encode_text_packet(binary_message("\x01\x02\x03"), 3), "b4AQID");
}

TEST(EioTextPacket, EncodeRoundTripsBothProtocols) {
    for (const int protocol : {3, 4}) {
        for (const auto& p : sample_packets()) {
            const auto back = decode_text_packet(encode_text_packet(p, protocol), protocol);
            ASSERT_TRUE(back) << protocol;
            EXPECT_EQ(*back, p) << protocol;
        }
    }
    EXPECT_EQ(encode_text_packet(text_packet(PacketType::message, "hi")), "4hi");
    EXPECT_EQ(encode_text_packet(text_packet(PacketType::noop)), "6");
}

TEST(EioTextPacket, TypeFromChar) {
    EXPECT_EQ(packet_type_from_char('0'), PacketType::open);
    EXPECT_EQ(packet_type_from_char('6'), PacketType::noop);
    EXPECT_FALSE(packet_type_from_char('7'));
    EXPECT_FALSE(packet_type_from_char('/'));
    EXPECT_FALSE(packet_type_from_char('b'));
}

// --- WebSocket frames ----------------------------------------------------------------------

TEST(EioWsFrame, TextFramesAreTextPackets) {
    EXPECT_EQ(decode_ws_frame("2probe", false, 4), text_packet(PacketType::ping, "probe"));
    EXPECT_EQ(decode_ws_frame("5", false, 3), text_packet(PacketType::upgrade));
    EXPECT_EQ(decode_ws_frame("bAQID", false, 4), binary_message("\x01\x02\x03"));
    EXPECT_FALSE(decode_ws_frame("", false, 4));
    EXPECT_FALSE(decode_ws_frame("8", false, 3));
    EXPECT_EQ(encode_ws_frame(text_packet(PacketType::message, "42[\"a\"]"), 4), "442[\"a\"]");
    EXPECT_EQ(encode_ws_frame(text_packet(PacketType::pong, "probe"), 3), "3probe");
}

TEST(EioWsFrame, V4BinaryFrameIsAWholeMessage) {
    // In v4 the first byte is data, even if it looks like a type byte.
    EXPECT_EQ(decode_ws_frame("\x04\x01\x02"s, true, 4), binary_message("\x04\x01\x02"s));
    EXPECT_EQ(decode_ws_frame("", true, 4), binary_message(""));
    EXPECT_EQ(encode_ws_frame(binary_message("\x01\x02\x03"), 4), "\x01\x02\x03");
}

TEST(EioWsFrame, V3BinaryFrameStartsWithTypeByte) {
    EXPECT_EQ(decode_ws_frame("\x04\x01\x02"s, true, 3), binary_message("\x01\x02"));
    EXPECT_EQ(decode_ws_frame("\x04"s, true, 3), binary_message(""));
    const auto ping = decode_ws_frame("\x02probe"s, true, 3);
    ASSERT_TRUE(ping);
    EXPECT_EQ(ping->type, PacketType::ping);
    EXPECT_TRUE(ping->binary);
    EXPECT_EQ(ping->data, "probe");
    EXPECT_FALSE(decode_ws_frame("", true, 3));
    EXPECT_FALSE(decode_ws_frame("\x07\x01"s, true, 3));
    EXPECT_FALSE(decode_ws_frame("4hello", true, 3));  // '4' = 0x34 is not a type byte
    EXPECT_EQ(encode_ws_frame(binary_message("\x01\x02\x03"), 3), "\x04\x01\x02\x03"s);
}

TEST(EioWsFrame, RoundTripsBothProtocols) {
    for (const int protocol : {3, 4}) {
        for (const auto& p : sample_packets()) {
            const auto back = decode_ws_frame(encode_ws_frame(p, protocol), p.binary, protocol);
            ASSERT_TRUE(back) << protocol;
            EXPECT_EQ(*back, p) << protocol;
        }
    }
}

// --- v4 polling payload --------------------------------------------------------------------

TEST(EioPayloadV4, DecodesReadmeExample) {
    std::vector<Packet> out;
    ASSERT_TRUE(
        decode_payload_v4("4hello\x1e"
                          "4" +
                              kEuro +
                              "\x1e"
                              "bAQIDBA==",
                          out));
    ASSERT_EQ(out.size(), 3u);
    EXPECT_EQ(out[0], text_packet(PacketType::message, "hello"));
    EXPECT_EQ(out[1], text_packet(PacketType::message, kEuro));
    EXPECT_EQ(out[2], binary_message("\x01\x02\x03\x04"));
}

TEST(EioPayloadV4, SinglePacketAndAppendsToOut) {
    std::vector<Packet> out{text_packet(PacketType::noop)};
    ASSERT_TRUE(decode_payload_v4("42[\"hello\"]", out));
    ASSERT_EQ(out.size(), 2u);
    EXPECT_EQ(out[1], text_packet(PacketType::message, "2[\"hello\"]"));
    ASSERT_TRUE(decode_payload_v4("1", out));
    EXPECT_EQ(out.back(), text_packet(PacketType::close));
}

TEST(EioPayloadV4, RejectsBadPartsAndLeavesOutUnchanged) {
    const std::vector<std::string> bad = {
        "",        // empty body = one empty part
        "4a\x1e",  // trailing separator
        "\x1e"
        "4a",  // leading separator
        "4a\x1e\x1e"
        "4b",  // empty part in the middle
        "4a\x1e"
        "7",  // unknown type
        "4a\x1e"
        "bAQI",  // bad base64
        "x",
    };
    for (const auto& body : bad) {
        std::vector<Packet> out{text_packet(PacketType::noop)};
        EXPECT_FALSE(decode_payload_v4(body, out)) << body;
        ASSERT_EQ(out.size(), 1u) << body;
        EXPECT_EQ(out[0], text_packet(PacketType::noop));
    }
}

TEST(EioPayloadV4, AppendBuildsReadmeExampleAndRoundTrips) {
    std::string body;
    append_payload_v4(body, text_packet(PacketType::message, "hello"));
    append_payload_v4(body, text_packet(PacketType::message, kEuro));
    append_payload_v4(body, binary_message("\x01\x02\x03\x04"));
    EXPECT_EQ(body,
              "4hello\x1e"
              "4" +
                  kEuro +
                  "\x1e"
                  "bAQIDBA==");

    std::string all;
    for (const auto& p : sample_packets())
        append_payload_v4(all, p);
    std::vector<Packet> out;
    ASSERT_TRUE(decode_payload_v4(all, out));
    EXPECT_EQ(out, sample_packets());
}

// --- v3 string payload ---------------------------------------------------------------------

TEST(EioPayloadV3String, DecodesWithUtf16Lengths) {
    std::vector<Packet> out;
    ASSERT_TRUE(decode_payload_v3_string("6:4hello2:4" + kEuro, out));
    ASSERT_EQ(out.size(), 2u);
    EXPECT_EQ(out[0], text_packet(PacketType::message, "hello"));
    EXPECT_EQ(out[1], text_packet(PacketType::message, kEuro));

    out.clear();  // an emoji is two units, é one
    ASSERT_TRUE(decode_payload_v3_string("3:4" + kEmoji + "3:4" + kEAcute + "a", out));
    ASSERT_EQ(out.size(), 2u);
    EXPECT_EQ(out[0].data, kEmoji);
    EXPECT_EQ(out[1].data, kEAcute + "a");
}

TEST(EioPayloadV3String, HandshakeAndConnectExample) {
    const std::string open = R"(0{"sid":"lv_VI97HAXpY6yYWAAAC","upgrades":["websocket"],)"
                             R"("pingInterval":25000,"pingTimeout":5000})";
    std::vector<Packet> out;
    ASSERT_TRUE(decode_payload_v3_string(std::to_string(open.size()) + ":" + open + "2:40", out));
    ASSERT_EQ(out.size(), 2u);
    EXPECT_EQ(out[0].type, PacketType::open);
    EXPECT_EQ(out[1], text_packet(PacketType::message, "0"));
}

TEST(EioPayloadV3String, Base64BinaryAndEmptyPayload) {
    std::vector<Packet> out;
    ASSERT_TRUE(decode_payload_v3_string("6:b4AQID1:6", out));
    ASSERT_EQ(out.size(), 2u);
    EXPECT_EQ(out[0], binary_message("\x01\x02\x03"));
    EXPECT_EQ(out[1], text_packet(PacketType::noop));

    out.clear();
    EXPECT_TRUE(decode_payload_v3_string("0:", out));  // engine.io's empty payload
    EXPECT_TRUE(out.empty());
}

TEST(EioPayloadV3String, RejectsMalformed) {
    const std::vector<std::string> bad = {
        "",                           // empty body
        "4:4hello",                   // length too short: "lo" left without a ':'
        "10:4hello",                  // length runs past the end
        "6:4hello2",                  // trailing length without ':'
        ":4hello",                    // no length
        "a:4",                        // non-decimal length
        "-1:4",                       // sign
        "12345678901:4",              // too many digits
        "2:4" + kEmoji,               // the length ends inside a surrogate pair
        "1:7",                        // unknown type
        "3:b4A",                      // bad base64
        "6:4hell\xff",                // invalid UTF-8
        "6:4hello2:4" + kEuro + "x",  // garbage after the last packet
    };
    for (const auto& body : bad) {
        std::vector<Packet> out{text_packet(PacketType::noop)};
        EXPECT_FALSE(decode_payload_v3_string(body, out)) << body;
        EXPECT_EQ(out.size(), 1u) << body;
    }
}

TEST(EioPayloadV3String, AppendCountsUtf16UnitsAndRoundTrips) {
    std::string body;
    append_payload_v3_string(body, text_packet(PacketType::message, "hello"));
    append_payload_v3_string(body, text_packet(PacketType::message, kEuro));
    EXPECT_EQ(body, "6:4hello2:4" + kEuro);

    body.clear();
    append_payload_v3_string(body, text_packet(PacketType::message, kEmoji));
    append_payload_v3_string(body, binary_message("\x01\x02\x03"));
    EXPECT_EQ(body, "3:4" + kEmoji + "6:b4AQID");

    std::string all;
    for (const auto& p : sample_packets())
        append_payload_v3_string(all, p);
    std::vector<Packet> out;
    ASSERT_TRUE(decode_payload_v3_string(all, out));
    EXPECT_EQ(out, sample_packets());
}

// --- v3 binary payload ---------------------------------------------------------------------

TEST(EioPayloadV3Binary, DecodesTextAndBinaryEntries) {
    // [0][6][255]"4hello"  [1][4][255][4][1 2 3]  [0][1][2][255]"4" + 11 bytes
    const std::string body =
        "\x00\x06\xff"
        "4hello"
        "\x01\x04\xff\x04\x01\x02\x03"
        "\x00\x01\x02\xff"
        "4abcdefghijk"s;
    std::vector<Packet> out;
    ASSERT_TRUE(decode_payload_v3_binary(body, out));
    ASSERT_EQ(out.size(), 3u);
    EXPECT_EQ(out[0], text_packet(PacketType::message, "hello"));
    EXPECT_EQ(out[1], binary_message("\x01\x02\x03"));
    EXPECT_EQ(out[2], text_packet(PacketType::message, "abcdefghijk"));
}

TEST(EioPayloadV3Binary, TextLengthCountsUtf8Bytes) {
    std::string body;
    append_payload_v3_binary(body, text_packet(PacketType::message, kEuro));
    EXPECT_EQ(body,
              "\x00\x04\xff"
              "4"s +
                  kEuro);  // 1 + 3 bytes
    std::vector<Packet> out;
    ASSERT_TRUE(decode_payload_v3_binary(body, out));
    ASSERT_EQ(out.size(), 1u);
    EXPECT_EQ(out[0].data, kEuro);
}

TEST(EioPayloadV3Binary, AppendMatchesLayoutAndRoundTrips) {
    std::string body;
    append_payload_v3_binary(body, binary_message("\x01\x02\x03"));
    EXPECT_EQ(body, "\x01\x04\xff\x04\x01\x02\x03"s);
    body.clear();
    append_payload_v3_binary(body, text_packet(PacketType::ping, "probe"));
    EXPECT_EQ(body,
              "\x00\x06\xff"
              "2probe"s);

    std::string all;
    for (const auto& p : sample_packets())
        append_payload_v3_binary(all, p);
    std::vector<Packet> out;
    ASSERT_TRUE(decode_payload_v3_binary(all, out));
    EXPECT_EQ(out, sample_packets());
}

TEST(EioPayloadV3Binary, RejectsMalformed) {
    const std::vector<std::string> bad = {
        ""s,  // empty body
        "\x02\x01\xff"
        "6"s,  // marker neither 0 nor 1
        "\x00\x0a\xff"
        "4hello....."s,  // length digit > 9
        "\x00\x06"
        "4hello"s,  // no 0xFF
        "\x00\xff"
        "4"s,  // no length digits
        "\x00\x07\xff"
        "4hello"s,                // length past the end
        "\x01\x02\xff\x07\x01"s,  // binary entry with unknown type byte
        "\x01\x00\xff"s,          // binary entry without a type byte
        "\x00\x00\xff"s,          // empty text entry
        "\x00\x01\xff"
        "9"s,                                                     // unknown text type
        "\x00\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\xff"s,  // 11 digits
        "\x00\x06\xff"
        "4hello\x00"s,  // truncated second entry
    };
    for (const auto& body : bad) {
        std::vector<Packet> out{text_packet(PacketType::noop)};
        EXPECT_FALSE(decode_payload_v3_binary(body, out)) << testing::PrintToString(body);
        EXPECT_EQ(out.size(), 1u);
    }
}

}  // namespace
}  // namespace steerchat::eio
