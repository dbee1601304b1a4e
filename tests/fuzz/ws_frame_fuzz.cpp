// libFuzzer target for the WebSocket frame parser (userspace/ws/frame.*) and UTF-8 validator.
//
// Input layout: byte 0 picks the max message size, byte 1 seeds the chunking, the rest is the
// client byte stream. The stream is parsed three ways (whole, in chunks derived from the input,
// byte by byte) and must give the same events; every event is checked against the protocol's
// invariants. Any violation aborts (a crash for libFuzzer).
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "support/fuzz_check.hpp"
#include "support/utf8_reference.hpp"
#include "support/ws_event.hpp"
#include "text/utf8.hpp"
#include "ws/frame.hpp"

namespace {

using namespace steerchat::ws;
namespace text = steerchat::text;

using Ev = steerchat::test_support::WsEvent;
using steerchat::test_support::reference_utf8;

constexpr std::size_t kLimits[] = {0, 1, 16, 125, 126, 1000, 65536, kDefaultMaxMessageSize};

void check_event(const Event& ev, const ParserOptions& opt) {
    switch (ev.kind) {
        case EventKind::none:
            break;
        case EventKind::message:
            FUZZ_CHECK(ev.opcode == Opcode::text || ev.opcode == Opcode::binary);
            FUZZ_CHECK(ev.payload.size() <= opt.max_message_size);
            if (ev.opcode == Opcode::text) {
                FUZZ_CHECK(reference_utf8(ev.payload.data(), ev.payload.size()));
            }
            break;
        case EventKind::ping:
        case EventKind::pong:
            FUZZ_CHECK(ev.payload.size() <= kMaxControlPayload);
            break;
        case EventKind::close:
            FUZZ_CHECK(ev.code == close_code::no_status || is_valid_close_code(ev.code));
            FUZZ_CHECK(ev.code != close_code::no_status || ev.payload.empty());
            FUZZ_CHECK(ev.payload.size() <= kMaxControlPayload - 2);
            FUZZ_CHECK(reference_utf8(ev.payload.data(), ev.payload.size()));
            break;
        case EventKind::error:
            FUZZ_CHECK(ev.code == close_code::protocol_error ||
                       ev.code == close_code::invalid_payload ||
                       ev.code == close_code::message_too_big);
            FUZZ_CHECK(!ev.what.empty());
            break;
    }
}

// Parses `stream` in chunks of the sizes produced by next_size() and checks every event.
template <class NextSize>
std::vector<Ev> parse(const std::uint8_t* data, std::size_t size, const ParserOptions& opt,
                      NextSize next_size) {
    FrameParser p(opt);
    std::vector<Ev> out;
    bool terminal = false;  // saw close or error
    std::size_t pos = 0;
    while (pos < size) {
        const std::size_t n = std::min(next_size(), size - pos);
        ByteView in(data + pos, n);
        pos += n;
        while (!in.empty()) {
            Event ev;
            const std::size_t used = p.feed(in, ev);
            FUZZ_CHECK(used <= in.size());
            check_event(ev, opt);
            if (terminal) {
                // Nothing is accepted after a close or an error.
                FUZZ_CHECK(ev.kind == EventKind::none || ev.kind == EventKind::error);
                FUZZ_CHECK(p.failed() == (ev.kind == EventKind::error));
            }
            if (ev.kind == EventKind::error) {
                FUZZ_CHECK(p.failed());
                FUZZ_CHECK(used == 0 || !terminal);
                if (!terminal) out.push_back({ev.kind, ev.opcode, ev.code, {}});
                // The error is sticky: a further call consumes nothing and repeats it.
                Event again;
                FUZZ_CHECK(p.feed(in.subspan(used), again) == 0);
                FUZZ_CHECK(again.kind == EventKind::error && again.code == ev.code);
                return out;
            }
            if (ev.kind == EventKind::none) FUZZ_CHECK(used == in.size());
            if (ev.kind != EventKind::none) {
                FUZZ_CHECK(!terminal);
                out.push_back({ev.kind, ev.opcode, ev.code, std::string(ev.text())});
                if (ev.kind == EventKind::message) {
                    // Round trip: re-encode as a client frame and parse it back.
                    FrameParser q(opt);
                    const auto frame =
                        encode_client_frame(ev.opcode, ev.payload, MaskKey{0xA1, 0x02, 0x7C, 0xFF});
                    Event back;
                    FUZZ_CHECK(q.feed(ByteView(frame), back) == frame.size());
                    FUZZ_CHECK(back.kind == EventKind::message && back.opcode == ev.opcode);
                    FUZZ_CHECK(back.text() == ev.text());
                }
                if (ev.kind == EventKind::close) {
                    FUZZ_CHECK(p.closed());
                    terminal = true;
                }
            }
            in = in.subspan(used);
        }
    }
    return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 2) return 0;
    ParserOptions opt;
    opt.max_message_size = kLimits[data[0] % (sizeof kLimits / sizeof kLimits[0])];
    std::uint32_t seed = data[1] * 2654435761u + 1;
    const std::uint8_t* stream = data + 2;
    const std::size_t n = size - 2;

    const auto whole = parse(stream, n, opt, [n] { return n; });
    const auto chunked = parse(stream, n, opt, [&seed] {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        return std::size_t{1} + seed % 23;
    });
    FUZZ_CHECK(chunked == whole);
    if (n <= 4096) {
        const auto bytewise = parse(stream, n, opt, [] { return std::size_t{1}; });
        FUZZ_CHECK(bytewise == whole);
    }

    // The incremental validator agrees with the reference on the raw bytes, for a split point
    // derived from the input.
    const std::size_t split = n ? data[1] % (n + 1) : 0;
    text::Utf8Validator v;
    const bool ok = v.feed(stream, split) && v.feed(stream + split, n - split) && v.complete();
    FUZZ_CHECK(ok == reference_utf8(stream, n));
    FUZZ_CHECK(ok == text::is_valid_utf8(stream, n));
    return 0;
}
