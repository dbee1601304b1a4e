#include "app/worker_app.hpp"

#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <exception>
#include <optional>
#include <utility>

#include <boost/asio/post.hpp>

#include "chat/chat.hpp"
#include "native/native.hpp"
#include "sio/protocol_test.hpp"
#include "socketio_chat/socketio_chat.hpp"
#include "util/log.hpp"

namespace steerchat::app {

namespace {

void append_chat_metrics(std::string& out, const chat::Hub& hub) {
    const unsigned slot = hub.slot();
    const auto& c = hub.stats();
    net::append_metric(out, "steerchat_chat_sessions", "gauge",
                       "Logged-in chat users on this worker.", slot, c.sessions);
    net::append_metric(out, "steerchat_chat_deliveries_total", "counter",
                       "Chat events handed to local recipients.", slot, c.deliveries);
    net::append_metric(out, "steerchat_chat_events_total", "counter",
                       "Distinct chat events delivered (each encoded once per protocol).", slot,
                       c.events);
    net::append_metric(out, "steerchat_ring_records_in_total", "counter",
                       "Records read from other workers' shared-memory logs.", slot, c.records_in);
    net::append_metric(out, "steerchat_ring_records_out_total", "counter",
                       "Records published into this worker's shared-memory log.", slot,
                       c.records_out);
    net::append_metric(out, "steerchat_ring_lost_records_total", "counter",
                       "Records this worker missed because it fell behind (cut loose).", slot,
                       c.lost_records);
    net::append_metric(out, "steerchat_chat_rate_limited_total", "counter",
                       "Chat requests refused rate_limited (--chat-rate, --chat-burst).", slot,
                       c.rate_limited);
    net::append_metric(out, "steerchat_chat_rate_limit_closes_total", "counter",
                       "Chat connections closed after --chat-rate-close-after refusals in a row.",
                       slot, c.rate_closes);
    net::append_metric(out, "steerchat_chat_room_limit_total", "counter",
                       "Joins refused too_many_rooms (--chat-max-rooms-per-user).", slot,
                       c.room_limited);
    net::append_metric(out, "steerchat_chat_typing_dropped_total", "counter",
                       "Typing events dropped over --chat-typing-rate, --chat-typing-burst.", slot,
                       c.typing_drops);
    net::append_metric(out, "steerchat_chat_state_generation", "gauge",
                       "Masters that took this chat state over by an upgrade (steerchat "
                       "--takeover) since it was created; 0 for the first.",
                       slot, hub.state_generation());
}

// The protocol adapters' counters (one shape, chat::AdapterStats), labelled by protocol.
void append_adapter_metrics(std::string& out, unsigned slot, const chat::AdapterStats& native,
                            const chat::AdapterStats& socketio) {
    const auto metric = [&](std::string_view name, std::string_view help,
                            std::uint64_t chat::AdapterStats::*field) {
        net::append_metric(out, name, "counter", help, slot, "protocol",
                           {{"native", native.*field}, {"socketio", socketio.*field}});
    };
    metric("steerchat_chat_requests_total",
           "Chat requests handled by a protocol adapter (native: frames on /ws; socketio: client "
           "events).",
           &chat::AdapterStats::requests);
    metric("steerchat_chat_errors_total", "Error answers of a protocol adapter.",
           &chat::AdapterStats::errors);
    metric("steerchat_chat_encodings_total",
           "Chat events encoded by a protocol adapter (once per event and protocol with "
           "encode-once; once per recipient with --no-encode-once).",
           &chat::AdapterStats::encoded);
    metric("steerchat_chat_shared_sends_total",
           "Chat event deliveries that reused an encoding (encode-once).",
           &chat::AdapterStats::shared_sends);
}

}  // namespace

// Declaration order is construction order: the hub first, the protocol adapters on it, then the
// servers that route to them (destroyed in reverse: no server outlives an adapter it calls).
struct WorkerApp::Parts {
    Parts(net::Worker& worker, ring::Region& ring, chat::SharedState& chat,
          const AppOptions& options)
        : hub(worker.io().get_executor(), ring, chat, worker.config().slot),
          native_chat(hub, options.encode_once),
          sio_chat(hub, options.encode_once) {}

    chat::Hub hub;
    native::Service native_chat;
    socketio_chat::Service sio_chat;
    std::optional<sio::ProtocolTest> protocol_test;
    std::optional<sio::Server> sio_server;
};

WorkerApp::WorkerApp(net::Worker& worker, ring::Region& ring, chat::SharedState& chat,
                     const AppOptions& options)
    : parts_(std::make_unique<Parts>(worker, ring, chat, options)) {
    Parts& p = *parts_;
    p.hub.set_limits(options.chat_limits);
    // A stopping worker (SIGTERM; an upgrade: docs/architecture.md) logs its users out before
    // its connections close with 1001, so a client that reconnects at once (to the new
    // workers) finds its name free. Registered first: runs before the servers' stop hooks.
    worker.add_stop_hook([&p] {
        if (const std::size_t n = p.hub.logout_all(); n != 0)
            log::info("logged out {} chat user(s) before closing their connections", n);
    });
    worker.add_websocket_route(
        "/ws", [&native = p.native_chat](const net::Request&) { return native.make_handler(); });
    // Engine.IO / Socket.IO: the chat, or the protocol test suites' server.
    if (options.protocol_test) {
        p.protocol_test.emplace(worker, options.engine, options.socketio);
        worker.add_metrics_source([&p](std::string& out) { p.protocol_test->append_metrics(out); });
    } else {
        std::vector<sio::Namespace> namespaces{p.sio_chat.make_namespace("/")};
        for (const auto& ns : options.sio_namespaces)
            namespaces.push_back(p.sio_chat.make_namespace(ns));
        p.sio_server.emplace(worker, options.engine, options.socketio, std::move(namespaces));
        worker.add_metrics_source([&p](std::string& out) { p.sio_server->append_metrics(out); });
    }
    worker.add_metrics_source([&p](std::string& out) {
        append_chat_metrics(out, p.hub);
        append_adapter_metrics(out, p.hub.slot(), p.native_chat.stats(), p.sio_chat.stats());
    });
}

WorkerApp::~WorkerApp() = default;

chat::Hub& WorkerApp::hub() noexcept {
    return parts_->hub;
}

net::WorkerConfig worker_config(const WorkerContext& ctx) {
    net::WorkerConfig cfg = ctx.net;
    cfg.slot = ctx.slot;
    cfg.nslots = ctx.nslots;
    cfg.listen_fd = ctx.listen_fd;
    cfg.max_body_bytes = std::max(cfg.max_body_bytes, ctx.app.engine.max_payload + 1024);
    return cfg;
}

void run_worker(const WorkerContext& ctx) {
    int rc = 1;
    try {
        net::Worker worker(worker_config(ctx));
        WorkerApp app(worker, *ctx.ring, *ctx.chat, ctx.app);
        if (ctx.ready_fd >= 0)
            boost::asio::post(worker.io(), [fd = ctx.ready_fd, slot = ctx.slot] {
                const std::int32_t msg[2] = {static_cast<std::int32_t>(slot),
                                             static_cast<std::int32_t>(::getpid())};
                [[maybe_unused]] auto n = ::write(fd, msg, sizeof msg);
                ::close(fd);
            });
        rc = worker.run();
        // The process ends here, without unwinding (see worker_app.hpp).
        ::_exit(rc);
    } catch (const std::exception& e) {
        log::error("fatal: {}", e.what());
    }
    ::_exit(rc);
}

}  // namespace steerchat::app
