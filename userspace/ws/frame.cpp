#include "ws/frame.hpp"

#include <algorithm>
#include <cstring>
#include <new>

namespace steerchat::ws {

bool is_valid_close_code(std::uint16_t code) noexcept {
    if (code >= 1000 && code <= 1003) return true;
    if (code >= 1007 && code <= 1014) return true;
    return code >= 3000 && code <= 4999;
}

// ---------------------------------------------------------------------------------------------
// Masking

void copy_masked(std::uint8_t* dst, const std::uint8_t* src, std::size_t size, MaskKey key,
                 std::size_t offset) noexcept {
    // Rotate the key so that k[0] applies to src[0], then XOR eight bytes at a time.
    std::uint8_t k[4];
    for (std::size_t i = 0; i < 4; ++i)
        k[i] = key[(offset + i) & 3];
    std::uint32_t k32;
    std::memcpy(&k32, k, sizeof k32);
    const std::uint64_t k64 = (static_cast<std::uint64_t>(k32) << 32) | k32;
    std::size_t i = 0;
    for (; i + 8 <= size; i += 8) {
        std::uint64_t w;
        std::memcpy(&w, src + i, sizeof w);
        w ^= k64;
        std::memcpy(dst + i, &w, sizeof w);
    }
    for (; i < size; ++i)
        dst[i] = src[i] ^ k[i & 3];
}

void apply_mask(std::uint8_t* data, std::size_t size, MaskKey key, std::size_t offset) noexcept {
    copy_masked(data, data, size, key, offset);
}

// ---------------------------------------------------------------------------------------------
// Encoding

std::size_t write_header(std::uint8_t* out, Opcode op, std::size_t payload_size, bool fin,
                         const MaskKey* mask) noexcept {
    out[0] = static_cast<std::uint8_t>((fin ? 0x80 : 0x00) | static_cast<std::uint8_t>(op));
    const std::uint8_t mask_bit = mask ? 0x80 : 0x00;
    std::size_t n;
    if (payload_size < 126) {
        out[1] = static_cast<std::uint8_t>(mask_bit | payload_size);
        n = 2;
    } else if (payload_size <= 0xFFFF) {
        out[1] = mask_bit | 126;
        out[2] = static_cast<std::uint8_t>(payload_size >> 8);
        out[3] = static_cast<std::uint8_t>(payload_size);
        n = 4;
    } else {
        out[1] = mask_bit | 127;
        const auto len = static_cast<std::uint64_t>(payload_size);
        for (int i = 0; i < 8; ++i)
            out[2 + i] = static_cast<std::uint8_t>(len >> (56 - 8 * i));
        n = 10;
    }
    if (mask) {
        std::memcpy(out + n, mask->data(), 4);
        n += 4;
    }
    return n;
}

void encode_frame(std::vector<std::uint8_t>& out, Opcode op, ByteView payload, bool fin) {
    const std::size_t start = out.size();
    const std::size_t hs = header_size(payload.size());
    out.resize(start + hs + payload.size());
    write_header(out.data() + start, op, payload.size(), fin);
    if (!payload.empty()) std::memcpy(out.data() + start + hs, payload.data(), payload.size());
}

std::vector<std::uint8_t> encode_frame(Opcode op, ByteView payload, bool fin) {
    std::vector<std::uint8_t> out;
    encode_frame(out, op, payload, fin);
    return out;
}

void encode_client_frame(std::vector<std::uint8_t>& out, Opcode op, ByteView payload, MaskKey key,
                         bool fin) {
    const std::size_t start = out.size();
    const std::size_t hs = header_size(payload.size(), true);
    out.resize(start + hs + payload.size());
    write_header(out.data() + start, op, payload.size(), fin, &key);
    copy_masked(out.data() + start + hs, payload.data(), payload.size(), key, 0);
}

std::vector<std::uint8_t> encode_client_frame(Opcode op, ByteView payload, MaskKey key, bool fin) {
    std::vector<std::uint8_t> out;
    encode_client_frame(out, op, payload, key, fin);
    return out;
}

std::size_t close_payload(std::uint8_t (&out)[kMaxControlPayload], std::uint16_t code,
                          std::string_view reason) noexcept {
    if (code == close_code::no_status) return 0;
    out[0] = static_cast<std::uint8_t>(code >> 8);
    out[1] = static_cast<std::uint8_t>(code);
    std::size_t n = std::min(reason.size(), kMaxControlPayload - 2);
    // Cut on a code point boundary: never leave a lead byte without its continuation bytes.
    if (n < reason.size()) {
        while (n > 0 && (static_cast<std::uint8_t>(reason[n]) & 0xC0) == 0x80)
            --n;
    }
    if (n) std::memcpy(out + 2, reason.data(), n);
    return 2 + n;
}

void encode_close(std::vector<std::uint8_t>& out, std::uint16_t code, std::string_view reason) {
    std::uint8_t buf[kMaxControlPayload];
    const std::size_t n = close_payload(buf, code, reason);
    encode_frame(out, Opcode::close, ByteView(buf, n));
}

SharedFrame::Rep* SharedFrame::allocate(Opcode op, std::size_t payload_size, bool fin) {
    const std::size_t hs = header_size(payload_size);
    void* mem = ::operator new(sizeof(Rep) + hs + payload_size);
    Rep* r = new (mem) Rep{1, hs + payload_size, hs, 0};
    write_header(bytes_of(r), op, payload_size, fin);
    return r;
}

void SharedFrame::destroy(Rep* r) noexcept {
    r->~Rep();
    ::operator delete(r);
}

SharedFrame SharedFrame::make(Opcode op, ByteView payload, bool fin) {
    SharedFrame f(allocate(op, payload.size(), fin));
    if (!payload.empty()) std::memcpy(f.mutable_payload(), payload.data(), payload.size());
    return f;
}

SharedFrame SharedFrame::close(std::uint16_t code, std::string_view reason) {
    std::uint8_t buf[kMaxControlPayload];
    const std::size_t n = close_payload(buf, code, reason);
    return make(Opcode::close, ByteView(buf, n));
}

// ---------------------------------------------------------------------------------------------
// Parsing

FrameParser::FrameParser(ParserOptions options) : options_(options) {}

void FrameParser::reset() noexcept {
    state_ = State::header;
    hdr_len_ = 0;
    hdr_need_ = 2;
    frame_len_ = frame_pos_ = 0;
    in_message_ = false;
    msg_size_ = 0;
    utf8_.reset();
    err_code_ = 0;
    err_what_ = {};
}

void FrameParser::shrink() noexcept {
    if (in_message_) return;
    msg_.reset();
    msg_cap_ = 0;
    msg_size_ = 0;
}

bool FrameParser::fail(Event& ev, std::uint16_t code, std::string_view what) noexcept {
    state_ = State::failed;
    err_code_ = code;
    err_what_ = what;
    ev = Event{};
    ev.kind = EventKind::error;
    ev.code = code;
    ev.what = what;
    return true;
}

bool FrameParser::reject(Event& ev, std::uint16_t code, std::string_view what) noexcept {
    fail(ev, code, what);
    return false;
}

bool FrameParser::header_prefix_ok(Event& ev) noexcept {
    const std::uint8_t b0 = hdr_[0];
    const std::uint8_t b1 = hdr_[1];
    // No extension is negotiated, so RSV1-3 must be zero.
    if (b0 & 0x70) return reject(ev, close_code::protocol_error, "reserved bits set");
    const std::uint8_t op = b0 & 0x0F;
    switch (op) {
        case 0x0:
        case 0x1:
        case 0x2:
        case 0x8:
        case 0x9:
        case 0xA:
            break;
        default:
            return reject(ev, close_code::protocol_error, "reserved opcode");
    }
    frame_op_ = static_cast<Opcode>(op);
    frame_fin_ = (b0 & 0x80) != 0;
    if (!(b1 & 0x80)) return reject(ev, close_code::protocol_error, "unmasked client frame");
    const std::uint8_t len7 = b1 & 0x7F;
    if (is_control(frame_op_)) {
        if (!frame_fin_) return reject(ev, close_code::protocol_error, "fragmented control frame");
        if (len7 > kMaxControlPayload)
            return reject(ev, close_code::protocol_error, "control frame too long");
    } else if (frame_op_ == Opcode::continuation) {
        if (!in_message_)
            return reject(ev, close_code::protocol_error, "continuation without a message");
    } else if (in_message_) {
        return reject(ev, close_code::protocol_error, "new message inside a fragmented one");
    }
    hdr_need_ = static_cast<std::uint8_t>(2 + (len7 == 126 ? 2 : len7 == 127 ? 8 : 0) + 4);
    return true;
}

bool FrameParser::header_done(Event& ev) noexcept {
    const std::uint8_t len7 = hdr_[1] & 0x7F;
    std::size_t pos = 2;
    std::uint64_t len = len7;
    if (len7 == 126) {
        len = (static_cast<std::uint64_t>(hdr_[2]) << 8) | hdr_[3];
        pos = 4;
    } else if (len7 == 127) {
        len = 0;
        for (std::size_t i = 0; i < 8; ++i)
            len = (len << 8) | hdr_[2 + i];
        pos = 10;
        if (len >> 63) return reject(ev, close_code::protocol_error, "64-bit length MSB set");
    }
    std::memcpy(mask_.data(), hdr_.data() + pos, 4);
    if (!is_control(frame_op_)) {
        const std::uint64_t so_far = frame_op_ == Opcode::continuation ? msg_size_ : 0;
        if (len > options_.max_message_size - so_far)
            return reject(ev, close_code::message_too_big, "message too big");
        if (frame_op_ != Opcode::continuation) {
            in_message_ = true;
            msg_op_ = frame_op_;
            msg_size_ = 0;
            utf8_.reset();
        }
    }
    frame_len_ = len;
    frame_pos_ = 0;
    return true;
}

void FrameParser::reserve_message(std::size_t extra) {
    const std::size_t need = msg_size_ + extra;
    if (need <= msg_cap_) return;
    // Grow geometrically with the bytes that actually arrive (not with the announced length),
    // never beyond the limit.
    // Starts small: chat messages are short, and an idle connection keeps this buffer.
    std::size_t cap = std::max<std::size_t>(msg_cap_ * 2, 512);
    cap = std::max(std::min(cap, options_.max_message_size), need);
    auto fresh = std::make_unique_for_overwrite<std::uint8_t[]>(cap);
    if (msg_size_) std::memcpy(fresh.get(), msg_.get(), msg_size_);
    msg_ = std::move(fresh);
    msg_cap_ = cap;
}

bool FrameParser::finish_frame(Event& ev) noexcept {
    // Next frame starts with a fresh header.
    state_ = State::header;
    hdr_len_ = 0;
    hdr_need_ = 2;
    const auto len = static_cast<std::size_t>(frame_len_);
    switch (frame_op_) {
        case Opcode::continuation:
        case Opcode::text:
        case Opcode::binary:
            if (!frame_fin_) return false;
            if (msg_op_ == Opcode::text && !utf8_.complete())
                return fail(ev, close_code::invalid_payload, "text message ends mid code point");
            in_message_ = false;
            ev.kind = EventKind::message;
            ev.opcode = msg_op_;
            ev.payload = ByteView(msg_.get(), msg_size_);
            // The buffer stays valid for the caller; the size restarts with the next message.
            msg_size_ = 0;
            return true;
        case Opcode::ping:
        case Opcode::pong:
            ev.kind = frame_op_ == Opcode::ping ? EventKind::ping : EventKind::pong;
            ev.payload = ByteView(ctrl_.data(), len);
            return true;
        case Opcode::close: {
            if (len == 1) return fail(ev, close_code::protocol_error, "close payload of 1 byte");
            std::uint16_t code = close_code::no_status;
            ByteView reason;
            if (len >= 2) {
                code = static_cast<std::uint16_t>((ctrl_[0] << 8) | ctrl_[1]);
                if (!is_valid_close_code(code))
                    return fail(ev, close_code::protocol_error, "invalid close code");
                reason = ByteView(ctrl_.data() + 2, len - 2);
                if (!text::is_valid_utf8(reason))
                    return fail(ev, close_code::invalid_payload, "close reason not UTF-8");
            }
            state_ = State::closed;
            ev.kind = EventKind::close;
            ev.code = code;
            ev.payload = reason;
            return true;
        }
    }
    return false;
}

std::size_t FrameParser::feed(ByteView input, Event& ev) {
    ev = Event{};
    if (state_ == State::failed) {
        ev.kind = EventKind::error;
        ev.code = err_code_;
        ev.what = err_what_;
        return 0;
    }
    if (state_ == State::closed) return input.size();

    const std::uint8_t* const begin = input.data();
    const std::uint8_t* p = begin;
    const std::uint8_t* const end = begin + input.size();
    auto consumed = [&] { return static_cast<std::size_t>(p - begin); };

    while (true) {
        if (state_ == State::header) {
            if (p == end) break;
            // Copy what the header still needs (at most 14 bytes in all).
            while (p != end && hdr_len_ < hdr_need_) {
                const std::size_t n =
                    std::min<std::size_t>(hdr_need_ - hdr_len_, static_cast<std::size_t>(end - p));
                std::memcpy(hdr_.data() + hdr_len_, p, n);
                hdr_len_ = static_cast<std::uint8_t>(hdr_len_ + n);
                p += n;
                if (hdr_len_ == 2 && !header_prefix_ok(ev)) return consumed();
            }
            if (hdr_len_ < hdr_need_) break;
            if (!header_done(ev)) return consumed();
            state_ = State::payload;
            if (frame_len_ == 0) {
                if (finish_frame(ev)) return consumed();
            }
            continue;
        }

        // Payload.
        if (p == end) break;
        const std::uint64_t left = frame_len_ - frame_pos_;
        const auto n = static_cast<std::size_t>(
            std::min<std::uint64_t>(left, static_cast<std::size_t>(end - p)));
        if (is_control(frame_op_)) {
            copy_masked(ctrl_.data() + frame_pos_, p, n, mask_, frame_pos_);
        } else {
            reserve_message(n);
            std::uint8_t* dst = msg_.get() + msg_size_;
            copy_masked(dst, p, n, mask_, frame_pos_);
            msg_size_ += n;
            if (msg_op_ == Opcode::text && !utf8_.feed(dst, n)) {
                p += n;
                fail(ev, close_code::invalid_payload, "invalid UTF-8 in text message");
                return consumed();
            }
        }
        p += n;
        frame_pos_ += n;
        if (frame_pos_ == frame_len_) {
            if (finish_frame(ev)) return consumed();
        }
    }
    return consumed();
}

}  // namespace steerchat::ws
