//! Start-up recovery: reconnect every shim, record exits that happened while the daemon
//! was down, roll back what a crash left half-made, and remove orphans on disk.

use std::path::Path;
use std::sync::Arc;

use crius_handlers::shim;
use runtime_v2_api::{parse_bootstrap, Bootstrap, TaskStatus};

use super::{lock, now_ns, to_ns, PodError, Pods};
use crate::container::log::LogPipe;
use crate::container::record::ContainerState;
use crate::container::stop::is_gone;
use crate::network::netns::NetNs;
use crate::sandbox::files::SandboxFiles;
use crate::sandbox::record::{SandboxRecord, SandboxState};

/// Exit code and reason of a container whose shim is gone (DESIGN.md).
const LOST_EXIT_CODE: i32 = 255;

impl Pods {
    /// Brings the records and the host back in line after a start or a crash.
    pub async fn recover(self: &Arc<Self>) {
        for rec in self.sandboxes() {
            self.recover_sandbox(rec).await;
        }
        for c in self.containers_where(|_| true) {
            if let Err(e) = self.recover_container(&c.id).await {
                tracing::warn!(container = %c.id, error = %e, "recovering container");
            }
        }
        if let Err(e) = self.remove_orphans().await {
            tracing::warn!(error = %e, "removing orphans");
        }
    }

    /// The bootstrap of a sandbox's shim: the record's, else the `address` file the shim
    /// wrote into the bundle before the daemon could record it.
    fn bootstrap_of(&self, rec: &SandboxRecord) -> Option<Bootstrap> {
        if let Some(b) = rec
            .bootstrap
            .as_deref()
            .and_then(|b| parse_bootstrap(b.as_bytes()).ok())
        {
            return Some(b);
        }
        let bytes = std::fs::read(self.cfg.dirs.bundle(&rec.id).join("address")).ok()?;
        parse_bootstrap(&bytes).ok()
    }

    async fn recover_sandbox(self: &Arc<Self>, rec: SandboxRecord) {
        let id = rec.id.clone();
        if let (Some(bootstrap), Ok(handler)) =
            (self.bootstrap_of(&rec), self.handlers.lookup(&rec.handler))
        {
            let bundle = self.cfg.dirs.bundle(&id);
            match shim::reconnect(&handler, &self.cfg.env, &bootstrap, &id, &bundle).await {
                Ok(client) => {
                    lock(&self.shims).insert(id.clone(), client);
                }
                Err(e) => {
                    tracing::warn!(sandbox = %id, error = %e, "shim does not answer; cleaning up");
                    if let Err(e) = shim::cleanup(&handler, &self.cfg.env, &id, &bundle).await {
                        tracing::debug!(sandbox = %id, error = %e, "shim delete");
                    }
                }
            }
        }
        if rec.state == SandboxState::Creating {
            // Half-made: containers cannot exist yet, roll it back.
            if let Err(e) = self.teardown_sandbox(&id).await {
                tracing::warn!(sandbox = %id, error = %e, "rolling back a half-made sandbox");
            }
            return;
        }
        if rec.state == SandboxState::Ready {
            // None: no shim to ask (it did not answer and was cleaned up).
            let state = match self.shim(&id) {
                Some(client) => Some(client.state(&id, "").await.map(|s| s.status)),
                None => None,
            };
            let alive = matches!(state, Some(Ok(TaskStatus::Running)));
            if !alive {
                tracing::warn!(sandbox = %id, state = ?state, "the pause of a ready sandbox is not running");
                if let Err(e) = self.update_sandbox(&id, |s| s.state = SandboxState::NotReady) {
                    tracing::warn!(sandbox = %id, error = %e, "recording pause exit");
                }
            }
        }
    }

    async fn recover_container(self: &Arc<Self>, id: &str) -> Result<(), PodError> {
        let Some(c) = self.container(id)? else {
            return Ok(());
        };
        match c.state {
            ContainerState::Creating => return self.teardown_container(id).await,
            ContainerState::Exited => return Ok(()),
            ContainerState::Created | ContainerState::Running => {}
        }
        let state = match self.shim(&c.sandbox_id) {
            Some(client) => match client.state(id, "").await {
                Ok(st) => Some(st),
                // StartContainer creates the task: a created container has none yet, and
                // its fifos are all it needs back.
                Err(e) if c.state == ContainerState::Created && is_gone(&e) => {
                    self.reattach_stdio(&c).await;
                    return Ok(());
                }
                Err(_) => None,
            },
            None => None,
        };
        match state {
            Some(st) if matches!(st.status, TaskStatus::Stopped) => {
                let at = st.exited_at.map(to_ns).unwrap_or_else(now_ns);
                self.update_container(id, |r| {
                    if r.state == ContainerState::Created {
                        // The daemon died inside StartContainer, after the task ran.
                        r.state = ContainerState::Running;
                        r.started_at = at;
                    }
                })?;
                self.record_exit(id, st.exit_status as i32, at, "").await;
            }
            Some(st) => {
                if matches!(st.status, TaskStatus::Running | TaskStatus::Paused)
                    && c.state == ContainerState::Created
                {
                    self.update_container(id, |r| {
                        r.state = ContainerState::Running;
                        r.pid = st.pid;
                        if r.started_at == 0 {
                            // Not recorded: the daemon died inside StartContainer.
                            r.started_at = now_ns();
                        }
                    })?;
                }
                self.reattach_stdio(&c).await;
            }
            None => {
                self.update_container(id, |r| {
                    if r.state == ContainerState::Created {
                        r.state = ContainerState::Running;
                    }
                })?;
                self.record_exit(
                    id,
                    LOST_EXIT_CODE,
                    now_ns(),
                    "the container's shim was gone when crius restarted",
                )
                .await;
                self.update_container(id, |r| {
                    if let Some(exit) = &mut r.exit {
                        if exit.code == LOST_EXIT_CODE {
                            exit.reason = "Unknown".into();
                        }
                    }
                })?;
            }
        }
        Ok(())
    }

    /// Opens again what the daemon holds of a live container's stdio: the log fifos' drain
    /// and the stdin fifo.
    async fn reattach_stdio(&self, c: &crate::container::record::ContainerRecord) {
        self.reattach_log(&c.id, &c.sandbox_id, &c.log_path).await;
        if c.config.stdin {
            let path = self.cfg.dirs.bundle(&c.id).join("stdin");
            match crate::container::attach::StdinPipe::open(&path) {
                Ok(pipe) => {
                    lock(&self.stdin_pipes).insert(c.id.clone(), pipe);
                }
                Err(e) => tracing::warn!(container = %c.id, error = %e, "re-opening stdin"),
            }
        }
    }

    /// Drains the fifos of a container whose shim does not write its log itself.
    async fn reattach_log(&self, id: &str, sandbox_id: &str, log_path: &str) {
        if log_path.is_empty() {
            return;
        }
        let Some(sandbox) = lock(&self.records).sandboxes.get(sandbox_id).cloned() else {
            return;
        };
        let Ok(handler) = self.handlers.lookup(&sandbox.handler) else {
            return;
        };
        if handler.is_crius_shim() {
            return;
        }
        let bundle = self.cfg.dirs.bundle(id);
        let (out, err) = (bundle.join("stdout"), bundle.join("stderr"));
        let err = err.exists().then_some(err.as_path());
        match LogPipe::spawn(Some(log_path.into()), Some(&out), err).await {
            Ok(pipe) => {
                lock(&self.log_pipes).insert(id.to_string(), Arc::new(pipe));
            }
            Err(e) => tracing::warn!(container = id, error = %e, "re-attaching container log"),
        }
    }

    /// Removes bundles, writable layers, sandbox dirs, CNI attachments and netns pins that no
    /// record owns.
    async fn remove_orphans(&self) -> Result<(), PodError> {
        let known = |id: &str| {
            let r = lock(&self.records);
            r.sandboxes.contains_key(id) || r.containers.contains_key(id)
        };
        let dirs = self.cfg.dirs.clone();
        for id in entries(&dirs.tasks).await {
            if !known(&id) {
                tracing::info!(id, "removing orphan bundle");
                stop_orphan_shim(&id, &dirs.bundle(&id)).await;
                self.remove_task_dirs(&id).await?;
            }
        }
        for id in entries(&dirs.rw).await {
            if !known(&id) {
                self.remove_task_dirs(&id).await?;
            }
        }
        for id in entries(&dirs.sandboxes).await {
            if !known(&id) {
                tracing::info!(id, "removing orphan sandbox files");
                SandboxFiles::remove(&dirs.sandboxes.join(&id))
                    .await
                    .map_err(|e| PodError::internal("removing sandbox files", e))?;
            }
        }
        // Before the netns pins go: DEL runs best inside the namespace it attached.
        for id in self.cfg.cni.attached() {
            if !known(&id) {
                tracing::info!(id, "detaching an orphan network attachment");
                if let Err(e) = self.cfg.cni.teardown(&id).await {
                    tracing::warn!(id, error = %e, "orphan CNI DEL");
                }
            }
        }
        let live: Vec<_> = self
            .sandboxes()
            .into_iter()
            .filter(|s| s.state == SandboxState::Ready)
            .filter_map(|s| s.netns)
            .collect();
        for pin in NetNs::list(&dirs.netns).await {
            if !live.contains(&pin) {
                tracing::info!(pin = %pin.display(), "removing orphan network namespace");
                NetNs::remove(&pin)
                    .await
                    .map_err(|e| PodError::internal("removing network namespace", e))?;
            }
        }
        Ok(())
    }
}

/// A bundle nobody recorded may still have a live shim (the daemon died between the
/// shim's `start` and its record): kill its task and tell it to go.
async fn stop_orphan_shim(id: &str, bundle: &Path) {
    let Ok(bytes) = tokio::fs::read(bundle.join("address")).await else {
        return;
    };
    let Ok(bootstrap) = parse_bootstrap(&bytes) else {
        return;
    };
    let Ok(client) =
        runtime_v2_api::TaskClient::connect(&bootstrap, crius_handlers::shim::RECONNECT_TIMEOUT)
            .await
    else {
        return;
    };
    let client = client
        .with_namespace("k8s.io")
        .with_rpc_timeout(crius_handlers::shim::RECONNECT_TIMEOUT);
    if client
        .kill(id, "", libc::SIGKILL as u32, true)
        .await
        .is_ok()
    {
        let _ = tokio::time::timeout(crius_handlers::shim::RECONNECT_TIMEOUT, client.wait(id, ""))
            .await;
    }
    let _ = client.delete(id, "").await;
    let _ = client.shutdown(id, false).await;
    shim::forget(bundle).await;
}

/// Names of the entries of `dir` (none when it does not exist).
async fn entries(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(mut rd) = tokio::fs::read_dir(dir).await else {
        return out;
    };
    while let Ok(Some(e)) = rd.next_entry().await {
        if let Some(name) = e.file_name().to_str() {
            out.push(name.to_string());
        }
    }
    out
}
