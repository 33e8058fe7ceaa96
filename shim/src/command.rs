//! Running external commands (the low-level runtime, logging binaries) without ever waiting
//! on them directly: their exits come from the shim's [`Reaper`], like everyone else's.

use std::io;
use std::os::fd::OwnedFd;
use std::process::{Command, Stdio};
use std::time::Instant;

use tokio::io::AsyncReadExt;

use crate::reaper::Reaper;

/// What a finished command left behind.
#[derive(Debug, Default)]
pub struct Output {
    /// Exit status (128 + signal when killed).
    pub status: u32,
    /// Captured stdout (empty when not captured).
    pub stdout: Vec<u8>,
    /// Captured stderr (empty when not captured).
    pub stderr: Vec<u8>,
}

impl Output {
    /// Whether the command exited 0.
    pub fn success(&self) -> bool {
        self.status == 0
    }
}

/// Spawns commands whose exits the reaper collects.
#[derive(Debug, Clone)]
pub struct CommandRunner {
    reaper: Reaper,
}

impl CommandRunner {
    /// A runner backed by `reaper`.
    pub fn new(reaper: Reaper) -> Self {
        CommandRunner { reaper }
    }

    /// The reaper exits are collected by.
    pub fn reaper(&self) -> &Reaper {
        &self.reaper
    }

    /// Runs `cmd` to completion. With `capture`, stdout and stderr are collected; otherwise
    /// the command keeps whatever stdio the caller set (a container's, for `runc create`).
    /// `cmd` is consumed so that the parent's copies of any fds passed to the child are
    /// closed as soon as it is spawned.
    pub async fn run(&self, mut cmd: Command, capture: bool) -> io::Result<Output> {
        if capture {
            cmd.stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
        }
        let since = Instant::now();
        let mut child = cmd.spawn()?;
        drop(cmd);
        let exited = self.reaper.subscribe(child.id(), since);
        let stdout = child.stdout.take().map(OwnedFd::from);
        let stderr = child.stderr.take().map(OwnedFd::from);
        let (stdout, stderr, exit) = tokio::join!(read_all(stdout), read_all(stderr), exited);
        let exit = exit.map_err(|_| io::Error::other("reaper went away"))?;
        Ok(Output {
            status: exit.status,
            stdout,
            stderr,
        })
    }
}

/// Reads a pipe to its end; an absent pipe or a read error yields what was read so far.
async fn read_all(fd: Option<OwnedFd>) -> Vec<u8> {
    let mut buf = Vec::new();
    let Some(fd) = fd else { return buf };
    let Ok(mut rx) = tokio::net::unix::pipe::Receiver::from_owned_fd(fd) else {
        return buf;
    };
    let _ = rx.read_to_end(&mut buf).await;
    buf
}
