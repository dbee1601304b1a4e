// The native JSON chat protocol on GET /ws: one JSON object per text frame, translated into
// chat::Session calls; chat::Events encoded as JSON text frames, once per event per worker.
//
//   client -> server                          server -> client
//   {"type":"login","name":N}                 {"type":"welcome","name":N,"users":[...]}
//   {"type":"join","room":R}                  {"type":"joined","room":R,"members":[...],
//                                               "history":[message objects, oldest first]}
//   {"type":"leave","room":R}                 {"type":"left","room":R}
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
//                                             {"type":"online"|"offline","name":N}
//   errors: {"type":"error","code":C,"message":M} (+"cid" when the request had one); codes
//   bad_request (malformed JSON, not an object, unknown type, missing or mistyped field, binary
//   frame), not_logged_in, already_logged_in, bad_name, name_taken, bad_room, not_in_room (say,
//   leave or typing in a room not joined), no_such_user, too_long, server_full, rate_limited
//   (more requests than --chat-rate / --chat-burst allow; --chat-rate-close-after of them in a
//   row close the connection with 1008), too_many_rooms (--chat-max-rooms-per-user). The
//   connection stays usable after an error.
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
#include "ws/connection.hpp"
#include "ws/frame.hpp"

namespace steerchat::native {

struct Stats {
    std::uint64_t requests = 0;      // text frames handled
    std::uint64_t errors = 0;        // error replies
    std::uint64_t encoded = 0;       // event frames encoded
    std::uint64_t shared_sends = 0;  // event frames sent reusing an encoding
};

// Per worker: the adapter's shared state (encode-once cache, counters). Outlives its handlers.
class Service {
  public:
    // encode_once = false encodes every delivery separately: the baseline that encode-once is
    // measured against in BENCHMARKS.md.
    explicit Service(chat::Hub& hub, bool encode_once = true)
        : hub_(hub), encode_once_(encode_once) {}
    Service(const Service&) = delete;
    Service& operator=(const Service&) = delete;

    // A handler for one accepted GET /ws connection.
    std::unique_ptr<ws::Handler> make_handler();

    chat::Hub& hub() noexcept { return hub_; }
    const Stats& stats() const noexcept { return stats_; }
    Stats& stats() noexcept { return stats_; }

    // The frame of `ev`, encoded at most once per event (keyed by ev.serial).
    const ws::SharedFrame& frame(const chat::Event& ev);

  private:
    chat::Hub& hub_;
    Stats stats_;
    bool encode_once_;
    std::uint64_t cached_serial_ = 0;
    ws::SharedFrame cached_;
};

// Where a session's frames go: the ws::Connection in the server, a recorder in tests.
struct Sink {
    virtual ~Sink() = default;
    virtual void send(ws::SharedFrame frame) = 0;
    virtual void close(std::uint16_t code, std::string_view reason) = 0;
};

// The protocol logic of one connection.
class Session final : public chat::Client {
  public:
    Session(Service& service, Sink& sink)
        : service_(service), sink_(sink), chat_(service.hub(), *this) {}

    // One complete client message.
    void on_text(std::string_view payload);
    void on_binary();
    // The connection is gone: end the chat session (frees the name).
    void on_closed() { chat_.logout(); }

    void deliver(const chat::Event& ev) override;

    chat::Session& chat() noexcept { return chat_; }

  private:
    // The request rate check (chat::Session::admit): false when refused (answered rate_limited,
    // or the connection closed 1008 when abusive).
    bool admit();
    void reply(const std::string& json);
    void error(std::string_view code, std::string_view message, const std::string* cid = nullptr);

    Service& service_;
    Sink& sink_;
    chat::Session chat_;  // last: destroyed (logout) while sink_ and service_ are still valid
};

// The ws::Handler registered for GET /ws.
class Handler final : public ws::Handler, private Sink {
  public:
    explicit Handler(Service& service) : session_(service, *this) {}

    void on_open(ws::Connection& conn) override { conn_ = &conn; }
    void on_message(ws::Connection& conn, ws::Opcode opcode, std::string_view payload) override;
    void on_close(ws::Connection& conn, std::uint16_t code) override;

  private:
    void send(ws::SharedFrame frame) override;
    void close(std::uint16_t code, std::string_view reason) override;

    ws::Connection* conn_ = nullptr;
    Session session_;
};

}  // namespace steerchat::native
