//! RemoveContainer: kill it if it runs, delete its task, unmount and remove its writable
//! layer, and drop its records. Idempotent: an unknown container is success.

use std::sync::Arc;

use crate::pods::{lock, ContainerEventKind, PodError, Pods};
use crate::store::{CONTAINERS, LEASES, NAMES};

impl Pods {
    /// Removes a container.
    pub async fn remove_container(self: &Arc<Self>, id: &str) -> Result<(), PodError> {
        let Some(rec) = self.container(id)? else {
            return Ok(());
        };
        self.stop_container(&rec.id, 0).await?;
        self.teardown_container(&rec.id).await?;
        self.emit(&rec.id, &rec.sandbox_id, ContainerEventKind::Deleted);
        Ok(())
    }

    /// Undoes everything a container made and drops its records. Safe on a half-made
    /// container and safe to repeat.
    pub(crate) async fn teardown_container(&self, id: &str) -> Result<(), PodError> {
        let _guard = self.locks.lock(id).await;
        self.teardown_container_locked(id).await
    }

    /// [`Pods::teardown_container`] for a caller that already holds the id's lock.
    pub(crate) async fn teardown_container_locked(&self, id: &str) -> Result<(), PodError> {
        let Some(rec) = self.container(id)? else {
            return Ok(());
        };
        self.delete_task(id, &rec.sandbox_id).await;
        self.finish_log_pipe(id).await;
        lock(&self.stdin_pipes).remove(id);
        self.remove_task_dirs(id).await?;
        self.store.update(|t| {
            if t.get::<String>(NAMES, &rec.name)?.as_deref() == Some(id) {
                t.delete(NAMES, &rec.name)?;
            }
            t.delete(LEASES, id)?;
            t.delete(CONTAINERS, id)?;
            Ok(())
        })?;
        lock(&self.records).drop_container(id);
        Ok(())
    }
}
