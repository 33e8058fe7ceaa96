//! Who a container's process runs as: CRI `run_as_*` or the image's `USER`, resolved against
//! the image's own `/etc/passwd` and `/etc/group`.
//!
//! The rootfs is untrusted (any image author wrote it), so those files are opened with
//! `openat2(RESOLVE_IN_ROOT)`: a symlink such as `/etc/passwd -> /host/etc/passwd` or
//! `../../../etc/passwd` resolves inside the rootfs, never outside. Only regular files are
//! read, opened non-blocking (a FIFO cannot hang the daemon) and at most [`MAX_FILE`] bytes.

use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::Path;

use rustix::fs::{Mode, OFlags, ResolveFlags};

use super::SpecError;

/// Larger account files are refused: no real image has them, and reading them costs memory.
const MAX_FILE: u64 = 4 << 20;

/// An `/etc/passwd` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Passwd {
    /// Login name.
    pub name: String,
    /// User ID.
    pub uid: u32,
    /// Primary group ID.
    pub gid: u32,
}

/// An `/etc/group` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// Group name.
    pub name: String,
    /// Group ID.
    pub gid: u32,
    /// Member user names.
    pub members: Vec<String>,
}

/// The account databases of one rootfs, read lazily at most once each.
pub struct Accounts<'a> {
    rootfs: &'a Path,
    root: Option<OwnedFd>,
    passwd: Option<Vec<Passwd>>,
    group: Option<Vec<Group>>,
}

impl<'a> Accounts<'a> {
    /// The accounts of the image mounted at `rootfs`.
    pub fn new(rootfs: &'a Path) -> Accounts<'a> {
        Accounts {
            rootfs,
            root: None,
            passwd: None,
            group: None,
        }
    }

    /// The entries of `/etc/passwd` (empty when the image has none).
    pub fn passwd(&mut self) -> Result<&[Passwd], SpecError> {
        if self.passwd.is_none() {
            let text = self.read("etc/passwd")?;
            self.passwd = Some(parse_passwd(&text));
        }
        Ok(self.passwd.as_deref().unwrap_or_default())
    }

    /// The entries of `/etc/group` (empty when the image has none).
    pub fn group(&mut self) -> Result<&[Group], SpecError> {
        if self.group.is_none() {
            let text = self.read("etc/group")?;
            self.group = Some(parse_group(&text));
        }
        Ok(self.group.as_deref().unwrap_or_default())
    }

    fn root(&mut self) -> Result<&OwnedFd, SpecError> {
        if self.root.is_none() {
            let fd = rustix::fs::open(
                self.rootfs,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| SpecError::Io {
                context: format!("opening rootfs {}", self.rootfs.display()),
                source: e.into(),
            })?;
            self.root = Some(fd);
        }
        match &self.root {
            Some(fd) => Ok(fd),
            None => Err(SpecError::Internal("rootfs fd missing".into())),
        }
    }

    /// Reads `rel` beneath the rootfs; a missing file reads as empty.
    fn read(&mut self, rel: &str) -> Result<String, SpecError> {
        let display = format!("{}/{rel}", self.rootfs.display());
        let io = |e: std::io::Error| SpecError::Io {
            context: format!("reading {display}"),
            source: e,
        };
        let root = self.root()?;
        let mut attempts = 0;
        let fd = loop {
            match rustix::fs::openat2(
                root,
                rel,
                OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NONBLOCK | OFlags::NOCTTY,
                Mode::empty(),
                ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
            ) {
                Ok(fd) => break fd,
                Err(rustix::io::Errno::NOENT) | Err(rustix::io::Errno::NOTDIR) => {
                    return Ok(String::new())
                }
                // openat2 asks for a retry when a concurrent rename raced the walk.
                Err(rustix::io::Errno::AGAIN) | Err(rustix::io::Errno::INTR) if attempts < 8 => {
                    attempts += 1;
                }
                Err(e) => return Err(io(e.into())),
            }
        };
        let file = std::fs::File::from(fd);
        let meta = file.metadata().map_err(io)?;
        if !meta.is_file() {
            return Err(SpecError::InvalidArgument(format!(
                "{display} in the image is not a regular file"
            )));
        }
        if meta.len() > MAX_FILE {
            return Err(SpecError::InvalidArgument(format!(
                "{display} in the image is larger than {MAX_FILE} bytes"
            )));
        }
        let mut bytes = Vec::with_capacity(meta.len() as usize);
        file.take(MAX_FILE).read_to_end(&mut bytes).map_err(io)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }
}

fn parse_passwd(text: &str) -> Vec<Passwd> {
    text.lines()
        .filter_map(|line| {
            let mut f = line.split(':');
            let name = f.next()?.trim();
            if name.is_empty() || name.starts_with('#') || name.starts_with(['+', '-']) {
                return None;
            }
            let _password = f.next()?;
            let uid = f.next()?.trim().parse().ok()?;
            let gid = f.next()?.trim().parse().ok()?;
            Some(Passwd {
                name: name.to_string(),
                uid,
                gid,
            })
        })
        .collect()
}

fn parse_group(text: &str) -> Vec<Group> {
    text.lines()
        .filter_map(|line| {
            let mut f = line.split(':');
            let name = f.next()?.trim();
            if name.is_empty() || name.starts_with('#') || name.starts_with(['+', '-']) {
                return None;
            }
            let _password = f.next()?;
            let gid = f.next()?.trim().parse().ok()?;
            let members = f
                .next()
                .unwrap_or("")
                .split(',')
                .map(str::trim)
                .filter(|m| !m.is_empty())
                .map(str::to_string)
                .collect();
            Some(Group {
                name: name.to_string(),
                gid,
                members,
            })
        })
        .collect()
}

/// The resolved identity of a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// User ID.
    pub uid: u32,
    /// Primary group ID.
    pub gid: u32,
    /// Supplementary groups, primary group first (containerd includes it since
    /// CVE-2023-25173, so that dropping the primary group with `setgroups` is impossible).
    pub additional_gids: Vec<u32>,
}

/// What the pod and container ask for.
#[derive(Debug, Clone, Default)]
pub struct UserRequest<'a> {
    /// CRI `run_as_user`.
    pub run_as_user: Option<u32>,
    /// CRI `run_as_username` (empty: not set).
    pub run_as_username: &'a str,
    /// CRI `run_as_group`.
    pub run_as_group: Option<u32>,
    /// The image's `USER` (empty: root).
    pub image_user: &'a str,
    /// CRI `supplemental_groups`.
    pub supplemental_groups: &'a [u32],
    /// Merge `/etc/group` memberships (`Merge` policy) or not (`Strict`).
    pub merge_group_file: bool,
}

/// Resolves the identity the way containerd's CRI does: `run_as_username`, else
/// `run_as_user`, else the image `USER` (`name`, `uid`, `uid:gid`, `name:group`, …);
/// `run_as_group` replaces the group. A uid without a passwd entry gets gid 0; a name
/// without one is [`SpecError::NotFound`].
pub fn resolve(req: &UserRequest, accounts: &mut Accounts) -> Result<Identity, SpecError> {
    let (user, group, source) = if !req.run_as_username.is_empty() {
        (req.run_as_username.to_string(), None, "run_as_username")
    } else if let Some(uid) = req.run_as_user {
        (uid.to_string(), None, "run_as_user")
    } else if req.image_user.is_empty() {
        ("0".to_string(), None, "image USER")
    } else {
        let (u, g) = match req.image_user.split_once(':') {
            Some((u, g)) => (u.to_string(), Some(g.to_string())),
            None => (req.image_user.to_string(), None),
        };
        (u, g, "image USER")
    };
    if user.is_empty() {
        return Err(SpecError::InvalidArgument(format!(
            "{source} {:?} names no user",
            req.image_user
        )));
    }
    let (uid, mut gid, name) = match user.parse::<u32>() {
        Ok(uid) => {
            let entry = accounts.passwd()?.iter().find(|p| p.uid == uid).cloned();
            match entry {
                Some(p) => (uid, p.gid, Some(p.name)),
                None => (uid, 0, None),
            }
        }
        Err(_) => {
            let entry = accounts.passwd()?.iter().find(|p| p.name == user).cloned();
            match entry {
                Some(p) => (p.uid, p.gid, Some(p.name)),
                None => {
                    return Err(SpecError::NotFound(format!(
                        "user {user:?} ({source}) is not in the image's /etc/passwd"
                    )))
                }
            }
        }
    };
    if let Some(g) = group.filter(|g| !g.is_empty()) {
        gid = match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => match accounts.group()?.iter().find(|e| e.name == g) {
                Some(e) => e.gid,
                None => {
                    return Err(SpecError::NotFound(format!(
                        "group {g:?} ({source}) is not in the image's /etc/group"
                    )))
                }
            },
        };
    }
    if let Some(g) = req.run_as_group {
        gid = g;
    }
    let mut additional_gids = vec![gid];
    if req.merge_group_file {
        if let Some(name) = &name {
            for g in accounts.group()? {
                if g.members.iter().any(|m| m == name) && !additional_gids.contains(&g.gid) {
                    additional_gids.push(g.gid);
                }
            }
        }
    }
    for g in req.supplemental_groups {
        if !additional_gids.contains(g) {
            additional_gids.push(*g);
        }
    }
    Ok(Identity {
        uid,
        gid,
        additional_gids,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsers_skip_garbage() {
        let p =
            parse_passwd("root:x:0:0:root:/root:/bin/sh\n# c\n+nis\nbad:x:y:0\nbin:x:2:2::/:\n");
        assert_eq!(
            p,
            [
                Passwd {
                    name: "root".into(),
                    uid: 0,
                    gid: 0
                },
                Passwd {
                    name: "bin".into(),
                    uid: 2,
                    gid: 2
                }
            ]
        );
        let g = parse_group("wheel:x:10:root, bin\nempty:x:11:\nshort:x:12\n");
        assert_eq!(g[0].members, ["root", "bin"]);
        assert!(g[1].members.is_empty());
        assert_eq!(g[2].gid, 12);
    }
}
