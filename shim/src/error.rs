//! The shim's errors and the ttrpc status each one answers with. Every message names what it
//! is about (the task, the file, the binary) so that the daemon can pass it on unchanged.

use ttrpc::Code;

/// An error answered to a Task RPC.
#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    /// No such task or exec process.
    #[error("{0}")]
    NotFound(String),
    /// A task or exec id that is already in use.
    #[error("{0}")]
    AlreadyExists(String),
    /// A request that can never succeed as written.
    #[error("{0}")]
    InvalidArgument(String),
    /// A request made in the wrong state, or needing something absent (a runtime binary).
    #[error("{0}")]
    FailedPrecondition(String),
    /// A feature this shim does not offer.
    #[error("{0}")]
    Unimplemented(String),
    /// Anything else: the runtime failed, a syscall failed.
    #[error("{0}")]
    Internal(String),
}

impl ShimError {
    /// The ttrpc (gRPC) code for this error.
    pub fn code(&self) -> Code {
        match self {
            ShimError::NotFound(_) => Code::NOT_FOUND,
            ShimError::AlreadyExists(_) => Code::ALREADY_EXISTS,
            ShimError::InvalidArgument(_) => Code::INVALID_ARGUMENT,
            ShimError::FailedPrecondition(_) => Code::FAILED_PRECONDITION,
            ShimError::Unimplemented(_) => Code::UNIMPLEMENTED,
            ShimError::Internal(_) => Code::UNKNOWN,
        }
    }

    /// An I/O failure of `what`.
    pub fn io(what: impl std::fmt::Display, e: std::io::Error) -> ShimError {
        ShimError::Internal(format!("{what}: {e}"))
    }
}

impl From<ShimError> for ttrpc::Error {
    fn from(e: ShimError) -> Self {
        ttrpc::Error::RpcStatus(ttrpc::get_status(e.code(), e.to_string()))
    }
}

/// Result of a shim operation.
pub type Result<T> = std::result::Result<T, ShimError>;
