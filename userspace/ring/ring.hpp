// Shared-memory broadcast logs between workers (see docs/architecture.md, "ring").
//
// One single-writer log per worker slot, all in one memfd mapping that the master creates before
// it forks; workers inherit the mapping and the per-slot eventfds. Worker i owns a Writer for log i
// and a Reader that reads every other log with its own cursors (kept in the mapping, so producers
// see how far each consumer is).
//
// Guarantees:
//  * Per-writer order, every committed record delivered exactly once to every live reader that
//    keeps up. A record becomes visible only when the writer release-stores its position after
//    writing it, so a writer killed mid-record leaves nothing visible; a new Writer in that slot
//    continues from the last committed record.
//  * A producer that needs room waits for live consumers at most WriterOptions::max_wait per
//    reserve(); a consumer still in the way is cut loose (flag in its cursor + Region counter) and
//    no longer waited for. Its Reader reports that with a Loss (bytes and records skipped), then
//    resyncs to the log's current position. Nothing is skipped silently.
//  * A Reader constructed for a slot (a fresh or respawned worker) starts reading every log at
//    that log's current write position, and marks the slot alive. The master marks a slot dead
//    with Region::set_alive(slot, false) as soon as its worker exits, so producers do not wait.
//  * Wake-ups: a consumer about to sleep sets its bit in a shared bitmap, re-checks every log and
//    only then blocks on its eventfd; producers write a consumer's eventfd only if its bit is set.
//
// A moved-from Writer or Reader may only be destroyed or assigned to.
// Threading: each Writer and Reader is used by one thread. The Region must outlive them (it may
// be moved; they refer to the mapping and the eventfd numbers, not to the Region object).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <stdexcept>
#include <vector>

#include "ring/layout.hpp"

namespace steerchat::ring {

// Types at or above this value are reserved for the ring itself.
inline constexpr std::uint32_t kFirstReservedType = 0xFFFF'0000u;

struct LogStats {
    std::uint64_t write_position = 0;  // bytes ever committed (monotonic)
    std::uint64_t records = 0;         // records ever committed
    std::uint64_t waits = 0;           // reserve() calls that waited for a consumer
    std::uint64_t cuts = 0;            // consumers this log's writer cut loose
};

struct ConsumerStats {
    bool alive = false;
    bool sleeping = false;
    std::uint64_t wakeups = 0;  // eventfd writes producers made for this consumer
    std::uint64_t losses = 0;   // Loss reports delivered by this consumer's Reader
    std::uint64_t lost_bytes = 0;
    std::uint64_t lost_records = 0;
};

// Owns the memfd, the mapping and one eventfd per slot. Move-only.
class Region {
  public:
    // Master, before forking. bytes_per_log is rounded up to a power of two (min 4096).
    static Region create(unsigned workers, std::size_t bytes_per_log);

    Region(Region&& other) noexcept;
    Region& operator=(Region&& other) noexcept;
    Region(const Region&) = delete;
    Region& operator=(const Region&) = delete;
    ~Region();

    int fd() const { return memfd_; }
    int wake_fd(unsigned slot) const;
    unsigned workers() const { return view_.workers; }
    std::size_t capacity() const { return view_.capacity; }
    // Largest payload a record may carry (capacity/4 minus the header).
    std::size_t max_payload() const { return view_.max_payload; }

    // false: producers stop waiting for this consumer (master, when its worker exits).
    // true: its cursors are first moved to every log's current position (a Reader does this
    // itself on construction).
    void set_alive(unsigned slot, bool alive);
    bool alive(unsigned slot) const;

    std::uint64_t cut_loose_total() const;
    // Bytes the reader of `slot` has yet to read, over every other log (0 if it is not alive).
    std::uint64_t lag_bytes(unsigned slot) const;
    LogStats log_stats(unsigned slot) const;
    ConsumerStats consumer_stats(unsigned slot) const;

    const detail::View& view() const { return view_; }

  private:
    Region() = default;
    void check_slot(unsigned slot) const;
    void reset();

    int memfd_ = -1;
    void* base_ = nullptr;
    std::size_t size_ = 0;
    std::vector<int> wake_fds_;
    detail::View view_{};
};

struct WriterOptions {
    // Longest a reserve() waits for live consumers before cutting them loose.
    std::chrono::nanoseconds max_wait = std::chrono::milliseconds(2);
};

// The single writer of one slot's log. Move-only; not copyable.
class Writer {
  public:
    Writer(Region& region, unsigned slot, WriterOptions options = {});
    Writer(Writer&&) noexcept = default;
    Writer& operator=(Writer&&) noexcept = default;
    Writer(const Writer&) = delete;
    Writer& operator=(const Writer&) = delete;

    // Room for a payload of up to max_size bytes, to encode into directly; visible to nobody
    // until commit(). Waits (bounded) for consumers. Throws std::length_error if max_size >
    // max_payload(). A second reserve() without commit() discards the first reservation.
    std::span<std::byte> reserve(std::size_t max_size);
    // Publishes the reserved record with `size` <= reserved bytes. Throws std::logic_error if
    // nothing is reserved, std::length_error if size exceeds the reservation,
    // std::invalid_argument for a reserved type.
    void commit(std::uint32_t type, std::size_t size);
    // reserve + copy + commit.
    void publish(std::uint32_t type, std::span<const std::byte> payload);

    unsigned slot() const { return slot_; }
    std::uint64_t position() const { return pos_; }
    std::size_t max_payload() const { return view_.max_payload; }

  private:
    void ensure_room(std::uint64_t end);
    void wake_sleepers();

    detail::View view_;
    std::vector<int> wake_fds_;  // every consumer's eventfd (owned by the Region)
    unsigned slot_;
    WriterOptions options_;
    detail::WriterState* state_;
    std::byte* log_;
    std::uint64_t pos_ = 0;      // == state_->pos
    std::uint64_t records_ = 0;  // == state_->records
    std::uint64_t seq_ = 0;      // == state_->seq (even)
    std::uint64_t limit_ = 0;    // writing below this position needs no check of the cursors
    std::uint64_t reserved_at_ = 0;
    std::size_t reserved_size_ = 0;
    bool reserved_ = false;
};

struct Record {
    unsigned writer;
    std::uint32_t type;
    // Valid only during the callback (a copy owned by the Reader, never torn).
    std::span<const std::byte> payload;
};

// This reader fell behind a writer that stopped waiting for it (or the data it was reading was
// overwritten): `bytes`/`records` of that log were skipped; reading resumed at its current end.
struct Loss {
    unsigned writer;
    std::uint64_t bytes;
    std::uint64_t records;
};

struct ReaderOptions {
    // Reader::wait spins this long on the logs before sleeping on the eventfd.
    std::chrono::nanoseconds spin = std::chrono::microseconds(30);
};

// Reads every other slot's log for consumer `slot`. Move-only.
class Reader {
  public:
    Reader(Region& region, unsigned slot, ReaderOptions options = {});
    Reader(Reader&& other) noexcept;
    Reader& operator=(Reader&& other) noexcept;
    Reader(const Reader&) = delete;
    Reader& operator=(const Reader&) = delete;
    // Marks the slot dead (producers stop waiting for it).
    ~Reader();

    // Delivers up to `budget` records, in order per writer, as on_record(const Record&), and
    // every loss as on_loss(const Loss&). Returns the number of records delivered.
    template <class OnRecord, class OnLoss>
    std::size_t poll(OnRecord&& on_record, OnLoss&& on_loss,
                     std::size_t budget = std::numeric_limits<std::size_t>::max());

    // Anything to read (or a loss to report)?
    bool pending() const;

    int wake_fd() const { return wake_fd_; }
    unsigned slot() const { return slot_; }
    const ReaderOptions& options() const { return options_; }

    // Sleep protocol: if prepare_sleep() returns true, block until wake_fd() is readable, then
    // call finish_sleep(). If it returns false, something arrived: poll again.
    bool prepare_sleep();
    // Leaves the sleeping state and drains the eventfd.
    void finish_sleep();
    // Spins for options().spin, then sleeps on the eventfd for at most `timeout`.
    // Returns pending().
    bool wait(std::chrono::nanoseconds timeout);

  private:
    enum class Step { empty, record, loss };
    Step step(unsigned writer);
    void resync(unsigned writer);
    void release();

    bool active_ = false;  // false once moved from
    detail::View view_{};
    int wake_fd_ = -1;
    unsigned slot_ = 0;
    ReaderOptions options_{};
    unsigned next_writer_ = 0;
    std::vector<std::uint64_t> cursor_;    // local copy of cursors[slot][w]
    std::vector<std::uint64_t> known_;     // last loaded write position of w
    std::vector<std::uint64_t> consumed_;  // records of w consumed or skipped
    std::vector<std::byte> scratch_;       // payload copy (max_payload bytes)
    Record record_{};
    Loss loss_{};
};

template <class OnRecord, class OnLoss>
std::size_t Reader::poll(OnRecord&& on_record, OnLoss&& on_loss, std::size_t budget) {
    std::size_t delivered = 0;
    const unsigned n = view_.workers;
    for (unsigned i = 0; i < n && delivered < budget; ++i) {
        const unsigned w = (next_writer_ + i) % n;
        if (w == slot_) continue;
        while (delivered < budget) {
            const Step s = step(w);
            if (s == Step::empty) break;
            if (s == Step::loss) {
                on_loss(static_cast<const Loss&>(loss_));
                continue;
            }
            ++delivered;
            on_record(static_cast<const Record&>(record_));
        }
    }
    next_writer_ = (next_writer_ + 1) % n;
    return delivered;
}

}  // namespace steerchat::ring
