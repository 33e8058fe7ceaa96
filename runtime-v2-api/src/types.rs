//! Domain types of the Task API: what the daemon passes in and gets back. No protobuf
//! type crosses this crate's public API (DESIGN.md: protobuf stays at the edge).

use std::path::PathBuf;
use std::time::SystemTime;

/// A rootfs mount handed to `Create` (overlay, bind, …), containerd's `types.Mount`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Mount {
    /// The mount type (`overlay`, `bind`, …); `type` in the protobuf.
    pub kind: String,
    pub source: String,
    pub target: String,
    pub options: Vec<String>,
}

/// The runc options type (`containerd.runc.v1.Options`) that containerd's configs use, so
/// the same handler options drive runc, crun and youki through our shim or the Go shim.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RuncOptions {
    pub binary_name: String,
    pub root: String,
    pub systemd_cgroup: bool,
}

/// A `Create` request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CreateTask {
    pub id: String,
    pub bundle: PathBuf,
    pub rootfs: Vec<Mount>,
    pub terminal: bool,
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub options: Option<RuncOptions>,
    /// Asks the shim to start the task as it creates it (one runtime `run` instead of
    /// `create` + `start`), sent as the [`START_AT_CREATE_METADATA_KEY`] request metadata.
    /// Only a hint: a shim that ignores it (containerd's Go shim) just creates, so the
    /// caller still calls `Start`, which a shim that honoured it only acknowledges.
    ///
    /// [`START_AT_CREATE_METADATA_KEY`]: crate::START_AT_CREATE_METADATA_KEY
    pub start_at_create: bool,
}

/// An `Exec` request; `spec` is the OCI runtime-spec `Process` object as JSON.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ExecProcess {
    pub id: String,
    pub exec_id: String,
    pub terminal: bool,
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub spec: serde_json::Value,
}

/// A process state as containerd's `task.Status` enum reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TaskStatus {
    #[default]
    Unknown,
    Created,
    Running,
    Stopped,
    Paused,
    Pausing,
}

/// The answer to `State`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TaskState {
    pub id: String,
    pub exec_id: String,
    pub bundle: String,
    pub pid: u32,
    pub status: TaskStatus,
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
    pub exit_status: u32,
    pub exited_at: Option<SystemTime>,
}

/// How a process ended (`Wait`, `Delete`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ExitStatus {
    /// The process id, 0 when the RPC does not report it (`Wait`).
    pub pid: u32,
    pub code: u32,
    pub exited_at: Option<SystemTime>,
}

/// The answer to `Connect`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConnectInfo {
    pub shim_pid: u32,
    pub task_pid: u32,
    pub version: String,
}

/// The container-level figures the CRI needs, decoded from cgroup v1 or v2 metrics.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Stats {
    /// Cumulative CPU time in nanoseconds.
    pub cpu_usage_ns: u64,
    pub memory_usage_bytes: u64,
    /// Usage minus inactive file pages, the kubelet's definition.
    pub memory_working_set_bytes: u64,
    /// The memory limit in bytes (a huge value when unlimited, as the kernel reports it).
    pub memory_limit_bytes: u64,
    pub pids: u64,
    /// OOM kills in the cgroup when the metrics report them.
    pub oom_kills: Option<u64>,
    /// The `Any` type URL the shim sent, e.g. `io.containerd.cgroups.v1.Metrics`.
    pub raw_type_url: String,
}
