//! A container's configuration as crius's own types (converted from CRI at the edge).
//!
//! These mirror CRI's `ContainerConfig` with unset numbers as `None` and closed enums.
//! [`Resources`] stands alone because `UpdateContainerResources` carries only it.
//! Capability names are normalised at conversion: upper case with the `CAP_` prefix, or
//! `ALL`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::sandbox::config::{
    NamespaceOptions, SecurityProfile, SelinuxOptions, SupplementalGroupsPolicy,
};

/// A container's configuration (CRI `ContainerConfig`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ContainerConfig {
    /// Name and attempt.
    pub metadata: ContainerMetadata,
    /// The image as the kubelet named it (a reference or an image ID).
    pub image: String,
    /// Replaces the image's ENTRYPOINT (and drops its CMD) when non-empty.
    pub command: Vec<String>,
    /// Replaces the image's CMD when non-empty.
    pub args: Vec<String>,
    /// Working directory; empty means the image's, else `/`.
    pub working_dir: String,
    /// Environment, in the kubelet's order.
    pub envs: Vec<(String, String)>,
    /// Host paths mounted into the container.
    pub mounts: Vec<Mount>,
    /// Host devices made available in the container.
    pub devices: Vec<Device>,
    /// Labels for selection.
    pub labels: BTreeMap<String, String>,
    /// Free-form annotations, passed into the OCI spec.
    pub annotations: BTreeMap<String, String>,
    /// Log file path, relative to the pod's log directory.
    pub log_path: String,
    /// Keep stdin open.
    pub stdin: bool,
    /// Close stdin after the first attach detaches.
    pub stdin_once: bool,
    /// Allocate a terminal.
    pub tty: bool,
    /// Linux settings.
    pub linux: ContainerLinux,
}

/// How a container is identified within its pod (CRI `ContainerMetadata`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ContainerMetadata {
    /// The container's name in the pod.
    pub name: String,
    /// How many times the kubelet created this container before.
    pub attempt: u32,
}

/// Mount propagation (CRI `MountPropagation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Propagation {
    /// `rprivate`: no propagation either way.
    #[default]
    Private,
    /// `rslave`: host mounts appear in the container.
    HostToContainer,
    /// `rshared`: mounts propagate both ways.
    Bidirectional,
}

/// A host path mounted into the container (CRI `Mount`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Mount {
    /// Absolute path inside the container.
    pub container_path: String,
    /// Path on the host.
    pub host_path: String,
    /// Mount read-only.
    pub readonly: bool,
    /// Make every submount read-only too (`rro`); implies `readonly` and private propagation.
    pub recursive_read_only: bool,
    /// Relabel for SELinux (ignored: crius does not apply SELinux).
    pub selinux_relabel: bool,
    /// Propagation of mounts below this one.
    pub propagation: Propagation,
}

/// A host device node (CRI `Device`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Device {
    /// Absolute path inside the container.
    pub container_path: String,
    /// Path of the device node on the host.
    pub host_path: String,
    /// Cgroup permissions, a subset of `rwm` (`rwm` when the kubelet gave none).
    pub permissions: String,
}

/// Linux settings of a container (CRI `LinuxContainerConfig`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ContainerLinux {
    /// Cgroup limits; `None` when the kubelet gave none.
    pub resources: Option<Resources>,
    /// The security context.
    pub security: ContainerSecurity,
}

/// A huge page limit (CRI `HugepageLimit`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct HugepageLimit {
    /// Page size as the kernel names it in `hugetlb.<size>.*`: `2MB`, `1GB`.
    pub page_size: String,
    /// Limit in bytes.
    pub limit: u64,
}

/// Cgroup limits of a container (CRI `LinuxContainerResources`). `None` means not set.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Resources {
    /// CFS period in µs (1000..=1000000).
    pub cpu_period: Option<u64>,
    /// CFS quota in µs; `-1` means unlimited.
    pub cpu_quota: Option<i64>,
    /// CPU shares (2..=262144).
    pub cpu_shares: Option<u64>,
    /// Memory limit in bytes.
    pub memory_limit_in_bytes: Option<i64>,
    /// OOM score adjustment (-1000..=1000); 0 is a valid value, so not optional.
    pub oom_score_adj: i32,
    /// CPUs allowed, in cpuset list syntax (`0-3,6`); empty means not set.
    pub cpuset_cpus: String,
    /// Memory nodes allowed, in cpuset list syntax; empty means not set.
    pub cpuset_mems: String,
    /// Huge page limits per page size.
    pub hugepage_limits: Vec<HugepageLimit>,
    /// Raw cgroup v2 files to write (`memory.high` → value).
    pub unified: BTreeMap<String, String>,
    /// Memory plus swap limit in bytes; `-1` means unlimited swap.
    pub memory_swap_limit_in_bytes: Option<i64>,
}

/// Capabilities to add and drop (CRI `Capability`), normalised to `CAP_…` or `ALL`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Capabilities {
    /// Added to the bounding, effective and permitted sets.
    pub add: Vec<String>,
    /// Removed from every set.
    pub drop: Vec<String>,
    /// Added to every set including inheritable and ambient.
    pub add_ambient: Vec<String>,
}

/// The container's security context (CRI `LinuxContainerSecurityContext`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ContainerSecurity {
    /// Capability changes from the default set.
    pub capabilities: Capabilities,
    /// All capabilities, all host devices, no confinement.
    pub privileged: bool,
    /// Namespace modes.
    pub namespaces: NamespaceOptions,
    /// SELinux labels (kept, not applied).
    pub selinux: Option<SelinuxOptions>,
    /// UID to run as; wins over the image's USER.
    pub run_as_user: Option<u32>,
    /// GID to run as; needs `run_as_user` or `run_as_username`.
    pub run_as_group: Option<u32>,
    /// User name to run as, resolved in the image's `/etc/passwd`; empty means not set.
    pub run_as_username: String,
    /// Mount the root filesystem read-only.
    pub readonly_rootfs: bool,
    /// Extra groups of the first process.
    pub supplemental_groups: Vec<u32>,
    /// Whether `/etc/group` memberships are merged in.
    pub supplemental_groups_policy: SupplementalGroupsPolicy,
    /// Set `no_new_privileges`.
    pub no_new_privs: bool,
    /// Paths to mask; empty means the runtime's defaults.
    pub masked_paths: Vec<String>,
    /// Paths to make read-only; empty means the runtime's defaults.
    pub readonly_paths: Vec<String>,
    /// Seccomp profile; `None` means not specified (unconfined, as containerd).
    pub seccomp: Option<SecurityProfile>,
    /// AppArmor profile; `None` means not specified (the runtime default unless privileged).
    pub apparmor: Option<SecurityProfile>,
}
