// The chat over Socket.IO: the seed application's events and rooms with acknowledgements,
// translated into chat::Session calls on the same chat core as the native /ws protocol (a
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
//                                               text}]}
//   leave room | {room}           (ack)       ack {ok:true, room}
//   say {room, text[, cid]}       (ack)       ack {ok:true, id, ts}; every member of the room,
//                                             the sender included: message {room, from, text,
//                                             id, ts} (+cid on the sender's copy)
//   typing room | {room}          (ack)       ack {ok:true, room}; every other member of the
//                                             room, on any worker: typing {room, from} (not
//                                             stored, not echoed; more than --chat-typing-rate
//                                             / --chat-typing-burst allow are dropped silently)
//
// Errors: with an ack callback the ack is {ok:false, error:<code>, message}; without one the
// sender gets the event chaterror {event, error, message}. Codes as in the native protocol
// (bad_request, not_logged_in, already_logged_in, bad_name, name_taken, bad_room, not_in_room,
// no_such_user, too_long, server_full, rate_limited, too_many_rooms). The connection stays
// usable after an error; --chat-rate-close-after rate_limited answers in a row end the namespace
// connection (a DISCONNECT from the server: the client does not reconnect by itself).
//
// Encode once: a chat event is encoded once per worker and namespace and its WebSocket frame is
// shared by every Socket.IO recipient on WebSocket.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "chat/chat.hpp"
#include "eio/socketio.hpp"

namespace steerchat::socketio_chat {

struct Stats {
    std::uint64_t events = 0;        // client events handled
    std::uint64_t errors = 0;        // error answers
    std::uint64_t encoded = 0;       // chat events encoded
    std::uint64_t shared_sends = 0;  // deliveries reusing an encoding
};

class Service {
  public:
    explicit Service(chat::Hub& hub, bool encode_once = true)
        : hub_(hub), encode_once_(encode_once) {}
    Service(const Service&) = delete;
    Service& operator=(const Service&) = delete;

    // A namespace serving this chat.
    sio::Namespace make_namespace(std::string name);

    chat::Hub& hub() noexcept { return hub_; }
    Stats& stats() noexcept { return stats_; }
    const Stats& stats() const noexcept { return stats_; }

    // The encoding of `ev` for namespace `nsp`, made at most once per (event, namespace).
    const sio::Encoded& encoded(const chat::Event& ev, std::string_view nsp);

  private:
    chat::Hub& hub_;
    Stats stats_;
    bool encode_once_;
    std::uint64_t cached_serial_ = 0;
    std::string cached_nsp_;
    sio::Encoded cached_;
};

}  // namespace steerchat::socketio_chat
