#include "app/worker_app.hpp"

#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <exception>
#include <functional>
#include <optional>
#include <unordered_set>
#include <utility>
#include <vector>

#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>

#include "app/status.hpp"
#include "chat/chat.hpp"
#include "native/native.hpp"
#include "net/exchange.hpp"
#include "sio/protocol_test.hpp"
#include "socketio_chat/socketio_chat.hpp"
#include "util/log.hpp"
#include "web/static_files.hpp"
#include "ws/connection.hpp"

namespace steerchat::app {

namespace {

// GET /status/ws: the status page's live feed. Sends the /status.json document at once on open,
// then every second, until the connection ends; the client sends nothing (its messages are
// ignored). Lifetimes (docs/architecture.md): the connection owns this handler; the timer's wait
// holds a weak_ptr to the connection and touches the handler only while the connection lives and
// is open (a destroyed handler's timer completes with operation_aborted or finds the weak_ptr
// expired). `live` lists the open feeds (a raw-pointer set: each removes itself in on_close), so
// a reload that turns the status page off can close them.
class StatusFeed final : public ws::MessageHandler {
  public:
    using Set = std::unordered_set<ws::WebSocketConnection*>;
    StatusFeed(const boost::asio::any_io_executor& ex, const std::function<std::string()>& compose,
               Set& live)
        : timer_(ex), compose_(compose), live_(live) {}

    void on_open(ws::WebSocketConnection& conn) override {
        live_.insert(&conn);
        conn_ = conn.weak_from_this();
        push(conn);
    }
    void on_message(ws::WebSocketConnection&, ws::Opcode, std::string_view) override {}
    void on_close(ws::WebSocketConnection& conn, std::uint16_t) override {
        live_.erase(&conn);
        timer_.cancel();
    }

  private:
    void push(ws::WebSocketConnection& conn) {
        if (!conn.send_text(compose_())) return;  // closing, or its queue overflowed (1008)
        timer_.expires_after(std::chrono::seconds(1));
        timer_.async_wait([this, weak = conn_](const boost::system::error_code& ec) {
            if (ec) return;
            const auto c = weak.lock();
            if (!c || !c->is_open()) return;
            push(*c);
        });
    }

    boost::asio::steady_timer timer_;
    const std::function<std::string()>& compose_;
    Set& live_;
    std::weak_ptr<ws::WebSocketConnection> conn_;
};

void append_chat_metrics(std::string& out, metrics::Slot& m, const chat::HubStats& mine) {
    using S = chat::HubStats;
    const auto peers = m.peers(mine);
    metrics::Text t(out);
    auto metric = [&](const char* name, const char* type, const char* help,
                      metrics::Counter S::*field) { t.per_worker(name, type, help, peers, field); };
    metric("steerchat_chat_sessions", "gauge", "Logged-in chat users on this worker.",
           &S::sessions);
    metric("steerchat_chat_deliveries_total", "counter", "Chat events handed to local recipients.",
           &S::deliveries);
    metric("steerchat_chat_events_total", "counter",
           "Distinct chat events delivered (each encoded once per protocol).", &S::events);
    metric("steerchat_ring_records_in_total", "counter",
           "Records read from other workers' shared-memory logs.", &S::records_in);
    metric("steerchat_ring_records_out_total", "counter",
           "Records published into this worker's shared-memory log.", &S::records_out);
    metric("steerchat_chat_stale_records_total", "counter",
           "Presence and room join/leave records dropped: a newer login of the name overtook "
           "them across the workers' logs.",
           &S::stale_presence);
    metric("steerchat_ring_lost_records_total", "counter",
           "Records this worker missed because it fell behind (cut loose).", &S::lost_records);
    metric("steerchat_chat_rate_limited_total", "counter",
           "Chat requests refused rate_limited (--chat-rate, --chat-burst).", &S::rate_limited);
    metric("steerchat_chat_rate_limit_closes_total", "counter",
           "Chat connections closed after --chat-rate-close-after refusals in a row.",
           &S::rate_closes);
    metric("steerchat_chat_room_limit_total", "counter",
           "Joins refused too_many_rooms (--chat-max-rooms-per-user).", &S::room_limited);
    metric("steerchat_chat_names_limit_total", "counter",
           "Logins refused too_many_names (--chat-max-names-per-ip).", &S::names_limited);
    metric("steerchat_chat_server_full_total", "counter",
           "Logins and joins refused server_full: a host-wide table is full (--chat-max-users, "
           "--chat-max-rooms, --chat-max-memberships).",
           &S::server_full);
    metric("steerchat_chat_history_trimmed_total", "counter",
           "Joins whose history was cut to --chat-join-history-bytes.", &S::history_trimmed);
    metric("steerchat_chat_history_bytes_total", "counter",
           "History bytes (JSON-escaped texts and names) that joins returned.", &S::history_bytes);
    metric("steerchat_chat_presence_local_total", "counter",
           "Logins past --chat-presence-max-users online: announced only to who shares a room, "
           "their welcome's list cut (the count and `who` give the rest).",
           &S::presence_local);
    metric("steerchat_chat_who_pages_total", "counter",
           "Pages of `who` (the online names) answered.", &S::who_pages);
    metric("steerchat_chat_typing_dropped_total", "counter",
           "Typing events dropped over --chat-typing-rate, --chat-typing-burst.", &S::typing_drops);
    metric("steerchat_chat_gap_notices_total", "counter",
           "Clients told that this worker lost records (the gap event).", &S::gap_notices);
    metric("steerchat_chat_resent_total", "counter",
           "Room messages resent from history after a loss.", &S::resent);
    metric("steerchat_chat_missed_total", "counter",
           "Room messages lost and no longer in history (announced in the gap event).", &S::missed);
    metric("steerchat_chat_repeats_skipped_total", "counter",
           "Live room messages not delivered because this worker already had them (resent).",
           &S::repeats_skipped);
}

// The protocol adapters' counters (one shape, chat::AdapterStats), labelled by protocol.
void append_adapter_metrics(std::string& out, metrics::Slot& m, const chat::AdapterStats& native,
                            const chat::AdapterStats& socketio) {
    const auto native_peers = m.peers(native);
    const auto sio_peers = m.peers(socketio);
    metrics::Text t(out);
    const auto metric = [&](std::string_view name, std::string_view help,
                            metrics::Counter chat::AdapterStats::*field) {
        t.family(name, "counter", help);
        for (const auto& [slot, s] : native_peers)
            t.sample(name, slot, "protocol=\"native\"", (s->*field).load());
        for (const auto& [slot, s] : sio_peers)
            t.sample(name, slot, "protocol=\"socketio\"", (s->*field).load());
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

// Open connections by protocol and transport, from the parts that hold them: the HTTP edge
// (HTTP connections not upgraded, polling requests included), the native adapter (/ws), and
// Engine.IO (Socket.IO sessions by transport; a polling session is a session, not a socket).
void append_connection_metrics(std::string& out, net::Worker& worker,
                               const chat::AdapterStats& native, const eio::Stats* engine) {
    metrics::Slot& m = worker.metrics();
    const auto http = m.peers(worker.stats());
    const auto native_peers = m.peers(native);
    std::vector<std::pair<unsigned, const eio::Stats*>> eio_peers;
    if (engine) eio_peers = m.peers(*engine);
    metrics::Text t(out);
    constexpr std::string_view name = "steerchat_open_connections";
    t.family(name, "gauge",
             "Open client connections by protocol and transport: http/http (HTTP connections not "
             "upgraded), native/websocket (/ws), socketio/websocket and socketio/polling "
             "(Engine.IO sessions on each transport).");
    for (const auto& [slot, s] : http)
        t.sample(name, slot, "protocol=\"http\",transport=\"http\"", s->active.load());
    for (const auto& [slot, s] : native_peers)
        t.sample(name, slot, "protocol=\"native\",transport=\"websocket\"", s->connections.load());
    for (const auto& [slot, s] : eio_peers) {
        const std::uint64_t all = s->sessions.load(), ws = s->websocket_sessions.load();
        t.sample(name, slot, "protocol=\"socketio\",transport=\"websocket\"", ws);
        t.sample(name, slot, "protocol=\"socketio\",transport=\"polling\"",
                 all > ws ? all - ws : 0);
    }
}

// The shared-memory logs, read straight from the ring mapping: each serving reader's backlog,
// and the host's cut-loose count.
void append_ring_metrics(std::string& out, net::Worker& worker, const ring::Region& ring) {
    metrics::Text t(out);
    const auto slots = worker.metrics().peers(worker.stats());
    t.family("steerchat_ring_lag_bytes", "gauge",
             "Bytes of the other workers' shared-memory logs this worker has yet to read.");
    for (const auto& [slot, s] : slots)
        if (slot < ring.workers())
            t.sample("steerchat_ring_lag_bytes", slot, "", ring.lag_bytes(slot));
    t.family("steerchat_ring_cut_loose_total", "counter",
             "Readers cut loose by a writer that could wait no longer for them (host-wide; each "
             "reader then reports its loss, steerchat_ring_lost_records_total).");
    t.sample("steerchat_ring_cut_loose_total", -1, "", ring.cut_loose_total());
}

}  // namespace

// Declaration order is construction order: the hub first, the protocol adapters on it, then the
// servers that route to them (destroyed in reverse: no server outlives an adapter it calls).
struct WorkerApp::Parts {
    Parts(net::Worker& worker, ring::Region& ring, chat::SharedState& chat,
          const AppOptions& options)
        : hub(worker.io().get_executor(), ring, chat, worker.config().slot, {}, &worker.metrics()),
          native_chat(hub, options.encode_once, &worker.metrics()),
          sio_chat(hub, options.encode_once, &worker.metrics()) {}

    chat::Hub hub;
    native::Service native_chat;
    socketio_chat::Service sio_chat;
    std::optional<sio::ProtocolTest> protocol_test;
    std::optional<sio::Server> sio_server;
    bool status_page = true;                  // --status-page (live: a reload turns it on or off)
    std::function<std::string()> status_doc;  // the /status.json document
    StatusFeed::Set status_feeds;             // open /status/ws connections
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
    worker.add_metrics_source([&p, &worker, &ring](std::string& out) {
        append_connection_metrics(out, worker, p.native_chat.stats(),
                                  p.sio_server ? &p.sio_server->engine().stats() : nullptr);
        append_chat_metrics(out, worker.metrics(), p.hub.stats());
        append_adapter_metrics(out, worker.metrics(), p.native_chat.stats(), p.sio_chat.stats());
        append_ring_metrics(out, worker, ring);
        // The chat state is the host's (one mapping): a host-level sample.
        metrics::Text t(out);
        t.family("steerchat_chat_state_generation", "gauge",
                 "Masters that took the chat state over by an upgrade (steerchat --takeover) "
                 "since it was created; 0 before the first.");
        t.sample("steerchat_chat_state_generation", -1, "",
                 std::uint64_t{p.hub.state_generation()});
    });
    // The browser pages (web/): the chat at /, the workers' live view at /status, its live feed
    // /status/ws and the same JSON for scripts, /status.json (composed here: the parts' counters
    // are known here only).
    p.status_page = options.status_page;
    web::add_routes(worker, [&p] { return p.status_page; });
    p.status_doc = [&p, &worker, &ring] {
        const StatusSources sources{worker,
                                    p.hub.stats(),
                                    p.native_chat.stats(),
                                    p.sio_chat.stats(),
                                    p.sio_server ? &p.sio_server->engine().stats() : nullptr,
                                    ring};
        return status_json(sources);
    };
    // The status page's live feed: refused with 403 while the status page is off (the
    // allowed-origins check applies first, as on every WebSocket route).
    worker.add_websocket_route("/status/ws", [&p, &worker](const net::Request&) {
        return p.status_page ? std::make_unique<StatusFeed>(worker.io().get_executor(),
                                                            p.status_doc, p.status_feeds)
                             : nullptr;
    });
    worker.add_http_route("/status.json", [&p](const std::shared_ptr<net::Exchange>& ex) {
        namespace http = boost::beast::http;
        const net::Request& req = ex->request();
        const bool get = req.method() == http::verb::get || req.method() == http::verb::head;
        if (!p.status_page || !get) {
            ex->respond(net::make_response(
                p.status_page ? http::status::method_not_allowed : http::status::not_found,
                req.version(), req.keep_alive(), false,
                p.status_page ? "use GET or HEAD\n"
                              : "no such resource: the status page is off (--status-page on)\n",
                "text/plain; charset=utf-8"));
            return;
        }
        auto res = net::make_response(http::status::ok, req.version(), req.keep_alive(),
                                      req.method() == http::verb::head, p.status_doc(),
                                      "application/json");
        res.set(http::field::cache_control, "no-store");
        web::set_security_headers(res);
        ex->respond(std::move(res));
    });
}

WorkerApp::~WorkerApp() = default;

chat::Hub& WorkerApp::hub() noexcept {
    return parts_->hub;
}

void WorkerApp::update(const AppOptions& options) {
    Parts& p = *parts_;
    p.hub.set_limits(options.chat_limits);
    p.status_page = options.status_page;
    if (!p.status_page && !p.status_feeds.empty()) {
        // Turned off: the open live feeds close with 1008 (their page reconnects and is refused).
        std::vector<std::shared_ptr<ws::WebSocketConnection>> feeds;
        for (ws::WebSocketConnection* c : p.status_feeds)
            feeds.push_back(c->shared_from_this());
        for (const auto& c : feeds)
            c->close(ws::close_code::policy_violation, "the status page is off");
        log::info("closed {} status page feed(s): the status page is off", feeds.size());
    }
    // The protocol test suites' servers keep the options the suites expect.
    if (p.sio_server) {
        p.sio_server->engine().update_options(options.engine);
        p.sio_server->update_options(options.socketio);
    }
}

void apply_update(net::Worker& worker, WorkerApp& app, const WorkerOptions& options,
                  unsigned nslots) {
    log::configure(options.log_level, options.log_format);
    WorkerContext fresh = worker_context(options, nslots);
    worker.update_limits(worker_config(fresh));
    app.update(fresh.app);
}

namespace {

// What a worker knows of reloads, in its slot block (every worker renders every worker's): the
// master's counters as of the last update it received, and the updates it applied.
struct ReloadStats {
    metrics::Counter ok;
    metrics::Counter failed;
    metrics::Counter applied;
};

// The worker's end of its config channel: reads the master's ConfigUpdate messages (one per
// reload; SOCK_SEQPACKET keeps them whole) from the event loop and applies them.
class ConfigChannel {
  public:
    ConfigChannel(net::Worker& worker, WorkerApp& app, const WorkerContext& ctx)
        : worker_(worker),
          app_(app),
          nslots_(ctx.nslots),
          options_(ctx.options),
          reloads_(ctx.reloads),
          stats_(&worker.metrics()),
          fd_(worker.io(), ctx.config_fd) {
        stats_->ok = reloads_.ok;
        stats_->failed = reloads_.failed;
        worker.add_metrics_source([this](std::string& out) {
            const auto peers = worker_.metrics().peers(*stats_);
            metrics::Text t(out);
            t.per_worker("steerchat_config_reloads_total", "counter",
                         "Reloads of the configuration (SIGHUP to the master): ok, or failed (the "
                         "file did not parse; the old configuration kept), as the worker last "
                         "heard from the master.",
                         peers, "result",
                         {{"ok", &ReloadStats::ok}, {"failed", &ReloadStats::failed}});
            t.per_worker("steerchat_config_updates_applied_total", "counter",
                         "Configuration updates this worker applied since it started.", peers,
                         &ReloadStats::applied);
        });
        wait();
    }

  private:
    void wait() {
        fd_.async_wait(boost::asio::posix::stream_descriptor::wait_read,
                       [this](const boost::system::error_code& ec) {
                           if (!ec && read()) wait();
                       });
    }
    // False once the master's end is closed.
    bool read() {
        for (;;) {
            iovec iov{buffer_.data(), buffer_.size()};
            msghdr msg{};
            msg.msg_iov = &iov;
            msg.msg_iovlen = 1;
            const ssize_t n = ::recvmsg(fd_.native_handle(), &msg, MSG_DONTWAIT);
            if (n < 0) return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
            if (n == 0) return false;
            if (msg.msg_flags & MSG_TRUNC) {
                log::error("configuration update larger than {} bytes: ignored", buffer_.size());
                continue;
            }
            std::string error;
            auto update = parse_config_update(
                std::string_view(buffer_.data(), static_cast<std::size_t>(n)), error);
            if (!update) {
                log::error("configuration update from the master is malformed ({}): ignored",
                           error);
                continue;
            }
            reloads_ = update->reloads;
            stats_->ok = reloads_.ok;
            stats_->failed = reloads_.failed;
            // A failed reload sends the running options again (with the new counters).
            if (update->options == options_) continue;
            try {
                apply_update(worker_, app_, update->options, nslots_);
            } catch (const std::exception& e) {
                log::error("applying a configuration update failed: {}", e.what());
                continue;
            }
            options_ = update->options;
            ++stats_->applied;
            log::info("applied the reloaded configuration (reload {})", reloads_.ok);
        }
    }

    net::Worker& worker_;
    WorkerApp& app_;
    unsigned nslots_;
    WorkerOptions options_;  // applied last
    ReloadCounts reloads_;
    metrics::Cell<ReloadStats> stats_;          // in the worker's slot block
    boost::asio::posix::stream_descriptor fd_;  // owns the descriptor
    std::array<char, 1 << 16> buffer_{};
};

}  // namespace

net::WorkerConfig worker_config(const WorkerContext& ctx) {
    net::WorkerConfig cfg = ctx.net;
    cfg.slot = ctx.slot;
    cfg.nslots = ctx.nslots;
    cfg.listen_fd = ctx.listen_fd;
    cfg.tls_listen_fd = ctx.tls_listen_fd;
    cfg.metrics = ctx.metrics;
    cfg.max_body_bytes = std::max(cfg.max_body_bytes, ctx.app.engine.max_payload + 1024);
    return cfg;
}

void run_worker(const WorkerContext& ctx) {
    int rc = 1;
    try {
        net::Worker worker(worker_config(ctx));
        WorkerApp app(worker, *ctx.ring, *ctx.chat, ctx.app);
        std::optional<ConfigChannel> config;
        if (ctx.config_fd >= 0) config.emplace(worker, app, ctx);
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
