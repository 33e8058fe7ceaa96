//! A pod's configuration as crius's own types (converted from CRI at the edge).
//!
//! These mirror CRI's `PodSandboxConfig` but with the wire's ambiguities resolved: unset
//! numbers are `None`, enums are closed, both seccomp/AppArmor spellings are one
//! [`SecurityProfile`]. The lead stores them as JSON, so every type is serde-able. The
//! security types shared with containers ([`NamespaceOptions`], [`SecurityProfile`],
//! [`SelinuxOptions`]) live here because the pod owns the namespaces.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::container::config::Resources;

/// A pod sandbox's configuration (CRI `PodSandboxConfig`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PodConfig {
    /// Name, namespace, uid and attempt, as the kubelet identifies the pod.
    pub metadata: PodMetadata,
    /// The pod's hostname; empty means the runtime picks (crius uses the node's).
    pub hostname: String,
    /// Directory on the host under which container log files are put.
    pub log_directory: String,
    /// DNS settings for the pod's `resolv.conf`; `None` means copy the host's.
    pub dns: Option<DnsConfig>,
    /// Ports the pod exposes on the host.
    pub port_mappings: Vec<PortMapping>,
    /// Labels the kubelet uses to select pods.
    pub labels: BTreeMap<String, String>,
    /// Free-form annotations, passed into the OCI spec.
    pub annotations: BTreeMap<String, String>,
    /// Linux-specific settings.
    pub linux: PodLinux,
}

/// How a pod is identified (CRI `PodSandboxMetadata`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PodMetadata {
    /// The pod's name.
    pub name: String,
    /// The pod's UID.
    pub uid: String,
    /// The pod's Kubernetes namespace.
    pub namespace: String,
    /// How many times the kubelet created a sandbox for this pod before.
    pub attempt: u32,
}

/// DNS configuration of a pod (CRI `DNSConfig`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DnsConfig {
    /// Name servers, in order.
    pub servers: Vec<String>,
    /// Search domains, in order.
    pub searches: Vec<String>,
    /// `options` lines of resolv.conf (`ndots:5`, …).
    pub options: Vec<String>,
}

/// A transport protocol of a port mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Protocol {
    /// TCP.
    #[default]
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

/// A host port forwarded to the pod (CRI `PortMapping`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PortMapping {
    /// Protocol of the port.
    pub protocol: Protocol,
    /// Port inside the pod.
    pub container_port: u16,
    /// Port on the host; 0 means none.
    pub host_port: u16,
    /// Host address to bind; empty means all.
    pub host_ip: String,
}

/// Linux settings of a pod (CRI `LinuxPodSandboxConfig`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PodLinux {
    /// Parent cgroup of the pod (cgroupfs path or systemd slice); empty means crius's own.
    pub cgroup_parent: String,
    /// Namespaced sysctls for the pod, applied to the sandbox.
    pub sysctls: BTreeMap<String, String>,
    /// The pod-level security context.
    pub security: PodSecurity,
    /// Resources the pod needs beyond its containers (the RuntimeClass overhead).
    pub overhead: Option<Resources>,
    /// The sum of the containers' resources, as the kubelet computed it.
    pub resources: Option<Resources>,
}

/// The pod-level security context (CRI `LinuxSandboxSecurityContext`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PodSecurity {
    /// Which namespaces the pod shares with the node.
    pub namespaces: NamespaceOptions,
    /// UID of the sandbox process.
    pub run_as_user: Option<u32>,
    /// GID of the sandbox process.
    pub run_as_group: Option<u32>,
    /// Groups added to the first process of every container.
    pub supplemental_groups: Vec<u32>,
    /// Whether `/etc/group` memberships are merged into the supplemental groups.
    pub supplemental_groups_policy: SupplementalGroupsPolicy,
    /// Mount the sandbox's root filesystem read-only.
    pub readonly_rootfs: bool,
    /// The pod may contain privileged containers.
    pub privileged: bool,
    /// Seccomp profile of the sandbox; `None` means not specified (unconfined, as containerd).
    pub seccomp: Option<SecurityProfile>,
    /// AppArmor profile of the sandbox; `None` means not specified.
    pub apparmor: Option<SecurityProfile>,
    /// SELinux labels; crius does not apply SELinux, they are kept for status only.
    pub selinux: Option<SelinuxOptions>,
}

/// Which namespace a process gets (CRI `NamespaceMode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum NamespaceMode {
    /// Shared by every container of the pod.
    #[default]
    Pod,
    /// The container's own.
    Container,
    /// The node's (host) namespace.
    Node,
    /// The namespace of another container, named by [`NamespaceOptions::target_id`].
    Target,
}

/// The namespaces of a pod or container (CRI `NamespaceOption`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NamespaceOptions {
    /// Network namespace mode.
    pub network: NamespaceMode,
    /// PID namespace mode.
    pub pid: NamespaceMode,
    /// IPC namespace mode.
    pub ipc: NamespaceMode,
    /// The container whose namespace a [`NamespaceMode::Target`] joins.
    pub target_id: Option<String>,
}

/// How supplemental groups of a container's first process are computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum SupplementalGroupsPolicy {
    /// The image's `/etc/group` memberships plus the configured groups.
    #[default]
    Merge,
    /// Only the primary group and the configured groups.
    Strict,
}

/// A seccomp or AppArmor profile, from either CRI spelling (the `SecurityProfile` message or
/// the deprecated `*_profile_path` strings).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SecurityProfile {
    /// The runtime's default profile.
    RuntimeDefault,
    /// No profile.
    Unconfined,
    /// A profile on the node: an absolute file path for seccomp, a profile name for AppArmor.
    Localhost(String),
}

/// SELinux labels (CRI `SELinuxOption`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SelinuxOptions {
    /// SELinux user.
    pub user: String,
    /// SELinux role.
    pub role: String,
    /// SELinux type.
    pub r#type: String,
    /// SELinux level.
    pub level: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_config_roundtrips_through_json() {
        let mut pod = PodConfig::default();
        pod.metadata.name = "web".into();
        pod.linux.security.seccomp = Some(SecurityProfile::Localhost("/p.json".into()));
        pod.linux.security.namespaces.pid = NamespaceMode::Target;
        pod.linux.security.namespaces.target_id = Some("abc".into());
        pod.linux.resources = Some(Resources {
            cpu_shares: Some(512),
            ..Resources::default()
        });
        let json = serde_json::to_string(&pod).expect("serialise");
        let back: PodConfig = serde_json::from_str(&json).expect("deserialise");
        assert_eq!(back, pod);
    }
}
