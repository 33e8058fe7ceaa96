//! RemovePodSandbox: stop it if needed, remove its containers, then everything it made.
//! Idempotent: an unknown sandbox is success (the CRI contract; containerd 1.6 answers
//! NotFound).

use std::sync::Arc;

use super::files::SandboxFiles;
use crate::pods::{lock, PodError, Pods};
use crate::store::{LEASES, NAMES, SANDBOXES};

impl Pods {
    /// Removes a sandbox and its containers.
    pub async fn remove_sandbox(self: &Arc<Self>, id: &str) -> Result<(), PodError> {
        let Some(rec) = self.sandbox(id)? else {
            return Ok(());
        };
        for c in self.containers_of(&rec.id) {
            self.remove_container(&c.id).await?;
        }
        self.teardown_sandbox(&rec.id).await
    }

    /// Undoes everything a sandbox made, in reverse order, then drops its records. Safe
    /// on a half-made sandbox and safe to repeat.
    pub(crate) async fn teardown_sandbox(&self, id: &str) -> Result<(), PodError> {
        let _guard = self.locks.lock(id).await;
        self.teardown_sandbox_locked(id).await
    }

    /// [`Pods::teardown_sandbox`] for a caller that already holds the id's lock.
    pub(crate) async fn teardown_sandbox_locked(&self, id: &str) -> Result<(), PodError> {
        let Some(rec) = self.sandbox(id)? else {
            return Ok(());
        };
        self.stop_pause(&rec).await?;
        self.remove_task_dirs(id).await?;
        self.detach_network(id, rec.netns.as_deref()).await?;
        SandboxFiles::remove(&self.cfg.dirs.sandboxes.join(id))
            .await
            .map_err(|e| PodError::internal("removing sandbox files", e))?;
        self.store.update(|t| {
            if t.get::<String>(NAMES, &rec.name)?.as_deref() == Some(id) {
                t.delete(NAMES, &rec.name)?;
            }
            t.delete(LEASES, id)?;
            t.delete(SANDBOXES, id)?;
            Ok(())
        })?;
        lock(&self.records).sandboxes.remove(id);
        Ok(())
    }
}
