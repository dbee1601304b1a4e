#include "master/worker_context.hpp"

#include <chrono>

namespace steerchat::master {

app::WorkerContext worker_context(const Options& opts) {
    app::WorkerContext ctx;
    ctx.nslots = opts.workers;

    // HTTP edge and WebSocket connections.
    net::WorkerConfig& net = ctx.net;
    net.allowed_origins = opts.allowed_origins;
    net.websocket.max_message_size = opts.ws_max_message;
    net.websocket.max_queued_bytes = opts.ws_max_queued;
    net.websocket.ping_interval = std::chrono::milliseconds(opts.ws_ping_interval_ms);
    net.websocket.ping_timeout = std::chrono::milliseconds(opts.ws_ping_timeout_ms);
    net.websocket.cork = opts.ws_cork;
    // HTTP edge limits (docs/reliability.md)
    net.limits.per_address = opts.max_conns_per_ip;
    net.limits.per_worker = opts.max_conns_per_worker;
    net.limits.ipv6_prefix64 = opts.ipv6_prefix64;
    net.max_header_bytes = opts.http_max_header_bytes;
    net.first_byte_timeout = std::chrono::milliseconds(opts.http_first_byte_timeout_ms);
    net.keepalive_timeout = std::chrono::milliseconds(opts.http_keepalive_timeout_ms);
    net.header_timeout = std::chrono::milliseconds(opts.http_header_timeout_ms);
    net.body_timeout = std::chrono::milliseconds(opts.http_body_timeout_ms);

    // The application: chat adapters, Engine.IO / Socket.IO.
    app::AppOptions& app = ctx.app;
    app.encode_once = opts.encode_once;
    app.chat_limits = {.rate = opts.chat_rate,
                       .burst = opts.chat_burst,
                       .close_after = opts.chat_rate_close_after,
                       .max_rooms = opts.chat_max_rooms,
                       .typing_rate = opts.chat_typing_rate,
                       .typing_burst = opts.chat_typing_burst};
    eio::Options& engine = app.engine;
    engine.path = opts.socketio_path;
    engine.ping_interval = std::chrono::milliseconds(opts.eio_ping_interval_ms);
    engine.ping_timeout = std::chrono::milliseconds(opts.eio_ping_timeout_ms);
    engine.max_payload = opts.eio_max_payload;
    engine.allow_eio3 = opts.eio3;
    engine.cors_origins = opts.cors_origins;
    engine.allowed_origins = opts.allowed_origins;
    engine.max_sessions_per_ip = opts.eio_max_sessions_per_ip;
    engine.first_poll_timeout = std::chrono::milliseconds(opts.eio_first_poll_timeout_ms);
    engine.max_buffered_bytes = opts.eio_max_queued;
    engine.max_buffered_total = opts.eio_max_queued_total;
    app.socketio.connect_timeout = std::chrono::milliseconds(opts.sio_connect_timeout_ms);
    app.sio_namespaces = opts.sio_namespaces;
    app.protocol_test = opts.protocol_test;
    return ctx;
}

}  // namespace steerchat::master
