// Shared-memory layout of the ring region (internal to ring/; included by ring.hpp because
// Reader::poll is a template).
//
// One memfd mapping holds, in this order (every block starts on a 64-byte line, the logs on a
// page):
//
//   Header                      magic, version, geometry (written once by the master)
//   Global                      cut_loose_total (producers, fetch_add)
//   sleepers[ceil(N/64)]        bitmap: bit r set = consumer r is about to sleep on its eventfd
//   WriterState[N]              one line per log, written only by that log's writer
//   ConsumerState[N]            one line per consumer: alive (master/consumer), wake-up and loss
//   stats Cursor[N][N]                cursors[reader][writer], one line each: position (reader),
//   cut flag log[N][capacity]            the byte rings, page aligned, capacity a power of two
//
// Records in a log are 8-byte aligned: RecordHeader {u32 length; u32 type} then `length` payload
// bytes, padded to 8. A record never straddles the end of the ring: when it does not fit, the
// writer first fills the tail with a padding record (type kPaddingType, length = tail - 8).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace steerchat::ring::detail {

inline constexpr std::uint64_t kMagic = 0x676e6972'74616863ULL;  // "chatring" little-endian
inline constexpr std::uint32_t kVersion = 1;
inline constexpr std::size_t kLine = 64;
inline constexpr std::size_t kPage = 4096;
inline constexpr std::uint32_t kPaddingType = 0xFFFF'FFFFu;

static_assert(std::atomic<std::uint64_t>::is_always_lock_free);
static_assert(std::atomic<std::uint32_t>::is_always_lock_free);

struct RecordHeader {
    std::uint32_t length;  // payload bytes (for padding: bytes after the header up to the end)
    std::uint32_t type;
};
static_assert(sizeof(RecordHeader) == 8);

constexpr std::uint64_t align8(std::uint64_t n) {
    return (n + 7) & ~std::uint64_t{7};
}
constexpr std::uint64_t align_up(std::uint64_t n, std::uint64_t a) {
    return (n + a - 1) / a * a;
}

struct alignas(kLine) Header {
    std::uint64_t magic;
    std::uint32_t version;
    std::uint32_t workers;
    std::uint64_t capacity;     // bytes per log, power of two
    std::uint64_t max_payload;  // largest payload accepted by Writer::reserve
    std::uint64_t total_size;
};

struct alignas(kLine) Global {
    std::atomic<std::uint64_t> cut_loose_total;
};

// Written only by the writer of the log (a respawned writer takes over the same line).
struct alignas(kLine) WriterState {
    std::atomic<std::uint64_t> pos;      // published end of the last committed record
    std::atomic<std::uint64_t> claim;    // end of the bytes the writer is writing (>= pos)
    std::atomic<std::uint64_t> records;  // committed records (pairs with pos under seq)
    std::atomic<std::uint64_t> seq;      // seqlock over (pos, records): odd while publishing
    // Set just before seq turns odd, so a Writer taking over a slot whose previous writer died
    // inside the publish window can tell whether that record was committed (pos > commit_from)
    // and repair `records`.
    std::atomic<std::uint64_t> commit_from;
    std::atomic<std::uint64_t> commit_records;
    std::atomic<std::uint64_t> waits;  // reserve() calls that had to wait for a consumer
    std::atomic<std::uint64_t> cuts;   // consumers this writer cut loose
};

struct alignas(kLine) ConsumerState {
    std::atomic<std::uint32_t> alive;  // producers wait only for live consumers
    std::atomic<std::uint32_t> pad_;
    std::atomic<std::uint64_t> wakeups;       // eventfd writes made for this consumer
    std::atomic<std::uint64_t> losses;        // Loss reports delivered
    std::atomic<std::uint64_t> lost_bytes;    // bytes skipped by those reports
    std::atomic<std::uint64_t> lost_records;  // records skipped by those reports
};

struct alignas(kLine) Cursor {
    std::atomic<std::uint64_t> pos;  // next position the reader will read (reader writes)
    std::atomic<std::uint32_t> cut;  // set by the writer when it stops waiting; reader clears
};

static_assert(sizeof(Header) == kLine && sizeof(Global) == kLine);
static_assert(sizeof(WriterState) == kLine && sizeof(ConsumerState) == kLine);
static_assert(sizeof(Cursor) == kLine);

// Pointers into one mapping, computed identically by every process.
struct View {
    Header* header = nullptr;
    Global* global = nullptr;
    std::atomic<std::uint64_t>* sleepers = nullptr;
    WriterState* writers = nullptr;
    ConsumerState* consumers = nullptr;
    Cursor* cursors = nullptr;
    std::byte* logs = nullptr;
    unsigned workers = 0;
    std::uint64_t capacity = 0;
    std::uint64_t max_payload = 0;

    Cursor& cursor(unsigned reader, unsigned writer) const {
        return cursors[std::size_t{reader} * workers + writer];
    }
    std::byte* log(unsigned writer) const { return logs + std::size_t{writer} * capacity; }
    std::atomic<std::uint64_t>& sleeper_word(unsigned slot) const { return sleepers[slot / 64]; }
    static std::uint64_t sleeper_bit(unsigned slot) { return std::uint64_t{1} << (slot % 64); }
};

struct Offsets {
    std::size_t sleepers, writers, consumers, cursors, logs, total;
};

inline Offsets compute_offsets(unsigned workers, std::uint64_t capacity) {
    Offsets o{};
    std::size_t at = sizeof(Header) + sizeof(Global);
    o.sleepers = at;
    at += align_up(((workers + 63) / 64) * sizeof(std::uint64_t), kLine);
    o.writers = at;
    at += std::size_t{workers} * sizeof(WriterState);
    o.consumers = at;
    at += std::size_t{workers} * sizeof(ConsumerState);
    o.cursors = at;
    at += std::size_t{workers} * workers * sizeof(Cursor);
    o.logs = align_up(at, kPage);
    o.total = o.logs + std::size_t{workers} * capacity;
    return o;
}

// Consistent (pos, records) pair of a log, read under the writer's seqlock.
struct Snapshot {
    std::uint64_t pos;
    std::uint64_t records;
};
Snapshot snapshot(const WriterState& ws);

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    asm volatile("yield" ::: "memory");
#endif
}

}  // namespace steerchat::ring::detail
