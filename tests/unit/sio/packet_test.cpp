#include "sio/packet.hpp"

#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <string>
#include <vector>

namespace steerchat::sio {
namespace {

namespace json = boost::json;

Packet decode_ok(std::string_view text) {
    std::string why;
    auto p = decode(text, &why);
    EXPECT_TRUE(p) << text << ": " << why;
    return p ? *p : Packet{};
}

std::string reject_reason(std::string_view text) {
    std::string why;
    EXPECT_FALSE(decode(text, &why)) << text;
    EXPECT_FALSE(why.empty()) << text;
    return why;
}

Packet make(Type type, std::string nsp, std::optional<std::uint64_t> id,
            std::optional<json::value> data, std::size_t attachments = 0) {
    return Packet{type, std::move(nsp), id, std::move(data), attachments};
}

// --- the README's encoding tables ------------------------------------------------------------

TEST(SioPacket, ConnectExamples) {
    EXPECT_EQ(decode_ok("0"), make(Type::connect, "/", {}, {}));
    EXPECT_EQ(decode_ok(R"(0{"sid":"wZX3oN0bSVIhsaknAAAI"})"),
              make(Type::connect, "/", {}, json::parse(R"({"sid":"wZX3oN0bSVIhsaknAAAI"})")));
    EXPECT_EQ(decode_ok("0/admin,"), make(Type::connect, "/admin", {}, {}));
    EXPECT_EQ(decode_ok(R"(0/admin,{"token":"123"})"),
              make(Type::connect, "/admin", {}, json::parse(R"({"token":"123"})")));
    EXPECT_EQ(decode_ok(R"(4{"message":"Not authorized"})"),
              make(Type::connect_error, "/", {}, json::parse(R"({"message":"Not authorized"})")));
}

TEST(SioPacket, EventAndAckExamples) {
    EXPECT_EQ(decode_ok(R"(2["foo"])"), make(Type::event, "/", {}, json::parse(R"(["foo"])")));
    EXPECT_EQ(decode_ok(R"(2/admin,["bar"])"),
              make(Type::event, "/admin", {}, json::parse(R"(["bar"])")));
    EXPECT_EQ(decode_ok(R"(212["foo"])"), make(Type::event, "/", 12, json::parse(R"(["foo"])")));
    EXPECT_EQ(decode_ok("312[]"), make(Type::ack, "/", 12, json::array{}));
    EXPECT_EQ(decode_ok(R"(2/admin,13["foo"])"),
              make(Type::event, "/admin", 13, json::parse(R"(["foo"])")));
    EXPECT_EQ(decode_ok(R"(3/admin,13["bar"])"),
              make(Type::ack, "/admin", 13, json::parse(R"(["bar"])")));
    EXPECT_EQ(decode_ok(R"(2["hello",1])"),
              make(Type::event, "/", {}, json::parse(R"(["hello",1])")));
    EXPECT_EQ(decode_ok("1"), make(Type::disconnect, "/", {}, {}));
    EXPECT_EQ(decode_ok("1/admin,"), make(Type::disconnect, "/admin", {}, {}));
}

TEST(SioPacket, BinaryExamples) {
    auto p = decode_ok(R"(51-["baz",{"_placeholder":true,"num":0}])");
    EXPECT_EQ(p.type, Type::binary_event);
    EXPECT_EQ(p.attachments, 1u);
    EXPECT_EQ(p.nsp, "/");
    EXPECT_FALSE(p.id);
    EXPECT_TRUE(placeholders_valid(*p.data, p.attachments, true));

    p = decode_ok(
        R"(52-/admin,["baz",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}])");
    EXPECT_EQ(p.attachments, 2u);
    EXPECT_EQ(p.nsp, "/admin");
    EXPECT_TRUE(placeholders_valid(*p.data, 2, true));

    p = decode_ok(R"(51-14["foo",{"_placeholder":true,"num":0}])");
    EXPECT_EQ(p.id, 14u);
    p = decode_ok(R"(61-15["bar",{"_placeholder":true,"num":0}])");
    EXPECT_EQ(p.type, Type::binary_ack);
    EXPECT_EQ(p.id, 15u);
    EXPECT_EQ(p.attachments, 1u);
    p = decode_ok(R"(61-/admin,1[{"_placeholder":true,"num":0}])");  // sample session
    EXPECT_EQ(p.nsp, "/admin");
    EXPECT_EQ(p.id, 1u);
    p = decode_ok(R"(50-["no binary after all"])");
    EXPECT_EQ(p.attachments, 0u);
}

TEST(SioPacket, EncodeProducesReadmeStrings) {
    EXPECT_EQ(encode(make(Type::connect, "/", {}, {})), "0");
    EXPECT_EQ(encode(make(Type::connect, "/admin", {}, {})), "0/admin,");
    EXPECT_EQ(
        encode(make(Type::connect, "/admin", {}, json::object{{"sid", "oSO0OpakMV_3jnilAAAA"}})),
        R"(0/admin,{"sid":"oSO0OpakMV_3jnilAAAA"})");
    EXPECT_EQ(
        encode(make(Type::connect_error, "/", {}, json::object{{"message", "Not authorized"}})),
        R"(4{"message":"Not authorized"})");
    EXPECT_EQ(encode(make(Type::event, "/", {}, json::array{"foo"})), R"(2["foo"])");
    EXPECT_EQ(encode(make(Type::event, "/admin", 13, json::array{"foo"})), R"(2/admin,13["foo"])");
    EXPECT_EQ(encode(make(Type::ack, "/", 12, json::array{})), "312[]");
    EXPECT_EQ(encode(make(Type::disconnect, "/admin", {}, {})), "1/admin,");
    EXPECT_EQ(encode(make(Type::binary_event, "/admin", {},
                          json::array{"baz", make_placeholder(0), make_placeholder(1)}, 2)),
              R"(52-/admin,["baz",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}])");
    EXPECT_EQ(encode(make(Type::binary_ack, "/", 15, json::array{"bar", make_placeholder(0)}, 1)),
              R"(61-15["bar",{"_placeholder":true,"num":0}])");
    EXPECT_EQ(encode(make(Type::event, "", {}, json::array{"x"})), R"(2["x"])");  // "" = "/"
}

TEST(SioPacket, EncodeOmitsNullPayload) {
    EXPECT_EQ(encode(make(Type::connect, "/", {}, json::value(nullptr))), "0");
}

TEST(SioPacket, EncodeDecodeRoundTrip) {
    const std::vector<Packet> packets = {
        make(Type::connect, "/", {}, {}),
        make(Type::connect, "/chat", {}, json::object{{"token", "é€😀"}}),
        make(Type::disconnect, "/chat", {}, {}),
        make(Type::event, "/", 0,
             json::array{"msg", 1, 2.5, nullptr, json::object{{"a", json::array{}}}}),
        make(Type::event, "/x", {}, json::array{42}),
        make(Type::ack, "/", max_ack_id, json::array{}),
        make(Type::connect_error, "/", {}, "not allowed"),
        make(Type::binary_event, "/", 7, json::array{"up", make_placeholder(0)}, 1),
        make(Type::binary_ack, "/n", 8, json::array{make_placeholder(1), make_placeholder(0)}, 2),
    };
    for (const auto& p : packets) {
        const std::string text = encode(p);
        EXPECT_EQ(decode_ok(text), p) << text;
    }
}

// --- namespaces, ids and the v4 (socket.io 2) forms ----------------------------------------

TEST(SioPacket, NamespaceWithoutCommaRunsToTheEnd) {
    EXPECT_EQ(decode_ok("1/admin"), make(Type::disconnect, "/admin", {}, {}));
    EXPECT_EQ(decode_ok("0/admin"), make(Type::connect, "/admin", {}, {}));
}

TEST(SioPacket, V4ConnectQueryStaysInNamespace) {
    EXPECT_EQ(decode_ok("0/admin?token=abc%2C1,"),
              make(Type::connect, "/admin?token=abc%2C1", {}, {}));
}

TEST(SioPacket, V4ErrorPacketStringOrObject) {
    EXPECT_EQ(decode_ok(R"(4"Not authorized")"),
              make(Type::connect_error, "/", {}, "Not authorized"));
    EXPECT_EQ(decode_ok(R"(4/admin,"Invalid namespace")"),
              make(Type::connect_error, "/admin", {}, "Invalid namespace"));
    EXPECT_EQ(encode(make(Type::connect_error, "/admin", {}, "Invalid namespace")),
              R"(4/admin,"Invalid namespace")");
}

TEST(SioPacket, AckIdLimits) {
    EXPECT_EQ(decode_ok(R"(20["a"])").id, 0u);
    EXPECT_EQ(decode_ok(R"(29007199254740991["a"])").id, max_ack_id);
    reject_reason(R"(29007199254740992["a"])");
    reject_reason(R"(2123456789012345678901234567890["a"])");  // would overflow uint64
}

TEST(SioPacket, NumericEventNameAllowed) {
    EXPECT_EQ(decode_ok("2[1,2]").data, json::parse("[1,2]"));
    EXPECT_EQ(decode_ok("2[-1.5]").data, json::parse("[-1.5]"));
}

// --- rejections ----------------------------------------------------------------------------

TEST(SioPacketReject, EmptyAndUnknownType) {
    reject_reason("");
    reject_reason("7");
    reject_reason("9[\"a\"]");
    reject_reason("a");
    reject_reason("/admin,");
}

TEST(SioPacketReject, IllegalAttachments) {
    EXPECT_EQ(reject_reason(R"(5["a"])"), "illegal attachments");    // no count, no '-'
    EXPECT_EQ(reject_reason(R"(5-["a"])"), "illegal attachments");   // empty count
    EXPECT_EQ(reject_reason(R"(5x-["a"])"), "illegal attachments");  // non-decimal
    EXPECT_EQ(reject_reason(R"(51["a"])"), "illegal attachments");   // missing '-'
    EXPECT_EQ(reject_reason("5"), "illegal attachments");
    EXPECT_EQ(reject_reason(R"(61234567-[])"), "illegal attachments");  // > max_attachments
    EXPECT_EQ(decode_ok(R"(6999999-[])").attachments, max_attachments);
}

TEST(SioPacketReject, InvalidJson) {
    EXPECT_EQ(reject_reason(R"(2["a")"), "invalid JSON");
    EXPECT_EQ(reject_reason("2[\"a\"]x"), "invalid JSON");
    EXPECT_EQ(reject_reason("2{'a':1}"), "invalid JSON");
    EXPECT_EQ(reject_reason("2/admin,x"), "invalid JSON");
    EXPECT_EQ(reject_reason("2[\"\xff\"]"), "invalid JSON");  // invalid UTF-8 in a string
}

TEST(SioPacketReject, ConnectPayloadMustBeObject) {
    reject_reason(R"(0["a"])");
    reject_reason(R"(0"token")");
    reject_reason("0null");
}

TEST(SioPacketReject, DisconnectTakesNoPayload) {
    reject_reason("1{}");
    reject_reason("1/admin,[]");
    reject_reason("1null");
}

TEST(SioPacketReject, ConnectErrorNeedsObjectOrString) {
    reject_reason("4");
    reject_reason("4[\"a\"]");
    reject_reason("4 42");
    reject_reason("4null");
}

TEST(SioPacketReject, EventPayloadRules) {
    reject_reason("2");           // no payload
    reject_reason("2[]");         // empty array
    reject_reason("2{}");         // not an array
    reject_reason("2\"hello\"");  // not an array
    reject_reason("2[null]");     // name neither string nor number
    reject_reason("2[[\"a\"]]");
    reject_reason("2[true]");
    reject_reason("51-[]");
    reject_reason("51-");
    for (const char* name : {"connect", "connect_error", "disconnect", "disconnecting",
                             "newListener", "removeListener"}) {
        EXPECT_TRUE(is_reserved_event(name));
        reject_reason(std::string("2[\"") + name + "\"]");
        reject_reason(std::string("51-[\"") + name + "\",{\"_placeholder\":true,\"num\":0}]");
    }
    EXPECT_FALSE(is_reserved_event("error"));  // not reserved in v5
    decode_ok(R"(2["Connect"])");
}

TEST(SioPacketReject, AckPayloadMustBeArray) {
    reject_reason("31");  // id but no payload
    reject_reason("3");
    reject_reason("31{}");
    reject_reason("31\"a\"");
    reject_reason("61-1");
    reject_reason("61-1{}");
}

TEST(SioPacketReject, WhyIsOptional) {
    EXPECT_FALSE(decode("2[]"));
    EXPECT_FALSE(decode("", nullptr));
}

// --- placeholders --------------------------------------------------------------------------

TEST(SioPlaceholders, MakePlaceholder) {
    EXPECT_EQ(json::serialize(make_placeholder(3)), R"({"_placeholder":true,"num":3})");
}

TEST(SioPlaceholders, RangeAndNesting) {
    const auto nested = json::parse(
        R"(["up",{"file":{"_placeholder":true,"num":1},"parts":[{"_placeholder":true,"num":0}]}])");
    EXPECT_TRUE(placeholders_valid(nested, 2));
    EXPECT_TRUE(placeholders_valid(nested, 2, true));
    EXPECT_TRUE(placeholders_valid(nested, 3));         // index 2 unused: fine by default
    EXPECT_FALSE(placeholders_valid(nested, 3, true));  // but not when each must appear
    EXPECT_FALSE(placeholders_valid(nested, 1));        // num 1 out of range
    EXPECT_FALSE(placeholders_valid(nested, 0));
    EXPECT_TRUE(placeholders_valid(json::parse(R"(["a",1,"b"])"), 0, true));
}

TEST(SioPlaceholders, BadNum) {
    EXPECT_FALSE(placeholders_valid(json::parse(R"([{"_placeholder":true}])"), 1));
    EXPECT_FALSE(placeholders_valid(json::parse(R"([{"_placeholder":true,"num":-1}])"), 1));
    EXPECT_FALSE(placeholders_valid(json::parse(R"([{"_placeholder":true,"num":"0"}])"), 1));
    EXPECT_FALSE(placeholders_valid(json::parse(R"([{"_placeholder":true,"num":0.5}])"), 1));
    EXPECT_FALSE(placeholders_valid(
        json::parse(R"([{"_placeholder":true,"num":18446744073709551615}])"), 1));
    // Not placeholders: "_placeholder" not true.
    EXPECT_TRUE(placeholders_valid(json::parse(R"([{"_placeholder":false,"num":9}])"), 0));
    EXPECT_TRUE(placeholders_valid(json::parse(R"([{"_placeholder":1,"num":9}])"), 0));
}

TEST(SioPacket, TypePredicates) {
    EXPECT_TRUE(is_event(Type::event));
    EXPECT_TRUE(is_event(Type::binary_event));
    EXPECT_FALSE(is_event(Type::ack));
    EXPECT_TRUE(is_ack(Type::ack));
    EXPECT_TRUE(is_ack(Type::binary_ack));
    EXPECT_FALSE(is_ack(Type::connect));
    EXPECT_TRUE(is_binary(Type::binary_event));
    EXPECT_TRUE(is_binary(Type::binary_ack));
    EXPECT_FALSE(is_binary(Type::event));
}

}  // namespace
}  // namespace steerchat::sio
