// Least privilege for workers. The master keeps what it needs (root, or the capabilities it was
// given: CAP_BPF for the steering, CAP_SETUID/CAP_SETGID for the drop, CAP_KILL to signal its
// workers); every worker, after it has closed the fds it must not hold and before it reads a byte
// from the network, becomes an unprivileged user with no capabilities at all and no_new_privs.
//
// The master plans the drop (name lookups, which may read /etc/passwd, happen once, before any
// fork); each forked worker applies it with drop_privileges(), which either succeeds completely
// or throws: a worker that cannot drop must exit, never serve.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace steerchat::master {

// An error whose message says what went wrong and how to fix it.
class PrivilegeError : public std::runtime_error {
  public:
    using std::runtime_error::runtime_error;
};

struct DropSpec {
    // true: become uid/gid/groups (the master is root with CAP_SETUID and CAP_SETGID);
    // false: keep the master's user (it cannot change it) and only shed capabilities.
    bool change_user = false;
    uid_t uid = 0;
    gid_t gid = 0;
    std::vector<gid_t> groups;  // supplementary groups (setgroups)
    std::string user_name;      // for messages
    pid_t master_pid = 0;       // the worker exits if its parent is no longer this process
    int parent_death_signal = 0;
    bool seccomp = false;  // last step: load the workers' syscall allowlist
    // One line for the master's log: who the workers run as, and why.
    std::string description;
};

// Decides who the workers will be. `user`/`group` are --user/--group (empty: the default user
// steerchat if it exists, else nobody; the user's own group and supplementary groups). Throws
// PrivilegeError if the user or group cannot be found or is root.
DropSpec plan_privilege_drop(const std::string& user, const std::string& group, pid_t master_pid,
                             int parent_death_signal);

// In a forked worker: setgroups, setresgid, setresuid (if change_user), clears every capability
// set (effective, permitted, inheritable, ambient, and the bounding set when CAP_SETPCAP allows),
// sets PR_SET_NO_NEW_PRIVS, checks that root cannot be regained, re-arms the parent-death signal
// (a credential change resets it) and checks that the master is still the parent. Throws
// PrivilegeError naming the step that failed. With spec.seccomp, it ends by loading the
// workers' syscall allowlist (install_worker_seccomp).
void drop_privileges(const DropSpec& spec);

// Loads a seccomp filter that allows only the system calls a running worker makes (its event
// loop, sockets it was given or accepts, memory, time, signals, exit); anything else kills the
// process. Needs no_new_privs (or CAP_SYS_ADMIN). Throws PrivilegeError.
void install_worker_seccomp();

// The capability sets of this process (bit i = capability i).
struct CapabilitySets {
    std::uint64_t effective = 0;
    std::uint64_t permitted = 0;
    std::uint64_t inheritable = 0;
};
CapabilitySets current_capabilities();

}  // namespace steerchat::master
