#include "bench_common.hpp"

#include <fmt/format.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <dirent.h>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <optional>
#include <unordered_map>

#include "ws_client.hpp"

namespace steerchat::bench {

std::int64_t now_ns() {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return std::int64_t{ts.tv_sec} * kNsPerSec + ts.tv_nsec;
}

void sleep_until_ns(std::int64_t t) {
    timespec ts{static_cast<time_t>(t / kNsPerSec), static_cast<long>(t % kNsPerSec)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr) == EINTR) {
    }
}

void die(const std::string& msg) {
    fmt::print(stderr, "steerchat-bench: {}\n", msg);
    std::exit(1);
}

boost::json::object latency_json(const Histogram& h) {
    return {{"p50", ms(h.quantile(0.5))},
            {"p99", ms(h.quantile(0.99))},
            {"p999", ms(h.quantile(0.999))},
            {"max", ms(h.max())}};
}

std::string latency_text(const Histogram& h) {
    return fmt::format("p50 {:.3f}   p99 {:.3f}   p99.9 {:.3f}   max {:.3f}", ms(h.quantile(0.5)),
                       ms(h.quantile(0.99)), ms(h.quantile(0.999)), ms(h.max()));
}

bool take_number(std::string_view& s, std::uint64_t& v) {
    const auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc()) return false;
    s.remove_prefix(static_cast<std::size_t>(p - s.data()));
    return true;
}

// ---------------------------------------------------------------------------------------------
// /proc

namespace {

struct Stat {
    int ppid = 0;
    std::uint64_t ticks = 0;  // utime + stime + cutime + cstime
};

std::optional<Stat> read_stat(int pid) {
    char path[64];
    std::snprintf(path, sizeof path, "/proc/%d/stat", pid);
    std::FILE* f = std::fopen(path, "re");
    if (!f) return std::nullopt;
    char buf[1024];
    const std::size_t n = std::fread(buf, 1, sizeof buf - 1, f);
    std::fclose(f);
    const std::string_view line(buf, n);
    const auto close = line.rfind(')');
    if (close == std::string_view::npos || close + 2 > line.size()) return std::nullopt;
    // Fields after the command: 3 state, 4 ppid, ..., 14 utime, 15 stime, 16 cutime, 17 cstime.
    std::array<std::string_view, 15> fields{};
    std::size_t got = 0;
    std::string_view rest = line.substr(close + 2);
    while (!rest.empty() && got < fields.size()) {
        const auto sp = rest.find(' ');
        fields[got++] = rest.substr(0, sp);
        if (sp == std::string_view::npos) break;
        rest.remove_prefix(sp + 1);
    }
    if (got < fields.size()) return std::nullopt;
    auto num = [](std::string_view s) {
        std::int64_t v = 0;
        std::from_chars(s.data(), s.data() + s.size(), v);
        return v;
    };
    Stat s;
    s.ppid = static_cast<int>(num(fields[1]));
    s.ticks = static_cast<std::uint64_t>(num(fields[11]) + num(fields[12]) + num(fields[13]) +
                                         num(fields[14]));
    return s;
}

template <class F>
void for_each_pid(F&& f) {
    DIR* d = opendir("/proc");
    if (!d) return;
    while (const dirent* e = readdir(d)) {
        int pid = 0;
        const std::string_view n = e->d_name;
        const auto [p, ec] = std::from_chars(n.data(), n.data() + n.size(), pid);
        if (ec == std::errc() && p == n.data() + n.size()) f(pid);
    }
    closedir(d);
}

// "Key:   123 kB" lines of a /proc file, in bytes.
std::optional<std::uint64_t> kb_field(const std::string& file, std::string_view key) {
    std::ifstream f(file);
    std::string line;
    while (std::getline(f, line)) {
        if (!std::string_view(line).starts_with(key)) continue;
        std::string_view v = std::string_view(line).substr(key.size());
        while (!v.empty() && (v.front() == ' ' || v.front() == '\t'))
            v.remove_prefix(1);
        std::uint64_t kb = 0;
        if (!take_number(v, kb)) return std::nullopt;
        return kb * 1024;
    }
    return std::nullopt;
}

}  // namespace

ServerTree::ServerTree(std::vector<int> roots)
    : roots_(std::move(roots)), hz_(sysconf(_SC_CLK_TCK)) {
    std::sort(roots_.begin(), roots_.end());
    roots_.erase(std::unique(roots_.begin(), roots_.end()), roots_.end());
}

void ServerTree::check_alive() const {
    for (int pid : roots_)
        if (!read_stat(pid)) die(fmt::format("--server-pid {}: no such process", pid));
}

std::vector<int> ServerTree::pids() const {
    std::unordered_map<int, std::vector<int>> children;
    for_each_pid([&](int pid) {
        if (const auto s = read_stat(pid)) children[s->ppid].push_back(pid);
    });
    std::vector<int> out;
    for (int r : roots_)
        if (std::find(out.begin(), out.end(), r) == out.end() && read_stat(r)) out.push_back(r);
    for (std::size_t i = 0; i < out.size(); ++i) {
        const auto it = children.find(out[i]);
        if (it == children.end()) continue;
        for (int c : it->second)
            if (std::find(out.begin(), out.end(), c) == out.end()) out.push_back(c);
    }
    return out;
}

CpuSample ServerTree::cpu() const {
    CpuSample r;
    for (int pid : pids())
        if (const auto s = read_stat(pid)) {
            r.ticks += s->ticks;
            ++r.processes;
        }
    return r;
}

MemSample ServerTree::memory() const {
    MemSample r;
    for (int pid : pids()) {
        const std::string rollup = fmt::format("/proc/{}/smaps_rollup", pid);
        const auto rss = kb_field(rollup, "Rss:");
        const auto pss = kb_field(rollup, "Pss:");
        if (rss && pss) {
            r.rss += *rss;
            r.pss += *pss;
        } else {
            r.pss_ok = false;
            r.rss += kb_field(fmt::format("/proc/{}/status", pid), "VmRSS:").value_or(0);
        }
        ++r.processes;
    }
    return r;
}

boost::json::array ServerTree::roots_json() const {
    boost::json::array a;
    for (int pid : roots_)
        a.push_back(pid);
    return a;
}

KernelMem kernel_memory() {
    KernelMem k;
    std::ifstream f("/proc/net/sockstat");
    std::string line;
    while (std::getline(f, line)) {
        if (!std::string_view(line).starts_with("TCP:")) continue;
        // TCP: inuse 5 orphan 0 tw 0 alloc 6 mem 1
        auto value_of = [&](std::string_view key) -> std::uint64_t {
            const auto at = line.find(fmt::format(" {} ", key));
            if (at == std::string::npos) return 0;
            std::string_view v = std::string_view(line).substr(at + key.size() + 2);
            std::uint64_t n = 0;
            take_number(v, n);
            return n;
        };
        k.tcp_inuse = value_of("inuse");
        k.tcp_mem_pages = value_of("mem");
    }
    k.slab_bytes = kb_field("/proc/meminfo", "Slab:").value_or(0);
    return k;
}

double own_cpu_seconds() {
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    auto sec = [](const timeval& t) { return static_cast<double>(t.tv_sec) + t.tv_usec / 1e6; };
    return sec(ru.ru_utime) + sec(ru.ru_stime);
}

HostCpu host_cpu() {
    HostCpu h;
    std::ifstream f("/proc/stat");
    std::string line;
    if (!std::getline(f, line) || !std::string_view(line).starts_with("cpu ")) return h;
    std::string_view rest = std::string_view(line).substr(4);
    std::array<std::uint64_t, 8> v{};  // user nice system idle iowait irq softirq steal
    for (auto& x : v) {
        while (!rest.empty() && rest.front() == ' ')
            rest.remove_prefix(1);
        if (!take_number(rest, x)) break;
    }
    h.busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7];
    h.softirq = v[6];
    return h;
}

std::pair<double, double> host_cpu_seconds(const HostCpu& a, const HostCpu& b) {
    const double hz = static_cast<double>(sysconf(_SC_CLK_TCK));
    return {static_cast<double>(b.busy - a.busy) / hz,
            static_cast<double>(b.softirq - a.softirq) / hz};
}

// ---------------------------------------------------------------------------------------------
// Target and limits

tcp::endpoint loopback_target(const std::string& host, std::uint16_t port) {
    error_code ec;
    const asio::ip::address addr = asio::ip::make_address(host, ec);
    if (ec) die(fmt::format("--host '{}' is not an IP address", host));
    if (!(addr.is_v4() && (addr.to_v4().to_uint() >> 24) == 127) &&
        !(addr.is_v6() && addr.to_v6() == asio::ip::address_v6::loopback()))
        die(fmt::format("--host {} is not a loopback address (127.0.0.0/8 or ::1)", host));
    if (addr.is_v6())
        fmt::print(stderr,
                   "steerchat-bench: warning: IPv6 loopback has one source address, every "
                   "client lands on the same worker\n");
    return tcp::endpoint(addr, port);
}

std::uint64_t nofile_hard_limit() {
    rlimit rl{};
    getrlimit(RLIMIT_NOFILE, &rl);
    return rl.rlim_max;
}

std::uint64_t raise_nofile(std::uint64_t need) {
    rlimit rl{};
    getrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur < need) {
        if (rl.rlim_max < need)
            die(fmt::format("this needs {} file descriptors, the hard limit is {} (ulimit -Hn)",
                            need, rl.rlim_max));
        rl.rlim_cur = need;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0) die("setrlimit(RLIMIT_NOFILE) failed");
    }
    return rl.rlim_max;
}

// ---------------------------------------------------------------------------------------------
// Pacer

void Pacer::start(const Plan& plan, double interval_ns, double offset_ns,
                  std::function<void(std::uint64_t, std::int64_t)> fire) {
    plan_ = plan;
    interval_ = interval_ns;
    offset_ = offset_ns;
    g_ = 0;
    max_lag_ = 0;
    stopped_ = false;
    fire_ = std::move(fire);
    pace();
}

void Pacer::stop() {
    stopped_ = true;
    timer_.cancel();
}

void Pacer::pace() {
    if (stopped_) return;
    const std::int64_t now = now_ns();
    while (true) {
        const double d = due(g_);
        if (d > static_cast<double>(now)) break;
        if (d >= static_cast<double>(plan_.measure_end)) return;  // done sending
        const std::int64_t ts = now_ns();
        if (plan_.in_window(ts)) max_lag_ = std::max(max_lag_, ts - static_cast<std::int64_t>(d));
        fire_(g_++, ts);
        if (stopped_) return;
    }
    const double d = due(g_);
    if (d >= static_cast<double>(plan_.measure_end)) return;
    const auto next = std::max(static_cast<std::int64_t>(d), now + kMinGapNs);
    timer_.expires_at(asio::steady_timer::time_point(std::chrono::nanoseconds(next)));
    timer_.async_wait([this](const error_code& ec) {
        if (!ec) pace();
    });
}

// ---------------------------------------------------------------------------------------------
// Setup, the measurement window, the summary

double wait_for_setup(std::int64_t start, const SetupWait& s) {
    const auto deadline = start + static_cast<std::int64_t>(s.timeout_s * 1e9);
    std::int64_t next_report = start + kNsPerSec;
    while (s.done() < s.total) {
        if (const std::string f = s.failed(); !f.empty()) {
            s.abort();
            die(fmt::format("setup failed after {} of {} {} were {}: {}", s.done(), s.total, s.noun,
                            s.state, f));
        }
        const std::int64_t now = now_ns();
        if (now > deadline) {
            s.abort();
            die(fmt::format("setup timed out after {} s: {} of {} {} {}", s.timeout_s, s.done(),
                            s.total, s.noun, s.timed_out_state));
        }
        if (now >= next_report) {
            fmt::print(stderr, "  setup: {} / {} {} {}\n", s.done(), s.total, s.noun, s.state);
            next_report += kNsPerSec;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    const double setup_s = static_cast<double>(now_ns() - start) / 1e9;
    fmt::print(stderr, "  setup: {} {} {} in {:.2f} s\n", s.total, s.noun, s.state, setup_s);
    return setup_s;
}

void Tally::lose(std::uint32_t client, std::string_view why) {
    ++lost;
    if (first_lost.empty()) first_lost = fmt::format("client {}: {}", client, why);
}

void Tally::merge(const Tally& o) {
    hist.merge(o.hist);
    window_sends += o.window_sends;
    window_expected += o.window_expected;
    window_received += o.window_received;
    skipped += o.skipped;
    lost += o.lost;
    errors += o.errors;
    foreign += o.foreign;
    pings += o.pings;
    max_lag = std::max(max_lag, o.max_lag);
    if (first_lost.empty()) first_lost = o.first_lost;
    if (first_error.empty()) first_error = o.first_error;
}

WindowCpu measure_window(const Plan& plan, const ServerTree& server,
                         const std::function<void(double, std::string_view)>& progress) {
    CpuSample cpu0;
    double own0 = 0;
    HostCpu host0;
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
        progress(static_cast<double>(tick - plan.start) / 1e9,
                 tick <= plan.measure_start ? "warm-up" : "measure");
        tick += kNsPerSec;
    }
    sleep_until_ns(plan.measure_end);
    const CpuSample cpu1 = server.cpu();
    const double own1 = own_cpu_seconds();
    const auto [busy, softirq] = host_cpu_seconds(host0, host_cpu());

    WindowCpu w;
    w.window_s = plan.window_s();
    w.server_s = server.seconds(cpu1.ticks - cpu0.ticks);
    w.server_processes = cpu1.processes;
    w.own_s = own1 - own0;
    w.host_busy_s = busy;
    w.host_softirq_s = softirq;
    return w;
}

void WindowCpu::print(const ServerTree& server, std::string_view what, std::uint64_t count) const {
    if (!server.empty())
        fmt::print(
            "  server CPU     {:12.2f} s ({} processes; {:.0f} % of one core)   "
            "{} per server CPU-s {:.0f}\n",
            server_s, server_processes, server_s / window_s * 100, what, per_server_s(count));
    fmt::print("  bench CPU      {:12.2f} s ({:.0f} % of one core)\n", own_s,
               own_s / window_s * 100);
    fmt::print("  host CPU       {:12.2f} s busy, all CPUs ({:.2f} s softirq)\n", host_busy_s,
               host_softirq_s);
}

void WindowCpu::to_json(boost::json::object& j, const ServerTree& server,
                        std::string_view per_server_key, std::uint64_t count) const {
    if (!server.empty()) {
        j["server_pids"] = server.roots_json();
        j["server_cpu_s"] = server_s;
        j["server_processes"] = server_processes;
        j[per_server_key] = per_server_s(count);
    }
    j["bench_cpu_s"] = own_s;
    j["host_cpu_busy_s"] = host_busy_s;
    j["host_softirq_s"] = host_softirq_s;
}

void write_json(const std::string& file, const boost::json::object& j) {
    if (file.empty()) return;
    boost::json::object out = j;
    out["tls"] = client_tls() != nullptr;
    std::ofstream f(file);
    f << boost::json::serialize(out) << "\n";
    if (!f) die(fmt::format("could not write {}", file));
}

}  // namespace steerchat::bench
