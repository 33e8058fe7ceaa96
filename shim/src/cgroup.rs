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

/// Notifications of OOM kills in a cgroup; see [`Cgroup::watch_oom`].
#[derive(Debug)]
pub struct OomWatch {
    flavour: Flavour,
    /// The cgroup directory (v1: in the memory hierarchy).
    dir: PathBuf,
    /// memory.oom_control (v1) or memory.events (v2).
    counter_file: PathBuf,
    /// The last `oom_kill` count reported (or seen when the watch started).
    last: Option<u64>,
    /// The eventfd (v1) or inotify fd (v2) until it is registered with tokio.
    fd: Option<OwnedFd>,
    afd: Option<AsyncFd<OwnedFd>>,
    done: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flavour {
    V1,
    V2,
}

/// What re-reading the counter after a wake-up says.
enum Check {
    /// The count rose (or, without a count, v1 signalled an OOM): report it.
    Kill,
    /// Nothing new.
    Nothing,
    /// The cgroup is gone.
    Gone,
}

impl OomWatch {
    /// Resolves each time the OOM-kill count rises (one call per new kill burst); returns None
    /// once the cgroup is gone.
    pub async fn next(&mut self) -> Option<()> {
        if self.done {
            return None;
        }
        // A kill counted after an earlier wake-up had given up waiting for it, or a cgroup
        // already removed.
        match self.check(false) {
            Check::Kill => return Some(()),
            Check::Gone => {
                self.done = true;
                return None;
            }
            Check::Nothing => {}
        }
        if self.afd.is_none() {
            let fd = self.fd.take()?;
            // SAFETY: `fd` is an `OwnedFd`: a valid open fd that stays open, and is the same
            // fd, for as long as the `AsyncFd` owns it.
            match unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) } {
                Ok(afd) => self.afd = Some(afd),
                Err(_) => {
                    self.done = true;
                    return None;
                }
            }
        }
        loop {
            match self.flavour {
                Flavour::V1 => {
                    if !self.wait_readable().await {
                        self.done = true;
                        return None;
                    }
                    // The eventfd fires on an OOM (before the kill is counted) and when the
                    // cgroup is removed.
                    let mut steps = 0;
                    loop {
                        match self.check(true) {
                            Check::Kill => return Some(()),
                            Check::Gone => {
                                self.done = true;
                                return None;
                            }
                            Check::Nothing if steps < V1_KILL_GRACE_STEPS => {
                                steps += 1;
                                tokio::time::sleep(V1_KILL_GRACE_STEP).await;
                            }
                            // Under OOM without a kill (oom_kill_disable, or the victim was
                            // already exiting): not a kill.
                            Check::Nothing => break,
                        }
                    }
                }
                Flavour::V2 => {
                    tokio::select! {
                        ok = self.wait_readable() => {
                            if !ok {
                                self.done = true;
                                return None;
                            }
                        }
                        _ = tokio::time::sleep(V2_GONE_POLL) => {}
                    }
                    match self.check(false) {
                        Check::Kill => return Some(()),
                        Check::Gone => {
                            self.done = true;
                            return None;
                        }
                        Check::Nothing => {}
                    }
                }
            }
        }
    }

    /// Waits until the fd is readable and drains it. False if the fd failed.
    async fn wait_readable(&self) -> bool {
        let Some(afd) = self.afd.as_ref() else {
            return false;
        };
        loop {
            let Ok(mut guard) = afd.readable().await else {
                return false;
            };
            let mut drained_any = false;
            loop {
                // Big enough for an eventfd counter and for a batch of inotify events.
                let mut buf = [0u8; 4096];
                match nix::unistd::read(afd.get_ref().as_raw_fd(), &mut buf) {
                    Ok(0) => return false,
                    Ok(_) => drained_any = true,
                    Err(nix::errno::Errno::EAGAIN) => {
                        guard.clear_ready();
                        break;
                    }
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(_) => return false,
                }
            }
            if drained_any {
                return true;
            }
        }
    }

    /// Re-reads the counter. `signalled`: v1's eventfd fired (an OOM, or the removal).
    fn check(&mut self, signalled: bool) -> Check {
        let Some(kv) = read_kv(&self.counter_file) else {
            return if self.dir.is_dir() {
                Check::Nothing
            } else {
                Check::Gone
            };
        };
        match kv.get("oom_kill").copied() {
            Some(now) if now > self.last.unwrap_or(0) => {
                self.last = Some(now);
                Check::Kill
            }
            Some(now) => {
                self.last = Some(now);
                if self.dir.is_dir() {
                    Check::Nothing
                } else {
                    Check::Gone
                }
            }
            // A v1 kernel without the `oom_kill` count (before 4.13): every OOM notification
            // while the cgroup exists counts, as in containerd.
            None if signalled && self.flavour == Flavour::V1 && self.dir.is_dir() => Check::Kill,
            None if self.dir.is_dir() => Check::Nothing,
            None => Check::Gone,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Locating the cgroup.

struct ProcLine {
    hierarchy: String,
    controllers: Vec<String>,
    path: String,
}

fn parse_proc_cgroup(text: &str, what: &str) -> Result<Vec<ProcLine>, CgroupError> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut parts = line.splitn(3, ':');
        let (Some(hierarchy), Some(controllers), Some(path)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(CgroupError::Parse {
                what: what.into(),
                msg: format!("malformed line {line:?}"),
            });
        };
        out.push(ProcLine {
            hierarchy: hierarchy.to_string(),
            controllers: controllers
                .split(',')
                .filter(|c| !c.is_empty())
                .map(str::to_string)
                .collect(),
            path: path.to_string(),
        });
    }
    Ok(out)
}

struct Mount {
    /// The root of the mount within its filesystem (mountinfo field 4; "/" from /proc/mounts).
    root: String,
    mount_point: String,
    fstype: String,
    /// Super options (mountinfo) or mount options (/proc/mounts): for v1 they name the
    /// controllers.
    options: Vec<String>,
}

/// Parses /proc/self/mountinfo or, failing that format, /proc/self/mounts.
fn parse_mounts(text: &str) -> Vec<Mount> {
    let mut out = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // mountinfo: id parent maj:min root mount-point options [optional...] - fstype source super-options
        if let Some(sep) = fields.iter().skip(6).position(|f| *f == "-").map(|p| p + 6) {
            if fields.len() < sep + 3 {
                continue;
            }
            let mut options: Vec<String> = fields[sep + 3].split(',').map(str::to_string).collect();
            options.extend(fields[5].split(',').map(str::to_string));
            out.push(Mount {
                root: unescape(fields[3]),
                mount_point: unescape(fields[4]),
                fstype: fields[sep + 1].to_string(),
                options,
            });
        } else if fields.len() >= 4 {
            // /proc/mounts: source mount-point fstype options dump pass
            out.push(Mount {
                root: "/".into(),
                mount_point: unescape(fields[1]),
                fstype: fields[2].to_string(),
                options: fields[3].split(',').map(str::to_string).collect(),
            });
        }
    }
    out
}

/// Undoes the kernel's octal escaping of spaces, tabs, newlines and backslashes.
fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let v = (bytes[i + 1] - b'0') as u32 * 64
                + (bytes[i + 2] - b'0') as u32 * 8
                + (bytes[i + 3] - b'0') as u32;
            if let Ok(b) = u8::try_from(v) {
                out.push(b);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Picks, among the mounts of one hierarchy, the one whose root best contains `path`, and
/// returns the cgroup's directory through it.
fn best_dir<'a>(
    mounts: impl Iterator<Item = &'a Mount>,
    path: &str,
    root: &Path,
) -> Option<PathBuf> {
    let mut best: Option<(usize, PathBuf)> = None;
    for m in mounts {
        let (score, rel) = match relative_to_root(path, &m.root) {
            Some(rel) => (m.root.len() + 1, rel),
            // Outside this mount's root (e.g. a process outside our cgroup namespace): join the
            // whole path, the best we can do.
            None => (0, path.trim_start_matches('/')),
        };
        if best.as_ref().is_some_and(|(s, _)| *s >= score) {
            continue;
        }
        let mut dir = root.join(m.mount_point.trim_start_matches('/'));
        if !rel.is_empty() {
            dir.push(rel);
        }
        best = Some((score, dir));
    }
    best.map(|(_, dir)| dir)
}

/// `path` relative to the mount root `root`, without a leading slash, if it lies under it.
fn relative_to_root<'a>(path: &'a str, root: &str) -> Option<&'a str> {
    let root = root.trim_end_matches('/');
    if root.is_empty() {
        return Some(path.trim_start_matches('/'));
    }
    let rest = path.strip_prefix(root)?;
    if rest.is_empty() {
        Some("")
    } else {
        rest.strip_prefix('/')
    }
}

fn v1_any_dir(dirs: &BTreeMap<String, PathBuf>) -> PathBuf {
    dirs.get("memory")
        .or_else(|| dirs.values().next())
        .cloned()
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Reading files.

fn read_required(path: &Path) -> Result<String, CgroupError> {
    fs::read_to_string(path).map_err(|source| CgroupError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn read_opt(path: &Path) -> Option<String> {
    fs::read_to_string(path).ok()
}

/// A file holding one number; "max" reads as `max_value`.
fn read_u64(path: &Path, max_value: u64) -> Option<u64> {
    let text = read_opt(path)?;
    let t = text.trim();
    if t == "max" {
        return Some(max_value);
    }
    t.parse().ok()
}

/// A flat-keyed file (`key value` lines).
fn parse_kv(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let (k, v) = (it.next()?, it.next()?);
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

fn read_kv(path: &Path) -> Option<BTreeMap<String, u64>> {
    read_opt(path).map(|t| parse_kv(&t))
}

fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no preconditions; it only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).ok().filter(|t| *t > 0).unwrap_or(100)
}

// ---------------------------------------------------------------------------------------------
// v1 metrics, as containerd/cgroups v1 fills them.

fn v1_metrics(dirs: &BTreeMap<String, PathBuf>) -> Result<v1m::Metrics, CgroupError> {
    if !dirs.values().any(|d| d.is_dir()) {
        return Err(CgroupError::Gone {
            path: v1_any_dir(dirs),
        });
    }
    let present = |c: &str| dirs.get(c).filter(|d| d.is_dir());
    let mut m = v1m::Metrics::new();

    if let Some(dir) = present("pids") {
        let mut p = v1m::PidsStat::new();
        p.current = read_u64(&dir.join("pids.current"), 0).unwrap_or(0);
        // containerd leaves "max" as 0.
        p.limit = read_u64(&dir.join("pids.max"), 0).unwrap_or(0);
        m.pids = MessageField::some(p);
    }

    let cpuacct = present("cpuacct");
    let cpu = present("cpu");
    if cpuacct.is_some() || cpu.is_some() {
        let mut stat = v1m::CPUStat::new();
        let mut usage = v1m::CPUUsage::new();
        if let Some(dir) = cpuacct {
            usage.total = read_u64(&dir.join("cpuacct.usage"), 0).unwrap_or(0);
            usage.per_cpu = read_opt(&dir.join("cpuacct.usage_percpu"))
                .map(|t| {
                    t.split_whitespace()
                        .filter_map(|v| v.parse().ok())
                        .collect()
                })
                .unwrap_or_default();
            if let Some(kv) = read_kv(&dir.join("cpuacct.stat")) {
                let ticks = u128::from(clock_ticks());
                let ns = |v: u64| {
                    u64::try_from(u128::from(v) * 1_000_000_000 / ticks).unwrap_or(u64::MAX)
                };
                usage.user = kv.get("user").copied().map(ns).unwrap_or(0);
                usage.kernel = kv.get("system").copied().map(ns).unwrap_or(0);
            }
        }
        stat.usage = MessageField::some(usage);
        let mut thr = v1m::Throttle::new();
        if let Some(kv) = cpu.and_then(|d| read_kv(&d.join("cpu.stat"))) {
            thr.periods = kv.get("nr_periods").copied().unwrap_or(0);
            thr.throttled_periods = kv.get("nr_throttled").copied().unwrap_or(0);
            thr.throttled_time = kv.get("throttled_time").copied().unwrap_or(0);
        }
        stat.throttling = MessageField::some(thr);
        m.cpu = MessageField::some(stat);
    }

    if let Some(dir) = present("memory") {
        m.memory = MessageField::some(v1_memory(dir));
        if let Some(kv) = read_kv(&dir.join("memory.oom_control")) {
            let mut oc = v1m::MemoryOomControl::new();
            oc.oom_kill_disable = kv.get("oom_kill_disable").copied().unwrap_or(0);
            oc.under_oom = kv.get("under_oom").copied().unwrap_or(0);
            oc.oom_kill = kv.get("oom_kill").copied().unwrap_or(0);
            m.memory_oom_control = MessageField::some(oc);
        }
    }

    if let Some(dir) = present("blkio") {
        m.blkio = MessageField::some(v1_blkio(dir));
    }
    Ok(m)
}

fn v1_memory(dir: &Path) -> v1m::MemoryStat {
    let mut s = v1m::MemoryStat::new();
    if let Some(kv) = read_kv(&dir.join("memory.stat")) {
        let g = |k: &str| kv.get(k).copied().unwrap_or(0);
        s.cache = g("cache");
        s.rss = g("rss");
        s.rss_huge = g("rss_huge");
        s.mapped_file = g("mapped_file");
        s.dirty = g("dirty");
        s.writeback = g("writeback");
        s.pg_pg_in = g("pgpgin");
        s.pg_pg_out = g("pgpgout");
        s.pg_fault = g("pgfault");
        s.pg_maj_fault = g("pgmajfault");
        s.inactive_anon = g("inactive_anon");
        s.active_anon = g("active_anon");
        s.inactive_file = g("inactive_file");
        s.active_file = g("active_file");
        s.unevictable = g("unevictable");
        s.hierarchical_memory_limit = g("hierarchical_memory_limit");
        s.hierarchical_swap_limit = g("hierarchical_memsw_limit");
        s.total_cache = g("total_cache");
        s.total_rss = g("total_rss");
        s.total_rss_huge = g("total_rss_huge");
        s.total_mapped_file = g("total_mapped_file");
        s.total_dirty = g("total_dirty");
        s.total_writeback = g("total_writeback");
        s.total_pg_pg_in = g("total_pgpgin");
        s.total_pg_pg_out = g("total_pgpgout");
        s.total_pg_fault = g("total_pgfault");
        s.total_pg_maj_fault = g("total_pgmajfault");
        s.total_inactive_anon = g("total_inactive_anon");
        s.total_active_anon = g("total_active_anon");
        s.total_inactive_file = g("total_inactive_file");
        s.total_active_file = g("total_active_file");
        s.total_unevictable = g("total_unevictable");
    }
    let entry = |prefix: &str| {
        let mut e = v1m::MemoryEntry::new();
        let f = |name: &str| read_u64(&dir.join(format!("{prefix}.{name}")), 0).unwrap_or(0);
        e.usage = f("usage_in_bytes");
        e.max = f("max_usage_in_bytes");
        e.failcnt = f("failcnt");
        e.limit = f("limit_in_bytes");
        MessageField::some(e)
    };
    s.usage = entry("memory");
    s.swap = entry("memory.memsw");
    s.kernel = entry("memory.kmem");
    s.kernel_tcp = entry("memory.kmem.tcp");
    s
}

fn v1_blkio(dir: &Path) -> v1m::BlkIOStat {
    let mut s = v1m::BlkIOStat::new();
    // As containerd: the CFQ (or BFQ) recursive files when present, then the throttle files,
    // appended to the same lists.
    if dir.join("blkio.io_serviced_recursive").exists() {
        v1_blkio_file(dir, "blkio.sectors_recursive", &mut s.sectors_recursive);
        v1_blkio_file(
            dir,
            "blkio.io_service_bytes_recursive",
            &mut s.io_service_bytes_recursive,
        );
        v1_blkio_file(
            dir,
            "blkio.io_serviced_recursive",
            &mut s.io_serviced_recursive,
        );
        v1_blkio_file(dir, "blkio.io_queued_recursive", &mut s.io_queued_recursive);
        v1_blkio_file(
            dir,
            "blkio.io_service_time_recursive",
            &mut s.io_service_time_recursive,
        );
        v1_blkio_file(
            dir,
            "blkio.io_wait_time_recursive",
            &mut s.io_wait_time_recursive,
        );
        v1_blkio_file(dir, "blkio.io_merged_recursive", &mut s.io_merged_recursive);
        v1_blkio_file(dir, "blkio.time_recursive", &mut s.io_time_recursive);
    }
    v1_blkio_file(
        dir,
        "blkio.throttle.io_service_bytes",
        &mut s.io_service_bytes_recursive,
    );
    v1_blkio_file(
        dir,
        "blkio.throttle.io_serviced",
        &mut s.io_serviced_recursive,
    );
    s
}

/// Lines `maj:min [op] value`, and a `Total n` line that is skipped.
fn v1_blkio_file(dir: &Path, name: &str, out: &mut Vec<v1m::BlkIOEntry>) {
    let Some(text) = read_opt(&dir.join(name)) else {
        return;
    };
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (dev, op, value) = match fields.as_slice() {
            [dev, op, value] => (*dev, *op, *value),
            [dev, value] if *dev != "Total" => (*dev, "", *value),
            _ => continue,
        };
        let Some((major, minor)) = dev.split_once(':') else {
            continue;
        };
        let (Ok(major), Ok(minor), Ok(value)) = (major.parse(), minor.parse(), value.parse())
        else {
            continue;
        };
        let mut e = v1m::BlkIOEntry::new();
        e.op = op.to_string();
        e.major = major;
        e.minor = minor;
        e.value = value;
        out.push(e);
    }
}

// ---------------------------------------------------------------------------------------------
// v2 metrics, as containerd/cgroups cgroup2 fills them.

fn v2_metrics(dir: &Path) -> Result<v2m::Metrics, CgroupError> {
    if !dir.is_dir() {
        return Err(CgroupError::Gone {
            path: dir.to_path_buf(),
        });
    }
    let num = |name: &str| read_u64(&dir.join(name), u64::MAX).unwrap_or(0);
    let mut m = v2m::Metrics::new();

    let mut pids = v2m::PidsStat::new();
    pids.current = num("pids.current");
    pids.limit = num("pids.max");
    m.pids = MessageField::some(pids);

    let mut cpu = v2m::CPUStat::new();
    if let Some(kv) = read_kv(&dir.join("cpu.stat")) {
        let g = |k: &str| kv.get(k).copied().unwrap_or(0);
        cpu.usage_usec = g("usage_usec");
        cpu.user_usec = g("user_usec");
        cpu.system_usec = g("system_usec");
        cpu.nr_periods = g("nr_periods");
        cpu.nr_throttled = g("nr_throttled");
        cpu.throttled_usec = g("throttled_usec");
        cpu.nr_bursts = g("nr_bursts");
        cpu.burst_usec = g("burst_usec");
    }
    cpu.psi = psi(&dir.join("cpu.pressure"));
    m.cpu = MessageField::some(cpu);

    let mut mem = v2m::MemoryStat::new();
    if let Some(kv) = read_kv(&dir.join("memory.stat")) {
        let g = |k: &str| kv.get(k).copied().unwrap_or(0);
        mem.anon = g("anon");
        mem.file = g("file");
        mem.kernel_stack = g("kernel_stack");
        mem.slab = g("slab");
        mem.sock = g("sock");
        mem.shmem = g("shmem");
        mem.file_mapped = g("file_mapped");
        mem.file_dirty = g("file_dirty");
        mem.file_writeback = g("file_writeback");
        mem.anon_thp = g("anon_thp");
        mem.inactive_anon = g("inactive_anon");
        mem.active_anon = g("active_anon");
        mem.inactive_file = g("inactive_file");
        mem.active_file = g("active_file");
        mem.unevictable = g("unevictable");
        mem.slab_reclaimable = g("slab_reclaimable");
        mem.slab_unreclaimable = g("slab_unreclaimable");
        mem.pgfault = g("pgfault");
        mem.pgmajfault = g("pgmajfault");
        mem.workingset_refault = g("workingset_refault");
        mem.workingset_activate = g("workingset_activate");
        mem.workingset_nodereclaim = g("workingset_nodereclaim");
        mem.pgrefill = g("pgrefill");
        mem.pgscan = g("pgscan");
        mem.pgsteal = g("pgsteal");
        mem.pgactivate = g("pgactivate");
        mem.pgdeactivate = g("pgdeactivate");
        mem.pglazyfree = g("pglazyfree");
        mem.pglazyfreed = g("pglazyfreed");
        mem.thp_fault_alloc = g("thp_fault_alloc");
        mem.thp_collapse_alloc = g("thp_collapse_alloc");
    }
    mem.usage = num("memory.current");
    mem.usage_limit = num("memory.max");
    mem.swap_usage = num("memory.swap.current");
    mem.swap_limit = num("memory.swap.max");
    mem.max_usage = num("memory.peak");
    mem.swap_max_usage = num("memory.swap.peak");
    mem.psi = psi(&dir.join("memory.pressure"));
    m.memory = MessageField::some(mem);

    if let Some(kv) = read_kv(&dir.join("memory.events")).filter(|kv| !kv.is_empty()) {
        let g = |k: &str| kv.get(k).copied().unwrap_or(0);
        let mut ev = v2m::MemoryEvents::new();
        ev.low = g("low");
        ev.high = g("high");
        ev.max = g("max");
        ev.oom = g("oom");
        ev.oom_kill = g("oom_kill");
        ev.oom_group_kill = g("oom_group_kill");
        m.memory_events = MessageField::some(ev);
    }

    let mut io = v2m::IOStat::new();
    io.usage = read_opt(&dir.join("io.stat"))
        .map(|t| parse_io_stat(&t))
        .unwrap_or_default();
    io.psi = psi(&dir.join("io.pressure"));
    m.io = MessageField::some(io);
    Ok(m)
}

/// io.stat: `maj:min rbytes=.. wbytes=.. rios=.. wios=.. dbytes=.. dios=..` lines.
fn parse_io_stat(text: &str) -> Vec<v2m::IOEntry> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let Some((major, minor)) = fields.next().and_then(|d| d.split_once(':')) else {
            continue;
        };
        let (Ok(major), Ok(minor)) = (major.parse(), minor.parse()) else {
            continue;
        };
        let mut e = v2m::IOEntry::new();
        e.major = major;
        e.minor = minor;
        for kv in fields {
            let Some((k, v)) = kv.split_once('=') else {
                continue;
            };
            let v = v.parse().unwrap_or(0);
            match k {
                "rbytes" => e.rbytes = v,
                "wbytes" => e.wbytes = v,
                "rios" => e.rios = v,
                "wios" => e.wios = v,
                _ => {}
            }
        }
        out.push(e);
    }
    out
}

/// A PSI file (`some avg10=.. avg60=.. avg300=.. total=..` and `full ...`); unset if missing.
fn psi(path: &Path) -> MessageField<v2m::PSIStats> {
    let Some(text) = read_opt(path) else {
        return MessageField::none();
    };
    let mut stats = v2m::PSIStats::new();
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let kind = fields.next();
        let mut data = v2m::PSIData::new();
        for kv in fields {
            let Some((k, v)) = kv.split_once('=') else {
                continue;
            };
            match k {
                "avg10" => data.avg10 = v.parse().unwrap_or(0.0),
                "avg60" => data.avg60 = v.parse().unwrap_or(0.0),
                "avg300" => data.avg300 = v.parse().unwrap_or(0.0),
                "total" => data.total = v.parse().unwrap_or(0),
                _ => {}
            }
        }
        match kind {
            Some("some") => stats.some = MessageField::some(data),
            Some("full") => stats.full = MessageField::some(data),
            _ => {}
        }
    }
    MessageField::some(stats)
}

// ---------------------------------------------------------------------------------------------
// OOM watch set-up.

/// v1: an eventfd registered in cgroup.event_control for memory.oom_control.
fn v1_register_oom_eventfd(dir: &Path) -> Result<OwnedFd, CgroupError> {
    let control = dir.join("memory.oom_control");
    let oom_control = fs::File::open(&control).map_err(|source| CgroupError::Watch {
        op: "opening",
        path: control.clone(),
        source,
    })?;
    // SAFETY: eventfd has no memory-safety preconditions; the result is checked below.
    let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if raw < 0 {
        return Err(CgroupError::Watch {
            op: "eventfd",
            path: control,
            source: io::Error::last_os_error(),
        });
    }
    // SAFETY: `raw` is a freshly created, valid fd that nothing else owns.
    let efd = unsafe { OwnedFd::from_raw_fd(raw) };
    let event_control = dir.join("cgroup.event_control");
    let line = format!("{} {}", efd.as_raw_fd(), oom_control.as_raw_fd());
    fs::write(&event_control, line).map_err(|source| CgroupError::Watch {
        op: "registering in",
        path: event_control,
        source,
    })?;
    // The kernel holds its own reference to memory.oom_control: our fd may close now.
    drop(oom_control);
    Ok(efd)
}

/// v2: an inotify fd watching `file` for modifications.
fn inotify_watch(file: &Path) -> Result<OwnedFd, CgroupError> {
    use std::os::unix::ffi::OsStrExt;
    let err = |op, source| CgroupError::Watch {
        op,
        path: file.to_path_buf(),
        source,
    };
    let cpath = std::ffi::CString::new(file.as_os_str().as_bytes()).map_err(|e| {
        err(
            "encoding path",
            io::Error::new(io::ErrorKind::InvalidInput, e),
        )
    })?;
    // SAFETY: inotify_init1 has no memory-safety preconditions; the result is checked below.
    let raw = unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) };
    if raw < 0 {
        return Err(err("inotify_init1", io::Error::last_os_error()));
    }
    // SAFETY: `raw` is a freshly created, valid fd that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: `fd` is a valid inotify fd and `cpath` a NUL-terminated string that outlives
    // the call.
    let wd = unsafe { libc::inotify_add_watch(fd.as_raw_fd(), cpath.as_ptr(), libc::IN_MODIFY) };
    if wd < 0 {
        return Err(err("inotify_add_watch", io::Error::last_os_error()));
    }
    Ok(fd)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const MOUNTINFO_V1_SEPARATE: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    const PROC_V1_SEPARATE: &str = "\
9:name=systemd:/k8s/abc
8:pids:/k8s/abc
4:memory:/k8s/abc
3:blkio:/k8s/abc
2:cpuacct:/k8s/abc
1:cpu:/k8s/abc
0::/k8s/abc
";

    const MOUNTINFO_V1_COMOUNTED: &str = "\
25 18 0:22 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
29 25 0:26 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,cpu,cpuacct
30 25 0:27 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:12 - cgroup cgroup rw,memory
31 25 0:28 / /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime shared:13 - cgroup cgroup rw,pids
26 25 0:23 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
";

    const PROC_V1_COMOUNTED: &str = "\
5:pids:/ctr
4:memory:/ctr
3:cpu,cpuacct:/ctr
1:name=systemd:/ctr
0::/ctr
";

    const MOUNTINFO_V2: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
35 24 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

    fn write(path: &Path, text: &str) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }

    fn decode_v1(any: &Any) -> v1m::Metrics {
        assert_eq!(any.type_url, V1_METRICS_TYPE_URL);
        v1m::Metrics::parse_from_bytes(&any.value).unwrap()
    }

    fn decode_v2(any: &Any) -> v2m::Metrics {
        assert_eq!(any.type_url, V2_METRICS_TYPE_URL);
        v2m::Metrics::parse_from_bytes(&any.value).unwrap()
    }

    #[test]
    fn v1_separate_mounts_locate_dirs() {
        let root = Path::new("/r");
        let cg = Cgroup::from_parts(PROC_V1_SEPARATE, MOUNTINFO_V1_SEPARATE, root).unwrap();
        assert!(!cg.is_v2());
        assert_eq!(
            cg.v1_dir("cpu").unwrap(),
            Path::new("/r/sys/fs/cgroup/cpu/k8s/abc")
        );
        assert_eq!(
            cg.v1_dir("cpuacct").unwrap(),
            Path::new("/r/sys/fs/cgroup/cpuacct/k8s/abc")
        );
        assert_eq!(
            cg.v1_dir("memory").unwrap(),
            Path::new("/r/sys/fs/cgroup/memory/k8s/abc")
        );
        assert_eq!(
            cg.v1_dir("name=systemd").unwrap(),
            Path::new("/r/sys/fs/cgroup/systemd/k8s/abc")
        );
        // blkio is listed but not mounted.
        assert!(cg.v1_dir("blkio").is_none());
    }

    #[test]
    fn v1_comounted_cpu_cpuacct() {
        let cg =
            Cgroup::from_parts(PROC_V1_COMOUNTED, MOUNTINFO_V1_COMOUNTED, Path::new("/")).unwrap();
        assert!(!cg.is_v2());
        let want = Path::new("/sys/fs/cgroup/cpu,cpuacct/ctr");
        assert_eq!(cg.v1_dir("cpu").unwrap(), want);
        assert_eq!(cg.v1_dir("cpuacct").unwrap(), want);
        assert_eq!(
            cg.v1_dir("pids").unwrap(),
            Path::new("/sys/fs/cgroup/pids/ctr")
        );
    }

    #[test]
    fn v1_from_proc_mounts_format() {
        let mounts = "\
cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,nosuid,nodev,noexec,relatime,cpu,cpuacct 0 0
cgroup /sys/fs/cgroup/memory cgroup rw,nosuid,nodev,noexec,relatime,memory 0 0
";
        let cg = Cgroup::from_parts(PROC_V1_COMOUNTED, mounts, Path::new("/")).unwrap();
        assert_eq!(
            cg.v1_dir("cpuacct").unwrap(),
            Path::new("/sys/fs/cgroup/cpu,cpuacct/ctr")
        );
        assert_eq!(
            cg.v1_dir("memory").unwrap(),
            Path::new("/sys/fs/cgroup/memory/ctr")
        );
    }

    #[test]
    fn v1_mount_root_is_stripped() {
        // Inside a cgroup namespace / bind mount: the mount shows the hierarchy from /outer.
        let mounts = "\
40 31 0:32 /outer /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
41 31 0:32 / /host/memory rw - cgroup cgroup rw,memory
";
        let cg = Cgroup::from_parts("4:memory:/outer/ctr\n", mounts, Path::new("/")).unwrap();
        assert_eq!(
            cg.v1_dir("memory").unwrap(),
            Path::new("/sys/fs/cgroup/memory/ctr")
        );
        let cg = Cgroup::from_parts("4:memory:/elsewhere/ctr\n", mounts, Path::new("/")).unwrap();
        assert_eq!(
            cg.v1_dir("memory").unwrap(),
            Path::new("/host/memory/elsewhere/ctr")
        );
        let cg = Cgroup::from_parts("4:memory:/outer\n", mounts, Path::new("/")).unwrap();
        assert_eq!(
            cg.v1_dir("memory").unwrap(),
            Path::new("/sys/fs/cgroup/memory")
        );
    }

    #[test]
    fn v2_locate_and_escapes() {
        let cg = Cgroup::from_parts("0::/system.slice/ctr.scope\n", MOUNTINFO_V2, Path::new("/"))
            .unwrap();
        assert!(cg.is_v2());
        assert_eq!(
            cg.v2_dir().unwrap(),
            Path::new("/sys/fs/cgroup/system.slice/ctr.scope")
        );

        let mounts = "35 24 0:30 /ns /my\\040cg rw - cgroup2 cgroup2 rw\n";
        let cg = Cgroup::from_parts("0::/ns/a\n", mounts, Path::new("/")).unwrap();
        assert_eq!(cg.v2_dir().unwrap(), Path::new("/my cg/a"));
    }

    #[test]
    fn only_named_v1_hierarchy_is_v2() {
        let proc = "1:name=systemd:/x\n0::/x\n";
        let mounts = format!("{MOUNTINFO_V2}40 31 0:37 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,name=systemd\n");
        let cg = Cgroup::from_parts(proc, &mounts, Path::new("/")).unwrap();
        assert!(cg.is_v2());
    }

    #[test]
    fn errors_name_what_is_missing() {
        let e = Cgroup::from_parts("4:memory:/x\n", MOUNTINFO_V2, Path::new("/")).unwrap_err();
        assert!(matches!(e, CgroupError::NotMounted { .. }), "{e}");
        let e = Cgroup::from_parts(
            "0::/x\n",
            MOUNTINFO_V1_COMOUNTED.lines().next().unwrap(),
            Path::new("/"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("cgroup2"), "{e}");
        let e = Cgroup::from_parts("garbage\n", MOUNTINFO_V2, Path::new("/")).unwrap_err();
        assert!(e.to_string().contains("/proc/<pid>/cgroup"), "{e}");
        let e = Cgroup::for_pid(u32::MAX).unwrap_err();
        assert!(
            e.to_string()
                .contains(&format!("/proc/{}/cgroup", u32::MAX)),
            "{e}"
        );
    }

    #[test]
    fn send_and_sync() {
        fn send<T: Send>(_: &T) {}
        fn sync<T: Send + Sync>() {}
        sync::<Cgroup>();
        sync::<CgroupError>();
        let cg = Cgroup::from_parts("0::/x\n", MOUNTINFO_V2, Path::new("/nonexistent")).unwrap();
        let mut watch = OomWatch {
            flavour: Flavour::V2,
            dir: PathBuf::new(),
            counter_file: PathBuf::new(),
            last: None,
            fd: None,
            afd: None,
            done: true,
        };
        send(&watch.next());
        assert!(cg.watch_oom().is_err());
    }

    #[test]
    fn for_self_works() {
        let cg = Cgroup::for_pid(std::process::id()).unwrap();
        assert!(cg.procs().unwrap().contains(&std::process::id()));
        cg.metrics().unwrap();
    }

    fn v1_fixture(root: &Path, cpu_dir: &str, cpuacct_dir: &str) {
        let base = root.join("sys/fs/cgroup");
        let cpuacct = base.join(cpuacct_dir).join("ctr");
        write(&cpuacct.join("cpuacct.usage"), "123456789\n");
        write(&cpuacct.join("cpuacct.usage_percpu"), "100 200 \n");
        write(&cpuacct.join("cpuacct.stat"), "user 150\nsystem 25\n");
        let cpu = base.join(cpu_dir).join("ctr");
        write(
            &cpu.join("cpu.stat"),
            "nr_periods 10\nnr_throttled 3\nthrottled_time 999\n",
        );
        let mem = base.join("memory/ctr");
        write(&mem.join("memory.usage_in_bytes"), "4096000\n");
        write(&mem.join("memory.limit_in_bytes"), "67108864\n");
        write(&mem.join("memory.max_usage_in_bytes"), "5000000\n");
        write(&mem.join("memory.failcnt"), "2\n");
        write(
            &mem.join("memory.stat"),
            "cache 1000\nrss 2000\nrss_huge 0\npgpgin 7\ninactive_file 300\nhierarchical_memsw_limit 9\n\
             total_cache 1100\ntotal_rss 2200\ntotal_inactive_file 330\ntotal_pgmajfault 4\n",
        );
        write(
            &mem.join("memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n",
        );
        write(&mem.join("cgroup.procs"), "42\n43\n");
        let pids = base.join("pids/ctr");
        write(&pids.join("pids.current"), "2\n");
        write(&pids.join("pids.max"), "max\n");
        write(&pids.join("cgroup.procs"), "42\n43\n");
    }

    fn check_v1_metrics(m: &v1m::Metrics) {
        let usage = &m.cpu.usage;
        assert_eq!(usage.total, 123456789);
        assert_eq!(usage.per_cpu, vec![100, 200]);
        let ticks = clock_ticks();
        assert_eq!(usage.user, 150 * 1_000_000_000 / ticks);
        assert_eq!(usage.kernel, 25 * 1_000_000_000 / ticks);
        assert_eq!(m.cpu.throttling.throttled_periods, 3);
        assert_eq!(m.cpu.throttling.throttled_time, 999);
        let mem = &m.memory;
        assert_eq!(mem.usage.usage, 4096000);
        assert_eq!(mem.usage.limit, 67108864);
        assert_eq!(mem.usage.max, 5000000);
        assert_eq!(mem.usage.failcnt, 2);
        assert_eq!(mem.cache, 1000);
        assert_eq!(mem.rss, 2000);
        assert_eq!(mem.pg_pg_in, 7);
        assert_eq!(mem.inactive_file, 300);
        assert_eq!(mem.hierarchical_swap_limit, 9);
        assert_eq!(mem.total_inactive_file, 330);
        assert_eq!(mem.total_rss, 2200);
        assert_eq!(mem.total_pg_maj_fault, 4);
        // memsw / kmem not present: zero, no error.
        assert_eq!(mem.swap.limit, 0);
        assert_eq!(m.memory_oom_control.oom_kill, 3);
        assert_eq!(m.pids.current, 2);
        assert_eq!(m.pids.limit, 0);
    }

    #[test]
    fn v1_metrics_separate() {
        let tmp = tempfile::tempdir().unwrap();
        v1_fixture(tmp.path(), "cpu", "cpuacct");
        let cg = Cgroup::from_parts(
            PROC_V1_SEPARATE.replace("/k8s/abc", "/ctr").as_str(),
            MOUNTINFO_V1_SEPARATE,
            tmp.path(),
        )
        .unwrap();
        let m = decode_v1(&cg.metrics().unwrap());
        check_v1_metrics(&m);
        // blkio is not mounted.
        assert!(m.blkio.is_none());
        assert_eq!(cg.procs().unwrap(), vec![42, 43]);
        assert_eq!(cg.oom_kills(), Some(3));
    }

    #[test]
    fn v1_metrics_comounted_and_blkio() {
        let tmp = tempfile::tempdir().unwrap();
        v1_fixture(tmp.path(), "cpu,cpuacct", "cpu,cpuacct");
        let blkio = tmp.path().join("sys/fs/cgroup/blkio/ctr");
        write(
            &blkio.join("blkio.throttle.io_service_bytes"),
            "8:0 Read 4096\n8:0 Write 8192\n8:0 Total 12288\nTotal 12288\n",
        );
        write(
            &blkio.join("blkio.throttle.io_serviced"),
            "8:0 Read 1\nTotal 1\n",
        );
        let mounts = format!("{MOUNTINFO_V1_COMOUNTED}32 25 0:29 / /sys/fs/cgroup/blkio rw - cgroup cgroup rw,blkio\n");
        let proc = format!("{PROC_V1_COMOUNTED}6:blkio:/ctr\n");
        let cg = Cgroup::from_parts(&proc, &mounts, tmp.path()).unwrap();
        let m = decode_v1(&cg.metrics().unwrap());
        check_v1_metrics(&m);
        let bytes = &m.blkio.io_service_bytes_recursive;
        assert_eq!(bytes.len(), 3);
        assert_eq!(
            (
                bytes[1].major,
                bytes[1].minor,
                bytes[1].op.as_str(),
                bytes[1].value
            ),
            (8, 0, "Write", 8192)
        );
        assert_eq!(m.blkio.io_serviced_recursive.len(), 1);
    }

    #[test]
    fn v1_missing_controllers_and_gone() {
        let tmp = tempfile::tempdir().unwrap();
        let mem = tmp.path().join("sys/fs/cgroup/memory/ctr");
        write(&mem.join("memory.usage_in_bytes"), "10\n");
        let cg = Cgroup::from_parts(PROC_V1_COMOUNTED, MOUNTINFO_V1_COMOUNTED, tmp.path()).unwrap();
        let m = decode_v1(&cg.metrics().unwrap());
        assert_eq!(m.memory.usage.usage, 10);
        assert!(m.cpu.is_none());
        assert!(m.pids.is_none());
        assert!(m.memory_oom_control.is_none());
        assert_eq!(cg.oom_kills(), None);
        fs::remove_dir_all(tmp.path().join("sys")).unwrap();
        let e = cg.metrics().unwrap_err();
        assert!(matches!(e, CgroupError::Gone { .. }), "{e}");
        assert!(e.to_string().contains("memory/ctr"), "{e}");
        assert!(matches!(cg.procs().unwrap_err(), CgroupError::Gone { .. }));
    }

    fn v2_fixture(dir: &Path) {
        write(&dir.join("cgroup.procs"), "7\n8\n9\n");
        write(&dir.join("pids.current"), "3\n");
        write(&dir.join("pids.max"), "100\n");
        write(
            &dir.join("cpu.stat"),
            "usage_usec 5000\nuser_usec 3000\nsystem_usec 2000\nnr_periods 4\nnr_throttled 1\nthrottled_usec 77\n",
        );
        write(&dir.join("cpu.pressure"), "some avg10=1.50 avg60=0.00 avg300=0.00 total=12\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=3\n");
        write(&dir.join("memory.current"), "1048576\n");
        write(&dir.join("memory.max"), "max\n");
        write(
            &dir.join("memory.stat"),
            "anon 500\nfile 600\ninactive_file 123\nactive_anon 9\npgmajfault 2\n",
        );
        write(
            &dir.join("memory.events"),
            "low 0\nhigh 0\nmax 5\noom 2\noom_kill 1\noom_group_kill 0\n",
        );
        write(
            &dir.join("io.stat"),
            "8:16 rbytes=1459200 wbytes=314773504 rios=192 wios=353 dbytes=0 dios=0\n",
        );
    }

    #[test]
    fn v2_metrics() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("sys/fs/cgroup/pod/ctr");
        v2_fixture(&dir);
        let cg = Cgroup::from_parts("0::/pod/ctr\n", MOUNTINFO_V2, tmp.path()).unwrap();
        assert!(cg.is_v2());
        assert_eq!(cg.procs().unwrap(), vec![7, 8, 9]);
        assert_eq!(cg.oom_kills(), Some(1));
        let m = decode_v2(&cg.metrics().unwrap());
        assert_eq!((m.pids.current, m.pids.limit), (3, 100));
        assert_eq!(
            (m.cpu.usage_usec, m.cpu.user_usec, m.cpu.system_usec),
            (5000, 3000, 2000)
        );
        assert_eq!(m.cpu.throttled_usec, 77);
        assert_eq!(m.cpu.psi.some.avg10, 1.5);
        assert_eq!(m.cpu.psi.full.total, 3);
        assert_eq!(m.memory.usage, 1048576);
        assert_eq!(m.memory.usage_limit, u64::MAX);
        assert_eq!(m.memory.inactive_file, 123);
        assert_eq!(m.memory.anon, 500);
        assert_eq!(m.memory.pgmajfault, 2);
        // memory.swap.* absent: zero.
        assert_eq!(m.memory.swap_limit, 0);
        assert!(m.memory.psi.is_none());
        assert_eq!(m.memory_events.oom_kill, 1);
        assert_eq!(m.memory_events.max, 5);
        assert_eq!(m.io.usage.len(), 1);
        assert_eq!(
            (m.io.usage[0].major, m.io.usage[0].minor, m.io.usage[0].wios),
            (8, 16, 353)
        );

        fs::remove_dir_all(&dir).unwrap();
        let e = cg.metrics().unwrap_err();
        assert!(matches!(e, CgroupError::Gone { .. }), "{e}");
        assert_eq!(cg.oom_kills(), None);
    }

    #[test]
    fn v2_metrics_missing_files() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("sys/fs/cgroup/x");
        fs::create_dir_all(&dir).unwrap();
        let cg = Cgroup::from_parts("0::/x\n", MOUNTINFO_V2, tmp.path()).unwrap();
        let m = decode_v2(&cg.metrics().unwrap());
        assert_eq!(m.memory.usage, 0);
        assert!(m.memory_events.is_none());
        assert!(cg.watch_oom().is_err());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn v2_watch_fixture() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("sys/fs/cgroup/ctr");
        v2_fixture(&dir);
        let cg = Cgroup::from_parts("0::/ctr\n", MOUNTINFO_V2, tmp.path()).unwrap();
        let mut watch = cg.watch_oom().unwrap();
        let events = dir.join("memory.events");
        // A modification without a new kill is not reported.
        fs::write(&events, "low 0\nhigh 0\nmax 6\noom 2\noom_kill 1\n").unwrap();
        let r = tokio::time::timeout(Duration::from_millis(100), watch.next()).await;
        assert!(r.is_err(), "no new kill yet");
        fs::write(&events, "low 0\nhigh 0\nmax 7\noom 3\noom_kill 2\n").unwrap();
        let r = tokio::time::timeout(Duration::from_secs(2), watch.next()).await;
        assert_eq!(r.unwrap(), Some(()));
        fs::remove_dir_all(&dir).unwrap();
        let r = tokio::time::timeout(Duration::from_secs(3), watch.next()).await;
        assert_eq!(r.unwrap(), None);
        assert_eq!(watch.next().await, None);
    }

    /// A real v1 memory cgroup: procs, metrics, and an OOM kill seen through the eventfd.
    #[tokio::test(flavor = "current_thread")]
    async fn v1_real_memory_cgroup() {
        struct Cleanup(Vec<PathBuf>, Vec<std::process::Child>);
        impl Drop for Cleanup {
            fn drop(&mut self) {
                for c in &mut self.1 {
                    let _ = c.kill();
                    let _ = c.wait();
                }
                for d in &self.0 {
                    let _ = fs::remove_dir(d);
                }
            }
        }
        let name = format!("crius-unit-{}", std::process::id());
        let memory = Path::new("/sys/fs/cgroup/memory");
        let dir = memory.join(&name);
        if !memory.join("cgroup.event_control").exists() || fs::create_dir(&dir).is_err() {
            eprintln!("skipping: no writable cgroup v1 memory hierarchy");
            return;
        }
        let mut cleanup = Cleanup(vec![dir.clone()], Vec::new());
        // As runc does, put the container at the same path in the pids hierarchy too.
        let pids_dir = Path::new("/sys/fs/cgroup/pids").join(&name);
        if fs::create_dir(&pids_dir).is_ok() {
            cleanup.0.push(pids_dir.clone());
        }
        let limit = 32u64 << 20;
        fs::write(dir.join("memory.limit_in_bytes"), limit.to_string()).unwrap();
        if dir.join("memory.memsw.limit_in_bytes").exists() {
            let _ = fs::write(dir.join("memory.memsw.limit_in_bytes"), limit.to_string());
        }
        let sleeper = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = sleeper.id();
        cleanup.1.push(sleeper);
        for d in &cleanup.0 {
            fs::write(d.join("cgroup.procs"), pid.to_string()).unwrap();
        }

        let cg = Cgroup::for_pid(pid).unwrap();
        assert!(!cg.is_v2());
        assert_eq!(cg.v1_dir("memory").unwrap(), dir);
        assert_eq!(cg.procs().unwrap(), vec![pid]);
        let m = decode_v1(&cg.metrics().unwrap());
        assert_eq!(m.memory.usage.limit, limit);
        assert!(m.memory_oom_control.is_some());
        if cleanup.0.len() > 1 {
            assert_eq!(m.pids.current, 1);
        }
        assert_eq!(cg.oom_kills(), Some(0));

        // An OOM kill: dd's 64 MiB buffer does not fit in 32 MiB.
        let mut watch = cg.watch_oom().unwrap();
        let script = format!(
            "echo $$ > {}/cgroup.procs && exec dd if=/dev/zero of=/dev/null bs=64M count=1 2>/dev/null",
            dir.display()
        );
        let status = std::process::Command::new("sh")
            .arg("-c")
            .arg(script)
            .status()
            .unwrap();
        assert!(!status.success());
        let r = tokio::time::timeout(Duration::from_secs(5), watch.next()).await;
        assert_eq!(r.unwrap(), Some(()));
        assert_eq!(cg.oom_kills(), Some(1));
        let m = decode_v1(&cg.metrics().unwrap());
        assert_eq!(m.memory_oom_control.oom_kill, 1);

        // Removal ends the watch.
        drop(cleanup);
        assert!(!dir.exists());
        let r = tokio::time::timeout(Duration::from_secs(5), watch.next()).await;
        assert_eq!(r.unwrap(), None);
        assert_eq!(cg.oom_kills(), None);
    }
}
