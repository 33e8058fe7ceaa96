//! `runtime.v1.RuntimeService`.

use std::sync::Arc;

use crius_proto::cri::{self, runtime_service_server::RuntimeService};
use tonic::{Request, Response, Status};

use super::{convert, reply, unimplemented};
use crate::container::record::ContainerRecord;
use crate::pods::{PodError, Pods};
use crate::sandbox::record::SandboxRecord;
use crate::status::RuntimeStatus;

/// CRI `runtime_name` reported by `Version`.
pub const RUNTIME_NAME: &str = "crius";
/// CRI API version served.
pub const RUNTIME_API_VERSION: &str = "v1";

/// The RuntimeService implementation.
#[derive(Clone)]
pub struct Runtime {
    status: Arc<RuntimeStatus>,
    pods: Arc<Pods>,
    streaming: Arc<crate::streaming::Streaming>,
}

impl Runtime {
    /// A RuntimeService answering from `status`, running pods through `pods` and handing
    /// out streaming URLs from `streaming`.
    pub fn new(
        status: Arc<RuntimeStatus>,
        pods: Arc<Pods>,
        streaming: Arc<crate::streaming::Streaming>,
    ) -> Self {
        Runtime {
            status,
            pods,
            streaming,
        }
    }

    async fn stats_of(&self, rec: &ContainerRecord) -> Result<cri::ContainerStats, Status> {
        let usage = self.pods.container_usage(rec).await.map_err(to_status)?;
        Ok(reply::container_stats(rec, &usage, &self.pods.rw_root()))
    }

    async fn pod_stats_of(&self, rec: &SandboxRecord) -> Result<cri::PodSandboxStats, Status> {
        let mut containers = Vec::new();
        for c in self.pods.containers_where(|c| c.sandbox_id == rec.id) {
            containers.push(self.stats_of(&c).await?);
        }
        Ok(reply::pod_sandbox_stats(rec, containers))
    }
}

/// The gRPC status of a pod or container error.
pub fn to_status(e: PodError) -> Status {
    match e {
        PodError::InvalidArgument(m) => Status::invalid_argument(m),
        PodError::NotFound(m) => Status::not_found(m),
        PodError::AlreadyExists(m) => Status::already_exists(m),
        PodError::FailedPrecondition(m) => Status::failed_precondition(m),
        PodError::DeadlineExceeded(m) => Status::deadline_exceeded(m),
        PodError::Unavailable(m) => Status::unavailable(m),
        PodError::Internal(m) => Status::internal(m),
    }
}

/// A label selector matches when every key is present with the same value.
pub(super) fn labels_match(
    labels: &std::collections::BTreeMap<String, String>,
    selector: &std::collections::HashMap<String, String>,
) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

type R<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl RuntimeService for Runtime {
    async fn version(&self, _req: Request<cri::VersionRequest>) -> R<cri::VersionResponse> {
        Ok(Response::new(cri::VersionResponse {
            version: "0.1.0".into(),
            runtime_name: RUNTIME_NAME.into(),
            runtime_version: env!("CARGO_PKG_VERSION").into(),
            runtime_api_version: RUNTIME_API_VERSION.into(),
        }))
    }

    async fn status(&self, req: Request<cri::StatusRequest>) -> R<cri::StatusResponse> {
        let report = self.status.report();
        let conditions = report
            .conditions
            .into_iter()
            .map(|c| cri::RuntimeCondition {
                r#type: c.kind.to_string(),
                status: c.ok,
                reason: c.reason,
                message: c.message,
            })
            .collect();
        let info = if req.into_inner().verbose {
            report.verbose_info
        } else {
            Default::default()
        };
        Ok(Response::new(cri::StatusResponse {
            status: Some(cri::RuntimeStatus { conditions }),
            info,
            runtime_handlers: self
                .pods
                .handlers()
                .names()
                .filter(|(_, usable)| *usable)
                .map(|(name, _)| cri::RuntimeHandler {
                    name: name.to_string(),
                    features: Some(cri::RuntimeHandlerFeatures {
                        recursive_read_only_mounts: false,
                        user_namespaces: false,
                    }),
                })
                .collect(),
            features: None,
        }))
    }

    async fn run_pod_sandbox(
        &self,
        r: Request<cri::RunPodSandboxRequest>,
    ) -> R<cri::RunPodSandboxResponse> {
        let r = r.into_inner();
        let config = r
            .config
            .ok_or_else(|| Status::invalid_argument("config is missing"))?;
        let config = convert::pod_config(config)?;
        let id = self
            .pods
            .run_sandbox(config, &r.runtime_handler)
            .await
            .map_err(to_status)?;
        Ok(Response::new(cri::RunPodSandboxResponse {
            pod_sandbox_id: id,
        }))
    }

    async fn stop_pod_sandbox(
        &self,
        r: Request<cri::StopPodSandboxRequest>,
    ) -> R<cri::StopPodSandboxResponse> {
        let id = r.into_inner().pod_sandbox_id;
        self.pods.stop_sandbox(&id).await.map_err(to_status)?;
        Ok(Response::new(cri::StopPodSandboxResponse {}))
    }

    async fn remove_pod_sandbox(
        &self,
        r: Request<cri::RemovePodSandboxRequest>,
    ) -> R<cri::RemovePodSandboxResponse> {
        let id = r.into_inner().pod_sandbox_id;
        self.pods.remove_sandbox(&id).await.map_err(to_status)?;
        Ok(Response::new(cri::RemovePodSandboxResponse {}))
    }

    async fn pod_sandbox_status(
        &self,
        r: Request<cri::PodSandboxStatusRequest>,
    ) -> R<cri::PodSandboxStatusResponse> {
        let r = r.into_inner();
        let rec = self
            .pods
            .sandbox(&r.pod_sandbox_id)
            .map_err(to_status)?
            .ok_or_else(|| {
                Status::not_found(format!("pod sandbox {:?} not found", r.pod_sandbox_id))
            })?;
        Ok(Response::new(cri::PodSandboxStatusResponse {
            status: Some(reply::pod_sandbox_status(
                &rec,
                &self.pods.sandbox_ips(&rec),
            )),
            info: if r.verbose {
                reply::pod_sandbox_info(&rec)
            } else {
                Default::default()
            },
            containers_statuses: Vec::new(),
            timestamp: crate::pods::now_ns(),
        }))
    }

    async fn list_pod_sandbox(
        &self,
        r: Request<cri::ListPodSandboxRequest>,
    ) -> R<cri::ListPodSandboxResponse> {
        let filter = r.into_inner().filter.unwrap_or_default();
        let items = self
            .pods
            .sandboxes()
            .iter()
            .filter(|s| s.id.starts_with(&filter.id))
            .filter(|s| {
                filter
                    .state
                    .as_ref()
                    .is_none_or(|st| reply::sandbox_state_code(s.state) == st.state)
            })
            .filter(|s| labels_match(&s.config.labels, &filter.label_selector))
            .map(reply::pod_sandbox)
            .collect();
        Ok(Response::new(cri::ListPodSandboxResponse { items }))
    }

    async fn create_container(
        &self,
        r: Request<cri::CreateContainerRequest>,
    ) -> R<cri::CreateContainerResponse> {
        let r = r.into_inner();
        if r.pod_sandbox_id.is_empty() {
            return Err(Status::invalid_argument("pod_sandbox_id is empty"));
        }
        let config = r
            .config
            .ok_or_else(|| Status::invalid_argument("config is missing"))?;
        let config = convert::container_config(config)?;
        let id = self
            .pods
            .create_container(&r.pod_sandbox_id, config)
            .await
            .map_err(to_status)?;
        Ok(Response::new(cri::CreateContainerResponse {
            container_id: id,
        }))
    }

    async fn start_container(
        &self,
        r: Request<cri::StartContainerRequest>,
    ) -> R<cri::StartContainerResponse> {
        let id = r.into_inner().container_id;
        self.pods.start_container(&id).await.map_err(to_status)?;
        Ok(Response::new(cri::StartContainerResponse {}))
    }

    async fn stop_container(
        &self,
        r: Request<cri::StopContainerRequest>,
    ) -> R<cri::StopContainerResponse> {
        let r = r.into_inner();
        self.pods
            .stop_container(&r.container_id, r.timeout)
            .await
            .map_err(to_status)?;
        Ok(Response::new(cri::StopContainerResponse {}))
    }

    async fn remove_container(
        &self,
        r: Request<cri::RemoveContainerRequest>,
    ) -> R<cri::RemoveContainerResponse> {
        let id = r.into_inner().container_id;
        self.pods.remove_container(&id).await.map_err(to_status)?;
        Ok(Response::new(cri::RemoveContainerResponse {}))
    }

    async fn list_containers(
        &self,
        r: Request<cri::ListContainersRequest>,
    ) -> R<cri::ListContainersResponse> {
        // Served by `container_list` on the CRI socket; this is the plain form of it.
        let f = r.into_inner().filter.unwrap_or_default();
        let containers = self
            .pods
            .map_containers(|c| super::container_list::selects(&f, c), reply::container);
        Ok(Response::new(cri::ListContainersResponse { containers }))
    }

    async fn container_status(
        &self,
        r: Request<cri::ContainerStatusRequest>,
    ) -> R<cri::ContainerStatusResponse> {
        let r = r.into_inner();
        let rec = self
            .pods
            .container(&r.container_id)
            .map_err(to_status)?
            .ok_or_else(|| {
                Status::not_found(format!("container {:?} not found", r.container_id))
            })?;
        let info = if r.verbose {
            let handler = self
                .pods
                .sandbox(&rec.sandbox_id)
                .ok()
                .flatten()
                .map(|s| s.handler)
                .unwrap_or_default();
            reply::container_info(&rec, &handler)
        } else {
            Default::default()
        };
        Ok(Response::new(cri::ContainerStatusResponse {
            status: Some(reply::container_status(&rec)),
            info,
        }))
    }

    async fn update_container_resources(
        &self,
        r: Request<cri::UpdateContainerResourcesRequest>,
    ) -> R<cri::UpdateContainerResourcesResponse> {
        let r = r.into_inner();
        let linux = r
            .linux
            .ok_or_else(|| Status::invalid_argument("linux is missing"))?;
        let resources = convert::resources(linux)?;
        self.pods
            .update_resources(&r.container_id, resources, r.annotations)
            .await
            .map_err(to_status)?;
        Ok(Response::new(cri::UpdateContainerResourcesResponse {}))
    }

    async fn reopen_container_log(
        &self,
        r: Request<cri::ReopenContainerLogRequest>,
    ) -> R<cri::ReopenContainerLogResponse> {
        let id = r.into_inner().container_id;
        self.pods.reopen_log(&id).await.map_err(to_status)?;
        Ok(Response::new(cri::ReopenContainerLogResponse {}))
    }

    async fn exec_sync(&self, r: Request<cri::ExecSyncRequest>) -> R<cri::ExecSyncResponse> {
        let r = r.into_inner();
        let timeout = std::time::Duration::from_secs(u64::try_from(r.timeout).unwrap_or(0));
        let out = self
            .pods
            .exec_sync(&r.container_id, r.cmd, timeout)
            .await
            .map_err(to_status)?;
        Ok(Response::new(cri::ExecSyncResponse {
            stdout: out.stdout,
            stderr: out.stderr,
            exit_code: out.exit_code,
        }))
    }

    async fn exec(&self, r: Request<cri::ExecRequest>) -> R<cri::ExecResponse> {
        let r = r.into_inner();
        if r.cmd.is_empty() {
            return Err(Status::invalid_argument("cmd is empty"));
        }
        if r.tty && r.stderr {
            return Err(Status::invalid_argument(
                "tty and stderr cannot both be true (a terminal has one output)",
            ));
        }
        if !(r.stdin || r.stdout || r.stderr) {
            return Err(Status::invalid_argument(
                "one of stdin, stdout or stderr must be true",
            ));
        }
        let rec = self
            .pods
            .container(&r.container_id)
            .map_err(to_status)?
            .ok_or_else(|| {
                Status::not_found(format!("container {:?} not found", r.container_id))
            })?;
        if rec.state != crate::container::record::ContainerState::Running {
            return Err(Status::failed_precondition(format!(
                "container {} is not running",
                rec.id
            )));
        }
        let url = self
            .streaming
            .url(crate::streaming::Request::Exec {
                container: rec.id,
                cmd: r.cmd,
                tty: r.tty,
                stdin: r.stdin,
                stdout: r.stdout,
                stderr: r.stderr,
            })
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(cri::ExecResponse { url }))
    }

    async fn attach(&self, r: Request<cri::AttachRequest>) -> R<cri::AttachResponse> {
        let r = r.into_inner();
        if !(r.stdin || r.stdout || r.stderr) {
            return Err(Status::invalid_argument(
                "one of stdin, stdout or stderr must be true",
            ));
        }
        let want = crate::container::attach::AttachStreams {
            stdin: r.stdin,
            stdout: r.stdout,
            stderr: r.stderr,
        };
        let target = self
            .pods
            .attach_target(&r.container_id, want)
            .map_err(to_status)?;
        let url = self
            .streaming
            .url(crate::streaming::Request::Attach {
                container: target.id,
                tty: r.tty,
                stdin: r.stdin,
                stdout: r.stdout,
                stderr: r.stderr && !r.tty,
            })
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(cri::AttachResponse { url }))
    }

    async fn port_forward(
        &self,
        r: Request<cri::PortForwardRequest>,
    ) -> R<cri::PortForwardResponse> {
        let r = r.into_inner();
        let rec = self
            .pods
            .sandbox(&r.pod_sandbox_id)
            .map_err(to_status)?
            .ok_or_else(|| {
                Status::not_found(format!("pod sandbox {:?} not found", r.pod_sandbox_id))
            })?;
        if rec.state != crate::sandbox::record::SandboxState::Ready {
            return Err(Status::failed_precondition(format!(
                "pod sandbox {} is not ready",
                rec.id
            )));
        }
        let mut ports = Vec::with_capacity(r.port.len());
        for p in r.port {
            match u16::try_from(p) {
                Ok(p) if p > 0 => ports.push(p),
                _ => {
                    return Err(Status::invalid_argument(format!(
                        "port: {p} is not a port number"
                    )))
                }
            }
        }
        let url = self
            .streaming
            .url(crate::streaming::Request::PortForward {
                sandbox: rec.id,
                ports,
            })
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(cri::PortForwardResponse { url }))
    }

    async fn container_stats(
        &self,
        r: Request<cri::ContainerStatsRequest>,
    ) -> R<cri::ContainerStatsResponse> {
        let id = r.into_inner().container_id;
        let rec = self
            .pods
            .container(&id)
            .map_err(to_status)?
            .ok_or_else(|| Status::not_found(format!("container {id:?} not found")))?;
        let stats = self.stats_of(&rec).await?;
        Ok(Response::new(cri::ContainerStatsResponse {
            stats: Some(stats),
        }))
    }

    async fn list_container_stats(
        &self,
        r: Request<cri::ListContainerStatsRequest>,
    ) -> R<cri::ListContainerStatsResponse> {
        let f = r.into_inner().filter.unwrap_or_default();
        let recs = self.pods.containers_where(|c| {
            c.id.starts_with(&f.id)
                && c.sandbox_id.starts_with(&f.pod_sandbox_id)
                && labels_match(&c.config.labels, &f.label_selector)
        });
        let mut stats = Vec::with_capacity(recs.len());
        for rec in &recs {
            stats.push(self.stats_of(rec).await?);
        }
        Ok(Response::new(cri::ListContainerStatsResponse { stats }))
    }

    async fn pod_sandbox_stats(
        &self,
        r: Request<cri::PodSandboxStatsRequest>,
    ) -> R<cri::PodSandboxStatsResponse> {
        let id = r.into_inner().pod_sandbox_id;
        let rec = self
            .pods
            .sandbox(&id)
            .map_err(to_status)?
            .ok_or_else(|| Status::not_found(format!("pod sandbox {id:?} not found")))?;
        let stats = self.pod_stats_of(&rec).await?;
        Ok(Response::new(cri::PodSandboxStatsResponse {
            stats: Some(stats),
        }))
    }

    async fn list_pod_sandbox_stats(
        &self,
        r: Request<cri::ListPodSandboxStatsRequest>,
    ) -> R<cri::ListPodSandboxStatsResponse> {
        let f = r.into_inner().filter.unwrap_or_default();
        let mut stats = Vec::new();
        for rec in self.pods.sandboxes() {
            if rec.id.starts_with(&f.id) && labels_match(&rec.config.labels, &f.label_selector) {
                stats.push(self.pod_stats_of(&rec).await?);
            }
        }
        Ok(Response::new(cri::ListPodSandboxStatsResponse { stats }))
    }

    async fn update_runtime_config(
        &self,
        r: Request<cri::UpdateRuntimeConfigRequest>,
    ) -> R<cri::UpdateRuntimeConfigResponse> {
        // The node's pod CIDRs (comma-separated when dual-stack) feed CNI's ipRanges;
        // nothing else is configurable at run time.
        let cidr = r
            .into_inner()
            .runtime_config
            .and_then(|c| c.network_config)
            .map(|n| n.pod_cidr)
            .unwrap_or_default();
        let cidrs: Vec<String> = cidr
            .split(',')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(str::to_string)
            .collect();
        for c in &cidrs {
            let ok = c.split_once('/').is_some_and(|(ip, len)| {
                ip.parse::<std::net::IpAddr>().is_ok() && len.parse::<u8>().is_ok()
            });
            if !ok {
                return Err(Status::invalid_argument(format!(
                    "runtime_config.network_config.pod_cidr: {c:?} is not a CIDR"
                )));
            }
        }
        self.pods.set_pod_cidrs(cidrs);
        Ok(Response::new(cri::UpdateRuntimeConfigResponse {}))
    }

    async fn checkpoint_container(
        &self,
        _r: Request<cri::CheckpointContainerRequest>,
    ) -> R<cri::CheckpointContainerResponse> {
        Err(unimplemented("CheckpointContainer"))
    }

    type GetContainerEventsStream =
        tokio_stream::wrappers::ReceiverStream<Result<cri::ContainerEventResponse, Status>>;

    async fn get_container_events(
        &self,
        _r: Request<cri::GetEventsRequest>,
    ) -> R<Self::GetContainerEventsStream> {
        let mut events = self.pods.subscribe();
        let pods = self.pods.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(128);
        tokio::spawn(async move {
            loop {
                let e = match events.recv().await {
                    Ok(e) => e,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "container events subscriber lagged");
                        continue;
                    }
                    Err(_) => break,
                };
                let sandbox = pods.sandbox(&e.sandbox_id).ok().flatten();
                let container = pods.container(&e.container_id).ok().flatten();
                let msg = reply::container_event(&e, sandbox.as_ref(), container.as_ref());
                if tx.send(Ok(msg)).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(
            rx,
        )))
    }
    async fn list_metric_descriptors(
        &self,
        _r: Request<cri::ListMetricDescriptorsRequest>,
    ) -> R<cri::ListMetricDescriptorsResponse> {
        Err(unimplemented("ListMetricDescriptors"))
    }
    async fn list_pod_sandbox_metrics(
        &self,
        _r: Request<cri::ListPodSandboxMetricsRequest>,
    ) -> R<cri::ListPodSandboxMetricsResponse> {
        Err(unimplemented("ListPodSandboxMetrics"))
    }
    async fn runtime_config(
        &self,
        _r: Request<cri::RuntimeConfigRequest>,
    ) -> R<cri::RuntimeConfigResponse> {
        Err(unimplemented("RuntimeConfig"))
    }
}
