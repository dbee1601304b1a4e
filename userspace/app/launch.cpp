#include "app/launch.hpp"

#include <fmt/core.h>

#include <exception>
#include <utility>

#include "app/worker_app.hpp"
#include "chat/chat.hpp"
#include "chat/shared_state.hpp"
#include "net/limits.hpp"
#include "util/log.hpp"
#include "ws/handshake.hpp"

namespace steerchat::app {

std::size_t fd_headroom() noexcept {
    return net::kMinFdHeadroom;
}

std::string check_edge_limits(WorkerOptions& o, bool max_conns_per_worker_given,
                              std::uint64_t nofile) {
    if (!max_conns_per_worker_given) {
        o.max_conns_per_worker = net::default_max_conns_per_worker(nofile);
    } else if (o.max_conns_per_worker == 0) {
        return "--max-conns-per-worker must be at least 1";
    } else if (o.max_conns_per_worker + net::kMinFdHeadroom > nofile) {
        return fmt::format(
            "--max-conns-per-worker {} needs an open-files limit of at least {} ({} kept free "
            "for the worker itself), but the hard limit is {}: raise it (LimitNOFILE= in the "
            "systemd unit, ulimit -Hn; see scripts/tune) or lower the option",
            o.max_conns_per_worker, o.max_conns_per_worker + net::kMinFdHeadroom,
            net::kMinFdHeadroom, nofile);
    }
    if (o.http_max_header_bytes < 1024 || o.http_max_header_bytes > (std::size_t{1} << 20))
        return fmt::format("--http-max-header-bytes {} is out of range (1024 to 1048576)",
                           o.http_max_header_bytes);
    for (auto [name, v] : {std::pair{"--http-first-byte-timeout-ms", o.http_first_byte_timeout_ms},
                           std::pair{"--http-keepalive-timeout-ms", o.http_keepalive_timeout_ms},
                           std::pair{"--http-header-timeout-ms", o.http_header_timeout_ms},
                           std::pair{"--http-body-timeout-ms", o.http_body_timeout_ms}})
        if (v < 100 || v > 3'600'000)
            return fmt::format("{} {} is out of range (100 to 3600000 ms)", name, v);
    return {};
}

struct HostState::Parts {
    chat::SharedState chat;
};

HostState::HostState(std::unique_ptr<Parts> parts) : parts_(std::move(parts)) {}
HostState::HostState(HostState&&) noexcept = default;
HostState& HostState::operator=(HostState&&) noexcept = default;
HostState::~HostState() = default;

HostState HostState::create() {
    // libcrypto reads its configuration file on first use (the WebSocket handshake's SHA-1): do
    // it here, so no worker opens a file after its drop (--seccomp allows no open at all).
    ws::compute_accept_key("dGhlIHNhbXBsZSBub25jZQ==");
    return HostState(std::make_unique<Parts>(Parts{chat::SharedState::create({})}));
}

std::size_t HostState::release_slot(ring::Region& ring, unsigned slot) {
    auto gone = parts_->chat.evict_slot(slot);
    if (gone.empty()) return 0;
    try {
        chat::announce_offline(ring, slot, gone);
    } catch (const std::exception& e) {
        log::error("announcing the {} user(s) of worker {} offline failed: {}", gone.size(), slot,
                   e.what());
    }
    return gone.size();
}

WorkerContext worker_context(const WorkerOptions& opts, unsigned nslots) {
    WorkerContext ctx;
    ctx.nslots = nslots;

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
    AppOptions& app = ctx.app;
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

void run_worker(const WorkerLaunch& launch) {
    WorkerContext ctx = worker_context(*launch.options, launch.nslots);
    ctx.slot = launch.slot;
    ctx.listen_fd = launch.listen_fd;
    ctx.ring = launch.ring;
    ctx.chat = &launch.host->parts_->chat;
    ctx.ready_fd = launch.ready_fd;
    ctx.metrics = launch.metrics;
    run_worker(ctx);
}

}  // namespace steerchat::app
