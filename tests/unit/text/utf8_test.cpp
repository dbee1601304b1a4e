#include "text/utf8.hpp"

#include "support/utf8_reference.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace steerchat::text {
namespace {

using Bytes = std::vector<std::uint8_t>;

Bytes B(std::initializer_list<int> v) {
    Bytes out;
    for (int x : v)
        out.push_back(static_cast<std::uint8_t>(x));
    return out;
}

Bytes S(std::string_view s) {
    return Bytes(s.begin(), s.end());
}

bool reference_valid(const Bytes& b) {
    return test_support::reference_utf8(b.data(), b.size());
}

struct Valid {
    const char* name;
    Bytes bytes;
    std::vector<std::size_t> boundaries;  // prefix lengths ending on a code point boundary
};

std::vector<Valid> valid_cases() {
    return {
        {"empty", {}, {0}},
        {"ascii", S("Hello"), {0, 1, 2, 3, 4, 5}},
        {"U+0080", B({0xC2, 0x80}), {0, 2}},
        {"U+07FF", B({0xDF, 0xBF}), {0, 2}},
        {"U+0800", B({0xE0, 0xA0, 0x80}), {0, 3}},
        {"U+D7FF", B({0xED, 0x9F, 0xBF}), {0, 3}},
        {"U+E000", B({0xEE, 0x80, 0x80}), {0, 3}},
        {"U+FFFF", B({0xEF, 0xBF, 0xBF}), {0, 3}},
        {"U+10000", B({0xF0, 0x90, 0x80, 0x80}), {0, 4}},
        {"U+10FFFF", B({0xF4, 0x8F, 0xBF, 0xBF}), {0, 4}},
        // Autobahn 6.2: "Hello-µ@ßöäüàá-UTF-8!!" and "κόσμε".
        {"kosme",
         B({0xCE, 0xBA, 0xE1, 0xBD, 0xB9, 0xCF, 0x83, 0xCE, 0xBC, 0xCE, 0xB5}),
         {0, 2, 5, 7, 9, 11}},
        {"mixed", B({'a', 0xC3, 0xA9, 'b', 0xF0, 0x9F, 0x98, 0x80, 'c'}), {0, 1, 3, 4, 8, 9}},
    };
}

TEST(Utf8, ValidSequencesAtEverySplit) {
    for (const auto& c : valid_cases()) {
        SCOPED_TRACE(c.name);
        EXPECT_TRUE(is_valid_utf8(std::span<const std::uint8_t>(c.bytes)));
        for (std::size_t split = 0; split <= c.bytes.size(); ++split) {
            Utf8Validator v;
            ASSERT_TRUE(v.feed(c.bytes.data(), split)) << "split " << split;
            const bool boundary =
                std::find(c.boundaries.begin(), c.boundaries.end(), split) != c.boundaries.end();
            EXPECT_EQ(v.complete(), boundary) << "split " << split;
            ASSERT_TRUE(v.feed(c.bytes.data() + split, c.bytes.size() - split));
            EXPECT_TRUE(v.complete());
            EXPECT_FALSE(v.failed());
        }
    }
}

struct Invalid {
    const char* name;
    Bytes bytes;
    std::size_t fail_at;  // index of the byte at which the input is known to be invalid
};

std::vector<Invalid> invalid_cases() {
    return {
        {"C0 overlong", B({0xC0, 0x80}), 0},
        {"C1 overlong", B({0xC1, 0xBF}), 0},
        {"E0 overlong", B({0xE0, 0x80, 0x80}), 1},
        {"E0 9F overlong", B({0xE0, 0x9F, 0xBF}), 1},
        {"F0 overlong", B({0xF0, 0x80, 0x80, 0x80}), 1},
        {"F0 8F overlong", B({0xF0, 0x8F, 0xBF, 0xBF}), 1},
        {"U+D800", B({0xED, 0xA0, 0x80}), 1},
        {"U+DBFF", B({0xED, 0xAF, 0xBF}), 1},
        {"U+DC00", B({0xED, 0xB0, 0x80}), 1},
        {"U+DFFF", B({0xED, 0xBF, 0xBF}), 1},
        {"U+110000 (F4 90)", B({0xF4, 0x90, 0x80, 0x80}), 1},
        {"F5 lead", B({0xF5, 0x80, 0x80, 0x80}), 0},
        {"F8 lead", B({0xF8, 0x88, 0x80, 0x80, 0x80}), 0},
        {"FE", B({0xFE}), 0},
        {"FF", B({0xFF}), 0},
        {"lone continuation", B({0x80}), 0},
        {"lone BF", B({'a', 'b', 0xBF}), 2},
        {"missing continuation", B({0xC2, 'a'}), 1},
        {"3-byte cut by ascii", B({0xE1, 0x80, 'x'}), 2},
        {"4-byte cut by lead", B({0xF1, 0x80, 0x80, 0xC2, 0x80}), 3},
        {"extra continuation", B({0xC2, 0x80, 0x80}), 2},
        // Autobahn 6.3.1: "κόσμε" followed by an encoded surrogate and "edited".
        {"kosme-edited", B({0xCE, 0xBA, 0xE1, 0xBD, 0xB9, 0xCF, 0x83, 0xCE, 0xBC, 0xCE,
                            0xB5, 0xED, 0xA0, 0x80, 0x65, 0x64, 0x69, 0x74, 0x65, 0x64}),
         12},
        // Past the 8-byte ASCII fast path.
        {"ascii run then FF",
         [] {
             Bytes b(37, 'x');
             b.push_back(0xFF);
             b.push_back('y');
             return b;
         }(),
         37},
    };
}

TEST(Utf8, InvalidSequencesFailInTheFragmentWhereKnown) {
    for (const auto& c : invalid_cases()) {
        SCOPED_TRACE(c.name);
        ASSERT_FALSE(reference_valid(c.bytes));
        EXPECT_FALSE(is_valid_utf8(std::span<const std::uint8_t>(c.bytes)));
        for (std::size_t split = 0; split <= c.bytes.size(); ++split) {
            Utf8Validator v;
            const bool first = v.feed(c.bytes.data(), split);
            // The first fragment fails exactly when it contains the offending byte.
            EXPECT_EQ(first, split <= c.fail_at) << "split " << split;
            const bool second = v.feed(c.bytes.data() + split, c.bytes.size() - split);
            EXPECT_FALSE(second) << "split " << split;
            EXPECT_TRUE(v.failed());
            EXPECT_FALSE(v.complete());
        }
        // Byte at a time: the failure appears at the offending byte, not before or after.
        Utf8Validator v;
        for (std::size_t i = 0; i < c.bytes.size(); ++i) {
            const bool ok = v.feed(&c.bytes[i], 1);
            EXPECT_EQ(ok, i < c.fail_at) << "byte " << i;
        }
    }
}

TEST(Utf8, TruncatedSequencesAreIncompleteNotFailed) {
    const std::vector<Bytes> truncated = {
        B({0xC2}),
        B({0xE0, 0xA0}),
        B({0xED, 0x9F}),
        B({0xF0, 0x90, 0x80}),
        B({0xF4, 0x8F, 0xBF}),
        B({'o', 'k', 0xE2, 0x82}),
    };
    for (const auto& t : truncated) {
        Utf8Validator v;
        EXPECT_TRUE(v.feed(t.data(), t.size()));
        EXPECT_FALSE(v.failed());
        EXPECT_FALSE(v.complete());
        EXPECT_FALSE(is_valid_utf8(std::span<const std::uint8_t>(t)));
    }
}

TEST(Utf8, FailureIsStickyUntilReset) {
    Utf8Validator v;
    const std::uint8_t bad = 0xFF;
    EXPECT_FALSE(v.feed(&bad, 1));
    EXPECT_FALSE(v.feed("all ascii now"));
    EXPECT_TRUE(v.failed());
    v.reset();
    EXPECT_TRUE(v.feed("fine"));
    EXPECT_TRUE(v.complete());
}

TEST(Utf8, AllCodePointsRoundTrip) {
    // Encode every scalar value and check it validates; surrogates must not.
    for (std::uint32_t cp = 0; cp <= 0x10FFFF; cp += (cp < 0x3000 ? 1 : 97)) {
        Bytes b;
        if (cp < 0x80) {
            b = {static_cast<std::uint8_t>(cp)};
        } else if (cp < 0x800) {
            b = {static_cast<std::uint8_t>(0xC0 | (cp >> 6)),
                 static_cast<std::uint8_t>(0x80 | (cp & 0x3F))};
        } else if (cp < 0x10000) {
            b = {static_cast<std::uint8_t>(0xE0 | (cp >> 12)),
                 static_cast<std::uint8_t>(0x80 | ((cp >> 6) & 0x3F)),
                 static_cast<std::uint8_t>(0x80 | (cp & 0x3F))};
        } else {
            b = {static_cast<std::uint8_t>(0xF0 | (cp >> 18)),
                 static_cast<std::uint8_t>(0x80 | ((cp >> 12) & 0x3F)),
                 static_cast<std::uint8_t>(0x80 | ((cp >> 6) & 0x3F)),
                 static_cast<std::uint8_t>(0x80 | (cp & 0x3F))};
        }
        const bool surrogate = cp >= 0xD800 && cp <= 0xDFFF;
        ASSERT_EQ(is_valid_utf8(std::span<const std::uint8_t>(b)), !surrogate) << std::hex << cp;
    }
}

TEST(Utf8, AgreesWithReferenceOnRandomInput) {
    std::mt19937 rng(12345);
    // Bias towards bytes that make interesting sequences.
    const std::uint8_t pool[] = {'a',  0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF,
                                 0xC0, 0xC1, 0xC2, 0xDF, 0xE0, 0xE1, 0xEC, 0xED,
                                 0xEE, 0xEF, 0xF0, 0xF1, 0xF3, 0xF4, 0xF5, 0xFF};
    std::uniform_int_distribution<std::size_t> pick(0, sizeof pool - 1);
    std::uniform_int_distribution<std::size_t> len(0, 24);
    int valid = 0;
    for (int iter = 0; iter < 200000; ++iter) {
        Bytes b(len(rng));
        for (auto& x : b)
            x = pool[pick(rng)];
        const bool expect = reference_valid(b);
        valid += expect;
        ASSERT_EQ(is_valid_utf8(std::span<const std::uint8_t>(b)), expect) << iter;
        // Split into two at a random point: same verdict.
        const std::size_t split = b.empty() ? 0 : rng() % (b.size() + 1);
        Utf8Validator v;
        const bool ok = v.feed(b.data(), split) && v.feed(b.data() + split, b.size() - split);
        ASSERT_EQ(ok && v.complete(), expect) << iter;
    }
    EXPECT_GT(valid, 1000);  // the generator does produce valid strings too
}

// --- Counting in valid text (Engine.IO v3 lengths, chat names) ------------------------------

const std::string kEuro = "\xe2\x82\xac";       // U+20AC, 3 bytes, 1 UTF-16 unit
const std::string kEAcute = "\xc3\xa9";         // U+00E9, 2 bytes, 1 unit
const std::string kEmoji = "\xf0\x9f\x98\x80";  // U+1F600, 4 bytes, 2 units (a surrogate pair)

TEST(Utf8, WholeStrings) {
    EXPECT_TRUE(is_valid_utf8(std::string_view("")));
    EXPECT_TRUE(is_valid_utf8("plain" + kEuro + kEmoji + kEAcute));
    EXPECT_TRUE(is_valid_utf8(std::string_view("\xef\xbf\xbf")));       // U+FFFF
    EXPECT_TRUE(is_valid_utf8(std::string_view("\xf4\x8f\xbf\xbf")));   // U+10FFFF
    EXPECT_FALSE(is_valid_utf8(std::string_view("\x80")));              // lone continuation
    EXPECT_FALSE(is_valid_utf8(std::string_view("\xc0\xaf")));          // overlong '/'
    EXPECT_FALSE(is_valid_utf8(std::string_view("\xe0\x80\xaf")));      // overlong, 3 bytes
    EXPECT_FALSE(is_valid_utf8(std::string_view("\xf0\x80\x80\xaf")));  // overlong, 4 bytes
    EXPECT_FALSE(is_valid_utf8(std::string_view("\xed\xa0\x80")));      // surrogate D800
    EXPECT_FALSE(is_valid_utf8(std::string_view("\xf4\x90\x80\x80")));  // above U+10FFFF
    EXPECT_FALSE(is_valid_utf8(std::string_view("\xe2\x82")));          // truncated
    EXPECT_FALSE(is_valid_utf8(std::string_view("\xff")));
}

TEST(Utf8, Utf16LengthCountsCodeUnits) {
    EXPECT_EQ(utf16_length(""), 0u);
    EXPECT_EQ(utf16_length("4hello"), 6u);
    EXPECT_EQ(utf16_length(kEAcute), 1u);
    EXPECT_EQ(utf16_length(kEuro), 1u);
    EXPECT_EQ(utf16_length(kEmoji), 2u);
    EXPECT_EQ(utf16_length("4" + kEuro + kEmoji + "a" + kEAcute), 6u);
}

TEST(Utf8, CodePointsAndSequenceLengths) {
    EXPECT_EQ(code_points(""), 0u);
    EXPECT_EQ(code_points("abc"), 3u);
    EXPECT_EQ(code_points("a" + kEAcute + kEuro + kEmoji), 4u);
    for (const std::string& s : {std::string("a"), kEAcute, kEuro, kEmoji})
        EXPECT_EQ(sequence_length(static_cast<std::uint8_t>(s[0])), s.size()) << s;
    // Every code point: its encoding's lead byte gives its length, and it counts once (twice in
    // UTF-16 above the BMP).
    for (std::uint32_t cp = 0; cp <= 0x10FFFF; cp += (cp < 0x800 ? 1 : 61)) {
        if (cp >= 0xD800 && cp <= 0xDFFF) continue;
        std::string s;
        if (cp < 0x80) {
            s += static_cast<char>(cp);
        } else if (cp < 0x800) {
            s += static_cast<char>(0xC0 | cp >> 6);
            s += static_cast<char>(0x80 | (cp & 0x3F));
        } else if (cp < 0x10000) {
            s += static_cast<char>(0xE0 | cp >> 12);
            s += static_cast<char>(0x80 | (cp >> 6 & 0x3F));
            s += static_cast<char>(0x80 | (cp & 0x3F));
        } else {
            s += static_cast<char>(0xF0 | cp >> 18);
            s += static_cast<char>(0x80 | (cp >> 12 & 0x3F));
            s += static_cast<char>(0x80 | (cp >> 6 & 0x3F));
            s += static_cast<char>(0x80 | (cp & 0x3F));
        }
        ASSERT_TRUE(is_valid_utf8(s)) << cp;
        ASSERT_EQ(sequence_length(static_cast<std::uint8_t>(s[0])), s.size()) << cp;
        ASSERT_EQ(code_points(s + "x" + s), 3u) << cp;
        ASSERT_EQ(utf16_length(s), cp < 0x10000 ? 1u : 2u) << cp;
    }
}

}  // namespace
}  // namespace steerchat::text
