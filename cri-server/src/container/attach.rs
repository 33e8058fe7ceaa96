//! Attach: a streaming session on a running container's own stdio (`kubectl attach`).
//!
//! Output comes from the container's CRI log, followed from its end: with our shim the
//! shim writes that file itself, so following it works the same for every shim and needs
//! no second copy of the output. Input goes to the stdin fifo a container created with
//! `stdin` gets; the daemon keeps its write end for the container's life, so the container
//! does not see EOF between sessions (unless `stdin_once`: the first session's end closes
//! it).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWrite, AsyncWriteExt};
use tokio::net::unix::pipe;

use super::record::ContainerState;
use crate::pods::{lock, PodError, Pods};

/// The write end of a container's stdin fifo, shared by its attach sessions.
#[derive(Clone)]
pub struct StdinPipe(Arc<tokio::sync::Mutex<Option<pipe::Sender>>>);

impl StdinPipe {
    /// Makes the fifo at `path` and opens our end.
    pub fn make(path: &Path) -> Result<StdinPipe, PodError> {
        super::exec::make_fifo(path)?;
        StdinPipe::open(path)
    }

    /// Opens our end of an existing fifo: read-write, so the open does not wait for the
    /// shim and the container sees no EOF while we hold it.
    pub fn open(path: &Path) -> Result<StdinPipe, PodError> {
        let tx = pipe::OpenOptions::new()
            .read_write(true)
            .open_sender(path)
            .map_err(|e| PodError::internal(format!("opening {}", path.display()), e))?;
        Ok(StdinPipe(Arc::new(tokio::sync::Mutex::new(Some(tx)))))
    }
}

/// Which of the container's streams a session wants.
#[derive(Debug, Clone, Copy, Default)]
pub struct AttachStreams {
    /// Send input.
    pub stdin: bool,
    /// Receive stdout.
    pub stdout: bool,
    /// Receive stderr.
    pub stderr: bool,
}

/// What an attach session needs of the container.
pub struct AttachTarget {
    /// Full id.
    pub id: String,
    /// Its CRI log.
    pub log_path: PathBuf,
    /// Its stdin, when it has one and the session wants it.
    pub stdin: Option<StdinPipe>,
    /// Close stdin when this session ends.
    pub stdin_once: bool,
    /// It has a terminal.
    pub tty: bool,
}

impl Pods {
    /// Checks that container `id` can be attached to and returns what a session needs.
    pub fn attach_target(&self, id: &str, want: AttachStreams) -> Result<AttachTarget, PodError> {
        let rec = self
            .container(id)?
            .ok_or_else(|| PodError::NotFound(format!("container {id:?} not found")))?;
        if rec.state != ContainerState::Running {
            return Err(PodError::FailedPrecondition(format!(
                "container {} is not running ({:?})",
                rec.id, rec.state
            )));
        }
        if want.stdin && !rec.config.stdin {
            return Err(PodError::InvalidArgument(format!(
                "stdin: container {} was not created with stdin",
                rec.id
            )));
        }
        if (want.stdout || want.stderr) && rec.log_path.is_empty() {
            return Err(PodError::FailedPrecondition(format!(
                "container {} has no log to follow (no log_path)",
                rec.id
            )));
        }
        let stdin = if want.stdin {
            lock(&self.stdin_pipes).get(&rec.id).cloned()
        } else {
            None
        };
        Ok(AttachTarget {
            id: rec.id.clone(),
            log_path: PathBuf::from(&rec.log_path),
            stdin,
            stdin_once: rec.config.stdin_once,
            tty: rec.config.tty,
        })
    }

    /// Whether container `id` still runs (an attach session ends when it stops).
    pub fn is_running(&self, id: &str) -> bool {
        matches!(
            self.container(id),
            Ok(Some(r)) if r.state == ContainerState::Running
        )
    }

    /// Resizes container `id`'s terminal.
    pub async fn resize_container(
        &self,
        id: &str,
        width: u32,
        height: u32,
    ) -> Result<(), PodError> {
        let rec = self
            .container(id)?
            .ok_or_else(|| PodError::NotFound(format!("container {id:?} not found")))?;
        let client = self.shim(&rec.sandbox_id).ok_or_else(|| {
            PodError::Unavailable(format!(
                "the shim of pod sandbox {} is not connected",
                rec.sandbox_id
            ))
        })?;
        client
            .resize_pty(&rec.id, "", width, height)
            .await
            .map_err(PodError::from)
    }
}

impl AttachTarget {
    /// Writes the client's input to the container's stdin until the client's EOF; with
    /// `stdin_once`, that EOF closes the container's stdin for good.
    pub async fn feed_stdin(&self, mut from: impl tokio::io::AsyncRead + Unpin) {
        let Some(pipe) = &self.stdin else {
            return;
        };
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let mut guard = pipe.0.lock().await;
            let Some(tx) = guard.as_mut() else {
                return;
            };
            if tx.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
        if self.stdin_once {
            pipe.0.lock().await.take();
        }
    }
}

/// Follows a CRI log from its current end, writing each entry's content to `stdout` or
/// `stderr` (a full line gets its newline back, a partial `P` entry none), until `alive`
/// says the container stopped and the file has nothing more.
pub async fn follow_log<F>(
    path: &Path,
    mut stdout: Option<Box<dyn AsyncWrite + Send + Unpin>>,
    mut stderr: Option<Box<dyn AsyncWrite + Send + Unpin>>,
    alive: F,
) where
    F: Fn() -> bool,
{
    let Ok(mut file) = tokio::fs::File::open(path).await else {
        return;
    };
    if file.seek(std::io::SeekFrom::End(0)).await.is_err() {
        return;
    }
    let mut pending = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut chunk).await.unwrap_or(0);
        if n == 0 {
            if !alive() {
                // One last look: what was written before the exit.
                let n = file.read(&mut chunk).await.unwrap_or(0);
                if n == 0 {
                    break;
                }
                pending.extend_from_slice(&chunk[..n]);
            } else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        } else {
            pending.extend_from_slice(&chunk[..n]);
        }
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            if let Some((stream, content)) = parse_entry(&line[..line.len() - 1]) {
                let to = match stream {
                    Stream::Stdout => stdout.as_mut(),
                    Stream::Stderr => stderr.as_mut(),
                };
                if let Some(w) = to {
                    if w.write_all(&content).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
    for w in [stdout.as_mut(), stderr.as_mut()].into_iter().flatten() {
        let _ = w.shutdown().await;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stream {
    Stdout,
    Stderr,
}

/// One CRI log entry (`<time> <stream> <F|P> <content>`, without its newline): the stream
/// and the bytes the container wrote.
fn parse_entry(line: &[u8]) -> Option<(Stream, Vec<u8>)> {
    let mut parts = line.splitn(4, |&b| b == b' ');
    let _time = parts.next()?;
    let stream = match parts.next()? {
        b"stdout" => Stream::Stdout,
        b"stderr" => Stream::Stderr,
        _ => return None,
    };
    let tag = parts.next()?;
    let mut content = parts.next().unwrap_or_default().to_vec();
    if tag.first() == Some(&b'F') {
        content.push(b'\n');
    }
    Some((stream, content))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_give_back_what_was_written() {
        assert_eq!(
            parse_entry(b"2026-01-01T00:00:00.000000000Z stdout F hello world"),
            Some((Stream::Stdout, b"hello world\n".to_vec()))
        );
        assert_eq!(
            parse_entry(b"2026-01-01T00:00:00.000000000Z stderr P part"),
            Some((Stream::Stderr, b"part".to_vec()))
        );
        assert_eq!(
            parse_entry(b"2026-01-01T00:00:00.000000000Z stdout F "),
            Some((Stream::Stdout, b"\n".to_vec()))
        );
        assert_eq!(parse_entry(b"garbage"), None);
    }

    #[tokio::test]
    async fn follows_from_the_end_until_the_container_stops() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("c.log");
        std::fs::write(&log, "t stdout F before the attach\n").expect("write");
        let alive = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let (out_w, mut out_r) = tokio::io::duplex(1 << 16);
        let (err_w, mut err_r) = tokio::io::duplex(1 << 16);
        let a = alive.clone();
        let path = log.clone();
        let follower = tokio::spawn(async move {
            follow_log(
                &path,
                Some(Box::new(out_w)),
                Some(Box::new(err_w)),
                move || a.load(std::sync::atomic::Ordering::SeqCst),
            )
            .await;
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&log)
            .expect("open");
        std::io::Write::write_all(&mut f, b"t stdout P hel").expect("append");
        std::io::Write::write_all(&mut f, b"\nt stdout F lo\nt stderr F oops\n").expect("append");
        drop(f);
        tokio::time::sleep(Duration::from_millis(150)).await;
        alive.store(false, std::sync::atomic::Ordering::SeqCst);
        follower.await.expect("follower");
        let mut out = String::new();
        out_r.read_to_string(&mut out).await.expect("read");
        let mut err = String::new();
        err_r.read_to_string(&mut err).await.expect("read");
        assert_eq!(out, "hello\n");
        assert_eq!(err, "oops\n");
    }
}
