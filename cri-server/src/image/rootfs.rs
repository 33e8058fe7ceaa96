//! A container rootfs: an overlay mount of a snapshot chain (read-only lowers) under a
//! per-container upper and work directory.
//!
//! Most chains are mounted with one classic `mount(2)` call. Its option string is limited to
//! one page (4096 bytes with the NUL), which deep images with long snapshot paths exceed. For
//! those the new mount API is used: `fsopen("overlay")` and one `fsconfig("lowerdir+", path)`
//! per layer (Linux ≥ 6.8), then `fsmount` + `move_mount`. It was chosen over the other way
//! round the limit (a forked child that `chdir`s to the snapshots' common parent and passes
//! relative lowerdirs) because it has no length limit at all (each layer is its own
//! parameter; only overlay's own 500-layer cap remains), needs no `fork` in a multi-threaded
//! daemon (only async-signal-safe work is allowed after it, and every mount would cost a
//! process), no `unsafe`, and it reports the kernel's own error text. On kernels older than
//! 6.8 only the long case fails, with an error saying so.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fd::{AsFd, BorrowedFd};
use rustix::io::Errno;
use rustix::mount::{
    FsMountFlags, FsOpenFlags, MountAttrFlags, MountFlags, MoveMountFlags, UnmountFlags,
};

/// An overlay to mount: `lowers` top layer first (the order of overlay's `lowerdir`).
#[derive(Debug, Clone, Copy)]
pub struct Overlay<'a> {
    pub lowers: &'a [PathBuf],
    pub upper: &'a Path,
    pub work: &'a Path,
}

/// Why a rootfs could not be mounted or unmounted.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    /// The overlay description cannot be expressed (no lowers, relative or unusable path).
    #[error("overlay for {}: {reason}", target.display())]
    Invalid { target: PathBuf, reason: String },
    /// The kernel refused the mount; `detail` carries its log (new mount API) if any.
    #[error("mounting overlay on {} ({method}): {source}{detail}", target.display())]
    Mount {
        target: PathBuf,
        method: &'static str,
        detail: String,
        #[source]
        source: io::Error,
    },
    #[error("unmounting {}: {source}", target.display())]
    Unmount {
        target: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The blocking task running the syscalls died.
    #[error("rootfs task for {}: {reason}", target.display())]
    Task { target: PathBuf, reason: String },
}

/// Largest classic option string: one page less the NUL.
const MAX_DATA: usize = 4095;

/// How a mount was made; tests check the long chain took the new API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Method {
    Classic,
    LowerdirPlus,
}

/// Mounts `overlay` on `target` (an existing directory).
pub async fn mount(overlay: &Overlay<'_>, target: &Path) -> Result<(), RootfsError> {
    let spec = Spec::new(overlay, target)?;
    let target_buf = target.to_path_buf();
    tokio::task::spawn_blocking(move || spec.mount().map(|_| ()))
        .await
        .map_err(|e| RootfsError::Task {
            target: target_buf,
            reason: e.to_string(),
        })?
}

/// Unmounts `target`. Not lazy: a busy rootfs is an error the caller must see, not a mount
/// left hanging. A target that is not mounted (or does not exist) is fine, so cleanup can
/// be retried after a crash.
pub async fn unmount(target: &Path) -> Result<(), RootfsError> {
    let target_buf = target.to_path_buf();
    let t = target_buf.clone();
    tokio::task::spawn_blocking(move || unmount_blocking(&t))
        .await
        .map_err(|e| RootfsError::Task {
            target: target_buf,
            reason: e.to_string(),
        })?
}

fn unmount_blocking(target: &Path) -> Result<(), RootfsError> {
    match rustix::mount::unmount(target, UnmountFlags::empty()) {
        Ok(()) | Err(Errno::INVAL) | Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(RootfsError::Unmount {
            target: target.to_path_buf(),
            source: e.into(),
        }),
    }
}

/// A validated overlay, owned so it can move into the blocking task.
#[derive(Debug)]
pub(crate) struct Spec {
    lowers: Vec<CString>,
    upper: CString,
    work: CString,
    target: PathBuf,
}

impl Spec {
    /// Checks every path is absolute and free of the characters overlay's option parser
    /// treats specially (`,` `:` `\`), which our snapshot paths never contain.
    pub(crate) fn new(overlay: &Overlay<'_>, target: &Path) -> Result<Self, RootfsError> {
        let invalid = |reason: String| RootfsError::Invalid {
            target: target.to_path_buf(),
            reason,
        };
        if overlay.lowers.is_empty() {
            return Err(invalid("no lower layers".to_owned()));
        }
        let check = |p: &Path, what: &str| -> Result<CString, RootfsError> {
            let bytes = p.as_os_str().as_bytes();
            if !p.is_absolute() {
                return Err(invalid(format!("{what} {} is not absolute", p.display())));
            }
            if bytes.iter().any(|b| matches!(b, b',' | b':' | b'\\')) {
                return Err(invalid(format!(
                    "{what} {} contains `,`, `:` or `\\`",
                    p.display()
                )));
            }
            CString::new(bytes).map_err(|_| invalid(format!("{what} contains a NUL byte")))
        };
        check(target, "target")?;
        let lowers = overlay
            .lowers
            .iter()
            .map(|l| check(l, "lowerdir"))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            lowers,
            upper: check(overlay.upper, "upperdir")?,
            work: check(overlay.work, "workdir")?,
            target: target.to_path_buf(),
        })
    }

    /// The classic option string, `None` when it does not fit one page.
    fn classic_data(&self) -> Option<CString> {
        let mut s = b"lowerdir=".to_vec();
        for (i, l) in self.lowers.iter().enumerate() {
            if i > 0 {
                s.push(b':');
            }
            s.extend_from_slice(l.as_bytes());
        }
        s.extend_from_slice(b",upperdir=");
        s.extend_from_slice(self.upper.as_bytes());
        s.extend_from_slice(b",workdir=");
        s.extend_from_slice(self.work.as_bytes());
        if s.len() > MAX_DATA {
            return None;
        }
        CString::new(s).ok()
    }

    pub(crate) fn mount(&self) -> Result<Method, RootfsError> {
        match self.classic_data() {
            Some(data) => {
                rustix::mount::mount(
                    "overlay",
                    &self.target,
                    "overlay",
                    MountFlags::empty(),
                    data.as_c_str(),
                )
                .map_err(|e| self.err("mount(2)", e, String::new()))?;
                Ok(Method::Classic)
            }
            None => {
                self.mount_lowerdir_plus()?;
                Ok(Method::LowerdirPlus)
            }
        }
    }

    fn mount_lowerdir_plus(&self) -> Result<(), RootfsError> {
        const METHOD: &str = "fsopen, lowerdir+";
        let fs = rustix::mount::fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC)
            .map_err(|e| self.err(METHOD, e, String::new()))?;
        let fail = |e: Errno| self.err(METHOD, e, kernel_log(fs.as_fd()));
        rustix::mount::fsconfig_set_string(&fs, "source", "overlay").map_err(fail)?;
        for l in &self.lowers {
            rustix::mount::fsconfig_set_string(&fs, "lowerdir+", l.as_c_str()).map_err(|e| {
                let mut log = kernel_log(fs.as_fd());
                if e == Errno::INVAL {
                    log.push_str(" (overlay `lowerdir+` needs Linux 6.8 or later)");
                }
                self.err(METHOD, e, log)
            })?;
        }
        rustix::mount::fsconfig_set_string(&fs, "upperdir", self.upper.as_c_str()).map_err(fail)?;
        rustix::mount::fsconfig_set_string(&fs, "workdir", self.work.as_c_str()).map_err(fail)?;
        rustix::mount::fsconfig_create(&fs).map_err(fail)?;
        let mnt =
            rustix::mount::fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, MountAttrFlags::empty())
                .map_err(fail)?;
        rustix::mount::move_mount(
            &mnt,
            "",
            rustix::fs::CWD,
            &self.target,
            MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
        )
        .map_err(|e| self.err(METHOD, e, String::new()))
    }

    fn err(&self, method: &'static str, e: Errno, detail: String) -> RootfsError {
        RootfsError::Mount {
            target: self.target.clone(),
            method,
            detail,
            source: e.into(),
        }
    }
}

/// Drains the messages the kernel queued on an fs context fd (`e overlayfs: ...`).
fn kernel_log(fs: BorrowedFd<'_>) -> String {
    let mut out = String::new();
    let mut buf = [0u8; 512];
    // Bounded: the kernel keeps at most a handful of messages per context.
    for _ in 0..8 {
        match rustix::io::read(fs, &mut buf) {
            Ok(n) if n > 0 => {
                out.push_str(if out.is_empty() { ": " } else { "; " });
                out.push_str(&String::from_utf8_lossy(buf.get(..n).unwrap_or_default()));
            }
            _ => break,
        }
    }
    out
}

#[cfg(test)]
mod tests;
