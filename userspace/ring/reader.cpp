#include <poll.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <utility>

#include "ring/ring.hpp"

namespace steerchat::ring {

using detail::align8;
using detail::RecordHeader;

namespace {

void drain(int fd) {
    std::uint64_t v;
    while (::read(fd, &v, sizeof v) == static_cast<ssize_t>(sizeof v)) {
    }
}

}  // namespace

Reader::Reader(Region& region, unsigned slot, ReaderOptions options)
    : view_(region.view()), slot_(slot), options_(options) {
    if (view_.header == nullptr) throw std::logic_error("ring: Reader on an empty Region");
    if (slot >= view_.workers)
        throw std::out_of_range("ring: reader slot " + std::to_string(slot) + " out of range");
    wake_fd_ = region.wake_fd(slot);
    const unsigned n = view_.workers;
    cursor_.assign(n, 0);
    known_.assign(n, 0);
    consumed_.assign(n, 0);
    scratch_.resize(view_.max_payload);
    // A (re)started consumer begins at every log's current end.
    for (unsigned w = 0; w < n; ++w) {
        if (w == slot) continue;
        const detail::Snapshot s = detail::snapshot(view_.writers[w]);
        detail::Cursor& c = view_.cursor(slot, w);
        c.pos.store(s.pos, std::memory_order_release);
        c.cut.store(0, std::memory_order_release);
        cursor_[w] = known_[w] = s.pos;
        consumed_[w] = s.records;
    }
    view_.sleeper_word(slot).fetch_and(~detail::View::sleeper_bit(slot), std::memory_order_acq_rel);
    drain(wake_fd_);
    view_.consumers[slot].alive.store(1, std::memory_order_seq_cst);
    active_ = true;
}

Reader::Reader(Reader&& other) noexcept
    : active_(std::exchange(other.active_, false)),
      view_(other.view_),
      wake_fd_(other.wake_fd_),
      slot_(other.slot_),
      options_(other.options_),
      next_writer_(other.next_writer_),
      cursor_(std::move(other.cursor_)),
      known_(std::move(other.known_)),
      consumed_(std::move(other.consumed_)),
      scratch_(std::move(other.scratch_)) {}

Reader& Reader::operator=(Reader&& other) noexcept {
    if (this != &other) {
        release();
        active_ = std::exchange(other.active_, false);
        view_ = other.view_;
        wake_fd_ = other.wake_fd_;
        slot_ = other.slot_;
        options_ = other.options_;
        next_writer_ = other.next_writer_;
        cursor_ = std::move(other.cursor_);
        known_ = std::move(other.known_);
        consumed_ = std::move(other.consumed_);
        scratch_ = std::move(other.scratch_);
    }
    return *this;
}

Reader::~Reader() {
    release();
}

void Reader::release() {
    if (!active_) return;
    active_ = false;
    view_.consumers[slot_].alive.store(0, std::memory_order_release);
    view_.sleeper_word(slot_).fetch_and(~detail::View::sleeper_bit(slot_),
                                        std::memory_order_acq_rel);
}

Reader::Step Reader::step(unsigned w) {
    detail::Cursor& cell = view_.cursor(slot_, w);
    if (cell.cut.load(std::memory_order_acquire) != 0) {
        resync(w);
        return Step::loss;
    }
    const std::uint64_t cap = view_.capacity;
    const detail::WriterState& ws = view_.writers[w];
    const std::byte* log = view_.log(w);
    std::uint64_t c = cursor_[w];
    for (;;) {
        if (c == known_[w]) {
            known_[w] = ws.pos.load(std::memory_order_acquire);
            if (c == known_[w]) return Step::empty;
        }
        const std::uint64_t off = c & (cap - 1);
        RecordHeader h;
        std::memcpy(&h, log + off, sizeof h);
        const bool padding = h.type == detail::kPaddingType;
        std::uint64_t size;
        bool sane;
        if (padding) {
            size = sizeof(RecordHeader) + std::uint64_t{h.length};
            sane = off + size == cap;
        } else {
            size = align8(sizeof(RecordHeader) + std::uint64_t{h.length});
            sane = h.length <= view_.max_payload && off + size <= cap;
        }
        sane = sane && c + size <= known_[w];
        if (sane && !padding && h.length != 0)
            std::memcpy(scratch_.data(), log + off + sizeof(RecordHeader), h.length);
        // Seqlock-style validation: if any byte we copied was being overwritten, the writer's
        // claim (stored before it wrote) is visible now.
        std::atomic_thread_fence(std::memory_order_acquire);
        if (ws.claim.load(std::memory_order_relaxed) > c + cap) {
            cursor_[w] = c;
            resync(w);
            return Step::loss;
        }
        if (!sane)
            throw std::runtime_error("ring: corrupt record in log " + std::to_string(w) +
                                     " at position " + std::to_string(c));
        c += size;
        cursor_[w] = c;
        cell.pos.store(c, std::memory_order_release);
        if (padding) continue;
        ++consumed_[w];
        record_ = Record{w, h.type, {scratch_.data(), h.length}};
        return Step::record;
    }
}

void Reader::resync(unsigned w) {
    const detail::Snapshot s = detail::snapshot(view_.writers[w]);
    loss_ = Loss{w, s.pos - cursor_[w], s.records - consumed_[w]};
    cursor_[w] = known_[w] = s.pos;
    consumed_[w] = s.records;
    detail::Cursor& cell = view_.cursor(slot_, w);
    cell.pos.store(s.pos, std::memory_order_release);
    cell.cut.store(0, std::memory_order_release);  // producers wait for us again
    detail::ConsumerState& cs = view_.consumers[slot_];
    cs.losses.fetch_add(1, std::memory_order_relaxed);
    cs.lost_bytes.fetch_add(loss_.bytes, std::memory_order_relaxed);
    cs.lost_records.fetch_add(loss_.records, std::memory_order_relaxed);
}

bool Reader::pending() const {
    for (unsigned w = 0; w < view_.workers; ++w) {
        if (w == slot_) continue;
        if (view_.cursor(slot_, w).cut.load(std::memory_order_acquire) != 0) return true;
        if (view_.writers[w].pos.load(std::memory_order_acquire) != cursor_[w]) return true;
    }
    return false;
}

bool Reader::prepare_sleep() {
    view_.sleeper_word(slot_).fetch_or(detail::View::sleeper_bit(slot_), std::memory_order_seq_cst);
    // Pairs with the fence in Writer::wake_sleepers.
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (pending()) {
        finish_sleep();
        return false;
    }
    return true;
}

void Reader::finish_sleep() {
    view_.sleeper_word(slot_).fetch_and(~detail::View::sleeper_bit(slot_),
                                        std::memory_order_acq_rel);
    drain(wake_fd_);
}

bool Reader::wait(std::chrono::nanoseconds timeout) {
    const auto spin_until = std::chrono::steady_clock::now() + options_.spin;
    do {
        if (pending()) return true;
        detail::cpu_relax();
    } while (std::chrono::steady_clock::now() < spin_until);
    if (!prepare_sleep()) return true;
    pollfd p{wake_fd(), POLLIN, 0};
    const auto ms = std::chrono::ceil<std::chrono::milliseconds>(timeout).count();
    int rc;
    do {
        rc = ::poll(&p, 1, static_cast<int>(ms));
    } while (rc < 0 && errno == EINTR);
    finish_sleep();
    return pending();
}

}  // namespace steerchat::ring
