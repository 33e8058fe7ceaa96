//! CRI-format container logs written by the daemon for shims that do not write them.
//!
//! Our shim writes the CRI log itself; containerd's Go shim (and kata, runsc) only connect
//! the container's stdout and stderr to fifos. For those the daemon drains the fifos into
//! the log file the kubelet named: `<RFC3339Nano> <stdout|stderr> <F|P> <content>\n`, one
//! entry per line, lines longer than [`MAX_LINE`] cut into `P` (partial) entries, and
//! output that ends without a newline ending with a `P` entry, so that joining the entries
//! gives back the exact bytes. This is the shim's writer's behaviour, written again here
//! so that the daemon does not depend on the shim crate.
//!
//! End of stream: the daemon opens each fifo's read side and, beside it, a write side of
//! its own (a "keepalive"), both non-blocking. A fifo reader sees EOF only when no writer
//! is left, so the keepalive keeps EOF from arriving before the shim opened its end (or
//! between two writers). [`LogPipe::finish`], called once the container exited, closes
//! the keepalive: the drain then reads to the real EOF, i.e. until the shim closed its
//! end after copying the last output, and stops at a time bound if the shim never does.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::net::unix::pipe;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The longest content of one entry (as our shim and containerd's default); longer lines
/// are split into partials.
pub const MAX_LINE: usize = 16 * 1024;

/// How long [`LogPipe::finish`] waits for the writers to close their ends.
pub const FINISH_TIMEOUT: Duration = Duration::from_secs(2);

/// Bytes read from a fifo at a time.
const READ_CHUNK: usize = 64 * 1024;

/// Which stream an entry came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// The container's stdout (also its tty).
    Stdout,
    /// The container's stderr.
    Stderr,
}

impl Stream {
    /// The stream's name in a CRI log entry.
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Why a log pipe could not start or reopen its file.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The log file could not be opened (created, appended).
    #[error("opening container log {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    /// A stdio fifo could not be opened.
    #[error("opening fifo {path}: {source}")]
    Fifo { path: PathBuf, source: io::Error },
    /// The blocking task died.
    #[error("container log task: {0}")]
    Task(String),
}

/// Appends one CRI log entry (`<ts> <stream> <F|P> <content>\n`) to `out`.
pub fn format_entry(
    ts: SystemTime,
    stream: Stream,
    partial: bool,
    content: &[u8],
    out: &mut Vec<u8>,
) {
    push_entry(&rfc3339_nano(ts), stream, partial, content, out);
}

fn push_entry(ts: &str, stream: Stream, partial: bool, content: &[u8], out: &mut Vec<u8>) {
    out.reserve(ts.len() + content.len() + 12);
    out.extend_from_slice(ts.as_bytes());
    out.push(b' ');
    out.extend_from_slice(stream.as_str().as_bytes());
    out.extend_from_slice(if partial { b" P " } else { b" F " });
    out.extend_from_slice(content);
    out.push(b'\n');
}

/// Go's `time.RFC3339Nano` of a UTC time, as containerd writes it: nanoseconds with
/// trailing zeros trimmed (`2016-10-06T00:17:09.669794202Z`, `…:00.5Z`, `…:00Z`).
pub fn rfc3339_nano(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let nanos = d.subsec_nanos();
    let (y, m, day) = civil_from_days((secs / 86_400) as i64);
    let sod = secs % 86_400;
    let mut s = format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}",
        sod / 3600,
        (sod / 60) % 60,
        sod % 60
    );
    if nanos != 0 {
        let frac = format!("{nanos:09}");
        s.push('.');
        s.push_str(frac.trim_end_matches('0'));
    }
    s.push('Z');
    s
}

/// Days since 1970-01-01 → (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Turns one stream's bytes into CRI log entries, keeping an unfinished line between
/// reads.
#[derive(Debug)]
pub struct LineSplitter {
    stream: Stream,
    pending: Vec<u8>,
}

impl LineSplitter {
    /// A splitter for `stream`.
    pub fn new(stream: Stream) -> Self {
        LineSplitter {
            stream,
            pending: Vec::new(),
        }
    }

    /// Appends to `out` an `F` entry per completed line and `P` entries for every full
    /// [`MAX_LINE`] of an unfinished one; the rest waits for more data.
    pub fn feed(&mut self, data: &[u8], now: SystemTime, out: &mut Vec<u8>) {
        let ts = rfc3339_nano(now);
        let mut rest = data;
        while let Some(i) = rest.iter().position(|b| *b == b'\n') {
            let line = &rest[..i];
            rest = &rest[i + 1..];
            if self.pending.is_empty() {
                // Fast path: no copy into `pending` for lines that arrive whole.
                let mut line = line;
                while line.len() > MAX_LINE {
                    push_entry(&ts, self.stream, true, &line[..MAX_LINE], out);
                    line = &line[MAX_LINE..];
                }
                push_entry(&ts, self.stream, false, line, out);
            } else {
                self.pending.extend_from_slice(line);
                self.flush_long(&ts, out);
                push_entry(&ts, self.stream, false, &self.pending, out);
                self.pending.clear();
            }
        }
        self.pending.extend_from_slice(rest);
        self.flush_long(&ts, out);
    }

    /// End of stream: an unfinished line becomes a final `P` entry (no newline is
    /// invented).
    pub fn finish(&mut self, now: SystemTime, out: &mut Vec<u8>) {
        if !self.pending.is_empty() {
            push_entry(&rfc3339_nano(now), self.stream, true, &self.pending, out);
            self.pending.clear();
        }
    }

    /// Emits `P` entries while more than one entry's worth is pending, like the shim: a
    /// line of exactly `MAX_LINE` bytes still ends as one `F` entry.
    fn flush_long(&mut self, ts: &str, out: &mut Vec<u8>) {
        if self.pending.len() <= MAX_LINE {
            return;
        }
        let mut start = 0;
        while self.pending.len() - start > MAX_LINE {
            push_entry(
                ts,
                self.stream,
                true,
                &self.pending[start..start + MAX_LINE],
                out,
            );
            start += MAX_LINE;
        }
        self.pending.drain(..start);
    }
}

/// The log file both streams append to; `None` after a failed reopen (output dropped).
#[derive(Debug)]
struct Sink {
    path: Option<PathBuf>,
    file: Mutex<Option<File>>,
}

impl Sink {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<File>> {
        self.file.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends `data` (whole entries) in one write under the lock, so entries of the two
    /// streams never interleave; gives the buffer back for reuse.
    async fn write(self: &Arc<Self>, data: Vec<u8>) -> Vec<u8> {
        if data.is_empty() {
            return data;
        }
        let sink = Arc::clone(self);
        let joined = tokio::task::spawn_blocking(move || {
            let mut data = data;
            if let Some(f) = sink.lock().as_mut() {
                if let Err(e) = f.write_all(&data) {
                    tracing::warn!(path = ?sink.path, error = %e, "writing container log");
                }
            }
            data.clear();
            data
        })
        .await;
        joined.unwrap_or_default()
    }
}

fn open_log(path: &Path) -> Result<File, LogError> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .map_err(|source| LogError::Open {
            path: path.to_path_buf(),
            source,
        })
}

/// A running drain of a container's stdout/stderr fifos into its CRI log file.
///
/// Dropped without [`LogPipe::finish`], the drains go on until the writers close their
/// ends (the keepalive ends close with it), so the container never blocks on a full pipe.
#[derive(Debug)]
pub struct LogPipe {
    sink: Arc<Sink>,
    /// Our own write ends of the fifos: no EOF before [`LogPipe::finish`].
    keepalive: Vec<OwnedFd>,
    tasks: Vec<JoinHandle<()>>,
    stop: watch::Sender<bool>,
}

impl LogPipe {
    /// Opens the log file (created, appended, 0640) and starts draining the fifos (made
    /// by the caller with `mkfifo`) into it. `log_path` `None` (the pod set no log path)
    /// drains and drops the output, so that the container never blocks on a full pipe.
    /// A tty container has only `stdout`.
    ///
    /// Must run inside a tokio runtime. Opening does not wait for the writer.
    pub async fn spawn(
        log_path: Option<PathBuf>,
        stdout: Option<&Path>,
        stderr: Option<&Path>,
    ) -> Result<LogPipe, LogError> {
        let file = match &log_path {
            Some(p) => {
                let p = p.clone();
                Some(
                    tokio::task::spawn_blocking(move || open_log(&p))
                        .await
                        .map_err(|e| LogError::Task(e.to_string()))??,
                )
            }
            None => None,
        };
        let sink = Arc::new(Sink {
            path: log_path,
            file: Mutex::new(file),
        });
        let (stop, stop_rx) = watch::channel(false);
        let mut readers = Vec::new();
        let mut keepalive = Vec::new();
        for (path, stream) in [(stdout, Stream::Stdout), (stderr, Stream::Stderr)] {
            if let Some(path) = path {
                let (rx, keep) = open_fifo(path)?;
                readers.push((rx, stream));
                keepalive.push(keep);
            }
        }
        let tasks = readers
            .into_iter()
            .map(|(rx, stream)| tokio::spawn(drain(rx, stream, Arc::clone(&sink), stop_rx.clone())))
            .collect();
        Ok(LogPipe {
            sink,
            keepalive,
            tasks,
            stop,
        })
    }

    /// Opens the log path anew (the kubelet renamed the file away) and writes there from
    /// now on. On failure the old file is closed too and output is dropped until a later
    /// reopen succeeds: a file is never created behind the kubelet's back.
    pub async fn reopen(&self) -> Result<(), LogError> {
        let Some(path) = self.sink.path.clone() else {
            return Ok(());
        };
        let sink = Arc::clone(&self.sink);
        tokio::task::spawn_blocking(move || {
            let opened = open_log(&path);
            let mut file = sink.lock();
            match opened {
                Ok(f) => {
                    *file = Some(f);
                    Ok(())
                }
                Err(e) => {
                    *file = None;
                    Err(e)
                }
            }
        })
        .await
        .map_err(|e| LogError::Task(e.to_string()))?
    }

    /// Drains what is left and stops: call it once the container exited. Waits up to
    /// [`FINISH_TIMEOUT`] for the writers to close their ends.
    pub async fn finish(self) {
        self.finish_within(FINISH_TIMEOUT).await
    }

    /// [`LogPipe::finish`] with another bound on the wait for the writers.
    pub async fn finish_within(mut self, limit: Duration) {
        // Without our write ends, EOF comes as soon as the shim has closed its own.
        self.keepalive.clear();
        let mut tasks = std::mem::take(&mut self.tasks);
        let all = futures::future::join_all(tasks.iter_mut());
        if tokio::time::timeout(limit, all).await.is_err() {
            // A writer still holds its end: take what is buffered in the pipe and stop.
            let _ = self.stop.send(true);
            let all = futures::future::join_all(tasks.iter_mut());
            if tokio::time::timeout(Duration::from_secs(1), all)
                .await
                .is_err()
            {
                for t in &tasks {
                    t.abort();
                }
            }
        }
    }
}

/// Opens the read side (non-blocking, so no wait for a writer) and our keepalive write
/// side, which succeeds at once since a reader now exists.
fn open_fifo(path: &Path) -> Result<(pipe::Receiver, OwnedFd), LogError> {
    let err = |source| LogError::Fifo {
        path: path.to_path_buf(),
        source,
    };
    let rx = pipe::OpenOptions::new().open_receiver(path).map_err(err)?;
    let keep = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(err)?;
    Ok((rx, keep.into()))
}

async fn drain(
    rx: pipe::Receiver,
    stream: Stream,
    sink: Arc<Sink>,
    mut stop: watch::Receiver<bool>,
) {
    let mut splitter = LineSplitter::new(stream);
    let mut buf = vec![0u8; READ_CHUNK];
    let mut out = Vec::with_capacity(READ_CHUNK + 256);
    let mut stopping = false;
    loop {
        if !stopping {
            tokio::select! {
                r = rx.readable() => {
                    if let Err(e) = r {
                        tracing::warn!(stream = stream.as_str(), error = %e, "container log fifo");
                        break;
                    }
                }
                _ = stop.changed() => stopping = true,
            }
        }
        match rx.try_read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                splitter.feed(&buf[..n], SystemTime::now(), &mut out);
                out = sink.write(out).await;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if stopping {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                tracing::warn!(stream = stream.as_str(), error = %e, "reading container output");
                break;
            }
        }
    }
    splitter.finish(SystemTime::now(), &mut out);
    sink.write(out).await;
}

#[cfg(test)]
mod tests;
