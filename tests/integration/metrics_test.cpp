// One view of the host: /metrics and /healthz?all, answered by any worker, show every worker's
// figures (the counters live in a shared mapping: userspace/metrics). A scrape from one client
// address (always steered to one worker) passes `promtool check metrics` and carries both
// workers' current values; the master's figures (pid, state, restarts, BPF counters) follow a
// killed, respawned and drained worker.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>

#include "harness.hpp"
#include "pinned.hpp"

using namespace steerchat;
using namespace steerchat::itest;
using namespace std::chrono_literals;

namespace {

// The body of a GET from `src` (empty on failure or a non-200 answer).
std::string get_body(const std::string& src, std::uint16_t port, const std::string& path) {
    auto r = http_get(src, port, path);
    if (!r || r->rfind("HTTP/1.1 200", 0) != 0) return {};
    const auto at = r->find("\r\n\r\n");
    return at == std::string::npos ? std::string{} : r->substr(at + 4);
}

// A scrape as {"name{labels}": value}; the text itself in `text`.
std::map<std::string, double> scrape(const std::string& src, std::uint16_t port,
                                     std::string* text = nullptr) {
    const std::string body = get_body(src, port, "/metrics");
    if (text) *text = body;
    std::map<std::string, double> out;
    std::istringstream in(body);
    for (std::string line; std::getline(in, line);) {
        if (line.empty() || line[0] == '#') continue;
        const auto sp = line.rfind(' ');
        out[line.substr(0, sp)] = std::stod(line.substr(sp + 1));
    }
    return out;
}

double value(const std::map<std::string, double>& m, const std::string& key) {
    auto it = m.find(key);
    return it == m.end() ? -1 : it->second;
}

// An open WebSocket to /echo from `src` (the handshake done); -1 on failure.
int open_websocket(const std::string& src, std::uint16_t port) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    timeval tv{5, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    sockaddr_in local{}, dst{};
    local.sin_family = dst.sin_family = AF_INET;
    inet_pton(AF_INET, src.c_str(), &local.sin_addr);
    inet_pton(AF_INET, "127.0.0.1", &dst.sin_addr);
    dst.sin_port = htons(port);
    const std::string req =
        "GET /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    std::string in;
    char buf[1024];
    if (::bind(fd, reinterpret_cast<sockaddr*>(&local), sizeof local) == 0 &&
        ::connect(fd, reinterpret_cast<sockaddr*>(&dst), sizeof dst) == 0 &&
        ::send(fd, req.data(), req.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(req.size())) {
        while (in.find("\r\n\r\n") == std::string::npos) {
            const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
            if (n <= 0) break;
            in.append(buf, static_cast<std::size_t>(n));
        }
    }
    if (in.rfind("HTTP/1.1 101", 0) != 0) {
        ::close(fd);
        return -1;
    }
    return fd;
}

// A client address of each worker: {worker: address}.
std::map<int, std::string> address_per_worker(std::uint16_t port, unsigned n) {
    std::map<int, std::string> w;
    for (unsigned i = 0; i < 400 && w.size() < n; ++i)
        if (auto h = healthz(client_ip(i), port); h && !w.count(h->worker))
            w[h->worker] = client_ip(i);
    return w;
}

// `promtool check metrics` on `text`: its exit code and what it said.
std::pair<int, std::string> promtool_check(const std::string& text) {
    char path[] = "/tmp/steerchat-scrape-XXXXXX";
    const int fd = ::mkstemp(path);
    if (fd < 0) return {-1, "mkstemp failed"};
    ::close(fd);
    std::ofstream(path) << text;
    auto r = run_command(std::string("promtool check metrics < ") + path);
    ::unlink(path);
    return r;
}

boost::json::object host_view(const std::string& src, std::uint16_t port) {
    const std::string body = get_body(src, port, "/healthz?all");
    if (body.empty()) return {};
    return boost::json::parse(body).as_object();
}

const boost::json::object* slot_of(const boost::json::object& view, int slot) {
    if (!view.contains("slots")) return nullptr;
    for (const auto& s : view.at("slots").as_array())
        if (s.as_object().at("slot").to_number<int>() == slot) return &s.as_object();
    return nullptr;
}

// Polls the host view (from `src`) until `pred(slot object)` holds for `slot`; the last view.
template <class Pred>
boost::json::object wait_slot(const std::string& src, std::uint16_t port, int slot, Pred pred,
                              std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    boost::json::object view;
    do {
        view = host_view(src, port);
        if (const auto* s = slot_of(view, slot); s && pred(*s)) return view;
        std::this_thread::sleep_for(20ms);
    } while (std::chrono::steady_clock::now() < deadline);
    return view;
}

std::string state_of(const boost::json::object& view, int slot) {
    const auto* s = slot_of(view, slot);
    return s ? std::string(s->at("state").as_string()) : "(none)";
}

std::int64_t pid_of(const boost::json::object& view, int slot) {
    const auto* s = slot_of(view, slot);
    return s ? s->at("pid").to_number<std::int64_t>() : -1;
}

}  // namespace

TEST(Metrics, OneScrapeShowsEveryWorkerCurrentAndPassesPromtool) {
    Server srv(18501, {"--workers", "2", "--seed", "0x5eed0001"});
    ASSERT_TRUE(srv.wait_ready(2)) << srv.log();
    auto at = address_per_worker(srv.port(), 2);
    ASSERT_EQ(at.size(), 2u);
    const std::string ip0 = at[0], ip1 = at[1];

    // Open WebSockets: 2 held on worker 0, 3 on worker 1.
    std::vector<int> sockets;
    for (int i = 0; i < 2; ++i)
        sockets.push_back(open_websocket(ip0, srv.port()));
    for (int i = 0; i < 3; ++i)
        sockets.push_back(open_websocket(ip1, srv.port()));
    for (int fd : sockets)
        ASSERT_GE(fd, 0) << srv.log();

    // One scrape from worker 0's address: both workers' series, with each one's values. A worker
    // counts a WebSocket once its 101 is written, which may be a moment after the client read it
    // (a loaded machine): scraped again until the gauges agree, for at most a second.
    std::string text;
    auto m = scrape(ip0, srv.port(), &text);
    ASSERT_FALSE(m.empty()) << srv.log();
    for (int i = 0; i < 100 && (value(m, "steerchat_ws_connections_open{worker=\"0\"}") != 2 ||
                                value(m, "steerchat_ws_connections_open{worker=\"1\"}") != 3);
         ++i) {
        std::this_thread::sleep_for(10ms);
        m = scrape(ip0, srv.port(), &text);
    }
    const auto [rc, said] = promtool_check(text);
    EXPECT_EQ(rc, 0) << "promtool check metrics (Debian's prometheus package; "
                        "scripts/lib/common.sh installs it):\n"
                     << said;
    EXPECT_EQ(value(m, "steerchat_ws_connections_open{worker=\"0\"}"), 2) << text;
    EXPECT_EQ(value(m, "steerchat_ws_connections_open{worker=\"1\"}"), 3) << text;
    EXPECT_EQ(value(m, "steerchat_ws_handshakes_total{worker=\"1\",result=\"accepted\"}"), 3);
    EXPECT_EQ(value(m, "steerchat_worker_state{worker=\"1\",state=\"serving\"}"), 1);
    EXPECT_EQ(value(m, "steerchat_steer_buckets{worker=\"0\"}") +
                  value(m, "steerchat_steer_buckets{worker=\"1\"}"),
              65537);
    bool build_info = false;
    for (const auto& [k, v] : m)
        build_info = build_info || (k.rfind("steerchat_build_info{version=\"", 0) == 0 && v == 1);
    EXPECT_TRUE(build_info) << text;
    // One HELP per family, whatever the number of workers.
    std::set<std::string> helps;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);)
        if (line.rfind("# HELP ", 0) == 0) {
            EXPECT_TRUE(helps.insert(line.substr(7, line.find(' ', 7) - 7)).second) << line;
        }

    // A worker counter moved on worker 1 shows at once in a scrape answered by worker 0.
    const double before = value(m, "steerchat_http_requests_total{worker=\"1\"}");
    ASSERT_TRUE(healthz(ip1, srv.port()));
    m = scrape(ip0, srv.port());
    EXPECT_EQ(value(m, "steerchat_http_requests_total{worker=\"1\"}"), before + 1);
    EXPECT_EQ(value(m, "steerchat_ws_connections_open{worker=\"1\"}"), 3);
    ::close(sockets.back());
    sockets.pop_back();
    for (int i = 0; i < 100 && value(m, "steerchat_ws_connections_open{worker=\"1\"}") != 2; ++i) {
        std::this_thread::sleep_for(10ms);
        m = scrape(ip0, srv.port());
    }
    EXPECT_EQ(value(m, "steerchat_ws_connections_open{worker=\"1\"}"), 2) << "a closed WebSocket";

    // Master-sampled figures (BPF steering, CPU, RSS) catch up within its sampling period (1 s).
    const double bpf1 = static_cast<double>(pinned_percpu_sum(srv.port(), "slot_stats", 1));
    ASSERT_GT(bpf1, 0);
    const auto t0 = std::chrono::steady_clock::now();
    while (value(m, "steerchat_steer_selections_total{worker=\"1\"}") < bpf1 &&
           std::chrono::steady_clock::now() - t0 < 4s) {
        std::this_thread::sleep_for(50ms);
        m = scrape(ip0, srv.port());
    }
    EXPECT_GE(value(m, "steerchat_steer_selections_total{worker=\"1\"}"), bpf1);
    // Sampled every second: 2.5 s leaves room for a loaded machine, not for a missed sample.
    EXPECT_LE(std::chrono::steady_clock::now() - t0, 2500ms) << "the master samples every second";
    EXPECT_GT(value(m, "steerchat_steer_selections_total{worker=\"0\"}"), 0);
    EXPECT_GT(value(m, "steerchat_steer_connections_total{outcome=\"selected\"}"), 0);
    EXPECT_GT(value(m, "steerchat_worker_resident_memory_bytes{worker=\"0\"}"), 0);
    EXPECT_GT(value(m, "steerchat_worker_resident_memory_bytes{worker=\"1\"}"), 0);
    // CPU time (in clock ticks of 10 ms): keep worker 1 busy until its figure moves.
    const auto t1 = std::chrono::steady_clock::now();
    while (value(m, "steerchat_worker_cpu_seconds_total{worker=\"1\"}") <= 0 &&
           std::chrono::steady_clock::now() - t1 < 10s) {
        for (int i = 0; i < 50; ++i)
            healthz(ip1, srv.port());
        m = scrape(ip0, srv.port());
    }
    EXPECT_GT(value(m, "steerchat_worker_cpu_seconds_total{worker=\"1\"}"), 0) << text;
    for (int fd : sockets)
        ::close(fd);
}

TEST(Metrics, HostHealthzFollowsAKilledRespawnedAndDrainedWorker) {
    Server srv(18502, {"--workers", "2", "--seed", "0x5eed0001", "--respawn-delay-ms", "800",
                       "--max-restarts", "2", "--restart-window", "60"});
    ASSERT_TRUE(srv.wait_ready(2)) << srv.log();
    auto at = address_per_worker(srv.port(), 2);
    ASSERT_EQ(at.size(), 2u);
    const std::string ip0 = at[0], ip1 = at[1];
    for (int i = 0; i < 5; ++i)
        ASSERT_TRUE(healthz(ip1, srv.port()));

    // The per-worker answer stays; the host view lists every slot, from any worker.
    auto view = host_view(ip0, srv.port());
    ASSERT_FALSE(view.empty()) << srv.log();
    EXPECT_EQ(view.at("worker").to_number<int>(), 0);
    EXPECT_EQ(state_of(view, 0), "serving");
    EXPECT_EQ(state_of(view, 1), "serving");
    EXPECT_EQ(view.at("total").as_object().at("serving").to_number<int>(), 2);
    const auto old_pid = pid_of(view, 1);
    ASSERT_EQ(old_pid, healthz(ip1, srv.port())->pid);
    const double requests_before =
        value(scrape(ip0, srv.port()), "steerchat_http_requests_total{worker=\"1\"}");
    ASSERT_GE(requests_before, 6);

    // SIGKILL: respawning (no pid), then serving with a new pid; one restart counted.
    ASSERT_EQ(::kill(static_cast<pid_t>(old_pid), SIGKILL), 0);
    view = wait_slot(
        ip0, srv.port(), 1, [](const auto& s) { return s.at("state").as_string() == "respawning"; },
        2s);
    EXPECT_EQ(state_of(view, 1), "respawning") << boost::json::serialize(view);
    EXPECT_EQ(pid_of(view, 1), 0);
    view = wait_slot(
        ip0, srv.port(), 1,
        [&](const auto& s) {
            return s.at("state").as_string() == "serving" &&
                   s.at("pid").template to_number<std::int64_t>() != old_pid;
        },
        5s);
    EXPECT_EQ(state_of(view, 1), "serving") << boost::json::serialize(view) << srv.log();
    EXPECT_NE(pid_of(view, 1), old_pid);
    EXPECT_GT(pid_of(view, 1), 0);
    EXPECT_EQ(slot_of(view, 1)->at("restarts").to_number<int>(), 1);
    EXPECT_EQ(pid_of(view, 1), healthz(ip1, srv.port())->pid);
    // A respawned worker's counters start again (Prometheus sees a counter reset).
    auto m = scrape(ip0, srv.port());
    EXPECT_LT(value(m, "steerchat_http_requests_total{worker=\"1\"}"), requests_before);
    EXPECT_EQ(value(m, "steerchat_worker_restarts_total{worker=\"1\"}"), 1);

    // The second death within the window drains the slot.
    ASSERT_EQ(::kill(static_cast<pid_t>(pid_of(view, 1)), SIGKILL), 0);
    view = wait_slot(
        ip0, srv.port(), 1, [](const auto& s) { return s.at("state").as_string() == "drained"; },
        3s);
    EXPECT_EQ(state_of(view, 1), "drained") << boost::json::serialize(view);
    EXPECT_EQ(view.at("total").as_object().at("serving").to_number<int>(), 1);
    m = scrape(ip0, srv.port());
    EXPECT_EQ(value(m, "steerchat_worker_state{worker=\"1\",state=\"drained\"}"), 1);
    EXPECT_EQ(value(m, "steerchat_worker_restarts_total{worker=\"1\"}"), 2);
    EXPECT_EQ(value(m, "steerchat_http_requests_total{worker=\"1\"}"), -1)
        << "a drained worker's series are gone";
}

TEST(Metrics, ASlotAddedOrRemovedByAResizeComesAndGoesInTheHostView) {
    // Blocks for --max-workers slots; the pool starts at 2.
    Server srv(18503, {"--workers", "2", "--max-workers", "3", "--seed", "0x5eed0001"});
    ASSERT_TRUE(srv.wait_ready(2)) << srv.log();
    const std::string ip0 = address_per_worker(srv.port(), 2)[0];
    auto view = host_view(ip0, srv.port());
    ASSERT_FALSE(view.empty());
    EXPECT_EQ(slot_of(view, 2), nullptr) << "a slot without a worker is not listed";
    auto m = scrape(ip0, srv.port());
    EXPECT_EQ(value(m, "steerchat_http_requests_total{worker=\"2\"}"), -1);

    auto ctl = [&](const std::string& args) {
        return run_command(server_binary() + " ctl --port " + std::to_string(srv.port()) + " " +
                           args);
    };
    auto [rc, out] = ctl("workers 3");
    ASSERT_EQ(rc, 0) << out << srv.log();
    view = wait_slot(
        ip0, srv.port(), 2, [](const auto& s) { return s.at("state").as_string() == "serving"; },
        5s);
    EXPECT_EQ(state_of(view, 2), "serving") << boost::json::serialize(view);
    EXPECT_EQ(view.at("total").as_object().at("serving").to_number<int>(), 3);
    m = scrape(ip0, srv.port());
    EXPECT_GE(value(m, "steerchat_http_requests_total{worker=\"2\"}"), 0) << "its series appear";
    EXPECT_EQ(value(m, "steerchat_steer_buckets{worker=\"0\"}") +
                  value(m, "steerchat_steer_buckets{worker=\"1\"}") +
                  value(m, "steerchat_steer_buckets{worker=\"2\"}"),
              65537);

    std::tie(rc, out) = ctl("workers 2");
    ASSERT_EQ(rc, 0) << out << srv.log();
    view = host_view(ip0, srv.port());
    for (int i = 0; i < 250 && slot_of(view, 2) != nullptr; ++i) {
        std::this_thread::sleep_for(20ms);
        view = host_view(ip0, srv.port());
    }
    EXPECT_EQ(slot_of(view, 2), nullptr) << "a removed slot leaves the host view\n"
                                         << boost::json::serialize(view);
    m = scrape(ip0, srv.port());
    EXPECT_EQ(value(m, "steerchat_http_requests_total{worker=\"2\"}"), -1);
    EXPECT_EQ(value(m, "steerchat_worker_restarts_total{worker=\"2\"}"), -1);
    EXPECT_EQ(value(m, "steerchat_steer_buckets{worker=\"2\"}"), -1);
}
