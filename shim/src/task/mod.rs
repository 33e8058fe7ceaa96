//! The tasks one shim supervises (a pod's containers) and what each Task RPC does to them.
//! Protobuf stays in [`crate::service`]; this module works with its own types. One verb per
//! file where a verb is more than a few lines.

mod create;
mod delete;
mod exec;
mod exit;
mod ops;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use tokio::sync::{watch, Notify};

use crate::cgroup::Cgroup;
use crate::command::CommandRunner;
use crate::error::{Result, ShimError};
use crate::events::Events;
use crate::reaper::Exit;
use crate::runtime::Runtime;
use crate::stdio::{ProcessIo, StdioConfig};

pub use create::CreateRequest;
pub use delete::Deleted;
pub use exec::ExecRequest;

/// A process's lifecycle state, as the Task API reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Created by the runtime, not started.
    Created,
    /// Running.
    Running,
    /// Frozen by Pause.
    Paused,
    /// Exited (its exit is recorded).
    Stopped,
}

/// What State answers about one process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessState {
    /// Task id.
    pub id: String,
    /// Exec id ("" for the init process).
    pub exec_id: String,
    /// The task's bundle.
    pub bundle: PathBuf,
    /// Host pid (0 before an exec is started).
    pub pid: u32,
    /// Lifecycle state.
    pub status: Status,
    /// The stdio it was given.
    pub stdio: StdioConfig,
    /// Exit status once stopped.
    pub exit_status: u32,
    /// Exit time once stopped.
    pub exited_at: Option<SystemTime>,
}

/// One process (init or exec) of a task.
#[derive(Debug)]
pub(crate) struct Process {
    pub exec_id: String,
    pub pid: u32,
    pub status: Status,
    pub stdio: StdioConfig,
    /// Set as soon as the reaper collected it (before output is drained): its pid may
    /// already belong to someone else, so no more signals.
    pub reaped: bool,
    pub exit: Option<Exit>,
    pub io: ProcessIo,
    /// The OCI process spec of an exec, until it is started.
    pub spec: Option<serde_json::Value>,
    pub exited: watch::Receiver<Option<Exit>>,
    pub exited_tx: Option<watch::Sender<Option<Exit>>>,
}

impl Process {
    pub fn new(exec_id: &str, stdio: StdioConfig) -> Process {
        let (tx, rx) = watch::channel(None);
        Process {
            exec_id: exec_id.to_string(),
            pid: 0,
            status: Status::Created,
            stdio,
            reaped: false,
            exit: None,
            io: ProcessIo::default(),
            spec: None,
            exited: rx,
            exited_tx: Some(tx),
        }
    }
}

/// One task: a container with its init process and exec processes.
#[derive(Debug)]
pub(crate) struct Container {
    pub id: String,
    pub bundle: PathBuf,
    pub rootfs_mounted: bool,
    pub runtime: Runtime,
    pub init: Process,
    pub execs: HashMap<String, Process>,
    pub cgroup: Option<Arc<Cgroup>>,
    /// The runtime started init at Create (a pod's sandbox container, see
    /// [`create`]); the Start still owed only acknowledges it.
    pub started_by_create: bool,
}

impl Container {
    fn process(&self, exec_id: &str) -> Result<&Process> {
        if exec_id.is_empty() {
            return Ok(&self.init);
        }
        self.execs.get(exec_id).ok_or_else(|| {
            ShimError::NotFound(format!("exec {exec_id:?} of task {:?} not found", self.id))
        })
    }

    fn process_mut(&mut self, exec_id: &str) -> Result<&mut Process> {
        if exec_id.is_empty() {
            return Ok(&mut self.init);
        }
        let id = self.id.clone();
        self.execs.get_mut(exec_id).ok_or_else(|| {
            ShimError::NotFound(format!("exec {exec_id:?} of task {id:?} not found"))
        })
    }
}

/// How long a Kill, Wait or Delete waits for a running Create of its task.
const CREATE_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Everything the shim knows; cheap to clone.
#[derive(Debug, Clone)]
pub struct Tasks {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    namespace: String,
    /// Default runtime root dir when the options name none.
    default_root_base: PathBuf,
    runner: CommandRunner,
    events: Events,
    tasks: Mutex<HashMap<String, Container>>,
    /// Ids being created right now (reserved against a concurrent duplicate).
    creating: Mutex<Vec<String>>,
    /// Notified each time a Create ends, for [`Tasks::settled`].
    created: Notify,
    shutdown: Arc<Notify>,
}

impl Tasks {
    /// The task table of a shim in `namespace` for the daemon at `address`.
    pub fn new(namespace: &str, address: &str, runner: CommandRunner, events: Events) -> Tasks {
        let base = std::path::Path::new(address.trim_start_matches("unix://"))
            .parent()
            .map(|p| p.to_path_buf())
            .unwrap_or_else(|| PathBuf::from("/run/crius"));
        Tasks {
            inner: Arc::new(Inner {
                namespace: namespace.to_string(),
                default_root_base: base,
                runner,
                events,
                tasks: Mutex::new(HashMap::new()),
                creating: Mutex::new(Vec::new()),
                created: Notify::new(),
                shutdown: Arc::new(Notify::new()),
            }),
        }
    }

    /// Notified when the shim should exit (Shutdown with no tasks left).
    pub fn shutdown_signal(&self) -> Arc<Notify> {
        self.inner.shutdown.clone()
    }

    /// The event queue.
    pub fn events(&self) -> &Events {
        &self.inner.events
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Container>> {
        self.inner.tasks.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn not_found(id: &str) -> ShimError {
        ShimError::NotFound(format!("task {id:?} not found"))
    }

    /// Runs `f` on task `id`.
    fn with<T>(&self, id: &str, f: impl FnOnce(&mut Container) -> Result<T>) -> Result<T> {
        let mut tasks = self.lock();
        let c = tasks.get_mut(id).ok_or_else(|| Self::not_found(id))?;
        f(c)
    }

    /// State of a process.
    pub fn state(&self, id: &str, exec_id: &str) -> Result<ProcessState> {
        self.with(id, |c| {
            let p = c.process(exec_id)?;
            Ok(ProcessState {
                id: c.id.clone(),
                exec_id: p.exec_id.clone(),
                bundle: c.bundle.clone(),
                pid: p.pid,
                status: p.status,
                stdio: p.stdio.clone(),
                exit_status: p.exit.map_or(0, |e| e.status),
                exited_at: p.exit.map(|e| e.at),
            })
        })
    }

    /// Returns once no Create of `id` is running (at most [`CREATE_WAIT`]). A Kill, Wait
    /// or Delete may come while the task's Create still runs: a daemon that was killed
    /// mid-Create and rolls the task back after its restart. Answering NotFound then
    /// would leave the container the Create is about to finish running, with nobody
    /// left to remove it; acting on the finished Create removes it.
    pub(crate) async fn settled(&self, id: &str) {
        let deadline = tokio::time::Instant::now() + CREATE_WAIT;
        loop {
            let notified = self.inner.created.notified();
            let busy = self
                .inner
                .creating
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .any(|c| c == id);
            if !busy || tokio::time::timeout_at(deadline, notified).await.is_err() {
                return;
            }
        }
    }

    /// Waits for a process to exit.
    pub async fn wait(&self, id: &str, exec_id: &str) -> Result<Exit> {
        self.settled(id).await;
        let mut rx = self.with(id, |c| Ok(c.process(exec_id)?.exited.clone()))?;
        let exit = rx
            .wait_for(|e| e.is_some())
            .await
            .map_err(|_| ShimError::NotFound(format!("task {id:?} exec {exec_id:?} went away")))?;
        (*exit).ok_or_else(|| ShimError::Internal("exit lost".into()))
    }

    /// The shim pid and the task's init pid.
    pub fn connect(&self, id: &str) -> (u32, u32) {
        let task_pid = self.lock().get(id).map_or(0, |c| c.init.pid);
        (std::process::id(), task_pid)
    }

    /// Shutdown: exit when no task is left (or `now`).
    pub fn shutdown(&self, now: bool) {
        let creating = !self
            .inner
            .creating
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty();
        if now || (self.lock().is_empty() && !creating) {
            self.inner.shutdown.notify_one();
        }
    }

    /// Whether no task is left.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// ReopenContainerLog for a process writing a CRI log.
    pub fn reopen_log(&self, id: &str, exec_id: &str) -> Result<()> {
        self.with(id, |c| c.process(exec_id)?.io.reopen_log())
    }

    /// Closes a process's stdin.
    pub fn close_io(&self, id: &str, exec_id: &str) -> Result<()> {
        self.with(id, |c| {
            c.process_mut(exec_id)?.io.close_stdin();
            Ok(())
        })
    }

    /// Resizes a process's pty.
    pub fn resize_pty(&self, id: &str, exec_id: &str, width: u32, height: u32) -> Result<()> {
        self.with(id, |c| c.process(exec_id)?.io.resize(width, height))
    }
}
