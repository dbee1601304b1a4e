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

constexpr std::size_t kMaxQueuedEchoWrite = 256 * 1024;

class EchoWorker;

class EchoClient final : public SessionClient {
  public:
    EchoClient(EchoWorker& w, ClientEnv& env, std::uint32_t id);
    void send_one(std::int64_t ts);

  protected:
    void on_open(std::int64_t now) override;
    bool on_text(std::string_view payload, std::int64_t now) override;
    void on_failed(std::string_view what, Phase was) override;

  private:
    EchoWorker& w_;
    std::uint64_t seq_ = 0;
    bool ready_ = false;
};

class EchoWorker : public ClientCounters {
  public:
    EchoWorker(const Options& o, std::uint32_t index, Failure& f, const tcp::endpoint& target)
        : opt(o),
          failure(f),
          env(io, target, o.path, read_buffer_size(o.clients), random_seed(index)),
          scratch(o.size + 64),
          index_(index),
          setup_(conns_, ready),
          pacer_(io),
          kick_(io) {
        for (std::uint32_t i = index; i < o.clients; i += o.threads)
            conns_.push_back(std::make_unique<EchoClient>(*this, env, i));
    }

    void begin_setup() { setup_.begin(); }
    void on_ready() { setup_.on_ready(); }
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
        tally.max_lag = pacer_.max_lag();
        for (auto& c : conns_)
            c->begin_close();
    }
    void publish() {
        sends.store(sends_, std::memory_order_relaxed);
        received.store(echoes_, std::memory_order_relaxed);
        window_expected.store(tally.window_sends, std::memory_order_relaxed);
        window_received.store(tally.window_received, std::memory_order_relaxed);
    }

    const Options& opt;
    Failure& failure;
    asio::io_context io{1};
    ClientEnv env;
    Plan plan;
    bool sending = false;
    std::vector<char> scratch;  // a message being built

    Tally tally;  // every send in the window expects its echo: window_sends is what is expected
    std::uint64_t sends_ = 0;
    std::uint64_t echoes_ = 0;  // mirrored to received

  private:
    std::uint32_t index_;
    std::vector<std::unique_ptr<EchoClient>> conns_;
    SetupQueue<EchoClient> setup_;
    Pacer pacer_;
    asio::steady_timer kick_;
};

EchoClient::EchoClient(EchoWorker& w, ClientEnv& env, std::uint32_t id)
    : SessionClient(env, id, w.closed), w_(w) {}

void EchoClient::on_open(std::int64_t) {
    ready_ = true;
    w_.on_ready();
}

void EchoClient::on_failed(std::string_view what, Phase) {
    if (ready_)
        w_.tally.lose(id_, what);
    else
        w_.failure.set(fmt::format("client {} during setup: {}", id_, what));
    ended();
}

void EchoClient::send_one(std::int64_t ts) {
    if (!is_open()) return;
    if (queued() > kMaxQueuedEchoWrite) {
        ++w_.tally.skipped;
        return;
    }
    char* const begin = w_.scratch.data();
    char* out = fmt::format_to(begin, "t={} s={} q={} ", ts, id_, seq_++);
    const std::size_t used = static_cast<std::size_t>(out - begin);
    const std::size_t size = std::max<std::size_t>(w_.opt.size, used);
    std::memset(out, 'x', size - used);
    send(ws::Opcode::text, ws::ByteView(reinterpret_cast<const std::uint8_t*>(begin), size));
    ++w_.sends_;
    if (w_.plan.in_window(ts)) ++w_.tally.window_sends;
    w_.publish();
}

bool EchoClient::on_text(std::string_view payload, std::int64_t now) {
    std::uint64_t t = 0;
    if (!payload.starts_with("t=")) {
        ++w_.tally.foreign;
        return true;
    }
    payload.remove_prefix(2);
    if (!take_number(payload, t)) {
        ++w_.tally.foreign;
        return true;
    }
    ++w_.echoes_;
    const auto ts = static_cast<std::int64_t>(t);
    if (w_.plan.in_window(ts)) {
        w_.tally.hist.record(now - ts);
        ++w_.tally.window_received;
    }
    if (w_.opt.rate == 0 && w_.sending && now < w_.plan.measure_end)
        send_one(now_ns());  // closed loop
    else
        w_.publish();
    return true;
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
    const double setup_s = set_up_clients(pool, failure, opt, "open", "open");

    const Plan plan = Plan::from_now(opt.duration);
    pool.post_all([plan](W& w) { w.begin_sending(plan); });
    std::uint64_t last_echoes = 0;
    const WindowCpu cpu = measure_window(plan, server, [&](double at, std::string_view phase) {
        const std::uint64_t e = pool.sum(&W::received);
        fmt::print(stderr, "  [{:6.1f} s] {:<8} round trips/s {:>9}\n", at, phase, e - last_echoes);
        last_echoes = e;
    });

    drain_and_close(pool, plan, opt.clients);

    const Tally t = pool.tally();
    const std::uint64_t expected = t.window_sends, received = t.window_received;
    const double dur = plan.window_s();
    const double loss = loss_ratio(expected, received);
    const double rtps = static_cast<double>(received) / dur;

    fmt::print("echo: {} clients, {} B, {}, {:.1f} s measured\n", opt.clients, opt.size, mode, dur);
    fmt::print("  round trips    {:12.0f} /s   ({} sent in the window, {} echoed, loss {:.4f} %)\n",
               rtps, expected, received, loss * 100);
    if (opt.rate > 0)
        fmt::print("  offered        {:12.0f} /s   ({} skipped; pacer lag max {:.2f} ms)\n",
                   opt.rate * opt.clients, t.skipped, ms(t.max_lag));
    fmt::print("  latency ms     {}\n", latency_text(t.hist));
    cpu.print(server, "round trips", received);
    if (t.lost)
        fmt::print("  connections lost during the run: {} (first: {})\n", t.lost, t.first_lost);
    if (t.foreign) fmt::print("  messages without our timestamp: {}\n", t.foreign);

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
        j["skipped_sends"] = t.skipped;
        j["pacer_lag_max_ms"] = ms(t.max_lag);
        j["round_trips"] = received;
        j["loss_ratio"] = loss;
        j["round_trips_per_s"] = rtps;
        j["latency_ms"] = latency_json(t.hist);
        cpu.to_json(j, server, "round_trips_per_server_cpu_s", received);
        j["connections_lost"] = t.lost;
        j["first_lost"] = t.first_lost;
        j["foreign_messages"] = t.foreign;
        write_json(opt.json_file, j);
    }
    return t.lost ? 1 : 0;
}

}  // namespace steerchat::bench
