//! Pod sandboxes: the pause container, its network namespace and its files.

pub mod config;
pub mod files;
pub mod record;
mod remove;
pub mod run;
mod stop;

use config::{NamespaceMode, PodConfig};

/// The sandbox files a spec mounts; host-IPC pods use the host's `/dev/shm`.
pub fn spec_paths(files: &files::SandboxFiles, host_ipc: bool) -> crate::spec::SandboxPaths {
    crate::spec::SandboxPaths {
        hostname: files.hostname.clone(),
        hosts: files.hosts.clone(),
        resolv_conf: files.resolv_conf.clone(),
        shm: if host_ipc { None } else { files.shm.clone() },
    }
}

impl PodConfig {
    /// The pod shares the host's network namespace.
    pub fn host_network(&self) -> bool {
        self.linux.security.namespaces.network == NamespaceMode::Node
    }

    /// The pod shares the host's IPC namespace (and so its `/dev/shm`).
    pub fn host_ipc(&self) -> bool {
        self.linux.security.namespaces.ipc == NamespaceMode::Node
    }

    /// The cgroup parent the kubelet asked for (empty: crius's default).
    pub fn cgroup_parent(&self) -> &str {
        &self.linux.cgroup_parent
    }

    /// DNS settings for the sandbox's resolv.conf, when any are set.
    pub fn dns_files(&self) -> Option<files::DnsConfig> {
        let d = self.dns.as_ref()?;
        if d.servers.is_empty() && d.searches.is_empty() && d.options.is_empty() {
            return None;
        }
        Some(files::DnsConfig {
            servers: d.servers.clone(),
            searches: d.searches.clone(),
            options: d.options.clone(),
        })
    }
}
