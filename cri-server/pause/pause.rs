//! crius's built-in pause: the first process of every pod sandbox.
//!
//! It holds the pod's namespaces open and, as PID 1 of a shared pid namespace, reaps the
//! zombies that orphaned processes leave behind. PID 1 gets no default signal actions from
//! the kernel, so SIGTERM would be ignored unless we act on it: we take SIGINT, SIGTERM and
//! SIGCHLD synchronously with `rt_sigtimedwait` and need no handlers at all.
//!
//! Built by `build.rs` with `$RUSTC` into a tiny static ELF with no libc: x86_64 Linux only,
//! through raw syscalls. Not compiled by cargo as a crate target.

#![no_std]
#![no_main]

use core::arch::{asm, global_asm};

const SYS_RT_SIGPROCMASK: usize = 14;
const SYS_WAIT4: usize = 61;
const SYS_RT_SIGTIMEDWAIT: usize = 128;
const SYS_EXIT_GROUP: usize = 231;

const SIG_BLOCK: usize = 0;
const SIGINT: usize = 2;
const SIGTERM: usize = 15;
const SIGCHLD: usize = 17;
const WNOHANG: usize = 1;
/// The kernel's sigset size in bytes (64 signals), which rt_* syscalls insist on.
const SIGSET_SIZE: usize = 8;

/// Bit of `sig` in a kernel sigset.
const fn bit(sig: usize) -> u64 {
    1 << (sig - 1)
}

/// A raw syscall with up to four arguments; returns the kernel's value (negative errno on error).
///
/// # Safety
/// The arguments must be valid for syscall `nr`: any pointer must point to memory of the
/// size and mutability that syscall expects.
unsafe fn syscall4(nr: usize, a1: usize, a2: usize, a3: usize, a4: usize) -> isize {
    let ret: isize;
    // SAFETY: the x86_64 Linux syscall ABI: number in rax, arguments in rdi, rsi, rdx, r10;
    // the kernel clobbers rcx and r11 only. The caller vouches for the arguments.
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") nr as isize => ret,
            in("rdi") a1,
            in("rsi") a2,
            in("rdx") a3,
            in("r10") a4,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

/// Ends the process (every thread) with `code`.
fn exit(code: usize) -> ! {
    // SAFETY: exit_group takes a plain integer and never returns.
    unsafe {
        asm!(
            "syscall",
            in("rax") SYS_EXIT_GROUP,
            in("rdi") code,
            options(noreturn, nostack),
        );
    }
}

/// Reaps every child that has exited; WNOHANG so that live children do not block us.
fn reap_all() {
    loop {
        // SAFETY: wait4 accepts NULL for both the status and the rusage pointers.
        let pid = unsafe { syscall4(SYS_WAIT4, usize::MAX /* -1: any child */, 0, WNOHANG, 0) };
        // 0: children remain but none has exited; negative: ECHILD (none left) or an error.
        if pid <= 0 {
            return;
        }
    }
}

/// The program, called by `_start` on an aligned stack.
extern "C" fn pause_main() -> ! {
    let set: u64 = bit(SIGINT) | bit(SIGTERM) | bit(SIGCHLD);
    // Blocked signals stay pending (even with no handler, even for PID 1) until
    // rt_sigtimedwait takes them; nothing is lost between two waits.
    // SAFETY: `set` is a live 8-byte sigset; NULL old set is allowed.
    let ret = unsafe {
        syscall4(
            SYS_RT_SIGPROCMASK,
            SIG_BLOCK,
            &set as *const u64 as usize,
            0,
            SIGSET_SIZE,
        )
    };
    if ret < 0 {
        exit(1);
    }
    loop {
        // SAFETY: `set` is a live 8-byte sigset; NULL siginfo and NULL timeout (wait
        // forever) are allowed.
        let sig = unsafe {
            syscall4(
                SYS_RT_SIGTIMEDWAIT,
                &set as *const u64 as usize,
                0,
                0,
                SIGSET_SIZE,
            )
        };
        match sig as usize {
            SIGCHLD => reap_all(),
            SIGINT | SIGTERM => exit(0),
            // EINTR (e.g. after SIGSTOP/SIGCONT) or anything else: wait again.
            _ => {}
        }
    }
}

// The kernel enters `_start` with rsp pointing at argc. Clear the frame pointer (outermost
// frame), align the stack to 16 bytes as the SysV ABI requires at a call, and never return.
global_asm!(
    ".globl _start",
    "_start:",
    "xor ebp, ebp",
    "and rsp, -16",
    "call {main}",
    "ud2",
    main = sym pause_main,
);

/// A panic cannot happen in this code; if one does, exit 2 rather than loop or trap.
#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    exit(2)
}
