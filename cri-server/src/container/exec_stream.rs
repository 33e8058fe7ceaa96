//! Interactive exec: a process in a running container whose stdin, stdout and stderr (or
//! terminal) stay open for a streaming session (`kubectl exec`), whatever protocol carries
//! them. The streaming server copies between its streams and the pipes here.
//!
//! As in ExecSync, stdio goes through fifos in the bundle; the daemon opens each one with
//! an end of its own too, so no open blocks and no EOF comes before the shim has its end.

use std::sync::Arc;
use std::time::Duration;

use runtime_v2_api::{ExecProcess, TaskClient};
use tokio::net::unix::pipe;

use super::exec::Fifos;
use crate::pods::{new_id, PodError, Pods};

/// Which streams the client asked for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExecStreams {
    /// A terminal: stdout carries it, there is no separate stderr.
    pub tty: bool,
    /// The client sends input.
    pub stdin: bool,
    /// The client wants stdout.
    pub stdout: bool,
    /// The client wants stderr (ignored with a terminal).
    pub stderr: bool,
}

/// A started exec. Dropping it deletes the exec in the shim (killing it if it still runs)
/// and removes its fifos.
pub struct ExecStream {
    /// Input, when asked for: drop it (or call [`ExecControl::close_stdin`]) for EOF.
    pub stdin: Option<pipe::Sender>,
    /// Output (the terminal's, with `tty`).
    pub stdout: Option<pipe::Receiver>,
    /// Error output (never with `tty`).
    pub stderr: Option<pipe::Receiver>,
    /// Resize, wait, close stdin.
    pub control: ExecControl,
}

/// What can be done to a running exec besides its stdio.
/// Every method takes `&self`, so that input, resizes and the wait for the exit can run at
/// once in one session.
pub struct ExecControl {
    client: TaskClient,
    container: String,
    exec_id: String,
    /// Our write ends of the output fifos, dropped when the exec exits so that the
    /// readers see EOF once the shim is done copying.
    keep: std::sync::Mutex<Vec<pipe::Sender>>,
    fifos: Option<Fifos>,
    exited: std::sync::atomic::AtomicBool,
}

impl Pods {
    /// Starts `cmd` in container `id` with the stdio `streams` asks for.
    pub async fn exec_stream(
        self: &Arc<Self>,
        id: &str,
        cmd: Vec<String>,
        streams: ExecStreams,
    ) -> Result<ExecStream, PodError> {
        if cmd.is_empty() {
            return Err(PodError::InvalidArgument("cmd is empty".into()));
        }
        let (rec, client, process) = self.exec_target(id, cmd, streams.tty)?;
        let exec_id = new_id()?[..16].to_string();
        let dir = self.cfg.dirs.bundle(&rec.id);
        let path = |name: &str| dir.join(format!("exec-{exec_id}-{name}"));
        let (stdin_path, out_path, err_path) = (path("stdin"), path("stdout"), path("stderr"));
        let want_err = streams.stderr && !streams.tty;
        let mut made: Vec<&std::path::Path> = Vec::new();
        if streams.stdin {
            made.push(&stdin_path);
        }
        if streams.stdout {
            made.push(&out_path);
        }
        if want_err {
            made.push(&err_path);
        }
        let fifos = Fifos::make(&made)?;
        let mut next = 0;
        let stdin = if streams.stdin {
            next += 1;
            Some(fifos.open_input(0)?)
        } else {
            None
        };
        let mut keep = Vec::new();
        let mut output = |want: bool| -> Result<Option<pipe::Receiver>, PodError> {
            if !want {
                return Ok(None);
            }
            let (rx, tx) = fifos.open(next)?;
            next += 1;
            keep.push(tx);
            Ok(Some(rx))
        };
        let stdout = output(streams.stdout)?;
        let stderr = output(want_err)?;
        let uri = |on: bool, p: &std::path::Path| {
            if on {
                p.display().to_string()
            } else {
                String::new()
            }
        };
        let control = ExecControl {
            client: client.clone(),
            container: rec.id.clone(),
            exec_id: exec_id.clone(),
            keep: std::sync::Mutex::new(keep),
            fifos: Some(fifos),
            exited: std::sync::atomic::AtomicBool::new(false),
        };
        client
            .exec(ExecProcess {
                id: rec.id.clone(),
                exec_id: exec_id.clone(),
                terminal: streams.tty,
                stdin: uri(streams.stdin, &stdin_path),
                stdout: uri(streams.stdout, &out_path),
                stderr: uri(want_err, &err_path),
                spec: process,
            })
            .await?;
        if let Err(e) = client.start(&rec.id, &exec_id).await {
            // Nothing runs; the drop still deletes the exec.
            control
                .exited
                .store(true, std::sync::atomic::Ordering::SeqCst);
            return Err(e.into());
        }
        Ok(ExecStream {
            stdin,
            stdout,
            stderr,
            control,
        })
    }
}

impl ExecControl {
    /// Sets the terminal's size.
    pub async fn resize(&self, width: u32, height: u32) -> Result<(), PodError> {
        self.client
            .resize_pty(&self.container, &self.exec_id, width, height)
            .await
            .map_err(PodError::from)
    }

    /// Ends the process's stdin once what was written is delivered (the client closed
    /// its stdin stream). The caller drops its [`ExecStream::stdin`] first.
    pub async fn close_stdin(&self) -> Result<(), PodError> {
        self.client
            .close_io(&self.container, &self.exec_id)
            .await
            .map_err(PodError::from)
    }

    /// Waits for the exit and returns its code. Output written before the exit still
    /// reaches the readers, which then see EOF.
    pub async fn wait(&self) -> Result<i32, PodError> {
        let st = self.client.wait(&self.container, &self.exec_id).await;
        self.exited.store(true, std::sync::atomic::Ordering::SeqCst);
        self.keep.lock().unwrap_or_else(|p| p.into_inner()).clear();
        Ok(st?.code as i32)
    }

    /// Kills the process (the session ended before it did).
    pub async fn kill(&self) {
        let _ = self
            .client
            .kill(&self.container, &self.exec_id, libc::SIGKILL as u32, true)
            .await;
    }
}

/// How long a dropped exec that still runs gets to die after SIGKILL.
const KILL_WAIT: Duration = Duration::from_secs(5);

impl Drop for ExecControl {
    fn drop(&mut self) {
        let client = self.client.clone();
        let (id, exec_id) = (self.container.clone(), self.exec_id.clone());
        let running = !self.exited.load(std::sync::atomic::Ordering::SeqCst);
        let fifos = self.fifos.take();
        let keep = std::mem::take(&mut *self.keep.lock().unwrap_or_else(|p| p.into_inner()));
        // Deleting needs the shim: done on the runtime, after which the fifos go.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if running {
                    let _ = client.kill(&id, &exec_id, libc::SIGKILL as u32, true).await;
                    let _ = tokio::time::timeout(KILL_WAIT, client.wait(&id, &exec_id)).await;
                }
                drop(keep);
                if let Err(e) = client.delete(&id, &exec_id).await {
                    tracing::debug!(container = %id, exec = %exec_id, error = %e, "deleting exec");
                }
                drop(fifos);
            });
        }
    }
}
