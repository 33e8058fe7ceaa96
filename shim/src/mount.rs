//! Rootfs mounts from `CreateTaskRequest.rootfs` (overlay and bind, as containerd's
//! snapshotters hand them over) onto `<bundle>/rootfs`, and their removal.

use std::path::Path;

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};

use crate::error::{Result, ShimError};

/// One mount as the request carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountSpec {
    /// Filesystem type (`overlay`, `bind`, …).
    pub kind: String,
    /// Source.
    pub source: String,
    /// Options (`ro`, `rbind`, `lowerdir=…`).
    pub options: Vec<String>,
}

/// Flags and fs data of a mount's options.
pub fn parse_options(options: &[String]) -> (MsFlags, Vec<String>) {
    let mut flags = MsFlags::empty();
    let mut data = Vec::new();
    for o in options {
        let (set, clear) = match o.as_str() {
            "ro" => (MsFlags::MS_RDONLY, MsFlags::empty()),
            "rw" => (MsFlags::empty(), MsFlags::MS_RDONLY),
            "bind" => (MsFlags::MS_BIND, MsFlags::empty()),
            "rbind" => (MsFlags::MS_BIND | MsFlags::MS_REC, MsFlags::empty()),
            "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty()),
            "suid" => (MsFlags::empty(), MsFlags::MS_NOSUID),
            "nodev" => (MsFlags::MS_NODEV, MsFlags::empty()),
            "dev" => (MsFlags::empty(), MsFlags::MS_NODEV),
            "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty()),
            "exec" => (MsFlags::empty(), MsFlags::MS_NOEXEC),
            "relatime" => (MsFlags::MS_RELATIME, MsFlags::empty()),
            "noatime" => (MsFlags::MS_NOATIME, MsFlags::empty()),
            "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
            "remount" => (MsFlags::MS_REMOUNT, MsFlags::empty()),
            "defaults" => (MsFlags::empty(), MsFlags::empty()),
            _ => {
                data.push(o.clone());
                continue;
            }
        };
        flags |= set;
        flags &= !clear;
    }
    (flags, data)
}

/// Mounts `mounts` in order onto `target` (created if missing). On failure, whatever was
/// mounted is unmounted again.
pub fn mount_all(mounts: &[MountSpec], target: &Path) -> Result<()> {
    if mounts.is_empty() {
        return Ok(());
    }
    std::fs::create_dir_all(target).map_err(|e| ShimError::io(target.display(), e))?;
    for (i, m) in mounts.iter().enumerate() {
        if let Err(e) = mount_one(m, target) {
            for _ in 0..i {
                let _ = umount2(target, MntFlags::MNT_DETACH);
            }
            return Err(e);
        }
    }
    Ok(())
}

fn mount_one(m: &MountSpec, target: &Path) -> Result<()> {
    let (flags, data) = parse_options(&m.options);
    let is_bind = m.kind == "bind" || flags.contains(MsFlags::MS_BIND);
    let fstype = if is_bind { None } else { Some(m.kind.as_str()) };
    let data = data.join(",");
    let data = (!data.is_empty() && !is_bind).then_some(data.as_str());
    // A read-only bind needs a second, remounting call: MS_RDONLY is ignored on the first.
    let first = if is_bind {
        flags & !MsFlags::MS_RDONLY
    } else {
        flags
    };
    mount(Some(m.source.as_str()), target, fstype, first, data).map_err(|e| {
        ShimError::Internal(format!(
            "mount {} {} on {}: {e}",
            m.kind,
            m.source,
            target.display()
        ))
    })?;
    if is_bind && flags.contains(MsFlags::MS_RDONLY) {
        let re = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
        if let Err(e) = mount(None::<&str>, target, None::<&str>, re, None::<&str>) {
            let _ = umount2(target, MntFlags::MNT_DETACH);
            return Err(ShimError::Internal(format!(
                "remount {} read-only: {e}",
                target.display()
            )));
        }
    }
    Ok(())
}

/// Unmounts everything stacked on `target`; a target that is not a mount point is fine.
pub fn unmount_all(target: &Path) -> Result<()> {
    for _ in 0..32 {
        match umount2(target, MntFlags::empty()) {
            Ok(()) => continue,
            Err(Errno::EINVAL) | Err(Errno::ENOENT) => return Ok(()),
            Err(Errno::EBUSY) => {
                let _ = umount2(target, MntFlags::MNT_DETACH);
            }
            Err(e) => {
                return Err(ShimError::Internal(format!(
                    "unmount {}: {e}",
                    target.display()
                )))
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_split_into_flags_and_data() {
        let (flags, data) = parse_options(&[
            "ro".into(),
            "rbind".into(),
            "lowerdir=/a:/b".into(),
            "nosuid".into(),
        ]);
        assert!(flags.contains(
            MsFlags::MS_RDONLY | MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_NOSUID
        ));
        assert_eq!(data, vec!["lowerdir=/a:/b".to_string()]);
        let (flags, _) = parse_options(&["ro".into(), "rw".into()]);
        assert!(!flags.contains(MsFlags::MS_RDONLY));
    }

    #[test]
    fn unmounting_a_plain_dir_is_fine() {
        let d = tempfile::tempdir().expect("tmp");
        unmount_all(d.path()).expect("not a mount point");
    }
}
