// steerchat-bench idle: C connections held open for --duration seconds; the server's memory per
// connection.
//
// A process holds at most its open-files hard limit of sockets, so the connections are spread
// over P forked load processes (client i belongs to process i % P), each with --threads io
// threads. They report through a shared anonymous mapping; the parent only coordinates and
// measures. A connection is "ready" after the 101 (native) or after the Engine.IO open packet and
// the Socket.IO connect answer (sio; no login, so the server holds no chat session). Pings are
// answered (WebSocket pings by the client, Engine.IO "2" with "3").
//
// Memory: PSS (and RSS) summed over the server's process tree, read from
// /proc/PID/smaps_rollup before the first connection and at the end of the hold; the delta over
// C is the figure. Kernel memory is not in PSS: /proc/net/sockstat "TCP: mem" (socket buffer
// pages) and /proc/meminfo "Slab" are host-wide and count both ends of every loopback
// connection, so they are reported separately as upper bounds.
#include <fmt/format.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/json.hpp>
#include <cstring>
#include <string>
#include <thread>
#include <unordered_set>

#include "scenarios.hpp"
#include "ws_client.hpp"

namespace steerchat::bench {

namespace {

constexpr std::int64_t kCloseWaitNs = 3 * kNsPerSec;
constexpr std::int64_t kSettleNs = kNsPerSec / 2;  // after the last connection, before the hold
constexpr unsigned kMaxProcesses = 64;
constexpr std::uint64_t kFdSlack = 256;  // descriptors a load process needs besides its sockets

// The mapping shared by the parent and its load processes.
struct Shared {
    std::atomic<int> phase{0};  // 0 hold, 1 close
    struct alignas(64) Child {
        std::atomic<std::uint64_t> ready{0};
        std::atomic<std::uint64_t> lost{0};
        std::atomic<std::uint64_t> closed{0};
        std::atomic<std::uint64_t> pings{0};
        std::atomic<std::uint64_t> dms{0};        // --chat: DMs received
        std::atomic<std::uint64_t> frames{0};     // --chat: frames received (welcome, presence)
        std::atomic<std::int64_t> last_frame{0};  // --chat: now_ns() of the latest of them
        std::atomic<bool> error_claimed{false};   // a writer took `error`
        std::atomic<bool> failed{false};          // `error` is written
        std::atomic<bool> lost_claimed{false};
        std::atomic<bool> has_lost{false};  // `first_lost` is written
        char error[512] = {};
        char first_lost[512] = {};
    } child[kMaxProcesses];
};

void copy_message(char (&dst)[512], std::string_view s) {
    const std::size_t n = std::min(s.size(), sizeof dst - 1);
    std::memcpy(dst, s.data(), n);
    dst[n] = '\0';
}

class IdleWorker;

class IdleClient final : public SessionClient {
  public:
    IdleClient(IdleWorker& w, ClientEnv& env, std::uint32_t id);

  protected:
    void on_open(std::int64_t now) override;
    bool on_text(std::string_view payload, std::int64_t now) override;
    void on_failed(std::string_view what, Phase was) override;

  private:
    enum class App : std::uint8_t { eio_open, sio_connect, login, ready };
    void became_ready();

    IdleWorker& w_;
    App app_ = App::eio_open;
};

class IdleWorker {
  public:
    IdleWorker(const Options& o, std::uint32_t index, Shared::Child& s, const tcp::endpoint& target,
               std::vector<std::uint32_t> ids)
        : opt(o),
          shared(s),
          env(io, target, o.path, 4096, random_seed(index)),
          setup_(conns_, s.ready) {
        for (std::uint32_t id : ids)
            conns_.push_back(std::make_unique<IdleClient>(*this, env, id));
    }
    // --login-rate: this thread's share of the rate (`rate` per second), from now on.
    void begin_setup(double rate) {
        if (rate <= 0) return setup_.begin();
        pace_start_ = now_ns();
        pace_rate_ = rate;
        pace();
    }
    void on_ready() {
        if (pace_rate_ > 0)
            shared.ready.fetch_add(1, std::memory_order_relaxed);
        else
            setup_.on_ready();
    }
    void setup_failed(const std::string& what) {
        bool expected = false;
        if (!shared.error_claimed.compare_exchange_strong(expected, true)) return;
        copy_message(shared.error, what);
        shared.failed.store(true, std::memory_order_release);
    }
    void lost(std::uint32_t id, std::string_view what) {
        bool expected = false;
        if (shared.lost_claimed.compare_exchange_strong(expected, true)) {
            copy_message(shared.first_lost, fmt::format("client {}: {}", id, what));
            shared.has_lost.store(true, std::memory_order_release);
        }
        shared.lost.fetch_add(1, std::memory_order_relaxed);
    }
    void begin_close() {
        for (auto& c : conns_)
            c->begin_close();
    }

    const Options& opt;
    Shared::Child& shared;
    asio::io_context io{1};
    ClientEnv env;

  private:
    // Starts every client whose time has come (client k at k / rate s), then waits for the next.
    void pace() {
        const double elapsed = static_cast<double>(now_ns() - pace_start_) / 1e9;
        const auto due = std::min<std::size_t>(conns_.size(),
                                               static_cast<std::size_t>(elapsed * pace_rate_) + 1);
        while (paced_ < due)
            conns_[paced_++]->start();
        if (paced_ == conns_.size()) return;
        pace_timer_.expires_after(std::chrono::milliseconds(5));
        pace_timer_.async_wait([this](const boost::system::error_code& ec) {
            if (!ec) pace();
        });
    }

    std::vector<std::unique_ptr<IdleClient>> conns_;
    SetupQueue<IdleClient> setup_;
    asio::steady_timer pace_timer_{io};
    std::int64_t pace_start_ = 0;
    double pace_rate_ = 0;
    std::size_t paced_ = 0;
};

IdleClient::IdleClient(IdleWorker& w, ClientEnv& env, std::uint32_t id)
    : SessionClient(env, id, w.shared.closed), w_(w) {}

void IdleClient::became_ready() {
    app_ = App::ready;
    w_.on_ready();
}

void IdleClient::on_open(std::int64_t) {
    if (w_.opt.protocol == Protocol::sio) {
        app_ = App::eio_open;  // the server speaks first
        return;
    }
    if (w_.opt.chat) {
        app_ = App::login;
        send_text(fmt::format(R"({{"type":"login","name":"{}{}"}})", w_.opt.name_prefix, id_));
        return;
    }
    became_ready();
}

bool IdleClient::on_text(std::string_view payload, std::int64_t now) {
    if (w_.opt.protocol != Protocol::sio) {
        if (!w_.opt.chat) return true;
        w_.shared.frames.fetch_add(1, std::memory_order_relaxed);
        w_.shared.last_frame.store(now, std::memory_order_relaxed);
        // Presence of every later login arrives too: only the welcome and DMs matter here.
        if (app_ == App::login) {
            if (payload.starts_with(R"({"type":"welcome")")) {
                became_ready();
            } else if (payload.starts_with(R"({"type":"error")")) {
                fail(fmt::format("login answered {}", payload.substr(0, 300)));
                return false;
            }
        } else if (payload.starts_with(R"({"type":"dm")")) {
            w_.shared.dms.fetch_add(1, std::memory_order_relaxed);
        }
        return true;
    }
    if (payload == "2") {
        w_.shared.pings.fetch_add(1, std::memory_order_relaxed);
        send_text("3");
        return true;
    }
    if (app_ == App::eio_open && payload.starts_with("0{")) {
        app_ = App::sio_connect;
        send_text("40");
    } else if (app_ == App::sio_connect && payload.starts_with("40")) {
        became_ready();
    } else if (app_ != App::ready && (payload.starts_with("44") || payload == "1")) {
        fail(fmt::format("server answered {}", payload.substr(0, 300)));
        return false;
    }
    return true;
}

void IdleClient::on_failed(std::string_view what, Phase) {
    if (app_ == App::ready)
        w_.lost(id_, what);
    else
        w_.setup_failed(fmt::format("client {} during setup: {}", id_, what));
    ended();
}

// A load process: its share of the clients until the parent says close. Never returns.
[[noreturn]] void load_process(const Options& opt, unsigned p, unsigned processes, Shared& sh,
                               const tcp::endpoint& target, pid_t parent) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(1);
    Shared::Child& me = sh.child[p];
    IoThreads<IdleWorker> pool;
    std::vector<std::vector<std::uint32_t>> ids(opt.threads);
    std::uint32_t k = 0;
    for (std::uint32_t i = p; i < opt.clients; i += processes)
        ids[k++ % opt.threads].push_back(i);
    for (std::uint32_t t = 0; t < opt.threads; ++t)
        pool.workers.push_back(
            std::make_unique<IdleWorker>(opt, p * opt.threads + t, me, target, std::move(ids[t])));
    const std::uint64_t mine = k;
    pool.start();
    const double rate = opt.login_rate / static_cast<double>(processes * opt.threads);
    pool.post_all([rate](IdleWorker& w) { w.begin_setup(rate); });
    while (sh.phase.load(std::memory_order_acquire) == 0 && ::getppid() == parent)
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    pool.post_all([](IdleWorker& w) { w.begin_close(); });
    const std::int64_t end = now_ns() + kCloseWaitNs;
    while (now_ns() < end && me.closed.load(std::memory_order_relaxed) < mine)
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    pool.stop();
    std::fflush(nullptr);
    ::_exit(0);
}

// --chat: logs in as <prefix>check, counts the expected names in its welcome, then sends every
// user a DM (the server answers each with its id, or an error).
class CheckClient final : public WsClient {
  public:
    CheckClient(ClientEnv& env, const Options& o) : WsClient(env), opt_(o) {}
    void start() { open(kClientSourceBase + opt_.clients); }

    std::atomic<bool> welcomed{false};
    std::atomic<std::uint64_t> listed{0};
    std::atomic<std::uint64_t> who_pages{0};  // a partial welcome: `who` pages read
    std::atomic<std::uint64_t> sent{0};
    std::atomic<std::uint64_t> errors{0};
    std::string failure;  // set before `failed`
    std::atomic<bool> failed{false};

  protected:
    void on_open(std::int64_t) override {
        send_text(fmt::format(R"({{"type":"login","name":"{}check"}})", opt_.name_prefix));
    }
    bool on_text(std::string_view payload, std::int64_t) override {
        if (!welcomed.load(std::memory_order_relaxed)) {
            const bool welcome = payload.starts_with(R"({"type":"welcome")");
            const bool who = listing_ && payload.starts_with(R"({"type":"who")");
            if (!welcome && !who) {
                if (payload.starts_with(R"({"type":"error")")) {
                    failure = fmt::format("checker {} answered {}", listing_ ? "who" : "login",
                                          payload.substr(0, 300));
                    failed.store(true, std::memory_order_release);
                }
                return true;
            }
            boost::system::error_code ec;
            const auto v = boost::json::parse(payload, ec);
            if (!ec && v.is_object())
                if (const auto* users = v.as_object().if_contains("users");
                    users && users->is_array())
                    for (const auto& u : users->as_array())
                        if (u.is_string()) names_.emplace(u.as_string());
            // A partial welcome (more users online than it lists): page through `who`.
            if (welcome && !ec && v.is_object() && v.as_object().contains("partial")) {
                listing_ = true;
                send_text(R"({"type":"who"})");
                return true;
            }
            if (who) {
                who_pages.fetch_add(1, std::memory_order_relaxed);
                const auto* next = v.is_object() ? v.as_object().if_contains("next") : nullptr;
                if (next && next->is_number()) {
                    send_text(fmt::format(R"({{"type":"who","after":{}}})",
                                          next->to_number<std::uint64_t>()));
                    return true;
                }
            }
            std::uint64_t n = 0;
            for (std::uint32_t i = 0; i < opt_.clients; ++i)
                n += names_.count(opt_.name_prefix + std::to_string(i));
            listed.store(n, std::memory_order_relaxed);
            welcomed.store(true, std::memory_order_release);
            for (std::uint32_t i = 0; i < opt_.clients; ++i)
                send_text(
                    fmt::format(R"({{"type":"dm","to":"{}{}","text":"hi"}})", opt_.name_prefix, i));
            sent.store(opt_.clients, std::memory_order_relaxed);
            return true;
        }
        if (payload.starts_with(R"({"type":"error")"))
            errors.fetch_add(1, std::memory_order_relaxed);
        return true;
    }
    void on_failed(std::string_view what, Phase) override {
        failure = fmt::format("checker: {}", what);
        failed.store(true, std::memory_order_release);
    }

  private:
    const Options& opt_;
    std::unordered_set<std::string> names_;  // listed so far
    bool listing_ = false;                   // paging through `who`
};

std::string mib(std::uint64_t bytes) {
    return fmt::format("{:.1f} MiB", static_cast<double>(bytes) / (1024.0 * 1024.0));
}

double per_conn(std::uint64_t before, std::uint64_t after, std::uint64_t n) {
    return n ? (static_cast<double>(after) - static_cast<double>(before)) / static_cast<double>(n)
             : 0.0;
}

}  // namespace

int run_idle(const Options& opt) {
    const tcp::endpoint target = loopback_target(opt.host, opt.port);
    const ServerTree server(opt.server_pids);
    server.check_alive();

    // Processes: as many as the open-files hard limit needs.
    const std::uint64_t hard = nofile_hard_limit();
    if (hard <= kFdSlack + 16) die(fmt::format("the open-files hard limit is only {}", hard));
    unsigned processes = opt.processes;
    if (processes == 0)
        processes =
            static_cast<unsigned>((opt.clients + (hard - kFdSlack) - 1) / (hard - kFdSlack));
    processes = std::clamp(processes, 1u, kMaxProcesses);
    const std::uint64_t per_process = (opt.clients + processes - 1) / processes;
    if (per_process + kFdSlack > hard)
        die(
            fmt::format("{} connections per process need more than the open-files hard limit {}; "
                        "use more --processes",
                        per_process, hard));
    raise_nofile(std::min<std::uint64_t>(hard, per_process + kFdSlack));

    fmt::print(stderr,
               "steerchat-bench idle: {} connections ({} on {}) over {} load process(es) x {} "
               "thread(s), held {} s, target {}\n",
               opt.clients, protocol_name(opt.protocol), opt.path, processes, opt.threads,
               opt.duration, opt.host + ":" + std::to_string(opt.port));

    void* mem =
        ::mmap(nullptr, sizeof(Shared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) die("mmap of the shared counters failed");
    Shared& sh = *new (mem) Shared();

    const MemSample mem0 = server.memory();
    const KernelMem kernel0 = kernel_memory();
    if (!server.empty())
        fmt::print(stderr, "  server before: PSS {}, RSS {} ({} processes)\n", mib(mem0.pss),
                   mib(mem0.rss), mem0.processes);

    const CpuSample login_cpu0 = server.cpu();
    const std::int64_t login_t0 = now_ns();
    std::fflush(nullptr);
    const pid_t parent = ::getpid();
    std::vector<pid_t> children;
    for (unsigned p = 0; p < processes; ++p) {
        const pid_t c = ::fork();
        if (c < 0) die("fork failed");
        if (c == 0) load_process(opt, p, processes, sh, target, parent);
        children.push_back(c);
    }
    auto sum = [&](std::atomic<std::uint64_t> Shared::Child::*m) {
        std::uint64_t s = 0;
        for (unsigned p = 0; p < processes; ++p)
            s += (sh.child[p].*m).load(std::memory_order_relaxed);
        return s;
    };
    auto end_children = [&](bool kill_now) {
        sh.phase.store(1, std::memory_order_release);
        const std::int64_t end = now_ns() + (kill_now ? 0 : kCloseWaitNs + kNsPerSec);
        std::size_t left = children.size();
        while (left > 0) {
            for (pid_t& c : children) {
                if (c > 0 && ::waitpid(c, nullptr, WNOHANG) == c) {
                    c = 0;
                    --left;
                }
            }
            if (left == 0) break;
            if (now_ns() >= end) {
                for (pid_t c : children)
                    if (c > 0) ::kill(c, SIGKILL);
                for (pid_t c : children)
                    if (c > 0) ::waitpid(c, nullptr, 0);
                break;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
    };
    auto child_died = [&]() -> bool {
        for (pid_t& c : children) {
            int status = 0;
            if (c > 0 && ::waitpid(c, &status, WNOHANG) == c) {
                c = 0;
                return true;
            }
        }
        return false;
    };
    // The first failure of a setup, empty while none; a load process that died ends the run.
    auto setup_failure = [&]() -> std::string {
        for (unsigned p = 0; p < processes; ++p)
            if (sh.child[p].failed.load(std::memory_order_acquire)) return sh.child[p].error;
        if (child_died()) {
            end_children(true);
            die("a load process died during setup");
        }
        return {};
    };

    // Setup.
    const double setup_s =
        wait_for_setup(now_ns(), {.total = opt.clients,
                                  .timeout_s = opt.connect_timeout,
                                  .noun = "connections",
                                  .state = "ready",
                                  .timed_out_state = "ready",
                                  .done = [&] { return sum(&Shared::Child::ready); },
                                  .failed = setup_failure,
                                  .abort = [&] { end_children(true); }});

    // --chat --login-rate: until the clients are quiet (every welcome and presence event in).
    double settle_s = 0, login_cpu_s = 0;
    std::uint64_t login_frames = 0;
    if (opt.chat && opt.login_rate > 0) {
        constexpr std::int64_t kQuietNs = 2 * kNsPerSec;
        auto last_frame = [&] {
            std::int64_t t = login_t0;
            for (unsigned p = 0; p < processes; ++p)
                t = std::max(t, sh.child[p].last_frame.load(std::memory_order_relaxed));
            return t;
        };
        const std::int64_t deadline =
            now_ns() + static_cast<std::int64_t>(opt.connect_timeout * 1e9);
        while (now_ns() < deadline && now_ns() - last_frame() < kQuietNs)
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
        const CpuSample cpu = server.cpu();
        const std::int64_t last = last_frame();
        settle_s = static_cast<double>(last - login_t0) / 1e9;
        login_cpu_s = server.seconds(cpu.ticks - login_cpu0.ticks);
        login_frames = sum(&Shared::Child::frames);
        fmt::print(stderr,
                   "  logins: {} at {}/s; settled {:.1f} s after the first (the last of {} frames "
                   "to users{}); server CPU {:.2f} s\n",
                   opt.clients, opt.login_rate, settle_s, login_frames,
                   now_ns() - last < kQuietNs ? ", NOT quiet at the timeout" : "", login_cpu_s);
    }

    // --chat: every name listed, every user reachable by DM.
    std::uint64_t listed = 0, dm_errors = 0, dms = 0;
    double check_s = 0;
    if (opt.chat) {
        const std::int64_t t0 = now_ns();
        asio::io_context io{1};
        ClientEnv env(io, target, opt.path, 1 << 20, random_seed(kMaxProcesses * opt.threads));
        CheckClient check(env, opt);
        check.start();
        std::thread runner([&] {
            auto guard = asio::make_work_guard(io);
            io.run();
        });
        const std::int64_t deadline =
            now_ns() + static_cast<std::int64_t>(opt.connect_timeout * 1e9);
        while (now_ns() < deadline && !check.failed.load(std::memory_order_acquire) &&
               (!check.welcomed.load(std::memory_order_acquire) ||
                sum(&Shared::Child::dms) + check.errors.load() < opt.clients))
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        io.stop();
        runner.join();
        if (check.failed.load(std::memory_order_acquire)) {
            end_children(true);
            die(check.failure);
        }
        listed = check.listed.load();
        dm_errors = check.errors.load();
        dms = sum(&Shared::Child::dms);
        check_s = static_cast<double>(now_ns() - t0) / 1e9;
        fmt::print(stderr,
                   "  check: {} of {} names listed, {} DMs delivered, {} refused ({:.1f} s)\n",
                   listed, opt.clients, dms, dm_errors, check_s);
    }

    // Hold.
    sleep_until_ns(now_ns() + kSettleNs);
    const std::int64_t hold_start = now_ns();
    const std::int64_t hold_end = hold_start + static_cast<std::int64_t>(opt.duration * 1e9);
    const CpuSample cpu0 = server.cpu();
    const double own0 = own_cpu_seconds();
    for (std::int64_t tick = hold_start + kNsPerSec; tick < hold_end; tick += kNsPerSec) {
        sleep_until_ns(tick);
        const std::uint64_t lost = sum(&Shared::Child::lost);
        fmt::print(stderr, "  [{:6.1f} s] hold: {} connections open, {} lost, {} pings answered\n",
                   static_cast<double>(tick - hold_start) / 1e9, opt.clients - lost, lost,
                   sum(&Shared::Child::pings));
    }
    sleep_until_ns(hold_end);
    const CpuSample cpu1 = server.cpu();
    const double own1 = own_cpu_seconds();
    const MemSample mem1 = server.memory();
    const KernelMem kernel1 = kernel_memory();
    const std::uint64_t lost = sum(&Shared::Child::lost);
    std::string first_lost;
    for (unsigned p = 0; p < processes && first_lost.empty(); ++p)
        if (sh.child[p].has_lost.load(std::memory_order_acquire))
            first_lost = sh.child[p].first_lost;
    const std::uint64_t pings = sum(&Shared::Child::pings);

    // Close.
    end_children(false);
    const std::uint64_t closed = sum(&Shared::Child::closed);

    const std::uint64_t n = opt.clients;
    const double hold_s = static_cast<double>(hold_end - hold_start) / 1e9;
    const double server_cpu_s = server.seconds(cpu1.ticks - cpu0.ticks);
    const double pss_per = per_conn(mem0.pss, mem1.pss, n);
    const double rss_per = per_conn(mem0.rss, mem1.rss, n);
    const double tcp_mem_per =
        per_conn(kernel0.tcp_mem_pages * 4096, kernel1.tcp_mem_pages * 4096, n);
    const double slab_per = per_conn(kernel0.slab_bytes, kernel1.slab_bytes, n);

    fmt::print("idle ({}): {} connections held {:.1f} s ({} lost)\n", protocol_name(opt.protocol),
               n, hold_s, lost);
    if (!server.empty()) {
        fmt::print("  server PSS     {} -> {}   {:.0f} bytes per connection{}\n", mib(mem0.pss),
                   mib(mem1.pss), pss_per, mem1.pss_ok ? "" : " (some smaps_rollup unreadable)");
        fmt::print("  server RSS     {} -> {}   {:.0f} bytes per connection\n", mib(mem0.rss),
                   mib(mem1.rss), rss_per);
        fmt::print("  server CPU     {:12.2f} s during the hold ({} processes)\n", server_cpu_s,
                   cpu1.processes);
    }
    fmt::print(
        "  kernel (host-wide, both ends of each connection): socket buffers {:.0f}, slab {:.0f} "
        "bytes per connection; TCP sockets in use {} -> {}\n",
        tcp_mem_per, slab_per, kernel0.tcp_inuse, kernel1.tcp_inuse);
    fmt::print("  bench CPU      {:12.2f} s (parent only)\n", own1 - own0);
    if (lost) fmt::print("  connections lost during the hold: {} (first: {})\n", lost, first_lost);
    if (closed < n) fmt::print("  not closed cleanly at the end: {}\n", n - closed);
    if (opt.chat)
        fmt::print(
            "  chat: {} users logged in in {:.1f} s; {} of them listed, {} reached by DM, "
            "{} DMs refused ({:.1f} s)\n",
            n, setup_s, listed, dms, dm_errors, check_s);

    if (!opt.json_file.empty()) {
        boost::json::object j;
        j["scenario"] = "idle";
        j["protocol"] = protocol_name(opt.protocol);
        j["path"] = opt.path;
        j["clients"] = n;
        j["processes"] = processes;
        j["threads"] = opt.threads;
        j["setup_s"] = setup_s;
        j["duration_s"] = hold_s;
        j["connections_lost"] = lost;
        j["first_lost"] = first_lost;
        j["engineio_pings_answered"] = pings;
        if (opt.chat) {
            j["chat_listed"] = listed;
            j["chat_dms_delivered"] = dms;
            j["chat_dms_refused"] = dm_errors;
            j["chat_check_s"] = check_s;
            if (opt.login_rate > 0) {
                j["login_rate"] = opt.login_rate;
                j["chat_settle_s"] = settle_s;
                j["chat_login_frames"] = login_frames;
                j["server_cpu_login_s"] = login_cpu_s;
            }
        }
        if (!server.empty()) {
            j["server_pids"] = server.roots_json();
            j["server_processes"] = mem1.processes;
            j["server_cpu_s"] = server_cpu_s;
            j["server_memory_before"] = {{"pss_bytes", mem0.pss}, {"rss_bytes", mem0.rss}};
            j["server_memory_after"] = {{"pss_bytes", mem1.pss}, {"rss_bytes", mem1.rss}};
            j["pss_complete"] = mem0.pss_ok && mem1.pss_ok;
            j["bytes_per_connection"] = pss_per;  // PSS delta / connections
            j["rss_bytes_per_connection"] = rss_per;
        }
        j["kernel_tcp_mem_bytes_per_connection"] = tcp_mem_per;  // host-wide, both ends
        j["kernel_slab_bytes_per_connection"] = slab_per;        // host-wide, both ends
        j["tcp_inuse_before"] = kernel0.tcp_inuse;
        j["tcp_inuse_after"] = kernel1.tcp_inuse;
        write_json(opt.json_file, j);
    }
    ::munmap(mem, sizeof(Shared));
    const bool chat_ok = !opt.chat || (listed == n && dms == n && dm_errors == 0);
    return lost || !chat_ok ? 1 : 0;
}

}  // namespace steerchat::bench
