//! StopContainer: the image's stop signal (or SIGTERM), then SIGKILL after the timeout.
//! Idempotent: an unknown or already-stopped container is success.

use std::sync::Arc;
use std::time::Duration;

use super::record::ContainerState;
use crate::pods::{now_ns, to_ns, PodError, Pods};

/// How long a SIGKILLed process gets before the stop is reported as failed.
const KILL_WAIT: Duration = Duration::from_secs(10);

impl Pods {
    /// Stops a container, waiting up to `timeout_s` seconds after the stop signal.
    pub async fn stop_container(
        self: &Arc<Self>,
        id: &str,
        timeout_s: i64,
    ) -> Result<(), PodError> {
        let Some(rec) = self.container(id)? else {
            return Ok(());
        };
        let _guard = self.locks.lock(&rec.id).await;
        let Some(rec) = self.container(&rec.id)? else {
            return Ok(());
        };
        if rec.state == ContainerState::Created {
            // Its task is made at StartContainer: nothing runs yet, and the container stays
            // Created (as containerd leaves it). A task of an older crius that created tasks
            // at CreateContainer is deleted; StartContainer would make it again.
            self.delete_task(&rec.id, &rec.sandbox_id).await;
            return Ok(());
        }
        if rec.state != ContainerState::Running {
            return Ok(());
        }
        let Some(client) = self.shim(&rec.sandbox_id) else {
            return Err(PodError::Unavailable(format!(
                "the shim of pod sandbox {} is not connected",
                rec.sandbox_id
            )));
        };
        if rec.state == ContainerState::Running && timeout_s > 0 {
            let signal = rec.stop_signal();
            match client.kill(&rec.id, "", signal, false).await {
                Ok(()) => {}
                Err(e) if is_gone(&e) => {}
                Err(e) => return Err(e.into()),
            }
            let wait = Duration::from_secs(u64::try_from(timeout_s).unwrap_or(0));
            if let Ok(Ok(st)) = tokio::time::timeout(wait, client.wait(&rec.id, "")).await {
                self.stopped(&rec.id, &rec.sandbox_id, st).await;
                return Ok(());
            }
        }
        match client.kill(&rec.id, "", libc::SIGKILL as u32, true).await {
            Ok(()) => {}
            Err(e) if is_gone(&e) => {}
            Err(e) => return Err(e.into()),
        }
        let st = tokio::time::timeout(KILL_WAIT, client.wait(&rec.id, ""))
            .await
            .map_err(|_| {
                PodError::DeadlineExceeded(format!(
                    "container {} did not exit {KILL_WAIT:?} after SIGKILL",
                    rec.id
                ))
            })??;
        self.stopped(&rec.id, &rec.sandbox_id, st).await;
        Ok(())
    }

    /// Records how a stopped container ended and deletes its task.
    async fn stopped(&self, id: &str, sandbox_id: &str, st: runtime_v2_api::ExitStatus) {
        let at = st.exited_at.map(to_ns).unwrap_or_else(now_ns);
        self.record_exit(id, st.code as i32, at, "").await;
        self.delete_task(id, sandbox_id).await;
    }

    /// Deletes an exited container's task from its shim (its low-level runtime state).
    pub(crate) async fn delete_task(&self, id: &str, sandbox_id: &str) {
        if let Some(client) = self.shim(sandbox_id) {
            if let Err(e) = client.delete(id, "").await {
                if !is_gone(&e) {
                    tracing::debug!(container = id, error = %e, "deleting task");
                }
            }
        }
    }
}

/// True when the shim no longer knows the task (it exited and was deleted).
pub(crate) fn is_gone(e: &runtime_v2_api::Error) -> bool {
    shim_answered(e, runtime_v2_api::Code::NotFound)
}

/// True when the shim itself answered `code` (not a transport or local failure).
pub(crate) fn shim_answered(e: &runtime_v2_api::Error, code: runtime_v2_api::Code) -> bool {
    matches!(e, runtime_v2_api::Error::Rpc { code: c, .. } if *c == code)
}
