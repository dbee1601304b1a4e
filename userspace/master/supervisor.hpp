// The master process: creates the listeners and the steering, forks one worker per slot, respawns
// workers that die (keeping their listener, so queued connections wait for the new worker),
// drains a slot that keeps failing, grows and shrinks the pool on `steerchat ctl workers N`
// (up to --max-workers, which sizes the shared parts), and shuts everything down on SIGTERM/SIGINT.
//
// The same supervisor runs `steerchat balance -- COMMAND` (BalanceOptions): then each slot's
// worker is a copy of COMMAND, exec'd with only its listener as fd 3 (systemd socket activation),
// in its own process group, its stdout and stderr read by the master and written out prefixed by
// the slot. No chat state, ring or config channel exists then; the master serves /metrics on
// --admin-port.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <deque>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "app/launch.hpp"
#include "master/admin.hpp"
#include "master/control.hpp"
#include "master/instance_lock.hpp"
#include "master/listener.hpp"
#include "master/options.hpp"
#include "master/privileges.hpp"
#include "metrics/metrics.hpp"
#include "ring/ring.hpp"
#include "steer/steering.hpp"
#include "util/unique_fd.hpp"

namespace steerchat::master {

class Supervisor {
  public:
    // `argv`: the command line the options came from, re-parsed on SIGHUP (reload, with the
    // --config file it names); empty: SIGHUP has nothing to re-read.
    explicit Supervisor(Options opts, std::vector<std::string> argv = {},
                        std::optional<BalanceOptions> balance = std::nullopt);
    ~Supervisor();
    // Runs until SIGTERM/SIGINT (returns 0) or until no slot is left (returns 1).
    int run();

  private:
    using Clock = std::chrono::steady_clock;
    struct Slot {
        UniqueFd listener;
        UniqueFd tls_listener;  // --tls-port: the slot's socket in that port's group
        pid_t pid = -1;
        Clock::time_point started{};
        std::deque<Clock::time_point> deaths;  // within the restart window
        unsigned quick_failures = 0;
        std::optional<Clock::time_point> respawn_at;
        bool drained = false;
        bool removed = false;  // beyond the pool (never used, or shrunk away by `ctl workers`)
        bool ready = false;    // its worker said it accepts (ready pipe)
        std::optional<Clock::time_point> kill_at;  // removed, stopping: SIGKILL after this
        UniqueFd config;  // the master's end of the worker's config channel (reload)
        // balance: the child leads a process group of its own (pgid = its pid); the master's
        // ends of its stdout and stderr pipes and their unfinished lines; when it has started.
        UniqueFd out, err;
        std::string out_part, err_part;
        pid_t output_pid = -1;  // the child that writes into out and err
        std::optional<Clock::time_point> ready_at;
    };

    void setup();
    // The host number bits of this command line's chat state (8 with --redis, else 0), and an
    // empty chat state of its sizes and host number.
    unsigned host_bits() const noexcept { return opts_.redis_url.empty() ? 0 : 8; }
    app::HostState new_host_state() const;
    // The parts of setup() that a takeover shares (rlimits, signals, the ready pipe, privileges).
    void setup_process();
    void spawn(unsigned slot);
    [[noreturn]] void become_worker(unsigned slot);
    // balance: spawn's fork and exec of COMMAND for `slot` (false: nothing was started).
    bool spawn_command(unsigned slot);
    [[noreturn]] void become_command(unsigned slot, int out, int err, int status);
    // A signal to a slot's worker: under balance its whole process group.
    // False (errno set) if kill() failed.
    bool signal_worker(const Slot& s, int sig) const;
    // balance: writes out what the slot's child printed, each line prefixed "[slot N] " (with
    // --log-format json: one JSON object per line, slot "slot N", the child's pid); with `final`,
    // also an unfinished last line, and closes the pipes.
    void relay_output(unsigned slot, bool final);
    AdminReply admin_request(std::string_view path) const;
    void reap();
    void on_worker_exit(unsigned slot, int status);
    void drain(unsigned slot, const std::string& why);
    void release_slot_users(unsigned slot);
    void remap_buckets();
    // SIGHUP and `ctl reload`: re-reads the command line and the config file; applies what can
    // change while running (here and in every worker, through its config channel), names what
    // cannot. The reply says what was done (the same lines as the log), or why nothing was.
    ControlReply reload();
    int shutdown();
    // systemd notification (sd_notify; nothing without NOTIFY_SOCKET): the workers' readiness
    // messages; READY=1 once every live slot accepts; a STATUS= line (with `extra` appended).
    void read_ready_messages();
    void notify_readiness(const std::string& extra = {});
    std::vector<std::uint32_t> live_slots() const;
    // The master's figures in the metrics mapping (its HostBlock; docs/operations.md, "Metrics
    // and the host view"): a slot's state and pid; CPU, RSS and the BPF counters, sampled.
    void set_slot_state(unsigned slot, metrics::SlotState state, pid_t pid);
    void sample_metrics();
    void count_buckets(std::span<const std::uint32_t> table);
    // The control socket's commands (master/control.hpp).
    void add_control_commands();
    ControlReply status_command() const;
    // `workers N`: grows or shrinks the pool to slots 0..N-1 and brings drained ones back.
    ControlReply resize(unsigned n);
    void remove_slot(unsigned slot);
    // A slot's listeners: --port's, and --tls-port's if TLS has a port of its own.
    void make_listeners(Slot& s);
    void set_sockets(unsigned slot);
    void clear_sockets(unsigned slot);
    void set_nslots(std::uint32_t n);
    // Stops a slot's listeners; their queues migrate (select-or-migrate).
    static void shut_listeners(Slot& s);

    // Upgrade, the old side (master/takeover.hpp; docs/architecture.md, "Upgrade"):
    // `takeover` (from a new master) sends the state and waits for its "ready"; `upgrade` (from
    // `steerchat ctl`) starts the binary at this master's path with --takeover and answers once
    // it has taken over or failed.
    void takeover_command(ControlRequest& req);
    void upgrade_command(ControlRequest& req);
    void on_handover_readable();
    void commit_handover(pid_t new_pid);
    void fail_handover(const std::string& why);
    void answer_upgrade_client(bool ok, const std::string& text);
    // Upgrade, the new side (--takeover): receives the state from the running master, starts
    // the workers on its listeners, and commits (or gives everything back and exits 1).
    UniqueFd setup_takeover();
    bool complete_takeover(int conn);

    Options opts_;
    std::vector<std::string> argv_;          // for reload
    std::optional<BalanceOptions> balance_;  // `steerchat balance`: COMMAND instead of workers
    bool started_ = false;  // balance: every slot of the first pool has started (start grace)
    std::string fatal_;     // balance: why the first start failed (run() then exits 1)
    std::unique_ptr<AdminServer> admin_;  // balance --admin-port
    int worker_config_fd_ = -1;           // spawn -> become_worker: the child's end of its channel
    app::ReloadCounts reloads_;
    std::unique_ptr<InstanceLock> lock_;
    std::unique_ptr<steer::Steering> steering_;
    // --tls-port: that port's reuseport group has its own program instance and maps (a
    // sockarray holds one group's sockets), with the same seed and bucket table: a client
    // address reaches the same slot on both ports.
    std::unique_ptr<steer::Steering> tls_steering_;
    std::unique_ptr<InstanceLock> tls_lock_;
    // Cross-worker state, created before the first fork and inherited by every worker.
    std::optional<ring::Region> ring_;
    std::optional<app::HostState> host_;
    std::optional<metrics::Region> metrics_;  // the host's counters (metrics/metrics.hpp)
    Clock::time_point next_sample_{};
    std::vector<Slot> slots_;  // --max-workers of them; slots 0..pool_-1 are in the pool
    unsigned pool_ = 0;
    std::vector<int> cpus_;
    DropSpec drop_;  // who the workers become (planned once, applied by each worker)
    UniqueFd signal_fd_;
    bool stopping_ = false;
    UniqueFd ready_read_, ready_write_;  // workers write (slot, pid) here once they accept
    bool notified_ready_ = false;
    std::unique_ptr<ControlServer> control_;  // <run-dir>/<port>.ctl (steerchat ctl)
    std::string exe_path_;  // this binary's path at start (after a package upgrade: the new file)
    // Old side of an upgrade under way: the new master's connection and when it must be ready.
    struct Handover {
        UniqueFd fd;
        pid_t pid = -1;
        Clock::time_point deadline;
        std::string in;
    };
    std::optional<Handover> handover_;
    UniqueFd upgrade_client_;   // the `steerchat ctl upgrade` waiting for the outcome
    pid_t upgrade_child_ = -1;  // the new binary this master started for it
    // Between hosts (--redis): the bridge process (ring slot max_workers), respawned if it dies.
    pid_t bridge_pid_ = -1;
    std::optional<std::chrono::steady_clock::time_point> bridge_respawn_at_;
    void spawn_bridge();
    [[noreturn]] void become_bridge();
    bool handed_over_ = false;       // the new master serves; this one drains and exits
    bool takeover_pending_ = false;  // new side: no READY=1 before the old master agreed
};

}  // namespace steerchat::master
