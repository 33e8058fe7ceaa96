//! A typed async client for a shim's Task service.
//!
//! It sends raw ttrpc requests with the service name the shim's bootstrap announced
//! (`containerd.task.v2.Task` or `v3`): the generated `TaskClient` of
//! `containerd-shim-protos` hard-codes v3, which containerd 1.6's Go shim does not serve.

use std::collections::HashMap;
use std::time::Duration;

use containerd_shim_protos::api;
use containerd_shim_protos::shim::oci::Options as ProtoRuncOptions;
use protobuf::well_known_types::empty::Empty;
use protobuf::{Message, MessageField};

use crate::bootstrap::{task_service_name, Bootstrap, TaskApiVersion};
use crate::convert::{any, from_timestamp};
use crate::error::Error;
use crate::stats::decode_stats;
use crate::types::{
    ConnectInfo, CreateTask, ExecProcess, ExitStatus, RuncOptions, Stats, TaskState, TaskStatus,
};

/// Type URL containerd uses for the runc options type in `CreateTaskRequest.options`.
pub const RUNC_OPTIONS_TYPE_URL: &str = "containerd.runc.v1.Options";
/// Type URL containerd uses for the OCI `Process` of an exec (JSON value).
pub const OCI_PROCESS_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Process";
/// Type URL containerd uses for OCI `LinuxResources` in `Update` (JSON value).
pub const OCI_LINUX_RESOURCES_TYPE_URL: &str =
    "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources";
/// crius's own log service on the shim's socket.
pub const LOG_SERVICE: &str = "crius.shim.v1.Log";
/// ttrpc metadata key containerd uses to pass the namespace to shims.
pub const NAMESPACE_METADATA_KEY: &str = "containerd-namespace-ttrpc";

/// The ttrpc request metadata on `Create` that asks a crius shim to start the task at
/// once (see [`CreateTask::start_at_create`]). Request metadata, not the bundle's spec:
/// it is about this call, and shims that do not know it never see a difference.
pub const START_AT_CREATE_METADATA_KEY: &str = "io.crius.start-at-create";

/// Default timeout of unary RPCs other than `Wait`. Generous: `Create` and `Exec` run the
/// low-level runtime, which is slow on a loaded 2-core machine.
pub const DEFAULT_RPC_TIMEOUT: Duration = Duration::from_secs(30);

/// A connection to one shim; cheap to clone (clones share the connection).
#[derive(Clone)]
pub struct TaskClient {
    client: ttrpc::asynchronous::Client,
    version: TaskApiVersion,
    namespace: Option<String>,
    rpc_timeout: Duration,
}

impl std::fmt::Debug for TaskClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskClient")
            .field("version", &self.version)
            .field("namespace", &self.namespace)
            .field("rpc_timeout", &self.rpc_timeout)
            .finish()
    }
}

impl TaskClient {
    /// Connects to the address a shim printed. `timeout` bounds the socket connect only;
    /// use [`TaskClient::connect_info`] to check that the shim actually answers.
    pub async fn connect(bootstrap: &Bootstrap, timeout: Duration) -> Result<Self, Error> {
        if bootstrap.protocol != "ttrpc" {
            return Err(Error::Unsupported(format!(
                "shim protocol {:?} is not supported, only ttrpc",
                bootstrap.protocol
            )));
        }
        let address = if bootstrap.address.starts_with('/') {
            format!("unix://{}", bootstrap.address)
        } else {
            bootstrap.address.clone()
        };
        let what = format!("connect {address}");
        let client = tokio::time::timeout(timeout, ttrpc::asynchronous::Client::connect(&address))
            .await
            .map_err(|_| Error::Timeout {
                what: what.clone(),
                after: timeout,
            })?
            .map_err(|e| Error::from_ttrpc(&what, e))?;
        Ok(TaskClient {
            client,
            version: bootstrap.version,
            namespace: None,
            rpc_timeout: DEFAULT_RPC_TIMEOUT,
        })
    }

    /// Sends the namespace as containerd does (ttrpc metadata), for shims that read it.
    pub fn with_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    /// Overrides [`DEFAULT_RPC_TIMEOUT`] for every unary RPC but `Wait`.
    pub fn with_rpc_timeout(mut self, timeout: Duration) -> Self {
        self.rpc_timeout = timeout;
        self
    }

    /// The Task API version this client speaks.
    pub fn version(&self) -> TaskApiVersion {
        self.version
    }

    pub async fn create(&self, req: CreateTask) -> Result<u32, Error> {
        let mut r = api::CreateTaskRequest::new();
        r.id = req.id;
        r.bundle = req.bundle.to_string_lossy().into_owned();
        r.rootfs = req
            .rootfs
            .into_iter()
            .map(|m| {
                let mut pm = api::Mount::new();
                pm.type_ = m.kind;
                pm.source = m.source;
                pm.target = m.target;
                pm.options = m.options;
                pm
            })
            .collect();
        r.terminal = req.terminal;
        r.stdin = req.stdin;
        r.stdout = req.stdout;
        r.stderr = req.stderr;
        if let Some(opts) = req.options {
            r.options = MessageField::some(runc_options_any(&opts)?);
        }
        let metadata: &[(&str, &str)] = if req.start_at_create {
            &[(START_AT_CREATE_METADATA_KEY, "true")]
        } else {
            &[]
        };
        let resp: api::CreateTaskResponse = self
            .call_service_with(
                task_service_name(self.version),
                "Create",
                &r,
                Some(self.rpc_timeout),
                metadata,
            )
            .await?;
        Ok(resp.pid)
    }

    pub async fn start(&self, id: &str, exec_id: &str) -> Result<u32, Error> {
        let mut r = api::StartRequest::new();
        r.id = id.into();
        r.exec_id = exec_id.into();
        let resp: api::StartResponse = self.unary("Start", &r).await?;
        Ok(resp.pid)
    }

    pub async fn state(&self, id: &str, exec_id: &str) -> Result<TaskState, Error> {
        let mut r = api::StateRequest::new();
        r.id = id.into();
        r.exec_id = exec_id.into();
        let s: api::StateResponse = self.unary("State", &r).await?;
        Ok(TaskState {
            status: status_from_proto(s.status.value()),
            exited_at: from_timestamp(&s.exited_at),
            id: s.id,
            exec_id: s.exec_id,
            bundle: s.bundle,
            pid: s.pid,
            stdin: s.stdin,
            stdout: s.stdout,
            stderr: s.stderr,
            terminal: s.terminal,
            exit_status: s.exit_status,
        })
    }

    pub async fn pids(&self, id: &str) -> Result<Vec<u32>, Error> {
        let mut r = api::PidsRequest::new();
        r.id = id.into();
        let resp: api::PidsResponse = self.unary("Pids", &r).await?;
        Ok(resp.processes.iter().map(|p| p.pid).collect())
    }

    pub async fn kill(&self, id: &str, exec_id: &str, signal: u32, all: bool) -> Result<(), Error> {
        let mut r = api::KillRequest::new();
        r.id = id.into();
        r.exec_id = exec_id.into();
        r.signal = signal;
        r.all = all;
        self.unary::<_, Empty>("Kill", &r).await.map(drop)
    }

    pub async fn exec(&self, req: ExecProcess) -> Result<(), Error> {
        let spec = serde_json::to_vec(&req.spec)
            .map_err(|e| Error::InvalidArgument(format!("exec process spec: {e}")))?;
        let mut r = api::ExecProcessRequest::new();
        r.id = req.id;
        r.exec_id = req.exec_id;
        r.terminal = req.terminal;
        r.stdin = req.stdin;
        r.stdout = req.stdout;
        r.stderr = req.stderr;
        r.spec = MessageField::some(any(OCI_PROCESS_TYPE_URL, spec));
        self.unary::<_, Empty>("Exec", &r).await.map(drop)
    }

    pub async fn resize_pty(
        &self,
        id: &str,
        exec_id: &str,
        width: u32,
        height: u32,
    ) -> Result<(), Error> {
        let mut r = api::ResizePtyRequest::new();
        r.id = id.into();
        r.exec_id = exec_id.into();
        r.width = width;
        r.height = height;
        self.unary::<_, Empty>("ResizePty", &r).await.map(drop)
    }

    /// Closes the process's stdin (`CloseIO` with `stdin = true`).
    pub async fn close_io(&self, id: &str, exec_id: &str) -> Result<(), Error> {
        let mut r = api::CloseIORequest::new();
        r.id = id.into();
        r.exec_id = exec_id.into();
        r.stdin = true;
        self.unary::<_, Empty>("CloseIO", &r).await.map(drop)
    }

    pub async fn pause(&self, id: &str) -> Result<(), Error> {
        let mut r = api::PauseRequest::new();
        r.id = id.into();
        self.unary::<_, Empty>("Pause", &r).await.map(drop)
    }

    pub async fn resume(&self, id: &str) -> Result<(), Error> {
        let mut r = api::ResumeRequest::new();
        r.id = id.into();
        self.unary::<_, Empty>("Resume", &r).await.map(drop)
    }

    /// Updates resources; `resources_json` is an OCI `LinuxResources` object, sent as JSON
    /// in an `Any` exactly as containerd does.
    pub async fn update(
        &self,
        id: &str,
        resources_json: &serde_json::Value,
        annotations: HashMap<String, String>,
    ) -> Result<(), Error> {
        let value = serde_json::to_vec(resources_json)
            .map_err(|e| Error::InvalidArgument(format!("update resources: {e}")))?;
        let mut r = api::UpdateTaskRequest::new();
        r.id = id.into();
        r.resources = MessageField::some(any(OCI_LINUX_RESOURCES_TYPE_URL, value));
        r.annotations = annotations;
        self.unary::<_, Empty>("Update", &r).await.map(drop)
    }

    /// Waits for the process to exit; no RPC timeout (a container may run for months).
    /// The pid is not part of `WaitResponse` and is reported as 0.
    pub async fn wait(&self, id: &str, exec_id: &str) -> Result<ExitStatus, Error> {
        let mut r = api::WaitRequest::new();
        r.id = id.into();
        r.exec_id = exec_id.into();
        let resp: api::WaitResponse = self.call("Wait", &r, None).await?;
        Ok(ExitStatus {
            pid: 0,
            code: resp.exit_status,
            exited_at: from_timestamp(&resp.exited_at),
        })
    }

    pub async fn stats(&self, id: &str) -> Result<Stats, Error> {
        let mut r = api::StatsRequest::new();
        r.id = id.into();
        let resp: api::StatsResponse = self.unary("Stats", &r).await?;
        let any = resp.stats.as_ref().ok_or_else(|| {
            Error::Malformed(format!("shim Stats for {id}: no metrics in the answer"))
        })?;
        decode_stats(any)
    }

    pub async fn delete(&self, id: &str, exec_id: &str) -> Result<ExitStatus, Error> {
        let mut r = api::DeleteRequest::new();
        r.id = id.into();
        r.exec_id = exec_id.into();
        let resp: api::DeleteResponse = self.unary("Delete", &r).await?;
        Ok(ExitStatus {
            pid: resp.pid,
            code: resp.exit_status,
            exited_at: from_timestamp(&resp.exited_at),
        })
    }

    /// The `Connect` RPC: the cheapest "is this shim alive and serving" probe.
    pub async fn connect_info(&self, id: &str) -> Result<ConnectInfo, Error> {
        let mut r = api::ConnectRequest::new();
        r.id = id.into();
        let resp: api::ConnectResponse = self.unary("Connect", &r).await?;
        Ok(ConnectInfo {
            shim_pid: resp.shim_pid,
            task_pid: resp.task_pid,
            version: resp.version,
        })
    }

    /// Asks the shim to exit. A shim that exits may close the connection before it
    /// answers: a transport error here means success.
    pub async fn shutdown(&self, id: &str, now: bool) -> Result<(), Error> {
        let mut r = api::ShutdownRequest::new();
        r.id = id.into();
        r.now = now;
        match self.unary::<_, Empty>("Shutdown", &r).await {
            Ok(_) => Ok(()),
            Err(Error::Transport { message, .. }) => {
                tracing::debug!(id, %message, "shim closed the connection on Shutdown");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    async fn unary<Req: Message, Resp: Message>(
        &self,
        method: &str,
        req: &Req,
    ) -> Result<Resp, Error> {
        self.call(method, req, Some(self.rpc_timeout)).await
    }

    async fn call<Req: Message, Resp: Message>(
        &self,
        method: &str,
        req: &Req,
        timeout: Option<Duration>,
    ) -> Result<Resp, Error> {
        self.call_service(task_service_name(self.version), method, req, timeout)
            .await
    }

    /// Asks a crius shim to reopen a CRI log file (`crius.shim.v1.Log/Reopen`), after the
    /// kubelet renamed it. Foreign shims answer `Unimplemented`.
    pub async fn reopen_log(&self, id: &str, exec_id: &str) -> Result<(), Error> {
        let mut r = crius_proto::shim::log::ReopenLogRequest::new();
        r.id = id.into();
        r.exec_id = exec_id.into();
        let _: crius_proto::shim::log::ReopenLogResponse = self
            .call_service(LOG_SERVICE, "Reopen", &r, Some(self.rpc_timeout))
            .await?;
        Ok(())
    }

    async fn call_service<Req: Message, Resp: Message>(
        &self,
        service: &str,
        method: &str,
        req: &Req,
        timeout: Option<Duration>,
    ) -> Result<Resp, Error> {
        self.call_service_with(service, method, req, timeout, &[])
            .await
    }

    async fn call_service_with<Req: Message, Resp: Message>(
        &self,
        service: &str,
        method: &str,
        req: &Req,
        timeout: Option<Duration>,
        metadata: &[(&str, &str)],
    ) -> Result<Resp, Error> {
        let what = format!("{service}/{method}");
        let mut request = ttrpc::Request::new();
        request.service = service.to_string();
        request.method = method.to_string();
        request.payload = req
            .write_to_bytes()
            .map_err(|e| Error::InvalidArgument(format!("{what}: cannot encode request: {e}")))?;
        if let Some(t) = timeout {
            request.timeout_nano = i64::try_from(t.as_nanos()).unwrap_or(i64::MAX);
        }
        if let Some(ns) = &self.namespace {
            let mut kv = ttrpc::proto::KeyValue::new();
            kv.key = NAMESPACE_METADATA_KEY.to_string();
            kv.value = ns.clone();
            request.metadata.push(kv);
        }
        for (key, value) in metadata {
            let mut kv = ttrpc::proto::KeyValue::new();
            kv.key = key.to_string();
            kv.value = value.to_string();
            request.metadata.push(kv);
        }
        let fut = self.client.request(request);
        let response = match timeout {
            // The ttrpc client enforces timeout_nano itself; the outer timer also bounds a
            // request stuck before it reaches the wire.
            Some(t) => tokio::time::timeout(t + Duration::from_millis(100), fut)
                .await
                .map_err(|_| Error::Timeout {
                    what: what.clone(),
                    after: t,
                })?,
            None => fut.await,
        }
        .map_err(|e| Error::from_ttrpc(&what, e))?;
        Resp::parse_from_bytes(&response.payload)
            .map_err(|e| Error::Malformed(format!("{what}: cannot decode answer: {e}")))
    }
}

/// The runc options as containerd puts them in `CreateTaskRequest.options`.
pub(crate) fn runc_options_any(
    opts: &RuncOptions,
) -> Result<protobuf::well_known_types::any::Any, Error> {
    let mut o = ProtoRuncOptions::new();
    o.binary_name = opts.binary_name.clone();
    o.root = opts.root.clone();
    o.systemd_cgroup = opts.systemd_cgroup;
    let value = o
        .write_to_bytes()
        .map_err(|e| Error::InvalidArgument(format!("runc options: {e}")))?;
    Ok(any(RUNC_OPTIONS_TYPE_URL, value))
}

impl RuncOptions {
    /// The bytes containerd writes to a shim's stdin on `start`: the options wrapped in a
    /// protobuf `Any` (the Go shim reads them with `ReadRuntimeOptions`). Use as
    /// [`crate::ShimLaunch::options`].
    pub fn to_start_stdin(&self) -> Result<Vec<u8>, Error> {
        runc_options_any(self)?
            .write_to_bytes()
            .map_err(|e| Error::InvalidArgument(format!("runc options: {e}")))
    }

    /// Decodes the runc options from an `Any`-wrapped encoding (shim side of
    /// [`RuncOptions::to_start_stdin`]); `None` for another options type.
    pub fn from_any_bytes(bytes: &[u8]) -> Result<Option<RuncOptions>, Error> {
        let a = protobuf::well_known_types::any::Any::parse_from_bytes(bytes)
            .map_err(|e| Error::Malformed(format!("runtime options: {e}")))?;
        if crate::convert::type_name(&a.type_url) != RUNC_OPTIONS_TYPE_URL {
            return Ok(None);
        }
        let o = ProtoRuncOptions::parse_from_bytes(&a.value)
            .map_err(|e| Error::Malformed(format!("runc options: {e}")))?;
        Ok(Some(RuncOptions {
            binary_name: o.binary_name,
            root: o.root,
            systemd_cgroup: o.systemd_cgroup,
        }))
    }
}

fn status_from_proto(v: i32) -> TaskStatus {
    match v {
        1 => TaskStatus::Created,
        2 => TaskStatus::Running,
        3 => TaskStatus::Stopped,
        4 => TaskStatus::Paused,
        5 => TaskStatus::Pausing,
        _ => TaskStatus::Unknown,
    }
}
