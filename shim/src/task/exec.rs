//! Exec: register an extra process in a task (Exec), then run it (Start with an exec id)
//! through `runtime exec --detach`.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use runtime_v2_api::TaskEvent;

use super::create::{check_id, read_pid};
use super::{Process, Status, Tasks};
use crate::error::{Result, ShimError};
use crate::reaper::Exit;
use crate::stdio::{Owner, Prepared, StdioConfig};

/// An Exec request in domain terms.
#[derive(Debug, Clone)]
pub struct ExecRequest {
    /// Task id.
    pub id: String,
    /// Exec id, unique within the task.
    pub exec_id: String,
    /// Stdio.
    pub stdio: StdioConfig,
    /// The OCI `Process` to run (JSON).
    pub spec: serde_json::Value,
}

impl Tasks {
    /// Registers an exec process (not started).
    pub fn exec(&self, req: ExecRequest) -> Result<()> {
        check_id("exec id", &req.exec_id)?;
        if !req.spec.is_object() {
            return Err(ShimError::InvalidArgument(format!(
                "exec {:?}: spec must be an OCI process object",
                req.exec_id
            )));
        }
        self.with(&req.id, |c| {
            if c.init.status == Status::Stopped {
                return Err(ShimError::FailedPrecondition(format!(
                    "task {:?} is stopped: cannot exec in it",
                    c.id
                )));
            }
            if c.execs.contains_key(&req.exec_id) {
                return Err(ShimError::AlreadyExists(format!(
                    "exec {:?} already exists in task {:?}",
                    req.exec_id, c.id
                )));
            }
            let mut p = Process::new(&req.exec_id, req.stdio.clone());
            p.spec = Some(req.spec.clone());
            c.execs.insert(req.exec_id.clone(), p);
            Ok(())
        })?;
        self.events().publish(TaskEvent::ExecAdded {
            container_id: req.id,
            exec_id: req.exec_id,
        });
        Ok(())
    }

    /// Starts a registered exec; returns its pid.
    pub(super) async fn start_exec(&self, id: &str, exec_id: &str) -> Result<u32> {
        let (runtime, bundle, spec, stdio) = self.with(id, |c| {
            let (runtime, bundle) = (c.runtime.clone(), c.bundle.clone());
            let p = c.process_mut(exec_id)?;
            if p.status != Status::Created {
                return Err(ShimError::FailedPrecondition(format!(
                    "exec {exec_id:?} of task {id:?} was already started"
                )));
            }
            let spec = p.spec.take().ok_or_else(|| {
                ShimError::FailedPrecondition(format!(
                    "exec {exec_id:?} of task {id:?} is being started"
                ))
            })?;
            Ok((runtime, bundle, spec, p.stdio.clone()))
        })?;
        let process_file = bundle.join(format!(".exec-{exec_id}.json"));
        let pid_file = bundle.join(format!(".exec-{exec_id}.pid"));
        let owner = Owner {
            id: id.to_string(),
            namespace: self.inner.namespace.clone(),
        };
        let since = Instant::now();
        let started = async {
            let data = serde_json::to_vec(&spec)
                .map_err(|e| ShimError::InvalidArgument(format!("exec {exec_id:?} spec: {e}")))?;
            std::fs::write(&process_file, data)
                .map_err(|e| ShimError::io(process_file.display(), e))?;
            let mut prepared = Prepared::new(&stdio, &owner).await?;
            let console_path = prepared.console.as_ref().map(|c| c.path().to_path_buf());
            let child = prepared.take_child();
            runtime
                .exec(id, &process_file, &pid_file, console_path.as_deref(), child)
                .await?;
            let io = prepared.finish(&owner).await?;
            let pid = read_pid(&pid_file)?;
            Ok::<_, ShimError>((io, pid))
        }
        .await;
        let _ = std::fs::remove_file(&process_file);
        let _ = std::fs::remove_file(&pid_file);
        let (io, pid) = match started {
            Ok(v) => v,
            Err(e) => {
                // The exec is over before it began: Wait answers at once.
                let exit = Exit {
                    status: 255,
                    at: std::time::SystemTime::now(),
                };
                let _ = self.with(id, |c| {
                    let p = c.process_mut(exec_id)?;
                    p.status = Status::Stopped;
                    p.reaped = true;
                    p.exit = Some(exit);
                    if let Some(tx) = p.exited_tx.take() {
                        let _ = tx.send(Some(exit));
                    }
                    Ok(())
                });
                return Err(e);
            }
        };
        let exited = self.inner.runner.reaper().subscribe(pid, since);
        let tx = self.with(id, |c| {
            let p = c.process_mut(exec_id)?;
            p.pid = pid;
            p.io = io;
            if p.status == Status::Created {
                p.status = Status::Running;
            }
            Ok(p.exited_tx.take())
        });
        match tx {
            Ok(Some(tx)) => {
                tokio::spawn(self.clone().monitor(
                    id.to_string(),
                    exec_id.to_string(),
                    pid,
                    exited,
                    tx,
                    Arc::new(AtomicBool::new(true)),
                ));
            }
            _ => self.inner.runner.reaper().forget(pid),
        }
        self.events().publish(TaskEvent::ExecStarted {
            container_id: id.to_string(),
            exec_id: exec_id.to_string(),
            pid,
        });
        Ok(pid)
    }
}
