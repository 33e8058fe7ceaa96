//! ContainerStats: CPU and memory from the shim's Stats, writable-layer usage from disk.

use std::path::Path;

use super::record::{ContainerRecord, ContainerState};
use crate::pods::{now_ns, PodError, Pods};

/// One container's usage.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerUsage {
    /// Unix nanoseconds of the reading.
    pub timestamp: i64,
    pub cpu_usage_ns: u64,
    pub memory_usage_bytes: u64,
    pub memory_working_set_bytes: u64,
    /// Bytes allocated by the writable layer.
    pub writable_bytes: u64,
    pub writable_inodes: u64,
}

impl Pods {
    /// Usage of one container; a container that does not run reports only its layer.
    pub async fn container_usage(&self, rec: &ContainerRecord) -> Result<ContainerUsage, PodError> {
        let mut u = ContainerUsage {
            timestamp: now_ns(),
            ..Default::default()
        };
        if rec.state == ContainerState::Running {
            if let Some(client) = self.shim(&rec.sandbox_id) {
                match client.stats(&rec.id).await {
                    Ok(s) => {
                        u.cpu_usage_ns = s.cpu_usage_ns;
                        u.memory_usage_bytes = s.memory_usage_bytes;
                        u.memory_working_set_bytes = s.memory_working_set_bytes;
                    }
                    Err(e) => tracing::debug!(container = %rec.id, error = %e, "stats"),
                }
            }
        }
        let upper = self.cfg.dirs.rw.join(&rec.id).join("fs");
        let (bytes, inodes) = tokio::task::spawn_blocking(move || disk_usage(&upper))
            .await
            .map_err(|e| PodError::internal("writable layer usage", e))?;
        u.writable_bytes = bytes;
        u.writable_inodes = inodes;
        Ok(u)
    }
}

/// Allocated bytes and inodes under `dir` (not following symlinks, one filesystem).
pub(crate) fn disk_usage(dir: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let mut bytes = 0u64;
    let mut inodes = 0u64;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(md) = std::fs::symlink_metadata(&d) else {
            continue;
        };
        bytes += md.blocks() * 512;
        inodes += 1;
        if !md.is_dir() {
            continue;
        }
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(p),
                Ok(_) => {
                    if let Ok(m) = e.metadata() {
                        bytes += m.blocks() * 512;
                        inodes += 1;
                    }
                }
                Err(_) => {}
            }
        }
    }
    (bytes, inodes)
}
