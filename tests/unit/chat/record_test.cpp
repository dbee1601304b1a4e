// The ring record of a chat event (chat/record.hpp): round trips of every kind, and rejection of
// what another process could have left in shared memory (unknown types, truncation, lengths past
// the end, trailing bytes).
#include <gtest/gtest.h>

#include <cstring>
#include <span>
#include <string>
#include <vector>

#include "chat/record.hpp"

namespace chat = steerchat::chat;
namespace record = steerchat::chat::record;
using chat::Event;
using chat::EventType;

namespace {

// Every kind (every value the record format numbers), so that a new kind is tested too.
std::vector<EventType> all_kinds() {
    std::vector<EventType> kinds;
    for (unsigned i = 0; i < 256; ++i)
        if (record::detail::wire_type(static_cast<EventType>(i)) != 0)
            kinds.push_back(static_cast<EventType>(i));
    return kinds;
}

Event sample(EventType t) {
    Event ev;
    ev.type = t;
    ev.id = 0x0102030405060708u;
    switch (t) {
        case EventType::message:
            ev.ts = 1'700'000'000'123;
            ev.seq = 0x1122334455667788u;
            ev.room = "lobby \xC3\xA9";
            ev.from = "alice";
            ev.text = std::string_view("hi\0there", 8);
            break;
        case EventType::dm:
            ev.ts = -5;
            ev.to = "bob";
            ev.from = "alice";
            ev.text = "";
            break;
        case EventType::online:
            ev.from = "carol";
            break;
        case EventType::offline:
        case EventType::revoked:
            ev.login = 77;
            ev.from = "carol";
            break;
        case EventType::typing:
            ev.id = 0;  // a hint: no id
            ev.room = "lobby";
            ev.from = "dave \xC3\xA9";
            break;
        case EventType::joined:
        case EventType::left:
            ev.login = 42;
            ev.room = "lobby";
            ev.from = "erin";
            break;
    }
    return ev;
}

void expect_same(const Event& a, const Event& b) {
    EXPECT_EQ(a.type, b.type);
    EXPECT_EQ(a.id, b.id);
    EXPECT_EQ(a.seq, b.seq);
    EXPECT_EQ(a.order, b.order);
    EXPECT_EQ(a.ts, b.ts);
    EXPECT_EQ(a.login, b.login);
    EXPECT_EQ(a.room, b.room);
    EXPECT_EQ(a.from, b.from);
    EXPECT_EQ(a.to, b.to);
    EXPECT_EQ(a.text, b.text);
}

void put_u32(std::vector<std::byte>& buf, std::size_t at, std::uint32_t v) {
    std::memcpy(buf.data() + at, &v, 4);
}

}  // namespace

TEST(ChatRecord, EveryKindRoundTrips) {
    ASSERT_GE(all_kinds().size(), 5u);  // not vacuous
    std::vector<std::byte> buf;
    for (const EventType t : all_kinds()) {
        const Event in = sample(t);
        const std::uint32_t wire = record::encode(in, buf);
        EXPECT_EQ(record::event_type(wire), t);
        const auto out = record::decode(wire, buf);
        ASSERT_TRUE(out.has_value()) << static_cast<int>(t);
        expect_same(in, *out);
        // The strings view the record, not the event they were encoded from.
        if (!out->from.empty()) {
            EXPECT_TRUE(out->from.data() >= reinterpret_cast<const char*>(buf.data()) &&
                        out->from.data() < reinterpret_cast<const char*>(buf.data() + buf.size()));
        }
    }
}

TEST(ChatRecord, WireTypesAreTheFormatsNumbersAndDistinct) {
    // Fixed: changing them breaks a running cluster's upgrade path and old logs.
    EXPECT_EQ(record::wire_type(EventType::message), 1u);
    EXPECT_EQ(record::wire_type(EventType::dm), 2u);
    EXPECT_EQ(record::wire_type(EventType::online), 3u);
    EXPECT_EQ(record::wire_type(EventType::offline), 4u);
    EXPECT_EQ(record::wire_type(EventType::typing), 5u);
    EXPECT_EQ(record::wire_type(EventType::joined), 6u);
    EXPECT_EQ(record::wire_type(EventType::left), 7u);
    EXPECT_EQ(record::wire_type(EventType::revoked), 8u);
    for (std::uint32_t w = 0; w < 64; ++w)
        if (const auto t = record::event_type(w)) {
            EXPECT_EQ(record::wire_type(*t), w);
        }
    EXPECT_FALSE(record::event_type(0).has_value());
    EXPECT_FALSE(record::event_type(9).has_value());
    EXPECT_FALSE(record::event_type(0xFFFFFFFFu).has_value());
}

TEST(ChatRecord, TheLayoutIsAsDocumented) {
    std::vector<std::byte> buf;
    const Event ev = sample(EventType::offline);
    record::encode(ev, buf);
    ASSERT_EQ(buf.size(), 8u + 8u + 4u + ev.from.size());
    std::uint64_t id = 0, login = 0;
    std::uint32_t n = 0;
    std::memcpy(&id, buf.data(), 8);
    std::memcpy(&login, buf.data() + 8, 8);
    std::memcpy(&n, buf.data() + 16, 4);
    EXPECT_EQ(id, ev.id);
    EXPECT_EQ(login, ev.login);  // an offline carries its login in the ts field
    EXPECT_EQ(n, ev.from.size());
    // The largest record (a message of another host: with its order) fits kOverhead + the
    // strings.
    Event m = sample(EventType::message);
    m.order = 99;
    record::encode(m, buf);
    EXPECT_EQ(buf.size(), record::kOverhead + m.room.size() + m.from.size() + m.text.size());
}

TEST(ChatRecord, RemoteMessageCarriesSeqThenOrder) {
    // A message of another host (the bridge's): its room seq on this host after ts, its local
    // order after the text; both come back, and a local message (order 0) is 8 bytes shorter.
    Event remote = sample(EventType::message);
    remote.seq = 7;
    remote.order = 0x0A0B0C0D0E0F1011u;
    std::vector<std::byte> with, without;
    const std::uint32_t wire = record::encode(remote, with);
    Event local = remote;
    local.order = 0;
    record::encode(local, without);
    ASSERT_EQ(with.size(), without.size() + 8);
    std::uint64_t seq = 0, order = 0;
    std::memcpy(&seq, with.data() + 16, 8);
    std::memcpy(&order, with.data() + with.size() - 8, 8);
    EXPECT_EQ(seq, 7u);
    EXPECT_EQ(order, remote.order);
    const auto out = record::decode(wire, with);
    ASSERT_TRUE(out.has_value());
    expect_same(remote, *out);
    const auto out_local = record::decode(wire, without);
    ASSERT_TRUE(out_local.has_value());
    EXPECT_EQ(out_local->seq, 7u);
    EXPECT_EQ(out_local->order, 0u);
    // A tail of any other size is trailing garbage.
    for (const std::size_t extra : {1, 4, 7, 9, 16}) {
        std::vector<std::byte> b = without;
        b.resize(b.size() + extra);
        EXPECT_FALSE(record::decode(wire, b).has_value()) << extra;
    }
}

// Presence at scale (issue 16): an online says whether it was announced host-wide (its ts
// field: 0 yes, 1 no), an offline may carry its rooms (packed names) after its name.
TEST(ChatRecord, OnlineCarriesItsScopeAndOfflineItsRooms) {
    std::vector<std::byte> buf;
    Event on = sample(EventType::online);
    on.local = true;
    std::uint32_t wire = record::encode(on, buf);
    auto out = record::decode(wire, buf);
    ASSERT_TRUE(out.has_value());
    EXPECT_TRUE(out->local);
    std::uint64_t ts = 2;
    std::memcpy(buf.data() + 8, &ts, 8);
    EXPECT_FALSE(record::decode(wire, buf).has_value()) << "scope 2 is no format";

    Event off = sample(EventType::offline);
    std::string rooms;
    chat::pack_name(rooms, "lobby");
    chat::pack_name(rooms, "");
    chat::pack_name(rooms, "r\xC3\xA9");
    off.rooms_known = true;
    off.rooms = rooms;
    wire = record::encode(off, buf);
    ASSERT_EQ(buf.size(), 8u + 8u + 4u + off.from.size() + 4u + rooms.size());
    out = record::decode(wire, buf);
    ASSERT_TRUE(out.has_value());
    expect_same(off, *out);
    EXPECT_TRUE(out->rooms_known);
    std::vector<std::string> names;
    EXPECT_TRUE(chat::each_packed(out->rooms, [&](std::string_view r) { names.emplace_back(r); }));
    EXPECT_EQ(names, (std::vector<std::string>{"lobby", "", "r\xC3\xA9"}));
    // Without rooms: unknown (a bridge's offline of another host's user).
    off.rooms_known = false;
    wire = record::encode(off, buf);
    out = record::decode(wire, buf);
    ASSERT_TRUE(out.has_value());
    EXPECT_FALSE(out->rooms_known);
    // A room list whose inner lengths run past it is rejected.
    off.rooms_known = true;
    const std::string bad("\x09\0\0\0abc", 7);
    off.rooms = bad;
    wire = record::encode(off, buf);
    EXPECT_FALSE(record::decode(wire, buf).has_value());
}

TEST(ChatRecord, TypingIsRoomThenFrom) {
    std::vector<std::byte> buf;
    const Event ev = sample(EventType::typing);
    EXPECT_EQ(record::encode(ev, buf), 5u);
    ASSERT_EQ(buf.size(), 8u + 8u + 4u + ev.room.size() + 4u + ev.from.size());
    std::uint32_t n = 0;
    std::memcpy(&n, buf.data() + 16, 4);
    EXPECT_EQ(n, ev.room.size());
    EXPECT_EQ(std::string_view(reinterpret_cast<const char*>(buf.data() + 20), n), ev.room);
    // A typing record lacking its "from" (an online's layout under type 5) is rejected.
    std::vector<std::byte> online;
    Event o = sample(EventType::online);
    record::encode(o, online);
    EXPECT_FALSE(record::decode(5, online).has_value());
}

TEST(ChatRecord, MemberEventsAreLoginThenRoomThenFrom) {
    std::vector<std::byte> buf;
    for (const EventType t : {EventType::joined, EventType::left}) {
        const Event ev = sample(t);
        record::encode(ev, buf);
        ASSERT_EQ(buf.size(), 8u + 8u + 4u + ev.room.size() + 4u + ev.from.size());
        std::uint64_t login = 0;
        std::memcpy(&login, buf.data() + 8, 8);
        EXPECT_EQ(login, 42u);  // the login of `from`, in the ts field
        std::uint32_t n = 0;
        std::memcpy(&n, buf.data() + 16, 4);
        EXPECT_EQ(std::string_view(reinterpret_cast<const char*>(buf.data() + 20), n), ev.room);
    }
}

TEST(ChatRecord, UnknownTypesAreRejected) {
    std::vector<std::byte> buf;
    record::encode(sample(EventType::message), buf);
    EXPECT_FALSE(record::decode(0, buf).has_value());
    EXPECT_FALSE(record::decode(99, buf).has_value());
}

TEST(ChatRecord, EveryTruncationAndTrailingByteIsRejected) {
    std::vector<std::byte> buf;
    for (const EventType t : all_kinds()) {
        const std::uint32_t wire = record::encode(sample(t), buf);
        for (std::size_t n = 0; n < buf.size(); ++n)
            EXPECT_FALSE(record::decode(wire, std::span(buf).first(n)).has_value())
                << static_cast<int>(t) << " cut to " << n;
        std::vector<std::byte> longer = buf;
        longer.push_back(std::byte{0});
        EXPECT_FALSE(record::decode(wire, longer).has_value()) << static_cast<int>(t);
        EXPECT_FALSE(record::decode(wire, {}).has_value());
    }
}

TEST(ChatRecord, LengthsPastTheEndAreRejected) {
    std::vector<std::byte> buf;
    const std::uint32_t wire = record::encode(sample(EventType::message), buf);
    const Event ev = sample(EventType::message);
    // The three string lengths (after id, ts and seq), each made to reach past the record (by
    // one, and by a lot).
    const std::size_t at[] = {24, 24 + 4 + ev.room.size(),
                              24 + 4 + ev.room.size() + 4 + ev.from.size()};
    for (const std::size_t a : at) {
        for (const std::uint32_t bad :
             {static_cast<std::uint32_t>(buf.size()), 0x7FFFFFFFu, 0xFFFFFFFFu}) {
            std::vector<std::byte> b = buf;
            put_u32(b, a, bad);
            EXPECT_FALSE(record::decode(wire, b).has_value()) << "at " << a << " len " << bad;
        }
    }
    // A string length one short leaves a trailing byte: rejected too.
    std::vector<std::byte> b = buf;
    put_u32(b, at[2], static_cast<std::uint32_t>(ev.text.size() - 1));
    EXPECT_FALSE(record::decode(wire, b).has_value());
}

TEST(ChatRecord, ArbitraryBytesNeverReadOutOfBounds) {
    // Deterministic pseudo-random records of every type and small size (run under ASan in the
    // sanitizer build): decode must only accept records whose strings lie inside them.
    std::uint64_t x = 0x9E3779B97F4A7C15u;
    std::vector<std::byte> b;
    for (int round = 0; round < 20000; ++round) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        b.resize(x % 48);
        for (auto& byte : b) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            byte = static_cast<std::byte>(x % 7 == 0 ? x >> 8 : x % 3);  // small lengths often
        }
        const auto ev = record::decode(static_cast<std::uint32_t>(1 + round % 5), b);
        if (!ev) continue;
        const char* lo = reinterpret_cast<const char*>(b.data());
        const char* hi = lo + b.size();
        for (const std::string_view s : {ev->room, ev->from, ev->to, ev->text})
            if (!s.empty()) {
                EXPECT_TRUE(s.data() >= lo && s.data() + s.size() <= hi);
            }
    }
}
