// WebSocket framing (RFC 6455 section 5): the server-side incremental parser, the server frame
// encoder, the refcounted encode-once frame shared by every recipient, and a masking client
// encoder for tests and the load generator.
//
// Threading: like everything in a worker, these types belong to one event loop thread. The
// SharedFrame reference count is deliberately not atomic (no locked instructions per delivery).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string_view>
#include <utility>
#include <vector>

#include "text/utf8.hpp"

namespace steerchat::ws {

using ByteView = std::span<const std::uint8_t>;
using MaskKey = std::array<std::uint8_t, 4>;

inline ByteView as_bytes(std::string_view s) noexcept {
    return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}
inline std::string_view as_string(ByteView b) noexcept {
    return {reinterpret_cast<const char*>(b.data()), b.size()};
}

enum class Opcode : std::uint8_t {
    continuation = 0x0,
    text = 0x1,
    binary = 0x2,
    close = 0x8,
    ping = 0x9,
    pong = 0xA,
};

constexpr bool is_control(Opcode op) noexcept {
    return (static_cast<std::uint8_t>(op) & 0x8) != 0;
}

// Close status codes (RFC 6455 7.4.1 and the IANA "WebSocket Close Code Number Registry").
namespace close_code {
inline constexpr std::uint16_t normal = 1000;
inline constexpr std::uint16_t going_away = 1001;
inline constexpr std::uint16_t protocol_error = 1002;
inline constexpr std::uint16_t unsupported_data = 1003;
inline constexpr std::uint16_t no_status = 1005;  // never sent; "close frame had no code"
inline constexpr std::uint16_t abnormal = 1006;   // never sent; "connection dropped"
inline constexpr std::uint16_t invalid_payload = 1007;
inline constexpr std::uint16_t policy_violation = 1008;
inline constexpr std::uint16_t message_too_big = 1009;
inline constexpr std::uint16_t mandatory_extension = 1010;
inline constexpr std::uint16_t internal_error = 1011;
inline constexpr std::uint16_t service_restart = 1012;
inline constexpr std::uint16_t try_again_later = 1013;
inline constexpr std::uint16_t bad_gateway = 1014;
}  // namespace close_code

// Whether a peer may send `code` in a Close frame: 1000-1003, 1007-1014 (1012-1014 are
// registered with IANA), 3000-4999 (libraries/applications). Everything else, including
// 1004, 1005, 1006, 1015, 1016-2999 and codes below 1000 or above 4999, is a protocol error.
bool is_valid_close_code(std::uint16_t code) noexcept;

inline constexpr std::size_t kMaxControlPayload = 125;
inline constexpr std::size_t kMaxHeaderSize = 14;
inline constexpr std::size_t kDefaultMaxMessageSize = std::size_t{1} << 20;

// ---------------------------------------------------------------------------------------------
// Masking

// XORs `size` bytes with the mask key, starting at position `offset` of the masked stream
// (so a payload processed in chunks stays in phase). Word-at-a-time.
void apply_mask(std::uint8_t* data, std::size_t size, MaskKey key, std::size_t offset = 0) noexcept;
// dst[i] = src[i] ^ key[(offset + i) % 4]; dst and src may be equal but must not otherwise overlap.
void copy_masked(std::uint8_t* dst, const std::uint8_t* src, std::size_t size, MaskKey key,
                 std::size_t offset = 0) noexcept;

// ---------------------------------------------------------------------------------------------
// Encoding

// Size of a frame header for a payload of `payload_size` bytes (2, 4 or 10; +4 when masked).
constexpr std::size_t header_size(std::size_t payload_size, bool masked = false) noexcept {
    std::size_t n = payload_size < 126 ? 2 : payload_size <= 0xFFFF ? 4 : 10;
    return masked ? n + 4 : n;
}

// Writes a frame header (minimal length encoding) to `out`, which must hold header_size() bytes.
// With a mask key the MASK bit is set and the key follows the length. Returns bytes written.
std::size_t write_header(std::uint8_t* out, Opcode op, std::size_t payload_size, bool fin = true,
                         const MaskKey* mask = nullptr) noexcept;

// Appends one unmasked (server) frame to `out`.
void encode_frame(std::vector<std::uint8_t>& out, Opcode op, ByteView payload, bool fin = true);
std::vector<std::uint8_t> encode_frame(Opcode op, ByteView payload, bool fin = true);

// Appends one masked (client) frame to `out`.
void encode_client_frame(std::vector<std::uint8_t>& out, Opcode op, ByteView payload, MaskKey key,
                         bool fin = true);
std::vector<std::uint8_t> encode_client_frame(Opcode op, ByteView payload, MaskKey key,
                                              bool fin = true);

// Close frame payload: the code in network order then the reason, cut to 123 bytes on a UTF-8
// boundary. Code 1005 (no_status) produces an empty payload. Returns the payload size (<= 125).
std::size_t close_payload(std::uint8_t (&out)[kMaxControlPayload], std::uint16_t code,
                          std::string_view reason) noexcept;
// Appends an unmasked Close frame.
void encode_close(std::vector<std::uint8_t>& out, std::uint16_t code, std::string_view reason = {});

// An immutable encoded server frame (header + payload in ONE allocation) with a non-atomic
// intrusive reference count: encode a broadcast once, queue the same handle on every recipient.
// data()/size() give the bytes to write (e.g. boost::asio::buffer(f.data(), f.size())).
class SharedFrame {
  public:
    SharedFrame() noexcept = default;
    SharedFrame(const SharedFrame& o) noexcept : rep_(o.rep_) {
        if (rep_) ++rep_->refs;
    }
    SharedFrame(SharedFrame&& o) noexcept : rep_(std::exchange(o.rep_, nullptr)) {}
    SharedFrame& operator=(const SharedFrame& o) noexcept {
        SharedFrame(o).swap(*this);
        return *this;
    }
    SharedFrame& operator=(SharedFrame&& o) noexcept {
        SharedFrame(std::move(o)).swap(*this);
        return *this;
    }
    ~SharedFrame() { release(); }

    static SharedFrame make(Opcode op, ByteView payload, bool fin = true);
    static SharedFrame text(std::string_view payload) {
        return make(Opcode::text, as_bytes(payload));
    }
    static SharedFrame binary(ByteView payload) { return make(Opcode::binary, payload); }
    // Close frame (see close_payload). To answer a peer's Close, echo its code:
    // close(ev.code) — a 1005 (peer sent no code) gives an empty Close frame.
    static SharedFrame close(std::uint16_t code, std::string_view reason = {});

    // Encodes a frame whose payload is written in place by `fill(std::span<std::uint8_t>)`
    // (exactly payload_size bytes), e.g. serialising JSON straight into the frame.
    template <class Fill>
    static SharedFrame build(Opcode op, std::size_t payload_size, Fill&& fill, bool fin = true) {
        SharedFrame f(allocate(op, payload_size, fin));
        std::forward<Fill>(fill)(std::span<std::uint8_t>(f.mutable_payload(), payload_size));
        return f;
    }

    const std::uint8_t* data() const noexcept { return rep_ ? bytes_of(rep_) : nullptr; }
    std::size_t size() const noexcept { return rep_ ? rep_->size : 0; }
    ByteView bytes() const noexcept { return {data(), size()}; }
    ByteView payload() const noexcept {
        return rep_ ? ByteView(bytes_of(rep_) + rep_->header, rep_->size - rep_->header)
                    : ByteView();
    }
    std::size_t use_count() const noexcept { return rep_ ? rep_->refs : 0; }
    // When the event this frame carries was accepted (steady_clock ns; 0: not a delivery). The
    // connection that writes it observes the delivery latency (ws::Stats::delivery_latency).
    std::uint64_t stamp() const noexcept { return rep_ ? rep_->stamp_ns : 0; }
    void set_stamp(std::uint64_t ns) noexcept {
        if (rep_) rep_->stamp_ns = ns;
    }
    explicit operator bool() const noexcept { return rep_ != nullptr; }
    void swap(SharedFrame& o) noexcept { std::swap(rep_, o.rep_); }
    void reset() noexcept { SharedFrame().swap(*this); }

  private:
    struct Rep {
        std::size_t refs;
        std::size_t size;    // header + payload
        std::size_t header;  // header bytes
        std::uint64_t stamp_ns;
    };
    explicit SharedFrame(Rep* r) noexcept : rep_(r) {}
    static std::uint8_t* bytes_of(Rep* r) noexcept {
        return reinterpret_cast<std::uint8_t*>(r + 1);
    }
    std::uint8_t* mutable_payload() noexcept { return bytes_of(rep_) + rep_->header; }
    static Rep* allocate(Opcode op, std::size_t payload_size, bool fin);
    static void destroy(Rep* r) noexcept;  // out of line: the last release is the rare path
    void release() noexcept {
        Rep* r = std::exchange(rep_, nullptr);
        if (r && --r->refs == 0) destroy(r);
    }

    Rep* rep_ = nullptr;
};

// ---------------------------------------------------------------------------------------------
// Parsing (server side: every client frame must be masked)

struct ParserOptions {
    // Largest reassembled data message; a frame that would exceed it fails with 1009 as soon as
    // its header is read.
    std::size_t max_message_size = kDefaultMaxMessageSize;
};

enum class EventKind : std::uint8_t {
    none,     // input consumed, nothing complete yet
    message,  // a complete data message (text or binary), reassembled
    ping,     // caller answers with a pong carrying the same payload
    pong,
    close,  // peer's Close frame, validated; further input is ignored
    error,  // protocol violation; send a Close with `code` and drop the connection
};

struct Event {
    EventKind kind = EventKind::none;
    Opcode opcode = Opcode::continuation;  // message: text or binary
    // close: the peer's code (1005 when its Close frame had no payload); error: the code to send.
    std::uint16_t code = 0;
    // message: the data; ping/pong: the payload; close: the reason (valid UTF-8).
    // A view into the parser, valid until the next feed()/reset()/shrink().
    ByteView payload;
    // error: what was wrong (static string).
    std::string_view what;

    std::string_view text() const noexcept { return as_string(payload); }
};

class FrameParser {
  public:
    explicit FrameParser(ParserOptions options = {});

    // Parses from `input` until an event completes or the input is exhausted; any split of the
    // byte stream gives the same events. Returns the bytes consumed (the rest of `input` is for
    // the next call). After an error every call returns 0 and the same error event; after a
    // close event every call consumes all input and returns EventKind::none.
    std::size_t feed(ByteView input, Event& ev);

    // Feeds all of `input`, calling on_event(const Event&) for each event. Returns false if an
    // error was reported (and stops there).
    template <class OnEvent>
    bool feed_all(ByteView input, OnEvent&& on_event) {
        Event ev;
        while (true) {
            std::size_t n = feed(input, ev);
            input = input.subspan(n);
            if (ev.kind != EventKind::none) on_event(static_cast<const Event&>(ev));
            if (ev.kind == EventKind::error) return false;
            if (input.empty()) return true;
        }
    }

    bool failed() const noexcept { return state_ == State::failed; }
    bool closed() const noexcept { return state_ == State::closed; }
    // Bytes of the message being reassembled.
    std::size_t pending_message_size() const noexcept { return msg_size_; }
    // Bytes held for reassembling messages (0 after shrink()).
    std::size_t message_capacity() const noexcept { return msg_cap_; }
    const ParserOptions& options() const noexcept { return options_; }

    // Back to the initial state (keeps the buffer's capacity).
    void reset() noexcept;
    // Frees the message buffer if no message is in progress (for idle connections).
    void shrink() noexcept;

  private:
    enum class State : std::uint8_t { header, payload, closed, failed };

    // Both put the parser in the failed state and fill `ev` with the error; fail() returns true
    // ("an event was produced"), reject() returns false ("header not acceptable").
    bool fail(Event& ev, std::uint16_t code, std::string_view what) noexcept;
    bool reject(Event& ev, std::uint16_t code, std::string_view what) noexcept;
    bool header_prefix_ok(Event& ev) noexcept;  // after 2 header bytes
    bool header_done(Event& ev) noexcept;       // after the full header
    bool finish_frame(Event& ev) noexcept;      // true when it produced an event
    void reserve_message(std::size_t extra);

    ParserOptions options_;
    State state_ = State::header;

    // Current frame.
    std::array<std::uint8_t, kMaxHeaderSize> hdr_{};
    std::uint8_t hdr_len_ = 0;
    std::uint8_t hdr_need_ = 2;
    Opcode frame_op_ = Opcode::continuation;
    bool frame_fin_ = false;
    MaskKey mask_{};
    std::uint64_t frame_len_ = 0;
    std::uint64_t frame_pos_ = 0;

    // Message being reassembled (buffer reused across messages).
    bool in_message_ = false;
    Opcode msg_op_ = Opcode::binary;
    std::unique_ptr<std::uint8_t[]> msg_;
    std::size_t msg_cap_ = 0;
    std::size_t msg_size_ = 0;
    text::Utf8Validator utf8_;

    // Control frame payload (may arrive in the middle of a fragmented message).
    std::array<std::uint8_t, kMaxControlPayload> ctrl_{};

    std::uint16_t err_code_ = 0;
    std::string_view err_what_;
};

}  // namespace steerchat::ws
