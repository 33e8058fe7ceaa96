//! A CRI v1 client over a unix socket, and a crius daemon started on temp dirs.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;

use crius_proto::cri;
use crius_proto::cri::{
    image_service_client::ImageServiceClient, runtime_service_client::RuntimeServiceClient,
};
use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint};
use tonic::Status;

use crate::host;

/// Connects a tonic channel to a unix socket.
pub async fn channel(socket: &Path) -> anyhow::Result<Channel> {
    let path = socket.to_path_buf();
    let channel = Endpoint::try_from("http://[::]:50051")?
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        }))
        .await?;
    Ok(channel)
}

/// Both CRI clients on one channel. Cloning is cheap (the channel is shared), so each
/// concurrent scenario takes its own clone.
#[derive(Clone)]
pub struct CriClient {
    /// RuntimeService.
    pub runtime: RuntimeServiceClient<Channel>,
    /// ImageService.
    pub image: ImageServiceClient<Channel>,
    /// The channel both run on, for calls outside the generated clients.
    pub channel: Channel,
}

impl CriClient {
    /// Connects to a CRI endpoint.
    pub async fn connect(socket: &Path) -> anyhow::Result<CriClient> {
        let ch = channel(socket).await?;
        Ok(CriClient {
            runtime: RuntimeServiceClient::new(ch.clone()),
            image: ImageServiceClient::new(ch.clone()),
            channel: ch,
        })
    }

    /// `ListContainers` with no filter, its reply left encoded: the time of this call is
    /// the runtime's (request, listing, encoding, transfer to the last byte), without the
    /// client's own decoding. [`decode_containers`] decodes it afterwards.
    pub async fn list_containers_encoded(&mut self) -> Result<bytes::Bytes, Status> {
        let mut grpc = tonic::client::Grpc::new(self.channel.clone());
        grpc.ready()
            .await
            .map_err(|e| Status::unavailable(format!("channel not ready: {e}")))?;
        let path = tonic::codegen::http::uri::PathAndQuery::from_static(
            "/runtime.v1.RuntimeService/ListContainers",
        );
        grpc.unary(
            tonic::Request::new(cri::ListContainersRequest::default()),
            path,
            crate::encoded::EncodedReply::<cri::ListContainersRequest>::default(),
        )
        .await
        .map(|r| r.into_inner())
    }

    /// `PullImage` of `image` without credentials; the image ref on success.
    pub async fn pull(&mut self, image: &str) -> Result<String, tonic::Status> {
        self.image
            .pull_image(crius_proto::cri::PullImageRequest {
                image: image_spec(image),
                ..Default::default()
            })
            .await
            .map(|r| r.into_inner().image_ref)
    }

    /// Non-verbose `ImageStatus` of `image`: `None` when absent.
    pub async fn image_status(
        &mut self,
        image: &str,
    ) -> Result<Option<crius_proto::cri::Image>, tonic::Status> {
        self.image
            .image_status(crius_proto::cri::ImageStatusRequest {
                image: image_spec(image),
                verbose: false,
            })
            .await
            .map(|r| r.into_inner().image)
    }
}

/// RuntimeService calls, one per RPC, each answering the raw `tonic::Status` so that tests
/// can assert codes and messages.
impl CriClient {
    /// `Version`.
    pub async fn version(&mut self) -> Result<cri::VersionResponse, Status> {
        let req = cri::VersionRequest {
            version: "v1".into(),
        };
        self.runtime.version(req).await.map(|r| r.into_inner())
    }

    /// `Status`.
    pub async fn status(&mut self, verbose: bool) -> Result<cri::StatusResponse, Status> {
        self.runtime
            .status(cri::StatusRequest { verbose })
            .await
            .map(|r| r.into_inner())
    }

    /// `RunPodSandbox` of `config` with `handler` (empty = the default); the pod id.
    pub async fn run_pod(
        &mut self,
        config: &cri::PodSandboxConfig,
        handler: &str,
    ) -> Result<String, Status> {
        self.runtime
            .run_pod_sandbox(cri::RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: handler.into(),
            })
            .await
            .map(|r| r.into_inner().pod_sandbox_id)
    }

    /// `StopPodSandbox`.
    pub async fn stop_pod(&mut self, id: &str) -> Result<(), Status> {
        self.runtime
            .stop_pod_sandbox(cri::StopPodSandboxRequest {
                pod_sandbox_id: id.into(),
            })
            .await
            .map(|_| ())
    }

    /// `RemovePodSandbox`.
    pub async fn remove_pod(&mut self, id: &str) -> Result<(), Status> {
        self.runtime
            .remove_pod_sandbox(cri::RemovePodSandboxRequest {
                pod_sandbox_id: id.into(),
            })
            .await
            .map(|_| ())
    }

    /// `PodSandboxStatus`.
    pub async fn pod_status(
        &mut self,
        id: &str,
        verbose: bool,
    ) -> Result<cri::PodSandboxStatusResponse, Status> {
        self.runtime
            .pod_sandbox_status(cri::PodSandboxStatusRequest {
                pod_sandbox_id: id.into(),
                verbose,
            })
            .await
            .map(|r| r.into_inner())
    }

    /// `ListPodSandbox` with an optional filter.
    pub async fn list_pods(
        &mut self,
        filter: Option<cri::PodSandboxFilter>,
    ) -> Result<Vec<cri::PodSandbox>, Status> {
        self.runtime
            .list_pod_sandbox(cri::ListPodSandboxRequest { filter })
            .await
            .map(|r| r.into_inner().items)
    }

    /// `CreateContainer` in pod `pod_id` (created from `pod_config`); the container id.
    pub async fn create_container(
        &mut self,
        pod_id: &str,
        config: &cri::ContainerConfig,
        pod_config: &cri::PodSandboxConfig,
    ) -> Result<String, Status> {
        self.runtime
            .create_container(cri::CreateContainerRequest {
                pod_sandbox_id: pod_id.into(),
                config: Some(config.clone()),
                sandbox_config: Some(pod_config.clone()),
            })
            .await
            .map(|r| r.into_inner().container_id)
    }

    /// `StartContainer`.
    pub async fn start(&mut self, id: &str) -> Result<(), Status> {
        self.runtime
            .start_container(cri::StartContainerRequest {
                container_id: id.into(),
            })
            .await
            .map(|_| ())
    }

    /// `StopContainer` with a grace period of `timeout` seconds.
    pub async fn stop(&mut self, id: &str, timeout: i64) -> Result<(), Status> {
        self.runtime
            .stop_container(cri::StopContainerRequest {
                container_id: id.into(),
                timeout,
            })
            .await
            .map(|_| ())
    }

    /// `RemoveContainer`.
    pub async fn remove(&mut self, id: &str) -> Result<(), Status> {
        self.runtime
            .remove_container(cri::RemoveContainerRequest {
                container_id: id.into(),
            })
            .await
            .map(|_| ())
    }

    /// `ContainerStatus`.
    pub async fn container_status(
        &mut self,
        id: &str,
        verbose: bool,
    ) -> Result<cri::ContainerStatusResponse, Status> {
        self.runtime
            .container_status(cri::ContainerStatusRequest {
                container_id: id.into(),
                verbose,
            })
            .await
            .map(|r| r.into_inner())
    }

    /// The non-verbose status of a container (an error when the answer carries none).
    pub async fn status_of(&mut self, id: &str) -> Result<cri::ContainerStatus, Status> {
        self.container_status(id, false)
            .await?
            .status
            .ok_or_else(|| Status::internal(format!("ContainerStatus of {id}: no status")))
    }

    /// Decodes a reply of [`CriClient::list_containers_encoded`].
    pub fn decode_containers(reply: &[u8]) -> Result<Vec<cri::Container>, Status> {
        use prost::Message;
        cri::ListContainersResponse::decode(reply)
            .map(|r| r.containers)
            .map_err(|e| Status::internal(format!("ListContainersResponse: {e}")))
    }

    /// `ListContainers` with an optional filter.
    pub async fn list_containers(
        &mut self,
        filter: Option<cri::ContainerFilter>,
    ) -> Result<Vec<cri::Container>, Status> {
        self.runtime
            .list_containers(cri::ListContainersRequest { filter })
            .await
            .map(|r| r.into_inner().containers)
    }

    /// `ExecSync` of `cmd` with a timeout in seconds (0 = none).
    pub async fn exec_sync(
        &mut self,
        id: &str,
        cmd: &[&str],
        timeout: i64,
    ) -> Result<cri::ExecSyncResponse, Status> {
        self.runtime
            .exec_sync(cri::ExecSyncRequest {
                container_id: id.into(),
                cmd: cmd.iter().map(|s| s.to_string()).collect(),
                timeout,
            })
            .await
            .map(|r| r.into_inner())
    }

    /// `ContainerStats`.
    pub async fn container_stats(&mut self, id: &str) -> Result<cri::ContainerStats, Status> {
        self.runtime
            .container_stats(cri::ContainerStatsRequest {
                container_id: id.into(),
            })
            .await?
            .into_inner()
            .stats
            .ok_or_else(|| Status::internal(format!("ContainerStats of {id}: no stats")))
    }

    /// `ReopenContainerLog`.
    pub async fn reopen_log(&mut self, id: &str) -> Result<(), Status> {
        self.runtime
            .reopen_container_log(cri::ReopenContainerLogRequest {
                container_id: id.into(),
            })
            .await
            .map(|_| ())
    }

    /// `UpdateContainerResources` with new Linux resources.
    pub async fn update_resources(
        &mut self,
        id: &str,
        linux: cri::LinuxContainerResources,
    ) -> Result<(), Status> {
        self.runtime
            .update_container_resources(cri::UpdateContainerResourcesRequest {
                container_id: id.into(),
                linux: Some(linux),
                ..Default::default()
            })
            .await
            .map(|_| ())
    }

    /// `GetContainerEvents`: the event stream.
    pub async fn container_events(
        &mut self,
    ) -> Result<tonic::Streaming<cri::ContainerEventResponse>, Status> {
        self.runtime
            .get_container_events(cri::GetEventsRequest {})
            .await
            .map(|r| r.into_inner())
    }

    /// Polls `ContainerStatus` until the container is in `state` or `timeout` passes; the
    /// last status seen.
    pub async fn wait_state(
        &mut self,
        id: &str,
        state: cri::ContainerState,
        timeout: Duration,
    ) -> Result<cri::ContainerStatus, Status> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let st = self.status_of(id).await?;
            if st.state == state as i32 || tokio::time::Instant::now() >= deadline {
                return Ok(st);
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

/// A CRI `ImageSpec` naming `image`.
pub fn image_spec(image: &str) -> Option<crius_proto::cri::ImageSpec> {
    Some(crius_proto::cri::ImageSpec {
        image: image.into(),
        ..Default::default()
    })
}

/// A crius daemon on temp dirs. Dropping it stops the daemon.
pub struct Daemon {
    dir: tempfile::TempDir,
    child: Child,
    /// CRI socket.
    pub socket: PathBuf,
}

/// The CNI configs a test daemon's conf dir starts with.
#[derive(Debug, Clone, Default)]
pub enum CniConfigs {
    /// `99-loopback.conflist`, loopback only: pods get a netns with `lo` and the daemon
    /// never falls back to its default bridge network.
    #[default]
    LoopbackOnly,
    /// Nothing: the daemon reports NetworkReady=false (or uses its default network, if
    /// `default_network` is set).
    Empty,
    /// These files (name, contents).
    Files(Vec<(String, Vec<u8>)>),
}

/// How [`Daemon::start_with`] sets the daemon up.
#[derive(Debug, Clone, Default)]
pub struct DaemonOptions {
    /// TOML appended to the config (whole tables only: it must not repeat a table header
    /// the default config has, such as `[cni]`).
    pub extra: String,
    /// Keys set in the `[cni]` table (key, TOML value), replacing the default's value:
    /// `("plugin_timeout_secs", "2")`. `default_network` is `false` unless set here.
    pub cni: Vec<(String, String)>,
    /// The conf dir's initial contents.
    pub cni_configs: CniConfigs,
    /// Other keys of the default config's tables (table, key, TOML value), e.g.
    /// `("streaming", "token_ttl_secs", "1")`.
    pub settings: Vec<(String, String, String)>,
}

impl Daemon {
    /// Starts `crius` (from the workspace's target dir) with a config derived from the
    /// embedded default: temp `root`, `state`, socket and CNI conf dir (holding a
    /// loopback-only conflist), plus `extra` TOML appended.
    pub fn start(extra: &str) -> anyhow::Result<Daemon> {
        Daemon::start_with(DaemonOptions {
            extra: extra.into(),
            ..Default::default()
        })
    }

    /// Starts `crius` as [`Daemon::start`] does, set up by `opts`.
    pub fn start_with(opts: DaemonOptions) -> anyhow::Result<Daemon> {
        let dir = tempfile::Builder::new()
            .prefix("crius-d-")
            .tempdir_in(host::scratch_dir())?;
        let socket = dir.path().join("crius.sock");
        let mut config = config_text(dir.path(), &socket, &opts.extra)?;
        // Test daemons never fall back to crius's own bridge network (one bridge and
        // subnet for the whole host, which parallel tests would share) unless asked to.
        let no_default = [("default_network".to_string(), "false".to_string())];
        for (key, value) in no_default.iter().chain(&opts.cni) {
            config = set_table_key(&config, "cni", key, value)?;
        }
        for (table, key, value) in &opts.settings {
            config = set_table_key(&config, table, key, value)?;
        }
        let cfg_path = dir.path().join("crius.toml");
        std::fs::write(&cfg_path, config)?;
        let conf_dir = dir.path().join("net.d");
        let files = match opts.cni_configs {
            CniConfigs::LoopbackOnly => vec![(
                "99-loopback.conflist".to_string(),
                crate::net::loopback_conflist(),
            )],
            CniConfigs::Empty => Vec::new(),
            CniConfigs::Files(files) => files,
        };
        for (name, contents) in files {
            std::fs::write(conf_dir.join(&name), contents)
                .with_context(|| format!("writing CNI config {name}"))?;
        }
        let child = spawn_daemon(dir.path(), &socket)?;
        Ok(Daemon { dir, child, socket })
    }

    /// The daemon's temp dir.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The CNI conf dir the daemon watches.
    pub fn cni_conf_dir(&self) -> PathBuf {
        self.dir.path().join("net.d")
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("crius.log")).unwrap_or_default()
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops the daemon with SIGTERM and returns its exit status.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        host::kill(self.child.id(), libc::SIGTERM);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

/// The embedded default config with every path under `dir` (root, state, CNI conf dir),
/// the CRI socket at `socket`, and `extra` TOML appended.
pub fn config_text(dir: &Path, socket: &Path, extra: &str) -> anyhow::Result<String> {
    let crius = host::workspace_binary("crius");
    let default = Command::new(&crius).args(["config", "default"]).output()?;
    anyhow::ensure!(default.status.success(), "crius config default failed");
    let cni = dir.join("net.d");
    std::fs::create_dir_all(&cni)?;
    let mut config = String::from_utf8(default.stdout)?
        .replace("/var/lib/crius", &dir.join("root").display().to_string())
        .replace(
            "unix:///run/crius/crius.sock",
            &format!("unix://{}", socket.display()),
        )
        .replace(
            "\"/run/crius\"",
            &format!("{:?}", dir.join("state").display().to_string()),
        )
        .replace("/etc/cni/net.d", &cni.display().to_string());
    config.push_str(extra);
    Ok(config)
}

/// `config` with `key = value` set in table `[table]`: an existing line for the key in
/// that table is replaced, else the line is added right after the header.
pub fn set_table_key(config: &str, table: &str, key: &str, value: &str) -> anyhow::Result<String> {
    let header = format!("[{table}]");
    let lines: Vec<&str> = config.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.trim() == header)
        .with_context(|| format!("config has no {header} table"))?;
    let end = lines[start + 1..]
        .iter()
        .position(|l| l.trim_start().starts_with('['))
        .map_or(lines.len(), |i| start + 1 + i);
    let line = format!("{key} = {value}");
    let mut out: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    let existing = (start + 1..end).find(|&i| {
        lines[i]
            .split_once('=')
            .is_some_and(|(k, _)| k.trim() == key)
    });
    match existing {
        Some(i) => out[i] = line,
        None => out.insert(start + 1, line),
    }
    let mut text = out.join("\n");
    text.push('\n');
    Ok(text)
}

/// Force-deletes every container in the runc roots under `dir` and kills the processes
/// (shims) whose command line names `dir`.
fn kill_leftovers(dir: &Path) {
    if let Ok(roots) = std::fs::read_dir(dir.join("runc")) {
        for root in roots.flatten() {
            let Ok(ids) = std::fs::read_dir(root.path()) else {
                continue;
            };
            for id in ids.flatten() {
                let _ = Command::new("runc")
                    .arg("--root")
                    .arg(root.path())
                    .args(["delete", "--force"])
                    .arg(id.file_name())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
    // The shims name the daemon's socket, under `dir`, in their command line. Containers
    // whose runtime state is not in a runc root under `dir` (youki's, the Go shim's) are
    // still their children: kill those first (a container's init takes its pid namespace
    // with it), then the shims.
    let needle = dir.display().to_string();
    let pids: Vec<u32> = std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|p| p.file_name().to_str().and_then(|s| s.parse().ok()))
                .collect()
        })
        .unwrap_or_default();
    let shims: Vec<u32> = pids
        .iter()
        .copied()
        .filter(|&pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            pid != std::process::id() && String::from_utf8_lossy(&cmdline).contains(&needle)
        })
        .collect();
    let orphans: Vec<u32> = pids
        .iter()
        .copied()
        .filter(|&pid| host::parent_pid(pid).is_some_and(|pp| shims.contains(&pp)))
        .collect();
    for pid in orphans.iter().chain(&shims) {
        host::kill(*pid, libc::SIGKILL);
    }
    // Their cgroups (crius's default parent, `/crius/<id>`), once the kills have landed.
    if let Ok(tasks) = std::fs::read_dir(dir.join("state").join("tasks")) {
        let ids: Vec<_> = tasks.flatten().map(|t| t.file_name()).collect();
        if !ids.is_empty() {
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        let controllers = std::fs::read_dir("/sys/fs/cgroup")
            .map(|d| d.flatten().map(|c| c.path()).collect::<Vec<_>>())
            .unwrap_or_default();
        for id in &ids {
            for c in &controllers {
                let _ = std::fs::remove_dir(c.join("crius").join(id));
            }
        }
    }
}

/// Starts `crius --config <dir>/crius.toml` logging to `<dir>/crius.log` (appending) and
/// waits for its socket.
fn spawn_daemon(dir: &Path, socket: &Path) -> anyhow::Result<Child> {
    let crius = host::workspace_binary("crius");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("crius.log"))?;
    let mut child = Command::new(&crius)
        .arg("--config")
        .arg(dir.join("crius.toml"))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()?;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    // The socket file appears at bind time; wait until a connect actually succeeds.
    while std::os::unix::net::UnixStream::connect(socket).is_err() {
        if let Ok(Some(st)) = child.try_wait() {
            anyhow::bail!(
                "crius exited with {st}: {}",
                std::fs::read_to_string(dir.join("crius.log")).unwrap_or_default()
            );
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "crius socket never appeared"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(child)
}

impl Daemon {
    /// `kill -9` of the daemon, as a crash would.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the daemon again on the same root, state and socket (after `kill9` or `stop`).
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill9();
        let _ = std::fs::remove_file(&self.socket);
        self.child = spawn_daemon(self.dir.path(), &self.socket)?;
        Ok(())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // A test that ends without removing its pods leaves shims (which outlive a killed
        // daemon by design) and containers behind: remove the containers through runc
        // (which kills a created container's `runc init` too), then the shims.
        kill_leftovers(self.dir.path());
        // What a killed daemon leaves mounted (its netns pin dir is a bind mount of itself)
        // would keep the temp dir from being removed: unmount, deepest first.
        let mut mounts = host::mounts_under(self.dir.path());
        mounts.sort();
        for m in mounts.iter().rev() {
            let _ = Command::new("umount").arg("-l").arg(m).status();
        }
    }
}
