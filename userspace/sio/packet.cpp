#include "sio/packet.hpp"

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <vector>

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

namespace steerchat::sio {

namespace {

constexpr std::array<std::string_view, 6> kReservedEvents = {
    "connect", "connect_error", "disconnect", "disconnecting", "newListener", "removeListener"};

// Digits of max_ack_id (9007199254740991) and of max_attachments.
constexpr std::size_t kMaxAckIdDigits = 16;
constexpr std::size_t kMaxAttachmentDigits = 6;

bool is_digit(char c) {
    return c >= '0' && c <= '9';
}

std::optional<Packet> fail(std::string* why, const char* reason) {
    if (why) *why = reason;
    return std::nullopt;
}

// Checks the payload of a decoded packet of type `t`; returns the reason it is invalid or null.
const char* payload_problem(Type t, const std::optional<boost::json::value>& data) {
    switch (t) {
        case Type::connect:
            return !data || data->is_object() ? nullptr : "CONNECT payload must be an object";
        case Type::disconnect:
            return !data ? nullptr : "DISCONNECT takes no payload";
        case Type::connect_error:
            return data && (data->is_object() || data->is_string())
                       ? nullptr
                       : "CONNECT_ERROR payload must be an object or a string";
        case Type::event:
        case Type::binary_event: {
            if (!data || !data->is_array()) return "EVENT payload must be an array";
            const auto& a = data->get_array();
            if (a.empty()) return "EVENT payload must not be empty";
            const auto& name = a.front();
            if (name.is_number()) return nullptr;
            if (!name.is_string()) return "event name must be a string or a number";
            if (is_reserved_event(name.get_string())) return "reserved event name";
            return nullptr;
        }
        case Type::ack:
        case Type::binary_ack:
            return data && data->is_array() ? nullptr : "ACK payload must be an array";
    }
    return "unknown packet type";
}

// True if `v` holds a number JSON cannot express: boost::json parses an out-of-range literal
// such as 1e400 as an infinite double, which serialize() would write back as "Infinity".
bool has_non_finite(const boost::json::value& v) {
    if (v.is_double()) return !std::isfinite(v.get_double());
    if (v.is_array()) {
        for (const auto& e : v.get_array())
            if (has_non_finite(e)) return true;
    } else if (v.is_object()) {
        for (const auto& kv : v.get_object())
            if (has_non_finite(kv.value())) return true;
    }
    return false;
}

void collect_placeholders(const boost::json::value& v, std::size_t attachments, bool& ok,
                          std::vector<bool>& seen) {
    if (!ok) return;
    if (v.is_array()) {
        for (const auto& e : v.get_array())
            collect_placeholders(e, attachments, ok, seen);
        return;
    }
    if (!v.is_object()) return;
    const auto& o = v.get_object();
    const auto* marker = o.if_contains("_placeholder");
    if (marker && marker->is_bool() && marker->get_bool()) {
        const auto* num = o.if_contains("num");
        std::uint64_t n = 0;
        if (num && num->is_int64() && num->get_int64() >= 0) {
            n = static_cast<std::uint64_t>(num->get_int64());
        } else if (num && num->is_uint64()) {
            n = num->get_uint64();
        } else {
            ok = false;
            return;
        }
        if (n >= attachments) {
            ok = false;
            return;
        }
        if (!seen.empty()) seen[static_cast<std::size_t>(n)] = true;
        return;
    }
    for (const auto& kv : o)
        collect_placeholders(kv.value(), attachments, ok, seen);
}

}  // namespace

bool is_event(Type t) {
    return t == Type::event || t == Type::binary_event;
}
bool is_ack(Type t) {
    return t == Type::ack || t == Type::binary_ack;
}
bool is_binary(Type t) {
    return t == Type::binary_event || t == Type::binary_ack;
}

bool is_reserved_event(std::string_view name) {
    return std::find(kReservedEvents.begin(), kReservedEvents.end(), name) != kReservedEvents.end();
}

std::optional<Packet> decode(std::string_view text, std::string* why) {
    if (text.empty()) return fail(why, "empty packet");
    if (text[0] < '0' || text[0] > '6') return fail(why, "unknown packet type");
    Packet p;
    p.type = static_cast<Type>(text[0] - '0');
    std::size_t i = 1;

    if (is_binary(p.type)) {
        const std::size_t dash = text.find('-', i);
        if (dash == std::string_view::npos || dash == i || dash - i > kMaxAttachmentDigits)
            return fail(why, "illegal attachments");
        for (std::size_t k = i; k < dash; ++k) {
            if (!is_digit(text[k])) return fail(why, "illegal attachments");
            p.attachments = p.attachments * 10 + static_cast<std::size_t>(text[k] - '0');
        }
        i = dash + 1;
    }

    if (i < text.size() && text[i] == '/') {
        const std::size_t comma = text.find(',', i);
        if (comma == std::string_view::npos) {
            p.nsp.assign(text.substr(i));
            i = text.size();
        } else {
            p.nsp.assign(text.substr(i, comma - i));
            i = comma + 1;
        }
    }

    if (i < text.size() && is_digit(text[i])) {
        std::size_t end = i;
        while (end < text.size() && is_digit(text[end]))
            ++end;
        std::uint64_t id = 0;
        if (end - i > kMaxAckIdDigits) return fail(why, "ack id too large");
        std::from_chars(text.data() + i, text.data() + end, id);
        if (id > max_ack_id) return fail(why, "ack id too large");
        p.id = id;
        i = end;
    }

    if (i < text.size()) {
        boost::system::error_code ec;
        auto v = boost::json::parse(text.substr(i), ec);
        if (ec) return fail(why, "invalid JSON");
        if (has_non_finite(v)) return fail(why, "invalid JSON (number out of range)");
        p.data = std::move(v);
    }

    if (const char* problem = payload_problem(p.type, p.data)) return fail(why, problem);
    return p;
}

std::string encode(const Packet& p) {
    std::string out;
    out += static_cast<char>('0' + static_cast<int>(p.type));
    char buf[24];
    if (is_binary(p.type)) {
        const auto r = std::to_chars(buf, buf + sizeof buf, p.attachments);
        out.append(buf, r.ptr);
        out += '-';
    }
    if (!p.nsp.empty() && p.nsp != "/") {
        out += p.nsp;
        out += ',';
    }
    if (p.id) {
        const auto r = std::to_chars(buf, buf + sizeof buf, *p.id);
        out.append(buf, r.ptr);
    }
    if (p.data && !p.data->is_null()) out += boost::json::serialize(*p.data);
    return out;
}

bool placeholders_valid(const boost::json::value& v, std::size_t attachments, bool require_each) {
    bool ok = true;
    std::vector<bool> seen(require_each ? attachments : 0, false);
    collect_placeholders(v, attachments, ok, seen);
    if (!ok) return false;
    if (require_each) return std::all_of(seen.begin(), seen.end(), [](bool s) { return s; });
    return true;
}

boost::json::value make_placeholder(std::size_t num) {
    return boost::json::object{{"_placeholder", true}, {"num", num}};
}

}  // namespace steerchat::sio
