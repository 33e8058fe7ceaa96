//! End-to-end tests and benchmarks for crius.
//!
//! Everything here runs real components: busybox-static bundles under runc, crun and youki,
//! our shim and containerd's Go shim, and containerd 1.6 itself on a temp root. Each fixture
//! owns temp dirs and sockets of its own, so tests run in parallel and clean up after
//! themselves.

pub mod bundle;
pub mod containerd;
pub mod cri;
pub mod encoded;
pub mod floor;
pub mod host;
pub mod image_builder;
pub mod leaks;
pub mod net;
pub mod oci_archive;
pub mod pod;
pub mod registry;
pub mod scenario;
pub mod shim;
pub mod streaming;
