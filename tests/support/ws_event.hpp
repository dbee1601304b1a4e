// A parser event copied out of ws::FrameParser (its views are valid only until the next feed), so
// tests and the fuzzer can compare event sequences.
#pragma once

#include <cstdint>
#include <ostream>
#include <string>

#include "ws/frame.hpp"

namespace steerchat::test_support {

struct WsEvent {
    ws::EventKind kind;
    ws::Opcode op;
    std::uint16_t code;
    std::string data;
    bool operator==(const WsEvent&) const = default;

    static WsEvent copy(const ws::Event& e) {
        return WsEvent{e.kind, e.opcode, e.code, std::string(e.text())};
    }
};

// For test failure messages (payloads can be large: only their size).
inline std::ostream& operator<<(std::ostream& os, const WsEvent& e) {
    return os << "{kind=" << int(e.kind) << " op=" << int(e.op) << " code=" << e.code
              << " size=" << e.data.size() << "}";
}

}  // namespace steerchat::test_support
