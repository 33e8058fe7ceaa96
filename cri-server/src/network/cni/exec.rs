//! Running a plugin binary: the CNI exec protocol's process side.
//!
//! The narrow [`PluginExec`] trait is the seam between the chain logic (unit-tested with a
//! double) and real processes.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One plugin call.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// The plugin binary.
    pub plugin: PathBuf,
    /// `CNI_*` variables (added to the daemon's environment: plugins need `PATH`).
    pub env: Vec<(String, String)>,
    /// The network config for this plugin, on stdin.
    pub stdin: Vec<u8>,
    /// Killed after this.
    pub timeout: Duration,
}

/// How a plugin call ended, when it did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// It could not be started.
    #[error("starting it: {0}")]
    Spawn(#[source] std::io::Error),
    /// It ran past the timeout and was killed (with its process group).
    #[error("no answer within {0:?}; killed")]
    Timeout(Duration),
    /// It exited non-zero; stdout should hold a CNI error object.
    #[error("exit status {status}")]
    Failed {
        /// The exit status as the shell prints it.
        status: String,
        /// Its stdout.
        stdout: Vec<u8>,
        /// Its stderr.
        stderr: Vec<u8>,
    },
}

/// Runs plugin binaries. Returns stdout of a successful (exit 0) run.
pub trait PluginExec: Send + Sync + 'static {
    /// Runs one plugin call to its end or its timeout.
    fn run(&self, call: Invocation) -> BoxFuture<'static, Result<Vec<u8>, ExecError>>;
}

/// Real processes.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealExec;

impl PluginExec for RealExec {
    fn run(&self, call: Invocation) -> BoxFuture<'static, Result<Vec<u8>, ExecError>> {
        Box::pin(run_process(call))
    }
}

async fn run_process(call: Invocation) -> Result<Vec<u8>, ExecError> {
    let mut cmd = tokio::process::Command::new(&call.plugin);
    cmd.envs(call.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a timeout kills whatever it started too.
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(ExecError::Spawn)?;
    let pid = child.id();
    let mut stdin = child.stdin.take();
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let io = async {
        let feed = async {
            if let Some(mut s) = stdin.take() {
                // A plugin that fails early may not read its config: EPIPE is not ours.
                let _ = s.write_all(&call.stdin).await;
            }
        };
        let mut out = Vec::new();
        let mut err = Vec::new();
        let read_out = async {
            if let Some(s) = stdout.as_mut() {
                let _ = s.read_to_end(&mut out).await;
            }
        };
        let read_err = async {
            if let Some(s) = stderr.as_mut() {
                let _ = s.take(64 * 1024).read_to_end(&mut err).await;
            }
        };
        tokio::join!(feed, read_out, read_err);
        let status = child.wait().await;
        (status, out, err)
    };
    match tokio::time::timeout(call.timeout, io).await {
        Ok((Ok(status), out, err)) => {
            if status.success() {
                Ok(out)
            } else {
                Err(ExecError::Failed {
                    status: status.to_string(),
                    stdout: out,
                    stderr: err,
                })
            }
        }
        Ok((Err(e), _, _)) => Err(ExecError::Spawn(e)),
        Err(_) => {
            if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
                // SAFETY: kill(2) with a negative pid signals the process group the child
                // leads (set by process_group(0) above); no memory is involved.
                unsafe { libc::kill(-pid, libc::SIGKILL) };
            }
            // The child itself is killed and reaped by kill_on_drop when the future drops.
            Err(ExecError::Timeout(call.timeout))
        }
    }
}

/// The first executable file named `kind` in `dirs`.
pub fn find_plugin(dirs: &[PathBuf], kind: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    dirs.iter().map(|d| d.join(kind)).find(|p| {
        std::fs::metadata(p)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    })
}

/// `CNI_PATH`: the plugin dirs, `:`-joined.
pub fn cni_path(dirs: &[PathBuf]) -> String {
    dirs.iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).expect("write");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        p
    }

    fn call(plugin: PathBuf, timeout: Duration) -> Invocation {
        Invocation {
            plugin,
            env: vec![("CNI_COMMAND".into(), "ADD".into())],
            stdin: b"{\"hello\":1}".to_vec(),
            timeout,
        }
    }

    #[tokio::test]
    async fn stdin_env_and_stdout() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = script(dir.path(), "echo", "printf '%s ' \"$CNI_COMMAND\"; cat");
        let out = RealExec
            .run(call(p, Duration::from_secs(10)))
            .await
            .expect("run");
        assert_eq!(out, b"ADD {\"hello\":1}");
    }

    #[tokio::test]
    async fn failure_keeps_stdout() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = script(
            dir.path(),
            "fail",
            "echo '{\"code\":7,\"msg\":\"no\"}'; exit 3",
        );
        match RealExec.run(call(p, Duration::from_secs(10))).await {
            Err(ExecError::Failed { stdout, status, .. }) => {
                assert!(String::from_utf8_lossy(&stdout).contains("\"code\":7"));
                assert!(status.contains('3'), "{status}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_hang_is_killed_with_its_children() {
        let dir = tempfile::tempdir().expect("tempdir");
        let marker = dir.path().join("child.pid");
        let p = script(
            dir.path(),
            "hang",
            &format!("sleep 300 & echo $! > {}; wait", marker.display()),
        );
        let started = std::time::Instant::now();
        let res = RealExec.run(call(p, Duration::from_millis(500))).await;
        assert!(matches!(res, Err(ExecError::Timeout(_))), "{res:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
        let pid: i32 = std::fs::read_to_string(&marker)
            .expect("marker")
            .trim()
            .parse()
            .expect("pid");
        // The background sleep was in the group: it is gone (or a zombie of init).
        let gone = (0..50).any(|_| {
            let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok();
            let dead = state.map(|s| s.contains(") Z ")).unwrap_or(true);
            if !dead {
                std::thread::sleep(Duration::from_millis(20));
            }
            dead
        });
        assert!(gone, "child {pid} survived the timeout");
    }

    #[test]
    fn plugins_are_found_in_order_and_must_be_executable() {
        let a = tempfile::tempdir().expect("tempdir");
        let b = tempfile::tempdir().expect("tempdir");
        std::fs::write(a.path().join("bridge"), "not executable").expect("write");
        let exe = script(b.path(), "bridge", "true");
        let dirs = vec![a.path().to_path_buf(), b.path().to_path_buf()];
        assert_eq!(find_plugin(&dirs, "bridge"), Some(exe));
        assert_eq!(find_plugin(&dirs, "nope"), None);
        assert_eq!(
            cni_path(&dirs),
            format!("{}:{}", a.path().display(), b.path().display())
        );
    }
}
