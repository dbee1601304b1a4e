// The chat over Socket.IO: the seed application's events and rooms with acknowledgements,
// translated into chat::Participant calls on the same chat core as the native /ws protocol (a
// Socket.IO user and a native user see each other and exchange direct messages).
//
//   client emits                              server emits
//   createsession {email, clientIP}           accessgranted [names online, own included]
//                                             or usernametaken {err, address} (name in use)
//                                             everyone else: newClientOnline {email}
//   newMessage {to, message}                  to `to`: newMessage {from, text}
//                                             or to the sender: clientNotFound "<to>"
//   logout                                    loggedOut; everyone else: clientOffline "<name>"
//   join room | {room}            (ack)       ack {ok:true, room, members, history:[{id,ts,from,
//                                               text}]}; every other member who joined before,
//                                             on any worker: memberJoined {room, name}
//   leave room | {room}           (ack)       ack {ok:true, room}; ditto memberLeft {room, name}
//                                             (a logout or disconnect sends clientOffline only:
//                                             it means the user left every room)
//   say {room, text[, cid]}       (ack)       ack {ok:true, id, ts}; every member of the room,
//                                             the sender included: message {room, from, text,
//                                             id, ts} (+cid on the sender's copy)
//   who [{after, limit}]          (ack)       ack {ok:true, users, count, next}: a page of the
//                                             online names (at most --chat-presence-max-users;
//                                             next: the `after` of the next page, null at the
//                                             end); without an ack the event "who" {...}
//   (past --chat-presence-max-users online: accessgranted lists that many names, the
//   createsession ack adds {count, partial:true}, and newClientOnline / clientOffline reach
//   only those who share a room with the user: docs/architecture.md, "Presence at scale")
//   typing room | {room}          (ack)       ack {ok:true, room}; every other member of the
//                                             room, on any worker: typing {room, from} (not
//                                             stored, not echoed; more than --chat-typing-rate
//                                             / --chat-typing-burst allow are dropped silently)
//
// Errors: with an ack callback the ack is {ok:false, error:<code>, message}; without one the
// sender gets the event chaterror {event, error, message}. Codes as in the native protocol
// (bad_request, not_logged_in, already_logged_in, bad_name, name_taken, bad_room, not_in_room,
// no_such_user, too_long, server_full, rate_limited, too_many_rooms, too_many_names). The
// connection stays usable after an error; --chat-rate-close-after rate_limited answers in a row end
// the namespace connection (a DISCONNECT from the server: the client does not reconnect by itself).
//
// Encode once: a chat event is encoded once per worker and namespace and its WebSocket frame is
// shared by every Socket.IO recipient on WebSocket (chat/encode_once.hpp).
//
// Structure (as userspace/native): a Protocol is the chat logic of one client in one namespace:
// it takes the client's events and answers through a Sink. In the server the Sink is the
// sio::Socket (a sio::EventHandler made by Service::make_namespace); in tests it is a recorder.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include <boost/json/array.hpp>
#include <boost/json/value.hpp>

#include "chat/chat.hpp"
#include "chat/encode_once.hpp"
#include "sio/server.hpp"

namespace steerchat::socketio_chat {

// requests: client events handled; errors: error answers (acks, chaterror, usernametaken,
// clientNotFound); encoded / shared_sends: chat events encoded / deliveries reusing an encoding.
using Stats = chat::AdapterStats;

class Service {
  public:
    // encode_once = false encodes every delivery separately (--no-encode-once).
    // `metrics`: the worker's slot block for the stats (nullptr: kept here).
    explicit Service(chat::Hub& hub, bool encode_once = true, metrics::Slot* metrics = nullptr)
        : hub_(hub), stats_(metrics), events_(*stats_, encode_once) {}
    Service(const Service&) = delete;
    Service& operator=(const Service&) = delete;

    // A namespace serving this chat.
    sio::Namespace make_namespace(std::string name);

    chat::Hub& hub() noexcept { return hub_; }
    Stats& stats() noexcept { return *stats_; }
    const Stats& stats() const noexcept { return *stats_; }

    // The encoding of `ev` for namespace `nsp`, made at most once per (event, namespace).
    const sio::Encoded& encoded(const chat::Event& ev, std::string_view nsp);

  private:
    chat::Hub& hub_;
    metrics::Cell<Stats> stats_;
    chat::EncodeOnce<sio::Encoded> events_;  // counts into stats_
};

// Where a client's answers go: its sio::Socket in the server, a recorder in tests.
struct Sink {
    virtual ~Sink() = default;
    // The client's namespace ("/", ...).
    virtual const std::string& nsp() const = 0;
    // An EVENT: args[0] is the event name.
    virtual void emit(const boost::json::array& args) = 0;
    // An ACK of the client's event `id`.
    virtual void ack(std::uint64_t id, const boost::json::array& args) = 0;
    // A pre-encoded EVENT of nsp() (Service::encoded), shared with other recipients.
    virtual void send(const sio::Encoded& e) = 0;
    // Ends this namespace connection (a DISCONNECT from the server), after the current call
    // returns: the disconnect destroys the Protocol.
    virtual void disconnect_later() = 0;
};

// The chat logic of one Socket.IO client in one namespace: its events in, answers and chat
// events out through its Sink.
class Protocol final : public chat::Client {
  public:
    Protocol(Service& service, Sink& sink)
        : service_(service), sink_(sink), chat_(service.hub(), *this) {}

    // One client EVENT (args[0] the event name), `ack` set when it waits for an ACK.
    void on_event(const boost::json::array& args, std::optional<std::uint64_t> ack);
    // The client left the namespace or the connection ended: logs out (frees the name).
    void on_disconnect() { chat_.logout(); }

    void deliver(const chat::Event& ev) override;
    void gap(const chat::Gap& g) override;
    // The last id the client saw (its CONNECT's auth.since): the default `since` of its joins.
    void set_since(std::uint64_t since) noexcept { since_ = since; }

    chat::Participant& chat() noexcept { return chat_; }

  private:
    void emit(std::string_view event, boost::json::value arg);
    void fail(std::optional<std::uint64_t> ack, std::string_view event, chat::Error e,
              std::string_view what = {});
    void ok(boost::json::object result);
    void createsession(const boost::json::array& args);
    void new_message(const boost::json::array& args);
    void logout();
    void join(const boost::json::array& args);
    void leave(const boost::json::array& args);
    void say(const boost::json::array& args);
    void typing(const boost::json::array& args);
    void who(const boost::json::array& args);

    Service& service_;
    Sink& sink_;
    std::optional<std::uint64_t> ack_;
    bool closing_ = false;  // rate limit abuse: the disconnect is requested
    std::uint64_t since_ = 0;
    chat::Participant chat_;  // last: logs out while the members above are valid
};

}  // namespace steerchat::socketio_chat
