// Owns the loaded sk_reuseport program and its maps: load, attach to a listener group, fill the
// socket array and the bucket table, pin the maps for bpftool and scripts/inspect, read stats.
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "steer.h"

struct steer_bpf;

namespace steerchat::steer {

// An error whose message says what went wrong and how to fix it.
class SteerError : public std::runtime_error {
  public:
    using std::runtime_error::runtime_error;
};

struct SteerConfig {
    std::uint32_t seed = 0;
    std::uint32_t nslots = 1;
    bool v6_prefix64 = false;
};

struct SteerStats {
    std::array<std::uint64_t, STEER_STAT_MAX> outcome{};  // indexed by enum steer_stat
    std::vector<std::uint64_t> per_slot;                  // selections per slot
};

// The names pinned under a pin directory, from the BPF object itself (bpf/steer.bpf.c): every map
// it declares (libbpf's own internal maps such as .rodata excepted) and every program, each at
// <dir>/<name>. This is the one list: nothing else spells it out. Opens the embedded object
// without loading it (no privileges needed).
std::vector<std::string> pinned_names();

// A map of a running instance, by its name in bpf/steer.bpf.c (a hand-over: master/takeover.hpp).
struct NamedFd {
    std::string name;
    int fd = -1;
};

class Steering {
  public:
    // Opens and loads the embedded program. Throws SteerError (e.g. missing CAP_BPF) with a fix.
    explicit Steering(const SteerConfig& cfg);
    // The same, but the program uses the running instance's maps `reuse` (by name) instead of
    // new ones: the socket array, the buckets and the counters stay as they are. A map the
    // object declares that `reuse` lacks is created. Throws SteerError when a map of `reuse`
    // has another type or size than this binary's (the maps' layout changed).
    Steering(const SteerConfig& cfg, const std::vector<NamedFd>& reuse);
    ~Steering();
    Steering(const Steering&) = delete;
    Steering& operator=(const Steering&) = delete;

    // Attaches the program to the reuseport group of `listen_fd` (SO_ATTACH_REUSEPORT_EBPF).
    void attach(int listen_fd);
    // Puts a listening SO_REUSEPORT socket into `slot` of the socket array.
    void set_socket(std::uint32_t slot, int listen_fd);
    // Whether `slot` of the socket array holds the socket `listen_fd` (by socket cookie).
    bool holds_socket(std::uint32_t slot, int listen_fd) const;
    // Empties a slot (the socket itself stays open; shut it down to drain its queue).
    void clear_socket(std::uint32_t slot);
    // Sets the slots in use, 0..n-1 (the program's fallback scan wraps within them).
    void set_nslots(std::uint32_t n);
    // Writes the whole bucket table (STEER_BUCKETS entries of slot ids).
    void set_buckets(std::span<const std::uint32_t> table);
    std::vector<std::uint32_t> buckets() const;
    SteerStats stats() const;
    const SteerConfig& config() const { return cfg_; }

    // Pins every map and program of the object under `dir` (see pinned_names; mounting bpffs at
    // its root if needed, mode 0700). The pins are removed by unpin() or the destructor.
    void pin(const std::filesystem::path& dir);
    // Pins that already exist (a hand-over) are replaced.
    void unpin() noexcept;
    // After a hand-over: the pins belong to the new master now; this object leaves them.
    void disown_pins() noexcept;
    // The object's maps (not libbpf's internal ones) by name, for a hand-over; the fds stay ours.
    std::vector<NamedFd> map_fds() const;
    const std::filesystem::path& pin_dir() const { return pin_dir_; }

  private:
    SteerConfig cfg_;
    steer_bpf* skel_ = nullptr;
    std::filesystem::path pin_dir_;
    std::vector<std::filesystem::path> pinned_;
};

// Removes a pin directory left by an instance that did not exit cleanly. Returns true if
// something was removed.
bool remove_stale_pins(const std::filesystem::path& dir);

// Ensures a BPF filesystem is mounted at `root` (e.g. /sys/fs/bpf).
void ensure_bpffs(const std::filesystem::path& root);

}  // namespace steerchat::steer
