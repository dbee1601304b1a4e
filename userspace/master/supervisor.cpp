#include "supervisor.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdint>
#include <cstring>
#include <ctime>
#include <fstream>
#include <span>
#include <sstream>
#include <stdexcept>

#include <fmt/core.h>
#include <fmt/format.h>

#include "app/launch.hpp"
#include "master/reload.hpp"
#include "master/version.hpp"
#include "steer/maglev.hpp"
#include "util/log.hpp"

namespace steerchat::master {

namespace {

constexpr auto kHealthyLifetime = std::chrono::seconds(10);
// How often the master samples CPU, RSS and the BPF counters into the metrics mapping.
constexpr auto kSamplePeriod = std::chrono::seconds(1);
constexpr unsigned kMaxBackoffMs = 5000;

sigset_t handled_signals() {
    sigset_t s;
    sigemptyset(&s);
    for (int sig : {SIGCHLD, SIGTERM, SIGINT, SIGHUP})
        sigaddset(&s, sig);
    return s;
}

std::vector<int> usable_cpus() {
    cpu_set_t set;
    std::vector<int> out;
    if (sched_getaffinity(0, sizeof set, &set) == 0)
        for (int c = 0; c < CPU_SETSIZE; ++c)
            if (CPU_ISSET(c, &set)) out.push_back(c);
    if (out.empty()) out.push_back(0);
    return out;
}

std::string describe_status(int status) {
    if (WIFEXITED(status)) return fmt::format("exited with status {}", WEXITSTATUS(status));
    if (WIFSIGNALED(status))
        return fmt::format("was killed by signal {} ({})", WTERMSIG(status),
                           strsignal(WTERMSIG(status)));
    return "stopped";
}

// Closes every fd of this process except stdio and those in `keep`.
void close_all_but(const std::vector<int>& keep) {
    std::vector<int> fds;
    if (DIR* d = ::opendir("/proc/self/fd")) {
        while (dirent* e = ::readdir(d)) {
            int fd = std::atoi(e->d_name);
            if (e->d_name[0] != '.' && fd > 2 && fd != ::dirfd(d) &&
                std::find(keep.begin(), keep.end(), fd) == keep.end())
                fds.push_back(fd);
        }
        ::closedir(d);
    }
    for (int fd : fds)
        ::close(fd);
}

// The per-worker connection limit of `o`, lowered to what the open-files soft limit allows.
void fit_conns_to_open_files(Options& o, bool warn) {
    // The per-worker connection limit stays below what workers may open (options checked it
    // against the hard limit; a soft limit that could not be raised is caught here). Each worker
    // also holds one eventfd per slot of --max-workers (the shared-memory logs' wake-ups).
    const std::size_t headroom = app::fd_headroom() + o.max_workers;
    rlimit nofile{};
    if (::getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur != RLIM_INFINITY &&
        o.max_conns_per_worker + headroom > nofile.rlim_cur) {
        const std::size_t fit =
            nofile.rlim_cur > 2 * headroom ? nofile.rlim_cur - headroom : nofile.rlim_cur / 2;
        if (warn)
            log::warn(
                "--max-conns-per-worker {} does not fit the open-files limit {} ({} kept free): "
                "using {}",
                o.max_conns_per_worker, nofile.rlim_cur, headroom, fit);
        o.max_conns_per_worker = std::max<std::size_t>(fit, 1);
    }
}

}  // namespace

Supervisor::Supervisor(Options opts, std::vector<std::string> argv)
    : opts_(std::move(opts)), argv_(std::move(argv)) {}

Supervisor::~Supervisor() = default;

std::vector<std::uint32_t> Supervisor::live_slots() const {
    std::vector<std::uint32_t> live;
    for (std::uint32_t i = 0; i < slots_.size(); ++i)
        if (!slots_[i].drained && !slots_[i].removed) live.push_back(i);
    return live;
}

void Supervisor::setup() {
    lock_ = std::make_unique<InstanceLock>(opts_.run_dir, opts_.port);
    control_ = std::make_unique<ControlServer>(opts_.run_dir, opts_.port, ::geteuid());
    add_control_commands();
    drop_ = plan_privilege_drop(opts_.user, opts_.group, ::getpid(), SIGTERM);
    drop_.seccomp = opts_.seccomp;
    log::info("{}{}", drop_.description,
              opts_.seccomp ? "; a seccomp allowlist confines their system calls" : "");
    // Every connection is a file: take the whole hard limit (workers inherit it).
    rlimit nofile{};
    if (::getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nofile.rlim_max) {
        nofile.rlim_cur = nofile.rlim_max;
        ::setrlimit(RLIMIT_NOFILE, &nofile);
    }
    fit_conns_to_open_files(opts_, true);
    if (::getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < 65536)
        log::warn(
            "open-files limit is {}: each worker holds at most {} connections "
            "(--max-conns-per-worker; the rest of the limit is kept free); raise it "
            "(LimitNOFILE= in a systemd unit, ulimit -n; see scripts/tune)",
            nofile.rlim_cur, opts_.max_conns_per_worker);

    // Signals are taken through a signalfd; block them before any child exists.
    sigset_t sigs = handled_signals();
    sigprocmask(SIG_BLOCK, &sigs, nullptr);
    signal_fd_.reset(::signalfd(-1, &sigs, SFD_CLOEXEC | SFD_NONBLOCK));
    if (!signal_fd_) throw std::runtime_error(fmt::format("signalfd: {}", std::strerror(errno)));
    int ready[2];
    if (::pipe2(ready, O_CLOEXEC) != 0)
        throw std::runtime_error(fmt::format("pipe2: {}", std::strerror(errno)));
    ready_read_.reset(ready[0]);
    ready_write_.reset(ready[1]);
    ::fcntl(ready[0], F_SETFL, ::fcntl(ready[0], F_GETFL) | O_NONBLOCK);
    ::signal(SIGPIPE, SIG_IGN);

    // The host's metrics: one block per slot the pool may grow to (its worker writes it), one
    // for the master.
    metrics_.emplace(metrics::Region::create(opts_.max_workers, kVersion, kGitRevision));
    metrics_->host().steering_bpf = opts_.steering == SteeringMode::bpf ? 1 : 0;

    if (opts_.steering == SteeringMode::bpf) {
        if (steer::remove_stale_pins(opts_.pin_dir()))
            log::info("removed stale pins at {} left by an instance that did not exit cleanly",
                      opts_.pin_dir().string());
        steering_ = std::make_unique<steer::Steering>(
            steer::SteerConfig{opts_.seed, opts_.workers, opts_.ipv6_prefix64});
    }

    // Every slot the pool may grow to exists from the start; those beyond --workers are
    // removed until `steerchat ctl workers N` brings them in.
    slots_.resize(opts_.max_workers);
    pool_ = opts_.workers;
    for (unsigned i = 0; i < slots_.size(); ++i) {
        slots_[i].removed = i >= pool_;
        if (i < pool_) slots_[i].listener = make_listener(opts_.bind, opts_.port, opts_.backlog);
    }
    if (steering_) {
        // Fill the maps before the program is attached, so it never runs on empty maps.
        // Connections that arrive before the attach wait in the queues for the workers.
        remap_buckets();
        for (unsigned i = 0; i < opts_.workers; ++i)
            steering_->set_socket(i, slots_[i].listener.get());
        steering_->attach(slots_[0].listener.get());
        steering_->pin(opts_.pin_dir());
    }
    cpus_ = usable_cpus();

    // Sized for --max-workers: a slot added later has its log and cursors already (the readers
    // read every log; an unused one is empty). Its pages are touched only once it is used.
    ring_.emplace(ring::Region::create(opts_.max_workers, opts_.ring_bytes));

    // The application's host-wide state (the chat directory); also readies libcrypto before
    // any worker drops its privileges (app/launch.hpp).
    host_.emplace(app::HostState::create());
}

void Supervisor::remap_buckets() {
    if (!steering_) return;
    auto live = live_slots();
    if (live.empty()) return;
    const auto table = steer::maglev_table(live);
    steering_->set_buckets(table);
    if (metrics_) count_buckets(table);
}

void Supervisor::count_buckets(std::span<const std::uint32_t> table) {
    std::vector<std::uint64_t> n(metrics_->max_slots());
    for (std::uint32_t slot : table)
        if (slot < n.size()) ++n[slot];
    for (unsigned i = 0; i < n.size(); ++i)
        metrics_->info(i).steer_buckets = n[i];
}

void Supervisor::set_slot_state(unsigned slot, metrics::SlotState state, pid_t pid) {
    if (!metrics_ || slot >= metrics_->max_slots()) return;
    metrics::SlotInfo& info = metrics_->info(slot);
    info.state = static_cast<std::uint64_t>(state);
    info.pid = pid > 0 ? static_cast<std::uint64_t>(pid) : 0;
    if (pid <= 0) {
        info.cpu_ns = 0;
        info.rss_bytes = 0;
    }
}

void Supervisor::sample_metrics() {
    static const long ticks = ::sysconf(_SC_CLK_TCK);
    static const long page = ::sysconf(_SC_PAGESIZE);
    for (unsigned i = 0; i < slots_.size() && i < metrics_->max_slots(); ++i) {
        const pid_t pid = slots_[i].pid;
        if (pid <= 0) continue;
        metrics::SlotInfo& info = metrics_->info(i);
        // /proc/<pid>/stat: utime and stime are fields 14 and 15, counted from the ")" that
        // ends the command name (which may hold spaces): the 12th and 13th after it.
        std::ifstream stat(fmt::format("/proc/{}/stat", pid));
        std::string line;
        if (std::getline(stat, line) && ticks > 0) {
            if (const auto close = line.rfind(')'); close != std::string::npos) {
                std::istringstream fields(line.substr(close + 1));
                std::string skip;
                unsigned long long utime = 0, stime = 0;
                for (int k = 0; k < 11; ++k)
                    fields >> skip;
                if (fields >> utime >> stime)
                    info.cpu_ns = (utime + stime) *
                                  (1'000'000'000ULL / static_cast<unsigned long long>(ticks));
            }
        }
        // /proc/<pid>/statm: size, resident (pages).
        std::ifstream statm(fmt::format("/proc/{}/statm", pid));
        unsigned long long size = 0, resident = 0;
        if (statm >> size >> resident && page > 0)
            info.rss_bytes = resident * static_cast<unsigned long long>(page);
    }
    if (steering_) {
        try {
            const steer::SteerStats st = steering_->stats();
            for (std::size_t k = 0; k < metrics::kSteerOutcomes && k < st.outcome.size(); ++k)
                metrics_->host().steer_outcomes[k] = st.outcome[k];
            for (unsigned i = 0; i < st.per_slot.size() && i < metrics_->max_slots(); ++i)
                metrics_->info(i).steer_selections = st.per_slot[i];
        } catch (const std::exception& e) {
            log::debug("reading the steering counters failed: {}", e.what());
        }
    }
    metrics_->host().sampled_ns = metrics::monotonic_ns();
}

void Supervisor::spawn(unsigned slot) {
    Slot& s = slots_[slot];
    // The slot has no worker now: its counters start again from zero (a respawned worker's
    // counters reset, its gauges keep nothing of the dead one's).
    metrics_->reset_block(slot);
    // The config channel: one message per reload, kept whole (SOCK_SEQPACKET). The worker's end
    // is its own after the fork; the master keeps the other.
    int channel[2];
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, channel) != 0) {
        log::error("socketpair for worker {} failed: {}; retrying", slot, std::strerror(errno));
        s.respawn_at = Clock::now() + std::chrono::milliseconds(opts_.respawn_delay_ms);
        return;
    }
    s.config.reset(channel[0]);
    worker_config_fd_ = channel[1];
    pid_t pid = ::fork();
    if (pid < 0) {
        log::error("fork for worker {} failed: {}; retrying", slot, std::strerror(errno));
        ::close(channel[1]);
        s.config.reset();
        s.respawn_at = Clock::now() + std::chrono::milliseconds(opts_.respawn_delay_ms);
        return;
    }
    if (pid == 0) become_worker(slot);
    set_slot_state(slot, metrics::SlotState::starting, pid);
    ::close(channel[1]);
    worker_config_fd_ = -1;
    ::shutdown(s.config.get(), SHUT_RD);  // the master only writes
    s.pid = pid;
    s.ready = false;
    s.started = Clock::now();
    s.respawn_at.reset();
}

void Supervisor::become_worker(unsigned slot) {
    int fd = slots_[slot].listener.get();
    log::set_slot(fmt::format("worker {}", slot));
    ::prctl(PR_SET_NAME, fmt::format("steerchat-w{}", slot).c_str());
    // Die with the master: a worker must not outlive the supervisor that owns its slot.
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    sigset_t sigs = handled_signals();
    sigprocmask(SIG_UNBLOCK, &sigs, nullptr);
    if (opts_.pin_cpus) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(cpus_[slot % cpus_.size()], &set);
        sched_setaffinity(0, sizeof set, &set);
    }
    // Keep only this slot's listener and the shared-memory logs' fds: no copy of the other
    // listeners, the BPF maps or the lock.
    std::vector<int> keep{fd, ring_->fd(), ready_write_.get(), worker_config_fd_};
    for (unsigned i = 0; i < ring_->workers(); ++i)
        keep.push_back(ring_->wake_fd(i));
    close_all_but(keep);
    // Before the first byte from the network: no root, no capabilities, no way back.
    try {
        drop_privileges(drop_);
    } catch (const std::exception& e) {
        log::error("fatal: {}; the worker exits rather than serve with privileges", e.what());
        ::_exit(1);
    }
    app::run_worker(app::WorkerLaunch{slot, pool_, fd, &*ring_, &*host_, &opts_, ready_write_.get(),
                                      worker_config_fd_, reloads_, &*metrics_});
}

void Supervisor::reap() {
    for (;;) {
        int status = 0;
        pid_t pid = ::waitpid(-1, &status, WNOHANG);
        if (pid <= 0) return;
        for (unsigned i = 0; i < slots_.size(); ++i)
            if (slots_[i].pid == pid) on_worker_exit(i, status);
    }
}

void Supervisor::on_worker_exit(unsigned slot, int status) {
    Slot& s = slots_[slot];
    s.pid = -1;
    s.ready = false;
    s.config.reset();
    if (stopping_) return;
    release_slot_users(slot);
    if (s.removed) {
        set_slot_state(slot, metrics::SlotState::removed, -1);
        s.kill_at.reset();
        log::info("worker {} (removed from the pool) {}", slot, describe_status(status));
        return;
    }
    ++metrics_->info(slot).restarts;
    set_slot_state(slot, metrics::SlotState::respawning, -1);
    auto now = Clock::now();
    s.quick_failures = (now - s.started < kHealthyLifetime) ? s.quick_failures + 1 : 0;
    s.deaths.push_back(now);
    while (!s.deaths.empty() &&
           now - s.deaths.front() > std::chrono::seconds(opts_.restart_window_s))
        s.deaths.pop_front();
    if (s.deaths.size() >= opts_.max_restarts) {
        drain(slot, fmt::format("its worker {} and died {} times within {} s",
                                describe_status(status), s.deaths.size(), opts_.restart_window_s));
        return;
    }
    unsigned delay = opts_.respawn_delay_ms;
    for (unsigned i = 1; i < s.quick_failures && delay < kMaxBackoffMs; ++i)
        delay *= 2;
    delay = std::min(delay, kMaxBackoffMs);
    log::warn("worker {} {}; respawning it in {} ms (its listener keeps queueing connections)",
              slot, describe_status(status), delay);
    notify_readiness(fmt::format("; worker {} {}, respawning", slot, describe_status(status)));
    s.respawn_at = now + std::chrono::milliseconds(delay);
}

void Supervisor::release_slot_users(unsigned slot) {
    // Producers stop waiting for the dead reader; its users go offline for everyone and their
    // names become free. The master writes into the dead worker's log (its only writer is gone).
    ring_->set_alive(slot, false);
    if (const std::size_t gone = host_->release_slot(*ring_, slot); gone != 0)
        log::info("{} user(s) of worker {} are offline", gone, slot);
}

void Supervisor::drain(unsigned slot, const std::string& why) {
    Slot& s = slots_[slot];
    s.drained = true;
    set_slot_state(slot, metrics::SlotState::drained, -1);
    s.respawn_at.reset();
    auto live = live_slots();
    log::error("draining slot {} because {}; {} slot(s) remain", slot, why, live.size());
    if (steering_) {
        // New connections of its clients go to the remaining slots first ...
        remap_buckets();
        steering_->clear_socket(slot);
    }
    // ... then its queue migrates to live listeners (select-or-migrate program), and it closes.
    ::shutdown(s.listener.get(), SHUT_RDWR);
    s.listener.reset();
    notify_readiness(fmt::format("; slot {} drained", slot));
}

void Supervisor::read_ready_messages() {
    std::int32_t msg[2];
    while (::read(ready_read_.get(), msg, sizeof msg) == sizeof msg) {
        const auto slot = static_cast<unsigned>(msg[0]);
        if (slot < slots_.size() && slots_[slot].pid == msg[1]) {
            slots_[slot].ready = true;
            set_slot_state(slot, metrics::SlotState::serving, msg[1]);
        }
    }
    notify_readiness();
}

void Supervisor::notify_readiness(const std::string& extra) {
    const auto live = live_slots();
    const bool all = !live.empty() && std::all_of(live.begin(), live.end(),
                                                  [&](std::uint32_t i) { return slots_[i].ready; });
    if (all && !notified_ready_) {
        notified_ready_ = true;
        log::info("every worker accepts ({} slot(s)); ready", live.size());
        ::sd_notify(0, "READY=1");
    }
    if (!::getenv("NOTIFY_SOCKET")) return;
    const auto ready =
        std::count_if(live.begin(), live.end(), [&](std::uint32_t i) { return slots_[i].ready; });
    ::sd_notifyf(0, "STATUS=%s port %u: %zd of %zu worker(s) accept, %zu slot(s) drained%s",
                 notified_ready_ ? "serving" : "starting", static_cast<unsigned>(opts_.port),
                 static_cast<ssize_t>(ready), live.size(), pool_ - live.size(), extra.c_str());
}

void Supervisor::add_control_commands() {
    control_->add("reload", "reload",
                  "re-read the configuration file and apply what can change while running (as "
                  "SIGHUP); answers what changed, or why nothing did",
                  [this](ControlRequest&) { return reload(); });
    control_->add("status", "status", "the slots: state, pid, buckets",
                  [this](ControlRequest&) { return status_command(); });
    control_->add(
        "workers", "workers N",
        fmt::format("grow or shrink the pool to N workers (1 to {}); drained slots "
                    "below N come back",
                    opts_.max_workers),
        [this](ControlRequest& req) {
            unsigned n = 0;
            const std::string arg = req.words.size() == 2 ? req.words[1] : "";
            const auto [end, ec] = std::from_chars(arg.data(), arg.data() + arg.size(), n);
            if (arg.empty() || ec != std::errc{} || end != arg.data() + arg.size())
                return ControlReply::failure(fmt::format(
                    "usage: workers N, with N from 1 to {} (--max-workers)", opts_.max_workers));
            return resize(n);
        });
}

ControlReply Supervisor::status_command() const {
    std::vector<std::uint32_t> owned(slots_.size(), 0);
    if (steering_)
        for (std::uint32_t b : steering_->buckets())
            if (b < owned.size()) ++owned[b];
    const auto live = live_slots();
    std::string out = fmt::format(
        "port {}: {} worker(s) in the pool ({} drained), --max-workers {}, steering {}\n",
        opts_.port, pool_, pool_ - live.size(), opts_.max_workers,
        steering_ ? "bpf" : "kernel (not sticky)");
    out += fmt::format("{:<6}{:<12}{:>8}{:>10}\n", "slot", "state", "pid", "buckets");
    for (std::size_t i = 0; i < slots_.size(); ++i) {
        const Slot& s = slots_[i];
        if (s.removed && s.pid <= 0) continue;
        const char* state = s.removed              ? "stopping"
                            : s.drained            ? "drained"
                            : s.respawn_at         ? "respawning"
                            : s.pid > 0 && s.ready ? "serving"
                                                   : "starting";
        out += fmt::format("{:<6}{:<12}{:>8}{:>10}\n", i, state,
                           s.pid > 0 ? std::to_string(s.pid) : "-",
                           steering_ ? std::to_string(owned[i]) : "-");
    }
    return ControlReply::success(std::move(out));
}

ControlReply Supervisor::resize(unsigned n) {
    if (n < 1 || n > opts_.max_workers)
        return ControlReply::failure(fmt::format(
            "workers {}: the pool can hold 1 to {} workers (--max-workers {}, fixed at start; a "
            "larger pool needs a restart with a larger --max-workers)",
            n, opts_.max_workers, opts_.max_workers));
    // Slots that join (beyond the pool, or drained within it): a fresh listener each, made
    // before anything changes, so a failure leaves the pool as it was.
    std::vector<unsigned> joining;
    for (unsigned i = 0; i < n; ++i)
        if (i >= pool_ || slots_[i].drained) {
            if (slots_[i].pid > 0)
                return ControlReply::failure(fmt::format(
                    "slot {}: its previous worker (pid {}) is still stopping (it closes its "
                    "connections for up to --shutdown-timeout-ms {}); try again in a moment",
                    i, slots_[i].pid, opts_.shutdown_timeout_ms));
            joining.push_back(i);
        }
    std::vector<UniqueFd> listeners;
    for (std::size_t k = 0; k < joining.size(); ++k)
        listeners.push_back(make_listener(opts_.bind, opts_.port, opts_.backlog));
    std::vector<unsigned> leaving;
    for (unsigned i = pool_; i-- > n;)
        leaving.push_back(i);
    if (joining.empty() && leaving.empty())
        return ControlReply::success(
            fmt::format("nothing to change: {} worker(s) in the pool, none drained\n", pool_));

    const std::vector<std::uint32_t> before =
        steering_ ? steering_->buckets() : std::vector<std::uint32_t>{};
    const unsigned old_pool = pool_;
    // Joining: a listener in the group and in the socket array before any bucket points there.
    for (std::size_t k = 0; k < joining.size(); ++k) {
        Slot& s = slots_[joining[k]];
        s.listener = std::move(listeners[k]);
        s.drained = s.removed = false;
        s.deaths.clear();
        s.quick_failures = 0;
        s.respawn_at.reset();
        s.kill_at.reset();
        if (steering_) steering_->set_socket(joining[k], s.listener.get());
    }
    // Leaving: out of the pool, its buckets remapped to the others first ...
    for (unsigned i : leaving) {
        slots_[i].removed = true;
        slots_[i].drained = false;
        slots_[i].respawn_at.reset();
    }
    pool_ = n;
    if (steering_) {
        if (n > old_pool) steering_->set_nslots(n);
        remap_buckets();
        if (n < old_pool) steering_->set_nslots(n);
    }
    // ... then each leaving slot stops accepting and drains.
    for (unsigned i : leaving)
        remove_slot(i);
    for (unsigned i : joining)
        spawn(i);

    std::size_t moved = 0;
    if (steering_) {
        const auto after = steering_->buckets();
        for (std::size_t b = 0; b < after.size() && b < before.size(); ++b)
            moved += after[b] != before[b];
    }
    auto list = [](const std::vector<unsigned>& v) { return fmt::format("{}", fmt::join(v, ",")); };
    std::string out = fmt::format("workers {} -> {}", old_pool, n);
    if (!joining.empty()) out += fmt::format("; started slot(s) {}", list(joining));
    if (!leaving.empty())
        out +=
            fmt::format("; removed slot(s) {} (their WebSockets close with 1001)", list(leaving));
    if (steering_)
        out += fmt::format("; {} of {} buckets moved ({:.1f}%)", moved, STEER_BUCKETS,
                           100.0 * static_cast<double>(moved) / STEER_BUCKETS);
    log::info("resize: {}", out);
    notify_readiness(fmt::format("; resized to {} worker(s)", n));
    return ControlReply::success(out + "\n");
}

void Supervisor::remove_slot(unsigned slot) {
    Slot& s = slots_[slot];
    if (steering_) steering_->clear_socket(slot);
    // The worker stops accepting and closes its connections (WebSockets: 1001 going away);
    // its users go offline when it has exited (on_worker_exit).
    if (s.pid > 0) {
        ::kill(s.pid, SIGTERM);
        s.kill_at = Clock::now() + std::chrono::milliseconds(opts_.shutdown_timeout_ms);
        set_slot_state(slot, metrics::SlotState::stopping, s.pid);
    } else {
        set_slot_state(slot, metrics::SlotState::removed, -1);
    }
    // Connections queued on its listener migrate to the others (select-or-migrate program).
    if (s.listener) ::shutdown(s.listener.get(), SHUT_RDWR);
    s.listener.reset();
    s.ready = false;
}

ControlReply Supervisor::reload() {
    const std::string source = opts_.config.empty()
                                   ? std::string("the command line (no --config file)")
                                   : opts_.config.string();
    if (argv_.empty()) {
        log::info("SIGHUP: started without a command line to re-read; nothing to reload");
        return ControlReply::failure(
            "started without a command line to re-read; nothing to reload");
    }
    std::string report;  // the reply: what the log says
    // systemd: reloading until READY=1 (MONOTONIC_USEC is what Type=notify-reload of systemd
    // 253 and later needs to match the reload to its request; older ones ignore the field).
    timespec now{};
    ::clock_gettime(CLOCK_MONOTONIC, &now);
    const auto usec = static_cast<unsigned long long>(now.tv_sec) * 1'000'000ULL +
                      static_cast<unsigned long long>(now.tv_nsec) / 1000ULL;
    // Before READY=1 (start-up), systemd hears nothing of a reload.
    if (notified_ready_)
        ::sd_notifyf(0, "RELOADING=1\nMONOTONIC_USEC=%llu\nSTATUS=reloading %s", usec,
                     source.c_str());
    std::vector<const char*> argv;
    for (const auto& a : argv_)
        argv.push_back(a.c_str());
    auto parsed = parse_options(static_cast<int>(argv.size()), argv.data());
    if (!parsed.options) {
        ++reloads_.failed;
        // The message names the file and line ("steerchat: FILE:LINE: ..."): one log line.
        std::string why = parsed.message;
        if (why.starts_with("steerchat: ")) why.erase(0, 11);
        for (auto& c : why)
            if (c == '\n') c = ' ';
        report = fmt::format("reload of {} failed, the running configuration is kept unchanged: {}",
                             source, why);
        log::error("{}", report);
    } else {
        Options fresh = std::move(*parsed.options);
        // As at start: the per-worker connection limit fits the open-files limit.
        fit_conns_to_open_files(fresh, false);
        // The pool runs with pool_ workers (`steerchat ctl workers N` changes it live).
        Options running = opts_;
        running.workers = pool_;
        ReloadPlan plan = plan_reload(running, fresh);
        std::string kept;
        for (const auto& k : plan.kept) {
            const std::string line = fmt::format(
                "reload: {} changed from {} to {}: it cannot change while running; kept {} "
                "until a restart{}",
                k.key, k.running, k.wanted, k.running,
                k.key == "workers"
                    ? fmt::format(" (or resize live: steerchat ctl --port {} workers {})",
                                  opts_.port, k.wanted)
                    : "");
            log::warn("{}", line);
            report += line + "\n";
            kept += (kept.empty() ? "" : ", ") + k.key;
        }
        ++reloads_.ok;
        std::string changed;
        for (const auto& c : plan.changed)
            changed += (changed.empty() ? "" : ", ") + c;
        const std::string summary =
            fmt::format("reloaded {}: changed {}; kept (need a restart): {}", source,
                        changed.empty() ? "nothing" : changed, kept.empty() ? "nothing" : kept);
        // Logged at the level before the reload: a quieter new level still shows it happened.
        log::info("{}", summary);
        report += summary;
        plan.next.workers = opts_.workers;  // as started (pool_ is the running size)
        opts_ = std::move(plan.next);
        log::configure(opts_.log_level, opts_.log_format);
    }
    // Every running worker gets the options (unchanged after a failure: the counters are new);
    // respawned workers start with opts_.
    const std::string message = app::serialize(app::ConfigUpdate{opts_, reloads_});
    for (unsigned i = 0; i < slots_.size(); ++i) {
        Slot& s = slots_[i];
        if (s.pid <= 0 || !s.config) continue;
        if (::send(s.config.get(), message.data(), message.size(), MSG_DONTWAIT | MSG_NOSIGNAL) !=
            static_cast<ssize_t>(message.size()))
            log::error(
                "reload: cannot hand the configuration to worker {} (pid {}): {}; it keeps "
                "its old one until it is respawned",
                i, s.pid, std::strerror(errno));
    }
    if (notified_ready_) ::sd_notify(0, "READY=1");
    notify_readiness(parsed.options ? "; configuration reloaded" : "; reload failed");
    return parsed.options ? ControlReply::success(std::move(report))
                          : ControlReply::failure(std::move(report));
}

int Supervisor::shutdown() {
    stopping_ = true;
    control_.reset();  // ctl answers "nobody answers" from now on, not a timeout
    for (auto& s : slots_)
        if (s.pid > 0 && ::kill(s.pid, SIGTERM) != 0 && errno == EPERM)
            log::error(
                "cannot signal worker {} (pid {}, another user): the master needs CAP_KILL "
                "(add it to CapabilityBoundingSet= of the systemd unit)",
                &s - slots_.data(), s.pid);
    auto deadline = Clock::now() + std::chrono::milliseconds(opts_.shutdown_timeout_ms);
    auto any_alive = [&] {
        return std::any_of(slots_.begin(), slots_.end(), [](const Slot& s) { return s.pid > 0; });
    };
    while (any_alive()) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
        if (left.count() <= 0) {
            for (auto& s : slots_)
                if (s.pid > 0) {
                    log::warn("worker {} (pid {}) did not stop in time; killing it",
                              &s - slots_.data(), s.pid);
                    ::kill(s.pid, SIGKILL);
                }
            deadline = Clock::now() + std::chrono::seconds(5);
        }
        pollfd p{signal_fd_.get(), POLLIN, 0};
        ::poll(&p, 1, 50);
        signalfd_siginfo si;
        while (::read(signal_fd_.get(), &si, sizeof si) == sizeof si) {
        }
        reap();
    }
    for (auto& s : slots_)
        s.listener.reset();
    steering_.reset();  // removes the pins
    log::info("stopped");
    return 0;
}

int Supervisor::run() {
    log::set_slot("master");
    setup();
    log::info(
        "listening on [{}]:{} with {} worker(s), steering {} (seed {:#010x}){}", opts_.bind,
        opts_.port, opts_.workers,
        opts_.steering == SteeringMode::bpf ? "bpf" : "kernel (SO_REUSEPORT hash, not sticky)",
        opts_.seed, steering_ ? fmt::format(", maps pinned at {}", opts_.pin_dir().string()) : "");
    for (unsigned i = 0; i < pool_; ++i)
        spawn(i);

    for (;;) {
        auto now = Clock::now();
        if (now >= next_sample_) {
            sample_metrics();
            next_sample_ = now + kSamplePeriod;
        }
        int timeout = static_cast<int>(
            std::chrono::duration_cast<std::chrono::milliseconds>(next_sample_ - now).count());
        for (auto& s : slots_)
            if (s.respawn_at || s.kill_at) {
                auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                              (s.respawn_at ? *s.respawn_at : *s.kill_at) - now)
                              .count();
                ms = std::max<long>(ms, 0);
                timeout = std::min(timeout, static_cast<int>(ms));
            }
        if (int t = control_->timeout_ms(); t >= 0)
            timeout = timeout < 0 ? t : std::min(timeout, t);
        std::vector<pollfd> p = {{signal_fd_.get(), POLLIN, 0}, {ready_read_.get(), POLLIN, 0}};
        const std::size_t nctl = control_->append(p);
        int n = ::poll(p.data(), p.size(), timeout);
        if (n < 0 && errno != EINTR)
            throw std::runtime_error(fmt::format("poll: {}", std::strerror(errno)));
        if (n > 0 && (p[1].revents & POLLIN)) read_ready_messages();
        if (n >= 0) control_->process(std::span<const pollfd>(p).subspan(2, nctl));
        signalfd_siginfo si;
        while (::read(signal_fd_.get(), &si, sizeof si) == sizeof si) {
            switch (si.ssi_signo) {
                case SIGTERM:
                case SIGINT:
                    log::info("received {}; stopping workers",
                              strsignal(static_cast<int>(si.ssi_signo)));
                    ::sd_notify(0, "STOPPING=1\nSTATUS=stopping: draining the workers");
                    return shutdown();
                case SIGHUP:
                    reload();
                    break;
                default:
                    break;
            }
        }
        reap();
        now = Clock::now();
        for (unsigned i = 0; i < slots_.size(); ++i) {
            Slot& s = slots_[i];
            if (s.respawn_at && *s.respawn_at <= now) spawn(i);
            if (s.kill_at && *s.kill_at <= now && s.pid > 0) {
                log::warn(
                    "worker {} (pid {}, removed from the pool) did not stop within {} ms; "
                    "killing it",
                    i, s.pid, opts_.shutdown_timeout_ms);
                ::kill(s.pid, SIGKILL);
                s.kill_at.reset();
            }
        }
        if (live_slots().empty()) {
            log::error("every slot has been drained; nothing is left to serve port {}; exiting",
                       opts_.port);
            ::sd_notify(0, "STOPPING=1\nSTATUS=every slot has been drained; exiting");
            shutdown();
            return 1;
        }
    }
}

}  // namespace steerchat::master
