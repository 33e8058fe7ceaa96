//! Running a shim binary the way containerd does: `start` to spawn (or reuse) the shim
//! and learn its address, `delete` to clean up after a shim that died.
//!
//! containerd's contract, which third-party shims (the Go runc shim, kata, runsc) rely on:
//! argv `-namespace <ns> -address <daemon socket> -publish-binary <daemon> -id <id> [-debug]
//! start`, cwd = the bundle, env `TTRPC_ADDRESS`, `GRPC_ADDRESS`, `NAMESPACE`,
//! `GOMAXPROCS=2`, stdin the `Any`-wrapped runtime options or `/dev/null`, and a fifo named
//! `log` in the bundle that someone keeps reading (the Go shim opens it write-only, which
//! blocks without a reader, and dies of SIGPIPE if the reader goes away).

mod log;
mod process;

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use containerd_shim_protos::api::DeleteResponse;
use protobuf::Message;

use crate::bootstrap::{parse_bootstrap, Bootstrap};
use crate::convert::from_timestamp;
use crate::error::Error;

pub use log::ShimLogReader;

/// Default bound on `start` and `delete`.
pub const DEFAULT_LAUNCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything needed to run one shim binary for one task.
#[derive(Debug, Clone, Default)]
pub struct ShimLaunch {
    pub binary: PathBuf,
    pub namespace: String,
    pub id: String,
    pub bundle: PathBuf,
    /// `-address`: the daemon's own socket (containerd passes its gRPC socket).
    pub address: String,
    /// `TTRPC_ADDRESS`: the socket of the daemon's events server.
    pub ttrpc_address: String,
    /// `-publish-binary`: what a shim may exec to publish events (the daemon binary).
    pub publish_binary: PathBuf,
    pub debug: bool,
    /// Bytes written to the shim's stdin on `start`; containerd writes the runtime options
    /// wrapped in an `Any` (see [`crate::RuncOptions::to_start_stdin`]). `None`: /dev/null.
    pub options: Option<Vec<u8>>,
}

/// What `delete` reports about the task the dead shim ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DeleteResult {
    pub pid: u32,
    pub exit_status: u32,
    pub exited_at: Option<SystemTime>,
}

impl ShimLaunch {
    /// argv (after the binary) of `start`.
    pub fn start_args(&self) -> Vec<OsString> {
        let mut args = self.common_args();
        if self.debug {
            args.push("-debug".into());
        }
        args.push("start".into());
        args
    }

    /// argv (after the binary) of `delete`.
    pub fn delete_args(&self) -> Vec<OsString> {
        let mut args = self.common_args();
        args.push("-bundle".into());
        args.push(self.bundle.clone().into_os_string());
        if self.debug {
            args.push("-debug".into());
        }
        args.push("delete".into());
        args
    }

    fn common_args(&self) -> Vec<OsString> {
        vec![
            "-namespace".into(),
            self.namespace.clone().into(),
            "-address".into(),
            self.address.clone().into(),
            "-publish-binary".into(),
            self.publish_binary.clone().into_os_string(),
            "-id".into(),
            self.id.clone().into(),
        ]
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("TTRPC_ADDRESS", self.ttrpc_address.clone()),
            ("GRPC_ADDRESS", self.address.clone()),
            ("NAMESPACE", self.namespace.clone()),
            ("GOMAXPROCS", "2".into()),
        ]
    }

    /// Runs `start` with [`DEFAULT_LAUNCH_TIMEOUT`]. The bundle's `log` fifo keeps being
    /// drained in the background until [`ShimLaunch::delete`] or
    /// [`ShimLogReader::stop_detached`] for this bundle.
    pub async fn start(&self) -> Result<Bootstrap, Error> {
        self.start_with_timeout(DEFAULT_LAUNCH_TIMEOUT).await
    }

    /// [`ShimLaunch::start`] with another timeout.
    pub async fn start_with_timeout(&self, timeout: Duration) -> Result<Bootstrap, Error> {
        let (bootstrap, log) = self.start_with_log(timeout).await?;
        log.detach();
        Ok(bootstrap)
    }

    /// Runs `start` and hands the `log` fifo reader to the caller, who must keep it for
    /// the shim's life and stop it once the shim is gone.
    pub async fn start_with_log(
        &self,
        timeout: Duration,
    ) -> Result<(Bootstrap, ShimLogReader), Error> {
        let log = ShimLogReader::open(&self.bundle, &self.id)?;
        let output = process::run(
            self,
            "start",
            self.start_args(),
            self.options.clone(),
            timeout,
        )
        .await?;
        let bootstrap = parse_bootstrap(&output.stdout).map_err(|e| match e {
            Error::Malformed(m) => {
                Error::Malformed(format!("shim {} start: {m}", self.binary.display()))
            }
            other => other,
        })?;
        Ok((bootstrap, log))
    }

    /// Runs `delete` with [`DEFAULT_LAUNCH_TIMEOUT`] and stops the detached log reader of
    /// the bundle, if any.
    pub async fn delete(&self) -> Result<DeleteResult, Error> {
        self.delete_with_timeout(DEFAULT_LAUNCH_TIMEOUT).await
    }

    /// [`ShimLaunch::delete`] with another timeout.
    pub async fn delete_with_timeout(&self, timeout: Duration) -> Result<DeleteResult, Error> {
        let result = process::run(self, "delete", self.delete_args(), None, timeout).await;
        ShimLogReader::stop_detached(&self.bundle).await;
        let output = result?;
        let resp = DeleteResponse::parse_from_bytes(&output.stdout).map_err(|e| {
            Error::Malformed(format!(
                "shim {} delete: stdout is not a DeleteResponse: {e}",
                self.binary.display()
            ))
        })?;
        Ok(DeleteResult {
            pid: resp.pid,
            exit_status: resp.exit_status,
            exited_at: from_timestamp(&resp.exited_at),
        })
    }
}

#[cfg(test)]
mod tests;
