//! Network namespaces pinned under the state dir.
//!
//! A pod's network namespace lives as long as a bind mount of its nsfs inode on a file
//! `<dir>/<id>` exists, independently of any process: the pause container joins it by
//! path and CNI plugins configure it by path, and after a daemon restart the pin is found
//! again on disk.
//!
//! The directory is made a shared mount point (a recursive self-bind when it is not a
//! mount point yet, then `MS_SHARED`), as `ip netns add` does. Mount namespaces cloned
//! while a pin exists (runc's container setup, `unshare -m`, systemd units) receive a copy
//! of the pin; with a shared (or, in those children, slave) peer group our unmount
//! propagates to those copies, so no copy keeps a removed pod's namespace alive. New pins
//! also propagate to peers, so tools in a peer mount namespace see them.
//!
//! Creating a namespace is done on a short-lived OS thread that unshares its own network
//! namespace, brings `lo` up, bind-mounts its `/proc/self/task/<tid>/ns/net` onto the pin
//! and exits; no thread of the daemon stays in the pod's namespace.

use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rustix::mount::{MountPropagationFlags, UnmountFlags};
use rustix::thread::UnshareFlags;

/// `statfs` magic of nsfs, the filesystem of `/proc/<pid>/ns/*`.
const NSFS_MAGIC: rustix::fs::FsWord = 0x6e73_6673;

/// Serialises the shared-mount set-up of the pin directory, so two concurrent creates do
/// not both self-bind it.
static DIR_SETUP: Mutex<()> = Mutex::new(());

/// Why a network namespace could not be created, opened or removed.
#[derive(Debug, thiserror::Error)]
pub enum NetNsError {
    /// The id would not name a single file inside the directory.
    #[error("invalid netns id {0:?}")]
    InvalidId(String),
    /// The pin directory could not be created.
    #[error("creating netns directory {path}: {source}")]
    Dir { path: PathBuf, source: io::Error },
    /// The pin directory could not be made a shared mount point.
    #[error("making {path} a shared mount point: {source}")]
    Propagation { path: PathBuf, source: io::Error },
    /// A file already sits at the pin path.
    #[error("netns pin {0} already exists")]
    Exists(PathBuf),
    /// The empty pin file could not be created.
    #[error("creating netns pin {path}: {source}")]
    Pin { path: PathBuf, source: io::Error },
    /// `unshare(CLONE_NEWNET)` failed.
    #[error("creating a network namespace: {0}")]
    Unshare(io::Error),
    /// `lo` could not be brought up in the new namespace.
    #[error("bringing up lo in the new network namespace: {0}")]
    Loopback(io::Error),
    /// The bind mount of the namespace onto its pin failed.
    #[error("bind-mounting the network namespace onto {path}: {source}")]
    Mount { path: PathBuf, source: io::Error },
    /// The worker thread could not be started or died.
    #[error("netns worker thread: {0}")]
    Thread(String),
    /// Unmounting a pin failed.
    #[error("unmounting netns pin {path}: {source}")]
    Unmount { path: PathBuf, source: io::Error },
    /// Unlinking a pin failed.
    #[error("removing netns pin {path}: {source}")]
    Remove { path: PathBuf, source: io::Error },
    /// The path is not a mounted nsfs.
    #[error("{0} is not a pinned network namespace")]
    NotPinned(PathBuf),
}

/// A network namespace pinned at a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetNs {
    path: PathBuf,
}

impl NetNs {
    /// Where [`NetNs::create`] pins the namespace of `id`.
    pub fn pin_path(dir: &Path, id: &str) -> PathBuf {
        dir.join(id)
    }

    /// Creates a new network namespace with `lo` up, pinned at `<dir>/<id>`.
    ///
    /// `dir` is created when missing. On any failure there is no pin file and no mount.
    pub async fn create(dir: &Path, id: &str) -> Result<NetNs, NetNsError> {
        if id.is_empty() || id == "." || id == ".." || id.contains('/') || id.contains('\0') {
            return Err(NetNsError::InvalidId(id.to_string()));
        }
        let dir = dir.to_path_buf();
        let path = NetNs::pin_path(&dir, id);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let pin = path.clone();
        // A dedicated thread, not a blocking-pool one: the thread's network namespace is
        // changed and the thread must die afterwards rather than serve other work.
        std::thread::Builder::new()
            .name("netns-create".into())
            .spawn(move || {
                // The caller went away (its RPC was cancelled): undo, nobody will record it.
                if let Err(Ok(())) = tx.send(create_blocking(&dir, &pin)) {
                    let _ = remove_blocking(&pin);
                }
            })
            .map_err(|e| NetNsError::Thread(e.to_string()))?;
        rx.await
            .map_err(|_| NetNsError::Thread("exited without an answer".into()))??;
        Ok(NetNs { path })
    }

    /// A handle on an existing pin, without checking it (recovery, removal).
    pub fn from_path(path: impl Into<PathBuf>) -> NetNs {
        NetNs { path: path.into() }
    }

    /// A handle on an existing pin, checking that it is a mounted namespace.
    pub fn open(path: impl Into<PathBuf>) -> Result<NetNs, NetNsError> {
        let path = path.into();
        if !Self::is_pinned(&path) {
            return Err(NetNsError::NotPinned(path));
        }
        Ok(NetNs { path })
    }

    /// The pin's path, as given to runc (`linux.namespaces[].path`) and CNI (`CNI_NETNS`).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Unmounts and unlinks a pin. Idempotent: a missing or unmounted pin is fine.
    pub async fn remove(path: &Path) -> Result<(), NetNsError> {
        let path = path.to_path_buf();
        tokio::task::spawn_blocking(move || remove_blocking(&path))
            .await
            .map_err(|e| NetNsError::Thread(e.to_string()))?
    }

    /// Whether `path` is a mounted nsfs (a live pin), not just a leftover empty file.
    pub fn is_pinned(path: &Path) -> bool {
        rustix::fs::statfs(path).is_ok_and(|s| s.f_type == NSFS_MAGIC)
    }

    /// Every file in `dir`, pinned or not (a crash between creating the file and mounting
    /// leaves an empty one), sorted; for orphan cleanup at start-up. A missing directory
    /// has none.
    pub async fn list(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let Ok(mut rd) = tokio::fs::read_dir(dir).await else {
            return out;
        };
        while let Ok(Some(entry)) = rd.next_entry().await {
            if entry.file_type().await.is_ok_and(|t| !t.is_dir()) {
                out.push(entry.path());
            }
        }
        out.sort();
        out
    }
}

/// Runs on the dedicated thread: directory, pin file, namespace, mount.
fn create_blocking(dir: &Path, pin: &Path) -> Result<(), NetNsError> {
    create_blocking_with(dir, pin, enter_new_netns_and_pin)
}

/// [`create_blocking`] with the namespace step given, so tests can make it fail.
fn create_blocking_with(
    dir: &Path,
    pin: &Path,
    enter: impl FnOnce(&Path) -> Result<(), NetNsError>,
) -> Result<(), NetNsError> {
    prepare_dir(dir)?;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(pin)
        .map_err(|source| match source.kind() {
            io::ErrorKind::AlreadyExists => NetNsError::Exists(pin.to_path_buf()),
            _ => NetNsError::Pin {
                path: pin.to_path_buf(),
                source,
            },
        })?;
    let made = enter(pin);
    if made.is_err() {
        // Nothing was mounted (the mount is the last step); only the file is ours.
        let _ = std::fs::remove_file(pin);
    }
    made
}

/// Creates `dir` and makes it a shared mount point (self-bind first if needed).
fn prepare_dir(dir: &Path) -> Result<(), NetNsError> {
    std::fs::create_dir_all(dir).map_err(|source| NetNsError::Dir {
        path: dir.to_path_buf(),
        source,
    })?;
    let _guard = DIR_SETUP.lock().unwrap_or_else(|p| p.into_inner());
    let propagation = |source: io::Error| NetNsError::Propagation {
        path: dir.to_path_buf(),
        source,
    };
    match rustix::mount::mount_change(dir, MountPropagationFlags::SHARED) {
        Ok(()) => Ok(()),
        // Not a mount point yet: bind it onto itself (recursively, so existing pins stay
        // visible), then share it.
        Err(rustix::io::Errno::INVAL) => {
            rustix::mount::mount_bind_recursive(dir, dir).map_err(|e| propagation(e.into()))?;
            rustix::mount::mount_change(dir, MountPropagationFlags::SHARED)
                .map_err(|e| propagation(e.into()))
        }
        Err(e) => Err(propagation(e.into())),
    }
}

/// Moves the calling thread into a new network namespace, brings `lo` up and pins it.
/// The calling thread must exit afterwards.
fn enter_new_netns_and_pin(pin: &Path) -> Result<(), NetNsError> {
    // SAFETY: only CLONE_NEWNET is unshared, which changes this thread's network
    // namespace and nothing about file descriptors or memory; the thread is a dedicated
    // one that exits right after pinning.
    unsafe { rustix::thread::unshare_unsafe(UnshareFlags::NEWNET) }
        .map_err(|e| NetNsError::Unshare(e.into()))?;
    loopback_up().map_err(NetNsError::Loopback)?;
    let tid = rustix::thread::gettid().as_raw_nonzero();
    let ns = format!("/proc/self/task/{tid}/ns/net");
    rustix::mount::mount_bind(ns.as_str(), pin).map_err(|e| NetNsError::Mount {
        path: pin.to_path_buf(),
        source: e.into(),
    })
}

/// Sets IFF_UP on `lo` in the calling thread's network namespace.
fn loopback_up() -> io::Result<()> {
    let sock = rustix::net::socket_with(
        rustix::net::AddressFamily::INET,
        rustix::net::SocketType::DGRAM,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )?;
    // SAFETY: ifreq is a plain C struct for which all-zero bytes are a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads the NUL-terminated ifr_name and writes ifr_flags of the
    // ifreq we own, which outlives the call; the fd is a live socket.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS as _, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFFLAGS just filled the ifru_flags member of the union.
    unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: as above; SIOCSIFFLAGS only reads the ifreq.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS as _, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn remove_blocking(path: &Path) -> Result<(), NetNsError> {
    // Detach every mount stacked on the pin (normally one); EINVAL means "not a mount
    // point" (done), ENOENT "no pin at all". The bound keeps a broken kernel answer from
    // spinning forever.
    for _ in 0..16 {
        match rustix::mount::unmount(path, UnmountFlags::DETACH | UnmountFlags::NOFOLLOW) {
            Ok(()) => continue,
            Err(
                rustix::io::Errno::INVAL | rustix::io::Errno::NOENT | rustix::io::Errno::NOTDIR,
            ) => {
                break;
            }
            Err(e) => {
                return Err(NetNsError::Unmount {
                    path: path.to_path_buf(),
                    source: e.into(),
                });
            }
        }
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(NetNsError::Remove {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Connects to `127.0.0.1:port` (then `[::1]:port`) inside the network namespace pinned
/// at `pin`: port-forward's connection into a pod. A socket keeps the namespace it was
/// made in, so only the connect runs on a dedicated thread that enters the namespace (and
/// ends right after; the daemon's own threads never change namespace).
pub async fn connect_tcp(
    pin: &Path,
    port: u16,
    timeout: std::time::Duration,
) -> io::Result<tokio::net::TcpStream> {
    let pin = pin.to_path_buf();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("netns-connect".into())
        .spawn(move || {
            let _ = tx.send(connect_in(&pin, port, timeout));
        })?;
    let stream = rx
        .await
        .map_err(|_| io::Error::other("the connecting thread ended without an answer"))??;
    stream.set_nonblocking(true)?;
    tokio::net::TcpStream::from_std(stream)
}

/// Runs on the dedicated thread.
fn connect_in(
    pin: &Path,
    port: u16,
    timeout: std::time::Duration,
) -> io::Result<std::net::TcpStream> {
    let ns = std::fs::File::open(pin)?;
    rustix::thread::move_into_link_name_space(
        std::os::fd::AsFd::as_fd(&ns),
        Some(rustix::thread::LinkNameSpaceType::Network),
    )?;
    let v4 = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    match std::net::TcpStream::connect_timeout(&v4, timeout) {
        Ok(s) => Ok(s),
        Err(e4) => {
            let v6 = std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port));
            std::net::TcpStream::connect_timeout(&v6, timeout).map_err(|_| e4)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;
    use std::time::Duration;

    /// A scratch pin directory under /var/tmp, unmounted and removed on drop.
    struct Scratch {
        root: PathBuf,
    }

    impl Scratch {
        fn new(name: &str) -> Scratch {
            let root = PathBuf::from(format!(
                "/var/tmp/crius-netns-test-{}-{name}",
                std::process::id()
            ));
            let s = Scratch { root };
            s.cleanup();
            std::fs::create_dir_all(&s.root).expect("scratch");
            s
        }

        fn dir(&self) -> PathBuf {
            self.root.join("netns")
        }

        fn cleanup(&self) {
            let dir = self.dir();
            for p in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let _ = rustix::mount::unmount(p.path(), UnmountFlags::DETACH);
            }
            while rustix::mount::unmount(&dir, UnmountFlags::DETACH).is_ok() {}
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            self.cleanup();
        }
    }

    /// Mount points (field 5 of /proc/self/mountinfo) with their filesystem type.
    fn mounts() -> Vec<(String, String)> {
        let info = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
        info.lines()
            .filter_map(|l| {
                let fields: Vec<&str> = l.split(' ').collect();
                let sep = fields.iter().position(|f| *f == "-")?;
                Some((fields.get(4)?.to_string(), fields.get(sep + 1)?.to_string()))
            })
            .collect()
    }

    /// Mounts under `root` only: other tests mount and unmount in parallel.
    fn mounts_under(root: &Path) -> Vec<(String, String)> {
        let r = root.to_str().expect("utf-8 path");
        mounts()
            .into_iter()
            .filter(|(m, _)| m.starts_with(r))
            .collect()
    }

    fn mount_types_at(path: &Path) -> Vec<String> {
        let p = path.to_str().expect("utf-8 path");
        mounts()
            .into_iter()
            .filter(|(m, _)| m == p)
            .map(|(_, t)| t)
            .collect()
    }

    fn nsenter(pin: &Path, args: &[&str]) -> std::process::Output {
        Command::new("nsenter")
            .arg(format!("--net={}", pin.display()))
            .args(args)
            .output()
            .expect("nsenter runs")
    }

    #[tokio::test]
    async fn create_pins_a_fresh_namespace_with_lo_up_and_remove_is_idempotent() {
        let s = Scratch::new("create");
        assert!(!s.dir().exists());
        let ns = NetNs::create(&s.dir(), "pod1").await.expect("create");
        let pin = s.dir().join("pod1");
        assert_eq!(ns.path(), pin);
        assert_eq!(mount_types_at(&pin), vec!["nsfs".to_string()]);
        assert!(NetNs::is_pinned(&pin));
        assert!(NetNs::open(&pin).is_ok());

        // lo is up inside, and it is not the host's namespace.
        let out = nsenter(&pin, &["cat", "/sys/class/net/lo/flags"]);
        assert!(out.status.success(), "{out:?}");
        let flags = u32::from_str_radix(
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .trim_start_matches("0x"),
            16,
        )
        .expect("flags");
        assert_eq!(flags & 1, 1, "lo is not up: {flags:#x}");
        let out = nsenter(&pin, &["ip", "-o", "link", "show"]);
        assert!(out.status.success(), "{out:?}");
        let links = String::from_utf8_lossy(&out.stdout);
        assert_eq!(links.lines().count(), 1, "only lo in a new netns: {links}");
        assert!(links.contains("lo:") && links.contains("UP"), "{links}");

        // A process started in it sees that namespace.
        let inside = nsenter(&pin, &["readlink", "/proc/self/ns/net"]);
        let host = std::fs::read_link("/proc/self/ns/net").expect("own ns");
        assert!(inside.status.success());
        assert_ne!(
            String::from_utf8_lossy(&inside.stdout).trim(),
            host.to_string_lossy()
        );

        // No thread of ours stayed in it.
        let own = std::fs::read_link("/proc/self/ns/net").expect("ns");
        for t in std::fs::read_dir("/proc/self/task")
            .expect("tasks")
            .flatten()
        {
            if let Ok(l) = std::fs::read_link(t.path().join("ns/net")) {
                assert_eq!(l, own, "thread {:?} is in another netns", t.file_name());
            }
        }

        assert_eq!(NetNs::list(&s.dir()).await, vec![pin.clone()]);
        NetNs::remove(&pin).await.expect("remove");
        assert!(mount_types_at(&pin).is_empty());
        assert!(!pin.exists());
        assert!(!NetNs::is_pinned(&pin));
        NetNs::remove(&pin).await.expect("remove twice");
        assert!(NetNs::list(&s.dir()).await.is_empty());
        assert!(matches!(NetNs::open(&pin), Err(NetNsError::NotPinned(_))));
    }

    #[tokio::test]
    async fn the_directory_is_a_shared_mount_and_namespaces_are_distinct() {
        let s = Scratch::new("shared");
        let a = NetNs::create(&s.dir(), "a").await.expect("a");
        let b = NetNs::create(&s.dir(), "b").await.expect("b");
        let dir = s.dir();
        let dir_s = dir.to_str().expect("utf-8");
        let info = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
        let dir_lines: Vec<&str> = info
            .lines()
            .filter(|l| l.split(' ').nth(4) == Some(dir_s))
            .collect();
        assert_eq!(dir_lines.len(), 1, "one self-bind only: {dir_lines:?}");
        assert!(dir_lines[0].contains(" shared:"), "{}", dir_lines[0]);
        let ia = std::fs::metadata(a.path()).expect("a");
        let ib = std::fs::metadata(b.path()).expect("b");
        use std::os::unix::fs::MetadataExt;
        assert_ne!(ia.ino(), ib.ino());
        NetNs::remove(a.path()).await.expect("rm a");
        NetNs::remove(b.path()).await.expect("rm b");
    }

    #[tokio::test]
    async fn create_over_an_existing_pin_fails_and_changes_nothing() {
        let s = Scratch::new("exists");
        let ns = NetNs::create(&s.dir(), "x").await.expect("create");
        let before = mounts_under(&s.root);
        assert_eq!(
            before.len(),
            2,
            "the dir's self-bind and the pin: {before:?}"
        );
        let err = NetNs::create(&s.dir(), "x").await.expect_err("exists");
        assert!(matches!(err, NetNsError::Exists(_)), "{err}");
        assert_eq!(mounts_under(&s.root), before);
        assert!(NetNs::is_pinned(ns.path()));

        // A plain file at the pin path (a crash leftover) is not replaced either.
        std::fs::write(s.dir().join("y"), b"").expect("leftover");
        let before = mounts_under(&s.root);
        assert!(matches!(
            NetNs::create(&s.dir(), "y").await,
            Err(NetNsError::Exists(_))
        ));
        assert_eq!(mounts_under(&s.root), before);
        assert_eq!(
            NetNs::list(&s.dir()).await,
            vec![s.dir().join("x"), s.dir().join("y")]
        );
        NetNs::remove(&s.dir().join("y"))
            .await
            .expect("rm leftover");
        NetNs::remove(ns.path()).await.expect("rm");
    }

    #[tokio::test]
    async fn bad_directories_and_ids_are_refused() {
        let s = Scratch::new("fail");
        std::fs::create_dir_all(s.dir()).expect("dir");
        // The pin path's parent is a regular file: creating the pin fails.
        std::fs::write(s.dir().join("f"), b"").expect("file");
        let err = NetNs::create(&s.dir().join("f"), "p")
            .await
            .expect_err("fails");
        assert!(matches!(err, NetNsError::Dir { .. }), "{err}");
        for bad in ["", ".", "..", "a/b"] {
            assert!(matches!(
                NetNs::create(&s.dir(), bad).await,
                Err(NetNsError::InvalidId(_))
            ));
        }
        assert_eq!(NetNs::list(&s.dir()).await, vec![s.dir().join("f")]);
    }

    #[tokio::test]
    async fn a_cancelled_create_leaves_nothing() {
        let s = Scratch::new("cancel");
        let threads = || {
            std::fs::read_dir("/proc/self/task")
                .expect("tasks")
                .flatten()
                .filter(|t| {
                    std::fs::read_to_string(t.path().join("comm"))
                        .is_ok_and(|c| c.trim() == "netns-create")
                })
                .count()
        };
        // Polled once (the thread starts), then dropped. The thread may win the race and
        // finish before the first poll returns: try again then.
        let mut cancelled = 0;
        for i in 0..20 {
            let id = format!("c{i}");
            let pin = s.dir().join(&id);
            match tokio::time::timeout(Duration::ZERO, NetNs::create(&s.dir(), &id)).await {
                Ok(made) => {
                    NetNs::remove(made.expect("create").path())
                        .await
                        .expect("rm");
                    continue;
                }
                Err(_) => cancelled += 1,
            }
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while threads() > 0 || !s.dir().exists() {
                assert!(std::time::Instant::now() < deadline, "worker still running");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            assert!(!pin.exists(), "{pin:?} left behind");
            assert!(mount_types_at(&pin).is_empty());
            if cancelled >= 3 {
                break;
            }
        }
        // On a fast, idle machine every create may finish within its first poll; then
        // there was nothing to cancel and the assertions above never ran (seen in CI).
        if cancelled == 0 {
            eprintln!("no create was cancelled in 20 tries: nothing to check");
        }
    }

    #[test]
    fn a_failed_namespace_step_leaves_no_pin_file() {
        let s = Scratch::new("enter");
        let pin = s.dir().join("p");
        let res = create_blocking_with(&s.dir(), &pin, |p| {
            assert!(p.exists(), "the pin file exists while entering");
            Err(NetNsError::Loopback(io::Error::other("injected")))
        });
        assert!(matches!(res, Err(NetNsError::Loopback(_))), "{res:?}");
        assert!(!pin.exists());
    }

    #[test]
    fn a_failed_bind_leaves_no_mount() {
        // A directory at the pin path: binding the nsfs file onto it fails (ENOTDIR).
        let s = Scratch::new("bind");
        std::fs::create_dir_all(s.dir()).expect("dir");
        let pin = s.dir().join("d");
        std::fs::create_dir(&pin).expect("dir pin");
        let p = pin.clone();
        let res = std::thread::spawn(move || enter_new_netns_and_pin(&p))
            .join()
            .expect("thread");
        assert!(matches!(res, Err(NetNsError::Mount { .. })), "{res:?}");
        assert!(mount_types_at(&pin).is_empty());
    }

    #[tokio::test]
    async fn connect_tcp_reaches_a_listener_inside_the_namespace_only() {
        let scratch = Scratch::new("connect");
        let id = "fwd";
        NetNs::create(&scratch.dir(), id).await.expect("create");
        let pin = NetNs::pin_path(&scratch.dir(), id);
        // A listener on 127.0.0.1 inside the namespace, made on a thread that enters it.
        let (tx, rx) = std::sync::mpsc::channel();
        let pin2 = pin.clone();
        let server = std::thread::spawn(move || {
            let ns = std::fs::File::open(&pin2).expect("open pin");
            rustix::thread::move_into_link_name_space(
                std::os::fd::AsFd::as_fd(&ns),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .expect("setns");
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            tx.send(l.local_addr().expect("addr").port()).expect("send");
            let (mut s, _) = l.accept().expect("accept");
            std::io::Write::write_all(&mut s, b"inside").expect("write");
        });
        let port = rx.recv().expect("port");
        let mut s = connect_tcp(&pin, port, std::time::Duration::from_secs(5))
            .await
            .expect("connect inside");
        let mut buf = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut s, &mut buf)
            .await
            .expect("read");
        assert_eq!(buf, b"inside");
        server.join().expect("server");
        // Nothing listens on that port in the namespace any more: refused, not the host's.
        let err = connect_tcp(&pin, port, std::time::Duration::from_secs(5))
            .await
            .expect_err("closed port");
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused, "{err}");
        NetNs::remove(&pin).await.expect("remove");
    }
}
