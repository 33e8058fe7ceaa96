//! The error of every pod and container operation, carrying the gRPC code the CRI edge
//! answers with and a message that names what was wrong.

/// What went wrong, by the code the CRI contract expects.
#[derive(Debug, thiserror::Error)]
pub enum PodError {
    /// Bad input; the message names the field.
    #[error("{0}")]
    InvalidArgument(String),
    /// No such sandbox, container or image.
    #[error("{0}")]
    NotFound(String),
    /// A name is reserved by another sandbox or container.
    #[error("{0}")]
    AlreadyExists(String),
    /// The object is in the wrong state for the operation.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The operation ran out of time.
    #[error("{0}")]
    DeadlineExceeded(String),
    /// A shim or other component could not be reached.
    #[error("{0}")]
    Unavailable(String),
    /// Anything else, with its context.
    #[error("{0}")]
    Internal(String),
}

impl PodError {
    /// An internal error with what was being done.
    pub fn internal(context: impl std::fmt::Display, err: impl std::fmt::Display) -> PodError {
        PodError::Internal(format!("{context}: {err}"))
    }

    /// Wraps the message with context, keeping the code.
    pub fn context(self, context: impl std::fmt::Display) -> PodError {
        let wrap = |m: String| format!("{context}: {m}");
        match self {
            PodError::InvalidArgument(m) => PodError::InvalidArgument(wrap(m)),
            PodError::NotFound(m) => PodError::NotFound(wrap(m)),
            PodError::AlreadyExists(m) => PodError::AlreadyExists(wrap(m)),
            PodError::FailedPrecondition(m) => PodError::FailedPrecondition(wrap(m)),
            PodError::DeadlineExceeded(m) => PodError::DeadlineExceeded(wrap(m)),
            PodError::Unavailable(m) => PodError::Unavailable(wrap(m)),
            PodError::Internal(m) => PodError::Internal(wrap(m)),
        }
    }
}

impl From<crate::store::StoreError> for PodError {
    fn from(e: crate::store::StoreError) -> Self {
        PodError::Internal(e.to_string())
    }
}

impl From<runtime_v2_api::Error> for PodError {
    fn from(e: runtime_v2_api::Error) -> Self {
        use runtime_v2_api::Code;
        let m = e.to_string();
        match &e {
            runtime_v2_api::Error::Transport { .. } => PodError::Unavailable(m),
            runtime_v2_api::Error::Timeout { .. } => PodError::DeadlineExceeded(m),
            runtime_v2_api::Error::Rpc { code, .. } => match code {
                Code::NotFound => PodError::NotFound(m),
                Code::AlreadyExists => PodError::AlreadyExists(m),
                Code::FailedPrecondition => PodError::FailedPrecondition(m),
                Code::InvalidArgument => PodError::InvalidArgument(m),
                Code::DeadlineExceeded => PodError::DeadlineExceeded(m),
                Code::Unavailable => PodError::Unavailable(m),
                _ => PodError::Internal(m),
            },
            _ => PodError::Internal(m),
        }
    }
}

impl From<crius_handlers::ShimError> for PodError {
    fn from(e: crius_handlers::ShimError) -> Self {
        let m = e.to_string();
        PodError::from(match e {
            crius_handlers::ShimError::Shim { source, .. } => source,
        })
        .replace_message(m)
    }
}

impl From<crius_handlers::LookupError> for PodError {
    fn from(e: crius_handlers::LookupError) -> Self {
        match e {
            crius_handlers::LookupError::Unknown { .. } => PodError::InvalidArgument(e.to_string()),
            crius_handlers::LookupError::Unavailable { .. } => {
                PodError::FailedPrecondition(e.to_string())
            }
        }
    }
}

impl From<crate::spec::SpecError> for PodError {
    fn from(e: crate::spec::SpecError) -> Self {
        use crate::spec::SpecError;
        match e {
            SpecError::InvalidArgument(m) => PodError::InvalidArgument(m),
            SpecError::NotFound(m) => PodError::NotFound(m),
            other => PodError::Internal(other.to_string()),
        }
    }
}

impl From<crate::image::ImageError> for PodError {
    fn from(e: crate::image::ImageError) -> Self {
        PodError::Internal(e.to_string())
    }
}

impl From<crate::network::cni::CniError> for PodError {
    fn from(e: crate::network::cni::CniError) -> Self {
        use crate::network::cni::CniError;
        let m = format!("pod network: {e}");
        match e {
            CniError::InvalidArgument(_) => PodError::InvalidArgument(m),
            CniError::NotReady(_) => PodError::FailedPrecondition(m),
            CniError::Timeout { .. } => PodError::DeadlineExceeded(m),
            _ => PodError::Internal(m),
        }
    }
}

impl PodError {
    fn replace_message(self, m: String) -> PodError {
        match self {
            PodError::InvalidArgument(_) => PodError::InvalidArgument(m),
            PodError::NotFound(_) => PodError::NotFound(m),
            PodError::AlreadyExists(_) => PodError::AlreadyExists(m),
            PodError::FailedPrecondition(_) => PodError::FailedPrecondition(m),
            PodError::DeadlineExceeded(_) => PodError::DeadlineExceeded(m),
            PodError::Unavailable(_) => PodError::Unavailable(m),
            PodError::Internal(_) => PodError::Internal(m),
        }
    }
}
