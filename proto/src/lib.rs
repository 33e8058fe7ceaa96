//! Wire types for crius.
//!
//! * [`cri`]: CRI v1 (`runtime.v1`) messages, tonic clients and servers, re-exported from the
//!   `k8s-cri` crate so that the `.proto` files are not copied into this tree.
//! * [`shim`]: crius's own small ttrpc services that `containerd-shim-crius-v2` serves beside
//!   the containerd Task API (log reopen for `ReopenContainerLog`).
//!
//! Nothing here is hand-written logic: domain code converts these types at the edge.

/// CRI v1: `runtime.v1.RuntimeService` and `runtime.v1.ImageService`.
#[cfg(feature = "cri")]
pub mod cri {
    pub use k8s_cri::v1::*;
}

/// crius's shim-side ttrpc services.
#[cfg(feature = "shim")]
pub mod shim {
    #![allow(
        clippy::all,
        clippy::unwrap_used,
        unused,
        non_upper_case_globals,
        missing_docs
    )]
    /// Messages of `crius.shim.v1.Log`.
    pub mod log {
        include!(concat!(env!("OUT_DIR"), "/shim/log.rs"));
    }
    /// ttrpc client and server of `crius.shim.v1.Log`.
    pub mod log_ttrpc {
        include!(concat!(env!("OUT_DIR"), "/shim/log_ttrpc.rs"));
    }
}
