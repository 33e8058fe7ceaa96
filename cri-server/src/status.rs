//! Runtime and network conditions for CRI `Status`, and the handler checks that
//! `crius check` and verbose `Status` report.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use crate::config::Config;
use crate::network::cni::Cni;

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
    cni: Arc<Cni>,
}

impl RuntimeStatus {
    /// Status for `config`, resolving shims in `shim_search`; the network is ready when
    /// `cni` has a network loaded.
    pub fn new(config: Config, shim_search: Vec<PathBuf>, cni: Arc<Cni>) -> Self {
        RuntimeStatus {
            config,
            shim_search,
            cni,
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
        let loaded = self.cni.network();
        let network = match &loaded {
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
                message: format!("Network plugin returns error: cni config load failed: {message}"),
            },
        };
        let mut verbose_info = HashMap::new();
        if let Ok(cfg) = serde_json::to_string(&self.config) {
            verbose_info.insert("config".to_string(), cfg);
        }
        if let Ok(h) = serde_json::to_string(&self.handler_checks()) {
            verbose_info.insert("handlers".to_string(), h);
        }
        if let Ok(net) = &loaded {
            let info = serde_json::json!({
                "name": net.name,
                "file": net.source,
                "config": net.raw,
                "podCIDRs": self.cni.pod_cidrs(),
            });
            verbose_info.insert("cniconfig".to_string(), info.to_string());
        }
        Report {
            conditions: vec![runtime, network],
            verbose_info,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::network::cni::exec::RealExec;
    use std::path::Path;

    fn status_with_conf_dir(dir: &Path) -> RuntimeStatus {
        let mut cfg = Config::default_config().expect("default");
        cfg.cni.conf_dir = dir.to_path_buf();
        cfg.cni.default_network = false;
        let cni = Arc::new(Cni::new(cfg.cni_settings(), Arc::new(RealExec)));
        RuntimeStatus::new(cfg, vec![], cni)
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
        st.cni.reload();
        assert!(
            !st.report().conditions[1].ok,
            "unparseable config must not count"
        );

        std::fs::write(
            dir.path().join("10-net.conflist"),
            r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"loopback"}]}"#,
        )
        .expect("write");
        st.cni.reload();
        assert!(st.report().conditions[1].ok);
        assert!(st.report().verbose_info["cniconfig"].contains("loopback"));
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
