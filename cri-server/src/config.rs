//! The daemon's configuration: TOML, with embedded defaults.
//!
//! A config file is read whole and every key is checked (`deny_unknown_fields`), so a typo
//! is an error that names the line and the key rather than a silently ignored setting.

use std::path::{Path, PathBuf};

use crius_handlers::Handlers;
use serde::{Deserialize, Serialize};

/// The embedded default configuration, as `crius config default` prints it.
pub const DEFAULT_CONFIG: &str = include_str!("default-config.toml");

/// crius's configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Persistent data directory.
    pub root: PathBuf,
    /// Runtime state directory (sockets, bundles, netns pins).
    pub state: PathBuf,
    /// CRI listen address (`unix:///path` or a bare path).
    pub listen: String,
    /// tracing filter.
    #[serde(default = "default_log_level")]
    pub log_level: String,
    /// Handler used when a pod names none.
    pub default_handler: String,
    /// RuntimeClass handlers by name.
    pub handlers: Handlers,
    /// Pod network (CNI) settings.
    pub cni: CniConfig,
    /// The pause image every sandbox runs.
    #[serde(default = "default_sandbox_image")]
    pub sandbox_image: String,
    /// Registries: mirrors, plain-HTTP hosts, CAs, credentials, download parallelism.
    #[serde(default)]
    pub registry: crate::image::registry::RegistryConfig,
    /// The streaming server (exec, attach, port-forward).
    #[serde(default)]
    pub streaming: StreamingSettings,
}

/// `[streaming]`: where the exec/attach/port-forward server listens and how long its URLs
/// live.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamingSettings {
    /// Address to bind: loopback by default (the kubelet on the same node connects);
    /// an explicit address for remote set-ups.
    pub address: String,
    /// Port; 0 picks a free one.
    pub port: u16,
    /// How long a streaming URL stays valid, seconds.
    pub token_ttl_secs: u64,
    /// How many URLs may be pending at once (the oldest is dropped beyond).
    pub max_pending: usize,
    /// Serve HTTPS with this certificate chain (PEM); with `tls_key`, or neither.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
}

impl Default for StreamingSettings {
    fn default() -> Self {
        StreamingSettings {
            address: "127.0.0.1".into(),
            port: 0,
            token_ttl_secs: 60,
            max_pending: 1000,
            tls_cert: None,
            tls_key: None,
        }
    }
}

impl StreamingSettings {
    /// The streaming module's config; the error names a bad address.
    pub fn config(&self) -> Result<crate::streaming::StreamingConfig, String> {
        let ip: std::net::IpAddr = self
            .address
            .parse()
            .map_err(|e| format!("streaming.address {:?}: {e}", self.address))?;
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
            (None, None) => None,
            _ => return Err("streaming.tls_cert and streaming.tls_key go together".into()),
        };
        Ok(crate::streaming::StreamingConfig {
            listen: std::net::SocketAddr::new(ip, self.port),
            token_ttl: std::time::Duration::from_secs(self.token_ttl_secs.max(1)),
            max_pending: self.max_pending.max(1),
            tls,
        })
    }
}

/// CNI settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CniConfig {
    /// Directory holding network configs.
    pub conf_dir: PathBuf,
    /// Directories holding plugin binaries.
    pub bin_dirs: Vec<PathBuf>,
    /// Each plugin call is killed after this many seconds.
    #[serde(default = "default_plugin_timeout")]
    pub plugin_timeout_secs: u64,
    /// When `conf_dir` holds no loadable config, use crius's own bridge network.
    #[serde(default = "default_true")]
    pub default_network: bool,
    /// The default network's bridge.
    #[serde(default = "default_bridge")]
    pub default_bridge: String,
    /// The default network's IPv4 subnet.
    #[serde(default = "default_subnet")]
    pub default_subnet: String,
}

impl Config {
    /// The CNI client's settings: results cached under `root`, the default network's
    /// conflist under `state` and its address allocations under `root`.
    pub fn cni_settings(&self) -> crate::network::cni::CniSettings {
        use crate::network::cni::{default_net::DefaultNetwork, CniSettings};
        let c = &self.cni;
        CniSettings {
            conf_dir: c.conf_dir.clone(),
            bin_dirs: c.bin_dirs.clone(),
            cache_dir: self.root.join("cni").join("results"),
            plugin_timeout: std::time::Duration::from_secs(c.plugin_timeout_secs.max(1)),
            default_network: c.default_network.then(|| DefaultNetwork {
                dir: self.state.join("cni").join("net.d"),
                bridge: c.default_bridge.clone(),
                subnet: c.default_subnet.clone(),
                data_dir: self.root.join("cni").join("networks"),
            }),
        }
    }
}

fn default_plugin_timeout() -> u64 {
    60
}

fn default_true() -> bool {
    true
}

fn default_bridge() -> String {
    crate::network::cni::default_net::BRIDGE.into()
}

fn default_subnet() -> String {
    crate::network::cni::default_net::SUBNET.into()
}

fn default_sandbox_image() -> String {
    crate::image::pause::PAUSE_IMAGE_REF.into()
}

fn default_log_level() -> String {
    "info".into()
}

/// Why a config could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading config {path}: {source}")]
    Read {
        /// the file.
        path: PathBuf,
        /// the I/O error.
        source: std::io::Error,
    },
    /// The TOML is malformed or names an unknown key; the message carries line and key.
    #[error("config {origin}: {message}")]
    Parse {
        /// the file name, or `<default>`.
        origin: String,
        /// toml's message, which names the line, column and key.
        message: String,
    },
    /// The TOML parsed but its values do not fit together.
    #[error("config {origin}: {message}")]
    Invalid {
        /// the file name, or `<default>`.
        origin: String,
        /// what is wrong, naming the key.
        message: String,
    },
}

impl Config {
    /// Parses a config text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            origin: origin.to_string(),
            message: e.to_string(),
        })?;
        cfg.validate(origin)?;
        Ok(cfg)
    }

    /// Reads and parses a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text, &path.display().to_string())
    }

    /// The embedded defaults.
    pub fn default_config() -> Result<Config, ConfigError> {
        Config::parse(DEFAULT_CONFIG, "<default>")
    }

    fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            origin: origin.to_string(),
            message,
        };
        if !self.handlers.contains_key(&self.default_handler) {
            return Err(invalid(format!(
                "default_handler = {:?} is not one of [handlers]: {}",
                self.default_handler,
                self.handlers.keys().cloned().collect::<Vec<_>>().join(", ")
            )));
        }
        for (name, h) in &self.handlers {
            if h.shim_path.is_none() {
                crius_handlers::shim_binary_name(&h.runtime_type)
                    .map_err(|e| invalid(format!("handlers.{name}.runtime_type: {e}")))?;
            }
        }
        let c = &self.cni;
        if c.default_bridge.is_empty()
            || c.default_bridge.len() > 15
            || c.default_bridge.contains(['/', ' '])
        {
            return Err(invalid(format!(
                "cni.default_bridge = {:?} is not an interface name (1-15 characters)",
                c.default_bridge
            )));
        }
        let subnet_ok = c.default_subnet.split_once('/').is_some_and(|(ip, len)| {
            ip.parse::<std::net::Ipv4Addr>().is_ok() && len.parse::<u8>().is_ok_and(|l| l <= 30)
        });
        if !subnet_ok {
            return Err(invalid(format!(
                "cni.default_subnet = {:?} is not an IPv4 CIDR such as 10.89.0.0/16",
                c.default_subnet
            )));
        }
        self.streaming.config().map_err(invalid)?;
        if self.socket_path().as_os_str().is_empty() {
            return Err(invalid("listen: empty socket path".into()));
        }
        Ok(())
    }

    /// The metadata store file.
    pub fn store_path(&self) -> PathBuf {
        self.root.join("crius.redb")
    }

    /// The CRI socket's filesystem path.
    pub fn socket_path(&self) -> PathBuf {
        PathBuf::from(self.listen.strip_prefix("unix://").unwrap_or(&self.listen))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_parses_and_has_runc() {
        let cfg = Config::default_config().expect("embedded default must parse");
        assert_eq!(cfg.default_handler, "runc");
        assert_eq!(cfg.socket_path(), PathBuf::from("/run/crius/crius.sock"));
        assert_eq!(
            cfg.handlers["runc-go"].runtime_type,
            "io.containerd.runc.v2"
        );
        assert_eq!(
            cfg.handlers["crun"].options.binary_name.as_deref(),
            Some("crun")
        );
    }

    #[test]
    fn cni_defaults_and_bad_default_network() {
        let cfg = Config::default_config().expect("default");
        let s = cfg.cni_settings();
        assert_eq!(s.plugin_timeout, std::time::Duration::from_secs(60));
        let d = s.default_network.expect("default network on");
        assert_eq!(
            (d.bridge.as_str(), d.subnet.as_str()),
            ("crius0", "10.89.0.0/16")
        );
        assert!(d.dir.starts_with(&cfg.state) && d.data_dir.starts_with(&cfg.root));
        for (from, to, key) in [
            (
                "default_subnet = \"10.89.0.0/16\"",
                "default_subnet = \"10.89.0.0\"",
                "default_subnet",
            ),
            (
                "default_bridge = \"crius0\"",
                "default_bridge = \"a-very-long-bridge\"",
                "default_bridge",
            ),
        ] {
            let text = DEFAULT_CONFIG.replace(from, to);
            let err = Config::parse(&text, "x.toml").expect_err(to).to_string();
            assert!(err.contains(key), "{err}");
        }
        let half = DEFAULT_CONFIG.replace(
            "# tls_cert = \"/etc/crius/streaming.pem\"",
            "tls_cert = \"/etc/crius/streaming.pem\"",
        );
        let err = Config::parse(&half, "x.toml")
            .expect_err("cert without key")
            .to_string();
        assert!(err.contains("tls_key"), "{err}");
        let off = DEFAULT_CONFIG.replace("default_network = true", "default_network = false");
        let cfg = Config::parse(&off, "x.toml").expect("parse");
        assert!(cfg.cni_settings().default_network.is_none());
    }

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let text = DEFAULT_CONFIG.replace("log_level = \"info\"", "log_levle = \"info\"");
        let err = Config::parse(&text, "x.toml").expect_err("typo must be rejected");
        let msg = err.to_string();
        assert!(msg.contains("log_levle"), "{msg}");
        assert!(msg.contains("line"), "{msg}");
        assert!(msg.contains("x.toml"), "{msg}");
    }

    #[test]
    fn bad_value_type_is_named() {
        let text = DEFAULT_CONFIG.replace("root = \"/var/lib/crius\"", "root = 5");
        let msg = Config::parse(&text, "x.toml")
            .expect_err("int root")
            .to_string();
        assert!(msg.contains("root"), "{msg}");
        assert!(msg.contains("line 5"), "{msg}");
    }

    #[test]
    fn unknown_default_handler_is_rejected() {
        let text =
            DEFAULT_CONFIG.replace("default_handler = \"runc\"", "default_handler = \"nope\"");
        let msg = Config::parse(&text, "x.toml")
            .expect_err("nope")
            .to_string();
        assert!(msg.contains("default_handler"), "{msg}");
        assert!(msg.contains("nope"), "{msg}");
    }

    #[test]
    fn bad_runtime_type_names_the_handler() {
        let text = DEFAULT_CONFIG.replace(
            "runtime_type = \"io.containerd.kata.v2\"",
            "runtime_type = \"kata\"",
        );
        let msg = Config::parse(&text, "x.toml")
            .expect_err("kata")
            .to_string();
        assert!(msg.contains("handlers.kata.runtime_type"), "{msg}");
    }

    #[test]
    fn roundtrips_through_toml() {
        let cfg = Config::default_config().expect("default");
        let text = toml::to_string(&cfg).expect("serialize");
        assert_eq!(Config::parse(&text, "rt").expect("reparse"), cfg);
    }
}
