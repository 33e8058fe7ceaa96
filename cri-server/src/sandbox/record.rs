//! What the store keeps of a sandbox.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::config::PodConfig;

/// A sandbox's lifecycle as the store records it. `Creating` is written before anything is
/// made on the host, so a crash during RunPodSandbox is found and rolled back at start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SandboxState {
    /// RunPodSandbox is in progress (or crashed half-way).
    Creating,
    /// The pause container runs.
    Ready,
    /// Stopped (or its pause container died); the netns is gone.
    NotReady,
}

/// One pod sandbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SandboxRecord {
    /// 64 hex characters.
    pub id: String,
    /// The reserved name, `<name>_<namespace>_<uid>_<attempt>`.
    pub name: String,
    /// The pod config as the kubelet sent it.
    pub config: PodConfig,
    /// The RuntimeClass handler.
    pub handler: String,
    pub state: SandboxState,
    /// Unix nanoseconds.
    pub created_at: i64,
    /// The pinned network namespace; `None` for host network.
    pub netns: Option<PathBuf>,
    /// The pod's IPs from CNI ADD, primary first; emptied when the network is torn down.
    #[serde(default)]
    pub ips: Vec<std::net::IpAddr>,
    /// The pause container's pid (0 until started).
    pub pid: u32,
    /// The shim's bootstrap JSON, to reconnect after a restart.
    pub bootstrap: Option<String>,
    /// The pause image id.
    pub image: String,
    /// The spec the pause container runs with, as JSON (for verbose status).
    #[serde(default)]
    pub spec: Option<crate::spec::StoredSpec>,
}
