//! The OCI runtime spec (`config.json`) of sandboxes and containers.

pub mod caps;
