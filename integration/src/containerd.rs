//! A real containerd 1.6 (Debian's) on a temp root, state and socket, for differential
//! tests and benchmarks. Each instance is isolated; dropping it stops containerd.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::host;

/// A running containerd.
pub struct Containerd {
    dir: tempfile::TempDir,
    child: Child,
    /// Its gRPC socket.
    pub socket: PathBuf,
}

/// Options for a containerd instance.
#[derive(Debug, Clone, Default)]
pub struct ContainerdOptions {
    /// Keep the CRI plugin enabled (it is disabled by default: faster, no CNI noise).
    pub cri: bool,
    /// Extra directories put first on containerd's `PATH` (where it finds shims).
    pub path_dirs: Vec<PathBuf>,
    /// TOML (config version 2) appended to the generated config, e.g. CRI registry mirrors:
    /// `[plugins."io.containerd.grpc.v1.cri".registry.mirrors."<host>"]`.
    pub extra_config: String,
}

impl Containerd {
    /// Starts containerd and waits until its socket answers `ctr version`.
    pub fn start(opts: ContainerdOptions) -> anyhow::Result<Containerd> {
        let dir = tempfile::Builder::new()
            .prefix("crius-ctd-")
            .tempdir_in(host::scratch_dir())?;
        let socket = dir.path().join("c.sock");
        let disabled = if opts.cri {
            ""
        } else {
            r#"disabled_plugins = ["io.containerd.grpc.v1.cri"]"#
        };
        let config = format!(
            r#"version = 2
root = "{root}"
state = "{state}"
{disabled}
[grpc]
  address = "{sock}"
[ttrpc]
  address = "{sock}.ttrpc"
[debug]
  address = "{sock}.debug"
{extra}
"#,
            root = dir.path().join("root").display(),
            state = dir.path().join("state").display(),
            sock = socket.display(),
            extra = opts.extra_config,
        );
        let cfg_path = dir.path().join("config.toml");
        std::fs::write(&cfg_path, config)?;
        let mut path = opts
            .path_dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>();
        path.push(std::env::var("PATH").unwrap_or_default());
        let log = std::fs::File::create(dir.path().join("containerd.log"))?;
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&cfg_path)
            .env("PATH", path.join(":"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        let mut c = Containerd { dir, child, socket };
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if c.socket.exists()
                && c.ctr(&["version"])
                    .map(|o| o.status.success())
                    .unwrap_or(false)
            {
                return Ok(c);
            }
            if let Ok(Some(status)) = c.child.try_wait() {
                anyhow::bail!("containerd exited with {status}: {}", c.log());
            }
            if std::time::Instant::now() > deadline {
                anyhow::bail!("containerd did not come up in 30 s: {}", c.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs `ctr` against this containerd.
    pub fn ctr(&self, args: &[&str]) -> std::io::Result<std::process::Output> {
        Command::new("ctr")
            .arg("--address")
            .arg(&self.socket)
            .args(args)
            .stdin(Stdio::null())
            .output()
    }

    /// containerd's own log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    /// The instance's temp dir.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// containerd's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        host::kill(self.child.id(), libc::SIGTERM);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // containerd leaves its snapshot mounts behind when killed mid-way: unmount them so
        // the temp dir can go.
        let mut mounts = host::mounts_under(self.dir.path());
        mounts.sort();
        for m in mounts.iter().rev() {
            let _ = Command::new("umount").arg("-l").arg(m).status();
        }
    }
}
