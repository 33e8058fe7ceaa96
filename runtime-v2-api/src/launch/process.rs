//! Spawning one shim action and collecting its output within a deadline.

use std::ffi::OsString;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::ShimLaunch;
use crate::error::Error;

/// After the shim exits, how long to wait for EOF on its pipes. A shim that leaks our
/// stdout into its daemonised child never closes it; what it printed is already read.
const PIPE_GRACE: Duration = Duration::from_millis(500);
/// Most stderr we quote in an error.
const MAX_STDERR: usize = 4096;

pub(super) struct Output {
    pub stdout: Vec<u8>,
}

pub(super) async fn run(
    launch: &ShimLaunch,
    action: &'static str,
    args: Vec<OsString>,
    stdin: Option<Vec<u8>>,
    timeout: Duration,
) -> Result<Output, Error> {
    let binary = launch.binary.display().to_string();
    let deadline = Instant::now() + timeout;
    let mut cmd = tokio::process::Command::new(&launch.binary);
    cmd.args(&args)
        .current_dir(&launch.bundle)
        .envs(launch.env())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, like containerd: a ^C to the daemon's group must not
        // reach shims.
        .process_group(0)
        .kill_on_drop(true);
    let mut child = spawn(&mut cmd, &binary, action).await?;

    if let (Some(bytes), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // A shim may exit without reading its options: a broken pipe is not our error.
        tokio::spawn(async move {
            let _ = pipe.write_all(&bytes).await;
        });
    }
    let stdout = collect(child.stdout.take());
    let stderr = collect(child.stderr.take());

    let status = match tokio::time::timeout_at(deadline, child.wait()).await {
        Ok(status) => {
            status.map_err(|e| Error::io(format!("waiting for shim {binary} {action}"), e))?
        }
        Err(_) => {
            let _ = child.start_kill();
            let _ = child.wait().await;
            return Err(Error::Timeout {
                what: format!("shim {binary} {action}"),
                after: timeout,
            });
        }
    };
    let stdout = stdout.finish().await;
    let stderr = stderr.finish().await;
    if !status.success() {
        let text = if stderr.iter().all(u8::is_ascii_whitespace) {
            &stdout
        } else {
            &stderr
        };
        return Err(Error::ShimFailed {
            binary,
            action,
            status: status.to_string(),
            stderr: quote(text),
        });
    }
    if !stderr.is_empty() {
        tracing::debug!(shim = %binary, action, stderr = %quote(&stderr), "shim stderr");
    }
    Ok(Output { stdout })
}

/// Spawns, retrying briefly on ETXTBSY: a shim binary that was just written (installed,
/// or a test's script) may still be open for writing in a concurrently forked child.
async fn spawn(
    cmd: &mut tokio::process::Command,
    binary: &str,
    action: &str,
) -> Result<tokio::process::Child, Error> {
    let mut attempts = 0;
    loop {
        match cmd.spawn() {
            Ok(child) => return Ok(child),
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && attempts < 5 => {
                attempts += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => return Err(Error::io(format!("spawning shim {binary} {action}"), e)),
        }
    }
}

struct Collector {
    buf: Arc<Mutex<Vec<u8>>>,
    task: Option<JoinHandle<()>>,
}

fn collect<R: AsyncRead + Unpin + Send + 'static>(pipe: Option<R>) -> Collector {
    let buf = Arc::new(Mutex::new(Vec::new()));
    let task = pipe.map(|mut pipe| {
        let buf = buf.clone();
        tokio::spawn(async move {
            let mut chunk = [0u8; 4096];
            loop {
                match pipe.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => match buf.lock() {
                        Ok(mut b) => b.extend_from_slice(&chunk[..n]),
                        Err(_) => break,
                    },
                }
            }
        })
    });
    Collector { buf, task }
}

impl Collector {
    async fn finish(self) -> Vec<u8> {
        if let Some(mut task) = self.task {
            if tokio::time::timeout(PIPE_GRACE, &mut task).await.is_err() {
                task.abort();
            }
        }
        match self.buf.lock() {
            Ok(mut b) => std::mem::take(&mut *b),
            Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
        }
    }
}

fn quote(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim();
    if text.len() <= MAX_STDERR {
        return text.to_string();
    }
    let mut end = MAX_STDERR;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}
