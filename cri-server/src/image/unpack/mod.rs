//! Applies one OCI image layer (an uncompressed tar stream) into an empty snapshot directory,
//! in the form overlayfs stacks directly: OCI whiteouts become overlay whiteouts (0/0
//! character devices) and opaque markers become `trusted.overlay.opaque=y`.
//!
//! A layer is untrusted input and must never write outside its snapshot (DESIGN.md,
//! "Invariants"). So nothing here resolves a path the ordinary way: the snapshot is opened once
//! as a directory fd, every parent is opened with `openat2(RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)`, and final names are created with `*at`
//! syscalls that do not follow symlinks (`O_EXCL`, `O_NOFOLLOW`, `AT_SYMLINK_NOFOLLOW`). A
//! symlink planted by an earlier entry is therefore never followed, whatever later entries do.
//! Names with `..` or a leading `/` are refused rather than cleaned; device nodes and
//! dangerous setuid/setgid bits are neutralised rather than refused, so ordinary images that
//! carry them (e.g. a `/dev` skeleton) still unpack.
//!
//! The `tar` crate only parses (headers, PAX records, GNU long names); its own `unpack` is not
//! used.

mod fsops;
mod path;
#[cfg(test)]
pub(crate) mod tests;

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timespec, Timestamps, XattrFlags};
use rustix::io::Errno;

use self::path::{join, lossy, os, BadPath, EntryPath};

/// What one layer produced; the puller logs it and tests assert on it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct UnpackStats {
    /// Tar entries applied (including whiteouts, skipped devices; not PAX global headers).
    pub entries: u64,
    /// Bytes of regular file content written.
    pub bytes: u64,
    /// OCI whiteouts and opaque markers turned into their overlay form.
    pub whiteouts: u64,
    /// Block and character devices not created.
    pub skipped_devices: u64,
    /// Entries whose setuid/setgid bits were removed.
    pub stripped_setuid: u64,
}

/// Why a layer could not be applied. Every variant names the tar entry concerned, so a bad
/// image can be diagnosed from the daemon log alone.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// The entry tried to reach outside the snapshot (`..`, absolute name, symlinked parent,
    /// hardlink escaping or pointing at nothing in this layer). Nothing was written for it.
    #[error("layer entry {entry:?} refused: {reason}")]
    Unsafe { entry: String, reason: String },
    /// The entry is malformed (bad name, bad numeric field, bad whiteout).
    #[error("layer entry {entry:?} is invalid: {reason}")]
    Invalid { entry: String, reason: String },
    /// A tar entry type an OCI layer should not contain.
    #[error("layer entry {entry:?} has unsupported tar type {kind}")]
    Unsupported { entry: String, kind: String },
    /// A filesystem operation on the snapshot failed.
    #[error("layer entry {entry:?}: {op}: {source}")]
    Io {
        entry: String,
        op: &'static str,
        #[source]
        source: io::Error,
    },
    /// The tar stream itself could not be read (truncated, corrupt, or the reader failed);
    /// `entry` is the entry being read or the last one read before the failure.
    #[error("reading layer tar stream at entry {entry:?}: {source}")]
    Read {
        entry: String,
        #[source]
        source: io::Error,
    },
    /// The snapshot directory could not be opened or is not empty (a layer must be applied
    /// into an empty directory: hardlink checks rely on everything present coming from it).
    #[error("snapshot directory {}: {reason}", dest.display())]
    Dest { dest: PathBuf, reason: String },
}

/// Reads larger than tar's 512-byte blocks, whatever the caller's reader does.
const READ_BUF: usize = 64 * 1024;
/// Copy buffer for file contents, reused across entries.
const COPY_BUF: usize = 128 * 1024;
const SUID_SGID: u32 = 0o6000;
const WORLD_WRITABLE: u32 = 0o002;
/// The overlay xattr marking a directory opaque.
const OPAQUE_XATTR: &str = "trusted.overlay.opaque";
/// Xattr name prefixes a layer may not set: they would forge overlay metadata (redirects,
/// origins, opaque markers) in the snapshot. `user.overlay.` is overlay's namespace when
/// mounted with `userxattr`; refused too so no mount option can turn them on later.
const FORBIDDEN_XATTRS: [&[u8]; 2] = [b"trusted.overlay.", b"user.overlay."];

/// Applies the layer tar read from `reader` into `dest`, which must be an existing empty
/// directory. Blocking: call it from `spawn_blocking`.
///
/// On success the reader has been read to EOF (past the tar end-of-archive blocks), so a
/// digest computed by the caller over the stream covers the whole blob. On error `dest` holds
/// a partial layer; the caller discards the snapshot.
pub fn apply_layer<R: Read>(reader: R, dest: &Path) -> Result<UnpackStats, UnpackError> {
    let root = fsops::open_dest(dest).map_err(|reason| UnpackError::Dest {
        dest: dest.to_path_buf(),
        reason,
    })?;
    let mut unpacker = Unpacker::new(root);
    let mut archive = tar::Archive::new(BufReader::with_capacity(READ_BUF, reader));
    let mut last = String::from("<start of layer>");
    {
        let entries = archive.entries().map_err(|source| UnpackError::Read {
            entry: last.clone(),
            source,
        })?;
        for entry in entries {
            let mut entry = entry.map_err(|source| UnpackError::Read {
                entry: format!("after {last}"),
                source,
            })?;
            last = lossy(&entry.path_bytes());
            unpacker.apply(&mut entry)?;
        }
    }
    unpacker.finish()?;
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(|source| UnpackError::Read {
        entry: format!("after {last} (end of archive)"),
        source,
    })?;
    Ok(unpacker.stats)
}

/// Metadata common to all entry types, read from the header and its PAX records.
struct Meta {
    uid: u32,
    gid: u32,
    mode: u32,
    mtime: Timespec,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// What was at an entry's final name before the entry was applied.
#[derive(Debug, PartialEq, Eq)]
enum Existing {
    Nothing,
    Dir,
    Whiteout,
}

/// One layer's application state.
struct Unpacker {
    root: OwnedFd,
    stats: UnpackStats,
    /// Directory mtimes, applied at the very end: creating children changes them.
    dir_times: Vec<(EntryPath, Timespec)>,
    /// Regular files left with setuid/setgid: re-checked at the end, because their parent
    /// directory may be made world-writable by a later entry.
    suid: Vec<EntryPath>,
    /// Device entries not created, so hardlinks to them are skipped rather than refused.
    skipped_devices: HashSet<EntryPath>,
    /// The last parent directory opened: layers list many entries per directory. Dropped
    /// whenever a directory is removed, so a stale fd never receives new entries.
    cache: Option<(Vec<Vec<u8>>, Rc<OwnedFd>)>,
    buf: Vec<u8>,
}

/// Error builders naming the entry.
struct Ctx<'a> {
    entry: &'a str,
}

impl Ctx<'_> {
    fn io(&self, op: &'static str) -> impl FnOnce(Errno) -> UnpackError + '_ {
        move |e| UnpackError::Io {
            entry: self.entry.to_owned(),
            op,
            source: e.into(),
        }
    }

    fn io_std(&self, op: &'static str) -> impl FnOnce(io::Error) -> UnpackError + '_ {
        move |source| UnpackError::Io {
            entry: self.entry.to_owned(),
            op,
            source,
        }
    }

    fn unsafe_(&self, reason: impl Into<String>) -> UnpackError {
        UnpackError::Unsafe {
            entry: self.entry.to_owned(),
            reason: reason.into(),
        }
    }

    fn invalid(&self, reason: impl Into<String>) -> UnpackError {
        UnpackError::Invalid {
            entry: self.entry.to_owned(),
            reason: reason.into(),
        }
    }

    fn bad_path(&self, what: &str, b: BadPath) -> UnpackError {
        let reason = format!("{what}{}", b.reason);
        if b.unsafe_ {
            self.unsafe_(reason)
        } else {
            self.invalid(reason)
        }
    }

    /// Maps a failure to open a directory beneath the root: symlinks and escapes are refusals.
    fn resolve(&self, what: &'static str, e: Errno) -> UnpackError {
        match e {
            Errno::LOOP => self.unsafe_(format!("{what} passes through a symlink")),
            Errno::XDEV => self.unsafe_(format!("{what} escapes the layer root")),
            Errno::NOTDIR => self.invalid(format!("{what} has a non-directory component")),
            e => UnpackError::Io {
                entry: self.entry.to_owned(),
                op: what,
                source: e.into(),
            },
        }
    }
}

impl Unpacker {
    fn new(root: OwnedFd) -> Self {
        Self {
            root,
            stats: UnpackStats::default(),
            dir_times: Vec::new(),
            suid: Vec::new(),
            skipped_devices: HashSet::new(),
            cache: None,
            buf: vec![0; COPY_BUF],
        }
    }

    fn apply<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), UnpackError> {
        let raw = entry.path_bytes().into_owned();
        let name = lossy(&raw);
        let ctx = Ctx { entry: &name };
        let mut kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() {
            return Ok(());
        }
        self.stats.entries += 1;
        let path = EntryPath::parse(&raw).map_err(|b| ctx.bad_path("", b))?;
        // Pre-POSIX archives mark directories with a trailing slash on a regular entry.
        if kind == tar::EntryType::Regular && raw.last() == Some(&b'/') {
            kind = tar::EntryType::Directory;
        }
        // Whiteouts are recognised by name, whatever their type (usually empty files).
        if let Some(target) = path.name().and_then(|n| n.strip_prefix(b".wh.")) {
            return self.whiteout(&ctx, &path, target);
        }
        if path.is_root() && kind != tar::EntryType::Directory {
            return Err(ctx.invalid("a non-directory entry names the layer root"));
        }
        let meta = read_meta(&ctx, entry)?;
        use tar::EntryType as T;
        match kind {
            T::Regular | T::Continuous | T::GNUSparse => {
                // A sparse entry's size is its stored bytes, not the file's length.
                let exact = (kind != T::GNUSparse).then(|| entry.size());
                self.file(&ctx, &path, &meta, entry, exact)
            }
            T::Directory => self.dir(&ctx, &path, &meta),
            T::Symlink => {
                let target = entry.link_name_bytes().map(|t| t.into_owned());
                self.symlink(&ctx, &path, &meta, target)
            }
            T::Link => {
                let target = entry.link_name_bytes().map(|t| t.into_owned());
                self.hardlink(&ctx, &path, target)
            }
            T::Fifo => self.fifo(&ctx, &path, &meta),
            T::Char | T::Block => {
                tracing::warn!(entry = %name, "layer device node not created");
                self.stats.skipped_devices += 1;
                self.skipped_devices.insert(path);
                Ok(())
            }
            other => Err(UnpackError::Unsupported {
                entry: name.clone(),
                kind: format!("{other:?}"),
            }),
        }
    }

    /// Opens (creating missing components 0755 root) the directory `comps` beneath the root.
    fn dir_fd(&mut self, ctx: &Ctx<'_>, comps: &[Vec<u8>]) -> Result<Rc<OwnedFd>, UnpackError> {
        if let Some((cached, fd)) = &self.cache {
            if cached.as_slice() == comps {
                return Ok(Rc::clone(fd));
            }
        }
        let fd = match fsops::open_dir(self.root.as_fd(), &join(comps)) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => self.create_dirs(ctx, comps)?,
            Err(e) => return Err(ctx.resolve("parent directory", e)),
        };
        let fd = Rc::new(fd);
        self.cache = Some((comps.to_vec(), Rc::clone(&fd)));
        Ok(fd)
    }

    /// Walks `comps` one at a time, creating what is missing.
    fn create_dirs(&self, ctx: &Ctx<'_>, comps: &[Vec<u8>]) -> Result<OwnedFd, UnpackError> {
        let mut cur =
            fsops::open_dir(self.root.as_fd(), b".").map_err(|e| ctx.resolve("layer root", e))?;
        for c in comps {
            cur = match fsops::open_dir(cur.as_fd(), c) {
                Ok(fd) => fd,
                Err(Errno::NOENT) => {
                    rustix::fs::mkdirat(&cur, os(c), Mode::from_raw_mode(0o755))
                        .map_err(ctx.io("create parent directory"))?;
                    let fd = fsops::open_dir(cur.as_fd(), c)
                        .map_err(|e| ctx.resolve("parent directory", e))?;
                    // Explicit: the umask and a setgid parent would otherwise change these.
                    fsops::chown(&fd, 0, 0).map_err(ctx.io("chown parent directory"))?;
                    rustix::fs::fchmod(&fd, Mode::from_raw_mode(0o755))
                        .map_err(ctx.io("chmod parent directory"))?;
                    fd
                }
                Err(e) => return Err(ctx.resolve("parent directory", e)),
            };
        }
        Ok(cur)
    }

    /// Opens an existing directory without creating anything (hardlink targets, final passes).
    fn existing_dir(&self, comps: &[Vec<u8>]) -> Result<OwnedFd, Errno> {
        fsops::open_dir(self.root.as_fd(), &join(comps))
    }

    /// Makes room for a new entry at `name`: a directory stays if the new entry is one too;
    /// anything else is removed.
    fn clear(
        &mut self,
        ctx: &Ctx<'_>,
        parent: &OwnedFd,
        name: &[u8],
        new_is_dir: bool,
    ) -> Result<Existing, UnpackError> {
        let st = match rustix::fs::statat(parent, os(name), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::NOENT) => return Ok(Existing::Nothing),
            Err(e) => return Err(ctx.io("stat existing entry")(e)),
        };
        match FileType::from_raw_mode(st.st_mode) {
            FileType::Directory if new_is_dir => Ok(Existing::Dir),
            FileType::Directory => {
                self.cache = None;
                fsops::remove_tree(parent.as_fd(), name)
                    .map_err(ctx.io("remove existing directory"))?;
                Ok(Existing::Nothing)
            }
            ft => {
                let was_whiteout = ft == FileType::CharacterDevice && st.st_rdev == 0;
                rustix::fs::unlinkat(parent, os(name), AtFlags::empty())
                    .map_err(ctx.io("remove existing entry"))?;
                Ok(if was_whiteout {
                    Existing::Whiteout
                } else {
                    Existing::Nothing
                })
            }
        }
    }

    fn file<R: Read>(
        &mut self,
        ctx: &Ctx<'_>,
        path: &EntryPath,
        meta: &Meta,
        data: &mut R,
        exact_size: Option<u64>,
    ) -> Result<(), UnpackError> {
        let name = final_name(ctx, path)?;
        let parent = self.dir_fd(ctx, path.parent())?;
        let create = || {
            rustix::fs::openat(
                &*parent,
                os(name),
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            )
        };
        // Most names are new in a layer: try first, make room only when something is there.
        let fd = match create() {
            Err(Errno::EXIST) => {
                self.clear(ctx, &parent, name, false)?;
                create()
            }
            r => r,
        }
        .map_err(ctx.io("create file"))?;
        let mut file = File::from(fd);
        let written = self.copy(ctx, data, &mut file)?;
        if let Some(size) = exact_size {
            if written != size {
                return Err(UnpackError::Read {
                    entry: ctx.entry.to_owned(),
                    source: io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("file data truncated: {written} of {size} bytes"),
                    ),
                });
            }
        }
        self.stats.bytes += written;
        let mut mode = meta.mode;
        if mode & SUID_SGID != 0 {
            let parent_mode = rustix::fs::fstat(&*parent)
                .map_err(ctx.io("stat parent directory"))?
                .st_mode;
            if mode & WORLD_WRITABLE != 0 || parent_mode & WORLD_WRITABLE != 0 {
                mode = self.strip(ctx, mode);
            }
        }
        self.set_meta(ctx, file.as_fd(), meta, mode)?;
        rustix::fs::futimens(&file, &times(meta.mtime)).map_err(ctx.io("set file times"))?;
        if mode & SUID_SGID != 0 {
            self.suid.push(path.clone());
        }
        Ok(())
    }

    /// Copies file data, telling read failures (the stream) from write failures (the disk).
    fn copy<R: Read>(
        &mut self,
        ctx: &Ctx<'_>,
        data: &mut R,
        file: &mut File,
    ) -> Result<u64, UnpackError> {
        let mut total = 0u64;
        loop {
            let n = match data.read(&mut self.buf) {
                Ok(0) => return Ok(total),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(UnpackError::Read {
                        entry: ctx.entry.to_owned(),
                        source,
                    })
                }
            };
            let chunk = self.buf.get(..n).unwrap_or_default();
            file.write_all(chunk).map_err(ctx.io_std("write file"))?;
            total += n as u64;
        }
    }

    fn dir(&mut self, ctx: &Ctx<'_>, path: &EntryPath, meta: &Meta) -> Result<(), UnpackError> {
        let (fd, existing) = match path.name() {
            None => {
                let fd =
                    fsops::open_dir(self.root.as_fd(), b".").map_err(ctx.io("open layer root"))?;
                (fd, Existing::Dir)
            }
            Some(name) => {
                let parent = self.dir_fd(ctx, path.parent())?;
                let existing = self.clear(ctx, &parent, name, true)?;
                if existing != Existing::Dir {
                    rustix::fs::mkdirat(&*parent, os(name), Mode::from_raw_mode(0o700))
                        .map_err(ctx.io("create directory"))?;
                }
                let fd = fsops::open_dir(parent.as_fd(), name)
                    .map_err(|e| ctx.resolve("directory", e))?;
                (fd, existing)
            }
        };
        // Directories keep setgid (group inheritance is their purpose) and setuid (no effect).
        self.set_meta(ctx, fd.as_fd(), meta, meta.mode)?;
        if existing == Existing::Whiteout {
            // A directory replacing a whiteout in the same layer must hide the lower one's
            // contents, exactly as overlay does itself when a directory is recreated.
            set_opaque(ctx, &fd)?;
        }
        self.dir_times.push((path.clone(), meta.mtime));
        Ok(())
    }

    fn symlink(
        &mut self,
        ctx: &Ctx<'_>,
        path: &EntryPath,
        meta: &Meta,
        target: Option<Vec<u8>>,
    ) -> Result<(), UnpackError> {
        let name = final_name(ctx, path)?;
        let target = match target {
            Some(t) if !t.is_empty() && !t.contains(&0) => t,
            _ => return Err(ctx.invalid("symlink without a valid target")),
        };
        if meta.mode & SUID_SGID != 0 {
            self.strip(ctx, meta.mode);
        }
        let parent = self.dir_fd(ctx, path.parent())?;
        // The target is stored, never resolved: it may point anywhere.
        match rustix::fs::symlinkat(os(&target), &*parent, os(name)) {
            Err(Errno::EXIST) => {
                self.clear(ctx, &parent, name, false)?;
                rustix::fs::symlinkat(os(&target), &*parent, os(name))
            }
            r => r,
        }
        .map_err(ctx.io("create symlink"))?;
        rustix::fs::chownat(
            &*parent,
            os(name),
            Some(rustix::fs::Uid::from_raw(meta.uid)),
            Some(rustix::fs::Gid::from_raw(meta.gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(ctx.io("chown symlink"))?;
        for (k, v) in &meta.xattrs {
            match fsops::lsetxattr_in(parent.as_fd(), name, k, v) {
                Ok(()) => {}
                Err(Errno::OPNOTSUPP) | Err(Errno::PERM) if k.starts_with(b"user.") => {
                    // user.* xattrs are not allowed on symlinks by any Linux filesystem.
                    tracing::warn!(entry = %ctx.entry, xattr = %lossy(k), "xattr not supported on symlink");
                }
                Err(e) => return Err(ctx.io("set symlink xattr")(e)),
            }
        }
        rustix::fs::utimensat(
            &*parent,
            os(name),
            &times(meta.mtime),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(ctx.io("set symlink times"))?;
        Ok(())
    }

    fn hardlink(
        &mut self,
        ctx: &Ctx<'_>,
        path: &EntryPath,
        target: Option<Vec<u8>>,
    ) -> Result<(), UnpackError> {
        let name = final_name(ctx, path)?;
        let raw = match target {
            Some(t) if !t.is_empty() => t,
            _ => return Err(ctx.invalid("hardlink without a target")),
        };
        let tpath = EntryPath::parse(&raw).map_err(|b| ctx.bad_path("link target: ", b))?;
        let Some(tname) = tpath.name() else {
            return Err(ctx.invalid("hardlink to the layer root"));
        };
        if self.skipped_devices.contains(&tpath) {
            tracing::warn!(entry = %ctx.entry, "hardlink to a device node not created");
            self.stats.skipped_devices += 1;
            self.skipped_devices.insert(path.clone());
            return Ok(());
        }
        let tparent = self.existing_dir(tpath.parent()).map_err(|e| match e {
            Errno::NOENT | Errno::NOTDIR => ctx.unsafe_("link target does not exist in this layer"),
            e => ctx.resolve("link target", e),
        })?;
        let st = match rustix::fs::statat(&tparent, os(tname), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::NOENT) => {
                return Err(ctx.unsafe_("link target does not exist in this layer"))
            }
            Err(e) => return Err(ctx.io("stat link target")(e)),
        };
        if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
            return Err(ctx.invalid("hardlink to a directory"));
        }
        if tpath == *path {
            return Ok(());
        }
        let parent = self.dir_fd(ctx, path.parent())?;
        self.clear(ctx, &parent, name, false)?;
        // No AT_SYMLINK_FOLLOW: a target that is a symlink is linked itself, never followed.
        rustix::fs::linkat(&tparent, os(tname), &*parent, os(name), AtFlags::empty())
            .map_err(ctx.io("create hardlink"))?;
        if FileType::from_raw_mode(st.st_mode) == FileType::RegularFile
            && st.st_mode & SUID_SGID != 0
        {
            // The shared inode is re-checked at the end against this name's directory too.
            self.suid.push(path.clone());
        }
        Ok(())
    }

    fn fifo(&mut self, ctx: &Ctx<'_>, path: &EntryPath, meta: &Meta) -> Result<(), UnpackError> {
        let name = final_name(ctx, path)?;
        let mut mode = meta.mode;
        if mode & SUID_SGID != 0 {
            mode = self.strip(ctx, mode);
        }
        let parent = self.dir_fd(ctx, path.parent())?;
        self.clear(ctx, &parent, name, false)?;
        rustix::fs::mknodat(
            &*parent,
            os(name),
            FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .map_err(ctx.io("create fifo"))?;
        // A non-blocking read open of a fifo returns at once and gives an fd to fchown/fchmod.
        let fd = fsops::open_beneath(parent.as_fd(), name, OFlags::RDONLY | OFlags::NONBLOCK)
            .map_err(ctx.io("open fifo"))?;
        self.set_meta(ctx, fd.as_fd(), meta, mode)?;
        rustix::fs::futimens(&fd, &times(meta.mtime)).map_err(ctx.io("set fifo times"))?;
        Ok(())
    }

    fn whiteout(
        &mut self,
        ctx: &Ctx<'_>,
        path: &EntryPath,
        target: &[u8],
    ) -> Result<(), UnpackError> {
        if target == b".wh..opq" {
            let dir = self.dir_fd(ctx, path.parent())?;
            set_opaque(ctx, &dir)?;
            self.stats.whiteouts += 1;
            return Ok(());
        }
        if target.starts_with(b".wh.") {
            // Other AUFS metadata (.wh..wh.plnk, .wh..wh.aufs): meaningless to overlay.
            return Ok(());
        }
        match target {
            b".." => return Err(ctx.unsafe_("whiteout of `..`")),
            b"" | b"." => return Err(ctx.invalid("whiteout without a name")),
            _ => {}
        }
        let parent = self.dir_fd(ctx, path.parent())?;
        match rustix::fs::statat(&*parent, os(target), AtFlags::SYMLINK_NOFOLLOW) {
            Err(Errno::NOENT) => {
                rustix::fs::mknodat(
                    &*parent,
                    os(target),
                    FileType::CharacterDevice,
                    Mode::empty(),
                    rustix::fs::makedev(0, 0),
                )
                .map_err(ctx.io("create whiteout"))?;
                rustix::fs::chownat(
                    &*parent,
                    os(target),
                    Some(rustix::fs::Uid::ROOT),
                    Some(rustix::fs::Gid::ROOT),
                    AtFlags::SYMLINK_NOFOLLOW,
                )
                .map_err(ctx.io("chown whiteout"))?;
            }
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
                // The same layer also has this directory: it stays, but the lower one it
                // replaces must not show through.
                let dir = fsops::open_dir(parent.as_fd(), target)
                    .map_err(|e| ctx.resolve("whited-out directory", e))?;
                set_opaque(ctx, &dir)?;
            }
            // A whiteout only hides lower layers; this layer's own file already does that.
            Ok(_) => {}
            Err(e) => return Err(ctx.io("stat whiteout target")(e)),
        }
        self.stats.whiteouts += 1;
        Ok(())
    }

    /// Ownership first (chown clears setuid and file capabilities), then mode, then xattrs.
    fn set_meta(
        &self,
        ctx: &Ctx<'_>,
        fd: std::os::fd::BorrowedFd<'_>,
        meta: &Meta,
        mode: u32,
    ) -> Result<(), UnpackError> {
        fsops::chown(fd, meta.uid, meta.gid).map_err(ctx.io("chown"))?;
        rustix::fs::fchmod(fd, Mode::from_raw_mode(mode)).map_err(ctx.io("chmod"))?;
        for (k, v) in &meta.xattrs {
            match rustix::fs::fsetxattr(fd, os(k), v, XattrFlags::empty()) {
                Ok(()) => {}
                Err(Errno::OPNOTSUPP) => {
                    tracing::warn!(entry = %ctx.entry, xattr = %lossy(k), "xattr not supported by the snapshot filesystem");
                }
                Err(e) => return Err(ctx.io("set xattr")(e)),
            }
        }
        Ok(())
    }

    fn strip(&mut self, ctx: &Ctx<'_>, mode: u32) -> u32 {
        tracing::warn!(entry = %ctx.entry, mode = format!("{mode:o}"), "setuid/setgid stripped from layer entry");
        self.stats.stripped_setuid += 1;
        mode & !SUID_SGID
    }

    /// Final passes: setuid files whose directory ended up world-writable, then dir mtimes.
    /// Entries removed or replaced since are skipped; nothing is followed.
    fn finish(&mut self) -> Result<(), UnpackError> {
        for path in std::mem::take(&mut self.suid) {
            let Some(name) = path.name() else { continue };
            let entry = lossy(&join(path.comps()));
            let ctx = Ctx { entry: &entry };
            let Ok(parent) = self.existing_dir(path.parent()) else {
                continue;
            };
            let parent_mode = rustix::fs::fstat(&parent)
                .map_err(ctx.io("stat parent directory"))?
                .st_mode;
            if parent_mode & WORLD_WRITABLE == 0 {
                continue;
            }
            let Ok(st) = rustix::fs::statat(&parent, os(name), AtFlags::SYMLINK_NOFOLLOW) else {
                continue;
            };
            if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile
                || st.st_mode & SUID_SGID == 0
            {
                continue;
            }
            let fd = fsops::open_beneath(parent.as_fd(), name, OFlags::RDONLY | OFlags::NONBLOCK)
                .map_err(ctx.io("open setuid file"))?;
            let mode = self.strip(&ctx, st.st_mode & 0o7777);
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode)).map_err(ctx.io("chmod"))?;
        }
        for (path, mtime) in std::mem::take(&mut self.dir_times) {
            let Ok(fd) = self.existing_dir(path.comps()) else {
                continue;
            };
            let entry = lossy(&join(path.comps()));
            rustix::fs::futimens(&fd, &times(mtime))
                .map_err(Ctx { entry: &entry }.io("set directory times"))?;
        }
        Ok(())
    }
}

/// The last component of a non-root entry.
fn final_name<'p>(ctx: &Ctx<'_>, path: &'p EntryPath) -> Result<&'p [u8], UnpackError> {
    path.name()
        .ok_or_else(|| ctx.invalid("a non-directory entry names the layer root"))
}

fn set_opaque(ctx: &Ctx<'_>, dir: &OwnedFd) -> Result<(), UnpackError> {
    rustix::fs::fsetxattr(dir, OPAQUE_XATTR, b"y", XattrFlags::empty())
        .map_err(ctx.io("set trusted.overlay.opaque"))
}

fn times(mtime: Timespec) -> Timestamps {
    Timestamps {
        last_access: mtime,
        last_modification: mtime,
    }
}

/// Reads ownership, mode, mtime and xattrs; numeric fields out of range are invalid.
fn read_meta<R: Read>(ctx: &Ctx<'_>, entry: &mut tar::Entry<'_, R>) -> Result<Meta, UnpackError> {
    let h = entry.header();
    let old = h.as_old();
    // Like Go's archive/tar (which wrote most layers), a blank numeric field reads as 0.
    let num = |v: io::Result<u64>, raw: &[u8], what: &str| -> Result<u64, UnpackError> {
        match v {
            Ok(v) => Ok(v),
            Err(_) if raw.iter().all(|b| matches!(b, 0 | b' ')) => Ok(0),
            Err(e) => Err(ctx.invalid(format!("bad {what}: {e}"))),
        }
    };
    let mode = num(h.mode().map(u64::from), &old.mode, "mode")? as u32 & 0o7777;
    let id = |v: io::Result<u64>, raw: &[u8], what: &str| -> Result<u32, UnpackError> {
        let v = num(v, raw, what)?;
        // u32::MAX is -1 to chown ("leave unchanged"), never a real id.
        u32::try_from(v)
            .ok()
            .filter(|v| *v != u32::MAX)
            .ok_or_else(|| ctx.invalid(format!("{what} {v} out of range")))
    };
    let uid = id(h.uid(), &old.uid, "uid")?;
    let gid = id(h.gid(), &old.gid, "gid")?;
    let secs = num(h.mtime(), &old.mtime, "mtime")?;
    let mut mtime = Timespec {
        tv_sec: i64::try_from(secs).map_err(|_| ctx.invalid("mtime out of range"))?,
        tv_nsec: 0,
    };
    let mut xattrs = Vec::new();
    if let Some(exts) = entry
        .pax_extensions()
        .map_err(|e| ctx.invalid(format!("bad PAX records: {e}")))?
    {
        for ext in exts {
            let ext = ext.map_err(|e| ctx.invalid(format!("bad PAX record: {e}")))?;
            let key = ext.key_bytes();
            if key == b"mtime" {
                mtime = parse_pax_time(ext.value_bytes())
                    .ok_or_else(|| ctx.invalid("bad PAX mtime"))?;
            } else if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                if name.is_empty() || name.contains(&0) {
                    return Err(ctx.invalid("bad xattr name"));
                }
                if FORBIDDEN_XATTRS.iter().any(|p| name.starts_with(p)) {
                    tracing::warn!(entry = %ctx.entry, xattr = %lossy(name), "overlay xattr in layer ignored");
                    continue;
                }
                xattrs.push((name.to_vec(), ext.value_bytes().to_vec()));
            }
        }
    }
    Ok(Meta {
        uid,
        gid,
        mode,
        mtime,
        xattrs,
    })
}

/// Parses a PAX time: `[-]seconds[.fraction]`.
fn parse_pax_time(v: &[u8]) -> Option<Timespec> {
    let s = std::str::from_utf8(v).ok()?;
    let (neg, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if int.is_empty()
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let secs: i64 = int.parse().ok()?;
    let mut nsec: i64 = 0;
    for (i, b) in frac.bytes().take(9).enumerate() {
        nsec += i64::from(b - b'0') * 10i64.pow(8 - i as u32);
    }
    Some(if !neg {
        Timespec {
            tv_sec: secs,
            tv_nsec: nsec,
        }
    } else if nsec == 0 {
        Timespec {
            tv_sec: -secs,
            tv_nsec: 0,
        }
    } else {
        Timespec {
            tv_sec: -secs - 1,
            tv_nsec: 1_000_000_000 - nsec,
        }
    })
}
