#include "eio/packet.hpp"

#include <charconv>

#include "text/base64.hpp"
#include "text/utf8.hpp"

namespace steerchat::eio {

namespace {

constexpr char kSeparator = '\x1e';
// Longest length prefix accepted in v3 payloads (decimal digits): far beyond any body size.
constexpr std::size_t kMaxLengthDigits = 10;

unsigned char byte_at(std::string_view s, std::size_t i) {
    return static_cast<unsigned char>(s[i]);
}

bool is_protocol3(int protocol) {
    return protocol == 3;
}

std::optional<PacketType> packet_type_from_byte(unsigned char b) {
    if (b > 6) return std::nullopt;
    return static_cast<PacketType>('0' + b);
}

char type_byte(PacketType t) {
    return static_cast<char>(static_cast<char>(t) - '0');
}

void append_decimal(std::string& out, std::size_t n) {
    char buf[24];
    const auto r = std::to_chars(buf, buf + sizeof buf, n);
    out.append(buf, r.ptr);
}

void append_text_form(std::string& out, const Packet& p, int protocol) {
    if (p.binary) {
        out += 'b';
        if (is_protocol3(protocol)) out += static_cast<char>(p.type);
        text::base64_append(out, p.data);
    } else {
        out += static_cast<char>(p.type);
        out += p.data;
    }
}

// Runs `decode_all` on `out`; on failure drops whatever it appended.
template <typename F>
bool all_or_nothing(std::vector<Packet>& out, F&& decode_all) {
    const std::size_t before = out.size();
    if (decode_all()) return true;
    out.resize(before);
    return false;
}

}  // namespace

Packet text_packet(PacketType type, std::string_view data) {
    return Packet{type, false, std::string(data)};
}

Packet binary_message(std::string_view bytes) {
    return Packet{PacketType::message, true, std::string(bytes)};
}

std::optional<PacketType> packet_type_from_char(char c) {
    if (c < '0' || c > '6') return std::nullopt;
    return static_cast<PacketType>(c);
}

std::optional<Packet> decode_text_packet(std::string_view s, int protocol) {
    if (s.empty()) return std::nullopt;
    if (s[0] == 'b') {
        Packet p{PacketType::message, true, {}};
        std::string_view b64 = s.substr(1);
        if (is_protocol3(protocol)) {
            if (b64.empty()) return std::nullopt;
            const auto t = packet_type_from_char(b64[0]);
            if (!t) return std::nullopt;
            p.type = *t;
            b64.remove_prefix(1);
        }
        auto bytes = text::base64_decode(b64);
        if (!bytes) return std::nullopt;
        p.data = std::move(*bytes);
        return p;
    }
    const auto t = packet_type_from_char(s[0]);
    if (!t) return std::nullopt;
    return Packet{*t, false, std::string(s.substr(1))};
}

std::string encode_text_packet(const Packet& p, int protocol) {
    std::string out;
    append_text_form(out, p, protocol);
    return out;
}

std::optional<Packet> decode_ws_frame(std::string_view payload, bool binary_frame, int protocol) {
    if (!binary_frame) return decode_text_packet(payload, protocol);
    if (!is_protocol3(protocol)) return binary_message(payload);
    if (payload.empty()) return std::nullopt;
    const auto t = packet_type_from_byte(byte_at(payload, 0));
    if (!t) return std::nullopt;
    return Packet{*t, true, std::string(payload.substr(1))};
}

std::string encode_ws_frame(const Packet& p, int protocol) {
    if (!p.binary) return encode_text_packet(p, protocol);
    if (!is_protocol3(protocol)) return p.data;
    std::string out;
    out.reserve(1 + p.data.size());
    out += type_byte(p.type);
    out += p.data;
    return out;
}

bool decode_payload_v4(std::string_view body, std::vector<Packet>& out) {
    return all_or_nothing(out, [&] {
        std::size_t start = 0;
        while (true) {
            const std::size_t end = body.find(kSeparator, start);
            const std::string_view part = body.substr(
                start, end == std::string_view::npos ? std::string_view::npos : end - start);
            auto p = decode_text_packet(part, 4);
            if (!p) return false;
            out.push_back(std::move(*p));
            if (end == std::string_view::npos) return true;
            start = end + 1;
        }
    });
}

void append_payload_v4(std::string& out, const Packet& p) {
    if (!out.empty()) out += kSeparator;
    append_text_form(out, p, 4);
}

bool decode_payload_v3_string(std::string_view body, std::vector<Packet>& out) {
    if (body.empty() || !text::is_valid_utf8(body)) return false;
    return all_or_nothing(out, [&] {
        std::size_t i = 0;
        while (i < body.size()) {
            // "<decimal length>:"
            const std::size_t colon = body.find(':', i);
            if (colon == std::string_view::npos || colon == i || colon - i > kMaxLengthDigits)
                return false;
            std::size_t units = 0;
            const auto r = std::from_chars(body.data() + i, body.data() + colon, units);
            if (r.ec != std::errc{} || r.ptr != body.data() + colon) return false;
            // Walk `units` UTF-16 code units (the input is valid UTF-8).
            const std::size_t start = colon + 1;
            std::size_t j = start;
            while (units > 0) {
                if (j >= body.size()) return false;
                const std::size_t n = text::sequence_length(byte_at(body, j));
                const std::size_t u = n == 4 ? 2 : 1;
                if (u > units) return false;  // the length ends inside a surrogate pair
                units -= u;
                j += n;
            }
            if (j > start) {
                auto p = decode_text_packet(body.substr(start, j - start), 3);
                if (!p) return false;
                out.push_back(std::move(*p));
            }
            i = j;
        }
        return true;
    });
}

void append_payload_v3_string(std::string& out, const Packet& p) {
    const std::string encoded = encode_text_packet(p, 3);
    append_decimal(out, text::utf16_length(encoded));
    out += ':';
    out += encoded;
}

bool decode_payload_v3_binary(std::string_view body, std::vector<Packet>& out) {
    if (body.empty()) return false;
    return all_or_nothing(out, [&] {
        std::size_t i = 0;
        while (i < body.size()) {
            const unsigned char marker = byte_at(body, i++);
            if (marker > 1) return false;
            std::size_t len = 0;
            std::size_t digits = 0;
            while (true) {
                if (i >= body.size()) return false;
                const unsigned char d = byte_at(body, i++);
                if (d == 0xff) break;
                if (d > 9 || ++digits > kMaxLengthDigits) return false;
                len = len * 10 + d;
            }
            if (digits == 0 || len > body.size() - i) return false;
            const std::string_view entry = body.substr(i, len);
            i += len;
            std::optional<Packet> p;
            if (marker == 0) {
                p = decode_text_packet(entry, 3);
            } else if (!entry.empty()) {
                const auto t = packet_type_from_byte(byte_at(entry, 0));
                if (t) p = Packet{*t, true, std::string(entry.substr(1))};
            }
            if (!p) return false;
            out.push_back(std::move(*p));
        }
        return true;
    });
}

void append_payload_v3_binary(std::string& out, const Packet& p) {
    out += p.binary ? '\x01' : '\x00';
    std::string len;
    append_decimal(len, p.data.size() + 1);  // the type (char or byte) + the data
    for (const char d : len)
        out += static_cast<char>(d - '0');
    out += '\xff';
    out += p.binary ? type_byte(p.type) : static_cast<char>(p.type);
    out += p.data;
}

}  // namespace steerchat::eio
