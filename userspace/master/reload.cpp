#include "master/reload.hpp"

#include <functional>
#include <string_view>
#include <type_traits>

#include <fmt/core.h>

namespace steerchat::master {

namespace {

std::string show(const std::string& v) {
    return v.empty() ? "(none)" : v;
}
std::string show(const std::filesystem::path& v) {
    return v.string();
}
std::string show(const std::vector<std::string>& v) {
    if (v.empty()) return "(none)";
    std::string out;
    for (const auto& s : v)
        out += (out.empty() ? "" : ",") + s;
    return out;
}
std::string show(bool v) {
    return v ? "true" : "false";
}
std::string show(double v) {
    return fmt::format("{}", v);
}
std::string show(SteeringMode v) {
    return v == SteeringMode::bpf ? "bpf" : "kernel";
}
std::string show(log::Level v) {
    return std::string(log::level_name(v));
}
std::string show(log::Format v) {
    return v == log::Format::json ? "json" : "text";
}
template <class T>
std::enable_if_t<std::is_integral_v<T>, std::string> show(T v) {
    return std::to_string(v);
}

struct Entry {
    const char* key;
    bool live;
    std::function<bool(const Options&, const Options&)> same;
    std::function<std::string(const Options&)> text;
    std::function<void(Options&, const Options&)> take;
};

// A setting stored in field `m` (of Options or of its base app::WorkerOptions); `negated` for
// the switches that turn something off (no-cpu-pinning: the field is pin_cpus).
template <class C, class T>
Entry field(const char* key, bool live, T C::*m, bool negated = false) {
    Entry e{key, live, nullptr, nullptr, nullptr};
    e.same = [m](const Options& a, const Options& b) { return a.*m == b.*m; };
    e.text = [m, negated](const Options& o) {
        if constexpr (std::is_same_v<T, bool>)
            return show(negated ? !(o.*m) : o.*m);
        else
            return show(o.*m);
    };
    e.take = [m](Options& to, const Options& from) { to.*m = from.*m; };
    return e;
}

constexpr bool kLive = true;
constexpr bool kRestart = false;

// --tls-cert / --tls-key: the file name and the contents the master read from it (a renewed
// certificate usually keeps its name). Shown by name, or "(contents changed)".
Entry tls_file(const char* key, std::string app::WorkerOptions::*file,
               std::string app::WorkerOptions::*pem) {
    Entry e{key, kLive, nullptr, nullptr, nullptr};
    e.same = [file, pem](const Options& a, const Options& b) {
        return a.*file == b.*file && a.*pem == b.*pem;
    };
    e.text = [file](const Options& o) { return show(o.*file); };
    e.take = [file, pem](Options& to, const Options& from) {
        to.*file = from.*file;
        to.*pem = from.*pem;
        to.tls_summary = from.tls_summary;
        to.tls_warning = from.tls_warning;
    };
    return e;
}

const std::vector<Entry>& entries() {
    static const std::vector<Entry> all = [] {
        std::vector<Entry> v{
            // Where and how it listens and steers: sockets, BPF maps, forked processes.
            field("port", kRestart, &Options::port),
            field("workers", kRestart, &Options::workers),
            field("max-workers", kRestart, &Options::max_workers),
            field("bind", kRestart, &Options::bind),
            field("steering", kRestart, &Options::steering),
            field("seed", kRestart, &Options::seed),
            field("ipv6-prefix64", kRestart, &Options::ipv6_prefix64),
            field("backlog", kRestart, &Options::backlog),
            field("no-cpu-pinning", kRestart, &Options::pin_cpus, true),
            field("bpffs-dir", kRestart, &Options::bpffs_dir),
            field("run-dir", kRestart, &Options::run_dir),
            field("ring-size", kRestart, &Options::ring_bytes),
            field("redis", kRestart, &Options::redis_url),
            field("host-id", kRestart, &Options::host_id),
            field("host-lease", kRestart, &Options::host_lease_ms),
            field("redis-buffer", kRestart, &Options::redis_buffer),
            field("chat-memory", kRestart, &Options::chat_memory),
            field("chat-max-users", kRestart, &Options::chat_users),
            field("chat-max-rooms", kRestart, &Options::chat_rooms),
            field("chat-max-memberships", kRestart, &Options::chat_memberships),
            field("chat-history-len", kRestart, &Options::chat_history_len),
            field("chat-history-bytes", kRestart, &Options::chat_history_bytes),
            field("user", kRestart, &Options::user),
            field("group", kRestart, &Options::group),
            field("seccomp", kRestart, &Options::seccomp),
            // The master's restart policy: read at every death and stop.
            field("respawn-delay-ms", kLive, &Options::respawn_delay_ms),
            field("max-restarts", kLive, &Options::max_restarts),
            field("restart-window", kLive, &Options::restart_window_s),
            field("shutdown-timeout-ms", kLive, &Options::shutdown_timeout_ms),
            field("drain-timeout-ms", kLive, &Options::drain_timeout_ms),
            // WebSocket (new connections; a connection keeps the options it opened with).
            field("ws-max-message", kLive, &Options::ws_max_message),
            field("ws-max-queued", kLive, &Options::ws_max_queued),
            field("ws-ping-interval-ms", kLive, &Options::ws_ping_interval_ms),
            field("ws-ping-timeout-ms", kLive, &Options::ws_ping_timeout_ms),
            field("allow-origin", kLive, &Options::allowed_origins),
            // Benchmark baselines and the routes: built once per worker.
            field("ws-no-cork", kRestart, &Options::ws_cork, true),
            field("no-encode-once", kRestart, &Options::encode_once, true),
            field("socketio-path", kRestart, &Options::socketio_path),
            field("sio-namespace", kRestart, &Options::sio_namespaces),
            field("protocol-test", kRestart, &Options::protocol_test),
            field("status-page", kLive, &Options::status_page),
            // Engine.IO and Socket.IO (heartbeat and payload: new sessions).
            field("eio-ping-interval-ms", kLive, &Options::eio_ping_interval_ms),
            field("eio-ping-timeout-ms", kLive, &Options::eio_ping_timeout_ms),
            field("eio-max-payload", kLive, &Options::eio_max_payload),
            field("no-eio3", kLive, &Options::eio3, true),
            field("cors-origin", kLive, &Options::cors_origins),
            field("sio-connect-timeout-ms", kLive, &Options::sio_connect_timeout_ms),
            field("eio-max-sessions-per-ip", kLive, &Options::eio_max_sessions_per_ip),
            field("eio-first-poll-timeout-ms", kLive, &Options::eio_first_poll_timeout_ms),
            field("eio-max-queued", kLive, &Options::eio_max_queued),
            field("eio-max-queued-total", kLive, &Options::eio_max_queued_total),
            // The HTTP edge.
            field("max-conns-per-ip", kLive, &Options::max_conns_per_ip),
            field("max-conns-per-worker", kLive, &Options::max_conns_per_worker),
            field("http-max-header-bytes", kLive, &Options::http_max_header_bytes),
            field("http-first-byte-timeout-ms", kLive, &Options::http_first_byte_timeout_ms),
            field("http-keepalive-timeout-ms", kLive, &Options::http_keepalive_timeout_ms),
            field("http-header-timeout-ms", kLive, &Options::http_header_timeout_ms),
            field("http-body-timeout-ms", kLive, &Options::http_body_timeout_ms),
            // Chat requests (every user at once).
            field("chat-rate", kLive, &Options::chat_rate),
            field("chat-burst", kLive, &Options::chat_burst),
            field("chat-rate-close-after", kLive, &Options::chat_rate_close_after),
            field("chat-max-rooms-per-user", kLive, &Options::chat_max_rooms),
            field("chat-max-names-per-ip", kLive, &Options::chat_max_names_per_ip),
            field("chat-join-history-bytes", kLive, &Options::chat_join_history_bytes),
            field("chat-presence-max-users", kLive, &Options::chat_presence_max_users),
            field("chat-typing-rate", kLive, &Options::chat_typing_rate),
            field("chat-typing-burst", kLive, &Options::chat_typing_burst),
            // Logging, the master's and the workers'.
            field("log-level", kLive, &Options::log_level),
            field("log-format", kLive, &Options::log_format),
            // TLS: a new certificate and key (new contents under the same names included) for
            // new connections; existing ones keep theirs. Turning TLS on or off, or moving
            // it to another port, changes the listeners: a restart (plan_reload).
            tls_file("tls-cert", &Options::tls_cert_file, &Options::tls_cert_pem),
            tls_file("tls-key", &Options::tls_key_file, &Options::tls_key_pem),
            field("tls-port", kRestart, &Options::tls_port),
            field("tls-handshake-timeout-ms", kLive, &Options::tls_handshake_timeout_ms),
            field("tls-max-handshakes", kLive, &Options::tls_max_handshakes),
            field("tls-max-handshakes-per-ip", kLive, &Options::tls_max_handshakes_per_ip),
        };
        return v;
    }();
    return all;
}

}  // namespace

ReloadPlan plan_reload(const Options& running, const Options& reread) {
    ReloadPlan plan{running, {}, {}};
    // TLS turned on or off: the listeners would change (a plain acceptor is not a TLS one).
    if (running.tls_cert_pem.empty() != reread.tls_cert_pem.empty()) {
        Options same_tls = reread;
        for (const char* key : {"tls-cert", "tls-key"})
            for (const auto& e : entries())
                if (std::string_view(e.key) == key) {
                    if (!e.same(running, reread))
                        plan.kept.push_back({key, e.text(running), e.text(reread)});
                    e.take(same_tls, running);
                }
        ReloadPlan rest = plan_reload(running, same_tls);
        rest.kept.insert(rest.kept.begin(), plan.kept.begin(), plan.kept.end());
        return rest;
    }
    for (const auto& e : entries()) {
        if (e.same(running, reread)) continue;
        if (e.live) {
            e.take(plan.next, reread);
            plan.changed.emplace_back(e.key);
        } else {
            plan.kept.push_back({e.key, e.text(running), e.text(reread)});
        }
    }
    return plan;
}

std::vector<ReloadKey> reload_keys() {
    std::vector<ReloadKey> keys;
    for (const auto& e : entries())
        keys.push_back({e.key, e.live});
    return keys;
}

}  // namespace steerchat::master
