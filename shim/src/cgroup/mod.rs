//! A container's cgroup: where it is (found from the init pid, on cgroup v1 — including hybrid
//! hosts — or v2), which pids it holds, containerd's `Metrics` for `Stats`, and OOM-kill
//! notifications.
//!
//! The cgroup files are tiny and are read synchronously; the only blocking-prone fds (the v1
//! eventfd and the v2 inotify fd) are non-blocking and driven through tokio's `AsyncFd`.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use containerd_shim_protos::cgroups::metrics as v1m;
use containerd_shim_protos::cgroups_v2::metrics as v2m;
use protobuf::well_known_types::any::Any;
use protobuf::{Message, MessageField};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

mod files;
mod locate;
mod oom;
mod v1;
mod v2;

#[cfg(test)]
mod tests;

use files::*;
use locate::*;
pub use oom::OomWatch;
use oom::*;
use v1::*;
use v2::*;

/// The `type_url` containerd's Go shim puts on cgroup v1 stats.
pub const V1_METRICS_TYPE_URL: &str = "io.containerd.cgroups.v1.Metrics";
/// The `type_url` containerd's Go shim puts on cgroup v2 stats.
pub const V2_METRICS_TYPE_URL: &str = "io.containerd.cgroups.v2.Metrics";

/// How often a v2 watch checks that the cgroup still exists (inotify does not report the
/// removal of a cgroup directory).
const V2_GONE_POLL: Duration = Duration::from_millis(500);
/// After a v1 OOM notification, how long to wait for the kernel to count the kill (the
/// eventfd is signalled before the victim is chosen).
const V1_KILL_GRACE_STEP: Duration = Duration::from_millis(10);
const V1_KILL_GRACE_STEPS: u32 = 30;

/// Errors from locating or reading a cgroup. Messages name the file or path involved.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// A file could not be read.
    #[error("reading {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A file's contents made no sense.
    #[error("parsing {what}: {msg}")]
    Parse { what: String, msg: String },
    /// The process's cgroup is on a hierarchy that is not mounted (or the file lists none).
    #[error("no mounted cgroup hierarchy for {what} (from {source_file})")]
    NotMounted { what: String, source_file: String },
    /// The cgroup directory no longer exists.
    #[error("cgroup {} no longer exists", path.display())]
    Gone { path: PathBuf },
    /// Setting up an OOM watch failed.
    #[error("watching {}: {op}: {source}", path.display())]
    Watch {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Encoding the metrics message failed.
    #[error("encoding cgroup metrics: {0}")]
    Encode(#[from] protobuf::Error),
}

/// A container's cgroup, found from its init pid, on cgroup v1 (incl. hybrid hosts) or v2.
#[derive(Debug, Clone)]
pub struct Cgroup {
    kind: Kind,
}

#[derive(Debug, Clone)]
enum Kind {
    /// Controller (or `name=...` hierarchy) → directory of the cgroup in that hierarchy.
    V1(BTreeMap<String, PathBuf>),
    /// The cgroup's directory on the unified hierarchy.
    V2(PathBuf),
}

impl Cgroup {
    /// Reads /proc/<pid>/cgroup and /proc/self/mountinfo (or /proc/self/mounts) to locate the
    /// container's cgroup dirs. Must be called while the process is alive.
    pub fn for_pid(pid: u32) -> Result<Cgroup, CgroupError> {
        let proc_path = PathBuf::from(format!("/proc/{pid}/cgroup"));
        let proc_cgroup = read_required(&proc_path)?;
        let mounts = match fs::read_to_string("/proc/self/mountinfo") {
            Ok(text) => text,
            Err(_) => read_required(Path::new("/proc/self/mounts"))?,
        };
        Self::parse(
            &proc_cgroup,
            &proc_path.display().to_string(),
            &mounts,
            Path::new("/"),
        )
    }

    /// Testable core: build from the text of /proc/<pid>/cgroup and of the mount table and a root
    /// (normally "/") so unit tests can use fixture dirs under a tempdir.
    pub fn from_parts(
        proc_cgroup: &str,
        mountinfo: &str,
        root: &Path,
    ) -> Result<Cgroup, CgroupError> {
        Self::parse(proc_cgroup, "/proc/<pid>/cgroup", mountinfo, root)
    }

    fn parse(
        proc_cgroup: &str,
        proc_name: &str,
        mount_text: &str,
        root: &Path,
    ) -> Result<Cgroup, CgroupError> {
        let lines = parse_proc_cgroup(proc_cgroup, proc_name)?;
        let mounts = parse_mounts(mount_text);
        // A hybrid host also lists the (empty) unified hierarchy as `0::/...`: the host is v1
        // as soon as any real v1 controller is listed. Named hierarchies (`name=systemd`) alone
        // do not make a host v1.
        let is_v1 = lines
            .iter()
            .any(|l| l.controllers.iter().any(|c| !c.starts_with("name=")));
        if is_v1 {
            let mut dirs = BTreeMap::new();
            for line in lines.iter().filter(|l| !l.controllers.is_empty()) {
                let candidates = mounts.iter().filter(|m| {
                    m.fstype == "cgroup"
                        && line
                            .controllers
                            .iter()
                            .all(|c| m.options.iter().any(|o| o == c))
                });
                if let Some(dir) = best_dir(candidates, &line.path, root) {
                    for c in &line.controllers {
                        dirs.insert(c.clone(), dir.clone());
                    }
                }
            }
            if !dirs.keys().any(|c| !c.starts_with("name=")) {
                return Err(CgroupError::NotMounted {
                    what: "any cgroup v1 controller".into(),
                    source_file: proc_name.into(),
                });
            }
            return Ok(Cgroup {
                kind: Kind::V1(dirs),
            });
        }
        let line = lines
            .iter()
            .find(|l| l.hierarchy == "0" && l.controllers.is_empty())
            .ok_or_else(|| CgroupError::Parse {
                what: proc_name.into(),
                msg: "no cgroup v1 controller and no cgroup v2 (`0::`) line".into(),
            })?;
        let candidates = mounts.iter().filter(|m| m.fstype == "cgroup2");
        let dir =
            best_dir(candidates, &line.path, root).ok_or_else(|| CgroupError::NotMounted {
                what: "cgroup2".into(),
                source_file: proc_name.into(),
            })?;
        Ok(Cgroup {
            kind: Kind::V2(dir),
        })
    }

    /// True on the unified (v2) hierarchy.
    pub fn is_v2(&self) -> bool {
        matches!(self.kind, Kind::V2(_))
    }

    /// The cgroup's directory for a v1 controller (`None` on v2 or when not mounted).
    pub fn v1_dir(&self, controller: &str) -> Option<&Path> {
        match &self.kind {
            Kind::V1(dirs) => dirs.get(controller).map(PathBuf::as_path),
            Kind::V2(_) => None,
        }
    }

    /// The cgroup's directory on v2 (`None` on v1).
    pub fn v2_dir(&self) -> Option<&Path> {
        match &self.kind {
            Kind::V1(_) => None,
            Kind::V2(dir) => Some(dir),
        }
    }

    /// Pids in the cgroup (cgroup.procs; on v1 from the pids, memory or any controller dir).
    pub fn procs(&self) -> Result<Vec<u32>, CgroupError> {
        let dir = match &self.kind {
            Kind::V2(dir) => dir.clone(),
            Kind::V1(dirs) => {
                let preferred = ["pids", "memory", "cpu", "cpuacct", "freezer", "devices"];
                preferred
                    .iter()
                    .filter_map(|c| dirs.get(*c))
                    .chain(dirs.values())
                    .find(|d| d.is_dir())
                    .cloned()
                    .ok_or_else(|| CgroupError::Gone {
                        path: v1_any_dir(dirs),
                    })?
            }
        };
        let path = dir.join("cgroup.procs");
        let text = fs::read_to_string(&path).map_err(|source| {
            if dir.is_dir() {
                CgroupError::Read { path, source }
            } else {
                CgroupError::Gone { path: dir.clone() }
            }
        })?;
        text.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(|l| {
                l.parse::<u32>().map_err(|e| CgroupError::Parse {
                    what: dir.join("cgroup.procs").display().to_string(),
                    msg: format!("{l:?}: {e}"),
                })
            })
            .collect()
    }

    /// containerd's metrics message wrapped in an Any, exactly as containerd's Go shim sends in
    /// `StatsResponse.stats`: v1 `io.containerd.cgroups.v1.Metrics`, v2
    /// `io.containerd.cgroups.v2.Metrics`. Missing files (controller not mounted) leave fields at
    /// their defaults; only a cgroup that no longer exists at all is an error.
    pub fn metrics(&self) -> Result<Any, CgroupError> {
        let (type_url, value) = match &self.kind {
            Kind::V1(dirs) => (V1_METRICS_TYPE_URL, v1_metrics(dirs)?.write_to_bytes()?),
            Kind::V2(dir) => (V2_METRICS_TYPE_URL, v2_metrics(dir)?.write_to_bytes()?),
        };
        let mut any = Any::new();
        any.type_url = type_url.to_string();
        any.value = value;
        Ok(any)
    }

    /// The kernel's count of OOM kills in this cgroup (v1 memory.oom_control `oom_kill`, v2
    /// memory.events `oom_kill`); None if unreadable.
    pub fn oom_kills(&self) -> Option<u64> {
        match &self.kind {
            Kind::V1(dirs) => read_kv(&dirs.get("memory")?.join("memory.oom_control"))?
                .get("oom_kill")
                .copied(),
            Kind::V2(dir) => read_kv(&dir.join("memory.events"))?
                .get("oom_kill")
                .copied(),
        }
    }

    /// Starts watching for OOM kills: v1 via an eventfd registered in cgroup.event_control for
    /// memory.oom_control; v2 via inotify on memory.events (plus a 500 ms check that the cgroup
    /// still exists, since inotify does not report a cgroup's removal). The fd is registered
    /// with tokio lazily, on the first `next()`.
    pub fn watch_oom(&self) -> Result<OomWatch, CgroupError> {
        match &self.kind {
            Kind::V1(dirs) => {
                let dir = dirs.get("memory").ok_or_else(|| CgroupError::NotMounted {
                    what: "memory controller".into(),
                    source_file: "/proc/<pid>/cgroup".into(),
                })?;
                let fd = v1_register_oom_eventfd(dir)?;
                Ok(OomWatch {
                    last: self.oom_kills(),
                    flavour: Flavour::V1,
                    dir: dir.clone(),
                    counter_file: dir.join("memory.oom_control"),
                    fd: Some(fd),
                    afd: None,
                    done: false,
                })
            }
            Kind::V2(dir) => {
                let file = dir.join("memory.events");
                let fd = inotify_watch(&file)?;
                Ok(OomWatch {
                    last: self.oom_kills(),
                    flavour: Flavour::V2,
                    dir: dir.clone(),
                    counter_file: file,
                    fd: Some(fd),
                    afd: None,
                    done: false,
                })
            }
        }
    }
}
