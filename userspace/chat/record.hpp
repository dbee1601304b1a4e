// The ring record of a chat event: how a worker tells the others about a room message, a DM to a
// user on another worker, an online, an offline, a typing hint
// or a member joining or leaving a room (see chat.hpp, "One event
// model, one path").
//
// Layout (host byte order: every worker is the same binary on the same host), after the ring's
// own header (which carries the record type, wire_type() below):
//   u64 id, u64 ts, then (message only) u64 seq, then each string as u32 length + bytes:
//     message: room, from, text      dm: to, from, text      online, offline: name
//     typing: room, from (id and ts 0)      joined, left: room, from      revoked: name
//   A message of another host (written by the bridge, userspace/bridge) adds u64 order after
//   the text: the local id that orders it against join snapshots (its id is the one its own
//   host gave it; its seq is the room's on this host, given by SharedState::post_remote).
//   An offline, revoked, joined or left carries the login id of `from` in the ts field. The cid of
//   a message is not sent (only the sender's own copy, on the sender's worker, has it).
//
// Records come from shared memory that other processes write: decode() checks every length
// against the record's size and rejects unknown types, truncated records and trailing bytes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "chat/event.hpp"

namespace steerchat::chat::record {

// The fixed part of every record (at most): id, ts, seq, three string lengths and the order of
// a message of another host.
inline constexpr std::size_t kOverhead = 8 + 8 + 8 + 3 * 4 + 8;

namespace detail {
inline constexpr std::uint32_t kMaxWireType = 15;
// The one list of kinds in the record format: an exhaustive switch (a new kind is a compile
// error here until it has a number); 0 for a value that is no kind.
constexpr std::uint32_t wire_type(EventType type) noexcept {
    switch (type) {
        case EventType::message:
            return 1;
        case EventType::dm:
            return 2;
        case EventType::online:
            return 3;
        case EventType::offline:
            return 4;
        case EventType::typing:
            return 5;
        case EventType::joined:
            return 6;
        case EventType::left:
            return 7;
        case EventType::revoked:
            return 8;
    }
    return 0;
}
}  // namespace detail

// The ring record type of a kind (1, 2, ...; fixed numbers: they are the format), and back.
std::uint32_t wire_type(EventType type) noexcept;
std::optional<EventType> event_type(std::uint32_t wire) noexcept;

// Writes `ev`'s record into `out` (cleared first; reuse it to avoid allocating) and returns its
// ring record type.
std::uint32_t encode(const Event& ev, std::vector<std::byte>& out);

// The event of a record, or nothing if it is malformed. Its strings view `payload`.
std::optional<Event> decode(std::uint32_t wire, std::span<const std::byte> payload) noexcept;

}  // namespace steerchat::chat::record
