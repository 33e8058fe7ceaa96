//! The CNI client: runs the pod network's plugin chain for ADD, CHECK and DEL with the
//! spec's exec protocol (we speak it ourselves: no maintained Rust crate does, and the
//! protocol is a process call with env vars and JSON on stdin/stdout).
//!
//! [`Cni`] holds the network loaded from the conf dir (re-scanned by [`Cni::watch`]), the
//! node's pod CIDRs, and a cache of each pod's attachment so that DEL repeats what ADD did.

pub mod cache;
pub mod config;
pub mod default_net;
pub mod exec;
pub mod result;
pub mod runtime_args;
#[cfg(test)]
mod tests;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, SystemTime};

use serde_json::Value;

use self::cache::{Cache, Entry};
use self::config::NetworkConfig;
use self::default_net::DefaultNetwork;
use self::exec::{ExecError, Invocation, PluginExec};
use self::result::PluginError;
use self::runtime_args::RuntimeArgs;
use crate::sandbox::config::PodConfig;

/// The pod's interface.
pub const IFNAME: &str = "eth0";

/// How often the conf dir is re-scanned. Polling (a readdir and a few stats) rather than
/// inotify: it also sees a conf dir that does not exist yet, and symlinks swapped in place.
pub const WATCH_INTERVAL: Duration = Duration::from_millis(500);

/// What the client is configured with.
#[derive(Debug, Clone)]
pub struct CniSettings {
    /// Where network configs are found.
    pub conf_dir: PathBuf,
    /// Where plugin binaries are found, in order.
    pub bin_dirs: Vec<PathBuf>,
    /// Where attachments are cached.
    pub cache_dir: PathBuf,
    /// Each plugin call is killed after this.
    pub plugin_timeout: Duration,
    /// crius's own network for an empty conf dir, when enabled.
    pub default_network: Option<DefaultNetwork>,
}

/// Why a network call failed.
#[derive(Debug, thiserror::Error)]
pub enum CniError {
    /// No network config is loaded.
    #[error("network is not ready: {0}")]
    NotReady(String),
    /// The pod asks for something invalid (a bandwidth annotation, say).
    #[error("{0}")]
    InvalidArgument(String),
    /// A plugin binary is in none of the plugin dirs.
    #[error("network {network:?}: plugin {plugin:?} not found in {dirs}")]
    PluginNotFound {
        /// Network name.
        network: String,
        /// Plugin type.
        plugin: String,
        /// The dirs searched.
        dirs: String,
    },
    /// A plugin reported an error.
    #[error("network {network:?}: plugin {plugin:?} failed to {command}: {error}")]
    Plugin {
        /// Network name.
        network: String,
        /// Plugin type.
        plugin: String,
        /// ADD, CHECK or DEL.
        command: &'static str,
        /// What it said.
        error: PluginError,
    },
    /// A plugin ran past the timeout and was killed.
    #[error("network {network:?}: plugin {plugin:?} did not answer {command} within {after:?} and was killed")]
    Timeout {
        /// Network name.
        network: String,
        /// Plugin type.
        plugin: String,
        /// ADD, CHECK or DEL.
        command: &'static str,
        /// The timeout.
        after: Duration,
    },
    /// A plugin could not be run, or printed something that is not a result.
    #[error("network {network:?}: plugin {plugin:?} {command}: {message}")]
    Exec {
        /// Network name.
        network: String,
        /// Plugin type.
        plugin: String,
        /// ADD, CHECK or DEL.
        command: &'static str,
        /// What went wrong.
        message: String,
    },
    /// The attachment cache could not be written.
    #[error("CNI result cache: {0}")]
    Cache(#[source] std::io::Error),
}

/// A pod as its plugins see it.
#[derive(Debug, Clone, PartialEq)]
pub struct PodNetwork {
    /// Sandbox id (`CNI_CONTAINERID`, `K8S_POD_INFRA_CONTAINER_ID`).
    pub id: String,
    /// The pinned network namespace.
    pub netns: PathBuf,
    /// `K8S_POD_NAME`.
    pub name: String,
    /// `K8S_POD_NAMESPACE`.
    pub namespace: String,
    /// `K8S_POD_UID`.
    pub uid: String,
    /// Capability args.
    pub runtime: RuntimeArgs,
}

impl PodNetwork {
    /// `CNI_ARGS` pairs, as the kubelet's and containerd's CNI callers send them.
    pub fn cni_args(&self) -> Vec<(String, String)> {
        vec![
            ("IgnoreUnknown".into(), "1".into()),
            ("K8S_POD_NAMESPACE".into(), self.namespace.clone()),
            ("K8S_POD_NAME".into(), self.name.clone()),
            ("K8S_POD_INFRA_CONTAINER_ID".into(), self.id.clone()),
            ("K8S_POD_UID".into(), self.uid.clone()),
        ]
    }
}

/// A pod's place on the network, after ADD.
#[derive(Debug, Clone, PartialEq)]
pub struct Attachment {
    /// The network's name.
    pub network: String,
    /// The pod's IPs, primary (IPv4 when there is one) first.
    pub ips: Vec<IpAddr>,
    /// The final result of the chain.
    pub result: Value,
}

/// What the conf dir held at a scan: its candidate files, or `None` when unreadable.
type Fingerprint = Option<Vec<(PathBuf, SystemTime, u64)>>;

/// The loaded network, and what it was loaded from.
struct Loaded {
    /// The conf dir's files at the last scan (`None` inside: the dir is unreadable);
    /// `None` before the first scan.
    fingerprint: Option<Fingerprint>,
    network: Result<Arc<NetworkConfig>, String>,
}

/// The CNI client.
pub struct Cni {
    settings: CniSettings,
    exec: Arc<dyn PluginExec>,
    cache: Cache,
    loaded: RwLock<Loaded>,
    pod_cidrs: RwLock<Vec<String>>,
}

impl std::fmt::Debug for Cni {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cni")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Command {
    Add,
    Check,
    Del,
}

impl Command {
    fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Check => "CHECK",
            Command::Del => "DEL",
        }
    }
}

impl Cni {
    /// A client running plugins through `exec`; the conf dir is scanned once now.
    pub fn new(settings: CniSettings, exec: Arc<dyn PluginExec>) -> Cni {
        let cni = Cni {
            cache: Cache::new(&settings.cache_dir),
            settings,
            exec,
            loaded: RwLock::new(Loaded {
                fingerprint: None,
                network: Err("not scanned yet".into()),
            }),
            pod_cidrs: RwLock::new(Vec::new()),
        };
        cni.cache.sweep_temp();
        cni.reload();
        cni
    }

    /// Re-scans the conf dir when its files changed; true when the network changed.
    pub fn reload(&self) -> bool {
        let fingerprint = config::candidates(&self.settings.conf_dir).ok();
        {
            let loaded = read(&self.loaded);
            if loaded.fingerprint.as_ref() == Some(&fingerprint) {
                return false;
            }
        }
        let network = match config::load_dir(&self.settings.conf_dir) {
            Ok(n) => Ok(Arc::new(n)),
            Err(why) => self.default_network(why),
        };
        let mut loaded = write(&self.loaded);
        let changed = match (&loaded.network, &network) {
            (Ok(a), Ok(b)) => a.raw != b.raw || a.source != b.source,
            (Err(a), Err(b)) => a != b,
            _ => true,
        };
        if changed {
            match &network {
                Ok(n) => {
                    tracing::info!(network = %n.name, file = %n.source.display(), "CNI network loaded")
                }
                Err(why) => tracing::warn!(reason = %why, "no CNI network"),
            }
        }
        loaded.fingerprint = Some(fingerprint);
        loaded.network = network;
        changed
    }

    fn default_network(&self, why: String) -> Result<Arc<NetworkConfig>, String> {
        let Some(d) = &self.settings.default_network else {
            return Err(why);
        };
        let path = d
            .write()
            .map_err(|e| format!("{why}; writing the default network: {e}"))?;
        NetworkConfig::from_value(d.conflist(), &path)
            .map(Arc::new)
            .map_err(|e| format!("{why}; the default network: {e}"))
    }

    /// Re-scans the conf dir every [`WATCH_INTERVAL`] until the client is dropped.
    pub fn watch(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let weak: Weak<Cni> = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(WATCH_INTERVAL).await;
                let Some(cni) = weak.upgrade() else { return };
                cni.reload();
            }
        })
    }

    /// The loaded network, or why there is none.
    pub fn network(&self) -> Result<Arc<NetworkConfig>, String> {
        read(&self.loaded).network.clone()
    }

    /// Sets the node's pod CIDRs (`UpdateRuntimeConfig`), handed to `ipRanges` plugins.
    pub fn set_pod_cidrs(&self, cidrs: Vec<String>) {
        *write(&self.pod_cidrs) = cidrs;
    }

    /// The node's pod CIDRs.
    pub fn pod_cidrs(&self) -> Vec<String> {
        read(&self.pod_cidrs).clone()
    }

    /// Checks what `pod` would hand its plugins (the bandwidth annotations) before
    /// anything of the sandbox is made.
    pub fn validate(&self, pod: &PodConfig) -> Result<(), CniError> {
        RuntimeArgs::of_pod(pod, &[])
            .map(drop)
            .map_err(CniError::InvalidArgument)
    }

    /// The plugins' view of sandbox `id` of `pod`, in `netns`.
    pub fn pod_network(
        &self,
        id: &str,
        netns: &Path,
        pod: &PodConfig,
    ) -> Result<PodNetwork, CniError> {
        Ok(PodNetwork {
            id: id.to_string(),
            netns: netns.to_path_buf(),
            name: pod.metadata.name.clone(),
            namespace: pod.metadata.namespace.clone(),
            uid: pod.metadata.uid.clone(),
            runtime: RuntimeArgs::of_pod(pod, &self.pod_cidrs())
                .map_err(CniError::InvalidArgument)?,
        })
    }

    /// Attaches `pod` to the network (ADD through the chain). On failure the chain's DEL
    /// has run and nothing is cached.
    pub async fn setup(&self, pod: &PodNetwork) -> Result<Attachment, CniError> {
        let net = self.network().map_err(CniError::NotReady)?;
        let mut entry = Entry {
            network: net.raw.clone(),
            ifname: IFNAME.into(),
            netns: pod.netns.clone(),
            cni_args: pod.cni_args(),
            runtime: pod.runtime.clone(),
            result: None,
        };
        self.cache
            .put(&pod.id, &entry)
            .await
            .map_err(CniError::Cache)?;
        let added = match self.add_chain(&net, &pod.id, &entry).await {
            Ok(result) => {
                entry.result = Some(result.clone());
                self.cache
                    .put(&pod.id, &entry)
                    .await
                    .map(|()| result)
                    .map_err(CniError::Cache)
            }
            Err(e) => Err(e),
        };
        match added {
            Ok(result) => Ok(Attachment {
                network: net.name.clone(),
                ips: result::pod_ips(&result, IFNAME),
                result,
            }),
            Err(e) => {
                if let Err(de) = self.del_chain(&net, &pod.id, &entry).await {
                    tracing::warn!(sandbox = %pod.id, error = %de, "DEL after a failed ADD");
                }
                if let Err(ce) = self.cache.remove(&pod.id).await {
                    tracing::warn!(sandbox = %pod.id, error = %ce, "removing a CNI cache entry");
                }
                Err(e)
            }
        }
    }

    /// Detaches sandbox `id` (DEL through the cached chain, in reverse). Nothing cached
    /// means nothing attached: success. Safe to repeat; works when the netns is gone.
    pub async fn teardown(&self, id: &str) -> Result<(), CniError> {
        let Some(entry) = self.cache.get(id).await else {
            return Ok(());
        };
        let net = NetworkConfig::from_value(entry.network.clone(), Path::new("<cache>")).map_err(
            |e| CniError::Exec {
                network: String::new(),
                plugin: String::new(),
                command: "DEL",
                message: format!("cached network config: {e}"),
            },
        )?;
        self.del_chain(&net, id, &entry).await?;
        self.cache.remove(id).await.map_err(CniError::Cache)
    }

    /// CHECKs sandbox `id`'s attachment (0.4.0+ networks without `disableCheck`).
    pub async fn check(&self, id: &str) -> Result<(), CniError> {
        let Some(entry) = self.cache.get(id).await else {
            return Err(CniError::NotReady(format!(
                "sandbox {id} has no network attachment"
            )));
        };
        let net = NetworkConfig::from_value(entry.network.clone(), Path::new("<cache>"))
            .map_err(CniError::NotReady)?;
        if !net.has_check() || net.disable_check {
            return Ok(());
        }
        for p in &net.plugins {
            self.call(&net, p, Command::Check, id, &entry, entry.result.as_ref())
                .await?;
        }
        Ok(())
    }

    /// The sandbox ids with a cached attachment (recovery DELs the ones it no longer has).
    pub fn attached(&self) -> Vec<String> {
        self.cache.ids()
    }

    async fn add_chain(
        &self,
        net: &NetworkConfig,
        id: &str,
        entry: &Entry,
    ) -> Result<Value, CniError> {
        let mut prev: Option<Value> = None;
        for p in &net.plugins {
            let out = self
                .call(net, p, Command::Add, id, entry, prev.as_ref())
                .await?;
            let result = result::parse_result(&out).map_err(|message| CniError::Exec {
                network: net.name.clone(),
                plugin: p.kind.clone(),
                command: "ADD",
                message,
            })?;
            prev = Some(result);
        }
        prev.ok_or_else(|| CniError::NotReady(format!("network {:?} has no plugins", net.name)))
    }

    /// Every plugin's DEL, last first, even after one fails (each frees what it can); the
    /// first error is returned. A plugin that is no longer installed is skipped with a
    /// warning: nothing can run its DEL.
    async fn del_chain(
        &self,
        net: &NetworkConfig,
        id: &str,
        entry: &Entry,
    ) -> Result<(), CniError> {
        let prev = entry.result.as_ref().filter(|_| net.has_check());
        let mut first = None;
        for p in net.plugins.iter().rev() {
            match self.call(net, p, Command::Del, id, entry, prev).await {
                Ok(_) => {}
                Err(CniError::PluginNotFound { .. }) => {
                    tracing::warn!(sandbox = %id, plugin = %p.kind, "plugin gone: its DEL is skipped");
                }
                Err(e) => {
                    tracing::warn!(sandbox = %id, error = %e, "CNI DEL");
                    first.get_or_insert(e);
                }
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// One plugin call; stdout on success.
    async fn call(
        &self,
        net: &NetworkConfig,
        p: &config::PluginConfig,
        command: Command,
        id: &str,
        entry: &Entry,
        prev: Option<&Value>,
    ) -> Result<Vec<u8>, CniError> {
        let plugin = exec::find_plugin(&self.settings.bin_dirs, &p.kind).ok_or_else(|| {
            CniError::PluginNotFound {
                network: net.name.clone(),
                plugin: p.kind.clone(),
                dirs: exec::cni_path(&self.settings.bin_dirs),
            }
        })?;
        let mut conf = p.raw.clone();
        conf.insert("name".into(), Value::String(net.name.clone()));
        conf.insert("cniVersion".into(), Value::String(net.cni_version.clone()));
        if let Some(prev) = prev {
            conf.insert("prevResult".into(), prev.clone());
        }
        let runtime = entry.runtime.for_plugin(&p.capabilities);
        if !runtime.is_empty() {
            conf.insert("runtimeConfig".into(), Value::Object(runtime));
        }
        let args = entry
            .cni_args
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(";");
        let call = Invocation {
            plugin,
            env: vec![
                ("CNI_COMMAND".into(), command.as_str().into()),
                ("CNI_CONTAINERID".into(), id.into()),
                ("CNI_NETNS".into(), entry.netns.display().to_string()),
                ("CNI_IFNAME".into(), entry.ifname.clone()),
                ("CNI_ARGS".into(), args),
                ("CNI_PATH".into(), exec::cni_path(&self.settings.bin_dirs)),
            ],
            stdin: serde_json::to_vec(&Value::Object(conf)).unwrap_or_default(),
            timeout: self.settings.plugin_timeout,
        };
        let started = std::time::Instant::now();
        let res = self.exec.run(call).await;
        tracing::debug!(sandbox = %id, plugin = %p.kind, command = command.as_str(), took = ?started.elapsed(), ok = res.is_ok(), "CNI plugin");
        res.map_err(|e| match e {
            ExecError::Timeout(after) => CniError::Timeout {
                network: net.name.clone(),
                plugin: p.kind.clone(),
                command: command.as_str(),
                after,
            },
            ExecError::Failed {
                status,
                stdout,
                stderr,
            } => CniError::Plugin {
                network: net.name.clone(),
                plugin: p.kind.clone(),
                command: command.as_str(),
                error: PluginError::from_output(&stdout, &stderr, &status),
            },
            ExecError::Spawn(e) => CniError::Exec {
                network: net.name.clone(),
                plugin: p.kind.clone(),
                command: command.as_str(),
                message: format!("starting it: {e}"),
            },
        })
    }
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}
