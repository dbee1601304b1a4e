// steerchat-bench: what every scenario shares (time, the latency histogram, the server's process
// tree from /proc, kernel memory counters, the loopback target, the first failure, pacing).
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <boost/asio.hpp>
#include <boost/json.hpp>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

namespace steerchat::bench {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using error_code = boost::system::error_code;

constexpr std::int64_t kNsPerSec = 1'000'000'000;
constexpr std::int64_t kWarmupNs = kNsPerSec;  // every timed scenario warms up this long

std::int64_t now_ns();
void sleep_until_ns(std::int64_t t);
inline double ms(std::int64_t ns) {
    return static_cast<double>(ns) / 1e6;
}
[[noreturn]] void die(const std::string& msg);

// Polls done() every 5 ms until it holds or the clock passes `deadline`.
template <class F>
void wait_until(std::int64_t deadline, F done) {
    while (now_ns() < deadline && !done())
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
}

// ---------------------------------------------------------------------------------------------
// Latency histogram: log-linear over nanoseconds, 64 sub-buckets per power of two (values below
// 128 ns exact), relative error under 1.6 %. Values above 10 s go to an overflow count.

class Histogram {
  public:
    static constexpr std::int64_t kMax = 10 * kNsPerSec;
    static constexpr int kBuckets = 64 * 36;

    void record(std::int64_t v) noexcept {
        if (v < 0) v = 0;
        if (v >= kMax) {
            ++overflow_;
            ++count_;
            return;
        }
        ++buckets_[index(static_cast<std::uint64_t>(v))];
        ++count_;
        max_ = std::max(max_, v);
    }
    void merge(const Histogram& o) noexcept {
        for (int i = 0; i < kBuckets; ++i)
            buckets_[i] += o.buckets_[i];
        count_ += o.count_;
        overflow_ += o.overflow_;
        max_ = std::max(max_, o.max_);
    }
    std::uint64_t count() const noexcept { return count_; }
    std::int64_t max() const noexcept { return overflow_ ? kMax : max_; }
    // The value at quantile q (0..1): the middle of its bucket, or kMax in the overflow.
    std::int64_t quantile(double q) const noexcept {
        if (count_ == 0) return 0;
        const auto rank = static_cast<std::uint64_t>(std::ceil(q * static_cast<double>(count_)));
        std::uint64_t seen = 0;
        for (int i = 0; i < kBuckets; ++i) {
            seen += buckets_[i];
            if (seen >= std::max<std::uint64_t>(rank, 1)) return std::min(middle(i), max_);
        }
        return kMax;
    }

  private:
    static int index(std::uint64_t v) noexcept {
        if (v < 128) return static_cast<int>(v);
        const int msb = 63 - __builtin_clzll(v);
        const int shift = msb - 6;
        return shift * 64 + static_cast<int>(v >> shift);
    }
    static std::int64_t middle(int i) noexcept {
        if (i < 128) return i;
        const int shift = i / 64 - 1;
        const std::int64_t sub = i - shift * 64;  // in [64, 128)
        return (sub << shift) + ((std::int64_t{1} << shift) >> 1);
    }

    std::array<std::uint64_t, kBuckets> buckets_{};
    std::uint64_t count_ = 0;
    std::uint64_t overflow_ = 0;
    std::int64_t max_ = 0;
};

// {"p50","p99","p999","max"} in milliseconds.
boost::json::object latency_json(const Histogram& h);
// "p50 0.123   p99 0.456   p99.9 0.789   max 1.234" (milliseconds).
std::string latency_text(const Histogram& h);

// ---------------------------------------------------------------------------------------------
// The server: every process under the given roots (--server-pid, repeatable), found by walking
// /proc for descendants at each sample, so node cluster workers, nginx workers and respawned
// steerchat workers are all counted.

struct CpuSample {
    // utime + stime + cutime + cstime of every process in the tree: a process that exits and is
    // reaped during the window moves its time into its parent's cutime, so deltas stay exact.
    std::uint64_t ticks = 0;
    int processes = 0;
};

struct MemSample {
    std::uint64_t rss = 0;  // bytes, summed (shared pages counted once per process)
    std::uint64_t pss = 0;  // bytes, summed (/proc/PID/smaps_rollup: shared pages split)
    bool pss_ok = true;     // every process had a readable smaps_rollup
    int processes = 0;
};

class ServerTree {
  public:
    explicit ServerTree(std::vector<int> roots);
    bool empty() const noexcept { return roots_.empty(); }
    const std::vector<int>& roots() const noexcept { return roots_; }
    // Dies naming the root that does not exist.
    void check_alive() const;
    std::vector<int> pids() const;  // roots and all their descendants
    CpuSample cpu() const;
    MemSample memory() const;
    double seconds(std::uint64_t ticks) const noexcept {
        return static_cast<double>(ticks) / static_cast<double>(hz_);
    }
    boost::json::array roots_json() const;

  private:
    std::vector<int> roots_;
    long hz_;
};

// Host-wide kernel memory (this network namespace for the socket figures): both ends of a
// loopback connection are counted, the load generator's as well as the server's.
struct KernelMem {
    std::uint64_t tcp_mem_pages = 0;  // /proc/net/sockstat "TCP: ... mem" (socket buffers)
    std::uint64_t tcp_inuse = 0;      // /proc/net/sockstat "TCP: inuse"
    std::uint64_t slab_bytes = 0;     // /proc/meminfo "Slab" (socket, inode, file, epoll objects)
};
KernelMem kernel_memory();

double own_cpu_seconds();

// The whole host's CPU from /proc/stat (all CPUs, seconds). On loopback the receive path of a
// packet runs in softirq in the *sender's* context and tick accounting charges it to whichever
// task was running: the server's SYN handling (and the BPF steering program) is mostly charged
// to the load generator. Busy time of the whole host is the figure that misses nothing (on an
// otherwise idle machine).
struct HostCpu {
    std::uint64_t busy = 0;     // ticks: user + nice + system + irq + softirq + steal
    std::uint64_t softirq = 0;  // ticks of softirq
};
HostCpu host_cpu();
// (busy seconds, softirq seconds) from a to b.
std::pair<double, double> host_cpu_seconds(const HostCpu& a, const HostCpu& b);

// ---------------------------------------------------------------------------------------------
// Target and limits

// The server's endpoint; dies unless `host` is a loopback address (127.0.0.0/8 or ::1).
tcp::endpoint loopback_target(const std::string& host, std::uint16_t port);
// Raises the soft open-files limit to `need` (at most the hard limit); dies if the hard limit is
// lower. Returns the hard limit.
std::uint64_t raise_nofile(std::uint64_t need);
std::uint64_t nofile_hard_limit();

// 127.1.0.1 + i: one source address per client of broadcast, echo and idle.
constexpr std::uint32_t kClientSourceBase = (127u << 24) | (1u << 16) | 1u;
// connect cycles through 127.2.0.0 - 127.254.255.255 (16.5 M addresses).
constexpr std::uint32_t kConnectSourceBase = (127u << 24) | (2u << 16);
constexpr std::uint32_t kConnectSourceSpan = (253u << 16);

// ---------------------------------------------------------------------------------------------
// Between the io threads and main

struct Failure {
    std::mutex mu;
    std::string first;
    std::atomic<bool> failed{false};
    void set(std::string msg) {
        std::lock_guard lock(mu);
        if (first.empty()) first = std::move(msg);
        failed.store(true, std::memory_order_release);
    }
    // The first failure, empty while there is none.
    std::string message() {
        if (!failed.load(std::memory_order_acquire)) return {};
        std::lock_guard lock(mu);
        return first;
    }
};

// What a setup waits for and the words of its progress lines ("20 / 100 clients ready").
struct SetupWait {
    std::uint64_t total = 0;              // connections to set up
    double timeout_s = 0;                 // --connect-timeout
    std::string_view noun;                // "clients", "connections"
    std::string_view state;               // "ready", "open"
    std::string_view timed_out_state;     // what the timeout message says of the ready ones
    std::function<std::uint64_t()> done;  // how many are set up
    std::function<std::string()> failed;  // the first setup failure, empty while there is none
    std::function<void()> abort;          // ends the load before dying
};
// Waits (polling every 5 ms, progress once a second on stderr) until `done()` reaches `total`;
// returns the seconds since `start`. Dies, after abort(), on a failure or at the timeout.
double wait_for_setup(std::int64_t start, const SetupWait& s);

// Send timestamps in [start, measure_start) warm up, [measure_start, measure_end) count.
struct Plan {
    std::int64_t start = 0;
    std::int64_t measure_start = 0;
    std::int64_t measure_end = 0;
    bool in_window(std::int64_t ts) const noexcept {
        return ts >= measure_start && ts < measure_end;
    }
    double window_s() const noexcept {
        return static_cast<double>(measure_end - measure_start) / 1e9;
    }
    // Starts 10 ms from now: kWarmupNs of warm-up, then `duration_s` of measurement.
    static Plan from_now(double duration_s) {
        Plan p;
        p.start = now_ns() + 10'000'000;
        p.measure_start = p.start + kWarmupNs;
        p.measure_end = p.measure_start + static_cast<std::int64_t>(duration_s * 1e9);
        return p;
    }
};

// What a worker thread counts for the summary, in plain fields of its own thread (what main
// watches while it runs is mirrored into atomics). Main merges them after the threads ended.
struct Tally {
    Histogram hist;                     // latency of what the window counts
    std::uint64_t window_sends = 0;     // sends inside the window
    std::uint64_t window_expected = 0;  // deliveries those sends should bring (broadcast)
    std::uint64_t window_received = 0;  // of those, the ones that came
    std::uint64_t skipped = 0;          // sends skipped: the connection's write queue was full
    std::uint64_t lost = 0;             // connections dropped after setup
    std::uint64_t errors = 0;           // error frames after setup; failed connections (connect)
    std::uint64_t foreign = 0;          // message frames without our "t=" text
    std::uint64_t pings = 0;            // Engine.IO pings answered
    std::int64_t max_lag = 0;           // worst lateness of the pacer behind schedule, in window
    std::string first_lost;             // why the first connection was dropped
    std::string first_error;            // the first error

    void lose(std::uint32_t client, std::string_view why);
    void error(std::string_view what) {
        ++errors;
        if (first_error.empty()) first_error = what;
    }
    void merge(const Tally& o);
};

// 1 - received / expected, 0 when nothing was expected.
inline double loss_ratio(std::uint64_t expected, std::uint64_t received) {
    return expected ? 1.0 - static_cast<double>(received) / static_cast<double>(expected) : 0.0;
}

// Calls fire(g, ts) for the g-th send of this thread, due at plan.start + offset + g * interval,
// until plan.measure_end; ts is the clock when it fires. Sleeps at least kMinGapNs between
// wake-ups and fires everything that became due meanwhile. No allocation per send.
class Pacer {
  public:
    static constexpr std::int64_t kMinGapNs = 500'000;  // at most 2000 wake-ups per second

    explicit Pacer(asio::io_context& io) : timer_(io) {}
    void start(const Plan& plan, double interval_ns, double offset_ns,
               std::function<void(std::uint64_t, std::int64_t)> fire);
    void stop();
    // Worst lateness behind schedule of a send inside the measurement window.
    std::int64_t max_lag() const noexcept { return max_lag_; }

  private:
    double due(std::uint64_t g) const noexcept {
        return static_cast<double>(plan_.start) + offset_ + static_cast<double>(g) * interval_;
    }
    void pace();

    asio::steady_timer timer_;
    Plan plan_;
    double interval_ = 0;
    double offset_ = 0;
    std::uint64_t g_ = 0;
    std::int64_t max_lag_ = 0;
    bool stopped_ = true;
    std::function<void(std::uint64_t, std::int64_t)> fire_;
};

// CPU used in the measurement window: the server's tree, this process and the whole host.
struct WindowCpu {
    double window_s = 0;  // the window's length
    double server_s = 0;
    int server_processes = 0;  // at the end
    double own_s = 0;
    double host_busy_s = 0;  // all CPUs (see HostCpu)
    double host_softirq_s = 0;

    // `count` per second of server CPU (0 without any).
    double per_server_s(std::uint64_t count) const noexcept {
        return server_s > 0 ? static_cast<double>(count) / server_s : 0.0;
    }
    // The "server CPU" (with a server; `what` names `count`), "bench CPU" and "host CPU" lines.
    void print(const ServerTree& server, std::string_view what, std::uint64_t count) const;
    // server_pids, server_cpu_s, server_processes and `per_server_key` (with a server), then
    // bench_cpu_s, host_cpu_busy_s, host_softirq_s.
    void to_json(boost::json::object& j, const ServerTree& server, std::string_view per_server_key,
                 std::uint64_t count) const;
};

// Sleeps through the plan's warm-up and window, sampling the CPU at measure_start and
// measure_end; once a second up to measure_end calls progress(seconds since plan.start, "warm-up"
// or "measure").
WindowCpu measure_window(const Plan& plan, const ServerTree& server,
                         const std::function<void(double, std::string_view)>& progress);

void write_json(const std::string& file, const boost::json::object& j);

// Reads a decimal number at the start of `s`; advances `s`.
bool take_number(std::string_view& s, std::uint64_t& v);

}  // namespace steerchat::bench
