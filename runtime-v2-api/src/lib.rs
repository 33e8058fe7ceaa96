//! The daemon ↔ shim contract of containerd's runtime v2, both sides.
//!
//! - [`launch`]: running a shim binary the way containerd does (`start` argv, bundle cwd,
//!   `TTRPC_ADDRESS`, `NAMESPACE`, the `log` fifo) and its `delete` cleanup;
//! - [`bootstrap`]: what `start` prints (bare address → v2, JSON → the version it states);
//! - [`client`]: a typed async Task client speaking `containerd.task.v2.Task` or `v3`;
//! - [`events`]: the events ttrpc server a daemon runs at `TTRPC_ADDRESS`, and a publisher.
//!
//! Protobuf types stay inside this crate: callers see the domain types of [`types`].

pub mod bootstrap;
pub mod client;
mod convert;
pub mod error;
pub mod events;
pub mod launch;
pub mod stats;
pub mod types;

pub use bootstrap::{parse_bootstrap, task_service_name, Bootstrap, TaskApiVersion};
pub use client::{TaskClient, START_AT_CREATE_METADATA_KEY};
pub use error::{Code, Error};
pub use events::{serve_events, Envelope, EventPublisher, EventsServer, TaskEvent};
pub use launch::{DeleteResult, ShimLaunch, ShimLogReader};
pub use types::{
    ConnectInfo, CreateTask, ExecProcess, ExitStatus, Mount, RuncOptions, Stats, TaskState,
    TaskStatus,
};
