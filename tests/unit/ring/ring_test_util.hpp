// Helpers shared by the ring unit tests.
#pragma once

#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>
#include <span>
#include <thread>
#include <vector>

#include "ring/ring.hpp"
#include "support/child_process.hpp"
#include "support/pipe.hpp"

namespace ring_test {

// Deterministic payload of record `seq` of `writer`: the first 8 bytes carry seq (when the
// payload is at least 8 bytes), the rest a pattern derived from (writer, seq, index).
inline std::byte pattern(unsigned writer, std::uint64_t seq, std::size_t i) {
    return static_cast<std::byte>((writer * 131u + seq * 7u + i * 13u + (seq >> 8)) & 0xFFu);
}

inline void fill_payload(std::span<std::byte> out, unsigned writer, std::uint64_t seq) {
    std::size_t i = 0;
    if (out.size() >= 8) {
        std::memcpy(out.data(), &seq, 8);
        i = 8;
    }
    for (; i < out.size(); ++i)
        out[i] = pattern(writer, seq, i);
}

inline std::vector<std::byte> make_payload(unsigned writer, std::uint64_t seq, std::size_t size) {
    std::vector<std::byte> v(size);
    fill_payload(v, writer, seq);
    return v;
}

inline bool payload_ok(std::span<const std::byte> p, unsigned writer, std::uint64_t seq) {
    std::size_t i = 0;
    if (p.size() >= 8) {
        std::uint64_t got;
        std::memcpy(&got, p.data(), 8);
        if (got != seq) return false;
        i = 8;
    }
    for (; i < p.size(); ++i)
        if (p[i] != pattern(writer, seq, i)) return false;
    return true;
}

inline std::uint64_t fnv1a(std::uint64_t h, std::span<const std::byte> p) {
    for (std::byte b : p) {
        h ^= static_cast<std::uint64_t>(b);
        h *= 0x100000001b3ULL;
    }
    return h;
}
inline constexpr std::uint64_t kFnvBasis = 0xcbf29ce484222325ULL;

struct Got {
    unsigned writer;
    std::uint32_t type;
    std::vector<std::byte> payload;
};

// Polls until nothing is pending; returns records and losses in delivery order.
struct Drained {
    std::vector<Got> records;
    std::vector<steerchat::ring::Loss> losses;
    std::vector<int> order;  // 0 = record, 1 = loss
};

inline Drained drain(steerchat::ring::Reader& r) {
    Drained d;
    while (r.poll(
               [&](const steerchat::ring::Record& rec) {
                   d.records.push_back(
                       {rec.writer, rec.type, {rec.payload.begin(), rec.payload.end()}});
                   d.order.push_back(0);
               },
               [&](const steerchat::ring::Loss& l) {
                   d.losses.push_back(l);
                   d.order.push_back(1);
               }) != 0 ||
           r.pending()) {
    }
    return d;
}

using steerchat::test_support::fork_child;
using steerchat::test_support::wait_child;

using steerchat::test_support::Pipe;

}  // namespace ring_test
