// The host's counters in shared memory, so that whichever worker answers /metrics or
// /healthz?all shows every worker (docs/architecture.md, "Metrics").
//
// One memfd mapping, created by the master before the first fork and inherited by every worker:
//
//   HostBlock (written by the master only): build info, the BPF steering counters, and one
//   SlotInfo per slot (pid, state, restarts, CPU time, RSS, steering selections and buckets)
//   max_slots slot blocks of kSlotBytes (each written by its slot's worker only): the parts'
//   stats structs, placed there by Slot::make in construction order
//
// Single writer per word: a Counter's increment is a relaxed load and store (a plain add on
// x86-64 and arm64, no locked instruction); readers use relaxed loads. A reader may see one
// block's counters from slightly different instants, never a torn word.
//
// A slot's block is zeroed by the master while the slot has no worker (after the worker's exit,
// before the next fork): a respawned worker starts its counters at zero (Prometheus counters may
// reset; its gauges must not keep a dead worker's values). Readers render a slot only while the
// master says it serves, and always their own slot.
//
// Threading: the master's thread writes the HostBlock; each worker's event loop thread writes its
// own slot block; any process reads.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace steerchat::metrics {

// A 64-bit figure with one writer. Trivially default constructible only with zeroed memory in
// mind: a Counter is zero when value-initialised (Stats s{}) or placed in a zeroed block.
class Counter {
  public:
    Counter() noexcept = default;
    Counter(std::uint64_t v) noexcept : v_(v) {}  // NOLINT: a value, like the uint64 it replaces
    Counter(const Counter& o) noexcept : v_(o.load()) {}
    Counter& operator=(const Counter& o) noexcept {
        store(o.load());
        return *this;
    }

    std::uint64_t load() const noexcept { return ref().load(std::memory_order_relaxed); }
    void store(std::uint64_t v) noexcept { ref().store(v, std::memory_order_relaxed); }
    operator std::uint64_t() const noexcept { return load(); }  // NOLINT: reads as its value
    Counter& operator=(std::uint64_t v) noexcept {
        store(v);
        return *this;
    }
    Counter& operator++() noexcept {
        store(load() + 1);
        return *this;
    }
    std::uint64_t operator++(int) noexcept {
        const auto v = load();
        store(v + 1);
        return v;
    }
    Counter& operator--() noexcept {
        store(load() - 1);
        return *this;
    }
    std::uint64_t operator--(int) noexcept {
        const auto v = load();
        store(v - 1);
        return v;
    }
    Counter& operator+=(std::uint64_t n) noexcept {
        store(load() + n);
        return *this;
    }
    Counter& operator-=(std::uint64_t n) noexcept {
        store(load() - n);
        return *this;
    }

  private:
    std::atomic_ref<std::uint64_t> ref() const noexcept {
        return std::atomic_ref<std::uint64_t>(const_cast<std::uint64_t&>(v_));
    }
    alignas(8) std::uint64_t v_ = 0;
};

// A Prometheus histogram of durations with fixed bucket bounds (kLatencyBounds, in ns). observe()
// is a handful of compares and three single-writer adds; no allocation.
inline constexpr std::uint64_t kLatencyBoundsNs[] = {
    50'000,      100'000,     250'000,     500'000,       1'000'000,
    2'500'000,   5'000'000,   10'000'000,  25'000'000,    50'000'000,
    100'000'000, 250'000'000, 500'000'000, 1'000'000'000, 2'500'000'000};
inline constexpr std::size_t kLatencyBuckets = std::size(kLatencyBoundsNs);

struct LatencyHistogram {
    Counter buckets[kLatencyBuckets + 1];  // non-cumulative; the last one is +Inf
    Counter count;
    Counter sum_ns;
    void observe(std::uint64_t ns) noexcept {
        std::size_t i = 0;
        while (i < kLatencyBuckets && ns > kLatencyBoundsNs[i])
            ++i;
        ++buckets[i];
        ++count;
        sum_ns += ns;
    }
};

// CLOCK_MONOTONIC in ns (the same clock in every process of the host).
std::uint64_t monotonic_ns() noexcept;

// empty: never had a worker; stopping: removed from the pool (ctl workers N), its worker still
// closing its connections; removed: out of the pool, no worker.
enum class SlotState : std::uint64_t {
    empty = 0,
    starting,
    serving,
    respawning,
    drained,
    stopping,
    removed
};
std::string_view state_name(SlotState s) noexcept;

// Written by the master only.
struct SlotInfo {
    Counter pid;               // 0: none
    Counter state;             // SlotState
    Counter restarts;          // worker deaths of this slot since the master started
    Counter cpu_ns;            // the current worker's user+system CPU time (sampled)
    Counter rss_bytes;         // the current worker's resident set (sampled)
    Counter steer_selections;  // BPF: connections steered to this slot (sampled)
    Counter steer_buckets;     // BPF: Maglev buckets of this slot (set at every remap)
};

// The BPF program's outcome counters (bpf/steer.h enum steer_stat), summed over CPUs.
inline constexpr std::size_t kSteerOutcomes = 6;
inline constexpr std::string_view kSteerOutcomeNames[kSteerOutcomes] = {
    "ipv4", "ipv6", "selected", "fallback", "migrated", "failed"};

// Between hosts (userspace/bridge): written by the bridge process only.
inline constexpr std::size_t kMaxRemoteHosts = 16;
struct BridgeBlock {
    Counter enabled;         // 1 with --redis
    Counter link_up;         // 1 while linked to Redis
    Counter buffered;        // events waiting to be sent to Redis
    Counter sent;            // events appended to this host's stream
    Counter received;        // events of other hosts applied here
    Counter dropped;         // events for other hosts dropped: --redis-buffer was full
    Counter ring_lost;       // ring records the bridge missed (it fell behind a worker's log)
    Counter links;           // links made to Redis (the first and every reconnect)
    Counter epochs;          // streams this host started (its first, then after lease losses)
    Counter name_conflicts;  // logins here that lost their name to another host (revoked)
    Counter hosts_lost;      // other hosts found gone (lease expired or a new epoch)
    Counter remotes;         // other hosts read now (entries below)
    Counter remote_host[kMaxRemoteHosts];
    Counter remote_lag_ms[kMaxRemoteHosts];  // age of its last entry when applied here
};

struct HostBlock {
    Counter magic;
    Counter max_slots;
    Counter slot_bytes;
    Counter steering_bpf;  // 1: the BPF steering counters below are meaningful
    Counter sampled_ns;    // monotonic_ns() of the master's last sample (CPU, RSS, BPF)
    Counter steer_outcomes[kSteerOutcomes];
    BridgeBlock bridge;
    char version[32];  // set before the first fork, then constant
    char revision[64];
    // SlotInfo slots[max_slots] follows
};

// Bytes of one slot's block. The parts' stats take a few KiB; make() throws past it.
inline constexpr std::size_t kSlotBytes = 32 * 1024;

class Region;

// One slot as a host view (/healthz?all, /status.json) lists it, with the master's figures.
struct ListedSlot {
    unsigned slot = 0;
    std::string_view state = "serving";
    std::uint64_t pid = 0, restarts = 0, cpu_ns = 0, rss_bytes = 0, buckets = 0;
};
// The slots of `region` that have or had a worker in the pool (neither empty nor removed), in
// slot order. Without a region (in-process tests and fuzzers) only `self`: serving, this pid.
std::vector<ListedSlot> listed_slots(const Region* region, unsigned self);

// Owns the mapping (RAII, move-only).
class Region {
  public:
    // Master, before the first fork. std::system_error when the mapping cannot be made.
    static Region create(unsigned max_slots, std::string_view version = {},
                         std::string_view revision = {});
    Region(Region&& o) noexcept;
    Region& operator=(Region&& o) noexcept;
    Region(const Region&) = delete;
    Region& operator=(const Region&) = delete;
    ~Region();

    int fd() const noexcept { return fd_; }
    unsigned max_slots() const noexcept { return max_slots_; }
    HostBlock& host() const noexcept { return *static_cast<HostBlock*>(base_); }
    SlotInfo& info(unsigned slot) const noexcept;
    std::byte* block(unsigned slot) const noexcept;
    // Master, while `slot` has no worker: every counter of its block back to zero.
    void reset_block(unsigned slot) noexcept;
    // Slots the master says serve (ascending).
    std::vector<unsigned> serving() const;

  private:
    Region() = default;
    void reset() noexcept;
    int fd_ = -1;
    void* base_ = nullptr;
    std::size_t size_ = 0;
    std::size_t host_bytes_ = 0;
    unsigned max_slots_ = 0;
};

// One worker's side: its own block to place stats in, and the view of the other slots. Without a
// region (in-process tests, fuzzers) the block is private memory and only this slot is seen.
class Slot {
  public:
    Slot(Region* region, unsigned slot);
    Slot(const Slot&) = delete;
    Slot& operator=(const Slot&) = delete;
    ~Slot();

    unsigned slot() const noexcept { return slot_; }
    Region* region() const noexcept { return region_; }

    // A zeroed T in this slot's block. Every worker makes the same Ts in the same order (same
    // binary, same options), so a T sits at the same offset in every block: peers() finds them.
    // std::length_error past kSlotBytes.
    template <class T>
    T& make() {
        static_assert(std::is_trivially_destructible_v<T>);
        return *new (allocate(sizeof(T), alignof(T))) T{};
    }

    // The T at the same offset as `mine` in the block of every serving slot and this one, as
    // (slot, T*) in slot order. `mine` not in this block: (this slot, &mine) only.
    template <class T>
    std::vector<std::pair<unsigned, const T*>> peers(const T& mine) const {
        std::vector<std::pair<unsigned, const T*>> out;
        for (auto [slot, p] : peer_addresses(&mine, sizeof(T)))
            out.emplace_back(slot, static_cast<const T*>(p));
        return out;
    }

  private:
    void* allocate(std::size_t size, std::size_t align);
    std::vector<std::pair<unsigned, const void*>> peer_addresses(const void* mine,
                                                                 std::size_t size) const;
    Region* region_;
    unsigned slot_;
    std::byte* block_;
    std::unique_ptr<std::uint64_t[]> own_;  // without a region
    std::size_t used_ = 0;
};

// A part's stats: placed in the worker's slot block when there is one (Slot::make), else owned.
template <class T>
class Cell {
  public:
    explicit Cell(Slot* slot)
        : own_(slot ? nullptr : std::make_unique<T>()), p_(slot ? &slot->make<T>() : own_.get()) {}
    T& operator*() const noexcept { return *p_; }
    T* operator->() const noexcept { return p_; }

  private:
    std::unique_ptr<T> own_;
    T* p_;
};

// Prometheus text exposition, one family at a time: HELP and TYPE once, then its samples.
class Text {
  public:
    explicit Text(std::string& out) : out_(out) {}
    void family(std::string_view name, std::string_view type, std::string_view help);
    // `labels` is the inside of the braces without the worker label ("" for none), e.g.
    // reason="per_ip". worker < 0: a host-level sample (no worker label).
    void sample(std::string_view name, long worker, std::string_view labels, std::uint64_t v);
    void sample(std::string_view name, long worker, std::string_view labels, double v);

    // One family with one sample per slot of `peers`: the field `f` of each.
    template <class T>
    void per_worker(std::string_view name, std::string_view type, std::string_view help,
                    const std::vector<std::pair<unsigned, const T*>>& peers, Counter T::*f) {
        family(name, type, help);
        for (const auto& [slot, s] : peers)
            sample(name, slot, "", (s->*f).load());
    }
    // One family, a sample per slot and label value: {label="value"} from field.
    template <class T>
    void per_worker(std::string_view name, std::string_view type, std::string_view help,
                    const std::vector<std::pair<unsigned, const T*>>& peers, std::string_view label,
                    std::initializer_list<std::pair<std::string_view, Counter T::*>> fields) {
        family(name, type, help);
        for (const auto& [slot, s] : peers)
            for (const auto& [value, f] : fields)
                sample(name, slot, label_pair(label, value), (s->*f).load());
    }
    // A histogram of durations in seconds, per worker.
    void histogram(std::string_view name, std::string_view help,
                   const std::vector<std::pair<unsigned, const LatencyHistogram*>>& peers);

    static std::string label_pair(std::string_view label, std::string_view value);

  private:
    std::string& out_;
};

// The host-level and master-sampled families (build info, steering, CPU, RSS, restarts, slot
// states) from the HostBlock of `region`.
void append_host_metrics(std::string& out, const Region& region);

}  // namespace steerchat::metrics
