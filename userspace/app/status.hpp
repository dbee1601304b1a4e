// GET /status.json: the host view the status page (web/status.html) polls every second, composed
// by whichever worker the browser reaches from the shared metrics mapping (every worker's slot
// block, the master's slot table and steering counters) and the ring mapping. Counters are
// totals; the page turns them into rates.
#pragma once

#include <string>

#include "chat/chat.hpp"
#include "chat/encode_once.hpp"
#include "eio/options.hpp"
#include "net/worker.hpp"
#include "ring/ring.hpp"

namespace steerchat::app {

struct StatusSources {
    net::Worker& worker;
    const chat::HubStats& hub;
    const chat::AdapterStats& native;
    const chat::AdapterStats& socketio;
    const eio::Stats* engine;  // nullptr: no Socket.IO server
    const ring::Region& ring;
};

// The JSON document: {"worker":W,"time_ms":T,"steering":"bpf"|"kernel",
//   "slots":[{"slot","pid","state","restarts","cpu_ns","rss_bytes","buckets","connections":
//   {"http","native","socketio"},"sessions","requests","deliveries","ring_lag_bytes"}...],
//   "total":{same sums}}
std::string status_json(const StatusSources& s);

}  // namespace steerchat::app
