#include "steering.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string_view>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fmt/core.h>
#include <linux/magic.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include "steer.skel.h"
#include "util/log.hpp"

namespace steerchat::steer {

namespace {

std::string errno_text(int err) {
    return std::strerror(err < 0 ? -err : err);
}

// libbpf's own chatter goes to the log (its debug output at debug), prefixed with its source.
int libbpf_print(enum libbpf_print_level level, const char* fmt, va_list args) {
    const log::Level at = level == LIBBPF_WARN   ? log::Level::warn
                          : level == LIBBPF_INFO ? log::Level::info
                                                 : log::Level::debug;
    if (!log::enabled(at)) return 0;
    char buf[1024];
    int n = std::vsnprintf(buf, sizeof buf, fmt, args);
    if (n < 0) return n;
    std::string_view text(buf, std::min<std::size_t>(static_cast<std::size_t>(n), sizeof buf - 1));
    while (!text.empty() && text.back() == '\n')
        text.remove_suffix(1);
    log::write(at, fmt::format("libbpf: {}", text));
    return n;
}

[[noreturn]] void fail_privilege(const char* what, int err) {
    throw SteerError(fmt::format(
        "{}: {}. Loading the BPF steering program needs CAP_BPF (or CAP_SYS_ADMIN on "
        "kernels before 5.8): run steerchat as root, or under systemd with the installed unit "
        "(CapabilityBoundingSet=CAP_BPF ...; docs/operations.md); or start with "
        "--steering kernel for plain SO_REUSEPORT (balanced, but not sticky per client IP)",
        what, errno_text(err)));
}

}  // namespace

std::vector<std::string> pinned_names() {
    libbpf_set_print(libbpf_print);
    steer_bpf* skel = steer_bpf::open();
    if (!skel)
        throw SteerError(fmt::format("opening the BPF object failed: {}", errno_text(errno)));
    std::vector<std::string> names;
    bpf_map* map = nullptr;
    bpf_object__for_each_map(map, skel->obj) {
        if (!bpf_map__is_internal(map)) names.emplace_back(bpf_map__name(map));
    }
    bpf_program* prog = nullptr;
    bpf_object__for_each_program(prog, skel->obj) {
        names.emplace_back(bpf_program__name(prog));
    }
    steer_bpf::destroy(skel);
    return names;
}

Steering::Steering(const SteerConfig& cfg) : Steering(cfg, {}) {}

Steering::Steering(const SteerConfig& cfg, const std::vector<NamedFd>& reuse) : cfg_(cfg) {
    if (cfg.nslots == 0 || cfg.nslots > STEER_MAX_SLOTS)
        throw SteerError(
            fmt::format("steering: {} worker slots requested; between 1 and {} are "
                        "supported",
                        cfg.nslots, STEER_MAX_SLOTS));
    libbpf_set_print(libbpf_print);
    skel_ = steer_bpf::open();
    if (!skel_) fail_privilege("opening the BPF object failed", errno);
    for (const auto& [name, fd] : reuse) {
        bpf_map* map = bpf_object__find_map_by_name(skel_->obj, name.c_str());
        if (!map || bpf_map__is_internal(map)) continue;  // a map this binary no longer has
        bpf_map_info info{};
        __u32 len = sizeof info;
        std::string why;
        if (bpf_obj_get_info_by_fd(fd, &info, &len) != 0)
            why = fmt::format("cannot read it: {}", errno_text(errno));
        else if (info.type != bpf_map__type(map) || info.key_size != bpf_map__key_size(map) ||
                 info.value_size != bpf_map__value_size(map) ||
                 info.max_entries != bpf_map__max_entries(map))
            why = fmt::format(
                "the running one has type {} key {} value {} entries {}, this binary's type {} "
                "key {} value {} entries {}",
                info.type, info.key_size, info.value_size, info.max_entries,
                static_cast<unsigned>(bpf_map__type(map)), bpf_map__key_size(map),
                bpf_map__value_size(map), bpf_map__max_entries(map));
        else if (int err = bpf_map__reuse_fd(map, fd); err)
            why = fmt::format("reusing it failed: {}", errno_text(err));
        if (!why.empty()) {
            steer_bpf::destroy(skel_);
            skel_ = nullptr;
            throw SteerError(fmt::format(
                "the steering map '{}' of the running server cannot be taken over: {}. The new "
                "binary's maps differ: stop the old server and start the new one instead of an "
                "upgrade in place",
                name, why));
        }
    }
    if (int err = steer_bpf::load(skel_); err) {
        steer_bpf::destroy(skel_);
        skel_ = nullptr;
        if (err == -EPERM || err == -EACCES) fail_privilege("loading the BPF program failed", err);
        throw SteerError(fmt::format(
            "loading the BPF program failed: {}. This needs Linux >= 5.14 with BTF "
            "(sk_reuseport/migrate); see the libbpf messages above for the verifier's reason",
            errno_text(err)));
    }
    set_nslots(cfg.nslots);
}

void Steering::set_nslots(std::uint32_t n) {
    if (n == 0 || n > STEER_MAX_SLOTS)
        throw SteerError(
            fmt::format("steering: {} worker slots requested; between 1 and {} are "
                        "supported",
                        n, STEER_MAX_SLOTS));
    steer_config c{};
    c.seed = cfg_.seed;
    c.nslots = n;
    c.flags = cfg_.v6_prefix64 ? STEER_F_V6_PREFIX64 : 0;
    std::uint32_t zero = 0;
    if (bpf_map_update_elem(bpf_map__fd(skel_->maps.config), &zero, &c, BPF_ANY) != 0)
        throw SteerError(
            fmt::format("writing the steering config map failed: {}", errno_text(errno)));
    cfg_.nslots = n;
}

Steering::~Steering() {
    unpin();
    if (skel_) steer_bpf::destroy(skel_);
}

void Steering::attach(int listen_fd) {
    int prog_fd = bpf_program__fd(skel_->progs.steer);
    if (setsockopt(listen_fd, SOL_SOCKET, SO_ATTACH_REUSEPORT_EBPF, &prog_fd, sizeof prog_fd) != 0)
        throw SteerError(
            fmt::format("attaching the steering program to the listener failed "
                        "(SO_ATTACH_REUSEPORT_EBPF): {}",
                        errno_text(errno)));
}

void Steering::set_socket(std::uint32_t slot, int listen_fd) {
    std::uint64_t fd = static_cast<std::uint64_t>(listen_fd);
    if (bpf_map_update_elem(bpf_map__fd(skel_->maps.sockets), &slot, &fd, BPF_ANY) != 0)
        throw SteerError(fmt::format(
            "putting the listener of slot {} into the socket array failed: {} (it must be a "
            "listening TCP socket with SO_REUSEPORT, in one slot only)",
            slot, errno_text(errno)));
}

bool Steering::holds_socket(std::uint32_t slot, int listen_fd) const {
    std::uint64_t cookie = 0, want = 0;
    socklen_t len = sizeof want;
    if (::getsockopt(listen_fd, SOL_SOCKET, SO_COOKIE, &want, &len) != 0) return false;
    return bpf_map_lookup_elem(bpf_map__fd(skel_->maps.sockets), &slot, &cookie) == 0 &&
           cookie == want;
}

std::vector<NamedFd> Steering::map_fds() const {
    std::vector<NamedFd> out;
    bpf_map* map = nullptr;
    bpf_object__for_each_map(map, skel_->obj) {
        if (!bpf_map__is_internal(map)) out.push_back({bpf_map__name(map), bpf_map__fd(map)});
    }
    return out;
}

void Steering::disown_pins() noexcept {
    pinned_.clear();
    pin_dir_.clear();
}

void Steering::clear_socket(std::uint32_t slot) {
    if (bpf_map_delete_elem(bpf_map__fd(skel_->maps.sockets), &slot) != 0 && errno != ENOENT)
        throw SteerError(fmt::format("clearing slot {} of the socket array failed: {}", slot,
                                     errno_text(errno)));
}

void Steering::set_buckets(std::span<const std::uint32_t> table) {
    if (table.size() != STEER_BUCKETS)
        throw SteerError(fmt::format("bucket table has {} entries, the map has {}", table.size(),
                                     STEER_BUCKETS));
    std::vector<std::uint32_t> keys(table.size());
    for (std::uint32_t i = 0; i < keys.size(); ++i)
        keys[i] = i;
    __u32 count = static_cast<__u32>(table.size());
    int fd = bpf_map__fd(skel_->maps.buckets);
    if (bpf_map_update_batch(fd, keys.data(), table.data(), &count, nullptr) == 0) return;
    for (std::uint32_t i = 0; i < table.size(); ++i)  // kernels without batch ops for arrays
        if (bpf_map_update_elem(fd, &i, &table[i], BPF_ANY) != 0)
            throw SteerError(fmt::format("writing the bucket table failed: {}", errno_text(errno)));
}

std::vector<std::uint32_t> Steering::buckets() const {
    std::vector<std::uint32_t> out(STEER_BUCKETS);
    int fd = bpf_map__fd(skel_->maps.buckets);
    for (std::uint32_t i = 0; i < STEER_BUCKETS; ++i)
        if (bpf_map_lookup_elem(fd, &i, &out[i]) != 0)
            throw SteerError(fmt::format("reading the bucket table failed: {}", errno_text(errno)));
    return out;
}

SteerStats Steering::stats() const {
    SteerStats s;
    int ncpu = libbpf_num_possible_cpus();
    if (ncpu <= 0) throw SteerError("cannot count the possible CPUs for per-CPU stats");
    std::vector<std::uint64_t> vals(static_cast<std::size_t>(ncpu));
    auto sum = [&](int fd, std::uint32_t key) {
        if (bpf_map_lookup_elem(fd, &key, vals.data()) != 0) return std::uint64_t{0};
        std::uint64_t t = 0;
        for (auto v : vals)
            t += v;
        return t;
    };
    for (std::uint32_t i = 0; i < STEER_STAT_MAX; ++i)
        s.outcome[i] = sum(bpf_map__fd(skel_->maps.stats), i);
    s.per_slot.resize(cfg_.nslots);
    for (std::uint32_t i = 0; i < cfg_.nslots; ++i)
        s.per_slot[i] = sum(bpf_map__fd(skel_->maps.slot_stats), i);
    return s;
}

void ensure_bpffs(const std::filesystem::path& root) {
    struct statfs st {};
    if (statfs(root.c_str(), &st) == 0 && st.f_type == BPF_FS_MAGIC) return;
    std::error_code ec;
    std::filesystem::create_directories(root, ec);
    if (mount("bpf", root.c_str(), "bpf", 0, "mode=0700") != 0)
        throw SteerError(
            fmt::format("{} is not a BPF filesystem and mounting one there failed: "
                        "{}. Mount it with `mount -t bpf bpf {}`",
                        root.string(), errno_text(errno), root.string()));
}

void Steering::pin(const std::filesystem::path& dir) {
    // The BPF filesystem root is the first existing ancestor that is, or should be, bpffs:
    // /sys/fs/bpf for the default /sys/fs/bpf/steerchat/<port>.
    std::filesystem::path root = dir.parent_path().parent_path();
    ensure_bpffs(root);
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec)
        throw SteerError(
            fmt::format("creating the pin directory {} failed: {}", dir.string(), ec.message()));
    // Root's alone (workers run as another user and must not reach the maps).
    ::chmod(dir.parent_path().c_str(), 0700);
    if (::chmod(dir.c_str(), 0700) != 0)
        throw SteerError(fmt::format("making the pin directory {} private (0700) failed: {}",
                                     dir.string(), errno_text(errno)));
    pin_dir_ = dir;
    // A hand-over: the old master's pins are replaced by this object's (the same maps, a new
    // program).
    bpf_map* m = nullptr;
    bpf_object__for_each_map(m, skel_->obj) {
        if (!bpf_map__is_internal(m)) ::unlink((dir / bpf_map__name(m)).c_str());
    }
    bpf_program* p = nullptr;
    bpf_object__for_each_program(p, skel_->obj) {
        ::unlink((dir / bpf_program__name(p)).c_str());
    }
    auto pin_one = [&](const char* name, int err_or_zero) {
        if (err_or_zero != 0)
            throw SteerError(fmt::format("pinning {} at {} failed: {}", name, (dir / name).string(),
                                         errno_text(err_or_zero)));
        pinned_.push_back(dir / name);
    };
    bpf_map* map = nullptr;
    bpf_object__for_each_map(map, skel_->obj) {
        if (bpf_map__is_internal(map)) continue;
        pin_one(bpf_map__name(map), bpf_map__pin(map, (dir / bpf_map__name(map)).c_str()));
    }
    bpf_program* prog = nullptr;
    bpf_object__for_each_program(prog, skel_->obj) {
        pin_one(bpf_program__name(prog),
                bpf_program__pin(prog, (dir / bpf_program__name(prog)).c_str()));
    }
}

void Steering::unpin() noexcept {
    for (auto& p : pinned_)
        ::unlink(p.c_str());
    pinned_.clear();
    if (!pin_dir_.empty()) {
        ::rmdir(pin_dir_.c_str());
        ::rmdir(pin_dir_.parent_path().c_str());  // fails harmlessly while other ports use it
        pin_dir_.clear();
    }
}

bool remove_stale_pins(const std::filesystem::path& dir) {
    std::error_code ec;
    if (!std::filesystem::exists(dir, ec)) return false;
    return std::filesystem::remove_all(dir, ec) > 0;
}

}  // namespace steerchat::steer
