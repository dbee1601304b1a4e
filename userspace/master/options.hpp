// Command-line options of steerchat.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "util/log.hpp"

namespace steerchat::master {

enum class SteeringMode { bpf, kernel };

struct Options {
    std::uint16_t port = 8080;
    unsigned workers = 0;  // 0 until parsed: then the number of online CPUs
    std::string bind = "::";
    SteeringMode steering = SteeringMode::bpf;
    std::uint32_t seed = 0;  // default: derived from /etc/machine-id (per host, stable)
    bool ipv6_prefix64 = false;
    int backlog = 4096;
    bool pin_cpus = true;
    std::filesystem::path bpffs_dir = "/sys/fs/bpf/steerchat";  // pins go to <dir>/<port>
    std::filesystem::path run_dir = "/run/steerchat";           // instance locks
    unsigned respawn_delay_ms = 100;  // first respawn delay; doubles per quick crash
    unsigned max_restarts = 5;        // deaths within restart_window_s before a slot is drained
    unsigned restart_window_s = 60;
    unsigned shutdown_timeout_ms = 4000;       // SIGTERM -> SIGKILL for workers that do not exit
    std::vector<std::string> allowed_origins;  // WebSocket Origin allowlist (empty: own host)
    std::size_t ring_bytes = std::size_t{4} << 20;      // shared-memory log per worker
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
    // HTTP edge limits (docs/reliability.md)
    std::size_t max_conns_per_ip = 256;    // per client address per worker; 0: no limit
    std::size_t max_conns_per_worker = 0;  // 0 until parsed: then from the open-files limit
    std::size_t http_max_header_bytes = 16 * 1024;
    unsigned http_first_byte_timeout_ms = 10000;
    unsigned http_keepalive_timeout_ms = 60000;
    unsigned http_header_timeout_ms = 10000;
    unsigned http_body_timeout_ms = 30000;
    // Workers' user and group when the master runs as root (empty: steerchat if that user exists,
    // else nobody; the group: the user's). See master/privileges.hpp.
    std::string user;
    std::string group;
    bool seccomp = false;  // workers: a syscall allowlist (anything else kills the worker)
    // Limits on Engine.IO sessions and chat requests (docs/reliability.md)
    std::size_t eio_max_sessions_per_ip = 1000;                // 0: no limit
    unsigned eio_first_poll_timeout_ms = 5000;                 // 0: no deadline
    std::size_t eio_max_queued = std::size_t{4} << 20;         // per polling session
    std::size_t eio_max_queued_total = std::size_t{64} << 20;  // per worker
    double chat_rate = 50;                                     // requests/s; 0: no limit
    unsigned chat_burst = 100;
    unsigned chat_rate_close_after = 50;  // refused in a row before the close; 0: never
    unsigned chat_max_rooms = 100;        // per user; 0: no limit
    double chat_typing_rate = 2;          // typing events/s per user; 0: no limit
    unsigned chat_typing_burst = 5;
    log::Level log_level = log::Level::info;
    log::Format log_format = log::Format::text;

    std::filesystem::path pin_dir() const { return bpffs_dir / std::to_string(port); }
};

// The result of parsing: options to run with, or an exit (help, version, or a usage error).
struct ParseResult {
    std::optional<Options> options;
    int exit_code = 0;
    std::string message;  // for stdout on exit 0, stderr otherwise
};

// Command line (and the --config file it names, which the command line overrides).
ParseResult parse_options(int argc, const char* const argv[]);

// The example config file (packaging/steerchat.conf): every setting commented out with its
// description and default.
std::string example_config();

// The per-host default seed: jhash of /etc/machine-id, or a fixed value without one.
std::uint32_t default_seed();

// The open-files hard limit the master raises its soft limit to (workers inherit it).
std::uint64_t open_files_hard_limit();

}  // namespace steerchat::master
