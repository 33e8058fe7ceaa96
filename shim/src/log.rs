//! The shim's own log lines, in logfmt on stderr (the bundle's `log` fifo when a daemon
//! reads it, `/dev/null` otherwise). Deliberately tiny: the shim must stay small.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

static DEBUG: AtomicBool = AtomicBool::new(false);

/// Enables debug lines (`-debug`).
pub fn set_debug(on: bool) {
    DEBUG.store(on, Ordering::Relaxed);
}

fn line(level: &str, msg: &str) {
    let ts = crate::stdio::crilog::rfc3339_nano(SystemTime::now());
    // A full or closed log pipe must never stop the shim: ignore write errors.
    let _ = writeln!(std::io::stderr(), "time=\"{ts}\" level={level} msg={msg:?}");
}

/// An error worth a line.
pub fn error(msg: &str) {
    line("error", msg);
}

/// A warning.
pub fn warn(msg: &str) {
    line("warning", msg);
}

/// Debug detail, only with `-debug`.
pub fn debug(msg: &str) {
    if DEBUG.load(Ordering::Relaxed) {
        line("debug", msg);
    }
}
