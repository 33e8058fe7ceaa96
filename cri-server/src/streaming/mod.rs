//! The streaming server behind `kubectl exec`, `attach` and `port-forward`.
//!
//! CRI's Exec/Attach/PortForward calls only return a URL; the client then connects to it
//! and the runtime serves the session itself. This module holds the pieces of that
//! server; so far the SPDY/3.1 layer the Kubernetes clients speak.

pub mod spdy;
