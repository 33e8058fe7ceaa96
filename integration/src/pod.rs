//! CRI runtime test fixtures that work against any CRI endpoint: the test images (busybox,
//! an entrypoint image, a pause stand-in) pushed to a real registry, an [`Endpoint`] that is
//! either crius on one RuntimeClass handler or containerd 1.6 with its CRI plugin, and
//! builders for `PodSandboxConfig` / `ContainerConfig` with unique names per test.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use crius_proto::cri;

use crate::containerd::{Containerd, ContainerdOptions};
use crate::cri::{image_spec, CniConfigs, CriClient, Daemon, DaemonOptions};
use crate::host;
use crate::image_builder::{Compression, Image, ImageConfig, Layer, LinkStyle};
use crate::net::{Conflist, NetSnapshot, ResultCache, TestNetwork};
use crate::registry::Registry;
use crate::shim::random_id;

/// The three images every runtime test uses, by full reference (`127.0.0.1:<port>/…`).
#[derive(Debug, Clone)]
pub struct TestImages {
    /// busybox-static, `Cmd ["sh"]`.
    pub busybox: String,
    /// busybox with `Entrypoint ["sh","-c"]`, `Cmd ["sleep 1000004; true"]`, `WorkingDir /tmp` and
    /// env `IMG_ENV=from-image`, `OVERRIDE=image`: for the Kubernetes command/args/env merge.
    pub entry: String,
    /// A pause stand-in for containerd's `sandbox_image`: `/bin/sleep 2147483647`.
    pub pause: String,
}

/// Builds the test images and pushes them to `reg`.
pub async fn push_test_images(reg: &Registry) -> anyhow::Result<TestImages> {
    let layer = Layer::new()
        .busybox(LinkStyle::Symlink)?
        .build(Compression::Gzip)?;
    let path = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string();
    let busybox = Image::new(ImageConfig::default(), vec![layer.clone()]);
    let entry = Image::new(
        ImageConfig {
            entrypoint: Some(vec!["sh".into(), "-c".into()]),
            cmd: Some(vec!["sleep 1000004; true".into()]),
            env: vec![
                path.clone(),
                "IMG_ENV=from-image".into(),
                "OVERRIDE=image".into(),
            ],
            working_dir: Some("/tmp".into()),
            ..Default::default()
        },
        vec![layer.clone()],
    );
    let pause = Image::new(
        ImageConfig {
            entrypoint: Some(vec!["/bin/sleep".into(), "2147483647".into()]),
            cmd: None,
            env: vec![path],
            ..Default::default()
        },
        vec![layer],
    );
    let client = reg.client();
    client
        .push_image("crius-test/busybox", "v1", &busybox)
        .await?;
    client.push_image("crius-test/entry", "v1", &entry).await?;
    client.push_image("crius-test/pause", "v1", &pause).await?;
    let addr = reg.addr();
    Ok(TestImages {
        busybox: format!("{addr}/crius-test/busybox:v1"),
        entry: format!("{addr}/crius-test/entry:v1"),
        pause: format!("{addr}/crius-test/pause:v1"),
    })
}

/// Which CRI endpoint a test drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// crius, every pod on this RuntimeClass handler (`runc`, `crun`, `youki`, `runc-go`).
    Crius(&'static str),
    /// containerd 1.6's CRI plugin with its default runtime (Go shim + runc).
    Containerd,
}

impl Kind {
    /// A short label for messages: `crius/runc`, `containerd`.
    pub fn label(&self) -> String {
        match self {
            Kind::Crius(h) => format!("crius/{h}"),
            Kind::Containerd => "containerd".into(),
        }
    }

    /// Whether this is crius.
    pub fn is_crius(&self) -> bool {
        matches!(self, Kind::Crius(_))
    }
}

enum Backend {
    Crius(Daemon),
    Containerd(Containerd),
}

/// How [`Endpoint::start_with`] sets up an endpoint beyond the defaults.
#[derive(Debug, Clone, Default)]
pub struct EndpointOptions {
    /// The pod network, written as `10-test.conflist` in the endpoint's CNI conf dir.
    /// `None`: crius gets a loopback-only conflist, containerd (which runs no pod without a
    /// network) a test bridge network of its own at CNI 0.4.0.
    pub network: Option<(Arc<TestNetwork>, Conflist)>,
    /// CNI plugin dirs, searched in order (default: `/usr/lib/cni`). containerd 1.6 takes a
    /// single dir: several are merged into one dir of symlinks, earlier dirs winning.
    pub cni_bin_dirs: Vec<PathBuf>,
    /// Keys set in crius's `[cni]` table (key, TOML value); containerd ignores them.
    pub crius_cni: Vec<(String, String)>,
}

/// A running CRI endpoint with the test images pulled, a scratch dir for pod logs and host
/// files, and a cgroup parent of its own (removed on drop).
pub struct Endpoint {
    /// What it is.
    pub kind: Kind,
    /// A connected client (clone it per task).
    pub client: CriClient,
    /// The test images.
    pub images: TestImages,
    backend: Backend,
    /// Dropped after the daemon: its bridge outlives the pods.
    network: Option<Arc<TestNetwork>>,
    scratch: tempfile::TempDir,
    cgroup_root: String,
}

impl Endpoint {
    /// Starts the endpoint against `reg` and pulls the test images through CRI `PullImage`
    /// (crius also gets the pause image, unused: its sandboxes use the built-in pause).
    pub async fn start(kind: Kind, reg: &Registry, images: &TestImages) -> anyhow::Result<Self> {
        Endpoint::start_with(kind, reg, images, EndpointOptions::default()).await
    }

    /// Starts the endpoint as [`Endpoint::start`] does, set up by `opts`.
    pub async fn start_with(
        kind: Kind,
        reg: &Registry,
        images: &TestImages,
        opts: EndpointOptions,
    ) -> anyhow::Result<Self> {
        let addr = reg.addr().to_string();
        let scratch = tempfile::Builder::new()
            .prefix("crius-rt-")
            .tempdir_in(host::scratch_dir())?;
        let network = match (&opts.network, kind) {
            (Some((net, spec)), _) => Some((net.clone(), spec.clone())),
            (None, Kind::Containerd) => Some((
                Arc::new(TestNetwork::new().context("test network")?),
                Conflist::new("0.4.0"),
            )),
            (None, Kind::Crius(_)) => None,
        };
        let conflist = network
            .as_ref()
            .map(|(net, spec)| ("10-test.conflist".to_string(), net.conflist_bytes(spec)));
        let bin_dirs = if opts.cni_bin_dirs.is_empty() {
            vec![PathBuf::from("/usr/lib/cni")]
        } else {
            opts.cni_bin_dirs.clone()
        };
        let backend = match kind {
            Kind::Crius(_) => {
                let mut cni = opts.crius_cni.clone();
                if !opts.cni_bin_dirs.is_empty() {
                    cni.push(("bin_dirs".into(), toml_paths(&bin_dirs)));
                }
                Backend::Crius(
                    Daemon::start_with(DaemonOptions {
                        extra: format!("\n[registry.hosts.\"{addr}\"]\ninsecure = true\n"),
                        cni,
                        cni_configs: match conflist {
                            Some(file) => CniConfigs::Files(vec![file]),
                            None => CniConfigs::LoopbackOnly,
                        },
                        ..Default::default()
                    })
                    .context("start crius")?,
                )
            }
            Kind::Containerd => {
                let conf_dir = scratch.path().join("net.d");
                std::fs::create_dir_all(&conf_dir)?;
                if let Some((name, contents)) = conflist {
                    std::fs::write(conf_dir.join(name), contents)?;
                }
                let bin_dir = match bin_dirs.as_slice() {
                    [one] => one.clone(),
                    many => merged_dir(many, &scratch.path().join("cni-bin"))?,
                };
                let cri = "plugins.\"io.containerd.grpc.v1.cri\"";
                // Pins go under containerd's own state dir rather than the host-wide
                // /run/netns, so that a test sees only its own.
                let extra_config = format!(
                    "[{cri}]\n  sandbox_image = \"{pause}\"\n  restrict_oom_score_adj = true\n  \
                     netns_mounts_under_state_dir = true\n\
                     [{cri}.cni]\n  bin_dir = \"{bin}\"\n  conf_dir = \"{conf}\"\n\
                     [{cri}.registry.mirrors.\"{addr}\"]\n  endpoint = [\"http://{addr}\"]\n",
                    pause = images.pause,
                    bin = bin_dir.display(),
                    conf = conf_dir.display(),
                );
                Backend::Containerd(
                    Containerd::start(ContainerdOptions {
                        cri: true,
                        extra_config,
                        ..Default::default()
                    })
                    .context("start containerd")?,
                )
            }
        };
        let socket = match &backend {
            Backend::Crius(d) => d.socket.clone(),
            Backend::Containerd(daemon) => daemon.socket.clone(),
        };
        let client = CriClient::connect(&socket).await?;
        let mut ep = Endpoint {
            kind,
            client,
            images: images.clone(),
            backend,
            network: network.map(|(net, _)| net),
            scratch,
            cgroup_root: format!("crius-test-{}", &random_id("")[..10]),
        };
        for image in [&images.busybox, &images.entry, &images.pause] {
            ep.client
                .pull(image)
                .await
                .with_context(|| format!("{}: pull {image}: {}", kind.label(), ep.log_tail()))?;
        }
        Ok(ep)
    }

    /// The test network pods plug into (None: crius with loopback only).
    pub fn network(&self) -> Option<&Arc<TestNetwork>> {
        self.network.as_ref()
    }

    /// The CNI conf dir the daemon watches.
    pub fn cni_conf_dir(&self) -> PathBuf {
        match &self.backend {
            Backend::Crius(d) => d.cni_conf_dir(),
            Backend::Containerd(_) => self.scratch.path().join("net.d"),
        }
    }

    /// The RuntimeClass handler pods are run with (containerd: its default).
    pub fn handler(&self) -> &'static str {
        match self.kind {
            Kind::Crius(h) => h,
            Kind::Containerd => "",
        }
    }

    /// A fresh client on the same channel.
    pub fn client(&self) -> CriClient {
        self.client.clone()
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        match &self.backend {
            Backend::Crius(d) => d.pid(),
            Backend::Containerd(daemon) => daemon.pid(),
        }
    }

    /// The CRI socket (shims name it in `-address`).
    pub fn socket(&self) -> PathBuf {
        match &self.backend {
            Backend::Crius(d) => d.socket.clone(),
            Backend::Containerd(daemon) => daemon.socket.clone(),
        }
    }

    /// The daemon's own temp dir (root, state): where its mounts live.
    pub fn daemon_dir(&self) -> &Path {
        match &self.backend {
            Backend::Crius(d) => d.dir(),
            Backend::Containerd(daemon) => daemon.dir(),
        }
    }

    /// Where pinned network namespaces of this endpoint live: crius's state dir, or
    /// containerd's CRI state dir (`netns_mounts_under_state_dir`).
    pub fn netns_dir(&self) -> PathBuf {
        match &self.backend {
            Backend::Crius(d) => d.dir().join("state/netns"),
            Backend::Containerd(daemon) => {
                daemon.dir().join("state/io.containerd.grpc.v1.cri/netns")
            }
        }
    }

    /// Where this endpoint caches CNI results: crius under its root, containerd (libcni)
    /// in the host-wide `/var/lib/cni/results`.
    pub fn cni_cache(&self) -> ResultCache {
        match &self.backend {
            Backend::Crius(d) => ResultCache::Own(d.dir().join("root/cni/results")),
            Backend::Containerd(_) => ResultCache::Shared(crate::net::LIBCNI_RESULTS.into()),
        }
    }

    /// What pods of this endpoint left on its test network now (an empty snapshot for
    /// crius on loopback only).
    pub fn net_snapshot(&self) -> NetSnapshot {
        self.network
            .as_ref()
            .map(|n| n.snapshot(&self.netns_dir(), &self.cni_cache()))
            .unwrap_or_default()
    }

    /// The crius daemon, for kill -9 / restart tests (None for containerd).
    pub fn crius(&mut self) -> Option<&mut Daemon> {
        match &mut self.backend {
            Backend::Crius(d) => Some(d),
            Backend::Containerd(_) => None,
        }
    }

    /// The daemon's whole log so far.
    pub fn log(&self) -> String {
        match &self.backend {
            Backend::Crius(d) => d.log(),
            Backend::Containerd(daemon) => daemon.log(),
        }
    }

    /// The last few KiB of the daemon's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let log = self.log();
        let mut start = log.len().saturating_sub(6000);
        while !log.is_char_boundary(start) {
            start += 1;
        }
        log[start..].to_string()
    }

    /// The scratch dir for host-side files of tests (pod logs, bind-mount sources).
    pub fn scratch(&self) -> &Path {
        self.scratch.path()
    }

    /// A pod config with a unique name and uid, its log directory under the scratch dir,
    /// a cgroup parent under this endpoint's own cgroup root, and namespaces as the kubelet
    /// sets them by default (network and IPC per pod, PID per container).
    pub fn pod_config(&self, name: &str) -> cri::PodSandboxConfig {
        let suffix = &random_id("")[..8];
        let name = format!("{name}-{suffix}");
        let uid = random_id("uid-");
        let log_dir = self.scratch.path().join("pods").join(&name);
        let _ = std::fs::create_dir_all(&log_dir);
        cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: name.clone(),
                uid: uid.clone(),
                namespace: "crius-test".into(),
                attempt: 0,
            }),
            hostname: name.chars().take(63).collect(),
            log_directory: log_dir.display().to_string(),
            labels: HashMap::from([("suite".to_string(), "runtime".to_string())]),
            linux: Some(cri::LinuxPodSandboxConfig {
                cgroup_parent: format!("/{}/pod{}", self.cgroup_root, &uid[4..20]),
                security_context: Some(cri::LinuxSandboxSecurityContext {
                    namespace_options: Some(namespaces(
                        cri::NamespaceMode::Pod,
                        cri::NamespaceMode::Container,
                    )),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// `RunPodSandbox` of `config` on this endpoint's handler.
    pub async fn run_pod(&self, config: &cri::PodSandboxConfig) -> Result<String, tonic::Status> {
        self.client().run_pod(config, self.handler()).await
    }

    /// Create + start of `config` in pod `pod_id`; the container id.
    pub async fn run_container(
        &self,
        pod_id: &str,
        pod: &cri::PodSandboxConfig,
        config: &cri::ContainerConfig,
    ) -> anyhow::Result<String> {
        let mut c = self.client();
        let limit = Duration::from_secs(60);
        let label = self.kind.label();
        let id = tokio::time::timeout(limit, c.create_container(pod_id, config, pod))
            .await
            .with_context(|| format!("{label}: CreateContainer hung for {limit:?}"))?
            .with_context(|| format!("{label}: CreateContainer"))?;
        tokio::time::timeout(limit, c.start(&id))
            .await
            .with_context(|| format!("{label}: StartContainer {id} hung for {limit:?}"))?
            .with_context(|| format!("{label}: StartContainer {id}"))?;
        Ok(id)
    }

    /// Stops and removes a pod (with its containers), ignoring errors: test cleanup.
    pub async fn teardown(&self, pod_id: &str) {
        let mut c = self.client();
        let _ = c.stop_pod(pod_id).await;
        let _ = c.remove_pod(pod_id).await;
    }

    /// The cgroup dirs of this endpoint's root in every mounted hierarchy.
    fn cgroup_dirs(&self) -> Vec<PathBuf> {
        let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") else {
            return Vec::new();
        };
        let mut dirs: Vec<PathBuf> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.path().join(&self.cgroup_root))
            .collect();
        dirs.push(Path::new("/sys/fs/cgroup").join(&self.cgroup_root));
        dirs.into_iter().filter(|d| d.is_dir()).collect()
    }
}

/// A `NamespaceOption` with `network` and `pid` as given and IPC per pod.
pub fn namespaces(network: cri::NamespaceMode, pid: cri::NamespaceMode) -> cri::NamespaceOption {
    cri::NamespaceOption {
        network: network as i32,
        pid: pid as i32,
        ipc: cri::NamespaceMode::Pod as i32,
        ..Default::default()
    }
}

/// A container config running `command` (the image's entrypoint is replaced) from `image`,
/// logging to `<name>.log` in the pod's log directory, with the namespaces the kubelet
/// copies from the pod (network and IPC per pod, PID per container).
pub fn container_config(name: &str, image: &str, command: &[&str]) -> cri::ContainerConfig {
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: image_spec(image),
        command: command.iter().map(|s| s.to_string()).collect(),
        log_path: format!("{name}.log"),
        labels: HashMap::from([("ctr".to_string(), name.to_string())]),
        linux: Some(cri::LinuxContainerConfig {
            resources: Some(cri::LinuxContainerResources::default()),
            security_context: Some(cri::LinuxContainerSecurityContext {
                namespace_options: Some(namespaces(
                    cri::NamespaceMode::Pod,
                    cri::NamespaceMode::Container,
                )),
                ..Default::default()
            }),
        }),
        ..Default::default()
    }
}

/// `sh -c <script>` as a container command.
pub fn sh(script: &str) -> Vec<String> {
    vec!["sh".into(), "-c".into(), script.into()]
}

/// The container's security context (created if absent).
pub fn security(c: &mut cri::ContainerConfig) -> &mut cri::LinuxContainerSecurityContext {
    c.linux
        .get_or_insert_with(Default::default)
        .security_context
        .get_or_insert_with(Default::default)
}

/// The container's Linux resources (created if absent).
pub fn resources(c: &mut cri::ContainerConfig) -> &mut cri::LinuxContainerResources {
    c.linux
        .get_or_insert_with(Default::default)
        .resources
        .get_or_insert_with(Default::default)
}

/// The pod's security context (created if absent).
pub fn pod_security(p: &mut cri::PodSandboxConfig) -> &mut cri::LinuxSandboxSecurityContext {
    p.linux
        .get_or_insert_with(Default::default)
        .security_context
        .get_or_insert_with(Default::default)
}

/// The full path of a container's log: the pod's log directory joined with its log path.
pub fn log_file(pod: &cri::PodSandboxConfig, c: &cri::ContainerConfig) -> PathBuf {
    Path::new(&pod.log_directory).join(&c.log_path)
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        // A test that failed half-way leaves containerd's pods running, and containerd's
        // shims outlive it (crius's Daemon cleans up its own on drop).
        if let Backend::Containerd(daemon) = &self.backend {
            containerd_leftovers(daemon.dir(), &daemon.socket);
        }
        // What the daemon cannot remove: our cgroup root (pods' parents). Pods must have
        // been torn down by then; a busy cgroup stays (EBUSY). The test network's bridge
        // goes with the last reference to it, after the daemon (fields drop in order).
        for root in self.cgroup_dirs() {
            remove_cgroup_tree(&root);
        }
    }
}

/// Removes what containerd's pods left when a test ended without removing them: their
/// containers (the Go shim keeps runc state in the host-wide `/run/containerd/runc/k8s.io`;
/// ours are the tasks under this containerd's state dir), its shims, and libcni's cached
/// loopback results for them. Nothing is there after a test that cleaned up.
fn containerd_leftovers(dir: &Path, socket: &Path) {
    let tasks = dir.join("state/io.containerd.runtime.v2.task/k8s.io");
    let ids: Vec<String> = std::fs::read_dir(&tasks)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    for id in &ids {
        let _ = std::process::Command::new("runc")
            .args([
                "--root",
                "/run/containerd/runc/k8s.io",
                "delete",
                "--force",
                id,
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
    for pid in crate::leaks::shims_of(socket) {
        host::kill(pid, libc::SIGKILL);
    }
    for id in &ids {
        let _ = std::fs::remove_file(
            Path::new(crate::net::LIBCNI_RESULTS).join(format!("cni-loopback-{id}-lo")),
        );
    }
}

/// A TOML array of paths.
fn toml_paths(dirs: &[PathBuf]) -> String {
    let items: Vec<String> = dirs
        .iter()
        .map(|d| format!("{:?}", d.display().to_string()))
        .collect();
    format!("[{}]", items.join(", "))
}

/// `dest` made a dir of symlinks to every file of `dirs`, the first dir holding a name
/// winning (a search path as one dir, for containerd's single `bin_dir`).
fn merged_dir(dirs: &[PathBuf], dest: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dest)?;
    for dir in dirs {
        let entries =
            std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
        for e in entries.filter_map(|e| e.ok()) {
            let link = dest.join(e.file_name());
            if link.symlink_metadata().is_err() {
                std::os::unix::fs::symlink(e.path(), &link)
                    .with_context(|| format!("linking {}", link.display()))?;
            }
        }
    }
    Ok(dest.to_path_buf())
}

/// Removes a cgroup dir and its (empty) children, deepest first.
fn remove_cgroup_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.filter_map(|e| e.ok()) {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                remove_cgroup_tree(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

/// Waits until `f` answers `Some`, polling every 50 ms for at most `timeout`.
pub async fn poll<T, F, Fut>(timeout: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
