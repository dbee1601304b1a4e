// The native JSON chat protocol on GET /ws: one JSON object per text frame, translated into
// chat::Participant calls; chat::Events encoded as JSON text frames, once per event per worker.
//
//   client -> server                          server -> client
//   {"type":"login","name":N}                 {"type":"welcome","name":N,"users":[...]}
//                                             past --chat-presence-max-users online: "users"
//                                             has that many names, +"count":C,"partial":true
//   {"type":"who"[,"after":P][,"limit":L]}    {"type":"who","users":[...],"count":C,"next":P2}
//                                             a page of the online names (at most
//                                             --chat-presence-max-users); "next" the "after"
//                                             of the next page, null at the end
//   {"type":"join","room":R}                  {"type":"joined","room":R,"members":[...],
//                                               "history":[message objects, oldest first]}
//                                             every other member of R who joined before, on
//                                             any worker: {"type":"member_joined","room":R,
//                                             "name":N}
//   {"type":"leave","room":R}                 {"type":"left","room":R}; ditto
//                                             {"type":"member_left","room":R,"name":N} (a logout
//                                             or disconnect sends "offline" only: it means N left
//                                             every room)
//   {"type":"say","room":R,"text":T,"cid":C}  {"type":"message","room":R,"from":N,"text":T,
//                                               "id":ID,"ts":MS} (+"cid":C on the sender's copy)
//   {"type":"dm","to":M,"text":T}             M gets {"type":"dm","from":N,"to":M,"text":T,
//                                               "id":ID,"ts":MS}
//   {"type":"typing","room":R}                every other member of R, on any worker, gets
//                                             {"type":"typing","room":R,"from":N}; no answer
//                                             (not stored, not echoed; more than
//                                             --chat-typing-rate / --chat-typing-burst allow
//                                             are dropped silently)
//   {"type":"logout"}                         the name is freed; the server closes with 1000
//                                             {"type":"online"|"offline","name":N}: to every
//                                             user while at most --chat-presence-max-users are
//                                             online; past it a login is announced to no one
//                                             (who shares a room learns of it from the room),
//                                             an offline to who knew it online or shares a room
//   errors: {"type":"error","code":C,"message":M} (+"cid" when the request had one); codes
//   bad_request (malformed JSON, not an object, unknown type, missing or mistyped field, binary
//   frame), not_logged_in, already_logged_in, bad_name, name_taken, bad_room, not_in_room (say,
//   leave or typing in a room not joined), no_such_user, too_long, server_full, rate_limited
//   (more requests than --chat-rate / --chat-burst allow; --chat-rate-close-after of them in a
//   row close the connection with 1008), too_many_rooms (--chat-max-rooms-per-user), too_many_names
//   (--chat-max-names-per-ip). The connection stays usable after an error.
//
// Wiring in a worker (after the chat::Hub):
//   native::Service native(hub);
//   worker.add_websocket_route("/ws", [&](const net::Request&) { return native.make_handler(); });
//
// Threading: the worker's event loop thread.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "chat/chat.hpp"
#include "chat/encode_once.hpp"
#include "ws/connection.hpp"
#include "ws/frame.hpp"

namespace steerchat::native {

// requests: text and binary frames handled; errors: error replies; encoded / shared_sends: event
// frames encoded / sent reusing an encoding (chat/encode_once.hpp).
using Stats = chat::AdapterStats;

// Per worker: the adapter's shared state (encode-once cache, counters). Outlives its handlers.
class Service {
  public:
    // encode_once = false encodes every delivery separately: the baseline that encode-once is
    // measured against in BENCHMARKS.md.
    // `metrics`: the worker's slot block for the stats (nullptr: kept here).
    explicit Service(chat::Hub& hub, bool encode_once = true, metrics::Slot* metrics = nullptr)
        : hub_(hub), stats_(metrics), frames_(*stats_, encode_once) {}
    Service(const Service&) = delete;
    Service& operator=(const Service&) = delete;

    // A handler for one accepted GET /ws connection.
    std::unique_ptr<ws::MessageHandler> make_handler();

    chat::Hub& hub() noexcept { return hub_; }
    const Stats& stats() const noexcept { return *stats_; }
    Stats& stats() noexcept { return *stats_; }

    // The frame of `ev`, encoded at most once per event (keyed by ev.serial).
    const ws::SharedFrame& frame(const chat::Event& ev);

  private:
    chat::Hub& hub_;
    metrics::Cell<Stats> stats_;
    chat::EncodeOnce<ws::SharedFrame> frames_;  // counts into stats_
};

// Where a Protocol's frames go: the ws::WebSocketConnection in the server, a recorder in tests.
struct Sink {
    virtual ~Sink() = default;
    virtual void send(ws::SharedFrame frame) = 0;
    virtual void close(std::uint16_t code, std::string_view reason) = 0;
};

// The native protocol spoken with one client: its JSON requests in, replies and chat events out
// through its Sink.
class Protocol final : public chat::Client {
  public:
    Protocol(Service& service, Sink& sink)
        : service_(service), sink_(sink), chat_(service.hub(), *this) {}

    // One complete client message.
    void on_text(std::string_view payload);
    void on_binary();
    // The connection is gone: end the chat session (frees the name).
    void on_closed() { chat_.logout(); }

    void deliver(const chat::Event& ev) override;
    void gap(const chat::Gap& g) override;

    chat::Participant& chat() noexcept { return chat_; }

  private:
    // The request rate check (chat::Participant::admit): false when refused (answered rate_limited,
    // or the connection closed 1008 when abusive).
    bool admit();
    void reply(const std::string& json);
    void error(std::string_view code, std::string_view message, const std::string* cid = nullptr);

    Service& service_;
    Sink& sink_;
    chat::Participant chat_;  // last: destroyed (logout) while sink_ and service_ are still valid
};

// The /ws WebSocket endpoint of one connection: the ws::MessageHandler that feeds its Protocol and
// is its Sink over the ws::WebSocketConnection.
class WsEndpoint final : public ws::MessageHandler, private Sink {
  public:
    explicit WsEndpoint(Service& service) : service_(service), protocol_(service, *this) {}

    void on_open(ws::WebSocketConnection& conn) override {
        conn_ = &conn;
        ++service_.stats().connections;
        protocol_.chat().set_address(chat::address_key(conn.remote_endpoint().address(),
                                                       service_.hub().limits().ipv6_prefix64));
    }
    void on_message(ws::WebSocketConnection& conn, ws::Opcode opcode,
                    std::string_view payload) override;
    void on_close(ws::WebSocketConnection& conn, std::uint16_t code) override;

  private:
    void send(ws::SharedFrame frame) override;
    void close(std::uint16_t code, std::string_view reason) override;

    Service& service_;
    ws::WebSocketConnection* conn_ = nullptr;
    Protocol protocol_;
};

}  // namespace steerchat::native
