//! Kubernetes' remote command semantics, apart from the protocol that carries them: copy a
//! client's stdin/stdout/stderr/resize streams to an exec and report how it ended.
//!
//! SPDY and WebSocket sessions each turn their streams or channels into [`ClientStreams`]
//! and write the returned [`Outcome`] to their error stream with [`status_json`] (v4 and
//! later) or [`error_text`] (older versions).

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::container::exec_stream::ExecStreams;
use crate::pods::Pods;

/// A stream from the client.
pub type ClientRead = Box<dyn AsyncRead + Send + Unpin>;
/// A stream to the client.
pub type ClientWrite = Box<dyn AsyncWrite + Send + Unpin>;

/// A terminal size message (the resize stream carries one JSON object per change).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct TerminalSize {
    /// Columns.
    #[serde(rename = "Width")]
    pub width: u16,
    /// Rows.
    #[serde(rename = "Height")]
    pub height: u16,
}

/// The client's side of a session.
#[derive(Default)]
pub struct ClientStreams {
    /// Input for the process.
    pub stdin: Option<ClientRead>,
    /// Where its output goes.
    pub stdout: Option<ClientWrite>,
    /// Where its error output goes (unused with a terminal).
    pub stderr: Option<ClientWrite>,
    /// Terminal sizes, as they change.
    pub resize: Option<mpsc::Receiver<TerminalSize>>,
    /// Whether a terminal was asked for.
    pub tty: bool,
}

/// How a session's command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It exited with this code.
    Exited(i32),
    /// It could not run, or the session failed.
    Failed(String),
}

/// How long output may trail the exit before the session ends anyway.
const OUTPUT_GRACE: Duration = Duration::from_secs(2);

/// Reads JSON terminal sizes from a resize stream (one object after another, as
/// client-go's encoder writes them) into a channel.
pub fn resize_reader(mut stream: ClientRead) -> mpsc::Receiver<TerminalSize> {
    let (tx, rx) = mpsc::channel(8);
    tokio::spawn(async move {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 1024];
        loop {
            // The command may end while the client keeps its resize stream open (a SPDY
            // client never has to close it): stop reading then, or the stream, and with
            // it the session and its connection, would be held forever.
            let read = tokio::select! {
                r = stream.read(&mut chunk) => r,
                () = tx.closed() => return,
            };
            match read {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            let mut de = serde_json::Deserializer::from_slice(&buf).into_iter::<TerminalSize>();
            let mut used = 0;
            while let Some(Ok(size)) = de.next() {
                used = de.byte_offset();
                if tx.send(size).await.is_err() {
                    return;
                }
            }
            buf.drain(..used);
            if buf.len() > 64 * 1024 {
                return; // not a resize stream
            }
        }
    });
    rx
}

/// Runs `cmd` in container `container` with the client's streams; returns how it ended.
/// The process is killed and deleted if the session ends first (the future is dropped).
pub async fn exec(
    pods: &Arc<Pods>,
    container: &str,
    cmd: Vec<String>,
    client: ClientStreams,
) -> Outcome {
    let streams = ExecStreams {
        tty: client.tty,
        stdin: client.stdin.is_some(),
        stdout: client.stdout.is_some(),
        stderr: client.stderr.is_some() && !client.tty,
    };
    let exec = match pods.exec_stream(container, cmd, streams).await {
        Ok(e) => e,
        Err(e) => return Outcome::Failed(e.to_string()),
    };
    let control = &exec.control;
    let out_task = tokio::spawn(copy_out(exec.stdout, client.stdout));
    let err_task = tokio::spawn(copy_out(exec.stderr, client.stderr));
    // Input until the client's EOF, then the process's EOF; these two never finish on
    // their own: the exit ends the session.
    let input = async {
        if let (Some(mut from), Some(mut to)) = (client.stdin, exec.stdin) {
            let _ = tokio::io::copy(&mut from, &mut to).await;
            drop(to);
            if let Err(e) = control.close_stdin().await {
                tracing::debug!(error = %e, "closing exec stdin");
            }
        }
        std::future::pending::<()>().await
    };
    let resizes = async {
        if let Some(mut sizes) = client.resize {
            while let Some(s) = sizes.recv().await {
                let (w, h) = (u32::from(s.width), u32::from(s.height));
                if let Err(e) = control.resize(w, h).await {
                    tracing::debug!(error = %e, "resizing exec terminal");
                }
            }
        }
        std::future::pending::<()>().await
    };
    let code = tokio::select! {
        code = control.wait() => code,
        () = input => unreachable!("input never ends the session"),
        () = resizes => unreachable!("resizes never end the session"),
    };
    for t in [out_task, err_task] {
        let abort = t.abort_handle();
        if tokio::time::timeout(OUTPUT_GRACE, t).await.is_err() {
            abort.abort();
        }
    }
    match code {
        Ok(c) => Outcome::Exited(c),
        Err(e) => Outcome::Failed(e.to_string()),
    }
}

/// Attaches the client's streams to a running container: its log followed to the
/// client until the container stops, the client's input to its stdin, resizes to its
/// terminal. Ends with success when the container stops (attach reports no exit code) or
/// when the client goes away.
pub async fn attach(
    pods: &Arc<Pods>,
    target: crate::container::attach::AttachTarget,
    client: ClientStreams,
) -> Outcome {
    let id = target.id.clone();
    let running = {
        let pods = pods.clone();
        let id = id.clone();
        move || pods.is_running(&id)
    };
    let stderr = if target.tty { None } else { client.stderr };
    let follow =
        crate::container::attach::follow_log(&target.log_path, client.stdout, stderr, running);
    let input = async {
        if let Some(stdin) = client.stdin {
            target.feed_stdin(stdin).await;
        }
        std::future::pending::<()>().await
    };
    let resizes = async {
        if let Some(mut sizes) = client.resize {
            while let Some(s) = sizes.recv().await {
                let (w, h) = (u32::from(s.width), u32::from(s.height));
                if let Err(e) = pods.resize_container(&id, w, h).await {
                    tracing::debug!(error = %e, "resizing attached terminal");
                }
            }
        }
        std::future::pending::<()>().await
    };
    tokio::select! {
        () = follow => Outcome::Exited(0),
        () = input => unreachable!("input never ends the session"),
        () = resizes => unreachable!("resizes never end the session"),
    }
}

/// Copies a process's output to the client until EOF, then half-closes the client's side.
async fn copy_out(from: Option<tokio::net::unix::pipe::Receiver>, to: Option<ClientWrite>) {
    if let (Some(mut from), Some(mut to)) = (from, to) {
        let _ = tokio::io::copy(&mut from, &mut to).await;
        let _ = to.shutdown().await;
    }
}

/// The v4+ error stream's message: a `metav1.Status` as JSON, with the exit code in
/// `details.causes` (reason `ExitCode`) when it is not zero, as the kubelet writes it.
pub fn status_json(outcome: &Outcome) -> Vec<u8> {
    let v = match outcome {
        Outcome::Exited(0) => serde_json::json!({"metadata": {}, "status": "Success"}),
        Outcome::Exited(code) => serde_json::json!({
            "metadata": {},
            "status": "Failure",
            "message": format!("command terminated with non-zero exit code: exit status {code}"),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
        }),
        Outcome::Failed(msg) => serde_json::json!({
            "metadata": {},
            "status": "Failure",
            "message": msg,
            "reason": "InternalError",
        }),
    };
    serde_json::to_vec(&v).unwrap_or_default()
}

/// The error stream's text for protocol versions before v4: nothing on success.
pub fn error_text(outcome: &Outcome) -> Option<String> {
    match outcome {
        Outcome::Exited(0) => None,
        Outcome::Exited(code) => Some(format!(
            "command terminated with non-zero exit code: exit status {code}"
        )),
        Outcome::Failed(msg) => Some(msg.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_carry_the_exit_code() {
        let ok: serde_json::Value =
            serde_json::from_slice(&status_json(&Outcome::Exited(0))).expect("json");
        assert_eq!(ok["status"], "Success");
        let seven: serde_json::Value =
            serde_json::from_slice(&status_json(&Outcome::Exited(7))).expect("json");
        assert_eq!(seven["status"], "Failure");
        assert_eq!(seven["reason"], "NonZeroExitCode");
        assert_eq!(seven["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(seven["details"]["causes"][0]["message"], "7");
        assert_eq!(error_text(&Outcome::Exited(0)), None);
        assert!(error_text(&Outcome::Exited(7)).is_some_and(|t| t.contains("exit status 7")));
    }

    #[tokio::test]
    async fn resize_messages_split_anywhere_come_out_whole() {
        let (mut tx, rx) = tokio::io::duplex(64);
        let mut sizes = resize_reader(Box::new(rx));
        let text = br#"{"Width":80,"Height":24}{"Width":132,"Height":43}"#;
        for part in text.chunks(7) {
            tx.write_all(part).await.expect("write");
        }
        drop(tx);
        assert_eq!(
            sizes.recv().await,
            Some(TerminalSize {
                width: 80,
                height: 24
            })
        );
        assert_eq!(
            sizes.recv().await,
            Some(TerminalSize {
                width: 132,
                height: 43
            })
        );
        assert_eq!(sizes.recv().await, None);
    }
}
