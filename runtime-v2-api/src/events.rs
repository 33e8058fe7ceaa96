//! Task events: the ttrpc server a daemon runs at `TTRPC_ADDRESS`
//! (`containerd.services.events.ttrpc.v1.Events/Forward`), the decoding of containerd's
//! task event payloads into [`TaskEvent`], and the publishing side for shims and tests.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use containerd_shim_protos::events::task as ev;
use containerd_shim_protos::shim::event::Envelope as ProtoEnvelope;
use containerd_shim_protos::shim::events::ForwardRequest;
use containerd_shim_protos::shim_async::{create_events, Events, EventsClient};
use containerd_shim_protos::topics;
use protobuf::well_known_types::any::Any;
use protobuf::well_known_types::empty::Empty;
use protobuf::{Message, MessageField};
use tokio::sync::mpsc;

use crate::convert::{any, from_timestamp, to_timestamp, type_name};
use crate::error::Error;

/// How many decoded events may wait for the daemon before `Forward` applies back-pressure.
const EVENT_QUEUE: usize = 1024;
/// Bound on one publish; a shim retries on its own schedule.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);

/// One event as the daemon sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub namespace: String,
    pub topic: String,
    pub timestamp: Option<SystemTime>,
    pub event: TaskEvent,
}

/// containerd's task events, decoded from the envelope's `Any` by type URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskEvent {
    Create {
        container_id: String,
        bundle: String,
        pid: u32,
    },
    Start {
        container_id: String,
        pid: u32,
    },
    /// `exec_id` is the event's `id`: the exec id, or the container id for the init process.
    Exit {
        container_id: String,
        exec_id: String,
        pid: u32,
        exit_status: u32,
        exited_at: Option<SystemTime>,
    },
    Oom {
        container_id: String,
    },
    ExecAdded {
        container_id: String,
        exec_id: String,
    },
    ExecStarted {
        container_id: String,
        exec_id: String,
        pid: u32,
    },
    Delete {
        container_id: String,
        pid: u32,
        exit_status: u32,
        exited_at: Option<SystemTime>,
    },
    Paused {
        container_id: String,
    },
    Resumed {
        container_id: String,
    },
    Checkpointed {
        container_id: String,
    },
    /// A payload we do not decode (or could not): kept so the daemon can log it.
    Unknown {
        topic: String,
        type_url: String,
    },
}

impl TaskEvent {
    /// containerd's topic for this event (`/tasks/exit`, …).
    pub fn topic(&self) -> &str {
        match self {
            TaskEvent::Create { .. } => topics::TASK_CREATE_EVENT_TOPIC,
            TaskEvent::Start { .. } => topics::TASK_START_EVENT_TOPIC,
            TaskEvent::Exit { .. } => topics::TASK_EXIT_EVENT_TOPIC,
            TaskEvent::Oom { .. } => topics::TASK_OOM_EVENT_TOPIC,
            TaskEvent::ExecAdded { .. } => topics::TASK_EXEC_ADDED_EVENT_TOPIC,
            TaskEvent::ExecStarted { .. } => topics::TASK_EXEC_STARTED_EVENT_TOPIC,
            TaskEvent::Delete { .. } => topics::TASK_DELETE_EVENT_TOPIC,
            TaskEvent::Paused { .. } => topics::TASK_PAUSED_EVENT_TOPIC,
            TaskEvent::Resumed { .. } => topics::TASK_RESUMED_EVENT_TOPIC,
            TaskEvent::Checkpointed { .. } => topics::TASK_CHECKPOINTED_EVENT_TOPIC,
            TaskEvent::Unknown { topic, .. } => topic,
        }
    }

    /// The container this event is about, when it names one.
    pub fn container_id(&self) -> Option<&str> {
        match self {
            TaskEvent::Create { container_id, .. }
            | TaskEvent::Start { container_id, .. }
            | TaskEvent::Exit { container_id, .. }
            | TaskEvent::Oom { container_id }
            | TaskEvent::ExecAdded { container_id, .. }
            | TaskEvent::ExecStarted { container_id, .. }
            | TaskEvent::Delete { container_id, .. }
            | TaskEvent::Paused { container_id }
            | TaskEvent::Resumed { container_id }
            | TaskEvent::Checkpointed { container_id } => Some(container_id),
            TaskEvent::Unknown { .. } => None,
        }
    }

    /// Encodes the payload as containerd does: an `Any` whose type URL is the protobuf full
    /// name (`containerd.events.TaskExit`), as Go's `typeurl` produces for these types.
    pub fn to_any(&self) -> Result<Any, Error> {
        fn pack<M: Message>(m: &M) -> Result<Any, Error> {
            let value = m
                .write_to_bytes()
                .map_err(|e| Error::InvalidArgument(format!("event {}: {e}", M::NAME)))?;
            Ok(any(&format!("containerd.events.{}", M::NAME), value))
        }
        match self.clone() {
            TaskEvent::Create {
                container_id,
                bundle,
                pid,
            } => pack(&ev::TaskCreate {
                container_id,
                bundle,
                pid,
                ..Default::default()
            }),
            TaskEvent::Start { container_id, pid } => pack(&ev::TaskStart {
                container_id,
                pid,
                ..Default::default()
            }),
            TaskEvent::Exit {
                container_id,
                exec_id,
                pid,
                exit_status,
                exited_at,
            } => pack(&ev::TaskExit {
                container_id,
                id: exec_id,
                pid,
                exit_status,
                exited_at: to_timestamp(exited_at),
                ..Default::default()
            }),
            TaskEvent::Oom { container_id } => pack(&ev::TaskOOM {
                container_id,
                ..Default::default()
            }),
            TaskEvent::ExecAdded {
                container_id,
                exec_id,
            } => pack(&ev::TaskExecAdded {
                container_id,
                exec_id,
                ..Default::default()
            }),
            TaskEvent::ExecStarted {
                container_id,
                exec_id,
                pid,
            } => pack(&ev::TaskExecStarted {
                container_id,
                exec_id,
                pid,
                ..Default::default()
            }),
            TaskEvent::Delete {
                container_id,
                pid,
                exit_status,
                exited_at,
            } => pack(&ev::TaskDelete {
                id: container_id.clone(),
                container_id,
                pid,
                exit_status,
                exited_at: to_timestamp(exited_at),
                ..Default::default()
            }),
            TaskEvent::Paused { container_id } => pack(&ev::TaskPaused {
                container_id,
                ..Default::default()
            }),
            TaskEvent::Resumed { container_id } => pack(&ev::TaskResumed {
                container_id,
                ..Default::default()
            }),
            TaskEvent::Checkpointed { container_id } => pack(&ev::TaskCheckpointed {
                container_id,
                ..Default::default()
            }),
            TaskEvent::Unknown { type_url, .. } => Err(Error::InvalidArgument(format!(
                "cannot publish an event of unknown type {type_url:?}"
            ))),
        }
    }

    /// Decodes a payload by its type URL (with or without a `…/` prefix). An unknown type or
    /// a payload that does not decode becomes [`TaskEvent::Unknown`].
    pub fn from_any(topic: &str, payload: &Any) -> TaskEvent {
        match Self::try_from_any(payload) {
            Ok(Some(event)) => event,
            Ok(None) => TaskEvent::Unknown {
                topic: topic.into(),
                type_url: payload.type_url.clone(),
            },
            Err(e) => {
                tracing::warn!(topic, type_url = %payload.type_url, error = %e, "undecodable task event");
                TaskEvent::Unknown {
                    topic: topic.into(),
                    type_url: payload.type_url.clone(),
                }
            }
        }
    }

    fn try_from_any(payload: &Any) -> Result<Option<TaskEvent>, protobuf::Error> {
        let v = &payload.value;
        let event = match type_name(&payload.type_url) {
            "containerd.events.TaskCreate" => {
                let e = ev::TaskCreate::parse_from_bytes(v)?;
                TaskEvent::Create {
                    container_id: e.container_id,
                    bundle: e.bundle,
                    pid: e.pid,
                }
            }
            "containerd.events.TaskStart" => {
                let e = ev::TaskStart::parse_from_bytes(v)?;
                TaskEvent::Start {
                    container_id: e.container_id,
                    pid: e.pid,
                }
            }
            "containerd.events.TaskExit" => {
                let e = ev::TaskExit::parse_from_bytes(v)?;
                TaskEvent::Exit {
                    exited_at: from_timestamp(&e.exited_at),
                    container_id: e.container_id,
                    exec_id: e.id,
                    pid: e.pid,
                    exit_status: e.exit_status,
                }
            }
            "containerd.events.TaskOOM" => TaskEvent::Oom {
                container_id: ev::TaskOOM::parse_from_bytes(v)?.container_id,
            },
            "containerd.events.TaskExecAdded" => {
                let e = ev::TaskExecAdded::parse_from_bytes(v)?;
                TaskEvent::ExecAdded {
                    container_id: e.container_id,
                    exec_id: e.exec_id,
                }
            }
            "containerd.events.TaskExecStarted" => {
                let e = ev::TaskExecStarted::parse_from_bytes(v)?;
                TaskEvent::ExecStarted {
                    container_id: e.container_id,
                    exec_id: e.exec_id,
                    pid: e.pid,
                }
            }
            "containerd.events.TaskDelete" => {
                let e = ev::TaskDelete::parse_from_bytes(v)?;
                TaskEvent::Delete {
                    exited_at: from_timestamp(&e.exited_at),
                    container_id: e.container_id,
                    pid: e.pid,
                    exit_status: e.exit_status,
                }
            }
            "containerd.events.TaskPaused" => TaskEvent::Paused {
                container_id: ev::TaskPaused::parse_from_bytes(v)?.container_id,
            },
            "containerd.events.TaskResumed" => TaskEvent::Resumed {
                container_id: ev::TaskResumed::parse_from_bytes(v)?.container_id,
            },
            "containerd.events.TaskCheckpointed" => TaskEvent::Checkpointed {
                container_id: ev::TaskCheckpointed::parse_from_bytes(v)?.container_id,
            },
            _ => return Ok(None),
        };
        Ok(Some(event))
    }
}

fn decode_envelope(env: ProtoEnvelope) -> Envelope {
    let event = match env.event.as_ref() {
        Some(payload) => TaskEvent::from_any(&env.topic, payload),
        None => TaskEvent::Unknown {
            topic: env.topic.clone(),
            type_url: String::new(),
        },
    };
    Envelope {
        timestamp: from_timestamp(&env.timestamp),
        namespace: env.namespace,
        topic: env.topic,
        event,
    }
}

struct Forwarder {
    tx: mpsc::Sender<Envelope>,
}

#[async_trait::async_trait]
impl Events for Forwarder {
    async fn forward(
        &self,
        _ctx: &ttrpc::asynchronous::TtrpcContext,
        req: ForwardRequest,
    ) -> ttrpc::Result<Empty> {
        let Some(env) = req.envelope.into_option() else {
            return Err(ttrpc::error::get_rpc_status(
                ttrpc::Code::INVALID_ARGUMENT,
                "Forward without an envelope",
            ));
        };
        let envelope = decode_envelope(env);
        tracing::trace!(topic = %envelope.topic, event = ?envelope.event, "shim event");
        // A daemon that stopped listening drops events; the shim must not retry forever.
        if self.tx.send(envelope).await.is_err() {
            tracing::debug!("event receiver closed; dropping shim event");
        }
        Ok(Empty::new())
    }
}

/// The running events server; dropping it without [`EventsServer::shutdown`] leaves the
/// socket file behind (the next `serve_events` removes it).
pub struct EventsServer {
    server: ttrpc::asynchronous::Server,
    path: PathBuf,
}

impl std::fmt::Debug for EventsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventsServer")
            .field("path", &self.path)
            .finish()
    }
}

impl EventsServer {
    /// The socket path (what to pass as `TTRPC_ADDRESS`).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops listening, closes connections and removes the socket file.
    pub async fn shutdown(mut self) {
        if let Err(e) = self.server.shutdown().await {
            tracing::warn!(error = %e, "events server shutdown");
        }
        if let Err(e) = std::fs::remove_file(&self.path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %self.path.display(), error = %e, "removing events socket");
            }
        }
    }
}

/// Serves `containerd.services.events.ttrpc.v1.Events/Forward` on `socket_path` and returns
/// the decoded events. A stale socket file is removed; a socket someone still answers on
/// is refused (`AlreadyExists`): two daemons must not share one state dir.
pub async fn serve_events(
    socket_path: &Path,
) -> Result<(EventsServer, mpsc::Receiver<Envelope>), Error> {
    let shown = socket_path.display().to_string();
    if let Some(parent) = socket_path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| Error::io(format!("creating {}", parent.display()), e))?;
    }
    if socket_path.symlink_metadata().is_ok() {
        if tokio::net::UnixStream::connect(socket_path).await.is_ok() {
            return Err(Error::io(
                format!("events socket {shown}"),
                std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "another process is serving it",
                ),
            ));
        }
        std::fs::remove_file(socket_path)
            .map_err(|e| Error::io(format!("removing stale {shown}"), e))?;
    }
    let (tx, rx) = mpsc::channel(EVENT_QUEUE);
    let service = create_events(Arc::new(Forwarder { tx }));
    let mut server = ttrpc::asynchronous::Server::new()
        .bind(&format!("unix://{shown}"))
        .map_err(|e| {
            Error::io(
                format!("binding {shown}"),
                std::io::Error::other(e.to_string()),
            )
        })?
        .register_service(service);
    restrict_socket(socket_path)?;
    server.start().await.map_err(|e| {
        Error::io(
            format!("serving {shown}"),
            std::io::Error::other(e.to_string()),
        )
    })?;
    Ok((
        EventsServer {
            server,
            path: socket_path.to_path_buf(),
        },
        rx,
    ))
}

/// Only the daemon's user (root) may forge task events.
fn restrict_socket(path: &Path) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| Error::io(format!("chmod {}", path.display()), e))
}

/// The publishing side of `Forward`, as a shim uses it.
#[derive(Clone)]
pub struct EventPublisher {
    client: EventsClient,
    address: String,
}

impl std::fmt::Debug for EventPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventPublisher")
            .field("address", &self.address)
            .finish()
    }
}

impl EventPublisher {
    /// Connects to `TTRPC_ADDRESS`: a socket path (what containerd passes) or `unix://…`.
    pub async fn connect(ttrpc_address: &str) -> Result<Self, Error> {
        let address = if ttrpc_address.contains("://") {
            ttrpc_address.to_string()
        } else {
            format!("unix://{ttrpc_address}")
        };
        let what = format!("events connect {address}");
        let client = tokio::time::timeout(
            PUBLISH_TIMEOUT,
            ttrpc::asynchronous::Client::connect(&address),
        )
        .await
        .map_err(|_| Error::Timeout {
            what: what.clone(),
            after: PUBLISH_TIMEOUT,
        })?
        .map_err(|e| Error::from_ttrpc(&what, e))?;
        Ok(EventPublisher {
            client: EventsClient::new(client),
            address,
        })
    }

    /// Sends one event; retrying is the caller's business (a shim must never block reaping
    /// on it).
    pub async fn publish(
        &self,
        namespace: &str,
        topic: &str,
        event: &TaskEvent,
    ) -> Result<(), Error> {
        let mut env = ProtoEnvelope::new();
        env.timestamp = to_timestamp(Some(SystemTime::now()));
        env.namespace = namespace.to_string();
        env.topic = topic.to_string();
        env.event = MessageField::some(event.to_any()?);
        let mut req = ForwardRequest::new();
        req.envelope = MessageField::some(env);
        let ctx = ttrpc::context::with_duration(PUBLISH_TIMEOUT);
        self.client
            .forward(ctx, &req)
            .await
            .map(drop)
            .map_err(|e| Error::from_ttrpc("containerd.services.events.ttrpc.v1.Events/Forward", e))
    }
}

#[cfg(test)]
mod tests;
