//! The one place that calls `waitpid`. The shim is the subreaper of every container process,
//! so exits arrive for pids it never spawned directly (a container's init once `runc create`
//! has exited, exec processes, orphans). A single reaper collects every exit on SIGCHLD and
//! hands each to whoever subscribed to that pid; an exit nobody has claimed yet is kept, so a
//! process that dies before its pid file is even read still has its status recorded once.
//!
//! Nothing else may wait on children: no `tokio::process`, no `Child::wait`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::oneshot;

/// How long an exit nobody claimed is kept before it is dropped as an orphan's.
const UNCLAIMED_TTL: Duration = Duration::from_secs(120);

/// A process's end as the shim reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    /// Exit code, or 128 + signal for a killed process (the shell convention containerd uses).
    pub status: u32,
    /// When the reaper collected it.
    pub at: SystemTime,
}

#[derive(Default)]
struct Table {
    waiters: HashMap<i32, oneshot::Sender<Exit>>,
    unclaimed: HashMap<i32, (Exit, Instant)>,
}

/// The shim's reaper; cheap to share.
#[derive(Clone, Default)]
pub struct Reaper {
    table: Arc<Mutex<Table>>,
}

impl std::fmt::Debug for Reaper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Reaper")
    }
}

impl Reaper {
    /// Installs the SIGCHLD handler and starts reaping on the current tokio runtime.
    pub fn start() -> std::io::Result<Reaper> {
        let reaper = Reaper::default();
        let mut sigchld = signal(SignalKind::child())?;
        let r = reaper.clone();
        tokio::spawn(async move {
            r.reap_all();
            while sigchld.recv().await.is_some() {
                r.reap_all();
            }
        });
        Ok(reaper)
    }

    /// The exit of `pid`, a process that came into being at or after `since`. An exit already
    /// collected for that pid before `since` belongs to an earlier process and is ignored.
    pub fn subscribe(&self, pid: u32, since: Instant) -> oneshot::Receiver<Exit> {
        let (tx, rx) = oneshot::channel();
        let pid = pid as i32;
        let mut t = self.lock();
        match t.unclaimed.remove(&pid) {
            Some((exit, reaped)) if reaped >= since => {
                let _ = tx.send(exit);
            }
            _ => {
                t.waiters.insert(pid, tx);
            }
        }
        rx
    }

    /// Stops waiting for `pid` (its exit, when it comes, is kept as unclaimed).
    pub fn forget(&self, pid: u32) {
        self.lock().waiters.remove(&(pid as i32));
    }

    /// Collects every exited child now. Called on each SIGCHLD and once at start.
    pub fn reap_all(&self) {
        loop {
            let (pid, status) = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid, code as u32),
                Ok(WaitStatus::Signaled(pid, sig, _)) => (pid, 128 + sig as u32),
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(_) => continue,
            };
            let exit = Exit {
                status,
                at: SystemTime::now(),
            };
            self.deliver(pid.as_raw(), exit);
        }
    }

    fn deliver(&self, pid: i32, exit: Exit) {
        let mut t = self.lock();
        if let Some(tx) = t.waiters.remove(&pid) {
            if tx.send(exit).is_ok() {
                return;
            }
        }
        let now = Instant::now();
        t.unclaimed
            .retain(|_, (_, at)| now.duration_since(*at) < UNCLAIMED_TTL);
        t.unclaimed.insert(pid, (exit, now));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        // A panic while holding this lock aborts the shim (panic = "abort"), so poisoning
        // cannot be observed in release; in tests, keep going with the inner value.
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_before_subscribe_is_kept_once() {
        let r = Reaper::default();
        let since = Instant::now();
        r.deliver(
            42,
            Exit {
                status: 3,
                at: SystemTime::now(),
            },
        );
        let mut rx = r.subscribe(42, since);
        assert_eq!(rx.try_recv().map(|e| e.status), Ok(3));
        // Claimed: a second subscriber waits for a new process.
        let mut rx = r.subscribe(42, since);
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn stale_exit_of_an_earlier_process_is_ignored() {
        let r = Reaper::default();
        r.deliver(
            7,
            Exit {
                status: 1,
                at: SystemTime::now(),
            },
        );
        let since = Instant::now() + Duration::from_millis(1);
        let mut rx = r.subscribe(7, since);
        assert!(rx.try_recv().is_err());
        r.deliver(
            7,
            Exit {
                status: 0,
                at: SystemTime::now(),
            },
        );
        assert_eq!(rx.try_recv().map(|e| e.status), Ok(0));
    }
}
