//! `binary://` logging programs, containerd's contract: the program gets the process's stdout
//! on fd 3, stderr on fd 4 and a pipe on fd 5 that it closes (or writes to) once it is ready;
//! `CONTAINER_ID` and `CONTAINER_NAMESPACE` in its environment.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use tokio::io::AsyncReadExt;

use super::Owner;
use crate::error::{Result, ShimError};
use crate::runtime::find_executable;

/// Starts the logger and waits (bounded) until it says it is ready. It runs on its own;
/// its exit is collected by the reaper.
pub async fn start(
    bin: &Path,
    args: &[String],
    owner: &Owner,
    (stdout_r, stderr_r): (OwnedFd, OwnedFd),
) -> Result<()> {
    let bin_s = bin.display().to_string();
    if find_executable(&bin_s).is_none() {
        return Err(ShimError::FailedPrecondition(format!(
            "logging binary {bin_s:?} not found"
        )));
    }
    let (ready_r, ready_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| ShimError::Internal(format!("pipe: {e}")))?;
    let fds = [
        stdout_r.as_raw_fd(),
        stderr_r.as_raw_fd(),
        ready_w.as_raw_fd(),
    ];
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .env("CONTAINER_ID", &owner.id)
        .env("CONTAINER_NAMESPACE", &owner.namespace)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: between fork and exec we only call dup2 and fcntl, which are async-signal-safe,
    // on fds that stay open in the parent until spawn returns.
    unsafe {
        cmd.pre_exec(move || {
            // Move the sources out of the way of 3..5 first, then into place (dup2 clears
            // CLOEXEC on the copy).
            let mut high = [0; 3];
            for (i, fd) in fds.iter().enumerate() {
                let h = libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, 10);
                if h < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                high[i] = h;
            }
            for (i, h) in high.iter().enumerate() {
                if libc::dup2(*h, 3 + i as i32) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    // Its exit goes to the reaper's unclaimed list: nobody waits for a logger.
    cmd.spawn()
        .map_err(|e| ShimError::Internal(format!("start logging binary {bin_s}: {e}")))?;
    drop(cmd);
    drop((stdout_r, stderr_r, ready_w));
    let mut ready = tokio::net::unix::pipe::Receiver::from_owned_fd(ready_r)
        .map_err(|e| ShimError::Internal(format!("logger ready pipe: {e}")))?;
    let mut b = [0u8; 1];
    let _ = tokio::time::timeout(Duration::from_secs(10), ready.read(&mut b)).await;
    Ok(())
}
