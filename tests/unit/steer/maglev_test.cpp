#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <stdexcept>
#include <vector>

#include "steer/jhash.hpp"
#include "steer/maglev.hpp"

using namespace steerchat::steer;

namespace {

std::vector<std::uint32_t> slots(std::uint32_t n) {
    std::vector<std::uint32_t> v(n);
    std::iota(v.begin(), v.end(), 0u);
    return v;
}

std::vector<std::size_t> counts(const std::vector<std::uint32_t>& table, std::uint32_t n) {
    std::vector<std::size_t> c(STEER_MAX_SLOTS, 0);
    for (auto s : table)
        ++c.at(s);
    c.resize(n);
    return c;
}

}  // namespace

TEST(Maglev, EveryBucketOwnedByALiveSlot) {
    auto t = maglev_table(std::vector<std::uint32_t>{3, 7, 11});
    ASSERT_EQ(t.size(), STEER_BUCKETS);
    for (auto s : t)
        EXPECT_TRUE(s == 3 || s == 7 || s == 11) << s;
}

TEST(Maglev, BalancedForOneToSixtyFourSlots) {
    for (std::uint32_t n = 1; n <= 64; ++n) {
        auto c = counts(maglev_table(slots(n)), n);
        auto [mn, mx] = std::minmax_element(c.begin(), c.end());
        ASSERT_GT(*mn, 0u) << "n=" << n;
        EXPECT_LE(static_cast<double>(*mx) / static_cast<double>(*mn), 1.02) << "n=" << n;
    }
}

TEST(Maglev, AddingASlotMovesAboutOneNth) {
    for (std::uint32_t n = 1; n <= 64; ++n) {
        auto a = maglev_table(slots(n));
        auto b = maglev_table(slots(n + 1));
        std::size_t moved = 0;
        for (std::size_t i = 0; i < a.size(); ++i)
            moved += a[i] != b[i];
        double frac = static_cast<double>(moved) / static_cast<double>(a.size());
        EXPECT_LE(frac, 1.0 / (n + 1) + 0.02) << "n=" << n << " -> " << n + 1;
    }
}

TEST(Maglev, RemovingASlotMovesMostlyItsOwnBuckets) {
    auto all = maglev_table(slots(4));
    auto three = maglev_table(std::vector<std::uint32_t>{0, 1, 3});
    std::size_t moved_others = 0, others = 0;
    for (std::size_t i = 0; i < all.size(); ++i) {
        if (all[i] == 2) {
            EXPECT_NE(three[i], 2u);
            continue;
        }
        ++others;
        moved_others += all[i] != three[i];
    }
    EXPECT_LE(static_cast<double>(moved_others) / static_cast<double>(others), 0.02);
}

TEST(Maglev, Deterministic) {
    EXPECT_EQ(maglev_table(slots(5)), maglev_table(slots(5)));
}

TEST(Maglev, RejectsBadInput) {
    EXPECT_THROW(maglev_table(std::vector<std::uint32_t>{}), std::invalid_argument);
    EXPECT_THROW(maglev_table(std::vector<std::uint32_t>{1, 1}), std::invalid_argument);
    EXPECT_THROW(maglev_table(std::vector<std::uint32_t>{STEER_MAX_SLOTS}), std::invalid_argument);
}

TEST(Predict, UsesBucketOwnerThenNextLiveSlot) {
    auto t = maglev_table(slots(4));
    bool live[4] = {true, true, true, true};
    for (std::uint32_t h : {0u, 1u, 12345u, 0xffffffffu})
        EXPECT_EQ(predict_slot(h, t, live), static_cast<int>(t[h % STEER_BUCKETS]));

    // Find a hash whose bucket belongs to slot 3 and empty slot 3: the scan wraps to 0.
    std::uint32_t h = 0;
    while (t[h % STEER_BUCKETS] != 3)
        ++h;
    live[3] = false;
    EXPECT_EQ(predict_slot(h, t, live), 0);
    live[0] = false;
    EXPECT_EQ(predict_slot(h, t, live), 1);
    bool none[4] = {false, false, false, false};
    EXPECT_EQ(predict_slot(h, t, none), -1);
}
