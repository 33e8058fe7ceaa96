//! crius: a Kubernetes CRI v1 runtime.
//!
//! The daemon serves `runtime.v1.RuntimeService` and `runtime.v1.ImageService` on a unix
//! socket and runs every pod through a runtime v2 shim chosen by its RuntimeClass handler.
//! This crate is the daemon's logic; `src/main.rs` only parses arguments and wires it up.

pub mod config;
pub mod container;
pub mod host;
pub mod image;
pub mod network;
pub mod pods;
pub mod sandbox;
pub mod server;
pub mod spec;
pub mod status;
pub mod store;
pub mod streaming;
