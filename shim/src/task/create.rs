//! Create: mount the rootfs, set up stdio, `runtime create`, and start watching the init
//! process. A Create that fails leaves nothing behind: no mount, no runtime state, no
//! process, no entry in the table.
//!
//! A pod's sandbox container (`io.kubernetes.cri.container-type: sandbox` in its
//! `config.json`) is run at Create with `runtime run --detach`: a CRI runtime always starts
//! it right after creating it (containerd's and crius's RunPodSandbox alike), and one
//! runtime process instead of `create` + `start` saves a Go start-up (about 8 ms of runc)
//! on every pod. Its Start then only acknowledges what Create did.
//!
//! Any other task is run at Create when the caller asks for it with the
//! `io.crius.start-at-create` request metadata: crius creates a container's task in
//! StartContainer (as containerd does) and so always starts it right away. Callers that do
//! not ask (containerd) get the usual `create`, and a Start that starts.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use runtime_v2_api::TaskEvent;

use super::{Container, Process, Status, Tasks};
use crate::cgroup::Cgroup;
use crate::error::{Result, ShimError};
use crate::mount::{self, MountSpec};
use crate::runtime::{InitVerb, Runtime, RuntimeConfig};
use crate::stdio::{Owner, Prepared, StdioConfig};

/// A Create request in domain terms.
#[derive(Debug, Clone)]
pub struct CreateRequest {
    /// Task id.
    pub id: String,
    /// Bundle dir (holds `config.json`).
    pub bundle: PathBuf,
    /// Mounts that make up the rootfs (may be empty: the bundle's rootfs is ready).
    pub rootfs: Vec<MountSpec>,
    /// Stdio.
    pub stdio: StdioConfig,
    /// Runtime options: binary name, root, systemd cgroup.
    pub binary_name: String,
    /// Runtime root ("" = default).
    pub root: String,
    /// `--systemd-cgroup`.
    pub systemd_cgroup: bool,
    /// The caller asked for the task to be started at once (see the module doc).
    pub start_at_create: bool,
}

/// Ids must be usable as file names and runtime ids.
pub(super) fn check_id(what: &str, id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 1024
        && id != "."
        && id != ".."
        && id.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'+' | b'@' | b':')
        });
    if ok {
        Ok(())
    } else {
        Err(ShimError::InvalidArgument(format!(
            "{what} {id:?} is not valid (letters, digits and -_.+@: only)"
        )))
    }
}

impl Tasks {
    /// Creates task `req.id`; returns the init pid.
    pub async fn create(&self, req: CreateRequest) -> Result<u32> {
        check_id("task id", &req.id)?;
        {
            let tasks = self.lock();
            let mut creating = self
                .inner
                .creating
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if tasks.contains_key(&req.id) || creating.contains(&req.id) {
                return Err(ShimError::AlreadyExists(format!(
                    "task {:?} already exists",
                    req.id
                )));
            }
            creating.push(req.id.clone());
        }
        // Runs to its end even when the caller goes away (ttrpc drops a request's future when
        // its connection closes, as when the daemon is killed mid-Create): cut short, it
        // would leave a container running that the table does not know, and the daemon's
        // rollback after its restart could not remove it.
        let this = self.clone();
        let id = req.id.clone();
        let created = tokio::spawn(async move {
            let result = this.create_reserved(&req).await;
            this.inner
                .creating
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|i| i != &req.id);
            this.inner.created.notify_waiters();
            result
        });
        created
            .await
            .map_err(|e| ShimError::Internal(format!("creating task {id:?}: {e}")))?
    }

    async fn create_reserved(&self, req: &CreateRequest) -> Result<u32> {
        let run_now = is_sandbox(&req.bundle.join("config.json"))? || req.start_at_create;
        let name = if req.binary_name.is_empty() {
            "runc"
        } else {
            req.binary_name.as_str()
        };
        let base = Path::new(name)
            .file_name()
            .map(|n| n.to_os_string())
            .unwrap_or_default();
        let default_root = self
            .inner
            .default_root_base
            .join(base)
            .join(&self.inner.namespace);
        let config = RuntimeConfig::resolve(name, &req.root, req.systemd_cgroup, &default_root)?;
        let runtime = Runtime::new(config, &req.bundle, self.inner.runner.clone());

        let rootfs = req.bundle.join("rootfs");
        mount::mount_all(&req.rootfs, &rootfs)?;
        let owner = Owner {
            id: req.id.clone(),
            namespace: self.inner.namespace.clone(),
        };
        let pid_file = req.bundle.join("init.pid");
        let since = Instant::now();
        let created = async {
            let mut prepared = Prepared::new(&req.stdio, &owner).await?;
            let console_path = prepared.console.as_ref().map(|c| c.path().to_path_buf());
            let child = prepared.take_child();
            let verb = if run_now {
                InitVerb::RunDetached
            } else {
                InitVerb::Create
            };
            runtime
                .create(
                    verb,
                    &req.id,
                    &req.bundle,
                    &pid_file,
                    console_path.as_deref(),
                    child,
                )
                .await?;
            let io = prepared.finish(&owner).await?;
            let pid = read_pid(&pid_file)?;
            Ok::<_, ShimError>((io, pid))
        }
        .await;
        let (io, pid) = match created {
            Ok(v) => v,
            Err(e) => {
                // Undo: the runtime's state and process, then the mounts.
                let _ = runtime.delete(&req.id, true).await;
                let _ = mount::unmount_all(&rootfs);
                let _ = std::fs::remove_file(&pid_file);
                return Err(e);
            }
        };
        runtime.config().save(&req.bundle)?;

        let exited = self.inner.runner.reaper().subscribe(pid, since);
        let cgroup = Cgroup::for_pid(pid).ok().map(Arc::new);
        let mut init = Process::new("", req.stdio.clone());
        init.pid = pid;
        if run_now {
            init.status = Status::Running;
        }
        init.io = io;
        let exited_tx = init.exited_tx.take();
        let container = Container {
            id: req.id.clone(),
            bundle: req.bundle.clone(),
            rootfs_mounted: !req.rootfs.is_empty(),
            runtime,
            init,
            execs: HashMap::new(),
            cgroup: cgroup.clone(),
            started_by_create: run_now,
        };
        self.lock().insert(req.id.clone(), container);
        self.events().publish(TaskEvent::Create {
            container_id: req.id.clone(),
            bundle: req.bundle.display().to_string(),
            pid,
        });
        if run_now {
            self.events().publish(TaskEvent::Start {
                container_id: req.id.clone(),
                pid,
            });
        }
        let oom_seen = self.watch_oom(&req.id, cgroup);
        if let Some(tx) = exited_tx {
            tokio::spawn(self.clone().monitor(
                req.id.clone(),
                String::new(),
                pid,
                exited,
                tx,
                oom_seen,
            ));
        }
        Ok(pid)
    }
}

/// Whether the bundle's container is a pod's sandbox, which is run at Create (see the
/// module doc). A bundle without a readable `config.json` is the caller's error.
fn is_sandbox(config_json: &Path) -> Result<bool> {
    #[derive(serde::Deserialize)]
    struct Annotated {
        #[serde(default)]
        annotations: HashMap<String, String>,
    }
    let bytes = std::fs::read(config_json).map_err(|e| {
        ShimError::InvalidArgument(format!("bundle config {}: {e}", config_json.display()))
    })?;
    let spec: Annotated = serde_json::from_slice(&bytes).map_err(|e| {
        ShimError::InvalidArgument(format!("bundle config {}: {e}", config_json.display()))
    })?;
    Ok(spec
        .annotations
        .get(CONTAINER_TYPE)
        .is_some_and(|t| t == "sandbox"))
}

/// The CRI annotation that tells a pod's sandbox container from its other containers.
const CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";

/// Reads the pid the runtime wrote.
pub(super) fn read_pid(path: &Path) -> Result<u32> {
    let text = std::fs::read_to_string(path).map_err(|e| ShimError::io(path.display(), e))?;
    text.trim()
        .parse()
        .map_err(|_| ShimError::Internal(format!("{}: not a pid: {text:?}", path.display())))
}
