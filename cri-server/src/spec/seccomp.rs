//! Seccomp: crius's `RuntimeDefault` profile and `Localhost` profile files.
//!
//! Both are read in the Docker/containerd profile format (`defaultAction`, `architectures`
//! or `archMap`, `syscalls` with `names`, `action`, `args`, and `includes`/`excludes`
//! conditions on capabilities, architectures and kernel version), then reduced to the OCI
//! `linux.seccomp` object for one container: conditions are evaluated against the
//! container's capability set and the host, as Docker and containerd do.
//!
//! The default profile is written for crius but follows the intent of the well-known
//! Docker/containerd default: an allow-list whose default action is `EPERM`.
//! * Allowed for everyone: file and directory I/O, polling, memory management, signals,
//!   timers and clocks (reading), process and thread life cycle, credentials within the
//!   process, scheduling, sockets, System V and POSIX IPC, `ptrace` (kernel ≥ 4.8, where it
//!   can no longer bypass seccomp), landlock, `personality` with the harmless personas only,
//!   and `clone` without namespace flags.
//! * `clone3` answers `ENOSYS` instead of `EPERM` unless `CAP_SYS_ADMIN`: its flags live in
//!   memory and cannot be filtered, and `ENOSYS` makes libc fall back to `clone`.
//! * Allowed only with the matching capability (the kernel would check it too; the profile
//!   adds depth): `CAP_SYS_ADMIN` for mount and namespace calls (`mount`, `umount2`,
//!   `unshare`, `setns`, `clone` with namespace flags, the new mount API, `pivot_root`,
//!   `sethostname`, `quotactl`, `fanotify_init`, `name_to_handle_at`, also `bpf` and
//!   `perf_event_open`); `CAP_BPF`, `CAP_PERFMON`, `CAP_SYS_BOOT` (`reboot`),
//!   `CAP_SYS_CHROOT` (`chroot`), `CAP_SYS_MODULE` (module loading), `CAP_SYS_PACCT`
//!   (`acct`), `CAP_SYS_PTRACE` (`kcmp`, `process_vm_*`, `pidfd_getfd`, `process_madvise`),
//!   `CAP_SYS_RAWIO` (`iopl`, `ioperm`), `CAP_SYS_TIME` (setting clocks), `CAP_SYS_NICE`
//!   (NUMA policy), `CAP_SYS_TTY_CONFIG` (`vhangup`), `CAP_SYSLOG` (`syslog`),
//!   `CAP_DAC_READ_SEARCH` (`open_by_handle_at`).
//! * Never allowed: the kernel keyring (`add_key`, `keyctl`, `request_key`: not namespaced),
//!   `kexec_*`, `swapon`/`swapoff`, `userfaultfd`, `io_uring_*` (a large attack surface that
//!   seccomp cannot see into), obsolete calls (`uselib`, `ustat`, `sysfs`, `_sysctl`, `vm86`,
//!   `nfsservctl`, `lookup_dcookie`, …) and `modify_ldt`.

use std::collections::BTreeSet;

use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompArgBuilder,
    LinuxSeccompBuilder, LinuxSeccompFilterFlag, LinuxSeccompOperator, LinuxSyscall,
    LinuxSyscallBuilder,
};
use serde::Deserialize;

use super::SpecError;

/// A profile in the Docker/containerd file format.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Profile {
    /// Action for syscalls no rule matches.
    pub default_action: String,
    /// errno for an `SCMP_ACT_ERRNO` default action.
    #[serde(default)]
    pub default_errno_ret: Option<u32>,
    /// Architectures (`SCMP_ARCH_X86_64`, …).
    #[serde(default)]
    pub architectures: Vec<String>,
    /// Native architecture → its sub-architectures, used when `architectures` is empty.
    #[serde(default)]
    pub arch_map: Vec<ArchMap>,
    /// Filter flags (`SECCOMP_FILTER_FLAG_LOG`, …).
    #[serde(default)]
    pub flags: Vec<String>,
    /// Rules.
    #[serde(default)]
    pub syscalls: Vec<Rule>,
}

/// An `archMap` entry.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArchMap {
    /// The native architecture.
    pub architecture: String,
    /// Architectures its processes may also use.
    #[serde(default)]
    pub sub_architectures: Vec<String>,
}

/// One rule of a profile.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    /// Syscall names.
    #[serde(default)]
    pub names: Vec<String>,
    /// The older single-name spelling.
    #[serde(default)]
    pub name: Option<String>,
    /// `SCMP_ACT_ALLOW`, `SCMP_ACT_ERRNO`, …
    pub action: String,
    /// errno for `SCMP_ACT_ERRNO`.
    #[serde(default)]
    pub errno_ret: Option<u32>,
    /// Argument conditions, all of which must hold.
    #[serde(default)]
    pub args: Vec<Arg>,
    /// The rule applies only when all of these hold.
    #[serde(default)]
    pub includes: Filter,
    /// The rule does not apply when any of these holds.
    #[serde(default)]
    pub excludes: Filter,
}

/// An argument condition.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Arg {
    /// Argument index.
    pub index: usize,
    /// Value compared.
    pub value: u64,
    /// Second value (the mask of `SCMP_CMP_MASKED_EQ`).
    #[serde(default)]
    pub value_two: u64,
    /// `SCMP_CMP_EQ`, `SCMP_CMP_MASKED_EQ`, …
    pub op: String,
}

/// Conditions of a rule.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Filter {
    /// Capabilities (`CAP_SYS_ADMIN`).
    #[serde(default)]
    pub caps: Vec<String>,
    /// Go architecture names (`amd64`, `arm64`).
    #[serde(default)]
    pub arches: Vec<String>,
    /// Minimum kernel version (`4.8`).
    #[serde(default)]
    pub min_kernel: Option<String>,
}

/// What the conditions of a profile are evaluated against.
#[derive(Debug, Clone)]
pub struct Context<'a> {
    /// The container's effective capabilities (canonical `CAP_…` names).
    pub caps: &'a BTreeSet<String>,
    /// The host's architecture, as Rust names it (`x86_64`, `aarch64`).
    pub arch: &'a str,
    /// The host kernel's `(major, minor)`; `None` when unknown (then no rule is dropped for
    /// its `minKernel`).
    pub kernel: Option<(u32, u32)>,
}

impl Context<'_> {
    fn go_arch(&self) -> &str {
        match self.arch {
            "x86_64" => "amd64",
            "x86" => "386",
            "aarch64" => "arm64",
            "arm" => "arm",
            "riscv64" => "riscv64",
            "powerpc64" => "ppc64le",
            "s390x" => "s390x",
            other => other,
        }
    }

    fn native_scmp_arch(&self) -> &'static str {
        match self.arch {
            "x86_64" => "SCMP_ARCH_X86_64",
            "x86" => "SCMP_ARCH_X86",
            "aarch64" => "SCMP_ARCH_AARCH64",
            "arm" => "SCMP_ARCH_ARM",
            "riscv64" => "SCMP_ARCH_RISCV64",
            "powerpc64" => "SCMP_ARCH_PPC64LE",
            "s390x" => "SCMP_ARCH_S390X",
            _ => "",
        }
    }
}

/// The host kernel version from `/proc/sys/kernel/osrelease`.
pub fn host_kernel() -> Option<(u32, u32)> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
    parse_kernel(&release)
}

fn parse_kernel(s: &str) -> Option<(u32, u32)> {
    let mut parts = s.trim().split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next().and_then(|m| m.parse().ok()).unwrap_or(0);
    Some((major, minor))
}

impl Filter {
    fn is_empty(&self) -> bool {
        self.caps.is_empty() && self.arches.is_empty() && self.min_kernel.is_none()
    }

    /// True when every condition holds (for `includes`).
    fn all_hold(&self, ctx: &Context) -> bool {
        self.caps.iter().all(|c| ctx.caps.contains(c))
            && (self.arches.is_empty() || self.arches.iter().any(|a| a == ctx.go_arch()))
            && self
                .min_kernel
                .as_deref()
                .is_none_or(|k| kernel_at_least(ctx, k))
    }

    /// True when any condition holds (for `excludes`).
    fn any_holds(&self, ctx: &Context) -> bool {
        self.caps.iter().any(|c| ctx.caps.contains(c))
            || self.arches.iter().any(|a| a == ctx.go_arch())
            || self
                .min_kernel
                .as_deref()
                .is_some_and(|k| kernel_at_least(ctx, k))
    }
}

fn kernel_at_least(ctx: &Context, want: &str) -> bool {
    match (ctx.kernel, parse_kernel(want)) {
        (Some(have), Some(want)) => have >= want,
        _ => true,
    }
}

/// Reads a value of an OCI enum from its JSON spelling, naming `what` in the error.
fn oci_enum<T: serde::de::DeserializeOwned>(
    s: &str,
    what: &str,
    src: &str,
) -> Result<T, SpecError> {
    serde_json::from_value(serde_json::Value::String(s.to_string())).map_err(|_| {
        SpecError::InvalidArgument(format!("seccomp profile {src}: unknown {what} {s:?}"))
    })
}

impl Profile {
    /// Parses a profile file's contents; `src` names it in errors.
    pub fn parse(bytes: &[u8], src: &str) -> Result<Profile, SpecError> {
        serde_json::from_slice(bytes).map_err(|e| {
            SpecError::InvalidArgument(format!("seccomp profile {src} is not valid JSON: {e}"))
        })
    }

    /// The OCI seccomp object of this profile for one container; `src` names the profile in
    /// errors.
    pub fn to_oci(&self, ctx: &Context, src: &str) -> Result<LinuxSeccomp, SpecError> {
        let default_action: LinuxSeccompAction = oci_enum(&self.default_action, "action", src)?;
        let mut arches: Vec<String> = self.architectures.clone();
        if arches.is_empty() {
            let native = ctx.native_scmp_arch();
            if let Some(m) = self.arch_map.iter().find(|m| m.architecture == native) {
                arches.push(m.architecture.clone());
                arches.extend(m.sub_architectures.iter().cloned());
            }
        }
        let architectures = arches
            .iter()
            .map(|a| oci_enum::<Arch>(a, "architecture", src))
            .collect::<Result<Vec<_>, _>>()?;
        let flags = self
            .flags
            .iter()
            .map(|f| oci_enum::<LinuxSeccompFilterFlag>(f, "flag", src))
            .collect::<Result<Vec<_>, _>>()?;
        let mut syscalls = Vec::new();
        for rule in &self.syscalls {
            if !rule.includes.is_empty() && !rule.includes.all_hold(ctx) {
                continue;
            }
            if !rule.excludes.is_empty() && rule.excludes.any_holds(ctx) {
                continue;
            }
            let mut names = rule.names.clone();
            names.extend(rule.name.iter().cloned());
            if names.is_empty() {
                return Err(SpecError::InvalidArgument(format!(
                    "seccomp profile {src}: a rule names no syscall"
                )));
            }
            let action: LinuxSeccompAction = oci_enum(&rule.action, "action", src)?;
            let args = rule
                .args
                .iter()
                .map(|a| arg(a, src))
                .collect::<Result<Vec<_>, _>>()?;
            let mut b = LinuxSyscallBuilder::default().names(names).action(action);
            if let Some(e) = rule.errno_ret {
                b = b.errno_ret(e);
            }
            if !args.is_empty() {
                b = b.args(args);
            }
            syscalls.push(b.build()?);
        }
        let mut b = LinuxSeccompBuilder::default()
            .default_action(default_action)
            .architectures(architectures)
            .syscalls(syscalls);
        if let Some(e) = self.default_errno_ret {
            b = b.default_errno_ret(e);
        }
        if !flags.is_empty() {
            b = b.flags(flags);
        }
        Ok(b.build()?)
    }
}

fn arg(a: &Arg, src: &str) -> Result<LinuxSeccompArg, SpecError> {
    let op: LinuxSeccompOperator = oci_enum(&a.op, "operator", src)?;
    let mut b = LinuxSeccompArgBuilder::default()
        .index(a.index)
        .value(a.value)
        .op(op);
    if a.value_two != 0 {
        b = b.value_two(a.value_two);
    }
    Ok(b.build()?)
}

/// Syscalls every container may make.
#[rustfmt::skip]
const ALLOWED: &[&str] = &[
    // Files, directories, extended attributes, file descriptors.
    "access", "chdir", "chmod", "chown", "chown32", "close", "close_range", "copy_file_range",
    "creat", "dup", "dup2", "dup3", "faccessat", "faccessat2", "fadvise64", "fadvise64_64",
    "fallocate", "fanotify_mark", "fchdir", "fchmod", "fchmodat", "fchmodat2", "fchown",
    "fchown32", "fchownat", "fcntl", "fcntl64", "fdatasync", "fgetxattr", "flistxattr", "flock",
    "fremovexattr", "fsetxattr", "fstat", "fstat64", "fstatat64", "fstatfs", "fstatfs64", "fsync",
    "ftruncate", "ftruncate64", "futimesat", "getcwd", "getdents", "getdents64", "getxattr",
    "getxattrat", "inotify_add_watch", "inotify_init", "inotify_init1", "inotify_rm_watch",
    "lchown", "lchown32", "lgetxattr", "link", "linkat", "listxattr", "listxattrat", "llistxattr",
    "lremovexattr", "lseek", "_llseek", "lsetxattr", "lstat", "lstat64", "mkdir", "mkdirat",
    "mknod", "mknodat", "newfstatat", "open", "openat", "openat2", "pipe", "pipe2", "pread64",
    "preadv", "preadv2", "pwrite64", "pwritev", "pwritev2", "read", "readahead", "readlink",
    "readlinkat", "readv", "removexattr", "removexattrat", "rename", "renameat", "renameat2",
    "rmdir", "sendfile", "sendfile64", "setxattr", "setxattrat", "splice", "stat", "stat64",
    "statfs", "statfs64", "statx", "symlink", "symlinkat", "sync", "sync_file_range",
    "sync_file_range2", "arm_sync_file_range", "arm_fadvise64_64", "syncfs", "tee", "truncate",
    "truncate64", "umask", "unlink", "unlinkat", "utime", "utimensat", "utimensat_time64",
    "utimes", "vmsplice", "write", "writev", "ioctl", "cachestat",
    // Waiting for events.
    "epoll_create", "epoll_create1", "epoll_ctl", "epoll_ctl_old", "epoll_pwait", "epoll_pwait2",
    "epoll_wait", "epoll_wait_old", "eventfd", "eventfd2", "poll", "ppoll", "ppoll_time64",
    "pselect6", "pselect6_time64", "select", "_newselect", "io_cancel", "io_destroy",
    "io_getevents", "io_pgetevents", "io_pgetevents_time64", "io_setup", "io_submit",
    // Memory.
    "brk", "madvise", "membarrier", "memfd_create", "memfd_secret", "mincore", "mlock", "mlock2",
    "mlockall", "mmap", "mmap2", "mprotect", "mremap", "msync", "munlock", "munlockall", "munmap",
    "pkey_alloc", "pkey_free", "pkey_mprotect", "remap_file_pages", "futex", "futex_time64",
    "futex_waitv", "futex_wake", "futex_wait", "futex_requeue", "get_robust_list",
    "set_robust_list", "rseq", "map_shadow_stack", "mseal",
    // Signals.
    "alarm", "getitimer", "kill", "pause", "pidfd_open", "pidfd_send_signal", "rt_sigaction",
    "rt_sigpending", "rt_sigprocmask", "rt_sigqueueinfo", "rt_sigreturn", "rt_sigsuspend",
    "rt_sigtimedwait", "rt_sigtimedwait_time64", "rt_tgsigqueueinfo", "setitimer", "sigaction",
    "sigaltstack", "signal", "signalfd", "signalfd4", "sigpending", "sigprocmask", "sigreturn",
    "sigsuspend", "tgkill", "tkill", "restart_syscall",
    // Clocks and timers (reading and sleeping).
    "clock_getres", "clock_getres_time64", "clock_gettime", "clock_gettime64", "clock_nanosleep",
    "clock_nanosleep_time64", "gettimeofday", "nanosleep", "time", "timer_create", "timer_delete",
    "timer_getoverrun", "timer_gettime", "timer_gettime64", "timer_settime", "timer_settime64",
    "timerfd_create", "timerfd_gettime", "timerfd_gettime64", "timerfd_settime",
    "timerfd_settime64", "times", "adjtimex",
    // Processes, threads, credentials, scheduling, limits.
    "arch_prctl", "capget", "capset", "execve", "execveat", "exit", "exit_group", "fork", "vfork",
    "get_thread_area", "set_thread_area", "set_tid_address", "getcpu", "getegid", "getegid32",
    "geteuid", "geteuid32", "getgid", "getgid32", "getgroups", "getgroups32", "getpgid",
    "getpgrp", "getpid", "getppid", "getpriority", "getresgid", "getresgid32", "getresuid",
    "getresuid32", "getrlimit", "ugetrlimit", "getrusage", "getsid", "gettid", "getuid",
    "getuid32", "ioprio_get", "ioprio_set", "prctl", "prlimit64", "sched_get_priority_max",
    "sched_get_priority_min", "sched_getaffinity", "sched_getattr", "sched_getparam",
    "sched_getscheduler", "sched_rr_get_interval", "sched_rr_get_interval_time64",
    "sched_setaffinity", "sched_setattr", "sched_setparam", "sched_setscheduler", "sched_yield",
    "seccomp", "setfsgid", "setfsgid32", "setfsuid", "setfsuid32", "setgid", "setgid32",
    "setgroups", "setgroups32", "setpgid", "setpriority", "setregid", "setregid32", "setresgid",
    "setresgid32", "setresuid", "setresuid32", "setreuid", "setreuid32", "setrlimit", "setsid",
    "setuid", "setuid32", "sysinfo", "uname", "wait4", "waitid", "waitpid", "getrandom",
    "landlock_add_rule", "landlock_create_ruleset", "landlock_restrict_self", "process_mrelease",
    "breakpoint", "cacheflush", "set_tls", "riscv_flush_icache", "riscv_hwprobe",
    // Sockets.
    "accept", "accept4", "bind", "connect", "getpeername", "getsockname", "getsockopt", "listen",
    "recv", "recvfrom", "recvmmsg", "recvmmsg_time64", "recvmsg", "send", "sendmmsg", "sendmsg",
    "sendto", "setsockopt", "shutdown", "socket", "socketcall", "socketpair",
    // System V and POSIX IPC (the IPC namespace is the pod's).
    "ipc", "mq_getsetattr", "mq_notify", "mq_open", "mq_timedreceive", "mq_timedreceive_time64",
    "mq_timedsend", "mq_timedsend_time64", "mq_unlink", "msgctl", "msgget", "msgrcv", "msgsnd",
    "semctl", "semget", "semop", "semtimedop", "semtimedop_time64", "shmat", "shmctl", "shmdt",
    "shmget",
];

/// Syscalls allowed only to a container holding the capability.
const BY_CAPABILITY: &[(&str, &[&str])] = &[
    (
        "CAP_SYS_ADMIN",
        &[
            "bpf",
            "clone",
            "clone3",
            "fanotify_init",
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "mount",
            "mount_setattr",
            "move_mount",
            "name_to_handle_at",
            "open_tree",
            "open_tree_attr",
            "perf_event_open",
            "pivot_root",
            "quotactl",
            "quotactl_fd",
            "setdomainname",
            "sethostname",
            "setns",
            "syslog",
            "umount",
            "umount2",
            "unshare",
        ],
    ),
    ("CAP_BPF", &["bpf"]),
    ("CAP_PERFMON", &["perf_event_open"]),
    ("CAP_SYS_BOOT", &["reboot"]),
    ("CAP_SYS_CHROOT", &["chroot"]),
    (
        "CAP_SYS_MODULE",
        &["delete_module", "init_module", "finit_module"],
    ),
    ("CAP_SYS_PACCT", &["acct"]),
    (
        "CAP_SYS_PTRACE",
        &[
            "kcmp",
            "pidfd_getfd",
            "process_madvise",
            "process_vm_readv",
            "process_vm_writev",
        ],
    ),
    ("CAP_SYS_RAWIO", &["iopl", "ioperm"]),
    (
        "CAP_SYS_TIME",
        &[
            "settimeofday",
            "stime",
            "clock_settime",
            "clock_settime64",
            "clock_adjtime",
            "clock_adjtime64",
        ],
    ),
    (
        "CAP_SYS_NICE",
        &[
            "get_mempolicy",
            "mbind",
            "set_mempolicy",
            "set_mempolicy_home_node",
        ],
    ),
    ("CAP_SYS_TTY_CONFIG", &["vhangup"]),
    ("CAP_SYSLOG", &["syslog"]),
    ("CAP_DAC_READ_SEARCH", &["open_by_handle_at"]),
];

/// `CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER |
/// CLONE_NEWPID | CLONE_NEWNET`: `clone` without any of them is allowed to everyone.
const CLONE_NAMESPACE_FLAGS: u64 = 0x7E02_0000;

/// `ENOSYS`, so that libc falls back from `clone3` to `clone`.
const ENOSYS: u32 = 38;

/// The personas `personality` may switch to: `PER_LINUX`, `PER_LINUX32`, `UNAME26`,
/// `PER_LINUX32|UNAME26`, and the query value.
const PERSONAS: &[u64] = &[0x0, 0x8, 0x2_0000, 0x2_0008, 0xffff_ffff];

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn allow(list: &[&str]) -> Rule {
    Rule {
        names: names(list),
        action: "SCMP_ACT_ALLOW".into(),
        ..Rule::default()
    }
}

/// crius's `RuntimeDefault` profile (see the module documentation).
pub fn default_profile() -> Profile {
    let mut syscalls = vec![allow(ALLOWED)];
    syscalls.push(Rule {
        includes: Filter {
            min_kernel: Some("4.8".into()),
            ..Filter::default()
        },
        ..allow(&["ptrace"])
    });
    for persona in PERSONAS {
        syscalls.push(Rule {
            args: vec![Arg {
                index: 0,
                value: *persona,
                value_two: 0,
                op: "SCMP_CMP_EQ".into(),
            }],
            ..allow(&["personality"])
        });
    }
    syscalls.push(Rule {
        args: vec![Arg {
            index: 0,
            value: CLONE_NAMESPACE_FLAGS,
            value_two: 0,
            op: "SCMP_CMP_MASKED_EQ".into(),
        }],
        excludes: Filter {
            caps: vec!["CAP_SYS_ADMIN".into()],
            ..Filter::default()
        },
        ..allow(&["clone"])
    });
    syscalls.push(Rule {
        names: names(&["clone3"]),
        action: "SCMP_ACT_ERRNO".into(),
        errno_ret: Some(ENOSYS),
        excludes: Filter {
            caps: vec!["CAP_SYS_ADMIN".into()],
            ..Filter::default()
        },
        ..Rule::default()
    });
    for (cap, list) in BY_CAPABILITY {
        syscalls.push(Rule {
            includes: Filter {
                caps: vec![cap.to_string()],
                ..Filter::default()
            },
            ..allow(list)
        });
    }
    let arch_map = |a: &str, subs: &[&str]| ArchMap {
        architecture: a.into(),
        sub_architectures: names(subs),
    };
    Profile {
        default_action: "SCMP_ACT_ERRNO".into(),
        default_errno_ret: Some(1),
        architectures: Vec::new(),
        arch_map: vec![
            arch_map("SCMP_ARCH_X86_64", &["SCMP_ARCH_X86", "SCMP_ARCH_X32"]),
            arch_map("SCMP_ARCH_AARCH64", &["SCMP_ARCH_ARM"]),
            arch_map("SCMP_ARCH_RISCV64", &[]),
            arch_map("SCMP_ARCH_S390X", &["SCMP_ARCH_S390"]),
            arch_map("SCMP_ARCH_PPC64LE", &[]),
        ],
        flags: Vec::new(),
        syscalls,
    }
}

/// The seccomp object for a `Localhost` profile file at `path`.
pub fn localhost(path: &str, ctx: &Context) -> Result<LinuxSeccomp, SpecError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        // A bad profile path is bad input (as containerd answers), not a missing object.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(SpecError::InvalidArgument(format!(
                "seccomp profile {path} does not exist"
            )))
        }
        Err(e) => {
            return Err(SpecError::InvalidArgument(format!(
                "seccomp profile {path} cannot be read: {e}"
            )))
        }
    };
    Profile::parse(&bytes, path)?.to_oci(ctx, path)
}

/// Whether a built seccomp object allows `name` without conditions (for tests and `crius
/// check`).
pub fn allows_unconditionally(seccomp: &LinuxSeccomp, name: &str) -> bool {
    seccomp.syscalls().iter().flatten().any(|s: &LinuxSyscall| {
        s.action() == LinuxSeccompAction::ScmpActAllow
            && s.args().as_ref().is_none_or(|a| a.is_empty())
            && s.names().iter().any(|n| n == name)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(caps: &BTreeSet<String>) -> Context<'_> {
        Context {
            caps,
            arch: "x86_64",
            kernel: Some((6, 1)),
        }
    }

    fn default_caps() -> BTreeSet<String> {
        super::super::caps::DEFAULT
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    #[test]
    fn default_profile_denies_by_default_and_allows_the_basics() {
        let caps = default_caps();
        let s = default_profile()
            .to_oci(&ctx(&caps), "default")
            .expect("builds");
        assert_eq!(s.default_action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(s.default_errno_ret(), Some(1));
        assert_eq!(
            s.architectures().as_deref(),
            Some(&[Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32][..])
        );
        for ok in [
            "read", "openat", "execve", "socket", "futex", "chroot", "ptrace",
        ] {
            assert!(allows_unconditionally(&s, ok), "{ok} must be allowed");
        }
        for no in [
            "mount",
            "unshare",
            "setns",
            "keyctl",
            "kexec_load",
            "bpf",
            "reboot",
            "init_module",
            "io_uring_setup",
            "userfaultfd",
            "clone",
            "personality",
        ] {
            assert!(!allows_unconditionally(&s, no), "{no} must not be allowed");
        }
        // clone is allowed only without namespace flags, clone3 answers ENOSYS.
        let clone = s
            .syscalls()
            .iter()
            .flatten()
            .find(|r| r.names() == &["clone"])
            .expect("clone rule");
        let a = &clone.args().as_ref().expect("args")[0];
        assert_eq!(a.op(), LinuxSeccompOperator::ScmpCmpMaskedEq);
        assert_eq!(a.value(), CLONE_NAMESPACE_FLAGS);
        let clone3 = s
            .syscalls()
            .iter()
            .flatten()
            .find(|r| r.names() == &["clone3"])
            .expect("clone3 rule");
        assert_eq!(clone3.errno_ret(), Some(ENOSYS));
    }

    #[test]
    fn capabilities_unlock_their_syscalls() {
        let mut caps = default_caps();
        caps.insert("CAP_SYS_ADMIN".into());
        caps.insert("CAP_SYS_TIME".into());
        let s = default_profile()
            .to_oci(&ctx(&caps), "default")
            .expect("builds");
        for ok in [
            "mount",
            "unshare",
            "setns",
            "clone",
            "clone3",
            "clock_settime",
        ] {
            assert!(allows_unconditionally(&s, ok), "{ok} with the capability");
        }
        assert!(!s
            .syscalls()
            .iter()
            .flatten()
            .any(|r| r.action() == LinuxSeccompAction::ScmpActErrno));
        caps.remove("CAP_SYS_CHROOT");
        let s = default_profile()
            .to_oci(&ctx(&caps), "default")
            .expect("builds");
        assert!(!allows_unconditionally(&s, "chroot"));
    }

    #[test]
    fn conditions_on_arch_and_kernel() {
        let caps = default_caps();
        let old = Context {
            caps: &caps,
            arch: "aarch64",
            kernel: Some((4, 4)),
        };
        let s = default_profile().to_oci(&old, "default").expect("builds");
        assert!(!allows_unconditionally(&s, "ptrace"));
        assert_eq!(
            s.architectures().as_deref(),
            Some(&[Arch::ScmpArchAarch64, Arch::ScmpArchArm][..])
        );
        let p = Profile::parse(
            br#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
                {"names":["a"],"action":"SCMP_ACT_ERRNO","includes":{"arches":["arm64"]}},
                {"name":"b","action":"SCMP_ACT_KILL","excludes":{"arches":["amd64"]}}]}"#,
            "t",
        )
        .expect("parses");
        let s = p.to_oci(&ctx(&caps), "t").expect("builds");
        assert!(s.syscalls().as_ref().is_none_or(|v| v.is_empty()));
        let s = p.to_oci(&old, "t").expect("builds");
        let names: Vec<_> = s
            .syscalls()
            .iter()
            .flatten()
            .map(|r| r.names()[0].clone())
            .collect();
        assert_eq!(names, ["a", "b"]);
    }

    #[test]
    fn bad_profiles_name_the_source() {
        let caps = default_caps();
        let e = Profile::parse(b"{", "/p.json").expect_err("invalid");
        assert!(e.to_string().contains("/p.json"));
        let p = Profile::parse(br#"{"defaultAction":"SCMP_ACT_NOPE"}"#, "/p.json").expect("json");
        let e = p.to_oci(&ctx(&caps), "/p.json").expect_err("bad action");
        assert!(e.to_string().contains("SCMP_ACT_NOPE"), "{e}");
        match localhost("/nonexistent/crius/p.json", &ctx(&caps)) {
            Err(SpecError::InvalidArgument(m)) => assert!(m.contains("/nonexistent/crius/p.json")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn kernel_versions_parse() {
        assert_eq!(parse_kernel("6.18.44-fc-v669\n"), Some((6, 18)));
        assert_eq!(parse_kernel("4.8"), Some((4, 8)));
        assert_eq!(parse_kernel("5"), Some((5, 0)));
        assert_eq!(parse_kernel("x"), None);
    }
}
