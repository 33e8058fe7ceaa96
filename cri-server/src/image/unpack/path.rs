//! Tar entry names, checked and split into components before anything touches the disk.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

/// Longest entry name accepted, in bytes: the kernel's `PATH_MAX` less the NUL. It keeps every
/// joined path valid for one `openat2` and bounds directory depth (and so recursion) to ~2048.
const MAX_PATH: usize = 4095;

/// A relative, normalised entry name: no `..`, no `.`, no empty components. Empty means the
/// layer root itself.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct EntryPath {
    comps: Vec<Vec<u8>>,
}

/// Why a name was refused; `unsafe_` tells an escape attempt from a merely malformed name.
#[derive(Debug)]
pub(super) struct BadPath {
    pub(super) unsafe_: bool,
    pub(super) reason: &'static str,
}

impl EntryPath {
    /// Parses a tar name (or hardlink target). Refuses absolute names and any `..` component
    /// outright instead of cleaning them: a layer that tries either is hostile or broken.
    pub(super) fn parse(raw: &[u8]) -> Result<Self, BadPath> {
        if raw.contains(&0) {
            return Err(BadPath {
                unsafe_: false,
                reason: "name contains a NUL byte",
            });
        }
        if raw.len() > MAX_PATH {
            return Err(BadPath {
                unsafe_: false,
                reason: "name longer than PATH_MAX",
            });
        }
        if raw.first() == Some(&b'/') {
            return Err(BadPath {
                unsafe_: true,
                reason: "absolute path",
            });
        }
        let mut comps = Vec::new();
        for c in raw.split(|b| *b == b'/') {
            match c {
                b"" | b"." => {}
                b".." => {
                    return Err(BadPath {
                        unsafe_: true,
                        reason: "path has a `..` component",
                    })
                }
                c => comps.push(c.to_vec()),
            }
        }
        Ok(Self { comps })
    }

    /// True for the layer root (`./`, `.`, `/`-free empty names).
    pub(super) fn is_root(&self) -> bool {
        self.comps.is_empty()
    }

    /// The components of the parent directory (empty for entries at the root).
    pub(super) fn parent(&self) -> &[Vec<u8>] {
        match self.comps.split_last() {
            Some((_, parent)) => parent,
            None => &[],
        }
    }

    /// The last component; `None` for the root.
    pub(super) fn name(&self) -> Option<&[u8]> {
        self.comps.last().map(Vec::as_slice)
    }

    /// All components, root first.
    pub(super) fn comps(&self) -> &[Vec<u8>] {
        &self.comps
    }
}

/// Joins components into a path relative to a directory fd; `.` for none.
pub(super) fn join(comps: &[Vec<u8>]) -> Vec<u8> {
    if comps.is_empty() {
        return b".".to_vec();
    }
    comps.join(&b'/')
}

/// One component as an `OsStr` for rustix's path arguments.
pub(super) fn os(c: &[u8]) -> &OsStr {
    OsStr::from_bytes(c)
}

/// An entry name for error messages and logs.
pub(super) fn lossy(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_and_refuses() {
        let p = EntryPath::parse(b"./a//b/./c/").expect("valid");
        assert_eq!(p.comps(), &[b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
        assert_eq!(p.name(), Some(&b"c"[..]));
        assert_eq!(join(p.parent()), b"a/b".to_vec());
        assert!(EntryPath::parse(b"./").expect("root").is_root());
        assert!(EntryPath::parse(b"a/../b").expect_err("dotdot").unsafe_);
        assert!(EntryPath::parse(b"..").expect_err("dotdot").unsafe_);
        assert!(EntryPath::parse(b"/etc/passwd").expect_err("abs").unsafe_);
        assert!(!EntryPath::parse(b"a\0b").expect_err("nul").unsafe_);
        assert!(!EntryPath::parse(&[b'a'; 5000]).expect_err("long").unsafe_);
        assert_eq!(join(&[]), b".".to_vec());
    }
}
