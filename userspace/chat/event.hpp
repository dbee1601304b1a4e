// The chat core's one event model: what the core delivers to adapters (Client::deliver) and what
// travels between workers as a ring record (record.hpp). A closed set of kinds, one plain struct
// of views (no allocation per event: the strings point into the request being handled or into
// the ring record being read, and live for the duration of the delivery).
//
// Adding a kind: the recipe "Adding a chat event" in docs/architecture.md. Add it to EventType,
// then fix every switch the compiler reports (-Wswitch, part of -Wall, makes a switch over
// EventType without a case for it an error; no switch over EventType has a `default:`): the
// record layout (record.hpp), the Hub's routing (hub.cpp: Hub::travels, Hub::stale,
// Hub::deliver) and each adapter's encoding (native, socketio_chat).
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace steerchat::chat {

enum class EventType : std::uint8_t {
    message,  // to every member of `room`
    dm,       // to the user `to`
    // presence of `from`: to every logged-in session (not when `local`: more users were online
    // than Limits::presence_max_users, see "Presence at scale" in docs/architecture.md)
    online,
    offline,  // ends the login `login`: to the sessions that knew it online or share a room
    typing,   // `from` is typing in `room`: to every other member (a hint: no id, no history)
    joined,   // `from` (login `login`) joined `room`: to every other member who joined before
    left,     // `from` (login `login`) left `room`: ditto (not sent on logout: offline implies it)
    // Between hosts: `from` (login `login`) lost its name to a login on another host (the name
    // claim in Redis, userspace/bridge): its session here is told name_taken and logged out.
    // Written only by the bridge, after the name's `offline`.
    revoked,
};

struct Event {
    EventType type = EventType::message;
    // Set by the Hub at delivery, worker-unique: every recipient of the same encoding sees the
    // same serial (adapters cache their encoding keyed by it).
    std::uint64_t serial = 0;
    std::uint64_t id = 0;   // host-wide, increasing (0 for typing)
    std::uint64_t seq = 0;  // message: the room's sequence number (1, 2, ... per room)
    std::int64_t ts = 0;    // ms since the epoch (message, dm)
    // A message of another host (--redis): the local id that orders it against this host's join
    // snapshots (its `id` is its own host's). 0: `id` orders it.
    std::uint64_t order = 0;
    std::uint64_t login = 0;  // offline, joined, left: the id of the online event of `from`
    std::string_view room;    // message, typing, joined, left
    std::string_view from;    // message, dm, typing; the user for online/offline/joined/left
    std::string_view to;      // dm
    std::string_view text;    // message, dm
    std::string_view cid;     // message: only the sender's copy, and only if the sender gave one
    // online: announced to no session host-wide (the host had more users online than
    // Limits::presence_max_users at this login).
    bool local = false;
    // offline: the rooms `from` was in (pack_name), so that their members are told; not
    // rooms_known: unknown (a user of another host, or too many to carry in a record).
    bool rooms_known = false;
    std::string_view rooms;
    bool has_cid = false;  // (the cid stays on this worker: it is not part of the record)
    // steady_clock ns when this worker's Hub accepted it (publish, or read from another worker's
    // log); frames carry it so the connection can observe the delivery latency. Not recorded.
    std::uint64_t accepted_ns = 0;
};

// A list of names in one string (Event::rooms): each as a u32 length (host order) and its bytes.
inline void pack_name(std::string& out, std::string_view name) {
    const auto n = static_cast<std::uint32_t>(name.size());
    char len[4];
    std::memcpy(len, &n, 4);
    out.append(len, 4);
    out.append(name);
}

// Calls fn(name) for each name of a packed list; false (after the valid ones) if it is malformed.
template <class Fn>
bool each_packed(std::string_view packed, Fn&& fn) {
    while (!packed.empty()) {
        std::uint32_t n = 0;
        if (packed.size() < 4) return false;
        std::memcpy(&n, packed.data(), 4);
        if (packed.size() - 4 < n) return false;
        fn(packed.substr(4, n));
        packed.remove_prefix(4 + std::size_t{n});
    }
    return true;
}

}  // namespace steerchat::chat
