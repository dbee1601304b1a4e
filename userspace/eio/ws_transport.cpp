#include "eio/ws_transport.hpp"

#include "eio/packet.hpp"

namespace steerchat::eio {

void WsTransport::on_open(ws::WebSocketConnection& conn) {
    if (open_) {
        session_ = std::exchange(open_, nullptr)(conn);
        return;
    }
    if (const auto s = session_.lock()) {
        s->on_ws_open(conn);
        return;
    }
    // The session ended while the 101 was being written: as Node's engine.io, close at once
    // without a status code.
    ++stats_.websockets_refused;
    conn.close(ws::close_code::no_status, {});
}

void WsTransport::on_message(ws::WebSocketConnection& conn, ws::Opcode opcode,
                             std::string_view payload) {
    const auto s = session_.lock();
    if (!s) return;
    if (auto p = decode_ws_frame(payload, opcode == ws::Opcode::binary, protocol_))
        s->on_ws_packet(conn, *p);
    else
        s->on_ws_invalid(conn);
}

void WsTransport::on_close(ws::WebSocketConnection& conn, std::uint16_t) {
    if (const auto s = session_.lock()) s->on_ws_close(conn);
}

void RefusedTransport::on_open(ws::WebSocketConnection& conn) {
    conn.close(ws::close_code::no_status, {});
}

}  // namespace steerchat::eio
