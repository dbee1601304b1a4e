#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cstring>
#include <limits>
#include <string>

#include "ring/ring.hpp"

namespace steerchat::ring {

using detail::align8;
using detail::RecordHeader;

Writer::Writer(Region& region, unsigned slot, WriterOptions options)
    : view_(region.view()), slot_(slot), options_(options) {
    if (view_.header == nullptr) throw std::logic_error("ring: Writer on an empty Region");
    if (slot >= view_.workers)
        throw std::out_of_range("ring: writer slot " + std::to_string(slot) + " out of range");
    wake_fds_.reserve(view_.workers);
    for (unsigned r = 0; r < view_.workers; ++r)
        wake_fds_.push_back(region.wake_fd(r));
    state_ = &view_.writers[slot];
    log_ = view_.log(slot);

    // Take over the slot: a previous writer may have died anywhere, including between
    // reserve() and commit() (nothing visible: pos was not advanced) or inside commit's
    // seqlock window (repaired here).
    std::uint64_t seq = state_->seq.load(std::memory_order_acquire);
    const std::uint64_t pos = state_->pos.load(std::memory_order_acquire);
    if (seq & 1) {
        if (pos > state_->commit_from.load(std::memory_order_relaxed))
            state_->records.store(state_->commit_records.load(std::memory_order_relaxed),
                                  std::memory_order_relaxed);
        ++seq;
        state_->seq.store(seq, std::memory_order_release);
    }
    seq_ = seq;
    pos_ = pos;
    records_ = state_->records.load(std::memory_order_relaxed);
    limit_ = pos_;  // first reserve() looks at the cursors
}

std::span<std::byte> Writer::reserve(std::size_t max_size) {
    if (max_size > view_.max_payload)
        throw std::length_error("ring: record payload of " + std::to_string(max_size) +
                                " bytes exceeds the maximum of " +
                                std::to_string(view_.max_payload) + " bytes (log capacity " +
                                std::to_string(view_.capacity) + " / 4, minus the header)");
    const std::uint64_t cap = view_.capacity;
    const std::uint64_t rec = align8(sizeof(RecordHeader) + max_size);
    const std::uint64_t off = pos_ & (cap - 1);
    const std::uint64_t pad = off + rec > cap ? cap - off : 0;
    const std::uint64_t start = pos_ + pad;
    const std::uint64_t end = start + rec;

    ensure_room(end);

    // Announce the bytes about to be overwritten before touching them (readers validate their
    // copies against this); never lowered, since a dead predecessor may have written further.
    if (end > state_->claim.load(std::memory_order_relaxed)) {
        state_->claim.store(end, std::memory_order_relaxed);
        std::atomic_thread_fence(std::memory_order_release);
    }
    if (pad != 0) {
        const RecordHeader h{static_cast<std::uint32_t>(pad - sizeof(RecordHeader)),
                             detail::kPaddingType};
        std::memcpy(log_ + off, &h, sizeof h);
    }
    reserved_at_ = start;
    reserved_size_ = max_size;
    reserved_ = true;
    return {log_ + (start & (cap - 1)) + sizeof(RecordHeader), max_size};
}

void Writer::commit(std::uint32_t type, std::size_t size) {
    if (!reserved_) throw std::logic_error("ring: commit() without reserve()");
    if (size > reserved_size_)
        throw std::length_error("ring: commit() of " + std::to_string(size) +
                                " bytes exceeds the " + std::to_string(reserved_size_) +
                                " bytes reserved");
    if (type >= kFirstReservedType)
        throw std::invalid_argument("ring: record type " + std::to_string(type) + " is reserved");
    const std::uint64_t cap = view_.capacity;
    const RecordHeader h{static_cast<std::uint32_t>(size), type};
    std::memcpy(log_ + (reserved_at_ & (cap - 1)), &h, sizeof h);
    const std::uint64_t next = reserved_at_ + align8(sizeof(RecordHeader) + size);

    state_->commit_from.store(reserved_at_, std::memory_order_relaxed);
    state_->commit_records.store(records_ + 1, std::memory_order_relaxed);
    state_->seq.store(seq_ + 1, std::memory_order_relaxed);
    std::atomic_thread_fence(std::memory_order_release);
    state_->pos.store(next, std::memory_order_release);  // the record becomes visible here
    state_->records.store(records_ + 1, std::memory_order_relaxed);
    state_->seq.store(seq_ + 2, std::memory_order_release);

    seq_ += 2;
    pos_ = next;
    ++records_;
    reserved_ = false;
    wake_sleepers();
}

void Writer::publish(std::uint32_t type, std::span<const std::byte> payload) {
    if (type >= kFirstReservedType)
        throw std::invalid_argument("ring: record type " + std::to_string(type) + " is reserved");
    std::span<std::byte> dst = reserve(payload.size());
    if (!payload.empty()) std::memcpy(dst.data(), payload.data(), payload.size());
    commit(type, payload.size());
}

void Writer::ensure_room(std::uint64_t end) {
    if (end <= limit_) return;
    const std::uint64_t cap = view_.capacity;
    const unsigned n = view_.workers;
    bool waited = false;
    std::chrono::steady_clock::time_point deadline{};
    unsigned spins = 0;
    for (;;) {
        // Room is bounded by the slowest live, not-cut-loose consumer, and by our own position
        // (a consumer joining right now starts at most there).
        std::uint64_t lowest = pos_;
        bool lagging = false;
        for (unsigned r = 0; r < n; ++r) {
            if (r == slot_) continue;
            if (view_.consumers[r].alive.load(std::memory_order_acquire) == 0) continue;
            const detail::Cursor& c = view_.cursor(r, slot_);
            if (c.cut.load(std::memory_order_acquire) != 0) continue;
            const std::uint64_t at = c.pos.load(std::memory_order_acquire);
            if (at + cap < end)
                lagging = true;
            else
                lowest = std::min(lowest, at);
        }
        if (!lagging) {
            limit_ = lowest + cap;
            return;
        }
        const auto now = std::chrono::steady_clock::now();
        if (!waited) {
            waited = true;
            deadline = now + options_.max_wait;
            state_->waits.fetch_add(1, std::memory_order_relaxed);
        } else if (now >= deadline) {
            // Cut loose every consumer still in the way; they are not waited for any more
            // until their Reader reports the loss and resyncs.
            for (unsigned r = 0; r < n; ++r) {
                if (r == slot_) continue;
                if (view_.consumers[r].alive.load(std::memory_order_acquire) == 0) continue;
                detail::Cursor& c = view_.cursor(r, slot_);
                if (c.cut.load(std::memory_order_acquire) != 0) continue;
                if (c.pos.load(std::memory_order_acquire) + cap >= end) continue;
                c.cut.store(1, std::memory_order_release);
                state_->cuts.fetch_add(1, std::memory_order_relaxed);
                view_.global->cut_loose_total.fetch_add(1, std::memory_order_relaxed);
            }
            continue;
        }
        if (++spins < 2000) {
            detail::cpu_relax();
        } else {
            ::sched_yield();  // the consumer may need this CPU
        }
    }
}

void Writer::wake_sleepers() {
    // Pairs with the fence in Reader::prepare_sleep (Dekker): either the consumer sees our
    // position, or we see its sleeping bit.
    std::atomic_thread_fence(std::memory_order_seq_cst);
    const unsigned words = (view_.workers + 63) / 64;
    for (unsigned i = 0; i < words; ++i) {
        std::uint64_t bits = view_.sleepers[i].load(std::memory_order_relaxed);
        if (i == slot_ / 64) bits &= ~detail::View::sleeper_bit(slot_);
        while (bits != 0) {
            const unsigned b = static_cast<unsigned>(std::countr_zero(bits));
            bits &= bits - 1;
            const std::uint64_t bit = std::uint64_t{1} << b;
            // Only one producer wins the bit and writes the eventfd.
            if ((view_.sleepers[i].fetch_and(~bit, std::memory_order_acq_rel) & bit) == 0) continue;
            const unsigned r = i * 64 + b;
            const std::uint64_t one = 1;
            [[maybe_unused]] const auto n = ::write(wake_fds_[r], &one, sizeof one);
            view_.consumers[r].wakeups.fetch_add(1, std::memory_order_relaxed);
        }
    }
}

}  // namespace steerchat::ring
