#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <new>
#include <string>
#include <system_error>
#include <utility>

#include "ring/ring.hpp"

namespace steerchat::ring {

namespace detail {

Snapshot snapshot(const WriterState& ws) {
    // The writer's publish is: seq odd, records, pos, seq even. A writer killed inside that window
    // leaves seq odd until the next Writer of the slot repairs it; give up after a bounded number
    // of tries and take pos with the records count loaded after it (at most one too many).
    for (int attempt = 0; attempt < 4096; ++attempt) {
        const std::uint64_t s1 = ws.seq.load(std::memory_order_acquire);
        if (s1 & 1) {
            cpu_relax();
            continue;
        }
        const std::uint64_t records = ws.records.load(std::memory_order_relaxed);
        const std::uint64_t pos = ws.pos.load(std::memory_order_relaxed);
        std::atomic_thread_fence(std::memory_order_acquire);
        if (ws.seq.load(std::memory_order_relaxed) == s1) return {pos, records};
    }
    const std::uint64_t pos = ws.pos.load(std::memory_order_acquire);
    return {pos, ws.records.load(std::memory_order_acquire)};
}

}  // namespace detail

namespace {

[[noreturn]] void throw_errno(const char* what) {
    throw std::system_error(errno, std::generic_category(), std::string("ring: ") + what);
}

std::uint64_t round_capacity(std::size_t bytes) {
    std::uint64_t cap = detail::kPage;
    while (cap < bytes) {
        if (cap > (std::uint64_t{1} << 40)) throw std::length_error("ring: log size too large");
        cap <<= 1;
    }
    return cap;
}

}  // namespace

Region Region::create(unsigned workers, std::size_t bytes_per_log) {
    if (workers == 0 || workers > 4096)
        throw std::invalid_argument("ring: worker count must be in 1..4096");
    const std::uint64_t cap = round_capacity(bytes_per_log);
    const detail::Offsets off = detail::compute_offsets(workers, cap);

    Region r;
    r.memfd_ = ::memfd_create("steerchat-ring", MFD_CLOEXEC);
    if (r.memfd_ < 0) throw_errno("memfd_create");
    if (::ftruncate(r.memfd_, static_cast<off_t>(off.total)) != 0) throw_errno("ftruncate");
    void* base = ::mmap(nullptr, off.total, PROT_READ | PROT_WRITE, MAP_SHARED, r.memfd_, 0);
    if (base == MAP_FAILED) throw_errno("mmap");
    r.base_ = base;
    r.size_ = off.total;

    auto* bytes = static_cast<std::byte*>(base);
    // The memfd is zero-filled; construct the control blocks in place so the atomics are objects.
    auto* header = new (bytes) detail::Header{};
    header->magic = detail::kMagic;
    header->version = detail::kVersion;
    header->workers = workers;
    header->capacity = cap;
    header->max_payload = cap / 4 - sizeof(detail::RecordHeader);
    header->total_size = off.total;

    detail::View& v = r.view_;
    v.header = header;
    v.global = new (bytes + sizeof(detail::Header)) detail::Global{};
    const unsigned words = (workers + 63) / 64;
    v.sleepers = reinterpret_cast<std::atomic<std::uint64_t>*>(bytes + off.sleepers);
    for (unsigned i = 0; i < words; ++i)
        new (&v.sleepers[i]) std::atomic<std::uint64_t>(0);
    v.writers = reinterpret_cast<detail::WriterState*>(bytes + off.writers);
    v.consumers = reinterpret_cast<detail::ConsumerState*>(bytes + off.consumers);
    v.cursors = reinterpret_cast<detail::Cursor*>(bytes + off.cursors);
    for (unsigned i = 0; i < workers; ++i) {
        new (&v.writers[i]) detail::WriterState{};
        new (&v.consumers[i]) detail::ConsumerState{};
    }
    for (std::size_t i = 0; i < std::size_t{workers} * workers; ++i)
        new (&v.cursors[i]) detail::Cursor{};
    v.logs = bytes + off.logs;
    v.workers = workers;
    v.capacity = cap;
    v.max_payload = header->max_payload;

    r.wake_fds_.reserve(workers);
    for (unsigned i = 0; i < workers; ++i) {
        const int fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (fd < 0) throw_errno("eventfd");
        r.wake_fds_.push_back(fd);
    }
    return r;
}

Region::Region(Region&& other) noexcept
    : memfd_(std::exchange(other.memfd_, -1)),
      base_(std::exchange(other.base_, nullptr)),
      size_(std::exchange(other.size_, 0)),
      wake_fds_(std::move(other.wake_fds_)),
      view_(std::exchange(other.view_, detail::View{})) {
    other.wake_fds_.clear();
}

Region& Region::operator=(Region&& other) noexcept {
    if (this != &other) {
        reset();
        memfd_ = std::exchange(other.memfd_, -1);
        base_ = std::exchange(other.base_, nullptr);
        size_ = std::exchange(other.size_, 0);
        wake_fds_ = std::move(other.wake_fds_);
        other.wake_fds_.clear();
        view_ = std::exchange(other.view_, detail::View{});
    }
    return *this;
}

Region::~Region() {
    reset();
}

void Region::reset() {
    for (int fd : wake_fds_)
        ::close(fd);
    wake_fds_.clear();
    if (base_ != nullptr) ::munmap(base_, size_);
    base_ = nullptr;
    size_ = 0;
    if (memfd_ >= 0) ::close(memfd_);
    memfd_ = -1;
    view_ = detail::View{};
}

void Region::check_slot(unsigned slot) const {
    if (slot >= view_.workers)
        throw std::out_of_range("ring: slot " + std::to_string(slot) + " out of range (" +
                                std::to_string(view_.workers) + " workers)");
}

int Region::wake_fd(unsigned slot) const {
    check_slot(slot);
    return wake_fds_[slot];
}

void Region::set_alive(unsigned slot, bool alive) {
    check_slot(slot);
    detail::ConsumerState& cs = view_.consumers[slot];
    if (!alive) {
        cs.alive.store(0, std::memory_order_release);
        view_.sleeper_word(slot).fetch_and(~detail::View::sleeper_bit(slot),
                                           std::memory_order_acq_rel);
        return;
    }
    for (unsigned w = 0; w < view_.workers; ++w) {
        detail::Cursor& c = view_.cursor(slot, w);
        c.pos.store(view_.writers[w].pos.load(std::memory_order_acquire),
                    std::memory_order_release);
        c.cut.store(0, std::memory_order_release);
    }
    cs.alive.store(1, std::memory_order_seq_cst);
}

bool Region::alive(unsigned slot) const {
    check_slot(slot);
    return view_.consumers[slot].alive.load(std::memory_order_acquire) != 0;
}

std::uint64_t Region::cut_loose_total() const {
    return view_.global->cut_loose_total.load(std::memory_order_relaxed);
}

std::uint64_t Region::lag_bytes(unsigned slot) const {
    check_slot(slot);
    if (view_.consumers[slot].alive.load(std::memory_order_acquire) == 0) return 0;
    std::uint64_t lag = 0;
    for (unsigned w = 0; w < view_.workers; ++w) {
        if (w == slot) continue;
        const std::uint64_t written = view_.writers[w].pos.load(std::memory_order_acquire);
        const std::uint64_t read = view_.cursor(slot, w).pos.load(std::memory_order_relaxed);
        if (written > read) lag += written - read;
    }
    return lag;
}

LogStats Region::log_stats(unsigned slot) const {
    check_slot(slot);
    const detail::WriterState& ws = view_.writers[slot];
    const detail::Snapshot s = detail::snapshot(ws);
    return LogStats{s.pos, s.records, ws.waits.load(std::memory_order_relaxed),
                    ws.cuts.load(std::memory_order_relaxed)};
}

ConsumerStats Region::consumer_stats(unsigned slot) const {
    check_slot(slot);
    const detail::ConsumerState& cs = view_.consumers[slot];
    ConsumerStats s;
    s.alive = cs.alive.load(std::memory_order_acquire) != 0;
    s.sleeping = (view_.sleeper_word(slot).load(std::memory_order_acquire) &
                  detail::View::sleeper_bit(slot)) != 0;
    s.wakeups = cs.wakeups.load(std::memory_order_relaxed);
    s.losses = cs.losses.load(std::memory_order_relaxed);
    s.lost_bytes = cs.lost_bytes.load(std::memory_order_relaxed);
    s.lost_records = cs.lost_records.load(std::memory_order_relaxed);
    return s;
}

}  // namespace steerchat::ring
