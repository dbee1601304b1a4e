// steerchat-ring-bench: one-way hop latency between two processes (issue 3).
//
// The parent and a forked child, pinned to different CPUs, ping-pong a 16-byte message
// (sequence number + CLOCK_MONOTONIC send time). One-way hop = round trip / 2. Modes:
//   ring-spin   ring::Reader::poll in a busy loop on both sides
//   ring-sleep  ring::Reader::wait with spin 0 (sleeps on the eventfd every time)
//   socketpair  AF_UNIX SOCK_SEQPACKET, blocking read/write of the same 16 bytes
// The socketpair runs in the same process pair layout in the same run, as the peer that every
// ring figure is compared with. Exits non-zero on any lost or reordered sequence number.
#include <fmt/format.h>
#include <sched.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "ring/ring.hpp"

namespace {

namespace ring = steerchat::ring;
using namespace std::chrono_literals;

constexpr std::uint32_t kPing = 1;
constexpr std::uint32_t kStop = 2;
constexpr std::int64_t kModeBudgetNs = 20'000'000'000;   // stop a mode after 20 s
constexpr std::int64_t kReplyTimeoutNs = 5'000'000'000;  // a peer silent this long is dead
constexpr std::size_t kBytesPerLog = std::size_t{1} << 20;

// Child exit codes.
constexpr int kChildOk = 0;
constexpr int kChildSeqError = 3;
constexpr int kChildLoss = 4;
constexpr int kChildError = 5;

struct Message {
    std::uint64_t seq;
    std::uint64_t sent_ns;
};
static_assert(sizeof(Message) == 16);

std::int64_t now_ns() {
    timespec ts{};
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

bool pin_to(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return ::sched_setaffinity(0, sizeof set, &set) == 0;
}

std::span<const std::byte> bytes_of(const Message& m) {
    return {reinterpret_cast<const std::byte*>(&m), sizeof m};
}

Message message_of(std::span<const std::byte> payload) {
    Message m{};
    if (payload.size() == sizeof m) std::memcpy(&m, payload.data(), sizeof m);
    return m;
}

enum class Mode { ring_spin, ring_sleep, socketpair };

const char* name_of(Mode m) {
    switch (m) {
        case Mode::ring_spin:
            return "ring-spin";
        case Mode::ring_sleep:
            return "ring-sleep";
        case Mode::socketpair:
            return "socketpair";
    }
    return "?";
}

struct Result {
    Mode mode = Mode::ring_spin;
    std::uint64_t requested = 0;
    std::uint64_t warmup = 0;
    std::uint64_t rounds = 0;  // measured round trips completed
    bool truncated = false;    // stopped by the 20 s bound
    bool ok = true;
    std::string error;
    double p50_us = 0, p99_us = 0, p999_us = 0, max_us = 0;
};

// Blocking wait on the parent/child handshake pipe.
bool read_byte(int fd) {
    char c;
    for (;;) {
        const auto n = ::read(fd, &c, 1);
        if (n == 1) return true;
        if (n < 0 && errno == EINTR) continue;
        return false;
    }
}

void write_byte(int fd) {
    const char c = 'r';
    while (::write(fd, &c, 1) < 0 && errno == EINTR) {
    }
}

void child_setup(int cpu) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (!pin_to(cpu)) std::fprintf(stderr, "warning: child could not pin to cpu %d\n", cpu);
}

// ---- ring -------------------------------------------------------------------------------

// Child side: echo every ping into its own log until the stop record.
int ring_child(ring::Region& region, bool sleep, int ready_fd) {
    ring::Writer writer(region, 1);
    ring::Reader reader(region, 1, ring::ReaderOptions{.spin = sleep ? 0ns : 30us});
    write_byte(ready_fd);
    std::uint64_t expected = 0;
    int status = -1;
    while (status < 0) {
        const std::size_t got = reader.poll(
            [&](const ring::Record& r) {
                if (status >= 0) return;
                if (r.type == kStop) {
                    status = kChildOk;
                    return;
                }
                const Message m = message_of(r.payload);
                if (r.type != kPing || m.seq != expected) {
                    status = kChildSeqError;
                    return;
                }
                ++expected;
                writer.publish(kPing, bytes_of(m));
            },
            [&](const ring::Loss&) { status = kChildLoss; });
        if (got == 0 && status < 0 && sleep) reader.wait(100ms);
    }
    return status;
}

// Parent side. Returns false (with `error`) on a protocol failure.
bool ring_parent(ring::Region& region, bool sleep, Result& res, std::vector<std::int64_t>& hops) {
    ring::Writer writer(region, 0);
    ring::Reader reader(region, 0, ring::ReaderOptions{.spin = 0ns});
    const std::uint64_t total = res.warmup + res.requested;
    const std::int64_t start = now_ns();
    std::uint64_t seq = 0;
    for (; seq < total; ++seq) {
        const Message out{seq, static_cast<std::uint64_t>(now_ns())};
        writer.publish(kPing, bytes_of(out));
        bool got_reply = false;
        bool bad = false;
        std::uint64_t empty = 0;
        std::int64_t waited_since = 0;
        while (!got_reply) {
            const std::size_t n = reader.poll(
                [&](const ring::Record& r) {
                    const Message in = message_of(r.payload);
                    const std::int64_t t = now_ns();
                    if (got_reply || r.type != kPing || in.seq != seq) {
                        bad = true;
                        return;
                    }
                    got_reply = true;
                    if (seq >= res.warmup)
                        hops.push_back((t - static_cast<std::int64_t>(in.sent_ns)) / 2);
                },
                [&](const ring::Loss& l) {
                    bad = true;
                    res.error = fmt::format("loss reported: {} records", l.records);
                });
            if (bad) {
                if (res.error.empty())
                    res.error = fmt::format("lost/reordered reply at seq {}", seq);
                return false;
            }
            if (n != 0) continue;
            if (sleep) {
                reader.wait(100ms);
            } else if ((++empty & 0xFFF) != 0) {
                continue;
            }
            const std::int64_t t = now_ns();
            if (waited_since == 0) waited_since = t;
            if (t - waited_since > kReplyTimeoutNs) {
                res.error = fmt::format("no reply for seq {} within 5 s", seq);
                return false;
            }
        }
        if ((seq & 0xFF) == 0 && now_ns() - start > kModeBudgetNs) {
            res.truncated = true;
            ++seq;
            break;
        }
    }
    res.rounds = seq > res.warmup ? seq - res.warmup : 0;
    writer.publish(kStop, {});
    return true;
}

// ---- socketpair -------------------------------------------------------------------------

bool read_full(int fd, Message& m) {
    for (;;) {
        const auto n = ::read(fd, &m, sizeof m);
        if (n == static_cast<ssize_t>(sizeof m)) return true;
        if (n < 0 && errno == EINTR) continue;
        return false;  // EOF, error or short packet
    }
}

bool write_full(int fd, const Message& m) {
    for (;;) {
        const auto n = ::write(fd, &m, sizeof m);
        if (n == static_cast<ssize_t>(sizeof m)) return true;
        if (n < 0 && errno == EINTR) continue;
        return false;
    }
}

int sock_child(int fd, int ready_fd) {
    write_byte(ready_fd);
    std::uint64_t expected = 0;
    Message m{};
    for (;;) {
        if (!read_full(fd, m)) return kChildOk;  // parent closed: done
        if (m.seq != expected) return kChildSeqError;
        ++expected;
        if (!write_full(fd, m)) return kChildError;
    }
}

bool sock_parent(int fd, Result& res, std::vector<std::int64_t>& hops) {
    timeval tv{5, 0};  // a silent peer is dead
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    const std::uint64_t total = res.warmup + res.requested;
    const std::int64_t start = now_ns();
    std::uint64_t seq = 0;
    for (; seq < total; ++seq) {
        const Message out{seq, static_cast<std::uint64_t>(now_ns())};
        if (!write_full(fd, out)) {
            res.error = fmt::format("write failed at seq {}: {}", seq, std::strerror(errno));
            return false;
        }
        Message in{};
        if (!read_full(fd, in)) {
            res.error = fmt::format("no reply for seq {}: {}", seq, std::strerror(errno));
            return false;
        }
        const std::int64_t t = now_ns();
        if (in.seq != seq) {
            res.error = fmt::format("lost/reordered reply at seq {} (got {})", seq, in.seq);
            return false;
        }
        if (seq >= res.warmup) hops.push_back((t - static_cast<std::int64_t>(in.sent_ns)) / 2);
        if ((seq & 0xFF) == 0 && now_ns() - start > kModeBudgetNs) {
            res.truncated = true;
            ++seq;
            break;
        }
    }
    res.rounds = seq > res.warmup ? seq - res.warmup : 0;
    return true;
}

// ---- driver -----------------------------------------------------------------------------

double percentile_us(const std::vector<std::int64_t>& sorted, double q) {
    if (sorted.empty()) return 0;
    auto i = static_cast<std::size_t>(q * static_cast<double>(sorted.size()));
    if (i >= sorted.size()) i = sorted.size() - 1;
    return static_cast<double>(sorted[i]) / 1000.0;
}

Result run_mode(Mode mode, std::uint64_t rounds, int child_cpu) {
    Result res;
    res.mode = mode;
    res.requested = rounds;
    res.warmup = std::clamp<std::uint64_t>(rounds / 10, 100, 10'000);
    std::vector<std::int64_t> hops;
    hops.reserve(rounds);

    int ready[2];
    if (::pipe(ready) != 0) {
        res.ok = false;
        res.error = "pipe failed";
        return res;
    }
    int sv[2] = {-1, -1};
    std::optional<ring::Region> region;
    if (mode == Mode::socketpair) {
        if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
            res.ok = false;
            res.error = fmt::format("socketpair: {}", std::strerror(errno));
            return res;
        }
    } else {
        region.emplace(ring::Region::create(2, kBytesPerLog));
    }
    std::fflush(stdout);
    std::fflush(stderr);
    const pid_t pid = ::fork();
    if (pid < 0) {
        res.ok = false;
        res.error = "fork failed";
        return res;
    }
    if (pid == 0) {
        int code = kChildError;
        try {
            ::close(ready[0]);
            child_setup(child_cpu);
            if (mode == Mode::socketpair) {
                ::close(sv[0]);
                code = sock_child(sv[1], ready[1]);
            } else {
                code = ring_child(*region, mode == Mode::ring_sleep, ready[1]);
            }
        } catch (const std::exception& e) {
            std::fprintf(stderr, "child: %s\n", e.what());
            code = kChildError;
        }
        ::_exit(code);
    }
    ::close(ready[1]);
    bool ok = read_byte(ready[0]);
    ::close(ready[0]);
    if (!ok) {
        res.error = "child died before it was ready";
    } else {
        try {
            if (mode == Mode::socketpair) {
                ::close(sv[1]);
                ok = sock_parent(sv[0], res, hops);
            } else {
                ok = ring_parent(*region, mode == Mode::ring_sleep, res, hops);
            }
        } catch (const std::exception& e) {
            ok = false;
            res.error = e.what();
        }
    }
    if (mode == Mode::socketpair) ::close(sv[0]);  // EOF tells the child to stop
    if (!ok) ::kill(pid, SIGKILL);
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (ok && !(WIFEXITED(status) && WEXITSTATUS(status) == kChildOk)) {
        ok = false;
        res.error = WIFEXITED(status)
                        ? fmt::format("child exited with {} ({})", WEXITSTATUS(status),
                                      WEXITSTATUS(status) == kChildSeqError ? "lost/reordered seq"
                                      : WEXITSTATUS(status) == kChildLoss   ? "ring loss"
                                                                            : "error")
                        : fmt::format("child killed by signal {}", WTERMSIG(status));
    }
    res.ok = ok;
    res.rounds = hops.size();  // measured round trips actually completed
    std::sort(hops.begin(), hops.end());
    res.p50_us = percentile_us(hops, 0.50);
    res.p99_us = percentile_us(hops, 0.99);
    res.p999_us = percentile_us(hops, 0.999);
    res.max_us = hops.empty() ? 0 : static_cast<double>(hops.back()) / 1000.0;
    return res;
}

double ratio(double a, double b) {
    return b > 0 ? a / b : 0;
}

void usage(const char* argv0) {
    std::printf(
        "usage: %s [--rounds-scale X] [--json]\n"
        "  One-way hop latency (RTT/2) between two pinned processes: shared-memory ring\n"
        "  (reader spinning, reader sleeping on its eventfd) against a Unix socketpair.\n"
        "  --rounds-scale X  multiply the round trips per mode (default 200000 for ring-spin,\n"
        "                    20000 for ring-sleep and socketpair) by X\n"
        "  --json            print one JSON object instead of the table\n",
        argv0);
}

}  // namespace

int main(int argc, char** argv) {
    double scale = 1.0;
    bool json = false;
    for (int i = 1; i < argc; ++i) {
        const std::string_view a = argv[i];
        if (a == "--json") {
            json = true;
        } else if (a == "--rounds-scale" && i + 1 < argc) {
            char* end = nullptr;
            scale = std::strtod(argv[++i], &end);
            if (end == argv[i] || *end != '\0' || !(scale > 0)) {
                std::fprintf(stderr, "bad --rounds-scale: %s\n", argv[i]);
                return 2;
            }
        } else if (a == "--help" || a == "-h") {
            usage(argv[0]);
            return 0;
        } else {
            usage(argv[0]);
            return 2;
        }
    }

    const long cpus = ::sysconf(_SC_NPROCESSORS_ONLN);
    const int parent_cpu = 0;
    const int child_cpu = cpus >= 2 ? 1 : 0;
    if (cpus < 2) std::fprintf(stderr, "warning: one CPU online; both processes share cpu 0\n");
    if (!pin_to(parent_cpu)) std::fprintf(stderr, "warning: could not pin parent to cpu 0\n");

    auto scaled = [&](std::uint64_t n) {
        return std::max<std::uint64_t>(1,
                                       static_cast<std::uint64_t>(static_cast<double>(n) * scale));
    };
    std::vector<Result> results;
    results.push_back(run_mode(Mode::ring_spin, scaled(200'000), child_cpu));
    results.push_back(run_mode(Mode::ring_sleep, scaled(20'000), child_cpu));
    results.push_back(run_mode(Mode::socketpair, scaled(20'000), child_cpu));
    const Result& spin = results[0];
    const Result& sleep = results[1];
    const Result& sock = results[2];
    bool all_ok = true;
    for (const Result& r : results)
        all_ok = all_ok && r.ok;

    utsname u{};
    ::uname(&u);
    if (json) {
        std::string out = "{";
        out += fmt::format(R"("kernel":"{}","cpus":{},"parent_cpu":{},"child_cpu":{},)", u.release,
                           cpus, parent_cpu, child_cpu);
        out +=
            fmt::format(R"("rounds_scale":{},"unit":"us","metric":"one-way hop = RTT/2",)", scale);
        out += R"("modes":[)";
        for (std::size_t i = 0; i < results.size(); ++i) {
            const Result& r = results[i];
            out += fmt::format(
                R"({}{{"mode":"{}","ok":{},"requested":{},"warmup":{},"rounds":{},"truncated":{},)"
                R"("p50_us":{:.3f},"p99_us":{:.3f},"p999_us":{:.3f},"max_us":{:.3f},"error":"{}"}})",
                i ? "," : "", name_of(r.mode), r.ok, r.requested, r.warmup, r.rounds, r.truncated,
                r.p50_us, r.p99_us, r.p999_us, r.max_us, r.error);
        }
        out += "],";
        out +=
            fmt::format(R"("socketpair_over_ring":{{"ring-spin":{{"p50":{:.2f},"p99":{:.2f}}},)"
                        R"("ring-sleep":{{"p50":{:.2f},"p99":{:.2f}}}}},"ok":{}}})",
                        ratio(sock.p50_us, spin.p50_us), ratio(sock.p99_us, spin.p99_us),
                        ratio(sock.p50_us, sleep.p50_us), ratio(sock.p99_us, sleep.p99_us), all_ok);
        std::puts(out.c_str());
    } else {
        std::printf("one-way hop (RTT/2), us; cpus %ld (parent %d, child %d); kernel %s\n", cpus,
                    parent_cpu, child_cpu, u.release);
        std::printf("%-11s %8s %8s %9s %9s %9s %9s  %s\n", "mode", "rounds", "warmup", "p50", "p99",
                    "p99.9", "max", "sock/mode p50 | p99");
        for (const Result& r : results) {
            std::printf("%-11s %8llu %8llu %9.2f %9.2f %9.2f %9.1f  %.2f | %.2f%s%s\n",
                        name_of(r.mode), static_cast<unsigned long long>(r.rounds),
                        static_cast<unsigned long long>(r.warmup), r.p50_us, r.p99_us, r.p999_us,
                        r.max_us, ratio(sock.p50_us, r.p50_us), ratio(sock.p99_us, r.p99_us),
                        r.truncated ? "  (stopped at 20 s)" : "",
                        r.ok ? "" : ("  FAILED: " + r.error).c_str());
        }
    }
    if (!all_ok) {
        for (const Result& r : results)
            if (!r.ok) std::fprintf(stderr, "%s: FAILED: %s\n", name_of(r.mode), r.error.c_str());
        return 1;
    }
    return 0;
}
