//! Shim events applied to the records, and the container events `GetContainerEvents`
//! streams.

use std::sync::Arc;

use runtime_v2_api::{Envelope, TaskEvent};
use tokio::sync::mpsc;

use super::{lock, to_ns, Pods};
use crate::container::record::{ContainerState, Exit};
use crate::sandbox::record::SandboxState;

/// A container lifecycle event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerEvent {
    pub container_id: String,
    pub sandbox_id: String,
    pub kind: ContainerEventKind,
    /// Unix nanoseconds.
    pub at: i64,
}

/// The CRI's container event types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerEventKind {
    Created,
    Started,
    Stopped,
    Deleted,
}

/// The reason a container ended with `code`.
pub(crate) fn exit_reason(code: i32, oom_killed: bool) -> &'static str {
    if oom_killed {
        "OOMKilled"
    } else if code == 0 {
        "Completed"
    } else {
        "Error"
    }
}

/// Applies shim events until the events server closes.
pub async fn run(pods: Arc<Pods>, mut rx: mpsc::Receiver<Envelope>) {
    while let Some(env) = rx.recv().await {
        match env.event {
            TaskEvent::Exit {
                container_id,
                exec_id,
                exit_status,
                exited_at,
                ..
            } if exec_id.is_empty() || exec_id == container_id => {
                let at = exited_at.map(to_ns).unwrap_or_else(super::now_ns);
                pods.record_exit(&container_id, exit_status as i32, at, "")
                    .await;
            }
            TaskEvent::Oom { container_id } => pods.record_oom(&container_id),
            other => tracing::trace!(event = ?other, "shim event"),
        }
    }
}

impl Pods {
    /// Records that a container's (or a sandbox's pause) process ended; the first record
    /// wins, so a late event never overwrites a known exit.
    pub(crate) async fn record_exit(&self, id: &str, code: i32, at: i64, message: &str) {
        let is_sandbox = lock(&self.records).sandboxes.contains_key(id);
        if is_sandbox {
            let r = self.update_sandbox(id, |s| {
                if s.state == SandboxState::Ready {
                    s.state = SandboxState::NotReady;
                }
            });
            if let Err(e) = r {
                tracing::warn!(sandbox = id, error = %e, "recording pause exit");
            }
            return;
        }
        let mut sandbox = String::new();
        // An exit can come while StartContainer still waits for the shim's answer (our
        // shim runs the task as it creates it): StartContainer then says "started" and
        // "stopped", in that order.
        let mut before_started = false;
        let r = self.update_container(id, |c| {
            sandbox = c.sandbox_id.clone();
            if c.exit.is_none() && c.state != ContainerState::Creating {
                before_started = c.state == ContainerState::Created;
                c.state = ContainerState::Exited;
                c.exit = Some(Exit {
                    code,
                    at,
                    reason: exit_reason(code, c.oom_killed).to_string(),
                    message: message.to_string(),
                });
            }
        });
        match r {
            Ok(Some(_)) => {
                self.finish_log_pipe(id).await;
                if !before_started {
                    self.emit(id, &sandbox, ContainerEventKind::Stopped);
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(container = id, error = %e, "recording exit"),
        }
    }

    /// Records an OOM kill; an exit already recorded gets reason `OOMKilled`.
    pub(crate) fn record_oom(&self, id: &str) {
        let r = self.update_container(id, |c| {
            c.oom_killed = true;
            if let Some(exit) = &mut c.exit {
                exit.reason = exit_reason(exit.code, true).to_string();
            }
        });
        if let Err(e) = r {
            tracing::warn!(container = id, error = %e, "recording OOM");
        }
    }

    /// Stops the daemon-side log drain of a container, after what is buffered is written.
    pub(crate) async fn finish_log_pipe(&self, id: &str) {
        let pipe = lock(&self.log_pipes).remove(id);
        // A reopen in flight holds a clone for a moment; then the drain ends by itself
        // once the container's ends close.
        if let Some(Ok(p)) = pipe.map(Arc::try_unwrap) {
            p.finish().await;
        }
    }
}
