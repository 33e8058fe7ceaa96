//! StartContainer: create the task in the pod's shim and start it.
//!
//! The task is created here rather than in CreateContainer (containerd does the same), and
//! our shim is asked to start it as it creates it: one `runc run --detach` instead of
//! `runc create` + `runc start`, a Go runtime start-up less per container. `Start` is
//! still called: our shim only acknowledges it, a foreign shim (which ignored the hint)
//! starts the task there.

use std::sync::Arc;

use crius_handlers::shim;
use runtime_v2_api::CreateTask;

use super::create::TaskStdio;
use super::record::{ContainerState, Exit};
use super::stop::shim_answered;
use crate::pods::{now_ns, ContainerEventKind, PodError, Pods};
use crate::sandbox::record::SandboxState;

impl Pods {
    /// Starts a created container.
    pub async fn start_container(self: &Arc<Self>, id: &str) -> Result<(), PodError> {
        let rec = self
            .container(id)?
            .ok_or_else(|| PodError::NotFound(format!("container {id:?} not found")))?;
        let _guard = self.locks.lock(&rec.id).await;
        let rec = self
            .container(&rec.id)?
            .ok_or_else(|| PodError::NotFound(format!("container {id:?} not found")))?;
        if rec.state != ContainerState::Created {
            return Err(PodError::FailedPrecondition(format!(
                "container {} is {:?}, not Created",
                rec.id, rec.state
            )));
        }
        let client = self.shim(&rec.sandbox_id).ok_or_else(|| {
            PodError::Unavailable(format!(
                "the shim of pod sandbox {} is not connected",
                rec.sandbox_id
            ))
        })?;
        // Taken before the RPCs: a fast process can exit (and its exit be recorded) before
        // Start returns, and started_at must never be after finished_at.
        let started = now_ns();
        let run = async {
            let sandbox = self.sandbox(&rec.sandbox_id)?.ok_or_else(|| {
                PodError::NotFound(format!("pod sandbox {} not found", rec.sandbox_id))
            })?;
            if sandbox.state != SandboxState::Ready {
                return Err(PodError::FailedPrecondition(format!(
                    "pod sandbox {} is not ready ({:?})",
                    sandbox.id, sandbox.state
                )));
            }
            let handler = self.handlers.lookup(&sandbox.handler)?;
            let bundle = self.cfg.dirs.bundle(&rec.id);
            let stdio = TaskStdio::of(&rec, &bundle, handler.is_crius_shim());
            let create = client.create(CreateTask {
                id: rec.id.clone(),
                bundle,
                rootfs: Vec::new(),
                terminal: rec.config.tty,
                stdin: stdio.stdin,
                stdout: stdio.stdout,
                stderr: stdio.stderr,
                options: shim::runc_options(&handler),
                start_at_create: true,
            });
            match create.await {
                Ok(_) => {}
                // A task made by a crius from before tasks were created at start.
                Err(e) if shim_answered(&e, runtime_v2_api::Code::AlreadyExists) => {}
                Err(e) => return Err(PodError::from(e)),
            }
            tracing::debug!(container = %rec.id, "task created");
            match client.start(&rec.id, "").await {
                Ok(pid) => Ok(pid),
                Err(e) => {
                    // As containerd does: a task that could not be started is not left
                    // behind (it may even run: our shim ran it at Create).
                    let _ = client.kill(&rec.id, "", libc::SIGKILL as u32, true).await;
                    let _ = tokio::time::timeout(UNDO_WAIT, client.wait(&rec.id, "")).await;
                    self.delete_task(&rec.id, &rec.sandbox_id).await;
                    Err(PodError::from(e))
                }
            }
        };
        match run.await {
            Ok(pid) => {
                // An exit event may already have been recorded: keep it. Not synced: after
                // a crash, recovery finds the task in the shim and marks it Running (or
                // records its exit) itself.
                let now = self.update_container_lazy(&rec.id, |c| {
                    c.started_at = c.exit.as_ref().map_or(started, |e| started.min(e.at));
                    c.pid = pid;
                    if c.state == ContainerState::Created {
                        c.state = ContainerState::Running;
                    }
                })?;
                self.emit(&rec.id, &rec.sandbox_id, ContainerEventKind::Started);
                if now.is_some_and(|c| c.exit.is_some()) {
                    // Its exit came first and left the "stopped" event to us.
                    self.emit(&rec.id, &rec.sandbox_id, ContainerEventKind::Stopped);
                }
                Ok(())
            }
            Err(e) => {
                let err = e.context(format!("starting container {}", rec.id));
                let message = err.to_string();
                self.update_container(&rec.id, |c| {
                    c.state = ContainerState::Exited;
                    c.exit = Some(Exit {
                        code: 128,
                        at: now_ns(),
                        reason: "StartError".into(),
                        message,
                    });
                })?;
                Err(err)
            }
        }
    }
}

/// How long a task whose Start failed gets to die before it is deleted.
const UNDO_WAIT: std::time::Duration = std::time::Duration::from_secs(5);
