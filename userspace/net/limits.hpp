// Connection limits of one worker: how many connections it holds in all, and how many from one
// client address. Every accepted connection takes a slot (a Lease) before it is served and keeps
// it for its whole life: as an HTTP session, an Engine.IO long poll held by its route, and as the
// ws::Connection it may become after an upgrade (the lease moves into the connection and is
// released when the connection finishes). A connection that would go over a limit is refused at
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
#include <unordered_map>

#include <boost/asio/ip/address.hpp>

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

class ConnectionTracker {
  public:
    using Key = std::array<std::uint8_t, 16>;

    struct Stats {
        std::uint64_t refused_per_address = 0;
        std::uint64_t refused_per_worker = 0;
        std::uint64_t refused_open_files = 0;  // accept hit EMFILE/ENFILE (Worker counts these)
    };

    explicit ConnectionTracker(ConnectionLimits limits);
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
    Stats& stats() noexcept { return stats_; }
    const Stats& stats() const noexcept { return stats_; }

    // The counting key of `addr` (IPv4 as IPv4-mapped IPv6; IPv6 maybe cut to its /64).
    static Key key_of(const boost::asio::ip::address& addr, bool ipv6_prefix64);

  private:
    struct KeyHash {
        std::uint64_t seed;
        std::size_t operator()(const Key& k) const noexcept;
    };
    using Map = std::unordered_map<Key, std::uint32_t, KeyHash>;
    static void release(void* owner, void* item) noexcept;

    ConnectionLimits limits_;
    Map counts_;  // addresses with at least one connection (elements are stable: leases point in)
    std::size_t total_ = 0;
    Stats stats_;
};

}  // namespace steerchat::net
