//! CRI responses built from crius's records: the domain → protobuf half of the edge.

use std::collections::HashMap;

use crius_proto::cri;

use crate::container::config::Propagation;
use crate::container::record::{ContainerRecord, ContainerState};
use crate::container::stats::ContainerUsage;
use crate::pods::{ContainerEvent, ContainerEventKind};
use crate::sandbox::config::NamespaceMode;
use crate::sandbox::record::{SandboxRecord, SandboxState};

fn map(m: &std::collections::BTreeMap<String, String>) -> HashMap<String, String> {
    m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

fn namespace_mode(m: NamespaceMode) -> i32 {
    (match m {
        NamespaceMode::Pod => cri::NamespaceMode::Pod,
        NamespaceMode::Container => cri::NamespaceMode::Container,
        NamespaceMode::Node => cri::NamespaceMode::Node,
        NamespaceMode::Target => cri::NamespaceMode::Target,
    }) as i32
}

fn propagation(p: Propagation) -> i32 {
    (match p {
        Propagation::Private => cri::MountPropagation::PropagationPrivate,
        Propagation::HostToContainer => cri::MountPropagation::PropagationHostToContainer,
        Propagation::Bidirectional => cri::MountPropagation::PropagationBidirectional,
    }) as i32
}

fn pod_metadata(rec: &SandboxRecord) -> cri::PodSandboxMetadata {
    let m = &rec.config.metadata;
    cri::PodSandboxMetadata {
        name: m.name.clone(),
        uid: m.uid.clone(),
        namespace: m.namespace.clone(),
        attempt: m.attempt,
    }
}

/// The CRI code of a sandbox state (for filters).
pub fn sandbox_state_code(s: SandboxState) -> i32 {
    sandbox_state(s)
}

fn sandbox_state(s: SandboxState) -> i32 {
    match s {
        SandboxState::Ready => cri::PodSandboxState::SandboxReady as i32,
        SandboxState::Creating | SandboxState::NotReady => {
            cri::PodSandboxState::SandboxNotready as i32
        }
    }
}

/// `ListPodSandbox` entry.
pub fn pod_sandbox(rec: &SandboxRecord) -> cri::PodSandbox {
    cri::PodSandbox {
        id: rec.id.clone(),
        metadata: Some(pod_metadata(rec)),
        state: sandbox_state(rec.state),
        created_at: rec.created_at,
        labels: map(&rec.config.labels),
        annotations: map(&rec.config.annotations),
        runtime_handler: rec.handler.clone(),
    }
}

/// `PodSandboxStatus`; `ips` are the pod's, primary first (the host's for host network).
pub fn pod_sandbox_status(rec: &SandboxRecord, ips: &[std::net::IpAddr]) -> cri::PodSandboxStatus {
    let ns = &rec.config.linux.security.namespaces;
    let mut ips = ips.iter().map(|ip| ip.to_string());
    cri::PodSandboxStatus {
        id: rec.id.clone(),
        metadata: Some(pod_metadata(rec)),
        state: sandbox_state(rec.state),
        created_at: rec.created_at,
        network: Some(cri::PodSandboxNetworkStatus {
            ip: ips.next().unwrap_or_default(),
            additional_ips: ips.map(|ip| cri::PodIp { ip }).collect(),
        }),
        linux: Some(cri::LinuxPodSandboxStatus {
            namespaces: Some(cri::Namespace {
                options: Some(cri::NamespaceOption {
                    network: namespace_mode(ns.network),
                    pid: namespace_mode(ns.pid),
                    ipc: namespace_mode(ns.ipc),
                    target_id: ns.target_id.clone().unwrap_or_default(),
                    userns_options: None,
                }),
            }),
        }),
        labels: map(&rec.config.labels),
        annotations: map(&rec.config.annotations),
        runtime_handler: rec.handler.clone(),
    }
}

/// `verbose` info of `PodSandboxStatus`: containerd's `info` key, as JSON.
pub fn pod_sandbox_info(rec: &SandboxRecord) -> HashMap<String, String> {
    let info = serde_json::json!({
        "pid": rec.pid,
        "runtimeHandler": rec.handler,
        "netNamespacePath": rec.netns.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
        "image": rec.image,
        "config": rec.config,
        "runtimeSpec": rec.spec,
    });
    HashMap::from([("info".to_string(), info.to_string())])
}

/// The CRI code of a container state (for filters).
pub fn container_state_code(s: ContainerState) -> i32 {
    container_state(s)
}

fn container_state(s: ContainerState) -> i32 {
    match s {
        ContainerState::Creating | ContainerState::Created => {
            cri::ContainerState::ContainerCreated as i32
        }
        ContainerState::Running => cri::ContainerState::ContainerRunning as i32,
        ContainerState::Exited => cri::ContainerState::ContainerExited as i32,
    }
}

fn container_metadata(rec: &ContainerRecord) -> cri::ContainerMetadata {
    cri::ContainerMetadata {
        name: rec.config.metadata.name.clone(),
        attempt: rec.config.metadata.attempt,
    }
}

fn image_spec(rec: &ContainerRecord) -> cri::ImageSpec {
    cri::ImageSpec {
        image: rec.image_name.clone(),
        ..Default::default()
    }
}

/// `ListContainers` entry.
pub fn container(rec: &ContainerRecord) -> cri::Container {
    cri::Container {
        id: rec.id.clone(),
        pod_sandbox_id: rec.sandbox_id.clone(),
        metadata: Some(container_metadata(rec)),
        image: Some(image_spec(rec)),
        // The image id, as containerd lists it: kubelets before 1.30 take a list entry's
        // image_ref as the image id for image GC (ContainerStatus keeps the digest).
        image_ref: rec.image_id.clone(),
        state: container_state(rec.state),
        created_at: rec.created_at,
        labels: map(&rec.config.labels),
        annotations: map(&rec.config.annotations),
        image_id: rec.image_id.clone(),
    }
}

/// `ContainerStatus`.
pub fn container_status(rec: &ContainerRecord) -> cri::ContainerStatus {
    let (exit_code, finished_at, reason, message) = match &rec.exit {
        Some(e) => (e.code, e.at, e.reason.clone(), e.message.clone()),
        None => (0, 0, String::new(), String::new()),
    };
    cri::ContainerStatus {
        id: rec.id.clone(),
        metadata: Some(container_metadata(rec)),
        state: container_state(rec.state),
        created_at: rec.created_at,
        started_at: rec.started_at,
        finished_at,
        exit_code,
        image: Some(image_spec(rec)),
        image_ref: rec.image_ref.clone(),
        reason,
        message,
        labels: map(&rec.config.labels),
        annotations: map(&rec.config.annotations),
        mounts: rec
            .config
            .mounts
            .iter()
            .map(|m| cri::Mount {
                container_path: m.container_path.clone(),
                host_path: m.host_path.clone(),
                readonly: m.readonly,
                selinux_relabel: m.selinux_relabel,
                propagation: propagation(m.propagation),
                ..Default::default()
            })
            .collect(),
        log_path: rec.log_path.clone(),
        image_id: rec.image_id.clone(),
        resources: rec
            .config
            .linux
            .resources
            .as_ref()
            .map(|r| cri::ContainerResources {
                linux: Some(linux_resources(r)),
                windows: None,
            }),
        ..Default::default()
    }
}

/// The resources a container was created (or last updated) with.
fn linux_resources(r: &crate::container::config::Resources) -> cri::LinuxContainerResources {
    cri::LinuxContainerResources {
        cpu_period: r
            .cpu_period
            .map_or(0, |v| i64::try_from(v).unwrap_or(i64::MAX)),
        cpu_quota: r.cpu_quota.unwrap_or(0),
        cpu_shares: r
            .cpu_shares
            .map_or(0, |v| i64::try_from(v).unwrap_or(i64::MAX)),
        memory_limit_in_bytes: r.memory_limit_in_bytes.unwrap_or(0),
        oom_score_adj: i64::from(r.oom_score_adj),
        cpuset_cpus: r.cpuset_cpus.clone(),
        cpuset_mems: r.cpuset_mems.clone(),
        hugepage_limits: r
            .hugepage_limits
            .iter()
            .map(|h| cri::HugepageLimit {
                page_size: h.page_size.clone(),
                limit: h.limit,
            })
            .collect(),
        unified: r
            .unified
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        memory_swap_limit_in_bytes: r.memory_swap_limit_in_bytes.unwrap_or(0),
    }
}

/// `verbose` info of `ContainerStatus`.
pub fn container_info(rec: &ContainerRecord, handler: &str) -> HashMap<String, String> {
    let info = serde_json::json!({
        "sandboxID": rec.sandbox_id,
        "pid": rec.pid,
        "runtimeHandler": handler,
        "config": rec.config,
        "runtimeSpec": rec.spec,
    });
    HashMap::from([("info".to_string(), info.to_string())])
}

fn uint(v: u64) -> Option<cri::UInt64Value> {
    Some(cri::UInt64Value { value: v })
}

/// `ContainerStats`.
pub fn container_stats(
    rec: &ContainerRecord,
    u: &ContainerUsage,
    root: &str,
) -> cri::ContainerStats {
    cri::ContainerStats {
        attributes: Some(cri::ContainerAttributes {
            id: rec.id.clone(),
            metadata: Some(container_metadata(rec)),
            labels: map(&rec.config.labels),
            annotations: map(&rec.config.annotations),
        }),
        cpu: Some(cri::CpuUsage {
            timestamp: u.timestamp,
            usage_core_nano_seconds: uint(u.cpu_usage_ns),
            usage_nano_cores: None,
        }),
        memory: Some(cri::MemoryUsage {
            timestamp: u.timestamp,
            working_set_bytes: uint(u.memory_working_set_bytes),
            usage_bytes: uint(u.memory_usage_bytes),
            ..Default::default()
        }),
        writable_layer: Some(cri::FilesystemUsage {
            timestamp: u.timestamp,
            fs_id: Some(cri::FilesystemIdentifier {
                mountpoint: root.to_string(),
            }),
            used_bytes: uint(u.writable_bytes),
            inodes_used: uint(u.writable_inodes),
        }),
        swap: None,
    }
}

/// `PodSandboxStats`: the pod's figures are the sum of its containers'.
pub fn pod_sandbox_stats(
    rec: &SandboxRecord,
    containers: Vec<cri::ContainerStats>,
) -> cri::PodSandboxStats {
    let ts = containers
        .iter()
        .filter_map(|c| c.cpu.as_ref().map(|u| u.timestamp))
        .max()
        .unwrap_or_else(crate::pods::now_ns);
    let sum = |f: &dyn Fn(&cri::ContainerStats) -> Option<u64>| -> u64 {
        containers.iter().filter_map(f).sum()
    };
    let cpu = sum(&|c| {
        c.cpu
            .as_ref()?
            .usage_core_nano_seconds
            .as_ref()
            .map(|v| v.value)
    });
    let ws = sum(&|c| {
        c.memory
            .as_ref()?
            .working_set_bytes
            .as_ref()
            .map(|v| v.value)
    });
    let usage = sum(&|c| c.memory.as_ref()?.usage_bytes.as_ref().map(|v| v.value));
    cri::PodSandboxStats {
        attributes: Some(cri::PodSandboxAttributes {
            id: rec.id.clone(),
            metadata: Some(pod_metadata(rec)),
            labels: map(&rec.config.labels),
            annotations: map(&rec.config.annotations),
        }),
        linux: Some(cri::LinuxPodSandboxStats {
            cpu: Some(cri::CpuUsage {
                timestamp: ts,
                usage_core_nano_seconds: uint(cpu),
                usage_nano_cores: None,
            }),
            memory: Some(cri::MemoryUsage {
                timestamp: ts,
                working_set_bytes: uint(ws),
                usage_bytes: uint(usage),
                ..Default::default()
            }),
            network: None,
            process: None,
            containers,
        }),
        windows: None,
    }
}

/// A `GetContainerEvents` message.
pub fn container_event(
    e: &ContainerEvent,
    sandbox: Option<&SandboxRecord>,
    container: Option<&ContainerRecord>,
) -> cri::ContainerEventResponse {
    let kind = match e.kind {
        ContainerEventKind::Created => cri::ContainerEventType::ContainerCreatedEvent,
        ContainerEventKind::Started => cri::ContainerEventType::ContainerStartedEvent,
        ContainerEventKind::Stopped => cri::ContainerEventType::ContainerStoppedEvent,
        ContainerEventKind::Deleted => cri::ContainerEventType::ContainerDeletedEvent,
    };
    cri::ContainerEventResponse {
        container_id: e.container_id.clone(),
        container_event_type: kind as i32,
        created_at: e.at,
        pod_sandbox_status: sandbox.map(|s| pod_sandbox_status(s, &s.ips)),
        containers_statuses: container.map(container_status).into_iter().collect(),
    }
}
