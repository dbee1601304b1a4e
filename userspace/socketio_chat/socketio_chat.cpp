#include "socketio_chat/socketio_chat.hpp"

#include "net/worker.hpp"

#include <algorithm>
#include <boost/asio/post.hpp>
#include <boost/json/array.hpp>
#include <boost/json/object.hpp>
#include <utility>

#include "chat/gap_json.hpp"

namespace steerchat::socketio_chat {

namespace json = boost::json;

namespace {

json::array history_json(const std::vector<chat::HistoryItem>& items) {
    json::array out;
    out.reserve(items.size());
    for (const auto& m : items)
        out.push_back(json::object{
            {"id", m.id}, {"seq", m.seq}, {"ts", m.ts}, {"from", m.from}, {"text", m.text}});
    return out;
}

json::array names_json(const std::vector<std::string>& names) {
    json::array out;
    out.reserve(names.size());
    for (const auto& n : names)
        out.emplace_back(n);
    return out;
}

// The string argument `key` of an object, or the argument itself when it is a string.
const json::string* string_arg(const json::array& args, std::string_view key) {
    if (args.size() < 2) return nullptr;
    const auto& a = args[1];
    if (a.is_string()) return &a.as_string();
    if (!a.is_object()) return nullptr;
    const auto* v = a.as_object().if_contains(key);
    return v && v->is_string() ? &v->as_string() : nullptr;
}

const json::string* field(const json::array& args, std::string_view key) {
    if (args.size() < 2 || !args[1].is_object()) return nullptr;
    const auto* v = args[1].as_object().if_contains(key);
    return v && v->is_string() ? &v->as_string() : nullptr;
}

std::string_view sv(const json::string& s) {
    return {s.data(), s.size()};
}

// The Socket.IO event (name and arguments) of a chat event as every recipient gets it.
json::array event_args(const chat::Event& ev) {
    json::array args;
    switch (ev.type) {
        case chat::EventType::message: {
            json::object o{{"room", ev.room}, {"from", ev.from}, {"text", ev.text},
                           {"id", ev.id},     {"seq", ev.seq},   {"ts", ev.ts}};
            if (ev.has_cid) o["cid"] = ev.cid;
            args = {"message", std::move(o)};
            break;
        }
        case chat::EventType::dm:
            args = {"newMessage", json::object{{"from", ev.from}, {"text", ev.text}}};
            break;
        case chat::EventType::online:
            args = {"newClientOnline", json::object{{"email", ev.from}}};
            break;
        case chat::EventType::offline:
            args = {"clientOffline", ev.from};
            break;
        case chat::EventType::typing:
            args = {"typing", json::object{{"room", ev.room}, {"from", ev.from}}};
            break;
        case chat::EventType::joined:
            args = {"memberJoined", json::object{{"room", ev.room}, {"name", ev.from}}};
            break;
        case chat::EventType::left:
            args = {"memberLeft", json::object{{"room", ev.room}, {"name", ev.from}}};
            break;
        case chat::EventType::revoked:
            // Logged out: the name was taken on another host at the same time.
            args = {"usernametaken", json::object{{"err", "Username is taken: choose another one"},
                                                  {"address", ev.from}}};
            break;
    }
    return args;
}

// The sio::EventHandler of one client in one namespace: feeds its Protocol, and is its Sink over
// the sio::Socket.
class SioEndpoint final : public sio::EventHandler, private Sink {
  public:
    SioEndpoint(Service& service, sio::Socket& socket, std::uint64_t since)
        : socket_(socket), protocol_(service, *this) {
        protocol_.set_since(since);
        protocol_.chat().set_address(chat::address_key(socket.engine().remote().address(),
                                                       service.hub().limits().ipv6_prefix64));
    }

    void on_event(sio::Socket&, const json::array& args, std::span<const std::string>,
                  std::optional<std::uint64_t> ack) override {
        protocol_.on_event(args, ack);
    }
    void on_disconnect(sio::Socket&, std::string_view) override { protocol_.on_disconnect(); }

  private:
    const std::string& nsp() const override { return socket_.nsp(); }
    void emit(const json::array& args) override { socket_.emit(args); }
    void ack(std::uint64_t id, const json::array& args) override { socket_.ack(id, args); }
    void send(const sio::Encoded& e) override { socket_.send(e); }
    void disconnect_later() override {
        // Posted: the disconnect destroys this handler. The socket may be gone by then (freed)
        // or have left meanwhile (disconnect() then does nothing): the lifetime rule's weak_ptr.
        boost::asio::post(socket_.engine().server().worker().io(),
                          [socket = socket_.weak_from_this()] {
                              if (auto s = socket.lock()) s->disconnect();
                          });
    }

    sio::Socket& socket_;
    Protocol protocol_;  // last: logs out while the members above are valid
};

}  // namespace

sio::Namespace Service::make_namespace(std::string name) {
    return sio::Namespace{std::move(name), [this](sio::Socket& s, const json::object& auth) {
                              // auth {since}: the last id seen, for every join (a reconnect).
                              std::uint64_t since = 0;
                              if (const auto* v = auth.if_contains("since"))
                                  since = chat::since_of(*v).value_or(0);
                              return std::make_unique<SioEndpoint>(*this, s, since);
                          }};
}

const sio::Encoded& Service::encoded(const chat::Event& ev, std::string_view nsp) {
    return events_.get(ev, nsp, [&] {
        auto e = sio::encode_event(nsp, event_args(ev));
        e.frame.set_stamp(ev.accepted_ns);
        return e;
    });
}

// ---------------------------------------------------------------------------------------------

void Protocol::on_event(const json::array& args, std::optional<std::uint64_t> ack) {
    ++service_.stats().requests;
    if (closing_) return;
    const std::string_view name = args[0].is_string() ? sv(args[0].as_string()) : "?";
    if (const auto e = chat_.admit(); e != chat::Error::none) {
        if (!chat_.abusive()) return fail(ack, name, e);
        // Like the native protocol's close 1008: the server ends this namespace connection
        // (the client does not reconnect on its own after a server disconnect).
        closing_ = true;
        sink_.disconnect_later();
        return;
    }
    if (!args[0].is_string()) return fail(ack, "?", chat::Error::none, "event name");
    ack_ = ack;
    if (name == "createsession") return createsession(args);
    if (name == "newMessage") return new_message(args);
    if (name == "logout") return logout();
    if (name == "join") return join(args);
    if (name == "leave") return leave(args);
    if (name == "say") return say(args);
    if (name == "typing") return typing(args);
    if (name == "who") return who(args);
    fail(ack, name, chat::Error::none, "unknown event");
}

void Protocol::deliver(const chat::Event& ev) {
    sink_.send(service_.encoded(ev, sink_.nsp()));
}

void Protocol::gap(const chat::Gap& g) {
    emit("gap", chat::gap_json(g));
}

void Protocol::emit(std::string_view event, json::value arg) {
    json::array args;
    args.reserve(2);
    args.emplace_back(event);
    args.push_back(std::move(arg));
    sink_.emit(args);
}

// An error answer: through the ack if the client gave one, else a chaterror event.
// chat::Error::none with `what` set means a malformed request (bad_request).
void Protocol::fail(std::optional<std::uint64_t> ack, std::string_view event, chat::Error e,
                    std::string_view what) {
    ++service_.stats().errors;
    std::string message = e == chat::Error::none ? "malformed request: " + std::string(what)
                                                 : std::string(chat::message_of(e));
    const std::string_view code = e == chat::Error::none ? "bad_request" : chat::code_of(e);
    if (ack) {
        sink_.ack(*ack,
                  json::array{json::object{{"ok", false}, {"error", code}, {"message", message}}});
        return;
    }
    emit("chaterror", json::object{{"event", event}, {"error", code}, {"message", message}});
}

void Protocol::ok(json::object result) {
    if (!ack_) return;
    json::object out{{"ok", true}};
    for (auto& kv : result)
        out.insert_or_assign(kv.key(), std::move(kv.value()));
    sink_.ack(*ack_, json::array{std::move(out)});
}

void Protocol::createsession(const json::array& args) {
    const auto* email = field(args, "email");
    if (!email) return fail(ack_, "createsession", chat::Error::none, "{email} expected");
    chat::Welcome w;
    const auto e = chat_.login(sv(*email), &w);
    if (e == chat::Error::name_taken) {
        ++service_.stats().errors;
        const auto* ip = field(args, "clientIP");
        emit("usernametaken", json::object{{"err", "Username is taken: choose another one"},
                                           {"address", ip ? *ip : *email}});
        if (ack_) fail(ack_, "createsession", e);
        return;
    }
    if (e != chat::Error::none) return fail(ack_, "createsession", e);
    emit("accessgranted", names_json(w.users));
    // Past --chat-presence-max-users the list is cut: the ack says how many are online.
    if (w.partial)
        ok({{"name", *email}, {"count", w.count}, {"partial", true}});
    else
        ok({{"name", *email}});
}

void Protocol::new_message(const json::array& args) {
    const auto* to = field(args, "to");
    const auto* text = field(args, "message");
    if (!to || !text) return fail(ack_, "newMessage", chat::Error::none, "{to, message} expected");
    chat::Said said;
    const auto e = chat_.dm(sv(*to), sv(*text), &said);
    if (e == chat::Error::no_such_user) {
        ++service_.stats().errors;
        emit("clientNotFound", *to);
        if (ack_) fail(ack_, "newMessage", e);
        return;
    }
    if (e != chat::Error::none) return fail(ack_, "newMessage", e);
    ok({{"id", said.id}, {"ts", said.ts}});
}

void Protocol::logout() {
    if (!chat_.logged_in()) return fail(ack_, "logout", chat::Error::not_logged_in);
    chat_.logout();
    sink_.emit(json::array{"loggedOut"});  // no arguments, as the seed app sends it
    ok({});
}

void Protocol::join(const json::array& args) {
    const auto* room = string_arg(args, "room");
    if (!room) return fail(ack_, "join", chat::Error::none, "room name expected");
    // {room, since}: the last id seen (a reconnect; else the connection's auth.since, if any).
    std::uint64_t since = since_;
    if (args.size() >= 2 && args[1].is_object())
        if (const auto* v = args[1].as_object().if_contains("since")) {
            const auto n = chat::since_of(*v);
            if (!n) return fail(ack_, "join", chat::Error::none, "since: an integer >= 0");
            since = *n;
        }
    chat::Joined j;
    const auto e = chat_.join(sv(*room), &j, since);
    if (e != chat::Error::none) return fail(ack_, "join", e);
    json::object result{{"room", *room},
                        {"members", names_json(j.members)},
                        {"history", history_json(j.history)},
                        {"seq", j.seq}};
    if (since != 0) result["complete"] = j.complete;
    ok(std::move(result));
}

void Protocol::leave(const json::array& args) {
    const auto* room = string_arg(args, "room");
    if (!room) return fail(ack_, "leave", chat::Error::none, "room name expected");
    const auto e = chat_.leave(sv(*room));
    if (e != chat::Error::none) return fail(ack_, "leave", e);
    ok({{"room", *room}});
}

void Protocol::say(const json::array& args) {
    const auto* room = field(args, "room");
    const auto* text = field(args, "text");
    if (!room || !text) return fail(ack_, "say", chat::Error::none, "{room, text} expected");
    const auto* cid = field(args, "cid");
    chat::Said said;
    const auto e =
        chat_.say(sv(*room), sv(*text), cid ? sv(*cid) : std::string_view{}, cid != nullptr, &said);
    if (e != chat::Error::none) return fail(ack_, "say", e);
    ok({{"id", said.id}, {"seq", said.seq}, {"ts", said.ts}});
}

// A page of the online names: the ack {ok, users, count, next}, or without an ack the event
// "who" with the same object.
void Protocol::who(const json::array& args) {
    std::uint64_t after = 0, limit = 0;
    if (args.size() >= 2 && args[1].is_object()) {
        for (const auto& [key, out] : {std::pair{"after", &after}, std::pair{"limit", &limit}})
            if (const auto* v = args[1].as_object().if_contains(key)) {
                const auto n = chat::since_of(*v);
                if (!n)
                    return fail(ack_, "who", chat::Error::none, "{after, limit}: integers >= 0");
                *out = *n;
            }
    }
    chat::Who w;
    const auto capped = static_cast<std::uint32_t>(std::min<std::uint64_t>(limit, 1u << 30));
    const auto e = chat_.who(after, capped, &w);
    if (e != chat::Error::none) return fail(ack_, "who", e);
    json::object result{{"users", names_json(w.users)}, {"count", w.count}};
    if (w.next != 0)
        result["next"] = w.next;
    else
        result["next"] = nullptr;
    if (!ack_) return emit("who", std::move(result));
    ok(std::move(result));
}

// No answer but the ack, if asked for (over its rate it is dropped silently, still ok).
void Protocol::typing(const json::array& args) {
    const auto* room = string_arg(args, "room");
    if (!room) return fail(ack_, "typing", chat::Error::none, "room name expected");
    const auto e = chat_.typing(sv(*room));
    if (e != chat::Error::none) return fail(ack_, "typing", e);
    ok({{"room", *room}});
}

}  // namespace steerchat::socketio_chat
