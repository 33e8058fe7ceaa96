//! Images: references, the content store, unpacked snapshots, pulling from registries,
//! import from archives and garbage collection.
//!
//! Data flows one way: a reference is resolved at a registry (`pull`), its blobs are verified
//! into the `content` store while each layer is unpacked (`unpack`) into a `snapshot` keyed by
//! chain ID, and only then is the image recorded (`record`) in the store. An image record
//! therefore never points at anything missing.

pub mod content;
pub mod digest;
pub mod gc;
pub mod import;
pub mod manifest;
pub mod pause;
pub mod progress;
pub mod pull;
pub mod record;
pub mod reference;
pub mod registry;
pub mod rootfs;
pub mod service;
pub mod snapshot;
pub mod unpack;

pub use digest::Digest;
pub use record::ImageRecord;
pub use reference::Reference;
pub use service::ImageService;

use crate::store::StoreError;

/// What can go wrong with images. Each variant says which part of the request or which
/// remote it concerns.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The reference does not parse.
    #[error(transparent)]
    Reference(#[from] reference::ReferenceError),
    /// A registry answered with an error or could not be reached.
    #[error("pulling {reference} from {host}: {cause}")]
    Registry {
        /// the registry host (or mirror) that failed.
        host: String,
        /// the image reference.
        reference: String,
        /// what went wrong.
        cause: String,
        /// how it maps to a gRPC code.
        kind: RegistryFailure,
    },
    /// A blob's content does not match the digest that names it.
    #[error("{what}: digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        /// what was being verified (a layer, the config, a manifest…).
        what: String,
        /// the digest the manifest promised.
        expected: Digest,
        /// the digest of what arrived.
        actual: Digest,
    },
    /// A blob's size does not match its descriptor.
    #[error("blob {digest}: size mismatch: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        /// the blob.
        digest: Digest,
        /// the descriptor's size.
        expected: u64,
        /// the bytes received.
        actual: u64,
    },
    /// The image uses something crius does not support (schema 1, an unknown media type…).
    #[error("{reference}: {what}")]
    Unsupported {
        /// the image reference.
        reference: String,
        /// what is unsupported.
        what: String,
    },
    /// A layer could not be unpacked (malformed or unsafe).
    #[error("layer {layer}: {source}")]
    Unpack {
        /// the layer's digest.
        layer: Digest,
        /// why.
        source: unpack::UnpackError,
    },
    /// The layer's content is not valid for its media type (broken gzip, truncated tar…).
    #[error("layer {layer}: {cause}")]
    Corrupt {
        /// the layer's digest.
        layer: Digest,
        /// why.
        cause: String,
    },
    /// A request field is malformed; the message names the field.
    #[error("{0}")]
    InvalidArgument(String),
    /// No image matches.
    #[error("image {0:?} not found")]
    NotFound(String),
    /// A local file problem.
    #[error("{context}: {source}")]
    Io {
        /// what crius was doing.
        context: String,
        /// the I/O error.
        source: std::io::Error,
    },
    /// The metadata store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A bug or an impossible state.
    #[error("internal error: {0}")]
    Internal(String),
}

/// The classes of registry failure, for the gRPC code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistryFailure {
    /// Connection refused, DNS, TLS, timeouts.
    Unreachable,
    /// 401 / 403.
    Unauthorized,
    /// 404 for the manifest or a blob.
    NotFound,
    /// Anything else the registry said.
    Other,
}

impl ImageError {
    /// An I/O error with context.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> ImageError {
        ImageError::Io {
            context: context.into(),
            source,
        }
    }
}
