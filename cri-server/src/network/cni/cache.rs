//! The per-pod attachment cache: what ADD was run with and what it returned, so that DEL
//! runs the same chain with the same arguments and `prevResult` after a config change or a
//! daemon restart (libcni keeps the same kind of cache).
//!
//! The entry is written before ADD (without a result) and again after it: a crash in the
//! middle still leaves what the rollback's DEL needs.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::runtime_args::RuntimeArgs;

/// One pod's attachment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// The network config (as a conflist) ADD ran.
    pub network: Value,
    /// Interface name in the pod.
    pub ifname: String,
    /// The pod's network namespace.
    pub netns: PathBuf,
    /// `CNI_ARGS` pairs.
    pub cni_args: Vec<(String, String)>,
    /// Capability args.
    pub runtime: RuntimeArgs,
    /// ADD's final result, once it succeeded.
    pub result: Option<Value>,
}

/// A directory of entries keyed by sandbox id.
#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
}

impl Cache {
    /// Entries under `dir` (made on first write).
    pub fn new(dir: impl Into<PathBuf>) -> Cache {
        Cache { dir: dir.into() }
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    /// Writes `id`'s entry atomically (temp file, rename).
    pub async fn put(&self, id: &str, entry: &Entry) -> std::io::Result<()> {
        tokio::fs::create_dir_all(&self.dir).await?;
        let bytes = serde_json::to_vec(entry).map_err(std::io::Error::other)?;
        let tmp = self.dir.join(format!(".{id}.tmp"));
        tokio::fs::write(&tmp, bytes).await?;
        tokio::fs::rename(&tmp, self.path(id)).await
    }

    /// `id`'s entry; `None` when absent or unreadable (then DEL falls back to the current
    /// config, as the spec allows).
    pub async fn get(&self, id: &str) -> Option<Entry> {
        let bytes = tokio::fs::read(self.path(id)).await.ok()?;
        match serde_json::from_slice(&bytes) {
            Ok(e) => Some(e),
            Err(e) => {
                tracing::warn!(sandbox = %id, error = %e, "unreadable CNI cache entry");
                None
            }
        }
    }

    /// Removes `id`'s entry (and a temp file a crash left of it); absent is fine.
    pub async fn remove(&self, id: &str) -> std::io::Result<()> {
        for p in [self.dir.join(format!(".{id}.tmp")), self.path(id)] {
            match tokio::fs::remove_file(&p).await {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }

    /// Removes the temp files of writes a crash interrupted (before their rename, so the
    /// entry they were to replace, if any, is still whole).
    pub fn sweep_temp(&self) {
        for e in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') && name.ends_with(".tmp") {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }

    /// The ids with an entry.
    pub fn ids(&self) -> Vec<String> {
        std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.strip_suffix(".json")
                    .filter(|_| !name.starts_with('.'))
                    .map(str::to_string)
            })
            .collect()
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn put_get_remove() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = Cache::new(dir.path().join("results"));
        assert!(cache.get("a").await.is_none());
        let entry = Entry {
            network: serde_json::json!({"name":"n"}),
            ifname: "eth0".into(),
            netns: "/run/x".into(),
            cni_args: vec![("K8S_POD_NAME".into(), "p".into())],
            runtime: RuntimeArgs::default(),
            result: Some(serde_json::json!({"ips":[]})),
        };
        cache.put("a", &entry).await.expect("put");
        assert_eq!(cache.get("a").await, Some(entry));
        assert_eq!(cache.ids(), vec!["a".to_string()]);
        cache.remove("a").await.expect("remove");
        cache.remove("a").await.expect("remove again");
        assert!(cache.get("a").await.is_none());
        // A crash between the temp write and the rename leaves a temp file: swept.
        std::fs::write(cache.dir().join(".b.tmp"), b"{").expect("write");
        cache.sweep_temp();
        assert_eq!(
            std::fs::read_dir(cache.dir()).expect("readdir").count(),
            0,
            "temp file left"
        );
    }
}
