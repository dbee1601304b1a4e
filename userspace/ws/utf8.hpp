// Incremental UTF-8 validation for WebSocket text messages and close reasons (RFC 6455 8.1,
// RFC 3629). A small DFA over byte classes: no allocation, one table lookup per non-ASCII byte
// and an 8-bytes-at-a-time path for ASCII runs.
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

namespace steerchat::ws {

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

}  // namespace steerchat::ws
