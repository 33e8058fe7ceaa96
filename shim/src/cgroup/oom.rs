//! OOM-kill notifications: a v1 eventfd on `memory.oom_control`, or v2 inotify on `memory.events`.

use super::*;

/// Notifications of OOM kills in a cgroup; see [`Cgroup::watch_oom`].
#[derive(Debug)]
pub struct OomWatch {
    pub(super) flavour: Flavour,
    /// The cgroup directory (v1: in the memory hierarchy).
    pub(super) dir: PathBuf,
    /// memory.oom_control (v1) or memory.events (v2).
    pub(super) counter_file: PathBuf,
    /// The last `oom_kill` count reported (or seen when the watch started).
    pub(super) last: Option<u64>,
    /// The eventfd (v1) or inotify fd (v2) until it is registered with tokio.
    pub(super) fd: Option<OwnedFd>,
    pub(super) afd: Option<AsyncFd<OwnedFd>>,
    pub(super) done: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Flavour {
    V1,
    V2,
}

/// What re-reading the counter after a wake-up says.
pub(super) enum Check {
    /// The count rose (or, without a count, v1 signalled an OOM): report it.
    Kill,
    /// Nothing new.
    Nothing,
    /// The cgroup is gone.
    Gone,
}

impl OomWatch {
    /// Resolves each time the OOM-kill count rises (one call per new kill burst); returns None
    /// once the cgroup is gone.
    pub async fn next(&mut self) -> Option<()> {
        if self.done {
            return None;
        }
        // A kill counted after an earlier wake-up had given up waiting for it, or a cgroup
        // already removed.
        match self.check(false) {
            Check::Kill => return Some(()),
            Check::Gone => {
                self.done = true;
                return None;
            }
            Check::Nothing => {}
        }
        if self.afd.is_none() {
            let fd = self.fd.take()?;
            // SAFETY: `fd` is an `OwnedFd`: a valid open fd that stays open, and is the same
            // fd, for as long as the `AsyncFd` owns it.
            match unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) } {
                Ok(afd) => self.afd = Some(afd),
                Err(_) => {
                    self.done = true;
                    return None;
                }
            }
        }
        loop {
            match self.flavour {
                Flavour::V1 => {
                    if !self.wait_readable().await {
                        self.done = true;
                        return None;
                    }
                    // The eventfd fires on an OOM (before the kill is counted) and when the
                    // cgroup is removed.
                    let mut steps = 0;
                    loop {
                        match self.check(true) {
                            Check::Kill => return Some(()),
                            Check::Gone => {
                                self.done = true;
                                return None;
                            }
                            Check::Nothing if steps < V1_KILL_GRACE_STEPS => {
                                steps += 1;
                                tokio::time::sleep(V1_KILL_GRACE_STEP).await;
                            }
                            // Under OOM without a kill (oom_kill_disable, or the victim was
                            // already exiting): not a kill.
                            Check::Nothing => break,
                        }
                    }
                }
                Flavour::V2 => {
                    tokio::select! {
                        ok = self.wait_readable() => {
                            if !ok {
                                self.done = true;
                                return None;
                            }
                        }
                        _ = tokio::time::sleep(V2_GONE_POLL) => {}
                    }
                    match self.check(false) {
                        Check::Kill => return Some(()),
                        Check::Gone => {
                            self.done = true;
                            return None;
                        }
                        Check::Nothing => {}
                    }
                }
            }
        }
    }

    /// Waits until the fd is readable and drains it. False if the fd failed.
    async fn wait_readable(&self) -> bool {
        let Some(afd) = self.afd.as_ref() else {
            return false;
        };
        loop {
            let Ok(mut guard) = afd.readable().await else {
                return false;
            };
            let mut drained_any = false;
            loop {
                // Big enough for an eventfd counter and for a batch of inotify events.
                let mut buf = [0u8; 4096];
                match nix::unistd::read(afd.get_ref().as_raw_fd(), &mut buf) {
                    Ok(0) => return false,
                    Ok(_) => drained_any = true,
                    Err(nix::errno::Errno::EAGAIN) => {
                        guard.clear_ready();
                        break;
                    }
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(_) => return false,
                }
            }
            if drained_any {
                return true;
            }
        }
    }

    /// Re-reads the counter. `signalled`: v1's eventfd fired (an OOM, or the removal).
    fn check(&mut self, signalled: bool) -> Check {
        let Some(kv) = read_kv(&self.counter_file) else {
            return if self.dir.is_dir() {
                Check::Nothing
            } else {
                Check::Gone
            };
        };
        match kv.get("oom_kill").copied() {
            Some(now) if now > self.last.unwrap_or(0) => {
                self.last = Some(now);
                Check::Kill
            }
            Some(now) => {
                self.last = Some(now);
                if self.dir.is_dir() {
                    Check::Nothing
                } else {
                    Check::Gone
                }
            }
            // A v1 kernel without the `oom_kill` count (before 4.13): every OOM notification
            // while the cgroup exists counts, as in containerd.
            None if signalled && self.flavour == Flavour::V1 && self.dir.is_dir() => Check::Kill,
            None if self.dir.is_dir() => Check::Nothing,
            None => Check::Gone,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// OOM watch set-up.

/// v1: an eventfd registered in cgroup.event_control for memory.oom_control.
pub(super) fn v1_register_oom_eventfd(dir: &Path) -> Result<OwnedFd, CgroupError> {
    let control = dir.join("memory.oom_control");
    let oom_control = fs::File::open(&control).map_err(|source| CgroupError::Watch {
        op: "opening",
        path: control.clone(),
        source,
    })?;
    // SAFETY: eventfd has no memory-safety preconditions; the result is checked below.
    let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if raw < 0 {
        return Err(CgroupError::Watch {
            op: "eventfd",
            path: control,
            source: io::Error::last_os_error(),
        });
    }
    // SAFETY: `raw` is a freshly created, valid fd that nothing else owns.
    let efd = unsafe { OwnedFd::from_raw_fd(raw) };
    let event_control = dir.join("cgroup.event_control");
    let line = format!("{} {}", efd.as_raw_fd(), oom_control.as_raw_fd());
    fs::write(&event_control, line).map_err(|source| CgroupError::Watch {
        op: "registering in",
        path: event_control,
        source,
    })?;
    // The kernel holds its own reference to memory.oom_control: our fd may close now.
    drop(oom_control);
    Ok(efd)
}

/// v2: an inotify fd watching `file` for modifications.
pub(super) fn inotify_watch(file: &Path) -> Result<OwnedFd, CgroupError> {
    use std::os::unix::ffi::OsStrExt;
    let err = |op, source| CgroupError::Watch {
        op,
        path: file.to_path_buf(),
        source,
    };
    let cpath = std::ffi::CString::new(file.as_os_str().as_bytes()).map_err(|e| {
        err(
            "encoding path",
            io::Error::new(io::ErrorKind::InvalidInput, e),
        )
    })?;
    // SAFETY: inotify_init1 has no memory-safety preconditions; the result is checked below.
    let raw = unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) };
    if raw < 0 {
        return Err(err("inotify_init1", io::Error::last_os_error()));
    }
    // SAFETY: `raw` is a freshly created, valid fd that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: `fd` is a valid inotify fd and `cpath` a NUL-terminated string that outlives
    // the call.
    let wd = unsafe { libc::inotify_add_watch(fd.as_raw_fd(), cpath.as_ptr(), libc::IN_MODIFY) };
    if wd < 0 {
        return Err(err("inotify_add_watch", io::Error::last_os_error()));
    }
    Ok(fd)
}
