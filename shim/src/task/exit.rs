//! Exits and OOM kills: each process has a monitor that turns the reaper's exit into state,
//! an `/tasks/exit` event and an answer for every Wait, once its output is drained.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use runtime_v2_api::TaskEvent;
use tokio::sync::{oneshot, watch};

use super::{Status, Tasks};
use crate::cgroup::Cgroup;
use crate::reaper::Exit;

/// How long an exited process's output copies may take to reach EOF (a background child
/// that inherited the pipe could hold it open forever).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

impl Tasks {
    /// Publishes `/tasks/oom` each time the task's cgroup records an OOM kill. Returns the
    /// flag that says whether one was published.
    pub(super) fn watch_oom(&self, id: &str, cgroup: Option<Arc<Cgroup>>) -> Arc<AtomicBool> {
        let seen = Arc::new(AtomicBool::new(false));
        let Some(cg) = cgroup else { return seen };
        let Ok(mut watch) = cg.watch_oom() else {
            return seen;
        };
        let events = self.events().clone();
        let id = id.to_string();
        let flag = seen.clone();
        tokio::spawn(async move {
            while watch.next().await.is_some() {
                flag.store(true, Ordering::SeqCst);
                events.publish(TaskEvent::Oom {
                    container_id: id.clone(),
                });
            }
        });
        seen
    }

    /// Waits for `pid`'s exit and records it.
    pub(super) async fn monitor(
        self,
        id: String,
        exec_id: String,
        pid: u32,
        exited: oneshot::Receiver<Exit>,
        tx: watch::Sender<Option<Exit>>,
        oom_seen: Arc<AtomicBool>,
    ) {
        let Ok(exit) = exited.await else { return };
        let io = {
            let mut tasks = self.lock();
            match tasks
                .get_mut(&id)
                .and_then(|c| c.process_mut(&exec_id).ok())
            {
                Some(p) => {
                    p.reaped = true;
                    Some(std::mem::take(&mut p.io))
                }
                None => None,
            }
        };
        let Some(mut io) = io else {
            let _ = tx.send(Some(exit));
            return;
        };
        io.drain(DRAIN_TIMEOUT).await;
        let cgroup = {
            let mut tasks = self.lock();
            let Some(c) = tasks.get_mut(&id) else {
                let _ = tx.send(Some(exit));
                return;
            };
            let cgroup = c.cgroup.clone();
            if let Ok(p) = c.process_mut(&exec_id) {
                p.status = Status::Stopped;
                p.exit = Some(exit);
                p.io = io;
            }
            cgroup
        };
        if exec_id.is_empty() && !oom_seen.load(Ordering::SeqCst) {
            if let Some(cg) = cgroup {
                if cg.oom_kills().unwrap_or(0) > 0 {
                    self.events().publish(TaskEvent::Oom {
                        container_id: id.clone(),
                    });
                }
            }
        }
        self.events().publish(TaskEvent::Exit {
            container_id: id.clone(),
            exec_id: if exec_id.is_empty() {
                id.clone()
            } else {
                exec_id
            },
            pid,
            exit_status: exit.status,
            exited_at: Some(exit.at),
        });
        let _ = tx.send(Some(exit));
    }
}
