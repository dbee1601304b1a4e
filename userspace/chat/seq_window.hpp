// Which room sequence numbers a worker has delivered (chat.hpp, "Gaps"): everything up to a
// floor, plus the few above it that arrived early (messages of one room come from several
// workers' logs, which are not ordered among themselves, so seq 12 may arrive before seq 11).
//
// The Hub keeps one per local room. A live message whose seq it already has is one the Hub
// resent after a loss (skipped: no repeats); after a loss the room's history tells which seqs
// are still missing (resent) and which are gone (announced as missed), and settle() then
// accounts for everything up to the history's newest.
#pragma once

#include <cstddef>
#include <cstdint>
#include <set>

namespace steerchat::chat {

class SeqWindow {
  public:
    // Seqs above this many out-of-order arrivals: the lowest hole is given up (a message whose
    // record never comes: its worker died between the history and its log).
    static constexpr std::size_t kMaxAhead = 4096;

    explicit SeqWindow(std::uint64_t floor = 0) : floor_(floor) {}

    // Records `seq` as delivered; false if it already was.
    bool add(std::uint64_t seq) {
        if (seq == floor_ + 1 && ahead_.empty()) {
            floor_ = seq;
            return true;
        }
        if (has(seq) || !ahead_.insert(seq).second) return false;
        absorb();
        if (ahead_.size() > kMaxAhead) settle(*ahead_.begin());
        return true;
    }
    bool has(std::uint64_t seq) const { return seq <= floor_ || ahead_.contains(seq); }
    // How many seqs of [from, to] it does not have.
    std::uint64_t missing(std::uint64_t from, std::uint64_t to) const {
        if (to < from) return 0;
        if (to <= floor_) return 0;
        if (from <= floor_) from = floor_ + 1;
        std::uint64_t have = 0;
        for (auto it = ahead_.lower_bound(from); it != ahead_.end() && *it <= to; ++it)
            ++have;
        return to - from + 1 - have;
    }
    // Everything up to `seq` is accounted for (delivered, resent or announced as missed).
    void settle(std::uint64_t seq) {
        if (seq <= floor_) return;
        floor_ = seq;
        ahead_.erase(ahead_.begin(), ahead_.upper_bound(seq));
        absorb();
    }
    std::uint64_t floor() const noexcept { return floor_; }
    std::size_t ahead() const noexcept { return ahead_.size(); }

  private:
    void absorb() {
        while (!ahead_.empty() && *ahead_.begin() == floor_ + 1) {
            ++floor_;
            ahead_.erase(ahead_.begin());
        }
    }

    std::uint64_t floor_;
    std::set<std::uint64_t> ahead_;
};

}  // namespace steerchat::chat
