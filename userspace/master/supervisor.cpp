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
#include <filesystem>
#include <fstream>
#include <span>
#include <sstream>
#include <stdexcept>
#include <tuple>

#include <fmt/core.h>
#include <fmt/format.h>

#include "app/launch.hpp"
#include "master/reload.hpp"
#include "master/takeover.hpp"
#include "master/version.hpp"
#include "steer/maglev.hpp"
#include "util/log.hpp"

namespace steerchat::master {

namespace {
// One line for the log: the chat state's tables and what their mapping may take at most.
void log_chat_sizes(std::string_view what, const app::ChatSizes& o) {
    const app::ChatCosts c = app::chat_costs(o);
    log::info(
        "{}: {} users, {} rooms, {} memberships, {} messages / {} bytes of history per "
        "room; {} MiB of shared memory at most ({} bytes per user, {} per room, {} per "
        "membership; pages are used as entries are)",
        what, o.users, o.rooms, o.memberships, o.history_len, o.history_bytes, c.total >> 20,
        c.per_user, c.per_room, c.per_membership);
}
}  // namespace

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

Supervisor::Supervisor(Options opts, std::vector<std::string> argv,
                       std::optional<BalanceOptions> balance)
    : opts_(std::move(opts)), argv_(std::move(argv)), balance_(std::move(balance)) {}

Supervisor::~Supervisor() = default;

std::vector<std::uint32_t> Supervisor::live_slots() const {
    std::vector<std::uint32_t> live;
    for (std::uint32_t i = 0; i < slots_.size(); ++i)
        if (!slots_[i].drained && !slots_[i].removed) live.push_back(i);
    return live;
}

app::HostState Supervisor::new_host_state() const {
    return app::HostState::create(opts_.chat_state, host_bits(), opts_.host_id);
}

void Supervisor::setup() {
    lock_ = std::make_unique<InstanceLock>(opts_.run_dir, opts_.port);
    if (opts_.tls_beside())
        tls_lock_ = std::make_unique<InstanceLock>(opts_.run_dir, opts_.tls_port);
    control_ = std::make_unique<ControlServer>(opts_.run_dir, opts_.port, ::geteuid());
    add_control_commands();
    setup_process();

    if (opts_.steering == SteeringMode::bpf) {
        if (steer::remove_stale_pins(opts_.pin_dir()))
            log::info("removed stale pins at {} left by an instance that did not exit cleanly",
                      opts_.pin_dir().string());
        steering_ = std::make_unique<steer::Steering>(
            steer::SteerConfig{opts_.seed, opts_.workers, opts_.ipv6_prefix64});
        if (opts_.tls_beside()) {
            if (steer::remove_stale_pins(opts_.tls_pin_dir()))
                log::info("removed stale pins at {} left by an instance that did not exit cleanly",
                          opts_.tls_pin_dir().string());
            tls_steering_ = std::make_unique<steer::Steering>(
                steer::SteerConfig{opts_.seed, opts_.workers, opts_.ipv6_prefix64});
        }
    }

    // Every slot the pool may grow to exists from the start; those beyond --workers are
    // removed until `steerchat ctl workers N` brings them in.
    slots_.resize(opts_.max_workers);
    pool_ = opts_.workers;
    for (unsigned i = 0; i < slots_.size(); ++i) {
        slots_[i].removed = i >= pool_;
        if (i < pool_) make_listeners(slots_[i]);
    }
    if (steering_) {
        // Fill the maps before the program is attached, so it never runs on empty maps.
        // Connections that arrive before the attach wait in the queues for the workers.
        remap_buckets();
        for (unsigned i = 0; i < opts_.workers; ++i)
            set_sockets(i);
        steering_->attach(slots_[0].listener.get());
        steering_->pin(opts_.pin_dir());
        if (tls_steering_) {
            tls_steering_->attach(slots_[0].tls_listener.get());
            tls_steering_->pin(opts_.tls_pin_dir());
        }
    }

    if (balance_) {
        // COMMAND has no ring and no chat state; the master answers /metrics itself.
        if (balance_->admin_port != 0)
            admin_ = std::make_unique<AdminServer>(
                balance_->admin_bind, balance_->admin_port,
                [this](std::string_view path) { return admin_request(path); });
        return;
    }
    // Sized for --max-workers: a slot added later has its log and cursors already (the readers
    // read every log; an unused one is empty). Its pages are touched only once it is used.
    // With --redis, one log more: the bridge's (slot max_workers), which every worker reads.
    const bool bridged = !opts_.redis_url.empty();
    ring_.emplace(ring::Region::create(opts_.max_workers + (bridged ? 1 : 0), opts_.ring_bytes));
    // The application's host-wide state (the chat directory); also readies libcrypto before
    // any worker drops its privileges (app/launch.hpp). Between hosts, ids carry the host's
    // number in their low 8 bits.
    host_.emplace(new_host_state());
    log_chat_sizes("chat state", host_->sizes());
}

void Supervisor::setup_process() {
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
    // (balance: COMMAND keeps its own limits; the master's connection limits are not its.)
    fit_conns_to_open_files(opts_, !balance_);
    if (!balance_ && ::getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < 65536)
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
    cpus_ = usable_cpus();
    // The host's metrics: one block per slot the pool may grow to (its worker writes it), one
    // for the master.
    metrics_.emplace(metrics::Region::create(opts_.max_workers, kVersion, kGitRevision));
    metrics_->host().steering_bpf = opts_.steering == SteeringMode::bpf ? 1 : 0;
}

void Supervisor::remap_buckets() {
    if (!steering_) return;
    auto live = live_slots();
    if (live.empty()) return;
    const auto table = steer::maglev_table(live);
    steering_->set_buckets(table);
    if (tls_steering_) tls_steering_->set_buckets(table);
    if (metrics_) count_buckets(table);
}

void Supervisor::make_listeners(Slot& s) {
    // Both or neither: a failure leaves the slot without listeners.
    UniqueFd plain = make_listener(opts_.bind, opts_.port, opts_.backlog);
    if (opts_.tls_beside())
        s.tls_listener = make_listener(opts_.bind, opts_.tls_port, opts_.backlog);
    s.listener = std::move(plain);
}

void Supervisor::set_sockets(unsigned slot) {
    if (steering_) steering_->set_socket(slot, slots_[slot].listener.get());
    if (tls_steering_) tls_steering_->set_socket(slot, slots_[slot].tls_listener.get());
}

void Supervisor::clear_sockets(unsigned slot) {
    if (steering_) steering_->clear_socket(slot);
    if (tls_steering_) tls_steering_->clear_socket(slot);
}

void Supervisor::set_nslots(std::uint32_t n) {
    if (steering_) steering_->set_nslots(n);
    if (tls_steering_) tls_steering_->set_nslots(n);
}

void Supervisor::shut_listeners(Slot& s) {
    for (UniqueFd* l : {&s.listener, &s.tls_listener}) {
        if (*l) ::shutdown(l->get(), SHUT_RDWR);
        l->reset();
    }
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
    if (balance_) {
        if (!spawn_command(slot))
            s.respawn_at = Clock::now() + std::chrono::milliseconds(opts_.respawn_delay_ms);
        return;
    }
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
    const int tls_fd = slots_[slot].tls_listener.get();
    std::vector<int> keep{fd, ring_->fd(), ready_write_.get(), worker_config_fd_};
    if (tls_fd >= 0) keep.push_back(tls_fd);
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
    // TLS only on --port: its listener is the TLS one.
    const bool tls_only = !opts_.tls_cert_pem.empty() && !opts_.tls_beside();
    app::run_worker(app::WorkerLaunch{slot, pool_, tls_only ? -1 : fd, tls_only ? fd : tls_fd,
                                      &*ring_, &*host_, &opts_, ready_write_.get(),
                                      worker_config_fd_, reloads_, &*metrics_});
}

void Supervisor::spawn_bridge() {
    bridge_respawn_at_.reset();
    const pid_t pid = ::fork();
    if (pid < 0) {
        log::error("fork for the bridge failed: {}; retrying in 1 s", std::strerror(errno));
        bridge_respawn_at_ = Clock::now() + std::chrono::seconds(1);
        return;
    }
    if (pid == 0) become_bridge();
    bridge_pid_ = pid;
}

void Supervisor::become_bridge() {
    log::set_slot("bridge");
    ::prctl(PR_SET_NAME, "steerchat-bridge");
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    std::vector<int> keep{ring_->fd()};
    for (unsigned i = 0; i < ring_->workers(); ++i)
        keep.push_back(ring_->wake_fd(i));
    close_all_but(keep);
    // As unprivileged as a worker (it reads what other hosts wrote); no seccomp allowlist: it
    // opens sockets to Redis.
    DropSpec drop = drop_;
    drop.seccomp = false;
    try {
        drop_privileges(drop);
    } catch (const std::exception& e) {
        log::error("fatal: {}; the bridge exits rather than run with privileges", e.what());
        ::_exit(1);
    }
    ::_exit(app::run_bridge(app::BridgeLaunch{opts_.max_workers, &*ring_, &*host_, opts_.redis_url,
                                              opts_.host_id, opts_.host_lease_ms,
                                              opts_.redis_buffer, &*metrics_}));
}

bool Supervisor::signal_worker(const Slot& s, int sig) const {
    if (s.pid <= 0) return true;
    // balance: the child leads its own process group (spawn_command), so whatever it started
    // (npm -> node, a shell -> its program) gets the signal too.
    return ::kill(balance_ ? -s.pid : s.pid, sig) == 0;
}

bool Supervisor::spawn_command(unsigned slot) {
    Slot& s = slots_[slot];
    // What a previous child of the slot left in its pipes is written out first.
    relay_output(slot, true);
    // stdout and stderr: pipes the master reads. `status`: close-on-exec, so a successful exec
    // closes it (EOF) and a failed one writes its errno.
    int out[2] = {-1, -1}, err[2] = {-1, -1}, status[2] = {-1, -1};
    if (::pipe2(out, O_CLOEXEC) != 0 || ::pipe2(err, O_CLOEXEC) != 0 ||
        ::pipe2(status, O_CLOEXEC) != 0) {
        log::error("pipes for slot {}: {}; retrying", slot, std::strerror(errno));
        for (int fd : {out[0], out[1], err[0], err[1], status[0], status[1]})
            if (fd >= 0) ::close(fd);
        return false;
    }
    UniqueFd out_r(out[0]), out_w(out[1]), err_r(err[0]), err_w(err[1]), st_r(status[0]),
        st_w(status[1]);
    const pid_t pid = ::fork();
    if (pid < 0) {
        log::error("fork for slot {} failed: {}; retrying", slot, std::strerror(errno));
        return false;
    }
    if (pid == 0) become_command(slot, out_w.get(), err_w.get(), st_w.get());
    // Also here, so that a signal to the group cannot precede the child's own setpgid (EACCES
    // once it has exec'd: it did it itself by then).
    ::setpgid(pid, pid);
    out_w.reset();
    err_w.reset();
    st_w.reset();
    for (const UniqueFd* f : {&out_r, &err_r})
        ::fcntl(f->get(), F_SETFL, ::fcntl(f->get(), F_GETFL) | O_NONBLOCK);
    s.out = std::move(out_r);
    s.err = std::move(err_r);
    s.output_pid = pid;
    s.out_part.clear();
    s.err_part.clear();
    s.pid = pid;
    s.ready = false;
    s.started = Clock::now();
    s.respawn_at.reset();
    s.ready_at = s.started + std::chrono::milliseconds(balance_->start_grace_ms);
    set_slot_state(slot, metrics::SlotState::starting, pid);
    // The child reaches exec at once (a few system calls); wait for its outcome, bounded.
    pollfd p{st_r.get(), POLLIN, 0};
    int exec_errno = 0;
    if (::poll(&p, 1, 5000) == 1 &&
        ::read(st_r.get(), &exec_errno, sizeof exec_errno) == sizeof exec_errno) {
        const std::string why = fmt::format(
            "cannot run {} as slot {}: {}{}", balance_->program, slot, std::strerror(exec_errno),
            exec_errno == EACCES ? fmt::format(" (the children run as {}; they "
                                               "need to read and execute it)",
                                               drop_.user_name)
                                 : "");
        log::error("{}", why);
        // The child exits 127 and is reaped as any dead child; during the first start that
        // stops the balance with this reason.
        if (!started_ && fatal_.empty()) fatal_ = why;
    }
    return true;
}

void Supervisor::become_command(unsigned slot, int out, int err, int status) {
    log::set_slot(fmt::format("slot {}", slot));
    // Die with the master (drop_privileges re-arms it after the credential change; exec keeps it).
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    sigset_t sigs = handled_signals();
    sigprocmask(SIG_UNBLOCK, &sigs, nullptr);
    // The master ignores SIGPIPE; an ignored signal stays ignored across exec.
    ::signal(SIGPIPE, SIG_DFL);
    ::setpgid(0, 0);
    auto fail = [&](const char* what) {
        const int e = errno;
        log::error("slot {}: {}: {}", slot, what, std::strerror(e));
        [[maybe_unused]] auto n = ::write(status, &e, sizeof e);
        ::_exit(127);
    };
    if (opts_.pin_cpus) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(cpus_[slot % cpus_.size()], &set);
        sched_setaffinity(0, sizeof set, &set);
    }
    // The descriptors COMMAND gets: 0 /dev/null, 1 and 2 the pipes, 3 this slot's listener
    // (SD_LISTEN_FDS_START), nothing else. Everything is first moved above 3 so that the dup2s
    // below cannot overwrite one another.
    const int null_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (null_fd < 0) fail("open /dev/null");
    int from[4] = {null_fd, out, err, slots_[slot].listener.get()};
    for (int& fd : from)
        if ((fd = ::fcntl(fd, F_DUPFD_CLOEXEC, 4)) < 0) fail("fcntl(F_DUPFD_CLOEXEC)");
    status = ::fcntl(status, F_DUPFD_CLOEXEC, 4);
    if (status < 0) ::_exit(127);
    for (int target = 0; target < 4; ++target)
        if (::dup2(from[target], target) != target) fail("dup2");  // dup2 clears close-on-exec
    close_all_but({0, 1, 2, 3, status});
    // systemd hands over blocking sockets (NonBlocking=no); so does this. The flag belongs to the
    // shared open file; the master never accepts on it.
    ::fcntl(3, F_SETFL, ::fcntl(3, F_GETFL) & ~O_NONBLOCK);
    try {
        drop_privileges(drop_);
    } catch (const std::exception& e) {
        log::error("fatal: {}; slot {} exits rather than run COMMAND with privileges", e.what(),
                   slot);
        errno = EPERM;
        fail("dropping privileges");
    }
    // sd_listen_fds(3): LISTEN_PID must be this process, set after the fork.
    ::setenv("LISTEN_FDS", "1", 1);
    ::setenv("LISTEN_PID", std::to_string(::getpid()).c_str(), 1);
    ::setenv("LISTEN_FDNAMES", "steerchat", 1);
    ::setenv("STEERCHAT_SLOT", std::to_string(slot).c_str(), 1);
    ::setenv("STEERCHAT_WORKERS", std::to_string(pool_).c_str(), 1);
    ::setenv("STEERCHAT_PORT", std::to_string(opts_.port).c_str(), 1);
    // Meant for the master: systemd's notification socket and the journal's stream (the
    // child's stderr is the master's pipe, not the journal).
    for (const char* name : {"NOTIFY_SOCKET", "JOURNAL_STREAM", "WATCHDOG_PID", "WATCHDOG_USEC"})
        ::unsetenv(name);
    std::vector<char*> argv;
    for (auto& a : balance_->command)
        argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    ::execv(balance_->program.c_str(), argv.data());
    fail("exec");
    ::_exit(127);
}

void Supervisor::relay_output(unsigned slot, bool final) {
    Slot& s = slots_[slot];
    const std::string prefix = fmt::format("[slot {}] ", slot);
    const std::string name = fmt::format("slot {}", slot);
    constexpr std::size_t kMaxLine = 16 * 1024;
    timespec now{};
    ::clock_gettime(CLOCK_REALTIME, &now);
    // One output line for `line` (without its newline).
    auto format = [&](std::string_view line) {
        if (opts_.log_format == log::Format::json)
            return log::format_line(log::Level::info, line, now, s.output_pid, name,
                                    log::Format::json, false);
        std::string out = prefix;
        out += line;
        out += '\n';
        return out;
    };
    for (auto [fd, part, to] : {std::tuple{&s.out, &s.out_part, 1}, {&s.err, &s.err_part, 2}}) {
        if (!*fd) continue;
        bool eof = false;
        char buf[16384];
        // A bounded amount per turn: a chatty child cannot keep the master from the rest.
        for (int reads = 0; reads < 16; ++reads) {
            const ssize_t n = ::read(fd->get(), buf, sizeof buf);
            if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
                eof = true;
                break;
            }
            if (n < 0) break;
            part->append(buf, static_cast<std::size_t>(n));
        }
        // Whole lines, each prefixed, in one write (lines of different slots do not mix).
        std::string lines;
        std::size_t begin = 0;
        for (;;) {
            const auto nl = part->find('\n', begin);
            if (nl == std::string::npos) {
                if (part->size() - begin < kMaxLine && !eof && !final) break;
                if (begin == part->size()) break;
                // Overlong or unfinished: as it is.
                lines += format(std::string_view(*part).substr(begin));
                begin = part->size();
                break;
            }
            lines += format(std::string_view(*part).substr(begin, nl - begin));
            begin = nl + 1;
        }
        part->erase(0, begin);
        for (std::size_t off = 0; off < lines.size();) {
            const ssize_t w = ::write(to, lines.data() + off, lines.size() - off);
            if (w < 0 && errno == EINTR) continue;
            if (w <= 0) break;  // the master's own output is gone: nothing to do
            off += static_cast<std::size_t>(w);
        }
        if (eof || final) {
            fd->reset();
            part->clear();
        }
    }
}

AdminReply Supervisor::admin_request(std::string_view path) const {
    if (path == "/metrics") {
        std::string out;
        metrics::append_host_metrics(out, *metrics_);
        metrics::Text t(out);
        t.family("steerchat_admin_requests_total", "counter",
                 "Requests the master's --admin-port listener answered (steerchat balance).");
        t.sample("steerchat_admin_requests_total", -1, "", admin_ ? admin_->requests() : 0);
        t.family("steerchat_admin_connections_closed_total", "counter",
                 "Admin connections closed unanswered: busy (16 open at once) or too slow (no "
                 "request within 2 s).");
        t.sample("steerchat_admin_connections_closed_total", -1, "reason=\"busy\"",
                 admin_ ? admin_->refused() : 0);
        t.sample("steerchat_admin_connections_closed_total", -1, "reason=\"timeout\"",
                 admin_ ? admin_->timed_out() : 0);
        return {200, "text/plain; version=0.0.4; charset=utf-8", std::move(out)};
    }
    if (path == "/healthz") {
        // The slots as the master sees them: ok while at least one serves.
        const auto live = live_slots();
        std::string slots;
        std::size_t serving = 0;
        for (std::uint32_t i : live) {
            const Slot& s = slots_[i];
            const bool up = s.pid > 0 && s.ready;
            serving += up;
            slots += fmt::format("{}{{\"slot\":{},\"pid\":{},\"state\":\"{}\",\"restarts\":{}}}",
                                 slots.empty() ? "" : ",", i, s.pid > 0 ? s.pid : 0,
                                 up          ? "serving"
                                 : s.pid > 0 ? "starting"
                                             : "respawning",
                                 metrics_->info(i).restarts.load());
        }
        return {serving ? 200 : 503, "application/json",
                fmt::format("{{\"status\":\"{}\",\"port\":{},\"workers\":{},\"serving\":{},"
                            "\"drained\":{},\"slots\":[{}]}}\n",
                            serving ? "ok" : "unavailable", opts_.port, pool_, serving,
                            pool_ - live.size(), slots)};
    }
    return {404, "text/plain; charset=utf-8", "not found: try /metrics or /healthz\n"};
}

void Supervisor::reap() {
    for (;;) {
        int status = 0;
        pid_t pid = ::waitpid(-1, &status, WNOHANG);
        if (pid <= 0) return;
        if (pid == bridge_pid_) {
            bridge_pid_ = -1;
            metrics_->host().bridge.link_up = 0;
            if (stopping_) continue;
            log::error(
                "the bridge to Redis {}; respawning it in 1 s (other hosts get this "
                "host's events once it is back)",
                describe_status(status));
            bridge_respawn_at_ = Clock::now() + std::chrono::seconds(1);
            continue;
        }
        if (pid == upgrade_child_) {
            const std::string why =
                fmt::format("the new binary {} before taking over", describe_status(status));
            if (handover_ && handover_->pid != pid) {
                // Another new master (started by hand) is taking over: that one goes on.
                answer_upgrade_client(false, fmt::format("the upgrade failed: {}", why));
            } else if (!handed_over_) {
                fail_handover(why);
            }
            upgrade_child_ = -1;
            continue;
        }
        for (unsigned i = 0; i < slots_.size(); ++i)
            if (slots_[i].pid == pid) on_worker_exit(i, status);
    }
}

void Supervisor::on_worker_exit(unsigned slot, int status) {
    Slot& s = slots_[slot];
    const bool was_ready = s.ready;
    if (balance_) {
        // What is left of its process group would hold the slot's listener (fd 3) and accept
        // beside the respawned child: nothing of the old one outlives it.
        ::kill(-s.pid, SIGKILL);
        relay_output(slot, false);
        s.ready_at.reset();
    }
    s.pid = -1;
    s.ready = false;
    s.config.reset();
    if (stopping_) return;
    if (balance_ && !started_ && !was_ready && !s.removed) {
        // The first start of the pool: a COMMAND that dies at once is broken, and respawning it
        // would only repeat that.
        if (fatal_.empty())
            fatal_ = fmt::format(
                "slot {}: '{}' {} within --start-grace-ms {} of its start (its output, if any, is "
                "above, marked slot {}); fix the command and start again",
                slot, fmt::join(balance_->command, " "), describe_status(status),
                balance_->start_grace_ms, slot);
        return;
    }
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
    if (!ring_ || !host_) return;  // balance: no chat state
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
        clear_sockets(slot);
    }
    // ... then its queue migrates to live listeners (select-or-migrate program), and it closes.
    shut_listeners(s);
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
    if (all) started_ = true;
    if (all && !notified_ready_ && !takeover_pending_) {
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
    control_->add("upgrade", "upgrade",
                  "start the binary at this master's path with --takeover: it takes the "
                  "listeners, maps and chat state over, these workers drain, this master exits",
                  [this](ControlRequest& req) {
                      upgrade_command(req);
                      return ControlReply::success({});
                  });
    control_->add("takeover", "takeover PID",
                  "(used by `steerchat --takeover`) hand this instance over to the new master",
                  [this](ControlRequest& req) {
                      takeover_command(req);
                      return ControlReply::success({});
                  });
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

// ---------------------------------------------------------------------------------------------
// Upgrade, the old side

namespace {
constexpr auto kTakeoverReadyTimeout = std::chrono::seconds(60);
constexpr auto kTakeoverAnswerTimeout = std::chrono::seconds(10);
}  // namespace

void Supervisor::takeover_command(ControlRequest& req) {
    UniqueFd conn = req.take();
    // Who connected (SO_PEERCRED), else who it says it is.
    const pid_t pid = req.peer.pid > 0       ? req.peer.pid
                      : req.words.size() > 1 ? std::atoi(req.words[1].c_str())
                                             : -1;
    auto refuse = [&](const std::string& why) {
        log::warn("refusing a takeover by pid {}: {}", pid, why);
        std::string text = "error\n" + why + "\n";
        [[maybe_unused]] auto n = ::send(conn.get(), text.data(), text.size(), MSG_NOSIGNAL);
    };
    if (balance_)
        return refuse(
            "steerchat balance cannot be taken over: COMMAND's processes hold their own state; "
            "restart it instead");
    if (handover_) return refuse(fmt::format("a takeover by pid {} is under way", handover_->pid));
    if (stopping_ || handed_over_) return refuse("this master is stopping");
    HandoverOut out;
    out.pid = ::getpid();
    out.port = opts_.port;
    out.nslots = static_cast<unsigned>(slots_.size());
    out.pool = pool_;
    out.chat_layout = app::HostState::layout_version();
    for (std::uint32_t i : live_slots())
        if (slots_[i].listener) {
            out.listeners.emplace_back(i, slots_[i].listener.get());
            if (opts_.tls_beside()) out.tls_listeners.emplace_back(i, slots_[i].tls_listener.get());
        }
    if (steering_) out.maps = steering_->map_fds();
    out.lock_fd = lock_->fd();
    out.chat_fd = host_->fd();
    if (opts_.tls_beside()) {
        // The second reuseport group: its lock, listeners and its own program's maps.
        out.tls_port = opts_.tls_port;
        out.tls_lock_fd = tls_lock_->fd();
        if (tls_steering_) out.tls_maps = tls_steering_->map_fds();
    }
    try {
        send_state(conn.get(), out);
    } catch (const std::exception& e) {
        log::error("takeover by pid {}: {}; still serving", pid, e.what());
        return;
    }
    log::info(
        "takeover: handed the listeners of {} slot(s){}, the steering maps and the chat state to "
        "pid {}; serving on until it says its workers accept",
        out.listeners.size(),
        opts_.tls_beside() ? fmt::format(" on ports {} and {}", opts_.port, opts_.tls_port) : "",
        pid);
    handover_ = Handover{std::move(conn), pid, Clock::now() + kTakeoverReadyTimeout, {}};
}

void Supervisor::upgrade_command(ControlRequest& req) {
    UniqueFd client = req.take();
    auto answer = [&](bool ok, const std::string& text) {
        std::string msg = (ok ? "ok\n" : "error\n") + text + "\n";
        [[maybe_unused]] auto n = ::send(client.get(), msg.data(), msg.size(), MSG_NOSIGNAL);
    };
    if (balance_)
        return answer(false,
                      "steerchat balance cannot hand over to a new binary: COMMAND's processes "
                      "hold their own state; restart it instead");
    if (handover_ || upgrade_child_ > 0) return answer(false, "an upgrade is already under way");
    if (stopping_ || handed_over_) return answer(false, "this master is stopping");
    std::vector<std::string> args{exe_path_};
    // The command line this master was started with (argv_, as reload re-reads it).
    for (std::size_t i = 1; i < argv_.size(); ++i)
        if (argv_[i] != "--takeover" && argv_[i] != "--discard-state") args.push_back(argv_[i]);
    args.push_back("--takeover");
    const pid_t pid = ::fork();
    if (pid < 0) return answer(false, fmt::format("fork: {}", std::strerror(errno)));
    if (pid == 0) {
        // The new master: default signal handling, nothing of ours but stdio (every other fd is
        // close-on-exec), the same arguments plus --takeover.
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, nullptr);
        ::signal(SIGPIPE, SIG_DFL);
        std::vector<char*> argv;
        for (auto& a : args)
            argv.push_back(a.data());
        argv.push_back(nullptr);
        ::execv(exe_path_.c_str(), argv.data());
        log::error("upgrade: cannot run {}: {}", exe_path_, std::strerror(errno));
        ::_exit(127);
    }
    log::info("upgrade: started {} (pid {}) to take over", exe_path_, pid);
    upgrade_child_ = pid;
    upgrade_client_ = std::move(client);
}

void Supervisor::answer_upgrade_client(bool ok, const std::string& text) {
    if (!upgrade_client_) return;
    std::string msg = (ok ? "ok\n" : "error\n") + text + "\n";
    // Small, and the client waits for it: a blocking write with a short bound.
    ::fcntl(upgrade_client_.get(), F_SETFL, ::fcntl(upgrade_client_.get(), F_GETFL) & ~O_NONBLOCK);
    timeval tv{1, 0};
    ::setsockopt(upgrade_client_.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    [[maybe_unused]] auto n = ::send(upgrade_client_.get(), msg.data(), msg.size(), MSG_NOSIGNAL);
    upgrade_client_.reset();
}

void Supervisor::on_handover_readable() {
    char buf[256];
    bool eof = false;
    for (;;) {
        const ssize_t n = ::recv(handover_->fd.get(), buf, sizeof buf, MSG_DONTWAIT);
        if (n == 0) {
            eof = true;  // after its last line ("abort ..." then close): read that line first
            break;
        }
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) break;
            return fail_handover(
                fmt::format("reading from the new master: {}", std::strerror(errno)));
        }
        handover_->in.append(buf, static_cast<std::size_t>(n));
        if (handover_->in.size() > 4096)
            return fail_handover("the new master's answer is too long");
    }
    const auto nl = handover_->in.find('\n');
    if (nl == std::string::npos) {
        if (eof) fail_handover("the new master closed the connection");
        return;
    }
    const std::string line = handover_->in.substr(0, nl);
    if (line.rfind("ready", 0) == 0) {
        if (eof) return fail_handover("the new master closed the connection after 'ready'");
        return commit_handover(handover_->pid);
    }
    if (line.rfind("abort", 0) == 0)
        return fail_handover(line.size() > 6 ? line.substr(6) : std::string("it gave up"));
    fail_handover(fmt::format("unexpected answer '{}'", line));
}

void Supervisor::commit_handover(pid_t new_pid) {
    // Under systemd the main process moves to the new master (NotifyAccess=main accepts it from
    // us, the main process now); its READY=1 and STATUS= lines count from then on.
    ::sd_notifyf(0, "MAINPID=%d\nSTATUS=handed over to pid %d; draining the old workers",
                 static_cast<int>(new_pid), static_cast<int>(new_pid));
    // The control socket's path first: the new master binds it once it reads "ok".
    control_.reset();
    try {
        send_line(handover_->fd.get(), "ok");
    } catch (const std::exception& e) {
        // The new master is gone (or going: without "ok" it gives up by itself). Nothing was
        // given away yet but the socket's path and the main pid: take them back, serve on.
        ::sd_notifyf(0, "MAINPID=%d\nSTATUS=serving port %u (a takeover failed)",
                     static_cast<int>(::getpid()), static_cast<unsigned>(opts_.port));
        try {
            control_ = std::make_unique<ControlServer>(opts_.run_dir, opts_.port, ::geteuid());
            add_control_commands();
        } catch (const std::exception& c) {
            log::error("the control socket cannot be made again: {}", c.what());
        }
        return fail_handover(fmt::format("telling it to go on failed: {}", e.what()));
    }
    // The lock, the pins and the chat state are the new master's now: leave them.
    lock_->disown();
    if (tls_lock_) tls_lock_->disown();
    if (steering_) steering_->disown_pins();
    if (tls_steering_) tls_steering_->disown_pins();
    handed_over_ = true;
    handover_.reset();
    log::info("takeover: pid {} serves port {} now; draining this master's workers and exiting",
              new_pid, opts_.port);
    answer_upgrade_client(
        true, fmt::format("upgraded: pid {} serves port {}; the old master (pid {}) drains its "
                          "workers (--drain-timeout-ms {}) and exits",
                          new_pid, opts_.port, ::getpid(), opts_.drain_timeout_ms));
    upgrade_child_ = -1;
}

void Supervisor::fail_handover(const std::string& why) {
    const pid_t pid = handover_ ? handover_->pid : upgrade_child_;
    log::error("takeover by pid {} failed: {}; this master serves on, unchanged", pid, why);
    handover_.reset();
    // The `ctl upgrade` waiting is told only about its own new binary.
    if (pid != upgrade_child_) return;
    answer_upgrade_client(false, fmt::format("the upgrade failed: {}; the running server (pid {}) "
                                             "serves on, unchanged (its log says more)",
                                             why, ::getpid()));
    upgrade_child_ = -1;
}

// ---------------------------------------------------------------------------------------------
// Upgrade, the new side

UniqueFd Supervisor::setup_takeover() {
    UniqueFd conn;
    try {
        conn = control_connect(opts_.run_dir, opts_.port);
    } catch (const ControlError& e) {
        throw std::runtime_error(fmt::format(
            "--takeover: {}; without a running server to take over, start without --takeover",
            e.what()));
    }
    control_send(conn.get(), {"takeover", std::to_string(::getpid())});
    HandoverIn in = receive_state(conn.get(), kTakeoverAnswerTimeout);
    // Gives the locks back to the running master (the files stay; it holds them on).
    auto disown_locks = [&] {
        if (lock_) lock_->disown();
        if (tls_lock_) tls_lock_->disown();
    };
    auto abort_with = [&](const std::string& why) {
        try {
            send_line(conn.get(), "abort " + why);
        } catch (const std::exception&) {
        }
        throw std::runtime_error(why);
    };
    if (in.port != opts_.port)
        abort_with(fmt::format("the running master serves port {}, not {}", in.port, opts_.port));
    // Both sides must agree on the TLS port beside: the listeners are the running master's.
    if (in.tls_port != opts_.tls_port)
        abort_with(fmt::format(
            "the running master serves {}, this command line says {}: an upgrade keeps the "
            "ports; restart to change --tls-port",
            in.tls_port ? fmt::format("--tls-port {}", in.tls_port) : "no --tls-port beside --port",
            opts_.tls_port ? fmt::format("--tls-port {}", opts_.tls_port)
                           : "no --tls-port beside --port"));
    log::info("taking over port {} from pid {}: {} listener(s), {} steering map(s){}", in.port,
              in.pid, in.listeners.size(), in.maps.size(),
              in.tls_port ? fmt::format("; TLS port {}: {} listener(s), {} steering map(s)",
                                        in.tls_port, in.tls_listeners.size(), in.tls_maps.size())
                          : "");
    lock_ = std::make_unique<InstanceLock>(opts_.run_dir, opts_.port, std::move(in.lock));
    if (in.tls_port)
        tls_lock_ =
            std::make_unique<InstanceLock>(opts_.run_dir, in.tls_port, std::move(in.tls_lock));
    bool adopted = false;  // the running state (not a --discard-state one)
    try {
        host_.emplace(app::HostState::adopt(in.chat.get()));
        log::info("chat state taken over (layout version {}): names, rooms and history carry over",
                  app::HostState::layout_version());
        adopted = true;
    } catch (const app::StateLayoutMismatch& e) {
        if (!opts_.discard_state) {
            disown_locks();
            abort_with(fmt::format(
                "{}: this binary cannot read the running server's names, rooms and history. "
                "Start it with --takeover --discard-state to take over with an empty chat state "
                "(every user logs in again), or stop the old server first",
                e.what()));
        }
        log::warn(
            "{}; --discard-state: starting with an empty chat state (every name, room and "
            "history of the old server is dropped)",
            e.what());
        host_.emplace(new_host_state());
        log_chat_sizes("chat state", host_->sizes());
    } catch (const std::exception& e) {
        disown_locks();
        abort_with(fmt::format("mapping the chat state failed: {}", e.what()));
    }
    if (adopted) {
        log_chat_sizes("running chat state", host_->sizes());
        // The tables' sizes are fixed for the state's life: sizes given on this command line
        // (or config file) must be the running state's; derived defaults yield to them.
        const app::ChatSizes running = host_->sizes();
        const app::ChatSizes& wanted = opts_.chat_state;
        const bool differ = running != wanted;
        const bool given = opts_.chat_sizes_given() ||
                           opts_.chat_history_len != Options{}.chat_history_len ||
                           opts_.chat_history_bytes != Options{}.chat_history_bytes;
        if (differ && given) {
            const std::string what = fmt::format(
                "the running server's chat state has {} users, {} rooms, {} memberships, {} "
                "messages and {} bytes of history per room; this command line asks for {}, {}, "
                "{}, {} and {}",
                running.users, running.rooms, running.memberships, running.history_len,
                running.history_bytes, wanted.users, wanted.rooms, wanted.memberships,
                wanted.history_len, wanted.history_bytes);
            if (!opts_.discard_state) {
                disown_locks();
                abort_with(fmt::format(
                    "{}: an upgrade keeps the state's sizes. Give the running sizes (or none: "
                    "they are kept), or take over with --discard-state to start with an empty "
                    "state of the new sizes (every user logs in again), or restart",
                    what));
            }
            log::warn("{}; --discard-state: starting with an empty chat state of the new sizes",
                      what);
            host_.emplace(new_host_state());
            log_chat_sizes("chat state", host_->sizes());
        } else if (differ) {
            log::info(
                "the chat state keeps its sizes (this host's defaults would be {} users, "
                "{} rooms, {} memberships)",
                wanted.users, wanted.rooms, wanted.memberships);
        }  // Between hosts the ids carry the host's number: a state numbered for another host (or
        // for none) would give ids that collide with another host's.
        const unsigned want_bits = host_bits();
        const unsigned want_id = want_bits != 0 ? opts_.host_id : 0;
        if (host_->host_bits() != want_bits || host_->host_id() != want_id) {
            const auto number = [](unsigned bits, unsigned id) {
                return bits == 0 ? std::string("no host number (no --redis)")
                                 : fmt::format("host number {} (--redis --host-id {})", id, id);
            };
            const std::string what = fmt::format(
                "the running server's chat state gives ids with {}; this command line asks for {}",
                number(host_->host_bits(), host_->host_id()), number(want_bits, want_id));
            if (!opts_.discard_state) {
                disown_locks();
                abort_with(fmt::format(
                    "{}: an upgrade keeps the state's ids. Give the running server's --redis and "
                    "--host-id, or take over with --discard-state to start with an empty state "
                    "(every user logs in again), or restart",
                    what));
            }
            log::warn("{}; --discard-state: starting with an empty chat state", what);
            host_.emplace(new_host_state());
            log_chat_sizes("chat state", host_->sizes());
        }
    }
    // The running master's slots (--max-workers) and pool, whatever this command line says:
    // `steerchat ctl workers N` changes the pool afterwards.
    if (in.nslots != opts_.max_workers || in.pool != opts_.workers)
        log::info(
            "the running server has {} of {} slot(s) in its pool; they are kept (this command "
            "line says --workers {} --max-workers {}; `steerchat ctl workers N` resizes)",
            in.pool, in.nslots, opts_.workers, opts_.max_workers);
    opts_.max_workers = in.nslots;
    opts_.workers = in.pool;
    setup_process();
    slots_.resize(in.nslots);
    pool_ = in.pool;
    for (unsigned i = 0; i < slots_.size(); ++i) {
        slots_[i].removed = i >= pool_;
        slots_[i].drained = i < pool_;  // until its listener is among those received
    }
    for (auto& [slot, fd] : in.listeners) {
        if (slot >= pool_) continue;  // cannot happen: the old master sends its pool's
        slots_[slot].listener = std::move(fd);
        slots_[slot].drained = false;
    }
    for (auto& [slot, fd] : in.tls_listeners)
        if (slot < pool_) slots_[slot].tls_listener = std::move(fd);
    if (opts_.steering == SteeringMode::bpf) {
        try {
            steering_ = std::make_unique<steer::Steering>(
                steer::SteerConfig{opts_.seed, opts_.workers, opts_.ipv6_prefix64}, in.map_fds());
            // The same maps: the buckets are rewritten with the same table, the sockets are
            // already in their slots (a socket sits in one socket array slot only).
            // The TLS port's group has its own program and maps (pinned under its port).
            if (opts_.tls_beside())
                tls_steering_ = std::make_unique<steer::Steering>(
                    steer::SteerConfig{opts_.seed, opts_.workers, opts_.ipv6_prefix64},
                    in.tls_map_fds());
            remap_buckets();
            for (std::uint32_t i : live_slots()) {
                if (!steering_->holds_socket(i, slots_[i].listener.get()))
                    steering_->set_socket(i, slots_[i].listener.get());
                if (tls_steering_ && !tls_steering_->holds_socket(i, slots_[i].tls_listener.get()))
                    tls_steering_->set_socket(i, slots_[i].tls_listener.get());
            }
        } catch (const std::exception& e) {
            disown_locks();
            abort_with(e.what());
        }
    }
    ring_.emplace(ring::Region::create(opts_.max_workers, opts_.ring_bytes));
    takeover_pending_ = true;
    return conn;
}

bool Supervisor::complete_takeover(int conn) {
    // Every live slot's new worker must accept before the old master lets go.
    const auto deadline = Clock::now() + kTakeoverReadyTimeout;
    std::string why;
    for (;;) {
        const auto live = live_slots();
        if (std::all_of(live.begin(), live.end(), [&](std::uint32_t i) { return slots_[i].ready; }))
            break;
        const auto left =
            std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
        if (left <= 0) {
            why = "the new workers did not all start accepting within 60 s";
            break;
        }
        pollfd p[3] = {
            {signal_fd_.get(), POLLIN, 0}, {ready_read_.get(), POLLIN, 0}, {conn, POLLIN, 0}};
        ::poll(p, 3, static_cast<int>(std::min<long>(left, 1000)));
        if (p[1].revents & POLLIN) read_ready_messages();
        if (p[2].revents & (POLLIN | POLLHUP)) {
            why = "the old master closed the connection";
            break;
        }
        signalfd_siginfo si;
        bool signalled = false;
        while (::read(signal_fd_.get(), &si, sizeof si) == sizeof si)
            if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT) signalled = true;
        if (signalled) {
            why = "the new master was told to stop";
            break;
        }
        // A worker that dies now is a failed start: nothing is respawned during a takeover.
        int status = 0;
        if (const pid_t pid = ::waitpid(-1, &status, WNOHANG); pid > 0) {
            for (auto& s : slots_)
                if (s.pid == pid) s.pid = -1;
            why = fmt::format("a new worker (pid {}) {} while starting", pid,
                              describe_status(status));
            break;
        }
    }
    if (why.empty()) {
        try {
            send_line(conn, fmt::format("ready {}", ::getpid()));
            const std::string answer = receive_line(conn, kTakeoverAnswerTimeout);
            if (answer != "ok") why = fmt::format("the old master answered '{}'", answer);
        } catch (const std::exception& e) {
            why = e.what();
        }
    }
    if (!why.empty()) {
        try {
            send_line(conn, "abort " + why);
        } catch (const std::exception&) {
        }
        log::error("takeover failed: {}; the old master serves on; stopping the new workers", why);
        // Give everything back: no pin was made, the locks and the state stay the old master's.
        lock_->disown();
        if (tls_lock_) tls_lock_->disown();
        return false;
    }
    // Committed: the old master has let go of the control socket's path, the pins and the lock.
    takeover_pending_ = false;
    try {
        lock_->write_pid();  // the lock is held either way; the file only names its holder
        if (tls_lock_) tls_lock_->write_pid();
    } catch (const std::exception& e) {
        log::warn("{}", e.what());
    }
    control_ = std::make_unique<ControlServer>(opts_.run_dir, opts_.port, ::geteuid());
    add_control_commands();
    if (steering_) {
        // This binary's program replaces the old one atomically for the whole group (same maps).
        for (std::uint32_t i : live_slots()) {
            steering_->attach(slots_[i].listener.get());
            if (tls_steering_) tls_steering_->attach(slots_[i].tls_listener.get());
            break;
        }
        steering_->pin(opts_.pin_dir());
        if (tls_steering_) tls_steering_->pin(opts_.tls_pin_dir());
    }
    log::info("took over port {}: every new worker accepts; the old master drains its workers",
              opts_.port);
    notify_readiness();
    return true;
}

ControlReply Supervisor::status_command() const {
    std::vector<std::uint32_t> owned(slots_.size(), 0);
    if (steering_)
        for (std::uint32_t b : steering_->buckets())
            if (b < owned.size()) ++owned[b];
    const auto live = live_slots();
    std::string out = fmt::format(
        "port {}: {} worker(s) in the pool ({} drained), --max-workers {}, steering {}{}\n",
        opts_.port, pool_, pool_ - live.size(), opts_.max_workers,
        steering_ ? "bpf" : "kernel (not sticky)",
        balance_ ? fmt::format("; balance of '{}'", fmt::join(balance_->command, " ")) : "");
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
    // The new master of an upgrade under way has the listeners and the pool as they were sent.
    if (handover_ || upgrade_child_ > 0)
        return ControlReply::failure(
            "an upgrade is under way; resize once it is done (on the new master)");
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
    std::vector<Slot> listeners(joining.size());  // their listeners only
    for (std::size_t k = 0; k < joining.size(); ++k)
        make_listeners(listeners[k]);
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
        s.listener = std::move(listeners[k].listener);
        s.tls_listener = std::move(listeners[k].tls_listener);
        s.drained = s.removed = false;
        s.deaths.clear();
        s.quick_failures = 0;
        s.respawn_at.reset();
        s.kill_at.reset();
        set_sockets(joining[k]);
    }
    // Leaving: out of the pool, its buckets remapped to the others first ...
    for (unsigned i : leaving) {
        slots_[i].removed = true;
        slots_[i].drained = false;
        slots_[i].respawn_at.reset();
    }
    pool_ = n;
    if (steering_) {
        if (n > old_pool) set_nslots(n);
        remap_buckets();
        if (n < old_pool) set_nslots(n);
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
    clear_sockets(slot);
    // The worker stops accepting and closes its connections (WebSockets: 1001 going away);
    // its users go offline when it has exited (on_worker_exit).
    if (s.pid > 0) {
        signal_worker(s, SIGTERM);
        s.kill_at = Clock::now() + std::chrono::milliseconds(opts_.shutdown_timeout_ms);
        set_slot_state(slot, metrics::SlotState::stopping, s.pid);
    } else {
        set_slot_state(slot, metrics::SlotState::removed, -1);
    }
    // Connections queued on its listeners migrate to the others (select-or-migrate program).
    shut_listeners(s);
    s.ready = false;
}

ControlReply Supervisor::reload() {
    if (balance_) {
        const std::string why =
            "steerchat balance has nothing to reload: COMMAND reads its own configuration, and "
            "the master's settings need a restart";
        log::info("{}", why);
        return ControlReply::failure(why);
    }
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
        if (plan.next.tls_summary != opts_.tls_summary ||
            plan.next.tls_cert_pem != opts_.tls_cert_pem)
            log::info("reload: new TLS connections get the {}", plan.next.tls_summary);
        if (!plan.next.tls_warning.empty()) log::warn("{}", plan.next.tls_warning);
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
        if (s.pid > 0 && !signal_worker(s, SIGTERM) && errno == EPERM)
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
                    signal_worker(s, SIGKILL);
                }
            deadline = Clock::now() + std::chrono::seconds(5);
        }
        // Under balance the children's last words are relayed meanwhile (a full pipe would
        // stall a child that logs its shutdown).
        std::vector<pollfd> p{{signal_fd_.get(), POLLIN, 0}};
        for (auto& s : slots_)
            for (const UniqueFd* f : {&s.out, &s.err})
                if (*f) p.push_back({f->get(), POLLIN, 0});
        ::poll(p.data(), p.size(), 50);
        for (unsigned i = 0; i < slots_.size(); ++i)
            if (slots_[i].out || slots_[i].err) relay_output(i, false);
        signalfd_siginfo si;
        while (::read(signal_fd_.get(), &si, sizeof si) == sizeof si) {
        }
        reap();
    }
    for (unsigned i = 0; i < slots_.size(); ++i)
        if (slots_[i].out || slots_[i].err) relay_output(i, true);
    if (bridge_pid_ > 0) {
        // After the workers: their users' logouts reach the other hosts first.
        ::kill(bridge_pid_, SIGTERM);
        const auto until = Clock::now() + std::chrono::seconds(3);
        while (bridge_pid_ > 0 && Clock::now() < until) {
            pollfd p{signal_fd_.get(), POLLIN, 0};
            ::poll(&p, 1, 50);
            signalfd_siginfo si;
            while (::read(signal_fd_.get(), &si, sizeof si) == sizeof si) {
            }
            reap();
        }
        if (bridge_pid_ > 0) ::kill(bridge_pid_, SIGKILL);
    }
    for (auto& s : slots_) {
        s.listener.reset();
        s.tls_listener.reset();
    }
    tls_steering_.reset();  // removes its pins (unless handed over)
    steering_.reset();      // removes the pins (unless handed over)
    if (handed_over_) {
        // Names a worker of ours still held (killed before it logged its users out).
        if (const std::size_t n = host_->release_generation(); n != 0)
            log::info("released {} name(s) this master's workers still held", n);
        log::info("handed over; stopped");
        return 0;
    }
    log::info("stopped");
    return 0;
}

int Supervisor::run() {
    log::set_slot("master");
    // `steerchat ctl upgrade` runs the file at this path: after a package upgrade, the new one
    // (/proc/self/exe would then name the deleted old inode).
    std::error_code ec;
    exe_path_ = std::filesystem::read_symlink("/proc/self/exe", ec).string();
    if (opts_.takeover) {
        UniqueFd conn = setup_takeover();
        for (std::uint32_t i : live_slots())
            spawn(i);
        if (!complete_takeover(conn.get())) {
            shutdown();
            return 1;
        }
    } else {
        setup();
        if (balance_)
            log::info("balance: {} cop{} of '{}' ({}), each with its own listener as fd 3{}",
                      opts_.workers, opts_.workers == 1 ? "y" : "ies",
                      fmt::join(balance_->command, " "), balance_->program,
                      admin_ ? fmt::format("; /metrics and /healthz on [{}]:{}",
                                           balance_->admin_bind, balance_->admin_port)
                             : "");
        log::info(
            "listening on [{}]:{} with {} worker(s), steering {} (seed {:#010x}){}", opts_.bind,
            opts_.port, opts_.workers,
            opts_.steering == SteeringMode::bpf ? "bpf" : "kernel (SO_REUSEPORT hash, not sticky)",
            opts_.seed,
            steering_ ? fmt::format(", maps pinned at {}", opts_.pin_dir().string()) : "");
        if (opts_.tls_beside())
            log::info("TLS on port {} (steered alike{}), plain HTTP on port {}: {}", opts_.tls_port,
                      tls_steering_
                          ? fmt::format(", maps pinned at {}", opts_.tls_pin_dir().string())
                          : "",
                      opts_.port, opts_.tls_summary);
        else if (!opts_.tls_summary.empty())
            log::info("port {} speaks TLS only: {}", opts_.port, opts_.tls_summary);
        if (!opts_.tls_warning.empty()) log::warn("{}", opts_.tls_warning);
        if (!opts_.redis_url.empty() && !balance_) spawn_bridge();
        for (unsigned i = 0; i < pool_; ++i)
            spawn(i);
    }

    for (;;) {
        auto now = Clock::now();
        if (now >= next_sample_) {
            sample_metrics();
            next_sample_ = now + kSamplePeriod;
        }
        int timeout = static_cast<int>(
            std::chrono::duration_cast<std::chrono::milliseconds>(next_sample_ - now).count());
        if (bridge_respawn_at_) {
            const auto ms =
                std::chrono::duration_cast<std::chrono::milliseconds>(*bridge_respawn_at_ - now)
                    .count();
            timeout = std::min(timeout, static_cast<int>(std::max<long>(ms, 0)));
        }
        for (auto& s : slots_)
            for (const auto& at : {s.respawn_at, s.kill_at, s.ready_at})
                if (at) {
                    auto ms =
                        std::chrono::duration_cast<std::chrono::milliseconds>(*at - now).count();
                    ms = std::max<long>(ms, 0);
                    timeout = std::min(timeout, static_cast<int>(ms));
                }
        if (int t = control_->timeout_ms(); t >= 0)
            timeout = timeout < 0 ? t : std::min(timeout, t);
        if (admin_)
            if (int t = admin_->timeout_ms(); t >= 0)
                timeout = timeout < 0 ? t : std::min(timeout, t);
        if (handover_) {
            const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                                handover_->deadline - Clock::now())
                                .count();
            const int t = static_cast<int>(std::max<long>(ms, 0));
            timeout = timeout < 0 ? t : std::min(timeout, t);
        }
        std::vector<pollfd> p = {{signal_fd_.get(), POLLIN, 0},
                                 {ready_read_.get(), POLLIN, 0},
                                 {handover_ ? handover_->fd.get() : -1, POLLIN, 0}};
        const std::size_t nctl = control_ ? control_->append(p) : 0;
        const std::size_t nadmin = admin_ ? admin_->append(p) : 0;
        // balance: the children's stdout and stderr.
        const std::size_t first_pipe = p.size();
        for (auto& s : slots_)
            for (const UniqueFd* f : {&s.out, &s.err})
                if (*f) p.push_back({f->get(), POLLIN, 0});
        int n = ::poll(p.data(), p.size(), timeout);
        if (n < 0 && errno != EINTR)
            throw std::runtime_error(fmt::format("poll: {}", std::strerror(errno)));
        if (n > 0 && (p[1].revents & POLLIN)) read_ready_messages();
        if (n >= 0 && control_) control_->process(std::span<const pollfd>(p).subspan(3, nctl));
        if (n >= 0 && admin_) admin_->process(std::span<const pollfd>(p).subspan(3 + nctl, nadmin));
        if (n > 0 && p.size() > first_pipe) {
            bool any = false;
            for (std::size_t k = first_pipe; k < p.size(); ++k)
                any = any || p[k].revents != 0;
            if (any)
                for (unsigned i = 0; i < slots_.size(); ++i)
                    if (slots_[i].out || slots_[i].err) relay_output(i, false);
        }
        if (handover_ && (p[2].revents & (POLLIN | POLLHUP | POLLERR))) on_handover_readable();
        if (handover_ && Clock::now() >= handover_->deadline)
            fail_handover("its workers did not all accept within 60 s");
        if (handed_over_) {
            ::sd_notify(0, "STATUS=handed over: draining the old workers");
            return shutdown();
        }
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
        if (!fatal_.empty()) {
            log::error("balance: {}", fatal_);
            ::sd_notify(0, "STOPPING=1\nSTATUS=COMMAND failed to start; exiting");
            shutdown();
            return 1;
        }
        now = Clock::now();
        if (bridge_respawn_at_ && *bridge_respawn_at_ <= now) spawn_bridge();
        for (unsigned i = 0; i < slots_.size(); ++i) {
            Slot& s = slots_[i];
            if (s.ready_at && *s.ready_at <= now && s.pid > 0) {
                // balance: a child that has lived --start-grace-ms has started.
                s.ready_at.reset();
                s.ready = true;
                set_slot_state(i, metrics::SlotState::serving, s.pid);
                notify_readiness();
            }
            if (s.respawn_at && *s.respawn_at <= now) spawn(i);
            if (s.kill_at && *s.kill_at <= now && s.pid > 0) {
                log::warn(
                    "worker {} (pid {}, removed from the pool) did not stop within {} ms; "
                    "killing it",
                    i, s.pid, opts_.shutdown_timeout_ms);
                signal_worker(s, SIGKILL);
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
