//! RuntimeClass handlers.
//!
//! A pod's `runtime_handler` names an entry of crius's config; each entry maps to a
//! runtime v2 shim binary and the runtime options handed to it in `CreateTaskRequest`.
//! This crate owns that mapping: resolving `io.containerd.<name>.<version>` to
//! `containerd-shim-<name>-<version>` (beside `crius`, then in `PATH`), and telling which
//! handlers are usable on this host. Launching, grouping and reconnecting shims build on it.

pub mod registry;
pub mod shim;

pub use registry::{LookupError, Registry, Resolved, CRIUS_RUNTIME_TYPE};
pub use shim::{Launched, ShimEnv, ShimError};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One RuntimeClass handler as written in the config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Handler {
    /// containerd runtime type, e.g. `io.containerd.crius.v2` or `io.containerd.runc.v2`.
    pub runtime_type: String,
    /// An explicit shim binary; when absent it is derived from `runtime_type`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shim_path: Option<PathBuf>,
    /// Options for runc-compatible shims, sent as containerd's runc `Options`.
    #[serde(default, skip_serializing_if = "RuntimeOptions::is_empty")]
    pub options: RuntimeOptions,
}

/// The fields of containerd's runc options type (`containerd.runc.v1.Options`) that a
/// handler may set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeOptions {
    /// Low-level runtime binary (`runc`, `crun`, `youki` or a path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binary_name: Option<String>,
    /// The low-level runtime's state root (`--root`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<String>,
    /// Let the low-level runtime drive cgroups through systemd.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub systemd_cgroup: Option<bool>,
}

impl RuntimeOptions {
    /// True when no option is set, so nothing needs to be sent to the shim.
    pub fn is_empty(&self) -> bool {
        self == &RuntimeOptions::default()
    }
}

/// Why a handler cannot be used.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum HandlerError {
    /// `runtime_type` is not of the form `io.containerd.<name>.<version>`.
    #[error("runtime_type {0:?} is not of the form io.containerd.<name>.<version>")]
    BadRuntimeType(String),
    /// No shim binary was found for the handler.
    #[error("shim binary {binary} for runtime_type {runtime_type} not found (looked in {looked})")]
    ShimNotFound {
        /// runtime type of the handler.
        runtime_type: String,
        /// binary name looked for.
        binary: String,
        /// the directories searched.
        looked: String,
    },
}

/// The binary name that containerd derives from a runtime type:
/// `io.containerd.runc.v2` → `containerd-shim-runc-v2`.
pub fn shim_binary_name(runtime_type: &str) -> Result<String, HandlerError> {
    let bad = || HandlerError::BadRuntimeType(runtime_type.to_string());
    let parts: Vec<&str> = runtime_type.split('.').collect();
    if parts.len() < 4 || parts[0] != "io" || parts[1] != "containerd" {
        return Err(bad());
    }
    let version = parts[parts.len() - 1];
    let name = parts[2..parts.len() - 1].join(".");
    if name.is_empty() || version.is_empty() {
        return Err(bad());
    }
    Ok(format!("containerd-shim-{name}-{version}"))
}

impl Handler {
    /// Finds the shim binary: `shim_path` if set, else the derived name in `search`
    /// (the directory of the running daemon first, then `PATH`).
    pub fn resolve_shim(&self, search: &[PathBuf]) -> Result<PathBuf, HandlerError> {
        if let Some(p) = &self.shim_path {
            if is_executable(p) {
                return Ok(p.clone());
            }
            return Err(HandlerError::ShimNotFound {
                runtime_type: self.runtime_type.clone(),
                binary: p.display().to_string(),
                looked: "shim_path".into(),
            });
        }
        let binary = shim_binary_name(&self.runtime_type)?;
        for dir in search {
            let candidate = dir.join(&binary);
            if is_executable(&candidate) {
                return Ok(candidate);
            }
        }
        Err(HandlerError::ShimNotFound {
            runtime_type: self.runtime_type.clone(),
            binary,
            looked: search
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(":"),
        })
    }
}

/// The directories a shim is looked up in: beside `exe` (the daemon), then `PATH`.
pub fn shim_search_path(exe: Option<&Path>, path_env: Option<&str>) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(dir) = exe.and_then(Path::parent) {
        dirs.push(dir.to_path_buf());
    }
    if let Some(path) = path_env {
        dirs.extend(path.split(':').filter(|s| !s.is_empty()).map(PathBuf::from));
    }
    dirs
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// The handlers of a config, by name.
pub type Handlers = BTreeMap<String, Handler>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derives_binary_names_like_containerd() {
        assert_eq!(
            shim_binary_name("io.containerd.runc.v2").as_deref(),
            Ok("containerd-shim-runc-v2")
        );
        assert_eq!(
            shim_binary_name("io.containerd.runsc.v1").as_deref(),
            Ok("containerd-shim-runsc-v1")
        );
        assert!(shim_binary_name("runc").is_err());
        assert!(shim_binary_name("io.containerd..v2").is_err());
        assert!(shim_binary_name("io.other.runc.v2").is_err());
    }

    #[test]
    fn missing_shim_names_binary_and_dirs() {
        let h = Handler {
            runtime_type: "io.containerd.nosuch.v9".into(),
            shim_path: None,
            options: RuntimeOptions::default(),
        };
        let err = h
            .resolve_shim(&[PathBuf::from("/nonexistent-dir")])
            .expect_err("must not resolve");
        let msg = err.to_string();
        assert!(msg.contains("containerd-shim-nosuch-v9"), "{msg}");
        assert!(msg.contains("/nonexistent-dir"), "{msg}");
    }

    #[test]
    fn finds_shim_in_search_path() {
        let dir = tempfile_dir();
        let bin = dir.join("containerd-shim-x-v2");
        std::fs::write(&bin, "#!/bin/sh\n").expect("write");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let h = Handler {
            runtime_type: "io.containerd.x.v2".into(),
            shim_path: None,
            options: RuntimeOptions::default(),
        };
        assert_eq!(h.resolve_shim(std::slice::from_ref(&dir)), Ok(bin));
        let _ = std::fs::remove_dir_all(dir);
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("crius-handlers-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("mkdir");
        d
    }

    #[test]
    fn search_path_puts_daemon_dir_first() {
        let dirs = shim_search_path(
            Some(Path::new("/opt/crius/bin/crius")),
            Some("/usr/bin::/bin"),
        );
        assert_eq!(
            dirs,
            vec![
                PathBuf::from("/opt/crius/bin"),
                PathBuf::from("/usr/bin"),
                PathBuf::from("/bin")
            ]
        );
    }
}
