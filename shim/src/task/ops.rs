//! The short verbs: Start, Kill, Pids, Pause, Resume, Update, Stats.

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use runtime_v2_api::TaskEvent;

use super::{Status, Tasks};
use crate::error::{Result, ShimError};

impl Tasks {
    /// Starts the init process (`exec_id` empty) or an exec; returns its pid.
    pub async fn start(&self, id: &str, exec_id: &str) -> Result<u32> {
        if !exec_id.is_empty() {
            return self.start_exec(id, exec_id).await;
        }
        let (runtime, pid) = self.with(id, |c| {
            if std::mem::take(&mut c.started_by_create) {
                return Ok((None, c.init.pid));
            }
            if c.init.status != Status::Created {
                return Err(ShimError::FailedPrecondition(format!(
                    "task {id:?} is {:?}, not created: it cannot be started",
                    c.init.status
                )));
            }
            Ok((Some(c.runtime.clone()), c.init.pid))
        })?;
        let Some(runtime) = runtime else {
            return Ok(pid); // started (and announced) by Create
        };
        runtime.start(id).await?;
        self.with(id, |c| {
            if c.init.status == Status::Created {
                c.init.status = Status::Running;
            }
            Ok(())
        })?;
        self.events().publish(TaskEvent::Start {
            container_id: id.to_string(),
            pid,
        });
        Ok(pid)
    }

    /// Sends `signal` to a process; with `all`, to every process of the task.
    pub async fn kill(&self, id: &str, exec_id: &str, signal: u32, all: bool) -> Result<()> {
        self.settled(id).await;
        let (runtime, pid, reaped) = self.with(id, |c| {
            let runtime = c.runtime.clone();
            let p = c.process(exec_id)?;
            Ok((runtime, p.pid, p.reaped))
        })?;
        if exec_id.is_empty() && all {
            return runtime.kill(id, signal, true).await;
        }
        if reaped {
            return Err(ShimError::NotFound(format!(
                "process {exec_id:?} of task {id:?} already finished"
            )));
        }
        if pid == 0 {
            return Err(ShimError::FailedPrecondition(format!(
                "exec {exec_id:?} of task {id:?} is not started"
            )));
        }
        let sig = Signal::try_from(signal as i32)
            .map_err(|_| ShimError::InvalidArgument(format!("signal {signal} is not valid")))?;
        // We are the reaper of `pid` and it was not reaped: the pid cannot have been reused.
        match kill(Pid::from_raw(pid as i32), sig) {
            Ok(()) => Ok(()),
            Err(nix::errno::Errno::ESRCH) => Err(ShimError::NotFound(format!(
                "process {exec_id:?} of task {id:?} already finished"
            ))),
            Err(e) => Err(ShimError::Internal(format!("kill {pid}: {e}"))),
        }
    }

    /// Pids of every process in the task.
    pub async fn pids(&self, id: &str) -> Result<Vec<u32>> {
        let (runtime, cgroup) = self.with(id, |c| Ok((c.runtime.clone(), c.cgroup.clone())))?;
        if let Some(cg) = cgroup {
            if let Ok(pids) = cg.procs() {
                return Ok(pids);
            }
        }
        runtime.ps(id).await
    }

    /// Freezes the task.
    pub async fn pause(&self, id: &str) -> Result<()> {
        let runtime = self.with(id, |c| match c.init.status {
            Status::Running => Ok(c.runtime.clone()),
            s => Err(ShimError::FailedPrecondition(format!(
                "task {id:?} is {s:?}: only a running task can be paused"
            ))),
        })?;
        runtime.pause(id).await?;
        self.set_status(id, Status::Running, Status::Paused);
        self.events().publish(TaskEvent::Paused {
            container_id: id.to_string(),
        });
        Ok(())
    }

    /// Thaws the task.
    pub async fn resume(&self, id: &str) -> Result<()> {
        let runtime = self.with(id, |c| match c.init.status {
            Status::Paused => Ok(c.runtime.clone()),
            s => Err(ShimError::FailedPrecondition(format!(
                "task {id:?} is {s:?}: only a paused task can be resumed"
            ))),
        })?;
        runtime.resume(id).await?;
        self.set_status(id, Status::Paused, Status::Running);
        self.events().publish(TaskEvent::Resumed {
            container_id: id.to_string(),
        });
        Ok(())
    }

    fn set_status(&self, id: &str, from: Status, to: Status) {
        let _ = self.with(id, |c| {
            if c.init.status == from {
                c.init.status = to;
            }
            Ok(())
        });
    }

    /// Updates the task's resources from an OCI `LinuxResources` JSON document.
    pub async fn update(&self, id: &str, resources_json: &[u8]) -> Result<()> {
        serde_json::from_slice::<serde_json::Value>(resources_json)
            .ok()
            .filter(|v| v.is_object())
            .ok_or_else(|| {
                ShimError::InvalidArgument(
                    "resources must be an OCI LinuxResources JSON object".into(),
                )
            })?;
        let (runtime, bundle) = self.with(id, |c| {
            if c.init.status == Status::Stopped {
                return Err(ShimError::FailedPrecondition(format!(
                    "task {id:?} is stopped"
                )));
            }
            Ok((c.runtime.clone(), c.bundle.clone()))
        })?;
        let file = bundle.join(".update-resources.json");
        std::fs::write(&file, resources_json).map_err(|e| ShimError::io(file.display(), e))?;
        let r = runtime.update(id, &file).await;
        let _ = std::fs::remove_file(&file);
        r
    }

    /// containerd's cgroup metrics of the task, as a protobuf `Any`.
    pub fn stats(&self, id: &str) -> Result<protobuf::well_known_types::any::Any> {
        let cgroup = self.with(id, |c| {
            c.cgroup.clone().ok_or_else(|| {
                ShimError::FailedPrecondition(format!("task {id:?} has no cgroup to read"))
            })
        })?;
        cgroup
            .metrics()
            .map_err(|e| ShimError::Internal(format!("stats of task {id:?}: {e}")))
    }
}
