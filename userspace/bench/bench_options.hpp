// steerchat-bench: the command line of every scenario.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace steerchat::bench {

enum class Scenario { broadcast, connect, echo, idle };
enum class Protocol { native, sio };
enum class CloseMode { rst, clean };

inline constexpr std::string_view kSioPath = "/socket.io/?EIO=4&transport=websocket";

struct Options {
    Scenario scenario = Scenario::broadcast;
    std::string host = "127.0.0.1";
    std::uint16_t port = 8080;
    Protocol protocol = Protocol::native;
    std::string path;           // request target of the upgrade (default per scenario and protocol)
    std::uint32_t clients = 0;  // default per scenario
    std::uint32_t rooms = 4;
    double rate = 0;  // broadcast: says/s per sender (10); echo: messages/s per client (0: closed)
    std::optional<std::uint32_t> senders;
    double duration = 5.0;
    std::uint32_t threads = 1;
    std::vector<int> server_pids;
    std::string json_file;
    std::string name_prefix = "b";
    std::string room_prefix = "bench";
    double connect_timeout = 30.0;
    std::uint32_t concurrency = 64;    // connect: handshakes in flight
    CloseMode close = CloseMode::rst;  // connect: how each connection ends
    std::uint32_t size = 64;           // echo: message bytes
    std::uint32_t processes = 0;       // idle: load processes (0: as the open-files limit needs)
    bool tls = false;                  // wss:// (TLS before the upgrade)
    std::string ca_file;               // --tls: verify the server's certificate against this CA
    std::string server_name;           // --tls: the name to verify and send (SNI) (--host)
    bool resume = false;               // connect --tls: offer the previous connection's session
    bool chat = false;  // idle (native): log in as users, then check the listing and a DM to each
    double login_rate = 0;  // idle: connections (logins with --chat) started per second (0: asap)
};

const char* scenario_name(Scenario s);
const char* protocol_name(Protocol p);

// Parses argv (argv[1] is the scenario); prints usage and exits on --help or an error.
Options parse_options(int argc, char** argv);

}  // namespace steerchat::bench
