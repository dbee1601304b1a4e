// steerchat-bench connect: new WebSocket connections as fast as the server takes them, with
// --concurrency in flight (split over the threads). Each slot loops: socket, bind the next source
// address (cycling through 127.2.0.0-127.254.255.255 from a random start, so consecutive runs do
// not reuse 4-tuples), connect, upgrade, check the 101, then end it: RST (SO_LINGER 0) by
// default, so neither end keeps a TIME_WAIT, or a Close handshake (--close clean). A connection
// counts when its connect() started inside the window; latency is connect() start to 101.
// --tls: the TLS handshake comes first (part of the latency). --resume: each slot keeps one source
// address (steering sends it to the same worker every time, where its session is cached) and
// offers its previous connection's session; how many the server resumed is counted.
#include <fmt/format.h>

#include <boost/json.hpp>
#include <random>
#include <string>

#include "scenarios.hpp"
#include "ws_client.hpp"

namespace steerchat::bench {

namespace {

constexpr std::int64_t kDrainNs = 2 * kNsPerSec;  // in-flight handshakes after the window

class ConnectWorker;

class ConnectClient final : public WsClient {
  public:
    ConnectClient(ConnectWorker& w, ClientEnv& env, std::uint32_t address)
        : WsClient(env), w_(w), address_(address) {}
    std::uint32_t address() const noexcept { return address_; }

  protected:
    void on_open(std::int64_t now) override;
    bool on_text(std::string_view, std::int64_t) override { return true; }
    void on_failed(std::string_view what, Phase was) override;
    void on_closed() override;

  private:
    ConnectWorker& w_;
    std::uint32_t address_;  // --resume: the slot's one source address
};

struct alignas(64) ConnectCounters {
    std::atomic<std::uint64_t> completed{0};  // 101 received (all, warm-up included)
    std::atomic<std::uint64_t> errors{0};
    std::atomic<std::uint64_t> active{0};  // slots with a connection in progress
};

class ConnectWorker : public ConnectCounters {
  public:
    ConnectWorker(const Options& o, std::uint32_t index, std::uint32_t slots,
                  const tcp::endpoint& target, std::uint64_t first_address)
        : opt(o),
          env(io, target, o.path, 4096, random_seed(index)),
          next_address_(first_address + index),
          step_(o.threads) {
        for (std::uint32_t k = 0; k < slots; ++k) {
            const std::uint64_t a = first_address + index + std::uint64_t{k} * o.threads;
            slots_.push_back(std::make_unique<ConnectClient>(
                *this, env,
                kConnectSourceBase + static_cast<std::uint32_t>(a % kConnectSourceSpan)));
        }
    }

    void begin(Plan p) {
        plan = p;
        active.store(slots_.size(), std::memory_order_relaxed);
        for (auto& c : slots_)
            start(*c);
    }
    // The slot is free again: start its next connection unless the window is over.
    void next(ConnectClient& c) {
        if (stopping_ || now_ns() >= plan.measure_end) {
            active.fetch_sub(1, std::memory_order_relaxed);
            return;
        }
        start(c);
    }
    // After an error: not from inside the failing call (a synchronous failure would recurse).
    void next_later(ConnectClient& c) {
        asio::post(io, [this, &c] { next(c); });
    }
    void record(std::int64_t started, std::int64_t latency, bool resumed) {
        completed.store(++completed_, std::memory_order_relaxed);
        if (plan.in_window(started)) {
            tally.hist.record(latency);
            ++window_completed;
            if (resumed) ++window_resumed;
        }
    }
    void error(std::int64_t started, std::string_view what) {
        tally.error(what);
        errors.store(tally.errors, std::memory_order_relaxed);
        if (plan.in_window(started)) ++window_errors;
    }
    // Drops whatever is still in flight (after the drain period).
    void abort_all() {
        stopping_ = true;
        for (auto& c : slots_)
            if (c->phase() != WsClient::Phase::closed && c->phase() != WsClient::Phase::idle) {
                ++unfinished;
                c->drop(true);
            }
    }

    const Options& opt;
    asio::io_context io{1};
    ClientEnv env;
    Plan plan;
    Tally tally;  // hist, errors (all, warm-up included), first_error
    std::uint64_t window_completed = 0;
    std::uint64_t window_errors = 0;
    std::uint64_t window_resumed = 0;  // TLS sessions the server resumed
    std::uint64_t unfinished = 0;

  private:
    void start(ConnectClient& c) {
        if (opt.resume) return c.open(c.address());
        const std::uint64_t a = next_address_;
        next_address_ += step_;
        c.open(kConnectSourceBase + static_cast<std::uint32_t>(a % kConnectSourceSpan));
    }

    std::vector<std::unique_ptr<ConnectClient>> slots_;
    std::uint64_t next_address_;
    std::uint64_t step_;
    std::uint64_t completed_ = 0;
    bool stopping_ = false;
};

void ConnectClient::on_open(std::int64_t now) {
    w_.record(opened_at(), now - opened_at(), tls_resumed());
    if (w_.opt.close == CloseMode::clean) return close();  // on_closed() continues
    drop(true);
    w_.next(*this);
}

void ConnectClient::on_closed() {
    w_.next(*this);
}

void ConnectClient::on_failed(std::string_view what, Phase) {
    w_.error(opened_at(), what);
    w_.next_later(*this);
}

}  // namespace

int run_connect(const Options& opt) {
    const tcp::endpoint target = loopback_target(opt.host, opt.port);
    raise_nofile(std::uint64_t{opt.concurrency} + 64);
    const ServerTree server(opt.server_pids);
    server.check_alive();
    using W = ConnectWorker;

    std::random_device rd;
    const std::uint64_t first_address = (std::uint64_t{rd()} << 32 | rd()) % kConnectSourceSpan;
    IoThreads<W> pool;
    for (std::uint32_t t = 0; t < opt.threads; ++t) {
        const std::uint32_t slots =
            opt.concurrency / opt.threads + (t < opt.concurrency % opt.threads ? 1 : 0);
        pool.workers.push_back(std::make_unique<W>(opt, t, slots, target, first_address));
    }
    pool.start();

    fmt::print(stderr,
               "steerchat-bench connect: {} in flight on {}, close by {}, {} s, {} thread(s), "
               "target {}\n",
               opt.concurrency, opt.path, opt.close == CloseMode::rst ? "RST" : "Close handshake",
               opt.duration, opt.threads, opt.host + ":" + std::to_string(opt.port));

    const Plan plan = Plan::from_now(opt.duration);
    sleep_until_ns(plan.start);
    pool.post_all([plan](W& w) { w.begin(plan); });
    std::uint64_t last_completed = 0, last_errors = 0;
    const WindowCpu cpu = measure_window(plan, server, [&](double at, std::string_view phase) {
        const std::uint64_t c = pool.sum(&W::completed), e = pool.sum(&W::errors);
        fmt::print(stderr, "  [{:6.1f} s] {:<8} connections/s {:>8}  errors/s {:>6}\n", at, phase,
                   c - last_completed, e - last_errors);
        last_completed = c;
        last_errors = e;
    });

    // Let the handshakes started inside the window finish (bounded), then drop the rest.
    wait_until(plan.measure_end + kDrainNs, [&] { return pool.sum(&W::active) == 0; });
    pool.post_all([](W& w) { w.abort_all(); });
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    pool.stop();

    const Tally t = pool.tally();
    const std::uint64_t completed = pool.sum(&W::window_completed);
    const std::uint64_t window_errors = pool.sum(&W::window_errors);
    const std::uint64_t unfinished = pool.sum(&W::unfinished);
    const std::uint64_t resumed = pool.sum(&W::window_resumed);
    const double dur = plan.window_s();
    const double rate = static_cast<double>(completed) / dur;

    fmt::print("connect: {} in flight, close by {}, {:.1f} s measured\n", opt.concurrency,
               opt.close == CloseMode::rst ? "RST" : "Close handshake", dur);
    fmt::print("  connections    {:12.0f} /s   ({} completed in the window)\n", rate, completed);
    fmt::print("  handshake ms   {}\n", latency_text(t.hist));
    if (opt.tls)
        fmt::print("  TLS            {} of {} sessions resumed{}\n", resumed, completed,
                   opt.resume ? "" : " (no --resume: full handshakes)");
    cpu.print(server, "connections", completed);
    if (t.errors)
        fmt::print("  errors: {} ({} in the window; first: {})\n", t.errors, window_errors,
                   t.first_error);
    if (unfinished) fmt::print("  unfinished after the drain: {}\n", unfinished);

    if (!opt.json_file.empty()) {
        boost::json::object j;
        j["scenario"] = "connect";
        j["protocol"] = protocol_name(opt.protocol);
        j["path"] = opt.path;
        j["concurrency"] = opt.concurrency;
        j["close"] = opt.close == CloseMode::rst ? "rst" : "clean";
        j["threads"] = opt.threads;
        j["duration_s"] = dur;
        j["connections"] = completed;
        j["connections_per_s"] = rate;
        j["handshake_latency_ms"] = latency_json(t.hist);
        j["errors"] = t.errors;
        j["window_errors"] = window_errors;
        j["first_error"] = t.first_error;
        j["unfinished"] = unfinished;
        j["resume"] = opt.resume;
        j["resumed"] = resumed;
        j["resumed_ratio"] =
            completed > 0 ? static_cast<double>(resumed) / static_cast<double>(completed) : 0.0;
        cpu.to_json(j, server, "connections_per_server_cpu_s", completed);
        // Includes the SYN handling the kernel charges to the load generator (see HostCpu).
        j["connections_per_host_cpu_s"] =
            cpu.host_busy_s > 0 ? static_cast<double>(completed) / cpu.host_busy_s : 0.0;
        write_json(opt.json_file, j);
    }
    return completed > 0 ? 0 : 1;
}

}  // namespace steerchat::bench
