#include "options.hpp"

#include <arpa/inet.h>
#include <grp.h>
#include <pwd.h>
#include <sched.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include <fmt/core.h>
#include <boost/program_options.hpp>

#include "master/version.hpp"
#include "steer.h"
#include "steer/jhash.hpp"

namespace po = boost::program_options;

namespace steerchat::master {

namespace {

unsigned online_cpus() {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) return static_cast<unsigned>(CPU_COUNT(&set));
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? static_cast<unsigned>(n) : 1;
}

std::string usage_text(const po::options_description& generic,
                       const po::options_description& settings) {
    std::ostringstream os;
    os << "Usage: steerchat [options]\n\n"
          "A realtime chat server that runs one worker per CPU on one port; an eBPF sk_reuseport\n"
          "program keeps every client IP on the same worker.\n\n"
       << generic << "\n"
       << settings
       << "\nEvery setting can also be given in the file named by --config, one 'key = value' per\n"
          "line with the long option name as key (e.g. 'port = 8080', 'seccomp = true'); a\n"
          "setting on the command line overrides the file's. See steerchat.conf in the\n"
          "installed configuration directory for all of them with their defaults.\n";
    return os.str();
}

std::string version_text() {
    return fmt::format("steerchat {}\ngit revision {}", kVersion, kGitRevision);
}

// Values parsed into Options after checks.
struct Raw {
    std::string steering = "bpf";
    std::string seed;
    unsigned port = 8080;
    unsigned tls_port = 0;
    unsigned workers = 0;
    unsigned max_workers = 0;
    bool no_cpu_pinning = false;
    bool ws_no_cork = false;
    bool no_encode_once = false;
    bool no_eio3 = false;
    bool protocol_test = false;
    std::string log_level = "info";
    std::string log_format = "text";
    std::filesystem::path config;
    bool takeover = false;
    bool discard_state = false;
};

// The options only the command line takes.
po::options_description generic_options(Raw& r) {
    po::options_description desc("Command line only");
    // clang-format off
    desc.add_options()
        ("help,h", "show this help and exit")
        ("version,V", "show the version and the git revision it was built from, and exit")
        ("config,c", po::value(&r.config),
         "read settings from this file (key = value per line, as the long options below); the "
         "command line overrides it")
        ("takeover", po::bool_switch(&r.takeover),
         "take over the steerchat running on this port (an upgrade without dropping a "
         "connection): its listening sockets, steering maps and chat state; its workers drain "
         "and it exits (`steerchat ctl upgrade` starts the binary this way)")
        ("discard-state", po::bool_switch(&r.discard_state),
         "with --takeover: if the running server's chat state has another layout version (or "
         "other sizes than --chat-max-* / --chat-history-* given here), start with an empty one "
         "(every name, room and history is lost) instead of refusing");
    // clang-format on
    return desc;
}

}  // namespace

std::uint64_t physical_memory() {
    const long pages = ::sysconf(_SC_PHYS_PAGES);
    const long page = ::sysconf(_SC_PAGESIZE);
    if (pages <= 0 || page <= 0) return 0;
    return static_cast<std::uint64_t>(pages) * static_cast<std::uint64_t>(page);
}

app::ChatSizes chat_sizes(const Options& o) {
    std::uint64_t budget = o.chat_memory;
    if (budget == 0) budget = physical_memory() / 4;
    if (budget == 0) budget = std::uint64_t{1} << 30;  // memory unknown: 1 GiB
    app::ChatSizes s = app::chat_sizes_for(budget, o.chat_history_len, o.chat_history_bytes);
    if (o.chat_users) s.users = o.chat_users;
    if (o.chat_rooms) s.rooms = o.chat_rooms;
    if (o.chat_memberships)
        s.memberships = o.chat_memberships;
    else if (o.chat_users)
        s.memberships = static_cast<std::uint32_t>(std::min<std::uint64_t>(
            std::uint64_t{s.users} * app::kChatMembershipsPerUser, app::kChatMaxTableEntries));
    return s;
}

std::uint32_t default_seed() {
    std::ifstream in("/etc/machine-id");
    std::string id;
    if (!(in >> id) || id.empty()) return 0x5eedc4a7;
    std::vector<std::uint32_t> words((id.size() + 3) / 4, 0);
    for (std::size_t i = 0; i < id.size(); ++i)
        words[i / 4] |= static_cast<std::uint32_t>(static_cast<unsigned char>(id[i]))
                        << (8 * (i % 4));
    return steer::jhash2(words, 0x5eedc4a7);
}

std::uint64_t open_files_hard_limit() {
    rlimit nofile{};
    if (::getrlimit(RLIMIT_NOFILE, &nofile) != 0) return 1024;
    // Linux caps it at fs.nr_open; "unlimited" is not possible, but be safe.
    return nofile.rlim_max == RLIM_INFINITY ? std::uint64_t{1} << 20 : nofile.rlim_max;
}

namespace {

// The settings: the command line's and the config file's keys.
po::options_description setting_options(Options& o, Raw& r) {
    std::string& steering = r.steering;
    std::string& seed = r.seed;
    unsigned& port = r.port;
    unsigned& workers = r.workers;
    po::options_description desc("Settings (command line or --config file)");
    // clang-format off
    desc.add_options()
        ("port,p", po::value(&port)->default_value(port), "TCP port to listen on")
        ("workers,w", po::value(&workers),
         "worker processes, one per slot (default: the number of online CPUs)")
        ("max-workers", po::value(&r.max_workers),
         "most workers `steerchat ctl workers N` may grow the pool to; the shared-memory logs "
         "and tables are sized for it at start (default: 4 x online CPUs, at least --workers, "
         "at most 128)")
        ("bind,b", po::value(&o.bind)->default_value(o.bind),
         "address to listen on; :: is dual stack (IPv6 and IPv4)")
        ("tls-cert", po::value(&o.tls_cert_file),
         "serve TLS (https:// and wss://) with this certificate chain: a PEM file, the "
         "server's certificate first, then its intermediates; needs --tls-key. On --port "
         "(which then speaks TLS only) unless --tls-port names another port")
        ("tls-port", po::value(&r.tls_port),
         "serve TLS on this port and plain HTTP on --port, side by side, each port steered "
         "alike (a client address reaches the same worker on both); default: TLS on --port")
        ("tls-key", po::value(&o.tls_key_file),
         "the private key of --tls-cert (PEM, unencrypted; may be readable by root only)")
        ("tls-handshake-timeout-ms",
         po::value(&o.tls_handshake_timeout_ms)->default_value(o.tls_handshake_timeout_ms),
         "time from accepting a TLS connection to the end of its handshake; then it is closed")
        ("tls-max-handshakes",
         po::value(&o.tls_max_handshakes)->default_value(o.tls_max_handshakes),
         "TLS handshakes one worker runs at once; more connections are closed at once, so a "
         "flood of handshakes cannot starve established connections")
        ("tls-max-handshakes-per-ip",
         po::value(&o.tls_max_handshakes_per_ip)->default_value(o.tls_max_handshakes_per_ip),
         "TLS handshakes one client address (IPv4, or an IPv6 /64 with --ipv6-prefix64) runs "
         "at once on its worker; more of its connections are closed at once, so one address's "
         "flood leaves the other addresses their handshakes")
        ("steering,s", po::value(&steering)->default_value(steering),
         "bpf: the kernel keeps each client IP on one worker (needs CAP_BPF); "
         "kernel: plain SO_REUSEPORT, balanced but not sticky")
        ("seed", po::value(&seed),
         "32-bit jhash seed for client addresses (default: derived from /etc/machine-id, so "
         "hosts behind one L4 balancer choose workers independently; give each host its own "
         "seed, docs/scaling.md)")
        ("ipv6-prefix64", po::bool_switch(&o.ipv6_prefix64),
         "steer IPv6 clients by their /64 prefix instead of the whole address")
        ("backlog", po::value(&o.backlog)->default_value(o.backlog),
         "listen() backlog per worker (capped by net.core.somaxconn; see scripts/tune)")
        ("no-cpu-pinning", po::bool_switch(&r.no_cpu_pinning), "do not pin worker i to CPU i")
        ("bpffs-dir", po::value(&o.bpffs_dir)->default_value(o.bpffs_dir),
         "directory on a BPF filesystem; maps are pinned under <dir>/<port>")
        ("run-dir", po::value(&o.run_dir)->default_value(o.run_dir),
         "directory for the per-port instance lock and control socket (steerchat ctl)")
        ("respawn-delay-ms", po::value(&o.respawn_delay_ms)->default_value(o.respawn_delay_ms),
         "delay before a dead worker is respawned; doubles for each quick crash, up to 5 s")
        ("max-restarts", po::value(&o.max_restarts)->default_value(o.max_restarts),
         "deaths of one slot within --restart-window before the slot is drained")
        ("restart-window", po::value(&o.restart_window_s)->default_value(o.restart_window_s),
         "seconds over which --max-restarts counts")
        ("shutdown-timeout-ms",
         po::value(&o.shutdown_timeout_ms)->default_value(o.shutdown_timeout_ms),
         "on SIGTERM, how long workers may take before they are killed")
        ("drain-timeout-ms", po::value(&o.drain_timeout_ms)->default_value(o.drain_timeout_ms),
         "a stopping worker (SIGTERM, or an upgrade handing over to a new binary) stops "
         "accepting, finishes in-flight requests, ends long polls and closes WebSockets with "
         "1001; what is still open after this long is cut (below --shutdown-timeout-ms; by "
         "default half of it when that is 2000 or less)")
        ("ring-size", po::value(&o.ring_bytes)->default_value(o.ring_bytes),
         "bytes of each worker's shared-memory broadcast log (rounded up to a power of two); a "
         "reader more than this far behind is cut loose and told so")
        ("redis", po::value(&o.redis_url),
         "one chat across hosts through this Redis (redis://[:password@]host[:port][/db] or "
         "unix:///path; rediss:// is not available with Debian 12's hiredis): a bridge process "
         "per host, one Redis connection; off by default (docs/scaling.md)")
        ("host-id", po::value(&o.host_id)->default_value(o.host_id),
         "with --redis: this host's number, 0 to 255, different on every host of one chat")
        ("host-lease", po::value(&o.host_lease_ms)->default_value(o.host_lease_ms),
         "with --redis: milliseconds after which a host that stopped renewing its lease (dead, "
         "or cut off from Redis) is gone for the others: its users offline, names free")
        ("redis-buffer", po::value(&o.redis_buffer)->default_value(o.redis_buffer),
         "with --redis: events for other hosts kept while Redis is unreachable, sent in order "
         "once it is back; past it, newer ones are dropped, counted and logged")
        ("chat-memory", po::value(&o.chat_memory)->default_value(o.chat_memory),
         "bytes of shared memory the chat state's tables are sized for when --chat-max-users, "
         "--chat-max-rooms, --chat-max-memberships are 0 (10 users, 40 memberships per room; "
         "0: a quarter of the host's physical memory); pages are used only as entries are")
        ("chat-max-users", po::value(&o.chat_users)->default_value(o.chat_users),
         "names registered at once on the host (0: from --chat-memory); more logins are "
         "answered server_full")
        ("chat-max-rooms", po::value(&o.chat_rooms)->default_value(o.chat_rooms),
         "rooms at once on the host, each with its history (0: from --chat-memory); when full, "
         "the least recently used empty room is reused, else a join of a new room is "
         "server_full")
        ("chat-max-memberships",
         po::value(&o.chat_memberships)->default_value(o.chat_memberships),
         "(user, room) pairs at once on the host (0: 4 per user)")
        ("chat-history-len", po::value(&o.chat_history_len)->default_value(o.chat_history_len),
         "messages kept per room (what a join returns as history)")
        ("chat-history-bytes",
         po::value(&o.chat_history_bytes)->default_value(o.chat_history_bytes),
         "bytes of message text kept per room (oldest dropped first; at least 4096); the "
         "mapping holds this much per room of --chat-max-rooms")
        ("ws-max-message", po::value(&o.ws_max_message)->default_value(o.ws_max_message),
         "largest WebSocket message a client may send, in bytes (larger: close 1009)")
        ("ws-max-queued", po::value(&o.ws_max_queued)->default_value(o.ws_max_queued),
         "bytes queued to one slow client before it is closed (1008); others never wait")
        ("ws-ping-interval-ms",
         po::value(&o.ws_ping_interval_ms)->default_value(o.ws_ping_interval_ms),
         "silence on a WebSocket before the server pings it")
        ("ws-ping-timeout-ms",
         po::value(&o.ws_ping_timeout_ms)->default_value(o.ws_ping_timeout_ms),
         "silence after that ping before the connection is dropped")
        ("ws-no-cork", po::bool_switch(&r.ws_no_cork), "benchmark baseline: write every WebSocket frame with its own send() "
         "instead of one gather write per connection per loop turn")
        ("no-encode-once", po::bool_switch(&r.no_encode_once), "benchmark baseline: encode a chat event separately for every "
         "recipient instead of once per worker")
        ("allow-origin", po::value(&o.allowed_origins)->composing(),
         "WebSocket Origin allowed to connect (repeatable; * for any; default: the server's own "
         "host, and clients that send no Origin)")
        ("socketio-path", po::value(&o.socketio_path)->default_value(o.socketio_path),
         "path of Engine.IO / Socket.IO requests")
        ("eio-ping-interval-ms",
         po::value(&o.eio_ping_interval_ms)->default_value(o.eio_ping_interval_ms),
         "Engine.IO heartbeat interval (the server pings; v3 clients ping)")
        ("eio-ping-timeout-ms",
         po::value(&o.eio_ping_timeout_ms)->default_value(o.eio_ping_timeout_ms),
         "Engine.IO: time for the pong before the session is closed")
        ("eio-max-payload", po::value(&o.eio_max_payload)->default_value(o.eio_max_payload),
         "largest Engine.IO POST body or WebSocket message, in bytes")
        ("no-eio3", po::bool_switch(&r.no_eio3), "refuse Engine.IO v3 clients (socket.io-client 2.x): error 5")
        ("cors-origin", po::value(&o.cors_origins)->composing(),
         "origin whose pages may use Socket.IO cross-origin (repeatable; * for any): CORS "
         "headers on polling, WebSocket upgrades allowed")
        ("sio-namespace", po::value(&o.sio_namespaces)->composing(),
         "Socket.IO namespace served besides / (repeatable, e.g. /admin); each serves the chat")
        ("sio-connect-timeout-ms",
         po::value(&o.sio_connect_timeout_ms),
         "time from the Engine.IO handshake to the first Socket.IO CONNECT (default 45000; "
         "1000 with --protocol-test)")
        ("max-conns-per-ip", po::value(&o.max_conns_per_ip)->default_value(o.max_conns_per_ip),
         "connections one client address may hold on its worker (HTTP, WebSocket, held long "
         "polls); more are answered 429 and closed at once (0: no limit)")
        ("max-conns-per-worker", po::value(&o.max_conns_per_worker),
         "connections one worker holds at most; more are answered 503 and closed at once "
         "(default: the open-files limit minus 5 %, at least 64 kept free)")
        ("http-max-header-bytes",
         po::value(&o.http_max_header_bytes)->default_value(o.http_max_header_bytes),
         "largest request line and headers of an HTTP request (larger: 431)")
        ("http-first-byte-timeout-ms",
         po::value(&o.http_first_byte_timeout_ms)->default_value(o.http_first_byte_timeout_ms),
         "time from connecting to the first byte of a request; then the connection is closed")
        ("http-keepalive-timeout-ms",
         po::value(&o.http_keepalive_timeout_ms)->default_value(o.http_keepalive_timeout_ms),
         "time a kept-alive HTTP connection may wait for its next request; then it is closed")
        ("http-header-timeout-ms",
         po::value(&o.http_header_timeout_ms)->default_value(o.http_header_timeout_ms),
         "time from a request's first byte to the end of its header, not renewed by each byte "
         "(slowloris); then 408 and close")
        ("http-body-timeout-ms",
         po::value(&o.http_body_timeout_ms)->default_value(o.http_body_timeout_ms),
         "time from the end of a request's header to the end of its body; then 408 and close")
        ("protocol-test", po::bool_switch(&r.protocol_test), "serve what the public Engine.IO / Socket.IO protocol test suites "
         "expect (echo at /engine.io/, test events at /socket.io/) instead of the chat; run "
         "them with --port 3000 --eio-ping-interval-ms 300 --eio-ping-timeout-ms 200")
        ("status-page", po::value(&o.status_page)->default_value(o.status_page, "on"),
         "on|off: the read-only live view of the workers at /status (and /status.json); the chat "
         "page at / is always served")
        ("user", po::value(&o.user),
         "user the workers run as when the master is root (default: steerchat if that user "
         "exists, else nobody); never root")
        ("group", po::value(&o.group),
         "group the workers run as (default: the user's group, with its supplementary groups)")
        ("seccomp", po::bool_switch(&o.seccomp),
         "confine workers to the system calls serving needs (a seccomp allowlist); any other "
         "call kills the worker (logged as signal 31, Bad system call), which is respawned")
        // Limits on Engine.IO sessions and chat requests (docs/reliability.md).
        ("eio-max-sessions-per-ip",
         po::value(&o.eio_max_sessions_per_ip)->default_value(o.eio_max_sessions_per_ip),
         "Engine.IO sessions from one client address (IPv4, or an IPv6 /64) per worker; more "
         "handshakes are answered 429 (0: no limit)")
        ("eio-first-poll-timeout-ms",
         po::value(&o.eio_first_poll_timeout_ms)->default_value(o.eio_first_poll_timeout_ms),
         "time from an Engine.IO polling handshake to the client's first poll or upgrade "
         "request; then the session is closed (0: only the heartbeat ends it)")
        ("eio-max-queued", po::value(&o.eio_max_queued)->default_value(o.eio_max_queued),
         "bytes queued to one Engine.IO polling client between its polls before the session is "
         "closed (as --ws-max-queued for a WebSocket)")
        ("eio-max-queued-total",
         po::value(&o.eio_max_queued_total)->default_value(o.eio_max_queued_total),
         "bytes queued to all Engine.IO polling clients of a worker; over it, the sessions that "
         "have waited longest for a poll are closed")
        ("chat-rate", po::value(&o.chat_rate)->default_value(o.chat_rate),
         "chat requests per second per connection and per user (token bucket; 0: no limit); "
         "more are answered rate_limited")
        ("chat-burst", po::value(&o.chat_burst)->default_value(o.chat_burst),
         "chat requests a connection or user may send at once (the bucket's size)")
        ("chat-rate-close-after",
         po::value(&o.chat_rate_close_after)->default_value(o.chat_rate_close_after),
         "rate_limited answers in a row before the connection is closed (native: 1008; "
         "Socket.IO: server disconnect; 0: never)")
        ("chat-max-rooms-per-user", po::value(&o.chat_max_rooms)->default_value(o.chat_max_rooms),
         "rooms one user may be in; more joins are answered too_many_rooms (0: no limit)")
        ("chat-max-names-per-ip",
         po::value(&o.chat_max_names_per_ip)->default_value(o.chat_max_names_per_ip),
         "names one client address (IPv4, or IPv6 as --ipv6-prefix64 says) may hold at once on "
         "the host; more logins are answered too_many_names (0: no limit)")
        ("chat-join-history-bytes",
         po::value(&o.chat_join_history_bytes)->default_value(o.chat_join_history_bytes),
         "bytes of history one join returns at most (JSON-escaped texts and names): the newest "
         "messages that fit (0: no limit)")
        ("chat-presence-max-users",
         po::value(&o.chat_presence_max_users)->default_value(o.chat_presence_max_users),
         "online users up to which presence is host-wide (every login announced to every user, "
         "every welcome lists everyone); past it a login is announced only to those who share a "
         "room with it, its welcome lists this many names and the count, and `who` pages list "
         "everyone, this many at a time (0: no limit)")
        ("chat-typing-rate", po::value(&o.chat_typing_rate)->default_value(o.chat_typing_rate),
         "typing events per second per user (token bucket; 0: no limit); more are dropped "
         "silently (typing is a hint)")
        ("chat-typing-burst", po::value(&o.chat_typing_burst)->default_value(o.chat_typing_burst),
         "typing events a user may send at once (the bucket's size)")
        ("log-level", po::value(&r.log_level)->default_value(r.log_level),
         "error, warn, info or debug: the most detailed messages logged (debug adds "
         "per-connection errors)")
        ("log-format", po::value(&r.log_format)->default_value(r.log_format),
         "text (time, level, slot, pid, message; no time under journald) or json (one object "
         "per line: time, level, slot, pid, msg)");
    // clang-format on
    return desc;
}

// The line of `file` that sets `key` (0 if none does).
unsigned line_of(const std::filesystem::path& file, const std::string& key) {
    std::ifstream in(file);
    std::string text;
    for (unsigned n = 1; std::getline(in, text); ++n) {
        auto b = text.find_first_not_of(" \t");
        if (b == std::string::npos || text.compare(b, key.size(), key) != 0) continue;
        auto e = text.find_first_not_of(" \t", b + key.size());
        if (e != std::string::npos && text[e] == '=') return n;
    }
    return 0;
}

std::string strip_dashes(std::string name) {
    name.erase(0, name.find_first_not_of('-'));
    return name;
}

}  // namespace

std::vector<std::string> setting_keys() {
    Options o;
    Raw r;
    std::vector<std::string> keys;
    const auto desc = setting_options(o, r);
    for (const auto& opt : desc.options())
        keys.push_back(opt->long_name());
    return keys;
}

std::string example_config() {
    Options o;
    Raw r;
    auto desc = setting_options(o, r);
    std::string out =
        "# steerchat settings: the same keys as the command line's long options (without the\n"
        "# leading --), one \"key = value\" per line; a setting given on the command line\n"
        "# overrides the one here. Every setting is shown commented out with its default;\n"
        "# switches take true or false; a repeatable setting takes one line per value. An\n"
        "# unknown key or a bad value stops steerchat with exit status 2, naming this file and\n"
        "# the line. Reload (systemctl reload steerchat, or SIGHUP) re-reads this file: limits,\n"
        "# timeouts, origins and logging change at once; port, workers and the other settings\n"
        "# a running server cannot change are named in the log and need a restart; a file that\n"
        "# does not parse is logged (file:line) and the running configuration kept.\n"
        "# (Generated from steerchat's options; tests/unit/master checks that it is current.)\n";
    for (const auto& opt : desc.options()) {
        out += "\n";
        // The description, wrapped at 98 columns.
        std::istringstream words(opt->description());
        std::string line = "#", word;
        while (words >> word) {
            if (line.size() + 1 + word.size() > 98) {
                out += line;
                out += '\n';
                line.assign(1, '#');  // not = "#": GCC 12 -O3 warns falsely (-Wrestrict) in a unity build
            }
            line += ' ';
            line += word;
        }
        out += line;
        out += '\n';
        const auto& sem = *opt->semantic();
        std::string value;
        if (sem.max_tokens() == 0) {
            value = "false";
        } else {
            // Boost shows a default as "arg (=VALUE)"; paths come quoted.
            std::string param = opt->format_parameter();
            auto at = param.find("(=");
            if (at != std::string::npos && param.back() == ')')
                value = param.substr(at + 2, param.size() - at - 3);
            if (value.size() >= 2 && value.front() == '"' && value.back() == '"')
                value = value.substr(1, value.size() - 2);
        }
        if (sem.is_composing()) out += "# (repeatable)\n";
        out += "#" + opt->long_name() + " =" + (value.empty() ? "" : " " + value) + "\n";
    }
    return out;
}

ParseResult parse_options(int argc, const char* const argv[]) {
    Options o;
    Raw r;
    std::string& steering = r.steering;
    std::string& seed = r.seed;
    unsigned& port = r.port;
    unsigned& workers = r.workers;
    po::options_description generic = generic_options(r);
    po::options_description settings = setting_options(o, r);
    po::options_description desc;
    desc.add(generic).add(settings);
    // Keys the config file set, with their lines (for errors about them).
    std::map<std::string, unsigned> file_keys;

    po::variables_map vm;
    try {
        auto parsed = po::command_line_parser(argc, argv).options(desc).run();
        // Words that are not options (or values of options) come back without a name; Boost
        // would drop them silently, so "steerchat balance --port 80" would start the server.
        for (const auto& opt : parsed.options)
            if (opt.string_key.empty() || opt.position_key >= 0) {
                std::string word =
                    opt.original_tokens.empty() ? std::string{} : opt.original_tokens.front();
                return {std::nullopt, 2,
                        fmt::format("steerchat: unexpected argument '{}': steerchat takes only "
                                    "options\nTry 'steerchat --help' for the options.",
                                    word)};
            }
        po::store(parsed, vm);
        if (vm.count("help")) return {std::nullopt, 0, usage_text(generic, settings)};
        if (vm.count("version")) return {std::nullopt, 0, version_text()};
        if (vm.count("config")) {
            // Only the settings: --config, --help and --version are not keys of the file.
            const auto file = vm["config"].as<std::filesystem::path>();
            std::ifstream in(file);
            if (!in)
                return {std::nullopt, 2,
                        fmt::format("steerchat: cannot read the config file {}: {}", file.string(),
                                    std::strerror(errno))};
            auto where = [&](const std::string& key) {
                unsigned n = line_of(file, key);
                return n ? fmt::format("{}:{}", file.string(), n) : file.string();
            };
            try {
                auto from_file = po::parse_config_file(in, settings, false);
                // The command line wins, also over a repeatable key of the file.
                std::set<std::string> given;
                for (const auto& opt : parsed.options)
                    given.insert(opt.string_key);
                std::erase_if(from_file.options,
                              [&](const po::option& opt) { return given.count(opt.string_key); });
                for (const auto& opt : from_file.options)
                    file_keys.emplace(opt.string_key, line_of(file, opt.string_key));
                po::store(from_file, vm);
            } catch (const po::error_with_option_name& e) {
                const std::string key = strip_dashes(e.get_option_name());
                return {std::nullopt, 2,
                        fmt::format("steerchat: {}: {}\nThe file's keys are the long options of "
                                    "'steerchat --help' (key = value).",
                                    where(key), e.what())};
            } catch (const po::error& e) {
                return {std::nullopt, 2, fmt::format("steerchat: {}: {}", file.string(), e.what())};
            }
        }
        po::notify(vm);
    } catch (const po::error& e) {
        return {std::nullopt, 2,
                fmt::format("steerchat: {}\nTry 'steerchat --help' for the options.", e.what())};
    }

    auto bad = [&](std::string what) {
        // A message about "--key ..." whose value came from the config file names its line.
        if (what.starts_with("--")) {
            auto key = what.substr(2, what.find_first_of(" ,") - 2);
            if (auto it = file_keys.find(key); it != file_keys.end())
                what = fmt::format("{}:{}: {}", r.config.string(), it->second, what);
        }
        return ParseResult{
            std::nullopt, 2,
            fmt::format("steerchat: {}\nTry 'steerchat --help' for the options.", what)};
    };
    if (port == 0 || port > 65535)
        return bad(fmt::format("--port {} is not a TCP port (1-65535)", port));
    o.port = static_cast<std::uint16_t>(port);
    if (r.tls_port > 65535)
        return bad(fmt::format("--tls-port {} is not a port (1 to 65535)", r.tls_port));
    if (r.tls_port != 0 && o.tls_cert_file.empty())
        return bad("--tls-port needs --tls-cert and --tls-key (the certificate to serve there)");
    o.tls_port = r.tls_port == port ? 0 : static_cast<std::uint16_t>(r.tls_port);

    if (vm.count("workers")) {
        if (workers == 0 || workers > STEER_MAX_SLOTS)
            return bad(
                fmt::format("--workers {} is out of range (1-{})", workers, STEER_MAX_SLOTS));
        o.workers = workers;
    } else {
        o.workers = std::min(online_cpus(), STEER_MAX_SLOTS);
    }
    if (vm.count("max-workers")) {
        if (r.max_workers < o.workers || r.max_workers > STEER_MAX_SLOTS)
            return bad(fmt::format("--max-workers {} is out of range (--workers {} to {})",
                                   r.max_workers, o.workers, STEER_MAX_SLOTS));
        o.max_workers = r.max_workers;
    } else {
        o.max_workers = std::clamp(4 * online_cpus(), o.workers, STEER_MAX_SLOTS);
    }

    if (steering == "bpf") {
        o.steering = SteeringMode::bpf;
    } else if (steering == "kernel") {
        o.steering = SteeringMode::kernel;
    } else {
        return bad(fmt::format("--steering '{}' is unknown; use bpf or kernel", steering));
    }

    if (vm.count("seed")) {
        try {
            std::size_t used = 0;
            unsigned long v = std::stoul(seed, &used, 0);
            if (used != seed.size() || v > 0xffffffffUL) throw std::out_of_range("seed");
            o.seed = static_cast<std::uint32_t>(v);
        } catch (const std::exception&) {
            return bad(fmt::format("--seed '{}' is not a 32-bit number (decimal or 0x hex)", seed));
        }
    } else {
        o.seed = default_seed();
    }

    in6_addr a6{};
    in_addr a4{};
    if (inet_pton(AF_INET6, o.bind.c_str(), &a6) != 1 &&
        inet_pton(AF_INET, o.bind.c_str(), &a4) != 1)
        return bad(
            fmt::format("--bind '{}' is not an IPv4 or IPv6 address (e.g. :: or 0.0.0.0)", o.bind));
    if (o.backlog <= 0) return bad(fmt::format("--backlog {} must be positive", o.backlog));
    if (o.max_restarts == 0) return bad("--max-restarts must be at least 1");
    if (o.ring_bytes < (std::size_t{64} << 10) || o.ring_bytes > (std::size_t{1} << 30))
        return bad(
            fmt::format("--ring-size {} is out of range (65536 to 1073741824)", o.ring_bytes));
    if (!o.redis_url.empty()) {
        if (std::string why = app::check_redis_url(o.redis_url); !why.empty()) return bad(why);
    }
    if (o.host_id > 255)
        return bad(fmt::format("--host-id {} is out of range (0 to 255)", o.host_id));
    if (o.host_lease_ms < 500 || o.host_lease_ms > 600000)
        return bad(
            fmt::format("--host-lease {} is out of range (500 to 600000 ms)", o.host_lease_ms));
    if (o.redis_buffer == 0 || o.redis_buffer > 100000000)
        return bad(
            fmt::format("--redis-buffer {} is out of range (1 to 100000000)", o.redis_buffer));
    if (o.chat_history_len == 0 || o.chat_history_len > 100000)
        return bad(
            fmt::format("--chat-history-len {} is out of range (1 to 100000)", o.chat_history_len));
    if (o.chat_history_bytes < 4096 || o.chat_history_bytes > (1u << 30))
        return bad(fmt::format(
            "--chat-history-bytes {} is out of range (4096, the longest message, to 1073741824)",
            o.chat_history_bytes));
    for (auto [key, v] :
         {std::pair{"chat-max-users", o.chat_users}, std::pair{"chat-max-rooms", o.chat_rooms},
          std::pair{"chat-max-memberships", o.chat_memberships}})
        if (v > app::kChatMaxTableEntries)
            return bad(fmt::format("--{} {} is out of range (0 to {})", key, v,
                                   app::kChatMaxTableEntries));
    o.chat_state = chat_sizes(o);
    if (const std::uint64_t mem = physical_memory();
        mem != 0 && app::chat_costs(o.chat_state).total > mem)
        return bad(fmt::format(
            "the chat state would take {} MiB ({} users, {} rooms, {} memberships, {} history "
            "bytes per room), more than this host's {} MiB of memory: lower --chat-max-users, "
            "--chat-max-rooms, --chat-max-memberships, --chat-history-bytes or --chat-memory",
            app::chat_costs(o.chat_state).total >> 20, o.chat_state.users, o.chat_state.rooms,
            o.chat_state.memberships, o.chat_state.history_bytes, mem >> 20));
    if (o.ws_max_message < 125 || o.ws_max_message > (std::size_t{1} << 30))
        return bad(fmt::format("--ws-max-message {} is out of range (125 to 1073741824)",
                               o.ws_max_message));
    if (o.ws_max_queued < o.ws_max_message / 4)
        return bad("--ws-max-queued must be at least a quarter of --ws-max-message");
    if (o.ws_ping_interval_ms == 0 || o.ws_ping_timeout_ms == 0)
        return bad("--ws-ping-interval-ms and --ws-ping-timeout-ms must be positive");
    // The default drain fits a short --shutdown-timeout-ms by itself; a drain given explicitly
    // must fit.
    if (vm["drain-timeout-ms"].defaulted() && o.drain_timeout_ms >= o.shutdown_timeout_ms)
        o.drain_timeout_ms = std::max(100u, o.shutdown_timeout_ms / 2);
    if (o.drain_timeout_ms < 100 || o.drain_timeout_ms >= o.shutdown_timeout_ms)
        return bad(fmt::format(
            "--drain-timeout-ms {} is out of range (100 to --shutdown-timeout-ms {} - 1: the "
            "master kills a worker that has not drained by then)",
            o.drain_timeout_ms, o.shutdown_timeout_ms));
    if (r.discard_state && !r.takeover) return bad("--discard-state goes with --takeover");
    o.takeover = r.takeover;
    o.discard_state = r.discard_state;
    o.config = r.config;
    o.pin_cpus = !r.no_cpu_pinning;
    o.ws_cork = !r.ws_no_cork;
    o.encode_once = !r.no_encode_once;
    o.eio3 = !r.no_eio3;
    o.protocol_test = r.protocol_test;
    if (auto level = log::parse_level(r.log_level))
        o.log_level = *level;
    else
        return bad(
            fmt::format("--log-level '{}' is not one of error, warn, info, debug", r.log_level));
    if (auto format = log::parse_format(r.log_format))
        o.log_format = *format;
    else
        return bad(fmt::format("--log-format '{}' is not text or json", r.log_format));
    if (!vm.count("sio-connect-timeout-ms"))
        o.sio_connect_timeout_ms = o.protocol_test ? 1000 : 45000;
    if (o.eio_ping_interval_ms == 0 || o.eio_ping_timeout_ms == 0 || o.sio_connect_timeout_ms == 0)
        return bad(
            "--eio-ping-interval-ms, --eio-ping-timeout-ms and --sio-connect-timeout-ms must be "
            "positive");
    if (o.eio_max_payload < 16 || o.eio_max_payload > (std::size_t{1} << 30))
        return bad(fmt::format("--eio-max-payload {} is out of range (16 to 1073741824)",
                               o.eio_max_payload));
    if (o.socketio_path.empty() || o.socketio_path[0] != '/' || o.socketio_path == "/" ||
        o.socketio_path.find_first_of("?# ") != std::string::npos)
        return bad(fmt::format("--socketio-path '{}' must be a path such as /socket.io/",
                               o.socketio_path));
    if (o.eio_max_queued < 1024 || o.eio_max_queued > (std::size_t{1} << 30))
        return bad(fmt::format("--eio-max-queued {} is out of range (1024 to 1073741824)",
                               o.eio_max_queued));
    if (o.eio_max_queued_total < o.eio_max_queued)
        return bad(fmt::format("--eio-max-queued-total {} must be at least --eio-max-queued ({})",
                               o.eio_max_queued_total, o.eio_max_queued));
    if (!(o.chat_rate == 0 || (o.chat_rate >= 0.001 && o.chat_rate <= 1e6)))  // also NaN
        return bad(fmt::format(
            "--chat-rate {} is out of range (0 for no limit, or 0.001 to 1000000 per second)",
            o.chat_rate));
    if (o.chat_rate > 0 && (o.chat_burst == 0 || o.chat_burst > 1000000))
        return bad(fmt::format(
            "--chat-burst {} is out of range (1 to 1000000; --chat-rate 0 for no limit)",
            o.chat_burst));
    if (!(o.chat_typing_rate == 0 ||
          (o.chat_typing_rate >= 0.001 && o.chat_typing_rate <= 1e6)))  // also NaN
        return bad(
            fmt::format("--chat-typing-rate {} is out of range (0 for no limit, or 0.001 "
                        "to 1000000 per second)",
                        o.chat_typing_rate));
    if (o.chat_typing_rate > 0 && (o.chat_typing_burst == 0 || o.chat_typing_burst > 1000000))
        return bad(
            fmt::format("--chat-typing-burst {} is out of range (1 to 1000000; "
                        "--chat-typing-rate 0 for no limit)",
                        o.chat_typing_burst));
    for (const auto& ns : o.sio_namespaces)
        if (ns.size() < 2 || ns[0] != '/' || ns.find_first_of(",?# ") != std::string::npos)
            return bad(fmt::format(
                "--sio-namespace '{}' must start with '/' and hold no ',', '?', '#' or space", ns));
    if (vm.count("user")) {
        const passwd* pw = ::getpwnam(o.user.c_str());
        if (!pw && !o.user.empty() && o.user.find_first_not_of("0123456789") == std::string::npos) {
            try {
                pw = ::getpwuid(static_cast<uid_t>(std::stoul(o.user)));
            } catch (const std::exception&) {
                pw = nullptr;
            }
        }
        if (!pw)
            return bad(fmt::format("--user '{}' is not a user of this system (see getent passwd)",
                                   o.user));
        if (pw->pw_uid == 0)
            return bad(fmt::format(
                "--user '{}' is root: workers parse input from the network and never run as "
                "root; omit --user (steerchat if that user exists, else nobody) or name an "
                "unprivileged user",
                o.user));
    }
    if (vm.count("group")) {
        const group* gr = ::getgrnam(o.group.c_str());
        if (!gr && !o.group.empty() &&
            o.group.find_first_not_of("0123456789") == std::string::npos) {
            try {
                gr = ::getgrgid(static_cast<gid_t>(std::stoul(o.group)));
            } catch (const std::exception&) {
                gr = nullptr;
            }
        }
        if (!gr)
            return bad(fmt::format("--group '{}' is not a group of this system (see getent group)",
                                   o.group));
        if (gr->gr_gid == 0)
            return bad(fmt::format(
                "--group '{}' is root's group: workers never run with it; omit --group or name "
                "an unprivileged group",
                o.group));
    }
    // The HTTP edge's limits (docs/reliability.md): fills in the per-worker default.
    if (auto err = app::check_edge_limits(o, vm.count("max-conns-per-worker") != 0,
                                          open_files_hard_limit());
        !err.empty())
        return bad(err);
    // TLS: the files are read and checked now (exit 2 on a bad one, not a worker crash later).
    if (auto err = app::load_tls(o, o.tls_warning, o.tls_summary); !err.empty()) return bad(err);
    return {o, 0, {}};
}

namespace {

// The settings `steerchat balance` shares with the built-in pool: the master's own. The others
// configure steerchat's chat workers, which balance does not run.
constexpr std::string_view kBalanceKeys[] = {
    "port",          "workers",        "max-workers",
    "bind",          "steering",       "seed",
    "ipv6-prefix64", "backlog",        "no-cpu-pinning",
    "bpffs-dir",     "run-dir",        "respawn-delay-ms",
    "max-restarts",  "restart-window", "shutdown-timeout-ms",
    "user",          "group",          "log-level",
    "log-format"};

bool balance_key(std::string_view key) {
    return std::find(std::begin(kBalanceKeys), std::end(kBalanceKeys), key) !=
           std::end(kBalanceKeys);
}

std::string balance_usage(const po::options_description& own,
                          const po::options_description& shared) {
    std::ostringstream os;
    os << "Usage: steerchat balance [options] -- COMMAND [ARGS...]\n\n"
          "Runs N copies of COMMAND behind one port, each client IP kept on one copy by the same\n"
          "listeners, eBPF steering and supervision as steerchat's own workers. Each copy gets\n"
          "only its own listening socket, as fd 3, with the systemd socket-activation variables\n"
          "LISTEN_FDS=1, LISTEN_PID (its pid) and LISTEN_FDNAMES=steerchat, plus STEERCHAT_SLOT\n"
          "(0..N-1), STEERCHAT_WORKERS (N) and STEERCHAT_PORT; it runs in its own process group\n"
          "as --user, and its stdout and stderr come out of the master's prefixed with\n"
          "'[slot N] '. A Node server listens with server.listen({ fd: 3 }); Python with\n"
          "socket.socket(fileno=3). A copy that dies is respawned into its slot (connections\n"
          "made meanwhile wait in its listening socket); one that keeps dying is drained.\n"
          "SIGTERM goes to every copy's process group; what has not exited after\n"
          "--shutdown-timeout-ms is killed. Examples: examples/balance/.\n\n"
       << own << "\n"
       << shared
       << "\nThe settings of steerchat's own chat workers (--eio-*, --ws-*, --chat-*, --tls-*,\n"
          "...) do not apply: COMMAND has its own. `steerchat ctl --port P status|workers N`\n"
          "works as for the built-in pool.\n";
    return os.str();
}

// COMMAND as execv() needs it: a path with a '/' as given, else the first executable regular
// file of that name on PATH. Empty with `error` set if there is none.
std::string find_program(const std::string& name, std::string& error) {
    auto executable = [](const std::string& path, int& err) {
        struct stat st {};
        if (::stat(path.c_str(), &st) != 0) {
            err = errno;
            return false;
        }
        if (!S_ISREG(st.st_mode)) {
            err = EISDIR;
            return false;
        }
        if (::access(path.c_str(), X_OK) != 0) {
            err = errno;
            return false;
        }
        return true;
    };
    int err = 0;
    if (name.find('/') != std::string::npos) {
        if (executable(name, err)) return name;
        error = fmt::format("cannot run '{}': {}{}", name,
                            err == EISDIR ? "not a regular file" : std::strerror(err),
                            err == EACCES ? " (make it executable: chmod +x)" : "");
        return {};
    }
    const char* env = std::getenv("PATH");
    const std::string path = env && *env ? env : "/usr/local/bin:/usr/bin:/bin";
    std::istringstream dirs(path);
    for (std::string dir; std::getline(dirs, dir, ':');) {
        const std::string candidate = (dir.empty() ? std::string(".") : dir) + "/" + name;
        if (executable(candidate, err)) return candidate;
    }
    error = fmt::format(
        "command '{}' not found on PATH ({}): install it, or give its path (e.g. /usr/bin/{})",
        name, path, name);
    return {};
}

}  // namespace

BalanceParseResult parse_balance_options(int argc, const char* const argv[]) {
    auto fail = [](int code, std::string text) {
        BalanceParseResult r;
        r.exit_code = code;
        r.message = std::move(text);
        return r;
    };
    const std::string hint = "Try 'steerchat balance --help'.";
    // Everything after the first "--" is COMMAND and its arguments, untouched.
    int sep = 2;
    while (sep < argc && std::string_view(argv[sep]) != "--")
        ++sep;
    std::vector<std::string> words(argv + std::min(2, argc), argv + sep);

    Options o;
    Raw r;
    BalanceOptions b;
    unsigned admin_port = 0;
    po::options_description all = setting_options(o, r);
    po::options_description shared("Settings of the master (as for steerchat's own workers)");
    for (const auto& opt : all.options())
        if (balance_key(opt->long_name())) shared.add(opt);
    po::options_description own("Balance");
    // clang-format off
    own.add_options()
        ("help,h", "show this help and exit")
        ("admin-port", po::value(&admin_port),
         "serve the master's /metrics (steering outcomes, per-slot pid, state, restarts, CPU, "
         "memory, buckets) and /healthz on this port (COMMAND owns --port); default: none")
        ("admin-bind", po::value(&b.admin_bind)->default_value(b.admin_bind),
         "address of the --admin-port listener")
        ("start-grace-ms", po::value(&b.start_grace_ms)->default_value(b.start_grace_ms),
         "a copy that has run this long has started; if one exits sooner while the pool first "
         "starts, balance stops them all and exits 1 (a broken COMMAND is not respawned in a "
         "loop); later deaths are respawned, with backoff, and drained after --max-restarts");
    // clang-format on
    po::options_description desc;
    desc.add(own).add(shared);

    std::vector<std::string> forwarded{"steerchat"};
    po::variables_map vm;
    try {
        auto parsed = po::command_line_parser(words).options(desc).run();
        for (const auto& opt : parsed.options) {
            if (opt.string_key.empty() || opt.position_key >= 0) {
                const std::string word =
                    opt.original_tokens.empty() ? std::string{} : opt.original_tokens.front();
                return fail(2, fmt::format("steerchat balance: unexpected argument '{}': the "
                                           "command goes after '--', e.g. steerchat balance "
                                           "--port 3000 --workers 4 -- node server.js\n{}",
                                           word, hint));
            }
            if (balance_key(opt.string_key))
                forwarded.insert(forwarded.end(), opt.original_tokens.begin(),
                                 opt.original_tokens.end());
        }
        po::store(parsed, vm);
        if (vm.count("help")) {
            BalanceParseResult help;
            help.message = balance_usage(own, shared);
            return help;
        }
        po::notify(vm);
    } catch (const po::unknown_option& e) {
        const std::string key = strip_dashes(e.get_option_name());
        const auto keys = setting_keys();
        if (std::find(keys.begin(), keys.end(), key) != keys.end())
            return fail(2, fmt::format("steerchat balance: --{} is a setting of steerchat's own "
                                       "chat workers; under balance COMMAND runs instead and has "
                                       "its own settings\n{}",
                                       key, hint));
        return fail(2, fmt::format("steerchat balance: {}\n{}", e.what(), hint));
    } catch (const po::error& e) {
        return fail(2, fmt::format("steerchat balance: {}\n{}", e.what(), hint));
    }
    if (sep + 1 >= argc)
        return fail(2, fmt::format("steerchat balance: no COMMAND: give the program to run after "
                                   "'--', e.g. steerchat balance --port 3000 --workers 4 -- node "
                                   "server.js\n{}",
                                   hint));
    if (admin_port > 65535)
        return fail(
            2, fmt::format("steerchat balance: --admin-port {} is not a TCP port (1-65535)\n{}",
                           admin_port, hint));
    if (b.start_grace_ms == 0 || b.start_grace_ms > 600000)
        return fail(2, fmt::format("steerchat balance: --start-grace-ms {} is out of range (1 to "
                                   "600000)\n{}",
                                   b.start_grace_ms, hint));
    b.admin_port = static_cast<std::uint16_t>(admin_port);
    in6_addr a6{};
    in_addr a4{};
    if (inet_pton(AF_INET6, b.admin_bind.c_str(), &a6) != 1 &&
        inet_pton(AF_INET, b.admin_bind.c_str(), &a4) != 1)
        return fail(2, fmt::format("steerchat balance: --admin-bind '{}' is not an IPv4 or IPv6 "
                                   "address (e.g. 127.0.0.1 or ::1)\n{}",
                                   b.admin_bind, hint));

    // The master's settings: checked exactly as for the built-in pool.
    std::vector<const char*> fargv;
    for (const auto& w : forwarded)
        fargv.push_back(w.c_str());
    auto master = parse_options(static_cast<int>(fargv.size()), fargv.data());
    if (!master.options) {
        std::string text = master.message;
        if (text.starts_with("steerchat: ")) text.insert(9, " balance");
        if (auto at = text.find("Try 'steerchat --help'"); at != std::string::npos)
            text.replace(at, 22, "Try 'steerchat balance --help'");
        return fail(master.exit_code, text);
    }
    if (b.admin_port != 0 && b.admin_port == master.options->port)
        return fail(2, fmt::format("steerchat balance: --admin-port {} is --port: COMMAND owns "
                                   "that port; choose another\n{}",
                                   b.admin_port, hint));

    b.command.assign(argv + sep + 1, argv + argc);
    std::string error;
    b.program = find_program(b.command.front(), error);
    if (b.program.empty()) return fail(2, fmt::format("steerchat balance: {}", error));

    BalanceParseResult out;
    out.options = std::move(master.options);
    out.balance = std::move(b);
    return out;
}

}  // namespace steerchat::master
