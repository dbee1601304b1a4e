// UTF-8 (RFC 3629): the one validator of the project, and what its users count in valid text.
// WebSocket text messages and close reasons (RFC 6455 8.1, incrementally, per fragment), Engine.IO
// v3 string payloads (lengths in UTF-16 code units) and chat names (code points) all go through
// here. A small DFA over byte classes: no allocation, one table lookup per non-ASCII byte and an
// 8-bytes-at-a-time path for ASCII runs.
//
// The DFA rejects at the first byte that makes the input impossible to complete as UTF-8
// (overlong forms, UTF-16 surrogates U+D800..U+DFFF, code points above U+10FFFF, stray
// continuation bytes, bytes C0, C1, F5..FF), so a text message split across fragments fails in
// the fragment where the error becomes known (Autobahn 6.x "fail fast").
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

namespace steerchat::text {

class Utf8Validator {
  public:
    // Feeds the next bytes of the current message. Returns false as soon as the input seen so far
    // cannot be valid UTF-8; the failure is sticky until reset().
    bool feed(const std::uint8_t* data, std::size_t size) noexcept;
    bool feed(std::span<const std::uint8_t> bytes) noexcept {
        return feed(bytes.data(), bytes.size());
    }
    bool feed(std::string_view s) noexcept {
        return feed(reinterpret_cast<const std::uint8_t*>(s.data()), s.size());
    }

    // True when everything fed so far is valid and ends on a code point boundary.
    bool complete() const noexcept { return state_ == kAccept; }
    // True once an invalid sequence has been seen.
    bool failed() const noexcept { return state_ == kReject; }
    void reset() noexcept { state_ = kAccept; }

    // DFA states (public for the implementation's tables; not part of the API contract).
    static constexpr std::uint8_t kAccept = 0;
    static constexpr std::uint8_t kReject = 1;

  private:
    std::uint8_t state_ = kAccept;
};

// Whole-buffer helpers.
bool is_valid_utf8(const std::uint8_t* data, std::size_t size) noexcept;
inline bool is_valid_utf8(std::span<const std::uint8_t> bytes) noexcept {
    return is_valid_utf8(bytes.data(), bytes.size());
}
inline bool is_valid_utf8(std::string_view s) noexcept {
    return is_valid_utf8(reinterpret_cast<const std::uint8_t*>(s.data()), s.size());
}

// Counting in text that is_valid_utf8 accepted (on other input the counts are of lead bytes).

// The length of the sequence that the lead byte `lead` of valid UTF-8 starts: 1 to 4.
constexpr std::size_t sequence_length(std::uint8_t lead) noexcept {
    return lead < 0x80 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4;
}

// The number of code points (bytes that are not continuation bytes 80..BF).
std::size_t code_points(std::string_view utf8) noexcept;

// The length JavaScript's String.length reports for `utf8`: one UTF-16 code unit per code point
// below U+10000, two above (lead bytes F0..FF count two). Additive: the length of a
// concatenation is the sum of the lengths.
std::size_t utf16_length(std::string_view utf8) noexcept;

}  // namespace steerchat::text
