//! Where a shim listens. One shim serves a whole pod: its socket is derived from the daemon
//! address, the namespace and the task's *group* (the pod's sandbox id), so that `start` for
//! a second container of a running pod finds the first one's shim.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Grouping annotations, in the order containerd's Go shim reads them.
pub const GROUP_ANNOTATIONS: [&str; 2] = [
    "io.containerd.runc.v2.group",
    "io.kubernetes.cri.sandbox-id",
];

/// The group a task belongs to: a grouping annotation of its `config.json`, else its own id.
pub fn group_of(config_json: &[u8], id: &str) -> String {
    #[derive(serde::Deserialize)]
    struct Spec {
        #[serde(default)]
        annotations: std::collections::HashMap<String, String>,
    }
    let Ok(spec) = serde_json::from_slice::<Spec>(config_json) else {
        return id.to_string();
    };
    GROUP_ANNOTATIONS
        .iter()
        .find_map(|k| spec.annotations.get(*k).filter(|v| !v.is_empty()))
        .cloned()
        .unwrap_or_else(|| id.to_string())
}

/// The directory holding shim sockets for a daemon at `address`: `<dirname(address)>/s`.
pub fn socket_dir(address: &str) -> PathBuf {
    let path = Path::new(address.trim_start_matches("unix://"));
    path.parent().unwrap_or(Path::new("/run")).join("s")
}

/// The socket for `group`: `<socket_dir>/<sha256(address/namespace/group)>`, short enough for
/// `sun_path` whatever the id length.
pub fn socket_path(address: &str, namespace: &str, group: &str) -> PathBuf {
    let mut h = Sha256::new();
    h.update(address.as_bytes());
    h.update(b"/");
    h.update(namespace.as_bytes());
    h.update(b"/");
    h.update(group.as_bytes());
    socket_dir(address).join(&hex::encode(h.finalize())[..32])
}

/// The address string printed on `start` and stored in the bundle.
pub fn socket_address(path: &Path) -> String {
    format!("unix://{}", path.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_prefers_runc_group_then_sandbox_id() {
        let both = br#"{"annotations":{"io.containerd.runc.v2.group":"g","io.kubernetes.cri.sandbox-id":"s"}}"#;
        assert_eq!(group_of(both, "id"), "g");
        let sandbox = br#"{"annotations":{"io.kubernetes.cri.sandbox-id":"s"}}"#;
        assert_eq!(group_of(sandbox, "id"), "s");
        assert_eq!(group_of(b"{}", "id"), "id");
        assert_eq!(group_of(b"not json", "id"), "id");
    }

    #[test]
    fn socket_is_under_the_daemon_dir_and_stable() {
        let a = socket_path("/run/crius/crius.sock", "k8s.io", "pod");
        assert!(a.starts_with("/run/crius/s"));
        assert_eq!(a, socket_path("/run/crius/crius.sock", "k8s.io", "pod"));
        assert_ne!(a, socket_path("/run/crius/crius.sock", "other", "pod"));
        assert_eq!(socket_address(&a), format!("unix://{}", a.display()));
    }
}
