#include "bench_options.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "bench_common.hpp"

namespace steerchat::bench {

const char* scenario_name(Scenario s) {
    switch (s) {
        case Scenario::broadcast:
            return "broadcast";
        case Scenario::connect:
            return "connect";
        case Scenario::echo:
            return "echo";
        case Scenario::idle:
            return "idle";
    }
    return "?";
}

const char* protocol_name(Protocol p) {
    return p == Protocol::sio ? "sio" : "native";
}

namespace {

constexpr unsigned kB = 1u << static_cast<unsigned>(Scenario::broadcast);
constexpr unsigned kC = 1u << static_cast<unsigned>(Scenario::connect);
constexpr unsigned kE = 1u << static_cast<unsigned>(Scenario::echo);
constexpr unsigned kI = 1u << static_cast<unsigned>(Scenario::idle);
constexpr unsigned kAll = kB | kC | kE | kI;

struct Flag {
    std::string_view name;
    unsigned scenarios;
    std::string_view help;  // printed as it is (continuation lines indented)
};

// Help, in the order printed. Defaults that differ per scenario are given per scenario.
constexpr Flag kFlags[] = {
    {"--host", kAll,
     "--host ADDR            loopback address of the server (127.0.0.0/8 or ::1; "
     "127.0.0.1)"},
    {"--port", kAll, "--port P               server port (8080)"},
    {"--protocol", kB | kC | kI,
     "--protocol native|sio  native JSON on /ws, or raw Engine.IO v4 / Socket.IO v5 over a "
     "WebSocket\n"
     "                         on /socket.io/?EIO=4&transport=websocket (native; connect: only "
     "the path)"},
    {"--path", kAll,
     "--path TARGET          request target of the upgrade (native: broadcast and idle /ws,\n"
     "                         connect and echo /echo; sio: "
     "/socket.io/?EIO=4&transport=websocket)"},
    {"--clients", kB | kE | kI,
     "--clients C            connections (broadcast 200, at most 50000; echo 50, at most 20000;\n"
     "                         idle 1000, at most 200000)"},
    {"--rooms", kB, "--rooms R              rooms; client i joins room i % R (4)"},
    {"--senders", kB, "--senders S            clients 0..S-1 send (all)"},
    {"--rate", kB | kE,
     "--rate X               broadcast: says per second per sender (10); echo: messages per "
     "second\n"
     "                         per client, 0 = closed loop: each client waits for its echo (0)"},
    {"--size", kE, "--size BYTES           echo: message size, 48..65536 (64)"},
    {"--concurrency", kC, "--concurrency N        connect: handshakes in flight (64)"},
    {"--close", kC,
     "--close rst|clean      connect: after the 101 reset the connection (SO_LINGER 0: no "
     "TIME_WAIT\n"
     "                         anywhere), or send a Close and wait for the server's (rst)"},
    {"--processes", kI,
     "--processes P          idle: load processes, each holding C/P connections (as many as the\n"
     "                         open-files hard limit needs)"},
    {"--tls", kAll,
     "--tls                  TLS (wss://): a TLS 1.2/1.3 handshake (ALPN http/1.1) before the "
     "upgrade;\n"
     "                         the certificate is not checked unless --ca is given"},
    {"--ca", kAll,
     "--ca FILE              with --tls: the server's certificate must chain to this CA (PEM) "
     "and\n"
     "                         name --server-name"},
    {"--server-name", kAll,
     "--server-name NAME     with --tls: the name (or IP address) the certificate must hold, sent "
     "as\n"
     "                         SNI when it is a name (--host)"},
    {"--resume", kC,
     "--resume               connect --tls: every slot keeps one source address and offers the "
     "session\n"
     "                         of its previous connection (resumed handshakes); without it every\n"
     "                         handshake is a full one"},
    {"--duration", kAll,
     "--duration SECONDS     measurement (after a 1 s warm-up except idle: the hold), at most "
     "600\n"
     "                         (5; idle 10)"},
    {"--threads", kAll, "--threads T            client io threads (per load process for idle) (1)"},
    {"--server-pid", kAll,
     "--server-pid PID       server process: report the CPU (and for idle the memory) of it and "
     "all\n"
     "                         its descendants; repeat for several process trees"},
    {"--json", kAll, "--json FILE            also write the summary as a JSON object"},
    {"--name-prefix", kB | kI, "--name-prefix P        login names P0, P1, ... (b)"},
    {"--chat", kI,
     "--chat on|off          idle (native): each connection logs in as P<i>; after the setup a\n"
     "                         checker logs in, checks that every name is listed in its welcome\n"
     "                         and sends each user a DM; the hold ends when all arrived (off)"},
    {"--login-rate", kI,
     "--login-rate X         idle: start X connections (logins with --chat) per second over all\n"
     "                         load processes instead of 128 in setup at a time; with --chat the\n"
     "                         run also waits until the clients are quiet (no frame for 2 s) and\n"
     "                         reports the time until then and the server CPU it took (0)"},
    {"--room-prefix", kB, "--room-prefix P        room names P0, P1, ... (bench)"},
    {"--connect-timeout", kB | kE | kI,
     "--connect-timeout S    setup of all clients must finish within S seconds (30)"},
};

constexpr std::string_view kAbout[] = {
    // broadcast
    "C clients in R rooms, S of them saying at a fixed rate with a timestamp in the text;\n"
    "deliveries per second, send-to-receive latency, loss, server CPU.",
    // connect
    "New WebSocket connections as fast as possible with N in flight, each from its own\n"
    "127.x.y.z address, closed after the 101; connections per second, handshake latency\n"
    "(connect() start to 101 received), errors, server CPU.",
    // echo
    "C clients on /echo, each sending a timestamped message and waiting for the echo (or paced\n"
    "at --rate); round trips per second, round-trip latency, server CPU.",
    // idle
    "C connections opened and held idle for --duration seconds; the server tree's memory (PSS and\n"
    "RSS from /proc, kernel socket memory) before and after, in bytes per connection.",
};

void usage(std::FILE* out, std::optional<Scenario> s) {
    if (!s) {
        fmt::print(out,
                   "usage: steerchat-bench broadcast|connect|echo|idle [options]\n"
                   "       steerchat-bench SCENARIO --help\n"
                   "A load generator for a server on a loopback address; each scenario stops by "
                   "itself,\nprints its progress on stderr and its summary on stdout.\n");
        return;
    }
    const unsigned bit = 1u << static_cast<unsigned>(*s);
    fmt::print(out, "usage: steerchat-bench {} [options]\n{}\n", scenario_name(*s),
               kAbout[static_cast<unsigned>(*s)]);
    for (const Flag& f : kFlags)
        if (f.scenarios & bit) fmt::print(out, "  {}\n", f.help);
}

template <class T>
T parse_number(std::string_view flag, std::string_view s) {
    T v{};
    const auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc() || p != s.data() + s.size())
        die(fmt::format("{}: '{}' is not a valid number", flag, s));
    return v;
}

bool plain(std::string_view s) {
    return std::all_of(s.begin(), s.end(), [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-';
    });
}

}  // namespace

Options parse_options(int argc, char** argv) {
    if (argc < 2) {
        usage(stderr, std::nullopt);
        std::exit(2);
    }
    const std::string_view name = argv[1];
    if (name == "--help" || name == "-h") {
        usage(stdout, std::nullopt);
        std::exit(0);
    }
    Options o;
    if (name == "broadcast")
        o.scenario = Scenario::broadcast;
    else if (name == "connect")
        o.scenario = Scenario::connect;
    else if (name == "echo")
        o.scenario = Scenario::echo;
    else if (name == "idle")
        o.scenario = Scenario::idle;
    else
        die(fmt::format("unknown scenario '{}' (known: broadcast, connect, echo, idle)", name));
    const unsigned bit = 1u << static_cast<unsigned>(o.scenario);
    bool rate_set = false, duration_set = false;
    for (int i = 2; i < argc; ++i) {
        const std::string_view flag = argv[i];
        if (flag == "--help" || flag == "-h") {
            usage(stdout, o.scenario);
            std::exit(0);
        }
        const auto known = std::find_if(std::begin(kFlags), std::end(kFlags),
                                        [&](const Flag& f) { return f.name == flag; });
        if (known == std::end(kFlags)) die(fmt::format("unknown option '{}' (see --help)", flag));
        if (!(known->scenarios & bit))
            die(fmt::format("{} does not apply to {} (see --help)", flag,
                            scenario_name(o.scenario)));
        if (flag == "--tls") {
            o.tls = true;
            continue;
        }
        if (flag == "--resume") {
            o.resume = true;
            continue;
        }
        if (i + 1 >= argc) die(fmt::format("{} needs a value (see --help)", flag));
        const std::string_view v = argv[++i];
        if (flag == "--host")
            o.host = v;
        else if (flag == "--port")
            o.port = parse_number<std::uint16_t>(flag, v);
        else if (flag == "--protocol") {
            if (v == "native")
                o.protocol = Protocol::native;
            else if (v == "sio")
                o.protocol = Protocol::sio;
            else
                die(fmt::format("--protocol: '{}' is neither native nor sio", v));
        } else if (flag == "--path")
            o.path = v;
        else if (flag == "--clients")
            o.clients = parse_number<std::uint32_t>(flag, v);
        else if (flag == "--rooms")
            o.rooms = parse_number<std::uint32_t>(flag, v);
        else if (flag == "--senders")
            o.senders = parse_number<std::uint32_t>(flag, v);
        else if (flag == "--rate") {
            o.rate = parse_number<double>(flag, v);
            rate_set = true;
        } else if (flag == "--size")
            o.size = parse_number<std::uint32_t>(flag, v);
        else if (flag == "--concurrency")
            o.concurrency = parse_number<std::uint32_t>(flag, v);
        else if (flag == "--close") {
            if (v == "rst")
                o.close = CloseMode::rst;
            else if (v == "clean")
                o.close = CloseMode::clean;
            else
                die(fmt::format("--close: '{}' is neither rst nor clean", v));
        } else if (flag == "--processes")
            o.processes = parse_number<std::uint32_t>(flag, v);
        else if (flag == "--duration") {
            o.duration = parse_number<double>(flag, v);
            duration_set = true;
        } else if (flag == "--threads")
            o.threads = parse_number<std::uint32_t>(flag, v);
        else if (flag == "--server-pid") {
            const int pid = parse_number<int>(flag, v);
            if (pid <= 0) die("--server-pid must be positive");
            o.server_pids.push_back(pid);
        } else if (flag == "--json")
            o.json_file = v;
        else if (flag == "--name-prefix")
            o.name_prefix = v;
        else if (flag == "--room-prefix")
            o.room_prefix = v;
        else if (flag == "--chat") {
            if (v != "on" && v != "off") die(fmt::format("--chat: '{}' is neither on nor off", v));
            o.chat = v == "on";
        } else if (flag == "--login-rate")
            o.login_rate = parse_number<double>(flag, v);
        else if (flag == "--connect-timeout")
            o.connect_timeout = parse_number<double>(flag, v);
        else if (flag == "--ca")
            o.ca_file = v;
        else if (flag == "--server-name")
            o.server_name = v;
    }
    if (!o.tls && (o.resume || !o.ca_file.empty() || !o.server_name.empty()))
        die("--resume, --ca and --server-name need --tls");
    if (o.server_name.empty()) o.server_name = o.host;

    // Per-scenario defaults.
    if (o.clients == 0) {
        o.clients = o.scenario == Scenario::broadcast ? 200
                    : o.scenario == Scenario::echo    ? 50
                                                      : 1000;
    }
    if (!rate_set && o.scenario == Scenario::broadcast) o.rate = 10.0;
    if (!duration_set && o.scenario == Scenario::idle) o.duration = 10.0;
    if (o.path.empty()) {
        if (o.protocol == Protocol::sio)
            o.path = kSioPath;
        else
            o.path =
                o.scenario == Scenario::broadcast || o.scenario == Scenario::idle ? "/ws" : "/echo";
    }

    if (o.chat && o.protocol != Protocol::native) die("--chat on needs --protocol native");
    // Bounds.
    const std::uint32_t max_clients = o.scenario == Scenario::broadcast ? 50000
                                      : o.scenario == Scenario::echo    ? 20000
                                                                        : 200000;
    if (o.scenario != Scenario::connect && o.clients > max_clients)
        die(fmt::format("--clients must be in 1..{}", max_clients));
    if (o.scenario == Scenario::broadcast) {
        if (o.rooms == 0 || o.rooms > o.clients) die("--rooms must be in 1..clients");
        if (!o.senders) o.senders = o.clients;
        if (*o.senders > o.clients) die("--senders must be at most --clients");
        if (!(o.rate > 0.0 && o.rate <= 100000.0)) die("--rate must be in (0, 100000]");
    }
    if (o.scenario == Scenario::echo && !(o.rate >= 0.0 && o.rate <= 100000.0))
        die("--rate must be in [0, 100000]");
    if (o.scenario == Scenario::echo && (o.size < 48 || o.size > 65536))
        die("--size must be in 48..65536");
    if (o.scenario == Scenario::connect && (o.concurrency == 0 || o.concurrency > 10000))
        die("--concurrency must be in 1..10000");
    if (o.processes > 64) die("--processes must be in 0..64");
    if (!(o.duration > 0.0 && o.duration <= 600.0)) die("--duration must be in (0, 600]");
    if (o.threads == 0 || o.threads > 64) die("--threads must be in 1..64");
    if (!(o.connect_timeout > 0.0 && o.connect_timeout <= 600.0))
        die("--connect-timeout must be in (0, 600]");
    if (o.port == 0) die("--port must not be 0");
    if (!o.path.starts_with('/') || std::any_of(o.path.begin(), o.path.end(), [](char c) {
            return static_cast<unsigned char>(c) <= ' ' || static_cast<unsigned char>(c) >= 0x7F;
        }))
        die("--path must start with '/' and hold printable ASCII without spaces");
    if (!plain(o.name_prefix) || o.name_prefix.size() > 64)
        die("--name-prefix: letters, digits, '_' and '-' only, at most 64");
    if (!plain(o.room_prefix) || o.room_prefix.empty() || o.room_prefix.size() > 64)
        die("--room-prefix: letters, digits, '_' and '-' only, 1 to 64");
    return o;
}

}  // namespace steerchat::bench
