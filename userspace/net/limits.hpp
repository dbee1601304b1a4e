// Connection limits of one worker: how many connections it holds in all, and how many from one
// client address. Every accepted connection takes a slot (a Lease) before it is served and keeps
// it for its whole life: as an HTTP session, an Engine.IO long poll held by its route, and as the
// ws::WebSocketConnection it may become after an upgrade (the lease moves into the connection and
// is released when the connection finishes). A connection that would go over a limit is refused at
// once (Worker::refuse: a fixed 429/503 answer and close), so one address cannot take the
// worker's open files and the worker keeps files for its own use and for everyone else.
//
// Addresses are counted as IPv6: an IPv4 address and its IPv4-mapped IPv6 form (::ffff:a.b.c.d,
// what a dual-stack listener reports) are the same client. With `ipv6_prefix64` an IPv6 client
// is counted by its /64, as the steering program then steers it. Loopback is not exempt.
//
// Threading: the worker's event loop thread.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <unordered_map>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/ip/address.hpp>

#include "metrics/metrics.hpp"
#include "util/lease.hpp"

namespace steerchat::net {

// Open files a worker keeps free of client connections by default: for its own descriptors
// (listener, epoll, eventfds, timers, the shared-memory logs), the spare descriptor that lets it
// refuse connections when the limit is hit anyway, and a margin: 5 %, at least 64.
std::uint64_t default_fd_headroom(std::uint64_t open_files_limit);
// The least a worker keeps free when --max-conns-per-worker is given explicitly.
inline constexpr std::uint64_t kMinFdHeadroom = 64;
// The default connection limit of a worker whose open-files limit is `open_files_limit`.
std::size_t default_max_conns_per_worker(std::uint64_t open_files_limit);

struct ConnectionLimits {
    std::size_t per_address = 256;   // 0: no limit
    std::size_t per_worker = 16384;  // connections of all addresses together
    bool ipv6_prefix64 = false;      // count IPv6 clients by their /64
};

enum class Refusal : std::uint8_t { none, per_address, per_worker };

// A client address as counted: 16 bytes (IPv4 as IPv4-mapped IPv6), and its hash, seeded per
// process (clients choose their addresses, e.g. a whole IPv6 /64, not the buckets).
using AddressKey = std::array<std::uint8_t, 16>;
struct AddressHash {
    std::uint64_t seed;
    AddressHash();
    std::size_t operator()(const AddressKey& k) const noexcept;
};

class ConnectionTracker {
  public:
    using Key = AddressKey;

    struct Stats {
        metrics::Counter refused_per_address;
        metrics::Counter refused_per_worker;
        metrics::Counter refused_open_files;  // accept hit EMFILE/ENFILE (Worker counts these)
        metrics::Counter addresses;           // gauge: addresses with a connection
        metrics::Counter limit_per_worker;    // gauges: the limits (kept by the Worker)
        metrics::Counter limit_per_address;
    };

    // `metrics`: the worker's slot block for the stats (nullptr: kept here).
    explicit ConnectionTracker(ConnectionLimits limits, metrics::Slot* metrics = nullptr);
    ConnectionTracker(const ConnectionTracker&) = delete;
    ConnectionTracker& operator=(const ConnectionTracker&) = delete;
    // Leases must not outlive the tracker.
    ~ConnectionTracker() = default;

    // A slot for one more connection from `addr`; an empty lease if a limit is reached, with the
    // reason in `why` (and counted).
    Lease acquire(const boost::asio::ip::address& addr, Refusal& why);

    std::size_t total() const noexcept { return total_; }
    std::size_t count(const boost::asio::ip::address& addr) const;
    std::size_t addresses() const noexcept { return counts_.size(); }
    const ConnectionLimits& limits() const noexcept { return limits_; }
    ConnectionLimits& limits() noexcept { return limits_; }
    Stats& stats() noexcept { return *stats_; }
    const Stats& stats() const noexcept { return *stats_; }

    // The counting key of `addr` (IPv4 as IPv4-mapped IPv6; IPv6 maybe cut to its /64).
    static Key key_of(const boost::asio::ip::address& addr, bool ipv6_prefix64);

  private:
    using Map = std::unordered_map<Key, std::uint32_t, AddressHash>;
    static void release(void* owner, void* item) noexcept;

    ConnectionLimits limits_;
    Map counts_;  // addresses with at least one connection (elements are stable: leases point in)
    std::size_t total_ = 0;
    metrics::Cell<Stats> stats_;
};

// Fairness between client addresses when a worker is busy. A kept-alive HTTP connection starts
// reading its next request through FairShare::run: an address gets `per_turn` such starts per
// turn of the event loop, and its other connections wait, in order, for the following turns,
// their bytes left in the kernel's socket buffers (no read, no parse, no answer: no cost). A
// client holding many connections thus gets the share of one address, not of as many clients as
// it has connections: another address's message waits behind at most `per_turn` of its requests
// instead of one per connection. A turn ends with a handler posted at the first run() of the
// turn, i.e. after everything that was ready then. When the worker is not busy, turns take
// microseconds and nobody waits.
class FairShare {
  public:
    // `deferred`: where to count requests that waited (nullptr: here).
    FairShare(boost::asio::any_io_executor executor, std::size_t per_turn,
              metrics::Counter* deferred = nullptr);
    FairShare(const FairShare&) = delete;
    FairShare& operator=(const FairShare&) = delete;

    // Runs `work` now, or later if `key` has had its share of this turn.
    void run(const AddressKey& key, std::function<void()> work);

    std::uint64_t deferred() const noexcept { return *deferred_; }  // requests that waited
    std::size_t waiting() const noexcept;                           // requests waiting now

  private:
    struct Turn {
        std::size_t used = 0;
        std::deque<std::function<void()>> waiting;
    };
    void schedule_end();
    void end_turn();

    boost::asio::any_io_executor executor_;
    std::size_t per_turn_;
    std::unordered_map<AddressKey, Turn, AddressHash> turns_;
    bool end_posted_ = false;
    metrics::Counter own_deferred_;
    metrics::Counter* deferred_;
};

}  // namespace steerchat::net
