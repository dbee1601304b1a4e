// steerchat-bench: the scenarios (one file each) and the io-thread plumbing they share.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <thread>
#include <vector>

#include "bench_common.hpp"
#include "bench_options.hpp"

namespace steerchat::bench {

// Each returns the process exit code.
int run_broadcast(const Options& opt);
int run_connect(const Options& opt);
int run_echo(const Options& opt);
int run_idle(const Options& opt);

// One io thread per worker object; W has a member `asio::io_context io`.
template <class W>
class IoThreads {
  public:
    std::vector<std::unique_ptr<W>> workers;

    void start() {
        for (auto& w : workers)
            threads_.emplace_back([p = w.get()] {
                auto guard = asio::make_work_guard(p->io);
                p->io.run();
            });
    }
    // Runs f(worker) on each worker's thread.
    template <class F>
    void post_all(F f) {
        for (auto& w : workers)
            asio::post(w->io, [p = w.get(), f] { f(*p); });
    }
    void stop() {
        for (auto& w : workers)
            w->io.stop();
        for (auto& t : threads_)
            t.join();
        threads_.clear();
    }
    // Sum over workers of a counter member: an atomic (relaxed, while they run) or a plain one
    // (after stop()).
    template <class M>
    std::uint64_t sum(M member) const {
        std::uint64_t s = 0;
        for (auto& w : workers) {
            const auto& v = (*w).*member;
            if constexpr (requires { v.load(); })
                s += v.load(std::memory_order_relaxed);
            else
                s += v;
        }
        return s;
    }
    // The workers' `Tally tally` members merged (after stop()).
    Tally tally() const {
        Tally t;
        for (auto& w : workers)
            t.merge(w->tally);
        return t;
    }
    ~IoThreads() {
        if (!threads_.empty()) stop();
    }

  private:
    std::vector<std::thread> threads_;
};

// What an io thread of broadcast or echo publishes for main while it runs (relaxed).
struct alignas(64) ClientCounters {
    std::atomic<std::uint64_t> ready{0};     // clients set up
    std::atomic<std::uint64_t> closed{0};    // clients ended
    std::atomic<std::uint64_t> sends{0};     // warm-up included
    std::atomic<std::uint64_t> received{0};  // deliveries, echoes (warm-up included)
    std::atomic<std::uint64_t> window_expected{0};
    std::atomic<std::uint64_t> window_received{0};
};

// Broadcast and echo: starts the setup of every client (W::begin_setup()) and waits until all
// are set up (W::ready; "N clients <state>"); returns its seconds. Dies on a failure or timeout.
template <class W>
double set_up_clients(IoThreads<W>& pool, Failure& failure, const Options& opt,
                      std::string_view state, std::string_view timed_out_state) {
    const std::int64_t start = now_ns();
    pool.post_all([](W& w) { w.begin_setup(); });
    return wait_for_setup(start, {.total = opt.clients,
                                  .timeout_s = opt.connect_timeout,
                                  .noun = "clients",
                                  .state = state,
                                  .timed_out_state = timed_out_state,
                                  .done = [&] { return pool.sum(&W::ready); },
                                  .failed = [&] { return failure.message(); },
                                  .abort = [&] { pool.stop(); }});
}

// After the window of broadcast and echo: waits (up to 1 s past its end) for what its sends should
// bring (W::window_received up to W::window_expected), closes every client (W::begin_close()),
// waits (up to 1 s) until all are closed (W::closed) and stops the threads.
template <class W>
void drain_and_close(IoThreads<W>& pool, const Plan& plan, std::uint64_t clients) {
    constexpr std::int64_t kStragglerNs = kNsPerSec;
    constexpr std::int64_t kCloseWaitNs = kNsPerSec;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));  // pacers see the end
    wait_until(plan.measure_end + kStragglerNs,
               [&] { return pool.sum(&W::window_received) >= pool.sum(&W::window_expected); });
    pool.post_all([](W& w) { w.begin_close(); });
    wait_until(now_ns() + kCloseWaitNs, [&] { return pool.sum(&W::closed) >= clients; });
    pool.stop();
}

// Starts the clients of one thread (C::start()) with at most 128 in setup at once: each one that
// becomes ready counts in `ready` and lets the next one start.
template <class C>
class SetupQueue {
  public:
    static constexpr std::size_t kInflight = 128;

    SetupQueue(const std::vector<std::unique_ptr<C>>& clients, std::atomic<std::uint64_t>& ready)
        : clients_(clients), ready_(ready) {}
    void begin() {
        for (std::size_t k = 0; k < std::min(kInflight, clients_.size()); ++k)
            next();
    }
    void on_ready() {
        ready_.fetch_add(1, std::memory_order_relaxed);
        next();
    }

  private:
    void next() {
        if (next_ < clients_.size()) clients_[next_++]->start();
    }

    const std::vector<std::unique_ptr<C>>& clients_;
    std::atomic<std::uint64_t>& ready_;
    std::size_t next_ = 0;
};

// A per-worker seed for masks and keys.
std::uint64_t random_seed(std::uint32_t index);

// Initial read buffer per connection: 64 MiB over all clients, within [4 KiB, 64 KiB].
inline std::size_t read_buffer_size(std::uint64_t clients) {
    return std::clamp<std::size_t>((std::size_t{64} << 20) / std::max<std::uint64_t>(clients, 1),
                                   4096, 65536);
}

}  // namespace steerchat::bench
