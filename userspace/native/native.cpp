#include "native/native.hpp"

#include <boost/json.hpp>

#include <algorithm>
#include <optional>
#include <string>
#include <utility>
#include "chat/gap_json.hpp"

namespace steerchat::native {

namespace json = boost::json;

namespace {

json::string_view jsv(std::string_view s) {
    return {s.data(), s.size()};
}

json::array names(const std::vector<std::string>& v) {
    json::array a;
    a.reserve(v.size());
    for (const std::string& s : v)
        a.emplace_back(jsv(s));
    return a;
}

json::object message_object(std::string_view room, std::string_view from, std::string_view text,
                            std::uint64_t id, std::uint64_t seq, std::int64_t ts) {
    json::object o;
    o["type"] = "message";
    o["room"] = jsv(room);
    o["from"] = jsv(from);
    o["text"] = jsv(text);
    o["id"] = id;
    o["seq"] = seq;
    o["ts"] = ts;
    return o;
}

// A string field of `o`, or nullptr if it is missing or not a string.
const json::string* str_field(const json::object& o, std::string_view key) {
    const json::value* v = o.if_contains(jsv(key));
    return v ? v->if_string() : nullptr;
}

// (GCC 12 -O3 raises a false -Wrestrict on chains of std::string operator+.)
std::string concat(std::initializer_list<std::string_view> parts) {
    std::string s;
    for (std::string_view p : parts)
        s.append(p);
    return s;
}

std::string_view sv(const json::string& s) {
    return {s.data(), s.size()};
}

// Largest "cid" a client may attach to a "say", as JSON text (it comes back on its own copy).
constexpr std::size_t kMaxCidBytes = 256;

// A client's "cid" as the JSON text echoed back, or nullopt if it cannot be: longer than
// kMaxCidBytes, or a value JSON cannot carry back (1e400 parses as infinity, which serializes
// to text that no JSON parser accepts).
std::optional<std::string> cid_text(const json::value& v) {
    std::string text = json::serialize(v);
    if (text.size() > kMaxCidBytes) return std::nullopt;
    json::error_code ec;
    json::parse(jsv(text), ec);
    if (ec) return std::nullopt;
    return text;
}

// The JSON value of a cid_text() result (which always parses; a string if it somehow did not).
json::value cid_value(std::string_view text) {
    json::error_code ec;
    json::value v = json::parse(jsv(text), ec);
    return ec ? json::value(jsv(text)) : v;
}

// The JSON object of a chat event as every recipient gets it.
json::object event_object(const chat::Event& ev) {
    json::object o;
    switch (ev.type) {
        case chat::EventType::message:
            o = message_object(ev.room, ev.from, ev.text, ev.id, ev.seq, ev.ts);
            if (ev.has_cid) {
                // The cid is the request's JSON value, kept as its serialization.
                o["cid"] = cid_value(ev.cid);
            }
            break;
        case chat::EventType::dm:
            o["type"] = "dm";
            o["from"] = jsv(ev.from);
            o["to"] = jsv(ev.to);
            o["text"] = jsv(ev.text);
            o["id"] = ev.id;
            o["ts"] = ev.ts;
            break;
        case chat::EventType::online:
        case chat::EventType::offline:
            o["type"] = ev.type == chat::EventType::online ? "online" : "offline";
            o["name"] = jsv(ev.from);
            break;
        case chat::EventType::typing:
            o["type"] = "typing";
            o["room"] = jsv(ev.room);
            o["from"] = jsv(ev.from);
            break;
        case chat::EventType::revoked:
            // Logged out: the name was taken on another host at the same time (docs/scaling.md).
            o["type"] = "error";
            o["code"] = "name_taken";
            o["message"] = "that name was taken on another host at the same time: log in again";
            break;
        case chat::EventType::joined:
        case chat::EventType::left:
            // Not "joined"/"left": those answer the client's own join/leave.
            o["type"] = ev.type == chat::EventType::joined ? "member_joined" : "member_left";
            o["room"] = jsv(ev.room);
            o["name"] = jsv(ev.from);
            break;
    }
    return o;
}

}  // namespace

// ---------------------------------------------------------------------------------------------

std::unique_ptr<ws::MessageHandler> Service::make_handler() {
    return std::make_unique<WsEndpoint>(*this);
}

const ws::SharedFrame& Service::frame(const chat::Event& ev) {
    return frames_.get(ev, [&ev] {
        auto f = ws::SharedFrame::text(json::serialize(event_object(ev)));
        f.set_stamp(ev.accepted_ns);
        return f;
    });
}

// ---------------------------------------------------------------------------------------------

void Protocol::deliver(const chat::Event& ev) {
    sink_.send(service_.frame(ev));
}

void Protocol::gap(const chat::Gap& g) {
    json::object o = chat::gap_json(g);
    o["type"] = "gap";
    reply(json::serialize(o));
}

void Protocol::reply(const std::string& text) {
    sink_.send(ws::SharedFrame::text(text));
}

void Protocol::error(std::string_view code, std::string_view message, const std::string* cid) {
    ++service_.stats().errors;
    json::object o;
    o["type"] = "error";
    o["code"] = jsv(code);
    o["message"] = jsv(message);
    if (cid) o["cid"] = cid_value(*cid);
    reply(json::serialize(o));
}

bool Protocol::admit() {
    const chat::Error e = chat_.admit();
    if (e == chat::Error::none) return true;
    if (chat_.abusive()) {
        sink_.close(ws::close_code::policy_violation, "rate limit exceeded");
        return false;
    }
    error(chat::code_of(e), chat::message_of(e));
    return false;
}

void Protocol::on_binary() {
    ++service_.stats().requests;
    if (!admit()) return;
    error("bad_request", "send JSON in text frames");
}

void Protocol::on_text(std::string_view payload) {
    ++service_.stats().requests;
    if (!admit()) return;
    json::error_code ec;
    json::value v = json::parse(jsv(payload), ec);
    if (ec) return error("bad_request", concat({"malformed JSON: ", ec.message()}));
    const json::object* obj = v.if_object();
    if (!obj) return error("bad_request", "expected a JSON object");
    const json::string* type_s = str_field(*obj, "type");
    if (!type_s) return error("bad_request", "missing \"type\"");
    const std::string_view type = sv(*type_s);

    auto fail = [&](chat::Error e, const std::string* cid = nullptr) {
        error(chat::code_of(e), chat::message_of(e), cid);
    };
    auto missing = [&](std::string_view field) {
        error("bad_request", concat({"\"", type, "\" needs a string \"", field, "\""}));
    };

    if (type == "login") {
        const json::string* name = str_field(*obj, "name");
        if (!name) return missing("name");
        chat::Welcome w;
        if (const chat::Error e = chat_.login(sv(*name), &w); e != chat::Error::none)
            return fail(e);
        json::object o;
        o["type"] = "welcome";
        o["name"] = *name;
        o["users"] = names(w.users);
        if (w.partial) {  // past --chat-presence-max-users: `who` lists everyone
            o["count"] = w.count;
            o["partial"] = true;
        }
        return reply(json::serialize(o));
    }
    const bool known = type == "join" || type == "leave" || type == "say" || type == "dm" ||
                       type == "typing" || type == "logout" || type == "who";
    if (!known) return error("bad_request", concat({"unknown type \"", type, "\""}));
    // A say's cid comes back on every answer to it, errors included (not_logged_in too).
    std::optional<std::string> cid;
    if (type == "say") {
        const json::value* cidv = obj->if_contains("cid");
        if (cidv && !(cid = cid_text(*cidv)))
            return error("bad_request",
                         "\"cid\" must be JSON of at most 256 bytes with finite numbers");
    }
    const std::string* cidp = cid ? &*cid : nullptr;
    if (!chat_.logged_in()) return fail(chat::Error::not_logged_in, cidp);

    if (type == "logout") {
        chat_.logout();
        sink_.close(ws::close_code::normal, "logout");
        return;
    }
    if (type == "join") {
        const json::string* room = str_field(*obj, "room");
        if (!room) return missing("room");
        std::uint64_t since = 0;
        if (const json::value* sincev = obj->if_contains("since")) {
            const auto n = chat::since_of(*sincev);
            if (!n)
                return error("bad_request",
                             "\"since\" must be the last message id seen (an integer >= 0)");
            since = *n;
        }
        chat::Joined j;
        if (const chat::Error e = chat_.join(sv(*room), &j, since); e != chat::Error::none)
            return fail(e);
        json::object o;
        o["type"] = "joined";
        o["room"] = *room;
        o["members"] = names(j.members);
        json::array h;
        h.reserve(j.history.size());
        for (const chat::HistoryItem& m : j.history)
            h.emplace_back(message_object(sv(*room), m.from, m.text, m.id, m.seq, m.ts));
        o["history"] = std::move(h);
        o["seq"] = j.seq;
        if (since != 0) o["complete"] = j.complete;
        return reply(json::serialize(o));
    }
    if (type == "who") {
        std::uint64_t after = 0, limit = 0;
        for (const auto& [key, out] : {std::pair{"after", &after}, std::pair{"limit", &limit}}) {
            const json::value* v = obj->if_contains(key);
            if (!v) continue;
            const auto n = chat::since_of(*v);
            if (!n)
                return error("bad_request", concat({"\"", key,
                                                    "\" must be an integer >= 0 (\"after\": a "
                                                    "previous page's \"next\")"}));
            *out = *n;
        }
        chat::Who w;
        const auto capped = static_cast<std::uint32_t>(std::min<std::uint64_t>(limit, 1u << 30));
        if (const chat::Error e = chat_.who(after, capped, &w); e != chat::Error::none)
            return fail(e);
        json::object o;
        o["type"] = "who";
        o["users"] = names(w.users);
        o["count"] = w.count;
        if (w.next != 0)
            o["next"] = w.next;
        else
            o["next"] = nullptr;
        return reply(json::serialize(o));
    }
    if (type == "leave") {
        const json::string* room = str_field(*obj, "room");
        if (!room) return missing("room");
        if (const chat::Error e = chat_.leave(sv(*room)); e != chat::Error::none) return fail(e);
        json::object o;
        o["type"] = "left";
        o["room"] = *room;
        return reply(json::serialize(o));
    }
    if (type == "say") {
        const json::string* room = str_field(*obj, "room");
        const json::string* text = str_field(*obj, "text");
        if (!room || !text)
            return error("bad_request", "\"say\" needs a string \"room\" and a string \"text\"",
                         cidp);
        if (const chat::Error e =
                chat_.say(sv(*room), sv(*text), cid ? *cid : std::string_view{}, cid.has_value());
            e != chat::Error::none)
            return fail(e, cidp);
        return;
    }
    if (type == "typing") {  // no answer unless an error (over its rate: dropped silently)
        const json::string* room = str_field(*obj, "room");
        if (!room) return missing("room");
        if (const chat::Error e = chat_.typing(sv(*room)); e != chat::Error::none) return fail(e);
        return;
    }
    // dm
    const json::string* to = str_field(*obj, "to");
    const json::string* text = str_field(*obj, "text");
    if (!to || !text) return error("bad_request", "\"dm\" needs a string \"to\" and \"text\"");
    if (const chat::Error e = chat_.dm(sv(*to), sv(*text)); e != chat::Error::none) return fail(e);
}

// ---------------------------------------------------------------------------------------------

void WsEndpoint::on_message(ws::WebSocketConnection& conn, ws::Opcode opcode,
                            std::string_view payload) {
    conn_ = &conn;
    if (opcode == ws::Opcode::text)
        protocol_.on_text(payload);
    else
        protocol_.on_binary();
}

void WsEndpoint::on_close(ws::WebSocketConnection&, std::uint16_t) {
    --service_.stats().connections;
    protocol_.on_closed();
    conn_ = nullptr;
}

void WsEndpoint::send(ws::SharedFrame frame) {
    if (conn_) conn_->send(std::move(frame));
}

void WsEndpoint::close(std::uint16_t code, std::string_view reason) {
    if (conn_) conn_->close(code, reason);
}

}  // namespace steerchat::native
