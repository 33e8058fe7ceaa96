//! Containers of a pod: create, start, stop, remove, status, logs.

pub mod config;
pub mod log;
