//! Directory-fd primitives: every lookup stays beneath a directory fd and follows no symlink.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Gid, Mode, OFlags, ResolveFlags, Uid, XattrFlags};
use rustix::io::Errno;

use super::path::os;

/// `openat2` resolution for every lookup: no escape from the starting directory, no symlink
/// (anywhere in the path, the last component included), no `/proc` magic link.
const RESOLVE: ResolveFlags = ResolveFlags::BENEATH
    .union(ResolveFlags::NO_SYMLINKS)
    .union(ResolveFlags::NO_MAGICLINKS);

/// `openat2` returns EAGAIN under RESOLVE_BENEATH when a concurrent rename anywhere on the
/// system might have raced the walk; a few retries are what the man page asks for.
const AGAIN_RETRIES: usize = 16;

/// Opens `path` beneath `dir` with `flags` (plus `O_CLOEXEC`). No `O_NOFOLLOW`:
/// `RESOLVE_NO_SYMLINKS` already refuses a trailing symlink, and reports it as `ELOOP` like
/// any other symlink (with `O_NOFOLLOW | O_DIRECTORY` it would be a vaguer `ENOTDIR`).
pub(super) fn open_beneath(
    dir: BorrowedFd<'_>,
    path: &[u8],
    flags: OFlags,
) -> Result<OwnedFd, Errno> {
    let flags = flags | OFlags::CLOEXEC;
    let mut tries = 0;
    loop {
        match rustix::fs::openat2(dir, os(path), flags, Mode::empty(), RESOLVE) {
            Err(Errno::AGAIN) if tries < AGAIN_RETRIES => tries += 1,
            Err(Errno::INTR) => {}
            r => return r,
        }
    }
}

/// Opens the directory `path` beneath `dir` for reading (not `O_PATH`: the fd is also used
/// for `fchown`, `fchmod`, `fsetxattr` and `futimens`, which refuse `O_PATH` fds).
pub(super) fn open_dir(dir: BorrowedFd<'_>, path: &[u8]) -> Result<OwnedFd, Errno> {
    open_beneath(dir, path, OFlags::RDONLY | OFlags::DIRECTORY)
}

/// Opens the snapshot directory and checks it is empty.
pub(super) fn open_dest(dest: &Path) -> Result<OwnedFd, String> {
    let fd = rustix::fs::open(
        dest,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| format!("open: {}", std::io::Error::from(e)))?;
    let dir = rustix::fs::Dir::read_from(&fd)
        .map_err(|e| format!("read: {}", std::io::Error::from(e)))?;
    for entry in dir {
        let entry = entry.map_err(|e| format!("read: {}", std::io::Error::from(e)))?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            return Err("not empty".to_owned());
        }
    }
    Ok(fd)
}

/// `fchown` with numeric ids.
pub(super) fn chown<Fd: AsFd>(fd: Fd, uid: u32, gid: u32) -> Result<(), Errno> {
    rustix::fs::fchown(fd, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))
}

/// Removes the directory `name` in `parent` and everything under it, by fds, following no
/// symlink. Depth is bounded by the entry-name length limit, so recursion is fine.
pub(super) fn remove_tree(parent: BorrowedFd<'_>, name: &[u8]) -> Result<(), Errno> {
    let fd = open_dir(parent, name)?;
    let mut children = Vec::new();
    for entry in rustix::fs::Dir::read_from(&fd)? {
        let entry = entry?;
        let n = entry.file_name().to_bytes();
        if n != b"." && n != b".." {
            children.push((n.to_vec(), entry.file_type()));
        }
    }
    for (child, ft) in children {
        let is_dir = match ft {
            FileType::Directory => true,
            FileType::Unknown => {
                let st = rustix::fs::statat(&fd, os(&child), AtFlags::SYMLINK_NOFOLLOW)?;
                FileType::from_raw_mode(st.st_mode) == FileType::Directory
            }
            _ => false,
        };
        if is_dir {
            remove_tree(fd.as_fd(), &child)?;
        } else {
            rustix::fs::unlinkat(&fd, os(&child), AtFlags::empty())?;
        }
    }
    rustix::fs::unlinkat(parent, os(name), AtFlags::REMOVEDIR)
}

/// Sets an xattr on `name` in the directory `parent` without following `name`, for entries
/// that cannot be opened for `fsetxattr` (symlinks). Linux has no `lsetxattrat` before 6.13's
/// `setxattrat`, so the parent is reached through its `/proc/self/fd` link (a trusted fd we
/// opened beneath the root) and only the final, unfollowed component comes from the layer.
pub(super) fn lsetxattr_in(
    parent: BorrowedFd<'_>,
    name: &[u8],
    key: &[u8],
    value: &[u8],
) -> Result<(), Errno> {
    let mut path = format!("/proc/self/fd/{}/", parent.as_raw_fd()).into_bytes();
    path.extend_from_slice(name);
    rustix::fs::lsetxattr(os(&path), os(key), value, XattrFlags::empty())
}
