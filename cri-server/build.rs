//! Builds the built-in pause binary (`pause/pause.rs`) into `$OUT_DIR/pause`, which
//! `src/image/pause.rs` embeds. It is compiled by invoking `$RUSTC` directly, not as a cargo
//! target: it is a `no_std` static ELF for the pod's sandbox, not a program for this host,
//! and it must not inherit the workspace's profiles, dependencies or RUSTFLAGS.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=pause/pause.rs");
    println!("cargo:rerun-if-changed=build.rs");

    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    // x86_64 Linux is the only target crius supports for now: pause.rs makes raw x86_64
    // syscalls. Another architecture needs its own syscall numbers and `_start`.
    if arch != "x86_64" || os != "linux" {
        panic!(
            "crius builds its pause binary for x86_64 Linux only, not {arch}-{os}: \
             port cri-server/pause/pause.rs (syscall numbers and _start) first"
        );
    }

    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let target = std::env::var("TARGET").unwrap_or_else(|_| "x86_64-unknown-linux-gnu".into());
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let out = out_dir.join("pause");
    let manifest_dir =
        PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));

    let status = Command::new(&rustc)
        .args([
            "--edition",
            "2021",
            "--crate-type",
            "bin",
            "--crate-name",
            "pause",
        ])
        .args(["--target", &target])
        .args([
            "-C",
            "panic=abort",
            // Also needed to link at all: unoptimised, libcore's unwinding glue would be
            // kept and want a `rust_eh_personality` that no_std does not provide.
            "-C",
            "opt-level=s",
            "-C",
            "codegen-units=1",
            "-C",
            "debuginfo=0",
            "-C",
            "strip=symbols",
            // A static, non-PIE executable: no interpreter, no relocations to apply.
            "-C",
            "relocation-model=static",
            "-C",
            "target-feature=+crt-static",
            // No unwinding ever happens (panic=abort): .eh_frame would be dead weight.
            "-C",
            "force-unwind-tables=no",
            // Our own `_start`, no C runtime and no libc.
            "-C",
            "link-arg=-nostartfiles",
            "-C",
            "link-arg=-nostdlib",
            "-C",
            "link-arg=-static",
            // Same source, same bytes, same image digest: no build id.
            "-C",
            "link-arg=-Wl,--build-id=none",
            // GNU ld otherwise pads code to its own 4 KiB pages (8.7 KB instead of ~1 KB).
            "-C",
            "link-arg=-Wl,-z,noseparate-code",
        ])
        .arg(manifest_dir.join("pause/pause.rs"))
        .arg("-o")
        .arg(&out)
        .status()
        .unwrap_or_else(|e| panic!("running {}: {e}", rustc.to_string_lossy()));
    if !status.success() {
        panic!("building the pause binary (pause/pause.rs) failed: {status}");
    }
}
