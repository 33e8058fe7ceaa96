//! CreateContainer: reserve the name, mount the writable layer over the image, build the
//! OCI spec and bundle, and make the stdio fifos. The task itself is created in
//! StartContainer, as containerd does: then our shim can run it with one runtime call
//! (`run --detach`) instead of `create` + `start`.
//!
//! As with sandboxes, the record is written as `Creating` (with name and image lease)
//! before anything is made, and every step is undone on failure or at recovery.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::config::ContainerConfig;
use super::log::LogPipe;
use super::record::{ContainerRecord, ContainerState};
use crate::pods::{lock, new_id, now_ns, ContainerEventKind, PodError, Pods};
use crate::sandbox::record::SandboxState;
use crate::spec;
use crate::store::{CONTAINERS, LEASES, NAMES};

impl Pods {
    /// Creates a container in sandbox `sandbox_id` and returns its id.
    pub async fn create_container(
        self: &Arc<Self>,
        sandbox_id: &str,
        config: ContainerConfig,
    ) -> Result<String, PodError> {
        let sandbox = self
            .sandbox(sandbox_id)?
            .ok_or_else(|| PodError::NotFound(format!("pod sandbox {sandbox_id:?} not found")))?;
        if sandbox.state != SandboxState::Ready {
            return Err(PodError::FailedPrecondition(format!(
                "pod sandbox {} is not ready ({:?})",
                sandbox.id, sandbox.state
            )));
        }
        let image = self
            .images
            .resolve(&config.image)?
            .ok_or_else(|| PodError::NotFound(format!("image {:?} not found", config.image)))?;
        let chain = image
            .top_chain_id()
            .cloned()
            .ok_or_else(|| PodError::Internal(format!("image {} has no layers", image.id)))?;
        let m = &sandbox.config.metadata;
        let name = format!(
            "{}_{}_{}_{}_{}",
            config.metadata.name, m.name, m.namespace, m.uid, config.metadata.attempt
        );
        let log_path = match (&sandbox.config.log_directory, &config.log_path) {
            (dir, p) if !dir.is_empty() && !p.is_empty() => {
                PathBuf::from(dir).join(p).display().to_string()
            }
            _ => String::new(),
        };
        let id = new_id()?;
        let _guard = self.locks.lock(&id).await;
        let image_ref = image
            .repo_digests
            .first()
            .cloned()
            .unwrap_or_else(|| image.id.to_string());
        let rec = ContainerRecord {
            id: id.clone(),
            sandbox_id: sandbox.id.clone(),
            name: name.clone(),
            image_name: config.image.clone(),
            config,
            image_id: image.id.to_string(),
            image_ref,
            state: ContainerState::Creating,
            created_at: now_ns(),
            started_at: 0,
            exit: None,
            oom_killed: false,
            pid: 0,
            log_path,
            spec: None,
            stop_signal: None,
        };
        // Not synced: the Created record below is, and takes this one to disk with it. A
        // crash before it loses the reservation, and recovery removes the bundle and the
        // writable layer that no record owns.
        let holder = self.store.update_lazy(|t| {
            if let Some(holder) = t.get::<String>(NAMES, &name)? {
                return Ok(Some(holder));
            }
            t.put(NAMES, &name, &id)?;
            t.put(CONTAINERS, &id, &rec)?;
            t.put(LEASES, &id, &chain)?;
            Ok(None)
        })?;
        if let Some(holder) = holder {
            return Err(PodError::AlreadyExists(format!(
                "container name {name:?} is reserved by {holder}"
            )));
        }
        lock(&self.records).put_container(rec.clone());
        match self.make_container(rec, &sandbox, &image, &chain).await {
            Ok(()) => {
                self.emit(&id, &sandbox.id, ContainerEventKind::Created);
                Ok(id)
            }
            Err(e) => {
                if let Err(te) = self.teardown_container_locked(&id).await {
                    tracing::warn!(container = %id, error = %te, "rolling back a failed container");
                }
                Err(e)
            }
        }
    }

    async fn make_container(
        &self,
        mut rec: ContainerRecord,
        sandbox: &crate::sandbox::record::SandboxRecord,
        image: &crate::image::record::ImageRecord,
        chain: &crate::image::digest::Digest,
    ) -> Result<(), PodError> {
        let id = rec.id.clone();
        tracing::debug!(container = %id, sandbox = %sandbox.id, "creating");
        let handler = self.handlers.lookup(&sandbox.handler)?;
        if self.shim(&sandbox.id).is_none() {
            return Err(PodError::Unavailable(format!(
                "the shim of pod sandbox {} is not connected",
                sandbox.id
            )));
        }
        let (image_config, _) = self.images.config(image).await?;
        tracing::debug!(container = %id, "image config read");
        rec.stop_signal = image_config
            .config
            .as_ref()
            .and_then(|c| c.stop_signal.clone());
        let rootfs = self.mount_rootfs(&id, chain).await?;
        tracing::debug!(container = %id, "rootfs mounted");
        let bundle = self.cfg.dirs.bundle(&id);
        let files =
            crate::sandbox::files::SandboxFiles::at(&self.cfg.dirs.sandboxes.join(&sandbox.id));
        let paths = crate::sandbox::spec_paths(&files, sandbox.config.host_ipc());
        let target_pid = self.target_pid(&rec.config, sandbox)?;
        let cgroups_path = spec::cgroups_path(
            sandbox.config.cgroup_parent(),
            &id,
            handler.handler.options.systemd_cgroup.unwrap_or(false),
        );
        let oci = tokio::task::block_in_place(|| {
            spec::container_spec(&spec::ContainerSpecInput {
                id: &id,
                sandbox_id: &sandbox.id,
                pod: &sandbox.config,
                container: &rec.config,
                image: &image_config,
                image_name: &rec.image_name,
                rootfs: &rootfs,
                sandbox_pid: sandbox.pid,
                target_pid,
                paths: &paths,
                cgroups_path,
                host: &self.cfg.host,
            })
        })
        .map_err(PodError::from)?;
        spec::write_spec(&oci, &bundle).map_err(PodError::from)?;
        tracing::debug!(container = %id, "spec written");
        rec.spec = spec::StoredSpec::new(&oci).ok();
        if !rec.log_path.is_empty() {
            if let Some(dir) = std::path::Path::new(&rec.log_path).parent() {
                tokio::fs::create_dir_all(dir)
                    .await
                    .map_err(|e| PodError::internal(format!("creating {}", dir.display()), e))?;
            }
        }
        let stdio = TaskStdio::of(&rec, &bundle, handler.is_crius_shim());
        if !stdio.stdout.is_empty() && !handler.is_crius_shim() {
            // A foreign shim writes to fifos that the daemon drains into the CRI log.
            let out = Path::new(&stdio.stdout);
            super::exec::make_fifo(out)?;
            let err = if stdio.stderr.is_empty() {
                None
            } else {
                let err = Path::new(&stdio.stderr);
                super::exec::make_fifo(err)?;
                Some(err)
            };
            let pipe = LogPipe::spawn(Some(PathBuf::from(&rec.log_path)), Some(out), err)
                .await
                .map_err(|e| PodError::internal("container log", e))?;
            lock(&self.log_pipes).insert(id.clone(), Arc::new(pipe));
        }
        if !stdio.stdin.is_empty() {
            let pipe = super::attach::StdinPipe::make(Path::new(&stdio.stdin))?;
            lock(&self.stdin_pipes).insert(id.clone(), pipe);
        }
        rec.state = ContainerState::Created;
        self.save_container(&rec)?;
        Ok(())
    }

    /// The pid whose pid namespace a TARGET-mode container joins.
    fn target_pid(
        &self,
        cfg: &ContainerConfig,
        sandbox: &crate::sandbox::record::SandboxRecord,
    ) -> Result<Option<u32>, PodError> {
        let Some(target) = cfg.pid_target() else {
            return Ok(None);
        };
        let t = self.container(target)?.ok_or_else(|| {
            PodError::NotFound(format!(
                "config.linux.security_context.namespace_options.target_id {target:?} not found"
            ))
        })?;
        if t.sandbox_id != sandbox.id || t.state != ContainerState::Running {
            return Err(PodError::FailedPrecondition(format!(
                "config.linux.security_context.namespace_options.target_id {target:?} is not a running container of this pod"
            )));
        }
        Ok(Some(t.pid))
    }
}

/// The stdio a container's task is created with, derived from its record alone so that
/// CreateContainer (which makes the fifos) and StartContainer (which creates the task)
/// agree, across a daemon restart too.
pub(super) struct TaskStdio {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
}

impl TaskStdio {
    /// Our shim writes the CRI log itself (`cri://` URI); a foreign shim gets fifos in the
    /// bundle. A tty has no separate stderr.
    pub(super) fn of(rec: &ContainerRecord, bundle: &Path, crius_shim: bool) -> TaskStdio {
        let (stdout, stderr) = if rec.log_path.is_empty() {
            (String::new(), String::new())
        } else if crius_shim {
            let uri = format!("cri://{}", rec.log_path);
            (uri.clone(), uri)
        } else {
            let err = if rec.config.tty {
                String::new()
            } else {
                bundle.join("stderr").display().to_string()
            };
            (bundle.join("stdout").display().to_string(), err)
        };
        let stdin = if rec.config.stdin {
            bundle.join("stdin").display().to_string()
        } else {
            String::new()
        };
        TaskStdio {
            stdin,
            stdout,
            stderr,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(log_path: &str, tty: bool, stdin: bool) -> ContainerRecord {
        let config = ContainerConfig {
            tty,
            stdin,
            ..Default::default()
        };
        ContainerRecord {
            id: "c1".into(),
            sandbox_id: "p1".into(),
            name: "c_p".into(),
            config,
            image_id: "sha256:aa".into(),
            image_name: "busybox".into(),
            image_ref: "sha256:aa".into(),
            state: ContainerState::Created,
            created_at: 1,
            started_at: 0,
            exit: None,
            oom_killed: false,
            pid: 0,
            log_path: log_path.into(),
            spec: None,
            stop_signal: None,
        }
    }

    #[test]
    fn task_stdio_per_shim_kind() {
        let b = Path::new("/b");
        let s = TaskStdio::of(&rec("/l/c.log", false, true), b, true);
        assert_eq!(
            (s.stdin.as_str(), s.stdout.as_str(), s.stderr.as_str()),
            ("/b/stdin", "cri:///l/c.log", "cri:///l/c.log")
        );
        let s = TaskStdio::of(&rec("/l/c.log", false, false), b, false);
        assert_eq!(
            (s.stdin.as_str(), s.stdout.as_str(), s.stderr.as_str()),
            ("", "/b/stdout", "/b/stderr")
        );
        // A terminal has one output; no log path, no output at all.
        let s = TaskStdio::of(&rec("/l/c.log", true, false), b, false);
        assert_eq!((s.stdout.as_str(), s.stderr.as_str()), ("/b/stdout", ""));
        let s = TaskStdio::of(&rec("", false, false), b, false);
        assert_eq!((s.stdout.as_str(), s.stderr.as_str()), ("", ""));
    }
}
