// Base64 (RFC 4648, standard alphabet "A-Za-z0-9+/", '=' padding), the one codec of the project:
// Engine.IO's binary packets in text payloads ("bAQIDBA==" in v4, "b4AQIDBA==" in v3) and the
// WebSocket handshake's keys (Sec-WebSocket-Key, Sec-WebSocket-Accept).
//
// The project's own rather than OpenSSL's EVP_EncodeBlock/EVP_DecodeBlock: Engine.IO decoding is
// strict (exact padding, canonical trailing bits, no whitespace) and EVP_DecodeBlock is not (it
// skips surrounding whitespace, does not report the padding and accepts non-canonical input), so
// a wrapper would need this same checking pass around it.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace steerchat::text {

// Whether `c` is one of the 64 characters of the alphabet ('=' is not).
bool is_base64_char(char c) noexcept;

// Appends the padded base64 encoding of `bytes` to `out`.
void base64_append(std::string& out, std::string_view bytes);

// The padded base64 encoding of `bytes`.
std::string base64_encode(std::string_view bytes);

// Decodes padded base64. Rejects (nullopt) a length that is not a multiple of 4, a character
// outside the alphabet, '=' anywhere but the last one or two positions, and non-zero bits left
// over before the padding (non-canonical input). "" decodes to "".
std::optional<std::string> base64_decode(std::string_view text);

}  // namespace steerchat::text
