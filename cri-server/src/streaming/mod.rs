//! The streaming server behind `Exec`, `Attach` and `PortForward`: those RPCs answer with
//! a URL holding a single-use token; the client (crictl, or the kubelet proxying kubectl)
//! then connects to it and speaks one of Kubernetes' stream protocols, over SPDY/3.1 or
//! WebSocket, negotiated as client-go does.
//!
//! No Rust crate speaks SPDY/3.1, so [`spdy`] is our own framing and session layer.

pub mod over_spdy;
pub mod portforward;
pub mod remotecommand;
pub mod server;
pub mod spdy;
pub mod tls;
pub mod token;
pub mod websocket;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::pods::Pods;

/// A pending streaming request, kept under its token until the client connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `Exec`.
    Exec {
        /// Container id (full).
        container: String,
        /// Command.
        cmd: Vec<String>,
        /// Terminal.
        tty: bool,
        /// The client sends input.
        stdin: bool,
        /// The client wants stdout.
        stdout: bool,
        /// The client wants stderr.
        stderr: bool,
    },
    /// `Attach`.
    Attach {
        /// Container id (full).
        container: String,
        /// Terminal.
        tty: bool,
        /// The client sends input.
        stdin: bool,
        /// The client wants stdout.
        stdout: bool,
        /// The client wants stderr.
        stderr: bool,
    },
    /// `PortForward`.
    PortForward {
        /// Sandbox id (full).
        sandbox: String,
        /// Ports the client may forward to (empty: any).
        ports: Vec<u16>,
    },
}

impl Request {
    fn path(&self) -> &'static str {
        match self {
            Request::Exec { .. } => "exec",
            Request::Attach { .. } => "attach",
            Request::PortForward { .. } => "portforward",
        }
    }
}

/// Streaming settings (`[streaming]` in crius.toml).
#[derive(Debug, Clone)]
pub struct StreamingConfig {
    /// Where the server listens (port 0: any free port).
    pub listen: SocketAddr,
    /// How long a URL stays valid.
    pub token_ttl: Duration,
    /// How many URLs may be pending at once.
    pub max_pending: usize,
    /// HTTPS: certificate chain and key files (PEM).
    pub tls: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

/// The streaming server's state: pending requests and the pods they run in.
pub struct Streaming {
    tokens: token::Tokens<Request>,
    base_url: String,
    pods: Arc<Pods>,
}

impl std::fmt::Debug for Streaming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Streaming")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl Streaming {
    /// State for a server reachable at `addr` (the bound address).
    pub fn new(cfg: &StreamingConfig, addr: SocketAddr, pods: Arc<Pods>) -> Streaming {
        Streaming {
            tokens: token::Tokens::new(cfg.token_ttl, cfg.max_pending),
            base_url: format!(
                "{}://{addr}",
                if cfg.tls.is_some() { "https" } else { "http" }
            ),
            pods,
        }
    }

    /// The URL a client connects to for `req`.
    pub fn url(&self, req: Request) -> Result<String, token::TokenError> {
        let path = req.path();
        let token = self.tokens.issue(req)?;
        Ok(format!("{}/{path}/{token}", self.base_url))
    }

    /// The request of `token` if it is for `path` (`exec`, `attach`, `portforward`); the
    /// token is used up either way.
    pub fn take(&self, path: &str, token: &str) -> Option<Request> {
        self.tokens.take(token).filter(|r| r.path() == path)
    }

    /// The pods requests run in.
    pub fn pods(&self) -> &Arc<Pods> {
        &self.pods
    }
}
