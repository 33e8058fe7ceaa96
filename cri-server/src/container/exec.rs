//! ExecSync: run a command in a running container and return its output and exit code.
//!
//! Output comes back through two fifos in the bundle that the daemon opens read-write
//! (so neither open blocks and EOF never comes early); the exec's exit, reported by the
//! shim's `Wait`, ends the read after what is buffered has been drained.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use runtime_v2_api::ExecProcess;
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;

use super::record::{ContainerRecord, ContainerState};
use crate::pods::{new_id, PodError, Pods};
use crate::spec;
use runtime_v2_api::TaskClient;

/// Output kept per stream; the rest is dropped and a marker says so.
pub const EXEC_OUTPUT_CAP: usize = 16 << 20;
/// Appended to a stream whose output went over [`EXEC_OUTPUT_CAP`].
pub const TRUNCATED_MARKER: &[u8] = b"\n[crius: output truncated at 16 MiB]\n";

/// What an exec produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOutput {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub exit_code: i32,
}

impl Pods {
    /// Runs `cmd` in container `id`; `timeout` of zero means none.
    pub async fn exec_sync(
        self: &Arc<Self>,
        id: &str,
        cmd: Vec<String>,
        timeout: Duration,
    ) -> Result<ExecOutput, PodError> {
        if cmd.is_empty() {
            return Err(PodError::InvalidArgument("cmd is empty".into()));
        }
        let (rec, client, process) = self.exec_target(id, cmd, false)?;
        let exec_id = new_id()?[..16].to_string();
        let dir = self.cfg.dirs.bundle(&rec.id);
        let out_path = dir.join(format!("exec-{exec_id}-stdout"));
        let err_path = dir.join(format!("exec-{exec_id}-stderr"));
        let fifos = Fifos::make(&[&out_path, &err_path])?;
        let (out, out_keep) = fifos.open(0)?;
        let (err, err_keep) = fifos.open(1)?;
        let out_task = tokio::spawn(read_capped(out));
        let err_task = tokio::spawn(read_capped(err));
        let run = async {
            client
                .exec(ExecProcess {
                    id: rec.id.clone(),
                    exec_id: exec_id.clone(),
                    terminal: false,
                    stdin: String::new(),
                    stdout: out_path.display().to_string(),
                    stderr: err_path.display().to_string(),
                    spec: process,
                })
                .await?;
            client.start(&rec.id, &exec_id).await?;
            let waited = if timeout.is_zero() {
                Ok(client.wait(&rec.id, &exec_id).await)
            } else {
                tokio::time::timeout(timeout, client.wait(&rec.id, &exec_id)).await
            };
            match waited {
                Ok(st) => Ok::<_, PodError>(Some(st?.code as i32)),
                Err(_) => {
                    let _ = client
                        .kill(&rec.id, &exec_id, libc::SIGKILL as u32, true)
                        .await;
                    let _ = tokio::time::timeout(
                        Duration::from_secs(5),
                        client.wait(&rec.id, &exec_id),
                    )
                    .await;
                    Ok(None)
                }
            }
        };
        let result = run.await;
        // The exec ended: once the shim closes its ends too, the readers see EOF. A child
        // that keeps them open must not hold ExecSync forever.
        drop((out_keep, err_keep));
        let collect = |t: tokio::task::JoinHandle<Vec<u8>>| async move {
            let abort = t.abort_handle();
            match tokio::time::timeout(OUTPUT_GRACE, t).await {
                Ok(Ok(buf)) => buf,
                _ => {
                    abort.abort();
                    Vec::new()
                }
            }
        };
        let (stdout, stderr) = tokio::join!(collect(out_task), collect(err_task));
        if let Err(e) = client.delete(&rec.id, &exec_id).await {
            tracing::debug!(container = %rec.id, exec = %exec_id, error = %e, "deleting exec");
        }
        drop(fifos);
        match result? {
            Some(exit_code) => Ok(ExecOutput {
                stdout,
                stderr,
                exit_code,
            }),
            None => Err(PodError::DeadlineExceeded(format!(
                "command in container {} timed out after {timeout:?} and was killed",
                rec.id
            ))),
        }
    }
}

impl Pods {
    /// What an exec of `cmd` in container `id` needs: the running container, its pod's
    /// shim, and the OCI process (the container's, with `cmd` and `tty`).
    pub(crate) fn exec_target(
        &self,
        id: &str,
        cmd: Vec<String>,
        tty: bool,
    ) -> Result<(ContainerRecord, TaskClient, serde_json::Value), PodError> {
        let rec = self
            .container(id)?
            .ok_or_else(|| PodError::NotFound(format!("container {id:?} not found")))?;
        if rec.state != ContainerState::Running {
            return Err(PodError::FailedPrecondition(format!(
                "container {} is not running ({:?})",
                rec.id, rec.state
            )));
        }
        let client = self.shim(&rec.sandbox_id).ok_or_else(|| {
            PodError::Unavailable(format!(
                "the shim of pod sandbox {} is not connected",
                rec.sandbox_id
            ))
        })?;
        let container_spec = rec
            .spec
            .as_ref()
            .ok_or_else(|| PodError::Internal(format!("container {} has no spec", rec.id)))?
            .parse()
            .map_err(|e| PodError::internal("container spec", e))?;
        let process = spec::exec_process(&container_spec, cmd, tty).map_err(PodError::from)?;
        Ok((rec, client, process))
    }
}

/// How long output may trail the exec's exit.
const OUTPUT_GRACE: Duration = Duration::from_secs(2);

/// Reads until EOF, keeping at most [`EXEC_OUTPUT_CAP`] bytes.
async fn read_capped(mut rx: pipe::Receiver) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut truncated = false;
    let keep = |buf: &mut Vec<u8>, data: &[u8], truncated: &mut bool| {
        let room = EXEC_OUTPUT_CAP.saturating_sub(buf.len());
        buf.extend_from_slice(&data[..data.len().min(room)]);
        if data.len() > room {
            *truncated = true;
        }
    };
    loop {
        match rx.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => keep(&mut buf, &chunk[..n], &mut truncated),
        }
    }
    if truncated {
        buf.extend_from_slice(TRUNCATED_MARKER);
    }
    buf
}

/// Makes a fifo (mode 0600) at `p`.
pub(crate) fn make_fifo(p: &Path) -> Result<(), PodError> {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        p,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .map_err(|e| PodError::internal(format!("mkfifo {}", p.display()), e))
}

/// Fifos removed when dropped.
pub(crate) struct Fifos(Vec<PathBuf>);

impl Fifos {
    /// Makes a fifo at each path (mode 0600).
    pub(crate) fn make(paths: &[&Path]) -> Result<Fifos, PodError> {
        let mut made = Fifos(Vec::new());
        for p in paths {
            make_fifo(p)?;
            made.0.push(p.to_path_buf());
        }
        Ok(made)
    }

    /// Opens fifo `i` for reading, plus a write end of our own: the open does not block,
    /// and EOF cannot come before the shim has even opened its end. Dropping the returned
    /// sender once the exec has exited lets EOF arrive when the shim is done copying (the
    /// Go shim copies output through its own pipe, after the process exited).
    pub(crate) fn open(&self, i: usize) -> Result<(pipe::Receiver, pipe::Sender), PodError> {
        let p = self
            .0
            .get(i)
            .ok_or_else(|| PodError::Internal(format!("no fifo {i}")))?;
        let err = |e| PodError::internal(format!("opening {}", p.display()), e);
        let rx = pipe::OpenOptions::new().open_receiver(p).map_err(err)?;
        let tx = pipe::OpenOptions::new().open_sender(p).map_err(err)?;
        Ok((rx, tx))
    }

    /// Opens fifo `i` as the process's input: read-write, so that the open does not wait
    /// for the shim's reader and early writes wait in the pipe instead of failing with
    /// EPIPE. Dropping it is the process's EOF (no writer is left).
    pub(crate) fn open_input(&self, i: usize) -> Result<pipe::Sender, PodError> {
        let p = self
            .0
            .get(i)
            .ok_or_else(|| PodError::Internal(format!("no fifo {i}")))?;
        pipe::OpenOptions::new()
            .read_write(true)
            .open_sender(p)
            .map_err(|e| PodError::internal(format!("opening {}", p.display()), e))
    }
}

impl Drop for Fifos {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}
