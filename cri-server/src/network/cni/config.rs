//! Network configs: the `.conflist` (or single-plugin `.conf`) files in the CNI conf dir,
//! and which of them is the pod network.
//!
//! As libcni and the kubelet do, the lexicographically first file (by name) that loads is
//! the network; files that do not parse are skipped and named in the "not ready" message.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

/// Spec versions whose configs we run. Results of all of them share one shape (`ips`,
/// `interfaces`, `routes`, `dns`), which is all the daemon reads.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0"];

/// File name extensions a network config may have.
const EXTENSIONS: &[&str] = &["conf", "conflist", "json"];

/// One loaded network: a plugin chain under one name and spec version.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkConfig {
    /// `name`: the network's name (host-local keys its allocations by it).
    pub name: String,
    /// `cniVersion`.
    pub cni_version: String,
    /// `disableCheck`: CHECK is skipped for this network.
    pub disable_check: bool,
    /// The chain, in ADD order.
    pub plugins: Vec<PluginConfig>,
    /// The file it came from.
    pub source: PathBuf,
    /// The whole config as a conflist, kept with each pod's cached result so that DEL runs
    /// the chain that ADD ran even after the file changed.
    pub raw: Value,
}

/// One plugin of a chain.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginConfig {
    /// `type`: the plugin binary's name.
    pub kind: String,
    /// The plugin's own keys, passed to it on stdin (with `name`, `cniVersion`,
    /// `prevResult` and `runtimeConfig` set per call).
    pub raw: Map<String, Value>,
    /// `capabilities` it declares true: only these runtime args are sent to it.
    pub capabilities: BTreeSet<String>,
}

impl NetworkConfig {
    /// Whether this network's version has CHECK and passes `prevResult` to DEL (0.4.0+).
    pub fn has_check(&self) -> bool {
        !self.cni_version.starts_with("0.3")
    }

    /// Parses a conflist, or a single-plugin conf (which becomes a chain of one).
    pub fn parse(bytes: &[u8], source: &Path) -> Result<NetworkConfig, String> {
        let value: Value =
            serde_json::from_slice(bytes).map_err(|e| format!("{}: {e}", source.display()))?;
        Self::from_value(value, source).map_err(|e| format!("{}: {e}", source.display()))
    }

    /// [`NetworkConfig::parse`] of a JSON value (a cached `raw`, say).
    pub fn from_value(value: Value, source: &Path) -> Result<NetworkConfig, String> {
        let Value::Object(obj) = &value else {
            return Err("not a JSON object".into());
        };
        let name = string_field(obj, "name")?;
        let cni_version = string_field(obj, "cniVersion")?;
        if !SUPPORTED_VERSIONS.contains(&cni_version.as_str()) {
            return Err(format!(
                "cniVersion {cni_version:?} is not supported (supported: {})",
                SUPPORTED_VERSIONS.join(", ")
            ));
        }
        let disable_check = obj
            .get("disableCheck")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let (plugins, raw) = match obj.get("plugins") {
            Some(Value::Array(list)) => {
                let plugins = list
                    .iter()
                    .enumerate()
                    .map(|(i, p)| plugin(p).map_err(|e| format!("plugins[{i}]: {e}")))
                    .collect::<Result<Vec<_>, _>>()?;
                (plugins, value.clone())
            }
            Some(_) => return Err("\"plugins\" is not a list".into()),
            None => {
                let p = plugin(&value)?;
                let raw = serde_json::json!({
                    "cniVersion": cni_version,
                    "name": name,
                    "plugins": [value],
                });
                (vec![p], raw)
            }
        };
        if plugins.is_empty() {
            return Err("\"plugins\" is empty".into());
        }
        Ok(NetworkConfig {
            name,
            cni_version,
            disable_check,
            plugins,
            source: source.to_path_buf(),
            raw,
        })
    }
}

fn string_field(obj: &Map<String, Value>, key: &str) -> Result<String, String> {
    match obj.get(key) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(_) => Err(format!("{key:?} is not a non-empty string")),
        None => Err(format!("{key:?} is missing")),
    }
}

fn plugin(value: &Value) -> Result<PluginConfig, String> {
    let Value::Object(obj) = value else {
        return Err("not a JSON object".into());
    };
    let kind = string_field(obj, "type")?;
    // The type names a binary in the plugin dirs, never a path.
    if kind.contains('/') || kind == "." || kind == ".." {
        return Err(format!("plugin type {kind:?} is not a plain name"));
    }
    let capabilities = match obj.get("capabilities") {
        Some(Value::Object(caps)) => caps
            .iter()
            .filter(|(_, v)| v.as_bool() == Some(true))
            .map(|(k, _)| k.clone())
            .collect(),
        _ => BTreeSet::new(),
    };
    Ok(PluginConfig {
        kind,
        raw: obj.clone(),
        capabilities,
    })
}

/// The files of `dir` that may hold network configs, sorted by name, with their
/// modification time and size (the watcher's fingerprint).
pub fn candidates(dir: &Path) -> std::io::Result<Vec<(PathBuf, std::time::SystemTime, u64)>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        if !EXTENSIONS.contains(&ext) {
            continue;
        }
        let Ok(meta) = std::fs::metadata(&path) else {
            continue; // a dangling symlink or a file removed meanwhile
        };
        if !meta.is_file() {
            continue;
        }
        let mtime = meta.modified().unwrap_or(std::time::UNIX_EPOCH);
        files.push((path, mtime, meta.len()));
    }
    files.sort();
    Ok(files)
}

/// The pod network of `dir`: its first file that loads. The error says why none did.
pub fn load_dir(dir: &Path) -> Result<NetworkConfig, String> {
    let files = candidates(dir).map_err(|e| format!("cni config dir {}: {e}", dir.display()))?;
    let mut skipped = Vec::new();
    for (path, _, _) in files {
        match std::fs::read(&path) {
            Ok(bytes) => match NetworkConfig::parse(&bytes, &path) {
                Ok(net) => return Ok(net),
                Err(e) => skipped.push(e),
            },
            Err(e) => skipped.push(format!("{}: {e}", path.display())),
        }
    }
    let mut msg = format!("no network config found in {}", dir.display());
    if !skipped.is_empty() {
        msg.push_str(" (skipped: ");
        msg.push_str(&skipped.join("; "));
        msg.push(')');
    }
    Err(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflist_keeps_order_and_capabilities() {
        let net = NetworkConfig::parse(
            br#"{"cniVersion":"1.0.0","name":"n","plugins":[
                {"type":"bridge","bridge":"b0"},
                {"type":"portmap","capabilities":{"portMappings":true,"other":false}}]}"#,
            Path::new("x.conflist"),
        )
        .expect("parse");
        assert_eq!(net.name, "n");
        let kinds: Vec<_> = net.plugins.iter().map(|p| p.kind.as_str()).collect();
        assert_eq!(kinds, ["bridge", "portmap"]);
        assert!(net.plugins[1].capabilities.contains("portMappings"));
        assert!(!net.plugins[1].capabilities.contains("other"));
        assert!(net.has_check());
    }

    #[test]
    fn single_conf_becomes_a_chain_of_one() {
        let net = NetworkConfig::parse(
            br#"{"cniVersion":"0.3.1","name":"n","type":"loopback"}"#,
            Path::new("x.conf"),
        )
        .expect("parse");
        assert_eq!(net.plugins.len(), 1);
        assert_eq!(net.raw["plugins"][0]["type"], "loopback");
        assert!(!net.has_check());
    }

    #[test]
    fn bad_configs_say_why() {
        for (text, want) in [
            (r#"{"name":"n","plugins":[{"type":"x"}]}"#, "cniVersion"),
            (
                r#"{"cniVersion":"9.9.9","name":"n","plugins":[{"type":"x"}]}"#,
                "9.9.9",
            ),
            (r#"{"cniVersion":"1.0.0","name":"n","plugins":[]}"#, "empty"),
            (
                r#"{"cniVersion":"1.0.0","name":"n","plugins":[{}]}"#,
                "plugins[0]",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"../x"}]}"#,
                "plain name",
            ),
            (r#"{"cniVersion":"1.0.0","plugins":[{"type":"x"}]}"#, "name"),
            ("{nope", "x.conflist"),
        ] {
            let err =
                NetworkConfig::parse(text.as_bytes(), Path::new("x.conflist")).expect_err(text);
            assert!(err.contains(want), "{text}: {err}");
        }
    }

    #[test]
    fn first_loadable_file_wins() {
        let dir = tempfile::tempdir().expect("tempdir");
        let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text);
        write("00-broken.conflist", "{not json").expect("write");
        write("05-readme.txt", "ignored").expect("write");
        write(
            "20-b.conflist",
            r#"{"cniVersion":"1.0.0","name":"b","plugins":[{"type":"bridge"}]}"#,
        )
        .expect("write");
        write(
            "10-a.conf",
            r#"{"cniVersion":"0.4.0","name":"a","type":"ptp"}"#,
        )
        .expect("write");
        let net = load_dir(dir.path()).expect("load");
        assert_eq!(net.name, "a");
        std::fs::remove_file(dir.path().join("10-a.conf")).expect("rm");
        assert_eq!(load_dir(dir.path()).expect("load").name, "b");
        std::fs::remove_file(dir.path().join("20-b.conflist")).expect("rm");
        let err = load_dir(dir.path()).expect_err("none left");
        assert!(
            err.contains("no network config") && err.contains("00-broken"),
            "{err}"
        );
    }
}
