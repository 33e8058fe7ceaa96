//! StopPodSandbox: kill the pod's containers and its pause container, shut its shim down,
//! detach it from the pod network (CNI DEL) and remove its network namespace.
//! Idempotent: an unknown or stopped sandbox is success.

use std::sync::Arc;
use std::time::Duration;

use crius_handlers::shim;

use super::record::{SandboxRecord, SandboxState};
use crate::container::record::ContainerState;
use crate::network::netns::NetNs;
use crate::pods::{lock, PodError, Pods};

/// How long a killed pause container gets to be reaped before the shim is told to go.
const PAUSE_KILL_WAIT: Duration = Duration::from_secs(10);

impl Pods {
    /// Stops a sandbox and every container in it.
    pub async fn stop_sandbox(self: &Arc<Self>, id: &str) -> Result<(), PodError> {
        let Some(rec) = self.sandbox(id)? else {
            return Ok(());
        };
        for c in self.containers_of(&rec.id) {
            if matches!(c.state, ContainerState::Running | ContainerState::Created) {
                self.stop_container(&c.id, 0).await?;
            }
        }
        let _guard = self.locks.lock(&rec.id).await;
        let Some(rec) = self.sandbox(&rec.id)? else {
            return Ok(());
        };
        self.stop_pause(&rec).await?;
        self.detach_network(&rec.id, rec.netns.as_deref()).await?;
        self.update_sandbox(&rec.id, |s| {
            if s.state == SandboxState::Ready {
                s.state = SandboxState::NotReady;
            }
            s.ips.clear();
        })?;
        Ok(())
    }

    /// Runs the pod's CNI DEL (when it was attached) and removes its network namespace;
    /// both are idempotent, so a repeated stop or a rollback may call this again.
    pub(crate) async fn detach_network(
        &self,
        id: &str,
        netns: Option<&std::path::Path>,
    ) -> Result<(), PodError> {
        self.cfg.cni.teardown(id).await.map_err(PodError::from)?;
        if let Some(ns) = netns {
            NetNs::remove(ns)
                .await
                .map_err(|e| PodError::internal("removing network namespace", e))?;
        }
        Ok(())
    }

    /// Kills and deletes the pause task and shuts the pod's shim down. When the shim does
    /// not answer, its `delete` action cleans up after it.
    pub(crate) async fn stop_pause(&self, rec: &SandboxRecord) -> Result<(), PodError> {
        // Exited containers keep their tasks until deleted; a shim with tasks left will not
        // shut down.
        for c in self.containers_of(&rec.id) {
            self.delete_task(&c.id, &rec.id).await;
        }
        let client = self.shim(&rec.id);
        let bundle = self.cfg.dirs.bundle(&rec.id);
        match client {
            Some(client) => {
                match client.kill(&rec.id, "", libc::SIGKILL as u32, true).await {
                    Ok(()) => {
                        let _ =
                            tokio::time::timeout(PAUSE_KILL_WAIT, client.wait(&rec.id, "")).await;
                    }
                    Err(e) => tracing::debug!(sandbox = %rec.id, error = %e, "killing pause"),
                }
                if let Err(e) = client.delete(&rec.id, "").await {
                    tracing::debug!(sandbox = %rec.id, error = %e, "deleting pause task");
                }
                if let Err(e) = client.shutdown(&rec.id, false).await {
                    tracing::debug!(sandbox = %rec.id, error = %e, "shim shutdown");
                }
                lock(&self.shims).remove(&rec.id);
                shim::forget(&bundle).await;
            }
            None if rec.bootstrap.is_some() => {
                if let Ok(handler) = self.handlers.lookup(&rec.handler) {
                    if let Err(e) = shim::cleanup(&handler, &self.cfg.env, &rec.id, &bundle).await {
                        tracing::debug!(sandbox = %rec.id, error = %e, "shim delete");
                    }
                }
            }
            None => {}
        }
        Ok(())
    }
}
