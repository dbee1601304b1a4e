#include "chat/record.hpp"

#include <array>
#include <cstring>
#include <limits>
#include <string_view>
#include <type_traits>

namespace steerchat::chat::record {

namespace {

void put_u64(std::vector<std::byte>& out, std::uint64_t v) {
    const std::size_t at = out.size();
    out.resize(at + 8);
    std::memcpy(out.data() + at, &v, 8);
}

void put_str(std::vector<std::byte>& out, std::string_view s) {
    const auto n = static_cast<std::uint32_t>(s.size());
    const std::size_t at = out.size();
    out.resize(at + 4 + s.size());
    std::memcpy(out.data() + at, &n, 4);
    if (!s.empty()) std::memcpy(out.data() + at + 4, s.data(), s.size());
}

// Reads a record front to back; any read past the end clears `ok` and yields zeros/empty.
struct In {
    std::span<const std::byte> p;
    bool ok = true;

    std::uint64_t u64() noexcept {
        std::uint64_t v = 0;
        if (p.size() < 8) {
            ok = false;
            return 0;
        }
        std::memcpy(&v, p.data(), 8);
        p = p.subspan(8);
        return v;
    }
    std::string_view str() noexcept {
        std::uint32_t n = 0;
        if (p.size() < 4) {
            ok = false;
            return {};
        }
        std::memcpy(&n, p.data(), 4);
        if (p.size() - 4 < n) {
            ok = false;
            return {};
        }
        const std::string_view s(reinterpret_cast<const char*>(p.data() + 4), n);
        p = p.subspan(4 + std::size_t{n});
        return s;
    }
};

}  // namespace

std::uint32_t wire_type(EventType type) noexcept {
    return detail::wire_type(type);
}

namespace {

// wire type -> kind, made from detail::wire_type (the only list of kinds here).
constexpr auto kByWire = [] {
    std::array<std::optional<EventType>, detail::kMaxWireType + 1> table{};
    using U = std::underlying_type_t<EventType>;
    for (unsigned i = 0; i <= std::numeric_limits<U>::max(); ++i) {
        const auto t = static_cast<EventType>(i);
        if (const std::uint32_t w = detail::wire_type(t); w != 0) table[w] = t;
    }
    return table;
}();

}  // namespace

std::optional<EventType> event_type(std::uint32_t wire) noexcept {
    return wire < kByWire.size() ? kByWire[wire] : std::nullopt;
}

std::uint32_t encode(const Event& ev, std::vector<std::byte>& out) {
    out.clear();
    put_u64(out, ev.id);
    switch (ev.type) {
        case EventType::message:
            put_u64(out, static_cast<std::uint64_t>(ev.ts));
            put_u64(out, ev.seq);
            put_str(out, ev.room);
            put_str(out, ev.from);
            put_str(out, ev.text);
            // A message of another host (written by the bridge): its local order.
            if (ev.order != 0) put_u64(out, ev.order);
            break;
        case EventType::dm:
            put_u64(out, static_cast<std::uint64_t>(ev.ts));
            put_str(out, ev.to);
            put_str(out, ev.from);
            put_str(out, ev.text);
            break;
        case EventType::online:
            put_u64(out, ev.local ? 1 : 0);
            put_str(out, ev.from);
            break;
        case EventType::offline:
        case EventType::revoked:
            put_u64(out, ev.login);
            put_str(out, ev.from);
            // An offline's rooms (packed names), when known.
            if (ev.type == EventType::offline && ev.rooms_known) put_str(out, ev.rooms);
            break;
        case EventType::typing:
            put_u64(out, 0);
            put_str(out, ev.room);
            put_str(out, ev.from);
            break;
        case EventType::joined:
        case EventType::left:
            put_u64(out, ev.login);
            put_str(out, ev.room);
            put_str(out, ev.from);
            break;
    }
    return wire_type(ev.type);
}

std::optional<Event> decode(std::uint32_t wire, std::span<const std::byte> payload) noexcept {
    const std::optional<EventType> type = event_type(wire);
    if (!type) return std::nullopt;
    In in{payload};
    Event ev;
    ev.type = *type;
    ev.id = in.u64();
    const std::uint64_t ts = in.u64();
    switch (ev.type) {
        case EventType::message:
            ev.ts = static_cast<std::int64_t>(ts);
            ev.seq = in.u64();
            ev.room = in.str();
            ev.from = in.str();
            ev.text = in.str();
            if (in.ok && in.p.size() == 8) ev.order = in.u64();
            break;
        case EventType::dm:
            ev.ts = static_cast<std::int64_t>(ts);
            ev.to = in.str();
            ev.from = in.str();
            ev.text = in.str();
            break;
        case EventType::online:
            if (ts > 1) return std::nullopt;
            ev.local = ts == 1;
            ev.from = in.str();
            break;
        case EventType::offline:
        case EventType::revoked:
            ev.login = ts;
            ev.from = in.str();
            if (ev.type == EventType::offline && in.ok && !in.p.empty()) {
                ev.rooms = in.str();
                ev.rooms_known = true;
                if (!each_packed(ev.rooms, [](std::string_view) {})) return std::nullopt;
            }
            break;
        case EventType::typing:
            ev.room = in.str();
            ev.from = in.str();
            break;
        case EventType::joined:
        case EventType::left:
            ev.login = ts;
            ev.room = in.str();
            ev.from = in.str();
            break;
    }
    if (!in.ok || !in.p.empty()) return std::nullopt;
    return ev;
}

}  // namespace steerchat::chat::record
