//! SPDY/3.1, the framing under `kubectl exec/attach/port-forward`.
//!
//! The kubelet and crictl reach the streaming server with an HTTP/1.1 request upgraded to
//! `SPDY/3.1`, then multiplex the Kubernetes stream protocols (`v4.channel.k8s.io`,
//! `portforward.k8s.io`, ...) over SPDY streams. No Rust crate speaks SPDY, so this module
//! implements what those peers (Go's `moby/spdystream`) use:
//!
//! * [`frame`]: the frames as typed values, with an incremental decoder and an encoder;
//! * [`headers`]: header blocks and their zlib compression with the SPDY/3 dictionary;
//! * [`session`]: an async session (either role) giving `AsyncRead + AsyncWrite` streams
//!   with per-stream flow control.
//!
//! The HTTP upgrade itself and the Kubernetes protocols on top live elsewhere.

pub mod frame;
pub mod headers;
pub mod session;

pub use frame::{GoAwayStatus, RstStatus};
pub use headers::Headers;
pub use session::{
    Config, Driver, FlowControl, RecvStream, Role, SendStream, Session, SessionError, Stream,
    StreamError,
};
