//! Launching, reconnecting and cleaning up a handler's shim, as containerd does, so the
//! same code path runs crius's shim, containerd's Go shim and third-party shims.

use std::path::{Path, PathBuf};
use std::time::Duration;

use runtime_v2_api::{Bootstrap, DeleteResult, RuncOptions, ShimLaunch, ShimLogReader, TaskClient};

use crate::Resolved;

/// How long a restarted daemon waits for a shim to answer before declaring it dead.
pub const RECONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What every shim launch of one daemon shares.
#[derive(Debug, Clone)]
pub struct ShimEnv {
    /// containerd namespace passed to shims (`k8s.io`).
    pub namespace: String,
    /// `-address`: the daemon's CRI socket.
    pub address: String,
    /// `TTRPC_ADDRESS`: the daemon's events socket.
    pub ttrpc_address: String,
    /// `-publish-binary`: the daemon binary.
    pub publish_binary: PathBuf,
}

/// A shim that answers.
#[derive(Debug, Clone)]
pub struct Launched {
    /// What `start` printed; keep it to reconnect after a restart.
    pub bootstrap: Bootstrap,
    /// The Task client.
    pub client: TaskClient,
}

/// Why a shim could not be launched, reached or cleaned up.
#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    /// `start`, `delete` or the first RPC failed.
    #[error("shim {shim} for {id}: {source}")]
    Shim {
        /// the binary.
        shim: String,
        /// the task id.
        id: String,
        /// the cause.
        source: runtime_v2_api::Error,
    },
}

impl ShimError {
    /// The underlying runtime v2 error, to map onto gRPC codes.
    pub fn cause(&self) -> &runtime_v2_api::Error {
        match self {
            ShimError::Shim { source, .. } => source,
        }
    }
}

/// The runc options a handler sends (`binary_name`, `root`, `systemd_cgroup`), if any.
pub fn runc_options(h: &Resolved) -> Option<RuncOptions> {
    let o = &h.handler.options;
    if o.is_empty() {
        return None;
    }
    Some(RuncOptions {
        binary_name: o.binary_name.clone().unwrap_or_default(),
        root: o.root.clone().unwrap_or_default(),
        systemd_cgroup: o.systemd_cgroup.unwrap_or(false),
    })
}

fn launch_args(h: &Resolved, env: &ShimEnv, id: &str, bundle: &Path) -> ShimLaunch {
    ShimLaunch {
        binary: h.shim.clone(),
        namespace: env.namespace.clone(),
        id: id.to_string(),
        bundle: bundle.to_path_buf(),
        address: env.address.clone(),
        ttrpc_address: env.ttrpc_address.clone(),
        publish_binary: env.publish_binary.clone(),
        debug: false,
        options: runc_options(h).and_then(|o| o.to_start_stdin().ok()),
    }
}

fn shim_err(h: &Resolved, id: &str) -> impl Fn(runtime_v2_api::Error) -> ShimError {
    let id = id.to_string();
    let shim = h.shim.display().to_string();
    move |source| ShimError::Shim {
        shim: shim.clone(),
        id: id.clone(),
        source,
    }
}

/// Runs the shim's `start` for task `id` in `bundle` (whose `config.json` must already
/// carry the grouping annotations) and connects to the address it prints. The bundle's
/// `log` fifo is drained until [`cleanup`] or [`forget`].
pub async fn launch(
    h: &Resolved,
    env: &ShimEnv,
    id: &str,
    bundle: &Path,
) -> Result<Launched, ShimError> {
    let bootstrap = launch_args(h, env, id, bundle)
        .start()
        .await
        .map_err(shim_err(h, id))?;
    let client = TaskClient::connect(&bootstrap, RECONNECT_TIMEOUT)
        .await
        .map_err(shim_err(h, id))?
        .with_namespace(env.namespace.clone());
    Ok(Launched { bootstrap, client })
}

/// Connects to a shim that was running before the daemon restarted and checks that it
/// answers for `id`; re-attaches the bundle's `log` fifo reader.
pub async fn reconnect(
    h: &Resolved,
    env: &ShimEnv,
    bootstrap: &Bootstrap,
    id: &str,
    bundle: &Path,
) -> Result<TaskClient, ShimError> {
    let client = TaskClient::connect(bootstrap, RECONNECT_TIMEOUT)
        .await
        .map_err(shim_err(h, id))?
        .with_namespace(env.namespace.clone())
        .with_rpc_timeout(RECONNECT_TIMEOUT);
    client.connect_info(id).await.map_err(shim_err(h, id))?;
    if let Ok(reader) = ShimLogReader::open(bundle, id) {
        reader.detach();
    }
    Ok(client.with_rpc_timeout(runtime_v2_api::client::DEFAULT_RPC_TIMEOUT))
}

/// Runs the shim's `delete` for a task whose shim is gone: it removes the low-level
/// runtime's state and the rootfs mount, and reports how the task ended.
pub async fn cleanup(
    h: &Resolved,
    env: &ShimEnv,
    id: &str,
    bundle: &Path,
) -> Result<DeleteResult, ShimError> {
    launch_args(h, env, id, bundle)
        .delete()
        .await
        .map_err(shim_err(h, id))
}

/// Stops draining the bundle's `log` fifo once its shim has exited on its own.
pub async fn forget(bundle: &Path) {
    ShimLogReader::stop_detached(bundle).await;
}
