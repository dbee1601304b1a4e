// Socket.IO packet codec (the string part; binary attachments travel as separate Engine.IO
// binary messages and are not handled here). Protocol v5 (socket.io 3/4) and v4 (socket.io 2).
//
//   <type digit>[<attachments>-][<nsp>,][<ack id>][<JSON payload>]
//
//   2["foo"]                       EVENT on "/"
//   2/admin,13["foo"]              EVENT on "/admin" with ack id 13
//   312[]                          ACK 12, empty argument list
//   0/admin,{"token":"123"}        CONNECT to "/admin" with an auth payload (v5)
//   51-["baz",{"_placeholder":true,"num":0}]   BINARY_EVENT, one attachment follows
//   1/admin,                       DISCONNECT from "/admin"
//
// v4 (socket.io 2.x clients) differences, all handled by the same decode/encode:
//   - type 4 is ERROR (v5 renamed it CONNECT_ERROR): payload a string or an object, same encoding;
//   - the CONNECT for "/" has no payload ("0"), and the server sends it unprompted;
//   - a CONNECT's namespace may carry the client's query: "0/admin?token=abc," -> nsp
//     "/admin?token=abc" (split it at '?' before looking the namespace up);
//   - old encoders omit the ',' after the namespace when nothing follows ("1/admin"): accepted.
//
// JSON is parsed with boost::json (nesting depth at most 32, strict UTF-8, no comments).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <boost/json/value.hpp>

namespace steerchat::sio {

enum class Type : std::uint8_t {
    connect = 0,
    disconnect = 1,
    event = 2,
    ack = 3,
    connect_error = 4,  // "ERROR" in protocol v4
    binary_event = 5,
    binary_ack = 6
};

struct Packet {
    Type type = Type::event;
    std::string nsp = "/";
    std::optional<std::uint64_t> id;         // ack id
    std::optional<boost::json::value> data;  // absent when the packet has no payload
    std::size_t attachments = 0;  // binary_event / binary_ack: binary attachments that follow

    friend bool operator==(const Packet&, const Packet&) = default;
};

// Largest ack id accepted by decode: 2^53 - 1, the largest integer a JavaScript peer represents
// exactly (JS numbers are doubles).
inline constexpr std::uint64_t max_ack_id = (std::uint64_t{1} << 53) - 1;
// Largest attachment count accepted by decode (the server should enforce a much lower limit).
inline constexpr std::size_t max_attachments = 999'999;

// Decodes one Socket.IO packet from the text of an Engine.IO message. Validates like
// socket.io-parser 4 (protocol v5):
//   CONNECT: no payload or an object;  DISCONNECT: no payload;
//   CONNECT_ERROR / ERROR: a string or an object;
//   EVENT / BINARY_EVENT: an array whose first element is a number or a string that is not a
//     reserved event name (connect, connect_error, disconnect, disconnecting, newListener,
//     removeListener);
//   ACK / BINARY_ACK: an array (possibly empty).
// Also rejects: empty input, an unknown type, a missing, non-decimal or too large attachment
// count or a missing '-' after it, an ack id above max_ack_id, invalid JSON, numbers out of the
// double range (1e400: they could not be relayed as JSON). On failure returns
// nullopt and, if `why` is non-null, stores a short reason there. Placeholders in binary packets
// are left in `data` as they are: check them with placeholders_valid().
std::optional<Packet> decode(std::string_view text, std::string* why = nullptr);

// The text form of `p` (the inverse of decode): the namespace is written (followed by ',') only
// if it is not "/" (or empty), the ack id if present, the payload with boost::json::serialize
// (a JSON null payload is omitted, as socket.io-parser does).
// Binary types get the "<attachments>-" prefix. Preconditions: nsp starts with '/' and has no ','.
std::string encode(const Packet& p);

// True if the packet's type is one of the event types (event, binary_event) / ack types.
bool is_event(Type t);
bool is_ack(Type t);
// True if `t` carries binary attachments (binary_event, binary_ack).
bool is_binary(Type t);

// True if every placeholder object ({"_placeholder":true,...}) anywhere in `v` has an integer
// "num" in [0, attachments). With require_each, every index in [0, attachments) must also be
// referenced at least once.
bool placeholders_valid(const boost::json::value& v, std::size_t attachments,
                        bool require_each = false);

// {"_placeholder":true,"num":num}, the stand-in for binary attachment `num`.
boost::json::value make_placeholder(std::size_t num);

// The reserved event names a peer may not emit.
bool is_reserved_event(std::string_view name);

}  // namespace steerchat::sio
