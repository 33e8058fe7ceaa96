//! The ttrpc edge: containerd's Task service (served under both `containerd.task.v2.Task`
//! and `v3`, which are wire-identical) and crius's small Log service, translated to and from
//! [`crate::task`]'s domain types. Nothing here decides anything.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use containerd_shim_protos::api;
use containerd_shim_protos::shim::oci::Options as RuncOptions;
use containerd_shim_protos::shim_async::{create_task, Task};
use crius_proto::shim::{log, log_ttrpc};
use protobuf::well_known_types::any::Any;
use protobuf::well_known_types::empty::Empty;
use protobuf::well_known_types::timestamp::Timestamp;
use protobuf::{EnumOrUnknown, Message, MessageField};
use ttrpc::asynchronous::{Service, TtrpcContext};

use crate::error::ShimError;
use crate::mount::MountSpec;
use crate::stdio::StdioConfig;
use crate::task::{CreateRequest, ExecRequest, Status, Tasks};

/// The Task service names this shim answers to.
pub const TASK_SERVICES: [&str; 2] = ["containerd.task.v2.Task", "containerd.task.v3.Task"];

/// Every ttrpc service of the shim, keyed by name.
pub fn services(tasks: Tasks) -> HashMap<String, Service> {
    let svc = Arc::new(TaskService {
        tasks: tasks.clone(),
    });
    let mut all = HashMap::new();
    for name in TASK_SERVICES {
        // `create_task` registers under the v3 name only; register its methods under each.
        for (_, service) in create_task(svc.clone()) {
            all.insert(name.to_string(), service);
        }
    }
    all.extend(log_ttrpc::create_log(Arc::new(LogService { tasks })));
    all
}

struct TaskService {
    tasks: Tasks,
}

type TtrpcResult<T> = ttrpc::Result<T>;

fn timestamp(t: Option<SystemTime>) -> MessageField<Timestamp> {
    let Some(t) = t else {
        return MessageField::none();
    };
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let mut ts = Timestamp::new();
    ts.seconds = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
    ts.nanos = d.subsec_nanos() as i32;
    MessageField::some(ts)
}

fn status(s: Status) -> EnumOrUnknown<api::Status> {
    EnumOrUnknown::new(match s {
        Status::Created => api::Status::CREATED,
        Status::Running => api::Status::RUNNING,
        Status::Paused => api::Status::PAUSED,
        Status::Stopped => api::Status::STOPPED,
    })
}

/// The runc options from `CreateTaskRequest.options`; other option types are ignored.
fn runc_options(any: &MessageField<Any>) -> Result<RuncOptions, ShimError> {
    let Some(a) = any.as_ref() else {
        return Ok(RuncOptions::new());
    };
    let name = a.type_url.rsplit('/').next().unwrap_or_default();
    if !(name.ends_with("runc.v1.Options") || name.ends_with("RuncOptions")) {
        return Ok(RuncOptions::new());
    }
    RuncOptions::parse_from_bytes(&a.value)
        .map_err(|e| ShimError::InvalidArgument(format!("options ({}): {e}", a.type_url)))
}

fn json_any(what: &str, any: &MessageField<Any>) -> Result<Vec<u8>, ShimError> {
    any.as_ref()
        .map(|a| a.value.clone())
        .ok_or_else(|| ShimError::InvalidArgument(format!("{what} is missing")))
}

#[async_trait]
impl Task for TaskService {
    async fn state(
        &self,
        _: &TtrpcContext,
        req: api::StateRequest,
    ) -> TtrpcResult<api::StateResponse> {
        let s = self.tasks.state(&req.id, &req.exec_id)?;
        Ok(api::StateResponse {
            id: s.id,
            bundle: s.bundle.display().to_string(),
            pid: s.pid,
            status: status(s.status),
            stdin: s.stdio.stdin,
            stdout: s.stdio.stdout,
            stderr: s.stdio.stderr,
            terminal: s.stdio.terminal,
            exit_status: s.exit_status,
            exited_at: timestamp(s.exited_at),
            exec_id: s.exec_id,
            ..Default::default()
        })
    }

    async fn create(
        &self,
        ctx: &TtrpcContext,
        req: api::CreateTaskRequest,
    ) -> TtrpcResult<api::CreateTaskResponse> {
        if !req.checkpoint.is_empty() {
            return Err(ShimError::Unimplemented(
                "restoring from a checkpoint is not supported by this shim".into(),
            )
            .into());
        }
        let opts = runc_options(&req.options)?;
        let pid = self
            .tasks
            .create(CreateRequest {
                id: req.id,
                bundle: req.bundle.into(),
                rootfs: req
                    .rootfs
                    .into_iter()
                    .map(|m| MountSpec {
                        kind: m.type_,
                        source: m.source,
                        options: m.options,
                    })
                    .collect(),
                stdio: StdioConfig {
                    stdin: req.stdin,
                    stdout: req.stdout,
                    stderr: req.stderr,
                    terminal: req.terminal,
                },
                binary_name: opts.binary_name,
                root: opts.root,
                systemd_cgroup: opts.systemd_cgroup,
                start_at_create: ctx
                    .metadata
                    .get(runtime_v2_api::START_AT_CREATE_METADATA_KEY)
                    .is_some_and(|v| v.iter().any(|v| v == "true")),
            })
            .await?;
        Ok(api::CreateTaskResponse {
            pid,
            ..Default::default()
        })
    }

    async fn start(
        &self,
        _: &TtrpcContext,
        req: api::StartRequest,
    ) -> TtrpcResult<api::StartResponse> {
        let pid = self.tasks.start(&req.id, &req.exec_id).await?;
        Ok(api::StartResponse {
            pid,
            ..Default::default()
        })
    }

    async fn delete(
        &self,
        _: &TtrpcContext,
        req: api::DeleteRequest,
    ) -> TtrpcResult<api::DeleteResponse> {
        let d = self.tasks.delete(&req.id, &req.exec_id).await?;
        Ok(api::DeleteResponse {
            pid: d.pid,
            exit_status: d.exit_status,
            exited_at: timestamp(Some(d.exited_at)),
            ..Default::default()
        })
    }

    async fn pids(
        &self,
        _: &TtrpcContext,
        req: api::PidsRequest,
    ) -> TtrpcResult<api::PidsResponse> {
        let pids = self.tasks.pids(&req.id).await?;
        Ok(api::PidsResponse {
            processes: pids
                .into_iter()
                .map(|pid| api::ProcessInfo {
                    pid,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
    }

    async fn pause(&self, _: &TtrpcContext, req: api::PauseRequest) -> TtrpcResult<Empty> {
        self.tasks.pause(&req.id).await?;
        Ok(Empty::new())
    }

    async fn resume(&self, _: &TtrpcContext, req: api::ResumeRequest) -> TtrpcResult<Empty> {
        self.tasks.resume(&req.id).await?;
        Ok(Empty::new())
    }

    async fn checkpoint(
        &self,
        _: &TtrpcContext,
        _: api::CheckpointTaskRequest,
    ) -> TtrpcResult<Empty> {
        Err(ShimError::Unimplemented(
            "Checkpoint is not supported by containerd-shim-crius-v2 (no CRIU integration)".into(),
        )
        .into())
    }

    async fn kill(&self, _: &TtrpcContext, req: api::KillRequest) -> TtrpcResult<Empty> {
        self.tasks
            .kill(&req.id, &req.exec_id, req.signal, req.all)
            .await?;
        Ok(Empty::new())
    }

    async fn exec(&self, _: &TtrpcContext, req: api::ExecProcessRequest) -> TtrpcResult<Empty> {
        let spec = json_any("spec", &req.spec)?;
        let spec: serde_json::Value = serde_json::from_slice(&spec).map_err(|e| {
            ShimError::InvalidArgument(format!("exec {:?} spec is not JSON: {e}", req.exec_id))
        })?;
        self.tasks.exec(ExecRequest {
            id: req.id,
            exec_id: req.exec_id,
            stdio: StdioConfig {
                stdin: req.stdin,
                stdout: req.stdout,
                stderr: req.stderr,
                terminal: req.terminal,
            },
            spec,
        })?;
        Ok(Empty::new())
    }

    async fn resize_pty(&self, _: &TtrpcContext, req: api::ResizePtyRequest) -> TtrpcResult<Empty> {
        self.tasks
            .resize_pty(&req.id, &req.exec_id, req.width, req.height)?;
        Ok(Empty::new())
    }

    async fn close_io(&self, _: &TtrpcContext, req: api::CloseIORequest) -> TtrpcResult<Empty> {
        self.tasks.close_io(&req.id, &req.exec_id)?;
        Ok(Empty::new())
    }

    async fn update(&self, _: &TtrpcContext, req: api::UpdateTaskRequest) -> TtrpcResult<Empty> {
        let resources = json_any("resources", &req.resources)?;
        self.tasks.update(&req.id, &resources).await?;
        Ok(Empty::new())
    }

    async fn wait(
        &self,
        _: &TtrpcContext,
        req: api::WaitRequest,
    ) -> TtrpcResult<api::WaitResponse> {
        let exit = self.tasks.wait(&req.id, &req.exec_id).await?;
        Ok(api::WaitResponse {
            exit_status: exit.status,
            exited_at: timestamp(Some(exit.at)),
            ..Default::default()
        })
    }

    async fn stats(
        &self,
        _: &TtrpcContext,
        req: api::StatsRequest,
    ) -> TtrpcResult<api::StatsResponse> {
        let stats = self.tasks.stats(&req.id)?;
        Ok(api::StatsResponse {
            stats: MessageField::some(stats),
            ..Default::default()
        })
    }

    async fn connect(
        &self,
        _: &TtrpcContext,
        req: api::ConnectRequest,
    ) -> TtrpcResult<api::ConnectResponse> {
        let (shim_pid, task_pid) = self.tasks.connect(&req.id);
        Ok(api::ConnectResponse {
            shim_pid,
            task_pid,
            version: env!("CARGO_PKG_VERSION").to_string(),
            ..Default::default()
        })
    }

    async fn shutdown(&self, _: &TtrpcContext, req: api::ShutdownRequest) -> TtrpcResult<Empty> {
        self.tasks.shutdown(req.now);
        Ok(Empty::new())
    }
}

struct LogService {
    tasks: Tasks,
}

#[async_trait]
impl log_ttrpc::Log for LogService {
    async fn reopen(
        &self,
        _: &TtrpcContext,
        req: log::ReopenLogRequest,
    ) -> TtrpcResult<log::ReopenLogResponse> {
        self.tasks.reopen_log(&req.id, &req.exec_id)?;
        Ok(log::ReopenLogResponse::new())
    }
}
