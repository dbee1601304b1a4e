// Command-line options of steerchat.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "app/launch.hpp"
#include "util/log.hpp"

namespace steerchat::master {

enum class SteeringMode { bpf, kernel };

// The master's own options; the workers' (HTTP edge, WebSocket, Engine.IO, Socket.IO, chat
// limits, ipv6_prefix64 which steering uses too) are app::WorkerOptions, inherited.
struct Options : app::WorkerOptions {
    std::uint16_t port = 8080;
    unsigned workers = 0;  // 0 until parsed: then the number of online CPUs
    // The most slots `steerchat ctl workers N` may use; the ring region is sized for it.
    unsigned max_workers = 0;  // 0 until parsed: then max(workers, 4 x online CPUs), <= 128
    std::string bind = "::";
    SteeringMode steering = SteeringMode::bpf;
    std::uint32_t seed = 0;  // default: derived from /etc/machine-id (per host, stable)
    int backlog = 4096;
    bool pin_cpus = true;
    std::filesystem::path bpffs_dir = "/sys/fs/bpf/steerchat";  // pins go to <dir>/<port>
    std::filesystem::path run_dir = "/run/steerchat";           // instance locks
    unsigned respawn_delay_ms = 100;  // first respawn delay; doubles per quick crash
    unsigned max_restarts = 5;        // deaths within restart_window_s before a slot is drained
    unsigned restart_window_s = 60;
    unsigned shutdown_timeout_ms = 4000;  // SIGTERM -> SIGKILL for workers that do not exit
    // Command line only: take over the running instance (master/takeover.hpp), and whether a
    // chat state of another layout is dropped instead of refused.
    bool takeover = false;
    bool discard_state = false;
    std::size_t ring_bytes = std::size_t{4} << 20;  // shared-memory log per worker
    // Between hosts (userspace/bridge): off while redis_url is empty.
    std::string redis_url;
    unsigned host_id = 0;               // 0..255, unique per host of one chat
    unsigned host_lease_ms = 3000;      // a host silent this long is gone for the others
    std::size_t redis_buffer = 100000;  // events kept for other hosts while Redis is away
    // The chat state's tables (chat/shared_state.hpp). 0: sized for chat_memory bytes
    // (chat::sized_for), itself 0: a quarter of the host's physical memory.
    std::uint64_t chat_memory = 0;
    std::uint32_t chat_users = 0;
    std::uint32_t chat_rooms = 0;
    std::uint32_t chat_memberships = 0;  // 0: 4 per user
    std::uint32_t chat_history_len = 100;
    std::uint32_t chat_history_bytes = 64 * 1024;
    // The resolved sizes (parse_options): what the master creates the state with.
    app::ChatSizes chat_state;
    // Whether the command line or file gave any of the table sizes (a takeover refuses to run
    // a state of other sizes then).
    bool chat_sizes_given() const {
        return chat_users || chat_rooms || chat_memberships || chat_memory;
    }
    // Workers' user and group when the master runs as root (empty: steerchat if that user exists,
    // else nobody; the group: the user's). See master/privileges.hpp.
    std::string user;
    std::string group;
    bool seccomp = false;          // workers: a syscall allowlist (anything else kills the worker)
    std::filesystem::path config;  // --config FILE (empty: none); re-read on reload (SIGHUP)
    // log_level, log_format: app::WorkerOptions (the workers log too, and reload changes them)
    // TLS (app::load_tls): a warning for the log (an expired certificate), a line naming it.
    std::string tls_warning;
    std::string tls_summary;

    std::filesystem::path pin_dir() const { return bpffs_dir / std::to_string(port); }
    // TLS on a port of its own (--tls-port), beside plain HTTP on --port.
    bool tls_beside() const { return tls_port != 0; }
    std::filesystem::path tls_pin_dir() const { return bpffs_dir / std::to_string(tls_port); }
};

// The result of parsing: options to run with, or an exit (help, version, or a usage error).
struct ParseResult {
    std::optional<Options> options;
    int exit_code = 0;
    std::string message;  // for stdout on exit 0, stderr otherwise
};

// Command line (and the --config file it names, which the command line overrides).
ParseResult parse_options(int argc, const char* const argv[]);

// `steerchat balance [options] -- COMMAND [ARGS...]`: the master's listeners, steering and
// supervision for N copies of any program that takes its listening socket as fd 3 (systemd socket
// activation). docs/operations.md, "Balancing any server".
struct BalanceOptions {
    std::vector<std::string> command;  // COMMAND and its arguments, as given
    std::string program;               // COMMAND found on PATH (what is executed)
    std::uint16_t admin_port = 0;      // /metrics and /healthz of the master; 0: none
    std::string admin_bind = "127.0.0.1";
    // A child that has lived this long has started; one that exits sooner during the pool's
    // first start stops the whole balance (exit 1) instead of being respawned.
    unsigned start_grace_ms = 3000;
};

struct BalanceParseResult {
    std::optional<Options> options;  // the master's settings (the workers' ones stay defaults)
    std::optional<BalanceOptions> balance;
    int exit_code = 0;
    std::string message;  // for stdout on exit 0, stderr otherwise
};

// argv[1] is "balance". The master's settings are parsed (and checked) as parse_options does;
// the built-in workers' settings are refused, naming why.
BalanceParseResult parse_balance_options(int argc, const char* const argv[]);

// The example config file (packaging/steerchat.conf): every setting commented out with its
// description and default.
std::string example_config();

// The long names of the settings (the command line's and the config file's keys), in the order
// of --help.
std::vector<std::string> setting_keys();

// The per-host default seed: jhash of /etc/machine-id, or a fixed value without one.
std::uint32_t default_seed();

// The host's physical memory in bytes (0 if unknown).
std::uint64_t physical_memory();
// The chat state's sizes for these options (chat_memory etc. as described above).
app::ChatSizes chat_sizes(const Options& o);

// The open-files hard limit the master raises its soft limit to (workers inherit it).
std::uint64_t open_files_hard_limit();

}  // namespace steerchat::master
