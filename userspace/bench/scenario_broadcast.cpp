// steerchat-bench broadcast: room broadcast over the native protocol or Socket.IO (see
// steerchat_bench.cpp for the accounting).
//
// Socket.IO (Engine.IO v4 over a WebSocket, no long-polling): after the 101 the server sends
// `0{"sid":...}`, we send `40` and wait for `40{...}`; the server's `2` is answered with `3`
// whenever it comes. Login `42["createsession",{"email":NAME}]` -> `42["accessgranted",[...]]`;
// join `421["join",ROOM]` -> `431[{..."ok":true...}]`; say `42["say",{"room":ROOM,"text":TEXT}]`
// -> every member gets `42["message",{..."text":TEXT...}]`. Other events are ignored.
#include <fmt/format.h>

#include <boost/json.hpp>
#include <cstring>
#include <optional>
#include <string>

#include "scenarios.hpp"
#include "ws_client.hpp"

namespace steerchat::bench {

namespace {

constexpr std::int64_t kStragglerNs = kNsPerSec;
constexpr std::int64_t kCloseWaitNs = kNsPerSec;
constexpr std::size_t kMaxQueuedWrite = 256 * 1024;   // a sender this far behind skips a send
constexpr std::size_t kSetupInflightPerThread = 128;  // clients in setup at once, per thread

std::string json_string(std::string_view s) {
    return boost::json::serialize(boost::json::value(boost::json::string(s)));
}

class BroadcastWorker;

class BroadcastClient final : public WsClient {
  public:
    BroadcastClient(BroadcastWorker& w, ClientEnv& env, std::uint32_t id, std::uint32_t room)
        : WsClient(env), w_(w), id_(id), room_(room) {}

    void start();
    void send_say(std::int64_t ts, bool in_window);
    void begin_close();
    bool ready() const noexcept { return app_ == App::ready; }

  protected:
    void on_open(std::int64_t now) override;
    bool on_text(std::string_view payload, std::int64_t now) override;
    void on_failed(std::string_view what, Phase was) override;
    void on_closed() override { ended(); }

  private:
    enum class App : std::uint8_t { eio_open, sio_connect, login, join, ready };
    void setup_native(std::string_view payload);
    void setup_sio(std::string_view payload);
    void setup_failed(const std::string& what);
    void ended();

    BroadcastWorker& w_;
    std::uint32_t id_;
    std::uint32_t room_;
    App app_ = App::login;
    std::uint64_t seq_ = 0;
    bool ended_ = false;
};

struct alignas(64) BroadcastCounters {
    std::atomic<std::uint64_t> ready{0};
    std::atomic<std::uint64_t> closed{0};
    std::atomic<std::uint64_t> sends{0};
    std::atomic<std::uint64_t> deliveries{0};
    std::atomic<std::uint64_t> window_expected{0};
    std::atomic<std::uint64_t> window_received{0};
};

class BroadcastWorker : public BroadcastCounters {
  public:
    BroadcastWorker(const Options& o, std::uint32_t index, Failure& f, const tcp::endpoint& target)
        : opt(o),
          failure(f),
          sio(o.protocol == Protocol::sio),
          env(io, target, o.path, read_buffer_size(o.clients), random_seed(index)),
          index_(index),
          pacer_(io) {
        for (std::uint32_t r = 0; r < o.rooms; ++r) {
            const std::string room = json_string(fmt::format("{}{}", o.room_prefix, r));
            say_prefix.push_back(sio ? fmt::format(R"(42["say",{{"room":{},"text":")", room)
                                     : fmt::format(R"({{"type":"say","room":{},"text":")", room));
            join_frame.push_back(sio ? fmt::format(R"(421["join",{}])", room)
                                     : fmt::format(R"({{"type":"join","room":{}}})", room));
        }
        members.resize(o.rooms);
        for (std::uint32_t i = 0; i < o.clients; ++i)
            ++members[i % o.rooms];
        for (std::uint32_t i = index; i < o.clients; i += o.threads) {
            conns_.push_back(std::make_unique<BroadcastClient>(*this, env, i, i % o.rooms));
            if (i < *o.senders) senders_.push_back(conns_.back().get());
        }
    }

    // On the io thread.
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
        if (senders_.empty()) return;
        const double interval = 1e9 / (opt.rate * static_cast<double>(senders_.size()));
        // Spread this thread's senders over the interval; threads are offset from each other.
        const double offset = interval * static_cast<double>(index_) / opt.threads;
        pacer_.start(plan, interval, offset, [this](std::uint64_t g, std::int64_t ts) {
            senders_[g % senders_.size()]->send_say(ts, plan.in_window(ts));
            sends.store(sends_, std::memory_order_relaxed);
            window_expected.store(window_expected_, std::memory_order_relaxed);
        });
    }
    void begin_close() {
        closing = true;
        pacer_.stop();
        max_lag = pacer_.max_lag();
        for (auto& c : conns_)
            c->begin_close();
    }

    const Options& opt;
    Failure& failure;
    const bool sio;
    asio::io_context io{1};
    ClientEnv env;
    Plan plan;
    std::vector<std::string> say_prefix;
    std::vector<std::string> join_frame;
    std::vector<std::uint64_t> members;  // clients per room
    std::array<char, 512> scratch{};     // a say being built

    // Thread-local results (read by main after the thread ended).
    Histogram hist;
    std::uint64_t window_sends = 0;
    std::uint64_t skipped = 0;      // sends skipped: the connection's write queue was full
    std::uint64_t lost = 0;         // connections dropped after setup
    std::uint64_t errors = 0;       // error frames received after setup
    std::uint64_t foreign = 0;      // message frames without our "t=" text
    std::uint64_t pings = 0;        // Engine.IO pings answered
    std::int64_t max_lag = 0;       // worst lateness of the pacer behind schedule, in window
    std::string first_lost;         // why the first connection was dropped
    std::string first_error;        // the first error frame
    std::uint64_t deliveries_ = 0;  // mirrored to deliveries
    std::uint64_t window_received_ = 0;
    std::uint64_t window_expected_ = 0;
    std::uint64_t sends_ = 0;
    bool closing = false;

  private:
    std::uint32_t index_;
    std::vector<std::unique_ptr<BroadcastClient>> conns_;
    std::vector<BroadcastClient*> senders_;
    std::size_t next_setup_ = 0;
    Pacer pacer_;
};

void BroadcastClient::start() {
    app_ = w_.sio ? App::eio_open : App::login;
    open(kClientSourceBase + id_);
}

void BroadcastClient::on_open(std::int64_t) {
    if (w_.sio) return;  // the server speaks first
    send_text(fmt::format(R"({{"type":"login","name":{}}})",
                          json_string(fmt::format("{}{}", w_.opt.name_prefix, id_))));
}

void BroadcastClient::ended() {
    if (ended_) return;
    ended_ = true;
    w_.closed.fetch_add(1, std::memory_order_relaxed);
}

void BroadcastClient::on_failed(std::string_view what, Phase) {
    if (app_ == App::ready) {
        ++w_.lost;
        if (w_.first_lost.empty()) w_.first_lost = fmt::format("client {}: {}", id_, what);
    } else {
        w_.failure.set(
            fmt::format("client {} ({}{}) during setup: {}", id_, w_.opt.name_prefix, id_, what));
    }
    ended();
}

void BroadcastClient::setup_failed(const std::string& what) {
    fail(what);
}

bool BroadcastClient::on_text(std::string_view payload, std::int64_t now) {
    const std::string_view message_prefix =
        w_.sio ? std::string_view(R"(42["message",)") : std::string_view(R"({"type":"message")");
    if (payload.starts_with(message_prefix)) {
        // Hot path: a cheap scan for our text, no JSON parse.
        constexpr std::string_view kText = R"("text":"t=)";
        const auto at = payload.find(kText, message_prefix.size());
        std::uint64_t t = 0;
        std::string_view rest =
            at == std::string_view::npos ? std::string_view() : payload.substr(at + kText.size());
        if (at == std::string_view::npos || !take_number(rest, t)) {
            ++w_.foreign;
            return true;
        }
        ++w_.deliveries_;
        w_.deliveries.store(w_.deliveries_, std::memory_order_relaxed);
        const auto ts = static_cast<std::int64_t>(t);
        if (w_.plan.in_window(ts)) {
            w_.hist.record(now - ts);
            ++w_.window_received_;
            w_.window_received.store(w_.window_received_, std::memory_order_relaxed);
        }
        return true;
    }
    if (w_.sio && payload == "2") {  // Engine.IO ping
        ++w_.pings;
        send_text("3");
        return true;
    }
    const bool error = w_.sio ? payload.starts_with("44") || payload == "1"
                              : payload.starts_with(R"({"type":"error")");
    if (app_ == App::ready || phase() == Phase::closing) {
        if (error) {
            ++w_.errors;
            if (w_.first_error.empty()) w_.first_error = std::string(payload.substr(0, 300));
        }
        return true;  // presence and anything else: ignored
    }
    if (error) {
        const bool taken = payload.find(R"("name_taken")") != std::string_view::npos;
        setup_failed(fmt::format("server answered {}{}", payload.substr(0, 300),
                                 taken ? " (another client holds that name: a bench still "
                                         "running? use --name-prefix)"
                                       : ""));
        return false;
    }
    if (w_.sio)
        setup_sio(payload);
    else
        setup_native(payload);
    return is_open();
}

void BroadcastClient::setup_native(std::string_view payload) {
    if (app_ == App::login && payload.starts_with(R"({"type":"welcome")")) {
        app_ = App::join;
        send_text(w_.join_frame[room_]);
    } else if (app_ == App::join && payload.starts_with(R"({"type":"joined")")) {
        app_ = App::ready;
        w_.on_ready();
    }
}

void BroadcastClient::setup_sio(std::string_view payload) {
    switch (app_) {
        case App::eio_open:
            if (payload.starts_with("0{")) {
                app_ = App::sio_connect;
                send_text("40");
            }
            break;
        case App::sio_connect:
            if (payload.starts_with("40")) {
                app_ = App::login;
                send_text(fmt::format(R"(42["createsession",{{"email":{}}}])",
                                      json_string(fmt::format("{}{}", w_.opt.name_prefix, id_))));
            }
            break;
        case App::login:
            if (payload.starts_with(R"(42["accessgranted")")) {
                app_ = App::join;
                send_text(w_.join_frame[room_]);
            }
            break;
        case App::join:
            if (payload.starts_with("431[")) {
                if (payload.find(R"("ok":true)") == std::string_view::npos)
                    return setup_failed(fmt::format("join refused: {}", payload.substr(0, 300)));
                app_ = App::ready;
                w_.on_ready();
            }
            break;
        case App::ready:
            break;
    }
}

void BroadcastClient::send_say(std::int64_t ts, bool in_window) {
    if (app_ != App::ready || !is_open()) return;
    if (queued() > kMaxQueuedWrite) {
        ++w_.skipped;
        return;
    }
    const std::string& prefix = w_.say_prefix[room_];
    char* const begin = w_.scratch.data();
    char* out = std::copy(prefix.begin(), prefix.end(), begin);
    out = fmt::format_to(out, "t={} s={} seq={}\"}}", ts, id_, seq_++);
    if (w_.sio) *out++ = ']';
    send(ws::Opcode::text, ws::ByteView(reinterpret_cast<const std::uint8_t*>(begin),
                                        static_cast<std::size_t>(out - begin)));
    ++w_.sends_;
    if (in_window) {
        ++w_.window_sends;
        w_.window_expected_ += w_.members[room_];
    }
}

void BroadcastClient::begin_close() {
    if (is_open() && app_ == App::ready) return close();
    if (phase() == Phase::closing || phase() == Phase::closed) return;
    drop(false);
    ended();
}

}  // namespace

int run_broadcast(const Options& opt) {
    const tcp::endpoint target = loopback_target(opt.host, opt.port);
    raise_nofile(std::uint64_t{opt.clients} + 64);
    const ServerTree server(opt.server_pids);
    server.check_alive();

    Failure failure;
    IoThreads<BroadcastWorker> pool;
    for (std::uint32_t t = 0; t < opt.threads; ++t)
        pool.workers.push_back(std::make_unique<BroadcastWorker>(opt, t, failure, target));
    pool.start();
    using W = BroadcastWorker;

    // Setup.
    const std::uint32_t senders = *opt.senders;
    fmt::print(stderr,
               "steerchat-bench broadcast: {} clients ({} on {}), {} rooms, {} senders at {}/s, "
               "{} s, {} thread(s), target {}\n",
               opt.clients, protocol_name(opt.protocol), opt.path, opt.rooms, senders, opt.rate,
               opt.duration, opt.threads, opt.host + ":" + std::to_string(opt.port));
    const std::int64_t setup_start = now_ns();
    pool.post_all([](W& w) { w.begin_setup(); });
    const auto setup_deadline = setup_start + static_cast<std::int64_t>(opt.connect_timeout * 1e9);
    std::int64_t next_report = setup_start + kNsPerSec;
    while (pool.sum(&W::ready) < opt.clients) {
        if (failure.failed.load(std::memory_order_acquire)) {
            pool.stop();
            die(fmt::format("setup failed after {} of {} clients were ready: {}",
                            pool.sum(&W::ready), opt.clients, failure.first));
        }
        const std::int64_t now = now_ns();
        if (now > setup_deadline) {
            pool.stop();
            die(fmt::format("setup timed out after {} s: {} of {} clients logged in and joined",
                            opt.connect_timeout, pool.sum(&W::ready), opt.clients));
        }
        if (now >= next_report) {
            fmt::print(stderr, "  setup: {} / {} clients ready\n", pool.sum(&W::ready),
                       opt.clients);
            next_report += kNsPerSec;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    const double setup_s = static_cast<double>(now_ns() - setup_start) / 1e9;
    fmt::print(stderr, "  setup: {} clients ready in {:.2f} s\n", opt.clients, setup_s);

    // Warm-up + measurement.
    Plan plan;
    plan.start = now_ns() + 10'000'000;
    plan.measure_start = plan.start + kWarmupNs;
    plan.measure_end = plan.measure_start + static_cast<std::int64_t>(opt.duration * 1e9);
    pool.post_all([plan](W& w) { w.begin_sending(plan); });

    CpuSample cpu0, cpu1;
    double own0 = 0, own1 = 0;
    HostCpu host0, host1;
    std::uint64_t last_deliveries = 0, last_sends = 0;
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
        const std::uint64_t d = pool.sum(&W::deliveries), s = pool.sum(&W::sends);
        const double at = static_cast<double>(tick - plan.start) / 1e9;
        fmt::print(stderr, "  [{:6.1f} s] {:<8} sends/s {:>9}  deliveries/s {:>10}\n", at,
                   tick <= plan.measure_start ? "warm-up" : "measure", s - last_sends,
                   d - last_deliveries);
        last_deliveries = d;
        last_sends = s;
        tick += kNsPerSec;
    }
    sleep_until_ns(plan.measure_end);
    cpu1 = server.cpu();
    own1 = own_cpu_seconds();
    host1 = host_cpu();

    // Stragglers: until every expected delivery of the window arrived, at most 1 s.
    const std::int64_t straggle_end = plan.measure_end + kStragglerNs;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));  // pacers see the end
    while (now_ns() < straggle_end && pool.sum(&W::window_received) < pool.sum(&W::window_expected))
        std::this_thread::sleep_for(std::chrono::milliseconds(5));

    // Close.
    pool.post_all([](W& w) { w.begin_close(); });
    const std::int64_t close_end = now_ns() + kCloseWaitNs;
    while (now_ns() < close_end && pool.sum(&W::closed) < opt.clients)
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    pool.stop();

    // Summary.
    Histogram hist;
    std::uint64_t window_sends = 0, expected = 0, received = 0, skipped = 0, lost = 0, errors = 0,
                  foreign = 0, pings = 0;
    std::int64_t max_lag = 0;
    std::string first_lost, first_error;
    for (auto& w : pool.workers) {
        hist.merge(w->hist);
        window_sends += w->window_sends;
        expected += w->window_expected_;
        received += w->window_received_;
        skipped += w->skipped;
        lost += w->lost;
        errors += w->errors;
        foreign += w->foreign;
        pings += w->pings;
        max_lag = std::max(max_lag, w->max_lag);
        if (first_lost.empty()) first_lost = w->first_lost;
        if (first_error.empty()) first_error = w->first_error;
    }
    const double dur = static_cast<double>(plan.measure_end - plan.measure_start) / 1e9;
    const double server_cpu_s = server.seconds(cpu1.ticks - cpu0.ticks);
    const double loss =
        expected ? 1.0 - static_cast<double>(received) / static_cast<double>(expected) : 0.0;
    const double deliveries_per_s = static_cast<double>(received) / dur;
    const double own_cpu = own1 - own0;

    fmt::print("broadcast ({}): {} clients, {} rooms, {} senders x {}/s, {:.1f} s measured\n",
               protocol_name(opt.protocol), opt.clients, opt.rooms, senders, opt.rate, dur);
    fmt::print(
        "  offered        {:12.0f} msgs/s   (target {:.0f}; {} skipped: write queue full; "
        "pacer lag max {:.2f} ms)\n",
        static_cast<double>(window_sends) / dur, opt.rate * senders, skipped, ms(max_lag));
    fmt::print("  deliveries     {:12.0f} /s\n", deliveries_per_s);
    fmt::print("  expected       {:12}   received {}   loss {:.4f} %\n", expected, received,
               loss * 100);
    fmt::print("  latency ms     {}\n", latency_text(hist));
    if (!server.empty())
        fmt::print(
            "  server CPU     {:12.2f} s ({} processes; {:.0f} % of one core)   "
            "deliveries per server CPU-s {:.0f}\n",
            server_cpu_s, cpu1.processes, server_cpu_s / dur * 100,
            server_cpu_s > 0 ? static_cast<double>(received) / server_cpu_s : 0.0);
    fmt::print("  bench CPU      {:12.2f} s ({:.0f} % of one core)\n", own_cpu,
               own_cpu / dur * 100);
    fmt::print("  host CPU       {:12.2f} s busy, all CPUs ({:.2f} s softirq)\n",
               host_cpu_seconds(host0, host1).first, host_cpu_seconds(host0, host1).second);
    if (lost) fmt::print("  connections lost during the run: {} (first: {})\n", lost, first_lost);
    if (errors) fmt::print("  error frames: {} (first: {})\n", errors, first_error);
    if (foreign) fmt::print("  messages without our timestamp: {}\n", foreign);

    if (!opt.json_file.empty()) {
        boost::json::object j;
        j["scenario"] = "broadcast";
        j["protocol"] = protocol_name(opt.protocol);
        j["path"] = opt.path;
        j["clients"] = opt.clients;
        j["rooms"] = opt.rooms;
        j["senders"] = senders;
        j["rate_per_sender"] = opt.rate;
        j["threads"] = opt.threads;
        j["duration_s"] = dur;
        j["setup_s"] = setup_s;
        j["offered_msgs_per_s"] = static_cast<double>(window_sends) / dur;
        j["target_msgs_per_s"] = opt.rate * senders;
        j["sends"] = window_sends;
        j["skipped_sends"] = skipped;
        j["pacer_lag_max_ms"] = ms(max_lag);
        j["expected_deliveries"] = expected;
        j["received_deliveries"] = received;
        j["loss_ratio"] = loss;
        j["deliveries_per_s"] = deliveries_per_s;
        j["latency_ms"] = latency_json(hist);
        if (!server.empty()) {
            j["server_pids"] = server.roots_json();
            j["server_cpu_s"] = server_cpu_s;
            j["server_processes"] = cpu1.processes;
            j["deliveries_per_server_cpu_s"] =
                server_cpu_s > 0 ? static_cast<double>(received) / server_cpu_s : 0.0;
        }
        j["bench_cpu_s"] = own_cpu;
        j["host_cpu_busy_s"] = host_cpu_seconds(host0, host1).first;
        j["host_softirq_s"] = host_cpu_seconds(host0, host1).second;
        j["connections_lost"] = lost;
        j["error_frames"] = errors;
        j["first_lost"] = first_lost;
        j["first_error"] = first_error;
        j["foreign_messages"] = foreign;
        j["engineio_pings_answered"] = pings;
        write_json(opt.json_file, j);
    }
    return lost ? 1 : 0;
}

}  // namespace steerchat::bench
