//! A daemon stand-in for driving runtime v2 shims: an events server at `TTRPC_ADDRESS`,
//! temp bundles, and the launch/connect/cleanup steps a daemon performs. The same fixture
//! drives our shim (with runc, crun or youki) and containerd's Go shim, which is how the
//! suite shows that third-party shims plug in unmodified.

use std::path::{Path, PathBuf};
use std::time::Duration;

use runtime_v2_api::{
    serve_events, Bootstrap, CreateTask, Envelope, EventsServer, RuncOptions, ShimLaunch,
    TaskClient, TaskEvent,
};
use tokio::sync::{mpsc, Mutex};

use crate::bundle::{write_bundle, Bundle, BundleSpec};
use crate::host;

/// Namespace used for every shim in the suite.
pub const NAMESPACE: &str = "crius-test";

/// Which shim binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShimKind {
    /// `containerd-shim-crius-v2`, built by this workspace.
    Crius,
    /// containerd's Go shim, `/usr/bin/containerd-shim-runc-v2`.
    GoRunc,
}

/// A shim plus the low-level runtime it drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Case {
    /// The shim.
    pub shim: ShimKind,
    /// The low-level runtime's binary name (`runc`, `crun`, `youki`).
    pub runtime: &'static str,
}

impl Case {
    /// Our shim driving `runtime`.
    pub const fn crius(runtime: &'static str) -> Self {
        Case {
            shim: ShimKind::Crius,
            runtime,
        }
    }

    /// containerd's Go shim driving runc.
    pub const fn go_runc() -> Self {
        Case {
            shim: ShimKind::GoRunc,
            runtime: "runc",
        }
    }

    /// The shim binary.
    pub fn shim_binary(&self) -> PathBuf {
        match self.shim {
            ShimKind::Crius => host::workspace_binary("containerd-shim-crius-v2"),
            ShimKind::GoRunc => PathBuf::from("/usr/bin/containerd-shim-runc-v2"),
        }
    }

    /// The runtime binary's absolute path (youki lives in `~/.cargo/bin`).
    pub fn runtime_binary(&self) -> PathBuf {
        host::find_binary(self.runtime).unwrap_or_else(|| PathBuf::from(self.runtime))
    }
}

/// How this host's cgroups are mounted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupMode {
    /// Only the unified hierarchy.
    V2,
    /// v1 controllers (with or without an empty v2 hierarchy beside them).
    V1OrHybrid,
}

/// The host's cgroup mode, from the filesystem type of `/sys/fs/cgroup`.
pub fn cgroup_mode() -> CgroupMode {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let v2_root = mounts
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some("/sys/fs/cgroup") && l.contains("cgroup2"));
    if v2_root {
        CgroupMode::V2
    } else {
        CgroupMode::V1OrHybrid
    }
}

/// A daemon stand-in: a temp dir, the events server, and the launch parameters.
pub struct Fixture {
    dir: tempfile::TempDir,
    /// The (never listened-on) daemon socket path passed as `-address`.
    pub address: String,
    /// The events socket (`TTRPC_ADDRESS`).
    pub ttrpc_address: PathBuf,
    server: Option<EventsServer>,
    events: Mutex<mpsc::Receiver<Envelope>>,
    seen: Mutex<Vec<Envelope>>,
    case: Case,
}

/// One task created through a shim by the fixture.
pub struct Container {
    /// Task id.
    pub id: String,
    /// Its bundle.
    pub bundle: Bundle,
    /// The shim's bootstrap.
    pub bootstrap: Bootstrap,
    /// A connected client.
    pub client: TaskClient,
    /// File receiving stdout (`file://`).
    pub stdout: PathBuf,
    /// File receiving stderr (`file://`).
    pub stderr: PathBuf,
}

impl Fixture {
    /// A fixture for `case` with its own temp dir and events server.
    pub async fn new(case: Case) -> anyhow::Result<Fixture> {
        // Short paths: unix socket paths are limited to 108 bytes.
        let dir = tempfile::Builder::new()
            .prefix("crius-it-")
            .tempdir_in("/tmp")?;
        let address = dir.path().join("d.sock").display().to_string();
        let ttrpc_address = dir.path().join("d.sock.ttrpc");
        let (server, rx) = serve_events(&ttrpc_address).await?;
        Ok(Fixture {
            dir,
            address,
            ttrpc_address,
            server: Some(server),
            events: Mutex::new(rx),
            seen: Mutex::new(Vec::new()),
            case,
        })
    }

    /// The case this fixture runs.
    pub fn case(&self) -> Case {
        self.case
    }

    /// The fixture's temp dir.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The runtime state root handed to the shim, so cleanup knows where runc state is.
    pub fn runtime_root(&self) -> PathBuf {
        self.dir.path().join(format!("rt-{}", self.case.runtime))
    }

    /// The runc options every task gets.
    pub fn options(&self) -> RuncOptions {
        RuncOptions {
            binary_name: self.case.runtime_binary().display().to_string(),
            root: self.runtime_root().display().to_string(),
            systemd_cgroup: false,
        }
    }

    /// How a daemon launches the shim for `id` with `bundle`.
    pub fn launch(&self, id: &str, bundle: &Path) -> ShimLaunch {
        ShimLaunch {
            binary: self.case.shim_binary(),
            namespace: NAMESPACE.to_string(),
            id: id.to_string(),
            bundle: bundle.to_path_buf(),
            address: self.address.clone(),
            ttrpc_address: self.ttrpc_address.display().to_string(),
            publish_binary: PathBuf::from("/bin/false"),
            debug: false,
            options: None,
        }
    }

    /// Writes a bundle for `spec` under the fixture dir.
    pub fn bundle(&self, spec: &BundleSpec) -> anyhow::Result<Bundle> {
        Ok(write_bundle(&self.dir.path().join(&spec.id), spec)?)
    }

    /// Writes the bundle, starts (or reuses) the shim, connects, and creates the task with
    /// stdout/stderr going to files. Does not start it.
    pub async fn create(&self, spec: &BundleSpec) -> anyhow::Result<Container> {
        let stdout = self.dir.path().join(format!("{}.out", spec.id));
        let stderr = self.dir.path().join(format!("{}.err", spec.id));
        let mut c = self
            .create_with_stdio(
                spec,
                &format!("file://{}", stdout.display()),
                &format!("file://{}", stderr.display()),
            )
            .await?;
        c.stdout = stdout;
        c.stderr = stderr;
        Ok(c)
    }

    /// Like [`Fixture::create`] with the given stdout/stderr URIs; the container's `stdout`
    /// and `stderr` paths are left empty.
    pub async fn create_with_stdio(
        &self,
        spec: &BundleSpec,
        stdout: &str,
        stderr: &str,
    ) -> anyhow::Result<Container> {
        let bundle = self.bundle(spec)?;
        let (bootstrap, client) = self.connect(&spec.id, &bundle.dir).await?;
        client
            .create(CreateTask {
                id: spec.id.clone(),
                bundle: bundle.dir.clone(),
                rootfs: bundle.rootfs.clone(),
                terminal: spec.terminal,
                stdin: String::new(),
                stdout: stdout.to_string(),
                stderr: stderr.to_string(),
                options: Some(self.options()),
                start_at_create: spec.start_at_create,
            })
            .await?;
        Ok(Container {
            id: spec.id.clone(),
            bundle,
            bootstrap,
            client,
            stdout: PathBuf::new(),
            stderr: PathBuf::new(),
        })
    }

    /// Starts the shim for `id` (or finds its pod's shim) and connects to it.
    pub async fn connect(
        &self,
        id: &str,
        bundle: &Path,
    ) -> anyhow::Result<(Bootstrap, TaskClient)> {
        let bootstrap = self.launch(id, bundle).start().await?;
        let client = TaskClient::connect(&bootstrap, Duration::from_secs(5)).await?;
        Ok((bootstrap, client))
    }

    /// Creates and starts a task.
    pub async fn run(&self, spec: &BundleSpec) -> anyhow::Result<Container> {
        let c = self.create(spec).await?;
        c.client.start(&c.id, "").await?;
        Ok(c)
    }

    /// Waits for an event matching `pred`, remembering every event seen.
    pub async fn wait_event(
        &self,
        timeout: Duration,
        pred: impl Fn(&TaskEvent) -> bool,
    ) -> Option<Envelope> {
        if let Some(e) = self.seen.lock().await.iter().find(|e| pred(&e.event)) {
            return Some(e.clone());
        }
        let mut rx = self.events.lock().await;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let next = tokio::time::timeout_at(deadline, rx.recv()).await.ok()??;
            let hit = pred(&next.event);
            self.seen.lock().await.push(next.clone());
            if hit {
                return Some(next);
            }
        }
    }

    /// Topics seen so far (after draining what is queued) for one container, in order.
    pub async fn topics_for(&self, id: &str) -> Vec<String> {
        let mut rx = self.events.lock().await;
        let mut seen = self.seen.lock().await;
        while let Ok(e) = rx.try_recv() {
            seen.push(e);
        }
        seen.iter()
            .filter(|e| event_container(&e.event) == Some(id))
            .map(|e| e.topic.clone())
            .collect()
    }

    /// Best-effort teardown of a container: kill, delete, shut the shim down, unmount.
    pub async fn cleanup(&self, c: &Container) {
        let _ = c.client.kill(&c.id, "", 9, true).await;
        let _ = tokio::time::timeout(Duration::from_secs(5), c.client.wait(&c.id, "")).await;
        let _ = c.client.delete(&c.id, "").await;
        let _ = c.client.shutdown(&c.id, false).await;
        self.force_cleanup(&c.id, &c.bundle.dir);
    }

    /// Kills whatever may be left of `id` without asking its shim.
    pub fn force_cleanup(&self, id: &str, bundle: &Path) {
        let _ = std::process::Command::new(self.case.runtime_binary())
            .arg("--root")
            .arg(self.runtime_root())
            .args(["delete", "--force", id])
            .stderr(std::process::Stdio::null())
            .status();
        let rootfs = bundle.join("rootfs");
        if !host::mounts_under(&rootfs).is_empty() {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&rootfs)
                .status();
        }
        // Remove the cgroup the bundle asked for (v1: one dir per controller).
        if let Ok(ctrls) = std::fs::read_dir("/sys/fs/cgroup") {
            for c in ctrls.flatten() {
                let _ = std::fs::remove_dir(c.path().join("crius-test").join(id));
            }
        }
    }

    /// Pids of shims whose bundles live in this fixture's dir (from `shim.pid` files).
    pub fn shim_pids(&self) -> Vec<u32> {
        let Ok(entries) = std::fs::read_dir(self.dir.path()) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| std::fs::read_to_string(e.path().join("shim.pid")).ok())
            .filter_map(|s| s.trim().parse().ok())
            .filter(|p| host::pid_exists(*p))
            .collect()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        // Any shim still alive belongs to a failed test: do not leave it running.
        for pid in self.shim_pids() {
            host::kill(pid, libc::SIGKILL);
        }
        if let Ok(entries) = std::fs::read_dir(self.dir.path()) {
            for e in entries.flatten() {
                let p = e.path();
                if p.join("config.json").exists() {
                    if let Some(id) = p.file_name().and_then(|n| n.to_str()) {
                        self.force_cleanup(id, &p);
                    }
                }
            }
        }
        drop(self.server.take());
    }
}

/// The container id an event is about.
pub fn event_container(e: &TaskEvent) -> Option<&str> {
    match e {
        TaskEvent::Create { container_id, .. }
        | TaskEvent::Start { container_id, .. }
        | TaskEvent::Exit { container_id, .. }
        | TaskEvent::Oom { container_id }
        | TaskEvent::ExecAdded { container_id, .. }
        | TaskEvent::ExecStarted { container_id, .. }
        | TaskEvent::Delete { container_id, .. }
        | TaskEvent::Paused { container_id }
        | TaskEvent::Resumed { container_id }
        | TaskEvent::Checkpointed { container_id } => Some(container_id),
        TaskEvent::Unknown { .. } => None,
    }
}

/// A random 32-hex-digit id, unique enough for parallel tests.
pub fn random_id(prefix: &str) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(std::process::id().to_le_bytes());
    h.update(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
            .to_le_bytes(),
    );
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    h.update(
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            .to_le_bytes(),
    );
    format!("{prefix}{}", &hex::encode(h.finalize())[..24])
}
