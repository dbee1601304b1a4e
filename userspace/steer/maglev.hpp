// Maglev consistent hashing (Eisenbud et al., NSDI 2016) for the bucket table: which worker slot
// owns each of the STEER_BUCKETS buckets. Every live slot gets floor or ceil of buckets/slots
// entries, and adding or removing one slot moves about 1/N of the buckets.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "steer.h"

namespace steerchat::steer {

// Builds the table over `live` slot ids (each < STEER_MAX_SLOTS, no duplicates, not empty).
// A slot's permutation depends on its id only, so the same slot keeps most of its buckets
// whatever else is live. Throws std::invalid_argument on bad input.
std::vector<std::uint32_t> maglev_table(std::span<const std::uint32_t> live,
                                        std::uint32_t size = STEER_BUCKETS);

// The slot the BPF program selects for a client hash, given the table and which slots hold a
// socket: the bucket's slot, else the next live slot in order (wrapping within nslots).
// Returns -1 when no slot is live.
int predict_slot(std::uint32_t hash, std::span<const std::uint32_t> table,
                 std::span<const bool> slot_live);

}  // namespace steerchat::steer
