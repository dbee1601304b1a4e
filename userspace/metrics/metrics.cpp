#include "metrics/metrics.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <new>
#include <stdexcept>
#include <system_error>

#include <fmt/core.h>

namespace steerchat::metrics {

namespace {

constexpr std::uint64_t kMagic = 0x5354'4d45'5452'4943ULL;  // "STMETRIC"
constexpr std::size_t kPage = 4096;

std::size_t round_up(std::size_t n, std::size_t to) {
    return (n + to - 1) / to * to;
}

[[noreturn]] void throw_errno(const char* what) {
    throw std::system_error(errno, std::generic_category(), std::string("metrics: ") + what);
}

void copy_string(char* dst, std::size_t cap, std::string_view s) {
    const std::size_t n = std::min(cap - 1, s.size());
    std::memcpy(dst, s.data(), n);
    dst[n] = '\0';
}

}  // namespace

std::uint64_t monotonic_ns() noexcept {
    timespec ts{};
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000u +
           static_cast<std::uint64_t>(ts.tv_nsec);
}

std::string_view state_name(SlotState s) noexcept {
    switch (s) {
        case SlotState::empty:
            return "empty";
        case SlotState::starting:
            return "starting";
        case SlotState::serving:
            return "serving";
        case SlotState::respawning:
            return "respawning";
        case SlotState::drained:
            return "drained";
        case SlotState::stopping:
            return "stopping";
        case SlotState::removed:
            return "removed";
    }
    return "unknown";
}

Region Region::create(unsigned max_slots, std::string_view version, std::string_view revision) {
    if (max_slots == 0 || max_slots > 4096)
        throw std::invalid_argument("metrics: slot count must be in 1..4096");
    Region r;
    r.max_slots_ = max_slots;
    r.host_bytes_ = round_up(sizeof(HostBlock) + max_slots * sizeof(SlotInfo), kPage);
    r.size_ = r.host_bytes_ + std::size_t{max_slots} * kSlotBytes;
    r.fd_ = ::memfd_create("steerchat-metrics", MFD_CLOEXEC);
    if (r.fd_ < 0) throw_errno("memfd_create");
    if (::ftruncate(r.fd_, static_cast<off_t>(r.size_)) != 0) throw_errno("ftruncate");
    void* base = ::mmap(nullptr, r.size_, PROT_READ | PROT_WRITE, MAP_SHARED, r.fd_, 0);
    if (base == MAP_FAILED) throw_errno("mmap");
    r.base_ = base;
    // The memfd is zero-filled: the blocks are all zero counters already.
    auto* host = new (base) HostBlock{};
    host->magic = kMagic;
    host->max_slots = max_slots;
    host->slot_bytes = kSlotBytes;
    copy_string(host->version, sizeof host->version, version);
    copy_string(host->revision, sizeof host->revision, revision);
    for (unsigned i = 0; i < max_slots; ++i)
        new (&r.info(i)) SlotInfo{};
    return r;
}

Region::Region(Region&& o) noexcept
    : fd_(std::exchange(o.fd_, -1)),
      base_(std::exchange(o.base_, nullptr)),
      size_(std::exchange(o.size_, 0)),
      host_bytes_(o.host_bytes_),
      max_slots_(o.max_slots_) {}

Region& Region::operator=(Region&& o) noexcept {
    if (this != &o) {
        reset();
        fd_ = std::exchange(o.fd_, -1);
        base_ = std::exchange(o.base_, nullptr);
        size_ = std::exchange(o.size_, 0);
        host_bytes_ = o.host_bytes_;
        max_slots_ = o.max_slots_;
    }
    return *this;
}

Region::~Region() {
    reset();
}

void Region::reset() noexcept {
    if (base_) ::munmap(base_, size_);
    if (fd_ >= 0) ::close(fd_);
    base_ = nullptr;
    fd_ = -1;
}

SlotInfo& Region::info(unsigned slot) const noexcept {
    auto* first = reinterpret_cast<SlotInfo*>(static_cast<std::byte*>(base_) + sizeof(HostBlock));
    return first[slot];
}

std::byte* Region::block(unsigned slot) const noexcept {
    return static_cast<std::byte*>(base_) + host_bytes_ + std::size_t{slot} * kSlotBytes;
}

void Region::reset_block(unsigned slot) noexcept {
    // Word by word with relaxed stores: other workers may be reading it.
    auto* words = reinterpret_cast<std::uint64_t*>(block(slot));
    for (std::size_t i = 0; i < kSlotBytes / sizeof(std::uint64_t); ++i)
        std::atomic_ref<std::uint64_t>(words[i]).store(0, std::memory_order_relaxed);
}

std::vector<unsigned> Region::serving() const {
    std::vector<unsigned> out;
    for (unsigned i = 0; i < max_slots_; ++i)
        if (static_cast<SlotState>(info(i).state.load()) == SlotState::serving) out.push_back(i);
    return out;
}

Slot::Slot(Region* region, unsigned slot) : region_(region), slot_(slot) {
    if (region_ && slot_ < region_->max_slots()) {
        block_ = region_->block(slot_);
    } else {
        region_ = nullptr;
        own_ = std::make_unique<std::uint64_t[]>(kSlotBytes / sizeof(std::uint64_t));
        block_ = reinterpret_cast<std::byte*>(own_.get());
    }
}

Slot::~Slot() = default;

void* Slot::allocate(std::size_t size, std::size_t align) {
    // Each part's stats on its own cache lines.
    const std::size_t at = round_up(used_, std::max<std::size_t>(align, 64));
    if (at + size > kSlotBytes)
        throw std::length_error(
            fmt::format("metrics: a slot's block ({} bytes) is too small for its stats: raise "
                        "metrics::kSlotBytes",
                        kSlotBytes));
    used_ = at + size;
    return block_ + at;
}

std::vector<std::pair<unsigned, const void*>> Slot::peer_addresses(const void* mine,
                                                                   std::size_t size) const {
    const auto* p = static_cast<const std::byte*>(mine);
    if (!region_ || p < block_ || p + size > block_ + kSlotBytes) return {{slot_, mine}};
    const std::size_t offset = static_cast<std::size_t>(p - block_);
    std::vector<unsigned> slots = region_->serving();
    if (std::find(slots.begin(), slots.end(), slot_) == slots.end()) {
        slots.push_back(slot_);
        std::sort(slots.begin(), slots.end());
    }
    std::vector<std::pair<unsigned, const void*>> out;
    for (unsigned s : slots)
        out.emplace_back(s, region_->block(s) + offset);
    return out;
}

void Text::family(std::string_view name, std::string_view type, std::string_view help) {
    out_ += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
}

std::string Text::label_pair(std::string_view label, std::string_view value) {
    return fmt::format("{}=\"{}\"", label, value);
}

namespace {
// One sample line: `name{worker="N",labels} v` (worker < 0: no worker label).
template <class Value>
void append_sample(std::string& out, std::string_view name, long worker, std::string_view labels,
                   Value v) {
    if (worker >= 0)
        out += fmt::format("{}{{worker=\"{}\"{}{}}} {}\n", name, worker, labels.empty() ? "" : ",",
                           labels, v);
    else if (!labels.empty())
        out += fmt::format("{}{{{}}} {}\n", name, labels, v);
    else
        out += fmt::format("{} {}\n", name, v);
}
}  // namespace

void Text::sample(std::string_view name, long worker, std::string_view labels, std::uint64_t v) {
    append_sample(out_, name, worker, labels, v);
}

void Text::sample(std::string_view name, long worker, std::string_view labels, double v) {
    append_sample(out_, name, worker, labels, v);
}

void Text::histogram(std::string_view name, std::string_view help,
                     const std::vector<std::pair<unsigned, const LatencyHistogram*>>& peers) {
    family(name, "histogram", help);
    const std::string bucket = fmt::format("{}_bucket", name);
    for (const auto& [slot, h] : peers) {
        std::uint64_t cumulative = 0;
        for (std::size_t i = 0; i <= kLatencyBuckets; ++i) {
            cumulative += h->buckets[i].load();
            const std::string le = i < kLatencyBuckets
                                       ? fmt::format("le=\"{}\"", kLatencyBoundsNs[i] / 1e9)
                                       : std::string("le=\"+Inf\"");
            sample(bucket, slot, le, cumulative);
        }
        sample(fmt::format("{}_sum", name), slot, "", h->sum_ns.load() / 1e9);
        sample(fmt::format("{}_count", name), slot, "", h->count.load());
    }
}

void append_host_metrics(std::string& out, const Region& region) {
    Text t(out);
    const HostBlock& host = region.host();
    t.family("steerchat_build_info", "gauge",
             "Always 1: the version and git revision of the running binary.");
    t.sample("steerchat_build_info", -1,
             fmt::format("version=\"{}\",revision=\"{}\"", host.version, host.revision),
             std::uint64_t{1});

    std::vector<unsigned> used;  // slots in the pool, or leaving it
    for (unsigned i = 0; i < region.max_slots(); ++i)
        if (const auto st = static_cast<SlotState>(region.info(i).state.load());
            st != SlotState::empty && st != SlotState::removed)
            used.push_back(i);
    t.family("steerchat_worker_state", "gauge",
             "1 for the state each slot is in (starting, serving, respawning, drained, stopping: "
             "removed from the pool, its worker closing); written by the master.");
    for (unsigned i : used) {
        const auto st = static_cast<SlotState>(region.info(i).state.load());
        for (auto s : {SlotState::starting, SlotState::serving, SlotState::respawning,
                       SlotState::drained, SlotState::stopping})
            t.sample("steerchat_worker_state", i, Text::label_pair("state", state_name(s)),
                     std::uint64_t{st == s});
    }
    t.family("steerchat_worker_restarts_total", "counter",
             "Deaths of the slot's worker since the master started (each followed by a respawn "
             "or a drain).");
    for (unsigned i : used)
        t.sample("steerchat_worker_restarts_total", i, "", region.info(i).restarts.load());
    const auto serving = region.serving();
    t.family("steerchat_worker_cpu_seconds_total", "counter",
             "User and system CPU time of the slot's current worker (sampled by the master about "
             "once a second; resets when the worker is respawned).");
    for (unsigned i : serving)
        t.sample("steerchat_worker_cpu_seconds_total", i, "", region.info(i).cpu_ns.load() / 1e9);
    t.family("steerchat_worker_resident_memory_bytes", "gauge",
             "Resident memory of the slot's current worker (sampled by the master about once a "
             "second).");
    for (unsigned i : serving)
        t.sample("steerchat_worker_resident_memory_bytes", i, "", region.info(i).rss_bytes.load());

    if (host.bridge.enabled.load() != 0) {
        const BridgeBlock& b = host.bridge;
        t.family("steerchat_redis_link_up", "gauge",
                 "1 while this host's bridge is linked to Redis (--redis), 0 while it is not.");
        t.sample("steerchat_redis_link_up", -1, "", b.link_up.load());
        t.family("steerchat_redis_buffered_events", "gauge",
                 "Events for other hosts waiting to be sent to Redis (at most --redis-buffer).");
        t.sample("steerchat_redis_buffered_events", -1, "", b.buffered.load());
        const std::pair<const char*, const Counter*> counters[] = {
            {"steerchat_redis_sent_events_total", &b.sent},
            {"steerchat_redis_received_events_total", &b.received},
            {"steerchat_redis_dropped_events_total", &b.dropped},
            {"steerchat_redis_ring_lost_records_total", &b.ring_lost},
            {"steerchat_redis_links_total", &b.links},
            {"steerchat_redis_epochs_total", &b.epochs},
            {"steerchat_redis_name_conflicts_total", &b.name_conflicts},
            {"steerchat_redis_hosts_lost_total", &b.hosts_lost},
        };
        const char* helps[] = {
            "Events this host appended to its Redis stream.",
            "Events of other hosts applied here.",
            "Events for other hosts dropped because --redis-buffer was full (Redis away too "
            "long); other hosts never got them.",
            "Ring records the bridge missed (it fell behind a worker's log).",
            "Links made to Redis (the first one and every reconnect).",
            "Streams this host started: its first, then one after each lease it lost.",
            "Logins on this host that lost a race for their name to another host (told "
            "name_taken and logged out).",
            "Other hosts found gone (lease expired, or back with a new epoch): their users went "
            "offline here.",
        };
        for (std::size_t i = 0; i < std::size(counters); ++i) {
            t.family(counters[i].first, "counter", helps[i]);
            t.sample(counters[i].first, -1, "", counters[i].second->load());
        }
        t.family("steerchat_redis_remote_lag_seconds", "gauge",
                 "Per other host: how old its last event was when this host applied it.");
        const auto n = std::min<std::uint64_t>(b.remotes.load(), kMaxRemoteHosts);
        for (std::uint64_t i = 0; i < n; ++i)
            t.sample("steerchat_redis_remote_lag_seconds", -1,
                     Text::label_pair("host", std::to_string(b.remote_host[i].load())),
                     b.remote_lag_ms[i].load() / 1e3);
    }

    if (host.steering_bpf.load() == 0) return;
    t.family("steerchat_steer_connections_total", "counter",
             "Outcomes of the BPF steering program (per SYN or migrated request): ipv4/ipv6 by "
             "client family; selected (the bucket's slot), fallback (its slot was empty, the next "
             "live one), migrated (a closed listener's queued request), failed (no live slot). "
             "Sampled by the master about once a second.");
    for (std::size_t k = 0; k < kSteerOutcomes; ++k)
        t.sample("steerchat_steer_connections_total", -1,
                 Text::label_pair("outcome", kSteerOutcomeNames[k]), host.steer_outcomes[k].load());
    t.family("steerchat_steer_selections_total", "counter",
             "Connections the BPF program steered to each slot (sampled by the master about once "
             "a second).");
    for (unsigned i : used)
        t.sample("steerchat_steer_selections_total", i, "", region.info(i).steer_selections.load());
    t.family("steerchat_steer_buckets", "gauge",
             "Maglev buckets (of 65537) that map to each slot.");
    for (unsigned i : used)
        t.sample("steerchat_steer_buckets", i, "", region.info(i).steer_buckets.load());
}

std::vector<ListedSlot> listed_slots(const Region* region, unsigned self) {
    std::vector<ListedSlot> out;
    if (!region) {
        out.push_back({self, "serving", static_cast<std::uint64_t>(::getpid())});
        return out;
    }
    for (unsigned i = 0; i < region->max_slots(); ++i) {
        const auto& info = region->info(i);
        const auto st = static_cast<SlotState>(info.state.load());
        if (st == SlotState::empty || st == SlotState::removed) continue;
        out.push_back({i, state_name(st), info.pid.load(), info.restarts.load(), info.cpu_ns.load(),
                       info.rss_bytes.load(), info.steer_buckets.load()});
    }
    return out;
}

}  // namespace steerchat::metrics
