//! `containerd-shim-crius-v2`: a per-pod runtime v2 supervisor.
//!
//! containerd's runtime v2 shim contract, small: the shim serves the Task service (as
//! `containerd.task.v2.Task` and `v3`) for every container of one pod, drives a
//! runc-compatible runtime (runc, crun, youki) through its command line, is the subreaper of
//! every container process, owns stdio (fifos, files, logging binaries, CRI logs, ptys), and
//! reports exits and OOM kills as events.
//!
//! - [`args`], [`address`], [`start`], [`cleanup`], [`serve`]: the binary's three actions;
//! - [`service`]: the ttrpc edge; [`task`]: what each RPC does;
//! - [`runtime`] and [`command`]: the runtime's command line, run under the [`reaper`];
//! - [`stdio`], [`mount`], [`cgroup`], [`events`]: the pieces a task is made of.

pub mod address;
pub mod args;
pub mod cgroup;
pub mod cleanup;
pub mod command;
pub mod error;
pub mod events;
pub mod log;
pub mod mount;
pub mod reaper;
pub mod runtime;
pub mod serve;
pub mod service;
pub mod start;
pub mod stdio;
pub mod task;
