// The JSON of a loss notice (chat::Gap), the same object in both protocols: the native "gap"
// event's fields and the Socket.IO "gap" event's argument (docs: the protocol's "Gaps").
#pragma once

#include <boost/json/array.hpp>
#include <boost/json/object.hpp>
#include <cstdint>
#include <optional>

#include "chat/chat.hpp"

namespace steerchat::chat {

inline boost::json::object gap_json(const Gap& g) {
    boost::json::array rooms;
    rooms.reserve(g.rooms.size());
    for (const RoomGap& r : g.rooms) {
        boost::json::object o{
            {"room", r.room}, {"seq", r.seq}, {"resent", r.resent}, {"missed", r.missed}};
        if (r.missed != 0) {
            o["missed_from"] = r.missed_from;
            o["missed_to"] = r.missed_to;
        }
        rooms.push_back(std::move(o));
    }
    return {{"last_id", g.last_id}, {"lost", g.records}, {"rooms", std::move(rooms)}};
}

// A client's `since` (the last id it saw): a non-negative integer; nullopt for anything else.
inline std::optional<std::uint64_t> since_of(const boost::json::value& v) {
    if (const auto* u = v.if_uint64()) return *u;
    if (const auto* i = v.if_int64(); i && *i >= 0) return static_cast<std::uint64_t>(*i);
    return std::nullopt;
}

}  // namespace steerchat::chat
