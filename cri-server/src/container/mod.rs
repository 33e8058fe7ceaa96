//! Containers of a pod: create, start, stop, remove, status, logs.

pub mod config;
mod create;
pub mod exec;
pub mod log;
pub mod record;
mod remove;
mod start;
pub mod stats;
mod stop;
mod update;
