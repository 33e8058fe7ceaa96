//! Mounts and devices of a container: containerd's defaults, the pod's files, the
//! kubelet's volumes, and host device nodes.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

use oci_spec::runtime::{
    LinuxDevice, LinuxDeviceBuilder, LinuxDeviceCgroup, LinuxDeviceCgroupBuilder, LinuxDeviceType,
    Mount, MountBuilder,
};

use super::SpecError;
use crate::container::config::{Device, Mount as CriMount, Propagation};

/// Paths masked in every unprivileged container (containerd's defaults).
pub const DEFAULT_MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Paths read-only in every unprivileged container (containerd's defaults).
pub const DEFAULT_READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

fn mount(dest: &str, typ: &str, source: &str, options: &[&str]) -> Result<Mount, SpecError> {
    Ok(MountBuilder::default()
        .destination(dest)
        .typ(typ)
        .source(source)
        .options(options.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .build()?)
}

/// The kernel file systems every container gets (containerd's OCI defaults without `/run`
/// and `/dev/shm`, which come from the pod, plus the cgroup file system). A privileged
/// container gets `/sys` and `/sys/fs/cgroup` read-write.
pub fn default_mounts(privileged: bool) -> Result<Vec<Mount>, SpecError> {
    let sys_mode = if privileged { "rw" } else { "ro" };
    Ok(vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        )?,
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        )?,
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", sys_mode],
        )?,
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["nosuid", "noexec", "nodev", "relatime", sys_mode],
        )?,
    ])
}

/// A bind mount of a host path (a kubelet volume or a pod file).
pub fn bind(m: &CriMount) -> Result<Mount, SpecError> {
    let mut options = vec!["rbind"];
    options.push(match m.propagation {
        Propagation::Private => "rprivate",
        Propagation::HostToContainer => "rslave",
        Propagation::Bidirectional => "rshared",
    });
    options.push(if m.readonly { "ro" } else { "rw" });
    if m.recursive_read_only {
        options.push("rro");
    }
    mount(&m.container_path, "bind", &m.host_path, &options)
}

/// The pause container's `/dev/shm`: read-only for the pause itself.
pub fn sandbox_shm(source: &Path) -> Result<Mount, SpecError> {
    mount(
        "/dev/shm",
        "bind",
        &source.to_string_lossy(),
        &["rbind", "ro", "nosuid", "nodev", "noexec"],
    )
}

/// `path` without `.` components and trailing slashes, for comparing destinations.
pub fn clean(path: &str) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in Path::new(path).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

/// Orders mounts so that a parent is mounted before what is beneath it (fewer path
/// components first; stable, so equal depths keep the kubelet's order).
pub fn sort_by_depth(mounts: &mut [Mount]) {
    mounts.sort_by_key(|m| m.destination().components().count());
}

/// The `(devices, cgroup rules)` of a host device path given by the kubelet. A directory
/// contributes every device node beneath it (like containerd), a symlink is followed.
pub fn config_device(
    d: &Device,
    field: &str,
) -> Result<(Vec<LinuxDevice>, Vec<LinuxDeviceCgroup>), SpecError> {
    let meta = std::fs::metadata(&d.host_path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            SpecError::NotFound(format!("{field}.host_path {} does not exist", d.host_path))
        } else {
            SpecError::Io {
                context: format!("stat of {field}.host_path {}", d.host_path),
                source: e,
            }
        }
    })?;
    let mut found = Vec::new();
    if meta.is_dir() {
        walk_devices(
            Path::new(&d.host_path),
            Path::new(&d.container_path),
            &mut found,
            false,
        )?;
    } else {
        let dev = device_of(&meta, Path::new(&d.container_path)).ok_or_else(|| {
            SpecError::InvalidArgument(format!(
                "{field}.host_path {} is not a device node",
                d.host_path
            ))
        })?;
        found.push(dev);
    }
    let rules = found
        .iter()
        .map(|dev| cgroup_rule(dev, &d.permissions))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((found, rules))
}

/// Every device node of the host's `/dev` for a privileged container (containerd skips the
/// same directories and `/dev/console`).
pub fn host_devices() -> Result<Vec<LinuxDevice>, SpecError> {
    let mut found = Vec::new();
    walk_devices(Path::new("/dev"), Path::new("/dev"), &mut found, true)?;
    Ok(found)
}

/// The cgroup rule allowing all devices (privileged) or denying all (the base rule that
/// the allowed devices then open up).
pub fn all_devices(allow: bool) -> Result<LinuxDeviceCgroup, SpecError> {
    Ok(LinuxDeviceCgroupBuilder::default()
        .allow(allow)
        .access("rwm")
        .build()?)
}

fn cgroup_rule(dev: &LinuxDevice, access: &str) -> Result<LinuxDeviceCgroup, SpecError> {
    Ok(LinuxDeviceCgroupBuilder::default()
        .allow(true)
        .typ(dev.typ())
        .major(dev.major())
        .minor(dev.minor())
        .access(access)
        .build()?)
}

fn walk_devices(
    host: &Path,
    container: &Path,
    out: &mut Vec<LinuxDevice>,
    skip_special: bool,
) -> Result<(), SpecError> {
    let io = |e: std::io::Error| SpecError::Io {
        context: format!("listing devices in {}", host.display()),
        source: e,
    };
    let mut entries: Vec<_> = std::fs::read_dir(host)
        .map_err(io)?
        .collect::<Result<_, _>>()
        .map_err(io)?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name();
        let name_str = name.to_string_lossy();
        // Lstat: a symlink in /dev is not a device of its own.
        let meta = match std::fs::symlink_metadata(entry.path()) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io(e)),
        };
        if meta.is_dir() {
            if skip_special
                && matches!(
                    name_str.as_ref(),
                    "pts" | "shm" | "fd" | "mqueue" | ".lxc" | ".lxd-mounts" | ".udev"
                )
            {
                continue;
            }
            walk_devices(&entry.path(), &container.join(&name), out, skip_special)?;
            continue;
        }
        if skip_special && name_str == "console" {
            continue;
        }
        if let Some(dev) = device_of(&meta, &container.join(&name)) {
            out.push(dev);
        }
    }
    Ok(())
}

/// The OCI device of a node, `None` when it is not a device or a FIFO.
fn device_of(meta: &std::fs::Metadata, container_path: &Path) -> Option<LinuxDevice> {
    let ft = meta.file_type();
    let typ = if ft.is_char_device() {
        LinuxDeviceType::C
    } else if ft.is_block_device() {
        LinuxDeviceType::B
    } else if ft.is_fifo() {
        LinuxDeviceType::P
    } else {
        return None;
    };
    let rdev = meta.rdev();
    // The glibc encoding of dev_t (`gnu_dev_major`/`gnu_dev_minor`).
    let major = ((rdev >> 8) & 0xfff) | ((rdev >> 32) & !0xfff);
    let minor = (rdev & 0xff) | ((rdev >> 12) & !0xff);
    LinuxDeviceBuilder::default()
        .path(container_path)
        .typ(typ)
        .major(major as i64)
        .minor(minor as i64)
        .file_mode(meta.mode() & 0o7777)
        .uid(meta.uid())
        .gid(meta.gid())
        .build()
        .ok()
}
