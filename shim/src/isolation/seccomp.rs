//! The seccomp allow-list of a Wasm guest's process: what the engines (Wasmtime, WasmEdge)
//! and their WASI implementations call, and nothing that reaches beyond the process, its
//! files and its sockets. A guest that escaped the engine finds no mount, namespace, ptrace,
//! BPF, keyring, `execve`, io_uring or raw/netlink socket to work with.
//!
//! It is loaded on top of the pod's own profile (libcontainer loads that one first; filters
//! stack, and the stricter answer wins), so `RuntimeDefault` and custom profiles still hold.
//! Denied calls fail with `EPERM`, as in containerd's default profile, so an engine that
//! probes for a feature falls back instead of dying. The node-wide switch
//! [`super::GUEST_SECCOMP_ENV`]`=off` turns this filter off; the pod's stays.

use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompArgBuilder,
    LinuxSeccompBuilder, LinuxSeccompOperator, LinuxSyscall, LinuxSyscallBuilder,
};

use super::IsolationError;

/// Allowed whatever their arguments: memory, files under the process's own root, time,
/// threads and futexes, signals to itself, and sockets once made.
const ALLOWED: &[&str] = &[
    // memory
    "brk",
    "mmap",
    "munmap",
    "mprotect",
    "mremap",
    "madvise",
    "msync",
    "mincore",
    "membarrier",
    "memfd_create",
    "mlock",
    "munlock",
    // descriptors and files (WASI's filesystem, within the container's mounts)
    "read",
    "write",
    "readv",
    "writev",
    "pread64",
    "pwrite64",
    "preadv",
    "pwritev",
    "preadv2",
    "pwritev2",
    "open",
    "openat",
    "openat2",
    "close",
    "close_range",
    "lseek",
    "fstat",
    "stat",
    "lstat",
    "newfstatat",
    "statx",
    "fstatfs",
    "statfs",
    "getdents",
    "getdents64",
    "fcntl",
    "dup",
    "dup2",
    "dup3",
    "access",
    "faccessat",
    "faccessat2",
    "readlink",
    "readlinkat",
    "mkdir",
    "mkdirat",
    "unlink",
    "unlinkat",
    "rmdir",
    "rename",
    "renameat",
    "renameat2",
    "link",
    "linkat",
    "symlink",
    "symlinkat",
    "fsync",
    "fdatasync",
    "sync_file_range",
    "fallocate",
    "ftruncate",
    "truncate",
    "fadvise64",
    "utimensat",
    "futimesat",
    "utime",
    "utimes",
    "flock",
    "getcwd",
    "chdir",
    "fchdir",
    "umask",
    "copy_file_range",
    "sendfile",
    "splice",
    "tee",
    // waiting
    "pipe",
    "pipe2",
    "eventfd",
    "eventfd2",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_wait",
    "epoll_pwait",
    "epoll_pwait2",
    "poll",
    "ppoll",
    "select",
    "pselect6",
    "timerfd_create",
    "timerfd_settime",
    "timerfd_gettime",
    // POSIX timers: the CPU deadline (`wasmrunner.dev/cpu-deadline`) is one on the process's
    // CPU clock. A timer signals only its own process (or a thread of it).
    "timer_create",
    "timer_settime",
    "timer_gettime",
    "timer_getoverrun",
    "timer_delete",
    // time
    "clock_gettime",
    "clock_getres",
    "gettimeofday",
    "time",
    "nanosleep",
    "clock_nanosleep",
    // threads
    "futex",
    "futex_waitv",
    "set_robust_list",
    "get_robust_list",
    "rseq",
    "set_tid_address",
    "sched_yield",
    "sched_getaffinity",
    "sched_getparam",
    "sched_getscheduler",
    "gettid",
    "getpid",
    "getppid",
    "arch_prctl",
    "exit",
    "exit_group",
    "restart_syscall",
    // signals (sent to itself only: see `kill` below)
    "rt_sigaction",
    "rt_sigprocmask",
    "rt_sigreturn",
    "rt_sigtimedwait",
    "rt_sigpending",
    "rt_sigsuspend",
    "sigaltstack",
    // identity and limits, read only
    "getuid",
    "geteuid",
    "getgid",
    "getegid",
    "getresuid",
    "getresgid",
    "getgroups",
    "uname",
    "getrlimit",
    "getrusage",
    "sysinfo",
    "getrandom",
    "getcpu",
    "getpgrp",
    "getpgid",
    "getsid",
    // sockets (WASI preview 2 TCP and UDP), once `socket` below allowed them
    "bind",
    "listen",
    "accept",
    "accept4",
    "connect",
    "getsockname",
    "getpeername",
    "getsockopt",
    "setsockopt",
    "sendto",
    "recvfrom",
    "sendmsg",
    "recvmsg",
    "sendmmsg",
    "recvmmsg",
    "shutdown",
];

/// `clone` flags that make a namespace: a thread is fine, a new user namespace (the one an
/// unprivileged process can still create) is not.
const NAMESPACE_FLAGS: u64 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWCGROUP) as u64;

/// `prctl` options the engines use: naming threads and memory areas, reading flags.
const PRCTL_OPTIONS: [u64; 4] = [
    libc::PR_SET_NAME as u64,
    libc::PR_GET_NAME as u64,
    libc::PR_GET_DUMPABLE as u64,
    0x5356_4d41, // PR_SET_VMA (glibc names its arenas)
];

/// The guest profile for a process whose pid (as it sees itself) is `pid`.
pub fn guest_profile(pid: u32) -> Result<LinuxSeccomp, IsolationError> {
    let own_pid = u64::from(pid);
    let mut syscalls = vec![
        allow(ALLOWED, Vec::new())?,
        // Threads only: `(flags & NAMESPACE_FLAGS) == 0`. libcontainer passes `value_two` as
        // the mask and `value` as the value it must equal.
        allow(
            &["clone"],
            vec![arg(
                0,
                0,
                Some(NAMESPACE_FLAGS),
                LinuxSeccompOperator::ScmpCmpMaskedEq,
            )?],
        )?,
        // Its flags are in memory, out of seccomp's sight: say it does not exist, and libc
        // falls back to `clone`.
        LinuxSyscallBuilder::default()
            .names(vec!["clone3".to_string()])
            .action(LinuxSeccompAction::ScmpActErrno)
            .errno_ret(libc::ENOSYS as u32)
            .build()
            .map_err(spec_error)?,
        allow(
            &["socket"],
            [libc::AF_INET, libc::AF_INET6]
                .into_iter()
                .map(|family| arg(0, family as u64, None, LinuxSeccompOperator::ScmpCmpEq))
                .collect::<Result<_, _>>()?,
        )?,
        allow(
            &["socketpair"],
            vec![arg(
                0,
                libc::AF_UNIX as u64,
                None,
                LinuxSeccompOperator::ScmpCmpEq,
            )?],
        )?,
        // Signals to itself (abort, a thread's wake-up), never to a neighbour in a shared
        // PID namespace.
        allow(
            &["kill", "tgkill"],
            vec![arg(0, own_pid, None, LinuxSeccompOperator::ScmpCmpEq)?],
        )?,
        // Terminal ioctls are fine, except pushing input into the terminal (TIOCSTI).
        allow(
            &["ioctl"],
            vec![arg(
                1,
                libc::TIOCSTI,
                None,
                LinuxSeccompOperator::ScmpCmpNe,
            )?],
        )?,
        allow(
            &["prctl"],
            PRCTL_OPTIONS
                .into_iter()
                .map(|option| arg(0, option, None, LinuxSeccompOperator::ScmpCmpEq))
                .collect::<Result<_, _>>()?,
        )?,
        // Reading a limit, not setting one: `prlimit64(pid, resource, NULL, old)`.
        allow(
            &["prlimit64"],
            vec![arg(2, 0, None, LinuxSeccompOperator::ScmpCmpEq)?],
        )?,
    ];
    syscalls.shrink_to_fit();
    LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActErrno)
        .default_errno_ret(libc::EPERM as u32)
        // Only the native ABI: a call through the 32-bit one meets libseccomp's
        // bad-architecture action, which kills the process.
        .architectures(vec![Arch::ScmpArchNative])
        .syscalls(syscalls)
        .build()
        .map_err(spec_error)
}

/// Loads [`guest_profile`] into the calling thread (and every thread it starts later).
/// The process must already have `no_new_privs` (the guest spec sets it).
pub fn apply_guest_profile() -> Result<(), IsolationError> {
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() } as u32;
    let profile = guest_profile(pid)?;
    libcontainer::seccomp::initialize_seccomp(&profile)
        .map(|_notify_fd| ())
        .map_err(|e| IsolationError::Seccomp(e.to_string()))
}

fn allow(names: &[&str], args: Vec<LinuxSeccompArg>) -> Result<LinuxSyscall, IsolationError> {
    let builder = LinuxSyscallBuilder::default()
        .names(
            names
                .iter()
                .map(|name| name.to_string())
                .collect::<Vec<_>>(),
        )
        .action(LinuxSeccompAction::ScmpActAllow);
    let builder = if args.is_empty() {
        builder
    } else {
        builder.args(args)
    };
    builder.build().map_err(spec_error)
}

fn arg(
    index: usize,
    value: u64,
    value_two: Option<u64>,
    op: LinuxSeccompOperator,
) -> Result<LinuxSeccompArg, IsolationError> {
    let builder = LinuxSeccompArgBuilder::default()
        .index(index)
        .value(value)
        .op(op);
    let builder = match value_two {
        Some(two) => builder.value_two(two),
        None => builder,
    };
    builder.build().map_err(spec_error)
}

fn spec_error(err: oci_spec::OciSpecError) -> IsolationError {
    IsolationError::Seccomp(err.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errno_of(result: libc::c_long) -> i32 {
        if result < 0 {
            std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
        } else {
            0
        }
    }

    /// What a thread under the filter gets from each call: 0 for success, else the errno.
    /// Filters and `no_new_privs` belong to a thread and its children, so the test process
    /// itself is untouched.
    fn under_the_filter() -> Vec<(&'static str, i32)> {
        std::thread::spawn(|| {
            // SAFETY: prctl(PR_SET_NO_NEW_PRIVS) only sets a flag of this thread.
            unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
            apply_guest_profile().expect("the filter loads");
            let mut seen = Vec::new();
            // SAFETY (every call below): plain syscalls with scalar or null arguments, or
            // pointers to live locals; each result is only inspected.
            unsafe {
                seen.push((
                    "unshare(NEWUSER)",
                    errno_of(libc::unshare(libc::CLONE_NEWUSER) as _),
                ));
                let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
                seen.push(("socket(INET)", errno_of(fd as _)));
                if fd >= 0 {
                    libc::close(fd);
                }
                seen.push((
                    "socket(NETLINK)",
                    errno_of(libc::socket(libc::AF_NETLINK, libc::SOCK_RAW, 0) as _),
                ));
                seen.push((
                    "socket(UNIX)",
                    errno_of(libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0) as _),
                ));
                seen.push((
                    "mount",
                    errno_of(libc::mount(
                        c"none".as_ptr(),
                        c"/".as_ptr(),
                        c"tmpfs".as_ptr(),
                        0,
                        std::ptr::null(),
                    ) as _),
                ));
                seen.push((
                    "ptrace",
                    errno_of(libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0)),
                ));
                seen.push(("kill(1, 0)", errno_of(libc::kill(1, 0) as _)));
                seen.push((
                    "kill(self, 0)",
                    errno_of(libc::kill(libc::getpid(), 0) as _),
                ));
                let argv = [c"/bin/true".as_ptr(), std::ptr::null()];
                let envp = [std::ptr::null()];
                seen.push((
                    "execve",
                    errno_of(libc::execve(argv[0], argv.as_ptr(), envp.as_ptr()) as _),
                ));
            }
            let thread = std::thread::spawn(|| 7).join().expect("a thread starts");
            seen.push(("thread", if thread == 7 { 0 } else { -1 }));
            seen
        })
        .join()
        .expect("the filtered thread ran")
    }

    #[test]
    fn the_guest_filter_keeps_threads_and_sockets_and_denies_the_rest() {
        let seen = under_the_filter();
        let expected = [
            ("unshare(NEWUSER)", libc::EPERM),
            ("socket(INET)", 0),
            ("socket(NETLINK)", libc::EPERM),
            ("socket(UNIX)", libc::EPERM),
            ("mount", libc::EPERM),
            ("ptrace", libc::EPERM),
            ("kill(1, 0)", libc::EPERM),
            ("kill(self, 0)", 0),
            ("execve", libc::EPERM),
            ("thread", 0),
        ];
        assert_eq!(seen, expected);
    }

    #[test]
    fn every_allowed_name_is_a_syscall_here() {
        for name in ALLOWED {
            assert!(
                libseccomp_knows(name),
                "{name} is not a syscall libseccomp knows on this architecture"
            );
        }
    }

    /// libcontainer skips (with a warning) a name libseccomp cannot resolve: resolve each
    /// the same way, so that a misspelt name fails here rather than being silently dropped.
    fn libseccomp_knows(name: &str) -> bool {
        let c_name = std::ffi::CString::new(name).expect("name");
        // SAFETY: seccomp_syscall_resolve_name reads a NUL-terminated string.
        unsafe { seccomp_syscall_resolve_name(c_name.as_ptr()) >= 0 }
    }

    unsafe extern "C" {
        fn seccomp_syscall_resolve_name(name: *const libc::c_char) -> libc::c_int;
    }
}
