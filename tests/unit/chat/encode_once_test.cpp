// chat::EncodeOnce, the encode-once cache both protocol adapters use: one encoding per event
// serial (and scope), shared by every later recipient; the counters it keeps; the baseline mode.
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "chat/encode_once.hpp"

namespace chat = steerchat::chat;

namespace {

// An encoding that shares its bytes when copied, as ws::SharedFrame does.
using Shared = std::shared_ptr<const std::string>;

struct Encoder {
    int calls = 0;
    Shared operator()(const chat::Event& ev, std::string_view scope) {
        ++calls;
        return std::make_shared<const std::string>(std::string(scope) + ":" + std::string(ev.text));
    }
};

chat::Event event(std::uint64_t serial, std::string_view text) {
    chat::Event ev;
    ev.serial = serial;
    ev.text = text;
    return ev;
}

TEST(EncodeOnce, OneEncodingPerSerialSharedByEveryRecipient) {
    chat::AdapterStats stats;
    chat::EncodeOnce<Shared> cache(stats);
    Encoder enc;
    const chat::Event ev = event(7, "hi");
    std::vector<Shared> sent;
    for (int recipient = 0; recipient < 5; ++recipient)
        sent.push_back(cache.get(ev, [&] { return enc(ev, ""); }));
    EXPECT_EQ(enc.calls, 1);
    EXPECT_EQ(stats.encoded, 1u);
    EXPECT_EQ(stats.shared_sends, 4u);
    for (const Shared& s : sent)
        EXPECT_EQ(s.get(), sent[0].get()) << "the same bytes";
    EXPECT_EQ(*sent[0], ":hi");

    // The next event is encoded anew.
    const chat::Event next = event(8, "ho");
    EXPECT_EQ(*cache.get(next, [&] { return enc(next, ""); }), ":ho");
    EXPECT_EQ(enc.calls, 2);
    EXPECT_EQ(stats.encoded, 2u);
}

TEST(EncodeOnce, ScopesOfOneEventAreEncodedSeparately) {
    chat::AdapterStats stats;
    chat::EncodeOnce<Shared> cache(stats);
    Encoder enc;
    const chat::Event ev = event(3, "x");
    const Shared a = cache.get(ev, "/", [&] { return enc(ev, "/"); });
    const Shared a2 = cache.get(ev, "/", [&] { return enc(ev, "/"); });
    const Shared b = cache.get(ev, "/admin", [&] { return enc(ev, "/admin"); });
    EXPECT_EQ(a.get(), a2.get());
    EXPECT_NE(a.get(), b.get());
    EXPECT_EQ(*b, "/admin:x");
    EXPECT_EQ(enc.calls, 2);
    EXPECT_EQ(stats.encoded, 2u);
    EXPECT_EQ(stats.shared_sends, 1u);
}

TEST(EncodeOnce, SerialZeroIsNeverShared) {
    chat::AdapterStats stats;
    chat::EncodeOnce<Shared> cache(stats);
    Encoder enc;
    const chat::Event ev = event(0, "unnumbered");
    cache.get(ev, [&] { return enc(ev, ""); });
    cache.get(ev, [&] { return enc(ev, ""); });
    EXPECT_EQ(enc.calls, 2);
    EXPECT_EQ(stats.shared_sends, 0u);
}

TEST(EncodeOnce, DisabledEncodesEveryDelivery) {
    chat::AdapterStats stats;
    chat::EncodeOnce<Shared> cache(stats, false);
    EXPECT_FALSE(cache.enabled());
    Encoder enc;
    const chat::Event ev = event(9, "y");
    const Shared a = cache.get(ev, [&] { return enc(ev, ""); });
    const Shared b = cache.get(ev, [&] { return enc(ev, ""); });
    EXPECT_NE(a.get(), b.get());
    EXPECT_EQ(*a, *b);
    EXPECT_EQ(stats.encoded, 2u);
    EXPECT_EQ(stats.shared_sends, 0u);
}

}  // namespace
