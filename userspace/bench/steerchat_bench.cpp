// steerchat-bench: a load generator for a server on a loopback address (steerchat or a peer).
//
// Every scenario runs T io threads, each with its own io_context owning its share of the clients;
// every client binds its own loopback source address (127.1.0.1 + i; connect cycles through
// 127.2.0.0-127.254.255.255) so that per-address steering spreads them over the workers. Each
// scenario prints its progress on stderr once a second, its summary on stdout and, with --json, a
// JSON object; it is bounded in time and connections and stops by itself. The server's CPU is
// utime + stime (+ the reaped children's) of every process in the trees of --server-pid (given
// once per tree: steerchat's master, node's cluster primary, nginx's master and its backends),
// found by walking /proc at each sample.
//
//  broadcast  C clients (native JSON on /ws, or Socket.IO over Engine.IO v4 with --protocol sio)
//             log in as <prefix><i> and join room i % R. S of them say to their room at a fixed
//             rate; the text carries the CLOCK_MONOTONIC send time, the sender id and a sequence
//             number. Every receiver scans the text for "t=" and records send-to-receive latency.
//             Phases: setup (connect, handshake, login, join), 1 s warm-up, --duration seconds of
//             measurement, up to 1 s for stragglers, close. Accounting is by send timestamp: a
//             message belongs to the measurement when it was sent inside the window; expected
//             deliveries = those sends x members of the sender's room, received = the deliveries
//             of those messages (however late, up to the straggler deadline).
//  connect    N connections in flight, each a new TCP connection and upgrade (GET /echo), closed
//             as soon as its 101 has arrived and checked out: by default with a RST (SO_LINGER 0),
//             so neither side keeps a TIME_WAIT and 4-tuples can be reused at once; --close clean
//             sends a Close and waits for the server's. Latency is connect() start to 101.
//  echo       C clients on /echo; each sends a timestamped text and waits for its echo (closed
//             loop), or all send at --rate each regardless (open loop). Round-trip latency.
//  idle       C connections opened and held for --duration seconds (sio: after the Engine.IO and
//             Socket.IO handshakes; pings are answered). The server tree's PSS and RSS are read
//             before the first connection and at the end of the hold: bytes per connection. A
//             process can hold only as many sockets as its open-files hard limit, so the
//             connections are spread over several forked load processes when needed.
//
// --tls (every scenario): each connection is TLS (wss://) before the upgrade, the server's
// certificate checked against --ca when given; connect --resume offers each slot's previous
// session from the same source address, and counts how many the server resumed.
//
// The hot paths (pacing, encoding a say, parsing a frame, recording latency) do not allocate.
#include <fmt/format.h>

#include <random>

#include "bench_common.hpp"
#include "bench_options.hpp"
#include "scenarios.hpp"
#include "ws_client.hpp"

namespace steerchat::bench {

std::uint64_t random_seed(std::uint32_t index) {
    std::random_device rd;
    std::uint64_t s =
        (std::uint64_t{rd()} << 32) ^ rd() ^ (std::uint64_t{index} << 17) ^ 0x9E3779B97F4A7C15;
    return s ? s : 1;
}

}  // namespace steerchat::bench

int main(int argc, char** argv) {
    using namespace steerchat::bench;
    const Options opt = parse_options(argc, argv);
    try {
        if (opt.tls)
            set_client_tls(std::make_unique<TlsClient>(opt.ca_file, opt.server_name, opt.resume));
        switch (opt.scenario) {
            case Scenario::broadcast:
                return run_broadcast(opt);
            case Scenario::connect:
                return run_connect(opt);
            case Scenario::echo:
                return run_echo(opt);
            case Scenario::idle:
                return run_idle(opt);
        }
    } catch (const std::exception& e) {
        die(e.what());
    }
    return 1;
}
