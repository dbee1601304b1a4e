// The C++ jhash must equal the kernel's include/linux/jhash.h bit for bit: the BPF program
// computes the same function, and tests/tools predict its choice with this one.
#include <arpa/inet.h>
#include <gtest/gtest.h>

#include "steer/jhash.hpp"

using namespace steerchat::steer;

// Vectors computed by compiling the kernel's include/linux/jhash.h (mainline) in a throwaway C
// program on x86_64: jhash_1word(v, seed), jhash2(words, n, seed), jhash_3words(1, 2, 3, 99).
TEST(Jhash, OneWordMatchesKernelVectors) {
    EXPECT_EQ(jhash_1word(0, 0), 0x049396b8u);
    EXPECT_EQ(jhash_1word(1, 0), 0x72a82a9bu);
    EXPECT_EQ(jhash_1word(0x0100007f, 0), 0x66cb9b0eu);  // 127.0.0.1 as loaded on x86
    EXPECT_EQ(jhash_1word(0x0100007f, 0x9eb6e79f), 0x0427b90bu);
    EXPECT_EQ(jhash_1word(0xffffffff, 0xffffffff), 0xeae46760u);
}

TEST(Jhash, WordsMatchKernelVectors) {
    const std::uint32_t v6[4] = {0x000080fe, 0, 0x3b5e2b02, 0x0100fdfe};
    EXPECT_EQ(jhash2(v6, 0), 0x27ffcdf8u);
    EXPECT_EQ(jhash2(std::span<const std::uint32_t>(v6, 2), 7), 0xc33bc41bu);
    const std::uint32_t five[5] = {1, 2, 3, 4, 5};
    EXPECT_EQ(jhash2(five, 0x12345678), 0x3444de37u);
    EXPECT_EQ(jhash_3words(1, 2, 3, 99), 0x3181a1a7u);
}

TEST(Jhash, OneWordIsThreeWordsWithLengthInInitval) {
    for (std::uint32_t v : {0u, 1u, 0xdeadbeefu, 0x7f000001u})
        for (std::uint32_t seed : {0u, 42u, 0xffffffffu}) {
            const std::uint32_t w[1] = {v};
            EXPECT_EQ(jhash_1word(v, seed), jhash2(w, seed)) << v << " " << seed;
        }
}

TEST(Jhash, ClientHashUsesNetworkOrderBytes) {
    in_addr a{};
    inet_pton(AF_INET, "127.0.0.1", &a);
    EXPECT_EQ(hash_client(a, 0), jhash_1word(0x0100007f, 0));

    in6_addr m{};
    inet_pton(AF_INET6, "::ffff:127.0.0.1", &m);
    EXPECT_EQ(hash_client(m, 0, false), hash_client(a, 0)) << "v4-mapped hashes as IPv4";

    in6_addr x{}, y{};
    inet_pton(AF_INET6, "2001:db8:1:2::1", &x);
    inet_pton(AF_INET6, "2001:db8:1:2::ffff", &y);
    EXPECT_NE(hash_client(x, 5, false), hash_client(y, 5, false));
    EXPECT_EQ(hash_client(x, 5, true), hash_client(y, 5, true)) << "same /64";
}

TEST(Jhash, SeedChangesTheHash) {
    int same = 0;
    for (std::uint32_t v = 0; v < 1000; ++v)
        same += jhash_1word(v, 1) == jhash_1word(v, 2);
    EXPECT_LT(same, 3);
}
