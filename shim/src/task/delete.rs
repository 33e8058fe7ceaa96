//! Delete: forget an exited exec, or remove a task: `runtime delete`, unmount the rootfs,
//! drop it from the table and publish `/tasks/delete`.

use std::time::SystemTime;

use runtime_v2_api::TaskEvent;

use super::{Status, Tasks};
use crate::error::{Result, ShimError};
use crate::mount;
use crate::reaper::Exit;

/// What Delete answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deleted {
    /// The process's pid.
    pub pid: u32,
    /// Its exit status (137 if it never ran or was killed by the delete).
    pub exit_status: u32,
    /// When it exited.
    pub exited_at: SystemTime,
}

impl Tasks {
    /// Deletes an exec (`exec_id` set) or the whole task.
    pub async fn delete(&self, id: &str, exec_id: &str) -> Result<Deleted> {
        self.settled(id).await;
        if !exec_id.is_empty() {
            return self.with(id, |c| {
                let p = c.process(exec_id)?;
                if matches!(p.status, Status::Running | Status::Paused) {
                    return Err(ShimError::FailedPrecondition(format!(
                        "exec {exec_id:?} of task {id:?} is running: kill it before deleting it"
                    )));
                }
                let deleted = deleted_of(p.pid, p.exit);
                c.execs.remove(exec_id);
                Ok(deleted)
            });
        }
        let (runtime, status, bundle, mounted) = self.with(id, |c| {
            if matches!(c.init.status, Status::Running | Status::Paused) {
                return Err(ShimError::FailedPrecondition(format!(
                    "task {id:?} is {:?}: kill it before deleting it",
                    c.init.status
                )));
            }
            Ok((
                c.runtime.clone(),
                c.init.status,
                c.bundle.clone(),
                c.rootfs_mounted,
            ))
        })?;
        // A created task that never started still has a live init: force kills it.
        runtime
            .delete(id, status == Status::Created)
            .await
            .or_else(|e| match e {
                ShimError::NotFound(_) => Ok(()),
                e => Err(e),
            })?;
        if mounted {
            mount::unmount_all(&bundle.join("rootfs"))?;
        }
        let _ = std::fs::remove_file(bundle.join("init.pid"));
        let container = self.lock().remove(id);
        let Some(c) = container else {
            return Err(Self::not_found(id));
        };
        let deleted = deleted_of(c.init.pid, c.init.exit);
        self.events().publish(TaskEvent::Delete {
            container_id: id.to_string(),
            pid: deleted.pid,
            exit_status: deleted.exit_status,
            exited_at: Some(deleted.exited_at),
        });
        Ok(deleted)
    }
}

fn deleted_of(pid: u32, exit: Option<Exit>) -> Deleted {
    match exit {
        Some(e) => Deleted {
            pid,
            exit_status: e.status,
            exited_at: e.at,
        },
        None => Deleted {
            pid,
            exit_status: 137,
            exited_at: SystemTime::now(),
        },
    }
}
