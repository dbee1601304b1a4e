// steerchat-bench: a load generator for a running steerchat (loopback only).
//
// Scenario `broadcast`: C WebSocket clients on GET /ws (native JSON protocol), each bound to its
// own source address 127.1.x.y so BPF steering spreads them over the workers, log in as
// <prefix><i> and join room i % R. S of them say to their room at a fixed rate; the text carries
// the CLOCK_MONOTONIC send time, the sender id and a sequence number. Every receiver scans the
// text for "t=" and records send-to-receive latency. Phases: setup (connect, handshake, login,
// join), 1 s warm-up, --duration seconds of measurement, up to 1 s for stragglers, close.
//
// Accounting is by send timestamp: a message belongs to the measurement when it was sent inside
// the window; expected deliveries = those sends x members of the sender's room, received = the
// deliveries of those messages (however late, up to the straggler deadline).
//
// Threads: T io threads, each with its own io_context owning clients i with i % T == thread. The
// hot path (pacing, encoding a say, parsing a frame, recording latency) does not allocate: every
// connection has one read buffer and two swapped write buffers whose capacity is reused.
#include <fmt/format.h>
#include <openssl/evp.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <dirent.h>
#include <algorithm>
#include <array>
#include <atomic>
#include <boost/asio.hpp>
#include <boost/json.hpp>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <fstream>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "ws/frame.hpp"
#include "ws/handshake.hpp"

namespace {

namespace asio = boost::asio;
namespace ws = steerchat::ws;
using tcp = asio::ip::tcp;
using error_code = boost::system::error_code;

constexpr std::int64_t kNsPerSec = 1'000'000'000;
constexpr std::int64_t kWarmupNs = kNsPerSec;
constexpr std::int64_t kStragglerNs = kNsPerSec;
constexpr std::int64_t kCloseWaitNs = kNsPerSec;
constexpr std::int64_t kMinPacerGapNs = 500'000;      // at most 2000 pacer wake-ups per second
constexpr std::size_t kMaxQueuedWrite = 256 * 1024;   // a sender this far behind skips a send
constexpr std::size_t kMaxFrame = 64 * 1024 * 1024;   // largest server frame we accept
constexpr std::size_t kSetupInflightPerThread = 128;  // clients in setup at once, per thread

std::int64_t now_ns() {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return std::int64_t{ts.tv_sec} * kNsPerSec + ts.tv_nsec;
}

[[noreturn]] void die(const std::string& msg) {
    fmt::print(stderr, "steerchat-bench: {}\n", msg);
    std::exit(1);
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

// ---------------------------------------------------------------------------------------------
// Options

struct Options {
    std::string host = "127.0.0.1";
    std::uint16_t port = 8080;
    std::uint32_t clients = 200;
    std::uint32_t rooms = 4;
    double rate = 10.0;  // says per second per sender
    std::optional<std::uint32_t> senders;
    double duration = 5.0;
    std::uint32_t threads = 1;
    int server_pid = 0;
    std::string json_file;
    std::string name_prefix = "b";
    std::string room_prefix = "bench";
    double connect_timeout = 30.0;
};

void usage(std::FILE* out) {
    fmt::print(out,
               "usage: steerchat-bench broadcast [options]\n"
               "  --host ADDR            loopback address of the server (127.0.0.0/8 or ::1; "
               "127.0.0.1)\n"
               "  --port P               server port (8080)\n"
               "  --clients C            WebSocket clients, at most 50000 (200)\n"
               "  --rooms R              rooms; client i joins room i % R (4)\n"
               "  --senders S            clients 0..S-1 send (all)\n"
               "  --rate X               says per second per sender (10)\n"
               "  --duration SECONDS     measurement after a 1 s warm-up, at most 600 (5)\n"
               "  --threads T            client io threads (1)\n"
               "  --server-pid PID       steerchat master: report its and its workers' CPU\n"
               "  --json FILE            also write the summary as a JSON object\n"
               "  --name-prefix P        login names P0, P1, ... (b)\n"
               "  --room-prefix P        room names P0, P1, ... (bench)\n"
               "  --connect-timeout S    setup of all clients must finish within S seconds "
               "(30)\n");
}

template <class T>
T parse_number(std::string_view flag, std::string_view s) {
    T v{};
    const auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc() || p != s.data() + s.size())
        die(fmt::format("{}: '{}' is not a valid number", flag, s));
    return v;
}

Options parse_options(int argc, char** argv) {
    if (argc < 2) {
        usage(stderr);
        std::exit(2);
    }
    const std::string_view scenario = argv[1];
    if (scenario == "--help" || scenario == "-h") {
        usage(stdout);
        std::exit(0);
    }
    if (scenario != "broadcast")
        die(fmt::format("unknown scenario '{}' (known: broadcast)", scenario));
    Options o;
    for (int i = 2; i < argc; ++i) {
        const std::string_view flag = argv[i];
        if (flag == "--help" || flag == "-h") {
            usage(stdout);
            std::exit(0);
        }
        if (i + 1 >= argc) die(fmt::format("{} needs a value (see --help)", flag));
        const std::string_view v = argv[++i];
        if (flag == "--host")
            o.host = v;
        else if (flag == "--port")
            o.port = parse_number<std::uint16_t>(flag, v);
        else if (flag == "--clients")
            o.clients = parse_number<std::uint32_t>(flag, v);
        else if (flag == "--rooms")
            o.rooms = parse_number<std::uint32_t>(flag, v);
        else if (flag == "--senders")
            o.senders = parse_number<std::uint32_t>(flag, v);
        else if (flag == "--rate")
            o.rate = parse_number<double>(flag, v);
        else if (flag == "--duration")
            o.duration = parse_number<double>(flag, v);
        else if (flag == "--threads")
            o.threads = parse_number<std::uint32_t>(flag, v);
        else if (flag == "--server-pid")
            o.server_pid = parse_number<int>(flag, v);
        else if (flag == "--json")
            o.json_file = v;
        else if (flag == "--name-prefix")
            o.name_prefix = v;
        else if (flag == "--room-prefix")
            o.room_prefix = v;
        else if (flag == "--connect-timeout")
            o.connect_timeout = parse_number<double>(flag, v);
        else
            die(fmt::format("unknown option '{}' (see --help)", flag));
    }
    if (o.clients == 0 || o.clients > 50000) die("--clients must be in 1..50000");
    if (o.rooms == 0 || o.rooms > o.clients) die("--rooms must be in 1..clients");
    if (!o.senders) o.senders = o.clients;
    if (*o.senders > o.clients) die("--senders must be at most --clients");
    if (!(o.rate > 0.0 && o.rate <= 100000.0)) die("--rate must be in (0, 100000]");
    if (!(o.duration > 0.0 && o.duration <= 600.0)) die("--duration must be in (0, 600]");
    if (o.threads == 0 || o.threads > 64) die("--threads must be in 1..64");
    if (!(o.connect_timeout > 0.0 && o.connect_timeout <= 600.0))
        die("--connect-timeout must be in (0, 600]");
    if (o.port == 0) die("--port must not be 0");
    if (o.server_pid < 0) die("--server-pid must be positive");
    auto plain = [](std::string_view s) {
        return std::all_of(s.begin(), s.end(), [](char c) {
            return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-';
        });
    };
    if (!plain(o.name_prefix) || o.name_prefix.size() > 64)
        die("--name-prefix: letters, digits, '_' and '-' only, at most 64");
    if (!plain(o.room_prefix) || o.room_prefix.empty() || o.room_prefix.size() > 64)
        die("--room-prefix: letters, digits, '_' and '-' only, 1 to 64");
    return o;
}

// ---------------------------------------------------------------------------------------------
// /proc: CPU ticks of a process and its children

std::optional<std::pair<int, std::uint64_t>> read_stat(int pid) {  // (ppid, utime + stime)
    std::ifstream f(fmt::format("/proc/{}/stat", pid));
    std::string line;
    if (!f || !std::getline(f, line)) return std::nullopt;
    const auto close = line.rfind(')');
    if (close == std::string::npos) return std::nullopt;
    // Fields after the command: 3 state, 4 ppid, ..., 14 utime, 15 stime.
    std::vector<std::string_view> fields;
    std::string_view rest = std::string_view(line).substr(close + 2);
    while (!rest.empty() && fields.size() < 13) {
        const auto sp = rest.find(' ');
        fields.push_back(rest.substr(0, sp));
        if (sp == std::string_view::npos) break;
        rest.remove_prefix(sp + 1);
    }
    if (fields.size() < 13) return std::nullopt;
    int ppid = 0;
    std::uint64_t ut = 0, st = 0;
    std::from_chars(fields[1].data(), fields[1].data() + fields[1].size(), ppid);
    std::from_chars(fields[11].data(), fields[11].data() + fields[11].size(), ut);
    std::from_chars(fields[12].data(), fields[12].data() + fields[12].size(), st);
    return std::make_pair(ppid, ut + st);
}

struct ProcCpu {
    std::uint64_t ticks = 0;
    int processes = 0;
};

ProcCpu server_cpu(int pid) {
    ProcCpu r;
    if (const auto s = read_stat(pid)) {
        r.ticks += s->second;
        ++r.processes;
    }
    DIR* d = opendir("/proc");
    if (!d) return r;
    while (const dirent* e = readdir(d)) {
        int child = 0;
        const std::string_view n = e->d_name;
        const auto [p, ec] = std::from_chars(n.data(), n.data() + n.size(), child);
        if (ec != std::errc() || p != n.data() + n.size() || child == pid) continue;
        if (const auto s = read_stat(child); s && s->first == pid) {
            r.ticks += s->second;
            ++r.processes;
        }
    }
    closedir(d);
    return r;
}

double own_cpu_seconds() {
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    auto sec = [](const timeval& t) { return static_cast<double>(t.tv_sec) + t.tv_usec / 1e6; };
    return sec(ru.ru_utime) + sec(ru.ru_stime);
}

// ---------------------------------------------------------------------------------------------
// Shared between the main thread and the io threads

struct Failure {
    std::mutex mu;
    std::string first;
    std::atomic<bool> failed{false};
    void set(std::string msg) {
        std::lock_guard lock(mu);
        if (first.empty()) first = std::move(msg);
        failed.store(true, std::memory_order_release);
    }
};

struct alignas(64) Counters {  // written by one io thread, read by main (relaxed)
    std::atomic<std::uint64_t> ready{0};
    std::atomic<std::uint64_t> closed{0};
    std::atomic<std::uint64_t> sends{0};
    std::atomic<std::uint64_t> deliveries{0};
    std::atomic<std::uint64_t> window_expected{0};
    std::atomic<std::uint64_t> window_received{0};
};

struct Plan {
    std::int64_t start = 0;          // sending starts (warm-up)
    std::int64_t measure_start = 0;  // window of send timestamps that count
    std::int64_t measure_end = 0;
};

class Worker;

// ---------------------------------------------------------------------------------------------
// One client connection

class Conn {
  public:
    enum class State { idle, connecting, handshake, login, join, ready, closing, closed };

    Conn(Worker& w, asio::io_context& io, std::uint32_t id, std::uint32_t room)
        : w_(w), sock_(io), id_(id), room_(room) {}

    void start_setup();
    void send_say(std::int64_t ts, bool in_window);
    void start_close();
    std::uint32_t id() const noexcept { return id_; }
    std::uint32_t room() const noexcept { return room_; }
    State state() const noexcept { return state_; }

  private:
    void on_connected(const error_code& ec);
    void read_handshake();
    bool check_handshake(std::string_view head);
    void read_frames();
    // Parses complete frames out of rbuf_; false when the connection was failed/closed.
    bool parse_frames(std::int64_t now);
    bool on_text(std::string_view payload, std::int64_t now);
    void queue_frame(ws::Opcode op, ws::ByteView payload);
    void queue_text(std::string_view s) { queue_frame(ws::Opcode::text, ws::as_bytes(s)); }
    void flush();
    void fail(std::string_view what);
    void finish();

    Worker& w_;
    tcp::socket sock_;
    std::uint32_t id_;
    std::uint32_t room_;
    State state_ = State::idle;
    std::uint64_t seq_ = 0;
    std::string key_;

    std::vector<std::uint8_t> rbuf_;
    std::size_t rlen_ = 0;
    std::vector<std::uint8_t> fragments_;  // a fragmented message (rare)
    ws::Opcode frag_op_ = ws::Opcode::text;
    bool in_fragments_ = false;

    std::vector<std::uint8_t> wq_;    // frames queued while a write is in flight
    std::vector<std::uint8_t> wfly_;  // the write in flight
    bool writing_ = false;
};

// ---------------------------------------------------------------------------------------------
// One io thread and its share of the clients

class Worker {
  public:
    Worker(const Options& o, std::uint32_t index, Counters& c, Failure& f, tcp::endpoint target)
        : opt(o), counters(c), failure(f), target(target), index_(index), pacer_(io) {
        std::random_device rd;
        rng_ =
            (std::uint64_t{rd()} << 32) ^ rd() ^ (std::uint64_t{index} << 17) ^ 0x9E3779B97F4A7C15;
        if (!rng_) rng_ = 1;
        for (std::uint32_t r = 0; r < o.rooms; ++r)
            say_prefix.push_back(
                fmt::format(R"({{"type":"say","room":"{}{}","text":")", o.room_prefix, r));
        members.resize(o.rooms);
        for (std::uint32_t i = 0; i < o.clients; ++i)
            ++members[i % o.rooms];
        rbuf_size = std::clamp<std::size_t>((std::size_t{64} << 20) / o.clients, 4096, 65536);
        for (std::uint32_t i = index; i < o.clients; i += o.threads) {
            conns_.push_back(std::make_unique<Conn>(*this, io, i, i % o.rooms));
            if (i < *o.senders) senders_.push_back(conns_.back().get());
        }
    }

    void run() {
        auto guard = asio::make_work_guard(io);
        io.run();
    }

    // Called on the io thread.
    void begin_setup() {
        for (std::size_t k = 0; k < std::min(kSetupInflightPerThread, conns_.size()); ++k)
            setup_next();
    }
    void setup_next() {
        if (next_setup_ < conns_.size()) conns_[next_setup_++]->start_setup();
    }
    void on_ready() {
        counters.ready.fetch_add(1, std::memory_order_relaxed);
        setup_next();
    }
    void begin_sending(Plan p) {
        plan = p;
        if (senders_.empty()) return;
        interval_ = 1e9 / (opt.rate * static_cast<double>(senders_.size()));
        // Spread this thread's senders over the interval; threads are offset from each other.
        offset_ = interval_ * static_cast<double>(index_) / static_cast<double>(opt.threads);
        pace();
    }
    void begin_close() {
        closing_ = true;
        pacer_.cancel();
        for (auto& c : conns_)
            c->start_close();
    }
    void stop() { io.stop(); }

    std::uint64_t next_mask() noexcept {  // xorshift64
        rng_ ^= rng_ << 13;
        rng_ ^= rng_ >> 7;
        rng_ ^= rng_ << 17;
        return rng_;
    }

    const Options& opt;
    asio::io_context io{1};
    Counters& counters;
    Failure& failure;
    tcp::endpoint target;
    Plan plan;
    std::vector<std::string> say_prefix;
    std::vector<std::uint64_t> members;  // clients per room
    std::size_t rbuf_size = 4096;
    std::array<char, 512> scratch{};  // a say being built

    // Thread-local results (read by main after the thread ended).
    Histogram hist;
    std::uint64_t window_sends = 0;
    std::uint64_t skipped = 0;     // sends skipped: the connection's write queue was full
    std::uint64_t lost = 0;        // connections dropped after setup
    std::uint64_t errors = 0;      // "error" frames received after setup
    std::uint64_t foreign = 0;     // message frames without our "t=" text
    std::int64_t max_lag = 0;      // worst lateness of the pacer behind schedule, in window
    std::string first_lost;        // why the first connection was dropped
    std::string first_error;       // the first error frame
    std::uint64_t deliveries = 0;  // mirrored to counters.deliveries
    std::uint64_t window_received = 0;
    std::uint64_t window_expected = 0;
    std::uint64_t sends = 0;
    bool closing_ = false;

  private:
    double due(std::uint64_t g) const noexcept {
        return static_cast<double>(plan.start) + offset_ + static_cast<double>(g) * interval_;
    }
    void pace() {
        if (closing_) return;
        const std::int64_t now = now_ns();
        while (true) {
            const double d = due(g_);
            if (d > static_cast<double>(now)) break;
            if (d >= static_cast<double>(plan.measure_end)) return;  // done sending
            Conn* c = senders_[g_ % senders_.size()];
            ++g_;
            const std::int64_t ts = now_ns();
            const bool in_window = ts >= plan.measure_start && ts < plan.measure_end;
            if (in_window) max_lag = std::max(max_lag, ts - static_cast<std::int64_t>(d));
            c->send_say(ts, in_window);
        }
        counters.sends.store(sends, std::memory_order_relaxed);
        counters.window_expected.store(window_expected, std::memory_order_relaxed);
        const double d = due(g_);
        if (d >= static_cast<double>(plan.measure_end)) return;
        const auto next = std::max(static_cast<std::int64_t>(d), now + kMinPacerGapNs);
        pacer_.expires_at(asio::steady_timer::time_point(std::chrono::nanoseconds(next)));
        pacer_.async_wait([this](const error_code& ec) {
            if (!ec) pace();
        });
    }

    std::uint32_t index_;
    std::vector<std::unique_ptr<Conn>> conns_;
    std::vector<Conn*> senders_;
    std::size_t next_setup_ = 0;
    asio::steady_timer pacer_;
    double interval_ = 0;
    double offset_ = 0;
    std::uint64_t g_ = 0;
    std::uint64_t rng_ = 1;
};

// ---------------------------------------------------------------------------------------------
// Conn implementation

void Conn::fail(std::string_view what) {
    const State was = state_;
    if (was == State::closed) return;
    if (was == State::closing) {
        finish();
        return;
    }
    if (was == State::ready) {
        ++w_.lost;
        if (w_.first_lost.empty()) w_.first_lost = fmt::format("client {}: {}", id_, what);
    } else {
        w_.failure.set(
            fmt::format("client {} ({}{}) during setup: {}", id_, w_.opt.name_prefix, id_, what));
    }
    finish();
}

void Conn::finish() {
    if (state_ == State::closed) return;
    state_ = State::closed;
    error_code ignored;
    sock_.shutdown(tcp::socket::shutdown_both, ignored);
    sock_.close(ignored);
    w_.counters.closed.fetch_add(1, std::memory_order_relaxed);
}

void Conn::start_setup() {
    state_ = State::connecting;
    rbuf_.resize(w_.rbuf_size);
    wq_.reserve(1024);
    wfly_.reserve(1024);
    error_code ec;
    const bool v4 = w_.target.address().is_v4();
    sock_.open(v4 ? tcp::v4() : tcp::v6(), ec);
    if (ec) return fail(fmt::format("socket: {}", ec.message()));
    if (v4) {
        // A distinct loopback source per client (127.1.0.1 + id) so steering spreads them; the
        // port is chosen at connect() time (IP_BIND_ADDRESS_NO_PORT), per source address.
        int one = 1;
        ::setsockopt(sock_.native_handle(), IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
        const std::uint32_t a = (127u << 24) | (1u << 16) | (id_ + 1);
        sock_.bind(tcp::endpoint(asio::ip::address_v4(a), 0), ec);
        if (ec)
            return fail(
                fmt::format("bind to {}: {}", asio::ip::address_v4(a).to_string(), ec.message()));
    }
    sock_.set_option(tcp::no_delay(true), ec);
    sock_.async_connect(w_.target, [this](const error_code& e) { on_connected(e); });
}

void Conn::on_connected(const error_code& ec) {
    if (ec)
        return fail(
            fmt::format("connect to {}: {} (is steerchat running on that port?)",
                        fmt::format("[{}]:{}", w_.target.address().to_string(), w_.target.port()),
                        ec.message()));
    state_ = State::handshake;
    std::array<unsigned char, 16> raw{};
    for (std::size_t i = 0; i < raw.size(); i += 8) {
        const std::uint64_t r = w_.next_mask();
        std::memcpy(raw.data() + i, &r, 8);
    }
    std::array<unsigned char, 32> b64{};
    const int n = EVP_EncodeBlock(b64.data(), raw.data(), static_cast<int>(raw.size()));
    key_.assign(reinterpret_cast<const char*>(b64.data()), static_cast<std::size_t>(n));
    const std::string host =
        w_.target.address().is_v6()
            ? fmt::format("[{}]:{}", w_.target.address().to_string(), w_.target.port())
            : fmt::format("{}:{}", w_.target.address().to_string(), w_.target.port());
    const std::string req = fmt::format(
        "GET /ws HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: {}\r\nSec-WebSocket-Version: 13\r\n\r\n",
        host, key_);
    wq_.assign(req.begin(), req.end());
    flush();
    read_handshake();
}

bool Conn::check_handshake(std::string_view head) {
    const auto eol = head.find("\r\n");
    const std::string_view status = head.substr(0, eol);
    if (!status.starts_with("HTTP/1.1 101")) {
        const std::string_view body = head.substr(std::min(head.size(), head.find("\r\n\r\n") + 4));
        fail(fmt::format("server refused the WebSocket upgrade: '{}' {}", status,
                         body.substr(0, 200)));
        return false;
    }
    // Sec-WebSocket-Accept, header names case-insensitive.
    std::string lower(head);
    std::transform(lower.begin(), lower.end(), lower.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    const auto h = lower.find("\r\nsec-websocket-accept:");
    if (h == std::string::npos) {
        fail("101 without Sec-WebSocket-Accept");
        return false;
    }
    std::string_view v = head.substr(h + 23);
    v = v.substr(0, v.find("\r\n"));
    while (!v.empty() && (v.front() == ' ' || v.front() == '\t'))
        v.remove_prefix(1);
    while (!v.empty() && (v.back() == ' ' || v.back() == '\t'))
        v.remove_suffix(1);
    if (v != ws::compute_accept_key(key_)) {
        fail(fmt::format("wrong Sec-WebSocket-Accept '{}'", v));
        return false;
    }
    return true;
}

void Conn::read_handshake() {
    sock_.async_read_some(
        asio::buffer(rbuf_.data() + rlen_, rbuf_.size() - rlen_),
        [this](const error_code& ec, std::size_t n) {
            if (state_ == State::closed) return;
            if (ec) return fail(fmt::format("reading the upgrade response: {}", ec.message()));
            rlen_ += n;
            const std::string_view got(reinterpret_cast<const char*>(rbuf_.data()), rlen_);
            const auto end = got.find("\r\n\r\n");
            if (end == std::string_view::npos) {
                if (rlen_ == rbuf_.size()) return fail("upgrade response headers too large");
                return read_handshake();
            }
            if (!check_handshake(got.substr(0, end + 4))) return;
            const std::size_t used = end + 4;
            std::memmove(rbuf_.data(), rbuf_.data() + used, rlen_ - used);
            rlen_ -= used;
            state_ = State::login;
            const std::string login =
                fmt::format(R"({{"type":"login","name":"{}{}"}})", w_.opt.name_prefix, id_);
            queue_text(login);
            if (!parse_frames(now_ns())) return;
            read_frames();
        });
}

void Conn::read_frames() {
    if (rlen_ == rbuf_.size()) rbuf_.resize(rbuf_.size() * 2);  // a large frame (setup only)
    sock_.async_read_some(asio::buffer(rbuf_.data() + rlen_, rbuf_.size() - rlen_),
                          [this](const error_code& ec, std::size_t n) {
                              if (state_ == State::closed) return;
                              if (ec) {
                                  if (ec == asio::error::eof && state_ == State::closing)
                                      return finish();
                                  return fail(ec == asio::error::eof
                                                  ? std::string("server closed the connection")
                                                  : ec.message());
                              }
                              rlen_ += n;
                              if (!parse_frames(now_ns())) return;
                              read_frames();
                          });
}

bool Conn::parse_frames(std::int64_t now) {
    std::size_t pos = 0;
    while (rlen_ - pos >= 2) {
        const std::uint8_t* p = rbuf_.data() + pos;
        const std::size_t avail = rlen_ - pos;
        const bool fin = (p[0] & 0x80) != 0;
        const auto op = static_cast<ws::Opcode>(p[0] & 0x0F);
        if (p[1] & 0x80) {
            fail("masked server frame");
            return false;
        }
        std::size_t hdr = 2;
        std::uint64_t len = p[1] & 0x7F;
        if (len == 126) {
            if (avail < 4) break;
            len = (std::uint64_t{p[2]} << 8) | p[3];
            hdr = 4;
        } else if (len == 127) {
            if (avail < 10) break;
            len = 0;
            for (int i = 0; i < 8; ++i)
                len = (len << 8) | p[2 + i];
            hdr = 10;
        }
        if (len > kMaxFrame) {
            fail(fmt::format("server frame of {} bytes", len));
            return false;
        }
        if (avail < hdr + len) {
            if (hdr + len > rbuf_.size()) {  // grow (only welcome/joined get this large)
                std::memmove(rbuf_.data(), rbuf_.data() + pos, avail);
                rlen_ = avail;
                pos = 0;
                rbuf_.resize(hdr + len);
            }
            break;
        }
        const std::string_view payload(reinterpret_cast<const char*>(p + hdr), len);
        pos += hdr + len;
        if (ws::is_control(op)) {
            if (op == ws::Opcode::ping) {
                queue_frame(ws::Opcode::pong, ws::as_bytes(payload));
            } else if (op == ws::Opcode::close) {
                if (state_ == State::closing) {
                    finish();
                    return false;
                }
                std::uint16_t code = ws::close_code::no_status;
                if (payload.size() >= 2)
                    code = static_cast<std::uint16_t>((static_cast<std::uint8_t>(payload[0]) << 8) |
                                                      static_cast<std::uint8_t>(payload[1]));
                fail(fmt::format("server sent Close {} '{}'", code,
                                 payload.size() > 2 ? payload.substr(2) : std::string_view()));
                return false;
            }
            continue;
        }
        if (op != ws::Opcode::continuation && fin && !in_fragments_) {
            if (op == ws::Opcode::text && !on_text(payload, now)) return false;
            continue;
        }
        // Fragmented message.
        if (op != ws::Opcode::continuation) {
            in_fragments_ = true;
            frag_op_ = op;
            fragments_.clear();
        }
        fragments_.insert(fragments_.end(), payload.begin(), payload.end());
        if (fin) {
            in_fragments_ = false;
            if (frag_op_ == ws::Opcode::text &&
                !on_text(std::string_view(reinterpret_cast<const char*>(fragments_.data()),
                                          fragments_.size()),
                         now))
                return false;
        }
    }
    if (pos > 0) {
        std::memmove(rbuf_.data(), rbuf_.data() + pos, rlen_ - pos);
        rlen_ -= pos;
    }
    if (rbuf_.size() > w_.rbuf_size && rlen_ <= w_.rbuf_size && state_ == State::ready) {
        rbuf_.resize(w_.rbuf_size);
        rbuf_.shrink_to_fit();
    }
    return true;
}

// Reads a decimal number at the start of `s`; advances `s`.
bool take_number(std::string_view& s, std::uint64_t& v) {
    const auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc()) return false;
    s.remove_prefix(static_cast<std::size_t>(p - s.data()));
    return true;
}

bool Conn::on_text(std::string_view payload, std::int64_t now) {
    constexpr std::string_view kMessage = R"({"type":"message")";
    if (payload.starts_with(kMessage)) {
        // Hot path: a cheap scan for our text, no JSON parse.
        constexpr std::string_view kText = R"("text":"t=)";
        const auto at = payload.find(kText, kMessage.size());
        std::uint64_t t = 0;
        std::string_view rest =
            at == std::string_view::npos ? std::string_view() : payload.substr(at + kText.size());
        if (at == std::string_view::npos || !take_number(rest, t)) {
            ++w_.foreign;
            return true;
        }
        ++w_.deliveries;
        w_.counters.deliveries.store(w_.deliveries, std::memory_order_relaxed);
        const auto ts = static_cast<std::int64_t>(t);
        if (ts >= w_.plan.measure_start && ts < w_.plan.measure_end) {
            w_.hist.record(now - ts);
            ++w_.window_received;
            w_.counters.window_received.store(w_.window_received, std::memory_order_relaxed);
        }
        return true;
    }
    if (state_ == State::ready || state_ == State::closing) {
        if (payload.starts_with(R"({"type":"error")")) {
            ++w_.errors;
            if (w_.first_error.empty()) w_.first_error = std::string(payload.substr(0, 300));
        }
        return true;  // online/offline and anything else: ignored
    }
    if (payload.starts_with(R"({"type":"error")")) {
        const bool taken = payload.find(R"("name_taken")") != std::string_view::npos;
        fail(fmt::format("server answered {}{}", payload.substr(0, 300),
                         taken ? " (another client holds that name: a bench still running? "
                                 "use --name-prefix)"
                               : ""));
        return false;
    }
    if (state_ == State::login && payload.starts_with(R"({"type":"welcome")")) {
        state_ = State::join;
        const std::string join =
            fmt::format(R"({{"type":"join","room":"{}{}"}})", w_.opt.room_prefix, room_);
        queue_text(join);
    } else if (state_ == State::join && payload.starts_with(R"({"type":"joined")")) {
        state_ = State::ready;
        w_.on_ready();
    }
    return true;
}

void Conn::queue_frame(ws::Opcode op, ws::ByteView payload) {
    const std::uint64_t m = w_.next_mask();
    ws::MaskKey key{};
    std::memcpy(key.data(), &m, 4);
    ws::encode_client_frame(wq_, op, payload, key);
    flush();
}

void Conn::flush() {
    if (writing_ || wq_.empty() || state_ == State::closed) return;
    std::swap(wq_, wfly_);
    wq_.clear();
    writing_ = true;
    asio::async_write(sock_, asio::buffer(wfly_), [this](const error_code& ec, std::size_t) {
        writing_ = false;
        wfly_.clear();
        if (state_ == State::closed) return;
        if (ec) return fail(fmt::format("write: {}", ec.message()));
        flush();
    });
}

void Conn::send_say(std::int64_t ts, bool in_window) {
    if (state_ != State::ready) return;
    if (wq_.size() > kMaxQueuedWrite) {
        ++w_.skipped;
        return;
    }
    const std::string& prefix = w_.say_prefix[room_];
    char* const begin = w_.scratch.data();
    char* out = std::copy(prefix.begin(), prefix.end(), begin);
    out = fmt::format_to(out, "t={} s={} seq={}\"}}", ts, id_, seq_++);
    queue_frame(ws::Opcode::text, ws::ByteView(reinterpret_cast<const std::uint8_t*>(begin),
                                               static_cast<std::size_t>(out - begin)));
    ++w_.sends;
    if (in_window) {
        ++w_.window_sends;
        w_.window_expected += w_.members[room_];
    }
}

void Conn::start_close() {
    if (state_ == State::closed || state_ == State::closing) return;
    if (state_ != State::ready) return finish();
    std::uint8_t payload[ws::kMaxControlPayload];
    const std::size_t n = ws::close_payload(payload, ws::close_code::normal, "bench done");
    queue_frame(ws::Opcode::close, ws::ByteView(payload, n));
    state_ = State::closing;
}

// ---------------------------------------------------------------------------------------------
// main

void sleep_until_ns(std::int64_t t) {
    timespec ts{static_cast<time_t>(t / kNsPerSec), static_cast<long>(t % kNsPerSec)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr) == EINTR) {
    }
}

double ms(std::int64_t ns) {
    return static_cast<double>(ns) / 1e6;
}

int run(const Options& opt) {
    // Target: loopback only.
    error_code ec;
    const asio::ip::address addr = asio::ip::make_address(opt.host, ec);
    if (ec) die(fmt::format("--host '{}' is not an IP address", opt.host));
    if (!(addr.is_v4() && (addr.to_v4().to_uint() >> 24) == 127) &&
        !(addr.is_v6() && addr.to_v6() == asio::ip::address_v6::loopback()))
        die(fmt::format("--host {} is not a loopback address (127.0.0.0/8 or ::1)", opt.host));
    if (addr.is_v6())
        fmt::print(stderr,
                   "steerchat-bench: warning: IPv6 loopback has one source address, every "
                   "client lands on the same worker\n");
    const tcp::endpoint target(addr, opt.port);

    // File descriptors: one per client plus slack.
    rlimit rl{};
    getrlimit(RLIMIT_NOFILE, &rl);
    const rlim_t need = opt.clients + 64;
    if (rl.rlim_cur < need) {
        if (rl.rlim_max < need)
            die(
                fmt::format("{} clients need {} file descriptors, the hard limit is {} "
                            "(ulimit -Hn)",
                            opt.clients, need, rl.rlim_max));
        rl.rlim_cur = need;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0) die("setrlimit(RLIMIT_NOFILE) failed");
    }
    if (opt.server_pid && !read_stat(opt.server_pid))
        die(fmt::format("--server-pid {}: no such process", opt.server_pid));
    const long hz = sysconf(_SC_CLK_TCK);

    Failure failure;
    std::vector<Counters> counters(opt.threads);
    std::vector<std::unique_ptr<Worker>> workers;
    for (std::uint32_t t = 0; t < opt.threads; ++t)
        workers.push_back(std::make_unique<Worker>(opt, t, counters[t], failure, target));
    std::vector<std::thread> threads;
    for (auto& w : workers)
        threads.emplace_back([&w] { w->run(); });
    auto stop_all = [&] {
        for (auto& w : workers)
            w->stop();
        for (auto& t : threads)
            t.join();
    };
    auto sum = [&](auto member) {
        std::uint64_t s = 0;
        for (auto& c : counters)
            s += (c.*member).load(std::memory_order_relaxed);
        return s;
    };

    // Setup.
    const std::uint32_t senders = *opt.senders;
    fmt::print(stderr,
               "steerchat-bench broadcast: {} clients, {} rooms, {} senders at {}/s, {} s, {} "
               "thread(s), target {}\n",
               opt.clients, opt.rooms, senders, opt.rate, opt.duration, opt.threads,
               opt.host + ":" + std::to_string(opt.port));
    const std::int64_t setup_start = now_ns();
    for (auto& w : workers)
        asio::post(w->io, [&w] { w->begin_setup(); });
    const auto setup_deadline = setup_start + static_cast<std::int64_t>(opt.connect_timeout * 1e9);
    std::int64_t next_report = setup_start + kNsPerSec;
    while (sum(&Counters::ready) < opt.clients) {
        if (failure.failed.load(std::memory_order_acquire)) {
            stop_all();
            die(fmt::format("setup failed after {} of {} clients were ready: {}",
                            sum(&Counters::ready), opt.clients, failure.first));
        }
        const std::int64_t now = now_ns();
        if (now > setup_deadline) {
            stop_all();
            die(fmt::format("setup timed out after {} s: {} of {} clients logged in and joined",
                            opt.connect_timeout, sum(&Counters::ready), opt.clients));
        }
        if (now >= next_report) {
            fmt::print(stderr, "  setup: {} / {} clients ready\n", sum(&Counters::ready),
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
    for (auto& w : workers)
        asio::post(w->io, [&w, plan] { w->begin_sending(plan); });

    ProcCpu cpu0, cpu1;
    double own0 = 0, own1 = 0;
    std::uint64_t last_deliveries = 0, last_sends = 0;
    std::int64_t tick = plan.start + kNsPerSec;
    bool measuring = false;
    while (tick <= plan.measure_end) {
        sleep_until_ns(measuring ? tick : std::min(tick, plan.measure_start));
        if (!measuring && now_ns() >= plan.measure_start) {
            measuring = true;
            if (opt.server_pid) cpu0 = server_cpu(opt.server_pid);
            own0 = own_cpu_seconds();
        }
        if (now_ns() < tick) continue;
        const std::uint64_t d = sum(&Counters::deliveries), s = sum(&Counters::sends);
        const double at = static_cast<double>(tick - plan.start) / 1e9;
        fmt::print(stderr, "  [{:6.1f} s] {:<8} sends/s {:>9}  deliveries/s {:>10}\n", at,
                   tick <= plan.measure_start ? "warm-up" : "measure", s - last_sends,
                   d - last_deliveries);
        last_deliveries = d;
        last_sends = s;
        tick += kNsPerSec;
    }
    sleep_until_ns(plan.measure_end);
    if (opt.server_pid) cpu1 = server_cpu(opt.server_pid);
    own1 = own_cpu_seconds();

    // Stragglers: until every expected delivery of the window arrived, at most 1 s.
    const std::int64_t straggle_end = plan.measure_end + kStragglerNs;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));  // pacers see the end
    while (now_ns() < straggle_end &&
           sum(&Counters::window_received) < sum(&Counters::window_expected))
        std::this_thread::sleep_for(std::chrono::milliseconds(5));

    // Close.
    for (auto& w : workers)
        asio::post(w->io, [&w] { w->begin_close(); });
    const std::int64_t close_end = now_ns() + kCloseWaitNs;
    while (now_ns() < close_end && sum(&Counters::closed) < opt.clients)
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    stop_all();

    // Summary.
    Histogram hist;
    std::uint64_t window_sends = 0, expected = 0, received = 0, skipped = 0, lost = 0, errors = 0,
                  foreign = 0;
    std::int64_t max_lag = 0;
    std::string first_lost, first_error;
    for (auto& w : workers) {
        hist.merge(w->hist);
        window_sends += w->window_sends;
        expected += w->window_expected;
        received += w->window_received;
        skipped += w->skipped;
        lost += w->lost;
        errors += w->errors;
        foreign += w->foreign;
        max_lag = std::max(max_lag, w->max_lag);
        if (first_lost.empty()) first_lost = w->first_lost;
        if (first_error.empty()) first_error = w->first_error;
    }
    const double dur = static_cast<double>(plan.measure_end - plan.measure_start) / 1e9;
    const double server_cpu_s =
        opt.server_pid ? static_cast<double>(cpu1.ticks - cpu0.ticks) / static_cast<double>(hz)
                       : 0.0;
    const double loss =
        expected ? 1.0 - static_cast<double>(received) / static_cast<double>(expected) : 0.0;
    const double deliveries_per_s = static_cast<double>(received) / dur;
    const double own_cpu = own1 - own0;

    fmt::print("broadcast: {} clients, {} rooms, {} senders x {}/s, {:.1f} s measured\n",
               opt.clients, opt.rooms, senders, opt.rate, dur);
    fmt::print(
        "  offered        {:12.0f} msgs/s   (target {:.0f}; {} skipped: write queue full; "
        "pacer lag max {:.2f} ms)\n",
        static_cast<double>(window_sends) / dur, opt.rate * senders, skipped, ms(max_lag));
    fmt::print("  deliveries     {:12.0f} /s\n", deliveries_per_s);
    fmt::print("  expected       {:12}   received {}   loss {:.4f} %\n", expected, received,
               loss * 100);
    fmt::print("  latency ms     p50 {:.3f}   p99 {:.3f}   p99.9 {:.3f}   max {:.3f}\n",
               ms(hist.quantile(0.5)), ms(hist.quantile(0.99)), ms(hist.quantile(0.999)),
               ms(hist.max()));
    if (opt.server_pid)
        fmt::print(
            "  server CPU     {:12.2f} s ({} processes; {:.0f} % of one core)   "
            "deliveries per server CPU-s {:.0f}\n",
            server_cpu_s, cpu1.processes, server_cpu_s / dur * 100,
            server_cpu_s > 0 ? static_cast<double>(received) / server_cpu_s : 0.0);
    fmt::print("  bench CPU      {:12.2f} s ({:.0f} % of one core)\n", own_cpu,
               own_cpu / dur * 100);
    if (lost) fmt::print("  connections lost during the run: {} (first: {})\n", lost, first_lost);
    if (errors) fmt::print("  error frames: {} (first: {})\n", errors, first_error);
    if (foreign) fmt::print("  messages without our timestamp: {}\n", foreign);

    if (!opt.json_file.empty()) {
        boost::json::object j;
        j["scenario"] = "broadcast";
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
        j["latency_ms"] = {{"p50", ms(hist.quantile(0.5))},
                           {"p99", ms(hist.quantile(0.99))},
                           {"p999", ms(hist.quantile(0.999))},
                           {"max", ms(hist.max())}};
        if (opt.server_pid) {
            j["server_cpu_s"] = server_cpu_s;
            j["server_processes"] = cpu1.processes;
            j["deliveries_per_server_cpu_s"] =
                server_cpu_s > 0 ? static_cast<double>(received) / server_cpu_s : 0.0;
        }
        j["bench_cpu_s"] = own_cpu;
        j["connections_lost"] = lost;
        j["error_frames"] = errors;
        std::ofstream f(opt.json_file);
        f << boost::json::serialize(j) << "\n";
        if (!f) die(fmt::format("could not write {}", opt.json_file));
    }
    return lost ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
    const Options opt = parse_options(argc, argv);
    try {
        return run(opt);
    } catch (const std::exception& e) {
        die(e.what());
    }
}
