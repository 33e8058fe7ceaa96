//! The low-level runtime (runc, crun, youki) driven through the runc command-line contract:
//! `create --pid-file --console-socket`, `start`, `kill`, `delete`, `exec --process`,
//! `pause`, `resume`, `update --resources`, `ps`. Errors come from the runtime's JSON log
//! (`--log … --log-format json`), which all three write, falling back to its stderr.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::command::{CommandRunner, Output};
use crate::error::{Result, ShimError};

/// The runtime options of a task (containerd's runc `Options`), persisted in the bundle so
/// that `delete` after a shim death drives the same binary and root.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RuntimeConfig {
    /// Absolute path of the runtime binary.
    pub binary: PathBuf,
    /// The runtime's state root (`--root`).
    pub root: PathBuf,
    /// `--systemd-cgroup`.
    #[serde(default)]
    pub systemd_cgroup: bool,
}

/// File in the bundle holding the [`RuntimeConfig`].
pub const CONFIG_FILE: &str = "runtime.json";
/// File in the bundle the runtime logs to.
pub const LOG_FILE: &str = "log.json";

impl RuntimeConfig {
    /// Resolves `binary_name` (empty = `runc`) to an absolute path through `PATH`; a binary
    /// that cannot be found is a FailedPrecondition naming it.
    pub fn resolve(
        binary_name: &str,
        root: &str,
        systemd_cgroup: bool,
        default_root: &Path,
    ) -> Result<Self> {
        let name = if binary_name.is_empty() {
            "runc"
        } else {
            binary_name
        };
        let binary = find_executable(name).ok_or_else(|| {
            ShimError::FailedPrecondition(format!(
                "runtime binary {name:?} not found (looked in PATH: {})",
                std::env::var("PATH").unwrap_or_default()
            ))
        })?;
        let root = if root.is_empty() {
            default_root.to_path_buf()
        } else {
            PathBuf::from(root)
        };
        Ok(RuntimeConfig {
            binary,
            root,
            systemd_cgroup,
        })
    }

    /// Saves the config into `bundle`.
    pub fn save(&self, bundle: &Path) -> Result<()> {
        let path = bundle.join(CONFIG_FILE);
        let data = serde_json::to_vec(self)
            .map_err(|e| ShimError::Internal(format!("{}: {e}", path.display())))?;
        std::fs::write(&path, data).map_err(|e| ShimError::io(path.display(), e))
    }

    /// Loads the config saved in `bundle`.
    pub fn load(bundle: &Path) -> Result<Self> {
        let path = bundle.join(CONFIG_FILE);
        let data = std::fs::read(&path).map_err(|e| ShimError::io(path.display(), e))?;
        serde_json::from_slice(&data)
            .map_err(|e| ShimError::Internal(format!("{}: {e}", path.display())))
    }
}

/// `name` if it is a path to an executable file, else the first match in `PATH`.
pub fn find_executable(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let is_exec = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if name.contains('/') {
        let p = PathBuf::from(name);
        return is_exec(&p).then_some(p);
    }
    std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|dir| dir.join(name))
        .find(|p| is_exec(p))
}

/// The container's stdio handed to `create` / `exec` (absent for a terminal).
#[derive(Debug)]
pub struct ChildStdio {
    /// stdin of the process.
    pub stdin: Stdio,
    /// stdout of the process.
    pub stdout: Stdio,
    /// stderr of the process.
    pub stderr: Stdio,
}

impl ChildStdio {
    /// All three on `/dev/null`.
    pub fn null() -> Self {
        ChildStdio {
            stdin: Stdio::null(),
            stdout: Stdio::null(),
            stderr: Stdio::null(),
        }
    }
}

/// One task's runtime: the binary, its root, and where it logs.
/// How a task's init process is brought up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitVerb {
    /// `create`: the init waits for `start`.
    Create,
    /// `run --detach`: created and started by one runtime process.
    RunDetached,
}

#[derive(Debug, Clone)]
pub struct Runtime {
    config: RuntimeConfig,
    log: PathBuf,
    runner: CommandRunner,
}

impl Runtime {
    /// A runtime for the task whose bundle is `bundle`.
    pub fn new(config: RuntimeConfig, bundle: &Path, runner: CommandRunner) -> Self {
        Runtime {
            config,
            log: bundle.join(LOG_FILE),
            runner,
        }
    }

    /// Its config.
    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.config.binary);
        cmd.arg("--root")
            .arg(&self.config.root)
            .arg("--log")
            .arg(&self.log)
            .arg("--log-format")
            .arg("json");
        if self.config.systemd_cgroup {
            cmd.arg("--systemd-cgroup");
        }
        // Rust starts every program with SIGPIPE ignored, and an ignored signal stays
        // ignored across exec: without this, a container started by a runtime that does not
        // reset it (youki) never dies of SIGPIPE (`yes | head` runs forever).
        // SAFETY: signal(2) is async-signal-safe; nothing else runs in the child.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                if libc::signal(libc::SIGPIPE, libc::SIG_DFL) == libc::SIG_ERR {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd
    }

    /// `create --bundle B --pid-file P [--console-socket S] ID` with the container's stdio
    /// (or `run --detach …`, the same with the init started, for [`InitVerb::RunDetached`]).
    pub async fn create(
        &self,
        verb: InitVerb,
        id: &str,
        bundle: &Path,
        pid_file: &Path,
        console_socket: Option<&Path>,
        stdio: ChildStdio,
    ) -> Result<()> {
        let mut cmd = self.command();
        let name = match verb {
            InitVerb::Create => {
                cmd.arg("create");
                "create"
            }
            InitVerb::RunDetached => {
                cmd.arg("run").arg("--detach");
                "run"
            }
        };
        cmd.arg("--bundle")
            .arg(bundle)
            .arg("--pid-file")
            .arg(pid_file);
        self.run_process(name, id, cmd, console_socket, stdio).await
    }

    /// `exec --process F --pid-file P --detach [--console-socket S] ID`.
    pub async fn exec(
        &self,
        id: &str,
        process_file: &Path,
        pid_file: &Path,
        console_socket: Option<&Path>,
        stdio: ChildStdio,
    ) -> Result<()> {
        let mut cmd = self.command();
        cmd.arg("exec")
            .arg("--process")
            .arg(process_file)
            .arg("--pid-file")
            .arg(pid_file)
            .arg("--detach");
        self.run_process("exec", id, cmd, console_socket, stdio)
            .await
    }

    /// Runs `create` or `exec` for a process: its console socket, its stdio, its id.
    async fn run_process(
        &self,
        verb: &'static str,
        id: &str,
        mut cmd: Command,
        console_socket: Option<&Path>,
        stdio: ChildStdio,
    ) -> Result<()> {
        if let Some(s) = console_socket {
            cmd.arg("--console-socket").arg(s);
        }
        cmd.arg(id)
            .stdin(stdio.stdin)
            .stdout(stdio.stdout)
            .stderr(stdio.stderr);
        self.run_checked(verb, id, cmd, false).await.map(drop)
    }

    /// `start ID`.
    pub async fn start(&self, id: &str) -> Result<()> {
        self.simple("start", id, &[]).await
    }

    /// `kill [--all] ID SIGNAL`.
    pub async fn kill(&self, id: &str, signal: u32, all: bool) -> Result<()> {
        let mut cmd = self.command();
        cmd.arg("kill");
        if all {
            cmd.arg("--all");
        }
        cmd.arg(id).arg(signal.to_string());
        self.run_checked("kill", id, cmd, true).await.map(drop)
    }

    /// `delete [--force] ID`.
    pub async fn delete(&self, id: &str, force: bool) -> Result<()> {
        let extra: &[&str] = if force { &["--force"] } else { &[] };
        let mut cmd = self.command();
        cmd.arg("delete").args(extra).arg(id);
        self.run_checked("delete", id, cmd, true).await.map(drop)
    }

    /// `pause ID`.
    pub async fn pause(&self, id: &str) -> Result<()> {
        self.simple("pause", id, &[]).await
    }

    /// `resume ID`.
    pub async fn resume(&self, id: &str) -> Result<()> {
        self.simple("resume", id, &[]).await
    }

    /// `update --resources FILE ID`.
    pub async fn update(&self, id: &str, resources_file: &Path) -> Result<()> {
        let mut cmd = self.command();
        cmd.arg("update")
            .arg("--resources")
            .arg(resources_file)
            .arg(id);
        self.run_checked("update", id, cmd, true).await.map(drop)
    }

    /// `ps --format json ID`: the pids in the container.
    pub async fn ps(&self, id: &str) -> Result<Vec<u32>> {
        let mut cmd = self.command();
        cmd.arg("ps").arg("--format").arg("json").arg(id);
        let out = self.run_checked("ps", id, cmd, true).await?;
        serde_json::from_slice(&out.stdout)
            .map_err(|e| ShimError::Internal(format!("{} ps {id}: bad output: {e}", self.name())))
    }

    async fn simple(&self, verb: &'static str, id: &str, extra: &[&str]) -> Result<()> {
        let mut cmd = self.command();
        cmd.arg(verb).args(extra).arg(id);
        self.run_checked(verb, id, cmd, true).await.map(drop)
    }

    fn name(&self) -> String {
        self.config
            .binary
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.config.binary.display().to_string())
    }

    async fn run_checked(
        &self,
        verb: &'static str,
        id: &str,
        cmd: Command,
        capture: bool,
    ) -> Result<Output> {
        let log_start = std::fs::metadata(&self.log).map(|m| m.len()).unwrap_or(0);
        let out = self.runner.run(cmd, capture).await.map_err(|e| {
            ShimError::Internal(format!("run {} {verb}: {e}", self.config.binary.display()))
        })?;
        if out.success() {
            return Ok(out);
        }
        let logged = read_log_errors(&self.log, log_start);
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        let detail = if !logged.is_empty() {
            logged
        } else if !stderr.is_empty() {
            stderr
        } else {
            format!("exit status {}", out.status)
        };
        let message = format!("{} {verb} {id}: {detail}", self.name());
        Err(classify(&message))
    }
}

/// Error lines the runtime appended to its JSON log since `offset`, joined.
fn read_log_errors(log: &Path, offset: u64) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(log) else {
        return String::new();
    };
    let mut text = String::new();
    if f.seek(SeekFrom::Start(offset)).is_err() || f.read_to_string(&mut text).is_err() {
        return String::new();
    }
    parse_log_errors(&text)
}

/// The `msg` of each error-level line of a runtime's JSON log; non-JSON lines are kept as is.
pub fn parse_log_errors(text: &str) -> String {
    let mut msgs = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        match serde_json::from_str::<serde_json::Value>(line) {
            Ok(v) => {
                let level = v.get("level").and_then(|l| l.as_str()).unwrap_or("error");
                if matches!(level, "error" | "fatal" | "panic") {
                    if let Some(m) = v.get("msg").and_then(|m| m.as_str()) {
                        msgs.push(m.to_string());
                    }
                }
            }
            Err(_) => msgs.push(line.trim().to_string()),
        }
    }
    msgs.join("; ")
}

/// Maps a runtime's error text to the status the daemon should see.
fn classify(message: &str) -> ShimError {
    let lower = message.to_lowercase();
    if lower.contains("does not exist")
        || lower.contains("not found") && lower.contains("container")
    {
        ShimError::NotFound(message.to_string())
    } else if lower.contains("not running")
        || lower.contains("not paused")
        || lower.contains("already paused")
        || lower.contains("is stopped")
    {
        ShimError::FailedPrecondition(message.to_string())
    } else {
        ShimError::Internal(message.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_errors_are_extracted() {
        let log = concat!(
            r#"{"level":"warning","msg":"ignored","time":"t"}"#,
            "\n",
            r#"{"level":"error","msg":"container_linux.go: starting container process caused: exec: \"nope\": not found","time":"t"}"#,
            "\nplain text line\n"
        );
        let m = parse_log_errors(log);
        assert!(m.contains("exec: \"nope\""), "{m}");
        assert!(m.contains("plain text line"), "{m}");
        assert!(!m.contains("ignored"), "{m}");
    }

    #[test]
    fn classify_maps_states() {
        assert!(matches!(
            classify("runc kill x: container \"x\" does not exist"),
            ShimError::NotFound(_)
        ));
        assert!(matches!(
            classify("runc pause x: container not running"),
            ShimError::FailedPrecondition(_)
        ));
        assert!(matches!(
            classify("runc create x: boom"),
            ShimError::Internal(_)
        ));
    }

    #[test]
    fn missing_binary_is_a_failed_precondition_naming_it() {
        let e = RuntimeConfig::resolve(
            "/nonexistent/runtime-binary",
            "",
            false,
            Path::new("/run/x"),
        )
        .expect_err("missing");
        assert!(matches!(e, ShimError::FailedPrecondition(_)));
        assert!(e.to_string().contains("/nonexistent/runtime-binary"), "{e}");
        let ok = RuntimeConfig::resolve("sh", "", false, Path::new("/run/x")).expect("sh");
        assert!(ok.binary.is_absolute());
        assert_eq!(ok.root, PathBuf::from("/run/x"));
    }
}
