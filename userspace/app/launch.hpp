// What the master knows of the worker application, and all it knows: the worker-side options
// (plain values), their check against the open-files limit, the host-wide state it creates
// before the first fork, and the call that turns a forked child into a worker. This header
// depends on ring, metrics and util only, so the master links no chat, ws, eio, Socket.IO or net
// part (docs/architecture.md, "Parts and their dependencies").
//
// Threading: the master's thread (HostState::create, release_slot); run_worker in the child.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "metrics/metrics.hpp"
#include "ring/ring.hpp"
#include "util/log.hpp"

namespace steerchat::app {

struct WorkerLaunch;
// Maps the options onto the parts (worker_context in worker_app.hpp) and runs the worker
// (run_worker(const WorkerContext&)); never returns. WorkerLaunch is below.
[[noreturn]] void run_worker(const WorkerLaunch& launch);

// The command-line options a worker's parts use (master::Options extends this with its own).
// app::worker_context (worker_app.hpp) maps them onto the parts' configurations in one place.
struct WorkerOptions {
    std::vector<std::string> allowed_origins;  // WebSocket Origin allowlist (empty: own host)
    std::size_t ws_max_message = std::size_t{1} << 20;  // larger messages: close 1009
    std::size_t ws_max_queued = std::size_t{4} << 20;   // unsent bytes per client: over, close 1008
    unsigned ws_ping_interval_ms = 30000;               // silence before the server pings
    unsigned ws_ping_timeout_ms = 20000;
    bool ws_cork = true;      // false: one send() per frame (benchmark baseline)
    bool encode_once = true;  // false: encode every delivery separately (benchmark baseline)
    // Engine.IO / Socket.IO
    std::string socketio_path = "/socket.io/";
    unsigned eio_ping_interval_ms = 25000;
    unsigned eio_ping_timeout_ms = 20000;
    std::size_t eio_max_payload = 1000000;
    bool eio3 = true;                         // Engine.IO v3 clients (socket.io-client 2.x)
    std::vector<std::string> cors_origins;    // answered with CORS headers (* for any)
    std::vector<std::string> sio_namespaces;  // served besides "/"
    unsigned sio_connect_timeout_ms = 45000;
    bool protocol_test = false;  // the public protocol test suites' server
    bool status_page = true;     // the workers' live view at /status (web/)
    // HTTP edge limits (docs/reliability.md)
    bool ipv6_prefix64 = false;            // count (and steer) native IPv6 clients by their /64
    std::size_t max_conns_per_ip = 256;    // per client address per worker; 0: no limit
    std::size_t max_conns_per_worker = 0;  // 0 until checked: then from the open-files limit
    std::size_t http_max_header_bytes = 16 * 1024;
    unsigned http_first_byte_timeout_ms = 10000;
    unsigned http_keepalive_timeout_ms = 60000;
    unsigned http_header_timeout_ms = 10000;
    unsigned http_body_timeout_ms = 30000;
    unsigned drain_timeout_ms = 2000;  // a stopping worker's in-flight requests and closes
    // Limits on Engine.IO sessions and chat requests (docs/reliability.md)
    std::size_t eio_max_sessions_per_ip = 1000;                // 0: no limit
    unsigned eio_first_poll_timeout_ms = 5000;                 // 0: no deadline
    std::size_t eio_max_queued = std::size_t{4} << 20;         // per polling session
    std::size_t eio_max_queued_total = std::size_t{64} << 20;  // per worker
    double chat_rate = 50;                                     // requests/s; 0: no limit
    unsigned chat_burst = 100;
    unsigned chat_rate_close_after = 50;   // refused in a row before the close; 0: never
    unsigned chat_max_rooms = 100;         // per user; 0: no limit
    unsigned chat_max_names_per_ip = 256;  // names one address holds host-wide; 0: no limit
    std::size_t chat_join_history_bytes = 64 * 1024;  // a join's history; 0: no limit
    unsigned chat_presence_max_users = 1000;  // presence host-wide up to this many; 0: no limit
    double chat_typing_rate = 2;              // typing events/s per user; 0: no limit
    unsigned chat_typing_burst = 5;
    // TLS (docs/operations.md, "TLS"): the files named, and their contents, read by the master
    // (load_tls) so that workers open no file. Empty: plain HTTP.
    std::string tls_cert_file;
    std::string tls_key_file;
    std::string tls_cert_pem;
    std::string tls_key_pem;
    unsigned tls_handshake_timeout_ms = 10000;
    std::size_t tls_max_handshakes = 256;        // per worker, in progress at once
    std::size_t tls_max_handshakes_per_ip = 16;  // ... from one client address
    std::uint16_t tls_port = 0;                  // 0 or --port: TLS only, on --port
    // Logging (every process: the master's own and its workers')
    log::Level log_level = log::Level::info;
    log::Format log_format = log::Format::text;

    bool operator==(const WorkerOptions&) const = default;
};

// The master's reload counters (SIGHUP), shown on every worker's /metrics.
struct ReloadCounts {
    std::uint64_t ok = 0;      // configurations re-read and handed to the workers
    std::uint64_t failed = 0;  // re-reads refused (the old configuration kept)
    bool operator==(const ReloadCounts&) const = default;
};

// A configuration update the master sends a running worker on reload (SIGHUP): the whole new
// WorkerOptions and the reload counters, as one message (JSON) on the worker's config channel
// (WorkerLaunch::config_fd, a SOCK_SEQPACKET socketpair: one send, one message).
struct ConfigUpdate {
    WorkerOptions options;
    ReloadCounts reloads;
    bool operator==(const ConfigUpdate&) const = default;
};
std::string serialize(const ConfigUpdate& update);
// nullopt if `text` is not a message serialize() made (what is wrong goes to `error`).
std::optional<ConfigUpdate> parse_config_update(std::string_view text, std::string& error);

// The descriptors a worker keeps free beside its connections (listener, ring, eventfds, ...).
std::size_t fd_headroom() noexcept;

// Checks the HTTP edge's limits against the open-files hard limit `nofile` and fills in
// max_conns_per_worker when it was not given. Empty if fine, else what is wrong and how to fix it.
std::string check_edge_limits(WorkerOptions& o, bool max_conns_per_worker_given,
                              std::uint64_t nofile);

// TLS: reads --tls-cert and --tls-key into o.tls_cert_pem/tls_key_pem and checks them (the
// certificate and key parse, the key belongs to the certificate). Nothing to do without them.
// Empty if fine, else what is wrong and how to fix it. `warning` gets a warning for the log (an
// expired certificate), `summary` a line describing the certificate.
std::string load_tls(WorkerOptions& o, std::string& warning, std::string& summary);

// The chat state's tables (chat::SharedOptions, for the master): what HostState::create makes.
struct ChatSizes {
    std::uint32_t users = 65536;
    std::uint32_t rooms = 1024;
    std::uint32_t memberships = 262144;
    std::uint32_t history_len = 100;
    std::uint32_t history_bytes = 256 * 1024;
    bool operator==(const ChatSizes&) const = default;
};
// What one entry of each table takes in the mapping (chat::shared_costs), and the whole mapping.
struct ChatCosts {
    std::size_t per_user = 0, per_room = 0, per_membership = 0, total = 0;
};
ChatCosts chat_costs(const ChatSizes& sizes);
// Sizes filling `budget` bytes (chat::sized_for) with this history per room.
ChatSizes chat_sizes_for(std::uint64_t budget, std::uint32_t history_len,
                         std::uint32_t history_bytes);
inline constexpr std::uint32_t kChatMembershipsPerUser = 4;      // chat::kMembershipsPerUser
inline constexpr std::uint32_t kChatMaxTableEntries = 1u << 28;  // chat::kMaxTableEntries

// The host-wide state of the worker application, created by the master before the first fork
// and inherited by every worker: the chat's cluster directory (a memfd mapping: names, rooms,
// history). Creating it also makes libcrypto read its configuration file (it does so on first
// use, for the WebSocket handshake's SHA-1), so no worker opens a file after its privilege drop.
class HostState {
  public:
    // `sizes`: the chat state's tables (the master's chat_sizes). Between hosts (--redis), ids
    // carry the host's number (`host_bits` low bits: `host_id`; chat/shared_state.hpp).
    // std::system_error when the mapping cannot be created, std::invalid_argument for impossible
    // sizes.
    static HostState create(const ChatSizes& sizes = {}, unsigned host_bits = 0,
                            unsigned host_id = 0);
    // A new master taking over a running one (master/takeover.hpp): maps the running master's
    // state behind `fd` (this object keeps its own duplicate) under a new owner generation, so
    // names, rooms and history carry over. Throws StateLayoutMismatch when the running binary's
    // layout differs from this one's, std::system_error when it cannot be mapped.
    static HostState adopt(int fd);
    // This binary's layout version of the state (adopt() requires the same).
    static std::uint32_t layout_version() noexcept;
    HostState(HostState&&) noexcept;
    HostState& operator=(HostState&&) noexcept;
    ~HostState();

    // The worker of `slot` is gone (its log in `ring` has no writer now): its users go offline for
    // everyone, their names become free. Returns how many; a failure to publish their offline
    // records is logged (the names are free anyway).
    std::size_t release_slot(ring::Region& ring, unsigned slot);
    // An old master after a hand-over, its workers gone: frees the names its workers still held
    // (normally none: a worker logs its users out when it stops). Returns how many.
    std::size_t release_generation();
    // The memfd behind the state, for a hand-over (close-on-exec; workers close their copy).
    int fd() const noexcept;
    // The chat state's sizes (an adopted state's are the running server's).
    ChatSizes sizes() const noexcept;
    // The host number its ids carry (0 and 0: no --redis; an adopted state's are the running
    // server's).
    unsigned host_bits() const noexcept;
    unsigned host_id() const noexcept;

  private:
    struct Parts;
    explicit HostState(std::unique_ptr<Parts> parts);
    friend void run_worker(const WorkerLaunch& launch);
    friend int run_bridge(const struct BridgeLaunch& launch);
    std::unique_ptr<Parts> parts_;
};

// HostState::adopt found state of another layout version: the new binary cannot read the
// running one's names, rooms and history.
class StateLayoutMismatch : public std::runtime_error {
  public:
    StateLayoutMismatch(std::uint32_t found, std::uint32_t expected, const std::string& what)
        : std::runtime_error(what), found(found), expected(expected) {}
    std::uint32_t found, expected;
};

// What the master hands a forked child for one slot.
struct WorkerLaunch {
    unsigned slot = 0;
    unsigned nslots = 1;
    int listen_fd = -1;            // this slot's listener (plain HTTP), owned by the worker
    int tls_listen_fd = -1;        // this slot's TLS listener, owned by the worker
    ring::Region* ring = nullptr;  // the shared-memory logs (inherited mapping)
    HostState* host = nullptr;     // the host-wide state (inherited mapping)
    const WorkerOptions* options = nullptr;
    int ready_fd = -1;  // the worker writes (slot, pid) here once it accepts (master's readiness)
    // The worker's end of its config channel (a SOCK_SEQPACKET socketpair made at spawn; the
    // master keeps the other end): ConfigUpdate messages on reload. -1: none.
    int config_fd = -1;
    ReloadCounts reloads;                // the master's counters at spawn
    metrics::Region* metrics = nullptr;  // the host's metrics (inherited mapping; block `slot`)
};

// Between hosts (userspace/bridge): empty if `url` is a usable --redis URL, else what is wrong
// with it and how to fix it.
std::string check_redis_url(const std::string& url);

// What the master hands the forked bridge process.
struct BridgeLaunch {
    unsigned slot = 0;             // the bridge's ring slot (the last one)
    ring::Region* ring = nullptr;  // the shared-memory logs (inherited mapping)
    HostState* host = nullptr;
    std::string url;
    unsigned host_id = 0;
    unsigned lease_ms = 3000;
    std::size_t buffer = 100000;
    metrics::Region* metrics = nullptr;
};
// Runs the bridge until SIGTERM; returns the process's exit status.
int run_bridge(const BridgeLaunch& launch);

}  // namespace steerchat::app
