//! OCI bundles around busybox-static: a shared read-only rootfs made once per test process,
//! and per-container bundles whose rootfs is an overlay over it (so the shim's rootfs
//! mounting is exercised too).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use runtime_v2_api::Mount;
use serde_json::{json, Value};

/// Where busybox-static lives on Debian.
pub const BUSYBOX: &str = "/usr/bin/busybox";

static ROOTFS: OnceLock<PathBuf> = OnceLock::new();

/// A busybox rootfs (`/bin/busybox` and one symlink per applet, `/etc/passwd`, `/tmp`),
/// made once per process under the system temp dir and shared read-only by all bundles.
pub fn busybox_rootfs() -> &'static Path {
    ROOTFS.get_or_init(|| {
        remove_stale_rootfs();
        let dir = std::env::temp_dir().join(format!("{ROOTFS_PREFIX}{}", std::process::id()));
        make_busybox_rootfs(&dir)
            .unwrap_or_else(|e| panic!("busybox rootfs at {}: {e}", dir.display()));
        // SAFETY: registers a plain `extern "C" fn` that takes no arguments; it only reads
        // the OnceLock (set just after this returns, before any exit can run it).
        unsafe {
            libc::atexit(remove_rootfs_at_exit);
        }
        dir
    })
}

const ROOTFS_PREFIX: &str = "crius-it-rootfs-";

/// Statics are never dropped: the rootfs goes when the test process exits normally.
extern "C" fn remove_rootfs_at_exit() {
    if let Some(dir) = ROOTFS.get() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// Removes the rootfs of test processes that died without exiting (killed, aborted).
fn remove_stale_rootfs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(ROOTFS_PREFIX))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Writes a busybox rootfs at `dir`.
pub fn make_busybox_rootfs(dir: &Path) -> std::io::Result<()> {
    let _ = std::fs::remove_dir_all(dir);
    for sub in ["bin", "etc", "tmp", "proc", "sys", "dev", "root"] {
        std::fs::create_dir_all(dir.join(sub))?;
    }
    std::fs::copy(BUSYBOX, dir.join("bin/busybox"))?;
    let list = std::process::Command::new(BUSYBOX).arg("--list").output()?;
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let applet = applet.trim();
        if applet.is_empty() || applet == "busybox" {
            continue;
        }
        let link = dir.join("bin").join(applet);
        if !link.exists() {
            std::os::unix::fs::symlink("busybox", link)?;
        }
    }
    std::fs::write(
        dir.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
    )?;
    std::fs::write(dir.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n")?;
    Ok(())
}

/// What a test container looks like.
#[derive(Debug, Clone)]
pub struct BundleSpec {
    /// Container id (also the cgroup leaf name).
    pub id: String,
    /// Process arguments.
    pub args: Vec<String>,
    /// Give the process a terminal.
    pub terminal: bool,
    /// Memory limit in bytes.
    pub memory_limit: Option<i64>,
    /// Annotations (e.g. the CRI sandbox id used for shim grouping).
    pub annotations: Vec<(String, String)>,
    /// Ask the shim to start the task at Create (`CreateTask::start_at_create`).
    pub start_at_create: bool,
}

impl BundleSpec {
    /// A container running `sh -c script`.
    pub fn sh(id: &str, script: &str) -> Self {
        BundleSpec {
            id: id.to_string(),
            args: vec!["sh".into(), "-c".into(), script.into()],
            terminal: false,
            memory_limit: None,
            annotations: Vec::new(),
            start_at_create: false,
        }
    }
}

/// A bundle directory: `config.json`, an empty `rootfs` mount point, and the overlay
/// upper/work dirs the shim mounts there.
#[derive(Debug)]
pub struct Bundle {
    /// The bundle directory.
    pub dir: PathBuf,
    /// The rootfs mounts to send in CreateTask.
    pub rootfs: Vec<Mount>,
}

/// Writes a bundle for `spec` under `dir` (which must not exist yet or be empty).
pub fn write_bundle(dir: &Path, spec: &BundleSpec) -> std::io::Result<Bundle> {
    let lower = busybox_rootfs();
    // Keep the overlay's upper/work beside, not inside, the bundle: the bundle may be
    // removed by a shim's delete while the snapshot is still ours to clean.
    let snap = dir.with_extension("snap");
    for d in [dir.join("rootfs"), snap.join("upper"), snap.join("work")] {
        std::fs::create_dir_all(d)?;
    }
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_vec_pretty(&oci_config(spec))?,
    )?;
    let rootfs = vec![Mount {
        kind: "overlay".into(),
        source: "overlay".into(),
        target: String::new(),
        options: vec![
            format!("lowerdir={}", lower.display()),
            format!("upperdir={}", snap.join("upper").display()),
            format!("workdir={}", snap.join("work").display()),
        ],
    }];
    Ok(Bundle {
        dir: dir.to_path_buf(),
        rootfs,
    })
}

/// An OCI runtime config like `runc spec`'s default, with the test's process.
pub fn oci_config(spec: &BundleSpec) -> Value {
    let caps = json!([
        "CAP_CHOWN",
        "CAP_DAC_OVERRIDE",
        "CAP_FSETID",
        "CAP_FOWNER",
        "CAP_MKNOD",
        "CAP_NET_RAW",
        "CAP_SETGID",
        "CAP_SETUID",
        "CAP_SETFCAP",
        "CAP_SETPCAP",
        "CAP_NET_BIND_SERVICE",
        "CAP_SYS_CHROOT",
        "CAP_KILL",
        "CAP_AUDIT_WRITE"
    ]);
    let mut resources = json!({ "devices": [{ "allow": false, "access": "rwm" }] });
    if let Some(limit) = spec.memory_limit {
        resources["memory"] = json!({ "limit": limit, "swap": limit });
    }
    let annotations: serde_json::Map<String, Value> = spec
        .annotations
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": spec.terminal,
            "user": { "uid": 0, "gid": 0 },
            "args": spec.args,
            "env": ["PATH=/bin:/usr/bin:/sbin:/usr/sbin", "HOME=/root", "TERM=xterm"],
            "cwd": "/",
            "capabilities": {
                "bounding": caps, "effective": caps, "permitted": caps, "ambient": caps
            },
            "rlimits": [{ "type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024 }],
            "noNewPrivileges": true
        },
        "root": { "path": "rootfs", "readonly": false },
        "hostname": "crius-test",
        "mounts": [
            { "destination": "/proc", "type": "proc", "source": "proc" },
            { "destination": "/dev", "type": "tmpfs", "source": "tmpfs",
              "options": ["nosuid", "strictatime", "mode=755", "size=65536k"] },
            { "destination": "/dev/pts", "type": "devpts", "source": "devpts",
              "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"] },
            { "destination": "/dev/shm", "type": "tmpfs", "source": "shm",
              "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"] },
            { "destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
              "options": ["nosuid", "noexec", "nodev"] },
            { "destination": "/sys", "type": "sysfs", "source": "sysfs",
              "options": ["nosuid", "noexec", "nodev", "ro"] }
        ],
        "annotations": annotations,
        "linux": {
            "cgroupsPath": format!("/crius-test/{}", spec.id),
            "resources": resources,
            "namespaces": [
                { "type": "pid" }, { "type": "network" }, { "type": "ipc" },
                { "type": "uts" }, { "type": "mount" }
            ],
            "maskedPaths": [
                "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware",
                "/proc/scsi"
            ],
            "readonlyPaths": [
                "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"
            ]
        }
    })
}

/// An OCI process spec for exec (what containerd sends in ExecProcessRequest.spec).
pub fn exec_process(args: &[&str], terminal: bool) -> Value {
    let mut cfg = oci_config(&BundleSpec {
        id: String::new(),
        args: args.iter().map(|s| s.to_string()).collect(),
        terminal,
        memory_limit: None,
        annotations: Vec::new(),
        start_at_create: false,
    });
    cfg["process"].take()
}
