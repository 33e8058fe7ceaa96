//! Layer unpacking tests (run as root: ownership, whiteout devices and trusted xattrs).
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tar::{EntryType, Header};

use super::{apply_layer, UnpackError, UnpackStats};

/// Builds layer tars in memory. Names and link targets go straight into the header bytes, so
/// hostile names that `tar::Builder` would refuse can be written too.
pub(crate) struct Layer {
    b: tar::Builder<Vec<u8>>,
}

impl Layer {
    pub(crate) fn new() -> Self {
        Self {
            b: tar::Builder::new(Vec::new()),
        }
    }

    /// Appends one entry with a raw (≤ 100 byte) name and link name.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn raw(
        &mut self,
        kind: EntryType,
        name: &[u8],
        link: &[u8],
        mode: u32,
        (uid, gid): (u64, u64),
        mtime: u64,
        data: &[u8],
    ) -> &mut Self {
        let mut h = Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(uid);
        h.set_gid(gid);
        h.set_mtime(mtime);
        h.set_size(data.len() as u64);
        {
            let old = h.as_old_mut();
            old.name = [0; 100];
            old.name[..name.len()].copy_from_slice(name);
            old.linkname = [0; 100];
            old.linkname[..link.len()].copy_from_slice(link);
        }
        h.set_cksum();
        self.b.append(&h, data).unwrap();
        self
    }

    pub(crate) fn dir(&mut self, name: &str, mode: u32) -> &mut Self {
        self.raw(
            EntryType::Directory,
            name.as_bytes(),
            b"",
            mode,
            (0, 0),
            1,
            b"",
        )
    }

    pub(crate) fn file(&mut self, name: &str, mode: u32, data: &[u8]) -> &mut Self {
        self.raw(
            EntryType::Regular,
            name.as_bytes(),
            b"",
            mode,
            (0, 0),
            1,
            data,
        )
    }

    pub(crate) fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.raw(
            EntryType::Symlink,
            name.as_bytes(),
            target.as_bytes(),
            0o777,
            (0, 0),
            1,
            b"",
        )
    }

    pub(crate) fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.raw(
            EntryType::Link,
            name.as_bytes(),
            target.as_bytes(),
            0o644,
            (0, 0),
            1,
            b"",
        )
    }

    /// An OCI whiteout (an empty file named `.wh.<name>`).
    pub(crate) fn whiteout(&mut self, name: &str) -> &mut Self {
        self.file(name, 0o644, b"")
    }

    /// PAX records for the next entry.
    pub(crate) fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Self {
        self.b
            .append_pax_extensions(records.iter().map(|(k, v)| (*k, *v)))
            .unwrap();
        self
    }

    /// A file through `Builder::append_data`, which writes GNU long names when needed.
    pub(crate) fn long_file(&mut self, name: &str, data: &[u8]) -> &mut Self {
        let mut h = Header::new_gnu();
        h.set_entry_type(EntryType::Regular);
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        self.b.append_data(&mut h, name, data).unwrap();
        self
    }

    pub(crate) fn finish(&mut self) -> Vec<u8> {
        let b = std::mem::replace(&mut self.b, tar::Builder::new(Vec::new()));
        b.into_inner().unwrap()
    }
}

/// A temp dir holding `dest` (empty) and `outside` (with one file) side by side.
struct Sandbox {
    tmp: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir(tmp.path().join("dest")).unwrap();
        fs::create_dir(tmp.path().join("outside")).unwrap();
        fs::write(tmp.path().join("outside/secret"), b"secret").unwrap();
        Self { tmp }
    }

    fn dest(&self) -> PathBuf {
        self.tmp.path().join("dest")
    }

    fn outside(&self) -> PathBuf {
        self.tmp.path().join("outside")
    }

    fn apply(&self, tar: &[u8]) -> Result<UnpackStats, UnpackError> {
        apply_layer(tar, &self.dest())
    }

    /// Everything in the temp dir but `dest`: path → (mode, size, content).
    fn outside_view(&self) -> BTreeMap<PathBuf, (u32, u64, Vec<u8>)> {
        let mut out = BTreeMap::new();
        walk(self.tmp.path(), &self.dest(), &mut out);
        out
    }
}

fn walk(dir: &Path, skip: &Path, out: &mut BTreeMap<PathBuf, (u32, u64, Vec<u8>)>) {
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p == skip {
            continue;
        }
        let m = fs::symlink_metadata(&p).unwrap();
        let content = if m.is_file() {
            fs::read(&p).unwrap()
        } else {
            Vec::new()
        };
        out.insert(p.clone(), (m.mode(), m.size(), content));
        if m.is_dir() {
            walk(&p, skip, out);
        }
    }
}

/// Applies `tar` and checks nothing outside `dest` changed, whatever the outcome.
fn apply_contained(sb: &Sandbox, tar: &[u8]) -> Result<UnpackStats, UnpackError> {
    let before = sb.outside_view();
    let r = sb.apply(tar);
    assert_eq!(
        before,
        sb.outside_view(),
        "layer changed files outside dest"
    );
    r
}

fn lmeta(p: &Path) -> fs::Metadata {
    fs::symlink_metadata(p).unwrap()
}

fn lgetxattr(p: &Path, name: &str) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    let n = rustix::fs::lgetxattr(p, name, &mut buf[..]).ok()?;
    buf.truncate(n);
    Some(buf)
}

fn assert_unsafe(r: Result<UnpackStats, UnpackError>, entry: &str) {
    match r {
        Err(UnpackError::Unsafe { entry: e, reason }) => {
            assert_eq!(e, entry, "refused entry (reason: {reason})")
        }
        other => panic!("expected Unsafe for {entry}, got {other:?}"),
    }
}

#[test]
fn preserves_entries_and_metadata() {
    let sb = Sandbox::new();
    let long = format!("{}/{}", "l".repeat(80), "f".repeat(80));
    let tar = Layer::new()
        .raw(
            EntryType::Directory,
            b"etc/",
            b"",
            0o750,
            (10, 20),
            1000,
            b"",
        )
        .raw(
            EntryType::Regular,
            b"etc/conf",
            b"",
            0o640,
            (1000, 1001),
            2000,
            b"hello",
        )
        .raw(
            EntryType::Symlink,
            b"etc/link",
            b"/nowhere/x",
            0o777,
            (5, 6),
            3000,
            b"",
        )
        .hardlink("etc/hard", "etc/conf")
        .raw(EntryType::Fifo, b"run/fifo", b"", 0o620, (7, 8), 4000, b"")
        .pax(&[("SCHILY.xattr.user.foo", b"bar"), ("mtime", b"5000.25")])
        .file("xattr", 0o600, b"x")
        .raw(
            EntryType::Directory,
            b"shared",
            b"",
            0o2775,
            (0, 50),
            1,
            b"",
        )
        .raw(EntryType::Regular, b"bin/su", b"", 0o4755, (0, 0), 1, b"su")
        .raw(
            EntryType::Regular,
            b"big/uid",
            b"",
            0o644,
            (70000, 80000),
            1,
            b"",
        )
        .long_file(&long, b"long")
        .finish();
    let stats = sb.apply(&tar).unwrap();
    let d = sb.dest();
    assert_eq!(
        stats,
        UnpackStats {
            entries: 10,
            bytes: 5 + 1 + 2 + 4,
            ..Default::default()
        }
    );

    let conf = lmeta(&d.join("etc/conf"));
    assert_eq!(
        (conf.mode() & 0o7777, conf.uid(), conf.gid()),
        (0o640, 1000, 1001)
    );
    assert_eq!(conf.mtime(), 2000);
    assert_eq!(fs::read(d.join("etc/conf")).unwrap(), b"hello");

    // Directory mtime set after its children were written.
    let etc = lmeta(&d.join("etc"));
    assert_eq!(
        (etc.mode() & 0o7777, etc.uid(), etc.gid(), etc.mtime()),
        (0o750, 10, 20, 1000)
    );

    let link = lmeta(&d.join("etc/link"));
    assert!(link.file_type().is_symlink());
    assert_eq!((link.uid(), link.gid(), link.mtime()), (5, 6, 3000));
    assert_eq!(
        fs::read_link(d.join("etc/link")).unwrap(),
        Path::new("/nowhere/x")
    );

    let hard = lmeta(&d.join("etc/hard"));
    assert_eq!((hard.ino(), hard.nlink()), (conf.ino(), 2));

    let fifo = lmeta(&d.join("run/fifo"));
    assert!(fifo.file_type().is_fifo());
    assert_eq!(
        (fifo.mode() & 0o7777, fifo.uid(), fifo.gid(), fifo.mtime()),
        (0o620, 7, 8, 4000)
    );
    // Missing parents: 0755 root.
    let run = lmeta(&d.join("run"));
    assert_eq!((run.mode() & 0o7777, run.uid(), run.gid()), (0o755, 0, 0));

    assert_eq!(
        lgetxattr(&d.join("xattr"), "user.foo").as_deref(),
        Some(&b"bar"[..])
    );
    let x = lmeta(&d.join("xattr"));
    assert_eq!((x.mtime(), x.mtime_nsec()), (5000, 250_000_000));

    assert_eq!(lmeta(&d.join("shared")).mode() & 0o7777, 0o2775);
    assert_eq!(lmeta(&d.join("bin/su")).mode() & 0o7777, 0o4755);
    let big = lmeta(&d.join("big/uid"));
    assert_eq!((big.uid(), big.gid()), (70000, 80000));
    assert_eq!(fs::read(d.join(&long)).unwrap(), b"long");
}

#[test]
fn whiteouts_and_opaque_dirs_take_overlay_form() {
    let sb = Sandbox::new();
    let tar = Layer::new()
        .dir("a", 0o755)
        .whiteout("a/.wh.gone")
        .whiteout("b/.wh..wh..opq")
        .whiteout("c/.wh..wh.plnk")
        .pax(&[
            ("SCHILY.xattr.trusted.overlay.opaque", b"y"),
            ("SCHILY.xattr.trusted.overlay.redirect", b"/etc"),
            ("SCHILY.xattr.user.ok", b"1"),
        ])
        .dir("forged", 0o755)
        .finish();
    let stats = sb.apply(&tar).unwrap();
    let d = sb.dest();
    assert_eq!(stats.whiteouts, 2);

    let wh = lmeta(&d.join("a/gone"));
    assert!(wh.file_type().is_char_device());
    assert_eq!((wh.rdev(), wh.uid(), wh.gid()), (0, 0, 0));
    assert!(!d.join("a/.wh.gone").exists());

    assert_eq!(
        lgetxattr(&d.join("b"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert!(fs::read_dir(d.join("b")).unwrap().next().is_none());
    assert!(!d.join("c/.wh..wh.plnk").exists(), "aufs metadata ignored");

    // A layer cannot forge overlay metadata.
    assert_eq!(lgetxattr(&d.join("forged"), "trusted.overlay.opaque"), None);
    assert_eq!(
        lgetxattr(&d.join("forged"), "trusted.overlay.redirect"),
        None
    );
    assert_eq!(
        lgetxattr(&d.join("forged"), "user.ok").as_deref(),
        Some(&b"1"[..])
    );
}

#[test]
fn later_entries_replace_earlier_ones() {
    let sb = Sandbox::new();
    let tar = Layer::new()
        .dir("./", 0o751)
        .file("p", 0o644, b"file")
        .symlink("p", "target")
        .dir("q", 0o755)
        .file("q/child", 0o644, b"c")
        .file("q", 0o600, b"now a file")
        .dir("keep", 0o700)
        .file("keep/child", 0o644, b"c")
        .raw(EntryType::Directory, b"keep", b"", 0o711, (3, 4), 1, b"")
        .whiteout(".wh.re")
        .dir("re", 0o755)
        .file("re/new", 0o644, b"n")
        .dir("both", 0o755)
        .whiteout(".wh.both")
        .file("f", 0o644, b"f")
        .whiteout(".wh.f")
        .finish();
    sb.apply(&tar).unwrap();
    let d = sb.dest();
    assert_eq!(
        lmeta(&d).mode() & 0o7777,
        0o751,
        "`./` entry sets the root's metadata"
    );
    assert_eq!(fs::read_link(d.join("p")).unwrap(), Path::new("target"));
    assert_eq!(fs::read(d.join("q")).unwrap(), b"now a file");
    let keep = lmeta(&d.join("keep"));
    assert_eq!(
        (keep.mode() & 0o7777, keep.uid(), keep.gid()),
        (0o711, 3, 4)
    );
    assert_eq!(fs::read(d.join("keep/child")).unwrap(), b"c");
    // Whiteout then directory in one layer: the directory hides the lower one's contents.
    assert!(lmeta(&d.join("re")).is_dir());
    assert_eq!(
        lgetxattr(&d.join("re"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    // Directory then whiteout: the directory stays, opaque.
    assert_eq!(
        lgetxattr(&d.join("both"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    // File then whiteout: the file stays (a whiteout only hides lower layers).
    assert_eq!(fs::read(d.join("f")).unwrap(), b"f");
}

#[test]
fn dotdot_and_absolute_names_are_refused() {
    for name in ["../escape", "a/../../escape", "/abs", "/tmp/abs", ".."] {
        let sb = Sandbox::new();
        let tar = Layer::new().file(name, 0o644, b"x").finish();
        assert_unsafe(apply_contained(&sb, &tar), name);
    }
    let sb = Sandbox::new();
    let tar = Layer::new().whiteout("a/.wh...").finish();
    assert_unsafe(apply_contained(&sb, &tar), "a/.wh...");
}

/// Runs each hostile layer `cases(outside)[i]` in a fresh sandbox: it must be refused as
/// `Unsafe` naming the entry, with nothing outside `dest` changed.
fn refused_each(cases: impl Fn(&str) -> Vec<(Vec<u8>, &'static str)>) {
    let n = cases("/x").len();
    for i in 0..n {
        let sb = Sandbox::new();
        let (tar, entry) = cases(&sb.outside().display().to_string()).swap_remove(i);
        assert_unsafe(apply_contained(&sb, &tar), entry);
        assert_eq!(fs::read(sb.outside().join("secret")).unwrap(), b"secret");
        assert_eq!(lmeta(&sb.outside().join("secret")).nlink(), 1);
    }
}

#[test]
fn symlinked_parents_are_never_followed() {
    refused_each(|out| {
        vec![
            (
                Layer::new()
                    .symlink("evil", out)
                    .file("evil/secret", 0o644, b"pwned")
                    .finish(),
                "evil/secret",
            ),
            (
                Layer::new()
                    .symlink("evil", "../outside")
                    .file("evil/secret", 0o644, b"pwned")
                    .finish(),
                "evil/secret",
            ),
            (
                Layer::new()
                    .symlink("evil", out)
                    .file("evil/new/file", 0o644, b"pwned")
                    .finish(),
                "evil/new/file",
            ),
            (
                Layer::new()
                    .dir("d", 0o755)
                    .symlink("d", out)
                    .dir("d/sub", 0o755)
                    .finish(),
                "d/sub",
            ),
            (
                Layer::new()
                    .symlink("evil", out)
                    .whiteout("evil/.wh.secret")
                    .finish(),
                "evil/.wh.secret",
            ),
            (
                Layer::new()
                    .symlink("evil", out)
                    .whiteout("evil/.wh..wh..opq")
                    .finish(),
                "evil/.wh..wh..opq",
            ),
        ]
    });
}

#[test]
fn hardlink_escapes_are_refused() {
    refused_each(|out| {
        vec![
            (
                Layer::new().hardlink("h", "../outside/secret").finish(),
                "h",
            ),
            (
                Layer::new()
                    .hardlink("h", &format!("{out}/secret"))
                    .finish(),
                "h",
            ),
            (
                Layer::new()
                    .symlink("lnk", out)
                    .hardlink("h", "lnk/secret")
                    .finish(),
                "h",
            ),
            (Layer::new().hardlink("h", "missing").finish(), "h"),
            (
                Layer::new()
                    .dir("d", 0o755)
                    .hardlink("h", "d/missing")
                    .finish(),
                "h",
            ),
        ]
    });
    // A hardlink whose target is a symlink links the symlink itself, never its target.
    let sb = Sandbox::new();
    let tar = Layer::new()
        .symlink("lnk", &format!("{}/secret", sb.outside().display()))
        .hardlink("h", "lnk")
        .finish();
    apply_contained(&sb, &tar).unwrap();
    assert!(lmeta(&sb.dest().join("h")).file_type().is_symlink());
    assert_eq!(lmeta(&sb.outside().join("secret")).nlink(), 1);
}

#[test]
fn devices_are_skipped() {
    let sb = Sandbox::new();
    let tar = Layer::new()
        .dir("dev", 0o755)
        .raw(EntryType::Char, b"dev/null", b"", 0o666, (0, 0), 1, b"")
        .raw(EntryType::Block, b"dev/sda", b"", 0o660, (0, 6), 1, b"")
        .hardlink("dev/null2", "dev/null")
        .finish();
    let stats = apply_contained(&sb, &tar).unwrap();
    assert_eq!(stats.skipped_devices, 3);
    assert!(fs::read_dir(sb.dest().join("dev"))
        .unwrap()
        .next()
        .is_none());
}

#[test]
fn dangerous_setuid_bits_are_stripped() {
    let sb = Sandbox::new();
    let tar = Layer::new()
        .file("ww", 0o4777, b"x")
        .dir("tmp", 0o1777)
        .file("tmp/suid", 0o4755, b"x")
        .file("tmp/sgid", 0o2755, b"x")
        // Parent made world-writable only after the file: caught by the final pass.
        .file("late/suid", 0o4755, b"x")
        .dir("late", 0o1777)
        .raw(EntryType::Fifo, b"fifo", b"", 0o4644, (0, 0), 1, b"")
        .file("bin/ok", 0o4755, b"x")
        .hardlink("tmp/link", "bin/ok")
        .dir("sgid-dir", 0o2777)
        .finish();
    let stats = apply_contained(&sb, &tar).unwrap();
    let d = sb.dest();
    let mode = |p: &str| lmeta(&d.join(p)).mode() & 0o7777;
    assert_eq!(mode("ww"), 0o777);
    assert_eq!(mode("tmp/suid"), 0o755);
    assert_eq!(mode("tmp/sgid"), 0o755);
    assert_eq!(mode("late/suid"), 0o755);
    assert_eq!(mode("fifo"), 0o644);
    // A setuid file hardlinked into a world-writable dir loses the bit on the shared inode.
    assert_eq!(mode("bin/ok"), 0o755);
    assert_eq!(mode("sgid-dir"), 0o2777, "setgid on directories stays");
    assert_eq!(stats.stripped_setuid, 6);
}

#[test]
fn reads_stream_to_eof_and_rejects_bad_input() {
    // Trailing bytes after the end-of-archive blocks are consumed too.
    struct Counting<'a>(&'a [u8], usize);
    impl Read for Counting<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.0.read(buf)?;
            self.1 += n;
            Ok(n)
        }
    }
    let sb = Sandbox::new();
    let mut tar = Layer::new().file("a", 0o644, b"abc").finish();
    tar.extend_from_slice(&[0u8; 10 * 1024]);
    let mut r = Counting(&tar, 0);
    apply_layer(&mut r, &sb.dest()).unwrap();
    assert_eq!(r.1, tar.len());

    // Not empty any more.
    match apply_layer(&tar[..], &sb.dest()) {
        Err(UnpackError::Dest { .. }) => {}
        other => panic!("expected Dest error, got {other:?}"),
    }

    // Truncated inside file data.
    let sb = Sandbox::new();
    let tar = Layer::new().file("big", 0o644, &[7u8; 4096]).finish();
    match apply_layer(&tar[..1024], &sb.dest()) {
        Err(UnpackError::Read { entry, .. }) => assert_eq!(entry, "big"),
        other => panic!("expected Read error, got {other:?}"),
    }

    // Unsupported and invalid entries.
    let sb = Sandbox::new();
    let tar = Layer::new()
        .raw(EntryType::new(b'V'), b"vol", b"", 0o644, (0, 0), 1, b"")
        .finish();
    assert!(matches!(
        sb.apply(&tar),
        Err(UnpackError::Unsupported { .. })
    ));
    let sb = Sandbox::new();
    let tar = Layer::new().symlink("s", "").finish();
    assert!(matches!(sb.apply(&tar), Err(UnpackError::Invalid { .. })));
}

#[test]
fn mode_bits_survive_chown() {
    // chown clears setuid; mode must be applied after it.
    let sb = Sandbox::new();
    let tar = Layer::new()
        .raw(EntryType::Regular, b"s", b"", 0o6755, (1000, 1000), 1, b"s")
        .finish();
    sb.apply(&tar).unwrap();
    let m = lmeta(&sb.dest().join("s"));
    assert_eq!((m.mode() & 0o7777, m.uid()), (0o6755, 1000));
    assert_eq!(m.permissions().mode() & 0o6000, 0o6000);
}
