#include "app/launch.hpp"

#include "bridge/bridge.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/core.h>
#include <boost/json.hpp>

#include <cerrno>
#include <cstring>
#include <exception>
#include <limits>
#include <type_traits>
#include <utility>

#include "app/worker_app.hpp"
#include "chat/chat.hpp"
#include "chat/shared_state.hpp"
#include "net/limits.hpp"
#include "tls/context.hpp"
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

namespace {

// The whole file, or an error message naming the option and the file.
bool read_file(const std::string& option, const std::string& path, std::string& out,
               std::string& err) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        const int e = errno;
        err = fmt::format("{} {}: cannot open it: {}{}", option, path, std::strerror(e),
                          e == EACCES ? " (the master reads it before dropping privileges: make "
                                        "it readable by the user steerchat starts as)"
                                      : "");
        return false;
    }
    struct stat st {};
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        ::close(fd);
        err = fmt::format("{} {}: not a regular file (name the PEM file itself)", option, path);
        return false;
    }
    out.clear();
    char buf[16384];
    for (;;) {
        const ssize_t n = ::read(fd, buf, sizeof buf);
        if (n == 0) break;
        if (n < 0) {
            if (errno == EINTR) continue;
            err = fmt::format("{} {}: cannot read it: {}", option, path, std::strerror(errno));
            ::close(fd);
            return false;
        }
        out.append(buf, static_cast<std::size_t>(n));
    }
    ::close(fd);
    return true;
}

// Every field of WorkerOptions with its name, for serialize and parse_config_update (a field
// missing here would not reach a running worker on reload: launch_test's round trip sets every
// field).
template <class Options, class F>
void for_each_field(Options& o, F&& f) {
    f("allowed_origins", o.allowed_origins);
    f("ws_max_message", o.ws_max_message);
    f("ws_max_queued", o.ws_max_queued);
    f("ws_ping_interval_ms", o.ws_ping_interval_ms);
    f("ws_ping_timeout_ms", o.ws_ping_timeout_ms);
    f("ws_cork", o.ws_cork);
    f("encode_once", o.encode_once);
    f("socketio_path", o.socketio_path);
    f("eio_ping_interval_ms", o.eio_ping_interval_ms);
    f("eio_ping_timeout_ms", o.eio_ping_timeout_ms);
    f("eio_max_payload", o.eio_max_payload);
    f("eio3", o.eio3);
    f("cors_origins", o.cors_origins);
    f("sio_namespaces", o.sio_namespaces);
    f("sio_connect_timeout_ms", o.sio_connect_timeout_ms);
    f("protocol_test", o.protocol_test);
    f("status_page", o.status_page);
    f("ipv6_prefix64", o.ipv6_prefix64);
    f("max_conns_per_ip", o.max_conns_per_ip);
    f("max_conns_per_worker", o.max_conns_per_worker);
    f("http_max_header_bytes", o.http_max_header_bytes);
    f("http_first_byte_timeout_ms", o.http_first_byte_timeout_ms);
    f("http_keepalive_timeout_ms", o.http_keepalive_timeout_ms);
    f("http_header_timeout_ms", o.http_header_timeout_ms);
    f("http_body_timeout_ms", o.http_body_timeout_ms);
    f("eio_max_sessions_per_ip", o.eio_max_sessions_per_ip);
    f("eio_first_poll_timeout_ms", o.eio_first_poll_timeout_ms);
    f("eio_max_queued", o.eio_max_queued);
    f("eio_max_queued_total", o.eio_max_queued_total);
    f("chat_rate", o.chat_rate);
    f("chat_burst", o.chat_burst);
    f("chat_rate_close_after", o.chat_rate_close_after);
    f("chat_max_rooms", o.chat_max_rooms);
    f("chat_max_names_per_ip", o.chat_max_names_per_ip);
    f("chat_join_history_bytes", o.chat_join_history_bytes);
    f("chat_presence_max_users", o.chat_presence_max_users);
    f("chat_typing_rate", o.chat_typing_rate);
    f("chat_typing_burst", o.chat_typing_burst);
    f("log_level", o.log_level);
    f("log_format", o.log_format);
    f("tls_cert_file", o.tls_cert_file);
    f("tls_key_file", o.tls_key_file);
    f("tls_cert_pem", o.tls_cert_pem);
    f("tls_key_pem", o.tls_key_pem);
    f("tls_handshake_timeout_ms", o.tls_handshake_timeout_ms);
    f("tls_max_handshakes", o.tls_max_handshakes);
    f("tls_max_handshakes_per_ip", o.tls_max_handshakes_per_ip);
    f("tls_port", o.tls_port);
}

std::string_view format_name(log::Format f) {
    return f == log::Format::json ? "json" : "text";
}

boost::json::value to_json(const std::vector<std::string>& v) {
    boost::json::array a;
    for (const auto& s : v)
        a.emplace_back(s);
    return a;
}
boost::json::value to_json(const std::string& v) {
    return boost::json::string(v);
}
boost::json::value to_json(bool v) {
    return v;
}
boost::json::value to_json(double v) {
    return v;
}
boost::json::value to_json(log::Level v) {
    return boost::json::string(log::level_name(v));
}
boost::json::value to_json(log::Format v) {
    return boost::json::string(format_name(v));
}
template <class T>
std::enable_if_t<std::is_unsigned_v<T>, boost::json::value> to_json(T v) {
    return static_cast<std::uint64_t>(v);
}

// Each returns false if `v` does not hold a T.
bool from_json(const boost::json::value& v, std::vector<std::string>& out) {
    const auto* a = v.if_array();
    if (!a) return false;
    out.clear();
    for (const auto& e : *a) {
        if (!e.is_string()) return false;
        out.emplace_back(e.get_string());
    }
    return true;
}
bool from_json(const boost::json::value& v, std::string& out) {
    if (!v.is_string()) return false;
    out = v.get_string();
    return true;
}
bool from_json(const boost::json::value& v, bool& out) {
    if (!v.is_bool()) return false;
    out = v.get_bool();
    return true;
}
bool from_json(const boost::json::value& v, double& out) {
    if (!v.is_number()) return false;
    out = v.to_number<double>();
    return true;
}
bool from_json(const boost::json::value& v, log::Level& out) {
    if (!v.is_string()) return false;
    auto level = log::parse_level(v.get_string());
    if (level) out = *level;
    return level.has_value();
}
bool from_json(const boost::json::value& v, log::Format& out) {
    if (!v.is_string()) return false;
    auto format = log::parse_format(v.get_string());
    if (format) out = *format;
    return format.has_value();
}
template <class T>
std::enable_if_t<std::is_unsigned_v<T>, bool> from_json(const boost::json::value& v, T& out) {
    const auto* n = v.if_uint64();
    const auto* i = v.if_int64();
    if (!n && !(i && *i >= 0)) return false;
    const std::uint64_t x = n ? *n : static_cast<std::uint64_t>(*i);
    if (x > std::numeric_limits<T>::max()) return false;
    out = static_cast<T>(x);
    return true;
}

}  // namespace

std::string load_tls(WorkerOptions& o, std::string& warning, std::string& summary) {
    if (o.tls_cert_file.empty() && o.tls_key_file.empty()) return {};
    if (o.tls_cert_file.empty() || o.tls_key_file.empty())
        return "TLS needs both --tls-cert (the certificate chain, PEM) and --tls-key (its "
               "private key, PEM)";
    if (o.tls_handshake_timeout_ms < 100 || o.tls_handshake_timeout_ms > 600'000)
        return fmt::format("--tls-handshake-timeout-ms {} is out of range (100 to 600000)",
                           o.tls_handshake_timeout_ms);
    if (o.tls_max_handshakes == 0) return "--tls-max-handshakes must be at least 1";
    if (o.tls_max_handshakes_per_ip == 0) return "--tls-max-handshakes-per-ip must be at least 1";
    std::string err;
    if (!read_file("--tls-cert", o.tls_cert_file, o.tls_cert_pem, err) ||
        !read_file("--tls-key", o.tls_key_file, o.tls_key_pem, err))
        return err;
    try {
        tls::ServerContext ctx(tls::ServerConfig{o.tls_cert_pem, o.tls_key_pem,
                                                 "--tls-cert " + o.tls_cert_file,
                                                 "--tls-key " + o.tls_key_file});
        warning = ctx.warning();
        const auto& info = ctx.certificate();
        summary = fmt::format("TLS certificate {} ({} chain certificate(s)), valid until {}",
                              info.subject, info.chain_length, info.not_after);
    } catch (const tls::TlsError& e) {
        return e.what();
    }
    return {};
}

std::string serialize(const ConfigUpdate& update) {
    boost::json::object options;
    for_each_field(update.options,
                   [&](const char* name, const auto& field) { options[name] = to_json(field); });
    boost::json::object msg;
    msg["options"] = std::move(options);
    msg["reloads_ok"] = update.reloads.ok;
    msg["reloads_failed"] = update.reloads.failed;
    return boost::json::serialize(msg);
}

std::optional<ConfigUpdate> parse_config_update(std::string_view text, std::string& error) {
    error.clear();
    boost::system::error_code ec;
    const auto value = boost::json::parse(text, ec);
    const auto* msg = ec ? nullptr : value.if_object();
    const auto* options =
        msg && msg->contains("options") ? msg->at("options").if_object() : nullptr;
    if (!options) {
        error = "not a JSON object with \"options\"";
        return std::nullopt;
    }
    ConfigUpdate update;
    for_each_field(update.options, [&](const char* name, auto& field) {
        if (!error.empty()) return;
        const auto* v = options->if_contains(name);
        if (!v || !from_json(*v, field))
            error = fmt::format("option {} missing or malformed", name);
    });
    for (auto [name, field] : {std::pair{"reloads_ok", &update.reloads.ok},
                               std::pair{"reloads_failed", &update.reloads.failed}}) {
        const auto* v = msg->if_contains(name);
        if (error.empty() && (!v || !from_json(*v, *field)))
            error = fmt::format("{} missing or malformed", name);
    }
    if (!error.empty()) return std::nullopt;
    return update;
}

struct HostState::Parts {
    chat::SharedState chat;
};

HostState::HostState(std::unique_ptr<Parts> parts) : parts_(std::move(parts)) {}
HostState::HostState(HostState&&) noexcept = default;
HostState& HostState::operator=(HostState&&) noexcept = default;
HostState::~HostState() = default;

namespace {
chat::SharedOptions shared_options(const ChatSizes& s) {
    chat::SharedOptions o;
    o.max_users = s.users;
    o.max_rooms = s.rooms;
    o.max_memberships = s.memberships;
    o.history_len = s.history_len;
    o.history_bytes = s.history_bytes;
    return o;
}
ChatSizes chat_sizes_of(const chat::SharedOptions& o) {
    return {o.max_users, o.max_rooms, o.max_memberships, o.history_len, o.history_bytes};
}
static_assert(kChatMembershipsPerUser == chat::kMembershipsPerUser);
static_assert(kChatMaxTableEntries == chat::kMaxTableEntries);
}  // namespace

ChatCosts chat_costs(const ChatSizes& sizes) {
    const chat::SharedOptions o = shared_options(sizes);
    const chat::SharedCosts c = chat::shared_costs(o);
    return {c.per_user, c.per_room, c.per_membership, chat::shared_bytes(o)};
}

ChatSizes chat_sizes_for(std::uint64_t budget, std::uint32_t history_len,
                         std::uint32_t history_bytes) {
    chat::SharedOptions o;
    o.history_len = history_len;
    o.history_bytes = history_bytes;
    return chat_sizes_of(chat::sized_for(budget, o));
}

HostState HostState::create(const ChatSizes& sizes, unsigned host_bits, unsigned host_id) {
    // libcrypto reads its configuration file on first use (the WebSocket handshake's SHA-1): do
    // it here, so no worker opens a file after its drop (--seccomp allows no open at all).
    ws::compute_accept_key("dGhlIHNhbXBsZSBub25jZQ==");
    chat::SharedOptions o = shared_options(sizes);
    o.host_bits = host_bits;
    o.host_id = host_id;
    return HostState(std::make_unique<Parts>(Parts{chat::SharedState::create(o)}));
}

HostState HostState::adopt(int fd) {
    ws::compute_accept_key("dGhlIHNhbXBsZSBub25jZQ==");
    try {
        return HostState(std::make_unique<Parts>(Parts{chat::SharedState::adopt(fd)}));
    } catch (const chat::LayoutMismatch& e) {
        throw StateLayoutMismatch(e.found(), e.expected(), e.what());
    }
}

std::uint32_t HostState::layout_version() noexcept {
    return chat::kLayoutVersion;
}

int HostState::fd() const noexcept {
    return parts_->chat.fd();
}

ChatSizes HostState::sizes() const noexcept {
    return chat_sizes_of(parts_->chat.options());
}

unsigned HostState::host_bits() const noexcept {
    return parts_->chat.options().host_bits;
}

unsigned HostState::host_id() const noexcept {
    return parts_->chat.options().host_id;
}

std::size_t HostState::release_generation() {
    return parts_->chat.evict_generation().size();
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
    if (!opts.tls_cert_pem.empty())
        net.tls = std::make_shared<const tls::ServerContext>(tls::ServerConfig{
            opts.tls_cert_pem, opts.tls_key_pem, "--tls-cert " + opts.tls_cert_file,
            "--tls-key " + opts.tls_key_file});
    net.tls_handshake_timeout = std::chrono::milliseconds(opts.tls_handshake_timeout_ms);
    net.tls_max_handshakes = opts.tls_max_handshakes;
    net.tls_max_handshakes_per_address = opts.tls_max_handshakes_per_ip;
    net.drain_timeout = std::chrono::milliseconds(opts.drain_timeout_ms);

    // The application: chat adapters, Engine.IO / Socket.IO.
    AppOptions& app = ctx.app;
    app.encode_once = opts.encode_once;
    app.chat_limits = {.rate = opts.chat_rate,
                       .burst = opts.chat_burst,
                       .close_after = opts.chat_rate_close_after,
                       .max_rooms = opts.chat_max_rooms,
                       .typing_rate = opts.chat_typing_rate,
                       .typing_burst = opts.chat_typing_burst,
                       .max_names_per_address = opts.chat_max_names_per_ip,
                       .max_join_history_bytes = opts.chat_join_history_bytes,
                       .ipv6_prefix64 = opts.ipv6_prefix64,
                       .presence_max_users = opts.chat_presence_max_users};
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
    app.status_page = opts.status_page;
    return ctx;
}

std::string check_redis_url(const std::string& url) {
    try {
        bridge::parse_url(url);
    } catch (const std::invalid_argument& e) {
        return e.what();
    }
    return {};
}

int run_bridge(const BridgeLaunch& launch) {
    bridge::Config cfg;
    cfg.url = launch.url;
    cfg.host_id = launch.host_id;
    cfg.lease_ms = launch.lease_ms;
    cfg.buffer = launch.buffer;
    return bridge::run(cfg, *launch.ring, launch.slot, launch.host->parts_->chat, launch.metrics);
}

void run_worker(const WorkerLaunch& launch) {
    WorkerContext ctx = worker_context(*launch.options, launch.nslots);
    ctx.slot = launch.slot;
    ctx.listen_fd = launch.listen_fd;
    ctx.tls_listen_fd = launch.tls_listen_fd;
    ctx.ring = launch.ring;
    ctx.chat = &launch.host->parts_->chat;
    ctx.ready_fd = launch.ready_fd;
    ctx.config_fd = launch.config_fd;
    ctx.options = *launch.options;
    ctx.reloads = launch.reloads;
    ctx.metrics = launch.metrics;
    run_worker(ctx);
}

}  // namespace steerchat::app
