//! StartContainer.

use std::sync::Arc;

use super::record::{ContainerState, Exit};
use crate::pods::{now_ns, ContainerEventKind, PodError, Pods};

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
        // Taken before the RPC: a fast process can exit (and its exit be recorded) before
        // Start returns, and started_at must never be after finished_at.
        let started = now_ns();
        match client.start(&rec.id, "").await {
            Ok(pid) => {
                // An exit event may already have been recorded: keep it.
                self.update_container(&rec.id, |c| {
                    c.started_at = c.exit.as_ref().map_or(started, |e| started.min(e.at));
                    c.pid = pid;
                    if c.state == ContainerState::Created {
                        c.state = ContainerState::Running;
                    }
                })?;
                self.emit(&rec.id, &rec.sandbox_id, ContainerEventKind::Started);
                Ok(())
            }
            Err(e) => {
                let err = PodError::from(e).context(format!("starting container {}", rec.id));
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
