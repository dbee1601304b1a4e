// steerchat-bench echo: C clients on /echo. A message is "t=<send ns> s=<client> q=<seq> " padded
// with 'x' to --size bytes; the echo's "t=" gives the round trip. Closed loop (--rate 0): every
// client sends its next message as soon as its echo arrives. Open loop (--rate X): the thread's
// pacer sends X per second per client whatever is outstanding. Accounting by send timestamp as in
// broadcast: expected = sends inside the window, received = their echoes (up to 1 s late).
#include <fmt/format.h>

#include <boost/json.hpp>
#include <cstring>
#include <string>

#include "scenarios.hpp"
#include "ws_client.hpp"

namespace steerchat::bench {

namespace {

constexpr std::int64_t kStragglerNs = kNsPerSec;
constexpr std::int64_t kCloseWaitNs = kNsPerSec;
constexpr std::size_t kMaxQueuedWrite = 256 * 1024;
constexpr std::size_t kSetupInflightPerThread = 128;

class EchoWorker;

class EchoClient final : public WsClient {
  public:
    EchoClient(EchoWorker& w, ClientEnv& env, std::uint32_t id) : WsClient(env), w_(w), id_(id) {}
    void start() { open(kClientSourceBase + id_); }
    void send_one(std::int64_t ts);
    void begin_close();

  protected:
    void on_open(std::int64_t now) override;
    bool on_text(std::string_view payload, std::int64_t now) override;
    void on_failed(std::string_view what, Phase was) override;
    void on_closed() override { ended(); }

  private:
    void ended();

    EchoWorker& w_;
    std::uint32_t id_;
    std::uint64_t seq_ = 0;
    bool ready_ = false;
    bool ended_ = false;
};

struct alignas(64) EchoCounters {
    std::atomic<std::uint64_t> ready{0};
    std::atomic<std::uint64_t> closed{0};
    std::atomic<std::uint64_t> sends{0};
    std::atomic<std::uint64_t> echoes{0};
    std::atomic<std::uint64_t> window_expected{0};
    std::atomic<std::uint64_t> window_received{0};
};

class EchoWorker : public EchoCounters {
  public:
    EchoWorker(const Options& o, std::uint32_t index, Failure& f, const tcp::endpoint& target)
        : opt(o),
          failure(f),
          env(io, target, o.path, read_buffer_size(o.clients), random_seed(index)),
          scratch(o.size + 64),
          index_(index),
          pacer_(io),
          kick_(io) {
        for (std::uint32_t i = index; i < o.clients; i += o.threads)
            conns_.push_back(std::make_unique<EchoClient>(*this, env, i));
    }

    void begin_setup() {
        for (std::size_t k = 0; k < std::min(kSetupInflightPerThread, conns_.size()); ++k)
            setup_next();
    }
    void setup_next() {
        if (next_setup_ < conns_.size()) conns_[next_setup_++]->start();
    }
    void on_ready() {
        ready.fetch_add(1, std::memory_order_relaxed);
        setup_next();
    }
    void begin_sending(Plan p) {
        plan = p;
        sending = true;
        if (conns_.empty()) return;
        if (opt.rate > 0) {
            const double interval = 1e9 / (opt.rate * static_cast<double>(conns_.size()));
            const double offset = interval * static_cast<double>(index_) / opt.threads;
            pacer_.start(plan, interval, offset, [this](std::uint64_t g, std::int64_t ts) {
                conns_[g % conns_.size()]->send_one(ts);
            });
            return;
        }
        kick_.expires_at(asio::steady_timer::time_point(std::chrono::nanoseconds(plan.start)));
        kick_.async_wait([this](const error_code& ec) {
            if (ec) return;
            for (auto& c : conns_)
                c->send_one(now_ns());
        });
    }
    void begin_close() {
        sending = false;
        pacer_.stop();
        kick_.cancel();
        max_lag = pacer_.max_lag();
        for (auto& c : conns_)
            c->begin_close();
    }
    void publish() {
        sends.store(sends_, std::memory_order_relaxed);
        echoes.store(echoes_, std::memory_order_relaxed);
        window_expected.store(window_sends, std::memory_order_relaxed);
        window_received.store(window_received_, std::memory_order_relaxed);
    }

    const Options& opt;
    Failure& failure;
    asio::io_context io{1};
    ClientEnv env;
    Plan plan;
    bool sending = false;
    std::vector<char> scratch;  // a message being built

    Histogram hist;
    std::uint64_t sends_ = 0;
    std::uint64_t echoes_ = 0;
    std::uint64_t window_sends = 0;
    std::uint64_t window_received_ = 0;
    std::uint64_t skipped = 0;
    std::uint64_t lost = 0;
    std::uint64_t foreign = 0;
    std::int64_t max_lag = 0;
    std::string first_lost;

  private:
    std::uint32_t index_;
    std::vector<std::unique_ptr<EchoClient>> conns_;
    std::size_t next_setup_ = 0;
    Pacer pacer_;
    asio::steady_timer kick_;
};

void EchoClient::on_open(std::int64_t) {
    ready_ = true;
    w_.on_ready();
}

void EchoClient::ended() {
    if (ended_) return;
    ended_ = true;
    w_.closed.fetch_add(1, std::memory_order_relaxed);
}

void EchoClient::on_failed(std::string_view what, Phase) {
    if (ready_) {
        ++w_.lost;
        if (w_.first_lost.empty()) w_.first_lost = fmt::format("client {}: {}", id_, what);
    } else {
        w_.failure.set(fmt::format("client {} during setup: {}", id_, what));
    }
    ended();
}

void EchoClient::send_one(std::int64_t ts) {
    if (!is_open()) return;
    if (queued() > kMaxQueuedWrite) {
        ++w_.skipped;
        return;
    }
    char* const begin = w_.scratch.data();
    char* out = fmt::format_to(begin, "t={} s={} q={} ", ts, id_, seq_++);
    const std::size_t used = static_cast<std::size_t>(out - begin);
    const std::size_t size = std::max<std::size_t>(w_.opt.size, used);
    std::memset(out, 'x', size - used);
    send(ws::Opcode::text, ws::ByteView(reinterpret_cast<const std::uint8_t*>(begin), size));
    ++w_.sends_;
    if (w_.plan.in_window(ts)) ++w_.window_sends;
    w_.publish();
}

bool EchoClient::on_text(std::string_view payload, std::int64_t now) {
    std::uint64_t t = 0;
    if (!payload.starts_with("t=")) {
        ++w_.foreign;
        return true;
    }
    payload.remove_prefix(2);
    if (!take_number(payload, t)) {
        ++w_.foreign;
        return true;
    }
    ++w_.echoes_;
    const auto ts = static_cast<std::int64_t>(t);
    if (w_.plan.in_window(ts)) {
        w_.hist.record(now - ts);
        ++w_.window_received_;
    }
    if (w_.opt.rate == 0 && w_.sending && now < w_.plan.measure_end)
        send_one(now_ns());  // closed loop
    else
        w_.publish();
    return true;
}

void EchoClient::begin_close() {
    if (is_open()) return close();
    if (phase() == Phase::closing || phase() == Phase::closed) return;
    drop(false);
    ended();
}

}  // namespace

int run_echo(const Options& opt) {
    const tcp::endpoint target = loopback_target(opt.host, opt.port);
    raise_nofile(std::uint64_t{opt.clients} + 64);
    const ServerTree server(opt.server_pids);
    server.check_alive();
    using W = EchoWorker;

    Failure failure;
    IoThreads<W> pool;
    for (std::uint32_t t = 0; t < opt.threads; ++t)
        pool.workers.push_back(std::make_unique<W>(opt, t, failure, target));
    pool.start();

    const std::string mode =
        opt.rate > 0 ? fmt::format("{}/s per client", opt.rate) : std::string("closed loop");
    fmt::print(stderr,
               "steerchat-bench echo: {} clients on {}, {} B messages, {}, {} s, {} thread(s), "
               "target {}\n",
               opt.clients, opt.path, opt.size, mode, opt.duration, opt.threads,
               opt.host + ":" + std::to_string(opt.port));
    const std::int64_t setup_start = now_ns();
    pool.post_all([](W& w) { w.begin_setup(); });
    const auto setup_deadline = setup_start + static_cast<std::int64_t>(opt.connect_timeout * 1e9);
    std::int64_t next_report = setup_start + kNsPerSec;
    while (pool.sum(&W::ready) < opt.clients) {
        if (failure.failed.load(std::memory_order_acquire)) {
            pool.stop();
            die(fmt::format("setup failed after {} of {} clients were open: {}",
                            pool.sum(&W::ready), opt.clients, failure.first));
        }
        const std::int64_t now = now_ns();
        if (now > setup_deadline) {
            pool.stop();
            die(fmt::format("setup timed out after {} s: {} of {} clients open",
                            opt.connect_timeout, pool.sum(&W::ready), opt.clients));
        }
        if (now >= next_report) {
            fmt::print(stderr, "  setup: {} / {} clients open\n", pool.sum(&W::ready), opt.clients);
            next_report += kNsPerSec;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    const double setup_s = static_cast<double>(now_ns() - setup_start) / 1e9;
    fmt::print(stderr, "  setup: {} clients open in {:.2f} s\n", opt.clients, setup_s);

    Plan plan;
    plan.start = now_ns() + 10'000'000;
    plan.measure_start = plan.start + kWarmupNs;
    plan.measure_end = plan.measure_start + static_cast<std::int64_t>(opt.duration * 1e9);
    pool.post_all([plan](W& w) { w.begin_sending(plan); });

    CpuSample cpu0, cpu1;
    double own0 = 0, own1 = 0;
    HostCpu host0, host1;
    std::uint64_t last_echoes = 0;
    std::int64_t tick = plan.start + kNsPerSec;
    bool measuring = false;
    while (tick <= plan.measure_end) {
        sleep_until_ns(measuring ? tick : std::min(tick, plan.measure_start));
        if (!measuring && now_ns() >= plan.measure_start) {
            measuring = true;
            cpu0 = server.cpu();
            own0 = own_cpu_seconds();
            host0 = host_cpu();
        }
        if (now_ns() < tick) continue;
        const std::uint64_t e = pool.sum(&W::echoes);
        fmt::print(stderr, "  [{:6.1f} s] {:<8} round trips/s {:>9}\n",
                   static_cast<double>(tick - plan.start) / 1e9,
                   tick <= plan.measure_start ? "warm-up" : "measure", e - last_echoes);
        last_echoes = e;
        tick += kNsPerSec;
    }
    sleep_until_ns(plan.measure_end);
    cpu1 = server.cpu();
    own1 = own_cpu_seconds();
    host1 = host_cpu();

    const std::int64_t straggle_end = plan.measure_end + kStragglerNs;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    while (now_ns() < straggle_end && pool.sum(&W::window_received) < pool.sum(&W::window_expected))
        std::this_thread::sleep_for(std::chrono::milliseconds(5));

    pool.post_all([](W& w) { w.begin_close(); });
    const std::int64_t close_end = now_ns() + kCloseWaitNs;
    while (now_ns() < close_end && pool.sum(&W::closed) < opt.clients)
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    pool.stop();

    Histogram hist;
    std::uint64_t expected = 0, received = 0, skipped = 0, lost = 0, foreign = 0;
    std::int64_t max_lag = 0;
    std::string first_lost;
    for (auto& w : pool.workers) {
        hist.merge(w->hist);
        expected += w->window_sends;
        received += w->window_received_;
        skipped += w->skipped;
        lost += w->lost;
        foreign += w->foreign;
        max_lag = std::max(max_lag, w->max_lag);
        if (first_lost.empty()) first_lost = w->first_lost;
    }
    const double dur = static_cast<double>(plan.measure_end - plan.measure_start) / 1e9;
    const double server_cpu_s = server.seconds(cpu1.ticks - cpu0.ticks);
    const double loss =
        expected ? 1.0 - static_cast<double>(received) / static_cast<double>(expected) : 0.0;
    const double rtps = static_cast<double>(received) / dur;
    const double own_cpu = own1 - own0;
    const double per_cpu = server_cpu_s > 0 ? static_cast<double>(received) / server_cpu_s : 0.0;

    fmt::print("echo: {} clients, {} B, {}, {:.1f} s measured\n", opt.clients, opt.size, mode, dur);
    fmt::print("  round trips    {:12.0f} /s   ({} sent in the window, {} echoed, loss {:.4f} %)\n",
               rtps, expected, received, loss * 100);
    if (opt.rate > 0)
        fmt::print("  offered        {:12.0f} /s   ({} skipped; pacer lag max {:.2f} ms)\n",
                   opt.rate * opt.clients, skipped, ms(max_lag));
    fmt::print("  latency ms     {}\n", latency_text(hist));
    if (!server.empty())
        fmt::print(
            "  server CPU     {:12.2f} s ({} processes; {:.0f} % of one core)   "
            "round trips per server CPU-s {:.0f}\n",
            server_cpu_s, cpu1.processes, server_cpu_s / dur * 100, per_cpu);
    fmt::print("  bench CPU      {:12.2f} s ({:.0f} % of one core)\n", own_cpu,
               own_cpu / dur * 100);
    fmt::print("  host CPU       {:12.2f} s busy, all CPUs ({:.2f} s softirq)\n",
               host_cpu_seconds(host0, host1).first, host_cpu_seconds(host0, host1).second);
    if (lost) fmt::print("  connections lost during the run: {} (first: {})\n", lost, first_lost);
    if (foreign) fmt::print("  messages without our timestamp: {}\n", foreign);

    if (!opt.json_file.empty()) {
        boost::json::object j;
        j["scenario"] = "echo";
        j["protocol"] = "native";
        j["path"] = opt.path;
        j["clients"] = opt.clients;
        j["size"] = opt.size;
        j["rate_per_client"] = opt.rate;  // 0: closed loop
        j["threads"] = opt.threads;
        j["duration_s"] = dur;
        j["setup_s"] = setup_s;
        j["sends"] = expected;
        j["skipped_sends"] = skipped;
        j["pacer_lag_max_ms"] = ms(max_lag);
        j["round_trips"] = received;
        j["loss_ratio"] = loss;
        j["round_trips_per_s"] = rtps;
        j["latency_ms"] = latency_json(hist);
        if (!server.empty()) {
            j["server_pids"] = server.roots_json();
            j["server_cpu_s"] = server_cpu_s;
            j["server_processes"] = cpu1.processes;
            j["round_trips_per_server_cpu_s"] = per_cpu;
        }
        j["bench_cpu_s"] = own_cpu;
        j["host_cpu_busy_s"] = host_cpu_seconds(host0, host1).first;
        j["host_softirq_s"] = host_cpu_seconds(host0, host1).second;
        j["connections_lost"] = lost;
        j["first_lost"] = first_lost;
        j["foreign_messages"] = foreign;
        write_json(opt.json_file, j);
    }
    return lost ? 1 : 0;
}

}  // namespace steerchat::bench
