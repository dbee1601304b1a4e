// Engine.IO settings, counters and the small vocabulary shared by the server (server.hpp) and
// its sessions (session.hpp).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "metrics/metrics.hpp"

namespace steerchat::eio {

struct Options {
    std::string path = "/socket.io/";
    std::chrono::milliseconds ping_interval{25'000};
    std::chrono::milliseconds ping_timeout{20'000};
    std::size_t max_payload = 1'000'000;  // bytes of one POST body or WebSocket message
    bool allow_eio3 = true;               // Engine.IO v3 clients (socket.io-client 2.x)
    bool allow_upgrades = true;
    // Origins answered with CORS headers ("*": any). Empty: no CORS headers at all.
    std::vector<std::string> cors_origins;
    // Origins allowed to open sessions at all (the worker's --allow-origin): a request with
    // another Origin (and not a CORS origin) gets 403 code 4. Empty: any.
    std::vector<std::string> allowed_origins;
    std::chrono::milliseconds upgrade_timeout{10'000};  // probe -> upgrade packet
    // Packets queued for a polling client that does not poll (bytes, counting kQueuedOverhead
    // per packet): over this, the session closes.
    std::size_t max_buffered_bytes = std::size_t{4} << 20;
    // The same summed over the worker's polling sessions: over it, the sessions that have waited
    // longest for a poll with packets queued are closed until the sum is under it again.
    std::size_t max_buffered_total = std::size_t{64} << 20;
    // Sessions from one client address (IPv4, or the /64 of IPv6); over: 429. 0: no limit.
    std::size_t max_sessions_per_ip = 1000;
    // Handshake -> first long poll or upgrade request of a polling session. 0: no deadline.
    std::chrono::milliseconds first_poll_timeout{5'000};
};

// Bookkeeping bytes counted per queued packet besides its data (the queue entry, the string's
// heap block): what a packet costs the worker, not what it costs the client.
inline constexpr std::size_t kQueuedOverhead = 64;

enum class Transport : std::uint8_t { polling, websocket };

// In the worker's slot block (metrics/metrics.hpp).
struct Stats {
    metrics::Counter sessions;            // gauge
    metrics::Counter websocket_sessions;  // gauge: sessions on the WebSocket transport
    metrics::Counter opened;              // sessions opened
    metrics::Counter upgrades;            // polling -> websocket
    metrics::Counter polls;               // GET long polls answered
    metrics::Counter posts;               // POST bodies accepted
    metrics::Counter errors;              // requests answered with an Engine.IO error
    metrics::Counter ping_timeouts;       // sessions closed for a missed heartbeat
    metrics::Counter invalid_packets;     // sessions closed for a malformed packet
    metrics::Counter messages_in;
    metrics::Counter messages_out;
    metrics::Counter queued_bytes;         // gauge: bytes queued for polling clients
    metrics::Counter refused_sessions;     // handshakes over max_sessions_per_ip
    metrics::Counter first_poll_timeouts;  // sessions closed: no poll or upgrade in time
    metrics::Counter queue_overflows;      // sessions closed: over max_buffered_bytes
    metrics::Counter queue_evictions;      // sessions closed: worker over max_buffered_total
    metrics::Counter websockets_refused;   // WebSockets for an upgraded session: closed at once
};

// 20 URL-safe base64 characters of 15 bytes from getrandom(): session and socket ids.
std::string random_id();

}  // namespace steerchat::eio
