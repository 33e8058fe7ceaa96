//! Serving: the long-lived shim process. It makes itself the subreaper of everything the
//! runtime starts, serves the Task and Log services on the listener `start` handed over,
//! and exits once Shutdown finds no task left (or on SIGTERM), after flushing events.

use std::os::fd::FromRawFd;
use std::time::Duration;

use anyhow::Context;
use tokio::signal::unix::{signal, SignalKind};

use crate::args::Args;
use crate::command::CommandRunner;
use crate::events::Events;
use crate::reaper::Reaper;
use crate::service::services;
use crate::start::LISTENER_FD;
use crate::task::Tasks;

/// Serves until shutdown. Runs on a current-thread runtime: one thread is all a shim needs.
pub async fn serve(args: &Args) -> anyhow::Result<()> {
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER) takes plain integer arguments.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("become a subreaper");
    }
    let reaper = Reaper::start().context("reaper")?;
    let runner = CommandRunner::new(reaper);
    let events = Events::start(
        std::env::var("TTRPC_ADDRESS").unwrap_or_default(),
        args.namespace.clone(),
    );
    let tasks = Tasks::new(&args.namespace, &args.address, runner, events.clone());

    // SAFETY: `start` put a listening unix socket on this fd for us alone.
    let std_listener = unsafe { std::os::unix::net::UnixListener::from_raw_fd(LISTENER_FD) };
    std_listener.set_nonblocking(true).context("listener")?;
    let socket_path = std_listener
        .local_addr()
        .ok()
        .and_then(|a| a.as_pathname().map(|p| p.to_path_buf()));
    let listener = tokio::net::UnixListener::from_std(std_listener).context("listener")?;
    let mut server = ttrpc::asynchronous::Server::new()
        .add_listener(ttrpc::asynchronous::transport::Listener::from(listener))
        .register_service(services(tasks.clone()));
    server.start().await.context("start ttrpc server")?;
    crate::log::debug(&format!("serving {:?}", socket_path));

    let shutdown = tasks.shutdown_signal();
    let mut sigterm = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    tokio::select! {
        _ = shutdown.notified() => {}
        _ = sigterm.recv() => {}
    }
    // Let the Shutdown answer go out, then deliver what is queued.
    tokio::time::sleep(Duration::from_millis(5)).await;
    events.flush(Duration::from_secs(5)).await;
    if let Some(p) = socket_path {
        let _ = std::fs::remove_file(p);
    }
    Ok(())
}
