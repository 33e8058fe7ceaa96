//! `runtime.v1.RuntimeService`.

use std::sync::Arc;

use crius_proto::cri::{self, runtime_service_server::RuntimeService};
use tonic::{Request, Response, Status};

use super::unimplemented;
use crate::status::RuntimeStatus;

/// CRI `runtime_name` reported by `Version`.
pub const RUNTIME_NAME: &str = "crius";
/// CRI API version served.
pub const RUNTIME_API_VERSION: &str = "v1";

/// The RuntimeService implementation.
#[derive(Clone)]
pub struct Runtime {
    status: Arc<RuntimeStatus>,
}

impl Runtime {
    /// A RuntimeService answering from `status`.
    pub fn new(status: Arc<RuntimeStatus>) -> Self {
        Runtime { status }
    }
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
            runtime_handlers: Vec::new(),
            features: None,
        }))
    }

    async fn run_pod_sandbox(
        &self,
        _r: Request<cri::RunPodSandboxRequest>,
    ) -> R<cri::RunPodSandboxResponse> {
        Err(unimplemented("RunPodSandbox"))
    }
    async fn stop_pod_sandbox(
        &self,
        _r: Request<cri::StopPodSandboxRequest>,
    ) -> R<cri::StopPodSandboxResponse> {
        Err(unimplemented("StopPodSandbox"))
    }
    async fn remove_pod_sandbox(
        &self,
        _r: Request<cri::RemovePodSandboxRequest>,
    ) -> R<cri::RemovePodSandboxResponse> {
        Err(unimplemented("RemovePodSandbox"))
    }
    async fn pod_sandbox_status(
        &self,
        _r: Request<cri::PodSandboxStatusRequest>,
    ) -> R<cri::PodSandboxStatusResponse> {
        Err(unimplemented("PodSandboxStatus"))
    }
    async fn list_pod_sandbox(
        &self,
        _r: Request<cri::ListPodSandboxRequest>,
    ) -> R<cri::ListPodSandboxResponse> {
        Err(unimplemented("ListPodSandbox"))
    }
    async fn create_container(
        &self,
        _r: Request<cri::CreateContainerRequest>,
    ) -> R<cri::CreateContainerResponse> {
        Err(unimplemented("CreateContainer"))
    }
    async fn start_container(
        &self,
        _r: Request<cri::StartContainerRequest>,
    ) -> R<cri::StartContainerResponse> {
        Err(unimplemented("StartContainer"))
    }
    async fn stop_container(
        &self,
        _r: Request<cri::StopContainerRequest>,
    ) -> R<cri::StopContainerResponse> {
        Err(unimplemented("StopContainer"))
    }
    async fn remove_container(
        &self,
        _r: Request<cri::RemoveContainerRequest>,
    ) -> R<cri::RemoveContainerResponse> {
        Err(unimplemented("RemoveContainer"))
    }
    async fn list_containers(
        &self,
        _r: Request<cri::ListContainersRequest>,
    ) -> R<cri::ListContainersResponse> {
        Err(unimplemented("ListContainers"))
    }
    async fn container_status(
        &self,
        _r: Request<cri::ContainerStatusRequest>,
    ) -> R<cri::ContainerStatusResponse> {
        Err(unimplemented("ContainerStatus"))
    }
    async fn update_container_resources(
        &self,
        _r: Request<cri::UpdateContainerResourcesRequest>,
    ) -> R<cri::UpdateContainerResourcesResponse> {
        Err(unimplemented("UpdateContainerResources"))
    }
    async fn reopen_container_log(
        &self,
        _r: Request<cri::ReopenContainerLogRequest>,
    ) -> R<cri::ReopenContainerLogResponse> {
        Err(unimplemented("ReopenContainerLog"))
    }
    async fn exec_sync(&self, _r: Request<cri::ExecSyncRequest>) -> R<cri::ExecSyncResponse> {
        Err(unimplemented("ExecSync"))
    }
    async fn exec(&self, _r: Request<cri::ExecRequest>) -> R<cri::ExecResponse> {
        Err(unimplemented("Exec"))
    }
    async fn attach(&self, _r: Request<cri::AttachRequest>) -> R<cri::AttachResponse> {
        Err(unimplemented("Attach"))
    }
    async fn port_forward(
        &self,
        _r: Request<cri::PortForwardRequest>,
    ) -> R<cri::PortForwardResponse> {
        Err(unimplemented("PortForward"))
    }
    async fn container_stats(
        &self,
        _r: Request<cri::ContainerStatsRequest>,
    ) -> R<cri::ContainerStatsResponse> {
        Err(unimplemented("ContainerStats"))
    }
    async fn list_container_stats(
        &self,
        _r: Request<cri::ListContainerStatsRequest>,
    ) -> R<cri::ListContainerStatsResponse> {
        Err(unimplemented("ListContainerStats"))
    }
    async fn pod_sandbox_stats(
        &self,
        _r: Request<cri::PodSandboxStatsRequest>,
    ) -> R<cri::PodSandboxStatsResponse> {
        Err(unimplemented("PodSandboxStats"))
    }
    async fn list_pod_sandbox_stats(
        &self,
        _r: Request<cri::ListPodSandboxStatsRequest>,
    ) -> R<cri::ListPodSandboxStatsResponse> {
        Err(unimplemented("ListPodSandboxStats"))
    }
    async fn update_runtime_config(
        &self,
        _r: Request<cri::UpdateRuntimeConfigRequest>,
    ) -> R<cri::UpdateRuntimeConfigResponse> {
        Err(unimplemented("UpdateRuntimeConfig"))
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
        Err(unimplemented("GetContainerEvents"))
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
