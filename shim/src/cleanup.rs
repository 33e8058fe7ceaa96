//! The `delete` action, run by the daemon after a shim died: kill and delete the task with
//! the runtime the bundle records, unmount its rootfs, remove a dead shim socket, and print
//! a `DeleteResponse` (exit 137: the task was killed) on stdout.

use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::SystemTime;

use anyhow::Context;
use containerd_shim_protos::api::DeleteResponse;
use protobuf::well_known_types::timestamp::Timestamp;
use protobuf::{Message, MessageField};

use crate::address::{group_of, socket_path};
use crate::args::Args;
use crate::command::CommandRunner;
use crate::mount;
use crate::reaper::Reaper;
use crate::runtime::{Runtime, RuntimeConfig};

/// Cleans up task `args.id`; returns the encoded `DeleteResponse`.
pub async fn delete(args: &Args) -> anyhow::Result<Vec<u8>> {
    let bundle = args.bundle_dir().context("bundle dir")?;
    let reaper = Reaper::start().context("reaper")?;
    let runner = CommandRunner::new(reaper);
    let config = match RuntimeConfig::load(&bundle) {
        Ok(c) => Some(c),
        Err(_) => {
            let base = Path::new(&args.address)
                .parent()
                .unwrap_or(Path::new("/run/crius"));
            RuntimeConfig::resolve("runc", "", false, &base.join("runc").join(&args.namespace)).ok()
        }
    };
    if let Some(config) = config {
        let runtime = Runtime::new(config, &bundle, runner);
        if let Err(e) = runtime.delete(&args.id, true).await {
            crate::log::warn(&format!("delete {}: {e}", args.id));
        }
    }
    let rootfs = bundle.join("rootfs");
    if let Err(e) = mount::unmount_all(&rootfs) {
        crate::log::warn(&format!("unmount {}: {e}", rootfs.display()));
    }
    // The dead shim's socket: remove it unless someone still listens there.
    let config_json = std::fs::read(bundle.join("config.json")).unwrap_or_default();
    let sock = socket_path(
        &args.address,
        &args.namespace,
        &group_of(&config_json, &args.id),
    );
    if sock.exists() && UnixStream::connect(&sock).is_err() {
        let _ = std::fs::remove_file(&sock);
    }
    let pid = std::fs::read_to_string(bundle.join("init.pid"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    let _ = std::fs::remove_file(bundle.join("init.pid"));
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let mut ts = Timestamp::new();
    ts.seconds = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
    ts.nanos = now.subsec_nanos() as i32;
    let resp = DeleteResponse {
        pid,
        exit_status: 137,
        exited_at: MessageField::some(ts),
        ..Default::default()
    };
    resp.write_to_bytes().context("encode DeleteResponse")
}
