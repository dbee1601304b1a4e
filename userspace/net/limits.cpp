#include "net/limits.hpp"

#include <sys/random.h>

#include <algorithm>
#include <cstring>
#include <utility>

#include <boost/asio/post.hpp>

namespace steerchat::net {

std::uint64_t default_fd_headroom(std::uint64_t open_files_limit) {
    return std::max<std::uint64_t>(kMinFdHeadroom, open_files_limit / 20);
}

std::size_t default_max_conns_per_worker(std::uint64_t open_files_limit) {
    const auto headroom = default_fd_headroom(open_files_limit);
    if (open_files_limit <= headroom) return 1;
    return static_cast<std::size_t>(open_files_limit - headroom);
}

namespace {

// The 64-bit finalizer of MurmurHash3: every input bit affects every output bit.
std::uint64_t mix(std::uint64_t h) noexcept {
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return h;
}

}  // namespace

std::size_t AddressHash::operator()(const AddressKey& k) const noexcept {
    std::uint64_t a, b;
    std::memcpy(&a, k.data(), 8);
    std::memcpy(&b, k.data() + 8, 8);
    // Seeded per process: clients choose their addresses (a whole IPv6 /64), not the buckets.
    return static_cast<std::size_t>(mix(mix(a ^ seed) ^ b));
}

namespace {

std::uint64_t random_seed() {
    std::uint64_t seed = 0;
    // getrandom: no file to open (workers may run under a seccomp allowlist without open()).
    if (::getrandom(&seed, sizeof seed, GRND_NONBLOCK) != sizeof seed)
        seed = static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(&seed)) *
               0x9e3779b97f4a7c15ULL;
    return seed;
}

}  // namespace

AddressHash::AddressHash() : seed(random_seed()) {}

ConnectionTracker::ConnectionTracker(ConnectionLimits limits, metrics::Slot* metrics)
    : limits_(limits), stats_(metrics) {
    stats_->limit_per_worker = limits_.per_worker;
    stats_->limit_per_address = limits_.per_address;
}

ConnectionTracker::Key ConnectionTracker::key_of(const boost::asio::ip::address& addr,
                                                 bool ipv6_prefix64) {
    Key k{};
    if (addr.is_v4()) {
        // ::ffff:a.b.c.d, the same bytes as the IPv4-mapped form a dual-stack socket reports.
        k[10] = 0xff;
        k[11] = 0xff;
        const auto v4 = addr.to_v4().to_bytes();
        std::copy(v4.begin(), v4.end(), k.begin() + 12);
        return k;
    }
    const auto v6 = addr.to_v6();
    const auto bytes = v6.to_bytes();
    std::copy(bytes.begin(), bytes.end(), k.begin());
    if (ipv6_prefix64 && !v6.is_v4_mapped()) std::fill(k.begin() + 8, k.end(), 0);
    return k;
}

Lease ConnectionTracker::acquire(const boost::asio::ip::address& addr, Refusal& why) {
    why = Refusal::none;
    if (total_ >= limits_.per_worker) {
        ++stats_->refused_per_worker;
        why = Refusal::per_worker;
        return {};
    }
    auto [it, fresh] = counts_.try_emplace(key_of(addr, limits_.ipv6_prefix64), 0);
    if (limits_.per_address != 0 && it->second >= limits_.per_address) {
        ++stats_->refused_per_address;
        why = Refusal::per_address;
        return {};
    }
    if (it->second == 0) ++stats_->addresses;
    ++it->second;
    ++total_;
    return Lease(&ConnectionTracker::release, this, &*it);
}

void ConnectionTracker::release(void* owner, void* item) noexcept {
    auto* self = static_cast<ConnectionTracker*>(owner);
    auto* entry = static_cast<Map::value_type*>(item);
    --self->total_;
    if (--entry->second == 0) {
        const Key key = entry->first;  // erase() must not read a key it is destroying
        self->counts_.erase(key);
        --self->stats_->addresses;
    }
}

std::size_t ConnectionTracker::count(const boost::asio::ip::address& addr) const {
    auto it = counts_.find(key_of(addr, limits_.ipv6_prefix64));
    return it == counts_.end() ? 0 : it->second;
}

FairShare::FairShare(boost::asio::any_io_executor executor, std::size_t per_turn,
                     metrics::Counter* deferred)
    : executor_(std::move(executor)),
      per_turn_(per_turn == 0 ? 1 : per_turn),
      deferred_(deferred ? deferred : &own_deferred_) {}

void FairShare::run(const AddressKey& key, std::function<void()> work) {
    auto& turn = turns_[key];
    schedule_end();
    if (turn.used < per_turn_ && turn.waiting.empty()) {
        ++turn.used;
        work();
        return;
    }
    ++*deferred_;
    turn.waiting.push_back(std::move(work));
}

std::size_t FairShare::waiting() const noexcept {
    std::size_t n = 0;
    for (const auto& [key, turn] : turns_)
        n += turn.waiting.size();
    return n;
}

void FairShare::schedule_end() {
    if (end_posted_) return;
    end_posted_ = true;
    boost::asio::post(executor_, [this] { end_turn(); });
}

void FairShare::end_turn() {
    end_posted_ = false;
    for (auto it = turns_.begin(); it != turns_.end();) {
        auto& turn = it->second;
        turn.used = 0;
        // The next turn's share goes to those that waited, first come first served.
        while (turn.used < per_turn_ && !turn.waiting.empty()) {
            ++turn.used;
            boost::asio::post(executor_, std::move(turn.waiting.front()));
            turn.waiting.pop_front();
        }
        if (turn.used == 0) {
            it = turns_.erase(it);
        } else {
            ++it;
        }
    }
    if (!turns_.empty()) schedule_end();
}

}  // namespace steerchat::net
