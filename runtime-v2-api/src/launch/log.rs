//! The `log` fifo in a shim's bundle, drained into `tracing` for the shim's whole life.
//!
//! The reader opens the fifo read-write: the open never blocks, a shim's write-only open
//! never blocks either, and the reader never sees EOF between two shim lives (a shim that
//! restarts, or the `delete` action, reopens it). So it runs until stopped.

use std::collections::HashMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use tokio::net::unix::pipe;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::error::Error;

/// A line longer than this is emitted in pieces.
const MAX_LINE: usize = 64 * 1024;

/// A running drain of one bundle's `log` fifo.
#[derive(Debug)]
pub struct ShimLogReader {
    path: PathBuf,
    lines: Arc<AtomicU64>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

/// Readers started by [`crate::ShimLaunch::start`], keyed by fifo path, so that `delete`
/// (or the daemon after a `Shutdown`) can stop them without holding a handle.
fn detached() -> &'static Mutex<HashMap<PathBuf, ShimLogReader>> {
    static DETACHED: OnceLock<Mutex<HashMap<PathBuf, ShimLogReader>>> = OnceLock::new();
    DETACHED.get_or_init(Default::default)
}

impl ShimLogReader {
    /// Creates `<bundle>/log` as a fifo if needed and starts draining it; `id` names the
    /// shim in the log lines. Call it again after a daemon restart to re-attach.
    pub fn open(bundle: &Path, id: &str) -> Result<Self, Error> {
        let path = bundle.join("log");
        make_fifo(&path)?;
        let receiver = pipe::OpenOptions::new()
            .read_write(true)
            .open_receiver(&path)
            .map_err(|e| Error::io(format!("opening shim log fifo {}", path.display()), e))?;
        let lines = Arc::new(AtomicU64::new(0));
        let (stop_tx, stop_rx) = oneshot::channel();
        let task = tokio::spawn(drain(receiver, id.to_string(), lines.clone(), stop_rx));
        Ok(ShimLogReader {
            path,
            lines,
            stop: Some(stop_tx),
            task: Some(task),
        })
    }

    /// The fifo's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Lines read so far (for tests and diagnostics).
    pub fn lines_read(&self) -> u64 {
        self.lines.load(Ordering::Relaxed)
    }

    /// Stops draining, after logging what the fifo already holds.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    /// Keeps the reader running in the background; [`ShimLogReader::stop_detached`] with
    /// the same bundle stops it. A previous reader of the same fifo is replaced.
    pub fn detach(self) {
        let previous = match detached().lock() {
            Ok(mut map) => map.insert(self.path.clone(), self),
            Err(poisoned) => poisoned.into_inner().insert(self.path.clone(), self),
        };
        drop(previous);
    }

    /// Stops the detached reader of `bundle`'s fifo; false when there was none.
    pub async fn stop_detached(bundle: &Path) -> bool {
        let path = bundle.join("log");
        let reader = match detached().lock() {
            Ok(mut map) => map.remove(&path),
            Err(poisoned) => poisoned.into_inner().remove(&path),
        };
        match reader {
            Some(r) => {
                r.stop().await;
                true
            }
            None => false,
        }
    }
}

impl Drop for ShimLogReader {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn make_fifo(path: &Path) -> Result<(), Error> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_fifo() => return Ok(()),
        Ok(_) => {
            return Err(Error::io(
                format!("shim log {}", path.display()),
                std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "exists and is not a fifo",
                ),
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(format!("shim log {}", path.display()), e)),
    }
    let c_path = CString::new(path.as_os_str().as_bytes()).map_err(|_| {
        Error::InvalidArgument(format!(
            "bundle path {} contains a NUL byte",
            path.display()
        ))
    })?;
    // SAFETY: `c_path` is a valid NUL-terminated string that outlives the call; mkfifo
    // only reads it.
    let rc = unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::AlreadyExists {
            return Err(Error::io(format!("mkfifo {}", path.display()), err));
        }
    }
    Ok(())
}

async fn drain(
    receiver: pipe::Receiver,
    id: String,
    lines: Arc<AtomicU64>,
    mut stop: oneshot::Receiver<()>,
) {
    let mut pending: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            _ = &mut stop => break,
            ready = receiver.readable() => {
                if ready.is_err() {
                    break;
                }
                if !read_available(&receiver, &mut chunk, &mut pending, &id, &lines) {
                    break;
                }
            }
        }
    }
    // Whatever the shim wrote before we were stopped still gets logged.
    read_available(&receiver, &mut chunk, &mut pending, &id, &lines);
    if !pending.is_empty() {
        emit(&id, &pending, &lines);
    }
}

/// Reads until the fifo would block; false on EOF or a hard error.
fn read_available(
    receiver: &pipe::Receiver,
    chunk: &mut [u8],
    pending: &mut Vec<u8>,
    id: &str,
    lines: &AtomicU64,
) -> bool {
    loop {
        match receiver.try_read(chunk) {
            Ok(0) => return false,
            Ok(n) => {
                pending.extend_from_slice(&chunk[..n]);
                while let Some(pos) = pending.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = pending.drain(..=pos).collect();
                    emit(id, &line[..pos], lines);
                }
                if pending.len() >= MAX_LINE {
                    let line = std::mem::take(pending);
                    emit(id, &line, lines);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::warn!(shim = id, error = %e, "reading shim log fifo");
                return false;
            }
        }
    }
}

/// Logs one shim line at the level logrus wrote in it (`level=warning`, …).
fn emit(id: &str, line: &[u8], lines: &AtomicU64) {
    lines.fetch_add(1, Ordering::Relaxed);
    let text = String::from_utf8_lossy(line);
    let text = text.trim_end();
    if text.is_empty() {
        return;
    }
    let level = text
        .split_whitespace()
        .find_map(|w| w.strip_prefix("level="))
        .unwrap_or("info");
    match level.trim_matches('"') {
        "error" | "fatal" | "panic" => tracing::error!(target: "crius::shim", shim = id, "{text}"),
        "warning" | "warn" => tracing::warn!(target: "crius::shim", shim = id, "{text}"),
        "debug" | "trace" => tracing::debug!(target: "crius::shim", shim = id, "{text}"),
        _ => tracing::info!(target: "crius::shim", shim = id, "{text}"),
    }
}
