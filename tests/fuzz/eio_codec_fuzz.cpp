// libFuzzer target for the Engine.IO / Socket.IO codecs (userspace/eio: packet; userspace/sio:
// packet) and the text encodings they use (userspace/text: base64, utf8). They are pure
// functions, so every mode checks properties, not only "no crash":
//
// Input layout: byte 0 picks the mode (low 3 bits) and a few flags (high bits); the rest is the
// data for that mode.
//   0  v4 polling payload      decode; failure leaves `out` unchanged; success re-encodes to the
//                              very same bytes; the packets round-trip through every format that
//                              can represent them.
//   1  v3 string payload       decode; failure leaves `out` unchanged; success: text data valid
//                              UTF-8, encode -> decode gives the same packets, the encoding is a
//                              fixed point; cross-format round trips.
//   2  v3 binary payload       as 1 (no UTF-8 requirement).
//   3  one packet              decode_text_packet (v3, v4) and decode_ws_frame (text/binary
//                              frame, v3/v4): success re-encodes to the input (or, for a base64
//                              packet in a text frame, to a binary frame that decodes the same).
//   4  base64                  encode -> decode is the identity on arbitrary bytes; a successful
//                              decode re-encodes to exactly the input (decoding is canonical).
//   5  UTF-8 / UTF-16 length   is_valid_utf8 agrees with the reference validator; utf16_length is
//                              additive, exact on valid UTF-8 (checked against an independent
//                              count) and never above the byte length there.
//   6  Socket.IO decode        success: the packet satisfies the documented shape rules,
//                              encode -> decode gives an equal Packet and the encoding is a
//                              fixed point (doubles excepted: Boost.JSON 1.81 parses them up to
//                              2 ULP off, so they may move by a few ULP); failure gives a reason;
//                              placeholders_valid agrees with an independent check.
//   7  Socket.IO encode        a Packet built from the input (type, namespace, ack id,
//                              attachments, JSON payload parsed by boost::json): if it is valid,
//                              decode(encode(p)) == p (numbers must be finite: JSON cannot
//                              write infinity).
// A broken property prints a short message and aborts (a crash for libFuzzer).
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <boost/json.hpp>

#include "eio/packet.hpp"
#include "sio/packet.hpp"
#include "support/fuzz_check.hpp"
#include "support/utf8_reference.hpp"
#include "text/base64.hpp"
#include "text/utf8.hpp"

namespace {

namespace eio = steerchat::eio;
namespace sio = steerchat::sio;
namespace text = steerchat::text;
namespace json = boost::json;

using Packets = std::vector<eio::Packet>;

bool reference_utf8(std::string_view s) {
    return steerchat::test_support::reference_utf8(reinterpret_cast<const std::uint8_t*>(s.data()),
                                                   s.size());
}

// JavaScript's String.length of valid UTF-8, counted from the lead bytes' patterns.
std::size_t reference_utf16_length(std::string_view s) {
    std::size_t units = 0;
    for (const char ch : s) {
        const auto c = static_cast<unsigned char>(ch);
        if ((c & 0xC0) == 0x80) continue;     // continuation
        units += (c & 0xF8) == 0xF0 ? 2 : 1;  // a 4-byte sequence is a surrogate pair
    }
    return units;
}

// A packet placed in `out` before decoding: it must survive both failure and success.
const eio::Packet kSentinel = eio::text_packet(eio::PacketType::noop, "sentinel");

// Runs one of the payload decoders with a non-empty `out` and checks the all-or-nothing rule.
template <class Decode>
std::optional<Packets> decode_checked(Decode decode, std::string_view body) {
    Packets out{kSentinel};
    const bool ok = decode(body, out);
    FUZZ_CHECK(!out.empty() && out.front() == kSentinel);
    if (!ok) {
        FUZZ_CHECK(out.size() == 1);
        return std::nullopt;
    }
    return Packets(out.begin() + 1, out.end());
}

template <class Append>
std::string encode_all(const Packets& ps, Append append) {
    std::string body;
    for (const auto& p : ps)
        append(body, p);
    return body;
}

// Encodes `ps` with `append`, decodes it with `decode`: the packets must come back, and
// re-encoding them must give the same bytes.
template <class Append, class Decode>
void check_round_trip(const Packets& ps, Append append, Decode decode) {
    if (ps.empty()) return;  // an empty payload is not a decodable body in any format
    const std::string body = encode_all(ps, append);
    const auto back = decode_checked(decode, body);
    FUZZ_CHECK(back.has_value());
    FUZZ_CHECK(*back == ps);
    FUZZ_CHECK(encode_all(*back, append) == body);
}

bool v4_representable(const Packets& ps) {
    for (const auto& p : ps) {
        if (p.binary && p.type != eio::PacketType::message) return false;
        if (!p.binary && p.data.find('\x1e') != std::string::npos) return false;
    }
    return true;
}

bool v3_string_representable(const Packets& ps) {
    for (const auto& p : ps)
        if (!p.binary && !text::is_valid_utf8(p.data)) return false;
    return true;
}

// Single-packet codecs for one packet that `protocol` can represent.
void check_packet(const eio::Packet& p, int protocol) {
    const std::string text = eio::encode_text_packet(p, protocol);
    const auto t = eio::decode_text_packet(text, protocol);
    FUZZ_CHECK(t && *t == p);
    const std::string frame = eio::encode_ws_frame(p, protocol);
    const auto f = eio::decode_ws_frame(frame, p.binary, protocol);
    FUZZ_CHECK(f && *f == p);
}

// Every format that can represent `ps` must carry them unchanged.
void check_packets(const Packets& ps) {
    for (const auto& p : ps) {
        FUZZ_CHECK(eio::packet_type_from_char(static_cast<char>(p.type)) == p.type);
        check_packet(p, 3);
    }
    check_round_trip(ps, eio::append_payload_v3_binary, eio::decode_payload_v3_binary);
    if (v3_string_representable(ps))
        check_round_trip(ps, eio::append_payload_v3_string, eio::decode_payload_v3_string);
    if (v4_representable(ps)) {
        for (const auto& p : ps)
            check_packet(p, 4);
        check_round_trip(ps, eio::append_payload_v4, eio::decode_payload_v4);
    }
}

void fuzz_payload_v4(std::string_view body) {
    const auto ps = decode_checked(eio::decode_payload_v4, body);
    // Independent of the payload decoder: every '\x1e'-separated part must decode on its own.
    bool parts_ok = true;
    Packets parts;
    for (std::size_t start = 0;;) {
        const std::size_t end = body.find('\x1e', start);
        const auto part = body.substr(start, end == std::string_view::npos ? end : end - start);
        auto p = eio::decode_text_packet(part, 4);
        if (!p) {
            parts_ok = false;
            break;
        }
        parts.push_back(std::move(*p));
        if (end == std::string_view::npos) break;
        start = end + 1;
    }
    FUZZ_CHECK(ps.has_value() == parts_ok);
    if (!ps) return;
    FUZZ_CHECK(*ps == parts);
    // v4 text is canonical (base64 decoding rejects non-canonical input): same bytes back.
    FUZZ_CHECK(encode_all(*ps, eio::append_payload_v4) == body);
    check_packets(*ps);
}

void fuzz_payload_v3_string(std::string_view body) {
    const auto ps = decode_checked(eio::decode_payload_v3_string, body);
    if (!ps) return;
    FUZZ_CHECK(reference_utf8(body));
    for (const auto& p : *ps)
        if (!p.binary) FUZZ_CHECK(text::is_valid_utf8(p.data));
    check_packets(*ps);
}

void fuzz_payload_v3_binary(std::string_view body) {
    const auto ps = decode_checked(eio::decode_payload_v3_binary, body);
    if (!ps) return;
    FUZZ_CHECK(!ps->empty());  // every entry yields a packet
    check_packets(*ps);
}

void fuzz_one_packet(std::string_view s) {
    for (const int protocol : {3, 4}) {
        const auto p = eio::decode_text_packet(s, protocol);
        if (!s.empty() && s[0] >= '0' && s[0] <= '6') {
            FUZZ_CHECK(p && !p->binary && p->data == s.substr(1));
        }
        if (p) {
            FUZZ_CHECK(eio::encode_text_packet(*p, protocol) == s);
            if (p->binary) FUZZ_CHECK(s[0] == 'b');
            if (protocol == 4 && p->binary) FUZZ_CHECK(p->type == eio::PacketType::message);
            check_packet(*p, protocol);
        }
        for (const bool binary_frame : {false, true}) {
            const auto f = eio::decode_ws_frame(s, binary_frame, protocol);
            if (!binary_frame) FUZZ_CHECK(f == p);
            if (binary_frame && protocol == 4) FUZZ_CHECK(f && *f == eio::binary_message(s));
            if (!f) continue;
            if (binary_frame) FUZZ_CHECK(f->binary);
            const std::string frame = eio::encode_ws_frame(*f, protocol);
            if (f->binary == binary_frame) {
                FUZZ_CHECK(frame == s);
            } else {
                // A base64 packet in a text frame: sent back as a binary frame.
                const auto g = eio::decode_ws_frame(frame, true, protocol);
                FUZZ_CHECK(g && *g == *f);
            }
            check_packet(*f, protocol);
        }
    }
}

void fuzz_base64(std::string_view s) {
    // encode -> decode is the identity on arbitrary bytes.
    const std::string enc = text::base64_encode(s);
    FUZZ_CHECK(enc.size() == (s.size() + 2) / 3 * 4);
    const auto dec = text::base64_decode(enc);
    FUZZ_CHECK(dec && *dec == s);
    std::string appended = "prefix";
    text::base64_append(appended, s);
    FUZZ_CHECK(appended == "prefix" + enc);

    // Decoding is canonical: whatever decodes re-encodes to exactly the input.
    const auto d = text::base64_decode(s);
    if (!d) return;
    FUZZ_CHECK(s.size() % 4 == 0);
    FUZZ_CHECK(d->size() <= s.size() / 4 * 3 && d->size() + 2 >= s.size() / 4 * 3);
    FUZZ_CHECK(text::base64_encode(*d) == s);
    const auto again = text::base64_decode(text::base64_encode(*d));
    FUZZ_CHECK(again && *again == *d);
}

void fuzz_utf8(std::string_view s, std::size_t split_seed) {
    const bool valid = text::is_valid_utf8(s);
    FUZZ_CHECK(valid == reference_utf8(s));
    const std::size_t units = text::utf16_length(s);
    FUZZ_CHECK(units <= 2 * s.size());
    // Counted per byte, so additive over any split (even one inside a sequence).
    const std::size_t split = s.empty() ? 0 : split_seed % (s.size() + 1);
    FUZZ_CHECK(text::utf16_length(s.substr(0, split)) + text::utf16_length(s.substr(split)) ==
               units);
    if (valid) {
        FUZZ_CHECK(units == reference_utf16_length(s));
        FUZZ_CHECK(units <= s.size());
        // A v3 string payload holding this text as one message must decode to it.
        const Packets ps{eio::text_packet(eio::PacketType::message, s)};
        check_round_trip(ps, eio::append_payload_v3_string, eio::decode_payload_v3_string);
    }
}

// --- Socket.IO ------------------------------------------------------------------------------

// True if `v` holds a non-finite double (JSON has no way to write one).
bool has_non_finite(const json::value& v) {
    if (const auto* d = v.if_double()) return !std::isfinite(*d);
    if (const auto* a = v.if_array())
        for (const auto& e : *a)
            if (has_non_finite(e)) return true;
    if (const auto* o = v.if_object())
        for (const auto& kv : *o)
            if (has_non_finite(kv.value())) return true;
    return false;
}

// The payload rules of sio/packet.hpp, restated.
bool reference_shape_ok(sio::Type t, const std::optional<json::value>& data) {
    using T = sio::Type;
    if (t == T::connect) return !data || data->is_object();
    if (t == T::disconnect) return !data;
    if (t == T::connect_error) return data && (data->is_object() || data->is_string());
    if (t == T::ack || t == T::binary_ack) return data && data->is_array();
    if (t == T::event || t == T::binary_event) {
        if (!data || !data->is_array() || data->get_array().empty()) return false;
        const json::value& name = data->get_array()[0];
        if (name.is_int64() || name.is_uint64() || name.is_double()) return true;
        if (!name.is_string()) return false;
        const std::string_view n = name.get_string();
        return n != "connect" && n != "connect_error" && n != "disconnect" &&
               n != "disconnecting" && n != "newListener" && n != "removeListener";
    }
    return false;
}

// Collects the "num" of every placeholder object in `v` (-1 for a missing or non-integer one).
void reference_placeholder_nums(const json::value& v, std::vector<std::int64_t>& nums,
                                bool& too_big) {
    if (const auto* a = v.if_array()) {
        for (const auto& e : *a)
            reference_placeholder_nums(e, nums, too_big);
    } else if (const auto* o = v.if_object()) {
        const auto m = o->find("_placeholder");
        if (m != o->end() && m->value().is_bool() && m->value().get_bool()) {
            const auto n = o->find("num");
            if (n == o->end()) {
                nums.push_back(-1);
            } else if (n->value().is_int64()) {
                nums.push_back(n->value().get_int64() < 0 ? -1 : n->value().get_int64());
            } else if (n->value().is_uint64()) {
                too_big = true;  // above INT64_MAX: beyond any attachment count
            } else {
                nums.push_back(-1);
            }
            return;
        }
        for (const auto& kv : *o)
            reference_placeholder_nums(kv.value(), nums, too_big);
    }
}

void check_placeholders(const json::value& v, std::size_t attachments) {
    std::vector<std::int64_t> nums;
    bool too_big = false;
    reference_placeholder_nums(v, nums, too_big);
    bool ok = !too_big;
    for (const auto n : nums)
        if (n < 0 || static_cast<std::uint64_t>(n) >= attachments) ok = false;
    bool each = ok;
    if (ok) {
        std::vector<bool> seen(attachments, false);
        for (const auto n : nums)
            seen[static_cast<std::size_t>(n)] = true;
        for (const bool s : seen)
            if (!s) each = false;
    }
    FUZZ_CHECK(sio::placeholders_valid(v, attachments) == ok);
    FUZZ_CHECK(sio::placeholders_valid(v, attachments, true) == each);
}

void check_sio_packet_fields(const sio::Packet& p) {
    FUZZ_CHECK(static_cast<int>(p.type) <= 6);
    FUZZ_CHECK(!p.nsp.empty() && p.nsp[0] == '/' && p.nsp.find(',') == std::string::npos);
    FUZZ_CHECK(!p.id || *p.id <= sio::max_ack_id);
    FUZZ_CHECK(p.attachments <= sio::max_attachments);
    FUZZ_CHECK(sio::is_binary(p.type) || p.attachments == 0);
    FUZZ_CHECK(reference_shape_ok(p.type, p.data));
    FUZZ_CHECK(!p.data || !has_non_finite(*p.data));  // so that encode can write it back
}

// Boost.JSON 1.81 does not parse doubles exactly (boostorg/json#599, fixed in 1.83 by
// number_precision::precise): "1.1111111111111112E60", the shortest form of a double, parses as
// the next double up. So a double may move by a few ULP on each encode -> decode; every other
// value must come back exactly.
constexpr std::uint64_t kMaxDoubleUlps = 4;

std::uint64_t ulp_distance(double a, double b) {
    auto ordered = [](double d) {
        std::int64_t i;
        std::memcpy(&i, &d, sizeof i);
        return i < 0 ? std::numeric_limits<std::int64_t>::min() - i : i;
    };
    const std::int64_t x = ordered(a), y = ordered(b);
    return x > y ? static_cast<std::uint64_t>(x) - static_cast<std::uint64_t>(y)
                 : static_cast<std::uint64_t>(y) - static_cast<std::uint64_t>(x);
}

bool has_double(const json::value& v) {
    if (v.is_double()) return true;
    if (const auto* a = v.if_array())
        for (const auto& e : *a)
            if (has_double(e)) return true;
    if (const auto* o = v.if_object())
        for (const auto& kv : *o)
            if (has_double(kv.value())) return true;
    return false;
}

// Equal, except that doubles may differ by up to kMaxDoubleUlps.
bool nearly_equal(const json::value& a, const json::value& b) {
    if (a.is_double() && b.is_double())
        return ulp_distance(a.get_double(), b.get_double()) <= kMaxDoubleUlps;
    if (a.kind() != b.kind()) return false;
    if (const auto* x = a.if_array()) {
        const auto& y = b.get_array();
        if (x->size() != y.size()) return false;
        for (std::size_t i = 0; i < x->size(); ++i)
            if (!nearly_equal((*x)[i], y[i])) return false;
        return true;
    }
    if (const auto* x = a.if_object()) {
        const auto& y = b.get_object();
        if (x->size() != y.size()) return false;
        for (const auto& kv : *x) {
            const auto* w = y.if_contains(kv.key());
            if (!w || !nearly_equal(kv.value(), *w)) return false;
        }
        return true;
    }
    return a == b;
}

bool nearly_equal(const sio::Packet& a, const sio::Packet& b) {
    if (a.type != b.type || a.nsp != b.nsp || a.id != b.id || a.attachments != b.attachments ||
        a.data.has_value() != b.data.has_value())
        return false;
    return !a.data || nearly_equal(*a.data, *b.data);
}

// decode(encode(p)) == p (doubles: nearly), and without doubles the encoding is a fixed point.
void check_sio_round_trip(const sio::Packet& p) {
    const std::string text = sio::encode(p);
    std::string why;
    const auto back = sio::decode(text, &why);
    const int shown = static_cast<int>(text.size() > 200 ? 200 : text.size());
    if (!back)
        std::fprintf(stderr, "sio re-decode failed (%s): %.*s\n", why.c_str(), shown, text.data());
    FUZZ_CHECK(back.has_value());
    const bool exact = !p.data || !has_double(*p.data);
    if (exact ? !(*back == p) : !nearly_equal(*back, p))
        std::fprintf(stderr, "sio round trip changed the packet: %.*s\n", shown, text.data());
    if (exact) {
        FUZZ_CHECK(*back == p);
        FUZZ_CHECK(sio::encode(*back) == text);
    } else {
        FUZZ_CHECK(nearly_equal(*back, p));
    }
}

void fuzz_sio_decode(std::string_view text, std::size_t attachments_seed) {
    std::string why = "untouched";
    const auto p = sio::decode(text, &why);
    const auto q = sio::decode(text);
    FUZZ_CHECK(p.has_value() == q.has_value());
    if (!p) {
        FUZZ_CHECK(!why.empty() && why != "untouched");
        return;
    }
    FUZZ_CHECK(*p == *q);
    check_sio_packet_fields(*p);
    check_sio_round_trip(*p);
    if (p->data) {
        check_placeholders(*p->data, p->attachments);
        check_placeholders(*p->data, attachments_seed % 8);
    }
}

void fuzz_sio_encode(std::string_view in) {
    // [type/flags][attachments][id byte][nsp bytes...]\0[JSON text]
    if (in.size() < 3) return;
    sio::Packet p;
    p.type = static_cast<sio::Type>(static_cast<unsigned char>(in[0]) % 7);
    if (sio::is_binary(p.type)) p.attachments = static_cast<unsigned char>(in[1]);
    const auto id_byte = static_cast<unsigned char>(in[2]);
    if (id_byte & 0x80) p.id = id_byte & 0x40 ? sio::max_ack_id - (id_byte & 0x3f) : id_byte & 0x3f;
    in.remove_prefix(3);
    const std::size_t nul = in.find('\0');
    std::string_view nsp = in.substr(0, nul);
    in = nul == std::string_view::npos ? std::string_view{} : in.substr(nul + 1);
    if (!nsp.empty()) {
        p.nsp = "/";
        for (const char c : nsp)
            if (c != ',') p.nsp += c;
    }
    if (!in.empty()) {
        boost::system::error_code ec;
        json::value v = json::parse(in, ec);
        if (ec) return;
        if (!v.is_null()) p.data = std::move(v);  // a null payload is not written
    }
    const std::string text = sio::encode(p);
    FUZZ_CHECK(!text.empty() && text[0] == static_cast<char>('0' + static_cast<int>(p.type)));
    if (p.data) check_placeholders(*p.data, p.attachments);
    // 1e400 parses as infinity, which encode cannot write as JSON: outside encode's domain.
    if (reference_shape_ok(p.type, p.data) && !(p.data && has_non_finite(*p.data)))
        check_sio_round_trip(p);
    // Whatever the encoding decodes to must be a well-formed packet.
    if (const auto back = sio::decode(text)) check_sio_packet_fields(*back);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 1) return 0;
    const std::string_view rest(reinterpret_cast<const char*>(data) + 1, size - 1);
    const unsigned mode = data[0] & 7;
    const std::size_t flags = data[0] >> 3;
    switch (mode) {
        case 0:
            fuzz_payload_v4(rest);
            break;
        case 1:
            fuzz_payload_v3_string(rest);
            break;
        case 2:
            fuzz_payload_v3_binary(rest);
            break;
        case 3:
            fuzz_one_packet(rest);
            break;
        case 4:
            fuzz_base64(rest);
            break;
        case 5:
            fuzz_utf8(rest, flags);
            break;
        case 6:
            fuzz_sio_decode(rest, flags);
            break;
        case 7:
            fuzz_sio_encode(rest);
            break;
    }
    return 0;
}
