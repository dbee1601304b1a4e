// Between hosts: one bridge per host between the host's shared-memory logs and Redis streams
// (docs/architecture.md, "Between hosts"; docs/scaling.md).
//
// The shape is the ring's one level up. The bridge is a process of its own (forked by the master,
// respawned if it dies) with ONE Redis connection; workers never talk to Redis.
//   * It owns ring slot `slot` (the Region has one log more than the pool: the bridge's). It
//     reads every worker's log like a worker does, and appends the events that other hosts must
//     see to this host's stream (XADD, single writer): room messages, presence, joins and leaves,
//     typing, and DMs whose recipient is on another host.
//   * It reads every other host's stream from its own cursor (XREAD) and applies each entry to
//     this host's shared state (registry, rooms, history) under the bridge's slot, then writes
//     the event into its own log: the workers deliver it to their local recipients exactly as a
//     record of a sibling worker. A room message crosses to each host once, whatever the number
//     of recipients there.
//   * Liveness: a lease key per host (--host-lease) that the bridge renews; a host whose lease
//     expired is dead for the others (its users offline, names free). Each start of a bridge,
//     or a reconnect after its lease expired, takes a new epoch (a new stream): the others drop
//     what they knew of the old one and read the new one from its start, where the bridge first
//     announces the host's current users and rooms.
//   * Redis down: local chat goes on; the events to send wait in a bounded queue (--redis-buffer),
//     sent in order after the reconnect; each entry has an explicit stream id, so a resend of an
//     entry Redis already took is refused by Redis instead of stored twice. Past the bound the
//     newest events are dropped, counted and logged.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "chat/shared_state.hpp"
#include "metrics/metrics.hpp"
#include "ring/ring.hpp"

namespace steerchat::bridge {

// redis://[[user]:password@]host[:port][/db] or unix:///path/to/socket[?db=N]
struct RedisUrl {
    std::string host;  // empty: unix socket at `path`
    std::uint16_t port = 6379;
    std::string path;
    std::string user;
    std::string password;
    unsigned db = 0;
};

// The parsed URL, or std::invalid_argument saying what is wrong and how to fix it (rediss:// is
// refused: Debian 12's hiredis 0.14 has no TLS).
RedisUrl parse_url(const std::string& url);

struct Config {
    std::string url;
    unsigned host_id = 0;  // 0..255, unique per host of one chat
    unsigned lease_ms = 3000;
    std::size_t buffer = 100000;       // events queued while Redis is unreachable
    std::size_t stream_len = 1000000;  // XADD MAXLEN ~ (entries kept per host's stream)
    std::string prefix = "steerchat";  // key prefix
};

// Runs the bridge until SIGTERM. `slot`: the bridge's ring slot and the slot under which it
// registers remote users in `state`. Its figures go to `metrics`' host block (BridgeBlock; may
// be null). Returns the exit status.
int run(const Config& config, ring::Region& region, unsigned slot, chat::SharedState& state,
        metrics::Region* metrics);

}  // namespace steerchat::bridge
