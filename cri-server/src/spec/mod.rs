//! The OCI runtime spec (`config.json`) of sandboxes and containers.
//!
//! [`sandbox_spec`] and [`container_spec`] build what containerd 1.6's CRI plugin would, from
//! our domain types, the image config and a few facts about the host. They do no I/O but
//! reading: the image's account files (beneath the rootfs), device nodes, a `Localhost`
//! seccomp profile, and creating a missing bind-mount source directory (containerd does the
//! same, for volumes the kubelet did not create).
//!
//! Deliberate differences from containerd, documented where they are decided:
//! * no rlimits: containerd removes the OCI default `RLIMIT_NOFILE=1024` too, so processes
//!   inherit the shim's limits (raising a hard limit would need `CAP_SYS_RESOURCE`, which
//!   the test hosts lack);
//! * AppArmor `RuntimeDefault` leaves the profile unset: crius loads no profile of its own
//!   (containerd loads `cri-containerd.apparmor.d`); `Localhost` profiles are applied;
//! * SELinux options are accepted and not applied.

pub mod caps;
pub mod mounts;
pub mod seccomp;
pub mod stored;
pub mod user;

pub use stored::StoredSpec;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxDeviceCgroup,
    LinuxHugepageLimitBuilder, LinuxMemoryBuilder, LinuxNamespace, LinuxNamespaceBuilder,
    LinuxNamespaceType, LinuxResources, LinuxResourcesBuilder, Mount, Process, ProcessBuilder,
    RootBuilder, Spec, SpecBuilder, UserBuilder,
};

use crate::container::config::{ContainerConfig, Mount as CriMount, Propagation, Resources};
use crate::image::manifest::ImageConfig;
use crate::sandbox::config::{NamespaceMode, PodConfig, SecurityProfile, SupplementalGroupsPolicy};

/// Annotation keys crius writes into every `config.json` (kata and gVisor read them; the
/// shim groups containers by the sandbox id).
pub mod annotations {
    /// `sandbox` or `container`.
    pub const CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
    /// The pod's sandbox id.
    pub const SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";
    /// The pod's name.
    pub const SANDBOX_NAME: &str = "io.kubernetes.cri.sandbox-name";
    /// The pod's namespace.
    pub const SANDBOX_NAMESPACE: &str = "io.kubernetes.cri.sandbox-namespace";
    /// The pod's UID.
    pub const SANDBOX_UID: &str = "io.kubernetes.cri.sandbox-uid";
    /// The pod's log directory.
    pub const SANDBOX_LOG_DIRECTORY: &str = "io.kubernetes.cri.sandbox-log-directory";
    /// The container's name.
    pub const CONTAINER_NAME: &str = "io.kubernetes.cri.container-name";
    /// The image the container runs.
    pub const IMAGE_NAME: &str = "io.kubernetes.cri.image-name";
}

/// The PATH a container gets when its image sets none.
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The `ociVersion` written: what containerd 1.6 writes and runc 1.1 knows.
pub const OCI_VERSION: &str = "1.0.2-dev";

/// The pause container's `oom_score_adj` (containerd's), before clamping.
pub const SANDBOX_OOM_SCORE_ADJ: i32 = -998;

/// The pause container's CPU shares (containerd's): it only sleeps.
pub const SANDBOX_CPU_SHARES: u64 = 2;

/// Facts about the host that change the spec.
#[derive(Debug, Clone, Default)]
pub struct HostFacts {
    /// AppArmor is enabled in the kernel.
    pub apparmor_enabled: bool,
    /// The daemon's own `oom_score_adj`: lower values are clamped up to it, as with
    /// containerd's `restrict_oom_score_adj` (without `CAP_SYS_RESOURCE` runc cannot lower it).
    pub min_oom_score_adj: i32,
    /// The unified cgroup v2 hierarchy is in use.
    pub cgroup_v2: bool,
    /// The kernel supports seccomp filters.
    pub seccomp_enabled: bool,
    /// The daemon's own bounding set (canonical names): no container can be given more,
    /// so privileged and `ALL` mean "all the daemon has" (runc fails otherwise). `None`:
    /// unknown, nothing is filtered.
    pub capabilities: Option<std::collections::BTreeSet<String>>,
    /// The memory controller accounts swap (`memory.memsw.*` on v1, `memory.swap.max` on
    /// v2). Without it, runc fails on a swap limit, so none is written.
    pub swap_accounting: bool,
}

/// The per-pod files on the host that containers bind-mount.
#[derive(Debug, Clone)]
pub struct SandboxPaths {
    /// Source of `/etc/hostname`.
    pub hostname: PathBuf,
    /// Source of `/etc/hosts`.
    pub hosts: PathBuf,
    /// Source of `/etc/resolv.conf`.
    pub resolv_conf: PathBuf,
    /// Source of `/dev/shm`; `None` for host IPC (the host's `/dev/shm`).
    pub shm: Option<PathBuf>,
}

/// Everything [`sandbox_spec`] needs.
#[derive(Debug, Clone)]
pub struct SandboxSpecInput<'a> {
    /// The sandbox id.
    pub id: &'a str,
    /// The pod.
    pub pod: &'a PodConfig,
    /// The pause image's config.
    pub image: &'a ImageConfig,
    /// The pause image's name, for the annotation.
    pub image_name: &'a str,
    /// The pinned network namespace; `None` for host network.
    pub netns: Option<&'a Path>,
    /// The pod's files.
    pub paths: &'a SandboxPaths,
    /// See [`cgroups_path`].
    pub cgroups_path: String,
    /// Host facts.
    pub host: &'a HostFacts,
    /// The RuntimeClass handler (kept for handler-specific annotations).
    pub runtime_handler: &'a str,
}

/// Everything [`container_spec`] needs.
#[derive(Debug, Clone)]
pub struct ContainerSpecInput<'a> {
    /// The container id.
    pub id: &'a str,
    /// The pod's sandbox id.
    pub sandbox_id: &'a str,
    /// The pod.
    pub pod: &'a PodConfig,
    /// The container.
    pub container: &'a ContainerConfig,
    /// The image's config.
    pub image: &'a ImageConfig,
    /// The image's name, for the annotation.
    pub image_name: &'a str,
    /// The mounted rootfs, to read `/etc/passwd` and `/etc/group` from.
    pub rootfs: &'a Path,
    /// The pause process: its `/proc/<pid>/ns/*` are joined.
    pub sandbox_pid: u32,
    /// The target container's pid for a `TARGET` pid namespace.
    pub target_pid: Option<u32>,
    /// The pod's files.
    pub paths: &'a SandboxPaths,
    /// See [`cgroups_path`].
    pub cgroups_path: String,
    /// Host facts.
    pub host: &'a HostFacts,
}

/// Why a spec could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The configuration cannot be run; the message names the field.
    #[error("{0}")]
    InvalidArgument(String),
    /// Something the configuration names does not exist (a user, a device, a profile).
    #[error("{0}")]
    NotFound(String),
    /// Reading the host or the rootfs failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The oci-spec builders refused a value (a bug in crius).
    #[error("building the OCI spec: {0}")]
    Oci(#[from] oci_spec::OciSpecError),
    /// (De)serialising failed.
    #[error("OCI spec JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// A crius bug.
    #[error("internal error: {0}")]
    Internal(String),
}

/// A spec over `rootfs` in the bundle, from its parts (shared by sandboxes and containers).
fn assemble(
    readonly_rootfs: bool,
    process: oci_spec::runtime::Process,
    mounts: Vec<oci_spec::runtime::Mount>,
    annotations: HashMap<String, String>,
    linux: oci_spec::runtime::Linux,
) -> Result<Spec, SpecError> {
    Ok(SpecBuilder::default()
        .version(OCI_VERSION)
        .root(
            RootBuilder::default()
                .path("rootfs")
                .readonly(readonly_rootfs)
                .build()?,
        )
        .process(process)
        .mounts(mounts)
        .annotations(annotations)
        .linux(linux)
        .build()?)
}

/// The cgroup path of a sandbox or container. cgroupfs: `<parent or /crius>/<id>`;
/// systemd: `<slice or system.slice>:crius:<id>` (runc's `slice:prefix:name`; a parent given
/// as a path contributes its last component, which is the slice).
pub fn cgroups_path(parent: &str, id: &str, systemd: bool) -> String {
    if systemd {
        let slice = parent
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or("");
        let slice = if slice.is_empty() {
            "system.slice"
        } else {
            slice
        };
        format!("{slice}:crius:{id}")
    } else {
        let parent = parent.trim_end_matches('/');
        let parent = if parent.is_empty() { "/crius" } else { parent };
        if parent.starts_with('/') {
            format!("{parent}/{id}")
        } else {
            format!("/{parent}/{id}")
        }
    }
}

/// Writes `config.json` into `bundle` atomically (a temporary file renamed over it). No
/// fsync: bundles live under the state directory on tmpfs and do not outlive a reboot.
pub fn write_spec(spec: &Spec, bundle: &Path) -> Result<(), SpecError> {
    let json = serde_json::to_vec(spec)?;
    let tmp = bundle.join(".config.json.tmp");
    let io = |what: &str, e: std::io::Error| SpecError::Io {
        context: format!("{what} in {}", bundle.display()),
        source: e,
    };
    std::fs::write(&tmp, json).map_err(|e| io("writing config.json", e))?;
    std::fs::rename(&tmp, bundle.join("config.json")).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io("renaming config.json", e)
    })
}

/// The OCI process JSON of an exec in a container: the container's user, environment,
/// working directory, capabilities, `no_new_privileges`, AppArmor and SELinux labels, with
/// `cmd` as arguments.
pub fn exec_process(
    container: &Spec,
    cmd: Vec<String>,
    tty: bool,
) -> Result<serde_json::Value, SpecError> {
    if cmd.is_empty() {
        return Err(SpecError::InvalidArgument("cmd is empty".into()));
    }
    let mut process = container
        .process()
        .clone()
        .ok_or_else(|| SpecError::InvalidArgument("the container spec has no process".into()))?;
    process.set_args(Some(cmd));
    process.set_terminal(Some(tty));
    process.set_console_size(None);
    if tty {
        set_env(process.env_mut().get_or_insert_with(Vec::new), "TERM=xterm");
    }
    Ok(serde_json::to_value(process)?)
}

/// The pause container's spec.
pub fn sandbox_spec(input: &SandboxSpecInput) -> Result<Spec, SpecError> {
    let pod = input.pod;
    let sec = &pod.linux.security;
    let image = input.image.config.clone().unwrap_or_default();
    let args = merge_args(&[], &[], &image.entrypoint, &image.cmd)?;
    let mut env = vec![DEFAULT_PATH.to_string()];
    for e in image.env.iter().flatten() {
        set_env(&mut env, e);
    }
    let host_network = sec.namespaces.network == NamespaceMode::Node;
    let (uid, gid) = sandbox_user(pod, image.user.as_deref().unwrap_or(""));
    let mut additional_gids = vec![gid];
    for g in &sec.supplemental_groups {
        if !additional_gids.contains(g) {
            additional_gids.push(*g);
        }
    }
    let cap_names = caps::CapSets::compute(caps::DEFAULT, &[], &[], &[]);
    let mut process = ProcessBuilder::default()
        .terminal(false)
        .user(
            UserBuilder::default()
                .uid(uid)
                .gid(gid)
                .additional_gids(additional_gids)
                .build()?,
        )
        .args(args)
        .env(env)
        .cwd(non_empty(image.working_dir.as_deref()).unwrap_or("/"))
        .capabilities(oci_caps(&cap_names, input.host)?)
        .no_new_privileges(true)
        .oom_score_adj(SANDBOX_OOM_SCORE_ADJ.max(input.host.min_oom_score_adj))
        .build()?;
    blank_defaults(&mut process);

    let mut namespaces = vec![ns(LinuxNamespaceType::Mount, None)?];
    if !host_network {
        namespaces.push(ns(LinuxNamespaceType::Network, input.netns)?);
        namespaces.push(ns(LinuxNamespaceType::Uts, None)?);
    }
    if sec.namespaces.ipc != NamespaceMode::Node {
        namespaces.push(ns(LinuxNamespaceType::Ipc, None)?);
    }
    if sec.namespaces.pid != NamespaceMode::Node {
        namespaces.push(ns(LinuxNamespaceType::Pid, None)?);
    }
    if input.host.cgroup_v2 {
        namespaces.push(ns(LinuxNamespaceType::Cgroup, None)?);
    }

    let mut mount_list = mounts::default_mounts(false)?;
    let shm = input.paths.shm.as_deref().unwrap_or(Path::new("/dev/shm"));
    mount_list.push(mounts::sandbox_shm(shm)?);

    let resources = LinuxResourcesBuilder::default()
        .devices(vec![mounts::all_devices(false)?])
        .cpu(
            LinuxCpuBuilder::default()
                .shares(SANDBOX_CPU_SHARES)
                .build()?,
        )
        .build()?;
    let seccomp_ctx_caps = cap_names.effective.clone();
    let seccomp = if sec.privileged {
        None
    } else {
        seccomp_for(
            sec.seccomp.as_ref(),
            &seccomp_ctx_caps,
            input.host,
            "config.linux.security_context.seccomp",
        )?
    };
    let mut linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .resources(resources)
        .cgroups_path(PathBuf::from(&input.cgroups_path))
        .masked_paths(strings(mounts::DEFAULT_MASKED_PATHS))
        .readonly_paths(strings(mounts::DEFAULT_READONLY_PATHS))
        .build()?;
    if !pod.linux.sysctls.is_empty() {
        linux.set_sysctl(Some(
            pod.linux
                .sysctls
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ));
    }
    linux.set_seccomp(seccomp);

    let mut annotations: HashMap<String, String> = pod
        .annotations
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (k, v) in [
        (annotations::CONTAINER_TYPE, "sandbox"),
        (annotations::SANDBOX_ID, input.id),
        (annotations::SANDBOX_NAME, &pod.metadata.name),
        (annotations::SANDBOX_NAMESPACE, &pod.metadata.namespace),
        (annotations::SANDBOX_UID, &pod.metadata.uid),
        (annotations::SANDBOX_LOG_DIRECTORY, &pod.log_directory),
        (annotations::IMAGE_NAME, input.image_name),
    ] {
        annotations.insert(k.to_string(), v.to_string());
    }

    let mut spec = assemble(sec.readonly_rootfs, process, mount_list, annotations, linux)?;
    spec.set_hostname(if host_network {
        None
    } else {
        Some(sandbox_hostname(pod))
    });
    Ok(spec)
}

/// The uid and gid of the pause process: the pod's `run_as_user`/`run_as_group`, else a
/// numeric image `USER` (the pause image has no `/etc/passwd` to resolve names in; a name
/// runs as root).
fn sandbox_user(pod: &PodConfig, image_user: &str) -> (u32, u32) {
    let sec = &pod.linux.security;
    let (mut uid, mut gid) = (0, 0);
    if let Some(u) = sec.run_as_user {
        uid = u;
    } else {
        let (u, g) = image_user.split_once(':').unwrap_or((image_user, ""));
        if let Ok(u) = u.parse() {
            uid = u;
            if let Ok(g) = g.parse() {
                gid = g;
            }
        }
    }
    if let Some(g) = sec.run_as_group {
        gid = g;
    }
    (uid, gid)
}

/// The pod's hostname, or the node's when the kubelet gave none.
fn sandbox_hostname(pod: &PodConfig) -> String {
    if !pod.hostname.is_empty() {
        return pod.hostname.clone();
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

/// A container's spec.
pub fn container_spec(input: &ContainerSpecInput) -> Result<Spec, SpecError> {
    const SEC: &str = "config.linux.security_context";
    let pod = input.pod;
    let c = input.container;
    let sec = &c.linux.security;
    let privileged = sec.privileged;
    if privileged && !pod.linux.security.privileged {
        return Err(SpecError::InvalidArgument(format!(
            "{SEC}.privileged is set but the pod's sandbox is not privileged"
        )));
    }
    let image = input.image.config.clone().unwrap_or_default();

    // Process: arguments, environment, user.
    let args = merge_args(&c.command, &c.args, &image.entrypoint, &image.cmd)?;
    let mut env = vec![DEFAULT_PATH.to_string()];
    set_env(&mut env, &format!("HOSTNAME={}", sandbox_hostname(pod)));
    for e in image.env.iter().flatten() {
        set_env(&mut env, e);
    }
    for (k, v) in &c.envs {
        set_env(&mut env, &format!("{k}={v}"));
    }
    if c.tty {
        set_env(&mut env, "TERM=xterm");
    }
    let mut accounts = user::Accounts::new(input.rootfs);
    let identity = user::resolve(
        &user::UserRequest {
            run_as_user: sec.run_as_user,
            run_as_username: &sec.run_as_username,
            run_as_group: sec.run_as_group,
            image_user: image.user.as_deref().unwrap_or(""),
            supplemental_groups: &sec.supplemental_groups,
            merge_group_file: sec.supplemental_groups_policy == SupplementalGroupsPolicy::Merge,
        },
        &mut accounts,
    )?;
    let cwd = non_empty(Some(&c.working_dir))
        .or(non_empty(image.working_dir.as_deref()))
        .unwrap_or("/");
    if !cwd.starts_with('/') {
        return Err(SpecError::InvalidArgument(format!(
            "config.working_dir {cwd:?} is not absolute"
        )));
    }
    let cap_names = if privileged {
        caps::CapSets::compute(caps::ALL, &[], &[], &[])
    } else {
        caps::CapSets::compute(
            caps::DEFAULT,
            &sec.capabilities.add,
            &sec.capabilities.drop,
            &sec.capabilities.add_ambient,
        )
    };
    let resources = c.linux.resources.clone().unwrap_or_default();
    let mut process = ProcessBuilder::default()
        .terminal(c.tty)
        .user(
            UserBuilder::default()
                .uid(identity.uid)
                .gid(identity.gid)
                .additional_gids(identity.additional_gids)
                .build()?,
        )
        .args(args)
        .env(env)
        .cwd(cwd)
        .capabilities(oci_caps(&cap_names, input.host)?)
        .no_new_privileges(sec.no_new_privs)
        .oom_score_adj(resources.oom_score_adj.max(input.host.min_oom_score_adj))
        .build()?;
    blank_defaults(&mut process);
    process.set_apparmor_profile(apparmor(sec.apparmor.as_ref(), privileged, input.host)?);

    // Namespaces: join the pause's, as the pod asks.
    let pod_ns = &pod.linux.security.namespaces;
    let proc_ns = |pid: u32, name: &str| PathBuf::from(format!("/proc/{pid}/ns/{name}"));
    let sandbox = input.sandbox_pid;
    let mut namespaces = vec![ns(LinuxNamespaceType::Mount, None)?];
    if pod_ns.network != NamespaceMode::Node {
        namespaces.push(ns(
            LinuxNamespaceType::Network,
            Some(&proc_ns(sandbox, "net")),
        )?);
        namespaces.push(ns(LinuxNamespaceType::Uts, Some(&proc_ns(sandbox, "uts")))?);
    }
    if sec.namespaces.ipc != NamespaceMode::Node && pod_ns.ipc != NamespaceMode::Node {
        namespaces.push(ns(LinuxNamespaceType::Ipc, Some(&proc_ns(sandbox, "ipc")))?);
    }
    match sec.namespaces.pid {
        NamespaceMode::Pod => {
            namespaces.push(ns(LinuxNamespaceType::Pid, Some(&proc_ns(sandbox, "pid")))?)
        }
        NamespaceMode::Container => namespaces.push(ns(LinuxNamespaceType::Pid, None)?),
        NamespaceMode::Node => {}
        NamespaceMode::Target => {
            let pid = input.target_pid.ok_or_else(|| {
                SpecError::InvalidArgument(format!(
                    "{SEC}.namespace_options.target_id {:?} is not a running container",
                    sec.namespaces.target_id.as_deref().unwrap_or("")
                ))
            })?;
            namespaces.push(ns(LinuxNamespaceType::Pid, Some(&proc_ns(pid, "pid")))?);
        }
    }
    if input.host.cgroup_v2 {
        namespaces.push(ns(LinuxNamespaceType::Cgroup, None)?);
    }

    // Mounts: kernel file systems, pod files, volumes.
    let mut extra: Vec<CriMount> = Vec::new();
    let in_config = |dest: &str| {
        c.mounts
            .iter()
            .any(|m| mounts::clean(&m.container_path) == Path::new(dest))
    };
    let ro = sec.readonly_rootfs;
    for (dest, src) in [
        ("/etc/hostname", &input.paths.hostname),
        ("/etc/hosts", &input.paths.hosts),
        ("/etc/resolv.conf", &input.paths.resolv_conf),
    ] {
        if !in_config(dest) {
            extra.push(pod_file(dest, src, ro));
        }
    }
    if !in_config("/dev/shm") {
        let host_ipc =
            pod_ns.ipc == NamespaceMode::Node || sec.namespaces.ipc == NamespaceMode::Node;
        let src = match (&input.paths.shm, host_ipc) {
            (Some(p), false) => p.clone(),
            _ => PathBuf::from("/dev/shm"),
        };
        extra.push(pod_file("/dev/shm", &src, false));
    }
    extra.extend(c.mounts.iter().cloned());
    let mut rootfs_propagation = None;
    for m in &c.mounts {
        match m.propagation {
            Propagation::Bidirectional => rootfs_propagation = Some("rshared"),
            Propagation::HostToContainer if rootfs_propagation.is_none() => {
                rootfs_propagation = Some("rslave")
            }
            _ => {}
        }
    }
    let extra_dests: Vec<PathBuf> = extra
        .iter()
        .map(|m| mounts::clean(&m.container_path))
        .collect();
    let mut mount_list: Vec<Mount> = mounts::default_mounts(privileged)?
        .into_iter()
        .filter(|m| !extra_dests.iter().any(|d| m.destination().starts_with(d)))
        .collect();
    let mut binds = extra
        .iter()
        .map(mounts::bind)
        .collect::<Result<Vec<_>, _>>()?;
    mounts::sort_by_depth(&mut binds);
    mount_list.extend(binds);

    // Devices.
    let mut devices = Vec::new();
    let mut rules: Vec<LinuxDeviceCgroup> = vec![mounts::all_devices(privileged)?];
    if privileged {
        devices.extend(mounts::host_devices()?);
    }
    for (i, d) in c.devices.iter().enumerate() {
        let (devs, allow) = mounts::config_device(d, &format!("config.devices[{i}]"))?;
        devices.extend(devs);
        if !privileged {
            rules.extend(allow);
        }
    }

    let mut oci_resources = oci_resources(&resources, input.host, "config.linux.resources")?;
    oci_resources.set_devices(Some(rules));

    let seccomp = if privileged {
        None
    } else {
        seccomp_for(
            sec.seccomp.as_ref(),
            &cap_names.effective,
            input.host,
            &format!("{SEC}.seccomp"),
        )?
    };
    let (masked, readonly) = if privileged {
        (Vec::new(), Vec::new())
    } else {
        (
            if sec.masked_paths.is_empty() {
                strings(mounts::DEFAULT_MASKED_PATHS)
            } else {
                sec.masked_paths.clone()
            },
            if sec.readonly_paths.is_empty() {
                strings(mounts::DEFAULT_READONLY_PATHS)
            } else {
                sec.readonly_paths.clone()
            },
        )
    };
    let mut linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .resources(oci_resources)
        .cgroups_path(PathBuf::from(&input.cgroups_path))
        .masked_paths(masked)
        .readonly_paths(readonly)
        .devices(devices)
        .build()?;
    linux.set_sysctl(None);
    linux.set_seccomp(seccomp);
    linux.set_rootfs_propagation(rootfs_propagation.map(str::to_string));

    let mut annotations: HashMap<String, String> = c
        .annotations
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (k, v) in [
        (annotations::CONTAINER_TYPE, "container"),
        (annotations::SANDBOX_ID, input.sandbox_id),
        (annotations::SANDBOX_NAME, &pod.metadata.name),
        (annotations::SANDBOX_NAMESPACE, &pod.metadata.namespace),
        (annotations::SANDBOX_UID, &pod.metadata.uid),
        (annotations::CONTAINER_NAME, &c.metadata.name),
        (annotations::IMAGE_NAME, input.image_name),
    ] {
        annotations.insert(k.to_string(), v.to_string());
    }

    let mut spec = assemble(sec.readonly_rootfs, process, mount_list, annotations, linux)?;
    // Containers share the pause's UTS namespace (or the host's): a hostname here would make
    // runc refuse the spec.
    spec.set_hostname(None);
    // Last, so that a refused spec creates nothing.
    for (i, m) in c.mounts.iter().enumerate() {
        ensure_source(m, &format!("config.mounts[{i}]"))?;
    }
    Ok(spec)
}

/// A pod file as a bind mount.
fn pod_file(dest: &str, src: &Path, readonly: bool) -> CriMount {
    CriMount {
        container_path: dest.to_string(),
        host_path: src.to_string_lossy().into_owned(),
        readonly,
        ..CriMount::default()
    }
}

/// Creates a missing bind-mount source directory, as containerd does for volumes the
/// kubelet did not create.
fn ensure_source(m: &CriMount, field: &str) -> Result<(), SpecError> {
    match std::fs::symlink_metadata(&m.host_path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::create_dir_all(&m.host_path)
            .map_err(|e| SpecError::Io {
                context: format!("creating {field}.host_path {}", m.host_path),
                source: e,
            }),
        Err(e) => Err(SpecError::Io {
            context: format!("stat of {field}.host_path {}", m.host_path),
            source: e,
        }),
    }
}

/// Kubernetes' command rules: `command` replaces ENTRYPOINT and drops CMD; `args` alone
/// replace CMD; neither keeps ENTRYPOINT + CMD.
pub fn merge_args(
    command: &[String],
    args: &[String],
    entrypoint: &Option<Vec<String>>,
    cmd: &Option<Vec<String>>,
) -> Result<Vec<String>, SpecError> {
    let entrypoint = entrypoint.as_deref().unwrap_or_default();
    let cmd = cmd.as_deref().unwrap_or_default();
    let mut out: Vec<String> = if command.is_empty() {
        entrypoint.to_vec()
    } else {
        command.to_vec()
    };
    if !args.is_empty() {
        out.extend(args.iter().cloned());
    } else if command.is_empty() {
        out.extend(cmd.iter().cloned());
    }
    if out.is_empty() {
        return Err(SpecError::InvalidArgument("no command specified".into()));
    }
    Ok(out)
}

/// Sets `KEY=value` in `env`: replaces the value of an existing key in place (keeping the
/// order), else appends. An entry without `=` is a key with an empty value.
pub fn set_env(env: &mut Vec<String>, entry: &str) {
    let key = entry.split_once('=').map_or(entry, |(k, _)| k);
    match env
        .iter_mut()
        .find(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) == key)
    {
        Some(e) => *e = entry.to_string(),
        None => env.push(entry.to_string()),
    }
}

/// The OCI resources of a container. Unified files need cgroup v2; swap is written only
/// with swap accounting, and defaults to the memory limit (no swap), as containerd does.
pub fn oci_resources(
    r: &Resources,
    host: &HostFacts,
    field: &str,
) -> Result<LinuxResources, SpecError> {
    let mut cpu = LinuxCpuBuilder::default();
    if let Some(s) = r.cpu_shares {
        cpu = cpu.shares(s);
    }
    if let Some(q) = r.cpu_quota {
        cpu = cpu.quota(q);
    }
    if let Some(p) = r.cpu_period {
        cpu = cpu.period(p);
    }
    if !r.cpuset_cpus.is_empty() {
        cpu = cpu.cpus(r.cpuset_cpus.clone());
    }
    if !r.cpuset_mems.is_empty() {
        cpu = cpu.mems(r.cpuset_mems.clone());
    }
    let mut memory = LinuxMemoryBuilder::default();
    if let Some(m) = r.memory_limit_in_bytes {
        memory = memory.limit(m);
        if host.swap_accounting {
            memory = memory.swap(r.memory_swap_limit_in_bytes.unwrap_or(m));
        }
    }
    let mut b = LinuxResourcesBuilder::default()
        .cpu(cpu.build()?)
        .memory(memory.build()?);
    if !r.hugepage_limits.is_empty() {
        let limits = r
            .hugepage_limits
            .iter()
            .map(|h| {
                LinuxHugepageLimitBuilder::default()
                    .page_size(h.page_size.clone())
                    .limit(i64::try_from(h.limit).unwrap_or(i64::MAX))
                    .build()
            })
            .collect::<Result<Vec<_>, _>>()?;
        b = b.hugepage_limits(limits);
    }
    if !r.unified.is_empty() {
        if !host.cgroup_v2 {
            return Err(SpecError::InvalidArgument(format!(
                "{field}.unified needs cgroup v2, and this host uses cgroup v1"
            )));
        }
        b = b.unified(
            r.unified
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<HashMap<_, _>>(),
        );
    }
    Ok(b.build()?)
}

fn seccomp_for(
    profile: Option<&SecurityProfile>,
    caps: &BTreeSet<String>,
    host: &HostFacts,
    field: &str,
) -> Result<Option<oci_spec::runtime::LinuxSeccomp>, SpecError> {
    if !host.seccomp_enabled {
        return Ok(None);
    }
    let kernel = seccomp::host_kernel();
    let ctx = seccomp::Context {
        caps,
        arch: std::env::consts::ARCH,
        kernel,
    };
    match profile {
        None | Some(SecurityProfile::Unconfined) => Ok(None),
        Some(SecurityProfile::RuntimeDefault) => seccomp::default_profile()
            .to_oci(&ctx, "RuntimeDefault")
            .map(Some),
        Some(SecurityProfile::Localhost(path)) => {
            seccomp::localhost(path, &ctx)
                .map(Some)
                .map_err(|e| match e {
                    SpecError::InvalidArgument(m) => {
                        SpecError::InvalidArgument(format!("{field}: {m}"))
                    }
                    SpecError::NotFound(m) => SpecError::NotFound(format!("{field}: {m}")),
                    other => other,
                })
        }
    }
}

fn apparmor(
    profile: Option<&SecurityProfile>,
    privileged: bool,
    host: &HostFacts,
) -> Result<Option<String>, SpecError> {
    if privileged {
        return Ok(None);
    }
    match profile {
        None | Some(SecurityProfile::RuntimeDefault) | Some(SecurityProfile::Unconfined) => {
            Ok(None)
        }
        Some(SecurityProfile::Localhost(name)) if host.apparmor_enabled => Ok(Some(name.clone())),
        Some(SecurityProfile::Localhost(name)) => Err(SpecError::InvalidArgument(format!(
            "config.linux.security_context.apparmor: profile {name:?} requested but AppArmor is \
             not enabled on this host"
        ))),
    }
}

fn oci_caps(
    sets: &caps::CapSets,
    host: &HostFacts,
) -> Result<oci_spec::runtime::LinuxCapabilities, SpecError> {
    let mut sets = sets.clone();
    if let Some(allowed) = &host.capabilities {
        for set in [
            &mut sets.bounding,
            &mut sets.effective,
            &mut sets.permitted,
            &mut sets.inheritable,
            &mut sets.ambient,
        ] {
            set.retain(|c| allowed.contains(c));
        }
    }
    Ok(LinuxCapabilitiesBuilder::default()
        .bounding(caps::oci_set(&sets.bounding))
        .effective(caps::oci_set(&sets.effective))
        .permitted(caps::oci_set(&sets.permitted))
        .inheritable(caps::oci_set(&sets.inheritable))
        .ambient(caps::oci_set(&sets.ambient))
        .build()?)
}

/// Clears what oci-spec's `Process` defaults put in that crius does not want (an rlimit).
fn blank_defaults(process: &mut Process) {
    process.set_rlimits(None);
    process.set_apparmor_profile(None);
    process.set_selinux_label(None);
}

fn ns(typ: LinuxNamespaceType, path: Option<&Path>) -> Result<LinuxNamespace, SpecError> {
    let mut b = LinuxNamespaceBuilder::default().typ(typ);
    if let Some(p) = path {
        b = b.path(p);
    }
    Ok(b.build()?)
}

fn non_empty(s: Option<&str>) -> Option<&str> {
    s.filter(|s| !s.is_empty())
}

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[cfg(test)]
mod tests;
