//! Binding the CRI socket and serving both services on it.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use crius_proto::cri::{
    image_service_server::ImageServiceServer, runtime_service_server::RuntimeServiceServer,
};
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;

use super::container_list::{ContainerList, WithContainerList};
use super::{image::Images, runtime::Runtime};
use crate::status::RuntimeStatus;

/// Errors of setting up the CRI socket.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Creating the socket's directory, removing a stale socket or binding failed.
    #[error("CRI socket {path}: {source}")]
    Socket {
        /// the socket path.
        path: String,
        /// the cause.
        source: std::io::Error,
    },
    /// tonic failed while serving.
    #[error("serving CRI: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// How long in-flight RPCs may run on after SIGTERM.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Binds `path` (mode 0660, a stale socket replaced) and serves until `shutdown` resolves.
pub async fn serve(
    path: &Path,
    status: Arc<RuntimeStatus>,
    images: Arc<crate::image::ImageService>,
    pods: Arc<crate::pods::Pods>,
    streaming: Arc<crate::streaming::Streaming>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), ServeError> {
    let sock_err = |source| ServeError::Socket {
        path: path.display().to_string(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(sock_err)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(sock_err(e)),
    }
    let listener = UnixListener::bind(path).map_err(sock_err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(sock_err)?;
    tracing::info!(socket = %path.display(), "serving CRI v1");
    // Graceful shutdown waits for clients to hang up; a kubelet never does. After the
    // signal, in-flight RPCs get SHUTDOWN_GRACE to finish, then the daemon exits anyway.
    let (signalled_tx, signalled_rx) = tokio::sync::oneshot::channel::<()>();
    let signalled = async move {
        shutdown.await;
        let _ = signalled_tx.send(());
    };
    let list = Arc::new(ContainerList::new(pods.clone()));
    let runtime = RuntimeServiceServer::new(Runtime::new(status, pods, streaming));
    let server = tonic::transport::Server::builder()
        .add_service(WithContainerList::new(runtime, list))
        .add_service(ImageServiceServer::new(Images::new(images)))
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), signalled);
    let grace = async {
        if signalled_rx.await.is_ok() {
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        r = server => r?,
        _ = grace => tracing::info!("clients still connected after {SHUTDOWN_GRACE:?}: closing anyway"),
    }
    let _ = std::fs::remove_file(path);
    Ok(())
}
