//! Runtime and network conditions for CRI `Status`, and the handler checks that
//! `crius check` and verbose `Status` report.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::config::Config;

/// A CRI runtime condition kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConditionKind {
    /// `RuntimeReady`.
    Runtime,
    /// `NetworkReady`.
    Network,
}

impl std::fmt::Display for ConditionKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ConditionKind::Runtime => "RuntimeReady",
            ConditionKind::Network => "NetworkReady",
        })
    }
}

/// One condition as CRI reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    /// Which condition.
    pub kind: ConditionKind,
    /// Whether it holds.
    pub ok: bool,
    /// A CamelCase reason when it does not.
    pub reason: String,
    /// A human message when it does not.
    pub message: String,
}

/// What `Status` reports.
#[derive(Debug, Clone)]
pub struct Report {
    /// The conditions.
    pub conditions: Vec<Condition>,
    /// Extra information for `verbose`.
    pub verbose_info: HashMap<String, String>,
}

/// One handler's usability on this host.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HandlerCheck {
    /// Handler name.
    pub name: String,
    /// The runtime type.
    pub runtime_type: String,
    /// The resolved shim binary, when found.
    pub shim: Option<PathBuf>,
    /// Why it cannot be used, when it cannot.
    pub error: Option<String>,
}

/// Computes runtime status from the config and the host.
#[derive(Debug)]
pub struct RuntimeStatus {
    config: Config,
    shim_search: Vec<PathBuf>,
}

impl RuntimeStatus {
    /// Status for `config`, resolving shims in `shim_search`.
    pub fn new(config: Config, shim_search: Vec<PathBuf>) -> Self {
        RuntimeStatus {
            config,
            shim_search,
        }
    }

    /// Checks every handler's shim binary.
    pub fn handler_checks(&self) -> Vec<HandlerCheck> {
        self.config
            .handlers
            .iter()
            .map(|(name, h)| {
                let found = h.resolve_shim(&self.shim_search);
                HandlerCheck {
                    name: name.clone(),
                    runtime_type: h.runtime_type.clone(),
                    shim: found.as_ref().ok().cloned(),
                    error: found.err().map(|e| e.to_string()),
                }
            })
            .collect()
    }

    /// The current report.
    pub fn report(&self) -> Report {
        let runtime = Condition {
            kind: ConditionKind::Runtime,
            ok: true,
            reason: String::new(),
            message: String::new(),
        };
        let network = match first_network_config(&self.config.cni.conf_dir) {
            Ok(_) => Condition {
                kind: ConditionKind::Network,
                ok: true,
                reason: String::new(),
                message: String::new(),
            },
            Err(message) => Condition {
                kind: ConditionKind::Network,
                ok: false,
                reason: "NetworkPluginNotReady".into(),
                message,
            },
        };
        let mut verbose_info = HashMap::new();
        if let Ok(cfg) = serde_json::to_string(&self.config) {
            verbose_info.insert("config".to_string(), cfg);
        }
        if let Ok(h) = serde_json::to_string(&self.handler_checks()) {
            verbose_info.insert("handlers".to_string(), h);
        }
        Report {
            conditions: vec![runtime, network],
            verbose_info,
        }
    }
}

/// The lexicographically first network config in `dir` that parses as JSON with a `type`
/// or `plugins` key. The CNI client proper arrives with the networking work; this is the
/// readiness test only.
pub fn first_network_config(dir: &Path) -> Result<PathBuf, String> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("cni config dir {}: {e}", dir.display()))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("conf" | "conflist" | "json")
            )
        })
        .collect();
    files.sort();
    for f in files {
        let Ok(text) = std::fs::read_to_string(&f) else {
            continue;
        };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
            continue;
        };
        if v.get("plugins").is_some() || v.get("type").is_some() {
            return Ok(f);
        }
    }
    Err(format!("no network config found in {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status_with_conf_dir(dir: &Path) -> RuntimeStatus {
        let mut cfg = Config::default_config().expect("default");
        cfg.cni.conf_dir = dir.to_path_buf();
        RuntimeStatus::new(cfg, vec![])
    }

    #[test]
    fn network_not_ready_without_config_then_ready() {
        let dir = tempfile::tempdir().expect("tempdir");
        let st = status_with_conf_dir(dir.path());
        let net = &st.report().conditions[1];
        assert_eq!(net.kind, ConditionKind::Network);
        assert!(!net.ok);
        assert_eq!(net.reason, "NetworkPluginNotReady");

        std::fs::write(dir.path().join("00-broken.conflist"), "{not json").expect("write");
        assert!(
            !st.report().conditions[1].ok,
            "unparseable config must not count"
        );

        std::fs::write(
            dir.path().join("10-net.conflist"),
            r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"loopback"}]}"#,
        )
        .expect("write");
        assert!(st.report().conditions[1].ok);
        assert!(st.report().conditions[0].ok);
    }

    #[test]
    fn missing_shims_are_reported_per_handler() {
        let dir = tempfile::tempdir().expect("tempdir");
        let st = status_with_conf_dir(dir.path());
        let checks = st.handler_checks();
        let kata = checks.iter().find(|c| c.name == "kata").expect("kata");
        assert!(kata.shim.is_none());
        assert!(kata
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("containerd-shim-kata-v2"));
    }
}
