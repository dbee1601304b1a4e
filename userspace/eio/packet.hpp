// Engine.IO packet and payload codecs, protocol v4 (engine.io 4+/socket.io 3+, EIO=4) and v3
// (engine.io 3 / socket.io-client 2.x, EIO=3). Pure functions: no I/O, no state.
//
// Packet:  "<type digit><data>", type 0 open, 1 close, 2 ping, 3 pong, 4 message, 5 upgrade,
//          6 noop. A binary packet carries raw bytes in `data`.
//   v4: only messages are binary. In text form (polling payloads, or a text WebSocket frame from a
//       client without binary support) a binary message is "b<base64>"; a binary WebSocket frame
//       is the raw bytes.
//   v3: any type may be binary. Text form "b<type digit><base64>"; a binary WebSocket frame (and a
//       binary packet in a binary payload) is the type as a raw byte (0x00..0x06) + the bytes.
//
// Polling payloads (several packets in one HTTP body):
//   v4: packets joined with '\x1e' (record separator): "4hello\x1e4\xe2\x82\xac\x1ebAQIDBA==".
//   v3 string: "<length>:<packet>" repeated, the length counted in UTF-16 code units of the
//       packet text (JavaScript's String.length): "6:4hello2:4\xe2\x82\xac". "0:" is an empty
//       payload.
//   v3 binary (Content-Type application/octet-stream; sent by a client that supports binary when
//       it has binary packets, and expected back by such a client when the server has some): per
//       packet [0x00 text | 0x01 binary][decimal digits of the length, one byte 0..9 each][0xFF]
//       [packet], the length counted in bytes: a text packet's UTF-8 "<type><data>", a binary
//       packet's type byte + bytes.
//
// Decoding never trusts lengths: truncated input, unknown types, bad base64, bad UTF-8 (v3 string
// payloads only) are rejected. UTF-8 checks and UTF-16 lengths: text/utf8.hpp; base64:
// text/base64.hpp.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace steerchat::eio {

enum class PacketType : char {
    open = '0',
    close = '1',
    ping = '2',
    pong = '3',
    message = '4',
    upgrade = '5',
    noop = '6'
};

struct Packet {
    PacketType type = PacketType::message;
    bool binary = false;  // data is raw bytes (a binary message), not text
    std::string data;     // the text after the type char, or the raw bytes of a binary packet

    friend bool operator==(const Packet&, const Packet&) = default;
};

// A text packet of `type` with `data` ("" for packets without data).
Packet text_packet(PacketType type, std::string_view data = {});
// A binary message holding `bytes`.
Packet binary_message(std::string_view bytes);

// The type for a type digit '0'..'6', else nullopt.
std::optional<PacketType> packet_type_from_char(char c);

// Decodes one packet in text form: "<type digit><data>", or a base64 binary packet ("b<base64>"
// = binary message for protocol 4, "b<type digit><base64>" for protocol 3). Empty input, an
// unknown type or bad base64 -> nullopt.
std::optional<Packet> decode_text_packet(std::string_view s, int protocol = 4);

// The text form of `p`: "<type><data>"; a binary packet as "b<base64>" (protocol 4, written as a
// message whatever p.type is) or "b<type><base64>" (protocol 3).
std::string encode_text_packet(const Packet& p, int protocol = 4);

// Decodes one WebSocket message (the reassembled payload; binary_frame = opcode was binary).
// Text frames as decode_text_packet. Binary frames: protocol 4 -> a binary message holding the
// whole payload (may be empty); protocol 3 -> first byte the type (0x00..0x06), the rest the
// data (an empty frame or a bad type byte -> nullopt).
std::optional<Packet> decode_ws_frame(std::string_view payload, bool binary_frame, int protocol);

// The WebSocket message payload for `p`; send it as a binary frame iff p.binary. Text packets
// -> "<type><data>"; binary packets -> the bytes (protocol 4) or type byte + bytes (protocol 3).
std::string encode_ws_frame(const Packet& p, int protocol);

// v4 polling payload: splits `body` on '\x1e' and decodes every part (a part starting with 'b'
// is a base64 binary message). Appends the packets to `out` and returns true; on any bad part
// (empty, unknown type, bad base64; so also an empty body) returns false and leaves `out` as it
// was.
bool decode_payload_v4(std::string_view body, std::vector<Packet>& out);

// Appends `p` to a v4 polling payload under construction (a '\x1e' first if `out` is
// non-empty). Binary packets are written "b<base64>".
void append_payload_v4(std::string& out, const Packet& p);

// v3 string payload ("<len>:<packet>..." with UTF-16 lengths; see above). Appends the packets to
// `out` and returns true; returns false, leaving `out` as it was, on an empty body, invalid UTF-8,
// a missing/non-decimal/over-long length, a length that runs past the end or splits a surrogate
// pair, or a bad packet. Zero-length entries ("0:") are skipped, as engine.io-parser 2 does.
bool decode_payload_v3_string(std::string_view body, std::vector<Packet>& out);

// Appends "<len>:<packet>" for `p` (binary packets as "b<type><base64>"). An empty payload is
// "0:" (append nothing and send "0:" if there is nothing to send).
void append_payload_v3_string(std::string& out, const Packet& p);

// v3 binary payload (see above). Appends the packets to `out` and returns true; false (leaving
// `out` as it was) on an empty body, a marker byte other than 0/1, a length digit > 9, a missing
// 0xFF, no or too many length digits, a length running past the end, or a bad packet.
bool decode_payload_v3_binary(std::string_view body, std::vector<Packet>& out);

// Appends `p` to a v3 binary payload: text packets as 0x00 entries (UTF-8 "<type><data>"),
// binary packets as 0x01 entries (type byte + bytes).
void append_payload_v3_binary(std::string& out, const Packet& p);

}  // namespace steerchat::eio
