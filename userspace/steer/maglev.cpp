#include "maglev.hpp"

#include <stdexcept>

#include "jhash.hpp"

namespace steerchat::steer {

namespace {
// Fixed seeds for the two permutation hashes: the table must not depend on the host seed, so
// the userspace prediction and a restarted master agree.
constexpr std::uint32_t kOffsetSeed = 0x6d61676c;  // "magl"
constexpr std::uint32_t kSkipSeed = 0x65763031;    // "ev01"
}  // namespace

std::vector<std::uint32_t> maglev_table(std::span<const std::uint32_t> live, std::uint32_t size) {
    if (live.empty()) throw std::invalid_argument("maglev_table: no live slot");
    if (size < 2) throw std::invalid_argument("maglev_table: table size must be a prime >= 2");
    std::vector<bool> seen(STEER_MAX_SLOTS, false);
    for (auto s : live) {
        if (s >= STEER_MAX_SLOTS || seen[s])
            throw std::invalid_argument(
                "maglev_table: slot ids must be unique and < STEER_MAX_SLOTS");
        seen[s] = true;
    }

    const std::size_t n = live.size();
    std::vector<std::uint64_t> offset(n), skip(n), next(n, 0);
    for (std::size_t i = 0; i < n; ++i) {
        offset[i] = jhash_1word(live[i], kOffsetSeed) % size;
        skip[i] = jhash_1word(live[i], kSkipSeed) % (size - 1) + 1;
    }

    constexpr std::uint32_t kEmpty = ~0u;
    std::vector<std::uint32_t> table(size, kEmpty);
    std::uint32_t filled = 0;
    for (;;) {
        for (std::size_t i = 0; i < n; ++i) {
            std::uint64_t c = (offset[i] + next[i] * skip[i]) % size;
            while (table[c] != kEmpty) {
                ++next[i];
                c = (offset[i] + next[i] * skip[i]) % size;
            }
            table[c] = live[i];
            ++next[i];
            if (++filled == size) return table;
        }
    }
}

int predict_slot(std::uint32_t hash, std::span<const std::uint32_t> table,
                 std::span<const bool> slot_live) {
    if (table.empty() || slot_live.empty()) return -1;
    const std::uint32_t nslots = static_cast<std::uint32_t>(slot_live.size());
    const std::uint32_t first = table[hash % table.size()];
    for (std::uint32_t i = 0; i < nslots; ++i) {
        const std::uint32_t s = (first + i) % nslots;
        if (slot_live[s]) return static_cast<int>(s);
    }
    return -1;
}

}  // namespace steerchat::steer
