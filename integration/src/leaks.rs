//! What a CRI endpoint leaves on the host, so a test can assert that a failed or finished
//! call left nothing behind: mounts under the daemon's dirs, pinned network namespaces,
//! shim processes started for this daemon, and the pods and containers it lists.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::cri::CriClient;
use crate::host;
use crate::pod::Endpoint;

/// One look at an endpoint's footprint.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Footprint {
    /// Mount points under the daemon's temp dir (and under its netns dir).
    pub mounts: BTreeSet<PathBuf>,
    /// Entries of the netns pin dir.
    pub netns: BTreeSet<String>,
    /// Pids of `containerd-shim-*` processes whose command line names this daemon's socket.
    pub shims: BTreeSet<u32>,
    /// Pod ids listed by `ListPodSandbox`.
    pub pods: BTreeSet<String>,
    /// Container ids listed by `ListContainers`.
    pub containers: BTreeSet<String>,
}

impl Footprint {
    /// Takes the footprint of `ep` now.
    pub async fn take(ep: &Endpoint) -> anyhow::Result<Footprint> {
        let mut client: CriClient = ep.client();
        let mut mounts: BTreeSet<PathBuf> =
            host::mounts_under(ep.daemon_dir()).into_iter().collect();
        let netns_dir = ep.netns_dir();
        // The pin dir itself may be made a (shared) bind mount of itself on first use, as
        // `ip netns` does: only the pins below it count.
        let resolved = resolve(&netns_dir);
        mounts.extend(host::mounts_under(&netns_dir));
        mounts.extend(host::mounts_under(&resolved));
        mounts.retain(|m| m != &netns_dir && m != &resolved);
        let netns = std::fs::read_dir(&netns_dir)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        let pods = client
            .list_pods(None)
            .await?
            .into_iter()
            .map(|p| p.id)
            .collect();
        let containers = client
            .list_containers(None)
            .await?
            .into_iter()
            .map(|c| c.id)
            .collect();
        Ok(Footprint {
            mounts,
            netns,
            shims: shims_of(&ep.socket()),
            pods,
            containers,
        })
    }

    /// What `later` has that `self` had not, as a readable list (empty = nothing new).
    pub fn added_in(&self, later: &Footprint) -> Vec<String> {
        let mut out = Vec::new();
        for m in later.mounts.difference(&self.mounts) {
            out.push(format!("mount {}", m.display()));
        }
        for n in later.netns.difference(&self.netns) {
            out.push(format!("netns pin {n}"));
        }
        for s in later.shims.difference(&self.shims) {
            out.push(format!("shim pid {s}: {}", cmdline(*s)));
        }
        for p in later.pods.difference(&self.pods) {
            out.push(format!("pod {p}"));
        }
        for c in later.containers.difference(&self.containers) {
            out.push(format!("container {c}"));
        }
        out
    }
}

/// What `ep` has beyond `base`, waiting up to `timeout` for it to go (shims exit a moment
/// after the call that shut them down returned).
pub async fn left_behind(
    ep: &Endpoint,
    base: &Footprint,
    timeout: std::time::Duration,
) -> anyhow::Result<Vec<String>> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let left = base.added_in(&Footprint::take(ep).await?);
        if left.is_empty() || tokio::time::Instant::now() >= deadline {
            return Ok(left);
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// `/var/run/...` → `/run/...`: mountinfo shows resolved paths.
fn resolve(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

/// A process's command line with NULs as spaces.
pub fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

/// Pids of running `containerd-shim-*` processes whose command line mentions `socket` (both
/// containerd and crius pass their socket as `-address`).
pub fn shims_of(socket: &Path) -> BTreeSet<u32> {
    let needle = socket.display().to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return BTreeSet::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
            let name = exe
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            name.starts_with("containerd-shim") && cmdline(*pid).contains(&needle)
        })
        .filter(|pid| host::process_state(*pid) != Some('Z'))
        .collect()
}

/// Resident set size of all of `socket`'s shims, KiB.
pub fn shims_rss_kib(socket: &Path) -> u64 {
    shims_of(socket).into_iter().filter_map(host::rss_kib).sum()
}

/// `VmHWM` (peak RSS) of a process in KiB.
pub fn hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}
