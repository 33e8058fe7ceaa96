//! One error type for the whole contract, with a gRPC-like [`Code`] so that callers (the
//! CRI server, the handlers) can map shim failures onto CRI status codes without parsing
//! messages.

use std::time::Duration;

/// The subset of gRPC status codes the daemon distinguishes. Shims speak gRPC codes on
/// the wire (ttrpc reuses `google.rpc.Code`); the ones the CRI contract does not care
/// about collapse into [`Code::Unknown`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    NotFound,
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    DeadlineExceeded,
    Unavailable,
    Unimplemented,
    Internal,
    Unknown,
}

impl Code {
    /// Maps a numeric gRPC/ttrpc status code.
    pub fn from_grpc(code: i32) -> Code {
        match code {
            3 => Code::InvalidArgument,
            4 => Code::DeadlineExceeded,
            5 => Code::NotFound,
            6 => Code::AlreadyExists,
            9 => Code::FailedPrecondition,
            12 => Code::Unimplemented,
            13 => Code::Internal,
            14 => Code::Unavailable,
            _ => Code::Unknown,
        }
    }

    /// The numeric gRPC code, for callers that build a status from it.
    pub fn as_grpc(self) -> i32 {
        match self {
            Code::InvalidArgument => 3,
            Code::DeadlineExceeded => 4,
            Code::NotFound => 5,
            Code::AlreadyExists => 6,
            Code::FailedPrecondition => 9,
            Code::Unimplemented => 12,
            Code::Internal => 13,
            Code::Unavailable => 14,
            Code::Unknown => 2,
        }
    }
}

/// Everything that can go wrong between the daemon and a shim.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The shim answered the RPC with a non-OK status; `message` is the shim's own text.
    #[error("shim {method}: {message} ({code:?})")]
    Rpc {
        method: String,
        code: Code,
        /// The raw gRPC code as sent, for logging codes [`Code`] folds into `Unknown`.
        grpc_code: i32,
        message: String,
    },
    /// The shim could not be reached or dropped the connection.
    #[error("shim {what}: connection failed: {message}")]
    Transport { what: String, message: String },
    /// An operation did not finish in time.
    #[error("{what}: timed out after {after:?}")]
    Timeout { what: String, after: Duration },
    /// The shim binary ran and failed (`start` or `delete`).
    #[error("shim {binary} {action} failed ({status}): {stderr}")]
    ShimFailed {
        binary: String,
        action: &'static str,
        status: String,
        stderr: String,
    },
    /// A local system call failed (spawning, fifo, socket files).
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// The shim sent something we cannot understand (bootstrap, protobuf, stats).
    #[error("{0}")]
    Malformed(String),
    /// Something the peer asked for that this side does not support (e.g. grpc bootstrap).
    #[error("{0}")]
    Unsupported(String),
    /// The caller passed something we cannot encode or send.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

impl Error {
    /// The status code a caller should report for this error.
    pub fn code(&self) -> Code {
        match self {
            Error::Rpc { code, .. } => *code,
            Error::Transport { .. } => Code::Unavailable,
            Error::Timeout { .. } => Code::DeadlineExceeded,
            Error::ShimFailed { .. } => Code::Internal,
            Error::Io { source, .. } => match source.kind() {
                std::io::ErrorKind::NotFound => Code::NotFound,
                std::io::ErrorKind::AlreadyExists => Code::AlreadyExists,
                std::io::ErrorKind::PermissionDenied => Code::FailedPrecondition,
                _ => Code::Internal,
            },
            Error::Malformed(_) => Code::Internal,
            Error::Unsupported(_) => Code::Unimplemented,
            Error::InvalidArgument(_) => Code::InvalidArgument,
        }
    }

    /// The shim's own message for an RPC error, the full display otherwise.
    pub fn message(&self) -> String {
        match self {
            Error::Rpc { message, .. } => message.clone(),
            other => other.to_string(),
        }
    }

    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            what: what.into(),
            source,
        }
    }

    /// Converts a ttrpc error from the RPC `what` (e.g. `containerd.task.v2.Task/Create`).
    pub(crate) fn from_ttrpc(what: &str, err: ttrpc::Error) -> Error {
        match err {
            ttrpc::Error::RpcStatus(status) => {
                let grpc_code = status.code.value();
                Error::Rpc {
                    method: what.to_string(),
                    code: Code::from_grpc(grpc_code),
                    grpc_code,
                    message: status.message,
                }
            }
            // ttrpc reports its own deadline as a plain string; keep it a timeout.
            ttrpc::Error::Others(msg) if msg.contains("deadline elapsed") => Error::Rpc {
                method: what.to_string(),
                code: Code::DeadlineExceeded,
                grpc_code: 4,
                message: msg,
            },
            ttrpc::Error::Others(msg) if msg.starts_with("Unpack response error") => {
                Error::Malformed(format!("shim {what}: {msg}"))
            }
            other => Error::Transport {
                what: what.to_string(),
                message: other.to_string(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_codes_round_trip() {
        for c in [
            Code::NotFound,
            Code::AlreadyExists,
            Code::FailedPrecondition,
            Code::InvalidArgument,
            Code::DeadlineExceeded,
            Code::Unavailable,
            Code::Unimplemented,
            Code::Internal,
            Code::Unknown,
        ] {
            assert_eq!(Code::from_grpc(c.as_grpc()), c);
        }
        assert_eq!(Code::from_grpc(7), Code::Unknown);
    }

    #[test]
    fn rpc_status_keeps_message() {
        let e = Error::from_ttrpc(
            "containerd.task.v2.Task/State",
            ttrpc::Error::RpcStatus(ttrpc::get_status(
                ttrpc::Code::NOT_FOUND,
                "task abc not found",
            )),
        );
        assert_eq!(e.code(), Code::NotFound);
        assert!(e.to_string().contains("task abc not found"), "{e}");
        let e = Error::from_ttrpc("x", ttrpc::Error::RemoteClosed);
        assert_eq!(e.code(), Code::Unavailable);
    }
}
