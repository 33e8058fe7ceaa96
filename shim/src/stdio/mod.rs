//! A process's stdio: where its output goes, where its input comes from, and the copies in
//! between. Destinations are named as containerd names them:
//!
//! | URI | meaning |
//! |---|---|
//! | `` (empty) | `/dev/null` |
//! | `/path/to/fifo` or `fifo:///path` | a fifo the daemon reads (containerd's convention) |
//! | `file:///path` | a file, appended to |
//! | `binary:///path?k=v` | a logging program reading fds 3 (stdout) and 4 (stderr) |
//! | `cri:///path` | crius: the shim writes the CRI log format to `path` itself |
//!
//! Without a terminal, fifos and files are handed to the process directly (no copy in the
//! shim); only stdin (so that CloseIO can end it) and CRI logs pass through the shim. With a
//! terminal everything passes through the pty master.

pub mod console;
pub mod crilog;
mod logger;

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::error::{Result, ShimError};
use crate::runtime::ChildStdio;
use console::{ConsoleSocket, PtyMaster};
use crilog::{CriLog, LineSplitter, Stream};

/// The stdio a task or exec asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StdioConfig {
    /// stdin URI (a fifo path, or empty).
    pub stdin: String,
    /// stdout URI.
    pub stdout: String,
    /// stderr URI.
    pub stderr: String,
    /// Whether the process gets a pty.
    pub terminal: bool,
}

/// An output destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dest {
    /// Discard.
    Null,
    /// A fifo at this path.
    Fifo(PathBuf),
    /// A regular file at this path.
    File(PathBuf),
    /// A logging binary with its arguments.
    Binary(PathBuf, Vec<String>),
    /// A CRI-format log file.
    Cri(PathBuf),
}

/// Parses an stdio URI; an unknown scheme or a relative path is InvalidArgument.
pub fn parse_dest(field: &str, uri: &str) -> Result<Dest> {
    if uri.is_empty() {
        return Ok(Dest::Null);
    }
    let bad = |why: &str| ShimError::InvalidArgument(format!("{field} {uri:?}: {why}"));
    let (scheme, rest) = match uri.split_once("://") {
        Some((s, r)) => (s, r),
        None => ("fifo", uri),
    };
    let (path, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    };
    if !path.starts_with('/') {
        return Err(bad("the path must be absolute"));
    }
    let path = PathBuf::from(path);
    Ok(match scheme {
        "fifo" => Dest::Fifo(path),
        "file" => Dest::File(path),
        "cri" => Dest::Cri(path),
        "binary" => {
            let mut args = Vec::new();
            for kv in query
                .unwrap_or_default()
                .split('&')
                .filter(|s| !s.is_empty())
            {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                args.push(k.to_string());
                if !v.is_empty() {
                    args.push(v.to_string());
                }
            }
            Dest::Binary(path, args)
        }
        _ => {
            return Err(bad(
                "unknown scheme (expected a fifo path, file://, binary:// or cri://)",
            ))
        }
    })
}

/// The live stdio of one process.
#[derive(Debug, Default)]
pub struct ProcessIo {
    stdin_close: Option<oneshot::Sender<()>>,
    copies: Vec<JoinHandle<()>>,
    console: Option<Arc<PtyMaster>>,
    cri: Option<Arc<CriLog>>,
}

/// What `prepare` hands to the runtime.
#[derive(Debug)]
pub struct Prepared {
    /// The process's shim-side stdio state.
    pub io: ProcessIo,
    /// Stdio for the runtime command (all `/dev/null` with a terminal).
    pub child: ChildStdio,
    /// The console socket, with a terminal.
    pub console: Option<ConsoleSocket>,
    /// Work to finish once the runtime has run (the pty copy needs the received master).
    pending: Pending,
}

#[derive(Debug, Default)]
struct Pending {
    stdin_fifo: Option<PathBuf>,
    stdout: Option<Dest>,
}

/// Who the process is, for logging binaries.
#[derive(Debug, Clone)]
pub struct Owner {
    /// Task id.
    pub id: String,
    /// containerd namespace.
    pub namespace: String,
}

impl Prepared {
    /// Sets up the stdio of a process before the runtime runs it.
    pub async fn new(cfg: &StdioConfig, owner: &Owner) -> Result<Prepared> {
        let stdout = parse_dest("stdout", &cfg.stdout)?;
        let stderr = parse_dest("stderr", &cfg.stderr)?;
        let stdin_fifo = match parse_dest("stdin", &cfg.stdin)? {
            Dest::Null => None,
            Dest::Fifo(p) | Dest::File(p) => Some(p),
            _ => {
                return Err(ShimError::InvalidArgument(format!(
                    "stdin {:?}: must be a fifo",
                    cfg.stdin
                )))
            }
        };
        let mut io = ProcessIo::default();
        if cfg.terminal {
            let console = ConsoleSocket::bind().map_err(|e| ShimError::io("console socket", e))?;
            if let Dest::Cri(p) = &stdout {
                io.cri = Some(Arc::new(open_cri(p)?));
            }
            return Ok(Prepared {
                io,
                child: ChildStdio::null(),
                console: Some(console),
                pending: Pending {
                    stdin_fifo,
                    stdout: Some(stdout),
                },
            });
        }

        // stdin: a pipe the shim feeds from the fifo, so CloseIO can end it.
        let child_stdin = match stdin_fifo {
            None => Stdio::null(),
            Some(fifo) => {
                let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
                    .map_err(|e| ShimError::Internal(format!("stdin pipe: {e}")))?;
                let (tx, rx) = oneshot::channel();
                io.stdin_close = Some(tx);
                tokio::spawn(copy_stdin(fifo, InputSink::Pipe(w), rx));
                Stdio::from(r)
            }
        };

        // Shared CRI log (stdout and stderr to one file) and one logger binary for both.
        let cri_path = match (&stdout, &stderr) {
            (Dest::Cri(p), _) | (_, Dest::Cri(p)) => Some(p.clone()),
            _ => None,
        };
        if let Some(p) = cri_path {
            io.cri = Some(Arc::new(open_cri(&p)?));
        }
        let binary = match (&stdout, &stderr) {
            (Dest::Binary(b, a), _) | (_, Dest::Binary(b, a)) => Some((b.clone(), a.clone())),
            _ => None,
        };
        let mut child_out = Vec::new();
        let mut logger_reads = Vec::new();
        for (dest, stream) in [(&stdout, Stream::Stdout), (&stderr, Stream::Stderr)] {
            let s = match dest {
                Dest::Null => Stdio::null(),
                Dest::File(p) => Stdio::from(open_file(p)?),
                Dest::Fifo(p) => Stdio::from(open_fifo(p)?),
                Dest::Cri(p) => {
                    let log = match &io.cri {
                        Some(l) if l.path() == p => l.clone(),
                        _ => Arc::new(open_cri(p)?),
                    };
                    let (r, w) = pipe_pair()?;
                    io.copies
                        .push(tokio::spawn(copy_pipe_to_cri(r, log, stream)));
                    Stdio::from(w)
                }
                Dest::Binary(..) => {
                    let (r, w) = pipe_pair()?;
                    logger_reads.push(r);
                    Stdio::from(w)
                }
            };
            child_out.push(s);
        }
        if let Some((bin, args)) = binary {
            let mut reads = logger_reads.into_iter();
            let (a, b) = (reads.next(), reads.next());
            let (out_r, err_r) = match (a, b) {
                (Some(a), Some(b)) => (a, b),
                (Some(a), None) => {
                    // Only one stream goes to the logger: give it an empty pipe for the other.
                    let (r, _w) = pipe_pair()?;
                    if matches!(stdout, Dest::Binary(..)) {
                        (a, r)
                    } else {
                        (r, a)
                    }
                }
                _ => return Err(ShimError::Internal("logger pipes".into())),
            };
            logger::start(&bin, &args, owner, (out_r, err_r)).await?;
        }
        let mut it = child_out.into_iter();
        let (Some(stdout_s), Some(stderr_s)) = (it.next(), it.next()) else {
            return Err(ShimError::Internal("stdio setup".into()));
        };
        Ok(Prepared {
            io,
            child: ChildStdio {
                stdin: child_stdin,
                stdout: stdout_s,
                stderr: stderr_s,
            },
            console: None,
            pending: Pending::default(),
        })
    }

    /// After the runtime has run: receives the pty master (with a terminal) and starts the
    /// copies. Returns the process's stdio state.
    pub async fn finish(mut self, owner: &Owner) -> Result<ProcessIo> {
        let Some(console) = self.console.take() else {
            return Ok(self.io);
        };
        let master = Arc::new(
            console
                .receive(Duration::from_secs(10))
                .await
                .map_err(|e| ShimError::Internal(format!("receive pty master: {e}")))?,
        );
        // Default size until ResizePty says otherwise.
        let _ = master.resize(80, 24);
        if let Some(fifo) = self.pending.stdin_fifo.take() {
            let (tx, rx) = oneshot::channel();
            self.io.stdin_close = Some(tx);
            tokio::spawn(copy_stdin(fifo, InputSink::Pty(master.clone()), rx));
        }
        let sink = match self.pending.stdout.take().unwrap_or(Dest::Null) {
            Dest::Null => Sink::Null,
            Dest::File(p) => Sink::File(open_file(&p)?),
            Dest::Fifo(p) => Sink::Pipe(
                pipe::Sender::from_owned_fd(OwnedFd::from(open_fifo(&p)?))
                    .map_err(|e| ShimError::io(p.display(), e))?,
            ),
            Dest::Cri(p) => {
                let log = match &self.io.cri {
                    Some(l) => l.clone(),
                    None => Arc::new(open_cri(&p)?),
                };
                Sink::Cri(log, LineSplitter::new(Stream::Stdout))
            }
            Dest::Binary(bin, args) => {
                let (out_r, out_w) = pipe_pair()?;
                let (err_r, _err_w) = pipe_pair()?;
                logger::start(&bin, &args, owner, (out_r, err_r)).await?;
                Sink::Pipe(
                    pipe::Sender::from_owned_fd(out_w)
                        .map_err(|e| ShimError::io("logger pipe", e))?,
                )
            }
        };
        self.io
            .copies
            .push(tokio::spawn(copy_pty_out(master.clone(), sink)));
        self.io.console = Some(master);
        Ok(self.io)
    }
}

impl Prepared {
    /// The stdio for the runtime command, taken once.
    pub fn take_child(&mut self) -> ChildStdio {
        std::mem::replace(&mut self.child, ChildStdio::null())
    }
}

impl ProcessIo {
    /// Closes the process's stdin (CloseIO): it reads EOF.
    pub fn close_stdin(&mut self) {
        if let Some(tx) = self.stdin_close.take() {
            let _ = tx.send(());
        }
    }

    /// Resizes the pty; FailedPrecondition without one.
    pub fn resize(&self, width: u32, height: u32) -> Result<()> {
        let Some(m) = &self.console else {
            return Err(ShimError::FailedPrecondition(
                "the process has no terminal to resize".into(),
            ));
        };
        let w = u16::try_from(width).unwrap_or(u16::MAX);
        let h = u16::try_from(height).unwrap_or(u16::MAX);
        m.resize(w, h).map_err(|e| ShimError::io("resize pty", e))
    }

    /// Reopens the CRI log (ReopenContainerLog); FailedPrecondition without one.
    pub fn reopen_log(&self) -> Result<()> {
        let Some(log) = &self.cri else {
            return Err(ShimError::FailedPrecondition(
                "the process does not write a CRI log".into(),
            ));
        };
        log.reopen()
            .map_err(|e| ShimError::io(log.path().display(), e))
    }

    /// Waits until the output copies reached EOF, at most `timeout` (a background process may
    /// hold the pipe open forever). Then stops feeding stdin.
    pub async fn drain(&mut self, timeout: Duration) {
        let copies = std::mem::take(&mut self.copies);
        let deadline = tokio::time::Instant::now() + timeout;
        for mut c in copies {
            if tokio::time::timeout_at(deadline, &mut c).await.is_err() {
                c.abort();
            }
        }
        self.close_stdin();
    }
}

fn pipe_pair() -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| ShimError::Internal(format!("pipe: {e}")))
}

fn open_file(p: &Path) -> Result<File> {
    if let Some(dir) = p.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(p)
        .map_err(|e| ShimError::io(p.display(), e))
}

/// Opens a fifo for writing without waiting for its reader (O_RDWR never blocks on a fifo).
fn open_fifo(p: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(p)
        .map_err(|e| ShimError::io(p.display(), e))
}

fn open_cri(p: &Path) -> Result<CriLog> {
    if let Some(dir) = p.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    CriLog::open(p).map_err(|e| ShimError::io(p.display(), e))
}

enum InputSink {
    Pipe(OwnedFd),
    Pty(Arc<PtyMaster>),
}

/// Feeds the process's stdin from the daemon's fifo until EOF or CloseIO.
async fn copy_stdin(fifo: PathBuf, sink: InputSink, mut close: oneshot::Receiver<()>) {
    // Opening a fifo for reading waits for its writer: do that off the runtime thread.
    let (tx, rx) = oneshot::channel();
    let path = fifo.clone();
    std::thread::spawn(move || {
        let _ = tx.send(File::open(&path));
    });
    let file = tokio::select! {
        f = rx => match f { Ok(Ok(f)) => f, _ => return },
        _ = &mut close => return,
    };
    let Ok(mut src) = pipe::Receiver::from_file(file) else {
        return;
    };
    let mut pipe_sink = match &sink {
        InputSink::Pipe(fd) => match fd.try_clone().map(pipe::Sender::from_owned_fd) {
            Ok(Ok(s)) => Some(s),
            _ => return,
        },
        InputSink::Pty(_) => None,
    };
    let mut buf = vec![0u8; 32 * 1024];
    let mut closing = false;
    loop {
        let n = if closing {
            // CloseIO: deliver what is already written, then end stdin.
            match src.try_read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            }
        } else {
            tokio::select! {
                r = src.read(&mut buf) => match r { Ok(0) | Err(_) => break, Ok(n) => n },
                _ = &mut close => { closing = true; continue }
            }
        };
        let ok = match (&mut pipe_sink, &sink) {
            (Some(s), _) => s.write_all(&buf[..n]).await.is_ok(),
            (None, InputSink::Pty(m)) => m.write_all(&buf[..n]).await.is_ok(),
            _ => false,
        };
        if !ok {
            break;
        }
    }
    // For a pty, EOF is the terminal's EOF character.
    if let InputSink::Pty(m) = &sink {
        let _ = m.write_all(&[4]).await;
    }
    drop(pipe_sink);
    drop(sink);
}

async fn copy_pipe_to_cri(r: OwnedFd, log: Arc<CriLog>, stream: Stream) {
    let Ok(mut rx) = pipe::Receiver::from_owned_fd(r) else {
        return;
    };
    let mut split = LineSplitter::new(stream);
    let mut buf = vec![0u8; 32 * 1024];
    let mut out = Vec::with_capacity(buf.len() + 256);
    loop {
        out.clear();
        match rx.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => split.feed(&buf[..n], SystemTime::now(), &mut out),
        }
        let _ = log.write_entries(&out);
    }
    out.clear();
    split.finish(SystemTime::now(), &mut out);
    let _ = log.write_entries(&out);
}

enum Sink {
    Null,
    File(File),
    Pipe(pipe::Sender),
    Cri(Arc<CriLog>, LineSplitter),
}

async fn copy_pty_out(master: Arc<PtyMaster>, mut sink: Sink) {
    let mut buf = vec![0u8; 32 * 1024];
    let mut out = Vec::new();
    loop {
        let n = match master.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let data = &buf[..n];
        let _ = match &mut sink {
            Sink::Null => Ok(()),
            Sink::File(f) => f.write_all(data),
            Sink::Pipe(p) => p.write_all(data).await,
            Sink::Cri(log, split) => {
                out.clear();
                split.feed(data, SystemTime::now(), &mut out);
                log.write_entries(&out)
            }
        };
    }
    if let Sink::Cri(log, split) = &mut sink {
        out.clear();
        split.finish(SystemTime::now(), &mut out);
        let _ = log.write_entries(&out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_parse_as_containerd_names_them() {
        assert_eq!(parse_dest("stdout", "").expect("null"), Dest::Null);
        assert_eq!(
            parse_dest("stdout", "/run/x/fifo").expect("fifo"),
            Dest::Fifo("/run/x/fifo".into())
        );
        assert_eq!(
            parse_dest("stdout", "file:///tmp/o").expect("file"),
            Dest::File("/tmp/o".into())
        );
        assert_eq!(
            parse_dest("stdout", "cri:///var/log/c.log").expect("cri"),
            Dest::Cri("/var/log/c.log".into())
        );
        assert_eq!(
            parse_dest("stdout", "binary:///bin/logger?id=1&debug").expect("binary"),
            Dest::Binary(
                "/bin/logger".into(),
                vec!["id".into(), "1".into(), "debug".into()]
            )
        );
        let e = parse_dest("stderr", "http://x/y").expect_err("scheme");
        assert!(e.to_string().contains("stderr"), "{e}");
        assert!(parse_dest("stdout", "relative/path").is_err());
    }
}
