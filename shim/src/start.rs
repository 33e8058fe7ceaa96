//! The `start` action: find the shim serving this task's group, or start one. Binding the
//! group's socket is the lock: whoever binds it starts the server (a re-exec of this binary
//! in its own session, the listener passed as fd 3); everyone else finds it live and reuses
//! it. Prints the bare `unix://` address, which containerd 1.6 and crius both accept.

use std::fs::OpenOptions;
use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::Context;

use crate::address::{group_of, socket_address, socket_dir, socket_path};
use crate::args::Args;

/// The fd a serving shim finds its listener on.
pub const LISTENER_FD: i32 = 3;
/// File in the bundle with the serving shim's pid.
pub const PID_FILE: &str = "shim.pid";
/// File in the bundle with the shim's address.
pub const ADDRESS_FILE: &str = "address";

/// Runs `start`; returns the address to print.
pub fn start(args: &Args) -> anyhow::Result<String> {
    let bundle = args.bundle_dir().context("bundle dir")?;
    let config = std::fs::read(bundle.join("config.json")).unwrap_or_default();
    let group = group_of(&config, &args.id);
    let sock = socket_path(&args.address, &args.namespace, &group);
    std::fs::create_dir_all(socket_dir(&args.address))
        .with_context(|| format!("create {}", socket_dir(&args.address).display()))?;
    let address = socket_address(&sock);
    for _ in 0..5 {
        match UnixListener::bind(&sock) {
            Ok(listener) => {
                let pid = spawn_server(args, &bundle, &listener)
                    .with_context(|| format!("start the shim server for {}", args.id))?;
                record(&bundle, pid, &address)?;
                return Ok(address);
            }
            Err(e) if e.kind() == ErrorKind::AddrInUse => match UnixStream::connect(&sock) {
                Ok(stream) => {
                    let pid = peer_pid(&stream).unwrap_or(0);
                    record(&bundle, pid, &address)?;
                    return Ok(address);
                }
                Err(_) => {
                    // A socket left by a shim that died: take its place.
                    let _ = std::fs::remove_file(&sock);
                }
            },
            Err(e) => return Err(e).with_context(|| format!("bind {}", sock.display())),
        }
    }
    anyhow::bail!("could not bind or reach the shim socket {}", sock.display())
}

fn record(bundle: &Path, pid: u32, address: &str) -> anyhow::Result<()> {
    if pid != 0 {
        write_file(&bundle.join(PID_FILE), &pid.to_string())?;
    }
    write_file(&bundle.join(ADDRESS_FILE), address)
}

fn write_file(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("write {}", path.display()))
}

fn peer_pid(stream: &UnixStream) -> Option<u32> {
    let cred =
        nix::sys::socket::getsockopt(stream, nix::sys::socket::sockopt::PeerCredentials).ok()?;
    u32::try_from(cred.pid()).ok()
}

/// Starts `<this binary> <flags>` (no action = serve) detached, with the listener on fd 3
/// and stderr on the bundle's `log` fifo when the daemon reads one.
fn spawn_server(args: &Args, bundle: &Path, listener: &UnixListener) -> anyhow::Result<u32> {
    let exe = std::env::current_exe().context("find own binary")?;
    let mut cmd = Command::new(exe);
    cmd.arg("-namespace")
        .arg(&args.namespace)
        .arg("-address")
        .arg(&args.address)
        .arg("-publish-binary")
        .arg(&args.publish_binary)
        .arg("-id")
        .arg(&args.id);
    if args.debug {
        cmd.arg("-debug");
    }
    cmd.current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_sink(&bundle.join("log")));
    let fd = listener.as_raw_fd();
    // SAFETY: setsid, dup2 and fcntl are async-signal-safe; `fd` stays open in the parent
    // until spawn returns.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if fd == LISTENER_FD {
                // Already in place: only clear close-on-exec.
                if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(fd, LISTENER_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().context("spawn the shim server")?;
    Ok(child.id())
}

/// The daemon's reader of the shim log: the bundle's `log` fifo when it has a reader
/// (opening a fifo without one fails with ENXIO), `/dev/null` otherwise.
fn log_sink(fifo: &PathBuf) -> Stdio {
    match OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(fifo)
    {
        Ok(f) => {
            // Back to blocking is not wanted either: a full pipe must not stall the shim;
            // lines are dropped instead (EAGAIN is ignored by the logger).
            Stdio::from(f)
        }
        Err(_) => Stdio::null(),
    }
}
