//! CRI protobuf ⇄ crius domain types for the RuntimeService.
//!
//! Conversion validates what runc (or the kernel) would otherwise refuse later with a less
//! helpful message, and what the CRI contract itself forbids. Every error is
//! `InvalidArgument` naming the field path (`config.linux.resources.cpu_shares is …`).

// Older kubelets still send the deprecated `seccomp_profile_path`/`apparmor_profile`.
#![allow(deprecated)]

use std::collections::{BTreeMap, HashMap};

use crius_proto::cri;
use tonic::Status;

use crate::container::config::{
    Capabilities, ContainerConfig, ContainerLinux, ContainerMetadata, ContainerSecurity, Device,
    HugepageLimit, Mount, Propagation, Resources,
};
use crate::sandbox::config::{
    DnsConfig, NamespaceMode, NamespaceOptions, PodConfig, PodLinux, PodMetadata, PodSecurity,
    PortMapping, Protocol, SecurityProfile, SelinuxOptions, SupplementalGroupsPolicy,
};
use crate::spec::caps;

type Result<T> = std::result::Result<T, Status>;

fn invalid(msg: impl Into<String>) -> Status {
    Status::invalid_argument(msg.into())
}

/// A `PodSandboxConfig` as a [`PodConfig`].
pub(crate) fn pod_config(c: cri::PodSandboxConfig) -> Result<PodConfig> {
    let m = c
        .metadata
        .ok_or_else(|| invalid("config.metadata is missing"))?;
    for (field, value) in [
        ("name", &m.name),
        ("namespace", &m.namespace),
        ("uid", &m.uid),
    ] {
        if value.is_empty() {
            return Err(invalid(format!("config.metadata.{field} is empty")));
        }
    }
    let dns = c.dns_config.map(|d| DnsConfig {
        servers: d.servers,
        searches: d.searches,
        options: d.options,
    });
    let port_mappings = c
        .port_mappings
        .into_iter()
        .enumerate()
        .map(|(i, p)| port_mapping(p, &format!("config.port_mappings[{i}]")))
        .collect::<Result<Vec<_>>>()?;
    let linux = match c.linux {
        None => PodLinux::default(),
        Some(l) => pod_linux(l)?,
    };
    Ok(PodConfig {
        metadata: PodMetadata {
            name: m.name,
            uid: m.uid,
            namespace: m.namespace,
            attempt: m.attempt,
        },
        hostname: c.hostname,
        log_directory: c.log_directory,
        dns,
        port_mappings,
        labels: sorted(c.labels),
        annotations: sorted(c.annotations),
        linux,
    })
}

fn port_mapping(p: cri::PortMapping, field: &str) -> Result<PortMapping> {
    let protocol = match cri::Protocol::try_from(p.protocol) {
        Ok(cri::Protocol::Tcp) => Protocol::Tcp,
        Ok(cri::Protocol::Udp) => Protocol::Udp,
        Ok(cri::Protocol::Sctp) => Protocol::Sctp,
        Err(_) => return Err(unknown_enum(&format!("{field}.protocol"), p.protocol)),
    };
    let port = |name: &str, v: i32| {
        u16::try_from(v).map_err(|_| invalid(format!("{field}.{name} is out of range ({v})")))
    };
    let container_port = port("container_port", p.container_port)?;
    if container_port == 0 {
        return Err(invalid(format!("{field}.container_port is 0")));
    }
    Ok(PortMapping {
        protocol,
        container_port,
        host_port: port("host_port", p.host_port)?,
        host_ip: p.host_ip,
    })
}

fn pod_linux(l: cri::LinuxPodSandboxConfig) -> Result<PodLinux> {
    let security = match l.security_context {
        None => PodSecurity::default(),
        Some(s) => pod_security(s)?,
    };
    let overhead = l
        .overhead
        .map(|r| resources_at(r, "config.linux.overhead"))
        .transpose()?;
    let resources = l
        .resources
        .map(|r| resources_at(r, "config.linux.resources"))
        .transpose()?;
    Ok(PodLinux {
        cgroup_parent: l.cgroup_parent,
        sysctls: sorted(l.sysctls),
        security,
        overhead,
        resources,
    })
}

fn pod_security(s: cri::LinuxSandboxSecurityContext) -> Result<PodSecurity> {
    const F: &str = "config.linux.security_context";
    let namespaces = match s.namespace_options {
        None => NamespaceOptions::default(),
        Some(n) => namespace_options(n, &format!("{F}.namespace_options"))?,
    };
    for (name, mode) in [
        ("network", namespaces.network),
        ("pid", namespaces.pid),
        ("ipc", namespaces.ipc),
    ] {
        if mode == NamespaceMode::Target {
            return Err(invalid(format!(
                "{F}.namespace_options.{name} is TARGET, which only a container can use"
            )));
        }
    }
    Ok(PodSecurity {
        namespaces,
        run_as_user: s
            .run_as_user
            .map(|v| id(v.value, &format!("{F}.run_as_user")))
            .transpose()?,
        run_as_group: s
            .run_as_group
            .map(|v| id(v.value, &format!("{F}.run_as_group")))
            .transpose()?,
        supplemental_groups: ids(&s.supplemental_groups, &format!("{F}.supplemental_groups"))?,
        supplemental_groups_policy: groups_policy(
            s.supplemental_groups_policy,
            &format!("{F}.supplemental_groups_policy"),
        )?,
        readonly_rootfs: s.readonly_rootfs,
        privileged: s.privileged,
        seccomp: seccomp(s.seccomp, &s.seccomp_profile_path, F)?,
        apparmor: apparmor(s.apparmor, "", F)?,
        selinux: s.selinux_options.map(selinux),
    })
}

/// A `ContainerConfig` as a [`ContainerConfig`].
pub(crate) fn container_config(c: cri::ContainerConfig) -> Result<ContainerConfig> {
    let m = c
        .metadata
        .ok_or_else(|| invalid("config.metadata is missing"))?;
    if m.name.is_empty() {
        return Err(invalid("config.metadata.name is empty"));
    }
    let image = c.image.map(|i| i.image).unwrap_or_default();
    if image.trim().is_empty() {
        return Err(invalid("config.image.image is empty"));
    }
    let mut envs = Vec::with_capacity(c.envs.len());
    for (i, kv) in c.envs.into_iter().enumerate() {
        if kv.key.is_empty() || kv.key.contains('=') || kv.key.contains('\0') {
            return Err(invalid(format!(
                "config.envs[{i}].key {:?} is not a valid variable name",
                kv.key
            )));
        }
        envs.push((kv.key, kv.value));
    }
    let mounts = c
        .mounts
        .into_iter()
        .enumerate()
        .map(|(i, m)| mount(m, &format!("config.mounts[{i}]")))
        .collect::<Result<Vec<_>>>()?;
    let devices = c
        .devices
        .into_iter()
        .enumerate()
        .map(|(i, d)| device(d, &format!("config.devices[{i}]")))
        .collect::<Result<Vec<_>>>()?;
    if !c.cdi_devices.is_empty() {
        return Err(invalid("config.CDI_devices is not supported by crius"));
    }
    let linux = match c.linux {
        None => ContainerLinux::default(),
        Some(l) => ContainerLinux {
            resources: l
                .resources
                .map(|r| resources_at(r, "config.linux.resources"))
                .transpose()?,
            security: match l.security_context {
                None => ContainerSecurity::default(),
                Some(s) => container_security(s)?,
            },
        },
    };
    Ok(ContainerConfig {
        metadata: ContainerMetadata {
            name: m.name,
            attempt: m.attempt,
        },
        image,
        command: c.command,
        args: c.args,
        working_dir: c.working_dir,
        envs,
        mounts,
        devices,
        labels: sorted(c.labels),
        annotations: sorted(c.annotations),
        log_path: c.log_path,
        stdin: c.stdin,
        stdin_once: c.stdin_once,
        tty: c.tty,
        linux,
    })
}

fn mount(m: cri::Mount, field: &str) -> Result<Mount> {
    absolute(&m.container_path, &format!("{field}.container_path"))?;
    if m.container_path
        .split('/')
        .all(|c| c.is_empty() || c == ".")
    {
        return Err(invalid(format!(
            "{field}.container_path {:?} would cover the root filesystem",
            m.container_path
        )));
    }
    if m.image.as_ref().is_some_and(|i| !i.image.is_empty()) {
        return Err(invalid(format!(
            "{field}.image: image volumes are not supported by crius"
        )));
    }
    if m.host_path.is_empty() {
        return Err(invalid(format!("{field}.host_path is empty")));
    }
    if !m.uid_mappings.is_empty() || !m.gid_mappings.is_empty() {
        return Err(invalid(format!(
            "{field}: id-mapped mounts are not supported by crius"
        )));
    }
    let propagation = match cri::MountPropagation::try_from(m.propagation) {
        Ok(cri::MountPropagation::PropagationPrivate) => Propagation::Private,
        Ok(cri::MountPropagation::PropagationHostToContainer) => Propagation::HostToContainer,
        Ok(cri::MountPropagation::PropagationBidirectional) => Propagation::Bidirectional,
        Err(_) => return Err(unknown_enum(&format!("{field}.propagation"), m.propagation)),
    };
    // The CRI contract: recursive read-only needs readonly and private propagation.
    if m.recursive_read_only && !m.readonly {
        return Err(invalid(format!(
            "{field}.recursive_read_only is set without readonly"
        )));
    }
    if m.recursive_read_only && propagation != Propagation::Private {
        return Err(invalid(format!(
            "{field}.recursive_read_only needs PROPAGATION_PRIVATE"
        )));
    }
    Ok(Mount {
        container_path: m.container_path,
        host_path: m.host_path,
        readonly: m.readonly,
        recursive_read_only: m.recursive_read_only,
        selinux_relabel: m.selinux_relabel,
        propagation,
    })
}

fn device(d: cri::Device, field: &str) -> Result<Device> {
    absolute(&d.container_path, &format!("{field}.container_path"))?;
    if d.host_path.is_empty() {
        return Err(invalid(format!("{field}.host_path is empty")));
    }
    let permissions = if d.permissions.is_empty() {
        "rwm".to_string()
    } else {
        d.permissions
    };
    if !permissions.chars().all(|c| matches!(c, 'r' | 'w' | 'm')) {
        return Err(invalid(format!(
            "{field}.permissions {permissions:?} is not a subset of \"rwm\""
        )));
    }
    Ok(Device {
        container_path: d.container_path,
        host_path: d.host_path,
        permissions,
    })
}

fn container_security(s: cri::LinuxContainerSecurityContext) -> Result<ContainerSecurity> {
    const F: &str = "config.linux.security_context";
    let namespaces = match s.namespace_options {
        None => NamespaceOptions::default(),
        Some(n) => namespace_options(n, &format!("{F}.namespace_options"))?,
    };
    for (name, mode) in [("network", namespaces.network), ("ipc", namespaces.ipc)] {
        if mode == NamespaceMode::Target {
            return Err(invalid(format!(
                "{F}.namespace_options.{name} is TARGET, which crius supports for pid only"
            )));
        }
    }
    let capabilities = match s.capabilities {
        None => Capabilities::default(),
        Some(c) => Capabilities {
            add: cap_names(
                c.add_capabilities,
                &format!("{F}.capabilities.add_capabilities"),
            )?,
            drop: cap_names(
                c.drop_capabilities,
                &format!("{F}.capabilities.drop_capabilities"),
            )?,
            add_ambient: cap_names(
                c.add_ambient_capabilities,
                &format!("{F}.capabilities.add_ambient_capabilities"),
            )?,
        },
    };
    if capabilities.add_ambient.iter().any(|c| c == "ALL") {
        return Err(invalid(format!(
            "{F}.capabilities.add_ambient_capabilities cannot be ALL"
        )));
    }
    let run_as_user = s
        .run_as_user
        .map(|v| id(v.value, &format!("{F}.run_as_user")))
        .transpose()?;
    let run_as_group = s
        .run_as_group
        .map(|v| id(v.value, &format!("{F}.run_as_group")))
        .transpose()?;
    // containerd refuses the same: a group alone would pair with the image's user silently.
    if run_as_group.is_some() && run_as_user.is_none() && s.run_as_username.is_empty() {
        return Err(invalid(format!(
            "{F}.run_as_group is set without run_as_user or run_as_username"
        )));
    }
    if run_as_user.is_some() && !s.run_as_username.is_empty() {
        return Err(invalid(format!(
            "{F}.run_as_user and {F}.run_as_username are both set"
        )));
    }
    for (name, list) in [
        ("masked_paths", &s.masked_paths),
        ("readonly_paths", &s.readonly_paths),
    ] {
        for (i, p) in list.iter().enumerate() {
            absolute(p, &format!("{F}.{name}[{i}]"))?;
        }
    }
    Ok(ContainerSecurity {
        capabilities,
        privileged: s.privileged,
        namespaces,
        selinux: s.selinux_options.map(selinux),
        run_as_user,
        run_as_group,
        run_as_username: s.run_as_username,
        readonly_rootfs: s.readonly_rootfs,
        supplemental_groups: ids(&s.supplemental_groups, &format!("{F}.supplemental_groups"))?,
        supplemental_groups_policy: groups_policy(
            s.supplemental_groups_policy,
            &format!("{F}.supplemental_groups_policy"),
        )?,
        no_new_privs: s.no_new_privs,
        masked_paths: s.masked_paths,
        readonly_paths: s.readonly_paths,
        seccomp: seccomp(s.seccomp, &s.seccomp_profile_path, F)?,
        apparmor: apparmor(s.apparmor, &s.apparmor_profile, F)?,
    })
}

fn cap_names(list: Vec<String>, field: &str) -> Result<Vec<String>> {
    list.iter()
        .enumerate()
        .map(|(i, c)| {
            caps::normalize(c)
                .ok_or_else(|| invalid(format!("{field}[{i}] {c:?} is not a known capability")))
        })
        .collect()
}

fn namespace_options(n: cri::NamespaceOption, field: &str) -> Result<NamespaceOptions> {
    let mode = |name: &str, v: i32| -> Result<NamespaceMode> {
        match cri::NamespaceMode::try_from(v) {
            Ok(cri::NamespaceMode::Pod) => Ok(NamespaceMode::Pod),
            Ok(cri::NamespaceMode::Container) => Ok(NamespaceMode::Container),
            Ok(cri::NamespaceMode::Node) => Ok(NamespaceMode::Node),
            Ok(cri::NamespaceMode::Target) => Ok(NamespaceMode::Target),
            Err(_) => Err(unknown_enum(&format!("{field}.{name}"), v)),
        }
    };
    let network = mode("network", n.network)?;
    let pid = mode("pid", n.pid)?;
    let ipc = mode("ipc", n.ipc)?;
    let any_target = [network, pid, ipc].contains(&NamespaceMode::Target);
    let target_id = (!n.target_id.is_empty()).then_some(n.target_id);
    if any_target && target_id.is_none() {
        return Err(invalid(format!(
            "{field}.target_id is empty but a namespace mode is TARGET"
        )));
    }
    if !any_target && target_id.is_some() {
        return Err(invalid(format!(
            "{field}.target_id is set but no namespace mode is TARGET"
        )));
    }
    if let Some(u) = n.userns_options {
        match cri::NamespaceMode::try_from(u.mode) {
            Ok(cri::NamespaceMode::Node) => {}
            Ok(_) => {
                return Err(invalid(format!(
                    "{field}.userns_options.mode: user namespaces are not supported by crius"
                )))
            }
            Err(_) => {
                return Err(unknown_enum(
                    &format!("{field}.userns_options.mode"),
                    u.mode,
                ))
            }
        }
    }
    Ok(NamespaceOptions {
        network,
        pid,
        ipc,
        target_id,
    })
}

fn groups_policy(v: i32, field: &str) -> Result<SupplementalGroupsPolicy> {
    match cri::SupplementalGroupsPolicy::try_from(v) {
        Ok(cri::SupplementalGroupsPolicy::Merge) => Ok(SupplementalGroupsPolicy::Merge),
        Ok(cri::SupplementalGroupsPolicy::Strict) => Ok(SupplementalGroupsPolicy::Strict),
        Err(_) => Err(unknown_enum(field, v)),
    }
}

/// The seccomp profile from the `seccomp` message or, when that is absent, the deprecated
/// `seccomp_profile_path` (`runtime/default`, `docker/default`, `unconfined`,
/// `localhost/<absolute path>`).
fn seccomp(
    new: Option<cri::SecurityProfile>,
    old: &str,
    parent: &str,
) -> Result<Option<SecurityProfile>> {
    let profile = match new {
        Some(p) => Some(security_profile(p, &format!("{parent}.seccomp"))?),
        None => match old {
            "" => None,
            "unconfined" => Some(SecurityProfile::Unconfined),
            "runtime/default" | "docker/default" => Some(SecurityProfile::RuntimeDefault),
            other => match other.strip_prefix("localhost/") {
                Some(path) => Some(SecurityProfile::Localhost(path.to_string())),
                None => {
                    return Err(invalid(format!(
                        "{parent}.seccomp_profile_path {other:?} is not a known profile"
                    )))
                }
            },
        },
    };
    if let Some(SecurityProfile::Localhost(path)) = &profile {
        if !path.starts_with('/') {
            return Err(invalid(format!(
                "{parent}.seccomp localhost profile {path:?} is not an absolute path"
            )));
        }
    }
    Ok(profile)
}

/// The AppArmor profile from the `apparmor` message or, when that is absent, the deprecated
/// `apparmor_profile` (`runtime/default`, `unconfined`, `localhost/<name>`).
fn apparmor(
    new: Option<cri::SecurityProfile>,
    old: &str,
    parent: &str,
) -> Result<Option<SecurityProfile>> {
    match new {
        Some(p) => security_profile(p, &format!("{parent}.apparmor")).map(Some),
        None => match old {
            "" => Ok(None),
            "unconfined" => Ok(Some(SecurityProfile::Unconfined)),
            "runtime/default" => Ok(Some(SecurityProfile::RuntimeDefault)),
            other => match other.strip_prefix("localhost/") {
                Some(name) if !name.is_empty() => {
                    Ok(Some(SecurityProfile::Localhost(name.to_string())))
                }
                _ => Err(invalid(format!(
                    "{parent}.apparmor_profile {other:?} is not a known profile"
                ))),
            },
        },
    }
}

fn security_profile(p: cri::SecurityProfile, field: &str) -> Result<SecurityProfile> {
    use cri::security_profile::ProfileType;
    match ProfileType::try_from(p.profile_type) {
        Ok(ProfileType::RuntimeDefault) => Ok(SecurityProfile::RuntimeDefault),
        Ok(ProfileType::Unconfined) => Ok(SecurityProfile::Unconfined),
        Ok(ProfileType::Localhost) => {
            // Older kubelets prefixed the reference like the deprecated strings.
            let r = p
                .localhost_ref
                .strip_prefix("localhost/")
                .unwrap_or(&p.localhost_ref);
            if r.is_empty() {
                return Err(invalid(format!(
                    "{field}.localhost_ref is empty for profile type Localhost"
                )));
            }
            Ok(SecurityProfile::Localhost(r.to_string()))
        }
        Err(_) => Err(unknown_enum(
            &format!("{field}.profile_type"),
            p.profile_type,
        )),
    }
}

fn selinux(s: cri::SeLinuxOption) -> SelinuxOptions {
    SelinuxOptions {
        user: s.user,
        role: s.role,
        r#type: s.r#type,
        level: s.level,
    }
}

/// `LinuxContainerResources` as [`Resources`] (fields named under `config.linux.resources`).
pub(crate) fn resources(r: cri::LinuxContainerResources) -> Result<Resources> {
    resources_at(r, "linux.resources")
}

/// Converts and validates resources. Zero means "not set" for every number but
/// `oom_score_adj`, as in the kubelet. Refused, because runc or the kernel would refuse them
/// at start with an opaque error:
/// * negative values (but `-1`, "unlimited", for `cpu_quota` and `memory_swap_limit_in_bytes`);
/// * `cpu_period` outside 1000..=1000000 µs and `cpu_quota` below 1000 µs (CFS bounds);
/// * `cpu_shares` outside 2..=262144 (runc's cgroup v1 driver reads the value back and fails);
/// * `oom_score_adj` outside -1000..=1000;
/// * a swap limit without a memory limit, or below it (runc: "memory+swap limit should be >=
///   memory limit");
/// * malformed cpuset lists, hugepage sizes other than `<n>KB|MB|GB`, and unified keys that are
///   not a plain file name (runc would write them relative to the cgroup directory).
fn resources_at(r: cri::LinuxContainerResources, f: &str) -> Result<Resources> {
    let cpu_period = positive(r.cpu_period, &format!("{f}.cpu_period"))?;
    if let Some(p) = cpu_period {
        if !(1000..=1_000_000).contains(&p) {
            return Err(invalid(format!(
                "{f}.cpu_period {p} is outside 1000..=1000000 µs"
            )));
        }
    }
    let cpu_quota = match r.cpu_quota {
        0 => None,
        -1 => Some(-1),
        q if q < 0 => return Err(invalid(format!("{f}.cpu_quota is negative ({q})"))),
        q if q < 1000 => return Err(invalid(format!("{f}.cpu_quota {q} is below 1000 µs"))),
        q => Some(q),
    };
    let cpu_shares = positive(r.cpu_shares, &format!("{f}.cpu_shares"))?;
    if let Some(s) = cpu_shares {
        if !(2..=262_144).contains(&s) {
            return Err(invalid(format!("{f}.cpu_shares {s} is outside 2..=262144")));
        }
    }
    let memory = positive(
        r.memory_limit_in_bytes,
        &format!("{f}.memory_limit_in_bytes"),
    )?;
    let swap = match r.memory_swap_limit_in_bytes {
        0 => None,
        -1 => Some(-1),
        s if s < 0 => {
            return Err(invalid(format!(
                "{f}.memory_swap_limit_in_bytes is negative ({s})"
            )))
        }
        s => {
            let Some(m) = memory else {
                return Err(invalid(format!(
                    "{f}.memory_swap_limit_in_bytes is set without memory_limit_in_bytes"
                )));
            };
            if (s as u64) < m {
                return Err(invalid(format!(
                    "{f}.memory_swap_limit_in_bytes {s} is below memory_limit_in_bytes {m}"
                )));
            }
            Some(s)
        }
    };
    if !(-1000..=1000).contains(&r.oom_score_adj) {
        return Err(invalid(format!(
            "{f}.oom_score_adj {} is outside -1000..=1000",
            r.oom_score_adj
        )));
    }
    cpuset(&r.cpuset_cpus, &format!("{f}.cpuset_cpus"))?;
    cpuset(&r.cpuset_mems, &format!("{f}.cpuset_mems"))?;
    let mut hugepage_limits = Vec::with_capacity(r.hugepage_limits.len());
    for (i, h) in r.hugepage_limits.into_iter().enumerate() {
        if !hugepage_size_ok(&h.page_size) {
            return Err(invalid(format!(
                "{f}.hugepage_limits[{i}].page_size {:?} is not a size like 2MB or 1GB",
                h.page_size
            )));
        }
        hugepage_limits.push(HugepageLimit {
            page_size: h.page_size,
            limit: h.limit,
        });
    }
    for key in r.unified.keys() {
        if key.is_empty() || key.contains('/') || key.contains('\0') || key.starts_with('.') {
            return Err(invalid(format!(
                "{f}.unified key {key:?} is not a cgroup file name"
            )));
        }
    }
    Ok(Resources {
        cpu_period,
        cpu_quota,
        cpu_shares,
        memory_limit_in_bytes: memory.map(|m| m as i64),
        oom_score_adj: r.oom_score_adj as i32,
        cpuset_cpus: r.cpuset_cpus,
        cpuset_mems: r.cpuset_mems,
        hugepage_limits,
        unified: sorted(r.unified),
        memory_swap_limit_in_bytes: swap,
    })
}

/// `None` for 0, the value for > 0, an error for < 0.
fn positive(v: i64, field: &str) -> Result<Option<u64>> {
    match v {
        0 => Ok(None),
        v if v < 0 => Err(invalid(format!("{field} is negative ({v})"))),
        v => Ok(Some(v as u64)),
    }
}

/// Checks the kernel's cpuset list syntax: `N` or `N-M` (N ≤ M), comma separated.
fn cpuset(list: &str, field: &str) -> Result<()> {
    if list.is_empty() {
        return Ok(());
    }
    let bad = || invalid(format!("{field} {list:?} is not a cpu list like 0-3,5"));
    for part in list.split(',') {
        let (lo, hi) = part.split_once('-').unwrap_or((part, part));
        let lo: u32 = lo.trim().parse().map_err(|_| bad())?;
        let hi: u32 = hi.trim().parse().map_err(|_| bad())?;
        if lo > hi {
            return Err(bad());
        }
    }
    Ok(())
}

fn hugepage_size_ok(s: &str) -> bool {
    let digits = s.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = &s[digits.len()..];
    !digits.is_empty()
        && digits.chars().all(|c| c.is_ascii_digit())
        && matches!(unit, "KB" | "MB" | "GB" | "TB" | "PB")
}

fn id(v: i64, field: &str) -> Result<u32> {
    u32::try_from(v).map_err(|_| invalid(format!("{field} {v} is not a valid id")))
}

fn ids(list: &[i64], field: &str) -> Result<Vec<u32>> {
    list.iter()
        .enumerate()
        .map(|(i, v)| id(*v, &format!("{field}[{i}]")))
        .collect()
}

fn absolute(path: &str, field: &str) -> Result<()> {
    if path.is_empty() {
        return Err(invalid(format!("{field} is empty")));
    }
    if !path.starts_with('/') {
        return Err(invalid(format!("{field} {path:?} is not absolute")));
    }
    Ok(())
}

fn unknown_enum(field: &str, v: i32) -> Status {
    invalid(format!("{field} has unknown value {v}"))
}

fn sorted(m: HashMap<String, String>) -> BTreeMap<String, String> {
    m.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> cri::PodSandboxConfig {
        cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: "web".into(),
                uid: "u1".into(),
                namespace: "default".into(),
                attempt: 2,
            }),
            hostname: "web-0".into(),
            ..Default::default()
        }
    }

    fn container() -> cri::ContainerConfig {
        cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata {
                name: "app".into(),
                attempt: 1,
            }),
            image: Some(cri::ImageSpec {
                image: "docker.io/library/busybox:latest".into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn with_security(s: cri::LinuxContainerSecurityContext) -> cri::ContainerConfig {
        cri::ContainerConfig {
            linux: Some(cri::LinuxContainerConfig {
                security_context: Some(s),
                resources: None,
            }),
            ..container()
        }
    }

    fn with_pod_security(s: cri::LinuxSandboxSecurityContext) -> cri::PodSandboxConfig {
        cri::PodSandboxConfig {
            linux: Some(cri::LinuxPodSandboxConfig {
                security_context: Some(s),
                ..Default::default()
            }),
            ..pod()
        }
    }

    /// The message of an error, asserting it is InvalidArgument.
    fn err<T: std::fmt::Debug>(r: Result<T>) -> String {
        let e = r.expect_err("must be refused");
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
        e.message().to_string()
    }

    fn res(r: cri::LinuxContainerResources) -> Result<Resources> {
        resources(r)
    }

    #[test]
    fn pod_config_converts_every_field() {
        let mut c = pod();
        c.log_directory = "/var/log/pods/x".into();
        c.dns_config = Some(cri::DnsConfig {
            servers: vec!["10.0.0.10".into()],
            searches: vec!["svc.cluster.local".into()],
            options: vec!["ndots:5".into()],
        });
        c.port_mappings = vec![cri::PortMapping {
            protocol: cri::Protocol::Udp as i32,
            container_port: 53,
            host_port: 5353,
            host_ip: "127.0.0.1".into(),
        }];
        c.labels.insert("app".into(), "web".into());
        c.annotations.insert("a".into(), "b".into());
        c.linux = Some(cri::LinuxPodSandboxConfig {
            cgroup_parent: "/kubepods/pod1".into(),
            sysctls: [("net.ipv4.ip_forward".to_string(), "1".to_string())].into(),
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(cri::NamespaceOption {
                    network: cri::NamespaceMode::Node as i32,
                    pid: cri::NamespaceMode::Container as i32,
                    ipc: cri::NamespaceMode::Pod as i32,
                    ..Default::default()
                }),
                run_as_user: Some(cri::Int64Value { value: 65534 }),
                run_as_group: Some(cri::Int64Value { value: 65534 }),
                supplemental_groups: vec![5, 6],
                readonly_rootfs: true,
                privileged: true,
                seccomp_profile_path: "runtime/default".into(),
                ..Default::default()
            }),
            overhead: None,
            resources: Some(cri::LinuxContainerResources {
                cpu_shares: 1024,
                ..Default::default()
            }),
        });
        let p = pod_config(c).expect("valid");
        assert_eq!(p.metadata.name, "web");
        assert_eq!(p.metadata.uid, "u1");
        assert_eq!(p.metadata.namespace, "default");
        assert_eq!(p.metadata.attempt, 2);
        assert_eq!(p.hostname, "web-0");
        assert_eq!(p.log_directory, "/var/log/pods/x");
        let dns = p.dns.expect("dns");
        assert_eq!(dns.servers, ["10.0.0.10"]);
        assert_eq!(dns.options, ["ndots:5"]);
        assert_eq!(
            p.port_mappings,
            [PortMapping {
                protocol: Protocol::Udp,
                container_port: 53,
                host_port: 5353,
                host_ip: "127.0.0.1".into()
            }]
        );
        assert_eq!(p.labels["app"], "web");
        assert_eq!(p.annotations["a"], "b");
        assert_eq!(p.linux.cgroup_parent, "/kubepods/pod1");
        assert_eq!(p.linux.sysctls["net.ipv4.ip_forward"], "1");
        let s = &p.linux.security;
        assert_eq!(s.namespaces.network, NamespaceMode::Node);
        assert_eq!(s.namespaces.pid, NamespaceMode::Container);
        assert_eq!(s.namespaces.ipc, NamespaceMode::Pod);
        assert_eq!(s.run_as_user, Some(65534));
        assert_eq!(s.run_as_group, Some(65534));
        assert_eq!(s.supplemental_groups, [5, 6]);
        assert!(s.readonly_rootfs && s.privileged);
        assert_eq!(s.seccomp, Some(SecurityProfile::RuntimeDefault));
        assert_eq!(s.apparmor, None);
        assert_eq!(p.linux.resources.and_then(|r| r.cpu_shares), Some(1024));
    }

    #[test]
    fn pod_metadata_is_required() {
        let mut c = pod();
        c.metadata = None;
        assert_eq!(err(pod_config(c)), "config.metadata is missing");
        for (field, clear) in [
            (
                "name",
                (|m: &mut cri::PodSandboxMetadata| m.name.clear()) as fn(&mut _),
            ),
            ("namespace", |m| m.namespace.clear()),
            ("uid", |m| m.uid.clear()),
        ] {
            let mut c = pod();
            clear(c.metadata.as_mut().expect("metadata"));
            assert_eq!(
                err(pod_config(c)),
                format!("config.metadata.{field} is empty")
            );
        }
    }

    #[test]
    fn pod_port_mappings_are_checked() {
        let mut c = pod();
        c.port_mappings = vec![cri::PortMapping {
            protocol: 7,
            container_port: 80,
            ..Default::default()
        }];
        assert!(err(pod_config(c)).contains("config.port_mappings[0].protocol"));
        let mut c = pod();
        c.port_mappings = vec![cri::PortMapping {
            container_port: 70000,
            ..Default::default()
        }];
        assert!(err(pod_config(c)).contains("config.port_mappings[0].container_port"));
    }

    #[test]
    fn pod_namespaces_cannot_target() {
        let c = with_pod_security(cri::LinuxSandboxSecurityContext {
            namespace_options: Some(cri::NamespaceOption {
                pid: cri::NamespaceMode::Target as i32,
                target_id: "abc".into(),
                ..Default::default()
            }),
            ..Default::default()
        });
        assert!(err(pod_config(c)).contains("namespace_options.pid is TARGET"));
    }

    #[test]
    fn pod_negative_run_as_user_is_refused() {
        let c = with_pod_security(cri::LinuxSandboxSecurityContext {
            run_as_user: Some(cri::Int64Value { value: -1 }),
            ..Default::default()
        });
        assert!(err(pod_config(c)).contains("config.linux.security_context.run_as_user"));
    }

    #[test]
    fn pod_resources_are_validated_under_their_path() {
        let c = cri::PodSandboxConfig {
            linux: Some(cri::LinuxPodSandboxConfig {
                overhead: Some(cri::LinuxContainerResources {
                    cpu_shares: -5,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..pod()
        };
        assert_eq!(
            err(pod_config(c)),
            "config.linux.overhead.cpu_shares is negative (-5)"
        );
    }

    #[test]
    fn container_config_converts_every_field() {
        let mut c = container();
        c.command = vec!["/bin/sh".into()];
        c.args = vec!["-c".into(), "true".into()];
        c.working_dir = "/w".into();
        c.envs = vec![
            cri::KeyValue {
                key: "B".into(),
                value: "2".into(),
            },
            cri::KeyValue {
                key: "A".into(),
                value: "1=1".into(),
            },
        ];
        c.mounts = vec![cri::Mount {
            container_path: "/data".into(),
            host_path: "/srv/data".into(),
            readonly: true,
            propagation: cri::MountPropagation::PropagationHostToContainer as i32,
            ..Default::default()
        }];
        c.devices = vec![cri::Device {
            container_path: "/dev/fuse".into(),
            host_path: "/dev/fuse".into(),
            permissions: String::new(),
        }];
        c.log_path = "app/0.log".into();
        c.stdin = true;
        c.tty = true;
        c.linux = Some(cri::LinuxContainerConfig {
            resources: Some(cri::LinuxContainerResources {
                cpu_period: 100_000,
                cpu_quota: 50_000,
                cpu_shares: 512,
                memory_limit_in_bytes: 64 << 20,
                memory_swap_limit_in_bytes: 128 << 20,
                oom_score_adj: 500,
                cpuset_cpus: "0-1".into(),
                hugepage_limits: vec![cri::HugepageLimit {
                    page_size: "2MB".into(),
                    limit: 1 << 21,
                }],
                unified: [("memory.high".to_string(), "1000000".to_string())].into(),
                ..Default::default()
            }),
            security_context: Some(cri::LinuxContainerSecurityContext {
                capabilities: Some(cri::Capability {
                    add_capabilities: vec!["net_admin".into()],
                    drop_capabilities: vec!["ALL".into()],
                    add_ambient_capabilities: vec![],
                }),
                run_as_username: "nobody".into(),
                run_as_group: Some(cri::Int64Value { value: 7 }),
                no_new_privs: true,
                masked_paths: vec!["/proc/kcore".into()],
                apparmor_profile: "localhost/my-profile".into(),
                seccomp: Some(cri::SecurityProfile {
                    profile_type: cri::security_profile::ProfileType::Localhost as i32,
                    localhost_ref: "/var/lib/kubelet/seccomp/p.json".into(),
                }),
                seccomp_profile_path: "unconfined".into(),
                ..Default::default()
            }),
        });
        let c = container_config(c).expect("valid");
        assert_eq!(c.metadata.name, "app");
        assert_eq!(c.metadata.attempt, 1);
        assert_eq!(c.image, "docker.io/library/busybox:latest");
        assert_eq!(c.command, ["/bin/sh"]);
        assert_eq!(c.args, ["-c", "true"]);
        assert_eq!(c.working_dir, "/w");
        assert_eq!(
            c.envs,
            [("B".into(), "2".into()), ("A".into(), "1=1".into())]
        );
        assert_eq!(c.mounts[0].propagation, Propagation::HostToContainer);
        assert!(c.mounts[0].readonly);
        assert_eq!(c.devices[0].permissions, "rwm");
        assert_eq!(c.log_path, "app/0.log");
        assert!(c.stdin && c.tty && !c.stdin_once);
        let r = c.linux.resources.expect("resources");
        assert_eq!(r.cpu_period, Some(100_000));
        assert_eq!(r.cpu_quota, Some(50_000));
        assert_eq!(r.cpu_shares, Some(512));
        assert_eq!(r.memory_limit_in_bytes, Some(64 << 20));
        assert_eq!(r.memory_swap_limit_in_bytes, Some(128 << 20));
        assert_eq!(r.oom_score_adj, 500);
        assert_eq!(r.cpuset_cpus, "0-1");
        assert_eq!(r.hugepage_limits[0].page_size, "2MB");
        assert_eq!(r.unified["memory.high"], "1000000");
        let s = c.linux.security;
        assert_eq!(s.capabilities.add, ["CAP_NET_ADMIN"]);
        assert_eq!(s.capabilities.drop, ["ALL"]);
        assert_eq!(s.run_as_username, "nobody");
        assert_eq!(s.run_as_group, Some(7));
        assert!(s.no_new_privs);
        assert_eq!(s.masked_paths, ["/proc/kcore"]);
        assert_eq!(
            s.apparmor,
            Some(SecurityProfile::Localhost("my-profile".into()))
        );
        // The message wins over the deprecated string.
        assert_eq!(
            s.seccomp,
            Some(SecurityProfile::Localhost(
                "/var/lib/kubelet/seccomp/p.json".into()
            ))
        );
    }

    #[test]
    fn container_required_fields() {
        let mut c = container();
        c.metadata = None;
        assert_eq!(err(container_config(c)), "config.metadata is missing");
        let mut c = container();
        c.metadata = Some(cri::ContainerMetadata::default());
        assert_eq!(err(container_config(c)), "config.metadata.name is empty");
        let mut c = container();
        c.image = None;
        assert_eq!(err(container_config(c)), "config.image.image is empty");
    }

    #[test]
    fn container_mounts_are_checked() {
        let m = |container_path: &str, propagation: i32| {
            let mut c = container();
            c.mounts = vec![cri::Mount {
                container_path: container_path.into(),
                host_path: "/srv".into(),
                propagation,
                ..Default::default()
            }];
            container_config(c)
        };
        assert_eq!(err(m("", 0)), "config.mounts[0].container_path is empty");
        assert!(
            err(m("data", 0)).contains("config.mounts[0].container_path \"data\" is not absolute")
        );
        assert!(err(m("/data", 9)).contains("config.mounts[0].propagation has unknown value 9"));
        assert!(m("/data", 2).is_ok());
        assert!(err(m("/./", 0)).contains("would cover the root filesystem"));
        let mut c = container();
        c.mounts = vec![cri::Mount {
            container_path: "/data".into(),
            host_path: "/srv".into(),
            recursive_read_only: true,
            ..Default::default()
        }];
        assert!(err(container_config(c)).contains("recursive_read_only is set without readonly"));
    }

    #[test]
    fn container_devices_are_checked() {
        let mut c = container();
        c.devices = vec![cri::Device {
            container_path: "/dev/x".into(),
            host_path: "/dev/null".into(),
            permissions: "rwx".into(),
        }];
        assert!(err(container_config(c)).contains("config.devices[0].permissions"));
    }

    #[test]
    fn env_keys_are_checked() {
        let mut c = container();
        c.envs = vec![cri::KeyValue {
            key: "A=B".into(),
            value: "1".into(),
        }];
        assert!(err(container_config(c)).contains("config.envs[0].key"));
    }

    #[test]
    fn namespace_conflicts_are_refused() {
        let ns = |n: cri::NamespaceOption| {
            container_config(with_security(cri::LinuxContainerSecurityContext {
                namespace_options: Some(n),
                ..Default::default()
            }))
        };
        let target = cri::NamespaceMode::Target as i32;
        assert!(err(ns(cri::NamespaceOption {
            pid: target,
            ..Default::default()
        }))
        .contains("target_id is empty"));
        assert!(err(ns(cri::NamespaceOption {
            target_id: "abc".into(),
            ..Default::default()
        }))
        .contains("target_id is set but no namespace mode is TARGET"));
        assert!(err(ns(cri::NamespaceOption {
            network: target,
            target_id: "abc".into(),
            ..Default::default()
        }))
        .contains("network is TARGET"));
        assert!(err(ns(cri::NamespaceOption {
            ipc: 12,
            ..Default::default()
        }))
        .contains("namespace_options.ipc has unknown value 12"));
        assert!(err(ns(cri::NamespaceOption {
            userns_options: Some(cri::UserNamespace {
                mode: cri::NamespaceMode::Pod as i32,
                ..Default::default()
            }),
            ..Default::default()
        }))
        .contains("user namespaces are not supported"));
        let ok = ns(cri::NamespaceOption {
            pid: target,
            target_id: "abc".into(),
            ..Default::default()
        })
        .expect("pid TARGET with target_id");
        assert_eq!(ok.linux.security.namespaces.pid, NamespaceMode::Target);
        assert_eq!(
            ok.linux.security.namespaces.target_id.as_deref(),
            Some("abc")
        );
    }

    #[test]
    fn capabilities_are_normalised_and_unknown_ones_refused() {
        let caps = |add: &[&str]| {
            container_config(with_security(cri::LinuxContainerSecurityContext {
                capabilities: Some(cri::Capability {
                    add_capabilities: add.iter().map(|s| s.to_string()).collect(),
                    ..Default::default()
                }),
                ..Default::default()
            }))
        };
        let c = caps(&["sys_admin", "CAP_NET_RAW", "all"]).expect("valid");
        assert_eq!(
            c.linux.security.capabilities.add,
            ["CAP_SYS_ADMIN", "CAP_NET_RAW", "ALL"]
        );
        assert!(err(caps(&["CHOWN", "FLY"]))
            .contains("capabilities.add_capabilities[1] \"FLY\" is not a known capability"));
    }

    #[test]
    fn user_fields_are_checked() {
        let c = with_security(cri::LinuxContainerSecurityContext {
            run_as_group: Some(cri::Int64Value { value: 1 }),
            ..Default::default()
        });
        assert!(err(container_config(c)).contains("run_as_group is set without run_as_user"));
        let c = with_security(cri::LinuxContainerSecurityContext {
            run_as_user: Some(cri::Int64Value { value: 1 }),
            run_as_username: "bin".into(),
            ..Default::default()
        });
        assert!(err(container_config(c)).contains("are both set"));
        let c = with_security(cri::LinuxContainerSecurityContext {
            run_as_user: Some(cri::Int64Value { value: 1 << 33 }),
            ..Default::default()
        });
        assert!(err(container_config(c)).contains("run_as_user 8589934592 is not a valid id"));
        let c = with_security(cri::LinuxContainerSecurityContext {
            supplemental_groups: vec![1, -2],
            ..Default::default()
        });
        assert!(err(container_config(c)).contains("supplemental_groups[1]"));
        let c = with_security(cri::LinuxContainerSecurityContext {
            masked_paths: vec!["proc/kcore".into()],
            ..Default::default()
        });
        assert!(err(container_config(c)).contains("masked_paths[0]"));
    }

    #[test]
    fn seccomp_spellings() {
        let old = |path: &str| {
            container_config(with_security(cri::LinuxContainerSecurityContext {
                seccomp_profile_path: path.into(),
                ..Default::default()
            }))
            .map(|c| c.linux.security.seccomp)
        };
        assert_eq!(old("").expect("unset"), None);
        assert_eq!(
            old("runtime/default").expect("ok"),
            Some(SecurityProfile::RuntimeDefault)
        );
        assert_eq!(
            old("docker/default").expect("ok"),
            Some(SecurityProfile::RuntimeDefault)
        );
        assert_eq!(
            old("unconfined").expect("ok"),
            Some(SecurityProfile::Unconfined)
        );
        assert_eq!(
            old("localhost//etc/p.json").expect("ok"),
            Some(SecurityProfile::Localhost("/etc/p.json".into()))
        );
        assert!(err(old("localhost/p.json")).contains("is not an absolute path"));
        assert!(err(old("bogus")).contains("seccomp_profile_path \"bogus\""));
        let new = |t: i32, r: &str| {
            container_config(with_security(cri::LinuxContainerSecurityContext {
                seccomp: Some(cri::SecurityProfile {
                    profile_type: t,
                    localhost_ref: r.into(),
                }),
                seccomp_profile_path: "unconfined".into(),
                ..Default::default()
            }))
            .map(|c| c.linux.security.seccomp)
        };
        assert_eq!(
            new(0, "").expect("ok"),
            Some(SecurityProfile::RuntimeDefault)
        );
        assert_eq!(new(1, "").expect("ok"), Some(SecurityProfile::Unconfined));
        assert!(err(new(2, "")).contains("seccomp.localhost_ref is empty"));
        assert!(err(new(5, "")).contains("seccomp.profile_type has unknown value 5"));
    }

    #[test]
    fn apparmor_spellings() {
        let old = |p: &str| {
            container_config(with_security(cri::LinuxContainerSecurityContext {
                apparmor_profile: p.into(),
                ..Default::default()
            }))
            .map(|c| c.linux.security.apparmor)
        };
        assert_eq!(
            old("runtime/default").expect("ok"),
            Some(SecurityProfile::RuntimeDefault)
        );
        assert_eq!(
            old("unconfined").expect("ok"),
            Some(SecurityProfile::Unconfined)
        );
        assert!(err(old("localhost/")).contains("apparmor_profile"));
        let c = container_config(with_security(cri::LinuxContainerSecurityContext {
            apparmor: Some(cri::SecurityProfile {
                profile_type: 2,
                localhost_ref: "localhost/k8s-deny".into(),
            }),
            apparmor_profile: "unconfined".into(),
            ..Default::default()
        }))
        .expect("ok");
        assert_eq!(
            c.linux.security.apparmor,
            Some(SecurityProfile::Localhost("k8s-deny".into()))
        );
    }

    #[test]
    fn resources_zero_means_unset() {
        let r = res(cri::LinuxContainerResources::default()).expect("valid");
        assert_eq!(r, Resources::default());
    }

    #[test]
    fn resources_validation() {
        let cases: Vec<(cri::LinuxContainerResources, &str)> = vec![
            (
                cri::LinuxContainerResources {
                    cpu_shares: -5,
                    ..Default::default()
                },
                "linux.resources.cpu_shares is negative (-5)",
            ),
            (
                cri::LinuxContainerResources {
                    cpu_shares: 1,
                    ..Default::default()
                },
                "linux.resources.cpu_shares 1 is outside 2..=262144",
            ),
            (
                cri::LinuxContainerResources {
                    cpu_period: 999,
                    ..Default::default()
                },
                "linux.resources.cpu_period 999 is outside 1000..=1000000 µs",
            ),
            (
                cri::LinuxContainerResources {
                    cpu_period: -1,
                    ..Default::default()
                },
                "linux.resources.cpu_period is negative (-1)",
            ),
            (
                cri::LinuxContainerResources {
                    cpu_quota: -2,
                    ..Default::default()
                },
                "linux.resources.cpu_quota is negative (-2)",
            ),
            (
                cri::LinuxContainerResources {
                    cpu_quota: 500,
                    ..Default::default()
                },
                "linux.resources.cpu_quota 500 is below 1000 µs",
            ),
            (
                cri::LinuxContainerResources {
                    memory_limit_in_bytes: -1,
                    ..Default::default()
                },
                "linux.resources.memory_limit_in_bytes is negative (-1)",
            ),
            (
                cri::LinuxContainerResources {
                    oom_score_adj: 1001,
                    ..Default::default()
                },
                "linux.resources.oom_score_adj 1001 is outside -1000..=1000",
            ),
            (
                cri::LinuxContainerResources {
                    memory_swap_limit_in_bytes: 1 << 20,
                    ..Default::default()
                },
                "linux.resources.memory_swap_limit_in_bytes is set without memory_limit_in_bytes",
            ),
            (
                cri::LinuxContainerResources {
                    memory_limit_in_bytes: 2 << 20,
                    memory_swap_limit_in_bytes: 1 << 20,
                    ..Default::default()
                },
                "linux.resources.memory_swap_limit_in_bytes 1048576 is below memory_limit_in_bytes 2097152",
            ),
            (
                cri::LinuxContainerResources {
                    cpuset_cpus: "3-1".into(),
                    ..Default::default()
                },
                "linux.resources.cpuset_cpus \"3-1\" is not a cpu list like 0-3,5",
            ),
            (
                cri::LinuxContainerResources {
                    cpuset_mems: "0,a".into(),
                    ..Default::default()
                },
                "linux.resources.cpuset_mems \"0,a\" is not a cpu list like 0-3,5",
            ),
            (
                cri::LinuxContainerResources {
                    hugepage_limits: vec![cri::HugepageLimit {
                        page_size: "2M".into(),
                        limit: 1,
                    }],
                    ..Default::default()
                },
                "linux.resources.hugepage_limits[0].page_size \"2M\" is not a size like 2MB or 1GB",
            ),
            (
                cri::LinuxContainerResources {
                    unified: [("../memory.max".to_string(), "1".to_string())].into(),
                    ..Default::default()
                },
                "linux.resources.unified key \"../memory.max\" is not a cgroup file name",
            ),
        ];
        for (r, want) in cases {
            assert_eq!(err(res(r)), want);
        }
    }

    #[test]
    fn resources_accept_unlimited_and_bounds() {
        let r = res(cri::LinuxContainerResources {
            cpu_quota: -1,
            cpu_period: 1_000_000,
            cpu_shares: 2,
            memory_limit_in_bytes: 1 << 20,
            memory_swap_limit_in_bytes: -1,
            oom_score_adj: -1000,
            cpuset_cpus: "0,2-3".into(),
            ..Default::default()
        })
        .expect("valid");
        assert_eq!(r.cpu_quota, Some(-1));
        assert_eq!(r.memory_swap_limit_in_bytes, Some(-1));
        assert_eq!(r.oom_score_adj, -1000);
    }
}
