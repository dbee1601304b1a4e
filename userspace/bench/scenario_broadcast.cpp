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

constexpr std::size_t kMaxQueuedWrite = 256 * 1024;  // a sender this far behind skips a send

std::string json_string(std::string_view s) {
    return boost::json::serialize(boost::json::value(boost::json::string(s)));
}

class BroadcastWorker;

class BroadcastClient final : public SessionClient {
  public:
    BroadcastClient(BroadcastWorker& w, ClientEnv& env, std::uint32_t id, std::uint32_t room);

    void start();
    void send_say(std::int64_t ts, bool in_window);
    void begin_close() { SessionClient::begin_close(app_ == App::ready); }
    bool ready() const noexcept { return app_ == App::ready; }

  protected:
    void on_open(std::int64_t now) override;
    bool on_text(std::string_view payload, std::int64_t now) override;
    void on_failed(std::string_view what, Phase was) override;

  private:
    enum class App : std::uint8_t { eio_open, sio_connect, login, join, ready };
    void setup_native(std::string_view payload);
    void setup_sio(std::string_view payload);
    void setup_failed(const std::string& what);

    BroadcastWorker& w_;
    std::uint32_t room_;
    App app_ = App::login;
    std::uint64_t seq_ = 0;
};

class BroadcastWorker : public ClientCounters {
  public:
    BroadcastWorker(const Options& o, std::uint32_t index, Failure& f, const tcp::endpoint& target)
        : opt(o),
          failure(f),
          sio(o.protocol == Protocol::sio),
          env(io, target, o.path, read_buffer_size(o.clients), random_seed(index)),
          index_(index),
          setup_(conns_, ready),
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
    void begin_setup() { setup_.begin(); }
    void on_ready() { setup_.on_ready(); }
    void begin_sending(Plan p) {
        plan = p;
        if (senders_.empty()) return;
        const double interval = 1e9 / (opt.rate * static_cast<double>(senders_.size()));
        // Spread this thread's senders over the interval; threads are offset from each other.
        const double offset = interval * static_cast<double>(index_) / opt.threads;
        pacer_.start(plan, interval, offset, [this](std::uint64_t g, std::int64_t ts) {
            senders_[g % senders_.size()]->send_say(ts, plan.in_window(ts));
            sends.store(sends_, std::memory_order_relaxed);
            window_expected.store(tally.window_expected, std::memory_order_relaxed);
        });
    }
    void begin_close() {
        closing = true;
        pacer_.stop();
        tally.max_lag = pacer_.max_lag();
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

    Tally tally;                    // read by main after the thread ended
    std::uint64_t deliveries_ = 0;  // mirrored to received
    std::uint64_t sends_ = 0;       // mirrored to sends
    bool closing = false;

  private:
    std::uint32_t index_;
    std::vector<std::unique_ptr<BroadcastClient>> conns_;
    std::vector<BroadcastClient*> senders_;
    SetupQueue<BroadcastClient> setup_;
    Pacer pacer_;
};

BroadcastClient::BroadcastClient(BroadcastWorker& w, ClientEnv& env, std::uint32_t id,
                                 std::uint32_t room)
    : SessionClient(env, id, w.closed), w_(w), room_(room) {}

void BroadcastClient::start() {
    app_ = w_.sio ? App::eio_open : App::login;
    SessionClient::start();
}

void BroadcastClient::on_open(std::int64_t) {
    if (w_.sio) return;  // the server speaks first
    send_text(fmt::format(R"({{"type":"login","name":{}}})",
                          json_string(fmt::format("{}{}", w_.opt.name_prefix, id_))));
}

void BroadcastClient::on_failed(std::string_view what, Phase) {
    if (app_ == App::ready)
        w_.tally.lose(id_, what);
    else
        w_.failure.set(
            fmt::format("client {} ({}{}) during setup: {}", id_, w_.opt.name_prefix, id_, what));
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
            ++w_.tally.foreign;
            return true;
        }
        ++w_.deliveries_;
        w_.received.store(w_.deliveries_, std::memory_order_relaxed);
        const auto ts = static_cast<std::int64_t>(t);
        if (w_.plan.in_window(ts)) {
            w_.tally.hist.record(now - ts);
            ++w_.tally.window_received;
            w_.window_received.store(w_.tally.window_received, std::memory_order_relaxed);
        }
        return true;
    }
    if (w_.sio && payload == "2") {  // Engine.IO ping
        ++w_.tally.pings;
        send_text("3");
        return true;
    }
    const bool error = w_.sio ? payload.starts_with("44") || payload == "1"
                              : payload.starts_with(R"({"type":"error")");
    if (app_ == App::ready || phase() == Phase::closing) {
        if (error) w_.tally.error(payload.substr(0, 300));
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
        ++w_.tally.skipped;
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
        ++w_.tally.window_sends;
        w_.tally.window_expected += w_.members[room_];
    }
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
    const double setup_s = set_up_clients(pool, failure, opt, "ready", "logged in and joined");

    // Warm-up + measurement.
    const Plan plan = Plan::from_now(opt.duration);
    pool.post_all([plan](W& w) { w.begin_sending(plan); });
    std::uint64_t last_deliveries = 0, last_sends = 0;
    const WindowCpu cpu = measure_window(plan, server, [&](double at, std::string_view phase) {
        const std::uint64_t d = pool.sum(&W::received), s = pool.sum(&W::sends);
        fmt::print(stderr, "  [{:6.1f} s] {:<8} sends/s {:>9}  deliveries/s {:>10}\n", at, phase,
                   s - last_sends, d - last_deliveries);
        last_deliveries = d;
        last_sends = s;
    });

    // Stragglers (until every expected delivery of the window arrived, at most 1 s), close.
    drain_and_close(pool, plan, opt.clients);

    // Summary.
    const Tally t = pool.tally();
    const std::uint64_t expected = t.window_expected, received = t.window_received;
    const double dur = plan.window_s();
    const double loss = loss_ratio(expected, received);
    const double deliveries_per_s = static_cast<double>(received) / dur;

    fmt::print("broadcast ({}): {} clients, {} rooms, {} senders x {}/s, {:.1f} s measured\n",
               protocol_name(opt.protocol), opt.clients, opt.rooms, senders, opt.rate, dur);
    fmt::print(
        "  offered        {:12.0f} msgs/s   (target {:.0f}; {} skipped: write queue full; "
        "pacer lag max {:.2f} ms)\n",
        static_cast<double>(t.window_sends) / dur, opt.rate * senders, t.skipped, ms(t.max_lag));
    fmt::print("  deliveries     {:12.0f} /s\n", deliveries_per_s);
    fmt::print("  expected       {:12}   received {}   loss {:.4f} %\n", expected, received,
               loss * 100);
    fmt::print("  latency ms     {}\n", latency_text(t.hist));
    cpu.print(server, "deliveries", received);
    if (t.lost)
        fmt::print("  connections lost during the run: {} (first: {})\n", t.lost, t.first_lost);
    if (t.errors) fmt::print("  error frames: {} (first: {})\n", t.errors, t.first_error);
    if (t.foreign) fmt::print("  messages without our timestamp: {}\n", t.foreign);

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
        j["offered_msgs_per_s"] = static_cast<double>(t.window_sends) / dur;
        j["target_msgs_per_s"] = opt.rate * senders;
        j["sends"] = t.window_sends;
        j["skipped_sends"] = t.skipped;
        j["pacer_lag_max_ms"] = ms(t.max_lag);
        j["expected_deliveries"] = expected;
        j["received_deliveries"] = received;
        j["loss_ratio"] = loss;
        j["deliveries_per_s"] = deliveries_per_s;
        j["latency_ms"] = latency_json(t.hist);
        cpu.to_json(j, server, "deliveries_per_server_cpu_s", received);
        j["connections_lost"] = t.lost;
        j["error_frames"] = t.errors;
        j["first_lost"] = t.first_lost;
        j["first_error"] = t.first_error;
        j["foreign_messages"] = t.foreign;
        j["engineio_pings_answered"] = t.pings;
        write_json(opt.json_file, j);
    }
    return t.lost ? 1 : 0;
}

}  // namespace steerchat::bench
