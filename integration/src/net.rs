//! Test pod networks for CNI tests.
//!
//! Each [`TestNetwork`] holds a slot no other live test on the host holds (a `flock` on a
//! file under `/var/tmp`, kept for the life of the object, so parallel test processes never
//! pick the same one): from the slot come its bridge name, its IPv4 /24 and its CNI network
//! name. It builds the conflist both crius and containerd load ([`Conflist`]), and takes
//! [`NetSnapshot`]s of what pods on it leave on the host: netns pins, cached CNI results,
//! veths, host-local IP allocations and iptables rules, all scoped to this one network so that other tests
//! running at the same time do not show up.
//!
//! The bridge is made by the network itself, with the gateway address on it, rather than
//! by the bridge plugin with `isGateway`: that plugin would also switch on the host-wide
//! `net.ipv4.ip_forward`, which no test here needs (pods only talk to each other over the
//! bridge and to the host through the gateway address).

use std::collections::BTreeSet;
use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::Context;

use crate::host;
use crate::shim::random_id;

/// Where slot locks live: shared by every test process on the host.
const LOCK_DIR: &str = "/var/tmp/crius-testnet";
/// libcni's host-wide result cache (containerd's).
pub const LIBCNI_RESULTS: &str = "/var/lib/cni/results";
/// How many networks tests may hold at once: 10.150.0.0/24 … 10.151.255.0/24 (clear of
/// 10.88/16 and 10.89/16, the crius and containerd defaults).
const SLOTS: u16 = 512;

/// A test pod network: bridge, subnet, CNI name and host-local data dir of its own.
/// Dropping it deletes the bridge and any iptables rule still naming it.
pub struct TestNetwork {
    slot: u16,
    name: String,
    bridge: String,
    dir: tempfile::TempDir,
    _lock: File,
}

impl std::fmt::Debug for TestNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestNetwork")
            .field("name", &self.name)
            .field("bridge", &self.bridge)
            .field("subnet", &self.subnet())
            .finish()
    }
}

impl TestNetwork {
    /// Takes a free slot and makes its bridge (up, with the gateway address). Whatever a
    /// killed test left of the same slot (bridge, iptables rules) is removed first: holding
    /// the lock means nobody else uses it.
    pub fn new() -> anyhow::Result<TestNetwork> {
        std::fs::create_dir_all(LOCK_DIR).with_context(|| format!("creating {LOCK_DIR}"))?;
        let start = u16::from_str_radix(&random_id("")[..4], 16).unwrap_or(0) % SLOTS;
        for i in 0..SLOTS {
            let slot = (start + i) % SLOTS;
            let path = Path::new(LOCK_DIR).join(format!("slot-{slot:03}.lock"));
            let file = File::options()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .with_context(|| format!("opening {}", path.display()))?;
            // SAFETY: flock(2) on a descriptor we own; no memory is involved.
            let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if locked != 0 {
                continue;
            }
            let dir = tempfile::Builder::new()
                .prefix("crius-net-")
                .tempdir_in(host::scratch_dir())?;
            let net = TestNetwork {
                slot,
                name: format!("crius-tn-{slot:03}"),
                bridge: format!("crtn{slot:03}"),
                dir,
                _lock: file,
            };
            net.purge();
            net.make_bridge()?;
            return Ok(net);
        }
        anyhow::bail!("all {SLOTS} test network slots under {LOCK_DIR} are taken")
    }

    /// The CNI network name (`crius-tn-NNN`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The bridge's name (`crtnNNN`, well under the 15-character limit).
    pub fn bridge(&self) -> &str {
        &self.bridge
    }

    /// The subnet's network address (the subnet is its /24).
    pub fn network_addr(&self) -> Ipv4Addr {
        Ipv4Addr::new(
            10,
            150 + (self.slot / 256) as u8,
            (self.slot % 256) as u8,
            0,
        )
    }

    /// The subnet, `10.15x.y.0/24`.
    pub fn subnet(&self) -> String {
        format!("{}/24", self.network_addr())
    }

    /// The gateway: `.1`, the bridge's own address, by which the host reaches pods.
    pub fn gateway(&self) -> Ipv4Addr {
        let o = self.network_addr().octets();
        Ipv4Addr::new(o[0], o[1], o[2], 1)
    }

    /// Whether `ip` (text) is an address of this subnet.
    pub fn contains(&self, ip: &str) -> bool {
        let Ok(ip) = ip.parse::<Ipv4Addr>() else {
            return false;
        };
        ip.octets()[..3] == self.network_addr().octets()[..3]
    }

    /// host-local's data dir for this network (its allocations are files in
    /// `<data dir>/<name>/`).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("ipam")
    }

    /// A scratch dir owned by this network (test plugin dirs and the like).
    pub fn scratch(&self) -> &Path {
        self.dir.path()
    }

    /// The conflist for `spec` on this network.
    pub fn conflist(&self, spec: &Conflist) -> serde_json::Value {
        let mut plugins = vec![serde_json::json!({
            "type": "bridge",
            "bridge": self.bridge,
            "isGateway": false,
            "ipMasq": false,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": self.subnet(), "gateway": self.gateway().to_string()}]],
                "dataDir": self.data_dir(),
            }
        })];
        plugins.extend(spec.chained.iter().cloned());
        if spec.portmap {
            plugins.push(serde_json::json!({
                "type": "portmap",
                "capabilities": {"portMappings": true},
                "snat": true,
            }));
        }
        plugins.push(serde_json::json!({"type": "loopback"}));
        serde_json::json!({
            "cniVersion": spec.cni_version,
            "name": self.name,
            "plugins": plugins,
        })
    }

    /// The conflist for `spec` as file contents.
    pub fn conflist_bytes(&self, spec: &Conflist) -> Vec<u8> {
        serde_json::to_vec_pretty(&self.conflist(spec)).unwrap_or_default()
    }

    /// Creates the bridge with the gateway address, up.
    fn make_bridge(&self) -> anyhow::Result<()> {
        let gw = format!("{}/24", self.gateway());
        for args in [
            vec!["link", "add", &self.bridge, "type", "bridge"],
            vec!["addr", "add", &gw, "dev", &self.bridge],
            vec!["link", "set", &self.bridge, "up"],
        ] {
            let out = Command::new("ip")
                .args(&args)
                .output()
                .context("running ip")?;
            anyhow::ensure!(
                out.status.success(),
                "ip {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// Deletes the bridge, libcni's cached results for this network (containerd's, in the
    /// host-wide dir) and every iptables rule naming it (and the per-pod `CNI-DN-*` chains
    /// those rules jump to).
    fn purge(&self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .stderr(Stdio::null())
            .status();
        let prefix = format!("{}-", self.name);
        if let Ok(entries) = std::fs::read_dir(LIBCNI_RESULTS) {
            for e in entries.filter_map(|e| e.ok()) {
                if e.file_name().to_string_lossy().starts_with(&prefix) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        let rules = iptables_rules();
        let mine: Vec<&(String, String)> = rules
            .iter()
            .filter(|(_, rule)| self.mentions(rule))
            .collect();
        if mine.is_empty() {
            return;
        }
        let mut deletes = String::new();
        let mut chains = String::new();
        for table in ["filter", "nat", "mangle", "raw"] {
            let rules: Vec<&str> = mine
                .iter()
                .filter(|(t, _)| t == table)
                .map(|(_, r)| r.as_str())
                .collect();
            if rules.is_empty() {
                continue;
            }
            deletes.push_str(&format!("*{table}\n"));
            chains.push_str(&format!("*{table}\n"));
            for r in &rules {
                if let Some(rest) = r.strip_prefix("-A ") {
                    deletes.push_str(&format!("-D {rest}\n"));
                }
                if let Some(target) = jump_target(r).filter(|t| t.starts_with("CNI-DN-")) {
                    chains.push_str(&format!("-F {target}\n-X {target}\n"));
                }
            }
            deletes.push_str("COMMIT\n");
            chains.push_str("COMMIT\n");
        }
        for input in [deletes, chains] {
            iptables_restore(&input);
        }
    }

    /// Whether an `iptables-save` rule line names this network: its CNI name (as portmap
    /// quotes it in comments), an address in its subnet, or its bridge as an interface.
    fn mentions(&self, rule: &str) -> bool {
        let o = self.network_addr().octets();
        let prefix = format!("{}.{}.{}.", o[0], o[1], o[2]);
        rule.contains(&format!("\\\"{}\\\"", self.name))
            || rule
                .split_whitespace()
                .any(|tok| tok == self.bridge || tok.starts_with(&prefix))
    }

    /// What pods of this network leave on the host now; `netns_dir` is the pin dir of the
    /// runtime running them, `cache` where it keeps CNI results.
    pub fn snapshot(&self, netns_dir: &Path, cache: &ResultCache) -> NetSnapshot {
        let names = |dir: &Path| -> BTreeSet<String> {
            std::fs::read_dir(dir)
                .map(|d| {
                    d.filter_map(|e| e.ok())
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default()
        };
        let allocations = names(&self.data_dir().join(&self.name))
            .into_iter()
            .filter(|n| n != "lock" && !n.starts_with("last_reserved_ip"))
            .collect();
        let veths = host_veths();
        let loose_veths = veths
            .iter()
            .filter(|(_, master)| master.is_none() || master.as_deref() == Some(&self.bridge))
            .map(|(name, _)| name.clone())
            .collect();
        let results = match cache {
            ResultCache::Own(dir) => names(dir),
            ResultCache::Shared(dir) => names(dir)
                .into_iter()
                .filter(|n| n.starts_with(&format!("{}-", self.name)))
                .collect(),
        };
        NetSnapshot {
            netns: names(netns_dir),
            results,
            bridge_ports: names(&Path::new("/sys/class/net").join(&self.bridge).join("brif")),
            loose_veths,
            veth_count: veths.len(),
            allocations,
            iptables: iptables_rules()
                .into_iter()
                .filter(|(_, r)| self.mentions(r))
                .map(|(t, r)| format!("-t {t} {r}"))
                .collect(),
        }
    }

    /// What differs from `base` now, waiting up to `timeout` for it to settle (teardown
    /// finishes a moment after the call returned; other tests' veths come and go).
    pub async fn settled(
        &self,
        netns_dir: &Path,
        cache: &ResultCache,
        base: &NetSnapshot,
        timeout: Duration,
    ) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut previous: Option<Vec<String>> = None;
        loop {
            let now = self.snapshot(netns_dir, cache);
            let diff = base.diff(&now);
            if diff.is_empty() {
                return diff;
            }
            if tokio::time::Instant::now() >= deadline {
                // What two looks 100 ms apart both saw: a leak stays, other tests' passing
                // veths do not.
                let kept = previous.unwrap_or_else(|| diff.clone());
                let (counts, items): (Vec<String>, Vec<String>) =
                    diff.into_iter().partition(|d| d.starts_with("(host veths"));
                let mut lasting: Vec<String> =
                    items.into_iter().filter(|d| kept.contains(d)).collect();
                if !lasting.is_empty() {
                    lasting.extend(counts);
                }
                return lasting;
            }
            previous = Some(diff);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for TestNetwork {
    fn drop(&mut self) {
        self.purge();
    }
}

/// What a conflist for a [`TestNetwork`] holds: bridge + host-local, then `chained`, then
/// portmap if asked, then loopback.
#[derive(Debug, Clone)]
pub struct Conflist {
    /// `cniVersion` (`0.4.0` and `1.0.0` are both exercised).
    pub cni_version: String,
    /// Whether portmap (`portMappings` capability, `snat: true`) is in the chain.
    pub portmap: bool,
    /// Plugins chained after the bridge, e.g. one that fails.
    pub chained: Vec<serde_json::Value>,
}

impl Conflist {
    /// bridge + host-local + loopback at `cni_version`.
    pub fn new(cni_version: &str) -> Conflist {
        Conflist {
            cni_version: cni_version.into(),
            portmap: false,
            chained: Vec::new(),
        }
    }

    /// With portmap.
    pub fn with_portmap(mut self) -> Conflist {
        self.portmap = true;
        self
    }

    /// With `plugin` chained after the bridge.
    pub fn chain(mut self, plugin: serde_json::Value) -> Conflist {
        self.chained.push(plugin);
        self
    }
}

impl Default for Conflist {
    fn default() -> Self {
        Conflist::new("1.0.0")
    }
}

/// The loopback-only conflist crius test daemons get unless a test asks otherwise, so that
/// they never fall back to crius's default bridge network.
pub fn loopback_conflist() -> Vec<u8> {
    br#"{"cniVersion":"1.0.0","name":"crius-test-lo","plugins":[{"type":"loopback"}]}"#.to_vec()
}

/// Where a runtime caches CNI results (what ADD returned, for DEL).
#[derive(Debug, Clone)]
pub enum ResultCache {
    /// A dir of the runtime's own: every file there counts.
    Own(PathBuf),
    /// libcni's host-wide dir (`/var/lib/cni/results`, containerd's): files named
    /// `<network>-<container id>-<ifname>` count.
    Shared(PathBuf),
}

/// What one test network's pods leave on the host.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NetSnapshot {
    /// Entries of the runtime's netns pin dir.
    pub netns: BTreeSet<String>,
    /// Cached CNI results of this network.
    pub results: BTreeSet<String>,
    /// Links attached to the test bridge (`/sys/class/net/<bridge>/brif/`).
    pub bridge_ports: BTreeSet<String>,
    /// Host veths attached to no bridge or to the test bridge: a veth whose pod network was
    /// torn down only halfway shows up here whichever bridge it was on.
    pub loose_veths: BTreeSet<String>,
    /// All host veths. Shown in messages, not compared: pods of other tests running at the
    /// same time come and go.
    pub veth_count: usize,
    /// host-local allocations (one file per allocated IP).
    pub allocations: BTreeSet<String>,
    /// `iptables-save` rules naming the network, its subnet or its bridge (`-t <table> -A …`).
    pub iptables: BTreeSet<String>,
}

impl NetSnapshot {
    /// What differs between `self` and `later`, readable (empty = the same, up to
    /// unattached veths that went away).
    pub fn diff(&self, later: &NetSnapshot) -> Vec<String> {
        let mut out = Vec::new();
        let mut cmp = |what: &str, a: &BTreeSet<String>, b: &BTreeSet<String>, gone: bool| {
            for x in b.difference(a) {
                out.push(format!("new {what}: {x}"));
            }
            if gone {
                for x in a.difference(b) {
                    out.push(format!("gone {what}: {x}"));
                }
            }
        };
        cmp("netns pin", &self.netns, &later.netns, true);
        cmp("cached CNI result", &self.results, &later.results, true);
        cmp("bridge port", &self.bridge_ports, &later.bridge_ports, true);
        // Only new ones: another test's veth caught before its plugin attached it to its
        // bridge is gone from this list a moment later.
        cmp(
            "unattached veth",
            &self.loose_veths,
            &later.loose_veths,
            false,
        );
        cmp(
            "host-local allocation",
            &self.allocations,
            &later.allocations,
            true,
        );
        cmp("iptables rule", &self.iptables, &later.iptables, true);
        if !out.is_empty() {
            out.push(format!(
                "(host veths: {} then {})",
                self.veth_count, later.veth_count
            ));
        }
        out
    }
}

/// Host veths with the bridge each is attached to (if any).
pub fn host_veths() -> Vec<(String, Option<String>)> {
    let Ok(out) = Command::new("ip")
        .args(["-o", "link", "show", "type", "veth"])
        .output()
    else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let name = l.split(": ").nth(1)?.split('@').next()?.to_string();
            let master = std::fs::read_link(format!("/sys/class/net/{name}/master"))
                .ok()
                .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
            Some((name, master))
        })
        .collect()
}

/// Names of the host's network interfaces (`ip -o link`).
pub fn host_links() -> BTreeSet<String> {
    let Ok(out) = Command::new("ip").args(["-o", "link"]).output() else {
        return BTreeSet::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| Some(l.split(": ").nth(1)?.split('@').next()?.to_string()))
        .collect()
}

/// The host's IPv4 addresses (`ip -o -4 addr`).
pub fn host_ipv4s() -> BTreeSet<String> {
    let Ok(out) = Command::new("ip").args(["-o", "-4", "addr"]).output() else {
        return BTreeSet::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            it.find(|t| *t == "inet")?;
            Some(it.next()?.split('/').next()?.to_string())
        })
        .collect()
}

/// Every `-A` rule of `iptables-save`, with its table.
fn iptables_rules() -> Vec<(String, String)> {
    let bin = host::find_binary("iptables-save").unwrap_or_else(|| "iptables-save".into());
    let Ok(out) = Command::new(bin).stderr(Stdio::null()).output() else {
        return Vec::new();
    };
    let mut table = String::new();
    let mut rules = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if let Some(t) = line.strip_prefix('*') {
            table = t.to_string();
        } else if line.starts_with("-A ") {
            rules.push((table.clone(), line.to_string()));
        }
    }
    rules
}

/// The `-j` target of a rule line.
fn jump_target(rule: &str) -> Option<&str> {
    let mut it = rule.split_whitespace();
    it.find(|t| *t == "-j")?;
    it.next()
}

/// `iptables-restore --noflush` of `input`, errors ignored (cleanup only).
fn iptables_restore(input: &str) {
    use std::io::Write;
    let bin = host::find_binary("iptables-restore").unwrap_or_else(|| "iptables-restore".into());
    let Ok(mut child) = Command::new(bin)
        .arg("--noflush")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    else {
        return;
    };
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(input.as_bytes());
    }
    let _ = child.wait();
}

/// An exclusive lock on a named resource of the host (a fixed host port, say) shared by
/// test processes, held until dropped. Blocks until it is free.
pub struct HostLock {
    _file: File,
}

impl HostLock {
    /// Waits for and takes the lock named `name`.
    pub fn take(name: &str) -> anyhow::Result<HostLock> {
        std::fs::create_dir_all(LOCK_DIR).with_context(|| format!("creating {LOCK_DIR}"))?;
        let path = Path::new(LOCK_DIR).join(format!("{name}.lock"));
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        // SAFETY: flock(2) on a descriptor we own; no memory is involved.
        let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        anyhow::ensure!(
            r == 0,
            "flock {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        );
        Ok(HostLock { _file: file })
    }
}
