#include "privileges.hpp"

#include <grp.h>
#include <linux/capability.h>
#include <pwd.h>
#include <seccomp.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>

#include <fmt/core.h>

namespace steerchat::master {

namespace {

constexpr const char* kDefaultUser = "steerchat";
constexpr const char* kFallbackUser = "nobody";

[[noreturn]] void fail(const std::string& step, int err) {
    throw PrivilegeError(fmt::format("dropping privileges: {} failed: {}", step,
                                     err ? std::strerror(err) : "unexpected result"));
}

bool has_cap(std::uint64_t set, int cap) {
    return (set >> cap) & 1u;
}

// Capabilities this kernel knows: PR_CAPBSET_READ answers EINVAL past the last one.
int capability_count() {
    int n = 0;
    while (n < 64 && ::prctl(PR_CAPBSET_READ, n, 0, 0, 0) >= 0)
        ++n;
    return n;
}

bool all_digits(const std::string& s) {
    return !s.empty() && s.find_first_not_of("0123456789") == std::string::npos;
}

const passwd* find_user(const std::string& name) {
    const passwd* pw = ::getpwnam(name.c_str());
    if (!pw && all_digits(name)) pw = ::getpwuid(static_cast<uid_t>(std::stoul(name)));
    return pw;
}

const group* find_group(const std::string& name) {
    const group* gr = ::getgrnam(name.c_str());
    if (!gr && all_digits(name)) gr = ::getgrgid(static_cast<gid_t>(std::stoul(name)));
    return gr;
}

std::string user_name_of(uid_t uid) {
    const passwd* pw = ::getpwuid(uid);
    return pw ? pw->pw_name : fmt::format("uid {}", uid);
}

}  // namespace

CapabilitySets current_capabilities() {
    __user_cap_header_struct hdr{_LINUX_CAPABILITY_VERSION_3, 0};
    __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3] = {};
    if (::syscall(SYS_capget, &hdr, data) != 0) fail("capget", errno);
    auto join = [](std::uint32_t lo, std::uint32_t hi) {
        return (static_cast<std::uint64_t>(hi) << 32) | lo;
    };
    return {join(data[0].effective, data[1].effective), join(data[0].permitted, data[1].permitted),
            join(data[0].inheritable, data[1].inheritable)};
}

DropSpec plan_privilege_drop(const std::string& user, const std::string& group, pid_t master_pid,
                             int parent_death_signal) {
    DropSpec spec;
    spec.master_pid = master_pid;
    spec.parent_death_signal = parent_death_signal;
    const auto caps = current_capabilities();
    spec.change_user = has_cap(caps.effective, CAP_SETUID) && has_cap(caps.effective, CAP_SETGID);
    if (!spec.change_user) {
        spec.uid = ::getuid();
        spec.gid = ::getgid();
        spec.user_name = user_name_of(spec.uid);
        spec.description = fmt::format(
            "workers run as the master's user {} (uid {}): the master lacks CAP_SETUID and "
            "CAP_SETGID (it was not started as root), so it cannot change user{}; "
            "workers still drop every capability and set no_new_privs",
            spec.user_name, spec.uid,
            user.empty() && group.empty() ? "" : " (--user/--group ignored)");
        return spec;
    }

    const passwd* pw = nullptr;
    std::string why;
    if (!user.empty()) {
        pw = find_user(user);
        if (!pw)
            throw PrivilegeError(
                fmt::format("--user '{}' is not a user of this system (see getent passwd)", user));
        why = "chosen with --user";
    } else if ((pw = find_user(kDefaultUser))) {
        why = "the dedicated system user";
    } else if ((pw = find_user(kFallbackUser))) {
        why = fmt::format(
            "no user '{}' exists (create one with `useradd --system --no-create-home --shell "
            "/usr/sbin/nologin {}`, or choose one with --user)",
            kDefaultUser, kDefaultUser);
    } else {
        throw PrivilegeError(fmt::format(
            "neither a user '{}' nor '{}' exists to run the workers as: create one (`useradd "
            "--system --no-create-home --shell /usr/sbin/nologin {}`) or choose one with --user",
            kDefaultUser, kFallbackUser, kDefaultUser));
    }
    if (pw->pw_uid == 0)
        throw PrivilegeError(fmt::format(
            "user '{}' is root: workers parse input from the network and never run as root; "
            "name an unprivileged user with --user",
            pw->pw_name));
    spec.uid = pw->pw_uid;
    spec.gid = pw->pw_gid;
    spec.user_name = pw->pw_name;

    std::string group_name;
    if (!group.empty()) {
        const struct group* gr = find_group(group);
        if (!gr)
            throw PrivilegeError(fmt::format(
                "--group '{}' is not a group of this system (see getent group)", group));
        spec.gid = gr->gr_gid;
        group_name = gr->gr_name;
        // An explicit group is the only one: no supplementary groups.
    } else {
        int n = 16;
        std::vector<gid_t> groups;
        for (;;) {
            groups.resize(static_cast<std::size_t>(n));
            int got = n;
            if (::getgrouplist(spec.user_name.c_str(), spec.gid, groups.data(), &got) >= 0) {
                groups.resize(static_cast<std::size_t>(got));
                break;
            }
            if (got <= n) throw PrivilegeError("getgrouplist failed for " + spec.user_name);
            n = got;
        }
        spec.groups = groups;
        const struct group* gr = ::getgrgid(spec.gid);
        group_name = gr ? gr->gr_name : fmt::format("{}", spec.gid);
    }
    if (spec.gid == 0 ||
        std::find(spec.groups.begin(), spec.groups.end(), gid_t{0}) != spec.groups.end())
        throw PrivilegeError(
            fmt::format("user '{}' would keep root's group (gid 0): choose another user or "
                        "group (--user, --group)",
                        spec.user_name));
    std::string groups_text;
    for (gid_t g : spec.groups)
        if (g != spec.gid) groups_text += fmt::format("{}{}", groups_text.empty() ? "" : ",", g);
    spec.description = fmt::format(
        "workers run as user {} (uid {}), group {} (gid {}){}, with no capabilities and "
        "no_new_privs: {}",
        spec.user_name, spec.uid, group_name, spec.gid,
        groups_text.empty() ? "" : fmt::format(", supplementary groups {}", groups_text), why);
    return spec;
}

void drop_privileges(const DropSpec& spec) {
    const int ncaps = capability_count();
    // The bounding set first: dropping from it needs CAP_SETPCAP, which the uid change removes.
    // (Without CAP_SETPCAP it stays; no_new_privs keeps an execve from gaining anything in it.)
    const bool can_drop_bounding = has_cap(current_capabilities().effective, CAP_SETPCAP);
    if (can_drop_bounding)
        for (int c = 0; c < ncaps; ++c)
            if (::prctl(PR_CAPBSET_DROP, c, 0, 0, 0) != 0)
                fail(fmt::format("PR_CAPBSET_DROP of capability {}", c), errno);

    if (spec.change_user) {
        if (::setgroups(spec.groups.size(), spec.groups.data()) != 0) fail("setgroups", errno);
        if (::setresgid(spec.gid, spec.gid, spec.gid) != 0)
            fail(fmt::format("setresgid({})", spec.gid), errno);
        if (::setresuid(spec.uid, spec.uid, spec.uid) != 0)
            fail(fmt::format("setresuid({})", spec.uid), errno);
    }
    if (::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0)
        fail("clearing the ambient capabilities", errno);
    __user_cap_header_struct hdr{_LINUX_CAPABILITY_VERSION_3, 0};
    __user_cap_data_struct none[_LINUX_CAPABILITY_U32S_3] = {};
    if (::syscall(SYS_capset, &hdr, none) != 0) fail("capset (clearing every capability)", errno);
    if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) fail("PR_SET_NO_NEW_PRIVS", errno);

    // Check the result rather than trust it.
    if (spec.change_user) {
        uid_t r = 0, e = 0, s = 0;
        gid_t rg = 0, eg = 0, sg = 0;
        if (::getresuid(&r, &e, &s) != 0) fail("getresuid", errno);
        if (r != spec.uid || e != spec.uid || s != spec.uid) fail("checking the user ids", 0);
        if (::getresgid(&rg, &eg, &sg) != 0) fail("getresgid", errno);
        if (rg != spec.gid || eg != spec.gid || sg != spec.gid) fail("checking the group ids", 0);
        if (::setuid(0) == 0 || ::seteuid(0) == 0 || ::setgid(0) == 0)
            fail("checking that root cannot be regained (it could)", 0);
    }
    const auto caps = current_capabilities();
    if (caps.effective || caps.permitted || caps.inheritable)
        fail(fmt::format("checking the capabilities (effective {:#x}, permitted {:#x}, "
                         "inheritable {:#x} remain)",
                         caps.effective, caps.permitted, caps.inheritable),
             0);
    // prctl answers 1 (set), 0 (clear) or -1 (error).
    auto expect = [](int got, int want, const std::string& what) {
        if (got != want) fail(what, got < 0 ? errno : 0);
    };
    for (int c = 0; c < ncaps; ++c) {
        expect(::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_IS_SET, c, 0, 0), 0,
               fmt::format("checking ambient capability {}", c));
        if (can_drop_bounding)
            expect(::prctl(PR_CAPBSET_READ, c, 0, 0, 0), 0,
                   fmt::format("checking bounding-set capability {}", c));
    }
    expect(::prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0), 1, "checking no_new_privs");

    // A change of credentials resets the parent-death signal: arm it again, then make sure the
    // master did not exit before that (the signal would never come).
    if (spec.parent_death_signal != 0) {
        if (::prctl(PR_SET_PDEATHSIG, spec.parent_death_signal, 0, 0, 0) != 0)
            fail("PR_SET_PDEATHSIG", errno);
        if (::getppid() != spec.master_pid)
            throw PrivilegeError(fmt::format("the master (pid {}) exited while this worker started",
                                             spec.master_pid));
    }
    if (spec.seccomp) install_worker_seccomp();
}

void install_worker_seccomp() {
    // Everything a worker calls once it serves, found by tracing the e2e suites (strace -f) and
    // reading the event loop's code: no file opens, no new sockets (connect, bind, listen), no
    // process creation or exec, no ptrace, no bpf, no mount, no key or namespace calls.
    static constexpr const char* kAllowed[] = {
        // sockets it was given or accepts, pipes and eventfds it holds
        "accept", "accept4", "read", "readv", "write", "writev", "recvfrom", "recvmsg", "sendto",
        "sendmsg", "shutdown", "close", "getsockopt", "setsockopt", "getpeername", "getsockname",
        "fcntl", "dup", "dup3", "pipe2", "lseek", "fstat", "newfstatat",
        // the event loop
        "epoll_create1", "epoll_ctl", "epoll_wait", "epoll_pwait", "epoll_pwait2", "poll", "ppoll",
        "eventfd2", "timerfd_create", "timerfd_settime", "timerfd_gettime",
        // memory
        "brk", "mmap", "munmap", "mremap", "mprotect", "madvise",
        // time, randomness, waiting
        "clock_gettime", "clock_getres", "gettimeofday", "nanosleep", "clock_nanosleep",
        "getrandom", "futex", "sched_yield", "restart_syscall",
        // signals, identity, exit (abort() included)
        "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "sigaltstack", "tgkill", "getpid",
        "gettid", "getppid", "exit", "exit_group"};

    struct Release {
        void operator()(void* ctx) const { seccomp_release(ctx); }
    };
    std::unique_ptr<void, Release> ctx(seccomp_init(SCMP_ACT_KILL_PROCESS));
    if (!ctx) throw PrivilegeError("seccomp_init failed");
    auto check = [](int rc, const std::string& what) {
        if (rc < 0)
            throw PrivilegeError(fmt::format("seccomp: {} failed: {}", what, std::strerror(-rc)));
    };
    for (const char* name : kAllowed) {
        int nr = seccomp_syscall_resolve_name(name);
        if (nr == __NR_SCMP_ERROR) continue;  // not a system call on this architecture
        check(seccomp_rule_add(ctx.get(), SCMP_ACT_ALLOW, nr, 0), fmt::format("allowing {}", name));
    }
    // ioctl only for what Asio asks of a socket: non-blocking mode and bytes available.
    for (unsigned long req :
         {static_cast<unsigned long>(FIONBIO), static_cast<unsigned long>(FIONREAD)})
        check(seccomp_rule_add(ctx.get(), SCMP_ACT_ALLOW, SCMP_SYS(ioctl), 1,
                               SCMP_A1(SCMP_CMP_EQ, req)),
              "allowing ioctl");
    check(seccomp_load(ctx.get()), "loading the filter");
}

}  // namespace steerchat::master
