#include "ws/frame.hpp"

#include "support/ws_event.hpp"

#include <gtest/gtest.h>

#include <cstring>
#include <ostream>
#include <random>
#include <string>
#include <vector>

namespace steerchat::ws {
namespace {

using Bytes = std::vector<std::uint8_t>;
constexpr MaskKey kKey{0x37, 0xFA, 0x21, 0x3D};

Bytes cf(Opcode op, std::string_view payload, bool fin = true, MaskKey key = kKey) {
    return encode_client_frame(op, as_bytes(payload), key, fin);
}

Bytes cat(std::initializer_list<Bytes> parts) {
    Bytes out;
    for (const auto& p : parts)
        out.insert(out.end(), p.begin(), p.end());
    return out;
}

using Ev = test_support::WsEvent;

// Feeds `stream` in chunks of the given sizes (the last chunk takes the rest) and collects the
// events. Checks the sticky-error contract on the way.
std::vector<Ev> parse_chunks(const Bytes& stream, const std::vector<std::size_t>& sizes,
                             ParserOptions opt = {}) {
    FrameParser p(opt);
    std::vector<Ev> out;
    std::size_t pos = 0;
    std::size_t chunk = 0;
    while (pos < stream.size()) {
        std::size_t n = chunk < sizes.size() ? sizes[chunk] : stream.size() - pos;
        n = std::min(n, stream.size() - pos);
        ++chunk;
        ByteView in(stream.data() + pos, n);
        pos += n;
        while (!in.empty()) {
            Event ev;
            const std::size_t used = p.feed(in, ev);
            EXPECT_LE(used, in.size());
            in = in.subspan(used);
            if (ev.kind != EventKind::none) out.push_back(Ev::copy(ev));
            if (ev.kind == EventKind::error) {
                EXPECT_TRUE(p.failed());
                Event again;
                const Bytes more{0x81, 0x80, 0, 0, 0, 0};
                EXPECT_EQ(p.feed(ByteView(more), again), 0u);
                EXPECT_EQ(again.kind, EventKind::error);
                EXPECT_EQ(again.code, ev.code);
                return out;
            }
            if (ev.kind == EventKind::none) {
                EXPECT_TRUE(in.empty());
            }
        }
    }
    return out;
}

std::vector<Ev> parse_whole(const Bytes& s, ParserOptions o = {}) {
    return parse_chunks(s, {}, o);
}

std::vector<Ev> parse_bytewise(const Bytes& s, ParserOptions o = {}) {
    return parse_chunks(s, std::vector<std::size_t>(s.size(), 1), o);
}

std::vector<Ev> parse_random(const Bytes& s, unsigned seed, ParserOptions o = {}) {
    std::mt19937 rng(seed);
    std::vector<std::size_t> sizes;
    std::size_t total = 0;
    while (total < s.size()) {
        // Mostly small chunks, sometimes large ones.
        std::size_t n = (rng() % 4 == 0) ? 1 + rng() % 70000 : 1 + rng() % 17;
        sizes.push_back(n);
        total += n;
    }
    return parse_chunks(s, sizes, o);
}

// The same events whatever the split.
std::vector<Ev> parse_all_ways(const Bytes& s, ParserOptions o = {}) {
    auto whole = parse_whole(s, o);
    if (s.size() <= 200000) {
        EXPECT_EQ(parse_bytewise(s, o), whole);
    }
    for (unsigned seed = 1; seed <= 5; ++seed)
        EXPECT_EQ(parse_random(s, seed, o), whole);
    return whole;
}

Ev error(std::uint16_t code) {
    return Ev{EventKind::error, Opcode::continuation, code, {}};
}
Ev message(Opcode op, std::string data) {
    return Ev{EventKind::message, op, 0, std::move(data)};
}

std::string pattern(std::size_t n, bool text) {
    std::string s(n, '\0');
    for (std::size_t i = 0; i < n; ++i)
        s[i] = text ? char('a' + i % 26) : char(i * 131 + 7);
    return s;
}

// ------------------------------------------------------------------------------------------
// Masking

TEST(Mask, WordAtATimeMatchesBytewiseAtEveryOffset) {
    std::mt19937 rng(7);
    for (std::size_t len : {0u, 1u, 3u, 4u, 7u, 8u, 9u, 15u, 16u, 17u, 63u, 64u, 1000u}) {
        Bytes src(len);
        for (auto& b : src)
            b = static_cast<std::uint8_t>(rng());
        for (std::size_t off = 0; off < 8; ++off) {
            Bytes expect(len);
            for (std::size_t i = 0; i < len; ++i)
                expect[i] = src[i] ^ kKey[(off + i) % 4];
            Bytes dst(len);
            copy_masked(dst.data(), src.data(), len, kKey, off);
            EXPECT_EQ(dst, expect) << len << " " << off;
            Bytes inplace = src;
            apply_mask(inplace.data(), len, kKey, off);
            EXPECT_EQ(inplace, expect);
        }
    }
}

// ------------------------------------------------------------------------------------------
// Encoder

TEST(Encode, HeaderLengthBoundaries) {
    struct Case {
        std::size_t len;
        Bytes header;
    };
    const std::vector<Case> cases = {
        {0, {0x82, 0x00}},
        {125, {0x82, 125}},
        {126, {0x82, 126, 0x00, 126}},
        {65535, {0x82, 126, 0xFF, 0xFF}},
        {65536, {0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0}},
        {1u << 20, {0x82, 127, 0, 0, 0, 0, 0, 0x10, 0, 0}},
    };
    for (const auto& c : cases) {
        const std::string payload = pattern(c.len, false);
        const Bytes f = encode_frame(Opcode::binary, as_bytes(payload));
        ASSERT_EQ(f.size(), c.header.size() + c.len);
        EXPECT_EQ(header_size(c.len), c.header.size());
        EXPECT_EQ(Bytes(f.begin(), f.begin() + long(c.header.size())), c.header) << c.len;
        EXPECT_EQ(0, std::memcmp(f.data() + c.header.size(), payload.data(), c.len));
        // The shared frame has the very same bytes.
        const SharedFrame sf = SharedFrame::binary(as_bytes(payload));
        EXPECT_EQ(Bytes(sf.data(), sf.data() + sf.size()), f);
        EXPECT_EQ(sf.payload().size(), c.len);
    }
}

TEST(Encode, FinAndOpcodeBits) {
    EXPECT_EQ(encode_frame(Opcode::text, as_bytes("x"))[0], 0x81);
    EXPECT_EQ(encode_frame(Opcode::text, as_bytes("x"), false)[0], 0x01);
    EXPECT_EQ(encode_frame(Opcode::continuation, as_bytes("x"))[0], 0x80);
    EXPECT_EQ(encode_frame(Opcode::ping, as_bytes(""))[0], 0x89);
    EXPECT_EQ(encode_frame(Opcode::pong, as_bytes(""))[0], 0x8A);
    EXPECT_EQ(encode_frame(Opcode::close, as_bytes(""))[0], 0x88);
    // Server frames are unmasked; client frames carry the mask bit and key.
    EXPECT_EQ(encode_frame(Opcode::text, as_bytes("x"))[1], 0x01);
    const Bytes c = cf(Opcode::text, "x");
    ASSERT_EQ(c.size(), 2u + 4u + 1u);
    EXPECT_EQ(c[1], 0x81);
    EXPECT_EQ(Bytes(c.begin() + 2, c.begin() + 6), Bytes(kKey.begin(), kKey.end()));
    EXPECT_EQ(c[6], 'x' ^ kKey[0]);
}

TEST(Encode, ClosePayload) {
    Bytes f;
    encode_close(f, close_code::going_away, "bye");
    EXPECT_EQ(f, (Bytes{0x88, 5, 0x03, 0xE9, 'b', 'y', 'e'}));
    f.clear();
    encode_close(f, close_code::no_status);
    EXPECT_EQ(f, (Bytes{0x88, 0}));
    // A long reason is cut to 123 bytes, on a code point boundary ("é" is 2 bytes).
    std::string reason = "a";
    for (int i = 0; i < 100; ++i)
        reason += "\xC3\xA9";
    const SharedFrame sf = SharedFrame::close(close_code::normal, reason);
    const ByteView p = sf.payload();
    ASSERT_LE(p.size(), kMaxControlPayload);
    EXPECT_EQ(p.size(), 2u + 123u);  // "a" + 61 * "é" = 123 bytes
    EXPECT_TRUE(text::is_valid_utf8(p.subspan(2)));
    std::string odd = "ab";
    for (int i = 0; i < 100; ++i)
        odd += "\xC3\xA9";
    const SharedFrame sf2 = SharedFrame::close(close_code::normal, odd);
    EXPECT_EQ(sf2.payload().size(), 2u + 122u);  // "ab" + 60 * "é"; the 61st would be cut
    EXPECT_TRUE(text::is_valid_utf8(sf2.payload().subspan(2)));
}

TEST(SharedFrame, RefcountAndSingleAllocation) {
    SharedFrame empty;
    EXPECT_FALSE(empty);
    EXPECT_EQ(empty.size(), 0u);
    EXPECT_EQ(empty.use_count(), 0u);

    SharedFrame a = SharedFrame::text("hello");
    EXPECT_EQ(a.use_count(), 1u);
    {
        SharedFrame b = a;
        SharedFrame c;
        c = b;
        EXPECT_EQ(a.use_count(), 3u);
        EXPECT_EQ(b.data(), a.data());  // same bytes, not a copy
        SharedFrame d = std::move(c);
        EXPECT_FALSE(c);  // NOLINT(bugprone-use-after-move): moved-from is empty by contract
        EXPECT_EQ(a.use_count(), 3u);
    }
    EXPECT_EQ(a.use_count(), 1u);
    EXPECT_EQ(as_string(a.payload()), "hello");
    EXPECT_EQ(a.bytes().size(), 7u);
    a = a;  // self-assignment keeps the frame
    EXPECT_EQ(a.use_count(), 1u);
    a.reset();
    EXPECT_FALSE(a);
}

TEST(SharedFrame, BuildWritesPayloadInPlace) {
    const SharedFrame f = SharedFrame::build(Opcode::text, 300, [](std::span<std::uint8_t> out) {
        for (std::size_t i = 0; i < out.size(); ++i)
            out[i] = static_cast<std::uint8_t>('a' + i % 26);
    });
    EXPECT_EQ(Bytes(f.data(), f.data() + f.size()),
              encode_frame(Opcode::text, as_bytes(pattern(300, true))));
}

// ------------------------------------------------------------------------------------------
// Parser: round trips

TEST(Parse, RoundTripAllLengthBoundaries) {
    for (std::size_t len : {0u, 1u, 125u, 126u, 127u, 65535u, 65536u, 65537u, 1u << 20}) {
        for (Opcode op : {Opcode::text, Opcode::binary}) {
            SCOPED_TRACE(testing::Message() << "len " << len << " op " << int(op));
            const std::string payload = pattern(len, op == Opcode::text);
            const auto events = parse_all_ways(cf(op, payload));
            ASSERT_EQ(events.size(), 1u);
            EXPECT_TRUE(events[0] == message(op, payload));
        }
    }
}

TEST(Parse, ControlFrames) {
    const std::string p125 = pattern(125, false);
    const Bytes stream = cat({cf(Opcode::ping, ""), cf(Opcode::ping, p125), cf(Opcode::pong, "abc"),
                              cf(Opcode::close, "")});
    const auto events = parse_all_ways(stream);
    ASSERT_EQ(events.size(), 4u);
    EXPECT_EQ(events[0], (Ev{EventKind::ping, Opcode::continuation, 0, ""}));
    EXPECT_EQ(events[1], (Ev{EventKind::ping, Opcode::continuation, 0, p125}));
    EXPECT_EQ(events[2], (Ev{EventKind::pong, Opcode::continuation, 0, "abc"}));
    EXPECT_EQ(events[3], (Ev{EventKind::close, Opcode::continuation, close_code::no_status, ""}));
}

TEST(Parse, FragmentedMessageWithInterleavedControlFrames) {
    const Bytes stream =
        cat({cf(Opcode::text, "Hel", false), cf(Opcode::ping, "p1"),
             cf(Opcode::continuation, "", false), cf(Opcode::continuation, "lo, \xCE", false),
             cf(Opcode::pong, "p2"), cf(Opcode::continuation, "\xBA!", true),
             cf(Opcode::binary, "\xFF\x00")});
    const auto events = parse_all_ways(stream);
    ASSERT_EQ(events.size(), 4u);
    EXPECT_EQ(events[0], (Ev{EventKind::ping, Opcode::continuation, 0, "p1"}));
    EXPECT_EQ(events[1], (Ev{EventKind::pong, Opcode::continuation, 0, "p2"}));
    EXPECT_EQ(events[2], message(Opcode::text, "Hello, \xCE\xBA!"));
    EXPECT_EQ(events[3], message(Opcode::binary, std::string("\xFF", 1)));
}

TEST(Parse, ManyFramesAnySplitSameEvents) {
    std::mt19937 rng(99);
    Bytes stream;
    std::vector<Ev> expect;
    for (int i = 0; i < 300; ++i) {
        const MaskKey key{std::uint8_t(rng()), std::uint8_t(rng()), std::uint8_t(rng()),
                          std::uint8_t(rng())};
        const std::size_t len = rng() % 3 == 0 ? rng() % 70000 : rng() % 200;
        switch (rng() % 4) {
            case 0: {
                const std::string s = pattern(len, true);
                encode_client_frame(stream, Opcode::text, as_bytes(s), key);
                expect.push_back(message(Opcode::text, s));
                break;
            }
            case 1: {
                const std::string s = pattern(len, false);
                // Split into up to 4 fragments.
                const std::size_t a = len / 3, b = len / 2;
                encode_client_frame(stream, Opcode::binary, as_bytes(s.substr(0, a)), key, false);
                encode_client_frame(stream, Opcode::continuation, as_bytes(s.substr(a, b - a)), key,
                                    false);
                encode_client_frame(stream, Opcode::continuation, as_bytes(s.substr(b)), key, true);
                expect.push_back(message(Opcode::binary, s));
                break;
            }
            case 2: {
                const std::string s = pattern(len % 126, false);
                encode_client_frame(stream, Opcode::ping, as_bytes(s), key);
                expect.push_back(Ev{EventKind::ping, Opcode::continuation, 0, s});
                break;
            }
            default: {
                const std::string s = pattern(len % 126, true);
                encode_client_frame(stream, Opcode::pong, as_bytes(s), key);
                expect.push_back(Ev{EventKind::pong, Opcode::continuation, 0, s});
                break;
            }
        }
    }
    stream = cat({stream, cf(Opcode::close, "\x03\xE8ok")});
    expect.push_back(Ev{EventKind::close, Opcode::continuation, 1000, "ok"});
    EXPECT_EQ(parse_whole(stream), expect);
    for (unsigned seed = 1; seed <= 20; ++seed)
        EXPECT_EQ(parse_random(stream, seed), expect);
    EXPECT_EQ(parse_bytewise(stream), expect);
}

TEST(Parse, MessageBufferIsReused) {
    FrameParser p;
    const Bytes a = cf(Opcode::binary, pattern(5000, false));
    const Bytes b = cf(Opcode::binary, pattern(4000, false));
    Event ev;
    ASSERT_EQ(p.feed(ByteView(a), ev), a.size());
    ASSERT_EQ(ev.kind, EventKind::message);
    const std::uint8_t* first = ev.payload.data();
    ASSERT_EQ(p.feed(ByteView(b), ev), b.size());
    ASSERT_EQ(ev.kind, EventKind::message);
    EXPECT_EQ(ev.payload.data(), first);
    EXPECT_EQ(ev.payload.size(), 4000u);
}

TEST(Parse, FeedStopsAfterEachEvent) {
    FrameParser p;
    const Bytes a = cf(Opcode::text, "one");
    const Bytes stream = cat({a, cf(Opcode::text, "two")});
    Event ev;
    EXPECT_EQ(p.feed(ByteView(stream), ev), a.size());
    EXPECT_EQ(ev.text(), "one");
    EXPECT_EQ(p.feed(ByteView(stream).subspan(a.size()), ev), stream.size() - a.size());
    EXPECT_EQ(ev.text(), "two");
}

TEST(Parse, InputAfterCloseIsIgnored) {
    FrameParser p;
    const Bytes stream = cat({cf(Opcode::close, "\x03\xE8"), cf(Opcode::text, "late")});
    std::vector<Ev> events;
    EXPECT_TRUE(
        p.feed_all(ByteView(stream), [&](const Event& e) { events.push_back(Ev::copy(e)); }));
    ASSERT_EQ(events.size(), 1u);
    EXPECT_EQ(events[0].kind, EventKind::close);
    EXPECT_EQ(events[0].code, 1000);
    EXPECT_TRUE(p.closed());
    Event ev;
    const Bytes more = cf(Opcode::text, "later");
    EXPECT_EQ(p.feed(ByteView(more), ev), more.size());
    EXPECT_EQ(ev.kind, EventKind::none);
}

// ------------------------------------------------------------------------------------------
// Parser: message size limit

TEST(Parse, MaxMessageSize) {
    const std::size_t max = kDefaultMaxMessageSize;
    // Exactly the limit passes.
    auto ok = parse_whole(cf(Opcode::binary, pattern(max, false)));
    ASSERT_EQ(ok.size(), 1u);
    EXPECT_EQ(ok[0].data.size(), max);
    // One byte more fails with 1009 as soon as the header is read, before the payload arrives.
    const Bytes big = cf(Opcode::binary, pattern(max + 1, false));
    FrameParser p;
    Event ev;
    p.feed(ByteView(big.data(), header_size(max + 1, true)), ev);
    EXPECT_EQ(ev.kind, EventKind::error);
    EXPECT_EQ(ev.code, close_code::message_too_big);
    // Across fragments: the fragment that would pass the limit fails.
    ParserOptions small;
    small.max_message_size = 100;
    const Bytes frag = cat({cf(Opcode::text, pattern(60, true), false),
                            cf(Opcode::continuation, pattern(40, true), false),
                            cf(Opcode::continuation, "x", true)});
    EXPECT_EQ(parse_all_ways(frag, small), std::vector<Ev>{error(1009)});
    const Bytes fits = cat({cf(Opcode::text, pattern(60, true), false),
                            cf(Opcode::continuation, pattern(40, true), true)});
    EXPECT_EQ(parse_all_ways(fits, small),
              std::vector<Ev>{message(Opcode::text, pattern(60, true) + pattern(40, true))});
    // Control frames do not count against the limit.
    const Bytes ping =
        cat({cf(Opcode::ping, pattern(125, false)), cf(Opcode::text, pattern(100, true))});
    EXPECT_EQ(parse_all_ways(ping, small).size(), 2u);
}

// ------------------------------------------------------------------------------------------
// Parser: protocol errors

TEST(ParseErrors, UnmaskedClientFrame) {
    EXPECT_EQ(parse_all_ways(encode_frame(Opcode::text, as_bytes("hi"))),
              std::vector<Ev>{error(1002)});
    EXPECT_EQ(parse_all_ways(encode_frame(Opcode::ping, as_bytes(""))),
              std::vector<Ev>{error(1002)});
}

TEST(ParseErrors, ReservedBits) {
    for (std::uint8_t rsv : {0x40, 0x20, 0x10, 0x70}) {
        Bytes f = cf(Opcode::text, "hi");
        f[0] |= rsv;
        EXPECT_EQ(parse_all_ways(f), std::vector<Ev>{error(1002)}) << int(rsv);
        Bytes c = cf(Opcode::ping, "");
        c[0] |= rsv;
        EXPECT_EQ(parse_all_ways(c), std::vector<Ev>{error(1002)}) << int(rsv);
    }
}

TEST(ParseErrors, ReservedOpcodes) {
    for (std::uint8_t op : {3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF}) {
        Bytes f = cf(Opcode::binary, "");
        f[0] = static_cast<std::uint8_t>(0x80 | op);
        EXPECT_EQ(parse_all_ways(f), std::vector<Ev>{error(1002)}) << int(op);
        // Also after a valid message: the message is delivered, then the error.
        EXPECT_EQ(parse_all_ways(cat({cf(Opcode::text, "ok"), f})),
                  (std::vector<Ev>{message(Opcode::text, "ok"), error(1002)}));
    }
}

TEST(ParseErrors, ControlFrameTooLongOrFragmented) {
    for (Opcode op : {Opcode::ping, Opcode::pong, Opcode::close}) {
        EXPECT_EQ(parse_all_ways(cf(op, pattern(126, false))), std::vector<Ev>{error(1002)});
        EXPECT_EQ(parse_all_ways(cf(op, "", false)), std::vector<Ev>{error(1002)});
    }
    // The length is known from the second byte, which is enough to fail.
    FrameParser p;
    Event ev;
    const Bytes head{0x89, 0x80 | 126};
    p.feed(ByteView(head), ev);
    EXPECT_EQ(ev.kind, EventKind::error);
    EXPECT_EQ(ev.code, 1002);
}

TEST(ParseErrors, FragmentationRules) {
    // Continuation without a start.
    EXPECT_EQ(parse_all_ways(cf(Opcode::continuation, "x")), std::vector<Ev>{error(1002)});
    EXPECT_EQ(parse_all_ways(cat({cf(Opcode::text, "a"), cf(Opcode::continuation, "x")})),
              (std::vector<Ev>{message(Opcode::text, "a"), error(1002)}));
    // A new data frame while a fragmented message is open.
    EXPECT_EQ(parse_all_ways(cat({cf(Opcode::text, "a", false), cf(Opcode::text, "b")})),
              std::vector<Ev>{error(1002)});
    EXPECT_EQ(parse_all_ways(cat({cf(Opcode::binary, "a", false), cf(Opcode::text, "b", false)})),
              std::vector<Ev>{error(1002)});
}

TEST(ParseErrors, SixtyFourBitLengthWithMsbSet) {
    const Bytes f{0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4};
    EXPECT_EQ(parse_all_ways(f), std::vector<Ev>{error(1002)});
    // Without the MSB but over the limit: 1009.
    const Bytes g{0x82, 0xFF, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 1, 2, 3, 4};
    EXPECT_EQ(parse_all_ways(g), std::vector<Ev>{error(1009)});
}

TEST(ParseErrors, InvalidUtf8InText) {
    EXPECT_EQ(parse_all_ways(cf(Opcode::text, "ok\xFFok")), std::vector<Ev>{error(1007)});
    EXPECT_EQ(parse_all_ways(cf(Opcode::text, "\xED\xA0\x80")), std::vector<Ev>{error(1007)});
    // Truncated at the end of the message.
    EXPECT_EQ(parse_all_ways(cf(Opcode::text, "ok\xE2\x82")), std::vector<Ev>{error(1007)});
    EXPECT_EQ(
        parse_all_ways(cat({cf(Opcode::text, "ok\xE2", false), cf(Opcode::continuation, "\x82")})),
        std::vector<Ev>{error(1007)});
    // A code point may span fragments.
    EXPECT_EQ(parse_all_ways(
                  cat({cf(Opcode::text, "ok\xE2", false), cf(Opcode::continuation, "\x82\xAC")})),
              std::vector<Ev>{message(Opcode::text, "ok\xE2\x82\xAC")});
    // Binary messages are not checked.
    EXPECT_EQ(parse_all_ways(cf(Opcode::binary, "\xFF")),
              std::vector<Ev>{message(Opcode::binary, "\xFF")});
}

TEST(ParseErrors, InvalidUtf8FailsFastInTheFrameWhereKnown) {
    // Fragment 1 is valid; fragment 2 holds the invalid byte; fragment 3 never needs to arrive.
    const Bytes f1 = cf(Opcode::text, "Hello", false);
    const Bytes f2 = cf(Opcode::continuation, "\xF4\x90\x80\x80", false);
    FrameParser p;
    Event ev;
    EXPECT_EQ(p.feed(ByteView(f1), ev), f1.size());
    EXPECT_EQ(ev.kind, EventKind::none);
    p.feed(ByteView(f2), ev);
    EXPECT_EQ(ev.kind, EventKind::error);
    EXPECT_EQ(ev.code, 1007);

    // Within one frame: a 1000-byte frame fails once its first invalid byte (index 10) arrives.
    std::string payload = pattern(1000, true);
    payload[10] = '\xC0';
    const Bytes big = cf(Opcode::text, payload);
    const std::size_t hs = header_size(1000, true);
    FrameParser q;
    EXPECT_EQ(q.feed(ByteView(big.data(), hs + 10), ev), hs + 10);
    EXPECT_EQ(ev.kind, EventKind::none);
    q.feed(ByteView(big.data() + hs + 10, 1), ev);
    EXPECT_EQ(ev.kind, EventKind::error);
    EXPECT_EQ(ev.code, 1007);
}

TEST(ParseErrors, CloseFrameValidation) {
    auto close_with = [](std::uint16_t code, std::string_view reason = {}) {
        std::string payload;
        payload += char(code >> 8);
        payload += char(code & 0xFF);
        payload += reason;
        return cf(Opcode::close, payload);
    };
    const std::uint16_t valid[] = {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010,
                                   1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999};
    for (std::uint16_t code : valid) {
        EXPECT_EQ(parse_all_ways(close_with(code, "reason")),
                  (std::vector<Ev>{Ev{EventKind::close, Opcode::continuation, code, "reason"}}))
            << code;
    }
    const std::uint16_t invalid[] = {0,    1,    999,  1004, 1005, 1006, 1015,
                                     1016, 1100, 2000, 2999, 5000, 65535};
    for (std::uint16_t code : invalid) {
        EXPECT_EQ(parse_all_ways(close_with(code)), std::vector<Ev>{error(1002)}) << code;
    }
    // Exhaustive agreement with the rule.
    for (std::uint32_t code = 0; code <= 0xFFFF; ++code) {
        const bool v = (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
                       (code >= 3000 && code <= 4999);
        ASSERT_EQ(is_valid_close_code(static_cast<std::uint16_t>(code)), v) << code;
    }
    // One-byte payload.
    EXPECT_EQ(parse_all_ways(cf(Opcode::close, "\x03")), std::vector<Ev>{error(1002)});
    // Reason not UTF-8.
    EXPECT_EQ(parse_all_ways(close_with(1000, "bad\xFF")), std::vector<Ev>{error(1007)});
    EXPECT_EQ(parse_all_ways(close_with(1000, "cut\xCE")), std::vector<Ev>{error(1007)});
    // Maximum reason (123 bytes).
    const std::string r123 = pattern(123, true);
    EXPECT_EQ(parse_all_ways(close_with(1000, r123)),
              (std::vector<Ev>{Ev{EventKind::close, Opcode::continuation, 1000, r123}}));
    // A close in the middle of a fragmented message is still a close.
    EXPECT_EQ(parse_all_ways(cat({cf(Opcode::text, "part", false), close_with(1001)})),
              (std::vector<Ev>{Ev{EventKind::close, Opcode::continuation, 1001, ""}}));
}

TEST(ParseErrors, ServerEncodedCloseParsesBack) {
    // encode_close + masking by a client gives back the same code and reason.
    const SharedFrame sf = SharedFrame::close(4001, "custom");
    const Bytes client = encode_client_frame(Opcode::close, sf.payload(), kKey);
    EXPECT_EQ(parse_all_ways(client),
              (std::vector<Ev>{Ev{EventKind::close, Opcode::continuation, 4001, "custom"}}));
}

TEST(ParseErrors, ResetRecovers) {
    FrameParser p;
    Event ev;
    const Bytes bad = encode_frame(Opcode::text, as_bytes("x"));
    p.feed(ByteView(bad), ev);
    ASSERT_TRUE(p.failed());
    p.reset();
    EXPECT_FALSE(p.failed());
    const Bytes good = cf(Opcode::text, "y");
    EXPECT_EQ(p.feed(ByteView(good), ev), good.size());
    EXPECT_EQ(ev.kind, EventKind::message);
    EXPECT_EQ(ev.text(), "y");
}

}  // namespace
}  // namespace steerchat::ws

namespace steerchat::ws {
namespace {

TEST(Parse, FeedAllStopsAtErrorAndShrinkKeepsWorking) {
    FrameParser p;
    std::vector<Ev> events;
    const Bytes stream = cat(
        {cf(Opcode::text, "a"), encode_frame(Opcode::text, as_bytes("b")), cf(Opcode::text, "c")});
    EXPECT_FALSE(
        p.feed_all(ByteView(stream), [&](const Event& e) { events.push_back(Ev::copy(e)); }));
    EXPECT_EQ(events, (std::vector<Ev>{message(Opcode::text, "a"), error(1002)}));

    FrameParser q;
    const Bytes big = cf(Opcode::binary, pattern(10000, false));
    // Shrinking in the middle of a message keeps the partial data.
    Event ev;
    EXPECT_EQ(q.feed(ByteView(big.data(), 5000), ev), 5000u);
    q.shrink();
    EXPECT_EQ(q.pending_message_size(), 5000u - header_size(10000, true));
    EXPECT_EQ(q.feed(ByteView(big.data() + 5000, big.size() - 5000), ev), big.size() - 5000);
    ASSERT_EQ(ev.kind, EventKind::message);
    EXPECT_EQ(ev.text(), pattern(10000, false));
    q.shrink();
    EXPECT_EQ(q.pending_message_size(), 0u);
    const Bytes small = cf(Opcode::text, "after shrink");
    EXPECT_EQ(q.feed(ByteView(small), ev), small.size());
    EXPECT_EQ(ev.text(), "after shrink");
}

}  // namespace
}  // namespace steerchat::ws
