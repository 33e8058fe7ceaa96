//! UpdateContainerResources and ReopenContainerLog.

use std::collections::HashMap;
use std::sync::Arc;

use super::config::Resources;
use super::record::ContainerState;
use crate::pods::{lock, PodError, Pods};
use crate::spec;

impl Pods {
    /// Applies new resources to a created or running container and records them.
    pub async fn update_resources(
        self: &Arc<Self>,
        id: &str,
        resources: Resources,
        annotations: HashMap<String, String>,
    ) -> Result<(), PodError> {
        let rec = self
            .container(id)?
            .ok_or_else(|| PodError::NotFound(format!("container {id:?} not found")))?;
        let _guard = self.locks.lock(&rec.id).await;
        if !matches!(rec.state, ContainerState::Created | ContainerState::Running) {
            return Err(PodError::FailedPrecondition(format!(
                "container {} is {:?}: only created or running containers can be updated",
                rec.id, rec.state
            )));
        }
        let linux = spec::oci_resources(&resources, &self.cfg.host, "linux.resources")
            .map_err(PodError::from)?;
        let mut oci = rec.spec.as_ref().and_then(|s| s.parse().ok());
        if let Some(l) = oci.as_mut().and_then(|o| o.linux_mut().as_mut()) {
            l.set_resources(Some(linux.clone()));
        }
        if rec.state == ContainerState::Created {
            // No task yet (StartContainer makes it): the bundle's spec is what it will run
            // with, as containerd updates the spec of a container it has not started.
            let oci = oci.as_ref().ok_or_else(|| {
                PodError::Internal(format!("container {} has no stored spec", rec.id))
            })?;
            spec::write_spec(oci, &self.cfg.dirs.bundle(&rec.id)).map_err(PodError::from)?;
        } else {
            let client = self.shim(&rec.sandbox_id).ok_or_else(|| {
                PodError::Unavailable(format!(
                    "the shim of pod sandbox {} is not connected",
                    rec.sandbox_id
                ))
            })?;
            let json =
                serde_json::to_value(&linux).map_err(|e| PodError::internal("resources", e))?;
            client.update(&rec.id, &json, annotations).await?;
        }
        let new_spec = match &oci {
            Some(o) => spec::StoredSpec::new(o).ok(),
            None => rec.spec.clone(),
        };
        self.update_container(&rec.id, |c| {
            c.config.set_resources(resources);
            c.spec = new_spec;
        })?;
        Ok(())
    }

    /// Reopens a container's log file after the kubelet rotated it. A failed reopen is
    /// returned and no file is created later on its own.
    pub async fn reopen_log(self: &Arc<Self>, id: &str) -> Result<(), PodError> {
        let rec = self
            .container(id)?
            .ok_or_else(|| PodError::NotFound(format!("container {id:?} not found")))?;
        if rec.state != ContainerState::Running {
            return Err(PodError::FailedPrecondition(format!(
                "container {} is not running",
                rec.id
            )));
        }
        if rec.log_path.is_empty() {
            return Ok(());
        }
        let pipe = lock(&self.log_pipes).get(&rec.id).cloned();
        if let Some(pipe) = pipe {
            return pipe
                .reopen()
                .await
                .map_err(|e| PodError::internal(format!("reopening {}", rec.log_path), e));
        }
        let client = self.shim(&rec.sandbox_id).ok_or_else(|| {
            PodError::Unavailable(format!(
                "the shim of pod sandbox {} is not connected",
                rec.sandbox_id
            ))
        })?;
        client.reopen_log(&rec.id, "").await?;
        Ok(())
    }
}
