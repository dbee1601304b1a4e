#include "text/utf8.hpp"

#include <array>
#include <cstring>

namespace steerchat::text {

namespace {

// Byte classes. Continuation bytes are split by the ranges the second byte of E0, ED, F0 and F4
// sequences is restricted to (RFC 3629 section 4).
constexpr std::uint8_t kAscii = 0;    // 00..7F
constexpr std::uint8_t kCont80 = 1;   // 80..8F
constexpr std::uint8_t kCont90 = 2;   // 90..9F
constexpr std::uint8_t kContA0 = 3;   // A0..BF
constexpr std::uint8_t kInvalid = 4;  // C0, C1 (overlong 2-byte), F5..FF (beyond U+10FFFF)
constexpr std::uint8_t kLead2 = 5;    // C2..DF
constexpr std::uint8_t kLeadE0 = 6;   // E0: second byte A0..BF (else overlong)
constexpr std::uint8_t kLead3 = 7;    // E1..EC, EE, EF
constexpr std::uint8_t kLeadED = 8;   // ED: second byte 80..9F (else surrogate)
constexpr std::uint8_t kLeadF0 = 9;   // F0: second byte 90..BF (else overlong)
constexpr std::uint8_t kLead4 = 10;   // F1..F3
constexpr std::uint8_t kLeadF4 = 11;  // F4: second byte 80..8F (else > U+10FFFF)
constexpr std::uint8_t kClasses = 12;

// States: kAccept and kReject (from the header), then "continuation bytes still needed" states.
constexpr std::uint8_t kNeed1 = 2;  // one more 80..BF
constexpr std::uint8_t kNeed2 = 3;  // two more 80..BF
constexpr std::uint8_t kNeed3 = 4;  // three more 80..BF
constexpr std::uint8_t kE0 = 5;     // after E0: A0..BF, then one more
constexpr std::uint8_t kED = 6;     // after ED: 80..9F, then one more
constexpr std::uint8_t kF0 = 7;     // after F0: 90..BF, then two more
constexpr std::uint8_t kF4 = 8;     // after F4: 80..8F, then two more
constexpr std::uint8_t kStates = 9;

constexpr std::array<std::uint8_t, 256> make_classes() {
    std::array<std::uint8_t, 256> c{};
    for (int b = 0; b < 256; ++b) {
        std::uint8_t k = kInvalid;
        if (b < 0x80)
            k = kAscii;
        else if (b < 0x90)
            k = kCont80;
        else if (b < 0xA0)
            k = kCont90;
        else if (b < 0xC0)
            k = kContA0;
        else if (b < 0xC2)
            k = kInvalid;
        else if (b < 0xE0)
            k = kLead2;
        else if (b == 0xE0)
            k = kLeadE0;
        else if (b == 0xED)
            k = kLeadED;
        else if (b < 0xF0)
            k = kLead3;
        else if (b == 0xF0)
            k = kLeadF0;
        else if (b < 0xF4)
            k = kLead4;
        else if (b == 0xF4)
            k = kLeadF4;
        c[b] = k;
    }
    return c;
}

constexpr std::array<std::uint8_t, kStates * kClasses> make_transitions() {
    constexpr std::uint8_t R = Utf8Validator::kReject;
    constexpr std::uint8_t A = Utf8Validator::kAccept;
    std::array<std::uint8_t, kStates * kClasses> t{};
    for (auto& v : t)
        v = R;
    auto set = [&t](std::uint8_t state, std::uint8_t cls, std::uint8_t next) {
        t[state * kClasses + cls] = next;
    };
    set(A, kAscii, A);
    set(A, kLead2, kNeed1);
    set(A, kLeadE0, kE0);
    set(A, kLead3, kNeed2);
    set(A, kLeadED, kED);
    set(A, kLeadF0, kF0);
    set(A, kLead4, kNeed3);
    set(A, kLeadF4, kF4);
    for (std::uint8_t cls : {kCont80, kCont90, kContA0}) {
        set(kNeed1, cls, A);
        set(kNeed2, cls, kNeed1);
        set(kNeed3, cls, kNeed2);
    }
    set(kE0, kContA0, kNeed1);
    set(kED, kCont80, kNeed1);
    set(kED, kCont90, kNeed1);
    set(kF0, kCont90, kNeed2);
    set(kF0, kContA0, kNeed2);
    set(kF4, kCont80, kNeed2);
    return t;
}

// The length of the valid 2-, 3- or 4-byte sequence at p (4 bytes readable), else 0.
inline std::size_t whole_sequence(const std::uint8_t* p) noexcept {
    const auto cont = [](std::uint8_t b) { return (b & 0xC0) == 0x80; };
    const std::uint8_t b0 = p[0];
    if (b0 >= 0xC2 && b0 <= 0xDF) return cont(p[1]) ? 2 : 0;
    if (b0 >= 0xE0 && b0 <= 0xEF) {
        const std::uint8_t lo = b0 == 0xE0 ? 0xA0 : 0x80;  // E0: no overlongs
        const std::uint8_t hi = b0 == 0xED ? 0x9F : 0xBF;  // ED: no surrogates
        return p[1] >= lo && p[1] <= hi && cont(p[2]) ? 3 : 0;
    }
    if (b0 >= 0xF0 && b0 <= 0xF4) {
        const std::uint8_t lo = b0 == 0xF0 ? 0x90 : 0x80;  // F0: no overlongs
        const std::uint8_t hi = b0 == 0xF4 ? 0x8F : 0xBF;  // F4: not above U+10FFFF
        return p[1] >= lo && p[1] <= hi && cont(p[2]) && cont(p[3]) ? 4 : 0;
    }
    return 0;
}

constexpr auto kClass = make_classes();
constexpr auto kNext = make_transitions();

}  // namespace

bool Utf8Validator::feed(const std::uint8_t* p, std::size_t size) noexcept {
    std::uint8_t s = state_;
    if (s == kReject) return false;
    const std::uint8_t* const end = p + size;
    while (p != end) {
        if (s == kAccept) {
            // ASCII run: skip whole words whose bytes all have the top bit clear.
            while (end - p >= 8) {
                std::uint64_t w;
                std::memcpy(&w, p, sizeof w);
                if (w & 0x8080808080808080ULL) break;
                p += 8;
            }
            while (p != end && *p < 0x80)
                ++p;
            if (p == end) break;
            // A whole multi-byte sequence in the buffer: check it directly. Anything it does
            // not accept (invalid bytes, a sequence split across feeds) goes through the DFA
            // below, which rejects at the exact byte.
            if (end - p >= 4) {
                const std::size_t n = whole_sequence(p);
                if (n != 0) {
                    p += n;
                    continue;
                }
            }
        }
        s = kNext[s * kClasses + kClass[*p++]];
        if (s == kReject) {
            state_ = s;
            return false;
        }
    }
    state_ = s;
    return true;
}

bool is_valid_utf8(const std::uint8_t* data, std::size_t size) noexcept {
    Utf8Validator v;
    return v.feed(data, size) && v.complete();
}

std::size_t code_points(std::string_view utf8) noexcept {
    std::size_t n = 0;
    for (const char ch : utf8)
        n += (static_cast<std::uint8_t>(ch) & 0xC0) != 0x80;
    return n;
}

std::size_t utf16_length(std::string_view utf8) noexcept {
    std::size_t units = 0;
    for (const char ch : utf8) {
        const auto c = static_cast<std::uint8_t>(ch);
        if ((c & 0xC0) == 0x80) continue;
        units += c >= 0xF0 ? 2 : 1;
    }
    return units;
}

}  // namespace steerchat::text
