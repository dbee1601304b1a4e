#include "app/status.hpp"

#include <chrono>
#include <cstdint>

#include <boost/json/array.hpp>
#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>

#include "metrics/metrics.hpp"

namespace steerchat::app {

namespace {

template <class T>
const T* find(const std::vector<std::pair<unsigned, const T*>>& peers, unsigned slot) {
    for (const auto& [s, p] : peers)
        if (s == slot) return p;
    return nullptr;
}

std::uint64_t get(const metrics::Counter* c) {
    return c ? c->load() : 0;
}

}  // namespace

std::string status_json(const StatusSources& src) {
    net::Worker& w = src.worker;
    metrics::Slot& m = w.metrics();
    const metrics::Region* region = m.region();
    const auto http = m.peers(w.stats());
    const auto hub = m.peers(src.hub);
    const auto native = m.peers(src.native);
    const auto sio = m.peers(src.socketio);
    std::vector<std::pair<unsigned, const eio::Stats*>> engine;
    if (src.engine) engine = m.peers(*src.engine);

    boost::json::object o;
    o["worker"] = w.config().slot;
    o["time_ms"] = std::chrono::duration_cast<std::chrono::milliseconds>(
                       std::chrono::system_clock::now().time_since_epoch())
                       .count();
    const bool bpf = region && region->host().steering_bpf.load() != 0;
    o["steering"] = bpf ? "bpf" : "kernel";

    boost::json::array slots;
    std::uint64_t t_http = 0, t_native = 0, t_sio = 0, t_sessions = 0, t_requests = 0,
                  t_deliveries = 0, t_lag = 0, t_cpu = 0, t_rss = 0;
    unsigned serving = 0;
    for (const auto& listed : metrics::listed_slots(region, w.config().slot)) {
        const unsigned i = listed.slot;
        const std::uint64_t cpu = listed.cpu_ns, rss = listed.rss_bytes;
        boost::json::object s;
        const auto* h = find(http, i);
        const auto* e = find(engine, i);
        const auto* hs = find(hub, i);
        const auto* n = find(native, i);
        const auto* so = find(sio, i);
        const std::uint64_t c_http = h ? h->active.load() : 0;
        const std::uint64_t c_native = n ? n->connections.load() : 0;
        const std::uint64_t c_sio = e ? e->sessions.load() : 0;
        const std::uint64_t sessions = hs ? hs->sessions.load() : 0;
        const std::uint64_t requests =
            get(n ? &n->requests : nullptr) + get(so ? &so->requests : nullptr);
        const std::uint64_t deliveries = hs ? hs->deliveries.load() : 0;
        const std::uint64_t lag = h && i < src.ring.workers() ? src.ring.lag_bytes(i) : 0;
        s["slot"] = i;
        s["pid"] = listed.pid;
        s["state"] = listed.state;
        s["restarts"] = listed.restarts;
        s["cpu_ns"] = cpu;
        s["rss_bytes"] = rss;
        s["buckets"] = listed.buckets;
        s["connections"] = {{"http", c_http}, {"native", c_native}, {"socketio", c_sio}};
        s["sessions"] = sessions;
        s["requests"] = requests;
        s["deliveries"] = deliveries;
        s["ring_lag_bytes"] = lag;
        if (h) ++serving;
        t_http += c_http;
        t_native += c_native;
        t_sio += c_sio;
        t_sessions += sessions;
        t_requests += requests;
        t_deliveries += deliveries;
        t_lag += lag;
        t_cpu += cpu;
        t_rss += rss;
        slots.push_back(std::move(s));
    }
    o["slots"] = std::move(slots);
    boost::json::object t;
    t["serving"] = serving;
    t["connections"] = {{"http", t_http}, {"native", t_native}, {"socketio", t_sio}};
    t["sessions"] = t_sessions;
    t["requests"] = t_requests;
    t["deliveries"] = t_deliveries;
    t["ring_lag_bytes"] = t_lag;
    t["cpu_ns"] = t_cpu;
    t["rss_bytes"] = t_rss;
    o["total"] = std::move(t);
    return boost::json::serialize(o) + "\n";
}

}  // namespace steerchat::app
