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
    // Sum over workers of an atomic counter member (relaxed).
    template <class M>
    std::uint64_t sum(M member) const {
        std::uint64_t s = 0;
        for (auto& w : workers)
            s += ((*w).*member).load(std::memory_order_relaxed);
        return s;
    }
    ~IoThreads() {
        if (!threads_.empty()) stop();
    }

  private:
    std::vector<std::thread> threads_;
};

// A per-worker seed for masks and keys.
std::uint64_t random_seed(std::uint32_t index);

// Initial read buffer per connection: 64 MiB over all clients, within [4 KiB, 64 KiB].
inline std::size_t read_buffer_size(std::uint64_t clients) {
    return std::clamp<std::size_t>((std::size_t{64} << 20) / std::max<std::uint64_t>(clients, 1),
                                   4096, 65536);
}

}  // namespace steerchat::bench
