// The kernel's jhash (include/linux/jhash.h) in C++, and the client-address hash that
// bpf/steer.bpf.c computes, so tests and tools can predict the kernel's choice exactly.
#pragma once

#include <cstdint>
#include <cstring>
#include <span>

#include <netinet/in.h>

#include "steer.h"

namespace steerchat::steer {

constexpr std::uint32_t kJhashInitval = 0xdeadbeef;

constexpr std::uint32_t rol32(std::uint32_t w, unsigned s) {
    return (w << s) | (w >> (32 - s));
}

constexpr void jhash_mix(std::uint32_t& a, std::uint32_t& b, std::uint32_t& c) {
    a -= c, a ^= rol32(c, 4), c += b;
    b -= a, b ^= rol32(a, 6), a += c;
    c -= b, c ^= rol32(b, 8), b += a;
    a -= c, a ^= rol32(c, 16), c += b;
    b -= a, b ^= rol32(a, 19), a += c;
    c -= b, c ^= rol32(b, 4), b += a;
}

constexpr void jhash_final(std::uint32_t& a, std::uint32_t& b, std::uint32_t& c) {
    c ^= b, c -= rol32(b, 14);
    a ^= c, a -= rol32(c, 11);
    b ^= a, b -= rol32(a, 25);
    c ^= b, c -= rol32(b, 16);
    a ^= c, a -= rol32(c, 4);
    b ^= a, b -= rol32(a, 14);
    c ^= b, c -= rol32(b, 24);
}

// jhash2(): hash an array of 32-bit words.
constexpr std::uint32_t jhash2(std::span<const std::uint32_t> k, std::uint32_t initval) {
    std::uint32_t a, b, c;
    a = b = c = kJhashInitval + (static_cast<std::uint32_t>(k.size()) << 2) + initval;
    std::size_t i = 0, n = k.size();
    while (n > 3) {
        a += k[i], b += k[i + 1], c += k[i + 2];
        jhash_mix(a, b, c);
        i += 3, n -= 3;
    }
    switch (n) {
        case 3:
            c += k[i + 2];
            [[fallthrough]];
        case 2:
            b += k[i + 1];
            [[fallthrough]];
        case 1:
            a += k[i];
            jhash_final(a, b, c);
            break;
        default:
            break;
    }
    return c;
}

// __jhash_nwords(), jhash_3words(), jhash_1word().
constexpr std::uint32_t jhash_nwords(std::uint32_t a, std::uint32_t b, std::uint32_t c,
                                     std::uint32_t initval) {
    a += initval;
    b += initval;
    c += initval;
    jhash_final(a, b, c);
    return c;
}

constexpr std::uint32_t jhash_3words(std::uint32_t a, std::uint32_t b, std::uint32_t c,
                                     std::uint32_t initval) {
    return jhash_nwords(a, b, c, initval + kJhashInitval + (3 << 2));
}

constexpr std::uint32_t jhash_1word(std::uint32_t a, std::uint32_t initval) {
    return jhash_nwords(a, 0, 0, initval + kJhashInitval + (1 << 2));
}

// The 32-bit word the BPF program reads from the packet: the address bytes in network order,
// loaded as a host-order integer (memcpy, as bpf_skb_load_bytes does).
inline std::uint32_t word_of(const void* p) {
    std::uint32_t w;
    std::memcpy(&w, p, sizeof w);
    return w;
}

// The hash bpf/steer.bpf.c computes for an IPv4 client.
inline std::uint32_t hash_client(const in_addr& a, std::uint32_t seed) {
    return jhash_1word(word_of(&a.s_addr), seed);
}

// The hash for an IPv6 client; IPv4-mapped addresses hash as IPv4.
inline std::uint32_t hash_client(const in6_addr& a, std::uint32_t seed, bool prefix64) {
    std::uint32_t w[4];
    std::memcpy(w, a.s6_addr, sizeof w);
    if (IN6_IS_ADDR_V4MAPPED(&a)) return jhash_1word(w[3], seed);
    return jhash2(std::span<const std::uint32_t>(w, prefix64 ? 2 : 4), seed);
}

constexpr std::uint32_t bucket_of(std::uint32_t hash) {
    return hash % STEER_BUCKETS;
}

}  // namespace steerchat::steer
