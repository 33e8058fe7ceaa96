//! Containers of a pod: create, start, stop, remove, status, logs.

pub mod attach;
pub mod config;
mod create;
pub mod exec;
pub mod exec_stream;
pub mod log;
pub mod record;
mod remove;
mod start;
pub mod stats;
pub(crate) mod stop;
mod update;

use crate::sandbox::config::NamespaceMode;
use config::{ContainerConfig, Resources};

impl ContainerConfig {
    /// The container whose pid namespace this one joins (pid mode TARGET).
    pub fn pid_target(&self) -> Option<&str> {
        let ns = &self.linux.security.namespaces;
        (ns.pid == NamespaceMode::Target)
            .then_some(ns.target_id.as_deref())
            .flatten()
    }

    /// Records new resources (UpdateContainerResources).
    pub fn set_resources(&mut self, r: Resources) {
        self.linux.resources = Some(r);
    }
}
